//! `sensor-producer`: IoT sensor readings to Kafka, like the article's
//! `producer.py`, keyed by sensor id so each sensor's readings stay in order.
//!
//! Readings are reproducible with `--seed` (and `--start`): sensor `s`'s
//! `i`-th reading has event time `start + i * interval`, and its values come
//! from a seeded generator. By default the interval is what `--rate` gives
//! each sensor (20 sensors at 1,000 readings/s: 20 ms), so event time keeps
//! pace with the clock however long it runs; a fixed interval at a high rate
//! runs ahead of it, and streamhost refuses readings more than `--max-future`
//! ahead (1 h). A share of readings (`--anomaly-share`) is out of
//! range so that alerts happen.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use streamhost_examples::avro_reading;

#[derive(Parser)]
#[command(about = "Produce simulated IoT sensor readings to Kafka")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "localhost:9092")]
    brokers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "iot-sensors")]
    topic: String,
    /// Number of sensors (sensor_001, sensor_002, ...).
    #[arg(long, default_value_t = 4)]
    sensors: u32,
    /// Readings per second over all sensors; 0 for as fast as possible.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Readings to send in all; 0 to run until interrupted.
    #[arg(long, default_value_t = 0)]
    total: u64,
    /// Seed of the value generator, for reproducible data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of readings with a value out of range (0..1).
    #[arg(long, default_value_t = 0.05)]
    anomaly_share: f64,
    /// Readings an out-of-range episode lasts, on average, per sensor (a
    /// fault stays until fixed: the same value out of range, give or take
    /// a little). 1: each reading is out of range on its own, as the
    /// article's producer does.
    #[arg(long, default_value_t = 1)]
    episode_readings: u32,
    /// Event time of the first reading, epoch milliseconds; default now.
    #[arg(long)]
    start: Option<i64>,
    /// Event-time step between one sensor's readings, in milliseconds.
    /// [default: sensors / rate, so that event time keeps pace with the
    /// clock; 1000 when --rate is 0]
    #[arg(long)]
    interval_ms: Option<i64>,
    /// Write readings as Avro in the Confluent framing, their schema
    /// (`avro_reading::SCHEMA`) registered under `<topic>-value` at this
    /// schema registry; without it, JSON.
    #[arg(long, value_name = "URL")]
    avro: Option<String>,
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// An out-of-range episode of one sensor: which value, at about what, for
/// how many more readings.
#[derive(Clone, Copy)]
struct Episode {
    which: u32,
    value: f64,
    left: u32,
}

/// An out-of-range value: temperature too high or too low, humidity too
/// high, battery too low.
fn out_of_range(rng: &mut StdRng) -> (u32, f64) {
    match rng.random_range(0..4) {
        0 => (0, round(rng.random_range(40.5..50.0), 2)),
        1 => (1, round(rng.random_range(-10.0..-0.5), 2)),
        2 => (2, round(rng.random_range(90.5..99.0), 2)),
        _ => (3, round(rng.random_range(0.05..0.19), 2)),
    }
}

/// One reading as the article's producer shapes it. With episodes longer
/// than one reading, `episode` is the sensor's: an episode starts with
/// probability `share / episode_readings` and lasts 1 to
/// `2 * episode_readings - 1` readings, so about `share` of readings are
/// out of range either way.
fn reading(
    rng: &mut StdRng,
    sensor: &str,
    event_ms: i64,
    (share, episode_readings): (f64, u32),
    episode: &mut Option<Episode>,
) -> serde_json::Value {
    let mut temperature = round(rng.random_range(18.0..35.0), 2);
    let mut humidity = round(rng.random_range(30.0..80.0), 2);
    let mut battery = round(rng.random_range(0.25..1.0), 2);
    let out = if episode_readings <= 1 {
        rng.random_bool(share.clamp(0.0, 1.0))
            .then(|| out_of_range(rng))
    } else {
        if episode.is_none()
            && rng.random_bool((share / f64::from(episode_readings)).clamp(0.0, 1.0))
        {
            let (which, value) = out_of_range(rng);
            let left = rng.random_range(1..2 * episode_readings);
            *episode = Some(Episode { which, value, left });
        }
        episode.as_mut().map(|e| {
            e.left -= 1;
            // A little noise, away from the range, so it stays out of it.
            let (step, away) = match e.which {
                0 => (0.1, 1.0),
                1 => (0.1, -1.0),
                2 => (0.1, 1.0),
                _ => (0.01, -1.0),
            };
            let noise = step * away * f64::from(rng.random_range(0u32..=2));
            let floor = if e.which == 3 { 0.0 } else { f64::MIN };
            let value = round(e.value + noise, 2).max(floor);
            (e.which, value)
        })
    };
    if episode.is_some_and(|e| e.left == 0) {
        *episode = None;
    }
    match out {
        Some((0 | 1, v)) => temperature = v,
        Some((2, v)) => humidity = v,
        Some((_, v)) => battery = v,
        None => {}
    }
    let timestamp = chrono::DateTime::from_timestamp_millis(event_ms)
        .expect("event time in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    serde_json::json!({
        "sensor_id": sensor,
        "timestamp": timestamp,
        "temperature": temperature,
        "humidity": humidity,
        "pressure": round(rng.random_range(1000.0..1020.0), 2),
        "location": {
            "latitude": round(rng.random_range(40.0..41.0), 6),
            "longitude": round(rng.random_range(-74.0..-73.0), 6),
        },
        "battery_level": battery,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the producer")?;
    let avro = match args.avro.clone() {
        // The registry client blocks: off the async runtime.
        Some(url) => {
            let topic = args.topic.clone();
            Some(tokio::task::spawn_blocking(move || avro_reading::register(&url, &topic)).await??)
        }
        None => None,
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let start = args
        .start
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let sensors: Vec<String> = (1..=args.sensors.max(1))
        .map(|i| format!("sensor_{i:03}"))
        .collect();
    let interval_ms = args.interval_ms.unwrap_or(if args.rate > 0.0 {
        ((sensors.len() as f64 / args.rate * 1000.0).round() as i64).max(1)
    } else {
        1000
    });
    let mut episodes: std::collections::HashMap<&str, Option<Episode>> =
        std::collections::HashMap::new();
    let began = Instant::now();
    let mut deliveries = Vec::new();
    let mut sent: u64 = 0;
    let mut round_no: i64 = 0;
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    'outer: loop {
        for sensor in &sensors {
            if args.total > 0 && sent >= args.total {
                break 'outer;
            }
            let event_ms = start + round_no * interval_ms;
            let episode = episodes.entry(sensor.as_str()).or_default();
            let shape = (args.anomaly_share, args.episode_readings);
            let value = reading(&mut rng, sensor, event_ms, shape, episode);
            let payload = match &avro {
                Some((id, schema)) => avro_reading::framed(*id, schema, &value, event_ms)?,
                None => value.to_string().into_bytes(),
            };
            let record = FutureRecord::to(&args.topic)
                .key(sensor.as_str())
                .payload(&payload);
            match producer.send_result(record) {
                Ok(d) => deliveries.push(d),
                Err((e, _)) => {
                    // Queue full: let deliveries drain, then retry this reading.
                    anyhow::ensure!(!deliveries.is_empty(), "producing failed: {e}");
                    for d in deliveries.drain(..) {
                        d.await?.map_err(|(e, _)| e)?;
                    }
                    let record = FutureRecord::to(&args.topic)
                        .key(sensor.as_str())
                        .payload(&payload);
                    deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
                }
            }
            sent += 1;
            if deliveries.len() >= 10_000 {
                for d in deliveries.drain(..) {
                    d.await?.map_err(|(e, _)| e)?;
                }
            }
            if args.rate > 0.0 {
                let due = began + Duration::from_secs_f64(sent as f64 / args.rate);
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = &mut stop => break 'outer,
                }
            }
        }
        round_no += 1;
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    eprintln!(
        "sensor-producer: {sent} readings sent to {} in {:.1?}",
        args.topic,
        began.elapsed()
    );
    Ok(())
}
