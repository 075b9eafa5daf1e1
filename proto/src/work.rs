//! Messages between coordinators and workers (DESIGN §4).

use crate::command::TaskSpec;
use crate::position::Position;
use serde::{Deserialize, Serialize};

/// A lease on a task handed to one worker. `epoch` is a fencing token that only
/// grows: a worker whose epoch is not the task's current one must stop publishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    pub task_id: String,
    pub epoch: u64,
    pub spec: TaskSpec,
    /// Where to resume; `None` starts at `spec.first_item`.
    pub resume: Option<Position>,
}

/// State of one destination as a worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationState {
    Connecting,
    Live,
    Reconnecting,
    Failed,
    Stopped,
}

/// One task's line in a worker heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBeat {
    pub task_id: String,
    pub epoch: u64,
    pub position: Position,
    pub destinations: Vec<DestinationState>,
}

/// What workers publish on `vodfleet.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Sent every ~2 s by each worker, listing every task it runs.
    Heartbeat {
        worker_id: String,
        free_slots: u32,
        tasks: Vec<TaskBeat>,
    },
    /// The worker gives a task back (SIGTERM drain): re-issue it now from `position`.
    Released {
        worker_id: String,
        task_id: String,
        epoch: u64,
        position: Position,
    },
    /// The task ended on its own (loop count reached, `end` passed) or failed.
    Finished {
        worker_id: String,
        task_id: String,
        epoch: u64,
        position: Position,
        error: Option<String>,
    },
}
