//! The console: a read-only page at `/` on the admin listener, and the JSON
//! it polls (`/console/state`).
//!
//! The page (`console.html`) is compiled into the binary: no build step, no
//! file to ship, nothing fetched at run time. It polls once a second and
//! draws its charts as inline SVG. What it shows is kept here, beside the
//! metrics and fed by the same calls: totals per input partition, sampled
//! once a second for the last five minutes (throughput and lag charts),
//! dead letters by reason, alerts by kind, the most recent alerts, and
//! which worker holds which partitions. Plugins, their versions, history
//! and trials come from the registry at each request. Its search box asks
//! the key inspector (`GET /keys/{key}`, `super::keys`) and draws the key's
//! newest readings per field; `/?key=NAME` opens the page with NAME
//! searched.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use crate::pipeline::Tally;

/// The page.
pub const PAGE: &str = include_str!("console.html");

/// Samples kept: five minutes at one a second.
const SAMPLES: usize = 300;
/// Recent alerts kept.
const RECENT: usize = 20;

#[derive(Default)]
struct Totals {
    consumed: BTreeMap<i32, u64>,
    lag: BTreeMap<i32, i64>,
    dead: BTreeMap<String, u64>,
    alerts: BTreeMap<String, u64>,
    workers: BTreeMap<usize, Vec<i32>>,
}

/// One second's picture: consumed totals and lag, per partition.
#[derive(Clone, serde::Serialize)]
struct Sample {
    t: i64,
    consumed: BTreeMap<i32, u64>,
    lag: BTreeMap<i32, i64>,
}

/// What the console shows, kept since the process started: totals, the
/// last five minutes of samples and the most recent alerts.
pub struct Console {
    started: Instant,
    totals: Mutex<Totals>,
    samples: Mutex<VecDeque<Sample>>,
    /// Alert payloads, newest last (parsed only when the page asks).
    recent: Mutex<VecDeque<Vec<u8>>>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            started: Instant::now(),
            totals: Mutex::default(),
            samples: Mutex::default(),
            recent: Mutex::default(),
        }
    }
}

impl Console {
    pub(super) fn batch(&self, tally: &Tally, consumed: &[(i32, u64)]) {
        let mut t = self.totals.lock().unwrap();
        for &(p, n) in consumed {
            *t.consumed.entry(p).or_default() += n;
        }
        for (reason, n) in &tally.dead_by_reason {
            *t.dead.entry(reason.to_string()).or_default() += n;
        }
        for (kind, n) in &tally.alerts_by_kind {
            *t.alerts.entry(kind.clone()).or_default() += n;
        }
    }

    pub(super) fn lag(&self, lag: &[(i32, Option<i64>)]) {
        let mut t = self.totals.lock().unwrap();
        t.lag.retain(|p, _| lag.iter().any(|(q, _)| q == p));
        for &(p, v) in lag {
            if let Some(v) = v {
                t.lag.insert(p, v);
            }
        }
    }

    pub(super) fn worker(&self, worker: usize, partitions: Vec<i32>) {
        self.totals
            .lock()
            .unwrap()
            .workers
            .insert(worker, partitions);
    }

    /// Keeps the last alert payloads of a batch.
    pub fn alerts<'a>(&self, payloads: impl DoubleEndedIterator<Item = &'a [u8]>) {
        let newest: Vec<Vec<u8>> = payloads.rev().take(RECENT).map(<[u8]>::to_vec).collect();
        if newest.is_empty() {
            return;
        }
        let mut recent = self.recent.lock().unwrap();
        for p in newest.into_iter().rev() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(p);
        }
    }

    /// Takes this second's sample (called once a second).
    pub fn sample(&self) {
        let sample = {
            let t = self.totals.lock().unwrap();
            Sample {
                t: chrono::Utc::now().timestamp_millis(),
                consumed: t.consumed.clone(),
                lag: t.lag.clone(),
            }
        };
        let mut samples = self.samples.lock().unwrap();
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// What the page shows, but the plugins (the admin API adds them).
    pub fn state(&self) -> serde_json::Value {
        let t = self.totals.lock().unwrap();
        let recent: Vec<serde_json::Value> = self
            .recent
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(|p| {
                serde_json::from_slice(p).unwrap_or_else(
                    |_| serde_json::json!({ "binary": format!("{} bytes (Avro)", p.len()) }),
                )
            })
            .collect();
        serde_json::json!({
            "uptime_seconds": self.started.elapsed().as_secs(),
            "consumed": t.consumed,
            "lag": t.lag,
            "dead_letters": t.dead,
            "alerts_by_kind": t.alerts,
            "workers": t.workers,
            "recent_alerts": recent,
            "samples": *self.samples.lock().unwrap(),
        })
    }
}
