//! The article's `transform_data` as a streamhost `transform` component.
//!
//! Every record keeps all of its members and gains `processed_at` (the
//! batch's processing time from the host, ISO-8601 UTC with milliseconds)
//! and `enriched: true`. The rule answers with `merge`, so it never needs the
//! record's JSON text: the host splices the two members in. The members
//! cross to the host once per batch, whatever the batch's size.
//!
//! One decision differs from the article: the original members stay at the
//! top level rather than moving under `original_data`, so the key, the event
//! time and the numeric fields remain where every later rule and consumer
//! expects them.

pub const VERSION: &str = "1.0.0";

/// ISO-8601 UTC text of a Unix time in milliseconds, e.g.
/// `2026-11-24T17:30:05.123Z`; `None` outside chrono's range.
pub fn iso8601_utc(ms: i64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_millis(ms)?;
    Some(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// The JSON object text the host merges into every record of a batch
/// processed at `ms`.
pub fn members(ms: i64) -> Result<String, String> {
    let at = iso8601_utc(ms).ok_or_else(|| format!("processing time {ms} is out of range"))?;
    Ok(format!(r#"{{"processed_at":"{at}","enriched":true}}"#))
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "transform", path: "../../wit", generate_all });

    use exports::streamhost::plugin::transform_rule::Guest;
    use streamhost::plugin::types::{
        Batch, Kind, Needs, PluginInfo, Transformed, TransformedBatch,
    };

    struct Enrich;

    impl Guest for Enrich {
        fn describe() -> Result<PluginInfo, String> {
            Ok(PluginInfo {
                name: "enrich".into(),
                version: super::VERSION.into(),
                kind: Kind::Transform,
                needs: Needs::empty(),
                windows: Vec::new(),
                tables: Vec::new(),
            })
        }

        fn transform(batch: Batch) -> TransformedBatch {
            // Every record of a batch shares the processing time, so the
            // members are formatted once, returned once, and every record
            // merges them by index.
            match super::members(batch.processing_time) {
                Ok(members) => TransformedBatch {
                    members: vec![members],
                    results: vec![Ok(Transformed::Merge(0)); batch.len as usize],
                },
                Err(e) => TransformedBatch {
                    members: Vec::new(),
                    results: vec![Err(e); batch.len as usize],
                },
            }
        }
    }

    export!(Enrich);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        // 2026-11-24T17:30:05.123Z, worked out from 20,781 days since 1970.
        let ms = 20_781 * 86_400_000 + (17 * 3600 + 30 * 60 + 5) * 1000 + 123;
        assert_eq!(iso8601_utc(ms).unwrap(), "2026-11-24T17:30:05.123Z");
        assert_eq!(iso8601_utc(0).unwrap(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn members_are_a_json_object() {
        assert_eq!(
            members(0).unwrap(),
            r#"{"processed_at":"1970-01-01T00:00:00.000Z","enriched":true}"#
        );
        assert!(members(i64::MAX).is_err());
    }
}
