//! A blocking reader of a cache entry while it downloads (for libavformat's
//! I/O callbacks, `media::avio`): held bytes at once, others once the
//! download brings them, a new `Range` for bytes far from it.

use super::{Pin, SOON_BYTES, WAIT_SLICE};
use crate::error::{ErrorKind, Fault, WorkerError};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vodfleet_proto::redact;

/// Reads an entry while it downloads; blocking (the blocking pool only).
pub struct Reader {
    pin: Pin,
    pos: u64,
    task_id: String,
    cancel: CancellationToken,
    patience: Duration,
}

impl Reader {
    pub(super) fn new(
        pin: Pin,
        task_id: &str,
        cancel: CancellationToken,
        patience: Duration,
    ) -> Reader {
        Reader {
            pin,
            pos: 0,
            task_id: task_id.to_owned(),
            cancel,
            patience,
        }
    }

    /// Reads at the current position: held bytes at once, others once the
    /// download brings them. `Ok(0)` at the end of the file.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, WorkerError> {
        let e = self.pin.entry.clone();
        let since = Instant::now();
        let mut st = e.lock();
        loop {
            if st.len.is_some_and(|l| self.pos >= l) || buf.is_empty() {
                return Ok(0);
            }
            let run = st.held.run_from(self.pos);
            if run > 0 {
                drop(st);
                let n = run.min(buf.len() as u64) as usize;
                e.file
                    .read_exact_at(&mut buf[..n], self.pos)
                    .map_err(|err| self.error(Fault::Local, format!("cache file: {err}")))?;
                self.pos += n as u64;
                return Ok(n);
            }
            if let Some(err) = &st.failed {
                return Err(retask(err, &self.task_id, Some(self.pos)));
            }
            if self.cancel.is_cancelled() {
                return Err(self.error(Fault::Local, "task stopped".into()));
            }
            if !st.driver {
                return Err(self.error(Fault::StreamEnded, "the download stopped".into()));
            }
            if since.elapsed() > self.patience && st.progress_at.elapsed() > self.patience {
                return Err(self.error(
                    Fault::TimedOut,
                    format!("no data for {} ms", self.patience.as_millis()),
                ));
            }
            st.focus = self.pos;
            let soon = st
                .cursor
                .is_some_and(|c| c <= self.pos && self.pos < c + SOON_BYTES);
            if !soon {
                st.want = Some(self.pos);
            }
            st = e
                .cond
                .wait_timeout(st, WAIT_SLICE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The file's length, when a response said (or the download ended).
    pub fn size(&self) -> Option<u64> {
        self.pin.entry.lock().len
    }

    /// The file's length, waiting for the download to end if no response
    /// said it (an HLS source's segments); `None` if it fails or the task stops.
    pub fn size_when_known(&self) -> Option<u64> {
        let e = &self.pin.entry;
        let mut st = e.lock();
        loop {
            if st.len.is_some() || st.failed.is_some() || !st.driver || self.cancel.is_cancelled() {
                return st.len;
            }
            st = e
                .cond
                .wait_timeout(st, WAIT_SLICE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn error(&self, fault: Fault, cause: String) -> WorkerError {
        WorkerError::Source {
            task: self.task_id.clone(),
            url: redact::source(&self.pin.entry.shown),
            attempt: 0,
            attempts: self.pin.cache.cfg.source_attempts,
            cause: format!("{cause}, reading byte {}", self.pos),
            kind: ErrorKind::Fail,
            fault,
        }
    }
}

/// A download's error as the task `task` sees it (the driver may have been
/// started by another task), with the byte its reader needed.
pub(super) fn retask(err: &WorkerError, task: &str, pos: Option<u64>) -> WorkerError {
    let at = |cause: String| match pos {
        Some(p) => format!("{cause}, reading byte {p}"),
        None => cause,
    };
    match err.clone() {
        WorkerError::Source {
            url,
            attempt,
            attempts,
            cause,
            fault,
            kind,
            ..
        } => WorkerError::Source {
            task: task.to_owned(),
            url,
            attempt,
            attempts,
            cause: at(cause),
            // Mid-item, the download's retries are behind it: the item fails.
            kind: if pos.is_some() { ErrorKind::Fail } else { kind },
            fault,
        },
        WorkerError::Policy { url, reason, .. } => WorkerError::Policy {
            task: task.to_owned(),
            url,
            reason,
        },
        other => other,
    }
}
