//! The test kit: what the integration tests, the benchmarks and `cargo
//! xtask` share to run streamhost against real parts.
//!
//! - `broker`: a local Kafka-compatible broker (Nisshi) on a free loopback
//!   port (std only, so that `cargo xtask` stays light);
//! - with the `kafka` feature: built plugins and a runtime to load them,
//!   clusters with fresh topics, clients to fill and read them, and
//!   streamhost processes.

pub mod broker;

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The README and every page under `docs/`, in name order.
pub fn doc_pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

/// A seeded stream of uniform numbers in [0, 1) (a 64-bit LCG), so that
/// generated test and benchmark data is the same on every run.
pub fn seeded_uniform(mut seed: u64) -> impl FnMut() -> f64 {
    move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(feature = "kafka")]
pub use with_kafka::*;

#[cfg(feature = "kafka")]
mod with_kafka {
    use std::path::PathBuf;
    use std::sync::Arc;

    use streamhost::rules::runtime::{Limits, Plugin, Runtime};

    use super::{broker, root};

    /// Path of a component built by `cargo xtask plugins`.
    pub fn plugin_path(name: &str) -> PathBuf {
        let p = root().join("target/plugins").join(format!("{name}.wasm"));
        assert!(
            p.exists(),
            "{} is missing: run `cargo xtask plugins` (or `cargo xtask test`)",
            p.display()
        );
        p
    }

    pub fn runtime() -> Runtime {
        Runtime::new(Limits::default()).expect("runtime")
    }

    /// A runtime whose calls may run for `deadline`: for tests where only
    /// the memory cap may stop a plugin, which the default 100 ms deadline
    /// can beat on a loaded machine.
    pub fn runtime_with_deadline(deadline: std::time::Duration) -> Runtime {
        Runtime::new(Limits {
            deadline,
            ..Limits::default()
        })
        .expect("runtime")
    }

    pub fn load(rt: &Runtime, name: &str) -> Arc<Plugin> {
        let bytes = std::fs::read(plugin_path(name)).unwrap();
        Arc::new(
            rt.load(&bytes, name)
                .unwrap_or_else(|e| panic!("loading {name}: {e}")),
        )
    }

    /// The broker binary, or a clear failure saying how to get one.
    pub fn nisshi() -> PathBuf {
        broker::find()
            .expect("the nisshi broker is not installed: run `cargo xtask test`, which installs it")
    }

    /// A fresh topic name per test.
    pub fn topic(prefix: &str) -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{prefix}-{}-{nanos}", std::process::id())
    }

    pub mod kafka {
        //! A broker with fresh topics per test, clients to fill and read them,
        //! and streamhost processes on them.

        use std::collections::HashMap;
        use std::path::PathBuf;
        use std::process::{Child, Command, Stdio};
        use std::time::{Duration, Instant};

        use rdkafka::config::ClientConfig;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Message;
        use rdkafka::producer::{FutureProducer, FutureRecord};
        use rdkafka::{Offset, TopicPartitionList};

        use crate::broker::Broker;

        /// A record read back from an output topic.
        #[derive(Debug, Clone)]
        pub struct Read {
            pub key: Option<Vec<u8>>,
            pub payload: Vec<u8>,
            pub headers: HashMap<String, String>,
            pub partition: i32,
            pub offset: i64,
        }

        impl Read {
            pub fn json(&self) -> serde_json::Value {
                serde_json::from_slice(&self.payload).expect("output is JSON")
            }
            pub fn header(&self, name: &str) -> &str {
                self.headers
                    .get(name)
                    .map(String::as_str)
                    .unwrap_or_else(|| panic!("no header {name}: {self:?}"))
            }
            /// The input position (partition, offset) an output names: an
            /// enriched record's `streamhost.source`, an alert's `source`.
            pub fn source(&self) -> (i32, i64) {
                let v = self.json();
                let s = if v["streamhost"].is_object() {
                    &v["streamhost"]["source"]
                } else {
                    &v["source"]
                };
                match (s["partition"].as_i64(), s["offset"].as_i64()) {
                    (Some(p), Some(o)) => (p as i32, o),
                    _ => panic!("an output naming no source: {v}"),
                }
            }
        }

        /// `GET /metrics` of the admin API at `admin`.
        pub fn scrape(admin: &str) -> String {
            let (status, body) =
                streamhost::cmd::plugins::request(admin, "GET", "/metrics", None, b"").unwrap();
            assert_eq!(status, 200, "GET /metrics: {body}");
            body
        }

        /// The value of the series `series` (name and labels, as written)
        /// in `GET /metrics`, if it is there.
        pub fn metric(admin: &str, series: &str) -> Option<f64> {
            scrape(admin)
                .lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .map(|v| v.trim().parse().unwrap())
        }

        /// A broker and a set of fresh topic names.
        pub struct Cluster {
            pub broker: Broker,
            pub input: String,
            pub enriched: String,
            pub alerts: String,
            pub dlq: String,
            pub group: String,
            pub log_dir: PathBuf,
            /// librdkafka properties of the test's own clients (TLS, SASL).
            pub client: Vec<(String, String)>,
            producer: std::sync::OnceLock<FutureProducer>,
        }

        impl Cluster {
            pub fn start(name: &str, input_partitions: u32) -> Cluster {
                let log_dir = Cluster::log_dir(name);
                let broker = Broker::start(&super::nisshi(), Some(&log_dir.join("broker.log")))
                    .expect("broker");
                Cluster::on(name, input_partitions, broker, log_dir, Vec::new())
            }

            /// A fresh folder for a test's logs (and certificates).
            pub fn log_dir(name: &str) -> PathBuf {
                let log_dir = crate::root()
                    .join("target/test-logs")
                    .join(super::topic(name));
                std::fs::create_dir_all(&log_dir).unwrap();
                log_dir
            }

            /// Fresh topics on a broker already started, reached by the
            /// test's clients with `client` properties (TLS, SASL).
            pub fn on(
                name: &str,
                input_partitions: u32,
                broker: Broker,
                log_dir: PathBuf,
                client: Vec<(String, String)>,
            ) -> Cluster {
                let c = Cluster {
                    input: super::topic(&format!("{name}-in")),
                    enriched: super::topic(&format!("{name}-enriched")),
                    alerts: super::topic(&format!("{name}-alerts")),
                    dlq: super::topic(&format!("{name}-dlq")),
                    group: super::topic(&format!("{name}-group")),
                    broker,
                    log_dir,
                    client,
                    producer: Default::default(),
                };
                let topics = [
                    (&c.input, input_partitions),
                    (&c.enriched, 2),
                    (&c.alerts, 2),
                    (&c.dlq, 2),
                ];
                if c.client.is_empty() {
                    for (t, n) in topics {
                        c.broker.create_topic(t, n).unwrap();
                    }
                } else {
                    c.create_topics(&topics);
                }
                c
            }

            /// Creates topics with the Kafka admin API (for brokers the
            /// broker's own command line cannot reach: TLS, SASL).
            fn create_topics(&self, topics: &[(&String, u32)]) {
                use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
                let admin: AdminClient<_> = self.config().create().unwrap();
                let new: Vec<NewTopic> = topics
                    .iter()
                    .map(|(t, n)| NewTopic::new(t, *n as i32, TopicReplication::Fixed(1)))
                    .collect();
                let results =
                    futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new()))
                        .unwrap();
                for r in results {
                    r.unwrap();
                }
            }

            /// A client configuration for this cluster's broker.
            pub fn config(&self) -> ClientConfig {
                let mut config = ClientConfig::new();
                config.set("bootstrap.servers", self.broker.bootstrap());
                for (k, v) in &self.client {
                    config.set(k, v);
                }
                config
            }

            pub fn producer(&self) -> &FutureProducer {
                self.producer.get_or_init(|| {
                    self.config()
                        .set("enable.idempotence", "true")
                        .set("linger.ms", "5")
                        .create()
                        .unwrap()
                })
            }

            /// Produces keyed records to the input topic, in order, and waits for
            /// all of them. Returns (partition, offset) of each.
            pub async fn produce(&self, records: &[(Option<String>, Vec<u8>)]) -> Vec<(i32, i64)> {
                let raw: Vec<_> = records
                    .iter()
                    .map(|(k, v)| {
                        (
                            None,
                            k.as_ref().map(|k| k.clone().into_bytes()),
                            Some(v.clone()),
                        )
                    })
                    .collect();
                self.produce_raw(&raw).await
            }

            /// Produces JSON readings to the input topic, each keyed by its
            /// key, in order, and waits for all of them. Returns (partition,
            /// offset) of each.
            pub async fn produce_json(
                &self,
                readings: &[(String, serde_json::Value)],
            ) -> Vec<(i32, i64)> {
                let records: Vec<_> = readings
                    .iter()
                    .map(|(k, v)| (Some(k.clone()), v.to_string().into_bytes()))
                    .collect();
                self.produce(&records).await
            }

            /// Produces records as they are: to a partition (or by key), with or
            /// without key and value. Returns (partition, offset) of each.
            pub async fn produce_raw(
                &self,
                records: &[(Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>)],
            ) -> Vec<(i32, i64)> {
                let producer = self.producer();
                let mut futures = Vec::with_capacity(records.len());
                for (partition, key, payload) in records {
                    let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.input);
                    if let Some(p) = partition {
                        r = r.partition(*p);
                    }
                    if let Some(k) = key {
                        r = r.key(&k[..]);
                    }
                    if let Some(v) = payload {
                        r = r.payload(&v[..]);
                    }
                    futures.push(producer.send_result(r).map_err(|(e, _)| e).unwrap());
                }
                delivered(futures).await
            }

            /// Produces keyed records to given partitions with given Kafka
            /// timestamps (a producer that stamps records with their event
            /// time), and waits for all of them. Returns (partition, offset)
            /// of each.
            pub async fn produce_stamped(
                &self,
                records: &[(i32, String, Vec<u8>, i64)],
            ) -> Vec<(i32, i64)> {
                let producer = self.producer();
                let mut futures = Vec::with_capacity(records.len());
                for (partition, key, payload, timestamp) in records {
                    let r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.input)
                        .partition(*partition)
                        .key(key.as_bytes())
                        .payload(&payload[..])
                        .timestamp(*timestamp);
                    futures.push(producer.send_result(r).map_err(|(e, _)| e).unwrap());
                }
                delivered(futures).await
            }

            /// Reads everything `topic` holds now (up to its high watermarks,
            /// asked first), waiting up to `timeout`.
            pub fn read_all(&self, topic: &str, timeout: Duration) -> Vec<Read> {
                let consumer: BaseConsumer = self.config().create().unwrap();
                let md = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .unwrap();
                let mut held = 0i64;
                for p in md.topics()[0].partitions() {
                    let (low, high) = consumer
                        .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                        .unwrap();
                    held += high - low;
                }
                self.read(topic, timeout, |r| r.len() as i64 >= held)
            }

            /// Reads `topic` from the beginning until `stop` says enough or
            /// `timeout` passes (then returns what it has).
            pub fn read(
                &self,
                topic: &str,
                timeout: Duration,
                mut stop: impl FnMut(&[Read]) -> bool,
            ) -> Vec<Read> {
                let consumer: BaseConsumer = self
                    .config()
                    .set("group.id", super::topic("reader"))
                    .set("enable.auto.commit", "false")
                    .create()
                    .unwrap();
                let md = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .unwrap();
                let mut tpl = TopicPartitionList::new();
                for p in md.topics()[0].partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .unwrap();
                }
                consumer.assign(&tpl).unwrap();
                let deadline = Instant::now() + timeout;
                let mut out = Vec::new();
                while Instant::now() < deadline && !stop(&out) {
                    if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                        let m = m.unwrap();
                        let headers = streamhost::kafka::header_strings(&m);
                        out.push(Read {
                            key: m.key().map(<[u8]>::to_vec),
                            payload: m.payload().unwrap_or_default().to_vec(),
                            headers,
                            partition: m.partition(),
                            offset: m.offset(),
                        });
                    }
                }
                out
            }

            /// A copy of the built plugin `name` in the test's folder, for a
            /// test that configures it: its settings are written beside it.
            pub fn plugin_copy(&self, name: &str) -> PathBuf {
                let path = self.log_dir.join(format!("{name}.wasm"));
                std::fs::copy(super::plugin_path(name), &path).unwrap();
                path
            }

            /// Starts streamhost on this cluster's topics with the three example
            /// plugins and any extra arguments; stderr goes to `<log>.log`.
            pub fn streamhost(&self, log: &str, extra: &[&str]) -> Child {
                let plugins = ["enrich", "trend", "anomaly"].map(super::plugin_path);
                self.streamhost_with(log, &plugins, extra)
            }

            /// Starts streamhost with the given plugin files.
            pub fn streamhost_with(&self, log: &str, plugins: &[PathBuf], extra: &[&str]) -> Child {
                self.streamhost_command(log, plugins, extra)
                    .spawn()
                    .expect("starting streamhost")
            }

            /// The cluster's input topic, group and output topics, as
            /// streamhost's flags.
            pub fn topic_args(&self) -> [&str; 10] {
                [
                    "--input-topic",
                    &self.input,
                    "--group",
                    &self.group,
                    "--enriched-topic",
                    &self.enriched,
                    "--alerts-topic",
                    &self.alerts,
                    "--dlq-topic",
                    &self.dlq,
                ]
            }

            /// The command `streamhost_with` runs, to change before it
            /// starts (the environment, say).
            pub fn streamhost_command(
                &self,
                log: &str,
                plugins: &[PathBuf],
                extra: &[&str],
            ) -> Command {
                let err = std::fs::File::create(self.log_dir.join(format!("{log}.log"))).unwrap();
                let mut cmd = Command::new(super::bin("streamhost"));
                cmd.args([
                    "--brokers",
                    &self.broker.bootstrap(),
                    "--admin",
                    "127.0.0.1:0",
                ])
                .arg("--admin-address-file")
                .arg(self.log_dir.join(format!("{log}.admin")))
                .args(self.topic_args());
                for p in plugins {
                    cmd.arg("--plugin").arg(p);
                }
                cmd.args(extra)
                    .env("RUST_LOG", "info")
                    .stdout(Stdio::piped())
                    .stderr(err);
                cmd
            }

            /// Waits for a line containing `needle` in a process's log.
            pub fn wait_log(&self, log: &str, needle: &str, timeout: Duration) -> String {
                let t = Instant::now();
                loop {
                    if let Some(line) = self.log(log).lines().find(|l| l.contains(needle)) {
                        return line.to_string();
                    }
                    assert!(
                        t.elapsed() < timeout,
                        "{log} never logged {needle:?}:\n{}",
                        self.log(log)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }

            /// The admin API address a process wrote to its address file
            /// (`--admin-address-file`), waiting for it.
            pub fn admin_addr(&self, log: &str) -> String {
                let file = self.log_dir.join(format!("{log}.admin"));
                let t = Instant::now();
                loop {
                    if let Ok(addr) = std::fs::read_to_string(&file) {
                        if !addr.is_empty() {
                            return addr;
                        }
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(30),
                        "{log} never wrote {}:\n{}",
                        file.display(),
                        self.log(log)
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }

            pub fn log(&self, log: &str) -> String {
                std::fs::read_to_string(self.log_dir.join(format!("{log}.log"))).unwrap_or_default()
            }
        }

        /// Waits for every delivery; returns (partition, offset) of each.
        async fn delivered(futures: Vec<rdkafka::producer::DeliveryFuture>) -> Vec<(i32, i64)> {
            let mut out = Vec::with_capacity(futures.len());
            for f in futures {
                let d = f.await.unwrap().map_err(|(e, _)| e).unwrap();
                out.push((d.partition, d.offset));
            }
            out
        }

        /// Sends SIGTERM to a child and waits for it.
        pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().unwrap()
        }
    }

    /// A binary of this workspace, built next to the test executable's folder
    /// (`cargo xtask test` builds them before running the tests), or, for
    /// `streamhost`, the one `STREAMHOST_BIN` names (to run the tests against
    /// another build, an older one say).
    pub fn bin(name: &str) -> PathBuf {
        if name == "streamhost" {
            if let Some(p) = std::env::var_os("STREAMHOST_BIN") {
                return PathBuf::from(p);
            }
        }
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        let p = dir.join(name);
        assert!(
            p.exists(),
            "{} is missing: run `cargo xtask test` (it builds the binaries first)",
            p.display()
        );
        p
    }
}
