//! The plugin runtime: loads rule components, checks them against the WIT
//! contract, and calls them under a time and memory limit.
//!
//! Shape (after wasmtime-wasi-http and wasmCloud):
//! - one `Engine` per process, with epoch interruption on;
//! - each plugin is compiled once and pre-instantiated (`InstancePre`), so a
//!   new instance costs a store and a memory image, not a compilation;
//! - warm instances are kept in a small pool per plugin: a call takes one
//!   (or instantiates one when the pool is empty), so each worker calling at
//!   once has its own `Store` and calls run in parallel; an instance goes
//!   back after a successful call and is thrown away after any failure (a
//!   trap can leave guest memory half-updated). The pool never holds more
//!   instances than calls ever ran at once, i.e. the number of workers;
//! - every call gets a deadline and a memory cap, and its failure is
//!   classified (`CallError`) so the caller can route records by cause.
//!
//! wasmtime's pooling allocator is not enabled: it makes instantiation cheap
//! by reserving memory slots up front, but instances here are created rarely
//! (warm ones are reused; a fresh one only after a failure or a swap), so it
//! would reserve address space and buy nothing.

pub mod cache;
mod determinism;
mod limits;
mod stdio;
mod store;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

use crate::contract::{
    AnomalyResults, Batch, Needs, TransformResults, TrendResults, WIT_PACKAGE, WIT_VERSION,
    WindowView, anomaly_rule, check_trend_fields, transform_rule, trend_rule, types,
};
use store::StoreState;

/// Limits applied to plugin calls: the defaults of a runtime, which a
/// plugin's own limits (`Plugin::set_limits`) override.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest a single batch call may run.
    pub deadline: Duration,
    /// Largest linear memory an instance may have, in bytes.
    pub memory_bytes: usize,
    /// Compiled code kept for reuse after its plugin is swapped out, in
    /// bytes (components in use are kept alive by their plugins regardless).
    pub cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            cache_bytes: 64 << 20,
        }
    }
}

/// The three kinds of rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Transform,
    Trend,
    Anomaly,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Transform, Kind::Trend, Kind::Anomaly];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Transform => "transform",
            Kind::Trend => "trend",
            Kind::Anomaly => "anomaly",
        }
    }

    /// The exported interface a plugin of this kind provides.
    fn interface(self) -> &'static str {
        match self {
            Kind::Transform => "transform-rule",
            Kind::Trend => "trend-rule",
            Kind::Anomaly => "anomaly-rule",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<types::Kind> for Kind {
    fn from(k: types::Kind) -> Self {
        match k {
            types::Kind::Transform => Kind::Transform,
            types::Kind::Trend => Kind::Trend,
            types::Kind::Anomaly => Kind::Anomaly,
        }
    }
}

/// Why a file could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly file (expected a component starting with \\0asm)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; expected a component exporting \
         {WIT_PACKAGE}/transform-rule, trend-rule or anomaly-rule @{WIT_VERSION} (build it with \
         wit-bindgen and turn it into a component with wit-component or `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "the component exports none of the rule interfaces; expected one of \
         {WIT_PACKAGE}/transform-rule, trend-rule or anomaly-rule @{WIT_VERSION}, found exports: {}",
        if exports.is_empty() { "(none)".to_string() } else { exports.join(", ") }
    )]
    NoRule { exports: Vec<String> },
    #[error("the component exports more than one rule interface ({}); a plugin must be exactly one kind", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error(
        "the component exports {found}, but this host implements {WIT_PACKAGE}@{WIT_VERSION}; \
         rebuild the plugin against this host's WIT (`streamhost new` writes it into a new project)"
    )]
    Version { found: String },
    #[error("the component's imports cannot be satisfied: {0}")]
    Link(String),
    #[error("the component's {interface} does not match the WIT contract: {reason}")]
    Signature { interface: String, reason: String },
    #[error("describe() failed: {0}")]
    Describe(CallError),
    #[error("describe() says kind {said}, but the component exports the {exported} interface")]
    KindMismatch { said: Kind, exported: Kind },
    #[error("describe() returned an empty name")]
    EmptyName,
}

/// Why a plugin call failed. Each cause leads somewhere different: the
/// records of the batch go to the dead-letter topic with a reason class.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("plugin call exceeded its deadline of {0:?}")]
    Timeout(Duration),
    /// The instance tried to grow its memory beyond the cap.
    #[error("plugin ran out of memory (cap {0} bytes)")]
    OutOfMemory(usize),
    /// The guest trapped (a panic, an `unreachable`, a bad memory access...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest returned something the contract forbids (wrong number of
    /// results, a string that is not UTF-8...).
    #[error("plugin broke the contract: {0}")]
    Contract(String),
    /// A failure of a sub-batch holding this record, when the search for
    /// the faulty records ran out of time before reaching it.
    #[error(
        "{cause} (not isolated: the search for the faulty records of the batch stopped after {budget:?})"
    )]
    Unisolated {
        cause: Box<CallError>,
        budget: Duration,
    },
}

impl CallError {
    /// The dead-letter reason class of this failure.
    pub fn reason(&self) -> crate::record::Reason {
        use crate::record::Reason;
        match self {
            CallError::Timeout(_) => Reason::PluginTimeout,
            CallError::OutOfMemory(_) => Reason::PluginOom,
            CallError::Trap(_) => Reason::PluginTrap,
            CallError::Contract(_) => Reason::PluginError,
            CallError::Unisolated { cause, .. } => cause.reason(),
        }
    }

    /// This error, for a record the search did not reach within `budget`.
    pub fn unresolved(self, budget: Duration) -> CallError {
        match self {
            e @ CallError::Unisolated { .. } => e,
            cause => CallError::Unisolated {
                cause: Box::new(cause),
                budget,
            },
        }
    }
}

/// What a plugin said about itself in `describe()`, plus what the host knows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    /// The WIT package the component was built against, with its version,
    /// e.g. `streamhost:plugin@0.2.0`.
    pub wit: String,
    #[serde(skip)]
    pub needs: Needs,
    /// Hex SHA-256 of the component file.
    pub sha256: String,
    /// Where its compiled code came from: `compiled`, `memory-cache` or
    /// `disk-cache`.
    pub compiled_from: CompiledFrom,
    /// Seconds the load took: compile (or cache read), link, instantiate
    /// and `describe()`.
    pub load_seconds: f64,
}

/// Where a loaded component's compiled code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompiledFrom {
    Compiled,
    MemoryCache,
    DiskCache,
}

/// A compiled plugin engine: one per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    limits: Limits,
    /// Recently compiled components by SHA-256, least recently used first,
    /// bounded by their compiled size, so that swapping back to a version
    /// seen before (a rollback) costs no compilation.
    compiled: Mutex<Vec<(String, Component)>>,
    /// Compiled components on disk, across restarts.
    disk: Option<cache::DiskCache>,
}

impl Runtime {
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config)?;
        limits::start_ticker(&engine);
        let mut linker = Linker::new(&engine);
        // Components from componentize-py/-js import WASI 0.2; they get a WASI
        // with nothing in it (no files, sockets or environment).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        crate::contract::add_host_to_linker(&mut linker)?;
        Ok(Self {
            engine,
            linker,
            limits,
            compiled: Mutex::new(Vec::new()),
            disk: None,
        })
    }

    /// This runtime, keeping compiled components in `dir` (created, owner
    /// only) up to `max_bytes`.
    pub fn with_disk_cache(self, dir: &std::path::Path, max_bytes: u64) -> anyhow::Result<Self> {
        let disk = cache::DiskCache::open(dir, &self.engine, max_bytes)
            .map_err(|e| anyhow::anyhow!("opening the compile cache {}: {e}", dir.display()))?;
        Ok(self.with_disk(disk))
    }

    /// This runtime, keeping compiled components in `disk`.
    pub fn with_disk(mut self, disk: cache::DiskCache) -> Self {
        self.disk = Some(disk);
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits plugins get unless given their own.
    pub fn default_limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of compiled code held by the cache of compiled components.
    pub fn cached_bytes(&self) -> usize {
        self.compiled
            .lock()
            .unwrap()
            .iter()
            .map(|(_, c)| compiled_size(c))
            .sum()
    }

    /// Compiles, checks and describes a component. `origin` names it in logs
    /// until its own name is known.
    pub fn load(&self, bytes: &[u8], origin: &str) -> Result<Plugin, LoadError> {
        let started = std::time::Instant::now();
        check_header(bytes)?;
        let sha256 = hex(&Sha256::digest(bytes));
        let (component, compiled_from) = self.compile(bytes, &sha256)?;
        let (kind, wit) = self.exported_kind(&component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let indices = Indices::new(kind, &pre).map_err(|reason| LoadError::Signature {
            interface: kind.interface().to_string(),
            reason,
        })?;
        let mut plugin = Plugin {
            info: PluginInfo {
                name: origin.to_string(),
                version: String::new(),
                kind,
                wit,
                needs: Needs::empty(),
                sha256,
                compiled_from,
                load_seconds: 0.0,
            },
            pre,
            indices,
            deadline: self.limits.deadline,
            memory_bytes: self.limits.memory_bytes,
            warm: Mutex::new(Vec::new()),
            stats: Arc::default(),
        };
        let described = plugin
            .call(|store, guest| guest.describe(store))
            .map_err(LoadError::Describe)?;
        let said = Kind::from(described.kind);
        if said != kind {
            return Err(LoadError::KindMismatch {
                said,
                exported: kind,
            });
        }
        if described.name.trim().is_empty() {
            return Err(LoadError::EmptyName);
        }
        plugin.info.name = described.name;
        plugin.info.version = described.version;
        plugin.info.needs = described.needs;
        // The instance that answered `describe` knows the plugin by its
        // origin (a file path): its stdout and stderr would be logged under
        // that name. Calls get instances made under the plugin's own name.
        plugin.warm.get_mut().unwrap().clear();
        plugin.stats = Arc::default();
        plugin.info.load_seconds = started.elapsed().as_secs_f64();
        Ok(plugin)
    }

    /// The compiled component: from memory, from disk, or compiled now (and
    /// then kept in both).
    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<(Component, CompiledFrom), LoadError> {
        {
            // Least recently used first: a hit moves to the back.
            let mut cache = self.compiled.lock().unwrap();
            if let Some(i) = cache.iter().position(|(h, _)| h == sha256) {
                let entry = cache.remove(i);
                let component = entry.1.clone();
                cache.push(entry);
                return Ok((component, CompiledFrom::MemoryCache));
            }
        }
        let from_disk = self.disk.as_ref().and_then(|d| d.get(&self.engine, sha256));
        let (component, from) = match from_disk {
            Some(c) => (c, CompiledFrom::DiskCache),
            None => {
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                if let Some(disk) = &self.disk {
                    disk.put(sha256, &c);
                }
                (c, CompiledFrom::Compiled)
            }
        };
        self.remember(sha256, &component);
        Ok((component, from))
    }

    fn remember(&self, sha256: &str, component: &Component) {
        let mut cache = self.compiled.lock().unwrap();
        cache.push((sha256.to_string(), component.clone()));
        let mut total: usize = cache.iter().map(|(_, c)| compiled_size(c)).sum();
        while total > self.limits.cache_bytes && cache.len() > 1 {
            total -= compiled_size(&cache.remove(0).1);
        }
    }

    /// Finds which rule interface the component exports.
    fn exported_kind(&self, component: &Component) -> Result<(Kind, String), LoadError> {
        let ty = component.component_type();
        let mut found = Vec::new();
        let mut all = Vec::new();
        for (name, item) in ty.exports(&self.engine) {
            all.push(format!("{name} ({})", extern_desc(&item.ty)));
            let Some((pkg_iface, version)) = name.split_once('@') else {
                continue;
            };
            let Some(iface) = pkg_iface.strip_prefix("streamhost:plugin/") else {
                continue;
            };
            if let Some(kind) = Kind::ALL.into_iter().find(|k| k.interface() == iface) {
                found.push((kind, version.to_string(), name.to_string()));
            }
        }
        match found.as_slice() {
            [] => Err(LoadError::NoRule { exports: all }),
            [(kind, version, name)] => {
                if !compatible(version) {
                    return Err(LoadError::Version {
                        found: name.clone(),
                    });
                }
                Ok((*kind, format!("{WIT_PACKAGE}@{version}")))
            }
            many => Err(LoadError::Ambiguous(
                many.iter().map(|f| f.2.clone()).collect(),
            )),
        }
    }
}

/// Whether a plugin built against WIT package `version` loads here: the
/// same `0.minor` series as this host (before 1.0, a minor version is a
/// breaking change).
fn compatible(version: &str) -> bool {
    fn series(v: &str) -> Option<&str> {
        v.rsplit_once('.').map(|(s, _)| s)
    }
    series(version).is_some_and(|s| Some(s) == series(WIT_VERSION))
}

/// Bytes of a compiled component's code image.
fn compiled_size(c: &Component) -> usize {
    let r = c.image_range();
    r.end as usize - r.start as usize
}

fn new_store(engine: &Engine, plugin: &str, memory_bytes: usize) -> Store<StoreState> {
    let time = determinism::CallTime::default();
    let wasi = WasiCtxBuilder::new()
        .stdout(stdio::LogStream::new(plugin, stdio::Which::Stdout))
        .stderr(stdio::LogStream::new(plugin, stdio::Which::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(time.wall_clock())
        .monotonic_clock(time.monotonic_clock())
        .secure_random(time.random(1))
        .insecure_random(time.random(2))
        .insecure_random_seed(0x5eed_5eed_5eed_5eed)
        .build();
    let state = StoreState {
        plugin: plugin.to_string(),
        time,
        wasi,
        table: ResourceTable::new(),
        limits: limits::MemoryCap::new(memory_bytes),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    store
}

fn extern_desc(item: &wasmtime::component::types::ComponentItem) -> &'static str {
    use wasmtime::component::types::ComponentItem as I;
    match item {
        I::ComponentFunc(_) => "function",
        I::CoreFunc(_) => "core function",
        I::Module(_) => "module",
        I::Component(_) => "component",
        I::ComponentInstance(_) => "instance",
        I::Type(_) => "type",
        I::Resource(_) => "resource",
    }
}

fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version 1 with layer 0 is a core module; layer 1 a component.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Export indices of the one interface a plugin provides.
enum Indices {
    Transform(transform_rule::GuestIndices),
    Trend(trend_rule::GuestIndices),
    Anomaly(anomaly_rule::GuestIndices),
}

impl Indices {
    fn new(kind: Kind, pre: &InstancePre<StoreState>) -> Result<Self, String> {
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
enum Guest {
    Transform(transform_rule::Guest),
    Trend(trend_rule::Guest),
    Anomaly(anomaly_rule::Guest),
}

impl Guest {
    fn describe(&self, store: &mut Store<StoreState>) -> wasmtime::Result<types::PluginInfo> {
        match self {
            Guest::Transform(g) => g.call_describe(store),
            Guest::Trend(g) => g.call_describe(store),
            Guest::Anomaly(g) => g.call_describe(store),
        }
    }
}

/// A live instance and its store.
struct Warm {
    store: Store<StoreState>,
    guest: Guest,
}

/// Counters kept per loaded plugin.
#[derive(Default, Debug)]
pub struct Stats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub nanos: AtomicU64,
    /// Records in the batches of successful calls.
    pub records: AtomicU64,
    /// The largest linear memory any instance reached, in bytes.
    pub peak_memory: AtomicU64,
    /// The longest call, in nanoseconds.
    pub slowest_nanos: AtomicU64,
    pub last_failure: Mutex<Option<String>>,
}

/// A loaded, checked plugin, ready to be called.
pub struct Plugin {
    info: PluginInfo,
    pre: InstancePre<StoreState>,
    indices: Indices,
    deadline: Duration,
    memory_bytes: usize,
    /// Warm instances not in a call right now.
    warm: Mutex<Vec<Warm>>,
    stats: Arc<Stats>,
}

impl Plugin {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn kind(&self) -> Kind {
        self.info.kind
    }

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

    fn instantiate(&self) -> Result<Warm, CallError> {
        let engine = self.pre.engine();
        let mut store = new_store(engine, &self.info.name, self.memory_bytes);
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
    fn call<R>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugins_of_this_hosts_wit_series_load() {
        assert_eq!(WIT_VERSION, "0.2.0");
        assert!(compatible("0.2.0") && compatible("0.2.7"));
        assert!(!compatible("0.1.0") && !compatible("0.3.0") && !compatible("1.2.0"));
        assert!(!compatible("") && !compatible("0"));
    }

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
