//! The engine's error enum. Two things are known of every error: its
//! [`ErrorKind`] decides what the caller does (retry the operation, fail the
//! item or task, or reject the input outright), and its [`Fault`] names what
//! went wrong, in logs, events and callbacks (`error_kind`).
//!
//! Destinations have their own enum, `vodfleet_rtmp::Error`, whose kinds use
//! the same names where they overlap (`refused`, `unreachable`, `timed_out`).

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

/// What went wrong, as events and callbacks name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The task's own input is invalid.
    Invalid,
    /// The peer or our URL policy said no (an HTTP 4xx, a private address).
    Refused,
    /// No connection could be made.
    Unreachable,
    /// No answer, or no data, within the timeout.
    TimedOut,
    /// The source stopped part-way: a body cut off, a file that cannot be read on.
    StreamEnded,
    /// Not media we can play: it does not open, has no audio or video, cannot seek.
    BadMedia,
    /// Decoding, scaling or encoding failed.
    Codec,
    /// Something this worker cannot do (a scheme, a feature).
    Unsupported,
    /// The worker's own side failed: its cache directory, a thread.
    Local,
    /// Every destination of the task gave up.
    Destinations,
}

impl Fault {
    /// The name in events and callbacks.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Invalid => "invalid",
            Fault::Refused => "refused",
            Fault::Unreachable => "unreachable",
            Fault::TimedOut => "timed_out",
            Fault::StreamEnded => "stream_ended",
            Fault::BadMedia => "bad_media",
            Fault::Codec => "codec",
            Fault::Unsupported => "unsupported",
            Fault::Local => "local",
            Fault::Destinations => "destinations",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str().replace('_', " "))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    #[error("task file: {0}")]
    Input(#[from] FieldError),

    #[error("task {task}: source {url}: {fault}: {cause} (attempt {attempt} of {attempts})")]
    Source {
        task: String,
        url: String,
        attempt: u32,
        attempts: u32,
        cause: String,
        kind: ErrorKind,
        fault: Fault,
    },

    #[error("task {task}: source {url} refused by policy: {reason}")]
    Policy {
        task: String,
        url: String,
        reason: String,
    },

    #[error("task {task}: item {item} ({url}) at {offset_ms} ms: {fault}: {cause}")]
    Media {
        task: String,
        item: usize,
        url: String,
        offset_ms: u64,
        fault: Fault,
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

    pub fn fault(&self) -> Fault {
        match self {
            WorkerError::Input(_) => Fault::Invalid,
            WorkerError::Policy { .. } => Fault::Refused,
            WorkerError::Unsupported { .. } => Fault::Unsupported,
            WorkerError::Source { fault, .. } | WorkerError::Media { fault, .. } => *fault,
            WorkerError::AllDestinationsFailed { .. } => Fault::Destinations,
        }
    }
}

/// A media failure before the item, its source and the offset are known:
/// the caller that knows them turns it into [`WorkerError::Media`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{fault}: {cause}")]
pub struct MediaError {
    pub fault: Fault,
    pub cause: String,
}

impl MediaError {
    pub fn new(fault: Fault, cause: impl Into<String>) -> MediaError {
        MediaError {
            fault,
            cause: cause.into(),
        }
    }
}
