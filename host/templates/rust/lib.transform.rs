//! {{name}}: a streamhost transform rule. For each record of a batch it
//! keeps it, drops it, replaces its JSON text, or merges members into it;
//! an error sends the record to the dead-letter topic.

wit_bindgen::generate!({ world: "transform", path: "wit" });

use exports::streamhost::plugin::transform_rule::Guest;
use streamhost::plugin::types::{Batch, Kind, Needs, PluginInfo, Transformed, TransformedBatch};

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

    fn transform(batch: Batch) -> TransformedBatch {
        let f = batch.fields.iter().position(|n| n == "temperature");
        // `merge(m)` adds the members of `members[m]` to the record without
        // the rule reading its JSON text. Members that every record gets
        // (a constant, the processing time) are pushed once and shared.
        let mut members = Vec::new();
        let results = (0..batch.len as usize)
            .map(|i| match f.map(|f| batch.values[f][i]) {
                // Readings without a temperature are dropped on purpose.
                Some(t) if t.is_nan() => Ok(Transformed::Drop),
                Some(t) => {
                    members.push(format!(
                        "{{\"temperature_f\":{:.2}}}",
                        t * 9.0 / 5.0 + 32.0
                    ));
                    Ok(Transformed::Merge(members.len() as u32 - 1))
                }
                None => Ok(Transformed::Keep),
            })
            .collect();
        TransformedBatch { members, results }
    }
}

export!(Rule);
