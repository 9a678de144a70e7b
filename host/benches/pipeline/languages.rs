//! Section 8: the example anomaly rules by language (Rust, C, JavaScript,
//! Python): first load (compiled), cached load (a new runtime reading the
//! compile cache on disk, as after a restart), and the cost per record of
//! the rule in the whole pipeline.
//!
//! Cost per record: the time inside the rule's calls (the plugin's own
//! counters: lowering the batch and window view, the guest's work, lifting
//! the results) per record, over rounds of the pipeline on the same
//! readings. Median and spread over the rounds. The pipeline's other
//! stages are section 1's.

use super::*;

use streamhost::rules::runtime::CompiledFrom;

const PLUGINS: [(&str, &str); 4] = [
    ("anomaly", "Rust"),
    ("pressure-c", "C"),
    ("jump-js", "JavaScript"),
    ("humidity-py", "Python"),
];

pub fn languages(report: &mut Report, n: usize, rounds: usize) {
    let input = records(n, 1000);
    let cache = root()
        .join("target/bench")
        .join(format!("compile-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let runtime = |cache: &std::path::Path| {
        Runtime::new(Limits {
            deadline: Duration::from_secs(5),
            memory_bytes: 512 << 20,
            ..Limits::default()
        })
        .unwrap()
        .with_disk_cache(cache, 4 << 30)
        .unwrap()
    };
    report.line(format!(
        "### 8. Plugins by language ({n} records, batches of 1000, {rounds} interleaved rounds)\n"
    ));
    report.line("| plugin | language | first load (compiled) | cached load (new runtime, from disk) | ns/record in the rule's calls (median) | spread | peak memory |");
    report.line("|---|---|---:|---:|---:|---:|---:|");
    for (name, language) in PLUGINS {
        eprintln!("bench: {name}");
        let path = root().join("target/plugins").join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask plugins`", path.display()));
        let first = runtime(&cache).load(&bytes, name).unwrap();
        assert_eq!(first.info().compiled_from, CompiledFrom::Compiled);
        let mut cached = Vec::new();
        let mut plugin = None;
        for _ in 0..5 {
            let p = runtime(&cache).load(&bytes, name).unwrap();
            assert_eq!(p.info().compiled_from, CompiledFrom::DiskCache);
            cached.push(p.info().load_seconds);
            plugin = Some(p);
        }
        let plugin = Arc::new(plugin.unwrap());
        let mut rules = RuleSet::default();
        rules.push(plugin.clone());
        // One warm-up pass.
        run_pipeline(&rules, &input, 1000);
        let mut costs = Vec::new();
        let stats = plugin.stats();
        for _ in 0..rounds {
            let (nanos, records) = (
                stats.nanos.load(Ordering::Relaxed),
                stats.records.load(Ordering::Relaxed),
            );
            run_pipeline(&rules, &input, 1000);
            let nanos = stats.nanos.load(Ordering::Relaxed) - nanos;
            let records = stats.records.load(Ordering::Relaxed) - records;
            costs.push(nanos as f64 / records as f64);
        }
        let (lo, hi) = spread(&costs);
        let m = median(&mut costs);
        let peak = plugin.stats().peak_memory.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
        report.line(format!(
            "| `{name}` | {language} | {:.0} ms | {:.1} ms | {m:.0} | {lo:.0}–{hi:.0} | {peak:.1} MiB |",
            first.info().load_seconds * 1e3,
            median(&mut cached) * 1e3,
        ));
    }
    report.line("\nA cached load maps the compiled code (`--compile-cache`, on by default) and skips compilation; `streamhost inspect FILE` fills the cache ahead of a deploy.\n");
    let _ = std::fs::remove_dir_all(&cache);
}
