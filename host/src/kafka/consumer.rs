//! Kafka in: a consumer-group member that hands out batches bounded by count
//! and time, and stores offsets only when told that a batch is done.
//!
//! Offsets follow rust-rdkafka's `at_least_once` example: auto-commit is on
//! but auto-store is off, so the periodic commit only ever carries offsets
//! that `store` was called with, i.e. of records whose outputs were all
//! acknowledged. On a revoke, the registered drain (flush the producer, wait
//! for the committer) runs before the partitions are given up, and what it
//! stored is committed synchronously, so the next owner starts where this
//! one finished rather than at the last periodic commit.
//!
//! The partitions held are tracked in an `Assignment`, with a generation
//! each, so that a batch never mixes records fetched before a partition was
//! revoked with those fetched after it came back, and workers can tell a
//! partition consumed without a break from one whose consumption restarted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::Settings;
use crate::record::InRecord;

use super::apply_properties;

/// Called on a revoke, before partitions are given up.
pub type Drain = Box<dyn Fn() + Send + Sync>;

/// The input consumer's context: the drain run on a revoke, the partitions
/// held, and librdkafka's logs and errors into `tracing` and the diagnosis.
pub struct ConsumerContext {
    drain: OnceLock<Drain>,
    /// Set while partitions are assigned (read by `/readyz`).
    assigned: Arc<AtomicBool>,
    assignment: Arc<Assignment>,
    /// Wakes `recv` once librdkafka has reported an error no retry fixes
    /// (`kafka::fatal`), however it reported it.
    fatal_seen: tokio::sync::Notify,
    fatal_told: AtomicBool,
}

impl ConsumerContext {
    fn check_fatal(&self) {
        if super::fatal().is_some() && !self.fatal_told.swap(true, Ordering::Relaxed) {
            self.fatal_seen.notify_one();
        }
    }
}

/// The input partitions this process holds, each with the generation it
/// was assigned in (a partition revoked and assigned again gets a new one,
/// and its consumption restarts from the committed offset), and a version
/// that changes whenever any of this does.
#[derive(Default)]
pub struct Assignment {
    inner: Mutex<Held>,
    /// `inner.version`, readable without the lock (polled once per record).
    version: AtomicU64,
}

/// A snapshot of an `Assignment`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Held {
    /// The `Assignment`'s version when this was taken.
    pub version: u64,
    /// Each partition held, with the generation it was assigned in.
    pub generations: BTreeMap<i32, u64>,
}

impl Assignment {
    fn change(&self, partitions: &TopicPartitionList, assign: bool) {
        let mut g = self.inner.lock().unwrap();
        for e in partitions.elements() {
            g.version += 1;
            if assign {
                let generation = g.version;
                g.generations.insert(e.partition(), generation);
            } else {
                g.generations.remove(&e.partition());
            }
        }
        self.version.store(g.version, Ordering::Release);
    }

    /// The partitions held now, with their generations.
    pub fn held(&self) -> Held {
        self.inner.lock().unwrap().clone()
    }

    /// The version alone (cheap to poll).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.inner.lock().unwrap().generations.is_empty()
    }
}

impl ClientContext for ConsumerContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        super::forward_log(level, facility, message);
        self.check_fatal();
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::note_error(&error, reason);
        // librdkafka's own log line says the same, at its level.
        tracing::debug!(target: "librdkafka", %error, reason, "Kafka client error.");
        self.check_fatal();
    }
}

impl rdkafka::consumer::ConsumerContext for ConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(
                    partitions = ?partitions(tpl),
                    "Partitions revoked; draining in-flight outputs."
                );
                if let Some(drain) = self.drain.get() {
                    drain();
                }
                if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                    // Nothing stored since the last commit is not an error.
                    tracing::debug!(%error, "Commit on revoke returned an error.");
                }
                self.assignment.change(tpl, false);
                self.assigned
                    .store(!self.assignment.is_empty(), Ordering::Relaxed);
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = ?partitions(tpl), "Partitions assigned.");
                super::reached();
                self.assignment.change(tpl, true);
                self.assigned
                    .store(!self.assignment.is_empty(), Ordering::Relaxed);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "Rebalance error."),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::debug!(%error, "Offset commit returned an error.");
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Kafka in: the input consumer, a member of the group.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<ConsumerContext>>,
    topic: String,
    assignment: Arc<Assignment>,
}

impl KafkaSource {
    /// `assigned` is kept up to date with whether partitions are assigned.
    pub fn new(settings: &Settings, assigned: Arc<AtomicBool>) -> KafkaResult<KafkaSource> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            // A new group reads what the topic retains rather than skipping it.
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set("partition.assignment.strategy", &settings.assignment)
            .set("fetch.wait.max.ms", "50")
            // A topic created (or grown) after start is noticed within 10 s,
            // not librdkafka's default 5 minutes.
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("queued.max.messages.kbytes", "65536")
            .set("client.id", "streamhost");
        if let Some(id) = &settings.instance_id {
            config.set("group.instance.id", id);
        }
        apply_properties(&mut config, settings, "consumer");
        let assignment = Arc::new(Assignment::default());
        let consumer: StreamConsumer<ConsumerContext> =
            config.create_with_context(ConsumerContext {
                drain: OnceLock::new(),
                assigned,
                assignment: assignment.clone(),
                fatal_seen: tokio::sync::Notify::new(),
                fatal_told: AtomicBool::new(false),
            })?;
        consumer.subscribe(&[&settings.input_topic])?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            topic: settings.input_topic.clone(),
            assignment,
        })
    }

    /// The input topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partitions held now.
    pub fn assignment(&self) -> &Arc<Assignment> {
        &self.assignment
    }

    /// Registers what to do before partitions are revoked.
    pub fn on_revoke(&self, drain: Drain) {
        let _ = self.consumer.context().drain.set(drain);
    }

    /// Waits for a record, then gathers what the consumer already holds,
    /// up to `max`. The batch is cut as soon as nothing more is queued, so a
    /// record waits for no later one; with `wait` above zero, an empty queue
    /// is waited on for up to `wait` since the first record (larger batches
    /// at low rates, for more latency). Returns the batch with the
    /// partitions held when it was cut: every record belongs to a
    /// partition's current generation. Records fetched before a rebalance
    /// that revoked their partition are left out: they are fetched again
    /// from the committed offset if the partition comes back.
    pub async fn next_batch(
        &self,
        max: usize,
        wait: Duration,
    ) -> KafkaResult<(Vec<InRecord>, Held)> {
        use futures::FutureExt as _;
        let mut batch = Vec::with_capacity(max.min(4096));
        // Rebalance callbacks run inside `recv`, and a record it returns
        // belongs to the assignment as it is after them.
        let first = self.recv().await?;
        let mut held = self.assignment.held();
        batch.push(first);
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            // What is queued already, without waiting.
            let next = match self.recv().now_or_never() {
                Some(next) => next,
                None if wait.is_zero() => break,
                None => match tokio::time::timeout_at(deadline, self.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            batch.push(next?);
            if self.assignment.version() != held.version {
                let now = self.assignment.held();
                let last = batch.pop().expect("just pushed");
                batch.retain(|r| {
                    held.generations.get(&r.partition) == now.generations.get(&r.partition)
                });
                batch.push(last);
                held = now;
            }
        }
        batch.retain(|r| held.generations.contains_key(&r.partition));
        Ok((batch, held))
    }

    async fn recv(&self) -> KafkaResult<InRecord> {
        let context = self.consumer.context();
        let mut errors = super::ErrorStreak::stopping();
        loop {
            let received = tokio::select! {
                m = self.consumer.recv() => Some(m),
                _ = context.fatal_seen.notified() => None,
            };
            let Some(received) = received else {
                // A mismatch diagnosis is withdrawn once a broker answers.
                match super::fatal() {
                    Some(fatal) => return Err(KafkaError::MessageConsumptionFatal(fatal.code())),
                    None => continue,
                }
            };
            match received {
                Ok(m) => {
                    return Ok(InRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
                // Conditions no retry fixes.
                Err(KafkaError::MessageConsumption(
                    code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL),
                )) => {
                    super::note_error(&KafkaError::Global(code), "reported by the consumer");
                    return Err(KafkaError::MessageConsumptionFatal(code));
                }
                // Conditions librdkafka reports and (mostly) recovers from;
                // the streak ends those that repeat without progress.
                Err(KafkaError::MessageConsumption(code)) => {
                    errors.error(code, "the input consumer")?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores `next` (offset to resume from) per partition for the next
    /// commit. Partitions no longer assigned are skipped: their new owner
    /// re-reads from the last commit, which keeps delivery at least once.
    pub fn store(consumer: &StreamConsumer<ConsumerContext>, topic: &str, next: &[(i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in next {
            if tpl
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .is_err()
            {
                continue;
            }
        }
        if let Err(error) = consumer.store_offsets(&tpl) {
            tracing::debug!(%error, "Could not store offsets (partition revoked?).");
        }
    }

    /// The consumer itself (the committer stores offsets through it).
    pub fn consumer(&self) -> Arc<StreamConsumer<ConsumerContext>> {
        self.consumer.clone()
    }

    /// Commits what was stored, synchronously.
    pub fn commit(&self) {
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "Final commit returned an error.");
        }
    }

    /// Consumer lag per assigned partition: high watermark minus position,
    /// `None` where the broker could not be asked (the gauge then keeps its
    /// last value: lag matters most while the broker is unreachable).
    /// Blocking (asks the broker for watermarks).
    pub fn lag(&self) -> Vec<(i32, Option<i64>)> {
        let Ok(position) = self.consumer.position() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in position.elements_for_topic(&self.topic) {
            let high = self
                .consumer
                .fetch_watermarks(&self.topic, e.partition(), Duration::from_secs(1))
                .ok()
                .map(|w| w.1);
            let lag = match (e.offset(), high) {
                (Offset::Offset(pos), Some(high)) => Some((high - pos).max(0)),
                _ => None,
            };
            out.push((e.partition(), lag));
        }
        out
    }

    /// The number of partitions of the input topic, if the broker answers.
    pub fn partition_count(&self) -> Option<usize> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
            .ok()?;
        let topic = md.topics().iter().find(|t| t.name() == self.topic)?;
        topic.error().is_none().then(|| topic.partitions().len())
    }
}
