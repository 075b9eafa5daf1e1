//! The fleet's wire contract: RabbitMQ topology, the messages that
//! cross it, and the Redis key layout. Coordinators and workers meet only here.
//!
//! See docs/design/fleet.md for the lease protocol these messages implement.

use crate::command::TaskSpec;
use crate::position::Position;
use serde::{Deserialize, Serialize};

/// Durable quorum queue producers publish seed-001 command bodies to.
pub const COMMANDS_QUEUE: &str = "vodfleet.commands";
/// Where refused and poison commands go, with the reason in the `x-vodfleet-reason` header.
pub const COMMANDS_DEAD_QUEUE: &str = "vodfleet.commands.dead";
/// Work orders (one per lease issued); workers consume with prefetch = free slots.
pub const WORK_QUEUE: &str = "vodfleet.work";
/// Heartbeats and task events from workers to coordinators.
pub const EVENTS_QUEUE: &str = "vodfleet.events";
/// Direct exchange for messages to one worker; the routing key is the worker id.
pub const CONTROL_EXCHANGE: &str = "vodfleet.control";
/// Redeliveries of one command before RabbitMQ dead-letters it (poison message).
pub const COMMAND_DELIVERY_LIMIT: u32 = 5;
/// Header carrying why a command was dead-lettered.
pub const REASON_HEADER: &str = "x-vodfleet-reason";

/// The queue a worker consumes its control messages from (exclusive, auto-delete).
pub fn control_queue(worker_id: &str) -> String {
    format!("vodfleet.control.{worker_id}")
}

/// Redis keys. The `{ID}` hash tag keeps one task's keys in one cluster slot.
pub mod keys {
    /// Hash with the task's state (see docs/design/fleet.md for its fields).
    pub fn task(id: &str) -> String {
        format!("vodfleet:task:{{{id}}}")
    }
    /// The 48 h resume record (JSON [`super::ResumeRecord`]), TTL [`RESUME_TTL_SECS`].
    pub fn resume(id: &str) -> String {
        format!("vodfleet:resume:{{{id}}}")
    }
    /// How many groups the task indexes are sharded into (docs/design/fleet.md,
    /// "Index groups and Redis Cluster"). Each group's two index keys share one
    /// hash tag, so they sit in one Redis Cluster slot; the groups spread over
    /// the cluster's masters.
    /// Changing it moves tasks between groups: see [`group`].
    pub const GROUPS: u32 = 16;
    /// The index group of a task: 32-bit FNV-1a of the id's UTF-8 bytes, mod
    /// [`GROUPS`]. This must never change (neither the hash nor [`GROUPS`]):
    /// a task indexed under one group and looked up under another would be
    /// lost from the deadline index and the listings.
    pub fn group(id: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in id.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h % GROUPS
    }
    /// Sorted set of group `g`'s task ids by next deadline (start time, lease
    /// expiry, end time). Hash tag `{gN}`, shared with [`tasks_in`].
    pub fn due_in(g: u32) -> String {
        format!("vodfleet:due:{{g{g}}}")
    }
    /// Set of every task id of group `g` (for listings and counts).
    pub fn tasks_in(g: u32) -> String {
        format!("vodfleet:tasks:{{g{g}}}")
    }
    /// The deadline index of a task's group.
    pub fn due_of(id: &str) -> String {
        due_in(group(id))
    }
    /// The task set of a task's group.
    pub fn tasks_of(id: &str) -> String {
        tasks_in(group(id))
    }
    /// The one deadline index of before the groups (issue 10): a coordinator
    /// that finds it moves its members into the groups, then deletes it.
    pub const LEGACY_DUE: &str = "vodfleet:due";
    /// The one task set of before the groups: migrated like [`LEGACY_DUE`].
    pub const LEGACY_TASKS: &str = "vodfleet:tasks";

    /// 48 hours, as the seed requires (docs/contract.md#resume-record).
    pub const RESUME_TTL_SECS: u64 = 172_800;

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Pinned: a change here would strand every indexed task in the wrong group.
        #[test]
        fn the_group_hash_never_changes() {
            assert_eq!(GROUPS, 16);
            let pinned = [("", 5), ("t1", 6), ("task-0001", 0), ("页", 14)];
            for (id, g) in pinned {
                assert_eq!(group(id), g, "{id:?}");
            }
            assert_eq!(due_of("t1"), "vodfleet:due:{g6}");
            assert_eq!(tasks_of("t1"), "vodfleet:tasks:{g6}");
        }
    }
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

/// What the coordinator hands a worker: a lease on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    pub task_id: String,
    /// Fencing token: only grows. A worker must stop publishing a task whose
    /// epoch the coordinator no longer confirms.
    pub epoch: u64,
    pub spec: TaskSpec,
    /// Where to continue (failover, hand-off, cmd 5); `None` starts at `spec.first_item`.
    pub resume: Option<Position>,
    /// `resume` is the coordinator's estimate (a lease expired: the worker died some
    /// time after its last report), not an exact position: start at the nearest
    /// keyframe rather than the one before.
    #[serde(default)]
    pub resume_estimated: bool,
    /// When the order was issued (Unix ms), for pickup latency.
    pub issued_ms: u64,
    /// The producer's `transcallbackurl`, returned in [`WorkerMessage::Reclaim`]
    /// so a Redis that lost its data can be rebuilt from the workers.
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// One task's line in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBeat {
    pub task_id: String,
    pub epoch: u64,
    pub position: Position,
    /// Per destination, in `spec.forwards` order.
    pub destinations: Vec<DestinationState>,
}

/// Worker → coordinators, on [`EVENTS_QUEUE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// Every ~2 s from each worker, listing each task it runs. `seq` grows per
    /// worker; the coordinator echoes it in [`ToWorker::LeaseAck`].
    Heartbeat {
        worker_id: String,
        seq: u64,
        sent_ms: u64,
        free_slots: u32,
        tasks: Vec<TaskBeat>,
    },
    /// SIGTERM drain: the worker stopped this task at `position`; re-issue it now.
    Released {
        worker_id: String,
        task_id: String,
        epoch: u64,
        position: Position,
    },
    /// The task ended on the worker: loop count reached, `end` passed, or failed.
    Finished {
        worker_id: String,
        task_id: String,
        epoch: u64,
        position: Position,
        error: Option<String>,
    },
    /// Answer to [`ToWorker::LeaseAck`]'s `unknown`: Redis lost this task (restarted
    /// empty); here is everything needed to record it again at the same epoch.
    Reclaim {
        worker_id: String,
        task_id: String,
        epoch: u64,
        spec: TaskSpec,
        position: Position,
        callback_url: Option<String>,
    },
    /// Something a producer may want a callback for (docs/contract.md#callbacks).
    Event {
        worker_id: String,
        task_id: String,
        epoch: u64,
        event: TaskEvent,
    },
}

/// Callback-worthy happenings on a worker. `seq` is unique per (task, epoch), so
/// `event_id` = `{task_id}:{epoch}:{seq}` de-duplicates redeliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub seq: u64,
    pub kind: EventKind,
    /// Index into `spec.sources` (file_started) or `spec.forwards` (forward_failed).
    pub index: Option<usize>,
    pub message: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    FileStarted,
    /// An item failed and the task went on with the next (a warning, code 2).
    /// Coordinators must be upgraded before workers that send it.
    FileFailed,
    ForwardFailed,
    Finished,
    Stopped,
    Resumed,
    Failed,
}

/// Coordinator → one worker, on [`CONTROL_EXCHANGE`] with the worker id as routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToWorker {
    /// Answer to heartbeat `seq`: leases renewed (epoch still current) and revoked
    /// (stop at once). A task in neither list was not decided by this answer.
    LeaseAck {
        seq: u64,
        renewed: Vec<(String, u64)>,
        revoked: Vec<(String, u64)>,
        /// Tasks Redis does not know (it restarted empty): counted as renewed; the
        /// worker answers each with [`WorkerMessage::Reclaim`].
        #[serde(default)]
        unknown: Vec<(String, u64)>,
    },
    /// Stop some destinations (by URL, as given in the spec) or, with `None`, the task.
    Stop {
        task_id: String,
        epoch: u64,
        forwards: Option<Vec<String>>,
    },
    /// cmd 3: replace the source list, now or after the current item.
    Update {
        task_id: String,
        epoch: u64,
        sources: Vec<crate::command::SourceSpec>,
        wait_current: bool,
    },
}

/// What `vodfleet:resume:{ID}` holds for 48 h after a task is stopped (cmd 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    pub spec: TaskSpec,
    pub position: Position,
    pub stopped_ms: u64,
}

/// The lifecycle of a task as coordinators record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its start time.
    Scheduled,
    /// A work order is out; no worker has confirmed it yet.
    Leased,
    /// A worker heartbeats it.
    Running,
    /// Stopped by cmd 2; a resume record exists.
    Stopped,
    /// Ended on its own (loop count, end time).
    Finished,
    Failed,
}
