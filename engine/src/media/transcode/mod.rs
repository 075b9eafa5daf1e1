//! Decode → scale / frame-rate → encode, once per task (the destinations share
//! the encoded packets).
//!
//! Decoders are per item (items may differ in codec and size); the scaler is
//! rebuilt when the input picture changes; the encoders live for the whole task,
//! so the output is one stream whatever the playlist holds. Frame rate is
//! converted by choosing, for every output tick, the newest input frame at or
//! before it. Audio is resampled to 44.1 kHz stereo and kept in step with the
//! timeline: silence fills gaps, samples that would run ahead are dropped.

mod audio;
pub mod conform;

use super::{watermark, OutPacket, SharedParams, StreamSetup};
use crate::plan::Segment;
use crate::timeline::{Timeline, Track};
use audio::{open_audio_encoder, AudioPath};
use ff::format::Pixel;
use ffmpeg_next as ff;
use std::sync::Arc;
use vodfleet_proto::command::{Transcode, WatermarkPosition};

const AUDIO_RATE: i32 = 44_100;
const AUDIO_KBPS: usize = 128;
/// Audio may drift this far (in samples, ~23 ms) from the timeline before we
/// correct it; the first samples of a task are placed exactly.
const AUDIO_SLACK: i64 = 1024;

pub struct Transcoder {
    video: Option<VideoPath>,
    audio: Option<AudioPath>,
}

struct VideoPath {
    enc: ff::encoder::video::Encoder,
    width: u32,
    height: u32,
    /// Output frame rate as (num, den); encoder time base is den/num.
    fps: (i32, i32),
    dec: Option<ff::decoder::Video>,
    dec_tb: ff::Rational,
    scaler: Option<(ScaleKey, ff::software::scaling::Context)>,
    /// The newest scaled frame and its output time (µs), waiting for its ticks.
    held: Option<(ff::frame::Video, i64)>,
    next_tick: i64,
    /// The current item's watermark and where it goes ([`super::watermark`]).
    watermark: Option<(Arc<watermark::Image>, (u32, u32))>,
    /// How far decode times run behind presentation (µs): 0 for a task's own
    /// encoder; a conformed item's takes the copied items' B-frame delay
    /// (docs/design/timeline.md, "Seams").
    dts_delay: i64,
    /// SPS/PPS put in front of every keyframe (a conformed item; see
    /// `slate::with_parameter_sets`).
    inband: Option<Vec<u8>>,
    /// The next picture is encoded as a keyframe (after a slate).
    force_key: bool,
}

type ScaleKey = (Pixel, u32, u32);

fn err(what: &str) -> impl Fn(ff::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Transcoder {
    pub fn new(
        input: &ff::format::context::Input,
        video: Option<usize>,
        audio: Option<usize>,
        s: &Transcode,
        base_us: i64,
    ) -> Result<Transcoder, String> {
        let video = match video.and_then(|i| input.stream(i)) {
            None => None,
            Some(st) => {
                let p = st.parameters();
                // SAFETY: reading plain fields of parameters owned by `p`.
                let (sw, sh) = unsafe { ((*p.as_ptr()).width as u32, (*p.as_ptr()).height as u32) };
                let (width, height) = match (s.width, s.height) {
                    (Some(w), Some(h)) => (w, h),
                    _ => (sw & !1, sh & !1),
                };
                let fps = match s.fps {
                    Some((n, d)) => (n as i32, d as i32),
                    None => {
                        let r = st.avg_frame_rate();
                        if r.0 > 0 && r.1 > 0 && r.0 / r.1 <= 120 {
                            (r.0, r.1)
                        } else {
                            (25, 1)
                        }
                    }
                };
                let kbps = s.video_kbps.unwrap_or(2000);
                Some(VideoPath {
                    enc: open_video_encoder(width, height, fps, kbps)?,
                    width,
                    height,
                    fps,
                    dec: None,
                    dec_tb: ff::Rational(1, 1),
                    scaler: None,
                    held: None,
                    next_tick: 0,
                    watermark: None,
                    dts_delay: 0,
                    inband: None,
                    force_key: false,
                })
            }
        };
        let audio = match audio {
            None => None,
            Some(_) => {
                let enc = open_audio_encoder(s.acodec)?;
                let frame_size = (enc.frame_size() as usize).max(1);
                // The audio clock starts where the output timeline does (a resume goes on from there).
                let start = base_us.max(0) * AUDIO_RATE as i64 / 1_000_000;
                Some(AudioPath {
                    enc,
                    frame_size,
                    dec: None,
                    dec_tb: ff::Rational(1, 1),
                    resampler: None,
                    fifo: [Vec::new(), Vec::new()],
                    queued: start,
                    encoded: start,
                    placed: false,
                })
            }
        };
        Ok(Transcoder { video, audio })
    }

    /// The watermark of the item about to play (or none), at `pos`.
    pub fn set_watermark(&mut self, img: Option<Arc<watermark::Image>>, pos: WatermarkPosition) {
        if let Some(v) = &mut self.video {
            v.watermark = img.map(|img| {
                let m = watermark::margin(v.width, v.height);
                let at = watermark::place(&img, pos, v.width, v.height, m);
                (img, at)
            });
        }
    }

    /// Starts the audio clock `us` later (before any sample was queued): an
    /// item conformed mid-stream places its encoder's priming after the audio
    /// already on air instead of over its last frame.
    pub fn delay_audio(&mut self, us: i64) {
        if let Some(a) = &mut self.audio {
            let n = us.max(0) * AUDIO_RATE as i64 / 1_000_000;
            a.queued += n;
            a.encoded += n;
        }
    }

    /// How far the audio encoder's first output lies before its first input
    /// (AAC priming), in microseconds.
    pub fn audio_priming_us(&self) -> i64 {
        self.audio.as_ref().map_or(0, |a| {
            // SAFETY: reading a plain field of the codec context the encoder owns.
            let padding = unsafe { (*a.enc.as_ptr()).initial_padding };
            i64::from(padding.max(0)) * 1_000_000 / AUDIO_RATE as i64
        })
    }

    /// Codec configuration of the encoded output, for the FLV header.
    pub fn setup(&self) -> StreamSetup {
        StreamSetup {
            video: self
                .video
                .as_ref()
                .map(|v| SharedParams(ff::codec::Parameters::from(&*v.enc))),
            audio: self
                .audio
                .as_ref()
                .map(|a| SharedParams(ff::codec::Parameters::from(&*a.enc))),
        }
    }

    /// Opens decoders for a new item.
    pub fn open_item(
        &mut self,
        input: &ff::format::context::Input,
        video: Option<usize>,
        audio: Option<usize>,
    ) -> Result<(), String> {
        if let Some(v) = &mut self.video {
            v.dec = match video.and_then(|i| input.stream(i)) {
                Some(st) => {
                    v.dec_tb = st.time_base();
                    let ctx = ff::codec::context::Context::from_parameters(st.parameters())
                        .map_err(err("video decoder"))?;
                    Some(ctx.decoder().video().map_err(err("video decoder"))?)
                }
                None => None,
            };
        }
        if let Some(a) = &mut self.audio {
            a.dec = match audio.and_then(|i| input.stream(i)) {
                Some(st) => {
                    a.dec_tb = st.time_base();
                    let ctx = ff::codec::context::Context::from_parameters(st.parameters())
                        .map_err(err("audio decoder"))?;
                    Some(ctx.decoder().audio().map_err(err("audio decoder"))?)
                }
                None => None,
            };
        }
        Ok(())
    }

    /// Decodes one packet and encodes whatever frames it completes.
    pub fn decode(
        &mut self,
        track: Track,
        packet: &ff::Packet,
        seg: &Segment,
        tl: &mut Timeline,
    ) -> Result<Vec<OutPacket>, String> {
        let mut out = Vec::new();
        match track {
            Track::Video => {
                if let Some(v) = &mut self.video {
                    if let Some(dec) = &mut v.dec {
                        dec.send_packet(packet).map_err(err("decoding video"))?;
                    }
                    v.drain_decoder(seg, tl, &mut out)?;
                }
            }
            Track::Audio => {
                if let Some(a) = &mut self.audio {
                    if let Some(dec) = &mut a.dec {
                        dec.send_packet(packet).map_err(err("decoding audio"))?;
                    }
                    a.drain_decoder(seg, tl, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// Flushes the item's decoders at the end of a segment and fills the
    /// segment's tail (the last frame held until the segment's end).
    pub fn end_segment(
        &mut self,
        seg: &Segment,
        tl: &mut Timeline,
    ) -> Result<Vec<OutPacket>, String> {
        let mut out = Vec::new();
        if let Some(v) = &mut self.video {
            if let Some(dec) = &mut v.dec {
                let _ = dec.send_eof();
            }
            v.drain_decoder(seg, tl, &mut out)?;
            if let Some(dec) = &mut v.dec {
                dec.flush();
            }
        }
        if let Some(a) = &mut self.audio {
            if let Some(dec) = &mut a.dec {
                let _ = dec.send_eof();
            }
            a.drain_decoder(seg, tl, &mut out)?;
            if let Some(dec) = &mut a.dec {
                dec.flush();
            }
        }
        let end = tl.reached();
        if let Some(v) = &mut self.video {
            v.tick_until(end, &mut out)?;
        }
        Ok(out)
    }

    /// Starts covering a late source at output time `at_us` (docs/design/sources.md,
    /// "Never dark"): the item's last picture is shown up to there, black after it.
    pub fn slate_start(&mut self, at_us: i64) -> Result<Vec<OutPacket>, String> {
        let mut out = Vec::new();
        if let Some(v) = &mut self.video {
            v.tick_until(at_us, &mut out)?;
            let mut black = ff::frame::Video::new(Pixel::YUV420P, v.width, v.height);
            // Black in limited range: Y 16, U and V 128.
            for (plane, value) in [(0, 16u8), (1, 128), (2, 128)] {
                black.data_mut(plane).fill(value);
            }
            if v.held.is_none() {
                let per = v.tick_us(1);
                v.next_tick = v.next_tick.max((at_us + per - 1) / per);
            }
            v.held = Some((black, at_us));
        }
        Ok(out)
    }

    /// Black pictures and silence through the task's own encoders up to output
    /// time `until_us` (after [`Self::slate_start`]); the item's next frames
    /// take over where they land.
    pub fn slate_until(&mut self, until_us: i64) -> Result<Vec<OutPacket>, String> {
        let mut out = Vec::new();
        if let Some(v) = &mut self.video {
            v.tick_until(until_us, &mut out)?;
        }
        if let Some(a) = &mut self.audio {
            a.silence_until(until_us, &mut out)?;
        }
        Ok(out)
    }

    /// Moves the audio clock to output time `us`, dropping samples not yet
    /// encoded: a conformed item's audio after a slate in copy mode, whose
    /// silence was already sent.
    pub fn skip_audio_to(&mut self, us: i64) {
        if let Some(a) = &mut self.audio {
            let n = us.max(0) * AUDIO_RATE as i64 / 1_000_000;
            if n > a.queued {
                a.fifo.iter_mut().for_each(Vec::clear);
                a.queued = n;
                a.encoded = n;
            }
        }
    }

    /// Drains the encoders at the end of the task.
    pub fn flush(&mut self) -> Vec<OutPacket> {
        let mut out = Vec::new();
        if let Some(v) = &mut self.video {
            let _ = v.enc.send_eof();
            let _ = receive(
                &mut v.enc,
                Track::Video,
                ff::Rational(v.fps.1, v.fps.0),
                &mut out,
            );
            conform::stamp(&mut out, v.dts_delay, v.inband.as_deref());
        }
        if let Some(a) = &mut self.audio {
            let _ = a.enc.send_eof();
            let _ = receive(
                &mut a.enc,
                Track::Audio,
                ff::Rational(1, AUDIO_RATE),
                &mut out,
            );
        }
        out
    }
}

impl VideoPath {
    fn tick_us(&self, n: i64) -> i64 {
        n * 1_000_000 * self.fps.1 as i64 / self.fps.0 as i64
    }

    fn drain_decoder(
        &mut self,
        seg: &Segment,
        tl: &mut Timeline,
        out: &mut Vec<OutPacket>,
    ) -> Result<(), String> {
        // Taken out for the loop so the encoder side can be borrowed too; put back below.
        let Some(mut dec) = self.dec.take() else {
            return Ok(());
        };
        let r = self.drain_frames(&mut dec, seg, tl, out);
        self.dec = Some(dec);
        r
    }

    fn drain_frames(
        &mut self,
        dec: &mut ff::decoder::Video,
        seg: &Segment,
        tl: &mut Timeline,
        out: &mut Vec<OutPacket>,
    ) -> Result<(), String> {
        let mut frame = ff::frame::Video::empty();
        while dec.receive_frame(&mut frame).is_ok() {
            let tb = self.dec_tb;
            let Some(ts) = frame.timestamp().or(frame.pts()) else {
                continue;
            };
            let pts = ts * 1_000_000 * tb.0 as i64 / tb.1 as i64;
            if pts < seg.start || pts >= seg.end {
                continue; // decoded only to reach the cut
            }
            // SAFETY: reading a plain field of the frame we own.
            let dur =
                unsafe { (*frame.as_ptr()).pkt_duration } * 1_000_000 * tb.0 as i64 / tb.1 as i64;
            let (t, _) = tl.place(Track::Video, pts, pts - self.dts_delay, dur);
            let key: ScaleKey = (frame.format(), frame.width(), frame.height());
            if self.scaler.as_ref().is_none_or(|(k, _)| *k != key) {
                let ctx = ff::software::scaling::Context::get(
                    key.0,
                    key.1,
                    key.2,
                    Pixel::YUV420P,
                    self.width,
                    self.height,
                    ff::software::scaling::Flags::BILINEAR,
                )
                .map_err(err("scaler"))?;
                self.scaler = Some((key, ctx));
            }
            let mut scaled = ff::frame::Video::empty();
            self.scaler
                .as_mut()
                .expect("scaler set above")
                .1
                .run(&frame, &mut scaled)
                .map_err(err("scaling"))?;
            if let Some((img, at)) = &self.watermark {
                watermark::blend(img, &mut scaled, *at);
            }
            // Output ticks before this frame's time show the previous frame.
            self.tick_until(t, out)?;
            if self.held.is_none() {
                // First frame ever: the output starts at the tick at or after it.
                let per = self.tick_us(1);
                self.next_tick = self.next_tick.max((t + per - 1) / per);
            }
            self.held = Some((scaled, t));
        }
        Ok(())
    }

    /// Encodes the held frame for every output tick before `until` (µs).
    fn tick_until(&mut self, until: i64, out: &mut Vec<OutPacket>) -> Result<(), String> {
        let fps = self.fps;
        let tick_us = |n: i64| n * 1_000_000 * fps.1 as i64 / fps.0 as i64;
        let Some((frame, _)) = &mut self.held else {
            return Ok(());
        };
        while tick_us(self.next_tick) < until {
            frame.set_pts(Some(self.next_tick));
            frame.set_kind(if std::mem::take(&mut self.force_key) {
                ff::picture::Type::I
            } else {
                ff::picture::Type::None
            });
            self.enc.send_frame(frame).map_err(err("encoding video"))?;
            self.next_tick += 1;
            let from = out.len();
            receive(
                &mut self.enc,
                Track::Video,
                ff::Rational(self.fps.1, self.fps.0),
                out,
            )?;
            conform::stamp(&mut out[from..], self.dts_delay, self.inband.as_deref());
        }
        Ok(())
    }
}

/// Collects every packet the encoder has ready, stamped in microseconds.
fn receive(
    enc: &mut ff::encoder::Encoder,
    track: Track,
    tb: ff::Rational,
    out: &mut Vec<OutPacket>,
) -> Result<(), String> {
    loop {
        let mut p = ff::Packet::empty();
        match enc.receive_packet(&mut p) {
            Ok(()) => {
                let us = |v: i64| v * 1_000_000 * tb.0 as i64 / tb.1 as i64;
                let pts = p.pts().map(us).unwrap_or(0);
                let dts = p.dts().map(us).unwrap_or(pts);
                let key = p.is_key();
                out.push(OutPacket {
                    packet: p,
                    track,
                    key,
                    pts_us: pts,
                    dts_us: dts,
                });
            }
            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => return Ok(()),
            Err(ff::Error::Eof) => return Ok(()),
            Err(e) => return Err(format!("encoder: {e}")),
        }
    }
}

fn open_video_encoder(
    width: u32,
    height: u32,
    fps: (i32, i32),
    kbps: u32,
) -> Result<ff::encoder::video::Encoder, String> {
    let codec = ff::encoder::find_by_name("libx264")
        .ok_or("libx264 is not available in this libavcodec")?;
    let mut ctx = ff::codec::context::Context::new_with_codec(codec);
    // Let x264 use its own thread pool, as the ffmpeg CLI does (libavcodec defaults to one thread).
    ctx.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: 0,
        safe: false,
    });
    let mut enc = ctx.encoder().video().map_err(err("video encoder"))?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(ff::Rational(fps.1, fps.0));
    // SAFETY: setting a plain field of the codec context we own before it is opened.
    unsafe {
        (*enc.as_mut_ptr()).framerate = ff::ffi::AVRational {
            num: fps.0,
            den: fps.1,
        }
    };
    enc.set_bit_rate(kbps as usize * 1000);
    enc.set_max_bit_rate(kbps as usize * 1000);
    // A keyframe every 2 s: players joining mid-stream start within 2 s.
    enc.set_gop((2 * fps.0 / fps.1.max(1)).max(1) as u32);
    enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    let mut opts = ff::Dictionary::new();
    opts.set("preset", "veryfast");
    // No B-frames and no lookahead: live output, DTS equals PTS.
    opts.set("tune", "zerolatency");
    // VBV of one second keeps the rate near the target over short spans.
    opts.set(
        "x264-params",
        &format!("vbv-maxrate={kbps}:vbv-bufsize={kbps}:nal-hrd=none"),
    );
    enc.open_with(opts).map_err(err("opening libx264"))
}
