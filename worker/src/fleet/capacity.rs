//! What this worker can carry, measured rather than assumed
//! (docs/design/fleet.md, "Capacity").
//!
//! Once a second the worker samples its load: the CPU its process used (as a
//! share of the cores it may use), how late the engine's event loops wake up,
//! and how far its streams lag behind real time (and, for the log, how idle the
//! whole machine was).
//! [`Capacity::judge`] turns a sample into a verdict:
//!
//! - **Take**: room to spare; work orders are consumed while slots are free.
//! - **Full**: near the limit; no new orders (the consumer is cancelled), the
//!   streams already here go on.
//! - **Shed(n)**: overloaded for several samples in a row; the `n` newest
//!   tasks are released with their exact position, so the coordinator re-issues
//!   them to a worker with room, instead of every lease here lapsing at once (a
//!   fence storm). [`shed_choice`] picks each among the tasks moved the fewest
//!   times, so a task already shed once is not moved again while others never were.
//!
//! The judge also learns a **ceiling**: the stream count at which this worker
//! last had to shed (lowered by every shed), raised by 2 % after each 5 calm
//! seconds spent at it. Without it a worker that shed a task saw one good
//! sample, took 80 new orders in the next seconds and was overloaded again: it
//! oscillated around its edge with its streams lagging (measured: 1469 of 3000
//! offered lagging, 2026-12-06, docs/BENCHMARKS.md). This is additive increase,
//! multiplicative-ish decrease, as TCP finds a path's capacity.

use std::time::Instant;

/// The task to release when overloaded: the newest of those with the lowest
/// epoch. The epoch counts how often a task was issued; shedding by start time
/// alone would pick the task that was just re-issued here after a shed again
/// and again (its epoch climbing), while the streams that overload the worker
/// stay.
pub fn shed_choice<K, T: Ord + Copy>(tasks: impl IntoIterator<Item = (K, u64, T)>) -> Option<K> {
    tasks
        .into_iter()
        .max_by_key(|(_, epoch, started)| (std::cmp::Reverse(*epoch), *started))
        .map(|(k, _, _)| k)
}

/// One load sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// CPU used by this process over the sample, as a share of the cores it may use (0..=1).
    pub cpu: f64,
    /// Share of the whole machine's CPU time that was idle (0..=1). A machine
    /// with almost nothing idle stops the intake (whoever loads it, streams
    /// taken now would lag), but never causes a shed: others' load on a shared
    /// node is not this worker's to cure.
    pub idle: f64,
    /// Worst lateness of an engine event-loop wake-up in the sample, ms.
    pub loop_delay_ms: u64,
    /// Worst lag behind real time of any stream, ms.
    pub max_lag_ms: u64,
    /// Streams running.
    pub tasks: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    Full,
    /// Release this many tasks (at least one).
    Shed(usize),
}

/// Thresholds, with defaults chosen for a 2 s heartbeat and a 1 s initial burst.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop taking orders at this CPU share of the process's cores …
    pub cpu_full: f64,
    /// … or when less than this share of the machine is idle …
    pub idle_full: f64,
    /// … or when event loops wake this late (ms).
    pub delay_full_ms: u64,
    /// … or when a stream lags this far (ms).
    pub lag_full_ms: u64,
    /// Overloaded: event loops this late (ms) … (streams run a second ahead
    /// of real time, so a late wake-up harms no viewer until it nears that;
    /// start-up bursts make wake-ups a few hundred ms late for a while, and
    /// shedding on those learnt a ceiling half the box's real one)
    pub delay_shed_ms: u64,
    /// … or a stream this far behind (ms) …
    pub lag_shed_ms: u64,
    /// … for this many samples in a row.
    pub shed_after: u32,
    /// Tasks released per overloaded sample: this share of the streams (at least one).
    pub shed_share: f64,
    /// Calm samples in a row at the ceiling before it is raised.
    pub grow_after: u32,
    /// How much the ceiling is raised then: this share of it (at least one stream).
    pub grow_share: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            cpu_full: 0.85,
            idle_full: 0.05,
            delay_full_ms: 50,
            lag_full_ms: 500,
            delay_shed_ms: 1_000,
            lag_shed_ms: 1_000,
            shed_after: 3,
            shed_share: 0.005,
            grow_after: 5,
            grow_share: 0.02,
        }
    }
}

/// The verdict over time.
#[derive(Debug, Default)]
pub struct Capacity {
    /// Thresholds.
    limits: Limits,
    /// Overloaded samples in a row.
    overloaded: u32,
    /// Streams this worker has found it can carry: `None` until it first
    /// sheds (a single overloaded sample, common while streams start, sets
    /// nothing), then what it kept, lowered by every shed and raised slowly
    /// while it runs calm at it.
    ceiling: Option<usize>,
    /// Calm samples in a row at the ceiling.
    calm: u32,
}

impl Capacity {
    pub fn new(limits: Limits) -> Capacity {
        Capacity {
            limits,
            ..Capacity::default()
        }
    }

    /// The ceiling learnt so far (for the log and the tests).
    pub fn ceiling(&self) -> Option<usize> {
        self.ceiling
    }

    pub fn judge(&mut self, l: &Load) -> Verdict {
        let lim = self.limits;
        let over = l.tasks > 0
            && (l.loop_delay_ms >= lim.delay_shed_ms || l.max_lag_ms >= lim.lag_shed_ms);
        self.overloaded = if over { self.overloaded + 1 } else { 0 };
        if self.overloaded >= lim.shed_after {
            // A small share per sample: what it frees shows in the next one.
            let n = ((l.tasks as f64 * lim.shed_share) as usize).clamp(1, l.tasks);
            self.ceiling = Some(l.tasks - n);
            self.calm = 0;
            return Verdict::Shed(n);
        }
        // A worker with no streams is never full: whatever loads the machine,
        // it is not its own work, and taking some is better than none.
        let busy = l.tasks > 0
            && (l.cpu >= lim.cpu_full
                || l.idle < lim.idle_full
                || l.loop_delay_ms >= lim.delay_full_ms
                || l.max_lag_ms >= lim.lag_full_ms
                || over);
        if busy {
            self.calm = 0;
            return Verdict::Full;
        }
        match self.ceiling {
            Some(c) if l.tasks >= c => {
                self.calm += 1;
                if self.calm >= lim.grow_after {
                    self.calm = 0;
                    self.ceiling = Some(c + ((c as f64 * lim.grow_share) as usize).max(1));
                }
                Verdict::Full
            }
            _ => Verdict::Take,
        }
    }
}

/// Paces task start-ups (a token bucket): each new stream sends its initial
/// burst and opens a connection at once, so hundreds of orders taken in the
/// same second would swamp the shards and the receiving servers for a while,
/// and the load samples would call a healthy worker full.
#[derive(Debug)]
pub struct StartPace {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl StartPace {
    /// `per_sec` starts a second on average, up to `burst` at once.
    pub fn new(per_sec: u32, burst: u32) -> StartPace {
        StartPace {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: tokio::time::Instant::now(),
        }
    }

    /// Waits until one more start is allowed, and takes it.
    pub async fn take(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / self.per_sec;
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
            self.tokens = 1.0;
            self.last = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}

/// CPU shares from `/proc` between two calls.
pub struct CpuSampler {
    cores: f64,
    last: Option<(Instant, u64, (u64, u64))>,
}

impl CpuSampler {
    pub fn new() -> CpuSampler {
        CpuSampler {
            // Respects cgroup CPU quotas (a pod's limit), not only the machine's cores.
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            last: None,
        }
    }

    /// (process CPU share of its cores, machine idle share) since the last
    /// call; `(0, 1)` on the first call or where `/proc` cannot be read.
    pub fn sample(&mut self) -> (f64, f64) {
        let now = Instant::now();
        let (Some(ticks), Some(sys)) = (process_ticks(), system_ticks()) else {
            return (0.0, 1.0);
        };
        let prev = self.last.replace((now, ticks, sys));
        let Some((t0, ticks0, (idle0, total0))) = prev else {
            return (0.0, 1.0);
        };
        let secs = now.duration_since(t0).as_secs_f64();
        // USER_HZ is 100 on every Linux this runs on.
        let cpu = if secs > 0.0 {
            (ticks.saturating_sub(ticks0) as f64 / 100.0) / secs / self.cores
        } else {
            0.0
        };
        let total = sys.1.saturating_sub(total0);
        let idle = if total > 0 {
            sys.0.saturating_sub(idle0) as f64 / total as f64
        } else {
            1.0
        };
        (cpu.clamp(0.0, 1.0), idle.clamp(0.0, 1.0))
    }
}

/// utime + stime of this process, in clock ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (CPU time free for us, total) of the whole machine, in clock ticks.
fn system_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    free_and_total(stat.lines().next()?)
}

/// From `/proc/stat`'s `cpu` line: idle + iowait + nice, and the total. Time
/// spent by niced processes counts as free: they give way to ours (a batch
/// job, a fuzzer, a build at `nice 19` must not make a worker refuse work).
fn free_and_total(line: &str) -> Option<(u64, u64)> {
    let cpu = line.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let free = v.get(1)? + v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((free, v.iter().take(8).sum()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn niced_work_counts_as_free_cpu() {
        // user nice system idle iowait irq softirq steal
        let line = "cpu  100 700 50 100 50 0 0 0 0 0";
        assert_eq!(free_and_total(line), Some((850, 1000)));
        assert_eq!(free_and_total("intr 1 2 3"), None);
    }

    #[test]
    fn shedding_picks_the_newest_never_moved_task() {
        let t0 = Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        // "b" came back here after a shed (epoch 2) and is the newest: "c" goes.
        let got = super::shed_choice([("a", 1u64, at(0)), ("c", 1, at(10)), ("b", 2, at(20))]);
        assert_eq!(got, Some("c"));
        // Every task moved as often: the newest goes.
        let got = super::shed_choice([("a", 2, at(0)), ("b", 2, at(20)), ("c", 3, at(30))]);
        assert_eq!(got, Some("b"));
        assert_eq!(super::shed_choice(Vec::<(&str, u64, Instant)>::new()), None);
    }

    use super::*;

    fn load(cpu: f64, idle: f64, delay: u64, lag: u64) -> Load {
        Load {
            cpu,
            idle,
            loop_delay_ms: delay,
            max_lag_ms: lag,
            tasks: 10,
        }
    }

    #[test]
    fn verdicts_on_a_table_of_samples() {
        use Verdict::*;
        // Each row is a run of samples and the verdict after each.
        let table: &[(&[Load], &[Verdict])] = &[
            (&[load(0.3, 0.6, 2, 0)], &[Take]),
            (&[load(0.9, 0.5, 2, 0)], &[Full]),
            // A machine with nothing idle: no more work, but no shed either.
            (&[load(0.5, 0.01, 2, 0); 4], &[Full, Full, Full, Full]),
            (&[load(0.5, 0.5, 80, 0)], &[Full]),
            (&[load(0.5, 0.5, 2, 700)], &[Full]),
            // Late wake-ups of a few hundred ms (start-up bursts) stop the
            // intake but shed nothing: the streams are still ahead of real time.
            (&[load(0.5, 0.5, 400, 300); 4], &[Full, Full, Full, Full]),
            // Overloaded three samples in a row: shed, one task per sample.
            (
                &[
                    load(1.0, 0.0, 1200, 0),
                    load(1.0, 0.0, 1200, 0),
                    load(1.0, 0.0, 300, 1500),
                    load(1.0, 0.0, 1100, 0),
                ],
                &[Full, Full, Shed(1), Shed(1)],
            ),
            // A good sample in between resets the count.
            (
                &[
                    load(1.0, 0.0, 1200, 0),
                    load(1.0, 0.0, 1200, 0),
                    load(0.5, 0.5, 2, 0),
                    load(1.0, 0.0, 1200, 0),
                ],
                &[Full, Full, Take, Full],
            ),
        ];
        for (samples, want) in table {
            let mut c = Capacity::new(Limits::default());
            let got: Vec<Verdict> = samples.iter().map(|l| c.judge(l)).collect();
            assert_eq!(&got, want, "{samples:?}");
        }
    }

    #[test]
    fn the_ceiling_is_learnt_where_overload_began_and_raised_slowly() {
        let mut c = Capacity::new(Limits::default());
        let at = |tasks: usize, delay: u64| Load {
            cpu: 0.5,
            idle: 0.5,
            loop_delay_ms: delay,
            max_lag_ms: 0,
            tasks,
        };
        assert_eq!(c.judge(&at(100, 2)), Verdict::Take);
        assert_eq!(c.ceiling(), None, "no ceiling before any overload");
        // Overloaded at 120 (the third sample sheds 0.5 %, at least one).
        assert_eq!(c.judge(&at(120, 1100)), Verdict::Full);
        assert_eq!(c.ceiling(), None, "one overloaded sample sets no ceiling");
        assert_eq!(c.judge(&at(120, 1100)), Verdict::Full);
        assert_eq!(c.judge(&at(120, 1100)), Verdict::Shed(1));
        assert_eq!(c.ceiling(), Some(119));
        // Calm again: below the ceiling it takes, at it it does not …
        assert_eq!(c.judge(&at(110, 2)), Verdict::Take);
        for _ in 0..4 {
            assert_eq!(c.judge(&at(119, 2)), Verdict::Full);
        }
        assert_eq!(c.ceiling(), Some(119));
        // … until five calm samples there raise it by 2 %.
        assert_eq!(c.judge(&at(119, 2)), Verdict::Full);
        assert_eq!(c.ceiling(), Some(121));
        assert_eq!(c.judge(&at(119, 2)), Verdict::Take);
        // A busy sample (not overloaded) resets the calm count, not the ceiling.
        assert_eq!(c.judge(&at(121, 80)), Verdict::Full);
        assert_eq!(c.ceiling(), Some(121));
    }

    #[test]
    fn a_large_overloaded_worker_sheds_a_share_per_sample() {
        let mut c = Capacity::new(Limits::default());
        let over = Load {
            cpu: 0.7,
            idle: 0.0,
            loop_delay_ms: 20,
            max_lag_ms: 1500,
            tasks: 1600,
        };
        let got: Vec<Verdict> = (0..4).map(|_| c.judge(&over)).collect();
        use Verdict::*;
        assert_eq!(got, [Full, Full, Shed(8), Shed(8)]);
        // (the same sample twice: the worker would have 1592 by the second)
        assert_eq!(c.ceiling(), Some(1592));
    }

    #[test]
    fn a_worker_without_streams_always_takes_work() {
        let mut c = Capacity::new(Limits::default());
        let busy_box = Load {
            cpu: 1.0,
            idle: 0.0,
            loop_delay_ms: 900,
            max_lag_ms: 0,
            tasks: 0,
        };
        for _ in 0..10 {
            assert_eq!(c.judge(&busy_box), Verdict::Take);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn start_pace_allows_a_burst_then_the_rate() {
        let mut p = StartPace::new(10, 5);
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            p.take().await;
        }
        assert_eq!(
            t0.elapsed(),
            std::time::Duration::ZERO,
            "the burst goes at once"
        );
        for _ in 0..10 {
            p.take().await;
        }
        let waited = t0.elapsed().as_secs_f64();
        assert!(
            (0.95..=1.05).contains(&waited),
            "10 more at 10/s take a second: {waited}"
        );
    }

    #[test]
    fn proc_is_readable_here() {
        let mut s = CpuSampler::new();
        s.sample();
        let x: u64 = (0..2_000_000u64).map(|i| i ^ (i >> 3)).sum();
        std::hint::black_box(x);
        let (cpu, idle) = s.sample();
        assert!((0.0..=1.0).contains(&cpu) && (0.0..=1.0).contains(&idle));
        assert!(process_ticks().is_some() && system_ticks().is_some());
    }
}
