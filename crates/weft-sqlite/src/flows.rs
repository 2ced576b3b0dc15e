//! Queries on `flows` and `flow_idempotency_keys`.
//!
//! Definitions: a row is `(id, partition_id, state, created_at_ms, body)`;
//! `body` is the JSON of `weft_core::flow::Flow` and `state` a copy of its
//! state for the listing index.
//!
//! Invariants: `state` is written only with `body`, from the same `Flow`, so
//! the two never disagree (the audit checks). A flow idempotency key row
//! exists exactly while its flow does.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use weft_core::flow::Flow;
use weft_core::{Error, FlowListParams, FlowPage, PartitionId, Result};

use crate::db::{db_error, from_json, partition_sql, to_json};

/// Loads one flow, if it exists.
pub(crate) fn load(conn: &Connection, id: &str) -> Result<Option<Flow>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM flows WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
        .map_err(db_error)?;
    body.map(|body| from_json("flow", &body)).transpose()
}

/// Inserts a new flow.
pub(crate) fn insert(conn: &Connection, flow: &Flow) -> Result<()> {
    let body = to_json("flow", flow)?;
    conn.prepare_cached(
        "INSERT INTO flows (id, partition_id, state, created_at_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            flow.id.as_str(),
            partition_sql(flow.id.partition()),
            flow.state.as_str(),
            flow.created_at_ms,
            body,
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// Rewrites an existing flow's body and state.
pub(crate) fn update(conn: &Connection, flow: &Flow) -> Result<()> {
    let body = to_json("flow", flow)?;
    let changed = conn
        .prepare_cached("UPDATE flows SET state = ?2, body = ?3 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![flow.id.as_str(), flow.state.as_str(), body]))
        .map_err(db_error)?;
    if changed != 1 {
        return Err(Error::Internal(format!(
            "{} vanished mid-transaction",
            flow.id
        )));
    }
    Ok(())
}

/// Deletes a flow and its idempotency key.
pub(crate) fn delete(conn: &Connection, flow: &Flow) -> Result<()> {
    let id = flow.id.as_str();
    conn.prepare_cached("DELETE FROM flows WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute([id]))
        .map_err(db_error)?;
    if let Some(key) = &flow.idempotency_key {
        conn.prepare_cached("DELETE FROM flow_idempotency_keys WHERE key = ?1 AND flow_id = ?2")
            .and_then(|mut stmt| stmt.execute([key.as_str(), id]))
            .map_err(db_error)?;
    }
    Ok(())
}

/// The flow holding an idempotency key, if any.
pub(crate) fn key_owner(conn: &Connection, key: &str) -> Result<Option<String>> {
    conn.prepare_cached("SELECT flow_id FROM flow_idempotency_keys WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
        .map_err(db_error)
}

/// Records (or moves) a flow idempotency key.
pub(crate) fn key_set(conn: &Connection, key: &str, flow_id: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO flow_idempotency_keys (key, flow_id) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET flow_id = excluded.flow_id",
    )
    .and_then(|mut stmt| stmt.execute([key, flow_id]))
    .map_err(db_error)?;
    Ok(())
}

/// One page of flows in id order, filtered. `params.limit` is checked.
pub(crate) fn list(conn: &Connection, params: &FlowListParams) -> Result<FlowPage> {
    let mut sql = String::from("SELECT body FROM flows WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(state) = params.state {
        sql.push_str(" AND state = ?");
        args.push(SqlValue::Text(state.as_str().to_owned()));
    }
    if let Some(cursor) = &params.cursor {
        sql.push_str(" AND id > ?");
        args.push(SqlValue::Text(cursor.clone()));
    }
    // One row beyond the page says whether another page exists.
    sql.push_str(" ORDER BY id LIMIT ?");
    args.push(SqlValue::Integer(i64::from(params.limit) + 1));
    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let rows = stmt
        .query_map(params_from_iter(args), |row| row.get::<_, String>(0))
        .map_err(db_error)?;
    let mut items: Vec<Flow> = Vec::new();
    for row in rows {
        items.push(from_json("flow", &row.map_err(db_error)?)?);
    }
    let (items, next_cursor) = weft_core::page_cut(items, params.limit, |f| f.id.to_string());
    Ok(FlowPage { items, next_cursor })
}

/// Up to `max` flows with ids in (`after`, `before`), in id order.
pub(crate) fn page_after(
    conn: &Connection,
    after: &str,
    before: &str,
    max: u32,
) -> Result<Vec<Flow>> {
    let mut stmt = conn
        .prepare_cached("SELECT body FROM flows WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3")
        .map_err(db_error)?;
    let rows = stmt
        .query_map(rusqlite::params![after, before, i64::from(max)], |row| {
            row.get::<_, String>(0)
        })
        .map_err(db_error)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(from_json("flow", &row.map_err(db_error)?)?);
    }
    Ok(out)
}

/// A flow row as stored, for the audit.
pub(crate) struct FlowRow {
    /// The primary key.
    pub id: String,
    /// The stored partition column.
    pub partition_id: i64,
    /// The stored state column.
    pub state: String,
    /// The flow's JSON.
    pub body: String,
}

/// Every flow row of a partition, in id order. Flow ids are `fl_` and four
/// hex digits of partition, so a partition's flows are one key range.
pub(crate) fn rows_of_partition(conn: &Connection, partition: PartitionId) -> Result<Vec<FlowRow>> {
    let next = u32::from(partition.0) + 1;
    let (from, to) = (format!("fl_{:04x}", partition.0), format!("fl_{next:04x}"));
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, partition_id, state, body FROM flows
             WHERE id >= ?1 AND id < ?2 ORDER BY id",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([from, to], |row| {
            Ok(FlowRow {
                id: row.get(0)?,
                partition_id: row.get(1)?,
                state: row.get(2)?,
                body: row.get(3)?,
            })
        })
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_error)
}

#[cfg(test)]
mod tests {
    //! The stored state names must be the public ones serde writes.
    use weft_core::flow::FlowState;

    #[test]
    fn state_names_match_serde() {
        for state in [
            FlowState::Running,
            FlowState::Blocked,
            FlowState::Completed,
            FlowState::Failed,
            FlowState::Cancelled,
        ] {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json.as_str(), Some(state.as_str()));
        }
    }
}
