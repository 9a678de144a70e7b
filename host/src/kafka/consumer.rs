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

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::Settings;
use crate::record::InRecord;

use super::apply_properties;

/// Called on a revoke, before partitions are given up.
pub type Drain = Box<dyn Fn() + Send + Sync>;

pub struct ConsumerContext {
    drain: OnceLock<Drain>,
    /// Set while partitions are assigned (read by `/readyz`).
    assigned: Arc<AtomicBool>,
}

impl ClientContext for ConsumerContext {}

impl rdkafka::consumer::ConsumerContext for ConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(
                    partitions = tpl.count(),
                    "Partitions revoked; draining in-flight outputs."
                );
                self.assigned
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                if let Some(drain) = self.drain.get() {
                    drain();
                }
                if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                    // Nothing stored since the last commit is not an error.
                    tracing::debug!(%error, "Commit on revoke returned an error.");
                }
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "Partitions assigned.");
                self.assigned
                    .store(tpl.count() > 0, std::sync::atomic::Ordering::Relaxed);
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

pub struct KafkaSource {
    consumer: Arc<StreamConsumer<ConsumerContext>>,
    topic: String,
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
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", "50")
            // A topic created (or grown) after start is noticed within 10 s,
            // not librdkafka's default 5 minutes.
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("queued.max.messages.kbytes", "65536")
            .set("client.id", "streamhost");
        apply_properties(&mut config, settings, "consumer");
        let consumer: StreamConsumer<ConsumerContext> =
            config.create_with_context(ConsumerContext {
                drain: OnceLock::new(),
                assigned,
            })?;
        consumer.subscribe(&[&settings.input_topic])?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            topic: settings.input_topic.clone(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Registers what to do before partitions are revoked.
    pub fn on_revoke(&self, drain: Drain) {
        let _ = self.consumer.context().drain.set(drain);
    }

    /// Waits for a record, then gathers more until `max` or until `wait` has
    /// passed since the first.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> KafkaResult<Vec<InRecord>> {
        let mut batch = Vec::with_capacity(max.min(4096));
        let first = self.recv().await?;
        batch.push(first);
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Ok(r)) => batch.push(r),
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn recv(&self) -> KafkaResult<InRecord> {
        loop {
            match self.consumer.recv().await {
                Ok(m) => {
                    return Ok(InRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
                // Transient conditions librdkafka reports and recovers from.
                Err(KafkaError::MessageConsumption(code)) => {
                    tracing::warn!(error = %code, "Consumer error; continuing.");
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
