//! The main job: consume, run the pipeline, produce, commit; until a signal
//! (or `--max-records`) says stop, then drain and commit before returning.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::decode::Schema;
use crate::pipeline::{Pipeline, PipelineConfig, RuleSet, Tally};
use crate::plugin::{Limits, Runtime};
use crate::sink::{Committer, Pending, Sink, flush};
use crate::source::Source;
use crate::window::WindowConfig;

/// Batches whose outputs may await acknowledgement at once.
const IN_FLIGHT_BATCHES: usize = 8;
/// Longest a drain (shutdown or revoke) waits for acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Loads every plugin file; any failure stops start-up with its reason.
pub fn load_rules(runtime: &Runtime, paths: &[PathBuf]) -> anyhow::Result<RuleSet> {
    let mut rules = RuleSet::default();
    let mut names = BTreeMap::new();
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))?;
        let plugin = runtime
            .load(&bytes, &path.display().to_string())
            .with_context(|| format!("loading plugin {}", path.display()))?;
        if let Some(other) = names.insert(plugin.name().to_string(), path.clone()) {
            bail!("plugins {} and {} both call themselves {:?}; names must be unique", other.display(), path.display(), plugin.name());
        }
        tracing::info!(
            plugin = plugin.name(),
            version = %plugin.info().version,
            kind = %plugin.kind(),
            file = %path.display(),
            "Plugin loaded."
        );
        rules.push(Arc::new(plugin));
    }
    Ok(rules)
}

pub fn pipeline_config(settings: &Settings) -> PipelineConfig {
    PipelineConfig {
        schema: Schema {
            key_field: settings.key_field.clone(),
            time_field: settings.time_field.clone(),
            fields: settings.fields.clone(),
        },
        window: WindowConfig {
            length_ms: settings.window.as_millis() as i64,
            lateness_ms: settings.allowed_lateness.as_millis() as i64,
            k: settings.window_values as usize,
            fields: settings.fields.len(),
        },
        source_topic: settings.input_topic.clone(),
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; draining."),
        _ = term.recv() => tracing::info!("SIGTERM received; draining."),
    }
}

/// Runs the main job until `shutdown` resolves (or `max_records` are done).
pub async fn run(settings: Settings, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<Tally> {
    let runtime = Runtime::new(Limits { deadline: settings.plugin_deadline, memory_bytes: settings.plugin_memory_bytes })?;
    let rules = load_rules(&runtime, &settings.plugins)?;
    if rules.all().next().is_none() {
        tracing::warn!("No plugins given: records get windows and pass through unchanged.");
    }
    let source = Source::new(&settings).context("creating the Kafka consumer")?;
    let sink = Sink::new(&settings).context("creating the Kafka producer")?;
    let committer = Committer::start(&source, IN_FLIGHT_BATCHES);
    {
        let producer = sink.producer().clone();
        let settled = committer.waiter();
        source.on_revoke(Box::new(move || {
            flush(&producer, DRAIN_TIMEOUT);
            if !settled(DRAIN_TIMEOUT) {
                tracing::warn!("Outputs still unacknowledged at revoke; their records will be consumed again.");
            }
        }));
    }
    let mut pipeline = Pipeline::new(pipeline_config(&settings));
    let mut total = Tally::default();
    let limit = settings.max_records.unwrap_or(u64::MAX);
    tracing::info!(topic = %settings.input_topic, group = %settings.group, brokers = %settings.brokers, "Consuming.");
    let mut shutdown = std::pin::pin!(shutdown);
    let result: anyhow::Result<()> = async {
        while total.input < limit {
            if let Some(error) = committer.failure() {
                bail!("stopping: an output could not be delivered: {error}");
            }
            let max = settings.batch_size.min((limit - total.input).try_into().unwrap_or(usize::MAX));
            let batch = tokio::select! {
                batch = source.next_batch(max, settings.batch_wait) => batch.context("consuming")?,
                _ = &mut shutdown => break,
            };
            let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
            for r in &batch {
                let next = next_offsets.entry(r.partition).or_insert(0);
                *next = (*next).max(r.offset + 1);
            }
            let records = batch.len() as u64;
            let now_ms = chrono::Utc::now().timestamp_millis();
            let output = tokio::task::block_in_place(|| pipeline.process(&rules, batch, now_ms));
            let deliveries = sink.send(&output.records).await.context("producing outputs")?;
            tokio::task::block_in_place(|| {
                committer.submit(Pending { deliveries, next_offsets: next_offsets.into_iter().collect(), records })
            });
            total.add(&output.tally);
        }
        Ok(())
    }
    .await;
    tracing::info!(records = total.input, "Draining: waiting for outputs to be acknowledged.");
    tokio::task::block_in_place(|| {
        flush(sink.producer(), DRAIN_TIMEOUT);
        let failure = committer.failure();
        committer.finish();
        source.commit();
        failure
    })
    .map_or(Ok(()), |e| Err(anyhow::anyhow!("an output could not be delivered: {e}")))?;
    result?;
    tracing::info!(
        records = total.input,
        enriched = total.enriched,
        alerts = total.alert_records,
        dead_letters = total.dead_letters(),
        "Stopped after committing."
    );
    Ok(total)
}
