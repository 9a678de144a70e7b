//! Configuration: command-line flags, `STREAMHOST_*` environment variables
//! and a TOML file (`--config`), in that order of precedence, over built-in
//! defaults.
//!
//! One type, `Settings`, declares every setting: its flag, environment
//! variable and default for clap, its file key and how its value is read
//! for serde. To resolve, the defaults, the file and the values given
//! (flags and environment, `RunArgs`) are laid over one another as TOML
//! tables, and the result is read by serde: a value passes the same
//! reader and checks wherever it was written, and a default never hides a
//! value of the file, since clap tells a default from a given value.

mod flags;
mod settings;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use flags::RunArgs;
pub use settings::Settings;
pub use values::{Format, Properties, Secret, compile_cache, is_secret};

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The settings file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The settings file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The settings file is not TOML, or holds a key that is no setting.
    /// Without the source line toml's own message quotes, which could hold
    /// a secret.
    #[error("{path}:{line}:{column}: {message}")]
    Toml {
        /// The settings file.
        path: PathBuf,
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, in characters from 1.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// A setting's value is unusable.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting, as the file names it (`window`, `librdkafka.acks`).
        setting: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        message: message.into(),
    }
}

impl Settings {
    /// Resolves flags (and their environment variables) over the file over
    /// the defaults.
    pub fn resolve(args: RunArgs) -> Result<Settings, ConfigError> {
        let file = args.config.as_deref().map(File::read).transpose()?;
        let mut table = flags::defaults();
        if let Some(file) = &file {
            merge(&mut table, file.table.clone());
        }
        merge(&mut table, args.given.0);
        let mut settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| unreadable(e, file.as_ref()))?;
        settings.combine()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() {
            return Err(invalid("window", "must be longer than zero"));
        }
        // A window's span (window + lateness) is held in i32 milliseconds.
        if self.window + self.allowed_lateness > Duration::from_millis(i32::MAX as u64) {
            return Err(invalid(
                "window",
                "window + allowed-lateness must be under 24 days",
            ));
        }
        if self.key_idle > Duration::from_secs(100 * 365 * 86_400)
            || self.max_future > Duration::from_secs(100 * 365 * 86_400)
            || self.rebuild_margin > Duration::from_secs(100 * 365 * 86_400)
        {
            return Err(invalid(
                "key-idle",
                "key-idle, max-future and rebuild-margin must be under 100 years",
            ));
        }
        let r = &self.rollback;
        if !(0.0..=1.0).contains(&r.failure_margin) {
            return Err(invalid(
                "rollback-failure-margin",
                "must be between 0 and 100 percentage points",
            ));
        }
        if !(r.latency_ratio >= 1.0 && r.latency_ratio.is_finite()) {
            return Err(invalid("rollback-latency-ratio", "must be 1 or more"));
        }
        if (self.input_format == Format::Avro || self.output_format == Format::Avro)
            && self.registry.is_none()
        {
            return Err(invalid(
                "schema-registry",
                "the Avro format needs a schema registry URL",
            ));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err(invalid("workers", "must be 1 to 256"));
        }
        if !["cooperative-sticky", "range", "roundrobin"].contains(&self.assignment.as_str()) {
            return Err(invalid(
                "assignment",
                format!(
                    "{:?} is none of cooperative-sticky, range, roundrobin",
                    self.assignment
                ),
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch-size", "must be at least 1"));
        }
        if self.plugin_deadline.is_zero() {
            return Err(invalid("plugin-deadline", "must be longer than zero"));
        }
        if self.plugin_memory_bytes < 1 << 20 {
            return Err(invalid("plugin-memory-mib", "must be at least 1"));
        }
        if self.fields.len() > crate::decode::MAX_FIELDS {
            return Err(invalid(
                "fields",
                format!("at most {} fields", crate::decode::MAX_FIELDS),
            ));
        }
        if self.key_field == self.time_field {
            return Err(invalid("key-field", "must differ from time-field"));
        }
        if self
            .fields
            .iter()
            .any(|f| *f == self.key_field || *f == self.time_field)
        {
            return Err(invalid("fields", "must not name the key or time field"));
        }
        let outputs = [&self.alerts_topic, &self.enriched_topic, &self.dlq_topic];
        if outputs.contains(&&self.input_topic) {
            return Err(invalid("input-topic", "must differ from the output topics"));
        }
        Ok(())
    }
}

/// Lays `over` over `under`: a table (the librdkafka properties) key by
/// key, any other value whole.
fn merge(under: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (under.get_mut(&key), value) {
            (Some(toml::Value::Table(under)), toml::Value::Table(over)) => under.extend(over),
            // The file's value where a table belongs: kept, so that it is
            // reported rather than hidden by the flags' table.
            (Some(_), toml::Value::Table(_)) => {}
            (_, value) => {
                under.insert(key, value);
            }
        }
    }
}

/// Why serde could not read the settings: for a key of the file that is no
/// setting, where the file writes it; else named by its setting.
fn unreadable(e: serde_path_to_error::Error<toml::de::Error>, file: Option<&File>) -> ConfigError {
    let message = e.inner().message().trim_end().to_string();
    let key = match e.path().iter().next() {
        Some(serde_path_to_error::Segment::Map { key }) => key.as_str(),
        _ => "",
    };
    match file {
        Some(file) if !flags::is_key(key) && file.table.contains_key(key) => {
            let at = file.key_offset(key);
            located(&file.path, &file.text, at, message)
        }
        _ => invalid(&e.path().to_string(), message),
    }
}

/// The `--config` file: its table, and its text to place errors in.
struct File {
    path: PathBuf,
    text: String,
    table: toml::Table,
}

impl File {
    fn read(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        match toml::from_str(&text) {
            Ok(table) => Ok(File {
                path: path.into(),
                text,
                table,
            }),
            Err(e) => {
                let at = e.span().map_or(0, |s| s.start);
                Err(located(path, &text, at, e.message().trim_end().to_string()))
            }
        }
    }

    /// Where the file writes top-level `key`, in bytes.
    fn key_offset(&self, key: &str) -> usize {
        let table = toml::de::DeTable::parse(&self.text).ok();
        let key = table.and_then(|t| {
            t.get_ref()
                .keys()
                .find(|k| k.get_ref() == key)
                .map(|k| k.span().start)
        });
        key.unwrap_or(0)
    }
}

/// An error at byte `at` of a file, by line and column: never the line
/// itself, which could hold a secret.
fn located(path: &Path, text: &str, at: usize, message: String) -> ConfigError {
    let before = text.get(..at.min(text.len())).unwrap_or_default();
    ConfigError::Toml {
        path: path.into(),
        line: before.matches('\n').count() + 1,
        column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    /// Settings given as flags, read as `streamhost` reads them (without
    /// the environment, which the tests leave alone).
    fn flags(argv: &[&str]) -> RunArgs {
        let cmd = RunArgs::augment_args(clap::Command::new("streamhost"))
            .mut_args(|a| a.env(None::<&'static str>));
        let m = cmd.get_matches_from(std::iter::once("streamhost").chain(argv.iter().copied()));
        RunArgs::from_arg_matches(&m).unwrap()
    }

    #[test]
    fn defaults_are_the_articles() {
        let s = Settings::resolve(RunArgs::default()).unwrap();
        assert_eq!(s.input_topic, "iot-sensors");
        assert_eq!(s.group, "stream-processor-group");
        assert_eq!(
            (
                s.alerts_topic.as_str(),
                s.enriched_topic.as_str(),
                s.dlq_topic.as_str()
            ),
            ("iot-alerts", "iot-enriched", "iot-dlq")
        );
        assert_eq!(s.window, Duration::from_secs(300));
        assert_eq!(
            s.fields,
            ["temperature", "humidity", "pressure", "battery_level"]
        );
        assert_eq!(s.plugin_deadline, Duration::from_millis(100));
        assert_eq!(s.plugin_memory_bytes, 64 << 20);
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("streamhost-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("streamhost.toml");
        std::fs::write(
            &path,
            "window = \"90s\"\ngroup = \"from-file\"\nbatch-size = 7\n[librdkafka]\n\"security.protocol\" = \"SSL\"\n",
        )
        .unwrap();
        let args = flags(&[
            "--config",
            path.to_str().unwrap(),
            "--group",
            "from-flag",
            "-X",
            "linger.ms=1",
        ]);
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.window, Duration::from_secs(90));
        assert_eq!(s.group, "from-flag");
        assert_eq!(s.batch_size, 7);
        assert_eq!(
            s.librdkafka.get("security.protocol").map(String::as_str),
            Some("SSL")
        );
        assert_eq!(s.librdkafka.get("linger.ms").map(String::as_str), Some("1"));

        std::fs::write(&path, "windw = \"5m\"\n").unwrap();
        let err = Settings::resolve(RunArgs {
            config: Some(path),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `windw`"), "{err}");
    }

    #[test]
    fn a_key_that_is_no_setting_is_placed_in_the_file_and_a_bad_value_named() {
        let dir = std::env::temp_dir().join(format!("streamhost-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("streamhost.toml");
        std::fs::write(&path, "group = \"g\"\n\n  admin-tokn = \"tok-42\"\n").unwrap();
        let read = |args: RunArgs| Settings::resolve(args).unwrap_err().to_string();
        let err = read(flags(&["--config", path.to_str().unwrap()]));
        let at = format!(
            "{}:3:3: unknown field `admin-tokn`, expected one of",
            path.display()
        );
        assert!(err.starts_with(&at), "{err}");
        assert!(!err.contains("tok-42"), "{err}");
        // A value in the file and one given as a flag fail alike.
        std::fs::write(&path, "key-idle = \"often\"\n").unwrap();
        let err = read(flags(&["--config", path.to_str().unwrap()]));
        assert!(
            err.starts_with("key-idle: \"often\" is not a duration"),
            "{err}"
        );
        let err = read(RunArgs::default().with("key-idle", "often"));
        assert!(
            err.starts_with("key-idle: \"often\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn a_file_librdkafka_that_is_no_table_is_reported_under_x_flags_too() {
        let dir = std::env::temp_dir().join(format!("streamhost-rdk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("streamhost.toml");
        std::fs::write(&path, "librdkafka = \"acks=all\"\n").unwrap();
        let config = path.to_str().unwrap();
        for args in [
            vec!["--config", config],
            vec!["--config", config, "-X", "acks=1"],
        ] {
            let err = Settings::resolve(flags(&args)).unwrap_err().to_string();
            assert!(
                err.starts_with("librdkafka: invalid type"),
                "{args:?}: {err}"
            );
        }
        let s = Settings::resolve(flags(&["-X", "acks=1"])).unwrap();
        assert_eq!(s.librdkafka.get("acks").map(String::as_str), Some("1"));
    }

    #[test]
    fn bad_values_name_their_setting() {
        let err = Settings::resolve(flags(&["--window", "soon"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("window: \"soon\" is not a duration"),
            "{err}"
        );
        let err = Settings::resolve(flags(&["--batch-size", "0"])).unwrap_err();
        assert_eq!(err.to_string(), "batch-size: must be at least 1");
        let err = Settings::resolve(flags(&["--enriched-shape", "wide"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "enriched-shape: \"wide\" is neither `full` nor `compact`"
        );
    }

    #[test]
    fn the_enriched_shape_and_the_batch_wait_have_their_defaults() {
        let s = Settings::resolve(RunArgs::default()).unwrap();
        assert_eq!(s.enriched_shape, crate::output::Shape::Full);
        assert_eq!(s.batch_wait, std::time::Duration::ZERO);
        let s = Settings::resolve(flags(&["--enriched-shape", "compact"])).unwrap();
        assert_eq!(s.enriched_shape, crate::output::Shape::Compact);
    }

    #[test]
    fn secrets_never_print() {
        let dir = std::env::temp_dir().join(format!("streamhost-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("streamhost.toml");
        std::fs::write(
            &path,
            "admin-token = \"tok-123456\"\nschema-registry = \"http://r:8081\"\nschema-registry-auth = \"u:reg-pw-42\"\n[librdkafka]\n\"sasl.password\" = \"pw-98765\"\n\"consumer.ssl.key.password\" = \"kp-24680\"\n\"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----x\"\n\"sasl.username\" = \"alice\"\n",
        )
        .unwrap();
        let s = Settings::resolve(RunArgs {
            config: Some(path.clone()),
            ..RunArgs::default()
        })
        .unwrap();
        assert_eq!(
            s.librdkafka.get("sasl.password").map(String::as_str),
            Some("pw-98765")
        );
        let shown = format!("{s:?}");
        for secret in [
            "tok-123456",
            "reg-pw-42",
            "pw-98765",
            "kp-24680",
            "BEGIN PRIVATE KEY",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("alice"), "non-secrets still show: {shown}");
        // A syntax error on a line holding a secret does not quote it.
        std::fs::write(&path, "[librdkafka]\n\"sasl.password\" = \"pw-13579\n").unwrap();
        let err = Settings::resolve(RunArgs {
            config: Some(path),
            ..RunArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(":2:"), "names the line: {err}");
        assert!(!err.contains("pw-13579"), "{err}");
    }
}
