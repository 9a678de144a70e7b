//! Section 3: windows, bytes per retained reading and resident memory.

use super::*;

pub fn windows_memory(report: &mut Report, keys: usize, per_key: usize) {
    let rss = || -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(0)
            * 4096
    };
    let names: Vec<String> = (0..keys).map(|k| format!("sensor_{k:06}")).collect();
    let mut level = vec![20.0f64; keys];
    let live_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss();
    let mut w = Windows::new(WindowConfig {
        length_ms: 300_000,
        lateness_ms: 30_000,
        k: 3,
        fields: 4,
        idle_ms: 600_000,
    });
    // Sensor-like values: a random walk per key.
    let mut rand = streamhost_testkit::seeded_uniform(7);
    let started = Instant::now();
    for s in 0..per_key {
        let mut view = ViewBuilder::new(4, 3, false, keys);
        for (k, name) in names.iter().enumerate() {
            level[k] += rand();
            let v = level[k];
            w.insert(
                0,
                (s * keys + k) as i64,
                name,
                1_795_500_000_000 + s as i64 * 1000,
                &[v, v * 2.0, 1000.0 + v, 0.5 + v / 100.0],
                Some(&mut view),
            )
            .unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let readings = w.readings();
    let live = LIVE.load(Ordering::Relaxed) - live_before;
    let rss_after = rss();
    report.line(format!(
        "### 3. Windows ({keys} keys × {per_key} readings: 5 minutes at 1 reading/s, 4 fields)\n"
    ));
    report.line("| measure | value |");
    report.line("|---|---:|");
    report.line(format!("| readings retained | {readings} |"));
    report.line(format!(
        "| heap bytes per retained reading (all window state incl. keys) | {:.1} |",
        live as f64 / readings as f64
    ));
    report.line(format!(
        "| resident memory added (pages touched; ring-buffer slack not yet written is not resident) | {:.0} MiB |",
        (rss_after.saturating_sub(rss_before)) as f64 / (1 << 20) as f64
    ));
    report.line(format!(
        "| inserts/s (with eviction) | {:.0} |",
        (keys * per_key) as f64 / elapsed
    ));
    report.line("");
    drop(w);
}
