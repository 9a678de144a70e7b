//! Kafka out: an idempotent producer (acks=all) for the three output topics,
//! and the committer that stores a batch's input offsets once every output
//! of that batch and of all batches before it has been acknowledged.
//!
//! Batches complete in order because the committer awaits them in order, on
//! its own thread, so the stored offset of a partition never passes a record
//! whose outputs are not yet durable.
//!
//! A delivery that fails for a reason tied to the record itself (the broker
//! finds it too large for the topic, or invalid) is replaced by a reference
//! dead letter (reason `output-too-large` or `output-refused`, the source
//! position, the broker's error), awaited like any output: one bad record
//! never stops the stream. Any other failure (broker unreachable past the
//! producer's retries, authorization, unknown topic) stops the service:
//! nothing after it is stored, and on restart the unacknowledged records are
//! consumed again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::Settings;
use crate::route::{self, Dest, Failure, OutRecord, Reason};
use crate::source::{Source, SourceContext};

pub struct Sink {
    producer: FutureProducer,
    /// The input topic, named in dead letters.
    input: String,
    enriched: String,
    alerts: String,
    dead_letter: String,
}

impl Sink {
    pub fn new(settings: &Settings) -> KafkaResult<Sink> {
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
        crate::source::apply_properties(&mut config, settings, "producer");
        Ok(Sink {
            producer: config.create()?,
            input: settings.input_topic.clone(),
            enriched: settings.enriched_topic.clone(),
            alerts: settings.alerts_topic.clone(),
            dead_letter: settings.dlq_topic.clone(),
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    pub fn topic(&self, dest: Dest) -> &str {
        match dest {
            Dest::Enriched => &self.enriched,
            Dest::Alerts => &self.alerts,
            Dest::DeadLetter => &self.dead_letter,
        }
    }

    /// Checks that the output topics exist, so that a missing or misspelt
    /// one stops streamhost before it consumes (and would repeat) anything.
    pub fn check_topics(&self, timeout: Duration) -> anyhow::Result<()> {
        for topic in [&self.enriched, &self.alerts, &self.dead_letter] {
            let md = self
                .producer
                .client()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| anyhow::anyhow!("asking the brokers about output topic {topic:?}: {e}"))?;
            match md.topics().iter().find(|t| t.name() == topic.as_str()) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
                Some(t) => anyhow::bail!(
                    "output topic {topic:?} is not usable: {}; create it (or fix its name) before starting",
                    t.error().map(|e| format!("{:?}", RDKafkaErrorCode::from(e))).unwrap_or_else(|| "it has no partitions".into())
                ),
                None => anyhow::bail!("output topic {topic:?} does not exist; create it (or fix its name) before starting"),
            }
        }
        Ok(())
    }

    /// Hands every record to the producer, in order, and returns their
    /// delivery futures. Waits (without blocking the runtime) while the
    /// producer's queue is full.
    pub async fn send(&self, records: &[OutRecord]) -> KafkaResult<Vec<(DeliveryFuture, Origin)>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let origin = Origin { partition: r.source.0, offset: r.source.1, dest: r.dest };
            let delivery = match self.send_one(r).await {
                // The pipeline sizes outputs against message.max.bytes, but
                // should the producer still refuse one as too large, a
                // reference dead letter takes its place.
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                    tracing::warn!(partition = origin.partition, offset = origin.offset, "The producer refused an output as too large; dead-lettering a reference.");
                    let failure = Failure {
                        reason: Reason::OutputTooLarge,
                        message: format!("the producer refused its {} record as larger than its message.max.bytes", r.dest.name()),
                        plugin: None,
                    };
                    let source = route::Source { topic: &self.input, partition: origin.partition, offset: origin.offset };
                    self.send_one(&route::dead_letter(source, None, Vec::new(), &failure)).await?
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
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            record = record.headers(headers);
        }
        if let Some(key) = &r.key {
            record = record.key(&key[..]);
        }
        record
    }

    async fn send_one(&self, r: &OutRecord) -> KafkaResult<DeliveryFuture> {
        let mut record = self.record(r);
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return Ok(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Sends one record from a thread outside the runtime and waits for its
    /// acknowledgement.
    fn send_blocking(&self, r: &OutRecord) -> Result<(), String> {
        let mut record = self.record(r);
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(d) => break d,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        };
        match block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("the producer was dropped before delivery".into()),
        }
    }
}

/// Where an output came from, to dead-letter it if the broker refuses it.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub partition: i32,
    pub offset: i64,
    pub dest: Dest,
}

/// Whether a delivery error is about the record itself, not the stream.
fn record_error(e: &KafkaError) -> Option<Reason> {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code()? {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => Some(Reason::OutputTooLarge),
        C::InvalidMessage | C::InvalidRecord | C::InvalidTimestamp => Some(Reason::OutputRefused),
        _ => None,
    }
}

/// A batch whose outputs are on their way.
pub struct Pending {
    /// Each output's delivery, with where its record came from.
    pub deliveries: Vec<(DeliveryFuture, Origin)>,
    /// Offset to resume from, per partition, once this batch is durable.
    pub next_offsets: Vec<(i32, i64)>,
    pub records: u64,
}

/// Stores offsets of batches whose outputs are all acknowledged, in order.
pub struct Committer {
    tx: Option<SyncSender<Pending>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What the committer thread and the pipeline share.
struct Shared {
    in_flight: Mutex<usize>,
    /// Signalled whenever `in_flight` drops.
    settled: std::sync::Condvar,
    committed_records: AtomicU64,
    failure: Mutex<Option<String>>,
    /// Woken when `failure` is set, so that an idle pipeline stops too.
    failed: tokio::sync::Notify,
}

impl Committer {
    /// `depth` bounds the batches awaiting acknowledgement; `submit` waits
    /// when it is reached, which is the pipeline's back-pressure.
    pub fn start(source: &Source, sink: Arc<Sink>, depth: usize) -> Committer {
        let (tx, rx) = sync_channel::<Pending>(depth);
        let shared = Arc::new(Shared {
            in_flight: Mutex::new(0),
            settled: std::sync::Condvar::new(),
            committed_records: AtomicU64::new(0),
            failure: Mutex::new(None),
            failed: tokio::sync::Notify::new(),
        });
        let consumer = source.consumer();
        let topic = source.topic().to_string();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("streamhost-commit".into())
                .spawn(move || commit_loop(rx, &consumer, &topic, &sink, &shared))
                .expect("spawning the committer")
        };
        Committer { tx: Some(tx), thread: Some(thread), shared }
    }

    /// Queues a batch; blocks while `depth` batches are already waiting.
    pub fn submit(&self, pending: Pending) {
        *self.shared.in_flight.lock().unwrap() += 1;
        if let Some(tx) = &self.tx {
            if tx.send(pending).is_err() {
                self.shared.settle();
            }
        }
    }

    /// Records whose outputs are all acknowledged and offsets stored.
    pub fn committed_records(&self) -> u64 {
        self.shared.committed_records.load(Ordering::SeqCst)
    }

    /// The delivery failure that stopped the committer, if any.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().unwrap().clone()
    }

    /// Resolves once a delivery has failed for good.
    pub async fn failed(&self) {
        loop {
            let notified = self.shared.failed.notified();
            if self.failure().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// A function that waits until every submitted batch is settled (used
    /// on revoke, together with a producer flush).
    pub fn waiter(&self) -> impl Fn(Duration) -> bool + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |timeout| {
            let guard = shared.in_flight.lock().unwrap();
            let (guard, _) = shared.settled.wait_timeout_while(guard, timeout, |n| *n > 0).unwrap();
            *guard == 0
        }
    }

    /// Waits for every submitted batch to settle and stops the thread.
    pub fn finish(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn settle(&self) {
        *self.in_flight.lock().unwrap() -= 1;
        self.settled.notify_all();
    }

    fn fail(&self, error: String) {
        tracing::error!(%error, "An output could not be delivered; no further offsets will be committed.");
        self.failure.lock().unwrap().get_or_insert(error);
        self.failed.notify_waiters();
        self.failed.notify_one();
    }
}

fn commit_loop(rx: Receiver<Pending>, consumer: &StreamConsumer<SourceContext>, topic: &str, sink: &Sink, shared: &Shared) {
    for pending in rx {
        let mut ok = shared.failure.lock().unwrap().is_none();
        for (d, origin) in pending.deliveries {
            let error = match block_on(d) {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                Err(_) => {
                    if ok {
                        shared.fail("the producer was dropped before delivery".into());
                    }
                    ok = false;
                    continue;
                }
            };
            if !ok {
                continue;
            }
            // A record the broker refuses for what it is: dead-letter a
            // reference to it instead, and go on.
            if let Some(reason) = record_error(&error).filter(|_| origin.dest != Dest::DeadLetter) {
                let failure = Failure {
                    reason,
                    message: format!("the broker refused its {} record: {error}", origin.dest.name()),
                    plugin: None,
                };
                let source = route::Source { topic, partition: origin.partition, offset: origin.offset };
                let reference = route::dead_letter(source, None, Vec::new(), &failure);
                tracing::warn!(partition = origin.partition, offset = origin.offset, %error, "Output refused by the broker; dead-lettered a reference to its record.");
                match sink.send_blocking(&reference) {
                    Ok(()) => continue,
                    Err(e) => {
                        shared.fail(format!("{error}; and its reference dead letter failed too: {e}"));
                        ok = false;
                        continue;
                    }
                }
            }
            shared.fail(error.to_string());
            ok = false;
        }
        if ok {
            Source::store(consumer, topic, &pending.next_offsets);
            shared.committed_records.fetch_add(pending.records, Ordering::SeqCst);
        }
        shared.settle();
    }
}

/// Blocks the committer thread on one delivery future.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Thread(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Flushes the producer, waiting up to `timeout` for every queued record.
pub fn flush(producer: &FutureProducer, timeout: Duration) {
    if let Err(error) = producer.flush(timeout) {
        tracing::warn!(%error, "Producer flush did not finish.");
    }
}
