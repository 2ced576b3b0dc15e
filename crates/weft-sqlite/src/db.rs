//! The connection and the one way an operation touches it.
//!
//! Definitions: `Db` owns one SQLite connection behind a mutex; `Db::run`
//! opens a transaction, hands the operation a `Ctx` (the transaction, the
//! store's time and settings, and the due hints to publish), and commits.
//!
//! Invariants: every operation is exactly one transaction. Writers begin with
//! `BEGIN IMMEDIATE`, so two processes sharing a file serialise on SQLite's
//! write lock instead of failing mid-transaction on a lock upgrade. The time
//! is read after the lock is taken, so commit order and time order agree
//! within one process. Due hints go out only after the commit succeeds.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use tokio::sync::broadcast;
use weft_core::{
    Clock, DueHint, Error, MachineConfig, PartitionCount, PartitionId, Result, StoreEvent,
};

use crate::config::SqliteConfig;

/// Room for due hints not yet read by a slow subscriber; older ones are lost,
/// which hints may be.
const HINT_CHANNEL_CAPACITY: usize = 1024;

/// Prepared statements kept per connection; the store uses about 40.
const STATEMENT_CACHE_CAPACITY: usize = 128;

/// Whether an operation may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// A deferred transaction: a consistent snapshot, no write lock.
    Read,
    /// An immediate transaction: takes the write lock up front.
    Write,
}

/// What an operation sees while its transaction is open.
pub(crate) struct Ctx<'a> {
    /// The open transaction.
    pub conn: &'a Connection,
    /// The store's time for the whole operation.
    pub now_ms: i64,
    /// The state machine's settings.
    pub machine: &'a MachineConfig,
    /// `P`.
    pub partitions: PartitionCount,
    /// Timers set by this operation, published after commit.
    pub hints: Vec<DueHint>,
    /// Executions this operation ended or made claimable, published after
    /// commit.
    pub events: Vec<StoreEvent>,
}

impl Ctx<'_> {
    /// `InvalidArgument` unless `partition` exists in this store.
    pub fn check_partition(&self, partition: PartitionId) -> Result<()> {
        if self.partitions.contains(partition) {
            return Ok(());
        }
        Err(Error::invalid(
            "partition",
            format!(
                "must be < {} (the store's partition count), got {partition}",
                self.partitions.get()
            ),
        ))
    }
}

/// The store's shared state.
pub(crate) struct Db {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    machine: MachineConfig,
    partitions: PartitionCount,
    hints: broadcast::Sender<DueHint>,
    events: broadcast::Sender<StoreEvent>,
}

impl Db {
    /// Opens the database, applies migrations and settles `P`.
    pub fn open(config: &SqliteConfig) -> Result<Self> {
        let mut conn = connect(config)?;
        let partitions = crate::schema::init(&mut conn, config.partitions)?;
        let (hints, _) = broadcast::channel(HINT_CHANNEL_CAPACITY);
        let (events, _) = broadcast::channel(HINT_CHANNEL_CAPACITY);
        Ok(Self {
            conn: Mutex::new(conn),
            clock: Arc::clone(&config.clock),
            machine: config.machine.clone(),
            partitions,
            hints,
            events,
        })
    }

    /// `P`.
    pub fn partitions(&self) -> PartitionCount {
        self.partitions
    }

    /// The store's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A new receiver of due hints.
    pub fn subscribe(&self) -> broadcast::Receiver<DueHint> {
        self.hints.subscribe()
    }

    /// A new receiver of store events.
    pub fn subscribe_events(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// Runs `op` in one transaction; rolls back if it fails. Blocks: call it
    /// from `spawn_blocking`.
    pub fn run<T>(&self, access: Access, op: impl FnOnce(&mut Ctx<'_>) -> Result<T>) -> Result<T> {
        // A panic inside `op` drops its transaction (rolling it back) before
        // the mutex is poisoned, so the connection is still sound.
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let behavior = match access {
            Access::Read => TransactionBehavior::Deferred,
            Access::Write => TransactionBehavior::Immediate,
        };
        let tx = conn.transaction_with_behavior(behavior).map_err(db_error)?;
        let mut ctx = Ctx {
            conn: &tx,
            now_ms: self.clock.now_ms(),
            machine: &self.machine,
            partitions: self.partitions,
            hints: Vec::new(),
            events: Vec::new(),
        };
        let out = op(&mut ctx)?;
        let hints = std::mem::take(&mut ctx.hints);
        let events = std::mem::take(&mut ctx.events);
        tx.commit().map_err(db_error)?;
        // No subscriber is fine: hints and events are advisory.
        for hint in hints {
            let _ = self.hints.send(hint);
        }
        for event in events {
            let _ = self.events.send(event);
        }
        Ok(out)
    }
}

/// Opens the connection and sets its pragmas.
fn connect(config: &SqliteConfig) -> Result<Connection> {
    let conn = match &config.path {
        Some(path) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ),
        None => Connection::open_in_memory(),
    }
    .map_err(db_error)?;
    conn.busy_timeout(config.busy_timeout).map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    if config.path.is_some() {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "SQLite refused WAL mode; concurrency will suffer");
        }
    }
    // With WAL, NORMAL loses at most the last transactions on power loss,
    // never consistency; the fsync per commit of FULL would cap throughput.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_error)?;
    Ok(conn)
}

/// Maps a SQLite error: contention and I/O are `Unavailable` (retry later),
/// anything else is a bug or corruption, `Internal`.
pub(crate) fn db_error(err: rusqlite::Error) -> Error {
    let transient = matches!(
        err.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
        )
    );
    if transient {
        Error::Unavailable(format!("sqlite: {err}"))
    } else {
        Error::Internal(format!("sqlite: {err}"))
    }
}

/// Parses a JSON column; bad JSON is corruption.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("corrupt {what} JSON: {e}")))
}

/// Serialises a value for a JSON column.
pub(crate) fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("cannot serialise {what}: {e}")))
}

/// A partition as stored.
pub(crate) fn partition_sql(partition: PartitionId) -> i64 {
    i64::from(partition.0)
}
