//! What transforms return, applied to the record's text: `merge` members
//! spliced in, or the top level rewritten with every other value kept as
//! written.

use std::sync::Arc;

use crate::text::json::{push_str, splice};

/// A transform's `merge` answer, parsed once and applied to many records
/// (a rule usually merges the same members into every record of a batch).
pub struct Merge {
    /// The text it was parsed from, as the rule's call returned it (shared
    /// by every record that merges it).
    source: Arc<str>,
    /// Member names, unquoted.
    names: Vec<String>,
    /// Each member as `"name":value` text, the value exactly as the plugin
    /// wrote it.
    members: Vec<String>,
    /// The members as `"name":value,...` text, ready to splice.
    text: String,
    /// A searcher for each member name as a quoted JSON string, to look for
    /// collisions (built once: the merge is applied to every record).
    quoted: Vec<memchr::memmem::Finder<'static>>,
}

/// A JSON object's members in order, each value as its exact text. Reading
/// values as raw text keeps numbers as written (no float rounding) and
/// walks nesting without recursion, so depth is no limit.
fn raw_members(
    text: &str,
) -> Result<Vec<(String, &serde_json::value::RawValue)>, serde_json::Error> {
    struct Members<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de> serde::de::Visitor<'de> for Members<'de> {
        type Value = Vec<(String, &'de serde_json::value::RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
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
    /// Parses a `merge` answer's text, which must be a JSON object; of two
    /// members with one name, the last wins.
    pub fn parse(members: &Arc<str>) -> Result<Merge, String> {
        let parsed =
            raw_members(members).map_err(|e| format!("merge is not a JSON object: {e}"))?;
        let mut merge = Merge {
            source: members.clone(),
            names: Vec::new(),
            members: Vec::new(),
            text: String::new(),
            quoted: Vec::new(),
        };
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
                    merge
                        .quoted
                        .push(memchr::memmem::Finder::new(q.as_bytes()).into_owned());
                }
            }
        }
        merge.text = merge.members.join(",");
        Ok(merge)
    }

    /// Whether this merge came from exactly `members`: the same shared text
    /// (no comparison needed), or an equal one.
    pub fn is(&self, members: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.source, members) || self.source == *members
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
        let collides = self
            .quoted
            .iter()
            .any(|q| q.find(record.as_bytes()).is_some());
        if !collides {
            return Ok(splice(record, &self.text));
        }
        let existing =
            raw_members(record).map_err(|e| format!("record is not a JSON object: {e}"))?;
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

    fn merge(record: &str, members: &str) -> Result<String, String> {
        Merge::parse(&Arc::from(members))?.apply(record)
    }

    #[test]
    fn merge_adds_and_replaces() {
        assert_eq!(
            merge(r#"{"a":1}"#, r#"{"b":true}"#).unwrap(),
            r#"{"a":1,"b":true}"#
        );
        assert_eq!(
            merge(r#"{"a":1,"b":2}"#, r#"{"b":3}"#).unwrap(),
            r#"{"a":1,"b":3}"#
        );
        assert!(merge(r#"{"a":1}"#, "[1]").is_err());
    }

    #[test]
    fn merge_keeps_every_other_value_as_written() {
        let record = r#"{"big":123456789012345678901234567890,"d":1.10,"enriched":false,"n":{"x":[1.0,2e3]},"z":"processed_at"}"#;
        let merged = merge(
            record,
            r#"{"processed_at":"2026-11-24T17:30:05.123Z","enriched":true}"#,
        )
        .unwrap();
        assert_eq!(
            merged,
            r#"{"big":123456789012345678901234567890,"d":1.10,"enriched":true,"n":{"x":[1.0,2e3]},"z":"processed_at","processed_at":"2026-11-24T17:30:05.123Z"}"#
        );
        // The plugin's own numbers are kept as written too.
        assert_eq!(
            merge(r#"{"enriched":1}"#, r#"{"enriched":1.10}"#).unwrap(),
            r#"{"enriched":1.10}"#
        );
    }

    #[test]
    fn merge_handles_deep_nesting() {
        let deep = format!(
            r#"{{"enriched":0,"deep":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let merged = merge(&deep, r#"{"enriched":true}"#).unwrap();
        assert_eq!(
            merged,
            format!(
                r#"{{"enriched":true,"deep":{}1{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            )
        );
    }
}
