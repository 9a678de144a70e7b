//! One batch of records through decode, transforms, windows, trends and
//! anomaly rules, to the records to produce. No Kafka here: the source hands
//! a batch in, the sink takes the outputs, and benchmarks and tests drive
//! this directly.
//!
//! Failure isolation: a rule call that fails (trap, timeout, out of memory)
//! is retried on halves of its batch, each on a fresh instance, until the
//! records that cause it are found, so one poisoned record is dead-lettered
//! alone while its batch-mates go on. The number of retries per call is
//! bounded so that a rule that fails on everything cannot stall the stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::decode::{Decoded, Schema, decode};
use crate::plugin::types::{Alert, FieldWindow, Transformed, TrendResult};
use crate::plugin::{
    AnomalyResults, Batch, CallError, Kind, Needs, Plugin, PluginInfo, TransformResults, TrendResults,
    WindowView,
};
use crate::route::{self, Dest, Failure, OutRecord, Source, WindowStats};
use crate::window::{ViewBuilder, WindowConfig, Windows};

/// A rule the pipeline can call: a WebAssembly plugin, or (in benchmarks) the
/// same logic compiled natively.
pub trait Rule: Send + Sync {
    fn info(&self) -> &PluginInfo;
    fn transform(&self, _batch: &Batch) -> Result<TransformResults, CallError> {
        Err(CallError::Contract(format!("{} is not a transform rule", self.info().name)))
    }
    fn trend(&self, _batch: &Batch, _windows: &WindowView) -> Result<TrendResults, CallError> {
        Err(CallError::Contract(format!("{} is not a trend rule", self.info().name)))
    }
    fn detect(&self, _batch: &Batch, _windows: &WindowView) -> Result<AnomalyResults, CallError> {
        Err(CallError::Contract(format!("{} is not an anomaly rule", self.info().name)))
    }
}

impl Rule for Plugin {
    fn info(&self) -> &PluginInfo {
        Plugin::info(self)
    }
    fn transform(&self, batch: &Batch) -> Result<TransformResults, CallError> {
        Plugin::transform(self, batch)
    }
    fn trend(&self, batch: &Batch, windows: &WindowView) -> Result<TrendResults, CallError> {
        Plugin::trend(self, batch, windows)
    }
    fn detect(&self, batch: &Batch, windows: &WindowView) -> Result<AnomalyResults, CallError> {
        Plugin::detect(self, batch, windows)
    }
}

/// The rules of a pipeline, by kind, each kind in the order given.
#[derive(Clone, Default)]
pub struct RuleSet {
    pub transform: Vec<Arc<dyn Rule>>,
    pub trend: Vec<Arc<dyn Rule>>,
    pub anomaly: Vec<Arc<dyn Rule>>,
}

impl RuleSet {
    /// Adds a rule under its own kind.
    pub fn push(&mut self, rule: Arc<dyn Rule>) {
        match rule.info().kind {
            Kind::Transform => self.transform.push(rule),
            Kind::Trend => self.trend.push(rule),
            Kind::Anomaly => self.anomaly.push(rule),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Rule>> {
        self.transform.iter().chain(&self.trend).chain(&self.anomaly)
    }
}

fn union_needs<'a>(rules: impl Iterator<Item = &'a Arc<dyn Rule>>) -> Needs {
    rules.fold(Needs::empty(), |n, r| n | r.info().needs)
}

/// A consumed record.
#[derive(Debug, Clone)]
pub struct InRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Settings of a pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub schema: Schema,
    pub window: WindowConfig,
    pub source_topic: String,
}

/// Counts of what one batch gave.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub input: u64,
    pub enriched: u64,
    pub dropped: u64,
    /// Alert records produced, by anomaly kind (an alert record with two
    /// kinds counts under both).
    pub alerts_by_kind: BTreeMap<String, u64>,
    pub alert_records: u64,
    pub dead_by_reason: BTreeMap<&'static str, u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.input += other.input;
        self.enriched += other.enriched;
        self.dropped += other.dropped;
        self.alert_records += other.alert_records;
        for (k, v) in &other.alerts_by_kind {
            *self.alerts_by_kind.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.dead_by_reason {
            *self.dead_by_reason.entry(k).or_default() += v;
        }
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead_by_reason.values().sum()
    }
}

/// What a batch gave: records to produce, in input order, and counts.
pub struct Output {
    pub records: Vec<OutRecord>,
    pub tally: Tally,
}

enum State {
    Live,
    Dropped,
    Failed(Failure),
}

/// A record on its way through the batch.
struct Rec {
    /// The consumed payload, moved out of its `InRecord`: its text once
    /// checked to be UTF-8 (checked once, here), else the raw bytes.
    original: Result<String, Vec<u8>>,
    /// The record's JSON text after transforms; `None` while it is still the
    /// consumed payload.
    text: Option<String>,
    decoded: Option<Decoded>,
    state: State,
    trends: Vec<(usize, TrendResult)>,
    alerts: Vec<(usize, Vec<Alert>)>,
    /// Position in the trend/anomaly batch, once in a window.
    slot: Option<usize>,
}

impl Rec {
    /// The record's current JSON text.
    fn text(&self) -> &str {
        self.text.as_deref().or(self.original.as_deref().ok()).unwrap_or("{}")
    }
}

/// Most extra calls spent isolating the records that make one call fail.
const ISOLATION_BUDGET: usize = 16;

pub struct Pipeline {
    cfg: PipelineConfig,
    windows: Windows,
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig) -> Self {
        let windows = Windows::new(cfg.window.clone());
        Self { cfg, windows }
    }

    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Runs one batch. `now_ms` is the batch's processing time, handed to
    /// rules in place of a clock.
    pub fn process(&mut self, rules: &RuleSet, mut input: Vec<InRecord>, now_ms: i64) -> Output {
        let schema = &self.cfg.schema;
        let mut recs: Vec<Rec> = input
            .iter_mut()
            .map(|r| {
                let original = String::from_utf8(std::mem::take(&mut r.payload));
                let decoded = match &original {
                    Ok(text) => decode(schema, text.as_bytes()).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("not UTF-8: {}", e.utf8_error())),
                };
                let (decoded, state) = match decoded {
                    Ok(d) => (Some(d), State::Live),
                    Err(message) => (None, State::Failed(Failure { reason: "decode", message, plugin: None })),
                };
                let original = original.map_err(|e| e.into_bytes());
                Rec { original, text: None, decoded, state, trends: Vec::new(), alerts: Vec::new(), slot: None }
            })
            .collect();

        for rule in &rules.transform {
            self.transform_stage(rule.as_ref(), &mut recs, now_ms);
        }

        // Windows: every live record enters its key's window in batch order.
        let wneeds = union_needs(rules.trend.iter().chain(&rules.anomaly));
        let fields = schema.fields.len();
        let mut view = ViewBuilder::new(fields, self.windows.config().k, wneeds.contains(Needs::WINDOW_VALUES), recs.len());
        let mut entered = Vec::with_capacity(recs.len());
        for (i, rec) in recs.iter_mut().enumerate() {
            if !matches!(rec.state, State::Live) {
                continue;
            }
            let d = rec.decoded.as_ref().expect("live records are decoded");
            match self.windows.insert(&d.key, d.time_ms, &d.values, &mut view) {
                Ok(()) => {
                    rec.slot = Some(entered.len());
                    entered.push(i);
                }
                Err(late) => {
                    rec.state = State::Failed(Failure {
                        reason: "late",
                        message: format!(
                            "event time {} is {} ms behind the newest event time {} of key {:?}; allowed lateness is {} ms",
                            route::iso8601(d.time_ms),
                            late.behind_ms,
                            route::iso8601(late.newest_ms),
                            d.key,
                            self.windows.config().lateness_ms
                        ),
                        plugin: None,
                    })
                }
            }
        }
        let view = view.view;

        if !entered.is_empty() && !(rules.trend.is_empty() && rules.anomaly.is_empty()) {
            let batch = build_batch(schema, &recs, &entered, wneeds, now_ms);
            for (p, rule) in rules.trend.iter().enumerate() {
                let results = isolate(entered.len(), |pos| match pos {
                    None => rule.trend(&batch, &view),
                    Some(pos) => rule.trend(&select_batch(&batch, pos), &select_view(&view, pos)),
                });
                for (j, result) in results.into_iter().enumerate() {
                    let rec = &mut recs[entered[j]];
                    match result {
                        Ok(Ok(Some(t))) => rec.trends.push((p, t)),
                        Ok(Ok(None)) => {}
                        Ok(Err(message)) => fail(rec, rule.info(), "plugin-error", message),
                        Err(e) => fail(rec, rule.info(), e.reason(), e.to_string()),
                    }
                }
            }
            for (p, rule) in rules.anomaly.iter().enumerate() {
                let results = isolate(entered.len(), |pos| match pos {
                    None => rule.detect(&batch, &view),
                    Some(pos) => rule.detect(&select_batch(&batch, pos), &select_view(&view, pos)),
                });
                for (j, result) in results.into_iter().enumerate() {
                    let rec = &mut recs[entered[j]];
                    match result {
                        Ok(Ok(alerts)) if alerts.is_empty() => {}
                        Ok(Ok(alerts)) => rec.alerts.push((p, alerts)),
                        Ok(Err(message)) => fail(rec, rule.info(), "plugin-error", message),
                        Err(e) => fail(rec, rule.info(), e.reason(), e.to_string()),
                    }
                }
            }
        }

        self.outputs(rules, input, recs, &view, now_ms)
    }

    fn transform_stage(&self, rule: &dyn Rule, recs: &mut [Rec], now_ms: i64) {
        let live: Vec<usize> = (0..recs.len()).filter(|&i| matches!(recs[i].state, State::Live)).collect();
        if live.is_empty() {
            return;
        }
        let schema = &self.cfg.schema;
        let batch = build_batch(schema, recs, &live, rule.info().needs, now_ms);
        let results = isolate(live.len(), |pos| match pos {
            None => rule.transform(&batch),
            Some(pos) => rule.transform(&select_batch(&batch, pos)),
        });
        // Names whose change means the record must be decoded again.
        let typed: Vec<&str> = [schema.key_field.as_str(), schema.time_field.as_str()]
            .into_iter()
            .chain(schema.fields.iter().map(String::as_str))
            .collect();
        let mut merge: Option<route::Merge> = None;
        for (j, result) in results.into_iter().enumerate() {
            let i = live[j];
            let rec = &mut recs[i];
            let (text, decode_again) = match result {
                Ok(Ok(Transformed::Keep)) => continue,
                Ok(Ok(Transformed::Drop)) => {
                    rec.state = State::Dropped;
                    continue;
                }
                Ok(Ok(Transformed::Replace(text))) => (Ok(text), true),
                Ok(Ok(Transformed::Merge(members))) => {
                    if !merge.as_ref().is_some_and(|m| m.is(&members)) {
                        merge = match route::Merge::parse(&members) {
                            Ok(m) => Some(m),
                            Err(message) => {
                                fail(rec, rule.info(), "plugin-error", message);
                                continue;
                            }
                        };
                    }
                    let m = merge.as_ref().expect("set above");
                    (m.apply(rec.text()).map_err(|message| ("plugin-error", message)), m.touches(&typed))
                }
                Ok(Err(message)) => (Err(("plugin-error", message)), false),
                Err(e) => (Err((e.reason(), e.to_string())), false),
            };
            match text {
                Ok(text) if decode_again => match decode(schema, text.as_bytes()) {
                    Ok(d) => {
                        rec.decoded = Some(d);
                        rec.text = Some(text);
                    }
                    Err(e) => fail(rec, rule.info(), "plugin-error", format!("transformed record is invalid: {e}")),
                },
                Ok(text) => rec.text = Some(text),
                Err((reason, message)) => fail(rec, rule.info(), reason, message),
            }
        }
    }

    fn outputs(&self, rules: &RuleSet, input: Vec<InRecord>, recs: Vec<Rec>, view: &WindowView, now_ms: i64) -> Output {
        let schema = &self.cfg.schema;
        let topic = self.cfg.source_topic.as_str();
        let versions: Vec<(&str, &str)> =
            rules.all().map(|r| (r.info().name.as_str(), r.info().version.as_str())).collect();
        let mut tally = Tally { input: input.len() as u64, ..Tally::default() };
        let mut out = Vec::with_capacity(input.len() * 2);
        let mut fields = Vec::with_capacity(schema.fields.len());
        for (rec, inp) in recs.into_iter().zip(input) {
            let source = Source { topic, partition: inp.partition, offset: inp.offset };
            match rec.state {
                State::Dropped => tally.dropped += 1,
                State::Failed(failure) => {
                    *tally.dead_by_reason.entry(failure.reason).or_default() += 1;
                    let bytes = match rec.original {
                        Ok(text) => text.into_bytes(),
                        Err(bytes) => bytes,
                    };
                    out.push(route::dead_letter(source, inp.key, bytes, &failure));
                }
                State::Live => {
                    let d = rec.decoded.as_ref().expect("live records are decoded");
                    let slot = rec.slot.expect("live records entered a window");
                    let text = rec.text();
                    fields.clear();
                    fields.extend(schema.fields.iter().zip(&view.fields).map(|(name, fw): (_, &FieldWindow)| {
                        (name.as_str(), [fw.mean[slot], fw.min[slot], fw.max[slot]])
                    }));
                    let window = WindowStats {
                        start_ms: view.starts[slot],
                        end_ms: view.ends[slot],
                        count: view.counts[slot],
                        fields: &fields,
                    };
                    let trends: Vec<(&str, &TrendResult)> =
                        rec.trends.iter().map(|(p, t)| (rules.trend[*p].info().name.as_str(), t)).collect();
                    let kinds: Vec<&str> =
                        rec.alerts.iter().flat_map(|(_, a)| a.iter().map(|a| a.kind.as_str())).collect();
                    let key = inp.key.clone().unwrap_or_else(|| d.key.clone().into_bytes());
                    let enriched = route::enriched(text, &window, &trends, &kinds, &versions, source);
                    out.push(OutRecord { dest: Dest::Enriched, key: Some(key.clone()), payload: enriched.into_bytes(), headers: Vec::new() });
                    tally.enriched += 1;
                    for (p, alerts) in &rec.alerts {
                        let info = rules.anomaly[*p].info();
                        let payload = route::alert(
                            now_ms,
                            &schema.key_field,
                            &d.key,
                            d.time_ms,
                            text,
                            (&info.name, &info.version),
                            alerts,
                            source,
                        );
                        tally.alert_records += 1;
                        for a in alerts {
                            *tally.alerts_by_kind.entry(a.kind.clone()).or_default() += 1;
                        }
                        out.push(OutRecord { dest: Dest::Alerts, key: Some(key.clone()), payload: payload.into_bytes(), headers: Vec::new() });
                    }
                }
            }
        }
        Output { records: out, tally }
    }
}

fn fail(rec: &mut Rec, info: &PluginInfo, reason: &'static str, message: String) {
    if matches!(rec.state, State::Failed(_)) {
        return;
    }
    rec.state = State::Failed(Failure { reason, message, plugin: Some((info.name.clone(), info.version.clone())) });
}

/// The WIT batch of records `idx`, with the optional columns in `needs`.
fn build_batch(schema: &Schema, recs: &[Rec], idx: &[usize], needs: Needs, now_ms: i64) -> Batch {
    let n = idx.len();
    let decoded = |i: usize| recs[i].decoded.as_ref().expect("batched records are decoded");
    let values = (0..schema.fields.len())
        .map(|f| idx.iter().map(|&i| decoded(i).values[f]).collect())
        .collect();
    Batch {
        len: n as u32,
        processing_time: now_ms,
        fields: schema.fields.clone(),
        keys: if needs.contains(Needs::KEYS) { idx.iter().map(|&i| decoded(i).key.clone()).collect() } else { Vec::new() },
        event_times: idx.iter().map(|&i| decoded(i).time_ms).collect(),
        values,
        json: if needs.contains(Needs::JSON) {
            idx.iter().map(|&i| recs[i].text().to_string()).collect()
        } else {
            Vec::new()
        },
    }
}

fn pick<T: Clone>(col: &[T], pos: &[usize]) -> Vec<T> {
    if col.is_empty() { Vec::new() } else { pos.iter().map(|&p| col[p].clone()).collect() }
}

fn pick_k(col: &[f64], k: usize, pos: &[usize]) -> Vec<f64> {
    if col.is_empty() { Vec::new() } else { pos.iter().flat_map(|&p| col[p * k..p * k + k].iter().copied()).collect() }
}

/// The records at positions `pos` of `batch`.
fn select_batch(batch: &Batch, pos: &[usize]) -> Batch {
    Batch {
        len: pos.len() as u32,
        processing_time: batch.processing_time,
        fields: batch.fields.clone(),
        keys: pick(&batch.keys, pos),
        event_times: pick(&batch.event_times, pos),
        values: batch.values.iter().map(|c| pick(c, pos)).collect(),
        json: pick(&batch.json, pos),
    }
}

fn select_view(view: &WindowView, pos: &[usize]) -> WindowView {
    let k = view.k as usize;
    WindowView {
        starts: pick(&view.starts, pos),
        ends: pick(&view.ends, pos),
        counts: pick(&view.counts, pos),
        k: view.k,
        fields: view
            .fields
            .iter()
            .map(|f| FieldWindow {
                mean: pick(&f.mean, pos),
                min: pick(&f.min, pos),
                max: pick(&f.max, pos),
                first: pick(&f.first, pos),
                last: pick(&f.last, pos),
                head: pick_k(&f.head, k, pos),
                tail: pick_k(&f.tail, k, pos),
            })
            .collect(),
    }
}

/// Calls `call` on the whole batch (`None`); if that fails, bisects: calls
/// it on halves (`Some(positions)`), and so on, so that only the records
/// whose sub-batch keeps failing get the error. At most `ISOLATION_BUDGET`
/// extra calls are spent; records still unresolved then share the error of
/// the last failing call that covered them.
fn isolate<T>(
    n: usize,
    mut call: impl FnMut(Option<&[usize]>) -> Result<Vec<T>, CallError>,
) -> Vec<Result<T, CallError>> {
    let first = match call(None) {
        Ok(v) => return v.into_iter().map(Ok).collect(),
        Err(e) => e,
    };
    let mut out: Vec<Option<Result<T, CallError>>> = (0..n).map(|_| None).collect();
    let mut budget = ISOLATION_BUDGET;
    // Work list of (positions, error that covered them).
    let mut work: Vec<(Vec<usize>, CallError)> = vec![((0..n).collect(), first)];
    while let Some((pos, err)) = work.pop() {
        if pos.len() == 1 || budget == 0 {
            for p in pos {
                out[p] = Some(Err(err.clone()));
            }
            continue;
        }
        let (a, b) = pos.split_at(pos.len() / 2);
        for half in [b, a] {
            if budget == 0 {
                work.push((half.to_vec(), err.clone()));
                continue;
            }
            budget -= 1;
            match call(Some(half)) {
                Ok(v) => {
                    for (p, r) in half.iter().zip(v) {
                        out[*p] = Some(Ok(r));
                    }
                }
                Err(e) => work.push((half.to_vec(), e)),
            }
        }
    }
    out.into_iter().map(|r| r.expect("every position resolved")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_finds_the_poisoned_record() {
        let poison = 37;
        let mut calls = 0;
        let results = isolate(100, |pos| {
            calls += 1;
            let pos: Vec<usize> = pos.map(<[usize]>::to_vec).unwrap_or_else(|| (0..100).collect());
            if pos.contains(&poison) {
                Err(CallError::Trap("boom".into()))
            } else {
                Ok(pos.iter().map(|p| p * 2).collect())
            }
        });
        for (i, r) in results.iter().enumerate() {
            if i == poison {
                assert_eq!(r, &Err(CallError::Trap("boom".into())));
            } else {
                assert_eq!(r, &Ok(i * 2));
            }
        }
        // One call for the batch, then two per level along 37's path:
        // 100 → 50 → 25 → 13 → 6 → 3 → 1 is six levels.
        assert_eq!(calls, 1 + 2 * 6);
    }

    #[test]
    fn isolation_budget_bounds_calls_when_everything_fails() {
        let mut calls = 0;
        let results: Vec<Result<u8, _>> = isolate(1000, |_| {
            calls += 1;
            Err(CallError::Timeout(std::time::Duration::from_millis(1)))
        });
        assert_eq!(calls, 1 + ISOLATION_BUDGET);
        assert!(results.iter().all(|r| r.is_err()));
    }
}
