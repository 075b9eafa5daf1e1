//! The coordinator's configuration: `VODFLEET_*` environment variables
//! (docs/design/fleet.md has the table; the README repeats it).

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `VODFLEET_AMQP_URL`
    pub amqp_url: String,
    /// `VODFLEET_REDIS_URL`: one Redis, or with `VODFLEET_REDIS_CLUSTER` one or
    /// more comma-separated seed nodes of a Redis Cluster.
    pub redis_url: String,
    /// `VODFLEET_REDIS_CLUSTER`: `VODFLEET_REDIS_URL` names Redis Cluster nodes
    /// (docs/design/fleet.md "Redis").
    pub redis_cluster: bool,
    /// `VODFLEET_HTTP_ADDR`: API, /metrics, /healthz, /readyz.
    pub http_addr: SocketAddr,
    /// `VODFLEET_LEASE_TTL_MS`: a lease not renewed for this long is issued again.
    pub lease_ttl: Duration,
    /// `VODFLEET_HEARTBEAT_MS`: how often workers report (used to estimate a dead worker's last position).
    pub heartbeat: Duration,
    /// `VODFLEET_MIN_WINDOW_MS`: the seed's rule that `end` is at least 5 min after start and now.
    pub min_window: Duration,
    /// `VODFLEET_API_KEYS`: `id:secret,...` accepted for request signatures.
    pub api_keys: Vec<(String, Vec<u8>)>,
    /// `VODFLEET_AUTH_DISABLED`: accept unsigned requests (development only).
    pub auth_disabled: bool,
    /// `VODFLEET_CALLBACK_KEY`: `id:secret` that signs callbacks (default: the first API key).
    pub callback_key: Option<(String, Vec<u8>)>,
    /// `VODFLEET_ALLOW_PRIVATE_NETWORKS`: callbacks may reach loopback and private addresses.
    pub allow_private_networks: bool,
    /// `VODFLEET_CALLBACK_ATTEMPTS`: deliveries tried per callback before it is counted as failed.
    pub callback_attempts: u32,
    /// `VODFLEET_RETRY_BACKOFF_MS`: first callback retry delay (doubles).
    pub retry_backoff: Duration,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let ms = |k: &str, d: u64| -> Result<Duration, String> {
            match get(k) {
                None => Ok(Duration::from_millis(d)),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{k}={v:?} is not a whole number of milliseconds")),
            }
        };
        let flag = |k: &str| -> Result<bool, String> {
            match get(k).as_deref().map(str::trim) {
                None | Some("") | Some("0") | Some("false") => Ok(false),
                Some("1") | Some("true") => Ok(true),
                Some(v) => Err(format!("{k}={v:?} is not true or false")),
            }
        };
        let api_keys = match get("VODFLEET_API_KEYS") {
            None => Vec::new(),
            Some(v) => vodfleet_proto::sign::parse_keys(&v)
                .map_err(|e| format!("VODFLEET_API_KEYS: {e}"))?,
        };
        let auth_disabled = flag("VODFLEET_AUTH_DISABLED")?;
        if api_keys.is_empty() && !auth_disabled {
            return Err("VODFLEET_API_KEYS is required (id:secret,...), or set VODFLEET_AUTH_DISABLED=true for development".into());
        }
        let callback_key = match get("VODFLEET_CALLBACK_KEY") {
            Some(v) => vodfleet_proto::sign::parse_keys(&v)
                .map_err(|e| format!("VODFLEET_CALLBACK_KEY: {e}"))?
                .into_iter()
                .next(),
            None => api_keys.first().cloned(),
        };
        let addr = get("VODFLEET_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        Ok(Config {
            amqp_url: get("VODFLEET_AMQP_URL")
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            redis_url: get("VODFLEET_REDIS_URL")
                .unwrap_or_else(|| "redis://127.0.0.1:6379/".into()),
            redis_cluster: flag("VODFLEET_REDIS_CLUSTER")?,
            http_addr: addr
                .parse()
                .map_err(|_| format!("VODFLEET_HTTP_ADDR={addr:?} is not HOST:PORT"))?,
            lease_ttl: ms("VODFLEET_LEASE_TTL_MS", 10_000)?,
            heartbeat: ms("VODFLEET_HEARTBEAT_MS", 2_000)?,
            min_window: ms(
                "VODFLEET_MIN_WINDOW_MS",
                vodfleet_proto::command::DEFAULT_MIN_WINDOW_MS,
            )?,
            api_keys,
            auth_disabled,
            callback_key,
            allow_private_networks: flag("VODFLEET_ALLOW_PRIVATE_NETWORKS")?,
            callback_attempts: get("VODFLEET_CALLBACK_ATTEMPTS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(8),
            retry_backoff: ms("VODFLEET_RETRY_BACKOFF_MS", 1_000)?,
        })
    }
}
