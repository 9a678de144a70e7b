//! Instructions per record, counted by callgrind.
//!
//! Times on this machine move with whatever else runs on it; instruction
//! counts do not (callgrind gives the same total for the same binary and
//! input, loaded or not). Each workload runs in a child process, this same
//! binary with `--count WORKLOAD`, under `valgrind --tool=callgrind` with
//! collection switched on only inside `streamhost_bench_counted`: loading
//! and compiling the components, and making the input, are not counted.

use super::*;

/// What a child process counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    Decode,
    DecodeSerde,
    DecodeSonic,
    Windows,
    NoRules,
    Native,
    NativeDeclaring,
    Wasm,
}

impl Workload {
    pub const ALL: [Workload; 8] = [
        Workload::Decode,
        Workload::DecodeSerde,
        Workload::DecodeSonic,
        Workload::Windows,
        Workload::NoRules,
        Workload::Native,
        Workload::NativeDeclaring,
        Workload::Wasm,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Decode => "decode",
            Workload::DecodeSerde => "decode-serde",
            Workload::DecodeSonic => "decode-sonic",
            Workload::Windows => "windows",
            Workload::NoRules => "no-rules",
            Workload::Native => "native",
            Workload::NativeDeclaring => "native-declaring",
            Workload::Wasm => "wasm",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }
}

/// Records per counted run: enough for the windows to fill past their first
/// minutes, few enough for callgrind (about 50 times slower) to take seconds.
pub const COUNTED_RECORDS: usize = 20_000;

/// The only function callgrind collects in (`--toggle-collect`).
#[inline(never)]
#[unsafe(no_mangle)]
pub fn streamhost_bench_counted(work: &mut dyn FnMut()) {
    work();
}

/// In the child: runs `workload` once over `COUNTED_RECORDS` records, the
/// part to count inside `streamhost_bench_counted`. A first pass over other
/// records warms the same state, as the timed runs do.
pub fn child(workload: Workload) {
    let n = COUNTED_RECORDS;
    let all = records(2 * n, 1000);
    let (warm, input) = all.split_at(n);
    let schema = streamhost::cmd::wiring::pipeline_config(&settings()).schema;
    match workload {
        Workload::Decode | Workload::DecodeSerde | Workload::DecodeSonic => {
            let payloads: Vec<&[u8]> = input
                .iter()
                .map(|r| r.payload.as_deref().unwrap())
                .collect();
            let decode = match workload {
                Workload::Decode => decode_as_the_pipeline_does,
                Workload::DecodeSerde => decode_by_serde_alone,
                _ => super::sonic::decode_sonic,
            };
            streamhost_bench_counted(&mut || {
                for p in &payloads {
                    std::hint::black_box(decode(&schema, p).unwrap());
                }
            });
        }
        Workload::Windows => {
            let decoded: Vec<_> = all
                .iter()
                .map(|r| {
                    streamhost::decode::decode(&schema, r.payload.as_deref().unwrap()).unwrap()
                })
                .collect();
            let mut w = Windows::new(streamhost::cmd::wiring::pipeline_config(&settings()).window);
            let (warm, counted) = decoded.split_at(n);
            insert_all(&mut w, warm, 0);
            streamhost_bench_counted(&mut || insert_all(&mut w, counted, n as i64));
        }
        Workload::NoRules | Workload::Native | Workload::NativeDeclaring | Workload::Wasm => {
            let runtime = Runtime::new(Limits::default()).unwrap();
            let rules = match workload {
                Workload::NoRules => RuleSet::default(),
                Workload::Native => native_rules(),
                Workload::NativeDeclaring => native_rules_declaring(),
                _ => wasm_rules(&runtime),
            };
            let mut p = Pipeline::new(streamhost::cmd::wiring::pipeline_config(&settings()));
            let batches = |recs: &[InRecord]| -> Vec<Vec<InRecord>> {
                recs.chunks(1000).map(<[InRecord]>::to_vec).collect()
            };
            for b in batches(warm) {
                p.process(&rules, b, 1_795_500_000_000);
            }
            let mut counted = batches(input);
            streamhost_bench_counted(&mut || {
                for b in counted.drain(..) {
                    std::hint::black_box(p.process(&rules, b, 1_795_500_000_000));
                }
            });
        }
    }
}

/// Inserts decoded readings in batches of 1000, building views as the
/// pipeline does.
pub fn insert_all(w: &mut Windows, decoded: &[streamhost::decode::Decoded], first_offset: i64) {
    let mut offset = first_offset;
    for chunk in decoded.chunks(1000) {
        let mut view = ViewBuilder::new(w.config(), true, chunk.len());
        for d in chunk {
            w.insert(0, offset, &d.key, d.time_ms, &d.values, Some(&mut view))
                .unwrap();
            offset += 1;
        }
        std::hint::black_box(view.view);
    }
}

/// In the parent: instructions per record of `workload`, or why it could
/// not be counted.
pub fn per_record(workload: Workload) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!(
        "streamhost-bench-{}-{}.callgrind",
        std::process::id(),
        workload.name()
    ));
    let status = std::process::Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=streamhost_bench_counted",
        ])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(["--count", workload.name()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("valgrind: {e} (install it: apt-get install valgrind)"))?;
    if !status.success() {
        return Err(format!("valgrind exited with {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no totals line in callgrind's output")?;
    Ok(total as f64 / COUNTED_RECORDS as f64)
}

/// The pipeline's decode without its fast path: serde_json's visitor alone.
pub fn decode_by_serde_alone(
    schema: &streamhost::decode::Schema,
    payload: &[u8],
) -> Result<streamhost::decode::Decoded, streamhost::decode::DecodeError> {
    streamhost::decode::decode_text_serde(schema, utf8(payload)?)
}

/// The pipeline's decode: the payload checked to be UTF-8 once, then read
/// (by the fast path, else serde_json).
pub fn decode_as_the_pipeline_does(
    schema: &streamhost::decode::Schema,
    payload: &[u8],
) -> Result<streamhost::decode::Decoded, streamhost::decode::DecodeError> {
    streamhost::decode::decode_text(schema, utf8(payload)?)
}

/// The payload as text, checked once as the pipeline checks it.
fn utf8(payload: &[u8]) -> Result<&str, streamhost::decode::DecodeError> {
    std::str::from_utf8(payload).map_err(|e| streamhost::decode::DecodeError::Json(e.to_string()))
}
