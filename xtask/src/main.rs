//! `cargo xtask ...`: the project's commands, written in Rust so that they
//! run wherever cargo does.
//!
//! - `plugins`: build every plugin under `plugins/` into a component at
//!   `target/plugins/<name>.wasm`, installing the wasm32 toolchain if needed.
//! - `test`: install what the tests need (toolchain, broker), build the
//!   plugins, then run every test of the workspace.
//! - `demo`: a local broker, the sensor producer and streamhost, end to end.
//! - `bench`: the benchmark report (see `bench.rs`).

mod broker;
mod demo;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "streamhost project commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build every plugin into a component at target/plugins/<name>.wasm.
    Plugins,
    /// Install what the tests need, build the plugins and run every test.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a local broker, the sensor producer and streamhost end to end.
    Demo(demo::DemoArgs),
    /// Run the benchmarks and write target/bench/report.md.
    Bench {
        /// A smaller run that finishes in under two minutes.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Plugins => build_plugins().map(|_| ()),
        Cmd::Test { args } => test(&args),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Bench { quick } => bench(quick),
    }
}

/// The workspace root (the parent of this crate's folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// One component to build: a package, the features to build it with and the
/// file name it gets under `target/plugins/`.
struct Plugin {
    package: &'static str,
    features: &'static str,
    output: &'static str,
}

const PLUGINS: &[Plugin] = &[
    Plugin { package: "anomaly", features: "", output: "anomaly" },
    Plugin { package: "anomaly", features: "v2", output: "anomaly-v2" },
    Plugin { package: "trend", features: "", output: "trend" },
    Plugin { package: "enrich", features: "", output: "enrich" },
    Plugin { package: "hostile", features: "", output: "hostile" },
    Plugin { package: "hostile", features: "describe-traps", output: "hostile-describe-traps" },
];

/// Builds every plugin and returns the folder holding the components.
pub fn build_plugins() -> Result<PathBuf> {
    let root = root();
    let toolchain = toolchain::wasm32()?;
    let out_dir = root.join("target/plugins");
    std::fs::create_dir_all(&out_dir)?;
    let target_dir = root.join("target/wasm");
    for plugin in PLUGINS {
        let mut cmd = toolchain.cargo_build();
        cmd.current_dir(&root)
            .args(["--profile", "plugin", "--target", "wasm32-unknown-unknown"])
            .args(["-p", plugin.package])
            .arg("--target-dir")
            .arg(&target_dir);
        if !plugin.features.is_empty() {
            cmd.args(["--features", plugin.features]);
        }
        run(&mut cmd).with_context(|| format!("building plugin {}", plugin.output))?;
        let module = target_dir
            .join("wasm32-unknown-unknown/plugin")
            .join(format!("{}.wasm", plugin.package));
        let bytes = std::fs::read(&module)
            .with_context(|| format!("reading core module {}", module.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .with_context(|| format!("{}: reading the component-type section", plugin.output))?
            .validate(true)
            .encode()
            .with_context(|| format!("{}: encoding the component", plugin.output))?;
        let dest = out_dir.join(format!("{}.wasm", plugin.output));
        std::fs::write(&dest, &component)?;
        println!("built {} ({} KiB)", dest.display(), component.len() / 1024);
    }
    build_javascript_plugins(&out_dir)?;
    build_python_plugins(&out_dir)?;
    Ok(out_dir)
}

/// JavaScript plugins are built by componentize-js (npm). Node and npm are
/// installed with apt when missing and we run as root; otherwise the
/// JavaScript plugins are skipped with a message saying what to install.
fn build_javascript_plugins(out_dir: &Path) -> Result<()> {
    let has = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !(has("node") && has("npm")) {
        if toolchain::is_root() && Path::new("/usr/bin/apt-get").exists() {
            eprintln!("xtask: installing nodejs and npm with apt-get");
            toolchain::apt_install(&["nodejs", "npm"])?;
        } else {
            eprintln!("xtask: node and npm not found; skipping JavaScript plugins (install nodejs and npm to build them)");
            return Ok(());
        }
    }
    let dir = root().join("plugins/jump-js");
    if !dir.join("node_modules/@bytecodealliance/componentize-js").exists() {
        run(Command::new("npm").current_dir(&dir).args(["ci", "--no-audit", "--no-fund"]))?;
    }
    let dest = out_dir.join("jump-js.wasm");
    run(Command::new("node").current_dir(&dir).arg("build.mjs").arg(&dest)).context("building plugins/jump-js")?;
    Ok(())
}

/// Python plugins are built by componentize-py (PyPI), installed with pip
/// when missing.
fn build_python_plugins(out_dir: &Path) -> Result<()> {
    const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
    let has = || Command::new("componentize-py").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has() {
        eprintln!("xtask: installing {COMPONENTIZE_PY} with pip");
        let pip = run(Command::new("python3").args(["-m", "pip", "install", "-q", COMPONENTIZE_PY]));
        if pip.is_err() || !has() {
            eprintln!("xtask: componentize-py unavailable; skipping Python plugins (pip install {COMPONENTIZE_PY})");
            return Ok(());
        }
    }
    let dir = root().join("plugins/humidity-py");
    run(Command::new("componentize-py")
        .current_dir(&dir)
        .args(["-d", "../../wit", "-w", "anomaly", "componentize", "app", "-o"])
        .arg(out_dir.join("humidity-py.wasm")))
    .context("building plugins/humidity-py")?;
    println!("built {}", out_dir.join("humidity-py.wasm").display());
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let nisshi = toolchain::ensure_broker()?;
    toolchain::ensure_compose_client()?;
    build_plugins()?;
    // The end-to-end tests run these binaries as separate processes.
    run(Command::new(cargo()).current_dir(root()).args(["build", "--release", "--workspace", "--bins"]))?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root())
        .args(["test", "--workspace", "--release"])
        .env("STREAMHOST_NISSHI", &nisshi);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    run(&mut cmd)
}

fn bench(quick: bool) -> Result<()> {
    build_plugins()?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root()).args(["bench", "-p", "streamhost", "--bench", "pipeline", "--"]);
    if quick {
        cmd.arg("--quick");
    }
    cmd.env("STREAMHOST_NISSHI", toolchain::ensure_broker()?);
    run(&mut cmd)
}

/// The cargo running this command (rustup's), for host builds.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
