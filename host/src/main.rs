//! The `streamhost` command: reads the command line and dispatches to
//! `streamhost::cmd`, one module a subcommand.

use clap::{Parser, Subcommand, ValueEnum};
use streamhost::cmd;
use streamhost::config::RunArgs;

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
    Plugins(cmd::plugins::Args),
    /// Show what a running streamhost holds for one key, through its
    /// admin API: its partition and who holds it, its window's aggregates,
    /// its declared windows, its newest readings, its open alerts and its
    /// table rows.
    ///
    ///   streamhost key sensor_015 --admin 127.0.0.1:9464
    Key(cmd::key::Args),
    /// Load a plugin and print its kind, name, version and WIT package
    /// version, and how long loading took (this also fills the compile
    /// cache, so the next load of the same file is fast).
    Inspect(cmd::inspect::Args),
    /// Write a ready-to-build plugin project: the rule, its build script,
    /// the WIT contract and a sample input for run-local.
    ///
    ///   streamhost new hot-rooms --kind anomaly --lang python
    New(cmd::new::Args),
    /// Turn a core module built with wit-bindgen (Rust, C) into a plugin
    /// component; a module importing WASI 0.1 (C's stdio) gets the WASI
    /// adapter.
    ///
    ///   streamhost componentize target/wasm32-unknown-unknown/release/rule.wasm -o rule.wasm
    Componentize(cmd::componentize::Args),
    /// Run dead letters again through the current plugins (those of the
    /// settings: --plugin, --plugin-dir, the config file) or the given
    /// ones, each judged against the window it would have seen, rebuilt
    /// from the input topic. Progress is kept in a consumer group of its
    /// own, so running it again adds nothing.
    ///
    ///   streamhost replay --from iot-dlq --reason plugin-error --plugin anomaly-fixed.wasm
    Replay(cmd::replay::Args),
    /// Run plugins over a file of JSON lines (or stdin), with the real
    /// decode, windows and routing, and no Kafka; print the enriched
    /// records, alerts and dead letters, and each plugin's cost.
    ///
    ///   streamhost run-local --plugin anomaly.wasm --input readings.jsonl
    ///
    /// Takes the same settings as the main job (--config, --fields,
    /// --window, --plugin-deadline...); Kafka settings are ignored.
    RunLocal(cmd::run_local::Args),
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

/// mimalloc: the data path allocates a few buffers per record (decoded
/// columns, output records), and the system allocator was a sixth of its
/// instructions (bench section 1).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let done = match cli.command {
        None => cmd::run::main(cli.run),
        Some(Command::RunLocal(args)) => cmd::run_local::main(args),
        Some(Command::Replay(args)) => cmd::replay::main(args),
        Some(Command::New(args)) => cmd::new::main(args),
        Some(Command::Componentize(args)) => cmd::componentize::main(args),
        Some(Command::Inspect(args)) => cmd::inspect::main(args),
        Some(Command::Plugins(args)) => cmd::plugins::main(args),
        Some(Command::Key(args)) => cmd::key::main(args),
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if cmd::stdout_closed(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamhost: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
