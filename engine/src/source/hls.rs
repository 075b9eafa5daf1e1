//! HLS VOD sources (`.m3u8` over `http(s)`): the playlist is parsed with
//! `m3u8-rs`, and every segment (and the fMP4 initialization section) is
//! fetched by our own client, each URL under the URL policy, in order into
//! one entry of the worker's shared cache that libavformat reads while it
//! downloads (`source::cache`): MPEG-TS segments concatenate into a
//! transport stream, fMP4 ones after their init section into a fragmented
//! MP4 (docs/contract.md#src).
//!
//! One level of master playlist is followed (the highest bandwidth under
//! `VODFLEET_HLS_MAX_BANDWIDTH`); a playlist that leads to another master is
//! refused, as seed 001 says an m3u8 referencing other m3u8 is not supported.
//! The first segment's `EXT-X-PROGRAM-DATE-TIME` is the recording's start for
//! `absofftime`. Encrypted segments and byte-range segments are refused with
//! the reason.

use m3u8_rs::{KeyMethod, MasterPlaylist, MediaPlaylist, Playlist};

/// The largest playlist read (bytes): a VOD playlist of a day in 2 s
/// segments is about 3 MB.
pub const MAX_PLAYLIST_BYTES: u64 = 8 * 1024 * 1024;

/// What to fetch for a media playlist, in order, and the recording's start.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// The initialization section (fMP4) and then every segment, absolute URLs.
    pub urls: Vec<String>,
    /// The first segment's `EXT-X-PROGRAM-DATE-TIME` (Unix ms).
    pub start_ms: Option<u64>,
}

/// What a playlist says to do next.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A master playlist: fetch this media playlist (absolute URL).
    Variant(String),
    /// A media playlist: fetch these.
    Media(Plan),
}

/// Parses the playlist at `url` (whose bytes are `body`). `nested`: it was
/// reached through a master playlist, so it must be a media playlist.
pub fn parse(
    url: &str,
    body: &[u8],
    nested: bool,
    max_bandwidth: Option<u64>,
) -> Result<Parsed, String> {
    let base = url::Url::parse(url).map_err(|e| e.to_string())?;
    let playlist = m3u8_rs::parse_playlist_res(body)
        .map_err(|_| "not an HLS playlist (it does not parse as m3u8)".to_owned())?;
    match playlist {
        Playlist::MasterPlaylist(_) if nested => Err(
            "a master playlist names another master playlist; only one level is supported (an m3u8 referencing other m3u8 is not, seed 001)".into(),
        ),
        Playlist::MasterPlaylist(m) => {
            let uri = variant(&m, max_bandwidth)?;
            Ok(Parsed::Variant(join(&base, uri)?))
        }
        Playlist::MediaPlaylist(p) => Ok(Parsed::Media(media(&base, &p)?)),
    }
}

/// The variant to play: the highest bandwidth at or under the cap (the
/// lowest when none is), the first when none states one; never an
/// I-frame-only stream.
fn variant(m: &MasterPlaylist, cap: Option<u64>) -> Result<&str, String> {
    let playable: Vec<_> = m.variants.iter().filter(|v| !v.is_i_frame).collect();
    let first = playable
        .first()
        .ok_or("the master playlist lists no variant")?;
    if playable.iter().all(|v| v.bandwidth == 0) {
        return Ok(&first.uri);
    }
    let cap = cap.unwrap_or(u64::MAX);
    let best = playable
        .iter()
        .filter(|v| v.bandwidth <= cap)
        .max_by_key(|v| v.bandwidth)
        .or_else(|| playable.iter().min_by_key(|v| v.bandwidth))
        .expect("at least one variant");
    Ok(&best.uri)
}

fn media(base: &url::Url, p: &MediaPlaylist) -> Result<Plan, String> {
    if p.segments.is_empty() {
        return Err("the media playlist lists no segment".into());
    }
    let mut urls = Vec::with_capacity(p.segments.len() + 1);
    let mut map: Option<&str> = None;
    for (i, s) in p.segments.iter().enumerate() {
        if let Some(k) = &s.key {
            if k.method != KeyMethod::None {
                return Err(format!(
                    "segment {i} is encrypted ({:?}); encrypted HLS is not supported",
                    k.method
                ));
            }
        }
        if s.byte_range.is_some() {
            return Err(format!(
                "segment {i} is a byte range of a file (EXT-X-BYTERANGE); not supported"
            ));
        }
        if let Some(m) = &s.map {
            if m.byte_range.is_some() {
                return Err("the initialization section is a byte range (EXT-X-MAP BYTERANGE); not supported".into());
            }
            match map {
                None => {
                    map = Some(&m.uri);
                    urls.push(join(base, &m.uri)?);
                }
                Some(first) if first != m.uri => {
                    return Err(format!(
                        "segment {i} changes the initialization section; not supported"
                    ));
                }
                Some(_) => {}
            }
        }
        urls.push(join(base, &s.uri)?);
    }
    let start_ms = p.segments[0]
        .program_date_time
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok());
    Ok(Plan { urls, start_ms })
}

/// `uri` resolved against the playlist's URL; only `http(s)` results.
fn join(base: &url::Url, uri: &str) -> Result<String, String> {
    let u = base.join(uri.trim()).map_err(|e| {
        format!(
            "{:?} is not a URL: {e}",
            vodfleet_proto::redact::source(uri)
        )
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "{} is not an http(s) URL",
            vodfleet_proto::redact::source(u.as_str())
        ));
    }
    Ok(u.into())
}

/// Whether `url` names an HLS playlist (its path ends in `.m3u8`).
pub fn is_playlist(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.path().to_ascii_lowercase().ends_with(".m3u8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://cdn.example/show/index.m3u8?token=x";

    fn media_plan(body: &str) -> Result<Plan, String> {
        match parse(BASE, body.as_bytes(), false, None)? {
            Parsed::Media(p) => Ok(p),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_ts_playlist_lists_its_segments_resolved_and_its_program_date() {
        let p = media_plan(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:2018-10-22T23:30:00.000+08:00\n#EXTINF:2.0,\na0.ts\n#EXTINF:2.0,\n/abs/a1.ts\n#EXTINF:1.0,\nhttps://other.example/a2.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        assert_eq!(
            p.urls,
            [
                "https://cdn.example/show/a0.ts",
                "https://cdn.example/abs/a1.ts",
                "https://other.example/a2.ts"
            ]
        );
        assert_eq!(p.start_ms, Some(1_540_222_200_000));
    }

    #[test]
    fn fmp4_puts_the_init_section_first() {
        let p = media_plan(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\ns0.m4s\n#EXTINF:2.0,\ns1.m4s\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        assert_eq!(p.urls[0], "https://cdn.example/show/init.mp4");
        assert_eq!(p.urls.len(), 3);
        assert_eq!(p.start_ms, None);
    }

    #[test]
    fn a_master_picks_the_best_variant_under_the_cap_once() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2500000\nhigh/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1200000\nmid/index.m3u8\n";
        let pick = |cap| match parse(BASE, master.as_bytes(), false, cap).unwrap() {
            Parsed::Variant(u) => u,
            other => panic!("{other:?}"),
        };
        assert_eq!(pick(None), "https://cdn.example/show/high/index.m3u8");
        assert_eq!(
            pick(Some(2_000_000)),
            "https://cdn.example/show/mid/index.m3u8"
        );
        assert_eq!(pick(Some(100)), "https://cdn.example/show/low/index.m3u8");
        let e = parse(BASE, master.as_bytes(), true, None).unwrap_err();
        assert!(e.contains("only one level"), "{e}");
    }

    #[test]
    fn what_we_cannot_play_is_refused_with_the_reason() {
        for (body, why) in [
            (
                "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:2,\na.ts\n",
                "encrypted",
            ),
            (
                "#EXTM3U\n#EXT-X-BYTERANGE:1000@0\n#EXTINF:2,\na.ts\n",
                "byte range",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-ENDLIST\n",
                "no segment",
            ),
            ("#EXTM3U\n#EXTINF:2,\nftp://x/a.ts\n", "not an http(s) URL"),
            ("<html>not a playlist</html>", "does not parse"),
        ] {
            let e = match parse(BASE, body.as_bytes(), false, None) {
                Err(e) => e,
                Ok(p) => panic!("{body:?} gave {p:?}"),
            };
            assert!(e.contains(why), "{body:?}: {e}");
        }
        assert!(is_playlist("https://a/b/INDEX.M3U8?x=1"));
        assert!(!is_playlist("https://a/b/index.mp4"));
    }
}
