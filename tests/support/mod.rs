//! Shared helpers of the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use streamhost::plugin::{Limits, Plugin, Runtime};

#[path = "../../xtask/src/broker.rs"]
pub mod broker;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a component built by `cargo xtask plugins`.
pub fn plugin_path(name: &str) -> PathBuf {
    let p = root().join("target/plugins").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `cargo xtask plugins` (or `cargo xtask test`)", p.display());
    p
}

pub fn runtime() -> Runtime {
    Runtime::new(Limits::default()).expect("runtime")
}

pub fn load(rt: &Runtime, name: &str) -> Arc<Plugin> {
    let bytes = std::fs::read(plugin_path(name)).unwrap();
    Arc::new(rt.load(&bytes, name).unwrap_or_else(|e| panic!("loading {name}: {e}")))
}

/// The broker binary, or a clear failure saying how to get one.
pub fn nisshi() -> PathBuf {
    broker::find().expect("the nisshi broker is not installed: run `cargo xtask test`, which installs it")
}

/// A fresh topic name per test.
pub fn topic(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
