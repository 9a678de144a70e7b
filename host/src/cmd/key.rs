//! `streamhost key KEY`: what a running streamhost holds for one key, from
//! its admin API (`GET /keys/{key}`, `crate::ops::keys`), laid out for a
//! terminal: the partition and who holds it, the window's aggregates as a
//! small table, each declared window's, the newest readings, the open
//! alerts with how long each has fired, and table rows. `--json` prints
//! the answer as it came.

use serde_json::Value;

use super::plugins::request;

/// `streamhost key`: the key, and where the admin API is.
#[derive(clap::Args)]
pub struct Args {
    /// The key (as records carry it in the key field).
    pub key: String,
    /// The admin API's address.
    #[arg(long, env = "STREAMHOST_ADMIN", default_value = "127.0.0.1:9464")]
    pub admin: String,
    /// Bearer token, sent if given (reading needs none today).
    #[arg(long, env = "STREAMHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How many of the newest readings to show.
    #[arg(long, default_value_t = crate::ops::keys::DEFAULT_READINGS)]
    pub readings: usize,
    /// Print the admin API's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

/// Runs `streamhost key KEY` against the admin API.
pub fn main(args: Args) -> anyhow::Result<()> {
    let path = format!("/keys/{}?readings={}", encode(&args.key), args.readings);
    let (status, body) = request(&args.admin, "GET", &path, args.token.as_deref(), b"")?;
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    if status != 200 {
        anyhow::bail!("{status}: {}", value.get("error").unwrap_or(&value));
    }
    if args.json {
        out!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for line in render(&value, &args.admin) {
            out!("{line}");
        }
    }
    Ok(())
}

/// `text` percent-encoded as one path segment (RFC 3986 unreserved bytes
/// kept).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A number for a table: up to three decimals, trailing zeros dropped;
/// `-` for null (no value).
fn num(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => {
            let s = format!("{x:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

/// Milliseconds as a short duration: `45s`, `3m12s`, `2h5m`.
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Rows as columns, the first left-aligned and the others right-aligned.
fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|t| t.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(c, t)| {
                    if c == 0 {
                        format!("{t:<w$}", w = widths[c])
                    } else {
                        format!("{t:>w$}", w = widths[c])
                    }
                })
                .collect();
            format!("  {}", cells.join("  ").trim_end())
        })
        .collect()
}

/// The answer, as lines for a terminal.
pub fn render(v: &Value, admin: &str) -> Vec<String> {
    let mut out = Vec::new();
    let key = v["key"].as_str().unwrap_or_default();
    let topic = v["topic"].as_str().unwrap_or_default();
    let partitions = &v["partitioner"]["partitions"];
    let of = if partitions.is_null() {
        String::new()
    } else {
        format!(" of {partitions}")
    };
    let owned = v["owned"].as_bool().unwrap_or(false);
    let head = match (&v["partition"], owned) {
        (Value::Null, _) => format!("{key}: partition unknown ({topic})"),
        (p, true) => format!(
            "{key}: partition {p}{of} ({topic}), held here by worker {}",
            v["worker"]
        ),
        (p, false) => {
            format!("{key}: partition {p}{of} ({topic}, by murmur2), not held by this process")
        }
    };
    out.push(head);
    if let Some(note) = v["note"].as_str() {
        out.push(format!("  {note}"));
    }
    if !owned {
        out.extend(render_owner(v, key));
    }
    if v["window"].is_object() {
        out.extend(render_windows(v));
        out.extend(render_readings(v));
    }
    if owned {
        out.extend(render_alerts(&v["open_alerts"]));
    }
    for t in v["tables"].as_array().into_iter().flatten() {
        let row = match &t["row"] {
            Value::Null => "no row".to_string(),
            row => row.to_string(),
        };
        out.push(format!(
            "table {}: {row}",
            t["table"].as_str().unwrap_or_default()
        ));
    }
    if let Some(silent) = v["silent_workers"].as_array() {
        out.push(format!(
            "(workers {silent:?} did not answer in time, at {admin})"
        ));
    }
    out
}

fn render_owner(v: &Value, key: &str) -> Vec<String> {
    let owner = &v["owner"];
    let mut out = Vec::new();
    if owner.is_object() {
        out.push(format!(
            "owner: group member {} (client.id {:?}, host {})",
            owner["member_id"].as_str().unwrap_or_default(),
            owner["client_id"].as_str().unwrap_or_default(),
            owner["client_host"].as_str().unwrap_or_default(),
        ));
        if let Some(addr) = owner["admin"].as_str() {
            out.push(format!("  ask it: streamhost key {key:?} --admin {addr}"));
        }
        return out;
    }
    // No owner known: the members, and how to ask each.
    for m in v["members"].as_array().into_iter().flatten() {
        let me = if m["is_this_process"] == true {
            " (this process)"
        } else {
            ""
        };
        let partitions = match m["partitions"].as_array() {
            Some(ps) if !ps.is_empty() => format!("partitions {}", m["partitions"]),
            _ => "no assignment told".to_string(),
        };
        out.push(format!(
            "member {}{me}: {partitions}",
            m["member_id"].as_str().unwrap_or_default(),
        ));
        if let (Some(addr), "") = (m["admin"].as_str(), me) {
            out.push(format!("  ask it: streamhost key {key:?} --admin {addr}"));
        }
    }
    out
}

fn render_windows(v: &Value) -> Vec<String> {
    let w = &v["window"];
    let mut out = vec![format!(
        "window {}: {} readings, {} to {}",
        span(w["length_ms"].as_i64().unwrap_or(0)),
        w["count"],
        w["start"].as_str().unwrap_or_default(),
        w["end"].as_str().unwrap_or_default(),
    )];
    let mut rows = vec![vec![
        "field".into(),
        "mean".into(),
        "min".into(),
        "max".into(),
    ]];
    for (name, s) in w["fields"].as_object().into_iter().flatten() {
        rows.push(vec![
            name.clone(),
            num(&s["mean"]),
            num(&s["min"]),
            num(&s["max"]),
        ]);
    }
    out.extend(table(&rows));
    for d in v["declared"].as_array().into_iter().flatten() {
        let rules: Vec<&str> = d["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push(format!(
            "declared window {} ({}): {} readings",
            span(d["length_ms"].as_i64().unwrap_or(0)),
            if rules.is_empty() {
                "no rule now".to_string()
            } else {
                rules.join(", ")
            },
            d["count"]
        ));
        let fields = d["fields"].as_object();
        let aggs: Vec<String> = fields
            .and_then(|f| f.values().next())
            .and_then(Value::as_object)
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        let mut rows = vec![
            std::iter::once("field".to_string())
                .chain(aggs.clone())
                .collect(),
        ];
        for (name, a) in fields.into_iter().flatten() {
            rows.push(
                std::iter::once(name.clone())
                    .chain(aggs.iter().map(|k| num(&a[k])))
                    .collect(),
            );
        }
        out.extend(table(&rows));
    }
    out
}

fn render_readings(v: &Value) -> Vec<String> {
    let readings = v["readings"].as_array().cloned().unwrap_or_default();
    if readings.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = v["window"]["fields"]
        .as_object()
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default();
    let mut out = vec![format!("newest {} readings:", readings.len())];
    let mut rows = vec![
        std::iter::once("event time".to_string())
            .chain(names.clone())
            .collect(),
    ];
    for r in &readings {
        rows.push(
            std::iter::once(r["time"].as_str().unwrap_or_default().to_string())
                .chain(names.iter().map(|n| num(&r["values"][n])))
                .collect(),
        );
    }
    out.extend(table(&rows));
    out
}

fn render_alerts(open: &Value) -> Vec<String> {
    let open = open.as_array().cloned().unwrap_or_default();
    if open.is_empty() {
        return vec!["open alerts: none (or --alerts every-record)".into()];
    }
    let mut out = vec![format!("open alerts: {}", open.len())];
    for a in &open {
        let fired = a["last_ms"].as_i64().unwrap_or(0) - a["since_ms"].as_i64().unwrap_or(0);
        out.push(format!(
            "  [{}] {} {}: firing for {} of event time, since {} ({} suppressed): {}",
            a["severity"].as_str().unwrap_or_default(),
            a["rule"].as_str().unwrap_or_default(),
            a["kind"].as_str().unwrap_or_default(),
            span(fired),
            a["firing_since"].as_str().unwrap_or_default(),
            a["suppressed"],
            a["message"].as_str().unwrap_or_default(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_one_segment_and_numbers_read_well() {
        assert_eq!(encode("sensor_015"), "sensor_015");
        assert_eq!(encode("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(num(&serde_json::json!(21.5)), "21.5");
        assert_eq!(num(&serde_json::json!(3.0)), "3");
        assert_eq!(num(&serde_json::json!(0.123456)), "0.123");
        assert_eq!(num(&Value::Null), "-");
        assert_eq!(span(192_000), "3m12s");
        assert_eq!(span(7_500_000), "2h05m");
    }
}
