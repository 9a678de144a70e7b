//! `cargo xtask bench`: streamhost measured against its limits, each
//! comparison run back to back on the same data in one process so that the
//! ratios hold on a noisy machine. Prints a markdown report and writes it to
//! `target/bench/report.md`.
//!
//! 1. WASM against native, in process: the whole per-record path with the
//!    example rules as components, and with the same rule code compiled in.
//! 2. End to end against the broker: streamhost against a pass-through built
//!    from the same source and sink, on the same pre-loaded topic; then the
//!    latency from the producer's timestamp to the alert at half that rate.
//! 3. Windows: bytes per retained reading and resident memory.

#[path = "../../xtask/src/broker.rs"]
mod broker;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use streamhost::config::{RunArgs, Settings};
use streamhost::pipeline::Pipeline;
use streamhost::record::InRecord;
use streamhost::rules::{Rule, RuleSet};
use streamhost::contract::{
    Alert, AnomalyResults, Batch, Needs, Severity, TransformResults, Transformed, TrendResult, TrendResults, WindowView,
};
use streamhost::rules::runtime::{CallError, Kind, Limits, PluginInfo, Runtime};
use streamhost::window::{ViewBuilder, WindowConfig, Windows};

/// Counts live heap bytes, for the window-memory figures.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

// ---------------------------------------------------------------- native rules

fn info(name: &str, kind: Kind, needs: Needs) -> PluginInfo {
    PluginInfo { name: name.into(), version: "1.0.0".into(), kind, wit: "native".into(), needs, sha256: String::new() }
}

struct NativeEnrich(PluginInfo);
struct NativeTrend(PluginInfo);
struct NativeAnomaly(PluginInfo);

impl Rule for NativeEnrich {
    fn info(&self) -> &PluginInfo {
        &self.0
    }
    fn transform(&self, b: &Batch) -> Result<TransformResults, CallError> {
        let members = enrich::members(b.processing_time);
        Ok((0..b.len).map(|_| members.clone().map(Transformed::Merge)).collect())
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
                let (d, change) = trend::trend(w.counts[i] as usize, &fw.head[i * k..i * k + k], &fw.tail[i * k..i * k + k]);
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
                let r = anomaly::Reading { temperature: t[i], humidity: h[i], battery_level: bat[i] };
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

fn native_rules() -> RuleSet {
    let mut r = RuleSet::default();
    r.push(Arc::new(NativeEnrich(info("enrich", Kind::Transform, Needs::empty()))));
    r.push(Arc::new(NativeTrend(info("trend", Kind::Trend, Needs::WINDOW_VALUES))));
    r.push(Arc::new(NativeAnomaly(info("anomaly", Kind::Anomaly, Needs::empty()))));
    r
}

fn wasm_rules(runtime: &Runtime) -> RuleSet {
    let mut r = RuleSet::default();
    for name in ["enrich", "trend", "anomaly"] {
        let path = root().join("target/plugins").join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask plugins`", path.display()));
        r.push(Arc::new(runtime.load(&bytes, name).unwrap()));
    }
    r
}

// ---------------------------------------------------------------- data

/// `n` readings like the article's producer, `sensors` sensors one second
/// apart, with about 5% out of range.
fn records(n: usize, sensors: usize) -> Vec<InRecord> {
    let mut seed = 99u64;
    let mut rand = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
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
            InRecord { partition: (i % 3) as i32, offset: i as i64, key: Some(sensor.into_bytes()), payload: Some(payload.into_bytes()) }
        })
        .collect()
}

fn settings() -> Settings {
    Settings::resolve(RunArgs::default()).unwrap()
}

/// Runs the pipeline over `input` in batches; returns seconds.
fn run_pipeline(rules: &RuleSet, input: &[InRecord], batch: usize) -> f64 {
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

/// Best of `reps` runs of `f` (seconds): the least disturbed one.
fn best(reps: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..reps).map(|_| f()).fold(f64::INFINITY, f64::min)
}

struct Report {
    text: String,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }
}

fn in_process(report: &mut Report, n: usize) {
    let input = records(n, 1000);
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wasm = wasm_rules(&runtime);
    let native = native_rules();
    let none = RuleSet::default();
    let batch = 1000;
    // Warm up both (page faults, caches, first instantiation).
    run_pipeline(&wasm, &input[..n.min(20_000)], batch);
    run_pipeline(&native, &input[..n.min(20_000)], batch);
    let (mut t_wasm, mut t_native, mut t_none) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        t_native = t_native.min(run_pipeline(&native, &input, batch));
        t_wasm = t_wasm.min(run_pipeline(&wasm, &input, batch));
        t_none = t_none.min(run_pipeline(&none, &input, batch));
    }
    let schema = streamhost::service::pipeline_config(&settings()).schema;
    let t_decode = best(3, || {
        let started = Instant::now();
        for r in &input {
            std::hint::black_box(streamhost::decode::decode(&schema, r.payload.as_deref().unwrap()).unwrap());
        }
        started.elapsed().as_secs_f64()
    });
    let decoded: Vec<_> = input.iter().map(|r| streamhost::decode::decode(&schema, r.payload.as_deref().unwrap()).unwrap()).collect();
    let t_window = best(3, || {
        let mut w = Windows::new(WindowConfig { length_ms: 300_000, lateness_ms: 30_000, k: 3, fields: 4, idle_ms: 600_000 });
        let started = Instant::now();
        for chunk in decoded.chunks(batch) {
            let mut view = ViewBuilder::new(4, 3, true, chunk.len());
            for d in chunk {
                w.insert(0, &d.key, d.time_ms, &d.values, &mut view).unwrap();
            }
            std::hint::black_box(view.view);
        }
        started.elapsed().as_secs_f64()
    });
    let per = |t: f64| t / n as f64 * 1e9;
    let rate = |t: f64| n as f64 / t;
    report.line(format!("### 1. WASM against native, in process ({n} records, batches of {batch}, best of 3)\n"));
    report.line("| path | records/s | ns/record |");
    report.line("|---|---:|---:|");
    report.line(format!("| native rules (baseline) | {:.0} | {:.0} |", rate(t_native), per(t_native)));
    report.line(format!("| WASM components | {:.0} | {:.0} |", rate(t_wasm), per(t_wasm)));
    report.line(format!("| **ratio WASM / native** | **{:.2}** | |", t_native / t_wasm));
    report.line("");
    report.line("Cost per record by stage (differences between runs of the same data):\n");
    report.line("| stage | ns/record |");
    report.line("|---|---:|");
    report.line(format!("| decode (JSON, once) | {:.0} |", per(t_decode)));
    report.line(format!("| window update + view | {:.0} |", per(t_window)));
    report.line(format!(
        "| rest of the path without rules (routing, encode outputs) | {:.0} |",
        per(t_none - t_decode - t_window).max(0.0)
    ));
    report.line(format!("| three rules, native (incl. batch building, merge) | {:.0} |", per(t_native - t_none)));
    report.line(format!("| three rules, WASM (incl. batch building, merge) | {:.0} |", per(t_wasm - t_none)));
    report.line("");
}

fn windows_memory(report: &mut Report, keys: usize, per_key: usize) {
    let rss = || -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
    };
    let names: Vec<String> = (0..keys).map(|k| format!("sensor_{k:06}")).collect();
    let mut level = vec![20.0f64; keys];
    let live_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss();
    let mut w = Windows::new(WindowConfig { length_ms: 300_000, lateness_ms: 30_000, k: 3, fields: 4, idle_ms: 600_000 });
    // Sensor-like values: a random walk per key.
    let mut seed = 7u64;
    let mut rand = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let started = Instant::now();
    for s in 0..per_key {
        let mut view = ViewBuilder::new(4, 3, false, keys);
        for (k, name) in names.iter().enumerate() {
            level[k] += rand();
            let v = level[k];
            w.insert(0, name, 1_795_500_000_000 + s as i64 * 1000, &[v, v * 2.0, 1000.0 + v, 0.5 + v / 100.0], &mut view).unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let readings = w.readings();
    let live = LIVE.load(Ordering::Relaxed) - live_before;
    let rss_after = rss();
    report.line(format!(
        "### 3. Windows ({keys} keys × {per_key} readings: 5 minutes at 1 reading/s, 4 fields)\n"
    ));
    report.line("| measure | value |");
    report.line("|---|---:|");
    report.line(format!("| readings retained | {readings} |"));
    report.line(format!("| heap bytes per retained reading (all window state incl. keys) | {:.1} |", live as f64 / readings as f64));
    report.line(format!(
        "| resident memory added (pages touched; ring-buffer slack not yet written is not resident) | {:.0} MiB |",
        (rss_after.saturating_sub(rss_before)) as f64 / (1 << 20) as f64
    ));
    report.line(format!("| inserts/s (with eviction) | {:.0} |", (keys * per_key) as f64 / elapsed));
    report.line("");
    drop(w);
}

// ---------------------------------------------------------------- end to end

fn e2e_settings(brokers: &str, input: &str, tag: &str, max: u64) -> Settings {
    let plugins = ["enrich", "trend", "anomaly"].map(|n| root().join("target/plugins").join(format!("{n}.wasm")));
    Settings::resolve(RunArgs {
        brokers: Some(brokers.into()),
        input_topic: Some(input.into()),
        group: Some(format!("bench-{tag}-{}", std::process::id())),
        enriched_topic: Some(format!("{input}-enriched")),
        alerts_topic: Some(format!("{input}-alerts")),
        dlq_topic: Some(format!("{input}-dlq")),
        plugins: plugins.to_vec(),
        admin: Some("127.0.0.1:0".into()),
        max_records: Some(max),
        ..RunArgs::default()
    })
    .unwrap()
}

async fn preload(brokers: &str, topic: &str, input: &[InRecord]) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .unwrap();
    let mut futs = Vec::with_capacity(input.len());
    for r in input {
        let rec = FutureRecord::to(topic).key(r.key.as_deref().unwrap()).payload(r.payload.as_deref().unwrap());
        futs.push(p.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for f in futs {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// The pass-through: streamhost's own source, sink and committer, with the
/// pipeline replaced by copying each input to `fanout` outputs.
async fn pass_through(settings: Settings, fanout: f64, out_bytes: usize) -> f64 {
    use streamhost::record::{Dest, OutRecord};
    use streamhost::kafka::committer::{Committer, Pending};
    use streamhost::kafka::producer::KafkaSink as Sink;
    use streamhost::kafka::consumer::KafkaSource as Source;
    let source = Source::new(&settings, Arc::default()).unwrap();
    let sink = Arc::new(Sink::new(&settings).unwrap());
    let committer = Committer::start(&source, sink.clone(), 8);
    let limit = settings.max_records.unwrap();
    let mut done = 0u64;
    let mut owed = 0.0;
    let mut started = None;
    while done < limit {
        let batch = source.next_batch(settings.batch_size.min((limit - done) as usize), settings.batch_wait).await.unwrap();
        started.get_or_insert_with(Instant::now);
        let next = streamhost::kafka::batch_offsets(&batch);
        let mut out = Vec::with_capacity(batch.len() * 2);
        for r in &batch {
            owed += fanout;
            while owed >= 1.0 {
                owed -= 1.0;
                // A copy of the input, padded to streamhost's average output size.
                let mut payload = r.payload.clone().unwrap_or_default();
                payload.resize(out_bytes.max(payload.len()), b' ');
                out.push(OutRecord { dest: Dest::Enriched, source: (r.partition, r.offset), key: r.key.clone(), payload, headers: Vec::new() });
            }
        }
        done += batch.len() as u64;
        let deliveries = sink.send(&out).await.unwrap();
        tokio::task::block_in_place(|| committer.submit(Pending { deliveries, next_offsets: next.iter().map(|(p, (o, _))| (*p, *o)).collect(), records: batch.len() as u64 }));
    }
    streamhost::kafka::producer::flush(sink.producer(), Duration::from_secs(30));
    committer.finish();
    source.commit();
    started.unwrap().elapsed().as_secs_f64()
}

async fn end_to_end(report: &mut Report, n: usize) {
    let Some(nisshi) = broker::find() else {
        report.line("### 2. End to end: skipped (no nisshi broker; `cargo xtask bench` installs it)\n");
        return;
    };
    std::fs::create_dir_all(root().join("target/bench")).unwrap();
    let log = root().join("target/bench/broker.log");
    let b = broker::Broker::start(&nisshi, Some(&log)).unwrap();
    let brokers = b.bootstrap();
    let input = records(n, 1000);
    let topic = format!("bench-in-{}", std::process::id());
    b.create_topic(&topic, 3).unwrap();
    for suffix in ["enriched", "alerts", "dlq"] {
        b.create_topic(&format!("{topic}-{suffix}"), 3).unwrap();
    }
    preload(&brokers, &topic, &input).await;

    // streamhost's average output size, from the same data in process.
    let out_bytes = {
        let runtime = Runtime::new(Limits::default()).unwrap();
        let rules = wasm_rules(&runtime);
        let mut p = Pipeline::new(streamhost::service::pipeline_config(&settings()));
        let sample = &input[..input.len().min(50_000)];
        let out = p.process(&rules, sample.to_vec(), 1_795_500_000_000);
        out.records.iter().map(|r| r.payload.len()).sum::<usize>() / out.records.len().max(1)
    };
    // Alternating runs (each in its own group, so each reads everything);
    // the best of each side is the least disturbed.
    let (mut t_sh, mut t_pt, mut fanout) = (f64::INFINITY, f64::INFINITY, 1.0);
    for rep in 0..3 {
        let summary = streamhost::service::run(e2e_settings(&brokers, &topic, &format!("sh{rep}"), n as u64), std::future::pending())
            .await
            .unwrap();
        t_sh = t_sh.min(summary.first_batch.unwrap().elapsed().as_secs_f64());
        fanout = (summary.tally.enriched + summary.tally.alert_records) as f64 / n as f64;
        t_pt = t_pt.min(pass_through(e2e_settings(&brokers, &topic, &format!("pt{rep}"), n as u64), fanout, out_bytes).await);
    }
    let (r_sh, r_pt) = (n as f64 / t_sh, n as f64 / t_pt);
    report.line(format!("### 2. End to end on the local broker ({n} pre-loaded records, 3 partitions, best of 3 alternating runs)\n"));
    report.line("| path | records/s |");
    report.line("|---|---:|");
    report.line(format!(
        "| pass-through: same source, sink and commits, {fanout:.3} outputs of {out_bytes} bytes per input (baseline) | {r_pt:.0} |"
    ));
    report.line(format!("| streamhost with enrich, trend, anomaly (WASM) | {r_sh:.0} |"));
    report.line(format!("| **ratio streamhost / pass-through** | **{:.2}** |", r_sh / r_pt));
    report.line("");
    report.line("(Both timed from the first batch consumed to the last offset committed, after every output was acknowledged.)\n");

    // Latency at half the measured maximum.
    let rate = r_sh / 2.0;
    let seconds = if n >= 1_000_000 { 10.0 } else { 4.0 };
    let (p50, p99, alerts) = latency(&b, rate, seconds).await;
    report.line(format!(
        "Latency at half that rate ({rate:.0} records/s for {seconds:.0} s), from the producer's timestamp in the record to the alert \
         record's timestamp (set when streamhost produced it), over {alerts} alerts: **p50 {p50} ms, p99 {p99} ms**.\n"
    ));
    drop(b);
}

/// Runs streamhost on a fresh topic while producing at `rate` for
/// `seconds`; returns p50 and p99 of producer-to-alert latency in ms.
async fn latency(b: &broker::Broker, rate: f64, seconds: f64) -> (i64, i64, usize) {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Message, Timestamp};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let brokers = b.bootstrap();
    let topic = format!("bench-lat-{}", std::process::id());
    b.create_topic(&topic, 3).unwrap();
    for suffix in ["enriched", "alerts", "dlq"] {
        b.create_topic(&format!("{topic}-{suffix}"), 3).unwrap();
    }
    let mut settings = e2e_settings(&brokers, &topic, "latency", u64::MAX);
    settings.max_records = None;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(streamhost::service::run(settings, async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(2)).await; // group join
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let tick = Duration::from_millis(10);
    let per_tick = (rate * tick.as_secs_f64()).max(1.0) as usize;
    let started = Instant::now();
    let mut i = 0u64;
    let mut futs = Vec::new();
    while started.elapsed().as_secs_f64() < seconds {
        let now = chrono::Utc::now();
        for _ in 0..per_tick {
            let sensor = format!("sensor_{:04}", i % 1000);
            // One reading in twenty is too hot: an alert to time.
            let temperature = if i % 20 == 0 { 45.0 } else { 21.0 };
            let payload = format!(
                r#"{{"sensor_id":"{sensor}","timestamp":"{}","temperature":{temperature},"humidity":50,"pressure":1010,"battery_level":0.9}}"#,
                now.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            );
            futs.push(p.send_result(FutureRecord::to(&topic).key(&sensor).payload(&payload)).map_err(|(e, _)| e).unwrap());
            i += 1;
        }
        tokio::time::sleep_until((started + tick * ((i as usize / per_tick) as u32)).into()).await;
    }
    for f in futs {
        let _ = f.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(());
    let _ = service.await;

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("bench-lat-read-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[&format!("{topic}-alerts")]).unwrap();
    let mut lat = Vec::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            idle = Instant::now();
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            let produced = streamhost::decode::parse_time(v["sensor_data"]["timestamp"].as_str().unwrap()).unwrap();
            if let Timestamp::CreateTime(at) = m.timestamp() {
                lat.push(at - produced);
            }
        }
    }
    lat.sort();
    let pct = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(-1);
    (pct(0.5), pct(0.99), lat.len())
}

/// Hot swap in process: the pipeline loops over batches, taking the current
/// rules at each batch start as the service does, while the anomaly plugin's
/// file is replaced 20 times (v1 and v2 alternately).
fn hot_swap(report: &mut Report, phase: Duration) {
    use streamhost::rules::registry::Registry;
    let dir = root().join("target/bench/swap");
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = |name: &str| root().join("target/plugins").join(format!("{name}.wasm"));
    let (v1, v2) = (std::fs::read(plugin("anomaly")).unwrap(), std::fs::read(plugin("anomaly-v2")).unwrap());
    let rule = dir.join("anomaly.wasm");
    std::fs::write(&rule, &v1).unwrap();
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let registry = Arc::new(Registry::from_files(runtime, &[plugin("enrich"), plugin("trend"), rule.clone()]).unwrap());
    registry.watch();
    // The same records over and over, each pass moved forward in event time
    // (the epoch-millisecond timestamp sits first, at a fixed place), so that
    // replays are not late and every pass does the same work.
    let n = 100_000;
    let input: Vec<InRecord> = records(n, 1000)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let mut v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("timestamp");
            let rest = &v.to_string()[1..];
            let t = 1_795_500_000_000i64 + (i / 1000) as i64 * 1000;
            r.payload = Some(format!("{{\"timestamp\":{t},{rest}").into_bytes());
            r
        })
        .collect();
    let pass_ms = (n / 1000) as i64 * 1000;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut p = Pipeline::new(streamhost::service::pipeline_config(&settings()));
            let mut served: Vec<(Instant, String, usize)> = Vec::new();
            let mut pass = 0i64;
            'outer: loop {
                for chunk in input.chunks(1000) {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let mut chunk = chunk.to_vec();
                    for r in &mut chunk {
                        let payload = r.payload.as_mut().unwrap();
                        let t: i64 = std::str::from_utf8(&payload[13..26]).unwrap().parse().unwrap();
                        payload[13..26].copy_from_slice((t + pass * pass_ms).to_string().as_bytes());
                    }
                    let rules = registry.current();
                    let version = rules.anomaly[0].info().version.clone();
                    let at = Instant::now();
                    let len = chunk.len();
                    // Processing time moves with the passes, as event time does.
                    std::hint::black_box(p.process(&rules, chunk, 1_795_500_000_000 + pass * pass_ms));
                    served.push((at, version, len));
                }
                pass += 1;
            }
            served
        })
    };
    std::thread::sleep(Duration::from_millis(500)); // warm up
    let quiet_start = Instant::now();
    std::thread::sleep(phase);
    let swap_start = Instant::now();
    let mut landings = Vec::new();
    for i in 0..20 {
        let (bytes, version) = if i % 2 == 0 { (&v2, "2.0.0") } else { (&v1, "1.0.0") };
        let tmp = dir.join("anomaly.wasm.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        let at = Instant::now();
        std::fs::rename(&tmp, &rule).unwrap();
        landings.push((at, version));
        std::thread::sleep(phase / 20);
    }
    let swap_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let served = worker.join().unwrap();
    let rate = |from: Instant, to: Instant| {
        let recs: usize = served.iter().filter(|(at, _, _)| *at >= from && *at < to).map(|s| s.2).sum();
        recs as f64 / (to - from).as_secs_f64()
    };
    let quiet = rate(quiet_start, swap_start);
    let swapping = rate(swap_start, swap_end);
    let mut latencies: Vec<f64> = landings
        .iter()
        .enumerate()
        .filter_map(|(i, (at, version))| {
            let until = landings.get(i + 1).map_or(swap_end, |l| l.0);
            served
                .iter()
                .find(|(t, v, _)| *t >= *at && *t < until && v == version)
                .map(|(t, _, _)| (*t - *at).as_secs_f64() * 1e3)
        })
        .collect();
    let missed = landings.len() - latencies.len();
    // Batch durations: the first batch on each new version against the rest.
    let mut first = Vec::new();
    let mut other = Vec::new();
    for w in served.windows(2) {
        let d = (w[1].0 - w[0].0).as_secs_f64() * 1e3;
        if w[0].0 < swap_start || w[0].0 > swap_end {
            continue;
        }
        if served.iter().position(|x| x.0 == w[0].0).is_some_and(|i| i > 0 && served[i - 1].1 != w[0].1) {
            first.push(d);
        } else {
            other.push((d, w[0].1.clone()));
        }
    }
    first.sort_by(f64::total_cmp);
    let median = |v: &str| {
        let mut d: Vec<f64> = other.iter().filter(|o| o.1 == v).map(|o| o.0).collect();
        d.sort_by(f64::total_cmp);
        d.get(d.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let first_median = first.get(first.len() / 2).copied().unwrap_or(f64::NAN);
    latencies.sort_by(f64::total_cmp);
    report.line(format!(
        "### 4. Hot swap (in process, 20 swaps of the anomaly plugin by file rename, v1 and v2 alternately, {} ms apart)\n",
        (phase / 20).as_millis()
    ));
    report.line("| measure | value |");
    report.line("|---|---:|");
    report.line(format!("| swap latency, file landing to first batch on the new version: median | {:.0} ms |", latencies[latencies.len() / 2]));
    report.line(format!("| swap latency: max | {:.0} ms |", latencies[latencies.len() - 1]));
    report.line(format!("| swaps not served before the next one | {missed} |"));
    report.line(format!("| throughput without swaps (baseline) | {quiet:.0} records/s |"));
    report.line(format!("| throughput while swapping | {swapping:.0} records/s |"));
    report.line(format!("| **ratio swapping / quiet** | **{:.2}** |", swapping / quiet));
    report.line(format!(
        "| batch of 1,000, median: on v1 / on v2 / first batch after a swap | {:.2} / {:.2} / {:.2} ms |",
        median("1.0.0"),
        median("2.0.0"),
        first_median
    ));
    report.line("");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--profile`: one WASM pipeline pass only, for callgrind.
    if std::env::args().any(|a| a == "--profile") {
        let input = records(20_000, 1000);
        let runtime = Runtime::new(Limits::default()).unwrap();
        let rules = wasm_rules(&runtime);
        println!("{:.3} s", run_pipeline(&rules, &input, 1000));
        return;
    }
    let (n_inproc, n_e2e, keys) = if quick { (100_000, 200_000, 20_000) } else { (500_000, 1_000_000, 100_000) };
    let mut report = Report { text: String::new() };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .unwrap_or(0);
    report.line(format!(
        "## streamhost benchmark{} — {}, {cores} cores, {:.0} GiB\n",
        if quick { " (quick)" } else { "" },
        chrono::Utc::now().format("%Y-%m-%d"),
        mem as f64 / (1 << 20) as f64
    ));
    // Windows first: the resident-memory figure is only clean in a fresh process.
    let mut windows = Report { text: String::new() };
    tokio::task::block_in_place(|| windows_memory(&mut windows, keys, 300));
    eprintln!("bench: WASM against native, in process");
    in_process(&mut report, n_inproc);
    eprintln!("bench: end to end on the local broker");
    end_to_end(&mut report, n_e2e).await;
    eprintln!("bench: hot swap");
    report.line(windows.text.trim_end());
    report.line("");
    let phase = if quick { Duration::from_secs(2) } else { Duration::from_secs(5) };
    tokio::task::block_in_place(|| hot_swap(&mut report, phase));
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("report.md"), &report.text).unwrap();
    println!("{}", report.text);
    println!("written to {}", dir.join("report.md").display());
}
