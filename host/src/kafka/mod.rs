//! Kafka: the consumer that feeds the pipeline (`consumer`), the producer
//! that takes its outputs (`producer`), the committer that stores input
//! offsets once their outputs are durable (`committer`), the readers that
//! read a topic again outside the group (`span`, `dead_letters`), the
//! alert state each partition carries to its next owner (`state`), which
//! partition and group member hold a key (`group`), and what goes wrong on
//! the way (`error`).

pub mod committer;
pub mod consumer;
pub mod dead_letters;
pub mod error;
pub mod group;
pub mod producer;
pub mod span;
pub mod state;
pub mod table;

pub use error::{Error, ErrorStreak, Fatal, explain, fatal, note_error, reached};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Settings;
use crate::record::InRecord;

/// librdkafka's log lines, into `tracing` under the target `librdkafka`,
/// noting connections closed at the first request.
pub fn forward_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    error::note_log(message);
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "{facility} {message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{facility} {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{facility} {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{facility} {message}"),
    }
}

/// The context of the producer and the span readers: librdkafka's logs
/// and errors into `tracing`, and into the diagnosis.
#[derive(Clone, Copy, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        note_error(&error, reason);
        // librdkafka's own log line says the same, at its level.
        tracing::debug!(target: "librdkafka", %error, reason, "Kafka client error.");
    }
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

/// A consumer that never joins its group (`assign` only; librdkafka still
/// wants a group id): the settings' brokers, no automatic commit or offset
/// store, `own` properties, then the `-X` consumer properties (which win),
/// without those that only a group member uses.
pub fn assign_only(
    settings: &Settings,
    group: &str,
    client_id: &str,
    own: &[(&str, &str)],
) -> rdkafka::error::KafkaResult<rdkafka::consumer::BaseConsumer<LogContext>> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("client.id", client_id);
    for (k, v) in own {
        config.set(*k, *v);
    }
    apply_properties(&mut config, settings, "consumer");
    for key in ["group.instance.id", "partition.assignment.strategy"] {
        config.remove(key);
    }
    config.create_with_context(LogContext)
}

/// Applies `-X` properties: unprefixed ones to both clients, `consumer.` /
/// `producer.` prefixed ones to that client only.
pub fn apply_properties(config: &mut ClientConfig, settings: &Settings, side: &str) {
    for (k, v) in &settings.librdkafka {
        match k.split_once('.') {
            Some((prefix, rest)) if prefix == side => {
                config.set(rest, v);
            }
            Some(("consumer" | "producer", _)) => {}
            _ => {
                config.set(k, v);
            }
        }
    }
}

/// What one poll of an assign-only reader gave.
pub enum Polled<'c> {
    /// A record.
    Record(BorrowedMessage<'c>),
    /// The end of a partition (with `enable.partition.eof`).
    PartitionEnd,
    /// Nothing yet, or a consumer error that does not end the reader.
    Nothing,
}

/// The polls of an assign-only reader (the window rebuild reader, the
/// dead-letter reader), which fail once the broker left the reader
/// [`SpanPoller::STALL`] without a record, or once a consumer error ends its
/// [`ErrorStreak`].
pub struct SpanPoller {
    /// The reader, as warnings and errors name it.
    reader: &'static str,
    /// When the broker was last heard from (a record, or an error).
    heard: Instant,
    errors: ErrorStreak,
}

impl SpanPoller {
    /// How long the broker may leave a read without a record before it fails.
    pub const STALL: Duration = Duration::from_secs(30);

    /// The polls of `reader`, from now.
    pub fn new(reader: &'static str) -> SpanPoller {
        SpanPoller {
            reader,
            heard: Instant::now(),
            errors: ErrorStreak::default(),
        }
    }

    /// Polls `consumer` once, for up to 200 ms.
    pub fn poll<'c, C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &'c BaseConsumer<C>,
    ) -> KafkaResult<Polled<'c>> {
        match consumer.poll(Duration::from_millis(200)) {
            None if self.heard.elapsed() > Self::STALL => Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::RequestTimedOut,
            )),
            None => Ok(Polled::Nothing),
            Some(Err(KafkaError::PartitionEOF(_))) => Ok(Polled::PartitionEnd),
            Some(Err(KafkaError::MessageConsumption(code))) => {
                self.errors.error(code, self.reader)?;
                self.heard = Instant::now();
                Ok(Polled::Nothing)
            }
            Some(Err(e)) => Err(e),
            Some(Ok(m)) => {
                self.heard = Instant::now();
                self.errors.progress();
                Ok(Polled::Record(m))
            }
        }
    }
}

/// Per partition of a batch: the offset to resume from once the batch is
/// durable, and how many records it holds.
pub fn batch_offsets(batch: &[InRecord]) -> BTreeMap<i32, (i64, u64)> {
    let mut per_partition: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    for r in batch {
        let e = per_partition.entry(r.partition).or_insert((0, 0));
        e.0 = e.0.max(r.offset + 1);
        e.1 += 1;
    }
    per_partition
}

/// A consumed record's headers as text (a value that is not UTF-8 is read
/// lossily; a header without a value is empty).
pub fn header_strings<C>(m: &impl rdkafka::Message) -> C
where
    C: FromIterator<(String, String)> + Default,
{
    use rdkafka::message::Headers as _;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
