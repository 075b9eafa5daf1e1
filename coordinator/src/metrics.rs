//! Prometheus metrics of the coordinator: `vodfleet_<name>_<unit>[_total]`,
//! bounded labels, never a URL or a stream key.

use prometheus::{Encoder, Gauge, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    /// Commands by `cmd` (1, 2, 3, 5, invalid) and `result` (accepted, rejected, duplicate).
    pub commands: IntCounterVec,
    /// Tasks by state, refreshed from Redis every few seconds.
    pub tasks: IntGaugeVec,
    pub leases_issued: IntCounter,
    pub leases_reissued: IntCounter,
    pub leases_expired: IntCounter,
    /// Orders no worker took within the lease, offered again under the same epoch.
    pub orders_unclaimed: IntCounter,
    pub failovers: IntCounter,
    /// Age of the newest heartbeat handled, in seconds (how stale the fleet's view is).
    pub heartbeat_age: Gauge,
    pub heartbeats: IntCounter,
    pub callbacks_sent: IntCounter,
    pub callbacks_failed: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let commands = IntCounterVec::new(
            Opts::new(
                "vodfleet_commands_total",
                "Commands handled, by cmd and result",
            ),
            &["cmd", "result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(commands.clone()))
            .expect("unique metric");
        let tasks = IntGaugeVec::new(Opts::new("vodfleet_tasks", "Tasks by state"), &["state"])
            .expect("valid metric");
        registry
            .register(Box::new(tasks.clone()))
            .expect("unique metric");
        let heartbeat_age = Gauge::new(
            "vodfleet_heartbeat_age_seconds",
            "Age of the newest heartbeat handled",
        )
        .expect("valid metric");
        registry
            .register(Box::new(heartbeat_age.clone()))
            .expect("unique metric");
        Metrics {
            commands,
            tasks,
            leases_issued: counter(
                "vodfleet_leases_issued_total",
                "Leases issued (first issue of a run)",
            ),
            leases_reissued: counter(
                "vodfleet_leases_reissued_total",
                "Leases issued again (expiry, release)",
            ),
            orders_unclaimed: counter(
                "vodfleet_orders_unclaimed_total",
                "Work orders no worker took within the lease TTL (the fleet was full), offered again under the same epoch",
            ),
            leases_expired: counter(
                "vodfleet_leases_expired_total",
                "Leases that expired without a heartbeat",
            ),
            failovers: counter(
                "vodfleet_failovers_total",
                "Tasks moved to another worker after a lease expired",
            ),
            heartbeat_age,
            heartbeats: counter("vodfleet_heartbeats_total", "Worker heartbeats handled"),
            callbacks_sent: counter(
                "vodfleet_callbacks_sent_total",
                "Callbacks delivered (2xx with a body)",
            ),
            callbacks_failed: counter(
                "vodfleet_callbacks_failed_total",
                "Callbacks given up after every attempt",
            ),
            registry,
        }
    }

    /// The text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
