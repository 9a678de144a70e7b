//! State that follows partitions: how fast windows are rebuilt by replaying
//! the input from the broker, and how the in-process path scales with
//! partition-parallel workers.

use super::*;

use streamhost::kafka::span::PartitionReader;
use streamhost::rebuild::Source as _;
use streamhost::rebuild::{reach_ms, rebuild};

/// `records(n, sensors)` re-stamped so that each sensor stays on one of
/// `partitions` partitions, with offsets counted per partition.
fn partitioned(n: usize, sensors: usize, partitions: i32) -> Vec<InRecord> {
    let mut next = vec![0i64; partitions as usize];
    records(n, sensors)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let p = ((i % sensors) as i32) % partitions;
            r.partition = p;
            r.offset = next[p as usize];
            next[p as usize] += 1;
            r
        })
        .collect()
}

/// Runs `input` through `workers` threads the way the service splits it:
/// batches of `batch` records, each record to the worker owning its
/// partition, each worker with its own pipeline, all sharing the rules.
fn run_workers(rules: &RuleSet, input: &[InRecord], batch: usize, workers: usize) -> f64 {
    let mut parts: Vec<Vec<Vec<InRecord>>> = vec![Vec::new(); workers];
    for chunk in input.chunks(batch) {
        let mut split: Vec<Vec<InRecord>> = vec![Vec::new(); workers];
        for r in chunk {
            split[streamhost::cmd::run::worker_of(r.partition, workers)].push(r.clone());
        }
        for (w, s) in split.into_iter().enumerate() {
            if !s.is_empty() {
                parts[w].push(s);
            }
        }
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for batches in parts {
            scope.spawn(move || {
                let mut p = Pipeline::new(streamhost::cmd::wiring::pipeline_config(&settings()));
                let mut outputs = 0;
                for b in batches {
                    outputs += p.process(rules, b, 1_795_500_000_000).records.len();
                }
                std::hint::black_box(outputs);
            });
        }
    });
    started.elapsed().as_secs_f64()
}

/// 2 workers against 1, in process, with the WASM rules: interleaved
/// rounds, median ratio and its spread.
pub fn scaling(report: &mut Report, n: usize, rounds: usize) {
    let input = partitioned(n, 1000, 4);
    let runtime = Runtime::new(Limits::default()).unwrap();
    let rules = wasm_rules(&runtime);
    // Warm both (instances for two workers, caches).
    run_workers(&rules, &input[..n / 10], 1000, 2);
    let (mut one, mut two, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t1 = run_workers(&rules, &input, 1000, 1);
        let t2 = run_workers(&rules, &input, 1000, 2);
        one.push(t1);
        two.push(t2);
        ratios.push(t1 / t2);
    }
    let (lo, hi) = spread(&ratios);
    let m = median(&mut ratios.clone());
    let rate = |t: f64| n as f64 / t;
    report.line(format!(
        "### 5. Workers, in process ({n} records, 4 partitions, 1000 sensors, WASM rules; {rounds} interleaved rounds)\n"
    ));
    report.line("| workers | records/s (median round) |\n|---|---:|");
    report.line(format!("| 1 | {:.0} |", rate(median(&mut one))));
    report.line(format!("| 2 | {:.0} |", rate(median(&mut two))));
    report.line(format!(
        "\n2 workers / 1: **{m:.2}×** median, spread {lo:.2}–{hi:.2} over {rounds} rounds (target ≥ 1.8 on 2 cores)."
    ));
    if hi - lo > (m - 1.0).abs() {
        report.line("\n**Warning:** the spread is larger than the effect; the machine was too noisy for this figure.");
    }
    report.line("");
}

/// Produces `keys` sensors, one reading every `every_ms` of event time for
/// `span_ms`, stamped with their event time, to one partition of `topic`.
async fn load(brokers: &str, topic: &str, keys: usize, every_ms: i64, span_ms: i64) -> usize {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let t0 = chrono::Utc::now().timestamp_millis() - span_ms - 3_600_000;
    let mut rand = streamhost_testkit::seeded_uniform(5);
    let mut pending = Vec::new();
    let mut n = 0;
    for step in 0..span_ms / every_ms {
        for k in 0..keys {
            // Keys report spread over the interval, not all at once.
            let t = t0 + step * every_ms + (k as i64 * every_ms) / keys as i64;
            let key = format!("sensor_{k:06}");
            let payload = format!(
                r#"{{"sensor_id":"{key}","timestamp":{t},"temperature":{:.2},"humidity":{:.2},"pressure":1013.0,"battery_level":0.9}}"#,
                18.0 + rand() * 17.0,
                30.0 + rand() * 50.0
            );
            let mut record = FutureRecord::to(topic)
                .partition(0)
                .key(key.as_bytes())
                .payload(payload.as_bytes())
                .timestamp(t);
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    // The queue is full: wait for what is in flight.
                    Err((_, back)) => {
                        record = back;
                        for f in pending.drain(..) {
                            f.await.unwrap().map_err(|(e, _)| e).unwrap();
                        }
                    }
                }
            }
            n += 1;
            if pending.len() >= 200_000 {
                for f in pending.drain(..) {
                    f.await.unwrap().map_err(|(e, _)| e).unwrap();
                }
            }
        }
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    n
}

/// Rebuild time for one partition of `keys` sensors reporting every
/// `every_ms`, replayed from the broker as on an assignment.
async fn rebuild_case(b: &broker::Broker, keys: usize, every_ms: i64) -> (usize, String) {
    let topic = format!("bench-rebuild-{keys}-{}", std::process::id());
    b.create_topic(&topic, 1).unwrap();
    let mut s = settings();
    s.brokers = b.bootstrap();
    s.input_topic = topic.clone();
    let cfg = streamhost::cmd::wiring::pipeline_config(&s);
    let reach = reach_ms(&cfg.window, s.rebuild_margin.as_millis() as i64);
    // A little more than the replay needs, so that it starts mid-topic.
    let span = reach + 2 * 60_000;
    let produced = load(&b.bootstrap(), &topic, keys, every_ms, span).await;
    let reader = PartitionReader::new(&s).unwrap();
    let (_, high) = reader.watermarks(0).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let reference = now - 3_600_000;
    let mut pipeline = Pipeline::new(cfg);
    let runtime = Runtime::new(Limits::default()).unwrap();
    let transforms = wasm_rules(&runtime).transform;
    let done = tokio::task::block_in_place(|| {
        rebuild(
            &reader,
            &mut pipeline,
            &transforms,
            0,
            high,
            reference,
            s.rebuild_margin.as_millis() as i64,
        )
    })
    .unwrap();
    // The same span read again without processing: what the broker's
    // fetches cost on their own.
    let read_only = {
        let started = Instant::now();
        let mut n = 0usize;
        reader
            .read(0, done.from, done.to, 4096, &mut |c| n += c.len())
            .unwrap();
        std::hint::black_box(n);
        started.elapsed().as_secs_f64()
    };
    let w = pipeline.windows();
    let per_window = 300_000 / every_ms;
    (
        produced,
        format!(
            "| {keys} keys, a reading every {} s ({per_window} per 5-minute window) | {} | {} | {} | {} | {:.2} | {:.0} | {read_only:.2} |",
            every_ms / 1000,
            done.records,
            done.passes,
            w.keys(),
            w.readings(),
            done.seconds,
            done.records as f64 / done.seconds
        ),
    )
}

pub async fn rebuild_time(report: &mut Report, quick: bool) {
    let Some(nisshi) = broker::find() else {
        report.line("### 6. Rebuild: skipped (no nisshi broker)\n");
        return;
    };
    let log = root().join("target/bench/broker-rebuild.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let b = broker::Broker::start(&nisshi, Some(&log)).unwrap();
    let s = settings();
    let reach = reach_ms(
        &streamhost::cmd::wiring::pipeline_config(&s).window,
        s.rebuild_margin.as_millis() as i64,
    );
    report.line(format!(
        "### 6. Window rebuild from the broker (one partition; default settings replay {:.1} minutes of event time before the resume position)\n",
        reach as f64 / 60_000.0
    ));
    report.line("| partition | records replayed | passes | keys rebuilt | readings held | seconds | records/s | reading the span alone, s |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    let (_, typical) = rebuild_case(&b, 1_000, 10_000).await;
    report.line(typical);
    let keys = if quick { 20_000 } else { 100_000 };
    let (_, big) = rebuild_case(&b, keys, 60_000).await;
    report.line(big);
    report.line("\nTarget: 100,000 keys with full 5-minute windows rebuilt in ≤ 10 s.\n");
    take_up_cost(report, &b).await;
}

/// What `--alerts lifecycle` adds to a partition's restore: the windows are
/// rebuilt up to the alert snapshot instead of the resume offset, and the
/// records in between (at most 20,000 after a catch-up) go through the
/// rules again instead of the windows alone. Both ways are timed on the
/// same records, interleaved, 1,000 keys reporting every 10 s.
async fn take_up_cost(report: &mut Report, b: &broker::Broker) {
    const TAIL: i64 = 20_000;
    let topic = format!("bench-take-up-{}", std::process::id());
    b.create_topic(&topic, 1).unwrap();
    let mut s = settings();
    s.brokers = b.bootstrap();
    s.input_topic = topic.clone();
    let mut cfg = streamhost::cmd::wiring::pipeline_config(&s);
    let reach = reach_ms(&cfg.window, s.rebuild_margin.as_millis() as i64);
    load(&b.bootstrap(), &topic, 1_000, 10_000, reach + 2 * 60_000).await;
    let reader = PartitionReader::new(&s).unwrap();
    let (_, high) = reader.watermarks(0).unwrap();
    let snapshot_at = high - TAIL;
    let mut tail = Vec::new();
    reader
        .read(0, snapshot_at, high, 4096, &mut |c| tail.push(c))
        .unwrap();
    let runtime = Runtime::new(Limits::default()).unwrap();
    let rules = wasm_rules(&runtime);
    let reference = chrono::Utc::now().timestamp_millis() - 3_600_000;
    cfg.alerts = streamhost::lifecycle::AlertMode::Lifecycle;
    let mut base = Pipeline::new(cfg);
    let margin = s.rebuild_margin.as_millis() as i64;
    tokio::task::block_in_place(|| {
        rebuild(
            &reader,
            &mut base,
            &rules.transform,
            0,
            snapshot_at,
            reference,
            margin,
        )
    })
    .unwrap();
    let (mut windows_only, mut through_rules) = (Vec::new(), Vec::new());
    for round in 0..11 {
        let mut fresh = Pipeline::new(base.config().clone());
        tokio::task::block_in_place(|| {
            rebuild(
                &reader,
                &mut fresh,
                &rules.transform,
                0,
                snapshot_at,
                reference,
                margin,
            )
        })
        .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        if round % 2 == 0 {
            for c in &tail {
                fresh.replay(&rules, c.clone(), now);
            }
            through_rules.push(started.elapsed().as_secs_f64());
        } else {
            for c in &tail {
                fresh.rebuild(&rules.transform, c.clone(), now);
            }
            windows_only.push(started.elapsed().as_secs_f64());
        }
    }
    let (rules_s, windows_s) = (median(&mut through_rules), median(&mut windows_only));
    report.line(format!(
        "With `--alerts lifecycle`, the last {TAIL} records before the resume offset (the most a restore processes again after the alert snapshot) take **{:.3} s** through the three WASM rules against {:.3} s through the windows alone (medians of interleaved rounds): **+{:.3} s** per partition restored, {:.1} µs per record.\n",
        rules_s,
        windows_s,
        rules_s - windows_s,
        (rules_s - windows_s) / TAIL as f64 * 1e6
    ));
}
