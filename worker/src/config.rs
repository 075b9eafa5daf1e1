//! Fleet-mode configuration: environment variables with the `VODFLEET_` prefix
//! (the media engine's own are `vodfleet_engine::config::Config`).
//! Every field is documented in the README's configuration table; keep the two in step.

use std::net::SocketAddr;
use std::time::Duration;
use vodfleet_engine::config::num;

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
        };
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
