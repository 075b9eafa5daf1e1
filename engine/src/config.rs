//! The engine's configuration: environment variables with the `VODFLEET_` prefix.
//! Every field is documented in the README's configuration table; keep the two in step.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `VODFLEET_MEDIA_ROOT`: directory that `vod://NAME` sources are read from.
    pub media_root: PathBuf,
    /// `VODFLEET_CACHE_DIR`: where downloaded sources are kept while a task plays.
    pub cache_dir: PathBuf,
    /// `VODFLEET_CACHE_MAX_BYTES`: how much the worker's shared source cache
    /// may hold on disk; entries no running task reads are evicted, least
    /// recently used first, beyond it (docs/design/sources.md). 10 GiB by default.
    pub cache_max_bytes: u64,
    /// `VODFLEET_ALLOW_PRIVATE_NETWORKS`: let sources and callbacks reach loopback,
    /// private and link-local addresses (tests and closed networks only).
    pub allow_private_networks: bool,
    /// `VODFLEET_SOURCE_TIMEOUT_MS`: connect timeout and the longest silence while reading a source.
    pub source_timeout: Duration,
    /// `VODFLEET_SOURCE_ATTEMPTS`: attempts per source before its item fails.
    pub source_attempts: u32,
    /// `VODFLEET_DESTINATION_TIMEOUT_MS`: connect timeout and the longest a write to a destination may block.
    pub destination_timeout: Duration,
    /// `VODFLEET_DESTINATION_ATTEMPTS`: connection attempts per outage before a destination is given up.
    pub destination_attempts: u32,
    /// `VODFLEET_RETRY_BACKOFF_MS`: first backoff delay; it doubles per attempt.
    pub retry_backoff: Duration,
    /// `VODFLEET_DESTINATION_TAKEOVER_MS`: after a failover, how long a refused
    /// publish is asked again while the server may still hold the name for the
    /// previous run (until it drops the idle publisher).
    pub destination_takeover: Duration,
    /// `VODFLEET_DESTINATION_QUEUE`: packets a destination may fall behind before it skips to the next keyframe.
    pub destination_queue: usize,
    /// `VODFLEET_INITIAL_BURST_MS`: media sent ahead of real time at start so players begin at once.
    pub initial_burst: Duration,
    /// `VODFLEET_ENGINE_THREADS`: event-loop shards that carry the copy-mode
    /// streams and their destinations; the number of cores by default.
    pub engine_threads: usize,
    /// `VODFLEET_DESTINATION_CA_FILE`: a PEM file of extra CA certificates that
    /// `rtmps://` destinations may chain to (private CAs), besides the system's.
    pub destination_ca_file: Option<PathBuf>,
    /// `s3://` sources: `VODFLEET_S3_ENDPOINT`, `VODFLEET_S3_REGION`,
    /// `VODFLEET_S3_PATH_STYLE`, `VODFLEET_S3_BUCKETS` and the `AWS_*` credentials.
    pub s3: crate::source::s3::S3Settings,
    /// `VODFLEET_HLS_MAX_BANDWIDTH`: of a master playlist's variants, the
    /// highest bandwidth (bits/s) at or under this is played; unset: the highest.
    pub hls_max_bandwidth: Option<u64>,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let ms = |k: &str, d: u64| -> Result<Duration, String> {
            num(&get, k, d).map(Duration::from_millis)
        };
        Ok(Config {
            media_root: get("VODFLEET_MEDIA_ROOT")
                .map_or_else(|| PathBuf::from("media"), PathBuf::from),
            cache_dir: get("VODFLEET_CACHE_DIR").map_or_else(
                || std::env::temp_dir().join("vodfleet-cache"),
                PathBuf::from,
            ),
            cache_max_bytes: num(&get, "VODFLEET_CACHE_MAX_BYTES", 10 << 30)?,
            allow_private_networks: flag(&get, "VODFLEET_ALLOW_PRIVATE_NETWORKS")?,
            source_timeout: ms("VODFLEET_SOURCE_TIMEOUT_MS", 10_000)?,
            source_attempts: num(&get, "VODFLEET_SOURCE_ATTEMPTS", 3)?.max(1) as u32,
            destination_timeout: ms("VODFLEET_DESTINATION_TIMEOUT_MS", 10_000)?,
            destination_attempts: num(&get, "VODFLEET_DESTINATION_ATTEMPTS", 3)?.max(1) as u32,
            retry_backoff: ms("VODFLEET_RETRY_BACKOFF_MS", 1_000)?,
            destination_takeover: ms("VODFLEET_DESTINATION_TAKEOVER_MS", 30_000)?,
            destination_queue: num(&get, "VODFLEET_DESTINATION_QUEUE", 512)?.max(16) as usize,
            initial_burst: ms("VODFLEET_INITIAL_BURST_MS", 1_000)?,
            engine_threads: num(
                &get,
                "VODFLEET_ENGINE_THREADS",
                std::thread::available_parallelism().map_or(2, |n| n.get()) as u64,
            )?
            .clamp(1, 256) as usize,
            destination_ca_file: get("VODFLEET_DESTINATION_CA_FILE")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            s3: crate::source::s3::S3Settings::from_lookup(&get)?,
            hls_max_bandwidth: match get("VODFLEET_HLS_MAX_BANDWIDTH") {
                None => None,
                Some(_) => Some(num(&get, "VODFLEET_HLS_MAX_BANDWIDTH", 0)?),
            },
        })
    }
}

/// A whole number from `key`, or `default` when unset; the error names the variable.
pub fn num(get: &impl Fn(&str) -> Option<String>, key: &str, default: u64) -> Result<u64, String> {
    match get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{key}={v:?} is not a whole number")),
    }
}

/// A boolean from `key` (`true`/`false`/`1`/`0`); the error names the variable.
pub fn flag(get: &impl Fn(&str) -> Option<String>, key: &str) -> Result<bool, String> {
    match get(key).as_deref().map(str::trim) {
        None | Some("") | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(v) => Err(format!("{key}={v:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.source_timeout, Duration::from_secs(10));
        assert_eq!(c.source_attempts, 3);
        assert_eq!(c.destination_attempts, 3);
        assert!(!c.allow_private_networks);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Config::from_lookup(|k| (k == "VODFLEET_SOURCE_ATTEMPTS").then(|| "three".into()))
            .unwrap_err();
        assert!(e.contains("VODFLEET_SOURCE_ATTEMPTS"), "{e}");
    }
}
