//! The plugins a running streamhost serves with, and how they change without
//! a restart.
//!
//! Each plugin lives in a *slot* (from a `--plugin` file, or installed
//! through the admin API). A change builds the new version aside: read,
//! compile, pre-instantiate, call `describe()` and check it is the same kind,
//! all on the caller's thread (the file watcher or an admin request), never
//! on the processing path. Only then is one pointer flipped: the published
//! `RuleSet`. The pipeline takes the current `RuleSet` at the start of each
//! batch, so a batch in flight finishes on the versions it started with and
//! the next one uses the new version. A load that fails leaves the slot
//! serving its old version and records the failure.
//!
//! Files are watched by polling their metadata (size, modification time,
//! inode, and the same of the limits file beside it) every `POLL`. A changed
//! file is loaded once its metadata has stayed the same for one more poll,
//! which skips most half-written states; one caught anyway fails to load and
//! is retried when the file changes again.
//!
//! Changes stick: a `put` through the admin API writes the component (and
//! its limits, if given) to disk before it serves, over the file the
//! plugin was loaded from, or for a new plugin into the plugin folder
//! (`--plugin-dir`), which is read at start-up. So a restart serves the
//! versions served before it.
//!
//! Limits: each plugin's calls get the runtime's deadline and memory cap,
//! unless a limits file beside its component (`NAME.toml` beside
//! `NAME.wasm`: `deadline = "2s"`, `memory-mib = 256`) says otherwise.
//!
//! Counts: every version ever loaded keeps its counters for the life of the
//! process (`versions`), so a swap adds a series and never resets one; a
//! version loaded again (a rollback) counts on where it left off.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::runtime::{Kind, LoadError, Plugin, PluginInfo, Runtime, Stats};
use super::trial::{Mode, Policy, SideStatus, Trial};
use super::{Rule, RuleSet};

/// How often plugin files are checked for changes.
pub const POLL: Duration = Duration::from_millis(25);

/// Where a slot's component comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// A file, watched: given with `--plugin`, found in the plugin folder,
    /// or written there by a `put`.
    File(PathBuf),
    /// Installed through the admin API with no plugin folder to keep it:
    /// gone after a restart.
    Admin,
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::File(p) => p.display().to_string(),
            Origin::Admin => "admin (in memory only: no --plugin-dir)".into(),
        }
    }
}

/// A plugin's own limits, from the limits file beside its component or a
/// `put`; what is not set comes from the runtime's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginLimits {
    #[serde(default, with = "humantime_serde_opt")]
    pub deadline: Option<Duration>,
    pub memory_mib: Option<usize>,
}

/// `Option<Duration>` as humantime text (`"250ms"`, `"2s"`).
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

impl PluginLimits {
    /// `self`, with `other`'s settings where it has them.
    pub fn overridden_by(self, other: PluginLimits) -> PluginLimits {
        PluginLimits {
            deadline: other.deadline.or(self.deadline),
            memory_mib: other.memory_mib.or(self.memory_mib),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deadline.is_none() && self.memory_mib.is_none()
    }

    /// Checks the values are usable.
    pub fn check(&self) -> Result<(), String> {
        if self
            .deadline
            .is_some_and(|d| d.is_zero() || d > Duration::from_secs(3600))
        {
            return Err("deadline must be between 1ms and 1h".into());
        }
        if self.memory_mib.is_some_and(|m| m == 0 || m > 65536) {
            return Err("memory-mib must be between 1 and 65536".into());
        }
        Ok(())
    }

    fn to_toml(self) -> String {
        let mut out = String::from(
            "# Limits of this plugin's calls (written by `streamhost plugins put`).\n",
        );
        if let Some(d) = self.deadline {
            out += &format!("deadline = \"{}\"\n", humantime::format_duration(d));
        }
        if let Some(m) = self.memory_mib {
            out += &format!("memory-mib = {m}\n");
        }
        out
    }
}

/// The limits file of the component at `path`: `anomaly.toml` beside
/// `anomaly.wasm`.
pub fn limits_file(path: &Path) -> PathBuf {
    path.with_extension("toml")
}

/// Reads the limits file of the component at `path`; none is no limits.
pub fn read_limits(path: &Path) -> Result<PluginLimits, String> {
    let file = limits_file(path);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PluginLimits::default()),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    let limits: PluginLimits =
        toml::from_str(&text).map_err(|e| format!("{}: {}", file.display(), e.message()))?;
    limits
        .check()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(limits)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that
/// neither a reader nor the watcher sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

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
struct Stamp {
    component: FileStamp,
    limits: Option<FileStamp>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    Some(Stamp {
        component: file_stamp(path)?,
        limits: file_stamp(&limits_file(path)),
    })
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

struct Slot {
    origin: Origin,
    plugin: Arc<Plugin>,
    /// The plugin's own limits, as loaded.
    limits: PluginLimits,
    loaded_at: chrono::DateTime<chrono::Utc>,
    load_failures: u64,
    last_load_error: Option<String>,
    /// Metadata of the file as last loaded (or last failed).
    seen: Option<Stamp>,
    /// Metadata seen changed on the previous poll, waiting to settle.
    settling: Option<Stamp>,
    /// A candidate version on trial beside the serving one.
    trial: Option<Candidate>,
}

/// A candidate on trial: kept in memory only, until it is promoted.
struct Candidate {
    trial: Arc<Trial>,
    plugin: Arc<Plugin>,
    bytes: Vec<u8>,
    limits: PluginLimits,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// One change to a plugin, for its history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub at: String,
    pub action: &'static str,
    pub version: String,
    pub sha256: String,
    /// What else there is to say: the version replaced, the reason of a
    /// rollback, the error of a failed load.
    pub detail: Option<String>,
}

/// Events kept per plugin.
const HISTORY: usize = 50;

/// The loaded plugins, and the `RuleSet` the pipeline reads.
pub struct Registry {
    runtime: Arc<Runtime>,
    /// Where `put` keeps plugins that have no file yet.
    dir: Option<PathBuf>,
    slots: Mutex<Vec<Slot>>,
    /// Every version loaded since start-up, oldest first.
    versions: Mutex<Vec<Version>>,
    current: RwLock<Arc<RuleSet>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Candidates rolled back, by hand or automatically.
    pub rollbacks: AtomicU64,
    pub automatic_rollbacks: AtomicU64,
    policy: Mutex<Policy>,
    /// Changes by plugin name, oldest first, at most `HISTORY` each.
    history: Mutex<Vec<(String, Event)>>,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("kind changed from {was} to {now}; remove the plugin and add the new one instead")]
    KindChanged { was: Kind, now: Kind },
    #[error("the component calls itself {said:?}, not {asked:?}")]
    NameMismatch { said: String, asked: String },
    #[error("another plugin is already called {0:?}")]
    Duplicate(String),
    #[error("no plugin called {0:?}")]
    NotFound(String),
    #[error("limits: {0}")]
    Limits(String),
    #[error(
        "{0:?} cannot be a file name in the plugin folder (use letters, digits, `.`, `_` and `-`)"
    )]
    BadFileName(String),
    #[error("storing the plugin: {0}; the old version keeps serving")]
    Store(String),
    #[error("no candidate is on trial beside {0:?}")]
    NoTrial(String),
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
        let mut paths = paths.to_vec();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("creating the plugin folder {}: {e}", dir.display())
            })?;
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| anyhow::anyhow!("reading the plugin folder {}: {e}", dir.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect();
            found.sort();
            // A file given with --plugin that lives in the folder counts once.
            let given: Vec<PathBuf> = paths.iter().filter_map(|p| p.canonicalize().ok()).collect();
            found.retain(|p| !p.canonicalize().is_ok_and(|c| given.contains(&c)));
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
        };
        {
            let mut slots = registry.slots.lock().unwrap();
            for path in &paths {
                let seen = stamp(path);
                let (plugin, limits) = registry
                    .load_file(path)
                    .map_err(|e| anyhow::anyhow!("loading plugin {}: {e}", path.display()))?;
                if let Some(other) = slots.iter().find(|s| s.plugin.name() == plugin.name()) {
                    anyhow::bail!(
                        "plugins {:?} and {} both call themselves {:?}; names must be unique",
                        other.origin,
                        path.display(),
                        plugin.name()
                    );
                }
                let origin = Origin::File(path.clone());
                let plugin = registry.counted(plugin, &origin);
                log_loaded(&plugin, &origin, "Plugin loaded.");
                registry.record(plugin.info(), "loaded", Some(origin.describe()));
                slots.push(Slot::new(origin, plugin, limits, seen));
            }
            registry.publish(&slots);
        }
        Ok(registry)
    }

    /// Loads the component at `path` with the limits file beside it.
    fn load_file(&self, path: &Path) -> Result<(Plugin, PluginLimits), String> {
        let limits = read_limits(path)?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let plugin = self
            .load_with(&bytes, &path.display().to_string(), limits)
            .map_err(|e| e.to_string())?;
        Ok((plugin, limits))
    }

    /// Loads a component and gives it `limits` over the runtime's defaults.
    fn load_with(
        &self,
        bytes: &[u8],
        origin: &str,
        limits: PluginLimits,
    ) -> Result<Plugin, LoadError> {
        let mut plugin = self.runtime.load(bytes, origin)?;
        let defaults = self.runtime.default_limits();
        plugin.set_limits(
            limits.deadline.unwrap_or(defaults.deadline),
            limits.memory_mib.map_or(defaults.memory_bytes, |m| m << 20),
        );
        Ok(plugin)
    }

    /// `plugin`, counting into its version's counters: new ones, or those of
    /// the same component loaded before under the same name.
    fn counted(&self, mut plugin: Plugin, origin: &Origin) -> Plugin {
        let mut versions = self.versions.lock().unwrap();
        let info = plugin.info();
        let stats = match versions
            .iter()
            .find(|v| v.name == info.name && v.sha256 == info.sha256)
        {
            Some(v) => v.stats.clone(),
            None => {
                let stats = Arc::new(Stats::default());
                versions.push(Version {
                    name: info.name.clone(),
                    version: info.version.clone(),
                    kind: info.kind,
                    sha256: info.sha256.clone(),
                    source: origin.describe(),
                    loaded_at: chrono::Utc::now(),
                    stats: stats.clone(),
                });
                stats
            }
        };
        plugin.share_stats(stats);
        plugin
    }

    /// The rules to run the next batch with.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.read().unwrap().clone()
    }

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

    /// Adds an event to a plugin's history.
    fn record(&self, info: &PluginInfo, action: &'static str, detail: Option<String>) {
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

    fn failed(&self, slot: &mut Slot, error: String) {
        self.record(slot.plugin.info(), "load-failed", Some(error.clone()));
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %slot.plugin.name(), origin = ?slot.origin, %error, "Plugin reload failed; the old version keeps serving.");
        slot.load_failures += 1;
        slot.last_load_error = Some(error);
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
    fn swap(&self, slots: &mut [Slot], i: usize, new: Plugin, limits: PluginLimits) -> PluginInfo {
        let new = self.counted(new, &slots[i].origin);
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
        slot.limits = limits;
        slot.loaded_at = chrono::Utc::now();
        // A trial compares against the version that served when it began.
        if let Some(c) = slot.trial.take() {
            c.trial.stop("the serving version was replaced");
            self.record(c.plugin.info(), "trial-ended", Some(detail.clone()));
        }
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.record(&info, "swapped", Some(detail));
        self.publish(slots);
        info
    }

    /// Checks every file slot for changes and reloads settled ones; with
    /// `force`, reloads every file slot now (SIGHUP).
    pub fn poll_files(&self, force: bool) {
        // Find what to load without holding the lock during compilation.
        let todo: Vec<(usize, PathBuf, Option<Stamp>)> = {
            let mut slots = self.slots.lock().unwrap();
            let mut todo = Vec::new();
            for (i, s) in slots.iter_mut().enumerate() {
                let Origin::File(path) = &s.origin else {
                    continue;
                };
                let now = stamp(path);
                if force {
                    todo.push((i, path.clone(), now));
                } else if now != s.seen {
                    if now.is_some() && now == s.settling {
                        todo.push((i, path.clone(), now));
                    } else {
                        s.settling = now;
                    }
                }
            }
            todo
        };
        for (i, path, seen) in todo {
            let loaded = self.load_file(&path);
            let mut slots = self.slots.lock().unwrap();
            let Some(slot) = slots
                .get_mut(i)
                .filter(|s| s.origin == Origin::File(path.clone()))
            else {
                continue;
            };
            slot.seen = seen;
            slot.settling = None;
            match loaded {
                Ok((new, limits))
                    if new.info().sha256 == slot.plugin.info().sha256
                        && limits == slot.limits
                        && !force => {}
                Ok((new, limits)) => match Self::check_swap(&slots, i, &new) {
                    Ok(()) => {
                        self.swap(&mut slots, i, new, limits);
                    }
                    Err(e) => self.failed(&mut slots[i], e.to_string()),
                },
                Err(e) => self.failed(slot, e),
            }
        }
    }

    /// Installs or replaces the plugin called `name` (admin API), with
    /// `limits` over those it had. The component (and the limits, if any
    /// are given) is written to disk before it serves: over the file the
    /// plugin came from, or into the plugin folder; without either it
    /// serves from memory only, and the answer's `stored` is null.
    pub fn put(&self, name: &str, bytes: &[u8], limits: PluginLimits) -> Result<Put, ChangeError> {
        limits.check().map_err(ChangeError::Limits)?;
        let refuse = |slots: &mut [Slot], i: Option<usize>, e: ChangeError| {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = i {
                slots[i].load_failures += 1;
                slots[i].last_load_error = Some(e.to_string());
            }
            Err(e)
        };
        // Compile before taking the lock: it may take seconds.
        let previous = {
            let slots = self.slots.lock().unwrap();
            slots
                .iter()
                .find(|s| s.plugin.name() == name)
                .map(|s| s.limits)
                .unwrap_or_default()
        };
        let limits = previous.overridden_by(limits);
        let new = self
            .load_with(bytes, name, limits)
            .map_err(ChangeError::Load);
        let mut slots = self.slots.lock().unwrap();
        let existing = slots.iter().position(|s| s.plugin.name() == name);
        let new = match new {
            Ok(p) => p,
            Err(e) => return refuse(&mut slots, existing, e),
        };
        if new.name() != name {
            let e = ChangeError::NameMismatch {
                said: new.name().to_string(),
                asked: name.to_string(),
            };
            return refuse(&mut slots, existing, e);
        }
        if let Some(i) = existing
            && let Err(e) = Self::check_swap(&slots, i, &new)
        {
            return refuse(&mut slots, Some(i), e);
        }
        let file = match self.store(&slots, existing, name, bytes, limits) {
            Ok(file) => file,
            Err(e) => return refuse(&mut slots, existing, e),
        };
        let info = match existing {
            Some(i) => {
                if let Some(path) = &file {
                    // What the watcher sees next is this very file.
                    slots[i].origin = Origin::File(path.clone());
                    slots[i].seen = stamp(path);
                    slots[i].settling = None;
                }
                self.swap(&mut slots, i, new, limits)
            }
            None => {
                let origin = file.clone().map_or(Origin::Admin, Origin::File);
                let new = self.counted(new, &origin);
                let info = new.info().clone();
                log_loaded(&new, &origin, "Plugin added.");
                self.record(&info, "added", Some(origin.describe()));
                let seen = file.as_deref().and_then(stamp);
                slots.push(Slot::new(origin, new, limits, seen));
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.publish(&slots);
                info
            }
        };
        if file.is_none() {
            tracing::warn!(plugin = %name, "Plugin installed in memory only: it is gone after a restart (set --plugin-dir to keep it).");
        }
        Ok(Put {
            info,
            stored: file.map(|p| p.display().to_string()),
        })
    }

    /// Writes a component (and its limits, if any) where the plugin called
    /// `name` is kept: its own file, else the plugin folder; `None` when
    /// there is neither.
    fn store(
        &self,
        slots: &[Slot],
        existing: Option<usize>,
        name: &str,
        bytes: &[u8],
        limits: PluginLimits,
    ) -> Result<Option<PathBuf>, ChangeError> {
        let file = match existing.map(|i| &slots[i].origin) {
            Some(Origin::File(path)) => Some(path.clone()),
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
            write_atomically(path, bytes)
                .and_then(|()| {
                    if limits.is_empty() {
                        Ok(())
                    } else {
                        write_atomically(&limits_file(path), limits.to_toml().as_bytes())
                    }
                })
                .map_err(|e| ChangeError::Store(format!("writing {}: {e}", path.display())))?;
        }
        Ok(file)
    }

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
        if let Mode::Canary { percent } = mode
            && !(percent > 0.0 && percent <= 100.0)
        {
            return Err(ChangeError::Limits(format!(
                "a canary share must be above 0% and at most 100%, not {percent}%"
            )));
        }
        let previous = {
            let slots = self.slots.lock().unwrap();
            let slot = slots
                .iter()
                .find(|s| s.plugin.name() == name)
                .ok_or_else(|| ChangeError::NotFound(name.into()))?;
            slot.limits
        };
        let limits = previous.overridden_by(limits);
        let new = self.load_with(bytes, name, limits)?;
        let mut slots = self.slots.lock().unwrap();
        let i = position(&slots, name)?;
        if new.name() != name {
            return Err(ChangeError::NameMismatch {
                said: new.name().to_string(),
                asked: name.to_string(),
            });
        }
        Self::check_swap(&slots, i, &new)?;
        let new = Arc::new(self.counted(new, &Origin::Admin));
        let info = new.info().clone();
        let policy = *self.policy.lock().unwrap();
        let slot = &mut slots[i];
        if let Some(old) = slot.trial.take() {
            old.trial.stop("replaced by another candidate");
            self.record(
                old.plugin.info(),
                "trial-ended",
                Some("replaced by another candidate".into()),
            );
        }
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
            bytes: bytes.to_vec(),
            limits,
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
        let file = match self.store(&slots, Some(i), name, &c.bytes, c.limits) {
            Ok(file) => file,
            Err(e) => {
                slots[i].trial = Some(c);
                return Err(e);
            }
        };
        if let Some(path) = &file {
            // What the watcher sees next is this very file.
            slots[i].origin = Origin::File(path.clone());
            slots[i].seen = stamp(path);
            slots[i].settling = None;
        }
        let info = c.plugin.info().clone();
        let was = slots[i].plugin.info().version.clone();
        tracing::info!(plugin = %name, from = %was, to = %info.version, "Candidate promoted.");
        self.record(&info, "promoted", Some(format!("replaced {was}")));
        let slot = &mut slots[i];
        slot.plugin = c.plugin;
        slot.limits = c.limits;
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

    /// Removes the plugin called `name` (admin API).
    pub fn remove(&self, name: &str) -> Result<(), ChangeError> {
        let mut slots = self.slots.lock().unwrap();
        let i = position(&slots, name)?;
        // A file of the plugin folder goes with it; a file given with
        // --plugin is the operator's, and stays.
        if let (Origin::File(path), Some(dir)) = (&slots[i].origin, &self.dir)
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
                    origin: s.origin.describe(),
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
        // (name, sha256) of the serving versions, and of the candidates.
        type Ids = Vec<(String, String)>;
        let (serving, on_trial): (Ids, Ids) = {
            let slots = self.slots.lock().unwrap();
            let serving = slots
                .iter()
                .map(|s| (s.plugin.name().to_string(), s.plugin.info().sha256.clone()))
                .collect();
            let on_trial = slots
                .iter()
                .filter_map(|s| {
                    let c = s.trial.as_ref()?;
                    Some((s.plugin.name().to_string(), c.plugin.info().sha256.clone()))
                })
                .collect();
            (serving, on_trial)
        };
        let versions = self.versions.lock().unwrap();
        versions
            .iter()
            .map(|v| {
                let st = &v.stats;
                VersionStatus {
                    name: v.name.clone(),
                    version: v.version.clone(),
                    kind: v.kind,
                    sha256: v.sha256.clone(),
                    source: v.source.clone(),
                    loaded_at: rfc3339(v.loaded_at),
                    serving: serving.contains(&(v.name.clone(), v.sha256.clone())),
                    on_trial: on_trial.contains(&(v.name.clone(), v.sha256.clone())),
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

    /// Starts the thread that watches plugin files.
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

/// The slot of the plugin called `name`.
fn position(slots: &[Slot], name: &str) -> Result<usize, ChangeError> {
    slots
        .iter()
        .position(|s| s.plugin.name() == name)
        .ok_or_else(|| ChangeError::NotFound(name.into()))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Slot {
    fn new(origin: Origin, plugin: Plugin, limits: PluginLimits, seen: Option<Stamp>) -> Slot {
        Slot {
            origin,
            plugin: Arc::new(plugin),
            limits,
            loaded_at: chrono::Utc::now(),
            load_failures: 0,
            last_load_error: None,
            seen,
            settling: None,
            trial: None,
        }
    }
}

fn log_loaded(plugin: &Plugin, origin: &Origin, message: &'static str) {
    tracing::info!(
        plugin = plugin.name(),
        version = %plugin.info().version,
        kind = %plugin.kind(),
        origin = ?origin,
        "{message}"
    );
}

/// What a `put` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Put {
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
    #[serde(flatten)]
    pub info: PluginInfo,
    /// Where the serving version came from: its file, or the admin API.
    pub origin: String,
    pub loaded_at: String,
    /// The limits of its calls.
    pub deadline_ms: f64,
    pub memory_mib: usize,
    pub calls: u64,
    pub failures: u64,
    /// Records in the batches of successful calls.
    pub records: u64,
    pub call_seconds: f64,
    pub last_failure: Option<String>,
    pub load_failures: u64,
    pub last_load_error: Option<String>,
    pub versions: Vec<VersionStatus>,
    /// The candidate on trial beside it, if any.
    pub trial: Option<TrialStatus>,
    /// Its last changes, oldest first.
    pub history: Vec<Event>,
}

/// A trial as `GET /plugins` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialStatus {
    #[serde(flatten)]
    pub mode: Mode,
    pub version: String,
    pub sha256: String,
    pub started_at: String,
    /// The serving version's counts during the trial, and the candidate's.
    pub serving: SideStatus,
    pub candidate: SideStatus,
    /// Shadow: records compared, and those whose results differ.
    pub compared: u64,
    pub differing: u64,
    /// Shadow: results only the candidate gave, and only the serving
    /// version gave, by alert kind, trend or transform outcome.
    pub added: std::collections::BTreeMap<String, u64>,
    pub removed: std::collections::BTreeMap<String, u64>,
    pub policy: Policy,
    /// Set once the candidate was judged to be rolled back.
    pub verdict: Option<String>,
}

impl Candidate {
    fn status(&self) -> TrialStatus {
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

/// One version of a plugin and its counters since it was first loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionStatus {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub sha256: String,
    /// Where it was first loaded from.
    pub source: String,
    pub loaded_at: String,
    pub serving: bool,
    /// A candidate on trial beside the serving version.
    pub on_trial: bool,
    pub calls: u64,
    pub failures: u64,
    pub records: u64,
    pub call_seconds: f64,
    /// The largest linear memory an instance of it reached.
    pub peak_memory_mib: f64,
    /// The longest call, successful or not.
    pub slowest_call_ms: f64,
}
