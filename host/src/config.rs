//! Configuration: command-line flags, `STREAMHOST_*` environment variables
//! and a TOML file (`--config`), in that order of precedence, over built-in
//! defaults.
//!
//! Every setting is an `Option` in both the flags and the file, so that a
//! value given nowhere falls through to the default and one given in two
//! places resolves by precedence rather than by whichever parser ran last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Without the source line toml's own message quotes, which could hold
    /// a secret.
    #[error("{path}:{line}:{column}: {message}")]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Flags of the main job. Defaults are shown in `--help` and applied in
/// `Settings::resolve`.
#[derive(Args, Default, Clone)]
pub struct RunArgs {
    /// TOML file with any of these settings (kebab-case keys, e.g.
    /// `input-topic = "iot-sensors"`, `window = "5m"`, and a
    /// `[librdkafka]` table). Flags and environment variables override it.
    #[arg(long, env = "STREAMHOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]. [default: localhost:9092]
    #[arg(long, env = "STREAMHOST_BROKERS", value_name = "HOST:PORT")]
    pub brokers: Option<String>,

    /// A rule component (.wasm); repeat for more. Rules of one kind run in the
    /// order given. The environment variable takes a comma-separated list.
    #[arg(
        long = "plugin",
        env = "STREAMHOST_PLUGINS",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub plugins: Vec<PathBuf>,

    /// Topic to consume. [default: iot-sensors]
    #[arg(long, env = "STREAMHOST_INPUT_TOPIC", value_name = "TOPIC")]
    pub input_topic: Option<String>,

    /// Consumer group. [default: stream-processor-group]
    #[arg(long, env = "STREAMHOST_GROUP", value_name = "GROUP")]
    pub group: Option<String>,

    /// Topic for alerts. [default: iot-alerts]
    #[arg(long, env = "STREAMHOST_ALERTS_TOPIC", value_name = "TOPIC")]
    pub alerts_topic: Option<String>,

    /// Topic for enriched records. [default: iot-enriched]
    #[arg(long, env = "STREAMHOST_ENRICHED_TOPIC", value_name = "TOPIC")]
    pub enriched_topic: Option<String>,

    /// Topic for records that could not be processed. [default: iot-dlq]
    #[arg(long, env = "STREAMHOST_DLQ_TOPIC", value_name = "TOPIC")]
    pub dlq_topic: Option<String>,

    /// JSON member holding each record's key (windows are per key). [default: sensor_id]
    #[arg(long, env = "STREAMHOST_KEY_FIELD", value_name = "NAME")]
    pub key_field: Option<String>,

    /// JSON member holding the event time: RFC 3339 text (no offset means
    /// UTC) or an epoch number in `--epoch-unit`. [default: timestamp]
    #[arg(long, env = "STREAMHOST_TIME_FIELD", value_name = "NAME")]
    pub time_field: Option<String>,

    /// Numeric JSON members passed to rules and kept in windows, comma-separated.
    /// [default: temperature,humidity,pressure,battery_level]
    #[arg(
        long,
        env = "STREAMHOST_FIELDS",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub fields: Option<Vec<String>>,

    /// Window length in event time, e.g. 5m, 90s. [default: 5m]
    #[arg(long, env = "STREAMHOST_WINDOW", value_name = "DURATION")]
    pub window: Option<String>,

    /// How far behind its key's newest event time a record may arrive and
    /// still enter its window; later records go to the dead-letter topic
    /// with reason `late`. [default: 30s]
    #[arg(long, env = "STREAMHOST_ALLOWED_LATENESS", value_name = "DURATION")]
    pub allowed_lateness: Option<String>,

    /// Unit of event times written as numbers: `ms` or `s`. [default: ms]
    #[arg(long, env = "STREAMHOST_EPOCH_UNIT", value_name = "UNIT")]
    pub epoch_unit: Option<String>,

    /// How input records are written: `json`, or `avro` in the Confluent
    /// framing (needs --schema-registry). [default: json]
    #[arg(long, env = "STREAMHOST_INPUT_FORMAT", value_name = "FORMAT")]
    pub input_format: Option<String>,

    /// How enriched records and alerts are written: `json`, or `avro` in the
    /// Confluent framing with schemas registered (needs --schema-registry).
    /// Dead letters keep the input's bytes. [default: json]
    #[arg(long, env = "STREAMHOST_OUTPUT_FORMAT", value_name = "FORMAT")]
    pub output_format: Option<String>,

    /// What an enriched record carries: `full` (window start and end, mean,
    /// minimum and maximum of every field, trends, alert kinds, plugin
    /// versions, source position) or `compact` (window count and means,
    /// trends, alert kinds). [default: full]
    #[arg(long, env = "STREAMHOST_ENRICHED_SHAPE", value_name = "SHAPE")]
    pub enriched_shape: Option<String>,

    /// Schema registry URL (Confluent REST API), for Avro.
    #[arg(long, env = "STREAMHOST_SCHEMA_REGISTRY", value_name = "URL")]
    pub schema_registry: Option<String>,

    /// How long one schema registry request may take before it is retried.
    /// [default: 10s]
    #[arg(
        long,
        env = "STREAMHOST_SCHEMA_REGISTRY_TIMEOUT",
        value_name = "DURATION"
    )]
    pub schema_registry_timeout: Option<String>,

    /// HTTP basic authentication for the schema registry, USER:PASSWORD.
    #[arg(
        long,
        env = "STREAMHOST_SCHEMA_REGISTRY_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub schema_registry_auth: Option<String>,

    /// How output schemas' subjects are named: `topic` (`<topic>-value`),
    /// `record` (the record's full name) or `topic-record`. [default: topic]
    #[arg(long, env = "STREAMHOST_SUBJECT_STRATEGY", value_name = "STRATEGY")]
    pub subject_strategy: Option<String>,

    /// Subject for the enriched topic's schemas, instead of the strategy's.
    #[arg(long, env = "STREAMHOST_ENRICHED_SUBJECT", value_name = "SUBJECT")]
    pub enriched_subject: Option<String>,

    /// Subject for the alerts topic's schemas, instead of the strategy's.
    #[arg(long, env = "STREAMHOST_ALERTS_SUBJECT", value_name = "SUBJECT")]
    pub alerts_subject: Option<String>,

    /// How far ahead of the processing time an event time may be; records
    /// further ahead go to the dead-letter topic with reason `future`.
    /// [default: 1h]
    #[arg(long, env = "STREAMHOST_MAX_FUTURE", value_name = "DURATION")]
    pub max_future: Option<String>,

    /// How long a key may stay silent, beyond window + lateness and on its
    /// partition's event-time clock, before its window is dropped. [default: 10m]
    #[arg(long, env = "STREAMHOST_KEY_IDLE", value_name = "DURATION")]
    pub key_idle: Option<String>,

    /// Partition-parallel workers: each owns whole input partitions, their
    /// windows and its own plugin instances. [default: the number of cores]
    #[arg(long, env = "STREAMHOST_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Extra event time replayed when windows are rebuilt, to cover records
    /// whose Kafka timestamps are behind their place in the partition
    /// (producer clock skew, buffering). [default: 30s]
    #[arg(long, env = "STREAMHOST_REBUILD_MARGIN", value_name = "DURATION")]
    pub rebuild_margin: Option<String>,

    /// Static group membership (`group.instance.id`): a process restarted
    /// with the same id within the session timeout gets its partitions back
    /// without a rebalance. Give each process of the group its own.
    #[arg(long, env = "STREAMHOST_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,

    /// How long the group waits for a silent member before moving its
    /// partitions (`session.timeout.ms`). [default: 10s]
    #[arg(long, env = "STREAMHOST_SESSION_TIMEOUT", value_name = "DURATION")]
    pub session_timeout: Option<String>,

    /// Partition assignment: `cooperative-sticky` (only moved partitions are
    /// revoked and rebuilt), `range` or `roundrobin`. [default: cooperative-sticky]
    #[arg(long, env = "STREAMHOST_ASSIGNMENT", value_name = "STRATEGY")]
    pub assignment: Option<String>,

    /// Oldest and newest values per field passed to rules that ask for them. [default: 3]
    #[arg(long, env = "STREAMHOST_WINDOW_VALUES", value_name = "K")]
    pub window_values: Option<u32>,

    /// Most records per batch handed to rules. [default: 1000]
    #[arg(long, env = "STREAMHOST_BATCH_SIZE", value_name = "N")]
    pub batch_size: Option<usize>,

    /// How long a batch may wait for more records once the consumer has none
    /// queued. 0 cuts it at once: a record never waits for a later one.
    /// [default: 0ms]
    #[arg(long, env = "STREAMHOST_BATCH_WAIT", value_name = "DURATION")]
    pub batch_wait: Option<String>,

    /// Longest a rule may run on one batch before it is interrupted. [default: 100ms]
    #[arg(long, env = "STREAMHOST_PLUGIN_DEADLINE", value_name = "DURATION")]
    pub plugin_deadline: Option<String>,

    /// Memory cap of each rule instance, in MiB. [default: 64]
    #[arg(long, env = "STREAMHOST_PLUGIN_MEMORY_MIB", value_name = "MIB")]
    pub plugin_memory_mib: Option<usize>,

    /// Folder of plugins: every `*.wasm` in it is loaded at start-up, and a
    /// plugin installed through the admin API is written there, so that a
    /// restart serves it again. [default: none]
    #[arg(long, env = "STREAMHOST_PLUGIN_DIR", value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// A candidate on trial (`plugins put --shadow|--canary`) is judged
    /// after this many of its records. [default: 1000]
    #[arg(long, env = "STREAMHOST_ROLLBACK_AFTER", value_name = "RECORDS")]
    pub rollback_after: Option<u64>,

    /// A candidate is rolled back when its failure rate exceeds the serving
    /// version's by more than this, in percentage points. [default: 1]
    #[arg(
        long,
        env = "STREAMHOST_ROLLBACK_FAILURE_MARGIN",
        value_name = "POINTS"
    )]
    pub rollback_failure_margin: Option<f64>,

    /// A candidate is rolled back when its p99 call latency exceeds the
    /// serving version's times this (and by 1 ms at least). [default: 2]
    #[arg(long, env = "STREAMHOST_ROLLBACK_LATENCY_RATIO", value_name = "RATIO")]
    pub rollback_latency_ratio: Option<f64>,

    /// Folder of compiled components, reused across restarts (owner-only;
    /// its files run as native code), or `off`.
    /// [default: $XDG_CACHE_HOME/streamhost/compiled, else ~/.cache/streamhost/compiled]
    #[arg(long, env = "STREAMHOST_COMPILE_CACHE", value_name = "DIR|off")]
    pub compile_cache: Option<String>,

    /// A librdkafka property for both consumer and producer, as kcat takes
    /// it (e.g. -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN);
    /// `consumer.` or `producer.` prefixes apply a property to one side only.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub librdkafka: Vec<(String, String)>,

    /// Address of the admin HTTP API (plugins, /metrics, /healthz, /readyz);
    /// port 0 picks a free one. [default: 127.0.0.1:9464]
    #[arg(long, env = "STREAMHOST_ADMIN", value_name = "ADDR")]
    pub admin: Option<String>,

    /// Write the admin API's bound address (HOST:PORT) to this file once it
    /// listens: useful with `--admin 127.0.0.1:0`.
    #[arg(long, env = "STREAMHOST_ADMIN_ADDRESS_FILE", value_name = "FILE")]
    pub admin_address_file: Option<PathBuf>,

    /// Bearer token required by the admin API's changing calls (PUT and
    /// DELETE /plugins/NAME); without one they are refused.
    #[arg(
        long,
        env = "STREAMHOST_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Stop after this many input records are processed and committed, and
    /// print a summary as JSON on stdout (for demos and tests).
    #[arg(long, env = "STREAMHOST_MAX_RECORDS", value_name = "N")]
    pub max_records: Option<u64>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

/// The TOML file's shape.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    brokers: Option<String>,
    plugins: Option<Vec<PathBuf>>,
    input_topic: Option<String>,
    group: Option<String>,
    alerts_topic: Option<String>,
    enriched_topic: Option<String>,
    dlq_topic: Option<String>,
    key_field: Option<String>,
    time_field: Option<String>,
    fields: Option<Vec<String>>,
    window: Option<String>,
    allowed_lateness: Option<String>,
    window_values: Option<u32>,
    epoch_unit: Option<String>,
    input_format: Option<String>,
    output_format: Option<String>,
    enriched_shape: Option<String>,
    schema_registry: Option<String>,
    schema_registry_auth: Option<String>,
    schema_registry_timeout: Option<String>,
    subject_strategy: Option<String>,
    enriched_subject: Option<String>,
    alerts_subject: Option<String>,
    max_future: Option<String>,
    key_idle: Option<String>,
    workers: Option<usize>,
    rebuild_margin: Option<String>,
    instance_id: Option<String>,
    session_timeout: Option<String>,
    assignment: Option<String>,
    batch_size: Option<usize>,
    batch_wait: Option<String>,
    plugin_deadline: Option<String>,
    plugin_memory_mib: Option<usize>,
    plugin_dir: Option<PathBuf>,
    rollback_after: Option<u64>,
    rollback_failure_margin: Option<f64>,
    rollback_latency_ratio: Option<f64>,
    compile_cache: Option<String>,
    admin: Option<String>,
    admin_token: Option<String>,
    librdkafka: Option<BTreeMap<String, String>>,
}

/// Resolved settings of the main job.
#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    pub plugins: Vec<PathBuf>,
    pub input_topic: String,
    pub group: String,
    pub alerts_topic: String,
    pub enriched_topic: String,
    pub dlq_topic: String,
    pub key_field: String,
    pub time_field: String,
    pub fields: Vec<String>,
    pub window: Duration,
    pub allowed_lateness: Duration,
    pub window_values: u32,
    pub epoch_unit: crate::text::time::EpochUnit,
    pub input_format: Format,
    pub output_format: Format,
    pub enriched_shape: crate::output::Shape,
    /// Needed by either format when it is Avro.
    pub registry: Option<crate::avro::RegistryConfig>,
    pub subject_strategy: crate::avro::SubjectStrategy,
    pub enriched_subject: Option<String>,
    pub alerts_subject: Option<String>,
    pub max_future: Duration,
    pub key_idle: Duration,
    pub workers: usize,
    pub rebuild_margin: Duration,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub assignment: String,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub plugin_deadline: Duration,
    pub plugin_memory_bytes: usize,
    pub plugin_dir: Option<PathBuf>,
    /// When a candidate on trial is rolled back on its own.
    pub rollback: crate::rules::trial::Policy,
    /// `None`: compiled components are not kept on disk.
    pub compile_cache: Option<PathBuf>,
    pub librdkafka: Properties,
    pub admin: std::net::SocketAddr,
    pub admin_token: Option<Secret>,
    pub admin_address_file: Option<PathBuf>,
    pub max_records: Option<u64>,
}

/// librdkafka properties (`-X` and the file's `[librdkafka]` table). Their
/// `Debug` form, the only way settings are ever printed, shows secrets
/// (passwords, private keys, JAAS and OAuth configuration) as `[redacted]`.
#[derive(Clone, Default, PartialEq)]
pub struct Properties(pub BTreeMap<String, String>);

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &dyn std::fmt::Debug = if is_secret(k) { &"[redacted]" } else { v };
                (k, v)
            }))
            .finish()
    }
}

/// Whether a librdkafka property holds a secret: `sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`, `sasl.jaas.config` and the like, also
/// behind a `consumer.`/`producer.` prefix.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key.pem",
        "jaas",
        "oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// A secret setting (the admin token): `Debug` shows `[redacted]`.
#[derive(Clone, PartialEq)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A record format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    /// Avro in the Confluent framing, with a schema registry.
    Avro,
}

fn format(setting: &'static str, text: Option<String>) -> Result<Format, ConfigError> {
    match text.as_deref().unwrap_or("json") {
        "json" => Ok(Format::Json),
        "avro" => Ok(Format::Avro),
        other => Err(invalid(
            setting,
            format!("{other:?} is neither `json` nor `avro`"),
        )),
    }
}

/// The compile cache folder: the one given, none for `off`, else the
/// default.
pub fn compile_cache(text: Option<String>) -> Option<PathBuf> {
    match text.as_deref() {
        Some("off") => None,
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => crate::rules::runtime::cache::default_dir(),
    }
}

fn duration(
    setting: &'static str,
    text: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = text.unwrap_or_else(|| default.to_string());
    humantime::parse_duration(&text)
        .map_err(|e| invalid(setting, format!("{text:?} is not a duration: {e}")))
}

impl Settings {
    /// Resolves flags (and their environment variables) over the file over
    /// the defaults.
    pub fn resolve(args: RunArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let s = |a: Option<String>, f: Option<String>, d: &str| {
            a.or(f).unwrap_or_else(|| d.to_string())
        };
        let mut librdkafka = file.librdkafka.unwrap_or_default();
        librdkafka.extend(args.librdkafka);
        let plugins = if args.plugins.is_empty() {
            file.plugins.unwrap_or_default()
        } else {
            args.plugins
        };
        let fields = args.fields.or(file.fields).unwrap_or_else(|| {
            ["temperature", "humidity", "pressure", "battery_level"]
                .map(String::from)
                .to_vec()
        });
        let fields: Vec<String> = fields
            .into_iter()
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        let settings = Settings {
            brokers: s(args.brokers, file.brokers, "localhost:9092"),
            plugins,
            input_topic: s(args.input_topic, file.input_topic, "iot-sensors"),
            group: s(args.group, file.group, "stream-processor-group"),
            alerts_topic: s(args.alerts_topic, file.alerts_topic, "iot-alerts"),
            enriched_topic: s(args.enriched_topic, file.enriched_topic, "iot-enriched"),
            dlq_topic: s(args.dlq_topic, file.dlq_topic, "iot-dlq"),
            key_field: s(args.key_field, file.key_field, "sensor_id"),
            time_field: s(args.time_field, file.time_field, "timestamp"),
            fields,
            window: duration("window", args.window.or(file.window), "5m")?,
            allowed_lateness: duration(
                "allowed-lateness",
                args.allowed_lateness.or(file.allowed_lateness),
                "30s",
            )?,
            window_values: args.window_values.or(file.window_values).unwrap_or(3),
            epoch_unit: match s(args.epoch_unit, file.epoch_unit, "ms").as_str() {
                "ms" => crate::text::time::EpochUnit::Millis,
                "s" => crate::text::time::EpochUnit::Seconds,
                other => {
                    return Err(invalid(
                        "epoch-unit",
                        format!("{other:?} is neither `ms` nor `s`"),
                    ));
                }
            },
            input_format: format("input-format", args.input_format.or(file.input_format))?,
            output_format: format("output-format", args.output_format.or(file.output_format))?,
            enriched_shape: match args.enriched_shape.or(file.enriched_shape).as_deref() {
                None | Some("full") => crate::output::Shape::Full,
                Some("compact") => crate::output::Shape::Compact,
                Some(other) => {
                    return Err(invalid(
                        "enriched-shape",
                        format!("{other:?} is neither `full` nor `compact`"),
                    ));
                }
            },
            registry: match args.schema_registry.or(file.schema_registry) {
                None => None,
                Some(url) => Some(crate::avro::RegistryConfig {
                    url,
                    timeout: duration(
                        "schema-registry-timeout",
                        args.schema_registry_timeout
                            .or(file.schema_registry_timeout),
                        "10s",
                    )?,
                    basic_auth: match args.schema_registry_auth.or(file.schema_registry_auth) {
                        None => None,
                        Some(auth) => {
                            let (user, password) = auth.split_once(':').ok_or_else(|| {
                                invalid("schema-registry-auth", "expected USER:PASSWORD")
                            })?;
                            Some((user.to_string(), password.to_string()))
                        }
                    },
                }),
            },
            subject_strategy: s(args.subject_strategy, file.subject_strategy, "topic")
                .parse()
                .map_err(|e: String| invalid("subject-strategy", e))?,
            enriched_subject: args.enriched_subject.or(file.enriched_subject),
            alerts_subject: args.alerts_subject.or(file.alerts_subject),
            max_future: duration("max-future", args.max_future.or(file.max_future), "1h")?,
            key_idle: duration("key-idle", args.key_idle.or(file.key_idle), "10m")?,
            workers: args.workers.or(file.workers).unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            rebuild_margin: duration(
                "rebuild-margin",
                args.rebuild_margin.or(file.rebuild_margin),
                "30s",
            )?,
            instance_id: args
                .instance_id
                .or(file.instance_id)
                .filter(|t| !t.is_empty()),
            session_timeout: duration(
                "session-timeout",
                args.session_timeout.or(file.session_timeout),
                "10s",
            )?,
            assignment: s(args.assignment, file.assignment, "cooperative-sticky"),
            batch_size: args.batch_size.or(file.batch_size).unwrap_or(1000),
            batch_wait: duration("batch-wait", args.batch_wait.or(file.batch_wait), "0ms")?,
            plugin_deadline: duration(
                "plugin-deadline",
                args.plugin_deadline.or(file.plugin_deadline),
                "100ms",
            )?,
            plugin_memory_bytes: args
                .plugin_memory_mib
                .or(file.plugin_memory_mib)
                .unwrap_or(64)
                << 20,
            plugin_dir: args.plugin_dir.or(file.plugin_dir),
            rollback: crate::rules::trial::Policy {
                min_records: args
                    .rollback_after
                    .or(file.rollback_after)
                    .unwrap_or(1000)
                    .max(1),
                failure_margin: args
                    .rollback_failure_margin
                    .or(file.rollback_failure_margin)
                    .unwrap_or(1.0)
                    / 100.0,
                latency_ratio: args
                    .rollback_latency_ratio
                    .or(file.rollback_latency_ratio)
                    .unwrap_or(2.0),
            },
            compile_cache: compile_cache(args.compile_cache.or(file.compile_cache)),
            librdkafka: Properties(librdkafka),
            admin: {
                let text = s(args.admin, file.admin, "127.0.0.1:9464");
                text.parse()
                    .map_err(|e| invalid("admin", format!("{text:?} is not HOST:PORT: {e}")))?
            },
            admin_token: args
                .admin_token
                .or(file.admin_token)
                .filter(|t| !t.is_empty())
                .map(Secret),
            admin_address_file: args.admin_address_file,
            max_records: args.max_records,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The producer's `message.max.bytes` (librdkafka's default unless set
    /// with `-X`): the largest output record streamhost will try to send.
    pub fn max_message_bytes(&self) -> usize {
        ["producer.message.max.bytes", "message.max.bytes"]
            .iter()
            .find_map(|k| self.librdkafka.get(*k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1_000_000)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() {
            return Err(invalid("window", "must be longer than zero"));
        }
        // A window's span (window + lateness) is held in i32 milliseconds.
        if self.window + self.allowed_lateness > Duration::from_millis(i32::MAX as u64) {
            return Err(invalid(
                "window",
                "window + allowed-lateness must be under 24 days",
            ));
        }
        if self.key_idle > Duration::from_secs(100 * 365 * 86_400)
            || self.max_future > Duration::from_secs(100 * 365 * 86_400)
            || self.rebuild_margin > Duration::from_secs(100 * 365 * 86_400)
        {
            return Err(invalid(
                "key-idle",
                "key-idle, max-future and rebuild-margin must be under 100 years",
            ));
        }
        let r = &self.rollback;
        if !(0.0..=1.0).contains(&r.failure_margin) {
            return Err(invalid(
                "rollback-failure-margin",
                "must be between 0 and 100 percentage points",
            ));
        }
        if !(r.latency_ratio >= 1.0 && r.latency_ratio.is_finite()) {
            return Err(invalid("rollback-latency-ratio", "must be 1 or more"));
        }
        if (self.input_format == Format::Avro || self.output_format == Format::Avro)
            && self.registry.is_none()
        {
            return Err(invalid(
                "schema-registry",
                "the Avro format needs a schema registry URL",
            ));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err(invalid("workers", "must be 1 to 256"));
        }
        if !["cooperative-sticky", "range", "roundrobin"].contains(&self.assignment.as_str()) {
            return Err(invalid(
                "assignment",
                format!(
                    "{:?} is none of cooperative-sticky, range, roundrobin",
                    self.assignment
                ),
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch-size", "must be at least 1"));
        }
        if self.plugin_deadline.is_zero() {
            return Err(invalid("plugin-deadline", "must be longer than zero"));
        }
        if self.plugin_memory_bytes < 1 << 20 {
            return Err(invalid("plugin-memory-mib", "must be at least 1"));
        }
        if self.fields.len() > crate::decode::MAX_FIELDS {
            return Err(invalid(
                "fields",
                format!("at most {} fields", crate::decode::MAX_FIELDS),
            ));
        }
        if self.key_field == self.time_field {
            return Err(invalid("key-field", "must differ from time-field"));
        }
        if self
            .fields
            .iter()
            .any(|f| *f == self.key_field || *f == self.time_field)
        {
            return Err(invalid("fields", "must not name the key or time field"));
        }
        let outputs = [&self.alerts_topic, &self.enriched_topic, &self.dlq_topic];
        if outputs.contains(&&self.input_topic) {
            return Err(invalid("input-topic", "must differ from the output topics"));
        }
        Ok(())
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e: toml::de::Error| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = text.get(..at).unwrap_or_default();
        ConfigError::Toml {
            path: path.into(),
            line: before.matches('\n').count() + 1,
            column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
            message: e.message().trim_end().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_articles() {
        let s = Settings::resolve(RunArgs::default()).unwrap();
        assert_eq!(s.input_topic, "iot-sensors");
        assert_eq!(s.group, "stream-processor-group");
        assert_eq!(
            (
                s.alerts_topic.as_str(),
                s.enriched_topic.as_str(),
                s.dlq_topic.as_str()
            ),
            ("iot-alerts", "iot-enriched", "iot-dlq")
        );
        assert_eq!(s.window, Duration::from_secs(300));
        assert_eq!(
            s.fields,
            ["temperature", "humidity", "pressure", "battery_level"]
        );
        assert_eq!(s.plugin_deadline, Duration::from_millis(100));
        assert_eq!(s.plugin_memory_bytes, 64 << 20);
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("streamhost-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("streamhost.toml");
        std::fs::write(
            &path,
            "window = \"90s\"\ngroup = \"from-file\"\nbatch-size = 7\n[librdkafka]\n\"security.protocol\" = \"SSL\"\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            group: Some("from-flag".into()),
            librdkafka: vec![("linger.ms".into(), "1".into())],
            ..RunArgs::default()
        };
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.window, Duration::from_secs(90));
        assert_eq!(s.group, "from-flag");
        assert_eq!(s.batch_size, 7);
        assert_eq!(
            s.librdkafka.get("security.protocol").map(String::as_str),
            Some("SSL")
        );
        assert_eq!(s.librdkafka.get("linger.ms").map(String::as_str), Some("1"));

        std::fs::write(&path, "windw = \"5m\"\n").unwrap();
        let err = Settings::resolve(RunArgs {
            config: Some(path),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `windw`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let err = Settings::resolve(RunArgs {
            window: Some("soon".into()),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("window: \"soon\" is not a duration"),
            "{err}"
        );
        let err = Settings::resolve(RunArgs {
            batch_size: Some(0),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "batch-size: must be at least 1");
        let err = Settings::resolve(RunArgs {
            enriched_shape: Some("wide".into()),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "enriched-shape: \"wide\" is neither `full` nor `compact`"
        );
    }

    #[test]
    fn the_enriched_shape_and_the_batch_wait_have_their_defaults() {
        let s = Settings::resolve(RunArgs::default()).unwrap();
        assert_eq!(s.enriched_shape, crate::output::Shape::Full);
        assert_eq!(s.batch_wait, std::time::Duration::ZERO);
        let s = Settings::resolve(RunArgs {
            enriched_shape: Some("compact".into()),
            ..RunArgs::default()
        })
        .unwrap();
        assert_eq!(s.enriched_shape, crate::output::Shape::Compact);
    }

    #[test]
    fn secrets_never_print() {
        let dir = std::env::temp_dir().join(format!("streamhost-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("streamhost.toml");
        std::fs::write(
            &path,
            "admin-token = \"tok-123456\"\nschema-registry = \"http://r:8081\"\nschema-registry-auth = \"u:reg-pw-42\"\n[librdkafka]\n\"sasl.password\" = \"pw-98765\"\n\"consumer.ssl.key.password\" = \"kp-24680\"\n\"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----x\"\n\"sasl.username\" = \"alice\"\n",
        )
        .unwrap();
        let s = Settings::resolve(RunArgs {
            config: Some(path.clone()),
            ..RunArgs::default()
        })
        .unwrap();
        assert_eq!(
            s.librdkafka.get("sasl.password").map(String::as_str),
            Some("pw-98765")
        );
        let shown = format!("{s:?}");
        for secret in [
            "tok-123456",
            "reg-pw-42",
            "pw-98765",
            "kp-24680",
            "BEGIN PRIVATE KEY",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("alice"), "non-secrets still show: {shown}");
        // A syntax error on a line holding a secret does not quote it.
        std::fs::write(&path, "[librdkafka]\n\"sasl.password\" = \"pw-13579\n").unwrap();
        let err = Settings::resolve(RunArgs {
            config: Some(path),
            ..RunArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(":2:"), "names the line: {err}");
        assert!(!err.contains("pw-13579"), "{err}");
    }
}
