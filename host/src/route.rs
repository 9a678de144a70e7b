//! Shapes of the three outputs: enriched records, alerts and dead letters.
//!
//! JSON is written directly into a `String` (no intermediate `Value` tree).
//! The record's own JSON text is spliced in as it is: an enriched record is
//! the (transformed) record with one member, `streamhost`, added.

use std::fmt::Write as _;

use crate::plugin::types::{Alert, Direction, Severity, TrendResult};

/// Where an output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    Enriched,
    Alerts,
    DeadLetter,
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub dest: Dest,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Header names of dead-letter records.
pub mod headers {
    pub const REASON: &str = "streamhost.reason";
    pub const ERROR: &str = "streamhost.error";
    pub const TOPIC: &str = "streamhost.source.topic";
    pub const PARTITION: &str = "streamhost.source.partition";
    pub const OFFSET: &str = "streamhost.source.offset";
    pub const PLUGIN: &str = "streamhost.plugin";
    pub const PLUGIN_VERSION: &str = "streamhost.plugin.version";
}

/// Why a record went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Reason class: `decode`, `late`, `plugin-timeout`, `plugin-oom`,
    /// `plugin-trap` or `plugin-error`.
    pub reason: &'static str,
    pub message: String,
    /// The plugin that failed, with its version, if one did.
    pub plugin: Option<(String, String)>,
}

/// Where a record came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

pub fn dead_letter(source: Source, key: Option<Vec<u8>>, payload: Vec<u8>, failure: &Failure) -> OutRecord {
    let mut headers = vec![
        (headers::REASON, failure.reason.to_string()),
        (headers::ERROR, failure.message.clone()),
        (headers::TOPIC, source.topic.to_string()),
        (headers::PARTITION, source.partition.to_string()),
        (headers::OFFSET, source.offset.to_string()),
    ];
    if let Some((name, version)) = &failure.plugin {
        headers.push((headers::PLUGIN, name.clone()));
        headers.push((headers::PLUGIN_VERSION, version.clone()));
    }
    OutRecord { dest: Dest::DeadLetter, key, payload, headers }
}

/// ISO-8601 UTC with milliseconds, e.g. `2026-11-24T17:30:05.123Z`.
pub fn iso8601(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Appends a JSON string literal, escaping as RFC 8259 requires.
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Appends a JSON number, or `null` for NaN and infinities.
pub fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Increasing => "increasing",
        Direction::Decreasing => "decreasing",
        Direction::Stable => "stable",
    }
}

pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

/// A record's window as the enriched output shows it.
pub struct WindowStats<'a> {
    pub start_ms: i64,
    pub end_ms: i64,
    pub count: u32,
    /// (field name, mean, min, max, first, last)
    pub fields: &'a [(&'a str, [f64; 5])],
}

/// The text of `record` (a JSON object) with `member` (`"name":value`)
/// added before its closing brace.
pub fn splice(record: &str, member: &str) -> String {
    let body = record.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body).trim_end();
    let mut out = String::with_capacity(body.len() + member.len() + 2);
    out.push_str(body);
    if !body.ends_with('{') {
        out.push(',');
    }
    out.push_str(member);
    out.push('}');
    out
}

/// The enriched record: the record plus a `streamhost` member holding its
/// window statistics, trends, alert kinds, the plugin versions that handled
/// it and its source position.
#[allow(clippy::too_many_arguments)]
pub fn enriched(
    record: &str,
    window: &WindowStats,
    trends: &[(&str, &TrendResult)],
    alert_kinds: &[&str],
    plugins: &[(&str, &str)],
    source: Source,
) -> String {
    let mut m = String::with_capacity(256 + 64 * window.fields.len());
    m.push_str("\"streamhost\":{\"window\":{\"start\":");
    push_str(&mut m, &iso8601(window.start_ms));
    m.push_str(",\"end\":");
    push_str(&mut m, &iso8601(window.end_ms));
    let _ = write!(m, ",\"count\":{},\"fields\":{{", window.count);
    for (i, (name, [mean, min, max, first, last])) in window.fields.iter().enumerate() {
        if i > 0 {
            m.push(',');
        }
        push_str(&mut m, name);
        for (j, (label, v)) in
            [("mean", mean), ("min", min), ("max", max), ("first", first), ("last", last)].iter().enumerate()
        {
            m.push_str(if j == 0 { ":{\"" } else { ",\"" });
            m.push_str(label);
            m.push_str("\":");
            push_f64(&mut m, **v);
        }
        m.push('}');
    }
    m.push_str("}},\"trends\":{");
    for (i, (plugin, t)) in trends.iter().enumerate() {
        if i > 0 {
            m.push(',');
        }
        push_str(&mut m, plugin);
        m.push_str(":{\"field\":");
        push_str(&mut m, &t.field);
        let _ = write!(m, ",\"direction\":\"{}\",\"change\":", direction(t.direction));
        push_f64(&mut m, t.change);
        m.push('}');
    }
    m.push_str("},\"alerts\":[");
    for (i, kind) in alert_kinds.iter().enumerate() {
        if i > 0 {
            m.push(',');
        }
        push_str(&mut m, kind);
    }
    m.push_str("],\"plugins\":{");
    for (i, (name, version)) in plugins.iter().enumerate() {
        if i > 0 {
            m.push(',');
        }
        push_str(&mut m, name);
        m.push(':');
        push_str(&mut m, version);
    }
    let _ = write!(
        m,
        "}},\"source\":{{\"partition\":{},\"offset\":{}}}}}",
        source.partition, source.offset
    );
    splice(record, &m)
}

/// An alert record in the article's shape (`timestamp`, the key, `anomalies`,
/// `sensor_data`, `severity`), plus the rule, its version, each alert's
/// detail, the event time and the source position.
#[allow(clippy::too_many_arguments)]
pub fn alert(
    processing_ms: i64,
    key_field: &str,
    key: &str,
    event_ms: i64,
    record: &str,
    rule: (&str, &str),
    alerts: &[Alert],
    source: Source,
) -> String {
    let mut m = String::with_capacity(256 + record.len());
    m.push_str("{\"timestamp\":");
    push_str(&mut m, &iso8601(processing_ms));
    m.push(',');
    push_str(&mut m, key_field);
    m.push(':');
    push_str(&mut m, key);
    m.push_str(",\"event_time\":");
    push_str(&mut m, &iso8601(event_ms));
    m.push_str(",\"anomalies\":[");
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            m.push(',');
        }
        push_str(&mut m, &a.kind);
    }
    let top = alerts.iter().map(|a| a.severity).max_by_key(|s| severity_rank(*s)).unwrap_or(Severity::Low);
    let _ = write!(m, "],\"severity\":\"{}\",\"rule\":", severity(top));
    push_str(&mut m, rule.0);
    m.push_str(",\"rule_version\":");
    push_str(&mut m, rule.1);
    m.push_str(",\"alerts\":[");
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            m.push(',');
        }
        m.push_str("{\"rule\":");
        push_str(&mut m, &a.rule);
        m.push_str(",\"kind\":");
        push_str(&mut m, &a.kind);
        let _ = write!(m, ",\"severity\":\"{}\",\"message\":", severity(a.severity));
        push_str(&mut m, &a.message);
        m.push('}');
    }
    m.push_str("],\"sensor_data\":");
    m.push_str(record.trim());
    let _ = write!(m, ",\"source\":{{\"partition\":{},\"offset\":{}}}}}", source.partition, source.offset);
    m
}

/// Adds `members` (the text of a JSON object) to `record` (a JSON object),
/// members of the same name being replaced. Splices text when no name can
/// collide, and goes through a parsed map otherwise.
pub fn merge(record: &str, members: &str) -> Result<String, String> {
    let add: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(members).map_err(|e| format!("merge is not a JSON object: {e}"))?;
    let collides = add.keys().any(|name| {
        let quoted = serde_json::to_string(name).expect("a string serialises");
        memchr::memmem::find(record.as_bytes(), quoted.as_bytes()).is_some()
    });
    if !collides {
        let mut text = String::with_capacity(members.len());
        for (i, (k, v)) in add.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            push_str(&mut text, k);
            text.push(':');
            text.push_str(&v.to_string());
        }
        if text.is_empty() {
            return Ok(record.to_string());
        }
        return Ok(splice(record, &text));
    }
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(record).map_err(|e| format!("record is not a JSON object: {e}"))?;
    map.extend(add);
    Ok(serde_json::Value::Object(map).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in ["plain", "quote\" back\\ nl\n tab\t bell\u{7} bs\u{8} ff\u{c} é ✓", ""] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn splice_handles_empty_objects_and_whitespace() {
        assert_eq!(splice("{}", "\"a\":1"), "{\"a\":1}");
        assert_eq!(splice("{\"x\":2 }\n", "\"a\":1"), "{\"x\":2,\"a\":1}");
    }

    #[test]
    fn merge_adds_and_replaces() {
        assert_eq!(merge(r#"{"a":1}"#, r#"{"b":true}"#).unwrap(), r#"{"a":1,"b":true}"#);
        assert_eq!(merge(r#"{"a":1,"b":2}"#, r#"{"b":3}"#).unwrap(), r#"{"a":1,"b":3}"#);
        assert!(merge(r#"{"a":1}"#, "[1]").is_err());
    }

    #[test]
    fn alert_has_the_articles_shape() {
        let alerts = [
            Alert { rule: "r".into(), kind: "low_battery".into(), severity: Severity::Medium, message: "m1".into() },
            Alert {
                rule: "r".into(),
                kind: "temperature_out_of_range".into(),
                severity: Severity::High,
                message: "m2".into(),
            },
        ];
        let text = alert(
            0,
            "sensor_id",
            "s1",
            1000,
            r#"{"sensor_id":"s1"}"#,
            ("anomaly", "1.0.0"),
            &alerts,
            Source { topic: "t", partition: 1, offset: 2 },
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["sensor_id"], "s1");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["anomalies"], serde_json::json!(["low_battery", "temperature_out_of_range"]));
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["sensor_data"]["sensor_id"], "s1");
        assert_eq!(v["rule_version"], "1.0.0");
    }

    #[test]
    fn enriched_is_valid_json_with_nulls_for_nan() {
        let fields = [("temperature", [1.0, 0.5, 2.0, f64::NAN, 1.5])];
        let w = WindowStats { start_ms: 0, end_ms: 1, count: 2, fields: &fields };
        let t = TrendResult { field: "temperature".into(), direction: Direction::Stable, change: 0.0 };
        let text = enriched(
            r#"{"a":1}"#,
            &w,
            &[("trend", &t)],
            &[],
            &[("trend", "1.0.0")],
            Source { topic: "t", partition: 0, offset: 9 },
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"], 1);
        let s = &v["streamhost"];
        assert_eq!(s["window"]["fields"]["temperature"]["first"], serde_json::Value::Null);
        assert_eq!(s["window"]["fields"]["temperature"]["mean"], 1.0);
        assert_eq!(s["trends"]["trend"]["direction"], "stable");
        assert_eq!(s["plugins"]["trend"], "1.0.0");
        assert_eq!(s["source"]["offset"], 9);
    }
}
