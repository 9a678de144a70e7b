//! Changes made through the admin API: `put` installs or replaces a plugin,
//! `remove` takes one out.
//!
//! Changes stick: a `put` writes the component (and its limits, if given)
//! to disk before it serves, over the file the plugin was loaded from, or
//! for a new plugin into the plugin folder (`--plugin-dir`), which is read
//! at start-up. So a restart serves the versions served before it. Files
//! are written aside and renamed into place, so neither a reader nor the
//! watcher sees half a file; the watcher is told the new file's stamp, so
//! it does not load it a second time.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::limits::{PluginFile, PluginLimits, limits_file, write_plugin_file};
use super::{Put, Registry, Slot, Source, log_loaded, position};
use crate::rules::runtime::{Kind, LoadError, Plugin, PluginInfo};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The component did not load: not a component, the wrong contract, a
    /// `describe()` that failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A plugin may not change kind under its name.
    #[error("kind changed from {was} to {now}; remove the plugin and add the new one instead")]
    KindChanged {
        /// The kind serving now.
        was: Kind,
        /// The kind of the new component.
        now: Kind,
    },
    /// The component's `describe()` gives another name than the request.
    #[error("the component calls itself {said:?}, not {asked:?}")]
    NameMismatch {
        /// The name the component gives itself.
        said: String,
        /// The name in the request.
        asked: String,
    },
    /// Another slot serves a plugin of that name.
    #[error("another plugin is already called {0:?}")]
    Duplicate(String),
    /// No plugin of that name is loaded.
    #[error("no plugin called {0:?}")]
    NotFound(String),
    /// Limits or trial settings out of range.
    #[error("limits: {0}")]
    Limits(String),
    /// A new plugin's name that cannot name its file in the plugin folder.
    #[error(
        "{0:?} cannot be a file name in the plugin folder (use letters, digits, `.`, `_` and `-`)"
    )]
    BadFileName(String),
    /// A configuration key set by `--plugin-config` (or the settings
    /// file), which only a restart changes.
    #[error(
        "{key:?} is set by --plugin-config for {plugin:?}; change it there (the command line or settings file wins over the admin API)"
    )]
    Pinned {
        /// The plugin.
        plugin: String,
        /// The key.
        key: String,
    },
    /// A configuration change that is not one: a key that is not a key, or
    /// that is not set.
    #[error("configuration: {0}")]
    Config(String),
    /// Writing (or removing) the plugin's files failed.
    #[error("storing the plugin: {0}; the old version keeps serving")]
    Store(String),
    /// A promotion or rollback with no candidate on trial.
    #[error("no candidate is on trial beside {0:?}")]
    NoTrial(String),
}

/// Checks that a component loaded for the plugin `name` calls itself so.
pub(super) fn check_name(new: &Plugin, name: &str) -> Result<(), ChangeError> {
    if new.name() == name {
        return Ok(());
    }
    Err(ChangeError::NameMismatch {
        said: new.name().to_string(),
        asked: name.to_string(),
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that
/// neither a reader nor the watcher sees half a file.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_as(path, bytes, 0o644)
}

/// `write_atomically`, the file made with permissions `mode` (`0o600` for a
/// file holding secrets: never readable by others, not even for a moment).
pub(super) fn write_atomically_as(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    // An older file of that name kept its mode: set it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Registry {
    /// Installs or replaces the plugin called `name` (admin API), with
    /// `limits` over those it had. The component (and the limits, if any
    /// are given) is written to disk before it serves: over the file the
    /// plugin came from, or into the plugin folder; without either it
    /// serves from memory only, and the answer's `stored` is null.
    pub fn put(&self, name: &str, bytes: &[u8], limits: PluginLimits) -> Result<Put, ChangeError> {
        limits.check().map_err(ChangeError::Limits)?;
        // Compile before taking the lock: it may take seconds. The plugin
        // keeps its own configuration.
        let mut file = self.file_of(name).unwrap_or_default();
        file.limits = file.limits.overridden_by(limits);
        let new = self.load_with(bytes, name, name, &file);
        let mut slots = self.slots.lock().unwrap();
        let existing = slots.iter().position(|s| s.plugin.name() == name);
        let stored = new.map_err(ChangeError::Load).and_then(|new| {
            check_name(&new, name)?;
            if let Some(i) = existing {
                Self::check_swap(&slots, i, &new)?;
            }
            Ok((new, self.store(&slots, existing, name, Some(bytes), &file)?))
        });
        let (new, stored_in) = match stored {
            Ok(stored) => stored,
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = existing {
                    slots[i].load_failed(e.to_string());
                }
                return Err(e);
            }
        };
        let info = match existing {
            Some(i) => {
                if let Some(path) = &stored_in {
                    slots[i].keep_in(path);
                }
                self.swap(&mut slots, i, new, file)
            }
            None => self.add(&mut slots, stored_in.clone(), new, file),
        };
        if stored_in.is_none() {
            tracing::warn!(plugin = %name, "Plugin installed in memory only: it is gone after a restart (set --plugin-dir to keep it).");
        }
        Ok(Put {
            info,
            stored: stored_in.map(|p| p.display().to_string()),
        })
    }

    /// Serves `new` in a slot of its own, kept in `file` if there is one.
    fn add(
        &self,
        slots: &mut Vec<Slot>,
        file: Option<PathBuf>,
        new: Plugin,
        plugin_file: PluginFile,
    ) -> PluginInfo {
        let seen = file.as_deref().and_then(super::watch::stamp);
        let source = file.map_or(Source::Admin, Source::File);
        let new = self.counted(new, &source);
        let info = new.info().clone();
        log_loaded(&new, &source, "Plugin added.");
        self.record(&info, "added", Some(source.describe()));
        slots.push(Slot::new(source, new, plugin_file, seen));
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.publish(slots);
        info
    }

    /// Writes a component (unless `bytes` is `None`: it is unchanged) and
    /// its file of limits and configuration (if it holds any) where the
    /// plugin called `name` is kept: its own file, else the plugin folder;
    /// `None` when there is neither.
    pub(super) fn store(
        &self,
        slots: &[Slot],
        existing: Option<usize>,
        name: &str,
        bytes: Option<&[u8]>,
        plugin_file: &PluginFile,
    ) -> Result<Option<PathBuf>, ChangeError> {
        let file = match existing.map(|i| &slots[i].source) {
            Some(Source::File(path)) => Some(path.clone()),
            _ => match &self.dir {
                Some(dir) => {
                    let usable = !name.starts_with('.')
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                    if !usable {
                        return Err(ChangeError::BadFileName(name.into()));
                    }
                    Some(dir.join(format!("{name}.wasm")))
                }
                None => None,
            },
        };
        if let Some(path) = &file {
            bytes
                .map_or(Ok(()), |b| write_atomically(path, b))
                .and_then(|()| {
                    let on_disk = limits_file(path).exists();
                    if *plugin_file == PluginFile::default() && !on_disk {
                        Ok(())
                    } else {
                        write_plugin_file(path, plugin_file)
                    }
                })
                .map_err(|e| ChangeError::Store(format!("writing {}: {e}", path.display())))?;
        }
        Ok(file)
    }

    /// Removes the plugin called `name` (admin API).
    pub fn remove(&self, name: &str) -> Result<(), ChangeError> {
        let mut slots = self.slots.lock().unwrap();
        let i = position(&slots, name)?;
        // A file of the plugin folder goes with it; a file given with
        // --plugin is the operator's, and stays.
        if let (Source::File(path), Some(dir)) = (&slots[i].source, &self.dir)
            && path.parent() == Some(dir.as_path())
        {
            std::fs::remove_file(path)
                .map_err(|e| ChangeError::Store(format!("removing {}: {e}", path.display())))?;
            let _ = std::fs::remove_file(limits_file(path));
        }
        let slot = slots.remove(i);
        if let Some(c) = &slot.trial {
            c.trial.stop("the plugin was removed");
        }
        tracing::info!(plugin = %name, version = %slot.plugin.info().version, "Plugin removed.");
        self.record(slot.plugin.info(), "removed", None);
        self.publish(&slots);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::read_limits;
    use super::super::testing::{
        actions, alerts, component, given_and_folder, holds, place, runtime, scratch, serving,
        serving_anomaly, serving_version, version_counts, watcher_sees_a_change,
    };
    use super::*;

    const NO_LIMITS: PluginLimits = PluginLimits {
        deadline: None,
        memory_mib: None,
    };

    #[test]
    fn a_put_is_written_over_its_file_before_it_serves() {
        let (rule, registry) = serving_anomaly("put-over-file");
        let limits = PluginLimits {
            deadline: Some(Duration::from_millis(250)),
            memory_mib: Some(96),
        };
        let put = registry
            .put("anomaly", &component("anomaly-rejects"), limits)
            .unwrap();
        assert_eq!(put.info.version, "1.1.0-rejects");
        assert_eq!(put.stored, Some(rule.display().to_string()));
        assert!(holds(&rule, "anomaly-rejects"));
        assert_eq!(read_limits(&rule), Ok(limits));
        assert_eq!(serving_version(&registry, "anomaly"), "1.1.0-rejects");
        assert_eq!(alerts(&registry, 45.0), 1);
        let p = &registry.list()[0];
        assert_eq!((p.deadline_ms, p.memory_mib), (250.0, 96));
        // The watcher knows the file it was written to: no second load.
        assert!(!watcher_sees_a_change(&registry, "anomaly"));
        assert_eq!(actions(&registry, "anomaly"), ["loaded", "swapped"]);
        // A restart serves what was put, with its limits.
        let again = serving(std::slice::from_ref(&rule));
        let p = &again.list()[0];
        assert_eq!(
            (p.info.version.as_str(), p.deadline_ms, p.memory_mib),
            ("1.1.0-rejects", 250.0, 96)
        );
    }

    #[test]
    fn a_new_plugin_is_put_into_the_folder_and_served_after_a_restart() {
        let folder = scratch("put-into-folder");
        let registry = Registry::start(runtime(), &[], Some(&folder)).unwrap();
        let put = registry
            .put("anomaly", &component("anomaly"), NO_LIMITS)
            .unwrap();
        let file = folder.join("anomaly.wasm");
        assert_eq!(put.stored, Some(file.display().to_string()));
        assert!(holds(&file, "anomaly"));
        assert!(!limits_file(&file).exists());
        assert_eq!(alerts(&registry, 45.0), 1);
        assert_eq!(actions(&registry, "anomaly"), ["added"]);
        assert!(!watcher_sees_a_change(&registry, "anomaly"));
        let again = Registry::start(runtime(), &[], Some(&folder)).unwrap();
        assert_eq!(alerts(&again, 45.0), 1);
    }

    #[test]
    fn without_a_folder_a_new_plugin_serves_from_memory() {
        let registry = serving(&[]);
        let put = registry
            .put("anomaly", &component("anomaly"), NO_LIMITS)
            .unwrap();
        assert_eq!(put.stored, None);
        assert_eq!(alerts(&registry, 45.0), 1);
        assert_eq!(registry.list()[0].origin, Source::Admin.describe());
    }

    #[test]
    fn a_put_that_cannot_be_stored_does_not_serve() {
        let folder = scratch("put-unstorable");
        place("anomaly", folder.join("anomaly.wasm"));
        let registry = Registry::start(runtime(), &[], Some(&folder)).unwrap();
        // A folder where the file would go: the rename into place fails.
        std::fs::create_dir(folder.join("trend.wasm")).unwrap();
        let e = registry
            .put("trend", &component("trend"), NO_LIMITS)
            .unwrap_err();
        assert!(matches!(e, ChangeError::Store(_)), "{e}");
        assert_eq!(registry.current().trend.len(), 0);
        assert_eq!(registry.list().len(), 1);
        // An existing plugin whose folder is gone keeps serving its version.
        std::fs::remove_dir_all(&folder).unwrap();
        let e = registry
            .put("anomaly", &component("anomaly-rejects"), NO_LIMITS)
            .unwrap_err();
        assert!(matches!(e, ChangeError::Store(_)), "{e}");
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        let p = &registry.list()[0];
        assert_eq!((p.info.version.as_str(), p.load_failures), ("1.0.0", 1));
        assert_eq!(registry.reloads_failed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_put_is_refused_for_another_name_kind_or_an_unusable_file_name() {
        let folder = scratch("put-refused");
        let rule = place("anomaly", folder.join("anomaly.wasm"));
        let registry = Registry::start(runtime(), &[], Some(&folder)).unwrap();
        let other = component("anomaly-rejects");
        let e = registry.put("other", &other, NO_LIMITS).unwrap_err();
        assert!(
            matches!(&e, ChangeError::NameMismatch { said, asked } if said == "anomaly" && asked == "other"),
            "{e}"
        );
        let e = registry
            .put("anomaly", &other[..1000], NO_LIMITS)
            .unwrap_err();
        assert!(matches!(e, ChangeError::Load(_)), "{e}");
        let too_long = PluginLimits {
            deadline: Some(Duration::from_secs(7200)),
            memory_mib: None,
        };
        let e = registry.put("anomaly", &other, too_long).unwrap_err();
        assert!(matches!(e, ChangeError::Limits(_)), "{e}");
        // The component that did not load counts against the plugin; the
        // wrong name (no plugin of that name) and the limits do not.
        assert_eq!(registry.list()[0].load_failures, 1);
        assert_eq!(registry.reloads_failed.load(Ordering::Relaxed), 2);
        assert!(holds(&rule, "anomaly"));
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
    }

    #[test]
    fn removing_a_plugin_takes_its_folder_file_but_not_a_given_one() {
        let (given, folder) = given_and_folder("remove");
        let kept = place("trend", folder.join("trend.wasm"));
        std::fs::write(limits_file(&kept), "memory-mib = 32\n").unwrap();
        let registry =
            Registry::start(runtime(), std::slice::from_ref(&given), Some(&folder)).unwrap();
        alerts(&registry, 20.0);

        registry.remove("trend").unwrap();
        assert!(!kept.exists() && !limits_file(&kept).exists());
        assert_eq!(registry.current().trend.len(), 0);
        registry.remove("anomaly").unwrap();
        assert!(given.exists());
        assert_eq!(registry.current().anomaly.len(), 0);
        assert!(registry.list().is_empty());
        assert!(matches!(
            registry.remove("anomaly"),
            Err(ChangeError::NotFound(_))
        ));
        // Its counts outlive it.
        assert_eq!(
            version_counts(&registry, "anomaly"),
            [("1.0.0".into(), 1, false)]
        );
    }
}
