//! Beside the data path: the admin HTTP API (plugins, health, the key
//! inspector), the Prometheus metrics it serves, and the console page.

pub mod admin;
pub mod console;
pub mod firing;
pub mod keys;
pub mod metrics;
