//! Who holds a key: the partition a producer's partitioner sends it to,
//! and the consumer-group member the group's assignment gives that
//! partition. For the key inspector (`GET /keys/{key}`), when the key is
//! not this process's.
//!
//! Two partitioners are common, and they disagree: Java clients (and
//! librdkafka's `murmur2_random`) use murmur2 of the key bytes; librdkafka's
//! own default (`consistent_random`, so most non-Java clients) uses CRC32.
//! Both are computed here, as Kafka's and librdkafka's sources do.
//!
//! The member comes from DescribeGroups: each member's assignment is the
//! consumer protocol's `ConsumerProtocolAssignment`, bytes the group leader
//! wrote and the broker hands back as they are. They are decoded here
//! (version, then per topic its name and partitions, then user data),
//! without trusting a length they give.

use std::time::Duration;

use rdkafka::consumer::Consumer;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): the
/// hash the Java producer's default partitioner takes of a record's key.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `partitions` a Java producer sends `key` to:
/// `toPositive(murmur2(key)) % partitions`.
pub fn murmur2_partition(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1) as u32) as i32
}

/// CRC-32 (IEEE, as zlib's), bit by bit: a key's bytes are few.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The partition of `partitions` librdkafka's default partitioner
/// (`consistent_random`) sends a non-empty `key` to: `crc32(key) %
/// partitions`.
pub fn crc32_partition(key: &[u8], partitions: usize) -> i32 {
    (crc32(key) % partitions.max(1) as u32) as i32
}

/// One member of a consumer group, as DescribeGroups tells it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Member {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `client.id`.
    pub client_id: String,
    /// The host the coordinator sees it connect from (`/127.0.0.1`).
    pub client_host: String,
    /// Its partitions of each topic, as its assignment says.
    pub partitions: Vec<(String, Vec<i32>)>,
}

impl Member {
    /// Whether its assignment holds `partition` of `topic`.
    pub fn holds(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .iter()
            .any(|(t, ps)| t == topic && ps.contains(&partition))
    }
}

/// What a group's description may lack.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The broker did not answer, or refused.
    #[error("describing group {group}: {error}")]
    Kafka {
        /// The group.
        group: String,
        /// What the client said.
        error: rdkafka::error::KafkaError,
    },
    /// The broker describes no such group.
    #[error("the broker does not describe group {0}")]
    Missing(String),
    /// A member's assignment is not the consumer protocol's.
    #[error("member {member}'s assignment cannot be read: {why}")]
    Assignment {
        /// The member id.
        member: String,
        /// What is wrong with the bytes.
        why: String,
    },
}

/// The members of `group` and the partitions each holds, by DescribeGroups
/// through `client` (blocking, up to `timeout`). A group in the middle of
/// a rebalance has members without assignments yet.
pub fn members<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    client: &C,
    group: &str,
    timeout: Duration,
) -> Result<Vec<Member>, GroupError> {
    let list = client
        .fetch_group_list(Some(group), timeout)
        .map_err(|error| GroupError::Kafka {
            group: group.to_string(),
            error,
        })?;
    let info = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .ok_or_else(|| GroupError::Missing(group.to_string()))?;
    info.members()
        .iter()
        .map(|m| {
            let partitions = match m.assignment() {
                Some(bytes) => assignment(bytes).map_err(|why| GroupError::Assignment {
                    member: m.id().to_string(),
                    why,
                })?,
                None => Vec::new(),
            };
            Ok(Member {
                member_id: m.id().to_string(),
                client_id: m.client_id().to_string(),
                client_host: m.client_host().to_string(),
                partitions,
            })
        })
        .collect()
}

/// Decodes a consumer protocol assignment (`ConsumerProtocolAssignment`,
/// versions 0 to 3, which share this layout): an `int16` version, an
/// `int32` count of topics, each a `string` (`int16` length) and an
/// `int32` count of `int32` partitions, then user data (ignored). Empty
/// bytes: no partitions (a member the leader gave nothing yet).
pub fn assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader { bytes, at: 0 };
    let version = r.i16()?;
    if version < 0 {
        return Err(format!("version {version}"));
    }
    let topics = r.count(6)?;
    let mut out = Vec::with_capacity(topics);
    for _ in 0..topics {
        let len = r.i16()?;
        let len = usize::try_from(len).map_err(|_| format!("topic name length {len}"))?;
        let name = r.take(len)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| "a topic name is not UTF-8".to_string())?
            .to_string();
        let n = r.count(4)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            partitions.push(r.i32()?);
        }
        out.push((name, partitions));
    }
    Ok(out)
}

/// Big-endian reads that fail, not panic, past the end.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("ends at byte {} of {n} more", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    /// An array's `int32` count of items of at least `min` bytes each,
    /// refused when the bytes left cannot hold them.
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.i32()?;
        let n = usize::try_from(n).map_err(|_| format!("array length {n}"))?;
        if n.saturating_mul(min) > self.bytes.len() - self.at {
            return Err(format!("{n} items do not fit in what is left"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_own_test_vectors() {
        // Apache Kafka's UtilsTest.testMurmur2: the Java implementation's
        // results.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_are_in_range_and_crc32_is_zlibs() {
        // zlib's crc32("123456789") is the check value of CRC-32/IEEE.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            crc32_partition(b"123456789", 7),
            (0xcbf4_3926u32 % 7) as i32
        );
        for key in ["", "a", "sensor_015", "ключ", "\u{0}"] {
            for n in 1..10 {
                assert!((0..n as i32).contains(&murmur2_partition(key.as_bytes(), n)));
                assert!((0..n as i32).contains(&crc32_partition(key.as_bytes(), n)));
            }
        }
        // "21": murmur2 -973932308, toPositive 1173551340, mod 6 is 0.
        assert_eq!(murmur2_partition(b"21", 6), 1_173_551_340 % 6);
    }

    /// The bytes of an assignment as the Java client writes them.
    fn encode(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((user_data.len() as i32).to_be_bytes());
        b.extend(user_data);
        b
    }

    #[test]
    fn assignments_decode_and_broken_ones_are_refused() {
        let bytes = encode(1, &[("in", &[0, 2]), ("other", &[5])], b"ud");
        assert_eq!(
            assignment(&bytes).unwrap(),
            vec![
                ("in".to_string(), vec![0, 2]),
                ("other".to_string(), vec![5])
            ]
        );
        assert_eq!(assignment(&[]).unwrap(), Vec::new());
        // Every truncation fails cleanly (or, past the topics, still reads).
        for cut in 0..bytes.len() {
            let _ = assignment(&bytes[..cut]);
        }
        assert!(assignment(&bytes[..7]).is_err());
        // A count far beyond the bytes is refused without allocating it.
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert!(assignment(&huge).unwrap_err().contains("do not fit"));
        let mut negative = 0i16.to_be_bytes().to_vec();
        negative.extend((-1i32).to_be_bytes());
        assert!(assignment(&negative).is_err());
        let member = Member {
            member_id: "m".into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            partitions: assignment(&bytes).unwrap(),
        };
        assert!(member.holds("in", 2) && !member.holds("in", 1) && !member.holds("other", 0));
    }
}
