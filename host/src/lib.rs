//! streamhost: runs WebAssembly rules over Kafka streams.
//!
//! The modules follow the data: `source` (Kafka in) → `decode` → `window` →
//! `plugin` (transform, trend, anomaly rules) → `route` → `sink` (Kafka out),
//! with `pipeline` tying the per-batch steps together.

pub mod plugin;
pub mod decode;
pub mod window;
pub mod pipeline;
pub mod route;
