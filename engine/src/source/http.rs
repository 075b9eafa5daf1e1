//! Downloads one source over HTTP(S): 10 s connect and read timeouts, a
//! bounded number of attempts with exponential backoff (`backon`), and a
//! resumed transfer (`Range: bytes=N-`) when an attempt dies part-way.
//!
//! Where the bytes go is a [`Sink`]: a whole local file ([`FileSink`], HLS
//! playlists and segments, watermark images) or a region of an entry of the
//! worker's shared cache (`source::cache`), which asks for the byte it is
//! missing next and may end a transfer early to fetch another region first.

use crate::config::Config;
use crate::error::{ErrorKind, Fault, WorkerError};
use backon::{ExponentialBuilder, Retryable};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_util::sync::CancellationToken;
use vodfleet_proto::redact;

/// Where the body of a download goes. Its methods run on the download's
/// runtime thread: they write to the page cache (a few microseconds per
/// chunk), the same cost tokio's own file writes pay after a thread hop.
pub trait Sink: Send {
    /// The first byte still wanted: 0 asks for the whole file (no `Range`).
    fn resume_at(&mut self) -> std::io::Result<u64>;
    /// A response began: its body starts at byte `from` (0 for a 200) of a
    /// file of `total` bytes, when the server said.
    fn begin(&mut self, from: u64, total: Option<u64>) -> std::io::Result<()>;
    /// The next chunk of the body. `Ok(false)`: the sink needs no more of
    /// this transfer for now (the download ends without an error).
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<bool>;
    /// The body ended: every byte from `resume_at` to the end is held.
    fn finish(&mut self) -> std::io::Result<()>;
    /// `416`: nothing is left from `resume_at`; the file has `total` bytes
    /// when the server said.
    fn beyond_end(&mut self, _total: Option<u64>) -> std::io::Result<()> {
        self.finish()
    }
}

/// A whole file at `dest`, resumed from its current length.
pub struct FileSink<'a> {
    pub dest: &'a Path,
    file: Option<std::fs::File>,
}

impl<'a> FileSink<'a> {
    pub fn new(dest: &'a Path) -> FileSink<'a> {
        FileSink { dest, file: None }
    }
}

impl Sink for FileSink<'_> {
    fn resume_at(&mut self) -> std::io::Result<u64> {
        self.file = None;
        Ok(std::fs::metadata(self.dest).map(|m| m.len()).unwrap_or(0))
    }

    fn begin(&mut self, from: u64, _total: Option<u64>) -> std::io::Result<()> {
        let append = from > 0;
        self.file = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(self.dest)?,
        );
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<bool> {
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no response began"))?
            .write_all(chunk)?;
        Ok(true)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match self.file.take() {
            Some(mut f) => f.flush(),
            None => Ok(()),
        }
    }
}

pub struct Fetch<'a> {
    pub client: &'a reqwest::Client,
    pub cfg: &'a Config,
    pub task_id: &'a str,
    /// What is fetched (for `s3://` sources, the presigned URL).
    pub url: &'a str,
    /// What messages name: the source's URL as given (redacted when printed).
    pub shown: &'a str,
    pub cancel: &'a CancellationToken,
}

impl Fetch<'_> {
    /// Fills `sink` from the byte it asks for, with the attempts, backoff and
    /// resume of the module's header. Ends when the body ends or the sink
    /// says it needs no more.
    pub async fn run(&self, sink: &mut impl Sink) -> Result<(), WorkerError> {
        let attempt = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.cfg.retry_backoff)
            .with_max_delay(self.cfg.retry_backoff * 8)
            .with_max_times(self.cfg.source_attempts.saturating_sub(1) as usize);
        // backon calls the closure once per attempt; the sink is borrowed by one at a time.
        let sink = tokio::sync::Mutex::new(sink);
        (|| async {
            let n = attempt.fetch_add(1, Ordering::Relaxed) + 1;
            let m = crate::metrics::get();
            m.source_download_attempts.inc();
            let mut sink = sink.lock().await;
            let r = self.attempt(n, &mut **sink).await;
            if r.is_err() && !self.cancel.is_cancelled() {
                m.source_download_failures.inc();
            }
            r
        })
        .retry(backoff)
        .when(|e: &WorkerError| e.kind() == ErrorKind::Retry)
        .notify(|e, delay| tracing::warn!(task.id = self.task_id, error = %e, retry_in_ms = delay.as_millis() as u64, "source download attempt failed"))
        .await
    }

    fn err(
        &self,
        attempt: u32,
        kind: ErrorKind,
        fault: Fault,
        cause: impl Into<String>,
    ) -> WorkerError {
        WorkerError::Source {
            task: self.task_id.to_owned(),
            url: redact::source(self.shown),
            attempt,
            attempts: self.cfg.source_attempts,
            cause: cause.into(),
            kind,
            fault,
        }
    }

    /// A failed request or body read: retried; its fault from reqwest's error.
    fn transport(&self, attempt: u32, e: &reqwest::Error) -> WorkerError {
        let fault = if e.is_timeout() {
            Fault::TimedOut
        } else if e.is_body() || e.is_decode() {
            Fault::StreamEnded
        } else {
            Fault::Unreachable
        };
        self.err(attempt, ErrorKind::Retry, fault, describe(e))
    }

    fn cache_err(&self, attempt: u32, e: std::io::Error) -> WorkerError {
        self.err(
            attempt,
            ErrorKind::Fail,
            Fault::Local,
            format!("cache file: {e}"),
        )
    }

    /// Races `fut` against the read timeout and the task's cancellation.
    async fn bounded<T>(
        &self,
        attempt: u32,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, WorkerError> {
        tokio::select! {
            r = tokio::time::timeout(self.cfg.source_timeout, fut) => r.map_err(|_| self.err(
                attempt,
                ErrorKind::Retry,
                Fault::TimedOut,
                format!("{what}: no data for {} ms", self.cfg.source_timeout.as_millis()),
            )),
            _ = self.cancel.cancelled() => Err(self.err(attempt, ErrorKind::Fail, Fault::Local, "task stopped")),
        }
    }

    async fn attempt(&self, attempt: u32, sink: &mut impl Sink) -> Result<(), WorkerError> {
        let have = sink.resume_at().map_err(|e| self.cache_err(attempt, e))?;
        let mut req = self.client.get(self.url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = self
            .bounded(attempt, "waiting for response headers", req.send())
            .await?
            .map_err(|e| {
                if e.is_redirect() {
                    // Our redirect policy said no (policy refusal, too many hops, a
                    // non-HTTP target): asking again cannot change the answer.
                    WorkerError::Policy {
                        task: self.task_id.to_owned(),
                        url: redact::source(self.shown),
                        reason: describe(&e),
                    }
                } else {
                    self.transport(attempt, &e)
                }
            })?;
        let status = resp.status();
        let (from, total) = match status.as_u16() {
            200 => (0, resp.content_length()),
            206 if have > 0 => content_range(resp.headers()).unwrap_or((have, None)),
            416 if have > 0 => {
                // We already hold every byte.
                let total = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().strip_prefix("bytes */"))
                    .and_then(|t| t.trim().parse().ok());
                sink.beyond_end(total)
                    .map_err(|e| self.cache_err(attempt, e))?;
                return Ok(());
            }
            // A redirect reqwest did not follow: its Location is not an http(s) URL
            // (`file:`, `ftp:`, `gopher:`…), which the policy never fetches.
            300..=399 => {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| resp.url().join(l).ok());
                let why = location
                    .map(|to| {
                        vodfleet_net::check_redirect(&to, 0, self.cfg.allow_private_networks)
                            .err()
                            .unwrap_or_else(|| {
                                format!("redirect to {} not followed", redact::source(to.as_str()))
                            })
                    })
                    .unwrap_or_else(|| format!("HTTP {status} without a usable Location"));
                return Err(WorkerError::Policy {
                    task: self.task_id.to_owned(),
                    url: redact::source(self.shown),
                    reason: why,
                });
            }
            408 | 429 | 500..=599 => {
                let fault = if status.as_u16() == 408 {
                    Fault::TimedOut
                } else {
                    Fault::Unreachable
                };
                return Err(self.err(attempt, ErrorKind::Retry, fault, format!("HTTP {status}")));
            }
            _ => {
                return Err(self.err(
                    attempt,
                    ErrorKind::Fail,
                    Fault::Refused,
                    format!("HTTP {status}"),
                ))
            }
        };
        sink.begin(from, total)
            .map_err(|e| self.cache_err(attempt, e))?;
        while let Some(chunk) = self
            .bounded(attempt, "reading body", resp.chunk())
            .await?
            .map_err(|e| self.transport(attempt, &e))?
        {
            crate::metrics::get()
                .source_downloaded_bytes
                .inc_by(chunk.len() as u64);
            if !sink.write(&chunk).map_err(|e| self.cache_err(attempt, e))? {
                return Ok(());
            }
        }
        sink.finish().map_err(|e| self.cache_err(attempt, e))?;
        Ok(())
    }
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` → (FIRST, TOTAL); TOTAL may be `*`.
fn content_range(h: &reqwest::header::HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = h.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let first = range.split_once('-')?.0.trim().parse().ok()?;
    Some((first, total.trim().parse().ok()))
}

/// reqwest's Display names only the outermost layer; the cause chain says what happened.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_connect() {
        "connect failed".to_owned()
    } else if e.is_body() {
        "body interrupted".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    // The chain may quote the URL; keep secrets out of it.
    s.replace(e.url().map(|u| u.as_str()).unwrap_or("\u{0}"), "<url>")
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_ranges() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::CONTENT_RANGE,
            "bytes 100-199/1000".parse().unwrap(),
        );
        assert_eq!(super::content_range(&h), Some((100, Some(1000))));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            "bytes 5-9/*".parse().unwrap(),
        );
        assert_eq!(super::content_range(&h), Some((5, None)));
    }
}
