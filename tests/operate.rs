//! Operating streamhost, against the real broker: dead letters replayed
//! once a rule is fixed (`streamhost replay`), candidate versions tried in
//! shadow and as a canary, rolled back automatically when they fail, and
//! the console on the admin listener, opened in a real headless browser.

use streamhost_testkit as support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use streamhost::cmd::plugins::request;
use support::kafka::{Cluster, Read, terminate};

/// Event times start on a minute, so event seconds count from 0.
const T0: i64 = 1_795_500_000_000;
const TOKEN: &str = "op-token";

/// Reading `i`: key `i % keys`, one second after the key's previous one;
/// temperature, humidity and battery vary so that each of the article's
/// three alert kinds, under the article's thresholds and the `STRICT` ones,
/// is raised sometimes.
fn reading(i: usize, keys: usize) -> (String, i64, serde_json::Value) {
    let sensor = format!("sensor_{:03}", i % keys);
    let t = T0 + (i / keys) as i64 * 1000;
    let v = serde_json::json!({
        "sensor_id": sensor,
        "timestamp": t,
        "temperature": 20.0 + ((i * 7) % 29) as f64,
        "humidity": 60.0 + ((i * 11) % 37) as f64,
        "battery_level": 0.05 + ((i * 13) % 10) as f64 / 10.0,
    });
    (sensor, t, v)
}

/// Stricter thresholds than the article's, which candidates on trial are
/// given as configuration.
const STRICT: [(&str, &str); 4] = [
    ("temperature_min", "5"),
    ("temperature_max", "30"),
    ("battery_min", "0.3"),
    ("humidity_max", "75"),
];

/// The version the example rule configured with `STRICT` names itself by.
fn strict() -> String {
    let mut config = streamhost::rules::runtime::PluginConfig::new();
    for (k, v) in STRICT {
        config.set(k, v).unwrap();
    }
    format!("1.0.0+cfg.{}", config.digest().unwrap())
}

/// The anomaly kinds the example rule raises for `v` under `version`'s
/// thresholds (strict comparisons, as the article's rules).
fn kinds(version: &str, v: &serde_json::Value) -> Vec<String> {
    let (t_min, t_max, battery_min, humidity_max) = match version {
        "1.0.0" | "1.1.0-traps" | "1.1.0-rejects" => (0.0, 40.0, 0.2, 90.0),
        v if v == strict() => (5.0, 30.0, 0.3, 75.0),
        other => panic!("unknown version {other}"),
    };
    let f = |name: &str| v[name].as_f64().unwrap();
    let mut out = Vec::new();
    if f("temperature") > t_max || f("temperature") < t_min {
        out.push("temperature_out_of_range".to_string());
    }
    if f("battery_level") < battery_min {
        out.push("low_battery".to_string());
    }
    if f("humidity") > humidity_max {
        out.push("high_humidity".to_string());
    }
    out
}

/// The canary selection, computed here on its own: the first eight bytes
/// of the key's SHA-256, big-endian, modulo 10,000, below percent × 100.
fn canary_serves(percent: f64, key: &str) -> bool {
    let d = Sha256::digest(key.as_bytes());
    let head = u64::from_be_bytes(d[..8].try_into().unwrap());
    ((head % 10_000) as f64) < percent * 100.0
}

/// Produces readings `0..n` over `keys` keys, key `k` to partition
/// `k % partitions`, each stamped with its event time; returns each
/// reading's (partition, offset).
async fn produce(c: &Cluster, n: usize, keys: usize, partitions: usize) -> Vec<(i32, i64)> {
    let records: Vec<(i32, String, Vec<u8>, i64)> = (0..n)
        .map(|i| {
            let (key, t, v) = reading(i, keys);
            (
                ((i % keys) % partitions) as i32,
                key,
                v.to_string().into_bytes(),
                t,
            )
        })
        .collect();
    c.produce_stamped(&records).await
}

fn plugins(admin: &str) -> serde_json::Value {
    let (status, body) = request(admin, "GET", "/plugins", None, b"").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn plugin<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {list:#}"))
}

/// Starts a trial through the admin API, as `streamhost plugins put
/// --shadow|--canary` does.
fn put_candidate(admin: &str, name: &str, file: &str, query: &str) -> serde_json::Value {
    let bytes = std::fs::read(support::plugin_path(file)).unwrap();
    let (status, body) = request(
        admin,
        "PUT",
        &format!("/plugins/{name}?{query}"),
        Some(TOKEN),
        &bytes,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Tries the anomaly rule configured with `STRICT` beside its serving
/// version, as `query` says (`shadow=true`, `canary=30`).
fn try_strict(admin: &str, query: &str) -> serde_json::Value {
    let set: serde_json::Map<String, serde_json::Value> = STRICT
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    let change = serde_json::json!({ "set": set });
    let (status, body) = request(
        admin,
        "PUT",
        &format!("/plugins/anomaly/config?{query}"),
        Some(TOKEN),
        change.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `check` on the plugin list until it holds.
fn wait_for(
    admin: &str,
    what: &str,
    mut check: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let list = plugins(admin);
        if check(&list) {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never: {what}\n{list:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of a built plugin in the test's folder, to be written over.
fn own_copy(c: &Cluster, name: &str) -> PathBuf {
    let path = c.log_dir.join(format!("{name}.wasm"));
    std::fs::copy(support::plugin_path(name), &path).unwrap();
    path
}

/// The source position an output names.
fn source_of(r: &Read) -> (i64, i64) {
    let v = r.json();
    let s = if v["streamhost"].is_object() {
        &v["streamhost"]["source"]
    } else {
        &v["source"]
    };
    (
        s["partition"].as_i64().unwrap(),
        s["offset"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_alert_differences_equal_an_independent_model_and_nothing_of_it_is_routed() {
    let c = Cluster::start("shadow", 2);
    // A copy: promotion writes the candidate over the plugin's file.
    let plugin_files = [own_copy(&c, "anomaly")];
    let mut sh = c.streamhost_with(
        "streamhost",
        &plugin_files,
        &["--admin-token", TOKEN, "--batch-size", "100"],
    );
    let admin = c.admin_addr("streamhost");
    let put = try_strict(&admin, "shadow=true");
    assert_eq!(put["candidate"]["version"], strict(), "{put:#}");

    let (n, keys) = (1500, 30);
    produce(&c, n, keys, 2).await;

    // What the comparison must find, computed here: per reading, the
    // kinds the strict thresholds add to and remove from the article's.
    let (mut differing, mut added, mut removed) = (0u64, BTreeMap::new(), BTreeMap::new());
    let mut v1_alert_records = 0;
    for i in 0..n {
        let v = reading(i, keys).2;
        let (a, b) = (kinds("1.0.0", &v), kinds(&strict(), &v));
        v1_alert_records += usize::from(!a.is_empty());
        let plus: Vec<_> = b.iter().filter(|k| !a.contains(k)).collect();
        let minus: Vec<_> = a.iter().filter(|k| !b.contains(k)).collect();
        differing += u64::from(!plus.is_empty() || !minus.is_empty());
        for k in plus {
            *added.entry(k.clone()).or_insert(0u64) += 1;
        }
        for k in minus {
            *removed.entry(k.clone()).or_insert(0u64) += 1;
        }
    }
    assert!(
        differing > 100 && !added.is_empty(),
        "the data must tell the versions apart"
    );

    let list = wait_for(&admin, "every reading compared", |l| {
        plugin(l, "anomaly")["trial"]["compared"] == n
    });
    let trial = &plugin(&list, "anomaly")["trial"];
    assert_eq!(trial["mode"], "shadow");
    assert_eq!(trial["version"], strict());
    assert_eq!(trial["differing"], differing, "{trial:#}");
    assert_eq!(trial["added"], serde_json::json!(added), "{trial:#}");
    assert_eq!(trial["removed"], serde_json::json!(removed), "{trial:#}");
    assert_eq!(trial["candidate"]["records"], n);
    assert_eq!(trial["candidate"]["failed_records"], 0);
    assert!(trial["candidate"]["p99_call_ms"].as_f64().unwrap() > 0.0);

    // Only the serving version's alerts were routed.
    let alerts = c.read(&c.alerts, Duration::from_secs(30), |r| {
        r.len() >= v1_alert_records
    });
    std::thread::sleep(Duration::from_millis(500));
    let alerts = if alerts.len() == v1_alert_records {
        c.read_all(&c.alerts, Duration::from_secs(10))
    } else {
        alerts
    };
    assert_eq!(alerts.len(), v1_alert_records);
    assert!(alerts.iter().all(|a| a.json()["rule_version"] == "1.0.0"));

    let metrics = request(&admin, "GET", "/metrics", None, b"").unwrap().1;
    assert!(
        metrics.contains(&format!(
            "streamhost_trial_differing_records_total{{plugin=\"anomaly\",candidate=\"{}\",mode=\"shadow\"}} {differing}",
            strict()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "streamhost_trial_p99_call_seconds{{plugin=\"anomaly\",candidate=\"{}\",mode=\"shadow\",side=\"candidate\"}}",
            strict()
        )),
        "{metrics}"
    );

    // Promoted, it serves; the history tells the story.
    let (status, body) =
        request(&admin, "POST", "/plugins/anomaly/promote", Some(TOKEN), b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let list = plugins(&admin);
    let anomaly = plugin(&list, "anomaly");
    assert_eq!(anomaly["version"], strict());
    assert!(anomaly["trial"].is_null());
    let actions: Vec<&str> = anomaly["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["loaded", "shadow", "promoted"]);
    // Promotion wrote the configuration beside the plugin's file, which
    // is unchanged.
    let toml = std::fs::read_to_string(plugin_files[0].with_extension("toml")).unwrap();
    assert!(toml.contains("temperature_max = \"30\""), "{toml}");
    assert!(
        std::fs::read(&plugin_files[0]).unwrap()
            == std::fs::read(support::plugin_path("anomaly")).unwrap()
    );
    terminate(&mut sh);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_serves_exactly_the_keys_its_hash_selects() {
    let c = Cluster::start("canary", 2);
    let mut sh = c.streamhost_with(
        "streamhost",
        &[support::plugin_path("anomaly")],
        &["--admin-token", TOKEN, "--batch-size", "100"],
    );
    let admin = c.admin_addr("streamhost");
    try_strict(&admin, "canary=30");

    let (n, keys) = (1200, 40);
    let positions = produce(&c, n, keys, 2).await;
    let selected: BTreeSet<String> = (0..keys)
        .map(|k| format!("sensor_{k:03}"))
        .filter(|k| canary_serves(30.0, k))
        .collect();
    assert!(
        (5..=20).contains(&selected.len()),
        "30% of 40 keys, roughly: {selected:?}"
    );

    // Per reading: the version its key's hash picks, and that version's
    // alert kinds.
    let mut want = HashMap::new();
    for (i, pos) in positions.iter().enumerate() {
        let (key, _, v) = reading(i, keys);
        let version = if selected.contains(&key) {
            strict()
        } else {
            "1.0.0".to_string()
        };
        let kinds = kinds(&version, &v);
        want.insert((pos.0 as i64, pos.1), (key, version, kinds));
    }
    let enriched = c.read(&c.enriched, Duration::from_secs(60), |r| r.len() >= n);
    assert_eq!(enriched.len(), n);
    for r in &enriched {
        let (key, version, kinds) = &want[&source_of(r)];
        let v = r.json();
        assert_eq!(
            v["streamhost"]["plugins"]["anomaly"], *version,
            "{key}: {v}"
        );
        assert_eq!(
            v["streamhost"]["alerts"],
            serde_json::json!(kinds),
            "{key}: {v}"
        );
    }
    let alert_records = want.values().filter(|w| !w.2.is_empty()).count();
    let alerts = c.read(&c.alerts, Duration::from_secs(30), |r| {
        r.len() >= alert_records
    });
    assert_eq!(alerts.len(), alert_records);
    for a in &alerts {
        let (key, version, kinds) = &want[&source_of(a)];
        let v = a.json();
        assert_eq!(v["rule_version"], *version, "{key}: {v}");
        assert_eq!(v["anomalies"], serde_json::json!(kinds), "{key}: {v}");
    }
    let list = plugins(&admin);
    let trial = &plugin(&list, "anomaly")["trial"];
    let served_by_candidate = want.values().filter(|w| w.1 == strict()).count();
    assert_eq!(
        trial["candidate"]["records"], served_by_candidate,
        "{trial:#}"
    );
    assert_eq!(
        trial["serving"]["records"],
        n - served_by_candidate,
        "{trial:#}"
    );
    terminate(&mut sh);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_trapping_on_5_percent_of_records_is_rolled_back_and_nothing_is_lost() {
    let c = Cluster::start("rollback", 2);
    let files = ["enrich", "trend", "anomaly"].map(support::plugin_path);
    let mut sh = c.streamhost_with(
        "streamhost",
        &files,
        &[
            "--admin-token",
            TOKEN,
            "--batch-size",
            "100",
            "--rollback-after",
            "200",
        ],
    );
    let admin = c.admin_addr("streamhost");
    put_candidate(&admin, "anomaly", "anomaly-traps", "canary=50");

    let (n, keys) = (3000, 40);
    let positions = produce(&c, n, keys, 2).await;
    let traps = (0..n)
        .filter(|&i| anomaly::traps_on_any(reading(i, keys).1))
        .count();
    assert!(
        traps * 100 / n == 5,
        "5% of readings trap the candidate: {traps}"
    );

    let list = wait_for(&admin, "the candidate rolled back", |l| {
        plugin(l, "anomaly")["trial"].is_null()
    });
    let anomaly = plugin(&list, "anomaly");
    assert_eq!(anomaly["version"], "1.0.0");
    let last = anomaly["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "rolled-back-automatically", "{anomaly:#}");
    assert_eq!(last["version"], "1.1.0-traps");
    assert!(
        last["detail"].as_str().unwrap().starts_with("failure rate"),
        "{last}"
    );
    c.wait_log(
        "streamhost",
        "Candidate rolled back.",
        Duration::from_secs(5),
    );

    // Nothing lost: every reading enriched once, with v1's alerts (the
    // serving version covered for every failed candidate call), and no
    // dead letter.
    let enriched = c.read(&c.enriched, Duration::from_secs(60), |r| r.len() >= n);
    let seen: BTreeSet<(i64, i64)> = enriched.iter().map(source_of).collect();
    let produced: BTreeSet<(i64, i64)> = positions.iter().map(|p| (p.0 as i64, p.1)).collect();
    assert_eq!(enriched.len(), n);
    assert_eq!(seen, produced);
    for r in &enriched {
        let v = r.json();
        let reading_kinds = kinds("1.0.0", &v);
        assert_eq!(
            v["streamhost"]["alerts"],
            serde_json::json!(reading_kinds),
            "{v}"
        );
    }
    let dead = c.read_all(&c.dlq, Duration::from_secs(5));
    assert!(dead.is_empty(), "{dead:?}");
    let metrics = request(&admin, "GET", "/metrics", None, b"").unwrap().1;
    assert!(
        metrics.contains("streamhost_plugin_rollbacks_total{result=\"automatic\"} 1"),
        "{metrics}"
    );
    terminate(&mut sh);
}

/// Runs a streamhost command to its end and returns its stdout.
fn run_to_end(mut cmd: Command, log: &std::path::Path) -> String {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        std::fs::read_to_string(log).unwrap_or_default()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// streamhost on `c`'s input, with other output topics and group: an
/// uninterrupted run to compare with.
fn reference_run(c: &Cluster, plugins: &[PathBuf], n: usize) -> (String, String) {
    let (enriched, alerts, dlq) = (
        support::topic("ref-enriched"),
        support::topic("ref-alerts"),
        support::topic("ref-dlq"),
    );
    for t in [&enriched, &alerts, &dlq] {
        c.broker.create_topic(t, 2).unwrap();
    }
    let mut cmd = Command::new(support::bin("streamhost"));
    cmd.args(["--brokers", &c.broker.bootstrap(), "--admin", "127.0.0.1:0"])
        .args(["--input-topic", &c.input, "--group", &support::topic("ref")])
        .args([
            "--enriched-topic",
            &enriched,
            "--alerts-topic",
            &alerts,
            "--dlq-topic",
            &dlq,
        ])
        .args(["--max-records", &n.to_string()]);
    for p in plugins {
        cmd.arg("--plugin").arg(p);
    }
    run_to_end(cmd, &c.log_dir.join("reference.log"));
    (enriched, alerts)
}

/// `streamhost replay` on `c`'s topics with `plugins`; its JSON summary.
fn replay(c: &Cluster, plugins: &[PathBuf], log: &str) -> serde_json::Value {
    let mut cmd = Command::new(support::bin("streamhost"));
    cmd.args(["replay", "--from", &c.dlq, "--json"])
        .args(["--brokers", &c.broker.bootstrap()])
        .args(c.topic_args());
    for p in plugins {
        cmd.arg("--plugin").arg(p);
    }
    let out = run_to_end(cmd, &c.log_dir.join(format!("{log}.log")));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_resolves_every_rejected_record_with_the_windows_of_an_uninterrupted_run() {
    let c = Cluster::start("replay", 2);
    let (n, keys) = (1200, 6);
    let positions = produce(&c, n, keys, 2).await;
    let rejected: BTreeSet<(i64, i64)> = (0..n)
        .filter(|&i| anomaly::rejects_any(reading(i, keys).1))
        .map(|i| (positions[i].0 as i64, positions[i].1))
        .collect();
    assert_eq!(rejected.len(), n / 10);

    // A broken rule version rejects a tenth of the readings.
    let broken = ["enrich", "trend", "anomaly-rejects"].map(support::plugin_path);
    let mut sh = c.streamhost_with("broken", &broken, &["--max-records", &n.to_string()]);
    assert!(sh.wait().unwrap().success(), "{}", c.log("broken"));
    let dead = c.read_all(&c.dlq, Duration::from_secs(30));
    let dead_at: BTreeSet<(i64, i64)> = dead
        .iter()
        .map(|d| {
            assert_eq!(d.header("streamhost.reason"), "plugin-error");
            assert_eq!(d.header("streamhost.plugin.version"), "1.1.0-rejects");
            (
                d.header("streamhost.source.partition").parse().unwrap(),
                d.header("streamhost.source.offset").parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(dead_at, rejected);
    let enriched_before = c.read_all(&c.enriched, Duration::from_secs(30)).len();
    assert_eq!(enriched_before, n - rejected.len());

    // The fixed rule, replayed over the dead letters.
    let fixed = ["enrich", "trend", "anomaly"].map(support::plugin_path);
    let summary = replay(&c, &fixed, "replay");
    assert_eq!(summary["read"], rejected.len(), "{summary:#}");
    assert_eq!(summary["resolved"], rejected.len(), "{summary:#}");
    assert_eq!(
        summary["failed_again"],
        serde_json::json!({}),
        "{summary:#}"
    );
    assert_eq!(summary["partial_windows"], 0, "{summary:#}");
    assert_eq!(summary["by_reason"]["plugin-error"], rejected.len());

    // Each replayed record's outputs equal an uninterrupted run's.
    let (ref_enriched, ref_alerts) = reference_run(&c, &fixed, n);
    let by_source = |topic: &str, count: usize| -> HashMap<(i64, i64), serde_json::Value> {
        c.read(topic, Duration::from_secs(60), |r| r.len() >= count)
            .iter()
            .map(|r| (source_of(r), r.json()))
            .collect()
    };
    let reference = by_source(&ref_enriched, n);
    let enriched = c.read_all(&c.enriched, Duration::from_secs(30));
    assert_eq!(enriched.len(), n, "every reading enriched once");
    let replayed: Vec<&Read> = enriched
        .iter()
        .filter(|r| r.headers.contains_key("streamhost.replayed-from"))
        .collect();
    assert_eq!(replayed.len(), rejected.len());
    let dead_position: HashMap<(i64, i64), String> = dead
        .iter()
        .map(|d| {
            (
                (
                    d.header("streamhost.source.partition").parse().unwrap(),
                    d.header("streamhost.source.offset").parse().unwrap(),
                ),
                format!("{}/{}/{}", c.dlq, d.partition, d.offset),
            )
        })
        .collect();
    for r in &replayed {
        let at = source_of(r);
        assert!(rejected.contains(&at));
        let v = r.json();
        let want = &reference[&at];
        assert_eq!(
            v["streamhost"]["window"], want["streamhost"]["window"],
            "{at:?}"
        );
        assert_eq!(
            v["streamhost"]["trends"], want["streamhost"]["trends"],
            "{at:?}"
        );
        assert_eq!(
            v["streamhost"]["alerts"], want["streamhost"]["alerts"],
            "{at:?}"
        );
        assert!(v["streamhost"]["window"]["count"].as_u64().unwrap() > 1);
        let from = r.header("streamhost.replayed-from");
        assert_eq!(from, dead_position[&at]);
        let member = &v["replayed_from"];
        assert_eq!(
            format!(
                "{}/{}/{}",
                member["topic"].as_str().unwrap(),
                member["partition"],
                member["offset"]
            ),
            from
        );
        assert_eq!(member["attempt"], 2);
    }
    let reference_alerts: HashMap<(i64, i64), serde_json::Value> = c
        .read_all(&ref_alerts, Duration::from_secs(30))
        .iter()
        .map(|r| (source_of(r), r.json()))
        .collect();
    let alerts = c.read_all(&c.alerts, Duration::from_secs(30));
    let replayed_alerts: Vec<&Read> = alerts
        .iter()
        .filter(|r| r.headers.contains_key("streamhost.replayed-from"))
        .collect();
    let want_alerts = rejected
        .iter()
        .filter(|at| reference_alerts.contains_key(at))
        .count();
    assert!(want_alerts > 0);
    assert_eq!(replayed_alerts.len(), want_alerts);
    for a in replayed_alerts {
        let at = source_of(a);
        assert_eq!(a.json()["anomalies"], reference_alerts[&at]["anomalies"]);
    }

    // Run again: nothing to do, nothing added.
    let again = replay(&c, &fixed, "replay-again");
    assert_eq!(again["read"], 0, "{again:#}");
    assert_eq!(c.read_all(&c.enriched, Duration::from_secs(30)).len(), n);
    assert_eq!(
        c.read_all(&c.dlq, Duration::from_secs(30)).len(),
        dead.len()
    );
}

/// Debian's chromium, headless, on `url`: `--dump-dom` (the page after its
/// scripts ran) or `--screenshot=FILE`.
fn chromium(url: &str, mode: &str, dir: &std::path::Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1500",
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

/// The table row of plugin `name` in the console's DOM.
fn plugin_row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr id=\"plugin-{name}\">"))
        .unwrap_or_else(|| panic!("no row for plugin {name} in:\n{dom}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_plugins_versions_counts_partitions_and_alerts_in_a_real_browser() {
    let c = Cluster::start("console", 2);
    let mut sh = c.streamhost(
        "streamhost",
        &["--admin-token", TOKEN, "--batch-size", "100"],
    );
    let admin = c.admin_addr("streamhost");
    try_strict(&admin, "shadow=true");
    let (n, keys) = (2000, 20);
    produce(&c, n, keys, 2).await;
    wait_for(&admin, "every reading through the rules", |l| {
        plugin(l, "anomaly")["records"] == n && plugin(l, "anomaly")["trial"]["compared"] == n
    });
    // A few samples for the charts.
    std::thread::sleep(Duration::from_millis(2500));

    let url = format!("http://{admin}/");
    let dom = chromium(&url, "--dump-dom", &c.log_dir);
    std::fs::write(c.log_dir.join("console.html"), &dom).unwrap();
    for name in ["enrich", "trend", "anomaly"] {
        let row = plugin_row(&dom, name);
        assert!(
            row.contains(&format!("<b class=\"name\">{name}</b>")),
            "{row}"
        );
        assert!(row.contains("<td class=\"version\">1.0.0 "), "{row}");
        assert!(
            row.contains(&format!("<td class=\"n records\">{}</td>", "2,000")),
            "{row}"
        );
        assert!(row.contains("loaded 1.0.0"), "the history: {row}");
        let calls = row
            .split("<td class=\"n calls\">")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap()
            .replace(',', "");
        assert!(calls.parse::<u64>().unwrap() >= (n / 100) as u64, "{row}");
    }
    let anomaly = plugin_row(&dom, "anomaly");
    assert!(
        anomaly.contains(&format!("shadow {}", strict())),
        "{anomaly}"
    );
    assert!(anomaly.contains("2,000 compared"), "{anomaly}");
    for p in 0..2 {
        assert!(
            dom.contains(&format!("id=\"partition-{p}\"")),
            "partition {p}"
        );
    }
    assert!(dom.contains("worker "), "worker ownership");
    assert!(dom.contains("<polyline"), "a chart is drawn");
    assert!(
        dom.contains(&format!("<b id=\"total\">{}</b>", "2,000")),
        "total consumed"
    );
    assert!(dom.contains("temperature_out_of_range"), "recent alerts");
    assert!(
        dom.contains("<div id=\"error\" style=\"display: none;\"></div>"),
        "the page reached /console/state"
    );

    // The page changes nothing: it only reads.
    let before = plugins(&admin);
    let shot = c.log_dir.join("console.png");
    chromium(
        &url,
        &format!("--screenshot={}", shot.display()),
        &c.log_dir,
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a page, not a blank: {} bytes",
        png.len()
    );
    assert_eq!(
        plugin(&plugins(&admin), "anomaly")["version"],
        plugin(&before, "anomaly")["version"]
    );
    terminate(&mut sh);
}
