//! Section 1: the whole path in process, on one core: WASM against native,
//! and the cost of each stage, timed over interleaved rounds and counted in
//! instructions.

use super::counts::{self, Workload};
use super::*;

/// A decoder as the bench times it: a schema and a payload in.
type Decoder = fn(
    &streamhost::decode::Schema,
    &[u8],
) -> Result<streamhost::decode::Decoded, streamhost::decode::DecodeError>;

/// Seconds per round of each path and stage.
#[derive(Default)]
struct Times {
    wasm: Vec<f64>,
    native: Vec<f64>,
    none: Vec<f64>,
    compact: Vec<f64>,
    decode: Vec<f64>,
    serde: Vec<f64>,
    sonic: Vec<f64>,
    window: Vec<f64>,
}

/// Instructions per record of each workload, or why they were not counted.
struct Counted(Vec<(Workload, Result<f64, String>)>);

impl Counted {
    fn count() -> Counted {
        Counted(
            Workload::ALL
                .into_iter()
                .map(|w| (w, counts::per_record(w)))
                .collect(),
        )
    }

    fn instr(&self, w: Workload) -> Result<f64, String> {
        self.0.iter().find(|(x, _)| *x == w).unwrap().1.clone()
    }

    fn cell(&self, w: Workload) -> String {
        match self.instr(w) {
            Ok(i) => format!("{i:.0}"),
            Err(_) => "—".into(),
        }
    }

    /// `a`'s count less the sum of `b`'s.
    fn diff(&self, a: Workload, b: &[Workload]) -> String {
        match (
            self.instr(a),
            b.iter()
                .map(|w| self.instr(*w))
                .collect::<Result<Vec<f64>, _>>(),
        ) {
            (Ok(x), Ok(ys)) => format!("{:.0}", x - ys.iter().sum::<f64>()),
            _ => "—".into(),
        }
    }
}

pub fn in_process(report: &mut Report, n: usize, rounds: usize) {
    let batch = 1000;
    let schema = streamhost::cmd::wiring::pipeline_config(&settings()).schema;
    let t = time_rounds(&schema, n, rounds, batch);
    let counted = Counted::count();
    report.line(format!(
        "### 1. The whole path in process, one core ({n} records, batches of {batch}, {rounds} interleaved rounds)\n"
    ));
    report_paths(report, &t, &counted, n);
    report_stages(report, &t, &counted, n);
    report.line("");
    Ratio::of(&t.serde, &t.decode)
        .report(report, "Decode, fast path / serde_json alone, records/s");
    Ratio::of(&t.serde, &t.sonic).report(report, "\nDecode, sonic-rs / serde_json, records/s");
    let (agree, differ) = super::sonic::decoders_agree(&schema);
    report.line(format!(
        "\nOn {} hostile records (duplicate members, huge and tiny numbers, lone surrogates, bad UTF-8, deep nesting, trailing text), the two decoders agreed on {agree}{}.",
        agree + differ.len(),
        if differ.is_empty() { String::new() } else { format!("; they differ on: {}", differ.join("; ")) }
    ));
    report.line(format!(
        "\nInstructions are counted by callgrind over {} records after as many to warm up, in a child process (`--count WORKLOAD`); they do not move with the machine's load.\n",
        counts::COUNTED_RECORDS
    ));
}

/// Times every path and stage over `n` records, in `rounds` interleaved
/// rounds.
fn time_rounds(
    schema: &streamhost::decode::Schema,
    n: usize,
    rounds: usize,
    batch: usize,
) -> Times {
    let input = records(n, 1000);
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wasm = wasm_rules(&runtime);
    let native = native_rules();
    let none = RuleSet::default();
    let decoded: Vec<_> = input
        .iter()
        .map(|r| streamhost::decode::decode(schema, r.payload.as_deref().unwrap()).unwrap())
        .collect();
    // Warm up every path (page faults, caches, first instantiation).
    run_pipeline(&wasm, &input[..n.min(20_000)], batch);
    run_pipeline(&native, &input[..n.min(20_000)], batch);
    let mut t = Times::default();
    use streamhost::output::Shape;
    for round in 0..rounds {
        // The order within a round changes, so no path always runs first.
        let mut paths: [(&RuleSet, Shape, &mut Vec<f64>); 4] = [
            (&native, Shape::Full, &mut t.native),
            (&wasm, Shape::Full, &mut t.wasm),
            (&none, Shape::Full, &mut t.none),
            (&wasm, Shape::Compact, &mut t.compact),
        ];
        paths.rotate_left(round % 4);
        for (rules, shape, times) in paths {
            times.push(run_pipeline_shaped(rules, &input, batch, shape));
        }
        let decoders: [(Decoder, &mut Vec<f64>); 3] = [
            (counts::decode_as_the_pipeline_does, &mut t.decode),
            (counts::decode_by_serde_alone, &mut t.serde),
            (super::sonic::decode_sonic, &mut t.sonic),
        ];
        for (decode, times) in decoders {
            let started = Instant::now();
            for r in &input {
                std::hint::black_box(decode(schema, r.payload.as_deref().unwrap()).unwrap());
            }
            times.push(started.elapsed().as_secs_f64());
        }
        let mut w = Windows::new(streamhost::cmd::wiring::pipeline_config(&settings()).window);
        let started = Instant::now();
        counts::insert_all(&mut w, &decoded, 0);
        t.window.push(started.elapsed().as_secs_f64());
    }
    t
}

/// The paths' table: records/s and cost per record, with and without rules.
fn report_paths(report: &mut Report, t: &Times, counted: &Counted, n: usize) {
    let per = |t: &[f64]| ns_per_record(t, n);
    report.line(
        "| path | records/s (median round) | ns/record: median | spread | instructions/record |",
    );
    report.line("|---|---:|---:|---:|---:|");
    for (name, times, w) in [
        (
            "no rules (decode, windows, outputs)",
            &t.none,
            Workload::NoRules,
        ),
        ("native rules (baseline)", &t.native, Workload::Native),
        ("WASM components", &t.wasm, Workload::Wasm),
    ] {
        let (m, lo, hi) = per(times);
        report.line(format!(
            "| {name} | {:.0} | {m:.0} | {lo:.0}–{hi:.0} | {} |",
            1e9 / m,
            counted.cell(w)
        ));
    }
    let (m, lo, hi) = per(&t.compact);
    report.line(format!(
        "| WASM components, `--enriched-shape compact` | {:.0} | {m:.0} | {lo:.0}–{hi:.0} | |",
        1e9 / m
    ));
    report.line("");
    let ratio = Ratio::of(&t.native, &t.wasm);
    ratio.report(report, "WASM / native (records/s; target ≥ 0.9)");
    if let (Ok(w), Ok(nat)) = (
        counted.instr(Workload::Wasm),
        counted.instr(Workload::Native),
    ) {
        report.line(format!(
            "\nIn instructions, native / WASM = {:.2}.",
            nat / w
        ));
    }
    Ratio::of(&t.wasm, &t.compact).report(report, "\nCompact / full enriched shape, records/s");
    let rate = 1e9 / per(&t.wasm).0;
    report.line(format!(
        "\nWASM path per core: **{rate:.0} records/s** (target ≥ 1,000,000: {}). The pipeline runs a batch on one thread.\n",
        if rate >= 1e6 { "met" } else { "not met" }
    ));
    for (_, r) in &counted.0 {
        if let Err(e) = r {
            report.line(format!("Instructions not counted: {e}.\n"));
            break;
        }
    }
}

/// The stages' table: decode, windows, and the rest by difference.
fn report_stages(report: &mut Report, t: &Times, counted: &Counted, n: usize) {
    let per = |t: &[f64]| ns_per_record(t, n);
    report.line("Cost per record by stage (medians over the rounds; the last three are differences between paths):\n");
    report.line("| stage | ns/record: median | spread | instructions/record |");
    report.line("|---|---:|---:|---:|");
    for (name, times, w) in [
        (
            "decode (UTF-8 check, then JSON, once: the fast path)",
            &t.decode,
            Workload::Decode,
        ),
        (
            "decode with serde_json's visitor alone (the fallback)",
            &t.serde,
            Workload::DecodeSerde,
        ),
        (
            "decode with sonic-rs instead of serde_json (same visitor; evaluated, not used)",
            &t.sonic,
            Workload::DecodeSonic,
        ),
        ("window update + view", &t.window, Workload::Windows),
    ] {
        let (d, dlo, dhi) = per(times);
        report.line(format!(
            "| {name} | {d:.0} | {dlo:.0}–{dhi:.0} | {} |",
            counted.cell(w)
        ));
    }
    let diff = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let rest: Vec<f64> = t
        .none
        .iter()
        .zip(&t.decode)
        .zip(&t.window)
        .map(|((a, b), c)| a - b - c)
        .collect();
    for (name, v, i) in [
        (
            "the rest without rules (batch state, routing, encoding outputs)",
            rest,
            counted.diff(Workload::NoRules, &[Workload::Decode, Workload::Windows]),
        ),
        (
            "three rules, native (batch building, calls, merge)",
            diff(&t.native, &t.none),
            counted.diff(Workload::Native, &[Workload::NoRules]),
        ),
        (
            "three rules, WASM (batch building, calls, merge)",
            diff(&t.wasm, &t.none),
            counted.diff(Workload::Wasm, &[Workload::NoRules]),
        ),
    ] {
        let (m, lo, hi) = per(&v);
        report.line(format!("| {name} | {m:.0} | {lo:.0}–{hi:.0} | {i} |"));
    }
    report.line(format!(
        "| declared windows: the native anomaly rule declaring 1 min (mean) and 15 min (mean, stddev, p95, slope) of temperature, over the native rules | | | {} |",
        counted.diff(Workload::NativeDeclaring, &[Workload::Native])
    ));
}
