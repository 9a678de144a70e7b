//! A record on its way through one batch: its payload as consumed, its
//! text after transforms, where it stands (live in a window, dropped, or
//! failed), and what the rules said of it.

use crate::contract::{Alert, Batch, Needs, TrendResult};
use crate::decode::{DecodeError, Decoded, InputFormat, Schema, decode_text};
use crate::record::{Failure, Reason};
use crate::rules::runtime::PluginInfo;

/// Where a record is on its way through the batch.
pub(super) enum State {
    /// Decoded, and (once in `slot`) in its window.
    Live {
        decoded: Decoded,
        slot: Option<usize>,
    },
    /// A transform dropped it on purpose.
    Dropped,
    Failed(Failure),
}

/// A consumed payload: text once checked to be UTF-8 (checked once, here),
/// JSON text read from another format (with the bytes as consumed, for a
/// dead letter), else the raw bytes, kept for the dead letter.
pub(super) enum Payload {
    Text(String),
    Converted { text: String, original: Vec<u8> },
    Bytes(Vec<u8>),
}

/// A record on its way through the batch.
pub(super) struct Rec {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) original: Payload,
    /// The record's JSON text after transforms; `None` while it is still the
    /// consumed payload.
    pub(super) text: Option<String>,
    pub(super) state: State,
    /// (trend rule, whether its canary served the record, result)
    pub(super) trends: Vec<(usize, bool, TrendResult)>,
    /// (anomaly rule, whether its canary served the record, alerts)
    pub(super) alerts: Vec<(usize, bool, Vec<Alert>)>,
    /// Rules (bits by position in `RuleSet::all`) whose canary candidate
    /// served this record.
    pub(super) by_candidate: u64,
    /// Keys the window sweep dropped as idle when this record arrived, with
    /// their partition's clock (with `--alerts lifecycle`).
    pub(super) swept: Vec<(Box<str>, i64)>,
}

impl Rec {
    pub(super) fn new(
        partition: i32,
        offset: i64,
        payload: Option<Vec<u8>>,
        schema: &Schema,
        format: &InputFormat,
    ) -> Rec {
        let fail = |e: String| {
            State::Failed(Failure {
                reason: Reason::Decode,
                message: e,
                plugin: None,
            })
        };
        let decoded = |text: &str| match decode_text(schema, text) {
            Ok(decoded) => State::Live {
                decoded,
                slot: None,
            },
            Err(e) => fail(e.to_string()),
        };
        let (original, state) = match (payload, format) {
            (None, _) => (
                Payload::Bytes(Vec::new()),
                fail(DecodeError::Tombstone.to_string()),
            ),
            (Some(bytes), InputFormat::Json) => match String::from_utf8(bytes) {
                Ok(text) => {
                    let state = decoded(&text);
                    (Payload::Text(text), state)
                }
                Err(e) => {
                    let state = fail(format!("not UTF-8: {}", e.utf8_error()));
                    (Payload::Bytes(e.into_bytes()), state)
                }
            },
            (Some(bytes), InputFormat::Avro(avro)) => match avro.to_json(&bytes) {
                Ok(text) => {
                    let state = decoded(&text);
                    (
                        Payload::Converted {
                            text,
                            original: bytes,
                        },
                        state,
                    )
                }
                Err(e) => (Payload::Bytes(bytes), fail(e.to_string())),
            },
        };
        Rec {
            partition,
            offset,
            original,
            text: None,
            state,
            trends: Vec::new(),
            alerts: Vec::new(),
            by_candidate: 0,
            swept: Vec::new(),
        }
    }

    /// The record's current JSON text.
    pub(super) fn text(&self) -> &str {
        match (&self.text, &self.original) {
            (Some(t), _)
            | (None, Payload::Text(t))
            | (None, Payload::Converted { text: t, .. }) => t,
            (None, Payload::Bytes(_)) => "{}",
        }
    }

    pub(super) fn decoded(&self) -> &Decoded {
        match &self.state {
            State::Live { decoded, .. } => decoded,
            _ => unreachable!("only live records are batched"),
        }
    }

    pub(super) fn is_live(&self) -> bool {
        matches!(self.state, State::Live { .. })
    }

    pub(super) fn into_original(self) -> Vec<u8> {
        match self.original {
            Payload::Text(t) => t.into_bytes(),
            Payload::Converted { original, .. } | Payload::Bytes(original) => original,
        }
    }
}

/// Fails `rec` (unless it already failed), blamed on the rule `info`.
pub(super) fn fail(rec: &mut Rec, info: &PluginInfo, reason: Reason, message: String) {
    if matches!(rec.state, State::Failed(_)) {
        return;
    }
    rec.state = State::Failed(Failure {
        reason,
        message,
        plugin: Some((info.name.clone(), info.version.clone())),
    });
}

/// The WIT batch of records `idx`, with the optional columns in `needs`.
pub(super) fn build_batch(
    schema: &Schema,
    recs: &[Rec],
    idx: &[usize],
    needs: Needs,
    now_ms: i64,
) -> Batch {
    let n = idx.len();
    let decoded = |i: usize| recs[i].decoded();
    let values = (0..schema.fields.len())
        .map(|f| idx.iter().map(|&i| decoded(i).values[f]).collect())
        .collect();
    Batch {
        len: n as u32,
        processing_time: now_ms,
        fields: schema.fields.clone(),
        keys: if needs.contains(Needs::KEYS) {
            idx.iter().map(|&i| decoded(i).key.clone()).collect()
        } else {
            Vec::new()
        },
        event_times: idx.iter().map(|&i| decoded(i).time_ms).collect(),
        values,
        json: if needs.contains(Needs::JSON) {
            idx.iter().map(|&i| recs[i].text().to_string()).collect()
        } else {
            Vec::new()
        },
        tables: Vec::new(),
    }
}

/// The keys of the live records at `idx`, for rule calls while a trial is
/// on (a canary selects by key); none otherwise (see `call::Keys`).
pub(super) fn keys(on_trial: bool, recs: &[Rec], idx: &[usize]) -> Vec<String> {
    if !on_trial {
        return Vec::new();
    }
    idx.iter().map(|&i| recs[i].decoded().key.clone()).collect()
}

/// A rule's bit in `Rec::by_candidate`, from its position in
/// `RuleSet::all` (rules past the 64th are not tracked).
pub(super) fn bit(position: usize) -> u64 {
    if position < 64 { 1 << position } else { 0 }
}
