//! streamhost: runs WebAssembly rules over Kafka streams.
//!
//! The modules, in the order the data flows through them:
//!
//! - `record`: the records that move between stages (in, out, dead-letter
//!   reasons); `contract`: the WIT contract's types; `text`: hand-written
//!   JSON and time text for the hot path. These three are leaves, used by all.
//! - `kafka::consumer`: Kafka in, batches of records; `kafka::replay`: a
//!   span of one partition read again, outside the group.
//! - `avro`: records in the Confluent Avro framing read as JSON text with a
//!   schema registry, and outputs written back to it (`--input-format`,
//!   `--output-format`).
//! - `decode`: each record's JSON read once into key, event time and fields.
//! - `transform`: what transform rules return, applied to the record's text.
//! - `window`: sliding windows per key, per input partition.
//! - `rules`: the `Rule` trait, the WebAssembly runtime, the registry
//!   that swaps rules while streamhost runs, and trials of candidate
//!   versions beside the serving ones (shadow, canary).
//! - `output`: the shapes of enriched records, alerts and dead letters.
//! - `pipeline`: one batch through all of the above.
//! - `rebuild`: a partition's windows rebuilt by replaying its input
//!   through the pipeline's windows, before its first record is processed.
//! - `kafka::producer` and `kafka::committer`: Kafka out, and input offsets
//!   stored once their outputs are durable.
//! - `ops`: the admin API, metrics and health, beside the data path.
//! - `service`: the long-running job, wiring everything; `config`: flags,
//!   environment and file.
//! - `local`: `streamhost run-local`, the pipeline over a file of JSON
//!   lines, without Kafka; `scaffold`: `streamhost new`, plugin projects
//!   from templates; `reprocess`: `streamhost replay`, dead letters run
//!   again (`kafka::dead_letters` reads them).
//!
//! No module imports one that comes later on this path, except `service`,
//! `local` and `reprocess`.

pub mod contract;
pub mod record;
pub mod text;

pub mod avro;
pub mod config;
pub mod decode;
pub mod kafka;
pub mod local;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod rebuild;
pub mod reprocess;
pub mod rules;
pub mod scaffold;
pub mod service;
pub mod transform;
pub mod window;
