//! What the alert lifecycle (`--alerts lifecycle`) shows beside the data
//! path: the alerts firing now, per rule and kind (a Prometheus gauge) and
//! one by one (the console's list), and the lifecycle records written, by
//! status.
//!
//! Each worker reports the alerts of the partitions it holds after every
//! batch that changed them; a revoked partition's alerts leave with its
//! worker's next report.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::lifecycle::Alerts;
use crate::output::severity;
use crate::text::time::iso8601;

/// Firing alerts the console lists, at most (the longest firing first).
const LISTED: usize = 200;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleKind {
    rule: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// One firing alert, as the console lists it.
#[derive(Clone, Debug, serde::Serialize)]
struct Listed {
    key: String,
    partition: i32,
    rule: String,
    kind: String,
    severity: &'static str,
    message: String,
    since_ms: i64,
    firing_since: String,
    last_ms: i64,
    suppressed: u64,
}

/// The alert lifecycle's metrics and the console's list of firing alerts.
#[derive(Default)]
pub struct Firing {
    firing: Family<RuleKind, Gauge>,
    records: Family<StatusLabel, Counter>,
    /// Per worker: firing alerts per (rule, kind), and the longest firing.
    workers: Mutex<BTreeMap<usize, (BTreeMap<(String, String), usize>, Vec<Listed>)>>,
    /// Every (rule, kind) that fired so far (`Family` cannot list its
    /// labels), to set 0 for those no longer firing.
    known: Mutex<Vec<RuleKind>>,
}

impl Firing {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "streamhost_alerts_firing",
            "Alerts firing now (--alerts lifecycle), by rule and kind",
            self.firing.clone(),
        );
        r.register(
            "streamhost_alert_lifecycle_records",
            "Lifecycle alert records written, by status: firing, repeat, resolved",
            self.records.clone(),
        );
    }

    /// Counts the lifecycle records of a batch, by status.
    pub(super) fn count(&self, by_status: &BTreeMap<&'static str, u64>) {
        for (status, n) in by_status {
            self.records
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .inc_by(*n);
        }
    }

    /// Sets what worker `worker` holds firing (`alerts`, of the partitions
    /// it holds).
    pub fn report(&self, worker: usize, alerts: &Alerts) {
        let counts = alerts.firing_by_kind();
        let mut listed: Vec<Listed> = alerts
            .firing()
            .map(|(partition, key, o)| Listed {
                key: key.to_string(),
                partition,
                rule: o.rule.clone(),
                kind: o.kind.clone(),
                severity: severity(o.severity),
                message: o.message.clone(),
                since_ms: o.since_ms,
                firing_since: iso8601(o.since_ms),
                last_ms: o.last_ms,
                suppressed: o.suppressed,
            })
            .collect();
        listed.sort_by(|a, b| (a.since_ms, &a.key).cmp(&(b.since_ms, &b.key)));
        listed.truncate(LISTED);
        let mut workers = self.workers.lock().unwrap();
        workers.insert(worker, (counts, listed));
        let mut total: BTreeMap<&(String, String), usize> = BTreeMap::new();
        for (counts, _) in workers.values() {
            for (k, n) in counts {
                *total.entry(k).or_default() += n;
            }
        }
        // Kinds no longer firing read 0, not their last value.
        let mut seen = Vec::new();
        for ((rule, kind), n) in total {
            let label = RuleKind {
                rule: rule.clone(),
                kind: kind.clone(),
            };
            self.firing.get_or_create(&label).set(n as i64);
            seen.push(label);
        }
        drop(workers);
        self.zero_except(&seen);
    }

    /// Sets 0 for every (rule, kind) that fired before and is not `seen`.
    fn zero_except(&self, seen: &[RuleKind]) {
        let mut known = self.known.lock().unwrap();
        for label in known.iter().filter(|l| !seen.contains(l)) {
            self.firing.get_or_create(label).set(0);
        }
        for label in seen {
            if !known.contains(label) {
                known.push(label.clone());
            }
        }
    }

    /// The firing alerts for the console, the longest firing first.
    pub fn listed(&self) -> serde_json::Value {
        let workers = self.workers.lock().unwrap();
        let mut all: Vec<&Listed> = workers.values().flat_map(|(_, l)| l).collect();
        all.sort_by(|a, b| (a.since_ms, &a.key).cmp(&(b.since_ms, &b.key)));
        all.truncate(LISTED);
        serde_json::json!(all)
    }
}
