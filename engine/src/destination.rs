//! Destinations: one thread and one bounded queue each (DESIGN §5).
//!
//! The media thread *offers* every packet to every destination and never waits:
//! a destination whose queue is full (slow network, stalled server) loses
//! packets up to the next keyframe, so it resumes with something decodable and
//! the others are never held back. Each destination reconnects on its own with
//! backoff; after the configured number of failed attempts it gives up, reports
//! `failed`, and the task goes on for the rest.

use crate::config::Config;
use crate::event::{DestinationStatus, Event, Events};
use crate::media::{Interrupt, Muxer, OutPacket, SharedParams};
use crate::metrics;
use crate::timeline::Track;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vodfleet_proto::fleet::DestinationState;
use vodfleet_proto::redact;

/// Codec configuration of the output tracks, as the first FLV header states it.
#[derive(Clone)]
pub struct StreamSetup {
    pub video: Option<SharedParams>,
    pub audio: Option<SharedParams>,
}

/// The media thread's side of a destination.
pub struct Destination {
    tx: Option<SyncSender<Arc<OutPacket>>>,
    /// Set after a dropped packet: nothing more is queued until a keyframe.
    resync: bool,
    video: bool,
    pub status: Arc<DestinationStatus>,
    interrupt: Arc<Interrupt>,
    thread: Option<JoinHandle<()>>,
}

impl Destination {
    pub fn spawn(
        index: usize,
        url: &str,
        setup: StreamSetup,
        cfg: &Config,
        events: Events,
    ) -> Destination {
        let (tx, rx) = mpsc::sync_channel(cfg.destination_queue);
        let status = Arc::new(DestinationStatus::new());
        let interrupt = Interrupt::new();
        let video = setup.video.is_some();
        let worker = Sender {
            index,
            url: url.to_owned(),
            shown: redact::destination(url),
            setup,
            timeout: cfg.destination_timeout,
            attempts: cfg.destination_attempts,
            backoff: cfg.retry_backoff,
            status: status.clone(),
            interrupt: interrupt.clone(),
            events,
        };
        let thread = std::thread::Builder::new()
            .name(format!("dest-{index}"))
            .spawn(move || worker.run(rx))
            .expect("spawning a destination thread");
        Destination {
            tx: Some(tx),
            resync: false,
            video,
            status,
            interrupt,
            thread: Some(thread),
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
            interrupt: Interrupt::new(),
            thread: None,
        }
    }

    /// Queues `p` if there is room; never blocks.
    pub fn offer(&mut self, p: &Arc<OutPacket>) {
        let Some(tx) = &self.tx else { return };
        let resync_point = p.key && (p.track == Track::Video || !self.video);
        if self.resync && !resync_point {
            self.status.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match tx.try_send(p.clone()) {
            Ok(()) => self.resync = false,
            Err(TrySendError::Full(_)) => {
                self.resync = true;
                self.status.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }

    /// False once the destination has given up.
    pub fn alive(&self) -> bool {
        self.tx.is_some()
    }

    /// Ends the stream after what is queued has been sent (`drain`), or at once.
    pub fn close(mut self, drain: bool) {
        self.end(drain);
    }

    /// Ends the stream at once while the task goes on (it reports `stopped`).
    pub fn halt(&mut self) {
        self.end(false);
    }

    fn end(&mut self, drain: bool) {
        if !drain {
            self.interrupt.stop();
        }
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The destination thread's side.
struct Sender {
    index: usize,
    url: String,
    shown: String,
    setup: StreamSetup,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    status: Arc<DestinationStatus>,
    interrupt: Arc<Interrupt>,
    events: Events,
}

enum Session {
    /// The task ended: nothing more to send.
    Done,
    /// The connection broke; try again.
    Broken(String),
}

impl Sender {
    fn run(self, rx: Receiver<Arc<OutPacket>>) {
        let mut failures = 0u32;
        let mut last_error = None;
        loop {
            let state = if failures == 0 {
                DestinationState::Connecting
            } else {
                metrics::get().destination_reconnects.inc();
                DestinationState::Reconnecting
            };
            self.report(state, failures + 1, last_error.clone());
            match Muxer::connect(
                &self.url,
                self.setup.video.as_ref(),
                self.setup.audio.as_ref(),
                self.interrupt.clone(),
                self.timeout,
            ) {
                Ok(muxer) => {
                    self.report(DestinationState::Live, 1, None);
                    match self.stream(muxer, &rx) {
                        Session::Done => {
                            self.report(DestinationState::Stopped, 0, None);
                            return;
                        }
                        // A write cut short because the task is stopping is not a failure.
                        Session::Broken(_) if self.interrupt.stopped() => {
                            self.report(DestinationState::Stopped, 0, None);
                            return;
                        }
                        Session::Broken(e) => {
                            tracing::warn!(destination = %self.shown, dest.index = self.index, error = %e, "destination connection broke; reconnecting");
                            failures = 1;
                            last_error = Some(e);
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    last_error = Some(e);
                }
            }
            if self.interrupt.stopped() {
                self.report(DestinationState::Stopped, 0, None);
                return;
            }
            if failures >= self.attempts {
                let e = last_error.clone().unwrap_or_default();
                tracing::error!(destination = %self.shown, dest.index = self.index, attempts = failures, error = %e, "destination failed; the task goes on without it");
                metrics::get().destination_failures.inc();
                self.report(DestinationState::Failed, failures, last_error);
                return; // dropping `rx` tells the media thread we are gone
            }
            // Back off, discarding what arrives meanwhile: the next session starts at a keyframe.
            let until = Instant::now() + self.backoff * 2u32.saturating_pow(failures - 1);
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                match rx.recv_timeout(until - now) {
                    Ok(_) => {
                        self.status.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.report(DestinationState::Stopped, 0, None);
                        return;
                    }
                }
            }
        }
    }

    fn stream(&self, mut muxer: Muxer, rx: &Receiver<Arc<OutPacket>>) -> Session {
        // What the last sequence header sent for each track said.
        let mut sent: [Option<Vec<u8>>; 2] = [
            self.setup.video.as_ref().map(|p| p.extradata().to_vec()),
            self.setup.audio.as_ref().map(|p| p.extradata().to_vec()),
        ];
        let mut started = false;
        while let Ok(p) = rx.recv() {
            if !started && p.track == Track::Video {
                // Video must open on a keyframe or players show garbage until the next one.
                // Audio needs no such gate, and encoders may deliver it first.
                if !p.key {
                    self.status.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                started = true;
            }
            let t = p.track as usize;
            let changed = match (&p.config, &sent[t]) {
                (Some(c), Some(s)) => c.as_slice() != s.as_slice(),
                (Some(_), None) => true,
                _ => false,
            };
            let extra = if changed {
                p.config.as_deref().map(|c| c.as_slice())
            } else {
                None
            };
            if let Err(e) = muxer.write(&p, extra, self.timeout) {
                return Session::Broken(e);
            }
            if changed {
                sent[t] = p.config.as_deref().cloned();
            }
            self.status
                .bytes
                .fetch_add(p.packet.size() as u64, Ordering::Relaxed);
            let m = metrics::get();
            m.bytes_sent.inc_by(p.packet.size() as u64);
            if p.track == Track::Video {
                m.frames_sent.inc();
            }
        }
        if !self.interrupt.stopped() {
            muxer.finish(self.timeout);
        }
        Session::Done
    }

    fn report(&self, state: DestinationState, attempt: u32, error: Option<String>) {
        *self.status.state.lock().expect("state lock") = state;
        let _ = self.events.send(Event::Destination {
            index: self.index,
            destination: self.shown.clone(),
            state,
            attempt,
            error,
        });
    }
}
