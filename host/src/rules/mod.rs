//! Rules: the `Rule` trait the pipeline calls, the set of rules in force,
//! the WebAssembly runtime that runs them (`runtime`) and the registry that
//! swaps them while streamhost runs (`registry`).

pub mod call;
pub mod registry;
pub mod runtime;
pub mod trial;

use std::sync::Arc;

use crate::contract::{AnomalyResults, Batch, Needs, TransformResults, TrendResults, WindowView};
use runtime::{CallError, Kind, Plugin, PluginInfo};

/// A rule the pipeline can call: a WebAssembly plugin, or (in benchmarks) the
/// same logic compiled natively.
pub trait Rule: Send + Sync {
    /// What the rule said about itself, plus what the host knows.
    fn info(&self) -> &PluginInfo;
    /// One result per record of `batch`. Only transform rules implement it:
    /// the default is a contract error.
    fn transform(&self, _batch: &Batch) -> Result<TransformResults, CallError> {
        Err(CallError::Contract(format!(
            "{} is not a transform rule",
            self.info().name
        )))
    }
    /// One trend or none per record of `batch`, given each record's window.
    /// Only trend rules implement it: the default is a contract error.
    fn trend(&self, _batch: &Batch, _windows: &WindowView) -> Result<TrendResults, CallError> {
        Err(CallError::Contract(format!(
            "{} is not a trend rule",
            self.info().name
        )))
    }
    /// The alerts each record of `batch` raises, given its window. Only
    /// anomaly rules implement it: the default is a contract error.
    fn detect(&self, _batch: &Batch, _windows: &WindowView) -> Result<AnomalyResults, CallError> {
        Err(CallError::Contract(format!(
            "{} is not an anomaly rule",
            self.info().name
        )))
    }
}

impl Rule for Plugin {
    fn info(&self) -> &PluginInfo {
        Plugin::info(self)
    }
    fn transform(&self, batch: &Batch) -> Result<TransformResults, CallError> {
        Plugin::transform(self, batch)
    }
    fn trend(&self, batch: &Batch, windows: &WindowView) -> Result<TrendResults, CallError> {
        Plugin::trend(self, batch, windows)
    }
    fn detect(&self, batch: &Batch, windows: &WindowView) -> Result<AnomalyResults, CallError> {
        Plugin::detect(self, batch, windows)
    }
}

/// The rules of a pipeline, by kind, each kind in the order given, and the
/// candidates on trial beside some of them.
#[derive(Clone, Default)]
pub struct RuleSet {
    /// Transform rules.
    pub transform: Vec<Arc<dyn Rule>>,
    /// Trend rules.
    pub trend: Vec<Arc<dyn Rule>>,
    /// Anomaly rules.
    pub anomaly: Vec<Arc<dyn Rule>>,
    /// By the serving rule's name.
    pub trials: Vec<(String, Arc<trial::Trial>)>,
}

impl RuleSet {
    /// Adds a rule under its own kind.
    pub fn push(&mut self, rule: Arc<dyn Rule>) {
        match rule.info().kind {
            Kind::Transform => self.transform.push(rule),
            Kind::Trend => self.trend.push(rule),
            Kind::Anomaly => self.anomaly.push(rule),
        }
    }

    /// The candidate on trial beside the rule called `name`, if any.
    pub fn trial(&self, name: &str) -> Option<&trial::Trial> {
        self.trials
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_ref())
    }

    /// Every serving rule: transforms, then trends, then anomaly rules.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Rule>> {
        self.transform
            .iter()
            .chain(&self.trend)
            .chain(&self.anomaly)
    }
}

/// Every optional input any of `rules` asks for.
pub fn union_needs<'a>(rules: impl Iterator<Item = &'a Arc<dyn Rule>>) -> Needs {
    rules.fold(Needs::empty(), |n, r| n | r.info().needs)
}
