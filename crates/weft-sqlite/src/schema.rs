//! Migrations and the store-wide facts recorded at first initialisation.
//!
//! Definitions: the schema version is SQLite's `PRAGMA user_version`;
//! migration `n` (file `migrations/000n_*.sql`) moves version `n − 1` to `n`.
//! The partition count `P` is the `partitions` row of `meta`.
//!
//! Invariants: migrations run in order, each in the same transaction as the
//! version bump, so a crash leaves the database at a whole version. A database
//! newer than this build refuses to open, and so does a `P` that differs from
//! the recorded one: ids encode their partition, so changing `P` would strand
//! every stored execution.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use weft_core::{Error, PartitionCount, Result};

use crate::db::db_error;

/// Every migration, in order; entry `i` moves the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_flows.sql"),
    include_str!("../migrations/0003_outbox.sql"),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The `meta` key recording `P`.
const META_PARTITIONS: &str = "partitions";

/// Migrates the database and returns its partition count.
pub(crate) fn init(
    conn: &mut Connection,
    wanted: Option<PartitionCount>,
) -> Result<PartitionCount> {
    // Immediate: two processes opening a new file at once migrate it once.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    migrate(&tx)?;
    let partitions = settle_partitions(&tx, wanted)?;
    tx.commit().map_err(db_error)?;
    Ok(partitions)
}

/// Applies every migration newer than the database's version.
fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_error)?;
    let version = u32::try_from(version)
        .map_err(|_| Error::Internal(format!("schema version {version} is negative")))?;
    if version > SCHEMA_VERSION {
        return Err(Error::invalid(
            "path",
            format!(
                "the database has schema version {version}, newer than the {SCHEMA_VERSION} \
                 this build of weft-sqlite knows; upgrade Weft to open it"
            ),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let next = index + 1;
        conn.execute_batch(sql).map_err(db_error)?;
        conn.pragma_update(None, "user_version", next)
            .map_err(db_error)?;
        tracing::info!(version = next, "applied weft-sqlite migration");
    }
    Ok(())
}

/// Records `P` on first use; afterwards checks the caller agrees with it.
fn settle_partitions(conn: &Connection, wanted: Option<PartitionCount>) -> Result<PartitionCount> {
    let recorded: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [META_PARTITIONS],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_error)?;
    let Some(recorded) = recorded else {
        let count = wanted.unwrap_or_default();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)",
            (META_PARTITIONS, count.get().to_string()),
        )
        .map_err(db_error)?;
        return Ok(count);
    };
    let count = recorded
        .parse::<u16>()
        .ok()
        .and_then(|n| PartitionCount::new(n).ok())
        .ok_or_else(|| Error::Internal(format!("corrupt partition count {recorded:?} in meta")))?;
    match wanted {
        Some(wanted) if wanted != count => Err(Error::invalid(
            "partitions",
            format!(
                "the store was initialised with {} partitions, but {} were requested; \
                 the count is fixed for the life of a store",
                count.get(),
                wanted.get()
            ),
        )),
        _ => Ok(count),
    }
}
