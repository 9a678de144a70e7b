//! Trying a new version of a rule on live traffic before it serves alone.
//!
//! A *trial* pairs a plugin's serving version with a candidate:
//! - **shadow**: the candidate runs on the same batches as the serving
//!   version, after it; its results are compared record by record and then
//!   thrown away (nothing it returns is routed);
//! - **canary**: the candidate serves the records whose key its hash selects
//!   (`selects`), a stable share of keys, so that one key's outputs come
//!   from one version. Should a candidate's call fail, its records are run
//!   on the serving version instead, so a failing canary loses nothing; the
//!   failure counts against it.
//!
//! Both count, for each side: records, records in failed calls, per-record
//! errors, traps, and call latency (p99 over the last calls), and for the
//! candidate the records whose results differ from the serving version's
//! (shadow: alert kinds, trends or transforms added and removed).
//!
//! A trial is rolled back automatically when, after `Policy::min_records`
//! of the candidate's records, its failure rate exceeds the serving
//! version's by more than `failure_margin`, or its p99 call latency exceeds
//! the serving version's times `latency_ratio` (and by at least 1 ms; once
//! each side made 100 calls, so that one slow call is not a p99). The
//! pipeline stops calling a candidate as soon as that is decided
//! (`Trial::stopped`); the registry's watcher then takes it out and records
//! the rollback.
//!
//! A window rebuild (a partition assigned, `streamhost replay`) runs the serving
//! transforms only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Rule;
use super::runtime::CallError;
use crate::contract::{Alert, Change, Direction, TrendResult};

/// How a candidate takes part.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// Runs on the same batches as the serving version; its results are
    /// compared, never routed.
    Shadow,
    /// Serves the keys whose hash falls under `percent` of 100.
    Canary {
        /// The share of keys it serves, in percent.
        percent: f64,
    },
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Shadow => f.write_str("shadow"),
            Mode::Canary { percent } => write!(f, "canary {percent}%"),
        }
    }
}

/// Whether a canary of `percent` serves `key`: the first eight bytes of the
/// key's SHA-256, big-endian, modulo 10,000, below `percent × 100`. Stable
/// across processes, restarts and versions, so a key stays with one
/// version, and a larger share keeps every key of a smaller one.
pub fn selects(percent: f64, key: &str) -> bool {
    let digest = Sha256::digest(key.as_bytes());
    let head = u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"));
    ((head % 10_000) as f64) < percent * 100.0
}

/// When a candidate is rolled back on its own.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Policy {
    /// Candidate records seen before any judgement.
    pub min_records: u64,
    /// Largest excess of the candidate's failure rate over the serving
    /// version's (0.01 = one percentage point).
    pub failure_margin: f64,
    /// Largest ratio of the candidate's p99 call latency to the serving
    /// version's.
    pub latency_ratio: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_records: 1000,
            failure_margin: 0.01,
            latency_ratio: 2.0,
        }
    }
}

/// Latencies kept for the p99 of each side.
const LATENCIES: usize = 2048;
/// Calls each side needs before latencies are compared: a p99 over fewer
/// is one slow call (a descheduled thread) on a busy machine.
const LATENCY_CALLS: usize = 100;

/// One side's counters.
#[derive(Default)]
pub struct Side {
    /// Records it was called on.
    pub records: AtomicU64,
    /// Records in calls that failed (trap, deadline, memory, contract).
    pub failed_records: AtomicU64,
    /// Records whose own result was an error the rule returned.
    pub errors: AtomicU64,
    /// Calls that trapped.
    pub traps: AtomicU64,
    latencies: Mutex<VecDeque<u32>>,
}

impl Side {
    /// Counts a call (with failure isolation, possibly several) over
    /// `records`, of which `failed` got a call error; `trapped` when one of
    /// them was a trap.
    fn called(&self, records: usize, took: Duration, failed: usize, trapped: bool) {
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.failed_records
            .fetch_add(failed as u64, Ordering::Relaxed);
        if trapped {
            self.traps.fetch_add(1, Ordering::Relaxed);
        }
        let mut l = self.latencies.lock().unwrap();
        if l.len() == LATENCIES {
            l.pop_front();
        }
        l.push_back(took.as_micros().min(u32::MAX as u128) as u32);
    }

    /// Failed records (in failed calls, or errors the rule returned) per
    /// record; 0 before any record.
    pub fn failure_rate(&self) -> f64 {
        let records = self.records.load(Ordering::Relaxed);
        if records == 0 {
            return 0.0;
        }
        (self.failed_records.load(Ordering::Relaxed) + self.errors.load(Ordering::Relaxed)) as f64
            / records as f64
    }

    fn latency_samples(&self) -> usize {
        self.latencies.lock().unwrap().len()
    }

    /// The 99th percentile of the last calls' latencies, in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        let mut l: Vec<u32> = self.latencies.lock().unwrap().iter().copied().collect();
        if l.is_empty() {
            return 0.0;
        }
        l.sort_unstable();
        let i = ((l.len() as f64 * 0.99).ceil() as usize).clamp(1, l.len()) - 1;
        l[i] as f64 / 1e3
    }

    /// The counters as they are now.
    pub fn status(&self) -> SideStatus {
        SideStatus {
            records: self.records.load(Ordering::Relaxed),
            failed_records: self.failed_records.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            failure_rate: self.failure_rate(),
            p99_call_ms: self.p99_ms(),
        }
    }
}

/// One side's counters at one moment, as `GET /plugins` shows them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SideStatus {
    /// Records it was called on.
    pub records: u64,
    /// Records in calls that failed.
    pub failed_records: u64,
    /// Records whose own result was an error the rule returned.
    pub errors: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Failed records per record (`Side::failure_rate`).
    pub failure_rate: f64,
    /// The 99th percentile of the last calls' latencies, in milliseconds.
    pub p99_call_ms: f64,
}

/// A candidate on trial beside a serving version.
pub struct Trial {
    /// The candidate version.
    pub candidate: std::sync::Arc<dyn Rule>,
    /// How it takes part.
    pub mode: Mode,
    /// When it is rolled back on its own.
    pub policy: Policy,
    /// The serving version's counters during the trial.
    pub serving: Side,
    /// The candidate's counters.
    pub trying: Side,
    /// Shadow: records both sides returned a result for.
    pub compared: AtomicU64,
    /// Shadow: those of them whose results differ.
    pub differing: AtomicU64,
    /// Shadow: what the candidate returned that the serving version did
    /// not (`added`), and the reverse, by alert kind (anomaly), direction
    /// (trend) or outcome (transform).
    diff: Mutex<(BTreeMap<String, u64>, BTreeMap<String, u64>)>,
    stopped: AtomicBool,
    verdict: Mutex<Option<String>>,
}

impl Trial {
    /// A trial of `candidate`, with nothing counted yet.
    pub fn new(candidate: std::sync::Arc<dyn Rule>, mode: Mode, policy: Policy) -> Trial {
        Trial {
            candidate,
            mode,
            policy,
            serving: Side::default(),
            trying: Side::default(),
            compared: AtomicU64::new(0),
            differing: AtomicU64::new(0),
            diff: Mutex::new(Default::default()),
            stopped: AtomicBool::new(false),
            verdict: Mutex::new(None),
        }
    }

    /// Whether the candidate was judged to be rolled back: the pipeline no
    /// longer calls it.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Why it was stopped.
    pub fn verdict(&self) -> Option<String> {
        self.verdict.lock().unwrap().clone()
    }

    /// Added and removed results, by kind.
    pub fn differences(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        self.diff.lock().unwrap().clone()
    }

    /// Applies the rollback policy to the counts so far.
    pub(super) fn judge(&self) {
        let p = &self.policy;
        if self.stopped() || self.trying.records.load(Ordering::Relaxed) < p.min_records {
            return;
        }
        let (mine, theirs) = (self.trying.failure_rate(), self.serving.failure_rate());
        let verdict = if mine > theirs + p.failure_margin {
            Some(format!(
                "failure rate {:.2}% against the serving version's {:.2}% (margin {:.2} points)",
                mine * 100.0,
                theirs * 100.0,
                p.failure_margin * 100.0
            ))
        } else if self.trying.latency_samples() >= LATENCY_CALLS
            && self.serving.latency_samples() >= LATENCY_CALLS
        {
            let (mine, theirs) = (self.trying.p99_ms(), self.serving.p99_ms());
            (mine > theirs * p.latency_ratio && mine - theirs >= 1.0).then(|| {
                format!(
                    "p99 call latency {mine:.2} ms against the serving version's {theirs:.2} ms (at most {}×)",
                    p.latency_ratio
                )
            })
        } else {
            None
        };
        if let Some(v) = verdict {
            let mut slot = self.verdict.lock().unwrap();
            if slot.is_none() {
                *slot = Some(v);
                self.stopped.store(true, Ordering::Release);
            }
        }
    }

    /// Stops the trial by hand (promotion or rollback).
    pub fn stop(&self, why: &str) {
        let mut slot = self.verdict.lock().unwrap();
        if slot.is_none() {
            *slot = Some(why.to_string());
        }
        self.stopped.store(true, Ordering::Release);
    }
}

/// What the two sides' per-record results are compared on.
pub trait Outcome {
    /// The kinds of result a record got: compared as multisets.
    fn kinds(&self) -> Vec<String>;
    /// Whether it is an error the rule returned for the record.
    fn is_error(&self) -> bool;
}

impl Outcome for Result<Vec<Alert>, String> {
    fn kinds(&self) -> Vec<String> {
        match self {
            Ok(alerts) => alerts.iter().map(|a| a.kind.clone()).collect(),
            Err(_) => vec!["error".into()],
        }
    }
    fn is_error(&self) -> bool {
        self.is_err()
    }
}

impl Outcome for Result<Option<TrendResult>, String> {
    fn kinds(&self) -> Vec<String> {
        match self {
            // The field by its index in the batch's fields, as returned.
            Ok(Some(t)) => vec![format!(
                "fields[{}]:{}",
                t.field,
                match t.direction {
                    Direction::Increasing => "increasing",
                    Direction::Decreasing => "decreasing",
                    Direction::Stable => "stable",
                }
            )],
            Ok(None) => Vec::new(),
            Err(_) => vec!["error".into()],
        }
    }
    fn is_error(&self) -> bool {
        self.is_err()
    }
}

impl Outcome for Result<Change, String> {
    fn kinds(&self) -> Vec<String> {
        vec![match self {
            Ok(Change::Keep) => "keep".into(),
            Ok(Change::Drop) => "drop".into(),
            Ok(Change::Replace(text)) => format!("replace:{text}"),
            Ok(Change::Merge(members)) => format!("merge:{members}"),
            Err(_) => "error".into(),
        }]
    }
    fn is_error(&self) -> bool {
        self.is_err()
    }
}

/// Records with a call error among a serving version's results, and
/// whether one of them trapped.
fn failures<T>(served: &[Result<T, CallError>]) -> (usize, bool) {
    let failed = served.iter().filter(|r| r.is_err()).count();
    let trapped = served.iter().any(|r| matches!(r, Err(CallError::Trap(_))));
    (failed, trapped)
}

/// A candidate's one call over `n` records: all failed, or none.
fn failed_call<T>(tried: &Result<T, CallError>, n: usize) -> (usize, bool) {
    match tried {
        Ok(_) => (0, false),
        Err(e) => (n, matches!(e, CallError::Trap(_))),
    }
}

fn count_errors<'a, T: Outcome + 'a>(side: &Side, results: impl Iterator<Item = &'a T>) {
    let errors = results.filter(|r| r.is_error()).count() as u64;
    side.errors.fetch_add(errors, Ordering::Relaxed);
}

impl Trial {
    /// Counts a call of the serving version.
    pub(super) fn count_serving<T: Outcome>(
        &self,
        took: Duration,
        served: &[Result<T, CallError>],
    ) {
        let (failed, trapped) = failures(served);
        self.serving.called(served.len(), took, failed, trapped);
        count_errors(&self.serving, served.iter().filter_map(|r| r.as_ref().ok()));
    }

    /// Counts the candidate's one call over `n` records.
    pub(super) fn count_trying<T: Outcome>(
        &self,
        n: usize,
        took: Duration,
        tried: &Result<Vec<T>, CallError>,
    ) {
        let (failed, trapped) = failed_call(tried, n);
        self.trying.called(n, took, failed, trapped);
        if let Ok(tried) = tried {
            count_errors(&self.trying, tried.iter());
        }
    }

    /// Shadow: counts the records whose results differ, and what differs.
    pub(super) fn compare<T: Outcome>(&self, served: &[Result<T, CallError>], tried: &[T]) {
        if served.len() != tried.len() {
            return;
        }
        let (mut compared, mut differing) = (0, 0);
        let mut diff = self.diff.lock().unwrap();
        for (s, t) in served.iter().zip(tried) {
            let Ok(s) = s else { continue };
            compared += 1;
            let (mut theirs, mut mine) = (s.kinds(), t.kinds());
            theirs.sort_unstable();
            mine.sort_unstable();
            if theirs == mine {
                continue;
            }
            differing += 1;
            let (added, removed) = multiset_difference(&mine, &theirs);
            for k in added {
                *diff.0.entry(k).or_default() += 1;
            }
            for k in removed {
                *diff.1.entry(k).or_default() += 1;
            }
        }
        self.compared.fetch_add(compared, Ordering::Relaxed);
        self.differing.fetch_add(differing, Ordering::Relaxed);
    }
}

/// Elements of sorted `a` not matched in sorted `b`, and of `b` not in `a`.
fn multiset_difference(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(x.clone());
                i += 1;
            }
            (Some(_), Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (Some(x), None) => {
                only_a.push(x.clone());
                i += 1;
            }
            (None, Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (only_a, only_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_difference_counts_repeats() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (a, b) = multiset_difference(&s(&["a", "a", "b"]), &s(&["a", "c"]));
        assert_eq!((a, b), (s(&["a", "b"]), s(&["c"])));
    }

    #[test]
    fn canary_shares_nest_and_are_near_their_percent() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("sensor_{i:05}")).collect();
        let ten = keys.iter().filter(|k| selects(10.0, k)).count();
        assert!((1_800..2_200).contains(&ten), "{ten}");
        assert!(
            keys.iter()
                .filter(|k| selects(5.0, k))
                .all(|k| selects(10.0, k))
        );
        assert!(!keys.iter().any(|k| selects(0.0, k)));
        assert!(keys.iter().all(|k| selects(100.0, k)));
    }
}
