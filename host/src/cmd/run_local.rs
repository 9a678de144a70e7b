//! `streamhost run-local`: plugins over a file of JSON lines, with the real
//! decode, windows and routing, and no Kafka. The inner loop of writing a
//! rule, and a check of a rule against recorded data before it is deployed.
//!
//! Each line is one input record, as it would be consumed (a line that is
//! not JSON is a `decode` dead letter, as on Kafka). Records are numbered
//! by line (from 1) and batched by `--batch-size`; the windows are one
//! partition's. Outputs go to stdout as JSON lines, `{"to": "enriched" |
//! "alerts" | "dead-letter", "line": N, "key": ..., "value": ...}` (a dead
//! letter also has `headers`), or with `--out DIR` into
//! `DIR/enriched.jsonl`, `DIR/alerts.jsonl` and `DIR/dead-letters.jsonl`,
//! each line the record as it would be produced. A summary, with each
//! plugin's cost per record, its slowest call and its peak memory, goes to
//! stderr.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::config::{Format, Settings};
use crate::pipeline::{Pipeline, Tally};
use crate::record::{Dest, InRecord, OutRecord};
use crate::rules::registry::Registry;

/// What to read and where to write.
pub struct LocalRun {
    /// A file of JSON lines; `None` reads stdin.
    pub input: Option<PathBuf>,
    /// Write one file per destination here instead of printing.
    pub out: Option<PathBuf>,
    /// The processing time of the run, in epoch milliseconds (pinned, so
    /// that a run repeats exactly); `None` is the clock's.
    pub now_ms: Option<i64>,
}

/// Where outputs go.
enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Files {
        enriched: std::io::BufWriter<std::fs::File>,
        alerts: std::io::BufWriter<std::fs::File>,
        dead: std::io::BufWriter<std::fs::File>,
    },
}

impl Sink {
    fn open(out: Option<&PathBuf>) -> anyhow::Result<Sink> {
        let Some(dir) = out else {
            return Ok(Sink::Stdout(std::io::BufWriter::new(std::io::stdout())));
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = |name: &str| -> anyhow::Result<_> {
            let path = dir.join(name);
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            Ok(std::io::BufWriter::new(f))
        };
        Ok(Sink::Files {
            enriched: file("enriched.jsonl")?,
            alerts: file("alerts.jsonl")?,
            dead: file("dead-letters.jsonl")?,
        })
    }

    fn write(&mut self, r: &OutRecord) -> anyhow::Result<()> {
        let text = String::from_utf8_lossy(&r.payload);
        let key = r.key.as_deref().map(String::from_utf8_lossy);
        // Enriched records and alerts are JSON; a dead letter holds the
        // input as consumed, which need not be.
        let value: serde_json::Value = match r.dest {
            Dest::DeadLetter => serde_json::Value::String(text.to_string()),
            _ => serde_json::from_str(&text).context("an output that is not JSON")?,
        };
        let headers = || -> serde_json::Map<String, serde_json::Value> {
            r.headers
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                .collect()
        };
        match self {
            Sink::Stdout(w) => {
                let mut line = serde_json::json!({
                    "to": match r.dest {
                        Dest::Enriched => "enriched",
                        Dest::Alerts => "alerts",
                        Dest::DeadLetter => "dead-letter",
                    },
                    "line": r.source.1,
                    "key": key,
                });
                if r.dest == Dest::DeadLetter {
                    line["headers"] = serde_json::Value::Object(headers());
                }
                line["value"] = value;
                serde_json::to_writer(&mut *w, &line)?;
                w.write_all(b"\n")?;
            }
            Sink::Files {
                enriched,
                alerts,
                dead,
            } => match r.dest {
                Dest::Enriched => writeln!(enriched, "{text}")?,
                Dest::Alerts => writeln!(alerts, "{text}")?,
                Dest::DeadLetter => {
                    let line = serde_json::json!({
                        "line": r.source.1,
                        "key": key,
                        "headers": headers(),
                        "value": value,
                    });
                    serde_json::to_writer(&mut *dead, &line)?;
                    dead.write_all(b"\n")?;
                }
            },
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::Files {
                enriched,
                alerts,
                dead,
            } => {
                enriched.flush()?;
                alerts.flush()?;
                dead.flush()
            }
        }
    }
}

/// Runs `settings.plugins` over the input; returns the tally.
pub fn run(settings: &Settings, local: &LocalRun) -> anyhow::Result<Tally> {
    if settings.input_format != Format::Json || settings.output_format != Format::Json {
        bail!(
            "run-local reads and writes JSON lines; leave --input-format and --output-format at json"
        );
    }
    if !settings.tables.is_empty() {
        bail!("run-local has no broker to read reference tables from; leave out --table");
    }
    let started = std::time::Instant::now();
    let runtime = Arc::new(super::wiring::runtime(settings)?);
    let pinned = settings.plugin_config.0.clone();
    let registry = Registry::start_pinned(runtime, &settings.plugins, None, pinned)?;
    let loaded = started.elapsed();
    let rules = registry.current();
    let mut pipeline = Pipeline::new(super::wiring::pipeline_config(settings));
    let reader: Box<dyn BufRead> = match &local.input {
        None => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
    };
    let mut sink = Sink::open(local.out.as_ref())?;
    let mut tally = Tally::default();
    let mut batch = Vec::with_capacity(settings.batch_size);
    let processing = std::time::Instant::now();
    let mut flush_batch = |batch: &mut Vec<InRecord>, tally: &mut Tally| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = local
            .now_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let output = pipeline.process(&rules, std::mem::take(batch), now);
        for r in &output.records {
            sink.write(r)?;
        }
        tally.add(&output.tally);
        Ok(())
    };
    for (i, line) in reader.split(b'\n').enumerate() {
        let mut line = line.context("reading the input")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        batch.push(InRecord {
            partition: 0,
            offset: i as i64 + 1,
            timestamp: local.now_ms,
            key: None,
            payload: Some(line),
        });
        if batch.len() == settings.batch_size {
            flush_batch(&mut batch, &mut tally)?;
        }
    }
    flush_batch(&mut batch, &mut tally)?;
    sink.flush()?;
    summarize(&registry, &tally, loaded, processing.elapsed());
    Ok(tally)
}

/// The run's counts and each plugin's cost, on stderr.
fn summarize(
    registry: &Registry,
    tally: &Tally,
    loaded: std::time::Duration,
    took: std::time::Duration,
) {
    let by = |m: &mut dyn Iterator<Item = (String, u64)>| {
        m.map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "run-local: {} records in {:.3} s (plugins loaded in {:.3} s): {} enriched, {} dropped, {} alert records ({}), {} dead letters ({})",
        tally.input,
        took.as_secs_f64(),
        loaded.as_secs_f64(),
        tally.enriched,
        tally.dropped,
        tally.alert_records,
        by(&mut tally.alerts_by_kind.iter().map(|(k, v)| (k.clone(), *v))),
        tally.dead_letters(),
        by(&mut tally
            .dead_by_reason
            .iter()
            .map(|(k, v)| (k.to_string(), *v))),
    );
    eprintln!(
        "{:<16} {:<9} {:<9} {:>6} {:>8} {:>10} {:>13} {:>10} {:>11} {:>9}",
        "plugin",
        "kind",
        "version",
        "calls",
        "failures",
        "ns/record",
        "slowest call",
        "deadline",
        "peak memory",
        "memory cap"
    );
    for p in registry.list() {
        let serving = p.versions.iter().find(|v| v.serving);
        let (slowest_ms, peak_mib) =
            serving.map_or((0.0, 0.0), |v| (v.slowest_call_ms, v.peak_memory_mib));
        eprintln!(
            "{:<16} {:<9} {:<9} {:>6} {:>8} {:>10.0} {:>10.2} ms {:>7.0} ms {:>7.1} MiB {:>5} MiB",
            p.info.name,
            p.info.kind.as_str(),
            p.info.version,
            p.calls,
            p.failures,
            p.call_seconds * 1e9 / p.records.max(1) as f64,
            slowest_ms,
            p.deadline_ms,
            peak_mib,
            p.memory_mib,
        );
    }
}

/// `streamhost run-local`: the input, where outputs go, and the settings.
#[derive(clap::Args)]
pub struct Args {
    /// A file of JSON lines, one record each; `-` is stdin.
    #[arg(long, default_value = "-", value_name = "FILE")]
    pub input: PathBuf,
    /// Write DIR/enriched.jsonl, DIR/alerts.jsonl and
    /// DIR/dead-letters.jsonl instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Processing time of the run (RFC 3339), so that a run repeats
    /// exactly. [default: the clock]
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// The settings, as the main job takes them.
    #[command(flatten)]
    pub run: crate::config::RunArgs,
}

/// Runs `streamhost run-local`.
pub fn main(args: Args) -> anyhow::Result<()> {
    let settings = Settings::resolve(args.run)?;
    let now_ms = match args.now {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(&t)
                .with_context(|| format!("--now {t:?} is not RFC 3339"))?
                .timestamp_millis(),
        ),
    };
    let local = LocalRun {
        input: (args.input.as_os_str() != "-").then_some(args.input),
        out: args.out,
        now_ms,
    };
    let to_stdout = local.out.is_none();
    run(&settings, &local).map(|_| ()).map_err(|e| {
        // Its outputs go to stdout: a reader gone is no failure.
        let pipe = std::io::ErrorKind::BrokenPipe;
        let closed = to_stdout
            && e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == pipe);
        if closed {
            super::StdoutError(pipe.into()).into()
        } else {
            e
        }
    })
}
