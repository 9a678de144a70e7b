//! `streamhost inspect`: load a plugin and print what it is, and how long
//! loading took (which also fills the compile cache).

use std::path::PathBuf;

use anyhow::Context;

use crate::contract::{Needs, WIT_VERSION};
use crate::rules::runtime::{Limits, Runtime};

/// `streamhost inspect FILE`.
#[derive(clap::Args)]
pub struct Args {
    /// The component file.
    pub file: PathBuf,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Folder of compiled components, or `off`.
    /// [default: $XDG_CACHE_HOME/streamhost/compiled, else ~/.cache/streamhost/compiled]
    #[arg(long, env = "STREAMHOST_COMPILE_CACHE", value_name = "DIR|off")]
    pub compile_cache: Option<String>,
}

/// Runs `streamhost inspect`.
pub fn main(args: Args) -> anyhow::Result<()> {
    let Args {
        file,
        json,
        compile_cache,
    } = args;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = super::wiring::with_compile_cache(
        Runtime::new(Limits::default())?,
        crate::config::compile_cache(compile_cache).as_deref(),
    );
    let plugin = runtime
        .load(&bytes, &file.display().to_string())
        .with_context(|| format!("loading {}", file.display()))?;
    let info = plugin.info();
    if json {
        let mut v = serde_json::to_value(info)?;
        v["needs"] = serde_json::json!(needs_list(info.needs));
        v["host_wit"] = serde_json::json!(format!("streamhost:plugin@{WIT_VERSION}"));
        out!("{v}");
    } else {
        out!("{}", info.kind);
        out!("name:    {}", info.name);
        out!("version: {}", info.version);
        out!("wit:     {}", info.wit);
        out!("needs:   {}", needs_list(info.needs).join(", "));
        out!("sha256:  {}", info.sha256);
        out!(
            "load:    {:.3} s ({})",
            info.load_seconds,
            serde_json::to_value(info.compiled_from)?
                .as_str()
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn needs_list(needs: Needs) -> Vec<&'static str> {
    let mut out = Vec::new();
    if needs.contains(Needs::KEYS) {
        out.push("keys");
    }
    if needs.contains(Needs::JSON) {
        out.push("json");
    }
    if needs.contains(Needs::WINDOW_VALUES) {
        out.push("window-values");
    }
    out
}
