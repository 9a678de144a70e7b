//! streamhost end to end against a real broker (Nisshi), with the three
//! example plugins: what comes out is checked against a model of windows,
//! trends and anomalies computed independently here.

use streamhost_testkit as support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use support::kafka::{Cluster, Read, terminate};

const MIN: i64 = 60_000;
const T0: i64 = 1_795_500_000_000; // 2026-11-24T06:00:00Z

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A reading the test produces, and what the model expects of it.
#[derive(Clone, Debug)]
struct Reading {
    sensor: String,
    t: i64,
    temperature: f64,
    humidity: f64,
    battery: f64,
}

impl Reading {
    fn json(&self) -> Vec<u8> {
        serde_json::json!({
            "sensor_id": self.sensor,
            "timestamp": iso(self.t),
            "temperature": self.temperature,
            "humidity": self.humidity,
            "pressure": 1010.5,
            "location": {"latitude": 40.5, "longitude": -73.5},
            "battery_level": self.battery,
        })
        .to_string()
        .into_bytes()
    }

    /// The article's anomaly rules, written out again.
    fn anomalies(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.temperature > 40.0 || self.temperature < 0.0 {
            v.push("temperature_out_of_range");
        }
        if self.battery < 0.2 {
            v.push("low_battery");
        }
        if self.humidity > 90.0 {
            v.push("high_humidity");
        }
        v
    }
}

/// What the model expects in the enriched record of one reading.
#[derive(Debug)]
struct Expected {
    count: usize,
    mean_temperature: f64,
    min_battery: f64,
    start: i64,
    end: i64,
    trend: &'static str,
    anomalies: Vec<&'static str>,
}

/// The window model: per sensor, every accepted reading; a reading is late
/// when it is more than `lateness` behind the sensor's newest event time.
fn model(
    readings: &[Reading],
    length: i64,
    lateness: i64,
) -> (HashMap<(String, i64), Expected>, HashSet<(String, i64)>) {
    let mut accepted: HashMap<&str, Vec<&Reading>> = HashMap::new();
    let mut expected = HashMap::new();
    let mut late = HashSet::new();
    for r in readings {
        let seen = accepted.entry(&r.sensor).or_default();
        let newest = seen.iter().map(|x| x.t).max();
        if newest.is_some_and(|n| r.t < n - lateness) {
            late.insert((r.sensor.clone(), r.t));
            continue;
        }
        seen.push(r);
        let newest = newest.map_or(r.t, |n| n.max(r.t));
        let mut window: Vec<&Reading> = seen
            .iter()
            .copied()
            .filter(|x| x.t > newest - length)
            .collect();
        window.sort_by_key(|x| x.t); // stable: equal times keep arrival order
        let temps: Vec<f64> = window.iter().map(|x| x.temperature).collect();
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        let trend = if temps.len() < 2 {
            "stable"
        } else {
            let older = mean(&temps[..3.min(temps.len())]);
            let recent = mean(&temps[temps.len().saturating_sub(3)..]);
            if recent > older * 1.02 {
                "increasing"
            } else if recent < older * 0.98 {
                "decreasing"
            } else {
                "stable"
            }
        };
        expected.insert(
            (r.sensor.clone(), r.t),
            Expected {
                count: window.len(),
                mean_temperature: mean(&temps),
                min_battery: window
                    .iter()
                    .map(|x| x.battery)
                    .fold(f64::INFINITY, f64::min),
                start: window[0].t,
                end: window[window.len() - 1].t,
                trend,
                anomalies: r.anomalies(),
            },
        );
    }
    (expected, late)
}

/// Six sensors, 45 readings each, 10 s apart (a 5-minute window holds 30):
/// sensor 1 warms steadily, sensor 2 cools, the rest wander; some readings
/// are out of range; one reading arrives 5 s out of order (accepted), three
/// arrive two minutes late (dead-lettered).
fn readings() -> Vec<Reading> {
    let mut out = Vec::new();
    let mut rand = support::seeded_uniform(12345);
    for i in 0..45i64 {
        for s in 1..=6 {
            let mut r = Reading {
                sensor: format!("sensor_{s:03}"),
                t: T0 + i * 10_000,
                temperature: match s {
                    1 => 20.0 + i as f64 * 0.3,
                    2 => 34.0 - i as f64 * 0.3,
                    _ => (18.0 + rand() * 17.0 * 100.0).round() / 100.0,
                },
                humidity: (30.0 + rand() * 50.0 * 100.0).round() / 100.0,
                battery: (0.25 + rand() * 0.75 * 100.0).round() / 100.0,
            };
            if (i + s) % 13 == 0 {
                r.temperature = if s % 2 == 0 { 45.5 } else { -3.25 };
            }
            if (i * s) % 17 == 5 {
                r.humidity = 95.0;
            }
            if (i + 2 * s) % 19 == 0 {
                r.battery = 0.15;
            }
            out.push(r);
            if s == 3 && i == 20 {
                // 5 s behind sensor 3's newest: within the allowed 30 s.
                out.push(Reading {
                    t: T0 + i * 10_000 - 5_000,
                    temperature: 25.0,
                    ..out.last().unwrap().clone()
                });
            }
        }
    }
    for s in 4..=6 {
        out.push(Reading {
            sensor: format!("sensor_{s:03}"),
            t: T0 + 44 * 10_000 - 2 * MIN,
            temperature: 99.0,
            humidity: 50.0,
            battery: 0.9,
        });
    }
    out
}

fn malformed() -> Vec<(Option<String>, Vec<u8>, &'static str)> {
    vec![
        (
            Some("bad".into()),
            b"this is not json".to_vec(),
            "not valid JSON",
        ),
        (Some("bad".into()), b"[1,2,3]".to_vec(), "not a JSON object"),
        (
            Some("bad".into()),
            br#"{"timestamp":"2026-11-24T06:00:00Z","temperature":20}"#.to_vec(),
            "missing key field `sensor_id`",
        ),
        (
            Some("bad".into()),
            br#"{"sensor_id":"sensor_009","temperature":20}"#.to_vec(),
            "missing event-time field `timestamp`",
        ),
        (
            Some("bad".into()),
            br#"{"sensor_id":"sensor_009","timestamp":"2026-11-24T06:00:00Z","temperature":"hot"}"#
                .to_vec(),
            "field `temperature` is not a number",
        ),
    ]
}

fn by_reading(enriched: &[Read]) -> HashMap<(String, i64), Vec<serde_json::Value>> {
    let mut out: HashMap<(String, i64), Vec<serde_json::Value>> = HashMap::new();
    for r in enriched {
        let v = r.json();
        let t = streamhost::decode::parse_time(v["timestamp"].as_str().unwrap()).unwrap();
        out.entry((v["sensor_id"].as_str().unwrap().to_string(), t))
            .or_default()
            .push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_match_an_independent_model() {
    let cluster = Cluster::start("model", 3);
    let readings = readings();
    let bad = malformed();
    let mut records: Vec<(Option<String>, Vec<u8>)> = readings
        .iter()
        .map(|r| (Some(r.sensor.clone()), r.json()))
        .collect();
    records.extend(bad.iter().map(|(k, p, _)| (k.clone(), p.clone())));
    let positions = cluster.produce(&records).await;
    let total = records.len();

    let child = cluster.streamhost(
        "streamhost",
        &[
            "--window",
            "5m",
            "--allowed-lateness",
            "30s",
            "--batch-size",
            "64",
            "--max-records",
            &total.to_string(),
        ],
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "streamhost failed:\n{}",
        cluster.log("streamhost")
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let (expected, late) = model(&readings, 5 * MIN, 30_000);
    assert_eq!(late.len(), 3);
    let want_alerts = expected
        .values()
        .filter(|e| !e.anomalies.is_empty())
        .count();
    let wait = Duration::from_secs(60);
    let enriched = cluster.read(&cluster.enriched, wait, |r| r.len() >= expected.len());
    let alerts = cluster.read(&cluster.alerts, wait, |r| r.len() >= want_alerts);
    let dead = cluster.read(&cluster.dlq, wait, |r| r.len() >= bad.len() + late.len());

    // Nothing missing, nothing extra.
    assert_eq!(enriched.len(), expected.len());
    assert_eq!(alerts.len(), want_alerts);
    assert_eq!(dead.len(), bad.len() + late.len());
    assert_eq!(enriched.len() + dead.len(), total);
    assert_eq!(summary["in"], total);
    assert_eq!(summary["enriched"], expected.len());
    assert_eq!(summary["dead_letters_by_reason"]["decode"], 5);
    assert_eq!(summary["dead_letters_by_reason"]["late"], 3);

    // Every enriched record: window statistics, trend, anomalies, enrichment.
    let got = by_reading(&enriched);
    let mut trends = BTreeMap::new();
    for (id, e) in &expected {
        let v = &got
            .get(id)
            .unwrap_or_else(|| panic!("no enriched record for {id:?}"))[0];
        let s = &v["streamhost"];
        let w = &s["window"];
        assert_eq!(w["count"].as_u64().unwrap() as usize, e.count, "{id:?}");
        let mean = w["fields"]["temperature"]["mean"].as_f64().unwrap();
        assert!(
            (mean - e.mean_temperature).abs() < 1e-9,
            "{id:?}: mean {mean} vs {}",
            e.mean_temperature
        );
        assert_eq!(
            w["fields"]["battery_level"]["min"].as_f64().unwrap(),
            e.min_battery,
            "{id:?}"
        );
        assert_eq!(w["start"], iso(e.start));
        assert_eq!(w["end"], iso(e.end));
        assert_eq!(s["trends"]["trend"]["direction"], e.trend, "{id:?}");
        *trends.entry(e.trend).or_insert(0) += 1;
        assert_eq!(s["alerts"], serde_json::json!(e.anomalies), "{id:?}");
        assert_eq!(v["enriched"], true);
        assert!(v["processed_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            s["plugins"],
            serde_json::json!({"enrich": "1.0.0", "trend": "1.0.0", "anomaly": "1.0.0"})
        );
        let (p, o) = positions[readings
            .iter()
            .position(|r| (&r.sensor, r.t) == (&id.0, id.1))
            .unwrap()];
        assert_eq!(
            (
                s["source"]["partition"].as_i64().unwrap(),
                s["source"]["offset"].as_i64().unwrap()
            ),
            (p as i64, o)
        );
    }
    // The data exercises every trend label.
    assert_eq!(trends.len(), 3, "{trends:?}");

    // Alerts: the article's shape, one per reading with anomalies.
    for a in &alerts {
        let v = a.json();
        let t = streamhost::decode::parse_time(v["sensor_data"]["timestamp"].as_str().unwrap())
            .unwrap();
        let id = (v["sensor_id"].as_str().unwrap().to_string(), t);
        let e = &expected[&id];
        assert_eq!(v["anomalies"], serde_json::json!(e.anomalies));
        let severity = if e.anomalies.contains(&"temperature_out_of_range") {
            "high"
        } else {
            "medium"
        };
        assert_eq!(v["severity"], severity);
        assert_eq!(
            (v["rule"].as_str(), v["rule_version"].as_str()),
            (Some("anomaly"), Some("1.0.0"))
        );
        assert_eq!(
            a.key.as_deref(),
            Some(id.0.as_bytes()),
            "alerts keep the record's key"
        );
    }

    // Dead letters: original bytes, reason headers, source position.
    for d in &dead {
        let offset: i64 = d.header("streamhost.source.offset").parse().unwrap();
        let partition: i32 = d.header("streamhost.source.partition").parse().unwrap();
        let i = positions
            .iter()
            .position(|&p| p == (partition, offset))
            .expect("dead letter points at an input");
        assert_eq!(
            d.payload, records[i].1,
            "dead letters carry the original bytes"
        );
        assert_eq!(d.header("streamhost.source.topic"), cluster.input);
        match d.header("streamhost.reason") {
            "decode" => {
                let want = bad.iter().find(|b| b.1 == d.payload).unwrap().2;
                assert!(
                    d.header("streamhost.error").contains(want),
                    "{}",
                    d.header("streamhost.error")
                );
            }
            "late" => {
                let r = &readings[i];
                assert!(late.contains(&(r.sensor.clone(), r.t)));
                assert!(
                    d.header("streamhost.error").contains("120000 ms behind"),
                    "{}",
                    d.header("streamhost.error")
                );
            }
            other => panic!("unexpected reason {other}"),
        }
    }
}

/// Input of `n` in-order readings over `sensors` sensors, one second apart.
fn steady(n: usize, sensors: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let r = Reading {
                sensor: format!("sensor_{:03}", i % sensors),
                t: T0 + (i / sensors) as i64 * 1000,
                temperature: 20.0 + (i % 7) as f64,
                humidity: 50.0,
                battery: 0.9,
            };
            (Some(r.sensor.clone()), r.json())
        })
        .collect()
}

/// Source positions named by enriched records, with how often each occurs.
fn positions_seen(enriched: &[Read]) -> HashMap<(i64, i64), usize> {
    let mut seen = HashMap::new();
    for r in enriched {
        let v = r.json();
        let s = &v["streamhost"]["source"];
        *seen
            .entry((
                s["partition"].as_i64().unwrap(),
                s["offset"].as_i64().unwrap(),
            ))
            .or_default() += 1;
    }
    seen
}

fn assert_all_present(positions: &[(i32, i64)], seen: &HashMap<(i64, i64), usize>) {
    let missing: Vec<_> = positions
        .iter()
        .filter(|(p, o)| !seen.contains_key(&(*p as i64, *o)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} inputs have no enriched output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_then_restart_loses_nothing() {
    let cluster = Cluster::start("restart", 3);
    let n = 30_000;
    let input = steady(n, 50);
    // Input keeps arriving while the first run works; it is stopped with a
    // third of the input produced, so it stops mid-stream by construction.
    let mut first = cluster.streamhost("first", &["--batch-size", "200"]);
    cluster.wait_log("first", "Partitions assigned", Duration::from_secs(60));
    let mut positions = Vec::with_capacity(n);
    for (i, chunk) in input.chunks(500).enumerate() {
        positions.extend(cluster.produce(chunk).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if i == 20 {
            let status = terminate(&mut first);
            assert!(
                status.success(),
                "streamhost did not exit cleanly on SIGTERM: {status}\n{}",
                cluster.log("first")
            );
        }
    }
    assert!(cluster.log("first").contains("SIGTERM received"));
    let after_first = cluster
        .read(&cluster.enriched, Duration::from_secs(5), |_| false)
        .len();
    assert!(
        after_first > 0 && after_first < n,
        "first run produced {after_first} of {n}"
    );

    let mut second = cluster.streamhost("second", &["--batch-size", "200"]);
    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(120), |r| {
        r.len() >= n && positions_seen(r).len() >= n
    });
    assert!(terminate(&mut second).success());
    let seen = positions_seen(&enriched);
    assert_all_present(&positions, &seen);
    let duplicated: usize = seen.values().map(|c| c - 1).sum();
    println!(
        "restart: {n} inputs, first run produced {after_first}, {} enriched in all, {duplicated} duplicated",
        enriched.len()
    );
    // A clean stop commits everything it produced: nothing is repeated.
    assert_eq!(duplicated, 0);
}

/// A second process joins mid-stream, takes partitions over (only those:
/// cooperative-sticky), and leaves with SIGTERM: both hand-overs are clean,
/// so every input has exactly one enriched record.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_and_leaving_mid_stream_repeats_nothing() {
    let cluster = Cluster::start("handover", 4);
    let n = 30_000;
    let input = steady(n, 40);
    let mut first = cluster.streamhost("first", &["--batch-size", "200"]);
    cluster.wait_log("first", "Partitions assigned", Duration::from_secs(60));
    let mut second = None;
    let mut positions = Vec::with_capacity(n);
    for (i, chunk) in input.chunks(500).enumerate() {
        positions.extend(cluster.produce(chunk).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i == 10 {
            second = Some(cluster.streamhost("second", &["--batch-size", "200"]));
        }
        if i == 20 {
            // Cooperative assignment takes two rounds: wait for the second.
            let t = std::time::Instant::now();
            while !cluster.log("second").lines().any(|l| {
                l.split("Partitions assigned. partitions=[")
                    .nth(1)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            }) {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "{}",
                    cluster.log("second")
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if i == 40 {
            let mut s = second.take().unwrap();
            assert!(terminate(&mut s).success(), "{}", cluster.log("second"));
        }
    }
    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(120), |r| {
        r.len() >= n
    });
    assert!(terminate(&mut first).success());
    // Only moved partitions were revoked from the first process.
    assert!(
        cluster
            .log("first")
            .lines()
            .any(|l| l.contains("Partitions revoked") && !l.contains("partitions=[0, 1, 2, 3]")),
        "{}",
        cluster.log("first")
    );
    let seen = positions_seen(&enriched);
    assert_all_present(&positions, &seen);
    let duplicated: usize = seen.values().map(|c| c - 1).sum();
    println!(
        "hand-over: {n} inputs, {} enriched, {duplicated} duplicated",
        enriched.len()
    );
    assert_eq!(duplicated, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_in_one_group_share_the_partitions() {
    let cluster = Cluster::start("group", 4);
    let n = 20_000;
    // Start both before any input exists so that both get partitions.
    let mut a = cluster.streamhost("a", &["--batch-size", "200"]);
    let mut b = cluster.streamhost("b", &["--batch-size", "200"]);
    cluster.wait_log("a", "Partitions assigned", Duration::from_secs(60));
    cluster.wait_log("b", "Partitions assigned", Duration::from_secs(60));
    let positions = cluster.produce(&steady(n, 40)).await;
    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(120), |r| {
        r.len() >= n && positions_seen(r).len() >= n
    });
    assert!(terminate(&mut a).success());
    assert!(terminate(&mut b).success());
    let seen = positions_seen(&enriched);
    assert_all_present(&positions, &seen);
    // Each process consumed a share: each says how many records it
    // processed when it stops, and together they account for every input.
    let processed = |log: &str| -> u64 {
        let text = cluster.log(log);
        let line = text
            .lines()
            .find(|l| l.contains("Stopped after committing"))
            .unwrap_or_else(|| panic!("{log}:\n{text}"));
        line.split("records=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (pa, pb) = (processed("a"), processed("b"));
    assert!(
        pa > 0 && pb > 0,
        "one process did all the work: a={pa} b={pb}"
    );
    assert!(pa + pb >= n as u64);
    println!("group: process a processed {pa}, process b {pb}");
    let duplicated: usize = seen.values().map(|c| c - 1).sum();
    println!(
        "group: {n} inputs, {} enriched, {duplicated} duplicated",
        enriched.len()
    );
}

/// Every compression codec a producer may pick is read: 1,000 readings per
/// codec, each batch compressed by a producer set to that codec, all
/// enriched with the values they were produced with. (A codec the build
/// lacks would stop streamhost with the cause named, not spin.)
#[tokio::test(flavor = "multi_thread")]
async fn every_compression_codec_is_read() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
    const PER_CODEC: usize = 1000;
    let cluster = Cluster::start("codecs", 2);
    let input = steady(PER_CODEC * CODECS.len(), 20);
    let mut produced: HashMap<(i64, i64), (&str, serde_json::Value)> = HashMap::new();
    for (codec, chunk) in CODECS.iter().zip(input.chunks(PER_CODEC)) {
        // Batches of many records, so that each is compressed as one.
        let producer: FutureProducer = cluster
            .config()
            .set("compression.type", *codec)
            .set("linger.ms", "50")
            .create()
            .unwrap();
        let mut deliveries = Vec::new();
        for (key, value) in chunk {
            let record = FutureRecord::to(&cluster.input)
                .key(key.as_deref().unwrap())
                .payload(&value[..]);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for (d, (_, value)) in deliveries.into_iter().zip(chunk) {
            let d = d.await.unwrap().map_err(|(e, _)| e).unwrap();
            let v: serde_json::Value = serde_json::from_slice(value).unwrap();
            produced.insert((d.partition as i64, d.offset), (*codec, v));
        }
    }
    let n = produced.len().to_string();
    let child = cluster.streamhost("streamhost", &["--max-records", &n]);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", cluster.log("streamhost"));
    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(60), |r| {
        r.len() >= produced.len()
    });
    let mut read: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &enriched {
        let v = r.json();
        let src = &v["streamhost"]["source"];
        let at = (
            src["partition"].as_i64().unwrap(),
            src["offset"].as_i64().unwrap(),
        );
        let (codec, sent) = &produced[&at];
        for field in ["sensor_id", "timestamp", "temperature"] {
            assert_eq!(v[field], sent[field], "{codec} at {at:?}: {field}");
        }
        *read.entry(codec).or_default() += 1;
    }
    println!("enriched per codec: {read:?}");
    for codec in CODECS {
        assert_eq!(read.get(codec), Some(&PER_CODEC), "{codec}: {read:?}");
    }
}
