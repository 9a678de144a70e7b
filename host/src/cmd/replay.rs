//! `streamhost replay`: dead letters run again through the current plugins
//! (or given ones), once the cause of their failure is fixed.
//!
//! For each dead letter chosen (by reason, time and attempts), the original
//! record is read again from the input topic at its source position, and
//! judged against the window it would have seen: the windows of its input
//! partition are rebuilt from the input up to that record, exactly as they
//! are when a partition is assigned (`crate::rebuild`), so its window
//! statistics equal those of an uninterrupted run. Dead letters of one
//! partition are taken in offset order; between two that are close, the
//! input is replayed forward rather than rebuilt again.
//!
//! When the input no longer holds the span the window needs (retention
//! deleted it), the window is rebuilt from what remains and the outputs say
//! so (`streamhost.replay.window: partial`); when the input no longer holds
//! the record itself, the dead letter's own copy of it is processed, with
//! no window history (also `partial`). A reference dead letter (its
//! original was too large to copy) whose record is gone fails again as
//! `replay-source-gone`.
//!
//! Outputs of records that now succeed go to the enriched and alerts topics
//! with a header `streamhost.replayed-from: TOPIC/PARTITION/OFFSET` (the
//! dead letter's position) and, in JSON, a member `"replayed_from":
//! {"topic", "partition", "offset", "attempt"}`. Records that fail again go
//! back to the dead-letter topic with `streamhost.attempt` one higher.
//!
//! Progress is a consumer group of the replay's own (`--group`, by default
//! `streamhost-replay.TOPIC` and the reasons chosen), committed once the
//! outputs of a chunk are delivered: running the same replay again starts
//! where the last one ended, so nothing is produced twice (a crash between
//! delivery and commit repeats at most one chunk). Dead letters a filter
//! skipped count as done for that group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Format, Settings};
use crate::kafka::dead_letters::{DeadLetter, DeadLetterReader};
use crate::kafka::producer::KafkaSink;
use crate::kafka::span::PartitionReader;
use crate::pipeline::Pipeline;
use crate::rebuild::Source as _;
use crate::rebuild::rebuild;
use crate::record::{Dest, InRecord, OutRecord, Reason, headers};
use crate::rules::RuleSet;
use crate::rules::registry::Registry;

/// Header naming the dead letter an output was replayed from.
pub const REPLAYED_FROM: &str = "streamhost.replayed-from";
/// Header counting how many times a record was tried (a first dead letter
/// has none: attempt 1).
pub const ATTEMPT: &str = "streamhost.attempt";
/// Header on outputs whose window could not be rebuilt in full.
pub const WINDOW: &str = "streamhost.replay.window";

/// Dead letters processed at once (then delivered and committed).
const CHUNK: usize = 5000;
/// Offsets between two dead letters of a partition below which the input
/// is replayed forward instead of rebuilt.
const FORWARD: i64 = 200_000;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayArgs {
    /// The dead-letter topic to read.
    pub from: String,
    /// Only these reasons (`plugin-error`...); all when empty.
    pub reasons: Vec<String>,
    /// Only dead letters written at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// The progress group; `None` derives one from the topic and reasons.
    pub group: Option<String>,
    /// Dead letters already tried this many times are skipped.
    pub max_attempts: u32,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl ReplayArgs {
    /// The consumer group keeping the progress: `--replay-group`, else
    /// one named after the topic and the reasons.
    pub fn group(&self) -> String {
        self.group.clone().unwrap_or_else(|| {
            let mut reasons = self.reasons.clone();
            reasons.sort();
            if reasons.is_empty() {
                format!("streamhost-replay.{}", self.from)
            } else {
                format!("streamhost-replay.{}.{}", self.from, reasons.join("+"))
            }
        })
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReplaySummary {
    /// The dead-letter topic read.
    pub topic: String,
    /// The consumer group keeping the progress.
    pub group: String,
    /// Dead letters read.
    pub read: u64,
    /// Records that now succeed (enriched, or dropped by a transform).
    pub resolved: u64,
    /// Records that failed again, by their new reason.
    pub failed_again: BTreeMap<String, u64>,
    /// Enriched records produced.
    pub enriched: u64,
    /// Alert records produced.
    pub alerts: u64,
    /// Dead letters not replayed: another reason, before `--since`,
    /// attempts used up, or another input topic.
    pub skipped: BTreeMap<String, u64>,
    /// Replayed records whose window could not be rebuilt in full.
    pub partial_windows: u64,
    /// Replayed dead letters by their original reason.
    pub by_reason: BTreeMap<String, u64>,
}

/// One dead letter chosen for replay.
struct Chosen {
    letter: DeadLetter,
    source_partition: i32,
    source_offset: i64,
    attempt: u32,
}

/// Runs a replay to the end of the dead-letter topic as it was at start.
pub fn run(settings: &Settings, args: &ReplayArgs) -> anyhow::Result<ReplaySummary> {
    if settings.output_format == Format::Avro {
        tracing::info!("Avro outputs carry the replayed-from header only, not a member.");
    }
    let runtime = Arc::new(super::wiring::runtime(settings)?);
    let registry = Registry::start_pinned(
        runtime,
        &settings.plugins,
        settings.plugin_dir.as_deref(),
        settings.plugin_config.0.clone(),
    )?;
    let rules = registry.current();
    let mut config =
        super::wiring::with_formats(super::wiring::pipeline_config(settings), settings)?;
    let tables = super::wiring::start_tables(settings).context("loading the reference tables")?;
    config.tables = super::wiring::read_tables(&tables);
    // A replayed dead letter is one record out of its stream's order: it
    // has no place in an alert's lifecycle, so its alerts are written as
    // they are raised, whatever `--alerts` says.
    config.alerts = crate::lifecycle::AlertMode::EveryRecord;
    let mut pipeline = Pipeline::new(config);
    // Fresh windows: each replayed record's partition is rebuilt anyway.
    let _ = pipeline.declare(&rules);
    let input = PartitionReader::new(settings).context("opening the input topic")?;
    let sink = KafkaSink::new(settings).context("creating the producer")?;
    let group = args.group();
    let mut reader = DeadLetterReader::open(settings, &args.from, &group)
        .map_err(crate::kafka::explain)
        .with_context(|| format!("opening the dead-letter topic {}", args.from))?;

    let mut summary = ReplaySummary {
        topic: args.from.clone(),
        group: group.clone(),
        ..ReplaySummary::default()
    };
    let total = reader.remaining();
    let bar = if args.progress {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying {pos}/{len} dead letters [{bar:40}] {per_sec} {eta} left",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    loop {
        let letters = reader
            .next_chunk(CHUNK)
            .map_err(crate::kafka::explain)
            .context("reading dead letters")?;
        if letters.is_empty() {
            break;
        }
        bar.inc(letters.len() as u64);
        summary.read += letters.len() as u64;
        let chosen = choose(letters, args, settings, &mut summary);
        let outputs = replay_chunk(
            &mut pipeline,
            &rules,
            &input,
            settings,
            &args.from,
            chosen,
            &mut summary,
        )?;
        deliver(&sink, &outputs)?;
        reader
            .commit()
            .map_err(crate::kafka::explain)
            .context("committing the replay's progress")?;
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Keeps the dead letters the filters select; counts the others.
fn choose(
    letters: Vec<DeadLetter>,
    args: &ReplayArgs,
    settings: &Settings,
    summary: &mut ReplaySummary,
) -> Vec<Chosen> {
    let mut out = Vec::new();
    for letter in letters {
        let h = |name: &str| letter.headers.get(name).map(String::as_str);
        let skip = |summary: &mut ReplaySummary, why: &str| {
            *summary.skipped.entry(why.to_string()).or_default() += 1;
        };
        let reason = h(headers::REASON).unwrap_or("").to_string();
        if h(headers::TOPIC) != Some(settings.input_topic.as_str()) {
            skip(summary, "another input topic");
            continue;
        }
        if !args.reasons.is_empty() && !args.reasons.contains(&reason) {
            skip(summary, "another reason");
            continue;
        }
        if let (Some(since), Some(t)) = (args.since_ms, letter.timestamp)
            && t < since
        {
            skip(summary, "before --since");
            continue;
        }
        let attempt: u32 = h(ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(1);
        if attempt >= args.max_attempts {
            skip(summary, "attempts used up");
            continue;
        }
        let position = h(headers::PARTITION)
            .and_then(|p| p.parse().ok())
            .zip(h(headers::OFFSET).and_then(|o| o.parse().ok()));
        let Some((source_partition, source_offset)) = position else {
            skip(summary, "no source position");
            continue;
        };
        *summary.by_reason.entry(reason).or_default() += 1;
        out.push(Chosen {
            letter,
            source_partition,
            source_offset,
            attempt,
        });
    }
    out
}

/// Replays the chosen dead letters; returns the outputs to produce.
///
/// Per input partition, in offset order: dead letters whose records the
/// input no longer holds are processed from their own copies; the others
/// fall into spans whose dead letters are at most `FORWARD` offsets apart.
/// A span costs one rebuild up to its first record and one sequential read
/// to its last: the records between go into the windows only, the
/// dead-lettered ones are processed as they come.
fn replay_chunk(
    pipeline: &mut Pipeline,
    rules: &RuleSet,
    input: &PartitionReader,
    settings: &Settings,
    dlq: &str,
    chosen: Vec<Chosen>,
    summary: &mut ReplaySummary,
) -> anyhow::Result<Vec<OutRecord>> {
    let margin = settings.rebuild_margin.as_millis() as i64;
    let mut outputs = Vec::new();
    // By partition, then offset: the dead letters of each source record.
    let mut by_source: BTreeMap<i32, BTreeMap<i64, Vec<Chosen>>> = BTreeMap::new();
    for c in chosen {
        by_source
            .entry(c.source_partition)
            .or_default()
            .entry(c.source_offset)
            .or_default()
            .push(c);
    }
    for (p, mut letters) in by_source {
        let (low, high) = input
            .watermarks(p)
            .map_err(crate::kafka::explain)
            .with_context(|| format!("reading the watermarks of input partition {p}"))?;
        // Records the input no longer holds: the dead letters' own copies.
        let gone: Vec<i64> = letters
            .keys()
            .copied()
            .filter(|o| !(low..high).contains(o))
            .collect();
        for o in gone {
            let cs = letters.remove(&o).expect("listed above");
            pipeline.drop_partition(p);
            let replay = Replayed {
                dlq,
                chosen: &cs,
                partial: true,
            };
            replay.from_copy(pipeline, rules, settings, low, high, &mut outputs, summary);
        }
        // Spans of close dead letters.
        let offsets: Vec<i64> = letters.keys().copied().collect();
        let mut spans: Vec<(i64, i64)> = Vec::new();
        for o in offsets {
            match spans.last_mut() {
                Some((_, last)) if o - *last <= FORWARD => *last = o,
                _ => spans.push((o, o)),
            }
        }
        for (first, last) in spans {
            let Some(head) = read_one(input, p, first)? else {
                continue;
            };
            let now_ms = chrono::Utc::now().timestamp_millis();
            let reference = head.timestamp.unwrap_or(now_ms);
            let rebuilt = rebuild(
                input,
                pipeline,
                &rules.transform,
                p,
                first,
                reference,
                margin,
            )
            .map_err(crate::kafka::explain)
            .with_context(|| format!("rebuilding the windows of input partition {p}"))?;
            let partial = !rebuilt.complete;
            let mut between: Vec<InRecord> = Vec::new();
            input
                .read(p, first, last + 1, 4096, &mut |chunk| {
                    for record in chunk {
                        let Some(cs) = letters.get(&record.offset) else {
                            between.push(record);
                            continue;
                        };
                        if !between.is_empty() {
                            pipeline.rebuild(
                                &rules.transform,
                                std::mem::take(&mut between),
                                now_ms,
                            );
                        }
                        let replay = Replayed {
                            dlq,
                            chosen: cs,
                            partial,
                        };
                        replay.process(pipeline, rules, record, &mut outputs, summary);
                    }
                })
                .map_err(crate::kafka::explain)
                .with_context(|| format!("reading input partition {p} from {first} to {last}"))?;
        }
    }
    Ok(outputs)
}

/// The dead letters of one source record, being replayed.
struct Replayed<'a> {
    dlq: &'a str,
    /// Every dead letter of the record (one, unless it was dead-lettered
    /// again by an earlier replay and both are read now): it is processed
    /// once, its outputs marked with the first.
    chosen: &'a [Chosen],
    /// Whether its window could not be rebuilt in full.
    partial: bool,
}

impl Replayed<'_> {
    /// Processes the record against the windows as they stand.
    fn process(
        &self,
        pipeline: &mut Pipeline,
        rules: &RuleSet,
        record: InRecord,
        outputs: &mut Vec<OutRecord>,
        summary: &mut ReplaySummary,
    ) {
        let out = pipeline.process(rules, vec![record], chrono::Utc::now().timestamp_millis());
        if out.tally.dead_letters() > 0 {
            for (reason, n) in &out.tally.dead_by_reason {
                *summary.failed_again.entry(reason.to_string()).or_default() += n;
            }
        } else {
            summary.resolved += 1;
        }
        summary.enriched += out.tally.enriched;
        summary.alerts += out.tally.alert_records;
        summary.partial_windows += u64::from(self.partial);
        let repeats = self.chosen.len() as u64 - 1;
        if repeats > 0 {
            *summary
                .skipped
                .entry("the same record as another dead letter".into())
                .or_default() += repeats;
        }
        for mut r in out.records {
            mark(&mut r, self.dlq, &self.chosen[0], self.partial);
            outputs.push(r);
        }
    }

    /// The input no longer holds the record: its dead letter's copy, with
    /// no window history; a reference dead letter fails again.
    #[allow(clippy::too_many_arguments)]
    fn from_copy(
        &self,
        pipeline: &mut Pipeline,
        rules: &RuleSet,
        settings: &Settings,
        low: i64,
        high: i64,
        outputs: &mut Vec<OutRecord>,
        summary: &mut ReplaySummary,
    ) {
        let c = &self.chosen[0];
        let (p, o) = (c.source_partition, c.source_offset);
        if !c.letter.headers.contains_key(headers::ORIGINAL_BYTES) {
            let record = InRecord {
                partition: p,
                offset: o,
                timestamp: c.letter.timestamp,
                key: c.letter.key.clone(),
                payload: Some(c.letter.payload.clone()),
            };
            return self.process(pipeline, rules, record, outputs, summary);
        }
        let failure = crate::record::Failure {
            reason: Reason::ReplaySourceGone,
            message: format!(
                "input partition {p} no longer holds offset {o} (it holds {low}..{high}), and the dead letter has only the first bytes of the record"
            ),
            plugin: None,
        };
        let source = crate::record::SourcePos {
            topic: &settings.input_topic,
            partition: p,
            offset: o,
        };
        let mut dead = crate::output::dead_letter(
            source,
            c.letter.key.clone(),
            c.letter.payload.clone(),
            &failure,
        );
        mark(&mut dead, self.dlq, c, self.partial);
        *summary
            .failed_again
            .entry(Reason::ReplaySourceGone.to_string())
            .or_default() += 1;
        outputs.push(dead);
    }
}

/// Reads the one record at `offset` of input partition `partition`.
fn read_one(
    input: &PartitionReader,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Option<InRecord>> {
    let mut found = None;
    input
        .read(partition, offset, offset + 1, 1, &mut |mut chunk| {
            found = chunk.pop();
        })
        .map_err(crate::kafka::explain)
        .with_context(|| format!("reading input partition {partition} at {offset}"))?;
    Ok(found.filter(|r| r.offset == offset))
}

/// Marks an output of a replayed record: the header, and in a JSON output
/// the `replayed_from` member; a dead letter gets the next attempt count.
fn mark(r: &mut OutRecord, dlq: &str, c: &Chosen, partial: bool) {
    let from = format!("{dlq}/{}/{}", c.letter.partition, c.letter.offset);
    r.headers.push((REPLAYED_FROM, from));
    if partial {
        r.headers.push((WINDOW, "partial".into()));
    }
    match r.dest {
        Dest::DeadLetter => r.headers.push((ATTEMPT, (c.attempt + 1).to_string())),
        Dest::Enriched | Dest::Alerts => {
            let member = format!(
                r#","replayed_from":{{"topic":{},"partition":{},"offset":{},"attempt":{}}}}}"#,
                serde_json::Value::String(dlq.to_string()),
                c.letter.partition,
                c.letter.offset,
                c.attempt + 1
            );
            // A JSON object's last byte is its closing brace; Avro output
            // (binary) keeps the header only.
            if r.payload.first() == Some(&b'{') && r.payload.last() == Some(&b'}') {
                r.payload.pop();
                if r.payload.len() > 1 {
                    r.payload.extend_from_slice(member.as_bytes());
                } else {
                    r.payload.extend_from_slice(&member.as_bytes()[1..]);
                }
            }
        }
    }
}

/// Produces the outputs and waits until every one is acknowledged.
fn deliver(sink: &KafkaSink, outputs: &[OutRecord]) -> anyhow::Result<()> {
    let deliveries = sink
        .send(outputs)
        .map_err(crate::kafka::explain)
        .context("producing the replay's outputs")?;
    for (delivery, origin) in deliveries {
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(crate::kafka::explain(e)).with_context(|| {
                    format!(
                        "delivering the {} output of input {}/{}",
                        origin.dest.name(),
                        origin.partition,
                        origin.offset
                    )
                });
            }
            Err(_) => anyhow::bail!("the producer was dropped before delivery"),
        }
    }
    crate::kafka::producer::flush(sink.producer(), Duration::from_secs(30));
    Ok(())
}

/// `streamhost replay`: which dead letters, and the settings.
#[derive(clap::Args)]
pub struct Args {
    /// The dead-letter topic to read. [default: the --dlq-topic]
    #[arg(long, value_name = "TOPIC")]
    pub from: Option<String>,
    /// Only dead letters with these reasons (comma-separated, e.g.
    /// plugin-error,plugin-trap). [default: all]
    #[arg(long, value_delimiter = ',', value_name = "REASONS")]
    pub reason: Vec<String>,
    /// Only dead letters written since this time: RFC 3339, or a
    /// duration ago (e.g. 2h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// The consumer group keeping the replay's progress.
    /// [default: streamhost-replay.TOPIC, plus the reasons]
    #[arg(long = "replay-group", value_name = "GROUP")]
    pub replay_group: Option<String>,
    /// Skip dead letters already tried this many times.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_attempts: u32,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The settings, as the main job takes them.
    #[command(flatten)]
    pub run: crate::config::RunArgs,
}

/// Runs `streamhost replay`.
pub fn main(args: Args) -> anyhow::Result<()> {
    let settings = Settings::resolve(args.run)?;
    for r in &args.reason {
        anyhow::ensure!(
            Reason::parse(r).is_some(),
            "--reason {r:?} is not a dead-letter reason ({})",
            Reason::ALL
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let since_ms = args.since.as_deref().map(parse_since).transpose()?;
    let replay = ReplayArgs {
        from: args.from.unwrap_or_else(|| settings.dlq_topic.clone()),
        reasons: args.reason,
        since_ms,
        group: args.replay_group,
        max_attempts: args.max_attempts,
        progress: true,
    };
    let summary = run(&settings, &replay)?;
    if args.json {
        out!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary)?;
    }
    Ok(())
}

/// `--since`: RFC 3339, or a duration before now.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("--since {text:?} is neither RFC 3339 nor a duration"))?;
    Ok(chrono::Utc::now().timestamp_millis() - ago.as_millis() as i64)
}

fn print_summary(s: &ReplaySummary) -> anyhow::Result<()> {
    let failed: u64 = s.failed_again.values().sum();
    let skipped: u64 = s.skipped.values().sum();
    out!(
        "replayed {} dead letters of {} (progress group {})",
        s.read - skipped,
        s.topic,
        s.group
    );
    for (reason, n) in &s.by_reason {
        out!("  {reason:<28}{n:>8}");
    }
    out!(
        "resolved:       {:>8}   ({} enriched, {} alert records)",
        s.resolved,
        s.enriched,
        s.alerts
    );
    out!("failed again:   {failed:>8}");
    for (reason, n) in &s.failed_again {
        out!("  {reason:<28}{n:>8}");
    }
    out!("skipped:        {skipped:>8}");
    for (why, n) in &s.skipped {
        out!("  {why:<28}{n:>8}");
    }
    if s.partial_windows > 0 {
        out!(
            "partial windows:{:>8}   (the input no longer held the whole span)",
            s.partial_windows
        );
    }
    Ok(())
}
