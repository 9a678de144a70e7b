//! Shapes of the three outputs: enriched records, alerts and dead letters.
//!
//! JSON is written directly into a `String` (no intermediate `Value` tree).
//! The record's own JSON text is spliced in as it is: an enriched record is
//! the (transformed) record with one member, `streamhost`, added.

use std::fmt::Write as _;

use crate::contract::{Alert, Direction, Severity, TrendResult};
use crate::record::{Dest, Failure, OutRecord, SourcePos, headers};
use crate::text::json::{push_f64, push_int, push_joined, push_str};
use crate::text::time::{iso8601, push_iso8601};

/// A dead letter of the input record at `source`, with its key and
/// payload as given and `failure` in its headers.
pub fn dead_letter(
    source: SourcePos,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    failure: &Failure,
) -> OutRecord {
    let mut headers = vec![
        (headers::REASON, failure.reason.as_str().to_string()),
        (headers::ERROR, failure.message.clone()),
        (headers::TOPIC, source.topic.to_string()),
        (headers::PARTITION, source.partition.to_string()),
        (headers::OFFSET, source.offset.to_string()),
    ];
    if let Some((name, version)) = &failure.plugin {
        headers.push((headers::PLUGIN, name.clone()));
        headers.push((headers::PLUGIN_VERSION, version.clone()));
    }
    OutRecord {
        dest: Dest::DeadLetter,
        source: (source.partition, source.offset),
        key,
        payload,
        headers,
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Increasing => "increasing",
        Direction::Decreasing => "decreasing",
        Direction::Stable => "stable",
    }
}

/// A severity's name in outputs: `low`, `medium`, `high` or `critical`.
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
    /// Event time of the window's oldest reading, epoch milliseconds.
    pub start_ms: i64,
    /// Event time of its newest reading, epoch milliseconds.
    pub end_ms: i64,
    /// Number of readings in the window.
    pub count: u32,
    /// `[mean, min, max]` per field, in the schema's order.
    pub fields: &'a [[f64; 3]],
}

/// What an enriched record's `streamhost` member carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// Window start and end, count, and per field mean, minimum and
    /// maximum; trends; alert kinds; plugin versions; source position.
    #[default]
    Full,
    /// Window count and per field mean; trends as their direction; alert
    /// kinds. About a third of the full member's bytes.
    Compact,
}

/// Writes enriched records. What never changes between records (the
/// fields' names, escaped, with the text around them) is written once here,
/// not per record.
#[derive(Clone, Debug)]
pub struct Enricher {
    shape: Shape,
    /// Per field, the text before its first number: `"name":{"mean":`
    /// (full) or `"name":` (compact), with a leading comma from the second.
    fields: Vec<String>,
    /// Each field's name as a JSON string, for trends, which name their
    /// field by its index.
    names: Vec<String>,
    /// Bytes the `streamhost` member takes besides the numbers, about.
    fixed: usize,
}

impl Enricher {
    /// A writer of `shape` members for records whose fields are `names`,
    /// in the schema's order.
    pub fn new(shape: Shape, names: &[String]) -> Enricher {
        let names: Vec<String> = names
            .iter()
            .map(|name| {
                let mut q = String::new();
                push_str(&mut q, name);
                q
            })
            .collect();
        let after = match shape {
            Shape::Full => ":{\"mean\":",
            Shape::Compact => ":",
        };
        let fields: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, q)| format!("{}{q}{after}", if i > 0 { "," } else { "" }))
            .collect();
        let fixed = fields.iter().map(String::len).sum::<usize>()
            + match shape {
                Shape::Full => 256 + 64 * fields.len(),
                Shape::Compact => 96 + 24 * fields.len(),
            };
        Enricher {
            shape,
            fields,
            names,
            fixed,
        }
    }

    /// `{"name":"version",...}`: the plugins member's value, written once
    /// per batch.
    pub fn plugins(plugins: &[(&str, &str)]) -> String {
        let mut m = String::from("{");
        push_joined(&mut m, plugins, |m, (name, version)| {
            push_str(m, name);
            m.push(':');
            push_str(m, version);
        });
        m.push('}');
        m
    }

    /// The enriched record: the record plus a `streamhost` member holding
    /// its window statistics, trends, alert kinds, the plugin versions that
    /// handled it (`plugins`, from `Enricher::plugins`) and its source
    /// position (`Shape::Full`), or its window's count and means, trend
    /// directions and alert kinds (`Shape::Compact`).
    pub fn enriched(
        &self,
        record: &str,
        window: &WindowStats,
        trends: &[(&str, &TrendResult)],
        alert_kinds: &[&str],
        plugins: &str,
        source: SourcePos,
    ) -> String {
        // Written straight after the record's own members, in one buffer.
        let body = record.trim_end();
        let body = body.strip_suffix('}').unwrap_or(body).trim_end();
        let mut m =
            String::with_capacity(body.len() + self.fixed + plugins.len() + 48 * trends.len());
        m.push_str(body);
        if !body.ends_with('{') {
            m.push(',');
        }
        if self.shape == Shape::Compact {
            self.compact(&mut m, window, trends, alert_kinds);
            return m;
        }
        m.push_str("\"streamhost\":{\"window\":{\"start\":\"");
        push_iso8601(&mut m, window.start_ms);
        m.push_str("\",\"end\":\"");
        push_iso8601(&mut m, window.end_ms);
        m.push('"');
        m.push_str(",\"count\":");
        push_int(&mut m, window.count);
        m.push_str(",\"fields\":{");
        for (name, [mean, min, max]) in self.fields.iter().zip(window.fields) {
            m.push_str(name);
            push_f64(&mut m, *mean);
            m.push_str(",\"min\":");
            push_f64(&mut m, *min);
            m.push_str(",\"max\":");
            push_f64(&mut m, *max);
            m.push('}');
        }
        m.push_str("}},\"trends\":{");
        push_joined(&mut m, trends, |m, (plugin, t)| {
            push_str(m, plugin);
            m.push_str(":{\"field\":");
            // Checked against the batch's fields when the rule returned it.
            match self.names.get(t.field as usize) {
                Some(name) => m.push_str(name),
                None => m.push_str("null"),
            }
            m.push_str(",\"direction\":\"");
            m.push_str(direction(t.direction));
            m.push_str("\",\"change\":");
            push_f64(m, t.change);
            m.push('}');
        });
        m.push_str("},\"alerts\":[");
        push_joined(&mut m, alert_kinds, |m, kind| {
            push_str(m, kind);
        });
        m.push_str("],\"plugins\":");
        m.push_str(plugins);
        m.push_str(",\"source\":{\"partition\":");
        push_int(&mut m, source.partition);
        m.push_str(",\"offset\":");
        push_int(&mut m, source.offset);
        m.push_str("}}}");
        m
    }

    /// `"streamhost":{"count":N,"mean":{FIELD:MEAN,...},"trends":{PLUGIN:DIRECTION,...},"alerts":[KIND,...]}}`
    fn compact(
        &self,
        m: &mut String,
        window: &WindowStats,
        trends: &[(&str, &TrendResult)],
        alert_kinds: &[&str],
    ) {
        m.push_str("\"streamhost\":{\"count\":");
        push_int(m, window.count);
        m.push_str(",\"mean\":{");
        for (name, [mean, _, _]) in self.fields.iter().zip(window.fields) {
            m.push_str(name);
            push_f64(m, *mean);
        }
        m.push_str("},\"trends\":{");
        push_joined(m, trends, |m, (plugin, t)| {
            push_str(m, plugin);
            m.push_str(":\"");
            m.push_str(direction(t.direction));
            m.push('"');
        });
        m.push_str("},\"alerts\":[");
        push_joined(m, alert_kinds, |m, kind| push_str(m, kind));
        m.push_str("]}}");
    }
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
    source: SourcePos,
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
    push_joined(&mut m, alerts, |m, a| {
        push_str(m, &a.kind);
    });
    let top = alerts
        .iter()
        .map(|a| a.severity)
        .max_by_key(|s| severity_rank(*s))
        .unwrap_or(Severity::Low);
    let _ = write!(m, "],\"severity\":\"{}\",\"rule\":", severity(top));
    push_str(&mut m, rule.0);
    m.push_str(",\"rule_version\":");
    push_str(&mut m, rule.1);
    m.push_str(",\"alerts\":[");
    push_joined(&mut m, alerts, |m, a| {
        m.push_str("{\"rule\":");
        push_str(m, &a.rule);
        m.push_str(",\"kind\":");
        push_str(m, &a.kind);
        let _ = write!(m, ",\"severity\":\"{}\",\"message\":", severity(a.severity));
        push_str(m, &a.message);
        m.push('}');
    });
    m.push_str("],\"sensor_data\":");
    m.push_str(record.trim());
    let _ = write!(
        m,
        ",\"source\":{{\"partition\":{},\"offset\":{}}}}}",
        source.partition, source.offset
    );
    m
}

/// What a lifecycle alert record says beside the alert (see
/// `crate::lifecycle`).
pub struct Lifecycle<'a> {
    /// Processing time, epoch milliseconds.
    pub processing_ms: i64,
    /// The name of the key member, and the key.
    pub key: (&'a str, &'a str),
    /// Event time of the record that caused it, or the partition's clock
    /// for a key resolved as idle.
    pub event_ms: i64,
    /// The record that caused it; `None` for a key resolved as idle.
    pub record: Option<&'a str>,
    /// The anomaly rule's name and the version that served the record.
    pub rule: (&'a str, &'a str),
    /// Where the record that caused it is.
    pub source: SourcePos<'a>,
}

/// A lifecycle alert record: one (key, rule, kind) that began firing, fires
/// again after `--alert-repeat`, or stopped firing; the shape of `alert`
/// with one alert, and `status`, `firing_since`, `suppressed` and (when
/// resolved) `resolved_by`.
pub fn transition(at: &Lifecycle, t: &crate::lifecycle::Transition) -> String {
    let o = &t.open;
    let mut m = String::with_capacity(320 + at.record.map_or(0, str::len));
    m.push_str("{\"timestamp\":");
    push_str(&mut m, &iso8601(at.processing_ms));
    m.push(',');
    push_str(&mut m, at.key.0);
    m.push(':');
    push_str(&mut m, at.key.1);
    m.push_str(",\"event_time\":");
    push_str(&mut m, &iso8601(at.event_ms));
    m.push_str(",\"status\":");
    push_str(&mut m, t.status.as_str());
    m.push_str(",\"anomalies\":[");
    push_str(&mut m, &o.kind);
    let _ = write!(m, "],\"severity\":\"{}\",\"rule\":", severity(o.severity));
    push_str(&mut m, at.rule.0);
    m.push_str(",\"rule_version\":");
    push_str(&mut m, at.rule.1);
    m.push_str(",\"alerts\":[{\"rule\":");
    push_str(&mut m, &o.alert_rule);
    m.push_str(",\"kind\":");
    push_str(&mut m, &o.kind);
    let _ = write!(m, ",\"severity\":\"{}\",\"message\":", severity(o.severity));
    push_str(&mut m, &o.message);
    m.push_str("}],\"firing_since\":");
    push_str(&mut m, &iso8601(o.since_ms));
    m.push_str(",\"suppressed\":");
    push_int(&mut m, o.suppressed as i64);
    if let Some(by) = t.resolved_by {
        m.push_str(",\"resolved_by\":");
        push_str(&mut m, by.as_str());
    }
    m.push_str(",\"sensor_data\":");
    m.push_str(at.record.map_or("null", str::trim));
    let _ = write!(
        m,
        ",\"source\":{{\"partition\":{},\"offset\":{}}}}}",
        at.source.partition, at.source.offset
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Reason;

    #[test]
    fn alert_has_the_articles_shape() {
        let alerts = [
            Alert {
                rule: "r".into(),
                kind: "low_battery".into(),
                severity: Severity::Medium,
                message: "m1".into(),
            },
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
            SourcePos {
                topic: "t",
                partition: 1,
                offset: 2,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["sensor_id"], "s1");
        assert_eq!(v["severity"], "high");
        assert_eq!(
            v["anomalies"],
            serde_json::json!(["low_battery", "temperature_out_of_range"])
        );
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["sensor_data"]["sensor_id"], "s1");
        assert_eq!(v["rule_version"], "1.0.0");
    }

    #[test]
    fn enriched_is_valid_json_with_nulls_for_nan() {
        let w = WindowStats {
            start_ms: 0,
            end_ms: 1,
            count: 2,
            fields: &[[1.0, f64::NAN, 2.0]],
        };
        let t = TrendResult {
            field: 0,
            direction: Direction::Stable,
            change: 0.0,
        };
        let text = Enricher::new(Shape::Full, &["temperature".into()]).enriched(
            r#"{"a":1}"#,
            &w,
            &[("trend", &t)],
            &[],
            &Enricher::plugins(&[("trend", "1.0.0")]),
            SourcePos {
                topic: "t",
                partition: 0,
                offset: 9,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"], 1);
        let s = &v["streamhost"];
        assert_eq!(
            s["window"]["fields"]["temperature"]["min"],
            serde_json::Value::Null
        );
        assert_eq!(s["window"]["fields"]["temperature"]["mean"], 1.0);
        assert_eq!(s["trends"]["trend"]["field"], "temperature");
        assert_eq!(s["trends"]["trend"]["direction"], "stable");
        assert_eq!(s["plugins"]["trend"], "1.0.0");
        assert_eq!(s["source"]["offset"], 9);
    }

    #[test]
    fn the_compact_shape_carries_count_means_trend_directions_and_kinds() {
        let w = WindowStats {
            start_ms: 0,
            end_ms: 1,
            count: 3,
            fields: &[[21.5, 20.0, 23.0], [f64::NAN, 1.0, 2.0]],
        };
        let t = TrendResult {
            field: 0,
            direction: Direction::Increasing,
            change: 0.4,
        };
        let names = ["temperature".to_string(), "humidity".to_string()];
        let text = Enricher::new(Shape::Compact, &names).enriched(
            "{\"a\":1 } ",
            &w,
            &[("trend", &t)],
            &["low_battery"],
            &Enricher::plugins(&[("trend", "1.0.0")]),
            SourcePos {
                topic: "t",
                partition: 0,
                offset: 9,
            },
        );
        assert_eq!(
            text,
            r#"{"a":1,"streamhost":{"count":3,"mean":{"temperature":21.5,"humidity":null},"trends":{"trend":"increasing"},"alerts":["low_battery"]}}"#
        );
    }

    #[test]
    fn oversized_dead_letters_become_references() {
        let failure = Failure {
            reason: Reason::OutputTooLarge,
            message: "x".repeat(10_000),
            plugin: None,
        };
        let source = SourcePos {
            topic: "t",
            partition: 1,
            offset: 2,
        };
        let small = dead_letter(source, Some(b"k".to_vec()), b"{}".to_vec(), &failure)
            .fit_dead_letter(100_000);
        assert_eq!(small.payload, b"{}");
        let big = dead_letter(source, Some(b"k".to_vec()), vec![b'a'; 2_000_000], &failure)
            .fit_dead_letter(1_000_000);
        assert!(big.size() <= 1_000_000);
        assert_eq!(big.payload, vec![b'a'; 1024]);
        let header = |name: &str| {
            big.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header(headers::ORIGINAL_BYTES).as_deref(), Some("2000000"));
        assert_eq!(header(headers::OFFSET).as_deref(), Some("2"));
        assert_eq!(header(headers::ERROR).unwrap().len(), 4099);
    }
}
