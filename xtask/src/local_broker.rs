//! `cargo xtask broker`: the broker the first command built, started on
//! loopback in the background with the four topics streamhost uses, for a
//! user's own producers and consumers; `--stop` ends it.
//!
//! It prints the commands it runs, so that the broker can be run without
//! xtask too, and the address to give streamhost, `sensor-producer` and
//! `stream-watch`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use streamhost_testkit::broker;

#[derive(clap::Args)]
pub struct BrokerArgs {
    /// The loopback port to listen on.
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// Partitions of the input topic (iot-sensors); the output topics get
    /// as many.
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Stop the broker this command started.
    #[arg(long)]
    pub stop: bool,
}

/// The topics streamhost reads and writes by default, input first.
pub const TOPICS: [&str; 4] = ["iot-sensors", "iot-enriched", "iot-alerts", "iot-dlq"];

/// Where the broker's pid and log are kept: `target/broker`, or
/// `$STREAMHOST_BROKER_DIR` (the tests run the documented tour with a
/// folder of their own, so that a broker the user started is left alone).
fn state_dir() -> PathBuf {
    std::env::var_os("STREAMHOST_BROKER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target/broker"))
}

pub fn run(args: BrokerArgs) -> Result<()> {
    let dir = state_dir();
    let pid_file = dir.join("nisshi.pid");
    if args.stop {
        return stop(&pid_file);
    }
    if let Some(pid) = running(&pid_file) {
        bail!(
            "a broker started by this command is running already (pid {pid}); `cargo xtask broker --stop` ends it"
        );
    }
    if TcpStream::connect(("127.0.0.1", args.port)).is_ok() {
        bail!(
            "something listens on 127.0.0.1:{} already; choose another port with --port",
            args.port
        );
    }
    crate::announce_plan();
    let nisshi = crate::toolchain::ensure_broker()?;
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("nisshi.log");
    let mut cmd = broker::command(&nisshi, args.port, &broker::Options::default());
    println!("$ {}", shell_line(&cmd));
    let out = std::fs::File::create(&log)?;
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Its own process group: a Ctrl-C meant for a later foreground
        // command in the same terminal does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", nisshi.display()))?;
    // From here on, a failure stops the broker it started.
    let started = (|| -> Result<()> {
        std::fs::write(&pid_file, child.id().to_string())?;
        broker::wait_listening(&mut child, args.port).with_context(|| {
            format!(
                "its log, {}:\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        for topic in TOPICS {
            let cmd = broker::create_topic_command(&nisshi, args.port, topic, args.partitions);
            println!("$ {}", shell_line(&cmd));
            broker::create_topic(&nisshi, args.port, topic, args.partitions)?;
        }
        Ok(())
    })();
    if let Err(e) = started {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&pid_file);
        return Err(e.context("starting the broker (it was stopped again)"));
    }
    let address = format!("127.0.0.1:{}", args.port);
    let shown_log = log.strip_prefix(crate::root()).unwrap_or(&log);
    println!();
    println!(
        "broker: {address} (pid {}, in memory; log {})",
        child.id(),
        shown_log.display()
    );
    println!(
        "topics: {} ({} partitions each)",
        TOPICS.join(", "),
        args.partitions
    );
    println!(
        "use it: streamhost --brokers {address} ...; sensor-producer --brokers {address}; stream-watch --brokers {address}"
    );
    println!("stop it: cargo xtask broker --stop");
    Ok(())
}

/// The pid in `pid_file`, if that process is still a broker.
fn running(pid_file: &std::path::Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let exe = cmdline.split(|b| *b == 0).next()?;
    exe.ends_with(b"nisshi").then_some(pid)
}

fn stop(pid_file: &std::path::Path) -> Result<()> {
    let Some(pid) = running(pid_file) else {
        let _ = std::fs::remove_file(pid_file);
        println!("no broker started by `cargo xtask broker` is running");
        return Ok(());
    };
    // SIGTERM, then SIGKILL if it has not gone after 10 s.
    for (signal, wait) in [("TERM", 10), ("KILL", 5)] {
        let _ = std::process::Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(wait);
        while running(pid_file).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running(pid_file).is_none() {
            let _ = std::fs::remove_file(pid_file);
            println!("stopped the broker (pid {pid})");
            return Ok(());
        }
    }
    bail!("the broker (pid {pid}) is still running after SIGKILL")
}

/// A command as a shell line, for the user to copy.
fn shell_line(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
