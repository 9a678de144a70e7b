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
mod config;
mod determinism;
mod limits;
mod plugin;
mod stdio;
mod store;

pub use config::{MASK, PluginConfig, check_key};
use plugin::Indices;
pub use plugin::{Plugin, Stats};

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;

use crate::contract::{Needs, TableSpec, WIT_PACKAGE, WIT_VERSION, WindowSpec, types};
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
    /// Rewrites, enriches or drops records (`transform-rule`).
    Transform,
    /// Labels the direction of a record's window (`trend-rule`).
    Trend,
    /// Raises alerts (`anomaly-rule`).
    Anomaly,
}

impl Kind {
    /// Every kind, in the order the pipeline calls them.
    pub const ALL: [Kind; 3] = [Kind::Transform, Kind::Trend, Kind::Anomaly];

    /// The kind's name: `transform`, `trend` or `anomaly`.
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
    /// The file does not start with the WebAssembly magic number.
    #[error("not a WebAssembly file (expected a component starting with \\0asm)")]
    NotWasm,
    /// A core WebAssembly module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component; expected a component exporting \
         {WIT_PACKAGE}/transform-rule, trend-rule or anomaly-rule @{WIT_VERSION} (build it with \
         wit-bindgen and turn it into a component with wit-component or `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component did not compile (wasmtime's error).
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component exports none of the three rule interfaces.
    #[error(
        "the component exports none of the rule interfaces; expected one of \
         {WIT_PACKAGE}/transform-rule, trend-rule or anomaly-rule @{WIT_VERSION}, found exports: {}",
        if exports.is_empty() { "(none)".to_string() } else { exports.join(", ") }
    )]
    NoRule {
        /// What it exports instead, each as `name (what)`.
        exports: Vec<String>,
    },
    /// The component exports more than one rule interface (their names).
    #[error("the component exports more than one rule interface ({}); a plugin must be exactly one kind", .0.join(", "))]
    Ambiguous(Vec<String>),
    /// The rule interface is of another WIT series than this host's.
    #[error(
        "the component exports {found}, but this host implements {WIT_PACKAGE}@{WIT_VERSION}; \
         rebuild the plugin against this host's WIT (`streamhost new` writes it into a new project)"
    )]
    Version {
        /// The exported interface's name, with its version.
        found: String,
    },
    /// The component imports something the host does not provide.
    #[error("the component's imports cannot be satisfied: {0}")]
    Link(String),
    /// The rule interface's functions differ from the contract's.
    #[error("the component's {interface} does not match the WIT contract: {reason}")]
    Signature {
        /// The interface, e.g. `trend-rule`.
        interface: String,
        /// How it differs (wasmtime's error).
        reason: String,
    },
    /// The `describe()` call failed.
    #[error("describe() failed: {0}")]
    Describe(CallError),
    /// `describe()` names another kind than the interface exported.
    #[error("describe() says kind {said}, but the component exports the {exported} interface")]
    KindMismatch {
        /// The kind `describe()` returned.
        said: Kind,
        /// The kind of the exported interface.
        exported: Kind,
    },
    /// `describe()` returned a blank name.
    #[error("describe() returned an empty name")]
    EmptyName,
    /// `describe()` declares windows or tables this host cannot give.
    #[error("describe() declares what this host cannot give: {0}")]
    Declaration(String),
    /// `describe()` refused the configuration, with the plugin's message.
    #[error("the plugin refused its configuration: {0}")]
    Refused(String),
    /// The configured plugin gives another name than before.
    #[error("with its new configuration the plugin calls itself {now:?}, not {was:?}")]
    Renamed {
        /// Its name before.
        was: String,
        /// Its name with the new configuration.
        now: String,
    },
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
        /// The sub-batch's failure.
        cause: Box<CallError>,
        /// The time the search was given.
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
    /// The rule's name, from `describe()`.
    pub name: String,
    /// The version its outputs name: the rule's own (e.g. `1.0.0`), with
    /// `+cfg.` and the configuration's digest when it has one
    /// (`1.0.0+cfg.5e3a91c0`).
    pub version: String,
    /// The rule's own version, from `describe()`.
    pub rule_version: String,
    /// Its configuration as it may be shown (secrets masked).
    pub config: std::collections::BTreeMap<String, String>,
    /// The digest in `version`, if it has a configuration.
    pub config_digest: Option<String>,
    /// The rule interface it exports.
    pub kind: Kind,
    /// The WIT package the component was built against, with its version,
    /// e.g. `streamhost:plugin@0.2.0`.
    pub wit: String,
    /// The optional inputs it asks for.
    #[serde(skip)]
    pub needs: Needs,
    /// The windows it declares besides `--window`.
    #[serde(serialize_with = "shown::windows")]
    pub windows: Vec<WindowSpec>,
    /// The reference tables it reads.
    #[serde(serialize_with = "shown::tables")]
    pub tables: Vec<TableSpec>,
    /// Hex SHA-256 of the component file.
    pub sha256: String,
    /// Where its compiled code came from: `compiled`, `memory-cache` or
    /// `disk-cache`.
    pub compiled_from: CompiledFrom,
    /// Seconds the load took: compile (or cache read), link, instantiate
    /// and `describe()`.
    pub load_seconds: f64,
}

/// Declarations as `GET /plugins` shows them.
mod shown {
    use serde::Serializer;
    use serde::ser::SerializeSeq;

    use crate::contract::{TableSpec, WindowSpec};

    pub fn windows<S: Serializer>(windows: &[WindowSpec], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(windows.len()))?;
        for w in windows {
            let aggregates: Vec<String> = w
                .aggregates
                .iter()
                .map(|a| format!("{a:?}").to_lowercase())
                .collect();
            seq.serialize_element(&serde_json::json!({
                "length_ms": w.length_ms,
                "fields": w.fields,
                "aggregates": aggregates,
            }))?;
        }
        seq.end()
    }

    pub fn tables<S: Serializer>(tables: &[TableSpec], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(tables.len()))?;
        for t in tables {
            seq.serialize_element(&serde_json::json!({
                "name": t.name,
                "fields": t.fields,
                "json": t.json,
            }))?;
        }
        seq.end()
    }
}

/// Where a loaded component's compiled code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompiledFrom {
    /// Compiled from the component's bytes.
    Compiled,
    /// Found among the recently compiled components in memory.
    MemoryCache,
    /// Read from the compile cache on disk.
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
    /// What rules may declare: `None` checks only their shape.
    offer: Arc<Offer>,
}

/// The fields and tables a host offers the windows and tables rules
/// declare; `None` where anything goes (a plugin inspected, not run).
#[derive(Clone, Debug, Default)]
pub struct Offer {
    /// The numeric fields windows may cover.
    pub fields: Option<Vec<String>>,
    /// The reference tables rules may read.
    pub tables: Option<Vec<String>>,
}

/// Longest window a rule may declare: 7 days.
pub const MAX_DECLARED_MS: u32 = 7 * 86_400_000;

impl Offer {
    /// Checks what `info` declares against this offer.
    pub fn check(&self, info: &PluginInfo) -> Result<(), String> {
        if info.kind == Kind::Transform && !info.windows.is_empty() {
            return Err("a transform rule runs before windows and cannot declare one".into());
        }
        for (i, w) in info.windows.iter().enumerate() {
            let at = format!("window {i} ({} ms)", w.length_ms);
            if w.length_ms == 0 || w.length_ms > MAX_DECLARED_MS {
                return Err(format!("{at}: the length must be 1 ms to 7 days"));
            }
            if w.fields.is_empty() || w.aggregates.is_empty() {
                return Err(format!("{at}: give at least one field and one aggregate"));
            }
            if let Some(fields) = &self.fields
                && let Some(f) = w.fields.iter().find(|f| !fields.contains(f))
            {
                return Err(format!(
                    "{at}: {f:?} is not among the fields ({})",
                    fields.join(", ")
                ));
            }
        }
        if let Some(tables) = &self.tables
            && let Some(t) = info.tables.iter().find(|t| !tables.contains(&t.name))
        {
            return Err(format!(
                "the table {:?} is not given to this host (--table {}=TOPIC); it has {}",
                t.name,
                t.name,
                if tables.is_empty() {
                    "none".to_string()
                } else {
                    tables.join(", ")
                }
            ));
        }
        Ok(())
    }
}

impl Runtime {
    /// A runtime: the engine (epoch interruption on, its ticker started) and
    /// a linker with the host's imports and an empty WASI. `limits` are the
    /// plugins' defaults.
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
        // Configuration, through the standard interface: each store holds
        // its plugin's values (see `config`).
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut StoreState| {
            wasmtime_wasi_config::WasiConfig::from(&*s.config)
        })?;
        Ok(Self {
            engine,
            linker,
            limits,
            compiled: Mutex::new(Vec::new()),
            disk: None,
            offer: Arc::default(),
        })
    }

    /// This runtime, refusing plugins that declare windows over other
    /// fields or tables than `offer`'s.
    pub fn with_offer(mut self, offer: Offer) -> Self {
        self.offer = Arc::new(offer);
        self
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

    /// The engine every plugin is compiled for.
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

    /// Compiles, checks and describes a component, with no configuration.
    /// `origin` names it in logs until its own name is known.
    pub fn load(&self, bytes: &[u8], origin: &str) -> Result<Plugin, LoadError> {
        self.load_configured(bytes, origin, &PluginConfig::new())
    }

    /// Compiles, checks and describes a component with `config`, which
    /// `describe()` may refuse. `origin` names it in logs until its own
    /// name is known.
    pub fn load_configured(
        &self,
        bytes: &[u8],
        origin: &str,
        config: &PluginConfig,
    ) -> Result<Plugin, LoadError> {
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
                rule_version: String::new(),
                config: config.shown(),
                config_digest: config.digest(),
                kind,
                wit,
                needs: Needs::empty(),
                windows: Vec::new(),
                tables: Vec::new(),
                sha256,
                compiled_from,
                load_seconds: 0.0,
            },
            pre,
            indices,
            deadline: self.limits.deadline,
            memory_bytes: self.limits.memory_bytes,
            config: config.clone(),
            variables: Arc::new(config.variables()),
            offer: self.offer.clone(),
            warm: Mutex::new(Vec::new()),
            stats: Arc::default(),
        };
        plugin.describe()?;
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

fn new_store(
    engine: &Engine,
    plugin: &str,
    memory_bytes: usize,
    config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
) -> Store<StoreState> {
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
        config,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugins_of_this_hosts_wit_series_load() {
        assert_eq!(WIT_VERSION, "0.3.0");
        assert!(compatible("0.3.0") && compatible("0.3.7"));
        assert!(!compatible("0.2.0") && !compatible("0.4.0") && !compatible("1.3.0"));
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
