//! `Settings`: every setting of the main job, once. Its clap attributes
//! give each one's flag, environment variable and default (the default
//! written once, in `default_value`, and shown by `--help`); its serde
//! attributes give its file key (the field name, kebab-case) and how its
//! value is read. Flags, environment and defaults are read by clap, then
//! pass through serde with the file (see `Settings::resolve`), so that a
//! value is read and checked the same way wherever it was written.
//!
//! Clap's own `Settings::from_arg_matches` is never used: text settings
//! reach clap as the text given, and `RunArgs` carries them to serde.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

use super::values::{self, Format, Properties, Secret, as_given, key_value};
use crate::avro::{RegistryConfig, SubjectStrategy};
use crate::lifecycle::AlertMode;
use crate::output::Shape;
use crate::rules::trial::Policy;
use crate::text::time::EpochUnit;

/// Resolved settings of the main job: one field a setting, except
/// `registry` and `rollback`, built by `Settings::resolve` from the
/// private fields of the settings they are made of.
#[derive(clap::Args, serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        env = "STREAMHOST_BROKERS",
        value_name = "HOST:PORT",
        default_value = "localhost:9092"
    )]
    pub brokers: String,

    /// A rule component (.wasm); repeat for more. Rules of one kind run in the
    /// order given. The environment variable takes a comma-separated list.
    #[arg(
        long = "plugin",
        env = "STREAMHOST_PLUGINS",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    #[serde(default)]
    pub plugins: Vec<PathBuf>,

    /// Topic to consume.
    #[arg(
        long,
        env = "STREAMHOST_INPUT_TOPIC",
        value_name = "TOPIC",
        default_value = "iot-sensors"
    )]
    pub input_topic: String,

    /// Consumer group.
    #[arg(
        long,
        env = "STREAMHOST_GROUP",
        value_name = "GROUP",
        default_value = "stream-processor-group"
    )]
    pub group: String,

    /// Topic for alerts.
    #[arg(
        long,
        env = "STREAMHOST_ALERTS_TOPIC",
        value_name = "TOPIC",
        default_value = "iot-alerts"
    )]
    pub alerts_topic: String,

    /// Topic for enriched records.
    #[arg(
        long,
        env = "STREAMHOST_ENRICHED_TOPIC",
        value_name = "TOPIC",
        default_value = "iot-enriched"
    )]
    pub enriched_topic: String,

    /// Topic for records that could not be processed.
    #[arg(
        long,
        env = "STREAMHOST_DLQ_TOPIC",
        value_name = "TOPIC",
        default_value = "iot-dlq"
    )]
    pub dlq_topic: String,

    /// JSON member holding each record's key (windows are per key).
    #[arg(
        long,
        env = "STREAMHOST_KEY_FIELD",
        value_name = "NAME",
        default_value = "sensor_id"
    )]
    pub key_field: String,

    /// JSON member holding the event time: RFC 3339 text (no offset means
    /// UTC) or an epoch number in `--epoch-unit`.
    #[arg(
        long,
        env = "STREAMHOST_TIME_FIELD",
        value_name = "NAME",
        default_value = "timestamp"
    )]
    pub time_field: String,

    /// Numeric JSON members passed to rules and kept in windows, comma-separated.
    #[arg(
        long,
        env = "STREAMHOST_FIELDS",
        value_delimiter = ',',
        value_name = "NAMES",
        default_value = "temperature,humidity,pressure,battery_level"
    )]
    #[serde(deserialize_with = "values::names")]
    pub fields: Vec<String>,

    /// Window length in event time, e.g. 5m, 90s.
    #[arg(
        long,
        env = "STREAMHOST_WINDOW",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "5m"
    )]
    #[serde(deserialize_with = "values::text")]
    pub window: Duration,

    /// How far behind its key's newest event time a record may arrive and
    /// still enter its window; later records go to the dead-letter topic
    /// with reason `late`.
    #[arg(
        long,
        env = "STREAMHOST_ALLOWED_LATENESS",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "30s"
    )]
    #[serde(deserialize_with = "values::text")]
    pub allowed_lateness: Duration,

    /// Unit of event times written as numbers: `ms` or `s`.
    #[arg(
        long,
        env = "STREAMHOST_EPOCH_UNIT",
        value_name = "UNIT",
        value_parser = as_given(),
        default_value = "ms"
    )]
    #[serde(deserialize_with = "values::text")]
    pub epoch_unit: EpochUnit,

    /// How input records are written: `json`, or `avro` in the Confluent
    /// framing (needs --schema-registry).
    #[arg(
        long,
        env = "STREAMHOST_INPUT_FORMAT",
        value_name = "FORMAT",
        value_parser = as_given(),
        default_value = "json"
    )]
    #[serde(deserialize_with = "values::text")]
    pub input_format: Format,

    /// How enriched records and alerts are written: `json`, or `avro` in the
    /// Confluent framing with schemas registered (needs --schema-registry).
    /// Dead letters keep the input's bytes.
    #[arg(
        long,
        env = "STREAMHOST_OUTPUT_FORMAT",
        value_name = "FORMAT",
        value_parser = as_given(),
        default_value = "json"
    )]
    #[serde(deserialize_with = "values::text")]
    pub output_format: Format,

    /// What an enriched record carries: `full` (window start and end, mean,
    /// minimum and maximum of every field, trends, alert kinds, plugin
    /// versions, source position) or `compact` (window count and means,
    /// trends, alert kinds).
    #[arg(
        long,
        env = "STREAMHOST_ENRICHED_SHAPE",
        value_name = "SHAPE",
        value_parser = as_given(),
        default_value = "full"
    )]
    #[serde(deserialize_with = "values::text")]
    pub enriched_shape: Shape,

    /// Schema registry URL (Confluent REST API), for Avro.
    #[arg(long, env = "STREAMHOST_SCHEMA_REGISTRY", value_name = "URL", value_parser = as_given())]
    // Secret: a `user:password@` in it.
    schema_registry: Option<Secret>,

    /// How long one schema registry request may take before it is retried.
    #[arg(
        long,
        env = "STREAMHOST_SCHEMA_REGISTRY_TIMEOUT",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "10s"
    )]
    #[serde(deserialize_with = "values::text")]
    schema_registry_timeout: Duration,

    /// HTTP basic authentication for the schema registry, USER:PASSWORD.
    #[arg(
        long,
        env = "STREAMHOST_SCHEMA_REGISTRY_AUTH",
        value_name = "USER:PASSWORD",
        hide_env_values = true,
        value_parser = as_given()
    )]
    schema_registry_auth: Option<Secret>,

    /// How output schemas' subjects are named: `topic` (`<topic>-value`),
    /// `record` (the record's full name) or `topic-record`.
    #[arg(
        long,
        env = "STREAMHOST_SUBJECT_STRATEGY",
        value_name = "STRATEGY",
        value_parser = as_given(),
        default_value = "topic"
    )]
    #[serde(deserialize_with = "values::text")]
    pub subject_strategy: SubjectStrategy,

    /// Subject for the enriched topic's schemas, instead of the strategy's.
    #[arg(long, env = "STREAMHOST_ENRICHED_SUBJECT", value_name = "SUBJECT")]
    pub enriched_subject: Option<String>,

    /// Subject for the alerts topic's schemas, instead of the strategy's.
    #[arg(long, env = "STREAMHOST_ALERTS_SUBJECT", value_name = "SUBJECT")]
    pub alerts_subject: Option<String>,

    /// How far ahead of the processing time an event time may be; records
    /// further ahead go to the dead-letter topic with reason `future`.
    #[arg(
        long,
        env = "STREAMHOST_MAX_FUTURE",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "1h"
    )]
    #[serde(deserialize_with = "values::text")]
    pub max_future: Duration,

    /// How long a key may stay silent, beyond window + lateness and on its
    /// partition's event-time clock, before its window is dropped.
    #[arg(
        long,
        env = "STREAMHOST_KEY_IDLE",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "10m"
    )]
    #[serde(deserialize_with = "values::text")]
    pub key_idle: Duration,

    /// What becomes of the alerts rules raise: `every-record` (one alert
    /// record per record and rule that raised any, the article's
    /// behaviour) or `lifecycle` (only transitions, per key, rule and
    /// kind: `firing`, `repeat`, `resolved`; see docs/alerts.md).
    #[arg(
        long,
        env = "STREAMHOST_ALERTS",
        value_name = "MODE",
        value_parser = as_given(),
        default_value = "every-record"
    )]
    #[serde(deserialize_with = "values::text")]
    pub alerts: AlertMode,

    /// With `--alerts lifecycle`: event time between re-emissions
    /// (`repeat`) of an alert that keeps firing; `0s` never repeats.
    #[arg(
        long,
        env = "STREAMHOST_ALERT_REPEAT",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "10m"
    )]
    #[serde(deserialize_with = "values::text")]
    pub alert_repeat: Duration,

    /// With `--alerts lifecycle`: the topic each partition's firing alerts
    /// are written to, so that they follow the partition to its next owner
    /// (created when missing, with the input topic's partition count).
    /// [default: GROUP.streamhost-state]
    #[arg(long, env = "STREAMHOST_STATE_TOPIC", value_name = "TOPIC", value_parser = as_given())]
    #[serde(default, deserialize_with = "values::non_empty")]
    pub state_topic: Option<String>,

    /// With `--alerts lifecycle`: how often each partition's firing alerts
    /// are written to the state topic. A restore replays the input after
    /// the newest one (through the rules), so this bounds that replay.
    #[arg(
        long,
        env = "STREAMHOST_STATE_INTERVAL",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "5s"
    )]
    #[serde(deserialize_with = "values::text")]
    pub state_interval: Duration,

    /// Partition-parallel workers: each owns whole input partitions, their
    /// windows and its own plugin instances. [default: the number of cores]
    #[arg(long, env = "STREAMHOST_WORKERS", value_name = "N", required = false)]
    #[serde(default = "cores")]
    pub workers: usize,

    /// Extra event time read again when windows are rebuilt, to cover records
    /// whose Kafka timestamps are behind their place in the partition
    /// (producer clock skew, buffering).
    #[arg(
        long,
        env = "STREAMHOST_REBUILD_MARGIN",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "30s"
    )]
    #[serde(deserialize_with = "values::text")]
    pub rebuild_margin: Duration,

    /// Static group membership (`group.instance.id`): a process restarted
    /// with the same id within the session timeout gets its partitions back
    /// without a rebalance. Give each process of the group its own.
    #[arg(long, env = "STREAMHOST_INSTANCE_ID", value_name = "ID")]
    #[serde(default, deserialize_with = "values::non_empty")]
    pub instance_id: Option<String>,

    /// How long the group waits for a silent member before moving its
    /// partitions (`session.timeout.ms`).
    #[arg(
        long,
        env = "STREAMHOST_SESSION_TIMEOUT",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "10s"
    )]
    #[serde(deserialize_with = "values::text")]
    pub session_timeout: Duration,

    /// Partition assignment: `cooperative-sticky` (only moved partitions are
    /// revoked and rebuilt), `range` or `roundrobin`.
    #[arg(
        long,
        env = "STREAMHOST_ASSIGNMENT",
        value_name = "STRATEGY",
        default_value = "cooperative-sticky"
    )]
    pub assignment: String,

    /// Oldest and newest values per field passed to rules that ask for them.
    #[arg(
        long,
        env = "STREAMHOST_WINDOW_VALUES",
        value_name = "K",
        default_value_t = 3
    )]
    pub window_values: u32,

    /// Most records per batch handed to rules.
    #[arg(
        long,
        env = "STREAMHOST_BATCH_SIZE",
        value_name = "N",
        default_value_t = 1000
    )]
    pub batch_size: usize,

    /// How long a batch may wait for more records once the consumer has none
    /// queued. 0 cuts it at once: a record never waits for a later one.
    #[arg(
        long,
        env = "STREAMHOST_BATCH_WAIT",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "0ms"
    )]
    #[serde(deserialize_with = "values::text")]
    pub batch_wait: Duration,

    /// Longest a rule may run on one batch before it is interrupted.
    #[arg(
        long,
        env = "STREAMHOST_PLUGIN_DEADLINE",
        value_name = "DURATION",
        value_parser = as_given(),
        default_value = "100ms"
    )]
    #[serde(deserialize_with = "values::text")]
    pub plugin_deadline: Duration,

    /// Memory cap of each rule instance, in MiB.
    #[arg(
        id = "plugin_memory_mib",
        long = "plugin-memory-mib",
        env = "STREAMHOST_PLUGIN_MEMORY_MIB",
        value_name = "MIB",
        default_value_t = 64
    )]
    // Given in MiB, kept in bytes.
    #[serde(rename = "plugin-memory-mib", deserialize_with = "values::mib")]
    pub plugin_memory_bytes: usize,

    /// Folder of plugins: every `*.wasm` in it is loaded at start-up, and a
    /// plugin installed through the admin API is written there, so that a
    /// restart serves it again. [default: none]
    #[arg(long, env = "STREAMHOST_PLUGIN_DIR", value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// A candidate on trial (`plugins put --shadow|--canary`) is judged
    /// after this many of its records.
    #[arg(
        long,
        env = "STREAMHOST_ROLLBACK_AFTER",
        value_name = "RECORDS",
        default_value_t = 1000
    )]
    rollback_after: u64,

    /// A candidate is rolled back when its failure rate exceeds the serving
    /// version's by more than this, in percentage points.
    #[arg(
        long,
        env = "STREAMHOST_ROLLBACK_FAILURE_MARGIN",
        value_name = "POINTS",
        default_value_t = 1.0
    )]
    rollback_failure_margin: f64,

    /// A candidate is rolled back when its p99 call latency exceeds the
    /// serving version's times this (and by 1 ms at least).
    #[arg(
        long,
        env = "STREAMHOST_ROLLBACK_LATENCY_RATIO",
        value_name = "RATIO",
        default_value_t = 2.0
    )]
    rollback_latency_ratio: f64,

    /// Folder of compiled components, reused across restarts (owner-only;
    /// its files run as native code), or `off`.
    /// [default: $XDG_CACHE_HOME/streamhost/compiled, else ~/.cache/streamhost/compiled]
    #[arg(
        long,
        env = "STREAMHOST_COMPILE_CACHE",
        value_name = "DIR|off",
        value_parser = as_given()
    )]
    #[serde(
        default = "crate::rules::runtime::cache::default_dir",
        deserialize_with = "values::cache_dir"
    )]
    pub compile_cache: Option<PathBuf>,

    /// A reference table rules may read, as NAME=TOPIC (rows keyed like the
    /// input records' key) or NAME=TOPIC:FIELD (by the record's member
    /// FIELD); repeatable. The topic (compacted, JSON object values) is read
    /// whole before the first record is processed and followed after; a
    /// record sees its row as it is when its batch is processed.
    #[arg(
        long = "table",
        env = "STREAMHOST_TABLES",
        value_delimiter = ',',
        value_name = "NAME=TOPIC[:FIELD]",
        value_parser = as_given()
    )]
    #[serde(default)]
    pub tables: Vec<crate::table::TableSource>,

    /// Configuration for a plugin, as NAME.KEY=VALUE (e.g.
    /// anomaly.temperature_max=45), read by the plugin through
    /// `wasi:config/store`; repeatable. It is set over the plugin's own
    /// (the `[config]` table of the NAME.toml beside it), and the admin API
    /// cannot change it.
    #[arg(
        long = "plugin-config",
        value_name = "NAME.KEY=VALUE",
        value_parser = key_value,
        action = ArgAction::Append,
        required = false
    )]
    #[serde(default)]
    pub plugin_config: values::PluginConfigs,

    /// A librdkafka property for both consumer and producer, as kcat takes
    /// it (e.g. -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN);
    /// `consumer.` or `producer.` prefixes apply a property to one side only.
    #[arg(
        short = 'X',
        value_name = "KEY=VALUE",
        value_parser = key_value,
        action = ArgAction::Append,
        required = false
    )]
    #[serde(default)]
    pub librdkafka: Properties,

    /// Address of the admin HTTP API (plugins, /metrics, /healthz, /readyz);
    /// port 0 picks a free one.
    #[arg(
        long,
        env = "STREAMHOST_ADMIN",
        value_name = "ADDR",
        value_parser = as_given(),
        default_value = "127.0.0.1:9464"
    )]
    #[serde(deserialize_with = "values::text")]
    pub admin: SocketAddr,

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
        hide_env_values = true,
        value_parser = as_given()
    )]
    #[serde(default, deserialize_with = "values::non_empty")]
    pub admin_token: Option<Secret>,

    /// Stop after this many input records are processed and committed, and
    /// print a summary as JSON on stdout (for demos and tests).
    #[arg(long, env = "STREAMHOST_MAX_RECORDS", value_name = "N")]
    pub max_records: Option<u64>,

    /// The schema registry, when `schema-registry` is set, with
    /// `schema-registry-timeout` and `schema-registry-auth`. Needed by
    /// either format when it is Avro.
    #[arg(skip)]
    #[serde(skip)]
    pub registry: Option<RegistryConfig>,

    /// When a candidate on trial is rolled back on its own: the three
    /// `rollback-*` settings.
    #[arg(skip)]
    #[serde(skip)]
    pub rollback: Policy,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Settings {
    /// The producer's `message.max.bytes` (librdkafka's default unless set
    /// with `-X`): the largest output record streamhost will try to send.
    pub fn max_message_bytes(&self) -> usize {
        ["producer.message.max.bytes", "message.max.bytes"]
            .iter()
            .find_map(|k| self.librdkafka.get(*k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1_000_000)
    }

    /// The topic partitions' firing alerts are written to: `--state-topic`,
    /// else `GROUP.streamhost-state` (the group's characters that a topic
    /// name cannot hold become `_`).
    pub fn state_topic(&self) -> String {
        self.state_topic.clone().unwrap_or_else(|| {
            let group: String = self
                .group
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{group}.streamhost-state")
        })
    }

    /// Builds the settings made of others: `registry` and `rollback`.
    pub(super) fn combine(&mut self) -> Result<(), super::ConfigError> {
        self.rollback = Policy {
            min_records: self.rollback_after.max(1),
            failure_margin: self.rollback_failure_margin / 100.0,
            latency_ratio: self.rollback_latency_ratio,
        };
        let Some(url) = &self.schema_registry else {
            return Ok(());
        };
        let basic_auth = match &self.schema_registry_auth {
            None => None,
            Some(auth) => {
                let (user, password) = auth.expose().split_once(':').ok_or_else(|| {
                    super::invalid("schema-registry-auth", "expected USER:PASSWORD")
                })?;
                Some((user.to_string(), password.to_string()))
            }
        };
        self.registry = Some(RegistryConfig {
            url: url.expose().to_string(),
            timeout: self.schema_registry_timeout,
            basic_auth,
        });
        Ok(())
    }
}
