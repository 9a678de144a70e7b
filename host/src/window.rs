//! Sliding windows per key, on event time, kept natively.
//!
//! A key's window holds its readings of the last `length` before the newest
//! event time seen for that key (`newest - length < t <= newest`). It is
//! driven by event time only: replaying a topic gives the same windows, and
//! nothing depends on the host's clock (the article compared wall-clock time
//! with event timestamps, which empties every window during a replay or after
//! a pause).
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
//! - its newest event time is more than `length + lateness + idle` behind
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
//! - readings are stored column-wise in two ring buffers, event times as
//!   `i32` milliseconds from a per-key base and values interleaved `fields`
//!   at a time, as exact decimal counts in `i32` while they are decimals of
//!   a few places (as sensors write them; see `Cells`), else as `f64`: a
//!   reading of four fields costs 20 bytes (36 with `f64`), and the buffers
//!   grow by an eighth at a time rather than doubling;
//! - sums per field are updated on insert and evict, and recomputed exactly
//!   whenever the key's newest event time enters another half window length
//!   (so rounding cannot drift, and a mean depends only on recent readings,
//!   which a rebuild reads again), and at once when a sum overflows or cancels
//!   (a mean is then computed without overflow);
//! - minimums and maximums come from monotonic deques of reading sequence
//!   numbers, so every insert and evict is amortised O(1).
//!
//! Records may arrive out of order. One no older than `newest - lateness` is
//! inserted at its place by event time (this costs O(window) for that key,
//! as the deques are rebuilt, which is fine for the rare late record); one
//! older is refused as `Late` and never silently dropped by the caller.
//!
//! Event times must lie in `MIN_TIME_MS..=MAX_TIME_MS` (years 0001 to 9999);
//! the decoder refuses others, and `insert` refuses them too.

use std::collections::{HashMap, VecDeque};

pub use crate::text::time::{MAX_TIME_MS, MIN_TIME_MS};

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
    /// How much longer than `length + lateness` a key may stay silent, on
    /// its partition's clock, before its window is dropped.
    pub idle_ms: i64,
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
    /// An empty builder for `fields` fields, `k` values at each end, room
    /// for `capacity` records.
    pub fn new(fields: usize, k: usize, with_values: bool, capacity: usize) -> Self {
        use crate::contract::FieldWindow;
        let col = || Vec::with_capacity(capacity);
        let kcol = || {
            if with_values {
                Vec::with_capacity(capacity * k)
            } else {
                Vec::new()
            }
        };
        let fields = (0..fields)
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
        };
        Self { view, with_values }
    }
}

/// All windows of one pipeline, by input partition.
pub struct Windows {
    cfg: WindowConfig,
    partitions: HashMap<i32, PartitionWindows>,
    keys: usize,
    readings: usize,
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
    pub fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            partitions: HashMap::new(),
            keys: 0,
            readings: 0,
        }
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
            self.readings -= p.keys.values().map(KeyWindow::len).sum::<usize>();
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

    /// Adds the reading at `offset` of `partition` to `key`'s window and,
    /// when `out` is given, appends the window as it now is to it. `values`
    /// has one entry per field, NaN for absent. Records must arrive in
    /// offset order per partition.
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
                let (keys, readings) = part.sweep(cfg.length_ms + cfg.lateness_ms + cfg.idle_ms);
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
                    .or_insert_with(|| KeyWindow::new(cfg.fields, time_ms))
            }
        };
        window.active = true;
        if window.len() > 0 && time_ms < window.newest - cfg.lateness_ms {
            return Err(Refused::Late {
                newest_ms: window.newest,
                behind_ms: window.newest - time_ms,
            });
        }
        let before = window.len();
        window.insert(time_ms, values);
        window.evict(cfg.length_ms);
        window.resum_on_epoch(cfg.length_ms);
        if let Some(out) = out {
            window.snapshot(cfg.k, out);
        }
        self.readings = self.readings + window.len() - before;
        Ok(())
    }
}

impl PartitionWindows {
    /// Closes the current interval: advances the clock, drops the keys that
    /// are idle (see the module's documentation), and returns how many keys
    /// and readings went.
    fn sweep(&mut self, horizon_ms: i64) -> (usize, usize) {
        if !self.times.is_empty() {
            let mid = (self.times.len() - 1) / 2;
            let median = *self.times.select_nth_unstable(mid).1;
            self.clock = self.clock.max(median);
            self.times.clear();
        }
        let cutoff = self.clock.saturating_sub(horizon_ms);
        let (mut keys, mut readings) = (0, 0);
        self.keys.retain(|_, w| {
            let keep = std::mem::replace(&mut w.active, false) || w.newest >= cutoff;
            if !keep {
                keys += 1;
                readings += w.len();
            }
            keep
        });
        (keys, readings)
    }
}

/// The readings' values, `fields` per reading, oldest first.
///
/// Sensors write decimals with few places (the article's producer rounds to
/// two). While every value a window holds is such a decimal, it is kept as
/// an `i32` count of `10^-places` (places per field), half the bytes of an
/// `f64`, and nothing is lost: `count / 10^places` is exactly the double the
/// decimal text reads as, since both are exact in binary and IEEE division
/// rounds correctly; a value is only packed after that is checked. The first
/// value that does not fit (more places than `MAX_PLACES`, too large, `-0`,
/// an infinity) turns the window's values to `f64` until it empties.
enum Cells {
    Decimal {
        cells: VecDeque<i32>,
        places: Box<[u8]>,
    },
    Float(VecDeque<f64>),
}

/// The cell of an absent value (NaN) in `Cells::Decimal`.
const NAN_CELL: i32 = i32::MIN;
const MAX_PLACES: usize = 6;
const POW10: [f64; MAX_PLACES + 1] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// `v` as a count of `10^-places`, if that gives `v` back exactly.
fn pack(v: f64, places: u8) -> Option<i32> {
    if v.is_nan() {
        return Some(NAN_CELL);
    }
    let p = POW10[usize::from(places)];
    let x = v * p;
    if !(x.abs() < 2_147_483_000.0) {
        return None;
    }
    // Rounded by a cast; a wrong rounding only fails the check.
    let c = (x + 0.5f64.copysign(x)) as i32;
    (c != NAN_CELL && (f64::from(c) / p).to_bits() == v.to_bits()).then_some(c)
}

impl Cells {
    fn new(fields: usize) -> Cells {
        Cells::Decimal {
            cells: VecDeque::new(),
            places: vec![0; fields].into_boxed_slice(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Cells::Decimal { cells, .. } => cells.len(),
            Cells::Float(v) => v.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Cells::Decimal { cells, .. } => cells.capacity(),
            Cells::Float(v) => v.capacity(),
        }
    }

    /// Value `f` of reading `i`.
    #[inline]
    fn get(&self, i: usize, f: usize, fields: usize) -> f64 {
        match self {
            Cells::Decimal { cells, places } => {
                let c = cells[i * fields + f];
                if c == NAN_CELL {
                    f64::NAN
                } else {
                    f64::from(c) / POW10[usize::from(places[f])]
                }
            }
            Cells::Float(v) => v[i * fields + f],
        }
    }

    /// How value `f` of reading `i` compares with that of reading `j`,
    /// neither NaN: on the packed counts while decimal (a field's values
    /// share their places), with no division.
    #[inline]
    fn compare(&self, i: usize, j: usize, f: usize, fields: usize) -> std::cmp::Ordering {
        match self {
            Cells::Decimal { cells, .. } => cells[i * fields + f].cmp(&cells[j * fields + f]),
            Cells::Float(v) => v[i * fields + f]
                .partial_cmp(&v[j * fields + f])
                .unwrap_or(std::cmp::Ordering::Equal),
        }
    }

    /// Makes every value of `values` packable, changing a field's places or
    /// turning to `f64` if need be; returns the cells to store.
    fn fit(&mut self, values: &[f64]) -> Option<[i32; crate::decode::MAX_FIELDS]> {
        let fields = values.len();
        let Cells::Decimal { cells, places } = self else {
            return None;
        };
        let mut out = [0i32; crate::decode::MAX_FIELDS];
        for (f, &v) in values.iter().enumerate() {
            if let Some(c) = pack(v, places[f]) {
                out[f] = c;
                continue;
            }
            // More places, if the field's other values still fit with them.
            let more = (usize::from(places[f]) + 1..=MAX_PLACES).find_map(|p| {
                let c = pack(v, p as u8)?;
                let scale = 10i64.pow((p - usize::from(places[f])) as u32);
                cells
                    .iter()
                    .skip(f)
                    .step_by(fields)
                    .all(|&old| {
                        old == NAN_CELL || (i64::from(old) * scale).unsigned_abs() < 2_147_483_000
                    })
                    .then_some((p, c, scale))
            });
            match more {
                Some((p, c, scale)) => {
                    for old in cells.iter_mut().skip(f).step_by(fields) {
                        if *old != NAN_CELL {
                            *old = (i64::from(*old) * scale) as i32;
                        }
                    }
                    places[f] = p as u8;
                    out[f] = c;
                }
                None => {
                    self.widen(fields);
                    return None;
                }
            }
        }
        Some(out)
    }

    fn widen(&mut self, fields: usize) {
        if matches!(self, Cells::Float(_)) {
            return;
        }
        let n = self.len() / fields.max(1);
        let mut wide = VecDeque::with_capacity(self.capacity());
        for i in 0..n {
            for f in 0..fields {
                wide.push_back(self.get(i, f, fields));
            }
        }
        *self = Cells::Float(wide);
    }

    fn push(&mut self, values: &[f64]) {
        match self.fit(values) {
            Some(out) => {
                if let Cells::Decimal { cells, .. } = self {
                    cells.extend(&out[..values.len()]);
                }
            }
            None => {
                if let Cells::Float(v) = self {
                    v.extend(values.iter().copied());
                }
            }
        }
    }

    /// Inserts `values` as reading `at`.
    fn insert(&mut self, at: usize, values: &[f64]) {
        let fields = values.len();
        match self.fit(values) {
            Some(out) => {
                if let Cells::Decimal { cells, .. } = self {
                    for (j, &c) in out[..fields].iter().enumerate() {
                        cells.insert(at * fields + j, c);
                    }
                }
            }
            None => {
                if let Cells::Float(v) = self {
                    for (j, &x) in values.iter().enumerate() {
                        v.insert(at * fields + j, x);
                    }
                }
            }
        }
    }

    fn pop_front(&mut self, fields: usize) {
        match self {
            Cells::Decimal { cells, .. } => drop(cells.drain(..fields)),
            Cells::Float(v) => drop(v.drain(..fields)),
        }
    }

    fn reserve(&mut self, extra: usize) {
        match self {
            Cells::Decimal { cells, .. } => KeyWindow::reserve(cells, extra),
            Cells::Float(v) => KeyWindow::reserve(v, extra),
        }
    }

    fn shrink_to(&mut self, n: usize) {
        match self {
            Cells::Decimal { cells, .. } => cells.shrink_to(n),
            Cells::Float(v) => v.shrink_to(n),
        }
    }

    /// Empties it, back to decimals.
    fn clear(&mut self, fields: usize) {
        *self = Cells::new(fields);
    }
}

/// Evicting a value more than this many times the remaining sum triggers an
/// exact recomputation (2^26: half of an f64's 53 bits of precision).
const CANCELLATION: f64 = 67_108_864.0;

/// One key's window.
struct KeyWindow {
    /// Event times relative to `base`, oldest first.
    times: VecDeque<i32>,
    base: i64,
    /// `fields` values per reading, readings oldest first.
    values: Cells,
    fields: usize,
    newest: i64,
    /// Sequence number of the oldest reading; reading `i` has `front_seq + i`
    /// (wrapping: only differences within one window are ever used).
    front_seq: u32,
    sums: Vec<f64>,
    present: Vec<u32>,
    /// Per field: sequence numbers whose values increase (for the minimum)
    /// or decrease (for the maximum) from front to back; NaNs are left out.
    mins: Vec<VecDeque<u32>>,
    maxs: Vec<VecDeque<u32>>,
    /// `newest` in half-window-lengths when the sums were last recomputed.
    resum_epoch: i64,
    /// Whether a record arrived in its partition's current sweep interval.
    active: bool,
}

impl KeyWindow {
    fn new(fields: usize, base: i64) -> Self {
        Self {
            times: VecDeque::new(),
            base,
            values: Cells::new(fields),
            fields,
            newest: i64::MIN,
            front_seq: 0,
            sums: vec![0.0; fields],
            present: vec![0; fields],
            mins: vec![VecDeque::new(); fields],
            maxs: vec![VecDeque::new(); fields],
            resum_epoch: i64::MIN,
            active: false,
        }
    }

    fn len(&self) -> usize {
        self.times.len()
    }

    fn time(&self, i: usize) -> i64 {
        self.base + i64::from(self.times[i])
    }

    fn value(&self, i: usize, f: usize) -> f64 {
        self.values.get(i, f, self.fields)
    }

    fn value_at_seq(&self, seq: u32, f: usize) -> f64 {
        self.value(seq.wrapping_sub(self.front_seq) as usize, f)
    }

    /// Grows a ring buffer by an eighth instead of doubling: windows are
    /// long lived and many, so slack costs more than the extra copies, which
    /// only happen while a window fills up.
    fn reserve<T>(buf: &mut VecDeque<T>, extra: usize) {
        if buf.len() + extra > buf.capacity() {
            buf.reserve_exact((buf.len() / 8).max(4).max(extra));
        }
    }

    /// Re-expresses times against a new base when one no longer fits in i32.
    fn rebase(&mut self, time_ms: i64) {
        let new_base = if self.times.is_empty() {
            time_ms
        } else {
            self.time(0).min(time_ms)
        };
        if (time_ms - new_base) > i64::from(i32::MAX)
            || (self.newest - new_base) > i64::from(i32::MAX)
        {
            // The window spans more than 24 days of event time: start over
            // from this reading rather than keep an unrepresentable span.
            self.clear(time_ms);
            return;
        }
        for i in 0..self.times.len() {
            let t = self.base + i64::from(self.times[i]);
            self.times[i] = (t - new_base) as i32;
        }
        self.base = new_base;
    }

    fn clear(&mut self, base: i64) {
        self.newest = i64::MIN;
        self.front_seq = self.front_seq.wrapping_add(self.times.len() as u32);
        self.times.clear();
        self.values.clear(self.fields);
        self.base = base;
        self.sums.iter_mut().for_each(|s| *s = 0.0);
        self.present.iter_mut().for_each(|c| *c = 0);
        self.mins.iter_mut().for_each(VecDeque::clear);
        self.maxs.iter_mut().for_each(VecDeque::clear);
    }

    fn insert(&mut self, time_ms: i64, values: &[f64]) {
        let rel = time_ms - self.base;
        if rel < i64::from(i32::MIN) || rel > i64::from(i32::MAX) {
            self.rebase(time_ms);
        }
        let rel = (time_ms - self.base) as i32;
        Self::reserve(&mut self.times, 1);
        self.values.reserve(self.fields);
        for (f, &v) in values.iter().enumerate() {
            if !v.is_nan() {
                self.sums[f] += v;
                self.present[f] += 1;
            }
        }
        if self.times.back().is_none_or(|&last| last <= rel) {
            // In order: the common case.
            self.times.push_back(rel);
            self.values.push(values);
            let seq = self.front_seq.wrapping_add(self.times.len() as u32 - 1);
            for (f, &v) in values.iter().enumerate() {
                if !v.is_nan() {
                    self.push_monotonic(f, seq);
                }
            }
        } else {
            // Out of order: insert at its place, then rebuild the deques.
            let at = self.times.partition_point(|&t| t <= rel);
            self.times.insert(at, rel);
            self.values.insert(at, values);
            self.rebuild_monotonic();
        }
        self.newest = self.newest.max(time_ms);
    }

    /// Adds reading `seq` (stored already, its field `f` not NaN) to the
    /// field's deques.
    fn push_monotonic(&mut self, f: usize, seq: u32) {
        use std::cmp::Ordering::{Greater, Less};
        let at = |s: u32| s.wrapping_sub(self.front_seq) as usize;
        let new = at(seq);
        while let Some(&back) = self.mins[f].back() {
            if self.values.compare(at(back), new, f, self.fields) != Less {
                self.mins[f].pop_back();
            } else {
                break;
            }
        }
        Self::reserve(&mut self.mins[f], 1);
        self.mins[f].push_back(seq);
        while let Some(&back) = self.maxs[f].back() {
            if self.values.compare(at(back), new, f, self.fields) != Greater {
                self.maxs[f].pop_back();
            } else {
                break;
            }
        }
        Self::reserve(&mut self.maxs[f], 1);
        self.maxs[f].push_back(seq);
    }

    fn rebuild_monotonic(&mut self) {
        self.mins.iter_mut().for_each(VecDeque::clear);
        self.maxs.iter_mut().for_each(VecDeque::clear);
        for i in 0..self.len() {
            for f in 0..self.fields {
                let v = self.value(i, f);
                if !v.is_nan() {
                    self.push_monotonic(f, self.front_seq.wrapping_add(i as u32));
                }
            }
        }
    }

    /// Drops readings at or before `newest - length`.
    fn evict(&mut self, length_ms: i64) {
        let cutoff = self.newest - length_ms;
        let mut cancelled = false;
        while self
            .times
            .front()
            .is_some_and(|&t| self.base + i64::from(t) <= cutoff)
        {
            for f in 0..self.fields {
                let v = self.value(0, f);
                if !v.is_nan() {
                    self.sums[f] -= v;
                    self.present[f] -= 1;
                    // Removing a value far larger than what remains loses
                    // the remainder's digits to rounding: recompute.
                    cancelled |= v != 0.0 && v.abs() > CANCELLATION * self.sums[f].abs();
                }
                if self.mins[f].front() == Some(&self.front_seq) {
                    self.mins[f].pop_front();
                }
                if self.maxs[f].front() == Some(&self.front_seq) {
                    self.maxs[f].pop_front();
                }
            }
            self.times.pop_front();
            self.values.pop_front(self.fields);
            self.front_seq = self.front_seq.wrapping_add(1);
        }
        // A sum that overflowed (or became inf - inf) is recomputed from
        // what is left rather than carried forward.
        if cancelled || self.sums.iter().any(|s| !s.is_finite()) {
            self.resum();
        }
        // Give memory back when a window shrank a lot (a burst passed).
        if self.times.capacity() > 64 && self.times.len() < self.times.capacity() / 4 {
            self.times.shrink_to(self.times.len() * 2);
            self.values.shrink_to(self.values.len() * 2);
        }
    }

    /// Recomputes the sums exactly, so add/subtract rounding cannot drift.
    /// Recomputes the sums whenever the newest event time enters another
    /// half window length. Besides bounding rounding drift, this makes the
    /// sums, and so the means, a function of the readings of the last one
    /// and a half window lengths only, not of the whole history: a rebuild
    /// that reads that much again gets bit-identical means.
    fn resum_on_epoch(&mut self, length_ms: i64) {
        let epoch = self.newest.div_euclid((length_ms / 2).max(1));
        if epoch != self.resum_epoch {
            self.resum_epoch = epoch;
            self.resum();
        }
    }

    fn resum(&mut self) {
        for f in 0..self.fields {
            let (mut s, mut n) = (0.0, 0);
            for i in 0..self.len() {
                let v = self.value(i, f);
                if !v.is_nan() {
                    s += v;
                    n += 1;
                }
            }
            self.sums[f] = s;
            self.present[f] = n;
        }
    }

    /// The mean of field `f`. From the running sum, unless that overflowed
    /// (readings near `f64::MAX`): then from the readings, each divided
    /// first, which cannot overflow.
    fn mean(&self, f: usize, present: u32) -> f64 {
        if present == 0 {
            return f64::NAN;
        }
        let sum = self.sums[f];
        if sum.is_finite() {
            return sum / f64::from(present);
        }
        let n = f64::from(present);
        (0..self.len())
            .map(|i| self.value(i, f))
            .filter(|v| !v.is_nan())
            .map(|v| v / n)
            .sum()
    }

    fn snapshot(&self, k: usize, out: &mut ViewBuilder) {
        let n = self.len();
        let view = &mut out.view;
        view.starts.push(self.time(0));
        view.ends.push(self.time(n - 1));
        view.counts.push(n as u32);
        for (f, fw) in view.fields.iter_mut().enumerate() {
            let present = self.present[f];
            fw.mean.push(self.mean(f, present));
            fw.min.push(
                self.mins[f]
                    .front()
                    .map_or(f64::NAN, |&s| self.value_at_seq(s, f)),
            );
            fw.max.push(
                self.maxs[f]
                    .front()
                    .map_or(f64::NAN, |&s| self.value_at_seq(s, f)),
            );
            fw.first.push(self.value(0, f));
            fw.last.push(self.value(n - 1, f));
            if out.with_values {
                let m = n.min(k);
                fw.head.extend((0..m).map(|i| self.value(i, f)));
                fw.head.extend(std::iter::repeat_n(f64::NAN, k - m));
                fw.tail.extend((n - m..n).map(|i| self.value(i, f)));
                fw.tail.extend(std::iter::repeat_n(f64::NAN, k - m));
            }
        }
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
        })
    }

    fn push(w: &mut Windows, key: &str, t: i64, a: f64, b: f64) -> Result<ViewBuilder, Refused> {
        let mut out = ViewBuilder::new(2, 3, true, 1);
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
    fn decimal_cells_give_back_exactly_the_values_put_in() {
        let values = [
            21.5,
            0.1,
            -0.3,
            1013.25,
            0.99,
            40.123456,
            1e-6,
            2147.48,
            -0.0,
            1e300,
            0.1 + 0.2,
        ];
        let mut cells = Cells::new(1);
        for (i, &v) in values.iter().enumerate() {
            cells.push(&[v]);
            // Every value so far reads back bit for bit, packed or not.
            for (j, &w) in values[..=i].iter().enumerate() {
                assert_eq!(
                    cells.get(j, 0, 1).to_bits(),
                    w.to_bits(),
                    "value {j} after {i}"
                );
            }
            // Decimals of up to six places stay packed; -0 turns it to f64.
            assert_eq!(matches!(cells, Cells::Decimal { .. }), i < 8, "after {v}");
        }
        let mut cells = Cells::new(2);
        cells.push(&[f64::NAN, 3.0]);
        assert!(cells.get(0, 0, 2).is_nan());
        assert_eq!(cells.get(0, 1, 2), 3.0);
        assert!(matches!(cells, Cells::Decimal { .. }));
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

        fn close(a: f64, b: f64, scale: f64) -> bool {
            (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * scale.max(1.0)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn windows_equal_a_naive_recomputation(steps in prop::collection::vec(step(), 1..400), lateness in 0..60_000i64) {
                let length = 60_000;
                let mut w = Windows::new(WindowConfig { length_ms: length, lateness_ms: lateness, k: 2, fields: 1, idle_ms: 0 });
                // Per (partition, key): last time stepped from, newest, accepted readings.
                let mut model: HashMap<(i32, u8), (i64, i64, Vec<(i64, f64)>)> = HashMap::new();
                for s in &steps {
                    let entry = model.entry((s.partition, s.key)).or_insert((1_800_000_000_000, i64::MIN, Vec::new()));
                    let t = entry.0 + s.dt;
                    entry.0 = t;
                    let mut out = ViewBuilder::new(1, 2, true, 1);
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
