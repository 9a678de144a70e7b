//! Noticing changed plugin files. Every `POLL`, each file slot's metadata
//! (size, modification time, inode, and the same of the limits file beside
//! it) is compared with what was last loaded. A changed file is loaded once
//! its metadata has stayed the same for one more poll, which skips most
//! half-written states; one caught anyway fails to load and is retried when
//! the file changes again. SIGHUP reloads every file slot at once.
//!
//! Why polling rather than `notify` (inotify): `metadata` follows symlinks,
//! so a file replaced by rename and a Kubernetes ConfigMap update (its
//! `..data` symlink flipped to a new folder) both show up as a new inode,
//! where inotify would need a watch on every folder along the symlink chain
//! and on the folder of each file, re-armed after each swap; inotify sees
//! nothing of changes made on NFS and other network filesystems by another
//! host, nor of some overlay filesystem changes, which a `stat` sees; the
//! settling rule needs a second look after the last change anyway, so
//! events would only trade the first `stat` for a debounce timer; and this
//! thread wakes every `POLL` regardless, to act on trial verdicts. The cost
//! is two `stat` calls per file slot every 25 ms.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::limits::{PluginFile, limits_file};
use super::{Registry, Slot, Source};
use crate::rules::runtime::Plugin;

/// How often plugin files are checked for changes.
pub const POLL: Duration = Duration::from_millis(25);

/// File metadata that changes when a file is replaced or rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

/// A component file's stamp and its limits file's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    component: FileStamp,
    limits: Option<FileStamp>,
}

/// The stamp of the component at `path`; `None` while it does not exist.
pub(super) fn stamp(path: &Path) -> Option<Stamp> {
    Some(Stamp {
        component: file_stamp(path)?,
        limits: file_stamp(&limits_file(path)),
    })
}

/// A file slot to load now: its index, file, stamp before loading, and
/// generation (see `Slot::generation`).
type Due = (usize, PathBuf, Option<Stamp>, u64);

impl Slot {
    /// Makes `path`, as it is on disk now, this slot's file: what the
    /// watcher sees next is this very file, not a change.
    pub(super) fn keep_in(&mut self, path: &Path) {
        self.source = Source::File(path.to_path_buf());
        self.seen = stamp(path);
        self.settling = None;
        self.generation += 1;
    }
}

impl Registry {
    /// Checks every file slot for changes and reloads settled ones; with
    /// `force`, reloads every file slot now (SIGHUP).
    pub fn poll_files(&self, force: bool) {
        // Find what to load without holding the lock during compilation.
        for (i, path, seen, generation) in self.due(force) {
            let loaded = self.load_file(&path);
            self.reloaded((i, path, seen, generation), loaded, force);
        }
    }

    /// The file slots to load: changed and settled, or all with `force`.
    fn due(&self, force: bool) -> Vec<Due> {
        let mut slots = self.slots.lock().unwrap();
        let mut due = Vec::new();
        for (i, s) in slots.iter_mut().enumerate() {
            let Source::File(path) = &s.source else {
                continue;
            };
            let now = stamp(path);
            if force {
                due.push((i, path.clone(), now, s.generation));
            } else if now != s.seen {
                if now.is_some() && now == s.settling {
                    due.push((i, path.clone(), now, s.generation));
                } else {
                    s.settling = now;
                }
            }
        }
        due
    }

    /// Swaps in what was loaded from slot `i`'s file, unless it is what
    /// serves already (and not `force`d), or counts the failure.
    fn reloaded(
        &self,
        (i, path, seen, generation): Due,
        loaded: Result<(Plugin, PluginFile), String>,
        force: bool,
    ) {
        let mut slots = self.slots.lock().unwrap();
        // The slot may have been removed or moved while the file loaded, or
        // changed (a `put`, a configuration change, a promotion): what was
        // loaded is then older than what serves, and the next poll looks
        // at the files again.
        let Some(slot) = slots
            .get_mut(i)
            .filter(|s| s.source == Source::File(path.to_path_buf()) && s.generation == generation)
        else {
            return;
        };
        slot.seen = seen;
        slot.settling = None;
        match loaded {
            Ok((new, file))
                if new.info().sha256 == slot.plugin.info().sha256
                    && file == slot.file()
                    && !force => {}
            Ok((new, file)) => match Self::check_swap(&slots, i, &new) {
                Ok(()) => {
                    self.swap(&mut slots, i, new, file);
                }
                Err(e) => self.failed(&mut slots[i], e.to_string()),
            },
            Err(e) => self.failed(slot, e),
        }
    }

    /// Records a file that failed to load: the old version keeps serving.
    fn failed(&self, slot: &mut Slot, error: String) {
        self.record(slot.plugin.info(), "load-failed", Some(error.clone()));
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %slot.plugin.name(), origin = ?slot.source, %error, "Plugin reload failed; the old version keeps serving.");
        slot.load_failed(error);
    }

    /// Starts the thread that watches plugin files and trial verdicts; it
    /// ends with the registry.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("streamhost-watch".into())
            .spawn(move || {
                while let Some(registry) = weak.upgrade() {
                    registry.poll_files(false);
                    registry.poll_trials();
                    drop(registry);
                    std::thread::sleep(POLL);
                }
            })
            .expect("spawning the plugin watcher");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::testing::{
        actions, alerts, component, holds, place, scratch, serving, serving_anomaly,
        serving_version, version_counts,
    };
    use super::super::{limits_file, read_plugin_file};
    use super::*;

    /// Replaces `path` the way deployments do: write aside, then rename.
    fn replace(path: &Path, name: &str) {
        let aside = path.with_extension("new");
        place(name, aside.clone());
        std::fs::rename(&aside, path).unwrap();
    }

    #[test]
    fn a_replaced_file_serves_once_settled_and_every_version_keeps_its_counts() {
        let (rule, registry) = serving_anomaly("watch-swap");
        assert_eq!(alerts(&registry, 45.0), 1);
        assert_eq!(
            version_counts(&registry, "anomaly"),
            [("1.0.0".into(), 1, true)]
        );

        replace(&rule, "anomaly-rejects");
        registry.poll_files(false);
        // Seen changed, not yet settled: still 1.0.0.
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        assert_eq!(alerts(&registry, 45.0), 1);
        registry.poll_files(false);
        assert_eq!(serving_version(&registry, "anomaly"), "1.1.0-rejects");
        assert_eq!(alerts(&registry, 45.0), 1);
        assert_eq!(alerts(&registry, 45.0), 1);
        assert_eq!(
            version_counts(&registry, "anomaly"),
            [
                ("1.0.0".into(), 2, false),
                ("1.1.0-rejects".into(), 2, true)
            ]
        );

        // Back to 1.0.0: its counters go on from where they were.
        replace(&rule, "anomaly");
        registry.poll_files(false);
        registry.poll_files(false);
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        assert_eq!(alerts(&registry, 45.0), 1);
        assert_eq!(
            version_counts(&registry, "anomaly"),
            [
                ("1.0.0".into(), 3, true),
                ("1.1.0-rejects".into(), 2, false)
            ]
        );
        assert_eq!(registry.reloads_ok.load(Ordering::Relaxed), 2);
        assert_eq!(
            actions(&registry, "anomaly"),
            ["loaded", "swapped", "swapped"]
        );
    }

    #[test]
    fn a_file_still_being_written_is_not_loaded() {
        let (rule, registry) = serving_anomaly("watch-half-written");
        let other = component("anomaly-rejects");
        let mut f = std::fs::File::create(&rule).unwrap();
        f.write_all(&other[..other.len() / 2]).unwrap();
        registry.poll_files(false);
        f.write_all(&other[other.len() / 2..]).unwrap();
        registry.poll_files(false);
        // Changed again since the last poll: not settled, so not loaded.
        let p = &registry.list()[0];
        assert_eq!((p.info.version.as_str(), p.load_failures), ("1.0.0", 0));
        registry.poll_files(false);
        let p = &registry.list()[0];
        assert_eq!(
            (p.info.version.as_str(), p.load_failures),
            ("1.1.0-rejects", 0)
        );
    }

    #[test]
    fn a_file_that_fails_to_load_leaves_the_old_version_serving() {
        let (rule, registry) = serving_anomaly("watch-broken");
        std::fs::write(&rule, &component("anomaly-rejects")[..1000]).unwrap();
        registry.poll_files(false);
        registry.poll_files(false);
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        let p = &registry.list()[0];
        assert_eq!((p.info.version.as_str(), p.load_failures), ("1.0.0", 1));
        assert!(p.last_load_error.is_some());
        assert_eq!(registry.reloads_failed.load(Ordering::Relaxed), 1);
        assert_eq!(actions(&registry, "anomaly"), ["loaded", "load-failed"]);
        // Not retried until the file changes again.
        registry.poll_files(false);
        registry.poll_files(false);
        assert_eq!(registry.list()[0].load_failures, 1);

        // Another kind under the same file: refused, named.
        replace(&rule, "trend");
        registry.poll_files(false);
        registry.poll_files(false);
        let p = &registry.list()[0];
        assert_eq!((p.info.version.as_str(), p.load_failures), ("1.0.0", 2));
        let error = p.last_load_error.as_deref().unwrap();
        assert!(
            error.contains("kind changed from anomaly to trend"),
            "{error}"
        );
        assert_eq!(alerts(&registry, 45.0), 1);
    }

    #[test]
    fn a_forced_reload_loads_every_file_now() {
        let (rule, registry) = serving_anomaly("watch-force");
        replace(&rule, "anomaly-rejects");
        registry.poll_files(true);
        assert_eq!(serving_version(&registry, "anomaly"), "1.1.0-rejects");
        // Forced, the same file is swapped in again.
        registry.poll_files(true);
        assert_eq!(registry.reloads_ok.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_file_swapped_behind_a_symlink_is_seen() {
        let dir = scratch("watch-symlink");
        // The layout of a Kubernetes ConfigMap volume.
        std::fs::create_dir(dir.join("v1")).unwrap();
        std::fs::create_dir(dir.join("v2")).unwrap();
        place("anomaly", dir.join("v1/anomaly.wasm"));
        place("anomaly-rejects", dir.join("v2/anomaly.wasm"));
        std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/anomaly.wasm", dir.join("anomaly.wasm")).unwrap();
        let registry = serving(&[dir.join("anomaly.wasm")]);
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        registry.poll_files(false);
        registry.poll_files(false);
        assert_eq!(serving_version(&registry, "anomaly"), "1.1.0-rejects");
    }

    #[test]
    fn a_changed_configuration_file_serves_once_settled() {
        let (rule, registry) = serving_anomaly("watch-config");
        assert_eq!(alerts(&registry, 35.0), 0);
        // Other thresholds beside the same component, written in place.
        let toml = limits_file(&rule);
        std::fs::write(&toml, "[config]\ntemperature_max = 30\n").unwrap();
        registry.poll_files(false);
        // Seen changed, not yet settled: the article's thresholds still.
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        assert_eq!(alerts(&registry, 35.0), 0);
        registry.poll_files(false);
        let configured = serving_version(&registry, "anomaly");
        let digest = registry.list()[0].info.config_digest.clone().unwrap();
        assert_eq!(configured, format!("1.0.0+cfg.{digest}"));
        assert_eq!(alerts(&registry, 35.0), 1);
        // The component is untouched, and the file not rewritten.
        assert!(holds(&rule, "anomaly"));
        let file = read_plugin_file(&rule).unwrap();
        assert_eq!(file.config.get("temperature_max"), Some("30"));

        // The file gone: the article's thresholds again.
        std::fs::remove_file(&toml).unwrap();
        registry.poll_files(false);
        registry.poll_files(false);
        assert_eq!(serving_version(&registry, "anomaly"), "1.0.0");
        assert_eq!(alerts(&registry, 35.0), 0);
        assert_eq!(registry.reloads_ok.load(Ordering::Relaxed), 2);
        assert_eq!(
            actions(&registry, "anomaly"),
            ["loaded", "swapped", "swapped"]
        );
    }
}
