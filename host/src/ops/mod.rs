//! Beside the data path: the admin HTTP API (plugins, health) and the
//! Prometheus metrics it serves.

pub mod admin;
pub mod metrics;
