//! The main job: consume, run the pipeline, produce, commit; until a signal
//! (or `--max-records`) says stop, then drain and commit before returning.
//!
//! Work is split by input partition. One task consumes and cuts batches;
//! each record goes to the worker that owns its partition (`partition mod
//! workers`), a thread with that partition's windows, which processes its
//! part of the batch in order, produces the outputs and hands them to its
//! committer lane. Plugin instances come from each plugin's pool, so
//! workers never share a `Store`. Before a worker processes a partition
//! whose consumption (re)started somewhere its windows do not end, it
//! rebuilds them (`crate::rebuild`).

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{RunArgs, Settings};
use crate::lifecycle::AlertMode;

use super::wiring::{pipeline_config, runtime, with_formats};
use worker::{Work, Worker};

mod keys;
mod worker;
use crate::kafka::{
    self,
    committer::Committer,
    consumer::KafkaSource,
    producer::{KafkaSink, flush},
    span::PartitionReader,
    state::StateTopic,
};
use crate::ops::admin::{self, Admin};
use crate::ops::metrics::Metrics;
use crate::pipeline::Tally;
use crate::rebuild::Rebuilt;
use crate::record::InRecord;
use crate::rules::registry::Registry;

/// Batches whose outputs may await acknowledgement at once.
const IN_FLIGHT_BATCHES: usize = 8;
/// Longest a drain (shutdown or revoke) waits for acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `streamhost` (the main job) until SIGINT or SIGTERM, or
/// `--max-records`; with `--max-records`, prints what it did as one JSON
/// object.
pub fn main(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    let max_records = settings.max_records;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tally = runtime.block_on(run(settings, shutdown_signal()))?.tally;
    if max_records.is_some() {
        let summary = serde_json::json!({
            "in": tally.input,
            "enriched": tally.enriched,
            "dropped": tally.dropped,
            "alert_records": tally.alert_records,
            "alerts_by_kind": tally.alerts_by_kind,
            "alerts_by_status": tally.alerts_by_status,
            "alerts_raised": tally.alerts_raised,
            "dead_letters_by_reason": tally.dead_by_reason,
        });
        out!("{summary}");
    }
    Ok(())
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
pub struct RunSummary {
    /// What the batches gave, summed.
    pub tally: Tally,
    /// When the first batch arrived (for throughput that excludes start-up).
    pub first_batch: Option<Instant>,
    /// Partition window rebuilds, in the order they finished.
    pub rebuilds: Vec<Rebuilt>,
}

/// Everything a run holds: the rules, Kafka in and out, the committer and
/// the workers.
struct Job {
    settings: Settings,
    metrics: Arc<Metrics>,
    source: Arc<KafkaSource>,
    shared: Arc<Shared>,
    workers: Vec<(SyncSender<Work>, std::thread::JoinHandle<Worker>)>,
}

/// What the workers share.
struct Shared {
    settings: Settings,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    sink: Arc<KafkaSink>,
    /// Where partitions' firing alerts are written (`--alerts lifecycle`).
    state: Option<StateTopic>,
    committer: Committer,
    /// Batches handed to workers and not yet handed to the committer.
    dispatched: Counter,
    /// Why a worker stopped, if one did.
    failure: Mutex<Option<String>>,
}

/// Runs the main job until `shutdown` resolves (or `max_records` are done).
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<RunSummary> {
    let job = start(settings).await?;
    let lag_task = tokio::spawn(watch_lag(job.source.clone(), job.metrics.clone()));
    let mut summary = RunSummary::default();
    let result = consume(&job, &mut summary, shutdown).await;
    lag_task.abort();
    let drained = tokio::task::block_in_place(|| drain(job, &mut summary));
    result?;
    drained?;
    Ok(summary)
}

/// Loads the plugins, serves the admin API, connects to Kafka and starts
/// the workers.
async fn start(settings: Settings) -> anyhow::Result<Job> {
    let metrics = Arc::new(Metrics::default());
    let registry = start_plugins(&settings, &metrics)?;
    let (admin_address, key_slot) = serve_admin(&settings, &registry, &metrics).await?;
    tokio::spawn(reload_on_sighup(registry.clone()));
    // Whole before the first record: nothing is consumed meanwhile, so
    // `/readyz` waits too.
    let tables = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || super::wiring::start_tables(&settings))
            .await?
            .context("loading the reference tables")?
    };
    metrics.watch_tables(tables.clone());

    let client_id = keys::client_id(&settings, admin_address);
    let source = Arc::new(
        KafkaSource::new(
            &keys::member_settings(&settings, &client_id),
            metrics.assigned.clone(),
        )
        .context("creating the Kafka consumer")?,
    );
    let sink = Arc::new(KafkaSink::new(&settings).context("creating the Kafka producer")?);
    {
        let sink = sink.clone();
        tokio::task::spawn_blocking(move || sink.check_topics(Duration::from_secs(10))).await??;
    }
    let state = match settings.alerts {
        AlertMode::EveryRecord => None,
        AlertMode::Lifecycle => {
            let given = settings.clone();
            let ensured = tokio::task::spawn_blocking(move || {
                StateTopic::ensure(&given, &PartitionReader::new(&given)?)
            });
            Some(ensured.await?.map_err(kafka::explain).with_context(|| {
                format!(
                    "setting up the alert state topic {:?} (--state-topic)",
                    settings.state_topic()
                )
            })?)
        }
    };
    let committer = Committer::start(&source, sink.clone(), IN_FLIGHT_BATCHES, settings.workers);
    let settled = committer.waiter();
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        metrics: metrics.clone(),
        registry,
        sink,
        state,
        committer,
        dispatched: Counter::default(),
        failure: Mutex::new(None),
    });
    drain_on_revoke(&source, &shared, settled);
    let desk = keys::Desk::new(&settings, &source, client_id);
    let workers = start_workers(&settings, &shared, &tables, &desk)?;
    let _ = key_slot.set(Box::new(desk));
    Ok(Job {
        settings,
        metrics,
        source,
        shared,
        workers,
    })
}

/// Loads the plugins and watches their files.
fn start_plugins(settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<Registry>> {
    let runtime = Arc::new(runtime(settings)?);
    let registry = Arc::new(Registry::start_pinned(
        runtime,
        &settings.plugins,
        settings.plugin_dir.as_deref(),
        settings.plugin_config.0.clone(),
    )?);
    metrics.plugins_loaded.store(true, Ordering::Relaxed);
    metrics.watch_plugins(registry.clone());
    if registry.current().all().next().is_none() {
        tracing::warn!("No plugins given: records get windows and pass through unchanged.");
    }
    registry.set_policy(settings.rollback);
    registry.watch();
    Ok(registry)
}

/// Serves the admin API, and writes where to `--admin-address-file`.
/// Returns the address bound, and where the key inspector's source goes
/// once the workers run.
async fn serve_admin(
    settings: &Settings,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(std::net::SocketAddr, admin::KeySlot)> {
    let key_slot = admin::KeySlot::default();
    let admin = Arc::new(Admin {
        about: serde_json::json!({
            "input_topic": settings.input_topic,
            "key_field": settings.key_field,
            "group": settings.group,
            "instance": settings.instance_id,
            "workers": settings.workers,
            "enriched_topic": settings.enriched_topic,
            "alerts_topic": settings.alerts_topic,
            "dlq_topic": settings.dlq_topic,
            "version": env!("CARGO_PKG_VERSION"),
        }),
        registry: registry.clone(),
        metrics: metrics.clone(),
        token: settings
            .admin_token
            .as_ref()
            .map(|t| t.expose().to_string()),
        keys: key_slot.clone(),
    });
    let bound = admin::serve(admin, settings.admin)
        .await
        .with_context(|| format!("binding the admin API to {}", settings.admin))?;
    if let Some(file) = &settings.admin_address_file {
        std::fs::write(file, bound.to_string())
            .with_context(|| format!("writing the admin address to {}", file.display()))?;
    }
    Ok((bound, key_slot))
}

/// Before partitions are given up: every batch already handed to a worker
/// is processed, its outputs acknowledged, and its offsets stored (the
/// consumer then commits them).
fn drain_on_revoke(
    source: &KafkaSource,
    shared: &Arc<Shared>,
    settled: impl Fn(Duration) -> bool + Send + Sync + 'static,
) {
    // Weak: the consumer outlives the job's hold on `shared`.
    let shared = Arc::downgrade(shared);
    source.on_revoke(Box::new(move || {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.dispatched.wait_zero(DRAIN_TIMEOUT) {
            tracing::warn!("Workers still busy at revoke; their records will be consumed again.");
        }
        flush(shared.sink.producer(), DRAIN_TIMEOUT);
        if !settled(DRAIN_TIMEOUT) {
            tracing::warn!(
                "Outputs still unacknowledged at revoke; their records will be consumed again."
            );
        }
    }));
}

/// One thread per worker, each fed its share of every batch, and between
/// batches answering the key inspector's questions (`keys`).
fn start_workers(
    settings: &Settings,
    shared: &Arc<Shared>,
    tables: &[crate::kafka::table::TableHandle],
    desk: &keys::Desk,
) -> anyhow::Result<Vec<(SyncSender<Work>, std::thread::JoinHandle<Worker>)>> {
    let mut config = with_formats(pipeline_config(settings), settings)?;
    config.tables = super::wiring::read_tables(tables);
    let mut workers = Vec::with_capacity(settings.workers);
    for id in 0..settings.workers {
        let mut worker = Worker::new(id, settings, config.clone())
            .context("creating a worker's rebuild reader")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Work>(2);
        let shared = shared.clone();
        let asks = desk.add_worker();
        let thread = std::thread::Builder::new()
            .name(format!("streamhost-worker-{id}"))
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                loop {
                    match rx.recv_timeout(keys::ASK_POLL) {
                        Ok(work) => {
                            worker.run(work, &shared);
                            shared.dispatched.sub();
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    worker.answer(&asks, &shared);
                }
                worker
            })
            .context("starting a worker")?;
        workers.push((tx, thread));
    }
    tracing::info!(workers = settings.workers, "Workers started.");
    Ok(workers)
}

/// The batch loop: consume, split by partition, hand each worker its part.
async fn consume(
    job: &Job,
    summary: &mut RunSummary,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = &job.settings;
    let limit = settings.max_records.unwrap_or(u64::MAX);
    let mut consumed = 0u64;
    tracing::info!(topic = %settings.input_topic, group = %settings.group, brokers = %settings.brokers, "Consuming.");
    let mut shutdown = std::pin::pin!(shutdown);
    while consumed < limit {
        if let Some(error) = job.shared.stopped() {
            bail!("stopping: {error}");
        }
        let max = settings
            .batch_size
            .min((limit - consumed).try_into().unwrap_or(usize::MAX));
        let (batch, held) = tokio::select! {
            batch = job.source.next_batch(max, settings.batch_wait) => {
                batch.map_err(kafka::explain).context("consuming")?
            }
            _ = &mut shutdown => break,
            // An output failed while no input arrives: stop now, not at
            // the next record.
            _ = job.shared.committer.failed() => continue,
        };
        if batch.is_empty() {
            continue;
        }
        summary.first_batch.get_or_insert_with(Instant::now);
        consumed += batch.len() as u64;
        let held = Arc::new(held);
        let n = job.workers.len();
        let mut parts: Vec<Vec<InRecord>> = (0..n).map(|_| Vec::new()).collect();
        for r in batch {
            parts[worker_of(r.partition, n)].push(r);
        }
        for (records, (tx, _)) in parts.into_iter().zip(&job.workers) {
            if records.is_empty() {
                continue;
            }
            job.shared.dispatched.add();
            let work = Work {
                records,
                held: held.clone(),
            };
            if tokio::task::block_in_place(|| tx.send(work)).is_err() {
                job.shared.dispatched.sub();
                bail!("a worker stopped unexpectedly");
            }
        }
    }
    Ok(())
}

/// The worker that owns `partition`, of `workers`.
pub fn worker_of(partition: i32, workers: usize) -> usize {
    partition.unsigned_abs() as usize % workers
}

/// Stops the workers, waits for every output to be acknowledged and commits
/// what they cover.
fn drain(job: Job, summary: &mut RunSummary) -> anyhow::Result<()> {
    tracing::info!("Draining: finishing batches and waiting for outputs to be acknowledged.");
    let mut lost_worker = false;
    for (tx, thread) in job.workers {
        drop(tx);
        match thread.join() {
            Ok(worker) => {
                summary.tally.add(&worker.tally);
                summary.rebuilds.extend(worker.rebuilds);
            }
            Err(_) => lost_worker = true,
        }
    }
    let shared = Arc::into_inner(job.shared).context("a worker still holds the job")?;
    flush(shared.sink.producer(), DRAIN_TIMEOUT);
    let failure = shared.committer.failure();
    shared.committer.finish();
    job.source.commit();
    if let Some(e) = failure {
        bail!("an output could not be delivered: {e}");
    }
    if let Some(e) = shared.failure.into_inner().unwrap() {
        bail!("{e}");
    }
    if lost_worker {
        bail!("a worker panicked");
    }
    let total = &summary.tally;
    tracing::info!(
        records = total.input,
        enriched = total.enriched,
        alerts = total.alert_records,
        dead_letters = total.dead_letters(),
        "Stopped after committing."
    );
    Ok(())
}

impl Shared {
    /// Why the job must stop, if it must.
    fn stopped(&self) -> Option<String> {
        if let Some(e) = self.committer.failure() {
            return Some(format!("an output could not be delivered: {e}"));
        }
        self.failure.lock().unwrap().clone()
    }

    fn fail(&self, error: String) {
        tracing::error!(%error, "A worker stopped.");
        self.failure.lock().unwrap().get_or_insert(error);
    }
}

/// A count of work in progress that can be waited on to reach zero.
#[derive(Default)]
struct Counter {
    n: Mutex<usize>,
    zero: Condvar,
}

impl Counter {
    fn add(&self) {
        *self.n.lock().unwrap() += 1;
    }

    fn sub(&self) {
        let mut n = self.n.lock().unwrap();
        *n -= 1;
        if *n == 0 {
            self.zero.notify_all();
        }
    }

    fn wait_zero(&self, timeout: Duration) -> bool {
        let n = self.n.lock().unwrap();
        let (n, _) = self
            .zero
            .wait_timeout_while(n, timeout, |n| *n > 0)
            .unwrap();
        *n == 0
    }
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
        metrics.console.sample();
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
