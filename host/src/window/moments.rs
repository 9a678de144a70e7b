//! Running sums for sums, means, variances and slopes of a window, and the
//! statistics they give.
//!
//! While a key's values are decimal, each value is an integer count `x` of
//! `10^-p` and each event time an integer `t` (milliseconds from the key's
//! base), so the sums `Σx`, `Σx²`, `Σt`, `Σt²`, `Σtx` are kept in integers
//! and never drift: a variance is the exact rational
//! `(nΣx² − (Σx)²) / (n² 10^2p)` and a slope `1000 (nΣtx − ΣtΣx) /
//! ((nΣt² − (Σt)²) 10^p)` per second, each turned into the nearest double
//! (`ratio`): the same bits whatever order the readings came in and however
//! many places the field has. The bounds: `|x| < 2^31`, `|t| < 2^31` and
//! `n < 2^32` keep `Σx` in `i64` and every product above in `i128`.
//!
//! Once the values are doubles (`Cells::Float`), the sums are `f64` of the
//! values less a shift `x0` (a value of the window when last recomputed),
//! with event times less `t0`, which keeps rounding to the spread of the
//! window rather than its level; they are recomputed from the window every
//! half window length, like the `--window` means. Not exact: a mean is
//! within a few ulps of `x0` plus the error of the shifted sum, which grows
//! with the number of readings added since the last recomputation.
//! Infinite values are counted apart, so they neither poison the sums nor
//! linger in them after leaving.

use std::cmp::Ordering;

/// The exact sums beyond `n` and `Σx` (kept by `FieldAgg` itself), for a
/// field whose spec asks for a variance, a deviation or a slope.
#[derive(Default)]
pub(super) struct Second {
    /// `Σx²` (variance and deviation).
    pub(super) sxx: i128,
    /// `Σt`, `Σt²`, `Σtx` (slope). `Σt` and `Σt²` are kept in `f64` mode
    /// too: times are integers there as well.
    pub(super) st: i64,
    pub(super) stt: i128,
    pub(super) stx: i128,
}

/// The sums in `f64` mode.
#[derive(Default)]
pub(super) struct FloatSums {
    pub(super) x0: f64,
    pub(super) t0: i32,
    /// `Σ(x − x0)`, `Σ(x − x0)²`, `Σ(t − t0)(x − x0)` over finite values.
    pub(super) sx: f64,
    pub(super) sxx: f64,
    pub(super) stx: f64,
    /// How many values are `+inf`, `-inf`.
    pub(super) pos_inf: u32,
    pub(super) neg_inf: u32,
}

impl FloatSums {
    /// Adds (`sign` 1) or removes (`sign` -1) value `x` at time `t`.
    #[inline]
    pub(super) fn add(&mut self, x: f64, t: i32, sign: f64, squares: bool, times: bool) {
        if x.is_infinite() {
            let count = if x > 0.0 {
                &mut self.pos_inf
            } else {
                &mut self.neg_inf
            };
            *count = if sign > 0.0 { *count + 1 } else { *count - 1 };
            return;
        }
        let d = x - self.x0;
        self.sx += sign * d;
        if squares {
            self.sxx += sign * d * d;
        }
        if times {
            self.stx += sign * (f64::from(t) - f64::from(self.t0)) * d;
        }
    }

    pub(super) fn infinite(&self) -> Option<f64> {
        match (self.pos_inf > 0, self.neg_inf > 0) {
            (false, false) => None,
            (true, false) => Some(f64::INFINITY),
            (false, true) => Some(f64::NEG_INFINITY),
            (true, true) => Some(f64::NAN),
        }
    }

    /// Forgets the rounding left in the sums once no value is held.
    pub(super) fn emptied(&mut self) {
        (self.sx, self.sxx, self.stx) = (0.0, 0.0, 0.0);
    }

    /// Whether the sums overflowed (finite values near `f64::MAX`): the
    /// statistics are then computed from the readings (`slow`).
    pub(super) fn overflowed(&self) -> bool {
        !(self.sx.is_finite() && self.sxx.is_finite() && self.stx.is_finite())
    }

    pub(super) fn sum(&self, n: u32) -> f64 {
        match self.infinite() {
            Some(v) => v,
            None if n == 0 => 0.0,
            None => f64::from(n) * self.x0 + self.sx,
        }
    }

    pub(super) fn mean(&self, n: u32) -> f64 {
        match self.infinite() {
            _ if n == 0 => f64::NAN,
            Some(v) => v,
            None => self.x0 + self.sx / f64::from(n),
        }
    }

    pub(super) fn variance(&self, n: u32) -> f64 {
        if n == 0 || self.infinite().is_some() {
            return f64::NAN;
        }
        let n = f64::from(n);
        ((self.sxx - self.sx * self.sx / n) / n).max(0.0)
    }

    /// The slope per second, given the exact time sums.
    pub(super) fn slope(&self, n: u32, second: &Second) -> f64 {
        if self.infinite().is_some() {
            return f64::NAN;
        }
        let Some(den) = time_spread(n, second) else {
            return f64::NAN;
        };
        // Σ(t − t0) exactly, then n Σt'x' − Σt' Σx' (shift-invariant).
        let st = second.st - i64::from(n) * i64::from(self.t0);
        let num = f64::from(n) * self.stx - st as f64 * self.sx;
        1000.0 * num / den as f64
    }
}

/// `nΣt² − (Σt)²`, if positive (at least two distinct times).
fn time_spread(n: u32, s: &Second) -> Option<i128> {
    let d = i128::from(n) * s.stt - i128::from(s.st) * i128::from(s.st);
    (n >= 2 && d > 0).then_some(d)
}

/// `10^p` for `p` up to 12 (places squared).
const IPOW10: [i128; 13] = {
    let mut t = [1i128; 13];
    let mut i = 1;
    while i < 13 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// The exact statistics of a decimal field with `places` places.
pub(super) struct Exact<'a> {
    pub(super) n: u32,
    pub(super) sx: i64,
    pub(super) second: Option<&'a Second>,
    pub(super) places: u8,
}

impl Exact<'_> {
    pub(super) fn sum(&self) -> f64 {
        ratio(i128::from(self.sx), IPOW10[usize::from(self.places)])
    }

    pub(super) fn mean(&self) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        ratio(
            i128::from(self.sx),
            i128::from(self.n) * IPOW10[usize::from(self.places)],
        )
    }

    pub(super) fn variance(&self) -> f64 {
        let Some(s) = self.second.filter(|_| self.n > 0) else {
            return f64::NAN;
        };
        let n = i128::from(self.n);
        let sx = i128::from(self.sx);
        ratio(
            n * s.sxx - sx * sx,
            n * n * IPOW10[2 * usize::from(self.places)],
        )
    }

    pub(super) fn slope(&self) -> f64 {
        let Some(s) = self.second else {
            return f64::NAN;
        };
        let Some(den) = time_spread(self.n, s) else {
            return f64::NAN;
        };
        let num = i128::from(self.n) * s.stx - i128::from(s.st) * i128::from(self.sx);
        // Per second, in units: × 1000 / 10^p, folded into one side.
        let p = usize::from(self.places);
        let exact = if p <= 3 {
            num.checked_mul(IPOW10[3 - p]).map(|num| (num, den))
        } else {
            den.checked_mul(IPOW10[p - 3]).map(|den| (num, den))
        };
        match exact {
            Some((num, den)) => ratio(num, den),
            // Beyond any real window (sums near 2^127): rounded twice.
            None => num as f64 * 1000.0 / (den as f64 * super::buffer::POW10[p]),
        }
    }
}

/// `num / den` rounded to the nearest double (ties to even), for `den > 0`.
pub(super) fn ratio(num: i128, den: i128) -> f64 {
    debug_assert!(den > 0);
    if num == 0 {
        return 0.0;
    }
    const EXACT: u128 = 1 << 53;
    let (a, b) = (num.unsigned_abs(), den.unsigned_abs());
    let q = if a <= EXACT && b <= EXACT {
        // Both exact as doubles: IEEE division rounds correctly.
        a as f64 / b as f64
    } else {
        nearest(a, b)
    };
    if num < 0 { -q } else { q }
}

/// `a / b` rounded to the nearest double, for `a, b > 0`: the quotient of
/// the operands rounded to doubles is within a few ulps of it (three
/// roundings), and exact comparisons with the midpoints between doubles
/// (`place`) step from there to the right one.
fn nearest(a: u128, b: u128) -> f64 {
    let mut q = a as f64 / b as f64;
    loop {
        match place(a, b, q) {
            Ordering::Less => q = q.next_down(),
            Ordering::Greater => q = q.next_up(),
            Ordering::Equal => return q,
        }
    }
}

/// Where `a / b` lies against the reals that round to `q` (a normal double
/// near it): below them, among them, or above. With `q = m 2^e`, they lie
/// between the midpoints `(4m - 2) 2^(e-2)` (`4m - 1` when `m` is a power
/// of two: the double below is finer) and `(4m + 2) 2^(e-2)`, which belong
/// to them when `m` is even; compared in exact 256-bit arithmetic.
fn place(a: u128, b: u128, q: f64) -> Ordering {
    let bits = q.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i32 - 1075;
    let m = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
    // a 2^max(2-e,0) against b k 2^max(e-2,0): both near 4a, so within
    // 2^130 (no shift overflows).
    let lhs = shl_wide((0, a), (2 - e).max(0) as u32);
    let side = |k: u128| shl_wide(mul_wide(b, k), (e - 2).max(0) as u32);
    let even = m % 2 == 0;
    let below = if m == 1 << 52 { 4 * m - 1 } else { 4 * m - 2 };
    match lhs.cmp(&side(below)) {
        Ordering::Less => return Ordering::Less,
        Ordering::Equal if !even => return Ordering::Less,
        _ => {}
    }
    match lhs.cmp(&side(4 * m + 2)) {
        Ordering::Greater => Ordering::Greater,
        Ordering::Equal if !even => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// `a · b` in 256 bits, as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const M: u128 = u64::MAX as u128;
    let (a1, a0, b1, b0) = (a >> 64, a & M, b >> 64, b & M);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let mid = (p00 >> 64) + (p01 & M) + (p10 & M);
    let lo = (p00 & M) | (mid << 64);
    (p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64), lo)
}

/// `x · 2^s` in 256 bits (`s < 256`; bits beyond are lost).
fn shl_wide((hi, lo): (u128, u128), s: u32) -> (u128, u128) {
    match s {
        0 => (hi, lo),
        1..128 => ((hi << s) | (lo >> (128 - s)), lo << s),
        _ => (lo << (s - 128), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `a / b` rounded to the nearest double, for `a, b > 0`, another way:
    /// 57 bits of the quotient of the two normalised, by long division,
    /// the remainder folded into the last bit (so a cast rounds as the exact
    /// quotient would), scaled back by powers of two.
    fn long_division(a: u128, b: u128) -> f64 {
        let (za, zb) = (a.leading_zeros(), b.leading_zeros());
        let (a, b) = (a << za, b << zb);
        // a / b is in (1/2, 2): the first quotient bit is the units.
        let (mut q, mut r, mut carry) = (0u64, a, false);
        for _ in 0..57 {
            q <<= 1;
            if carry || r >= b {
                r = r.wrapping_sub(b);
                q |= 1;
            }
            carry = r >> 127 == 1;
            r <<= 1;
        }
        q |= u64::from(r != 0 || carry);
        let exp = zb as i32 - za as i32 - 56;
        q as f64 * f64::from_bits(((1023 + exp) as u64) << 52)
    }

    /// `x · 2^s` in 256 bits, if it fits.
    fn wide_shl((hi, lo): (u128, u128), s: u32) -> Option<(u128, u128)> {
        match s {
            0 => Some((hi, lo)),
            1..128 => (hi.leading_zeros() >= s).then(|| ((hi << s) | (lo >> (128 - s)), lo << s)),
            128..256 => (hi == 0 && lo.leading_zeros() >= s - 128).then(|| (lo << (s - 128), 0)),
            _ => (hi == 0 && lo == 0).then_some((0, 0)),
        }
    }

    /// Whether `got` is `num / den` correctly rounded (ties to even),
    /// checked in exact 256-bit arithmetic: `|num / den|` lies between the
    /// midpoints around `got = m 2^e` (`(4m + 2) 2^(e-2)` above, `(4m - 2)
    /// 2^(e-2)` below, or `(4m - 1) 2^(e-2)` when `m` is a power of two and
    /// the double below is finer), and on a midpoint `m` is even.
    pub(in crate::window) fn correctly_rounded(num: i128, den: i128, got: f64) -> bool {
        if num == 0 {
            return got == 0.0 && got.is_sign_positive();
        }
        if (got < 0.0) != ((num < 0) != (den < 0)) || !got.is_normal() {
            return false;
        }
        let bits = got.abs().to_bits();
        let e = ((bits >> 52) & 0x7ff) as i32 - 1075;
        let m = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
        let (a, d) = (num.unsigned_abs(), den.unsigned_abs());
        // |num| 2^max(2-e,0) against den k 2^max(e-2,0).
        let lhs = wide_shl((0, a), (2 - e).max(0) as u32);
        let side = |k: u128| wide_shl(mul_wide(d, k), (e - 2).max(0) as u32);
        let below = if m == 1 << 52 { 4 * m - 1 } else { 4 * m - 2 };
        let (Some(lhs), Some(lo), Some(hi)) = (lhs, side(below), side(4 * m + 2)) else {
            return false;
        };
        let even = m % 2 == 0;
        (lo < lhs || (lo == lhs && even)) && (lhs < hi || (lhs == hi && even))
    }

    #[test]
    fn ratio_rounds_to_nearest_even() {
        assert_eq!(ratio(1, 3), 1.0 / 3.0);
        assert_eq!(ratio(-7, 2), -3.5);
        assert_eq!(ratio(0, 5), 0.0);
        // 2^60 + 1 over 1 rounds to 2^60; 3 · 2^60 + 2^8 (a tie plus) up.
        assert_eq!(ratio((1 << 60) + 1, 1), (1u64 << 60) as f64);
        let x = (3i128 << 60) + (1 << 8) + 1;
        assert_eq!(ratio(x, 1), x as f64);
        assert!(correctly_rounded(x, 3, ratio(x, 3)));
        assert_eq!(ratio(i128::MAX, i128::MAX), 1.0);
        assert_eq!(ratio(i128::MIN + 1, 1), -(2f64.powi(127)));
        // Exact midpoints between doubles round to the even one, whatever
        // common factor hides them: m + 1/2 for m = 2^53 - 1 (odd: up to
        // 2^53) and m = 2^53 - 2 (even: stays).
        for (m, want) in [
            ((1i128 << 53) - 1, 2f64.powi(53)),
            ((1 << 53) - 2, ((1u64 << 53) - 2) as f64),
        ] {
            for f in [1, 3, 1 << 40, 1_000_000_007] {
                assert_eq!(ratio((2 * m + 1) * f, 2 * f), want, "{m} {f}");
                assert_eq!(ratio(-(2 * m + 1) * f, 2 * f), -want, "{m} {f}");
            }
        }
        // The checker itself refuses a neighbour of the right answer.
        for (num, den) in [(1, 3), (x, 3), (i128::MAX, 7), (-5, 1 << 100), (1 << 80, 3)] {
            let q = ratio(num, den);
            assert!(correctly_rounded(num, den, q), "{num} / {den}");
            assert!(
                !correctly_rounded(num, den, q.next_up()),
                "{num} / {den} up"
            );
            assert!(
                !correctly_rounded(num, den, q.next_down()),
                "{num} / {den} down"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn ratio_is_the_correctly_rounded_quotient(
            num in prop_oneof![any::<i128>(), any::<i64>().prop_map(i128::from), -1000..1000i128],
            den in prop_oneof![1..i128::MAX, 1..(1i128 << 59), 1..1000i128],
        ) {
            prop_assert!(correctly_rounded(num, den, ratio(num, den)), "{num} / {den} = {}", ratio(num, den));
            // Long division, another way, agrees.
            let (a, b) = (num.unsigned_abs().max(1), den as u128);
            prop_assert_eq!(nearest(a, b), long_division(a, b));
            if a <= 1 << 53 && b <= 1 << 53 {
                prop_assert_eq!(long_division(a, b), a as f64 / b as f64);
            }
        }
    }
}
