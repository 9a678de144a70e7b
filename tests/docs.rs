//! The documentation, checked against what it describes: every relative
//! link of the README and `docs/` leads to a file and heading that exist,
//! every page is in `docs/SUMMARY.md`, and the first-hour tour
//! (`docs/first-hour.md`) runs as written, its `sh` blocks in order, against
//! a real broker, streamhost, the bundled producer and watcher and a Python
//! plugin built from the template. (`plugin_authors.rs` checks every
//! `streamhost` command of the pages against the binary's parser.)

use streamhost_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A page's lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            out.push(line);
        }
    }
    out
}

/// The anchors GitHub gives a page's headings: lowercased, punctuation
/// other than `-` and `_` dropped, spaces made `-`; a repeated heading gets
/// `-1`, `-2`...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_default();
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of a page's Markdown links (`](target)`), outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        // Inline code may show link syntax without being a link.
        let line: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_link_between_the_pages_resolves() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in support::doc_pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match link.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", page.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let target_text = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&target_text).contains(anchor) {
                    broken.push(format!("{}: {link}: no such heading", page.display()));
                }
            }
        }
    }
    println!("{checked} relative links checked");
    assert!(checked >= 40, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_anchor_rule_is_githubs() {
    let text = "# Formats: JSON, or Avro\n## The `run-local` command\n## Notes\n## Notes\n";
    let want: BTreeSet<String> = [
        "formats-json-or-avro",
        "the-run-local-command",
        "notes",
        "notes-1",
    ]
    .map(String::from)
    .into();
    assert_eq!(anchors(text), want);
    assert_eq!(
        links("see [a](b.md#c) and `[not](a link)` or [d](e.md)"),
        ["b.md#c", "e.md"]
    );
}

#[test]
fn every_page_is_in_the_summary_and_the_readme() {
    let root = support::root();
    let summary = std::fs::read_to_string(root.join("docs/SUMMARY.md")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for page in support::doc_pages() {
        let name = page.file_name().unwrap().to_string_lossy().to_string();
        if name == "README.md" || name == "SUMMARY.md" {
            continue;
        }
        assert!(
            listed.contains(&name),
            "docs/SUMMARY.md does not list {name}"
        );
        assert!(
            readme.contains(&format!("(docs/{name})")),
            "the README does not link docs/{name}"
        );
    }
}

/// The `sh` blocks of a page, in order, as one script.
fn sh_blocks(text: &str) -> String {
    let mut script = String::new();
    let mut in_sh = false;
    let mut in_other = false;
    for line in text.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match fence {
            Some(info) if !in_sh && !in_other => {
                in_sh = info.trim() == "sh";
                in_other = !in_sh;
            }
            Some(_) => {
                in_sh = false;
                in_other = false;
            }
            None if in_sh => {
                script.push_str(line);
                script.push('\n');
            }
            None => {}
        }
    }
    script
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tour of `docs/first-hour.md`, run as a new user would: the page's
/// `sh` blocks in order, by bash with `set -euo pipefail`, from the
/// checkout. It runs in a network namespace of its own, so that the page's
/// fixed ports (9092, 9464) are free whatever else runs (this needs root,
/// as `cargo xtask test` runs, and iproute2's `ip`).
#[test]
fn the_first_hour_runs_as_written() {
    let root = support::root();
    let tour = root.join("target/tour");
    let _ = std::fs::remove_dir_all(&tour);
    // The tour's broker keeps its pid and log in a folder of the test's, so
    // that a broker the user started with `cargo xtask broker` is left alone.
    let broker_dir = root.join("target/tour-broker");
    let _ = std::fs::remove_dir_all(&broker_dir);
    // The page puts ~/.streamhost-tools/bin first on PATH, where `cargo
    // xtask test` links the commands of the checkout it last ran in.
    let linked = support::broker::tools_root().join("bin/streamhost");
    assert_eq!(
        std::fs::canonicalize(&linked).ok(),
        std::fs::canonicalize(support::bin("streamhost")).ok(),
        "{} is not this checkout's streamhost: run the tests with `cargo xtask test`, which links it",
        linked.display()
    );
    let page = std::fs::read_to_string(root.join("docs/first-hour.md")).unwrap();
    let script = sh_blocks(&page);
    for needed in [
        "cargo xtask broker",
        "streamhost plugins put",
        "streamhost plugins config hot-py",
        "./hot-py/build.sh",
    ] {
        assert!(
            script.contains(needed),
            "the tour lost `{needed}`:\n{script}"
        );
    }
    let script_file = root.join("target/first-hour.sh");
    std::fs::write(&script_file, &script).unwrap();
    // Its output goes to files, not pipes: a process the tour leaves
    // running (it failed half way) must not keep the test waiting.
    let (stdout_file, stderr_file) = (
        root.join("target/first-hour.stdout"),
        root.join("target/first-hour.stderr"),
    );
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("unshare")
        .args(["--net", "bash", "-c"])
        .arg(r#"ip link set lo up && exec bash -euo pipefail "$0""#)
        .arg(&script_file)
        .current_dir(&root)
        .env("STREAMHOST_BROKER_DIR", &broker_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .process_group(0)
        .spawn()
        .expect("unshare (util-linux) runs the tour in a network namespace");
    let pgid = child.id();
    // A tour that hangs is stopped, so that its output is seen.
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            if std::fs::metadata(format!("/proc/{pgid}")).is_err() {
                return;
            }
        }
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pgid}")])
            .status();
    });
    let status = child.wait().unwrap();
    // Whatever happened, nothing of the tour outlives it: not its
    // processes, nor the broker it started (in a process group of its own).
    let broker_pid = std::fs::read_to_string(broker_dir.join("nisshi.pid")).ok();
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .status();
    let _ = Command::new("cargo")
        .args(["xtask", "broker", "--stop"])
        .current_dir(&root)
        .env("STREAMHOST_BROKER_DIR", &broker_dir)
        .output();
    if let Some(pid) = broker_pid {
        let _ = Command::new("kill")
            .args(["-s", "KILL", pid.trim()])
            .status();
    }
    watchdog.join().unwrap();
    let stdout = std::fs::read_to_string(&stdout_file).unwrap();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    let log = std::fs::read_to_string(tour.join("streamhost.log")).unwrap_or_default();
    let context = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- streamhost.log\n{log}");
    println!("{context}");
    assert!(status.success(), "the tour failed: {status}");

    // The broker, on loopback with the four topics.
    assert!(stdout.contains("broker: 127.0.0.1:9092 "), "{context}");
    assert!(
        stdout.contains("topics: iot-sensors, iot-enriched, iot-alerts, iot-dlq"),
        "{context}"
    );
    // Every reading produced was enriched, none dead-lettered.
    let first_watch = stdout
        .lines()
        .filter(|l| l.starts_with("-- so far: "))
        .find(|l| l.starts_with("-- so far: 2000 enriched,"));
    assert!(
        first_watch.is_some_and(|l| l.ends_with(", 0 dead letters")),
        "{context}"
    );
    // The template's rule alerted on the sample's one hot reading.
    let local = std::fs::read_to_string(tour.join("local.jsonl")).unwrap();
    let alerts: Vec<serde_json::Value> = local
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["to"] == "alerts")
        .collect();
    assert_eq!(alerts.len(), 1, "{local}");
    // The put plugin serves, and was kept in the plugin folder.
    let built = std::fs::read(tour.join("hot-py/hot-py.wasm")).unwrap();
    let kept = std::fs::read(tour.join("rules/hot-py.wasm")).unwrap();
    assert_eq!(sha256_hex(&kept), sha256_hex(&built));
    assert!(
        stdout.contains(&sha256_hex(&built)),
        "`plugins list` lacks hot-py:\n{context}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ALERT") && l.contains("(rule hot-py ")),
        "no alert of the put rule:\n{context}"
    );
    // The configuration change served, and was kept beside the rule.
    assert!(
        stdout.contains("\"version\": \"0.1.0+cfg."),
        "`plugins config` did not answer with the configured version:\n{context}"
    );
    let kept = std::fs::read_to_string(tour.join("rules/hot-py.toml")).unwrap();
    assert!(kept.contains("limit = \"32\""), "{kept}");
    assert!(stdout.contains("stopped the broker"), "{context}");
}

#[test]
fn the_readme_tour_is_the_tested_tour() {
    let root = support::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let tour = readme
        .split("## A 5-minute tour")
        .nth(1)
        .expect("the README has its tour");
    let tour = tour.split("\n## ").next().unwrap();
    let tour_lines = sh_blocks(tour);
    let page = sh_blocks(&std::fs::read_to_string(root.join("docs/first-hour.md")).unwrap());
    let tested: BTreeSet<&str> = page.lines().collect();
    assert!(tour_lines.lines().count() >= 8, "{tour_lines}");
    for line in tour_lines.lines() {
        assert!(
            tested.contains(line),
            "README tour line not run by the first-hour test: {line}"
        );
    }
}
