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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry as Prometheus;

use crate::kafka::table::{TableHandle, TableStats};
use crate::pipeline::Tally;
use crate::rules::registry::{Registry, TrialStatus, VersionStatus};

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

/// The counters and gauges of a running streamhost.
pub struct Metrics {
    /// What the console shows, fed by the same calls.
    pub console: super::console::Console,
    /// The alert lifecycle's: alerts firing now, records by status.
    pub firing: super::firing::Firing,
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
    records_rebuilt: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            console: Default::default(),
            firing: Default::default(),
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
            records_rebuilt: Counter::default(),
        };
        m.register();
        m
    }
}

impl Metrics {
    /// Registers every series but the plugins' ([`Metrics::watch_plugins`]).
    fn register(&self) {
        let mut r = self.prometheus.lock().unwrap();
        self.firing.register(&mut r);
        r.register(
            "messages_processed",
            "Input records processed (the article's counter)",
            self.processed.clone(),
        );
        r.register(
            "message_processing_seconds",
            "Processing time per input record, from decode to outputs handed to the producer",
            self.processing.clone(),
        );
        r.register(
            "streamhost_records_consumed",
            "Records consumed, by topic and partition",
            self.consumed.clone(),
        );
        r.register(
            "streamhost_records_produced",
            "Records handed to the producer, by output topic",
            self.produced.clone(),
        );
        r.register(
            "streamhost_dead_letters",
            "Records sent to the dead-letter topic, by reason",
            self.dead.clone(),
        );
        r.register(
            "streamhost_alerts",
            "Anomalies raised, by kind",
            self.alerts.clone(),
        );
        r.register(
            "streamhost_consumer_lag_records",
            "High watermark minus the consumer's position, per assigned partition",
            self.lag.clone(),
        );
        r.register(
            "streamhost_window_keys",
            "Keys holding a sliding window",
            self.window_keys.clone(),
        );
        r.register(
            "streamhost_window_readings",
            "Readings retained across all windows",
            self.window_readings.clone(),
        );
        r.register(
            "streamhost_partition_window_keys",
            "Keys holding a window, per input partition held",
            self.partition_keys.clone(),
        );
        r.register(
            "streamhost_worker_partitions",
            "Input partitions whose windows each worker holds",
            self.worker_partitions.clone(),
        );
        r.register(
            "streamhost_rebuild_seconds",
            "Time to rebuild a partition's windows by reading the input again",
            self.rebuild_seconds.clone(),
        );
        r.register(
                "streamhost_rebuilds",
                "Partition window rebuilds, by result: complete, incomplete (the input no longer held the span needed) or failed (the input could not be read)",
                self.rebuilds.clone(),
            );
        r.register(
            "streamhost_records_replayed",
            "Input records read again to rebuild windows",
            self.records_rebuilt.clone(),
        );
    }

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
        self.firing.count(&tally.alerts_by_status);
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
        self.records_rebuilt.inc_by(records);
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

    /// Whether streamhost is ready (`/readyz`): partitions assigned and
    /// every configured plugin loaded.
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

    /// Adds the reference tables' series, read from `tables` at each scrape.
    pub fn watch_tables(&self, tables: Vec<TableHandle>) {
        self.prometheus
            .lock()
            .unwrap()
            .register_collector(Box::new(TableCollector(tables)));
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

/// A counter family with a series per item: its name, help, and the
/// value an item gives.
type CounterOf<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The counters of each plugin version.
const VERSION_COUNTERS: [CounterOf<VersionStatus>; 2] = [
    (
        "streamhost_plugin_calls",
        "Plugin calls (one per batch), by plugin and version",
        |v| v.calls,
    ),
    (
        "streamhost_plugin_failures",
        "Plugin calls that failed (trap, timeout, out of memory, contract)",
        |v| v.failures,
    ),
];

/// The counters of each trial in progress.
const TRIAL_COUNTERS: [CounterOf<TrialStatus>; 5] = [
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

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let registry = &self.0;
        let e = &mut encoder;
        let versions = self.versions();
        counters(e, &VERSION_COUNTERS, &versions)?;
        family(
            e,
            "streamhost_plugin_call_seconds",
            "Time spent in plugin calls",
            versions.iter().map(|(l, v)| {
                let seconds = CallSeconds {
                    sum: v.call_seconds,
                    count: v.calls,
                };
                (l.clone(), seconds)
            }),
        )?;
        let count = |result, n: u64| (ResultLabel { result }, ConstCounter::new(n));
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        family(
            e,
            "streamhost_plugin_reloads",
            "Plugin loads after start-up (file change, SIGHUP, admin API), by result",
            [
                count("ok", load(&registry.reloads_ok)),
                count("failed", load(&registry.reloads_failed)),
            ],
        )?;
        let automatic = load(&registry.automatic_rollbacks);
        let all = load(&registry.rollbacks);
        family(
            e,
            "streamhost_plugin_rollbacks",
            "Candidates on trial rolled back, automatically or by hand",
            [
                count("automatic", automatic),
                count("by-hand", all.saturating_sub(automatic)),
            ],
        )?;
        let trials = self.trials();
        counters(e, &TRIAL_COUNTERS, &trials)?;
        // p99 call latency of both sides of each trial, over their last
        // calls: what automatic rollback compares.
        family(
            e,
            "streamhost_trial_p99_call_seconds",
            "p99 call latency of each side of a trial, over its last calls",
            trials.iter().flat_map(|(labels, t)| {
                [("serving", &t.serving), ("candidate", &t.candidate)].map(|(side, status)| {
                    let labels = TrialSideLabels {
                        plugin: labels.plugin.clone(),
                        candidate: labels.candidate.clone(),
                        mode: labels.mode,
                        side,
                    };
                    (labels, ConstGauge::new(status.p99_call_ms / 1e3))
                })
            }),
        )
    }
}

impl PluginCollector {
    /// Every version loaded since start-up. Two components may carry the
    /// same version text: one series each name and version, summed.
    fn versions(&self) -> Vec<(PluginLabels, VersionStatus)> {
        let mut versions: Vec<(PluginLabels, VersionStatus)> = Vec::new();
        for v in self.0.versions() {
            let labels = PluginLabels {
                plugin: v.name.clone(),
                version: v.version.clone(),
                kind: v.kind.to_string(),
            };
            match versions.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, sum)) => {
                    sum.calls += v.calls;
                    sum.failures += v.failures;
                    sum.call_seconds += v.call_seconds;
                }
                None => versions.push((labels, v)),
            }
        }
        versions
    }

    /// Trials in progress: one series per plugin and candidate version.
    fn trials(&self) -> Vec<(TrialLabels, TrialStatus)> {
        self.0
            .list()
            .into_iter()
            .filter_map(|p| {
                let t = p.trial?;
                let mode = match t.mode {
                    crate::rules::trial::Mode::Shadow => "shadow",
                    crate::rules::trial::Mode::Canary { .. } => "canary",
                };
                let labels = TrialLabels {
                    plugin: p.info.name.clone(),
                    candidate: t.version.clone(),
                    mode,
                };
                Some((labels, t))
            })
            .collect()
    }
}

/// Encodes one metric family: its descriptor, then one series per labels,
/// in the order given.
fn family<S: EncodeLabelSet, M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (S, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes each counter family of `table`, with a series per labelled item
/// of `items`.
fn counters<S: EncodeLabelSet + Clone, T>(
    encoder: &mut DescriptorEncoder,
    table: &[CounterOf<T>],
    items: &[(S, T)],
) -> Result<(), std::fmt::Error> {
    for (name, help, value) in table {
        let series = items
            .iter()
            .map(|(labels, item)| (labels.clone(), ConstCounter::new(value(item))));
        family(encoder, name, help, series)?;
    }
    Ok(())
}

/// Time in a plugin's calls, as a histogram without finite buckets: its
/// `_sum` and `_count` are what dashboards divide.
struct CallSeconds {
    sum: f64,
    count: u64,
}

impl TypedMetric for CallSeconds {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CallSeconds {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.sum,
            self.count,
            &[(f64::MAX, self.count)],
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Each reference table's rows, lag, age and refused records, read from
/// its loader.
#[derive(Debug)]
struct TableCollector(Vec<TableHandle>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

/// A gauge family with a series per item that has a value: its name, help,
/// and the value an item gives (`None`: no series yet).
type GaugeOf<T> = (&'static str, &'static str, fn(&T) -> Option<f64>);

/// The gauges of each reference table.
const TABLE_GAUGES: [GaugeOf<TableStats>; 4] = [
    (
        "streamhost_table_rows",
        "Rows a reference table holds",
        |s| Some(s.rows as f64),
    ),
    (
        "streamhost_table_lag_records",
        "Records of a reference table's topic not applied yet: high watermark minus position, summed over its partitions",
        |s| s.lag.map(|l| l as f64),
    ),
    (
        "streamhost_table_age_seconds",
        "Seconds since the Kafka timestamp of the newest record applied to a reference table",
        |s| s.age.map(|a| a.as_secs_f64()),
    ),
    (
        "streamhost_table_ready",
        "1 once a reference table holds its topic up to the end it had at start",
        |s| Some(f64::from(u8::from(s.ready))),
    ),
];

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats: Vec<_> = (self.0.iter())
            .map(|t| {
                (
                    TableLabel {
                        table: t.name().to_string(),
                    },
                    t.stats(),
                )
            })
            .collect();
        for (name, help, value) in TABLE_GAUGES {
            let series =
                (stats.iter()).filter_map(|(l, s)| Some((l.clone(), ConstGauge::new(value(s)?))));
            family(&mut encoder, name, help, series)?;
        }
        counters(
            &mut encoder,
            &[(
                "streamhost_table_refused_records",
                "Records of a reference table's topic refused as rows: no key, or a value that is not a JSON object",
                |s: &TableStats| s.refused,
            )],
            &stats,
        )
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

    #[test]
    fn reference_tables_show_rows_readiness_and_refused_records() {
        use crate::table::Table;
        let mut table = Table::new();
        table.apply(Some(b"s1"), Some(br#"{"max":40}"#)).unwrap();
        table.apply(Some(b"s2"), Some(b"nope")).unwrap_err();
        let source = "thresholds=sensor-thresholds".parse().unwrap();
        let m = Metrics::default();
        m.watch_tables(vec![TableHandle::fixed(source, table)]);
        let text = m.render();
        for line in [
            "streamhost_table_rows{table=\"thresholds\"} 1.0\n",
            "streamhost_table_lag_records{table=\"thresholds\"} 0.0\n",
            "streamhost_table_ready{table=\"thresholds\"} 1.0\n",
            "streamhost_table_refused_records_total{table=\"thresholds\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // No record applied had a timestamp: no age yet.
        assert!(!text.contains("streamhost_table_age_seconds{"), "{text}");
    }
}
