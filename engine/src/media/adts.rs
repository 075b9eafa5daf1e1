//! AAC in ADTS framing (MPEG-TS, and so HLS's `.ts` segments): its codec
//! parameters carry no AudioSpecificConfig, and every packet starts with a
//! 7-byte header (9 with a CRC). FLV wants raw AAC frames after an AAC
//! sequence header, so copy mode builds the AudioSpecificConfig from the
//! headers and strips them (docs/design/timeline.md, "Seams").
//!
//! Our own parser rather than FFmpeg's `aac_adtstoasc` bitstream filter:
//! ffmpeg-next 7.1 has no safe BSF wrapper and ffmpeg-sys-next 7.1 does not
//! bind `libavcodec/bsf.h`, and the header is 56 bits of fixed fields; pure
//! code keeps the shard's event loop free of FFI for it.

/// The header's fields are read by the FLV layer ([`vodfleet_rtmp::flv::AdtsHeader`]);
/// what copy mode accepts of them is decided here.
pub use vodfleet_rtmp::flv::AdtsHeader as Header;

/// Whether `data` starts with an ADTS sync word (12 bits set).
pub fn is_adts(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] == 0xFF && data[1] & 0xF0 == 0xF0
}

/// Parses the ADTS header at the start of `data`. Refuses what copy mode
/// cannot carry as one raw frame with a 2-byte AudioSpecificConfig: several
/// raw data blocks in one frame, channel configuration 0 (the layout is in a
/// program config element) and reserved sampling-frequency indices.
pub fn parse(data: &[u8]) -> Result<Header, String> {
    if !is_adts(data) || data.len() < 7 {
        return Err("the AAC packet is not ADTS-framed".into());
    }
    if data[1] & 0x06 != 0 {
        return Err("ADTS header with a layer other than 0".into());
    }
    let h = Header::read(data).ok_or("ADTS frame length shorter than its header")?;
    if h.freq_index > 12 {
        return Err(format!(
            "ADTS sampling frequency index {} is reserved",
            h.freq_index
        ));
    }
    if h.channels == 0 {
        return Err("ADTS channel configuration 0 (a program config element) is not supported in copy mode; add fops to transcode".into());
    }
    if h.blocks > 1 {
        return Err(format!(
            "ADTS frames with {} raw data blocks are not supported in copy mode; add fops to transcode",
            h.blocks
        ));
    }
    Ok(h)
}

/// The raw AAC frame of one ADTS-framed packet and its header; `None` for a
/// frame cut short (the end of a truncated file), which is dropped.
pub fn raw_frame(data: &[u8]) -> Result<Option<(Header, &[u8])>, String> {
    let h = parse(data)?;
    if h.frame_len > data.len() {
        return Ok(None);
    }
    if h.frame_len < data.len() && is_adts(&data[h.frame_len..]) {
        // The demuxer's AAC parser splits frames; a packet with two would lose one.
        return Err("an AAC packet holds more than one ADTS frame".into());
    }
    Ok(Some((h, &data[h.header_len..h.frame_len])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ADTS header for AAC LC, 44.1 kHz (index 4), stereo, with `payload` bytes after it.
    fn header(payload: usize, crc: bool, blocks: u8) -> Vec<u8> {
        let len = payload + if crc { 9 } else { 7 };
        let mut h = vec![
            0xFF,
            0xF0 | u8::from(!crc),
            (1 << 6) | (4 << 2),
            (2 << 6) | ((len >> 11) & 3) as u8,
            ((len >> 3) & 0xFF) as u8,
            (((len & 7) << 5) as u8) | 0x1F,
            0xFC | (blocks - 1),
        ];
        if crc {
            h.extend([0xAB, 0xCD]);
        }
        h
    }

    #[test]
    fn config_and_raw_frame_with_and_without_crc() {
        for crc in [false, true] {
            let raw = [0x21u8, 0x10, 0x05, 0x42];
            let mut pkt = header(raw.len(), crc, 1);
            pkt.extend(raw);
            let (h, got) = raw_frame(&pkt).unwrap().unwrap();
            assert_eq!(got, raw, "crc {crc}");
            assert_eq!(h.header_len, if crc { 9 } else { 7 });
            // AAC LC (2), 44.1 kHz (4), 2 channels: what ffmpeg writes into an mp4.
            assert_eq!(h.audio_specific_config(), [0x12, 0x10]);
        }
    }

    #[test]
    fn other_rates_and_layouts() {
        let mut pkt = header(4, false, 1);
        // 48 kHz (index 3), mono, HE-AAC signalled as LC in ADTS.
        pkt[2] = (1 << 6) | (3 << 2);
        pkt[3] = (1 << 6) | (pkt[3] & 3);
        pkt.extend([0; 4]);
        let h = parse(&pkt).unwrap();
        assert_eq!((h.freq_index, h.channels), (3, 1));
        assert_eq!(h.audio_specific_config(), [0x11, 0x88]);
    }

    #[test]
    fn refuses_what_one_raw_frame_cannot_carry() {
        let mut multi = header(4, false, 2);
        multi.extend([0; 4]);
        assert!(parse(&multi).unwrap_err().contains("2 raw data blocks"));

        let mut pce = header(4, false, 1);
        pce[3] &= 0x3F;
        pce[2] &= !1;
        assert!(parse(&pce).unwrap_err().contains("channel configuration 0"));

        assert!(parse(&[0x21, 0x10, 0, 0, 0, 0, 0])
            .unwrap_err()
            .contains("not ADTS"));

        let mut two = header(2, false, 1);
        two.extend([0; 2]);
        two.extend(two.clone());
        assert!(raw_frame(&two).unwrap_err().contains("more than one"));
    }

    #[test]
    fn a_truncated_frame_is_dropped() {
        let mut pkt = header(10, false, 1);
        pkt.extend([0; 4]);
        assert_eq!(raw_frame(&pkt).unwrap(), None);
    }
}
