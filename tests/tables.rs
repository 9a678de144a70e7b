//! Reference tables against a real broker (Nisshi): a table topic loaded to
//! its end before the table says it is ready, with the last write winning,
//! tombstones deleting and records that cannot be rows refused and counted;
//! updates applied after that; and the clear errors and warnings of a
//! missing or uncompacted topic. What the table holds is checked against a
//! model of the records produced, built here.

use streamhost_testkit as support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;
use streamhost::contract::types::TableSpec;
use streamhost::kafka::table::{self, Cleanup, TableError, TableHandle};
use streamhost::table::TableSource;
use support::kafka::Cluster;

/// A record of a table topic: key and value, either may be missing.
type Record = (Option<String>, Option<Vec<u8>>);

fn row(key: &str, json: serde_json::Value) -> Record {
    (Some(key.to_string()), Some(json.to_string().into_bytes()))
}

/// Creates `topic` with the Kafka admin API, compacted if asked.
fn create_topic(cluster: &Cluster, topic: &str, partitions: i32, compacted: bool) {
    let admin: AdminClient<_> = cluster.config().create().unwrap();
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let results = futures_block_on(admin.create_topics(&[new], &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap();
    }
}

fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Produces `records` to `topic`, in order (each key's records go to one
/// partition, in order), and waits for all of them.
fn produce(cluster: &Cluster, topic: &str, records: &[Record]) {
    let producer = cluster.producer();
    let mut futures = Vec::new();
    for (key, value) in records {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            r = r.key(k.as_bytes());
        }
        if let Some(v) = value {
            r = r.payload(&v[..]);
        }
        futures.push(producer.send_result(r).map_err(|(e, _)| e).unwrap());
    }
    futures_block_on(async {
        for f in futures {
            f.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    });
}

/// What the table should hold after `records`: the last value of each key
/// that is a JSON object, none after a tombstone; and how many records
/// cannot be rows (no key, not a JSON object).
fn model(records: &[Record]) -> (BTreeMap<String, String>, u64) {
    let mut rows = BTreeMap::new();
    let mut refused = 0;
    for (key, value) in records {
        let Some(key) = key else {
            refused += 1;
            continue;
        };
        match value {
            None => {
                rows.remove(key);
            }
            Some(v) => match serde_json::from_slice::<serde_json::Value>(v) {
                Ok(serde_json::Value::Object(_)) => {
                    rows.insert(key.clone(), String::from_utf8(v.clone()).unwrap());
                }
                _ => refused += 1,
            },
        }
    }
    (rows, refused)
}

/// Asserts that the table holds exactly `rows`.
fn assert_holds(handle: &TableHandle, rows: &BTreeMap<String, String>) {
    let table = handle.read();
    for (key, text) in rows {
        assert_eq!(
            table.get(key).map(|t| &**t),
            Some(text.as_str()),
            "row {key}"
        );
    }
    assert_eq!(table.len(), rows.len());
}

fn source(name: &str, topic: &str) -> TableSource {
    format!("{name}={topic}").parse().unwrap()
}

#[test]
fn a_table_is_ready_only_once_loaded_then_follows_its_topic() {
    let cluster = Cluster::start("tables", 1);
    let topic = support::topic("thresholds");
    create_topic(&cluster, &topic, 3, true);

    // Enough rows that the load takes a while, then an update, a tombstone,
    // a value that is not JSON, one that is JSON but not an object, and a
    // record without a key.
    let sensors = 3000;
    let mut records: Vec<Record> = (0..sensors)
        .map(|i| {
            row(
                &format!("s{i}"),
                serde_json::json!({"max": 40 + i % 7, "min": -(i % 5), "unit": "C"}),
            )
        })
        .collect();
    records.extend([
        row("s1", serde_json::json!({"max": 99.5})),
        (Some("s2".into()), None),
        (Some("s3".into()), Some(b"not json".to_vec())),
        (Some("s4".into()), Some(b"[1, 2]".to_vec())),
        (None, Some(b"{\"max\": 1}".to_vec())),
    ]);
    produce(&cluster, &topic, &records);
    let (rows, refused) = model(&records);
    assert_eq!((rows.len(), refused), (sensors as usize - 1, 3));

    let handle = table::start(cluster.config(), source("thresholds", &topic)).unwrap();
    assert_eq!(handle.cleanup(), &Cleanup::Compact);
    // Whenever it says it is ready, it holds every record produced before
    // it started.
    let t = Instant::now();
    while !handle.ready() {
        assert!(handle.stats().applied < records.len() as u64);
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not loaded: {:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_holds(&handle, &rows);
    let stats = handle.stats();
    assert_eq!(
        (stats.rows, stats.applied, stats.refused),
        (rows.len(), records.len() as u64 - 3, 3)
    );
    assert!(handle.wait_ready(Duration::ZERO).unwrap());

    // What a batch's records see.
    let spec = TableSpec {
        name: "thresholds".into(),
        fields: vec!["max".into(), "unit".into()],
        json: true,
    };
    let keys = [Some("s1"), Some("s2"), Some("s8"), Some("s1"), None];
    let seen = handle.read().rows(&spec, keys.into_iter());
    assert_eq!(seen.row_of, [Some(0), None, Some(1), Some(0), None]);
    assert_eq!(seen.columns[0], [99.5, 41.0]);
    assert!(seen.columns[1].iter().all(|v| v.is_nan()));
    assert_eq!(seen.json, [rows["s1"].clone(), rows["s8"].clone()]);

    // Updates after the load are applied as they arrive.
    let updates = vec![
        row("s5", serde_json::json!({"max": 555})),
        (Some("s6".into()), None),
        row("new", serde_json::json!({"max": 1})),
        (Some("s7".into()), Some(b"{broken".to_vec())),
    ];
    produce(&cluster, &topic, &updates);
    let all = [records, updates].concat();
    let (rows, refused) = model(&all);
    let t = Instant::now();
    let applied = |t: &streamhost::table::Table| t.get("new").is_some() && t.get("s6").is_none();
    while !applied(&handle.read()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no update: {:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The records of each key arrive in order, but keys are spread over
    // partitions: wait for the last of each.
    while handle.stats().applied + handle.stats().refused < all.len() as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_holds(&handle, &rows);
    assert_eq!(handle.read().number("s5", "max"), Some(555.0));
    assert_eq!(handle.stats().refused, refused);
    // The lag is asked every 2 s: it comes down to nothing.
    let t = Instant::now();
    while handle.stats().lag != Some(0) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let age = handle.stats().age.expect("records were applied");
    assert!(age < Duration::from_secs(120), "{age:?}");
    handle.stop();
}

#[test]
fn a_missing_table_topic_is_a_clear_error() {
    let cluster = Cluster::start("tables-missing", 1);
    let topic = support::topic("no-such-table");
    let error = table::start(cluster.config(), source("limits", &topic)).unwrap_err();
    assert!(
        matches!(error, TableError::MissingTopic { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "table \"limits\": topic \"{topic}\" does not exist; create it (compacted), or fix \
             --table limits={topic}, before starting"
        )
    );
}

#[test]
fn an_empty_uncompacted_topic_loads_at_once_with_a_warning() {
    let cluster = Cluster::start("tables-plain", 1);
    let topic = support::topic("plain-table");
    create_topic(&cluster, &topic, 2, false);
    let handle = table::start(cluster.config(), source("plain", &topic)).unwrap();
    // Kafka names its default (`delete`); Nisshi gives only what the topic
    // set, which here is nothing.
    assert!(
        matches!(handle.cleanup(), Cleanup::NotCompact(p) if p.as_deref().is_none_or(|p| p == "delete")),
        "{:?}",
        handle.cleanup()
    );
    assert!(handle.wait_ready(Duration::from_secs(30)).unwrap());
    assert_eq!(handle.read().len(), 0);
    produce(&cluster, &topic, &[row("k", serde_json::json!({"v": 1}))]);
    let t = Instant::now();
    while handle.read().get("k").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
