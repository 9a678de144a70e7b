//! Rebuilding a partition's windows before its first record is processed,
//! by reading the input partition again up to the resume position.
//!
//! Windows are a function of a partition's records (see `crate::window`),
//! so feeding enough of them again gives the windows an uninterrupted run would
//! hold. How much is enough:
//! - a key the last sweep kept has its newest event time within
//!   `length + lateness + idle` of the partition's clock; its window's sums
//!   were last recomputed from scratch when its newest event time entered
//!   the current half window length, from readings up to `length` before
//!   that: so every record with an event time from
//!   `clock - (2½ × length + lateness + idle)` on is needed, plus a margin
//!   (`--rebuild-margin`) for records whose Kafka timestamps are behind
//!   their place in the partition;
//! - the rebuild starts at a sweep-interval boundary, and no later than the
//!   interval before the resume position's, so it reaches the same sweeps
//!   and the same clock.
//!
//! Records are found by their Kafka timestamps (`offsets_for_times`). The
//! first pass starts `reach` before the timestamp of the first record of the
//! interval that sets the clock (or of the first record to process, if
//! earlier); once it is read, the partition's clock is known, and if it calls
//! for an earlier start (a partition whose clock trails its timestamps),
//! the rebuild reads again from there.
//!
//! The records read go through decode, transforms and the event-time check
//! as they did the first time, but no trend or anomaly rule is called and
//! nothing is output (`Pipeline::rebuild`).
//!
//! When the input no longer holds the span (retention deleted it), the
//! rebuild starts at the oldest record held, and the rebuild says it is
//! incomplete: the caller warns and counts it, and goes on.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::error::KafkaResult;

use crate::pipeline::Pipeline;
use crate::record::InRecord;
use crate::rules::Rule;
use crate::window::{SWEEP_INTERVAL, WindowConfig};

/// Records handed to the pipeline at once while rebuilding.
const CHUNK: usize = 4096;
/// Most passes of one rebuild (each one starts earlier than the last).
const MAX_PASSES: u32 = 4;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt {
    /// The input partition.
    pub partition: i32,
    /// The first offset read.
    pub from: i64,
    /// The offset processing resumes at (not read).
    pub to: i64,
    /// Records read.
    pub records: u64,
    /// Records that entered a window.
    pub entered: u64,
    /// Passes over the input (each one starts earlier than the last).
    pub passes: u32,
    /// Whether the input still held everything the windows needed.
    pub complete: bool,
    /// How long it took.
    pub seconds: f64,
}

/// How much event time before a partition's clock a rebuild reads again:
/// two and a half of the longest window (declared ones included), so that
/// every window's sums were recomputed from readings read again.
pub fn reach_ms(cfg: &WindowConfig, margin_ms: i64) -> i64 {
    (cfg.longest_ms() / 2 * 5)
        .saturating_add(cfg.lateness_ms)
        .saturating_add(cfg.idle_ms)
        .saturating_add(margin_ms)
}

/// Where a rebuild reads a partition from: the input topic
/// (`crate::kafka::span::PartitionReader`), or a list of records in tests.
pub trait Source {
    /// The partition's low and high watermarks.
    fn watermarks(&self, partition: i32) -> KafkaResult<(i64, i64)>;
    /// The first offset whose Kafka timestamp is at least `time_ms`.
    fn offset_for_time(&self, partition: i32, time_ms: i64) -> KafkaResult<Option<i64>>;
    /// Offsets `from..to`, in chunks, in offset order; returns how many.
    fn read(
        &self,
        partition: i32,
        from: i64,
        to: i64,
        chunk: usize,
        each: &mut dyn FnMut(Vec<InRecord>),
    ) -> KafkaResult<u64>;
}

fn align_down(offset: i64) -> i64 {
    offset.div_euclid(SWEEP_INTERVAL) * SWEEP_INTERVAL
}

/// Rebuilds `partition`'s windows in `pipeline` for processing to resume at
/// offset `resume`, whose record has the Kafka timestamp `reference_ms`.
/// The partition's previous windows are dropped first.
pub fn rebuild(
    reader: &dyn Source,
    pipeline: &mut Pipeline,
    transforms: &[Arc<dyn Rule>],
    partition: i32,
    resume: i64,
    reference_ms: i64,
    margin_ms: i64,
) -> KafkaResult<Rebuilt> {
    let started = Instant::now();
    let reach = reach_ms(pipeline.windows().config(), margin_ms);
    pipeline.drop_partition(partition);
    let (low, _) = reader.watermarks(partition)?;
    let mut done = Rebuilt {
        partition,
        from: resume,
        to: resume,
        records: 0,
        entered: 0,
        passes: 0,
        complete: true,
        seconds: 0.0,
    };
    // Nothing before the resume position is held: processing starts as a
    // new consumer group would, with empty windows.
    if resume <= low {
        done.seconds = started.elapsed().as_secs_f64();
        return Ok(done);
    }
    // The interval whose records set the clock of the last sweep.
    let clock_interval = (align_down(resume - 1) - SWEEP_INTERVAL).max(0);
    // The clock is about the timestamp at the start of that interval (its
    // median, or later): reaching back from there rather than from the
    // resume position saves a second pass when an interval spans seconds.
    let mut clock_estimate = reference_ms;
    if clock_interval >= low {
        reader.read(partition, clock_interval, clock_interval + 1, 1, &mut |c| {
            if let Some(t) = c.first().and_then(|r| r.timestamp) {
                clock_estimate = clock_estimate.min(t);
            }
        })?;
    }
    let mut since_ms = clock_estimate.saturating_sub(reach);
    loop {
        let needed = reader
            .offset_for_time(partition, since_ms)?
            .unwrap_or(resume)
            .min(resume)
            .min(clock_interval);
        let mut from = align_down(needed);
        done.complete = from >= low;
        if !done.complete {
            from = low;
        }
        pipeline.drop_partition(partition);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut entered = 0;
        done.records = reader.read(partition, from, resume, CHUNK, &mut |chunk| {
            entered += pipeline.rebuild(transforms, chunk, now_ms);
        })?;
        done.entered = entered;
        done.from = from;
        done.passes += 1;
        // Does the clock the pass reached call for an earlier start?
        let Some(clock) = pipeline.windows().partition_clock(partition) else {
            break;
        };
        let wanted_ms = clock.saturating_sub(reach);
        if wanted_ms >= since_ms || from <= low || done.passes >= MAX_PASSES {
            break;
        }
        since_ms = wanted_ms;
        let earlier = reader
            .offset_for_time(partition, since_ms)?
            .unwrap_or(resume);
        if align_down(earlier) >= from {
            break;
        }
    }
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

#[cfg(test)]
mod tests {
    //! A rebuild against an uninterrupted run, on generated partitions
    //! whose keys go silent, come back, lag and arrive late: after the
    //! rebuild, every output is the same.
    use super::*;
    use crate::decode::{EpochUnit, Schema};
    use crate::pipeline::{OutputLimits, PipelineConfig};
    use crate::rules::RuleSet;
    use proptest::prelude::*;

    struct Topic(Vec<InRecord>);

    impl Source for Topic {
        fn watermarks(&self, _: i32) -> KafkaResult<(i64, i64)> {
            Ok((0, self.0.len() as i64))
        }
        fn offset_for_time(&self, _: i32, time_ms: i64) -> KafkaResult<Option<i64>> {
            Ok(self
                .0
                .iter()
                .find(|r| r.timestamp.unwrap() >= time_ms)
                .map(|r| r.offset))
        }
        fn read(
            &self,
            _: i32,
            from: i64,
            to: i64,
            chunk: usize,
            each: &mut dyn FnMut(Vec<InRecord>),
        ) -> KafkaResult<u64> {
            let span = &self.0[from as usize..to as usize];
            for c in span.chunks(chunk) {
                each(c.to_vec());
            }
            Ok(span.len() as u64)
        }
    }

    fn config() -> PipelineConfig {
        PipelineConfig {
            input: Default::default(),
            shape: crate::output::Shape::Full,
            avro_output: None,
            schema: Schema {
                key_field: "k".into(),
                time_field: "t".into(),
                fields: vec!["v".into()],
                epoch_unit: EpochUnit::Millis,
            },
            window: WindowConfig {
                length_ms: 60_000,
                declared: Vec::new(),
                lateness_ms: 5_000,
                k: 2,
                fields: 1,
                idle_ms: 30_000,
            },
            source_topic: "in".into(),
            max_future_ms: i64::MAX / 4,
            isolation_budget: std::time::Duration::from_secs(1),
            limits: OutputLimits::default(),
            tables: Vec::new(),
            alerts: Default::default(),
            alert_repeat_ms: 0,
        }
    }

    /// A partition: 12 keys reporting about every 2 s of event time; now
    /// and then a key falls silent for minutes, comes back with an old
    /// reading, or sends one late (beyond the lateness) or out of order.
    /// Kafka timestamps are event times.
    fn partition(seed: u64, n: usize) -> Vec<InRecord> {
        let mut state = seed | 1;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let t0 = 1_795_500_000_000i64;
        let mut clock = t0;
        let mut silent_until = [0i64; 12];
        (0..n)
            .map(|i| {
                clock += (rand() * 340.0) as i64;
                let mut k = (rand() * 12.0) as usize;
                if clock < silent_until[k] {
                    k = (k + 1) % 12;
                }
                let r = rand();
                let mut t = clock;
                if r < 0.002 {
                    silent_until[k] = clock + 60_000 + (rand() * 240_000.0) as i64;
                } else if r < 0.004 {
                    t -= 120_000; // an old reading
                } else if r < 0.03 {
                    t -= 8_000; // late unless the key restarts
                } else if r < 0.1 {
                    t -= 3_000; // out of order, within lateness
                }
                let payload = format!(r#"{{"k":"key{k}","t":{t},"v":{:.3}}}"#, rand() * 100.0);
                InRecord {
                    partition: 0,
                    offset: i as i64,
                    timestamp: Some(t),
                    key: None,
                    payload: Some(payload.into_bytes()),
                }
            })
            .collect()
    }

    fn outputs(p: &mut Pipeline, records: &[InRecord]) -> Vec<(i64, String, String)> {
        let rules = RuleSet::default();
        let mut out = Vec::new();
        for chunk in records.chunks(500) {
            for r in p.process(&rules, chunk.to_vec(), 1_795_600_000_000).records {
                let reason = r
                    .headers
                    .iter()
                    .find(|h| h.0 == crate::record::headers::REASON)
                    .map(|h| h.1.clone())
                    .unwrap_or_default();
                out.push((
                    r.source.1,
                    String::from_utf8_lossy(&r.payload).into_owned(),
                    reason,
                ));
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn a_rebuilt_partition_gives_the_outputs_of_an_uninterrupted_run(
            seed in any::<u64>(),
            cut in 1_000usize..20_000,
            margin_ms in prop_oneof![Just(0i64), Just(30_000)],
        ) {
            let records = partition(seed, 24_000);
            let mut whole = Pipeline::new(config());
            let all = outputs(&mut whole, &records);
            let after: Vec<_> = all.into_iter().filter(|o| o.0 >= cut as i64).collect();

            let mut rebuilt = Pipeline::new(config());
            let topic = Topic(records.clone());
            let reference = records[cut].timestamp.unwrap();
            let done = rebuild(&topic, &mut rebuilt, &[], 0, cut as i64, reference, margin_ms).unwrap();
            prop_assert!(done.complete);
            prop_assert!(done.from % SWEEP_INTERVAL == 0);
            let again = outputs(&mut rebuilt, &records[cut..]);
            prop_assert_eq!(again.len(), after.len());
            let late = after.iter().filter(|o| o.2 == "late").count();
            prop_assert!(late > 0);
            for (a, b) in after.iter().zip(&again) {
                prop_assert_eq!(a, b, "record {} differs (rebuilt from {} in {} passes)", a.0, done.from, done.passes);
            }
        }
    }
}
