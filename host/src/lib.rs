//! streamhost: runs WebAssembly rules over Kafka streams.
//!
//! The modules follow the data: `source` (Kafka in) → `decode` → `window` →
//! `plugin` (transform, trend and anomaly rules) → `route` (output shapes) →
//! `sink` (Kafka out, and offset commits). `pipeline` runs one batch through
//! the steps between source and sink; `service` is the long-running job;
//! `config` resolves flags, environment and file.

pub mod admin;
pub mod config;
pub mod decode;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod route;
pub mod service;
pub mod sink;
pub mod source;
pub mod window;
pub mod registry;
