//! The WIT contract (`wit/streamhost.wit`) as Rust types: the one place
//! that generates host bindings from it. Windows build the contract's
//! `window-view`, rules take its `batch`, outputs read its alerts and trends.
//!
//! Bindings come from the host-only world `rule-host`, which exports all three
//! rule interfaces; a real plugin exports exactly one of them and the runtime
//! loads only that interface, so the three kinds share one set of types.

/// The generated bindings, re-exported whole: their names are the WIT's,
/// and the WIT documents them.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "rule-host",
        // Declared windows and tables are compared across versions.
        additional_derives: [PartialEq],
    });
}
pub use bindings::*;

pub use exports::streamhost::plugin::{anomaly_rule, transform_rule, trend_rule};
pub use streamhost::plugin::host::{Host as HostImports, Level};
pub use streamhost::plugin::types;
pub use types::{
    Aggregate, AggregateColumns, Alert, Batch, DeclaredWindow, Direction, FieldWindow, Needs,
    Severity, TableRows, TableSpec, Transformed, TransformedBatch, TrendResult, WindowSpec,
    WindowView,
};

use std::sync::Arc;

/// The WIT package plugins are built against.
pub const WIT_PACKAGE: &str = "streamhost:plugin";
/// The version of that package this host implements. Plugins built against
/// any 0.3.x version load; 0.2 plugins must be rebuilt (0.3's `describe`
/// may refuse a configuration and declares windows and tables).
pub const WIT_VERSION: &str = "0.3.0";

/// A transform's answer for one record, as the pipeline reads it. A
/// `merge` holds the member text its call returned, shared by every record
/// that names it rather than copied to each.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The record passes on unchanged.
    Keep,
    /// The record is dropped: no outputs, not a failure.
    Drop,
    /// The record is replaced with this JSON object text.
    Replace(String),
    /// These members (a JSON object's text) are added to the record.
    Merge(Arc<str>),
}

/// What a transform call returns: one result per record.
pub type TransformResults = Vec<Result<Change, String>>;
/// What a trend call returns: one result per record.
pub type TrendResults = Vec<Result<Option<TrendResult>, String>>;
/// What an anomaly call returns: one result per record.
pub type AnomalyResults = Vec<Result<Vec<Alert>, String>>;

impl TransformedBatch {
    /// One change per record, each `merge` index resolved to its shared
    /// text. An index outside `members` is that record's error.
    pub fn resolve(self) -> TransformResults {
        let members: Vec<Arc<str>> = self.members.into_iter().map(Arc::from).collect();
        self.results
            .into_iter()
            .map(|r| {
                Ok(match r? {
                    Transformed::Keep => Change::Keep,
                    Transformed::Drop => Change::Drop,
                    Transformed::Replace(text) => Change::Replace(text),
                    Transformed::Merge(m) => match members.get(m as usize) {
                        Some(text) => Change::Merge(text.clone()),
                        None => {
                            return Err(format!(
                                "merge refers to members {m}, but the call returned {} member texts",
                                members.len()
                            ));
                        }
                    },
                })
            })
            .collect()
    }
}

/// `results` with each trend naming a field outside the batch's `fields`
/// (of which there are `fields`) turned into that record's error.
pub fn check_trend_fields(mut results: TrendResults, fields: usize) -> TrendResults {
    for r in &mut results {
        if let Ok(Some(t)) = r
            && t.field as usize >= fields
        {
            *r = Err(format!(
                "the trend names field {}, but the batch has {fields} fields",
                t.field
            ));
        }
    }
    results
}

/// Adds the host's imports (`host.log`) to a linker.
pub fn add_host_to_linker<T: HostImports + types::Host + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    streamhost::plugin::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_resolve_to_one_shared_text_and_bad_indices_fail_alone() {
        let batch = TransformedBatch {
            members: vec![r#"{"a":1}"#.into(), r#"{"b":2}"#.into()],
            results: vec![
                Ok(Transformed::Merge(1)),
                Ok(Transformed::Merge(0)),
                Ok(Transformed::Merge(1)),
                Ok(Transformed::Merge(2)),
                Ok(Transformed::Keep),
                Err("no".into()),
            ],
        };
        let out = batch.resolve();
        let text = |i: usize| match &out[i] {
            Ok(Change::Merge(m)) => m.clone(),
            other => panic!("record {i}: {other:?}"),
        };
        assert_eq!(&*text(0), r#"{"b":2}"#);
        assert_eq!(&*text(1), r#"{"a":1}"#);
        assert!(Arc::ptr_eq(&text(0), &text(2)));
        assert_eq!(
            out[3],
            Err("merge refers to members 2, but the call returned 2 member texts".into())
        );
        assert_eq!(out[4], Ok(Change::Keep));
        assert_eq!(out[5], Err("no".into()));
    }

    #[test]
    fn a_trend_naming_a_field_the_batch_lacks_fails_alone() {
        let trend = |field| {
            Ok(Some(TrendResult {
                field,
                direction: Direction::Stable,
                change: 0.0,
            }))
        };
        let out = check_trend_fields(vec![trend(3), trend(4), Ok(None)], 4);
        assert!(matches!(&out[0], Ok(Some(t)) if t.field == 3));
        assert!(
            matches!(&out[1], Err(e) if e == "the trend names field 4, but the batch has 4 fields")
        );
        assert!(matches!(out[2], Ok(None)));
    }
}
