//! The loader of a reference table (`crate::table`): every partition of the
//! table's topic read from its beginning, outside any consumer group, into
//! a `Table` that the pipeline reads.
//!
//! Shaped like the global thread of a Kafka Streams GlobalKTable: each
//! process holds the whole table, whatever input partitions it holds, so
//! there is no group and nothing to rebuild on a rebalance. One thread a
//! table, with an assign-only consumer, loads the topic up to the high
//! watermarks it had at start (the table is then *ready*: the process may
//! process its first record), then keeps applying updates as they arrive;
//! a record sees its row as it is when its batch is processed. The
//! pipeline reads the table under a read lock held while it builds one
//! batch's rows; the loader takes the write lock for each record.
//!
//! The topic is checked first: missing is an error, and a topic that is not
//! compacted is a warning (its retention deletes rows that were not updated
//! lately, so a restart would load fewer rows than the process held).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{ErrorStreak, LogContext};
use crate::config::Settings;
use crate::table::{Table, TableSource};

/// Broker requests at start (metadata, watermarks, configuration).
const REQUEST: Duration = Duration::from_secs(10);
/// How often the loader asks the broker for the lag.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// Refused records logged one by one; later ones are only counted.
const LOGGED_REFUSALS: u64 = 10;
/// The reader's name in consumer-error warnings.
const READER: &str = "a reference table loader";

/// What goes wrong starting or loading a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The table's topic does not exist.
    #[error(
        "table {table:?}: topic {topic:?} does not exist; create it (compacted), or fix \
         --table {table}={topic}, before starting"
    )]
    MissingTopic {
        /// The table's name.
        table: String,
        /// Its topic.
        topic: String,
    },
    /// The broker will not serve the table's topic.
    #[error("table {table:?}: topic {topic:?} is not usable: {why}")]
    UnusableTopic {
        /// The table's name.
        table: String,
        /// Its topic.
        topic: String,
        /// The broker's error code, or that the topic has no partitions.
        why: String,
    },
    /// The brokers could not be asked about the topic, or read.
    #[error("table {table:?}: reading topic {topic:?}")]
    Kafka {
        /// The table's name.
        table: String,
        /// Its topic.
        topic: String,
        /// Why not.
        #[source]
        source: Box<super::Error>,
    },
    /// The loader stopped before the table was loaded.
    #[error("table {table:?}: the loader of topic {topic:?} stopped: {reason}")]
    Stopped {
        /// The table's name.
        table: String,
        /// Its topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// The topic's `cleanup.policy`, as the broker described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// `compact`: the topic keeps every key's latest row.
    Compact,
    /// Anything else: the policy given, or `None` when the broker gave none
    /// (its default applies: `delete` unless changed).
    NotCompact(Option<String>),
    /// Not known: the broker did not describe the topic's configuration.
    Unknown(String),
}

/// A table's figures, as the metrics and the admin API show them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableStats {
    /// Rows held.
    pub rows: usize,
    /// Records applied (rows put or deleted).
    pub applied: u64,
    /// Records refused: no key, or a value that is not a JSON object.
    pub refused: u64,
    /// Records of the topic not applied yet: high watermark minus position,
    /// summed over its partitions; `None` before the broker was first asked.
    pub lag: Option<i64>,
    /// Time since the Kafka timestamp of the newest record applied (its
    /// arrival when it has none); `None` before the first.
    pub age: Option<Duration>,
    /// Whether the table was loaded.
    pub ready: bool,
}

/// Where the load is.
enum State {
    Loading,
    Ready,
    /// The loader ended, with why (after the load, the table keeps its rows
    /// but no longer changes).
    Stopped(String),
}

/// What the loader thread and the handles share.
struct Shared {
    source: TableSource,
    cleanup: Cleanup,
    table: RwLock<Table>,
    state: Mutex<State>,
    changed: Condvar,
    ready: AtomicBool,
    stop: AtomicBool,
    /// -1: not known yet.
    lag: AtomicI64,
    /// Epoch milliseconds of the newest record applied; `i64::MIN`: none.
    newest_ms: AtomicI64,
}

impl Shared {
    fn set_state(&self, state: State) {
        if matches!(state, State::Ready) {
            self.ready.store(true, Ordering::Release);
        }
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        self.changed.notify_all();
    }
}

/// A table and its loader. Cheap to clone; the loader stops once every
/// handle is dropped, or at [`TableHandle::stop`].
#[derive(Clone)]
pub struct TableHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableHandle")
            .field("source", &self.shared.source)
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl TableHandle {
    /// A handle on a table held in memory, ready, with no loader: for
    /// tests and benchmarks of what reads tables.
    pub fn fixed(source: TableSource, table: Table) -> TableHandle {
        let handle = TableHandle {
            shared: Arc::new(Shared {
                source,
                cleanup: Cleanup::Compact,
                table: RwLock::new(table),
                state: Mutex::new(State::Loading),
                changed: Condvar::new(),
                ready: AtomicBool::new(false),
                stop: AtomicBool::new(true),
                lag: AtomicI64::new(0),
                newest_ms: AtomicI64::new(i64::MIN),
            }),
        };
        handle.shared.set_state(State::Ready);
        handle
    }

    /// The table as `--table` gave it.
    pub fn source(&self) -> &TableSource {
        &self.shared.source
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.shared.source.name
    }

    /// The topic's `cleanup.policy`, as checked at start.
    pub fn cleanup(&self) -> &Cleanup {
        &self.shared.cleanup
    }

    /// Whether the table was loaded up to the end its topic had at start.
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for the table to be loaded: `Ok(true)` once it
    /// is, `Ok(false)` if it is still loading, `Err` if its loader stopped
    /// first, or librdkafka met a condition no retry fixes (refused
    /// credentials, say).
    pub fn wait_ready(&self, timeout: Duration) -> Result<bool, TableError> {
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let reason = match &*state {
                _ if self.ready() => return Ok(true),
                State::Stopped(reason) => reason.clone(),
                _ => match super::fatal() {
                    Some(fatal) => fatal.to_string(),
                    None => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Ok(false);
                        }
                        // In steps, to see a fatal condition on the way.
                        let step = (deadline - now).min(Duration::from_millis(500));
                        state = (shared.changed.wait_timeout(state, step))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        continue;
                    }
                },
            };
            return Err(TableError::Stopped {
                table: shared.source.name.clone(),
                topic: shared.source.topic.clone(),
                reason,
            });
        }
    }

    /// Why the loader stopped, if it did (the table then keeps its rows).
    pub fn stopped(&self) -> Option<String> {
        match &*self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            State::Stopped(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// The table, read-locked: hold it only while building a batch's rows
    /// (the loader waits meanwhile).
    pub fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.shared
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The table's figures now.
    pub fn stats(&self) -> TableStats {
        let (rows, applied, refused) = {
            let t = self.read();
            (t.len(), t.applied(), t.refused())
        };
        let lag = self.shared.lag.load(Ordering::Relaxed);
        let newest = self.shared.newest_ms.load(Ordering::Relaxed);
        TableStats {
            rows,
            applied,
            refused,
            lag: (lag >= 0).then_some(lag),
            age: (newest != i64::MIN)
                .then(|| Duration::from_millis(now_ms().saturating_sub(newest).max(0) as u64)),
            ready: self.ready(),
        }
    }

    /// Stops the loader (within a fraction of a second); the table keeps
    /// its rows.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The client configuration tables are read with: the settings' brokers
/// and the `-X` consumer properties (security included), as the input
/// consumer has them.
pub fn client_config(settings: &Settings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    super::apply_properties(&mut config, settings, "consumer");
    config
}

/// Starts loading `source`'s table with `config` (see [`client_config`]):
/// checks that its topic exists and how it is cleaned up, then loads it in
/// a thread of its own. The handle is [`TableHandle::ready`] once the table
/// holds the topic up to the end it had now.
pub fn start(config: ClientConfig, source: TableSource) -> Result<TableHandle, TableError> {
    let kafka = |e: KafkaError| TableError::Kafka {
        table: source.name.clone(),
        topic: source.topic.clone(),
        source: Box::new(super::explain(e)),
    };
    let consumer = reader(&config, &source).map_err(kafka)?;
    let partitions = partitions(&consumer, &source)?;
    let cleanup = cleanup_policy(&config, &source);
    // Where each partition ends now: loaded once each is read up to there.
    let mut ends = BTreeMap::new();
    let mut records = 0;
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&source.topic, p, REQUEST)
            .map_err(kafka)?;
        if high > low {
            ends.insert(p, high);
            records += high - low;
        }
        assignment
            .add_partition_offset(&source.topic, p, Offset::Beginning)
            .map_err(kafka)?;
    }
    consumer.assign(&assignment).map_err(kafka)?;
    tracing::info!(
        table = %source.name,
        topic = %source.topic,
        partitions = partitions.len(),
        records,
        "Loading reference table."
    );
    let shared = Arc::new(Shared {
        source,
        cleanup,
        table: RwLock::new(Table::new()),
        state: Mutex::new(State::Loading),
        changed: Condvar::new(),
        ready: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        lag: AtomicI64::new(-1),
        newest_ms: AtomicI64::new(i64::MIN),
    });
    let weak = Arc::downgrade(&shared);
    std::thread::Builder::new()
        .name(format!("table-{}", shared.source.name))
        .spawn(move || load(consumer, weak, ends))
        .map_err(|e| TableError::Stopped {
            table: shared.source.name.clone(),
            topic: shared.source.topic.clone(),
            reason: format!("its thread did not start: {e}"),
        })?;
    Ok(TableHandle { shared })
}

/// An assign-only consumer of the table's topic, from the beginning, that
/// reports each partition's end (to know when the load is done).
fn reader(
    config: &ClientConfig,
    source: &TableSource,
) -> Result<BaseConsumer<LogContext>, KafkaError> {
    let mut config = config.clone();
    config
        // librdkafka assigns only with a group; this one is never joined
        // and nothing is committed to it.
        .set("group.id", format!("streamhost-table-{}", source.name))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("client.id", format!("streamhost-table-{}", source.name))
        // As the window rebuild reader (`span`): the broker holds a fetch
        // up to 100 ms for data (so an update waits at most that long when
        // the topic is quiet), and a drained queue is refilled at once.
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "5");
    for key in ["group.instance.id", "partition.assignment.strategy"] {
        config.remove(key);
    }
    config.create_with_context(LogContext)
}

/// The topic's partitions, asked in short rounds for up to [`REQUEST`], so
/// that an error no retry fixes ends the wait at once.
fn partitions(
    consumer: &BaseConsumer<LogContext>,
    source: &TableSource,
) -> Result<Vec<i32>, TableError> {
    let (table, topic) = (source.name.clone(), source.topic.clone());
    let started = Instant::now();
    let md = loop {
        match consumer.fetch_metadata(Some(&source.topic), Duration::from_secs(1)) {
            Ok(md) => break md,
            Err(e) if super::fatal().is_some() || started.elapsed() >= REQUEST => {
                let source = Box::new(super::explain(e));
                return Err(TableError::Kafka {
                    table,
                    topic,
                    source,
                });
            }
            Err(_) => {}
        }
    };
    super::reached();
    let Some(t) = md.topics().iter().find(|t| t.name() == source.topic) else {
        return Err(TableError::MissingTopic { table, topic });
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None if !t.partitions().is_empty() => Ok(t.partitions().iter().map(|p| p.id()).collect()),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            Err(TableError::MissingTopic { table, topic })
        }
        code => Err(TableError::UnusableTopic {
            table,
            topic,
            why: code.map_or_else(|| "it has no partitions".into(), |c| format!("{c:?}")),
        }),
    }
}

/// The topic's `cleanup.policy`, with a warning unless it is `compact`.
fn cleanup_policy(config: &ClientConfig, source: &TableSource) -> Cleanup {
    let cleanup = describe_cleanup(config, &source.topic);
    let (table, topic) = (&source.name, &source.topic);
    match &cleanup {
        Cleanup::Compact => {}
        Cleanup::NotCompact(policy) => {
            let policy = policy
                .as_deref()
                .unwrap_or("not set: the broker's default, normally delete");
            tracing::warn!(
                %table,
                %topic,
                %policy,
                "The table's topic is not compacted (cleanup.policy is not `compact`): its \
                 retention deletes records however recent their key's row is, so rows not \
                 updated lately are lost from the topic and a restart will not load them. \
                 Set cleanup.policy=compact on the topic."
            );
        }
        Cleanup::Unknown(why) => {
            tracing::warn!(
                %table,
                %topic,
                %why,
                "Could not check that the table's topic is compacted: the broker did not \
                 describe its configuration. A topic that is not compacted loses rows not \
                 updated within its retention."
            );
        }
    }
    cleanup
}

/// Asks the broker for the topic's `cleanup.policy` (DescribeConfigs).
fn describe_cleanup(config: &ClientConfig, topic: &str) -> Cleanup {
    let admin: AdminClient<LogContext> = match config.create_with_context(LogContext) {
        Ok(admin) => admin,
        Err(e) => return Cleanup::Unknown(format!("no admin client: {e}")),
    };
    let options = AdminOptions::new().request_timeout(Some(REQUEST));
    let asked = [ResourceSpecifier::Topic(topic)];
    let answer = futures::executor::block_on(admin.describe_configs(&asked, &options));
    match answer.map(|mut all| all.pop()) {
        Ok(Some(Ok(resource))) => {
            let policy = resource.get("cleanup.policy").and_then(|e| e.value.clone());
            match policy {
                Some(p) if p.split(',').all(|p| p.trim() == "compact") => Cleanup::Compact,
                p => Cleanup::NotCompact(p),
            }
        }
        Ok(Some(Err(code))) => Cleanup::Unknown(code.to_string()),
        Err(e) => Cleanup::Unknown(e.to_string()),
        Ok(None) => Cleanup::Unknown("the broker's answer named no topic".into()),
    }
}

/// The loader thread: polls until stopped or every handle is gone.
fn load(consumer: BaseConsumer<LogContext>, shared: Weak<Shared>, mut ends: BTreeMap<i32, i64>) {
    let started = Instant::now();
    let mut loading = true;
    let mut errors = ErrorStreak::default();
    let mut refusals = 0u64;
    let mut lag_asked: Option<Instant> = None;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if loading && ends.is_empty() {
            loading = false;
            let rows = shared
                .table
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            tracing::info!(
                table = %shared.source.name,
                rows,
                seconds = started.elapsed().as_secs_f64(),
                "Reference table loaded."
            );
            shared.set_state(State::Ready);
        }
        if lag_asked.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
            if let Some(lag) = lag(&consumer, &shared.source.topic) {
                shared.lag.store(lag, Ordering::Relaxed);
            }
            lag_asked = Some(Instant::now());
        }
        let error = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(m)) => {
                errors.progress();
                apply(&shared, &m, &mut refusals);
                if ends
                    .get(&m.partition())
                    .is_some_and(|&end| m.offset() + 1 >= end)
                {
                    ends.remove(&m.partition());
                }
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
                continue;
            }
            Some(Err(e)) => e,
        };
        let Some(code) = error.rdkafka_error_code() else {
            tracing::warn!(table = %shared.source.name, %error, "Table loader error; continuing.");
            continue;
        };
        if let Err(end) = errors.error(code, READER) {
            tracing::error!(
                table = %shared.source.name,
                error = %end,
                "The reference table's loader stopped: the table no longer changes."
            );
            shared.set_state(State::Stopped(format!("{end} ({error})")));
            return;
        }
    }
}

/// Applies one record to the table.
fn apply(shared: &Shared, m: &BorrowedMessage<'_>, refusals: &mut u64) {
    let result = shared
        .table
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .apply(m.key(), m.payload());
    if let Err(reason) = result {
        *refusals += 1;
        if *refusals <= LOGGED_REFUSALS {
            tracing::warn!(
                table = %shared.source.name,
                partition = m.partition(),
                offset = m.offset(),
                %reason,
                "Table record refused; the row is unchanged."
            );
        }
    }
    let at = m.timestamp().to_millis().unwrap_or_else(now_ms);
    shared.newest_ms.fetch_max(at, Ordering::Relaxed);
}

/// High watermark minus position, summed over the assigned partitions;
/// `None` when the broker could not be asked.
fn lag(consumer: &BaseConsumer<LogContext>, topic: &str) -> Option<i64> {
    let position = consumer.position().ok()?;
    let mut lag = 0;
    for e in position.elements_for_topic(topic) {
        let (low, high) = consumer
            .fetch_watermarks(topic, e.partition(), Duration::from_secs(1))
            .ok()?;
        let at = match e.offset() {
            Offset::Offset(at) => at,
            // Nothing read yet: from the beginning.
            _ => low,
        };
        lag += (high - at.max(low)).max(0);
    }
    Some(lag)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
