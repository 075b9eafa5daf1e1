//! The FLV tag bodies built from demuxed packets (the engine hands libav's packet
//! bytes and extradata to these, so a crafted file reaches them): AVC sequence
//! headers from `avcC` or Annex-B, AVC frames (Annex-B converted to length
//! prefixes), AAC with or without ADTS, MP3. Must never panic, and what they
//! build must parse back: every Annex-B unit appears, length-prefixed, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vodfleet_rtmp::flv;

/// Splits a length-prefixed AVC payload into NAL units (None if it is not one).
fn length_prefixed_units(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let n = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let unit = data.get(4..4 + n)?;
        out.push(unit);
        data = &data[4 + n..];
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    if let Ok(tag) = flv::avc_sequence_header(body) {
        assert_eq!(
            &tag[..5],
            &[0x17, 0, 0, 0, 0],
            "AVC sequence header tag head"
        );
        assert_eq!(tag[5], 1, "configurationVersion of the avcC record");
    }
    let cts = i32::from_le_bytes([sel, sel.rotate_left(3), 0, sel]) - (1 << 23);
    let frame = flv::avc_frame(body, sel & 1 == 1, cts);
    assert_eq!(frame[0] & 0x0F, 7, "codec id AVC");
    assert_eq!(frame[1], 1, "AVC NALU packet");
    if flv::starts_with_start_code(body) && !flv::is_length_prefixed(body) {
        let units = length_prefixed_units(&frame[5..]).expect("Annex-B becomes length-prefixed");
        let want: Vec<&[u8]> = flv::annexb_nal_units(body).collect();
        assert_eq!(units, want, "every Annex-B unit, in order");
    } else {
        assert_eq!(&frame[5..], body, "other data passes through");
    }
    let aac = flv::aac_frame(body);
    let skipped = flv::adts_header_len(body).unwrap_or(0);
    assert!(skipped == 0 || skipped == 7 || skipped == 9);
    assert_eq!(&aac[2..], &body[skipped..]);
    let _ = flv::asc_from_adts(body);
    let _ = flv::aac_sequence_header(body);
    let rate = u32::from(sel) * 400;
    let mp3 = flv::mp3_frame(body, rate, u16::from(sel >> 6));
    assert_eq!(&mp3[1..], body);
});
