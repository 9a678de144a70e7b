//! Kafka out: an idempotent producer (acks=all) for the three output
//! topics. It checks at start-up that they can be used, hands records to
//! librdkafka in order, and replaces a record the producer itself refuses
//! as too large by a reference dead letter.

use std::time::Duration;

use futures::executor::block_on;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::Settings;
use crate::output;
use crate::record::{Dest, Failure, OutRecord, Reason, SourcePos};

use super::{Error, LogContext, apply_properties};

/// The producer, its logs into `tracing`.
pub type OutputProducer = FutureProducer<LogContext>;

/// Kafka out: the producer, and the output topics it writes to.
pub struct KafkaSink {
    producer: OutputProducer,
    /// The input topic, named in dead letters.
    input: String,
    enriched: String,
    alerts: String,
    dead_letter: String,
    brokers: String,
    /// Whether the clients speak plaintext (no `security.protocol` or
    /// `plaintext`/`sasl_plaintext`).
    plaintext: bool,
}

impl KafkaSink {
    /// The producer, with the settings' brokers and `-X` properties.
    pub fn new(settings: &Settings) -> KafkaResult<KafkaSink> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("compression.type", "lz4")
            .set("client.id", "streamhost");
        apply_properties(&mut config, settings, "producer");
        Ok(KafkaSink {
            producer: config.create_with_context(LogContext)?,
            input: settings.input_topic.clone(),
            enriched: settings.enriched_topic.clone(),
            alerts: settings.alerts_topic.clone(),
            dead_letter: settings.dlq_topic.clone(),
            brokers: settings.brokers.clone(),
            plaintext: settings
                .librdkafka
                .get("security.protocol")
                .is_none_or(|p| p.to_ascii_lowercase().contains("plaintext")),
        })
    }

    /// The producer itself (to flush it).
    pub fn producer(&self) -> &OutputProducer {
        &self.producer
    }

    /// The topic outputs for `dest` go to.
    pub fn topic(&self, dest: Dest) -> &str {
        match dest {
            Dest::Enriched => &self.enriched,
            Dest::Alerts => &self.alerts,
            Dest::DeadLetter => &self.dead_letter,
        }
    }

    /// Checks that the output topics exist, so that a missing or misspelt
    /// one stops streamhost before it consumes (and would repeat) anything.
    pub fn check_topics(&self, timeout: Duration) -> Result<(), Error> {
        let started = std::time::Instant::now();
        for topic in [&self.enriched, &self.alerts, &self.dead_letter] {
            // Asked in short rounds, so that an error no retry fixes (refused
            // credentials, say) ends the wait at once.
            let md = loop {
                match self
                    .producer
                    .client()
                    .fetch_metadata(Some(topic), Duration::from_secs(1))
                {
                    Ok(md) => break md,
                    Err(e) if super::fatal().is_some() || started.elapsed() >= timeout => {
                        let mut error = super::explain(e);
                        if matches!(error, Error::Kafka(_))
                            && let Some(address) = self.accepting()
                        {
                            error = Error::NotAnswered {
                                address,
                                source: Box::new(error),
                            };
                        }
                        return Err(Error::TopicUnasked {
                            topic: topic.clone(),
                            source: Box::new(error),
                        });
                    }
                    Err(_) => {}
                }
            };
            super::reached();
            match md.topics().iter().find(|t| t.name() == topic.as_str()) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
                Some(t) => {
                    return Err(Error::UnusableTopic {
                        topic: topic.clone(),
                        why: t
                            .error()
                            .map(|e| format!("{:?}", RDKafkaErrorCode::from(e)))
                            .unwrap_or_else(|| "it has no partitions".into()),
                    });
                }
                None => {
                    return Err(Error::MissingTopic {
                        topic: topic.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Why brokers that could not be asked anything may be unreachable: a
    /// plaintext client whose bootstrap address accepts TCP connections is
    /// most likely talking to a TLS listener, which closes them at the first
    /// request. The first such address, if the client speaks plaintext.
    fn accepting(&self) -> Option<String> {
        use std::net::{TcpStream, ToSocketAddrs};
        if !self.plaintext {
            return None;
        }
        let open = self.brokers.split(',').find(|b| {
            b.trim()
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
        })?;
        Some(open.trim().to_string())
    }

    /// Hands every record to the producer, in order, and returns their
    /// delivery futures. Blocks the calling thread (a worker) while the
    /// producer's queue is full.
    pub fn send(&self, records: &[OutRecord]) -> KafkaResult<Vec<(DeliveryFuture, Origin)>> {
        let mut deliveries = Vec::with_capacity(records.len());
        // Alerts first: an alert should not wait behind its batch's enriched
        // records. Each topic still gets its records in input order.
        let alerts = records.iter().filter(|r| r.dest == Dest::Alerts);
        let others = records.iter().filter(|r| r.dest != Dest::Alerts);
        for r in alerts.chain(others) {
            let origin = Origin {
                partition: r.source.0,
                offset: r.source.1,
                dest: r.dest,
            };
            let delivery = match self.enqueue(r) {
                // The pipeline sizes outputs against message.max.bytes, but
                // should the producer still refuse one as too large, a
                // reference dead letter takes its place.
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                    tracing::warn!(
                        partition = origin.partition,
                        offset = origin.offset,
                        "The producer refused an output as too large; dead-lettering a reference."
                    );
                    let failure = Failure {
                        reason: Reason::OutputTooLarge,
                        message: format!(
                            "the producer refused its {} record as larger than its message.max.bytes",
                            r.dest.name()
                        ),
                        plugin: None,
                    };
                    let source = SourcePos {
                        topic: &self.input,
                        partition: origin.partition,
                        offset: origin.offset,
                    };
                    self.enqueue(&output::dead_letter(source, None, Vec::new(), &failure))?
                }
                other => other?,
            };
            deliveries.push((delivery, origin));
        }
        Ok(deliveries)
    }

    /// The producer's view of an output record.
    fn record<'a>(&'a self, r: &'a OutRecord) -> FutureRecord<'a, [u8], [u8]> {
        let mut record = FutureRecord::to(self.topic(r.dest)).payload(&r.payload[..]);
        if !r.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            record = record.headers(headers);
        }
        if let Some(key) = &r.key {
            record = record.key(&key[..]);
        }
        record
    }

    /// Hands one record to the producer, waiting while its queue is full.
    fn enqueue(&self, r: &OutRecord) -> KafkaResult<DeliveryFuture> {
        let mut record = self.record(r);
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return Ok(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Hands records of the alert state topic `topic` to the producer, in
    /// order, and returns their delivery futures.
    pub fn send_state(
        &self,
        topic: &str,
        records: &[super::state::StateRecord],
    ) -> KafkaResult<Vec<DeliveryFuture>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let mut record = FutureRecord::to(topic)
                .partition(r.partition)
                .key(r.key.as_bytes())
                .payload(&r.payload[..]);
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(d) => break d,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => return Err(e),
                }
            };
            deliveries.push(delivery);
        }
        Ok(deliveries)
    }

    /// Sends one record and waits for its acknowledgement.
    pub(super) fn send_blocking(&self, r: &OutRecord) -> Result<(), Error> {
        let delivery = self.enqueue(r)?;
        match block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.into()),
            Err(_) => Err(Error::ProducerDropped),
        }
    }
}

/// Where an output came from, to dead-letter it if the broker refuses it.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// The input record's partition.
    pub partition: i32,
    /// The input record's offset.
    pub offset: i64,
    /// Which output it is.
    pub dest: Dest,
}

/// Flushes the producer, waiting up to `timeout` for every queued record.
pub fn flush(producer: &OutputProducer, timeout: Duration) {
    if let Err(error) = producer.flush(timeout) {
        tracing::warn!(%error, "Producer flush did not finish.");
    }
}
