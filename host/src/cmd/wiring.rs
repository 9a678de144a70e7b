//! The pipeline's parts as the settings ask for them, shared by the commands
//! that run rules (`run`, `run-local`, `replay`, `inspect`) and by the
//! tests and the bench.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::avro::{AvroInput, AvroOutput, Target};
use crate::config::{Format, Settings};
use crate::decode::{InputFormat, Schema};
use crate::kafka::table::{self, TableHandle};
use crate::pipeline::{OutputLimits, PipelineConfig, ReadTable, Tables};
use crate::rules::runtime::{Limits, Offer, Runtime, cache};
use crate::table::{Table, TableSource};
use crate::window::WindowConfig;

/// The pipeline's configuration from the settings: JSON in and out (see
/// `with_formats` for Avro).
pub fn pipeline_config(settings: &Settings) -> PipelineConfig {
    PipelineConfig {
        // JSON in and out; `with_formats` sets Avro up.
        input: InputFormat::Json,
        avro_output: None,
        shape: settings.enriched_shape,
        schema: Schema {
            key_field: settings.key_field.clone(),
            time_field: settings.time_field.clone(),
            fields: settings.fields.clone(),
            epoch_unit: settings.epoch_unit,
        },
        window: WindowConfig {
            length_ms: settings.window.as_millis() as i64,
            declared: Vec::new(),
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
        // Filled by `run` once its table loaders start.
        tables: Vec::new(),
        alerts: settings.alerts,
        alert_repeat_ms: settings.alert_repeat.as_millis() as i64,
    }
}

/// `config` with the record formats the settings ask for: Avro's reader and
/// writer share one registry client each across the workers (and their
/// schema caches).
pub fn with_formats(
    mut config: PipelineConfig,
    settings: &Settings,
) -> anyhow::Result<PipelineConfig> {
    let registry = || {
        settings
            .registry
            .as_ref()
            .context("the Avro format needs --schema-registry")
    };
    if settings.input_format == Format::Avro {
        config.input = InputFormat::Avro(Arc::new(AvroInput::new(registry()?)?));
    }
    if settings.output_format == Format::Avro {
        config.avro_output = Some(Arc::new(AvroOutput::new(
            registry()?,
            settings.subject_strategy,
            Target {
                topic: settings.enriched_topic.clone(),
                subject: settings.enriched_subject.clone(),
            },
            Target {
                topic: settings.alerts_topic.clone(),
                subject: settings.alerts_subject.clone(),
            },
        )?));
    }
    Ok(config)
}

/// Largest size of the compile cache on disk.
const COMPILE_CACHE_BYTES: u64 = 2 << 30;

/// The plugin runtime the settings ask for: default limits, and compiled
/// components kept on disk unless `--compile-cache off`.
pub fn runtime(settings: &Settings) -> anyhow::Result<Runtime> {
    let runtime = Runtime::new(Limits {
        deadline: settings.plugin_deadline,
        memory_bytes: settings.plugin_memory_bytes,
        ..Limits::default()
    })?
    .with_offer(Offer {
        fields: Some(settings.fields.clone()),
        tables: Some(settings.tables.iter().map(|t| t.name.clone()).collect()),
    });
    Ok(with_compile_cache(
        runtime,
        settings.compile_cache.as_deref(),
    ))
}

/// `runtime` with the compile cache in `dir`; without one when `dir` is
/// `None` or cannot be used (a read-only home, a folder others can write),
/// which is logged: the cache only saves time.
pub fn with_compile_cache(runtime: Runtime, dir: Option<&std::path::Path>) -> Runtime {
    let Some(dir) = dir else {
        return runtime;
    };
    match cache::DiskCache::open(dir, runtime.engine(), COMPILE_CACHE_BYTES) {
        Ok(disk) => runtime.with_disk(disk),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "Compile cache unusable; components are compiled at every load.");
            runtime
        }
    }
}

/// Starts a loader for every `--table`, and waits until each holds its
/// topic up to the end it had at start (logging progress), so the first
/// record processed sees whole tables. A table whose topic is missing, or
/// whose loader stops, stops start-up.
pub fn start_tables(settings: &Settings) -> anyhow::Result<Vec<TableHandle>> {
    let mut handles = Vec::with_capacity(settings.tables.len());
    for source in &settings.tables {
        handles.push(table::start(
            table::client_config(settings),
            source.clone(),
        )?);
    }
    for h in &handles {
        let started = std::time::Instant::now();
        while !h.wait_ready(Duration::from_secs(5))? {
            let stats = h.stats();
            tracing::info!(table = h.name(), rows = stats.rows, lag = ?stats.lag, seconds = started.elapsed().as_secs(), "Loading a reference table.");
        }
        let stats = h.stats();
        tracing::info!(table = h.name(), topic = %h.source().topic, rows = stats.rows, seconds = started.elapsed().as_secs_f64(), "Reference table loaded.");
    }
    Ok(handles)
}

/// The tables as a pipeline reads them.
pub fn read_tables(handles: &[TableHandle]) -> Tables {
    handles
        .iter()
        .map(|h| Arc::new(h.clone()) as Arc<dyn ReadTable>)
        .collect()
}

impl ReadTable for TableHandle {
    fn source(&self) -> &TableSource {
        TableHandle::source(self)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        TableHandle::read(self)
    }
}
