//! Event time: RFC 3339 in, epoch milliseconds inside, RFC 3339 (UTC, milliseconds) out.
//!
//! Everything inside rushhour carries time as `i64` milliseconds since the Unix epoch,
//! UTC. Parsing follows CONTRACT §1: any RFC 3339 date-time (`Z` or a numeric offset),
//! fractions beyond milliseconds truncated, leap second 60 and impossible dates refused.

use chrono::{DateTime, Timelike};

/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// 0000-01-01T00:00:00.000Z, the first instant RFC 3339 can write.
pub const MIN_MS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z, the last.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 date-time into epoch milliseconds (UTC).
///
/// Returns `None` for anything that is not a valid RFC 3339 date-time, for a leap
/// second (`:60`) and for impossible dates such as `2026-02-30`.
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    // chrono accepts a space between date and time; RFC 3339's grammar does not, and
    // neither do we (its prose allows it only "by mutual agreement").
    let bytes = text.as_bytes();
    // RFC 3339 is ASCII; chrono would also take a Unicode minus sign in the offset.
    if bytes.len() < 20 || !text.is_ascii() || !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    let parsed = DateTime::parse_from_rfc3339(text).ok()?;
    // chrono represents a leap second as a nanosecond field of one second or more.
    if parsed.nanosecond() >= 1_000_000_000 {
        return None;
    }
    // An offset can push a date outside the four-digit years RFC 3339 can write.
    let ms = parsed.timestamp_millis();
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision,
/// e.g. `2026-11-21T12:00:01.250Z`.
pub fn format_millis(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_millis(&mut out, ms);
    out
}

/// Appends the RFC 3339 form of `ms` to `out` (the allocation-free form of [`format_millis`]).
pub fn write_millis(out: &mut String, ms: i64) {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let h = in_day / HOUR_MS;
    let mi = (in_day / MINUTE_MS) % 60;
    let s = (in_day / 1000) % 60;
    let frac = in_day % 1000;
    push_num(out, y, 4);
    out.push('-');
    push_num(out, m, 2);
    out.push('-');
    push_num(out, d, 2);
    out.push('T');
    push_num(out, h, 2);
    out.push(':');
    push_num(out, mi, 2);
    out.push(':');
    push_num(out, s, 2);
    out.push('.');
    push_num(out, frac, 3);
    out.push('Z');
}

fn push_num(out: &mut String, mut v: i64, width: usize) {
    if v < 0 {
        out.push('-');
        v = -v;
    }
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = buf.len() - i;
    for _ in digits..width {
        out.push('0');
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The hive partition values (`YYYY-MM-DD`, `HH`) of the hour containing `ms`.
pub fn date_hour(ms: i64) -> (String, String) {
    let days = ms.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let h = ms.rem_euclid(DAY_MS) / HOUR_MS;
    let mut date = String::with_capacity(10);
    push_num(&mut date, y, 4);
    date.push('-');
    push_num(&mut date, m, 2);
    date.push('-');
    push_num(&mut date, d, 2);
    let mut hour = String::with_capacity(2);
    push_num(&mut hour, h, 2);
    (date, hour)
}

/// Start of the tumbling window of `size_ms` (aligned to the epoch) that contains `ms`.
pub fn window_start(ms: i64, size_ms: i64) -> i64 {
    ms.div_euclid(size_ms) * size_ms
}

/// Seconds of a day in `ms` (UTC), as a fraction of hours: used by the simulation's
/// daily curves.
pub fn hour_of_day(ms: i64) -> f64 {
    ms.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:01.250Z"), Some(1250));
        assert_eq!(parse_rfc3339_millis("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_millis("1969-12-31T19:00:00-05:00"), Some(0));
        assert_eq!(parse_rfc3339_millis("1970-01-01t00:00:00z"), Some(0));
    }

    #[test]
    fn truncates_beyond_millis() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00.2509Z"), Some(250));
        assert_eq!(
            parse_rfc3339_millis("1970-01-01T00:00:00.999999999Z"),
            Some(999)
        );
        assert_eq!(parse_rfc3339_millis("1969-12-31T23:59:59.9999Z"), Some(-1));
    }

    #[test]
    fn refuses_bad_times() {
        for bad in [
            "2026-11-21T23:59:60Z",
            "2016-12-31T23:59:60Z",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21 12:00:00Z",
            "2026-11-21T12:00:00",
            "2026-11-21",
            "yesterday",
            "2026-11-21T12:00:00.Z",
            "",
            "2026-11-21T12:00:00\u{2212}05:00",
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:30:00-01:00",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
        assert!(parse_rfc3339_millis("2024-02-29T00:00:00Z").is_some());
        assert_eq!(parse_rfc3339_millis("0000-01-01T00:00:00Z"), Some(MIN_MS));
        assert_eq!(
            parse_rfc3339_millis("9999-12-31T23:59:59.999Z"),
            Some(MAX_MS)
        );
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0, 1250, -1, 1_763_726_401_250, 253_402_300_799_999] {
            let text = format_millis(ms);
            assert_eq!(parse_rfc3339_millis(&text), Some(ms), "{text}");
        }
        assert_eq!(format_millis(1_763_726_401_250), "2025-11-21T12:00:01.250Z");
    }

    #[test]
    fn hive_partition_values() {
        assert_eq!(date_hour(0), ("1970-01-01".into(), "00".into()));
        assert_eq!(date_hour(-1), ("1969-12-31".into(), "23".into()));
    }
}
