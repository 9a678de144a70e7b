//! Section 2, last part: streamhost against the article's own consumer
//! (Python, kafka-python and pandas, `article_consumer.py`), on the same
//! broker and the same records.
//!
//! The article's windows are cut on the wall clock (`datetime.utcnow()`), so
//! the records are stamped with the 5 minutes before the run, as a live
//! producer would stamp them: 10 sensors at 1 reading/s, so a window holds
//! up to 300 readings.

use super::end_to_end::{e2e_settings, preload, timed_run};
use super::*;

/// A virtualenv of the bench's own, with the article's packages.
fn python() -> Result<std::path::PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let venv = std::path::Path::new(&home).join(".streamhost-tools/bench-python");
    let py = venv.join("bin/python");
    let ready = std::process::Command::new(&py)
        .args(["-c", "import kafka, pandas, numpy"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Ok(py);
    }
    eprintln!(
        "bench: installing kafka-python and pandas into {}",
        venv.display()
    );
    let run = |cmd: &mut std::process::Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ))
        }
    };
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    // The article's `pip install kafka-python pandas numpy`, pinned.
    run(std::process::Command::new(&py).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "kafka-python==2.3.3",
        "pandas==2.3.3",
        "numpy",
    ]))?;
    Ok(py)
}

pub async fn against_article(
    report: &mut Report,
    b: &broker::Broker,
    rounds: usize,
    sustained: f64,
) {
    let (n, sensors) = (3000, 10);
    report.line(format!(
        "#### Against the article's consumer ({n} records of {sensors} sensors, 1 reading/s each, stamped over the 5 minutes before the run; {rounds} interleaved rounds)\n"
    ));
    let py = match python() {
        Ok(py) => py,
        Err(e) => {
            report.line(format!("Not measured: {e}.\n"));
            return;
        }
    };
    let brokers = b.bootstrap();
    let topic = format!("bench-article-{}", std::process::id());
    b.create_topic(&topic, 4).unwrap();
    for suffix in ["enriched", "alerts", "dlq"] {
        b.create_topic(&format!("{topic}-{suffix}"), 3).unwrap();
    }
    let now = chrono::Utc::now().timestamp_millis();
    let t0 = now - (n / sensors) as i64 * 1000;
    preload(&brokers, &topic, &records_from(n, sensors, t0)).await;
    let script = root().join("host/benches/pipeline/article_consumer.py");
    let log = root().join("target/bench/article-consumer.log");
    let (mut t_py, mut t_sh) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let out = std::process::Command::new(&py)
            .arg(&script)
            .args([
                &brokers,
                &topic,
                &format!("article-{round}"),
                &n.to_string(),
            ])
            .arg(&log)
            .output()
            .unwrap();
        let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => {
                report.line(format!(
                    "Not measured: the article's consumer failed: {}\n",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ));
                return;
            }
        };
        assert_eq!(v["records"], n, "the article's consumer read every record");
        t_py.push(v["seconds"].as_f64().unwrap());
        let (secs, _) = timed_run(e2e_settings(
            &brokers,
            &topic,
            &format!("article-sh{round}"),
            n as u64,
        ))
        .await;
        t_sh.push(secs);
    }
    let rate = |t: &[f64]| rates(n, t);
    let (py_rate, py_lo, py_hi) = rate(&t_py);
    let (sh_rate, sh_lo, sh_hi) = rate(&t_sh);
    report.line("| consumer | records/s (median round) | spread |\n|---|---:|---:|");
    report.line(format!(
        "| the article's (Python 3, kafka-python 2.3.3, pandas 2.3.3; one process) | {py_rate:.0} | {py_lo:.0}–{py_hi:.0} |"
    ));
    report.line(format!(
        "| streamhost (enrich, trend, anomaly as WASM; outputs produced and committed) | {sh_rate:.0} | {sh_lo:.0}–{sh_hi:.0} |"
    ));
    report.line("");
    Ratio::of(&t_py, &t_sh).report(report, "streamhost / the article's consumer, records/s");
    report.line(format!(
        "\nOn {n} records a streamhost run is mostly its fixed costs (the first fetch, the last commit); at the sustained rate of the section above ({sustained:.0} records/s), streamhost reads **{:.0}×** as fast as the article's consumer.",
        sustained / py_rate
    ));
    report.line("\nThe article's consumer produces nothing (it logs its statistics and alerts); streamhost produces every enriched record and alert and commits after they are acknowledged.\n");
}
