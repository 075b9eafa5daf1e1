//! A tiny FLV file reader (tags as they are in the file) and the conversions the
//! RTMP interop tests use to feed `vodfleet_rtmp::flv` other input forms.

use std::path::Path;

/// One tag of an FLV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlvTag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    /// Timestamp in ms (with the extension byte).
    pub timestamp_ms: u32,
    /// The tag body.
    pub body: Vec<u8>,
}

impl FlvTag {
    /// For video: whether this is an AVC NALU packet (not a sequence header/end).
    pub fn is_avc_frame(&self) -> bool {
        self.kind == 9 && self.body.get(1) == Some(&1)
    }

    /// For video: whether the frame type is "key frame".
    pub fn is_key(&self) -> bool {
        self.kind == 9 && self.body.first().is_some_and(|b| b >> 4 == 1)
    }

    /// For AVC frames: the composition time offset (signed 24 bits).
    pub fn cts_ms(&self) -> i32 {
        let b = &self.body[2..5];
        let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
        (v << 8) >> 8
    }
}

/// Every tag of the FLV file at `path` (panics on a malformed file).
pub fn read_tags(path: &Path) -> Vec<FlvTag> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(data.starts_with(b"FLV"), "{} is not FLV", path.display());
    let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut pos = header_len + 4; // header + PreviousTagSize0
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let h = &data[pos..pos + 11];
        let kind = h[0] & 0x1F;
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let start = pos + 11;
        assert!(
            start + size <= data.len(),
            "truncated tag at {pos} in {}",
            path.display()
        );
        tags.push(FlvTag {
            kind,
            timestamp_ms: ts,
            body: data[start..start + size].to_vec(),
        });
        pos = start + size + 4;
    }
    tags
}

/// 4-byte length-prefixed NAL units → Annex-B with 4-byte start codes.
pub fn length_prefixed_to_annexb(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    while data.len() >= 4 {
        let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let n = n.min(data.len() - 4);
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&data[4..4 + n]);
        data = &data[4 + n..];
    }
    out
}

/// The SPS and PPS of an `avcC` record as Annex-B.
pub fn avcc_to_annexb(avcc: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 6;
    let n_sps = usize::from(avcc[5] & 0x1F);
    let mut take = |pos: &mut usize| {
        let n = usize::from(u16::from_be_bytes([avcc[*pos], avcc[*pos + 1]]));
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&avcc[*pos + 2..*pos + 2 + n]);
        *pos += 2 + n;
    };
    for _ in 0..n_sps {
        take(&mut pos);
    }
    let n_pps = usize::from(avcc[pos]);
    pos += 1;
    for _ in 0..n_pps {
        take(&mut pos);
    }
    out
}

/// An ADTS header (no CRC) for a raw AAC frame of `payload_len` bytes, from the
/// 2-byte AudioSpecificConfig `asc`.
pub fn adts_header(asc: &[u8], payload_len: usize) -> [u8; 7] {
    let object_type = asc[0] >> 3;
    let freq = ((asc[0] & 7) << 1) | (asc[1] >> 7);
    let channels = (asc[1] >> 3) & 0x0F;
    let len = payload_len + 7;
    [
        0xFF,
        0xF1,
        ((object_type - 1) << 6) | (freq << 2) | (channels >> 2),
        ((channels & 3) << 6) | ((len >> 11) as u8 & 3),
        (len >> 3) as u8,
        (((len & 7) << 5) as u8) | 0x1F,
        0xFC,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(
            length_prefixed_to_annexb(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41]),
            vec![0, 0, 0, 1, 0x65, 1, 0, 0, 0, 1, 0x41]
        );
        let avcc = [1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 1, 1, 0, 1, 0x68];
        assert_eq!(
            avcc_to_annexb(&avcc),
            vec![0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68]
        );
        let h = adts_header(&[0x12, 0x10], 100);
        assert_eq!(&h[..3], &[0xFF, 0xF1, 0x50]);
        let t = FlvTag {
            kind: 9,
            timestamp_ms: 0,
            body: vec![0x27, 1, 0xff, 0xff, 0xd8],
        };
        assert_eq!(t.cts_ms(), -40);
        assert!(t.is_avc_frame() && !t.is_key());
    }
}
