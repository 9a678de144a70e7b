//! What a plugin author does, run for real: `streamhost run-local` over the
//! sample file with every example plugin (Rust, JavaScript, Python, C), a
//! project from every `streamhost new` template built with its own build
//! script and run locally, the compile cache on disk, and every command of
//! the README and `docs/` checked against the binary's parser.
//!
//! Expected outputs come from a model of the sample computed here: each
//! key's window is its readings of the last 5 minutes of event time, and
//! the window the templates declare its readings of the last minute.

use streamhost_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn sample_path() -> PathBuf {
    support::root().join("examples/sample/readings.jsonl")
}

/// One reading of the sample, with its window as the model computes it.
struct Reading {
    line: i64,
    fields: BTreeMap<String, f64>,
    /// The key's window after this reading: count, and per field the mean.
    count: usize,
    mean: BTreeMap<String, f64>,
    /// The temperature over the key's last minute (the window the anomaly
    /// and trend templates declare): mean and population standard
    /// deviation.
    minute_mean: f64,
    minute_stddev: f64,
}

/// The sample's readings that decode (lines that do not are dead letters),
/// with their windows: readings of the same key whose event time is within
/// 5 minutes before theirs (`newest - 5m < t <= newest`), and likewise
/// within the last minute. The sample is in event-time order per key.
fn model() -> (Vec<Reading>, Vec<i64>) {
    let text = std::fs::read_to_string(sample_path()).unwrap();
    let mut history: BTreeMap<String, Vec<(i64, BTreeMap<String, f64>)>> = BTreeMap::new();
    let mut readings = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as i64 + 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            bad.push(line_no);
            continue;
        };
        let Some(t) = v["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            bad.push(line_no);
            continue;
        };
        let t = t.timestamp_millis();
        let fields: BTreeMap<String, f64> =
            ["temperature", "humidity", "pressure", "battery_level"]
                .iter()
                .filter_map(|f| Some((f.to_string(), v[*f].as_f64()?)))
                .collect();
        let key = v["sensor_id"].as_str().unwrap().to_string();
        let h = history.entry(key).or_default();
        h.push((t, fields.clone()));
        let window: Vec<&BTreeMap<String, f64>> = h
            .iter()
            .filter(|(ti, _)| *ti > t - 300_000 && *ti <= t)
            .map(|(_, f)| f)
            .collect();
        let per = |f: &str, pick: &dyn Fn(&[f64]) -> f64| {
            let values: Vec<f64> = window.iter().map(|w| w[f]).collect();
            (f.to_string(), pick(&values))
        };
        let names = ["temperature", "humidity", "pressure", "battery_level"];
        let minute: Vec<f64> = h
            .iter()
            .filter(|(ti, _)| *ti > t - 60_000 && *ti <= t)
            .map(|(_, f)| f["temperature"])
            .collect();
        let minute_mean = minute.iter().sum::<f64>() / minute.len() as f64;
        let minute_variance = minute
            .iter()
            .map(|v| (v - minute_mean).powi(2))
            .sum::<f64>()
            / minute.len() as f64;
        readings.push(Reading {
            line: line_no,
            count: window.len(),
            mean: names
                .iter()
                .map(|f| per(f, &|v| v.iter().sum::<f64>() / v.len() as f64))
                .collect(),
            minute_mean,
            minute_stddev: minute_variance.sqrt(),
            fields,
        });
    }
    (readings, bad)
}

/// What a local run printed, by destination.
#[derive(Default)]
struct Outputs {
    enriched: BTreeMap<i64, serde_json::Value>,
    /// (line, alert kind)
    alerts: BTreeSet<(i64, String)>,
    /// (line, alert message)
    messages: Vec<(i64, String)>,
    /// (line, reason)
    dead: BTreeSet<(i64, String)>,
    stderr: String,
}

/// Runs `streamhost run-local` with `plugins` and `extra` arguments over
/// the sample; what it printed.
fn run_local_output(plugins: &[PathBuf], cache: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(support::bin("streamhost"));
    cmd.arg("run-local");
    for p in plugins {
        cmd.arg("--plugin").arg(p);
    }
    cmd.arg("--input")
        .arg(sample_path())
        .args(["--now", "2026-11-26T07:00:00Z", "--compile-cache"])
        .arg(cache)
        // Python rules take longer per batch than the default allows.
        .args(["--plugin-deadline", "2s", "--plugin-memory-mib", "256"])
        .args(extra)
        .output()
        .unwrap()
}

/// Runs `streamhost run-local` with `plugins` over the sample.
fn run_local(plugins: &[PathBuf], cache: &Path) -> Outputs {
    run_local_with(plugins, cache, &[])
}

/// Runs `streamhost run-local` with `plugins` and `extra` arguments over
/// the sample; its outputs by destination.
fn run_local_with(plugins: &[PathBuf], cache: &Path, extra: &[&str]) -> Outputs {
    let out = run_local_output(plugins, cache, extra);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "run-local failed:\n{stderr}");
    let mut outputs = Outputs {
        stderr,
        ..Outputs::default()
    };
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = v["line"].as_i64().unwrap();
        match v["to"].as_str().unwrap() {
            "enriched" => {
                assert!(outputs.enriched.insert(n, v["value"].clone()).is_none());
            }
            "alerts" => {
                for a in v["value"]["alerts"].as_array().unwrap() {
                    outputs
                        .alerts
                        .insert((n, a["kind"].as_str().unwrap().to_string()));
                    outputs
                        .messages
                        .push((n, a["message"].as_str().unwrap().to_string()));
                }
            }
            "dead-letter" => {
                let reason = v["headers"]["streamhost.reason"].as_str().unwrap();
                outputs.dead.insert((n, reason.to_string()));
            }
            other => panic!("unknown destination {other}"),
        }
    }
    outputs
}

fn expect(
    readings: &[Reading],
    kind: &str,
    fires: impl Fn(&Reading) -> bool,
) -> BTreeSet<(i64, String)> {
    readings
        .iter()
        .filter(|r| fires(r))
        .map(|r| (r.line, kind.to_string()))
        .collect()
}

#[test]
fn run_local_runs_every_example_plugin_over_the_sample() {
    let (readings, bad) = model();
    let cache = tempdir("run-local-cache");
    let dead: BTreeSet<(i64, String)> = bad.iter().map(|l| (*l, "decode".to_string())).collect();
    assert_eq!(dead.len(), 2, "the sample holds two undecodable lines");

    // Rust: thresholds on each reading.
    let out = run_local(&[support::plugin_path("anomaly")], &cache);
    let mut want = expect(&readings, "temperature_out_of_range", |r| {
        !(0.0..=40.0).contains(&r.fields["temperature"])
    });
    want.extend(expect(&readings, "low_battery", |r| {
        r.fields["battery_level"] < 0.2
    }));
    want.extend(expect(&readings, "high_humidity", |r| {
        r.fields["humidity"] > 90.0
    }));
    assert_eq!(out.alerts, want);
    assert_eq!(out.dead, dead);
    assert_eq!(out.enriched.len(), readings.len());
    assert!(want.len() >= 30, "the sample exercises the rule: {want:?}");

    // The window statistics streamhost attached equal the model's.
    for r in &readings {
        let w = &out.enriched[&r.line]["streamhost"]["window"];
        assert_eq!(
            w["count"].as_u64().unwrap() as usize,
            r.count,
            "line {}",
            r.line
        );
        for (f, mean) in &r.mean {
            let got = w["fields"][f]["mean"].as_f64().unwrap();
            assert!(
                (got - mean).abs() < 1e-9,
                "line {} {f}: {got} vs {mean}",
                r.line
            );
        }
    }

    // JavaScript: a temperature more than 5 from its window's mean.
    let out = run_local(&[support::plugin_path("jump-js")], &cache);
    let want = expect(&readings, "temperature_jump", |r| {
        r.count >= 2 && (r.fields["temperature"] - r.mean["temperature"]).abs() > 5.0
    });
    assert!(!want.is_empty());
    assert_eq!(out.alerts, want);
    assert_eq!(out.dead, dead);

    // Python: a window whose mean humidity is above 85.
    let out = run_local(&[support::plugin_path("humidity-py")], &cache);
    let want = expect(&readings, "humid_window", |r| r.mean["humidity"] > 85.0);
    assert!(!want.is_empty());
    assert_eq!(out.alerts, want);
    assert_eq!(out.dead, dead);

    // C: a pressure more than 9.5 from its window's mean.
    let out = run_local(&[support::plugin_path("pressure-c")], &cache);
    let want = expect(&readings, "pressure_swing", |r| {
        r.count >= 2 && (r.fields["pressure"] - r.mean["pressure"]).abs() > 9.5
    });
    assert!(!want.is_empty());
    assert_eq!(out.alerts, want);
    assert_eq!(out.dead, dead);
    // Its stdio went through the WASI adapter into the log, under its name
    // (the 2 undecodable lines never reach a rule).
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("pressure-c 1.0.0: first batch of 300 records"))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(line.contains("plugin=\"pressure-c\""), "{line}");

    // Rust transform and trend together: every record enriched, with a trend.
    let out = run_local(
        &[
            support::plugin_path("enrich"),
            support::plugin_path("trend"),
        ],
        &cache,
    );
    assert_eq!(out.enriched.len(), readings.len());
    for r in &readings {
        let v = &out.enriched[&r.line];
        assert_eq!(v["enriched"], true, "line {}", r.line);
        assert_eq!(v["streamhost"]["plugins"]["trend"], "1.0.0");
    }
    // The summary names each plugin with its cost.
    for name in ["enrich", "trend"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(name) && l.contains("ms")),
            "{}",
            out.stderr
        );
    }
}

/// A fresh folder under the target directory.
fn tempdir(name: &str) -> PathBuf {
    let dir = support::root()
        .join("target/test-tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a project with `streamhost new`, builds it with its own
/// `build.sh`, and runs it locally over its own sample; its outputs, the
/// project's folder and the component built.
fn new_build_run(lang: &str, kind: &str) -> (Outputs, PathBuf, PathBuf) {
    let dir = tempdir(&format!("new-{lang}-{kind}"));
    let name = format!("my-{kind}-{lang}");
    let project = dir.join(&name);
    let status = Command::new(support::bin("streamhost"))
        .args(["new", &name, "--kind", kind, "--lang", lang, "--dir"])
        .arg(&project)
        .status()
        .unwrap();
    assert!(status.success());
    // As written, with the PATH the first hour's page gives (the tools
    // folder first); this checkout's streamhost before any other.
    let streamhost_dir = support::bin("streamhost").parent().unwrap().to_path_buf();
    let tools = support::broker::tools_root().join("bin");
    let path = std::env::join_paths([streamhost_dir, tools].into_iter().chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let started = Instant::now();
    let out = Command::new(project.join("build.sh"))
        .env("PATH", path)
        .env_remove("STREAMHOST")
        .env_remove("COMPONENTIZE_PY")
        .env_remove("WIT_BINDGEN")
        .env_remove("CC")
        // Rust projects share one target folder: std is built once.
        .env("CARGO_TARGET_DIR", support::root().join("target/templates"))
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{lang} {kind}: build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let component = project.join(format!("{name}.wasm"));
    println!(
        "{lang} {kind}: built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let outputs = run_local(std::slice::from_ref(&component), &dir.join("cache"));
    (outputs, project, component)
}

/// The last-minute mean and standard deviation an anomaly template's
/// message gives: `... (last minute: mean 25.10, stddev 3.20)`.
fn minute_stats(message: &str) -> (f64, f64) {
    let stats = message
        .split("(last minute: mean ")
        .nth(1)
        .unwrap_or_else(|| panic!("no window statistics in {message:?}"));
    let (mean, rest) = stats.split_once(", stddev ").unwrap();
    let stddev = rest.trim_end_matches(')');
    (mean.parse().unwrap(), stddev.parse().unwrap())
}

#[test]
fn every_new_template_builds_and_passes_a_local_run() {
    let (readings, _) = model();
    let too_hot = expect(&readings, "too_hot", |r| r.fields["temperature"] > 30.0);
    assert_eq!(too_hot.len(), 1, "the sample has one hot reading");
    let warm = expect(&readings, "too_hot", |r| r.fields["temperature"] > 25.0);
    assert!(warm.len() > too_hot.len(), "{warm:?}");
    let by_line: BTreeMap<i64, &Reading> = readings.iter().map(|r| (r.line, r)).collect();
    for lang in ["rust", "c", "js", "python"] {
        let (out, project, component) = new_build_run(lang, "anomaly");
        assert_eq!(out.alerts, too_hot, "{lang}");
        assert_eq!(out.enriched.len(), readings.len(), "{lang}");
        // The message gives the declared window's statistics, which are the
        // model's last minute (to the two decimals printed).
        for (line, message) in &out.messages {
            let (mean, stddev) = minute_stats(message);
            let r = by_line[line];
            assert!(
                (mean - r.minute_mean).abs() <= 0.005 + 1e-9
                    && (stddev - r.minute_stddev).abs() <= 0.005 + 1e-9,
                "{lang} line {line}: {message:?}, model mean {} stddev {}",
                r.minute_mean,
                r.minute_stddev
            );
        }
        // The project holds what its README promises.
        for file in [
            "build.sh",
            "README.md",
            "sample.jsonl",
            "wit/streamhost.wit",
            "wit/deps/config/store.wit",
            "wit/deps/config/world.wit",
        ] {
            assert!(project.join(file).is_file(), "{lang}: {file}");
        }
        // Its limit is configuration, with a default of 30: 25 alerts on
        // more readings, and text that is not a number is refused, with
        // the reason.
        let name = format!("my-anomaly-{lang}");
        let cache = project.join("../cache");
        let set = format!("{name}.limit=25");
        let out = run_local_with(
            std::slice::from_ref(&component),
            &cache,
            &["--plugin-config", &set],
        );
        assert_eq!(out.alerts, warm, "{lang}");
        assert!(
            out.messages.iter().all(|(_, m)| m.contains("is above 25 ")),
            "{lang}: {:?}",
            out.messages
        );
        let set = format!("{name}.limit=abc");
        let refused = run_local_output(
            std::slice::from_ref(&component),
            &cache,
            &["--plugin-config", &set],
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(r#"limit "abc" is not a number"#),
            "{lang}: {stderr}"
        );
    }
    for lang in ["rust", "c", "js", "python"] {
        // Transform: °F merged into every reading.
        let (out, _, _) = new_build_run(lang, "transform");
        assert_eq!(out.enriched.len(), readings.len(), "{lang}");
        for r in &readings {
            let want = ((r.fields["temperature"] * 9.0 / 5.0 + 32.0) * 100.0).round() / 100.0;
            let got = out.enriched[&r.line]["temperature_f"].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "{lang} line {}: {got} vs {want}",
                r.line
            );
        }
        // Trend: the last minute's mean temperature (the declared window)
        // against the mean of the whole window.
        let (out, _, _) = new_build_run(lang, "trend");
        let name = format!("my-trend-{lang}");
        for r in &readings {
            let trends = &out.enriched[&r.line]["streamhost"]["trends"];
            if r.count < 2 {
                assert!(trends.get(&name).is_none(), "{lang} line {}", r.line);
                continue;
            }
            let change = r.minute_mean - r.mean["temperature"];
            let got = trends[&name]["change"].as_f64().unwrap();
            assert!(
                (got - change).abs() < 1e-9,
                "{lang} line {}: {got} vs {change}",
                r.line
            );
            if (change.abs() - 0.5).abs() < 1e-9 {
                continue; // on the edge: either side is right
            }
            let direction = if change > 0.5 {
                "increasing"
            } else if change < -0.5 {
                "decreasing"
            } else {
                "stable"
            };
            assert_eq!(
                trends[&name]["direction"], direction,
                "{lang} line {}",
                r.line
            );
        }
    }
}

#[test]
fn compiled_components_are_loaded_from_the_disk_cache() {
    use streamhost::rules::runtime::{CompiledFrom, Limits, Runtime};
    let cache = tempdir("compile-cache");
    println!("| plugin | first load (compiled) | cached load (new runtime, as after a restart) |");
    for name in ["anomaly", "pressure-c", "jump-js", "humidity-py"] {
        let bytes = std::fs::read(support::plugin_path(name)).unwrap();
        let load = || {
            // A new runtime each time: nothing in memory, as after a restart.
            let rt = Runtime::new(Limits::default())
                .unwrap()
                .with_disk_cache(&cache, 1 << 31)
                .unwrap();
            let plugin = rt.load(&bytes, name).unwrap();
            (plugin.info().compiled_from, plugin.info().load_seconds)
        };
        let (from, first) = load();
        assert_eq!(from, CompiledFrom::Compiled, "{name}");
        let (from, cached) = load();
        assert_eq!(from, CompiledFrom::DiskCache, "{name}");
        println!("| {name} | {first:.3} s | {cached:.3} s |");
        if name.ends_with("-py") || name.ends_with("-js") {
            // Compiling these takes seconds; mapping them, a fraction.
            assert!(
                cached * 5.0 < first,
                "{name}: {cached:.3} s cached vs {first:.3} s"
            );
        }
    }
    // The folder is the owner's alone: its files run as native code.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o022, 0, "{mode:o}");
    // A corrupt cache file is compiled again, not run.
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "cwasm") {
            std::fs::write(&path, b"not compiled code").unwrap();
        }
    }
    let rt = Runtime::new(Limits::default())
        .unwrap()
        .with_disk_cache(&cache, 1 << 31)
        .unwrap();
    let bytes = std::fs::read(support::plugin_path("anomaly")).unwrap();
    let plugin = rt.load(&bytes, "anomaly").unwrap();
    assert_eq!(plugin.info().compiled_from, CompiledFrom::Compiled);
}

/// Splits a README command line into words as a shell would, for the
/// simple quoting the README uses.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// The README and every page under `docs/`, as one text.
fn documentation() -> String {
    support::doc_pages()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_documented_command_parses() {
    let readme = documentation();
    let mut commands = Vec::new();
    let mut in_code = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let text = line.trim();
        let text = if !pending.is_empty() {
            format!("{pending} {text}")
        } else if in_code || line.starts_with("    ") {
            text.strip_prefix("$ ").unwrap_or(text).to_string()
        } else {
            continue;
        };
        if let Some(rest) = text.strip_suffix('\\') {
            pending = rest.to_string();
            continue;
        }
        pending.clear();
        // The command alone: no comment, pipe, redirection or chain.
        let cut = [" #", " |", " >", " 2>", " &&", " &"]
            .iter()
            .filter_map(|s| text.find(s))
            .min()
            .unwrap_or(text.len());
        let command = text[..cut].trim();
        if command.starts_with("streamhost ") || command == "streamhost" {
            commands.push(command.to_string());
        }
    }
    assert!(commands.len() >= 10, "found only {commands:?}");
    for command in &commands {
        // `--help` after a command parses it and stops: an argument the
        // parser does not know fails, without anything being run.
        let args = words(command);
        let out = Command::new(support::bin("streamhost"))
            .args(&args[1..])
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "documented command does not parse: {command}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("{} documented commands parse", commands.len());
}

/// A reader that stops early (`streamhost inspect FILE | head`) ends the
/// command quietly: no panic, no error, exit status 0.
#[test]
fn printing_commands_end_quietly_on_a_closed_pipe() {
    let streamhost = support::bin("streamhost");
    let plugin = support::plugin_path("anomaly");
    let cache = tempdir("closed-pipe-cache");
    for args in [
        vec!["inspect".to_string(), plugin.display().to_string()],
        vec![
            "inspect".into(),
            "--json".into(),
            plugin.display().to_string(),
        ],
        vec!["--help".into()],
        vec!["inspect".into(), "--help".into()],
    ] {
        // A pipe whose reading end is closed before streamhost starts:
        // every write finds it closed, as after `| head` has read its fill.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(&streamhost)
            .args(&args)
            .env("STREAMHOST_COMPILE_CACHE", &cache)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "streamhost {args:?} into a closed pipe: {}\n{stderr}",
            out.status
        );
    }
}
