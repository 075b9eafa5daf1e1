//! vodfleet-worker: streams tasks live to RTMP destinations.
//!
//! `vodfleet-worker play TASK.json` runs one task (a seed-001 `list[]` entry)
//! without any queue, until it finishes or is interrupted.
//! `vodfleet-worker run` is fleet mode: work orders from RabbitMQ under leases.

mod config;
mod fleet;
mod http;
mod metrics;
mod progress;

use clap::{Parser, Subcommand};
use progress::ProgressStyle;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfleet_engine::event::{self, DestinationProgress, Event, TaskStatus};
use vodfleet_engine::{task, Engine, Start};

#[derive(Parser)]
#[command(
    name = "vodfleet-worker",
    version,
    about = "Streams recorded media live to RTMP destinations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play one task (a seed-001 `list[]` entry in a JSON file) until it ends or Ctrl-C.
    Play {
        /// Path of the task JSON; several run side by side in this process.
        #[arg(required = true)]
        tasks: Vec<PathBuf>,
        /// How to show progress on stdout.
        #[arg(long, value_enum, default_value = "tty")]
        progress: ProgressStyle,
        /// Start from a position instead of the first item:
        /// `ITEM:LOOP:OFFSET_MS[:TIMELINE_MS]` (0-based item and loop).
        #[arg(long, value_parser = parse_position)]
        resume: Option<vodfleet_proto::Position>,
    },
    /// Fleet mode: take work orders from RabbitMQ (`VODFLEET_AMQP_URL`) and stream
    /// them under leases until SIGTERM, then release every task and exit.
    Run,
}

fn parse_position(s: &str) -> Result<vodfleet_proto::Position, String> {
    let parts: Vec<u64> = s
        .split(':')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?}: expected ITEM:LOOP:OFFSET_MS[:TIMELINE_MS]"))?;
    match parts[..] {
        [item, loop_index, offset_ms] | [item, loop_index, offset_ms, _]
            if loop_index <= u32::MAX as u64 =>
        {
            Ok(vodfleet_proto::Position {
                item: item as usize,
                loop_index: loop_index as u32,
                offset_ms,
                timeline_ms: parts.get(3).copied().unwrap_or(0),
            })
        }
        _ => Err(format!("{s:?}: expected ITEM:LOOP:OFFSET_MS[:TIMELINE_MS]")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VODFLEET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Play {
            tasks,
            progress,
            resume,
        } => play(tasks, progress, resume),
        Command::Run => fleet::run(),
    }
}

/// Exit codes: 0 finished or stopped, 1 a task failed, 2 bad input or configuration.
/// Several task files run side by side in this one process, as a worker runs them.
fn play(
    paths: Vec<PathBuf>,
    style: ProgressStyle,
    resume: Option<vodfleet_proto::Position>,
) -> ExitCode {
    let cfg = match vodfleet_engine::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Every file is checked before anything starts: a bad one changes nothing.
    let mut specs = Vec::new();
    for path in &paths {
        let parsed = std::fs::read(path)
            .map_err(|e| format!("cannot read task file {}: {e}", path.display()))
            .and_then(|body| {
                vodfleet_proto::parse_task_entry(&body)
                    .map_err(|e| format!("invalid task file {}: {e}", path.display()))
            });
        match parsed {
            Ok((spec, warnings)) => {
                for w in &warnings {
                    tracing::warn!(task.id = %spec.id, field = %w.field, "{}", w.message);
                }
                if specs
                    .iter()
                    .any(|s: &vodfleet_proto::TaskSpec| s.id == spec.id)
                {
                    eprintln!(
                        "invalid task file {}: id: task id {:?} is given twice",
                        path.display(),
                        spec.id
                    );
                    return ExitCode::from(2);
                }
                specs.push(spec);
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let engine = match Engine::new(cfg, rt.handle().clone()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let cancel = CancellationToken::new();
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut statuses = Vec::new();
    let mut controls = Vec::new();
    let mut running = Vec::new();
    for spec in specs {
        let id = spec.id.clone();
        let handle = match engine.start(Start {
            spec,
            resume,
            resume_estimated: false,
            cancel: cancel.clone(),
        }) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Progress ticks and, once the task is over, its closing event go to the
        // reporter after the engine's own events, in order.
        let (ticks, mut ticks_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let (last, last_rx) = tokio::sync::oneshot::channel::<Event>();
        let mut engine_events = handle.events;
        let reporter = {
            let id = id.clone();
            rt.spawn(async move {
                loop {
                    tokio::select! {
                        biased;
                        e = engine_events.recv() => match e {
                            Some(e) => progress::print(style, &id, &e),
                            None => break,
                        },
                        Some(e) = ticks_rx.recv() => progress::print(style, &id, &e),
                    }
                }
                if let Ok(e) = last_rx.await {
                    progress::print(style, &id, &e);
                }
            })
        };
        let status = handle.status.clone();
        let ticker = rt.spawn(progress_ticker(status.clone(), ticks));
        controls.push(handle.control);
        statuses.push(status.clone());
        running.push((id, handle.done, last, status, reporter, ticker));
    }
    // `/metrics` and friends, only when asked for: several `play`s may run side by side.
    if let Ok(addr) = std::env::var("VODFLEET_HTTP_ADDR") {
        let listener = match rt.block_on(tokio::net::TcpListener::bind(addr.trim())) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("VODFLEET_HTTP_ADDR {addr}: {e}");
                return ExitCode::from(2);
            }
        };
        let active = active.clone();
        let refresh = move || {
            let m = vodfleet_engine::metrics::get();
            m.streams_active
                .set(active.load(std::sync::atomic::Ordering::Relaxed) as i64);
            let lag = statuses
                .iter()
                .map(|s: &Arc<TaskStatus>| s.lag_ms.load(std::sync::atomic::Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            m.lag_seconds.set(lag as f64 / 1000.0);
        };
        let probes = http::Probes {
            ready: Arc::new(|| true),
            refresh: Arc::new(refresh),
        };
        rt.spawn(http::serve(listener, probes, CancellationToken::new()));
    }
    rt.spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping; a second signal exits at once");
        cancel.cancel();
        for c in &controls {
            c.send(task::Control::Stop);
        }
        wait_for_signal().await;
        std::process::exit(130);
    });

    let mut code = ExitCode::SUCCESS;
    for (id, done, last, status, reporter, ticker) in running {
        let outcome = rt.block_on(done).unwrap_or_else(|_| task::Outcome {
            end: task::End::Failed(vodfleet_engine::error::WorkerError::Unsupported {
                task: id.clone(),
                cause: "media pipeline vanished".into(),
            }),
            position: status.position(),
        });
        active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        ticker.abort();
        let (end, position) = (outcome.end, outcome.position);
        let timeline_ms = position.timeline_ms;
        let _ = last.send(match end {
            task::End::Finished => Event::TaskFinished {
                timeline_ms,
                position,
            },
            task::End::Stopped => Event::TaskStopped {
                timeline_ms,
                position,
            },
            task::End::Failed(e) => {
                tracing::error!(task.id = %id, error = %e, "task failed");
                code = ExitCode::from(1);
                Event::TaskFailed {
                    error: e.to_string(),
                }
            }
        });
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), reporter).await });
    }
    if style == ProgressStyle::Tty {
        println!();
    }
    code
}

async fn progress_ticker(status: Arc<TaskStatus>, events: event::Events) {
    let mut last: Vec<u64> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let p = status.position();
        let dests = status.destinations.lock().expect("status lock").clone();
        last.resize(dests.len(), 0);
        let destinations = dests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let bytes = d.bytes.load(std::sync::atomic::Ordering::Relaxed);
                let kbps = (bytes.saturating_sub(last[i])) as f64 * 8.0 / 1000.0;
                last[i] = bytes;
                DestinationProgress {
                    index: i,
                    state: d.state(),
                    kbps,
                    dropped_packets: d.dropped.load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect();
        let lag_ms = status.lag_ms.load(std::sync::atomic::Ordering::Relaxed);
        let e = Event::Progress {
            item: p.item,
            loop_index: p.loop_index,
            offset_ms: p.offset_ms,
            timeline_ms: p.timeline_ms,
            lag_ms,
            destinations,
        };
        if events.send(e).is_err() {
            return;
        }
    }
}

pub(crate) async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
