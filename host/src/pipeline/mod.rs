//! One batch of records through the stages, in order: prepare (decode,
//! transform rules, the event-time check), windows (each live record
//! enters its key's window), the rules that see windows (trend, then
//! anomaly), and route (`route`: enriched records, alerts and dead
//! letters). No Kafka here: the source hands a batch in, the sink takes the
//! outputs, and benchmarks and tests drive this directly. Each rule is
//! called through `crate::rules::call`, which isolates failures and runs
//! trials; `rec` holds a record's state on the way.
//!
//! Every consumed record ends in exactly one of: its outputs (an enriched
//! record and its alerts), nothing (a transform dropped it), or one dead
//! letter with a `Reason`. A record's outputs are all or nothing: when one of
//! them would be larger than the producer may send, the record is
//! dead-lettered as `output-too-large` instead.

pub mod inspect;
mod rec;
mod route;
mod seen;
mod tally;

use std::sync::Arc;

use rec::{Rec, State, build_batch, fail, keys};
pub use seen::{ReadTable, Tables};
pub use tally::Tally;

use crate::contract::{Alert, Batch, Change, Needs, WindowView};
use crate::decode::{InputFormat, Schema, decode_text};
use crate::lifecycle::{AlertMode, Alerts};
use crate::output;
use crate::record::{Failure, InRecord, OutRecord, Reason};
use crate::rules::call::{self, Called, Seen, Windowed};
use crate::rules::runtime::{CallError, PluginInfo};
use crate::rules::trial::Trial;
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
    /// Where key, event time and fields are in a record.
    pub schema: Schema,
    /// The windows kept per key.
    pub window: WindowConfig,
    /// The input topic, as outputs name their source.
    pub source_topic: String,
    /// How far ahead of the processing time an event time may be.
    pub max_future_ms: i64,
    /// Longest time spent finding the records that make one rule call fail.
    pub isolation_budget: std::time::Duration,
    /// Bounds on what a record may produce.
    pub limits: OutputLimits,
    /// The reference tables rules may read (`--table`).
    pub tables: Tables,
    /// What becomes of the alerts rules raise (`--alerts`).
    pub alerts: AlertMode,
    /// Event time between repeats of a firing alert (`--alert-repeat`);
    /// 0: never repeated.
    pub alert_repeat_ms: i64,
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

/// What a batch gave: records to produce, in input order, and counts.
pub struct Processed {
    /// Enriched records, alerts and dead letters, in input order.
    pub records: Vec<OutRecord>,
    /// What they count.
    pub tally: Tally,
}

/// The windows of a set of partitions, and the stages a batch goes through.
pub struct Pipeline {
    cfg: PipelineConfig,
    windows: Windows,
    enricher: output::Enricher,
    /// Firing alerts, with `--alerts lifecycle`.
    alerts: Alerts,
}

/// Calls one rule that sees windows (`call::trend` or `call::detect`).
type WindowRuleCall<T> = for<'a> fn(
    &'a dyn Rule,
    Option<&'a Trial>,
    Seen<'_, Windowed>,
    call::Keys<'_>,
    std::time::Duration,
) -> Called<'a, Result<T, String>>;

impl Pipeline {
    /// A pipeline with no windows yet.
    pub fn new(cfg: PipelineConfig) -> Self {
        let mut windows = Windows::new(cfg.window.clone());
        windows.keep_swept(cfg.alerts == AlertMode::Lifecycle);
        let enricher = output::Enricher::new(cfg.shape, &cfg.schema.fields);
        Self {
            alerts: Alerts::new(cfg.alert_repeat_ms),
            cfg,
            windows,
            enricher,
        }
    }

    /// The firing alerts (with `--alerts lifecycle`; else none).
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// The firing alerts, to restore or forget a partition's.
    pub fn alerts_mut(&mut self) -> &mut Alerts {
        &mut self.alerts
    }

    /// The windows, per partition and key.
    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// What the pipeline was made with.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Keeps the windows the trend and anomaly rules of `rules` (and their
    /// candidates) declare: those it kept already go on, new ones are
    /// computed from the readings held (see `Windows::set_declared`). When
    /// they need more event time than the windows hold, the windows start
    /// again, empty, and this returns `true`: the caller rebuilds them from
    /// the input if it can (`crate::rebuild`), else they fill from the
    /// records that come.
    pub fn declare(&mut self, rules: &RuleSet) -> bool {
        let specs = seen::specs(rules, &self.cfg.schema.fields);
        if specs == self.windows.config().declared {
            return false;
        }
        match self.windows.set_declared(specs.clone()) {
            Ok(()) => false,
            // Specs are checked when their plugin loads (`seen::resolve`).
            Err(error @ crate::window::DeclareError::Invalid(_)) => {
                tracing::error!(%error, "Declared windows refused; they stay as they were.");
                false
            }
            Err(error) => {
                // Windows holding nothing lose nothing (a pipeline's first
                // batch).
                let held = self.windows.partitions().next().is_some();
                if held {
                    tracing::info!(%error, "Windows start again for the rules' declared windows.");
                }
                let mut cfg = self.cfg.window.clone();
                cfg.declared = specs;
                self.windows = Windows::new(cfg);
                self.windows
                    .keep_swept(self.cfg.alerts == AlertMode::Lifecycle);
                held
            }
        }
    }

    /// Forgets the windows of `partition` (it was revoked).
    pub fn drop_partition(&mut self, partition: i32) {
        self.windows.drop_partition(partition);
    }

    /// Feeds records into the windows only, to rebuild them: decode,
    /// transforms and the event-time check run as in `process`, but no trend
    /// or anomaly rule is called and nothing is output. Returns how many
    /// records entered a window.
    pub fn rebuild(
        &mut self,
        transforms: &[Arc<dyn Rule>],
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
        // Alerts a sweep resolves here were resolved when first processed.
        self.windows.take_swept();
        entered
    }

    /// Runs one batch through every stage. `now_ms` is the batch's
    /// processing time, handed to rules in place of a clock.
    pub fn process(&mut self, rules: &RuleSet, input: Vec<InRecord>, now_ms: i64) -> Processed {
        if self.declare(rules) {
            tracing::warn!(
                "The windows were emptied for a longer declared window; they fill from the records that come."
            );
        }
        self.run_stages(rules, input, now_ms, false)
    }

    /// Runs records processed before through every stage again, after the
    /// windows were rebuilt up to the first of them and the alert state
    /// restored as of it (`crate::kafka::state`): the windows and the alert
    /// state come out as processing them the first time left them. As in a
    /// `rebuild`, each record's Kafka timestamp stands in for the
    /// processing time in the event-time check. The outputs are counted,
    /// not kept: they were produced the first time.
    pub fn replay(&mut self, rules: &RuleSet, input: Vec<InRecord>, now_ms: i64) -> Tally {
        self.run_stages(rules, input, now_ms, true).tally
    }

    fn run_stages(
        &mut self,
        rules: &RuleSet,
        mut input: Vec<InRecord>,
        now_ms: i64,
        replaying: bool,
    ) -> Processed {
        let mut recs = self.prepare(rules, &mut input, now_ms, replaying);
        let needs = union_needs(rules.trend.iter().chain(&rules.anomaly))
            | union_needs(rules.trials.iter().map(|(_, t)| &t.candidate));
        let (entered, mut view) = self.enter_windows(&mut recs, needs);
        if !entered.is_empty() && (!rules.trend.is_empty() || !rules.anomaly.is_empty()) {
            let batch = build_batch(&self.cfg.schema, &recs, &entered, needs, now_ms);
            let keys = keys(!rules.trials.is_empty(), &recs, &entered);
            let all = std::mem::take(&mut view.declared);
            let lookups = lookups(rules, &self.cfg.tables, &recs, &entered);
            let mut stage = WindowRules {
                rules,
                entered: &entered,
                seen: (batch, view),
                own: seen::Own {
                    specs: &self.windows.config().declared,
                    all: &all,
                    fields: &self.cfg.schema.fields,
                    tables: &self.cfg.tables,
                    lookups: &lookups,
                },
                keys: &keys,
                budget: self.cfg.isolation_budget,
            };
            let first_bit = rules.transform.len();
            stage.run(
                &rules.trend,
                first_bit,
                &mut recs,
                call::trend,
                |rec, p, candidate, trend| {
                    if let Some(t) = trend {
                        rec.trends.push((p, candidate, t));
                    }
                    Ok(())
                },
            );
            let limits = &self.cfg.limits;
            let first_bit = first_bit + rules.trend.len();
            stage.run(
                &rules.anomaly,
                first_bit,
                &mut recs,
                call::detect,
                |rec, p, candidate, alerts| {
                    check_alerts(&alerts, limits)?;
                    if !alerts.is_empty() {
                        rec.alerts.push((p, candidate, alerts));
                    }
                    Ok(())
                },
            );
            view = stage.seen.1;
        }
        let mut alerts = std::mem::take(&mut self.alerts);
        let processed = self.route(rules, input, recs, &view, now_ms, &mut alerts);
        self.alerts = alerts;
        processed
    }

    /// The first stage: decodes, transforms (with `rules`' transform rules
    /// and their trials) and checks the event times of a batch. `now_ms` is
    /// the batch's processing time; in a `rebuild`, a record's own Kafka
    /// timestamp stands in for it in the event-time check, as the best
    /// estimate of when it was first processed.
    fn prepare(
        &self,
        rules: &RuleSet,
        input: &mut [InRecord],
        now_ms: i64,
        rebuild: bool,
    ) -> Vec<Rec> {
        let (schema, format) = (&self.cfg.schema, &self.cfg.input);
        let mut recs: Vec<Rec> = input
            .iter_mut()
            .map(|r| Rec::new(r.partition, r.offset, r.payload.take(), schema, format))
            .collect();
        for (bit, rule) in rules.transform.iter().enumerate() {
            self.transform(
                rule.as_ref(),
                rules.trial(rule.info().name.as_str()),
                bit,
                &mut recs,
                now_ms,
            );
        }
        // Event-time sanity, after transforms (which may rewrite the time).
        for (rec, inp) in recs.iter_mut().zip(input.iter()) {
            let processed = match (rebuild, inp.timestamp) {
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

    /// One transform rule (at `bit` in `Rec::by_candidate`) over the live
    /// records.
    fn transform(
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
        let mut batch = build_batch(schema, recs, &live, needs, now_ms);
        let readers = std::iter::once(rule.info()).chain(trial.map(|t| t.candidate.info()));
        let records = live
            .iter()
            .map(|&i| (recs[i].decoded().key.as_str(), recs[i].text()));
        let tables = &self.cfg.tables;
        let lookups = seen::lookups(tables, readers, records);
        batch.tables = seen::tables_for(rule.info(), tables, &lookups, live.len());
        let candidate = trial
            .filter(|t| !seen::sees_alike(rule.info(), t.candidate.info()))
            .map(|t| {
                let mut b = batch.clone();
                b.tables = seen::tables_for(t.candidate.info(), tables, &lookups, live.len());
                b
            });
        let mut called = call::transform(
            rule,
            trial,
            Seen {
                serving: &batch,
                candidate: candidate.as_ref(),
            },
            &keys(trial.is_some(), recs, &live),
            self.cfg.isolation_budget,
        );
        // Names whose change means the record must be decoded again.
        let typed: Vec<&str> = [schema.key_field.as_str(), schema.time_field.as_str()]
            .into_iter()
            .chain(schema.fields.iter().map(String::as_str))
            .collect();
        let mut merge: Option<Merge> = None;
        let bit = rec::bit(bit);
        for (j, result) in std::mem::take(&mut called.results).into_iter().enumerate() {
            let rec = &mut recs[live[j]];
            if called.by_candidate(j) {
                rec.by_candidate |= bit;
            }
            self.apply_change(rec, called.info(j), result, &mut merge, &typed);
        }
    }

    /// What a transform returned for `rec`, applied: kept, dropped,
    /// replaced or merged into (and decoded again if a typed member
    /// changed), or failed, blamed on `info`.
    fn apply_change(
        &self,
        rec: &mut Rec,
        info: &crate::rules::runtime::PluginInfo,
        result: Result<Result<Change, String>, CallError>,
        merge: &mut Option<Merge>,
        typed: &[&str],
    ) {
        let max_bytes = self.cfg.limits.max_message_bytes;
        let (text, decode_again) = match result {
            Ok(Ok(Change::Keep)) => return,
            Ok(Ok(Change::Drop)) => {
                rec.state = State::Dropped;
                return;
            }
            Ok(Ok(Change::Replace(text))) => (Ok(text), true),
            Ok(Ok(Change::Merge(members))) => {
                if !merge.as_ref().is_some_and(|m| m.is(&members)) {
                    *merge = match Merge::parse(&members) {
                        Ok(m) => Some(m),
                        Err(message) => return fail(rec, info, Reason::PluginError, message),
                    };
                }
                let m = merge.as_ref().expect("set above");
                (
                    m.apply(rec.text())
                        .map_err(|message| (Reason::PluginError, message)),
                    m.touches(typed),
                )
            }
            Ok(Err(message)) => (Err((Reason::PluginError, message)), false),
            Err(e) => (Err((e.reason(), e.to_string())), false),
        };
        match text {
            // Blamed on the rule only if the rule made it too large.
            Ok(text) if text.len() > max_bytes && rec.text().len() <= max_bytes => fail(
                rec,
                info,
                Reason::PluginOutputLimit,
                format!(
                    "the transformed record is {} bytes; the limit is {max_bytes} (the producer's message.max.bytes)",
                    text.len(),
                ),
            ),
            Ok(text) if decode_again => match decode_text(&self.cfg.schema, &text) {
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

    /// The windows stage: every live record enters its key's window, in
    /// batch order. Returns the records that entered (in order), and their
    /// windows as rules see them (with what `needs` asks).
    fn enter_windows(&mut self, recs: &mut [Rec], needs: Needs) -> (Vec<usize>, WindowView) {
        let mut view = ViewBuilder::new(
            self.windows.config(),
            needs.contains(Needs::WINDOW_VALUES),
            recs.len(),
        );
        let mut entered = Vec::with_capacity(recs.len());
        let lifecycle = self.cfg.alerts == AlertMode::Lifecycle;
        for (i, rec) in recs.iter_mut().enumerate() {
            let State::Live { decoded: d, slot } = &mut rec.state else {
                continue;
            };
            let inserted = self.windows.insert(
                rec.partition,
                rec.offset,
                &d.key,
                d.time_ms,
                &d.values,
                Some(&mut view),
            );
            if lifecycle {
                rec.swept = self.windows.take_swept();
            }
            let refused = match inserted {
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
        (entered, view.view)
    }
}

/// The stage of the rules that see windows (trend, then anomaly): what
/// each of their calls on a batch shares.
struct WindowRules<'b> {
    rules: &'b RuleSet,
    /// The records that entered a window, in order.
    entered: &'b [usize],
    /// Their batch, and their windows (with the declared windows and table
    /// rows of the rule being called).
    seen: (Batch, WindowView),
    /// What each rule's own inputs are made from.
    own: seen::Own<'b>,
    keys: call::Keys<'b>,
    budget: std::time::Duration,
}

impl WindowRules<'_> {
    /// Calls each rule of one kind (`kind`, whose first bit in
    /// `Rec::by_candidate` is `first_bit`) on the records that entered
    /// windows, and hands each record's value to `accept` with the rule's
    /// position and whether a candidate served it. A value `accept`
    /// refuses, or an error, fails the record, blamed on the rule; a record
    /// an earlier rule failed is not judged again.
    fn run<T>(
        &mut self,
        kind: &[Arc<dyn Rule>],
        first_bit: usize,
        recs: &mut [Rec],
        call: WindowRuleCall<T>,
        mut accept: impl FnMut(&mut Rec, usize, bool, T) -> Result<(), String>,
    ) {
        for (p, rule) in kind.iter().enumerate() {
            let trial = self.rules.trial(&rule.info().name);
            seen::fill(&mut self.seen, rule.info(), &self.own);
            let candidate = trial
                .filter(|t| !seen::sees_alike(rule.info(), t.candidate.info()))
                .map(|t| {
                    let mut own = self.seen.clone();
                    seen::fill(&mut own, t.candidate.info(), &self.own);
                    own
                });
            let seen = Seen {
                serving: &self.seen,
                candidate: candidate.as_ref(),
            };
            let mut called = call(rule.as_ref(), trial, seen, self.keys, self.budget);
            let bit = rec::bit(first_bit + p);
            for (j, result) in std::mem::take(&mut called.results).into_iter().enumerate() {
                let rec = &mut recs[self.entered[j]];
                if !rec.is_live() {
                    continue;
                }
                let candidate = called.by_candidate(j);
                if candidate {
                    rec.by_candidate |= bit;
                }
                let info = called.info(j);
                match result {
                    Ok(Ok(value)) => {
                        if let Err(message) = accept(rec, p, candidate, value) {
                            fail(rec, info, Reason::PluginOutputLimit, message);
                        }
                    }
                    Ok(Err(message)) => fail(rec, info, Reason::PluginError, message),
                    Err(e) => fail(rec, info, e.reason(), e.to_string()),
                }
            }
        }
    }
}

/// The lookup keys of the records at `idx` in the tables the rules (or
/// candidates) of `rules` read (see `seen::lookups`).
fn lookups(
    rules: &RuleSet,
    tables: &Tables,
    recs: &[Rec],
    idx: &[usize],
) -> Vec<Vec<Option<String>>> {
    let candidates = rules.trials.iter().map(|(_, t)| &t.candidate);
    let readers: Vec<&PluginInfo> = rules.all().chain(candidates).map(|r| r.info()).collect();
    let records = idx
        .iter()
        .map(|&i| (recs[i].decoded().key.as_str(), recs[i].text()));
    seen::lookups(tables, readers.into_iter(), records)
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
