//! `partition_audit`: compares a partition's rows with what their bodies say.
//!
//! Definitions: a problem is one disagreement, reported as one line naming
//! the execution: an index column that differs from the body, a timer the body
//! does not call for (or one it calls for that is missing), a timer of a
//! missing execution, a lease in the wrong state, a lost idempotency key.
//!
//! Invariants: the audit only reads; a healthy store reports no problems.

use std::collections::{BTreeMap, BTreeSet};

use weft_core::machine::timers_of;
use weft_core::{AuditReport, Execution, PartitionId, Result, State};

use crate::db::{from_json, partition_sql, Ctx};
use crate::executions::{self, Row};
use crate::timers;

/// The timers of one partition: execution id → (kind, due) pairs.
type TimerMap = BTreeMap<String, Vec<(String, i64)>>;

/// Audits every execution and timer of `partition`.
pub(crate) fn audit(ctx: &Ctx<'_>, partition: PartitionId) -> Result<AuditReport> {
    ctx.check_partition(partition)?;
    let mut report = AuditReport::default();
    let mut timers: TimerMap = BTreeMap::new();
    for row in timers::of_partition(ctx.conn, partition)? {
        timers
            .entry(row.execution_id)
            .or_default()
            .push((row.kind, row.due_ms));
    }
    for row in executions::rows_of_partition(ctx.conn, partition)? {
        report.executions += 1;
        let stored = timers.remove(&row.id).unwrap_or_default();
        let exec: Execution = match from_json("execution", &row.body) {
            Ok(exec) => exec,
            Err(err) => {
                report.problems.push(format!("{}: {err}", row.id));
                continue;
            }
        };
        check_columns(&row, &exec, &mut report.problems);
        check_timers(ctx, &exec, stored, &mut report.problems);
        check_key(ctx, &exec, &mut report.problems)?;
    }
    // Whatever is left belongs to no execution of this partition.
    for (execution_id, orphans) in timers {
        for (kind, due_ms) in orphans {
            report.problems.push(format!(
                "{execution_id}: {kind} timer due at {due_ms} but no such execution here"
            ));
        }
    }
    Ok(report)
}

/// The index columns and the lease must agree with the body.
fn check_columns(row: &Row, exec: &Execution, problems: &mut Vec<String>) {
    let id = &row.id;
    if exec.id.as_str() != id {
        problems.push(format!("{id}: body names id {}", exec.id));
    }
    if row.partition_id != partition_sql(exec.id.partition()) {
        problems.push(format!("{id}: stored in partition {}", row.partition_id));
    }
    let expected_text = [
        Some(exec.state.as_str().to_owned()),
        Some(exec.lane.clone()),
        Some(exec.kind.clone()),
        Some(exec.capset()),
        exec.flow_id.as_ref().map(ToString::to_string),
    ];
    let names = ["state", "lane", "kind", "capset", "flow_id"];
    for ((name, stored), expected) in names.iter().zip(&row.text).zip(&expected_text) {
        if stored != expected {
            problems.push(format!(
                "{id}: column {name} is {stored:?}, body says {expected:?}"
            ));
        }
    }
    let expected_numbers = [i64::from(exec.priority), exec.ready_at_ms];
    for ((name, stored), expected) in ["priority", "ready_at_ms"]
        .iter()
        .zip(row.numbers)
        .zip(expected_numbers)
    {
        if stored != expected {
            problems.push(format!(
                "{id}: column {name} is {stored}, body says {expected}"
            ));
        }
    }
    if !row.has_payload {
        problems.push(format!("{id}: payload row missing"));
    }
    if (exec.state == State::Active) != exec.lease.is_some() {
        problems.push(format!(
            "{id}: state {} with lease {:?}",
            exec.state.as_str(),
            exec.lease.as_ref().map(|l| l.epoch)
        ));
    }
}

/// The timer rows must be exactly `timers_of` the body.
fn check_timers(
    ctx: &Ctx<'_>,
    exec: &Execution,
    stored: Vec<(String, i64)>,
    problems: &mut Vec<String>,
) {
    let id = exec.id.as_str();
    let expected: BTreeSet<(String, i64)> = timers_of(exec, ctx.machine)
        .into_iter()
        .map(|t| (t.kind.as_str().to_owned(), t.due_ms))
        .collect();
    let count = stored.len();
    let stored: BTreeSet<(String, i64)> = stored.into_iter().collect();
    let kinds: BTreeSet<&str> = stored.iter().map(|(kind, _)| kind.as_str()).collect();
    if kinds.len() != count {
        problems.push(format!("{id}: two timers of one kind: {stored:?}"));
    }
    for (kind, due_ms) in stored.difference(&expected) {
        problems.push(format!("{id}: stray {kind} timer due at {due_ms}"));
    }
    for (kind, due_ms) in expected.difference(&stored) {
        problems.push(format!("{id}: missing {kind} timer due at {due_ms}"));
    }
}

/// An execution's idempotency key must point back at it.
fn check_key(ctx: &Ctx<'_>, exec: &Execution, problems: &mut Vec<String>) -> Result<()> {
    let Some(key) = &exec.idempotency_key else {
        return Ok(());
    };
    let owner = executions::key_owner(ctx.conn, key)?;
    if owner.as_deref() != Some(exec.id.as_str()) {
        problems.push(format!(
            "{}: idempotency key {key:?} points at {owner:?}",
            exec.id
        ));
    }
    Ok(())
}
