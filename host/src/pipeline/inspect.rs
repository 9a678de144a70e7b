//! What a pipeline holds for one key, for the key inspector (`GET
//! /keys/{key}`, `streamhost key`): its windows on each partition it
//! arrives on (`Windows::inspect`), named with the pipeline's fields and
//! the rules that declare each window, its open alerts (`--alerts
//! lifecycle`), and its rows in the reference tables.
//!
//! Asked between batches by the worker that owns the pipeline, so nothing
//! here locks the windows; table rows are read under each table's read
//! lock, as a batch reads them.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Pipeline;
use super::seen::resolve;
use crate::contract::types::Aggregate;
use crate::output::severity;
use crate::rules::RuleSet;
use crate::text::time::iso8601;
use crate::window::inspect::KeyInspection;

/// One key on one partition: its windows and open alerts.
#[derive(Clone, Debug, Serialize)]
pub struct KeyState {
    /// The input partition it arrives on.
    pub partition: i32,
    /// Its newest event time.
    pub newest: String,
    /// Readings its buffer holds (as long as the longest window).
    pub held: usize,
    /// The `--window`.
    pub window: WindowState,
    /// The windows rules declare, in the order first declared.
    pub declared: Vec<DeclaredState>,
    /// Its newest readings, oldest first.
    pub readings: Vec<ReadingState>,
    /// Its alerts firing now (`--alerts lifecycle`; always empty with
    /// `every-record`), the longest firing first.
    pub open_alerts: Vec<OpenAlert>,
}

/// The `--window` of a key.
#[derive(Clone, Debug, Serialize)]
pub struct WindowState {
    /// Its length, in milliseconds of event time.
    pub length_ms: i64,
    /// Event time of its oldest reading.
    pub start: String,
    /// Event time of its newest reading.
    pub end: String,
    /// `start` in milliseconds since the epoch.
    pub start_ms: i64,
    /// `end` in milliseconds since the epoch.
    pub end_ms: i64,
    /// Readings it holds.
    pub count: u32,
    /// Per field: `mean`, `min`, `max` (null where no reading holds it).
    pub fields: Map<String, Value>,
}

/// A window rules declare, with its aggregates for a key.
#[derive(Clone, Debug, Serialize)]
pub struct DeclaredState {
    /// Its length, in milliseconds of event time.
    pub length_ms: i64,
    /// The serving rules (and candidates on trial) that declare it.
    pub rules: Vec<String>,
    /// Readings it holds.
    pub count: u32,
    /// Per field it covers: each aggregate it asks for, by name.
    pub fields: Map<String, Value>,
}

/// One reading.
#[derive(Clone, Debug, Serialize)]
pub struct ReadingState {
    /// Its event time.
    pub time: String,
    /// `time` in milliseconds since the epoch.
    pub time_ms: i64,
    /// Per field, its value (null: absent).
    pub values: Map<String, Value>,
}

/// An alert firing now.
#[derive(Clone, Debug, Serialize)]
pub struct OpenAlert {
    /// The anomaly rule that raises it.
    pub rule: String,
    /// Its kind.
    pub kind: String,
    /// Severity the last record that raised it gave.
    pub severity: &'static str,
    /// Message the last record that raised it gave.
    pub message: String,
    /// Event time of the record it began firing with.
    pub firing_since: String,
    /// `firing_since` in milliseconds since the epoch.
    pub since_ms: i64,
    /// Newest event time of a record that raised it.
    pub last_ms: i64,
    /// Records that raised it since it began firing and were not emitted.
    pub suppressed: u64,
}

/// A key's row in a reference table.
#[derive(Clone, Debug, Serialize)]
pub struct TableRow {
    /// The table's name (`--table NAME=...`).
    pub table: String,
    /// Its topic.
    pub topic: String,
    /// The record member rules look rows up by, if not the record key
    /// (`NAME=TOPIC:FIELD`): the row shown is then the one whose key is
    /// this key, which records may not look up.
    pub lookup_field: Option<String>,
    /// The row (a JSON object), or null when the table has none.
    pub row: Option<Value>,
}

/// An aggregate's name, as the WIT spells it.
pub fn aggregate_name(a: Aggregate) -> &'static str {
    match a {
        Aggregate::Count => "count",
        Aggregate::Sum => "sum",
        Aggregate::Mean => "mean",
        Aggregate::Min => "min",
        Aggregate::Max => "max",
        Aggregate::First => "first",
        Aggregate::Last => "last",
        Aggregate::Variance => "variance",
        Aggregate::Stddev => "stddev",
        Aggregate::Slope => "slope",
        Aggregate::P50 => "p50",
        Aggregate::P90 => "p90",
        Aggregate::P95 => "p95",
        Aggregate::P99 => "p99",
    }
}

impl Pipeline {
    /// What the pipeline holds for `key`: one entry per partition whose
    /// windows hold it (by partition), with its newest `readings` readings.
    /// `rules` (the serving ones) name who declares each window.
    pub fn inspect(&self, rules: &RuleSet, key: &str, readings: usize) -> Vec<KeyState> {
        let mut partitions: Vec<i32> = self.windows.partitions().map(|(p, _)| p).collect();
        partitions.sort_unstable();
        partitions
            .into_iter()
            .filter_map(|p| {
                let found = self.windows.inspect(p, key, readings)?;
                Some(self.key_state(rules, p, key, found))
            })
            .collect()
    }

    fn key_state(&self, rules: &RuleSet, partition: i32, key: &str, i: KeyInspection) -> KeyState {
        let names = &self.cfg.schema.fields;
        let num = |v: f64| Value::from(v);
        let mut fields = Map::new();
        for (name, f) in names.iter().zip(&i.window.fields) {
            let stats =
                serde_json::json!({ "mean": num(f.mean), "min": num(f.min), "max": num(f.max) });
            fields.insert(name.clone(), stats);
        }
        let window = WindowState {
            length_ms: self.cfg.window.length_ms,
            start: iso8601(i.window.start_ms),
            end: iso8601(i.window.end_ms),
            start_ms: i.window.start_ms,
            end_ms: i.window.end_ms,
            count: i.window.count,
            fields,
        };
        let specs = &self.windows.config().declared;
        let declared = i
            .declared
            .iter()
            .zip(specs)
            .map(|(d, spec)| {
                let mut fields = Map::new();
                for (f, aggs) in &d.fields {
                    let values: Map<String, Value> = aggs
                        .iter()
                        .map(|&(a, v)| (aggregate_name(a).to_string(), num(v)))
                        .collect();
                    fields.insert(names[*f].clone(), Value::Object(values));
                }
                DeclaredState {
                    length_ms: d.length_ms,
                    rules: declarers(rules, spec, names),
                    count: d.count,
                    fields,
                }
            })
            .collect();
        let readings = i
            .readings
            .iter()
            .map(|r| ReadingState {
                time: iso8601(r.time_ms),
                time_ms: r.time_ms,
                values: names
                    .iter()
                    .zip(&r.values)
                    .map(|(n, &v)| (n.clone(), num(v)))
                    .collect(),
            })
            .collect();
        let mut open: Vec<OpenAlert> = self
            .alerts
            .open(partition, key)
            .iter()
            .map(|o| OpenAlert {
                rule: o.rule.clone(),
                kind: o.kind.clone(),
                severity: severity(o.severity),
                message: o.message.clone(),
                firing_since: iso8601(o.since_ms),
                since_ms: o.since_ms,
                last_ms: o.last_ms,
                suppressed: o.suppressed,
            })
            .collect();
        open.sort_by(|a, b| (a.since_ms, &a.rule, &a.kind).cmp(&(b.since_ms, &b.rule, &b.kind)));
        KeyState {
            partition,
            newest: iso8601(i.newest_ms),
            held: i.held,
            window,
            declared,
            readings,
            open_alerts: open,
        }
    }

    /// `key`'s row in each reference table, looked up by the key itself.
    pub fn table_rows(&self, key: &str) -> Vec<TableRow> {
        self.cfg
            .tables
            .iter()
            .map(|t| {
                let source = t.source();
                let row = t.read().get(key).map(|text| {
                    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
                });
                TableRow {
                    table: source.name.clone(),
                    topic: source.topic.clone(),
                    lookup_field: source.field.clone(),
                    row,
                }
            })
            .collect()
    }
}

/// The rules of `rules` (serving, then candidates) that declare `spec`.
fn declarers(
    rules: &RuleSet,
    spec: &crate::window::DeclaredSpec,
    fields: &[String],
) -> Vec<String> {
    let serving = rules.trend.iter().chain(&rules.anomaly);
    let candidates = rules.trials.iter().map(|(_, t)| &t.candidate);
    let mut out: Vec<String> = Vec::new();
    for rule in serving.chain(candidates) {
        let info = rule.info();
        let declares = info
            .windows
            .iter()
            .any(|w| resolve(w, fields).is_ok_and(|d| d == *spec));
        let name = format!("{} {}", info.name, info.version);
        if declares && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}
