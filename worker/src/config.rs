//! Fleet-mode configuration: environment variables with the `VODFLEET_` prefix
//! (the media engine's own are `vodfleet_engine::config::Config`).
//! Every field is documented in the README's configuration table; keep the two in step.

use std::net::SocketAddr;
use std::time::Duration;
use vodfleet_engine::config::num;
use vodfleet_proto::sign::ApiKey;

/// Fleet mode (`vodfleet-worker run`): the variables of docs/design/fleet.md.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `VODFLEET_AMQP_URL`: the RabbitMQ broker (vhost included).
    pub amqp_url: String,
    /// `VODFLEET_WORKER_ID`: this worker's name on the control exchange; `<hostname>-<pid>` by default.
    pub worker_id: String,
    /// `VODFLEET_WORKER_SLOTS`: tasks this worker runs at most. An upper bound
    /// only: the worker stops taking work earlier when its measured load says so.
    pub slots: usize,
    /// `VODFLEET_LEASE_TTL_MS`: how long a lease lives without a renewal.
    pub lease_ttl: Duration,
    /// `VODFLEET_HEARTBEAT_MS`: interval between heartbeats.
    pub heartbeat: Duration,
    /// `VODFLEET_DRAIN_TIMEOUT_MS`: how long SIGTERM may take to release every task.
    pub drain_timeout: Duration,
    /// `VODFLEET_HTTP_ADDR`: `/healthz`, `/readyz`, `/metrics`.
    pub http_addr: SocketAddr,
    /// `VODFLEET_WORKER_START_RATE`: tasks started per second at most (bursts of
    /// up to as many at once), so a flood of orders does not swamp the engine.
    pub start_rate: u32,
    /// `VODFLEET_COORDINATOR_URL`: the coordinators' HTTP API, one or more
    /// comma-separated base URLs (in Kubernetes, the coordinator Service).
    /// While RabbitMQ is unreachable, heartbeats go there, so a broker outage
    /// longer than the lease does not stop the streams (docs/design/fleet.md,
    /// "Broker outage"). Empty: no second path.
    pub coordinator_urls: Vec<reqwest::Url>,
    /// `VODFLEET_API_KEY`: `id:secret`, one of the coordinators'
    /// `VODFLEET_API_KEYS`; signs those heartbeats. Required with a coordinator URL.
    pub api_key: Option<ApiKey>,
}

/// A worker stops a task this long before its lease could expire at the coordinator.
pub const FENCE_MARGIN: Duration = Duration::from_millis(500);

impl FleetConfig {
    pub fn from_env() -> Result<FleetConfig, String> {
        FleetConfig::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<FleetConfig, String> {
        let ms = |k: &str, d: u64| -> Result<Duration, String> {
            num(&get, k, d).map(Duration::from_millis)
        };
        let http = get("VODFLEET_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:9101".into());
        let c = FleetConfig {
            amqp_url: get("VODFLEET_AMQP_URL")
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            worker_id: get("VODFLEET_WORKER_ID")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(default_worker_id),
            slots: num(&get, "VODFLEET_WORKER_SLOTS", 1000)? as usize,
            lease_ttl: ms("VODFLEET_LEASE_TTL_MS", 10_000)?,
            heartbeat: ms("VODFLEET_HEARTBEAT_MS", 2_000)?,
            drain_timeout: ms("VODFLEET_DRAIN_TIMEOUT_MS", 20_000)?,
            start_rate: num(&get, "VODFLEET_WORKER_START_RATE", 50)?.clamp(1, 100_000) as u32,
            http_addr: http.trim().parse().map_err(|_| {
                format!("VODFLEET_HTTP_ADDR={http:?} is not an address like 127.0.0.1:9101")
            })?,
            coordinator_urls: coordinator_urls(get("VODFLEET_COORDINATOR_URL").as_deref())?,
            api_key: match get("VODFLEET_API_KEY") {
                None => None,
                Some(v) => Some(api_key(&v)?),
            },
        };
        if !c.coordinator_urls.is_empty() && c.api_key.is_none() {
            return Err("VODFLEET_COORDINATOR_URL needs VODFLEET_API_KEY (id:secret, one of the coordinators' VODFLEET_API_KEYS) to sign heartbeats".into());
        }
        if c.worker_id.is_empty() || c.worker_id.len() > 200 {
            return Err("VODFLEET_WORKER_ID must be 1 to 200 characters".into());
        }
        if c.slots == 0 {
            return Err("VODFLEET_WORKER_SLOTS must be at least 1".into());
        }
        if c.heartbeat.is_zero() || c.heartbeat + FENCE_MARGIN >= c.lease_ttl {
            return Err(format!(
                "VODFLEET_HEARTBEAT_MS ({} ms) must be above 0 and leave more than {} ms of VODFLEET_LEASE_TTL_MS ({} ms): \
                 a lease must survive at least one heartbeat",
                c.heartbeat.as_millis(),
                FENCE_MARGIN.as_millis(),
                c.lease_ttl.as_millis()
            ));
        }
        Ok(c)
    }
}

/// `http(s)://host[:port]` base URLs, comma-separated; none when unset or blank.
fn coordinator_urls(v: Option<&str>) -> Result<Vec<reqwest::Url>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    v.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| match reqwest::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
            _ => Err(format!(
                "VODFLEET_COORDINATOR_URL: {:?} is not an http(s) URL like http://vodfleet-coordinator:8080",
                vodfleet_proto::redact::source(u)
            )),
        })
        .collect()
}

fn api_key(v: &str) -> Result<ApiKey, String> {
    let mut keys =
        vodfleet_proto::sign::parse_keys(v).map_err(|e| format!("VODFLEET_API_KEY: {e}"))?;
    match (keys.pop(), keys.is_empty()) {
        (Some((id, secret)), true) => Ok(ApiKey { id, secret }),
        _ => Err("VODFLEET_API_KEY: one key, id:secret".into()),
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_defaults_follow_the_design_note() {
        let c = FleetConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c.slots, 1000);
        assert_eq!(c.start_rate, 50);
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.drain_timeout, Duration::from_secs(20));
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:9101");
        assert!(c.worker_id.ends_with(&format!("-{}", std::process::id())));
        assert!(c.coordinator_urls.is_empty() && c.api_key.is_none());
    }

    #[test]
    fn coordinator_urls_need_a_key_and_an_http_scheme() {
        let with = |url: &'static str, key: Option<&'static str>| {
            FleetConfig::from_lookup(move |k| match k {
                "VODFLEET_COORDINATOR_URL" => Some(url.into()),
                "VODFLEET_API_KEY" => key.map(Into::into),
                _ => None,
            })
        };
        let c = with("http://a:8080, https://b", Some("k1:0123456789abcdef")).unwrap();
        assert_eq!(c.coordinator_urls.len(), 2);
        assert_eq!(c.api_key.unwrap().id, "k1");
        let e = with("http://a:8080", None).unwrap_err();
        assert!(e.contains("VODFLEET_API_KEY"), "{e}");
        let e = with("ftp://user:pw@a", Some("k1:0123456789abcdef")).unwrap_err();
        assert!(
            e.contains("VODFLEET_COORDINATOR_URL") && !e.contains("pw"),
            "{e}"
        );
        let e = with("http://a", Some("k1:0123456789abcdef,k2:0123456789abcdef")).unwrap_err();
        assert!(e.contains("one key"), "{e}");
    }

    #[test]
    fn a_heartbeat_slower_than_the_lease_is_refused() {
        let e = FleetConfig::from_lookup(|k| match k {
            "VODFLEET_LEASE_TTL_MS" => Some("3000".into()),
            "VODFLEET_HEARTBEAT_MS" => Some("2600".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(e.contains("VODFLEET_HEARTBEAT_MS"), "{e}");
    }
}
