//! The audio side of the transcoder: decoded frames resampled to 44.1 kHz
//! stereo, kept in step with the timeline (silence fills gaps, samples that
//! would run ahead are dropped), encoded in the encoder's frame size.

use super::{err, receive, AUDIO_KBPS, AUDIO_RATE, AUDIO_SLACK};
use crate::media::OutPacket;
use crate::plan::Segment;
use crate::timeline::{Timeline, Track};
use ff::format::Sample;
use ff::util::channel_layout::ChannelLayout;
use ffmpeg_next as ff;
use vodfleet_proto::command::AudioCodec;

pub(super) struct AudioPath {
    pub(super) enc: ff::encoder::audio::Encoder,
    pub(super) frame_size: usize,
    pub(super) dec: Option<ff::decoder::Audio>,
    pub(super) dec_tb: ff::Rational,
    pub(super) resampler: Option<((Sample, u64, u32), ff::software::resampling::Context)>,
    /// Pending planar samples, one Vec per channel.
    pub(super) fifo: [Vec<f32>; 2],
    /// Samples handed to the fifo so far (the audio clock, in samples).
    pub(super) queued: i64,
    /// Samples sent to the encoder so far.
    pub(super) encoded: i64,
    /// Whether any samples were placed yet (the first ones are placed exactly).
    pub(super) placed: bool,
}

impl AudioPath {
    pub(super) fn drain_decoder(
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
        dec: &mut ff::decoder::Audio,
        seg: &Segment,
        tl: &mut Timeline,
        out: &mut Vec<OutPacket>,
    ) -> Result<(), String> {
        let mut frame = ff::frame::Audio::empty();
        while dec.receive_frame(&mut frame).is_ok() {
            let tb = self.dec_tb;
            let Some(ts) = frame.timestamp().or(frame.pts()) else {
                continue;
            };
            let pts = ts * 1_000_000 * tb.0 as i64 / tb.1 as i64;
            if pts < seg.start || pts >= seg.end {
                continue;
            }
            let rate = frame.rate().max(1) as i64;
            let dur = frame.samples() as i64 * 1_000_000 / rate;
            let (t, _) = tl.place(Track::Audio, pts, pts, dur);
            let layout = if frame.channel_layout().bits() == 0 {
                ChannelLayout::default(frame.channels() as i32)
            } else {
                frame.channel_layout()
            };
            let key = (frame.format(), layout.bits(), frame.rate());
            if self.resampler.as_ref().is_none_or(|(k, _)| *k != key) {
                let ctx = ff::software::resampling::Context::get(
                    key.0,
                    layout,
                    key.2,
                    Sample::F32(ff::format::sample::Type::Planar),
                    ChannelLayout::STEREO,
                    AUDIO_RATE as u32,
                )
                .map_err(err("resampler"))?;
                self.resampler = Some((key, ctx));
            }
            frame.set_channel_layout(layout);
            let mut res = ff::frame::Audio::empty();
            self.resampler
                .as_mut()
                .expect("resampler set above")
                .1
                .run(&frame, &mut res)
                .map_err(err("resampling"))?;

            // Keep the audio clock on the timeline: fill a gap with silence, drop what runs ahead.
            let expected = t * AUDIO_RATE as i64 / 1_000_000;
            let slack = if self.placed { AUDIO_SLACK } else { 0 };
            self.placed = true;
            if self.queued < expected - slack {
                let gap = (expected - self.queued) as usize;
                for ch in &mut self.fifo {
                    ch.extend(std::iter::repeat_n(0.0, gap));
                }
                self.queued += gap as i64;
            } else if self.queued > expected + AUDIO_SLACK {
                continue;
            }
            let n = res.samples();
            if n == 0 {
                continue;
            }
            for (c, ch) in self.fifo.iter_mut().enumerate() {
                ch.extend_from_slice(&res.plane::<f32>(c)[..n]);
            }
            self.queued += n as i64;
            self.encode_ready(out)?;
        }
        Ok(())
    }

    /// Silence up to output time `until_us` (a slate; docs/design/sources.md).
    pub(super) fn silence_until(
        &mut self,
        until_us: i64,
        out: &mut Vec<OutPacket>,
    ) -> Result<(), String> {
        let expected = until_us * AUDIO_RATE as i64 / 1_000_000;
        if self.queued < expected {
            let gap = (expected - self.queued) as usize;
            for ch in &mut self.fifo {
                ch.extend(std::iter::repeat_n(0.0, gap));
            }
            self.queued = expected;
        }
        self.placed = true;
        self.encode_ready(out)
    }

    fn encode_ready(&mut self, out: &mut Vec<OutPacket>) -> Result<(), String> {
        while self.fifo[0].len() >= self.frame_size {
            let mut f = ff::frame::Audio::new(
                Sample::F32(ff::format::sample::Type::Planar),
                self.frame_size,
                ChannelLayout::STEREO,
            );
            f.set_rate(AUDIO_RATE as u32);
            for (c, ch) in self.fifo.iter_mut().enumerate() {
                f.plane_mut::<f32>(c)[..self.frame_size].copy_from_slice(&ch[..self.frame_size]);
                ch.drain(..self.frame_size);
            }
            f.set_pts(Some(self.encoded));
            self.encoded += self.frame_size as i64;
            self.enc.send_frame(&f).map_err(err("encoding audio"))?;
            receive(
                &mut self.enc,
                Track::Audio,
                ff::Rational(1, AUDIO_RATE),
                out,
            )?;
        }
        Ok(())
    }
}

pub(super) fn open_audio_encoder(codec: AudioCodec) -> Result<ff::encoder::audio::Encoder, String> {
    let found = match codec {
        AudioCodec::Aac => ff::encoder::find(ff::codec::Id::AAC),
        AudioCodec::Mp3 => ff::encoder::find_by_name("libmp3lame"),
    }
    .ok_or_else(|| format!("{codec:?} encoder is not available in this libavcodec"))?;
    let mut enc = ff::codec::context::Context::new_with_codec(found)
        .encoder()
        .audio()
        .map_err(err("audio encoder"))?;
    enc.set_rate(AUDIO_RATE);
    enc.set_channel_layout(ChannelLayout::STEREO);
    enc.set_format(Sample::F32(ff::format::sample::Type::Planar));
    enc.set_bit_rate(AUDIO_KBPS * 1000);
    enc.set_time_base(ff::Rational(1, AUDIO_RATE));
    enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    enc.open_with(ff::Dictionary::new())
        .map_err(err("opening the audio encoder"))
}
