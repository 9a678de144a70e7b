//! Metrics and health against the real broker: after a run, the scraped
//! counters equal what the test counts in the output topics. The run
//! includes the JavaScript plugin, whose WASI stdout must reach the log.

use streamhost_testkit as support;

use std::collections::BTreeMap;
use std::time::Duration;

use streamhost::cmd::plugins::request;
use support::kafka::{Cluster, terminate};

/// The value of one sample line (`name{labels} value`) of a scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{scrape}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn scraped_counters_equal_what_the_topics_hold() {
    let cluster = Cluster::start("metrics", 2);
    let plugins = ["enrich", "trend", "anomaly", "jump-js"].map(support::plugin_path);
    let mut child = cluster.streamhost_with("streamhost", &plugins, &["--batch-size", "50"]);
    let admin = cluster.admin_addr("streamhost");
    assert_eq!(
        request(&admin, "GET", "/healthz", None, b"").unwrap().0,
        200
    );
    cluster.wait_log("streamhost", "Partitions assigned", Duration::from_secs(30));
    assert_eq!(request(&admin, "GET", "/readyz", None, b"").unwrap().0, 200);

    // 12 sensors, every 10th reading out of range, 7 malformed records.
    let mut records = Vec::new();
    for i in 0..1200 {
        let sensor = format!("sensor_{:02}", i % 12);
        let temperature = if i % 10 == 3 {
            47.0
        } else {
            20.0 + (i % 5) as f64
        };
        let v = serde_json::json!({"sensor_id": sensor, "timestamp": 1_795_500_000_000i64 + i * 1000,
            "temperature": temperature, "humidity": 50.0, "battery_level": 0.8});
        records.push((Some(sensor), v.to_string().into_bytes()));
    }
    for _ in 0..7 {
        records.push((Some("bad".to_string()), b"{not json".to_vec()));
    }
    let n = records.len();
    cluster.produce(&records).await;

    let enriched = cluster.read(&cluster.enriched, Duration::from_secs(60), |r| {
        r.len() >= 1200
    });
    let dead = cluster.read(&cluster.dlq, Duration::from_secs(30), |r| r.len() >= 7);
    // Alerts come from two rules; read until the count is stable.
    let alerts = cluster.read(&cluster.alerts, Duration::from_secs(3), |_| false);
    let scrape = {
        // The batch that produced the last outputs may still be updating
        // counters; wait until every input is counted.
        let t = std::time::Instant::now();
        loop {
            let (status, body) = request(&admin, "GET", "/metrics", None, b"").unwrap();
            assert_eq!(status, 200);
            let lag_zero = (0..2).all(|p| {
                let series = format!(
                    "streamhost_consumer_lag_records{{topic=\"{}\",partition=\"{p}\"}} 0",
                    cluster.input
                );
                body.lines().any(|l| l == series)
            });
            let done = sample(&body, "messages_processed_total") as usize >= n && lag_zero;
            if done || t.elapsed() > Duration::from_secs(15) {
                break body;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(terminate(&mut child).success());

    assert_eq!(sample(&scrape, "messages_processed_total") as usize, n);
    assert_eq!(
        sample(&scrape, "message_processing_seconds_count") as usize,
        n
    );
    let consumed: f64 = (0..2)
        .map(|p| {
            sample(
                &scrape,
                &format!(
                    "streamhost_records_consumed_total{{topic=\"{}\",partition=\"{p}\"}}",
                    cluster.input
                ),
            )
        })
        .sum();
    assert_eq!(consumed as usize, n);
    let produced = |topic: &str| {
        sample(
            &scrape,
            &format!("streamhost_records_produced_total{{topic=\"{topic}\"}}"),
        ) as usize
    };
    assert_eq!(produced(&cluster.enriched), enriched.len());
    assert_eq!(produced(&cluster.alerts), alerts.len());
    assert_eq!(produced(&cluster.dlq), dead.len());
    assert_eq!(
        sample(&scrape, "streamhost_dead_letters_total{reason=\"decode\"}") as usize,
        7
    );
    assert_eq!(sample(&scrape, "streamhost_window_keys") as usize, 12);
    for p in 0..2 {
        let lag = format!(
            "streamhost_consumer_lag_records{{topic=\"{}\",partition=\"{p}\"}}",
            cluster.input
        );
        assert_eq!(
            sample(&scrape, &lag),
            0.0,
            "everything consumed, so no lag on partition {p}"
        );
    }

    // Alerts by kind, counted in the topic.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for a in &alerts {
        for k in a.json()["anomalies"].as_array().unwrap() {
            *kinds.entry(k.as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(kinds["temperature_out_of_range"], 120);
    assert!(kinds["temperature_jump"] > 0, "{kinds:?}");
    for (kind, count) in &kinds {
        assert_eq!(
            sample(
                &scrape,
                &format!("streamhost_alerts_total{{kind=\"{kind}\"}}")
            ) as usize,
            *count,
            "{kind}"
        );
    }

    // Per-plugin call counters, labelled with the version.
    for (plugin, kind) in [
        ("enrich", "transform"),
        ("trend", "trend"),
        ("anomaly", "anomaly"),
        ("jump-js", "anomaly"),
    ] {
        let calls = sample(
            &scrape,
            &format!(
                "streamhost_plugin_calls_total{{plugin=\"{plugin}\",version=\"1.0.0\",kind=\"{kind}\"}}"
            ),
        );
        assert!(calls >= 1.0, "{plugin}: {calls}");
        let failures = sample(
            &scrape,
            &format!(
                "streamhost_plugin_failures_total{{plugin=\"{plugin}\",version=\"1.0.0\",kind=\"{kind}\"}}"
            ),
        );
        assert_eq!(failures, 0.0, "{plugin}");
    }

    // Every metric the Grafana dashboard queries is exported.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join("examples/grafana/streamhost.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let is_metric = word.starts_with("streamhost_") || word.starts_with("message");
                if is_metric {
                    assert!(
                        scrape.lines().any(|l| l.starts_with(word)),
                        "dashboard panel {:?} uses {word}, not exported",
                        panel["title"]
                    );
                }
            }
        }
    }

    // The JavaScript plugin's console.log went through WASI into the log.
    let log = cluster.log("streamhost");
    assert!(log.contains("jump-js 1.0.0: first batch of"), "{log}");
    assert!(log.contains("stream=\"stdout\""), "{log}");
}
