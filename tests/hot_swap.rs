//! Hot swap under load, against the real broker: the anomaly rule with and
//! without a configuration (other thresholds, so other outputs) swapped
//! back and forth by replacing its `anomaly.toml`; broken files that must
//! not be served; the admin API and its token; a configuration changed by
//! `streamhost plugins config`.

use streamhost_testkit as support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use streamhost::cmd::plugins::request;
use support::kafka::{Cluster, terminate};

const T0: i64 = 1_795_500_000_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Readings whose temperature cycles through 20..=45 °C: the rule alerts
/// above 40 without configuration and above 30 with `STRICT`, so the
/// version that handled a record shows in its outputs.
fn reading(i: usize) -> (Option<String>, Vec<u8>) {
    let sensor = format!("sensor_{:03}", i % 20);
    let v = serde_json::json!({
        "sensor_id": sensor,
        "timestamp": T0 + (i / 20) as i64 * 1000,
        "temperature": 20.0 + (i % 26) as f64,
        "humidity": 50.0,
        "battery_level": 0.9,
    });
    (Some(sensor), v.to_string().into_bytes())
}

/// The stricter thresholds, as the `[config]` table of `anomaly.toml`.
const STRICT: &str = "[config]\ntemperature_min = \"5\"\ntemperature_max = \"30\"\n";

/// The version outputs name when the rule runs with `STRICT`: its own
/// version with the configuration's digest, as semver build metadata.
fn strict_version() -> (String, String) {
    let mut config = streamhost::rules::runtime::PluginConfig::new();
    config.set("temperature_min", "5").unwrap();
    config.set("temperature_max", "30").unwrap();
    let digest = config.digest().unwrap();
    (format!("1.0.0+cfg.{digest}"), digest)
}

/// Does anomaly `version` alert on this temperature (humidity and battery
/// are always normal here)? `1.0.0` has the article's thresholds; a
/// configured version (`1.0.0+cfg.`) in these tests is `STRICT`.
fn alerts(version: &str, temperature: f64) -> bool {
    match version {
        "1.0.0" => !(0.0..=40.0).contains(&temperature),
        v if v == strict_version().0 => !(5.0..=30.0).contains(&temperature),
        other => panic!("unknown version {other}"),
    }
}

/// Replaces `path` the way deployments do: write aside, then rename.
fn replace_atomically(path: &Path, bytes: &[u8]) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn plugin_list(admin: &str) -> serde_json::Value {
    let (status, body) = request(admin, "GET", "/plugins", None, b"").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn anomaly_entry(admin: &str) -> serde_json::Value {
    plugin_list(admin)
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "anomaly")
        .cloned()
        .expect("anomaly listed")
}

/// Waits until `GET /plugins` shows the anomaly plugin satisfying `ok`.
fn wait_for(admin: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let e = anomaly_entry(admin);
        if ok(&e) {
            return e;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}: {e}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swaps_under_load_lose_nothing_and_every_output_names_its_version() {
    let cluster = Cluster::start("swap", 2);
    let v1 = std::fs::read(support::plugin_path("anomaly")).unwrap();
    let (strict, digest) = strict_version();
    let rule = cluster.log_dir.join("anomaly.wasm");
    let settings = rule.with_extension("toml");
    std::fs::write(&rule, &v1).unwrap();
    let plugins = [
        support::plugin_path("enrich"),
        support::plugin_path("trend"),
        rule.clone(),
    ];
    let mut child = cluster.streamhost_with(
        "streamhost",
        &plugins,
        &["--batch-size", "100", "--admin-token", "s3cret"],
    );
    let admin = cluster.admin_addr("streamhost");
    cluster.wait_log("streamhost", "Partitions assigned", Duration::from_secs(30));

    // Continuous load: 100 readings every 10 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let cluster = Arc::new(cluster);
    let producer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            let mut positions = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let chunk: Vec<_> = (i..i + 100).map(reading).collect();
                positions.extend(cluster.produce(&chunk).await);
                i += 100;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            positions
        })
    };

    // Let the stream get going before the first swap.
    cluster.read(&cluster.enriched, Duration::from_secs(30), |r| {
        r.len() >= 500
    });

    // 20 swaps by atomic rename of the settings file beside the component,
    // alternating the strict configuration and none (an empty file).
    let mut landings: Vec<(i64, &str)> = Vec::new();
    for i in 0..20 {
        let (text, version) = if i % 2 == 0 {
            (STRICT, strict.as_str())
        } else {
            ("", "1.0.0")
        };
        let landed = now_ms();
        replace_atomically(&settings, text.as_bytes());
        landings.push((landed, version));
        let e = wait_for(&admin, version, |e| e["version"] == version);
        if i == 0 {
            assert_eq!(e["config_digest"], digest.as_str(), "{e}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(anomaly_entry(&admin)["version"], "1.0.0");

    // A half-written settings file (written in place, not renamed) leaves
    // the old version serving; completed, it serves.
    {
        use std::io::Write;
        let (head, tail) = STRICT.split_at(STRICT.len() - 3);
        let mut f = std::fs::File::create(&settings).unwrap();
        f.write_all(head.as_bytes()).unwrap();
        f.flush().unwrap();
        let e = wait_for(&admin, "a truncated-file failure", |e| {
            e["load_failures"] == 1
        });
        assert!(
            e["last_load_error"]
                .as_str()
                .unwrap()
                .contains("anomaly.toml"),
            "{e}"
        );
        assert_eq!(e["version"], "1.0.0");
        let landed = now_ms();
        f.write_all(tail.as_bytes()).unwrap();
        f.flush().unwrap();
        landings.push((landed, strict.as_str()));
        wait_for(&admin, "the completed file", |e| e["version"] == strict);
        // Let records flow through the fixed version before the next change.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Broken components leave the old version serving, and say why.
    replace_atomically(&rule, b"\0asm garbage that is not a component");
    let e = wait_for(&admin, "a corrupt-file failure", |e| {
        e["load_failures"] == 2
    });
    assert!(
        e["last_load_error"]
            .as_str()
            .unwrap()
            .contains("invalid component"),
        "{e}"
    );
    assert_eq!(e["version"], strict);

    replace_atomically(
        &rule,
        &std::fs::read(support::plugin_path("trend")).unwrap(),
    );
    let e = wait_for(&admin, "a wrong-world failure", |e| e["load_failures"] == 3);
    assert!(
        e["last_load_error"]
            .as_str()
            .unwrap()
            .contains("kind changed from anomaly to trend"),
        "{e}"
    );
    assert_eq!(e["version"], strict);
    let served_before = anomaly_entry(&admin)["sha256"].clone();

    // Admin calls without the token, or with a wrong one, change nothing.
    for token in [None, Some("wrong")] {
        let (status, body) = request(&admin, "PUT", "/plugins/anomaly", token, &v1).unwrap();
        assert_eq!(status, 401, "{body}");
        let (status, _) = request(&admin, "DELETE", "/plugins/anomaly", token, b"").unwrap();
        assert_eq!(status, 401);
    }
    assert_eq!(anomaly_entry(&admin)["sha256"], served_before);
    assert_eq!(plugin_list(&admin).as_array().unwrap().len(), 3);

    // With the token, the API replaces it (and names must match), written
    // over the broken file; the configuration beside it stays.
    let (status, body) =
        request(&admin, "PUT", "/plugins/other-name", Some("s3cret"), &v1).unwrap();
    assert_eq!(status, 422, "{body}");
    let (status, body) = request(&admin, "PUT", "/plugins/anomaly", Some("s3cret"), &v1).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read(&rule).unwrap(), v1);
    assert_eq!(anomaly_entry(&admin)["version"], strict);
    // The file slot serves on: a settings change after the put swaps.
    let landed = now_ms();
    replace_atomically(&settings, b"");
    landings.push((landed, "1.0.0"));
    wait_for(&admin, "the last swap", |e| e["version"] == "1.0.0");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    let positions = producer.await.unwrap();
    let n = positions.len();
    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(60), |r| r.len() >= n);
    // Read a little more to catch duplicates, had there been any.
    let status = terminate(&mut child);
    assert!(status.success());
    let alert_records = cluster.read(&cluster.alerts, Duration::from_secs(3), |_| false);

    // Exactly one enriched output per input, each naming one anomaly version.
    let mut version_of: HashMap<(i64, i64), (String, f64, i64)> = HashMap::new();
    for r in &enriched {
        let v = r.json();
        let s = &v["streamhost"];
        let pos = (
            s["source"]["partition"].as_i64().unwrap(),
            s["source"]["offset"].as_i64().unwrap(),
        );
        let version = s["plugins"]["anomaly"]
            .as_str()
            .expect("the anomaly version is named")
            .to_string();
        let processed =
            streamhost::decode::parse_time(v["processed_at"].as_str().unwrap()).unwrap();
        let prev = version_of.insert(
            pos,
            (version, v["temperature"].as_f64().unwrap(), processed),
        );
        assert!(prev.is_none(), "input {pos:?} has two enriched outputs");
    }
    assert_eq!(version_of.len(), n, "every input has an enriched output");
    for (p, o) in &positions {
        assert!(
            version_of.contains_key(&(*p as i64, *o)),
            "input {p}/{o} has no enriched output"
        );
    }

    // Alerts agree with the version their record's enriched output names.
    let mut alerted = HashMap::new();
    for a in &alert_records {
        let v = a.json();
        let pos = (
            v["source"]["partition"].as_i64().unwrap(),
            v["source"]["offset"].as_i64().unwrap(),
        );
        let (version, temperature, _) = &version_of[&pos];
        assert_eq!(
            v["rule_version"].as_str().unwrap(),
            version,
            "alert and enriched disagree at {pos:?}"
        );
        assert!(
            alerts(version, *temperature),
            "{version} should not alert on {temperature}"
        );
        alerted.insert(pos, ());
    }
    for (pos, (version, temperature, _)) in &version_of {
        assert_eq!(
            alerted.contains_key(pos),
            alerts(version, *temperature),
            "{pos:?}: {version} at {temperature}"
        );
    }

    // No restart: one start-up, one consumer session.
    assert_eq!(cluster.log("streamhost").matches("Consuming.").count(), 1);

    // Swap latency: file landing to the first record served by the new
    // version (processed_at is the batch's processing time).
    let mut latencies = Vec::new();
    for (i, (landed, version)) in landings.iter().enumerate() {
        let until = landings.get(i + 1).map_or(i64::MAX, |l| l.0);
        let first = version_of
            .values()
            .filter(|(v, _, at)| v == version && *at >= *landed && *at < until)
            .map(|(_, _, at)| *at)
            .min()
            .unwrap_or_else(|| {
                panic!("swap {i} to {version} served no record before the next swap")
            });
        latencies.push(first - landed);
    }
    latencies.sort();
    println!(
        "hot swap: {} swaps under load, {n} inputs, latency median {} ms, max {} ms",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}

/// Runs `streamhost plugins ...` with the options after the subcommand, as
/// the README writes them; returns its stdout.
fn plugins_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(support::bin("streamhost"))
        .arg("plugins")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "streamhost plugins {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `streamhost plugins ...`, which must fail; returns what it printed.
fn plugins_cli_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(support::bin("streamhost"))
        .arg("plugins")
        .args(args)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "streamhost plugins {args:?} succeeded"
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn puts_and_configuration_are_kept_on_disk_and_counts_outlive_swaps() {
    let cluster = Cluster::start("keep", 1);
    let v1_path = support::plugin_path("anomaly");
    let v1 = std::fs::read(&v1_path).unwrap();
    let (strict, _) = strict_version();
    let rule = cluster.log_dir.join("anomaly.wasm");
    std::fs::write(&rule, &v1).unwrap();
    let dir = cluster.log_dir.join("plugins.d");
    let dir_arg = dir.display().to_string();
    let args = [
        "--batch-size",
        "50",
        "--admin-token",
        "s3cret",
        "--plugin-dir",
        &dir_arg,
    ];
    let mut child = cluster.streamhost_with("first", std::slice::from_ref(&rule), &args);
    let admin = cluster.admin_addr("first");
    cluster.wait_log("first", "Partitions assigned", Duration::from_secs(30));
    let chunk: Vec<_> = (0..200).map(reading).collect();
    cluster.produce(&chunk).await;
    cluster.read(&cluster.enriched, Duration::from_secs(30), |r| {
        r.len() >= 200
    });

    // Put it again with limits of its own, options after the subcommand.
    let put = plugins_cli(&[
        "put",
        "anomaly",
        v1_path.to_str().unwrap(),
        "--admin",
        &admin,
        "--token",
        "s3cret",
        "--deadline",
        "250ms",
        "--memory-mib",
        "96",
    ]);
    let put: serde_json::Value = serde_json::from_str(&put).unwrap();
    assert_eq!(put["version"], "1.0.0");
    assert_eq!(put["stored"], rule.display().to_string());
    // Written over the file it was loaded from, limits beside it.
    assert_eq!(std::fs::read(&rule).unwrap(), v1);
    let limits = std::fs::read_to_string(rule.with_extension("toml")).unwrap();
    assert!(limits.contains("deadline = \"250ms\""), "{limits}");
    assert!(limits.contains("memory-mib = 96"), "{limits}");

    // A configuration the rule refuses changes nothing, and says why.
    let refused = plugins_cli_fails(&[
        "config",
        "anomaly",
        "temperature_max=abc",
        "--admin",
        &admin,
        "--token",
        "s3cret",
    ]);
    assert!(
        refused.contains(r#"temperature_max \"abc\" is not a number"#)
            || refused.contains(r#"temperature_max "abc" is not a number"#),
        "{refused}"
    );
    assert_eq!(anomaly_entry(&admin)["version"], "1.0.0");

    // The stricter thresholds, by configuration: a new version.
    let configured = plugins_cli(&[
        "config",
        "anomaly",
        "temperature_max=30",
        "temperature_min=5",
        "--admin",
        &admin,
        "--token",
        "s3cret",
    ]);
    let configured: serde_json::Value = serde_json::from_str(&configured).unwrap();
    assert_eq!(configured["configured"]["version"], strict, "{configured}");
    // Kept in the same file as the limits.
    let settings = std::fs::read_to_string(rule.with_extension("toml")).unwrap();
    for line in [
        "deadline = \"250ms\"",
        "memory-mib = 96",
        "[config]",
        "temperature_max = \"30\"",
        "temperature_min = \"5\"",
    ] {
        assert!(settings.contains(line), "{line} missing:\n{settings}");
    }

    // A new plugin goes into the plugin folder.
    let js = support::plugin_path("jump-js");
    plugins_cli(&[
        "put",
        "jump-js",
        js.to_str().unwrap(),
        "--admin",
        &admin,
        "--token",
        "s3cret",
    ]);
    assert_eq!(
        std::fs::read(dir.join("jump-js.wasm")).unwrap(),
        std::fs::read(&js).unwrap()
    );

    let chunk: Vec<_> = (200..400).map(reading).collect();
    cluster.produce(&chunk).await;
    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(30), |r| {
        r.len() >= 400
    });
    // The second 200 went through the configured version, which alerts
    // on what it should.
    let alert_records = cluster.read(&cluster.alerts, Duration::from_secs(3), |_| false);
    let mut by_version: HashMap<String, usize> = HashMap::new();
    for r in &enriched {
        let v = r.json();
        let version = v["streamhost"]["plugins"]["anomaly"].as_str().unwrap();
        *by_version.entry(version.to_string()).or_default() += 1;
    }
    assert_eq!(by_version.get(&strict), Some(&200), "{by_version:?}");
    let strict_alerts = alert_records
        .iter()
        .filter(|a| a.json()["rule_version"] == strict.as_str())
        .count();
    let expected = (200..400)
        .filter(|&i| alerts(&strict, 20.0 + (i % 26) as f64))
        .count();
    assert_eq!(strict_alerts, expected);

    // Every version keeps its counts; the plugin's are their sum.
    let e = anomaly_entry(&admin);
    assert_eq!(e["version"], strict.as_str());
    assert_eq!(e["deadline_ms"], 250.0);
    assert_eq!(e["memory_mib"], 96);
    let versions = e["versions"].as_array().unwrap();
    let serving: Vec<_> = versions.iter().filter(|v| v["serving"] == true).collect();
    assert_eq!(serving.len(), 1, "{e}");
    assert_eq!(serving[0]["version"], strict.as_str(), "{e}");
    assert!(
        versions
            .iter()
            .all(|v| v["serving"] == true || v["version"] == "1.0.0"),
        "{e}"
    );
    let records = |v: &serde_json::Value| v["records"].as_u64().unwrap();
    let plain: u64 = versions
        .iter()
        .filter(|v| v["version"] == "1.0.0")
        .map(records)
        .sum();
    assert!(plain >= 200 && records(serving[0]) >= 1, "{e}");
    assert_eq!(
        plain + records(serving[0]),
        400,
        "each record went through one version: {e}"
    );
    assert_eq!(
        e["calls"].as_u64().unwrap(),
        versions
            .iter()
            .map(|v| v["calls"].as_u64().unwrap())
            .sum::<u64>()
    );
    let (_, metrics) = request(&admin, "GET", "/metrics", None, b"").unwrap();
    for version in ["1.0.0", strict.as_str()] {
        let series = format!(
            "streamhost_plugin_calls_total{{plugin=\"anomaly\",version=\"{version}\",kind=\"anomaly\"}}"
        );
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    assert!(terminate(&mut child).success());

    // A restart serves what was served before it, configuration included.
    let mut child = cluster.streamhost_with("second", std::slice::from_ref(&rule), &args);
    let admin = cluster.admin_addr("second");
    cluster.wait_log("second", "Partitions assigned", Duration::from_secs(30));
    let e = anomaly_entry(&admin);
    assert_eq!(
        (e["version"].as_str(), e["deadline_ms"].as_f64()),
        (Some(strict.as_str()), Some(250.0))
    );
    let list = plugin_list(&admin);
    let jump = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "jump-js")
        .expect("jump-js is served again");
    assert_eq!(
        jump["origin"],
        dir.join("jump-js.wasm").display().to_string()
    );
    assert!(terminate(&mut child).success());
}
