//! Section 2: end to end against the broker, and latency.

use super::*;

// ---------------------------------------------------------------- end to end

fn e2e_settings(brokers: &str, input: &str, tag: &str, max: u64) -> Settings {
    let plugins = ["enrich", "trend", "anomaly"]
        .map(|n| root().join("target/plugins").join(format!("{n}.wasm")));
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
                },
            )
        });
    }
    streamhost::kafka::producer::flush(sink.producer(), Duration::from_secs(30));
    committer.finish();
    source.commit();
    started.unwrap().elapsed().as_secs_f64()
}

pub async fn end_to_end(report: &mut Report, n: usize) {
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
        let mut p = Pipeline::new(streamhost::service::pipeline_config(&settings()));
        let sample = &input[..input.len().min(50_000)];
        let out = p.process(&rules, sample.to_vec(), 1_795_500_000_000);
        out.records.iter().map(|r| r.payload.len()).sum::<usize>() / out.records.len().max(1)
    };
    // Alternating runs (each in its own group, so each reads everything);
    // the best of each side is the least disturbed.
    let (mut t_sh, mut t_pt, mut fanout) = (f64::INFINITY, f64::INFINITY, 1.0);
    for rep in 0..3 {
        let summary = streamhost::service::run(
            e2e_settings(&brokers, &topic, &format!("sh{rep}"), n as u64),
            std::future::pending(),
        )
        .await
        .unwrap();
        t_sh = t_sh.min(summary.first_batch.unwrap().elapsed().as_secs_f64());
        fanout = (summary.tally.enriched + summary.tally.alert_records) as f64 / n as f64;
        t_pt = t_pt.min(
            pass_through(
                e2e_settings(&brokers, &topic, &format!("pt{rep}"), n as u64),
                fanout,
                out_bytes,
            )
            .await,
        );
    }
    let (r_sh, r_pt) = (n as f64 / t_sh, n as f64 / t_pt);
    report.line(format!("### 2. End to end on the local broker ({n} pre-loaded records, 4 partitions, {} workers, best of 3 alternating runs)\n", settings().workers));
    report.line("| path | records/s |");
    report.line("|---|---:|");
    report.line(format!(
        "| pass-through: same source, sink and commits, {fanout:.3} outputs of {out_bytes} bytes per input (baseline) | {r_pt:.0} |"
    ));
    report.line(format!(
        "| streamhost with enrich, trend, anomaly (WASM) | {r_sh:.0} |"
    ));
    report.line(format!(
        "| **ratio streamhost / pass-through** | **{:.2}** |",
        r_sh / r_pt
    ));
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
    b.create_topic(&topic, 4).unwrap();
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
            futs.push(
                p.send_result(FutureRecord::to(&topic).key(&sensor).payload(&payload))
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
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    (pct(0.5), pct(0.99), lat.len())
}
