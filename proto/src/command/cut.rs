//! `relofftime`/`absofftime`: `START-END;…` ranges of seconds or UTC civil times.

use super::{Range, MAX_RANGES};
use crate::error::{FieldError, FieldPath};

pub(super) fn ranges(
    at: &FieldPath,
    s: &str,
    parse: fn(&str) -> Option<u64>,
) -> Result<Vec<Range>, FieldError> {
    let parts: Vec<&str> = s.split(';').filter(|p| !p.trim().is_empty()).collect();
    if parts.is_empty() {
        return Err(at.err("names no range"));
    }
    if parts.len() > MAX_RANGES {
        return Err(at.err(format!(
            "has {} ranges; the limit is {MAX_RANGES}",
            parts.len()
        )));
    }
    parts
        .into_iter()
        .map(|p| {
            let (a, b) = p
                .split_once('-')
                .ok_or_else(|| at.err(format!("range {p:?} is not START-END")))?;
            let (a, b) = (
                parse(a.trim())
                    .ok_or_else(|| at.err(format!("range {p:?}: {a:?} is not a valid time")))?,
                parse(b.trim())
                    .ok_or_else(|| at.err(format!("range {p:?}: {b:?} is not a valid time")))?,
            );
            if b <= a {
                return Err(at.err(format!("range {p:?} ends before it starts")));
            }
            Ok(Range {
                start_ms: a,
                end_ms: b,
            })
        })
        .collect()
}

/// Seconds, possibly fractional (millisecond precision), as milliseconds.
pub(super) fn parse_seconds(s: &str) -> Option<u64> {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    if i.is_empty()
        || !i.bytes().all(|b| b.is_ascii_digit())
        || f.len() > 3
        || !f.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{f:0<3}").parse::<u64>().ok()?;
    i.parse::<u64>().ok()?.checked_mul(1000)?.checked_add(frac)
}

/// `yyyymmddHHMMSS` (UTC) as Unix milliseconds.
pub(super) fn parse_civil(s: &str) -> Option<u64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    crate::civil::unix_ms(
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_is_utc_unix() {
        assert_eq!(parse_civil("19700101000000"), Some(0));
        assert_eq!(parse_civil("20181022153000"), Some(1_540_222_200_000));
        assert_eq!(parse_civil("20180230000000"), None);
    }

    #[test]
    fn seconds_allow_millisecond_fractions() {
        assert_eq!(parse_seconds("300"), Some(300_000));
        assert_eq!(parse_seconds("1.5"), Some(1_500));
        assert_eq!(parse_seconds("1.2345"), None);
        assert_eq!(parse_seconds("-1"), None);
    }
}
