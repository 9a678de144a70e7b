//! The decoder's fast path: one pass over a record of the usual shape,
//! without serde.
//!
//! It reads a subset of JSON and gives up on everything else:
//! - strings without escapes or control characters;
//! - numbers of at most 15 significant digits without an exponent, for the
//!   configured fields (other members' numbers are only checked against
//!   JSON's grammar);
//! - the key as a non-blank string, the event time as RFC 3339 text;
//! - each configured member at most once, nesting at most 100 deep, and
//!   nothing but whitespace after the object.
//!
//! On that subset it gives exactly what the serde path gives. Anything else
//! (an escape, an exponent, a long number, an integer key, an epoch time, a
//! member given twice, any error at all) returns `None`, and the caller
//! decodes the record again with serde_json, which gives the value or the
//! reason. So refusals, their messages and every edge case (lone
//! surrogates, huge numbers, duplicates) are serde_json's by construction;
//! `tests::the_fast_path_agrees_with_serde` checks the rest.
//!
//! Why the numbers agree: a significand below 10^15 and a power of ten up
//! to 10^15 are both exact in an `f64`, so one IEEE division gives the
//! correctly rounded value, which is what serde_json computes (with
//! `float_roundtrip` or without). An integer token is converted the same
//! way, and `-0` is minus zero in both.

use super::{Decoded, Schema, parse_time};

/// Powers of ten exact in an `f64`, for at most 15 fraction digits.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The deepest nesting read here (serde_json allows 128).
const MAX_DEPTH: u32 = 100;

/// `text` decoded against `schema`, or `None` when the record is outside
/// this path's subset (the module's documentation) and serde_json must read
/// it.
pub(super) fn decode(schema: &Schema, text: &str) -> Option<Decoded> {
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
    };
    let mut key = None;
    let mut time_ms = None;
    let mut values = vec![f64::NAN; schema.fields.len()];
    let mut seen = 0u64;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None; // no key: serde_json says so
    }
    loop {
        let name = s.string()?;
        let name = &s.b[name];
        s.ws();
        s.eat(b':')?;
        s.ws();
        if name == schema.key_field.as_bytes() {
            if key.is_some() {
                return None;
            }
            let k = &text[s.string()?];
            if k.trim().is_empty() {
                return None;
            }
            key = Some(k);
        } else if name == schema.time_field.as_bytes() {
            if time_ms.is_some() {
                return None;
            }
            time_ms = Some(parse_time(&text[s.string()?])?);
        } else if let Some(f) = schema.fields.iter().position(|n| n.as_bytes() == name) {
            if seen & (1 << f) != 0 {
                return None;
            }
            seen |= 1 << f;
            values[f] = if s.peek()? == b'n' {
                s.literal(b"null")?;
                f64::NAN
            } else {
                s.number()??
            };
        } else {
            s.skip(1)?;
        }
        s.ws();
        match s.peek()? {
            b',' => {
                s.i += 1;
                s.ws();
            }
            b'}' => {
                s.i += 1;
                break;
            }
            _ => return None,
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    Some(Decoded {
        key: key?.to_owned(),
        time_ms: time_ms?,
        values,
    })
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// JSON's whitespace.
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string without escapes or control characters: the range of its
    /// text, between the quotes (on ASCII quotes, so on `char` boundaries).
    /// Eight bytes at a time while no byte is a quote, a backslash or a
    /// control character.
    #[inline]
    fn string(&mut self) -> Option<std::ops::Range<usize>> {
        const ONES: u64 = u64::from_ne_bytes([1; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        // Flags (in its high bit) the first byte of `x` that is zero, and
        // perhaps later ones; `below` flags the first one below `n`.
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
        self.eat(b'"')?;
        let b = self.b;
        let start = self.i;
        let mut i = start;
        while let Some(chunk) = b.get(i..i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let hit = zero(x ^ (ONES * u64::from(b'"')))
                | zero(x ^ (ONES * u64::from(b'\\')))
                | below(x, 0x20);
            if hit != 0 {
                i += hit.trailing_zeros() as usize / 8;
                break;
            }
            i += 8;
        }
        let end = i + b[i..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        Some(start..end)
    }

    /// A number in JSON's grammar (else `None`), with its value when this
    /// path computes it exactly (else `Some(None)`).
    fn number(&mut self) -> Option<Option<f64>> {
        let b = self.b;
        let mut i = self.i;
        let negative = b.get(i) == Some(&b'-');
        i += negative as usize;
        // The significand, as long as it has at most 19 digits (exact only
        // up to 15, see `exact`).
        let mut significand = 0u64;
        let mut digits = |i: &mut usize| {
            let start = *i;
            while let Some(&d @ b'0'..=b'9') = b.get(*i) {
                significand = significand
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(d - b'0'));
                *i += 1;
            }
            *i - start
        };
        let int = match b.get(i)? {
            b'0' => {
                i += 1;
                1
            }
            b'1'..=b'9' => digits(&mut i),
            _ => return None,
        };
        let mut frac = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            frac = digits(&mut i);
            if frac == 0 {
                return None;
            }
        }
        let mut exact = int + frac <= 15;
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let start = i;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == start {
                return None;
            }
            exact = false;
        }
        self.i = i;
        if !exact {
            return Some(None);
        }
        let v = significand as f64 / POW10[frac];
        Some(Some(if negative { -v } else { v }))
    }

    /// Any value, checked against JSON's grammar and not kept.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            open @ (b'{' | b'[') => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                self.ws();
                if self.peek()? == close {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        c if c == close => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => {
                self.number()?;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{edited, schema};
    use super::super::{decode_text, decode_text_serde};
    use super::*;
    use proptest::prelude::*;

    /// Both paths give the same record, bit for bit, or the same refusal.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        let s = schema();
        let serde = decode_text_serde(&s, text);
        let fast = decode(&s, text);
        if let Some(fast) = &fast {
            let serde = serde.as_ref().map_err(|e| {
                TestCaseError::fail(format!("fast path read {text:?}; serde_json refused: {e}"))
            })?;
            prop_assert_eq!(&fast.key, &serde.key, "{}", text);
            prop_assert_eq!(fast.time_ms, serde.time_ms, "{}", text);
            let bits = |d: &Decoded| d.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(fast), bits(serde), "{}", text);
        }
        // What the pipeline calls: the fast path, else serde_json.
        let both = decode_text(&s, text);
        match (&both, &serde) {
            (Ok(a), Ok(b)) => prop_assert_eq!(
                (
                    &a.key,
                    a.time_ms,
                    a.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                ),
                (
                    &b.key,
                    b.time_ms,
                    b.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                )
            ),
            (a, b) => prop_assert_eq!(a, b, "{}", text),
        }
        Ok(())
    }

    const T: &str = r#""timestamp":"2026-11-24T17:30:05.123Z""#;

    #[test]
    fn the_usual_record_takes_the_fast_path() {
        let text = format!(
            r#"{{"sensor_id":"sensor_00042",{T},"temperature":21.57,"humidity":-0,"pressure":1013,"location":{{"latitude":40.712800,"longitude":-74.006000}},"battery_level":0.87}}"#
        );
        let d = decode(&schema(), &text).expect("the fast path reads it");
        assert_eq!(d.key, "sensor_00042");
        assert_eq!(d.time_ms, 1_795_541_405_123);
        assert_eq!(d.values[0], 21.57);
        assert_eq!(d.values[1].to_bits(), (-0.0f64).to_bits());
        assert_eq!(d.values[2], 1013.0);
        agree(&text).unwrap();
    }

    #[test]
    fn the_edges_serde_json_decides_leave_the_fast_path() {
        for (what, member) in [
            (
                "an escape in the key",
                r#""sensor_id":"s\u0031""#.to_string(),
            ),
            ("an escaped member name", r#""sensor_\u0069d":"s""#.into()),
            (
                "an exponent",
                r#""sensor_id":"s","temperature":2.1e1"#.into(),
            ),
            (
                "16 digits",
                r#""sensor_id":"s","temperature":1234567890.123456"#.into(),
            ),
            ("an integer key", r#""sensor_id":7"#.into()),
            ("a blank key", r#""sensor_id":" ""#.into()),
            (
                "a duplicate",
                r#""sensor_id":"s","temperature":1,"temperature":2"#.into(),
            ),
            (
                "a lone surrogate",
                r#""sensor_id":"s","note":"\udc00""#.into(),
            ),
            ("a trailing comma", r#""sensor_id":"s","#.into()),
            (
                "a leading zero",
                r#""sensor_id":"s","temperature":01"#.into(),
            ),
            (
                "deep nesting",
                format!(
                    r#""sensor_id":"s","x":{}1{}"#,
                    "[".repeat(150),
                    "]".repeat(150)
                ),
            ),
        ] {
            let text = format!("{{{member},{T}}}");
            assert!(decode(&schema(), &text).is_none(), "{what}: {text}");
            agree(&text).unwrap();
        }
    }

    #[test]
    fn ignored_members_are_checked_as_serde_json_checks_them() {
        for value in [
            "1e999",
            "-1e-999",
            "123456789012345678901234567890",
            "0.5",
            "-0",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            r#"[1,"a",{"b":[null]}]"#,
            r#""é ✓""#,
            "1.",
            ".5",
            "+1",
            "--1",
            "1e",
            "tru",
            "[1,]",
            r#"{"a"}"#,
            r#"{"a":1,}"#,
            "[1 2]",
            "\"a\u{7f}\"",
        ] {
            agree(&format!(r#"{{"sensor_id":"s",{T},"x":{value}}}"#)).unwrap();
            agree(&format!(r#"{{"sensor_id":"s",{T},"temperature":{value}}}"#)).unwrap();
        }
        for text in [
            format!(r#" {{ "sensor_id" : "s" , {T} }} "#),
            format!("{{\"sensor_id\":\"s\",{T}}}\n\t"),
            format!(r#"{{"sensor_id":"s",{T}}} x"#),
            format!(r#"{{"sensor_id":"s",{T}}}{{}}"#),
            r#"{"sensor_id":"s","timestamp":"2026-02-30T00:00:00Z"}"#.into(),
            r#"{"sensor_id":"s"}"#.into(),
            format!("{{{T}}}"),
            "{}".into(),
            "[]".into(),
            String::new(),
        ] {
            agree(&text).unwrap();
        }
    }

    const VALID: &str = r#"{"sensor_id":"sensor_001","timestamp":"2026-11-24T17:30:05.123+01:00","temperature":21.5,"humidity":-0.25,"pressure":1013,"x":[1,{"y":"z"}],"e":1e5}"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn the_fast_path_agrees_with_serde(edits in prop::collection::vec((0..VALID.len(), prop::sample::select(b" \t\n\"\\,:{}[]0123456789.-+eEnultrfasx\x01".to_vec()), 0..3u8), 1..5)) {
            let bytes = edited(VALID, edits, |bytes, at| {
                bytes.remove(at.min(bytes.len() - 1));
            });
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agree(text)?;
            }
        }

        #[test]
        fn numbers_agree_with_serde(int in prop_oneof![0u64..10, 0u64..10_000_000_000], frac in "[0-9]{0,9}", negative in any::<bool>()) {
            let sign = if negative { "-" } else { "" };
            let number = if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
            agree(&format!(r#"{{"sensor_id":"s",{T},"humidity":{number}}}"#))?;
        }
    }
}
