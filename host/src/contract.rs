//! The WIT contract (`wit/streamhost.wit`) as Rust types: the one place
//! that generates host bindings from it. Windows build the contract's
//! `window-view`, rules take its `batch`, outputs read its alerts and trends.
//!
//! Bindings come from the host-only world `rule-host`, which exports all three
//! rule interfaces; a real plugin exports exactly one of them and the runtime
//! loads only that interface, so the three kinds share one set of types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule-host",
});

pub use exports::streamhost::plugin::{anomaly_rule, transform_rule, trend_rule};
pub use streamhost::plugin::host::{Host as HostImports, Level};
pub use streamhost::plugin::types;
pub use types::{
    Alert, Batch, Direction, FieldWindow, Needs, Severity, Transformed, TrendResult, WindowView,
};

/// The WIT package plugins are built against.
pub const WIT_PACKAGE: &str = "streamhost:plugin";
/// The version of that package this host implements. Plugins built against
/// any 0.1.x version load.
pub const WIT_VERSION: &str = "0.1.0";

/// What a transform call returns: one result per record.
pub type TransformResults = Vec<Result<Transformed, String>>;
/// What a trend call returns: one result per record.
pub type TrendResults = Vec<Result<Option<TrendResult>, String>>;
/// What an anomaly call returns: one result per record.
pub type AnomalyResults = Vec<Result<Vec<Alert>, String>>;

/// Adds the host's imports (`host.log`) to a linker.
pub fn add_host_to_linker<T: HostImports + types::Host + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    streamhost::plugin::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)
}
