//! `cargo xtask ...`: the project's commands, written in Rust so that they
//! run wherever cargo does.
//!
//! - `plugins`: build every plugin under `plugins/` into a component at
//!   `target/plugins/<name>.wasm`, installing the wasm32 toolchain if needed.
//! - `test`: install what the tests need (toolchain, broker), build the
//!   plugins, then run every test of the workspace.
//! - `demo`: a local broker, the sensor producer and streamhost, end to end.
//! - `broker`: the broker on loopback with the four topics, for your own
//!   producers; `--stop` ends it.
//! - `bench`: the benchmark report (`host/benches/pipeline/`).
//! - `doctor`: what the commands above need, what is present, and how each
//!   missing piece gets installed.

mod demo;
mod local_broker;
mod toolchain;

use std::path::{Path, PathBuf};

use std::process::Command;
use streamhost_testkit::broker;

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
    /// Start the broker on loopback in the background, with the four
    /// topics streamhost uses (`--stop` ends it).
    Broker(local_broker::BrokerArgs),
    /// Run the benchmarks and write target/bench/report.md.
    Bench {
        /// A smaller run that finishes in under two minutes.
        #[arg(long)]
        quick: bool,
    },
    /// Check every tool the commands need; say what is missing and how it
    /// gets installed.
    Doctor,
}

fn main() -> Result<()> {
    // Before any thread: every command below, and the tests, find the node
    // installed for componentize-js first.
    toolchain::use_own_node();
    match Cli::parse().command {
        Cmd::Plugins => build_plugins().map(|_| ()),
        Cmd::Test { args } => test(&args),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Broker(args) => local_broker::run(args),
        Cmd::Bench { quick } => bench(quick),
        Cmd::Doctor => doctor(),
    }
}

/// The workspace root (the parent of this crate's folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One component to build: a package, the features to build it with and the
/// file name it gets under `target/plugins/`.
struct Plugin {
    package: &'static str,
    features: &'static str,
    output: &'static str,
}

const PLUGINS: &[Plugin] = &[
    Plugin {
        package: "anomaly",
        features: "",
        output: "anomaly",
    },
    Plugin {
        package: "anomaly",
        features: "traps",
        output: "anomaly-traps",
    },
    Plugin {
        package: "anomaly",
        features: "rejects",
        output: "anomaly-rejects",
    },
    Plugin {
        package: "trend",
        features: "",
        output: "trend",
    },
    Plugin {
        package: "enrich",
        features: "",
        output: "enrich",
    },
    Plugin {
        package: "hostile",
        features: "",
        output: "hostile",
    },
    Plugin {
        package: "zscore",
        features: "",
        output: "zscore",
    },
    Plugin {
        package: "hostile",
        features: "describe-traps",
        output: "hostile-describe-traps",
    },
    Plugin {
        package: "hostile",
        features: "transform",
        output: "hostile-transform",
    },
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
    build_c_plugins(&out_dir)?;
    Ok(out_dir)
}

/// C plugins: bindings from wit-bindgen's C generator, compiled by Debian's
/// clang against wasi-libc into a WASI reactor, then made a component with
/// the WASI 0.1 adapter (their stdio imports WASI 0.1), as `streamhost
/// componentize` does.
fn build_c_plugins(out_dir: &Path) -> Result<()> {
    let wit_bindgen = toolchain::ensure_c()?;
    let dir = root().join("plugins/pressure-c");
    let dest = out_dir.join("pressure-c.wasm");
    let mut inputs = vec![dir.join("rule.c"), wit_bindgen.clone()];
    inputs.extend(wit_files()?);
    if up_to_date(&dest, &inputs) {
        return Ok(());
    }
    let work = root().join("target/c/pressure-c");
    let bindings = work.join("bindings");
    std::fs::create_dir_all(&bindings)?;
    run(Command::new(&wit_bindgen)
        .args(["c", "--world", "anomaly", "--out-dir"])
        .arg(&bindings)
        .arg(root().join("wit")))
    .context("generating the C bindings")?;
    let core = work.join("core.wasm");
    run(Command::new(toolchain::CLANG)
        .args([
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-O2",
            "-Wall",
            "-Werror",
        ])
        .arg("-I")
        .arg(&bindings)
        .arg(dir.join("rule.c"))
        .arg(bindings.join("anomaly.c"))
        .arg(bindings.join("anomaly_component_type.o"))
        .arg("-o")
        .arg(&core))
    .context("compiling plugins/pressure-c")?;
    let module = std::fs::read(&core)?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
        .context("pressure-c: encoding the component")?;
    std::fs::write(&dest, &component)?;
    println!("built {} ({} KiB)", dest.display(), component.len() / 1024);
    Ok(())
}

/// JavaScript plugins are built by componentize-js (npm); node and npm are
/// installed with apt when missing.
fn build_javascript_plugins(out_dir: &Path) -> Result<()> {
    toolchain::ensure_node()?;
    let dir = root().join("plugins/jump-js");
    if !dir
        .join("node_modules/@bytecodealliance/componentize-js/package.json")
        .exists()
    {
        eprintln!("xtask: installing componentize-js with npm ci (about 30 s)");
        run(Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]))?;
    }
    let wit = wit_files()?;
    let inputs = |source: &str| {
        let mut inputs = vec![
            dir.join(source),
            dir.join("build.mjs"),
            dir.join("package-lock.json"),
        ];
        inputs.extend(wit.iter().cloned());
        inputs
    };
    let dest = out_dir.join("jump-js.wasm");
    if !up_to_date(&dest, &inputs("rule.js")) {
        run(Command::new("node")
            .current_dir(&dir)
            .arg("build.mjs")
            .arg(&dest))
        .context("building plugins/jump-js")?;
    }
    // A fixture: reads WASI's clocks and random source, which must answer
    // deterministically.
    let dest = out_dir.join("clock-js.wasm");
    if !up_to_date(&dest, &inputs("../hostile/clock.js")) {
        run(Command::new("node")
            .current_dir(&dir)
            .arg("build.mjs")
            .arg(&dest)
            .arg("../hostile/clock.js"))
        .context("building plugins/hostile/clock.js")?;
    }
    // An example with its own folder, built with jump-js's componentize-js.
    let dest = out_dir.join("thresholds-js.wasm");
    if !up_to_date(&dest, &inputs("../thresholds-js/rule.js")) {
        run(Command::new("node")
            .current_dir(&dir)
            .arg("build.mjs")
            .arg(&dest)
            .arg("../thresholds-js/rule.js"))
        .context("building plugins/thresholds-js")?;
    }
    Ok(())
}

/// Every file of the WIT contract: `wit/streamhost.wit` and the packages it
/// imports under `wit/deps/` (`wasi:config`), which the builds resolve from
/// the folder.
fn wit_files() -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|x| x == "wit") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(&root().join("wit"), &mut files)?;
    files.sort();
    Ok(files)
}

/// Whether `output` exists and is newer than every one of `inputs` (a
/// missing input counts as newer). componentize-js and componentize-py
/// always rebuild, and take seconds: this keeps `cargo xtask demo` after
/// `cargo xtask test` from building them again.
fn up_to_date(output: &Path, inputs: &[PathBuf]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(output) else {
        return false;
    };
    let fresh = inputs
        .iter()
        .all(|i| modified(i).is_some_and(|t| t < built));
    if fresh {
        println!("up to date: {}", output.display());
    }
    fresh
}

/// Python plugins, by folder under `plugins/` (each an `app.py`) and the
/// world it targets.
const PYTHON_PLUGINS: &[(&str, &str)] = &[("humidity-py", "anomaly"), ("crossover-py", "trend")];

/// Python plugins are built by componentize-py (PyPI), installed into a
/// virtual environment under `~/.streamhost-tools` when missing.
fn build_python_plugins(out_dir: &Path) -> Result<()> {
    let componentize_py = toolchain::ensure_componentize_py()?;
    for (name, world) in PYTHON_PLUGINS {
        let dir = root().join("plugins").join(name);
        let dest = out_dir.join(format!("{name}.wasm"));
        let mut inputs = vec![dir.join("app.py"), componentize_py.clone()];
        inputs.extend(wit_files()?);
        if up_to_date(&dest, &inputs) {
            continue;
        }
        run(Command::new(&componentize_py)
            .current_dir(&dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args(["-d", "../../wit", "-w", world, "componentize", "app", "-o"])
            .arg(&dest))
        .with_context(|| format!("building plugins/{name}"))?;
        println!("built {}", dest.display());
    }
    Ok(())
}

/// How long the first `cargo xtask test` took on a fresh two-core machine,
/// measured from a clean state (docs/setup.md gives each phase).
const FIRST_RUN: &str = "36 minutes, tests included (measured 2026-12-02)";

/// Says up front what the first run will install and build, and how long
/// it all took where it was measured; nothing when everything is in place.
pub fn announce_plan() {
    let mut steps = Vec::new();
    if !toolchain::host_checks().iter().all(toolchain::Check::ok) {
        steps.push(format!(
            "install {} with apt (for librdkafka and its TLS; about 1 minute)",
            toolchain::missing_host_packages().join(" ")
        ));
    }
    if !toolchain::debian_checks().iter().all(toolchain::Check::ok) {
        steps.push(format!(
            "install Debian's wasm32 toolchain: {} (about 1 minute)",
            toolchain::DEBIAN_PACKAGES.join(" ")
        ));
    }
    if !toolchain::broker_check().ok() {
        steps.push("build the broker, Nisshi (465 crates), once into ~/.streamhost-tools (the longest step; progress every 30 s)".into());
    }
    if !toolchain::python_checks().iter().all(toolchain::Check::ok) {
        steps.push(format!(
            "install {} into ~/.streamhost-tools/python (about 30 s)",
            toolchain::COMPONENTIZE_PY
        ));
    }
    if !toolchain::node_checks().iter().all(toolchain::Check::ok) {
        steps.push(
            "install npm with apt if missing, node 22 into ~/.streamhost-tools/node if the system's is older than 20.19, and componentize-js with npm (about 1 minute)"
                .into(),
        );
    }
    if !toolchain::c_checks().iter().all(toolchain::Check::ok) {
        steps.push(format!(
            "install {} with apt and build wit-bindgen-cli with cargo, for the C plugin",
            toolchain::C_PACKAGES.join(" ")
        ));
    }
    if !toolchain::compose_check().ok() {
        steps.push("install docker-compose with apt (about 1 minute)".into());
    }
    if !toolchain::browser_check().ok() {
        steps.push(format!(
            "install {} with apt, to open the console in the tests (about 1 minute)",
            toolchain::BROWSER_PACKAGES.join(" ")
        ));
    }
    if !root().join("target/release/streamhost").exists() {
        steps.push(
            "build the plugins, and the host with wasmtime and librdkafka, the examples and the tests (release)"
                .into(),
        );
    }
    if steps.is_empty() {
        return;
    }
    eprintln!("xtask: first run on this machine; it will:");
    for s in &steps {
        eprintln!("xtask:   - {s}");
    }
    eprintln!(
        "xtask: the builds run side by side; on a fresh two-core machine all of it took {FIRST_RUN}"
    );
    eprintln!("xtask: (`cargo xtask doctor` lists what is present and what is missing)");
}

/// `cargo xtask doctor`: every requirement of `cargo xtask test` and
/// `cargo xtask demo`, present or missing, and how it is installed.
fn doctor() -> Result<()> {
    let wasm32 = if toolchain::rustup_has_wasm32() {
        vec![toolchain::Check {
            what: "wasm32 target (rustup)",
            state: Ok(
                "wasm32-unknown-unknown installed; plugins build with rustup's toolchain".into(),
            ),
            install: "rustup target add wasm32-unknown-unknown".into(),
        }]
    } else {
        Vec::new()
    };
    let sections: Vec<(&str, Vec<toolchain::Check>)> = vec![
        ("host build", toolchain::host_checks()),
        (
            "wasm32 plugins (Debian's toolchain; also builds the broker)",
            [wasm32, toolchain::debian_checks()].concat(),
        ),
        ("broker", vec![toolchain::broker_check()]),
        ("JavaScript plugins", toolchain::node_checks()),
        ("Python plugins", toolchain::python_checks()),
        ("C plugins", toolchain::c_checks()),
        ("examples", vec![toolchain::compose_check()]),
        (
            "demo (`cargo xtask demo`)",
            vec![toolchain::kafka_python_check()],
        ),
        ("console tests", vec![toolchain::browser_check()]),
        (
            "benchmark (`cargo xtask bench`)",
            vec![toolchain::valgrind_check()],
        ),
    ];
    let mut missing = 0;
    for (title, checks) in &sections {
        println!("{title}:");
        for c in checks {
            match &c.state {
                Ok(detail) => println!("  ok       {:<52} {detail}", c.what),
                Err(problem) => {
                    missing += 1;
                    println!(
                        "  MISSING  {:<52} {problem}
           {:<52} installed by: {}",
                        c.what, "", c.install
                    );
                }
            }
        }
    }
    let can_install = toolchain::can_install();
    match (missing, can_install) {
        (0, _) => println!(
            "
everything is in place."
        ),
        (n, true) => println!(
            "
{n} missing; `cargo xtask test` installs them (it runs as root with apt)."
        ),
        (n, false) => {
            println!("
{n} missing, and this user cannot install packages: run `cargo xtask test` as root, or install the packages named above.");
            bail!("{n} requirements missing");
        }
    }
    Ok(())
}

/// Builds every binary the tests and the demo run, and every test target,
/// in one cargo command: one feature resolution (dev-dependencies included),
/// so `cargo test` and `cargo xtask demo` after it compile nothing again.
pub fn build_binaries() -> Result<()> {
    toolchain::ensure_host()?;
    eprintln!(
        "xtask: building the host, the examples and the tests (release; about 29 minutes the first time, beside the broker)"
    );
    run(Command::new(cargo()).current_dir(root()).args([
        "build",
        "--release",
        "--workspace",
        "--bins",
        "--tests",
    ]))
}

/// Wall time per phase of `cargo xtask test`, printed at the end so that a
/// slow first run says where its time went.
struct Phases(std::sync::Mutex<Vec<(&'static str, std::time::Duration)>>);

impl Phases {
    fn time<T>(&self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = std::time::Instant::now();
        let out = f().with_context(|| format!("phase `{name}`"));
        self.0.lock().unwrap().push((name, start.elapsed()));
        out
    }

    fn report(&self, total: std::time::Duration) {
        eprintln!("xtask: wall time per phase (the three builds run side by side):");
        for (name, took) in self.0.lock().unwrap().iter() {
            eprintln!("xtask:   {name:<28} {:>6.1} min", took.as_secs_f64() / 60.0);
        }
        eprintln!(
            "xtask:   {:<28} {:>6.1} min",
            "total",
            total.as_secs_f64() / 60.0
        );
    }
}

/// `cargo xtask test`. The three builds (the broker with Debian's cargo, the
/// plugins with their toolchains, the host and tests with rustup's cargo)
/// run at the same time: on a fresh machine each spends minutes waiting on
/// downloads, apt or a single-threaded link that the others fill. apt calls
/// are serialised inside `toolchain`.
fn test(args: &[String]) -> Result<()> {
    let start = std::time::Instant::now();
    announce_plan();
    let phases = Phases(Default::default());
    let nisshi = std::thread::scope(|s| -> Result<PathBuf> {
        // The end-to-end tests run the binaries as separate processes.
        let host = s.spawn(|| phases.time("host, examples, tests", build_binaries));
        // The broker is the longest build: its toolchain is installed
        // before the other apt calls (the host thread's check of its own
        // packages may come first; it installs nothing on a usual machine).
        let debian = phases.time("wasm32 toolchain (apt)", toolchain::ensure_debian);
        let broker = s.spawn(|| phases.time("broker (Nisshi)", toolchain::ensure_broker));
        let plugins = s.spawn(|| phases.time("plugins and their tools", build_plugins));
        let tools = phases.time("compose client, browser", || {
            toolchain::ensure_compose_client()?;
            toolchain::ensure_browser()
        });
        let nisshi = broker.join().expect("broker thread panicked");
        plugins.join().expect("plugins thread panicked")?;
        host.join().expect("host thread panicked")?;
        debian?;
        tools?;
        nisshi
    })?;
    toolchain::link_tools()?;
    let result = phases.time("tests", || run_tests(&nisshi, args));
    phases.report(start.elapsed());
    toolchain::say_where_tools_are();
    result
}

/// Runs every test: with cargo-nextest where it is installed (each test its
/// own process, the binaries interleaved, so a slow suite does not hold the
/// others back), else with `cargo test`. Doc tests run with `cargo test
/// --doc` either way, since nextest does not run them.
fn run_tests(nisshi: &Path, args: &[String]) -> Result<()> {
    let nextest = std::env::var_os("STREAMHOST_NO_NEXTEST").is_none()
        && Command::new(cargo())
            .args(["nextest", "--version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root()).env("STREAMHOST_NISSHI", nisshi);
    if nextest {
        cmd.args([
            "nextest",
            "run",
            "--workspace",
            "--release",
            "--no-fail-fast",
        ]);
    } else {
        cmd.args(["test", "--workspace", "--release", "--no-fail-fast"]);
    }
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    run(&mut cmd)?;
    if nextest && args.is_empty() {
        // The host's library declares `doctest = false` (its doc comments
        // show WIT and shell, not Rust), which `--doc` would override.
        run(Command::new(cargo())
            .current_dir(root())
            .env("STREAMHOST_NISSHI", nisshi)
            .args(["test", "--workspace", "--exclude", "streamhost"])
            .args(["--release", "--doc"]))?;
    }
    Ok(())
}

fn bench(quick: bool) -> Result<()> {
    announce_plan();
    toolchain::ensure_host()?;
    build_plugins()?;
    // The registry stand-in, for the Avro section.
    build_binaries()?;
    // callgrind, for instructions per record beside the times.
    toolchain::ensure_valgrind()?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root())
        .args(["bench", "-p", "streamhost", "--bench", "pipeline", "--"]);
    if quick {
        cmd.arg("--quick");
    }
    cmd.env(
        "STREAMHOST_NISSHI",
        toolchain::ensure_broker_for(toolchain::BrokerBuild::Bench)?,
    );
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
