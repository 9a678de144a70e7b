//! One batch of records through decode, transforms, windows, trends and
//! anomaly rules, to the records to produce. No Kafka here: the source hands
//! a batch in, the sink takes the outputs, and benchmarks and tests drive
//! this directly.
//!
//! Failure isolation: a rule call that fails (trap, timeout, out of memory)
//! is retried on halves of its batch, each on a fresh instance, until the
//! records that cause it are found, so one poisoned record is dead-lettered
//! alone while its batch-mates go on, whatever the batch size. The search is
//! bounded by time (`isolation_budget`), so that a rule that fails on
//! everything cannot stall the stream.
//!
//! Every consumed record ends in exactly one of: its outputs (an enriched
//! record and its alerts), nothing (a transform dropped it), or one dead
//! letter with a `Reason`. A record's outputs are all or nothing: when one of
//! them would be larger than the producer may send, the record is
//! dead-lettered as `output-too-large` instead.

use std::collections::BTreeMap;

use crate::contract::{Alert, Batch, Change, FieldWindow, Needs, TrendResult, WindowView};
use crate::decode::{DecodeError, Decoded, InputFormat, Schema, decode_text};
use crate::output::{self, WindowStats};
use crate::record::{Dest, Failure, InRecord, OutRecord, Reason, SourcePos};
use crate::rules::runtime::{CallError, PluginInfo};
use crate::rules::trial::{self, Outcome, Trial};
use crate::rules::{Rule, RuleSet, union_needs};
use crate::text::time::{MIN_TIME_MS, iso8601};
use crate::transform::Merge;
use crate::window::{Refused, ViewBuilder, WindowConfig, Windows};

/// Settings of a pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// How consumed records are read (JSON, or Avro with a registry).
    pub input: InputFormat,
    /// How enriched records and alerts are written: JSON when `None`.
    pub avro_output: Option<std::sync::Arc<crate::avro::AvroOutput>>,
    /// What enriched records carry.
    pub shape: output::Shape,
    pub schema: Schema,
    pub window: WindowConfig,
    pub source_topic: String,
    /// How far ahead of the processing time an event time may be.
    pub max_future_ms: i64,
    /// Longest time spent finding the records that make one rule call fail.
    pub isolation_budget: std::time::Duration,
    pub limits: OutputLimits,
}

/// Bounds on what a record may produce.
#[derive(Clone, Debug)]
pub struct OutputLimits {
    /// The producer's `message.max.bytes`: no output record may be larger.
    pub max_message_bytes: usize,
    /// Alerts one anomaly rule may raise for one record.
    pub max_alerts_per_record: usize,
    /// Bytes of an alert's rule, kind and message together.
    pub max_alert_bytes: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            max_message_bytes: 1_000_000,
            max_alerts_per_record: 64,
            max_alert_bytes: 8192,
        }
    }
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
    pub dead_by_reason: BTreeMap<Reason, u64>,
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
            *self.dead_by_reason.entry(*k).or_default() += v;
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

/// Where a record is on its way through the batch.
enum State {
    /// Decoded, and (once in `slot`) in its window.
    Live {
        decoded: Decoded,
        slot: Option<usize>,
    },
    /// A transform dropped it on purpose.
    Dropped,
    Failed(Failure),
}

/// A consumed payload: text once checked to be UTF-8 (checked once, here),
/// JSON text read from another format (with the bytes as consumed, for a
/// dead letter), else the raw bytes, kept for the dead letter.
enum Payload {
    Text(String),
    Converted { text: String, original: Vec<u8> },
    Bytes(Vec<u8>),
}

/// A record on its way through the batch.
struct Rec {
    partition: i32,
    offset: i64,
    original: Payload,
    /// The record's JSON text after transforms; `None` while it is still the
    /// consumed payload.
    text: Option<String>,
    state: State,
    /// (trend rule, whether its canary served the record, result)
    trends: Vec<(usize, bool, TrendResult)>,
    /// (anomaly rule, whether its canary served the record, alerts)
    alerts: Vec<(usize, bool, Vec<Alert>)>,
    /// Rules (bits by position in `RuleSet::all`) whose canary candidate
    /// served this record.
    by_candidate: u64,
}

impl Rec {
    fn new(
        partition: i32,
        offset: i64,
        payload: Option<Vec<u8>>,
        schema: &Schema,
        format: &InputFormat,
    ) -> Rec {
        let fail = |e: String| {
            State::Failed(Failure {
                reason: Reason::Decode,
                message: e,
                plugin: None,
            })
        };
        let decoded = |text: &str| match decode_text(schema, text) {
            Ok(decoded) => State::Live {
                decoded,
                slot: None,
            },
            Err(e) => fail(e.to_string()),
        };
        let (original, state) = match (payload, format) {
            (None, _) => (
                Payload::Bytes(Vec::new()),
                fail(DecodeError::Tombstone.to_string()),
            ),
            (Some(bytes), InputFormat::Json) => match String::from_utf8(bytes) {
                Ok(text) => {
                    let state = decoded(&text);
                    (Payload::Text(text), state)
                }
                Err(e) => {
                    let state = fail(format!("not UTF-8: {}", e.utf8_error()));
                    (Payload::Bytes(e.into_bytes()), state)
                }
            },
            (Some(bytes), InputFormat::Avro(avro)) => match avro.to_json(&bytes) {
                Ok(text) => {
                    let state = decoded(&text);
                    (
                        Payload::Converted {
                            text,
                            original: bytes,
                        },
                        state,
                    )
                }
                Err(e) => (Payload::Bytes(bytes), fail(e)),
            },
        };
        Rec {
            partition,
            offset,
            original,
            text: None,
            state,
            trends: Vec::new(),
            alerts: Vec::new(),
            by_candidate: 0,
        }
    }

    /// The record's current JSON text.
    fn text(&self) -> &str {
        match (&self.text, &self.original) {
            (Some(t), _)
            | (None, Payload::Text(t))
            | (None, Payload::Converted { text: t, .. }) => t,
            (None, Payload::Bytes(_)) => "{}",
        }
    }

    fn decoded(&self) -> &Decoded {
        match &self.state {
            State::Live { decoded, .. } => decoded,
            _ => unreachable!("only live records are batched"),
        }
    }

    fn is_live(&self) -> bool {
        matches!(self.state, State::Live { .. })
    }

    fn into_original(self) -> Vec<u8> {
        match self.original {
            Payload::Text(t) => t.into_bytes(),
            Payload::Converted { original, .. } | Payload::Bytes(original) => original,
        }
    }
}

pub struct Pipeline {
    cfg: PipelineConfig,
    windows: Windows,
    enricher: output::Enricher,
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig) -> Self {
        let windows = Windows::new(cfg.window.clone());
        let enricher = output::Enricher::new(cfg.shape, &cfg.schema.fields);
        Self {
            cfg,
            windows,
            enricher,
        }
    }

    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Forgets the windows of `partition` (it was revoked).
    pub fn drop_partition(&mut self, partition: i32) {
        self.windows.drop_partition(partition);
    }

    /// Decodes, transforms (with `rules`' transform rules and their trials)
    /// and checks the event times of a batch: what comes before the
    /// windows. `now_ms` is the batch's processing time; with
    /// `replay`, a record's own Kafka timestamp stands in for it in the
    /// event-time check, as the best estimate of when it was first
    /// processed.
    fn prepare(
        &self,
        rules: &RuleSet,
        input: &mut [InRecord],
        now_ms: i64,
        replay: bool,
    ) -> Vec<Rec> {
        let (schema, format) = (&self.cfg.schema, &self.cfg.input);
        let mut recs: Vec<Rec> = input
            .iter_mut()
            .map(|r| Rec::new(r.partition, r.offset, r.payload.take(), schema, format))
            .collect();

        for (bit, rule) in rules.transform.iter().enumerate() {
            self.transform_stage(
                rule.as_ref(),
                rules.trial(rule.info().name.as_str()),
                bit,
                &mut recs,
                now_ms,
            );
        }

        // Event-time sanity, after transforms (which may rewrite the time).
        for (rec, inp) in recs.iter_mut().zip(input.iter()) {
            let processed = match (replay, inp.timestamp) {
                (true, Some(ts)) => ts.max(MIN_TIME_MS),
                _ => now_ms,
            };
            let horizon = processed.saturating_add(self.cfg.max_future_ms);
            let t = match &rec.state {
                State::Live { decoded, .. } if decoded.time_ms > horizon => decoded.time_ms,
                _ => continue,
            };
            rec.state = State::Failed(Failure {
                reason: Reason::Future,
                message: format!(
                    "event time {} is {} ms ahead of the processing time {}; at most {} ms ahead is accepted (--max-future)",
                    iso8601(t),
                    t - processed,
                    iso8601(processed),
                    self.cfg.max_future_ms
                ),
                plugin: None,
            });
        }
        recs
    }

    /// Replays records into the windows only, to rebuild them: decode,
    /// transforms and the event-time check run as in `process`, but no trend
    /// or anomaly rule is called and nothing is output. Returns how many
    /// records entered a window.
    pub fn replay(
        &mut self,
        transforms: &[std::sync::Arc<dyn Rule>],
        mut input: Vec<InRecord>,
        now_ms: i64,
    ) -> u64 {
        // The serving transforms only: a rebuild runs no trial.
        let rules = RuleSet {
            transform: transforms.to_vec(),
            ..RuleSet::default()
        };
        let recs = self.prepare(&rules, &mut input, now_ms, true);
        let mut entered = 0;
        for rec in &recs {
            if let State::Live { decoded: d, .. } = &rec.state {
                let inserted = self.windows.insert(
                    rec.partition,
                    rec.offset,
                    &d.key,
                    d.time_ms,
                    &d.values,
                    None,
                );
                entered += u64::from(inserted.is_ok());
            }
        }
        entered
    }

    /// Runs one batch. `now_ms` is the batch's processing time, handed to
    /// rules in place of a clock.
    pub fn process(&mut self, rules: &RuleSet, mut input: Vec<InRecord>, now_ms: i64) -> Output {
        let schema = &self.cfg.schema;
        let mut recs = self.prepare(rules, &mut input, now_ms, false);

        // Windows: every live record enters its key's window in batch order.
        let wneeds = union_needs(rules.trend.iter().chain(&rules.anomaly))
            | union_needs(rules.trials.iter().map(|(_, t)| &t.candidate));
        let fields = schema.fields.len();
        let mut view = ViewBuilder::new(
            fields,
            self.windows.config().k,
            wneeds.contains(Needs::WINDOW_VALUES),
            recs.len(),
        );
        let mut entered = Vec::with_capacity(recs.len());
        for (i, rec) in recs.iter_mut().enumerate() {
            let State::Live { decoded: d, slot } = &mut rec.state else {
                continue;
            };
            let refused = match self.windows.insert(
                rec.partition,
                rec.offset,
                &d.key,
                d.time_ms,
                &d.values,
                Some(&mut view),
            ) {
                Ok(()) => {
                    *slot = Some(entered.len());
                    entered.push(i);
                    continue;
                }
                Err(Refused::Late {
                    newest_ms,
                    behind_ms,
                }) => Failure {
                    reason: Reason::Late,
                    message: format!(
                        "event time {} is {} ms behind the newest event time {} of key {:?}; allowed lateness is {} ms",
                        iso8601(d.time_ms),
                        behind_ms,
                        iso8601(newest_ms),
                        d.key,
                        self.windows.config().lateness_ms
                    ),
                    plugin: None,
                },
                Err(Refused::OutOfRange) => Failure {
                    reason: Reason::Decode,
                    message: format!("event time {} ms is outside years 0001 to 9999", d.time_ms),
                    plugin: None,
                },
            };
            rec.state = State::Failed(refused);
        }
        let view = view.view;

        if !entered.is_empty() && !(rules.trend.is_empty() && rules.anomaly.is_empty()) {
            let batch = build_batch(schema, &recs, &entered, wneeds, now_ms);
            let budget = self.cfg.isolation_budget;
            let first_bit = rules.transform.len();
            let on_window = WindowCall {
                rules,
                entered: &entered,
                budget,
            };
            on_window.run(
                &rules.trend,
                first_bit,
                &mut recs,
                &|r, pos| match pos {
                    None => r.trend(&batch, &view),
                    Some(pos) => r.trend(&select_batch(&batch, pos), &select_view(&view, pos)),
                },
                |rec, p, candidate, trend| {
                    if let Some(t) = trend {
                        rec.trends.push((p, candidate, t));
                    }
                    Ok(())
                },
            );
            let limits = &self.cfg.limits;
            on_window.run(
                &rules.anomaly,
                first_bit + rules.trend.len(),
                &mut recs,
                &|r, pos| match pos {
                    None => r.detect(&batch, &view),
                    Some(pos) => r.detect(&select_batch(&batch, pos), &select_view(&view, pos)),
                },
                |rec, p, candidate, alerts| {
                    check_alerts(&alerts, limits)?;
                    if !alerts.is_empty() {
                        rec.alerts.push((p, candidate, alerts));
                    }
                    Ok(())
                },
            );
        }

        self.outputs(rules, input, recs, &view, now_ms)
    }

    fn transform_stage(
        &self,
        rule: &dyn Rule,
        trial: Option<&Trial>,
        bit: usize,
        recs: &mut [Rec],
        now_ms: i64,
    ) {
        let live: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].is_live()).collect();
        if live.is_empty() {
            return;
        }
        let schema = &self.cfg.schema;
        let needs = rule.info().needs | trial.map_or(Needs::empty(), |t| t.candidate.info().needs);
        let batch = build_batch(schema, recs, &live, needs, now_ms);
        let (results, by_candidate) = run_rule(
            rule,
            trial,
            recs,
            &live,
            self.cfg.isolation_budget,
            &|r, pos| match pos {
                None => r.transform(&batch),
                Some(pos) => r.transform(&select_batch(&batch, pos)),
            },
        );
        let blame = Blame::new(rule.info(), trial, &by_candidate, bit);
        // Names whose change means the record must be decoded again.
        let typed: Vec<&str> = [schema.key_field.as_str(), schema.time_field.as_str()]
            .into_iter()
            .chain(schema.fields.iter().map(String::as_str))
            .collect();
        let mut merge: Option<Merge> = None;
        for (j, result) in results.into_iter().enumerate() {
            let i = live[j];
            let rec = &mut recs[i];
            let info = blame.info(j);
            rec.by_candidate |= blame.bit(j);
            let (text, decode_again) = match result {
                Ok(Ok(Change::Keep)) => continue,
                Ok(Ok(Change::Drop)) => {
                    rec.state = State::Dropped;
                    continue;
                }
                Ok(Ok(Change::Replace(text))) => (Ok(text), true),
                Ok(Ok(Change::Merge(members))) => {
                    if !merge.as_ref().is_some_and(|m| m.is(&members)) {
                        merge = match Merge::parse(&members) {
                            Ok(m) => Some(m),
                            Err(message) => {
                                fail(rec, info, Reason::PluginError, message);
                                continue;
                            }
                        };
                    }
                    let m = merge.as_ref().expect("set above");
                    (
                        m.apply(rec.text())
                            .map_err(|message| (Reason::PluginError, message)),
                        m.touches(&typed),
                    )
                }
                Ok(Err(message)) => (Err((Reason::PluginError, message)), false),
                Err(e) => (Err((e.reason(), e.to_string())), false),
            };
            match text {
                // Blamed on the rule only if the rule made it too large.
                Ok(text)
                    if text.len() > self.cfg.limits.max_message_bytes
                        && rec.text().len() <= self.cfg.limits.max_message_bytes =>
                {
                    fail(
                        rec,
                        info,
                        Reason::PluginOutputLimit,
                        format!(
                            "the transformed record is {} bytes; the limit is {} (the producer's message.max.bytes)",
                            text.len(),
                            self.cfg.limits.max_message_bytes
                        ),
                    )
                }
                Ok(text) if decode_again => match decode_text(schema, &text) {
                    Ok(d) => {
                        rec.state = State::Live {
                            decoded: d,
                            slot: None,
                        };
                        rec.text = Some(text);
                    }
                    Err(e) => fail(
                        rec,
                        info,
                        Reason::PluginError,
                        format!("transformed record is invalid: {e}"),
                    ),
                },
                Ok(text) => rec.text = Some(text),
                Err((reason, message)) => fail(rec, info, reason, message),
            }
        }
    }

    fn outputs(
        &self,
        rules: &RuleSet,
        input: Vec<InRecord>,
        recs: Vec<Rec>,
        view: &WindowView,
        now_ms: i64,
    ) -> Output {
        let schema = &self.cfg.schema;
        let topic = self.cfg.source_topic.as_str();
        let max_bytes = self.cfg.limits.max_message_bytes;
        let versions: Vec<(&str, &str)> = rules
            .all()
            .map(|r| (r.info().name.as_str(), r.info().version.as_str()))
            .collect();
        let plugins = output::Enricher::plugins(&versions);
        let mut tally = Tally {
            input: input.len() as u64,
            ..Tally::default()
        };
        let mut out = Vec::with_capacity(input.len() * 2);
        let mut fields = Vec::with_capacity(schema.fields.len());
        for (rec, inp) in recs.into_iter().zip(input) {
            let source = SourcePos {
                topic,
                partition: inp.partition,
                offset: inp.offset,
            };
            let failure = match &rec.state {
                State::Dropped => {
                    tally.dropped += 1;
                    continue;
                }
                State::Failed(failure) => failure.clone(),
                State::Live { decoded: d, slot } => {
                    let slot = slot.expect("live records entered a window");
                    let text = rec.text();
                    fields.clear();
                    fields.extend(
                        view.fields
                            .iter()
                            .map(|fw: &FieldWindow| [fw.mean[slot], fw.min[slot], fw.max[slot]]),
                    );
                    let window = WindowStats {
                        start_ms: view.starts[slot],
                        end_ms: view.ends[slot],
                        count: view.counts[slot],
                        fields: &fields,
                    };
                    let trends: Vec<(&str, &TrendResult)> = rec
                        .trends
                        .iter()
                        .map(|(p, _, t)| (rules.trend[*p].info().name.as_str(), t))
                        .collect();
                    let kinds: Vec<&str> = rec
                        .alerts
                        .iter()
                        .flat_map(|(_, _, a)| a.iter().map(|a| a.kind.as_str()))
                        .collect();
                    let key = inp
                        .key
                        .clone()
                        .unwrap_or_else(|| d.key.clone().into_bytes());
                    let canary_plugins;
                    let plugins = if rec.by_candidate == 0 {
                        &plugins
                    } else {
                        canary_plugins =
                            output::Enricher::plugins(&served_versions(rules, rec.by_candidate));
                        &canary_plugins
                    };
                    let enriched = self
                        .enricher
                        .enriched(text, &window, &trends, &kinds, plugins, source);
                    let record = |dest, payload: String| OutRecord {
                        dest,
                        source: (inp.partition, inp.offset),
                        key: Some(key.clone()),
                        payload: payload.into_bytes(),
                        headers: Vec::new(),
                    };
                    let first = out.len();
                    out.push(record(Dest::Enriched, enriched));
                    for (p, candidate, alerts) in &rec.alerts {
                        let serving = rules.anomaly[*p].info();
                        let info = match rules.trial(&serving.name) {
                            Some(t) if *candidate => t.candidate.info(),
                            _ => serving,
                        };
                        let payload = output::alert(
                            now_ms,
                            &schema.key_field,
                            &d.key,
                            d.time_ms,
                            text,
                            (&info.name, &info.version),
                            alerts,
                            source,
                        );
                        out.push(record(Dest::Alerts, payload));
                    }
                    let refused = match &self.cfg.avro_output {
                        None => None,
                        Some(avro) => out[first..].iter_mut().find_map(|r| {
                            avro.encode(r.dest, &r.payload)
                                .map(|bytes| r.payload = bytes)
                                .err()
                        }),
                    };
                    if let Some(message) = refused {
                        out.truncate(first);
                        Failure {
                            reason: Reason::OutputRefused,
                            message,
                            plugin: None,
                        }
                    } else {
                        match out[first..].iter().find(|r| r.size() > max_bytes) {
                            None => {
                                tally.enriched += 1;
                                for (_, _, alerts) in &rec.alerts {
                                    tally.alert_records += 1;
                                    for a in alerts {
                                        *tally.alerts_by_kind.entry(a.kind.clone()).or_default() +=
                                            1;
                                    }
                                }
                                continue;
                            }
                            Some(big) => {
                                let failure = Failure {
                                    reason: Reason::OutputTooLarge,
                                    message: format!(
                                        "its {} record would be {} bytes; the producer's message.max.bytes is {max_bytes}",
                                        big.dest.name(),
                                        big.size()
                                    ),
                                    plugin: None,
                                };
                                out.truncate(first);
                                failure
                            }
                        }
                    }
                }
            };
            *tally.dead_by_reason.entry(failure.reason).or_default() += 1;
            out.push(
                output::dead_letter(source, inp.key, rec.into_original(), &failure)
                    .fit_dead_letter(max_bytes),
            );
        }
        Output {
            records: out,
            tally,
        }
    }
}

/// The (name, version) of every rule, with the canary candidate's version
/// for the rules whose bit is set in `by_candidate`.
fn served_versions(rules: &RuleSet, by_candidate: u64) -> Vec<(&str, &str)> {
    rules
        .all()
        .enumerate()
        .map(|(bit, r)| {
            let info = match rules.trial(&r.info().name) {
                Some(t) if bit < 64 && by_candidate & (1 << bit) != 0 => t.candidate.info(),
                _ => r.info(),
            };
            (info.name.as_str(), info.version.as_str())
        })
        .collect()
}

/// Applies one rule's per-record results to the records at `entered`: a
/// value goes through `accept` (which may refuse it), an error fails the
/// record, blamed on the rule.
fn settle<T>(
    recs: &mut [Rec],
    entered: &[usize],
    blame: &Blame,
    results: Vec<Result<Result<T, String>, CallError>>,
    mut accept: impl FnMut(&mut Rec, bool, T) -> Result<(), String>,
) {
    for (j, result) in results.into_iter().enumerate() {
        let rec = &mut recs[entered[j]];
        if !rec.is_live() {
            continue;
        }
        let info = blame.info(j);
        rec.by_candidate |= blame.bit(j);
        match result {
            Ok(Ok(value)) => {
                if let Err(message) = accept(rec, blame.bit(j) != 0, value) {
                    fail(rec, info, Reason::PluginOutputLimit, message);
                }
            }
            Ok(Err(message)) => fail(rec, info, Reason::PluginError, message),
            Err(e) => fail(rec, info, e.reason(), e.to_string()),
        }
    }
}

/// Calls the rules that see windows (trend, anomaly) on the records that
/// entered them.
struct WindowCall<'a> {
    rules: &'a RuleSet,
    entered: &'a [usize],
    budget: std::time::Duration,
}

impl WindowCall<'_> {
    /// Runs each rule of one kind (`kind`, whose first bit in
    /// `Rec::by_candidate` is `first_bit`), and hands each record's value
    /// to `accept` with the rule's position and whether a candidate served
    /// it.
    fn run<T>(
        &self,
        kind: &[std::sync::Arc<dyn Rule>],
        first_bit: usize,
        recs: &mut [Rec],
        call: &trial::Call<'_, Result<T, String>>,
        mut accept: impl FnMut(&mut Rec, usize, bool, T) -> Result<(), String>,
    ) where
        Result<T, String>: Outcome,
    {
        for (p, rule) in kind.iter().enumerate() {
            let trial = self.rules.trial(&rule.info().name);
            let (results, by_candidate) =
                run_rule(rule.as_ref(), trial, recs, self.entered, self.budget, call);
            let blame = Blame::new(rule.info(), trial, &by_candidate, first_bit + p);
            settle(
                recs,
                self.entered,
                &blame,
                results,
                |rec, candidate, value| accept(rec, p, candidate, value),
            );
        }
    }
}

/// Which version served each record of a rule's call: the serving one, or
/// its canary candidate.
struct Blame<'a> {
    serving: &'a PluginInfo,
    candidate: Option<&'a PluginInfo>,
    by_candidate: &'a [bool],
    /// The rule's bit in `Rec::by_candidate`.
    bit: u64,
}

impl<'a> Blame<'a> {
    fn new(
        serving: &'a PluginInfo,
        trial: Option<&'a Trial>,
        by_candidate: &'a [bool],
        position: usize,
    ) -> Blame<'a> {
        Blame {
            serving,
            candidate: trial.map(|t| t.candidate.info()),
            by_candidate,
            bit: if position < 64 { 1 << position } else { 0 },
        }
    }

    fn info(&self, j: usize) -> &'a PluginInfo {
        match self.candidate {
            Some(c) if self.by_candidate.get(j) == Some(&true) => c,
            _ => self.serving,
        }
    }

    fn bit(&self, j: usize) -> u64 {
        if self.by_candidate.get(j) == Some(&true) {
            self.bit
        } else {
            0
        }
    }
}

/// Calls `rule`, and its candidate if one is on trial, on the records at
/// `idx`, with failure isolation for the serving version; returns each
/// record's result and whether the candidate served it (see
/// `rules::trial`).
fn run_rule<T: Outcome>(
    rule: &dyn Rule,
    trial: Option<&Trial>,
    recs: &[Rec],
    idx: &[usize],
    budget: std::time::Duration,
    call: &trial::Call<'_, T>,
) -> (Vec<Result<T, CallError>>, Vec<bool>) {
    let keys = |j: usize| recs[idx[j]].decoded().key.as_str();
    let mut serve = |sub: Option<&[usize]>| match sub {
        None => isolate(idx.len(), budget, |pos| call(rule, pos)),
        Some(sub) => isolate(sub.len(), budget, |pos| match pos {
            None => call(rule, Some(sub)),
            Some(pos) => {
                let mapped: Vec<usize> = pos.iter().map(|&j| sub[j]).collect();
                call(rule, Some(&mapped))
            }
        }),
    };
    trial::call(trial, idx.len(), &keys, &mut serve, call)
}

/// Checks one record's alerts against the output limits.
fn check_alerts(alerts: &[Alert], limits: &OutputLimits) -> Result<(), String> {
    if alerts.len() > limits.max_alerts_per_record {
        return Err(format!(
            "returned {} alerts for one record; the limit is {}",
            alerts.len(),
            limits.max_alerts_per_record
        ));
    }
    for a in alerts {
        let bytes = a.rule.len() + a.kind.len() + a.message.len();
        if bytes > limits.max_alert_bytes {
            return Err(format!(
                "returned an alert of {bytes} bytes (rule, kind and message); the limit is {}",
                limits.max_alert_bytes
            ));
        }
    }
    Ok(())
}

fn fail(rec: &mut Rec, info: &PluginInfo, reason: Reason, message: String) {
    if matches!(rec.state, State::Failed(_)) {
        return;
    }
    rec.state = State::Failed(Failure {
        reason,
        message,
        plugin: Some((info.name.clone(), info.version.clone())),
    });
}

/// The WIT batch of records `idx`, with the optional columns in `needs`.
fn build_batch(schema: &Schema, recs: &[Rec], idx: &[usize], needs: Needs, now_ms: i64) -> Batch {
    let n = idx.len();
    let decoded = |i: usize| recs[i].decoded();
    let values = (0..schema.fields.len())
        .map(|f| idx.iter().map(|&i| decoded(i).values[f]).collect())
        .collect();
    Batch {
        len: n as u32,
        processing_time: now_ms,
        fields: schema.fields.clone(),
        keys: if needs.contains(Needs::KEYS) {
            idx.iter().map(|&i| decoded(i).key.clone()).collect()
        } else {
            Vec::new()
        },
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
    if col.is_empty() {
        Vec::new()
    } else {
        pos.iter().map(|&p| col[p].clone()).collect()
    }
}

fn pick_k(col: &[f64], k: usize, pos: &[usize]) -> Vec<f64> {
    if col.is_empty() {
        Vec::new()
    } else {
        pos.iter()
            .flat_map(|&p| col[p * k..p * k + k].iter().copied())
            .collect()
    }
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
/// it on halves (`Some(positions)`), and so on, so that exactly the records
/// whose own sub-batch fails get the error, for any batch size. The search
/// stops when `budget` has passed since the first call: records still
/// unresolved then get the last error that covered them, saying so.
fn isolate<T>(
    n: usize,
    budget: std::time::Duration,
    mut call: impl FnMut(Option<&[usize]>) -> Result<Vec<T>, CallError>,
) -> Vec<Result<T, CallError>> {
    let started = std::time::Instant::now();
    let first = match call(None) {
        Ok(v) => return v.into_iter().map(Ok).collect(),
        Err(e) => e,
    };
    let mut out: Vec<Option<Result<T, CallError>>> = (0..n).map(|_| None).collect();
    // Work list of (positions, error that covered them), smallest first out.
    let mut work: Vec<(Vec<usize>, CallError)> = vec![((0..n).collect(), first)];
    let mut unresolved = 0;
    while let Some((pos, err)) = work.pop() {
        if pos.len() == 1 {
            out[pos[0]] = Some(Err(err));
            continue;
        }
        if started.elapsed() > budget {
            unresolved += pos.len();
            let err = err.unresolved(budget);
            for p in pos {
                out[p] = Some(Err(err.clone()));
            }
            continue;
        }
        let (a, b) = pos.split_at(pos.len() / 2);
        for half in [b, a] {
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
    if unresolved > 0 {
        tracing::warn!(
            unresolved,
            ?budget,
            "Isolation ran out of time; records not proven faulty were dead-lettered with the error that covered them."
        );
    }
    out.into_iter()
        .map(|r| r.expect("every position resolved"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_finds_the_poisoned_record() {
        let poison = 37;
        let mut calls = 0;
        let results = isolate(100, std::time::Duration::from_secs(60), |pos| {
            calls += 1;
            let pos: Vec<usize> = pos
                .map(<[usize]>::to_vec)
                .unwrap_or_else(|| (0..100).collect());
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
    fn isolation_finds_exactly_the_poisoned_records_in_large_batches() {
        for (n, poisoned) in [
            (1000, vec![0, 1, 499, 500, 999]),
            (5000, vec![17, 4242]),
            (300, (0..300).step_by(7).collect()),
        ] {
            let results = isolate(n, std::time::Duration::from_secs(60), |pos| {
                let pos: Vec<usize> = pos
                    .map(<[usize]>::to_vec)
                    .unwrap_or_else(|| (0..n).collect());
                if pos.iter().any(|p| poisoned.contains(p)) {
                    Err(CallError::Trap("boom".into()))
                } else {
                    Ok(pos)
                }
            });
            for (i, r) in results.iter().enumerate() {
                assert_eq!(
                    r.is_err(),
                    poisoned.contains(&i),
                    "batch of {n}, record {i}"
                );
            }
        }
    }

    #[test]
    fn isolation_is_bounded_by_time_when_everything_fails() {
        let mut calls = 0;
        let budget = std::time::Duration::from_millis(50);
        let started = std::time::Instant::now();
        let results: Vec<Result<u8, _>> = isolate(100_000, budget, |_| {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
            Err(CallError::Timeout(std::time::Duration::from_millis(1)))
        });
        // Stopped within the budget plus the calls of one level.
        assert!(started.elapsed() < budget * 4, "{:?}", started.elapsed());
        assert!(calls < 200, "{calls}");
        assert!(results.iter().all(|r| r.is_err()));
        assert!(
            results
                .iter()
                .any(|r| r.as_ref().unwrap_err().to_string().contains("not isolated"))
        );
    }
}
