//! Identifiers and partition math.
//!
//! Definitions: a store has `P` partitions, fixed when it is first initialised.
//! Every id minted by Weft encodes its partition in its text, so any component
//! routes an id without a lookup.
//!
//! Invariants: `ExecutionId::partition()` is the partition the id was minted
//! for; `partition_for_key` is a pure function of its input and `P`, identical
//! in every store (the Valkey library receives the partition from Rust).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The number of partitions a store is initialised with unless told otherwise.
pub const PARTITION_COUNT_DEFAULT: u16 = 32;
/// The largest partition count a store accepts.
pub const PARTITION_COUNT_MAX: u16 = 4096;

/// One shard of the keyspace; every state transition touches exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionId(pub u16);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `P`, the number of partitions of a store: 1 ..= `PARTITION_COUNT_MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionCount(u16);

impl PartitionCount {
    /// Checks the count is within 1 ..= `PARTITION_COUNT_MAX`.
    pub fn new(count: u16) -> Result<Self, Error> {
        if count == 0 || count > PARTITION_COUNT_MAX {
            return Err(Error::invalid(
                "partitions",
                format!("must be 1..={PARTITION_COUNT_MAX}, got {count}"),
            ));
        }
        Ok(Self(count))
    }

    /// The count as a number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Every partition id, in order.
    pub fn iter(self) -> impl Iterator<Item = PartitionId> {
        (0..self.0).map(PartitionId)
    }

    /// Whether `partition` exists in a store of this size.
    pub fn contains(self, partition: PartitionId) -> bool {
        partition.0 < self.0
    }

    /// A partition picked uniformly at random, for work with no key.
    pub fn random(self) -> PartitionId {
        PartitionId(fastrand::u16(0..self.0))
    }
}

impl Default for PartitionCount {
    fn default() -> Self {
        Self(PARTITION_COUNT_DEFAULT)
    }
}

/// FNV-1a, 64 bits: small, stable across releases and languages.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The partition that owns an idempotency key, so the duplicate check and the
/// create are one atomic operation.
pub fn partition_for_key(namespace: &str, key: &str, count: PartitionCount) -> PartitionId {
    let mut bytes = Vec::with_capacity(namespace.len() + key.len() + 1);
    bytes.extend_from_slice(namespace.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    // The remainder is < count <= u16::MAX, so the cast is lossless.
    PartitionId((fnv1a64(&bytes) % u64::from(count.get())) as u16)
}

const EXECUTION_PREFIX: &str = "ex_";
const FLOW_PREFIX: &str = "fl_";
/// Prefix, 4 hex digits of partition, 12 of milliseconds, 8 random.
const ID_BODY_LEN: usize = 24;

fn mint(prefix: &str, partition: PartitionId, now_ms: i64) -> String {
    // Ids sort by partition then creation time, which makes list cursors cheap.
    let millis = u64::try_from(now_ms).unwrap_or(0) & 0xffff_ffff_ffff;
    format!(
        "{prefix}{:04x}{millis:012x}{:08x}",
        partition.0,
        fastrand::u32(..)
    )
}

fn parse_partition(prefix: &str, text: &str) -> Option<PartitionId> {
    let body = text.strip_prefix(prefix)?;
    if body.len() != ID_BODY_LEN || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(&body[..4], 16).ok().map(PartitionId)
}

macro_rules! partitioned_id {
    ($(#[$doc:meta])* $name:ident, $prefix:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Mints a fresh id on `partition`.
            pub fn mint(partition: PartitionId, now_ms: i64) -> Self {
                Self(mint($prefix, partition, now_ms))
            }

            /// Parses an id given by a client; a malformed one is `not_found`,
            /// since no such id can exist.
            pub fn parse(text: &str) -> Result<Self, Error> {
                match parse_partition($prefix, text) {
                    Some(_) => Ok(Self(text.to_owned())),
                    None => Err(Error::NotFound { what: $what, id: text.to_owned() }),
                }
            }

            /// The partition this id lives on.
            pub fn partition(&self) -> PartitionId {
                parse_partition($prefix, &self.0).unwrap_or(PartitionId(0))
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

partitioned_id!(
    /// An execution's id: opaque to clients, encodes its partition.
    ExecutionId,
    EXECUTION_PREFIX,
    "execution"
);
partitioned_id!(
    /// A flow's id: its members live on the same partition.
    FlowId,
    FLOW_PREFIX,
    "flow"
);

/// A lease's random id; with the epoch it fences every worker write.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub String);

impl LeaseId {
    /// A fresh random lease id (128 bits).
    pub fn random() -> Self {
        Self(format!(
            "{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        ))
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many leases an execution has been granted; only ever grows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LeaseEpoch(pub u64);

/// An attempt's number, from 1; continues across replays.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct AttemptNumber(pub u32);

#[cfg(test)]
mod tests {
    //! Ids must round-trip their partition and reject anything malformed.
    use super::*;

    #[test]
    fn ids_encode_their_partition() {
        for p in [0u16, 1, 31, 4095] {
            let id = ExecutionId::mint(PartitionId(p), 1_700_000_000_000);
            assert_eq!(id.partition(), PartitionId(p));
            assert_eq!(ExecutionId::parse(id.as_str()).unwrap(), id);
            let flow = FlowId::mint(PartitionId(p), 5);
            assert_eq!(flow.partition(), PartitionId(p));
        }
    }

    #[test]
    fn malformed_ids_are_not_found() {
        for text in [
            "",
            "ex_",
            "ex_zz",
            "fl_0001000000000000000000ab",
            "ex_00010000000000000000000g",
        ] {
            let err = ExecutionId::parse(text).unwrap_err();
            assert_eq!(err.kind(), "not_found", "{text}");
        }
    }

    #[test]
    fn key_partitions_are_stable_and_spread() {
        let count = PartitionCount::new(32).unwrap();
        assert_eq!(
            partition_for_key("", "a", count),
            partition_for_key("", "a", count)
        );
        let mut seen = [0u32; 32];
        for i in 0..3200 {
            seen[usize::from(partition_for_key("", &format!("key-{i}"), count).0)] += 1;
        }
        assert!(seen.iter().all(|n| (50..=150).contains(n)), "{seen:?}");
    }

    #[test]
    fn partition_count_is_bounded() {
        assert!(PartitionCount::new(0).is_err());
        assert!(PartitionCount::new(PARTITION_COUNT_MAX + 1).is_err());
        assert_eq!(PartitionCount::default().get(), 32);
    }
}
