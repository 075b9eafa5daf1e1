//! Prometheus metrics of the coordinator: `vodfleet_<name>_<unit>[_total]`,
//! bounded labels, never a URL or a stream key.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};
use std::time::Instant;

/// What `vodfleet_dependency_up` and `vodfleet_dependency_errors_total` are labelled with.
pub const REDIS: &str = "redis";
pub const RABBITMQ: &str = "rabbitmq";

/// What `vodfleet_http_heartbeats_total` is labelled with.
pub const HTTP_HEARTBEAT_OUTCOMES: [&str; 5] =
    ["renewed", "refused", "rejected", "forbidden", "failed"];

/// `vodfleet_command_intake_seconds` buckets: 1 ms to 10 s.
const INTAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    pub registry: Registry,
    /// Commands by `cmd` (1, 2, 3, 5, invalid) and `result` (accepted, rejected, duplicate).
    pub commands: IntCounterVec,
    /// From a command's delivery to its ack, by the same `cmd` and `result` as `commands`.
    pub command_intake: HistogramVec,
    /// 1 while Redis / RabbitMQ answer, by `dependency` (`redis`, `rabbitmq`).
    pub dependency_up: IntGaugeVec,
    /// Failed operations and lost connections, by `dependency`.
    pub dependency_errors: IntCounterVec,
    /// Tasks by state, refreshed from Redis every few seconds.
    pub tasks: IntGaugeVec,
    pub leases_issued: IntCounter,
    pub leases_reissued: IntCounter,
    pub leases_expired: IntCounter,
    /// Orders no worker took within the lease, offered again under the same epoch.
    pub orders_unclaimed: IntCounter,
    /// Orders that could not be published (RabbitMQ down), offered again once it was back.
    pub orders_reoffered: IntCounter,
    pub failovers: IntCounter,
    /// Age of the newest heartbeat handled, in seconds (how stale the fleet's view is).
    pub heartbeat_age: Gauge,
    pub heartbeats: IntCounter,
    /// Heartbeats not handled because a newer one of the same worker arrived
    /// while they waited (coordinator/src/inbox.rs).
    pub heartbeats_superseded: IntCounter,
    /// Heartbeats that came over HTTP (RabbitMQ down), by `outcome`
    /// (renewed, refused, rejected, forbidden, failed).
    pub http_heartbeats: IntCounterVec,
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
        let command_intake = HistogramVec::new(
            HistogramOpts::new(
                "vodfleet_command_intake_seconds",
                "Time from a command's delivery to its ack, by cmd and result",
            )
            .buckets(INTAKE_BUCKETS.to_vec()),
            &["cmd", "result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(command_intake.clone()))
            .expect("unique metric");
        // Every series a queue command can land in, at 0 from the start.
        for cmd in ["1", "2", "3", "5"] {
            for result in ["accepted", "rejected", "duplicate"] {
                command_intake.with_label_values(&[cmd, result]);
            }
        }
        command_intake.with_label_values(&["invalid", "rejected"]);
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "vodfleet_dependency_up",
                "1 while the dependency answers, 0 while it is unreachable",
            ),
            &["dependency"],
        )
        .expect("valid metric");
        let dependency_errors = IntCounterVec::new(
            Opts::new(
                "vodfleet_dependency_errors_total",
                "Failed operations and lost connections, by dependency",
            ),
            &["dependency"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(dependency_up.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(dependency_errors.clone()))
            .expect("unique metric");
        // Down (0) until connected; no errors yet.
        for dep in [REDIS, RABBITMQ] {
            dependency_up.with_label_values(&[dep]).set(0);
            dependency_errors.with_label_values(&[dep]);
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, …
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let http_heartbeats = IntCounterVec::new(
            Opts::new(
                "vodfleet_http_heartbeats_total",
                "Worker heartbeats that came over HTTP while RabbitMQ was down, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_heartbeats.clone()))
            .expect("unique metric");
        for outcome in HTTP_HEARTBEAT_OUTCOMES {
            http_heartbeats.with_label_values(&[outcome]);
        }
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
            command_intake,
            dependency_up,
            dependency_errors,
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
            orders_reoffered: counter(
                "vodfleet_orders_reoffered_total",
                "Work orders that could not be published while RabbitMQ was down, offered again once it was back",
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
            heartbeats_superseded: counter(
                "vodfleet_heartbeats_superseded_total",
                "Worker heartbeats skipped because a newer one of the same worker arrived while they waited",
            ),
            http_heartbeats,
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

    /// A command acked after `since` (when its delivery arrived).
    pub fn intake_done(&self, cmd: &str, result: &str, since: Instant) {
        self.command_intake
            .with_label_values(&[cmd, result])
            .observe(since.elapsed().as_secs_f64());
    }

    /// One heartbeat over HTTP, and what came of it (one of [`HTTP_HEARTBEAT_OUTCOMES`]).
    pub fn http_heartbeat(&self, outcome: &str) {
        self.http_heartbeats.with_label_values(&[outcome]).inc();
    }

    /// Whether `dependency` answered; a failure counts as an error.
    pub fn dependency(&self, dependency: &str, up: bool) {
        self.dependency_up
            .with_label_values(&[dependency])
            .set(i64::from(up));
        if !up {
            self.dependency_error(dependency);
        }
    }

    /// A failed operation on `dependency` (the dependency may still be up).
    pub fn dependency_error(&self, dependency: &str) {
        self.dependency_errors
            .with_label_values(&[dependency])
            .inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_there_before_anything_happened() {
        let m = Metrics::new();
        let text = m.render();
        for line in [
            "vodfleet_dependency_up{dependency=\"redis\"} 0",
            "vodfleet_dependency_up{dependency=\"rabbitmq\"} 0",
            "vodfleet_dependency_errors_total{dependency=\"redis\"} 0",
            "vodfleet_dependency_errors_total{dependency=\"rabbitmq\"} 0",
            "vodfleet_command_intake_seconds_count{cmd=\"1\",result=\"accepted\"} 0",
            "vodfleet_command_intake_seconds_bucket{cmd=\"invalid\",result=\"rejected\",le=\"0.001\"} 0",
            "vodfleet_command_intake_seconds_bucket{cmd=\"5\",result=\"duplicate\",le=\"10\"} 0",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn dependencies_and_intake_are_counted() {
        let m = Metrics::new();
        m.dependency(REDIS, true);
        m.dependency(RABBITMQ, false);
        m.dependency_error(REDIS);
        m.intake_done(
            "2",
            "rejected",
            Instant::now() - std::time::Duration::from_millis(30),
        );
        let text = m.render();
        for line in [
            "vodfleet_dependency_up{dependency=\"redis\"} 1",
            "vodfleet_dependency_up{dependency=\"rabbitmq\"} 0",
            "vodfleet_dependency_errors_total{dependency=\"redis\"} 1",
            "vodfleet_dependency_errors_total{dependency=\"rabbitmq\"} 1",
            "vodfleet_command_intake_seconds_bucket{cmd=\"2\",result=\"rejected\",le=\"0.025\"} 0",
            "vodfleet_command_intake_seconds_bucket{cmd=\"2\",result=\"rejected\",le=\"0.05\"} 1",
            "vodfleet_command_intake_seconds_count{cmd=\"2\",result=\"rejected\"} 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
