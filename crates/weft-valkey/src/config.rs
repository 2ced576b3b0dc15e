//! How to connect a Valkey store.

use weft_core::{Error, MachineConfig, PartitionCount, Result};

/// The key prefix when none is configured.
pub const KEY_PREFIX_DEFAULT: &str = "weft:";

/// The longest retention accepted: 100 years. Lua computes with doubles, so
/// every time it handles must stay below 2^53 ms; this keeps retention due
/// times far inside that.
pub const RETENTION_MS_MAX: i64 = 100 * 365 * 24 * 3_600_000;

/// The latest time (ms since the epoch) a `run_at_ms` may name: 2^53, the
/// largest integer Lua's doubles hold exactly.
pub const RUN_AT_MS_MAX: i64 = 1 << 53;

/// Everything `ValkeyStore::connect` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValkeyConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` with the
    /// `tls` feature. User and password authenticate (ACL user or `AUTH`).
    pub url: String,
    /// Put before every key, outside the hash tag (`weft:` by default), so
    /// several stores can share one server.
    pub key_prefix: String,
    /// `P`; `None` accepts the recorded count (or records the default on
    /// first use). A count that differs from the recorded one refuses.
    pub partitions: Option<PartitionCount>,
    /// Retention and payload limits for the state machine.
    pub machine: MachineConfig,
}

impl ValkeyConfig {
    /// A store at `url` with the default prefix and settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: KEY_PREFIX_DEFAULT.to_owned(),
            partitions: None,
            machine: MachineConfig::default(),
        }
    }

    /// Checks what can be checked without a server.
    pub fn validate(&self) -> Result<()> {
        if self.key_prefix.contains(['{', '}']) {
            return Err(Error::invalid(
                "key_prefix",
                "must not contain braces; the hash tag follows it",
            ));
        }
        let retention = self.machine.retention_ms;
        if !(0..=RETENTION_MS_MAX).contains(&retention) {
            return Err(Error::invalid(
                "retention_ms",
                format!("must be 0..={RETENTION_MS_MAX}, got {retention}"),
            ));
        }
        Ok(())
    }
}
