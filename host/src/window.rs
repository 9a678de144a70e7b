//! Sliding windows per key, on event time, kept natively.
//!
//! A key's window holds its readings of the last `length` before the newest
//! event time seen for that key (`newest - length < t <= newest`). It is
//! driven by event time only: replaying a topic gives the same windows, and
//! nothing depends on the host's clock (the article compared wall-clock time
//! with event timestamps, which empties every window during a replay or after
//! a pause).
//!
//! Besides that `--window`, rules may declare windows of their own lengths
//! with richer statistics (`DeclaredSpec`, `declared`): counts, sums, means,
//! extremes, first and last values, variances, deviations, least-squares
//! slopes and exact quantiles. A key keeps one buffer of readings, as long
//! as the longest window (`WindowConfig::longest_ms`); every window is a
//! suffix of it, with its own start and running state, so a reading is
//! stored once and leaves a short window while it stays for longer ones.
//!
//! Time is the key's own. Lateness is judged against the key's newest event
//! time, so no other key's clock can make a record late. Windows are grouped
//! by the input partition their key arrives on (the unit Kafka moves between
//! consumers), and each partition forgets idle keys on its own clock.
//!
//! Forgetting idle keys: a key must not hold memory forever once its sensor
//! stops. Each partition is read in intervals of `SWEEP_INTERVAL` offsets;
//! when the first record of a new interval arrives, the partition is swept.
//! The sweep first advances the partition's clock: the larger of the clock
//! and the (lower) median event time of the records the closing interval
//! brought to the windows. Then a key is dropped when both hold:
//! - it received no record in the closing interval, and
//! - its newest event time is more than `longest + lateness + idle` behind
//!   the partition's clock.
//!
//! The median, not the maximum, so that a few far-ahead records (a broken
//! clock) cannot make the partition's other keys look idle; "no record in
//! the interval", so that a key being read right now is never dropped,
//! whatever order a backlog arrives in. Sweeps happen at offsets and depend
//! only on the partition's own records: not on batch sizes, on how
//! partitions interleave, or on how many keys there are. That is what lets a
//! rebuild (`crate::rebuild`) that reads the partition again from an interval
//! boundary reach the same sweeps as a run that was never interrupted. A
//! dropped key that sends again starts a fresh window, which is the same
//! window it would have had unless its new record is within `length` of its
//! old newest event time.
//!
//! Layout, per key, for memory and speed:
//! - readings are stored column-wise in two ring buffers (`buffer`), event
//!   times as `i32` milliseconds from a per-key base and values interleaved
//!   `fields` at a time, as exact decimal counts in `i32` while they are
//!   decimals of a few places (as sensors write them), else as `f64`: a
//!   reading of four fields costs 20 bytes (36 with `f64`), and the buffers
//!   grow by an eighth at a time rather than doubling;
//! - the `--window`'s sums per field are updated on insert and evict, and
//!   recomputed exactly whenever the key's newest event time enters another
//!   half window length (so rounding cannot drift, and a mean depends only
//!   on recent readings, which a rebuild reads again), and at once when a
//!   sum overflows or cancels (a mean is then computed without overflow);
//! - minimums and maximums come from monotonic deques of reading sequence
//!   numbers (`deque`), so every insert and evict is amortised O(1);
//! - a declared window keeps, per field it covers, only what its aggregates
//!   need (`declared`): exact integer sums while values are decimal
//!   (`moments`), deques, an ordered multiset for quantiles (`ranks`).
//!
//! What a declared window costs per key (64-bit): 32 bytes plus, per field
//! it covers, 64 bytes (the count, `Σx`, the first and last readings, and
//! room for what follows), plus, by aggregate asked for:
//! - count, sum, mean, first, last: nothing more;
//! - variance, stddev, slope: 64 bytes of exact sums (`Σx²`; `Σt`, `Σt²`,
//!   `Σtx`), and 48 more while the key's values are doubles;
//! - min, max: a deque each, 40 bytes plus 4 per reading it holds: few for
//!   noisy values (about `ln n`), but every reading of a window whose values
//!   only rise (for min) or fall (for max), as for the `--window` today;
//! - p50, p90, p95, p99: 56 bytes, plus 16 per quantile asked for, plus about
//!   13 bytes per distinct value the window holds (`BTreeMap` leaves of 104
//!   bytes hold up to 11), 18 while the key's values are doubles: a reading
//!   whose value the window holds already costs nothing more.
//!
//! A declared window's statistics depend only on its readings while the
//! key's values are decimal (exact sums, rounded once), and on those of its
//! last one and a half lengths once they are doubles (sums recomputed each
//! half length, as for the `--window`); whether they are decimal depends
//! only on the readings held (`Cells::repack`, tried each half longest
//! window). So a rebuild that reads two and a half longest windows again
//! gives the same statistics, bit for bit.
//!
//! A reading costs its 20 bytes (four decimal fields) once, however many
//! windows hold it, plus up to 13 for each declared window with quantiles
//! of one of its fields. Measured over 2000 keys at a reading a second
//! (keys, maps and slack included): 28.6 bytes a reading with a 5-minute
//! `--window` alone, 34.2 with a 1-minute mean and a 15-minute mean,
//! deviation, 95th percentile and slope of one field as well (the buffer
//! then holding 15 minutes).
//!
//! Records may arrive out of order. One no older than `newest - lateness` is
//! inserted at its place by event time and enters each window it falls in
//! (this costs O(window) for that key, for moving the buffers' tails; the
//! deques and quantiles take it in place); one older is refused as `Late`
//! and never silently dropped by the caller.
//!
//! Event times must lie in `MIN_TIME_MS..=MAX_TIME_MS` (years 0001 to 9999);
//! the decoder refuses others, and `insert` refuses them too.

mod buffer;
mod declared;
mod deque;
pub mod inspect;
mod moments;
mod ranks;

use std::collections::HashMap;

pub use crate::text::time::{MAX_TIME_MS, MIN_TIME_MS};
pub use declared::{DeclaredSpec, MAX_DECLARED_MS};

use buffer::Buffer;
use declared::{Plan, SpecState};
use deque::MonoDeque;

/// Offsets per sweep interval (see the module's documentation).
pub const SWEEP_INTERVAL: i64 = 4096;

/// Window settings.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    /// Window length in milliseconds of event time.
    pub length_ms: i64,
    /// How far behind its key's newest event time a record may be.
    pub lateness_ms: i64,
    /// Values passed at each end of the window (`head`/`tail`).
    pub k: usize,
    /// Number of numeric fields per reading.
    pub fields: usize,
    /// How much longer than `longest + lateness` a key may stay silent, on
    /// its partition's clock, before its window is dropped.
    pub idle_ms: i64,
    /// The windows rules declare, each once: their statistics are appended
    /// to `window-view.declared` in this order.
    pub declared: Vec<DeclaredSpec>,
}

impl WindowConfig {
    /// The longest window kept: how much event time each key's buffer
    /// holds, and what a rebuild must read again.
    pub fn longest_ms(&self) -> i64 {
        self.declared
            .iter()
            .map(|s| s.length_ms)
            .fold(self.length_ms, i64::max)
    }

    /// Why the declared windows cannot be kept, if so: each must pass
    /// `DeclaredSpec::check` and cover configured fields only.
    pub fn check(&self) -> Result<(), String> {
        for (i, spec) in self.declared.iter().enumerate() {
            let field = spec.fields.iter().find(|&&f| f >= self.fields);
            spec.check()
                .and_then(|()| match field {
                    Some(f) => Err(format!(
                        "it covers field {f}, but only {} fields are configured",
                        self.fields
                    )),
                    None => Ok(()),
                })
                .map_err(|e| format!("declared window {i}: {e}"))?;
        }
        Ok(())
    }
}

/// Why the declared windows could not be changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclareError {
    /// A spec is invalid (see `DeclaredSpec::check`).
    #[error("{0}")]
    Invalid(String),
    /// The specs need more event time than the buffers hold: the windows
    /// must be rebuilt with the new configuration.
    #[error(
        "the declared windows need {longest_ms} ms of readings but the windows hold {held_ms} ms: they must be rebuilt"
    )]
    Longer {
        /// What the buffers hold (the longest window so far).
        held_ms: i64,
        /// What the new specs need.
        longest_ms: i64,
    },
}

/// Why a record could not enter its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Older than its key's newest event time minus the allowed lateness.
    Late {
        /// The key's newest event time when the record arrived.
        newest_ms: i64,
        /// How far behind it the record was.
        behind_ms: i64,
    },
    /// Outside `MIN_TIME_MS..=MAX_TIME_MS`.
    OutOfRange,
}

/// Column-wise window views for a batch, in the WIT's layout (`window-view`).
/// Each `push` appends one record's view.
pub struct ViewBuilder {
    /// The views pushed so far: one entry per record in each column.
    pub view: crate::contract::WindowView,
    /// Whether `head`/`tail` are filled (a rule asked for window values).
    pub with_values: bool,
}

impl ViewBuilder {
    /// An empty builder for windows configured by `cfg` (its fields, `k`
    /// values at each end, its declared windows), with room for `capacity`
    /// records.
    pub fn new(cfg: &WindowConfig, with_values: bool, capacity: usize) -> Self {
        use crate::contract::FieldWindow;
        let k = cfg.k;
        let col = || Vec::with_capacity(capacity);
        let kcol = || {
            if with_values {
                Vec::with_capacity(capacity * k)
            } else {
                Vec::new()
            }
        };
        let fields = (0..cfg.fields)
            .map(|_| FieldWindow {
                mean: col(),
                min: col(),
                max: col(),
                first: col(),
                last: col(),
                head: kcol(),
                tail: kcol(),
            })
            .collect();
        let view = crate::contract::WindowView {
            starts: Vec::with_capacity(capacity),
            ends: Vec::with_capacity(capacity),
            counts: Vec::with_capacity(capacity),
            k: k as u32,
            fields,
            declared: cfg.declared.iter().map(|s| s.columns(capacity)).collect(),
        };
        Self { view, with_values }
    }
}

/// All windows of one pipeline, by input partition.
pub struct Windows {
    cfg: WindowConfig,
    plans: Vec<Plan>,
    longest_ms: i64,
    partitions: HashMap<i32, PartitionWindows>,
    keys: usize,
    readings: usize,
    /// Keys the sweeps dropped, with their partition's clock then, while
    /// someone asked for them (`keep_swept`) and has not taken them yet.
    swept: Option<Vec<(Box<str>, i64)>>,
}

/// The windows of the keys arriving on one input partition.
struct PartitionWindows {
    keys: HashMap<Box<str>, KeyWindow>,
    /// The sweep interval being read (`offset / SWEEP_INTERVAL`), once a
    /// record arrived.
    interval: Option<i64>,
    /// Event times of the records the current interval brought.
    times: Vec<i64>,
    /// The partition's clock: the largest interval median so far.
    clock: i64,
}

impl Default for PartitionWindows {
    fn default() -> Self {
        PartitionWindows {
            keys: HashMap::new(),
            interval: None,
            times: Vec::new(),
            clock: i64::MIN,
        }
    }
}

impl Windows {
    /// No windows yet, with these settings.
    ///
    /// # Panics
    /// If `cfg.check()` fails: a pipeline checks its rules' specs first.
    pub fn new(cfg: WindowConfig) -> Self {
        if let Err(e) = cfg.check() {
            panic!("invalid window configuration: {e}");
        }
        Self {
            plans: cfg.declared.iter().map(Plan::new).collect(),
            longest_ms: cfg.longest_ms(),
            cfg,
            partitions: HashMap::new(),
            keys: 0,
            readings: 0,
            swept: None,
        }
    }

    /// Whether to keep the keys sweeps drop, for `take_swept` (the alert
    /// lifecycle resolves their alerts).
    pub fn keep_swept(&mut self, keep: bool) {
        self.swept = keep.then(Vec::new);
    }

    /// The keys sweeps dropped since last asked, with their partition's
    /// clock at the sweep, in the order dropped (by key within a sweep).
    pub fn take_swept(&mut self) -> Vec<(Box<str>, i64)> {
        self.swept.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The window settings.
    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// Number of keys holding a window.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Number of readings held across all windows.
    pub fn readings(&self) -> usize {
        self.readings
    }

    /// Number of keys holding a window on `partition`.
    pub fn partition_keys(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |p| p.keys.len())
    }

    /// Forgets every window of `partition` (it was revoked).
    pub fn drop_partition(&mut self, partition: i32) {
        if let Some(p) = self.partitions.remove(&partition) {
            self.keys -= p.keys.len();
            self.readings -= p.keys.values().map(|w| w.buf.len()).sum::<usize>();
        }
    }

    /// The partitions held, with how many keys hold a window on each.
    pub fn partitions(&self) -> impl Iterator<Item = (i32, usize)> + '_ {
        self.partitions.iter().map(|(p, w)| (*p, w.keys.len()))
    }

    /// `partition`'s clock (see the module's documentation), once one of
    /// its sweep intervals has closed.
    pub fn partition_clock(&self, partition: i32) -> Option<i64> {
        self.partitions
            .get(&partition)
            .map(|p| p.clock)
            .filter(|&c| c > i64::MIN)
    }

    /// Replaces the declared windows, computing each key's state for them
    /// again from the readings it holds: O(readings held). Possible while
    /// the new specs need no longer a buffer than the current ones; else
    /// `DeclareError::Longer` (nothing changed): build new windows and
    /// rebuild them (`crate::rebuild`). A shorter longest window trims each
    /// key's buffer at its next record.
    pub fn set_declared(&mut self, specs: Vec<DeclaredSpec>) -> Result<(), DeclareError> {
        let cfg = WindowConfig {
            declared: specs,
            ..self.cfg.clone()
        };
        cfg.check().map_err(DeclareError::Invalid)?;
        let longest_ms = cfg.longest_ms();
        if longest_ms > self.longest_ms {
            return Err(DeclareError::Longer {
                held_ms: self.longest_ms,
                longest_ms,
            });
        }
        self.plans = cfg.declared.iter().map(Plan::new).collect();
        self.cfg = cfg;
        self.longest_ms = longest_ms;
        for part in self.partitions.values_mut() {
            for w in part.keys.values_mut() {
                w.declare(&self.plans);
            }
        }
        Ok(())
    }

    /// Adds the reading at `offset` of `partition` to `key`'s windows and,
    /// when `out` is given, appends the windows as they now are to it (the
    /// `--window` and, in `out.view.declared`, each declared one). `values`
    /// has one entry per field, NaN for absent. Records must arrive in
    /// offset order per partition.
    ///
    /// # Panics
    /// If `out` was not built for this configuration (`ViewBuilder::new`).
    pub fn insert(
        &mut self,
        partition: i32,
        offset: i64,
        key: &str,
        time_ms: i64,
        values: &[f64],
        out: Option<&mut ViewBuilder>,
    ) -> Result<(), Refused> {
        debug_assert_eq!(values.len(), self.cfg.fields);
        if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&time_ms) {
            return Err(Refused::OutOfRange);
        }
        let cfg = &self.cfg;
        let part = self.partitions.entry(partition).or_default();
        let interval = offset.div_euclid(SWEEP_INTERVAL);
        match part.interval {
            Some(current) if interval > current => {
                let horizon = self.longest_ms + cfg.lateness_ms + cfg.idle_ms;
                let (keys, readings) = part.sweep(horizon, self.swept.as_mut());
                self.keys -= keys;
                self.readings -= readings;
                part.interval = Some(interval);
            }
            Some(_) => {}
            None => part.interval = Some(interval),
        }
        part.times.push(time_ms);
        let window = match part.keys.get_mut(key) {
            Some(w) => w,
            None => {
                self.keys += 1;
                part.keys
                    .entry(key.into())
                    .or_insert_with(|| KeyWindow::new(cfg.fields, time_ms, &self.plans))
            }
        };
        window.active = true;
        if window.buf.len() > 0 && time_ms < window.newest - cfg.lateness_ms {
            return Err(Refused::Late {
                newest_ms: window.newest,
                behind_ms: window.newest - time_ms,
            });
        }
        let before = window.buf.len();
        window.insert(cfg, &self.plans, self.longest_ms, time_ms, values);
        if let Some(out) = out {
            window.snapshot(cfg.k, out);
            assert_eq!(
                out.view.declared.len(),
                self.plans.len(),
                "a view built for other declared windows"
            );
            for ((spec, plan), dw) in window
                .declared
                .iter()
                .zip(&self.plans)
                .zip(&mut out.view.declared)
            {
                spec.snapshot(plan, &window.buf, dw);
            }
        }
        self.readings = self.readings + window.buf.len() - before;
        Ok(())
    }
}

impl PartitionWindows {
    /// Closes the current interval: advances the clock, drops the keys that
    /// are idle (see the module's documentation), and returns how many keys
    /// and readings went.
    /// Pushes the keys dropped onto `swept`, sorted, with the clock, if
    /// given.
    fn sweep(
        &mut self,
        horizon_ms: i64,
        swept: Option<&mut Vec<(Box<str>, i64)>>,
    ) -> (usize, usize) {
        if !self.times.is_empty() {
            let mid = (self.times.len() - 1) / 2;
            let median = *self.times.select_nth_unstable(mid).1;
            self.clock = self.clock.max(median);
            self.times.clear();
        }
        let cutoff = self.clock.saturating_sub(horizon_ms);
        let (mut keys, mut readings) = (0, 0);
        let mut dropped = Vec::new();
        let keep_names = swept.is_some();
        self.keys.retain(|k, w| {
            let keep = std::mem::replace(&mut w.active, false) || w.newest >= cutoff;
            if !keep {
                keys += 1;
                readings += w.buf.len();
                if keep_names {
                    dropped.push(k.clone());
                }
            }
            keep
        });
        if let Some(swept) = swept {
            dropped.sort();
            let clock = self.clock;
            swept.extend(dropped.into_iter().map(|k| (k, clock)));
        }
        (keys, readings)
    }
}

/// Evicting a value more than this many times the remaining sum triggers an
/// exact recomputation (2^26: half of an f64's 53 bits of precision).
const CANCELLATION: f64 = 67_108_864.0;

/// One key's readings and windows.
struct KeyWindow {
    buf: Buffer,
    newest: i64,
    /// The `--window`.
    main: MainWindow,
    /// One per declared window, in the configuration's order.
    declared: Box<[SpecState]>,
    /// `newest` in half longest window lengths, for packing `f64` values
    /// again (`Cells::repack`) at most once per half window.
    pack_epoch: i64,
    /// Whether a record arrived in its partition's current sweep interval.
    active: bool,
}

/// The `--window` of one key: a suffix of the key's buffer.
struct MainWindow {
    /// Sequence number of its oldest reading.
    start: u32,
    sums: Vec<f64>,
    present: Vec<u32>,
    /// Per field, the readings for the minimum and maximum (NaNs left out).
    mins: Vec<MonoDeque>,
    maxs: Vec<MonoDeque>,
    /// `newest` in half-window-lengths when the sums were last recomputed.
    resum_epoch: i64,
}

impl MainWindow {
    fn new(fields: usize, start: u32) -> Self {
        Self {
            start,
            sums: vec![0.0; fields],
            present: vec![0; fields],
            mins: (0..fields).map(|_| MonoDeque::min()).collect(),
            maxs: (0..fields).map(|_| MonoDeque::max()).collect(),
            resum_epoch: i64::MIN,
        }
    }
}

impl KeyWindow {
    fn new(fields: usize, base: i64, plans: &[Plan]) -> Self {
        let buf = Buffer::new(fields, base);
        Self {
            main: MainWindow::new(fields, buf.front_seq),
            declared: plans.iter().map(|p| SpecState::new(p, &buf)).collect(),
            buf,
            newest: i64::MIN,
            pack_epoch: i64::MIN,
            active: false,
        }
    }

    /// Declared windows `plans` in place of the current ones, computed from
    /// the buffer.
    fn declare(&mut self, plans: &[Plan]) {
        self.declared = plans.iter().map(|p| SpecState::new(p, &self.buf)).collect();
        for (s, p) in self.declared.iter_mut().zip(plans) {
            s.recompute(p, &self.buf, self.newest);
        }
    }

    /// Re-expresses times against a new base when one no longer fits in
    /// i32; returns whether the declared windows' time sums need computing
    /// again.
    fn rebase(&mut self, time_ms: i64, plans: &[Plan]) -> bool {
        let new_base = if self.buf.len() == 0 {
            time_ms
        } else {
            self.buf.time(0).min(time_ms)
        };
        if (time_ms - new_base) > i64::from(i32::MAX)
            || (self.newest - new_base) > i64::from(i32::MAX)
        {
            // The buffer spans more than 24 days of event time: start over
            // from this reading rather than keep an unrepresentable span.
            self.buf.clear(time_ms);
            self.newest = i64::MIN;
            self.main = MainWindow::new(self.buf.fields, self.buf.front_seq);
            self.declared = plans.iter().map(|p| SpecState::new(p, &self.buf)).collect();
            return false;
        }
        self.buf.rebase(new_base);
        true
    }

    /// Stores a reading and moves each window on: the `--window` as it
    /// always did (the same sums, in the same order, so its views are the
    /// same bits), then each declared window, incrementally unless the
    /// values were re-expressed (rebased times, values turned to or from
    /// doubles): then each is computed again from the buffer, after the
    /// readings older than the longest window left it.
    fn insert(
        &mut self,
        cfg: &WindowConfig,
        plans: &[Plan],
        longest_ms: i64,
        time_ms: i64,
        values: &[f64],
    ) {
        let rel = time_ms - self.buf.base;
        let mut recompute = false;
        if rel < i64::from(i32::MIN) || rel > i64::from(i32::MAX) {
            recompute = self.rebase(time_ms, plans);
        }
        let rel = (time_ms - self.buf.base) as i32;
        self.buf.reserve();
        for (f, &v) in values.iter().enumerate() {
            if !v.is_nan() {
                self.main.sums[f] += v;
                self.main.present[f] += 1;
            }
        }
        let decimal = self.buf.values.is_decimal();
        let (buf, declared) = (&mut self.buf, &mut self.declared);
        let (at, repacked) = buf.insert(rel, values, &mut |f, scale| {
            for (s, p) in declared.iter_mut().zip(plans) {
                s.rescale(p, f, scale);
            }
        });
        recompute |= repacked || decimal != self.buf.values.is_decimal();
        self.newest = self.newest.max(time_ms);
        let outside = self.main_insert(at, cfg.length_ms);
        self.main_evict(outside, cfg.length_ms);
        if !recompute {
            for (s, p) in self.declared.iter_mut().zip(plans) {
                s.insert(p, &self.buf, at, self.newest);
                s.evict(p, &self.buf, self.newest);
            }
        }
        let cutoff = self.newest - longest_ms;
        while self.buf.len() > 0 && self.buf.time(0) <= cutoff {
            self.buf.pop_front();
        }
        let epoch = self.newest.div_euclid((longest_ms / 2).max(1));
        if epoch != self.pack_epoch {
            // Once per half longest window, whatever the values: doubles
            // no longer held go back to exact decimals.
            self.pack_epoch = epoch;
            recompute |= self.buf.values.repack(self.buf.fields);
        }
        if recompute {
            for (s, p) in self.declared.iter_mut().zip(plans) {
                s.recompute(p, &self.buf, self.newest);
            }
        }
        self.buf.shrink();
        self.resum_on_epoch(cfg.length_ms);
    }

    /// Reading `at`, just stored, enters the `--window`'s deques (its sums
    /// took it already). Returns it when it is too old for the window, to
    /// be evicted at once.
    fn main_insert(&mut self, at: usize, length_ms: i64) -> Option<usize> {
        let (buf, main) = (&self.buf, &mut self.main);
        let late = at + 1 < buf.len();
        if late {
            for d in main.mins.iter_mut().chain(main.maxs.iter_mut()) {
                d.shift(buf.front_seq, at);
            }
            if buf.time(at) <= self.newest - length_ms {
                main.start = main.start.wrapping_add(1);
                return Some(at);
            }
        }
        for f in 0..buf.fields {
            if buf.value(at, f).is_nan() {
                continue;
            }
            for d in [&mut main.mins[f], &mut main.maxs[f]] {
                if late {
                    d.insert(buf, f, at);
                } else {
                    d.push(buf, f, at);
                }
            }
        }
        None
    }

    /// Drops readings at or before `newest - length` from the `--window`,
    /// and first `outside`, a late reading already older than that.
    fn main_evict(&mut self, outside: Option<usize>, length_ms: i64) {
        let (buf, main) = (&self.buf, &mut self.main);
        let cutoff = self.newest - length_ms;
        let mut cancelled = false;
        let mut remove = |main: &mut MainWindow, i: usize| {
            for f in 0..buf.fields {
                let v = buf.value(i, f);
                if !v.is_nan() {
                    main.sums[f] -= v;
                    main.present[f] -= 1;
                    // Removing a value far larger than what remains loses
                    // the remainder's digits to rounding: recompute.
                    cancelled |= v != 0.0 && v.abs() > CANCELLATION * main.sums[f].abs();
                }
            }
        };
        if let Some(at) = outside {
            remove(main, at);
        }
        let mut i = buf.idx(main.start);
        while i < buf.len() && buf.time(i) <= cutoff {
            remove(main, i);
            for d in main.mins.iter_mut().chain(main.maxs.iter_mut()) {
                d.pop(buf.seq(i));
            }
            i += 1;
        }
        main.start = buf.seq(i);
        // A sum that overflowed (or became inf - inf) is recomputed from
        // what is left rather than carried forward.
        if cancelled || main.sums.iter().any(|s| !s.is_finite()) {
            self.resum();
        }
    }

    /// Recomputes the sums whenever the newest event time enters another
    /// half window length. Besides bounding rounding drift, this makes the
    /// sums, and so the means, a function of the readings of the last one
    /// and a half window lengths only, not of the whole history: a rebuild
    /// that reads that much again gets bit-identical means.
    fn resum_on_epoch(&mut self, length_ms: i64) {
        let epoch = self.newest.div_euclid((length_ms / 2).max(1));
        if epoch != self.main.resum_epoch {
            self.main.resum_epoch = epoch;
            self.resum();
        }
    }

    /// Recomputes the `--window`'s sums exactly, so add/subtract rounding
    /// cannot drift.
    fn resum(&mut self) {
        let from = self.buf.idx(self.main.start);
        for f in 0..self.buf.fields {
            let (mut s, mut n) = (0.0, 0);
            for i in from..self.buf.len() {
                let v = self.buf.value(i, f);
                if !v.is_nan() {
                    s += v;
                    n += 1;
                }
            }
            self.main.sums[f] = s;
            self.main.present[f] = n;
        }
    }

    /// The mean of field `f`. From the running sum, unless that overflowed
    /// (readings near `f64::MAX`): then from the readings, each divided
    /// first, which cannot overflow.
    fn mean(&self, f: usize, present: u32) -> f64 {
        if present == 0 {
            return f64::NAN;
        }
        let sum = self.main.sums[f];
        if sum.is_finite() {
            return sum / f64::from(present);
        }
        let n = f64::from(present);
        (self.buf.idx(self.main.start)..self.buf.len())
            .map(|i| self.buf.value(i, f))
            .filter(|v| !v.is_nan())
            .map(|v| v / n)
            .sum()
    }

    fn snapshot(&self, k: usize, out: &mut ViewBuilder) {
        let buf = &self.buf;
        let (from, to) = (buf.idx(self.main.start), buf.len());
        let n = to - from;
        let view = &mut out.view;
        view.starts.push(buf.time(from));
        view.ends.push(buf.time(to - 1));
        view.counts.push(n as u32);
        let at = |d: &MonoDeque, f| d.front().map_or(f64::NAN, |s| buf.value(buf.idx(s), f));
        for (f, fw) in view.fields.iter_mut().enumerate() {
            fw.mean.push(self.mean(f, self.main.present[f]));
            fw.min.push(at(&self.main.mins[f], f));
            fw.max.push(at(&self.main.maxs[f], f));
            fw.first.push(buf.value(from, f));
            fw.last.push(buf.value(to - 1, f));
            if out.with_values {
                let m = n.min(k);
                fw.head.extend((from..from + m).map(|i| buf.value(i, f)));
                fw.head.extend(std::iter::repeat_n(f64::NAN, k - m));
                fw.tail.extend((to - m..to).map(|i| buf.value(i, f)));
                fw.tail.extend(std::iter::repeat_n(f64::NAN, k - m));
            }
        }
    }
}

#[cfg(test)]
impl Windows {
    /// Whether `key`'s values on `partition` are packed decimals (the
    /// declared windows' sums are then exact).
    fn decimal(&self, partition: i32, key: &str) -> bool {
        self.partitions[&partition].keys[key]
            .buf
            .values
            .is_decimal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn windows(lateness_ms: i64) -> Windows {
        Windows::new(WindowConfig {
            length_ms: 5 * MIN,
            lateness_ms,
            k: 3,
            fields: 2,
            idle_ms: 0,
            declared: Vec::new(),
        })
    }

    fn push(w: &mut Windows, key: &str, t: i64, a: f64, b: f64) -> Result<ViewBuilder, Refused> {
        let mut out = ViewBuilder::new(w.config(), true, 1);
        w.insert(0, 0, key, t, &[a, b], Some(&mut out)).map(|_| out)
    }

    /// Naive reference: the stats of `readings` within the window ending at
    /// the newest time.
    fn naive(readings: &[(i64, f64)], length: i64) -> (usize, f64, f64, f64) {
        let newest = readings.iter().map(|r| r.0).max().unwrap();
        let inside: Vec<f64> = readings
            .iter()
            .filter(|r| r.0 > newest - length)
            .map(|r| r.1)
            .collect();
        let mean = inside.iter().sum::<f64>() / inside.len() as f64;
        let min = inside.iter().copied().fold(f64::INFINITY, f64::min);
        let max = inside.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (inside.len(), mean, min, max)
    }

    #[test]
    fn window_is_event_time_and_excludes_its_left_edge() {
        let mut w = windows(0);
        push(&mut w, "s", 0, 10.0, 1.0).unwrap();
        push(&mut w, "s", MIN, 20.0, 1.0).unwrap();
        let v = push(&mut w, "s", 5 * MIN, 30.0, 1.0).unwrap().view;
        // t = 0 is exactly 5 minutes before the newest: out.
        assert_eq!(v.counts, [2]);
        assert_eq!(v.starts, [MIN]);
        assert_eq!(v.ends, [5 * MIN]);
        assert_eq!(v.fields[0].mean, [25.0]);
        assert_eq!((v.fields[0].first[0], v.fields[0].last[0]), (20.0, 30.0));
        assert_eq!(w.readings(), 2);
    }

    #[test]
    fn matches_a_naive_window_on_a_long_random_walk() {
        let mut w = windows(0);
        let mut all = Vec::new();
        let mut x = 20.0;
        let mut seed = 7u64;
        for i in 0..5000i64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x += ((seed >> 33) % 200) as f64 / 100.0 - 1.0;
            let t = i * 1000 + ((seed >> 20) % 900) as i64;
            all.push((t, x));
            let v = push(&mut w, "s", t, x, f64::NAN).unwrap().view;
            let (count, mean, min, max) = naive(&all, 5 * MIN);
            assert_eq!(v.counts[0] as usize, count, "at {i}");
            assert!((v.fields[0].mean[0] - mean).abs() < 1e-9, "mean at {i}");
            assert_eq!(
                (v.fields[0].min[0], v.fields[0].max[0]),
                (min, max),
                "at {i}"
            );
            assert!(v.fields[1].mean[0].is_nan());
        }
    }

    #[test]
    fn head_and_tail_pad_with_nan() {
        let mut w = windows(0);
        push(&mut w, "s", 0, 1.0, 0.0).unwrap();
        let v = push(&mut w, "s", 1, 2.0, 0.0).unwrap().view;
        assert_eq!(&v.fields[0].head[..2], &[1.0, 2.0]);
        assert!(v.fields[0].head[2].is_nan());
        assert_eq!(&v.fields[0].tail[..2], &[1.0, 2.0]);
        for t in 2..6 {
            push(&mut w, "s", t, t as f64 + 1.0, 0.0).unwrap();
        }
        let v = push(&mut w, "s", 6, 7.0, 0.0).unwrap().view;
        assert_eq!(v.fields[0].head, [1.0, 2.0, 3.0]);
        assert_eq!(v.fields[0].tail, [5.0, 6.0, 7.0]);
    }

    #[test]
    fn late_records_are_refused_and_out_of_order_ones_placed() {
        let mut w = windows(30_000);
        push(&mut w, "s", 100_000, 5.0, 0.0).unwrap();
        push(&mut w, "s", 200_000, 9.0, 0.0).unwrap();
        // 20 s behind: within lateness, lands between the two.
        let v = push(&mut w, "s", 180_000, 1.0, 0.0).unwrap().view;
        assert_eq!(v.fields[0].head, [5.0, 1.0, 9.0]);
        assert_eq!(v.fields[0].min, [1.0]);
        assert_eq!(v.ends, [200_000]);
        // 40 s behind: late.
        let late = push(&mut w, "s", 160_000, 1.0, 0.0).err().unwrap();
        assert_eq!(
            late,
            Refused::Late {
                newest_ms: 200_000,
                behind_ms: 40_000
            }
        );
        assert_eq!(w.readings(), 3);
        // Another key is unaffected by this key's time.
        assert!(push(&mut w, "t", 0, 1.0, 0.0).is_ok());
    }

    /// Inserts at `offset` of `partition`, without a view.
    fn at(w: &mut Windows, partition: i32, offset: i64, key: &str, t: i64) {
        w.insert(partition, offset, key, t, &[1.0, 1.0], None)
            .unwrap();
    }

    const I: i64 = SWEEP_INTERVAL;

    #[test]
    fn idle_keys_are_swept_at_interval_boundaries_on_their_partitions_median_time() {
        let mut w = windows(0);
        at(&mut w, 0, 0, "old", 0);
        at(&mut w, 0, 1, "a", 10 * MIN);
        at(&mut w, 0, 2, "b", 10 * MIN);
        // The first record of the next interval sweeps; every key was active
        // in the closing one: none goes, but the clock is now 10 minutes.
        at(&mut w, 0, I, "a", 10 * MIN + 1);
        assert_eq!(w.keys(), 3);
        assert_eq!(w.partition_clock(0), Some(10 * MIN));
        // Offsets within an interval never sweep, however many records.
        at(&mut w, 0, I + 1, "b", 10 * MIN + 2);
        assert_eq!(w.keys(), 3);
        // A gap in offsets still crosses the boundary: "old" was silent and
        // is 10 minutes behind the clock, so it goes.
        at(&mut w, 0, 5 * I + 7, "a", 10 * MIN + 3);
        assert_eq!((w.keys(), w.readings()), (2, 5));
    }

    #[test]
    fn one_far_ahead_key_cannot_sweep_the_others() {
        let mut w = windows(0);
        for (o, k) in ["a", "b", "c"].into_iter().enumerate() {
            at(&mut w, 0, o as i64, k, 0);
        }
        at(&mut w, 0, 3, "broken-clock", 10 * 365 * 24 * 60 * MIN);
        at(&mut w, 0, I, "a", 1);
        at(&mut w, 0, 2 * I, "b", 2);
        at(&mut w, 0, 3 * I, "c", 3);
        assert_eq!(w.keys(), 4);
        assert_eq!(w.partition_clock(0), Some(2));
    }

    #[test]
    fn partitions_keep_separate_clocks_and_can_be_dropped() {
        let mut w = windows(0);
        // Partition 1 runs an hour ahead of partition 0: it must not make
        // partition 0's keys idle.
        for (o, k) in ["a", "b", "c"].into_iter().enumerate() {
            at(&mut w, 0, o as i64, k, 0);
            at(&mut w, 1, o as i64, k, 60 * MIN);
        }
        at(&mut w, 0, I, "a", 1);
        at(&mut w, 1, I, "a", 60 * MIN + 1);
        at(&mut w, 0, 2 * I, "a", 2);
        at(&mut w, 1, 2 * I, "a", 60 * MIN + 2);
        assert_eq!((w.partition_keys(0), w.partition_keys(1)), (3, 3));
        assert_eq!(w.partition_clock(1), Some(60 * MIN + 1));
        w.drop_partition(1);
        assert_eq!((w.keys(), w.readings()), (3, 5));
    }

    #[test]
    fn a_sum_that_overflows_gives_the_right_mean_and_recovers() {
        let mut w = windows(0);
        push(&mut w, "s", 0, 1.7e308, 0.0).unwrap();
        let v = push(&mut w, "s", 1000, 1.7e308, 0.0).unwrap().view;
        assert_eq!(v.fields[0].mean, [1.7e308]);
        let v = push(&mut w, "s", 6 * MIN, 2.0, 0.0).unwrap().view;
        assert_eq!((v.counts[0], v.fields[0].mean[0]), (1, 2.0));
        let v = push(&mut w, "s", 6 * MIN + 1, 4.0, 0.0).unwrap().view;
        assert_eq!(v.fields[0].mean, [3.0]);
    }

    #[test]
    fn extreme_event_times_are_refused_not_panicked_on() {
        let mut w = windows(0);
        for t in [
            i64::MIN,
            i64::MIN + 1,
            MIN_TIME_MS - 1,
            MAX_TIME_MS + 1,
            i64::MAX,
        ] {
            assert_eq!(
                push(&mut w, "s", t, 1.0, 1.0).err(),
                Some(Refused::OutOfRange),
                "{t}"
            );
        }
        push(&mut w, "s", MIN_TIME_MS, 1.0, 1.0).unwrap();
        let v = push(&mut w, "s", MAX_TIME_MS, 2.0, 1.0).unwrap().view;
        assert_eq!((v.counts[0], v.starts[0]), (1, MAX_TIME_MS));
    }

    #[test]
    fn spans_beyond_i32_milliseconds_rebase() {
        let mut w = windows(0);
        push(&mut w, "s", 0, 1.0, 1.0).unwrap();
        let day = 86_400_000;
        let v = push(&mut w, "s", 30 * day, 2.0, 1.0).unwrap().view;
        assert_eq!((v.counts[0], v.starts[0]), (1, 30 * day));
        let v = push(&mut w, "s", 30 * day + 1, 3.0, 1.0).unwrap().view;
        assert_eq!(v.fields[0].mean, [2.5]);
    }

    mod model {
        //! The windows against a naive model: every accepted reading kept,
        //! stats recomputed from scratch for each record.
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        struct Step {
            partition: i32,
            key: u8,
            /// Milliseconds after the key's previous time (may be negative:
            /// out of order, late or not).
            dt: i64,
            value: f64,
        }

        fn value() -> impl Strategy<Value = f64> {
            prop_oneof![
                8 => -100.0..100.0f64,
                // Decimals as sensors write them, packed while they fit.
                8 => (-2_000_000..2_000_000i64, 0..4u32).prop_map(|(c, p)| c as f64 / 10f64.powi(p as i32)),
                1 => (-9_000_000_000i64..9_000_000_000).prop_map(|c| c as f64 / 1e6),
                1 => Just(f64::NAN),
                1 => prop_oneof![Just(1.7e308), Just(-1.7e308), Just(f64::MAX), Just(f64::MIN_POSITIVE), Just(0.0), Just(-0.0)],
                1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
            ]
        }

        fn step() -> impl Strategy<Value = Step> {
            (
                0..3i32,
                0..4u8,
                prop_oneof![6 => 0..20_000i64, 2 => -40_000..0i64, 1 => 0..400_000i64],
                value(),
            )
                .prop_map(|(partition, key, dt, value)| Step {
                    partition,
                    key,
                    dt,
                    value,
                })
        }

        /// A key's last time stepped from, newest time and accepted readings.
        type Model = (i64, i64, Vec<(i64, f64)>);

        fn close(a: f64, b: f64, scale: f64) -> bool {
            (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * scale.max(1.0)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn windows_equal_a_naive_recomputation(steps in prop::collection::vec(step(), 1..400), lateness in 0..60_000i64) {
                let length = 60_000;
                let mut w = Windows::new(WindowConfig { length_ms: length, lateness_ms: lateness, k: 2, fields: 1, idle_ms: 0, declared: Vec::new() });
                // Per (partition, key): last time stepped from, newest, accepted readings.
                let mut model: HashMap<(i32, u8), Model> = HashMap::new();
                for s in &steps {
                    let entry = model.entry((s.partition, s.key)).or_insert((1_800_000_000_000, i64::MIN, Vec::new()));
                    let t = entry.0 + s.dt;
                    entry.0 = t;
                    let mut out = ViewBuilder::new(w.config(), true, 1);
                    let got = w.insert(s.partition, 0, &format!("k{}", s.key), t, &[s.value], Some(&mut out));
                    if !entry.2.is_empty() && t < entry.1 - lateness {
                        prop_assert_eq!(got, Err(Refused::Late { newest_ms: entry.1, behind_ms: entry.1 - t }));
                        continue;
                    }
                    prop_assert!(got.is_ok());
                    entry.1 = entry.1.max(t);
                    let newest = entry.1;
                    entry.2.push((t, s.value));
                    entry.2.retain(|r| r.0 > newest - length);
                    entry.2.sort_by_key(|r| r.0);
                    let inside = &entry.2;
                    let v = out.view;
                    prop_assert_eq!(v.counts[0] as usize, inside.len());
                    prop_assert_eq!((v.starts[0], v.ends[0]), (inside[0].0, inside[inside.len() - 1].0));
                    let present: Vec<f64> = inside.iter().map(|r| r.1).filter(|v| !v.is_nan()).collect();
                    let n = present.len() as f64;
                    let mean = if present.is_empty() { f64::NAN } else { present.iter().map(|v| v / n).sum::<f64>() };
                    let scale = present.iter().fold(0.0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
                    prop_assert!(close(v.fields[0].mean[0], mean, scale), "mean {} against {} over {:?}", v.fields[0].mean[0], mean, present);
                    let min = present.iter().copied().fold(f64::NAN, f64::min);
                    let max = present.iter().copied().fold(f64::NAN, f64::max);
                    prop_assert!(close(v.fields[0].min[0], min, 0.0) && close(v.fields[0].max[0], max, 0.0));
                    prop_assert!(close(v.fields[0].first[0], inside[0].1, 0.0) && close(v.fields[0].last[0], inside[inside.len() - 1].1, 0.0));
                }
                // Dropping partitions may never break the counts.
                prop_assert!(w.keys() <= model.len());
                for p in 0..3 {
                    w.drop_partition(p);
                }
                prop_assert_eq!((w.keys(), w.readings()), (0, 0));
            }
        }
    }
}
