//! `vodfleet-sim`: N simulated workers × M tasks that speak the worker protocol
//! without media (docs/design/fleet.md): they take work orders, heartbeat every
//! `VODFLEET_HEARTBEAT_MS` with all their tasks, fence on the coordinator's
//! LeaseAcks exactly like `vodfleet-worker`, and on SIGINT/SIGTERM or after
//! `--duration` release every task like a SIGTERM'd worker. It measures what
//! docs/CAPACITY.md reports: heartbeat → LeaseAck latency, false lease expiries,
//! revocations, orders taken, time to fill every slot. `scripts/bench/fleetsim.py`
//! runs it against private coordinators, Redis and RabbitMQ.
//!
//! Output: a JSON summary on stdout (and in `--out`), a one-line summary on
//! stderr, and with `--progress FILE` one JSON line a second for the driver.
//! SIGUSR1 marks the start of the driver's measuring window: latencies are
//! reported from there on as well (`window`), apart from the ramp's backlog.

mod pace;
mod stats;
mod worker;

/// The worker's own lease bookkeeping (worker/src/fleet/lease.rs), compiled
/// here from the worker's source: `vodfleet-worker` is a binary crate (no
/// library target), so `vodfleet_worker::fleet::lease::Leases` is not
/// reachable, and a copy could drift from what real workers do.
#[allow(dead_code, missing_docs)]
#[path = "../../worker/src/fleet/lease.rs"]
mod lease;

use anyhow::Context;
use clap::Parser;
use stats::Stats;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use worker::{Settings, SimWorker};

/// N simulated workers × M tasks against the fleet's RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "vodfleet-sim", version)]
struct Args {
    /// The broker (the coordinators' vhost).
    #[arg(
        long,
        env = "VODFLEET_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Simulated workers, each with its own AMQP connection.
    #[arg(long, default_value_t = 10)]
    workers: usize,
    /// Slots per worker (M): the tasks each takes at most.
    #[arg(long, default_value_t = 20)]
    tasks: usize,
    /// Heartbeat interval (ms).
    #[arg(long, env = "VODFLEET_HEARTBEAT_MS", default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Lease TTL (ms); must match the coordinators'.
    #[arg(long, env = "VODFLEET_LEASE_TTL_MS", default_value_t = 10_000)]
    lease_ttl_ms: u64,
    /// Starts per second per worker at most.
    #[arg(long, env = "VODFLEET_WORKER_START_RATE", default_value_t = 50)]
    start_rate: u32,
    /// Drain after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<u64>,
    /// Worker ids are `<prefix>-0000`, `<prefix>-0001`, …
    #[arg(long, default_value = "sim")]
    id_prefix: String,
    /// Connections opened at once while the fleet comes up.
    #[arg(long, default_value_t = 20)]
    connect_parallel: usize,
    /// How long the drain may take (ms) before the summary is written anyway.
    #[arg(long, env = "VODFLEET_DRAIN_TIMEOUT_MS", default_value_t = 60_000)]
    drain_timeout_ms: u64,
    /// Also write the JSON summary here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Append one JSON progress line a second here.
    #[arg(long)]
    progress: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VODFLEET_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    anyhow::ensure!(
        args.workers > 0 && args.tasks > 0,
        "--workers and --tasks must be at least 1"
    );
    anyhow::ensure!(
        args.heartbeat_ms > 0
            && args.heartbeat_ms + (worker::FENCE_MARGIN.as_millis() as u64) < args.lease_ttl_ms,
        "the heartbeat must leave more than the fence margin of the lease (as the worker requires)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::new());
    let started_at = unix_s();
    let load_start = loadavg();
    let cfg = Settings {
        amqp_url: args.amqp_url.clone(),
        slots: args.tasks,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        lease_ttl: Duration::from_millis(args.lease_ttl_ms),
        start_rate: args.start_rate,
    };
    let stop = CancellationToken::new();
    tokio::spawn(signals(stop.clone()));
    tokio::spawn(window_mark(stats.clone()));
    if let Some(d) = args.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(d)).await;
            stop.cancel();
        });
    }
    if let Some(path) = args.progress.clone() {
        tokio::spawn(progress(path, stats.clone()));
    }

    // Bring the fleet up, a few connections at a time.
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let mut workers = Vec::with_capacity(args.workers);
    let mut runs = tokio::task::JoinSet::new();
    for i in 0..args.workers {
        let id = format!("{}-{i:04}", args.id_prefix);
        let w = SimWorker::new(id.clone(), cfg.clone(), stats.clone());
        workers.push(w.clone());
        let gate = gate.clone();
        let stats = stats.clone();
        runs.spawn(async move {
            let bus = {
                let _permit = gate.acquire().await;
                w.connect().await
            };
            let r = match bus {
                Ok(bus) => w.run(bus).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &r {
                tracing::error!(worker = %id, error = %e, "simulated worker lost its link");
                Stats::inc(&stats.links_lost);
            }
        });
    }
    let connect_s = async {
        while stats.connected.load(std::sync::atomic::Ordering::Relaxed) < args.workers as i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stats.since_start().as_secs_f64()
    };
    let connect_s = tokio::select! {
        s = connect_s => Some(s),
        _ = stop.cancelled() => None,
    };
    if let Some(s) = connect_s {
        eprintln!(
            "vodfleet-sim: {} workers connected in {s:.1} s",
            args.workers
        );
    }
    stop.cancelled().await;

    // Drain: every worker releases its tasks, as on SIGTERM.
    let held_at_drain = stats.held.load(std::sync::atomic::Ordering::Relaxed);
    let run_s = stats.since_start().as_secs_f64();
    let drain_start = tokio::time::Instant::now();
    for w in &workers {
        w.draining.cancel();
    }
    let all_done = async { while runs.join_next().await.is_some() {} };
    let drained =
        tokio::time::timeout(Duration::from_millis(args.drain_timeout_ms), all_done).await;
    let drain_s = drain_start.elapsed().as_secs_f64();

    let mut summary = serde_json::json!({
        "tool": "vodfleet-sim",
        "started_at_unix": started_at,
        "workers": args.workers,
        "tasks_per_worker": args.tasks,
        "target_tasks": args.workers * args.tasks,
        "heartbeat_ms": args.heartbeat_ms,
        "lease_ttl_ms": args.lease_ttl_ms,
        "start_rate": args.start_rate,
        "connect_s": connect_s,
        "run_s": run_s,
        "held_at_drain": held_at_drain,
        "drain_s": drain_s,
        "drain_complete": drained.is_ok(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
    });
    let figures = serde_json::to_value(stats.summary(args.workers))?;
    if let (Some(s), Some(f)) = (summary.as_object_mut(), figures.as_object()) {
        s.extend(f.clone());
    }
    let text = serde_json::to_string_pretty(&summary)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{text}");
    eprintln!("{}", one_line(&summary));
    Ok(())
}

/// The human summary.
fn one_line(s: &serde_json::Value) -> String {
    let lat = &s["renewal_latency_ms"];
    let l = ["window", "steady", "all"]
        .iter()
        .map(|k| &lat[*k])
        .find(|l| l["n"].as_u64().unwrap_or(0) > 0)
        .unwrap_or(&lat["all"]);
    format!(
        "vodfleet-sim: {}x{} held {}/{} at drain after {:.0} s; renewal p50 {} p99 {} max {} ms ({} acks); \
         false expiries {}, revoked {}, orders {}, all full {} s after the first order; released {} in {:.1} s",
        s["workers"],
        s["tasks_per_worker"],
        s["held_at_drain"],
        s["target_tasks"],
        s["run_s"].as_f64().unwrap_or(0.0),
        l["p50"],
        l["p99"],
        l["max"],
        l["n"],
        s["leases"]["false_expiries"],
        s["leases"]["revoked"],
        s["orders"]["taken"],
        s["ramp"]["all_full_from_first_order_s"],
        s["released"],
        s["drain_s"].as_f64().unwrap_or(0.0),
    )
}

/// SIGINT or SIGTERM → drain.
async fn signals(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("vodfleet-sim: draining");
    stop.cancel();
}

/// SIGUSR1 → the driver's measuring window begins (latencies are also
/// reported from there on, apart from the ramp's backlog).
async fn window_mark(stats: Arc<Stats>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        stats.mark_window();
    }
}

/// One JSON line a second.
async fn progress(path: PathBuf, stats: Arc<Stats>) {
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the progress file");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let line = stats.progress().to_string();
        if writeln!(file, "{line}").is_err() {
            return;
        }
    }
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect()
}
