//! `partition_audit`: compares a partition's rows with what their bodies say.
//!
//! Definitions: a problem is one disagreement, reported as one line naming
//! the execution: an index column that differs from the body, a timer the body
//! does not call for (or one it calls for that is missing), a timer of a
//! missing execution, a lease in the wrong state, a lost idempotency key; and
//! for flows, counts or node states that differ from the members' rows, a
//! state the counts do not derive, a member of no flow.
//!
//! Invariants: the audit only reads; a healthy store reports no problems.

use std::collections::{BTreeMap, BTreeSet};

use weft_core::flow::{derive_state, Flow, StateCounts};
use weft_core::machine::timers_of;
use weft_core::{AuditReport, Execution, ExecutionId, PartitionId, Result, State, TimerKind};

use crate::db::{from_json, partition_sql, Ctx};
use crate::executions::{self, Row};
use crate::{flows, timers};

/// The timers of one partition: execution id → (kind, due) pairs.
type TimerMap = BTreeMap<String, Vec<(String, i64)>>;

/// Audits every execution, timer and flow of `partition`.
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
    let flows = load_flows(ctx, partition, &mut report.problems)?;
    let mut members: MemberMap = BTreeMap::new();
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
        // A member's retention waits for its flow's end (see `flow_ops`).
        let flow_running = exec
            .flow_id
            .as_ref()
            .and_then(|f| flows.get(f.as_str()))
            .is_some_and(|f| !f.state.is_terminal());
        check_timers(ctx, &exec, stored, flow_running, &mut report.problems);
        check_key(ctx, &exec, &mut report.problems)?;
        if let Some(flow_id) = &exec.flow_id {
            members.entry(flow_id.to_string()).or_default().push((
                exec.id.clone(),
                exec.flow_node.clone(),
                exec.state,
            ));
        }
    }
    check_flows(ctx, &flows, members, &mut report.problems)?;
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

/// The timer rows must be exactly `timers_of` the body, except that a
/// member of a running flow holds no retention timer once it is due.
fn check_timers(
    ctx: &Ctx<'_>,
    exec: &Execution,
    stored: Vec<(String, i64)>,
    flow_running: bool,
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
        let deferred =
            flow_running && kind.as_str() == TimerKind::Retention.as_str() && *due_ms <= ctx.now_ms;
        if !deferred {
            problems.push(format!("{id}: missing {kind} timer due at {due_ms}"));
        }
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

/// A partition's members by flow id: (member, node key, state).
type MemberMap = BTreeMap<String, Vec<(ExecutionId, Option<String>, State)>>;

/// Every flow of `partition` by id; a row that does not parse or disagrees
/// with its columns is a problem.
fn load_flows(
    ctx: &Ctx<'_>,
    partition: PartitionId,
    problems: &mut Vec<String>,
) -> Result<BTreeMap<String, Flow>> {
    let mut out = BTreeMap::new();
    for row in flows::rows_of_partition(ctx.conn, partition)? {
        let flow: Flow = match from_json("flow", &row.body) {
            Ok(flow) => flow,
            Err(err) => {
                problems.push(format!("{}: {err}", row.id));
                continue;
            }
        };
        let id = &row.id;
        if flow.id.as_str() != id {
            problems.push(format!("{id}: body names id {}", flow.id));
        }
        if row.partition_id != partition_sql(flow.id.partition()) {
            problems.push(format!("{id}: stored in partition {}", row.partition_id));
        }
        if row.state != flow.state.as_str() {
            problems.push(format!(
                "{id}: column state is {:?}, body says {:?}",
                row.state,
                flow.state.as_str()
            ));
        }
        out.insert(row.id, flow);
    }
    Ok(out)
}

/// Each flow's counts, node states and state must match its members' rows
/// (a purged member, gone once its flow ended, counts as its node's last
/// state); every member must belong to a flow of its partition.
fn check_flows(
    ctx: &Ctx<'_>,
    flows: &BTreeMap<String, Flow>,
    mut members: MemberMap,
    problems: &mut Vec<String>,
) -> Result<()> {
    for (id, flow) in flows {
        let rows = members.remove(id).unwrap_or_default();
        check_flow(flow, rows, problems);
        if let Some(key) = &flow.idempotency_key {
            let owner = flows::key_owner(ctx.conn, key)?;
            if owner.as_deref() != Some(id.as_str()) {
                problems.push(format!("{id}: idempotency key {key:?} points at {owner:?}"));
            }
        }
    }
    for (flow_id, rows) in members {
        for (member, _, _) in rows {
            problems.push(format!("{member}: member of {flow_id}, which is not here"));
        }
    }
    Ok(())
}

/// One flow against its member rows.
fn check_flow(
    flow: &Flow,
    rows: Vec<(ExecutionId, Option<String>, State)>,
    problems: &mut Vec<String>,
) {
    let id = &flow.id;
    let mut rows: BTreeMap<ExecutionId, (Option<String>, State)> = rows
        .into_iter()
        .map(|(member, key, state)| (member, (key, state)))
        .collect();
    let mut actual = StateCounts::default();
    let mut recorded = StateCounts::default();
    for node in &flow.nodes {
        recorded.shift(None, Some(node.state));
        match rows.remove(&node.execution_id) {
            Some((key, state)) => {
                actual.shift(None, Some(state));
                if state != node.state {
                    problems.push(format!(
                        "{id}: node {} records {}, its member is {}",
                        node.key,
                        node.state.as_str(),
                        state.as_str()
                    ));
                }
                if key.as_deref() != Some(node.key.as_str()) {
                    problems.push(format!(
                        "{id}: node {} has member {} of node {key:?}",
                        node.key, node.execution_id
                    ));
                }
            }
            None => {
                actual.shift(None, Some(node.state));
                if !(node.state.is_terminal() && flow.state.is_terminal()) {
                    problems.push(format!(
                        "{id}: member {} of node {} is missing",
                        node.execution_id, node.key
                    ));
                }
            }
        }
    }
    for member in rows.keys() {
        problems.push(format!(
            "{id}: {member} names the flow but is no node of it"
        ));
    }
    if flow.counts != actual {
        problems.push(format!(
            "{id}: counts {:?}, members {:?}",
            flow.counts.0, actual.0
        ));
    }
    if recorded != actual {
        problems.push(format!(
            "{id}: node states {:?}, members {:?}",
            recorded.0, actual.0
        ));
    }
    let derived = derive_state(&flow.counts, flow.cancelled);
    if flow.state != derived {
        problems.push(format!(
            "{id}: state {:?}, counts say {derived:?}",
            flow.state
        ));
    }
    if flow.state.is_terminal() != flow.finished_at_ms.is_some() {
        problems.push(format!(
            "{id}: state {:?} with finished_at {:?}",
            flow.state, flow.finished_at_ms
        ));
    }
}
