//! What the registry tells of itself: each plugin as `GET /plugins` shows
//! it, every version with its counters (also read by the metrics), a trial
//! in progress, what a `put` did, and each plugin's last changes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::Registry;
use super::trials::Candidate;
use crate::rules::runtime::{Kind, PluginInfo};
use crate::rules::trial::{Mode, Policy, SideStatus};

/// Events kept per plugin.
const HISTORY: usize = 50;

/// One change to a plugin, for its history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// When, RFC 3339 in UTC.
    pub at: String,
    /// What happened: `loaded`, `added`, `swapped`, `load-failed`,
    /// `shadow`, `canary`, `promoted`, `rolled-back`,
    /// `rolled-back-automatically`, `trial-ended` or `removed`.
    pub action: &'static str,
    /// The version it happened to.
    pub version: String,
    /// That version's component's SHA-256.
    pub sha256: String,
    /// What else there is to say: the version replaced, the reason of a
    /// rollback, the error of a failed load.
    pub detail: Option<String>,
}

/// What a `put` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Put {
    /// The plugin now serving.
    #[serde(flatten)]
    pub info: PluginInfo,
    /// The file it was written to; `None` when it serves from memory only.
    pub stored: Option<String>,
}

/// One plugin as `GET /plugins` shows it. Counts are over every version
/// this process has served under the name, but a candidate on trial (its
/// trial counts it); `versions` has them one by one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    /// The serving version.
    #[serde(flatten)]
    pub info: PluginInfo,
    /// Where the serving version came from: its file, or the admin API.
    pub origin: String,
    /// When the serving version began to serve, RFC 3339 in UTC.
    pub loaded_at: String,
    /// The deadline of its calls.
    pub deadline_ms: f64,
    /// The memory cap of its calls.
    pub memory_mib: usize,
    /// Calls made.
    pub calls: u64,
    /// Calls failed (trapped, timed out, out of memory, broke the contract).
    pub failures: u64,
    /// Records in the batches of successful calls.
    pub records: u64,
    /// Time spent in calls.
    pub call_seconds: f64,
    /// The error of the serving version's last failed call.
    pub last_failure: Option<String>,
    /// Changes of it refused: files that failed to load, `put`s refused.
    pub load_failures: u64,
    /// The error of the last of those.
    pub last_load_error: Option<String>,
    /// Every version loaded under its name, oldest first.
    pub versions: Vec<VersionStatus>,
    /// The candidate on trial beside it, if any.
    pub trial: Option<TrialStatus>,
    /// Its last changes, oldest first.
    pub history: Vec<Event>,
}

/// A trial as `GET /plugins` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialStatus {
    /// Shadow or canary (with its share).
    #[serde(flatten)]
    pub mode: Mode,
    /// The candidate's version.
    pub version: String,
    /// The candidate's component's SHA-256.
    pub sha256: String,
    /// When the trial began, RFC 3339 in UTC.
    pub started_at: String,
    /// The serving version's counts during the trial.
    pub serving: SideStatus,
    /// The candidate's counts.
    pub candidate: SideStatus,
    /// Shadow: records compared.
    pub compared: u64,
    /// Shadow: records whose results differ.
    pub differing: u64,
    /// Shadow: results only the candidate gave, by alert kind, trend or
    /// transform outcome.
    pub added: BTreeMap<String, u64>,
    /// Shadow: results only the serving version gave, the same way.
    pub removed: BTreeMap<String, u64>,
    /// When the candidate is rolled back automatically.
    pub policy: Policy,
    /// Set once the candidate was judged to be rolled back.
    pub verdict: Option<String>,
}

/// One version of a plugin and its counters since it was first loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionStatus {
    /// The plugin's name.
    pub name: String,
    /// The version its `describe()` gives.
    pub version: String,
    /// Transform, trend or anomaly.
    pub kind: Kind,
    /// The component's SHA-256: what tells versions apart.
    pub sha256: String,
    /// Where it was first loaded from.
    pub source: String,
    /// When it was first loaded, RFC 3339 in UTC.
    pub loaded_at: String,
    /// Whether it serves now.
    pub serving: bool,
    /// A candidate on trial beside the serving version.
    pub on_trial: bool,
    /// Calls made.
    pub calls: u64,
    /// Calls failed.
    pub failures: u64,
    /// Records in the batches of successful calls.
    pub records: u64,
    /// Time spent in calls.
    pub call_seconds: f64,
    /// The largest linear memory an instance of it reached.
    pub peak_memory_mib: f64,
    /// The longest call, successful or not.
    pub slowest_call_ms: f64,
}

/// `t` as RFC 3339 in UTC, to the millisecond.
pub(super) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Registry {
    /// Adds an event to a plugin's history, dropping its oldest beyond
    /// `HISTORY`.
    pub(super) fn record(&self, info: &PluginInfo, action: &'static str, detail: Option<String>) {
        let mut history = self.history.lock().unwrap();
        if history.iter().filter(|(n, _)| *n == info.name).count() >= HISTORY
            && let Some(i) = history.iter().position(|(n, _)| *n == info.name)
        {
            history.remove(i);
        }
        history.push((
            info.name.clone(),
            Event {
                at: rfc3339(chrono::Utc::now()),
                action,
                version: info.version.clone(),
                sha256: info.sha256.clone(),
                detail,
            },
        ));
    }

    /// Every plugin with its counters, for `GET /plugins`.
    pub fn list(&self) -> Vec<PluginStatus> {
        // Before taking the slots: `versions` takes them too.
        let versions = self.versions();
        let history = self.history.lock().unwrap().clone();
        let slots = self.slots.lock().unwrap();
        slots
            .iter()
            .map(|s| {
                let (deadline, memory) = s.plugin.limits();
                let mine: Vec<VersionStatus> = versions
                    .iter()
                    .filter(|v| v.name == s.plugin.name())
                    .cloned()
                    .collect();
                // A candidate on trial counts in its trial, not here.
                let counted = || mine.iter().filter(|v| !v.on_trial);
                let history = history
                    .iter()
                    .filter(|(n, _)| n == s.plugin.name())
                    .map(|(_, e)| e.clone())
                    .collect();
                PluginStatus {
                    trial: s.trial.as_ref().map(Candidate::status),
                    history,
                    info: s.plugin.info().clone(),
                    origin: s.source.describe(),
                    loaded_at: rfc3339(s.loaded_at),
                    deadline_ms: deadline.as_secs_f64() * 1e3,
                    memory_mib: memory >> 20,
                    calls: counted().map(|v| v.calls).sum(),
                    failures: counted().map(|v| v.failures).sum(),
                    records: counted().map(|v| v.records).sum(),
                    call_seconds: counted().map(|v| v.call_seconds).sum(),
                    last_failure: s.plugin.stats().last_failure.lock().unwrap().clone(),
                    load_failures: s.load_failures,
                    last_load_error: s.last_load_error.clone(),
                    versions: mine,
                }
            })
            .collect()
    }

    /// Every version loaded since start-up, with its counters, oldest
    /// first, and whether it serves now (a candidate on trial does not).
    pub fn versions(&self) -> Vec<VersionStatus> {
        // (name, sha256, version) of the serving versions, and of the
        // candidates: one component configured two ways is two versions.
        type Ids = Vec<(String, String, String)>;
        let id = |i: &PluginInfo| (i.name.clone(), i.sha256.clone(), i.version.clone());
        let (serving, on_trial): (Ids, Ids) = {
            let slots = self.slots.lock().unwrap();
            let serving = slots.iter().map(|s| id(s.plugin.info())).collect();
            let on_trial = slots
                .iter()
                .filter_map(|s| {
                    let c = s.trial.as_ref()?;
                    Some(id(c.plugin.info()))
                })
                .collect();
            (serving, on_trial)
        };
        let versions = self.versions.lock().unwrap();
        versions
            .iter()
            .map(|v| {
                let st = &v.stats;
                let id = (v.name.clone(), v.sha256.clone(), v.version.clone());
                VersionStatus {
                    name: v.name.clone(),
                    version: v.version.clone(),
                    kind: v.kind,
                    sha256: v.sha256.clone(),
                    source: v.source.clone(),
                    loaded_at: rfc3339(v.loaded_at),
                    serving: serving.contains(&id),
                    on_trial: on_trial.contains(&id),
                    calls: st.calls.load(Ordering::Relaxed),
                    failures: st.failures.load(Ordering::Relaxed),
                    records: st.records.load(Ordering::Relaxed),
                    call_seconds: st.nanos.load(Ordering::Relaxed) as f64 / 1e9,
                    peak_memory_mib: st.peak_memory.load(Ordering::Relaxed) as f64
                        / (1 << 20) as f64,
                    slowest_call_ms: st.slowest_nanos.load(Ordering::Relaxed) as f64 / 1e6,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{alerts, component, serving_anomaly};
    use super::*;
    use crate::rules::registry::PluginLimits;

    #[test]
    fn a_plugins_counts_are_the_sum_of_its_versions_but_a_candidate() {
        let (_, registry) = serving_anomaly("status-sums");
        alerts(&registry, 20.0);
        let other = component("anomaly-rejects");
        registry
            .put("anomaly", &other, PluginLimits::default())
            .unwrap();
        alerts(&registry, 20.0);
        alerts(&registry, 20.0);
        let v1 = component("anomaly");
        registry
            .try_candidate("anomaly", &v1, PluginLimits::default(), Mode::Shadow)
            .unwrap();
        let p = &registry.list()[0];
        let calls: Vec<u64> = p.versions.iter().map(|v| v.calls).collect();
        // The candidate is 1.0.0 again: it shares its counters, and is not
        // counted while on trial.
        assert_eq!(calls, [1, 2]);
        assert_eq!((p.calls, p.records), (2, 2));
        assert_eq!(p.trial.as_ref().unwrap().version, "1.0.0");
    }

    #[test]
    fn history_keeps_the_last_changes_of_each_plugin() {
        let (_, registry) = serving_anomaly("status-history");
        let info = registry.list()[0].info.clone();
        let other = PluginInfo {
            name: "other".into(),
            ..info.clone()
        };
        registry.record(&other, "loaded", None);
        for i in 0..HISTORY {
            registry.record(&info, "swapped", Some(i.to_string()));
        }
        let list = registry.list();
        let history = &list[0].history;
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history[0].detail.as_deref(), Some("0"));
        assert_eq!(history[HISTORY - 1].detail.as_deref(), Some("49"));
        assert_eq!(
            registry
                .history
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| n == "other")
                .count(),
            1
        );
    }
}
