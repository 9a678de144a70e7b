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
//! inode) every `POLL`. A changed file is loaded once its metadata has stayed
//! the same for one more poll, which skips most half-written states; one
//! caught anyway fails to load and is retried when the file changes again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::runtime::{Kind, LoadError, Plugin, PluginInfo, Runtime};
use super::{Rule, RuleSet};

/// How often plugin files are checked for changes.
pub const POLL: Duration = Duration::from_millis(25);

/// Where a slot's component comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    File(PathBuf),
    Admin,
}

/// File metadata that changes when a file is replaced or rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

struct Slot {
    origin: Origin,
    plugin: Arc<Plugin>,
    loaded_at: chrono::DateTime<chrono::Utc>,
    load_failures: u64,
    last_load_error: Option<String>,
    /// Metadata of the file as last loaded (or last failed).
    seen: Option<Stamp>,
    /// Metadata seen changed on the previous poll, waiting to settle.
    settling: Option<Stamp>,
}

/// The loaded plugins, and the `RuleSet` the pipeline reads.
pub struct Registry {
    runtime: Arc<Runtime>,
    slots: Mutex<Vec<Slot>>,
    current: RwLock<Arc<RuleSet>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
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
}

impl Registry {
    /// Loads every file; any failure stops start-up.
    pub fn from_files(runtime: Arc<Runtime>, paths: &[PathBuf]) -> anyhow::Result<Registry> {
        let registry = Registry {
            runtime,
            slots: Mutex::new(Vec::new()),
            current: RwLock::new(Arc::new(RuleSet::default())),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        };
        {
            let mut slots = registry.slots.lock().unwrap();
            for path in paths {
                let seen = stamp(path);
                let plugin = registry
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
                log_loaded(&plugin, &Origin::File(path.clone()), "Plugin loaded.");
                slots.push(Slot::new(Origin::File(path.clone()), plugin, seen));
            }
            registry.publish(&slots);
        }
        Ok(registry)
    }

    fn load_file(&self, path: &Path) -> Result<Plugin, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        self.runtime
            .load(&bytes, &path.display().to_string())
            .map_err(|e| e.to_string())
    }

    /// The rules to run the next batch with.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.read().unwrap().clone()
    }

    fn publish(&self, slots: &[Slot]) {
        let mut set = RuleSet::default();
        for s in slots {
            set.push(s.plugin.clone() as Arc<dyn Rule>);
        }
        *self.current.write().unwrap() = Arc::new(set);
    }

    fn failed(&self, slot: &mut Slot, error: String) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %slot.plugin.name(), origin = ?slot.origin, %error, "Plugin reload failed; the old version keeps serving.");
        slot.load_failures += 1;
        slot.last_load_error = Some(error);
    }

    /// Replaces slot `i`'s plugin with `new` if it is the same kind.
    fn swap(&self, slots: &mut [Slot], i: usize, new: Plugin) -> Result<PluginInfo, ChangeError> {
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
        let info = new.info().clone();
        let slot = &mut slots[i];
        tracing::info!(
            plugin = %info.name,
            from = %slot.plugin.info().version,
            to = %info.version,
            sha256 = %&info.sha256[..12],
            "Plugin swapped."
        );
        slot.plugin = Arc::new(new);
        slot.loaded_at = chrono::Utc::now();
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.publish(slots);
        Ok(info)
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
                Ok(new) if new.info().sha256 == slot.plugin.info().sha256 && !force => {}
                Ok(new) => {
                    if let Err(e) = self.swap(&mut slots, i, new) {
                        self.failed(&mut slots[i], e.to_string());
                    }
                }
                Err(e) => self.failed(slot, e),
            }
        }
    }

    /// Installs or replaces the plugin called `name` (admin API).
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<PluginInfo, ChangeError> {
        let new = self.runtime.load(bytes, name).map_err(ChangeError::Load);
        let mut slots = self.slots.lock().unwrap();
        let existing = slots.iter().position(|s| s.plugin.name() == name);
        let new = match new {
            Ok(p) => p,
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = existing {
                    slots[i].load_failures += 1;
                    slots[i].last_load_error = Some(e.to_string());
                }
                return Err(e);
            }
        };
        if new.name() != name {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return Err(ChangeError::NameMismatch {
                said: new.name().to_string(),
                asked: name.to_string(),
            });
        }
        match existing {
            Some(i) => self.swap(&mut slots, i, new).inspect_err(|_| {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            }),
            None => {
                let info = new.info().clone();
                log_loaded(&new, &Origin::Admin, "Plugin added.");
                slots.push(Slot::new(Origin::Admin, new, None));
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.publish(&slots);
                Ok(info)
            }
        }
    }

    /// Removes the plugin called `name` (admin API).
    pub fn remove(&self, name: &str) -> Result<(), ChangeError> {
        let mut slots = self.slots.lock().unwrap();
        let i = slots
            .iter()
            .position(|s| s.plugin.name() == name)
            .ok_or_else(|| ChangeError::NotFound(name.into()))?;
        let slot = slots.remove(i);
        tracing::info!(plugin = %name, version = %slot.plugin.info().version, "Plugin removed.");
        self.publish(&slots);
        Ok(())
    }

    /// Every plugin with its counters, for `GET /plugins` and metrics.
    pub fn list(&self) -> Vec<PluginStatus> {
        let slots = self.slots.lock().unwrap();
        slots
            .iter()
            .map(|s| {
                let st = s.plugin.stats();
                PluginStatus {
                    info: s.plugin.info().clone(),
                    origin: match &s.origin {
                        Origin::File(p) => p.display().to_string(),
                        Origin::Admin => "admin".into(),
                    },
                    loaded_at: s
                        .loaded_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    calls: st.calls.load(Ordering::Relaxed),
                    failures: st.failures.load(Ordering::Relaxed),
                    call_seconds: st.nanos.load(Ordering::Relaxed) as f64 / 1e9,
                    last_failure: st.last_failure.lock().unwrap().clone(),
                    load_failures: s.load_failures,
                    last_load_error: s.last_load_error.clone(),
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
                    drop(registry);
                    std::thread::sleep(POLL);
                }
            })
            .expect("spawning the plugin watcher");
    }
}

impl Slot {
    fn new(origin: Origin, plugin: Plugin, seen: Option<Stamp>) -> Slot {
        Slot {
            origin,
            plugin: Arc::new(plugin),
            loaded_at: chrono::Utc::now(),
            load_failures: 0,
            last_load_error: None,
            seen,
            settling: None,
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

/// One plugin as `GET /plugins` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    #[serde(flatten)]
    pub info: PluginInfo,
    pub origin: String,
    pub loaded_at: String,
    pub calls: u64,
    pub failures: u64,
    pub call_seconds: f64,
    pub last_failure: Option<String>,
    pub load_failures: u64,
    pub last_load_error: Option<String>,
}
