//! Queries on `outbox`: a partition's effects still to run, oldest first.
//!
//! Invariants: an entry is deleted in the transaction that runs it, so it is
//! run exactly once; entries are only added by the transaction whose work
//! they continue.

use rusqlite::{params, Connection, OptionalExtension};
use weft_core::{PartitionId, Result};

use crate::db::db_error;

/// One outbox row.
pub(crate) struct Entry {
    /// Order of arrival.
    pub seq: i64,
    /// The flow whose cascade it continues.
    pub flow_id: String,
    /// The JSON of the follow-ups to run.
    pub body: String,
}

/// Appends an entry.
pub(crate) fn push(
    conn: &Connection,
    partition: PartitionId,
    flow_id: &str,
    body: &str,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (partition_id, flow_id, body, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(params![partition.0, flow_id, body, now_ms]))
    .map_err(db_error)?;
    Ok(())
}

/// Up to `max` of a partition's entries, oldest first.
pub(crate) fn oldest(conn: &Connection, partition: PartitionId, max: u32) -> Result<Vec<Entry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, flow_id, body FROM outbox WHERE partition_id = ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![partition.0, max], |row| {
            Ok(Entry {
                seq: row.get(0)?,
                flow_id: row.get(1)?,
                body: row.get(2)?,
            })
        })
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_error)
}

/// Removes an entry that ran.
pub(crate) fn delete(conn: &Connection, seq: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")
        .and_then(|mut stmt| stmt.execute([seq]))
        .map_err(db_error)?;
    Ok(())
}

/// Whether the partition has entries left.
pub(crate) fn any(conn: &Connection, partition: PartitionId) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM outbox WHERE partition_id = ?1 LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([partition.0], |_| Ok(())).optional())
        .map(|found| found.is_some())
        .map_err(db_error)
}
