//! Hand-written text for the hot path: JSON writers and event-time text.

pub mod json;
pub mod time;
