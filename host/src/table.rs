//! Reference tables (`--table NAME=TOPIC[:FIELD]`): rows a rule reads beside
//! each record, "latest at processing", like a Kafka Streams GlobalKTable.
//!
//! A table is a compacted topic: a record's key is a row's key (UTF-8), its
//! value the row (a JSON object's text), and a null value (a tombstone)
//! deletes the row. This module is the table without Kafka: the rows as
//! applied ([`Table::apply`]), what one batch's records see of them
//! ([`Table::rows`], the contract's `table-rows`), which row a record looks
//! up ([`lookup_key`]) and the flag's value ([`TableSource`]). The loader
//! that reads a topic into a `Table` is `kafka::table`.
//!
//! Rows are read far more often than written: every batch passes each rule
//! the numeric members it asks for of each distinct row. So a row's numeric
//! members are read once, when it is applied, into a list of (member,
//! value) sorted by member, with member names interned per table: a batch
//! reads a field with a binary search rather than by parsing JSON, and a
//! row costs its text plus 16 bytes a numeric member. Names stay interned
//! for the table's life (a handful per topic in practice).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::contract::types::{TableRows, TableSpec};

/// One row: its JSON object text and its numeric members.
#[derive(Clone, Debug)]
struct Row {
    text: Arc<str>,
    /// (interned member name, value), sorted by name, one entry a name.
    numbers: Box<[(u32, f64)]>,
}

impl Row {
    /// The member interned as `name`, NaN when the row has no such number.
    fn number(&self, name: Option<u32>) -> f64 {
        name.and_then(|name| {
            let at = self.numbers.binary_search_by_key(&name, |n| n.0).ok()?;
            Some(self.numbers[at].1)
        })
        .unwrap_or(f64::NAN)
    }
}

/// A table's rows by key, as the records applied so far left them.
#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<Arc<str>, Row>,
    /// Every numeric member name seen, and its number.
    names: HashMap<Box<str>, u32>,
    applied: u64,
    refused: u64,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// Applies one record of the table's topic: `value` becomes the row of
    /// `key`, or deletes it when `None` (a tombstone). A record that cannot
    /// be a row (no key, a key that is not UTF-8, a value that is not a
    /// JSON object) changes nothing, is counted, and its reason returned.
    pub fn apply(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        let result = self.put(key, value);
        match result {
            Ok(()) => self.applied += 1,
            Err(_) => self.refused += 1,
        }
        result
    }

    fn put(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        let key = key.ok_or("the record has no key")?;
        let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8")?;
        let Some(value) = value else {
            self.rows.remove(key);
            return Ok(());
        };
        let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8 text")?;
        let members = numeric_members(text)?;
        let mut numbers: Vec<(u32, f64)> = members
            .into_iter()
            .map(|(name, v)| (self.intern(&name), v))
            .collect();
        numbers.sort_unstable_by_key(|n| n.0);
        let row = Row {
            text: Arc::from(text),
            numbers: numbers.into_boxed_slice(),
        };
        match self.rows.get_mut(key) {
            Some(old) => *old = row,
            None => {
                self.rows.insert(Arc::from(key), row);
            }
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.names.get(name) {
            return n;
        }
        let n = self.names.len() as u32;
        self.names.insert(name.into(), n);
        n
    }

    /// How many rows the table holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of `key`: its JSON object text.
    pub fn get(&self, key: &str) -> Option<&Arc<str>> {
        self.rows.get(key).map(|r| &r.text)
    }

    /// The numeric member `field` of the row of `key`: `None` without a
    /// row, NaN when the row lacks it or it is not a number.
    pub fn number(&self, key: &str, field: &str) -> Option<f64> {
        let name = self.names.get(field).copied();
        self.rows.get(key).map(|r| r.number(name))
    }

    /// Records applied (rows put or deleted).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Records refused (see [`Table::apply`]).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// What a batch's records see of the table, for a rule that declared
    /// `spec`: for each record, in order, the row of its lookup key (`None`:
    /// no row). Each distinct row is passed once, however many records see
    /// it; its `spec.fields` as columns (NaN where the row lacks one or it
    /// is not a number), its text only when `spec.json`.
    pub fn rows<'k>(
        &self,
        spec: &TableSpec,
        keys: impl Iterator<Item = Option<&'k str>>,
    ) -> TableRows {
        let names: Vec<Option<u32>> = spec
            .fields
            .iter()
            .map(|f| self.names.get(f.as_str()).copied())
            .collect();
        let mut out = TableRows {
            row_of: Vec::with_capacity(keys.size_hint().0),
            columns: vec![Vec::new(); names.len()],
            json: Vec::new(),
        };
        // Per key met in this batch: the row it sees, if any.
        let mut seen: HashMap<&'k str, Option<u32>> = HashMap::new();
        let mut distinct = 0u32;
        for key in keys {
            let at = key.and_then(|key| {
                *seen.entry(key).or_insert_with(|| {
                    let row = self.rows.get(key)?;
                    for (column, &name) in out.columns.iter_mut().zip(&names) {
                        column.push(row.number(name));
                    }
                    if spec.json {
                        out.json.push(row.text.to_string());
                    }
                    distinct += 1;
                    Some(distinct - 1)
                })
            });
            out.row_of.push(at);
        }
        out
    }
}

/// The numeric top-level members of a JSON object's text; the last of
/// members given twice counts. Why the text cannot be a row, if it cannot.
fn numeric_members(text: &str) -> Result<Vec<(Cow<'_, str>, f64)>, String> {
    let mut all: Vec<(Cow<'_, str>, Option<f64>)> = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let read = de
        .deserialize_map(Members(&mut all))
        .and_then(|()| de.end());
    if let Err(e) = read {
        return Err(match e.classify() {
            serde_json::error::Category::Data => "the value is not a JSON object".to_string(),
            _ => format!("the value is not valid JSON: {e}"),
        });
    }
    // Stable: members given twice keep their order, and the last wins.
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(all.len());
    let mut members = all.into_iter().peekable();
    while let Some((name, value)) = members.next() {
        let later = members.peek().is_some_and(|next| next.0 == name);
        if let (false, Some(v)) = (later, value) {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Reads an object's members: each name, and its value if it is a number.
struct Members<'m, 'a>(&'m mut Vec<(Cow<'a, str>, Option<f64>)>);

impl<'a> Visitor<'a> for Members<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<Name<'a>>()? {
            let raw: &'a RawValue = map.next_value()?;
            self.0.push((name.0, number(raw.get())));
        }
        Ok(())
    }
}

/// A member name, borrowed from the text unless it holds escapes.
struct Name<'a>(Cow<'a, str>);

impl<'a> de::Deserialize<'a> for Name<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'a> Visitor<'a> for V {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'a str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value's text as a number, if it is one. JSON's number grammar
/// is a subset of what `f64::from_str` reads, and reads the same.
fn number(raw: &str) -> Option<f64> {
    match raw.as_bytes().first()? {
        b'-' | b'0'..=b'9' => raw.parse().ok(),
        _ => None,
    }
}

// ------------------------------------------------------------- lookup --

/// The key of the row a record looks up in `source`'s table: its record
/// key, or with `NAME=TOPIC:FIELD` the record's top-level member FIELD (a
/// string, or a number's text as written). `None`, no row: the record
/// lacks the member, it is neither a string nor a number, or `json` is not
/// a JSON object.
pub fn lookup_key<'a>(
    source: &TableSource,
    record_key: &'a str,
    json: &'a str,
) -> Option<Cow<'a, str>> {
    match &source.field {
        None => Some(Cow::Borrowed(record_key)),
        Some(field) => member_key(json, field),
    }
}

/// The member `field` of the object `json` as a row key.
fn member_key<'a>(json: &'a str, field: &str) -> Option<Cow<'a, str>> {
    let mut de = serde_json::Deserializer::from_str(json);
    let raw = de.deserialize_map(Find(field)).ok()??.get();
    match raw.as_bytes()[0] {
        b'"' if !raw.contains('\\') => Some(Cow::Borrowed(&raw[1..raw.len() - 1])),
        b'"' => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
        b'-' | b'0'..=b'9' => Some(Cow::Borrowed(raw)),
        _ => None,
    }
}

/// Finds a member's value (the last, if given twice), skipping the others
/// without building them.
struct Find<'f>(&'f str);

impl<'a> Visitor<'a> for Find<'_> {
    type Value = Option<&'a RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is) = map.next_key_seed(IsName(self.0))? {
            if is {
                found = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a member's name is the one sought, read without allocating.
struct IsName<'f>(&'f str);

impl<'a> DeserializeSeed<'a> for IsName<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IsName<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

// ------------------------------------------------------------- source --

/// A table as `--table` gives it: `NAME=TOPIC`, or `NAME=TOPIC:FIELD` to
/// look rows up by the record's member FIELD rather than its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableSource {
    /// The name rules declare it by (letters, digits, `_`, `-`).
    pub name: String,
    /// The compacted topic that holds its rows.
    pub topic: String,
    /// The record member whose value is the row key; `None`: the record key.
    pub field: Option<String>,
}

/// Why a `--table` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No `=` between the name and the topic.
    #[error("`{0}` is not NAME=TOPIC or NAME=TOPIC:FIELD")]
    Shape(String),
    /// The name is empty or holds other characters.
    #[error(
        "table name `{0}` must be one or more letters, digits, `_` or `-` \
         (in NAME=TOPIC or NAME=TOPIC:FIELD)"
    )]
    Name(String),
    /// The topic is not a legal Kafka topic name.
    #[error(
        "table topic `{0}` is not a Kafka topic name: 1 to 249 letters, digits, `.`, `_` \
         or `-`, other than `.` and `..`"
    )]
    Topic(String),
    /// A `:` with no field after it.
    #[error("`{0}` has a `:` but no FIELD after it (NAME=TOPIC:FIELD)")]
    Field(String),
}

impl FromStr for TableSource {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<TableSource, SourceError> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| SourceError::Shape(s.to_string()))?;
        let ok_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if name.is_empty() || !name.chars().all(ok_name) {
            return Err(SourceError::Name(name.to_string()));
        }
        // `:` is not legal in a topic name, so the first one ends it.
        let (topic, field) = match rest.split_once(':') {
            Some((_, "")) => return Err(SourceError::Field(s.to_string())),
            Some((topic, field)) => (topic, Some(field.to_string())),
            None => (rest, None),
        };
        let ok_topic = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty()
            || topic.len() > 249
            || topic == "."
            || topic == ".."
            || !topic.chars().all(ok_topic)
        {
            return Err(SourceError::Topic(topic.to_string()));
        }
        Ok(TableSource {
            name: name.to_string(),
            topic: topic.to_string(),
            field,
        })
    }
}

impl fmt::Display for TableSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.topic)?;
        match &self.field {
            Some(field) => write!(f, ":{field}"),
            None => Ok(()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for TableSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl serde::Serialize for TableSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, Option<&str>)]) -> Table {
        let mut t = Table::new();
        for (k, v) in rows {
            let _ = t.apply(Some(k.as_bytes()), v.map(str::as_bytes));
        }
        t
    }

    fn spec(fields: &[&str], json: bool) -> TableSpec {
        TableSpec {
            name: "t".into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            json,
        }
    }

    /// NaN-aware equality of columns.
    fn same(a: &[Vec<f64>], b: &[Vec<f64>]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
            })
    }

    #[test]
    fn the_last_write_wins_and_a_tombstone_deletes() {
        let t = table(&[
            ("s1", Some(r#"{"max":40}"#)),
            ("s2", Some(r#"{"max":30}"#)),
            ("s1", Some(r#"{"max":45,"unit":"C"}"#)),
            ("s2", None),
            ("s3", None),
        ]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("s1").map(|r| &**r), Some(r#"{"max":45,"unit":"C"}"#));
        assert_eq!(t.get("s2"), None);
        assert_eq!(t.number("s1", "max"), Some(45.0));
        assert!(t.number("s1", "unit").unwrap().is_nan());
        assert!(t.number("s1", "nothing").unwrap().is_nan());
        assert_eq!(t.number("s2", "max"), None);
        assert_eq!((t.applied(), t.refused()), (5, 0));
    }

    #[test]
    fn records_that_cannot_be_rows_are_refused_counted_and_change_nothing() {
        let mut t = table(&[("s1", Some(r#"{"max":40}"#))]);
        let refused = [
            (Some(&b"s1"[..]), Some(&b"not json"[..])),
            (Some(b"s1"), Some(b"[1,2]")),
            (Some(b"s1"), Some(b"42")),
            (Some(b"s1"), Some(b"{\"max\":41} trailing")),
            (Some(b"s1"), Some(b"{\"max\":")),
            (Some(b"s1"), Some(b"\xff\xfe")),
            (Some(b"\xff"), Some(b"{}")),
            (None, Some(b"{}")),
        ];
        let reasons: Vec<String> = refused
            .iter()
            .map(|(k, v)| t.apply(*k, *v).unwrap_err())
            .collect();
        assert!(
            reasons[0].starts_with("the value is not valid JSON: "),
            "{reasons:?}"
        );
        assert_eq!(reasons[1], "the value is not a JSON object");
        assert_eq!(reasons[2], "the value is not a JSON object");
        assert!(reasons[3].starts_with("the value is not valid JSON: "));
        assert!(reasons[4].starts_with("the value is not valid JSON: "));
        assert_eq!(reasons[5], "the value is not UTF-8 text");
        assert_eq!(reasons[6], "the key is not UTF-8");
        assert_eq!(reasons[7], "the record has no key");
        assert_eq!(t.get("s1").map(|r| &**r), Some(r#"{"max":40}"#));
        assert_eq!((t.len(), t.applied(), t.refused()), (1, 1, 8));
    }

    #[test]
    fn numeric_members_are_read_as_json_numbers_and_the_last_of_twins_counts() {
        let t = table(&[
            (
                "a",
                Some(
                    r#"{"i":-3,"f":2.5e3,"s":"7","b":true,"n":null,"o":{"i":1},
                        "twice":1,"twice":2,"then_text":1,"then_text":"x",
                        "esc\u0061ped":9,"big":1e400}"#,
                ),
            ),
            ("empty", Some("{}")),
        ]);
        let n = |f| t.number("a", f).unwrap();
        assert_eq!((n("i"), n("f"), n("twice")), (-3.0, 2500.0, 2.0));
        assert_eq!(n("escaped"), 9.0);
        assert_eq!(n("big"), f64::INFINITY);
        for f in ["s", "b", "n", "o", "then_text"] {
            assert!(n(f).is_nan(), "{f}");
        }
        assert!(t.number("empty", "i").unwrap().is_nan());
    }

    #[test]
    fn a_batch_gets_each_distinct_row_once_in_order_of_first_sight() {
        let t = table(&[
            ("s1", Some(r#"{"max":40,"min":0}"#)),
            ("s2", Some(r#"{"max":30,"label":"x"}"#)),
        ]);
        let keys = [
            Some("s2"),
            Some("s1"),
            Some("s2"),
            Some("gone"),
            None,
            Some("s1"),
        ];
        let rows = t.rows(
            &spec(&["min", "max", "label", "never"], true),
            keys.into_iter(),
        );
        assert_eq!(
            rows.row_of,
            [Some(0), Some(1), Some(0), None, None, Some(1)]
        );
        let nan = f64::NAN;
        assert!(same(
            &rows.columns,
            &[
                vec![nan, 0.0],
                vec![30.0, 40.0],
                vec![nan, nan],
                vec![nan, nan]
            ]
        ));
        assert_eq!(
            rows.json,
            [r#"{"max":30,"label":"x"}"#, r#"{"max":40,"min":0}"#]
        );
    }

    #[test]
    fn json_only_when_asked_and_rows_numbered_without_fields() {
        let t = table(&[("a", Some("{}")), ("b", Some(r#"{"x":1}"#))]);
        let keys = [Some("b"), Some("a"), Some("b")];
        let rows = t.rows(&spec(&[], false), keys.into_iter());
        assert_eq!(rows.row_of, [Some(0), Some(1), Some(0)]);
        assert!(rows.columns.is_empty() && rows.json.is_empty());
        let none = t.rows(&spec(&["x"], true), std::iter::empty());
        assert!(none.row_of.is_empty() && same(&none.columns, &[vec![]]));
        let empty = Table::new().rows(&spec(&["x"], true), [Some("b")].into_iter());
        assert_eq!(empty.row_of, [None]);
    }

    fn source(s: &str) -> TableSource {
        s.parse().unwrap()
    }

    #[test]
    fn table_flags_parse_and_print_back() {
        assert_eq!(
            source("thresholds=sensor-thresholds"),
            TableSource {
                name: "thresholds".into(),
                topic: "sensor-thresholds".into(),
                field: None
            }
        );
        let by_field = source("sites=site.v1_x:site_id");
        assert_eq!(by_field.topic, "site.v1_x");
        assert_eq!(by_field.field.as_deref(), Some("site_id"));
        assert_eq!(source("a-b_9=t:f:g").field.as_deref(), Some("f:g"));
        for s in ["thresholds=sensor-thresholds", "sites=site.v1_x:site_id"] {
            assert_eq!(source(s).to_string(), s);
        }
    }

    #[test]
    fn bad_table_flags_say_what_is_wrong() {
        let err = |s: &str| s.parse::<TableSource>().unwrap_err();
        assert_eq!(err("thresholds"), SourceError::Shape("thresholds".into()));
        assert_eq!(err("=t"), SourceError::Name("".into()));
        assert_eq!(
            err("th resholds=t"),
            SourceError::Name("th resholds".into())
        );
        assert_eq!(err("a.b=t"), SourceError::Name("a.b".into()));
        assert_eq!(err("t="), SourceError::Topic("".into()));
        assert_eq!(err("t=:f"), SourceError::Topic("".into()));
        assert_eq!(err("t=a/b"), SourceError::Topic("a/b".into()));
        assert_eq!(err("t=.."), SourceError::Topic("..".into()));
        assert_eq!(err("t=a=b"), SourceError::Topic("a=b".into()));
        assert!(matches!(
            err(&format!("t={}", "x".repeat(250))),
            SourceError::Topic(_)
        ));
        assert!(source(&format!("t={}", "x".repeat(249))).field.is_none());
        assert_eq!(err("t=topic:"), SourceError::Field("t=topic:".into()));
        assert_eq!(
            err("th resholds=t").to_string(),
            "table name `th resholds` must be one or more letters, digits, `_` or `-` \
             (in NAME=TOPIC or NAME=TOPIC:FIELD)"
        );
    }

    #[test]
    fn a_settings_file_holds_tables_as_their_flag_text() {
        #[derive(serde::Deserialize)]
        struct File {
            table: Vec<TableSource>,
        }
        let f: File =
            toml::from_str(r#"table = ["thresholds=sensor-thresholds", "s=t:f"]"#).unwrap();
        assert_eq!(
            f.table,
            [source("thresholds=sensor-thresholds"), source("s=t:f")]
        );
        let bad = toml::from_str::<File>(r#"table = ["nope"]"#).err().unwrap();
        assert!(
            bad.to_string()
                .contains("`nope` is not NAME=TOPIC or NAME=TOPIC:FIELD"),
            "{bad}"
        );
    }

    #[test]
    fn records_look_rows_up_by_key_or_by_a_member() {
        let by_key = source("t=topic");
        let json = r#"{"sensor_id":"s1","site":"north","n":7,"x":-1.50,"esc":"a\"b",
                       "o":{"site":"inner"},"b":true,"z":null,"twice":"1","twice":"2"}"#;
        assert_eq!(lookup_key(&by_key, "s1", json).as_deref(), Some("s1"));
        let by = |f: &str| {
            let s = source(&format!("t=topic:{f}"));
            lookup_key(&s, "key", json).map(|c| c.into_owned())
        };
        assert_eq!(by("site").as_deref(), Some("north"));
        assert_eq!(by("n").as_deref(), Some("7"));
        assert_eq!(by("x").as_deref(), Some("-1.50"));
        assert_eq!(by("esc").as_deref(), Some("a\"b"));
        assert_eq!(by("twice").as_deref(), Some("2"));
        for f in ["o", "b", "z", "missing", "inner"] {
            assert_eq!(by(f), None, "{f}");
        }
        let s = source("t=topic:site");
        assert!(matches!(
            lookup_key(&s, "k", json),
            Some(Cow::Borrowed("north"))
        ));
        assert_eq!(lookup_key(&s, "k", "not json"), None);
        assert_eq!(lookup_key(&s, "k", r#"["site"]"#), None);
    }
}
