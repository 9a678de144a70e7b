//! Windows and alerts follow partitions: the same input gives the same
//! answers whatever happens to the processes reading it (`kill -9` and
//! restart, a second process joining and leaving the group) and however
//! many workers each has. Run against the real broker and the built
//! components.
//!
//! The faults run with `--alerts lifecycle`, whose state (what fires, since
//! when, how much was suppressed, when it was last written) is carried
//! from process to process: every `firing`, `repeat` and `resolved` record
//! must be the reference's, apart from at-least-once copies, which must be
//! exact. The workers comparison keeps `--alerts every-record`, so that the
//! article's alerts stay compared record for record too.

use streamhost_testkit as support;

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::time::{Duration, Instant};

use streamhost::cmd::plugins::request;
use support::kafka::{Cluster, terminate};

const PARTITIONS: i32 = 6;
const KEYS_PER_PARTITION: i32 = 8;
/// Event time between a key's readings.
const STEP_MS: i64 = 2_000;
/// Minutes of event time in the input.
const MINUTES: i64 = 40;

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The input: (partition, key, payload, event time = Kafka timestamp), in
/// production order. Every partition's keys report every 2 s of event time
/// for 40 minutes; now and then a record is a little out of order (within
/// the 30 s lateness) or late (60 s behind: dead-lettered); temperatures
/// wander so that the rules raise alerts. On each partition one key falls
/// silent from minute 10 to minute 39 (long enough for a sweep to drop it
/// with `--key-idle 1m`), and comes back with a reading from minute 8: as a
/// dropped key that reading starts a fresh window; had the key been kept, it
/// would be late. Event times end an hour before now.
fn input() -> Vec<(i32, String, Vec<u8>, i64)> {
    let t0 = (chrono::Utc::now().timestamp_millis() - (MINUTES + 60) * 60_000) / 60_000 * 60_000;
    let mut rand = support::seeded_uniform(13);
    let mut level: HashMap<(i32, i32), f64> = HashMap::new();
    let mut out = Vec::new();
    let reading = |key: &str, t: i64, temperature: f64, humidity: f64| {
        format!(
            r#"{{"sensor_id":"{key}","timestamp":"{}","temperature":{temperature:.2},"humidity":{humidity:.1},"battery_level":0.9}}"#,
            iso(t)
        )
        .into_bytes()
    };
    let steps = MINUTES * 60_000 / STEP_MS;
    let mut n = 0i64;
    for step in 0..steps {
        let t = t0 + step * STEP_MS;
        let minute = (t - t0) / 60_000;
        for p in 0..PARTITIONS {
            for k in 0..KEYS_PER_PARTITION {
                let key = format!("p{p}-k{k}");
                let silent = k == 7 && (10..39).contains(&minute);
                if silent {
                    continue;
                }
                if k == 7 && t == t0 + 39 * 60_000 {
                    // The silent key comes back with an old reading.
                    let old = t0 + 8 * 60_000;
                    out.push((p, key.clone(), reading(&key, old, 21.0, 50.0), old));
                }
                let l = level.entry((p, k)).or_insert(20.0 + f64::from(k));
                *l += (rand() - 0.5) * 3.0;
                let temperature = *l;
                let humidity = 60.0 + 35.0 * rand();
                n += 1;
                let shift = if n % 101 == 0 {
                    -60_000
                } else if n % 13 == 0 {
                    -10_000
                } else {
                    0
                };
                let at = t + shift;
                out.push((p, key.clone(), reading(&key, at, temperature, humidity), at));
            }
        }
    }
    out
}

/// What one output says about its source record, without the fields that
/// depend on when it was processed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// The enriched record's `streamhost` member: window statistics, trend
    /// labels, alert kinds, plugin versions.
    Enriched(String),
    /// An alert record, all but its processing times: rule, kinds,
    /// severity, messages, event time, record; with the lifecycle, its
    /// `status`, `firing_since`, `suppressed` and `resolved_by`.
    Alert(String),
    /// A dead letter's reason.
    Dead(String),
}

type Outcomes = BTreeMap<(i32, i64), Vec<Outcome>>;

fn source(v: &serde_json::Value) -> (i32, i64) {
    (
        v["partition"].as_i64().unwrap() as i32,
        v["offset"].as_i64().unwrap(),
    )
}

/// Every output of a run, by source record, once the run has stopped.
fn outcomes(cluster: &Cluster) -> Outcomes {
    let mut all = Outcomes::new();
    let dead = cluster.read_all(&cluster.dlq, Duration::from_secs(60));
    let enriched = cluster.read_all(&cluster.enriched, Duration::from_secs(180));
    for r in &dead {
        let at = (
            r.header("streamhost.source.partition").parse().unwrap(),
            r.header("streamhost.source.offset").parse().unwrap(),
        );
        let reason = r.header("streamhost.reason").to_string();
        all.entry(at).or_default().push(Outcome::Dead(reason));
    }
    for r in &enriched {
        let v = r.json();
        let member = &v["streamhost"];
        all.entry(source(&member["source"]))
            .or_default()
            .push(Outcome::Enriched(member.to_string()));
    }
    let alerts = cluster.read_all(&cluster.alerts, Duration::from_secs(180));
    for r in &alerts {
        let mut v = r.json();
        let at = source(&v["source"]);
        // The processing time: the alert's `timestamp`, and the one the
        // `enrich` transform stamps into the record (`sensor_data`).
        let processed = v.as_object_mut().unwrap().remove("timestamp");
        assert!(processed.is_some(), "an alert without timestamp: {v}");
        if let Some(record) = v["sensor_data"].as_object_mut() {
            assert!(record.remove("processed_at").is_some(), "{v}");
        }
        all.entry(at)
            .or_default()
            .push(Outcome::Alert(v.to_string()));
    }
    for v in all.values_mut() {
        v.sort();
    }
    all
}

/// Compares a run against the reference: per source record, the distinct
/// outcomes must be the same; copies are allowed only as identical ones.
/// Returns the number of duplicated outputs.
fn compare(reference: &Outcomes, run: &Outcomes, what: &str) -> usize {
    let mut wrong = 0;
    let mut duplicated = 0;
    for (at, want) in reference {
        let got = run.get(at).cloned().unwrap_or_default();
        let mut distinct = got.clone();
        distinct.dedup();
        duplicated += got.len() - distinct.len();
        if &distinct != want {
            wrong += 1;
            if wrong <= 5 {
                eprintln!("{what}: record {at:?}\n  want {want:?}\n  got  {distinct:?}");
            }
        }
    }
    let extra = run.keys().filter(|k| !reference.contains_key(k)).count();
    assert_eq!(
        extra, 0,
        "{what}: outputs for records the reference has none for"
    );
    assert_eq!(
        wrong,
        0,
        "{what}: {wrong} of {} records differ",
        reference.len()
    );
    duplicated
}

/// The rules, among them `zscore`, which declares a window of its own: its
/// alerts name the declared window's mean, standard deviation and count, so
/// the comparison covers declared windows too.
fn plugins() -> Vec<std::path::PathBuf> {
    ["enrich", "trend", "anomaly", "jump-js", "zscore"]
        .map(support::plugin_path)
        .to_vec()
}

/// `zscore` alerts often (above one standard deviation, from 3 readings),
/// over 10 minutes of event time: longer than the 5-minute `--window`, so
/// the windows hold, and rebuild, the longer span.
const ARGS: [&str; 10] = [
    "--key-idle",
    "1m",
    "--batch-size",
    "200",
    "--plugin-config",
    "zscore.z_max=1",
    "--plugin-config",
    "zscore.min_count=3",
    "--plugin-config",
    "zscore.window_ms=600000",
];

/// The alert lifecycle, repeating every 2 minutes of event time (so that
/// when an alert was last written is part of the state carried over).
const LIFECYCLE: [&str; 4] = ["--alerts", "lifecycle", "--alert-repeat", "2m"];

/// Checks that the lifecycle records of a run read as transitions of each
/// (key, rule, kind): `firing` when not firing (since its own event time,
/// nothing suppressed yet), then `repeat`s, then `resolved`, each naming
/// the same `firing_since` and a count suppressed that never goes down,
/// an idle resolution without a record. Returns the records by status.
fn lifecycle_statuses(run: &Outcomes) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    // Per (key, rule, kind): firing since, and suppressed so far.
    let mut firing: HashMap<String, (String, u64)> = HashMap::new();
    for outcomes in run.values() {
        let mut records: Vec<serde_json::Value> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Alert(a) => Some(serde_json::from_str(a).unwrap()),
                _ => None,
            })
            .collect();
        // One record may resolve a kind as idle (a sweep it triggered) and
        // fire it again: the resolution comes first.
        records.sort_by_key(|v| v["status"] != "resolved");
        for v in records {
            let id = format!("{} {} {}", v["sensor_id"], v["rule"], v["anomalies"]);
            let since = v["firing_since"].as_str().unwrap().to_string();
            let suppressed = v["suppressed"].as_u64().unwrap();
            let status = v["status"].as_str().unwrap();
            let was = firing.get(&id).cloned();
            let fits = match (status, &was) {
                ("firing", None) => since == v["event_time"].as_str().unwrap() && suppressed == 0,
                ("repeat" | "resolved", Some((s, n))) => *s == since && suppressed >= *n,
                _ => false,
            };
            assert!(fits, "{status} after {was:?}: {v}");
            let name = match v["resolved_by"].as_str() {
                Some(by) => {
                    assert_eq!(by == "idle", v["sensor_data"].is_null(), "{v}");
                    firing.remove(&id);
                    format!("{status} ({by})")
                }
                None => {
                    firing.insert(id, (since, suppressed));
                    status.to_string()
                }
            };
            *counts.entry(name).or_default() += 1;
        }
    }
    counts
}

/// Runs streamhost over a pre-loaded input until it is all processed.
async fn run_backlog(
    cluster: &Cluster,
    log: &str,
    workers: &str,
    alerts: &[&str],
    n: usize,
) -> Outcomes {
    let max = n.to_string();
    let mut args = ARGS.to_vec();
    args.extend(alerts);
    args.extend(["--workers", workers, "--max-records", &max]);
    let child = cluster.streamhost_with(log, &plugins(), &args);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", cluster.log(log));
    let all = outcomes(cluster);
    assert_eq!(all.len(), n, "every input has an output");
    all
}

/// Whether a process's log says it was assigned at least one partition.
fn holds_partitions(log: &str) -> bool {
    log.lines().any(|l| {
        l.split("Partitions assigned. partitions=[")
            .nth(1)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The summed consumer lag a process reports, once it holds `partitions`.
fn lag(cluster: &Cluster, log: &str, partitions: usize) -> Option<i64> {
    let admin = cluster.admin_addr(log);
    let (_, scrape) = request(&admin, "GET", "/metrics", None, b"").ok()?;
    let lags: Vec<i64> = scrape
        .lines()
        .filter(|l| l.starts_with("streamhost_consumer_lag_records{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (lags.len() == partitions).then(|| lags.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_the_same_across_kills_restarts_and_rebalances() {
    let records = input();
    let n = records.len();

    // The reference: one process, no faults, the whole input at once.
    let reference = {
        let cluster = Cluster::start("state-ref", PARTITIONS as u32);
        cluster.produce_stamped(&records).await;
        run_backlog(&cluster, "reference", "1", &LIFECYCLE, n).await
    };
    let kinds = reference
        .values()
        .flatten()
        .fold(BTreeMap::new(), |mut m, o| {
            let k = match o {
                Outcome::Enriched(_) => "enriched".to_string(),
                Outcome::Alert(_) => "alert".to_string(),
                Outcome::Dead(r) => format!("dead:{r}"),
            };
            *m.entry(k).or_insert(0usize) += 1;
            m
        });
    println!("reference: {n} inputs; {kinds:?}");
    assert!(
        kinds["alert"] > 100 && kinds["dead:late"] > 100,
        "{kinds:?}"
    );
    // The silent keys came back from a sweep: their old readings were
    // enriched with a window of their own, not dead-lettered as late.
    let old_readings = reference
        .values()
        .flatten()
        .filter(|o| matches!(o, Outcome::Enriched(m) if m.contains(r#""count":1,"#)))
        .count();
    assert!(old_readings >= PARTITIONS as usize, "{old_readings}");
    // The declared window's statistics are in the comparison: zscore
    // alerted, naming them.
    let zscores = reference
        .values()
        .flatten()
        .filter(|o| matches!(o, Outcome::Alert(a) if a.contains("temperature_zscore") && a.contains("10 min mean")))
        .count();
    assert!(zscores > 100, "zscore alerts: {zscores}");
    let statuses = lifecycle_statuses(&reference);
    println!("reference: lifecycle records {statuses:?}");
    for status in ["firing", "repeat", "resolved (record)", "resolved (idle)"] {
        assert!(
            statuses.get(status).is_some_and(|n| *n > 0),
            "the reference has no {status} record: {statuses:?}"
        );
    }

    // The same input, produced live while processes are killed, restarted,
    // and a second one joins the group and leaves it.
    let cluster = Cluster::start("state-faults", PARTITIONS as u32);
    let mut args = ARGS.to_vec();
    args.extend(LIFECYCLE);
    let start = |log: &str| cluster.streamhost_with(log, &plugins(), &args);
    let mut main = start("main-0");
    cluster.wait_log("main-0", "Partitions assigned", Duration::from_secs(60));
    let mut second: Option<Child> = None;
    let mut restarts = 0;
    let chunks: Vec<_> = records.chunks(n / 60 + 1).collect();
    let began = Instant::now();
    for (i, chunk) in chunks.iter().enumerate() {
        cluster.produce_stamped(chunk).await;
        match i {
            // kill -9 and restart, three times.
            10 | 30 | 45 => {
                kill9(&mut main);
                restarts += 1;
                main = start(&format!("main-{restarts}"));
            }
            // A second process joins the group, takes partitions over,
            // then leaves it cleanly.
            20 => second = Some(start("second")),
            26 => {
                let t = Instant::now();
                while !holds_partitions(&cluster.log("second")) {
                    assert!(
                        t.elapsed() < Duration::from_secs(60),
                        "the second process never got partitions:\n{}",
                        cluster.log("second")
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            38 => {
                let mut s = second.take().unwrap();
                assert!(terminate(&mut s).success(), "{}", cluster.log("second"));
                let log = cluster.log("second");
                let processed = log
                    .split("Stopped after committing. records=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0);
                assert!(
                    processed > 0,
                    "the second process processed nothing:\n{log}"
                );
                println!("faults: the second process processed {processed} records");
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "faults: {n} records produced over {:.0} s",
        began.elapsed().as_secs_f64()
    );
    // Wait for the last process to hold every partition and catch up.
    let last = format!("main-{restarts}");
    let t = Instant::now();
    while lag(&cluster, &last, PARTITIONS as usize) != Some(0) {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "never caught up:\n{}",
            cluster.log(&last)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(terminate(&mut main).success(), "{}", cluster.log(&last));
    let run = outcomes(&cluster);
    let duplicated = compare(&reference, &run, "kills and rebalances");

    let rebuilt: Vec<String> = (0..=restarts)
        .map(|i| format!("main-{i}"))
        .chain(["second".to_string()])
        .flat_map(|log| {
            cluster
                .log(&log)
                .lines()
                .filter(|l| l.contains("Rebuilt the partition's windows"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    println!(
        "faults: {} records compared, identical; {duplicated} duplicated outputs (identical copies); {} partition rebuilds",
        reference.len(),
        rebuilt.len()
    );
    assert!(rebuilt.len() >= 3, "{rebuilt:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_and_four_give_the_same_outputs() {
    let records = input();
    let n = records.len();
    let mut runs = Vec::new();
    for workers in ["1", "4"] {
        let cluster = Cluster::start(&format!("workers-{workers}"), PARTITIONS as u32);
        cluster.produce_stamped(&records).await;
        runs.push(run_backlog(&cluster, "streamhost", workers, &[], n).await);
    }
    let duplicated = compare(&runs[0], &runs[1], "4 workers against 1");
    assert_eq!(duplicated, 0);
    assert_eq!(runs[0].len(), n);
    println!("workers: {n} records, identical outputs with 1 and 4 workers");
}
