//! The `streamhost` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use streamhost::config::{RunArgs, Settings};
use streamhost::contract::{Needs, WIT_VERSION};
use streamhost::rules::runtime::{Limits, Runtime};

/// Runs WebAssembly rules (transform, trend, anomaly) over a Kafka topic,
/// keeping sliding windows per key, and routes what they return to an
/// alerts, an enriched and a dead-letter topic.
///
/// Without a subcommand, runs the pipeline:
///   streamhost --brokers localhost:9092 --plugin enrich.wasm --plugin trend.wasm --plugin anomaly.wasm
#[derive(Parser)]
#[command(
    name = "streamhost",
    version,
    args_conflicts_with_subcommands = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,

    /// Log format on stderr; the filter comes from RUST_LOG (default `info`).
    #[arg(
        long,
        value_enum,
        env = "STREAMHOST_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List, install, replace or remove plugins of a running streamhost
    /// through its admin API.
    Plugins {
        /// The admin API's address.
        #[arg(
            long,
            env = "STREAMHOST_ADMIN",
            default_value = "127.0.0.1:9464",
            global = true
        )]
        admin: String,
        /// Bearer token for `put` and `rm`.
        #[arg(
            long,
            env = "STREAMHOST_ADMIN_TOKEN",
            hide_env_values = true,
            global = true
        )]
        token: Option<String>,
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Load a plugin and print its kind, name, version and WIT package version.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PluginAction {
    /// Show every plugin with its version, sha256, calls and failures.
    List,
    /// Install FILE as plugin NAME, or replace the plugin called NAME.
    Put { name: String, file: PathBuf },
    /// Remove the plugin called NAME.
    Rm { name: String },
}

fn plugins(admin: &str, token: Option<&str>, action: PluginAction) -> anyhow::Result<()> {
    let (status, body) = match action {
        PluginAction::List => streamhost::ops::admin::request(admin, "GET", "/plugins", None, b"")?,
        PluginAction::Put { name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            streamhost::ops::admin::request(
                admin,
                "PUT",
                &format!("/plugins/{name}"),
                token,
                &bytes,
            )?
        }
        PluginAction::Rm { name } => streamhost::ops::admin::request(
            admin,
            "DELETE",
            &format!("/plugins/{name}"),
            token,
            b"",
        )?,
    };
    let value: serde_json::Value =
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    if status != 200 {
        anyhow::bail!("{status}: {}", value.get("error").unwrap_or(&value));
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

fn inspect(file: PathBuf, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(Limits::default())?;
    let plugin = runtime
        .load(&bytes, &file.display().to_string())
        .with_context(|| format!("loading {}", file.display()))?;
    let info = plugin.info();
    if json {
        let mut v = serde_json::to_value(info)?;
        v["needs"] = serde_json::json!(needs_list(info.needs));
        v["host_wit"] = serde_json::json!(format!("streamhost:plugin@{WIT_VERSION}"));
        println!("{v}");
    } else {
        println!("{}", info.kind);
        println!("name:    {}", info.name);
        println!("version: {}", info.version);
        println!("wit:     {}", info.wit);
        println!("needs:   {}", needs_list(info.needs).join(", "));
        println!("sha256:  {}", info.sha256);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamhost: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Inspect { file, json }) => inspect(file, json),
        Some(Command::Plugins {
            admin,
            token,
            action,
        }) => plugins(&admin, token.as_deref(), action),
        None => {
            let settings = Settings::resolve(cli.run)?;
            let max_records = settings.max_records;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let tally = runtime
                .block_on(streamhost::service::run(
                    settings,
                    streamhost::service::shutdown_signal(),
                ))?
                .tally;
            if max_records.is_some() {
                let summary = serde_json::json!({
                    "in": tally.input,
                    "enriched": tally.enriched,
                    "dropped": tally.dropped,
                    "alert_records": tally.alert_records,
                    "alerts_by_kind": tally.alerts_by_kind,
                    "dead_letters_by_reason": tally.dead_by_reason,
                });
                println!("{summary}");
            }
            Ok(())
        }
    }
}
