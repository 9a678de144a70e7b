//! What the registry's unit tests share: scratch folders, the components
//! `cargo xtask plugins` built (`target/plugins`), a real call of the
//! published anomaly rule, and the version each published rule serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Registry, Source};
use crate::contract::{Batch, WindowView};
use crate::rules::runtime::{Limits, Runtime};

/// An empty folder for one test, under `target/test-tmp`.
pub fn scratch(test: &str) -> PathBuf {
    let dir = streamhost_testkit::root()
        .join("target/test-tmp")
        .join(format!("registry-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bytes of a component built by `cargo xtask plugins`.
pub fn component(name: &str) -> Vec<u8> {
    let path = streamhost_testkit::root()
        .join("target/plugins")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask plugins` (or `cargo xtask test`)",
            path.display()
        )
    })
}

/// Writes component `name` to `path`, and gives `path` back.
pub fn place(name: &str, path: PathBuf) -> PathBuf {
    std::fs::write(&path, component(name)).unwrap();
    path
}

/// A runtime with the default limits (100 ms, 64 MiB).
pub fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(Limits::default()).unwrap())
}

/// A registry serving the given files, without a plugin folder.
pub fn serving(paths: &[PathBuf]) -> Registry {
    Registry::from_files(runtime(), paths).unwrap()
}

/// A registry serving anomaly 1.0.0 from `anomaly.wasm` in a scratch
/// folder of its own, and that file.
pub fn serving_anomaly(test: &str) -> (PathBuf, Registry) {
    let rule = place("anomaly", scratch(test).join("anomaly.wasm"));
    let registry = serving(std::slice::from_ref(&rule));
    (rule, registry)
}

/// A scratch folder with anomaly 1.0.0 in `anomaly.wasm` and an empty
/// plugin folder `plugins.d`: the file, and the plugin folder.
pub fn given_and_folder(test: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(test);
    let folder = dir.join("plugins.d");
    std::fs::create_dir(&folder).unwrap();
    (place("anomaly", dir.join("anomaly.wasm")), folder)
}

/// Why `Registry::from_files` refuses to start with `paths`.
pub fn start_error(paths: &[PathBuf]) -> String {
    match Registry::from_files(runtime(), paths) {
        Ok(_) => panic!("started with {paths:?}"),
        Err(e) => e.to_string(),
    }
}

/// Alerts the published anomaly rule raises on one reading at
/// `temperature`, at event time 0: above 40 °C with the article's
/// thresholds, above 30 °C configured with `temperature_max = 30`. At event
/// time 0 `anomaly-rejects` and `anomaly-traps` answer as 1.0.0 does.
pub fn alerts(registry: &Registry, temperature: f64) -> usize {
    let batch = Batch {
        len: 1,
        processing_time: 0,
        fields: vec!["temperature".into()],
        keys: Vec::new(),
        event_times: vec![0],
        values: vec![vec![temperature]],
        json: Vec::new(),
        tables: Vec::new(),
    };
    let windows = WindowView {
        starts: vec![0],
        ends: vec![0],
        counts: vec![1],
        k: 0,
        fields: Vec::new(),
        declared: Vec::new(),
    };
    let rules = registry.current();
    let [rule] = rules.anomaly.as_slice() else {
        panic!("{} anomaly rules published", rules.anomaly.len());
    };
    let results = rule.detect(&batch, &windows).unwrap();
    results[0].as_ref().unwrap().len()
}

/// The version of the rule called `name` in the published rule set: the
/// rule the pipeline calls from its next batch on.
pub fn serving_version(registry: &Registry, name: &str) -> String {
    let rules = registry.current();
    let named: Vec<_> = rules.all().filter(|r| r.info().name == name).collect();
    let [rule] = named.as_slice() else {
        panic!("{} rules called {name:?} published", named.len());
    };
    rule.info().version.clone()
}

/// The (version, calls, serving) of every version of `name` loaded so far.
pub fn version_counts(registry: &Registry, name: &str) -> Vec<(String, u64, bool)> {
    registry
        .versions()
        .into_iter()
        .filter(|v| v.name == name)
        .map(|v| (v.version, v.calls, v.serving))
        .collect()
}

/// The actions in the history of `name`, oldest first.
pub fn actions(registry: &Registry, name: &str) -> Vec<&'static str> {
    let list = registry.list();
    let plugin = list.iter().find(|p| p.info.name == name).unwrap();
    plugin.history.iter().map(|e| e.action).collect()
}

/// Where the slot of `name` takes its component from.
pub fn source_of(registry: &Registry, name: &str) -> Source {
    let slots = registry.slots.lock().unwrap();
    let slot = slots.iter().find(|s| s.plugin.name() == name).unwrap();
    slot.source.clone()
}

/// Whether the watcher, polling once more, sees the file of `name`
/// changed since it was loaded (or written by the registry itself).
pub fn watcher_sees_a_change(registry: &Registry, name: &str) -> bool {
    registry.poll_files(false);
    let slots = registry.slots.lock().unwrap();
    let slot = slots.iter().find(|s| s.plugin.name() == name).unwrap();
    slot.settling.is_some()
}

/// Whether `path` holds exactly the component `name`.
pub fn holds(path: &Path, name: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| b == component(name))
}
