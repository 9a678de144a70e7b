//! Candidates on trial beside a serving version (see `rules::trial` for how
//! the pipeline runs and judges them): starting a trial, promoting its
//! candidate, rolling it back by hand or on the pipeline's verdict.
//!
//! A candidate is compiled and checked as a `put` is, but held in memory
//! only: a restart ends its trial. Only a promotion writes it to disk, as a
//! `put` would, and makes it the serving version.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::change::{ChangeError, check_name};
use super::limits::{PluginFile, PluginLimits};
use super::status::{TrialStatus, rfc3339};
use super::{Put, Registry, Slot, Source, position};
use crate::rules::Rule;
use crate::rules::runtime::{Plugin, PluginInfo};
use crate::rules::trial::{Mode, Trial};

/// A candidate on trial: kept in memory only, until it is promoted.
pub(super) struct Candidate {
    pub(super) trial: Arc<Trial>,
    pub(super) plugin: Arc<Plugin>,
    /// Its component, `None` when it is the serving one configured anew.
    bytes: Option<Vec<u8>>,
    /// Its limits and own configuration.
    file: PluginFile,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// Checks a trial's mode: a canary serves above 0% and at most 100%.
fn check_mode(mode: Mode) -> Result<(), ChangeError> {
    match mode {
        Mode::Canary { percent } if !(percent > 0.0 && percent <= 100.0) => {
            Err(ChangeError::Limits(format!(
                "a canary share must be above 0% and at most 100%, not {percent}%"
            )))
        }
        _ => Ok(()),
    }
}

impl Registry {
    /// Starts a trial of `bytes` beside the plugin called `name`, in
    /// `mode`: compiled and checked as a `put` is, but held in memory only
    /// (a restart ends the trial) until `promote`.
    pub fn try_candidate(
        &self,
        name: &str,
        bytes: &[u8],
        limits: PluginLimits,
        mode: Mode,
    ) -> Result<PluginInfo, ChangeError> {
        limits.check().map_err(ChangeError::Limits)?;
        check_mode(mode)?;
        let mut file = self
            .file_of(name)
            .ok_or_else(|| ChangeError::NotFound(name.into()))?;
        file.limits = file.limits.overridden_by(limits);
        let new = self.load_with(bytes, name, name, &file)?;
        self.start_trial(name, new, Some(bytes.to_vec()), file, (mode, None))
    }

    /// Puts `new` on trial beside the plugin called `name`, in `mode`;
    /// with `basis`, only while that version still serves (`new` is it,
    /// configured anew).
    pub(super) fn start_trial(
        &self,
        name: &str,
        new: Plugin,
        bytes: Option<Vec<u8>>,
        file: PluginFile,
        (mode, basis): (Mode, Option<&Arc<Plugin>>),
    ) -> Result<PluginInfo, ChangeError> {
        check_mode(mode)?;
        let mut slots = self.slots.lock().unwrap();
        let i = position(&slots, name)?;
        check_name(&new, name)?;
        Self::check_swap(&slots, i, &new)?;
        let serving = slots[i].plugin.info();
        if basis.is_some_and(|b| !Arc::ptr_eq(b, &slots[i].plugin)) {
            return Err(ChangeError::Config(format!(
                "{name:?} was replaced while the candidate was being checked; try again"
            )));
        }
        if new.info().version == serving.version && new.info().sha256 == serving.sha256 {
            return Err(ChangeError::Config(format!(
                "the candidate is {} itself (a change of secret values only, or none), so its outputs could not be told apart; apply it without a trial",
                serving.version
            )));
        }
        let new = Arc::new(self.counted(new, &Source::Admin));
        let info = new.info().clone();
        let policy = *self.policy.lock().unwrap();
        let slot = &mut slots[i];
        let why = "replaced by another candidate";
        self.drop_trial(slot, why, why);
        tracing::info!(plugin = %name, serving = %slot.plugin.info().version, candidate = %info.version, %mode, "Candidate on trial.");
        self.record(
            &info,
            match mode {
                Mode::Shadow => "shadow",
                Mode::Canary { .. } => "canary",
            },
            Some(format!("{mode} beside {}", slot.plugin.info().version)),
        );
        slot.trial = Some(Candidate {
            trial: Arc::new(Trial::new(new.clone() as Arc<dyn Rule>, mode, policy)),
            plugin: new,
            bytes,
            file,
            started_at: chrono::Utc::now(),
        });
        self.publish(&slots);
        Ok(info)
    }

    /// Makes the candidate on trial beside `name` its serving version,
    /// kept on disk as a `put` is.
    pub fn promote(&self, name: &str) -> Result<Put, ChangeError> {
        let mut slots = self.slots.lock().unwrap();
        let i = position(&slots, name)?;
        let Some(c) = slots[i].trial.take() else {
            return Err(ChangeError::NoTrial(name.into()));
        };
        c.trial.stop("promoted");
        let file = match self.store(&slots, Some(i), name, c.bytes.as_deref(), &c.file) {
            Ok(file) => file,
            Err(e) => {
                slots[i].trial = Some(c);
                return Err(e);
            }
        };
        if let Some(path) = &file {
            slots[i].keep_in(path);
        }
        let info = c.plugin.info().clone();
        let was = slots[i].plugin.info().version.clone();
        tracing::info!(plugin = %name, from = %was, to = %info.version, "Candidate promoted.");
        self.record(&info, "promoted", Some(format!("replaced {was}")));
        let slot = &mut slots[i];
        slot.plugin = c.plugin;
        slot.limits = c.file.limits;
        slot.config = c.file.config;
        slot.generation += 1;
        slot.loaded_at = chrono::Utc::now();
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.publish(&slots);
        Ok(Put {
            info,
            stored: file.map(|p| p.display().to_string()),
        })
    }

    /// Ends the trial beside `name` by hand: the serving version goes on
    /// alone.
    pub fn rollback(&self, name: &str) -> Result<PluginInfo, ChangeError> {
        self.end_trial(name, "by hand", false)
    }

    /// Rolls back the candidates the pipeline judged (see `rules::trial`).
    pub fn poll_trials(&self) {
        let judged: Vec<(String, String)> = {
            let slots = self.slots.lock().unwrap();
            slots
                .iter()
                .filter_map(|s| {
                    let c = s.trial.as_ref()?;
                    Some((s.plugin.name().to_string(), c.trial.verdict()?))
                })
                .collect()
        };
        for (name, why) in judged {
            let _ = self.end_trial(&name, &why, true);
        }
    }

    /// Rolls back the candidate beside `name`, for `why`.
    fn end_trial(&self, name: &str, why: &str, automatic: bool) -> Result<PluginInfo, ChangeError> {
        let mut slots = self.slots.lock().unwrap();
        let i = position(&slots, name)?;
        let Some(c) = slots[i].trial.take() else {
            return Err(ChangeError::NoTrial(name.into()));
        };
        c.trial.stop(why);
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
        if automatic {
            self.automatic_rollbacks.fetch_add(1, Ordering::Relaxed);
        }
        let info = c.plugin.info().clone();
        tracing::warn!(plugin = %name, candidate = %info.version, serving = %slots[i].plugin.info().version, reason = %why, automatic, "Candidate rolled back.");
        self.record(
            &info,
            if automatic {
                "rolled-back-automatically"
            } else {
                "rolled-back"
            },
            Some(why.to_string()),
        );
        self.publish(&slots);
        Ok(info)
    }

    /// Ends the trial beside `slot`, if any, because what it compares is
    /// replaced (`why`, for the trial; `detail`, for the history). Not a
    /// rollback: the caller publishes the slot's new state.
    pub(super) fn drop_trial(&self, slot: &mut Slot, why: &str, detail: &str) {
        if let Some(c) = slot.trial.take() {
            c.trial.stop(why);
            self.record(c.plugin.info(), "trial-ended", Some(detail.to_string()));
        }
    }
}

impl Candidate {
    /// The trial as `GET /plugins` shows it.
    pub(super) fn status(&self) -> TrialStatus {
        let t = &self.trial;
        let (added, removed) = t.differences();
        TrialStatus {
            mode: t.mode,
            version: self.plugin.info().version.clone(),
            sha256: self.plugin.info().sha256.clone(),
            started_at: rfc3339(self.started_at),
            serving: t.serving.status(),
            candidate: t.trying.status(),
            compared: t.compared.load(Ordering::Relaxed),
            differing: t.differing.load(Ordering::Relaxed),
            added,
            removed,
            policy: t.policy,
            verdict: t.verdict(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        actions, alerts, component, holds, serving_anomaly, serving_version, watcher_sees_a_change,
    };
    use super::*;

    const NO_LIMITS: PluginLimits = PluginLimits {
        deadline: None,
        memory_mib: None,
    };

    /// The version on trial beside `name`, and whether the published rules
    /// carry its trial.
    fn on_trial(registry: &Registry, name: &str) -> (Option<String>, bool) {
        let list = registry.list();
        let plugin = list.iter().find(|p| p.info.name == name).unwrap();
        let published = registry.current().trial(name).is_some();
        (plugin.trial.as_ref().map(|t| t.version.clone()), published)
    }

    #[test]
    fn a_promoted_candidate_serves_and_is_kept_on_disk() {
        let (rule, registry) = serving_anomaly("trial-promote");
        let info = registry
            .try_candidate(
                "anomaly",
                &component("anomaly-rejects"),
                NO_LIMITS,
                Mode::Shadow,
            )
            .unwrap();
        assert_eq!(info.version, "1.1.0-rejects");
        assert_eq!(
            on_trial(&registry, "anomaly"),
            (Some("1.1.0-rejects".into()), true)
        );
        // Beside, not instead: 1.0.0 still serves, and the file is as it was.
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        assert!(holds(&rule, "anomaly"));
        let versions = registry.versions();
        assert_eq!(
            versions
                .iter()
                .map(|v| (v.serving, v.on_trial))
                .collect::<Vec<_>>(),
            [(true, false), (false, true)]
        );

        let put = registry.promote("anomaly").unwrap();
        assert_eq!(put.stored, Some(rule.display().to_string()));
        assert!(holds(&rule, "anomaly-rejects"));
        assert_eq!(serving_version(&registry, "anomaly"), "1.1.0-rejects");
        assert_eq!(alerts(&registry, 45.0), 1);
        assert_eq!(on_trial(&registry, "anomaly"), (None, false));
        assert_eq!(
            actions(&registry, "anomaly"),
            ["loaded", "shadow", "promoted"]
        );
        // The watcher does not load the promoted file again.
        assert!(!watcher_sees_a_change(&registry, "anomaly"));
    }

    #[test]
    fn a_rolled_back_candidate_leaves_the_serving_version_alone() {
        let (rule, registry) = serving_anomaly("trial-rollback");
        let candidate = component("anomaly-rejects");
        let canary = Mode::Canary { percent: 10.0 };
        registry
            .try_candidate("anomaly", &candidate, NO_LIMITS, canary)
            .unwrap();
        let trial = registry.current().trials[0].1.clone();
        registry.rollback("anomaly").unwrap();
        assert!(trial.stopped());
        assert_eq!(on_trial(&registry, "anomaly"), (None, false));
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        assert!(holds(&rule, "anomaly"));
        assert_eq!(
            (
                registry.rollbacks.load(Ordering::Relaxed),
                registry.automatic_rollbacks.load(Ordering::Relaxed)
            ),
            (1, 0)
        );

        // Judged by the pipeline: rolled back by the next poll.
        registry
            .try_candidate("anomaly", &candidate, NO_LIMITS, Mode::Shadow)
            .unwrap();
        registry.poll_trials();
        assert_eq!(
            on_trial(&registry, "anomaly").0.as_deref(),
            Some("1.1.0-rejects")
        );
        registry
            .current()
            .trial("anomaly")
            .unwrap()
            .stop("failure rate too high");
        registry.poll_trials();
        assert_eq!(on_trial(&registry, "anomaly"), (None, false));
        assert_eq!(registry.automatic_rollbacks.load(Ordering::Relaxed), 1);
        let list = registry.list();
        let last = list[0].history.last().unwrap();
        assert_eq!(
            (last.action, last.detail.as_deref()),
            ("rolled-back-automatically", Some("failure rate too high"))
        );
    }

    #[test]
    fn a_swap_or_a_new_candidate_ends_the_trial_before_it() {
        let (_, registry) = serving_anomaly("trial-replaced");
        let other = component("anomaly-rejects");
        registry
            .try_candidate("anomaly", &other, NO_LIMITS, Mode::Shadow)
            .unwrap();
        let first = registry.current().trials[0].1.clone();
        registry
            .try_candidate("anomaly", &other, NO_LIMITS, Mode::Shadow)
            .unwrap();
        assert_eq!(
            first.verdict().as_deref(),
            Some("replaced by another candidate")
        );
        let second = registry.current().trials[0].1.clone();
        registry.put("anomaly", &other, NO_LIMITS).unwrap();
        assert_eq!(
            second.verdict().as_deref(),
            Some("the serving version was replaced")
        );
        assert_eq!(on_trial(&registry, "anomaly"), (None, false));
        assert_eq!(
            actions(&registry, "anomaly"),
            [
                "loaded",
                "shadow",
                "trial-ended",
                "shadow",
                "trial-ended",
                "swapped"
            ]
        );
        assert_eq!(registry.rollbacks.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_candidate_is_refused_as_a_put_would_be() {
        let (_, registry) = serving_anomaly("trial-refused");
        let shadow = Mode::Shadow;
        let refused = [
            registry.try_candidate("other", &component("anomaly-rejects"), NO_LIMITS, shadow),
            registry.try_candidate("anomaly", &component("trend"), NO_LIMITS, shadow),
            registry.try_candidate(
                "anomaly",
                &component("anomaly-rejects"),
                NO_LIMITS,
                Mode::Canary { percent: 0.0 },
            ),
        ];
        let [other, trend, zero] = refused.map(Result::unwrap_err);
        assert!(matches!(other, ChangeError::NotFound(_)), "{other}");
        assert!(matches!(trend, ChangeError::NameMismatch { .. }), "{trend}");
        assert!(matches!(zero, ChangeError::Limits(_)), "{zero}");
        assert_eq!(on_trial(&registry, "anomaly"), (None, false));
        assert_eq!(actions(&registry, "anomaly"), ["loaded"]);
        // Nothing on trial: nothing to promote or roll back.
        let promote = registry.promote("anomaly").map(|_| ()).unwrap_err();
        let rollback = registry.rollback("anomaly").map(|_| ()).unwrap_err();
        for e in [promote, rollback] {
            assert!(matches!(e, ChangeError::NoTrial(_)), "{e}");
        }
        assert_eq!(registry.rollbacks.load(Ordering::Relaxed), 0);
    }
}
