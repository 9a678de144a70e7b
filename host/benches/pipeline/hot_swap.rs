//! Section 4: hot swap under load.

use super::*;

/// A batch as the worker served it: when it started, the anomaly rule's
/// version, and its records.
type Served = (Instant, String, usize);

/// Hot swap in process: the pipeline loops over batches, taking the current
/// rules at each batch start as the service does, while the anomaly plugin's
/// file is replaced 20 times (1.0.0 and another build of the same rule,
/// 1.1.0-rejects, alternately).
pub fn hot_swap(report: &mut Report, phase: Duration) {
    use streamhost::rules::registry::Registry;
    let dir = root().join("target/bench/swap");
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = |name: &str| root().join("target/plugins").join(format!("{name}.wasm"));
    let (v1, v2) = (
        std::fs::read(plugin("anomaly")).unwrap(),
        std::fs::read(plugin("anomaly-rejects")).unwrap(),
    );
    let rule = dir.join("anomaly.wasm");
    std::fs::write(&rule, &v1).unwrap();
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let registry = Arc::new(
        Registry::from_files(runtime, &[plugin("enrich"), plugin("trend"), rule.clone()]).unwrap(),
    );
    registry.watch();
    let input = passes(100_000);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || serve(&registry, &stop, input))
    };
    std::thread::sleep(Duration::from_millis(500)); // warm up
    // Rounds of a quiet slot then a swapping slot (two swaps), so the
    // ratio is a median over rounds that saw the same machine.
    let rounds = 10;
    let slot = phase / rounds;
    let mut landings = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..rounds {
        let quiet_start = Instant::now();
        std::thread::sleep(slot);
        let swap_start = Instant::now();
        for (bytes, version) in [(&v2, "1.1.0-rejects"), (&v1, "1.0.0")] {
            let tmp = dir.join("anomaly.wasm.tmp");
            std::fs::write(&tmp, bytes).unwrap();
            let at = Instant::now();
            std::fs::rename(&tmp, &rule).unwrap();
            landings.push((at, version));
            std::thread::sleep(slot / 2);
        }
        slots.push((quiet_start, swap_start, Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    let served = worker.join().unwrap();
    report.line(format!(
        "### 4. Hot swap (in process, {} swaps of the anomaly plugin by file rename, 1.0.0 and 1.1.0-rejects alternately, {} ms apart; {rounds} rounds of a quiet slot then a swapping one)\n",
        landings.len(),
        (slot / 2).as_millis()
    ));
    report_swaps(report, &served, &landings, &slots);
}

/// The same records over and over, each pass moved forward in event time
/// (the epoch-millisecond timestamp sits first, at a fixed place), so that
/// replays are not late and every pass does the same work: the records of
/// a pass, and how far a pass moves them (ms).
fn passes(n: usize) -> (Vec<InRecord>, i64) {
    let input: Vec<InRecord> = records(n, 1000)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let mut v: serde_json::Value =
                serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("timestamp");
            let rest = &v.to_string()[1..];
            let t = 1_795_500_000_000i64 + (i / 1000) as i64 * 1000;
            r.payload = Some(format!("{{\"timestamp\":{t},{rest}").into_bytes());
            r
        })
        .collect();
    (input, (n / 1000) as i64 * 1000)
}

/// Runs the pipeline over passes of `input` until `stop`, taking the
/// current rules at each batch start: the batches served.
fn serve(
    registry: &streamhost::rules::registry::Registry,
    stop: &AtomicBool,
    (input, pass_ms): (Vec<InRecord>, i64),
) -> Vec<Served> {
    let mut p = Pipeline::new(streamhost::cmd::wiring::pipeline_config(&settings()));
    let mut served: Vec<Served> = Vec::new();
    let mut pass = 0i64;
    'outer: loop {
        for chunk in input.chunks(1000) {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            let mut chunk = chunk.to_vec();
            for r in &mut chunk {
                let payload = r.payload.as_mut().unwrap();
                let t: i64 = std::str::from_utf8(&payload[13..26])
                    .unwrap()
                    .parse()
                    .unwrap();
                payload[13..26].copy_from_slice((t + pass * pass_ms).to_string().as_bytes());
            }
            let rules = registry.current();
            let version = rules.anomaly[0].info().version.clone();
            let at = Instant::now();
            let len = chunk.len();
            // Processing time moves with the passes, as event time does.
            std::hint::black_box(p.process(&rules, chunk, 1_795_500_000_000 + pass * pass_ms));
            served.push((at, version, len));
        }
        pass += 1;
    }
    served
}

/// The measures of the swaps: how soon each landed version served a batch,
/// and the throughput and batch times with and without swaps.
fn report_swaps(
    report: &mut Report,
    served: &[Served],
    landings: &[(Instant, &str)],
    slots: &[(Instant, Instant, Instant)],
) {
    let (swap_start, swap_end) = (slots[0].1, slots[slots.len() - 1].2);
    let rate = |from: Instant, to: Instant| {
        let recs: usize = served
            .iter()
            .filter(|(at, _, _)| *at >= from && *at < to)
            .map(|s| s.2)
            .sum();
        recs as f64 / (to - from).as_secs_f64()
    };
    let quiet: Vec<f64> = slots.iter().map(|(q, s, _)| rate(*q, *s)).collect();
    let swapping: Vec<f64> = slots.iter().map(|(_, s, e)| rate(*s, *e)).collect();
    let ratio = Ratio::of(&swapping, &quiet);
    let mut latencies: Vec<f64> = landings
        .iter()
        .enumerate()
        .filter_map(|(i, (at, version))| {
            let until = landings.get(i + 1).map_or(swap_end, |l| l.0);
            served
                .iter()
                .find(|(t, v, _)| *t >= *at && *t < until && v == version)
                .map(|(t, _, _)| (*t - *at).as_secs_f64() * 1e3)
        })
        .collect();
    let missed = landings.len() - latencies.len();
    latencies.sort_by(f64::total_cmp);
    let (on_v1, on_v2, first) = batch_times(served, swap_start, swap_end);
    report.line("| measure | value |");
    report.line("|---|---:|");
    report.line(format!(
        "| swap latency, file landing to first batch on the new version: median | {:.0} ms |",
        latencies[latencies.len() / 2]
    ));
    report.line(format!(
        "| swap latency: max | {:.0} ms |",
        latencies[latencies.len() - 1]
    ));
    report.line(format!(
        "| swaps not served before the next one | {missed} |"
    ));
    report.line(format!(
        "| throughput without swaps (baseline), median slot | {:.0} records/s |",
        median(&mut quiet.clone())
    ));
    report.line(format!(
        "| throughput while swapping, median slot | {:.0} records/s |",
        median(&mut swapping.clone())
    ));
    report.line(format!(
        "| batch of 1,000, median: on 1.0.0 / on 1.1.0-rejects / first batch after a swap | {on_v1:.2} / {on_v2:.2} / {first:.2} ms |",
    ));
    report.line("");
    ratio.report(report, "Swapping / quiet, records/s");
    report.line("");
}

/// Median batch durations (ms) while swapping: on 1.0.0, on 1.1.0-rejects, and the first
/// batch on each new version.
fn batch_times(served: &[Served], swap_start: Instant, swap_end: Instant) -> (f64, f64, f64) {
    let mut first = Vec::new();
    let mut other = Vec::new();
    for w in served.windows(2) {
        let d = (w[1].0 - w[0].0).as_secs_f64() * 1e3;
        if w[0].0 < swap_start || w[0].0 > swap_end {
            continue;
        }
        if served
            .iter()
            .position(|x| x.0 == w[0].0)
            .is_some_and(|i| i > 0 && served[i - 1].1 != w[0].1)
        {
            first.push(d);
        } else {
            other.push((d, w[0].1.clone()));
        }
    }
    first.sort_by(f64::total_cmp);
    let median_of = |v: &str| {
        let mut d: Vec<f64> = other.iter().filter(|o| o.1 == v).map(|o| o.0).collect();
        d.sort_by(f64::total_cmp);
        d.get(d.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let first_median = first.get(first.len() / 2).copied().unwrap_or(f64::NAN);
    (median_of("1.0.0"), median_of("1.1.0-rejects"), first_median)
}
