//! Event time as text: RFC 3339 in (parsed once per record) and ISO-8601
//! out (written several times per record). Both by hand, on the same
//! civil-date arithmetic (Howard Hinnant's algorithms), because they are on
//! the hot path; both are tested against chrono.

use std::fmt::Write as _;

/// The unit of an event time written as a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EpochUnit {
    /// Milliseconds since the Unix epoch (`--epoch-unit ms`).
    #[default]
    Millis,
    /// Seconds since the Unix epoch, fractions allowed (`--epoch-unit s`).
    Seconds,
}

/// 0001-01-01T00:00:00Z in epoch milliseconds: the earliest event time.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z in epoch milliseconds: the latest event time.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// ISO-8601 UTC with milliseconds, e.g. `2026-11-24T17:30:05.123Z`.
/// Hand-rolled (days to civil date, after Howard Hinnant's algorithm): it
/// runs several times per record and chrono's formatter costs ten times more.
pub fn iso8601(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_iso8601(&mut out, ms);
    out
}

/// Appends `iso8601(ms)`.
pub fn push_iso8601(out: &mut String, ms: i64) {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000) as u32);
    // Consecutive times are nearly always on one day: the date's text is
    // remembered, per thread, for the day it was last written for.
    thread_local! {
        static LAST_DATE: std::cell::Cell<(i64, Option<[u8; 10]>)> =
            const { std::cell::Cell::new((i64::MIN, None)) };
    }
    let date = LAST_DATE.with(|last| match last.get() {
        (day, date) if day == days => date,
        _ => {
            let date = date_text(days);
            last.set((days, date));
            date
        }
    });
    let Some(date) = date else {
        let _ = write!(out, "{ms}");
        return;
    };
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    buf[..10].copy_from_slice(&date);
    let (seconds, milli) = (ms_of_day / 1000, ms_of_day % 1000);
    let two = |buf: &mut [u8; 24], at: usize, v: u32| {
        buf[at] = b'0' + (v / 10) as u8;
        buf[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut buf, 11, seconds / 3600);
    two(&mut buf, 14, seconds / 60 % 60);
    two(&mut buf, 17, seconds % 60);
    buf[20] = b'0' + (milli / 100) as u8;
    two(&mut buf, 21, milli % 100);
    out.push_str(std::str::from_utf8(&buf).expect("ASCII"));
}

/// `YYYY-MM-DD` of a day since the epoch, or `None` outside years 0 to 9999.
fn date_text(days: i64) -> Option<[u8; 10]> {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut buf = *b"0000-00-00";
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    Some(buf)
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]`
/// (`T` may be `t` or a space; no offset means UTC), or `None`. Strict:
/// out-of-range fields are refused. See `decode::parse_time`.
pub fn parse_rfc3339(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &b[start..i.min(start + 3)];
        millis = num(digits)? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_minutes = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' {
                -(h * 60 + m)
            } else {
                h * 60 + m
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute - offset_minutes) * 60_000 + second * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_chrono_across_eras() {
        for ms in [
            0,
            1,
            86_399_999,
            951_782_400_000,
            1_795_541_405_123,
            -1,
            -86_400_001,
            253_402_300_799_999,
        ] {
            let want = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(iso8601(ms), want, "{ms}");
        }
        // Outside years 0 to 9999: the number, whatever date came before.
        assert_eq!(iso8601(253_402_300_800_000), "253402300800000");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    }

    proptest::proptest! {
        /// The remembered date is the right one whatever order days come
        /// in: times near one another and far apart, interleaved.
        #[test]
        fn iso8601_matches_chrono_in_any_order(
            times in proptest::collection::vec(
                proptest::prop_oneof![
                    1_795_500_000_000i64..1_795_700_000_000,
                    -62_135_596_800_000i64..253_402_300_799_999,
                ],
                1..40,
            )
        ) {
            for ms in times {
                let want = chrono::DateTime::from_timestamp_millis(ms)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string();
                proptest::prop_assert_eq!(iso8601(ms), want, "{}", ms);
            }
        }
    }
}
