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
        kind,
        wit: "native".into(),
        needs,
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
        let members = enrich::members(b.processing_time);
        Ok((0..b.len)
            .map(|_| members.clone().map(Transformed::Merge))
            .collect())
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
                    field: "temperature".into(),
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
    let mut rand = streamhost_testkit::seeded_uniform(99);
    let t0 = 1_795_500_000_000i64;
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
    let mut p = Pipeline::new(streamhost::service::pipeline_config(&settings()));
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
