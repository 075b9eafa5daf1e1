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
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > dim[mo as usize - 1]
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    Some(
        (days_from_civil(y as i64, mo, d) as u64 * 86_400 + (h * 3600 + mi * 60 + se) as u64)
            * 1000,
    )
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
