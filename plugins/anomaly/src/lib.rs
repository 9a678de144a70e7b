//! The article's anomaly rules as a streamhost `anomaly` component.
//!
//! `detect` holds the logic as plain Rust, so it is unit-tested natively and
//! the benchmark can run the very same code compiled natively; the
//! wit-bindgen glue in `component` only exists in the wasm32 build.
//!
//! Rules (from the article): temperature above 40 or below 0 is
//! `temperature_out_of_range` (high), battery level below 0.2 is
//! `low_battery` (medium), humidity above 90 is `high_humidity` (medium).
//! Each comparison is strict, so the thresholds themselves are normal, and an
//! absent field (NaN) never raises an alert.
//!
//! The four thresholds are configuration (`wasi:config/store`), with the
//! article's values as defaults: `temperature_min`, `temperature_max`,
//! `humidity_max` and `battery_min`. `describe` refuses a value that is not
//! a number, and a temperature range whose minimum is not below its maximum.

/// Version reported by `describe`.
#[cfg(not(any(feature = "traps", feature = "rejects")))]
pub const VERSION: &str = "1.0.0";
#[cfg(feature = "traps")]
pub const VERSION: &str = "1.1.0-traps";
#[cfg(feature = "rejects")]
pub const VERSION: &str = "1.1.0-rejects";

/// The `traps` build (a candidate that must be rolled back) traps on a
/// batch holding a reading whose event second is 7 modulo 20: 5% of
/// readings one second apart.
pub fn traps_on(event_time_ms: i64) -> bool {
    cfg!(feature = "traps") && traps_on_any(event_time_ms)
}

/// Whether the `traps` build traps on a reading at `event_time_ms`,
/// whatever this build is (for tests).
pub fn traps_on_any(event_time_ms: i64) -> bool {
    event_time_ms.div_euclid(1000).rem_euclid(20) == 7
}

/// Whether the `rejects` build rejects a reading at `event_time_ms`,
/// whatever this build is (for tests).
pub fn rejects_any(event_time_ms: i64) -> bool {
    event_time_ms.div_euclid(1000).rem_euclid(10) == 3
}

/// The `rejects` build (a broken version whose dead letters are replayed)
/// returns an error for readings whose event second is 3 modulo 10.
pub fn rejects(event_time_ms: i64) -> bool {
    cfg!(feature = "rejects") && rejects_any(event_time_ms)
}

/// Thresholds of the rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub temperature_min: f64,
    pub temperature_max: f64,
    pub battery_min: f64,
    pub humidity_max: f64,
}

/// The article's thresholds: those of a plugin without configuration.
pub const THRESHOLDS: Thresholds = Thresholds {
    temperature_min: 0.0,
    temperature_max: 40.0,
    battery_min: 0.2,
    humidity_max: 90.0,
};

impl Thresholds {
    /// The thresholds a configuration sets: each key's value where `get`
    /// finds one (its text), the article's where it finds none. Refused,
    /// with a message for the operator, when a value is not a finite number
    /// or the temperature range is empty.
    pub fn from_config(
        mut get: impl FnMut(&str) -> Result<Option<String>, String>,
    ) -> Result<Thresholds, String> {
        let mut t = THRESHOLDS;
        for (key, slot) in [
            ("temperature_min", &mut t.temperature_min),
            ("temperature_max", &mut t.temperature_max),
            ("humidity_max", &mut t.humidity_max),
            ("battery_min", &mut t.battery_min),
        ] {
            if let Some(text) = get(key)? {
                *slot = text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("{key} {text:?} is not a number"))?;
            }
        }
        if t.temperature_min >= t.temperature_max {
            return Err(format!(
                "temperature_min {} is not below temperature_max {}",
                t.temperature_min, t.temperature_max
            ));
        }
        Ok(t)
    }
}

/// Severity of a finding, mirroring the WIT `severity` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Medium,
    High,
}

/// Kind of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    TemperatureOutOfRange,
    LowBattery,
    HighHumidity,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TemperatureOutOfRange => "temperature_out_of_range",
            Kind::LowBattery => "low_battery",
            Kind::HighHumidity => "high_humidity",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Kind::TemperatureOutOfRange => Severity::High,
            Kind::LowBattery | Kind::HighHumidity => Severity::Medium,
        }
    }
}

/// One reading's values; NaN means absent.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub temperature: f64,
    pub humidity: f64,
    pub battery_level: f64,
}

/// Calls `found` once per anomaly kind present in `reading`, in the article's
/// order, with the kind and the offending value.
#[inline]
pub fn detect(reading: &Reading, t: &Thresholds, mut found: impl FnMut(Kind, f64)) {
    if reading.temperature > t.temperature_max || reading.temperature < t.temperature_min {
        found(Kind::TemperatureOutOfRange, reading.temperature);
    }
    if reading.battery_level < t.battery_min {
        found(Kind::LowBattery, reading.battery_level);
    }
    if reading.humidity > t.humidity_max {
        found(Kind::HighHumidity, reading.humidity);
    }
}

/// Explanation of a finding, for the alert's message.
pub fn message(kind: Kind, value: f64, t: &Thresholds) -> String {
    match kind {
        Kind::TemperatureOutOfRange => format!(
            "temperature {value} is outside [{}, {}]",
            t.temperature_min, t.temperature_max
        ),
        Kind::LowBattery => format!("battery level {value} is below {}", t.battery_min),
        Kind::HighHumidity => format!("humidity {value} is above {}", t.humidity_max),
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "anomaly", path: "../../wit", generate_all });

    use std::sync::OnceLock;

    use exports::streamhost::plugin::anomaly_rule::Guest;
    use streamhost::plugin::types::{
        Alert, Batch, Kind as PluginKind, Needs, PluginInfo, Severity, WindowView,
    };
    use wasi::config::store;

    struct Anomaly;

    /// This instance's thresholds, or why its configuration is refused.
    /// Read once: the configuration never changes within an instance.
    fn thresholds() -> &'static Result<super::Thresholds, String> {
        static THRESHOLDS: OnceLock<Result<super::Thresholds, String>> = OnceLock::new();
        THRESHOLDS.get_or_init(|| {
            super::Thresholds::from_config(|key| {
                store::get(key).map_err(|e| match e {
                    store::Error::Upstream(m) | store::Error::Io(m) => {
                        format!("reading configuration key {key}: {m}")
                    }
                })
            })
        })
    }

    fn column<'a>(batch: &'a Batch, name: &str) -> Option<&'a [f64]> {
        let f = batch.fields.iter().position(|n| n == name)?;
        batch.values.get(f).map(Vec::as_slice)
    }

    impl Guest for Anomaly {
        fn describe() -> Result<PluginInfo, String> {
            thresholds().as_ref().map_err(Clone::clone)?;
            Ok(PluginInfo {
                name: "anomaly".into(),
                version: super::VERSION.into(),
                kind: PluginKind::Anomaly,
                needs: Needs::empty(),
                windows: Vec::new(),
                tables: Vec::new(),
            })
        }

        fn detect(batch: Batch, _windows: WindowView) -> Vec<Result<Vec<Alert>, String>> {
            let n = batch.len as usize;
            // Refused configuration never serves; should it reach a call
            // anyway, every record says why.
            let t = match thresholds() {
                Ok(t) => t,
                Err(e) => return vec![Err(e.clone()); n],
            };
            let nan = vec![f64::NAN; n];
            let temperature = column(&batch, "temperature").unwrap_or(&nan);
            let humidity = column(&batch, "humidity").unwrap_or(&nan);
            let battery = column(&batch, "battery_level").unwrap_or(&nan);
            if let Some(&t) = batch.event_times.iter().find(|&&t| super::traps_on(t)) {
                panic!("the traps build traps on a reading at {t}");
            }
            (0..n)
                .map(|i| {
                    if super::rejects(batch.event_times[i]) {
                        return Err(format!(
                            "the rejects build rejects the reading at {}",
                            batch.event_times[i]
                        ));
                    }
                    let reading = super::Reading {
                        temperature: temperature[i],
                        humidity: humidity[i],
                        battery_level: battery[i],
                    };
                    let mut alerts = Vec::new();
                    super::detect(&reading, t, |kind, value| {
                        alerts.push(Alert {
                            rule: "anomaly".into(),
                            kind: kind.as_str().into(),
                            severity: match kind.severity() {
                                super::Severity::High => Severity::High,
                                super::Severity::Medium => Severity::Medium,
                            },
                            message: super::message(kind, value, t),
                        })
                    });
                    Ok(alerts)
                })
                .collect()
        }
    }

    export!(Anomaly);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(temperature: f64, humidity: f64, battery_level: f64) -> Vec<Kind> {
        let mut out = Vec::new();
        let r = Reading {
            temperature,
            humidity,
            battery_level,
        };
        detect(&r, &THRESHOLDS, |k, _| out.push(k));
        out
    }

    #[test]
    fn thresholds_are_strict() {
        assert!(kinds(40.0, 90.0, 0.2).is_empty());
        assert!(kinds(0.0, 50.0, 1.0).is_empty());
        assert_eq!(kinds(40.01, 50.0, 1.0), [Kind::TemperatureOutOfRange]);
        assert_eq!(kinds(-0.01, 50.0, 1.0), [Kind::TemperatureOutOfRange]);
        assert_eq!(kinds(20.0, 50.0, 0.19), [Kind::LowBattery]);
        assert_eq!(kinds(20.0, 90.01, 0.5), [Kind::HighHumidity]);
    }

    #[test]
    fn one_finding_per_kind_in_article_order() {
        assert_eq!(
            kinds(45.0, 95.0, 0.1),
            [
                Kind::TemperatureOutOfRange,
                Kind::LowBattery,
                Kind::HighHumidity
            ]
        );
    }

    #[test]
    fn absent_values_raise_nothing() {
        assert!(kinds(f64::NAN, f64::NAN, f64::NAN).is_empty());
    }

    #[test]
    fn severities_follow_the_article() {
        assert_eq!(Kind::TemperatureOutOfRange.severity(), Severity::High);
        assert_eq!(Kind::LowBattery.severity(), Severity::Medium);
        assert_eq!(Kind::HighHumidity.severity(), Severity::Medium);
    }

    #[test]
    fn messages_name_value_and_bounds() {
        assert_eq!(
            message(Kind::TemperatureOutOfRange, 41.5, &THRESHOLDS),
            "temperature 41.5 is outside [0, 40]"
        );
    }

    /// A configuration of `pairs`, as `wasi:config/store` would give it.
    fn config(pairs: &[(&str, &str)]) -> Result<Thresholds, String> {
        Thresholds::from_config(|key| {
            Ok(pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string()))
        })
    }

    #[test]
    fn no_configuration_gives_the_articles_thresholds() {
        assert_eq!(config(&[]), Ok(THRESHOLDS));
    }

    #[test]
    fn configuration_sets_each_threshold() {
        let t = config(&[
            ("temperature_min", "5"),
            ("temperature_max", " 30.5 "),
            ("humidity_max", "75"),
            ("battery_min", "0.3"),
            ("unrelated", "x"),
        ])
        .unwrap();
        assert_eq!(
            t,
            Thresholds {
                temperature_min: 5.0,
                temperature_max: 30.5,
                battery_min: 0.3,
                humidity_max: 75.0,
            }
        );
        assert_eq!(
            message(Kind::TemperatureOutOfRange, 35.0, &t),
            "temperature 35 is outside [5, 30.5]"
        );
        // Only what is given changes.
        let t = config(&[("temperature_max", "30")]).unwrap();
        assert_eq!((t.temperature_min, t.temperature_max), (0.0, 30.0));
        assert_eq!((t.humidity_max, t.battery_min), (90.0, 0.2));
    }

    #[test]
    fn values_that_are_not_numbers_are_refused() {
        for (key, value) in [
            ("temperature_max", "abc"),
            ("temperature_min", ""),
            ("humidity_max", "NaN"),
            ("battery_min", "inf"),
        ] {
            assert_eq!(
                config(&[(key, value)]),
                Err(format!("{key} {value:?} is not a number"))
            );
        }
        assert_eq!(
            config(&[("temperature_max", "abc")]).unwrap_err(),
            r#"temperature_max "abc" is not a number"#
        );
    }

    #[test]
    fn an_empty_temperature_range_is_refused() {
        assert_eq!(
            config(&[("temperature_min", "30"), ("temperature_max", "5")]),
            Err("temperature_min 30 is not below temperature_max 5".into())
        );
        assert_eq!(
            config(&[("temperature_min", "40")]),
            Err("temperature_min 40 is not below temperature_max 40".into())
        );
    }

    #[test]
    fn a_store_error_is_passed_on() {
        let e = Thresholds::from_config(|key| Err(format!("{key}: unavailable")));
        assert_eq!(e, Err("temperature_min: unavailable".into()));
    }
}
