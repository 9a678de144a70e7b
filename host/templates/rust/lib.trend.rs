//! {{name}}: a streamhost trend rule. For each record of a batch it
//! returns the direction its key's temperature is moving in (or none), or
//! an error that sends the record to the dead-letter topic. The direction
//! compares two moving averages: the last minute's mean against the mean
//! of the whole `--window`.

// `generate_all` also generates the imports from `wit/deps/`
// (`wasi:config/store`).
wit_bindgen::generate!({ world: "trend", path: "wit", generate_all });

use std::sync::OnceLock;

use exports::streamhost::plugin::trend_rule::Guest;
use streamhost::plugin::types::{
    Aggregate, Batch, Direction, Kind, Needs, PluginInfo, TrendResult, WindowSpec, WindowView,
};
use wasi::config::store;

const FIELD: &str = "temperature";

/// What the rule reads from its configuration: the `[config]` table of
/// `{{name}}.toml` beside the plugin, `--plugin-config {{name}}.stable=1`, or
/// `streamhost plugins config {{name}} stable=1`. Values come as text.
struct Config {
    /// Differences smaller than this are `stable` (`stable`, 0.5 unless
    /// configured).
    stable: f64,
}

/// The configuration, or why it is refused. Read once: it never changes
/// within an instance (a new configuration gets new instances).
fn config() -> &'static Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let stable = number("stable", 0.5)?;
        if stable < 0.0 {
            return Err(format!("stable {stable} is negative"));
        }
        Ok(Config { stable })
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
            kind: Kind::Trend,
            needs: Needs::empty(),
            // A window of its own besides the `--window` one: the last
            // minute's mean temperature, passed in `windows.declared[0]`.
            windows: vec![WindowSpec {
                length_ms: 60_000,
                fields: vec![FIELD.into()],
                aggregates: vec![Aggregate::Mean],
            }],
            tables: Vec::new(),
        })
    }

    fn trend(batch: Batch, windows: WindowView) -> Vec<Result<Option<TrendResult>, String>> {
        let n = batch.len as usize;
        let stable = match config() {
            Ok(config) => config.stable,
            Err(e) => return vec![Err(e.clone()); n],
        };
        let Some(f) = batch.fields.iter().position(|n| n == FIELD) else {
            return vec![Ok(None); n];
        };
        // The `--window` statistics of the field, and the declared window's
        // first field (temperature), one column per aggregate as declared.
        let window = &windows.fields[f];
        let minute_mean = &windows.declared[0].fields[0].columns[0];
        (0..n)
            .map(|i| {
                if windows.counts[i] < 2 {
                    return Ok(None);
                }
                let change = minute_mean[i] - window.mean[i];
                let direction = if change > stable {
                    Direction::Increasing
                } else if change < -stable {
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
