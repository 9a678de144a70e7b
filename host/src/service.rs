//! The main job: consume, run the pipeline, produce, commit; until a signal
//! (or `--max-records`) says stop, then drain and commit before returning.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::decode::Schema;
use crate::kafka::{
    self,
    committer::{Committer, Pending},
    consumer::KafkaSource,
    producer::{KafkaSink, flush},
};
use crate::ops::admin::{self, Admin};
use crate::ops::metrics::Metrics;
use crate::pipeline::{OutputLimits, Pipeline, PipelineConfig, Tally};
use crate::rules::registry::Registry;
use crate::rules::runtime::{Limits, Runtime};
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
        limits: OutputLimits {
            max_message_bytes: settings.max_message_bytes(),
            ..OutputLimits::default()
        },
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

/// Everything a run holds: the rules, Kafka in and out, the committer.
struct Job {
    settings: Settings,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    source: Arc<KafkaSource>,
    sink: Arc<KafkaSink>,
    committer: Committer,
}

/// Runs the main job until `shutdown` resolves (or `max_records` are done).
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let job = start(settings).await?;
    let lag_task = tokio::spawn(watch_lag(job.source.clone(), job.metrics.clone()));
    let mut summary = Summary::default();
    let result = consume(&job, &mut summary, shutdown).await;
    lag_task.abort();
    drain(job, &summary.tally)?;
    result?;
    Ok(summary)
}

/// Loads the plugins, serves the admin API, and connects to Kafka.
async fn start(settings: Settings) -> anyhow::Result<Job> {
    let metrics = Arc::new(Metrics::default());
    let runtime = Arc::new(Runtime::new(Limits {
        deadline: settings.plugin_deadline,
        memory_bytes: settings.plugin_memory_bytes,
        ..Limits::default()
    })?);
    let registry = Arc::new(Registry::from_files(runtime, &settings.plugins)?);
    metrics.plugins_loaded.store(true, Ordering::Relaxed);
    metrics.watch_plugins(registry.clone());
    if registry.current().all().next().is_none() {
        tracing::warn!("No plugins given: records get windows and pass through unchanged.");
    }
    registry.watch();
    let admin = Arc::new(Admin {
        registry: registry.clone(),
        metrics: metrics.clone(),
        token: settings.admin_token.clone(),
    });
    let bound = admin::serve(admin, settings.admin)
        .await
        .with_context(|| format!("binding the admin API to {}", settings.admin))?;
    if let Some(file) = &settings.admin_address_file {
        std::fs::write(file, bound.to_string())
            .with_context(|| format!("writing the admin address to {}", file.display()))?;
    }
    tokio::spawn(reload_on_sighup(registry.clone()));

    let source = Arc::new(
        KafkaSource::new(&settings, metrics.assigned.clone())
            .context("creating the Kafka consumer")?,
    );
    let sink = Arc::new(KafkaSink::new(&settings).context("creating the Kafka producer")?);
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
                tracing::warn!(
                    "Outputs still unacknowledged at revoke; their records will be consumed again."
                );
            }
        }));
    }
    Ok(Job {
        settings,
        metrics,
        registry,
        source,
        sink,
        committer,
    })
}

/// The batch loop: consume, process, produce, hand to the committer.
async fn consume(
    job: &Job,
    summary: &mut Summary,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = &job.settings;
    let mut pipeline = Pipeline::new(pipeline_config(settings));
    let limit = settings.max_records.unwrap_or(u64::MAX);
    tracing::info!(topic = %settings.input_topic, group = %settings.group, brokers = %settings.brokers, "Consuming.");
    let mut shutdown = std::pin::pin!(shutdown);
    while summary.tally.input < limit {
        if let Some(error) = job.committer.failure() {
            bail!("stopping: an output could not be delivered: {error}");
        }
        let max = settings.batch_size.min(
            (limit - summary.tally.input)
                .try_into()
                .unwrap_or(usize::MAX),
        );
        let batch = tokio::select! {
            batch = job.source.next_batch(max, settings.batch_wait) => batch.context("consuming")?,
            _ = &mut shutdown => break,
            // An output failed while no input arrives: stop now, not at
            // the next record.
            _ = job.committer.failed() => continue,
        };
        let started = Instant::now();
        summary.first_batch.get_or_insert(started);
        let offsets = kafka::batch_offsets(&batch);
        let records = batch.len() as u64;
        let now_ms = chrono::Utc::now().timestamp_millis();
        // The rules as of this batch's start: a swap lands at a batch boundary.
        let rules = job.registry.current();
        let output = tokio::task::block_in_place(|| pipeline.process(&rules, batch, now_ms));
        let deliveries = job
            .sink
            .send(&output.records)
            .await
            .context("producing outputs")?;
        let next_offsets = offsets.iter().map(|(p, (next, _))| (*p, *next)).collect();
        tokio::task::block_in_place(|| {
            job.committer.submit(Pending {
                deliveries,
                next_offsets,
                records,
            })
        });

        let consumed: Vec<(i32, u64)> = offsets.iter().map(|(p, (_, n))| (*p, *n)).collect();
        let produced = output.records.iter().map(|r| job.sink.topic(r.dest));
        job.metrics.record_batch(
            &output.tally,
            &settings.input_topic,
            &consumed,
            produced,
            started.elapsed().as_secs_f64(),
        );
        job.metrics
            .set_windows(pipeline.windows().keys(), pipeline.windows().readings());
        summary.tally.add(&output.tally);
    }
    Ok(())
}

/// Waits for every output to be acknowledged and commits what they cover.
fn drain(job: Job, total: &Tally) -> anyhow::Result<()> {
    tracing::info!(
        records = total.input,
        "Draining: waiting for outputs to be acknowledged."
    );
    let failure = tokio::task::block_in_place(|| {
        flush(job.sink.producer(), DRAIN_TIMEOUT);
        let failure = job.committer.failure();
        job.committer.finish();
        job.source.commit();
        failure
    });
    if let Some(e) = failure {
        bail!("an output could not be delivered: {e}");
    }
    tracing::info!(
        records = total.input,
        enriched = total.enriched,
        alerts = total.alert_records,
        dead_letters = total.dead_letters(),
        "Stopped after committing."
    );
    Ok(())
}

/// Reloads every plugin file on SIGHUP.
async fn reload_on_sighup(registry: Arc<Registry>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading plugins.");
        let registry = registry.clone();
        let _ = tokio::task::spawn_blocking(move || registry.poll_files(true)).await;
    }
}

/// Refreshes the consumer-lag gauges every second, and warns when the input
/// topic's partition count changes (a topic recreated, or grown).
async fn watch_lag(source: Arc<KafkaSource>, metrics: Arc<Metrics>) {
    let mut partitions: Option<usize> = None;
    let mut assigned: Vec<i32> = Vec::new();
    for tick in 0u64.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = source.clone();
        if let Ok(lag) = tokio::task::spawn_blocking(move || s.lag()).await {
            metrics.set_lag(source.topic(), &lag, &mut assigned);
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
