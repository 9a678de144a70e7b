//! {{name}}: a streamhost transform rule. For each record of a batch it
//! keeps it, drops it, replaces its JSON text, or merges members into it;
//! an error sends the record to the dead-letter topic.

// `generate_all` also generates the imports from `wit/deps/`
// (`wasi:config/store`).
wit_bindgen::generate!({ world: "transform", path: "wit", generate_all });

use std::sync::OnceLock;

use exports::streamhost::plugin::transform_rule::Guest;
use streamhost::plugin::types::{Batch, Kind, Needs, PluginInfo, Transformed, TransformedBatch};
use wasi::config::store;

/// What the rule reads from its configuration: the `[config]` table of
/// `{{name}}.toml` beside the plugin, `--plugin-config {{name}}.digits=1`, or
/// `streamhost plugins config {{name}} digits=1`. Values come as text.
struct Config {
    /// Decimals of `temperature_f` (`digits`, 2 unless configured).
    digits: usize,
}

/// The configuration, or why it is refused. Read once: it never changes
/// within an instance (a new configuration gets new instances).
fn config() -> &'static Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let digits = number("digits", 2.0)?;
        if !(0.0..=6.0).contains(&digits) || digits.fract() != 0.0 {
            return Err(format!("digits {digits} is not a whole number from 0 to 6"));
        }
        Ok(Config {
            digits: digits as usize,
        })
    })
}

/// The configuration's number for `key`, or `default` when it sets none.
fn number(key: &str, default: f64) -> Result<f64, String> {
    match store::get(key).map_err(|e| format!("reading {key}: {e:?}"))? {
        None => Ok(default),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(value),
            _ => Err(format!("{key} {text:?} is not a number")),
        },
    }
}

struct Rule;

impl Guest for Rule {
    fn describe() -> Result<PluginInfo, String> {
        // An `Err` refuses the configuration: streamhost reports the message
        // and keeps serving what it served before.
        config().as_ref().map_err(Clone::clone)?;
        Ok(PluginInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            kind: Kind::Transform,
            needs: Needs::empty(),
            // Declared windows are for trend and anomaly rules only.
            windows: Vec::new(),
            tables: Vec::new(),
        })
    }

    fn transform(batch: Batch) -> TransformedBatch {
        let n = batch.len as usize;
        let digits = match config() {
            Ok(config) => config.digits,
            Err(e) => {
                return TransformedBatch {
                    members: Vec::new(),
                    results: vec![Err(e.clone()); n],
                };
            }
        };
        let f = batch.fields.iter().position(|n| n == "temperature");
        // `merge(m)` adds the members of `members[m]` to the record without
        // the rule reading its JSON text. Members that every record gets
        // (a constant, the processing time) are pushed once and shared.
        let mut members = Vec::new();
        let results = (0..n)
            .map(|i| match f.map(|f| batch.values[f][i]) {
                // Readings without a temperature are dropped on purpose.
                Some(t) if t.is_nan() => Ok(Transformed::Drop),
                Some(t) => {
                    members.push(format!(
                        "{{\"temperature_f\":{:.*}}}",
                        digits,
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
