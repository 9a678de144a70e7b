//! Rebuilding a partition's windows before its first record is processed,
//! by replaying the input partition up to the resume position.
//!
//! Windows are a function of a partition's records (see `crate::window`),
//! so replaying enough of them gives the windows an uninterrupted run would
//! hold. How much is enough:
//! - a key the last sweep kept has its newest event time within
//!   `length + lateness + idle` of the partition's clock, and its window
//!   reaches `length` further back: so every record with an event time from
//!   `clock - (2 × length + lateness + idle)` on is needed, plus a margin
//!   (`--rebuild-margin`) for records whose Kafka timestamps are behind
//!   their place in the partition;
//! - the replay starts at a sweep-interval boundary, and no later than the
//!   interval before the resume position's, so it reaches the same sweeps
//!   and the same clock.
//!
//! Records are found by their Kafka timestamps (`offsets_for_times`). The
//! first pass starts `reach` before the timestamp of the first record to
//! process; once replayed, the partition's clock is known, and if it calls
//! for an earlier start (a slow partition whose clock trails its
//! timestamps), the replay runs again from there.
//!
//! Replayed records go through decode, transforms and the event-time check
//! as they did the first time, but no trend or anomaly rule is called and
//! nothing is output (`Pipeline::replay`).
//!
//! When the input no longer holds the span (retention deleted it), the
//! replay starts at the oldest record held, and the rebuild says it is
//! incomplete: the caller warns and counts it, and goes on.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::error::KafkaResult;

use crate::kafka::replay::PartitionReader;
use crate::pipeline::Pipeline;
use crate::rules::Rule;
use crate::window::{SWEEP_INTERVAL, WindowConfig};

/// Records handed to the pipeline at once while replaying.
const CHUNK: usize = 4096;
/// Most replays of one rebuild (each one starts earlier than the last).
const MAX_PASSES: u32 = 4;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt {
    pub partition: i32,
    /// The offsets replayed: `from..to`.
    pub from: i64,
    pub to: i64,
    /// Records read, and those that entered a window.
    pub records: u64,
    pub entered: u64,
    pub passes: u32,
    /// Whether the input still held everything the windows needed.
    pub complete: bool,
    pub seconds: f64,
}

/// How much event time before a partition's clock a rebuild replays.
pub fn reach_ms(cfg: &WindowConfig, margin_ms: i64) -> i64 {
    (2 * cfg.length_ms)
        .saturating_add(cfg.lateness_ms)
        .saturating_add(cfg.idle_ms)
        .saturating_add(margin_ms)
}

fn align_down(offset: i64) -> i64 {
    offset.div_euclid(SWEEP_INTERVAL) * SWEEP_INTERVAL
}

/// Rebuilds `partition`'s windows in `pipeline` for processing to resume at
/// offset `resume`, whose record has the Kafka timestamp `reference_ms`.
/// The partition's previous windows are dropped first.
pub fn rebuild(
    reader: &PartitionReader,
    pipeline: &mut Pipeline,
    transforms: &[Arc<dyn Rule>],
    partition: i32,
    resume: i64,
    reference_ms: i64,
    margin_ms: i64,
) -> KafkaResult<Rebuilt> {
    let started = Instant::now();
    let reach = reach_ms(&pipeline.config().window, margin_ms);
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
    let mut since_ms = reference_ms.saturating_sub(reach);
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
        done.records = reader.read(partition, from, resume, CHUNK, |chunk| {
            entered += pipeline.replay(transforms, chunk, now_ms);
        })?;
        done.entered = entered;
        done.from = from;
        done.passes += 1;
        // Does the clock the replay reached call for an earlier start?
        let Some(clock) = pipeline.windows().partition_clock(partition) else {
            break;
        };
        let wanted_ms = clock.saturating_sub(reach);
        if wanted_ms >= since_ms || from <= low || done.passes >= MAX_PASSES {
            break;
        }
        since_ms = wanted_ms;
        let earlier = reader.offset_for_time(partition, since_ms)?.unwrap_or(resume);
        if align_down(earlier) >= from {
            break;
        }
    }
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}
