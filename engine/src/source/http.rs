//! Downloads one source over HTTP(S) into a local file: 10 s connect and read
//! timeouts, a bounded number of attempts with exponential backoff (`backon`),
//! and a resumed transfer (`Range: bytes=N-`) when an attempt dies part-way.

use crate::config::Config;
use crate::error::{ErrorKind, Fault, WorkerError};
use backon::{ExponentialBuilder, Retryable};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use vodfleet_proto::redact;

pub struct Fetch<'a> {
    pub client: &'a reqwest::Client,
    pub cfg: &'a Config,
    pub task_id: &'a str,
    /// What is fetched (for `s3://` sources, the presigned URL).
    pub url: &'a str,
    /// What messages name: the source's URL as given (redacted when printed).
    pub shown: &'a str,
    pub dest: &'a Path,
    pub cancel: &'a CancellationToken,
}

impl Fetch<'_> {
    pub async fn run(&self) -> Result<(), WorkerError> {
        let attempt = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.cfg.retry_backoff)
            .with_max_delay(self.cfg.retry_backoff * 8)
            .with_max_times(self.cfg.source_attempts.saturating_sub(1) as usize);
        (|| async {
            let n = attempt.fetch_add(1, Ordering::Relaxed) + 1;
            let m = crate::metrics::get();
            m.source_download_attempts.inc();
            let r = self.attempt(n).await;
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

    async fn attempt(&self, attempt: u32) -> Result<(), WorkerError> {
        let have = tokio::fs::metadata(self.dest)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
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
        let append = match status.as_u16() {
            200 => false,
            206 if have > 0 => true,
            416 if have > 0 => return Ok(()), // we already hold every byte
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
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(self.dest)
            .await
            .map_err(|e| self.cache_err(attempt, e))?;
        while let Some(chunk) = self
            .bounded(attempt, "reading body", resp.chunk())
            .await?
            .map_err(|e| self.transport(attempt, &e))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| self.cache_err(attempt, e))?;
        }
        file.flush().await.map_err(|e| self.cache_err(attempt, e))?;
        Ok(())
    }
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
