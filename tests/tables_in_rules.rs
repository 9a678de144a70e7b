//! Reference tables as rules read them, against a real broker (Nisshi) and
//! streamhost run as a process with the example rule `thresholds-js`
//! (plugins/thresholds-js/rule.js): per-sensor limits from a compacted
//! topic, changed mid-stream, each record judged by its row as the table
//! holds it when the record is processed; rows looked up by a record's
//! member (`--table NAME=TOPIC:FIELD`); and a rule declaring a table the
//! process was not given, refused at start. Every output is checked
//! against a model of the rule computed here from the rows produced.

use streamhost_testkit as support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use streamhost::cmd::plugins::request;
use support::kafka::{Cluster, metric, terminate};

/// Event times start on a minute.
const T0: i64 = 1_795_500_000_000;
/// How long outputs may take to appear.
const OUTPUTS: Duration = Duration::from_secs(20);
/// The rule's limits without a row (its configuration's defaults).
const DEFAULT_MIN: f64 = 0.0;
const DEFAULT_MAX: f64 = 40.0;
/// Each sensor gets every one of these, in each phase: between them they
/// tell a row's limits from the defaults (9 is above a freezer's 8, 5 below
/// a minimum of 10, 35 above a maximum of 30, 25 above 20...).
const TEMPERATURES: [f64; 7] = [-1.0, 5.0, 9.0, 15.0, 25.0, 35.0, 45.0];

/// A row of the table as the model holds it: the limits it gives.
#[derive(Clone, Copy, Debug, Default)]
struct Limits {
    min: Option<f64>,
    max: Option<f64>,
}

/// The model of the table: rows by key.
type Rows = BTreeMap<String, Limits>;

/// The alert message the rule must raise for `t` under `row` (none: the
/// record has no row), or `None` when `t` is within the limits: strictly
/// above the maximum, else strictly below the minimum; each limit the
/// row's when it gives one, else the default, named in the message.
fn judge(row: Option<&Limits>, t: f64) -> Option<String> {
    let pick = |own: Option<f64>, default: f64| match own {
        Some(v) => (v, "thresholds table"),
        None => (default, "default"),
    };
    let (max, max_src) = pick(row.and_then(|r| r.max), DEFAULT_MAX);
    let (min, min_src) = pick(row.and_then(|r| r.min), DEFAULT_MIN);
    if t > max {
        Some(format!("temperature {t} is above {max} ({max_src})"))
    } else if t < min {
        Some(format!("temperature {t} is below {min} ({min_src})"))
    } else {
        None
    }
}

/// A table record: key, and a value or a tombstone.
type TableRecord = (String, Option<Value>);

/// Applies `records` to the model `rows`, as the table must.
fn apply(rows: &mut Rows, records: &[TableRecord]) {
    for (key, value) in records {
        match value {
            None => {
                rows.remove(key);
            }
            Some(v) => {
                rows.insert(
                    key.clone(),
                    Limits {
                        min: v["temperature_min"].as_f64(),
                        max: v["temperature_max"].as_f64(),
                    },
                );
            }
        }
    }
}

/// Creates `topic`, compacted, with one partition (so its records apply
/// in the order produced).
async fn create_table_topic(c: &Cluster, topic: &str) {
    let admin: AdminClient<_> = c.config().create().unwrap();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for r in admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// Produces `records` to the table topic, in order, and waits for them.
async fn produce_rows(c: &Cluster, topic: &str, records: &[TableRecord]) {
    let producer = c.producer();
    let mut futures = Vec::new();
    for (key, value) in records {
        let payload = value.as_ref().map(|v| v.to_string().into_bytes());
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key.as_bytes());
        if let Some(p) = &payload {
            r = r.payload(&p[..]);
        }
        futures.push(producer.send_result(r).map_err(|(e, _)| e).unwrap());
    }
    for f in futures {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// What one input must come out as.
#[derive(Debug)]
struct Want {
    what: String,
    stage: String,
    key: String,
    temperature: f64,
    /// The alert message, if it must alert.
    message: Option<String>,
}

/// Every input produced so far, by source position.
type Wants = HashMap<(i32, i64), Want>;

/// Produces readings (key, JSON) to the input topic; records in `want`
/// what each must come out as, by `lookup` (the row key a reading looks
/// up, if any) in `rows`.
async fn produce_readings(
    c: &Cluster,
    readings: &[(String, Value)],
    rows: &Rows,
    lookup: impl Fn(&str, &Value) -> Option<String>,
    want: &mut Wants,
    stage: &str,
) {
    let positions = c.produce_json(readings).await;
    for ((key, v), (p, o)) in readings.iter().zip(positions) {
        let row_key = lookup(key, v);
        let row = row_key.as_deref().and_then(|k| rows.get(k));
        let t = v["temperature"].as_f64().unwrap();
        let w = Want {
            what: format!("{stage}: {v} (row {row_key:?}: {row:?})"),
            stage: stage.to_string(),
            key: key.clone(),
            temperature: t,
            message: judge(row, t),
        };
        assert!(want.insert((p, o), w).is_none());
    }
}

/// Waits for the outputs of every input in `want`, then reads both output
/// topics whole: exactly one enriched output per input, with the alert
/// kind iff the model alerts; exactly one alert per alerting input, from
/// the rule `thresholds`, with the model's message (limit and its source),
/// and none for the others.
fn check_outputs(c: &Cluster, want: &Wants, stage: &str, log: &str) {
    let n = want.len();
    c.read(&c.enriched, OUTPUTS, |r| r.len() >= n);
    let enriched = c.read_all(&c.enriched, OUTPUTS);
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    for r in &enriched {
        let (at, v) = (r.source(), r.json());
        let w = want
            .get(&at)
            .unwrap_or_else(|| panic!("{stage}: an enriched output of no input: {v}"));
        *seen.entry(at).or_default() += 1;
        let kinds: Vec<&str> = match w.message {
            Some(_) => vec!["temperature_out_of_range"],
            None => vec![],
        };
        assert_eq!(
            v["streamhost"]["alerts"],
            json!(kinds),
            "{stage}: the alert kinds of {} ({at:?}): {v}",
            w.what
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, k)| **k > 1).collect();
    assert!(
        twice.is_empty(),
        "{stage}: inputs with more than one enriched output: {twice:?}"
    );
    let missing: Vec<_> = want
        .iter()
        .filter(|(at, _)| !seen.contains_key(at))
        .map(|(_, w)| &w.what)
        .collect();
    assert!(
        missing.is_empty(),
        "{stage}: {} of {n} inputs have no enriched output, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        c.log(log)
    );

    let alerting = want.values().filter(|w| w.message.is_some()).count();
    c.read(&c.alerts, OUTPUTS, |r| r.len() >= alerting);
    let alerts = c.read_all(&c.alerts, OUTPUTS);
    let mut alerted: HashMap<(i32, i64), usize> = HashMap::new();
    for a in &alerts {
        let (at, v) = (a.source(), a.json());
        let w = want
            .get(&at)
            .unwrap_or_else(|| panic!("{stage}: an alert of no input: {v}"));
        let Some(message) = &w.message else {
            panic!("{stage}: {} must not alert: {v}", w.what);
        };
        assert_eq!(v["rule"], "thresholds", "{stage}: {v}");
        assert_eq!(
            v["anomalies"],
            json!(["temperature_out_of_range"]),
            "{stage}: {v}"
        );
        let messages: Vec<&str> = (v["alerts"].as_array().unwrap().iter())
            .map(|a| a["message"].as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            [message.as_str()],
            "{stage}: the alert of {}: {v}",
            w.what
        );
        *alerted.entry(at).or_default() += 1;
    }
    let twice: Vec<_> = alerted.iter().filter(|(_, k)| **k > 1).collect();
    assert!(twice.is_empty(), "{stage}: inputs alerted twice: {twice:?}");
    assert_eq!(
        alerted.len(),
        alerting,
        "{stage}: inputs that must alert under their rows"
    );
}

/// Waits for `/readyz`, checking each time it answers that readiness never
/// comes before the table `thresholds` is loaded: once ready, the metrics
/// (read after) show the table ready and holding `rows` rows.
fn wait_ready(c: &Cluster, log: &str, admin: &str, rows: usize) {
    let t = Instant::now();
    let mut not_ready = 0;
    loop {
        let (status, body) = request(admin, "GET", "/readyz", None, b"").unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "/readyz: {body}");
        not_ready += 1;
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never ready:\n{}",
            c.log(log)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The table's readiness and rows never go back: had the process been
    // ready before the load ended, this would show it.
    assert_eq!(
        metric(admin, "streamhost_table_ready{table=\"thresholds\"}"),
        Some(1.0),
        "ready before the table was loaded"
    );
    assert_eq!(
        metric(admin, "streamhost_table_rows{table=\"thresholds\"}"),
        Some(rows as f64),
        "ready before the table held its topic"
    );
    eprintln!("/readyz said not ready {not_ready} times first");
}

/// The thresholds rule, built by `cargo xtask plugins`.
fn thresholds() -> Vec<PathBuf> {
    vec![support::plugin_path("thresholds-js")]
}

/// Every sensor of `sensors` with every temperature, timestamps from `from`
/// seconds on, keyed and identified by the sensor.
fn readings(sensors: &[&str], from: i64, extra: impl Fn(&str) -> Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (i, t) in TEMPERATURES.iter().enumerate() {
        for s in sensors {
            let mut v = json!({
                "sensor_id": s,
                "timestamp": T0 + (from + i as i64) * 1000,
                "temperature": t,
                "humidity": 50.0,
                "battery_level": 0.9,
            });
            if let (Value::Object(m), Value::Object(more)) = (&mut v, extra(s)) {
                m.extend(more);
            }
            out.push((s.to_string(), v));
        }
    }
    out
}

fn stop(child: &mut Child, c: &Cluster, log: &str) {
    assert!(terminate(child).success(), "{}", c.log(log));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_sensor_thresholds_follow_the_table_as_it_changes_mid_stream() {
    let c = Cluster::start("tables-in-rules", 2);
    let topic = support::topic("thresholds");
    create_table_topic(&c, &topic).await;

    // Filler rows no reading looks up, enough that the load is not
    // instant; then the rows the readings use.
    let mut table: Vec<TableRecord> = (0..2000)
        .map(|i| (format!("other_{i:04}"), Some(json!({"temperature_max": i}))))
        .collect();
    table.extend([
        ("sensor_001".into(), Some(json!({"temperature_max": 8}))),
        (
            "sensor_002".into(),
            Some(json!({"temperature_min": 10, "temperature_max": 30})),
        ),
    ]);
    produce_rows(&c, &topic, &table).await;
    let mut rows = Rows::new();
    apply(&mut rows, &table);

    let table_arg = format!("thresholds={topic}");
    let log = "streamhost";
    let mut sh = c.streamhost_with(log, &thresholds(), &["--table", &table_arg]);
    let admin = c.admin_addr(log);
    wait_ready(&c, log, &admin, rows.len());

    let sensors = [
        "sensor_001",
        "sensor_002",
        "sensor_003",
        "sensor_004",
        "sensor_005",
    ];
    let by_key = |k: &str, _: &Value| Some(k.to_string());
    let mut want = Wants::new();

    // Phase 1 under the rows loaded, all out before the table changes.
    let phase1 = readings(&sensors, 0, |_| json!({}));
    produce_readings(&c, &phase1, &rows, by_key, &mut want, "phase 1").await;
    check_outputs(&c, &want, "phase 1", log);

    // The table changes: sensor_002's row deleted, sensor_001's maximum
    // raised to 12, a row for sensor_003; then a marker row no reading looks
    // up. The topic has one partition, so the rows apply in this order and
    // the count goes 2002 -> 2001 -> 2001 -> 2002 -> 2003: it reaches
    // 2003 only once every change is applied. So wait for
    // `streamhost_table_rows` to show it (and the lag to be 0).
    let updates: Vec<TableRecord> = vec![
        ("sensor_002".into(), None),
        ("sensor_001".into(), Some(json!({"temperature_max": 12}))),
        ("sensor_003".into(), Some(json!({"temperature_max": 20}))),
        ("marker".into(), Some(json!({}))),
    ];
    produce_rows(&c, &topic, &updates).await;
    apply(&mut rows, &updates);
    assert_eq!(rows.len(), 2003);
    let t = Instant::now();
    while metric(&admin, "streamhost_table_rows{table=\"thresholds\"}") != Some(2003.0)
        || metric(&admin, "streamhost_table_lag_records{table=\"thresholds\"}") != Some(0.0)
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the table never applied the updates: {:?} rows, lag {:?}\n{}",
            metric(&admin, "streamhost_table_rows{table=\"thresholds\"}"),
            metric(&admin, "streamhost_table_lag_records{table=\"thresholds\"}"),
            c.log(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The model, spelled out for the sensors read.
    assert!(rows.get("sensor_002").is_none());
    assert_eq!(rows["sensor_001"].max, Some(12.0));
    assert_eq!(
        (rows["sensor_003"].min, rows["sensor_003"].max),
        (None, Some(20.0))
    );

    // Phase 2, same temperatures, under the changed rows; checked with all
    // of phase 1 again (nothing lost, nothing twice).
    let phase2 = readings(&sensors, 100, |_| json!({}));
    produce_readings(&c, &phase2, &rows, by_key, &mut want, "phase 2").await;
    check_outputs(&c, &want, "phase 2", log);
    assert_eq!(want.len(), 2 * sensors.len() * TEMPERATURES.len());

    // The sources changed as the rows did (a check of the model itself).
    let msg = |stage: &str, sensor: &str, t: f64| {
        want.values()
            .find(|w| w.stage == stage && w.key == sensor && w.temperature == t)
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        msg("phase 1", "sensor_001", 9.0).as_deref(),
        Some("temperature 9 is above 8 (thresholds table)")
    );
    assert_eq!(msg("phase 2", "sensor_001", 9.0), None);
    assert_eq!(
        msg("phase 1", "sensor_002", 35.0).as_deref(),
        Some("temperature 35 is above 30 (thresholds table)")
    );
    assert_eq!(msg("phase 2", "sensor_002", 35.0), None);
    assert_eq!(msg("phase 1", "sensor_003", 25.0), None);
    assert_eq!(
        msg("phase 2", "sensor_003", 25.0).as_deref(),
        Some("temperature 25 is above 20 (thresholds table)")
    );
    assert_eq!(
        msg("phase 2", "sensor_003", -1.0).as_deref(),
        Some("temperature -1 is below 0 (default)")
    );

    stop(&mut sh, &c, log);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_looked_up_by_a_member_of_the_record() {
    let c = Cluster::start("tables-by-site", 2);
    let topic = support::topic("sites");
    create_table_topic(&c, &topic).await;
    // Keyed by site; and a row keyed like a sensor, which a lookup by
    // site must never find.
    let table: Vec<TableRecord> = vec![
        ("freezer-a".into(), Some(json!({"temperature_max": 8}))),
        (
            "greenhouse".into(),
            Some(json!({"temperature_min": 10, "temperature_max": 30})),
        ),
        ("sensor_003".into(), Some(json!({"temperature_max": 1}))),
    ];
    produce_rows(&c, &topic, &table).await;
    let mut rows = Rows::new();
    apply(&mut rows, &table);

    let table_arg = format!("thresholds={topic}:site");
    let log = "streamhost";
    let mut sh = c.streamhost_with(log, &thresholds(), &["--table", &table_arg]);
    let admin = c.admin_addr(log);
    wait_ready(&c, log, &admin, rows.len());

    // sensor_001 in the freezer, sensor_002 in the greenhouse, sensor_003
    // with no site (the defaults, not the row keyed like it), sensor_004
    // at a site without a row (the defaults).
    let site = |s: &str| match s {
        "sensor_001" => json!({"site": "freezer-a"}),
        "sensor_002" => json!({"site": "greenhouse"}),
        "sensor_004" => json!({"site": "warehouse"}),
        _ => json!({}),
    };
    let sensors = ["sensor_001", "sensor_002", "sensor_003", "sensor_004"];
    let by_site = |_: &str, v: &Value| v["site"].as_str().map(str::to_string);
    let mut want = Wants::new();
    let all = readings(&sensors, 0, site);
    produce_readings(&c, &all, &rows, by_site, &mut want, "by site").await;
    check_outputs(&c, &want, "by site", log);
    // The model itself: a freezer at 9 alerts by its row, no site at 9 not.
    let count = |needle: &str| {
        want.values()
            .filter(|w| w.message.as_deref().is_some_and(|m| m.contains(needle)))
            .count()
    };
    assert!(count("(thresholds table)") > 0 && count("(default)") > 0);

    stop(&mut sh, &c, log);
}

#[test]
fn a_rule_reading_a_table_the_process_was_not_given_is_refused_at_start() {
    let c = Cluster::start("tables-missing", 1);
    let log = "streamhost";
    let mut sh = c.streamhost_with(log, &thresholds(), &[]);
    // A guard against a host that never stops, not a timing: a cold start
    // compiles the JavaScript component (SpiderMonkey) first, which took
    // over 20 s on a fresh machine with the rest of the suite beside it.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = sh.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(300) {
            let _ = sh.kill();
            let _ = sh.wait();
            panic!(
                "streamhost runs a rule whose table it was not given:\n{}",
                c.log(log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = c.log(log);
    assert!(!status.success(), "{status:?}:\n{text}");
    assert!(
        text.contains("the table \"thresholds\" is not given to this host")
            && text.contains("--table thresholds=TOPIC"),
        "the refusal must name the table and --table:\n{text}"
    );
}
