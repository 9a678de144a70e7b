//! `cargo xtask demo`: everything on one machine. Builds the plugins and the
//! binaries, starts a local broker, creates the article's topics, and runs
//! the sensor producer, streamhost with the article's three rules, and
//! `stream-watch` to show what comes out.
//!
//! Beside the article's rules run the three of docs/rules-cookbook.md:
//! `zscore` and `crossover-py` with windows of their own, and
//! `thresholds-js` with the reference table `thresholds`, whose compacted
//! topic the demo fills first with a few sensors' own limits ([`THRESHOLDS`]).
//!
//! Without `--records` it runs until Ctrl-C. With `--records N`, the
//! producer sends N readings, streamhost stops once N are processed and
//! committed, and the demo prints streamhost's summary and exits.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use streamhost_testkit::broker::{self, Broker};

/// The topic of the reference table `thresholds`.
const THRESHOLDS_TOPIC: &str = "iot-thresholds";

/// The rows of the table `thresholds`: a sensor id (the Kafka key, as the
/// readings are keyed), and its own limits as a JSON object. Readings come
/// between 18 and 35 degrees, so each sensor here alerts now and then; the
/// others keep the rule's defaults, 0 to 40.
const THRESHOLDS: &[(&str, &str)] = &[
    // A server room: no warmer than 33.
    (
        "sensor_001",
        r#"{"temperature_max": 33, "site": "server room"}"#,
    ),
    // A greenhouse: between 19 and 34.
    (
        "sensor_002",
        r#"{"temperature_min": 19, "temperature_max": 34, "site": "greenhouse"}"#,
    ),
    // Outdoors: a minimum of its own; the maximum is the default.
    ("sensor_003", r#"{"temperature_min": -5, "site": "roof"}"#),
];

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this many input records are fully processed.
    #[arg(long)]
    pub records: Option<u64>,
    /// Readings per second from the producer (0: as fast as possible).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Number of simulated sensors.
    #[arg(long, default_value_t = 20)]
    pub sensors: u32,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Avro in the Confluent framing for readings, enriched records and
    /// alerts, with the schema registry stand-in.
    #[arg(long)]
    pub avro: bool,
    /// streamhost's `--alerts`: `lifecycle` (transitions: firing, repeat,
    /// resolved) or `every-record` (the article's: an alert record for
    /// every record that raises one).
    #[arg(long, default_value = "lifecycle")]
    pub alerts: String,
}

/// Children killed when the demo ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    let root = crate::root();
    crate::announce_plan();
    let plugins = crate::build_plugins()?;
    // The same build as `cargo xtask test`'s: after it, nothing is rebuilt.
    crate::build_binaries()?;
    let bin = |name: &str| root.join("target/release").join(name);
    let nisshi = crate::toolchain::ensure_broker()?;
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let broker = Broker::start(&nisshi, Some(&dir.join("broker.log")))?;
    broker.create_topic("iot-sensors", args.partitions)?;
    for t in ["iot-alerts", "iot-enriched", "iot-dlq"] {
        broker.create_topic(t, args.partitions)?;
    }
    let brokers = broker.bootstrap();
    println!("demo: broker on {brokers}; logs in {}", dir.display());
    fill_thresholds(&nisshi, &broker)?;

    let mut children = Children(Vec::new());
    // With --avro: the registry stand-in, and its URL for every process.
    let registry = if args.avro {
        let file = dir.join("registry.url");
        let _ = std::fs::remove_file(&file);
        children.0.push(
            Command::new(bin("schema-registry-standin"))
                .args(["--listen", "127.0.0.1:0", "--address-file"])
                .arg(&file)
                .stdout(Stdio::null())
                .spawn()
                .context("starting the schema registry stand-in")?,
        );
        let started = std::time::Instant::now();
        let url = loop {
            match std::fs::read_to_string(&file) {
                Ok(url) if !url.is_empty() => break url,
                _ if started.elapsed() > std::time::Duration::from_secs(20) => {
                    bail!("the schema registry stand-in did not start")
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        println!("demo: Avro, with the schema registry stand-in on {url}");
        Some(url)
    } else {
        None
    };
    // Copies in the demo's folder: a put or a promotion writes over them,
    // never over the built plugins.
    let served = dir.join("plugins");
    std::fs::create_dir_all(&served)?;
    let plugin = |n: &str| -> Result<PathBuf> {
        let to = served.join(format!("{n}.wasm"));
        std::fs::copy(plugins.join(format!("{n}.wasm")), &to)?;
        Ok(to)
    };
    let token = std::env::var("STREAMHOST_ADMIN_TOKEN").unwrap_or_else(|_| "demo".into());
    println!(
        "demo: console on http://127.0.0.1:9464/; plugin changes with --admin 127.0.0.1:9464 --token {token}"
    );
    let mut streamhost = Command::new(bin("streamhost"));
    streamhost
        .args(["--brokers", &brokers, "--admin", "127.0.0.1:9464"])
        .args(["--admin-token", &token])
        .arg("--plugin")
        .arg(plugin("enrich")?)
        .arg("--plugin")
        .arg(plugin("trend")?)
        .arg("--plugin")
        .arg(plugin("anomaly")?)
        .arg("--plugin")
        .arg(plugin("crossover-py")?)
        .arg("--plugin")
        .arg(plugin("zscore")?)
        .arg("--plugin")
        .arg(plugin("thresholds-js")?)
        .args(["--table", &format!("thresholds={THRESHOLDS_TOPIC}")])
        .args(["--alerts", &args.alerts])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("streamhost.log"))?);
    if let Some(n) = args.records {
        streamhost.args(["--max-records", &n.to_string()]);
    }
    let mut watch = Command::new(bin("stream-watch"));
    watch.args(["--brokers", &brokers]);
    if let Some(url) = &registry {
        streamhost.args(["--input-format", "avro", "--output-format", "avro"]);
        streamhost.args(["--schema-registry", url]);
        watch.args(["--avro", url]);
    }
    let streamhost = streamhost.spawn().context("starting streamhost")?;
    children
        .0
        .push(watch.spawn().context("starting stream-watch")?);
    let mut producer = Command::new(bin("sensor-producer"));
    producer.args([
        "--brokers",
        &brokers,
        "--sensors",
        &args.sensors.to_string(),
        "--rate",
        &args.rate.to_string(),
        // Faults that last: a sensor out of range stays so for about 100
        // readings (2 s at the demo's rate), as real ones do.
        "--episode-readings",
        "100",
    ]);
    if let Some(n) = args.records {
        producer.args(["--total", &n.to_string()]);
    }
    if let Some(url) = &registry {
        producer.args(["--avro", url]);
    }
    children
        .0
        .push(producer.spawn().context("starting sensor-producer")?);

    match args.records {
        None => {
            println!("demo: running; Ctrl-C to stop");
            let out = streamhost.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "streamhost exited with {}; see {}",
                    out.status,
                    dir.join("streamhost.log").display()
                );
            }
        }
        Some(_) => {
            let out = streamhost.wait_with_output()?;
            // Let stream-watch print the last outputs before it is stopped.
            std::thread::sleep(std::time::Duration::from_millis(1500));
            drop(children);
            if !out.status.success() {
                bail!(
                    "streamhost exited with {}; see {}",
                    out.status,
                    dir.join("streamhost.log").display()
                );
            }
            let summary: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("reading streamhost's summary")?;
            println!("\n== demo summary ==");
            println!("in:        {}", summary["in"]);
            println!("enriched:  {}", summary["enriched"]);
            println!("alerts:    {} records", summary["alert_records"]);
            let statuses = summary["alerts_by_status"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if !statuses.is_empty() {
                let each: Vec<String> = statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
                println!(
                    "  lifecycle: {}; the rules raised {} (one record each with --alerts every-record)",
                    each.join(", "),
                    summary["alerts_raised"]
                );
            }
            for (kind, n) in summary["alerts_by_kind"].as_object().into_iter().flatten() {
                println!("  {kind:<26} {n}");
            }
            let dead = summary["dead_letters_by_reason"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            println!(
                "dead letters: {}",
                dead.values().filter_map(|v| v.as_u64()).sum::<u64>()
            );
            for (reason, n) in &dead {
                println!("  {reason:<26} {n}");
            }
        }
    }
    drop(broker);
    Ok(())
}

/// Writes each line of stdin, `KEY<tab>VALUE`, to the topic `argv[2]` of the
/// brokers `argv[1]`, and fails unless every record was delivered.
const PRODUCE_ROWS: &str = r#"
import sys
from confluent_kafka import Producer
producer = Producer({"bootstrap.servers": sys.argv[1]})
for line in sys.stdin:
    key, value = line.rstrip("\n").split("\t", 1)
    producer.produce(sys.argv[2], key=key, value=value)
sys.exit(1 if producer.flush(30) else 0)
"#;

/// Creates the compacted topic of the table `thresholds` and writes
/// [`THRESHOLDS`] into it, before streamhost starts (it loads a table whole
/// before processing its first record).
fn fill_thresholds(nisshi: &std::path::Path, broker: &Broker) -> Result<()> {
    let python = crate::toolchain::ensure_kafka_python()?;
    crate::run(
        broker::create_topic_command(nisshi, broker.port, THRESHOLDS_TOPIC, 1).args([
            "--config",
            "cleanup.policy=compact",
            "--silent",
        ]),
    )
    .with_context(|| format!("creating topic {THRESHOLDS_TOPIC}"))?;
    let mut producer = Command::new(python)
        .args(["-c", PRODUCE_ROWS, &broker.bootstrap(), THRESHOLDS_TOPIC])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting the table's producer")?;
    {
        use std::io::Write;
        let mut rows = producer.stdin.take().expect("stdin is piped");
        for (sensor, limits) in THRESHOLDS {
            writeln!(rows, "{sensor}\t{limits}")?;
        }
    }
    let status = producer.wait()?;
    if !status.success() {
        bail!("could not write the table's rows to {THRESHOLDS_TOPIC}: {status}");
    }
    println!(
        "demo: table thresholds ({THRESHOLDS_TOPIC}): own limits for {}",
        THRESHOLDS
            .iter()
            .map(|(sensor, _)| *sensor)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
