//! Calling one rule on a batch: with failure isolation, and beside its
//! candidate when one is on trial. The pipeline calls down into this for
//! every rule of every kind; nothing here calls back up.
//!
//! Failure isolation: a call that fails (trap, timeout, out of memory) is
//! retried on halves of its batch, each on a fresh instance, until the
//! records that cause it are found, so one poisoned record is dead-lettered
//! alone while its batch-mates go on, whatever the batch size. The search is
//! bounded by time (`budget`), so that a rule that fails on everything
//! cannot stall the stream.
//!
//! Trials (`super::trial`): a shadow candidate runs on the same batch after
//! the serving version, its results compared and thrown away; a canary
//! candidate serves the records whose key its hash selects, and should its
//! call fail, the serving version covers them. Each call is counted on the
//! trial's sides, which judge it.

use std::time::{Duration, Instant};

use super::Rule;
use super::runtime::{CallError, PluginInfo};
use super::trial::{self, Mode, Outcome, Trial};
use crate::contract::{
    AggregateColumns, Alert, Batch, Change, DeclaredWindow, FieldWindow, TableRows, TrendResult,
    WindowView,
};

/// The keys of a batch's records, in order, for a canary to select by: the
/// caller gives them whenever a trial may be on (`RuleSet::trials`), and may
/// give none otherwise.
pub type Keys<'k> = &'k [String];

/// One rule's call on a batch: each record's result, and which version
/// served it.
pub struct Called<'a, T> {
    /// One per record of the batch, in order.
    pub results: Vec<Result<T, CallError>>,
    /// Per record, whether the canary candidate served it (empty: none did).
    by_candidate: Vec<bool>,
    serving: &'a PluginInfo,
    candidate: Option<&'a PluginInfo>,
}

impl<'a, T> Called<'a, T> {
    /// Whether the candidate served record `j`.
    pub fn by_candidate(&self, j: usize) -> bool {
        self.by_candidate.get(j) == Some(&true)
    }

    /// The version that served record `j`.
    pub fn info(&self, j: usize) -> &'a PluginInfo {
        match self.candidate {
            Some(c) if self.by_candidate(j) => c,
            _ => self.serving,
        }
    }
}

/// What one version of a rule is called with: the batch (with the rows of
/// the tables it reads) and, for trend and anomaly rules, the windows (with
/// those it declared). A candidate on trial that declares other windows or
/// tables than its serving version sees its own.
#[derive(Clone, Copy)]
pub struct Seen<'s, T> {
    /// What the serving version sees.
    pub serving: &'s T,
    /// What the candidate sees, when it differs.
    pub candidate: Option<&'s T>,
}

impl<'s, T> Seen<'s, T> {
    /// What `r` sees: `rule` is the serving version.
    fn by(&self, rule: &dyn Rule, r: &dyn Rule) -> &'s T {
        match self.candidate {
            Some(c) if !std::ptr::eq(rule.info(), r.info()) => c,
            _ => self.serving,
        }
    }
}

/// A batch and its windows.
pub type Windowed = (Batch, WindowView);

/// What a transform rule returned for each record of its batch (`keys`: see
/// `Keys`).
pub fn transform<'a>(
    rule: &'a dyn Rule,
    trial: Option<&'a Trial>,
    seen: Seen<'_, Batch>,
    keys: Keys<'_>,
    budget: Duration,
) -> Called<'a, Result<Change, String>> {
    call(
        rule,
        trial,
        seen.serving.len as usize,
        keys,
        budget,
        &|r, pos| {
            let batch = seen.by(rule, r);
            match pos {
                None => r.transform(batch),
                Some(pos) => r.transform(&select_batch(batch, pos)),
            }
        },
    )
}

/// What a trend rule returned for each record of its batch, seeing its
/// windows.
pub fn trend<'a>(
    rule: &'a dyn Rule,
    trial: Option<&'a Trial>,
    seen: Seen<'_, Windowed>,
    keys: Keys<'_>,
    budget: Duration,
) -> Called<'a, Result<Option<TrendResult>, String>> {
    windowed(rule, trial, seen, keys, budget, |r, b, v| r.trend(b, v))
}

/// What an anomaly rule returned for each record of its batch, seeing its
/// windows.
pub fn detect<'a>(
    rule: &'a dyn Rule,
    trial: Option<&'a Trial>,
    seen: Seen<'_, Windowed>,
    keys: Keys<'_>,
    budget: Duration,
) -> Called<'a, Result<Vec<Alert>, String>> {
    windowed(rule, trial, seen, keys, budget, |r, b, v| r.detect(b, v))
}

/// Calls a rule that sees windows with `f`: on the whole batch, or on the
/// records at some of its positions, with their windows.
fn windowed<'a, T: Outcome>(
    rule: &'a dyn Rule,
    trial: Option<&'a Trial>,
    seen: Seen<'_, Windowed>,
    keys: Keys<'_>,
    budget: Duration,
    f: impl Fn(&dyn Rule, &Batch, &WindowView) -> Result<Vec<T>, CallError>,
) -> Called<'a, T> {
    let n = seen.serving.0.len as usize;
    call(rule, trial, n, keys, budget, &|r, pos| {
        let (batch, view) = seen.by(rule, r);
        match pos {
            None => f(r, batch, view),
            Some(pos) => f(r, &select_batch(batch, pos), &select_view(view, pos)),
        }
    })
}

/// Calls a rule once on a subset of a batch's positions (`None`: all).
type Once<'a, T> = dyn Fn(&dyn Rule, Option<&[usize]>) -> Result<Vec<T>, CallError> + 'a;
/// Calls the serving version, with failure isolation, on a subset of a
/// batch's positions (`None`: all).
type Serve<'a, T> = dyn Fn(Option<&[usize]>) -> Vec<Result<T, CallError>> + 'a;

/// Calls `rule`, and its candidate if one is on trial, on a batch of `n`
/// records.
fn call<'a, T: Outcome>(
    rule: &'a dyn Rule,
    trial: Option<&'a Trial>,
    n: usize,
    keys: Keys<'_>,
    budget: Duration,
    once: &Once<'_, T>,
) -> Called<'a, T> {
    let serve = |sub: Option<&[usize]>| serve(rule, n, sub, budget, once);
    let (results, by_candidate) = match trial.filter(|t| !t.stopped()) {
        None => (serve(None), Vec::new()),
        Some(trial) => match trial.mode {
            Mode::Shadow => (shadow(trial, n, &serve, once), Vec::new()),
            Mode::Canary { percent } => canary(trial, percent, n, keys, &serve, once),
        },
    };
    Called {
        results,
        by_candidate,
        serving: rule.info(),
        candidate: trial.map(|t| t.candidate.info()),
    }
}

/// Calls the serving version with failure isolation on `sub` of a batch of
/// `n` records (`None`: all of them).
fn serve<T>(
    rule: &dyn Rule,
    n: usize,
    sub: Option<&[usize]>,
    budget: Duration,
    once: &Once<'_, T>,
) -> Vec<Result<T, CallError>> {
    match sub {
        None => isolate(n, budget, |pos| once(rule, pos)),
        Some(sub) => isolate(sub.len(), budget, |pos| match pos {
            None => once(rule, Some(sub)),
            Some(pos) => {
                let mapped: Vec<usize> = pos.iter().map(|&j| sub[j]).collect();
                once(rule, Some(&mapped))
            }
        }),
    }
}

/// The serving version serves the batch; the candidate runs on it after,
/// and its results are compared, then dropped.
fn shadow<T: Outcome>(
    trial: &Trial,
    n: usize,
    serve: &Serve<'_, T>,
    once: &Once<'_, T>,
) -> Vec<Result<T, CallError>> {
    let started = Instant::now();
    let served = serve(None);
    trial.count_serving(started.elapsed(), &served);
    let started = Instant::now();
    let tried = once(trial.candidate.as_ref(), None).and_then(|t| whole(t, n));
    trial.count_trying(n, started.elapsed(), &tried);
    if let Ok(tried) = &tried {
        trial.compare(&served, tried);
    }
    trial.judge();
    served
}

/// The candidate serves the records whose key it selects, the serving
/// version the rest, and the candidate's records too should its call fail.
fn canary<T: Outcome>(
    trial: &Trial,
    percent: f64,
    n: usize,
    keys: Keys<'_>,
    serve: &Serve<'_, T>,
    once: &Once<'_, T>,
) -> (Vec<Result<T, CallError>>, Vec<bool>) {
    assert_eq!(keys.len(), n, "a canary selects by the batch's keys");
    let (mine, theirs): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|&i| trial::selects(percent, &keys[i]));
    if mine.is_empty() {
        return (serve(None), Vec::new());
    }
    let mut results: Vec<Option<Result<T, CallError>>> = (0..n).map(|_| None).collect();
    let mut place = |at: &[usize], served: Vec<Result<T, CallError>>| {
        for (&i, r) in at.iter().zip(served) {
            results[i] = Some(r);
        }
    };
    if !theirs.is_empty() {
        let started = Instant::now();
        let served = serve(Some(&theirs));
        trial.count_serving(started.elapsed(), &served);
        place(&theirs, served);
    }
    let started = Instant::now();
    let tried = once(trial.candidate.as_ref(), Some(&mine)).and_then(|t| whole(t, mine.len()));
    trial.count_trying(mine.len(), started.elapsed(), &tried);
    let mut by_candidate = vec![false; n];
    match tried {
        Ok(tried) => {
            place(&mine, tried.into_iter().map(Ok).collect());
            for &i in &mine {
                by_candidate[i] = true;
            }
        }
        // The serving version covers for a failed candidate.
        Err(_) => place(&mine, serve(Some(&mine))),
    }
    trial.judge();
    let results = results
        .into_iter()
        .map(|r| r.expect("every position is served"))
        .collect();
    (results, by_candidate)
}

/// A candidate's results, refused unless there is one per record.
fn whole<T>(tried: Vec<T>, n: usize) -> Result<Vec<T>, CallError> {
    if tried.len() == n {
        Ok(tried)
    } else {
        Err(CallError::Contract(format!(
            "returned {} results for a batch of {n}",
            tried.len()
        )))
    }
}

/// Calls `call` on the whole batch (`None`); if that fails, bisects: calls
/// it on halves (`Some(positions)`), and so on, so that exactly the records
/// whose own sub-batch fails get the error, for any batch size. The search
/// stops when `budget` has passed since the first call: records still
/// unresolved then get the last error that covered them, saying so.
fn isolate<T>(
    n: usize,
    budget: Duration,
    mut call: impl FnMut(Option<&[usize]>) -> Result<Vec<T>, CallError>,
) -> Vec<Result<T, CallError>> {
    let started = Instant::now();
    let first = match call(None) {
        Ok(v) => return v.into_iter().map(Ok).collect(),
        Err(e) => e,
    };
    let mut out: Vec<Option<Result<T, CallError>>> = (0..n).map(|_| None).collect();
    // Work list of (positions, error that covered them), smallest first out.
    let mut work: Vec<(Vec<usize>, CallError)> = vec![((0..n).collect(), first)];
    let mut unresolved = 0;
    while let Some((pos, err)) = work.pop() {
        if pos.len() == 1 {
            out[pos[0]] = Some(Err(err));
            continue;
        }
        if started.elapsed() > budget {
            unresolved += pos.len();
            let err = err.unresolved(budget);
            for p in pos {
                out[p] = Some(Err(err.clone()));
            }
            continue;
        }
        let (a, b) = pos.split_at(pos.len() / 2);
        for half in [b, a] {
            match call(Some(half)) {
                Ok(v) => {
                    for (p, r) in half.iter().zip(v) {
                        out[*p] = Some(Ok(r));
                    }
                }
                Err(e) => work.push((half.to_vec(), e)),
            }
        }
    }
    if unresolved > 0 {
        tracing::warn!(
            unresolved,
            ?budget,
            "Isolation ran out of time; records not proven faulty were dead-lettered with the error that covered them."
        );
    }
    out.into_iter()
        .map(|r| r.expect("every position resolved"))
        .collect()
}

fn pick<T: Clone>(col: &[T], pos: &[usize]) -> Vec<T> {
    if col.is_empty() {
        Vec::new()
    } else {
        pos.iter().map(|&p| col[p].clone()).collect()
    }
}

fn pick_k(col: &[f64], k: usize, pos: &[usize]) -> Vec<f64> {
    if col.is_empty() {
        Vec::new()
    } else {
        pos.iter()
            .flat_map(|&p| col[p * k..p * k + k].iter().copied())
            .collect()
    }
}

/// The records at positions `pos` of `batch`.
fn select_batch(batch: &Batch, pos: &[usize]) -> Batch {
    Batch {
        len: pos.len() as u32,
        processing_time: batch.processing_time,
        fields: batch.fields.clone(),
        keys: pick(&batch.keys, pos),
        event_times: pick(&batch.event_times, pos),
        values: batch.values.iter().map(|c| pick(c, pos)).collect(),
        json: pick(&batch.json, pos),
        // Rows stay whole: only which row each record sees is selected.
        tables: batch
            .tables
            .iter()
            .map(|t| TableRows {
                row_of: pick(&t.row_of, pos),
                columns: t.columns.clone(),
                json: t.json.clone(),
            })
            .collect(),
    }
}

/// The windows of the records at positions `pos` of `view`.
fn select_view(view: &WindowView, pos: &[usize]) -> WindowView {
    let k = view.k as usize;
    WindowView {
        starts: pick(&view.starts, pos),
        ends: pick(&view.ends, pos),
        counts: pick(&view.counts, pos),
        k: view.k,
        fields: view
            .fields
            .iter()
            .map(|f| FieldWindow {
                mean: pick(&f.mean, pos),
                min: pick(&f.min, pos),
                max: pick(&f.max, pos),
                first: pick(&f.first, pos),
                last: pick(&f.last, pos),
                head: pick_k(&f.head, k, pos),
                tail: pick_k(&f.tail, k, pos),
            })
            .collect(),
        declared: view
            .declared
            .iter()
            .map(|w| DeclaredWindow {
                counts: pick(&w.counts, pos),
                fields: w
                    .fields
                    .iter()
                    .map(|f| AggregateColumns {
                        columns: f.columns.iter().map(|c| pick(c, pos)).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_finds_the_poisoned_record() {
        let poison = 37;
        let mut calls = 0;
        let results = isolate(100, std::time::Duration::from_secs(60), |pos| {
            calls += 1;
            let pos: Vec<usize> = pos
                .map(<[usize]>::to_vec)
                .unwrap_or_else(|| (0..100).collect());
            if pos.contains(&poison) {
                Err(CallError::Trap("boom".into()))
            } else {
                Ok(pos.iter().map(|p| p * 2).collect())
            }
        });
        for (i, r) in results.iter().enumerate() {
            if i == poison {
                assert_eq!(r, &Err(CallError::Trap("boom".into())));
            } else {
                assert_eq!(r, &Ok(i * 2));
            }
        }
        // One call for the batch, then two per level along 37's path:
        // 100 → 50 → 25 → 13 → 6 → 3 → 1 is six levels.
        assert_eq!(calls, 1 + 2 * 6);
    }

    #[test]
    fn isolation_finds_exactly_the_poisoned_records_in_large_batches() {
        for (n, poisoned) in [
            (1000, vec![0, 1, 499, 500, 999]),
            (5000, vec![17, 4242]),
            (300, (0..300).step_by(7).collect()),
        ] {
            let results = isolate(n, std::time::Duration::from_secs(60), |pos| {
                let pos: Vec<usize> = pos
                    .map(<[usize]>::to_vec)
                    .unwrap_or_else(|| (0..n).collect());
                if pos.iter().any(|p| poisoned.contains(p)) {
                    Err(CallError::Trap("boom".into()))
                } else {
                    Ok(pos)
                }
            });
            for (i, r) in results.iter().enumerate() {
                assert_eq!(
                    r.is_err(),
                    poisoned.contains(&i),
                    "batch of {n}, record {i}"
                );
            }
        }
    }

    #[test]
    fn isolation_is_bounded_by_time_when_everything_fails() {
        let mut calls = 0;
        let budget = std::time::Duration::from_millis(50);
        let started = std::time::Instant::now();
        let results: Vec<Result<u8, _>> = isolate(100_000, budget, |_| {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
            Err(CallError::Timeout(std::time::Duration::from_millis(1)))
        });
        // Stopped within the budget plus the calls of one level.
        assert!(started.elapsed() < budget * 4, "{:?}", started.elapsed());
        assert!(calls < 200, "{calls}");
        assert!(results.iter().all(|r| r.is_err()));
        assert!(
            results
                .iter()
                .any(|r| r.as_ref().unwrap_err().to_string().contains("not isolated"))
        );
    }
}
