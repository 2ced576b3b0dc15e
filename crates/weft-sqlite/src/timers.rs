//! Queries on `timers`, each partition's due-index.
//!
//! Definitions: a row `(partition_id, due_ms, execution_id, kind)` says the
//! execution has a timer of `kind` due at `due_ms`; the whole row is the key,
//! in firing order.
//!
//! Invariants: an execution's rows are exactly `weft_core::machine::timers_of`
//! of its body (so at most one of each kind): every transition clears and
//! sets the timers its diff names. A row that disagrees anyway is dropped by
//! the tick that pops it, and reported by the audit.

use rusqlite::{params, Connection};
use weft_core::{PartitionId, Result, Timer};

use crate::db::{db_error, partition_sql};

/// A timer row as stored.
pub(crate) struct TimerRow {
    /// The execution it belongs to.
    pub execution_id: String,
    /// The stored kind (`TimerKind::as_str`).
    pub kind: String,
    /// When it is due.
    pub due_ms: i64,
}

fn timer_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TimerRow> {
    Ok(TimerRow {
        execution_id: row.get(0)?,
        kind: row.get(1)?,
        due_ms: row.get(2)?,
    })
}

/// Sets a timer of an execution of `partition`.
pub(crate) fn set(
    conn: &Connection,
    partition: PartitionId,
    execution_id: &str,
    timer: &Timer,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO timers (partition_id, due_ms, execution_id, kind)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            partition_sql(partition),
            timer.due_ms,
            execution_id,
            timer.kind.as_str()
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// Removes one timer row.
pub(crate) fn clear(
    conn: &Connection,
    partition: PartitionId,
    execution_id: &str,
    kind: &str,
    due_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM timers
         WHERE partition_id = ?1 AND due_ms = ?2 AND execution_id = ?3 AND kind = ?4",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            partition_sql(partition),
            due_ms,
            execution_id,
            kind
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// Up to `max` timers of a partition due by `now_ms`, earliest first.
pub(crate) fn due(
    conn: &Connection,
    partition: PartitionId,
    now_ms: i64,
    max: u32,
) -> Result<Vec<TimerRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT execution_id, kind, due_ms FROM timers
             WHERE partition_id = ?1 AND due_ms <= ?2
             ORDER BY due_ms, execution_id, kind LIMIT ?3",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![partition_sql(partition), now_ms, max], timer_row)
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_error)
}

/// The earliest timer of a partition.
pub(crate) fn next_due(conn: &Connection, partition: PartitionId) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(due_ms) FROM timers WHERE partition_id = ?1")
        .and_then(|mut stmt| stmt.query_row([partition_sql(partition)], |row| row.get(0)))
        .map_err(db_error)
}

/// Every timer of a partition, by execution.
pub(crate) fn of_partition(conn: &Connection, partition: PartitionId) -> Result<Vec<TimerRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT execution_id, kind, due_ms FROM timers WHERE partition_id = ?1
             ORDER BY execution_id, kind, due_ms",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([partition_sql(partition)], timer_row)
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_error)
}
