//! What the simulator counts, shared by every simulated worker, and the JSON
//! summary it prints at the end (docs/CAPACITY.md explains each figure).

use serde::Serialize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Counters and samples of one simulator run.
pub struct Stats {
    /// When the simulator started (every time in the summary counts from here).
    pub t0: Instant,
    /// Workers whose link is up and whose control queue is declared.
    pub connected: AtomicI64,
    /// Workers that could not connect, or whose link broke during the run.
    pub links_lost: AtomicU64,
    /// Heartbeats published and confirmed.
    pub beats: AtomicU64,
    /// Task lines in those heartbeats (one per task per heartbeat).
    pub beat_tasks: AtomicU64,
    /// Heartbeats not published or not confirmed within one interval.
    pub beats_failed: AtomicU64,
    /// Heartbeats sent more than [`LATE_BEAT`] after the one before: the
    /// simulator itself was slow (its own lateness, never the coordinator's).
    pub beats_late: AtomicU64,
    /// LeaseAcks received.
    pub acks: AtomicU64,
    /// LeaseAcks for a heartbeat the worker no longer remembers.
    pub acks_unmatched: AtomicU64,
    /// LeaseAcks that came more than [`SLOW_ACK`] after their heartbeat.
    pub acks_slow: AtomicU64,
    /// Task lines in `renewed` of the acks.
    pub renewed: AtomicU64,
    /// Task lines in `unknown` of the acks (Redis lost the task).
    pub unknown: AtomicU64,
    /// Leases revoked by the coordinator (and held by the worker at the time).
    pub revoked: AtomicU64,
    /// Fences that passed although the worker had heartbeated on time for the
    /// whole lease: the coordinator's slowness (or loss) caused them.
    pub false_expiries: AtomicU64,
    /// Fences that passed while the worker's own heartbeats had been late or lost.
    pub sim_expiries: AtomicU64,
    /// `Stop` control messages for a task the worker ran.
    pub stops: AtomicU64,
    /// `Update` control messages.
    pub updates: AtomicU64,
    /// Work orders taken (leases held).
    pub orders_taken: AtomicU64,
    /// Orders too old to start (less than a heartbeat of lease left).
    pub orders_stale: AtomicU64,
    /// Orders for an epoch the worker already had.
    pub orders_old_epoch: AtomicU64,
    /// Orders whose body did not parse.
    pub orders_malformed: AtomicU64,
    /// Tasks held right now, over every worker.
    pub held: AtomicI64,
    /// `Released` / `Reclaim` messages published and confirmed.
    pub released: AtomicU64,
    /// `Released` / `Reclaim` messages that could not be published.
    pub release_failed: AtomicU64,
    /// Reclaims sent (answers to `unknown`).
    pub reclaims: AtomicU64,
    /// (ms since `t0` when the ack arrived, heartbeat → LeaseAck in µs).
    latencies: Mutex<Vec<(u32, u32)>>,
    /// (ms since `t0`, heartbeat publish → RabbitMQ's confirm in µs): the
    /// broker's share of the renewal latency (a quorum queue confirms once the
    /// message is committed, which is also when a consumer may receive it).
    confirms: Mutex<Vec<(u32, u32)>>,
    /// Per worker: when it first held all its slots (since `t0`).
    full_at: Mutex<Vec<Duration>>,
    /// When the first order was taken (since `t0`).
    first_order: Mutex<Option<Duration>>,
    /// Where the measuring window begins (SIGUSR1 from the driver), ms since `t0`.
    window_from: Mutex<Option<u32>>,
}

/// A heartbeat that leaves this much more than one interval after the one
/// before is late (the simulator's own scheduling, not the coordinator).
pub const LATE_BEAT: Duration = Duration::from_millis(500);

/// An ack this late is counted (and logged with its worker) to locate the tail.
pub const SLOW_ACK: Duration = Duration::from_secs(1);

impl Stats {
    /// Empty counters, starting now.
    pub fn new() -> Stats {
        let z = || AtomicU64::new(0);
        Stats {
            t0: Instant::now(),
            connected: AtomicI64::new(0),
            links_lost: z(),
            beats: z(),
            beat_tasks: z(),
            beats_failed: z(),
            beats_late: z(),
            acks: z(),
            acks_unmatched: z(),
            acks_slow: z(),
            renewed: z(),
            unknown: z(),
            revoked: z(),
            false_expiries: z(),
            sim_expiries: z(),
            stops: z(),
            updates: z(),
            orders_taken: z(),
            orders_stale: z(),
            orders_old_epoch: z(),
            orders_malformed: z(),
            held: AtomicI64::new(0),
            released: z(),
            release_failed: z(),
            reclaims: z(),
            latencies: Mutex::new(Vec::new()),
            confirms: Mutex::new(Vec::new()),
            full_at: Mutex::new(Vec::new()),
            first_order: Mutex::new(None),
            window_from: Mutex::new(None),
        }
    }

    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Time since the start.
    pub fn since_start(&self) -> Duration {
        self.t0.elapsed()
    }

    /// A heartbeat's ack arrived `latency` after the heartbeat was sent.
    pub fn latency(&self, latency: Duration) {
        let at = self.since_start().as_millis() as u32;
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        self.latencies.lock().expect("stats lock").push((at, us));
    }

    /// A heartbeat was confirmed by RabbitMQ `latency` after it was published.
    pub fn confirm(&self, latency: Duration) {
        let at = self.since_start().as_millis() as u32;
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        self.confirms.lock().expect("stats lock").push((at, us));
    }

    /// The driver's measuring window begins now.
    pub fn mark_window(&self) {
        let at = self.since_start().as_millis() as u32;
        *self.window_from.lock().expect("stats lock") = Some(at);
    }

    /// A worker took an order.
    pub fn order_taken(&self) {
        Self::inc(&self.orders_taken);
        self.held.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_order.lock().expect("stats lock");
        first.get_or_insert_with(|| self.t0.elapsed());
    }

    /// A worker holds all its slots for the first time.
    pub fn worker_full(&self) {
        let at = self.since_start();
        self.full_at.lock().expect("stats lock").push(at);
    }

    /// Workers that have been full at least once.
    pub fn workers_full(&self) -> usize {
        self.full_at.lock().expect("stats lock").len()
    }

    /// A one-line progress record (JSON) for the driver script.
    pub fn progress(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "t_s": secs(self.since_start()),
            "connected": self.connected.load(Ordering::Relaxed),
            "held": self.held.load(Ordering::Relaxed),
            "workers_full": self.workers_full(),
            "beats": g(&self.beats),
            "beat_tasks": g(&self.beat_tasks),
            "acks": g(&self.acks),
            "acks_slow": g(&self.acks_slow),
            "orders_taken": g(&self.orders_taken),
            "revoked": g(&self.revoked),
            "false_expiries": g(&self.false_expiries),
            "sim_expiries": g(&self.sim_expiries),
            "beats_failed": g(&self.beats_failed),
            "beats_late": g(&self.beats_late),
        })
    }

    /// The end-of-run summary (everything but the run's parameters).
    pub fn summary(&self, workers: usize) -> Summary {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let first = *self.first_order.lock().expect("stats lock");
        let mut full: Vec<Duration> = self.full_at.lock().expect("stats lock").clone();
        full.sort();
        let from_first: Vec<f64> = full
            .iter()
            .map(|d| secs(d.saturating_sub(first.unwrap_or_default())))
            .collect();
        let all_full = (full.len() == workers)
            .then(|| full.last().copied())
            .flatten();
        let window_from = *self.window_from.lock().expect("stats lock");
        // Steady state: once every worker was full (no more orders to take).
        let split = |samples: &[(u32, u32)]| {
            let window: Vec<u32> = match window_from {
                Some(from) => samples
                    .iter()
                    .filter(|(at, _)| *at >= from)
                    .map(|(_, us)| *us)
                    .collect(),
                None => Vec::new(),
            };
            let all: Vec<u32> = samples.iter().map(|(_, us)| *us).collect();
            let ramp: Vec<u32> = samples
                .iter()
                .filter(|(at, _)| window_from.is_none_or(|from| *at < from))
                .map(|(_, us)| *us)
                .collect();
            let steady: Vec<u32> = match all_full {
                Some(d) => {
                    let from = d.as_millis() as u32;
                    samples
                        .iter()
                        .filter(|(at, _)| *at >= from)
                        .map(|(_, us)| *us)
                        .collect()
                }
                None => Vec::new(),
            };
            Latency {
                all: Percentiles::of_us(all),
                steady: Percentiles::of_us(steady),
                window: Percentiles::of_us(window),
                ramp: Percentiles::of_us(ramp),
            }
        };
        Summary {
            ramp: Ramp {
                first_order_s: first.map(secs),
                workers_full: full.len(),
                all_full_s: all_full.map(secs),
                all_full_from_first_order_s: all_full
                    .zip(first)
                    .map(|(a, f)| secs(a.saturating_sub(f))),
                worker_full_from_first_order_s: Percentiles::of_f64(&from_first),
            },
            heartbeats: Beats {
                sent: g(&self.beats),
                task_lines: g(&self.beat_tasks),
                failed: g(&self.beats_failed),
                late: g(&self.beats_late),
            },
            renewal_latency_ms: split(&self.latencies.lock().expect("stats lock")),
            heartbeat_confirm_ms: split(&self.confirms.lock().expect("stats lock")),
            acks: Acks {
                received: g(&self.acks),
                unmatched: g(&self.acks_unmatched),
                slower_than_1s: g(&self.acks_slow),
                renewed_lines: g(&self.renewed),
                unknown_lines: g(&self.unknown),
            },
            leases: Leases {
                false_expiries: g(&self.false_expiries),
                expiries_sim_late: g(&self.sim_expiries),
                revoked: g(&self.revoked),
                stops: g(&self.stops),
                updates: g(&self.updates),
                reclaims: g(&self.reclaims),
            },
            orders: Orders {
                taken: g(&self.orders_taken),
                stale: g(&self.orders_stale),
                old_epoch: g(&self.orders_old_epoch),
                malformed: g(&self.orders_malformed),
            },
            links_lost: g(&self.links_lost),
            held_at_end: self.held.load(Ordering::Relaxed),
            released: g(&self.released),
            release_failed: g(&self.release_failed),
        }
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The run's figures (see [`Stats`] for what each counter means).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// How fast the fleet filled up.
    pub ramp: Ramp,
    /// What the workers sent.
    pub heartbeats: Beats,
    /// Heartbeat sent → its LeaseAck received.
    pub renewal_latency_ms: Latency,
    /// Heartbeat published → confirmed by RabbitMQ.
    pub heartbeat_confirm_ms: Latency,
    /// What the coordinators answered.
    pub acks: Acks,
    /// Lease outcomes.
    pub leases: Leases,
    /// Work orders.
    pub orders: Orders,
    /// Workers that could not connect or lost their link.
    pub links_lost: u64,
    /// Tasks still held when the drain began.
    pub held_at_end: i64,
    /// `Released` (drain, stop) and `Reclaim` messages confirmed by RabbitMQ.
    pub released: u64,
    /// Such messages that could not be published.
    pub release_failed: u64,
}

/// Time to fill the fleet.
#[derive(Debug, Serialize)]
pub struct Ramp {
    /// First order taken, since the simulator started.
    pub first_order_s: Option<f64>,
    /// Workers that held all their slots at some point.
    pub workers_full: usize,
    /// Every worker full, since the simulator started.
    pub all_full_s: Option<f64>,
    /// Every worker full, since the first order.
    pub all_full_from_first_order_s: Option<f64>,
    /// Per worker: full, since the first order (seconds).
    pub worker_full_from_first_order_s: Percentiles,
}

/// Heartbeat counts.
#[derive(Debug, Serialize)]
pub struct Beats {
    /// Published and confirmed.
    pub sent: u64,
    /// Task lines in them.
    pub task_lines: u64,
    /// Not published or not confirmed in time.
    pub failed: u64,
    /// Sent late by the simulator itself.
    pub late: u64,
}

/// A latency, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Every ack of the run.
    pub all: Percentiles,
    /// Acks once every worker was full (empty if that never happened).
    pub steady: Percentiles,
    /// Acks from the driver's SIGUSR1 on (its measuring window; empty without one).
    pub window: Percentiles,
    /// Acks before the driver's SIGUSR1: the fleet filling up (every ack of
    /// the run without one).
    pub ramp: Percentiles,
}

/// Ack counts.
#[derive(Debug, Serialize)]
pub struct Acks {
    /// LeaseAcks received.
    pub received: u64,
    /// For a heartbeat no longer remembered.
    pub unmatched: u64,
    /// More than a second after their heartbeat.
    pub slower_than_1s: u64,
    /// Renewed task lines.
    pub renewed_lines: u64,
    /// Unknown task lines.
    pub unknown_lines: u64,
}

/// Lease outcomes.
#[derive(Debug, Serialize)]
pub struct Leases {
    /// Fences passed although every heartbeat left on time.
    pub false_expiries: u64,
    /// Fences passed after the simulator's own heartbeats were late or lost.
    pub expiries_sim_late: u64,
    /// Revocations of held leases.
    pub revoked: u64,
    /// `Stop` messages for held tasks.
    pub stops: u64,
    /// `Update` messages.
    pub updates: u64,
    /// Reclaims sent.
    pub reclaims: u64,
}

/// Work order counts.
#[derive(Debug, Serialize)]
pub struct Orders {
    /// Taken.
    pub taken: u64,
    /// Too old to start.
    pub stale: u64,
    /// For an epoch already held.
    pub old_epoch: u64,
    /// Unparsable.
    pub malformed: u64,
}

/// Percentiles of a sample (milliseconds for latencies, seconds for ramps).
#[derive(Debug, Serialize, PartialEq)]
pub struct Percentiles {
    /// Sample size.
    pub n: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Percentiles {
    /// Of microsecond samples, in milliseconds (three decimals).
    fn of_us(mut v: Vec<u32>) -> Percentiles {
        v.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Percentiles::of_sorted(&v.into_iter().map(ms).collect::<Vec<_>>())
    }

    fn of_f64(v: &[f64]) -> Percentiles {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        Percentiles::of_sorted(&v)
    }

    /// Nearest-rank percentiles of a sorted sample.
    fn of_sorted(v: &[f64]) -> Percentiles {
        let at = |p: f64| {
            (!v.is_empty()).then(|| {
                let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
                v[rank.clamp(1, v.len()) - 1]
            })
        };
        Percentiles {
            n: v.len(),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: v.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Percentiles;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of_us((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(
            p,
            Percentiles {
                n: 100,
                p50: Some(50.0),
                p90: Some(90.0),
                p99: Some(99.0),
                max: Some(100.0)
            }
        );
        assert_eq!(Percentiles::of_us(vec![]).p99, None);
        assert_eq!(Percentiles::of_f64(&[3.0, 1.0, 2.0]).p50, Some(2.0));
    }
}
