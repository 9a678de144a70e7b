//! Kafka out: an idempotent producer (acks=all) for the three output topics,
//! and the committer that stores a batch's input offsets once every output
//! of that batch and of all batches before it has been acknowledged.
//!
//! Batches complete in order because the committer awaits them in order, on
//! its own thread, so the stored offset of a partition never passes a record
//! whose outputs are not yet durable. If a delivery fails for good (the
//! producer already retried it), nothing after it is stored and the service
//! stops: on restart the unacknowledged records are consumed again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
use crate::route::{Dest, OutRecord};
use crate::source::{Source, SourceContext};

pub struct Sink {
    producer: FutureProducer,
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

    /// Hands every record to the producer, in order, and returns their
    /// delivery futures. Waits (without blocking the runtime) while the
    /// producer's queue is full.
    pub async fn send(&self, records: &[OutRecord]) -> KafkaResult<Vec<DeliveryFuture>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
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
            loop {
                match self.producer.send_result(record) {
                    Ok(d) => {
                        deliveries.push(d);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        Ok(deliveries)
    }
}

/// A batch whose outputs are on their way.
pub struct Pending {
    pub deliveries: Vec<DeliveryFuture>,
    /// Offset to resume from, per partition, once this batch is durable.
    pub next_offsets: Vec<(i32, i64)>,
    pub records: u64,
}

/// Stores offsets of batches whose outputs are all acknowledged, in order.
pub struct Committer {
    tx: Option<SyncSender<Pending>>,
    thread: Option<JoinHandle<()>>,
    in_flight: Arc<AtomicUsize>,
    committed_records: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Committer {
    /// `depth` bounds the batches awaiting acknowledgement; `submit` waits
    /// when it is reached, which is the pipeline's back-pressure.
    pub fn start(source: &Source, depth: usize) -> Committer {
        let (tx, rx) = sync_channel::<Pending>(depth);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let committed_records = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let consumer = source.consumer();
        let topic = source.topic().to_string();
        let thread = {
            let (in_flight, committed_records, failure) = (in_flight.clone(), committed_records.clone(), failure.clone());
            std::thread::Builder::new()
                .name("streamhost-commit".into())
                .spawn(move || commit_loop(rx, &consumer, &topic, &in_flight, &committed_records, &failure))
                .expect("spawning the committer")
        };
        Committer { tx: Some(tx), thread: Some(thread), in_flight, committed_records, failure }
    }

    /// Queues a batch; blocks while `depth` batches are already waiting.
    pub fn submit(&self, pending: Pending) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = &self.tx {
            if tx.send(pending).is_err() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Records whose outputs are all acknowledged and offsets stored.
    pub fn committed_records(&self) -> u64 {
        self.committed_records.load(Ordering::SeqCst)
    }

    /// The delivery failure that stopped the committer, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }

    /// A function that waits until every submitted batch is settled (used
    /// on revoke, together with a producer flush).
    pub fn waiter(&self) -> impl Fn(Duration) -> bool + Send + Sync + 'static {
        let in_flight = self.in_flight.clone();
        move |timeout| {
            let deadline = std::time::Instant::now() + timeout;
            while in_flight.load(Ordering::SeqCst) > 0 {
                if std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            true
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

fn commit_loop(
    rx: Receiver<Pending>,
    consumer: &StreamConsumer<SourceContext>,
    topic: &str,
    in_flight: &AtomicUsize,
    committed_records: &AtomicU64,
    failure: &Mutex<Option<String>>,
) {
    for pending in rx {
        let mut ok = failure.lock().unwrap().is_none();
        for d in pending.deliveries {
            let error = match block_on(d) {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer was dropped before delivery".to_string(),
            };
            if ok {
                tracing::error!(%error, "An output could not be delivered; no further offsets will be committed.");
                *failure.lock().unwrap() = Some(error);
            }
            ok = false;
        }
        if ok {
            Source::store(consumer, topic, &pending.next_offsets);
            committed_records.fetch_add(pending.records, Ordering::SeqCst);
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
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
