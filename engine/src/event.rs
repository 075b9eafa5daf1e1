//! What a running task tells its host: state and progress events, live status
//! (position, lag, destinations), and the callbacks they stand for.
//!
//! Events are sent from the media pipeline through an unbounded channel
//! (sending never blocks a stream); the host decides how to show them.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use vodfleet_proto::fleet::{DestinationState, EventKind, TaskEvent};
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
        /// What kind of failure `error` is ([`crate::error::Fault`]): `bad_media`,
        /// `stream_ended`, `refused`, `unreachable`, `timed_out`, `codec`, ….
        error_kind: &'static str,
    },
    /// A late or broken source: the slate (black pictures, silence) is on air
    /// while the task waits (docs/design/sources.md, "Never dark").
    SlateStarted {
        item: usize,
        #[serde(rename = "loop")]
        loop_index: u32,
        /// What the task waits for: `download`, `open` or `read`.
        waiting_for: &'static str,
        /// Output time where the slate begins.
        timeline_ms: u64,
    },
    /// The source delivered (or failed): the slate is off air.
    SlateEnded {
        item: usize,
        #[serde(rename = "loop")]
        loop_index: u32,
        /// How long the slate was on air (output time it covered).
        duration_ms: u64,
        timeline_ms: u64,
    },
    Destination {
        index: usize,
        destination: String,
        state: DestinationState,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// What kind of failure `error` is: `refused` (the server said no; not
        /// retried), `unreachable`, `timed_out`, `closed` (the connection
        /// dropped), `protocol`, `bad_url`, `config`.
        #[serde(skip_serializing_if = "Option::is_none")]
        error_kind: Option<&'static str>,
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
        position: Position,
    },
    TaskStopped {
        timeline_ms: u64,
        position: Position,
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

impl Default for DestinationStatus {
    fn default() -> DestinationStatus {
        DestinationStatus::new()
    }
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

/// Where the task is, updated by its pipeline on every packet.
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

/// The callback-worthy happenings of one task run (docs/contract.md#callbacks), numbered in
/// order: `seq` starts at 1 and grows by one per event of this run.
#[derive(Default)]
pub struct Callbacks {
    seq: u64,
    started: bool,
}

impl Callbacks {
    pub fn new() -> Callbacks {
        Callbacks::default()
    }

    /// The callback an engine event stands for, if any: `started` when the first
    /// destination goes live, `file_started` at every item start, `forward_failed`
    /// when a destination gives up. `index` is the engine's (item or destination).
    pub fn translate(&mut self, e: &Event) -> Option<TaskEvent> {
        match e {
            Event::Destination {
                state: DestinationState::Live,
                ..
            } if !self.started => {
                self.started = true;
                Some(self.next(EventKind::Started, None, "streaming".into()))
            }
            Event::ItemStarted {
                item,
                loop_index,
                source,
            } => Some(self.next(
                EventKind::FileStarted,
                Some(*item),
                format!(
                    "item {} of loop {} started: {source}",
                    item + 1,
                    loop_index + 1
                ),
            )),
            Event::ItemFailed {
                item,
                loop_index,
                source,
                error,
                error_kind,
            } => Some(self.next(
                EventKind::FileFailed,
                Some(*item),
                format!(
                    "item {} of loop {} failed ({error_kind}), going on with the next: {source}: {error}",
                    item + 1,
                    loop_index + 1
                ),
            )),
            Event::Destination {
                index,
                state: DestinationState::Failed,
                destination,
                error,
                error_kind,
                ..
            } => Some(self.next(
                EventKind::ForwardFailed,
                Some(*index),
                format!(
                    "{destination} gave up ({}): {}",
                    error_kind.unwrap_or("failed"),
                    error.as_deref().unwrap_or("connection failed")
                ),
            )),
            _ => None,
        }
    }

    /// The next event of this run.
    pub fn next(&mut self, kind: EventKind, index: Option<usize>, message: String) -> TaskEvent {
        self.seq += 1;
        TaskEvent {
            seq: self.seq,
            kind,
            index,
            message,
            at_ms: unix_ms(),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(index: usize, state: DestinationState) -> Event {
        Event::Destination {
            index,
            destination: "rtmp://h:1935/…".into(),
            state,
            attempt: 1,
            error: None,
            error_kind: None,
        }
    }

    #[test]
    fn callbacks_are_numbered_and_started_is_sent_once() {
        let mut cb = Callbacks::new();
        let item = |item| Event::ItemStarted {
            item,
            loop_index: 0,
            source: "vod://a.mp4".into(),
        };
        let got: Vec<(EventKind, Option<usize>, u64)> = [
            dest(0, DestinationState::Connecting),
            item(0),
            dest(0, DestinationState::Live),
            dest(1, DestinationState::Live),
            item(1),
            dest(1, DestinationState::Failed),
        ]
        .iter()
        .filter_map(|e| cb.translate(e))
        .map(|t| (t.kind, t.index, t.seq))
        .collect();
        assert_eq!(
            got,
            vec![
                (EventKind::FileStarted, Some(0), 1),
                (EventKind::Started, None, 2),
                (EventKind::FileStarted, Some(1), 3),
                (EventKind::ForwardFailed, Some(1), 4),
            ]
        );
        assert_eq!(cb.next(EventKind::Finished, None, String::new()).seq, 5);
    }
}
