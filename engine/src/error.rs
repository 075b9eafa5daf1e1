//! The worker's error enum. Its [`ErrorKind`] decides what the caller does:
//! retry the operation, fail the item or task, or reject the input outright.

use vodfleet_proto::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: try again (network hiccup, 5xx, timeout).
    Retry,
    /// Permanent for this item or task: report and move on or stop.
    Fail,
    /// The input itself is wrong: refuse it, change nothing.
    Reject,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    #[error("task file: {0}")]
    Input(#[from] FieldError),

    #[error("task {task}: source {url}: {cause} (attempt {attempt} of {attempts})")]
    Source {
        task: String,
        url: String,
        attempt: u32,
        attempts: u32,
        cause: String,
        kind: ErrorKind,
    },

    #[error("task {task}: source {url} refused by policy: {reason}")]
    Policy {
        task: String,
        url: String,
        reason: String,
    },

    #[error("task {task}: item {item} ({url}) at {offset_ms} ms: {cause}")]
    Media {
        task: String,
        item: usize,
        url: String,
        offset_ms: u64,
        cause: String,
    },

    #[error("task {task}: every destination failed")]
    AllDestinationsFailed { task: String },

    #[error("task {task}: {cause}")]
    Unsupported { task: String, cause: String },
}

impl WorkerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            WorkerError::Input(_)
            | WorkerError::Policy { .. }
            | WorkerError::Unsupported { .. } => ErrorKind::Reject,
            WorkerError::Source { kind, .. } => *kind,
            WorkerError::Media { .. } | WorkerError::AllDestinationsFailed { .. } => {
                ErrorKind::Fail
            }
        }
    }
}
