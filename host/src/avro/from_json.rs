//! A JSON output (an enriched record, an alert) as an Avro value, with the
//! schema inferred from its shape.
//!
//! Outputs are JSON objects whose members come from the input record, the
//! transforms and streamhost, so their schema is inferred rather than
//! declared, and chosen so that it depends only on member names and nesting,
//! never on values. A schema therefore changes only when members come or go,
//! and every such change is both backward and forward compatible:
//! - every scalar member has the type `["null", "boolean", "long", "double",
//!   "string"]` (integers that fit `long` as `long`, other numbers as
//!   `double`), with default `null`;
//! - an object is a nullable record of its members; an array a nullable
//!   array whose items are those scalars or, if it holds objects, one record
//!   of all their members;
//! - a member name that is not a valid Avro name has its other characters
//!   replaced by `_` (and `_` put before a leading digit).

use std::collections::BTreeMap;

use apache_avro::types::Value;
use serde_json::{Map, Value as Json, json};

/// Branches of every scalar member, in this order.
const SCALAR: [&str; 5] = ["null", "boolean", "long", "double", "string"];
const NULL: u32 = 0;

/// The schema (as JSON) and the Avro value of a JSON object, as a record
/// called `name` in the `streamhost` namespace.
pub fn infer(name: &str, v: &Json) -> Result<(Json, Value), super::Error> {
    let Json::Object(members) = v else {
        return Err(super::Error::OutputNotObject);
    };
    let shape = Shape::of_object(members);
    let mut names = Vec::new();
    let mut schema = shape.record_schema(name, &mut names);
    schema["namespace"] = json!("streamhost");
    Ok((schema, shape.record_value(members)))
}

/// The shape of a JSON object: its members' names and nesting.
#[derive(Default, Debug)]
struct Shape {
    /// (member name as given, its kind), in first-seen order.
    members: Vec<(String, Kind)>,
}

#[derive(Debug)]
enum Kind {
    Scalar,
    Object(Shape),
    /// An array; `Some` when it holds objects (all of their members).
    Array(Option<Shape>),
}

impl Shape {
    fn of_object(members: &Map<String, Json>) -> Shape {
        let mut shape = Shape::default();
        shape.add(members);
        shape
    }

    /// Adds the members of one object (arrays of objects merge theirs).
    fn add(&mut self, members: &Map<String, Json>) {
        for (k, v) in members {
            let at = match self.members.iter().position(|(n, _)| n == k) {
                Some(i) => i,
                None => {
                    self.members.push((k.clone(), Kind::Scalar));
                    self.members.len() - 1
                }
            };
            let kind = &mut self.members[at].1;
            match v {
                Json::Object(m) => match kind {
                    Kind::Object(s) => s.add(m),
                    _ => *kind = Kind::Object(Shape::of_object(m)),
                },
                Json::Array(items) => {
                    let mut inner: Option<Shape> = match std::mem::replace(kind, Kind::Scalar) {
                        Kind::Array(s) => s,
                        _ => None,
                    };
                    for item in items {
                        if let Json::Object(m) = item {
                            inner.get_or_insert_with(Shape::default).add(m);
                        }
                    }
                    *kind = Kind::Array(inner);
                }
                _ => {}
            }
        }
    }

    /// Avro field names for the members, unique within the record.
    fn field_names(&self) -> Vec<String> {
        let mut taken: BTreeMap<String, u32> = BTreeMap::new();
        self.members
            .iter()
            .map(|(n, _)| {
                let base = avro_name(n);
                let seen = taken.entry(base.clone()).or_insert(0);
                *seen += 1;
                if *seen == 1 {
                    base
                } else {
                    format!("{base}_{seen}")
                }
            })
            .collect()
    }

    fn record_schema(&self, name: &str, names: &mut Vec<String>) -> Json {
        let fields: Vec<Json> = self
            .members
            .iter()
            .zip(self.field_names())
            .map(|((_, kind), field)| {
                let inner_name = format!("{name}_{field}");
                let ty = match kind {
                    Kind::Scalar => json!(SCALAR),
                    Kind::Object(s) => json!(["null", s.record_schema(&inner_name, names)]),
                    Kind::Array(None) => json!(["null", {"type": "array", "items": SCALAR}]),
                    Kind::Array(Some(s)) => {
                        let mut items: Vec<Json> = SCALAR.iter().map(|t| json!(t)).collect();
                        items.push(s.record_schema(&inner_name, names));
                        json!(["null", {"type": "array", "items": items}])
                    }
                };
                json!({"name": field, "type": ty, "default": null})
            })
            .collect();
        names.push(name.to_string());
        json!({"type": "record", "name": name, "fields": fields})
    }

    fn record_value(&self, members: &Map<String, Json>) -> Value {
        Value::Record(
            self.members
                .iter()
                .zip(self.field_names())
                .map(|((n, kind), field)| {
                    let v = members.get(n).unwrap_or(&Json::Null);
                    (field, self.member_value(kind, v))
                })
                .collect(),
        )
    }

    fn member_value(&self, kind: &Kind, v: &Json) -> Value {
        match (kind, v) {
            (_, Json::Null) => Value::Union(NULL, Box::new(Value::Null)),
            (Kind::Object(s), Json::Object(m)) => Value::Union(1, Box::new(s.record_value(m))),
            (Kind::Array(inner), Json::Array(items)) => {
                let items = items
                    .iter()
                    .map(|item| match (inner, item) {
                        (Some(s), Json::Object(m)) => {
                            Value::Union(SCALAR.len() as u32, Box::new(s.record_value(m)))
                        }
                        _ => scalar(item),
                    })
                    .collect();
                Value::Union(1, Box::new(Value::Array(items)))
            }
            _ => scalar(v),
        }
    }
}

/// A scalar as a branch of `SCALAR`; a value of another kind where a scalar
/// is expected (an object in an array of numbers, say) as its JSON text.
fn scalar(v: &Json) -> Value {
    let (branch, value) = match v {
        Json::Null => (0, Value::Null),
        Json::Bool(b) => (1, Value::Boolean(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => (2, Value::Long(i)),
            None => (3, Value::Double(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => (4, Value::String(s.clone())),
        other => (4, Value::String(other.to_string())),
    };
    Value::Union(branch, Box::new(value))
}

/// `name` as a valid Avro name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    fn round_trip(v: &Json) -> Json {
        let (schema, value) = infer("Out", v).unwrap();
        let schema = Schema::parse(&schema).unwrap();
        let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .unwrap();
        let back = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .and_then(|r| r.read_value(&mut &bytes[..]))
            .unwrap();
        let mut text = String::new();
        super::super::to_json::push_value(&mut text, &back).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn an_enriched_record_and_an_alert_survive_the_round_trip() {
        let enriched = json!({
            "sensor_id": "s1", "temperature": 21.5, "count": 3, "ok": true, "note": null,
            "streamhost": {"window": {"count": 2, "fields": {"temperature": {"mean": 21.25}}},
                           "trends": {"jump-js": {"direction": "stable"}}},
        });
        let mut expected = enriched.clone();
        // The member name is made a valid Avro name.
        expected["streamhost"]["trends"] = json!({"jump_js": {"direction": "stable"}});
        assert_eq!(round_trip(&enriched), expected);
        let alert = json!({"sensor_id": "s1", "anomalies": [
            {"kind": "low_battery", "severity": "high"},
            {"kind": "hot", "message": "41 °C"}]});
        let back = round_trip(&alert);
        assert_eq!(back["anomalies"][0]["kind"], "low_battery");
        assert_eq!(back["anomalies"][0]["message"], Json::Null);
        assert_eq!(back["anomalies"][1]["message"], "41 °C");
    }

    #[test]
    fn the_schema_depends_on_names_not_values() {
        let a = infer("Out", &json!({"x": 1, "y": "a"})).unwrap().0;
        let b = infer("Out", &json!({"x": 1.5, "y": null})).unwrap().0;
        assert_eq!(a, b);
        let c = infer("Out", &json!({"x": 1, "y": "a", "z": 2})).unwrap().0;
        let (a, c) = (Schema::parse(&a).unwrap(), Schema::parse(&c).unwrap());
        // Adding a member is compatible both ways.
        apache_avro::schema_compatibility::SchemaCompatibility::mutual_read(&a, &c).unwrap();
    }
}
