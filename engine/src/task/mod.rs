//! One task's media pipeline, run on its own thread:
//!
//! source file → demux → (copy | decode → scale/fps → encode) → timeline →
//! pacer → fan-out to every destination.
//!
//! The playlist is walked item by item (from `first_item`, or from a resume
//! [`Position`], `loop_count` times or forever, until `end_ms`), each item cut
//! into its `relofftime` ranges. The first item that opens decides the output:
//! its H.264/AAC/MP3 streams are copied when the task has no `fops`, otherwise
//! they are encoded once with the task's settings.
//!
//! The control inbox is read between packets and during every pacing wait:
//! [`Control::Stop`], [`Control::StopForwards`] (some destinations) and
//! [`Control::Update`] (a new playlist, now or after the current item).

use crate::config::Config;
use crate::destination::{Destination, StreamSetup};
use crate::error::WorkerError;
use crate::event::{Event, Events, TaskStatus};
use crate::media::transcode::Transcoder;
use crate::media::{self, CodecId, OutPacket, SharedParams};
use crate::pacer::{Pacer, SystemClock};
use crate::source::Sources;
use crate::timeline::{Timeline, Track};
use ffmpeg_next as ff;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vodfleet_proto::command::{Cut, Range, SourceSpec};
use vodfleet_proto::{redact, Position, TaskSpec};

/// Orders for a running task.
#[derive(Debug)]
pub enum Control {
    /// Stop now: destinations close at once.
    Stop,
    /// Close the destinations with these URLs (as written in the spec); the others
    /// go on. Closing every remaining destination stops the task.
    StopForwards(Vec<String>),
    /// Replace the playlist: at the next packet, or once the current item ends
    /// (`wait_current`). The new list plays from its first item; the loop count
    /// and the output timeline go on.
    Update {
        sources: Vec<SourceSpec>,
        wait_current: bool,
    },
}

/// How a task run ended, and exactly where.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    /// The last packet handed to the destinations (the resume position).
    pub position: Position,
}

#[derive(Debug)]
pub enum End {
    /// The loop count was reached or `end_ms` passed.
    Finished,
    /// Stopped by [`Control::Stop`] or by stopping every destination.
    Stopped,
    Failed(WorkerError),
}

pub struct Task {
    spec: TaskSpec,
    cfg: Config,
    sources: Arc<Sources>,
    rt: tokio::runtime::Handle,
    events: Events,
    status: Arc<TaskStatus>,
    control: Receiver<Control>,
    /// Where to begin: `None` starts at `spec.first_item`.
    resume: Option<Position>,
    /// The resume offset, until the first item played has used it.
    resume_offset_ms: Option<u64>,
    /// Seek the resume offset to the nearest keyframe (an estimated position).
    resume_nearest: bool,
    /// Destinations asked to stop (by index into `spec.forwards`).
    stop_requested: Vec<bool>,
    /// A playlist waiting for its turn ([`Control::Update`]).
    update: Option<Vec<SourceSpec>>,
    /// `spec.end_ms` on the monotonic clock.
    end_at: Option<Instant>,
}

/// Why a segment or item stopped early.
enum Halt {
    Stop,
    /// `end_ms` passed: the task is finished.
    End,
    /// A new playlist replaces the current one now.
    Switch,
    Fail(WorkerError),
}

/// What became of one item.
enum Played {
    Yes,
    /// Its resume offset lies past its end: the next item goes on.
    Skipped,
}

/// What is produced once the first item is open: the output and its consumers.
struct Output {
    mode: Mode,
    setup: StreamSetup,
    /// Current codec configuration per track (changes at unlike seams in copy mode).
    config: [Option<Arc<Vec<u8>>>; 2],
    timeline: Timeline,
    pacer: Pacer<SystemClock>,
    dests: Vec<Destination>,
    /// Last DTS sent per track, for encoder output (copy mode goes through the timeline's own guard).
    last_dts: [i64; 2],
    /// The segment playing now (item, loop, its source origin), for positions in transcode mode.
    playing: (usize, u32, i64),
}

enum Mode {
    Copy,
    Transcode(Box<Transcoder>),
}

impl Task {
    pub fn new(
        spec: TaskSpec,
        cfg: Config,
        sources: Arc<Sources>,
        rt: tokio::runtime::Handle,
        events: Events,
        status: Arc<TaskStatus>,
        control: Receiver<Control>,
    ) -> Task {
        let end_at = spec.end_ms.map(|end| {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            Instant::now() + Duration::from_millis(end.saturating_sub(now_ms))
        });
        Task {
            stop_requested: vec![false; spec.forwards.len()],
            spec,
            cfg,
            sources,
            rt,
            events,
            status,
            control,
            resume: None,
            resume_offset_ms: None,
            resume_nearest: false,
            update: None,
            end_at,
        }
    }

    /// Starts from `at` instead of `first_item`: that item and loop, the keyframe at
    /// or before `offset_ms` (copy) or exactly there (transcode), and the output
    /// timeline at `timeline_ms`, so a player that survives the reconnect sees time
    /// go on. An offset past the item's end starts the next item.
    /// The resume position is an estimate (a failover): start at the keyframe
    /// nearest to it rather than the one before, which halves the worst error.
    pub fn resume_estimated(mut self, estimated: bool) -> Task {
        self.resume_nearest = estimated;
        self
    }

    pub fn resume_from(mut self, at: Option<Position>) -> Task {
        self.resume = at;
        self.resume_offset_ms = at.map(|p| p.offset_ms).filter(|&ms| ms > 0);
        if let Some(p) = at {
            *self.status.position.lock().expect("position lock") = p;
        }
        self
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn run(mut self) -> Outcome {
        let end = self.play();
        let position = self.status.position();
        Outcome { end, position }
    }

    fn play(&mut self) -> End {
        let mut n = self.spec.sources.len();
        let (mut item, mut pass) = match self.resume {
            Some(p) if p.item < n => (p.item, p.loop_index),
            // The list got shorter than the position: the next pass starts over.
            Some(p) => (0, p.loop_index + 1),
            None => (self.spec.first_item.min(n.saturating_sub(1)), 0),
        };
        let mut out: Option<Output> = None;
        let mut played_this_pass = false;
        let mut last_error: Option<WorkerError> = None;
        let outcome = loop {
            if self.spec.loop_count > 0 && pass >= self.spec.loop_count {
                break End::Finished;
            }
            if self.ended() {
                break End::Finished;
            }
            let spec = self.spec.sources[item].clone();
            let next = &self.spec.sources[(item + 1) % n];
            self.sources.prefetch(&next.url);
            match self.play_item(&mut out, item, pass, &spec) {
                Ok(Played::Yes) => played_this_pass = true,
                // Not a failure: the pass goes on from the next item.
                Ok(Played::Skipped) => played_this_pass = true,
                Err(Halt::Stop) => break End::Stopped,
                Err(Halt::End) => break End::Finished,
                Err(Halt::Switch) => {
                    let Some(list) = self.update.take() else {
                        continue;
                    };
                    tracing::info!(task.id = %self.spec.id, items = list.len(), "playlist replaced now");
                    self.spec.sources = list;
                    n = self.spec.sources.len();
                    item = 0;
                    played_this_pass = false;
                    continue;
                }
                Err(Halt::Fail(e)) => {
                    if matches!(e, WorkerError::AllDestinationsFailed { .. }) {
                        break End::Failed(e);
                    }
                    tracing::warn!(task.id = %self.spec.id, item, error = %e, "item failed; going on with the next");
                    let _ = self.events.send(Event::ItemFailed {
                        item,
                        loop_index: pass,
                        source: redact::source(&spec.url),
                        error: e.to_string(),
                    });
                    last_error = Some(e);
                }
            }
            if let Some(list) = self.update.take() {
                // Waited for the current item to end (waitCrtUrlFinish 1).
                tracing::info!(task.id = %self.spec.id, items = list.len(), "playlist replaced after the current item");
                self.spec.sources = list;
                n = self.spec.sources.len();
                item = 0;
                played_this_pass = false;
                continue;
            }
            item += 1;
            if item == n {
                item = 0;
                pass += 1;
                if !played_this_pass {
                    // A whole pass without a single playable item: nothing will ever play.
                    break End::Failed(last_error.take().expect("a failed pass has an error"));
                }
                played_this_pass = false;
            }
        };
        if let Some(mut o) = out {
            if let (End::Finished, Mode::Transcode(t)) = (&outcome, &mut o.mode) {
                // Encoders hold a few frames; send them before closing.
                let pkts = t.flush();
                let _ = self.send_all(&mut o, pkts);
            }
            let drain = matches!(outcome, End::Finished);
            for d in o.dests {
                d.close(drain);
            }
        }
        outcome
    }

    /// Whether `end_ms` has passed.
    fn ended(&self) -> bool {
        self.end_at.is_some_and(|e| Instant::now() >= e)
    }

    fn play_item(
        &mut self,
        out: &mut Option<Output>,
        item: usize,
        pass: u32,
        spec: &SourceSpec,
    ) -> Result<Played, Halt> {
        let task_id = self.spec.id.clone();
        let media_err = |offset_ms: u64, cause: String| {
            Halt::Fail(WorkerError::Media {
                task: task_id.clone(),
                item,
                url: redact::source(&spec.url),
                offset_ms,
                cause,
            })
        };
        let resume_ms = self.resume_offset_ms.take();
        let local = self.sources.local(&spec.url);
        let path = match self.end_at {
            None => self.rt.block_on(local),
            Some(end) => self.rt.block_on(async {
                tokio::select! {
                    r = local => Ok(r),
                    _ = tokio::time::sleep_until(end.into()) => Err(Halt::End),
                }
            })?,
        };
        // A stop during the download cancels it: report the stop, not the failure.
        self.control_pending()?;
        let path = path.map_err(|e| Halt::Fail((*e).clone()))?;
        let mut input =
            media::open_input(&path).map_err(|e| media_err(0, format!("cannot open: {e}")))?;
        let video = input
            .streams()
            .best(ff::media::Type::Video)
            .map(|s| s.index());
        let audio = input
            .streams()
            .best(ff::media::Type::Audio)
            .map(|s| s.index());
        if video.is_none() && audio.is_none() {
            return Err(media_err(0, "no audio or video stream".into()));
        }
        let mut ranges: Vec<Range> = match &spec.cut {
            Cut::Whole => vec![Range {
                start_ms: 0,
                end_ms: u64::MAX / 2000,
            }],
            Cut::Relative(r) => r.clone(),
            Cut::Absolute(_) => return Err(media_err(
                0,
                "absofftime needs the recording's start time, which this worker cannot read yet"
                    .into(),
            )),
        };
        if let Some(from) = resume_ms {
            let duration_ms = match input.duration() {
                d if d > 0 => (d / 1000) as u64, // AV_TIME_BASE = µs
                _ => u64::MAX,
            };
            ranges = resume_ranges(ranges, from, duration_ms);
            if ranges.is_empty() {
                tracing::info!(task.id = %self.spec.id, item, offset_ms = from, "resume offset is past the item's end; going on with the next item");
                return Ok(Played::Skipped);
            }
        }
        if out.is_none() {
            *out = Some(
                self.open_output(&input, video, audio)
                    .map_err(|c| media_err(0, c))?,
            );
        }
        let o = out.as_mut().expect("output is open");
        let _ = self.events.send(Event::ItemStarted {
            item,
            loop_index: pass,
            source: redact::source(&spec.url),
        });
        let (video, audio) = match &mut o.mode {
            Mode::Copy => copy_streams(&input, video, audio, o).map_err(|c| media_err(0, c))?,
            Mode::Transcode(t) => {
                t.open_item(&input, video, audio)
                    .map_err(|c| media_err(0, c))?;
                (video, audio)
            }
        };
        // SAFETY: reading a plain field of the format context `input` owns.
        let start_time = match unsafe { (*input.as_ptr()).start_time } {
            ff::ffi::AV_NOPTS_VALUE => 0,
            t => t, // AV_TIME_BASE = µs
        };
        for r in ranges {
            let mut seg = Segment {
                start: start_time + r.start_ms as i64 * 1000,
                end: start_time.saturating_add((r.end_ms as i64).saturating_mul(1000)),
                origin: start_time,
                item,
                pass,
                video,
                audio,
            };
            if r.start_ms > 0 {
                // The keyframe at or before the cut: copy mode starts there, transcode mode
                // decodes from there. An estimated resume point takes the nearest keyframe.
                let mut target = seg.start;
                if resume_ms.is_some() && std::mem::take(&mut self.resume_nearest) {
                    if let Some((seek, keyframe)) =
                        video.and_then(|v| media::nearest_keyframe(&input, v, seg.start))
                    {
                        target = seek;
                        seg.start = keyframe;
                    }
                }
                input
                    .seek(target, ..target + 1)
                    .map_err(|e| media_err(r.start_ms, format!("seek failed: {e}")))?;
            }
            self.play_segment(&mut input, o, &seg)
                .map_err(|h| match h {
                    Halt::Fail(WorkerError::Media { cause, .. }) => media_err(r.start_ms, cause),
                    other => other,
                })?;
        }
        Ok(Played::Yes)
    }

    fn open_output(
        &self,
        input: &ff::format::context::Input,
        video: Option<usize>,
        audio: Option<usize>,
    ) -> Result<Output, String> {
        let wants_transcode = self.spec.transcode.is_some()
            || self.spec.sources.iter().any(|s| s.watermark.is_some());
        if self.spec.sources.iter().any(|s| s.watermark.is_some()) {
            return Err("watermarks are not supported by this worker yet".into());
        }
        let params = |i: Option<usize>| i.and_then(|i| input.stream(i)).map(|s| s.parameters());
        let copyable = params(video).is_none_or(|p| p.id() == CodecId::H264)
            && params(audio).is_none_or(|p| matches!(p.id(), CodecId::AAC | CodecId::MP3));
        let (mode, setup) = if wants_transcode || !copyable {
            let settings =
                self.spec
                    .transcode
                    .clone()
                    .unwrap_or(vodfleet_proto::command::Transcode {
                        width: None,
                        height: None,
                        fps: None,
                        video_kbps: None,
                        vcodec: vodfleet_proto::command::VideoCodec::H264,
                        acodec: vodfleet_proto::command::AudioCodec::Aac,
                    });
            let t = Transcoder::new(input, video, audio, &settings, self.timeline_base_us())?;
            let setup = t.setup();
            (Mode::Transcode(Box::new(t)), setup)
        } else {
            let setup = StreamSetup {
                video: params(video).map(SharedParams),
                audio: params(audio).map(SharedParams),
            };
            (Mode::Copy, setup)
        };
        let config = [
            setup
                .video
                .as_ref()
                .map(|p| Arc::new(p.extradata().to_vec())),
            setup
                .audio
                .as_ref()
                .map(|p| Arc::new(p.extradata().to_vec())),
        ];
        let _ = self.events.send(Event::TaskStarted {
            task_id: self.spec.id.clone(),
            mode: if matches!(mode, Mode::Copy) {
                "copy"
            } else {
                "transcode"
            },
        });
        let dests = self
            .spec
            .forwards
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if self.stop_requested[i] {
                    // Stopped before the output opened: never connect it.
                    Destination::stopped()
                } else {
                    Destination::spawn(i, &f.url, setup.clone(), &self.cfg, self.events.clone())
                }
            })
            .collect::<Vec<Destination>>();
        *self.status.destinations.lock().expect("status lock") =
            dests.iter().map(|d| d.status.clone()).collect();
        Ok(Output {
            mode,
            setup,
            config,
            timeline: Timeline::starting_at(self.timeline_base_us()),
            pacer: Pacer::new(SystemClock, self.cfg.initial_burst),
            dests,
            last_dts: [-1, -1],
            playing: (0, 0, 0),
        })
    }

    /// Where the output timeline starts (µs): a resumed task goes on from its position.
    fn timeline_base_us(&self) -> i64 {
        self.resume
            .map_or(0, |p| (p.timeline_ms as i64).saturating_mul(1000))
    }

    /// Plays one range of one item.
    fn play_segment(
        &mut self,
        input: &mut ff::format::context::Input,
        o: &mut Output,
        seg: &Segment,
    ) -> Result<(), Halt> {
        let tbs: Vec<ff::Rational> = input.streams().map(|s| s.time_base()).collect();
        let mut pending: Vec<(Track, ff::Packet, i64, i64, i64)> = Vec::new();
        let mut begun = false;
        // Audio before the segment's first keyframe would play before its picture exists.
        let mut floor = i64::MIN;
        // Copy mode: where the video stopped (source PTS) and audio held past the cut.
        let mut video_stop = i64::MAX;
        let mut tail: Vec<(Track, ff::Packet, i64, i64, i64)> = Vec::new();
        let (mut video_done, mut audio_done) = (seg.video.is_none(), seg.audio.is_none());
        let transcoding = matches!(o.mode, Mode::Transcode(_));
        o.playing = (seg.item, seg.pass, seg.origin);
        if transcoding {
            // Decoding starts at the keyframe before the cut; frames before the cut are
            // decoded but dropped, so the output starts exactly at the cut.
            o.timeline.begin(seg.start, seg.start);
            begun = true;
        }
        for (stream, packet) in input.packets() {
            self.control_pending()?;
            let idx = stream.index();
            let track = if Some(idx) == seg.video {
                Track::Video
            } else if Some(idx) == seg.audio {
                Track::Audio
            } else {
                continue;
            };
            let tb = tbs[idx];
            let us = |v: i64| v * 1_000_000 * tb.0 as i64 / tb.1 as i64;
            let Some(dts) = packet.dts().or(packet.pts()).map(us) else {
                continue;
            };
            let pts = packet.pts().map(us).unwrap_or(dts);
            let dur = us(packet.duration());

            if let Mode::Transcode(t) = &mut o.mode {
                if dts >= seg.end.saturating_add(1_000_000) {
                    // Well past the cut (decoder delay included): this segment is done.
                    break;
                }
                let frames_out = t
                    .decode(track, &packet, seg, &mut o.timeline)
                    .map_err(|c| self.seg_err(seg, pts, c))?;
                self.send_all(o, frames_out)?;
                continue;
            }

            // Copy mode.
            match track {
                Track::Video => {
                    if !begun {
                        if !packet.is_key() {
                            continue;
                        }
                        // The segment starts at its first keyframe; queued audio from before it is dropped.
                        o.timeline.begin(pts, dts.min(pts));
                        begun = true;
                        floor = pts;
                        let start = pts;
                        for (t, p, ppts, pdts, pdur) in std::mem::take(&mut pending) {
                            if ppts >= start && ppts < seg.end {
                                self.emit(o, t, p, ppts, pdts, pdur, seg)?;
                            }
                        }
                    }
                    if video_done {
                        continue;
                    }
                    if pts >= seg.end && packet.is_key() {
                        // The range ends just before the first keyframe at or after the cut: every
                        // frame kept decodes, and none is missing in presentation order.
                        video_done = true;
                        video_stop = pts;
                        for (t, p, ppts, pdts, pdur) in std::mem::take(&mut tail) {
                            if ppts < video_stop {
                                self.emit(o, t, p, ppts, pdts, pdur, seg)?;
                            } else {
                                audio_done = true;
                            }
                        }
                    } else {
                        self.emit(o, track, packet, pts, dts, dur, seg)?;
                    }
                }
                Track::Audio => {
                    if !begun {
                        if seg.video.is_some() {
                            if pending.len() >= HOLD_LIMIT {
                                pending.remove(0);
                            }
                            pending.push((track, packet, pts, dts, dur));
                            continue;
                        }
                        o.timeline.begin(pts.max(seg.start), dts.min(pts));
                        begun = true;
                    }
                    if audio_done || pts < floor {
                        continue;
                    }
                    let stop = if seg.video.is_some() {
                        video_stop
                    } else {
                        seg.end
                    };
                    if pts >= stop {
                        audio_done = true;
                    } else if pts >= seg.end && !video_done {
                        // Past the cut, but the video runs on to its next keyframe: hold
                        // the audio until we know where the picture stops.
                        if tail.len() >= HOLD_LIMIT {
                            tail.remove(0);
                        }
                        tail.push((track, packet, pts, dts, dur));
                    } else {
                        self.emit(o, track, packet, pts, dts, dur, seg)?;
                    }
                }
            }
            if video_done && audio_done {
                break;
            }
        }
        // The file ended before a keyframe past the cut: the held audio belongs to the picture.
        for (t, p, ppts, pdts, pdur) in std::mem::take(&mut tail) {
            self.emit(o, t, p, ppts, pdts, pdur, seg)?;
        }
        if let Mode::Transcode(t) = &mut o.mode {
            let pkts = t
                .end_segment(seg, &mut o.timeline)
                .map_err(|c| self.seg_err(seg, seg.start, c))?;
            self.send_all(o, pkts)?;
        }
        Ok(())
    }

    fn seg_err(&self, seg: &Segment, pts: i64, cause: String) -> Halt {
        Halt::Fail(WorkerError::Media {
            task: self.spec.id.clone(),
            item: seg.item,
            url: redact::source(&self.spec.sources[seg.item].url),
            offset_ms: ((pts - seg.origin).max(0) / 1000) as u64,
            cause,
        })
    }

    /// Places a demuxed packet on the timeline and sends it (copy mode).
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        o: &mut Output,
        track: Track,
        packet: ff::Packet,
        pts: i64,
        dts: i64,
        dur: i64,
        seg: &Segment,
    ) -> Result<(), Halt> {
        let key = packet.is_key();
        let (opts, odts) = o.timeline.place(track, pts, dts, dur);
        let out = OutPacket {
            packet,
            track,
            key,
            pts_us: opts,
            dts_us: odts,
            config: o.config[track as usize].clone(),
        };
        self.send(o, out)?;
        self.set_position(seg.item, seg.pass, pts - seg.origin, odts);
        Ok(())
    }

    /// Sends packets that are already on the output timeline (transcode mode).
    fn send_all(&mut self, o: &mut Output, pkts: Vec<OutPacket>) -> Result<(), Halt> {
        for mut p in pkts {
            // Encoders may start below zero (AAC priming) and must never go back per track.
            let last = &mut o.last_dts[p.track as usize];
            p.dts_us = p.dts_us.max(0).max(*last + 1);
            p.pts_us = p.pts_us.max(p.dts_us);
            *last = p.dts_us;
            let dts = p.dts_us;
            self.send(o, p)?;
            // Encoded packets carry output time only; the timeline maps it back to the item.
            let (item, pass, origin) = o.playing;
            self.set_position(item, pass, o.timeline.source_time(dts) - origin, dts);
        }
        Ok(())
    }

    fn send(&mut self, o: &mut Output, mut p: OutPacket) -> Result<(), Halt> {
        if p.config.is_none() {
            p.config = o.config[p.track as usize].clone();
        }
        // Packets due within the slack go now: one wake-up sends a few packets (and
        // each destination drains them in one go) instead of one wake-up per packet.
        let deadline = o
            .pacer
            .deadline(p.dts_us)
            .checked_sub(PACING_SLACK)
            .unwrap_or_else(|| o.pacer.now());
        loop {
            let now = o.pacer.now();
            if self.end_at.is_some_and(|e| now >= e) {
                return Err(Halt::End);
            }
            if now >= deadline {
                break;
            }
            let until = self.end_at.map_or(deadline, |e| e.min(deadline));
            // The only wait in the pipeline: it ends at the deadline, at `end_ms` or on a control message.
            match self.control.recv_timeout(until - now) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(c) => self.obey(c)?,
                Err(RecvTimeoutError::Disconnected) => return Err(Halt::Stop),
            }
        }
        self.close_stopped(o);
        self.status
            .set_lag(o.pacer.lag(p.dts_us).as_millis() as u64);
        let p = Arc::new(p);
        for d in &mut o.dests {
            d.offer(&p);
        }
        if o.dests.iter().all(|d| !d.alive()) {
            return Err(Halt::Fail(WorkerError::AllDestinationsFailed {
                task: self.spec.id.clone(),
            }));
        }
        Ok(())
    }

    /// Closes the destinations a [`Control::StopForwards`] named (each reports `stopped`).
    fn close_stopped(&self, o: &mut Output) {
        for (d, stop) in o.dests.iter_mut().zip(&self.stop_requested) {
            if *stop && d.alive() {
                d.halt();
            }
        }
    }

    /// Records the last packet handed to the destinations (`src_us`: its offset in the item).
    fn set_position(&self, item: usize, pass: u32, src_us: i64, out_dts: i64) {
        let mut p = self.status.position.lock().expect("position lock");
        let offset_ms = (src_us.max(0) / 1000) as u64;
        // With B-frames, packets leave in decode order: a packet's PTS can be below
        // one already sent. The position is the furthest picture sent, so a small
        // step back within the same item is reordering and is not a new position
        // (a jump back by more than that is a new range or a new pass).
        let reordered = p.item == item
            && p.loop_index == pass
            && offset_ms < p.offset_ms
            && p.offset_ms - offset_ms < REORDER_WINDOW_MS;
        *p = Position {
            item,
            loop_index: pass,
            offset_ms: if reordered { p.offset_ms } else { offset_ms },
            timeline_ms: (out_dts / 1000).max(0) as u64,
        };
    }

    /// Handles waiting control messages, and `end_ms`, without waiting.
    fn control_pending(&mut self) -> Result<(), Halt> {
        loop {
            match self.control.try_recv() {
                Ok(c) => self.obey(c)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(Halt::Stop),
            }
        }
        if self.ended() {
            return Err(Halt::End);
        }
        Ok(())
    }

    /// Applies one control message; an `Err` ends the current item.
    fn obey(&mut self, c: Control) -> Result<(), Halt> {
        match c {
            Control::Stop => Err(Halt::Stop),
            Control::StopForwards(urls) => {
                for url in &urls {
                    let mut found = false;
                    for (i, f) in self.spec.forwards.iter().enumerate() {
                        if &f.url == url {
                            self.stop_requested[i] = true;
                            found = true;
                        }
                    }
                    if !found {
                        tracing::warn!(task.id = %self.spec.id, destination = %redact::destination(url), "asked to stop a destination this task does not have");
                    }
                }
                if self.stop_requested.iter().all(|s| *s) {
                    tracing::info!(task.id = %self.spec.id, "every destination stopped: stopping the task");
                    return Err(Halt::Stop);
                }
                Ok(())
            }
            Control::Update {
                sources,
                wait_current,
            } => {
                if sources.is_empty() {
                    tracing::warn!(task.id = %self.spec.id, "ignoring an update with an empty playlist");
                    return Ok(());
                }
                self.update = Some(sources);
                if wait_current {
                    Ok(())
                } else {
                    Err(Halt::Switch)
                }
            }
        }
    }
}

/// The ranges of an item that remain when playback resumes at `from_ms`: those
/// ending after it, the first one starting there. Nothing is left when `from_ms`
/// is at or past the media's end.
fn resume_ranges(ranges: Vec<Range>, from_ms: u64, duration_ms: u64) -> Vec<Range> {
    if from_ms >= duration_ms {
        return Vec::new();
    }
    ranges
        .into_iter()
        .filter(|r| r.end_ms > from_ms)
        .map(|r| Range {
            start_ms: r.start_ms.max(from_ms),
            end_ms: r.end_ms,
        })
        .collect()
}

/// How early a packet may leave before its real-time deadline. Far below the
/// initial burst players already buffer, and it cuts wake-ups per stream by ~3×.
const PACING_SLACK: std::time::Duration = std::time::Duration::from_millis(40);

/// Decode order runs behind presentation by at most a few frames (B-frames).
const REORDER_WINDOW_MS: u64 = 500;

/// Packets held while waiting for a keyframe (bounded: a broken file cannot grow it).
const HOLD_LIMIT: usize = 1024;

/// One contiguous range of one item, in source microseconds.
pub struct Segment {
    pub start: i64,
    pub end: i64,
    /// The item's own zero (its container start time).
    pub origin: i64,
    pub item: usize,
    pub pass: u32,
    pub video: Option<usize>,
    pub audio: Option<usize>,
}

/// Checks that an item can be copied into the task's output, and notes a new
/// codec configuration when it differs from the previous item's.
fn copy_streams(
    input: &ff::format::context::Input,
    video: Option<usize>,
    audio: Option<usize>,
    o: &mut Output,
) -> Result<(Option<usize>, Option<usize>), String> {
    let mut keep = |idx: Option<usize>,
                    want: Option<&SharedParams>,
                    slot: usize,
                    what: &str|
     -> Result<Option<usize>, String> {
        let (Some(i), Some(want)) = (idx, want) else {
            return Ok(None);
        };
        let p = input
            .stream(i)
            .expect("stream index from this input")
            .parameters();
        if p.id() != want.codec_id() {
            return Err(format!(
                "{what} codec {:?} differs from the stream's {:?}; add fops to transcode mixed playlists",
                p.id(),
                want.codec_id()
            ));
        }
        let extra = SharedParams(p).extradata().to_vec();
        if o.config[slot].as_deref() != Some(&extra) {
            o.config[slot] = Some(Arc::new(extra));
        }
        Ok(Some(i))
    };
    let v = keep(video, o.setup.video.as_ref(), 0, "video")?;
    let a = keep(audio, o.setup.audio.as_ref(), 1, "audio")?;
    if v.is_none() && a.is_none() {
        return Err("no stream this task's output can carry".into());
    }
    Ok((v, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start_ms: u64, end_ms: u64) -> Range {
        Range { start_ms, end_ms }
    }

    #[test]
    fn resuming_keeps_the_rest_of_the_ranges() {
        let cuts = vec![r(0, 10_000), r(20_000, 30_000), r(40_000, 50_000)];
        assert_eq!(
            resume_ranges(cuts.clone(), 25_000, 60_000),
            vec![r(25_000, 30_000), r(40_000, 50_000)],
            "inside a range: from the offset"
        );
        assert_eq!(
            resume_ranges(cuts.clone(), 15_000, 60_000),
            vec![r(20_000, 30_000), r(40_000, 50_000)],
            "between ranges: from the next one"
        );
        assert!(
            resume_ranges(cuts, 50_000, 60_000).is_empty(),
            "after the last range"
        );
        let whole = vec![r(0, u64::MAX / 2000)];
        assert_eq!(
            resume_ranges(whole.clone(), 4_000, 9_000)[0].start_ms,
            4_000
        );
        assert!(
            resume_ranges(whole, 9_000, 9_000).is_empty(),
            "at or past the media's end: nothing (the next item plays)"
        );
    }
}
