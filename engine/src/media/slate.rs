//! The slate: black pictures and silence that stay on air while a source is
//! late or broken (docs/design/sources.md, "Never dark").
//!
//! Copy-mode tasks have no encoder, so the slate is encoded once per task, the
//! first time one is needed: one GOP of black H.264 pictures at the stream's
//! size and frame rate (a keyframe, then pictures that repeat it, a few dozen
//! bytes each) and a few frames of silence in the stream's audio codec, sample
//! rate and channels. Playing it costs no encoding: [`Run`] hands out those
//! packets again and again with growing timestamps. Each GOP starts with its own
//! keyframe and references nothing before it, so repeating it decodes cleanly;
//! silent AAC frames (and MP3 frames without a bit reservoir) stand alone too.
//!
//! Tasks that transcode cover a wait with their own encoder instead
//! (`Transcoder::slate`), so their output never changes parameters.

use super::{CodecId, SharedParams};
use crate::timeline::Track;
use ff::format::Pixel;
use ff::util::channel_layout::ChannelLayout;
use ffmpeg_next as ff;

/// What the slate must look like: the stream's picture and sound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Width, height and frame rate (frames per second) of the video, if any.
    pub video: Option<(u32, u32, f64)>,
    /// Codec (AAC or MP3), sample rate and channels of the audio, if any.
    pub audio: Option<(CodecId, u32, u16)>,
}

/// The encoded slate of one task.
pub struct Slate {
    /// One GOP of black pictures in decode (= presentation) order, the first a keyframe.
    video: Vec<ff::Packet>,
    /// Frame rate as a fraction (num, den).
    fps: (i64, i64),
    /// Silent audio frames, each `audio_frame` samples long.
    audio: Vec<ff::Packet>,
    audio_frame: i64,
    audio_rate: i64,
    /// The codec configuration of the slate's tracks (their own SPS/PPS,
    /// AudioSpecificConfig): in copy mode the slate is an unlike seam.
    pub params: [Option<SharedParams>; 2],
}

/// One packet of the slate, in the slate's own time (µs from its start).
pub struct Packet {
    pub track: Track,
    pub packet: ff::Packet,
    pub key: bool,
    pub pts_us: i64,
    pub dur_us: i64,
}

/// Pictures in the GOP the slate repeats: one second, so a player that joins
/// while the slate is on air starts within a second.
fn gop_frames(fps: f64) -> usize {
    (fps.round() as usize).clamp(1, 120)
}

fn err(what: &str) -> impl Fn(ff::Error) -> String + '_ {
    move |e| format!("slate {what}: {e}")
}

impl Slate {
    /// Encodes the slate of a stream of this shape (a few tens of milliseconds
    /// of CPU; run it off the event loop).
    pub fn build(shape: Shape) -> Result<Slate, String> {
        super::init();
        let mut params = [None, None];
        let (mut video, mut fps) = (Vec::new(), (25, 1));
        if let Some((w, h, rate)) = shape.video {
            let rate = if rate.is_finite() && rate > 0.5 && rate <= 240.0 {
                rate
            } else {
                25.0
            };
            // As a fraction with a millisecond's precision (29.97 → 29970/1000).
            fps = if (rate - rate.round()).abs() < 1e-6 {
                (rate.round() as i64, 1)
            } else {
                ((rate * 1000.0).round() as i64, 1000)
            };
            let (pkts, p) = black_gop(w, h, fps, gop_frames(rate))?;
            video = pkts;
            params[Track::Video as usize] = Some(p);
        }
        let (mut audio, mut audio_frame, mut audio_rate) = (Vec::new(), 1024, 44_100);
        if let Some((codec, rate, channels)) = shape.audio {
            let (pkts, frame, p) = silence(codec, rate, channels)?;
            audio = pkts;
            audio_frame = frame as i64;
            audio_rate = i64::from(rate.max(1));
            params[Track::Audio as usize] = Some(p);
        }
        Ok(Slate {
            video,
            fps,
            audio,
            audio_frame,
            audio_rate,
            params,
        })
    }

    /// Start time (µs) of video frame `n`.
    fn video_at(&self, n: i64) -> i64 {
        n * 1_000_000 * self.fps.1 / self.fps.0
    }

    /// Start time (µs) of audio frame `n`.
    fn audio_at(&self, n: i64) -> i64 {
        n * self.audio_frame * 1_000_000 / self.audio_rate
    }

    /// Duration of the first picture (µs), 0 without video.
    pub fn frame_us(&self) -> i64 {
        if self.video.is_empty() {
            0
        } else {
            self.video_at(1)
        }
    }

    /// Encoded bytes of one GOP and of the silence (for tests and logs).
    pub fn bytes(&self) -> (usize, usize) {
        let sum = |v: &[ff::Packet]| v.iter().map(|p| p.size()).sum();
        (sum(&self.video), sum(&self.audio))
    }
}

/// Hands out the slate's packets in time order, video and audio interleaved,
/// for as long as it is asked.
pub struct Run<'a> {
    slate: &'a Slate,
    next_video: i64,
    next_audio: i64,
    /// Where each track starts (µs, at or before 0).
    video_from: i64,
    audio_from: i64,
}

impl<'a> Run<'a> {
    pub fn new(slate: &'a Slate) -> Run<'a> {
        Run::starting(slate, 0, 0)
    }

    /// A run whose video and audio start at these times (at or before 0): a
    /// read that stopped mid-file leaves one track behind the other, and the
    /// slate fills each from where it stopped.
    pub fn starting(slate: &'a Slate, video_from: i64, audio_from: i64) -> Run<'a> {
        Run {
            slate,
            next_video: 0,
            next_audio: 0,
            video_from,
            audio_from,
        }
    }

    /// The next packet (the earlier of the next picture and the next audio frame).
    pub fn next_packet(&mut self) -> Option<Packet> {
        let s = self.slate;
        let v = (!s.video.is_empty()).then(|| self.video_from + s.video_at(self.next_video));
        let a = (!s.audio.is_empty()).then(|| self.audio_from + s.audio_at(self.next_audio));
        let video_first = match (v, a) {
            (None, None) => return None,
            (Some(v), Some(a)) => v <= a,
            (v, _) => v.is_some(),
        };
        if video_first {
            let n = self.next_video;
            self.next_video += 1;
            let i = n as usize % s.video.len();
            Some(Packet {
                track: Track::Video,
                packet: s.video[i].clone(),
                key: i == 0,
                pts_us: self.video_from + s.video_at(n),
                dur_us: s.video_at(n + 1) - s.video_at(n),
            })
        } else {
            let n = self.next_audio;
            self.next_audio += 1;
            Some(Packet {
                track: Track::Audio,
                packet: s.audio[n as usize % s.audio.len()].clone(),
                key: true,
                pts_us: self.audio_from + s.audio_at(n),
                dur_us: s.audio_at(n + 1) - s.audio_at(n),
            })
        }
    }
}

/// One GOP of black pictures from libx264, and the encoder's parameters.
fn black_gop(
    width: u32,
    height: u32,
    fps: (i64, i64),
    frames: usize,
) -> Result<(Vec<ff::Packet>, SharedParams), String> {
    // 4:2:0 needs even sizes; a stream of odd size gets a slate one pixel smaller.
    let (w, h) = ((width & !1).max(2), (height & !1).max(2));
    let codec = ff::encoder::find_by_name("libx264")
        .ok_or("libx264 is not available in this libavcodec")?;
    let mut ctx = ff::codec::context::Context::new_with_codec(codec);
    // One thread: the slate is a few pictures, and must not take a shard's cores.
    ctx.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: 1,
        safe: false,
    });
    let mut enc = ctx.encoder().video().map_err(err("video encoder"))?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(ff::Rational(fps.1 as i32, fps.0 as i32));
    // SAFETY: setting a plain field of the codec context we own before it is opened.
    unsafe {
        (*enc.as_mut_ptr()).framerate = ff::ffi::AVRational {
            num: fps.0 as i32,
            den: fps.1 as i32,
        }
    };
    enc.set_gop(frames as u32);
    enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    let mut opts = ff::Dictionary::new();
    opts.set("preset", "ultrafast");
    // No B-frames, no lookahead: packets come out in presentation order, DTS = PTS.
    opts.set("tune", "zerolatency");
    opts.set(
        "x264-params",
        &format!("keyint={frames}:min-keyint={frames}:scenecut=0"),
    );
    let mut enc = enc.open_with(opts).map_err(err("opening libx264"))?;
    let mut frame = ff::frame::Video::new(Pixel::YUV420P, w, h);
    // Black in limited range: Y 16, U and V 128.
    for (plane, value) in [(0, 16u8), (1, 128), (2, 128)] {
        frame.data_mut(plane).fill(value);
    }
    let mut out = Vec::with_capacity(frames);
    for n in 0..frames {
        frame.set_pts(Some(n as i64));
        frame.set_kind(if n == 0 {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        enc.send_frame(&frame).map_err(err("encoding"))?;
        drain(&mut enc, &mut out)?;
    }
    enc.send_eof().map_err(err("encoding"))?;
    drain(&mut enc, &mut out)?;
    if out.len() != frames || !out[0].is_key() || out[1..].iter().any(|p| p.is_key()) {
        return Err(format!(
            "slate: libx264 gave {} packets for a GOP of {frames}",
            out.len()
        ));
    }
    let params = SharedParams(ff::codec::Parameters::from(&*enc));
    // The keyframe carries its SPS/PPS in-band as well as in the sequence
    // header: parsers that keep the first configuration they saw (FFmpeg's
    // H.264 parser does) then read the slate's slices with the slate's own.
    out[0] =
        with_parameter_sets(params.extradata(), &out[0]).ok_or("slate: libx264 gave no SPS/PPS")?;
    out[0].set_flags(ff::packet::Flags::KEY);
    Ok((out, params))
}

/// Silent frames in `codec` at `rate` and `channels`, their length in
/// samples, and the encoder's parameters.
fn silence(
    codec: CodecId,
    rate: u32,
    channels: u16,
) -> Result<(Vec<ff::Packet>, usize, SharedParams), String> {
    let found = match codec {
        CodecId::AAC => ff::encoder::find(CodecId::AAC),
        CodecId::MP3 => ff::encoder::find_by_name("libmp3lame"),
        other => return Err(format!("slate: no silence in {other:?}")),
    }
    .ok_or_else(|| format!("slate: no {codec:?} encoder in this libavcodec"))?;
    let layout = ChannelLayout::default(i32::from(channels.max(1)));
    let mut enc = ff::codec::context::Context::new_with_codec(found)
        .encoder()
        .audio()
        .map_err(err("audio encoder"))?;
    let format = ff::format::Sample::F32(ff::format::sample::Type::Planar);
    enc.set_rate(rate as i32);
    enc.set_channel_layout(layout);
    enc.set_format(format);
    enc.set_bit_rate(64_000 * usize::from(channels.max(1)));
    enc.set_time_base(ff::Rational(1, rate as i32));
    enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    let mut opts = ff::Dictionary::new();
    // MP3 frames may borrow bytes of the frames before them (the bit
    // reservoir); repeated frames must not.
    opts.set("reservoir", "0");
    let mut enc = enc
        .open_with(opts)
        .map_err(err("opening the audio encoder"))?;
    let frame_size = (enc.frame_size() as usize).max(1);
    let mut frame = ff::frame::Audio::new(format, frame_size, layout);
    frame.set_rate(rate);
    // Per channel (only the first plane's size is in `linesize` for planar audio).
    for plane in 0..frame.planes() {
        frame.plane_mut::<f32>(plane).fill(0.0);
    }
    let mut out = Vec::new();
    for n in 0..12 {
        frame.set_pts(Some(n * frame_size as i64));
        enc.send_frame(&frame).map_err(err("encoding audio"))?;
        drain(&mut enc, &mut out)?;
    }
    enc.send_eof().map_err(err("encoding audio"))?;
    drain(&mut enc, &mut out)?;
    // The first frames carry the encoder's start-up and the last ones its
    // flush; the steady middle is what repeats.
    if out.len() > 6 {
        out.truncate(out.len() - 2);
        out.drain(..2);
    }
    if out.is_empty() {
        return Err("slate: the audio encoder gave no packet".into());
    }
    let params = SharedParams(ff::codec::Parameters::from(&*enc));
    Ok((out, frame_size, params))
}

/// `packet` (a keyframe) with the SPS/PPS of `extradata` in front of it, in
/// the packet's own framing (length-prefixed after an `avcC`, start codes after
/// Annex B extradata): the first keyframe after a slate, so parsers that follow
/// in-band parameter sets only switch back to the item's (see [`black_gop`]).
/// `None` when the extradata is neither.
pub fn with_parameter_sets(extradata: &[u8], packet: &ff::Packet) -> Option<ff::Packet> {
    let data = packet.data()?;
    let mut out = Vec::with_capacity(extradata.len() + data.len() + 16);
    match extradata.first()? {
        1 => {
            // avcC: version, profile, compatibility, level, length size, SPS count.
            let len_size = usize::from(*extradata.get(4)? & 3) + 1;
            let mut at = 5;
            for counted in [0x1F, 0xFF] {
                let n = usize::from(*extradata.get(at)? & counted);
                at += 1;
                for _ in 0..n {
                    let len = usize::from(u16::from_be_bytes([
                        *extradata.get(at)?,
                        *extradata.get(at + 1)?,
                    ]));
                    let nal = extradata.get(at + 2..at + 2 + len)?;
                    out.extend_from_slice(&(len as u32).to_be_bytes()[4 - len_size..]);
                    out.extend_from_slice(nal);
                    at += 2 + len;
                }
            }
        }
        0 if extradata.starts_with(&[0, 0, 1]) || extradata.starts_with(&[0, 0, 0, 1]) => {
            out.extend_from_slice(extradata);
        }
        _ => return None,
    }
    out.extend_from_slice(data);
    Some(ff::Packet::copy(&out))
}

fn drain(enc: &mut ff::encoder::Encoder, out: &mut Vec<ff::Packet>) -> Result<(), String> {
    loop {
        let mut p = ff::Packet::empty();
        match enc.receive_packet(&mut p) {
            Ok(()) => out.push(p),
            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => return Ok(()),
            Err(ff::Error::Eof) => return Ok(()),
            Err(e) => return Err(format!("slate encoder: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            video: Some((320, 240, 25.0)),
            audio: Some((CodecId::AAC, 48_000, 2)),
        }
    }

    #[test]
    fn the_slate_is_one_small_gop_of_black_and_silent_frames() {
        let s = Slate::build(shape()).expect("slate");
        assert_eq!(s.video.len(), 25, "one second of pictures");
        let (v, a) = s.bytes();
        assert!(v < 8_000, "a GOP of black pictures is small: {v} bytes");
        assert!(a < 4_000, "{a} bytes of silence");
        let vp = s.params[0].as_ref().expect("video parameters");
        assert_eq!(vp.size(), (320, 240));
        assert!(!vp.extradata().is_empty(), "SPS/PPS for a sequence header");
        crate::frame::header(Track::Video, vp.codec_id(), vp.extradata())
            .expect("an FLV sequence header");
        let ap = s.params[1].as_ref().expect("audio parameters");
        assert_eq!(ap.audio_format(), (48_000, 2));

        // Decoded, every picture of two GOPs in a row is black.
        let ctx = ff::codec::context::Context::from_parameters(vp.0.clone()).unwrap();
        let mut dec = ctx.decoder().video().unwrap();
        let mut run = Run::new(&s);
        let mut pictures = 0;
        let mut frame = ff::frame::Video::empty();
        let mut last_video = -1;
        let mut last_audio = -1;
        while pictures < 50 {
            let p = run.next_packet().expect("the slate never runs out");
            match p.track {
                Track::Video => {
                    assert!(p.pts_us > last_video, "video time grows");
                    assert_eq!(p.key, p.pts_us % 1_000_000 == 0, "a keyframe each second");
                    last_video = p.pts_us;
                    dec.send_packet(&p.packet).unwrap();
                    while dec.receive_frame(&mut frame).is_ok() {
                        let (w, h, stride) = (
                            frame.width() as usize,
                            frame.height() as usize,
                            frame.stride(0),
                        );
                        let y = frame.data(0);
                        let sum: u64 = (0..h)
                            .flat_map(|r| &y[r * stride..r * stride + w])
                            .map(|&b| b as u64)
                            .sum();
                        let mean = sum / (w * h) as u64;
                        assert!(mean <= 17, "luma {mean}: black");
                        pictures += 1;
                    }
                }
                Track::Audio => {
                    assert!(p.pts_us > last_audio);
                    assert!((20_000..22_000).contains(&p.dur_us), "{}", p.dur_us);
                    last_audio = p.pts_us;
                }
            }
        }
        assert!(
            (last_audio - last_video).abs() < 50_000,
            "audio keeps up with video: {last_audio} vs {last_video}"
        );
    }

    #[test]
    fn keyframes_carry_their_parameter_sets_and_items_get_theirs_back() {
        let s = Slate::build(shape()).expect("slate");
        let key = s.video[0].data().unwrap();
        let types: Vec<u8> = key
            .windows(4)
            .filter(|w| w[..3] == [0, 0, 1])
            .map(|w| w[3] & 0x1F)
            .collect();
        assert!(
            types.contains(&7) && types.contains(&8),
            "SPS and PPS in-band: {types:?}"
        );
        // An avcC with one SPS and one PPS, 4-byte lengths.
        let avcc = [
            1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 2, 0x67, 0xAA, 1, 0, 1, 0x68,
        ];
        let frame = ff::Packet::copy(&[0, 0, 0, 2, 0x65, 0x88]);
        let p = with_parameter_sets(&avcc, &frame).unwrap();
        assert_eq!(
            p.data().unwrap(),
            [0, 0, 0, 2, 0x67, 0xAA, 0, 0, 0, 1, 0x68, 0, 0, 0, 2, 0x65, 0x88]
        );
        let annexb = [0, 0, 0, 1, 0x67, 0xAA, 0, 0, 0, 1, 0x68];
        let p = with_parameter_sets(&annexb, &frame).unwrap();
        assert_eq!(&p.data().unwrap()[..11], annexb);
        assert!(with_parameter_sets(&[], &frame).is_none());
        assert!(
            with_parameter_sets(&avcc[..7], &frame).is_none(),
            "truncated"
        );
    }

    #[test]
    fn mp3_and_audio_only_slates() {
        let s = Slate::build(Shape {
            video: None,
            audio: Some((CodecId::MP3, 44_100, 2)),
        })
        .expect("an MP3 slate");
        assert!(s.video.is_empty() && !s.audio.is_empty());
        let mut run = Run::new(&s);
        let p = run.next_packet().unwrap();
        assert_eq!(
            (p.track, p.dur_us),
            (Track::Audio, 1152 * 1_000_000 / 44_100)
        );
        let odd = Slate::build(Shape {
            video: Some((641, 361, 29.97)),
            audio: None,
        })
        .expect("odd sizes and fractional rates");
        assert_eq!(odd.params[0].as_ref().unwrap().size(), (640, 360));
        assert_eq!(odd.fps, (29970, 1000));
    }
}
