//! Counters and gauges of a running streamhost, rendered in the Prometheus
//! text format for `GET /metrics`.
//!
//! Hot-path updates are per batch, not per record: the service adds a
//! batch's tally once. Plugin counters live in each loaded plugin and are
//! read at scrape time, labelled with the plugin's version, so a swap shows
//! up as a new series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::pipeline::Tally;
use crate::registry::Registry;

/// Upper bounds (seconds) of the per-record processing-time histogram.
const BUCKETS: [f64; 12] = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 1e-1];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// The consumer has partitions assigned.
    pub assigned: AtomicBool,
    /// Every configured plugin has loaded.
    pub plugins_loaded: AtomicBool,
    processed: AtomicU64,
    processing: Mutex<Histogram>,
    consumed: Mutex<BTreeMap<(String, i32), u64>>,
    produced: Mutex<BTreeMap<String, u64>>,
    dead: Mutex<BTreeMap<&'static str, u64>>,
    alerts: Mutex<BTreeMap<String, u64>>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    window_keys: AtomicU64,
    window_readings: AtomicU64,
}

impl Metrics {
    /// Adds a processed batch: its tally, the records per input partition,
    /// the outputs per topic, and the batch's processing time spread evenly
    /// over its records.
    pub fn record_batch(
        &self,
        tally: &Tally,
        consumed: &[(String, i32, u64)],
        produced: &[(String, u64)],
        seconds: f64,
    ) {
        self.processed.fetch_add(tally.input, Ordering::Relaxed);
        if tally.input > 0 {
            let per_record = seconds / tally.input as f64;
            let mut h = self.processing.lock().unwrap();
            if let Some(b) = BUCKETS.iter().position(|&le| per_record <= le) {
                h.counts[b] += tally.input;
            }
            h.count += tally.input;
            h.sum += seconds;
        }
        let mut c = self.consumed.lock().unwrap();
        for (topic, partition, n) in consumed {
            *c.entry((topic.clone(), *partition)).or_default() += n;
        }
        let mut p = self.produced.lock().unwrap();
        for (topic, n) in produced {
            *p.entry(topic.clone()).or_default() += n;
        }
        let mut d = self.dead.lock().unwrap();
        for (reason, n) in &tally.dead_by_reason {
            *d.entry(reason.as_str()).or_default() += n;
        }
        let mut a = self.alerts.lock().unwrap();
        for (kind, n) in &tally.alerts_by_kind {
            *a.entry(kind.clone()).or_default() += n;
        }
    }

    pub fn set_windows(&self, keys: usize, readings: usize) {
        self.window_keys.store(keys as u64, Ordering::Relaxed);
        self.window_readings.store(readings as u64, Ordering::Relaxed);
    }

    /// Sets the lag of the assigned partitions: partitions no longer
    /// assigned go, a partition whose lag is unknown now keeps its last value.
    pub fn set_lag(&self, topic: &str, lag: &[(i32, Option<i64>)]) {
        let mut l = self.lag.lock().unwrap();
        l.retain(|(t, p), _| t != topic || lag.iter().any(|(q, _)| q == p));
        for &(p, v) in lag {
            if let Some(v) = v {
                l.insert((topic.to_string(), p), v);
            }
        }
    }

    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed) && self.plugins_loaded.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, registry: Option<&Registry>) -> String {
        let mut o = String::with_capacity(4096);
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(&mut o, "messages_processed_total", "counter", "Input records processed (the article's counter).");
        let _ = writeln!(o, "messages_processed_total {}", self.processed.load(Ordering::Relaxed));

        head(&mut o, "message_processing_seconds", "histogram", "Processing time per input record, from decode to outputs handed to the producer.");
        {
            let h = self.processing.lock().unwrap();
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(o, "message_processing_seconds_bucket{{le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(o, "message_processing_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(o, "message_processing_seconds_sum {}", h.sum);
            let _ = writeln!(o, "message_processing_seconds_count {}", h.count);
        }

        head(&mut o, "streamhost_records_consumed_total", "counter", "Records consumed, by topic and partition.");
        for ((t, p), n) in self.consumed.lock().unwrap().iter() {
            let _ = writeln!(o, "streamhost_records_consumed_total{{topic=\"{}\",partition=\"{p}\"}} {n}", escape(t));
        }
        head(&mut o, "streamhost_records_produced_total", "counter", "Records handed to the producer, by output topic.");
        for (t, n) in self.produced.lock().unwrap().iter() {
            let _ = writeln!(o, "streamhost_records_produced_total{{topic=\"{}\"}} {n}", escape(t));
        }
        head(&mut o, "streamhost_dead_letters_total", "counter", "Records sent to the dead-letter topic, by reason.");
        for (r, n) in self.dead.lock().unwrap().iter() {
            let _ = writeln!(o, "streamhost_dead_letters_total{{reason=\"{r}\"}} {n}");
        }
        head(&mut o, "streamhost_alerts_total", "counter", "Anomalies raised, by kind.");
        for (k, n) in self.alerts.lock().unwrap().iter() {
            let _ = writeln!(o, "streamhost_alerts_total{{kind=\"{}\"}} {n}", escape(k));
        }
        head(&mut o, "streamhost_consumer_lag_records", "gauge", "High watermark minus the consumer's position, per assigned partition.");
        for ((t, p), n) in self.lag.lock().unwrap().iter() {
            let _ = writeln!(o, "streamhost_consumer_lag_records{{topic=\"{}\",partition=\"{p}\"}} {n}", escape(t));
        }
        head(&mut o, "streamhost_window_keys", "gauge", "Keys holding a sliding window.");
        let _ = writeln!(o, "streamhost_window_keys {}", self.window_keys.load(Ordering::Relaxed));
        head(&mut o, "streamhost_window_readings", "gauge", "Readings retained across all windows.");
        let _ = writeln!(o, "streamhost_window_readings {}", self.window_readings.load(Ordering::Relaxed));

        if let Some(registry) = registry {
            let plugins = registry.list();
            head(&mut o, "streamhost_plugin_calls_total", "counter", "Plugin calls (one per batch), by plugin and version.");
            for p in &plugins {
                let _ = writeln!(o, "streamhost_plugin_calls_total{{{}}} {}", labels(p), p.calls);
            }
            head(&mut o, "streamhost_plugin_failures_total", "counter", "Plugin calls that failed (trap, timeout, out of memory, contract).");
            for p in &plugins {
                let _ = writeln!(o, "streamhost_plugin_failures_total{{{}}} {}", labels(p), p.failures);
            }
            head(&mut o, "streamhost_plugin_call_seconds", "summary", "Time spent in plugin calls.");
            for p in &plugins {
                let _ = writeln!(o, "streamhost_plugin_call_seconds_sum{{{}}} {}", labels(p), p.call_seconds);
                let _ = writeln!(o, "streamhost_plugin_call_seconds_count{{{}}} {}", labels(p), p.calls);
            }
            head(&mut o, "streamhost_plugin_reloads_total", "counter", "Plugin loads after start-up (file change, SIGHUP, admin API), by result.");
            let _ = writeln!(o, "streamhost_plugin_reloads_total{{result=\"ok\"}} {}", registry.reloads_ok.load(Ordering::Relaxed));
            let _ = writeln!(o, "streamhost_plugin_reloads_total{{result=\"failed\"}} {}", registry.reloads_failed.load(Ordering::Relaxed));
        }
        o
    }
}

fn labels(p: &crate::registry::PluginStatus) -> String {
    format!(
        "plugin=\"{}\",version=\"{}\",kind=\"{}\"",
        escape(&p.info.name),
        escape(&p.info.version),
        p.info.kind
    )
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_records() {
        let m = Metrics::default();
        let tally = Tally { input: 4, ..Tally::default() };
        m.record_batch(&tally, &[("in".into(), 0, 4)], &[("out".into(), 4)], 4.0e-6);
        let text = m.render(None);
        assert!(text.contains("messages_processed_total 4\n"));
        assert!(text.contains("message_processing_seconds_bucket{le=\"0.000001\"} 4\n"), "{text}");
        assert!(text.contains("message_processing_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("streamhost_records_consumed_total{topic=\"in\",partition=\"0\"} 4\n"));
        assert!(text.contains("streamhost_records_produced_total{topic=\"out\"} 4\n"));
    }
}
