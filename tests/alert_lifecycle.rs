//! The alert lifecycle (`--alerts lifecycle`), against the real broker and
//! the built `anomaly` component: a generated stream with out-of-range
//! episodes per key (short and long ones, several kinds at once, flapping
//! at a threshold, a key that goes silent while firing, late and
//! out-of-order records) must give exactly the `firing`, `repeat` and
//! `resolved` records of a model written here from the documented
//! semantics; the same stream with `--alerts every-record` gives one alert
//! record per alerting record, many more. A configuration change mid-stream
//! that still raises what fires neither resolves it nor fires it again.
//!
//! The model knows the rule's thresholds and messages (plugins/anomaly) and
//! the window sweep (host/src/window.rs: partitions read in intervals of
//! 4096 offsets; at each interval's first record the partition's clock
//! advances to the lower median event time of the closing interval, and a
//! key with no record in that interval whose newest event time is more
//! than window + lateness + idle behind the clock is dropped). It calls no
//! host code.

use streamhost_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::kafka::{Cluster, Read, metric, terminate};

/// Event times start on a minute, in the past (`--max-future` refuses
/// event times an hour ahead of the processing time).
const T0: i64 = 1_700_000_040_000;
/// Offsets per sweep interval of a partition (host/src/window.rs).
const SWEEP_INTERVAL: i64 = 4096;
/// `--window`, `--allowed-lateness`, `--key-idle`, `--alert-repeat`, short
/// so that the stream is short.
const WINDOW: (&str, i64) = ("30s", 30_000);
const LATENESS: (&str, i64) = ("5s", 5_000);
const KEY_IDLE: (&str, i64) = ("30s", 30_000);
const REPEAT: (&str, i64) = ("2m", 120_000);
/// Input partitions, keys per partition, and seconds of event time: each
/// key reads once a second, so each partition crosses two sweep intervals.
const PARTITIONS: i32 = 2;
const KEYS: i32 = 8;
const SECONDS: i64 = 1500;
/// A hang guard for a whole run, not a timing: a cold machine compiles the
/// component first.
const RUN: Duration = Duration::from_secs(300);
const TOKEN: &str = "lifecycle-token";

/// The anomaly rule's thresholds (plugins/anomaly; strict comparisons).
#[derive(Clone, Copy, Debug)]
struct Thresholds {
    temperature_min: f64,
    temperature_max: f64,
    humidity_max: f64,
    battery_min: f64,
}

/// The rule's own defaults (the article's).
const ARTICLE: Thresholds = Thresholds {
    temperature_min: 0.0,
    temperature_max: 40.0,
    humidity_max: 90.0,
    battery_min: 0.2,
};

/// One input record.
#[derive(Clone, Debug)]
struct Input {
    partition: i32,
    key: String,
    time_ms: i64,
    temperature: f64,
    humidity: f64,
    battery: f64,
}

impl Input {
    fn json(&self) -> Value {
        json!({
            "sensor_id": self.key,
            "timestamp": self.time_ms,
            "temperature": self.temperature,
            "humidity": self.humidity,
            "battery_level": self.battery,
        })
    }
}

/// An alert the rule raises: kind, severity and message.
#[derive(Clone, Debug)]
struct Raised {
    kind: &'static str,
    severity: &'static str,
    message: String,
}

/// What the rule raises for `r` under `t`, in its order: temperature out
/// of range, low battery, high humidity.
fn raised(t: &Thresholds, r: &Input) -> Vec<Raised> {
    let mut out = Vec::new();
    if r.temperature > t.temperature_max || r.temperature < t.temperature_min {
        out.push(Raised {
            kind: "temperature_out_of_range",
            severity: "high",
            message: format!(
                "temperature {} is outside [{}, {}]",
                r.temperature, t.temperature_min, t.temperature_max
            ),
        });
    }
    if r.battery < t.battery_min {
        out.push(Raised {
            kind: "low_battery",
            severity: "medium",
            message: format!("battery level {} is below {}", r.battery, t.battery_min),
        });
    }
    if r.humidity > t.humidity_max {
        out.push(Raised {
            kind: "high_humidity",
            severity: "medium",
            message: format!("humidity {} is above {}", r.humidity, t.humidity_max),
        });
    }
    out
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Two decimals, as sensors write them.
fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The generated stream, in production order. Per partition, eight keys
/// with one role each (the second partition's schedule 37 s later), a
/// reading a second for 1500 s, normal values otherwise:
/// - k0: episodes above and below the range, of 1 to 420 readings; silent
///   140 s in the long one (the next reading repeats: 2 minutes passed
///   since the last emission);
/// - k1: flapping at the boundary: 40.1/39.9, then 40.01/40 (40 is in
///   range), then humidity 90.5/90;
/// - k2: several kinds at once, peeling off one at a time, all resolving
///   together, and a kind resolving as another begins;
/// - k3: firing when it falls silent, until a sweep drops it (resolved as
///   idle), then back, firing again;
/// - k4: an episode with late records (dead-lettered: they neither resolve
///   nor fire) and out-of-order ones within the lateness (live: they do);
/// - k5: silent long enough to be swept, never firing (nothing to resolve);
/// - k6: silent 250 s while firing, but back before any sweep: resolved by
///   its next record;
/// - k7: a low battery throughout (a repeat every 2 minutes), and too hot
///   but for one reading.
fn generate() -> Vec<Input> {
    // (arrival second, partition, key, extra, record)
    let mut all: Vec<(i64, i32, i32, u8, Input)> = Vec::new();
    for p in 0..PARTITIONS {
        let shift = i64::from(p) * 37;
        for k in 0..KEYS {
            let mut rand = support::seeded_uniform((p * KEYS + k) as u64 + 1);
            let key = format!("p{p}-k{k}");
            let at = |s: i64, temperature: f64, humidity: f64, battery: f64| Input {
                partition: p,
                key: key.clone(),
                time_ms: T0 + s * 1000,
                temperature,
                humidity,
                battery,
            };
            for s in 0..SECONDS {
                let e = s - shift;
                let mut temperature = r2(20.0 + 10.0 * rand());
                let mut humidity = r2(40.0 + 40.0 * rand());
                let mut battery = r2(0.5 + 0.4 * rand());
                let silent = match k {
                    0 => (500..640).contains(&e),
                    3 => (300..1420).contains(&e),
                    5 => (200..1400).contains(&e),
                    6 => (250..500).contains(&e),
                    _ => false,
                };
                if silent {
                    continue;
                }
                match k {
                    0 => match e {
                        100..105 => temperature = 45.0,
                        200..260 => temperature = 47.5,
                        400..820 => temperature = 50.0,
                        900..903 => temperature = -4.5,
                        1000 => temperature = 41.0,
                        _ => {}
                    },
                    1 => match e {
                        300..420 => temperature = if e % 2 == 0 { 40.1 } else { 39.9 },
                        700..760 => temperature = if e % 2 == 0 { 40.01 } else { 40.0 },
                        1100..1160 => humidity = if e % 2 == 0 { 90.5 } else { 90.0 },
                        _ => {}
                    },
                    2 => {
                        match e {
                            200..260 | 1000..1010 => temperature = 45.0,
                            260..300 => temperature = -3.0,
                            1190..1200 => temperature = 44.0,
                            _ => {}
                        }
                        if (200..700).contains(&e)
                            || (1000..1010).contains(&e)
                            || (1200..1300).contains(&e)
                        {
                            battery = 0.1;
                        }
                        if (200..230).contains(&e)
                            || (350..380).contains(&e)
                            || (1000..1010).contains(&e)
                        {
                            humidity = 95.0;
                        }
                    }
                    3 if e >= 150 => temperature = 46.0,
                    4 if (300..700).contains(&e) => temperature = 44.0,
                    6 if (100..250).contains(&e) => temperature = 43.0,
                    7 => {
                        battery = 0.15;
                        temperature = if e == 750 { 25.0 } else { 48.0 };
                    }
                    _ => {}
                }
                all.push((s, p, k, 0, at(s, temperature, humidity, battery)));
                if k == 4 {
                    // Extra records of key 4, arriving after its reading
                    // of second `s` with an older event time.
                    let extra = match e {
                        // Late (behind the newest by more than 5 s): while
                        // firing, a normal one; while not, a hot one.
                        350 => Some((20, 25.0)),
                        800 => Some((20, 44.0)),
                        // Out of order within the lateness: a normal one
                        // resolves, a hot one is suppressed or fires.
                        400 => Some((3, 25.0)),
                        530 => Some((4, 44.0)),
                        900 => Some((3, 44.0)),
                        _ => None,
                    };
                    if let Some((behind, t)) = extra {
                        all.push((s, p, k, 1, at(s - behind, t, 50.0, 0.8)));
                    }
                }
            }
        }
    }
    all.sort_by_key(|(s, p, k, extra, _)| (*s, *p, *k, *extra));
    all.into_iter().map(|(.., r)| r).collect()
}

/// A firing alert, as the model holds it.
#[derive(Clone, Debug)]
struct Open {
    since: i64,
    emitted: i64,
    suppressed: u64,
    severity: &'static str,
    message: String,
}

/// One partition's windows (as far as sweeps need them) and alerts.
#[derive(Default)]
struct PartitionModel {
    /// The sweep interval being read.
    interval: Option<i64>,
    /// Event times of the records of the current interval.
    times: Vec<i64>,
    clock: Option<i64>,
    /// Keys with a window: their newest event time.
    newest: BTreeMap<String, i64>,
    /// Keys with a record in the current interval.
    active: BTreeSet<String>,
    /// Firing alerts by key and kind.
    firing: BTreeMap<String, BTreeMap<&'static str, Open>>,
}

impl PartitionModel {
    /// Closes the current interval: the keys dropped, with the clock.
    fn sweep(&mut self) -> Vec<(String, i64)> {
        if !self.times.is_empty() {
            self.times.sort_unstable();
            let median = self.times[(self.times.len() - 1) / 2];
            self.clock = Some(self.clock.map_or(median, |c| c.max(median)));
            self.times.clear();
        }
        let active = std::mem::take(&mut self.active);
        let Some(clock) = self.clock else {
            return Vec::new();
        };
        let horizon = WINDOW.1 + LATENESS.1 + KEY_IDLE.1;
        let dropped: Vec<String> = (self.newest.iter())
            .filter(|(k, newest)| !active.contains(*k) && **newest < clock - horizon)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dropped {
            self.newest.remove(k);
        }
        dropped.into_iter().map(|k| (k, clock)).collect()
    }
}

/// What one input record must come out as on the alerts topic.
#[derive(Debug, Default)]
struct Expected {
    /// Dead-lettered as late.
    late: bool,
    /// Kinds the rule raised (live records).
    raised: Vec<&'static str>,
    /// Alerts of keys the sweep this record triggered dropped, resolved as
    /// idle, sorted by key and kind (their order is not specified).
    idle: Vec<Value>,
    /// Its own lifecycle records, in order.
    own: Vec<Value>,
}

/// The lifecycle model: windows as far as lateness and sweeps go, and the
/// firing alerts of every (partition, key, kind) for the one rule.
struct Model {
    parts: BTreeMap<i32, PartitionModel>,
}

/// A lifecycle record as the host must write it, without `timestamp`.
#[allow(clippy::too_many_arguments)]
fn lifecycle_record(
    key: &str,
    kind: &str,
    status: &str,
    open: &Open,
    event_ms: i64,
    resolved_by: Option<&str>,
    sensor_data: Value,
    version: &str,
    source: (i32, i64),
) -> Value {
    let mut v = json!({
        "sensor_id": key,
        "event_time": iso(event_ms),
        "status": status,
        "anomalies": [kind],
        "severity": open.severity,
        "rule": "anomaly",
        "rule_version": version,
        "alerts": [{"rule": "anomaly", "kind": kind, "severity": open.severity, "message": open.message}],
        "firing_since": iso(open.since),
        "suppressed": open.suppressed,
        "sensor_data": sensor_data,
        "source": {"partition": source.0, "offset": source.1},
    });
    if let Some(by) = resolved_by {
        v["resolved_by"] = json!(by);
    }
    v
}

impl Model {
    fn new() -> Model {
        Model {
            parts: BTreeMap::new(),
        }
    }

    /// Input `r` at `offset` of its partition, judged by `version` with
    /// thresholds `t`.
    fn step(&mut self, offset: i64, r: &Input, version: &str, t: &Thresholds) -> Expected {
        let source = (r.partition, offset);
        let part = self.parts.entry(r.partition).or_default();
        let mut out = Expected::default();
        let interval = offset.div_euclid(SWEEP_INTERVAL);
        let swept = match part.interval {
            Some(current) if interval > current => part.sweep(),
            _ => Vec::new(),
        };
        part.interval = Some(interval);
        for (key, clock) in swept {
            for (kind, open) in part.firing.remove(&key).unwrap_or_default() {
                out.idle.push(lifecycle_record(
                    &key,
                    kind,
                    "resolved",
                    &open,
                    clock,
                    Some("idle"),
                    Value::Null,
                    version,
                    source,
                ));
            }
        }
        part.times.push(r.time_ms);
        part.active.insert(r.key.clone());
        if part
            .newest
            .get(&r.key)
            .is_some_and(|&newest| r.time_ms < newest - LATENESS.1)
        {
            out.late = true;
            return out;
        }
        let newest = part.newest.entry(r.key.clone()).or_insert(r.time_ms);
        *newest = (*newest).max(r.time_ms);

        let raised = raised(t, r);
        out.raised = raised.iter().map(|a| a.kind).collect();
        let firing = part.firing.entry(r.key.clone()).or_default();
        let record = |kind: &str, status: &str, open: &Open, by: Option<&str>| {
            lifecycle_record(
                &r.key,
                kind,
                status,
                open,
                r.time_ms,
                by,
                r.json(),
                version,
                source,
            )
        };
        // Kinds firing that this record did not raise, by kind.
        let gone: Vec<&'static str> = (firing.keys())
            .filter(|k| !out.raised.contains(k))
            .copied()
            .collect();
        for kind in gone {
            let open = firing.remove(kind).unwrap();
            out.own
                .push(record(kind, "resolved", &open, Some("record")));
        }
        for a in raised {
            match firing.get_mut(a.kind) {
                None => {
                    let open = Open {
                        since: r.time_ms,
                        emitted: r.time_ms,
                        suppressed: 0,
                        severity: a.severity,
                        message: a.message,
                    };
                    out.own.push(record(a.kind, "firing", &open, None));
                    firing.insert(a.kind, open);
                }
                Some(open) => {
                    open.severity = a.severity;
                    open.message = a.message;
                    if r.time_ms >= open.emitted + REPEAT.1 {
                        open.emitted = r.time_ms;
                        out.own.push(record(a.kind, "repeat", open, None));
                    } else {
                        open.suppressed += 1;
                    }
                }
            }
        }
        if firing.is_empty() {
            part.firing.remove(&r.key);
        }
        out
    }

    /// Alerts firing now, by kind.
    fn firing_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut n = BTreeMap::new();
        for part in self.parts.values() {
            for kinds in part.firing.values() {
                for kind in kinds.keys() {
                    *n.entry(*kind).or_default() += 1;
                }
            }
        }
        n
    }
}

/// The model's outcome per source position, for inputs at `positions`
/// (one per input, as produced), each judged by `judge`.
fn expect(
    model: &mut Model,
    inputs: &[Input],
    positions: &[(i32, i64)],
    judge: impl Fn(&Input) -> (String, Thresholds),
) -> BTreeMap<(i32, i64), Expected> {
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| positions[i]);
    let mut out = BTreeMap::new();
    for i in order {
        let (p, o) = positions[i];
        assert_eq!(p, inputs[i].partition, "produced to its partition");
        let (version, t) = judge(&inputs[i]);
        out.insert((p, o), model.step(o, &inputs[i], &version, &t));
    }
    out
}

/// The alerts a run wrote, by source position, in the order written,
/// `timestamp` (the processing time) left out.
fn by_source(alerts: &[Read]) -> BTreeMap<(i32, i64), Vec<Value>> {
    let mut out: BTreeMap<_, Vec<Value>> = BTreeMap::new();
    for a in alerts {
        let mut v = a.json();
        let removed = v.as_object_mut().and_then(|m| m.remove("timestamp"));
        assert!(removed.is_some(), "an alert without timestamp: {v}");
        out.entry(a.source()).or_default().push(v);
    }
    out
}

/// Sorts idle resolutions by key and kind.
fn sort_idle(v: &mut [Value]) {
    v.sort_by_key(|a| (a["sensor_id"].to_string(), a["anomalies"].to_string()));
}

/// Checks the lifecycle records written against the model: per source
/// record, its own records in order and the idle resolutions it triggered
/// (in any order), nothing else, nothing twice.
fn check_lifecycle(
    got: &BTreeMap<(i32, i64), Vec<Value>>,
    want: &BTreeMap<(i32, i64), Expected>,
    what: &str,
) {
    let mut wrong = Vec::new();
    for (at, w) in want {
        let records = got.get(at).cloned().unwrap_or_default();
        let (mut idle, own): (Vec<Value>, Vec<Value>) = records
            .into_iter()
            .partition(|v| v["resolved_by"] == "idle");
        sort_idle(&mut idle);
        let mut want_idle = w.idle.clone();
        sort_idle(&mut want_idle);
        if idle != want_idle || own != w.own {
            wrong.push(format!(
                "record {at:?}:\n  want idle {}\n  got  idle {}\n  want own  {}\n  got  own  {}",
                Value::from(want_idle),
                Value::from(idle),
                Value::from(w.own.clone()),
                Value::from(own),
            ));
        }
    }
    let strays: Vec<_> = got.keys().filter(|at| !want.contains_key(at)).collect();
    assert!(
        strays.is_empty(),
        "{what}: alerts naming sources never produced: {strays:?}"
    );
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} source records differ from the model; the first:\n{}",
        wrong.len(),
        want.len(),
        wrong[..wrong.len().min(8)].join("\n")
    );
}

/// Counts of the model's lifecycle records: (firing, repeat, resolved by a
/// record, resolved as idle).
fn tally(want: &BTreeMap<(i32, i64), Expected>) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for w in want.values() {
        for v in w.idle.iter().chain(&w.own) {
            let status = v["status"].as_str().unwrap();
            let name = match v["resolved_by"].as_str() {
                Some(by) => format!("{status} ({by})"),
                None => status.to_string(),
            };
            *n.entry(name).or_default() += 1;
        }
    }
    n
}

/// Waits for a run with `--max-records` to end by itself, successfully.
fn wait_done(c: &Cluster, mut child: Child, log: &str) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{log}: {status}\n{}", c.log(log));
            return;
        }
        if started.elapsed() > RUN {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{log} never finished:\n{}", c.log(log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn anomaly() -> Vec<PathBuf> {
    vec![support::plugin_path("anomaly")]
}

/// The flags both runs share, and `--alerts MODE`, `--max-records N`.
fn flags(mode: &str, n: &str) -> Vec<String> {
    [
        "--alerts",
        mode,
        "--alert-repeat",
        REPEAT.0,
        "--window",
        WINDOW.0,
        "--allowed-lateness",
        LATENESS.0,
        "--key-idle",
        KEY_IDLE.0,
        "--max-records",
        n,
    ]
    .map(str::to_string)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_alerts_equal_a_model_and_are_far_fewer_than_every_record_alerts() {
    let inputs = generate();
    let n = inputs.len();
    let stamped: Vec<(i32, String, Vec<u8>, i64)> = inputs
        .iter()
        .map(|r| {
            let payload = r.json().to_string().into_bytes();
            (r.partition, r.key.clone(), payload, r.time_ms)
        })
        .collect();

    // The same stream, on two brokers: one run per mode, side by side.
    let life = Cluster::start("lifecycle", PARTITIONS as u32);
    let every = Cluster::start("every-record", PARTITIONS as u32);
    let positions = life.produce_stamped(&stamped).await;
    assert_eq!(every.produce_stamped(&stamped).await, positions);
    let count = n.to_string();
    let runs = [(&life, "lifecycle"), (&every, "every-record")].map(|(c, mode)| {
        let args = flags(mode, &count);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (c, mode, c.streamhost_with(mode, &anomaly(), &args))
    });
    for (c, mode, child) in runs {
        tokio::task::block_in_place(|| wait_done(c, child, mode));
    }

    let mut model = Model::new();
    let want = expect(&mut model, &inputs, &positions, |_| {
        ("1.0.0".to_string(), ARTICLE)
    });

    // The stream exercises what it is meant to (a check of the data).
    let counts = tally(&want);
    let late = want.values().filter(|w| w.late).count();
    for p in 0..PARTITIONS {
        let idle = (want.iter())
            .filter(|((q, _), w)| *q == p && !w.idle.is_empty())
            .count();
        assert!(idle >= 1, "partition {p} must resolve a key as idle");
    }
    assert!(counts["repeat"] >= 20, "{counts:?}");
    assert!(
        want.values()
            .any(|w| w.own.iter().filter(|v| v["status"] == "resolved").count() == 3),
        "one record must resolve three kinds at once"
    );
    assert_eq!(late, 2 * PARTITIONS as usize, "late records");

    // Dead letters: the late records, nothing else.
    let dead = life.read_all(&life.dlq, Duration::from_secs(30));
    let dead_at: BTreeSet<(i32, i64)> = dead
        .iter()
        .map(|r| {
            (
                r.header("streamhost.source.partition").parse().unwrap(),
                r.header("streamhost.source.offset").parse().unwrap(),
            )
        })
        .collect();
    let want_dead: BTreeSet<(i32, i64)> = (want.iter())
        .filter(|(_, w)| w.late)
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(dead_at, want_dead, "dead letters");

    // The lifecycle: exactly the model's records.
    let alerts = life.read_all(&life.alerts, Duration::from_secs(60));
    let got = by_source(&alerts);
    check_lifecycle(&got, &want, "--alerts lifecycle");
    let lifecycle_records: usize = counts.values().sum();
    assert_eq!(alerts.len(), lifecycle_records);

    // Spelled out for two keys, beside the model: k7's battery, low from
    // the first reading to the last, fires once and repeats every 2
    // minutes (119 readings suppressed between emissions), never resolved;
    // k3, silent while too hot, is resolved as idle, then fires afresh.
    let of_key = |key: &str, kind: &str| -> Vec<(String, i64, u64, String)> {
        alerts
            .iter()
            .map(Read::json)
            .filter(|v| v["sensor_id"] == key && v["anomalies"] == json!([kind]))
            .map(|v| {
                let at = v["event_time"].as_str().unwrap().to_string();
                let status = match v["resolved_by"].as_str() {
                    Some(by) => format!("resolved/{by}"),
                    None => v["status"].as_str().unwrap().to_string(),
                };
                let s = (chrono::DateTime::parse_from_rfc3339(&at)
                    .unwrap()
                    .timestamp_millis()
                    - T0)
                    .div_euclid(1000);
                let since = v["firing_since"].as_str().unwrap().to_string();
                (status, s, v["suppressed"].as_u64().unwrap(), since)
            })
            .collect()
    };
    let battery = of_key("p0-k7", "low_battery");
    let spelled: Vec<_> = (0..=12)
        .map(|i| {
            let status = if i == 0 { "firing" } else { "repeat" };
            (status.to_string(), i * 120, 119 * i as u64, iso(T0))
        })
        .collect();
    assert_eq!(battery, spelled, "p0-k7 low_battery");
    let k3: Vec<(String, u64)> = of_key("p0-k3", "temperature_out_of_range")
        .into_iter()
        .map(|(status, _, suppressed, _)| (status, suppressed))
        .collect();
    // Hot from second 150 to 299: fired at 150, repeated at 270, 148
    // suppressed; back at 1420, firing again.
    assert_eq!(
        k3,
        [
            ("firing".to_string(), 0),
            ("repeat".to_string(), 119),
            ("resolved/idle".to_string(), 148),
            ("firing".to_string(), 0),
        ],
        "p0-k3 temperature_out_of_range"
    );

    // Every record: one alert record per record that raised anything,
    // naming its kinds.
    let every_alerts = every.read_all(&every.alerts, Duration::from_secs(60));
    let mut every_got: BTreeMap<(i32, i64), Vec<Value>> = BTreeMap::new();
    for a in &every_alerts {
        every_got
            .entry(a.source())
            .or_default()
            .push(a.json()["anomalies"].clone());
    }
    let every_want: BTreeMap<(i32, i64), Vec<Value>> = (want.iter())
        .filter(|(_, w)| !w.raised.is_empty())
        .map(|(at, w)| (*at, vec![json!(w.raised)]))
        .collect();
    if every_got != every_want {
        let differ: Vec<_> = (every_want.iter())
            .filter(|(at, w)| every_got.get(at) != Some(w))
            .take(5)
            .collect();
        panic!(
            "--alerts every-record: {} alert records for {} sources, the model {} for {}; e.g. want {differ:?}",
            every_alerts.len(),
            every_got.len(),
            every_want.len(),
            every_want.len()
        );
    }
    println!(
        "{n} records: --alerts every-record wrote {} alert records, --alerts lifecycle {} ({counts:?})",
        every_alerts.len(),
        alerts.len()
    );
    assert!(
        every_alerts.len() > 5 * alerts.len(),
        "every-record {} against lifecycle {}",
        every_alerts.len(),
        alerts.len()
    );
}

/// `streamhost plugins ARGS` against `admin`, run as a process; its answer.
fn plugins_cli(admin: &str, args: &[&str]) -> Value {
    let out = Command::new(support::bin("streamhost"))
        .arg("plugins")
        .args(args)
        .args(["--admin", admin, "--token", TOKEN])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "streamhost plugins {args:?}: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&said).unwrap_or_else(|e| panic!("{said}: {e}"))
}

/// Waits until `c`'s enriched topic holds `n` records (one per input).
fn wait_enriched(c: &Cluster, n: usize, log: &str) {
    let got = c.read(&c.enriched, Duration::from_secs(120), |r| r.len() >= n);
    assert_eq!(got.len(), n, "enriched records:\n{}", c.log(log));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_change_that_still_raises_a_firing_kind_neither_resolves_nor_refires_it() {
    let c = Cluster::start("lifecycle-config", 1);
    let rule = c.plugin_copy("anomaly");
    let log = "streamhost";
    let args = [
        "--alerts",
        "lifecycle",
        "--alert-repeat",
        REPEAT.0,
        "--admin-token",
        TOKEN,
    ];
    let mut sh = c.streamhost_with(log, &[rule], &args);
    let admin = c.admin_addr(log);

    // Four keys, a reading a second each. Seconds 0..100 under the
    // article's thresholds; then temperature_max 35 and humidity_max 95
    // for seconds 100..260.
    // - hot: 45 until second 200, then 25: raised by both versions;
    // - warm: 38 throughout: raised by the new version only;
    // - humid: humidity 92 throughout: raised by the old version only;
    // - flat: battery 0.1 throughout: raised by both.
    let reading = |key: &str, s: i64| {
        let mut r = Input {
            partition: 0,
            key: key.to_string(),
            time_ms: T0 + s * 1000,
            temperature: 25.0,
            humidity: 50.0,
            battery: 0.8,
        };
        match key {
            "hot" if s < 200 => r.temperature = 45.0,
            "warm" => r.temperature = 38.0,
            "humid" => r.humidity = 92.0,
            "flat" => r.battery = 0.1,
            _ => {}
        }
        r
    };
    let phase = |seconds: std::ops::Range<i64>| -> Vec<Input> {
        seconds
            .flat_map(|s| ["hot", "warm", "humid", "flat"].map(|k| reading(k, s)))
            .collect()
    };
    let produce = |inputs: Vec<Input>| {
        let c = &c;
        async move {
            let readings: Vec<(String, Value)> =
                inputs.iter().map(|r| (r.key.clone(), r.json())).collect();
            let positions = c.produce_json(&readings).await;
            (inputs, positions)
        }
    };

    let (mut inputs, mut positions) = produce(phase(0..100)).await;
    wait_enriched(&c, inputs.len(), log);
    let answer = plugins_cli(
        &admin,
        &["config", "anomaly", "temperature_max=35", "humidity_max=95"],
    );
    let new = answer["configured"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no configured version: {answer}"))
        .to_string();
    assert!(new.starts_with("1.0.0+cfg."), "{answer}");
    let stricter = Thresholds {
        temperature_max: 35.0,
        humidity_max: 95.0,
        ..ARTICLE
    };
    for range in [100..200, 200..260] {
        let (more, at) = produce(phase(range)).await;
        inputs.extend(more);
        positions.extend(at);
        wait_enriched(&c, inputs.len(), log);
    }

    let mut model = Model::new();
    let want = expect(&mut model, &inputs, &positions, |r| {
        if r.time_ms < T0 + 100_000 {
            ("1.0.0".to_string(), ARTICLE)
        } else {
            (new.clone(), stricter)
        }
    });
    let total: usize = tally(&want).values().sum();
    let alerts = c.read(&c.alerts, Duration::from_secs(60), |r| r.len() >= total);
    let alerts = if alerts.len() >= total {
        c.read_all(&c.alerts, Duration::from_secs(60))
    } else {
        alerts
    };
    check_lifecycle(&by_source(&alerts), &want, "a configuration change");

    // Spelled out: `hot` fired under 1.0.0, repeated at 2 minutes under
    // the new version, and resolved when it cooled (199 readings raised
    // it; 2 were emitted); nothing in between. `humid`, which the new
    // version no longer raises, resolved at the change.
    let of_key = |key: &str| -> Vec<(String, String, String, u64)> {
        alerts
            .iter()
            .map(Read::json)
            .filter(|v| v["sensor_id"] == key)
            .map(|v| {
                (
                    v["status"].as_str().unwrap().to_string(),
                    v["rule_version"].as_str().unwrap().to_string(),
                    v["event_time"].as_str().unwrap().to_string(),
                    v["suppressed"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let at = |s: i64| iso(T0 + s * 1000);
    assert_eq!(
        of_key("hot"),
        [
            ("firing".into(), "1.0.0".into(), at(0), 0),
            ("repeat".into(), new.clone(), at(120), 119),
            ("resolved".into(), new.clone(), at(200), 198),
        ]
    );
    assert_eq!(
        of_key("humid"),
        [
            ("firing".into(), "1.0.0".into(), at(0), 0),
            ("resolved".into(), new.clone(), at(100), 99),
        ]
    );

    // The gauge of alerts firing now, per kind, as the model ends.
    let firing = model.firing_by_kind();
    assert_eq!(
        firing,
        BTreeMap::from([("low_battery", 1), ("temperature_out_of_range", 1)])
    );
    let kinds = ["temperature_out_of_range", "low_battery", "high_humidity"];
    let gauge = |kind: &str| {
        metric(
            &admin,
            &format!("streamhost_alerts_firing{{rule=\"anomaly\",kind=\"{kind}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let started = Instant::now();
    while kinds
        .iter()
        .any(|k| gauge(k) != firing.get(k).copied().unwrap_or(0) as f64)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "streamhost_alerts_firing: {:?}, the model {firing:?}",
            kinds.map(|k| (k, gauge(k)))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(terminate(&mut sh).success(), "{}", c.log(log));
}
