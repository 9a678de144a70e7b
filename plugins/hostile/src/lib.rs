//! A deliberately misbehaving `anomaly` component, the fixture for the
//! host's isolation tests. What it does to a record depends on the record's
//! key:
//!
//! - `spin`: loops forever (the host's deadline must interrupt it);
//! - `bomb`: allocates until memory runs out (the memory cap must stop it);
//! - `panic`: panics, which traps the instance;
//! - `reject`: answers `err("rejected by hostile")` for that record only;
//! - anything else: one `echo` alert whose message is the key.
//!
//! Built with the `describe-traps` feature, `describe` itself traps, which the
//! hot-swap tests use as a component that loads but must not be served.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "anomaly", path: "../../wit" });

    use exports::streamhost::plugin::anomaly_rule::Guest;
    use streamhost::plugin::host::{Level, log};
    use streamhost::plugin::types::{Alert, Batch, Kind, Needs, PluginInfo, Severity, WindowView};

    struct Hostile;

    impl Guest for Hostile {
        fn describe() -> PluginInfo {
            if cfg!(feature = "describe-traps") {
                panic!("describe refuses to answer");
            }
            PluginInfo {
                name: "hostile".into(),
                version: "0.0.1".into(),
                kind: Kind::Anomaly,
                needs: Needs::KEYS,
            }
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
                    "reject" => out.push(Err("rejected by hostile".to_string())),
                    other => out.push(Ok(vec![Alert {
                        rule: "hostile".into(),
                        kind: "echo".into(),
                        severity: Severity::Low,
                        message: other.to_string(),
                    }])),
                }
            }
            out
        }
    }

    export!(Hostile);
}
