//! The command line and the environment, as clap reads them for
//! `Settings`, turned into tables keyed as the file writes them: the
//! values given (flag or environment variable) in `RunArgs`, and the
//! defaults (each flag's `default_value`) for `Settings::resolve`.
//!
//! A default clap fills in is not "given": `ArgMatches::value_source` tells
//! them apart, so a default never hides a value from the file.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::Settings;

/// Flags of the main job: the settings file, and the settings given as
/// flags or environment variables. Read by `Settings::resolve`.
#[derive(clap::Args, Default, Clone)]
pub struct RunArgs {
    /// TOML file with any of these settings (kebab-case keys, e.g.
    /// `input-topic = "iot-sensors"`, `window = "5m"`, and a
    /// `[librdkafka]` table). Flags and environment variables override it.
    #[arg(long, env = "STREAMHOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub(super) given: Given,
}

impl RunArgs {
    /// The same, with `key` (as the settings file writes it, e.g.
    /// `"input-topic"`) given `value`, as a flag would give it.
    pub fn with(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.given.0.insert(key.to_string(), value.into());
        self
    }
}

/// The settings given on the command line or in the environment.
#[derive(Default, Clone)]
pub(super) struct Given(pub(super) toml::Table);

impl Args for Given {
    fn augment_args(cmd: Command) -> Command {
        Settings::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Settings::augment_args(cmd)
    }
}

impl FromArgMatches for Given {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let given = |source| matches!(source, ValueSource::CommandLine | ValueSource::EnvVariable);
        Ok(Given(table(m, given)))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.extend(Self::from_arg_matches(m)?.0);
        Ok(())
    }
}

/// The built-in defaults: each flag's `default_value`, read by clap's own
/// parser from an empty command line without the environment.
pub(super) fn defaults() -> toml::Table {
    let cmd = Settings::augment_args(Command::new("streamhost"))
        .mut_args(|a| a.env(None::<&'static str>));
    let m = cmd
        .try_get_matches_from(["streamhost"])
        .expect("the defaults parse");
    table(&m, |source| source == ValueSource::DefaultValue)
}

/// Whether `name` is the file key of a setting.
pub(super) fn is_key(name: &str) -> bool {
    let cmd = Settings::augment_args(Command::new("streamhost"));
    cmd.get_arguments()
        .any(|a| key(a.get_id().as_str()) == name)
}

fn key(id: &str) -> String {
    id.replace('_', "-")
}

/// The settings clap read from a `source` that `keep` accepts.
fn table(m: &ArgMatches, keep: impl Fn(ValueSource) -> bool) -> toml::Table {
    let cmd = Settings::augment_args(Command::new("streamhost"));
    cmd.get_arguments()
        .filter(|arg| m.value_source(arg.get_id().as_str()).is_some_and(&keep))
        .map(|arg| (key(arg.get_id().as_str()), value(m, arg)))
        .collect()
}

/// One setting's value as clap typed it, as the file would write it: the
/// `-X` properties a table, a repeatable flag a list.
fn value(m: &ArgMatches, arg: &Arg) -> toml::Value {
    let id = arg.get_id().as_str();
    if let Ok(Some(properties)) = m.try_get_many::<(String, String)>(id) {
        return toml::Value::Table(
            properties
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect(),
        );
    }
    let mut values = typed(m, id).expect("a setting's flag reads one of these types");
    if matches!(arg.get_action(), ArgAction::Append) {
        toml::Value::Array(values)
    } else {
        values.swap_remove(0)
    }
}

fn typed(m: &ArgMatches, id: &str) -> Option<Vec<toml::Value>> {
    fn all<T: Clone + Send + Sync + 'static>(
        m: &ArgMatches,
        id: &str,
        to_value: impl Fn(&T) -> toml::Value,
    ) -> Option<Vec<toml::Value>> {
        Some(m.try_get_many::<T>(id).ok()??.map(to_value).collect())
    }
    // TOML integers are i64: a larger count means "no limit" all the same.
    let int = |n: u64| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    // TOML text is UTF-8: a path that is not is read lossily.
    all::<String>(m, id, |s| s.as_str().into())
        .or_else(|| all::<PathBuf>(m, id, |p| p.to_string_lossy().as_ref().into()))
        .or_else(|| all::<usize>(m, id, |n| int(*n as u64)))
        .or_else(|| all::<u64>(m, id, |n| int(*n)))
        .or_else(|| all::<u32>(m, id, |n| int(u64::from(*n))))
        .or_else(|| all::<f64>(m, id, |x| (*x).into()))
}
