//! Kafka: the consumer that feeds the pipeline (`consumer`), the producer
//! that takes its outputs (`producer`), and the committer that stores input
//! offsets once their outputs are durable (`committer`).

pub mod committer;
pub mod consumer;
pub mod dead_letters;
pub mod producer;
pub mod replay;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Settings;
use crate::record::InRecord;

// ------------------------------------------------------------ diagnosis --
//
// What librdkafka reported that no retry fixes, over every client of the
// process (consumer, producer, replay reader): refused credentials, a failed
// TLS handshake, or a broker that closes every connection at the first
// request before any was ever answered (what a plaintext client sees from a
// TLS listener). librdkafka retries all of these forever; streamhost stops
// with a message that says what to check.

/// Connections a broker closed at the first request (`APIVERSION_QUERY`).
static FIRST_REQUEST_CLOSED: AtomicU32 = AtomicU32::new(0);
/// Whether a broker ever answered (metadata, or an assignment).
static REACHED: AtomicBool = AtomicBool::new(false);
/// A refused authentication or a failed TLS handshake, with librdkafka's reason.
static REFUSED: Mutex<Option<(RDKafkaErrorCode, String)>> = Mutex::new(None);

/// After this many connections closed at the first request, with no broker
/// ever answering, the cause is taken to be a security.protocol mismatch.
const FIRST_REQUEST_CLOSED_FATAL: u32 = 3;

/// Notes that a broker answered.
pub fn reached() {
    REACHED.store(true, Ordering::Relaxed);
}

/// The error no retry fixes, if librdkafka reported one: its code and what
/// to check.
pub fn fatal() -> Option<(RDKafkaErrorCode, String)> {
    if let Some((code, reason)) = REFUSED.lock().unwrap().clone() {
        let hint = match code {
            RDKafkaErrorCode::Authentication => {
                "authentication failed: the broker refused this client's SASL credentials \
                 (check sasl.mechanism, sasl.username and sasl.password)"
            }
            _ => {
                "the TLS handshake with the broker failed (check ssl.ca.location, and that \
                 the broker's certificate names the host in --brokers)"
            }
        };
        return Some((code, format!("{hint}; librdkafka: {reason}")));
    }
    if !REACHED.load(Ordering::Relaxed)
        && FIRST_REQUEST_CLOSED.load(Ordering::Relaxed) >= FIRST_REQUEST_CLOSED_FATAL
    {
        return Some((
            RDKafkaErrorCode::BrokerTransportFailure,
            "the broker closes every connection at the first request, as a TLS listener does \
             to a plaintext client: a TLS listener needs -X security.protocol=ssl (or sasl_ssl)"
                .into(),
        ));
    }
    None
}

/// Notes an error librdkafka reported, keeping those no retry fixes.
pub fn note_error(error: &KafkaError, reason: &str) {
    if let Some(code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)) =
        error.rdkafka_error_code()
    {
        REFUSED
            .lock()
            .unwrap()
            .get_or_insert_with(|| (code, reason.to_string()));
    }
}

/// An error that ends streamhost, with what to check when librdkafka said.
pub fn explain(error: KafkaError) -> anyhow::Error {
    match fatal() {
        Some((_, hint)) => anyhow::anyhow!("{hint} ({error})"),
        None => anyhow::Error::new(error),
    }
}

/// librdkafka's log lines, into `tracing` under the target `librdkafka`,
/// noting connections closed at the first request.
pub fn forward_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    if message.contains("incorrect security.protocol")
        || (message.contains("closed by peer") && message.contains("state APIVERSION_QUERY"))
    {
        FIRST_REQUEST_CLOSED.fetch_add(1, Ordering::Relaxed);
    }
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

/// The context of the producer and the replay consumer: librdkafka's logs
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
