//! The alert state topic: each input partition's firing alerts
//! (`crate::lifecycle::Snapshot`), written every `--state-interval` by the
//! worker that holds the partition, and read by the next one to hold it.
//!
//! A snapshot is the state after every record before its `offset`, taken
//! at a batch boundary, so it is exact whatever was delivered or committed
//! since. A restore takes the newest snapshot at or before the offset it
//! resumes from and replays the input between the two through the rules
//! (outputs discarded): the state is then the one an uninterrupted run
//! would hold. A snapshot after the resume offset (written, but its offsets
//! not committed before a crash) is never used.
//!
//! Records: key `TOPIC/PARTITION` (the input's), on partition `PARTITION`
//! mod the state topic's partition count; value JSON, one snapshot in one
//! or more chunks of at most `CHUNK_KEYS` keys, each naming its snapshot
//! (`offset`, `written_ms`) and its place (`chunk` of `chunks`). A restore
//! reads the partition's tail backwards in growing steps until it finds a
//! complete snapshot at or before its offset. A chunk that does not parse,
//! or a snapshot of another format, is skipped with a warning.

use std::collections::BTreeMap;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaResult;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::lifecycle::{Open, Snapshot};

use super::span::PartitionReader;

/// Keys per chunk: a key with a few firing alerts is about 300 bytes, so a
/// chunk stays far under the default `message.max.bytes` of 1 MB.
pub const CHUNK_KEYS: usize = 1000;
/// The format of a chunk; chunks of another are skipped.
const FORMAT: u32 = 1;
/// Records read at first from a state partition's end (then twice as
/// many, and so on).
const TAIL: i64 = 64;

/// One chunk of a snapshot, as written.
#[derive(Serialize, Deserialize)]
struct Chunk {
    format: u32,
    topic: String,
    partition: i32,
    offset: i64,
    written_ms: i64,
    chunk: usize,
    chunks: usize,
    keys: Vec<(String, Vec<Open>)>,
}

/// Where snapshots of one input topic's partitions go.
#[derive(Clone, Debug)]
pub struct StateTopic {
    /// The state topic.
    pub name: String,
    /// Its partition count.
    pub partitions: i32,
    /// The input topic.
    pub input: String,
}

/// A record to write to the state topic.
pub struct StateRecord {
    /// Partition of the state topic.
    pub partition: i32,
    /// `TOPIC/PARTITION` of the input.
    pub key: String,
    /// One chunk, JSON.
    pub payload: Vec<u8>,
}

impl StateTopic {
    /// Makes sure the settings' state topic exists: creates it with the
    /// input topic's partition count and the broker's default replication
    /// when it is missing, and finds its partition count when it is there.
    pub fn ensure(settings: &Settings, reader: &PartitionReader) -> KafkaResult<StateTopic> {
        let name = &settings.state_topic();
        let input = &settings.input_topic;
        let partitions = reader.partition_count(input)?.max(1);
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &settings.brokers);
        super::apply_properties(&mut config, settings, "producer");
        let admin: AdminClient<super::LogContext> =
            config.create_with_context(super::LogContext)?;
        let new = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        let results =
            futures::executor::block_on(admin.create_topics(&[new], &AdminOptions::new()))?;
        let mut created = false;
        for r in results {
            match r {
                Ok(_) => created = true,
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(rdkafka::error::KafkaError::AdminOp(code)),
            }
        }
        // Every process must send a partition's snapshots to the same state
        // partition: the count is the one created, or the topic's own once
        // its metadata shows it (a topic just created elsewhere may not
        // show its partitions at once).
        let held = if created {
            tracing::info!(topic = name, partitions, "Created the alert state topic.");
            partitions
        } else {
            let started = std::time::Instant::now();
            loop {
                match reader.partition_count(name)? {
                    0 if started.elapsed() < std::time::Duration::from_secs(10) => {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                    0 => {
                        return Err(rdkafka::error::KafkaError::AdminOp(
                            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                        ));
                    }
                    n => break n,
                }
            }
        };
        Ok(StateTopic {
            name: name.to_string(),
            partitions: held,
            input: input.to_string(),
        })
    }

    /// The key of `partition`'s snapshots.
    fn key(&self, partition: i32) -> String {
        format!("{}/{partition}", self.input)
    }

    /// The state partition `partition`'s snapshots go to.
    fn partition_of(&self, partition: i32) -> i32 {
        partition.rem_euclid(self.partitions)
    }

    /// `snapshot` as records to write, in order.
    pub fn records(&self, snapshot: Snapshot, written_ms: i64) -> Vec<StateRecord> {
        let Snapshot {
            partition,
            offset,
            keys,
        } = snapshot;
        let chunks = keys.len().div_ceil(CHUNK_KEYS).max(1);
        let mut keys = keys.into_iter();
        (0..chunks)
            .map(|chunk| {
                let c = Chunk {
                    format: FORMAT,
                    topic: self.input.clone(),
                    partition,
                    offset,
                    written_ms,
                    chunk,
                    chunks,
                    keys: keys.by_ref().take(CHUNK_KEYS).collect(),
                };
                StateRecord {
                    partition: self.partition_of(partition),
                    key: self.key(partition),
                    payload: serde_json::to_vec(&c).expect("a snapshot serializes"),
                }
            })
            .collect()
    }

    /// The newest complete snapshot of `partition` at or before `resume`,
    /// if the state topic holds one.
    pub fn newest(
        &self,
        reader: &PartitionReader,
        partition: i32,
        resume: i64,
    ) -> KafkaResult<Option<Snapshot>> {
        let from_partition = self.partition_of(partition);
        let (low, high) = reader.watermarks_of(&self.name, from_partition)?;
        let key = self.key(partition);
        let mut end = high;
        let mut step = TAIL;
        while end > low {
            let start = (end - step).max(low);
            let mut found = Assembly::default();
            reader.read_topic(&self.name, from_partition, start, end, 256, &mut |chunk| {
                for r in chunk {
                    if r.key.as_deref() == Some(key.as_bytes()) {
                        found.add(r.offset, r.payload.as_deref().unwrap_or_default(), resume);
                    }
                }
            })?;
            if let Some(snapshot) = found.newest(partition) {
                return Ok(Some(snapshot));
            }
            // A snapshot may straddle `start`: read again from further back,
            // overlapping.
            end = if start == low { low } else { start + step / 2 };
            step *= 2;
        }
        Ok(None)
    }
}

/// Chunks read, grouped by snapshot.
#[derive(Default)]
struct Assembly {
    /// By (offset, written_ms): the chunks found, by place.
    snapshots: BTreeMap<(i64, i64), BTreeMap<usize, Chunk>>,
}

impl Assembly {
    fn add(&mut self, at: i64, payload: &[u8], resume: i64) {
        let chunk: Chunk = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(state_offset = at, %error, "A record of the alert state topic does not parse; skipped.");
                return;
            }
        };
        if chunk.format != FORMAT {
            tracing::warn!(
                state_offset = at,
                format = chunk.format,
                "A snapshot of another format in the alert state topic; skipped."
            );
            return;
        }
        if chunk.offset > resume {
            return;
        }
        self.snapshots
            .entry((chunk.offset, chunk.written_ms))
            .or_default()
            .insert(chunk.chunk, chunk);
    }

    fn newest(self, partition: i32) -> Option<Snapshot> {
        let (&(offset, _), chunks) = self.snapshots.iter().rev().find(|(_, chunks)| {
            let n = chunks.values().next().map_or(0, |c| c.chunks);
            chunks.len() == n && chunks.keys().copied().eq(0..n)
        })?;
        let keys = chunks
            .values()
            .flat_map(|c| c.keys.iter().cloned())
            .collect();
        Some(Snapshot {
            partition,
            offset,
            keys,
        })
    }
}
