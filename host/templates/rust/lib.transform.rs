//! {{name}}: a streamhost transform rule. For each record of a batch it
//! keeps it, drops it, replaces its JSON text, or merges members into it;
//! an error sends the record to the dead-letter topic.

wit_bindgen::generate!({ world: "transform", path: "wit" });

use exports::streamhost::plugin::transform_rule::Guest;
use streamhost::plugin::types::{Batch, Kind, Needs, PluginInfo, Transformed};

struct Rule;

impl Guest for Rule {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            kind: Kind::Transform,
            needs: Needs::empty(),
        }
    }

    fn transform(batch: Batch) -> Vec<Result<Transformed, String>> {
        let f = batch.fields.iter().position(|n| n == "temperature");
        (0..batch.len as usize)
            .map(|i| match f.map(|f| batch.values[f][i]) {
                // Readings without a temperature are dropped on purpose.
                Some(t) if t.is_nan() => Ok(Transformed::Drop),
                // `merge` adds members to the record without the rule
                // reading its JSON text.
                Some(t) => Ok(Transformed::Merge(format!(
                    "{{\"temperature_f\":{:.2}}}",
                    t * 9.0 / 5.0 + 32.0
                ))),
                None => Ok(Transformed::Keep),
            })
            .collect()
    }
}

export!(Rule);
