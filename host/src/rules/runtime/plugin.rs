//! A loaded plugin: its pre-instantiated component, a pool of warm
//! instances, its limits and its counters, and the calls into it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::InstancePre;
use wasmtime::{Store, Trap};

use super::config::{PluginConfig, versioned};
use super::limits;
use super::store::StoreState;
use super::{CallError, Kind, LoadError, PluginInfo, Runtime, new_store};
use crate::contract::{
    AnomalyResults, Batch, TransformResults, TrendResults, WindowView, anomaly_rule,
    check_trend_fields, transform_rule, trend_rule, types,
};

/// The least time `describe()` gets, whatever the plugin's call deadline.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(10);

/// Export indices of the one interface a plugin provides.
#[derive(Clone)]
pub(super) enum Indices {
    Transform(transform_rule::GuestIndices),
    Trend(trend_rule::GuestIndices),
    Anomaly(anomaly_rule::GuestIndices),
}

impl Indices {
    pub(super) fn new(kind: Kind, pre: &InstancePre<StoreState>) -> Result<Self, String> {
        let e = |e: wasmtime::Error| format!("{e:#}");
        Ok(match kind {
            Kind::Transform => {
                Indices::Transform(transform_rule::GuestIndices::new(pre).map_err(e)?)
            }
            Kind::Trend => Indices::Trend(trend_rule::GuestIndices::new(pre).map_err(e)?),
            Kind::Anomaly => Indices::Anomaly(anomaly_rule::GuestIndices::new(pre).map_err(e)?),
        })
    }
}

/// Typed handles to a live instance's exports.
pub(super) enum Guest {
    Transform(transform_rule::Guest),
    Trend(trend_rule::Guest),
    Anomaly(anomaly_rule::Guest),
}

impl Guest {
    pub(super) fn describe(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<Result<types::PluginInfo, String>> {
        match self {
            Guest::Transform(g) => g.call_describe(store),
            Guest::Trend(g) => g.call_describe(store),
            Guest::Anomaly(g) => g.call_describe(store),
        }
    }
}

/// A live instance and its store.
pub(super) struct Warm {
    store: Store<StoreState>,
    guest: Guest,
}

/// Counters kept per loaded plugin.
#[derive(Default, Debug)]
pub struct Stats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls failed (trapped, timed out, out of memory, broke the contract).
    pub failures: AtomicU64,
    /// Time spent in calls, in nanoseconds.
    pub nanos: AtomicU64,
    /// Records in the batches of successful calls.
    pub records: AtomicU64,
    /// The largest linear memory any instance reached, in bytes.
    pub peak_memory: AtomicU64,
    /// The longest call, in nanoseconds.
    pub slowest_nanos: AtomicU64,
    /// The error of the last failed call.
    pub last_failure: Mutex<Option<String>>,
}

/// A loaded, checked plugin, ready to be called.
pub struct Plugin {
    pub(super) info: PluginInfo,
    pub(super) pre: InstancePre<StoreState>,
    pub(super) indices: Indices,
    pub(super) deadline: Duration,
    pub(super) memory_bytes: usize,
    /// Its configuration, and the same as its stores' `wasi:config` hold.
    pub(super) config: PluginConfig,
    pub(super) variables: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    /// What it may declare.
    pub(super) offer: Arc<super::Offer>,
    /// Warm instances not in a call right now.
    pub(super) warm: Mutex<Vec<Warm>>,
    pub(super) stats: Arc<Stats>,
}

impl Plugin {
    /// What the plugin said about itself, plus what the host knows.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The plugin's kind.
    pub fn kind(&self) -> Kind {
        self.info.kind
    }

    /// The counters its calls feed.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts into `stats` from now on (shared with other versions of the
    /// same plugin, so that counts live as long as the process).
    pub fn share_stats(&mut self, stats: Arc<Stats>) {
        self.stats = stats;
    }

    /// The deadline and memory cap of this plugin's calls.
    pub fn limits(&self) -> (Duration, usize) {
        (self.deadline, self.memory_bytes)
    }

    /// Sets the deadline and memory cap of this plugin's calls (before it
    /// serves: `load` leaves no instance, so every one is made with them).
    pub fn set_limits(&mut self, deadline: Duration, memory_bytes: usize) {
        self.deadline = deadline;
        self.memory_bytes = memory_bytes;
    }

    /// Its configuration (secrets in clear).
    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    /// The same component with `config` instead: no compilation, but a
    /// fresh instance's `describe()`, which may refuse it. The new plugin
    /// counts into the same counters until given others.
    pub fn configured(&self, config: &PluginConfig) -> Result<Plugin, LoadError> {
        let started = std::time::Instant::now();
        let mut info = self.info.clone();
        info.config = config.shown();
        info.config_digest = config.digest();
        let mut plugin = Plugin {
            info,
            pre: self.pre.clone(),
            indices: self.indices.clone(),
            deadline: self.deadline,
            memory_bytes: self.memory_bytes,
            config: config.clone(),
            variables: Arc::new(config.variables()),
            offer: self.offer.clone(),
            warm: Mutex::new(Vec::new()),
            stats: self.stats.clone(),
        };
        plugin.describe()?;
        if plugin.info.name != self.info.name {
            return Err(LoadError::Renamed {
                was: self.info.name.clone(),
                now: plugin.info.name.clone(),
            });
        }
        plugin.info.load_seconds = started.elapsed().as_secs_f64();
        Ok(plugin)
    }

    /// Calls `describe()` on a fresh instance and takes its answer into
    /// `info`, checked.
    pub(super) fn describe(&mut self) -> Result<(), LoadError> {
        // Off the processing path, on a fresh instance: a busy machine must
        // not fail a load or a configuration change on the batch deadline.
        let stats = std::mem::take(&mut self.stats);
        let deadline = self.deadline;
        self.deadline = deadline.max(DESCRIBE_DEADLINE);
        let described = self.call(|store, guest| guest.describe(store));
        (self.stats, self.deadline) = (stats, deadline);
        let described = described.map_err(LoadError::Describe)?;
        // A refusal may quote a value: never a secret one.
        let described = described.map_err(|m| LoadError::Refused(self.config.redact(&m)))?;
        let said = Kind::from(described.kind);
        if said != self.info.kind {
            return Err(LoadError::KindMismatch {
                said,
                exported: self.info.kind,
            });
        }
        if described.name.trim().is_empty() {
            return Err(LoadError::EmptyName);
        }
        self.info.name = described.name;
        self.info.version = versioned(&described.version, &self.config);
        self.info.rule_version = described.version;
        self.info.needs = described.needs;
        self.info.windows = described.windows;
        self.info.tables = described.tables;
        self.offer
            .check(&self.info)
            .map_err(LoadError::Declaration)?;
        // The instance that answered `describe` knows the plugin by its
        // origin (a file path): its stdout and stderr would be logged under
        // that name. Calls get instances made under the plugin's own name.
        self.warm.get_mut().unwrap().clear();
        Ok(())
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        let engine = self.pre.engine();
        let mut store = new_store(
            engine,
            &self.info.name,
            self.memory_bytes,
            self.variables.clone(),
        );
        store.set_epoch_deadline(limits::ticks(self.deadline));
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(e, &store))?;
        let guest = match &self.indices {
            Indices::Transform(i) => i.load(&mut store, &instance).map(Guest::Transform),
            Indices::Trend(i) => i.load(&mut store, &instance).map(Guest::Trend),
            Indices::Anomaly(i) => i.load(&mut store, &instance).map(Guest::Anomaly),
        }
        .map_err(|e| CallError::Contract(format!("{e:#}")))?;
        Ok(Warm { store, guest })
    }

    /// Runs `f` on a warm instance (or a fresh one) under the limits.
    pub(super) fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<StoreState>, &Guest) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let started = std::time::Instant::now();
        let pooled = self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let result = (|| {
            let mut warm = match pooled {
                Some(w) => w,
                None => self.instantiate()?,
            };
            warm.store.data_mut().limits.hit = false;
            warm.store.set_epoch_deadline(limits::ticks(self.deadline));
            let result = f(&mut warm.store, &warm.guest);
            self.stats
                .peak_memory
                .fetch_max(warm.store.data().limits.peak as u64, Ordering::Relaxed);
            match result {
                Ok(r) => {
                    self.warm
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(warm);
                    Ok(r)
                }
                // The instance is dropped: a trap may have left it broken.
                Err(e) => Err(self.classify(e, &warm.store)),
            }
        })();
        let nanos = started.elapsed().as_nanos() as u64;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats.slowest_nanos.fetch_max(nanos, Ordering::Relaxed);
        if let Err(e) = &result {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            *self
                .stats
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            tracing::warn!(plugin = %self.info.name, version = %self.info.version, error = %e, "Plugin call failed.");
        }
        result
    }

    fn classify(&self, e: wasmtime::Error, store: &Store<StoreState>) -> CallError {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout(self.deadline),
            Some(_) if store.data().limits.hit => CallError::OutOfMemory(self.memory_bytes),
            Some(trap) => CallError::Trap(trap.to_string()),
            None if store.data().limits.hit => CallError::OutOfMemory(self.memory_bytes),
            None => CallError::Contract(format!("{e:#}")),
        }
    }

    /// `call` for a batch function: a result count other than the batch's
    /// length breaks the contract, and is handled like any failed call.
    fn call_batch<T>(
        &self,
        len: u32,
        processing_time: i64,
        f: impl FnOnce(&mut Store<StoreState>, &Guest) -> wasmtime::Result<Vec<T>>,
    ) -> Result<Vec<T>, CallError> {
        self.call(|store, guest| {
            store.data().time.begin(processing_time);
            let out = f(store, guest)?;
            if out.len() != len as usize {
                wasmtime::bail!(
                    "returned {} results for a batch of {len} records",
                    out.len()
                );
            }
            self.stats.records.fetch_add(len as u64, Ordering::Relaxed);
            Ok(out)
        })
    }

    /// Calls a transform plugin.
    pub fn transform(&self, batch: &Batch) -> Result<TransformResults, CallError> {
        self.call_batch(
            batch.len,
            batch.processing_time,
            |store, guest| match guest {
                Guest::Transform(g) => Ok(g.call_transform(store, batch)?.resolve()),
                _ => unreachable!("kind checked at load"),
            },
        )
    }

    /// Calls a trend plugin.
    pub fn trend(&self, batch: &Batch, windows: &WindowView) -> Result<TrendResults, CallError> {
        let results = self.call_batch(
            batch.len,
            batch.processing_time,
            |store, guest| match guest {
                Guest::Trend(g) => g.call_trend(store, batch, windows),
                _ => unreachable!("kind checked at load"),
            },
        )?;
        Ok(check_trend_fields(results, batch.fields.len()))
    }

    /// Calls an anomaly plugin.
    pub fn detect(&self, batch: &Batch, windows: &WindowView) -> Result<AnomalyResults, CallError> {
        self.call_batch(
            batch.len,
            batch.processing_time,
            |store, guest| match guest {
                Guest::Anomaly(g) => g.call_detect(store, batch, windows),
                _ => unreachable!("kind checked at load"),
            },
        )
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Plugin>();
    is::<Runtime>();
}
