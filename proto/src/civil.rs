//! Civil (calendar) times in UTC as Unix milliseconds: the `absofftime`
//! ranges of a command, and the start time a recording carries in its
//! metadata (mp4 `creation_time`, FLV `onMetaData`), against which those
//! ranges are resolved (docs/contract.md#src).

/// A UTC calendar time as Unix milliseconds; `None` for a date that does not
/// exist or lies outside 1970–9999.
pub fn unix_ms(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<u64> {
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
        || s > 59
    {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d) as u64;
    Some((days * 86_400 + u64::from(h * 3600 + mi * 60 + s)) * 1000)
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

/// Unix milliseconds as `2018-10-22T15:30:00Z` (UTC, whole seconds), for messages.
pub fn iso8601_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A recording's start time as its container states it, in Unix
/// milliseconds. Two spellings are met in practice:
/// - ISO 8601 / RFC 3339, as libavformat reports mp4 and Matroska
///   `creation_time` (`2018-10-22T15:30:00.000000Z`), with `T` or a space,
///   optional fraction, and `Z`, `±HH:MM`, `±HHMM` or no zone (UTC);
/// - C's `asctime`, as FLV writers put `creationdate` in `onMetaData`
///   (`Mon Oct 22 15:30:00 2018`), taken as UTC.
///
/// Anything else is `None`: the item then cannot resolve `absofftime`.
pub fn recording_start_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    iso8601(t).or_else(|| asctime(t))
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn iso8601(t: &str) -> Option<u64> {
    // Byte offsets below are character offsets only in ASCII.
    if !t.is_ascii() {
        return None;
    }
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&t[0..4])?, digits(&t[5..7])?, digits(&t[8..10])?);
    let (h, mi, s) = (
        digits(&t[11..13])?,
        digits(&t[14..16])?,
        digits(&t[17..19])?,
    );
    let mut rest = &t[19..];
    let mut frac_ms = 0u64;
    if let Some(f) = rest.strip_prefix('.') {
        let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
        if end == 0 {
            return None;
        }
        let ms = format!("{:0<3}", &f[..end.min(3)]);
        frac_ms = u64::from(digits(&ms)?);
        rest = &f[end..];
    }
    let base = unix_ms(y, mo, d, h, mi, s)? + frac_ms;
    let offset_ms: i64 = match rest {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = zone[1..].replace(':', "");
            if hm.len() != 4 {
                return None;
            }
            let (zh, zm) = (digits(&hm[0..2])?, digits(&hm[2..4])?);
            if zh > 23 || zm > 59 {
                return None;
            }
            sign * i64::from(zh * 60 + zm) * 60_000
        }
    };
    // Local time = UTC + offset, so UTC = local − offset.
    u64::try_from(base as i64 - offset_ms).ok()
}

fn asctime(t: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let parts: Vec<&str> = t.split_whitespace().collect();
    let [wd, mon, day, hms, year] = parts.as_slice() else {
        return None;
    };
    if !DAYS.iter().any(|d| d.eq_ignore_ascii_case(wd)) {
        return None;
    }
    let mo = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let hms: Vec<&str> = hms.split(':').collect();
    let [h, mi, s] = hms.as_slice() else {
        return None;
    };
    if h.len() != 2 || mi.len() != 2 || s.len() != 2 || year.len() != 4 {
        return None;
    }
    unix_ms(
        digits(year)?,
        mo,
        digits(day)?,
        digits(h)?,
        digits(mi)?,
        digits(s)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_540_222_200_000; // 2018-10-22 15:30:00 UTC

    #[test]
    fn calendar_times_are_utc_unix_milliseconds() {
        assert_eq!(unix_ms(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix_ms(2018, 10, 22, 15, 30, 0), Some(T));
        assert_eq!(unix_ms(2020, 2, 29, 0, 0, 0), Some(1_582_934_400_000));
        assert_eq!(unix_ms(2018, 2, 29, 0, 0, 0), None);
        assert_eq!(unix_ms(1969, 12, 31, 23, 59, 59), None);
        assert_eq!(unix_ms(2018, 13, 1, 0, 0, 0), None);
        assert_eq!(iso8601_utc(T), "2018-10-22T15:30:00Z");
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(1_582_934_400_999), "2020-02-29T00:00:00Z");
    }

    #[test]
    fn recording_start_times_in_the_spellings_containers_use() {
        for (text, want) in [
            ("2018-10-22T15:30:00.000000Z", Some(T)),
            ("2018-10-22T15:30:00Z", Some(T)),
            ("2018-10-22 15:30:00", Some(T)),
            ("2018-10-22T15:30:00.25Z", Some(T + 250)),
            ("2018-10-22T23:30:00+08:00", Some(T)),
            ("2018-10-22T10:30:00-0500", Some(T)),
            ("Mon Oct 22 15:30:00 2018", Some(T)),
            ("Mon Oct 22 15:30:00 2018\n", Some(T)),
            ("mon oct  22 15:30:00 2018", Some(T)),
            ("1970-01-01T00:00:00+01:00", None),
            ("2018-10-22T15:30:00+24:00", None),
            ("2018-10-22T15:30", None),
            ("2018-10-22T15:30:00.Z", None),
            ("2018-02-30T00:00:00Z", None),
            ("Fooday Oct 22 15:30:00 2018", None),
            ("Mon Oct 22 15:30 2018", None),
            ("", None),
            ("yesterday", None),
            ("2018-10-22T15:30:0é", None),
            ("2018-10-2é15:30:00Z", None),
        ] {
            assert_eq!(recording_start_ms(text), want, "{text:?}");
        }
    }

    proptest::proptest! {
        /// Metadata is whatever a file says: no text makes the parser panic.
        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(text in "\\PC{0,40}") {
            let _ = recording_start_ms(&text);
        }

        #[test]
        fn iso_spellings_of_any_valid_time_round_trip(
            y in 1970u32..9999, mo in 1u32..=12, d in 1u32..=28,
            h in 0u32..24, mi in 0u32..60, s in 0u32..60,
        ) {
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z");
            proptest::prop_assert_eq!(recording_start_ms(&text), unix_ms(y, mo, d, h, mi, s));
            proptest::prop_assert_eq!(iso8601_utc(unix_ms(y, mo, d, h, mi, s).unwrap()), text);
        }
    }
}
