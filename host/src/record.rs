//! The records that move between the stages: what the consumer hands in,
//! what the pipeline hands out, and why a record was dead-lettered.

/// A consumed record.
#[derive(Debug, Clone)]
pub struct InRecord {
    /// The input partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// The record's Kafka timestamp (milliseconds), if it has one.
    pub timestamp: Option<i64>,
    /// The record's Kafka key, if it has one.
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone (a record without a value).
    pub payload: Option<Vec<u8>>,
}

/// Where a record came from.
#[derive(Debug, Clone, Copy)]
pub struct SourcePos<'a> {
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// Where an output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    /// The topic of enriched records.
    Enriched,
    /// The topic of alerts.
    Alerts,
    /// The dead-letter topic.
    DeadLetter,
}

impl Dest {
    /// What the destination's records are called in messages.
    pub fn name(self) -> &'static str {
        match self {
            Dest::Enriched => "enriched",
            Dest::Alerts => "alert",
            Dest::DeadLetter => "dead-letter",
        }
    }
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// The topic it goes to.
    pub dest: Dest,
    /// The input record it comes from: partition and offset.
    pub source: (i32, i64),
    /// The Kafka key, if any.
    pub key: Option<Vec<u8>>,
    /// The Kafka value.
    pub payload: Vec<u8>,
    /// Kafka headers, name and value (a dead letter's are named in `headers`).
    pub headers: Vec<(&'static str, String)>,
}

/// Header names of dead-letter records.
pub mod headers {
    /// The `Reason`, as `Reason::as_str` writes it.
    pub const REASON: &str = "streamhost.reason";
    /// What went wrong, in words.
    pub const ERROR: &str = "streamhost.error";
    /// The input record's topic.
    pub const TOPIC: &str = "streamhost.source.topic";
    /// The input record's partition.
    pub const PARTITION: &str = "streamhost.source.partition";
    /// The input record's offset.
    pub const OFFSET: &str = "streamhost.source.offset";
    /// The plugin that failed, if one did.
    pub const PLUGIN: &str = "streamhost.plugin";
    /// That plugin's version.
    pub const PLUGIN_VERSION: &str = "streamhost.plugin.version";
    /// On a reference dead letter (the original was too large to copy):
    /// the original's length in bytes; the payload holds its first bytes.
    pub const ORIGINAL_BYTES: &str = "streamhost.original.bytes";
}

/// The class of a dead letter, sent as the `streamhost.reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a record streamhost can read: not UTF-8 or JSON, no key or event
    /// time, a non-numeric field, a member given twice, no value at all.
    Decode,
    /// Older than its key's newest event time minus the allowed lateness.
    Late,
    /// Further ahead of the processing time than `--max-future`.
    Future,
    /// A plugin call ran past its deadline.
    PluginTimeout,
    /// A plugin ran out of its memory cap.
    PluginOom,
    /// A plugin trapped (panicked).
    PluginTrap,
    /// A plugin answered `err` for the record, or broke the contract.
    PluginError,
    /// A plugin returned more than the output limits allow for one record.
    PluginOutputLimit,
    /// An output of the record is larger than the producer may send, or
    /// than the broker accepts for its topic.
    OutputTooLarge,
    /// The broker refused an output of the record as invalid, or the schema
    /// registry refused the schema of its Avro output.
    OutputRefused,
    /// `streamhost replay`: the input no longer holds the record, and its
    /// dead letter holds only its first bytes.
    ReplaySourceGone,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 11] = [
        Reason::Decode,
        Reason::Late,
        Reason::Future,
        Reason::PluginTimeout,
        Reason::PluginOom,
        Reason::PluginTrap,
        Reason::PluginError,
        Reason::PluginOutputLimit,
        Reason::OutputTooLarge,
        Reason::OutputRefused,
        Reason::ReplaySourceGone,
    ];

    /// The reason whose header value is `text`.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Decode => "decode",
            Reason::Late => "late",
            Reason::Future => "future",
            Reason::PluginTimeout => "plugin-timeout",
            Reason::PluginOom => "plugin-oom",
            Reason::PluginTrap => "plugin-trap",
            Reason::PluginError => "plugin-error",
            Reason::PluginOutputLimit => "plugin-output-limit",
            Reason::OutputTooLarge => "output-too-large",
            Reason::OutputRefused => "output-refused",
            Reason::ReplaySourceGone => "replay-source-gone",
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Its class, sent as the `streamhost.reason` header.
    pub reason: Reason,
    /// What went wrong, sent as the `streamhost.error` header.
    pub message: String,
    /// The plugin that failed, with its version, if one did.
    pub plugin: Option<(String, String)>,
}

impl OutRecord {
    /// Bytes the producer counts against its `message.max.bytes`: key,
    /// value and headers, plus a bound on the record's framing.
    pub fn size(&self) -> usize {
        const FRAMING: usize = 64;
        self.key.as_ref().map_or(0, Vec::len)
            + self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + FRAMING
    }

    /// A dead letter that fits in `max` bytes: this one, or, when it is too
    /// large, a reference to the original (its headers, source position and
    /// first bytes, with `streamhost.original.bytes` giving its length).
    pub fn fit_dead_letter(mut self, max: usize) -> OutRecord {
        debug_assert_eq!(self.dest, Dest::DeadLetter);
        if self.size() <= max {
            return self;
        }
        const ERROR_BYTES: usize = 4096;
        for (name, value) in &mut self.headers {
            if *name == headers::ERROR && value.len() > ERROR_BYTES {
                let mut end = ERROR_BYTES;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                value.truncate(end);
                value.push_str("...");
            }
        }
        if let Some(key) = &mut self.key {
            key.truncate(1024);
        }
        let mut payload = std::mem::take(&mut self.payload);
        self.headers
            .push((headers::ORIGINAL_BYTES, payload.len().to_string()));
        payload.truncate(max.saturating_sub(self.size()).min(1024));
        self.payload = payload;
        self
    }
}
