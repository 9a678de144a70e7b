//! The key inspector's side of the job (`crate::ops::keys::KeySource`):
//! questions go to every worker on a channel of their own, beside the
//! batches, and each worker answers between two batches (`Worker::answer`)
//! from the windows it owns; Kafka is asked through the job's consumer.
//!
//! A channel of its own rather than a message on the batch channel: the
//! batch loop and its counting of work in flight stay as they are, and an
//! idle worker still answers within `ASK_POLL`, the longest it waits for a
//! batch before looking for questions.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::kafka::consumer::KafkaSource;
use crate::kafka::group::{self, Member};
use crate::ops::keys::{Asked, Found, KeySource};
use crate::pipeline::inspect::{KeyState, TableRow};

/// The longest an idle worker waits for a batch before it looks for
/// questions (so also the longest an idle worker keeps a question waiting).
pub(super) const ASK_POLL: Duration = Duration::from_millis(25);
/// The longest a question waits for the workers (one may be busy with a
/// long batch or a rebuild).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a question waits for the broker.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// A question to one worker.
pub(super) struct Ask {
    pub(super) key: String,
    pub(super) readings: usize,
    /// Whether to read the reference tables too (one worker does).
    pub(super) tables: bool,
    pub(super) reply: Sender<Answer>,
}

/// One worker's answer.
pub(super) struct Answer {
    pub(super) worker: usize,
    pub(super) found: Vec<KeyState>,
    pub(super) tables: Vec<TableRow>,
}

/// The job as the key inspector sees it.
pub(super) struct Desk {
    asks: Mutex<Vec<Sender<Ask>>>,
    /// Weak: the admin API outlives the job.
    source: Weak<KafkaSource>,
    topic: String,
    group: String,
    client_id: String,
    workers: usize,
}

impl Desk {
    pub(super) fn new(settings: &Settings, source: &Arc<KafkaSource>, client_id: String) -> Desk {
        Desk {
            asks: Mutex::new(Vec::new()),
            source: Arc::downgrade(source),
            topic: settings.input_topic.clone(),
            group: settings.group.clone(),
            client_id,
            workers: settings.workers,
        }
    }

    /// The questions for the next worker started.
    pub(super) fn add_worker(&self) -> Receiver<Ask> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.asks.lock().unwrap().push(tx);
        rx
    }
}

impl KeySource for Desk {
    fn ask(&self, key: &str, readings: usize) -> Asked {
        let (reply, answers) = std::sync::mpsc::channel();
        let mut waiting: Vec<usize> = Vec::new();
        for (id, tx) in self.asks.lock().unwrap().iter().enumerate() {
            let ask = Ask {
                key: key.to_string(),
                readings,
                tables: waiting.is_empty(),
                reply: reply.clone(),
            };
            // A worker that stopped holds nothing.
            if tx.send(ask).is_ok() {
                waiting.push(id);
            }
        }
        drop(reply);
        let deadline = Instant::now() + ASK_TIMEOUT;
        let mut asked = Asked::default();
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(answer) = answers.recv_timeout(left) else {
                break;
            };
            waiting.retain(|&w| w != answer.worker);
            asked.tables.extend(answer.tables);
            asked
                .found
                .extend(answer.found.into_iter().map(|state| Found {
                    worker: answer.worker,
                    state,
                }));
        }
        asked.silent = waiting;
        asked
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn group(&self) -> &str {
        &self.group
    }

    fn client_id(&self) -> &str {
        &self.client_id
    }

    fn held(&self) -> Vec<(i32, usize)> {
        let Some(source) = self.source.upgrade() else {
            return Vec::new();
        };
        let held = source.assignment().held();
        held.generations
            .keys()
            .map(|&p| (p, super::worker_of(p, self.workers)))
            .collect()
    }

    fn partition_count(&self) -> Option<usize> {
        self.source.upgrade()?.partition_count()
    }

    fn members(&self) -> Result<Vec<Member>, String> {
        let source = self.source.upgrade().ok_or("the job has stopped")?;
        group::members(source.consumer().as_ref(), &self.group, KAFKA_TIMEOUT)
            .map_err(|e| e.to_string())
    }
}

/// The `client.id` the group member uses: the user's (`-X client.id` or
/// `-X consumer.client.id`), else one that carries the admin address, so
/// that other members' key inspectors can point at this one.
pub(super) fn client_id(settings: &Settings, admin: std::net::SocketAddr) -> String {
    let given = ["consumer.client.id", "client.id"]
        .iter()
        .find_map(|k| settings.librdkafka.get(*k));
    match given {
        Some(id) => id.clone(),
        None => crate::ops::keys::default_client_id(admin),
    }
}

/// `settings` for the group member: with its `client.id` set (the user's
/// own wins, being that one).
pub(super) fn member_settings(settings: &Settings, client_id: &str) -> Settings {
    let mut s = settings.clone();
    s.librdkafka
        .0
        .insert("consumer.client.id".into(), client_id.into());
    s
}
