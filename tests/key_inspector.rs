//! The key inspector (`GET /keys/{key}`, `streamhost key`, the console's
//! search) on a two-process group, against the real broker and the built
//! components: the process holding a key answers with the window a
//! recomputation from the produced readings gives (count, mean, min, max
//! per field; the `zscore` rule's declared window), its newest readings,
//! its open alert and its table row; the other member answers with the
//! partition (as librdkafka's Java-compatible murmur2 partitioner placed
//! the key) and, from the group's assignment, the member holding it. The
//! console, in headless chromium, shows a searched key's chart, aggregates
//! and open alert.

use streamhost_testkit as support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use streamhost::cmd::plugins::request;
use support::kafka::{Cluster, terminate};

/// Event time of the first reading (in the past, on a minute).
const T0: i64 = 1_700_000_040_000;
/// Readings per key, one a second.
const READINGS: i64 = 40;
/// `--window`: the last 20 readings of each key.
const WINDOW: (&str, i64) = ("20s", 20_000);
/// The `zscore` rule's declared window (its default `window_ms`).
const ZSCORE_MS: i64 = 300_000;
const FIELDS: [&str; 4] = ["temperature", "humidity", "pressure", "battery_level"];
/// Its temperature is above the anomaly rule's 40 at every reading.
const HOT: &str = "dev-3";
const KEYS: [&str; 9] = [
    "dev-0",
    "dev-1",
    "dev-2",
    HOT,
    "dev-4",
    "dev-5",
    "dev-6",
    "dev-7",
    "odd key/é%",
];

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Reading `i` of key number `k`: event time, and per field its value as
/// written (`None`: absent; every sixth reading has no pressure).
fn reading(k: usize, i: i64) -> (i64, [Option<f64>; 4]) {
    let key = KEYS[k];
    let temperature = if key == HOT {
        41.0 + ((i * 7) % 11) as f64 * 0.25
    } else {
        18.0 + k as f64 + ((i * 7 + k as i64 * 3) % 11) as f64 * 0.5
    };
    let humidity = 40.0 + ((i * 3 + k as i64) % 13) as f64;
    let pressure = (i % 6 != 5).then(|| 1000.0 + ((i * 5 + k as i64) % 17) as f64 * 0.1);
    let battery = 0.9 - i as f64 * 0.001;
    // Each value as its text says it, so the model reads what streamhost read.
    let text = |v: f64| format!("{v:.3}").parse::<f64>().unwrap();
    (
        T0 + i * 1000,
        [
            Some(text(temperature)),
            Some(text(humidity)),
            pressure.map(text),
            Some(text(battery)),
        ],
    )
}

fn payload(k: usize, i: i64) -> Vec<u8> {
    let (t, values) = reading(k, i);
    let mut v = json!({ "sensor_id": KEYS[k], "timestamp": iso(t) });
    for (name, value) in FIELDS.iter().zip(values) {
        if let Some(x) = value {
            v[*name] = json!(x);
        }
    }
    v.to_string().into_bytes()
}

/// Produces every key's readings, time by time, keyed by the key with
/// librdkafka's `murmur2_random` (the Java client's partitioner); returns
/// the partition each key landed on.
async fn produce(c: &Cluster) -> BTreeMap<&'static str, i32> {
    let producer: FutureProducer = c
        .config()
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..READINGS {
        for (k, key) in KEYS.iter().enumerate() {
            let body = payload(k, i);
            let record = FutureRecord::to(&c.input)
                .key(key.as_bytes())
                .payload(&body);
            let delivery = producer.send_result(record).map_err(|(e, _)| e).unwrap();
            sent.push((*key, delivery));
        }
    }
    let mut partitions = BTreeMap::new();
    for (key, delivery) in sent {
        let d = delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        let p = *partitions.entry(key).or_insert(d.partition);
        assert_eq!(p, d.partition, "one key, one partition");
    }
    partitions
}

/// `/keys/KEY?readings=N` of a process, as JSON.
fn ask(admin: &str, key: &str, readings: usize) -> Value {
    let path = format!(
        "/keys/{}?readings={readings}",
        streamhost::cmd::key::encode(key)
    );
    let (status, body) = request(admin, "GET", &path, None, b"").unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn close(got: &Value, want: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {got} is no number"));
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: {got} != {want}"
    );
}

/// The values of field `f` of key `k`'s readings with event time after
/// `from`.
fn values(k: usize, f: usize, from: i64) -> Vec<f64> {
    (0..READINGS)
        .map(|i| reading(k, i))
        .filter(|(t, _)| *t > from)
        .filter_map(|(_, v)| v[f])
        .collect()
}

/// Checks an owner's answer for key number `k` against the readings.
fn check_owned(a: &Value, k: usize, partition: i32) {
    let key = KEYS[k];
    assert_eq!(a["key"], key, "{a:#}");
    assert_eq!(a["owned"], true, "{a:#}");
    assert_eq!(a["partition"], partition, "{a:#}");
    assert_eq!(a["partitioner"]["murmur2"], partition, "{a:#}");
    let newest = T0 + (READINGS - 1) * 1000;
    let w = &a["window"];
    let from = newest - WINDOW.1;
    assert_eq!(w["count"], (READINGS - 20) as u64, "{key}: {w:#}");
    assert_eq!(w["start_ms"], from + 1000);
    assert_eq!(w["end_ms"], newest);
    for (f, name) in FIELDS.iter().enumerate() {
        let vals = values(k, f, from);
        let stats = &w["fields"][name];
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        close(&stats["mean"], mean, &format!("{key} {name} mean"));
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(stats["min"].as_f64(), Some(min), "{key} {name} min");
        assert_eq!(stats["max"].as_f64(), Some(max), "{key} {name} max");
    }
    // zscore's window: count, mean and (population) stddev of temperature.
    let declared = a["declared"].as_array().unwrap();
    assert_eq!(declared.len(), 1, "{declared:#?}");
    let z = &declared[0];
    assert_eq!(z["length_ms"], ZSCORE_MS);
    assert_eq!(z["rules"], json!(["zscore 1.0.0"]));
    let temps = values(k, 0, newest - ZSCORE_MS);
    let n = temps.len() as f64;
    let mean = temps.iter().sum::<f64>() / n;
    let var = temps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let t = &z["fields"]["temperature"];
    close(&t["count"], n, "zscore count");
    close(&t["mean"], mean, "zscore mean");
    close(&t["stddev"], var.sqrt(), "zscore stddev");
    // The newest five readings, oldest first; absent values are null.
    let readings = a["readings"].as_array().unwrap();
    assert_eq!(readings.len(), 5);
    for (r, i) in readings.iter().zip(READINGS - 5..READINGS) {
        let (t, vals) = reading(k, i);
        assert_eq!(r["time_ms"], t);
        for (name, v) in FIELDS.iter().zip(vals) {
            assert_eq!(r["values"][name].as_f64(), v, "{key} reading {i} {name}");
        }
    }
    // Only the hot key fires: one alert, since its first reading, every
    // later one suppressed (`--alert-repeat` is 10 minutes).
    let open = a["open_alerts"].as_array().unwrap();
    if key == HOT {
        assert_eq!(open.len(), 1, "{open:#?}");
        let o = &open[0];
        assert_eq!(
            (&o["rule"], &o["kind"], &o["severity"]),
            (
                &json!("anomaly"),
                &json!("temperature_out_of_range"),
                &json!("high")
            )
        );
        assert_eq!(o["since_ms"], T0);
        assert_eq!(o["last_ms"], newest);
        assert_eq!(o["suppressed"], READINGS - 1);
    } else {
        assert!(open.is_empty(), "{key}: {open:#?}");
    }
    // The table row keyed by the key, if it has one.
    let rows = a["tables"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["table"], "limits");
    let want = if key == HOT {
        json!({ "max_temperature": 40 })
    } else {
        Value::Null
    };
    assert_eq!(rows[0]["row"], want, "{key}");
}

/// Starts a process of the group, with the example rules, `zscore` and the
/// alert lifecycle.
fn start(c: &Cluster, log: &str, table: &str) -> std::process::Child {
    let plugins = ["enrich", "trend", "anomaly", "zscore"].map(support::plugin_path);
    let table = format!("limits={table}");
    c.streamhost_with(
        log,
        &plugins,
        &[
            "--window",
            WINDOW.0,
            "--alerts",
            "lifecycle",
            "--workers",
            "2",
            "--table",
            &table,
        ],
    )
}

/// A process's partitions of the input, once its log says it holds some.
fn holds(c: &Cluster, log: &str) -> bool {
    c.log(log).lines().any(|l| {
        l.split("Partitions assigned. partitions=[")
            .nth(1)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// A compacted table topic with one row, for the hot key.
async fn table(c: &Cluster) -> String {
    let topic = support::topic("keys-limits");
    c.broker.create_topic(&topic, 1).unwrap();
    let row = json!({ "max_temperature": 40 }).to_string();
    let record: FutureRecord<'_, str, str> = FutureRecord::to(&topic).key(HOT).payload(&row);
    c.producer()
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
    topic
}

/// Waits until the enriched topic holds a record for every reading.
fn wait_processed(c: &Cluster) {
    let n = KEYS.len() * READINGS as usize;
    let got = c.read(&c.enriched, Duration::from_secs(180), |r| r.len() >= n);
    assert_eq!(got.len(), n, "every reading enriched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_answers_with_the_window_and_the_other_member_with_the_partition() {
    let c = Cluster::start("keys", 4);
    let limits = table(&c).await;
    let mut a = start(&c, "a", &limits);
    c.wait_log("a", "Partitions assigned", Duration::from_secs(120));
    let mut b = start(&c, "b", &limits);
    let t = Instant::now();
    while !holds(&c, "b") {
        assert!(t.elapsed() < Duration::from_secs(120), "{}", c.log("b"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let admins = [c.admin_addr("a"), c.admin_addr("b")];
    let partitions = produce(&c).await;
    wait_processed(&c);

    let mut owners = [0, 0];
    for (k, key) in KEYS.iter().enumerate() {
        let p = partitions[key];
        // The group may still settle (a rebalance after the records): ask
        // until exactly one process holds the key.
        let t = Instant::now();
        let (answers, owner) = loop {
            let answers: Vec<Value> = admins.iter().map(|a| ask(a, key, 5)).collect();
            let held: Vec<usize> = (0..2).filter(|&i| answers[i]["owned"] == true).collect();
            if held.len() == 1 && answers[held[0]]["window"].is_object() {
                break (answers, held[0]);
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{answers:#?}");
            std::thread::sleep(Duration::from_millis(500));
        };
        owners[owner] += 1;
        check_owned(&answers[owner], k, p);
        let other = &answers[1 - owner];
        assert_eq!(other["key"], *key);
        assert_eq!(other["owned"], false, "{other:#}");
        assert_eq!(other["partition"], p, "{other:#}");
        assert!(other.get("window").is_none(), "{other:#}");
        // The member holding it, from the group's assignment: the owner,
        // whose client.id carries its admin address. A broker that leaves
        // assignments out of DescribeGroups (the test broker does) gets
        // the members listed, each with its admin address.
        let members = other["members"].as_array().unwrap();
        let member_admins: Vec<&str> = members.iter().filter_map(|m| m["admin"].as_str()).collect();
        assert_eq!(member_admins.len(), 2, "{other:#}");
        assert!(
            admins.iter().all(|a| member_admins.contains(&a.as_str())),
            "{other:#}"
        );
        let assigned = members
            .iter()
            .any(|m| !m["partitions"].as_array().unwrap().is_empty());
        if assigned {
            let member = &other["owner"];
            assert_eq!(member["admin"], admins[owner], "{other:#}");
            assert_eq!(member["is_this_process"], false);
            assert!(member["partitions"].as_array().unwrap().contains(&json!(p)));
        } else {
            assert_eq!(other["owner"], Value::Null);
            assert!(
                other["note"]
                    .as_str()
                    .unwrap()
                    .contains("no member's assignment"),
                "{other:#}"
            );
        }
        for m in members {
            let me = m["admin"] == admins[1 - owner];
            assert_eq!(m["is_this_process"], me, "{m}");
        }

        // `streamhost key` prints the same: the owner's answer as JSON, and
        // as text.
        let json_out = key_command(&admins[owner], &[key, "--readings", "5", "--json"]);
        let printed: Value = serde_json::from_str(&json_out).unwrap();
        assert_eq!(printed, answers[owner]);
        let text = key_command(&admins[owner], &[key, "--readings", "5"]);
        check_text(&text, k, p, &answers[owner]);
        println!("$ streamhost key {key:?} --readings 5 (the owner)\n{text}");
        let text = key_command(&admins[1 - owner], &[key]);
        println!("$ streamhost key {key:?} (the other member)\n{text}");
        assert!(
            text.starts_with(&format!("{key}: partition {p} of 4 ")),
            "{text}"
        );
        assert!(text.contains("not held by this process"), "{text}");
        assert!(
            text.contains(&format!("--admin {}", admins[owner])),
            "{text}"
        );
    }
    assert!(
        owners[0] > 0 && owners[1] > 0,
        "each process holds keys: {owners:?}"
    );

    // An empty key is a clear 404; a key that is not UTF-8 a 400; neither
    // hurts the process.
    for path in ["/keys/", "/keys"] {
        let (status, body) = request(&admins[0], "GET", path, None, b"").unwrap();
        assert_eq!(status, 404, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("no key"), "{v}");
    }
    let (status, body) = request(&admins[0], "GET", "/keys/%FF%FE", None, b"").unwrap();
    assert_eq!(status, 400, "{body}");
    let a2 = ask(&admins[0], "never-seen", 5);
    assert_eq!(a2["key"], "never-seen");
    assert!(
        a2.get("window").is_none() || a2["window"].is_null(),
        "{a2:#}"
    );
    let out = Command::new(support::bin("streamhost"))
        .args(["key", "", "--admin", &admins[0]])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(&mut a);
    terminate(&mut b);
}

/// `streamhost key ARGS --admin ADMIN`'s output, which must succeed.
fn key_command(admin: &str, args: &[&str]) -> String {
    let out = Command::new(support::bin("streamhost"))
        .arg("key")
        .args(args)
        .args(["--admin", admin])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "streamhost key {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A number as `streamhost key` prints it: up to three decimals.
fn shown(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The text layout of an owner's answer.
fn check_text(text: &str, k: usize, p: i32, answer: &Value) {
    let key = KEYS[k];
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{key}: partition {p} of 4 "))
            && lines[0].contains(&format!("held here by worker {}", answer["worker"])),
        "{text}"
    );
    assert!(
        text.contains(&format!("window 20s: {} readings, ", READINGS - 20)),
        "{text}"
    );
    for name in FIELDS {
        let s = &answer["window"]["fields"][name];
        let row = lines
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{text}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let want: Vec<String> = ["mean", "min", "max"]
            .iter()
            .map(|a| shown(s[a].as_f64().unwrap()))
            .collect();
        assert_eq!(cells[1..], want[..], "{row}");
    }
    assert!(
        text.contains("declared window 5m00s (zscore 1.0.0): 40 readings"),
        "{text}"
    );
    assert!(text.contains("newest 5 readings:"), "{text}");
    let newest = T0 + (READINGS - 1) * 1000;
    assert!(text.contains(&iso(newest)), "{text}");
    if key == HOT {
        assert!(
            text.contains(&format!(
                "[high] anomaly temperature_out_of_range: firing for 39s of event time, since {} ({} suppressed)",
                iso(T0),
                READINGS - 1
            )),
            "{text}"
        );
        assert!(
            text.contains(r#"table limits: {"max_temperature":40}"#),
            "{text}"
        );
    } else {
        assert!(text.contains("open alerts: none"), "{text}");
        assert!(text.contains("table limits: no row"), "{text}");
    }
}

/// Debian's chromium, headless, on `url` (`--dump-dom`, or
/// `--screenshot=FILE`).
fn chromium(url: &str, mode: &str, dir: &std::path::Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=8000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .arg(mode)
        .arg(url)
        .output()
        .expect("chromium (cargo xtask test installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium {mode}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The part of `dom` from the element with `id` to the end of `until`.
fn part<'d>(dom: &'d str, id: &str, until: &str) -> &'d str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in:\n{dom}"));
    let end = dom[start..].find(until).map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_searched_keys_window_chart_and_open_alerts() {
    let c = Cluster::start("keys-console", 2);
    let limits = table(&c).await;
    let mut sh = start(&c, "console", &limits);
    let admin = c.admin_addr("console");
    produce(&c).await;
    wait_processed(&c);
    let k = KEYS.iter().position(|k| *k == HOT).unwrap();

    let url = format!("http://{admin}/?key={HOT}");
    let dom = chromium(&url, "--dump-dom", &c.log_dir);
    std::fs::write(c.log_dir.join("console-key.html"), &dom).unwrap();
    assert!(
        dom.contains(&format!("<span id=\"keyname\">{HOT}</span>")),
        "the search ran"
    );
    assert!(dom.contains("<form id=\"keyform\""), "the search box");
    // One chart per field, each a line through the 40 readings shown
    // (every reading is within the 60 the page asks for).
    let charts = part(&dom, "keycharts", "id=\"keyaggs\"");
    assert_eq!(
        charts.matches("<polyline").count(),
        FIELDS.len(),
        "{charts}"
    );
    let temperature_dots = charts
        .split("aria-label=\"temperature readings\"")
        .nth(1)
        .unwrap()
        .split("</svg>")
        .next()
        .unwrap()
        .matches("<circle")
        .count();
    assert_eq!(temperature_dots, READINGS as usize);
    // The aggregates: the window's temperature mean, min and max.
    let aggs = part(&dom, "keyaggs", "</table>");
    let row = aggs
        .split("<tr><td>temperature</td>")
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    let cells: Vec<f64> = row
        .split("<td class=\"n\">")
        .skip(1)
        .map(|c| {
            c.split('<')
                .next()
                .unwrap()
                .replace(',', "")
                .parse()
                .unwrap()
        })
        .collect();
    let vals = values(k, 0, T0 + (READINGS - 1) * 1000 - WINDOW.1);
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    assert!((cells[0] - mean).abs() < 5e-4, "{row} vs {mean}");
    assert_eq!(cells[1], vals.iter().copied().fold(f64::INFINITY, f64::min));
    assert_eq!(
        cells[2],
        vals.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    );
    // The open alert.
    let alerts = part(&dom, "keyalerts", "</table>");
    assert_eq!(
        alerts.matches("class=\"open-alert\"").count(),
        1,
        "{alerts}"
    );
    assert!(alerts.contains("temperature_out_of_range"), "{alerts}");
    assert!(alerts.contains("39s"), "fired 39 s of event time: {alerts}");

    let shot = c.log_dir.join("console-key.png");
    chromium(
        &url,
        &format!("--screenshot={}", shot.display()),
        &c.log_dir,
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    println!("screenshot: {}", shot.display());
    terminate(&mut sh);
}
