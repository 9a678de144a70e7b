//! A plugin's own limits and the file that keeps them beside its component:
//! `anomaly.toml` beside `anomaly.wasm`, with `deadline = "2s"` and
//! `memory-mib = 256`, each optional; what is not set comes from the
//! runtime's defaults.
//!
//! The file is read at start-up and whenever the watcher sees it change,
//! and written by a `put` that gives limits. Both directions go through the
//! same serde shape (`deny_unknown_fields`, kebab-case keys, humantime
//! durations), so what a `put` writes is exactly what the next start-up
//! reads.

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

/// The first line of a limits file a `put` writes.
const HEADER: &str = "# Limits of this plugin's calls (written by `streamhost plugins put`).\n";

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

/// Reads the limits file of the component at `path`; none is no limits.
pub fn read_limits(path: &Path) -> Result<PluginLimits, String> {
    let file = limits_file(path);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PluginLimits::default()),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    let limits: PluginLimits =
        toml::from_str(&text).map_err(|e| format!("{}: {}", file.display(), e.message()))?;
    limits
        .check()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(limits)
}

/// Writes `limits` as the limits file of the component at `path`, through
/// a temporary file and a rename like the component itself.
pub(super) fn write_limits(path: &Path, limits: PluginLimits) -> std::io::Result<()> {
    let body = toml::to_string(&limits).map_err(std::io::Error::other)?;
    super::change::write_atomically(&limits_file(path), (HEADER.to_owned() + &body).as_bytes())
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
