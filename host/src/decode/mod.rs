//! Decoding a record's JSON once into what rules and windows need: the key,
//! the event time and the configured numeric fields.
//!
//! A record of the usual shape is read in one pass by a hand-written
//! scanner (`fast`), which gives up on anything unusual. Then, and for
//! `decode` of raw bytes, the record is walked with a serde visitor that
//! looks only at the configured top-level members and skips everything else
//! without building it, so no per-record `serde_json::Value` tree is
//! allocated. serde_json decides every refusal and every edge case. The
//! original text is kept as it is for outputs.

use std::fmt;

mod fast;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

pub use crate::text::time::EpochUnit;
use crate::text::time::{MAX_TIME_MS, MIN_TIME_MS, parse_rfc3339};

/// The most numeric fields a schema may name (they are tracked in a `u64`).
pub const MAX_FIELDS: usize = 64;

/// How consumed records are written.
#[derive(Clone, Debug, Default)]
pub enum InputFormat {
    /// JSON text.
    #[default]
    Json,
    /// Avro in the Confluent framing, read as JSON text first.
    Avro(std::sync::Arc<crate::avro::AvroInput>),
}

/// Which members to read.
#[derive(Clone, Debug)]
pub struct Schema {
    /// The member that holds the key windows are kept by.
    pub key_field: String,
    /// The member that holds the event time.
    pub time_field: String,
    /// The numeric members windows keep (at most [`MAX_FIELDS`]).
    pub fields: Vec<String>,
    /// The unit of a numeric event time.
    pub epoch_unit: EpochUnit,
}

/// Epoch milliseconds below this (1973-03-03) are refused as probably epoch
/// seconds: as seconds they would be year 5138, as milliseconds a date no
/// sensor reports.
const SMALLEST_EPOCH_MILLIS: f64 = 1e11;

/// Why a record could not be decoded. The message goes into the
/// dead-letter record's `streamhost.error` header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON text (the reader's message).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// The key member is missing (its name).
    #[error("missing key field `{0}`")]
    MissingKey(String),
    /// The event-time member is missing (its name).
    #[error("missing event-time field `{0}`")]
    MissingTime(String),
    /// A member is there but refused: given twice, a blank key, a time
    /// out of range, a field that is not a number...
    #[error("{0}")]
    Field(String),
    /// A record without a value.
    #[error("the record has no value (a tombstone)")]
    Tombstone,
}

/// A decoded record. `values` has one entry per schema field; NaN when the
/// record does not have the field (or has it as `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The key.
    pub key: String,
    /// The event time, in epoch milliseconds.
    pub time_ms: i64,
    /// One value per schema field, in the schema's order.
    pub values: Vec<f64>,
}

/// Decodes `bytes` against `schema`.
pub fn decode(schema: &Schema, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    finish(schema, &mut serde_json::Deserializer::from_slice(bytes))
}

/// `decode` of text already checked to be UTF-8 (the pipeline checks each
/// payload once): the fast path, else serde_json.
pub fn decode_text(schema: &Schema, text: &str) -> Result<Decoded, DecodeError> {
    match fast::decode(schema, text) {
        Some(decoded) => Ok(decoded),
        None => decode_text_serde(schema, text),
    }
}

/// `decode_text` by serde_json alone, without the fast path: what the fast
/// path falls back to, public for the benchmark's comparison.
pub fn decode_text_serde(schema: &Schema, text: &str) -> Result<Decoded, DecodeError> {
    finish(schema, &mut serde_json::Deserializer::from_str(text))
}

fn finish<'de, R: serde_json::de::Read<'de>>(
    schema: &Schema,
    de: &mut serde_json::Deserializer<R>,
) -> Result<Decoded, DecodeError> {
    let found = members(schema, &mut *de).map_err(|e| {
        if e.is_data() {
            DecodeError::from_visitor(&e.to_string())
        } else {
            DecodeError::Json(e.to_string())
        }
    })?;
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;
    found.into_decoded(schema)
}

/// Reads the configured members of a record with any serde deserializer,
/// through the visitor `decode` gives serde_json's: public so that the
/// benchmark can drive it with another JSON reader (sonic-rs) and compare
/// the two. The caller checks that the input ends there, then turns what
/// was found into the record ([`Members::into_decoded`]).
pub fn members<'de, D: Deserializer<'de>>(schema: &Schema, de: D) -> Result<Members, D::Error> {
    RecordSeed { schema }.deserialize(de)
}

impl DecodeError {
    /// The error for a refusal the record's visitor raised (an error
    /// message a deserializer returned for it), without the position the
    /// deserializer may have added: our own messages are complete sentences.
    pub fn from_visitor(message: &str) -> DecodeError {
        let msg = message.split(" at line ").next().unwrap_or(message);
        if msg == "not a JSON object" {
            DecodeError::NotObject
        } else {
            DecodeError::Field(msg.to_string())
        }
    }
}

/// Parses an event time: RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction]` then
/// `Z` or `±HH:MM`), where the offset may also be left out (taken as UTC, as
/// Python's `datetime.utcnow().isoformat()` writes it) and `T` may be a
/// space. Strict: fields out of range (month 13, hour 24, offset `+24:00`)
/// are refused, as is anything else. Fractions beyond milliseconds are
/// truncated. Parsed by hand, without allocation: it runs once per record.
pub fn parse_time(text: &str) -> Option<i64> {
    let ms = parse_rfc3339(text.as_bytes())?;
    (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms).then_some(ms)
}

/// An event time written as a number, in `unit`, to epoch milliseconds.
fn epoch_time(v: f64, unit: EpochUnit) -> Result<i64, String> {
    let ms = match unit {
        EpochUnit::Millis => v,
        EpochUnit::Seconds => v * 1000.0,
    };
    if !ms.is_finite() || !(MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms) {
        return Err(format!(
            "event time {v} is out of range (years 0001 to 9999)"
        ));
    }
    if unit == EpochUnit::Millis && ms.abs() < SMALLEST_EPOCH_MILLIS {
        return Err(format!(
            "event time {v} is before 1973 as epoch milliseconds; if it is epoch seconds, set `--epoch-unit s`"
        ));
    }
    Ok(ms.floor() as i64)
}

/// What the visitor found of a record's configured members ([`members`]).
pub struct Members {
    key: Option<String>,
    time: Option<i64>,
    values: Vec<f64>,
    /// Which of the fields were seen (bit f), to refuse a member given
    /// twice without allocating per record (at most `MAX_FIELDS` fields).
    seen: u64,
}

impl Members {
    /// The record, once the key and the event time were found.
    pub fn into_decoded(self, schema: &Schema) -> Result<Decoded, DecodeError> {
        let key = self
            .key
            .ok_or_else(|| DecodeError::MissingKey(schema.key_field.clone()))?;
        let time_ms = self
            .time
            .ok_or_else(|| DecodeError::MissingTime(schema.time_field.clone()))?;
        Ok(Decoded {
            key,
            time_ms,
            values: self.values,
        })
    }
}

struct RecordSeed<'s> {
    schema: &'s Schema,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Members;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Members, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let s = self.schema;
        let mut found = Members {
            key: None,
            time: None,
            values: vec![f64::NAN; s.fields.len()],
            seen: 0,
        };
        let twice = |name: &str| de::Error::custom(format!("member `{name}` appears twice"));
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name == s.key_field {
                if found.key.is_some() {
                    return Err(twice(&name));
                }
                found.key = Some(map.next_value::<KeyValue>()?.0);
            } else if name == s.time_field {
                if found.time.is_some() {
                    return Err(twice(&name));
                }
                found.time = Some(map.next_value_seed(TimeSeed(s.epoch_unit))?);
            } else if let Some(f) = s.fields.iter().position(|n| *n == name) {
                if found.seen & (1 << f) != 0 {
                    return Err(twice(&name));
                }
                found.seen |= 1 << f;
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

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Members, A::Error> {
        Err(de::Error::custom("not a JSON object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Members, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Members, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Members, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Members, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Members, E> {
        Err(E::custom("not a JSON object"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Members, E> {
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
                if v.trim().is_empty() {
                    return Err(E::custom(if v.is_empty() {
                        "the key field is empty"
                    } else {
                        "the key field is blank"
                    }));
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

/// An event time: RFC 3339 text, or a number in the configured unit.
struct TimeSeed(EpochUnit);

impl<'de> DeserializeSeed<'de> for TimeSeed {
    type Value = i64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for TimeSeed {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the event time as RFC 3339 text or an epoch number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        parse_time(v).ok_or_else(|| {
            E::custom(format!(
                "event time {v:?} is not an RFC 3339 time between years 0001 and 9999"
            ))
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        epoch_time(v as f64, self.0).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        epoch_time(v as f64, self.0).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        epoch_time(v, self.0).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `valid` with `edits` made in turn, each (position, byte, edit): 0
    /// puts the byte in place of the one there, 1 inserts it, and any other
    /// (or 0 past the end) `cut`s at the position.
    pub(super) fn edited(
        valid: &str,
        edits: Vec<(usize, u8, u8)>,
        cut: fn(&mut Vec<u8>, usize),
    ) -> Vec<u8> {
        let mut bytes = valid.as_bytes().to_vec();
        for (at, b, op) in edits {
            let at = at.min(bytes.len());
            match op {
                0 if at < bytes.len() => bytes[at] = b,
                1 => bytes.insert(at, b),
                _ => cut(&mut bytes, at),
            }
        }
        bytes
    }

    /// The schema the decoder's tests read with (the fast path's too).
    pub(super) fn schema() -> Schema {
        Schema {
            key_field: "sensor_id".into(),
            time_field: "timestamp".into(),
            fields: vec!["temperature".into(), "humidity".into(), "pressure".into()],
            epoch_unit: EpochUnit::Millis,
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
        let d = decode(
            &schema(),
            br#"{"sensor_id":7,"timestamp":1795500000000,"humidity":null}"#,
        )
        .unwrap();
        assert_eq!((d.key.as_str(), d.time_ms), ("7", 1_795_500_000_000));
        let d = decode(
            &schema(),
            br#"{"sensor_id":"a","timestamp":"1970-01-01T01:00:00+01:00"}"#,
        )
        .unwrap();
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
                        .or_else(|_| {
                            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                        })
                        .map(|t| t.and_utc().timestamp_millis())
                })
                .unwrap();
            assert_eq!(parse_time(text), Some(slow), "{text}");
        }
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T17:30:05.Z",
            "2026-11-24T17:30:05+0100",
            "2026-11-24T17:30:05+99:99",
            "2026-11-24T17:30:05+24:00",
            "2026-11-24T17:30:05-12:60",
            "2026-11-24T17:30:60Z",
            "0000-12-31T23:59:59Z",
            "2026-11-24T17:30:05Z ",
            "2026-11-24",
            "+12026-11-24T17:30:05Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(
            parse_time("2026-11-24T17:30:05+01:00"),
            Some(1_795_537_805_000)
        );
    }

    #[test]
    fn bad_records_say_why() {
        let s = schema();
        assert!(matches!(decode(&s, b"not json"), Err(DecodeError::Json(_))));
        assert_eq!(decode(&s, b"[1,2]"), Err(DecodeError::NotObject));
        assert_eq!(
            decode(&s, br#"{"timestamp":1795500000000}"#),
            Err(DecodeError::MissingKey("sensor_id".into()))
        );
        assert_eq!(
            decode(&s, br#"{"sensor_id":"a"}"#),
            Err(DecodeError::MissingTime("timestamp".into()))
        );
        assert_eq!(
            decode(
                &s,
                br#"{"sensor_id":"a","timestamp":1795500000000,"temperature":"hot"}"#
            ),
            Err(DecodeError::Field(
                "field `temperature` is not a number: invalid type: string \"hot\", expected f64"
                    .into()
            ))
        );
        let e = decode(&s, br#"{"sensor_id":"a","timestamp":"yesterday"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event time \"yesterday\" is not an RFC 3339 time between years 0001 and 9999"
        );
        assert!(matches!(
            decode(&s, br#"{"sensor_id":"a","timestamp":1795500000000} x"#),
            Err(DecodeError::Json(_))
        ));
    }

    fn message(bytes: &[u8]) -> String {
        decode(&schema(), bytes).unwrap_err().to_string()
    }

    #[test]
    fn members_given_twice_are_refused() {
        for (record, member) in [
            (
                r#"{"sensor_id":"a","sensor_id":"b","timestamp":1795500000000}"#,
                "sensor_id",
            ),
            (
                r#"{"sensor_id":"a","timestamp":1795500000000,"timestamp":1795500001000}"#,
                "timestamp",
            ),
            (
                r#"{"sensor_id":"a","timestamp":1795500000000,"temperature":1,"temperature":2}"#,
                "temperature",
            ),
        ] {
            assert_eq!(
                message(record.as_bytes()),
                format!("member `{member}` appears twice")
            );
        }
        // Members streamhost does not read are left alone.
        assert!(
            decode(
                &schema(),
                br#"{"sensor_id":"a","timestamp":1795500000000,"x":1,"x":2}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn blank_keys_and_implausible_or_extreme_times_are_refused() {
        assert_eq!(
            message(br#"{"sensor_id":"   ","timestamp":1795500000000}"#),
            "the key field is blank"
        );
        assert_eq!(
            message(br#"{"sensor_id":"","timestamp":1795500000000}"#),
            "the key field is empty"
        );
        assert_eq!(
            message(br#"{"sensor_id":"a","timestamp":1795500000}"#),
            "event time 1795500000 is before 1973 as epoch milliseconds; if it is epoch seconds, set `--epoch-unit s`"
        );
        for t in [
            "-9223372036854775808",
            "9223372036854775807",
            "1e300",
            "253402300800000",
        ] {
            let m = message(format!(r#"{{"sensor_id":"a","timestamp":{t}}}"#).as_bytes());
            assert!(m.contains("out of range"), "{t}: {m}");
        }
        let seconds = Schema {
            epoch_unit: EpochUnit::Seconds,
            ..schema()
        };
        assert_eq!(
            decode(&seconds, br#"{"sensor_id":"a","timestamp":1795500000.5}"#)
                .unwrap()
                .time_ms,
            1_795_500_000_500
        );
    }

    mod fuzz {
        //! Decoding never panics, whatever the bytes: arbitrary ones, and
        //! valid records with bytes flipped, cut or spliced in.
        use super::*;
        use proptest::prelude::*;

        const VALID: &str = r#"{"sensor_id":"sensor_001","timestamp":"2026-11-24T17:30:05.123+01:00","temperature":21.5,"humidity":null,"x":[1,{"y":"z"}]}"#;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                let _ = decode(&schema(), &bytes);
            }

            #[test]
            fn mutated_records(edits in prop::collection::vec((0..VALID.len(), any::<u8>(), 0..3u8), 1..6)) {
                let bytes = edited(VALID, edits, |bytes, at| bytes.truncate(at.max(1)));
                let _ = decode(&schema(), &bytes);
            }

            #[test]
            fn time_text(text in "[0-9tTzZ:. +-]{0,40}") {
                if let Some(ms) = parse_time(&text) {
                    prop_assert!((MIN_TIME_MS..=MAX_TIME_MS).contains(&ms));
                }
            }

            #[test]
            fn epoch_numbers(v in any::<f64>(), seconds in any::<bool>()) {
                let unit = if seconds { EpochUnit::Seconds } else { EpochUnit::Millis };
                if let Ok(ms) = epoch_time(v, unit) {
                    prop_assert!((MIN_TIME_MS..=MAX_TIME_MS).contains(&ms));
                }
            }
        }
    }
}
