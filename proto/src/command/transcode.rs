//! `fops`: preset, resolution, frame rate, bitrate and codecs RTMP can carry.

use super::value::uint;
use super::{preset, AudioCodec, Transcode, VideoCodec, Warning};
use crate::error::{FieldError, FieldPath};
use crate::wire;

pub(super) fn fops(
    at: &FieldPath,
    f: wire::Fops,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Transcode>, FieldError> {
    let (mut width, mut height, mut video_kbps) = (None, None, None);
    if let Some(p) = f.preset.as_deref() {
        let (w, h, b) = preset(p).ok_or_else(|| {
            at.key("preset").err(format!(
                "unknown preset {p:?}; expected 360p, 480p, 720p or 1080p"
            ))
        })?;
        (width, height, video_kbps) = (Some(w), Some(h), Some(b));
    }
    let (mut res, mut fps) = (f.res.map(|v| v.0), f.fps.map(|v| v.0));
    // The seed's own example sends "res":"25","fps":"1280x640". The shapes cannot be
    // confused, so take them the right way round and say so.
    if let (Some(r), Some(p)) = (&res, &fps) {
        if parse_res(r).is_none() && parse_res(p).is_some() && parse_fps(r).is_some() {
            warnings.push(Warning {
                field: at.as_str().to_owned(),
                message: format!(
                    "res {r:?} and fps {p:?} look swapped; using res {p:?} and fps {r:?}"
                ),
            });
            std::mem::swap(&mut res, &mut fps);
        }
    }
    if let Some(r) = res.as_deref().filter(|r| !r.is_empty()) {
        let (w, h) = parse_res(r).ok_or_else(|| {
            at.key("res").err(format!(
                "{r:?} is not WIDTHxHEIGHT with even sides from 16 to 4096"
            ))
        })?;
        (width, height) = (Some(w), Some(h));
    }
    let fps = match fps.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(parse_fps(p).ok_or_else(|| {
            at.key("fps")
                .err(format!("{p:?} is not a frame rate from 1 to 120"))
        })?),
    };
    if let Some(b) = &f.bps {
        if !b.0.is_empty() {
            video_kbps = Some(uint(&at.key("bps"), b, 50, 100_000)?);
        }
    }
    let vcodec = match f.vcodec.as_deref() {
        None | Some("") | Some("libx264") | Some("h264") | Some("x264") => VideoCodec::H264,
        Some(other) => {
            return Err(at.key("vcodec").err(format!(
                "{other:?} cannot be carried over RTMP/FLV, which carries H.264 video; use libx264"
            )))
        }
    };
    let acodec = match f.acodec.as_deref() {
        None | Some("") | Some("aac") | Some("libfaac") | Some("libfdk_aac") => AudioCodec::Aac,
        Some("libmp3lame") | Some("mp3") => AudioCodec::Mp3,
        Some(other) => {
            return Err(at.key("acodec").err(format!(
                "{other:?} cannot be carried over RTMP/FLV, which carries AAC or MP3 audio; use aac or libmp3lame"
            )))
        }
    };
    let any = width.is_some()
        || fps.is_some()
        || video_kbps.is_some()
        || f.vcodec.is_some()
        || f.acodec.is_some();
    Ok(any.then_some(Transcode {
        width,
        height,
        fps,
        video_kbps,
        vcodec,
        acodec,
    }))
}

fn parse_res(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h): (u32, u32) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    let ok = |v: u32| (16..=4096).contains(&v) && v % 2 == 0;
    (ok(w) && ok(h)).then_some((w, h))
}

fn parse_fps(s: &str) -> Option<(u32, u32)> {
    let (num, den) = match s.split_once('.') {
        None => (s.parse::<u32>().ok()?, 1),
        Some((i, f)) if !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let den = 10u32.pow(f.len() as u32);
            (
                i.parse::<u32>()
                    .ok()?
                    .checked_mul(den)?
                    .checked_add(f.parse::<u32>().ok()?)?,
                den,
            )
        }
        _ => return None,
    };
    (num >= den && num <= 120 * den).then_some((num, den))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_accepts_decimals() {
        assert_eq!(parse_fps("25"), Some((25, 1)));
        assert_eq!(parse_fps("29.97"), Some((2997, 100)));
        assert_eq!(parse_fps("0"), None);
        assert_eq!(parse_fps("1280x640"), None);
    }
}
