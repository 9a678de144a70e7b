//! `cargo xtask bench`: streamhost measured against its limits, each
//! comparison run back to back on the same data in one process so that the
//! ratios hold on a noisy machine. Prints a markdown report and writes it to
//! `target/bench/report.md`.
//!
//! 1. WASM against native, in process: the whole per-record path with the
//!    example rules as components, and with the same rule code compiled in.
//! 2. End to end against the broker: streamhost against a pass-through built
//!    from the same source and sink, on the same pre-loaded topic; then the
//!    latency from the producer's timestamp to the alert at half that rate.
//! 3. Windows: bytes per retained reading and resident memory.
//! 4. Hot swap: swapping plugins against not swapping.
//! 5. Workers: 2 partition-parallel workers against 1, in process.
//! 6. Rebuild: a partition's windows rebuilt by replaying it from the broker.
//! 7. Formats: Avro decode (with the registry stand-in) against JSON decode.
//! 8. Plugins by language: first and cached load, cost per record.

mod article;
mod common;
mod counts;
mod end_to_end;
mod formats;
mod hot_swap;
mod in_process;
mod languages;
mod sonic;
mod state;
mod windows;

use streamhost_testkit::broker;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use streamhost::config::{RunArgs, Settings};
use streamhost::contract::{
    Alert, AnomalyResults, Batch, Change, Needs, Severity, TransformResults, TrendResult,
    TrendResults, WindowView,
};
use streamhost::pipeline::Pipeline;
use streamhost::record::InRecord;
use streamhost::rules::runtime::{CallError, Kind, Limits, PluginInfo, Runtime};
use streamhost::rules::{Rule, RuleSet};
use streamhost::window::{ViewBuilder, WindowConfig, Windows};

use common::*;

/// The binary's allocator (mimalloc, as `streamhost` uses), counting live
/// heap bytes while `COUNTING` is set, for the window-memory figures.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
pub static COUNTING: AtomicBool = AtomicBool::new(false);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        unsafe { INNER.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        }
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new, Ordering::Relaxed);
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        }
        unsafe { INNER.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Report {
    text: String,
}

impl Report {
    fn new() -> Report {
        Report {
            text: String::new(),
        }
    }

    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !run_alone(quick).await {
        run_all(quick).await;
    }
}

/// Runs what a flag asks for alone: a child process's count, a profile
/// pass, or one section. False without such a flag.
async fn run_alone(quick: bool) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if let Some(i) = args.iter().position(|a| a == "--latency-only") {
        let rate = args
            .get(i + 1)
            .and_then(|r| r.parse().ok())
            .unwrap_or(50_000.0);
        end_to_end::latency_only(rate).await;
        return true;
    }
    // `--count WORKLOAD`: the child process `counts::per_record` runs
    // under callgrind.
    if let Some(i) = args.iter().position(|a| a == "--count") {
        let workload = args
            .get(i + 1)
            .and_then(|w| counts::Workload::parse(w))
            .expect("--count decode|windows|no-rules|native|wasm");
        tokio::task::block_in_place(|| counts::child(workload));
        return true;
    }
    // `--profile`: one WASM pipeline pass only, for callgrind.
    if has("--profile") {
        let input = records(20_000, 1000);
        let runtime = Runtime::new(Limits::default()).unwrap();
        let rules = wasm_rules(&runtime);
        println!("{:.3} s", run_pipeline(&rules, &input, 1000));
        return true;
    }
    let mut report = Report::new();
    let report = &mut report;
    // `--windows-only` and `--in-process-only`: sections 3 and 1 alone;
    // `--formats-only`: the Avro against JSON section; `--languages-only`:
    // the plugins-by-language section; `--rebuild-only`: the window
    // rebuild section.
    if has("--windows-only") {
        let keys = if quick { 20_000 } else { 100_000 };
        tokio::task::block_in_place(|| windows::windows_memory(report, keys, 300));
    } else if has("--in-process-only") {
        let (n, rounds) = if quick { (100_000, 10) } else { (300_000, 11) };
        tokio::task::block_in_place(|| in_process::in_process(report, n, rounds));
    } else if has("--formats-only") {
        tokio::task::block_in_place(|| formats::formats(report, 100_000, 11));
    } else if has("--languages-only") {
        tokio::task::block_in_place(|| languages::languages(report, 20_000, 5));
    } else if has("--rebuild-only") {
        state::rebuild_time(report, quick).await;
    } else {
        return false;
    }
    println!("{}", report.text);
    true
}

/// Every section, into `target/bench/report.md`.
async fn run_all(quick: bool) {
    let (n_inproc, n_e2e, keys) = if quick {
        (100_000, 200_000, 20_000)
    } else {
        (300_000, 500_000, 100_000)
    };
    // At least 10 interleaved rounds for every ratio.
    let rounds = if quick { 10 } else { 11 };
    let mut report = Report::new();
    report.line(machine(quick));
    // Windows first: the resident-memory figure is only clean in a fresh process.
    let mut windows = Report::new();
    tokio::task::block_in_place(|| windows::windows_memory(&mut windows, keys, 300));
    eprintln!("bench: WASM against native, in process");
    tokio::task::block_in_place(|| in_process::in_process(&mut report, n_inproc, rounds));
    eprintln!("bench: end to end on the local broker");
    end_to_end::end_to_end(&mut report, n_e2e, rounds).await;
    eprintln!("bench: hot swap");
    report.line(windows.text.trim_end());
    report.line("");
    let phase = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(8)
    };
    tokio::task::block_in_place(|| hot_swap::hot_swap(&mut report, phase));
    eprintln!("bench: workers");
    tokio::task::block_in_place(|| state::scaling(&mut report, n_inproc / 3, rounds));
    eprintln!("bench: window rebuild");
    state::rebuild_time(&mut report, quick).await;
    eprintln!("bench: Avro against JSON decode");
    tokio::task::block_in_place(|| formats::formats(&mut report, n_inproc / 3, rounds));
    eprintln!("bench: plugins by language");
    tokio::task::block_in_place(|| languages::languages(&mut report, 20_000, rounds));
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("report.md"), &report.text).unwrap();
    println!("{}", report.text);
    println!("written to {}", dir.join("report.md").display());
}

/// The report's title: the date, the machine's cores and memory.
fn machine(quick: bool) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "## streamhost benchmark{} — {}, {cores} cores, {:.0} GiB\n",
        if quick { " (quick)" } else { "" },
        chrono::Utc::now().format("%Y-%m-%d"),
        mem as f64 / (1 << 20) as f64
    )
}
