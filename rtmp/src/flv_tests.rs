use super::*;
use crate::amf0;

const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];

fn annexb(units: &[&[u8]], long_codes: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, u) in units.iter().enumerate() {
        if long_codes || i == 0 {
            v.extend_from_slice(&[0, 0, 0, 1]);
        } else {
            v.extend_from_slice(&[0, 0, 1]);
        }
        v.extend_from_slice(u);
    }
    v
}

fn length_prefixed(units: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for u in units {
        v.extend_from_slice(&(u.len() as u32).to_be_bytes());
        v.extend_from_slice(u);
    }
    v
}

#[test]
fn sequence_header_from_annexb_builds_avcc() {
    let body = avc_sequence_header(&annexb(&[SPS, PPS], true)).unwrap();
    let mut want = vec![0x17, 0, 0, 0, 0];
    want.extend_from_slice(&[1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 7]);
    want.extend_from_slice(SPS);
    want.extend_from_slice(&[1, 0, 4]);
    want.extend_from_slice(PPS);
    assert_eq!(&body[..], &want[..]);
    // Three-byte start codes, trailing zeros and an AUD in between change nothing.
    let mut messy = annexb(&[&[0x09u8, 0xf0][..], SPS, PPS], false);
    messy.extend_from_slice(&[0, 0]);
    assert_eq!(avc_sequence_header(&messy).unwrap(), body);
}

#[test]
fn sequence_header_passes_avcc_through_and_refuses_junk() {
    let avcc = [1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 0];
    let body = avc_sequence_header(&avcc).unwrap();
    assert_eq!(&body[..5], &[0x17, 0, 0, 0, 0]);
    assert_eq!(&body[5..], &avcc);
    let table: [(&[u8], FlvError); 5] = [
        (&[], FlvError::EmptyExtradata),
        (&[1, 2, 3], FlvError::ShortAvcc(3)),
        (&[0x42, 0x42], FlvError::UnknownExtradata),
        (&[0, 0, 0, 1, 0x68, 1], FlvError::MissingSps),
        (&[0, 0, 0, 1, 0x67, 1, 2, 3], FlvError::MissingPps),
    ];
    for (input, err) in table {
        assert_eq!(avc_sequence_header(input).unwrap_err(), err, "{input:?}");
    }
}

#[test]
fn frames_get_length_prefixes() {
    let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x21];
    let slice: &[u8] = &[0x41, 0x9a, 0x02];
    // (input, key, cts, expected body after the 5-byte header)
    let table: Vec<(Vec<u8>, bool, i32, Vec<u8>)> = vec![
        (annexb(&[idr], true), true, 0, length_prefixed(&[idr])),
        (
            annexb(&[SPS, PPS, idr], false),
            true,
            40,
            length_prefixed(&[SPS, PPS, idr]),
        ),
        (
            annexb(&[slice, slice], true),
            false,
            -40,
            length_prefixed(&[slice, slice]),
        ),
        (length_prefixed(&[idr]), true, 0, length_prefixed(&[idr])),
        // A 300-byte unit's prefix starts 00 00 01: still length-prefixed.
        (
            length_prefixed(&[&[0x41u8; 300][..]]),
            false,
            0,
            length_prefixed(&[&[0x41u8; 300][..]]),
        ),
    ];
    for (input, key, cts, want) in table {
        let body = avc_frame(&input, key, cts);
        let frame = if key { 0x17 } else { 0x27 };
        let c = cts.to_be_bytes();
        assert_eq!(&body[..5], &[frame, 1, c[1], c[2], c[3]], "{input:?}");
        assert_eq!(&body[5..], &want[..], "{input:?}");
    }
    assert_eq!(&avc_frame(&[], false, 1 << 30)[2..5], &[0x7f, 0xff, 0xff]);
    assert_eq!(&avc_end_of_sequence()[..], &[0x17, 2, 0, 0, 0]);
}

#[test]
fn nal_unit_splitting() {
    let data = [
        0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 0, 1, 0x65, 3, 0, 0, 1,
    ];
    let units: Vec<&[u8]> = annexb_nal_units(&data).collect();
    assert_eq!(units, vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65, 3][..]]);
    assert_eq!(annexb_nal_units(&[1, 2, 3]).count(), 0);
    assert!(is_length_prefixed(&[0, 0, 0, 1, 0x65]));
    assert!(!is_length_prefixed(&[0, 0, 0, 2, 0x65]));
    assert!(!is_length_prefixed(&[0, 0, 0, 1, 0xe5]));
    assert!(!is_length_prefixed(&[]));
}

/// An ADTS header (no CRC) for a frame of `payload` bytes: AAC LC, 44.1 kHz, stereo.
fn adts(payload: usize, crc: bool) -> Vec<u8> {
    let header = if crc { 9 } else { 7 };
    let len = payload + header;
    let mut h = vec![
        0xFF,
        if crc { 0xF0 } else { 0xF1 },
        (1 << 6) | (4 << 2),
        (2 << 6) | ((len >> 11) as u8 & 3),
        (len >> 3) as u8,
        ((len & 7) << 5) as u8 | 0x1F,
        0xFC,
    ];
    if crc {
        h.extend_from_slice(&[0xAB, 0xCD]);
    }
    h
}

#[test]
fn aac_strips_adts() {
    let raw = [0x21u8, 0x10, 0x05, 0x80];
    for crc in [false, true] {
        let mut framed = adts(raw.len(), crc);
        assert_eq!(
            adts_header_len(&framed.iter().chain(&raw).copied().collect::<Vec<_>>()),
            Some(if crc { 9 } else { 7 })
        );
        framed.extend_from_slice(&raw);
        assert_eq!(&aac_frame(&framed)[..], &[0xAF, 1, 0x21, 0x10, 0x05, 0x80]);
        assert_eq!(asc_from_adts(&framed), Some([0x12, 0x10]));
    }
    assert_eq!(&aac_frame(&raw)[..], &[0xAF, 1, 0x21, 0x10, 0x05, 0x80]);
    // A header whose frame length exceeds the data is not taken for ADTS.
    let mut short = adts(100, false);
    short.extend_from_slice(&raw);
    assert_eq!(adts_header_len(&short), None);
    assert_eq!(
        &aac_sequence_header(&[0x12, 0x10])[..],
        &[0xAF, 0, 0x12, 0x10]
    );
}

#[test]
fn mp3_flags() {
    let table = [
        (44_100, 2, 0x2F),
        (48_000, 1, 0x2E),
        (22_050, 2, 0x2B),
        (11_025, 1, 0x26),
        (8_000, 1, 0xE2),
    ];
    for (rate, ch, flags) in table {
        assert_eq!(mp3_frame(&[9], rate, ch)[..], [flags, 9], "{rate} {ch}");
    }
}

#[test]
fn metadata_has_only_known_fields() {
    let body = metadata(&Metadata {
        width: Some(640),
        height: Some(360),
        framerate: Some(25.0),
        video_codec: Some(VideoCodec::H264),
        audio_codec: Some(AudioCodec::Aac),
        audio_sample_rate: Some(44_100),
        stereo: Some(true),
        ..Metadata::default()
    });
    let v = amf0::decode_all(&body).unwrap();
    assert_eq!(v[0].as_str(), Some("@setDataFrame"));
    assert_eq!(v[1].as_str(), Some("onMetaData"));
    let Value::EcmaArray(fields) = &v[2] else {
        panic!("{v:?}")
    };
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "width",
            "height",
            "framerate",
            "videocodecid",
            "audiocodecid",
            "audiosamplerate",
            "stereo"
        ]
    );
    assert_eq!(v[2].get("videocodecid"), Some(&Value::Number(7.0)));
    assert_eq!(v[2].get("audiocodecid"), Some(&Value::Number(10.0)));
    let empty = amf0::decode_all(&metadata(&Metadata::default())).unwrap();
    assert_eq!(empty[2], Value::EcmaArray(vec![]));
}

#[test]
fn file_header_and_tags_frame_an_flv_file() {
    assert_eq!(&file_header(true, true)[..5], b"FLV\x01\x05");
    assert_eq!(file_header(false, true)[4], 1);
    assert_eq!(&file_header(true, false)[5..], &[0, 0, 0, 9, 0, 0, 0, 0]);
    // A timestamp past 24 bits keeps its high byte in the extension field.
    let t = file_tag(9, 0x0123_4567, b"abc").unwrap();
    assert_eq!(
        t,
        [9, 0, 0, 3, 0x23, 0x45, 0x67, 0x01, 0, 0, 0, b'a', b'b', b'c', 0, 0, 0, 14]
    );
    assert!(file_tag(8, 0, &vec![0; 1 << 24]).is_none());
}
