//! `partition_tick`: pops the due timers of one partition and applies them.
//!
//! Definitions: a timer is due when `due_ms <= now`. Applying it means
//! `machine::apply(Command::Fire(timer))` on its execution, loaded afresh (an
//! earlier timer of the same batch may have moved it).
//!
//! Invariants: every popped timer row leaves the due-index in the same
//! transaction, either through the transition's diff (applied) or by an
//! explicit delete (dropped: stale, unknown kind, no such execution, or the
//! retention of a member whose flow still runs; see `flow_ops`), so no timer
//! is ever popped twice and none blocks the head of the queue. A timer that
//! moves a flow member settles its flow in the same transaction.

use weft_core::machine::{self, Command, Outcome};
use weft_core::{PartitionId, Result, TickReport, Timer, TimerKind};

use crate::db::Ctx;
use crate::ops::{commit_transition, write_transition};
use crate::timers::{self, TimerRow};
use crate::{executions, flow_ops, outbox};

/// Applies up to `max` due timers of `partition`.
pub(crate) fn tick(ctx: &mut Ctx<'_>, partition: PartitionId, max: u32) -> Result<TickReport> {
    ctx.check_partition(partition)?;
    let mut report = TickReport {
        now_ms: ctx.now_ms,
        ..TickReport::default()
    };
    for row in timers::due(ctx.conn, partition, ctx.now_ms, max)? {
        if fire(ctx, partition, &row)? {
            report.applied += 1;
        } else {
            report.dropped += 1;
        }
    }
    // The outbox is due now: what the batch has room for runs in this tick.
    let room = max.saturating_sub(report.applied + report.dropped);
    if room > 0 {
        report.applied += flow_ops::drain_outbox(ctx, partition, room)?;
    }
    report.next_due_ms = match outbox::any(ctx.conn, partition)? {
        true => Some(ctx.now_ms),
        false => timers::next_due(ctx.conn, partition)?,
    };
    Ok(report)
}

/// Fires one timer row; `true` if it moved its execution.
fn fire(ctx: &mut Ctx<'_>, partition: PartitionId, row: &TimerRow) -> Result<bool> {
    let drop_row = |ctx: &Ctx<'_>| {
        timers::clear(
            ctx.conn,
            partition,
            &row.execution_id,
            &row.kind,
            row.due_ms,
        )
    };
    let Some(kind) = TimerKind::parse(&row.kind) else {
        tracing::warn!(
            execution_id = row.execution_id,
            kind = row.kind,
            "unknown timer kind"
        );
        drop_row(ctx)?;
        return Ok(false);
    };
    let Some(exec) = executions::load(ctx.conn, &row.execution_id)? else {
        drop_row(ctx)?;
        return Ok(false);
    };
    let timer = Timer {
        kind,
        due_ms: row.due_ms,
    };
    let mut transition = machine::apply(&exec, Command::Fire(timer), ctx.now_ms, ctx.machine)?;
    if transition.outcome != Outcome::Applied {
        drop_row(ctx)?;
        return Ok(false);
    }
    if transition.execution.is_none() {
        // Retention: a flow member stays until its flow has ended.
        if !flow_ops::purge_allowed(ctx, &exec)? {
            drop_row(ctx)?;
            return Ok(false);
        }
        write_transition(ctx, Some(&exec), &mut transition)?;
        flow_ops::after_purge(ctx, &exec)?;
    } else {
        commit_transition(ctx, Some(&exec), &mut transition)?;
    }
    if exec.id.partition() != partition {
        // The diff cleared the timer on the execution's own partition; this
        // misplaced row must not fire again.
        drop_row(ctx)?;
    }
    Ok(true)
}
