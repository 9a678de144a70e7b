//! Configuration changes made through the admin API (`PUT
//! /plugins/{name}/config`, `streamhost plugins config`).
//!
//! A change is a swap of the same component with other configuration: the
//! serving version's compiled component gets new instances, whose
//! `describe()` may refuse the configuration (the change is then refused with
//! the plugin's message, and the serving version goes on). Accepted, it is
//! written to the file beside the component before it serves, as a `put` is,
//! and serves from the next batch. With a trial mode it goes on trial beside
//! the serving version instead, in memory until promoted, like a candidate
//! component.
//!
//! Keys set by `--plugin-config` (or the settings file) win over the
//! plugin's own and cannot be changed here: a change naming one is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::change::ChangeError;
use super::{Put, Registry, position};
use crate::rules::runtime::PluginInfo;
use crate::rules::trial::Mode;

/// A change to a plugin's own configuration.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    /// Keys to set to plain values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to set to secret values (never shown).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Keys to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

impl ConfigChange {
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.set
            .keys()
            .chain(self.secrets.keys())
            .map(String::as_str)
            .chain(self.unset.iter().map(String::as_str))
    }
}

/// What a configuration change did: served, or put on trial.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Configured {
    /// It serves now, kept where `stored` says.
    Serving(Put),
    /// It is on trial beside the serving version.
    OnTrial(PluginInfo),
}

impl Registry {
    /// Changes the configuration of the plugin called `name`: serves it
    /// (kept on disk first), or with `trial` puts it on trial.
    pub fn configure(
        &self,
        name: &str,
        change: &ConfigChange,
        trial: Option<Mode>,
    ) -> Result<Configured, ChangeError> {
        let refused = |e: ChangeError| {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            e
        };
        let (serving, mut file) = {
            let slots = self.slots.lock().unwrap();
            let i = position(&slots, name)?;
            (slots[i].plugin.clone(), slots[i].file())
        };
        let pinned = self.pinned.get(name);
        if let Some(key) = change
            .keys()
            .find(|k| pinned.is_some_and(|p| p.get(k).is_some()))
        {
            return Err(refused(ChangeError::Pinned {
                plugin: name.into(),
                key: key.into(),
            }));
        }
        for key in &change.unset {
            if !file.config.unset(key) {
                return Err(refused(ChangeError::Config(format!(
                    "{key:?} is not set in {name:?}'s own configuration"
                ))));
            }
        }
        let set = change.set.iter().map(|kv| (kv, false));
        for ((key, value), secret) in set.chain(change.secrets.iter().map(|kv| (kv, true))) {
            let done = if secret {
                file.config.set_secret(key, value)
            } else {
                file.config.set(key, value)
            };
            done.map_err(|e| refused(ChangeError::Config(e)))?;
        }
        // Describing the new instance happens outside the lock.
        let new = serving
            .configured(&self.effective(name, &file.config))
            .map_err(|e| refused(e.into()))?;
        if let Some(mode) = trial {
            let new = self
                .start_trial(name, new, None, file, (mode, Some(&serving)))
                .map_err(refused)?;
            return Ok(Configured::OnTrial(new));
        }
        let mut slots = self.slots.lock().unwrap();
        let i = position(&slots, name)?;
        // Another change landed meanwhile (a `put`, a file, another
        // configuration change): this one was made from what served before
        // it, and would undo it.
        if !Arc::ptr_eq(&slots[i].plugin, &serving) {
            return Err(refused(ChangeError::Config(format!(
                "{name:?} changed while this configuration was being checked; try again"
            ))));
        }
        let stored = self
            .store(&slots, Some(i), name, None, &file)
            .map_err(refused)?;
        if let Some(path) = &stored {
            slots[i].keep_in(path);
        }
        let info = self.swap(&mut slots, i, new, file);
        Ok(Configured::Serving(Put {
            info,
            stored: stored.map(|p| p.display().to_string()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{alerts, holds, place, runtime, scratch, serving_anomaly};
    use super::super::{limits_file, read_plugin_file};
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> ConfigChange {
        ConfigChange {
            set: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ConfigChange::default()
        }
    }

    #[test]
    fn a_configuration_change_is_kept_on_disk_and_serves() {
        let (rule, registry) = serving_anomaly("configure-serves");
        assert_eq!(alerts(&registry, 35.0), 0);
        let done = registry
            .configure("anomaly", &set(&[("temperature_max", "30")]), None)
            .unwrap();
        let Configured::Serving(put) = done else {
            panic!("{done:?}")
        };
        assert_eq!(put.stored, Some(rule.display().to_string()));
        let digest = put.info.config_digest.clone().unwrap();
        assert_eq!(put.info.version, format!("1.0.0+cfg.{digest}"));
        assert_eq!(put.info.rule_version, "1.0.0");
        assert_eq!(alerts(&registry, 35.0), 1);
        // On disk, and the component untouched.
        let file = read_plugin_file(&rule).unwrap();
        assert_eq!(file.config.get("temperature_max"), Some("30"));
        assert!(holds(&rule, "anomaly"));
        // The watcher does not take its own write for a change.
        registry.poll_files(false);
        registry.poll_files(false);
        assert_eq!(registry.reloads_ok.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_refused_configuration_never_serves_and_says_why() {
        let (rule, registry) = serving_anomaly("configure-refused");
        let e = registry
            .configure("anomaly", &set(&[("temperature_max", "hot")]), None)
            .unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with("the plugin refused its configuration:") && e.contains("hot"),
            "{e}"
        );
        assert_eq!(alerts(&registry, 45.0), 1);
        assert!(!limits_file(&rule).exists());
        assert_eq!(registry.reloads_failed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn secrets_are_never_shown() {
        let (_rule, registry) = serving_anomaly("configure-secret");
        let change = ConfigChange {
            secrets: [("token".to_string(), "hunter2".to_string())].into(),
            ..ConfigChange::default()
        };
        registry.configure("anomaly", &change, None).unwrap();
        let shown = serde_json::to_string(&registry.list()).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"token\":\"(secret)\""), "{shown}");
    }

    #[test]
    fn pinned_keys_cannot_be_changed_and_unset_keys_cannot_be_removed() {
        let rule = place("anomaly", scratch("configure-pinned").join("anomaly.wasm"));
        let mut pinned = crate::rules::runtime::PluginConfig::new();
        pinned.set("temperature_max", "30").unwrap();
        let pins = [("anomaly".to_string(), pinned)].into();
        let registry = Registry::start_pinned(runtime(), &[rule], None, pins).unwrap();
        assert_eq!(alerts(&registry, 35.0), 1, "pinned at start-up");
        let e = registry
            .configure("anomaly", &set(&[("temperature_max", "50")]), None)
            .unwrap_err();
        assert!(e.to_string().contains("set by --plugin-config"), "{e}");
        let e = registry
            .configure(
                "anomaly",
                &ConfigChange {
                    unset: vec!["nothing".into()],
                    ..ConfigChange::default()
                },
                None,
            )
            .unwrap_err();
        assert!(e.to_string().contains("\"nothing\" is not set"), "{e}");
        let e = registry
            .configure("anomaly", &set(&[("a b", "1")]), None)
            .unwrap_err();
        assert!(e.to_string().contains("is not a configuration key"), "{e}");
    }

    #[test]
    fn a_configuration_on_trial_serves_only_when_promoted() {
        let (rule, registry) = serving_anomaly("configure-trial");
        let done = registry
            .configure(
                "anomaly",
                &set(&[("temperature_max", "30")]),
                Some(Mode::Shadow),
            )
            .unwrap();
        assert!(matches!(done, Configured::OnTrial(_)), "{done:?}");
        assert_eq!(alerts(&registry, 35.0), 0);
        assert!(!limits_file(&rule).exists());
        registry.promote("anomaly").unwrap();
        assert_eq!(alerts(&registry, 35.0), 1);
        assert_eq!(
            read_plugin_file(&rule)
                .unwrap()
                .config
                .get("temperature_max"),
            Some("30")
        );
        assert!(holds(&rule, "anomaly"));
    }
}
