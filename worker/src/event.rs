//! What a running task tells the outside world: one JSON object per line with
//! `--progress json`, a readable log with `--progress tty`.
//!
//! Events are sent from the media threads through an unbounded channel (sending
//! never blocks a stream) to one reporter task that prints them.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use vodfleet_proto::fleet::DestinationState;
use vodfleet_proto::Position;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    TaskStarted {
        task_id: String,
        mode: &'static str,
    },
    ItemStarted {
        item: usize,
        #[serde(rename = "loop")]
        loop_index: u32,
        source: String,
    },
    ItemFailed {
        item: usize,
        #[serde(rename = "loop")]
        loop_index: u32,
        source: String,
        error: String,
    },
    Destination {
        index: usize,
        destination: String,
        state: DestinationState,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Progress {
        item: usize,
        #[serde(rename = "loop")]
        loop_index: u32,
        offset_ms: u64,
        timeline_ms: u64,
        lag_ms: u64,
        destinations: Vec<DestinationProgress>,
    },
    TaskFinished {
        timeline_ms: u64,
    },
    TaskStopped {
        timeline_ms: u64,
    },
    TaskFailed {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationProgress {
    pub index: usize,
    pub state: DestinationState,
    pub kbps: f64,
    pub dropped_packets: u64,
}

pub type Events = tokio::sync::mpsc::UnboundedSender<Event>;

/// Live counters of one destination, read by the progress reporter.
pub struct DestinationStatus {
    pub state: Mutex<DestinationState>,
    pub bytes: AtomicU64,
    pub dropped: AtomicU64,
}

impl DestinationStatus {
    pub fn new() -> DestinationStatus {
        DestinationStatus {
            state: Mutex::new(DestinationState::Connecting),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
    pub fn state(&self) -> DestinationState {
        *self.state.lock().expect("state lock")
    }
}

/// Where the task is, updated by the media thread on every packet.
#[derive(Default)]
pub struct TaskStatus {
    pub position: Mutex<Position>,
    pub lag_ms: AtomicU64,
    /// One entry per destination, registered when the output opens.
    pub destinations: Mutex<Vec<std::sync::Arc<DestinationStatus>>>,
}

impl TaskStatus {
    pub fn position(&self) -> Position {
        *self.position.lock().expect("position lock")
    }
    pub fn set_lag(&self, ms: u64) {
        self.lag_ms.store(ms, Ordering::Relaxed);
    }
}

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressStyle {
    Tty,
    Json,
    None,
}

/// Prints one event of task `task_id` (every JSON line carries the task's id).
pub fn print(style: ProgressStyle, task_id: &str, e: &Event) {
    let json = || {
        let mut v = serde_json::to_value(e).expect("events serialise");
        v["task_id"] = task_id.into();
        v.to_string()
    };
    match style {
        ProgressStyle::None => {}
        ProgressStyle::Json => println!("{}", json()),
        ProgressStyle::Tty => match e {
            Event::Progress {
                item,
                loop_index,
                offset_ms,
                timeline_ms,
                lag_ms,
                destinations,
            } => {
                let dests: Vec<String> = destinations
                    .iter()
                    .map(|d| format!("#{} {:?} {:.0} kbit/s", d.index, d.state, d.kbps))
                    .collect();
                // One line rewritten in place: a live view rather than a scrolling log.
                print!(
                    "\r\x1b[K{task_id}: item {} loop {} at {} | timeline {} | lag {} ms | {}",
                    item + 1,
                    loop_index + 1,
                    clock(*offset_ms),
                    clock(*timeline_ms),
                    lag_ms,
                    dests.join(" | ")
                );
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
            other => println!(
                "\r\x1b[K{}",
                serde_json::to_string(other).expect("events serialise")
            ),
        },
    }
}

fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}
