//! Faults around the broker and the topics, against the real broker: what
//! stops streamhost, what does not, and how fast.

use streamhost_testkit as support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::kafka::Cluster;

const T0: i64 = 1_795_500_000_000;

fn reading(key: &str, i: i64) -> Vec<u8> {
    format!(
        r#"{{"sensor_id":"{key}","timestamp":{},"temperature":20.5}}"#,
        T0 + i * 1000
    )
    .into_bytes()
}

/// streamhost on the cluster's broker with explicit topics.
fn streamhost(c: &Cluster, log: &str, input: &str, enriched: &str, extra: &[&str]) -> Child {
    let err = std::fs::File::create(c.log_dir.join(format!("{log}.log"))).unwrap();
    Command::new(support::bin("streamhost"))
        .args([
            "--brokers",
            &c.broker.bootstrap(),
            "--admin",
            "127.0.0.1:0",
            "--group",
            &c.group,
        ])
        .arg("--admin-address-file")
        .arg(c.log_dir.join(format!("{log}.admin")))
        .args([
            "--input-topic",
            input,
            "--enriched-topic",
            enriched,
            "--alerts-topic",
            &c.alerts,
            "--dlq-topic",
            &c.dlq,
        ])
        .arg("--plugin")
        .arg(support::plugin_path("enrich"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn nisshi_topic(c: &Cluster, args: &[&str]) {
    let out = Command::new(support::nisshi())
        .args(["topic"])
        .args(&args[..1])
        .args(["--broker", &format!("tcp://{}", c.broker.bootstrap())])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nisshi topic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An output topic the broker will not serve (here: a name Kafka does not
/// allow; Nisshi, like Kafka's default, creates missing topics on request,
/// so a merely missing one is created) stops streamhost before it consumes
/// anything, naming the topic: nothing is committed, nothing repeated later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_output_topic_stops_streamhost_before_it_consumes() {
    let c = Cluster::start("bad-output", 1);
    c.produce(&[(Some("a".into()), reading("a", 0))]).await;
    let mut child = streamhost(&c, "streamhost", &c.input, "not a valid topic!", &[]);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
    }
    let log = c.log("streamhost");
    assert!(
        !status
            .unwrap_or_else(|| panic!("streamhost kept running:\n{log}"))
            .success()
    );
    assert!(log.contains("output topic \"not a valid topic!\""), "{log}");
    assert!(!log.contains("Consuming."), "{log}");
}

/// An input topic created after streamhost started is read within seconds
/// (librdkafka's default metadata refresh would take up to 5 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_topic_created_later_is_read_within_seconds() {
    let c = Cluster::start("late-input", 1);
    let input = support::topic("created-later");
    let mut child = streamhost(
        &c,
        "streamhost",
        &input,
        &c.enriched,
        &["--max-records", "3"],
    );
    c.wait_log("streamhost", "Consuming.", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    nisshi_topic(&c, &["create", "--partitions", "1", &input]);
    let created = Instant::now();
    let producer = c.producer();
    for i in 0..3 {
        let payload = reading("a", i);
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&input)
                    .key("a")
                    .payload(&payload[..]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let status = wait_exit(&mut child, Duration::from_secs(60))
        .expect("the records should be read within a minute");
    assert!(status.success(), "{}", c.log("streamhost"));
    println!(
        "input topic created after start: read and committed {:?} after creation",
        created.elapsed()
    );
    assert!(created.elapsed() < Duration::from_secs(30));
}

/// When an output cannot be delivered (the broker stops answering while it
/// lingers in the producer), streamhost stops once the producer gives up,
/// even though no more input arrives, and exits non-zero without committing
/// the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_stops_streamhost_while_idle() {
    let c = Cluster::start("idle-failure", 1);
    let extra = [
        "-X",
        "producer.linger.ms=3000",
        "-X",
        "producer.message.timeout.ms=4000",
    ];
    let mut child = streamhost(&c, "streamhost", &c.input, &c.enriched, &extra);
    let admin = c.admin_addr("streamhost");
    c.wait_log("streamhost", "Partitions assigned", Duration::from_secs(30));
    c.produce(&[(Some("a".into()), reading("a", 0))]).await;
    // Once the record is processed, its output lingers 3 s in the producer:
    // freeze the broker meanwhile.
    let t = Instant::now();
    loop {
        let metrics = http_get(&admin, "/metrics");
        if metrics.contains("messages_processed_total 1") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the record was not processed:\n{}",
            c.log("streamhost")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = c.broker.pid().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let stopped = Instant::now();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    if status.is_none() {
        let _ = child.kill();
    }
    let log = c.log("streamhost");
    let status =
        status.unwrap_or_else(|| panic!("streamhost kept running after a failed delivery:\n{log}"));
    println!("stopped {:?} after the broker froze", stopped.elapsed());
    assert!(!status.success());
    assert!(log.contains("could not be delivered"), "{log}");
}

/// `GET path` on the admin API at `admin`, as text.
fn http_get(admin: &str, path: &str) -> String {
    streamhost::cmd::plugins::request(admin, "GET", path, None, b"")
        .map(|(_, body)| body)
        .unwrap_or_default()
}
