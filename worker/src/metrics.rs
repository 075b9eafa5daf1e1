//! Fleet-mode metrics, registered next to the engine's in one registry
//! (`vodfleet_engine::metrics::registry`). Labels are bounded: never a URL,
//! a stream key or a task id.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::sync::OnceLock;
use vodfleet_engine::metrics::register;

pub struct FleetMetrics {
    /// `vodfleet_worker_free_slots`
    pub free_slots: IntGauge,
    /// `vodfleet_worker_heartbeats_total`
    pub heartbeats: IntCounter,
    /// `vodfleet_worker_http_heartbeats_total`: heartbeats sent over the
    /// coordinators' HTTP API while RabbitMQ was away, by `outcome`
    /// (`renewed`, `refused`, `failed`).
    pub http_heartbeats: IntCounterVec,
    /// By `reason`: `expired` (no renewal within the lease TTL) or `revoked`.
    pub fenced: IntCounterVec,
    /// `vodfleet_worker_shed_total`: tasks released because the worker was overloaded.
    pub shed: IntCounter,
    /// `vodfleet_worker_accepting_work`: 1 while the load lets the worker take work orders.
    pub accepting: IntGauge,
    /// `vodfleet_worker_loop_delay_seconds`: the worst lateness of an engine
    /// event-loop wake-up in the last load sample.
    pub loop_delay: Gauge,
    /// `vodfleet_dependency_up{dependency="rabbitmq"}`: 1 while the RabbitMQ link is up.
    pub dependency_up: IntGaugeVec,
    /// `vodfleet_dependency_errors_total{dependency="rabbitmq"}`: lost links and failed publishes.
    pub dependency_errors: IntCounterVec,
}

/// The one dependency a worker has (it never talks to Redis).
pub const RABBITMQ: &str = "rabbitmq";

impl FleetMetrics {
    /// Whether the RabbitMQ link is up; losing it counts as an error.
    pub fn rabbitmq(&self, up: bool) {
        self.dependency_up
            .with_label_values(&[RABBITMQ])
            .set(i64::from(up));
        if !up {
            self.rabbitmq_error();
        }
    }

    /// A failed RabbitMQ operation (the link may still be up).
    pub fn rabbitmq_error(&self) {
        self.dependency_errors.with_label_values(&[RABBITMQ]).inc();
    }
}

/// The fleet's metrics (registered on first use).
pub fn get() -> &'static FleetMetrics {
    static M: OnceLock<FleetMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = FleetMetrics {
            free_slots: register(
                IntGauge::new(
                    "vodfleet_worker_free_slots",
                    "Task slots free for new work orders.",
                )
                .expect("valid metric"),
            ),
            heartbeats: register(
                IntCounter::new(
                    "vodfleet_worker_heartbeats_total",
                    "Heartbeats published (confirmed by RabbitMQ).",
                )
                .expect("valid metric"),
            ),
            http_heartbeats: register(
                IntCounterVec::new(
                    Opts::new(
                        "vodfleet_worker_http_heartbeats_total",
                        "Heartbeats sent over the coordinators' HTTP API while RabbitMQ was away, by outcome.",
                    ),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            shed: register(
                IntCounter::new(
                    "vodfleet_worker_shed_total",
                    "Tasks released with their position because this worker was overloaded.",
                )
                .expect("valid metric"),
            ),
            accepting: register(
                IntGauge::new(
                    "vodfleet_worker_accepting_work",
                    "1 while this worker's load lets it take work orders, 0 while it is full.",
                )
                .expect("valid metric"),
            ),
            loop_delay: register(
                Gauge::new(
                    "vodfleet_worker_loop_delay_seconds",
                    "Worst lateness of an engine event-loop wake-up in the last load sample.",
                )
                .expect("valid metric"),
            ),
            fenced: register(
                IntCounterVec::new(
                    Opts::new(
                        "vodfleet_worker_fenced_total",
                        "Tasks this worker stopped because it lost their lease.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            dependency_up: register(
                IntGaugeVec::new(
                    Opts::new(
                        "vodfleet_dependency_up",
                        "1 while the dependency answers, 0 while it is unreachable.",
                    ),
                    &["dependency"],
                )
                .expect("valid metric"),
            ),
            dependency_errors: register(
                IntCounterVec::new(
                    Opts::new(
                        "vodfleet_dependency_errors_total",
                        "Failed operations and lost connections, by dependency.",
                    ),
                    &["dependency"],
                )
                .expect("valid metric"),
            ),
        };
        m.accepting.set(1);
        // Down until the link is made; no errors yet.
        m.dependency_up.with_label_values(&[RABBITMQ]).set(0);
        m.dependency_errors.with_label_values(&[RABBITMQ]);
        // Both reasons are listed from the start, at 0.
        for reason in ["expired", "revoked"] {
            m.fenced.with_label_values(&[reason]);
        }
        for outcome in ["renewed", "refused", "failed"] {
            m.http_heartbeats.with_label_values(&[outcome]);
        }
        m
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fleet_metrics_render_with_the_engine_s() {
        super::get().fenced.with_label_values(&["expired"]).inc();
        let text = vodfleet_engine::metrics::get().render();
        for name in [
            "vodfleet_worker_free_slots",
            "vodfleet_worker_heartbeats_total",
            "vodfleet_worker_fenced_total",
            "vodfleet_worker_shed_total",
            "vodfleet_worker_accepting_work",
            "vodfleet_worker_loop_delay_seconds",
            "vodfleet_worker_streams_active",
            "vodfleet_dependency_up",
            "vodfleet_dependency_errors_total",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
        }
        for line in [
            "vodfleet_dependency_up{dependency=\"rabbitmq\"}",
            "vodfleet_dependency_errors_total{dependency=\"rabbitmq\"}",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
