//! The engine's Prometheus metrics and the process's registry (the worker adds
//! its fleet metrics to the same [`registry`], and serves it on `/metrics`).
//!
//! Counted where things happen (destinations, downloads) in both `play` and
//! `run` modes. Labels are bounded: never a URL, a stream key or a task id.
//! The registry also carries the standard `process_*` metrics (CPU seconds,
//! resident memory, open file descriptors, threads).

use prometheus::{Counter, Gauge, IntCounter, IntGauge, Registry, TextEncoder};
use std::sync::OnceLock;

pub struct Metrics {
    registry: Registry,
    pub streams_active: IntGauge,
    pub bytes_sent: IntCounter,
    pub frames_sent: IntCounter,
    pub destination_reconnects: IntCounter,
    pub destination_failures: IntCounter,
    pub source_download_attempts: IntCounter,
    pub source_download_failures: IntCounter,
    pub source_downloaded_bytes: IntCounter,
    pub source_cache_bytes: IntGauge,
    pub source_cache_hits: IntCounter,
    pub source_cache_misses: IntCounter,
    pub source_cache_evictions: IntCounter,
    pub lag_seconds: Gauge,
    pub slate_seconds: Counter,
}

/// The process's registry: the engine's metrics and whatever its host adds.
pub fn registry() -> &'static Registry {
    &get().registry
}

/// Registers `m` in the process's registry and returns it (names are unique by construction).
pub fn register<T: prometheus::core::Collector + Clone + 'static>(m: T) -> T {
    registry()
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

/// The process's metrics (registered on first use).
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
            r.register(Box::new(m.clone()))
                .expect("metric names are unique");
            m
        }
        let gauge = |name: &str, help: &str| {
            reg(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let counter = |name: &str, help: &str| {
            reg(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        Metrics {
            streams_active: gauge(
                "vodfleet_worker_streams_active",
                "Tasks streaming on this worker.",
            ),
            bytes_sent: counter(
                "vodfleet_worker_bytes_sent_total",
                "Media payload bytes written to destinations (each destination counts).",
            ),
            frames_sent: counter(
                "vodfleet_worker_frames_sent_total",
                "Video frames written to destinations (each destination counts).",
            ),
            destination_reconnects: counter(
                "vodfleet_worker_destination_reconnects_total",
                "Connection attempts to a destination after its first one.",
            ),
            destination_failures: counter(
                "vodfleet_worker_destination_failures_total",
                "Destinations given up after their reconnect attempts.",
            ),
            source_download_attempts: counter(
                "vodfleet_worker_source_download_attempts_total",
                "HTTP source download attempts.",
            ),
            source_download_failures: counter(
                "vodfleet_worker_source_download_failures_total",
                "HTTP source download attempts that failed.",
            ),
            source_downloaded_bytes: counter(
                "vodfleet_worker_source_downloaded_bytes_total",
                "Body bytes received from HTTP(S) and S3 sources (every download, cached or not).",
            ),
            source_cache_bytes: gauge(
                "vodfleet_worker_source_cache_bytes",
                "Bytes the worker's shared source cache holds on disk.",
            ),
            source_cache_hits: counter(
                "vodfleet_worker_source_cache_hits_total",
                "Source opens (and prefetches) that found their URL in the shared cache.",
            ),
            source_cache_misses: counter(
                "vodfleet_worker_source_cache_misses_total",
                "Source opens (and prefetches) that started a new cache entry.",
            ),
            source_cache_evictions: counter(
                "vodfleet_worker_source_cache_evictions_total",
                "Cache entries evicted (least recently used, read by no running task).",
            ),
            lag_seconds: reg(
                &registry,
                Gauge::new(
                    "vodfleet_worker_lag_seconds",
                    "How far behind real time the most delayed task is.",
                )
                .expect("valid metric"),
            ),
            slate_seconds: reg(
                &registry,
                Counter::new(
                    "vodfleet_worker_slate_seconds_total",
                    "Seconds of slate (black pictures, silence) sent while sources were late or broken.",
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_every_metric_by_its_exact_name() {
        let text = super::get().render();
        for name in [
            "vodfleet_worker_streams_active",
            "vodfleet_worker_bytes_sent_total",
            "vodfleet_worker_frames_sent_total",
            "vodfleet_worker_destination_reconnects_total",
            "vodfleet_worker_destination_failures_total",
            "vodfleet_worker_source_download_attempts_total",
            "vodfleet_worker_source_download_failures_total",
            "vodfleet_worker_lag_seconds",
            "vodfleet_worker_slate_seconds_total",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
        }
    }
}
