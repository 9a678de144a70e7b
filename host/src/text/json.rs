//! JSON written by hand into a `String`: strings, integers and floats.
//! On the hot path (several times per record), measured faster than
//! serde_json's writer, and tested against it.

use std::fmt::Write as _;

/// Appends a JSON string literal, escaping as RFC 8259 requires.
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Appends `items` separated by commas, each written by `each`.
pub fn push_joined<I: IntoIterator>(
    out: &mut String,
    items: I,
    mut each: impl FnMut(&mut String, I::Item),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
}

/// Appends an integer.
pub fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends a JSON number, or `null` for NaN and infinities.
///
/// Sensor values usually have a few decimals; those are printed from an
/// integer (`k / 10^d` with `d <= 4` that divides back to exactly `v`, so the
/// text reads back as the same double). Anything else goes through ryu's
/// shortest round-trip formatting, which costs several times more.
pub fn push_f64(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
        return;
    }
    if v.abs() < 1e11 {
        let mut p = 1.0;
        for d in 0..5 {
            // Rounded by a cast: `f64::round` is a library call on x86-64
            // without SSE4.1. A wrong rounding only fails the check below.
            let x = v * p;
            let k = (x + 0.5f64.copysign(x)) as i64;
            if k as f64 / p == v {
                push_decimal(out, k, d);
                return;
            }
            p *= 10.0;
        }
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    out.push_str(text.strip_suffix(".0").unwrap_or(text));
}

/// Appends `k / 10^d` (`d <= 4`): the digits of `|k|`, with the point `d`
/// digits from the right.
fn push_decimal(out: &mut String, k: i64, d: usize) {
    if k < 0 {
        out.push('-');
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(k.unsigned_abs());
    if d == 0 {
        out.push_str(digits);
    } else if let Some(int) = digits.len().checked_sub(d).filter(|&n| n > 0) {
        out.push_str(&digits[..int]);
        out.push('.');
        out.push_str(&digits[int..]);
    } else {
        out.push_str("0.");
        for _ in digits.len()..d {
            out.push('0');
        }
        out.push_str(digits);
    }
}

/// The text of `record` (a JSON object) with `member` (`"name":value`)
/// added before its closing brace.
pub fn splice(record: &str, member: &str) -> String {
    let body = record.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body).trim_end();
    let mut out = String::with_capacity(body.len() + member.len() + 2);
    out.push_str(body);
    if !body.ends_with('{') {
        out.push(',');
    }
    out.push_str(member);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in [
            "plain",
            "quote\" back\\ nl\n tab\t bell\u{7} bs\u{8} ff\u{c} é ✓",
            "",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn numbers_are_shortest_round_trip() {
        let mut s = String::new();
        for v in [
            40.0,
            21.55,
            -0.5,
            -0.05,
            0.0625,
            1e-7,
            1e300,
            24.533333333333335,
            -3.25,
            1010.05,
            99999999999.9,
        ] {
            s.clear();
            push_f64(&mut s, v);
            assert_eq!(s.parse::<f64>().unwrap(), v, "{s}");
        }
        s.clear();
        push_f64(&mut s, 40.0);
        assert_eq!(s, "40");
    }

    proptest::proptest! {
        /// Decimals of a few places come out as ryu's shortest text (less a
        /// trailing `.0`), through the integer path or not.
        #[test]
        fn numbers_are_ryus_shortest_text(
            c in proptest::prop_oneof![-1000i64..1000, -10_000_000_000_000i64..10_000_000_000_000],
            places in 0..7i32,
            other in proptest::num::f64::NORMAL,
        ) {
            for v in [c as f64 / 10f64.powi(places), other, -0.0] {
                let mut s = String::new();
                push_f64(&mut s, v);
                let mut buf = ryu::Buffer::new();
                let want = buf.format_finite(v);
                let want = want.strip_suffix(".0").unwrap_or(want);
                proptest::prop_assert_eq!(&s, if v == 0.0 { "0" } else { want }, "{}", v);
            }
        }
    }

    #[test]
    fn splice_handles_empty_objects_and_whitespace() {
        assert_eq!(splice("{}", "\"a\":1"), "{\"a\":1}");
        assert_eq!(splice("{\"x\":2 }\n", "\"a\":1"), "{\"x\":2,\"a\":1}");
    }
}
