//! A task's output once its first item is open: copy or transcode, the one
//! timeline, the pacer, and the fan-out to the destinations.

use crate::destination::{Destination, Setup};
use crate::frame::{self, Frame, Header, Headers, Tracks};
use crate::media::slate::{Shape, Slate};
use crate::media::transcode::{conform, Transcoder};
use crate::media::{adts, CodecId, OutPacket, SharedParams, StreamSetup};
use crate::pacer::{Pacer, SystemClock};
use crate::timeline::{Timeline, Track};
use ffmpeg_next as ff;
use std::sync::Arc;

pub enum Mode {
    Copy,
    Transcode(Box<Transcoder>),
}

/// The streams of an item a copy-mode output takes ([`Output::copy_streams`]).
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub video: Option<usize>,
    pub audio: Option<usize>,
    /// The item's audio is another codec than the stream's AAC: it is
    /// transcoded to AAC for this item (docs/design/timeline.md, "Seams").
    pub conform_audio: bool,
    /// The item's video is another codec than the stream's H.264 (HEVC,
    /// MPEG-4 Part 2, VP9): it is decoded and encoded to H.264 at the
    /// stream's size and frame rate for this item.
    pub conform_video: bool,
}

pub struct Output {
    pub mode: Mode,
    pub setup: StreamSetup,
    pub tracks: Tracks,
    /// Current sequence header per track (changes at unlike seams in copy mode).
    pub config: [Option<Arc<Header>>; 2],
    /// Codec extradata the current headers were made from.
    extradata: [Vec<u8>; 2],
    pub timeline: Timeline,
    pub pacer: Pacer<SystemClock>,
    pub dests: Vec<Destination>,
    /// Last DTS sent per track, for encoder output (copy mode goes through the timeline's own guard).
    pub last_dts: [i64; 2],
    /// The segment playing now (item, loop, its source origin), for positions in transcode mode.
    pub playing: (usize, u32, i64),
    /// Copy mode: the transcoder conforming the current item's video and/or
    /// audio to the stream's codecs, if it needs one ([`Self::conform_item`]).
    pub conform: Option<Box<Transcoder>>,
    /// The stream's frame rate, if known (the slate's pictures follow it).
    pub fps: Option<f64>,
    /// Copy mode: the slate, encoded the first time a wait needs it.
    pub slate: SlateCache,
    /// Copy mode: how the current segment goes on after a slate covered a late read.
    pub resync: Resync,
    /// Copy mode: how far the last video keyframe's DTS ran before its PTS
    /// (the B-frame delay a slate hands back to; µs).
    pub key_delay: i64,
    /// Copy mode: the next video keyframe carries the SPS/PPS on air in-band
    /// (the first one after a slate; `slate::with_parameter_sets`).
    pub inband_key: bool,
    /// The item's sequence headers (and their extradata) while the slate's are on air.
    saved_headers: Option<(Headers, [Vec<u8>; 2])>,
    /// Copy mode: the current item's AAC is ADTS-framed without an
    /// AudioSpecificConfig (MPEG-TS): [`Self::raw_audio`] unwraps its packets.
    adts: bool,
}

/// A copy-mode task's slate (docs/design/sources.md, "Never dark").
pub enum SlateCache {
    Unbuilt,
    /// Being encoded on a thread of its own.
    Building(tokio::sync::oneshot::Receiver<Result<Slate, String>>),
    Ready(Arc<Slate>),
    /// It could not be made (logged once): waits go uncovered, as before.
    Unavailable,
}

/// Copy mode, after a slate interrupted a segment: the decoder at the other
/// end saw the slate's pictures and sequence headers, so the item goes on at
/// its next keyframe (up to a GOP of it is skipped; docs/design/sources.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    No,
    /// Packets are dropped up to the next video keyframe (or audio frame when
    /// the segment has no video); there the segment goes on after the slate.
    AwaitKey,
    /// Went on at the keyframe shown at this source time: audio before it is dropped.
    From(i64),
}

impl Output {
    /// The output of `setup` in `mode`, with no destinations yet.
    pub fn new(
        mode: Mode,
        setup: StreamSetup,
        fps: Option<f64>,
        timeline_base_us: i64,
        burst: std::time::Duration,
    ) -> Result<Output, String> {
        let (tracks, mut config) = frame::tracks(setup.video.as_ref(), setup.audio.as_ref(), fps)?;
        let adts = matches!(mode, Mode::Copy) && setup.audio.as_ref().is_some_and(adts_framed);
        if adts {
            // No AudioSpecificConfig yet: the first ADTS header brings it (`raw_audio`).
            config[Track::Audio as usize] = None;
        }
        let extra =
            |p: Option<&SharedParams>| p.map(|p| p.extradata().to_vec()).unwrap_or_default();
        let extradata = [extra(setup.video.as_ref()), extra(setup.audio.as_ref())];
        Ok(Output {
            mode,
            setup,
            tracks,
            config,
            extradata,
            timeline: Timeline::starting_at(timeline_base_us),
            pacer: Pacer::new(SystemClock, burst),
            dests: Vec::new(),
            last_dts: [-1, -1],
            playing: (0, 0, 0),
            conform: None,
            fps,
            slate: SlateCache::Unbuilt,
            resync: Resync::No,
            inband_key: false,
            key_delay: 0,
            saved_headers: None,
            adts,
        })
    }

    /// What the slate of this output looks like: the first item's picture size,
    /// the stream's frame rate, its audio codec, rate and channels.
    pub fn slate_shape(&self) -> Shape {
        Shape {
            video: self.setup.video.as_ref().map(|v| {
                let (w, h) = v.size();
                (w, h, self.fps.unwrap_or(25.0))
            }),
            audio: self.setup.audio.as_ref().map(|a| {
                let (rate, channels) = a.audio_format();
                (a.codec_id(), rate, channels)
            }),
        }
    }

    /// Puts the slate's sequence headers on air (copy mode), keeping the
    /// item's for [`Self::restore_headers`]: the slate is an unlike seam.
    pub fn slate_headers(&mut self, slate: &Slate) -> Result<(), String> {
        if self.saved_headers.is_none() {
            self.saved_headers = Some((self.config.clone(), self.extradata.clone()));
        }
        for track in [Track::Video, Track::Audio] {
            if let Some(p) = &slate.params[track as usize] {
                self.note_config(track, p)?;
            }
        }
        Ok(())
    }

    /// The codec extradata of `track` on air.
    pub fn extradata(&self, track: Track) -> &[u8] {
        &self.extradata[track as usize]
    }

    /// The item's sequence headers again after the slate.
    pub fn restore_headers(&mut self) {
        if let Some((config, extradata)) = self.saved_headers.take() {
            self.config = config;
            self.extradata = extradata;
        }
    }

    /// What a destination needs to (re)start a session now.
    pub fn destination_setup(
        &self,
        publish: vodfleet_rtmp::publish::PublishOptions,
        takeover: Option<std::time::Duration>,
    ) -> Arc<Setup> {
        Arc::new(Setup {
            tracks: self.tracks.clone(),
            headers: self.config.clone(),
            publish,
            takeover,
        })
    }

    /// Checks that an item can be copied into this output, and notes a new
    /// codec configuration when it differs from the previous item's. An item
    /// whose video codec differs from an H.264 stream's (HEVC after H.264) or
    /// whose audio codec differs from an AAC stream's (MP3 after AAC) is
    /// conformed: that track is transcoded for this item alone
    /// (`conform_video`, `conform_audio`); any other codec change fails the item.
    pub fn copy_streams(
        &mut self,
        input: &ff::format::context::Input,
        video: Option<usize>,
        audio: Option<usize>,
    ) -> Result<Copied, String> {
        let stream_is = |p: Option<&SharedParams>, codec| p.is_some_and(|p| p.codec_id() == codec);
        self.adts = false;
        let (v, conform_video) = match self.keep(input, video, Track::Video) {
            Ok(v) => (v, false),
            Err(_) if stream_is(self.setup.video.as_ref(), CodecId::H264) => (video, true),
            Err(e) => return Err(e),
        };
        let (a, conform_audio) = match self.keep(input, audio, Track::Audio) {
            Ok(a) => (a, false),
            Err(_) if stream_is(self.setup.audio.as_ref(), CodecId::AAC) => (audio, true),
            Err(e) => return Err(e),
        };
        if v.is_none() && a.is_none() {
            return Err("no stream this task's output can carry".into());
        }
        Ok(Copied {
            video: v,
            audio: a,
            conform_audio,
            conform_video,
        })
    }

    /// Copy mode: starts conforming the tracks of `c` that need it (an
    /// encoder for this item alone, its clocks at the end of what is on air)
    /// and puts its codec configuration on air as sequence headers. The
    /// video is encoded at the first item's size and the stream's frame rate,
    /// its decode times as far behind its pictures as the copied items' were
    /// (docs/design/timeline.md, "Seams").
    pub fn conform_item(
        &mut self,
        input: &ff::format::context::Input,
        c: &Copied,
    ) -> Result<(), String> {
        self.conform = None;
        let video = c.video.filter(|_| c.conform_video);
        let audio = c.audio.filter(|_| c.conform_audio);
        if video.is_none() && audio.is_none() {
            return Ok(());
        }
        let target = conform::Target {
            size: self.setup.video.as_ref().map_or((0, 0), |v| v.size()),
            fps: self.fps,
            dts_delay: self.key_delay,
        };
        let t = Transcoder::conform(input, video, audio, &target, self.timeline.reached())?;
        let setup = t.setup();
        for (track, p) in [(Track::Video, &setup.video), (Track::Audio, &setup.audio)] {
            if let Some(p) = p {
                self.note_config(track, p)?;
            }
        }
        self.conform = Some(Box::new(t));
        Ok(())
    }

    /// Copy mode, at the end of an item: its conforming encoder's last
    /// packets. After conformed video, the next copied keyframe names its
    /// SPS/PPS in-band too (`slate::with_parameter_sets`).
    pub fn end_conform(&mut self) -> Vec<OutPacket> {
        let Some(mut t) = self.conform.take() else {
            return Vec::new();
        };
        if t.encodes(Track::Video) {
            self.inband_key = true;
        }
        t.flush()
    }

    fn keep(
        &mut self,
        input: &ff::format::context::Input,
        idx: Option<usize>,
        track: Track,
    ) -> Result<Option<usize>, String> {
        let want = match track {
            Track::Video => self.setup.video.as_ref(),
            Track::Audio => self.setup.audio.as_ref(),
        };
        let (Some(i), Some(want)) = (idx, want) else {
            return Ok(None);
        };
        let p = input
            .stream(i)
            .expect("stream index from this input")
            .parameters();
        let what = if track == Track::Video {
            "video"
        } else {
            "audio"
        };
        if p.id() != want.codec_id() {
            return Err(format!(
                "{what} codec {:?} differs from the stream's {:?}; add fops to transcode mixed playlists",
                p.id(),
                want.codec_id()
            ));
        }
        let p = SharedParams(p);
        if track == Track::Audio && adts_framed(&p) {
            // The configuration on air changes at this item's first ADTS header, if it differs.
            self.adts = true;
        } else {
            self.note_config(track, &p)?;
        }
        Ok(Some(i))
    }

    /// Copy mode: an audio packet as FLV carries it. The AAC of an item
    /// without an AudioSpecificConfig is ADTS-framed (MPEG-TS): each header
    /// is stripped, and the configuration it describes goes on air as the
    /// AAC sequence header whenever it differs from the one there (the
    /// first packet of the task or of the item). `None`: a frame cut short
    /// at the end of a file, dropped. Other packets pass as they are.
    pub fn raw_audio(&mut self, packet: ff::Packet) -> Result<Option<ff::Packet>, String> {
        let Some(data) = packet.data().filter(|_| self.adts) else {
            return Ok(Some(packet));
        };
        let Some((h, raw)) = adts::raw_frame(data)? else {
            return Ok(None);
        };
        let asc = h.audio_specific_config();
        let slot = Track::Audio as usize;
        if self.extradata[slot] != asc {
            self.config[slot] = frame::header(Track::Audio, CodecId::AAC, &asc)?;
            self.extradata[slot] = asc.to_vec();
        }
        // Only the payload reaches the tag (`Frame::from_packet`): timing stays with the cut packet.
        Ok(Some(ff::Packet::copy(raw)))
    }

    /// Sends a new sequence header for `track` from now on if `params`'
    /// configuration differs from the one on air.
    pub fn note_config(&mut self, track: Track, params: &SharedParams) -> Result<(), String> {
        let extra = params.extradata();
        let slot = track as usize;
        if self.extradata[slot] != extra {
            self.config[slot] = frame::header(track, params.codec_id(), extra)?;
            self.extradata[slot] = extra.to_vec();
        }
        Ok(())
    }

    /// The shared tag of a packet, carrying its track's configuration.
    pub fn frame(&self, p: &OutPacket) -> Option<Frame> {
        let mut f = Frame::from_packet(p, &self.tracks)?;
        f.config = self.config[p.track as usize].clone();
        Some(f)
    }

    /// Offers a frame to every destination; false once none is left alive.
    pub fn fan_out(&mut self, f: &Frame) -> bool {
        for d in &mut self.dests {
            d.offer(f);
        }
        self.dests.iter().any(|d| d.alive())
    }

    /// Ends every destination: after what is queued (`drain`) or at once.
    pub async fn close(self, drain: bool) {
        futures_util::future::join_all(self.dests.into_iter().map(|d| d.close(drain))).await;
    }
}

/// AAC whose codec parameters carry no AudioSpecificConfig: its packets are
/// ADTS-framed (MPEG-TS; docs/design/timeline.md, "Seams").
fn adts_framed(p: &SharedParams) -> bool {
    p.codec_id() == CodecId::AAC && p.extradata().is_empty()
}

/// Whether a source's streams can be copied into FLV as they are.
pub fn copyable(
    video: Option<&ff::codec::Parameters>,
    audio: Option<&ff::codec::Parameters>,
) -> bool {
    video.is_none_or(|p| p.id() == CodecId::H264)
        && audio.is_none_or(|p| matches!(p.id(), CodecId::AAC | CodecId::MP3))
}
