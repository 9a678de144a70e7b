//! How setting values are written, read the same way from a flag, an
//! environment variable and the file: durations (`5m`), names from a list
//! (`json`, `ms`, `compact`), addresses, and the secret types whose `Debug`
//! shows `[redacted]`.
//!
//! Each reader names what was wrong with the value; the setting's name is
//! added by `Settings::resolve`, which knows where deserialization stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error};

use crate::avro::SubjectStrategy;
use crate::lifecycle::AlertMode;
use crate::output::Shape;
use crate::text::time::EpochUnit;

/// A value written as text, with a message naming what is wrong with it.
pub(super) trait FromText: Sized {
    fn from_text(text: &str) -> Result<Self, String>;
}

/// Reads a text setting with `T`'s syntax (serde `deserialize_with`).
pub(super) fn text<'de, D: Deserializer<'de>, T: FromText>(d: D) -> Result<T, D::Error> {
    T::from_text(&String::deserialize(d)?).map_err(D::Error::custom)
}

/// Reads text where an empty value means unset (`--instance-id ""`).
pub(super) fn non_empty<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let text = Option::<String>::deserialize(d)?;
    Ok(text.filter(|t| !t.is_empty()).map(T::from))
}

/// Reads a list of names, trimmed, without empty ones (`--fields "a, b,"`).
pub(super) fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    Ok(names
        .into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect())
}

/// Reads a size in MiB as bytes.
pub(super) fn mib<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(usize::deserialize(d)? << 20)
}

/// Reads the compile cache setting (see [`compile_cache`]).
pub(super) fn cache_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(compile_cache(Some(String::deserialize(d)?)))
}

/// The clap value parser of every text setting: the text is kept as
/// given, to be read by serde with the file's values.
pub(super) fn as_given() -> clap::builder::StringValueParser {
    clap::builder::StringValueParser::new()
}

/// Parses one `-X KEY=VALUE`.
pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

impl FromText for Duration {
    fn from_text(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
    }
}

impl FromText for SocketAddr {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|e| format!("{text:?} is not HOST:PORT: {e}"))
    }
}

impl FromText for SubjectStrategy {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

/// One of two names, or a message naming both.
fn either<T>(text: &str, [a, b]: [&str; 2], [x, y]: [T; 2]) -> Result<T, String> {
    if text == a {
        Ok(x)
    } else if text == b {
        Ok(y)
    } else {
        Err(format!("{text:?} is neither `{a}` nor `{b}`"))
    }
}

impl FromText for EpochUnit {
    fn from_text(text: &str) -> Result<Self, String> {
        either(text, ["ms", "s"], [EpochUnit::Millis, EpochUnit::Seconds])
    }
}

impl FromText for AlertMode {
    fn from_text(text: &str) -> Result<Self, String> {
        either(
            text,
            ["every-record", "lifecycle"],
            [AlertMode::EveryRecord, AlertMode::Lifecycle],
        )
    }
}

impl FromText for Shape {
    fn from_text(text: &str) -> Result<Self, String> {
        either(text, ["full", "compact"], [Shape::Full, Shape::Compact])
    }
}

/// A record format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON text.
    Json,
    /// Avro in the Confluent framing, with a schema registry.
    Avro,
}

impl FromText for Format {
    fn from_text(text: &str) -> Result<Self, String> {
        either(text, ["json", "avro"], [Format::Json, Format::Avro])
    }
}

/// The compile cache folder: the one given, none for `off`, else the
/// default.
pub fn compile_cache(text: Option<String>) -> Option<PathBuf> {
    match text.as_deref() {
        Some("off") => None,
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => crate::rules::runtime::cache::default_dir(),
    }
}

/// librdkafka properties (`-X` and the file's `[librdkafka]` table). Their
/// `Debug` form, the only way settings are ever printed, shows secrets
/// (passwords, private keys, JAAS and OAuth configuration) as `[redacted]`.
#[derive(Clone, Default, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &dyn std::fmt::Debug = if is_secret(k) { &"[redacted]" } else { v };
                (k, v)
            }))
            .finish()
    }
}

/// Whether a librdkafka property holds a secret: `sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`, `sasl.jaas.config` and the like, also
/// behind a `consumer.`/`producer.` prefix.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key.pem",
        "jaas",
        "oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// A secret setting (the admin token, the registry's credentials): `Debug`
/// shows `[redacted]`.
#[derive(Clone, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Configuration pinned over plugins' own (`--plugin-config NAME.KEY=VALUE`,
/// the file's `[plugin-config]` table with `NAME.KEY = VALUE` or
/// `[plugin-config.NAME]` tables), by plugin name. A plugin name has no `.`:
/// the text splits at the first one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginConfigs(pub BTreeMap<String, crate::rules::runtime::PluginConfig>);

impl<'de> serde::Deserialize<'de> for PluginConfigs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let table = toml::Table::deserialize(d)?;
        let mut out: BTreeMap<String, crate::rules::runtime::PluginConfig> = BTreeMap::new();
        let mut set = |plugin: &str, key: &str, value: &toml::Value| -> Result<(), D::Error> {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Table(_) | toml::Value::Array(_) => {
                    serde_json::to_string(value).map_err(D::Error::custom)?
                }
                other => other.to_string(),
            };
            if plugin.is_empty() {
                return Err(D::Error::custom(format!(
                    "{key:?}: give NAME.KEY=VALUE, NAME being the plugin's name"
                )));
            }
            out.entry(plugin.to_string())
                .or_default()
                .set(key, &text)
                .map_err(|e| D::Error::custom(format!("{plugin}: {e}")))
        };
        // Key order puts `NAME` before `NAME.KEY`: a dotted key (a flag)
        // is set over the same key of the plugin's table (the file).
        for (name, value) in &table {
            match (name.split_once('.'), value) {
                (None, toml::Value::Table(keys)) => {
                    for (key, value) in keys {
                        set(name, key, value)?;
                    }
                }
                (Some((plugin, key)), value) => set(plugin, key, value)?,
                (None, _) => {
                    return Err(D::Error::custom(format!(
                        "{name:?}: give NAME.KEY=VALUE, NAME being the plugin's name"
                    )));
                }
            }
        }
        Ok(PluginConfigs(out))
    }
}
