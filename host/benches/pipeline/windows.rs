//! Section 3: windows, bytes per retained reading and resident memory.

use super::*;

/// How the readings move: the bytes a window holds depend on it, through
/// its minimum and maximum deques.
#[derive(Clone, Copy, PartialEq)]
pub enum Walk {
    /// A random walk up and down, as a sensor's readings go.
    Sensor,
    /// Every field rising for the whole window: the minimum's deque holds
    /// every reading (the worst case).
    Rising,
}

pub fn windows_memory(report: &mut Report, keys: usize, per_key: usize) {
    let sensor = measure(keys, per_key, Walk::Sensor);
    let rising = measure(keys / 10, per_key, Walk::Rising);
    report.line(format!(
        "### 3. Windows ({keys} keys × {per_key} readings: 5 minutes at 1 reading/s, 4 fields)\n"
    ));
    report.line("| measure | value |");
    report.line("|---|---:|");
    report.line(format!("| readings retained | {} |", sensor.readings));
    report.line(format!(
        "| heap bytes per retained reading (all window state incl. keys), sensor-like readings (target ≤ 40) | **{:.1}** |",
        sensor.bytes_per_reading
    ));
    report.line(format!(
        "| the same, worst case: every field rising for 5 minutes ({} keys) | {:.1} |",
        keys / 10,
        rising.bytes_per_reading
    ));
    report.line(format!(
        "| resident memory added, sensor-like (pages touched) | {:.0} MiB |",
        sensor.rss as f64 / (1 << 20) as f64
    ));
    report.line(format!(
        "| inserts/s (with eviction), sensor-like | {:.0} |",
        sensor.inserts_per_s
    ));
    report.line("");
}

struct Measured {
    readings: usize,
    bytes_per_reading: f64,
    rss: usize,
    inserts_per_s: f64,
}

fn measure(keys: usize, per_key: usize, walk: Walk) -> Measured {
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
    // Counted from here: only the windows allocate until the reading below.
    COUNTING.store(true, Ordering::Relaxed);
    let live_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss();
    let mut w = Windows::new(WindowConfig {
        length_ms: 300_000,
        lateness_ms: 30_000,
        k: 3,
        fields: 4,
        idle_ms: 600_000,
        declared: Vec::new(),
    });
    let mut rand = streamhost_testkit::seeded_uniform(7);
    let started = Instant::now();
    for s in 0..per_key {
        let mut view = ViewBuilder::new(w.config(), false, keys);
        for (k, name) in names.iter().enumerate() {
            level[k] += match walk {
                Walk::Sensor => rand() - 0.5,
                Walk::Rising => rand(),
            };
            let v = level[k];
            // Written with two decimals, as the article's producer rounds.
            let r = |x: f64| (x * 100.0).round() / 100.0;
            w.insert(
                0,
                (s * keys + k) as i64,
                name,
                1_795_500_000_000 + s as i64 * 1000,
                &[r(v), r(v * 2.0), r(1000.0 + v), r(0.5 + v / 100.0)],
                Some(&mut view),
            )
            .unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let readings = w.readings();
    let live = LIVE.load(Ordering::Relaxed).wrapping_sub(live_before);
    COUNTING.store(false, Ordering::Relaxed);
    let rss_after = rss();
    drop(w);
    Measured {
        readings,
        bytes_per_reading: live as f64 / readings as f64,
        rss: rss_after.saturating_sub(rss_before),
        inserts_per_s: (keys * per_key) as f64 / elapsed,
    }
}
