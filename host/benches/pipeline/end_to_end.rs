//! Section 2: end to end against the broker, and latency.

use super::*;

// ---------------------------------------------------------------- end to end

pub fn e2e_settings(brokers: &str, input: &str, tag: &str, max: u64) -> Settings {
    let plugins = ["enrich", "trend", "anomaly"]
        .map(|n| root().join("target/plugins").join(format!("{n}.wasm")));
    Settings::resolve(
        RunArgs::default()
            .with("brokers", brokers)
            .with("input-topic", input)
            .with("group", format!("bench-{tag}-{}", std::process::id()))
            .with("enriched-topic", format!("{input}-enriched"))
            .with("alerts-topic", format!("{input}-alerts"))
            .with("dlq-topic", format!("{input}-dlq"))
            .with("plugins", plugins.map(|p| p.display().to_string()).to_vec())
            .with("admin", "127.0.0.1:0")
            .with("max-records", max as i64),
    )
    .unwrap()
}

/// Runs streamhost until its `max_records`; returns the seconds from its
/// first batch to its last commit, and its summary.
pub async fn timed_run(settings: Settings) -> (f64, streamhost::cmd::run::RunSummary) {
    let summary = streamhost::cmd::run::run(settings, std::future::pending())
        .await
        .unwrap();
    (
        summary.first_batch.unwrap().elapsed().as_secs_f64(),
        summary,
    )
}

pub async fn preload(brokers: &str, topic: &str, input: &[InRecord]) {
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
        let rec = FutureRecord::to(topic)
            .key(r.key.as_deref().unwrap())
            .payload(r.payload.as_deref().unwrap());
        futs.push(p.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for f in futs {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// The pass-through: streamhost's own source, sink and committer, with the
/// pipeline replaced by copying each input to `fanout` outputs.
async fn pass_through(settings: Settings, fanout: f64, out_bytes: usize) -> f64 {
    use streamhost::kafka::committer::{Committer, Pending};
    use streamhost::kafka::consumer::KafkaSource as Source;
    use streamhost::kafka::producer::KafkaSink as Sink;
    use streamhost::record::{Dest, OutRecord};
    let source = Source::new(&settings, Arc::default()).unwrap();
    let sink = Arc::new(Sink::new(&settings).unwrap());
    let committer = Committer::start(&source, sink.clone(), 8, 1);
    let limit = settings.max_records.unwrap();
    let mut done = 0u64;
    let mut owed = 0.0;
    let mut started = None;
    while done < limit {
        let (batch, _) = source
            .next_batch(
                settings.batch_size.min((limit - done) as usize),
                settings.batch_wait,
            )
            .await
            .unwrap();
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
                out.push(OutRecord {
                    dest: Dest::Enriched,
                    source: (r.partition, r.offset),
                    key: r.key.clone(),
                    payload,
                    headers: Vec::new(),
                });
            }
        }
        done += batch.len() as u64;
        let deliveries = tokio::task::block_in_place(|| sink.send(&out)).unwrap();
        tokio::task::block_in_place(|| {
            committer.submit(
                0,
                Pending {
                    deliveries,
                    next_offsets: next.iter().map(|(p, (o, _))| (*p, *o)).collect(),
                    records: batch.len() as u64,
                    state: Vec::new(),
                },
            )
        });
    }
    streamhost::kafka::producer::flush(sink.producer(), Duration::from_secs(30));
    committer.finish();
    source.commit();
    started.unwrap().elapsed().as_secs_f64()
}

/// `--latency-only RATE`: the latency at `RATE` records/s for each batch
/// size, alone.
pub async fn latency_only(rate: f64) {
    let nisshi = broker::find().expect("nisshi");
    let b = broker::Broker::start(&nisshi, None).unwrap();
    // `STREAMHOST_BENCH_X="k=v k=v"`: librdkafka properties to try.
    let extra = std::env::var("STREAMHOST_BENCH_X").unwrap_or_default();
    let extra: Vec<(&str, &str)> = extra
        .split_whitespace()
        .map(|kv| kv.split_once('=').expect("KEY=VALUE"))
        .collect();
    // `STREAMHOST_BENCH_SHAPE=compact`: the compact enriched shape.
    let shape = match std::env::var("STREAMHOST_BENCH_SHAPE").as_deref() {
        Ok("compact") => streamhost::output::Shape::Compact,
        _ => streamhost::output::Shape::Full,
    };
    for (run, size) in [100usize, 1000].into_iter().enumerate() {
        let (p50, p99, alerts) = latency(&b, rate, 6.0, size, run, &extra, shape).await;
        println!("batch {size}: p50 {p50} ms, p99 {p99} ms over {alerts} alerts");
    }
    // The baseline, on a broker of its own, with the same fetch wait.
    let wait = extra
        .iter()
        .find(|(k, _)| *k == "consumer.fetch.wait.max.ms")
        .map_or("50", |(_, v)| *v);
    let pb = broker::Broker::start(&nisshi, None).unwrap();
    let (p50, p99, n) = passthrough_latency(&pb, rate, 6.0, 2, wait).await;
    println!("plain consumer, fetch wait {wait} ms: p50 {p50} ms, p99 {p99} ms over {n} readings");
}

pub async fn end_to_end(report: &mut Report, n: usize, rounds: usize) {
    let Some(nisshi) = broker::find() else {
        report.line(
            "### 2. End to end: skipped (no nisshi broker; `cargo xtask bench` installs it)\n",
        );
        return;
    };
    std::fs::create_dir_all(root().join("target/bench")).unwrap();
    let log = root().join("target/bench/broker.log");
    let b = broker::Broker::start(&nisshi, Some(&log)).unwrap();
    let brokers = b.bootstrap();
    let input = records(n, 1000);
    let topic = format!("bench-in-{}", std::process::id());
    b.create_topic(&topic, 4).unwrap();
    for suffix in ["enriched", "alerts", "dlq"] {
        b.create_topic(&format!("{topic}-{suffix}"), 3).unwrap();
    }
    preload(&brokers, &topic, &input).await;

    // streamhost's average output size, from the same data in process.
    let out_bytes = {
        let runtime = Runtime::new(Limits::default()).unwrap();
        let rules = wasm_rules(&runtime);
        let mut p = Pipeline::new(streamhost::cmd::wiring::pipeline_config(&settings()));
        let sample = &input[..input.len().min(50_000)];
        let out = p.process(&rules, sample.to_vec(), 1_795_500_000_000);
        out.records.iter().map(|r| r.payload.len()).sum::<usize>() / out.records.len().max(1)
    };
    let r_sh = throughput(report, (&brokers, &topic), n, rounds, out_bytes).await;
    // Latency against load, for a few batch sizes, each run on a broker of
    // its own: Nisshi keeps every record in memory, and a broker holding
    // earlier runs' records slows the later ones, so a shared broker would
    // make each figure depend on the runs before it.
    let seconds = if n >= 500_000 { 6.0 } else { 3.0 };
    let loads = [0.25, 0.5, 0.75];
    report.line(format!(
        "Latency from the producer's timestamp in the record to the alert record's timestamp (set when streamhost produced it), \
         producing for {seconds:.0} s at a share of the median maximum ({r_sh:.0} records/s), each on a broker started for it; p50 / p99 in ms, over the alerts of each run:\n"
    ));
    let run = latency_table(report, &nisshi, r_sh, seconds, loads).await;
    latency_rounds(report, &nisshi, r_sh, seconds, run).await;
    super::article::against_article(report, &b, rounds, r_sh).await;
    drop(b);
}

/// streamhost against a pass-through over the pre-loaded `topic`, in
/// interleaved rounds: streamhost's median records/s.
async fn throughput(
    report: &mut Report,
    (brokers, topic): (&str, &str),
    n: usize,
    rounds: usize,
    out_bytes: usize,
) -> f64 {
    // Interleaved rounds (each run in its own group, so each reads
    // everything); which side goes first alternates.
    let (mut t_sh, mut t_pt, mut fanout) = (Vec::new(), Vec::new(), 1.0);
    for round in 0..rounds {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let (secs, summary) = timed_run(e2e_settings(
                    brokers,
                    topic,
                    &format!("sh{round}"),
                    n as u64,
                ))
                .await;
                t_sh.push(secs);
                fanout = (summary.tally.enriched + summary.tally.alert_records) as f64 / n as f64;
            } else {
                t_pt.push(
                    pass_through(
                        e2e_settings(brokers, topic, &format!("pt{round}"), n as u64),
                        fanout,
                        out_bytes,
                    )
                    .await,
                );
            }
        }
    }
    let rate = |t: &[f64]| rates(n, t);
    let (r_sh, sh_lo, sh_hi) = rate(&t_sh);
    let (r_pt, pt_lo, pt_hi) = rate(&t_pt);
    report.line(format!("### 2. End to end on the local broker ({n} pre-loaded records, 4 partitions, {} workers, {rounds} interleaved rounds)\n", settings().workers));
    report.line("| path | records/s (median round) | spread |");
    report.line("|---|---:|---:|");
    report.line(format!(
        "| pass-through: same source, sink and commits, {fanout:.3} outputs of {out_bytes} bytes per input (baseline) | {r_pt:.0} | {pt_lo:.0}–{pt_hi:.0} |"
    ));
    report.line(format!(
        "| streamhost with enrich, trend, anomaly (WASM) | {r_sh:.0} | {sh_lo:.0}–{sh_hi:.0} |"
    ));
    report.line("");
    Ratio::of(&t_pt, &t_sh).report(
        report,
        "streamhost / pass-through, records/s (target ≥ 0.9)",
    );
    report.line("\n(Both timed from the first batch consumed to the last offset committed, after every output was acknowledged.)\n");
    r_sh
}

/// Latency against load, for a few batch sizes, at `loads` shares of the
/// maximum rate `r_sh`: one table row per batch size. Returns the runs made
/// (each broker's run number).
async fn latency_table(
    report: &mut Report,
    nisshi: &std::path::Path,
    r_sh: f64,
    seconds: f64,
    loads: [f64; 3],
) -> usize {
    let sizes = [100usize, 1000, 5000];
    report.line(format!(
        "| batch size (`--batch-size`) | {} |",
        loads
            .map(|l| format!("{:.0}% ({:.0}/s)", l * 100.0, l * r_sh))
            .join(" | ")
    ));
    report.line(format!("|---:|{}", "---:|".repeat(loads.len())));
    let mut at_half = None;
    let mut run = 0;
    // The consumer's default fetch wait (50 ms), then 10 ms: Nisshi holds
    // a fetch for its whole wait even when records arrive meanwhile.
    let short_wait = [("consumer.fetch.wait.max.ms", "10")];
    for (extra, sizes) in [(&[][..], &sizes[..]), (&short_wait[..], &[1000usize][..])] {
        for &size in sizes {
            let mut cells = Vec::new();
            for load in loads {
                run += 1;
                let lb = broker::Broker::start(nisshi, None).unwrap();
                let (p50, p99, alerts) = latency(
                    &lb,
                    r_sh * load,
                    seconds,
                    size,
                    run,
                    extra,
                    Default::default(),
                )
                .await;
                cells.push(format!("{p50} / {p99} ({alerts} alerts)"));
                if !extra.is_empty() && size == settings().batch_size && load == 0.5 {
                    at_half = Some((p50, p99));
                }
            }
            let label = if extra.is_empty() {
                format!("{size}")
            } else {
                format!("{size}, `-X consumer.fetch.wait.max.ms=10`")
            };
            report.line(format!("| {label} | {} |", cells.join(" | ")));
        }
    }
    if let Some((p50, p99)) = at_half {
        report.line(format!(
            "\nIn the table, at half the maximum rate with the default batch size ({}): p50 {p50} ms, p99 {p99} ms with a 10 ms fetch wait, in one run; the rounds below give the median and the spread.\n",
            settings().batch_size,
        ));
    }
    run
}

/// streamhost's latency at half the maximum rate against a plain consumer
/// of the input topic's, in interleaved rounds after `run` runs.
async fn latency_rounds(
    report: &mut Report,
    nisshi: &std::path::Path,
    r_sh: f64,
    seconds: f64,
    mut run: usize,
) {
    let short_wait = [("consumer.fetch.wait.max.ms", "10")];
    // Against a baseline, in interleaved rounds: the same load through a
    // plain consumer of the input topic, which is what the broker, the
    // producer and the fetch wait alone cost.
    let (mut sh, mut pt) = (Vec::new(), Vec::new());
    for round in 0..LATENCY_ROUNDS {
        for streamhost_first in [round % 2 == 0, round % 2 != 0] {
            run += 1;
            let lb = broker::Broker::start(nisshi, None).unwrap();
            if streamhost_first {
                sh.push(
                    latency(
                        &lb,
                        r_sh * 0.5,
                        seconds,
                        settings().batch_size,
                        run,
                        &short_wait,
                        Default::default(),
                    )
                    .await,
                );
            } else {
                pt.push(passthrough_latency(&lb, r_sh * 0.5, seconds, run, "10").await);
            }
        }
    }
    let med = |mut v: Vec<i64>| {
        v.sort();
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let cells = |runs: &[(i64, i64, usize)]| {
        let (p50, p50_lo, p50_hi) = med(runs.iter().map(|x| x.0).collect());
        let (p99, p99_lo, p99_hi) = med(runs.iter().map(|x| x.1).collect());
        (
            p50,
            p99,
            format!("| {p50} ({p50_lo}–{p50_hi}) | {p99} ({p99_lo}–{p99_hi}) |"),
        )
    };
    let (sh50, sh99, sh_cells) = cells(&sh);
    let (pt50, pt99, pt_cells) = cells(&pt);
    report.line(format!(
        "At half the maximum rate ({:.0}/s), batch size {}, 10 ms fetch wait, {LATENCY_ROUNDS} interleaved rounds, each run on a broker of its own (median round, spread in brackets):\n\n\
         | path | p50 ms | p99 ms |\n|---|---:|---:|\n\
         | a plain consumer of the input topic (baseline: broker, producer, fetch wait) {pt_cells}\n\
         | streamhost, produce to alert {sh_cells}\n\n\
         streamhost: **p50 {sh50} ms, p99 {sh99} ms** (target p99 ≤ 20 ms: {}); it adds {} ms at p50 and {} ms at p99 to what the broker and the fetch wait cost.\n",
        r_sh * 0.5,
        settings().batch_size,
        if sh99 <= 20 { "met" } else { "not met" },
        sh50 - pt50,
        sh99 - pt99
    ));
}

/// Rounds of streamhost against the plain consumer, at half the rate.
const LATENCY_ROUNDS: usize = 5;

/// Runs streamhost on a fresh topic while producing at `rate` for
/// `seconds`; returns p50 and p99 of producer-to-alert latency in ms.
async fn latency(
    b: &broker::Broker,
    rate: f64,
    seconds: f64,
    batch_size: usize,
    run: usize,
    extra: &[(&str, &str)],
    shape: streamhost::output::Shape,
) -> (i64, i64, usize) {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Message, Timestamp};
    let brokers = b.bootstrap();
    let topic = format!("bench-lat-{}-{run}", std::process::id());
    b.create_topic(&topic, 4).unwrap();
    for suffix in ["enriched", "alerts", "dlq"] {
        b.create_topic(&format!("{topic}-{suffix}"), 3).unwrap();
    }
    let mut settings = e2e_settings(&brokers, &topic, &format!("latency{run}"), u64::MAX);
    settings.max_records = None;
    settings.batch_size = batch_size;
    settings.enriched_shape = shape;
    for (k, v) in extra {
        settings.librdkafka.0.insert(k.to_string(), v.to_string());
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(streamhost::cmd::run::run(settings, async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(2)).await; // group join
    produce_paced(&brokers, &topic, rate, seconds).await;
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
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            let produced =
                streamhost::decode::parse_time(v["sensor_data"]["timestamp"].as_str().unwrap())
                    .unwrap();
            if let Timestamp::CreateTime(at) = m.timestamp() {
                lat.push(at - produced);
            }
        }
    }
    p50_p99(lat)
}

/// The median and 99th percentile of `lat` (-1 when empty), and how many.
fn p50_p99(mut lat: Vec<i64>) -> (i64, i64, usize) {
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    (pct(0.5), pct(0.99), lat.len())
}

/// Produces sensor readings to `topic` at `rate` records/s for `seconds`,
/// in ticks of 10 ms, each stamped with the time it is produced. One reading
/// in twenty is too hot (`"temperature":45.0`): an alert to time.
async fn produce_paced(brokers: &str, topic: &str, rate: f64, seconds: f64) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let tick = Duration::from_millis(10);
    let per_tick = (rate * tick.as_secs_f64()).max(1.0) as usize;
    let started = Instant::now();
    let mut i = 0u64;
    let mut futs = Vec::new();
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..per_tick {
            // Stamped as it is produced, not when its tick began.
            let now = chrono::Utc::now();
            let sensor = format!("sensor_{:04}", i % 1000);
            let temperature = if i % 20 == 0 { 45.0 } else { 21.0 };
            let payload = format!(
                r#"{{"sensor_id":"{sensor}","timestamp":"{}","temperature":{temperature},"humidity":50,"pressure":1010,"battery_level":0.9}}"#,
                now.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            );
            futs.push(
                p.send_result(FutureRecord::to(topic).key(&sensor).payload(&payload))
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
            i += 1;
        }
        tokio::time::sleep_until((started + tick * ((i as usize / per_tick) as u32)).into()).await;
    }
    for f in futs {
        let _ = f.await;
    }
}

/// The baseline for `latency`: a plain consumer of the input topic, with
/// the same fetch wait, on the same broker, producer and machine, timing
/// the same hot readings from their producer's timestamp to the moment the
/// consumer holds them. What streamhost adds is the difference.
async fn passthrough_latency(
    b: &broker::Broker,
    rate: f64,
    seconds: f64,
    run: usize,
    fetch_wait_ms: &str,
) -> (i64, i64, usize) {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let brokers = b.bootstrap();
    let topic = format!("bench-lat-pt-{}-{run}", std::process::id());
    b.create_topic(&topic, 4).unwrap();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("bench-lat-pt-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetch_wait_ms)
        .create()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let held = chrono::Utc::now().timestamp_millis();
                let payload = m.payload().unwrap_or_default();
                if payload.windows(16).any(|w| w == br#""temperature":45"#) {
                    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                    let produced =
                        streamhost::decode::parse_time(v["timestamp"].as_str().unwrap()).unwrap();
                    lat.push(held - produced);
                }
            }
            lat
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await; // group join
    produce_paced(&brokers, &topic, rate, seconds).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    p50_p99(reader.join().unwrap())
}
