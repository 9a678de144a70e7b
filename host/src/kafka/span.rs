//! Reading a span of one input partition again, outside the consumer group:
//! what a window rebuild reads (`crate::rebuild::Source`), and where
//! `streamhost replay` finds a dead letter's original.
//!
//! A plain consumer with its own `assign`, so the group's offsets and
//! membership are never touched. One per worker, reused for every rebuild.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Settings;
use crate::rebuild::Source;
use crate::record::InRecord;

/// Broker requests (watermarks, offsets for times).
const REQUEST: Duration = Duration::from_secs(10);

/// Reads spans of the input topic's partitions, outside the group.
pub struct PartitionReader {
    consumer: BaseConsumer<super::LogContext>,
    topic: String,
}

impl PartitionReader {
    /// A reader of the settings' input topic, in a group of its own
    /// (`<group>.rebuild`) that it never joins.
    pub fn new(settings: &Settings) -> KafkaResult<PartitionReader> {
        let own = [
            ("enable.partition.eof", "true"),
            // How long the broker may hold a fetch for data to arrive; a
            // span read here is already there, so this only delays the
            // last fetch at the partition's end. Not less: Nisshi answers a
            // fetch it cannot serve within this time with nothing, and
            // finding an offset deep in a partition of 100,000 records
            // took it over 10 ms, so a rebuild asked again and again and
            // never got a record (a probe with librdkafka got the record
            // with 20 ms and more, never with 10).
            ("fetch.wait.max.ms", "100"),
            // A rebuild reads a span as fast as it can be handed on. Once
            // its prefetch queue holds `queued.min.messages`, librdkafka
            // stops fetching for `fetch.queue.backoff.ms` (1 s by default)
            // even if the queue is drained meanwhile: with the defaults a
            // rebuild read 100,000 records, then sat idle for most of a
            // second, over and over (160,000 records/s, both processes
            // idle). A short backoff keeps it fetching.
            ("fetch.queue.backoff.ms", "5"),
            ("queued.min.messages", "200000"),
            ("queued.max.messages.kbytes", "262144"),
        ];
        let group = format!("{}.rebuild", settings.group);
        Ok(PartitionReader {
            consumer: super::assign_only(settings, &group, "streamhost-rebuild", &own)?,
            topic: settings.input_topic.clone(),
        })
    }
}

impl Source for PartitionReader {
    /// The partition's low and high watermarks.
    fn watermarks(&self, partition: i32) -> KafkaResult<(i64, i64)> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, REQUEST)
    }

    /// The first offset whose Kafka timestamp is at least `time_ms`, or
    /// `None` when no record is that recent.
    fn offset_for_time(&self, partition: i32, time_ms: i64) -> KafkaResult<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(time_ms))?;
        let found = self.consumer.offsets_for_times(tpl, REQUEST)?;
        let offset = found
            .find_partition(&self.topic, partition)
            .map(|e| e.offset());
        Ok(match offset {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
    }

    /// Reads offsets `from..to` of `partition` and hands them to `each` in
    /// chunks of up to `chunk` records, in offset order.
    fn read(
        &self,
        partition: i32,
        from: i64,
        to: i64,
        chunk: usize,
        each: &mut dyn FnMut(Vec<InRecord>),
    ) -> KafkaResult<u64> {
        self.read_topic(&self.topic, partition, from, to, chunk, each)
    }
}

impl PartitionReader {
    /// How many partitions `topic` has (0 if the broker knows it not).
    pub fn partition_count(&self, topic: &str) -> KafkaResult<i32> {
        let md = self.consumer.fetch_metadata(Some(topic), REQUEST)?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32))
    }

    /// The low and high watermarks of `topic`'s `partition`.
    pub fn watermarks_of(&self, topic: &str, partition: i32) -> KafkaResult<(i64, i64)> {
        self.consumer.fetch_watermarks(topic, partition, REQUEST)
    }

    /// Reads offsets `from..to` of `topic`'s `partition` (the input topic,
    /// or another: the alert state's) and hands them to `each` in chunks of
    /// up to `chunk` records, in offset order.
    pub fn read_topic(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        chunk: usize,
        each: &mut dyn FnMut(Vec<InRecord>),
    ) -> KafkaResult<u64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
        self.consumer.assign(&tpl)?;
        let result = (|| {
            let mut records = 0u64;
            let mut buf = Vec::with_capacity(chunk);
            let mut poller = super::SpanPoller::new("the window rebuild reader");
            if from >= to {
                return Ok(0);
            }
            loop {
                let m = match poller.poll(&self.consumer)? {
                    super::Polled::Record(m) => m,
                    super::Polled::PartitionEnd => break,
                    super::Polled::Nothing => continue,
                };
                if m.offset() >= to {
                    break;
                }
                buf.push(InRecord {
                    partition,
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                });
                records += 1;
                let last = m.offset() + 1 >= to;
                if buf.len() >= chunk || last {
                    each(std::mem::replace(&mut buf, Vec::with_capacity(chunk)));
                }
                if last {
                    break;
                }
            }
            if !buf.is_empty() {
                each(buf);
            }
            Ok(records)
        })();
        let _ = self.consumer.unassign();
        result
    }
}
