//! One poisoned record fails alone: the pipeline, with the real hostile
//! component, dead-letters exactly the records that make it fail, each with
//! the reason class of its failure, and passes the others on.

use streamhost_testkit as support;

use std::sync::Arc;

use streamhost::decode::{EpochUnit, Schema};
use streamhost::pipeline::{OutputLimits, Pipeline, PipelineConfig};
use streamhost::record::InRecord;
use streamhost::record::{Dest, headers};
use streamhost::rules::RuleSet;
use streamhost::window::WindowConfig;

const T0: i64 = 1_795_500_000_000;

fn record(offset: i64, sensor: &str) -> InRecord {
    let payload = format!(
        r#"{{"sensor_id":"{sensor}","timestamp":{},"temperature":20.5}}"#,
        T0 + offset
    );
    InRecord {
        partition: 0,
        offset,
        timestamp: None,
        key: Some(sensor.as_bytes().to_vec()),
        payload: Some(payload.into_bytes()),
    }
}

/// The pipeline both tests run: one field, a 5-minute window, a generous
/// isolation budget.
fn config() -> PipelineConfig {
    PipelineConfig {
        input: Default::default(),
        shape: streamhost::output::Shape::Full,
        avro_output: None,
        schema: Schema {
            key_field: "sensor_id".into(),
            time_field: "timestamp".into(),
            fields: vec!["temperature".into()],
            epoch_unit: EpochUnit::Millis,
        },
        window: WindowConfig {
            length_ms: 300_000,
            lateness_ms: 0,
            k: 3,
            fields: 1,
            idle_ms: 0,
            declared: Vec::new(),
        },
        source_topic: "in".into(),
        max_future_ms: 3_600_000,
        isolation_budget: std::time::Duration::from_secs(30),
        limits: OutputLimits::default(),
        tables: Vec::new(),
        alerts: Default::default(),
        alert_repeat_ms: 0,
    }
}

#[test]
fn each_failure_is_dead_lettered_alone_with_its_reason() {
    // A deadline long enough that `bomb` meets the memory cap first even on
    // a loaded machine (at the default 100 ms it may not).
    let rt = support::runtime_with_deadline(std::time::Duration::from_secs(1));
    let mut rules = RuleSet::default();
    rules.push(support::load(&rt, "enrich"));
    rules.push(support::load(&rt, "hostile") as Arc<dyn streamhost::rules::Rule>);
    let mut pipeline = Pipeline::new(config());
    let keys = [
        "a", "b", "panic", "c", "reject", "d", "bomb", "e", "spin", "f",
    ];
    let input: Vec<InRecord> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| record(i as i64, k))
        .collect();
    let out = pipeline.process(&rules, input.clone(), T0);

    let mut enriched = Vec::new();
    let mut alerts = Vec::new();
    let mut dead = Vec::new();
    for r in &out.records {
        match r.dest {
            Dest::Enriched => {
                enriched.push(serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap())
            }
            Dest::Alerts => {
                alerts.push(serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap())
            }
            Dest::DeadLetter => dead.push(r),
        }
    }
    let names: Vec<&str> = enriched
        .iter()
        .map(|v| v["sensor_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
    // The hostile rule echoes each key it handled as an alert.
    let echoed: Vec<&str> = alerts
        .iter()
        .map(|v| v["alerts"][0]["message"].as_str().unwrap())
        .collect();
    assert_eq!(echoed, ["a", "b", "c", "d", "e", "f"]);

    let header = |r: &streamhost::record::OutRecord, name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let got: Vec<(String, String)> = dead
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                header(r, headers::REASON),
            )
        })
        .collect();
    let want = [
        ("panic", "plugin-trap"),
        ("reject", "plugin-error"),
        ("bomb", "plugin-oom"),
        ("spin", "plugin-timeout"),
    ];
    assert_eq!(got, want.map(|(k, r)| (k.to_string(), r.to_string())));
    for r in &dead {
        assert_eq!(header(r, headers::PLUGIN), "hostile");
        assert_eq!(header(r, headers::PLUGIN_VERSION), "0.0.1");
        // The original bytes, not the transformed record.
        let offset: usize = header(r, headers::OFFSET).parse().unwrap();
        assert_eq!(Some(&r.payload), input[offset].payload.as_ref());
    }
    assert_eq!(header(dead[1], headers::ERROR), "rejected by hostile");
    assert_eq!(out.tally.enriched, 6);
    assert_eq!(out.tally.dead_letters(), 4);
}

/// In a batch of 1,000 with one poisoned record, bisection finds exactly
/// that record, however deep it has to go: no innocent neighbour goes with
/// it (the old fixed retry budget of 16 calls stopped at batches over 256).
#[test]
fn one_poisoned_record_in_a_thousand_is_found_alone() {
    let rt = support::runtime();
    let mut rules = RuleSet::default();
    rules.push(support::load(&rt, "hostile") as Arc<dyn streamhost::rules::Rule>);
    for poison in ["panic", "spin"] {
        let mut pipeline = Pipeline::new(config());
        let input: Vec<InRecord> = (0..1000)
            .map(|i| record(i, if i == 613 { poison } else { "fine" }))
            .collect();
        let out = pipeline.process(&rules, input, T0 + 1000);
        let dead: Vec<i64> = out
            .records
            .iter()
            .filter(|r| r.dest == Dest::DeadLetter)
            .map(|r| r.source.1)
            .collect();
        assert_eq!(dead, [613], "{poison}");
        assert_eq!(out.tally.enriched, 999, "{poison}");
    }
}

/// A record that one rule failed is not handed to the rules after it, and
/// the records around it still go through all of them: here the hostile
/// anomaly rule fails two records, then the trend and anomaly rules of the
/// examples see the rest.
#[test]
fn a_record_one_rule_failed_is_skipped_by_the_rules_after_it() {
    let rt = support::runtime_with_deadline(std::time::Duration::from_secs(1));
    let mut rules = RuleSet::default();
    rules.push(support::load(&rt, "trend"));
    rules.push(support::load(&rt, "hostile") as Arc<dyn streamhost::rules::Rule>);
    rules.push(support::load(&rt, "anomaly"));
    let mut pipeline = Pipeline::new(config());
    let keys = ["a", "reject", "b", "panic", "c"];
    let input: Vec<InRecord> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| record(i as i64, k))
        .collect();
    let out = pipeline.process(&rules, input, T0);
    let by_dest = |dest: Dest| -> Vec<String> {
        out.records
            .iter()
            .filter(|r| r.dest == dest)
            .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
            .collect()
    };
    assert_eq!(by_dest(Dest::Enriched), ["a", "b", "c"]);
    assert_eq!(by_dest(Dest::DeadLetter), ["reject", "panic"]);
    // The hostile rule echoes each key it handled; 20.5 °C raises nothing
    // in the example anomaly rule.
    assert_eq!(by_dest(Dest::Alerts), ["a", "b", "c"]);
    assert_eq!(out.tally.dead_letters(), 2);
}
