//! Partition ownership: queries on `engine_instances` and `partition_owners`.
//!
//! Definitions: an instance is live while its row's `expires_at_ms` is after
//! the store's time; it holds a partition while its `partition_owners` row
//! names it and has not expired. With `n` live instances an instance's fair
//! share is `ceil(P / n)`.
//!
//! Invariants: a partition has at most one owner row (its primary key); an
//! instance takes only partitions that are unowned or whose lease lapsed, so
//! two live instances never hold the same partition at once. Each rebalance
//! moves the caller towards its share: it sheds its highest partitions first
//! and takes the lowest free ones first, so shares converge within a few
//! rounds without coordination.

use std::collections::BTreeSet;

use rusqlite::params;
use weft_core::{Error, PartitionId, PartitionOwner, RebalanceParams, Result};

use crate::db::{db_error, partition_sql, Ctx};

/// Renews `params.instance_id` and moves it towards its fair share.
pub(crate) fn rebalance(ctx: &Ctx<'_>, params: &RebalanceParams) -> Result<Vec<PartitionId>> {
    let me = params.instance_id.as_str();
    if params.leaving {
        leave(ctx, me)?;
        return Ok(Vec::new());
    }
    let expires_at_ms = ctx.now_ms.saturating_add(params.lease_ms);
    let conn = ctx.conn;
    conn.prepare_cached(
        "INSERT INTO engine_instances (instance_id, expires_at_ms) VALUES (?1, ?2)
         ON CONFLICT (instance_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
    )
    .and_then(|mut stmt| stmt.execute(params![me, expires_at_ms]))
    .map_err(db_error)?;
    conn.prepare_cached("DELETE FROM engine_instances WHERE expires_at_ms <= ?1")
        .and_then(|mut stmt| stmt.execute([ctx.now_ms]))
        .map_err(db_error)?;
    let live: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM engine_instances")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(db_error)?;
    let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
    let target = u32::from(ctx.partitions.get()).div_ceil(live) as usize;
    conn.prepare_cached("UPDATE partition_owners SET expires_at_ms = ?2 WHERE instance_id = ?1")
        .and_then(|mut stmt| stmt.execute(params![me, expires_at_ms]))
        .map_err(db_error)?;
    let mut mine = held_by(ctx, me)?;
    while mine.len() > target {
        let Some(last) = mine.pop() else { break };
        release(ctx, me, last)?;
    }
    if mine.len() < target {
        for partition in free_partitions(ctx, target - mine.len())? {
            take(ctx, me, partition, expires_at_ms)?;
            mine.push(partition);
        }
        mine.sort();
    }
    Ok(mine)
}

/// Removes the instance and releases everything it holds.
fn leave(ctx: &Ctx<'_>, me: &str) -> Result<()> {
    for sql in [
        "DELETE FROM engine_instances WHERE instance_id = ?1",
        "DELETE FROM partition_owners WHERE instance_id = ?1",
    ] {
        ctx.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([me]))
            .map_err(db_error)?;
    }
    Ok(())
}

/// The partitions whose owner row names `me`, ascending.
fn held_by(ctx: &Ctx<'_>, me: &str) -> Result<Vec<PartitionId>> {
    let mut stmt = ctx
        .conn
        .prepare_cached(
            "SELECT partition_id FROM partition_owners WHERE instance_id = ?1
             ORDER BY partition_id",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([me], |row| row.get::<_, i64>(0))
        .map_err(db_error)?;
    let mut held = Vec::new();
    for row in rows {
        let partition = row.map_err(db_error)?;
        match u16::try_from(partition) {
            Ok(p) if ctx.partitions.contains(PartitionId(p)) => held.push(PartitionId(p)),
            // A row beyond P cannot be swept; forget it.
            _ => tracing::warn!(partition, "ignoring owner row of an unknown partition"),
        }
    }
    Ok(held)
}

/// Up to `wanted` partitions with no live owner, lowest first.
fn free_partitions(ctx: &Ctx<'_>, wanted: usize) -> Result<Vec<PartitionId>> {
    let mut stmt = ctx
        .conn
        .prepare_cached("SELECT partition_id FROM partition_owners WHERE expires_at_ms > ?1")
        .map_err(db_error)?;
    let rows = stmt
        .query_map([ctx.now_ms], |row| row.get::<_, i64>(0))
        .map_err(db_error)?;
    let taken = rows
        .collect::<rusqlite::Result<BTreeSet<i64>>>()
        .map_err(db_error)?;
    Ok(ctx
        .partitions
        .iter()
        .filter(|p| !taken.contains(&partition_sql(*p)))
        .take(wanted)
        .collect())
}

fn take(ctx: &Ctx<'_>, me: &str, partition: PartitionId, expires_at_ms: i64) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO partition_owners (partition_id, instance_id, expires_at_ms)
             VALUES (?1, ?2, ?3)
             ON CONFLICT (partition_id) DO UPDATE SET
                instance_id = excluded.instance_id, expires_at_ms = excluded.expires_at_ms",
        )
        .and_then(|mut stmt| stmt.execute(params![partition_sql(partition), me, expires_at_ms]))
        .map_err(db_error)?;
    Ok(())
}

fn release(ctx: &Ctx<'_>, me: &str, partition: PartitionId) -> Result<()> {
    ctx.conn
        .prepare_cached("DELETE FROM partition_owners WHERE partition_id = ?1 AND instance_id = ?2")
        .and_then(|mut stmt| stmt.execute(params![partition_sql(partition), me]))
        .map_err(db_error)?;
    Ok(())
}

/// Every partition lease, by partition.
pub(crate) fn owners(ctx: &Ctx<'_>) -> Result<Vec<PartitionOwner>> {
    let mut stmt = ctx
        .conn
        .prepare_cached(
            "SELECT partition_id, instance_id, expires_at_ms FROM partition_owners
             ORDER BY partition_id",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(db_error)?;
    let mut owners = Vec::new();
    for row in rows {
        let (partition, instance_id, expires_at_ms) = row.map_err(db_error)?;
        let partition = u16::try_from(partition)
            .map_err(|_| Error::Internal(format!("corrupt partition {partition} in owners")))?;
        owners.push(PartitionOwner {
            partition: PartitionId(partition),
            instance_id,
            expires_at_ms,
        });
    }
    Ok(owners)
}
