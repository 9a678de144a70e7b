//! What a batch gave, counted: records in, outputs by kind, dead letters
//! by reason.

use std::collections::BTreeMap;

use crate::record::Reason;

/// Counts of what one batch gave.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// Records consumed.
    pub input: u64,
    /// Enriched records produced.
    pub enriched: u64,
    /// Records a transform dropped.
    pub dropped: u64,
    /// Alert records produced, by anomaly kind (an alert record with two
    /// kinds counts under both).
    pub alerts_by_kind: BTreeMap<String, u64>,
    /// Alert records produced (one per anomaly rule that raised any; with
    /// the lifecycle, one per transition).
    pub alert_records: u64,
    /// With the lifecycle: alert records by status.
    pub alerts_by_status: BTreeMap<&'static str, u64>,
    /// Records and anomaly rules for which the rule raised any alert: the
    /// alert records `--alerts every-record` writes.
    pub alerts_raised: u64,
    /// Dead letters, by reason.
    pub dead_by_reason: BTreeMap<Reason, u64>,
}

impl Tally {
    /// Adds the counts of `other`.
    pub fn add(&mut self, other: &Tally) {
        self.input += other.input;
        self.enriched += other.enriched;
        self.dropped += other.dropped;
        self.alert_records += other.alert_records;
        self.alerts_raised += other.alerts_raised;
        for (k, v) in &other.alerts_by_kind {
            *self.alerts_by_kind.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.alerts_by_status {
            *self.alerts_by_status.entry(k).or_default() += v;
        }
        for (k, v) in &other.dead_by_reason {
            *self.dead_by_reason.entry(*k).or_default() += v;
        }
    }

    /// Dead letters of every reason.
    pub fn dead_letters(&self) -> u64 {
        self.dead_by_reason.values().sum()
    }
}
