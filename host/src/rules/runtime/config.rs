//! A plugin's configuration: text values by key, which the guest reads
//! through the standard `wasi:config/store` interface (the host side is
//! the `wasmtime-wasi-config` crate).
//!
//! Configuration is fixed for the life of an instance: a plugin built with
//! another configuration is a new `Plugin` made from the same compiled
//! component (no compilation), whose `describe` may refuse it. So a
//! configuration change is a swap like any other, and every output names it:
//! a configured plugin's version carries `+cfg.` and a digest of its
//! configuration, as semver build metadata (`1.0.0+cfg.5e3a91c0`).
//!
//! Secret values (credentials) reach the guest like the others, but are
//! never shown: `shown` masks them, and the digest covers only their names,
//! so it cannot be used to guess a short secret. Changing a secret's value
//! is still a swap; the outputs' digest does not tell the two apart.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// What `shown` gives instead of a secret value.
pub const MASK: &str = "(secret)";

/// Text values by key, some of them secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginConfig {
    values: BTreeMap<String, String>,
    secret: BTreeSet<String>,
}

impl PluginConfig {
    /// No configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, a plain (not secret) value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        check_key(key)?;
        self.secret.remove(key);
        self.values.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Sets `key` to `value`, a secret value.
    pub fn set_secret(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.set(key, value)?;
        self.secret.insert(key.to_string());
        Ok(())
    }

    /// Removes `key`; whether it was set.
    pub fn unset(&mut self, key: &str) -> bool {
        self.secret.remove(key);
        self.values.remove(key).is_some()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Whether `key` holds a secret value.
    pub fn is_secret(&self, key: &str) -> bool {
        self.secret.contains(key)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The keys set, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Every key with its value, in key order (secrets in clear: only for
    /// the guest and the file that keeps them).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `self`, with `other`'s keys set over it.
    pub fn overridden_by(&self, other: &PluginConfig) -> PluginConfig {
        let mut out = self.clone();
        for (k, v) in other.iter() {
            out.values.insert(k.to_string(), v.to_string());
            if other.is_secret(k) {
                out.secret.insert(k.to_string());
            } else {
                out.secret.remove(k);
            }
        }
        out
    }

    /// Every key with its value as `GET /plugins`, logs and metrics may
    /// show it: secrets masked.
    pub fn shown(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| {
                let v = if self.is_secret(k) { MASK } else { v };
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// `text` with every secret value in it replaced by `MASK`: for what a
    /// plugin says about its configuration (a refusal may quote a value).
    pub fn redact(&self, text: &str) -> String {
        // Longest first, so a secret holding another is masked whole; each
        // also as JSON and Rust's `{:?}` would quote it.
        let mut secrets: Vec<&str> = (self.secret.iter())
            .filter_map(|k| self.values.get(k).map(String::as_str))
            .filter(|v| !v.is_empty())
            .collect();
        secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for value in secrets {
            let quoted = format!("{value:?}");
            let escaped = &quoted[1..quoted.len() - 1];
            out = out.replace(value, MASK).replace(escaped, MASK);
        }
        out
    }

    /// Whether a secret value is set.
    pub fn has_secrets(&self) -> bool {
        !self.secret.is_empty()
    }

    /// Eight hex digits naming this configuration, or `None` when empty:
    /// a SHA-256 over the plain keys and values and the secret keys' names.
    pub fn digest(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut h = Sha256::new();
        for (k, v) in self.iter() {
            h.update(k.as_bytes());
            h.update([0]);
            if self.is_secret(k) {
                h.update([1]);
            } else {
                h.update([2]);
                h.update(v.as_bytes());
            }
            h.update([0]);
        }
        Some(
            h.finalize()[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The variables a store's `wasi:config/store` answers with.
    pub(super) fn variables(&self) -> wasmtime_wasi_config::WasiConfigVariables {
        self.iter().collect()
    }
}

/// Checks a configuration key: 1 to 128 characters of letters, digits,
/// `_`, `-` and `.`.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a configuration key (use 1 to 128 letters, digits, `_`, `-` and `.`)"
        ))
    }
}

/// `version`, naming the configuration it runs with (see the module's
/// documentation).
pub fn versioned(version: &str, config: &PluginConfig) -> String {
    match config.digest() {
        Some(d) => format!("{version}+cfg.{d}"),
        None => version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> PluginConfig {
        let mut c = PluginConfig::new();
        for (k, v) in pairs {
            c.set(k, v).unwrap();
        }
        c
    }

    #[test]
    fn the_digest_names_the_plain_values_and_only_the_names_of_secrets() {
        let a = config(&[("temperature_max", "45"), ("temperature_min", "0")]);
        let b = config(&[("temperature_min", "0"), ("temperature_max", "45")]);
        assert_eq!(a.digest(), b.digest(), "order does not matter");
        assert_eq!(a.digest().unwrap().len(), 8);
        assert_ne!(
            a.digest(),
            config(&[("temperature_max", "46"), ("temperature_min", "0")]).digest()
        );
        // A key and value are not confused with another split of the text.
        assert_ne!(
            config(&[("ab", "c")]).digest(),
            config(&[("a", "bc")]).digest()
        );
        let mut s1 = a.clone();
        s1.set_secret("token", "hunter2").unwrap();
        let mut s2 = a.clone();
        s2.set_secret("token", "correct horse").unwrap();
        assert_eq!(s1.digest(), s2.digest(), "secret values are not digested");
        assert_ne!(s1.digest(), a.digest(), "a secret's name is");
        let mut plain = a.clone();
        plain.set("token", "hunter2").unwrap();
        assert_ne!(plain.digest(), s1.digest());
        assert_eq!(PluginConfig::new().digest(), None);
    }

    #[test]
    fn secrets_are_masked_when_shown_but_reach_the_guest() {
        let mut c = config(&[("temperature_max", "45")]);
        c.set_secret("token", "hunter2").unwrap();
        let shown = c.shown();
        assert_eq!(shown["temperature_max"], "45");
        assert_eq!(shown["token"], MASK);
        assert_eq!(c.get("token"), Some("hunter2"));
        assert!(!format!("{shown:?}").contains("hunter2"));
    }

    #[test]
    fn what_a_plugin_says_is_redacted_of_secret_values() {
        let mut c = config(&[("temperature_max", "45")]);
        c.set_secret("temperature_min", "hunter2").unwrap();
        assert_eq!(
            c.redact("temperature_min \"hunter2\" is not a number (max 45)"),
            format!("temperature_min \"{MASK}\" is not a number (max 45)")
        );
        assert!(c.has_secrets() && !config(&[("a", "1")]).has_secrets());
        // A secret holding another is masked whole, and quoted forms too.
        let mut c = PluginConfig::new();
        c.set_secret("a", "abc").unwrap();
        c.set_secret("b", "abcdef").unwrap();
        c.set_secret("c", "pa\"ss").unwrap();
        assert_eq!(
            c.redact("abcdef, abc and \"pa\\\"ss\""),
            format!("{MASK}, {MASK} and \"{MASK}\"")
        );
    }

    #[test]
    fn overriding_sets_keys_and_their_secrecy() {
        let mut base = config(&[("a", "1"), ("b", "2")]);
        base.set_secret("s", "x").unwrap();
        let mut over = config(&[("b", "3"), ("s", "plain now")]);
        over.set_secret("t", "y").unwrap();
        let c = base.overridden_by(&over);
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            [("a", "1"), ("b", "3"), ("s", "plain now"), ("t", "y")]
        );
        assert!(!c.is_secret("s") && c.is_secret("t"));
    }

    #[test]
    fn versions_carry_the_digest_as_build_metadata() {
        let c = config(&[("temperature_max", "30")]);
        let v = versioned("1.0.0", &c);
        assert_eq!(v, format!("1.0.0+cfg.{}", c.digest().unwrap()));
        assert_eq!(versioned("1.0.0", &PluginConfig::new()), "1.0.0");
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("temperature_max").is_ok());
        assert!(check_key("a.b-c_9").is_ok());
        for bad in ["", "a b", "a=b", "ü", &"k".repeat(129)] {
            let e = check_key(bad).unwrap_err();
            assert!(e.contains("is not a configuration key"), "{e}");
        }
    }
}
