//! RTSP sources (`rtsp://`, issue 8): pulled with `retina` over
//! TCP-interleaved RTP, H.264 and AAC depacketised and appended, tag by tag,
//! as an FLV stream to a cache entry of the task's own, which the item plays
//! while the pull goes on, like any streamed source
//! (docs/design/sources.md, "RTSP").
//!
//! - Time: media time 0 is the start of the pull (the NPT that `PLAY`'s
//!   `RTP-Info` anchors), so `relofftime` counts from there; the stream's
//!   `onMetaData` `creationdate` is the wall clock at `PLAY`, so `absofftime`
//!   resolves against it like any recording's start.
//! - Playing while pulling: an item opens once the pull holds its first
//!   keyframe and [`READY_AHEAD_MS`] of media past where the item starts
//!   (a cut that starts later also waits for a keyframe past its start, so
//!   the demuxer's seek reads held bytes); a pull that falls behind shows as
//!   a late demux read, covered by the slate; the end of the pull is the end
//!   of the entry.
//! - How long: until the last range end of every item naming this URL plus
//!   [`MARGIN_MS`] and the keyframe at or after it (where copy mode ends a
//!   cut; at most [`MAX_KEYFRAME_WAIT_MS`] past the end), or until the server
//!   ends the stream (TCP close, or an RTCP BYE on every stream); an item
//!   without an end pulls until the stream ends, at most [`MAX_PULL_SECS`] of
//!   media or [`MAX_PULL_BYTES`] of stream.
//! - Failures: the source timeout bounds `DESCRIBE`, `SETUP`, `PLAY` and every
//!   wait for media; the source attempts cover connecting and each resume
//!   after a stall or a drop (a resumed pull appends after what it has).
//!   RTSP 4xx answers fail at once (wrong credentials: 401).
//! - Policy: the host is checked, a name resolved to allowed addresses only,
//!   and retina is given that address (it opens its own connection, so the
//!   checked address is what it dials). Credentials in the URL go to RTSP
//!   authentication, never into a message: URLs are shown redacted.

mod flv;
mod session;

use crate::config::Config;
use crate::error::{ErrorKind, Fault, WorkerError};
use crate::source::cache::{Cache, Pin, Producer, Reader};
use retina::client::Credentials;
use session::{Out, Pull};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vodfleet_net as policy;
use vodfleet_proto::command::Cut;
use vodfleet_proto::{redact, TaskSpec};

/// Media pulled past the last range end, so the cut finds its end frame.
pub const MARGIN_MS: u64 = 1_000;
/// How far past the end a pull waits for the keyframe at or after it, where
/// a copy-mode cut ends (docs/design/timeline.md); a longer GOP ends the
/// item at the end of the pulled media instead.
pub const MAX_KEYFRAME_WAIT_MS: u64 = 10_000;
/// The most media one pull records (6 h); an item without an end on a
/// stream that goes on longer fails, naming this cap.
pub const MAX_PULL_SECS: u64 = 6 * 3600;
/// The largest stream one pull writes (8 GiB).
pub const MAX_PULL_BYTES: u64 = 8 << 30;
/// Media an item's open waits for past where it starts, beyond the pacer's
/// initial burst (`VODFLEET_INITIAL_BURST_MS`): the destinations are kept
/// that far ahead of real time, so a pull at real time must hold it before
/// the first packet goes, or the first read-ahead batches would be late and
/// flash the slate (task::cover's grace is 500 ms).
pub const READY_AHEAD_MS: u64 = 500;
/// RTCP BYE.
const RTCP_BYE: u8 = 203;
/// The gap left in the timestamps where a resumed pull continues (about a
/// frame): the media the server sent while we reconnected is lost anyway.
const RESUME_GAP_MS: u64 = 40;

/// How long each `rtsp://` URL of a task is pulled: what every item that
/// names it needs.
#[derive(Debug, Default)]
pub struct Limits(HashMap<String, Want>);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Want {
    /// An item plays it whole: until the stream ends.
    to_end: bool,
    /// The last `relofftime` end (ms of the pull).
    rel_ms: Option<u64>,
    /// The last `absofftime` end (Unix ms).
    abs_ms: Option<u64>,
    /// The earliest start of an item's first range: `relofftime` (ms of the
    /// pull), `absofftime` (Unix ms); a whole item starts at 0.
    rel_from: Option<u64>,
    abs_from: Option<u64>,
}

impl Limits {
    pub fn new(spec: &TaskSpec) -> Limits {
        let mut m: HashMap<String, Want> = HashMap::new();
        for s in spec.sources.iter().filter(|s| s.url.starts_with("rtsp:")) {
            let w = m.entry(s.url.clone()).or_default();
            let last = |r: &[vodfleet_proto::command::Range]| r.iter().map(|r| r.end_ms).max();
            let first = |r: &[vodfleet_proto::command::Range]| r.iter().map(|r| r.start_ms).min();
            let min = |a: Option<u64>, b: Option<u64>| a.into_iter().chain(b).min();
            match &s.cut {
                Cut::Whole => {
                    w.to_end = true;
                    w.rel_from = Some(0);
                }
                Cut::Relative(r) => {
                    w.rel_ms = w.rel_ms.max(last(r));
                    w.rel_from = min(w.rel_from, first(r));
                }
                Cut::Absolute(r) => {
                    w.abs_ms = w.abs_ms.max(last(r));
                    w.abs_from = min(w.abs_from, first(r));
                }
            }
        }
        Limits(m)
    }

    fn want(&self, url: &str) -> Want {
        self.0.get(url).copied().unwrap_or(Want {
            to_end: true,
            ..Want::default()
        })
    }

    /// Until which media time (ms of the pull) to pull `url`, the pull having
    /// started at `start_unix_ms`; `None`: until the stream ends.
    fn until(&self, url: &str, start_unix_ms: u64) -> Option<u64> {
        let w = self.want(url);
        if w.to_end {
            return None;
        }
        let abs = w.abs_ms.map(|end| end.saturating_sub(start_unix_ms));
        Some(w.rel_ms.max(abs).unwrap_or(0))
    }

    /// Where the earliest item naming `url` starts (ms of the pull started
    /// at `start_unix_ms`): its open waits for the media there.
    fn from(&self, url: &str, start_unix_ms: u64) -> u64 {
        let w = self.want(url);
        let abs = w.abs_from.map(|from| from.saturating_sub(start_unix_ms));
        w.rel_from.into_iter().chain(abs).min().unwrap_or(0)
    }
}

/// What a pull has reached, for the opens that wait on it.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The wall clock at the first `PLAY` (Unix ms).
    started_unix_ms: Option<u64>,
    /// The first tag's time (ms of the pull): where the demuxer's time starts.
    first_ms: Option<u64>,
    max_ms: u64,
    /// The last keyframe's time (audio frames for a pull without video).
    last_key_ms: Option<u64>,
    /// The pull is over: ended (`failed` is `None`) or failed.
    over: bool,
    failed: Option<Arc<WorkerError>>,
}

/// What a task's items share of one pull ([`start`]).
pub struct Pulling {
    url: String,
    /// Keeps the entry for the task's loops; each open reads from a pin of its own.
    pin: Pin,
    progress: watch::Receiver<Progress>,
}

/// What a pull needs of its task's `Sources`.
pub(super) struct Ctx {
    pub(super) cfg: Config,
    pub(super) task_id: String,
    /// The task's cancellation; also cancelled when the task's sources go.
    pub(super) cancel: CancellationToken,
    pub(super) limits: Arc<Limits>,
}

impl Ctx {
    pub(super) fn refuse(&self, url: &str, reason: String) -> WorkerError {
        WorkerError::Policy {
            task: self.task_id.clone(),
            url: redact::source(url),
            reason,
        }
    }
}

/// Starts pulling `url` into a new entry `key` of `cache` (a key of the
/// task's own): returns at once, the pull running on `rt`.
pub(super) fn start(
    ctx: Ctx,
    url: &str,
    key: &str,
    cache: &Arc<Cache>,
    rt: &tokio::runtime::Handle,
) -> Result<Pulling, WorkerError> {
    let (pin, producer) =
        cache
            .produce(key, url, &ctx.task_id)
            .map_err(|e| WorkerError::Source {
                task: ctx.task_id.clone(),
                url: redact::source(url),
                attempt: 0,
                attempts: ctx.cfg.source_attempts,
                cause: format!("cache file: {e}"),
                kind: ErrorKind::Fail,
                fault: Fault::Local,
            })?;
    let (tx, rx) = watch::channel(Progress::default());
    let owned = url.to_owned();
    rt.spawn(async move {
        let tx2 = tx.clone();
        let r = pull(&ctx, &owned, Out::Before(producer, tx)).await;
        tx2.send_modify(|p| {
            p.over = true;
            p.failed = r.err().map(Arc::new);
        });
    });
    Ok(Pulling {
        url: url.to_owned(),
        pin,
        progress: rx,
    })
}

impl Pulling {
    /// Waits until the pull holds what an item naming the URL needs to open
    /// (see the module's header), or is over; the pull's error if it failed
    /// before that. `cancel` ends the wait.
    pub async fn ready(
        &self,
        limits: &Limits,
        cfg: &Config,
        task_id: &str,
        cancel: &CancellationToken,
    ) -> Result<(), Arc<WorkerError>> {
        let ahead = (cfg.initial_burst + Duration::from_millis(READY_AHEAD_MS)).as_millis() as u64;
        let from = |p: &Progress| p.started_unix_ms.map(|s| limits.from(&self.url, s));
        match self.wait(from, ahead, cancel).await {
            Some(p) => match p.failed {
                // Nothing to play: the pull's error is the item's.
                Some(e) if p.first_ms.is_none() => Err(e),
                _ => Ok(()),
            },
            None => Err(Arc::new(WorkerError::Source {
                task: task_id.to_owned(),
                url: redact::source(&self.url),
                attempt: 0,
                attempts: cfg.source_attempts,
                cause: "task stopped".into(),
                kind: ErrorKind::Fail,
                fault: Fault::Local,
            })),
        }
    }

    /// Waits until the pull holds a keyframe past `from_ms` (ms of the
    /// item's own time), where a cut's seek reads forward to, or is over.
    pub async fn holds(&self, from_ms: u64, cancel: &CancellationToken) {
        self.wait(|_| Some(from_ms), 0, cancel).await;
    }

    /// Waits until the pull holds a keyframe past `from` (ms after its first
    /// tag; 0: the first keyframe) and `ahead` ms of media past that, or is
    /// over; `None` if `cancel` ended the wait.
    async fn wait(
        &self,
        from: impl Fn(&Progress) -> Option<u64>,
        ahead: u64,
        cancel: &CancellationToken,
    ) -> Option<Progress> {
        let mut rx = self.progress.clone();
        let ready = |p: &Progress| {
            if p.over {
                return true;
            }
            let (Some(from), Some(first)) = (from(p), p.first_ms) else {
                return false;
            };
            let from = first + from;
            p.max_ms >= from + ahead && (from == first || p.last_key_ms.is_some_and(|k| k > from))
        };
        tokio::select! {
            r = rx.wait_for(ready) => r.map(|p| p.clone()).ok(),
            _ = cancel.cancelled() => None,
        }
    }

    /// A blocking reader of the pulled stream from its first byte.
    pub fn reader(&self, task_id: &str, cancel: CancellationToken) -> Reader {
        self.pin.another().reader(task_id, cancel)
    }
}

/// Pulls `url` into `out`, with the source's attempts; the producer ends
/// the entry (its length, or the pull's error for readers past what it holds).
async fn pull(ctx: &Ctx, url: &str, mut out: Out) -> Result<(), WorkerError> {
    let r = pull_attempts(ctx, url, &mut out).await;
    let producer: Option<Producer> = match out {
        Out::Before(p, _) => Some(p),
        Out::Flv(f) => {
            tracing::info!(task.id = %ctx.task_id, url = %redact::source(url), media_ms = f.max_ms, bytes = f.bytes(), "RTSP pull ended");
            Some(f.producer)
        }
        Out::Gone => None,
    };
    if let Some(p) = producer {
        match &r {
            Ok(()) => p.finish(),
            Err(e) => p.fail(e.clone()),
        }
    }
    r
}

async fn pull_attempts(ctx: &Ctx, url: &str, out: &mut Out) -> Result<(), WorkerError> {
    let parsed = url::Url::parse(url).map_err(|e| ctx.refuse(url, e.to_string()))?;
    policy::check_url_host(&parsed, ctx.cfg.allow_private_networks)
        .map_err(|r| ctx.refuse(url, r))?;
    let creds = match parsed.username() {
        "" => None,
        user => Some(Credentials {
            username: percent_decode(user),
            password: percent_decode(parsed.password().unwrap_or("")),
        }),
    };
    let mut bare = parsed.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let w = ctx.limits.want(url);
    if !w.to_end && w.rel_ms.is_some_and(|ms| ms > MAX_PULL_SECS * 1000) {
        return Err(WorkerError::Unsupported {
            task: ctx.task_id.clone(),
            cause: format!(
                "RTSP source {}: relofftime ends past the pull cap of {MAX_PULL_SECS} s (rtsp::MAX_PULL_SECS)",
                redact::source(url)
            ),
        });
    }
    let p = Pull {
        ctx,
        shown: url,
        bare,
        creds,
    };
    let attempts = ctx.cfg.source_attempts.max(1);
    let m = crate::metrics::get();
    for attempt in 1..=attempts {
        m.source_download_attempts.inc();
        match p.attempt(attempt, out).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if !ctx.cancel.is_cancelled() {
                    m.source_download_failures.inc();
                }
                if e.kind() != ErrorKind::Retry || attempt == attempts {
                    return Err(e);
                }
                // Exponential, as the HTTP path's (source::http): 1×, 2×, 4×… up to 8×.
                let delay = ctx.cfg.retry_backoff * 2u32.pow((attempt - 1).min(3));
                tracing::warn!(task.id = %ctx.task_id, error = %e, retry_in_ms = delay.as_millis() as u64, "RTSP pull attempt failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.cancel.cancelled() => return Err(p.err(attempt, ErrorKind::Fail, Fault::Local, "task stopped")),
                }
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// `%XX` escapes decoded (URL userinfo); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
