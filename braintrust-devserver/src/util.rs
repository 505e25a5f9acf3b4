//! Small helpers: timestamps, secret comparison.

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// RFC 3339 UTC with milliseconds, as the Braintrust API writes `created`.
const MILLIS_UTC: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Current time as RFC 3339 UTC with milliseconds, e.g. `2026-01-01T00:00:00.000Z`.
pub(crate) fn now_iso() -> String {
    format_millis(OffsetDateTime::now_utc())
}

/// Formats Unix milliseconds as RFC 3339 UTC; a time outside years 1 to
/// 9999 (which no client sends: the SDKs refuse them) is now.
pub(crate) fn format_unix_millis(ms: i64) -> String {
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) if t.year() >= 1 => format_millis(t),
        _ => now_iso(),
    }
}

fn format_millis(t: OffsetDateTime) -> String {
    // Fails only for years outside 0..=9999, excluded by the callers.
    t.format(MILLIS_UTC).unwrap_or_default()
}

/// Parses a time given as Unix seconds (`1767225600.5`) or RFC 3339
/// (`2026-01-01T00:00:00Z`, fractional seconds and any offset allowed) into Unix seconds.
pub(crate) fn parse_time(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9)
}

/// Compares two byte strings in time independent of where they differ (for secrets).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_back() {
        for ms in [0i64, 951_782_400_000, 1_795_459_929_439] {
            let iso = format_unix_millis(ms);
            assert_eq!(parse_time(&iso), Some(ms as f64 / 1000.0), "{iso}");
        }
        assert_eq!(parse_time("12.5"), Some(12.5));
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(
            parse_time("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600.0)
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00.5+00:00"),
            Some(1_767_225_600.5)
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_millis(1_795_459_929_439),
            "2026-11-23T18:52:09.439Z"
        );
        assert_eq!(
            format_unix_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_unix_millis(-1), "1969-12-31T23:59:59.999Z");
        // Out of range: now.
        assert!(format_unix_millis(i64::MAX).starts_with("20"));
    }
}
