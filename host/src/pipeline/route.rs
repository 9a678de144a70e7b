//! The last stage: what each record of a batch becomes. A live record
//! becomes its enriched record and its alert records, encoded (Avro when
//! asked) and checked against the producer's size limit, all or nothing; a
//! record that failed anywhere becomes one dead letter; a dropped one,
//! nothing.

use super::rec::{Rec, State};
use super::{Pipeline, Processed, Tally};
use crate::contract::{FieldWindow, TrendResult, WindowView};
use crate::decode::Decoded;
use crate::lifecycle::{AlertMode, Alerts, Transition};
use crate::output::{self, WindowStats};
use crate::record::{Dest, Failure, InRecord, OutRecord, Reason, SourcePos};
use crate::rules::RuleSet;

/// What routing one batch needs to know, beside each record.
struct Route<'a> {
    pipeline: &'a Pipeline,
    rules: &'a RuleSet,
    view: &'a WindowView,
    now_ms: i64,
    /// The serving versions of all rules, as enriched records name them.
    plugins: String,
}

impl Pipeline {
    /// The outputs of a batch's records, in input order, and their counts.
    pub(super) fn route(
        &self,
        rules: &RuleSet,
        input: Vec<InRecord>,
        recs: Vec<Rec>,
        view: &WindowView,
        now_ms: i64,
        alerts: &mut Alerts,
    ) -> Processed {
        let versions: Vec<(&str, &str)> = rules
            .all()
            .map(|r| (r.info().name.as_str(), r.info().version.as_str()))
            .collect();
        let route = Route {
            pipeline: self,
            rules,
            view,
            now_ms,
            plugins: output::Enricher::plugins(&versions),
        };
        let mut tally = Tally {
            input: input.len() as u64,
            ..Tally::default()
        };
        let mut out = Vec::with_capacity(input.len() * 2);
        let mut fields = Vec::with_capacity(self.cfg.schema.fields.len());
        let lifecycle = self.cfg.alerts == AlertMode::Lifecycle;
        for (rec, inp) in recs.into_iter().zip(input) {
            if !rec.swept.is_empty() {
                route.idle(&rec, &inp, alerts, &mut out, &mut tally);
            }
            let failure = match &rec.state {
                State::Dropped => {
                    tally.dropped += 1;
                    continue;
                }
                State::Failed(failure) => failure.clone(),
                State::Live { decoded, slot } => {
                    let slot = slot.expect("live records entered a window");
                    let first = out.len();
                    let saved = lifecycle.then(|| alerts.save_key(rec.partition, &decoded.key));
                    route.outputs(&rec, decoded, slot, &inp, &mut fields, &mut out);
                    let emitted = if lifecycle {
                        route.transitions(&rec, decoded, &inp, alerts, &mut out)
                    } else {
                        Vec::new()
                    };
                    match route.encode_and_limit(&mut out[first..]) {
                        Ok(()) => {
                            tally.count_outputs(&rec, lifecycle.then_some(&emitted[..]));
                            continue;
                        }
                        Err(failure) => {
                            out.truncate(first);
                            if let Some(saved) = saved {
                                alerts.restore_key(rec.partition, &decoded.key, saved);
                            }
                            failure
                        }
                    }
                }
            };
            *tally.dead_by_reason.entry(failure.reason).or_default() += 1;
            out.push(route.dead_letter(rec, inp, &failure));
        }
        Processed {
            records: out,
            tally,
        }
    }
}

impl Route<'_> {
    fn source<'s>(&'s self, inp: &InRecord) -> SourcePos<'s> {
        SourcePos {
            topic: &self.pipeline.cfg.source_topic,
            partition: inp.partition,
            offset: inp.offset,
        }
    }

    /// Pushes a live record's enriched record, then its alert records.
    fn outputs(
        &self,
        rec: &Rec,
        decoded: &Decoded,
        slot: usize,
        inp: &InRecord,
        fields: &mut Vec<[f64; 3]>,
        out: &mut Vec<OutRecord>,
    ) {
        let key = inp
            .key
            .clone()
            .unwrap_or_else(|| decoded.key.clone().into_bytes());
        let record = |dest, payload: String| OutRecord {
            dest,
            source: (inp.partition, inp.offset),
            key: Some(key.clone()),
            payload: payload.into_bytes(),
            headers: Vec::new(),
        };
        out.push(record(
            Dest::Enriched,
            self.enriched(rec, slot, inp, fields),
        ));
        if self.pipeline.cfg.alerts == AlertMode::Lifecycle {
            return;
        }
        for (p, candidate, alerts) in &rec.alerts {
            let serving = self.rules.anomaly[*p].info();
            let info = match self.rules.trial(&serving.name) {
                Some(t) if *candidate => t.candidate.info(),
                _ => serving,
            };
            let payload = output::alert(
                self.now_ms,
                &self.pipeline.cfg.schema.key_field,
                &decoded.key,
                decoded.time_ms,
                rec.text(),
                (&info.name, &info.version),
                alerts,
                self.source(inp),
            );
            out.push(record(Dest::Alerts, payload));
        }
    }

    /// The enriched record's text: the record with its window at `slot`,
    /// its trends, alert kinds and the versions that served it.
    fn enriched(
        &self,
        rec: &Rec,
        slot: usize,
        inp: &InRecord,
        fields: &mut Vec<[f64; 3]>,
    ) -> String {
        let view = self.view;
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
            fields,
        };
        let trends: Vec<(&str, &TrendResult)> = rec
            .trends
            .iter()
            .map(|(p, _, t)| (self.rules.trend[*p].info().name.as_str(), t))
            .collect();
        let kinds: Vec<&str> = rec
            .alerts
            .iter()
            .flat_map(|(_, _, a)| a.iter().map(|a| a.kind.as_str()))
            .collect();
        let canary_plugins;
        let plugins = if rec.by_candidate == 0 {
            &self.plugins
        } else {
            canary_plugins =
                output::Enricher::plugins(&served_versions(self.rules, rec.by_candidate));
            &canary_plugins
        };
        self.pipeline.enricher.enriched(
            rec.text(),
            &window,
            &trends,
            &kinds,
            plugins,
            self.source(inp),
        )
    }

    /// The lifecycle's transitions for a live record: every anomaly rule
    /// that ran on it (the serving version, or the canary candidate that
    /// served it) raised what `rec.alerts` holds for it, or nothing.
    fn transitions(
        &self,
        rec: &Rec,
        decoded: &Decoded,
        inp: &InRecord,
        alerts: &mut Alerts,
        out: &mut Vec<OutRecord>,
    ) -> Vec<(String, &'static str)> {
        let first_bit = self.rules.transform.len() + self.rules.trend.len();
        let mut emitted: Vec<Transition> = Vec::new();
        let mut names = Vec::new();
        for (p, rule) in self.rules.anomaly.iter().enumerate() {
            let serving = rule.info();
            let by_candidate = rec.by_candidate & super::rec::bit(first_bit + p) != 0;
            let info = match self.rules.trial(&serving.name) {
                Some(t) if by_candidate => t.candidate.info(),
                _ => serving,
            };
            let raised = rec
                .alerts
                .iter()
                .find(|(q, _, _)| *q == p)
                .map_or(&[][..], |(_, _, a)| a.as_slice());
            alerts.observe(
                rec.partition,
                &decoded.key,
                decoded.time_ms,
                &serving.name,
                raised,
                &mut emitted,
            );
            for t in emitted.drain(..) {
                names.push((t.open.kind.clone(), t.status.as_str()));
                let at = output::Lifecycle {
                    processing_ms: self.now_ms,
                    key: (&self.pipeline.cfg.schema.key_field, &decoded.key),
                    event_ms: decoded.time_ms,
                    record: Some(rec.text()),
                    rule: (&serving.name, &info.version),
                    source: self.source(inp),
                };
                let key = inp
                    .key
                    .clone()
                    .unwrap_or_else(|| decoded.key.as_bytes().to_vec());
                out.push(self.alert_record(inp, key, output::transition(&at, &t)));
            }
        }
        names
    }

    /// The keys the window sweep dropped when `rec` arrived: each alert
    /// they fire is resolved, as idle. These records are `rec`'s outputs
    /// whatever becomes of `rec` itself; one that cannot be encoded is
    /// logged and left out (it has no record of its own to dead-letter).
    fn idle(
        &self,
        rec: &Rec,
        inp: &InRecord,
        alerts: &mut Alerts,
        out: &mut Vec<OutRecord>,
        tally: &mut Tally,
    ) {
        let mut emitted = Vec::new();
        for (key, clock) in &rec.swept {
            alerts.resolve_idle(rec.partition, key, &mut emitted);
            for t in emitted.drain(..) {
                let version = self
                    .rules
                    .anomaly
                    .iter()
                    .map(|r| r.info())
                    .find(|i| i.name == t.open.rule)
                    .map_or("", |i| i.version.as_str());
                let at = output::Lifecycle {
                    processing_ms: self.now_ms,
                    key: (&self.pipeline.cfg.schema.key_field, key),
                    event_ms: *clock,
                    record: None,
                    rule: (&t.open.rule, version),
                    source: self.source(inp),
                };
                // Keyed by the idle key, not by the record whose arrival
                // swept it: the alerts topic keeps the key's records on one
                // partition, in order.
                let payload = output::transition(&at, &t);
                let mut r = [self.alert_record(inp, key.as_bytes().to_vec(), payload)];
                match self.encode_and_limit(&mut r) {
                    Ok(()) => {
                        tally.alert_records += 1;
                        *tally.alerts_by_kind.entry(t.open.kind.clone()).or_default() += 1;
                        *tally.alerts_by_status.entry("resolved").or_default() += 1;
                        let [r] = r;
                        out.push(r);
                    }
                    Err(failure) => tracing::warn!(
                        key = &**key,
                        kind = t.open.kind,
                        error = failure.message,
                        "An idle key's resolved alert could not be written; left out."
                    ),
                }
            }
        }
    }

    /// An alert record with Kafka key `key`, from the record `inp`.
    fn alert_record(&self, inp: &InRecord, key: Vec<u8>, payload: String) -> OutRecord {
        OutRecord {
            dest: Dest::Alerts,
            source: (inp.partition, inp.offset),
            key: Some(key),
            payload: payload.into_bytes(),
            headers: Vec::new(),
        }
    }

    /// Encodes one record's outputs in the output format, and checks each
    /// against the producer's size limit: the failure that refuses them
    /// all, if any.
    fn encode_and_limit(&self, outputs: &mut [OutRecord]) -> Result<(), Failure> {
        let cfg = &self.pipeline.cfg;
        if let Some(avro) = &cfg.avro_output {
            for r in outputs.iter_mut() {
                r.payload = avro.encode(r.dest, &r.payload).map_err(|e| Failure {
                    reason: Reason::OutputRefused,
                    message: e.to_string(),
                    plugin: None,
                })?;
            }
        }
        let max_bytes = cfg.limits.max_message_bytes;
        match outputs.iter().find(|r| r.size() > max_bytes) {
            None => Ok(()),
            Some(big) => Err(Failure {
                reason: Reason::OutputTooLarge,
                message: format!(
                    "its {} record would be {} bytes; the producer's message.max.bytes is {max_bytes}",
                    big.dest.name(),
                    big.size()
                ),
                plugin: None,
            }),
        }
    }

    /// The dead letter of a record that failed: its bytes as consumed, and
    /// why.
    fn dead_letter(&self, rec: Rec, inp: InRecord, failure: &Failure) -> OutRecord {
        output::dead_letter(self.source(&inp), inp.key, rec.into_original(), failure)
            .fit_dead_letter(self.pipeline.cfg.limits.max_message_bytes)
    }
}

impl Tally {
    /// Counts a routed record's enriched record and alert records (with
    /// the lifecycle, the (kind, status) of each it emitted).
    fn count_outputs(&mut self, rec: &Rec, lifecycle: Option<&[(String, &'static str)]>) {
        self.enriched += 1;
        self.alerts_raised += rec.alerts.len() as u64;
        if let Some(emitted) = lifecycle {
            for (kind, status) in emitted {
                self.alert_records += 1;
                *self.alerts_by_kind.entry(kind.clone()).or_default() += 1;
                *self.alerts_by_status.entry(status).or_default() += 1;
            }
            return;
        }
        for (_, _, alerts) in &rec.alerts {
            self.alert_records += 1;
            for a in alerts {
                *self.alerts_by_kind.entry(a.kind.clone()).or_default() += 1;
            }
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
                Some(t) if by_candidate & super::rec::bit(bit) != 0 => t.candidate.info(),
                _ => r.info(),
            };
            (info.name.as_str(), info.version.as_str())
        })
        .collect()
}
