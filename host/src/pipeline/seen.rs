//! What each rule sees beyond what all share: the windows it declared (in
//! `describe`), picked from those the windows stage computed for every
//! rule, and the rows of the reference tables it reads.
//!
//! The windows keep each distinct declared window once, however many rules
//! (or trial candidates) declare it, so two rules asking for the same 15
//! minutes of temperature share one running state.

use std::borrow::Cow;
use std::sync::{Arc, RwLockReadGuard};

use crate::contract::{Batch, DeclaredWindow, TableRows, WindowSpec, WindowView};
use crate::rules::RuleSet;
use crate::rules::runtime::PluginInfo;
use crate::table::{Table, TableSource, lookup_key};
use crate::window::DeclaredSpec;

/// `spec` over the pipeline's `fields`, or why it cannot be kept.
pub(super) fn resolve(spec: &WindowSpec, fields: &[String]) -> Result<DeclaredSpec, String> {
    let indices = spec
        .fields
        .iter()
        .map(|name| {
            fields.iter().position(|f| f == name).ok_or_else(|| {
                format!(
                    "declares a window over {name:?}, which is not among the fields ({})",
                    fields.join(", ")
                )
            })
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let declared = DeclaredSpec {
        length_ms: i64::from(spec.length_ms),
        fields: indices,
        aggregates: spec.aggregates.clone(),
    };
    declared.check()?;
    Ok(declared)
}

/// Every distinct window the trend and anomaly rules of `rules` (and their
/// candidates) declare, in the order first declared. A window that cannot
/// be kept was refused when its plugin loaded, and is left out.
pub(super) fn specs(rules: &RuleSet, fields: &[String]) -> Vec<DeclaredSpec> {
    let serving = rules.trend.iter().chain(&rules.anomaly);
    let candidates = rules.trials.iter().map(|(_, t)| &t.candidate);
    let mut out: Vec<DeclaredSpec> = Vec::new();
    for rule in serving.chain(candidates) {
        for spec in &rule.info().windows {
            if let Ok(d) = resolve(spec, fields)
                && !out.contains(&d)
            {
                out.push(d);
            }
        }
    }
    out
}

/// The declared windows `info` sees: its own, in its order, from `all`
/// (one per entry of `specs`).
pub(super) fn declared_for(
    info: &PluginInfo,
    specs: &[DeclaredSpec],
    all: &[DeclaredWindow],
    fields: &[String],
) -> Vec<DeclaredWindow> {
    info.windows
        .iter()
        .filter_map(|spec| {
            let d = resolve(spec, fields).ok()?;
            let at = specs.iter().position(|s| *s == d)?;
            all.get(at).cloned()
        })
        .collect()
}

/// The reference tables a pipeline reads. A record sees the row as it is
/// when its batch is processed.
pub type Tables = Vec<Arc<dyn ReadTable>>;

/// A table a pipeline reads: as `--table` gave it, and its rows, which a
/// loader keeps up to date (`crate::kafka::table`).
pub trait ReadTable: Send + Sync + std::fmt::Debug {
    /// How `--table` gave it.
    fn source(&self) -> &TableSource;
    /// Its rows now.
    fn read(&self) -> RwLockReadGuard<'_, Table>;
}

/// Whether two versions see the same (so a candidate can share its serving
/// version's inputs).
pub(super) fn sees_alike(a: &PluginInfo, b: &PluginInfo) -> bool {
    a.windows == b.windows && a.tables == b.tables
}

/// Each record's lookup key in each table of `tables` that one of
/// `readers` reads (`None`: no row), from the records' keys and JSON texts
/// `records` gives, in batch order; an empty list for a table none reads.
pub(super) fn lookups<'r>(
    tables: &Tables,
    readers: impl Iterator<Item = &'r PluginInfo> + Clone,
    records: impl Iterator<Item = (&'r str, &'r str)> + Clone,
) -> Vec<Vec<Option<String>>> {
    tables
        .iter()
        .map(|table| {
            let source = table.source();
            if !readers
                .clone()
                .any(|r| r.tables.iter().any(|t| t.name == source.name))
            {
                return Vec::new();
            }
            records
                .clone()
                .map(|(key, json)| lookup_key(source, key, json).map(Cow::into_owned))
                .collect()
        })
        .collect()
}

/// The rows `info` reads, of the tables it declared, for the records whose
/// lookup keys `lookups` gives (see `lookups`), as the tables hold them now:
/// each is read-locked only while its rows are copied out, never during a
/// rule's call. A table the pipeline does not hold (refused when the
/// plugin loaded) gives no rows.
pub(super) fn tables_for(
    info: &PluginInfo,
    tables: &Tables,
    lookups: &[Vec<Option<String>>],
    n: usize,
) -> Vec<TableRows> {
    info.tables
        .iter()
        .map(
            |spec| match tables.iter().position(|t| t.source().name == spec.name) {
                Some(t) => tables[t]
                    .read()
                    .rows(spec, lookups[t].iter().map(Option::as_deref)),
                None => TableRows {
                    row_of: vec![None; n],
                    columns: vec![Vec::new(); spec.fields.len()],
                    json: Vec::new(),
                },
            },
        )
        .collect()
}

/// Sets into `seen` what `info` sees of its own: its declared windows (from
/// `all`, one per entry of `specs`) and its table rows.
pub(super) fn fill(seen: &mut (Batch, WindowView), info: &PluginInfo, own: &Own<'_>) {
    seen.1.declared = declared_for(info, own.specs, own.all, own.fields);
    let n = seen.0.len as usize;
    seen.0.tables = tables_for(info, own.tables, own.lookups, n);
}

/// What the rules' own inputs are made from, for one batch.
pub(super) struct Own<'o> {
    pub(super) specs: &'o [DeclaredSpec],
    pub(super) all: &'o [DeclaredWindow],
    pub(super) fields: &'o [String],
    pub(super) tables: &'o Tables,
    /// Each record's lookup key in each table (see `lookups`).
    pub(super) lookups: &'o [Vec<Option<String>>],
}
