//! Time: float Unix seconds and RFC 3339 text, as the protocol writes them.

/// Float Unix seconds now.
pub(crate) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The times a row may carry: 0001-01-01 to 9999-12-31 UTC, what a
/// four-digit RFC 3339 `created` (and Python's `datetime`) can hold.
const VALID_SECS: std::ops::RangeInclusive<f64> = -62_135_596_800.0..=253_402_300_799.999_999;

/// True for a usable span time: finite and within years 1 to 9999.
pub(crate) fn is_valid_time(secs: f64) -> bool {
    VALID_SECS.contains(&secs)
}

/// `secs` when it is a usable time, else now, with one warning per process
/// naming `what` (e.g. `start_time`): a bad clock value must not produce a
/// row the backend cannot place, nor fail the user's code.
pub(crate) fn valid_time_or_now(secs: f64, what: &str) -> f64 {
    if is_valid_time(secs) {
        return secs;
    }
    crate::diagnostics::warn_once(
        &format!("invalid-{what}"),
        &format!("braintrust: ignoring {what} {secs}: a span time must be finite float Unix seconds within years 1 to 9999; using the current time"),
    );
    now_secs()
}

/// A UTC instant split into calendar fields:
/// `(year, month, day, hour, minute, second, microsecond)`.
fn civil_time(secs: f64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let total_us = (secs * 1_000_000.0).round() as i64;
    let us = total_us.rem_euclid(1_000_000);
    let s = total_us.div_euclid(1_000_000);
    let days = s.div_euclid(86_400);
    let rem = s.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60, us)
}

/// RFC 3339 UTC with microseconds, as Python writes `created`.
pub(crate) fn format_rfc3339(secs: f64) -> String {
    let mut out = Vec::with_capacity(32);
    write_rfc3339(secs, &mut out);
    // Only ASCII digits and separators are written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`format_rfc3339`]'s text to `out` (the row writer's form: no
/// allocation).
pub(crate) fn write_rfc3339(secs: f64, out: &mut Vec<u8>) {
    let (y, m, d, hh, mm, ss, us) = civil_time(secs);
    if !(0..=9999).contains(&y) {
        // Outside what four digits hold: the general formatter (a wider year).
        out.extend_from_slice(
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}+00:00").as_bytes(),
        );
        return;
    }
    // Digits written by hand, two at a time: this runs once per span row.
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut b = *b"0000-00-00T00:00:00.000000+00:00";
    // Every value put is below 100, so the index is in range.
    let mut put = |at: usize, v: i64| {
        let i = v as usize * 2;
        b[at..at + 2].copy_from_slice(&PAIRS[i..i + 2]);
    };
    put(0, y / 100);
    put(2, y % 100);
    put(5, m);
    put(8, d);
    put(11, hh);
    put(14, mm);
    put(17, ss);
    put(20, us / 10_000);
    put(22, us / 100 % 100);
    put(24, us % 100);
    out.extend_from_slice(&b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digit-pair writer against the general formatter, over the whole
    /// four-digit range (every month, day-of-month and sub-second digit).
    #[test]
    fn hand_written_digits_match_the_general_formatter() {
        let mut t = -62_135_596_800.0_f64; // 0001-01-01
        let mut out = Vec::new();
        while t < 253_402_300_799.0 {
            let (y, m, d, hh, mm, ss, us) = civil_time(t);
            out.clear();
            write_rfc3339(t, &mut out);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}+00:00"),
                "at {t}"
            );
            t += 86_400.0 * 7.0 + 3_723.123_457;
        }
    }
    #[test]
    fn created_is_rfc3339_with_microseconds() {
        assert_eq!(format_rfc3339(0.0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            format_rfc3339(1795459929.437756),
            "2026-11-23T18:52:09.437756+00:00"
        );
        assert_eq!(
            format_rfc3339(951782400.5),
            "2000-02-29T00:00:00.500000+00:00"
        );
        // Before the epoch, and past year 9999 (general formatter).
        assert_eq!(format_rfc3339(-1.25), "1969-12-31T23:59:58.750000+00:00");
        assert_eq!(
            format_rfc3339(253402300800.0),
            "10000-01-01T00:00:00.000000+00:00"
        );
        // The hand-written digits agree with `format!` of the same fields.
        fn reference(secs: f64) -> String {
            let (y, m, d, hh, mm, ss, us) = civil_time(secs);
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}+00:00")
        }
        for i in 0..20_000u32 {
            let t = -3e9 + f64::from(i) * 401_234.567_891;
            assert_eq!(format_rfc3339(t), reference(t));
        }
    }
}
