//! Windows that rules declare (`window-spec`), kept per key on the key's
//! one buffer of readings.
//!
//! A declared window is a suffix of the buffer: its readings are those after
//! `newest - length`. Each keeps, per key and per field of its spec, running
//! state that its readings enter on insert and leave when they fall out of
//! it, while they may stay in the buffer for longer windows. What is kept
//! follows the aggregates asked for (`Plan`): the count always; `Σx` for a
//! sum or mean; the exact sums of `moments` for a variance, a deviation or
//! a slope; monotonic deques (`deque`) for a minimum or maximum; the first
//! and last reading holding the field for `first` and `last`; an ordered
//! multiset with cursors (`ranks`) for quantiles.

use crate::contract::types::{Aggregate, DeclaredWindow};

use super::buffer::{Buffer, POW10, Raw};
use super::deque::MonoDeque;
use super::moments::{Exact, FloatSums, Second};
use super::ranks::{Percent, Ranks, from_order_key, order_key};

/// The longest a declared window may be: 7 days.
pub const MAX_DECLARED_MS: i64 = 7 * 24 * 3_600_000;

/// A window a rule declares, as the windows keep it: a `window-spec` with
/// its field names resolved to indices into the configured fields.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredSpec {
    /// Length in milliseconds of event time.
    pub length_ms: i64,
    /// The fields it covers, as indices into the configured fields.
    pub fields: Vec<usize>,
    /// The statistics it gives for each of them, in the order given.
    pub aggregates: Vec<Aggregate>,
}

impl DeclaredSpec {
    /// Why the spec cannot be kept, if so: its length must be 1 ms to 7
    /// days, and it must name at least one field and one aggregate. Whether
    /// its fields are configured is `WindowConfig::check`'s.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_DECLARED_MS).contains(&self.length_ms) {
            return Err(format!(
                "a declared window's length must be 1 ms to 7 days, not {} ms",
                self.length_ms
            ));
        }
        if self.fields.is_empty() {
            return Err("a declared window must cover at least one field".into());
        }
        if self.aggregates.is_empty() {
            return Err("a declared window must ask for at least one aggregate".into());
        }
        Ok(())
    }

    /// The declared window's columns for `capacity` records.
    pub(super) fn columns(&self, capacity: usize) -> DeclaredWindow {
        use crate::contract::types::AggregateColumns;
        DeclaredWindow {
            counts: Vec::with_capacity(capacity),
            fields: (0..self.fields.len())
                .map(|_| AggregateColumns {
                    columns: (0..self.aggregates.len())
                        .map(|_| Vec::with_capacity(capacity))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// What a declared window keeps, from its spec.
pub(super) struct Plan {
    pub(super) length_ms: i64,
    pub(super) fields: Vec<usize>,
    pub(super) aggregates: Vec<Aggregate>,
    /// `Σx`: sum, mean, variance, deviation, slope.
    sums: bool,
    /// `Σx²`: variance, deviation.
    squares: bool,
    /// `Σt`, `Σt²`, `Σtx`: slope.
    times: bool,
    min: bool,
    max: bool,
    /// The first and last reading holding the field.
    ends: bool,
    percents: Vec<Percent>,
}

impl Plan {
    pub(super) fn new(spec: &DeclaredSpec) -> Self {
        use Aggregate as A;
        let has = |set: &[Aggregate]| spec.aggregates.iter().any(|a| set.contains(a));
        let mut percents: Vec<Percent> =
            spec.aggregates.iter().filter_map(|&a| percent(a)).collect();
        percents.sort_unstable();
        percents.dedup();
        Self {
            length_ms: spec.length_ms,
            fields: spec.fields.clone(),
            aggregates: spec.aggregates.clone(),
            sums: has(&[A::Sum, A::Mean, A::Variance, A::Stddev, A::Slope]),
            squares: has(&[A::Variance, A::Stddev]),
            times: has(&[A::Slope]),
            min: has(&[A::Min]),
            max: has(&[A::Max]),
            ends: has(&[A::First, A::Last]),
            percents,
        }
    }

    /// The half window length whose multiples recompute `f64` sums.
    fn half(&self) -> i64 {
        (self.length_ms / 2).max(1)
    }
}

/// The quantile an aggregate asks for, in percent.
fn percent(a: Aggregate) -> Option<Percent> {
    match a {
        Aggregate::P50 => Some(50),
        Aggregate::P90 => Some(90),
        Aggregate::P95 => Some(95),
        Aggregate::P99 => Some(99),
        _ => None,
    }
}

/// A field's values as an ordered multiset, keyed as its buffer stores them.
enum Quantiles {
    Decimal(Ranks<i32>),
    Float(Ranks<i64>),
}

/// One declared window of one key.
pub(super) struct SpecState {
    /// Sequence number of the window's oldest reading.
    start: u32,
    /// `newest` in half window lengths when `f64` sums were recomputed.
    epoch: i64,
    /// One per field of the spec, in its order.
    fields: Box<[FieldAgg]>,
}

/// The running state of one field of one declared window of one key.
struct FieldAgg {
    /// How many of the window's readings hold the field.
    n: u32,
    /// Sequence numbers of the oldest and newest of them (while `n > 0`,
    /// if the plan keeps `ends`).
    first: u32,
    last: u32,
    /// `Σx` in packed counts while decimal.
    sx: i64,
    second: Option<Box<Second>>,
    /// The sums while the buffer holds doubles.
    float: Option<Box<FloatSums>>,
    mins: Option<Box<MonoDeque>>,
    maxs: Option<Box<MonoDeque>>,
    ranks: Option<Box<Quantiles>>,
}

impl FieldAgg {
    fn new(plan: &Plan, float: bool) -> Self {
        let ranks = (!plan.percents.is_empty()).then(|| {
            Box::new(if float {
                Quantiles::Float(Ranks::new(&plan.percents))
            } else {
                Quantiles::Decimal(Ranks::new(&plan.percents))
            })
        });
        Self {
            n: 0,
            first: 0,
            last: 0,
            sx: 0,
            second: (plan.squares || plan.times).then(Box::default),
            float: (float && plan.sums).then(Box::default),
            mins: plan.min.then(|| Box::new(MonoDeque::min())),
            maxs: plan.max.then(|| Box::new(MonoDeque::max())),
            ranks,
        }
    }

    /// Renumbers after a reading was inserted at index `at` (see `Buffer`).
    fn shift(&mut self, buf: &Buffer, at: usize) {
        for s in [&mut self.first, &mut self.last] {
            if buf.idx(*s) >= at {
                *s = s.wrapping_add(1);
            }
        }
        for d in [&mut self.mins, &mut self.maxs].into_iter().flatten() {
            d.shift(buf.front_seq, at);
        }
    }

    /// Reading `at` of the buffer enters the window; `late` when it is not
    /// the newest.
    fn add(&mut self, plan: &Plan, buf: &Buffer, f: usize, at: usize, late: bool) {
        let Some(raw) = buf.raw(at, f) else {
            return;
        };
        self.n += 1;
        let seq = buf.seq(at);
        if plan.ends {
            if self.n == 1 || at < buf.idx(self.first) {
                self.first = seq;
            }
            if self.n == 1 || at > buf.idx(self.last) {
                self.last = seq;
            }
        }
        self.sums(plan, buf.times[at], raw, 1);
        for d in [&mut self.mins, &mut self.maxs].into_iter().flatten() {
            if late {
                d.insert(buf, f, at);
            } else {
                d.push(buf, f, at);
            }
        }
        match (self.ranks.as_deref_mut(), raw) {
            (Some(Quantiles::Decimal(r)), Raw::Cell(c)) => r.insert(c),
            (Some(Quantiles::Float(r)), Raw::Float(v)) => r.insert(order_key(v)),
            (None, _) => {}
            _ => unreachable!("quantiles are keyed as the buffer stores values"),
        }
    }

    /// Reading `i`, the window's oldest, leaves it.
    fn remove(&mut self, plan: &Plan, buf: &Buffer, f: usize, i: usize) {
        let Some(raw) = buf.raw(i, f) else {
            return;
        };
        self.n -= 1;
        let seq = buf.seq(i);
        if plan.ends && self.n > 0 && self.first == seq {
            // The next reading holding the field: each reading is passed
            // over once while the window's start moves past it.
            let next = (i + 1..buf.len()).find(|&j| buf.raw(j, f).is_some());
            self.first = buf.seq(next.expect("n > 0"));
        }
        self.sums(plan, buf.times[i], raw, -1);
        if let Some(fl) = self.float.as_deref_mut().filter(|_| self.n == 0) {
            fl.emptied();
        }
        for d in [&mut self.mins, &mut self.maxs].into_iter().flatten() {
            d.pop(seq);
        }
        match (self.ranks.as_deref_mut(), raw) {
            (Some(Quantiles::Decimal(r)), Raw::Cell(c)) => r.remove(c),
            (Some(Quantiles::Float(r)), Raw::Float(v)) => r.remove(order_key(v)),
            (None, _) => {}
            _ => unreachable!("quantiles are keyed as the buffer stores values"),
        }
    }

    /// Adds (`sign` 1) or removes (`sign` -1) value `raw` at time `t` to the
    /// sums the plan keeps.
    #[inline]
    fn sums(&mut self, plan: &Plan, t: i32, raw: Raw, sign: i8) {
        match (raw, self.float.as_deref_mut()) {
            (Raw::Float(v), Some(fl)) => fl.add(v, t, f64::from(sign), plan.squares, plan.times),
            (Raw::Cell(x), _) if plan.sums => {
                self.sx += i64::from(sign) * i64::from(x);
                if let Some(s) = self.second.as_deref_mut() {
                    let (x, sign) = (i128::from(x), i128::from(sign));
                    if plan.squares {
                        s.sxx += sign * x * x;
                    }
                    if plan.times {
                        s.stx += sign * i128::from(t) * x;
                    }
                }
            }
            _ => {}
        }
        if plan.times
            && let Some(s) = self.second.as_deref_mut()
        {
            s.st += i64::from(sign) * i64::from(t);
            s.stt += i128::from(sign) * i128::from(t) * i128::from(t);
        }
    }

    /// Multiplies the packed counts by `scale` (the field's places grew).
    fn rescale(&mut self, scale: i64) {
        self.sx *= scale;
        if let Some(s) = self.second.as_deref_mut() {
            s.sxx *= i128::from(scale) * i128::from(scale);
            s.stx *= i128::from(scale);
        }
        if let Some(Quantiles::Decimal(r)) = self.ranks.as_deref_mut() {
            r.rekey(|k| (i64::from(k) * scale) as i32);
        }
    }

    /// Aggregate `a` of field `f` over the window starting at `start`.
    fn get(&self, a: Aggregate, buf: &Buffer, f: usize, start: usize) -> f64 {
        use Aggregate as A;
        let value_at = |seq: Option<u32>| seq.map_or(f64::NAN, |s| buf.value(buf.idx(s), f));
        let held = |seq: u32| (self.n > 0).then_some(seq);
        match a {
            A::Count => f64::from(self.n),
            A::Sum | A::Mean | A::Variance | A::Stddev | A::Slope => self.moment(a, buf, f, start),
            A::Min => value_at(self.mins.as_ref().and_then(|d| d.front())),
            A::Max => value_at(self.maxs.as_ref().and_then(|d| d.front())),
            A::First => value_at(held(self.first)),
            A::Last => value_at(held(self.last)),
            A::P50 | A::P90 | A::P95 | A::P99 => {
                let p = percent(a).expect("a quantile");
                match self.ranks.as_deref() {
                    Some(Quantiles::Decimal(r)) => r.at(p).map_or(f64::NAN, |c| {
                        f64::from(c) / POW10[usize::from(buf.places(f))]
                    }),
                    Some(Quantiles::Float(r)) => r.at(p).map_or(f64::NAN, from_order_key),
                    None => f64::NAN,
                }
            }
        }
    }

    fn moment(&self, a: Aggregate, buf: &Buffer, f: usize, start: usize) -> f64 {
        use Aggregate as A;
        if let Some(fl) = self.float.as_deref() {
            if fl.overflowed() && fl.infinite().is_none() {
                return slow(a, buf, f, start);
            }
            let second = self.second.as_deref();
            return match a {
                A::Sum => fl.sum(self.n),
                A::Mean => fl.mean(self.n),
                A::Variance => fl.variance(self.n),
                A::Stddev => fl.variance(self.n).sqrt(),
                _ => second.map_or(f64::NAN, |s| fl.slope(self.n, s)),
            };
        }
        let exact = Exact {
            n: self.n,
            sx: self.sx,
            second: self.second.as_deref(),
            places: buf.places(f),
        };
        match a {
            A::Sum => exact.sum(),
            A::Mean => exact.mean(),
            A::Variance => exact.variance(),
            A::Stddev => exact.variance().sqrt(),
            _ => exact.slope(),
        }
    }
}

/// Sum, mean, variance, deviation or slope computed from the readings,
/// without overflow where the result is finite: for the rare window whose
/// `f64` sums overflowed (values near `f64::MAX`). Each term is scaled
/// before it is summed.
fn slow(a: Aggregate, buf: &Buffer, f: usize, start: usize) -> f64 {
    let present: Vec<(f64, f64)> = (start..buf.len())
        .map(|i| (f64::from(buf.times[i]), buf.value(i, f)))
        .filter(|p| !p.1.is_nan())
        .collect();
    let n = present.len() as f64;
    let mean = present.iter().map(|p| p.1 / n).sum::<f64>();
    match a {
        Aggregate::Sum => Some(present.iter().map(|p| p.1).sum::<f64>())
            .filter(|s| s.is_finite())
            .unwrap_or(mean * n),
        Aggregate::Mean => mean,
        Aggregate::Variance | Aggregate::Stddev => {
            // In units of the largest magnitude, deviations are at most 2.
            let scale = present.iter().map(|p| p.1.abs()).fold(0.0, f64::max);
            let m = present.iter().map(|p| p.1 / scale / n).sum::<f64>();
            let r = present
                .iter()
                .map(|p| (p.1 / scale - m).powi(2) / n)
                .sum::<f64>();
            let sd = scale * r.sqrt();
            if a == Aggregate::Stddev { sd } else { sd * sd }
        }
        _ => {
            // Σ w x with weights (t - t̄) / Σ(t - t̄)², which sum to 0.
            let tmean = present.iter().map(|p| p.0 / n).sum::<f64>();
            let var = present.iter().map(|p| (p.0 - tmean).powi(2)).sum::<f64>();
            if var > 0.0 {
                1000.0
                    * present
                        .iter()
                        .map(|p| (p.0 - tmean) / var * p.1)
                        .sum::<f64>()
            } else {
                f64::NAN
            }
        }
    }
}

impl SpecState {
    /// An empty window over `buf` (empty as well).
    pub(super) fn new(plan: &Plan, buf: &Buffer) -> Self {
        let float = !buf.values.is_decimal();
        Self {
            start: buf.seq(buf.len()),
            epoch: i64::MIN,
            fields: plan
                .fields
                .iter()
                .map(|_| FieldAgg::new(plan, float))
                .collect(),
        }
    }

    /// The window's state computed again from the buffer (after its values
    /// turned to or from doubles, its times were rebased, or the spec is new).
    pub(super) fn recompute(&mut self, plan: &Plan, buf: &Buffer, newest: i64) {
        let float = !buf.values.is_decimal();
        let from = buf.first_after(newest.saturating_sub(plan.length_ms));
        self.start = buf.seq(from);
        self.epoch = newest.div_euclid(plan.half());
        for (j, &f) in plan.fields.iter().enumerate() {
            let agg = &mut self.fields[j];
            *agg = FieldAgg::new(plan, float);
            if let Some(fl) = agg.float.as_deref_mut() {
                (fl.x0, fl.t0) = shift_point(buf, f, from);
            }
            for i in from..buf.len() {
                agg.add(plan, buf, f, i, false);
            }
        }
    }

    /// Reading `at` was just stored (`newest` updated): it enters the window
    /// if recent enough, and sequence numbers after it move up.
    pub(super) fn insert(&mut self, plan: &Plan, buf: &Buffer, at: usize, newest: i64) {
        let late = at + 1 < buf.len();
        if late {
            let inside = buf.time(at) > newest - plan.length_ms;
            if !inside {
                // Older than the window: it went in before the start.
                self.start = self.start.wrapping_add(1);
            }
            for agg in self.fields.iter_mut() {
                agg.shift(buf, at);
            }
            if !inside {
                return;
            }
        }
        for (j, &f) in plan.fields.iter().enumerate() {
            self.fields[j].add(plan, buf, f, at, late);
        }
    }

    /// Readings at or before `newest - length` leave the window; `f64` sums
    /// are recomputed when `newest` enters another half window length.
    pub(super) fn evict(&mut self, plan: &Plan, buf: &Buffer, newest: i64) {
        let cutoff = newest - plan.length_ms;
        let mut i = buf.idx(self.start);
        while i < buf.len() && buf.time(i) <= cutoff {
            for (j, &f) in plan.fields.iter().enumerate() {
                self.fields[j].remove(plan, buf, f, i);
            }
            i += 1;
        }
        self.start = buf.seq(i);
        let epoch = newest.div_euclid(plan.half());
        if epoch != self.epoch {
            self.epoch = epoch;
            if plan.sums && !buf.values.is_decimal() {
                self.resum(plan, buf);
            }
        }
    }

    /// Recomputes the `f64` sums from the window's readings.
    fn resum(&mut self, plan: &Plan, buf: &Buffer) {
        let from = buf.idx(self.start);
        for (j, &f) in plan.fields.iter().enumerate() {
            let Some(fl) = self.fields[j].float.as_deref_mut() else {
                continue;
            };
            *fl = FloatSums::default();
            (fl.x0, fl.t0) = shift_point(buf, f, from);
            for i in from..buf.len() {
                let v = buf.value(i, f);
                if !v.is_nan() {
                    fl.add(v, buf.times[i], 1.0, plan.squares, plan.times);
                }
            }
        }
    }

    /// Field `f`'s packed counts were multiplied by `scale`.
    pub(super) fn rescale(&mut self, plan: &Plan, f: usize, scale: i64) {
        for (j, &g) in plan.fields.iter().enumerate() {
            if g == f {
                self.fields[j].rescale(scale);
            }
        }
    }

    /// Appends the window's statistics as they are now to `out`.
    pub(super) fn snapshot(&self, plan: &Plan, buf: &Buffer, out: &mut DeclaredWindow) {
        let start = buf.idx(self.start);
        out.counts.push((buf.len() - start) as u32);
        for ((agg, &f), cols) in self.fields.iter().zip(&plan.fields).zip(&mut out.fields) {
            for (&a, col) in plan.aggregates.iter().zip(&mut cols.columns) {
                col.push(agg.get(a, buf, f, start));
            }
        }
    }
}

/// The shifts of `f64` sums for field `f` of a window starting at `from`:
/// its oldest finite value and the newest time.
fn shift_point(buf: &Buffer, f: usize, from: usize) -> (f64, i32) {
    let x0 = (from..buf.len())
        .map(|i| buf.value(i, f))
        .find(|v| v.is_finite())
        .unwrap_or(0.0);
    (x0, buf.times.back().copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    //! The declared windows against naive recomputations from the readings.
    //!
    //! While a key's values are decimal the declared sums are exact: a mean,
    //! variance, deviation or slope must be, bit for bit, the exact rational
    //! (computed here from the readings' decimal digits with fresh integer sums)
    //! rounded to the nearest double (`ratio`, itself checked in `moments`
    //! against exact 256-bit arithmetic). Once a key's values are doubles they
    //! are compared with a two-pass `f64` recomputation within 1e-9 of the
    //! spread of the values the sums may have been shifted by. Counts, extremes,
    //! first and last values and quantiles (sort and index) are exact always.

    use std::collections::HashMap;

    use proptest::prelude::*;

    use crate::contract::types::{Aggregate, Aggregate as A, WindowView};
    use crate::window::moments::ratio;
    use crate::window::*;

    const ALL: [Aggregate; 14] = [
        A::Count,
        A::Sum,
        A::Mean,
        A::Min,
        A::Max,
        A::First,
        A::Last,
        A::Variance,
        A::Stddev,
        A::Slope,
        A::P50,
        A::P90,
        A::P95,
        A::P99,
    ];

    /// One accepted reading.
    #[derive(Clone, Copy, Debug)]
    struct Reading {
        t: i64,
        v: [f64; 2],
    }

    /// What a statistic must be.
    #[derive(Debug)]
    enum Want {
        /// These bits (any NaN for NaN).
        Bits(f64),
        /// Equal as numbers (`-0 == 0`), or both NaN.
        Equal(f64),
        /// Within this distance, or both NaN.
        Near(f64, f64),
    }

    fn meets(got: f64, want: &Want) -> bool {
        match *want {
            _ if got.is_nan() => {
                matches!(want, Want::Bits(w) | Want::Equal(w) | Want::Near(w, _) if w.is_nan())
            }
            Want::Bits(w) => got.to_bits() == w.to_bits(),
            Want::Equal(w) => got == w,
            Want::Near(w, tol) => got == w || (got - w).abs() <= tol,
        }
    }

    /// `v` in millionths, if it is a decimal of at most six places (as the
    /// windows pack it).
    fn millionths(v: f64) -> Option<i128> {
        (0..=6).find_map(|p| {
            let c = (v * 10f64.powi(p)).round();
            (c.abs() < 2_147_483_000.0
                && c / 10f64.powi(p) == v
                && v.to_bits() != (-0.0f64).to_bits())
            .then(|| c as i128 * 10i128.pow(6 - p as u32))
        })
    }

    /// Sum, mean, variance, deviation or slope of decimal values, exactly,
    /// rounded once.
    fn exact(a: Aggregate, present: &[(i64, f64)]) -> f64 {
        const D: i128 = 1_000_000;
        let n = present.len() as i128;
        let t0 = present.first().map_or(0, |p| p.0);
        let (mut sx, mut sxx, mut st, mut stt, mut stx) = (0i128, 0i128, 0i128, 0i128, 0i128);
        for &(t, v) in present {
            let x = millionths(v).expect("decimal values while the windows hold decimals");
            let t = i128::from(t - t0);
            (sx, sxx, st, stt, stx) = (sx + x, sxx + x * x, st + t, stt + t * t, stx + t * x);
        }
        match a {
            A::Sum => ratio(sx, D),
            _ if n == 0 => f64::NAN,
            A::Mean => ratio(sx, n * D),
            A::Variance => ratio(n * sxx - sx * sx, n * n * D * D),
            A::Stddev => ratio(n * sxx - sx * sx, n * n * D * D).sqrt(),
            _ => {
                let den = n * stt - st * st;
                if den == 0 {
                    f64::NAN
                } else {
                    // 1000 ms per second over D per unit.
                    ratio(n * stx - st * sx, den * (D / 1000))
                }
            }
        }
    }

    /// The same of values that may not be decimal, recomputed in two passes,
    /// with the tolerance of `f64` running sums shifted by a value of the last
    /// one and a half window lengths, whose spread against these is `spread`,
    /// over `length_ms`.
    fn approximate(a: Aggregate, present: &[(i64, f64)], spread: f64, length_ms: i64) -> Want {
        let xs: Vec<f64> = present.iter().map(|p| p.1).collect();
        let (pos, neg) = (xs.contains(&f64::INFINITY), xs.contains(&f64::NEG_INFINITY));
        if pos || neg {
            let inf = match (pos, neg) {
                (true, false) => f64::INFINITY,
                (false, true) => f64::NEG_INFINITY,
                _ => f64::NAN,
            };
            return Want::Bits(if matches!(a, A::Sum | A::Mean) {
                inf
            } else {
                f64::NAN
            });
        }
        let n = xs.len() as f64;
        if xs.is_empty() {
            return Want::Bits(if a == A::Sum { 0.0 } else { f64::NAN });
        }
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let tol = 1e-9 * spread * spread + f64::MIN_POSITIVE;
        match a {
            A::Sum => Want::Near(
                mean * n,
                1e-9 * (xs.iter().map(|x| x.abs()).sum::<f64>() + n * spread),
            ),
            A::Mean => Want::Near(mean, 1e-9 * (mean.abs() + spread)),
            A::Variance => Want::Near(var, tol),
            A::Stddev => Want::Near(var.sqrt(), tol.sqrt()),
            _ => {
                let tm = present.iter().map(|p| p.0 as f64).sum::<f64>() / n;
                let (mut cov, mut vt) = (0.0, 0.0);
                for &(t, x) in present {
                    cov += (t as f64 - tm) * (x - mean);
                    vt += (t as f64 - tm) * (t as f64 - tm);
                }
                if vt == 0.0 {
                    return Want::Bits(f64::NAN);
                }
                let span = 1.5 * length_ms as f64;
                Want::Near(1000.0 * cov / vt, 1e-9 * 2000.0 * n * span * spread / vt)
            }
        }
    }

    /// What aggregate `a` of field `f` over `window` (in time order) must be;
    /// `decimal`: whether the key's values are decimal; `recent`: the readings
    /// of the last one and a half window lengths (for `approximate`).
    fn want(
        a: Aggregate,
        window: &[Reading],
        f: usize,
        decimal: bool,
        recent: &[Reading],
        length_ms: i64,
    ) -> Want {
        let present: Vec<(i64, f64)> = window
            .iter()
            .map(|r| (r.t, r.v[f]))
            .filter(|p| !p.1.is_nan())
            .collect();
        let n = present.len();
        let pick = |q: usize| {
            let mut xs: Vec<f64> = present.iter().map(|p| p.1).collect();
            xs.sort_by(f64::total_cmp);
            Want::Bits(if n == 0 {
                f64::NAN
            } else {
                xs[((q * n).div_ceil(100)).max(1) - 1]
            })
        };
        match a {
            A::Count => Want::Bits(n as f64),
            A::First => Want::Bits(present.first().map_or(f64::NAN, |p| p.1)),
            A::Last => Want::Bits(present.last().map_or(f64::NAN, |p| p.1)),
            A::Min => Want::Equal(present.iter().map(|p| p.1).fold(f64::NAN, f64::min)),
            A::Max => Want::Equal(present.iter().map(|p| p.1).fold(f64::NAN, f64::max)),
            A::P50 => pick(50),
            A::P90 => pick(90),
            A::P95 => pick(95),
            A::P99 => pick(99),
            _ if decimal => Want::Bits(exact(a, &present)),
            _ => {
                let finite = recent.iter().map(|r| r.v[f]).filter(|v| v.is_finite());
                let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                    (l.min(v), h.max(v))
                });
                approximate(a, &present, (hi - lo).max(0.0), length_ms)
            }
        }
    }

    /// Every declared statistic of the record in `view` against `want`, for a
    /// key whose accepted readings (in time order) are `readings`.
    fn check_declared(
        specs: &[DeclaredSpec],
        view: &WindowView,
        readings: &[Reading],
        decimal: bool,
    ) -> Result<(), TestCaseError> {
        let newest = readings.iter().map(|r| r.t).max().unwrap();
        for (s, spec) in specs.iter().enumerate() {
            let window: Vec<Reading> = readings
                .iter()
                .copied()
                .filter(|r| r.t > newest - spec.length_ms)
                .collect();
            let recent: Vec<Reading> = readings
                .iter()
                .copied()
                .filter(|r| r.t > newest - spec.length_ms * 3 / 2 - 1)
                .collect();
            let dw = &view.declared[s];
            prop_assert_eq!(
                dw.counts.as_slice(),
                [window.len() as u32],
                "count of window {}",
                s
            );
            for (j, &f) in spec.fields.iter().enumerate() {
                for (i, &a) in spec.aggregates.iter().enumerate() {
                    let got = dw.fields[j].columns[i][0];
                    let want = want(a, &window, f, decimal, &recent, spec.length_ms);
                    prop_assert!(
                        meets(got, &want),
                        "window {} field {} {:?}: got {:e}, want {:?} (decimal: {}) over {:?}",
                        s,
                        f,
                        a,
                        got,
                        want,
                        decimal,
                        window
                    );
                }
            }
        }
        Ok(())
    }

    /// The `--window` part of a view, as bits.
    fn main_bits(v: &WindowView) -> Vec<u64> {
        let mut out: Vec<u64> = v.starts.iter().chain(&v.ends).map(|&t| t as u64).collect();
        out.extend(v.counts.iter().map(|&c| u64::from(c)));
        for fw in &v.fields {
            for col in [
                &fw.mean, &fw.min, &fw.max, &fw.first, &fw.last, &fw.head, &fw.tail,
            ] {
                out.extend(col.iter().map(|x| x.to_bits()));
            }
        }
        out
    }

    /// Specs shorter than, as long as and longer than the `--window`'s minute,
    /// one of 1 ms, every aggregate, a field twice.
    fn specs() -> Vec<DeclaredSpec> {
        let mut reversed = ALL.to_vec();
        reversed.reverse();
        vec![
            DeclaredSpec {
                length_ms: 20_000,
                fields: vec![0],
                aggregates: ALL.to_vec(),
            },
            DeclaredSpec {
                length_ms: 150_000,
                fields: vec![1, 0],
                aggregates: reversed,
            },
            DeclaredSpec {
                length_ms: 60_000,
                fields: vec![0],
                aggregates: vec![A::Mean, A::P50, A::Min, A::Max, A::First, A::Last, A::Count],
            },
            DeclaredSpec {
                length_ms: 1,
                fields: vec![1, 1],
                aggregates: vec![A::Count, A::Sum, A::Slope, A::P99, A::Variance, A::Last],
            },
        ]
    }

    fn config(lateness_ms: i64, declared: Vec<DeclaredSpec>) -> WindowConfig {
        WindowConfig {
            length_ms: 60_000,
            lateness_ms,
            k: 2,
            fields: 2,
            idle_ms: 0,
            declared,
        }
    }

    /// Decimals of two places (as sensors write them), and with weight
    /// `floats` values that force doubles: seven places, `-0`, infinities.
    fn value(floats: u32) -> BoxedStrategy<f64> {
        let decimal = prop_oneof![
            8 => (-5000..5000i32).prop_map(|c| f64::from(c) / 100.0),
            1 => (-2_000_000..2_000_000i32).prop_map(|c| f64::from(c) / 100.0),
            1 => (-50..50i32).prop_map(f64::from),
            1 => Just(f64::NAN),
        ];
        if floats == 0 {
            return decimal.boxed();
        }
        let float = prop_oneof![
            8 => (-2_000_000_000..2_000_000_000i64).prop_map(|c| (2 * c + 1) as f64 / 1e7),
            1 => Just(-0.0),
            1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        ];
        prop_oneof![40 => decimal, floats => float].boxed()
    }

    #[derive(Clone, Debug)]
    struct Step {
        partition: i32,
        key: u8,
        /// After the key's previous time: out of order when negative.
        dt: i64,
        values: [f64; 2],
    }

    fn steps(floats: u32, len: usize) -> impl Strategy<Value = Vec<Step>> {
        let step = (
            0..2i32,
            0..3u8,
            prop_oneof![6 => 0..20_000i64, 2 => -100_000..0i64, 1 => 0..400_000i64],
            [value(floats), value(floats)],
        )
            .prop_map(|(partition, key, dt, values)| Step {
                partition,
                key,
                dt,
                values,
            });
        prop::collection::vec(step, 1..len)
    }

    /// A key's model: time stepped from, newest, accepted readings in time
    /// order (the last two longest windows' worth).
    type Model = HashMap<(i32, u8), (i64, i64, Vec<Reading>)>;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every statistic of every declared window, after every record, is
        /// what a recomputation from the readings gives; and the `--window`'s
        /// view is, bit for bit, what it is without declared windows.
        #[test]
        fn declared_windows_equal_a_naive_recomputation(
            (lateness, steps) in (prop_oneof![0..30_000i64, 0..200_000i64], 0..3u32)
                .prop_flat_map(|(lateness, floats)| (Just(lateness), steps(floats, 300)))
        ) {
            let specs = specs();
            let mut plain = Windows::new(config(lateness, Vec::new()));
            let mut rich = Windows::new(config(lateness, specs.clone()));
            let mut model = Model::new();
            for s in &steps {
                let entry = model.entry((s.partition, s.key)).or_insert((1_800_000_000_000, i64::MIN, Vec::new()));
                let t = entry.0 + s.dt;
                entry.0 = t;
                let key = format!("k{}", s.key);
                let mut a = ViewBuilder::new(plain.config(), true, 1);
                let mut b = ViewBuilder::new(rich.config(), true, 1);
                let got = rich.insert(s.partition, 0, &key, t, &s.values, Some(&mut b));
                prop_assert_eq!(plain.insert(s.partition, 0, &key, t, &s.values, Some(&mut a)), got);
                if !entry.2.is_empty() && t < entry.1 - lateness {
                    prop_assert!(matches!(got, Err(Refused::Late { .. })), "late");
                    continue;
                }
                prop_assert!(got.is_ok());
                prop_assert_eq!(main_bits(&a.view), main_bits(&b.view));
                entry.1 = entry.1.max(t);
                let newest = entry.1;
                let at = entry.2.partition_point(|r| r.t <= t);
                entry.2.insert(at, Reading { t, v: s.values });
                entry.2.retain(|r| r.t > newest - 300_000);
                check_declared(&specs, &b.view, &entry.2, rich.decimal(s.partition, &key))?;
            }
        }

        /// A rebuild that reads a key's records again from two and a half
        /// longest windows back gives the same statistics, bit for bit, as the
        /// run that was never interrupted, doubles and all.
        #[test]
        fn a_rebuild_gives_the_same_declared_statistics(
            steps in steps(2, 700),
            from in 0..200usize,
            lateness in 0..60_000i64,
        ) {
            let specs = specs();
            let mut whole = Windows::new(config(lateness, specs.clone()));
            let mut rebuilt = Windows::new(config(lateness, specs));
            let reach = whole.config().longest_ms() / 2 * 5 + lateness;
            let (mut t, mut newest, mut since) = (1_800_000_000_000i64, [i64::MIN; 2], None);
            for (i, s) in steps.iter().enumerate() {
                t += s.dt;
                let mut a = ViewBuilder::new(whole.config(), false, 1);
                let mut b = ViewBuilder::new(rebuilt.config(), false, 1);
                let ra = whole.insert(0, 0, "k", t, &s.values, Some(&mut a));
                if ra.is_ok() {
                    newest[0] = newest[0].max(t);
                }
                if i < from {
                    continue;
                }
                let rb = rebuilt.insert(0, 0, "k", t, &s.values, Some(&mut b));
                if rb.is_ok() {
                    newest[1] = newest[1].max(t);
                }
                // Compared once the rebuild read back far enough since it
                // started, or since the two last saw different records (one
                // refused as late what the other, not having seen a record
                // far ahead, took).
                let since = since.get_or_insert(t);
                if ra.is_ok() != rb.is_ok() {
                    *since = (*since).max(t).max(newest[0]);
                }
                if newest[0] == newest[1] && newest[1] > *since + reach && ra.is_ok() {
                    prop_assert_eq!(main_bits(&a.view), main_bits(&b.view));
                    prop_assert_eq!(format!("{:?}", a.view.declared), format!("{:?}", b.view.declared));
                }
            }
        }
    }

    /// Inserts a reading of field 0 (field 1 absent) and returns the view.
    fn put(w: &mut Windows, key: &str, t: i64, v: f64) -> WindowView {
        let mut out = ViewBuilder::new(w.config(), false, 1);
        w.insert(0, 0, key, t, &[v, f64::NAN], Some(&mut out))
            .unwrap();
        out.view
    }

    /// Aggregate `a` (its index in the spec) of field 0 of declared window `s`.
    fn stat(v: &WindowView, s: usize, a: usize) -> f64 {
        v.declared[s].fields[0].columns[a][0]
    }

    #[test]
    fn a_sensor_worked_by_hand() {
        // Temperature every 10 s, rising 0.05 a reading: 1 minute's mean; 15
        // minutes' mean, deviation, 95th percentile and slope.
        let mut w = Windows::new(WindowConfig {
            length_ms: 300_000,
            ..config(
                0,
                vec![
                    DeclaredSpec {
                        length_ms: 60_000,
                        fields: vec![0],
                        aggregates: vec![A::Mean],
                    },
                    DeclaredSpec {
                        length_ms: 900_000,
                        fields: vec![0],
                        aggregates: vec![A::Mean, A::Stddev, A::P95, A::Slope],
                    },
                ],
            )
        });
        let mut v = put(&mut w, "s", 0, 20.0);
        for i in 1..100 {
            v = put(&mut w, "s", i * 10_000, (2000 + 5 * i) as f64 / 100.0);
        }
        // At 990 s: the minute holds readings 94 to 99, the quarter 10 to 99.
        assert_eq!((v.declared[0].counts[0], v.declared[1].counts[0]), (6, 90));
        assert_eq!(stat(&v, 0, 0), 24.825);
        assert_eq!(stat(&v, 1, 0), 22.725);
        assert!((stat(&v, 1, 1) - (0.0025f64 * 8099.0 / 12.0).sqrt()).abs() < 1e-15);
        // Rank ceil(0.95 · 90) = 86 of 90: reading 95.
        assert_eq!(stat(&v, 1, 2), 24.75);
        assert_eq!(stat(&v, 1, 3), 0.005);
        // The --window is the 5 minutes it was.
        assert_eq!(v.counts, [30]);
    }

    #[test]
    fn an_empty_field_gives_nan_but_a_zero_count_and_sum() {
        let mut w = Windows::new(config(
            0,
            vec![DeclaredSpec {
                length_ms: 1000,
                fields: vec![1],
                aggregates: ALL.to_vec(),
            }],
        ));
        let v = put(&mut w, "s", 0, 1.0);
        let got = &v.declared[0].fields[0].columns;
        assert_eq!((got[0][0], got[1][0].to_bits()), (0.0, 0f64.to_bits()));
        assert!(got[2..].iter().all(|c| c[0].is_nan()));
        assert_eq!(v.declared[0].counts, [1]);
    }

    #[test]
    fn slope_needs_two_distinct_times() {
        let spec = DeclaredSpec {
            length_ms: 10_000,
            fields: vec![0],
            aggregates: vec![A::Slope, A::Variance],
        };
        let mut w = Windows::new(config(0, vec![spec]));
        put(&mut w, "s", 1000, 1.0);
        let v = put(&mut w, "s", 1000, 3.0);
        assert!(stat(&v, 0, 0).is_nan());
        assert_eq!(stat(&v, 0, 1), 1.0);
        let v = put(&mut w, "s", 3000, 5.0);
        // Least squares through (1, 1), (1, 3), (3, 5): 1.5 per second.
        assert_eq!(stat(&v, 0, 0), 1.5);
    }

    #[test]
    fn values_too_large_to_sum_still_give_their_statistics() {
        let spec = DeclaredSpec {
            length_ms: 10_000,
            fields: vec![0],
            aggregates: vec![A::Mean, A::Sum, A::Stddev, A::Slope],
        };
        let mut w = Windows::new(config(0, vec![spec]));
        put(&mut w, "s", 0, 1.7e308);
        let v = put(&mut w, "s", 1000, 1.7e308);
        assert_eq!(
            (stat(&v, 0, 0), stat(&v, 0, 1), stat(&v, 0, 2)),
            (1.7e308, f64::INFINITY, 0.0)
        );
        let v = put(&mut w, "s", 2000, -1.7e308);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        // Deviations from the mean of 2/3, 2/3 and -4/3 of 1.7e308; a slope of
        // -3.4e308 over two seconds.
        assert!(close(stat(&v, 0, 0), 1.7e308 / 3.0), "{}", stat(&v, 0, 0));
        assert!(
            close(stat(&v, 0, 2), 1.7e308 * (8.0f64 / 9.0).sqrt()),
            "{}",
            stat(&v, 0, 2)
        );
        assert!(close(stat(&v, 0, 3), -1.7e308), "{}", stat(&v, 0, 3));
        assert!(close(stat(&v, 0, 1), 1.7e308), "{}", stat(&v, 0, 1));
    }

    #[test]
    fn readings_leave_short_windows_and_stay_for_long_ones_across_a_rebase() {
        // Every 10 minutes for 40 days: the key's base moves past 24.8 days.
        let specs = vec![
            DeclaredSpec {
                length_ms: 7_200_000,
                fields: vec![0],
                aggregates: ALL.to_vec(),
            },
            DeclaredSpec {
                length_ms: 1_800_000,
                fields: vec![0],
                aggregates: vec![A::Slope, A::Mean, A::First],
            },
        ];
        let mut w = Windows::new(WindowConfig {
            length_ms: 3_600_000,
            ..config(0, specs.clone())
        });
        let mut readings = Vec::new();
        let mut jumped = false;
        for i in 0..5760i64 {
            let mut t = i * 600_000;
            if i >= 5000 {
                // Then a month's gap: the key starts over.
                t += 30 * 86_400_000;
                jumped = true;
            }
            let x = ((i * 7919) % 2001 - 1000) as f64 / 100.0;
            let v = put(&mut w, "s", t, x);
            readings.push(Reading {
                t,
                v: [x, f64::NAN],
            });
            readings.retain(|r| r.t > t - 7_200_000);
            check_declared(&specs, &v, &readings, true).unwrap();
        }
        assert!(jumped && w.readings() == 12);
    }

    #[test]
    fn doubles_turn_the_sums_approximate_until_they_leave() {
        let spec = DeclaredSpec {
            length_ms: 60_000,
            fields: vec![0],
            aggregates: vec![A::Mean, A::Variance, A::P50],
        };
        let mut w = Windows::new(config(0, vec![spec.clone()]));
        let mut readings = Vec::new();
        for i in 0..200i64 {
            let x = if i == 50 {
                0.1 + 0.2
            } else {
                (i % 17) as f64 / 4.0
            };
            let t = i * 1000;
            let v = put(&mut w, "s", t, x);
            readings.push(Reading {
                t,
                v: [x, f64::NAN],
            });
            readings.retain(|r| r.t > t - 90_000);
            let decimal = w.decimal(0, "s");
            // Doubles from the odd value until the first half minute after it
            // left the buffer (here the minute of the --window).
            assert_eq!(decimal, !(50..120).contains(&i), "at {i}");
            check_declared(std::slice::from_ref(&spec), &v, &readings, decimal).unwrap();
        }
    }

    #[test]
    fn declared_windows_change_in_place_while_no_longer_than_the_buffers() {
        let before = vec![DeclaredSpec {
            length_ms: 900_000,
            fields: vec![0, 1],
            aggregates: ALL.to_vec(),
        }];
        let after = vec![
            DeclaredSpec {
                length_ms: 60_000,
                fields: vec![0],
                aggregates: vec![A::Mean, A::P50],
            },
            DeclaredSpec {
                length_ms: 600_000,
                fields: vec![1],
                aggregates: vec![A::Slope, A::Stddev, A::First, A::Max],
            },
        ];
        let mut changed = Windows::new(config(30_000, before));
        let mut fresh = Windows::new(config(30_000, after.clone()));
        let mut seed = 11u64;
        for i in 0..3000i64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let t = i * 1000 - ((seed >> 40) % 20_000) as i64;
            let values = [
                ((seed >> 20) % 4000) as f64 / 100.0,
                ((seed >> 8) % 900) as f64 / 10.0,
            ];
            let key = ["a", "b", "c"][(seed % 3) as usize];
            if i == 1500 {
                changed.set_declared(after.clone()).unwrap();
            }
            let mut a = ViewBuilder::new(changed.config(), true, 1);
            let mut b = ViewBuilder::new(fresh.config(), true, 1);
            let ra = changed.insert((seed % 2) as i32, i, key, t, &values, Some(&mut a));
            let rb = fresh.insert((seed % 2) as i32, i, key, t, &values, Some(&mut b));
            assert_eq!(ra, rb);
            if i >= 1500 && ra.is_ok() {
                assert_eq!(main_bits(&a.view), main_bits(&b.view));
                assert_eq!(
                    format!("{:?}", a.view.declared),
                    format!("{:?}", b.view.declared),
                    "at {i}"
                );
            }
        }
        // Longer than the buffers hold: refused, nothing changed.
        let long = vec![DeclaredSpec {
            length_ms: 1_200_000,
            fields: vec![0],
            aggregates: vec![A::Mean],
        }];
        assert_eq!(
            changed.set_declared(long),
            Err(DeclareError::Longer {
                held_ms: 600_000,
                longest_ms: 1_200_000
            })
        );
        let bad = vec![DeclaredSpec {
            length_ms: 1000,
            fields: vec![2],
            aggregates: vec![A::Mean],
        }];
        assert!(
            matches!(changed.set_declared(bad), Err(DeclareError::Invalid(e)) if e.contains("field 2"))
        );
        assert_eq!(changed.config().declared, after);
    }

    #[test]
    fn specs_are_checked() {
        let spec = |length_ms, fields: &[usize], aggregates: &[Aggregate]| DeclaredSpec {
            length_ms,
            fields: fields.to_vec(),
            aggregates: aggregates.to_vec(),
        };
        assert_eq!(spec(1, &[0], &[A::Mean]).check(), Ok(()));
        assert_eq!(spec(MAX_DECLARED_MS, &[1, 1], &[A::P99]).check(), Ok(()));
        for (bad, why) in [
            (spec(0, &[0], &[A::Mean]), "1 ms to 7 days"),
            (
                spec(MAX_DECLARED_MS + 1, &[0], &[A::Mean]),
                "1 ms to 7 days",
            ),
            (spec(1000, &[], &[A::Mean]), "at least one field"),
            (spec(1000, &[0], &[]), "at least one aggregate"),
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let e = config(0, vec![spec(1000, &[0, 2], &[A::Mean])]).check();
        assert!(e.unwrap_err().contains("field 2, but only 2"));
        let cfg = config(
            0,
            vec![spec(1000, &[0], &[A::Mean]), spec(0, &[0], &[A::Mean])],
        );
        assert!(cfg.check().unwrap_err().starts_with("declared window 1:"));
        assert_eq!(
            WindowConfig {
                length_ms: 5,
                ..cfg.clone()
            }
            .longest_ms(),
            1000
        );
        assert_eq!(
            WindowConfig {
                length_ms: 5000,
                ..cfg
            }
            .longest_ms(),
            5000
        );
    }
}
