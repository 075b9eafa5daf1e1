//! Copy mode, an item the stream cannot carry as it is (docs/design/timeline.md,
//! "Seams"): its video in another codec (HEVC, MPEG-4 Part 2, VP9 after
//! H.264) is decoded and encoded to H.264 at the stream's picture size and
//! frame rate, its audio in another codec (MP3 after AAC) to AAC, for that
//! item alone. The encoders are the transcode path's ([`Transcoder`]); what
//! differs is where their output lands: on the copied items' timeline, with
//! decode times running behind presentation by the copied items' B-frame
//! delay (so DTS goes on without a step at either seam), and with the
//! encoder's SPS/PPS in front of every keyframe as well as in the sequence
//! header (FFmpeg's H.264 parser keeps the first SPS/PPS it saw, as for the
//! slate in `media/slate.rs`).

use super::Transcoder;
use crate::media::slate::with_parameter_sets;
use crate::media::OutPacket;
use crate::timeline::Track;
use ffmpeg_next as ff;
use vodfleet_proto::command::Transcode;

/// The largest decode delay a conformed item takes over (as for the slate).
const MAX_DTS_DELAY_US: i64 = 500_000;

/// Bitrate of a conformed item's video when its source declares none: about
/// 0.1 bit per pixel and picture (≈ 580 kb/s at 640x360, 25 fps; 2.3 Mb/s at
/// 720p), a usual H.264 figure for watchable pictures at `veryfast`.
const DEFAULT_BITS_PER_PIXEL: f64 = 0.1;

/// Bounds of a conformed item's video bitrate (kb/s): a source declaring an
/// absurd rate must not starve or flood the stream.
const KBPS_RANGE: (u32, u32) = (300, 8_000);

/// What a conformed item's video is encoded to: what is on air.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// The stream's picture size (the first item's, as the slate's).
    pub size: (u32, u32),
    /// The stream's frame rate (25 if unknown).
    pub fps: Option<f64>,
    /// How far the copied items' decode times run behind their pictures (µs).
    pub dts_delay: i64,
}

impl Transcoder {
    /// A transcoder for one item of a copy-mode stream: `video` (if given) to
    /// H.264 at `target`, `audio` (if given) to AAC; their clocks start at
    /// output time `start_us`, the end of what is on air. Fails (naming what)
    /// when a decoder cannot be opened.
    pub fn conform(
        input: &ff::format::context::Input,
        video: Option<usize>,
        audio: Option<usize>,
        target: &Target,
        start_us: i64,
    ) -> Result<Transcoder, String> {
        let mut s = Transcode::default();
        if let Some(st) = video.and_then(|i| input.stream(i)) {
            let (w, h) = ((target.size.0 & !1).max(2), (target.size.1 & !1).max(2));
            let fps = fraction(target.fps.unwrap_or(25.0));
            let p = st.parameters();
            // SAFETY: reading a plain field of parameters owned by `p`.
            let declared = unsafe { (*p.as_ptr()).bit_rate }.max(0) as usize;
            s.width = Some(w);
            s.height = Some(h);
            s.fps = Some(fps);
            s.video_kbps = Some(video_kbps(declared, (w, h), fps));
        }
        let mut t = Transcoder::new(input, video, audio, &s, start_us)?;
        // The encoder's priming goes after the audio on air, not over its last frame.
        t.delay_audio(t.audio_priming_us());
        let extradata = t.setup().video.map(|p| p.extradata().to_vec());
        if let Some(v) = &mut t.video {
            v.dts_delay = target.dts_delay.clamp(0, MAX_DTS_DELAY_US);
            v.inband = extradata.filter(|e| !e.is_empty());
        }
        t.open_item(input, video, audio)?;
        Ok(t)
    }

    /// Whether this transcoder encodes `track`.
    pub fn encodes(&self, track: Track) -> bool {
        match track {
            Track::Video => self.video.is_some(),
            Track::Audio => self.audio.is_some(),
        }
    }

    /// A conformed item goes on at output time `us` after a slate covered a
    /// late read (copy mode; docs/design/sources.md, "Never dark"): the audio
    /// clock moves there, the picture held from before the slate is dropped,
    /// and the next picture is a keyframe (the players decoded the slate's).
    pub fn resume_at(&mut self, us: i64) {
        self.skip_audio_to(us);
        if let Some(v) = &mut self.video {
            let per = v.tick_us(1).max(1);
            v.held = None;
            v.next_tick = v.next_tick.max((us + per - 1) / per);
            v.force_key = true;
        }
    }
}

/// Encoded video of a conformed item: decode times `delay` behind
/// presentation, SPS/PPS in front of each keyframe.
pub(super) fn stamp(pkts: &mut [OutPacket], delay: i64, inband: Option<&[u8]>) {
    for p in pkts.iter_mut().filter(|p| p.track == Track::Video) {
        p.dts_us -= delay;
        if let (true, Some(extradata)) = (p.key, inband) {
            if let Some(mut with) = with_parameter_sets(extradata, &p.packet) {
                with.set_flags(ff::packet::Flags::KEY);
                with.set_pts(p.packet.pts());
                with.set_dts(p.packet.dts());
                p.packet = with;
            }
        }
    }
}

/// A frame rate as a fraction with a millisecond's precision (29.97 → 29970/1000).
fn fraction(rate: f64) -> (u32, u32) {
    let rate = if rate.is_finite() && rate > 0.5 && rate <= 120.0 {
        rate
    } else {
        25.0
    };
    if (rate - rate.round()).abs() < 1e-6 {
        (rate.round() as u32, 1)
    } else {
        ((rate * 1000.0).round() as u32, 1000)
    }
}

/// The conformed video's bitrate: the source's declared one, else
/// [`DEFAULT_BITS_PER_PIXEL`] at the target's size and rate; within [`KBPS_RANGE`].
fn video_kbps(declared_bps: usize, (w, h): (u32, u32), fps: (u32, u32)) -> u32 {
    let kbps = if declared_bps > 0 {
        (declared_bps / 1000) as f64
    } else {
        let rate = f64::from(fps.0) / f64::from(fps.1.max(1));
        f64::from(w) * f64::from(h) * rate * DEFAULT_BITS_PER_PIXEL / 1000.0
    };
    (kbps.round() as u32).clamp(KBPS_RANGE.0, KBPS_RANGE.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conformed_items_bitrate_is_the_declared_one_or_follows_its_size() {
        assert_eq!(video_kbps(1_200_000, (640, 360), (25, 1)), 1200);
        assert_eq!(video_kbps(0, (640, 360), (25, 1)), 576);
        assert_eq!(video_kbps(0, (1280, 720), (25, 1)), 2304);
        assert_eq!(video_kbps(50_000, (640, 360), (25, 1)), 300, "floor");
        assert_eq!(video_kbps(0, (3840, 2160), (60, 1)), 8000, "ceiling");
        assert_eq!(fraction(29.97), (29970, 1000));
        assert_eq!(fraction(25.0), (25, 1));
        assert_eq!(fraction(f64::NAN), (25, 1));
    }
}
