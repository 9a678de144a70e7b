//! {{name}}: a streamhost anomaly rule. For each record of a batch it
//! returns the alerts it raises (none, one or several), or an error that
//! sends the record to the dead-letter topic.

// `generate_all` also generates the imports from `wit/deps/`
// (`wasi:config/store`).
wit_bindgen::generate!({ world: "anomaly", path: "wit", generate_all });

use std::sync::OnceLock;

use exports::streamhost::plugin::anomaly_rule::Guest;
use streamhost::plugin::types::{
    Aggregate, Alert, Batch, Kind, Needs, PluginInfo, Severity, WindowSpec, WindowView,
};
use wasi::config::store;

const NAME: &str = "{{name}}";

/// What the rule reads from its configuration: the `[config]` table of
/// `{{name}}.toml` beside the plugin, `--plugin-config {{name}}.limit=35`, or
/// `streamhost plugins config {{name}} limit=35`. Values come as text.
struct Config {
    /// Alert above this temperature (`limit`, 30 unless configured).
    limit: f64,
}

/// The configuration, or why it is refused. Read once: it never changes
/// within an instance (a new configuration gets new instances).
fn config() -> &'static Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Ok(Config {
            limit: number("limit", 30.0)?,
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
            name: NAME.into(),
            version: "0.1.0".into(),
            kind: Kind::Anomaly,
            // Ask only for what you read: keys, JSON text and window values
            // cost time to pass in.
            needs: Needs::empty(),
            // A window of its own besides the `--window` one: the last
            // minute's mean and standard deviation of the temperature,
            // passed in `windows.declared[0]`.
            windows: vec![WindowSpec {
                length_ms: 60_000,
                fields: vec!["temperature".into()],
                aggregates: vec![Aggregate::Mean, Aggregate::Stddev],
            }],
            tables: Vec::new(),
        })
    }

    fn detect(batch: Batch, windows: WindowView) -> Vec<Result<Vec<Alert>, String>> {
        let n = batch.len as usize;
        let limit = match config() {
            Ok(config) => config.limit,
            Err(e) => return vec![Err(e.clone()); n],
        };
        // Values come in columns: one list per configured field, one entry
        // per record (NaN where a record lacks the field).
        let Some(f) = batch.fields.iter().position(|n| n == "temperature") else {
            return vec![Ok(Vec::new()); n];
        };
        let temperature = &batch.values[f];
        // The declared window's first field (temperature): one column per
        // aggregate, in the order declared.
        let minute = &windows.declared[0].fields[0].columns;
        let (mean, stddev) = (&minute[0], &minute[1]);
        (0..n)
            .map(|i| {
                let mut alerts = Vec::new();
                if temperature[i] > limit {
                    alerts.push(Alert {
                        rule: NAME.into(),
                        kind: "too_hot".into(),
                        severity: Severity::High,
                        message: format!(
                            "temperature {} is above {limit} (last minute: mean {:.2}, stddev {:.2})",
                            temperature[i], mean[i], stddev[i]
                        ),
                    });
                }
                Ok(alerts)
            })
            .collect()
    }
}

export!(Rule);
