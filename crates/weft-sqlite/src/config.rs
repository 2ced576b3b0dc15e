//! How to open a SQLite store.
//!
//! Definitions: a store lives in a file (`path: Some`) or in memory
//! (`path: None`, gone when the last handle drops). `partitions: None` means
//! "whatever the database records, or `PARTITION_COUNT_DEFAULT` on first
//! initialisation".
//!
//! URLs: `sqlite://PATH` or `sqlite:PATH` open a file (`sqlite:///abs/x.db` is
//! absolute, `sqlite://x.db` relative); `sqlite::memory:` and
//! `sqlite://:memory:` open a fresh in-memory store. A `?partitions=N` query
//! sets the partition count.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weft_core::{Clock, Error, MachineConfig, PartitionCount, Result, SystemClock};

/// How long a transaction waits for another connection's write lock before
/// the operation fails with `unavailable`.
pub const BUSY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Everything `SqliteStore::open` needs.
#[derive(Clone)]
pub struct SqliteConfig {
    /// The database file; `None` for a private in-memory database.
    pub path: Option<PathBuf>,
    /// `P`; `None` accepts the recorded count (or the default on first use).
    /// A count that differs from the recorded one refuses to open.
    pub partitions: Option<PartitionCount>,
    /// The store's clock: every operation reads time here, never from callers.
    pub clock: Arc<dyn Clock>,
    /// Retention and payload limits for the state machine.
    pub machine: MachineConfig,
    /// How long to wait for another connection's lock; see
    /// `BUSY_TIMEOUT_DEFAULT`.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: None,
            partitions: None,
            clock: Arc::new(SystemClock),
            machine: MachineConfig::default(),
            busy_timeout: BUSY_TIMEOUT_DEFAULT,
        }
    }
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("path", &self.path)
            .field("partitions", &self.partitions)
            .field("machine", &self.machine)
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteConfig {
    /// A private in-memory store with every default.
    #[must_use]
    pub fn memory() -> Self {
        Self::default()
    }

    /// A store in the file at `path`, created if missing.
    #[must_use]
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::default()
        }
    }

    /// Parses a `sqlite:` URL (see the module docs).
    ///
    /// # Errors
    ///
    /// `invalid_argument` for another scheme, a missing path, an unknown
    /// parameter or a partition count out of range.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| Error::invalid("url", format!("{url:?} is not a sqlite: URL")))?;
        let (location, query) = match rest.split_once('?') {
            Some((location, query)) => (location, Some(query)),
            None => (rest, None),
        };
        let mut config = match location {
            ":memory:" => Self::memory(),
            "" => return Err(Error::invalid("url", format!("{url:?} names no file"))),
            path => Self::file(path),
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("partitions", value)) => {
                    let count = value.parse::<u16>().map_err(|_| {
                        Error::invalid("url", format!("partitions={value:?} is not a number"))
                    })?;
                    config.partitions = Some(PartitionCount::new(count)?);
                }
                _ => {
                    return Err(Error::invalid(
                        "url",
                        format!("unknown parameter {pair:?}; known: partitions"),
                    ))
                }
            }
        }
        Ok(config)
    }

    /// Uses `clock` as the store's clock (tests inject a `ManualClock`).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Requires the partition count `partitions`.
    #[must_use]
    pub fn with_partitions(mut self, partitions: PartitionCount) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Uses `machine` for retention and payload limits.
    #[must_use]
    pub fn with_machine(mut self, machine: MachineConfig) -> Self {
        self.machine = machine;
        self
    }

    /// Waits up to `busy_timeout` for another connection's lock.
    #[must_use]
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }
}

#[cfg(test)]
mod tests {
    //! URL parsing: files, memory, the partitions parameter, and refusals.
    use super::*;

    #[test]
    fn urls_name_files_or_memory() {
        let abs = SqliteConfig::from_url("sqlite:///tmp/w.db").unwrap();
        assert_eq!(abs.path, Some(PathBuf::from("/tmp/w.db")));
        let rel = SqliteConfig::from_url("sqlite://w.db?partitions=8").unwrap();
        assert_eq!(rel.path, Some(PathBuf::from("w.db")));
        assert_eq!(rel.partitions.map(PartitionCount::get), Some(8));
        assert_eq!(
            SqliteConfig::from_url("sqlite:x.db").unwrap().path,
            Some("x.db".into())
        );
        assert!(SqliteConfig::from_url("sqlite::memory:")
            .unwrap()
            .path
            .is_none());
        assert!(SqliteConfig::from_url("sqlite://:memory:")
            .unwrap()
            .path
            .is_none());
    }

    #[test]
    fn bad_urls_are_invalid() {
        for url in [
            "postgres://x",
            "sqlite://",
            "sqlite://x.db?partitions=0",
            "sqlite://x.db?partitions=abc",
            "sqlite://x.db?mode=ro",
        ] {
            let err = SqliteConfig::from_url(url).unwrap_err();
            assert_eq!(err.kind(), "invalid_argument", "{url}");
        }
    }
}
