//! Key layout and partition hash tags.
//!
//! Definitions: a key is `<prefix>{<tag>}:<suffix>`. Every key of partition
//! `p` carries partition `p`'s tag, so a cluster stores the partition in one
//! slot and one `FCALL` may touch all of it. The engine's keys carry the tag
//! `engine`. The table of suffixes is in the crate README.
//!
//! Invariants: `partition_tags(P)` is a pure function of `P`; its tags are
//! distinct, and the slot of partition `p`'s tag is the slot nearest
//! `p × 16384 / P` that any short tag reaches, so the `P` partitions spread
//! evenly over a cluster's 16384 slots. (The obvious `{0}`…`{31}` does not:
//! their CRC16 slots bunch together, see the tests.)

use weft_core::{PartitionCount, PartitionId};

/// The number of hash slots of a Valkey or Redis cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// The hash tag of the engine's keys (partition leases, the record of `P`).
pub const ENGINE_TAG: &str = "engine";

/// Characters of candidate tags; with lengths 1 to 3 they reach about 95 %
/// of the slots, which keeps every tag within a few slots of its target.
const TAG_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const TAG_LEN_MAX: usize = 3;

/// CRC16/XMODEM, the checksum cluster slots are computed with.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of a key, honouring a `{tag}` as the cluster does.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % CLUSTER_SLOTS
}

/// Every candidate tag, shortest first, then in alphabet order.
fn candidate_tags() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut previous: Vec<String> = vec![String::new()];
    for _ in 0..TAG_LEN_MAX {
        let mut next = Vec::with_capacity(previous.len() * TAG_ALPHABET.len());
        for stem in &previous {
            for c in TAG_ALPHABET {
                let mut tag = stem.clone();
                tag.push(char::from(*c));
                next.push(tag);
            }
        }
        out.extend(next.iter().cloned());
        previous = next;
    }
    out
}

/// The hash tag of each partition of a store with `count` partitions.
pub fn partition_tags(count: PartitionCount) -> Vec<String> {
    // The first (shortest) candidate reaching each slot.
    let mut by_slot: Vec<Option<String>> = vec![None; usize::from(CLUSTER_SLOTS)];
    for tag in candidate_tags() {
        let slot = usize::from(crc16(tag.as_bytes()) % CLUSTER_SLOTS);
        if by_slot[slot].is_none() {
            by_slot[slot] = Some(tag);
        }
    }
    let slots = i64::from(CLUSTER_SLOTS);
    let n = i64::from(count.get());
    let mut tags = Vec::with_capacity(usize::from(count.get()));
    for p in 0..n {
        // Nearest to p × 16384 / P, rounded; ties go to the lower slot.
        let target = (p * slots * 2 + n) / (n * 2);
        let tag = (0..slots)
            .flat_map(|d| [target - d, target + d])
            .filter_map(|s| by_slot.get(usize::try_from(s.rem_euclid(slots)).ok()?))
            .find_map(|cell| cell.clone().filter(|t| !tags.contains(t)));
        // 16384 slots hold more than PARTITION_COUNT_MAX distinct tags.
        tags.push(tag.unwrap_or_else(|| format!("p{p}")));
    }
    tags
}

/// The key roots and channel names of one store.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    roots: Vec<String>,
    engine_root: String,
    due_channel: String,
    events_channel: String,
}

impl Keys {
    /// The keys of a store with `prefix` and `count` partitions.
    pub fn new(prefix: &str, count: PartitionCount) -> Self {
        Self {
            roots: partition_tags(count)
                .iter()
                .map(|tag| format!("{prefix}{{{tag}}}:"))
                .collect(),
            engine_root: Self::engine_root(prefix),
            due_channel: format!("{prefix}due"),
            events_channel: format!("{prefix}events"),
            prefix: prefix.to_owned(),
        }
    }

    /// The engine's key root, `<prefix>{engine}:`; known before `P` is.
    pub fn engine_root(prefix: &str) -> String {
        format!("{prefix}{{{ENGINE_TAG}}}:")
    }

    /// Partition `p`'s key root, `<prefix>{<tag>}:`; passed as `KEYS[1]`.
    pub fn root(&self, partition: PartitionId) -> &str {
        self.roots
            .get(usize::from(partition.0))
            .map_or("", String::as_str)
    }

    /// The engine's key root of this store.
    pub fn engine(&self) -> &str {
        &self.engine_root
    }

    /// The key prefix; the library derives the channel names from it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The channel due-time hints are published on: `<partition>:<due_ms>`.
    pub fn due_channel(&self) -> &str {
        &self.due_channel
    }

    /// The channel store events are published on: `R|<partition>|<lane>`
    /// (claimable) and `E|<state>|<id>` (ended).
    pub fn events_channel(&self) -> &str {
        &self.events_channel
    }
}

#[cfg(test)]
mod tests {
    //! Slots must match the cluster's own function, and the chosen tags must
    //! spread partitions evenly where the naive tags do not.
    use super::*;

    #[test]
    fn slots_match_known_values() {
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16(b"foo{}{bar}") % CLUSTER_SLOTS
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    fn max_gap(slots: &mut [u16]) -> u16 {
        slots.sort_unstable();
        let mut gap = slots[0] + CLUSTER_SLOTS - slots[slots.len() - 1];
        for pair in slots.windows(2) {
            gap = gap.max(pair[1] - pair[0]);
        }
        gap
    }

    #[test]
    fn tags_spread_evenly_and_are_distinct() {
        for count in [1u16, 2, 3, 7, 32, 100, 256, 1024, 4096] {
            let count = PartitionCount::new(count).unwrap();
            let tags = partition_tags(count);
            let mut unique = tags.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), tags.len(), "{count:?}");
            let n = i64::from(count.get());
            for (p, tag) in tags.iter().enumerate() {
                assert!(tag.len() <= TAG_LEN_MAX, "{tag}");
                let target = (p as i64 * 16384 * 2 + n) / (n * 2);
                let slot = i64::from(crc16(tag.as_bytes()) % CLUSTER_SLOTS);
                assert!((slot - target).abs() <= 8, "{count:?} p{p} {slot} {target}");
            }
        }
    }

    #[test]
    fn naive_tags_cluster_but_chosen_ones_do_not() {
        let count = PartitionCount::new(32).unwrap();
        let mut naive: Vec<u16> = (0..32)
            .map(|p| key_slot(format!("{{{p}}}").as_bytes()))
            .collect();
        let mut chosen: Vec<u16> = partition_tags(count)
            .iter()
            .map(|t| key_slot(format!("{{{t}}}").as_bytes()))
            .collect();
        // An even spread leaves gaps of 512 slots; the naive tags leave one
        // far larger, so a 3-shard cluster would put most partitions on one.
        assert!(max_gap(&mut chosen) <= 512 + 16, "{chosen:?}");
        assert!(max_gap(&mut naive) > 2048, "{naive:?}");
    }
}
