//! Queries on `executions` and `idempotency_keys`.
//!
//! Definitions: a row is `(id, partition_id, body)` plus the index columns
//! `state, lane, kind, capset, priority, ready_at_ms, flow_id`, all copied
//! from `body` (the JSON of `weft_core::Execution`).
//!
//! Invariants: the index columns are written only by `upsert`, from the same
//! `Execution` as the body, so they never disagree with it (the audit checks).
//! An idempotency key row exists exactly while its execution does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use weft_core::{Error, Execution, LaneDepth, ListParams, Page, PartitionId, Result, State};

use crate::db::{db_error, from_json, partition_sql, to_json};

/// The JSON of an execution without its payload (kept in `payloads`).
fn body_json(exec: &mut Execution) -> Result<String> {
    let payload = std::mem::take(&mut exec.payload);
    let body = to_json("execution", exec);
    exec.payload = payload;
    body
}

/// An execution from its stored body and payload.
fn parse(body: &str, payload: &str) -> Result<Execution> {
    let mut exec: Execution = from_json("execution", body)?;
    exec.payload = from_json("payload", payload)?;
    Ok(exec)
}

/// Loads one execution, if it exists.
pub(crate) fn load(conn: &Connection, id: &str) -> Result<Option<Execution>> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT e.body, p.payload FROM executions e JOIN payloads p ON p.id = e.payload_id
             WHERE e.id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(db_error)?;
    row.map(|(body, payload)| parse(&body, &payload))
        .transpose()
}

/// Inserts a new execution, its payload and its index columns.
pub(crate) fn insert(conn: &Connection, exec: &mut Execution) -> Result<()> {
    let payload = to_json("payload", &exec.payload)?;
    let body = body_json(exec)?;
    conn.prepare_cached("INSERT INTO payloads (payload) VALUES (?1)")
        .and_then(|mut stmt| stmt.execute([payload]))
        .map_err(db_error)?;
    let payload_id = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO executions (id, partition_id, state, lane, kind, capset, priority,
                                 ready_at_ms, flow_id, payload_id, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            exec.id.as_str(),
            partition_sql(exec.id.partition()),
            exec.state.as_str(),
            exec.lane,
            exec.kind,
            exec.capset(),
            exec.priority,
            exec.ready_at_ms,
            exec.flow_id.as_ref().map(|f| f.as_str()),
            payload_id,
            body,
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// Rewrites an existing execution's body and index columns; the payload
/// never changes after submit.
pub(crate) fn update(conn: &Connection, exec: &mut Execution) -> Result<()> {
    let body = body_json(exec)?;
    let changed = conn
        .prepare_cached(
            "UPDATE executions SET state = ?2, lane = ?3, kind = ?4, capset = ?5, priority = ?6,
                                   ready_at_ms = ?7, flow_id = ?8, body = ?9
             WHERE id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                exec.id.as_str(),
                exec.state.as_str(),
                exec.lane,
                exec.kind,
                exec.capset(),
                exec.priority,
                exec.ready_at_ms,
                exec.flow_id.as_ref().map(|f| f.as_str()),
                body,
            ])
        })
        .map_err(db_error)?;
    if changed != 1 {
        return Err(Error::Internal(format!(
            "{} vanished mid-transaction",
            exec.id
        )));
    }
    Ok(())
}

/// Deletes an execution row, its payload and its idempotency key (attempts
/// and timers are their modules' business).
pub(crate) fn delete(conn: &Connection, exec: &Execution) -> Result<()> {
    let id = exec.id.as_str();
    for sql in [
        "DELETE FROM payloads WHERE id = (SELECT payload_id FROM executions WHERE id = ?1)",
        "DELETE FROM executions WHERE id = ?1",
    ] {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(db_error)?;
    }
    if let Some(key) = &exec.idempotency_key {
        conn.prepare_cached("DELETE FROM idempotency_keys WHERE key = ?1 AND execution_id = ?2")
            .and_then(|mut stmt| stmt.execute([key.as_str(), id]))
            .map_err(db_error)?;
    }
    Ok(())
}

/// The execution holding an idempotency key, if any.
pub(crate) fn key_owner(conn: &Connection, key: &str) -> Result<Option<String>> {
    conn.prepare_cached("SELECT execution_id FROM idempotency_keys WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
        .map_err(db_error)
}

/// Records (or moves) an idempotency key to an execution.
pub(crate) fn key_set(conn: &Connection, key: &str, execution_id: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (key, execution_id) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET execution_id = excluded.execution_id",
    )
    .and_then(|mut stmt| stmt.execute([key, execution_id]))
    .map_err(db_error)?;
    Ok(())
}

/// Whether any execution row of flow `flow_id` is left.
pub(crate) fn flow_has_members(conn: &Connection, flow_id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM executions WHERE flow_id = ?1 LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([flow_id], |_| Ok(())).optional())
        .map(|row| row.is_some())
        .map_err(db_error)
}

/// The capability sets present among a lane's waiting executions.
pub(crate) fn waiting_capsets(
    conn: &Connection,
    partition: PartitionId,
    lane: &str,
) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(
            // A loose index scan: one index seek per distinct capset, where
            // `SELECT DISTINCT` would visit every waiting row of the lane.
            "WITH RECURSIVE caps (capset) AS (
                SELECT (SELECT capset FROM executions
                        WHERE partition_id = ?1 AND lane = ?2 AND state = 'waiting'
                        ORDER BY capset LIMIT 1)
                UNION ALL
                SELECT (SELECT capset FROM executions
                        WHERE partition_id = ?1 AND lane = ?2 AND state = 'waiting'
                          AND capset > caps.capset
                        ORDER BY capset LIMIT 1)
                FROM caps WHERE caps.capset IS NOT NULL
             )
             SELECT capset FROM caps WHERE capset IS NOT NULL",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![partition_sql(partition), lane], |row| row.get(0))
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_error)
}

/// A waiting execution at the head of its (lane, capset) queue.
pub(crate) struct Head {
    /// Claim order: priority, high first.
    pub priority: i32,
    /// Claim order: then oldest.
    pub ready_at_ms: i64,
    /// Claim order: then id.
    pub id: String,
    /// The execution's JSON, parsed only if it is chosen.
    pub body: String,
    /// Where its payload is.
    pub payload_id: i64,
}

impl Head {
    /// The whole execution, payload included.
    pub fn load(&self, conn: &Connection) -> Result<Execution> {
        let payload: String = conn
            .prepare_cached("SELECT payload FROM payloads WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([self.payload_id], |row| row.get(0)))
            .map_err(db_error)?;
        parse(&self.body, &payload)
    }
}

/// Up to `max` waiting executions of one (lane, capset), in claim order.
pub(crate) fn waiting_heads(
    conn: &Connection,
    partition: PartitionId,
    lane: &str,
    capset: &str,
    max: u32,
) -> Result<Vec<Head>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT priority, ready_at_ms, id, body, payload_id FROM executions
             WHERE partition_id = ?1 AND lane = ?2 AND capset = ?3 AND state = 'waiting'
             ORDER BY priority DESC, ready_at_ms, id
             LIMIT ?4",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map(
            params![partition_sql(partition), lane, capset, max],
            |row| {
                Ok(Head {
                    priority: row.get(0)?,
                    ready_at_ms: row.get(1)?,
                    id: row.get(2)?,
                    body: row.get(3)?,
                    payload_id: row.get(4)?,
                })
            },
        )
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_error)
}

/// One page of executions in id order, filtered. `params.limit` is checked.
pub(crate) fn list(conn: &Connection, params: &ListParams) -> Result<Page> {
    let mut sql = String::from(
        "SELECT e.body, p.payload FROM executions e JOIN payloads p ON p.id = e.payload_id
         WHERE 1 = 1",
    );
    let mut args: Vec<SqlValue> = Vec::new();
    let filters = [
        ("lane", params.lane.clone()),
        ("state", params.state.map(|s| s.as_str().to_owned())),
        ("kind", params.kind.clone()),
        ("flow_id", params.flow_id.clone()),
    ];
    for (column, value) in filters {
        if let Some(value) = value {
            let _ = write!(sql, " AND e.{column} = ?");
            args.push(SqlValue::Text(value));
        }
    }
    if let Some(cursor) = &params.cursor {
        sql.push_str(" AND e.id > ?");
        args.push(SqlValue::Text(cursor.clone()));
    }
    // One row beyond the page says whether another page exists.
    sql.push_str(" ORDER BY e.id LIMIT ?");
    args.push(SqlValue::Integer(i64::from(params.limit) + 1));
    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let rows = stmt
        .query_map(params_from_iter(args), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(db_error)?;
    let mut items = Vec::new();
    for row in rows {
        let (body, payload) = row.map_err(db_error)?;
        items.push(parse(&body, &payload)?);
    }
    let (items, next_cursor) = weft_core::page_cut(items, params.limit, |e| e.id.to_string());
    Ok(Page { items, next_cursor })
}

/// Non-terminal counts per lane, sorted by lane.
pub(crate) fn lane_depths(conn: &Connection) -> Result<Vec<LaneDepth>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT lane, state, COUNT(*) FROM executions
             WHERE state IN ('waiting', 'delayed', 'active', 'suspended', 'blocked')
             GROUP BY lane, state",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(db_error)?;
    let mut depths: BTreeMap<String, LaneDepth> = BTreeMap::new();
    for row in rows {
        let (lane, state, count) = row.map_err(db_error)?;
        let count = u64::try_from(count).unwrap_or(0);
        let depth = depths.entry(lane.clone()).or_insert_with(|| LaneDepth {
            lane,
            ..LaneDepth::default()
        });
        match State::parse(&state) {
            Ok(State::Waiting) => depth.waiting += count,
            Ok(State::Delayed) => depth.delayed += count,
            Ok(State::Active) => depth.active += count,
            Ok(State::Suspended) => depth.suspended += count,
            Ok(State::Blocked) => depth.blocked += count,
            _ => {}
        }
    }
    Ok(depths.into_values().collect())
}

/// An execution row as stored, for the audit.
pub(crate) struct Row {
    /// The primary key.
    pub id: String,
    /// The stored partition column.
    pub partition_id: i64,
    /// The stored index columns: state, lane, kind, capset, flow id.
    pub text: [Option<String>; 5],
    /// The stored index columns: priority, ready_at_ms.
    pub numbers: [i64; 2],
    /// The execution's JSON, without its payload.
    pub body: String,
    /// Whether its payload row exists.
    pub has_payload: bool,
}

/// The smallest id of a partition and the smallest of the next one: ids are
/// `ex_` and four hex digits of partition, then time and randomness, so a
/// partition's executions are one range of the primary key.
pub(crate) fn id_range(partition: PartitionId) -> (String, String) {
    let next = u32::from(partition.0) + 1;
    (format!("ex_{:04x}", partition.0), format!("ex_{next:04x}"))
}

/// Every execution row of a partition, in id order.
pub(crate) fn rows_of_partition(conn: &Connection, partition: PartitionId) -> Result<Vec<Row>> {
    let (from, to) = id_range(partition);
    let mut stmt = conn
        .prepare_cached(
            "SELECT e.id, e.partition_id, e.state, e.lane, e.kind, e.capset, e.flow_id,
                    e.priority, e.ready_at_ms, e.body, p.id IS NOT NULL
             FROM executions e LEFT JOIN payloads p ON p.id = e.payload_id
             WHERE e.id >= ?1 AND e.id < ?2 ORDER BY e.id",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([from, to], |row| {
            Ok(Row {
                id: row.get(0)?,
                partition_id: row.get(1)?,
                text: [
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                ],
                numbers: [row.get(7)?, row.get(8)?],
                body: row.get(9)?,
                has_payload: row.get(10)?,
            })
        })
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_error)
}

#[cfg(test)]
mod tests {
    //! The audit's partition ranges must match the ids weft-core mints.
    use weft_core::{ExecutionId, PartitionId};

    #[test]
    fn id_ranges_hold_the_ids_of_their_partition() {
        for p in [0u16, 1, 15, 16, 255, 4095] {
            let (from, to) = super::id_range(PartitionId(p));
            for now in [0, 1_700_000_000_000, i64::MAX] {
                let id = ExecutionId::mint(PartitionId(p), now);
                assert!(
                    from.as_str() <= id.as_str() && id.as_str() < to.as_str(),
                    "{id}"
                );
            }
        }
    }
}
