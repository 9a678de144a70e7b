//! Counters and gauges of a running streamhost, on `prometheus-client`,
//! rendered in the OpenMetrics text format for `GET /metrics`.
//!
//! Hot-path updates are per batch, not per record: the service adds a
//! batch's tally once. Plugin counters live with each version of a plugin
//! and are read at scrape time by a collector, labelled with the version.
//! Every version loaded since start-up keeps its series for the life of
//! the process: a swap adds a series and leaves the old one at its last
//! value, and a swap back continues the old series.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as Prometheus;

use crate::pipeline::Tally;
use crate::rules::registry::Registry;

/// Upper bounds (seconds) of the per-record processing-time histogram.
const BUCKETS: [f64; 12] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 1e-1,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Topic {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    version: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

pub struct Metrics {
    /// What the console shows, fed by the same calls.
    pub console: super::console::Console,
    /// The consumer has partitions assigned (kept by the consumer).
    pub assigned: Arc<AtomicBool>,
    /// Every configured plugin has loaded.
    pub plugins_loaded: AtomicBool,
    prometheus: std::sync::Mutex<Prometheus>,
    processed: Counter,
    processing: Histogram,
    consumed: Family<TopicPartition, Counter>,
    produced: Family<Topic, Counter>,
    dead: Family<ReasonLabel, Counter>,
    alerts: Family<KindLabel, Counter>,
    lag: Family<TopicPartition, Gauge>,
    window_keys: Gauge,
    window_readings: Gauge,
    /// Per worker: keys, readings and the partitions whose windows it holds.
    worker_windows: std::sync::Mutex<Vec<(usize, usize, Vec<i32>)>>,
    partition_keys: Family<TopicPartition, Gauge>,
    worker_partitions: Family<WorkerLabel, Gauge>,
    rebuild_seconds: Histogram,
    rebuilds: Family<ResultLabel, Counter>,
    records_replayed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            console: Default::default(),
            assigned: Arc::default(),
            plugins_loaded: AtomicBool::default(),
            prometheus: std::sync::Mutex::new(Prometheus::default()),
            processed: Counter::default(),
            processing: Histogram::new(BUCKETS),
            consumed: Family::default(),
            produced: Family::default(),
            dead: Family::default(),
            alerts: Family::default(),
            lag: Family::default(),
            window_keys: Gauge::default(),
            window_readings: Gauge::default(),
            worker_windows: std::sync::Mutex::default(),
            partition_keys: Family::default(),
            worker_partitions: Family::default(),
            rebuild_seconds: Histogram::new([
                0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            rebuilds: Family::default(),
            records_replayed: Counter::default(),
        };
        {
            let mut r = m.prometheus.lock().unwrap();
            r.register(
                "messages_processed",
                "Input records processed (the article's counter)",
                m.processed.clone(),
            );
            r.register(
                "message_processing_seconds",
                "Processing time per input record, from decode to outputs handed to the producer",
                m.processing.clone(),
            );
            r.register(
                "streamhost_records_consumed",
                "Records consumed, by topic and partition",
                m.consumed.clone(),
            );
            r.register(
                "streamhost_records_produced",
                "Records handed to the producer, by output topic",
                m.produced.clone(),
            );
            r.register(
                "streamhost_dead_letters",
                "Records sent to the dead-letter topic, by reason",
                m.dead.clone(),
            );
            r.register(
                "streamhost_alerts",
                "Anomalies raised, by kind",
                m.alerts.clone(),
            );
            r.register(
                "streamhost_consumer_lag_records",
                "High watermark minus the consumer's position, per assigned partition",
                m.lag.clone(),
            );
            r.register(
                "streamhost_window_keys",
                "Keys holding a sliding window",
                m.window_keys.clone(),
            );
            r.register(
                "streamhost_window_readings",
                "Readings retained across all windows",
                m.window_readings.clone(),
            );
            r.register(
                "streamhost_partition_window_keys",
                "Keys holding a window, per input partition held",
                m.partition_keys.clone(),
            );
            r.register(
                "streamhost_worker_partitions",
                "Input partitions whose windows each worker holds",
                m.worker_partitions.clone(),
            );
            r.register(
                "streamhost_rebuild_seconds",
                "Time to rebuild a partition's windows by replaying the input",
                m.rebuild_seconds.clone(),
            );
            r.register(
                "streamhost_rebuilds",
                "Partition window rebuilds, by result: complete, incomplete (the input no longer held the span needed) or failed (the replay could not be read)",
                m.rebuilds.clone(),
            );
            r.register(
                "streamhost_records_replayed",
                "Input records replayed to rebuild windows",
                m.records_replayed.clone(),
            );
        }
        m
    }
}

impl Metrics {
    /// Adds a processed batch: its tally, the records per input partition,
    /// the topic of each output, and the batch's processing time spread
    /// evenly over its records.
    pub fn record_batch<'a>(
        &self,
        tally: &Tally,
        input_topic: &str,
        consumed: &[(i32, u64)],
        produced: impl Iterator<Item = &'a str>,
        seconds: f64,
    ) {
        self.console.batch(tally, consumed);
        self.processed.inc_by(tally.input);
        if tally.input > 0 {
            let per_record = seconds / tally.input as f64;
            for _ in 0..tally.input {
                self.processing.observe(per_record);
            }
        }
        for &(partition, n) in consumed {
            self.consumed
                .get_or_create(&TopicPartition {
                    topic: input_topic.to_string(),
                    partition,
                })
                .inc_by(n);
        }
        let mut per_topic: std::collections::BTreeMap<&str, u64> =
            std::collections::BTreeMap::new();
        for topic in produced {
            *per_topic.entry(topic).or_default() += 1;
        }
        for (topic, n) in per_topic {
            self.produced
                .get_or_create(&Topic {
                    topic: topic.to_string(),
                })
                .inc_by(n);
        }
        for (reason, n) in &tally.dead_by_reason {
            self.dead
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(*n);
        }
        for (kind, n) in &tally.alerts_by_kind {
            self.alerts
                .get_or_create(&KindLabel { kind: kind.clone() })
                .inc_by(*n);
        }
    }

    /// Sets one worker's window gauges: its totals, and keys per partition.
    pub fn set_windows(
        &self,
        topic: &str,
        worker: usize,
        keys: usize,
        readings: usize,
        partitions: &[(i32, usize)],
    ) {
        let mut all = self.worker_windows.lock().unwrap();
        if all.len() <= worker {
            all.resize_with(worker + 1, Default::default);
        }
        let label = |partition| TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        for p in &all[worker].2 {
            if !partitions.iter().any(|(q, _)| q == p) {
                self.partition_keys.remove(&label(*p));
            }
        }
        for &(p, n) in partitions {
            self.partition_keys.get_or_create(&label(p)).set(n as i64);
        }
        all[worker] = (keys, readings, partitions.iter().map(|(p, _)| *p).collect());
        self.console.worker(worker, all[worker].2.clone());
        self.window_keys.set(all.iter().map(|w| w.0 as i64).sum());
        self.window_readings
            .set(all.iter().map(|w| w.1 as i64).sum());
        self.worker_partitions
            .get_or_create(&WorkerLabel {
                worker: worker as u32,
            })
            .set(partitions.len() as i64);
    }

    /// Counts a rebuild of a partition's windows.
    pub fn record_rebuild(&self, result: &'static str, seconds: f64, records: u64) {
        self.rebuild_seconds.observe(seconds);
        self.rebuilds.get_or_create(&ResultLabel { result }).inc();
        self.records_replayed.inc_by(records);
    }

    /// Sets the lag of the assigned partitions: partitions no longer
    /// assigned go, a partition whose lag is unknown now keeps its last value.
    pub fn set_lag(&self, topic: &str, lag: &[(i32, Option<i64>)], previously: &mut Vec<i32>) {
        self.console.lag(lag);
        for p in previously
            .iter()
            .filter(|p| !lag.iter().any(|(q, _)| q == *p))
        {
            self.lag.remove(&TopicPartition {
                topic: topic.to_string(),
                partition: *p,
            });
        }
        for &(partition, v) in lag {
            if let Some(v) = v {
                self.lag
                    .get_or_create(&TopicPartition {
                        topic: topic.to_string(),
                        partition,
                    })
                    .set(v);
            }
        }
        *previously = lag.iter().map(|(p, _)| *p).collect();
    }

    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed) && self.plugins_loaded.load(Ordering::Relaxed)
    }

    /// Adds the plugin series, read from `registry` at each scrape.
    pub fn watch_plugins(&self, registry: Arc<Registry>) {
        self.prometheus
            .lock()
            .unwrap()
            .register_collector(Box::new(PluginCollector(registry)));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.prometheus.lock().unwrap())
            .expect("writing to a String");
        out
    }
}

/// Plugin calls, failures and time, and reloads, read from the registry.
struct PluginCollector(Arc<Registry>);

impl std::fmt::Debug for PluginCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginCollector")
    }
}

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Two components may carry the same version text: one series each
        // name and version, summed.
        let mut plugins: Vec<(PluginLabels, crate::rules::registry::VersionStatus)> = Vec::new();
        for v in self.0.versions() {
            let labels = PluginLabels {
                plugin: v.name.clone(),
                version: v.version.clone(),
                kind: v.kind.to_string(),
            };
            match plugins.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, sum)) => {
                    sum.calls += v.calls;
                    sum.failures += v.failures;
                    sum.call_seconds += v.call_seconds;
                }
                None => plugins.push((labels, v)),
            }
        }
        let labels = |p: &(PluginLabels, _)| p.0.clone();
        let plugins: Vec<(PluginLabels, crate::rules::registry::VersionStatus)> = plugins;
        let mut family = encoder.encode_descriptor(
            "streamhost_plugin_calls",
            "Plugin calls (one per batch), by plugin and version",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for p in &plugins {
            ConstCounter::new(p.1.calls).encode(family.encode_family(&labels(p))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "streamhost_plugin_failures",
            "Plugin calls that failed (trap, timeout, out of memory, contract)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for p in &plugins {
            ConstCounter::new(p.1.failures).encode(family.encode_family(&labels(p))?)?;
        }
        // Time in plugin calls as a histogram without finite buckets: its
        // `_sum` and `_count` are what dashboards divide.
        let mut family = encoder.encode_descriptor(
            "streamhost_plugin_call_seconds",
            "Time spent in plugin calls",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for p in &plugins {
            family
                .encode_family(&labels(p))?
                .encode_histogram::<NoLabelSet>(
                    p.1.call_seconds,
                    p.1.calls,
                    &[(f64::MAX, p.1.calls)],
                    None,
                )?;
        }
        let mut family = encoder.encode_descriptor(
            "streamhost_plugin_reloads",
            "Plugin loads after start-up (file change, SIGHUP, admin API), by result",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, n) in [
            ("ok", &self.0.reloads_ok),
            ("failed", &self.0.reloads_failed),
        ] {
            ConstCounter::new(n.load(Ordering::Relaxed))
                .encode(family.encode_family(&ResultLabel { result })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "streamhost_plugin_rollbacks",
            "Candidates on trial rolled back, automatically or by hand",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let automatic = self.0.automatic_rollbacks.load(Ordering::Relaxed);
        let all = self.0.rollbacks.load(Ordering::Relaxed);
        for (result, n) in [
            ("automatic", automatic),
            ("by-hand", all.saturating_sub(automatic)),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&ResultLabel { result })?)?;
        }
        // Trials in progress: one series per plugin and candidate version.
        let trials: Vec<(TrialLabels, crate::rules::registry::TrialStatus)> = self
            .0
            .list()
            .into_iter()
            .filter_map(|p| {
                let t = p.trial?;
                Some((
                    TrialLabels {
                        plugin: p.info.name.clone(),
                        candidate: t.version.clone(),
                        mode: match t.mode {
                            crate::rules::trial::Mode::Shadow => "shadow",
                            crate::rules::trial::Mode::Canary { .. } => "canary",
                        },
                    },
                    t,
                ))
            })
            .collect();
        let counters: [(&str, &str, fn(&crate::rules::registry::TrialStatus) -> u64); 5] = [
            (
                "streamhost_trial_records",
                "Records a candidate on trial was called on",
                |t| t.candidate.records,
            ),
            (
                "streamhost_trial_failed_records",
                "Records in a candidate's failed calls, or that it returned an error for",
                |t| t.candidate.failed_records + t.candidate.errors,
            ),
            (
                "streamhost_trial_traps",
                "Calls of a candidate on trial that trapped",
                |t| t.candidate.traps,
            ),
            (
                "streamhost_trial_compared_records",
                "Shadow: records both versions returned a result for",
                |t| t.compared,
            ),
            (
                "streamhost_trial_differing_records",
                "Shadow: records whose results differ between the versions",
                |t| t.differing,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (labels, t) in &trials {
                ConstCounter::new(value(t)).encode(family.encode_family(labels)?)?;
            }
        }
        // p99 call latency of both sides of each trial, over their last
        // calls: what automatic rollback compares.
        let mut family = encoder.encode_descriptor(
            "streamhost_trial_p99_call_seconds",
            "p99 call latency of each side of a trial, over its last calls",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, t) in &trials {
            for (side, status) in [("serving", &t.serving), ("candidate", &t.candidate)] {
                let labels = TrialSideLabels {
                    plugin: labels.plugin.clone(),
                    candidate: labels.candidate.clone(),
                    mode: labels.mode,
                    side,
                };
                prometheus_client::metrics::gauge::ConstGauge::new(status.p99_call_ms / 1e3)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TrialSideLabels {
    plugin: String,
    candidate: String,
    mode: &'static str,
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TrialLabels {
    plugin: String,
    candidate: String,
    mode: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_records() {
        let m = Metrics::default();
        let tally = Tally {
            input: 4,
            ..Tally::default()
        };
        m.record_batch(&tally, "in", &[(0, 4)], ["out"; 4].into_iter(), 4.0e-6);
        let text = m.render();
        assert!(text.contains("messages_processed_total 4\n"), "{text}");
        assert!(
            text.contains("message_processing_seconds_bucket{le=\"0.000001\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("message_processing_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(
            text.contains("streamhost_records_consumed_total{topic=\"in\",partition=\"0\"} 4\n")
        );
        assert!(text.contains("streamhost_records_produced_total{topic=\"out\"} 4\n"));
    }
}
