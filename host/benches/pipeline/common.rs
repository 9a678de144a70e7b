//! What the sections share: the example rules compiled natively, the
//! components, generated records and settings.

use super::*;

pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// ---------------------------------------------------------------- native rules

pub fn info(name: &str, kind: Kind, needs: Needs) -> PluginInfo {
    PluginInfo {
        name: name.into(),
        version: "1.0.0".into(),
        rule_version: "1.0.0".into(),
        config: Default::default(),
        config_digest: None,
        kind,
        wit: "native".into(),
        needs,
        windows: Vec::new(),
        tables: Vec::new(),
        sha256: String::new(),
        compiled_from: streamhost::rules::runtime::CompiledFrom::Compiled,
        load_seconds: 0.0,
    }
}

pub struct NativeEnrich(PluginInfo);
pub struct NativeTrend(PluginInfo);
pub struct NativeAnomaly(PluginInfo);

impl Rule for NativeEnrich {
    fn info(&self) -> &PluginInfo {
        &self.0
    }
    fn transform(&self, b: &Batch) -> Result<TransformResults, CallError> {
        // As the component answers: the members once, shared by every record.
        let members = enrich::members(b.processing_time).map(|m| Change::Merge(m.into()));
        Ok(vec![members; b.len as usize])
    }
}

impl Rule for NativeTrend {
    fn info(&self) -> &PluginInfo {
        &self.0
    }
    fn trend(&self, b: &Batch, w: &WindowView) -> Result<TrendResults, CallError> {
        let f = b.fields.iter().position(|n| n == "temperature").unwrap();
        let (fw, k) = (&w.fields[f], w.k as usize);
        Ok((0..b.len as usize)
            .map(|i| {
                let (d, change) = trend::trend(
                    w.counts[i] as usize,
                    &fw.head[i * k..i * k + k],
                    &fw.tail[i * k..i * k + k],
                );
                Ok(Some(TrendResult {
                    field: f as u32,
                    direction: match d {
                        trend::Direction::Increasing => streamhost::contract::Direction::Increasing,
                        trend::Direction::Decreasing => streamhost::contract::Direction::Decreasing,
                        trend::Direction::Stable => streamhost::contract::Direction::Stable,
                    },
                    change,
                }))
            })
            .collect())
    }
}

impl Rule for NativeAnomaly {
    fn info(&self) -> &PluginInfo {
        &self.0
    }
    fn detect(&self, b: &Batch, _w: &WindowView) -> Result<AnomalyResults, CallError> {
        let col = |name: &str| &b.values[b.fields.iter().position(|n| n == name).unwrap()];
        let (t, h, bat) = (col("temperature"), col("humidity"), col("battery_level"));
        let th = &anomaly::THRESHOLDS;
        Ok((0..b.len as usize)
            .map(|i| {
                let mut alerts = Vec::new();
                let r = anomaly::Reading {
                    temperature: t[i],
                    humidity: h[i],
                    battery_level: bat[i],
                };
                anomaly::detect(&r, th, |kind, value| {
                    alerts.push(Alert {
                        rule: "anomaly".into(),
                        kind: kind.as_str().into(),
                        severity: match kind.severity() {
                            anomaly::Severity::High => Severity::High,
                            anomaly::Severity::Medium => Severity::Medium,
                        },
                        message: anomaly::message(kind, value, th),
                    })
                });
                Ok(alerts)
            })
            .collect())
    }
}

pub fn native_rules() -> RuleSet {
    let mut r = RuleSet::default();
    r.push(Arc::new(NativeEnrich(info(
        "enrich",
        Kind::Transform,
        Needs::empty(),
    ))));
    r.push(Arc::new(NativeTrend(info(
        "trend",
        Kind::Trend,
        Needs::WINDOW_VALUES,
    ))));
    r.push(Arc::new(NativeAnomaly(info(
        "anomaly",
        Kind::Anomaly,
        Needs::empty(),
    ))));
    r
}

/// `native_rules`, the anomaly rule declaring two windows besides
/// `--window`, as a moving-average and z-score rule would: 1 minute of
/// temperature (mean) and 15 minutes (mean, stddev, p95, slope).
pub fn native_rules_declaring() -> RuleSet {
    use streamhost::contract::{Aggregate, WindowSpec};
    let mut r = native_rules();
    let mut info = info("anomaly", Kind::Anomaly, Needs::empty());
    let temperature = vec!["temperature".to_string()];
    info.windows = vec![
        WindowSpec {
            length_ms: 60_000,
            fields: temperature.clone(),
            aggregates: vec![Aggregate::Mean],
        },
        WindowSpec {
            length_ms: 900_000,
            fields: temperature,
            aggregates: vec![
                Aggregate::Mean,
                Aggregate::Stddev,
                Aggregate::P95,
                Aggregate::Slope,
            ],
        },
    ];
    r.anomaly = vec![Arc::new(NativeAnomaly(info))];
    r
}

pub fn wasm_rules(runtime: &Runtime) -> RuleSet {
    let mut r = RuleSet::default();
    for name in ["enrich", "trend", "anomaly"] {
        let path = root().join("target/plugins").join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask plugins`", path.display()));
        r.push(Arc::new(runtime.load(&bytes, name).unwrap()));
    }
    r
}

// ---------------------------------------------------------------- data

/// `n` readings like the article's producer, `sensors` sensors one second
/// apart, with about 5% out of range.
pub fn records(n: usize, sensors: usize) -> Vec<InRecord> {
    records_from(n, sensors, 1_795_500_000_000)
}

/// `records`, with the first readings at `t0` (epoch ms).
pub fn records_from(n: usize, sensors: usize, t0: i64) -> Vec<InRecord> {
    let mut rand = streamhost_testkit::seeded_uniform(99);
    (0..n)
        .map(|i| {
            let sensor = format!("sensor_{:05}", i % sensors);
            let mut temperature = 18.0 + rand() * 17.0;
            if rand() < 0.05 {
                temperature = 45.0;
            }
            let ts = chrono::DateTime::from_timestamp_millis(t0 + (i / sensors) as i64 * 1000).unwrap();
            let payload = format!(
                r#"{{"sensor_id":"{sensor}","timestamp":"{}","temperature":{:.2},"humidity":{:.2},"pressure":{:.2},"location":{{"latitude":{:.6},"longitude":{:.6}}},"battery_level":{:.2}}}"#,
                ts.format("%Y-%m-%dT%H:%M:%S%.3f"),
                temperature,
                30.0 + rand() * 50.0,
                1000.0 + rand() * 20.0,
                40.0 + rand(),
                -74.0 + rand(),
                0.25 + rand() * 0.75
            );
            InRecord { partition: (i % 3) as i32, offset: i as i64, timestamp: None, key: Some(sensor.into_bytes()), payload: Some(payload.into_bytes()) }
        })
        .collect()
}

pub fn settings() -> Settings {
    Settings::resolve(RunArgs::default()).unwrap()
}

/// Runs the pipeline over `input` in batches; returns seconds.
pub fn run_pipeline(rules: &RuleSet, input: &[InRecord], batch: usize) -> f64 {
    run_pipeline_shaped(rules, input, batch, streamhost::output::Shape::Full)
}

/// `run_pipeline` with enriched records of `shape`.
pub fn run_pipeline_shaped(
    rules: &RuleSet,
    input: &[InRecord],
    batch: usize,
    shape: streamhost::output::Shape,
) -> f64 {
    let mut cfg = streamhost::cmd::wiring::pipeline_config(&settings());
    cfg.shape = shape;
    let mut p = Pipeline::new(cfg);
    let started = Instant::now();
    let mut outputs = 0;
    for chunk in input.chunks(batch) {
        let out = p.process(rules, chunk.to_vec(), 1_795_500_000_000);
        outputs += out.records.len();
    }
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(outputs);
    secs
}

/// The median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The smallest and largest of `v`.
pub fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// A ratio measured over interleaved rounds: one value per round, so the
/// noise of the machine shows as the spread rather than hiding in a best
/// run.
pub struct Ratio {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    pub rounds: usize,
    /// What the ratio is compared against for the warning: 1.0 for "is A
    /// different from B".
    pub against: f64,
}

impl Ratio {
    /// Per-round `num[i] / den[i]`.
    pub fn of(num: &[f64], den: &[f64]) -> Ratio {
        let mut r: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
        let (lo, hi) = spread(&r);
        Ratio {
            median: median(&mut r),
            lo,
            hi,
            rounds: r.len(),
            against: 1.0,
        }
    }

    /// "**0.93×** median, spread 0.90–0.95 over 11 rounds".
    pub fn text(&self) -> String {
        format!(
            "**{:.2}** median, spread {:.2}–{:.2} over {} rounds",
            self.median, self.lo, self.hi, self.rounds
        )
    }

    /// A warning line when the spread is larger than the effect (the
    /// median's distance from `against`): the figure is not to be trusted.
    pub fn warning(&self) -> Option<String> {
        let effect = (self.median - self.against).abs();
        (self.hi - self.lo > effect).then(|| {
            format!(
                "**Warning:** the spread ({:.2}) is larger than the effect ({:.2}); the machine was too noisy for this ratio.",
                self.hi - self.lo,
                effect
            )
        })
    }

    /// Writes the ratio's line, and its warning if any, to `report`.
    pub fn report(&self, report: &mut Report, what: &str) {
        report.line(format!("{what}: {}.", self.text()));
        if let Some(w) = self.warning() {
            report.line(format!("\n{w}"));
        }
    }
}

/// Median and spread of per-round seconds as ns per record:
/// `(median, lo, hi)`.
pub fn ns_per_record(secs: &[f64], n: usize) -> (f64, f64, f64) {
    let per: Vec<f64> = secs.iter().map(|t| t / n as f64 * 1e9).collect();
    let (lo, hi) = spread(&per);
    (median(&mut per.clone()), lo, hi)
}

/// Records/s of each round of `n` records taking `secs`: `(median, lo, hi)`.
pub fn rates(n: usize, secs: &[f64]) -> (f64, f64, f64) {
    let r: Vec<f64> = secs.iter().map(|t| n as f64 / t).collect();
    let (lo, hi) = spread(&r);
    (median(&mut r.clone()), lo, hi)
}
