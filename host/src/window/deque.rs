//! Monotonic deques: a window's minimum or maximum of one field in
//! amortised O(1) per reading.
//!
//! A minimum deque holds, in order, the sequence numbers of the window's
//! readings whose value is smaller than every later one (so values rise
//! from front to back and the front is the minimum; of equal values the
//! newest is kept). NaNs are left out. That set depends only on the
//! window's readings, not on how they arrived, which is what lets a late
//! reading be placed without a rebuild and a rebuild give the same deque.

use std::cmp::Ordering;
use std::collections::VecDeque;

use super::buffer::{Buffer, grow};

/// The readings of a window whose values beat every later one.
pub(super) struct MonoDeque {
    seqs: VecDeque<u32>,
    /// How a kept reading compares with every later one: `Less` for a
    /// minimum, `Greater` for a maximum.
    keep: Ordering,
}

impl MonoDeque {
    pub(super) fn min() -> Self {
        Self {
            seqs: VecDeque::new(),
            keep: Ordering::Less,
        }
    }

    pub(super) fn max() -> Self {
        Self {
            seqs: VecDeque::new(),
            keep: Ordering::Greater,
        }
    }

    /// The sequence number of the window's minimum (or maximum).
    #[inline]
    pub(super) fn front(&self) -> Option<u32> {
        self.seqs.front().copied()
    }

    /// Adds the newest reading, `at` (its field `f` not NaN).
    #[inline]
    pub(super) fn push(&mut self, buf: &Buffer, f: usize, at: usize) {
        while let Some(&back) = self.seqs.back() {
            if buf.compare(buf.idx(back), at, f) != self.keep {
                self.seqs.pop_back();
            } else {
                break;
            }
        }
        grow(&mut self.seqs, 1);
        self.seqs.push_back(buf.seq(at));
    }

    /// Forgets reading `seq`, which leaves the window as its oldest.
    #[inline]
    pub(super) fn pop(&mut self, seq: u32) {
        if self.seqs.front() == Some(&seq) {
            self.seqs.pop_front();
        }
    }

    /// Renumbers after a reading was inserted at index `at`: readings from
    /// `at` on moved one up (`front_seq` unchanged).
    pub(super) fn shift(&mut self, front_seq: u32, at: usize) {
        for s in self.seqs.iter_mut().rev() {
            if s.wrapping_sub(front_seq) as usize >= at {
                *s = s.wrapping_add(1);
            } else {
                break;
            }
        }
    }

    /// Adds reading `at`, inserted before the newest (its field `f` not
    /// NaN; `shift` done): it is kept if it beats the best reading after
    /// it, and then drops the earlier ones it beats.
    pub(super) fn insert(&mut self, buf: &Buffer, f: usize, at: usize) {
        let pos = self.seqs.partition_point(|&s| buf.idx(s) < at);
        if let Some(&next) = self.seqs.get(pos)
            && buf.compare(at, buf.idx(next), f) != self.keep
        {
            return;
        }
        let mut from = pos;
        while from > 0 && buf.compare(buf.idx(self.seqs[from - 1]), at, f) != self.keep {
            from -= 1;
        }
        self.seqs.drain(from..pos);
        grow(&mut self.seqs, 1);
        self.seqs.insert(from, buf.seq(at));
    }
}
