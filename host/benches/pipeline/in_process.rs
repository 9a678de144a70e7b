//! Section 1: WASM against native, in process.

use super::*;

pub fn in_process(report: &mut Report, n: usize) {
    let input = records(n, 1000);
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wasm = wasm_rules(&runtime);
    let native = native_rules();
    let none = RuleSet::default();
    let batch = 1000;
    // Warm up both (page faults, caches, first instantiation).
    run_pipeline(&wasm, &input[..n.min(20_000)], batch);
    run_pipeline(&native, &input[..n.min(20_000)], batch);
    let (mut t_wasm, mut t_native, mut t_none) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        t_native = t_native.min(run_pipeline(&native, &input, batch));
        t_wasm = t_wasm.min(run_pipeline(&wasm, &input, batch));
        t_none = t_none.min(run_pipeline(&none, &input, batch));
    }
    let schema = streamhost::service::pipeline_config(&settings()).schema;
    let t_decode = best(3, || {
        let started = Instant::now();
        for r in &input {
            std::hint::black_box(
                streamhost::decode::decode(&schema, r.payload.as_deref().unwrap()).unwrap(),
            );
        }
        started.elapsed().as_secs_f64()
    });
    let decoded: Vec<_> = input
        .iter()
        .map(|r| streamhost::decode::decode(&schema, r.payload.as_deref().unwrap()).unwrap())
        .collect();
    let t_window = best(3, || {
        let mut w = Windows::new(WindowConfig {
            length_ms: 300_000,
            lateness_ms: 30_000,
            k: 3,
            fields: 4,
            idle_ms: 600_000,
        });
        let started = Instant::now();
        let mut offset = 0;
        for chunk in decoded.chunks(batch) {
            let mut view = ViewBuilder::new(4, 3, true, chunk.len());
            for d in chunk {
                w.insert(0, offset, &d.key, d.time_ms, &d.values, Some(&mut view))
                    .unwrap();
                offset += 1;
            }
            std::hint::black_box(view.view);
        }
        started.elapsed().as_secs_f64()
    });
    let per = |t: f64| t / n as f64 * 1e9;
    let rate = |t: f64| n as f64 / t;
    report.line(format!(
        "### 1. WASM against native, in process ({n} records, batches of {batch}, best of 3)\n"
    ));
    report.line("| path | records/s | ns/record |");
    report.line("|---|---:|---:|");
    report.line(format!(
        "| native rules (baseline) | {:.0} | {:.0} |",
        rate(t_native),
        per(t_native)
    ));
    report.line(format!(
        "| WASM components | {:.0} | {:.0} |",
        rate(t_wasm),
        per(t_wasm)
    ));
    report.line(format!(
        "| **ratio WASM / native** | **{:.2}** | |",
        t_native / t_wasm
    ));
    report.line("");
    report.line("Cost per record by stage (differences between runs of the same data):\n");
    report.line("| stage | ns/record |");
    report.line("|---|---:|");
    report.line(format!("| decode (JSON, once) | {:.0} |", per(t_decode)));
    report.line(format!("| window update + view | {:.0} |", per(t_window)));
    report.line(format!(
        "| rest of the path without rules (routing, encode outputs) | {:.0} |",
        per(t_none - t_decode - t_window).max(0.0)
    ));
    report.line(format!(
        "| three rules, native (incl. batch building, merge) | {:.0} |",
        per(t_native - t_none)
    ));
    report.line(format!(
        "| three rules, WASM (incl. batch building, merge) | {:.0} |",
        per(t_wasm - t_none)
    ));
    report.line("");
}
