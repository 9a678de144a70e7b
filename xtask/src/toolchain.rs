//! Finding (or installing) a Rust toolchain that targets wasm32.
//!
//! Two routes, in order of preference:
//! 1. rustup's toolchain when its `wasm32-unknown-unknown` target is installed;
//! 2. Debian's `rustc-web` + `rust-web-src` + `lld-22`, building `std` from
//!    source with `-Zbuild-std` (`RUSTC_BOOTSTRAP=1` unlocks the flag on a
//!    stable compiler). This is the route on machines where rustup cannot
//!    download targets. When missing, the packages are installed with apt if
//!    we run as root; otherwise the exact command is printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "lld-22"];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

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

fn rustup_has_wasm32() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown"))
        .unwrap_or(false)
}

/// True when Debian's toolchain is complete: rustc >= 1.90 with its library
/// source (needed by -Zbuild-std) and the linker.
pub fn debian_ready() -> bool {
    let Ok(out) = Command::new(DEBIAN_RUSTC).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    let Ok(sysroot) = Command::new(DEBIAN_RUSTC).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    minor >= 90
        && Path::new(&sysroot).join("lib/rustlib/src/rust/library/std").is_dir()
        && Path::new(DEBIAN_CARGO).exists()
        && (Path::new("/usr/bin/rust-lld").exists() || Path::new("/usr/bin/wasm-ld-22").exists())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs Debian's toolchain with apt. The stable archive's rustc-web is
/// too old; the one that suffices comes from the security archive, hence the
/// `apt-get update` first.
pub fn install_debian() -> Result<()> {
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "no wasm32 toolchain found. Either `rustup target add wasm32-unknown-unknown`, or \
             install Debian's toolchain as root: `apt-get update && apt-get install -y {}`",
            DEBIAN_PACKAGES.join(" ")
        );
    }
    eprintln!("xtask: installing {} with apt-get", DEBIAN_PACKAGES.join(" "));
    apt_install(DEBIAN_PACKAGES)?;
    if !debian_ready() {
        bail!("installed {} but /usr/bin/rustc still cannot build for wasm32", DEBIAN_PACKAGES.join(" "));
    }
    Ok(())
}

/// The toolchain to build plugins with, installing Debian's when needed.
pub fn wasm32() -> Result<Wasm32> {
    if rustup_has_wasm32() {
        return Ok(Wasm32::Rustup);
    }
    if !debian_ready() {
        install_debian()?;
    }
    Ok(Wasm32::Debian)
}

/// Finds the broker, building it with cargo when it is missing (about ten
/// minutes on two cores). Nisshi needs rustc >= 1.96, which on these machines
/// is Debian's `rustc-web`, the same toolchain the plugins use.
pub fn ensure_broker() -> Result<PathBuf> {
    if let Some(p) = crate::broker::find() {
        return Ok(p);
    }
    if !crate::toolchain::debian_ready() {
        crate::toolchain::install_debian()?;
    }
    eprintln!("xtask: installing nisshi {} (once; about ten minutes)", crate::broker::VERSION);
    crate::run(
        Command::new("/usr/bin/cargo")
            .args(["install", "nisshi", "--version", crate::broker::VERSION, "--locked"])
            .args(["--no-default-features", "--features", "dynostore", "--root"])
            .arg(crate::broker::tools_root())
            .env("RUSTC", "/usr/bin/rustc")
            .env("CARGO_TARGET_DIR", std::env::temp_dir().join("streamhost-nisshi-build"))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )?;
    crate::broker::find().context("nisshi was installed but cannot be found")
}


/// A Docker Compose client for checking `examples/docker-compose.yml`
/// (`docker compose` if the plugin is there, else Debian's docker-compose).
pub fn ensure_compose_client() -> Result<()> {
    let works = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    if works(Command::new("docker").args(["compose", "version"])) || works(Command::new("docker-compose").arg("version")) {
        return Ok(());
    }
    if is_root() && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("xtask: installing docker-compose with apt-get (to validate examples/docker-compose.yml)");
        return apt_install(&["docker-compose"]);
    }
    bail!("no Docker Compose client: install docker-compose (or the docker compose plugin)")
}

/// `apt-get install`s packages, refreshing the package lists once per run
/// first (a fresh machine's lists may be stale or empty).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    static UPDATED: std::sync::Once = std::sync::Once::new();
    let mut update = Ok(());
    UPDATED.call_once(|| update = crate::run(Command::new("apt-get").args(["update", "-q"])));
    update?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
