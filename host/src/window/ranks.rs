//! Exact quantiles of a sliding window: the window's values as an ordered
//! multiset, with a cursor per quantile asked for.
//!
//! The multiset is a `BTreeMap` from a value's order key to how many times
//! the window holds it: the packed decimal count while the key's values are
//! decimal (`i32`), else an order-preserving `i64` made from the double's
//! bits. A cursor stands on the distinct value holding its rank (nearest
//! rank: `ceil(q * n)`, at least 1) and knows how many values lie below
//! it. An insert or removal changes that rank and the count below by at
//! most one each, so the cursor moves by at most a step or two, each one
//! O(log d) for `d` distinct values; reading a quantile is O(1).

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

/// A quantile asked for, in percent (nearest rank: the value at rank
/// `ceil(percent * n / 100)` of the `n` sorted values, at least 1).
pub(super) type Percent = u8;

/// The rank of `percent` among `n` values (`n` at least 1).
pub(super) fn rank(percent: Percent, n: u32) -> u32 {
    let r = (u64::from(percent) * u64::from(n)).div_ceil(100);
    r.max(1) as u32
}

/// An order-preserving integer for a double: `a < b` (in `f64::total_cmp`'s
/// order) exactly when `key(a) < key(b)`.
pub(super) fn order_key(v: f64) -> i64 {
    let b = v.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

/// The double `order_key` made `k` from.
pub(super) fn from_order_key(k: i64) -> f64 {
    f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
}

/// Where one quantile's value is.
#[derive(Clone, Copy)]
struct Cursor<K> {
    percent: Percent,
    /// The distinct value holding the quantile's rank.
    key: K,
    /// How many values of the window are below `key`.
    below: u32,
    /// How many are `key` (kept here to spare a lookup per update).
    here: u32,
}

/// A window's values as an ordered multiset, with quantile cursors.
pub(super) struct Ranks<K> {
    counts: BTreeMap<K, u32>,
    n: u32,
    cursors: Box<[Cursor<K>]>,
}

impl<K: Ord + Copy + Default> Ranks<K> {
    /// Empty, with a cursor for each of `percents`.
    pub(super) fn new(percents: &[Percent]) -> Self {
        let cursors = percents
            .iter()
            .map(|&percent| Cursor {
                percent,
                key: K::default(),
                below: 0,
                here: 0,
            })
            .collect();
        Self {
            counts: BTreeMap::new(),
            n: 0,
            cursors,
        }
    }

    /// The key at `percent`'s rank, if any value is held.
    pub(super) fn at(&self, percent: Percent) -> Option<K> {
        if self.n == 0 {
            return None;
        }
        self.cursors
            .iter()
            .find(|c| c.percent == percent)
            .map(|c| c.key)
    }

    pub(super) fn insert(&mut self, key: K) {
        *self.counts.entry(key).or_insert(0) += 1;
        self.n += 1;
        for i in 0..self.cursors.len() {
            let c = &mut self.cursors[i];
            if self.n == 1 {
                (c.key, c.below, c.here) = (key, 0, 1);
            } else if key < c.key {
                c.below += 1;
            } else if key == c.key {
                c.here += 1;
            }
            self.settle(i);
        }
    }

    /// Removes one `key`, which must be held.
    pub(super) fn remove(&mut self, key: K) {
        let std::collections::btree_map::Entry::Occupied(mut e) = self.counts.entry(key) else {
            unreachable!("a removed value was inserted");
        };
        *e.get_mut() -= 1;
        let gone = *e.get() == 0;
        if gone {
            e.remove();
        }
        self.n -= 1;
        if self.n == 0 {
            return;
        }
        for i in 0..self.cursors.len() {
            let c = &mut self.cursors[i];
            if key < c.key {
                c.below -= 1;
            } else if key == c.key {
                c.here -= 1;
                if gone {
                    // Stand on the next value up (as many below), else the
                    // one down (fewer below by its count).
                    match self.counts.range((Excluded(key), Unbounded)).next() {
                        Some((&up, &n)) => (c.key, c.here) = (up, n),
                        None => {
                            let (&down, &n) = self.counts.range(..key).next_back().expect("n > 0");
                            (c.key, c.here, c.below) = (down, n, c.below - n);
                        }
                    }
                }
            }
            self.settle(i);
        }
    }

    /// Moves cursor `i` onto the value holding its rank.
    fn settle(&mut self, i: usize) {
        let c = &mut self.cursors[i];
        let r = rank(c.percent, self.n);
        while r <= c.below {
            let (&down, &n) = self.counts.range(..c.key).next_back().expect("rank > 0");
            (c.key, c.here, c.below) = (down, n, c.below - n);
        }
        while r > c.below + c.here {
            c.below += c.here;
            let (&up, &n) = self
                .counts
                .range((Excluded(c.key), Unbounded))
                .next()
                .expect("rank <= n");
            (c.key, c.here) = (up, n);
        }
    }

    /// Re-keys every value by `f`, which must preserve their order (a
    /// field's places grew).
    pub(super) fn rekey(&mut self, f: impl Fn(K) -> K) {
        self.counts = std::mem::take(&mut self.counts)
            .into_iter()
            .map(|(k, n)| (f(k), n))
            .collect();
        for c in self.cursors.iter_mut() {
            c.key = f(c.key);
        }
    }
}
