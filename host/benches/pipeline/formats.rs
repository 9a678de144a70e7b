//! Section 7: Avro decode against JSON decode, per record.
//!
//! The same readings written as JSON and as Confluent-framed Avro (the
//! sensor producer's schema, registered with the registry stand-in). JSON:
//! what the pipeline does per record today (`decode`). Avro: the registry
//! client's decode with its schema cached, the value written as JSON text,
//! then the same `decode`, which is the whole cost of `--input-format avro`
//! once a schema id has been seen. Interleaved rounds, median and spread.

use super::*;

use std::process::{Child, Command, Stdio};

use apache_avro::Schema;
use streamhost::avro::{AvroInput, RegistryConfig};
use streamhost_examples::avro_reading;

struct Standin(Child);

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The registry stand-in (built by `cargo xtask bench`) and its URL.
fn standin() -> Option<(Standin, String)> {
    let bin = root().join("target/release/schema-registry-standin");
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join(format!("registry-{}.url", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--address-file"])
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let guard = Standin(child);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(url) = std::fs::read_to_string(&file) {
            if !url.is_empty() {
                return Some((guard, url));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The JSON readings of `records` written as framed Avro with schema `id`,
/// as the sensor producer writes them.
fn as_avro(records: &[InRecord], id: u32, schema: &Schema) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value =
                serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            let time = streamhost::decode::parse_time(v["timestamp"].as_str().unwrap()).unwrap();
            avro_reading::framed(id, schema, &v, time).unwrap()
        })
        .collect()
}

pub fn formats(report: &mut Report, n: usize, rounds: usize) {
    report.line(format!(
        "### 7. Avro decode against JSON decode ({n} readings; {rounds} interleaved rounds)\n"
    ));
    let Some((_standin, url)) = standin() else {
        report.line("Skipped: target/release/schema-registry-standin did not start (`cargo xtask bench` builds it).\n");
        return;
    };
    let config = RegistryConfig {
        url: url.clone(),
        timeout: Duration::from_secs(10),
        basic_auth: None,
    };
    let (id, reading_schema) = avro_reading::register(&url, "bench").unwrap();
    let input = records(n, 1000);
    let avro = as_avro(&input, id, &reading_schema);
    let reader = AvroInput::new(&config).unwrap();
    let schema = streamhost::cmd::wiring::pipeline_config(&settings()).schema;
    let decode = |bytes: &[u8]| streamhost::decode::decode(&schema, bytes).unwrap();
    // Warm up (and cache the schema: the one registry request).
    decode(&reader.to_json(&avro[0]).unwrap().into_bytes());
    let json_bytes: usize = input
        .iter()
        .map(|r| r.payload.as_ref().unwrap().len())
        .sum();
    let avro_bytes: usize = avro.iter().map(Vec::len).sum();
    let (mut t_json, mut t_avro) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        for r in &input {
            std::hint::black_box(decode(r.payload.as_deref().unwrap()));
        }
        let j = started.elapsed().as_secs_f64();
        let started = Instant::now();
        for bytes in &avro {
            let text = reader.to_json(bytes).unwrap();
            std::hint::black_box(decode(text.as_bytes()));
        }
        let a = started.elapsed().as_secs_f64();
        t_json.push(j);
        t_avro.push(a);
    }
    let ratio = Ratio::of(&t_avro, &t_json);
    let per = |t: f64| t / n as f64 * 1e9;
    report.line(
        "| input format | bytes per reading | ns per record (median round) |\n|---|---:|---:|",
    );
    report.line(format!(
        "| JSON: decode | {:.0} | {:.0} |",
        json_bytes as f64 / n as f64,
        per(median(&mut t_json))
    ));
    report.line(format!(
        "| Avro: registry client's decode (schema cached), to JSON text, decode | {:.0} | {:.0} |",
        avro_bytes as f64 / n as f64,
        per(median(&mut t_avro))
    ));
    report.line("");
    ratio.report(report, "Avro / JSON, decode time per record");
    report.line("");
}
