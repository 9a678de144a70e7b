//! streamhost against a hostile world, on the real broker: a corpus of
//! malformed and awkward records, and plugins that misbehave in every way we
//! could think of. Every input must be accounted for (an enriched record, a
//! dead letter with the expected reason, or a deliberate drop), and
//! streamhost must never stop.
//!
//! Also: a backlog read from the start, whose every enriched record's window
//! is checked against an independent model, at two batch sizes; and the
//! plugins' view of WASI time and randomness.

use streamhost_testkit as support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use support::kafka::{Cluster, Read};

const T0: i64 = 1_795_500_000_000; // 2026-11-24T06:00:00Z
const MAX_MESSAGE: usize = 200_000;

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn reading(key: &str, t: i64, temperature: f64) -> Vec<u8> {
    format!(r#"{{"sensor_id":"{key}","timestamp":"{}","temperature":{temperature},"humidity":50,"battery_level":0.9}}"#, iso(t))
        .into_bytes()
}

/// The `streamhost` member of an enriched record: the record's last member.
/// (Parsed on its own: some records nest deeper than serde_json's default
/// recursion limit, which streamhost itself does not have.)
fn streamhost_member(r: &Read) -> serde_json::Value {
    let text = std::str::from_utf8(&r.payload).unwrap();
    let at = text
        .rfind(r#","streamhost":"#)
        .expect("an enriched record has a streamhost member");
    serde_json::from_str(&text[at + r#","streamhost":"#.len()..text.len() - 1]).unwrap()
}

/// What must become of one input record.
#[derive(Clone, Debug)]
enum Want {
    /// An enriched record (and whatever alerts its rules raise); the check,
    /// if any, looks at its `streamhost` member and at its whole text.
    Enriched(Option<fn(&serde_json::Value, &str)>),
    /// A dead letter with this reason whose error contains this text.
    Dead(&'static str, &'static str),
    /// Nothing: a transform dropped it on purpose.
    Dropped,
}

struct Case {
    name: &'static str,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    want: Want,
}

fn case(name: &'static str, payload: impl Into<Vec<u8>>, want: Want) -> Case {
    Case {
        name,
        key: Some(name.as_bytes().to_vec()),
        payload: Some(payload.into()),
        want,
    }
}

fn dead(
    name: &'static str,
    payload: impl Into<Vec<u8>>,
    reason: &'static str,
    error: &'static str,
) -> Case {
    case(name, payload, Want::Dead(reason, error))
}

fn ok(name: &'static str, payload: impl Into<Vec<u8>>) -> Case {
    case(name, payload, Want::Enriched(None))
}

/// A record with the given key and event-time text, otherwise normal.
fn with_time(key: &str, time: &str) -> String {
    format!(r#"{{"sensor_id":"{key}","timestamp":{time},"temperature":20.5}}"#)
}

/// The corpus, in the order it is produced (one partition, so the order is
/// the order streamhost sees).
fn corpus() -> Vec<Case> {
    let t = |s: i64| iso(T0 + s * 1000);
    let deep = format!(
        r#"{{"sensor_id":"deep","timestamp":"{}","enriched":0,"deep":{}1{}}}"#,
        t(1),
        "[".repeat(200),
        "]".repeat(200)
    );
    let big_enriched = format!(
        r#"{{"sensor_id":"big-enriched","timestamp":"{}","pad":"{}"}}"#,
        t(1),
        "p".repeat(MAX_MESSAGE - 500)
    );
    let big_dead = format!(
        r#"{{"sensor_id":"big-dead","timestamp":"{}","pad":"{}"}}"#,
        t(1),
        "p".repeat(300_000)
    );
    // Long, but not so long that the hostile fixture's echo of it passes the
    // 8 KiB alert limit.
    let long_key = "k".repeat(5_000);
    vec![
        // Not a record at all.
        dead("empty", "", "decode", "not valid JSON"),
        Case {
            name: "tombstone",
            key: Some(b"tombstone".to_vec()),
            payload: None,
            want: Want::Dead("decode", "tombstone"),
        },
        dead(
            "not-utf8",
            b"{\"sensor_id\":\"\xff\xfe\"}".to_vec(),
            "decode",
            "not UTF-8",
        ),
        dead(
            "bom",
            "\u{feff}{\"sensor_id\":\"bom\",\"timestamp\":1795500000000}",
            "decode",
            "not valid JSON",
        ),
        dead("null", "null", "decode", "not a JSON object"),
        dead("array", "[1,2]", "decode", "not a JSON object"),
        dead("string", "\"a string\"", "decode", "not a JSON object"),
        dead("number", "42", "decode", "not a JSON object"),
        dead(
            "truncated",
            r#"{"sensor_id":"truncated","timestamp":"#,
            "decode",
            "not valid JSON",
        ),
        dead(
            "trailing",
            format!("{} x", with_time("trailing", "1795500000000")),
            "decode",
            "not valid JSON",
        ),
        dead(
            "two-objects",
            format!(
                "{}{}",
                with_time("a", "1795500000000"),
                with_time("b", "1795500000000")
            ),
            "decode",
            "not valid JSON",
        ),
        // The key.
        dead(
            "no-key",
            r#"{"timestamp":1795500000000,"temperature":1}"#,
            "decode",
            "missing key field `sensor_id`",
        ),
        dead(
            "null-key",
            r#"{"sensor_id":null,"timestamp":1795500000000}"#,
            "decode",
            "invalid type: null",
        ),
        dead(
            "object-key",
            r#"{"sensor_id":{"a":1},"timestamp":1795500000000}"#,
            "decode",
            "invalid type: map",
        ),
        dead(
            "float-key",
            r#"{"sensor_id":1.5,"timestamp":1795500000000}"#,
            "decode",
            "invalid type: floating point",
        ),
        dead(
            "empty-key",
            r#"{"sensor_id":"","timestamp":1795500000000}"#,
            "decode",
            "the key field is empty",
        ),
        dead(
            "blank-key",
            r#"{"sensor_id":"   ","timestamp":1795500000000}"#,
            "decode",
            "the key field is blank",
        ),
        dead(
            "twice-key",
            r#"{"sensor_id":"a","sensor_id":"b","timestamp":1795500000000}"#,
            "decode",
            "member `sensor_id` appears twice",
        ),
        // The event time.
        dead(
            "no-time",
            r#"{"sensor_id":"no-time","temperature":1}"#,
            "decode",
            "missing event-time field `timestamp`",
        ),
        dead(
            "bool-time",
            with_time("bool-time", "true"),
            "decode",
            "invalid type: boolean",
        ),
        dead(
            "word-time",
            with_time("word-time", "\"yesterday\""),
            "decode",
            "is not an RFC 3339 time",
        ),
        dead(
            "feb-30",
            with_time("feb-30", "\"2026-02-30T00:00:00Z\""),
            "decode",
            "is not an RFC 3339 time",
        ),
        dead(
            "hour-24",
            with_time("hour-24", "\"2026-11-24T24:00:00Z\""),
            "decode",
            "is not an RFC 3339 time",
        ),
        dead(
            "offset-99",
            with_time("offset-99", "\"2026-11-24T06:40:00+99:99\""),
            "decode",
            "is not an RFC 3339 time",
        ),
        dead(
            "offset-24",
            with_time("offset-24", "\"2026-11-24T06:40:00+24:00\""),
            "decode",
            "is not an RFC 3339 time",
        ),
        dead(
            "year-0",
            with_time("year-0", "\"0000-01-01T00:00:00Z\""),
            "decode",
            "is not an RFC 3339 time",
        ),
        dead(
            "epoch-seconds",
            with_time("epoch-seconds", "1795500000"),
            "decode",
            "--epoch-unit s",
        ),
        dead(
            "i64-min",
            with_time("i64-min", "-9223372036854775808"),
            "decode",
            "out of range",
        ),
        dead(
            "i64-max",
            with_time("i64-max", "9223372036854775807"),
            "decode",
            "out of range",
        ),
        dead(
            "time-1e300",
            with_time("time-1e300", "1e300"),
            "decode",
            "out of range",
        ),
        dead(
            "twice-time",
            r#"{"sensor_id":"twice-time","timestamp":1795500000000,"timestamp":1795500001000}"#,
            "decode",
            "appears twice",
        ),
        dead(
            "future-text",
            with_time("future-text", "\"2036-11-24T06:40:00Z\""),
            "future",
            "ahead of the processing time",
        ),
        dead(
            "future-ms",
            with_time("future-ms", "2110000000000"),
            "future",
            "ahead of the processing time",
        ),
        // Fields.
        dead(
            "string-field",
            r#"{"sensor_id":"string-field","timestamp":1795500000000,"temperature":"hot"}"#,
            "decode",
            "field `temperature` is not a number",
        ),
        dead(
            "bool-field",
            r#"{"sensor_id":"bool-field","timestamp":1795500000000,"humidity":true}"#,
            "decode",
            "field `humidity` is not a number",
        ),
        dead(
            "object-field",
            r#"{"sensor_id":"object-field","timestamp":1795500000000,"temperature":{"v":1}}"#,
            "decode",
            "field `temperature` is not a number",
        ),
        dead(
            "overflow-field",
            r#"{"sensor_id":"overflow-field","timestamp":1795500000000,"temperature":1e999}"#,
            "decode",
            "number out of range",
        ),
        dead(
            "twice-field",
            r#"{"sensor_id":"twice-field","timestamp":1795500000000,"temperature":1,"temperature":2}"#,
            "decode",
            "member `temperature` appears twice",
        ),
        // Windows.
        ok("late", reading("late", T0 + 600_000, 20.0)),
        dead(
            "late",
            reading("late", T0, 20.0),
            "late",
            "behind the newest event time",
        ),
        dead(
            "future-key",
            reading("future-key", T0 + 10 * 365 * 86_400_000, 20.0),
            "future",
            "ahead of the processing time",
        ),
        case(
            "future-key",
            reading("future-key", T0, 20.0),
            // The far-future record never entered the window: this one starts it.
            Want::Enriched(Some(|v, _| assert_eq!(v["window"]["count"], 1, "{v}"))),
        ),
        ok("huge-values", reading("huge-values", T0, 1.7e308)),
        case(
            "huge-values",
            reading("huge-values", T0 + 1000, 1.7e308),
            Want::Enriched(Some(|v, _| {
                assert_eq!(v["window"]["fields"]["temperature"]["mean"], 1.7e308, "{v}")
            })),
        ),
        // Awkward but valid: kept exactly.
        case(
            "deep",
            deep,
            Want::Enriched(Some(|_, text| {
                assert!(text.contains(r#""enriched":true"#), "{text}");
                assert!(text.contains(&format!(
                    r#""deep":{}1{}"#,
                    "[".repeat(200),
                    "]".repeat(200)
                )));
            })),
        ),
        case(
            "exact-numbers",
            format!(
                r#"{{"sensor_id":"exact-numbers","timestamp":"{}","big":123456789012345678901234567890,"d":1.10,"note":"processed_at"}}"#,
                t(2)
            ),
            Want::Enriched(Some(|_, text| {
                assert!(
                    text.contains(r#""big":123456789012345678901234567890,"d":1.10,"#),
                    "{text}"
                );
            })),
        ),
        ok(
            "unicode-ключ-✓",
            with_time("unicode-ключ-✓", "\"2026-11-24t06:40:00z\""),
        ),
        ok(
            "space-time",
            with_time("space-time", "\"2026-11-24 06:40:00.5\""),
        ),
        ok(
            "integer-key",
            r#"{"sensor_id":12345,"timestamp":1795500000000,"temperature":21}"#,
        ),
        ok(
            "null-field",
            r#"{"sensor_id":"null-field","timestamp":1795500000000,"temperature":null}"#,
        ),
        ok(
            "extra-members",
            r#"{"sensor_id":"extra-members","timestamp":1795500000000,"x":[1,{"y":[null,true]}],"z":{"sensor_id":"not-me"}}"#,
        ),
        ok(
            "escaped-key",
            r#"{"sensor_id":"tab\tquote\"nul\u0000","timestamp":1795500000000}"#,
        ),
        Case {
            name: "long-key",
            key: Some(long_key.clone().into_bytes()),
            payload: Some(with_time(&long_key, "1795500000000").into_bytes()),
            want: Want::Enriched(None),
        },
        Case {
            name: "no-message-key",
            key: None,
            payload: Some(with_time("no-message-key", "1795500000000").into_bytes()),
            want: Want::Enriched(None),
        },
        // Too large to send on.
        dead(
            "big-enriched",
            big_enriched,
            "output-too-large",
            "message.max.bytes is 200000",
        ),
        dead(
            "big-dead",
            big_dead,
            "output-too-large",
            "message.max.bytes is 200000",
        ),
        // Hostile plugins (keys the hostile fixtures act on).
        dead(
            "spin",
            reading("spin", T0, 1.0),
            "plugin-timeout",
            "deadline",
        ),
        dead(
            "bomb",
            reading("bomb", T0, 1.0),
            "plugin-oom",
            "out of memory",
        ),
        dead("panic", reading("panic", T0, 1.0), "plugin-trap", "trapped"),
        dead("abort", reading("abort", T0, 1.0), "plugin-trap", "trapped"),
        dead("stack", reading("stack", T0, 1.0), "plugin-trap", "trapped"),
        dead(
            "reject",
            reading("reject", T0, 1.0),
            "plugin-error",
            "rejected by hostile",
        ),
        dead(
            "huge-message",
            reading("huge-message", T0, 1.0),
            "plugin-output-limit",
            "the limit is 8192",
        ),
        dead(
            "many-alerts",
            reading("many-alerts", T0, 1.0),
            "plugin-output-limit",
            "returned 100000 alerts",
        ),
        dead(
            "wrong-count",
            reading("wrong-count", T0, 1.0),
            "plugin-error",
            "returned 2 results for a batch of 1",
        ),
        ok("log-flood", reading("log-flood", T0, 1.0)),
        ok("slow", reading("slow", T0, 1.0)),
        dead(
            "t-huge",
            reading("t-huge", T0, 1.0),
            "plugin-output-limit",
            "the transformed record is",
        ),
        dead(
            "t-not-json",
            reading("t-not-json", T0, 1.0),
            "plugin-error",
            "transformed record is invalid",
        ),
        dead(
            "t-array-merge",
            reading("t-array-merge", T0, 1.0),
            "plugin-error",
            "merge is not a JSON object",
        ),
        dead(
            "t-no-key",
            reading("t-no-key", T0, 1.0),
            "plugin-error",
            "missing key field",
        ),
        dead(
            "t-future",
            reading("t-future", T0, 1.0),
            "future",
            "2100-01-01",
        ),
        dead(
            "t-bad-merge",
            reading("t-bad-merge", T0, 1.0),
            "plugin-error",
            "merge refers to members 99, but the call returned",
        ),
        dead(
            "t-err",
            reading("t-err", T0, 1.0),
            "plugin-error",
            "refused by hostile-transform",
        ),
        case("t-drop", reading("t-drop", T0, 1.0), Want::Dropped),
        case(
            "t-deep",
            reading("t-deep", T0, 1.0),
            Want::Enriched(Some(|_, text| {
                assert!(text.contains(&format!(
                    r#""deep":{}1{}"#,
                    "[".repeat(300),
                    "]".repeat(300)
                )))
            })),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_record_and_hostile_plugin_gets_its_outcome() {
    let cases = corpus();
    let kinds = cases
        .iter()
        .filter(|c| matches!(c.want, Want::Dead(..)))
        .count();
    assert!(kinds >= 40, "the corpus has {kinds} kinds of bad record");
    // Surround the corpus with good records, so that batches mix both.
    let mut all = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        all.push(ok(
            "good",
            reading(
                &format!("good-{}", i % 5),
                T0 + i as i64 * 1000,
                20.0 + (i % 7) as f64,
            ),
        ));
        all.push(c);
    }
    let cluster = Cluster::start("hostile", 1);
    let produced = cluster
        .produce_raw(
            &all.iter()
                .map(|c| (Some(0), c.key.clone(), c.payload.clone()))
                .collect::<Vec<_>>(),
        )
        .await;
    let plugins: Vec<_> = ["hostile-transform", "enrich", "trend", "anomaly", "hostile"]
        .map(support::plugin_path)
        .to_vec();
    let n = all.len().to_string();
    let max = MAX_MESSAGE.to_string();
    let child = cluster.streamhost_with(
        "streamhost",
        &plugins,
        &[
            "--max-records",
            &n,
            "--batch-size",
            "64",
            // Long enough that `bomb` meets the memory cap before the
            // deadline even on a loaded machine (at 100 ms it may not).
            "--plugin-deadline",
            "1s",
            "-X",
            &format!("producer.message.max.bytes={max}"),
        ],
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "streamhost failed: {}\n{}",
        out.status,
        cluster.log("streamhost")
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let want_enriched = all
        .iter()
        .filter(|c| matches!(c.want, Want::Enriched(_)))
        .count();
    let want_dead = all
        .iter()
        .filter(|c| matches!(c.want, Want::Dead(..)))
        .count();
    let want_dropped = all
        .iter()
        .filter(|c| matches!(c.want, Want::Dropped))
        .count();
    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(60), |r| {
        r.len() >= want_enriched
    });
    let dlq = cluster.read(&cluster.dlq, Duration::from_secs(60), |r| {
        r.len() >= want_dead
    });

    // Every input accounted for exactly once, by its source offset.
    let mut outcome: BTreeMap<i64, (&str, &Read)> = BTreeMap::new();
    for r in &enriched {
        let offset = streamhost_member(r)["source"]["offset"].as_i64().unwrap();
        assert!(
            outcome.insert(offset, ("enriched", r)).is_none(),
            "offset {offset} has two outcomes"
        );
    }
    for r in &dlq {
        let offset: i64 = r.header("streamhost.source.offset").parse().unwrap();
        assert!(
            outcome.insert(offset, ("dead", r)).is_none(),
            "offset {offset} has two outcomes"
        );
    }
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for (c, (_, offset)) in all.iter().zip(&produced) {
        let got = outcome.get(offset);
        match (&c.want, got) {
            (Want::Enriched(check), Some(("enriched", r))) => {
                if let Some(check) = check {
                    check(
                        &streamhost_member(r),
                        std::str::from_utf8(&r.payload).unwrap(),
                    );
                }
            }
            (Want::Dead(reason, error), Some(("dead", r))) => {
                assert_eq!(
                    r.header("streamhost.reason"),
                    *reason,
                    "{}: {}",
                    c.name,
                    r.header("streamhost.error")
                );
                assert!(
                    r.header("streamhost.error").contains(error),
                    "{}: {:?} lacks {error:?}",
                    c.name,
                    r.header("streamhost.error")
                );
                *by_reason.entry(reason.to_string()).or_default() += 1;
                // Dead letters keep the original bytes, or, when those are too
                // large to send, their first KiB and their length.
                let original = c.payload.clone().unwrap_or_default();
                match r.headers.get("streamhost.original.bytes") {
                    None => assert_eq!(r.payload, original, "{}", c.name),
                    Some(len) => {
                        assert_eq!(c.name, "big-dead");
                        assert_eq!(len.parse::<usize>().unwrap(), original.len());
                        assert_eq!(r.payload, original[..1024]);
                    }
                }
            }
            (Want::Dropped, None) => {}
            (want, got) => panic!(
                "{} (offset {offset}): wanted {want:?}, got {:?}",
                c.name,
                got.map(|g| g.0)
            ),
        }
    }
    assert_eq!(
        outcome.len(),
        want_enriched + want_dead,
        "outputs for offsets that were not produced"
    );
    assert_eq!(summary["in"], all.len());
    assert_eq!(summary["enriched"], want_enriched);
    assert_eq!(summary["dropped"], want_dropped);
    assert_eq!(
        summary["dead_letters_by_reason"],
        serde_json::to_value(&by_reason).unwrap()
    );
    println!(
        "corpus: {} records, {kinds} kinds of bad record; dead letters by reason: {by_reason:?}",
        all.len()
    );
}

/// An independent model of one key's window: every accepted reading kept,
/// the window recomputed from scratch.
#[derive(Default)]
struct Model {
    readings: Vec<(i64, f64)>,
    newest: Option<i64>,
}

impl Model {
    /// Adds a reading; returns (count, mean, min, max) of the window after
    /// it, or `None` if the record is late.
    fn add(
        &mut self,
        t: i64,
        v: f64,
        length: i64,
        lateness: i64,
    ) -> Option<(usize, f64, f64, f64)> {
        if self.newest.is_some_and(|n| t < n - lateness) {
            return None;
        }
        let newest = self.newest.map_or(t, |n| n.max(t));
        self.newest = Some(newest);
        self.readings.push((t, v));
        self.readings.retain(|r| r.0 > newest - length);
        let vals: Vec<f64> = self.readings.iter().map(|r| r.1).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((vals.len(), mean, min, max))
    }
}

/// A pre-loaded topic, read from the start: four partitions whose event
/// times advance at different rates (1, 3, 7 and 20 s per reading), one
/// partition holding two keys produced one after the other over the same
/// event times, and one far-future record. Every enriched record's window
/// must equal the model's, whatever the batch size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_on_a_backlog_match_a_model_at_any_batch_size() {
    let mut records: Vec<(i32, String, i64, f64)> = Vec::new();
    let steps = [1_000i64, 3_000, 7_000, 20_000];
    let mut rand = support::seeded_uniform(99);
    for i in 0..600i64 {
        for (p, step) in steps.iter().enumerate() {
            for s in 0..5 {
                let key = format!("p{p}-s{s}");
                // Now and then a little out of order (within the lateness).
                let jitter = if (i + s) % 11 == 0 { -1_500 } else { 0 };
                let v = ((15.0 + rand() * 20.0) * 100.0).round() / 100.0;
                records.push((p as i32, key, T0 + i * step + jitter, v));
            }
        }
    }
    // Partition 0: all of one key, then all of another over the same span.
    for key in ["sorted-a", "sorted-b"] {
        for i in 0..400i64 {
            records.push((0, key.to_string(), T0 + i * 2_000, (i % 17) as f64));
        }
    }
    // One far-future reading on partition 1 (dead-lettered as `future`).
    records.insert(
        1_000,
        (1, "p1-s0".to_string(), T0 + 10 * 365 * 86_400_000, 1.0),
    );

    let (length, lateness) = (300_000i64, 30_000i64);
    let mut model: HashMap<String, Model> = HashMap::new();
    let mut want: HashMap<(i32, usize), Option<(usize, f64, f64, f64)>> = HashMap::new();
    let now = chrono::Utc::now().timestamp_millis();
    let mut per_partition = [0usize; 4];
    for (p, key, t, v) in &records {
        let nth = per_partition[*p as usize];
        per_partition[*p as usize] += 1;
        let stats = if *t > now + 3_600_000 {
            None
        } else {
            model
                .entry(key.clone())
                .or_default()
                .add(*t, *v, length, lateness)
        };
        want.insert((*p, nth), stats);
    }
    let late = want.values().filter(|w| w.is_none()).count();

    for batch_size in ["1000", "7"] {
        let cluster = Cluster::start("backlog", 4);
        let produced = cluster
            .produce_raw(
                &records
                    .iter()
                    .map(|(p, key, t, v)| {
                        (
                            Some(*p),
                            Some(key.clone().into_bytes()),
                            Some(reading(key, *t, *v)),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .await;
        // Offsets are per partition in production order: the nth record of a
        // partition has offset n (fresh topic).
        for (i, (p, o)) in produced.iter().enumerate() {
            assert_eq!(*p, records[i].0);
            let _ = o;
        }
        let n = records.len().to_string();
        let child = cluster.streamhost(
            "streamhost",
            &["--max-records", &n, "--batch-size", batch_size],
        );
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success(), "{}", cluster.log("streamhost"));
        let expected = want.values().filter(|w| w.is_some()).count();
        let enriched = cluster.read(&cluster.enriched, Duration::from_secs(120), |r| {
            r.len() >= expected
        });
        let mut wrong = 0;
        for r in &enriched {
            let v = r.json();
            let src = &v["streamhost"]["source"];
            let at = (
                src["partition"].as_i64().unwrap() as i32,
                src["offset"].as_i64().unwrap() as usize,
            );
            // An enriched record the model dead-letters counts as wrong.
            let Some((count, mean, min, max)) = want[&at] else {
                wrong += 1;
                continue;
            };
            let w = &v["streamhost"]["window"];
            let t = &w["fields"]["temperature"];
            let same = w["count"].as_u64() == Some(count as u64)
                && (t["mean"].as_f64().unwrap() - mean).abs() < 1e-9
                && t["min"].as_f64() == Some(min)
                && t["max"].as_f64() == Some(max);
            if !same {
                wrong += 1;
                if wrong < 5 {
                    eprintln!(
                        "wrong window at {at:?}: got {w}, want count {count} mean {mean} min {min} max {max}"
                    );
                }
            }
        }
        let dlq = cluster.read(&cluster.dlq, Duration::from_secs(30), |r| r.len() >= late);
        let reasons: BTreeMap<&str, usize> = dlq.iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.header("streamhost.reason")).or_default() += 1;
            m
        });
        println!(
            "batch size {batch_size}: {} enriched, {wrong} with a wrong window; dead letters {reasons:?}",
            enriched.len()
        );
        assert_eq!(enriched.len(), expected, "batch size {batch_size}");
        assert_eq!(wrong, 0, "batch size {batch_size}");
        assert_eq!(dlq.len(), late);
        assert_eq!(reasons.get("future"), Some(&1));
    }
}

/// Plugins that read WASI's clocks and random source get the batch's
/// processing time and a stream seeded from it: the same batch gives the
/// same answer, another processing time another.
#[test]
fn wasi_time_and_randomness_are_the_batchs() {
    use streamhost::contract::{Batch, FieldWindow, WindowView};
    let rt = support::runtime();
    let p = support::load(&rt, "clock-js");
    let batch = |now: i64| Batch {
        len: 1,
        processing_time: now,
        fields: vec!["temperature".into()],
        keys: vec![],
        event_times: vec![T0],
        values: vec![vec![20.0]],
        json: vec![],
        tables: vec![],
    };
    let field = FieldWindow {
        mean: vec![20.0],
        min: vec![20.0],
        max: vec![20.0],
        first: vec![20.0],
        last: vec![20.0],
        head: vec![],
        tail: vec![],
    };
    let view = WindowView {
        starts: vec![T0],
        ends: vec![T0],
        counts: vec![1],
        k: 0,
        fields: vec![field],
        declared: vec![],
    };
    let seen = |now: i64| -> serde_json::Value {
        let out = p.detect(&batch(now), &view).unwrap();
        serde_json::from_str(&out[0].as_ref().unwrap()[0].message).unwrap()
    };
    let a = seen(T0);
    assert_eq!(a["now"], T0, "{a}");
    assert_eq!(
        seen(T0),
        a,
        "a replay of the batch must see the same time and the same random bytes"
    );
    let b = seen(T0 + 1000);
    assert_eq!(b["now"], T0 + 1000);
    assert_ne!(b["bytes"], a["bytes"]);
}

/// The compiled-component cache is bounded by bytes, least recently used
/// first.
#[test]
fn the_component_cache_is_bounded_by_bytes() {
    use streamhost::rules::runtime::{Limits, Runtime};
    let load = |rt: &Runtime, name: &str| {
        rt.load(&std::fs::read(support::plugin_path(name)).unwrap(), name)
            .unwrap()
    };
    let unbounded = Runtime::new(Limits::default()).unwrap();
    let sizes: Vec<usize> = ["anomaly", "trend", "enrich"]
        .iter()
        .map(|n| {
            let before = unbounded.cached_bytes();
            drop(load(&unbounded, n));
            unbounded.cached_bytes() - before
        })
        .collect();
    assert!(sizes.iter().all(|s| *s > 0));
    // Room for the two largest but not all three.
    let mut sorted = sizes.clone();
    sorted.sort();
    let budget = sorted[1] + sorted[2];
    let rt = Runtime::new(Limits {
        cache_bytes: budget,
        ..Limits::default()
    })
    .unwrap();
    for n in ["anomaly", "trend", "enrich"] {
        drop(load(&rt, n));
        assert!(
            rt.cached_bytes() <= budget,
            "{} > {budget}",
            rt.cached_bytes()
        );
    }
    assert!(rt.cached_bytes() < sizes.iter().sum::<usize>());
}
