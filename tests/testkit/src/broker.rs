//! A local Kafka-compatible broker for tests, the demo and the benchmarks:
//! Nisshi (crates.io `nisshi`), with in-memory storage, on a free loopback
//! port. Installed once under `~/.streamhost-tools` and reused.
//!
//! Only `std` and `anyhow`: `cargo xtask` uses it too, and stays light.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The Nisshi version installed and tested against.
pub const VERSION: &str = "0.8.1";

/// Where `cargo xtask` installs tools it builds (the broker).
pub fn tools_root() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".streamhost-tools")
}

/// The broker binary if present: `$STREAMHOST_NISSHI`, then `nisshi` on
/// `PATH`, then our own install location.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STREAMHOST_NISSHI") {
        let p = PathBuf::from(p);
        if p.exists() {
            return Some(p);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("nisshi");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = tools_root().join("bin/nisshi");
    p.is_file().then_some(p)
}

/// How to start a broker beyond the defaults (in-memory storage, plaintext,
/// no authentication, a free port).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A storage URL, e.g. `sqlite://nisshi.db` (relative to `dir`), the
    /// engine that keeps SCRAM users.
    pub storage: Option<String>,
    /// A TLS certificate chain and private key (PEM): the listener then
    /// accepts TLS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require SASL authentication.
    pub authentication: bool,
    /// The broker's working directory.
    pub dir: Option<PathBuf>,
    /// Listen on this port (to restart a broker where it was).
    pub port: Option<u16>,
}

/// The command that runs a broker on `127.0.0.1:port` as `options` say
/// (`cargo xtask broker` prints it, so that users can run it themselves).
pub fn command(bin: &Path, port: u16, options: &Options) -> Command {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.args(["broker", "--storage-engine"])
        .arg(options.storage.as_deref().unwrap_or("memory://nisshi/"))
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--group-initial-rebalance-delay", "0"]);
    if let Some((cert, key)) = &options.tls {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if options.authentication {
        cmd.arg("--authentication");
    }
    if let Some(dir) = &options.dir {
        cmd.current_dir(dir);
    }
    cmd
}

/// A running broker process, killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
    bin: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it accepts
    /// connections. Its output goes to `log` when given, else is discarded.
    pub fn start(bin: &Path, log: Option<&Path>) -> Result<Broker> {
        Broker::start_with(bin, log, &Options::default())
    }

    /// Starts a broker as `options` say and waits until it accepts
    /// connections.
    pub fn start_with(bin: &Path, log: Option<&Path>, options: &Options) -> Result<Broker> {
        let port = options.port.unwrap_or_else(free_port);
        let (out, err) = match log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                (Stdio::from(f.try_clone()?), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = command(bin, port, options)
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut broker = Broker {
            child,
            port,
            bin: bin.to_path_buf(),
        };
        wait_listening(&mut broker.child, port)?;
        Ok(broker)
    }

    /// Creates a SCRAM user (`nisshi user create`), on a broker started
    /// without TLS or authentication, on storage that keeps users.
    pub fn create_user(&self, name: &str, password: &str, mechanism: &str) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--mechanism", mechanism, name, password]);
        run(cmd, &format!("creating user {name}"))
    }

    /// The broker's process id (to pause it with SIGSTOP in fault tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` for Kafka clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with the given number of partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        create_topic(&self.bin, self.port, name, partitions)
    }
}

/// The command that creates a topic on the broker at `127.0.0.1:port`.
pub fn create_topic_command(bin: &Path, port: u16, name: &str, partitions: u32) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["topic", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(["--partitions", &partitions.to_string(), name]);
    cmd
}

/// Creates a topic on the broker at `127.0.0.1:port`.
pub fn create_topic(bin: &Path, port: u16, name: &str, partitions: u32) -> Result<()> {
    run(
        create_topic_command(bin, port, name, partitions),
        &format!("creating topic {name}"),
    )
}

/// Runs one of the broker's commands, failing with its output.
fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Waits until a broker just started as `child` accepts connections on
/// `127.0.0.1:port` (30 s at most).
pub fn wait_listening(child: &mut Child, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("broker exited during start-up: {status}");
        }
        if Instant::now() > deadline {
            bail!("broker did not listen on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
