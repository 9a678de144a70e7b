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
/// A refused authentication, a failed TLS handshake, or a consumer error the
/// input consumer cannot get past ([`ErrorStreak`]), with the reason.
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
            RDKafkaErrorCode::SSL => {
                "the TLS handshake with the broker failed (check ssl.ca.location, and that \
                 the broker's certificate names the host in --brokers)"
            }
            _ => return Some((code, reason)),
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

/// Consumer errors no retry fixes, with what they mean. librdkafka reports
/// them for every fetch of the partition concerned, for ever: a record
/// compressed with a codec this build lacks is `NotImplemented`.
fn unreadable(code: RDKafkaErrorCode) -> Option<&'static str> {
    Some(match code {
        RDKafkaErrorCode::NotImplemented => {
            "librdkafka cannot read what the broker sent: this build of streamhost lacks a \
             feature the records need (a compression codec, for example)"
        }
        RDKafkaErrorCode::BadCompression => {
            "a record batch could not be decompressed (corrupt, or compressed with a codec \
             this build cannot read)"
        }
        RDKafkaErrorCode::UnsupportedCompressionType => {
            "the broker does not support the compression type asked for"
        }
        _ => return None,
    })
}

/// Whether a consumer error is about reaching the brokers: those repeat for
/// as long as a broker is down or a leader moves, and end by themselves.
fn transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::NetworkException
            | C::Resolve
            | C::NotLeaderForPartition
            | C::LeaderNotAvailable
            | C::NotCoordinator
            | C::CoordinatorNotAvailable
            | C::CoordinatorLoadInProgress
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::OffsetNotAvailable
            | C::NotEnoughReplicas
            | C::UnknownTopicOrPartition
            | C::PartitionEOF
    )
}

/// The consumer errors a reader saw since it last read a record. An error
/// no retry fixes ends the reader at once; any other error that is not
/// about reaching the brokers ends it once it has repeated
/// [`ErrorStreak::LIMIT`] times over [`ErrorStreak::SPAN`] with no record
/// read in between, instead of logging a warning for ever. The input
/// consumer's streak ([`ErrorStreak::stopping`]) notes the cause for
/// [`fatal`], so that the process stops with it named; the other readers'
/// callers decide what their end means (a rebuild goes on with empty
/// windows), so theirs only logs it.
#[derive(Default)]
pub struct ErrorStreak {
    /// The repeating code, how often, and since when.
    current: Option<(RDKafkaErrorCode, u32, std::time::Instant)>,
    /// Whether an end stops the process (noted for [`fatal`]).
    stops_process: bool,
}

impl ErrorStreak {
    pub const LIMIT: u32 = 20;
    pub const SPAN: std::time::Duration = std::time::Duration::from_secs(30);

    /// The input consumer's: its end stops the process, with the cause.
    pub fn stopping() -> ErrorStreak {
        ErrorStreak {
            stops_process: true,
            ..ErrorStreak::default()
        }
    }

    /// A record was read: the streak is over.
    pub fn progress(&mut self) {
        self.current = None;
    }

    /// Counts an error; `Err` with the error that ends the reader, after
    /// noting its cause for [`fatal`].
    pub fn error(&mut self, code: RDKafkaErrorCode, reader: &str) -> Result<(), KafkaError> {
        self.error_at(code, reader, std::time::Instant::now())
    }

    fn error_at(
        &mut self,
        code: RDKafkaErrorCode,
        reader: &str,
        now: std::time::Instant,
    ) -> Result<(), KafkaError> {
        if let Some(why) = unreadable(code) {
            return Err(self.end(code, format!("{why} ({reader}: {code})")));
        }
        let (count, since) = match self.current {
            Some((c, n, since)) if c == code => (n + 1, since),
            _ => (1, now),
        };
        self.current = Some((code, count, since));
        tracing::warn!(error = %code, reader, "Consumer error; continuing.");
        if !transient(code) && count >= Self::LIMIT && now - since >= Self::SPAN {
            return Err(self.end(
                code,
                format!(
                    "the consumer error `{code}` repeated {count} times over {} s with no \
                     record read in between ({reader})",
                    (now - since).as_secs()
                ),
            ));
        }
        Ok(())
    }

    fn end(&self, code: RDKafkaErrorCode, reason: String) -> KafkaError {
        tracing::error!(error = %code, %reason, "Consumer error no retry fixes.");
        if self.stops_process {
            REFUSED.lock().unwrap().get_or_insert((code, reason));
        }
        KafkaError::MessageConsumptionFatal(code)
    }
}

#[cfg(test)]
mod error_streak_tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ends(result: Result<(), KafkaError>) -> bool {
        matches!(result, Err(KafkaError::MessageConsumptionFatal(_)))
    }

    #[test]
    fn a_codec_this_build_lacks_ends_the_reader_at_once() {
        let mut streak = ErrorStreak::default();
        assert!(ends(streak.error_at(
            RDKafkaErrorCode::NotImplemented,
            "test",
            Instant::now()
        )));
    }

    #[test]
    fn a_repeating_error_ends_the_reader_only_after_its_count_and_span() {
        let t0 = Instant::now();
        let code = RDKafkaErrorCode::InvalidMessage;
        let mut streak = ErrorStreak::default();
        // Many repeats in a moment: not yet.
        for _ in 0..ErrorStreak::LIMIT * 3 {
            assert!(!ends(streak.error_at(code, "test", t0)));
        }
        // A record read in between starts the count and the span again:
        // without that, the next error, past the span, would end it.
        streak.progress();
        let late = t0 + ErrorStreak::SPAN + Duration::from_secs(1);
        for _ in 0..ErrorStreak::LIMIT - 1 {
            assert!(!ends(streak.error_at(code, "test", late)));
        }
        // The count reached, but the span not yet: still going.
        assert!(!ends(streak.error_at(code, "test", late)));
        // Both reached.
        let later = late + ErrorStreak::SPAN;
        assert!(ends(streak.error_at(code, "test", later)));
    }

    #[test]
    fn a_broker_that_is_down_never_ends_the_reader() {
        let t0 = Instant::now();
        let mut streak = ErrorStreak::default();
        for i in 0..1000u64 {
            let at = t0 + Duration::from_secs(i);
            assert!(!ends(streak.error_at(
                RDKafkaErrorCode::BrokerTransportFailure,
                "test",
                at
            )));
        }
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
