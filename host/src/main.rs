//! The `streamhost` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use streamhost::config::{RunArgs, Settings};
use streamhost::contract::{Needs, WIT_VERSION};
use streamhost::rules::runtime::{Limits, Runtime};

/// `println!` that returns the write's error instead of panicking, so that a
/// reader that stops early (`streamhost inspect FILE | head`) ends the
/// command quietly: `main` treats a closed stdout as success.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(StdoutError)?
    }};
}

/// A failed write to stdout, told apart from every other I/O error (a
/// broken pipe to the admin API is a failure, not a reader gone).
#[derive(Debug)]
struct StdoutError(std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

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
    /// Load a plugin and print its kind, name, version and WIT package
    /// version, and how long loading took (this also fills the compile
    /// cache, so the next load of the same file is fast).
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
        /// Folder of compiled components, or `off`.
        /// [default: $XDG_CACHE_HOME/streamhost/compiled, else ~/.cache/streamhost/compiled]
        #[arg(long, env = "STREAMHOST_COMPILE_CACHE", value_name = "DIR|off")]
        compile_cache: Option<String>,
    },
    /// Write a ready-to-build plugin project: the rule, its build script,
    /// the WIT contract and a sample input for run-local.
    ///
    ///   streamhost new hot-rooms --kind anomaly --lang python
    New {
        /// The plugin's name (lowercase letters, digits and `-`).
        name: String,
        /// What the rule does.
        #[arg(long, value_enum, default_value = "anomaly")]
        kind: streamhost::rules::runtime::Kind,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: streamhost::scaffold::Lang,
        /// Where to write it. [default: ./NAME]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Turn a core module built with wit-bindgen (Rust, C) into a plugin
    /// component; a module importing WASI 0.1 (C's stdio) gets the WASI
    /// adapter.
    ///
    ///   streamhost componentize target/wasm32-unknown-unknown/release/rule.wasm -o rule.wasm
    Componentize {
        /// The core module.
        module: PathBuf,
        /// Where to write the component.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Run dead letters again through the current plugins (those of the
    /// settings: --plugin, --plugin-dir, the config file) or the given
    /// ones, each judged against the window it would have seen, rebuilt
    /// from the input topic. Progress is kept in a consumer group of its
    /// own, so running it again adds nothing.
    ///
    ///   streamhost replay --from iot-dlq --reason plugin-error --plugin anomaly-fixed.wasm
    Replay {
        /// The dead-letter topic to read. [default: the --dlq-topic]
        #[arg(long, value_name = "TOPIC")]
        from: Option<String>,
        /// Only dead letters with these reasons (comma-separated, e.g.
        /// plugin-error,plugin-trap). [default: all]
        #[arg(long, value_delimiter = ',', value_name = "REASONS")]
        reason: Vec<String>,
        /// Only dead letters written since this time: RFC 3339, or a
        /// duration ago (e.g. 2h).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// The consumer group keeping the replay's progress.
        /// [default: streamhost-replay.TOPIC, plus the reasons]
        #[arg(long = "replay-group", value_name = "GROUP")]
        replay_group: Option<String>,
        /// Skip dead letters already tried this many times.
        #[arg(long, default_value_t = 5, value_name = "N")]
        max_attempts: u32,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run plugins over a file of JSON lines (or stdin), with the real
    /// decode, windows and routing, and no Kafka; print the enriched
    /// records, alerts and dead letters, and each plugin's cost.
    ///
    ///   streamhost run-local --plugin anomaly.wasm --input readings.jsonl
    ///
    /// Takes the same settings as the main job (--config, --fields,
    /// --window, --plugin-deadline...); Kafka settings are ignored.
    RunLocal {
        /// A file of JSON lines, one record each; `-` is stdin.
        #[arg(long, default_value = "-", value_name = "FILE")]
        input: PathBuf,
        /// Write DIR/enriched.jsonl, DIR/alerts.jsonl and
        /// DIR/dead-letters.jsonl instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Processing time of the run (RFC 3339), so that a run repeats
        /// exactly. [default: the clock]
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Subcommand)]
enum PluginAction {
    /// Show every plugin with its version, sha256, calls and failures.
    List,
    /// Install FILE as plugin NAME, or replace the plugin called NAME. It
    /// is kept on disk: over the file it was loaded from, or in the plugin
    /// folder (--plugin-dir).
    Put {
        name: String,
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
    /// Make the candidate on trial beside NAME its serving version (kept
    /// on disk, as a put is).
    Promote { name: String },
    /// End the trial beside NAME: the serving version goes on alone.
    Rollback { name: String },
    /// Remove the plugin called NAME.
    Rm { name: String },
}

fn plugins(admin: &str, token: Option<&str>, action: PluginAction) -> anyhow::Result<()> {
    let (status, body) = match action {
        PluginAction::List => streamhost::ops::admin::request(admin, "GET", "/plugins", None, b"")?,
        PluginAction::Put {
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
            if shadow {
                query.push("shadow=true".into());
            }
            if let Some(c) = canary {
                let percent =
                    streamhost::ops::admin::parse_percent(&c).map_err(anyhow::Error::msg)?;
                query.push(format!("canary={percent}"));
            }
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            streamhost::ops::admin::request(
                admin,
                "PUT",
                &format!("/plugins/{name}{query}"),
                token,
                &bytes,
            )?
        }
        PluginAction::Promote { name } => streamhost::ops::admin::request(
            admin,
            "POST",
            &format!("/plugins/{name}/promote"),
            token,
            b"",
        )?,
        PluginAction::Rollback { name } => streamhost::ops::admin::request(
            admin,
            "POST",
            &format!("/plugins/{name}/rollback"),
            token,
            b"",
        )?,
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
    out!("{}", serde_json::to_string_pretty(&value)?);
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

fn inspect(file: PathBuf, json: bool, compile_cache: Option<String>) -> anyhow::Result<()> {
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = streamhost::service::with_compile_cache(
        Runtime::new(Limits::default())?,
        streamhost::config::compile_cache(compile_cache).as_deref(),
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

/// `--since`: RFC 3339, or a duration before now.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("--since {text:?} is neither RFC 3339 nor a duration"))?;
    Ok(chrono::Utc::now().timestamp_millis() - ago.as_millis() as i64)
}

fn print_replay(s: &streamhost::reprocess::Summary) -> anyhow::Result<()> {
    let failed: u64 = s.failed_again.values().sum();
    let skipped: u64 = s.skipped.values().sum();
    out!(
        "replayed {} dead letters of {} (progress group {})",
        s.read - skipped,
        s.topic,
        s.group
    );
    for (reason, n) in &s.by_reason {
        out!("  {reason:<28}{n:>8}");
    }
    out!(
        "resolved:       {:>8}   ({} enriched, {} alert records)",
        s.resolved,
        s.enriched,
        s.alerts
    );
    out!("failed again:   {failed:>8}");
    for (reason, n) in &s.failed_again {
        out!("  {reason:<28}{n:>8}");
    }
    out!("skipped:        {skipped:>8}");
    for (why, n) in &s.skipped {
        out!("  {why:<28}{n:>8}");
    }
    if s.partial_windows > 0 {
        out!(
            "partial windows:{:>8}   (the input no longer held the whole span)",
            s.partial_windows
        );
    }
    Ok(())
}

/// mimalloc: the data path allocates a few buffers per record (decoded
/// columns, output records), and the system allocator was a sixth of its
/// instructions (bench section 1).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<StdoutError>()
                    .is_some_and(|out| out.0.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamhost: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Inspect {
            file,
            json,
            compile_cache,
        }) => inspect(file, json, compile_cache),
        Some(Command::New {
            name,
            kind,
            lang,
            dir,
        }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = streamhost::scaffold::new_project(&name, kind, lang, &dir)?;
            out!(
                "wrote {} files into {}: {}",
                files.len(),
                dir.display(),
                files.join(", ")
            );
            out!(
                "next:\n  cd {}\n  ./build.sh\n  streamhost run-local --plugin {name}.wasm --input sample.jsonl",
                dir.display()
            );
            Ok(())
        }
        Some(Command::Componentize { module, output }) => {
            let bytes =
                std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
            let component = streamhost::scaffold::componentize(&bytes)
                .with_context(|| format!("componentizing {}", module.display()))?;
            std::fs::write(&output, &component)
                .with_context(|| format!("writing {}", output.display()))?;
            out!(
                "wrote {} ({} KiB)",
                output.display(),
                component.len() / 1024
            );
            Ok(())
        }
        Some(Command::RunLocal {
            input,
            out,
            now,
            run,
        }) => {
            let settings = Settings::resolve(run)?;
            let now_ms = match now {
                None => None,
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .with_context(|| format!("--now {t:?} is not RFC 3339"))?
                        .timestamp_millis(),
                ),
            };
            let local = streamhost::local::LocalRun {
                input: (input.as_os_str() != "-").then_some(input),
                out,
                now_ms,
            };
            let to_stdout = local.out.is_none();
            streamhost::local::run(&settings, &local)
                .map(|_| ())
                .map_err(|e| {
                    // Its outputs go to stdout: a reader gone is no failure.
                    let pipe = std::io::ErrorKind::BrokenPipe;
                    let closed = to_stdout
                        && e.downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.kind() == pipe);
                    if closed {
                        StdoutError(pipe.into()).into()
                    } else {
                        e
                    }
                })
        }
        Some(Command::Plugins {
            admin,
            token,
            action,
        }) => plugins(&admin, token.as_deref(), action),
        Some(Command::Replay {
            from,
            reason,
            since,
            replay_group,
            max_attempts,
            json,
            run,
        }) => {
            let settings = Settings::resolve(run)?;
            for r in &reason {
                anyhow::ensure!(
                    streamhost::record::Reason::parse(r).is_some(),
                    "--reason {r:?} is not a dead-letter reason ({})",
                    streamhost::record::Reason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let since_ms = since.as_deref().map(parse_since).transpose()?;
            let args = streamhost::reprocess::ReplayArgs {
                from: from.unwrap_or_else(|| settings.dlq_topic.clone()),
                reasons: reason,
                since_ms,
                group: replay_group,
                max_attempts,
                progress: true,
            };
            let summary = streamhost::reprocess::run(&settings, &args)?;
            if json {
                out!("{}", serde_json::to_string(&summary)?);
            } else {
                print_replay(&summary)?;
            }
            Ok(())
        }
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
                out!("{summary}");
            }
            Ok(())
        }
    }
}
