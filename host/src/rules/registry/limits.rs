//! A plugin's own limits and configuration, and the file that keeps them
//! beside its component: `anomaly.toml` beside `anomaly.wasm`, with
//! `deadline = "2s"` and `memory-mib = 256`, each optional (what is not set
//! comes from the runtime's defaults), a `[config]` table of values the
//! plugin reads through `wasi:config/store`, and a `[secrets]` table of
//! values it reads the same way but that are never shown.
//!
//! Configuration values are text to the plugin: a TOML string is passed as
//! it is, a number or boolean as its TOML text (`45`, `45.5`, `true`), an
//! array or table as JSON.
//!
//! The file is read at start-up and whenever the watcher sees it change,
//! and written by a `put` that gives limits and by a configuration change.
//! Both directions go through the same serde shape (`deny_unknown_fields`,
//! kebab-case keys, humantime durations), so what is written is exactly
//! what the next start-up reads.

use std::collections::BTreeMap;

use crate::rules::runtime::PluginConfig;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A plugin's own limits, from the limits file beside its component or a
/// `put`; what is not set comes from the runtime's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginLimits {
    /// Longest a single batch call may run (`"250ms"`, `"2s"`).
    #[serde(
        default,
        with = "humantime_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<Duration>,
    /// Largest linear memory an instance may have, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<usize>,
}

/// `Option<Duration>` as humantime text (`"250ms"`, `"2s"`).
mod humantime_opt {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

/// The first line of a file streamhost writes.
const HEADER: &str =
    "# Limits and configuration of this plugin (written by `streamhost plugins`).\n";

/// What the file beside a component holds: `PluginLimits`' keys, then the
/// two tables.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileShape {
    #[serde(
        default,
        with = "humantime_opt",
        skip_serializing_if = "Option::is_none"
    )]
    deadline: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_mib: Option<usize>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    config: BTreeMap<String, toml::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<String, toml::Value>,
}

/// A configuration value as the text the plugin reads.
fn as_text(value: toml::Value) -> String {
    match value {
        toml::Value::String(s) => s,
        toml::Value::Array(_) | toml::Value::Table(_) => {
            serde_json::to_string(&value).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// What a plugin's file holds: its limits and its configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginFile {
    /// Its own limits.
    pub limits: PluginLimits,
    /// Its configuration, secrets included.
    pub config: PluginConfig,
}

impl PluginLimits {
    /// `self`, with `other`'s settings where it has them.
    pub fn overridden_by(self, other: PluginLimits) -> PluginLimits {
        PluginLimits {
            deadline: other.deadline.or(self.deadline),
            memory_mib: other.memory_mib.or(self.memory_mib),
        }
    }

    /// Whether nothing is set: the runtime's defaults apply throughout.
    pub fn is_empty(&self) -> bool {
        self.deadline.is_none() && self.memory_mib.is_none()
    }

    /// Checks the values are usable.
    pub fn check(&self) -> Result<(), String> {
        if self
            .deadline
            .is_some_and(|d| d.is_zero() || d > Duration::from_secs(3600))
        {
            return Err("deadline must be between 1ms and 1h".into());
        }
        if self.memory_mib.is_some_and(|m| m == 0 || m > 65536) {
            return Err("memory-mib must be between 1 and 65536".into());
        }
        Ok(())
    }
}

/// The limits file of the component at `path`: `anomaly.toml` beside
/// `anomaly.wasm`.
pub fn limits_file(path: &Path) -> PathBuf {
    path.with_extension("toml")
}

/// Reads the limits of the component at `path` from the file beside it;
/// none is no limits.
pub fn read_limits(path: &Path) -> Result<PluginLimits, String> {
    read_plugin_file(path).map(|f| f.limits)
}

/// Reads the file beside the component at `path`; none is no limits and no
/// configuration.
pub fn read_plugin_file(path: &Path) -> Result<PluginFile, String> {
    let file = limits_file(path);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PluginFile::default()),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    let named = |e: String| format!("{}: {e}", file.display());
    let shape: FileShape = toml::from_str(&text).map_err(|e| named(e.message().to_string()))?;
    let limits = PluginLimits {
        deadline: shape.deadline,
        memory_mib: shape.memory_mib,
    };
    limits.check().map_err(named)?;
    let mut config = PluginConfig::new();
    for (key, value) in shape.config {
        config.set(&key, &as_text(value)).map_err(named)?;
    }
    for (key, value) in shape.secrets {
        if config.get(&key).is_some() {
            return Err(named(format!(
                "{key:?} is both in [config] and in [secrets]"
            )));
        }
        config.set_secret(&key, &as_text(value)).map_err(named)?;
    }
    Ok(PluginFile { limits, config })
}

/// Writes `file` beside the component at `path`, through a temporary file
/// and a rename like the component itself. Configuration values are written
/// as TOML strings (the text the plugin reads).
pub(super) fn write_plugin_file(path: &Path, file: &PluginFile) -> std::io::Result<()> {
    let mut shape = FileShape {
        deadline: file.limits.deadline,
        memory_mib: file.limits.memory_mib,
        ..FileShape::default()
    };
    for (key, value) in file.config.iter() {
        let table = if file.config.is_secret(key) {
            &mut shape.secrets
        } else {
            &mut shape.config
        };
        table.insert(key.to_string(), toml::Value::String(value.to_string()));
    }
    let body = toml::to_string(&shape).map_err(std::io::Error::other)?;
    // Secrets are for streamhost's eyes only.
    let mode = if file.config.has_secrets() {
        0o600
    } else {
        0o644
    };
    let body = HEADER.to_owned() + &body;
    super::change::write_atomically_as(&limits_file(path), body.as_bytes(), mode)
}

/// Writes `limits` beside the component at `path`, keeping the
/// configuration the file holds.
#[cfg(test)]
fn write_limits(path: &Path, limits: PluginLimits) -> std::io::Result<()> {
    let mut file = read_plugin_file(path).unwrap_or_default();
    file.limits = limits;
    write_plugin_file(path, &file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::registry::testing::scratch;

    /// The component path of a scratch folder whose limits file holds `text`.
    fn with_limits_file(test: &str, text: &str) -> PathBuf {
        let component = scratch(test).join("rule.wasm");
        std::fs::write(limits_file(&component), text).unwrap();
        component
    }

    #[test]
    fn written_limits_read_back_the_same() {
        let component = scratch("limits-round-trip").join("rule.wasm");
        for limits in [
            PluginLimits {
                deadline: Some(Duration::from_millis(250)),
                memory_mib: Some(96),
            },
            PluginLimits {
                deadline: Some(Duration::new(1, 500_000_003)),
                memory_mib: None,
            },
            PluginLimits {
                deadline: None,
                memory_mib: Some(65536),
            },
        ] {
            write_limits(&component, limits).unwrap();
            assert_eq!(read_limits(&component), Ok(limits));
        }
    }

    #[test]
    fn written_limits_are_kebab_case_toml_with_human_durations() {
        let component = scratch("limits-text").join("rule.wasm");
        let limits = PluginLimits {
            deadline: Some(Duration::from_millis(250)),
            memory_mib: Some(96),
        };
        write_limits(&component, limits).unwrap();
        let text = std::fs::read_to_string(limits_file(&component)).unwrap();
        assert_eq!(
            text,
            format!("{HEADER}deadline = \"250ms\"\nmemory-mib = 96\n")
        );
    }

    #[test]
    fn no_limits_file_is_no_limits() {
        let component = scratch("limits-none").join("rule.wasm");
        assert_eq!(read_limits(&component), Ok(PluginLimits::default()));
        assert!(PluginLimits::default().is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let component = with_limits_file("limits-unknown", "deadline = \"1s\"\ntimeout = \"2s\"\n");
        let error = read_limits(&component).unwrap_err();
        assert!(error.contains("rule.toml"), "{error}");
        assert!(error.contains("unknown field `timeout`"), "{error}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, named) in [
            ("deadline = \"soon\"\n", "\"soon\" is not a duration"),
            ("deadline = \"0s\"\n", "deadline must be between 1ms and 1h"),
            ("deadline = \"2h\"\n", "deadline must be between 1ms and 1h"),
            ("memory-mib = 0\n", "memory-mib must be between 1 and 65536"),
            ("memory-mib = -3\n", "integer `-3`, expected usize"),
        ] {
            let component = with_limits_file("limits-bad", text);
            let error = read_limits(&component).unwrap_err();
            assert!(
                error.contains("rule.toml") && error.contains(named),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn configuration_is_read_as_text_and_written_back_the_same() {
        let component = with_limits_file(
            "config-text",
            "deadline = \"1s\"\n[config]\ntemperature_max = 45\nratio = 0.5\nstrict = true\n\
             name = \"greenhouse\"\nzones = [1, 2]\n[secrets]\ntoken = \"hunter2\"\n",
        );
        let file = read_plugin_file(&component).unwrap();
        assert_eq!(file.limits.deadline, Some(Duration::from_secs(1)));
        let c = &file.config;
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            [
                ("name", "greenhouse"),
                ("ratio", "0.5"),
                ("strict", "true"),
                ("temperature_max", "45"),
                ("token", "hunter2"),
                ("zones", "[1,2]"),
            ]
        );
        assert!(c.is_secret("token") && !c.is_secret("name"));
        write_plugin_file(&component, &file).unwrap();
        assert_eq!(read_plugin_file(&component).unwrap(), file);
        let text = std::fs::read_to_string(limits_file(&component)).unwrap();
        assert!(text.contains("[secrets]\ntoken = \"hunter2\""), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(limits_file(&component))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "a file holding secrets is the owner's only"
        );
        // Writing limits keeps the configuration.
        write_limits(&component, PluginLimits::default()).unwrap();
        assert_eq!(read_plugin_file(&component).unwrap().config, file.config);
    }

    #[test]
    fn a_key_both_plain_and_secret_is_refused() {
        let component =
            with_limits_file("config-both", "[config]\na = \"1\"\n[secrets]\na = \"2\"\n");
        let e = read_plugin_file(&component).unwrap_err();
        assert!(
            e.contains("\"a\" is both in [config] and in [secrets]"),
            "{e}"
        );
        let component = with_limits_file("config-key", "[config]\n\"a b\" = 1\n");
        let e = read_plugin_file(&component).unwrap_err();
        assert!(e.contains("is not a configuration key"), "{e}");
    }

    #[test]
    fn overriding_keeps_what_the_other_does_not_set() {
        let file = PluginLimits {
            deadline: Some(Duration::from_secs(2)),
            memory_mib: Some(32),
        };
        let put = PluginLimits {
            deadline: None,
            memory_mib: Some(96),
        };
        assert_eq!(
            file.overridden_by(put),
            PluginLimits {
                deadline: Some(Duration::from_secs(2)),
                memory_mib: Some(96),
            }
        );
    }
}
