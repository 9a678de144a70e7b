//! `stream-watch`: follows streamhost's output topics and prints alerts as
//! they arrive, a sample of enriched records, and a running count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

#[derive(Parser)]
#[command(about = "Print streamhost's alerts and enriched records as they arrive")]
struct Args {
    #[arg(long, default_value = "localhost:9092")]
    brokers: String,
    #[arg(long, default_value = "iot-alerts")]
    alerts_topic: String,
    #[arg(long, default_value = "iot-enriched")]
    enriched_topic: String,
    #[arg(long, default_value = "iot-dlq")]
    dlq_topic: String,
    /// Print one enriched record in this many.
    #[arg(long, default_value_t = 1000)]
    sample: u64,
    /// Read outputs in the Confluent Avro framing, their schemas fetched
    /// from this schema registry.
    #[arg(long, value_name = "URL")]
    avro: Option<String>,
    /// Stop, printing the counts, once this many enriched records were
    /// read and then nothing arrived for a second (so that the alerts and
    /// dead letters of those records are read too, whichever topic comes
    /// first). [default: run until Ctrl-C]
    #[arg(long, value_name = "N")]
    until_enriched: Option<u64>,
}

/// An output as JSON: parsed, or decoded from Avro with the registry.
fn parse(
    payload: &[u8],
    avro: Option<&schema_registry_converter::blocking::avro::AvroDecoder>,
) -> serde_json::Value {
    match avro {
        Some(decoder) if payload.first() == Some(&0) => decoder
            .decode(Some(payload))
            .ok()
            .and_then(|d| apache_avro::from_value::<serde_json::Value>(&d.value).ok())
            .unwrap_or_default(),
        _ => serde_json::from_slice(payload).unwrap_or_default(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", format!("stream-watch-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&args.alerts_topic, &args.enriched_topic, &args.dlq_topic])?;
    let decoder = args.avro.as_ref().map(|url| {
        schema_registry_converter::blocking::avro::AvroDecoder::new(
            schema_registry_converter::blocking::schema_registry::SrSettings::new(url.clone()),
        )
    });
    let (mut enriched, mut alerts, mut dead) = (0u64, 0u64, 0u64);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_status = Instant::now();
    let mut quiet_since = Instant::now();
    loop {
        let polled = consumer.poll(Duration::from_millis(200));
        if polled.is_some() {
            quiet_since = Instant::now();
        }
        if let Some(m) = polled {
            let m = m?;
            let v = parse(m.payload().unwrap_or_default(), decoder.as_ref());
            if m.topic() == args.alerts_topic {
                alerts += 1;
                for k in v["anomalies"].as_array().into_iter().flatten() {
                    *kinds
                        .entry(k.as_str().unwrap_or("?").to_string())
                        .or_default() += 1;
                }
                let messages: Vec<&str> = v["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["message"].as_str())
                    .collect();
                println!(
                    "ALERT    {} {} [{}] {} (rule {} {})",
                    v["sensor_id"].as_str().unwrap_or("?"),
                    v["event_time"].as_str().unwrap_or("?"),
                    v["severity"].as_str().unwrap_or("?"),
                    messages.join("; "),
                    v["rule"].as_str().unwrap_or("?"),
                    v["rule_version"].as_str().unwrap_or("?"),
                );
            } else if m.topic() == args.enriched_topic {
                enriched += 1;
                if enriched % args.sample.max(1) == 1 {
                    let w = &v["streamhost"]["window"];
                    println!(
                        "ENRICHED {} {} window={} readings mean temperature={:.2} trend={}",
                        v["sensor_id"].as_str().unwrap_or("?"),
                        v["timestamp"].as_str().unwrap_or("?"),
                        w["count"],
                        w["fields"]["temperature"]["mean"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                        v["streamhost"]["trends"]["trend"]["direction"]
                            .as_str()
                            .unwrap_or("-"),
                    );
                }
            } else {
                dead += 1;
                let reason = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "streamhost.reason")
                            .and_then(|h| h.value)
                    })
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                println!("DEAD     reason={reason}");
            }
        }
        let done = args.until_enriched.is_some_and(|n| enriched >= n)
            && quiet_since.elapsed() >= Duration::from_secs(1);
        if done || last_status.elapsed() > Duration::from_secs(1) {
            last_status = Instant::now();
            println!(
                "-- so far: {enriched} enriched, {alerts} alerts {kinds:?}, {dead} dead letters"
            );
        }
        if done {
            return Ok(());
        }
    }
}
