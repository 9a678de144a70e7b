//! The alert lifecycle: what operators page on is a transition, not a
//! sample. With `--alerts lifecycle`, each (partition, key, rule, kind) is
//! either firing or not, and a record's alerts become transitions:
//! - a kind the rule raises while it is not firing: `firing`;
//! - raised again while firing: suppressed, except one `repeat` each time
//!   `--alert-repeat` of event time has passed since the last emission;
//! - a firing kind the rule ran on the key's record and did not raise:
//!   `resolved` (by the record);
//! - a key whose window the sweep drops for being idle: each of its firing
//!   kinds `resolved` (by idleness; see `crate::window`).
//!
//! State is keyed by the rule's name, not its version: a swap or a
//! configuration change neither resolves nor re-fires what the new version
//! still raises. Like the windows, the state is grouped by input partition
//! and is a function of the partition's records, so a partition's state
//! can be written down (`Snapshot`) at an offset and taken up by whichever
//! process holds the partition next.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::contract::{Alert, Severity};

/// What becomes of the alerts rules raise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlertMode {
    /// One alert record per record and rule that raised anything (the
    /// article's behaviour).
    #[default]
    EveryRecord,
    /// Transitions only: `firing`, `repeat` and `resolved`.
    Lifecycle,
}

/// What a lifecycle alert record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It began firing.
    Firing,
    /// It still fires, and `--alert-repeat` passed since it was last
    /// emitted.
    Repeat,
    /// It stopped firing.
    Resolved,
}

impl Status {
    /// Its name in alert records.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Repeat => "repeat",
            Status::Resolved => "resolved",
        }
    }
}

/// What resolved an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedBy {
    /// A record of the key that the rule ran on and did not raise it for.
    Record,
    /// The key went idle: its window was dropped.
    Idle,
}

impl ResolvedBy {
    /// Its name in alert records.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedBy::Record => "record",
            ResolvedBy::Idle => "idle",
        }
    }
}

/// An alert that fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Open {
    /// The anomaly rule (plugin) that raises it.
    pub rule: String,
    /// The alert's `rule` member, as the plugin names it.
    pub alert_rule: String,
    /// Its kind.
    pub kind: String,
    /// Severity the last record that raised it gave.
    #[serde(with = "severity_name")]
    pub severity: Severity,
    /// Message the last record that raised it gave.
    pub message: String,
    /// Event time of the record it began firing with.
    pub since_ms: i64,
    /// Newest event time of a record that raised it.
    pub last_ms: i64,
    /// Event time of its last emission (`firing` or `repeat`).
    pub emitted_ms: i64,
    /// Records that raised it since it began firing, not emitted.
    pub suppressed: u64,
}

impl Open {
    /// The alert as the record that raised it last gave it.
    pub fn alert(&self) -> Alert {
        Alert {
            rule: self.alert_rule.clone(),
            kind: self.kind.clone(),
            severity: self.severity,
            message: self.message.clone(),
        }
    }
}

/// One emission: the alert as it stands after it (for `resolved`, as it
/// stood when it stopped firing).
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// What happened.
    pub status: Status,
    /// The alert.
    pub open: Open,
    /// What resolved it, for `resolved`.
    pub resolved_by: Option<ResolvedBy>,
}

/// A key's firing alerts, as saved before a record changes them.
pub type Saved = Option<Vec<Open>>;

/// The firing alerts of every key, per input partition.
#[derive(Debug, Default)]
pub struct Alerts {
    /// Event time between emissions of an alert that keeps firing; 0:
    /// never repeated.
    repeat_ms: i64,
    partitions: HashMap<i32, HashMap<Box<str>, Vec<Open>>>,
}

impl Alerts {
    /// No alert firing; `repeat_ms` of event time between repeats (0:
    /// none).
    pub fn new(repeat_ms: i64) -> Alerts {
        Alerts {
            repeat_ms: repeat_ms.max(0),
            partitions: HashMap::new(),
        }
    }

    /// Rule `rule` ran on a record of `key` with event time `event_ms` and
    /// raised `raised`: pushes the transitions (resolved kinds first, by
    /// kind; then the raised ones that are emitted, in the rule's order).
    pub fn observe(
        &mut self,
        partition: i32,
        key: &str,
        event_ms: i64,
        rule: &str,
        raised: &[Alert],
        out: &mut Vec<Transition>,
    ) {
        let keys = self.partitions.entry(partition).or_default();
        let open = match keys.get_mut(key) {
            Some(open) => open,
            None if raised.is_empty() => return,
            None => keys.entry(key.into()).or_default(),
        };
        let mut gone: Vec<Open> = Vec::new();
        open.retain(|o| {
            let keep = o.rule != rule || raised.iter().any(|a| a.kind == o.kind);
            if !keep {
                gone.push(o.clone());
            }
            keep
        });
        gone.sort_by(|a, b| a.kind.cmp(&b.kind));
        out.extend(gone.into_iter().map(|open| Transition {
            status: Status::Resolved,
            open,
            resolved_by: Some(ResolvedBy::Record),
        }));
        for (i, a) in raised.iter().enumerate() {
            // A kind raised twice by one record counts once.
            if raised[..i].iter().any(|b| b.kind == a.kind) {
                continue;
            }
            let status = match open.iter_mut().find(|o| o.rule == rule && o.kind == a.kind) {
                None => {
                    open.push(Open {
                        rule: rule.to_string(),
                        alert_rule: a.rule.clone(),
                        kind: a.kind.clone(),
                        severity: a.severity,
                        message: a.message.clone(),
                        since_ms: event_ms,
                        last_ms: event_ms,
                        emitted_ms: event_ms,
                        suppressed: 0,
                    });
                    Status::Firing
                }
                Some(o) => {
                    o.alert_rule.clone_from(&a.rule);
                    o.severity = a.severity;
                    o.message.clone_from(&a.message);
                    o.last_ms = o.last_ms.max(event_ms);
                    if self.repeat_ms > 0 && event_ms >= o.emitted_ms.saturating_add(self.repeat_ms)
                    {
                        o.emitted_ms = event_ms;
                        Status::Repeat
                    } else {
                        o.suppressed += 1;
                        continue;
                    }
                }
            };
            let o = open
                .iter()
                .find(|o| o.rule == rule && o.kind == a.kind)
                .expect("just updated");
            out.push(Transition {
                status,
                open: o.clone(),
                resolved_by: None,
            });
        }
        if open.is_empty() {
            keys.remove(key);
        }
    }

    /// `key` went idle: every alert it fires is resolved, in the order they
    /// began firing (by rule and kind for ties).
    pub fn resolve_idle(&mut self, partition: i32, key: &str, out: &mut Vec<Transition>) {
        let Some(mut open) = self
            .partitions
            .get_mut(&partition)
            .and_then(|keys| keys.remove(key))
        else {
            return;
        };
        open.sort_by(|a, b| (a.since_ms, &a.rule, &a.kind).cmp(&(b.since_ms, &b.rule, &b.kind)));
        out.extend(open.into_iter().map(|open| Transition {
            status: Status::Resolved,
            open,
            resolved_by: Some(ResolvedBy::Idle),
        }));
    }

    /// A key's firing alerts as they are, to put back with `restore_key`
    /// if what changes them is undone.
    pub fn save_key(&self, partition: i32, key: &str) -> Saved {
        self.partitions.get(&partition)?.get(key).cloned()
    }

    /// Puts back what `save_key` saved.
    pub fn restore_key(&mut self, partition: i32, key: &str, saved: Saved) {
        let keys = self.partitions.entry(partition).or_default();
        match saved {
            Some(open) => {
                keys.insert(key.into(), open);
            }
            None => {
                keys.remove(key);
            }
        }
    }

    /// The alerts `key` fires.
    pub fn open(&self, partition: i32, key: &str) -> &[Open] {
        self.partitions
            .get(&partition)
            .and_then(|keys| keys.get(key))
            .map_or(&[], Vec::as_slice)
    }

    /// Every firing alert: partition, key, alert.
    pub fn firing(&self) -> impl Iterator<Item = (i32, &str, &Open)> {
        self.partitions.iter().flat_map(|(p, keys)| {
            keys.iter()
                .flat_map(move |(k, open)| open.iter().map(move |o| (*p, &**k, o)))
        })
    }

    /// How many alerts fire, per (rule, kind).
    pub fn firing_by_kind(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for (_, _, o) in self.firing() {
            *counts.entry((o.rule.clone(), o.kind.clone())).or_default() += 1;
        }
        counts
    }

    /// Forgets `partition`'s alerts (it was revoked, or is being restored).
    pub fn drop_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// `partition`'s firing alerts as of `offset` (the next offset to
    /// process), sorted, to be written down.
    pub fn snapshot(&self, partition: i32, offset: i64) -> Snapshot {
        let mut keys: Vec<(String, Vec<Open>)> = self
            .partitions
            .get(&partition)
            .map(|keys| {
                keys.iter()
                    .map(|(k, open)| (k.to_string(), open.clone()))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            partition,
            offset,
            keys,
        }
    }

    /// Takes up a partition's firing alerts from a snapshot, in place of
    /// any held.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let keys = snapshot
            .keys
            .into_iter()
            .filter(|(_, open)| !open.is_empty())
            .map(|(k, open)| (k.into_boxed_str(), open))
            .collect();
        self.partitions.insert(snapshot.partition, keys);
    }
}

/// A partition's firing alerts at an offset: what processing from that
/// offset on starts with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The input partition.
    pub partition: i32,
    /// The next offset to process: the state holds every record before it.
    pub offset: i64,
    /// Keys with a firing alert, sorted.
    pub keys: Vec<(String, Vec<Open>)>,
}

/// A severity by its name in snapshots.
mod severity_name {
    use super::Severity;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(s: &Severity, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(match s {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Severity, D::Error> {
        let name = String::deserialize(from)?;
        Ok(match name.as_str() {
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            other => return Err(D::Error::custom(format!("unknown severity {other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &str) -> Alert {
        Alert {
            rule: "r".into(),
            kind: kind.into(),
            severity: Severity::High,
            message: format!("{kind}!"),
        }
    }

    fn statuses(out: &[Transition]) -> Vec<(&'static str, String, u64)> {
        out.iter()
            .map(|t| (t.status.as_str(), t.open.kind.clone(), t.open.suppressed))
            .collect()
    }

    #[test]
    fn fires_once_repeats_on_event_time_and_resolves_with_the_count() {
        let mut a = Alerts::new(10_000);
        let mut out = Vec::new();
        for t in [0, 1_000, 2_000, 10_000, 11_000] {
            a.observe(0, "k", t, "anomaly", &[alert("hot")], &mut out);
        }
        a.observe(0, "k", 12_000, "anomaly", &[], &mut out);
        assert_eq!(
            statuses(&out),
            [
                ("firing", "hot".into(), 0),
                ("repeat", "hot".into(), 2),
                ("resolved", "hot".into(), 3),
            ]
        );
        assert_eq!(out[2].open.since_ms, 0);
        assert_eq!(out[2].open.last_ms, 11_000);
        assert_eq!(out[2].resolved_by, Some(ResolvedBy::Record));
        assert!(a.open(0, "k").is_empty());
    }

    #[test]
    fn rules_keys_and_partitions_fire_apart() {
        let mut a = Alerts::new(0);
        let mut out = Vec::new();
        a.observe(0, "k", 0, "one", &[alert("hot")], &mut out);
        a.observe(0, "k", 0, "two", &[alert("hot")], &mut out);
        a.observe(1, "k", 0, "one", &[alert("hot")], &mut out);
        a.observe(0, "j", 0, "one", &[alert("hot")], &mut out);
        assert_eq!(out.len(), 4);
        out.clear();
        // Rule two ran and raised nothing: only its alert resolves.
        a.observe(0, "k", 1, "two", &[], &mut out);
        assert_eq!(statuses(&out), [("resolved", "hot".into(), 0)]);
        assert_eq!(out[0].open.rule, "two");
        assert_eq!(a.open(0, "k").len(), 1);
        assert_eq!(a.firing().count(), 3);
        let by_kind = a.firing_by_kind();
        assert_eq!(by_kind[&("one".to_string(), "hot".to_string())], 3);
    }

    #[test]
    fn resolved_kinds_come_first_then_raised_ones_in_order() {
        let mut a = Alerts::new(0);
        let mut out = Vec::new();
        a.observe(0, "k", 0, "r", &[alert("b"), alert("a")], &mut out);
        out.clear();
        a.observe(
            0,
            "k",
            1,
            "r",
            &[alert("d"), alert("c"), alert("d")],
            &mut out,
        );
        assert_eq!(
            statuses(&out),
            [
                ("resolved", "a".into(), 0),
                ("resolved", "b".into(), 0),
                ("firing", "d".into(), 0),
                ("firing", "c".into(), 0),
            ]
        );
    }

    #[test]
    fn idle_keys_resolve_everything_they_fire() {
        let mut a = Alerts::new(0);
        let mut out = Vec::new();
        a.observe(0, "k", 5, "r", &[alert("b")], &mut out);
        a.observe(0, "k", 7, "q", &[alert("a")], &mut out);
        out.clear();
        a.resolve_idle(0, "k", &mut out);
        a.resolve_idle(0, "never", &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|t| t.resolved_by == Some(ResolvedBy::Idle)));
        assert_eq!(out[0].open.kind, "b");
        assert_eq!(a.firing().count(), 0);
    }

    #[test]
    fn a_snapshot_restores_the_same_state_and_undo_puts_a_key_back() {
        let mut a = Alerts::new(1_000);
        let mut out = Vec::new();
        a.observe(3, "k", 0, "r", &[alert("hot")], &mut out);
        a.observe(3, "k", 10, "r", &[alert("hot")], &mut out);
        a.observe(3, "j", 10, "r", &[alert("wet")], &mut out);
        let snap = a.snapshot(3, 42);
        let text = serde_json::to_string(&snap).unwrap();
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snap);
        let mut b = Alerts::new(1_000);
        b.restore(back);
        assert_eq!(b.snapshot(3, 42), snap);

        let saved = b.save_key(3, "k");
        b.observe(3, "k", 20, "r", &[], &mut out);
        assert!(b.open(3, "k").is_empty());
        b.restore_key(3, "k", saved);
        assert_eq!(b.snapshot(3, 42), snap);
    }
}
