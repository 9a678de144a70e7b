//! {{name}}: a streamhost anomaly rule. For each record of a batch it
//! returns the alerts it raises (none, one or several), or an error that
//! sends the record to the dead-letter topic.

wit_bindgen::generate!({ world: "anomaly", path: "wit" });

use exports::streamhost::plugin::anomaly_rule::Guest;
use streamhost::plugin::types::{Alert, Batch, Kind, Needs, PluginInfo, Severity, WindowView};

const NAME: &str = "{{name}}";
const LIMIT: f64 = 30.0;

struct Rule;

impl Guest for Rule {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: "0.1.0".into(),
            kind: Kind::Anomaly,
            // Ask only for what you read: keys, JSON text and window values
            // cost time to pass in.
            needs: Needs::empty(),
        }
    }

    fn detect(batch: Batch, windows: WindowView) -> Vec<Result<Vec<Alert>, String>> {
        // Values come in columns: one list per configured field, one entry
        // per record (NaN where a record lacks the field).
        let Some(f) = batch.fields.iter().position(|n| n == "temperature") else {
            return vec![Ok(Vec::new()); batch.len as usize];
        };
        let temperature = &batch.values[f];
        let mean = &windows.fields[f].mean;
        (0..batch.len as usize)
            .map(|i| {
                let mut alerts = Vec::new();
                if temperature[i] > LIMIT {
                    alerts.push(Alert {
                        rule: NAME.into(),
                        kind: "too_hot".into(),
                        severity: Severity::High,
                        message: format!(
                            "temperature {} is above {LIMIT} (window mean {:.2})",
                            temperature[i], mean[i]
                        ),
                    });
                }
                Ok(alerts)
            })
            .collect()
    }
}

export!(Rule);
