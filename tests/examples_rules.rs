//! The example rules of docs/rules-cookbook.md (`zscore` in Rust,
//! `crossover-py` in Python, `thresholds-js` in JavaScript), as built by
//! `cargo xtask plugins`, loaded with the host runtime: what each declares
//! with and without configuration, what it refuses, and its answers for
//! hand-made batches whose declared windows and table rows are computed
//! here from raw readings, the expected answers from the rule's definition.

use streamhost_testkit as support;

use streamhost::contract::{
    Aggregate, AggregateColumns, Batch, DeclaredWindow, Direction, FieldWindow, Needs, Severity,
    TableRows, TableSpec, WindowSpec, WindowView,
};
use streamhost::rules::runtime::{Kind, LoadError, Offer, Plugin, PluginConfig, Runtime};

/// The batches' fields, temperature second, so that a rule that takes the
/// wrong column or names the wrong field index shows it.
const FIELDS: [&str; 3] = ["humidity", "temperature", "battery_level"];
/// Index of `temperature` in `FIELDS`.
const T: usize = 1;

/// A runtime keeping compiled components in a folder of this test's under
/// `target/`: the Python and JavaScript components compile for tens of
/// seconds, once for all the tests rather than once per load.
fn runtime() -> Runtime {
    let cache = support::root().join("target/examples-rules-compiled");
    support::runtime()
        .with_disk_cache(&cache, 1 << 31)
        .expect("compile cache")
}

fn config(pairs: &[(&str, &str)]) -> PluginConfig {
    let mut c = PluginConfig::new();
    for (k, v) in pairs {
        c.set(k, v).unwrap();
    }
    c
}

/// The example `name` from target/plugins, loaded with `pairs`.
fn load(rt: &Runtime, name: &str, pairs: &[(&str, &str)]) -> Result<Plugin, LoadError> {
    let bytes = std::fs::read(support::plugin_path(name)).unwrap();
    rt.load_configured(&bytes, name, &config(pairs))
}

/// The message with which `name` refuses `pairs`.
fn refusal(rt: &Runtime, name: &str, pairs: &[(&str, &str)]) -> String {
    match load(rt, name, pairs) {
        Err(LoadError::Refused(m)) => m,
        Err(e) => panic!("{name} with {pairs:?}: not a refusal: {e}"),
        Ok(_) => panic!("{name} accepted {pairs:?}"),
    }
}

/// A batch of `temperatures` (NaN: absent), with `tables`.
fn batch(temperatures: &[f64], tables: Vec<TableRows>) -> Batch {
    let n = temperatures.len();
    let mut values = vec![vec![50.0; n], vec![0.9; n]];
    values.insert(T, temperatures.to_vec());
    Batch {
        len: n as u32,
        processing_time: 1_795_541_405_123,
        fields: FIELDS.iter().map(|s| s.to_string()).collect(),
        keys: Vec::new(),
        event_times: (0..n as i64)
            .map(|i| 1_795_541_400_000 + i * 1000)
            .collect(),
        values,
        json: Vec::new(),
        tables,
    }
}

/// A window view of `n` records with `declared` windows; the `--window`
/// statistics, which the examples do not read, are NaN.
fn view(n: usize, declared: Vec<DeclaredWindow>) -> WindowView {
    let nan = vec![f64::NAN; n];
    let field = FieldWindow {
        mean: nan.clone(),
        min: nan.clone(),
        max: nan.clone(),
        first: nan.clone(),
        last: nan,
        head: Vec::new(),
        tail: Vec::new(),
    };
    WindowView {
        starts: vec![0; n],
        ends: vec![0; n],
        counts: vec![1; n],
        k: 0,
        fields: vec![field; FIELDS.len()],
        declared,
    }
}

/// The temperatures present (not NaN) of a window.
fn present(window: &[f64]) -> Vec<f64> {
    window.iter().copied().filter(|v| !v.is_nan()).collect()
}

fn mean(window: &[f64]) -> f64 {
    let v = present(window);
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Population standard deviation, as the contract defines `stddev`.
fn stddev(window: &[f64]) -> f64 {
    let v = present(window);
    let m = mean(window);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
}

/// One declared window over one field: `aggregates` of each record's
/// `windows[i]` (its readings, the record's own last).
fn declared(windows: &[Vec<f64>], aggregates: &[Aggregate]) -> DeclaredWindow {
    let columns = aggregates
        .iter()
        .map(|a| {
            windows
                .iter()
                .map(|w| match a {
                    Aggregate::Count => present(w).len() as f64,
                    Aggregate::Mean => mean(w),
                    Aggregate::Stddev => stddev(w),
                    other => panic!("no example declares {other:?}"),
                })
                .collect()
        })
        .collect();
    DeclaredWindow {
        counts: windows.iter().map(|w| w.len() as u32).collect(),
        fields: vec![AggregateColumns { columns }],
    }
}

fn temperature_window(length_ms: u32, aggregates: Vec<Aggregate>) -> WindowSpec {
    WindowSpec {
        length_ms,
        fields: vec!["temperature".into()],
        aggregates,
    }
}

// ---------------------------------------------------------------- zscore --

#[test]
fn zscore_declares_its_window_from_configuration_and_refuses_bad_values() {
    let rt = runtime();
    let p = load(&rt, "zscore", &[]).unwrap();
    let info = p.info();
    assert_eq!(
        (info.name.as_str(), info.version.as_str(), p.kind()),
        ("zscore", "1.0.0", Kind::Anomaly)
    );
    assert_eq!(info.needs, Needs::empty());
    let aggregates = vec![Aggregate::Count, Aggregate::Mean, Aggregate::Stddev];
    assert_eq!(
        info.windows,
        [temperature_window(300_000, aggregates.clone())]
    );
    assert!(info.tables.is_empty());

    let p = load(&rt, "zscore", &[("window_ms", "60000"), ("z_max", "2.5")]).unwrap();
    assert_eq!(p.info().rule_version, "1.0.0");
    assert_eq!(p.info().windows, [temperature_window(60_000, aggregates)]);

    assert_eq!(
        refusal(&rt, "zscore", &[("z_max", "abc")]),
        r#"z_max "abc" is not a number"#
    );
    assert_eq!(
        refusal(&rt, "zscore", &[("window_ms", "5m")]),
        r#"window_ms "5m" is not a number"#
    );
    assert_eq!(
        refusal(&rt, "zscore", &[("min_count", "ten")]),
        r#"min_count "ten" is not a number"#
    );
    assert_eq!(
        refusal(&rt, "zscore", &[("window_ms", "0")]),
        "window_ms 0 is not a whole number of milliseconds from 1 to 604800000 (7 days)"
    );
    assert_eq!(
        refusal(&rt, "zscore", &[("z_max", "0")]),
        "z_max 0 is not above 0"
    );
    assert_eq!(
        refusal(&rt, "zscore", &[("min_count", "1")]),
        "min_count 1 is not a whole number of at least 2"
    );
}

/// Each record's window (its readings, its own last) and its reading.
fn zscore_cases() -> (Vec<Vec<f64>>, Vec<f64>) {
    // 19 readings alternating 19 and 21, then the record's own.
    let steady: Vec<f64> = (0..19)
        .map(|i| if i % 2 == 0 { 19.0 } else { 21.0 })
        .collect();
    let with = |x: f64| [steady.clone(), vec![x]].concat();
    let windows = vec![
        with(30.0),                                // far above
        with(12.0),                                // far below
        with(22.0),                                // within
        vec![20.0, 20.0, 21.0, 19.0, 35.0],        // far, but 5 readings
        vec![20.0; 12],                            // no spread
        [steady.clone(), vec![f64::NAN]].concat(), // no reading
    ];
    let readings = windows.iter().map(|w| *w.last().unwrap()).collect();
    (windows, readings)
}

/// The alerts `p` raises for the cases, as (severity, message).
fn zscore_alerts(p: &Plugin) -> Vec<Vec<(Severity, String)>> {
    let (windows, readings) = zscore_cases();
    let declared = declared(
        &windows,
        &[Aggregate::Count, Aggregate::Mean, Aggregate::Stddev],
    );
    p.detect(
        &batch(&readings, Vec::new()),
        &view(readings.len(), vec![declared]),
    )
    .unwrap()
    .into_iter()
    .map(|r| {
        r.unwrap()
            .into_iter()
            .map(|a| {
                assert_eq!(
                    (a.rule.as_str(), a.kind.as_str()),
                    ("zscore", "temperature_zscore")
                );
                (a.severity, a.message)
            })
            .collect()
    })
    .collect()
}

/// Which cases call for an alert by the definition: at least `min_count`
/// temperatures and |x - mean| / stddev above `z_max`.
fn zscore_expected(z_max: f64, min_count: usize) -> Vec<bool> {
    let (windows, readings) = zscore_cases();
    windows
        .iter()
        .zip(readings)
        .map(|(w, x)| present(w).len() >= min_count && ((x - mean(w)) / stddev(w)).abs() > z_max)
        .collect()
}

#[test]
fn zscore_alerts_beyond_z_max_once_the_window_is_full_enough() {
    let rt = runtime();
    let alerts = zscore_alerts(&load(&rt, "zscore", &[]).unwrap());
    let raised: Vec<bool> = alerts.iter().map(|a| !a.is_empty()).collect();
    assert_eq!(raised, zscore_expected(3.0, 10));
    assert_eq!(raised, [true, true, false, false, false, false]);
    assert_eq!(
        alerts[0],
        [(
            Severity::Medium,
            "temperature 30 is 3.98 standard deviations above the 5 min mean 20.45 (stddev 2.40 over 20 readings)"
                .to_string()
        )]
    );
    assert_eq!(
        alerts[1],
        [(
            Severity::Medium,
            "temperature 12 is 3.80 standard deviations below the 5 min mean 19.55 (stddev 1.99 over 20 readings)"
                .to_string()
        )]
    );

    // Configured: a shorter window (named in the message), a lower z_max
    // and fewer readings needed, so that the 5-reading window alerts too.
    let p = load(
        &rt,
        "zscore",
        &[("window_ms", "90000"), ("z_max", "1.5"), ("min_count", "5")],
    )
    .unwrap();
    let alerts = zscore_alerts(&p);
    let raised: Vec<bool> = alerts.iter().map(|a| !a.is_empty()).collect();
    assert_eq!(raised, zscore_expected(1.5, 5));
    assert_eq!(raised, [true, true, true, true, false, false]);
    assert_eq!(
        alerts[3][0].1,
        "temperature 35 is 1.99 standard deviations above the 90 s mean 23.00 (stddev 6.03 over 5 readings)"
    );
}

// ---------------------------------------------------------- crossover-py --

#[test]
fn crossover_declares_two_windows_and_refuses_a_short_one_not_shorter() {
    let rt = runtime();
    let p = load(&rt, "crossover-py", &[]).unwrap();
    let info = p.info();
    assert_eq!(
        (info.name.as_str(), info.version.as_str(), p.kind()),
        ("crossover", "1.0.0", Kind::Trend)
    );
    assert_eq!(
        info.windows,
        [
            temperature_window(60_000, vec![Aggregate::Mean]),
            temperature_window(900_000, vec![Aggregate::Mean]),
        ]
    );
    assert!(info.tables.is_empty());

    let p = load(
        &rt,
        "crossover-py",
        &[("short_ms", "120000"), ("long_ms", "3600000")],
    )
    .unwrap();
    assert_eq!(
        p.info().windows,
        [
            temperature_window(120_000, vec![Aggregate::Mean]),
            temperature_window(3_600_000, vec![Aggregate::Mean]),
        ]
    );

    assert_eq!(
        refusal(&rt, "crossover-py", &[("short_ms", "900000")]),
        "short_ms 900000 is not below long_ms 900000"
    );
    assert_eq!(
        refusal(&rt, "crossover-py", &[("long_ms", "30000")]),
        "short_ms 60000 is not below long_ms 30000"
    );
    assert_eq!(
        refusal(&rt, "crossover-py", &[("margin", "wide")]),
        r#"margin "wide" is not a number"#
    );
    assert_eq!(
        refusal(&rt, "crossover-py", &[("margin", "-1")]),
        "margin -1 is negative"
    );
    assert_eq!(
        refusal(&rt, "crossover-py", &[("long_ms", "604800001")]),
        "long_ms 604800001 is not a whole number of milliseconds from 1 to 604800000 (7 days)"
    );
}

/// Each record's short and long windows (the short one is the newest
/// readings of the long one).
fn crossover_cases() -> Vec<(Vec<f64>, Vec<f64>)> {
    let long = |older: &[f64], short: &[f64]| [older, short].concat();
    let cases: Vec<(Vec<f64>, Vec<f64>)> = vec![
        (vec![22.0, 22.4], vec![20.0; 10]), // warming: +2.2 mean to mean
        (vec![17.0, 17.5], vec![20.0; 10]), // cooling
        (vec![20.3, 20.1], vec![20.0; 10]), // within the margin
        (vec![20.5], vec![19.25, 20.25]),   // short 20.5, long exactly 20: on the margin
        (vec![1.0], vec![-2.0, 1.0]),       // long mean exactly 0: change NaN
        (vec![f64::NAN], vec![f64::NAN, f64::NAN]), // no temperature at all
    ];
    cases
        .into_iter()
        .map(|(short, older)| (short.clone(), long(&older, &short)))
        .collect()
}

/// The answers `p` gives for the cases: (field, direction, change).
fn crossover_answers(p: &Plugin) -> Vec<Option<(u32, Direction, f64)>> {
    let cases = crossover_cases();
    let short: Vec<Vec<f64>> = cases.iter().map(|c| c.0.clone()).collect();
    let long: Vec<Vec<f64>> = cases.iter().map(|c| c.1.clone()).collect();
    let readings: Vec<f64> = short.iter().map(|w| *w.last().unwrap()).collect();
    let windows = vec![
        declared(&short, &[Aggregate::Mean]),
        declared(&long, &[Aggregate::Mean]),
    ];
    p.trend(
        &batch(&readings, Vec::new()),
        &view(readings.len(), windows),
    )
    .unwrap()
    .into_iter()
    .map(|r| r.unwrap().map(|t| (t.field, t.direction, t.change)))
    .collect()
}

/// The answers by the definition: short mean above the long one by more
/// than `margin` is increasing, below by more decreasing, else stable;
/// change (short - long) / |long|; nothing without both means.
fn crossover_expected(margin: f64) -> Vec<Option<(u32, Direction, f64)>> {
    crossover_cases()
        .iter()
        .map(|(short, long)| {
            let (s, l) = (mean(short), mean(long));
            if s.is_nan() || l.is_nan() {
                return None;
            }
            let direction = if s - l > margin {
                Direction::Increasing
            } else if l - s > margin {
                Direction::Decreasing
            } else {
                Direction::Stable
            };
            let change = if l == 0.0 {
                f64::NAN
            } else {
                (s - l) / l.abs()
            };
            Some((T as u32, direction, change))
        })
        .collect()
}

/// `a` and `b` equal, NaN equal to NaN.
fn same(a: &[Option<(u32, Direction, f64)>], b: &[Option<(u32, Direction, f64)>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (None, None) => true,
            (Some(x), Some(y)) => {
                x.0 == y.0 && x.1 == y.1 && (x.2 == y.2 || (x.2.is_nan() && y.2.is_nan()))
            }
            _ => false,
        })
}

#[test]
fn crossover_compares_the_short_mean_with_the_long_one() {
    let rt = runtime();
    let answers = crossover_answers(&load(&rt, "crossover-py", &[]).unwrap());
    let expected = crossover_expected(0.5);
    assert!(same(&answers, &expected), "{answers:?}\n!= {expected:?}");
    let directions: Vec<Option<Direction>> = answers.iter().map(|a| a.map(|a| a.1)).collect();
    assert_eq!(
        directions,
        [
            Some(Direction::Increasing),
            Some(Direction::Decreasing),
            Some(Direction::Stable),
            Some(Direction::Stable),
            Some(Direction::Increasing),
            None,
        ]
    );
    assert!(answers[4].unwrap().2.is_nan());

    // A wider margin turns the warming and the cooling stable.
    let p = load(&rt, "crossover-py", &[("margin", "2.5")]).unwrap();
    let answers = crossover_answers(&p);
    let expected = crossover_expected(2.5);
    assert!(same(&answers, &expected), "{answers:?}\n!= {expected:?}");
    assert_eq!(answers[0].unwrap().1, Direction::Stable);
    assert_eq!(answers[1].unwrap().1, Direction::Stable);
}

// --------------------------------------------------------- thresholds-js --

#[test]
fn thresholds_declares_its_table_and_refuses_bad_defaults() {
    let rt = runtime();
    let p = load(&rt, "thresholds-js", &[]).unwrap();
    let info = p.info();
    assert_eq!(
        (info.name.as_str(), info.version.as_str(), p.kind()),
        ("thresholds", "1.0.0", Kind::Anomaly)
    );
    assert!(info.windows.is_empty());
    assert_eq!(
        info.tables,
        [TableSpec {
            name: "thresholds".into(),
            fields: vec!["temperature_min".into(), "temperature_max".into()],
            json: false,
        }]
    );
    assert_eq!(
        refusal(&rt, "thresholds-js", &[("temperature_max", "hot")]),
        r#"temperature_max "hot" is not a number"#
    );
    assert_eq!(
        refusal(&rt, "thresholds-js", &[("temperature_min", "")]),
        r#"temperature_min "" is not a number"#
    );
    assert_eq!(
        refusal(&rt, "thresholds-js", &[("temperature_min", "50")]),
        "temperature_min 50 is not below temperature_max 40"
    );
}

/// Rows of the table (temperature_min, temperature_max; NaN: the row lacks
/// it): a freezer giving only its maximum, a greenhouse giving both, and a
/// row giving neither.
const ROWS: [(f64, f64); 3] = [(f64::NAN, 8.0), (10.0, 30.0), (f64::NAN, f64::NAN)];

/// Each record's temperature and the row it sees.
const READINGS: [(f64, Option<u32>); 9] = [
    (9.5, Some(0)),      // above the freezer's 8
    (8.0, Some(0)),      // on it: nothing
    (-1.0, Some(0)),     // below the default minimum: the row lacks one
    (41.0, None),        // no row: above the default 40
    (9.0, Some(1)),      // below the greenhouse's 10
    (31.0, Some(1)),     // above its 30
    (35.0, Some(2)),     // an empty row: the defaults, nothing
    (f64::NAN, Some(0)), // no temperature: nothing
    (20.0, None),        // nothing
];

fn thresholds_messages(p: &Plugin) -> Vec<Vec<String>> {
    let table = TableRows {
        row_of: READINGS.iter().map(|r| r.1).collect(),
        columns: vec![
            ROWS.iter().map(|r| r.0).collect(),
            ROWS.iter().map(|r| r.1).collect(),
        ],
        json: Vec::new(),
    };
    let temperatures: Vec<f64> = READINGS.iter().map(|r| r.0).collect();
    let b = batch(&temperatures, vec![table]);
    p.detect(&b, &view(b.len as usize, Vec::new()))
        .unwrap()
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|a| {
                    assert_eq!(
                        (a.rule.as_str(), a.kind.as_str(), a.severity),
                        ("thresholds", "temperature_out_of_range", Severity::High)
                    );
                    a.message
                })
                .collect()
        })
        .collect()
}

/// The messages by the definition: each limit the row's when it gives one,
/// else the default; strictly above the maximum or below the minimum.
fn thresholds_expected(min: f64, max: f64) -> Vec<Vec<String>> {
    READINGS
        .iter()
        .map(|&(t, row)| {
            let pick = |own: Option<f64>, default: f64| match own {
                Some(v) if !v.is_nan() => (v, "thresholds table"),
                _ => (default, "default"),
            };
            let low = pick(row.map(|r| ROWS[r as usize].0), min);
            let high = pick(row.map(|r| ROWS[r as usize].1), max);
            if t > high.0 {
                vec![format!("temperature {t} is above {} ({})", high.0, high.1)]
            } else if t < low.0 {
                vec![format!("temperature {t} is below {} ({})", low.0, low.1)]
            } else {
                Vec::new()
            }
        })
        .collect()
}

#[test]
fn thresholds_use_the_rows_limits_and_the_defaults_where_it_has_none() {
    let rt = runtime();
    let messages = thresholds_messages(&load(&rt, "thresholds-js", &[]).unwrap());
    assert_eq!(messages, thresholds_expected(0.0, 40.0));
    assert_eq!(
        messages[0],
        ["temperature 9.5 is above 8 (thresholds table)"]
    );
    assert_eq!(messages[2], ["temperature -1 is below 0 (default)"]);
    assert_eq!(
        messages.iter().filter(|m| !m.is_empty()).count(),
        5,
        "{messages:?}"
    );

    // Configured defaults change only the records without a limit of their own.
    let p = load(
        &rt,
        "thresholds-js",
        &[("temperature_min", "-5"), ("temperature_max", "30")],
    )
    .unwrap();
    let messages = thresholds_messages(&p);
    assert_eq!(messages, thresholds_expected(-5.0, 30.0));
    assert_eq!(messages[2], Vec::<String>::new());
    assert_eq!(messages[6], ["temperature 35 is above 30 (default)"]);
    assert_eq!(
        messages[0],
        ["temperature 9.5 is above 8 (thresholds table)"]
    );
}

// ----------------------------------------------------------------- host --

/// The declarations are what a host offering the usual fields and a
/// `thresholds` table accepts, and a host without the table refuses
/// `thresholds` saying how to give it.
#[test]
fn a_host_accepts_the_declarations_it_can_serve() {
    let fields = ["temperature", "humidity", "pressure", "battery_level"];
    let offer = |tables: &[&str]| Offer {
        fields: Some(fields.iter().map(|s| s.to_string()).collect()),
        tables: Some(tables.iter().map(|s| s.to_string()).collect()),
    };
    let rt = runtime().with_offer(offer(&["thresholds"]));
    for name in ["zscore", "crossover-py", "thresholds-js"] {
        load(&rt, name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let rt = runtime().with_offer(offer(&[]));
    match load(&rt, "thresholds-js", &[]) {
        Err(LoadError::Declaration(m)) => assert!(m.contains("--table thresholds=TOPIC"), "{m}"),
        Err(e) => panic!("not a declaration error: {e}"),
        Ok(_) => panic!("loaded without its table"),
    }
    load(&rt, "zscore", &[]).unwrap();
}
