//! The plugins a running streamhost serves with, and how they change without
//! a restart.
//!
//! Each plugin lives in a *slot* (from a `--plugin` file, the plugin folder,
//! or installed through the admin API). A change builds the new version
//! aside: read, compile, pre-instantiate, call `describe()` and check it is
//! the same kind, all on the caller's thread (the file watcher or an admin
//! request), never on the processing path. Only then is one pointer
//! flipped: the published `RuleSet`. The pipeline takes the current
//! `RuleSet` at the start of each batch, so a batch in flight finishes on
//! the versions it started with and the next one uses the new version. A
//! load that fails leaves the slot serving its old version and records the
//! failure.
//!
//! Counts: every version ever loaded keeps its counters for the life of the
//! process (`versions`), so a swap adds a series and never resets one; a
//! version loaded again (a rollback) counts on where it left off.
//!
//! This file holds the slots, start-up, loading and the one swap every
//! change ends in; each way a slot changes has its own file:
//! - `watch`: plugin files polled for changes, and SIGHUP's reload;
//! - `change`: the admin API's `put` and `remove`, kept on disk;
//! - `trials`: candidates on trial beside a serving version;
//! - `limits`: a plugin's own limits and configuration, and the file beside
//!   its component;
//! - `configure`: configuration changes (admin API), swapped like a `put`;
//! - `status`: what `GET /plugins` and the metrics read, and the history.

mod change;
mod configure;
mod limits;
mod status;
#[cfg(test)]
mod testing;
mod trials;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::runtime::{Kind, LoadError, Plugin, PluginConfig, PluginInfo, Runtime, Stats};
use super::trial::Policy;
use super::{Rule, RuleSet};

pub use change::ChangeError;
pub use configure::{ConfigChange, Configured};
pub use limits::{PluginFile, PluginLimits, limits_file, read_limits, read_plugin_file};
pub use status::{Event, PluginStatus, Put, TrialStatus, VersionStatus};
pub use watch::POLL;

/// Where a slot's component comes from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// A file, watched: given with `--plugin`, found in the plugin folder,
    /// or written there by a `put`.
    File(PathBuf),
    /// Installed through the admin API with no plugin folder to keep it:
    /// gone after a restart.
    Admin,
}

impl Source {
    /// As `GET /plugins` shows it.
    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Admin => "admin (in memory only: no --plugin-dir)".into(),
        }
    }
}

/// One version of a plugin, ever loaded by this process, and its counters.
struct Version {
    name: String,
    version: String,
    kind: Kind,
    sha256: String,
    /// Where it was loaded from, as `GET /plugins` shows it.
    source: String,
    loaded_at: chrono::DateTime<chrono::Utc>,
    stats: Arc<Stats>,
}

/// A plugin being served, and what is known of its changes.
struct Slot {
    source: Source,
    plugin: Arc<Plugin>,
    /// The plugin's own limits, as loaded.
    limits: PluginLimits,
    /// Its configuration from its file (or the admin API), without what
    /// `--plugin-config` pins over it.
    config: PluginConfig,
    loaded_at: chrono::DateTime<chrono::Utc>,
    load_failures: u64,
    last_load_error: Option<String>,
    /// Metadata of the file as last loaded (or last failed).
    seen: Option<watch::Stamp>,
    /// Metadata seen changed on the previous poll, waiting to settle.
    settling: Option<watch::Stamp>,
    /// A candidate version on trial beside the serving one.
    trial: Option<trials::Candidate>,
    /// Bumped by every change of what serves or where it is kept, so that a
    /// change made while the watcher was loading the files wins over what
    /// the watcher loaded.
    generation: u64,
}

/// The loaded plugins, and the `RuleSet` the pipeline reads.
pub struct Registry {
    runtime: Arc<Runtime>,
    /// Where `put` keeps plugins that have no file yet.
    dir: Option<PathBuf>,
    slots: Mutex<Vec<Slot>>,
    /// Every version loaded since start-up, oldest first.
    versions: Mutex<Vec<Version>>,
    current: RwLock<Arc<RuleSet>>,
    /// Changes that took effect: a file or a `put` swapped in, a plugin
    /// added, a candidate promoted.
    pub reloads_ok: AtomicU64,
    /// Changes refused: a file that failed to load, a `put` refused.
    pub reloads_failed: AtomicU64,
    /// Candidates rolled back, by hand or automatically.
    pub rollbacks: AtomicU64,
    /// Candidates rolled back by the rollback policy.
    pub automatic_rollbacks: AtomicU64,
    policy: Mutex<Policy>,
    /// Changes by plugin name, oldest first, at most `status::HISTORY` each.
    history: Mutex<Vec<(String, Event)>>,
    /// Configuration given on the command line or in the settings file
    /// (`--plugin-config NAME.KEY=VALUE`), by plugin name: set over each
    /// plugin's own, and not changeable through the admin API.
    pinned: BTreeMap<String, PluginConfig>,
}

impl Registry {
    /// Loads every file; any failure stops start-up.
    pub fn from_files(runtime: Arc<Runtime>, paths: &[PathBuf]) -> anyhow::Result<Registry> {
        Registry::start(runtime, paths, None)
    }

    /// Loads every file, then every `*.wasm` of the plugin folder `dir`
    /// (created if missing), in name order; any failure stops start-up.
    pub fn start(
        runtime: Arc<Runtime>,
        paths: &[PathBuf],
        dir: Option<&Path>,
    ) -> anyhow::Result<Registry> {
        Registry::start_pinned(runtime, paths, dir, BTreeMap::new())
    }

    /// `start`, with configuration `pinned` over the plugins' own, by
    /// plugin name (`--plugin-config`); a name no plugin has stops
    /// start-up.
    pub fn start_pinned(
        runtime: Arc<Runtime>,
        paths: &[PathBuf],
        dir: Option<&Path>,
        pinned: BTreeMap<String, PluginConfig>,
    ) -> anyhow::Result<Registry> {
        let mut paths = paths.to_vec();
        if let Some(dir) = dir {
            let found = plugin_folder(dir, &paths)?;
            paths.extend(found);
        }
        let registry = Registry {
            runtime,
            dir: dir.map(Path::to_path_buf),
            slots: Mutex::new(Vec::new()),
            versions: Mutex::new(Vec::new()),
            current: RwLock::new(Arc::new(RuleSet::default())),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            rollbacks: AtomicU64::new(0),
            automatic_rollbacks: AtomicU64::new(0),
            policy: Mutex::new(Policy::default()),
            history: Mutex::new(Vec::new()),
            pinned,
        };
        {
            let mut slots = registry.slots.lock().unwrap();
            for path in &paths {
                let seen = watch::stamp(path);
                let (plugin, file) = registry
                    .load_file(path)
                    .map_err(|e| anyhow::anyhow!("loading plugin {}: {e}", path.display()))?;
                if let Some(other) = slots.iter().find(|s| s.plugin.name() == plugin.name()) {
                    anyhow::bail!(
                        "plugins {:?} and {} both call themselves {:?}; names must be unique",
                        other.source,
                        path.display(),
                        plugin.name()
                    );
                }
                let source = Source::File(path.clone());
                let plugin = registry.counted(plugin, &source);
                log_loaded(&plugin, &source, "Plugin loaded.");
                registry.record(plugin.info(), "loaded", Some(source.describe()));
                slots.push(Slot::new(source, plugin, file, seen));
            }
            if let Some(name) = registry
                .pinned
                .keys()
                .find(|n| !slots.iter().any(|s| s.plugin.name() == n.as_str()))
            {
                anyhow::bail!(
                    "--plugin-config names the plugin {name:?}, but no plugin calls itself so"
                );
            }
            registry.publish(&slots);
        }
        Ok(registry)
    }

    /// Loads the component at `path` with the file beside it.
    fn load_file(&self, path: &Path) -> Result<(Plugin, PluginFile), String> {
        let file = read_plugin_file(path)?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let plugin = self
            .load_with(&bytes, &path.display().to_string(), &stem, &file)
            .map_err(|e| e.to_string())?;
        Ok((plugin, file))
    }

    /// Loads a component with `file`'s limits over the runtime's defaults
    /// and its configuration under the pinned one. `label` names it in logs
    /// until its own name is known; `name` is the name it is expected to
    /// have, whose pinned configuration it is first described with.
    fn load_with(
        &self,
        bytes: &[u8],
        label: &str,
        name: &str,
        file: &PluginFile,
    ) -> Result<Plugin, LoadError> {
        let config = self.effective(name, &file.config);
        let mut plugin = self.runtime.load_configured(bytes, label, &config)?;
        if plugin.name() != name && self.pinned.contains_key(plugin.name()) {
            // Named otherwise than expected: describe it again with its own
            // name's pinned configuration.
            plugin = plugin.configured(&self.effective(plugin.name(), &file.config))?;
        }
        let defaults = self.runtime.default_limits();
        let limits = file.limits;
        plugin.set_limits(
            limits.deadline.unwrap_or(defaults.deadline),
            limits.memory_mib.map_or(defaults.memory_bytes, |m| m << 20),
        );
        Ok(plugin)
    }

    /// The configuration the plugin called `name` runs with: `own`, with
    /// what `--plugin-config` pins over it.
    fn effective(&self, name: &str, own: &PluginConfig) -> PluginConfig {
        match self.pinned.get(name) {
            Some(pinned) => own.overridden_by(pinned),
            None => own.clone(),
        }
    }

    /// `plugin`, counting into its version's counters: new ones, or those of
    /// the same component loaded before under the same name.
    fn counted(&self, mut plugin: Plugin, source: &Source) -> Plugin {
        let mut versions = self.versions.lock().unwrap();
        let info = plugin.info();
        let stats = match versions
            .iter()
            .find(|v| v.name == info.name && v.sha256 == info.sha256 && v.version == info.version)
        {
            Some(v) => v.stats.clone(),
            None => {
                let stats = Arc::new(Stats::default());
                versions.push(Version {
                    name: info.name.clone(),
                    version: info.version.clone(),
                    kind: info.kind,
                    sha256: info.sha256.clone(),
                    source: source.describe(),
                    loaded_at: chrono::Utc::now(),
                    stats: stats.clone(),
                });
                stats
            }
        };
        plugin.share_stats(stats);
        plugin
    }

    /// The file (limits and own configuration) the plugin called `name`
    /// was loaded with, if there is one.
    fn file_of(&self, name: &str) -> Option<PluginFile> {
        let slots = self.slots.lock().unwrap();
        slots
            .iter()
            .find(|s| s.plugin.name() == name)
            .map(Slot::file)
    }

    /// The rules to run the next batch with.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.read().unwrap().clone()
    }

    /// Flips the published `RuleSet` to what `slots` serve now.
    fn publish(&self, slots: &[Slot]) {
        let mut set = RuleSet::default();
        for s in slots {
            set.push(s.plugin.clone() as Arc<dyn Rule>);
            if let Some(c) = &s.trial {
                set.trials
                    .push((s.plugin.name().to_string(), c.trial.clone()));
            }
        }
        *self.current.write().unwrap() = Arc::new(set);
    }

    /// Sets when candidates are rolled back automatically (for trials
    /// started from now on).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap() = policy;
    }

    /// Checks that `new` may replace slot `i`'s plugin: the same kind, and
    /// no other slot's name.
    fn check_swap(slots: &[Slot], i: usize, new: &Plugin) -> Result<(), ChangeError> {
        let was = slots[i].plugin.kind();
        if new.kind() != was {
            return Err(ChangeError::KindChanged {
                was,
                now: new.kind(),
            });
        }
        if let Some(other) = slots
            .iter()
            .enumerate()
            .find(|(j, s)| *j != i && s.plugin.name() == new.name())
        {
            return Err(ChangeError::Duplicate(other.1.plugin.name().to_string()));
        }
        Ok(())
    }

    /// Replaces slot `i`'s plugin with `new` (checked by `check_swap`).
    fn swap(&self, slots: &mut [Slot], i: usize, new: Plugin, file: PluginFile) -> PluginInfo {
        let new = self.counted(new, &slots[i].source);
        let info = new.info().clone();
        let slot = &mut slots[i];
        tracing::info!(
            plugin = %info.name,
            from = %slot.plugin.info().version,
            to = %info.version,
            sha256 = %&info.sha256[..12],
            "Plugin swapped."
        );
        let detail = format!("replaced {}", slot.plugin.info().version);
        slot.plugin = Arc::new(new);
        slot.limits = file.limits;
        slot.config = file.config;
        slot.generation += 1;
        slot.loaded_at = chrono::Utc::now();
        // A trial compares against the version that served when it began.
        self.drop_trial(slot, "the serving version was replaced", &detail);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.record(&info, "swapped", Some(detail));
        self.publish(slots);
        info
    }
}

/// The `*.wasm` files of the plugin folder `dir` (created if missing), in
/// name order, but those among `given`.
fn plugin_folder(dir: &Path, given: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("creating the plugin folder {}: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading the plugin folder {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    found.sort();
    // A file given with --plugin that lives in the folder counts once.
    let given: Vec<PathBuf> = given.iter().filter_map(|p| p.canonicalize().ok()).collect();
    found.retain(|p| !p.canonicalize().is_ok_and(|c| given.contains(&c)));
    Ok(found)
}

/// The slot of the plugin called `name`.
fn position(slots: &[Slot], name: &str) -> Result<usize, ChangeError> {
    slots
        .iter()
        .position(|s| s.plugin.name() == name)
        .ok_or_else(|| ChangeError::NotFound(name.into()))
}

impl Slot {
    fn new(source: Source, plugin: Plugin, file: PluginFile, seen: Option<watch::Stamp>) -> Slot {
        Slot {
            source,
            plugin: Arc::new(plugin),
            limits: file.limits,
            config: file.config,
            loaded_at: chrono::Utc::now(),
            load_failures: 0,
            last_load_error: None,
            seen,
            settling: None,
            trial: None,
            generation: 0,
        }
    }

    /// What its file holds (or would hold): its limits and own configuration.
    fn file(&self) -> PluginFile {
        PluginFile {
            limits: self.limits,
            config: self.config.clone(),
        }
    }

    /// Counts a change of this plugin that was refused.
    fn load_failed(&mut self, error: String) {
        self.load_failures += 1;
        self.last_load_error = Some(error);
    }
}

fn log_loaded(plugin: &Plugin, source: &Source, message: &'static str) {
    tracing::info!(
        plugin = plugin.name(),
        version = %plugin.info().version,
        kind = %plugin.kind(),
        origin = ?source,
        "{message}"
    );
}

#[cfg(test)]
mod tests {
    use super::testing::{
        alerts, component, given_and_folder, place, runtime, scratch, source_of, start_error,
    };
    use super::*;

    #[test]
    fn start_serves_the_given_files_then_the_folder_in_name_order() {
        let (given, folder) = given_and_folder("start-folder");
        place("trend", folder.join("b-trend.wasm"));
        place("enrich", folder.join("a-enrich.wasm"));
        // Hidden files (a `put` in progress) are not plugins.
        std::fs::write(folder.join(".c.wasm.1.tmp"), b"half").unwrap();
        std::fs::write(folder.join(".d.wasm"), b"half").unwrap();
        let registry =
            Registry::start(runtime(), std::slice::from_ref(&given), Some(&folder)).unwrap();
        let names: Vec<String> = registry.list().into_iter().map(|p| p.info.name).collect();
        assert_eq!(names, ["anomaly", "enrich", "trend"]);
        let set = registry.current();
        assert_eq!(
            (set.transform.len(), set.trend.len(), set.anomaly.len()),
            (1, 1, 1)
        );
        assert_eq!(
            source_of(&registry, "enrich"),
            Source::File(folder.join("a-enrich.wasm"))
        );
        assert_eq!(alerts(&registry, 45.0), 1);
    }

    #[test]
    fn a_given_file_inside_the_folder_is_loaded_once() {
        let folder = scratch("start-given-in-folder");
        let given = place("anomaly", folder.join("anomaly.wasm"));
        let registry = Registry::start(runtime(), &[given], Some(&folder)).unwrap();
        assert_eq!(registry.list().len(), 1);
    }

    #[test]
    fn two_plugins_of_one_name_stop_start_up() {
        let dir = scratch("start-duplicate");
        let one = place("anomaly", dir.join("one.wasm"));
        let two = place("anomaly-rejects", dir.join("two.wasm"));
        let error = start_error(&[one, two]);
        assert!(
            error.contains("two.wasm") && error.contains("both call themselves \"anomaly\""),
            "{error}"
        );
    }

    #[test]
    fn a_file_that_does_not_load_stops_start_up() {
        let dir = scratch("start-broken");
        let broken = dir.join("broken.wasm");
        std::fs::write(&broken, &component("anomaly")[..1000]).unwrap();
        let error = start_error(&[broken]);
        assert!(
            error.contains("loading plugin") && error.contains("broken.wasm"),
            "{error}"
        );
    }
}
