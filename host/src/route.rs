//! Shapes of the three outputs: enriched records, alerts and dead letters.
//!
//! JSON is written directly into a `String` (no intermediate `Value` tree).
//! The record's own JSON text is spliced in as it is: an enriched record is
//! the (transformed) record with one member, `streamhost`, added.

use std::fmt::Write as _;

use crate::plugin::types::{Alert, Direction, Severity, TrendResult};

/// Where an output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    Enriched,
    Alerts,
    DeadLetter,
}

impl Dest {
    /// What the destination's records are called in messages.
    pub fn name(self) -> &'static str {
        match self {
            Dest::Enriched => "enriched",
            Dest::Alerts => "alert",
            Dest::DeadLetter => "dead-letter",
        }
    }
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub dest: Dest,
    /// The input record it comes from: partition and offset.
    pub source: (i32, i64),
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Header names of dead-letter records.
pub mod headers {
    pub const REASON: &str = "streamhost.reason";
    pub const ERROR: &str = "streamhost.error";
    pub const TOPIC: &str = "streamhost.source.topic";
    pub const PARTITION: &str = "streamhost.source.partition";
    pub const OFFSET: &str = "streamhost.source.offset";
    pub const PLUGIN: &str = "streamhost.plugin";
    pub const PLUGIN_VERSION: &str = "streamhost.plugin.version";
    /// On a reference dead letter (the original was too large to copy):
    /// the original's length in bytes; the payload holds its first bytes.
    pub const ORIGINAL_BYTES: &str = "streamhost.original.bytes";
}

/// The class of a dead letter, sent as the `streamhost.reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a record streamhost can read: not UTF-8 or JSON, no key or event
    /// time, a non-numeric field, a member given twice, no value at all.
    Decode,
    /// Older than its key's newest event time minus the allowed lateness.
    Late,
    /// Further ahead of the processing time than `--max-future`.
    Future,
    /// A plugin call ran past its deadline.
    PluginTimeout,
    /// A plugin ran out of its memory cap.
    PluginOom,
    /// A plugin trapped (panicked).
    PluginTrap,
    /// A plugin answered `err` for the record, or broke the contract.
    PluginError,
    /// A plugin returned more than the output limits allow for one record.
    PluginOutputLimit,
    /// An output of the record is larger than the producer may send, or
    /// than the broker accepts for its topic.
    OutputTooLarge,
    /// The broker refused an output of the record as invalid.
    OutputRefused,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Decode,
        Reason::Late,
        Reason::Future,
        Reason::PluginTimeout,
        Reason::PluginOom,
        Reason::PluginTrap,
        Reason::PluginError,
        Reason::PluginOutputLimit,
        Reason::OutputTooLarge,
        Reason::OutputRefused,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Decode => "decode",
            Reason::Late => "late",
            Reason::Future => "future",
            Reason::PluginTimeout => "plugin-timeout",
            Reason::PluginOom => "plugin-oom",
            Reason::PluginTrap => "plugin-trap",
            Reason::PluginError => "plugin-error",
            Reason::PluginOutputLimit => "plugin-output-limit",
            Reason::OutputTooLarge => "output-too-large",
            Reason::OutputRefused => "output-refused",
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    /// The plugin that failed, with its version, if one did.
    pub plugin: Option<(String, String)>,
}

/// Where a record came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

pub fn dead_letter(source: Source, key: Option<Vec<u8>>, payload: Vec<u8>, failure: &Failure) -> OutRecord {
    let mut headers = vec![
        (headers::REASON, failure.reason.as_str().to_string()),
        (headers::ERROR, failure.message.clone()),
        (headers::TOPIC, source.topic.to_string()),
        (headers::PARTITION, source.partition.to_string()),
        (headers::OFFSET, source.offset.to_string()),
    ];
    if let Some((name, version)) = &failure.plugin {
        headers.push((headers::PLUGIN, name.clone()));
        headers.push((headers::PLUGIN_VERSION, version.clone()));
    }
    OutRecord { dest: Dest::DeadLetter, source: (source.partition, source.offset), key, payload, headers }
}

impl OutRecord {
    /// Bytes the producer counts against its `message.max.bytes`: key,
    /// value and headers, plus a bound on the record's framing.
    pub fn size(&self) -> usize {
        const FRAMING: usize = 64;
        self.key.as_ref().map_or(0, Vec::len)
            + self.payload.len()
            + self.headers.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>()
            + FRAMING
    }

    /// A dead letter that fits in `max` bytes: this one, or, when it is too
    /// large, a reference to the original (its headers, source position and
    /// first bytes, with `streamhost.original.bytes` giving its length).
    pub fn fit_dead_letter(mut self, max: usize) -> OutRecord {
        debug_assert_eq!(self.dest, Dest::DeadLetter);
        if self.size() <= max {
            return self;
        }
        const ERROR_BYTES: usize = 4096;
        for (name, value) in &mut self.headers {
            if *name == headers::ERROR && value.len() > ERROR_BYTES {
                let mut end = ERROR_BYTES;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                value.truncate(end);
                value.push_str("...");
            }
        }
        if let Some(key) = &mut self.key {
            key.truncate(1024);
        }
        let mut payload = std::mem::take(&mut self.payload);
        self.headers.push((headers::ORIGINAL_BYTES, payload.len().to_string()));
        payload.truncate(max.saturating_sub(self.size()).min(1024));
        self.payload = payload;
        self
    }
}

/// ISO-8601 UTC with milliseconds, e.g. `2026-11-24T17:30:05.123Z`.
/// Hand-rolled (days to civil date, after Howard Hinnant's algorithm): it
/// runs several times per record and chrono's formatter costs ten times more.
pub fn iso8601(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_iso8601(&mut out, ms);
    out
}

/// Appends `iso8601(ms)`.
pub fn push_iso8601(out: &mut String, ms: i64) {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        let _ = write!(out, "{ms}");
        return;
    }
    let (h, m, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, h, 2);
    put(14, m, 2);
    put(17, s, 2);
    put(20, milli, 3);
    out.push_str(std::str::from_utf8(&buf).expect("ASCII"));
}

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
fn push_joined<I: IntoIterator>(out: &mut String, items: I, mut each: impl FnMut(&mut String, I::Item)) {
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
    const POW: [f64; 5] = [1.0, 10.0, 100.0, 1000.0, 10000.0];
    if v.abs() < 1e11 {
        for (d, &p) in POW.iter().enumerate() {
            let k = (v * p).round();
            if k / p == v {
                let k = k as i64;
                if d == 0 {
                    push_int(out, k);
                } else {
                    if k < 0 {
                        out.push('-');
                    }
                    let digits = k.unsigned_abs();
                    let scale = 10u64.pow(d as u32);
                    push_int(out, digits / scale);
                    out.push('.');
                    let mut buf = itoa::Buffer::new();
                    let frac = buf.format(digits % scale);
                    for _ in frac.len()..d {
                        out.push('0');
                    }
                    out.push_str(frac);
                }
                return;
            }
        }
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    out.push_str(text.strip_suffix(".0").unwrap_or(text));
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Increasing => "increasing",
        Direction::Decreasing => "decreasing",
        Direction::Stable => "stable",
    }
}

pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

/// A record's window as the enriched output shows it.
pub struct WindowStats<'a> {
    pub start_ms: i64,
    pub end_ms: i64,
    pub count: u32,
    /// (field name, [mean, min, max])
    pub fields: &'a [(&'a str, [f64; 3])],
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

/// The enriched record: the record plus a `streamhost` member holding its
/// window statistics, trends, alert kinds, the plugin versions that handled
/// it and its source position.
#[allow(clippy::too_many_arguments)]
pub fn enriched(
    record: &str,
    window: &WindowStats,
    trends: &[(&str, &TrendResult)],
    alert_kinds: &[&str],
    plugins: &[(&str, &str)],
    source: Source,
) -> String {
    // Written straight after the record's own members, in one buffer.
    let body = record.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body).trim_end();
    let mut m = String::with_capacity(body.len() + 320 + 64 * window.fields.len());
    m.push_str(body);
    if !body.ends_with('{') {
        m.push(',');
    }
    m.push_str("\"streamhost\":{\"window\":{\"start\":\"");
    push_iso8601(&mut m, window.start_ms);
    m.push_str("\",\"end\":\"");
    push_iso8601(&mut m, window.end_ms);
    m.push('"');
    m.push_str(",\"count\":");
    push_int(&mut m, window.count);
    m.push_str(",\"fields\":{");
    push_joined(&mut m, window.fields, |m, (name, [mean, min, max])| {
        push_str(m, name);
        m.push_str(":{\"mean\":");
        push_f64(m, *mean);
        m.push_str(",\"min\":");
        push_f64(m, *min);
        m.push_str(",\"max\":");
        push_f64(m, *max);
        m.push('}');
    });
    m.push_str("}},\"trends\":{");
    push_joined(&mut m, trends, |m, (plugin, t)| {
        push_str(m, plugin);
        m.push_str(":{\"field\":");
        push_str(m, &t.field);
        m.push_str(",\"direction\":\"");
        m.push_str(direction(t.direction));
        m.push_str("\",\"change\":");
        push_f64(m, t.change);
        m.push('}');
    });
    m.push_str("},\"alerts\":[");
    push_joined(&mut m, alert_kinds, |m, kind| {
        push_str(m, kind);
    });
    m.push_str("],\"plugins\":{");
    push_joined(&mut m, plugins, |m, (name, version)| {
        push_str(m, name);
        m.push(':');
        push_str(m, version);
    });
    m.push_str("},\"source\":{\"partition\":");
    push_int(&mut m, source.partition);
    m.push_str(",\"offset\":");
    push_int(&mut m, source.offset);
    m.push_str("}}}");
    m
}

/// An alert record in the article's shape (`timestamp`, the key, `anomalies`,
/// `sensor_data`, `severity`), plus the rule, its version, each alert's
/// detail, the event time and the source position.
#[allow(clippy::too_many_arguments)]
pub fn alert(
    processing_ms: i64,
    key_field: &str,
    key: &str,
    event_ms: i64,
    record: &str,
    rule: (&str, &str),
    alerts: &[Alert],
    source: Source,
) -> String {
    let mut m = String::with_capacity(256 + record.len());
    m.push_str("{\"timestamp\":");
    push_str(&mut m, &iso8601(processing_ms));
    m.push(',');
    push_str(&mut m, key_field);
    m.push(':');
    push_str(&mut m, key);
    m.push_str(",\"event_time\":");
    push_str(&mut m, &iso8601(event_ms));
    m.push_str(",\"anomalies\":[");
    push_joined(&mut m, alerts, |m, a| {
        push_str(m, &a.kind);
    });
    let top = alerts.iter().map(|a| a.severity).max_by_key(|s| severity_rank(*s)).unwrap_or(Severity::Low);
    let _ = write!(m, "],\"severity\":\"{}\",\"rule\":", severity(top));
    push_str(&mut m, rule.0);
    m.push_str(",\"rule_version\":");
    push_str(&mut m, rule.1);
    m.push_str(",\"alerts\":[");
    push_joined(&mut m, alerts, |m, a| {
        m.push_str("{\"rule\":");
        push_str(m, &a.rule);
        m.push_str(",\"kind\":");
        push_str(m, &a.kind);
        let _ = write!(m, ",\"severity\":\"{}\",\"message\":", severity(a.severity));
        push_str(m, &a.message);
        m.push('}');
    });
    m.push_str("],\"sensor_data\":");
    m.push_str(record.trim());
    let _ = write!(m, ",\"source\":{{\"partition\":{},\"offset\":{}}}}}", source.partition, source.offset);
    m
}

/// A transform's `merge` answer, parsed once and applied to many records
/// (a rule usually merges the same members into every record of a batch).
pub struct Merge {
    source: String,
    /// Member names, unquoted.
    names: Vec<String>,
    /// Each member as `"name":value` text, the value exactly as the plugin
    /// wrote it.
    members: Vec<String>,
    /// The members as `"name":value,...` text, ready to splice.
    text: String,
    /// Each member name as a quoted JSON string, to look for collisions.
    quoted: Vec<String>,
}

/// A JSON object's members in order, each value as its exact text. Reading
/// values as raw text keeps numbers as written (no float rounding) and
/// walks nesting without recursion, so depth is no limit.
fn raw_members(text: &str) -> Result<Vec<(String, &serde_json::value::RawValue)>, serde_json::Error> {
    struct Members<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de> serde::de::Visitor<'de> for Members<'de> {
        type Value = Vec<(String, &'de serde_json::value::RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                out.push((k, map.next_value::<&'de serde_json::value::RawValue>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = serde::Deserializer::deserialize_map(&mut de, Members(std::marker::PhantomData))?;
    de.end()?;
    Ok(members)
}

impl Merge {
    pub fn parse(members: &str) -> Result<Merge, String> {
        let parsed = raw_members(members).map_err(|e| format!("merge is not a JSON object: {e}"))?;
        let mut merge = Merge { source: members.to_string(), names: Vec::new(), members: Vec::new(), text: String::new(), quoted: Vec::new() };
        for (k, v) in parsed {
            let mut q = String::new();
            push_str(&mut q, &k);
            let member = format!("{q}:{}", v.get());
            match merge.names.iter().position(|n| *n == k) {
                // The last of two equal names wins, as in a JSON object.
                Some(i) => merge.members[i] = member,
                None => {
                    merge.names.push(k);
                    merge.members.push(member);
                    merge.quoted.push(q);
                }
            }
        }
        merge.text = merge.members.join(",");
        Ok(merge)
    }

    /// Whether this merge came from exactly `members`.
    pub fn is(&self, members: &str) -> bool {
        self.source == members
    }

    /// Whether any merged member is called one of `names`.
    pub fn touches(&self, names: &[&str]) -> bool {
        self.names.iter().any(|k| names.contains(&k.as_str()))
    }

    /// `record` (a JSON object) with the members added, members of the same
    /// name replaced in place. Splices text when no name can collide;
    /// otherwise rewrites only the top level, every other value kept as its
    /// exact text.
    pub fn apply(&self, record: &str) -> Result<String, String> {
        if self.names.is_empty() {
            return Ok(record.to_string());
        }
        let collides = self.quoted.iter().any(|q| memchr::memmem::find(record.as_bytes(), q.as_bytes()).is_some());
        if !collides {
            return Ok(splice(record, &self.text));
        }
        let existing = raw_members(record).map_err(|e| format!("record is not a JSON object: {e}"))?;
        let mut out = String::with_capacity(record.len() + self.text.len());
        let mut written = vec![false; self.names.len()];
        out.push('{');
        for (k, v) in &existing {
            let replaced = self.names.iter().position(|n| n == k);
            if replaced.is_some_and(|i| written[i]) {
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            match replaced {
                Some(i) => {
                    out.push_str(&self.members[i]);
                    written[i] = true;
                }
                None => {
                    push_str(&mut out, k);
                    out.push(':');
                    out.push_str(v.get());
                }
            }
        }
        for (i, member) in self.members.iter().enumerate() {
            if !written[i] {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push_str(member);
            }
        }
        out.push('}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in ["plain", "quote\" back\\ nl\n tab\t bell\u{7} bs\u{8} ff\u{c} é ✓", ""] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn iso8601_matches_chrono_across_eras() {
        for ms in [0, 1, 86_399_999, 951_782_400_000, 1_795_541_405_123, -1, -86_400_001, 253_402_300_799_999] {
            let want = chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            assert_eq!(iso8601(ms), want, "{ms}");
        }
    }

    #[test]
    fn numbers_are_shortest_round_trip() {
        let mut s = String::new();
        for v in [40.0, 21.55, -0.5, -0.05, 0.0625, 1e-7, 1e300, 24.533333333333335, -3.25, 1010.05, 99999999999.9] {
            s.clear();
            push_f64(&mut s, v);
            assert_eq!(s.parse::<f64>().unwrap(), v, "{s}");
        }
        s.clear();
        push_f64(&mut s, 40.0);
        assert_eq!(s, "40");
    }

    #[test]
    fn splice_handles_empty_objects_and_whitespace() {
        assert_eq!(splice("{}", "\"a\":1"), "{\"a\":1}");
        assert_eq!(splice("{\"x\":2 }\n", "\"a\":1"), "{\"x\":2,\"a\":1}");
    }

    fn merge(record: &str, members: &str) -> Result<String, String> {
        Merge::parse(members)?.apply(record)
    }

    #[test]
    fn merge_adds_and_replaces() {
        assert_eq!(merge(r#"{"a":1}"#, r#"{"b":true}"#).unwrap(), r#"{"a":1,"b":true}"#);
        assert_eq!(merge(r#"{"a":1,"b":2}"#, r#"{"b":3}"#).unwrap(), r#"{"a":1,"b":3}"#);
        assert!(merge(r#"{"a":1}"#, "[1]").is_err());
    }

    #[test]
    fn merge_keeps_every_other_value_as_written() {
        let record = r#"{"big":123456789012345678901234567890,"d":1.10,"enriched":false,"n":{"x":[1.0,2e3]},"z":"processed_at"}"#;
        let merged = merge(record, r#"{"processed_at":"2026-11-24T17:30:05.123Z","enriched":true}"#).unwrap();
        assert_eq!(
            merged,
            r#"{"big":123456789012345678901234567890,"d":1.10,"enriched":true,"n":{"x":[1.0,2e3]},"z":"processed_at","processed_at":"2026-11-24T17:30:05.123Z"}"#
        );
        // The plugin's own numbers are kept as written too.
        assert_eq!(merge(r#"{"enriched":1}"#, r#"{"enriched":1.10}"#).unwrap(), r#"{"enriched":1.10}"#);
    }

    #[test]
    fn merge_handles_deep_nesting() {
        let deep = format!(r#"{{"enriched":0,"deep":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let merged = merge(&deep, r#"{"enriched":true}"#).unwrap();
        assert_eq!(merged, format!(r#"{{"enriched":true,"deep":{}1{}}}"#, "[".repeat(200), "]".repeat(200)));
    }

    #[test]
    fn oversized_dead_letters_become_references() {
        let failure = Failure { reason: Reason::OutputTooLarge, message: "x".repeat(10_000), plugin: None };
        let source = Source { topic: "t", partition: 1, offset: 2 };
        let small = dead_letter(source, Some(b"k".to_vec()), b"{}".to_vec(), &failure).fit_dead_letter(100_000);
        assert_eq!(small.payload, b"{}");
        let big = dead_letter(source, Some(b"k".to_vec()), vec![b'a'; 2_000_000], &failure).fit_dead_letter(1_000_000);
        assert!(big.size() <= 1_000_000);
        assert_eq!(big.payload, vec![b'a'; 1024]);
        let header = |name: &str| big.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        assert_eq!(header(headers::ORIGINAL_BYTES).as_deref(), Some("2000000"));
        assert_eq!(header(headers::OFFSET).as_deref(), Some("2"));
        assert_eq!(header(headers::ERROR).unwrap().len(), 4099);
    }

    #[test]
    fn alert_has_the_articles_shape() {
        let alerts = [
            Alert { rule: "r".into(), kind: "low_battery".into(), severity: Severity::Medium, message: "m1".into() },
            Alert {
                rule: "r".into(),
                kind: "temperature_out_of_range".into(),
                severity: Severity::High,
                message: "m2".into(),
            },
        ];
        let text = alert(
            0,
            "sensor_id",
            "s1",
            1000,
            r#"{"sensor_id":"s1"}"#,
            ("anomaly", "1.0.0"),
            &alerts,
            Source { topic: "t", partition: 1, offset: 2 },
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["sensor_id"], "s1");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["anomalies"], serde_json::json!(["low_battery", "temperature_out_of_range"]));
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["sensor_data"]["sensor_id"], "s1");
        assert_eq!(v["rule_version"], "1.0.0");
    }

    #[test]
    fn enriched_is_valid_json_with_nulls_for_nan() {
        let fields = [("temperature", [1.0, f64::NAN, 2.0])];
        let w = WindowStats { start_ms: 0, end_ms: 1, count: 2, fields: &fields };
        let t = TrendResult { field: "temperature".into(), direction: Direction::Stable, change: 0.0 };
        let text = enriched(
            r#"{"a":1}"#,
            &w,
            &[("trend", &t)],
            &[],
            &[("trend", "1.0.0")],
            Source { topic: "t", partition: 0, offset: 9 },
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"], 1);
        let s = &v["streamhost"];
        assert_eq!(s["window"]["fields"]["temperature"]["min"], serde_json::Value::Null);
        assert_eq!(s["window"]["fields"]["temperature"]["mean"], 1.0);
        assert_eq!(s["trends"]["trend"]["direction"], "stable");
        assert_eq!(s["plugins"]["trend"], "1.0.0");
        assert_eq!(s["source"]["offset"], 9);
    }
}
