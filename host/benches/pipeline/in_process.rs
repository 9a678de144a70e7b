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

pub fn in_process(report: &mut Report, n: usize, rounds: usize) {
    let input = records(n, 1000);
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wasm = wasm_rules(&runtime);
    let native = native_rules();
    let none = RuleSet::default();
    let batch = 1000;
    let schema = streamhost::service::pipeline_config(&settings()).schema;
    let decoded: Vec<_> = input
        .iter()
        .map(|r| streamhost::decode::decode(&schema, r.payload.as_deref().unwrap()).unwrap())
        .collect();
    // Warm up every path (page faults, caches, first instantiation).
    run_pipeline(&wasm, &input[..n.min(20_000)], batch);
    run_pipeline(&native, &input[..n.min(20_000)], batch);
    let [
        mut t_wasm,
        mut t_native,
        mut t_none,
        mut t_compact,
        mut t_decode,
        mut t_serde,
        mut t_sonic,
        mut t_window,
    ] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    use streamhost::output::Shape;
    for round in 0..rounds {
        // The order within a round changes, so no path always runs first.
        let mut paths: [(&RuleSet, Shape, &mut Vec<f64>); 4] = [
            (&native, Shape::Full, &mut t_native),
            (&wasm, Shape::Full, &mut t_wasm),
            (&none, Shape::Full, &mut t_none),
            (&wasm, Shape::Compact, &mut t_compact),
        ];
        paths.rotate_left(round % 4);
        for (rules, shape, times) in paths {
            times.push(run_pipeline_shaped(rules, &input, batch, shape));
        }
        let decoders: [(Decoder, &mut Vec<f64>); 3] = [
            (counts::decode_as_the_pipeline_does, &mut t_decode),
            (counts::decode_by_serde_alone, &mut t_serde),
            (streamhost::decode::decode_sonic, &mut t_sonic),
        ];
        for (decode, times) in decoders {
            let started = Instant::now();
            for r in &input {
                std::hint::black_box(decode(&schema, r.payload.as_deref().unwrap()).unwrap());
            }
            times.push(started.elapsed().as_secs_f64());
        }
        let mut w = Windows::new(streamhost::service::pipeline_config(&settings()).window);
        let started = Instant::now();
        counts::insert_all(&mut w, &decoded, 0);
        t_window.push(started.elapsed().as_secs_f64());
    }
    let per = |t: &[f64]| ns_per_record(t, n);
    let counted: Vec<(Workload, Result<f64, String>)> = Workload::ALL
        .into_iter()
        .map(|w| (w, counts::per_record(w)))
        .collect();
    let instr = |w: Workload| counted.iter().find(|(x, _)| *x == w).unwrap().1.clone();
    let instr_cell = |w: Workload| match instr(w) {
        Ok(i) => format!("{i:.0}"),
        Err(_) => "—".into(),
    };
    report.line(format!(
        "### 1. The whole path in process, one core ({n} records, batches of {batch}, {rounds} interleaved rounds)\n"
    ));
    report.line(
        "| path | records/s (median round) | ns/record: median | spread | instructions/record |",
    );
    report.line("|---|---:|---:|---:|---:|");
    for (name, times, w) in [
        (
            "no rules (decode, windows, outputs)",
            &t_none,
            Workload::NoRules,
        ),
        ("native rules (baseline)", &t_native, Workload::Native),
        ("WASM components", &t_wasm, Workload::Wasm),
    ] {
        let (m, lo, hi) = per(times);
        report.line(format!(
            "| {name} | {:.0} | {m:.0} | {lo:.0}–{hi:.0} | {} |",
            1e9 / m,
            instr_cell(w)
        ));
    }
    let (m, lo, hi) = per(&t_compact);
    report.line(format!(
        "| WASM components, `--enriched-shape compact` | {:.0} | {m:.0} | {lo:.0}–{hi:.0} | |",
        1e9 / m
    ));
    report.line("");
    let ratio = Ratio::of(&t_native, &t_wasm);
    ratio.report(report, "WASM / native (records/s; target ≥ 0.9)");
    if let (Ok(w), Ok(nat)) = (instr(Workload::Wasm), instr(Workload::Native)) {
        report.line(format!(
            "\nIn instructions, native / WASM = {:.2}.",
            nat / w
        ));
    }
    Ratio::of(&t_wasm, &t_compact).report(report, "\nCompact / full enriched shape, records/s");
    let rate = 1e9 / per(&t_wasm).0;
    report.line(format!(
        "\nWASM path per core: **{rate:.0} records/s** (target ≥ 1,000,000: {}). The pipeline runs a batch on one thread.\n",
        if rate >= 1e6 { "met" } else { "not met" }
    ));
    for (_, r) in &counted {
        if let Err(e) = r {
            report.line(format!("Instructions not counted: {e}.\n"));
            break;
        }
    }

    report.line("Cost per record by stage (medians over the rounds; the last three are differences between paths):\n");
    report.line("| stage | ns/record: median | spread | instructions/record |");
    report.line("|---|---:|---:|---:|");
    let (d, dlo, dhi) = per(&t_decode);
    report.line(format!(
        "| decode (UTF-8 check, then JSON, once: the fast path) | {d:.0} | {dlo:.0}–{dhi:.0} | {} |",
        instr_cell(Workload::Decode)
    ));
    let (d, dlo, dhi) = per(&t_serde);
    report.line(format!(
        "| decode with serde_json's visitor alone (the fallback) | {d:.0} | {dlo:.0}–{dhi:.0} | {} |",
        instr_cell(Workload::DecodeSerde)
    ));
    let (d, dlo, dhi) = per(&t_sonic);
    report.line(format!(
        "| decode with sonic-rs instead of serde_json (same visitor; evaluated, not used) | {d:.0} | {dlo:.0}–{dhi:.0} | {} |",
        instr_cell(Workload::DecodeSonic)
    ));
    let (w, wlo, whi) = per(&t_window);
    report.line(format!(
        "| window update + view | {w:.0} | {wlo:.0}–{whi:.0} | {} |",
        instr_cell(Workload::Windows)
    ));
    let diff = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let rest: Vec<f64> = t_none
        .iter()
        .zip(&t_decode)
        .zip(&t_window)
        .map(|((a, b), c)| a - b - c)
        .collect();
    let idiff = |a: Workload, b: &[Workload]| -> String {
        match (
            instr(a),
            b.iter().map(|w| instr(*w)).collect::<Result<Vec<f64>, _>>(),
        ) {
            (Ok(x), Ok(ys)) => format!("{:.0}", x - ys.iter().sum::<f64>()),
            _ => "—".into(),
        }
    };
    for (name, v, i) in [
        (
            "the rest without rules (batch state, routing, encoding outputs)",
            rest,
            idiff(Workload::NoRules, &[Workload::Decode, Workload::Windows]),
        ),
        (
            "three rules, native (batch building, calls, merge)",
            diff(&t_native, &t_none),
            idiff(Workload::Native, &[Workload::NoRules]),
        ),
        (
            "three rules, WASM (batch building, calls, merge)",
            diff(&t_wasm, &t_none),
            idiff(Workload::Wasm, &[Workload::NoRules]),
        ),
    ] {
        let (m, lo, hi) = per(&v);
        report.line(format!("| {name} | {m:.0} | {lo:.0}–{hi:.0} | {i} |"));
    }
    report.line("");
    Ratio::of(&t_serde, &t_decode)
        .report(report, "Decode, fast path / serde_json alone, records/s");
    Ratio::of(&t_serde, &t_sonic).report(report, "\nDecode, sonic-rs / serde_json, records/s");
    let (agree, differ) = decoders_agree(&schema);
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

/// Records on which serde_json's and sonic-rs's readers could differ:
/// whether both decoders give the same values, or both refuse.
fn decoders_agree(schema: &streamhost::decode::Schema) -> (usize, Vec<String>) {
    let ok = r#""sensor_id":"s","timestamp":"2026-11-24T17:30:05Z""#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain",
            format!("{{{ok},\"temperature\":21.5}}").into_bytes(),
        ),
        (
            "duplicate member",
            format!("{{{ok},\"temperature\":1,\"temperature\":2}}").into_bytes(),
        ),
        (
            "duplicate ignored member",
            format!("{{{ok},\"x\":1,\"x\":2}}").into_bytes(),
        ),
        (
            "huge number",
            format!("{{{ok},\"temperature\":1e400}}").into_bytes(),
        ),
        (
            "tiny number",
            format!("{{{ok},\"temperature\":1e-400}}").into_bytes(),
        ),
        (
            "long integer",
            format!("{{{ok},\"temperature\":123456789012345678901234567890}}").into_bytes(),
        ),
        (
            "long fraction",
            format!("{{{ok},\"temperature\":0.1000000000000000055511151231257827}}").into_bytes(),
        ),
        (
            "minus zero",
            format!("{{{ok},\"temperature\":-0}}").into_bytes(),
        ),
        (
            "lone surrogate in the key",
            br#"{"sensor_id":"\ud800","timestamp":"2026-11-24T17:30:05Z"}"#.to_vec(),
        ),
        (
            "lone surrogate elsewhere",
            format!("{{{ok},\"note\":\"\\udc00\"}}").into_bytes(),
        ),
        (
            "escaped key",
            br#"{"sensor_\u0069d":"s","timestamp":"2026-11-24T17:30:05Z"}"#.to_vec(),
        ),
        (
            "bad UTF-8",
            [
                b"{\"sensor_id\":\"\xff\",".as_slice(),
                br#""timestamp":"2026-11-24T17:30:05Z"}"#,
            ]
            .concat(),
        ),
        (
            "deep nesting",
            format!("{{{ok},\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        ),
        ("trailing text", format!("{{{ok}}} x").into_bytes()),
        ("trailing comma", format!("{{{ok},}}").into_bytes()),
        (
            "NaN literal",
            format!("{{{ok},\"temperature\":NaN}}").into_bytes(),
        ),
        (
            "number as string",
            format!("{{{ok},\"temperature\":\"21.5\"}}").into_bytes(),
        ),
        (
            "null field",
            format!("{{{ok},\"temperature\":null}}").into_bytes(),
        ),
        ("not an object", b"[1,2]".to_vec()),
        (
            "control character in a string",
            format!("{{{ok},\"note\":\"a\u{1}b\"}}").into_bytes(),
        ),
    ];
    let mut agree = 0;
    let mut differ = Vec::new();
    for (name, bytes) in cases {
        let a = streamhost::decode::decode(schema, &bytes);
        let b = streamhost::decode::decode_sonic(schema, &bytes);
        let same = match (&a, &b) {
            (Ok(x), Ok(y)) => {
                x.key == y.key
                    && x.time_ms == y.time_ms
                    && x.values
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(y.values.iter().map(|v| v.to_bits()))
            }
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if same {
            agree += 1;
        } else {
            differ.push(format!(
                "{name} (serde_json: {}, sonic-rs: {})",
                a.as_ref()
                    .map_or_else(|e| format!("refused: {e}"), |d| format!("{:?}", d.values)),
                b.as_ref()
                    .map_or_else(|e| format!("refused: {e}"), |d| format!("{:?}", d.values)),
            ));
        }
    }
    (agree, differ)
}
