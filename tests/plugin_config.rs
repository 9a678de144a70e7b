//! Plugin configuration, against the real broker and the real `anomaly`
//! component (its thresholds read through `wasi:config/store`): a change
//! through the admin API mid-stream, kept on disk and across a restart;
//! configurations the plugin refuses; new thresholds as a canary, then
//! promoted; secrets that are never shown; keys pinned by
//! `--plugin-config`. Every output is checked against a model computed
//! here: the thresholds that should have judged it, and the version (with
//! its configuration digest, computed here too) it must name.

use streamhost_testkit as support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use streamhost::cmd::plugins::request;
use support::kafka::{Cluster, terminate};

/// Event times start on a minute.
const T0: i64 = 1_795_500_000_000;
const TOKEN: &str = "cfg-token";
const SENSORS: usize = 20;
/// Readings per phase: every sensor with every temperature it gets.
const PHASE: usize = 260;
/// How long outputs may take to appear.
const OUTPUTS: Duration = Duration::from_secs(30);

/// The anomaly rule's thresholds.
#[derive(Clone, Copy, Debug)]
struct Thresholds {
    temperature_min: f64,
    temperature_max: f64,
    humidity_max: f64,
    battery_min: f64,
}

/// The article's thresholds: the rule's without configuration.
const ARTICLE: Thresholds = Thresholds {
    temperature_min: 0.0,
    temperature_max: 40.0,
    humidity_max: 90.0,
    battery_min: 0.2,
};

/// `temperature_max=30`, the other thresholds the article's.
const MAX_30: Thresholds = Thresholds {
    temperature_max: 30.0,
    ..ARTICLE
};

/// Reading `i`: sensor `i % 20`, one second after that sensor's previous
/// reading, the temperature cycling through 20..=45 °C; humidity and
/// battery normal (for the article's thresholds).
fn reading(i: usize) -> (String, Value) {
    let sensor = format!("sensor_{:03}", i % SENSORS);
    let v = json!({
        "sensor_id": sensor,
        "timestamp": T0 + (i / SENSORS) as i64 * 1000,
        "temperature": 20.0 + (i % 26) as f64,
        "humidity": 50.0,
        "battery_level": 0.9,
    });
    (sensor, v)
}

/// The alert kinds the rule raises for `v` under `t` (strict comparisons,
/// in the article's order).
fn kinds(t: &Thresholds, v: &Value) -> Vec<String> {
    let f = |name: &str| v[name].as_f64().unwrap();
    let mut out = Vec::new();
    if f("temperature") > t.temperature_max || f("temperature") < t.temperature_min {
        out.push("temperature_out_of_range".to_string());
    }
    if f("battery_level") < t.battery_min {
        out.push("low_battery".to_string());
    }
    if f("humidity") > t.humidity_max {
        out.push("high_humidity".to_string());
    }
    out
}

/// The digest a configured version carries, computed here from its
/// definition: SHA-256 over every key in key order (the key, a zero byte,
/// then 1 for a secret, or 2 and the value for a plain one, then a zero
/// byte), its first four bytes in hex.
fn digest(plain: &[(&str, &str)], secret: &[&str]) -> String {
    let mut keys: BTreeMap<&str, Option<&str>> =
        plain.iter().map(|(k, v)| (*k, Some(*v))).collect();
    for k in secret {
        keys.insert(k, None);
    }
    let mut h = Sha256::new();
    for (k, v) in keys {
        h.update(k.as_bytes());
        h.update([0]);
        match v {
            None => h.update([1]),
            Some(v) => {
                h.update([2]);
                h.update(v.as_bytes());
            }
        }
        h.update([0]);
    }
    h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The version outputs name when the rule runs with this configuration.
fn configured(plain: &[(&str, &str)], secret: &[&str]) -> String {
    format!("1.0.0+cfg.{}", digest(plain, secret))
}

/// What one input must come out as.
struct Want {
    key: String,
    temperature: f64,
    /// The version that judges it.
    version: String,
    /// Its alert kinds under that version's thresholds.
    kinds: Vec<String>,
}

/// What every input produced so far must come out as, by source position.
type Wants = HashMap<(i32, i64), Want>;

/// Produces readings `range`, keyed by sensor; records in `want` what each
/// must come out as, `judge` naming the version and thresholds for a key.
async fn produce(
    c: &Cluster,
    range: Range<usize>,
    judge: impl Fn(&str) -> (String, Thresholds),
    want: &mut Wants,
) {
    let readings: Vec<_> = range.clone().map(reading).collect();
    let positions = c.produce_json(&readings).await;
    for (i, (p, o)) in range.zip(positions) {
        let (key, v) = reading(i);
        let (version, t) = judge(&key);
        let w = Want {
            temperature: v["temperature"].as_f64().unwrap(),
            kinds: kinds(&t, &v),
            key,
            version,
        };
        assert!(want.insert((p, o), w).is_none());
    }
}

/// Every key judged by `version` with thresholds `t`.
fn all(version: &str, t: Thresholds) -> impl Fn(&str) -> (String, Thresholds) {
    let version = version.to_string();
    move |_| (version.clone(), t)
}

/// Waits for the outputs of every input in `want`, then reads both output
/// topics whole and checks them: exactly one enriched output per input,
/// naming the version that should have judged it and that version's alert
/// kinds; exactly one alert per input with kinds, naming the same version
/// as `rule_version`, and none for the others.
fn check_outputs(c: &Cluster, want: &Wants, stage: &str) {
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
        assert_eq!(
            v["streamhost"]["plugins"]["anomaly"],
            w.version.as_str(),
            "{stage}: the version that judged {} at {} °C ({at:?}): {v}",
            w.key,
            w.temperature
        );
        assert_eq!(
            v["streamhost"]["alerts"],
            json!(w.kinds),
            "{stage}: the alert kinds of {} at {} °C under {} ({at:?}): {v}",
            w.key,
            w.temperature,
            w.version
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, k)| **k > 1).collect();
    assert!(
        twice.is_empty(),
        "{stage}: inputs with more than one enriched output: {twice:?}"
    );
    let missing: Vec<_> = want.keys().filter(|at| !seen.contains_key(at)).collect();
    assert!(
        missing.is_empty(),
        "{stage}: {} of {n} inputs have no enriched output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    let alerting = want.values().filter(|w| !w.kinds.is_empty()).count();
    c.read(&c.alerts, OUTPUTS, |r| r.len() >= alerting);
    let alerts = c.read_all(&c.alerts, OUTPUTS);
    let mut alerted = BTreeSet::new();
    for a in &alerts {
        let (at, v) = (a.source(), a.json());
        let w = want
            .get(&at)
            .unwrap_or_else(|| panic!("{stage}: an alert of no input: {v}"));
        assert!(
            !w.kinds.is_empty(),
            "{stage}: {} must not alert on {} at {} °C ({at:?}): {v}",
            w.version,
            w.key,
            w.temperature
        );
        assert_eq!(
            v["rule_version"],
            w.version.as_str(),
            "{stage}: {at:?}: {v}"
        );
        assert_eq!(v["anomalies"], json!(w.kinds), "{stage}: {at:?}: {v}");
        assert!(alerted.insert(at), "{stage}: two alerts for {at:?}: {v}");
    }
    assert_eq!(
        alerted.len(),
        alerting,
        "{stage}: inputs that must alert under their version's thresholds"
    );
}

/// The settings file beside `rule`, if there is one.
fn settings_of(rule: &Path) -> Option<String> {
    std::fs::read_to_string(rule.with_extension("toml")).ok()
}

/// streamhost on `c` with `rule` as its only plugin, an admin token and
/// batches of 100; its admin address.
fn start(c: &Cluster, log: &str, rule: &Path, extra: &[&str]) -> (Child, String) {
    let mut args = vec!["--admin-token", TOKEN, "--batch-size", "100"];
    args.extend(extra);
    let child = c.streamhost_with(log, &[rule.to_path_buf()], &args);
    (child, c.admin_addr(log))
}

/// The anomaly plugin as `GET /plugins` shows it.
fn anomaly(admin: &str) -> Value {
    let (status, body) = request(admin, "GET", "/plugins", None, b"").unwrap();
    assert_eq!(status, 200, "GET /plugins: {body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "anomaly")
        .cloned()
        .unwrap_or_else(|| panic!("no anomaly plugin in {list:#}"))
}

/// `PUT /plugins/anomaly/config[?query]` with the token; the status and
/// the answer.
fn put_config(admin: &str, query: &str, change: Value) -> (u16, Value) {
    let path = match query {
        "" => "/plugins/anomaly/config".to_string(),
        q => format!("/plugins/anomaly/config?{q}"),
    };
    let (status, body) = request(
        admin,
        "PUT",
        &path,
        Some(TOKEN),
        change.to_string().as_bytes(),
    )
    .unwrap();
    let answer = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("PUT {path} {change}: {status} {body:?}: {e}"));
    (status, answer)
}

/// `streamhost plugins ARGS` against `admin`, run as a process.
fn plugins_cli(admin: &str, args: &[&str]) -> Output {
    Command::new(support::bin("streamhost"))
        .arg("plugins")
        .args(args)
        .args(["--admin", admin, "--token", TOKEN])
        .output()
        .unwrap()
}

/// Checks a refused change: 422, naming `message`, the serving version and
/// its configuration untouched.
fn assert_refused(admin: &str, change: Value, message: &str) {
    let (status, answer) = put_config(admin, "", change.clone());
    assert_eq!(status, 422, "{change} must be refused: {answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(message),
        "the refusal of {change} must say {message:?}: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_change_mid_stream_judges_each_record_once_by_the_version_of_its_time() {
    let c = Cluster::start("cfg-change", 2);
    let rule = c.plugin_copy("anomaly");
    let (mut sh, admin) = start(&c, "first", &rule, &[]);
    let new = configured(&[("temperature_max", "30")], &[]);
    let mut want = Wants::new();

    // Phase 1, under the article's thresholds, all of it out before the
    // change.
    produce(&c, 0..PHASE, all("1.0.0", ARTICLE), &mut want).await;
    check_outputs(&c, &want, "phase 1 (1.0.0)");
    assert!(settings_of(&rule).is_none(), "no settings file yet");

    let (status, answer) = put_config(&admin, "", json!({"set": {"temperature_max": "30"}}));
    assert_eq!(status, 200, "{answer}");
    let done = &answer["configured"];
    assert_eq!(done["version"], new.as_str(), "{answer:#}");
    assert_eq!(
        done["config_digest"],
        new.strip_prefix("1.0.0+cfg.").unwrap(),
        "{answer:#}"
    );
    assert_eq!(done["rule_version"], "1.0.0", "{answer:#}");
    assert_eq!(
        done["config"],
        json!({"temperature_max": "30"}),
        "{answer:#}"
    );
    assert_eq!(done["stored"], rule.display().to_string(), "{answer:#}");

    // Kept beside the component, which is untouched.
    let settings = settings_of(&rule).expect("anomaly.toml written beside anomaly.wasm");
    assert!(
        settings.contains("[config]\ntemperature_max = \"30\"\n"),
        "anomaly.toml:\n{settings}"
    );
    let file = streamhost::rules::registry::read_plugin_file(&rule).unwrap();
    assert_eq!(
        file.config.iter().collect::<Vec<_>>(),
        [("temperature_max", "30")]
    );
    assert_eq!(
        std::fs::read(&rule).unwrap(),
        std::fs::read(support::plugin_path("anomaly")).unwrap()
    );
    let e = anomaly(&admin);
    assert_eq!(e["version"], new.as_str(), "{e:#}");
    assert_eq!(e["config"], json!({"temperature_max": "30"}), "{e:#}");
    assert_eq!(e["config_digest"], done["config_digest"], "{e:#}");

    // Phase 2, produced after the answer: every record under the new
    // thresholds, none lost or judged twice.
    produce(&c, PHASE..2 * PHASE, all(&new, MAX_30), &mut want).await;
    check_outputs(&c, &want, "phase 2 (temperature_max=30)");
    let versions: BTreeSet<&str> = e["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, BTreeSet::from(["1.0.0", new.as_str()]), "{e:#}");
    assert!(terminate(&mut sh).success(), "{}", c.log("first"));

    // A restart serves the configuration kept on disk.
    let (mut sh, admin) = start(&c, "second", &rule, &[]);
    let e = anomaly(&admin);
    assert_eq!(e["version"], new.as_str(), "after a restart: {e:#}");
    assert_eq!(e["config"], json!({"temperature_max": "30"}), "{e:#}");
    produce(&c, 2 * PHASE..3 * PHASE, all(&new, MAX_30), &mut want).await;
    check_outputs(&c, &want, "phase 3 (after a restart)");
    assert!(terminate(&mut sh).success(), "{}", c.log("second"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_configuration_says_why_and_the_serving_version_goes_on() {
    let c = Cluster::start("cfg-refused", 2);
    let rule = c.plugin_copy("anomaly");
    let (mut sh, admin) = start(&c, "streamhost", &rule, &[]);
    let mut want = Wants::new();
    produce(&c, 0..PHASE, all("1.0.0", ARTICLE), &mut want).await;
    check_outputs(&c, &want, "before the refusals");

    assert_refused(
        &admin,
        json!({"set": {"temperature_max": "hot"}}),
        r#"temperature_max "hot" is not a number"#,
    );
    assert_refused(
        &admin,
        json!({"set": {"temperature_min": "50"}}),
        "temperature_min 50 is not below temperature_max 40",
    );
    // Through the command line too: it fails, with the plugin's message.
    let out = plugins_cli(&admin, &["config", "anomaly", "temperature_max=hot"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the CLI must fail: {said}");
    assert!(
        said.contains("422") && said.contains("is not a number"),
        "the CLI must say why: {said}"
    );

    // Nothing changed: not the serving version, not the disk.
    let e = anomaly(&admin);
    assert_eq!(e["version"], "1.0.0", "{e:#}");
    assert_eq!(e["config"], json!({}), "{e:#}");
    assert!(e["config_digest"].is_null(), "{e:#}");
    assert!(
        settings_of(&rule).is_none(),
        "a refused configuration was written:\n{}",
        settings_of(&rule).unwrap()
    );
    assert_eq!(
        std::fs::read(&rule).unwrap(),
        std::fs::read(support::plugin_path("anomaly")).unwrap()
    );
    produce(&c, PHASE..2 * PHASE, all("1.0.0", ARTICLE), &mut want).await;
    check_outputs(&c, &want, "after the refusals");
    assert!(terminate(&mut sh).success(), "{}", c.log("streamhost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_of_new_thresholds_judges_exactly_the_selected_keys_until_promoted() {
    let c = Cluster::start("cfg-canary", 2);
    let rule = c.plugin_copy("anomaly");
    let (mut sh, admin) = start(&c, "streamhost", &rule, &[]);
    let new = configured(&[("temperature_max", "30")], &[]);

    let (status, answer) = put_config(
        &admin,
        "canary=30",
        json!({"set": {"temperature_max": "30"}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["candidate"]["version"], new.as_str(), "{answer:#}");
    assert!(
        settings_of(&rule).is_none(),
        "a configuration on trial stays in memory"
    );

    // The keys the canary serves, by the documented stable hash; checked
    // against the first eight bytes of SHA-256, big-endian, mod 10,000.
    let sensors: Vec<String> = (0..SENSORS).map(|k| format!("sensor_{k:03}")).collect();
    let selected: BTreeSet<String> = sensors
        .iter()
        .filter(|k| streamhost::rules::trial::selects(30.0, k))
        .cloned()
        .collect();
    for k in &sensors {
        let d = Sha256::digest(k.as_bytes());
        let head = u64::from_be_bytes(d[..8].try_into().unwrap());
        assert_eq!(selected.contains(k), head % 10_000 < 3000, "{k}");
    }
    assert!(
        (2..SENSORS - 2).contains(&selected.len()),
        "the data must tell the versions apart: {selected:?}"
    );

    let mut want = Wants::new();
    let judge = |key: &str| {
        if selected.contains(key) {
            (new.clone(), MAX_30)
        } else {
            ("1.0.0".to_string(), ARTICLE)
        }
    };
    produce(&c, 0..2 * PHASE, judge, &mut want).await;
    check_outputs(&c, &want, "canary 30%");
    let e = anomaly(&admin);
    let by_candidate = want.values().filter(|w| w.version == new).count();
    assert_eq!(e["version"], "1.0.0", "{e:#}");
    assert_eq!(e["trial"]["version"], new.as_str(), "{e:#}");
    assert_eq!(e["trial"]["candidate"]["records"], by_candidate, "{e:#}");
    assert_eq!(
        e["trial"]["serving"]["records"],
        want.len() - by_candidate,
        "{e:#}"
    );

    let (status, body) =
        request(&admin, "POST", "/plugins/anomaly/promote", Some(TOKEN), b"").unwrap();
    assert_eq!(status, 200, "promote: {body}");
    let e = anomaly(&admin);
    assert_eq!(e["version"], new.as_str(), "{e:#}");
    assert!(e["trial"].is_null(), "{e:#}");
    let settings = settings_of(&rule).expect("promotion keeps the configuration on disk");
    assert!(
        settings.contains("[config]\ntemperature_max = \"30\"\n"),
        "anomaly.toml:\n{settings}"
    );
    produce(&c, 2 * PHASE..3 * PHASE, all(&new, MAX_30), &mut want).await;
    check_outputs(&c, &want, "promoted");
    assert!(terminate(&mut sh).success(), "{}", c.log("streamhost"));
}

/// The secret values these tests set.
const SECRETS: [&str; 2] = ["hunter2", "correct-horse-battery"];

/// Asserts `text` holds none of `SECRETS`.
fn shows_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_plugin_and_are_never_shown() {
    let c = Cluster::start("cfg-secret", 2);
    let rule = c.plugin_copy("anomaly");
    let stdout = c.log_dir.join("streamhost.stdout");
    let args = ["--admin-token", TOKEN, "--batch-size", "100"];
    let mut sh = c
        .streamhost_command("streamhost", std::slice::from_ref(&rule), &args)
        .env("RUST_LOG", "info,streamhost=debug")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .spawn()
        .unwrap();
    let admin = c.admin_addr("streamhost");

    // By the command line, as a process: a plain value and a secret.
    let out = plugins_cli(
        &admin,
        &[
            "config",
            "anomaly",
            "temperature_max=30",
            "--secret",
            "token=hunter2",
        ],
    );
    let (said, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "streamhost plugins config: {err}");
    shows_no_secret("the CLI's answer", &format!("{said}{err}"));
    let answer: Value = serde_json::from_str(&said).unwrap();
    let with_token = configured(&[("temperature_max", "30")], &["token"]);
    assert_eq!(
        answer["configured"]["version"],
        with_token.as_str(),
        "{said}"
    );
    assert_eq!(
        answer["configured"]["config"],
        json!({"temperature_max": "30", "token": "(secret)"}),
        "{said}"
    );

    // By the JSON API: another secret.
    let (status, answer) = put_config(
        &admin,
        "",
        json!({"secrets": {"api_key": "correct-horse-battery"}}),
    );
    assert_eq!(status, 200, "{answer}");
    shows_no_secret("the API's answer", &answer.to_string());
    let new = configured(&[("temperature_max", "30")], &["api_key", "token"]);
    assert_eq!(answer["configured"]["version"], new.as_str(), "{answer:#}");
    // A secret value the plugin refuses: its message goes back to the
    // caller who sent it, and must leave no trace anywhere else (checked
    // below).
    let (status, answer) = put_config(&admin, "", json!({"secrets": {"battery_min": "hunter2"}}));
    assert_eq!(status, 422, "{answer}");
    assert_eq!(anomaly(&admin)["version"], new.as_str());

    // Kept on disk (the file holds them in clear, under [secrets]).
    let settings = settings_of(&rule).expect("anomaly.toml");
    assert!(
        settings.contains("[config]\ntemperature_max = \"30\"\n")
            && settings
                .contains("[secrets]\napi_key = \"correct-horse-battery\"\ntoken = \"hunter2\"\n"),
        "anomaly.toml:\n{settings}"
    );

    // The plugin serves with them.
    let mut want = Wants::new();
    produce(&c, 0..PHASE, all(&new, MAX_30), &mut want).await;
    check_outputs(&c, &want, "with secrets");
    for topic in [&c.enriched, &c.alerts, &c.dlq] {
        for r in c.read_all(topic, OUTPUTS) {
            shows_no_secret(topic, &String::from_utf8_lossy(&r.payload));
        }
    }

    // Shown nowhere: the plugin list (API and CLI), the console, metrics.
    let e = anomaly(&admin);
    assert_eq!(
        e["config"],
        json!({"temperature_max": "30", "api_key": "(secret)", "token": "(secret)"}),
        "{e:#}"
    );
    for path in ["/plugins", "/console/state", "/metrics"] {
        let (status, body) = request(&admin, "GET", path, None, b"").unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        shows_no_secret(&format!("GET {path}"), &body);
    }
    let out = plugins_cli(&admin, &["list"]);
    assert!(out.status.success());
    shows_no_secret(
        "streamhost plugins list",
        &String::from_utf8_lossy(&out.stdout),
    );

    // Nor in the log, which did record the changes.
    assert!(terminate(&mut sh).success(), "{}", c.log("streamhost"));
    let log = c.log("streamhost");
    assert!(
        log.contains("Plugin swapped.") && log.contains(&new),
        "the log must record the change to {new}:\n{log}"
    );
    shows_no_secret("streamhost's log (stderr)", &log);
    shows_no_secret(
        "streamhost's stdout",
        &std::fs::read_to_string(&stdout).unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_config_on_the_command_line_serves_from_the_first_record_and_cannot_be_changed() {
    let c = Cluster::start("cfg-pinned", 2);
    let rule = c.plugin_copy("anomaly");
    let (mut sh, admin) = start(
        &c,
        "streamhost",
        &rule,
        &["--plugin-config", "anomaly.temperature_max=30"],
    );
    let pinned = configured(&[("temperature_max", "30")], &[]);
    let e = anomaly(&admin);
    assert_eq!(e["version"], pinned.as_str(), "{e:#}");
    assert_eq!(e["config"], json!({"temperature_max": "30"}), "{e:#}");

    let mut want = Wants::new();
    produce(&c, 0..PHASE, all(&pinned, MAX_30), &mut want).await;
    check_outputs(&c, &want, "--plugin-config");

    // A change touching the pinned key is refused, set or unset, through
    // the API and the command line.
    for change in [
        json!({"set": {"temperature_max": "35"}}),
        json!({"unset": ["temperature_max"]}),
        json!({"set": {"humidity_max": "45"}, "secrets": {"temperature_max": "35"}}),
    ] {
        assert_refused(&admin, change, "--plugin-config");
    }
    let out = plugins_cli(&admin, &["config", "anomaly", "temperature_max=35"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("--plugin-config"),
        "the CLI must fail and name --plugin-config: {said}"
    );
    assert_eq!(anomaly(&admin)["version"], pinned.as_str());
    assert!(settings_of(&rule).is_none(), "nothing written to disk");

    // Another key may change; the pinned one stays, and only the plugin's
    // own key is kept on disk.
    let (status, answer) = put_config(&admin, "", json!({"set": {"humidity_max": "45"}}));
    assert_eq!(status, 200, "{answer}");
    let both = configured(&[("humidity_max", "45"), ("temperature_max", "30")], &[]);
    assert_eq!(answer["configured"]["version"], both.as_str(), "{answer:#}");
    let settings = settings_of(&rule).expect("anomaly.toml");
    assert!(
        settings.contains("[config]\nhumidity_max = \"45\"\n") && !settings.contains("temperature"),
        "only the plugin's own configuration is kept on disk:\n{settings}"
    );
    let strict = Thresholds {
        humidity_max: 45.0,
        ..MAX_30
    };
    produce(&c, PHASE..2 * PHASE, all(&both, strict), &mut want).await;
    check_outputs(&c, &want, "--plugin-config and humidity_max=45");
    assert!(terminate(&mut sh).success(), "{}", c.log("streamhost"));
}

/// Replaces `path` the way deployments do: write aside, then rename.
fn replace_atomically(path: &Path, text: &str) {
    let aside = path.with_extension("toml.tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// Secrets kept in the settings file (`[secrets]`) are secrets too: when
/// the plugin refuses one, quoting its value in its message (the anomaly
/// rule says `temperature_min "VALUE" is not a number`), that value must
/// not be shown by `GET /plugins`, the metrics or the log, on a reload or
/// at start-up.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_secret_from_the_settings_file_is_not_shown_either() {
    let c = Cluster::start("cfg-secret-file", 2);
    let rule = c.plugin_copy("anomaly");
    let settings = rule.with_extension("toml");
    replace_atomically(
        &settings,
        "[config]\ntemperature_max = \"30\"\n[secrets]\ntoken = \"correct-horse-battery\"\n",
    );
    let (mut sh, admin) = start(&c, "streamhost", &rule, &[]);
    let serving = configured(&[("temperature_max", "30")], &["token"]);
    assert_eq!(anomaly(&admin)["version"], serving.as_str());

    // A secret the plugin refuses, by the watcher.
    replace_atomically(
        &settings,
        "[config]\ntemperature_max = \"30\"\n[secrets]\ntemperature_min = \"hunter2\"\n",
    );
    let started = std::time::Instant::now();
    while anomaly(&admin)["load_failures"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the refused settings file was never noticed: {:#}",
            anomaly(&admin)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut want = Wants::new();
    produce(&c, 0..PHASE, all(&serving, MAX_30), &mut want).await;
    check_outputs(&c, &want, "after a refused settings file");

    // Where the secret shows, all at once.
    let mut shown = Vec::new();
    for path in ["/plugins", "/console/state", "/metrics"] {
        let (_, body) = request(&admin, "GET", path, None, b"").unwrap();
        if body.contains("hunter2") {
            shown.push(format!("GET {path}: {}", excerpt(&body, "hunter2")));
        }
    }
    assert!(terminate(&mut sh).success(), "{}", c.log("streamhost"));
    let log = c.log("streamhost");
    if log.contains("hunter2") {
        shown.push(format!("the log: {}", excerpt(&log, "hunter2")));
    }
    // At start-up, the file is refused: streamhost says why, not what.
    let mut again = c.streamhost_with("restart", std::slice::from_ref(&rule), &[]);
    let status = wait_exit(&mut again, Duration::from_secs(30));
    assert!(
        !status.success(),
        "a refused configuration must stop start-up"
    );
    let log = c.log("restart");
    assert!(log.contains("refused its configuration"), "{log}");
    if log.contains("hunter2") {
        shown.push(format!("the start-up error: {}", excerpt(&log, "hunter2")));
    }
    assert!(
        shown.is_empty(),
        "a secret value from [secrets] is shown:\n{}",
        shown.join("\n")
    );
}

/// The text around the first `needle` in `text`.
fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap();
    let start = text.floor_char_boundary(at.saturating_sub(160));
    let end = text.ceil_char_boundary((at + 60).min(text.len()));
    format!("…{}…", &text[start..end])
}

/// Waits for `child` to end, killing it after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > timeout {
            child.kill().unwrap();
            panic!("streamhost did not stop within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
