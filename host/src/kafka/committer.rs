//! The committer: stores a batch's input offsets once every output of that
//! batch and of all batches before it has been acknowledged.
//!
//! The committer has one lane per worker, each a thread that awaits its
//! worker's batches in order. A partition belongs to one worker, so its
//! batches complete in order and its stored offset never passes a record
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

use futures::executor::block_on;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::DeliveryFuture;

use crate::output;
use crate::record::{Dest, Failure, Reason, SourcePos};

use super::consumer::{ConsumerContext, KafkaSource};
use super::producer::{KafkaSink, Origin};

/// A batch whose outputs are on their way.
pub struct Pending {
    /// Each output's delivery, with where its record came from.
    pub deliveries: Vec<(DeliveryFuture, Origin)>,
    /// Offset to resume from, per partition, once this batch is durable.
    pub next_offsets: Vec<(i32, i64)>,
    /// Input records in the batch.
    pub records: u64,
    /// Deliveries of alert state snapshots taken after this batch.
    pub state: Vec<DeliveryFuture>,
}

/// Stores offsets of batches whose outputs are all acknowledged, in order.
pub struct Committer {
    lanes: Vec<(SyncSender<Pending>, JoinHandle<()>)>,
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
    /// `depth` bounds the batches awaiting acknowledgement per lane;
    /// `submit` waits when it is reached, which is the pipeline's
    /// back-pressure.
    pub fn start(
        source: &KafkaSource,
        sink: Arc<KafkaSink>,
        depth: usize,
        lanes: usize,
    ) -> Committer {
        let shared = Arc::new(Shared {
            in_flight: Mutex::new(0),
            settled: std::sync::Condvar::new(),
            committed_records: AtomicU64::new(0),
            failure: Mutex::new(None),
            failed: tokio::sync::Notify::new(),
        });
        let lanes = (0..lanes.max(1))
            .map(|lane| {
                let (tx, rx) = sync_channel::<Pending>(depth);
                let consumer = source.consumer();
                let topic = source.topic().to_string();
                let shared = shared.clone();
                let sink = sink.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("streamhost-commit-{lane}"))
                    .spawn(move || commit_loop(rx, &consumer, &topic, &sink, &shared))
                    .expect("spawning a committer lane");
                (tx, thread)
            })
            .collect();
        Committer { lanes, shared }
    }

    /// Queues a batch on `lane`; blocks while `depth` batches are already
    /// waiting there.
    pub fn submit(&self, lane: usize, pending: Pending) {
        *self.shared.in_flight.lock().unwrap() += 1;
        if self.lanes[lane].0.send(pending).is_err() {
            self.shared.settle();
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
            let (guard, _) = shared
                .settled
                .wait_timeout_while(guard, timeout, |n| *n > 0)
                .unwrap();
            *guard == 0
        }
    }

    /// Waits for every submitted batch to settle and stops the lanes.
    pub fn finish(self) {
        for (tx, thread) in self.lanes {
            drop(tx);
            let _ = thread.join();
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
        // Wakes every `failed()` future created before this line; later
        // ones see `failure` set before they wait.
        self.failed.notify_waiters();
    }
}

fn commit_loop(
    rx: Receiver<Pending>,
    consumer: &StreamConsumer<ConsumerContext>,
    topic: &str,
    sink: &KafkaSink,
    shared: &Shared,
) {
    for pending in rx {
        let mut ok = shared.failure.lock().unwrap().is_none();
        for (d, origin) in pending.deliveries {
            let error = match block_on(d) {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                Err(_) => {
                    if ok {
                        shared.fail(super::Error::ProducerDropped.to_string());
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
                    message: format!(
                        "the broker refused its {} record: {error}",
                        origin.dest.name()
                    ),
                    plugin: None,
                };
                let source = SourcePos {
                    topic,
                    partition: origin.partition,
                    offset: origin.offset,
                };
                let reference = output::dead_letter(source, None, Vec::new(), &failure);
                tracing::warn!(partition = origin.partition, offset = origin.offset, %error, "Output refused by the broker; dead-lettered a reference to its record.");
                match sink.send_blocking(&reference) {
                    Ok(()) => continue,
                    Err(e) => {
                        shared.fail(format!(
                            "{error}; and its reference dead letter failed too: {e}"
                        ));
                        ok = false;
                        continue;
                    }
                }
            }
            shared.fail(error.to_string());
            ok = false;
        }
        for d in pending.state {
            let error = match block_on(d) {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => super::Error::ProducerDropped.to_string(),
            };
            if ok {
                shared.fail(format!("writing the alert state: {error}"));
            }
            ok = false;
        }
        if ok {
            KafkaSource::store(consumer, topic, &pending.next_offsets);
            shared
                .committed_records
                .fetch_add(pending.records, Ordering::SeqCst);
        }
        shared.settle();
    }
}

/// Whether a delivery error is about the record itself, not the stream.
fn record_error(e: &KafkaError) -> Option<Reason> {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code()? {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            Some(Reason::OutputTooLarge)
        }
        C::InvalidMessage | C::InvalidRecord | C::InvalidTimestamp => Some(Reason::OutputRefused),
        _ => None,
    }
}
