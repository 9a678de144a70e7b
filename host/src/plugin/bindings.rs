//! The one place that generates host bindings from `wit/streamhost.wit`, and
//! the per-store state those bindings run against.
//!
//! Bindings come from the host-only world `rule-host`, which exports all three
//! rule interfaces; a real plugin exports exactly one of them and the runtime
//! loads only that interface (`GuestIndices` per interface), so the three
//! kinds share one set of types.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule-host",
});

pub use exports::streamhost::plugin::{anomaly_rule, transform_rule, trend_rule};
pub use streamhost::plugin::host::Level;
pub use streamhost::plugin::types;

/// Everything a plugin's store holds: WASI state (empty: no files, network,
/// environment), the memory limiter, and the name used in logs.
pub struct StoreState {
    pub plugin: String,
    /// The processing time of the call in progress (WASI clocks and random).
    pub time: super::determinism::CallTime,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: super::limits::MemoryCap,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl streamhost::plugin::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = self.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl streamhost::plugin::types::Host for StoreState {}
