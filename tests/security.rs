//! streamhost over TLS and SASL/SCRAM against the real broker: Nisshi with a
//! TLS listener (a CA and a server certificate made here with rcgen) and
//! SCRAM users kept on SQLite storage.
//!
//! What is checked: the whole pipeline over TLS, and over TLS with
//! SCRAM-SHA-512 configured in a TOML file as the README shows it; a
//! plaintext client, a wrong password and a CA that did not sign the
//! broker's certificate end streamhost promptly with a message that says
//! what is wrong; and the password and key password never
//! appear in the logs (at debug level, with librdkafka's security debugging
//! on), in `GET /plugins`, in `/metrics` or in an error message.

use streamhost_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use support::broker::{Broker, Options};
use support::kafka::{Cluster, Read};

const T0: i64 = 1_795_500_000_000; // 2026-11-24T06:00:00Z
const USER: &str = "streamhost";
const PASSWORD: &str = "pw-7f3a91c0e2-not-in-logs";
/// A private key's passphrase, given as librdkafka's `ssl.key.password`.
/// Nisshi asks for no client certificate, so it is unused, but it is a
/// secret streamhost must not show.
const KEY_PASSWORD: &str = "kp-5d20b7e4c1-not-in-logs";

/// A CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "streamhost test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    // The SAN must match the host clients connect to and the broker
    // advertises.
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
    }
}

fn tls_client(pki: &Pki) -> Vec<(String, String)> {
    vec![
        ("security.protocol".into(), "ssl".into()),
        ("ssl.ca.location".into(), pki.ca.display().to_string()),
    ]
}

fn scram_client(pki: &Pki, password: &str) -> Vec<(String, String)> {
    let mut props = tls_client(pki);
    props[0].1 = "sasl_ssl".into();
    props.extend([
        ("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string()),
        ("sasl.username".to_string(), USER.to_string()),
        ("sasl.password".to_string(), password.to_string()),
    ]);
    props
}

/// A broker serving TLS only, with fresh topics.
fn tls_cluster(name: &str) -> (Cluster, Pki) {
    let dir = Cluster::log_dir(name);
    let pki = pki(&dir);
    let options = Options {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        ..Options::default()
    };
    let broker =
        Broker::start_with(&support::nisshi(), Some(&dir.join("broker.log")), &options).unwrap();
    let client = tls_client(&pki);
    (Cluster::on(name, 2, broker, dir, client), pki)
}

/// A broker serving TLS and requiring SCRAM, with a user made first: on
/// SQLite storage, the broker is started plain to create the user, then
/// again on the same port and file with TLS and authentication.
fn scram_cluster(name: &str) -> (Cluster, Pki) {
    let dir = Cluster::log_dir(name);
    let pki = pki(&dir);
    let log = dir.join("broker.log");
    let plain = Options {
        storage: Some("sqlite://nisshi.db".into()),
        dir: Some(dir.clone()),
        ..Options::default()
    };
    let port = {
        let broker = Broker::start_with(&support::nisshi(), Some(&log), &plain).unwrap();
        broker.create_user(USER, PASSWORD, "scram512").unwrap();
        broker.port
    };
    let secured = Options {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        authentication: true,
        port: Some(port),
        ..plain
    };
    let broker = Broker::start_with(&support::nisshi(), Some(&log), &secured).unwrap();
    let client = scram_client(&pki, PASSWORD);
    (Cluster::on(name, 2, broker, dir, client), pki)
}

/// Readings of one sensor every 10 s, all within one 5-minute window, every
/// fifth one over 40 °C.
fn readings(n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let t = chrono::DateTime::from_timestamp_millis(T0 + i as i64 * 10_000).unwrap();
            let json = serde_json::json!({
                "sensor_id": "sensor_001",
                "timestamp": t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "temperature": temperature(i),
                "humidity": 50.0,
                "pressure": 1010.0,
                "battery_level": 0.9,
            });
            (
                Some("sensor_001".to_string()),
                json.to_string().into_bytes(),
            )
        })
        .collect()
}

fn temperature(i: usize) -> f64 {
    if i % 5 == 4 { 45.0 } else { 20.0 + i as f64 }
}

/// Checks the outputs of `readings(n)`: one enriched record each, with the
/// window count and mean temperature of the readings up to it, and one
/// `temperature_out_of_range` alert per hot reading.
fn check_outputs(c: &Cluster, n: usize) {
    let enriched = c.read(&c.enriched, Duration::from_secs(30), |r| r.len() >= n);
    assert_eq!(enriched.len(), n, "enriched records");
    let mut by_time: Vec<&Read> = enriched.iter().collect();
    by_time.sort_by_key(|r| r.json()["timestamp"].as_str().unwrap().to_string());
    for (i, r) in by_time.iter().enumerate() {
        let v = r.json();
        let window = &v["streamhost"]["window"];
        assert_eq!(window["count"], i + 1, "window count of reading {i}: {v}");
        let mean = (0..=i).map(temperature).sum::<f64>() / (i + 1) as f64;
        let got = window["fields"]["temperature"]["mean"].as_f64().unwrap();
        assert!(
            (got - mean).abs() < 1e-9,
            "mean of reading {i}: {got} vs {mean}"
        );
    }
    let hot = (0..n).filter(|&i| temperature(i) > 40.0).count();
    let alerts = c.read(&c.alerts, Duration::from_secs(30), |r| r.len() >= hot);
    assert_eq!(alerts.len(), hot, "alerts");
    for a in &alerts {
        let kinds = a.json()["anomalies"].to_string();
        assert!(kinds.contains("temperature_out_of_range"), "{kinds}");
    }
}

/// streamhost's own last words: the error it exits with.
fn exit_error(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| l.starts_with("streamhost: error:"))
        .unwrap_or_else(|| panic!("no `streamhost: error:` line:\n{log}"))
}

/// Waits for a child to exit, up to `timeout`; kills it past that.
fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// How a streamhost run that must fail ended.
struct Stopped {
    took: Duration,
    log: String,
    /// Its `streamhost: error:` line.
    error: String,
}

/// Runs streamhost with librdkafka properties `props` and waits for it to
/// exit, which it must, with an error.
fn run_to_failure(c: &Cluster, props: &[(String, String)]) -> Stopped {
    let args = x_args(props);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut sh = c.streamhost("streamhost", &args);
    let status = exit_within(&mut sh, Duration::from_secs(60));
    let took = started.elapsed();
    let log = c.log("streamhost");
    let status = status.unwrap_or_else(|| panic!("still running after 60 s:\n{log}"));
    assert!(!status.success(), "{log}");
    let error = exit_error(&log).to_string();
    Stopped { took, log, error }
}

fn x_args(props: &[(String, String)]) -> Vec<String> {
    props
        .iter()
        .flat_map(|(k, v)| ["-X".to_string(), format!("{k}={v}")])
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_pipeline_runs_over_tls() {
    let (c, pki) = tls_cluster("tls");
    let n = 20;
    c.produce(&readings(n)).await;
    let mut args = x_args(&tls_client(&pki));
    args.extend(["--max-records".to_string(), n.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sh = c.streamhost("streamhost", &args);
    let status = exit_within(&mut sh, Duration::from_secs(90));
    assert_eq!(
        status.map(|s| s.success()),
        Some(true),
        "{}",
        c.log("streamhost")
    );
    check_outputs(&c, n);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_client_on_the_tls_port_stops_with_a_clear_error() {
    let (c, _pki) = tls_cluster("plain-on-tls");
    let Stopped { took, error, .. } = run_to_failure(&c, &[]);
    assert!(
        error.contains("TLS listener") && error.contains("security.protocol=ssl"),
        "the error names the fix: {error}"
    );
    assert!(took < Duration::from_secs(20), "stopped after {took:?}");
    eprintln!("plaintext client stopped after {took:?}: {error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_over_tls_from_a_toml_file_runs_end_to_end_and_keeps_secrets() {
    let (c, pki) = scram_cluster("scram");
    let n = 20;
    c.produce(&readings(n)).await;
    // The README's worked example, with this test's paths.
    let config = c.log_dir.join("streamhost.toml");
    std::fs::write(
        &config,
        format!(
            r#"brokers = "{brokers}"

[librdkafka]
"security.protocol" = "sasl_ssl"
"ssl.ca.location" = "{ca}"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "{USER}"
"sasl.password" = "{PASSWORD}"
"ssl.key.password" = "{KEY_PASSWORD}"
"debug" = "security,broker"
"#,
            brokers = c.broker.bootstrap(),
            ca = pki.ca.display(),
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    // Without --max-records, so that the admin API can be asked while it
    // runs; at debug level, so that librdkafka's security debugging shows.
    let plugins = ["enrich", "trend", "anomaly"].map(support::plugin_path);
    let mut sh = c
        .streamhost_command("streamhost", &plugins, &["--config", &config])
        .env("RUST_LOG", "debug")
        .spawn()
        .unwrap();
    check_outputs(&c, n);
    let admin = c.admin_addr("streamhost");
    let plugins = streamhost::cmd::plugins::request(&admin, "GET", "/plugins", None, b"").unwrap();
    let metrics = streamhost::cmd::plugins::request(&admin, "GET", "/metrics", None, b"").unwrap();
    assert_eq!(plugins.0, 200);
    assert_eq!(metrics.0, 200);
    support::kafka::terminate(&mut sh);
    let log = c.log("streamhost");
    assert!(
        log.contains("SASL") || log.contains("sasl"),
        "librdkafka's security debugging was logged:\n{log}"
    );
    for (what, text) in [
        ("log", &log),
        ("/plugins", &plugins.1),
        ("/metrics", &metrics.1),
    ] {
        for secret in [PASSWORD, KEY_PASSWORD] {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_stops_promptly_and_names_authentication() {
    let (c, pki) = scram_cluster("wrong-password");
    let wrong = "wrong-9c1e55d7-not-in-logs";
    let Stopped { took, log, error } = run_to_failure(&c, &scram_client(&pki, wrong));
    assert!(
        error.contains("authentication failed") && error.contains("sasl.password"),
        "the error names authentication: {error}"
    );
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}:\n{log}"
    );
    let failures = log
        .lines()
        .filter(|l| l.to_lowercase().contains("authentication"))
        .count();
    assert!(failures <= 10, "{failures} lines of retries:\n{log}");
    assert!(!log.contains(wrong), "the log shows the password:\n{log}");
    eprintln!(
        "wrong password stopped after {took:?}, {failures} log lines on authentication: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_stops_promptly_and_names_tls() {
    let (c, _pki) = tls_cluster("wrong-ca");
    // A CA that did not sign the broker's certificate.
    let other = c.log_dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let stranger = pki(&other);
    let Stopped { took, error, .. } = run_to_failure(&c, &tls_client(&stranger));
    assert!(
        error.contains("TLS handshake") && error.contains("ssl.ca.location"),
        "the error names TLS: {error}"
    );
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    eprintln!("wrong CA stopped after {took:?}: {error}");
}
