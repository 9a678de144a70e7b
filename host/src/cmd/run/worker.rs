//! One worker: the windows of its partitions, processed in order, batch
//! by batch; before a partition whose consumption (re)started somewhere its
//! windows do not end, it rebuilds them (`crate::rebuild`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::Shared;
use crate::config::Settings;
use rdkafka::producer::DeliveryFuture;

use crate::kafka::{
    self, committer::Pending, consumer::Held, span::PartitionReader, state::StateTopic,
};
use crate::lifecycle::Snapshot;
use crate::ops::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineConfig, Tally};
use crate::rebuild::Source;
use crate::rebuild::{Rebuilt, rebuild};
use crate::record::{Dest, InRecord};
use crate::rules::RuleSet;

/// Records of a partition after which its firing alerts are written again,
/// however recently they were: a restore processes again at most about
/// this many records after a catch-up (20,000 took 0.12 s through the
/// article's three rules).
const STATE_EVERY_RECORDS: i64 = 20_000;

/// A sub-batch for one worker: records of its partitions, in offset order
/// per partition, and the partitions held when the batch was cut.
pub(super) struct Work {
    pub(super) records: Vec<InRecord>,
    pub(super) held: Arc<Held>,
}

/// One worker: the windows of its partitions, processed in order.
pub struct Worker {
    id: usize,
    pipeline: Pipeline,
    reader: PartitionReader,
    margin_ms: i64,
    /// Per partition whose windows are held: the generation they were fed
    /// in, and the offset after the last record fed.
    fed: HashMap<i32, (u64, i64)>,
    version: u64,
    /// Per partition, when its firing alerts were last written to the
    /// state topic.
    written: HashMap<i32, (Instant, i64)>,
    /// Whether firing alerts came or went other than by a batch's alert
    /// records (a partition revoked or taken up) since last reported.
    firing_changed: bool,
    pub(super) tally: Tally,
    pub(super) rebuilds: Vec<Rebuilt>,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        settings: &Settings,
        config: PipelineConfig,
    ) -> rdkafka::error::KafkaResult<Worker> {
        Ok(Worker {
            id,
            pipeline: Pipeline::new(config),
            reader: PartitionReader::new(settings)?,
            margin_ms: settings.rebuild_margin.as_millis() as i64,
            fed: HashMap::new(),
            version: 0,
            written: HashMap::new(),
            firing_changed: false,
            tally: Tally::default(),
            rebuilds: Vec::new(),
        })
    }

    pub(super) fn run(&mut self, work: Work, shared: &Shared) {
        if shared.stopped().is_some() {
            return;
        }
        let started = Instant::now();
        let settings = &shared.settings;
        // The rules as of this batch's start: a swap lands at a batch boundary.
        let rules = shared.registry.current();
        self.forget_revoked(&work.held);
        self.rebuild_restarted(&work, &rules, shared);

        let offsets = kafka::batch_offsets(&work.records);
        let records = work.records.len() as u64;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let output = self.pipeline.process(&rules, work.records, now_ms);
        let deliveries = match shared.sink.send(&output.records) {
            Ok(d) => d,
            Err(e) => return shared.fail(format!("producing outputs: {e}")),
        };
        let state = match self.write_state(&offsets, shared, now_ms) {
            Ok(d) => d,
            Err(e) => return shared.fail(format!("writing the alert state: {e}")),
        };
        for (&p, &(next, _)) in &offsets {
            let generation = work.held.generations.get(&p).copied().unwrap_or(0);
            self.fed.insert(p, (generation, next));
        }
        let next_offsets = offsets.iter().map(|(p, (next, _))| (*p, *next)).collect();
        shared.committer.submit(
            self.id,
            Pending {
                deliveries,
                next_offsets,
                records,
                state,
            },
        );

        let consumed: Vec<(i32, u64)> = offsets.iter().map(|(p, (_, n))| (*p, *n)).collect();
        let produced = output.records.iter().map(|r| shared.sink.topic(r.dest));
        let metrics = &shared.metrics;
        metrics.record_batch(
            &output.tally,
            &settings.input_topic,
            &consumed,
            produced,
            started.elapsed().as_secs_f64(),
        );
        self.report_windows(metrics, &settings.input_topic);
        if shared.state.is_some() && (output.tally.alert_records > 0 || self.firing_changed) {
            metrics.firing.report(self.id, self.pipeline.alerts());
            self.firing_changed = false;
        }
        if output.tally.alert_records > 0 {
            metrics.console.alerts(
                output
                    .records
                    .iter()
                    .filter(|r| r.dest == Dest::Alerts)
                    .map(|r| r.payload.as_slice()),
            );
        }
        self.tally.add(&output.tally);
    }

    /// Forgets the windows of partitions no longer held.
    fn forget_revoked(&mut self, held: &Held) {
        if held.version == self.version {
            return;
        }
        self.version = held.version;
        let gone: Vec<i32> = self
            .fed
            .keys()
            .filter(|p| !held.generations.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            self.fed.remove(&p);
            self.written.remove(&p);
            self.pipeline.drop_partition(p);
            self.pipeline.alerts_mut().drop_partition(p);
            self.firing_changed = true;
        }
    }

    /// Rebuilds the windows of every partition of the batch whose records
    /// do not follow on from those its windows were fed, before any of them
    /// is processed.
    fn rebuild_restarted(&mut self, work: &Work, rules: &RuleSet, shared: &Shared) {
        let metrics = &shared.metrics;
        // The windows to rebuild are those the rules declare now; a longer
        // one than they hold empties them, and every partition is rebuilt.
        if self.pipeline.declare(rules) {
            self.fed.clear();
        }
        let mut firsts: Vec<&InRecord> = Vec::new();
        for r in &work.records {
            if !firsts.iter().any(|f| f.partition == r.partition) {
                firsts.push(r);
            }
        }
        for first in firsts {
            let p = first.partition;
            let generation = work.held.generations.get(&p).copied().unwrap_or(0);
            match self.fed.get(&p) {
                // Consumed without a break since the windows were fed.
                Some(&(g, _)) if g == generation => continue,
                // Given back and resumed right where this worker stopped.
                Some(&(_, next)) if next == first.offset => continue,
                _ => {}
            }
            let reference_ms = first
                .timestamp
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            // With the alert lifecycle, the windows are rebuilt up to the
            // newest alert state at or before the resume position, and the
            // records between the two processed again.
            let snapshot = shared
                .state
                .as_ref()
                .and_then(|state| self.alert_snapshot(state, p, first.offset));
            let resume = snapshot.as_ref().map_or(first.offset, |s| s.offset);
            let result = rebuild(
                &self.reader,
                &mut self.pipeline,
                &rules.transform,
                p,
                resume,
                reference_ms,
                self.margin_ms,
            );
            let rebuilt = result.is_ok();
            match result {
                Ok(done) => {
                    let outcome = if done.complete {
                        "complete"
                    } else {
                        "incomplete"
                    };
                    metrics.record_rebuild(outcome, done.seconds, done.records);
                    if done.records == 0 && done.complete {
                        tracing::debug!(
                            worker = self.id,
                            partition = p,
                            "Nothing before the resume position: the partition's windows start empty."
                        );
                    } else if done.complete {
                        tracing::info!(
                            worker = self.id,
                            partition = p,
                            from = done.from,
                            to = done.to,
                            records = done.records,
                            keys = self.pipeline.windows().partition_keys(p),
                            passes = done.passes,
                            seconds = done.seconds,
                            "Rebuilt the partition's windows."
                        );
                    } else {
                        tracing::warn!(
                            worker = self.id,
                            partition = p,
                            from = done.from,
                            to = done.to,
                            records = done.records,
                            "The input no longer holds the span the partition's windows need (retention deleted it); rebuilt from the oldest record held, so windows may be short until a window length has passed."
                        );
                    }
                    self.rebuilds.push(done);
                }
                Err(error) => {
                    metrics.record_rebuild("failed", 0.0, 0);
                    self.pipeline.drop_partition(p);
                    tracing::warn!(worker = self.id, partition = p, %error, "Could not read the input again to rebuild the partition's windows; going on with empty windows.");
                }
            }
            if shared.state.is_some() {
                self.take_up_alerts(p, snapshot.filter(|_| rebuilt), first.offset, rules);
            }
            self.fed.insert(p, (generation, first.offset));
        }
    }

    /// Writes the firing alerts of the batch's partitions whose last
    /// snapshot is `--state-interval` old or `STATE_EVERY_RECORDS` behind
    /// (or that have none yet), as of the batch's end; their deliveries,
    /// for the committer to await.
    fn write_state(
        &mut self,
        offsets: &BTreeMap<i32, (i64, u64)>,
        shared: &Shared,
        now_ms: i64,
    ) -> rdkafka::error::KafkaResult<Vec<DeliveryFuture>> {
        let Some(state) = &shared.state else {
            return Ok(Vec::new());
        };
        let interval = shared.settings.state_interval;
        let mut records = Vec::new();
        for (&p, &(next, _)) in offsets {
            let recent = |&(t, at): &(Instant, i64)| {
                t.elapsed() < interval && next - at < STATE_EVERY_RECORDS
            };
            if self.written.get(&p).is_some_and(recent) {
                continue;
            }
            self.written.insert(p, (Instant::now(), next));
            let snapshot = self.pipeline.alerts().snapshot(p, next);
            records.extend(state.records(snapshot, now_ms));
        }
        shared.sink.send_state(&state.name, &records)
    }

    /// The newest alert state of `partition` at or before `resume`, if the
    /// state topic holds one that can be read.
    fn alert_snapshot(&self, state: &StateTopic, partition: i32, resume: i64) -> Option<Snapshot> {
        match state.newest(&self.reader, partition, resume) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(worker = self.id, partition, %error, topic = state.name, "Could not read the alert state topic; the partition's alerts start with none firing.");
                None
            }
        }
    }

    /// Takes up `partition`'s firing alerts: those of `snapshot`, then the
    /// records from its offset to `resume` processed again (outputs
    /// discarded), after the windows were rebuilt up to the snapshot.
    fn take_up_alerts(
        &mut self,
        partition: i32,
        snapshot: Option<Snapshot>,
        resume: i64,
        rules: &RuleSet,
    ) {
        self.pipeline.alerts_mut().drop_partition(partition);
        let Some(snapshot) = snapshot else {
            tracing::info!(
                worker = self.id,
                partition,
                "No alert state at or before the resume position: the partition's alerts start with none firing."
            );
            return;
        };
        let from = snapshot.offset;
        self.pipeline.alerts_mut().restore(snapshot);
        self.firing_changed = true;
        let started = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let pipeline = &mut self.pipeline;
        let read = self
            .reader
            .read(partition, from, resume, 4096, &mut |chunk| {
                pipeline.replay(rules, chunk, now_ms);
            });
        let firing = self
            .pipeline
            .alerts()
            .firing()
            .filter(|(p, _, _)| *p == partition)
            .count();
        match read {
            Ok(records) => tracing::info!(
                worker = self.id,
                partition,
                snapshot = from,
                replayed = records,
                firing,
                seconds = started.elapsed().as_secs_f64(),
                "Took up the partition's firing alerts."
            ),
            Err(error) => {
                // The windows are then short of the records not replayed:
                // better to start them, and the alerts, from nothing.
                self.pipeline.drop_partition(partition);
                self.pipeline.alerts_mut().drop_partition(partition);
                tracing::warn!(worker = self.id, partition, %error, "Could not read the input again after the alert state; the partition's windows and alerts start empty.");
            }
        }
    }

    fn report_windows(&self, metrics: &Metrics, topic: &str) {
        let w = self.pipeline.windows();
        let partitions: Vec<(i32, usize)> = w.partitions().collect();
        metrics.set_windows(topic, self.id, w.keys(), w.readings(), &partitions);
    }
}

impl Worker {
    /// Answers the key inspector's questions waiting (`super::keys`), from
    /// the windows and alerts this worker owns: called between batches.
    pub(super) fn answer(
        &self,
        asks: &std::sync::mpsc::Receiver<super::keys::Ask>,
        shared: &Shared,
    ) {
        while let Ok(ask) = asks.try_recv() {
            let rules = shared.registry.current();
            let found = self.pipeline.inspect(&rules, &ask.key, ask.readings);
            let tables = if ask.tables {
                self.pipeline.table_rows(&ask.key)
            } else {
                Vec::new()
            };
            // The question may have timed out meanwhile.
            let _ = ask.reply.send(super::keys::Answer {
                worker: self.id,
                found,
                tables,
            });
        }
    }
}
