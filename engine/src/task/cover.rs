//! Never dark (docs/design/sources.md): while a task waits for its source (the
//! next item's download or open, a demux read that is late), the destinations
//! get the slate once the wait runs past its grace, on the same timeline and in
//! real time, until the source delivers or fails.
//!
//! Copy mode plays the task's encoded slate ([`crate::media::slate`]) as an
//! unlike seam (its own sequence headers), and an item interrupted mid-segment
//! goes on at its next keyframe with its own headers again ([`Resync`]).
//! Transcode mode draws black pictures and silence with the task's own
//! encoders, so nothing changes for the players but the picture.

use super::{Halt, Task};
use crate::event::Event;
use crate::media::slate::{self, Slate};
use crate::media::OutPacket;
use crate::metrics;
use crate::output::{Mode, Output, Resync, SlateCache};
use crate::timeline::Track;
use futures_util::FutureExt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long past the moment its next packet was due a task waits for its
/// source before the slate goes on air. The pacer keeps the destinations
/// `VODFLEET_INITIAL_BURST_MS` (1 s) ahead of real time, so at that moment the
/// players still hold half a second: they show the item's last picture, then
/// the slate, and never stall. Shorter, every hiccup of a disk or a network
/// read (a read-ahead batch a few hundred ms late) would flash black; longer,
/// it eats the rest of what the players hold.
pub(super) const SLATE_GRACE: Duration = Duration::from_millis(500);

/// Output time a transcoding task's slate is drawn ahead per step (one
/// picture at 25 fps): the encoder works in real time, not ahead of it.
const DRAW_STEP_US: i64 = 40_000;

/// What a task waits for (named in events and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// The item's source (a download, or a stream's first bytes).
    Download,
    /// Opening the item (libavformat probing the first bytes).
    Open,
    /// A demux read (the read-ahead batch is late).
    Read,
}

impl Wait {
    fn as_str(self) -> &'static str {
        match self {
            Wait::Download => "download",
            Wait::Open => "open",
            Wait::Read => "read",
        }
    }
}

impl Task {
    /// Waits for `fut`, answering control messages, and covers the wait with
    /// the slate once it runs [`SLATE_GRACE`] past the moment the next packet
    /// was due. Returns what `fut` gave and whether the slate went on air.
    /// Without an output (nothing on air yet) there is nothing to cover.
    pub(super) async fn waiting<T>(
        &mut self,
        out: Option<&mut Output>,
        wait: Wait,
        (item, pass): (usize, u32),
        fut: impl Future<Output = T>,
    ) -> Result<(T, bool), Halt> {
        let mut fut = std::pin::pin!(fut);
        // The usual case, a batch already read: no timer at all.
        if let Some(r) = fut.as_mut().now_or_never() {
            return Ok((r, false));
        }
        let Some(o) = out else {
            return match self.end_at {
                None => Ok((fut.await, false)),
                Some(end) => tokio::select! {
                    r = fut => Ok((r, false)),
                    _ = tokio::time::sleep_until(end.into()) => Err(Halt::End),
                },
            };
        };
        let next_dts = o.last_dts[0].max(o.last_dts[1]).max(0);
        let cover_at = o.pacer.due(next_dts).unwrap_or_else(Instant::now) + SLATE_GRACE;
        match self.wait_until(&mut fut, cover_at).await? {
            Some(r) => return Ok((r, false)),
            None if self.ended() => return Err(Halt::End),
            None => {}
        }
        // Copy mode needs the encoded slate (made the first time, racing the wait).
        let slate = match o.mode {
            Mode::Transcode(_) => None,
            Mode::Copy => match self.slate_of(o, &mut fut).await? {
                Ok(s) => Some(s),
                Err(Some(r)) => return Ok((r, false)),
                Err(None) => {
                    return match self.wait_until(&mut fut, far_future()).await? {
                        Some(r) => Ok((r, false)),
                        None => Err(Halt::End),
                    }
                }
            },
        };
        let from = o.timeline.reached();
        // Where the item stands in its own time: a transcoding task goes on from there.
        let resume_src = o
            .timeline
            .source_reach(Track::Video)
            .or(o.timeline.source_reach(Track::Audio))
            .unwrap_or_else(|| o.timeline.source_time(o.timeline.offset()));
        tracing::info!(task.id = %self.spec.id, item, waiting_for = wait.as_str(), timeline_ms = from / 1000, "the source is late: slate on air");
        let _ = self.events.send(Event::SlateStarted {
            item,
            loop_index: pass,
            waiting_for: wait.as_str(),
            timeline_ms: (from / 1000).max(0) as u64,
        });
        let mut result = None;
        let played = self
            .play_slate(o, slate.as_deref(), &mut fut, &mut result)
            .await;
        // Back to the item, however the slate ended.
        match &mut o.mode {
            Mode::Copy => {
                o.restore_headers();
                o.inband_key = slate.is_some();
                if let Some(t) = &mut o.conform {
                    // The slate is on air: a conformed item goes on after it.
                    t.resume_at(o.timeline.reached());
                }
                if wait == Wait::Read {
                    o.resync = Resync::AwaitKey;
                }
            }
            Mode::Transcode(_) => o.timeline.begin(resume_src, resume_src),
        }
        let duration = (o.timeline.reached() - from).max(0);
        tracing::info!(task.id = %self.spec.id, item, waiting_for = wait.as_str(), duration_ms = duration / 1000, "slate off air");
        let _ = self.events.send(Event::SlateEnded {
            item,
            loop_index: pass,
            duration_ms: (duration / 1000) as u64,
            timeline_ms: (o.timeline.reached() / 1000).max(0) as u64,
        });
        played?;
        Ok((
            result.expect("the slate plays until the source delivers"),
            true,
        ))
    }

    /// Waits for `fut` until `at` (or `end_ms`), answering control messages;
    /// `None` when the time came first.
    async fn wait_until<T, F: Future<Output = T>>(
        &mut self,
        fut: &mut std::pin::Pin<&mut F>,
        at: Instant,
    ) -> Result<Option<T>, Halt> {
        let until = self.end_at.map_or(at, |e| e.min(at));
        loop {
            tokio::select! {
                biased;
                c = self.control.recv() => match c {
                    Some(c) => self.obey(c)?,
                    None => return Err(Halt::Stop),
                },
                r = fut.as_mut() => return Ok(Some(r)),
                _ = tokio::time::sleep_until(until.into()) => return Ok(None),
            }
        }
    }

    /// The task's encoded slate: `Err(Some(r))` if `fut` finished while it
    /// was being made, `Err(None)` if it cannot be made (waits go uncovered).
    async fn slate_of<T, F: Future<Output = T>>(
        &mut self,
        o: &mut Output,
        fut: &mut std::pin::Pin<&mut F>,
    ) -> Result<Result<Arc<Slate>, Option<T>>, Halt> {
        if let SlateCache::Unbuilt = o.slate {
            let shape = o.slate_shape();
            let (tx, rx) = tokio::sync::oneshot::channel();
            // A thread of its own, once per task: the shard's blocking pool may be
            // busy with the very reads that are late.
            let spawned = std::thread::Builder::new()
                .name("vodfleet-slate".into())
                .spawn(move || {
                    let built = Slate::build(shape).and_then(|s| {
                        for (track, p) in [Track::Video, Track::Audio].iter().zip(&s.params) {
                            if let Some(p) = p {
                                crate::frame::header(*track, p.codec_id(), p.extradata())?;
                            }
                        }
                        Ok(s)
                    });
                    let _ = tx.send(built);
                });
            o.slate = match spawned {
                Ok(_) => SlateCache::Building(rx),
                Err(e) => {
                    tracing::warn!(task.id = %self.spec.id, error = %e, "cannot start making the slate: waits for the source stay uncovered");
                    SlateCache::Unavailable
                }
            };
        }
        if let SlateCache::Building(rx) = &mut o.slate {
            let built = loop {
                tokio::select! {
                    biased;
                    c = self.control.recv() => match c {
                        Some(c) => self.obey(c)?,
                        None => return Err(Halt::Stop),
                    },
                    r = fut.as_mut() => return Ok(Err(Some(r))),
                    b = &mut *rx => break b,
                }
            };
            o.slate = match built {
                Ok(Ok(s)) => {
                    let (v, a) = s.bytes();
                    tracing::info!(task.id = %self.spec.id, video_bytes = v, audio_bytes = a, "slate made");
                    SlateCache::Ready(Arc::new(s))
                }
                Ok(Err(e)) => {
                    tracing::warn!(task.id = %self.spec.id, error = %e, "cannot make the slate: waits for the source stay uncovered");
                    SlateCache::Unavailable
                }
                Err(_) => SlateCache::Unavailable,
            };
        }
        Ok(match &o.slate {
            SlateCache::Ready(s) => Ok(s.clone()),
            _ => Err(None),
        })
    }

    /// Plays the slate from the end of what is on air until `fut` is done
    /// (its output in `result`); every packet placed on the timeline is sent.
    async fn play_slate<T, F: Future<Output = T>>(
        &mut self,
        o: &mut Output,
        slate: Option<&Slate>,
        fut: &mut std::pin::Pin<&mut F>,
        result: &mut Option<T>,
    ) -> Result<(), Halt> {
        let task = self.spec.id.clone();
        let fail = move |cause: String| {
            Halt::Fail(crate::error::WorkerError::Unsupported {
                task: task.clone(),
                cause: format!("slate: {cause}"),
            })
        };
        let from = o.timeline.reached();
        // Each track's slate starts where that track stopped (a read cut
        // mid-file leaves audio and video a few hundred ms apart).
        let lead = |t: Track| {
            o.timeline
                .reach_out(t)
                .map_or(0, |r| (r - from).clamp(-500_000, 0))
        };
        let (video_from, audio_from) = (lead(Track::Video), lead(Track::Audio));
        let mut run = slate.map(|s| slate::Run::starting(s, video_from, audio_from));
        // Copy mode: the slate's decode times run behind its pictures as the
        // item's did where it stopped, so DTS goes on without a hole; then that
        // delay moves (by half a frame per picture, DTS still growing) to the
        // one the item's keyframes have, which is what the item or the next
        // one starts with after the slate (a stall just after a P-frame decoded
        // ahead of its B-frames would otherwise leave a hole of those frames).
        let frame_us = slate.map_or(0, |s| s.frame_us());
        let mut delay = o.timeline.video_delay(frame_us);
        let target = o.key_delay.clamp(0, 500_000);
        if let Some(s) = slate {
            o.slate_headers(s).map_err(&fail)?;
        }
        o.timeline.begin_slate();
        let mut pkts = match &mut o.mode {
            Mode::Transcode(t) => t.slate_start(from).map_err(&fail)?,
            Mode::Copy => Vec::new(),
        };
        let mut counted = 0;
        let m = metrics::get();
        while result.is_none() {
            if pkts.is_empty() {
                pkts = match (&mut run, &mut o.mode) {
                    (Some(run), _) => {
                        let p = run.next_packet().ok_or_else(|| fail("empty".into()))?;
                        let dts = match p.track {
                            Track::Video => {
                                let step = frame_us / 2;
                                delay += (target - delay).clamp(-step, step);
                                p.pts_us - delay
                            }
                            Track::Audio => p.pts_us,
                        };
                        let (pts_us, dts_us) = o.timeline.place(p.track, p.pts_us, dts, p.dur_us);
                        vec![OutPacket {
                            packet: p.packet,
                            track: p.track,
                            key: p.key,
                            pts_us,
                            dts_us,
                        }]
                    }
                    (None, Mode::Transcode(t)) => {
                        let until = o.timeline.reached() + DRAW_STEP_US;
                        let drawn = t.slate_until(until).map_err(&fail)?;
                        let src_end = until - o.timeline.offset();
                        o.timeline.extend(Track::Video, src_end);
                        o.timeline.extend(Track::Audio, src_end);
                        drawn
                    }
                    (None, Mode::Copy) => return Err(fail("no slate in copy mode".into())),
                };
            }
            for p in std::mem::take(&mut pkts) {
                let send = self.send_slate(o, p);
                let mut send = std::pin::pin!(send);
                loop {
                    tokio::select! {
                        biased;
                        s = &mut send => { s?; break; }
                        r = fut.as_mut(), if result.is_none() => *result = Some(r),
                    }
                }
            }
            let covered = (o.timeline.reached() - from).max(0);
            m.slate_seconds.inc_by((covered - counted) as f64 / 1e6);
            counted = covered;
        }
        Ok(())
    }

    /// Sends one slate packet: DTS only grows per track; the position keeps
    /// the item and its offset, its output time follows the slate.
    async fn send_slate(&mut self, o: &mut Output, mut p: OutPacket) -> Result<(), Halt> {
        let last = &mut o.last_dts[p.track as usize];
        p.dts_us = p.dts_us.max(0).max(*last + 1);
        p.pts_us = p.pts_us.max(p.dts_us);
        *last = p.dts_us;
        let dts = p.dts_us;
        self.send(o, p).await?;
        self.status
            .position
            .lock()
            .expect("position lock")
            .timeline_ms = (dts / 1000).max(0) as u64;
        Ok(())
    }
}

/// A deadline that never comes (a wait with nothing to cover it).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
