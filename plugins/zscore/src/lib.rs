//! zscore: an example `anomaly` rule in Rust that declares a window of its
//! own and reads its configuration (see docs/rules-cookbook.md).
//!
//! It declares one window of `window_ms` over `temperature` with the
//! aggregates [count, mean, stddev], and raises `temperature_zscore`
//! (medium) for a reading whose distance from that window's mean is more
//! than `z_max` standard deviations, once the window holds at least
//! `min_count` temperatures:
//!
//! | key         | default | meaning                                      |
//! |-------------|---------|----------------------------------------------|
//! | `window_ms` | 300000  | length of the declared window (5 minutes)    |
//! | `z_max`     | 3.0     | alert above this many standard deviations    |
//! | `min_count` | 10      | fewer temperatures in the window: no verdict |
//!
//! `describe` refuses a value that is not a number, a window outside 1 ms
//! to 7 days, a `z_max` not above 0 and a `min_count` below 2.
//!
//! A reading is part of its own window, so with n values its z-score is at
//! most sqrt(n - 1): with `z_max` 3 nothing can alert below 11 readings.
//!
//! The logic is plain Rust, unit-tested natively; the wit-bindgen glue in
//! `component` only exists in the wasm32 build (`cargo test -p zscore`
//! runs the rest); `cargo xtask plugins` builds it into
//! `target/plugins/zscore.wasm`.

/// Version reported by `describe`.
pub const VERSION: &str = "1.0.0";
/// Name reported by `describe`, and the rule of its alerts.
pub const NAME: &str = "zscore";
/// The alert kind.
pub const KIND: &str = "temperature_zscore";
/// The field the rule reads.
pub const FIELD: &str = "temperature";
/// The longest window a rule may declare: 7 days.
pub const MAX_WINDOW_MS: u32 = 7 * 86_400_000;

/// The rule's configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    pub window_ms: u32,
    pub z_max: f64,
    pub min_count: u32,
}

/// The configuration of a plugin given none.
pub const DEFAULTS: Config = Config {
    window_ms: 300_000,
    z_max: 3.0,
    min_count: 10,
};

/// `text` as a finite number, or why not.
fn number(key: &str, text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{key} {text:?} is not a number"))
}

/// `text` as a whole number from `min` to `max`, or why not.
fn whole(key: &str, text: &str, min: u32, max: u32, what: &str) -> Result<u32, String> {
    let v = number(key, text)?;
    if v.fract() != 0.0 || v < f64::from(min) || v > f64::from(max) {
        return Err(format!("{key} {v} is not {what}"));
    }
    Ok(v as u32)
}

impl Config {
    /// The configuration `get` gives (each key's text, or `None` where it
    /// sets none, which keeps the default), or why it is refused.
    pub fn from_config(
        mut get: impl FnMut(&str) -> Result<Option<String>, String>,
    ) -> Result<Config, String> {
        let mut c = DEFAULTS;
        if let Some(text) = get("window_ms")? {
            c.window_ms = whole(
                "window_ms",
                &text,
                1,
                MAX_WINDOW_MS,
                "a whole number of milliseconds from 1 to 604800000 (7 days)",
            )?;
        }
        if let Some(text) = get("z_max")? {
            c.z_max = number("z_max", &text)?;
            if c.z_max <= 0.0 {
                return Err(format!("z_max {} is not above 0", c.z_max));
            }
        }
        if let Some(text) = get("min_count")? {
            c.min_count = whole(
                "min_count",
                &text,
                2,
                u32::MAX,
                "a whole number of at least 2",
            )?;
        }
        Ok(c)
    }
}

/// What the declared window says for one record: its aggregates in the
/// order declared.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub count: f64,
    pub mean: f64,
    pub stddev: f64,
}

/// The z-score of `x` in `w` when it calls for an alert under `c`: at least
/// `min_count` values, a spread (stddev above 0), and |z| above `z_max`.
/// An absent reading (NaN) never alerts.
pub fn zscore(x: f64, w: &Window, c: &Config) -> Option<f64> {
    if !(w.count >= f64::from(c.min_count) && w.stddev > 0.0) {
        return None;
    }
    let z = (x - w.mean) / w.stddev;
    (z.abs() > c.z_max).then_some(z)
}

/// A window length for people: `5 min`, `90 s`, `1500 ms`.
pub fn span(ms: u32) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// The alert's message.
pub fn message(x: f64, z: f64, w: &Window, c: &Config) -> String {
    format!(
        "temperature {x} is {:.2} standard deviations {} the {} mean {:.2} (stddev {:.2} over {} readings)",
        z.abs(),
        if z > 0.0 { "above" } else { "below" },
        span(c.window_ms),
        w.mean,
        w.stddev,
        w.count,
    )
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "anomaly", path: "../../wit", generate_all });

    use std::sync::OnceLock;

    use exports::streamhost::plugin::anomaly_rule::Guest;
    use streamhost::plugin::types::{
        Aggregate, Alert, Batch, Kind, Needs, PluginInfo, Severity, WindowSpec, WindowView,
    };
    use wasi::config::store;

    struct ZScore;

    /// This instance's configuration, or why it is refused. Read once: the
    /// configuration never changes within an instance.
    fn config() -> &'static Result<super::Config, String> {
        static CONFIG: OnceLock<Result<super::Config, String>> = OnceLock::new();
        CONFIG.get_or_init(|| {
            super::Config::from_config(|key| {
                store::get(key).map_err(|e| match e {
                    store::Error::Upstream(m) | store::Error::Io(m) => {
                        format!("reading configuration key {key}: {m}")
                    }
                })
            })
        })
    }

    impl Guest for ZScore {
        fn describe() -> Result<PluginInfo, String> {
            let c = config().as_ref().map_err(Clone::clone)?;
            Ok(PluginInfo {
                name: super::NAME.into(),
                version: super::VERSION.into(),
                kind: Kind::Anomaly,
                needs: Needs::empty(),
                windows: vec![WindowSpec {
                    length_ms: c.window_ms,
                    fields: vec![super::FIELD.into()],
                    aggregates: vec![Aggregate::Count, Aggregate::Mean, Aggregate::Stddev],
                }],
                tables: Vec::new(),
            })
        }

        fn detect(batch: Batch, windows: WindowView) -> Vec<Result<Vec<Alert>, String>> {
            let n = batch.len as usize;
            let c = match config() {
                Ok(c) => c,
                Err(e) => return vec![Err(e.clone()); n],
            };
            // The declared window's one field, one column per aggregate.
            let Some([count, mean, stddev]) = windows
                .declared
                .first()
                .and_then(|w| w.fields.first())
                .and_then(|f| <&[Vec<f64>; 3]>::try_from(f.columns.as_slice()).ok())
            else {
                return vec![Err("the host passed no declared window".into()); n];
            };
            let Some(x) = batch
                .fields
                .iter()
                .position(|name| name == super::FIELD)
                .map(|f| &batch.values[f])
            else {
                return vec![Ok(Vec::new()); n];
            };
            (0..n)
                .map(|i| {
                    let w = super::Window {
                        count: count[i],
                        mean: mean[i],
                        stddev: stddev[i],
                    };
                    Ok(super::zscore(x[i], &w, c)
                        .map(|z| Alert {
                            rule: super::NAME.into(),
                            kind: super::KIND.into(),
                            severity: Severity::Medium,
                            message: super::message(x[i], z, &w, c),
                        })
                        .into_iter()
                        .collect())
                })
                .collect()
        }
    }

    export!(ZScore);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration of `pairs`, as `wasi:config/store` would give it.
    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_config(|key| {
            Ok(pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string()))
        })
    }

    fn window(count: f64, mean: f64, stddev: f64) -> Window {
        Window {
            count,
            mean,
            stddev,
        }
    }

    #[test]
    fn no_configuration_gives_the_defaults() {
        assert_eq!(config(&[]), Ok(DEFAULTS));
        assert_eq!(
            DEFAULTS,
            Config {
                window_ms: 300_000,
                z_max: 3.0,
                min_count: 10
            }
        );
    }

    #[test]
    fn configuration_sets_each_key() {
        assert_eq!(
            config(&[
                ("window_ms", "60000"),
                ("z_max", " 2.5 "),
                ("min_count", "30"),
                ("unrelated", "x"),
            ]),
            Ok(Config {
                window_ms: 60_000,
                z_max: 2.5,
                min_count: 30
            })
        );
        assert_eq!(config(&[("z_max", "4")]).unwrap().window_ms, 300_000);
        assert_eq!(
            config(&[("window_ms", "604800000")]).unwrap().window_ms,
            MAX_WINDOW_MS
        );
    }

    #[test]
    fn values_that_are_not_numbers_are_refused() {
        for (key, value) in [
            ("window_ms", "5m"),
            ("z_max", "abc"),
            ("z_max", "NaN"),
            ("min_count", ""),
            ("window_ms", "inf"),
        ] {
            assert_eq!(
                config(&[(key, value)]),
                Err(format!("{key} {value:?} is not a number"))
            );
        }
        assert_eq!(
            config(&[("z_max", "abc")]),
            Err(r#"z_max "abc" is not a number"#.into())
        );
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let window = "is not a whole number of milliseconds from 1 to 604800000 (7 days)";
        assert_eq!(
            config(&[("window_ms", "0")]),
            Err(format!("window_ms 0 {window}"))
        );
        assert_eq!(
            config(&[("window_ms", "1.5")]),
            Err(format!("window_ms 1.5 {window}"))
        );
        assert_eq!(
            config(&[("window_ms", "604800001")]),
            Err(format!("window_ms 604800001 {window}"))
        );
        assert_eq!(
            config(&[("z_max", "0")]),
            Err("z_max 0 is not above 0".into())
        );
        assert_eq!(
            config(&[("z_max", "-1")]),
            Err("z_max -1 is not above 0".into())
        );
        assert_eq!(
            config(&[("min_count", "1")]),
            Err("min_count 1 is not a whole number of at least 2".into())
        );
    }

    #[test]
    fn a_store_error_is_passed_on() {
        let e = Config::from_config(|key| Err(format!("{key}: unavailable")));
        assert_eq!(e, Err("window_ms: unavailable".into()));
    }

    #[test]
    fn alerts_beyond_z_max_either_way_and_not_on_it() {
        let w = window(20.0, 20.0, 2.0);
        assert_eq!(zscore(27.0, &w, &DEFAULTS), Some(3.5));
        assert_eq!(zscore(13.0, &w, &DEFAULTS), Some(-3.5));
        // Exactly 3 standard deviations is not beyond 3.
        assert_eq!(zscore(26.0, &w, &DEFAULTS), None);
        assert_eq!(zscore(14.0, &w, &DEFAULTS), None);
        assert_eq!(zscore(21.0, &w, &DEFAULTS), None);
    }

    #[test]
    fn too_few_values_no_spread_or_no_reading_give_no_verdict() {
        assert_eq!(zscore(40.0, &window(9.0, 20.0, 2.0), &DEFAULTS), None);
        assert_eq!(
            zscore(40.0, &window(10.0, 20.0, 2.0), &DEFAULTS),
            Some(10.0)
        );
        assert_eq!(zscore(20.0, &window(50.0, 20.0, 0.0), &DEFAULTS), None);
        assert_eq!(zscore(f64::NAN, &window(50.0, 20.0, 2.0), &DEFAULTS), None);
        // A window without temperatures: count 0, mean and stddev NaN.
        assert_eq!(
            zscore(20.0, &window(0.0, f64::NAN, f64::NAN), &DEFAULTS),
            None
        );
        let lenient = Config {
            min_count: 2,
            ..DEFAULTS
        };
        assert_eq!(zscore(40.0, &window(2.0, 20.0, 2.0), &lenient), Some(10.0));
    }

    #[test]
    fn messages_name_value_distance_and_window() {
        let w = window(40.0, 22.0, 2.5);
        assert_eq!(
            message(31.5, 3.8, &w, &DEFAULTS),
            "temperature 31.5 is 3.80 standard deviations above the 5 min mean 22.00 (stddev 2.50 over 40 readings)"
        );
        let c = Config {
            window_ms: 90_000,
            ..DEFAULTS
        };
        assert_eq!(
            message(12.0, -4.0, &w, &c),
            "temperature 12 is 4.00 standard deviations below the 90 s mean 22.00 (stddev 2.50 over 40 readings)"
        );
    }

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(span(300_000), "5 min");
        assert_eq!(span(7_200_000), "2 h");
        assert_eq!(span(90_000), "90 s");
        assert_eq!(span(1_500), "1500 ms");
    }
}
