//! streamhost: runs WebAssembly rules over Kafka streams.
//!
//! The modules, in floors from the bottom up; a module imports only from
//! its own floor or those below (`cmd` alone may import anything, and
//! nothing imports it). `tests/house.rs` checks this map against the code:
//!
//! 1. `contract`: the WIT contract's types; `record`: the records that move
//!    between stages (in, out, dead-letter reasons); `text`: hand-written
//!    JSON and time text for the hot path.
//! 2. `avro`: records in the Confluent Avro framing read as JSON text with
//!    a schema registry, and outputs written back to it; `decode`: each
//!    record's JSON read once into key, event time and fields.
//! 3. `transform`: what transform rules return, applied to the record's
//!    text; `window`: sliding windows per key, per input partition, the
//!    `--window` one and those rules declare; `table`: a reference table's
//!    rows, and what a batch's records see of them; `lifecycle`: alerts as
//!    transitions (firing, repeat, resolved) per key, rule and kind.
//! 4. `rules`: the `Rule` trait, the WebAssembly `runtime`, `call` (one
//!    rule on one batch, with failure isolation and trials), `trial`
//!    (candidate versions beside the serving ones: shadow, canary) and the
//!    `registry` that swaps rules while streamhost runs.
//! 5. `output`: the shapes of enriched records, alerts and dead letters.
//! 6. `pipeline`: one batch through the stages above, in order: prepare
//!    (decode, transforms, event-time check), windows, trend and anomaly
//!    rules (each with its own declared windows and table rows:
//!    `pipeline::seen`), route (`pipeline::route`, with the alert
//!    lifecycle's transitions); `pipeline::inspect`: what it knows of one
//!    key.
//! 7. `rebuild`: a partition's windows rebuilt, before its first record is
//!    processed, by feeding its input again through the pipeline's windows.
//! 8. `config`: flags, environment and file, resolved into `Settings`.
//! 9. `kafka`: the Kafka edge: `consumer` (Kafka in, batches of records),
//!    `span` (a span of one partition read again, outside the group, for a
//!    rebuild or a dead letter's original), `producer` and `committer`
//!    (Kafka out, and input offsets stored once their outputs are durable),
//!    `dead_letters` (read back for `streamhost replay`), `table` (reference
//!    tables loaded and followed), `state` (the alert state topic: each
//!    partition's firing alerts, written and taken up), `group` (which
//!    member holds a partition), `error` (what goes wrong there, and what
//!    no retry fixes).
//! 10. `ops`: the admin API, metrics, health and the console, beside the
//!     data path; `firing` (alerts firing now), `keys` (`GET /keys/{key}`).
//! 11. `cmd`: the subcommands, one file each (`run` is the long-running
//!     job that wires all of the above; `run::worker` is one of its
//!     workers).

#![warn(missing_docs)]

pub mod contract;
pub mod record;
pub mod text;

pub mod avro;
pub mod decode;

pub mod lifecycle;
pub mod table;
pub mod transform;
pub mod window;

pub mod rules;

pub mod output;

pub mod pipeline;

pub mod rebuild;

pub mod config;

pub mod kafka;

pub mod ops;

pub mod cmd;
