//! {{name}}: a streamhost trend rule. For each record of a batch it
//! returns the direction its key's window is moving in (or none), or an
//! error that sends the record to the dead-letter topic.

wit_bindgen::generate!({ world: "trend", path: "wit" });

use exports::streamhost::plugin::trend_rule::Guest;
use streamhost::plugin::types::{Batch, Direction, Kind, Needs, PluginInfo, TrendResult, WindowView};

const FIELD: &str = "temperature";
/// Changes smaller than this are `stable`.
const STABLE: f64 = 0.5;

struct Rule;

impl Guest for Rule {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            kind: Kind::Trend,
            needs: Needs::empty(),
        }
    }

    fn trend(batch: Batch, windows: WindowView) -> Vec<Result<Option<TrendResult>, String>> {
        let Some(f) = batch.fields.iter().position(|n| n == FIELD) else {
            return vec![Ok(None); batch.len as usize];
        };
        let window = &windows.fields[f];
        (0..batch.len as usize)
            .map(|i| {
                if windows.counts[i] < 2 {
                    return Ok(None);
                }
                // The oldest and newest readings of the key's window.
                let change = window.last[i] - window.first[i];
                let direction = if change > STABLE {
                    Direction::Increasing
                } else if change < -STABLE {
                    Direction::Decreasing
                } else {
                    Direction::Stable
                };
                Ok(Some(TrendResult {
                    // The field, by its index in `batch.fields`.
                    field: f as u32,
                    direction,
                    change,
                }))
            })
            .collect()
    }
}

export!(Rule);
