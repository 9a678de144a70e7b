//! The state of one plugin instance's store, and the host imports it
//! answers.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::contract::{Level, types};

/// Everything a plugin's store holds: WASI state (empty: no files, network,
/// environment), the memory limiter, and the name used in logs.
pub struct StoreState {
    pub plugin: String,
    /// The processing time of the call in progress (WASI clocks and random).
    pub time: super::determinism::CallTime,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: super::limits::MemoryCap,
    /// What `wasi:config/store` answers (the plugin's configuration).
    pub config: std::sync::Arc<wasmtime_wasi_config::WasiConfigVariables>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::contract::HostImports for StoreState {
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

impl types::Host for StoreState {}
