//! Decoding a record's JSON once into what rules and windows need: the key,
//! the event time and the configured numeric fields.
//!
//! The record is walked once with a serde visitor that looks only at the
//! configured top-level members and skips everything else without building
//! it, so no per-record `serde_json::Value` tree is allocated. The original
//! text is kept as it is for outputs.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Which members to read.
#[derive(Clone, Debug)]
pub struct Schema {
    pub key_field: String,
    pub time_field: String,
    pub fields: Vec<String>,
}

/// Why a record could not be decoded. The message goes into the
/// dead-letter record's `streamhost.error` header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("missing key field `{0}`")]
    MissingKey(String),
    #[error("missing event-time field `{0}`")]
    MissingTime(String),
    #[error("{0}")]
    Field(String),
}

/// A decoded record. `values` has one entry per schema field; NaN when the
/// record does not have the field (or has it as `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub key: String,
    pub time_ms: i64,
    pub values: Vec<f64>,
}

/// Decodes `bytes` against `schema`.
pub fn decode(schema: &Schema, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let found = RecordSeed { schema }.deserialize(&mut de).map_err(|e| {
        if e.is_data() {
            let msg = e.to_string();
            // Our own messages are complete sentences; strip serde's position.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            if msg == "not a JSON object" { DecodeError::NotObject } else { DecodeError::Field(msg) }
        } else {
            DecodeError::Json(e.to_string())
        }
    })?;
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;
    let key = found.key.ok_or_else(|| DecodeError::MissingKey(schema.key_field.clone()))?;
    let time_ms = found.time.ok_or_else(|| DecodeError::MissingTime(schema.time_field.clone()))?;
    Ok(Decoded { key, time_ms, values: found.values })
}

/// Parses an event time: RFC 3339 / ISO-8601 text (a time without an offset
/// is taken as UTC, as Python's `datetime.utcnow().isoformat()` writes it),
/// or an integer number of milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Some(ms) = parse_iso_fast(text.as_bytes()) {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// The common shape, `YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]`,
/// parsed without allocation; anything else (or anything out of range)
/// returns `None` and goes to chrono. Fractions beyond milliseconds are
/// truncated, as chrono's `timestamp_millis` does.
fn parse_iso_fast(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
    }
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
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
            let m = num(&[*h1, *h2])? * 60 + num(&[*m1, *m2])?;
            if *sign == b'-' { -m } else { m }
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

struct Found {
    key: Option<String>,
    time: Option<i64>,
    values: Vec<f64>,
}

struct RecordSeed<'s> {
    schema: &'s Schema,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let s = self.schema;
        let mut found = Found { key: None, time: None, values: vec![f64::NAN; s.fields.len()] };
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name == s.key_field {
                found.key = Some(map.next_value::<KeyValue>()?.0);
            } else if name == s.time_field {
                found.time = Some(map.next_value::<TimeValue>()?.0);
            } else if let Some(f) = s.fields.iter().position(|n| *n == name) {
                let v = map.next_value::<Option<f64>>().map_err(|e| {
                    de::Error::custom(format!(
                        "field `{name}` is not a number: {}",
                        e.to_string().split(" at line ").next().unwrap_or_default()
                    ))
                })?;
                found.values[f] = v.unwrap_or(f64::NAN);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Found, A::Error> {
        Err(de::Error::custom("not a JSON object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Found, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Found, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Found, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Found, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Found, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Found, E> {
        Err(E::custom("not a JSON object"))
    }
}

/// A key: a string, or an integer written as its decimal text.
struct KeyValue(String);

impl<'de> de::Deserialize<'de> for KeyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the key as a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyValue, E> {
                if v.is_empty() {
                    return Err(E::custom("the key field is empty"));
                }
                Ok(KeyValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyValue, E> {
                Ok(KeyValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyValue, E> {
                Ok(KeyValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// An event time: ISO-8601 text or epoch milliseconds.
struct TimeValue(i64);

impl<'de> de::Deserialize<'de> for TimeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the event time as ISO-8601 text or epoch milliseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeValue, E> {
                parse_time(v)
                    .map(TimeValue)
                    .ok_or_else(|| E::custom(format!("event time {v:?} is not ISO-8601")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeValue, E> {
                Ok(TimeValue(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeValue, E> {
                i64::try_from(v).map(TimeValue).map_err(|_| E::custom("event time out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TimeValue, E> {
                if v.is_finite() && v.abs() < 9e15 {
                    Ok(TimeValue(v as i64))
                } else {
                    Err(E::custom("event time out of range"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            key_field: "sensor_id".into(),
            time_field: "timestamp".into(),
            fields: vec!["temperature".into(), "humidity".into()],
        }
    }

    #[test]
    fn reads_the_configured_members_and_skips_the_rest() {
        let d = decode(
            &schema(),
            br#"{"sensor_id":"s1","location":{"latitude":40.1,"x":[1,2]},"timestamp":"2026-11-24T17:30:05.123","temperature":21.5}"#,
        )
        .unwrap();
        assert_eq!(d.key, "s1");
        assert_eq!(d.time_ms, 1_795_541_405_123);
        assert_eq!(d.values[0], 21.5);
        assert!(d.values[1].is_nan());
    }

    #[test]
    fn accepts_epoch_millis_offsets_and_integer_keys() {
        let d = decode(&schema(), br#"{"sensor_id":7,"timestamp":1000,"humidity":null}"#).unwrap();
        assert_eq!((d.key.as_str(), d.time_ms), ("7", 1000));
        let d = decode(&schema(), br#"{"sensor_id":"a","timestamp":"1970-01-01T01:00:00+01:00"}"#).unwrap();
        assert_eq!(d.time_ms, 0);
    }

    #[test]
    fn fast_time_parsing_agrees_with_chrono() {
        for text in [
            "2026-11-24T17:30:05Z",
            "2026-11-24T17:30:05.1Z",
            "2026-11-24T17:30:05.123456",
            "2024-02-29T00:00:00+05:30",
            "1969-12-31T23:59:59.999-01:00",
            "2000-01-01 12:00:00",
        ] {
            let slow = chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp_millis())
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                        .map(|t| t.and_utc().timestamp_millis())
                })
                .unwrap();
            assert_eq!(parse_iso_fast(text.as_bytes()), Some(slow), "{text}");
        }
        for bad in ["2026-02-30T00:00:00Z", "2026-11-24T24:00:00Z", "2026-11-24T17:30:05.Z", "2026-11-24T17:30:05+0100"] {
            assert_eq!(parse_iso_fast(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse_time("2026-11-24T17:30:05+01:00"), Some(1_795_537_805_000));
    }

    #[test]
    fn bad_records_say_why() {
        let s = schema();
        assert!(matches!(decode(&s, b"not json"), Err(DecodeError::Json(_))));
        assert_eq!(decode(&s, b"[1,2]"), Err(DecodeError::NotObject));
        assert_eq!(decode(&s, br#"{"timestamp":1}"#), Err(DecodeError::MissingKey("sensor_id".into())));
        assert_eq!(decode(&s, br#"{"sensor_id":"a"}"#), Err(DecodeError::MissingTime("timestamp".into())));
        assert_eq!(
            decode(&s, br#"{"sensor_id":"a","timestamp":1,"temperature":"hot"}"#),
            Err(DecodeError::Field(
                "field `temperature` is not a number: invalid type: string \"hot\", expected f64".into()
            ))
        );
        let e = decode(&s, br#"{"sensor_id":"a","timestamp":"yesterday"}"#).unwrap_err();
        assert_eq!(e.to_string(), "event time \"yesterday\" is not ISO-8601");
        assert!(matches!(decode(&s, br#"{"sensor_id":"a","timestamp":1} x"#), Err(DecodeError::Json(_))));
    }
}
