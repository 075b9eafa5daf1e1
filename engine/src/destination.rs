//! Destinations: one async task and one bounded queue each, on the task's
//! event-loop shard (docs/ARCHITECTURE.md, "Threads and waiting").
//!
//! The fan-out *offers* every frame to every destination and never waits: a
//! destination whose queue is full (slow network, stalled server) loses frames
//! up to the next keyframe, so it resumes with something decodable and the
//! others are never held back. A destination writes everything a wake-up
//! brought in one vectored write. It reconnects on its own with backoff; a
//! publish the server refuses (bad name, already publishing, denied) is not
//! retried; after the configured number of failed attempts it gives up,
//! reports `failed`, and the task goes on for the rest.
//!
//! **Taking over.** A run that takes a stream over after a failover may find the
//! name still held by its predecessor: a worker frozen or cut off keeps its TCP
//! connection open, and the server refuses a second publisher until it drops
//! the idle one. Such a run reports the refusal (`reconnecting`, kind `refused`)
//! and tries again every [`TAKEOVER_RETRY`] for `VODFLEET_DESTINATION_TAKEOVER_MS`
//! before it gives up (docs/design/fleet.md, "Failover").

use crate::config::Config;
use crate::event::{DestinationStatus, Event, Events};
use crate::frame::{header_tag, Frame, Header, Tracks};
use crate::metrics;
use crate::timeline::Track;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vodfleet_proto::fleet::DestinationState;
use vodfleet_proto::redact;
use vodfleet_rtmp::publish::{PublishOptions, Publisher, Tag, TagKind};
use vodfleet_rtmp::url::Target;
use vodfleet_rtmp::{ErrorKind, RtmpError};

/// Frames a wake-up takes from the queue at most (one vectored write).
const BATCH: usize = 64;

/// How often a run taking a stream over asks again while the name is held.
pub const TAKEOVER_RETRY: Duration = Duration::from_millis(250);

/// The fan-out's side of a destination.
pub struct Destination {
    tx: Option<mpsc::Sender<Frame>>,
    /// Set after a dropped frame: nothing more is queued until a keyframe.
    resync: bool,
    video: bool,
    pub status: Arc<DestinationStatus>,
    /// Ends the session at once (no drain).
    stop: CancellationToken,
    join: Option<JoinHandle<()>>,
}

/// Everything a destination needs to (re)start its session.
pub struct Setup {
    pub tracks: Tracks,
    /// The sequence headers in force when the output opened.
    pub headers: [Option<Arc<Header>>; 2],
    pub publish: PublishOptions,
    /// This run takes the stream over after a failover: a refused publish is
    /// asked again for this long (see the module note).
    pub takeover: Option<Duration>,
}

impl Destination {
    /// Starts the destination on the current shard (a `LocalSet`).
    pub fn spawn(
        task_id: &str,
        index: usize,
        url: &str,
        setup: Arc<Setup>,
        cfg: &Config,
        events: Events,
    ) -> Destination {
        let (tx, rx) = mpsc::channel(cfg.destination_queue);
        let status = Arc::new(DestinationStatus::new());
        let stop = CancellationToken::new();
        let video = setup.tracks.video;
        let sender = Sender {
            takeover_until: setup.takeover.map(|w| Instant::now() + w),
            index,
            url: url.to_owned(),
            shown: redact::destination(url),
            current: setup.headers.clone(),
            setup,
            timeout: cfg.destination_timeout,
            attempts: cfg.destination_attempts,
            backoff: cfg.retry_backoff,
            status: status.clone(),
            stop: stop.clone(),
            events,
        };
        let span = tracing::info_span!("destination", task.id = %task_id, dest.index = index);
        let join = tokio::task::spawn_local(sender.run(rx).instrument(span));
        Destination {
            tx: Some(tx),
            resync: false,
            video,
            status,
            stop,
            join: Some(join),
        }
    }

    /// A destination stopped before it ever connected (its state reads `stopped`).
    pub fn stopped() -> Destination {
        let status = Arc::new(DestinationStatus::new());
        *status.state.lock().expect("state lock") = DestinationState::Stopped;
        Destination {
            tx: None,
            resync: false,
            video: false,
            status,
            stop: CancellationToken::new(),
            join: None,
        }
    }

    /// Queues `f` if there is room; never waits.
    pub fn offer(&mut self, f: &Frame) {
        let Some(tx) = &self.tx else { return };
        let resync_point = f.key && (f.track == Track::Video || !self.video);
        if self.resync && !resync_point {
            self.status.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match tx.try_send(f.clone()) {
            Ok(()) => self.resync = false,
            Err(TrySendError::Full(_)) => {
                self.resync = true;
                self.status.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => self.tx = None,
        }
    }

    /// False once the destination has given up.
    pub fn alive(&self) -> bool {
        self.tx.is_some()
    }

    /// Ends the stream after what is queued has been sent (`drain`), or at
    /// once, and waits until its connection is closed.
    pub async fn close(mut self, drain: bool) {
        if !drain {
            self.stop.cancel();
        }
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.await;
        }
    }

    /// Ends the stream at once while the task goes on (it reports `stopped`).
    pub fn halt(&mut self) {
        self.stop.cancel();
        self.tx = None;
    }
}

/// The destination task's side.
struct Sender {
    index: usize,
    url: String,
    shown: String,
    setup: Arc<Setup>,
    /// The newest sequence headers seen, sent first on every (re)connect.
    current: [Option<Arc<Header>>; 2],
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    /// Until when a refused publish is asked again (a takeover; see the module note).
    takeover_until: Option<Instant>,
    status: Arc<DestinationStatus>,
    stop: CancellationToken,
    events: Events,
}

enum Session {
    /// The task ended or stopped this destination: nothing more to send.
    Done,
    /// The connection broke; try again.
    Broken(RtmpError),
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Frame>) {
        let target = match Target::parse(&self.url) {
            Ok(t) => t,
            Err(e) => return self.give_up(1, &e),
        };
        let mut failures = 0u32;
        let mut last_error: Option<RtmpError> = None;
        loop {
            let state = if failures == 0 {
                DestinationState::Connecting
            } else {
                metrics::get().destination_reconnects.inc();
                DestinationState::Reconnecting
            };
            self.report(state, failures + 1, last_error.as_ref());
            let connect = tokio::select! {
                r = Publisher::connect(&target, &self.setup.publish) => Some(r),
                _ = self.stop.cancelled() => None,
            };
            let mut delay = None;
            match connect {
                None => return self.report(DestinationState::Stopped, 0, None),
                Some(Ok(publisher)) => {
                    self.takeover_until = None;
                    self.report(DestinationState::Live, 1, None);
                    match self.stream(publisher, &mut rx).await {
                        Session::Done => return self.report(DestinationState::Stopped, 0, None),
                        Session::Broken(e) => {
                            tracing::warn!(destination = %self.shown, error = %e, "destination connection broke; reconnecting");
                            failures = 1;
                            last_error = Some(e);
                        }
                    }
                }
                Some(Err(e))
                    if e.kind() == ErrorKind::Refused
                        && self.takeover_until.is_some_and(|u| Instant::now() < u) =>
                {
                    tracing::info!(destination = %self.shown, error = %e, "publish refused while taking the stream over (the previous publisher may still hold the name); asking again");
                    failures = failures.max(1);
                    last_error = Some(e);
                    delay = Some(TAKEOVER_RETRY);
                }
                Some(Err(e)) if !e.kind().is_retryable() => {
                    // The server said no (or the URL or TLS setup is unusable):
                    // asking again would get the same answer.
                    return self.give_up(failures + 1, &e);
                }
                Some(Err(e)) => {
                    failures += 1;
                    if failures >= self.attempts {
                        return self.give_up(failures, &e);
                    }
                    last_error = Some(e);
                }
            }
            // Back off, discarding what arrives meanwhile (keeping the newest
            // configuration): the next session starts at a keyframe.
            let until =
                Instant::now() + delay.unwrap_or(self.backoff * 2u32.saturating_pow(failures - 1));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    _ = self.stop.cancelled() => return self.report(DestinationState::Stopped, 0, None),
                    f = rx.recv() => match f {
                        Some(f) => {
                            self.note_config(&f);
                            self.status.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return self.report(DestinationState::Stopped, 0, None),
                    },
                }
            }
        }
    }

    /// One session: metadata and sequence headers, then frames as they come,
    /// each wake-up's worth in one write.
    async fn stream(&mut self, mut p: Publisher, rx: &mut mpsc::Receiver<Frame>) -> Session {
        let mut sent: [Option<Arc<Header>>; 2] = [None, None];
        let mut started = false;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                _ = self.stop.cancelled() => return Session::Done,
            };
            if n == 0 {
                break; // the task ended: what was queued is sent
            }
            let mut bytes = 0u64;
            let mut frames = 0u64;
            for f in batch.drain(..) {
                self.note_config(&f);
                if !started {
                    // Video must open on a keyframe or players show garbage until the next one.
                    if f.track == Track::Video && !f.key {
                        self.status.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    started = true;
                    // Like a fresh FLV file: metadata and sequence headers at time 0
                    // (servers that record take the first tag's time as their epoch,
                    // so the stream's own clock is kept, resumes included).
                    p.queue(&Tag {
                        kind: TagKind::Data,
                        timestamp_ms: 0,
                        payload: self.setup.tracks.metadata.clone(),
                    });
                    for track in [Track::Video, Track::Audio] {
                        if let Some(h) = &self.current[track as usize] {
                            p.queue(&header_tag(track, h, 0));
                            sent[track as usize] = Some(h.clone());
                        }
                    }
                }
                let t = f.track as usize;
                if let Some(h) = &self.current[t] {
                    if !sent[t].as_ref().is_some_and(|s| Arc::ptr_eq(s, h)) {
                        p.queue(&header_tag(f.track, h, f.dts_ms));
                        sent[t] = Some(h.clone());
                    }
                }
                p.queue(&f.tag());
                bytes += f.body.len() as u64;
                frames += (f.track == Track::Video) as u64;
            }
            let flushed = tokio::select! {
                r = tokio::time::timeout(self.timeout, p.flush()) => r,
                _ = self.stop.cancelled() => return Session::Done,
            };
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Session::Broken(e),
                Err(_) => {
                    return Session::Broken(RtmpError::TimedOut {
                        stage: "flush",
                        after: self.timeout,
                    })
                }
            }
            self.status.bytes.fetch_add(bytes, Ordering::Relaxed);
            let m = metrics::get();
            m.bytes_sent.inc_by(bytes);
            m.frames_sent.inc_by(frames);
        }
        p.close(self.timeout).await;
        Session::Done
    }

    /// Keeps the newest configuration a frame carries.
    fn note_config(&mut self, f: &Frame) {
        if let Some(c) = &f.config {
            self.current[f.track as usize] = Some(c.clone());
        }
    }

    fn give_up(&self, attempts: u32, e: &RtmpError) {
        tracing::error!(destination = %self.shown, attempts, error = %e, kind = ?e.kind(), "destination failed; the task goes on without it");
        metrics::get().destination_failures.inc();
        self.report(DestinationState::Failed, attempts, Some(e));
    }

    fn report(&self, state: DestinationState, attempt: u32, error: Option<&RtmpError>) {
        *self.status.state.lock().expect("state lock") = state;
        let _ = self.events.send(Event::Destination {
            index: self.index,
            destination: self.shown.clone(),
            state,
            attempt,
            error: error.map(|e| e.to_string()),
            error_kind: error.map(|e| kind_name(e.kind())),
        });
    }
}

/// The name of an error kind in events and callbacks.
fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::Refused => "refused",
        ErrorKind::Unreachable => "unreachable",
        ErrorKind::TimedOut => "timed_out",
        ErrorKind::Closed => "closed",
        ErrorKind::Protocol => "protocol",
        ErrorKind::BadUrl => "bad_url",
        ErrorKind::Config => "config",
    }
}
