//! A key's readings, column-wise, oldest first: event times as `i32`
//! milliseconds from a per-key base, values interleaved `fields` at a time
//! as exact decimal counts while they are decimals of a few places (see
//! `Cells`), else as `f64`. Every window of the key (the `--window` one and
//! each declared one) is a suffix of this buffer, so a reading is stored
//! once however many windows hold it.
//!
//! Readings are named by sequence numbers: reading `i` has `front_seq + i`
//! (wrapping: only differences within one buffer are ever used). Popping
//! the oldest keeps every other reading's number; a late reading inserted
//! in the middle renumbers the ones after it, which is why holders of
//! sequence numbers are told (`shift`).

use std::collections::VecDeque;

use crate::decode::MAX_FIELDS;

/// The cell of an absent value (NaN) in `Cells::Decimal`.
pub(super) const NAN_CELL: i32 = i32::MIN;
/// The most decimal places a packed value may have.
pub(super) const MAX_PLACES: usize = 6;
/// `10^p` for the places a field may have.
pub(super) const POW10: [f64; MAX_PLACES + 1] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// `v` as a count of `10^-places`, if that gives `v` back exactly.
pub(super) fn pack(v: f64, places: u8) -> Option<i32> {
    if v.is_nan() {
        return Some(NAN_CELL);
    }
    let p = POW10[usize::from(places)];
    let x = v * p;
    if x.is_nan() || x.abs() >= 2_147_483_000.0 {
        return None;
    }
    // Rounded by a cast; a wrong rounding only fails the check.
    let c = (x + 0.5f64.copysign(x)) as i32;
    (c != NAN_CELL && (f64::from(c) / p).to_bits() == v.to_bits()).then_some(c)
}

/// Grows a ring buffer by an eighth instead of doubling: windows are long
/// lived and many, so slack costs more than the extra copies, which only
/// happen while a window fills up.
pub(super) fn grow<T>(buf: &mut VecDeque<T>, extra: usize) {
    if buf.len() + extra > buf.capacity() {
        buf.reserve_exact((buf.len() / 8).max(4).max(extra));
    }
}

/// The readings' values, `fields` per reading, oldest first.
///
/// Sensors write decimals with few places (the article's producer rounds to
/// two). While every value a buffer holds is such a decimal, it is kept as
/// an `i32` count of `10^-places` (places per field), half the bytes of an
/// `f64`, and nothing is lost: `count / 10^places` is exactly the double the
/// decimal text reads as, since both are exact in binary and IEEE division
/// rounds correctly; a value is only packed after that is checked. The first
/// value that does not fit (more places than `MAX_PLACES`, too large, `-0`,
/// an infinity) turns the buffer's values to `f64`; they are packed again
/// (`repack`, each field with the fewest places its values need) once every
/// value held fits again.
pub(super) enum Cells {
    Decimal {
        cells: VecDeque<i32>,
        places: Box<[u8]>,
    },
    Float(VecDeque<f64>),
}

impl Cells {
    pub(super) fn new(fields: usize) -> Cells {
        Cells::Decimal {
            cells: VecDeque::new(),
            places: vec![0; fields].into_boxed_slice(),
        }
    }

    pub(super) fn len(&self) -> usize {
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

    pub(super) fn is_decimal(&self) -> bool {
        matches!(self, Cells::Decimal { .. })
    }

    /// Value `f` of reading `i`.
    #[inline]
    pub(super) fn get(&self, i: usize, f: usize, fields: usize) -> f64 {
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
    pub(super) fn compare(
        &self,
        i: usize,
        j: usize,
        f: usize,
        fields: usize,
    ) -> std::cmp::Ordering {
        match self {
            Cells::Decimal { cells, .. } => cells[i * fields + f].cmp(&cells[j * fields + f]),
            Cells::Float(v) => v[i * fields + f]
                .partial_cmp(&v[j * fields + f])
                .unwrap_or(std::cmp::Ordering::Equal),
        }
    }

    /// Makes every value of `values` packable, changing a field's places or
    /// turning to `f64` if need be; returns the cells to store. A field
    /// whose places grow is reported to `grown` with the factor its counts
    /// were multiplied by.
    fn fit(
        &mut self,
        values: &[f64],
        grown: &mut impl FnMut(usize, i64),
    ) -> Option<[i32; MAX_FIELDS]> {
        let fields = values.len();
        let Cells::Decimal { cells, places } = self else {
            return None;
        };
        let mut out = [0i32; MAX_FIELDS];
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
                    grown(f, scale);
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

    /// Packs the values again if every one held fits, each field with the
    /// fewest places its values need. Returns whether it did.
    pub(super) fn repack(&mut self, fields: usize) -> bool {
        let Cells::Float(v) = self else {
            return false;
        };
        let mut places = vec![0u8; fields].into_boxed_slice();
        for (f, p) in places.iter_mut().enumerate() {
            for &x in v.iter().skip(f).step_by(fields.max(1)) {
                while pack(x, *p).is_none() {
                    if usize::from(*p) == MAX_PLACES {
                        return false;
                    }
                    *p += 1;
                }
            }
        }
        let mut cells = VecDeque::with_capacity(v.capacity());
        for (i, &x) in v.iter().enumerate() {
            // Fewer places than a value needs never fit, so `places[f]`
            // fits it unless it overflows, which refuses the repacking.
            match pack(x, places[i % fields]) {
                Some(c) => cells.push_back(c),
                None => return false,
            }
        }
        *self = Cells::Decimal { cells, places };
        true
    }

    /// Inserts `values` as reading `at`, reporting places that grow to
    /// `grown` (see `fit`). A value that does not fit the field's places
    /// turns the values to doubles unless all of them, this one included,
    /// fit other places (fewer for the field: its places grew for values
    /// since gone); then they are packed again, and it returns `true`: the
    /// counts changed other than `grown` says. Whether the values are
    /// decimal thus depends only on those held.
    fn insert(&mut self, at: usize, values: &[f64], grown: &mut impl FnMut(usize, i64)) -> bool {
        let fields = values.len();
        let end = at * fields == self.len();
        let decimal = self.is_decimal();
        match (self.fit(values, grown), &mut *self) {
            (Some(out), Cells::Decimal { cells, .. }) if end => cells.extend(&out[..fields]),
            (Some(out), Cells::Decimal { cells, .. }) => {
                for (j, &c) in out[..fields].iter().enumerate() {
                    cells.insert(at * fields + j, c);
                }
            }
            (_, Cells::Float(v)) if end => v.extend(values.iter().copied()),
            (_, Cells::Float(v)) => {
                for (j, &x) in values.iter().enumerate() {
                    v.insert(at * fields + j, x);
                }
            }
            (None, Cells::Decimal { .. }) => unreachable!("fit widens when it refuses"),
        }
        decimal && !self.is_decimal() && self.repack(fields)
    }

    fn pop_front(&mut self, fields: usize) {
        match self {
            Cells::Decimal { cells, .. } => drop(cells.drain(..fields)),
            Cells::Float(v) => drop(v.drain(..fields)),
        }
    }

    fn reserve(&mut self, extra: usize) {
        match self {
            Cells::Decimal { cells, .. } => grow(cells, extra),
            Cells::Float(v) => grow(v, extra),
        }
    }

    fn shrink_to(&mut self, n: usize) {
        match self {
            Cells::Decimal { cells, .. } => cells.shrink_to(n),
            Cells::Float(v) => v.shrink_to(n),
        }
    }
}

/// A value present, as its buffer stores it.
#[derive(Clone, Copy)]
pub(super) enum Raw {
    /// A packed decimal count (`Cells::Decimal`).
    Cell(i32),
    /// A double (`Cells::Float`), not NaN.
    Float(f64),
}

/// One key's readings.
pub(super) struct Buffer {
    /// Event times relative to `base`, oldest first.
    pub(super) times: VecDeque<i32>,
    pub(super) base: i64,
    /// `fields` values per reading, readings oldest first.
    pub(super) values: Cells,
    pub(super) fields: usize,
    /// Sequence number of the oldest reading.
    pub(super) front_seq: u32,
}

impl Buffer {
    pub(super) fn new(fields: usize, base: i64) -> Self {
        Self {
            times: VecDeque::new(),
            base,
            values: Cells::new(fields),
            fields,
            front_seq: 0,
        }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.times.len()
    }

    #[inline]
    pub(super) fn time(&self, i: usize) -> i64 {
        self.base + i64::from(self.times[i])
    }

    #[inline]
    pub(super) fn value(&self, i: usize, f: usize) -> f64 {
        self.values.get(i, f, self.fields)
    }

    /// Value `f` of reading `i` as stored, if present.
    #[inline]
    pub(super) fn raw(&self, i: usize, f: usize) -> Option<Raw> {
        match &self.values {
            Cells::Decimal { cells, .. } => {
                let c = cells[i * self.fields + f];
                (c != NAN_CELL).then_some(Raw::Cell(c))
            }
            Cells::Float(v) => {
                let x = v[i * self.fields + f];
                (!x.is_nan()).then_some(Raw::Float(x))
            }
        }
    }

    /// The places of field `f` (0 while the values are `f64`).
    #[inline]
    pub(super) fn places(&self, f: usize) -> u8 {
        match &self.values {
            Cells::Decimal { places, .. } => places[f],
            Cells::Float(_) => 0,
        }
    }

    #[inline]
    pub(super) fn compare(&self, i: usize, j: usize, f: usize) -> std::cmp::Ordering {
        self.values.compare(i, j, f, self.fields)
    }

    #[inline]
    pub(super) fn seq(&self, i: usize) -> u32 {
        self.front_seq.wrapping_add(i as u32)
    }

    #[inline]
    pub(super) fn idx(&self, seq: u32) -> usize {
        seq.wrapping_sub(self.front_seq) as usize
    }

    /// The index of the first reading after `cutoff_ms`.
    pub(super) fn first_after(&self, cutoff_ms: i64) -> usize {
        self.times
            .partition_point(|&t| self.base + i64::from(t) <= cutoff_ms)
    }

    pub(super) fn reserve(&mut self) {
        grow(&mut self.times, 1);
        self.values.reserve(self.fields);
    }

    /// Stores a reading at its place by event time (after those of the same
    /// time) and returns its index, and whether the values were packed
    /// again (see `Cells::insert`). `rel` must fit (see `rebase`).
    pub(super) fn insert(
        &mut self,
        rel: i32,
        values: &[f64],
        grown: &mut impl FnMut(usize, i64),
    ) -> (usize, bool) {
        let at = if self.times.back().is_none_or(|&last| last <= rel) {
            self.times.len()
        } else {
            self.times.partition_point(|&t| t <= rel)
        };
        self.times.insert(at, rel);
        (at, self.values.insert(at, values, grown))
    }

    pub(super) fn pop_front(&mut self) {
        self.times.pop_front();
        self.values.pop_front(self.fields);
        self.front_seq = self.front_seq.wrapping_add(1);
    }

    /// Empties it, values back to decimals, times from `base`.
    pub(super) fn clear(&mut self, base: i64) {
        self.front_seq = self.front_seq.wrapping_add(self.times.len() as u32);
        self.times.clear();
        self.values = Cells::new(self.fields);
        self.base = base;
    }

    /// Re-expresses times against `new_base`; each must fit in `i32`.
    pub(super) fn rebase(&mut self, new_base: i64) {
        for t in self.times.iter_mut() {
            *t = (self.base + i64::from(*t) - new_base) as i32;
        }
        self.base = new_base;
    }

    /// Gives memory back when the buffer shrank a lot (a burst passed).
    pub(super) fn shrink(&mut self) {
        if self.times.capacity() > 64 && self.times.len() < self.times.capacity() / 4 {
            self.times.shrink_to(self.times.len() * 2);
            self.values.shrink_to(self.values.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(cells: &mut Cells, values: &[f64]) -> Vec<(usize, i64)> {
        let mut grown = Vec::new();
        let at = cells.len() / values.len();
        cells.insert(at, values, &mut |f, s| grown.push((f, s)));
        grown
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
            push(&mut cells, &[v]);
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
        push(&mut cells, &[f64::NAN, 3.0]);
        assert!(cells.get(0, 0, 2).is_nan());
        assert_eq!(cells.get(0, 1, 2), 3.0);
        assert!(matches!(cells, Cells::Decimal { .. }));
    }

    #[test]
    fn growing_places_are_reported_and_doubles_pack_again_when_they_fit() {
        let mut cells = Cells::new(2);
        assert_eq!(push(&mut cells, &[21.0, 1.0]), []);
        assert_eq!(push(&mut cells, &[21.5, 1.0]), [(0, 10)]);
        assert_eq!(push(&mut cells, &[21.125, 1.25]), [(0, 100), (1, 100)]);
        push(&mut cells, &[0.1 + 0.2, 1.0]);
        assert!(!cells.is_decimal());
        // While a value that does not fit is held, nothing changes.
        assert!(!cells.repack(2));
        let held: Vec<u64> = (0..4).map(|i| cells.get(i, 0, 2).to_bits()).collect();
        let Cells::Float(v) = &mut cells else {
            unreachable!()
        };
        v.drain(6..);
        assert!(cells.repack(2));
        let Cells::Decimal { places, .. } = &cells else {
            unreachable!()
        };
        assert_eq!(&places[..], [3, 2]);
        for (i, &bits) in held[..3].iter().enumerate() {
            assert_eq!(cells.get(i, 0, 2).to_bits(), bits);
        }
        // A value too large for places grown for values since gone packs
        // the others again with fewer places, rather than turning to f64.
        let mut cells = Cells::new(1);
        push(&mut cells, &[0.125]);
        push(&mut cells, &[7.0]);
        cells.pop_front(1);
        let mut grown = Vec::new();
        assert!(cells.insert(1, &[3e6], &mut |f, s| grown.push((f, s))));
        assert!(grown.is_empty());
        let Cells::Decimal { places, .. } = &cells else {
            unreachable!()
        };
        assert_eq!(
            (&places[..], cells.get(0, 0, 1), cells.get(1, 0, 1)),
            (&[0u8][..], 7.0, 3e6)
        );
    }
}
