//! `streamhost plugins`: list, install, replace, configure, try or remove
//! the plugins of a running streamhost, through its admin API
//! (`crate::ops::admin`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::ops::admin::REQUEST_TIMEOUT;

/// `streamhost plugins`: where the admin API is, and what to do.
#[derive(clap::Args)]
pub struct Args {
    /// The admin API's address.
    #[arg(
        long,
        env = "STREAMHOST_ADMIN",
        default_value = "127.0.0.1:9464",
        global = true
    )]
    pub admin: String,
    /// Bearer token for `put` and `rm`.
    #[arg(
        long,
        env = "STREAMHOST_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with the plugins.
#[derive(Subcommand)]
pub enum Action {
    /// Show every plugin with its version, sha256, calls and failures.
    List,
    /// Install FILE as plugin NAME, or replace the plugin called NAME. It
    /// is kept on disk: over the file it was loaded from, or in the plugin
    /// folder (--plugin-dir).
    Put {
        /// The plugin's name.
        name: String,
        /// The component file.
        file: PathBuf,
        /// This plugin's call deadline (e.g. 500ms), instead of the default.
        #[arg(long, value_name = "DURATION")]
        deadline: Option<String>,
        /// This plugin's memory cap in MiB, instead of the default.
        #[arg(long, value_name = "MIB")]
        memory_mib: Option<usize>,
        /// Run FILE beside the serving version on the same batches, its
        /// outputs compared and not routed (kept in memory until promoted).
        #[arg(long, conflicts_with = "canary")]
        shadow: bool,
        /// Let FILE serve this share of keys (e.g. 10%), chosen by a stable
        /// hash of the key (kept in memory until promoted).
        #[arg(long, value_name = "PERCENT")]
        canary: Option<String>,
    },
    /// Change the configuration of the plugin called NAME: the plugin
    /// checks it, and it serves from the next batch (kept on disk, as a put
    /// is), or goes on trial with --shadow or --canary. The answer names the
    /// new version, e.g. `1.0.0+cfg.5e3a91c0`.
    Config {
        /// The plugin's name.
        name: String,
        /// Values to set, as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A secret value to set, as KEY=VALUE: passed to the plugin, never
        /// shown. Repeatable.
        #[arg(long, value_name = "KEY=VALUE")]
        secret: Vec<String>,
        /// A key to remove. Repeatable.
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
        /// Run the new configuration beside the serving one on the same
        /// batches, its outputs compared and not routed.
        #[arg(long, conflicts_with = "canary")]
        shadow: bool,
        /// Let the new configuration serve this share of keys (e.g. 10%).
        #[arg(long, value_name = "PERCENT")]
        canary: Option<String>,
    },
    /// Make the candidate on trial beside NAME its serving version (kept
    /// on disk, as a put is).
    Promote {
        /// The plugin's name.
        name: String,
    },
    /// End the trial beside NAME: the serving version goes on alone.
    Rollback {
        /// The plugin's name.
        name: String,
    },
    /// Remove the plugin called NAME.
    Rm {
        /// The plugin's name.
        name: String,
    },
}

/// Runs `streamhost plugins ACTION` against the admin API.
pub fn main(args: Args) -> anyhow::Result<()> {
    let Args {
        admin,
        token,
        action,
    } = args;
    let (admin, token) = (admin.as_str(), token.as_deref());
    let (status, body) = match action {
        Action::List => request(admin, "GET", "/plugins", None, b"")?,
        Action::Put {
            name,
            file,
            deadline,
            memory_mib,
            shadow,
            canary,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut query = Vec::new();
            if let Some(d) = deadline {
                humantime::parse_duration(&d)
                    .with_context(|| format!("--deadline {d:?} is not a duration"))?;
                query.push(format!("deadline={d}"));
            }
            if let Some(m) = memory_mib {
                query.push(format!("memory-mib={m}"));
            }
            query.extend(trial_query(shadow, canary)?);
            let query = query_text(&query);
            request(
                admin,
                "PUT",
                &format!("/plugins/{name}{query}"),
                token,
                &bytes,
            )?
        }
        Action::Config {
            name,
            set,
            secret,
            unset,
            shadow,
            canary,
        } => {
            let change = serde_json::json!({
                "set": pairs(&set)?,
                "secrets": pairs(&secret)?,
                "unset": unset,
            });
            let query = query_text(&trial_query(shadow, canary)?);
            request(
                admin,
                "PUT",
                &format!("/plugins/{name}/config{query}"),
                token,
                change.to_string().as_bytes(),
            )?
        }
        Action::Promote { name } => request(
            admin,
            "POST",
            &format!("/plugins/{name}/promote"),
            token,
            b"",
        )?,
        Action::Rollback { name } => request(
            admin,
            "POST",
            &format!("/plugins/{name}/rollback"),
            token,
            b"",
        )?,
        Action::Rm { name } => request(admin, "DELETE", &format!("/plugins/{name}"), token, b"")?,
    };
    let value: serde_json::Value =
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    if status != 200 {
        anyhow::bail!("{status}: {}", value.get("error").unwrap_or(&value));
    }
    out!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// The query parameters of a trial, if one is asked for.
fn trial_query(shadow: bool, canary: Option<String>) -> anyhow::Result<Vec<String>> {
    let mut query = Vec::new();
    if shadow {
        query.push("shadow=true".into());
    }
    if let Some(c) = canary {
        let percent = crate::ops::admin::parse_percent(&c).map_err(anyhow::Error::msg)?;
        query.push(format!("canary={percent}"));
    }
    Ok(query)
}

/// `?a&b`, or nothing.
fn query_text(query: &[String]) -> String {
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    }
}

/// `KEY=VALUE` texts as a map (the value may hold `=`).
fn pairs(texts: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    texts
        .iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => anyhow::bail!("{t:?}: give KEY=VALUE"),
        })
        .collect()
}

/// A blocking HTTP request to the admin API at `addr` (for `streamhost
/// plugins ...` and tests): the status and the body as text.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                agent.get(&url)
            } else {
                agent.delete(&url)
            };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        "POST" => {
            let mut r = agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body)
        }
        "PUT" => {
            let mut r = agent.put(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body)
        }
        other => anyhow::bail!("unsupported method {other}"),
    };
    let mut response = response.map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| anyhow::anyhow!("reading the answer to {method} {url}: {e}"))?;
    Ok((status, text))
}
