//! Playing one item: open it, cut it into ranges, demux, place every packet on
//! the task's timeline, pace it and fan it out.

use super::cover::Wait;
use super::{Halt, Placement, Task};
use crate::cut::{self, Gate};
use crate::destination::Destination;
use crate::error::{Fault, MediaError, WorkerError};
use crate::event::Event;
use crate::media::demux::{ReadAhead, TimingCheck};
use crate::media::transcode::Transcoder;
use crate::media::{self, watermark, OutPacket, SharedParams, StreamSetup};
use crate::output::{self, Mode, Output, Resync};
use crate::plan::{self, Played, Segment};
use crate::timeline::Track;
use ffmpeg_next as ff;
use std::sync::Arc;
use vodfleet_proto::command::{Cut, SourceSpec, WatermarkPosition};
use vodfleet_proto::redact;

impl Task {
    pub(super) async fn play_item(
        &mut self,
        out: &mut Option<Output>,
        item: usize,
        pass: u32,
        spec: &SourceSpec,
    ) -> Result<Played, Halt> {
        let task_id = self.spec.id.clone();
        let media_err = |offset_ms: u64, e: MediaError| {
            Halt::Fail(WorkerError::Media {
                task: task_id.clone(),
                item,
                url: redact::source(&spec.url),
                offset_ms,
                fault: e.fault,
                cause: e.cause,
            })
        };
        let bad = |cause: String| MediaError::new(Fault::BadMedia, cause);
        // Both waits are covered by the slate while something is on air (cover.rs).
        let sources = self.sources.clone();
        let local = sources.open(&spec.url);
        let (path, _) = self
            .waiting(out.as_mut(), Wait::Download, (item, pass), local)
            .await?;
        // A stop during the download cancels it: report the stop, not the failure.
        self.control_pending()?;
        let path = path.map_err(|e| Halt::Fail((*e).clone()))?;
        // Opening probes the file: a few reads, off the shard's event loop.
        let open = tokio::task::spawn_blocking(move || media::open_input(path));
        let (input, _) = self
            .waiting(out.as_mut(), Wait::Open, (item, pass), open)
            .await?;
        let input = input
            .map_err(|e| {
                media_err(
                    0,
                    MediaError::new(Fault::Local, format!("cannot open: {e}")),
                )
            })?
            .map_err(|e| media_err(0, bad(format!("cannot open: {e}"))))?;
        let video = input
            .streams()
            .best(ff::media::Type::Video)
            .map(|s| s.index());
        let audio = input
            .streams()
            .best(ff::media::Type::Audio)
            .map(|s| s.index());
        if video.is_none() && audio.is_none() {
            return Err(media_err(0, bad("no audio or video stream".into())));
        }
        let duration_ms = match input.duration() {
            d if d > 0 => (d / 1000) as u64, // AV_TIME_BASE = µs
            _ => u64::MAX,
        };
        let mut ranges = match &spec.cut {
            Cut::Whole => plan::whole(),
            Cut::Relative(r) => r.clone(),
            Cut::Absolute(abs) => {
                let start = self
                    .sources
                    .recording_start(&spec.url)
                    .or_else(|| media::recording_start_ms(&input))
                    .ok_or_else(|| {
                        media_err(0, bad("absofftime: the recording states no start time (mp4 creation_time, FLV onMetaData creationdate or HLS EXT-X-PROGRAM-DATE-TIME)".into()))
                    })?;
                let r = plan::absolute_ranges(abs, start, duration_ms);
                if r.is_empty() {
                    return Err(media_err(
                        0,
                        bad(format!(
                            "absofftime: no range falls within the recording, which starts at {}{}",
                            vodfleet_proto::civil::iso8601_utc(start),
                            match duration_ms {
                                u64::MAX => String::new(),
                                d => format!(" and lasts {} s", d / 1000),
                            }
                        )),
                    ));
                }
                r
            }
        };
        let resume_ms = self.resume_offset_ms;
        if let Some(from) = resume_ms {
            ranges = plan::resume_ranges(ranges, from, duration_ms);
            if ranges.is_empty() {
                self.resume_offset_ms = None;
                tracing::info!(task.id = %self.spec.id, item, offset_ms = from, "resume offset is past the item's end; going on with the next item");
                return Ok(Played::Skipped);
            }
        }
        if out.is_none() {
            // Media failures name the item, its source and the offset here.
            *out = Some(
                self.open_output(&input, video, audio)
                    .map_err(|h| match h {
                        Halt::Fail(WorkerError::Media { fault, cause, .. }) => {
                            media_err(0, MediaError { fault, cause })
                        }
                        other => other,
                    })?,
            );
        }
        self.resume_offset_ms = None;
        let o = out.as_mut().expect("output is open");
        let _ = self.events.send(Event::ItemStarted {
            item,
            loop_index: pass,
            source: redact::source(&spec.url),
        });
        let (video, audio) = match &mut o.mode {
            Mode::Copy => {
                let c = o
                    .copy_streams(&input, video, audio)
                    .map_err(|c| media_err(0, MediaError::new(Fault::Unsupported, c)))?;
                o.conform_item(&input, &c).map_err(|e| {
                    let cause = format!("cannot conform the item to the stream's codecs: {e}");
                    media_err(0, MediaError::new(Fault::Codec, cause))
                })?;
                self.log_conform(&input, &c, item);
                (c.video, c.audio)
            }
            Mode::Transcode(t) => {
                let image = match &spec.watermark {
                    None => None,
                    Some(w) => Some(self.watermark(&w.image_url).await.map_err(|e| {
                        media_err(
                            0,
                            MediaError::new(e.fault, format!("watermark image: {}", e.cause)),
                        )
                    })?),
                };
                let position = spec.watermark.as_ref().map(|w| w.position);
                t.set_watermark(image, position.unwrap_or(WatermarkPosition::TopLeft));
                t.open_item(&input, video, audio)
                    .map_err(|c| media_err(0, MediaError::new(Fault::Codec, c)))?;
                (video, audio)
            }
        };
        // SAFETY: reading a plain field of the format context `input` owns.
        let start_time = match unsafe { (*input.as_ptr()).start_time } {
            ff::ffi::AV_NOPTS_VALUE => 0,
            t => t, // AV_TIME_BASE = µs
        };
        // From here on the demuxer reads ahead, off this thread.
        let mut reader = ReadAhead::new(input);
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
                // A source still arriving (an RTSP pull) first holds the cut's start:
                // the seek reads forward to it on this thread (docs/design/sources.md, "RTSP").
                let sources = self.sources.clone();
                let holds = sources.holds(&spec.url, r.start_ms);
                self.waiting(Some(&mut *o), Wait::Read, (item, pass), holds)
                    .await?;
                let (input, _) = self
                    .waiting(Some(&mut *o), Wait::Read, (item, pass), reader.input())
                    .await?;
                let input = input.map_err(|e| media_err(r.start_ms, e))?;
                if resume_ms.is_some() && std::mem::take(&mut self.resume_nearest) {
                    if let Some((seek, keyframe)) =
                        video.and_then(|v| media::nearest_keyframe(input, v, seg.start))
                    {
                        target = seek;
                        seg.start = keyframe;
                    }
                }
                input
                    .seek(target, ..target + 1)
                    .map_err(|e| media_err(r.start_ms, bad(format!("seek failed: {e}"))))?;
            }
            self.play_segment(&mut reader, o, &seg).await?;
        }
        // The conforming encoders hold the item's last frames.
        let pkts = o.end_conform();
        self.send_all(o, pkts).await?;
        Ok(Played::Yes)
    }

    /// The decoded watermark image at `url`: fetched like a source (under the
    /// URL policy), decoded off the event loop, kept for the task's next items.
    async fn watermark(&mut self, url: &str) -> Result<Arc<watermark::Image>, MediaError> {
        if let Some(img) = self.watermarks.get(url) {
            return Ok(img.clone());
        }
        let path = self
            .sources
            .local(url)
            .await
            .map_err(|e| MediaError::new(e.fault(), e.to_string()))?;
        let img = tokio::task::spawn_blocking(move || watermark::load(&path))
            .await
            .map_err(|e| MediaError::new(Fault::Local, e.to_string()))?
            .map_err(|c| MediaError::new(Fault::BadMedia, c))?;
        let img = Arc::new(img);
        self.watermarks.insert(url.to_owned(), img.clone());
        Ok(img)
    }

    /// Logs which path a copy-mode item took when a track of it is
    /// conformed (docs/design/timeline.md, "Seams").
    fn log_conform(&self, input: &ff::format::context::Input, c: &output::Copied, item: usize) {
        let codec = |i: Option<usize>| {
            i.and_then(|i| input.stream(i))
                .map(|s| format!("{:?}", s.parameters().id()))
                .unwrap_or_default()
        };
        if c.conform_video {
            let audio = if c.conform_audio {
                "transcoded to AAC"
            } else {
                "copied"
            };
            tracing::info!(task.id = %self.spec.id, item, codec = %codec(c.video), "the item's video is not the stream's H.264: conforming its video (decoded and encoded to H.264 at the stream's size and frame rate, audio {audio})");
        } else if c.conform_audio {
            tracing::info!(task.id = %self.spec.id, item, codec = %codec(c.audio), "the item's audio is not the stream's AAC: conforming it (audio transcoded to AAC, video copied)");
        }
    }

    fn open_output(
        &mut self,
        input: &ff::format::context::Input,
        video: Option<usize>,
        audio: Option<usize>,
    ) -> Result<Output, Halt> {
        let task_id = self.spec.id.clone();
        let media_fail = |fault: Fault| {
            let task = task_id.clone();
            move |cause: String| {
                Halt::Fail(WorkerError::Media {
                    task,
                    item: 0,
                    url: String::new(),
                    offset_ms: 0,
                    fault,
                    cause,
                })
            }
        };
        let params = |i: Option<usize>| i.and_then(|i| input.stream(i)).map(|s| s.parameters());
        let fps = video
            .and_then(|i| input.stream(i))
            .map(|s| s.avg_frame_rate())
            .filter(|r| r.1 > 0 && r.0 > 0)
            .map(|r| r.0 as f64 / r.1 as f64);
        // A watermark is drawn into decoded pictures: its task transcodes.
        let watermarked = self.spec.sources.iter().any(|s| s.watermark.is_some());
        let copy = self.spec.transcode.is_none()
            && !watermarked
            && output::copyable(params(video).as_ref(), params(audio).as_ref());
        if !copy && self.placement == Placement::Shard {
            tracing::info!(task.id = %self.spec.id, "the source needs transcoding: moving the task to a thread of its own");
            return Err(Halt::Migrate);
        }
        let (mode, setup) = if copy {
            let setup = StreamSetup {
                video: params(video).map(SharedParams),
                audio: params(audio).map(SharedParams),
            };
            (Mode::Copy, setup)
        } else {
            let settings = self.spec.transcode.clone().unwrap_or_default();
            let t = Transcoder::new(input, video, audio, &settings, self.timeline_base_us())
                .map_err(media_fail(Fault::Codec))?;
            let setup = t.setup();
            (Mode::Transcode(Box::new(t)), setup)
        };
        let fps = match &self.spec.transcode {
            Some(t) => t
                .fps
                .filter(|f| f.1 > 0)
                .map(|f| f.0 as f64 / f.1 as f64)
                .or(fps),
            None => fps,
        };
        let _ = self.events.send(Event::TaskStarted {
            task_id: self.spec.id.clone(),
            mode: if matches!(mode, Mode::Copy) {
                "copy"
            } else {
                "transcode"
            },
        });
        let mut o = Output::new(
            mode,
            setup,
            fps,
            self.timeline_base_us(),
            self.cfg.initial_burst,
        )
        .map_err(media_fail(Fault::Unsupported))?;
        let takeover = self.takeover.then_some(self.cfg.destination_takeover);
        let setup = o.destination_setup(self.publish.clone(), takeover);
        o.dests = self
            .spec
            .forwards
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if self.stop_requested[i] {
                    // Stopped before the output opened: never connect it.
                    Destination::stopped()
                } else {
                    Destination::spawn(
                        &self.spec.id,
                        i,
                        &f.url,
                        setup.clone(),
                        &self.cfg,
                        self.events.clone(),
                    )
                }
            })
            .collect();
        *self.status.destinations.lock().expect("status lock") =
            o.dests.iter().map(|d| d.status.clone()).collect();
        Ok(o)
    }

    /// Where the output timeline starts (µs): a resumed task goes on from its position.
    fn timeline_base_us(&self) -> i64 {
        self.resume
            .map_or(0, |p| (p.timeline_ms as i64).saturating_mul(1000))
    }

    /// Plays one range of one item.
    async fn play_segment(
        &mut self,
        reader: &mut ReadAhead,
        o: &mut Output,
        seg: &Segment,
    ) -> Result<(), Halt> {
        let mut gate: Gate<ff::Packet> =
            Gate::new(seg.start, seg.end, seg.video.is_some(), seg.audio.is_some());
        let mut on_air = Vec::new();
        let transcoding = matches!(o.mode, Mode::Transcode(_));
        o.playing = (seg.item, seg.pass, seg.origin);
        o.resync = Resync::No;
        if transcoding {
            // Decoding starts at the keyframe before the cut; frames before the cut are
            // decoded but dropped, so the output starts exactly at the cut.
            o.timeline.begin(seg.start, seg.start);
        }
        // Where the source was last read (µs): a read failure names it.
        let mut last_pts = seg.start;
        let mut timing = TimingCheck::default();
        loop {
            self.control_pending()?;
            // Waiting for a read answers control messages too; a late one is
            // covered by the slate (cover.rs).
            let (packet, _) = self
                .waiting(
                    Some(&mut *o),
                    Wait::Read,
                    (seg.item, seg.pass),
                    reader.next(),
                )
                .await?;
            let packet = match packet {
                Ok(Some(p)) => p,
                Ok(None) => {
                    let played: Vec<(usize, usize)> = [seg.video, seg.audio]
                        .into_iter()
                        .enumerate()
                        .filter_map(|(t, i)| Some((t, i?)))
                        .collect();
                    timing
                        .at_end(reader, &played, seg.start, seg.end)
                        .map_err(|e| self.seg_err(seg, last_pts, e))?;
                    break;
                }
                Err(e) => return Err(self.seg_err(seg, last_pts, e)),
            };
            let idx = packet.stream();
            let track = if Some(idx) == seg.video {
                Track::Video
            } else if Some(idx) == seg.audio {
                Track::Audio
            } else {
                continue;
            };
            let tb = reader.time_base(idx);
            // In i128 and clamped: a crafted file's timestamps must not overflow.
            let us = |v: i64| {
                (v as i128 * 1_000_000 * tb.0 as i128 / (tb.1 as i128).max(1))
                    .clamp(i64::MIN as i128 / 4, i64::MAX as i128 / 4) as i64
            };
            let Some(dts) = packet.dts().or(packet.pts()).map(us) else {
                continue;
            };
            let pts = packet.pts().map(us).unwrap_or(dts);
            let dur = us(packet.duration());
            timing
                .packet(track as usize, dts, pts, dur)
                .map_err(|e| self.seg_err(seg, last_pts, e))?;
            last_pts = pts;

            if let Mode::Transcode(t) = &mut o.mode {
                if dts >= seg.end.saturating_add(1_000_000) {
                    // Well past the cut (decoder delay included): this segment is done.
                    break;
                }
                let frames_out = t
                    .decode(track, &packet, seg, &mut o.timeline)
                    .map_err(|c| self.seg_err(seg, pts, MediaError::new(Fault::Codec, c)))?;
                self.send_all(o, frames_out).await?;
                continue;
            }
            let key = packet.is_key();
            let p = cut::Packet {
                track,
                key,
                pts,
                dts,
                dur,
                data: packet,
            };
            let step = gate.push(p, &mut on_air);
            if let Some((src_start, first_dts)) = step.begin {
                o.timeline.begin(src_start, first_dts);
            }
            for p in on_air.drain(..) {
                self.emit(o, p, seg).await?;
            }
            if step.done {
                break;
            }
        }
        if transcoding {
            if let Mode::Transcode(t) = &mut o.mode {
                let pkts = t
                    .end_segment(seg, &mut o.timeline)
                    .map_err(|c| self.seg_err(seg, seg.start, MediaError::new(Fault::Codec, c)))?;
                self.send_all(o, pkts).await?;
            }
        } else {
            gate.finish(&mut on_air);
            for p in on_air.drain(..) {
                self.emit(o, p, seg).await?;
            }
            if let Some(t) = &mut o.conform {
                let range = conform_range(&o.timeline, seg);
                let pkts = t
                    .end_segment(&range, &mut o.timeline)
                    .map_err(|c| self.seg_err(seg, seg.start, MediaError::new(Fault::Codec, c)))?;
                self.send_all(o, pkts).await?;
            }
        }
        Ok(())
    }

    fn seg_err(&self, seg: &Segment, pts: i64, e: MediaError) -> Halt {
        Halt::Fail(WorkerError::Media {
            task: self.spec.id.clone(),
            item: seg.item,
            url: redact::source(&self.spec.sources[seg.item].url),
            offset_ms: ((pts - seg.origin).max(0) / 1000) as u64,
            fault: e.fault,
            cause: e.cause,
        })
    }

    /// Places a demuxed packet on the timeline and sends it (copy mode).
    async fn emit(
        &mut self,
        o: &mut Output,
        p: cut::Packet<ff::Packet>,
        seg: &Segment,
    ) -> Result<(), Halt> {
        match o.resync {
            Resync::No => {}
            Resync::AwaitKey => {
                // After a slate: the item goes on at its next keyframe, right after the slate.
                let opens = match p.track {
                    Track::Video => p.key,
                    Track::Audio => seg.video.is_none(),
                };
                if !opens {
                    return Ok(());
                }
                o.timeline.begin(p.pts, p.dts);
                o.resync = Resync::From(p.pts);
            }
            // Audio the keyframe's picture does not show.
            Resync::From(key) if p.track == Track::Audio && p.pts < key => return Ok(()),
            Resync::From(_) => {}
        }
        if let Some(t) = o.conform.as_mut().filter(|t| t.encodes(p.track)) {
            // A conformed track: decoded and encoded, placed by the encoder;
            // the gate already chose its packets (from the range's keyframe).
            let range = conform_range(&o.timeline, seg);
            let pkts = t
                .decode(p.track, &p.data, &range, &mut o.timeline)
                .map_err(|c| self.seg_err(seg, p.pts, MediaError::new(Fault::Codec, c)))?;
            return self.send_all(o, pkts).await;
        }
        let mut packet = p.data;
        if p.track == Track::Audio {
            // ADTS-framed AAC (MPEG-TS) goes on air raw, after its AudioSpecificConfig.
            let raw = o
                .raw_audio(packet)
                .map_err(|c| self.seg_err(seg, p.pts, MediaError::new(Fault::Unsupported, c)))?;
            let Some(raw) = raw else {
                return Ok(());
            };
            packet = raw;
        }
        let (opts, odts) = o.timeline.place(p.track, p.pts, p.dts, p.dur);
        o.last_dts[p.track as usize] = o.last_dts[p.track as usize].max(odts);
        if p.track == Track::Video && p.key {
            o.key_delay = p.pts - p.dts;
        }
        if p.track == Track::Video && p.key && std::mem::take(&mut o.inband_key) {
            // The first keyframe after a slate names its SPS/PPS again (media/slate.rs).
            if let Some(with) =
                media::slate::with_parameter_sets(o.extradata(Track::Video), &packet)
            {
                packet = with;
            }
        }
        let out = OutPacket {
            packet,
            track: p.track,
            key: p.key,
            pts_us: opts,
            dts_us: odts,
        };
        self.send(o, out).await?;
        self.set_position(seg.item, seg.pass, p.pts - seg.origin, odts);
        Ok(())
    }
}

/// What a conforming encoder keeps of a copy-mode segment: every frame from
/// where the timeline began it (the range's first keyframe, which may lie
/// before the cut) on; the gate already stopped the range at its end.
fn conform_range(timeline: &crate::timeline::Timeline, seg: &Segment) -> Segment {
    Segment {
        start: timeline.source_time(timeline.offset()),
        end: i64::MAX,
        ..*seg
    }
}
