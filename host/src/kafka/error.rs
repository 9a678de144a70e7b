//! What goes wrong at the Kafka edge ([`Error`]), and the diagnosis that
//! names what to check when librdkafka met a condition no retry fixes
//! ([`Fatal`]).
//!
//! librdkafka retries everything for ever: refused credentials, a failed TLS
//! handshake, a broker that closes every connection at the first request
//! before any was ever answered (what a plaintext client sees from a TLS
//! listener), a record batch it cannot read. It reports them through the
//! client context's callbacks, over every client of the process (consumer,
//! producer, span readers); the diagnosis keeps those no retry fixes, and
//! [`explain`] puts the cause into the error that ends streamhost.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// An error at the Kafka edge. Its messages (and, through `{:#}`, its
/// chain of sources) are what streamhost prints when it stops.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from librdkafka, explained by a condition no retry fixes.
    /// The error is in the message, not a source: the chain would repeat it.
    #[error("{fatal} ({error})")]
    Fatal {
        /// The condition, with what to check.
        fatal: Fatal,
        /// What librdkafka returned.
        error: KafkaError,
    },
    /// An error from librdkafka, as it reported it.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The brokers could not be asked about an output topic at start-up.
    #[error("asking the brokers about output topic {topic:?}")]
    TopicUnasked {
        /// The output topic.
        topic: String,
        /// Why not.
        #[source]
        source: Box<Error>,
    },
    /// A bootstrap address accepts TCP connections, yet no Kafka request was
    /// answered: most likely a TLS listener and a plaintext client.
    #[error(
        "{address} accepts connections but no Kafka request was answered: if it is a TLS \
         listener, set -X security.protocol=ssl (or sasl_ssl)"
    )]
    NotAnswered {
        /// The bootstrap address (`HOST:PORT`).
        address: String,
        /// The error the request ended with.
        #[source]
        source: Box<Error>,
    },
    /// An output topic that does not exist.
    #[error("output topic {topic:?} does not exist; create it (or fix its name) before starting")]
    MissingTopic {
        /// The output topic.
        topic: String,
    },
    /// An output topic the broker will not serve.
    #[error(
        "output topic {topic:?} is not usable: {why}; create it (or fix its name) before starting"
    )]
    UnusableTopic {
        /// The output topic.
        topic: String,
        /// The broker's error code, or that the topic has no partitions.
        why: String,
    },
    /// The producer went away before it reported a record's delivery.
    #[error("the producer was dropped before delivery")]
    ProducerDropped,
}

/// A condition librdkafka reported that no retry fixes, with what to check.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Fatal {
    /// The broker refused this client's SASL credentials.
    #[error(
        "authentication failed: the broker refused this client's SASL credentials \
         (check sasl.mechanism, sasl.username and sasl.password); librdkafka: {reason}"
    )]
    Authentication {
        /// librdkafka's reason.
        reason: String,
    },
    /// The TLS handshake with a broker failed.
    #[error(
        "the TLS handshake with the broker failed (check ssl.ca.location, and that \
         the broker's certificate names the host in --brokers); librdkafka: {reason}"
    )]
    Tls {
        /// librdkafka's reason.
        reason: String,
    },
    /// Brokers close every connection at the first request, and none ever
    /// answered: a security.protocol mismatch.
    #[error(
        "the broker closes every connection at the first request, as a TLS listener does \
         to a plaintext client: a TLS listener needs -X security.protocol=ssl (or sasl_ssl)"
    )]
    ProtocolMismatch,
    /// A consumer error the input consumer cannot get past ([`ErrorStreak`]).
    #[error("{reason}")]
    Unreadable {
        /// librdkafka's code.
        code: RDKafkaErrorCode,
        /// What it means, and which reader met it.
        reason: String,
    },
}

impl Fatal {
    /// The condition behind an error `code` librdkafka gave with `reason`.
    fn new(code: RDKafkaErrorCode, reason: String) -> Fatal {
        match code {
            RDKafkaErrorCode::Authentication => Fatal::Authentication { reason },
            RDKafkaErrorCode::SSL => Fatal::Tls { reason },
            code => Fatal::Unreadable { code, reason },
        }
    }

    /// librdkafka's code for the condition.
    pub fn code(&self) -> RDKafkaErrorCode {
        match self {
            Fatal::Authentication { .. } => RDKafkaErrorCode::Authentication,
            Fatal::Tls { .. } => RDKafkaErrorCode::SSL,
            Fatal::ProtocolMismatch => RDKafkaErrorCode::BrokerTransportFailure,
            Fatal::Unreadable { code, .. } => *code,
        }
    }
}

// ------------------------------------------------------------ diagnosis --

/// What the process learned from librdkafka about conditions no retry fixes.
struct Diagnosis {
    /// Connections a broker closed at the first request (`APIVERSION_QUERY`).
    first_request_closed: AtomicU32,
    /// Whether a broker ever answered (metadata, or an assignment).
    reached: AtomicBool,
    /// A refused authentication, a failed TLS handshake, or a consumer error
    /// the input consumer cannot get past ([`ErrorStreak`]).
    refused: Mutex<Option<Fatal>>,
}

/// Process-wide, not kept in each client's context: librdkafka calls
/// `ClientContext::log` and `error` on its own threads, for the client that
/// met the condition, while the error it explains is often another
/// client's (refused credentials the producer saw end the consumer's
/// `recv`), and [`explain`] is called by commands that hold no client at
/// all. A context-held diagnosis would need one shared handle threaded
/// through every client and every caller of `explain`, for the same effect.
static DIAGNOSIS: Diagnosis = Diagnosis {
    first_request_closed: AtomicU32::new(0),
    reached: AtomicBool::new(false),
    refused: Mutex::new(None),
};

/// After this many connections closed at the first request, with no broker
/// ever answering, the cause is taken to be a security.protocol mismatch.
const FIRST_REQUEST_CLOSED_FATAL: u32 = 3;

/// Notes that a broker answered.
pub fn reached() {
    DIAGNOSIS.reached.store(true, Ordering::Relaxed);
}

/// The condition no retry fixes, if librdkafka reported one.
pub fn fatal() -> Option<Fatal> {
    if let Some(refused) = DIAGNOSIS.refused.lock().unwrap().clone() {
        return Some(refused);
    }
    if !DIAGNOSIS.reached.load(Ordering::Relaxed)
        && DIAGNOSIS.first_request_closed.load(Ordering::Relaxed) >= FIRST_REQUEST_CLOSED_FATAL
    {
        return Some(Fatal::ProtocolMismatch);
    }
    None
}

/// Notes an error librdkafka reported, keeping those no retry fixes.
pub fn note_error(error: &KafkaError, reason: &str) {
    if let Some(code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)) =
        error.rdkafka_error_code()
    {
        DIAGNOSIS
            .refused
            .lock()
            .unwrap()
            .get_or_insert_with(|| Fatal::new(code, reason.to_string()));
    }
}

/// Notes a librdkafka log line that tells of a connection closed at the
/// first request.
pub(super) fn note_log(message: &str) {
    if message.contains("incorrect security.protocol")
        || (message.contains("closed by peer") && message.contains("state APIVERSION_QUERY"))
    {
        DIAGNOSIS
            .first_request_closed
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// An error that ends streamhost, with what to check when librdkafka said.
pub fn explain(error: KafkaError) -> Error {
    match fatal() {
        Some(fatal) => Error::Fatal { fatal, error },
        None => Error::Kafka(error),
    }
}

// --------------------------------------------------------- error streak --

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
    current: Option<(RDKafkaErrorCode, u32, Instant)>,
    /// Whether an end stops the process (noted for [`fatal`]).
    stops_process: bool,
}

impl ErrorStreak {
    /// Repeats of one error, with no record read, that end a reader...
    pub const LIMIT: u32 = 20;
    /// ...once they span at least this long.
    pub const SPAN: Duration = Duration::from_secs(30);

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
        self.error_at(code, reader, Instant::now())
    }

    fn error_at(
        &mut self,
        code: RDKafkaErrorCode,
        reader: &str,
        now: Instant,
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
            DIAGNOSIS
                .refused
                .lock()
                .unwrap()
                .get_or_insert(Fatal::new(code, reason));
        }
        KafkaError::MessageConsumptionFatal(code)
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    /// The messages, chains included, are the ones streamhost printed when
    /// they were built with `anyhow` (the texts below are those it wrote).
    #[test]
    fn messages_say_what_to_check_as_before() {
        let error = KafkaError::MetadataFetch(RDKafkaErrorCode::Authentication);
        let fatal = Error::Fatal {
            fatal: Fatal::new(RDKafkaErrorCode::Authentication, "refused".into()),
            error: error.clone(),
        };
        assert_eq!(
            format!("{:#}", anyhow::Error::new(fatal)),
            format!(
                "authentication failed: the broker refused this client's SASL credentials \
                 (check sasl.mechanism, sasl.username and sasl.password); librdkafka: refused \
                 ({error})"
            )
        );
        assert_eq!(
            Fatal::new(RDKafkaErrorCode::SSL, "bad".into()).to_string(),
            "the TLS handshake with the broker failed (check ssl.ca.location, and that the \
             broker's certificate names the host in --brokers); librdkafka: bad"
        );
        assert_eq!(
            Fatal::new(RDKafkaErrorCode::BadCompression, "why".into()).to_string(),
            "why"
        );
        let unasked = Error::TopicUnasked {
            topic: "out".into(),
            source: Box::new(Error::NotAnswered {
                address: "h:9".into(),
                source: Box::new(Error::Kafka(error.clone())),
            }),
        };
        let before = anyhow::Error::new(error)
            .context(
                "h:9 accepts connections but no Kafka request was answered: if it is a TLS \
                 listener, set -X security.protocol=ssl (or sasl_ssl)",
            )
            .context("asking the brokers about output topic \"out\"");
        assert_eq!(
            format!("{:#}", anyhow::Error::new(unasked)),
            format!("{before:#}")
        );
    }
}

#[cfg(test)]
mod error_streak_tests {
    use super::*;

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
