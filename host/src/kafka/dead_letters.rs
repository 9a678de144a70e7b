//! Reading a dead-letter topic for `streamhost replay`, with progress kept
//! in a consumer group of the replay's own.
//!
//! The group's committed offsets say how far earlier replays got; a replay
//! reads from there up to the end each partition had when it started (so
//! the dead letters its own failures add are left to the next run), and
//! commits its position once the outputs of what it read are delivered.
//! It never joins the group (`assign` only): two replays with the same
//! group at once would each do the same work.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Settings;

/// Broker requests (metadata, watermarks, committed offsets).
const REQUEST: Duration = Duration::from_secs(10);

/// One dead letter as read.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its partition of the dead-letter topic.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its Kafka timestamp (epoch milliseconds).
    pub timestamp: Option<i64>,
    /// Its key (the input record's).
    pub key: Option<Vec<u8>>,
    /// Its value: the input record's bytes, or a reference to them.
    pub payload: Vec<u8>,
    /// Its headers (reason, source position, attempt...), as text.
    pub headers: BTreeMap<String, String>,
}

/// Reads a dead-letter topic from where the replay's group got to, up to
/// each partition's end when it was opened.
pub struct DeadLetterReader {
    consumer: BaseConsumer<super::LogContext>,
    topic: String,
    /// Per partition: the next offset to read, and the end to read up to.
    spans: BTreeMap<i32, (i64, i64)>,
}

impl DeadLetterReader {
    /// Opens `topic` for the group `group`: each partition from the group's
    /// committed offset (or its oldest record) to its end now.
    pub fn open(settings: &Settings, topic: &str, group: &str) -> KafkaResult<DeadLetterReader> {
        let consumer = super::assign_only(
            settings,
            group,
            "streamhost-replay",
            &[("auto.offset.reset", "earliest")],
        )?;
        let metadata = consumer.fetch_metadata(Some(topic), REQUEST)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut asked = TopicPartitionList::new();
        for &p in &partitions {
            asked.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(asked, REQUEST)?;
        let mut spans = BTreeMap::new();
        for &p in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, REQUEST)?;
            let from = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.max(low),
                _ => low,
            };
            spans.insert(p, (from, high));
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &(from, high)) in &spans {
            if from < high {
                tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            }
        }
        consumer.assign(&tpl)?;
        Ok(DeadLetterReader {
            consumer,
            topic: topic.to_string(),
            spans,
        })
    }

    /// Dead letters left to read in this run.
    pub fn remaining(&self) -> u64 {
        self.spans
            .values()
            .map(|(from, to)| (to - from).max(0) as u64)
            .sum()
    }

    /// Up to `max` more dead letters, in offset order per partition; empty
    /// once every partition reached its end.
    pub fn next_chunk(&mut self, max: usize) -> KafkaResult<Vec<DeadLetter>> {
        let mut out = Vec::new();
        let mut poller = super::SpanPoller::new("the dead-letter reader");
        while out.len() < max && self.remaining() > 0 {
            let super::Polled::Record(m) = poller.poll(&self.consumer)? else {
                continue;
            };
            let Some(span) = self.spans.get_mut(&m.partition()) else {
                continue;
            };
            if m.offset() < span.0 || m.offset() >= span.1 {
                continue;
            }
            span.0 = m.offset() + 1;
            out.push(DeadLetter {
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: super::header_strings(&m),
            });
            if span.0 >= span.1 {
                // Done with this partition: stop fetching it.
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.topic, m.partition());
                let _ = self.consumer.incremental_unassign(&tpl);
            }
        }
        Ok(out)
    }

    /// Commits the position reached: every dead letter read so far counts
    /// as done for this group.
    pub fn commit(&self) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &(next, _)) in &self.spans {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(next))?;
        }
        self.consumer.commit(&tpl, CommitMode::Sync)
    }
}
