//! The main job: consume, run the pipeline, produce, commit; until a signal
//! (or `--max-records`) says stop, then drain and commit before returning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::admin::{self, Admin};
use crate::config::Settings;
use crate::decode::Schema;
use crate::metrics::Metrics;
use crate::pipeline::{OutputLimits, Pipeline, PipelineConfig, Tally};
use crate::plugin::{Limits, Runtime};
use crate::registry::Registry;
use crate::sink::{Committer, Pending, Sink, flush};
use crate::source::Source;
use crate::window::WindowConfig;

/// Batches whose outputs may await acknowledgement at once.
const IN_FLIGHT_BATCHES: usize = 8;
/// Longest a drain (shutdown or revoke) waits for acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn pipeline_config(settings: &Settings) -> PipelineConfig {
    PipelineConfig {
        schema: Schema {
            key_field: settings.key_field.clone(),
            time_field: settings.time_field.clone(),
            fields: settings.fields.clone(),
            epoch_unit: settings.epoch_unit,
        },
        window: WindowConfig {
            length_ms: settings.window.as_millis() as i64,
            lateness_ms: settings.allowed_lateness.as_millis() as i64,
            k: settings.window_values as usize,
            fields: settings.fields.len(),
            idle_ms: settings.key_idle.as_millis() as i64,
        },
        source_topic: settings.input_topic.clone(),
        max_future_ms: settings.max_future.as_millis() as i64,
        // Long enough to isolate a few poisoned records in a batch that
        // times out on each of them, short enough not to stall the stream.
        isolation_budget: (settings.plugin_deadline * 50).max(Duration::from_secs(1)),
        limits: OutputLimits { max_message_bytes: settings.max_message_bytes(), ..OutputLimits::default() },
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

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub tally: Tally,
    /// When the first batch arrived (for throughput that excludes start-up).
    pub first_batch: Option<Instant>,
}

/// Runs the main job until `shutdown` resolves (or `max_records` are done).
pub async fn run(settings: Settings, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<Summary> {
    let metrics = Arc::new(Metrics::default());
    let runtime = Arc::new(Runtime::new(Limits {
        deadline: settings.plugin_deadline,
        memory_bytes: settings.plugin_memory_bytes,
        ..Limits::default()
    })?);
    let registry = Arc::new(Registry::from_files(runtime, &settings.plugins)?);
    metrics.plugins_loaded.store(true, Ordering::Relaxed);
    if registry.current().all().next().is_none() {
        tracing::warn!("No plugins given: records get windows and pass through unchanged.");
    }
    registry.watch();
    let admin = Arc::new(Admin { registry: registry.clone(), metrics: metrics.clone(), token: settings.admin_token.clone() });
    admin::serve(admin, settings.admin).await.with_context(|| format!("binding the admin API to {}", settings.admin))?;
    tokio::spawn(reload_on_sighup(registry.clone()));

    let source = Arc::new(Source::new(&settings, metrics.clone()).context("creating the Kafka consumer")?);
    let sink = Arc::new(Sink::new(&settings).context("creating the Kafka producer")?);
    {
        let sink = sink.clone();
        tokio::task::spawn_blocking(move || sink.check_topics(Duration::from_secs(10))).await??;
    }
    let committer = Committer::start(&source, sink.clone(), IN_FLIGHT_BATCHES);
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
    let lag_task = tokio::spawn(watch_lag(source.clone(), metrics.clone()));
    let mut pipeline = Pipeline::new(pipeline_config(&settings));
    let mut total = Tally::default();
    let mut first_batch = None;
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
                // An output failed while no input arrives: stop now, not at
                // the next record.
                _ = committer.failed() => continue,
            };
            let started = Instant::now();
            first_batch.get_or_insert(started);
            let mut per_partition: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
            for r in &batch {
                let e = per_partition.entry(r.partition).or_insert((0, 0));
                e.0 = e.0.max(r.offset + 1);
                e.1 += 1;
            }
            let records = batch.len() as u64;
            let now_ms = chrono::Utc::now().timestamp_millis();
            // The rules as of this batch's start: a swap lands at a batch boundary.
            let rules = registry.current();
            let output = tokio::task::block_in_place(|| pipeline.process(&rules, batch, now_ms));
            let deliveries = sink.send(&output.records).await.context("producing outputs")?;
            let next_offsets = per_partition.iter().map(|(p, (next, _))| (*p, *next)).collect();
            tokio::task::block_in_place(|| committer.submit(Pending { deliveries, next_offsets, records }));

            let consumed: Vec<_> = per_partition.iter().map(|(p, (_, n))| (settings.input_topic.clone(), *p, *n)).collect();
            let mut produced: BTreeMap<&str, u64> = BTreeMap::new();
            for r in &output.records {
                *produced.entry(sink.topic(r.dest)).or_default() += 1;
            }
            let produced: Vec<_> = produced.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
            metrics.record_batch(&output.tally, &consumed, &produced, started.elapsed().as_secs_f64());
            metrics.set_windows(pipeline.windows().keys(), pipeline.windows().readings());
            total.add(&output.tally);
        }
        Ok(())
    }
    .await;
    lag_task.abort();
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
    Ok(Summary { tally: total, first_batch })
}

/// Reloads every plugin file on SIGHUP.
async fn reload_on_sighup(registry: Arc<Registry>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading plugins.");
        let registry = registry.clone();
        let _ = tokio::task::spawn_blocking(move || registry.poll_files(true)).await;
    }
}

/// Refreshes the consumer-lag gauges every second, and warns when the input
/// topic's partition count changes (a topic recreated, or grown).
async fn watch_lag(source: Arc<Source>, metrics: Arc<Metrics>) {
    let mut partitions: Option<usize> = None;
    for tick in 0u64.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = source.clone();
        if let Ok(lag) = tokio::task::spawn_blocking(move || s.lag()).await {
            metrics.set_lag(source.topic(), &lag);
        }
        if tick % 10 == 0 {
            let s = source.clone();
            if let Ok(Some(now)) = tokio::task::spawn_blocking(move || s.partition_count()).await {
                match partitions.replace(now) {
                    Some(before) if before != now => tracing::warn!(
                        topic = source.topic(),
                        before,
                        now,
                        "The input topic's partition count changed (recreated or grown); keys may now map to other partitions, so their windows start over."
                    ),
                    _ => {}
                }
            }
        }
    }
}
