//! Kafka: the consumer that feeds the pipeline (`consumer`), the producer
//! that takes its outputs (`producer`), and the committer that stores input
//! offsets once their outputs are durable (`committer`).

pub mod committer;
pub mod consumer;
pub mod producer;
pub mod replay;

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;

use crate::config::Settings;
use crate::record::InRecord;

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
