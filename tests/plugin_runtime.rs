//! The plugin runtime against the real components built by
//! `cargo xtask plugins`: the example rules give the answers worked out by
//! hand, with and without configuration (which they may refuse), and
//! hostile components are contained, each failure told apart.

use streamhost_testkit as support;

use streamhost::contract::{Batch, Needs, WindowView};
use streamhost::contract::{Change, Direction, FieldWindow, Severity};
use streamhost::rules::runtime::{CallError, Kind, LoadError, Plugin, PluginConfig};
use support::{load, runtime};

const FIELDS: [&str; 4] = ["temperature", "humidity", "pressure", "battery_level"];

/// A batch of readings (temperature, humidity, battery) with keys.
fn batch(keys: &[&str], readings: &[(f64, f64, f64)]) -> Batch {
    let n = readings.len();
    Batch {
        len: n as u32,
        processing_time: 1_795_541_405_123,
        fields: FIELDS.iter().map(|s| s.to_string()).collect(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        event_times: (0..n as i64).collect(),
        values: vec![
            readings.iter().map(|r| r.0).collect(),
            readings.iter().map(|r| r.1).collect(),
            vec![1010.0; n],
            readings.iter().map(|r| r.2).collect(),
        ],
        json: Vec::new(),
        tables: Vec::new(),
    }
}

/// Window views with only `temperature` head/tail meaningful (k = 3).
fn windows(per_record: &[(u32, [f64; 3], [f64; 3])]) -> WindowView {
    let n = per_record.len();
    let field = |with_values: bool| FieldWindow {
        mean: vec![0.0; n],
        min: vec![0.0; n],
        max: vec![0.0; n],
        first: vec![0.0; n],
        last: vec![0.0; n],
        head: if with_values {
            per_record.iter().flat_map(|r| r.1).collect()
        } else {
            vec![f64::NAN; 3 * n]
        },
        tail: if with_values {
            per_record.iter().flat_map(|r| r.2).collect()
        } else {
            vec![f64::NAN; 3 * n]
        },
    };
    WindowView {
        starts: vec![0; n],
        ends: vec![0; n],
        counts: per_record.iter().map(|r| r.0).collect(),
        k: 3,
        fields: vec![field(true), field(false), field(false), field(false)],
        declared: Vec::new(),
    }
}

#[test]
fn anomaly_thresholds_and_their_boundaries() {
    let rt = runtime();
    let p = load(&rt, "anomaly");
    assert_eq!(
        (p.info().name.as_str(), p.info().version.as_str(), p.kind()),
        ("anomaly", "1.0.0", Kind::Anomaly)
    );
    assert_eq!(p.info().wit, "streamhost:plugin@0.3.0");
    let readings = [
        (40.0, 90.0, 0.2),              // every value exactly on its threshold: nothing
        (0.0, 50.0, 1.0),               // lower temperature bound: nothing
        (40.01, 50.0, 1.0),             // too hot
        (-0.01, 50.0, 1.0),             // too cold
        (20.0, 50.0, 0.19),             // low battery
        (20.0, 90.01, 0.5),             // humid
        (45.0, 95.0, 0.1),              // all three, in the article's order
        (f64::NAN, f64::NAN, f64::NAN), // absent values raise nothing
    ];
    let b = batch(&[], &readings);
    let out = p
        .detect(&b, &windows(&[(1, [0.0; 3], [0.0; 3]); 8]))
        .unwrap();
    let kinds: Vec<Vec<(String, Severity)>> = out
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|a| (a.kind, a.severity))
                .collect()
        })
        .collect();
    let k = |s: &str, sev| (s.to_string(), sev);
    assert_eq!(
        kinds,
        vec![
            vec![],
            vec![],
            vec![k("temperature_out_of_range", Severity::High)],
            vec![k("temperature_out_of_range", Severity::High)],
            vec![k("low_battery", Severity::Medium)],
            vec![k("high_humidity", Severity::Medium)],
            vec![
                k("temperature_out_of_range", Severity::High),
                k("low_battery", Severity::Medium),
                k("high_humidity", Severity::Medium)
            ],
            vec![],
        ]
    );
}

/// A configuration of `pairs`.
fn config(pairs: &[(&str, &str)]) -> PluginConfig {
    let mut c = PluginConfig::new();
    for (k, v) in pairs {
        c.set(k, v).unwrap();
    }
    c
}

/// The alert kinds and messages `p` raises for each reading.
fn alerts(p: &Plugin, readings: &[(f64, f64, f64)]) -> Vec<Vec<(String, String)>> {
    let w = windows(&vec![(1, [0.0; 3], [0.0; 3]); readings.len()]);
    p.detect(&batch(&[], readings), &w)
        .unwrap()
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|a| (a.kind, a.message))
                .collect()
        })
        .collect()
}

#[test]
fn anomaly_thresholds_come_from_configuration_and_name_it_in_the_version() {
    let rt = runtime();
    let bytes = std::fs::read(support::plugin_path("anomaly")).unwrap();
    let strict = config(&[
        ("temperature_min", "5"),
        ("temperature_max", "30"),
        ("humidity_max", "75"),
        ("battery_min", "0.3"),
    ]);
    let p = rt.load_configured(&bytes, "anomaly", &strict).unwrap();
    let digest = strict.digest().unwrap();
    assert_eq!(digest.len(), 8);
    assert_eq!(p.info().rule_version, "1.0.0");
    assert_eq!(p.info().version, format!("1.0.0+cfg.{digest}"));
    assert_eq!(p.info().config_digest.as_deref(), Some(digest.as_str()));
    let t = |s: &str, m: &str| (s.to_string(), m.to_string());
    assert_eq!(
        alerts(
            &p,
            &[
                (35.0, 50.0, 1.0),  // above the configured maximum
                (30.0, 75.0, 0.3),  // every value on its threshold: nothing
                (5.0, 50.0, 1.0),   // lower bound: nothing
                (4.99, 50.0, 1.0),  // too cold
                (20.0, 75.01, 1.0), // humid
                (20.0, 50.0, 0.29), // low battery
            ]
        ),
        vec![
            vec![t(
                "temperature_out_of_range",
                "temperature 35 is outside [5, 30]"
            )],
            vec![],
            vec![],
            vec![t(
                "temperature_out_of_range",
                "temperature 4.99 is outside [5, 30]"
            )],
            vec![t("high_humidity", "humidity 75.01 is above 75")],
            vec![t("low_battery", "battery level 0.29 is below 0.3")],
        ]
    );

    // Only what is configured changes; no configuration is plain 1.0.0.
    let p = rt
        .load_configured(&bytes, "anomaly", &config(&[("temperature_max", "30")]))
        .unwrap();
    assert_eq!(
        alerts(&p, &[(35.0, 85.0, 0.25), (-1.0, 50.0, 1.0)]),
        vec![
            vec![t(
                "temperature_out_of_range",
                "temperature 35 is outside [0, 30]"
            )],
            vec![t(
                "temperature_out_of_range",
                "temperature -1 is outside [0, 30]"
            )],
        ]
    );
    let plain = rt.load(&bytes, "anomaly").unwrap();
    assert_eq!(plain.info().version, "1.0.0");
    assert_eq!(plain.info().config_digest, None);
    assert_eq!(alerts(&plain, &[(35.0, 50.0, 1.0)]), vec![vec![]]);

    // The same component configured afterwards answers as if loaded so.
    let swapped = plain.configured(&strict).unwrap();
    assert_eq!(swapped.info().version, format!("1.0.0+cfg.{digest}"));
    assert_eq!(
        alerts(&swapped, &[(35.0, 50.0, 1.0)]),
        vec![vec![t(
            "temperature_out_of_range",
            "temperature 35 is outside [5, 30]"
        )]]
    );
}

#[test]
fn anomaly_refuses_configuration_it_cannot_use_with_its_reason() {
    let rt = runtime();
    let bytes = std::fs::read(support::plugin_path("anomaly")).unwrap();
    for (pairs, reason) in [
        (
            &[("temperature_max", "abc")][..],
            r#"temperature_max "abc" is not a number"#,
        ),
        (
            &[("battery_min", "")][..],
            r#"battery_min "" is not a number"#,
        ),
        (
            &[("temperature_min", "30"), ("temperature_max", "5")][..],
            "temperature_min 30 is not below temperature_max 5",
        ),
        (
            &[("temperature_min", "40")][..],
            "temperature_min 40 is not below temperature_max 40",
        ),
    ] {
        match rt.load_configured(&bytes, "anomaly", &config(pairs)) {
            Err(LoadError::Refused(message)) => assert_eq!(message, reason, "{pairs:?}"),
            other => panic!(
                "{pairs:?}: expected a refusal, got {:?}",
                other.map(|p| p.info().clone())
            ),
        }
    }
    // Refusing a new configuration leaves the loaded plugin as it was.
    let p = rt.load(&bytes, "anomaly").unwrap();
    let err = p
        .configured(&config(&[("temperature_max", "abc")]))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains(r#"temperature_max "abc" is not a number"#),
        "{err}"
    );
    assert_eq!(p.info().version, "1.0.0");
    assert_eq!(
        alerts(&p, &[(41.0, 50.0, 1.0)]),
        vec![vec![(
            "temperature_out_of_range".to_string(),
            "temperature 41 is outside [0, 40]".to_string()
        )]]
    );
}

#[test]
fn trend_compares_newest_and_oldest_three_with_two_percent_edges() {
    let rt = runtime();
    let p = load(&rt, "trend");
    assert_eq!(p.kind(), Kind::Trend);
    assert!(p.info().needs.contains(Needs::WINDOW_VALUES));
    let nan = f64::NAN;
    let cases: [((u32, [f64; 3], [f64; 3]), Direction); 7] = [
        ((1, [50.0, nan, nan], [50.0, nan, nan]), Direction::Stable), // one value
        ((6, [10.0; 3], [20.0; 3]), Direction::Increasing),           // doubled
        ((6, [20.0; 3], [10.0; 3]), Direction::Decreasing),           // halved
        (
            (2, [100.0, 102.0, nan], [100.0, 102.0, nan]),
            Direction::Stable,
        ), // same values both ends
        (
            (4, [100.0, 100.0, 100.0], [100.0, 102.0, 104.0]),
            Direction::Stable,
        ), // +2.0% exactly: not above
        (
            (4, [100.0, 100.0, 100.0], [100.0, 102.0, 104.3]),
            Direction::Increasing,
        ), // +2.1%
        (
            (4, [100.0, 100.0, 100.0], [95.0, 98.0, 100.9]),
            Direction::Decreasing,
        ), // -1.1%... see below
    ];
    let views: Vec<_> = cases.iter().map(|c| c.0).collect();
    let b = batch(&[], &vec![(20.0, 50.0, 1.0); cases.len()]);
    let out = p.trend(&b, &windows(&views)).unwrap();
    // The last case: newest three mean (95 + 98 + 100.9) / 3 = 97.9667,
    // below 98 (= 100 * 0.98), so decreasing.
    for (i, (r, (_, want))) in out.into_iter().zip(cases).enumerate() {
        let t = r.unwrap().expect("the trend rule always answers");
        assert_eq!(b.fields[t.field as usize], "temperature");
        assert_eq!(t.direction, want, "case {i}");
    }
}

#[test]
fn enrich_merges_processing_time_and_flag() {
    let rt = runtime();
    let p = load(&rt, "enrich");
    assert_eq!(p.kind(), Kind::Transform);
    let out = p
        .transform(&batch(&[], &[(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)]))
        .unwrap();
    assert_eq!(out.len(), 2);
    let merged: Vec<_> = out
        .into_iter()
        .map(|r| match r.unwrap() {
            Change::Merge(m) => m,
            other => panic!("expected a merge, got {other:?}"),
        })
        .collect();
    assert_eq!(
        &*merged[0],
        r#"{"processed_at":"2026-11-24T17:30:05.123Z","enriched":true}"#
    );
    // The members crossed once: both records share the one text.
    assert!(std::sync::Arc::ptr_eq(&merged[0], &merged[1]));
}

fn hostile_call(
    p: &streamhost::rules::runtime::Plugin,
    keys: &[&str],
) -> Result<Vec<Result<Vec<String>, String>>, CallError> {
    let b = batch(keys, &vec![(20.0, 50.0, 1.0); keys.len()]);
    let w = windows(&vec![(1, [0.0; 3], [0.0; 3]); keys.len()]);
    p.detect(&b, &w).map(|v| {
        v.into_iter()
            .map(|r| r.map(|alerts| alerts.into_iter().map(|a| a.message).collect()))
            .collect()
    })
}

#[test]
fn an_infinite_loop_hits_the_deadline_and_the_next_call_works() {
    let rt = runtime();
    let p = load(&rt, "hostile");
    assert!(matches!(
        hostile_call(&p, &["a", "spin"]),
        Err(CallError::Timeout(_))
    ));
    assert_eq!(
        hostile_call(&p, &["a"]).unwrap(),
        vec![Ok(vec!["a".to_string()])]
    );
    assert_eq!(
        p.stats()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn an_allocation_bomb_is_stopped_by_the_memory_cap() {
    // A deadline no loaded machine reaches: only the memory cap may stop it.
    let rt = support::runtime_with_deadline(std::time::Duration::from_secs(20));
    let p = load(&rt, "hostile");
    match hostile_call(&p, &["bomb"]) {
        Err(CallError::OutOfMemory(cap)) => assert_eq!(cap, 64 << 20),
        other => panic!("expected out of memory, got {other:?}"),
    }
    assert_eq!(
        hostile_call(&p, &["b"]).unwrap(),
        vec![Ok(vec!["b".to_string()])]
    );
}

#[test]
fn a_panic_traps_and_the_next_batch_runs_on_a_fresh_instance() {
    let rt = runtime();
    let p = load(&rt, "hostile");
    match hostile_call(&p, &["panic"]) {
        Err(CallError::Trap(msg)) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        hostile_call(&p, &["c", "reject"]).unwrap(),
        vec![
            Ok(vec!["c".to_string()]),
            Err("rejected by hostile".to_string())
        ]
    );
}

#[test]
fn a_trap_in_describe_refuses_the_component() {
    let rt = runtime();
    let bytes = std::fs::read(support::plugin_path("hostile-describe-traps")).unwrap();
    match rt.load(&bytes, "x") {
        Err(LoadError::Describe(CallError::Trap(_))) => {}
        other => panic!(
            "expected describe to trap, got {:?}",
            other.map(|p| p.info().clone())
        ),
    }
}

#[test]
fn files_that_are_not_rule_components_are_refused_with_what_they_are() {
    let rt = runtime();
    let err = rt.load(b"this is not wasm", "junk").err().unwrap();
    assert!(matches!(err, LoadError::NotWasm), "{err}");

    let core = wat::parse_str("(module (func (export \"detect\")))").unwrap();
    let err = rt.load(&core, "core").err().unwrap();
    assert!(matches!(err, LoadError::CoreModule), "{err}");
    assert!(err.to_string().contains("not a component"), "{err}");

    let unrelated = wat::parse_str(
        r#"(component
             (core module $m (func (export "f") (result i32) i32.const 1))
             (core instance $i (instantiate $m))
             (func (export "hello") (result u32) (canon lift (core func $i "f"))))"#,
    )
    .unwrap();
    let err = rt.load(&unrelated, "unrelated").err().unwrap();
    match &err {
        LoadError::NoRule { exports } => assert_eq!(exports, &["hello (function)".to_string()]),
        other => panic!("expected NoRule, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("streamhost:plugin/transform-rule") && text.contains("hello (function)"),
        "{text}"
    );

    let truncated = std::fs::read(support::plugin_path("anomaly")).unwrap();
    let err = rt
        .load(&truncated[..truncated.len() / 2], "half")
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

#[test]
fn a_javascript_component_importing_wasi_runs() {
    let rt = runtime();
    let p = load(&rt, "jump-js");
    assert_eq!(
        (p.info().name.as_str(), p.info().version.as_str(), p.kind()),
        ("jump-js", "1.0.0", Kind::Anomaly)
    );
    // Temperatures against their window means: 30 vs 24 is +6 (a jump),
    // 29 vs 24 is +5 (not above 5), 18 vs 24 is -6 (a jump); the first record
    // is alone in its window, so never a jump.
    let b = batch(
        &[],
        &[
            (50.0, 50.0, 1.0),
            (30.0, 50.0, 1.0),
            (29.0, 50.0, 1.0),
            (18.0, 50.0, 1.0),
        ],
    );
    let mut w = windows(&[
        (1, [0.0; 3], [0.0; 3]),
        (5, [0.0; 3], [0.0; 3]),
        (5, [0.0; 3], [0.0; 3]),
        (5, [0.0; 3], [0.0; 3]),
    ]);
    w.fields[0].mean = vec![50.0, 24.0, 24.0, 24.0];
    let out = p.detect(&b, &w).unwrap();
    let messages: Vec<Vec<String>> = out
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|a| format!("{} {}", a.kind, a.message))
                .collect()
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            vec![],
            vec!["temperature_jump temperature 30 is 6.00 from the window mean 24.00".to_string()],
            vec![],
            vec!["temperature_jump temperature 18 is -6.00 from the window mean 24.00".to_string()],
        ]
    );
    // A second call reuses the warm instance.
    assert!(p.detect(&b, &w).is_ok());
}

#[test]
fn a_python_component_importing_wasi_runs() {
    let rt = runtime();
    let p = load(&rt, "humidity-py");
    assert_eq!(
        (p.info().name.as_str(), p.kind()),
        ("humidity-py", Kind::Anomaly)
    );
    // Window mean humidity 85 is not above the limit; 85.5 is.
    let b = batch(
        &[],
        &[(20.0, 50.0, 1.0), (20.0, 50.0, 1.0), (20.0, f64::NAN, 1.0)],
    );
    let mut w = windows(&[
        (4, [0.0; 3], [0.0; 3]),
        (6, [0.0; 3], [0.0; 3]),
        (1, [0.0; 3], [0.0; 3]),
    ]);
    w.fields[1].mean = vec![85.0, 85.5, f64::NAN];
    let out = p.detect(&b, &w).unwrap();
    let got: Vec<Vec<(String, Severity, String)>> = out
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|a| (a.kind, a.severity, a.message))
                .collect()
        })
        .collect();
    assert_eq!(
        got,
        vec![
            vec![],
            vec![(
                "humid_window".to_string(),
                Severity::Low,
                "mean humidity 85.5 over 6 readings is above 85".to_string()
            )],
            vec![],
        ]
    );
}

/// A plugin's limits file is read with it, and a changed one is applied
/// like a changed component; a broken one leaves the plugin serving.
#[test]
fn a_limits_file_beside_a_plugin_sets_and_changes_its_limits() {
    use std::sync::Arc;
    use streamhost::rules::registry::Registry;

    let dir = support::root()
        .join("target/test-tmp")
        .join(format!("limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rule = dir.join("anomaly.wasm");
    std::fs::copy(support::plugin_path("anomaly"), &rule).unwrap();
    std::fs::write(
        dir.join("anomaly.toml"),
        "deadline = \"300ms\"\nmemory-mib = 32\n",
    )
    .unwrap();
    let registry = Registry::from_files(Arc::new(runtime()), std::slice::from_ref(&rule)).unwrap();
    let limits = |r: &Registry| {
        let p = &r.list()[0];
        (p.deadline_ms, p.memory_mib, p.load_failures)
    };
    assert_eq!(limits(&registry), (300.0, 32, 0));

    // Changed: picked up once the file has stayed the same for a poll.
    std::fs::write(dir.join("anomaly.toml"), "deadline = \"2s\"\n").unwrap();
    registry.poll_files(false);
    registry.poll_files(false);
    // The memory cap is the runtime's default again (64 MiB).
    assert_eq!(limits(&registry), (2000.0, 64, 0));

    // Broken: refused with the file named, and the limits in force stay.
    std::fs::write(dir.join("anomaly.toml"), "deadline = \"soon\"\n").unwrap();
    registry.poll_files(false);
    registry.poll_files(false);
    let p = &registry.list()[0];
    assert_eq!((p.deadline_ms, p.load_failures), (2000.0, 1));
    let error = p.last_load_error.as_deref().unwrap();
    assert!(
        error.contains("anomaly.toml") && error.contains("soon"),
        "{error}"
    );
}
