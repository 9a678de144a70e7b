//! Avro in the Confluent wire format, end to end against the real broker and
//! the schema registry stand-in (`schema-registry-standin`, a separate
//! process speaking the Confluent REST API): a producer that switches from
//! v1 to v2 of its schema mid-stream, a v3 the registry refuses, records the
//! registry cannot account for, Avro outputs, and a registry outage.
//!
//! The test frames its records itself (magic byte, big-endian id, body by
//! apache-avro), and reads the framing of streamhost's outputs byte by byte,
//! independently of the registry client streamhost uses.

use streamhost_testkit as support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value;
use schema_registry_converter::blocking::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use support::kafka::{Cluster, Read, terminate};

const T0: i64 = 1_795_500_000_000; // 2026-11-24T06:00:00Z

const V1: &str = r#"{"type": "record", "name": "SensorReading", "namespace": "iot",
  "fields": [
    {"name": "sensor_id", "type": "string"},
    {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "temperature", "type": "double"},
    {"name": "humidity", "type": ["null", "double"], "default": null},
    {"name": "battery_level", "type": "double"}
  ]}"#;

/// v1 with a field added with a default, and the optional field removed.
const V2: &str = r#"{"type": "record", "name": "SensorReading", "namespace": "iot",
  "fields": [
    {"name": "sensor_id", "type": "string"},
    {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "temperature", "type": "double"},
    {"name": "battery_level", "type": "double"},
    {"name": "pressure", "type": "double", "default": 1013.25}
  ]}"#;

/// v2 with a field added without a default: not backward compatible.
const V3: &str = r#"{"type": "record", "name": "SensorReading", "namespace": "iot",
  "fields": [
    {"name": "sensor_id", "type": "string"},
    {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "temperature", "type": "double"},
    {"name": "battery_level", "type": "double"},
    {"name": "pressure", "type": "double", "default": 1013.25},
    {"name": "site", "type": "string"}
  ]}"#;

/// The stand-in registry, killed on drop.
struct Registry {
    child: Child,
    url: String,
}

impl Registry {
    fn start(c: &Cluster) -> Registry {
        let file = c.log_dir.join("registry.url");
        let child = Command::new(support::bin("schema-registry-standin"))
            .args(["--listen", "127.0.0.1:0", "--address-file"])
            .arg(&file)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the registry stand-in");
        let t = Instant::now();
        let url = loop {
            if let Ok(url) = std::fs::read_to_string(&file) {
                if !url.is_empty() {
                    break url;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the registry never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Registry { child, url }
    }

    fn settings(&self) -> SrSettings {
        SrSettings::new(self.url.clone())
    }

    fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        post_schema(
            &self.settings(),
            subject.to_string(),
            SuppliedSchema::new(None, SchemaType::Avro, schema.to_string()),
        )
        .map(|r| r.id)
        .map_err(|e| format!("{e}: {:?}", e.cause))
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let body = ureq::get(&format!("{}{path}", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record in the Confluent framing, written here byte by byte.
fn framed(id: u32, schema: &Schema, value: Value) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .unwrap(),
    );
    out
}

fn temperature(i: usize) -> f64 {
    if i % 7 == 6 {
        44.0
    } else {
        20.0 + i as f64 / 2.0
    }
}

/// Reading `i` of sensor_001 (one every 10 s), in v1 or v2.
fn reading(i: usize, v2: bool) -> Value {
    let mut fields = vec![
        ("sensor_id".to_string(), Value::String("sensor_001".into())),
        (
            "timestamp".to_string(),
            Value::TimestampMillis(T0 + i as i64 * 10_000),
        ),
        ("temperature".to_string(), Value::Double(temperature(i))),
    ];
    if v2 {
        fields.push(("battery_level".into(), Value::Double(0.9)));
        fields.push(("pressure".into(), Value::Double(1000.0 + i as f64)));
    } else {
        fields.push((
            "humidity".into(),
            Value::Union(1, Box::new(Value::Double(50.0 + i as f64))),
        ));
        fields.push(("battery_level".into(), Value::Double(0.9)));
    }
    Value::Record(fields)
}

/// The schema id and Avro body of a framed output, read byte by byte.
fn unframe(r: &Read) -> (u32, &[u8]) {
    assert_eq!(r.payload[0], 0, "magic byte of {:?}", &r.payload[..8]);
    let id = u32::from_be_bytes(r.payload[1..5].try_into().unwrap());
    (id, &r.payload[5..])
}

/// An output decoded with the schema its id names in the registry, as JSON.
fn decode_output(registry: &Registry, r: &Read) -> (u32, serde_json::Value) {
    let (id, body) = unframe(r);
    let text = registry.get(&format!("/schemas/ids/{id}"))["schema"]
        .as_str()
        .unwrap()
        .to_string();
    let schema = Schema::parse_str(&text).unwrap();
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .and_then(|r| r.read_value(&mut &body[..]))
        .unwrap();
    let json = apache_avro::from_value::<serde_json::Value>(&value).unwrap();
    (id, json)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_producer_switching_schemas_mid_stream_is_read_without_a_restart() {
    let c = Cluster::start("avro-evolution", 1);
    let registry = Registry::start(&c);
    let subject = format!("{}-value", c.input);
    let v1 = registry.register(&subject, V1).unwrap();
    let v2 = registry.register(&subject, V2).unwrap();
    assert_ne!(v1, v2);
    // v3 adds a field without a default: the registry refuses it, so no
    // record written with it can be produced.
    let refused = registry.register(&subject, V3).unwrap_err();
    assert!(refused.contains("409"), "{refused}");
    let (s1, s2) = (
        Schema::parse_str(V1).unwrap(),
        Schema::parse_str(V2).unwrap(),
    );

    let n = 24;
    let mut records: Vec<(Option<String>, Vec<u8>)> = (0..n)
        .map(|i| {
            let bytes = if i < n / 2 {
                framed(v1, &s1, reading(i, false))
            } else {
                framed(v2, &s2, reading(i, true))
            };
            (Some("sensor_001".to_string()), bytes)
        })
        .collect();
    // Three records nothing can read, in the middle of the stream.
    let unknown_id = framed(9_999, &s1, reading(100, false));
    let json = br#"{"sensor_id":"sensor_001","temperature":1}"#.to_vec();
    let mut garbage = framed(v2, &s2, reading(101, true));
    garbage.truncate(9);
    let bad = [unknown_id, json, garbage];
    for (k, b) in bad.iter().enumerate() {
        records.insert(5 + 7 * k, (Some("sensor_001".to_string()), b.clone()));
    }
    run(c.produce(&records));

    let total = records.len().to_string();
    let mut sh = c.streamhost(
        "streamhost",
        &[
            "--input-format",
            "avro",
            "--output-format",
            "avro",
            "--schema-registry",
            &registry.url,
            "--max-records",
            &total,
        ],
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = sh.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{}",
            c.log("streamhost")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", c.log("streamhost"));

    // Every good record enriched, in Avro, its schema registered under the
    // topic-name strategy's subject.
    let enriched = c.read(&c.enriched, Duration::from_secs(30), |r| r.len() >= n);
    assert_eq!(enriched.len(), n);
    // v1 and v2 readings have different members, so their enriched records
    // have two schemas, both registered under `<topic>-value`.
    let subject = format!("/subjects/{}-value/versions", c.enriched);
    let versions = registry.get(&subject);
    let ids: Vec<u64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            registry.get(&format!("{subject}/{n}"))["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{versions}");
    let mut seen = Vec::new();
    for r in &enriched {
        let (id, v) = decode_output(&registry, r);
        assert!(ids.contains(&u64::from(id)), "{id} not among {ids:?}: {v}");
        seen.push(v);
    }
    seen.sort_by_key(|v| v["timestamp"].as_str().unwrap().to_string());
    for (i, v) in seen.iter().enumerate() {
        // timestamp-millis arrives as RFC 3339 text.
        let expected_time = chrono::DateTime::from_timestamp_millis(T0 + i as i64 * 10_000)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        assert_eq!(v["timestamp"], expected_time.as_str());
        let window = &v["streamhost"]["window"];
        assert_eq!(window["count"], (i + 1) as i64, "{v}");
        let mean = (0..=i).map(temperature).sum::<f64>() / (i + 1) as f64;
        let got = window["fields"]["temperature"]["mean"].as_f64().unwrap();
        assert!((got - mean).abs() < 1e-9, "reading {i}: {got} vs {mean}");
        if i < n / 2 {
            assert_eq!(v["humidity"], 50.0 + i as f64, "v1 reading {i}: {v}");
            assert!(v["pressure"].is_null(), "{v}");
        } else {
            assert_eq!(v["pressure"], 1000.0 + i as f64, "v2 reading {i}: {v}");
            assert!(v["humidity"].is_null(), "{v}");
        }
    }
    // Alerts in Avro too.
    let hot = (0..n).filter(|&i| temperature(i) > 40.0).count();
    let alerts = c.read(&c.alerts, Duration::from_secs(30), |r| r.len() >= hot);
    assert_eq!(alerts.len(), hot);
    for a in &alerts {
        let (_, v) = decode_output(&registry, a);
        assert!(v.to_string().contains("temperature_out_of_range"), "{v}");
    }
    // The unreadable ones dead-lettered as `decode`, bytes as consumed.
    let dead = c.read(&c.dlq, Duration::from_secs(30), |r| r.len() >= 3);
    assert_eq!(dead.len(), 3);
    let mut messages = Vec::new();
    for d in &dead {
        assert_eq!(d.header("streamhost.reason"), "decode");
        assert!(bad.contains(&d.payload), "dead letter keeps the bytes");
        messages.push(d.header("streamhost.error").to_string());
    }
    let all = messages.join("\n");
    assert!(
        all.contains("schema id 9999 is not in the registry"),
        "{all}"
    );
    assert!(all.contains("magic byte") && all.contains("JSON"), "{all}");
    assert!(
        all.contains(&format!("cannot decode with schema id {v2}")),
        "{all}"
    );
}

#[test]
fn a_registry_outage_pauses_the_stream_and_loses_nothing() {
    let c = Cluster::start("avro-outage", 1);
    let registry = Registry::start(&c);
    let subject = format!("{}-value", c.input);
    let v1 = registry.register(&subject, V1).unwrap();
    let v2 = registry.register(&subject, V2).unwrap();
    let (s1, s2) = (
        Schema::parse_str(V1).unwrap(),
        Schema::parse_str(V2).unwrap(),
    );
    let first: Vec<_> = (0..5)
        .map(|i| {
            (
                Some("sensor_001".to_string()),
                framed(v1, &s1, reading(i, false)),
            )
        })
        .collect();
    run(c.produce(&first));
    let mut sh = c.streamhost(
        "streamhost",
        &[
            "--input-format",
            "avro",
            "--schema-registry",
            &registry.url,
            "--schema-registry-timeout",
            "500ms",
        ],
    );
    let got = c.read(&c.enriched, Duration::from_secs(60), |r| r.len() >= 5);
    assert_eq!(got.len(), 5, "{}", c.log("streamhost"));

    // The registry stops answering; records written with a schema id not yet
    // cached arrive.
    registry.signal("-STOP");
    let second: Vec<_> = (5..10)
        .map(|i| {
            (
                Some("sensor_001".to_string()),
                framed(v2, &s2, reading(i, true)),
            )
        })
        .collect();
    run(c.produce(&second));
    std::thread::sleep(Duration::from_secs(4));
    let during = c.read_all(&c.enriched, Duration::from_secs(10)).len();
    let dead = c.read_all(&c.dlq, Duration::from_secs(10)).len();
    registry.signal("-CONT");
    assert_eq!(
        during, 5,
        "nothing more is enriched while the registry is down"
    );
    assert_eq!(
        dead, 0,
        "nothing is dead-lettered while the registry is down"
    );

    let after = c.read(&c.enriched, Duration::from_secs(60), |r| r.len() >= 10);
    assert_eq!(after.len(), 10, "{}", c.log("streamhost"));
    terminate(&mut sh);
    let log = c.log("streamhost");
    assert_eq!(c.read_all(&c.dlq, Duration::from_secs(10)).len(), 0);
    assert!(log.contains("Schema registry unreachable"), "{log}");
}
