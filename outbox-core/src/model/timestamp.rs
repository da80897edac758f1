//! Timestamps serialized as RFC 3339 text without `core::fmt`: the same text as `chrono`'s own
//! serde output (UTC with `Z`, fractional seconds in 0, 3, 6 or 9 digits, as few as the value
//! needs), at a fraction of its cost. Handler results carry one or two timestamps per event and
//! are serialized at every completion; chrono's formatter cost about 2,400 instructions per event
//! there (measured with callgrind on the PostgreSQL drain). Reading them back is chrono's own
//! deserializer.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};

/// The longest text written: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// Serializes `at` as chrono does (for `#[serde(serialize_with = …)]`).
pub(crate) fn serialize<S: Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buf = [0_u8; MAX_LEN];
    match write(at, &mut buf) {
        Some(text) => serializer.serialize_str(text),
        // Years outside 0..=9999 and leap seconds: chrono's own text.
        None => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// Serializes an optional timestamp as chrono does (`None` as a unit none, `Some` as the text).
pub(crate) fn serialize_option<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_some(&Rfc3339(at)),
        None => serializer.serialize_none(),
    }
}

struct Rfc3339<'a>(&'a DateTime<Utc>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, serializer)
    }
}

/// Writes `at` into `buf`; `None` for what only chrono writes (a year outside 0..=9999, a leap
/// second).
fn write<'a>(at: &DateTime<Utc>, buf: &'a mut [u8; MAX_LEN]) -> Option<&'a str> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = at.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    put(&mut buf[0..4], year);
    buf[4] = b'-';
    put(&mut buf[5..7], at.month());
    buf[7] = b'-';
    put(&mut buf[8..10], at.day());
    buf[10] = b'T';
    put(&mut buf[11..13], at.hour());
    buf[13] = b':';
    put(&mut buf[14..16], at.minute());
    buf[16] = b':';
    put(&mut buf[17..19], at.second());
    let mut len = 19;
    let (fraction, digits) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if digits > 0 {
        buf[len] = b'.';
        put(&mut buf[len + 1..len + 1 + digits], fraction);
        len += 1 + digits;
    }
    buf[len] = b'Z';
    std::str::from_utf8(&buf[..=len]).ok()
}

/// Writes `value`'s last `out.len()` decimal digits, zero-padded.
fn put(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        // A remainder of 10 is below 10: the cast cannot truncate.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    fn ours(at: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(at, &mut serde_json::Serializer::new(&mut out)).unwrap_or_default();
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn writes_the_same_text_as_chrono() {
        let mut cases = vec![
            Utc::now(),
            Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
            Utc.timestamp_opt(1_700_000_000, 120_000_000)
                .single()
                .unwrap_or_default(),
            Utc.timestamp_opt(1_700_000_000, 123_456_000)
                .single()
                .unwrap_or_default(),
            Utc.timestamp_opt(1_700_000_000, 123_456_789)
                .single()
                .unwrap_or_default(),
            Utc.timestamp_opt(1_700_000_000, 1)
                .single()
                .unwrap_or_default(),
            Utc.timestamp_opt(1_700_000_000, 1_000)
                .single()
                .unwrap_or_default(),
            Utc.timestamp_opt(1_700_000_000, 999_999_999)
                .single()
                .unwrap_or_default(),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        for (y, mo, d, h, mi, s) in [
            (0, 1, 1, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59),
            (10000, 1, 1, 0, 0, 0),
            (-1, 6, 15, 12, 30, 30),
            (2024, 2, 29, 7, 8, 9),
        ] {
            let at = NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|date| date.and_hms_nano_opt(h, mi, s, 5_000_000))
                .map(|naive| Utc.from_utc_datetime(&naive));
            cases.extend(at);
        }
        // A leap second (chrono keeps it as a nanosecond count of a second or more).
        cases.extend(
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .and_then(|date| date.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
                .map(|naive| Utc.from_utc_datetime(&naive)),
        );
        // A spread of instants with every kind of fraction.
        let mut seed: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let secs = (seed >> 20).rem_euclid(253_402_300_799);
            let nanos = match seed.rem_euclid(4) {
                0 => 0,
                1 => (seed >> 7).rem_euclid(1_000) * 1_000_000,
                2 => (seed >> 7).rem_euclid(1_000_000) * 1_000,
                _ => (seed >> 7).rem_euclid(1_000_000_000),
            };
            let nanos = u32::try_from(nanos).unwrap_or(0);
            cases.extend(Utc.timestamp_opt(secs, nanos).single());
        }
        assert!(cases.len() > 2_000);
        for at in cases {
            let chrono = serde_json::to_string(&at).unwrap_or_default();
            assert_eq!(ours(&at), chrono, "{at:?}");
        }
    }

    #[test]
    fn options_serialize_like_chrono() {
        #[derive(Serialize)]
        struct Ours {
            #[serde(serialize_with = "serialize_option")]
            at: Option<DateTime<Utc>>,
        }
        #[derive(Serialize)]
        struct Chrono {
            at: Option<DateTime<Utc>>,
        }
        for at in [None, Some(Utc::now())] {
            assert_eq!(
                serde_json::to_string(&Ours { at }).unwrap_or_default(),
                serde_json::to_string(&Chrono { at }).unwrap_or_default()
            );
        }
    }
}
