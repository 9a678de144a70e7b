//! Deliberately misbehaving components, the fixtures of the host's isolation
//! and hostile-plugin tests. What a component does to a record depends on
//! the record's key.
//!
//! As an `anomaly` rule (the default build):
//! - `spin`: loops forever (the host's deadline must interrupt it);
//! - `bomb`: allocates until memory runs out (the memory cap must stop it);
//! - `panic`: panics, which traps the instance;
//! - `abort`: executes `unreachable` directly;
//! - `stack`: recurses without end (stack overflow trap);
//! - `reject`: answers `err("rejected by hostile")` for that record only;
//! - `huge-message`: one alert with a 2 MiB message;
//! - `many-alerts`: 100,000 alerts for the one record;
//! - `wrong-count`: answers one result too many for its batch;
//! - `log-flood`: writes 10,000 log lines, then answers normally;
//! - `slow`: spins for a few milliseconds, then answers normally;
//! - anything else: one `echo` alert whose message is the key.
//!
//! Built with the `describe-traps` feature, `describe` itself traps, which the
//! hot-swap tests use as a component that loads but must not be served.
//!
//! Built with the `transform` feature it is a `transform` rule instead:
//! - `t-huge`: replaces the record with a 2 MiB JSON object;
//! - `t-not-json`: replaces it with text that is not JSON;
//! - `t-array-merge`: merges `[1,2]`, which is not an object;
//! - `t-no-key`: replaces it with a record that lacks the key;
//! - `t-future`: moves its event time to the year 2100;
//! - `t-drop`: drops it;
//! - `t-deep`: merges a member nested 300 levels deep;
//! - `t-bad-merge`: merges a member text it did not return (index 99);
//! - `t-err`: answers `err`;
//! - anything else: keeps it.

#[cfg(all(target_arch = "wasm32", not(feature = "transform")))]
mod component {
    wit_bindgen::generate!({ world: "anomaly", path: "../../wit", generate_all });

    use exports::streamhost::plugin::anomaly_rule::Guest;
    use streamhost::plugin::host::{Level, log};
    use streamhost::plugin::types::{Alert, Batch, Kind, Needs, PluginInfo, Severity, WindowView};

    struct Hostile;

    fn alert(message: String) -> Alert {
        Alert {
            rule: "hostile".into(),
            kind: "echo".into(),
            severity: Severity::Low,
            message,
        }
    }

    #[inline(never)]
    #[allow(unconditional_recursion)]
    fn recurse(depth: u64) -> u64 {
        core::hint::black_box(recurse(core::hint::black_box(depth + 1)) + 1)
    }

    impl Guest for Hostile {
        fn describe() -> Result<PluginInfo, String> {
            if cfg!(feature = "describe-traps") {
                panic!("describe refuses to answer");
            }
            Ok(PluginInfo {
                name: "hostile".into(),
                version: "0.0.1".into(),
                kind: Kind::Anomaly,
                needs: Needs::KEYS,
                windows: Vec::new(),
                tables: Vec::new(),
            })
        }

        fn detect(batch: Batch, _windows: WindowView) -> Vec<Result<Vec<Alert>, String>> {
            let mut out = Vec::with_capacity(batch.keys.len());
            for key in &batch.keys {
                match key.as_str() {
                    "spin" => {
                        log(Level::Debug, "spinning");
                        let mut x: u64 = 0;
                        loop {
                            x = core::hint::black_box(x.wrapping_add(1));
                        }
                    }
                    "bomb" => {
                        let mut hoard: Vec<Vec<u8>> = Vec::new();
                        loop {
                            hoard.push(core::hint::black_box(vec![1u8; 1 << 20]));
                        }
                    }
                    "panic" => panic!("hostile plugin panics on purpose"),
                    "abort" => core::arch::wasm32::unreachable(),
                    "stack" => {
                        recurse(0);
                    }
                    "reject" => out.push(Err("rejected by hostile".to_string())),
                    "huge-message" => out.push(Ok(vec![alert("x".repeat(2 << 20))])),
                    "many-alerts" => {
                        out.push(Ok((0..100_000).map(|i| alert(i.to_string())).collect()))
                    }
                    "wrong-count" => {
                        out.push(Ok(Vec::new()));
                        out.push(Ok(Vec::new()));
                    }
                    "log-flood" => {
                        for i in 0..10_000 {
                            log(Level::Trace, &format!("flood {i}"));
                        }
                        out.push(Ok(vec![alert(key.clone())]));
                    }
                    "slow" => {
                        let mut x: u64 = 0;
                        for _ in 0..5_000_000u64 {
                            x = core::hint::black_box(x.wrapping_add(1));
                        }
                        out.push(Ok(vec![alert(key.clone())]));
                    }
                    other => out.push(Ok(vec![alert(other.to_string())])),
                }
            }
            out
        }
    }

    export!(Hostile);
}

#[cfg(all(target_arch = "wasm32", feature = "transform"))]
mod component {
    wit_bindgen::generate!({ world: "transform", path: "../../wit", generate_all });

    use exports::streamhost::plugin::transform_rule::Guest;
    use streamhost::plugin::types::{
        Batch, Kind, Needs, PluginInfo, Transformed, TransformedBatch,
    };

    struct HostileTransform;

    impl Guest for HostileTransform {
        fn describe() -> Result<PluginInfo, String> {
            Ok(PluginInfo {
                name: "hostile-transform".into(),
                version: "0.0.1".into(),
                kind: Kind::Transform,
                needs: Needs::KEYS,
                windows: Vec::new(),
                tables: Vec::new(),
            })
        }

        fn transform(batch: Batch) -> TransformedBatch {
            let mut members = Vec::new();
            let mut merge = |text: String| {
                members.push(text);
                Ok(Transformed::Merge(members.len() as u32 - 1))
            };
            let results = batch
                .keys
                .iter()
                .map(|key| match key.as_str() {
                    "t-huge" => Ok(Transformed::Replace(format!(
                        r#"{{"sensor_id":"t-huge","timestamp":"2026-11-24T06:40:00Z","pad":"{}"}}"#,
                        "x".repeat(2 << 20)
                    ))),
                    "t-not-json" => Ok(Transformed::Replace("this is not JSON".into())),
                    "t-array-merge" => merge("[1,2]".into()),
                    "t-no-key" => Ok(Transformed::Replace(
                        r#"{"timestamp":"2026-11-24T06:40:00Z"}"#.into(),
                    )),
                    "t-future" => merge(r#"{"timestamp":"2100-01-01T00:00:00Z"}"#.into()),
                    "t-drop" => Ok(Transformed::Drop),
                    "t-deep" => merge(format!(
                        r#"{{"deep":{}1{}}}"#,
                        "[".repeat(300),
                        "]".repeat(300)
                    )),
                    "t-bad-merge" => Ok(Transformed::Merge(99)),
                    "t-err" => Err("refused by hostile-transform".into()),
                    _ => Ok(Transformed::Keep),
                })
                .collect();
            TransformedBatch { members, results }
        }
    }

    export!(HostileTransform);
}
