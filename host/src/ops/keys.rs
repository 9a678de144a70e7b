//! The key inspector, `GET /keys/{key}`: what this process knows about one
//! key right now, as Kafka Streams' interactive queries answer.
//!
//! The windows belong to the workers, each a thread that owns its
//! partitions' pipeline; nothing else may read them while a batch runs. So
//! the admin API holds a `KeySource` (implemented where the workers are
//! started, `cmd::run`, which this floor may not name) that asks every
//! worker between two batches and waits for the answers. This module
//! composes them with what Kafka says: the partition a producer sends the
//! key to, whether this process holds it, and otherwise which group member
//! does (`kafka::group`).

use serde_json::{Value, json};

use crate::kafka::group::{Member, crc32_partition, murmur2_partition};
use crate::pipeline::inspect::{KeyState, TableRow};

/// Readings an answer carries unless asked otherwise (`?readings=N`).
pub const DEFAULT_READINGS: usize = 20;

/// What one worker holds for a key: each partition of its whose windows
/// hold the key.
#[derive(Clone, Debug)]
pub struct Found {
    /// The worker.
    pub worker: usize,
    /// The key on one of its partitions.
    pub state: KeyState,
}

/// The workers' answers to one question.
#[derive(Clone, Debug, Default)]
pub struct Asked {
    /// The key on each partition that holds it, by partition.
    pub found: Vec<Found>,
    /// Its rows in the reference tables.
    pub tables: Vec<TableRow>,
    /// Workers that did not answer in time (busy with a long batch or a
    /// rebuild).
    pub silent: Vec<usize>,
}

/// What the key inspector asks of the running job. Every method may block
/// (a worker finishing its batch, a broker round trip): call it off the
/// async workers.
pub trait KeySource: Send + Sync {
    /// Asks every worker, between its batches, what it holds for `key`,
    /// with its newest `readings` readings.
    fn ask(&self, key: &str, readings: usize) -> Asked;
    /// The input topic.
    fn topic(&self) -> &str;
    /// The consumer group.
    fn group(&self) -> &str;
    /// This process's `client.id` in the group.
    fn client_id(&self) -> &str;
    /// The input partitions this process holds, each with its worker.
    fn held(&self) -> Vec<(i32, usize)>;
    /// The input topic's partition count, if the broker answers.
    fn partition_count(&self) -> Option<usize>;
    /// The group's members and their partitions (DescribeGroups).
    fn members(&self) -> Result<Vec<Member>, String>;
}

/// The partitioners, named as the answer names them.
const MURMUR2: &str = "murmur2 (the Java client's default, librdkafka's murmur2_random)";
const CRC32: &str = "crc32 (librdkafka's default, consistent_random)";

/// The answer to `GET /keys/{key}`: its JSON, and whether it is an error.
pub fn answer(source: &dyn KeySource, key: &str, readings: usize) -> Result<Value, String> {
    if key.is_empty() {
        return Err("no key given: GET /keys/KEY (URL-encoded)".into());
    }
    let asked = source.ask(key, readings);
    let count = source.partition_count();
    let bytes = key.as_bytes();
    let murmur2 = count.map(|n| murmur2_partition(bytes, n));
    let partitioner = json!({
        "partitions": count,
        "murmur2": murmur2,
        "crc32": count.map(|n| crc32_partition(bytes, n)),
        "used": MURMUR2,
        "note": format!("`partition` assumes producers key records by it with {MURMUR2}; {CRC32} may place it elsewhere: where this process holds a window of the key, the partition is where it found it"),
    });
    let mut out = json!({
        "key": key,
        "topic": source.topic(),
        "group": source.group(),
        "partitioner": partitioner,
        "tables": asked.tables,
    });
    if !asked.silent.is_empty() {
        out["silent_workers"] = json!(asked.silent);
    }
    let mut found = asked.found;
    // The partition murmur2 gives first, then by partition.
    found.sort_by_key(|f| (Some(f.state.partition) != murmur2, f.state.partition));
    if let Some(first) = found.first() {
        let mut state = serde_json::to_value(&first.state).expect("serializable");
        let o = out.as_object_mut().expect("an object");
        o.insert("owned".into(), true.into());
        o.insert("worker".into(), first.worker.into());
        o.append(state.as_object_mut().expect("an object"));
        if found.len() > 1 {
            let also: Vec<Value> = found[1..]
                .iter()
                .map(|f| {
                    let mut v = serde_json::to_value(&f.state).expect("serializable");
                    v["worker"] = f.worker.into();
                    v
                })
                .collect();
            out["other_partitions"] = also.into();
        }
        return Ok(out);
    }
    let Some(partition) = murmur2 else {
        out["owned"] = false.into();
        out["partition"] = Value::Null;
        out["note"] = "no window of the key here, and the broker did not tell the input topic's partition count".into();
        return Ok(out);
    };
    out["partition"] = partition.into();
    if let Some(&(_, worker)) = source.held().iter().find(|(p, _)| *p == partition) {
        out["owned"] = true.into();
        out["worker"] = worker.into();
        out["window"] = Value::Null;
        out["note"] = format!("this process holds partition {partition} but no window of the key: no record of it since the partition was taken up, or it went idle").into();
        return Ok(out);
    }
    out["owned"] = false.into();
    match source.members() {
        Ok(members) => {
            let own = source.client_id();
            let owner = members.iter().find(|m| m.holds(source.topic(), partition));
            out["owner"] = owner.map_or(Value::Null, |m| member_json(m, source.topic(), own));
            if owner.is_none() {
                let assigned = members
                    .iter()
                    .any(|m| m.partitions.iter().any(|(_, ps)| !ps.is_empty()));
                out["note"] = if assigned {
                    format!("no member of group {} holds partition {partition} now (a rebalance?)", source.group())
                } else {
                    format!("the broker's DescribeGroups gives no member's assignment, so which member holds partition {partition} is unknown: ask the members listed")
                }
                .into();
            }
            out["members"] = members
                .iter()
                .map(|m| member_json(m, source.topic(), own))
                .collect();
        }
        Err(e) => {
            out["owner"] = Value::Null;
            out["note"] = format!("the group's assignment is unknown: {e}").into();
        }
    }
    Ok(out)
}

/// A member as the answer names it: its ids, its partitions of `topic`,
/// and its admin address when its `client.id` carries one (`streamhost
/// admin=ADDR`; an unspecified address such as `0.0.0.0` is replaced by
/// the host the broker sees).
fn member_json(m: &Member, topic: &str, own_client_id: &str) -> Value {
    let host = m.client_host.trim_start_matches('/');
    let client_id = client_id_of(m);
    let admin = admin_of(client_id).map(|a| match a.rsplit_once(':') {
        Some((ip, port)) if matches!(ip, "0.0.0.0" | "[::]" | "::") && !host.is_empty() => {
            format!("{host}:{port}")
        }
        _ => a.to_string(),
    });
    let partitions: Vec<i32> = m
        .partitions
        .iter()
        .filter(|(t, _)| t == topic)
        .flat_map(|(_, ps)| ps.iter().copied())
        .collect();
    json!({
        "member_id": m.member_id,
        "client_id": client_id,
        "client_host": host,
        "admin": admin,
        "partitions": partitions,
        "is_this_process": client_id == own_client_id,
    })
}

/// A member's `client.id`: as described, or, where the broker leaves it
/// out, from its member id, which Kafka coordinators make `CLIENT_ID-UUID`.
fn client_id_of(m: &Member) -> &str {
    if !m.client_id.is_empty() {
        return &m.client_id;
    }
    let id = m.member_id.as_str();
    let uuid = |t: &str| {
        t.len() == 36
            && t.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    match id.len().checked_sub(37) {
        Some(at) if id.is_char_boundary(at) && id[at..].starts_with('-') && uuid(&id[at + 1..]) => {
            &id[..at]
        }
        _ => "",
    }
}

/// The admin address a `client.id` of the form `... admin=ADDR ...` carries.
pub fn admin_of(client_id: &str) -> Option<&str> {
    client_id
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .filter(|a| !a.is_empty())
}

/// The `client.id` a streamhost member carries unless the user sets one:
/// its admin address, so that another member's key inspector can point at
/// it.
pub fn default_client_id(admin: std::net::SocketAddr) -> String {
    format!("streamhost admin={admin}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of one worker holding `held`, in a group whose members hold
    /// `members`; it finds nothing for any key.
    struct Job {
        held: Vec<(i32, usize)>,
        members: Result<Vec<Member>, String>,
    }

    impl KeySource for Job {
        fn ask(&self, _: &str, _: usize) -> Asked {
            Asked::default()
        }
        fn topic(&self) -> &str {
            "in"
        }
        fn group(&self) -> &str {
            "g"
        }
        fn client_id(&self) -> &str {
            "streamhost admin=127.0.0.1:1"
        }
        fn held(&self) -> Vec<(i32, usize)> {
            self.held.clone()
        }
        fn partition_count(&self) -> Option<usize> {
            Some(6)
        }
        fn members(&self) -> Result<Vec<Member>, String> {
            self.members.clone()
        }
    }

    fn member(client_id: &str, partitions: &[i32]) -> Member {
        Member {
            member_id: format!("m-{client_id}"),
            client_id: client_id.into(),
            client_host: "/10.0.0.7".into(),
            partitions: vec![("in".into(), partitions.to_vec())],
        }
    }

    #[test]
    fn a_key_held_elsewhere_names_its_partition_and_owner() {
        // murmur2("21") is -973932308: toPositive 1173551340, mod 6: 0.
        let job = Job {
            held: vec![(1, 0)],
            members: Ok(vec![
                member("streamhost admin=127.0.0.1:1", &[1, 3, 5]),
                member("streamhost admin=0.0.0.0:9464", &[0, 2, 4]),
            ]),
        };
        let a = answer(&job, "21", 5).unwrap();
        assert_eq!(a["partition"], 0);
        assert_eq!(a["owned"], false);
        assert_eq!(a["owner"]["admin"], "10.0.0.7:9464");
        assert_eq!(a["owner"]["is_this_process"], false);
        assert_eq!(a["partitioner"]["murmur2"], 0);
        // Held here, but no window of the key.
        let job = Job {
            held: vec![(0, 0)],
            members: Err("unused".into()),
        };
        let a = answer(&job, "21", 5).unwrap();
        assert_eq!(
            (a["owned"].clone(), a["worker"].clone()),
            (json!(true), json!(0))
        );
        assert_eq!(a["window"], Value::Null);
        // The group cannot be described: said, not an error.
        let job = Job {
            held: vec![],
            members: Err("broker down".into()),
        };
        let a = answer(&job, "21", 5).unwrap();
        assert!(a["note"].as_str().unwrap().contains("broker down"), "{a}");
        assert!(answer(&job, "", 5).is_err());
        // Odd keys are keys.
        for key in ["a/b", "ключ 🔑", "%", "\u{0}"] {
            assert_eq!(answer(&job, key, 5).unwrap()["key"], key);
        }
    }

    #[test]
    fn without_assignments_the_members_are_listed_with_their_admin_addresses() {
        // As some brokers describe a group: member ids only.
        let mut a = member("", &[]);
        a.member_id = "streamhost admin=127.0.0.1:1-de276136-7faa-42c2-8eb4-35f76f61559c".into();
        let mut b = member("", &[]);
        b.member_id = "streamhost admin=127.0.0.1:2-ac9434e7-0f75-48dd-902a-93340954a156".into();
        a.client_host.clear();
        b.client_host.clear();
        let job = Job {
            held: vec![],
            members: Ok(vec![a, b]),
        };
        let answer = answer(&job, "21", 5).unwrap();
        assert_eq!(answer["owner"], Value::Null);
        assert!(
            answer["note"]
                .as_str()
                .unwrap()
                .contains("no member's assignment"),
            "{answer}"
        );
        let admins: Vec<&Value> = answer["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["admin"])
            .collect();
        assert_eq!(admins, [&json!("127.0.0.1:1"), &json!("127.0.0.1:2")]);
        assert_eq!(answer["members"][0]["is_this_process"], true);
        let mut odd = member("", &[]);
        odd.member_id = "no-uuid-here".into();
        assert_eq!(client_id_of(&odd), "");
    }

    #[test]
    fn the_admin_address_is_read_from_a_client_id() {
        let id = default_client_id("127.0.0.1:9464".parse().unwrap());
        assert_eq!(admin_of(&id), Some("127.0.0.1:9464"));
        assert_eq!(admin_of("streamhost"), None);
        assert_eq!(admin_of("my-app admin="), None);
    }
}
