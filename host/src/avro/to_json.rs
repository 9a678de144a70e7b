//! An Avro value as the JSON text rules and outputs see.
//!
//! Plain JSON, not Avro's JSON encoding: a union is its branch's value
//! (without the `{"type": value}` wrapper), an enum its symbol, a record an
//! object with its fields in schema order. Logical types become what a JSON
//! producer would write: `timestamp-millis` and `timestamp-micros` (and
//! their `local-` forms) RFC 3339 text in UTC, so that an event-time field
//! is read as a time whatever `--epoch-unit` says; `date` `YYYY-MM-DD`;
//! `uuid` its text; `bytes` and `fixed` a string of code points 0-255, as
//! Avro's own JSON encoding writes them. Non-finite floats become `null`.

use apache_avro::types::Value;

use super::Error;
use crate::text::json::{push_f64, push_int, push_joined, push_str};
use crate::text::time::push_iso8601;

/// Writes `value` as JSON into `out`.
pub fn push_value(out: &mut String, value: &Value) -> Result<(), Error> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(v) => push_int(out, *v),
        Value::Date(days) => push_date(out, *days),
        Value::Long(v) | Value::TimeMicros(v) => push_int(out, *v),
        Value::TimeMillis(v) => push_int(out, *v),
        Value::Float(v) => push_f64(out, f64::from(*v)),
        Value::Double(v) => push_f64(out, *v),
        Value::String(s) | Value::Enum(_, s) => push_str(out, s),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            let text: String = b.iter().map(|&c| char::from(c)).collect();
            push_str(out, &text);
        }
        Value::Uuid(u) => push_str(out, &u.to_string()),
        Value::Union(_, inner) => push_value(out, inner)?,
        Value::Array(items) => {
            out.push('[');
            let mut result = Ok(());
            push_joined(out, items, |out, v| {
                if result.is_ok() {
                    result = push_value(out, v);
                }
            });
            result?;
            out.push(']');
        }
        Value::Map(entries) => {
            // Sorted, so that the same map always gives the same text.
            let mut entries: Vec<_> = entries.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            push_members(out, entries.into_iter())?;
        }
        Value::Record(fields) => push_members(out, fields.iter().map(|(k, v)| (k, v)))?,
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => push_time(out, *ms),
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            push_time(out, us.div_euclid(1000))
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
            push_time(out, ns.div_euclid(1_000_000))
        }
        Value::Duration(_) | Value::Decimal(_) | Value::BigDecimal(_) => {
            let kind = match value {
                Value::Duration(_) => "duration",
                _ => "decimal",
            };
            return Err(Error::Unsupported { kind });
        }
    }
    Ok(())
}

fn push_members<'a>(
    out: &mut String,
    members: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Result<(), Error> {
    out.push('{');
    let mut first = true;
    for (k, v) in members {
        if !first {
            out.push(',');
        }
        first = false;
        push_str(out, k);
        out.push(':');
        push_value(out, v)?;
    }
    out.push('}');
    Ok(())
}

fn push_time(out: &mut String, ms: i64) {
    out.push('"');
    push_iso8601(out, ms);
    out.push('"');
}

fn push_date(out: &mut String, days: i32) {
    let text = chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string());
    match text {
        Some(t) => push_str(out, &t),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> serde_json::Value {
        let mut s = String::new();
        push_value(&mut s, v).unwrap();
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn records_unions_and_logical_types_read_as_plain_json() {
        let v = Value::Record(vec![
            ("sensor_id".into(), Value::String("s\"1".into())),
            (
                "timestamp".into(),
                Value::TimestampMillis(1_795_500_000_123),
            ),
            (
                "temperature".into(),
                Value::Union(1, Box::new(Value::Double(21.5))),
            ),
            ("humidity".into(), Value::Union(0, Box::new(Value::Null))),
            ("count".into(), Value::Int(-3)),
            ("day".into(), Value::Date(20_416)),
            ("state".into(), Value::Enum(1, "ok".into())),
            ("raw".into(), Value::Bytes(vec![0, 0xff])),
            ("nan".into(), Value::Float(f32::NAN)),
            (
                "tags".into(),
                Value::Array(vec![Value::Long(1), Value::Long(2)]),
            ),
        ]);
        assert_eq!(
            json(&v),
            serde_json::json!({
                "sensor_id": "s\"1",
                "timestamp": "2026-11-24T06:00:00.123Z",
                "temperature": 21.5,
                "humidity": null,
                "count": -3,
                "day": "2025-11-24",
                "state": "ok",
                "raw": "\u{0}\u{ff}",
                "nan": null,
                "tags": [1, 2],
            })
        );
    }

    #[test]
    fn decimals_are_refused_with_a_reason() {
        let mut s = String::new();
        let err = push_value(&mut s, &Value::BigDecimal(Default::default()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("decimal"), "{err}");
    }
}
