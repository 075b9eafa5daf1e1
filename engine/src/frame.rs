//! What the fan-out hands every destination of a task: FLV tag bodies built
//! once per packet and shared by reference count (`Bytes`), never copied per
//! destination. Each destination only adds its own chunk headers.

use crate::media::{CodecId, OutPacket, SharedParams};
use crate::timeline::Track;
use bytes::Bytes;
use std::sync::Arc;
use vodfleet_rtmp::flv;
use vodfleet_rtmp::publish::{Tag, TagKind};

/// A track's codec configuration as an FLV sequence header (AVC decoder
/// configuration, AudioSpecificConfig). A new `Arc` means a new configuration:
/// destinations compare by pointer and send it again before the next frame.
#[derive(Debug)]
pub struct Header {
    pub body: Bytes,
}

/// How the output's audio is carried (MP3 has no sequence header but needs
/// its rate and channels in every tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCarriage {
    Aac,
    Mp3 { sample_rate: u32, channels: u16 },
}

/// What the output carries, fixed when the task's output opens.
#[derive(Debug, Clone)]
pub struct Tracks {
    pub video: bool,
    pub audio: Option<AudioCarriage>,
    /// `onMetaData`, sent first on every (re)connect.
    pub metadata: Bytes,
}

/// One packet on its way to the destinations.
#[derive(Debug, Clone)]
pub struct Frame {
    pub track: Track,
    pub key: bool,
    /// Output DTS in milliseconds (the RTMP timestamp).
    pub dts_ms: i64,
    pub body: Bytes,
    /// The configuration this frame needs (see [`Header`]).
    pub config: Option<Arc<Header>>,
}

impl Frame {
    /// Builds the shared tag body of an output packet.
    pub fn from_packet(p: &OutPacket, tracks: &Tracks) -> Option<Frame> {
        let data = p.packet.data()?;
        let body = match p.track {
            Track::Video => {
                let cts = ((p.pts_us - p.dts_us) / 1000).clamp(i32::MIN as i64, i32::MAX as i64);
                flv::avc_frame(data, p.key, cts as i32)
            }
            Track::Audio => match tracks.audio? {
                AudioCarriage::Aac => flv::aac_frame(data),
                AudioCarriage::Mp3 {
                    sample_rate,
                    channels,
                } => flv::mp3_frame(data, sample_rate, channels),
            },
        };
        Some(Frame {
            track: p.track,
            key: p.key,
            dts_ms: p.dts_us.div_euclid(1000),
            body,
            config: None,
        })
    }

    /// The RTMP message of this frame.
    pub fn tag(&self) -> Tag {
        Tag {
            kind: kind(self.track),
            timestamp_ms: self.dts_ms as u32,
            payload: self.body.clone(),
        }
    }
}

/// The RTMP message of a sequence header at `dts_ms`.
pub fn header_tag(track: Track, h: &Header, dts_ms: i64) -> Tag {
    Tag {
        kind: kind(track),
        timestamp_ms: dts_ms as u32,
        payload: h.body.clone(),
    }
}

fn kind(t: Track) -> TagKind {
    match t {
        Track::Video => TagKind::Video,
        Track::Audio => TagKind::Audio,
    }
}

/// The sequence header of a track from its codec extradata, if it needs one.
pub fn header(
    track: Track,
    codec: CodecId,
    extradata: &[u8],
) -> Result<Option<Arc<Header>>, String> {
    let body = match (track, codec) {
        (Track::Video, CodecId::H264) => {
            flv::avc_sequence_header(extradata).map_err(|e| format!("H.264 configuration: {e}"))?
        }
        (Track::Audio, CodecId::AAC) => flv::aac_sequence_header(extradata),
        (Track::Audio, CodecId::MP3) => return Ok(None),
        (_, other) => return Err(format!("{other:?} cannot be carried in FLV by this worker")),
    };
    Ok(Some(Arc::new(Header { body })))
}

/// The sequence header per track (video, audio), where the codec has one.
pub type Headers = [Option<Arc<Header>>; 2];

/// What the output carries and its first sequence headers, from the codec
/// parameters of the output tracks.
pub fn tracks(
    video: Option<&SharedParams>,
    audio: Option<&SharedParams>,
    fps: Option<f64>,
) -> Result<(Tracks, Headers), String> {
    let mut headers = [None, None];
    let mut meta = flv::Metadata::default();
    if let Some(v) = video {
        headers[0] = header(Track::Video, v.codec_id(), v.extradata())?;
        let (w, h) = v.size();
        meta.width = Some(w);
        meta.height = Some(h);
        meta.framerate = fps;
        meta.video_codec = Some(flv::VideoCodec::H264);
    }
    let audio_carriage = match audio {
        None => None,
        Some(a) => {
            headers[1] = header(Track::Audio, a.codec_id(), a.extradata())?;
            let (rate, channels) = a.audio_format();
            meta.audio_sample_rate = Some(rate);
            meta.stereo = Some(channels >= 2);
            Some(if a.codec_id() == CodecId::MP3 {
                meta.audio_codec = Some(flv::AudioCodec::Mp3);
                AudioCarriage::Mp3 {
                    sample_rate: rate,
                    channels,
                }
            } else {
                meta.audio_codec = Some(flv::AudioCodec::Aac);
                AudioCarriage::Aac
            })
        }
    };
    Ok((
        Tracks {
            video: video.is_some(),
            audio: audio_carriage,
            metadata: flv::metadata(&meta),
        },
        headers,
    ))
}
