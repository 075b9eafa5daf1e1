//! FLV tag *bodies*: what goes into an RTMP audio (8), video (9) or data (18)
//! message. Each function returns one [`Bytes`] that every destination of a task
//! can share (reference-counted, never copied again).
//!
//! H.264 goes out as AVC in FLV: a sequence header holding an `avcC` record, then
//! frames whose NAL units carry 4-byte big-endian length prefixes. Input may be
//! Annex-B (start codes) or already length-prefixed; see [`avc_frame`]. AAC goes
//! out as an AudioSpecificConfig header, then raw frames (an ADTS header is
//! stripped). The `avcC` built from Annex-B SPS/PPS omits the optional
//! high-profile extension fields (chroma format, bit depths), as decoders derive
//! them from the SPS.

use bytes::{BufMut, Bytes, BytesMut};

use crate::amf0::Value;

/// FLV codec id of H.264/AVC.
pub const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
pub const SOUND_AAC: u8 = 10;
/// FLV sound format of MP3.
pub const SOUND_MP3: u8 = 2;

/// Why a sequence header could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The codec extradata is empty.
    #[error("H.264 extradata is empty")]
    EmptyExtradata,
    /// Neither an `avcC` record (first byte 1) nor Annex-B.
    #[error("H.264 extradata is neither avcC nor Annex-B")]
    UnknownExtradata,
    /// An `avcC` record shorter than its fixed fields.
    #[error("avcC record of {0} bytes is too short")]
    ShortAvcc(usize),
    /// Annex-B extradata without a usable SPS.
    #[error("H.264 extradata has no SPS")]
    MissingSps,
    /// Annex-B extradata without a PPS.
    #[error("H.264 extradata has no PPS")]
    MissingPps,
    /// A parameter set longer than `avcC` can describe (65535 bytes).
    #[error("H.264 parameter set of {0} bytes is too long for avcC")]
    ParameterSetTooLong(usize),
}

/// Whether `data` begins with an Annex-B start code (`00 00 01` or `00 00 00 01`).
pub fn starts_with_start_code(data: &[u8]) -> bool {
    data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])
}

/// Whether `data` is a complete sequence of 4-byte length-prefixed NAL units
/// (each length non-zero, each NAL's forbidden bit clear, ending exactly at the end).
pub fn is_length_prefixed(data: &[u8]) -> bool {
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(p) = data.get(pos..pos + 4) else {
            return false;
        };
        let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        let start = pos + 4;
        if n == 0 || data.len() - start < n || data[start] & 0x80 != 0 {
            return false;
        }
        pos = start + n;
    }
    !data.is_empty()
}

/// The NAL units of an Annex-B byte stream (start codes and trailing zero bytes
/// removed, empty units skipped).
pub fn annexb_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start_code(data, 0).map(|(_, nal)| nal);
    std::iter::from_fn(move || loop {
        let start = pos?;
        let (end, next) = match find_start_code(data, start) {
            Some((prefix, nal)) => (prefix, Some(nal)),
            None => (data.len(), None),
        };
        pos = next;
        let mut unit = &data[start..end];
        while let [rest @ .., 0] = unit {
            unit = rest;
        }
        if !unit.is_empty() {
            return Some(unit);
        }
    })
}

/// The next `00 00 01` at or after `from`: (its position, the byte after it).
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| (from + i, from + i + 3))
}

/// The video tag body of an AVC sequence header. `extradata` is an `avcC` record
/// (first byte 1, passed through) or Annex-B SPS/PPS (converted to `avcC`).
pub fn avc_sequence_header(extradata: &[u8]) -> Result<Bytes, FlvError> {
    let avcc: Vec<u8> = match extradata.first() {
        None => return Err(FlvError::EmptyExtradata),
        Some(1) if extradata.len() < 7 => return Err(FlvError::ShortAvcc(extradata.len())),
        Some(1) => extradata.to_vec(),
        Some(_) if starts_with_start_code(extradata) => avcc_from_annexb(extradata)?,
        Some(_) => return Err(FlvError::UnknownExtradata),
    };
    let mut b = BytesMut::with_capacity(5 + avcc.len());
    b.put_slice(&[0x10 | CODEC_AVC, 0, 0, 0, 0]);
    b.put_slice(&avcc);
    Ok(b.freeze())
}

fn avcc_from_annexb(data: &[u8]) -> Result<Vec<u8>, FlvError> {
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    for nal in annexb_nal_units(data) {
        match nal[0] & 0x1F {
            7 if nal.len() >= 4 => sps.push(nal),
            8 => pps.push(nal),
            _ => {}
        }
    }
    sps.truncate(31);
    pps.truncate(255);
    let first = *sps.first().ok_or(FlvError::MissingSps)?;
    if pps.is_empty() {
        return Err(FlvError::MissingPps);
    }
    let mut out = vec![
        1,
        first[1],
        first[2],
        first[3],
        0xFF,
        0xE0 | sps.len() as u8,
    ];
    for set in &sps {
        put_parameter_set(&mut out, set)?;
    }
    out.push(pps.len() as u8);
    for set in &pps {
        put_parameter_set(&mut out, set)?;
    }
    Ok(out)
}

fn put_parameter_set(out: &mut Vec<u8>, set: &[u8]) -> Result<(), FlvError> {
    let n = u16::try_from(set.len()).map_err(|_| FlvError::ParameterSetTooLong(set.len()))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(set);
    Ok(())
}

/// The video tag body of one H.264 access unit. `cts_ms` is PTS − DTS in
/// milliseconds (clamped to 24 bits). `data` that is a complete sequence of
/// length-prefixed NAL units ([`is_length_prefixed`]) is passed through; data
/// starting with a start code is Annex-B and its units get 4-byte length prefixes;
/// anything else is passed through unchanged.
pub fn avc_frame(data: &[u8], key: bool, cts_ms: i32) -> Bytes {
    let frame_type: u8 = if key { 1 } else { 2 };
    let cts = cts_ms.clamp(-0x80_0000, 0x7F_FFFF);
    let head = [
        frame_type << 4 | CODEC_AVC,
        1,
        (cts >> 16) as u8,
        (cts >> 8) as u8,
        cts as u8,
    ];
    if starts_with_start_code(data) && !is_length_prefixed(data) {
        let size: usize = annexb_nal_units(data).map(|n| 4 + n.len()).sum();
        let mut b = BytesMut::with_capacity(5 + size);
        b.put_slice(&head);
        for nal in annexb_nal_units(data) {
            b.put_u32(nal.len() as u32);
            b.put_slice(nal);
        }
        return b.freeze();
    }
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_slice(&head);
    b.put_slice(data);
    b.freeze()
}

/// The video tag body that ends an AVC sequence.
pub fn avc_end_of_sequence() -> Bytes {
    Bytes::from_static(&[0x10 | CODEC_AVC, 2, 0, 0, 0])
}

/// AAC's fixed first byte: format 10, "44 kHz", 16-bit, stereo (the real values
/// are in the AudioSpecificConfig).
const AAC_FLAGS: u8 = SOUND_AAC << 4 | 0x0F;

/// The audio tag body of an AAC sequence header (`asc`: AudioSpecificConfig).
pub fn aac_sequence_header(asc: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + asc.len());
    b.put_slice(&[AAC_FLAGS, 0]);
    b.put_slice(asc);
    b.freeze()
}

/// The audio tag body of one raw AAC frame; an ADTS header in front is removed.
pub fn aac_frame(raw: &[u8]) -> Bytes {
    let raw = &raw[adts_header_len(raw).unwrap_or(0)..];
    let mut b = BytesMut::with_capacity(2 + raw.len());
    b.put_slice(&[AAC_FLAGS, 1]);
    b.put_slice(raw);
    b.freeze()
}

/// The fields of one ADTS header (AAC as MPEG-TS carries it, without an
/// AudioSpecificConfig in its codec parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// MPEG-4 audio object type (ADTS profile + 1; 2 = AAC LC).
    pub object_type: u8,
    /// The sampling-frequency index (4 = 44.1 kHz, 3 = 48 kHz; 13–15 reserved).
    pub freq_index: u8,
    /// The channel configuration (0: a program config element says).
    pub channels: u8,
    /// Raw data blocks in the frame.
    pub blocks: u8,
    /// 7, or 9 with a CRC.
    pub header_len: usize,
    /// The whole frame, header included.
    pub frame_len: usize,
}

impl AdtsHeader {
    /// The header at the start of `data`, if there is one: sync word, layer 0,
    /// a frame length at least the header's (the frame may not all be in `data`).
    pub fn read(data: &[u8]) -> Option<AdtsHeader> {
        if data.len() < 7 || data[0] != 0xFF || data[1] & 0xF6 != 0xF0 {
            return None;
        }
        let header_len = if data[1] & 1 == 1 { 7 } else { 9 };
        let frame_len = (usize::from(data[3] & 3) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        (frame_len >= header_len).then_some(AdtsHeader {
            object_type: (data[2] >> 6) + 1,
            freq_index: (data[2] >> 2) & 0x0F,
            channels: ((data[2] & 1) << 2) | (data[3] >> 6),
            blocks: (data[6] & 3) + 1,
            header_len,
            frame_len,
        })
    }

    /// The 2-byte AudioSpecificConfig this header describes (GASpecificConfig
    /// with 1024-sample frames, no core coder, no extension), as FFmpeg's
    /// `aac_adtstoasc` writes it.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        [
            self.object_type << 3 | self.freq_index >> 1,
            (self.freq_index & 1) << 7 | self.channels << 3,
        ]
    }
}

/// The length of the ADTS header at the start of `data` (7, or 9 with CRC), if
/// there is one and its whole frame is in `data`.
pub fn adts_header_len(data: &[u8]) -> Option<usize> {
    AdtsHeader::read(data)
        .filter(|h| h.frame_len <= data.len())
        .map(|h| h.header_len)
}

/// The 2-byte AudioSpecificConfig described by an ADTS header (for sources that
/// carry ADTS without extradata).
pub fn asc_from_adts(data: &[u8]) -> Option<[u8; 2]> {
    adts_header_len(data)?;
    AdtsHeader::read(data).map(|h| h.audio_specific_config())
}

/// The audio tag body of one MP3 frame.
pub fn mp3_frame(data: &[u8], sample_rate: u32, channels: u16) -> Bytes {
    // FLV's rate field knows 5.5/11/22/44 kHz; 48 kHz MP3 is flagged 44 kHz (as
    // ffmpeg does) and 8 kHz has its own format (14).
    let (format, rate) = match sample_rate {
        8000 => (14, 0),
        0..=5512 => (SOUND_MP3, 0),
        5513..=12000 => (SOUND_MP3, 1),
        12001..=24000 => (SOUND_MP3, 2),
        _ => (SOUND_MP3, 3),
    };
    let flags = format << 4 | rate << 2 | 1 << 1 | u8::from(channels > 1);
    let mut b = BytesMut::with_capacity(1 + data.len());
    b.put_u8(flags);
    b.put_slice(data);
    b.freeze()
}

/// The start of an FLV *file*: the 9-byte header (version 1, the audio and
/// video flags) and `PreviousTagSize0`. For sources we turn into local files
/// (RTSP pulls, docs/design/sources.md); RTMP itself carries bodies only.
pub fn file_header(audio: bool, video: bool) -> [u8; 13] {
    let flags = u8::from(audio) << 2 | u8::from(video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// One tag of an FLV file: the 11-byte tag header (`kind` 8 audio, 9 video,
/// 18 data; the timestamp's low 24 bits, then its extension byte; stream id
/// 0), `body`, and the `PreviousTagSize` after it. `None` for a body over the
/// 24-bit size field.
pub fn file_tag(kind: u8, timestamp_ms: u32, body: &[u8]) -> Option<Vec<u8>> {
    let size = u32::try_from(body.len()).ok().filter(|&n| n < 1 << 24)?;
    let [ext, t2, t1, t0] = timestamp_ms.to_be_bytes();
    let [_, s2, s1, s0] = size.to_be_bytes();
    let mut out = Vec::with_capacity(15 + body.len());
    out.extend_from_slice(&[kind, s2, s1, s0, t2, t1, t0, ext, 0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(11 + size).to_be_bytes());
    Some(out)
}

/// Video codecs that `onMetaData` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (`videocodecid` 7).
    H264,
}

/// Audio codecs that `onMetaData` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioCodec {
    /// AAC (`audiocodecid` 10).
    Aac,
    /// MP3 (`audiocodecid` 2).
    Mp3,
}

/// What `onMetaData` says about a stream; `None` fields are left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    /// Picture width in pixels.
    pub width: Option<u32>,
    /// Picture height in pixels.
    pub height: Option<u32>,
    /// Frames per second.
    pub framerate: Option<f64>,
    /// The video codec, if there is video.
    pub video_codec: Option<VideoCodec>,
    /// Video bitrate in kbit/s.
    pub video_data_rate: Option<f64>,
    /// The audio codec, if there is audio.
    pub audio_codec: Option<AudioCodec>,
    /// Audio sample rate in Hz.
    pub audio_sample_rate: Option<u32>,
    /// Whether the audio has two or more channels.
    pub stereo: Option<bool>,
    /// Audio bitrate in kbit/s.
    pub audio_data_rate: Option<f64>,
}

/// The data message body `"@setDataFrame" "onMetaData" {ECMA array}` (servers
/// strip `@setDataFrame` and keep the rest as the stream's metadata).
pub fn metadata(m: &Metadata) -> Bytes {
    let num = |v: f64| Value::Number(v);
    let mut fields: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            fields.push((k.to_owned(), v));
        }
    };
    put("width", m.width.map(|v| num(v.into())));
    put("height", m.height.map(|v| num(v.into())));
    put("framerate", m.framerate.map(num));
    put("videocodecid", m.video_codec.map(|_| num(CODEC_AVC.into())));
    put("videodatarate", m.video_data_rate.map(num));
    put(
        "audiocodecid",
        m.audio_codec.map(|c| {
            num(match c {
                AudioCodec::Aac => SOUND_AAC.into(),
                AudioCodec::Mp3 => SOUND_MP3.into(),
            })
        }),
    );
    put(
        "audiosamplerate",
        m.audio_sample_rate.map(|v| num(v.into())),
    );
    put("stereo", m.stereo.map(Value::Boolean));
    put("audiodatarate", m.audio_data_rate.map(num));
    let mut out = Vec::with_capacity(64 + 24 * fields.len());
    Value::string("@setDataFrame").encode(&mut out);
    Value::string("onMetaData").encode(&mut out);
    Value::EcmaArray(fields).encode(&mut out);
    Bytes::from(out)
}

#[cfg(test)]
#[path = "flv_tests.rs"]
mod tests;
