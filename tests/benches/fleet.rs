//! Fleet benchmark (issue 3; results in docs/BENCHMARKS.md#fleet-issue-3): the
//! real `vodfleet-coordinator` and `vodfleet-worker run` against real RabbitMQ
//! (own vhost), Redis (own server) and nginx-rtmp, through the end-to-end harness
//! (`tests/src/fleet.rs`).
//!
//! ```sh
//! cargo build --release --bins          # the harness runs target/release/* for a bench
//! cargo bench -p vodfleet-tests --bench fleet                        # everything
//! cargo bench -p vodfleet-tests --bench fleet -- --quick             # fewer runs
//! cargo bench -p vodfleet-tests --bench fleet -- latency intake      # some sections
//! cargo bench -p vodfleet-tests --bench fleet -- --out /tmp/fleet.md # also write the tables
//! cargo bench -p vodfleet-tests --bench fleet -- intake --intake-n 40000 --intake-coordinators 1
//! ```
//!
//! Sections (names select them; none = all):
//!
//! - `latency`: command published (plain AMQP producer, confirmed) → the
//!   stream publishing in nginx's `/stat` (polled every 5 ms), N distinct
//!   tasks one at a time, each stopped (cmd 2) and gone before the next.
//! - `failover`: SIGKILL of the worker running a task → a new publisher at
//!   nginx (polled every 20 ms); position error from the frame numbers drawn
//!   into the media; publishers at once from `/stat` and nginx's refusals.
//!   Lease TTL 4000 ms (as in `fleet_failover.rs`) and the default 10000 ms.
//! - `handoff`: SIGTERM of that worker instead: publish gap (last sample with
//!   the old publisher → first with the new, polled every 20 ms), exit code.
//! - `intake`: cmd 1 with a start time 1 h ahead (tasks stay `scheduled`, no
//!   streaming), distinct ids, published as fast as one producer can
//!   (publisher confirms, pipelined), to a fleet of 1 then 2 coordinators and
//!   no worker: commands applied per second (`SCARD vodfleet:tasks`) and each
//!   coordinator's RSS/PSS (`/proc/PID/smaps_rollup`) as the tasks grow.
//!
//! Output: markdown tables on stdout (and in `--out FILE`). Failed checks are
//! reported in the tables, never panicked on, so one bad run does not hide the
//! others' figures.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use vodfleet_proto::fleet::COMMANDS_QUEUE;
use vodfleet_tests::fleet::{
    long_counter, now_ms, publish_conflicts, read_counters, Fleet, FleetOptions, Live, GOP,
};
use vodfleet_tests::{poll, unique, Coordinator, Worker};

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

struct Args {
    quick: bool,
    sections: Vec<String>,
    out: Option<PathBuf>,
    /// Overrides for the counts (for trying things out).
    latency_n: Option<usize>,
    intake_n: Option<usize>,
    intake_coordinators: Vec<usize>,
    /// The options above as given (for the "command" lines).
    opts: String,
}

const SECTIONS: [&str; 4] = ["latency", "failover", "handoff", "intake"];

fn args() -> Args {
    let mut a = Args {
        quick: false,
        sections: Vec::new(),
        out: None,
        latency_n: None,
        intake_n: None,
        intake_coordinators: vec![1, 2],
        opts: String::new(),
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(s) = it.next() {
        if matches!(
            s.as_str(),
            "--quick" | "--latency-n" | "--intake-n" | "--intake-coordinators"
        ) {
            a.opts.push(' ');
            a.opts.push_str(&s);
            if s != "--quick" {
                if let Some(v) = it.peek() {
                    a.opts.push(' ');
                    a.opts.push_str(v);
                }
            }
        }
        match s.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next().map(PathBuf::from),
            "--latency-n" => a.latency_n = it.next().and_then(|v| v.parse().ok()),
            "--intake-n" => a.intake_n = it.next().and_then(|v| v.parse().ok()),
            "--intake-coordinators" => {
                a.intake_coordinators = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|v| v.parse().ok())
                    .collect()
            }
            // cargo bench passes --bench; libtest-style flags are ignored.
            s if s.starts_with('-') => {}
            s if SECTIONS.contains(&s) => a.sections.push(s.to_owned()),
            s => eprintln!("ignoring unknown argument {s:?} (sections: {SECTIONS:?})"),
        }
    }
    if a.sections.is_empty() {
        a.sections = SECTIONS.iter().map(|s| s.to_string()).collect();
    }
    a
}

// ---------------------------------------------------------------------------
// Machine, load, processes
// ---------------------------------------------------------------------------

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Other heavy jobs on the box right now (the CPU benchmark, cargo), by name.
fn others_running() -> String {
    // `[p]` so the pattern does not match the shell running pgrep.
    let p = sh("pgrep -f '[p]assthrough.py' | head -1");
    // Not counting the `cargo bench` that runs us.
    let parent = std::os::unix::process::parent_id().to_string();
    let c = sh("pgrep -x 'cargo|rustc'")
        .lines()
        .filter(|l| l.trim() != parent)
        .count();
    let mut v = Vec::new();
    if !p.is_empty() {
        v.push("passthrough.py".to_owned());
    }
    if c > 0 {
        v.push(format!("{c} other cargo/rustc"));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = sh("free -m | awk '/^Mem:/ {print $2}'");
    format!(
        "{n} cores ({cpu}), {mem} MB RAM, {}; load average (1/5/15 min) at start {}",
        sh("uname -sr"),
        loadavg()
    )
}

/// (RSS kB, PSS kB) of a process from `/proc/PID/smaps_rollup`.
fn mem_kb(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ")".
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // state is f[0]; utime = field 14 → f[11], stime = 15 → f[12].
    let hz = sh("getconf CLK_TCK").parse::<f64>().unwrap_or(100.0);
    (ticks(11) + ticks(12)) / hz
}

/// (busy, total) jiffies of the whole machine from `/proc/stat`.
fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The machine's RabbitMQ (the oldest `beam.smp`; tests may start private nodes).
fn broker_pid() -> Option<u32> {
    sh("pgrep -o -x beam.smp").parse().ok()
}

/// The pid of the `redis-server` listening on `port` (its argv shows `:PORT`).
fn redis_pid(port: u16) -> Option<u32> {
    let needle = format!(":{port}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.starts_with("redis-server") && cmd.contains(&needle)).then_some(pid)
    })
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

/// The command that reproduces one section with the options of this run.
fn bench_cmd(section: &str, a: &Args) -> String {
    format!(
        "`cargo bench -p vodfleet-tests --bench fleet -- {section}{}`",
        a.opts
    )
}

// ---------------------------------------------------------------------------
// 1. Command published → first media at the RTMP server
// ---------------------------------------------------------------------------

fn latency(a: &Args) -> String {
    let n = a.latency_n.unwrap_or(if a.quick { 10 } else { 40 });
    let warm = 2;
    let load0 = loadavg();
    let fleet = Fleet::start(FleetOptions::default());
    let producer = fleet.producer();
    let media = long_counter();
    let poll_every = Duration::from_millis(5);
    let mut lat = Vec::new();
    let mut confirm = Vec::new();
    let mut failures = Vec::new();
    for i in 0..warm + n {
        let task = fleet.new_task(&[&media], 1);
        let key = task.key().to_owned();
        let body = task.start(0);
        let t0 = Instant::now();
        producer.send(&body);
        let confirmed = t0.elapsed();
        let seen = poll_fast(Duration::from_secs(15), poll_every, || {
            fleet.rtmp.is_publishing(&key)
        });
        match seen {
            Some(()) => {
                let d = t0.elapsed();
                eprintln!("latency {i}: {d:?} (publish confirmed after {confirmed:?})");
                if i >= warm {
                    lat.push(d);
                    confirm.push(confirmed);
                }
            }
            None => failures.push(format!("task {i}: not publishing within 15 s")),
        }
        producer.send(&task.stop());
        if poll(Duration::from_secs(15), || {
            (!fleet.rtmp.has_stream(&key)).then_some(())
        })
        .is_none()
        {
            failures.push(format!("task {i}: still at nginx 15 s after cmd 2"));
        }
    }
    let load1 = loadavg();
    lat.sort();
    confirm.sort();
    let (p50, p90, p99, max) = (
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        *lat.last().unwrap_or(&Duration::ZERO),
    );
    let min = *lat.first().unwrap_or(&Duration::ZERO);
    let mean = lat.iter().sum::<Duration>() / lat.len().max(1) as u32;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Command published → first media at the RTMP server\n\n\
         {n} starts of distinct tasks (after {warm} warm-up starts not counted), one at a time, \
         each a loop-0 task of a local `vod://` file (320x240 25 fps H.264/AAC, 2 s GOP) into one \
         destination on the fleet's nginx-rtmp; published with the harness's plain AMQP producer \
         (persistent, publisher confirm awaited); timed from just before `basic.publish` to the \
         first `/stat` poll (every 5 ms) that shows the stream publishing; each task stopped \
         with cmd 2 and gone from `/stat` before the next. Fleet: 2 coordinators, 2 workers \
         (4 slots each), lease TTL 6000 ms. Load average before/after: {load0} / {load1}; \
         other jobs at the end: {}.\n\nCommand: {}\n",
        others_running(),
        bench_cmd("latency", a),
    );
    let _ = writeln!(
        s,
        "| figure | measured | target | verdict |\n|---|---|---|---|\n\
         | p50 | {} ms | ≤ 300 ms | {} |\n\
         | p90 | {} ms | | |\n\
         | p99 (nearest rank: with N = {n} this is the {}th value) | {} ms | ≤ 1000 ms | {} |\n\
         | max | {} ms | | |\n\
         | min / mean | {} / {} ms | | |\n\
         | of which the producer's publish confirm (p50 / max) | {} / {} ms | | |\n\
         | failed starts | {} | 0 | {} |\n",
        ms(p50),
        verdict(p50 <= Duration::from_millis(300)),
        ms(p90),
        ((0.99 * lat.len() as f64).ceil() as usize).max(1),
        ms(p99),
        verdict(p99 <= Duration::from_secs(1)),
        ms(max),
        ms(min),
        ms(mean),
        ms(pct(&confirm, 50.0)),
        ms(*confirm.last().unwrap_or(&Duration::ZERO)),
        failures.len(),
        verdict(failures.is_empty()),
    );
    let all: Vec<String> = lat.iter().map(|d| ms(*d)).collect();
    let _ = writeln!(s, "All values, sorted (ms): {}\n", all.join(", "));
    for f in failures {
        let _ = writeln!(s, "- failure: {f}");
    }
    s
}

/// Like `poll`, with our own period.
fn poll_fast(timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(step);
    }
}

// ---------------------------------------------------------------------------
// 2 and 3. SIGKILL failover, SIGTERM hand-off
// ---------------------------------------------------------------------------

struct Judged {
    /// Last frame number before / first after (display order).
    last: Option<u32>,
    first: Option<u32>,
    max_publishers: usize,
    refused: usize,
    sessions: usize,
}

impl Judged {
    /// first − last: > 0 frames skipped, < 0 frames shown again.
    fn error(&self) -> Option<i64> {
        Some(self.first? as i64 - self.last? as i64)
    }
}

/// Stops `live` and judges what the server saw (like `Fleet::stop_and_judge`,
/// without panicking).
fn stop_and_judge(fleet: &Fleet, producer: &vodfleet_tests::Producer, live: &Live) -> Judged {
    let key = live.task.key();
    producer.send(&live.task.stop());
    let _ = poll(Duration::from_secs(15), || {
        (!fleet.rtmp.has_stream(key)).then_some(())
    });
    let sessions = poll(Duration::from_secs(5), || {
        let n = fleet.rtmp.publish_sessions(key);
        (n >= 2).then_some(n)
    })
    .unwrap_or_else(|| fleet.rtmp.publish_sessions(key));
    let before = read_counters(&live.before);
    let after_path = fleet.rtmp.record_path(key);
    let after = if after_path.exists() {
        read_counters(&after_path)
    } else {
        Vec::new()
    };
    Judged {
        last: before.last().copied(),
        first: after.first().copied(),
        max_publishers: live.watch.max_publishers(),
        refused: publish_conflicts(&fleet.rtmp, key).len(),
        sessions,
    }
}

struct Run {
    /// Lease time left (per Redis) and time since the last heartbeat the
    /// coordinator recorded, at the signal (ms).
    lease_left: Option<i64>,
    since_beat: Option<i64>,
    /// Signal → first sample with the new publisher.
    back: Option<Duration>,
    /// Last sample with the old publisher → first with the new.
    gap: Option<Duration>,
    /// Signal → last sample with the old publisher.
    old_gone: Option<Duration>,
    exit: Option<String>,
    exit_after: Option<Duration>,
    judged: Option<Judged>,
    note: String,
}

/// One SIGKILL (`kill` true) or SIGTERM run on `fleet`; leaves it with as many
/// live workers as before.
fn signal_run(fleet: &mut Fleet, kill: bool, settle: Duration, watch_every: Duration) -> Run {
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, watch_every);
    std::thread::sleep(settle);
    let owner = fleet.owner_of(&live.task.id, Duration::from_secs(10));
    let hash = fleet
        .redis
        .hgetall(&vodfleet_proto::fleet::keys::task(&live.task.id));
    let field = |k: &str| hash.get(k).and_then(|v| v.parse::<u64>().ok());
    let t = Instant::now();
    let wall = now_ms();
    let lease_left = field("lease_until").map(|u| u as i64 - wall as i64);
    let since_beat = field("beat_ms").map(|b| wall as i64 - b as i64);
    if kill {
        fleet.worker(&owner).sigkill();
    } else {
        fleet.worker(&owner).sigterm();
    }
    let limit = Duration::from_millis(fleet.opts.lease_ttl_ms) + Duration::from_secs(15);
    let sessions = live.watch.wait_sessions(2, limit);
    let mut run = Run {
        lease_left,
        since_beat,
        back: None,
        gap: None,
        old_gone: None,
        exit: None,
        exit_after: None,
        judged: None,
        note: String::new(),
    };
    match &sessions {
        Some(s) => {
            run.back = Some(s[1].first_seen.saturating_duration_since(t));
            run.gap = Some(s[1].first_seen.saturating_duration_since(s[0].last_seen));
            run.old_gone = Some(s[0].last_seen.saturating_duration_since(t));
        }
        None => {
            run.note = format!(
                "no new publisher within {limit:?}: {}",
                live.watch.summary()
            )
        }
    }
    if !kill {
        let w = fleet.worker(&owner);
        let st = poll(Duration::from_secs(30), || {
            w.has_exited().then(|| w.wait_exit(Duration::from_secs(1)))
        });
        run.exit_after = st.map(|_| t.elapsed());
        run.exit = Some(match st {
            Some(st) => match st.code() {
                Some(c) => c.to_string(),
                None => format!("{st}"),
            },
            None => "still running after 30 s".into(),
        });
    }
    if sessions.is_some() {
        let new_owner = fleet.owner_of(&live.task.id, Duration::from_secs(10));
        if new_owner == owner {
            run.note.push_str("new owner is the signalled worker! ");
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    run.judged = Some(stop_and_judge(fleet, &producer, &live));
    drop(live);
    // Replace the signalled worker so the next run has two again.
    if let Some(i) = fleet.workers.iter().position(|w| w.id() == owner) {
        let mut w = fleet.workers.remove(i);
        if !w.has_exited() {
            w.sigkill();
        }
    }
    fleet.add_worker();
    run
}

/// How long run `r` streams before the signal: `base` ms plus 450 ms per run
/// (mod 2 s), so the signals land at different points of the 2 s GOP and of
/// the 2 s heartbeat period.
fn settle(base: u64, r: usize) -> Duration {
    Duration::from_millis(base + (r as u64 * 450) % 2000)
}

fn opt_i(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map(ms).unwrap_or_else(|| "—".into())
}

fn failover(a: &Args) -> String {
    let plan: Vec<(u64, usize)> = if a.quick {
        vec![(4000, 2), (10000, 1)]
    } else {
        vec![(4000, 5), (10000, 2)]
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Worker SIGKILL → stream live again on the other worker\n\n\
         Fleet: 2 coordinators, 2 workers, heartbeats every 2000 ms (default). Each run: a loop-0 \
         task of a 90 s counter video (frame numbers drawn into the picture; 25 fps, GOP 50 \
         frames = 2 s) started through the queue, left streaming 5 s + (450 ms × run mod 2 s) so the kill \
         lands at different points of the GOP and of the heartbeat period, then its worker gets \
         SIGKILL; `/stat` polled every 20 ms. *Back* = SIGKILL → first sample with the new \
         publisher; *position error* = first frame number after − last frame before, read \
         from nginx's recordings of the two sessions (+ = frames skipped, − = frames shown \
         twice); *last heartbeat* and *lease left* from the task's Redis hash (`beat_ms`, \
         `lease_until`) read just before the kill, so *back − lease left* is what the failover \
         costs after the lease ran out (reaper period 250 ms + work order + worker start); *max publishers* = most publishers in one `/stat` sample; *refused* = \
         publish attempts nginx refused as \"already publishing\". The killed worker is \
         replaced after each run.\n\nCommand: {}\n",
        bench_cmd("failover", a)
    );
    let _ = writeln!(
        s,
        "| lease TTL | run | back (ms) | target (ms) | last heartbeat before the kill (ms) | lease left at the kill (ms) | back − lease left (ms) | position error (frames) | max publishers | refused | sessions | load avg after | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut summary = Vec::new();
    for (ttl, runs) in plan {
        let mut fleet = Fleet::start(FleetOptions::default().lease_ttl_ms(ttl));
        let limit = Duration::from_millis(ttl + 2000);
        let mut backs = Vec::new();
        let mut errs = Vec::new();
        let mut ok = true;
        for r in 1..=runs {
            let run = signal_run(&mut fleet, true, settle(5000, r), Duration::from_millis(20));
            let j = run.judged.as_ref().expect("judged");
            let err = j.error();
            eprintln!(
                "failover ttl {ttl} run {r}: back {:?}, error {err:?}, publishers {}",
                run.back, j.max_publishers
            );
            ok &= run.back.is_some_and(|b| b <= limit)
                && err.is_some_and(|e| e.unsigned_abs() <= GOP as u64)
                && j.max_publishers <= 1
                && j.refused == 0;
            if let Some(b) = run.back {
                backs.push(b);
            }
            if let Some(e) = err {
                errs.push(e);
            }
            let _ = writeln!(
                s,
                "| {ttl} ms | {r} | {} | ≤ {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                opt_ms(run.back),
                limit.as_millis(),
                opt_i(run.since_beat),
                opt_i(run.lease_left),
                match (run.back, run.lease_left) {
                    (Some(b), Some(l)) => format!("{}", b.as_millis() as i64 - l),
                    _ => "—".into(),
                },
                err.map(|e| format!("{e:+}")).unwrap_or_else(|| "—".into()),
                j.max_publishers,
                j.refused,
                j.sessions,
                loadavg(),
                run.note
            );
        }
        let mean = backs.iter().sum::<Duration>() / backs.len().max(1) as u32;
        let max = backs.iter().max().copied().unwrap_or_default();
        let mean_err = errs.iter().map(|e| e.abs()).sum::<i64>() as f64 / errs.len().max(1) as f64;
        let max_err = errs.iter().map(|e| e.abs()).max().unwrap_or(0);
        summary.push(format!(
            "| {ttl} ms | {} | {} / {} | ≤ {} | {:.1} / {} | ≤ {GOP} (1 GOP) | {} |",
            backs.len(),
            ms(mean),
            ms(max),
            limit.as_millis(),
            mean_err,
            max_err,
            verdict(ok && backs.len() == runs)
        ));
    }
    let _ = writeln!(
        s,
        "\n| lease TTL | runs | back, mean / max (ms) | target (ms) | |position error|, mean / max (frames) | target | verdict (all runs, incl. never two publishers) |\n|---|---|---|---|---|---|---|"
    );
    for l in summary {
        let _ = writeln!(s, "{l}");
    }
    s.push('\n');
    s
}

fn handoff(a: &Args) -> String {
    let runs = if a.quick { 2 } else { 5 };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Worker SIGTERM (scale-down) → stream live again\n\n\
         Fleet: 2 coordinators, 2 workers, lease TTL 10000 ms (the default; a hand-off does not \
         wait for it), drain timeout 20000 ms (default). Same task and media as above, streaming 4 s + (450 ms × run \
         mod 2 s), then SIGTERM to its worker; `/stat` polled every 20 ms. *Gap* = last sample showing the old \
         publisher → first sample showing the new one (an upper bound of the time the stream \
         had no publisher, ±20 ms); *back* = SIGTERM → first sample with the new publisher; \
         *exit* = the worker's exit status and when it came.\n\nCommand: {}\n",
        bench_cmd("handoff", a)
    );
    let _ = writeln!(
        s,
        "| run | gap (ms) | target | back (ms) | old publisher last seen (ms after SIGTERM) | exit code | exit after (ms) | position error (frames) | max publishers | refused | load avg after | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut fleet = Fleet::start(FleetOptions::default().lease_ttl_ms(10000));
    let mut gaps = Vec::new();
    let mut ok = true;
    for r in 1..=runs {
        let run = signal_run(
            &mut fleet,
            false,
            settle(4000, r),
            Duration::from_millis(20),
        );
        let j = run.judged.as_ref().expect("judged");
        let err = j.error();
        eprintln!(
            "handoff run {r}: gap {:?}, exit {:?}, error {err:?}",
            run.gap, run.exit
        );
        ok &= run.gap.is_some_and(|g| g <= Duration::from_secs(2))
            && run.exit.as_deref() == Some("0")
            && j.max_publishers <= 1
            && j.refused == 0
            && err.is_some_and(|e| e.unsigned_abs() <= GOP as u64);
        if let Some(g) = run.gap {
            gaps.push(g);
        }
        let _ = writeln!(
            s,
            "| {r} | {} | ≤ 2000 | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            opt_ms(run.gap),
            opt_ms(run.back),
            opt_ms(run.old_gone),
            run.exit.clone().unwrap_or_default(),
            opt_ms(run.exit_after),
            err.map(|e| format!("{e:+}")).unwrap_or_else(|| "—".into()),
            j.max_publishers,
            j.refused,
            loadavg(),
            run.note
        );
    }
    let mean = gaps.iter().sum::<Duration>() / gaps.len().max(1) as u32;
    let max = gaps.iter().max().copied().unwrap_or_default();
    let _ = writeln!(
        s,
        "\nGap mean / max: {} / {} ms, target ≤ 2000 ms, every worker exiting 0, never two publishers: {}\n",
        ms(mean),
        ms(max),
        verdict(ok && gaps.len() == runs)
    );
    s
}

// ---------------------------------------------------------------------------
// 4. Coordinator intake
// ---------------------------------------------------------------------------

/// Publishes `bodies` to `vodfleet.commands` on one channel with publisher
/// confirms, keeping up to `window` unconfirmed: as fast as one producer goes.
/// Returns (first publish, last confirm, confirms that were not plain acks).
fn publish_fast(url: &str, bodies: Vec<Vec<u8>>, window: usize) -> (Instant, Instant, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let props = ConnectionProperties::default()
            .with_connection_name("vodfleet-bench-producer".into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn = Connection::connect(url, props).await.expect("AMQP connect");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        let mut pending = VecDeque::new();
        let mut bad = 0usize;
        let check = |c: lapin::Result<Confirmation>, bad: &mut usize| match c {
            Ok(Confirmation::Ack(None)) => {}
            _ => *bad += 1,
        };
        let t0 = Instant::now();
        for b in bodies {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(unique("msg")));
            let opts = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let c = ch
                .basic_publish("", COMMANDS_QUEUE, opts, &b, props)
                .await
                .expect("basic.publish");
            pending.push_back(c);
            if pending.len() >= window {
                let c = pending.pop_front().expect("pending").await;
                check(c, &mut bad);
            }
        }
        while let Some(c) = pending.pop_front() {
            check(c.await, &mut bad);
        }
        let t1 = Instant::now();
        let _ = conn.close(200, "bye").await;
        (t0, t1, bad)
    })
}

/// How long the intake section watches an idle coordinator after the intake.
const IDLE_WINDOW: Duration = Duration::from_secs(20);

struct MemPoint {
    label: String,
    tasks: u64,
    at: Duration,
    /// (RSS kB, PSS kB) per coordinator.
    mem: Vec<(u64, u64)>,
    redis_rss_kb: u64,
}

fn intake_one(a: &Args, coordinators: usize) -> (String, bool) {
    let n = a.intake_n.unwrap_or(if a.quick { 4000 } else { 20000 });
    let marks = [n / 4, n / 2, n];
    let load0 = loadavg();
    let fleet = Fleet::start(FleetOptions {
        coordinators,
        workers: 0,
        ..FleetOptions::default()
    });
    let pids: Vec<u32> = fleet.coordinators.iter().map(|c| c.pid()).collect();
    let rpid = redis_pid(fleet.redis.port());
    let redis_rss = || rpid.map(|p| mem_kb(p).0).unwrap_or(0);
    let mut conn = fleet.redis.conn();
    let mut scard = || -> u64 {
        redis::cmd("SCARD")
            .arg("vodfleet:tasks")
            .query(&mut conn)
            .unwrap_or(0)
    };
    // Let the coordinators settle (a state count every 5 s has run at least once).
    std::thread::sleep(Duration::from_secs(6));
    let mut points = vec![MemPoint {
        label: "0 (idle, before)".into(),
        tasks: scard(),
        at: Duration::ZERO,
        mem: pids.iter().map(|&p| mem_kb(p)).collect(),
        redis_rss_kb: redis_rss(),
    }];
    let media = long_counter();
    let start_at = now_ms() + 3_600_000;
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let id = unique("task");
            let key = unique("key");
            let mut b = vodfleet_tests::fleet::seed::start(
                &id,
                &[media.vod_url()],
                &[fleet.rtmp_url(&key)],
                0,
            );
            b["list"][0]["start"] = json!(start_at.to_string());
            serde_json::to_vec(&b).expect("json")
        })
        .collect();
    let body_bytes = bodies.first().map(|b| b.len()).unwrap_or(0);
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let rcpu0 = rpid.map(cpu_secs).unwrap_or(0.0);
    let bpid = broker_pid();
    let bcpu0 = bpid.map(cpu_secs).unwrap_or(0.0);
    let mj0 = machine_jiffies();
    let url = fleet.amqp_url();
    let t_start = Instant::now();
    let publisher = std::thread::spawn(move || publish_fast(&url, bodies, 1000));
    let mut next = 0;
    let timeout = Duration::from_secs(600);
    let mut done_at = None;
    while t_start.elapsed() < timeout {
        let k = scard();
        while next < marks.len() && k >= marks[next] as u64 {
            let label = format!("{} (during intake)", marks[next]);
            points.push(MemPoint {
                label,
                tasks: k,
                at: t_start.elapsed(),
                mem: pids.iter().map(|&p| mem_kb(p)).collect(),
                redis_rss_kb: redis_rss(),
            });
            next += 1;
        }
        if k >= n as u64 {
            done_at = Some(t_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let rcpu1 = rpid.map(cpu_secs).unwrap_or(0.0);
    let bcpu1 = bpid.map(cpu_secs).unwrap_or(0.0);
    let mj1 = machine_jiffies();
    let busy = (mj1.0 - mj0.0) as f64 / (mj1.1 - mj0.1).max(1) as f64;
    let (p0, p1, bad) = publisher.join().expect("publisher thread");
    let load1 = loadavg();
    let published_in = p1.saturating_duration_since(p0);
    // Idle again for IDLE_WINDOW: the coordinator's periodic state count over
    // all the tasks (every 15 s) runs at least once; sample the peak memory and
    // the CPU it costs.
    let icpu0: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let idle_t0 = Instant::now();
    let mut peak: Vec<(u64, u64)> = vec![(0, 0); pids.len()];
    while idle_t0.elapsed() < IDLE_WINDOW {
        for (i, &p) in pids.iter().enumerate() {
            let (r, ps) = mem_kb(p);
            peak[i] = (peak[i].0.max(r), peak[i].1.max(ps));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let idle_cpu: Vec<f64> = pids
        .iter()
        .zip(&icpu0)
        .map(|(&p, a)| cpu_secs(p) - a)
        .collect();
    let idle_secs = idle_t0.elapsed().as_secs_f64();
    points.push(MemPoint {
        label: format!(
            "{} (peak while idle, {} s after)",
            scard(),
            IDLE_WINDOW.as_secs()
        ),
        tasks: scard(),
        at: t_start.elapsed(),
        mem: peak.clone(),
        redis_rss_kb: redis_rss(),
    });
    points.push(MemPoint {
        label: format!("{} (idle, {} s after)", scard(), IDLE_WINDOW.as_secs()),
        tasks: scard(),
        at: t_start.elapsed(),
        mem: pids.iter().map(|&p| mem_kb(p)).collect(),
        redis_rss_kb: redis_rss(),
    });
    let accepted: f64 = fleet
        .coordinators
        .iter()
        .map(|c: &Coordinator| {
            c.metrics()
                .lines()
                .filter(|l| l.starts_with("vodfleet_commands_total") && l.contains("accepted"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum();
    // Not part of the target: what listing every task costs (`GET /v1/tasks`
    // reads each task's record and answers them all at once).
    let list = {
        let c = fleet.coordinator();
        let before = mem_kb(c.pid());
        let t = Instant::now();
        let r = c.get_signed("/v1/tasks");
        let took = t.elapsed();
        let after = mem_kb(c.pid());
        format!(
            "`GET /v1/tasks` on coordinator 1 with {} tasks (not part of the target): HTTP {}, \
             {:.1} MB body in {} ms; its RSS / PSS {} / {} MB before, {} / {} MB after.",
            scard(),
            r.status,
            r.body.len() as f64 / 1048576.0,
            ms(took),
            mb(before.0),
            mb(before.1),
            mb(after.0),
            mb(after.1)
        )
    };
    let dead: u64 = {
        let p = fleet.producer();
        p.dead_letters().len() as u64
    };

    let mut s = String::new();
    let rate = done_at.map(|d| n as f64 / d.as_secs_f64());
    let steady = {
        // From the first mark to the last: the rate once the queue is full.
        let a = points.get(1);
        let b = points.iter().rfind(|p| p.label.contains("during"));
        match (a, b) {
            (Some(a), Some(b)) if b.at > a.at => {
                Some((b.tasks - a.tasks) as f64 / (b.at - a.at).as_secs_f64())
            }
            _ => None,
        }
    };
    let ok = rate.is_some_and(|r| r >= 1000.0);
    let _ = writeln!(
        s,
        "#### {coordinators} coordinator(s), 0 workers\n\n\
         {n} cmd 1 commands ({body_bytes} bytes each), published in {} ms by one producer \
         ({:.0} msg/s; {bad} not acked by the broker); all {n} applied (`SCARD vodfleet:tasks` = {n}) \
         {} after the first publish. CPU time during intake (first publish → all applied): coordinator {}; \
         redis-server {:.1} s; RabbitMQ (beam.smp) {:.1} s; the whole machine {:.0} % busy \
         ({} cores). \
         Commands counted `accepted` on `/metrics`: {accepted:.0}; dead-lettered: {dead}. \
         Load average before/after: {load0} / {load1}; other jobs at the end: {}.\n",
        ms(published_in),
        n as f64 / published_in.as_secs_f64().max(1e-9),
        done_at
            .map(|d| format!("{} ms", ms(d)))
            .unwrap_or_else(|| format!("NOT within {timeout:?}")),
        pids.iter()
            .zip(cpu0.iter().zip(&cpu1))
            .map(|(p, (a, b))| format!("pid {p}: {:.1} s", b - a))
            .collect::<Vec<_>>()
            .join(", "),
        rcpu1 - rcpu0,
        bcpu1 - bcpu0,
        busy * 100.0,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        others_running(),
    );
    let _ = writeln!(
        s,
        "| figure | measured | target | verdict |\n|---|---|---|---|\n\
         | commands applied per second, whole run | {} | ≥ 1000 | {} |\n\
         | same, from {} to {} tasks | {} | | |\n",
        rate.map(|r| format!("{r:.0}"))
            .unwrap_or_else(|| "—".into()),
        verdict(ok),
        marks[0],
        n,
        steady
            .map(|r| format!("{r:.0}"))
            .unwrap_or_else(|| "—".into()),
    );
    let mut head = String::from("| tasks in Redis | at (ms) |");
    let mut sep = String::from("|---|---|");
    for (i, p) in pids.iter().enumerate() {
        let _ = write!(head, " coordinator {} (pid {p}) RSS / PSS (MB) |", i + 1);
        sep.push_str("---|");
    }
    head.push_str(" redis-server RSS (MB) |");
    sep.push_str("---|");
    let _ = writeln!(s, "{head}\n{sep}");
    for p in &points {
        let mut row = format!("| {} | {} |", p.label, ms(p.at));
        for (r, ps) in &p.mem {
            let _ = write!(row, " {} / {} |", mb(*r), mb(*ps));
        }
        let _ = write!(row, " {} |", mb(p.redis_rss_kb));
        let _ = writeln!(s, "{row}");
    }
    let first = points.first().map(|p| p.mem.clone()).unwrap_or_default();
    let last_during = points
        .iter()
        .rfind(|p| p.label.contains("during"))
        .map(|p| p.mem.clone())
        .unwrap_or_default();
    let growth: Vec<String> = first
        .iter()
        .zip(&last_during)
        .map(|((_, a), (_, b))| format!("{:+.1} MB PSS", (*b as f64 - *a as f64) / 1024.0))
        .collect();
    let _ = writeln!(
        s,
        "\nCoordinator CPU while idle with {n} scheduled tasks: {} over {idle_secs:.1} s \
         (the periodic count of tasks by state reads every task's state).\n\n\
         PSS growth from 0 to {n} tasks during intake: {} (per 1,000 tasks: {}).\n\n{list}\n",
        idle_cpu
            .iter()
            .map(|c| format!("{c:.2} s"))
            .collect::<Vec<_>>()
            .join(", "),
        growth.join(", "),
        first
            .iter()
            .zip(&last_during)
            .map(|((_, a), (_, b))| format!(
                "{:+.2} MB",
                (*b as f64 - *a as f64) / 1024.0 / (n as f64 / 1000.0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (s, ok)
}

fn intake(a: &Args) -> String {
    let n = a.intake_n.unwrap_or(if a.quick { 4000 } else { 20000 });
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Coordinator intake\n\n\
         cmd \"1\" with `start` 1 h ahead (tasks stay `scheduled`: no work order, no worker, no \
         streaming), distinct task ids and message ids, published by one producer on one channel \
         with publisher confirms pipelined (≤ 1000 unconfirmed) to a fleet with no worker; the \
         applied count is `SCARD vodfleet:tasks` polled every 20 ms; memory from \
         `/proc/PID/smaps_rollup` when the count passes {}, {} and {} tasks, then sampled every \
         100 ms for {} s of idleness after the last (the coordinator's count of tasks by state, \
         every 15 s, runs over all tasks at least once in that time).\n\nCommand: {}\n",
        n / 4,
        n / 2,
        n,
        IDLE_WINDOW.as_secs(),
        bench_cmd("intake", a)
    );
    for &c in &a.intake_coordinators {
        let (t, _) = intake_one(a, c);
        s.push_str(&t);
    }
    s
}

// ---------------------------------------------------------------------------

fn main() {
    let a = args();
    let bins = [Coordinator::bin(), Worker::bin()];
    let mut out = String::from("## Fleet (issue 3)\n\n");
    let _ = writeln!(
        out,
        "Run {} on {}.\n\nSource: HEAD {}. Binaries: {} (built {}).\n",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        machine(),
        sh("git log -1 --format='%h (%ci)'"),
        bins.iter()
            .map(|b| format!("`{}`", b.display()))
            .collect::<Vec<_>>()
            .join(", "),
        bins.iter()
            .map(|b| sh(&format!("date -u -r '{}' '+%H:%M UTC'", b.display())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for sec in &a.sections {
        eprintln!("== {sec} (load {})", loadavg());
        let t = match sec.as_str() {
            "latency" => latency(&a),
            "failover" => failover(&a),
            "handoff" => handoff(&a),
            "intake" => intake(&a),
            _ => unreachable!(),
        };
        print!("{t}");
        out.push_str(&t);
        if let Some(p) = &a.out {
            let _ = std::fs::write(p, &out);
        }
    }
    println!("\n---\n{out}");
}
