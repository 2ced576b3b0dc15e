//! The execution operations: submit, claim, and the commands that move one
//! existing execution.
//!
//! Definitions: each function here runs inside one transaction (`Ctx`); it
//! loads rows, asks `weft_core::machine` for the `Transition`, and writes it
//! with `write_transition`.
//!
//! Invariants: the state machine decides everything; this module only stores
//! its answer, exactly: the execution row and its index columns, the attempt
//! change, the timers cleared and set. A transition of a flow member settles
//! its flow in the same transaction (`commit_transition`). A failed
//! operation returns before writing or rolls back with its transaction.
//! Batches run their items in one transaction, through the same functions
//! as a single item: a submit batch is all or nothing; a completion batch
//! keeps each item's refusal to that item (`isolated`).

use weft_core::flow::Flow;
use weft_core::machine::{self, Command, Outcome, Transition};
use weft_core::{
    partition_for_key, ClaimParams, CompleteParams, DueHint, Error, Execution, ExecutionId,
    LeaseId, PartitionId, Result, State, StoreEvent, SubmitParams, Submitted, Task,
};

use crate::db::{db_error, Ctx};
use crate::{attempts, executions, flow_ops, timers};

/// Writes a transition of the execution `old` (`None` for a submit).
pub(crate) fn write_transition(
    ctx: &mut Ctx<'_>,
    old: Option<&Execution>,
    transition: &mut Transition,
) -> Result<()> {
    let id = match (transition.execution.as_mut(), old) {
        (Some(new), None) => {
            executions::insert(ctx.conn, new)?;
            new.id.clone()
        }
        (Some(new), Some(_)) => {
            executions::update(ctx.conn, new)?;
            new.id.clone()
        }
        (None, Some(old)) => {
            // Retention: the diff clears the timers, the rest goes here.
            executions::delete(ctx.conn, old)?;
            attempts::delete_all(ctx.conn, old.id.as_str())?;
            old.id.clone()
        }
        (None, None) => return Err(Error::Internal("a transition of nothing".into())),
    };
    let partition = id.partition();
    if let Some(new) = transition.execution.as_ref() {
        let was_terminal = old.is_some_and(|o| o.state.is_terminal());
        if new.state.is_terminal() && !was_terminal {
            ctx.events.push(StoreEvent::Ended {
                id: id.clone(),
                state: new.state,
            });
        }
        if new.state == State::Waiting && transition.index_to.is_some() {
            ctx.events.push(StoreEvent::Ready {
                partition,
                lane: new.lane.clone(),
                capset: new.capset(),
            });
        }
    }
    if let Some(change) = &transition.attempt {
        attempts::write(ctx.conn, id.as_str(), change)?;
    }
    for timer in &transition.timers_clear {
        let kind = timer.kind.as_str();
        timers::clear(ctx.conn, partition, id.as_str(), kind, timer.due_ms)?;
    }
    for timer in &transition.timers_set {
        timers::set(ctx.conn, partition, id.as_str(), timer)?;
        ctx.hints.push(DueHint {
            partition,
            due_ms: timer.due_ms,
        });
    }
    Ok(())
}

/// Writes a transition of an existing execution and, for a flow member,
/// settles its flow in the same transaction; returns the flow then.
pub(crate) fn commit_transition(
    ctx: &mut Ctx<'_>,
    old: Option<&Execution>,
    transition: &mut Transition,
) -> Result<Option<Flow>> {
    write_transition(ctx, old, transition)?;
    flow_ops::settle_member(ctx, old, transition)
}

/// Loads an execution or answers `not_found`; ids of partitions this store
/// does not have cannot exist.
pub(crate) fn load_required(ctx: &Ctx<'_>, id: &ExecutionId) -> Result<Execution> {
    let not_found = || Error::NotFound {
        what: "execution",
        id: id.to_string(),
    };
    if !ctx.partitions.contains(id.partition()) {
        return Err(not_found());
    }
    executions::load(ctx.conn, id.as_str())?.ok_or_else(not_found)
}

/// Creates an execution, or finds the one holding the idempotency key.
pub(crate) fn submit(ctx: &mut Ctx<'_>, params: &SubmitParams) -> Result<Submitted> {
    let transition = prepare_submit(ctx, params)?;
    write_submit(ctx, params, transition)
}

/// Creates executions in order, all or none: every item is checked before
/// the first write (a refusal names the item), and a write that fails rolls
/// the whole transaction back. A key held before, or by an earlier item,
/// yields that execution.
pub(crate) fn submit_many(ctx: &mut Ctx<'_>, params: &[SubmitParams]) -> Result<Vec<Submitted>> {
    let prepared = params
        .iter()
        .enumerate()
        .map(|(index, item)| prepare_submit(ctx, item).map_err(|e| e.at_item("executions", index)))
        .collect::<Result<Vec<_>>>()?;
    params
        .iter()
        .zip(prepared)
        .map(|(item, transition)| write_submit(ctx, item, transition))
        .collect()
}

/// The transition creating `params`' execution, or why `params` is refused;
/// writes nothing.
fn prepare_submit(ctx: &Ctx<'_>, params: &SubmitParams) -> Result<Transition> {
    let partition = match &params.idempotency_key {
        Some(key) => partition_for_key("", key, ctx.partitions),
        None => ctx.partitions.random(),
    };
    let id = ExecutionId::mint(partition, ctx.now_ms);
    // Validate first: a bad submit is refused even if its key is known.
    machine::submit(id, params, ctx.now_ms, ctx.machine)
}

/// Writes a prepared submit, unless its idempotency key already names an
/// execution, which is returned instead.
fn write_submit(
    ctx: &mut Ctx<'_>,
    params: &SubmitParams,
    mut transition: Transition,
) -> Result<Submitted> {
    if let Some(key) = &params.idempotency_key {
        if let Some(owner) = executions::key_owner(ctx.conn, key)? {
            match executions::load(ctx.conn, &owner)? {
                Some(execution) => {
                    return Ok(Submitted {
                        execution,
                        created: false,
                    })
                }
                None => tracing::warn!(key, owner, "idempotency key of a missing execution"),
            }
        }
    }
    write_transition(ctx, None, &mut transition)?;
    let execution = transition
        .execution
        .take()
        .ok_or_else(|| Error::Internal("submit created no execution".into()))?;
    if let Some(key) = &params.idempotency_key {
        executions::key_set(ctx.conn, key, execution.id.as_str())?;
    }
    Ok(Submitted {
        execution,
        created: true,
    })
}

/// The command a worker's completion is.
pub(crate) fn complete_command(params: &CompleteParams) -> Command {
    Command::Complete {
        lease: params.lease.clone(),
        result: params.result.clone(),
    }
}

/// Applies each completion in order, each as `apply` would alone, and
/// answers each one's outcome: a refused item writes nothing and does not
/// stop the others.
pub(crate) fn complete_many(
    ctx: &mut Ctx<'_>,
    params: &[CompleteParams],
) -> Result<Vec<Result<State>>> {
    let mut out = Vec::with_capacity(params.len());
    for item in params {
        let command = complete_command(item);
        let outcome = isolated(ctx, |ctx| {
            apply(ctx, &item.execution_id, command).map(|exec| exec.state)
        })?;
        out.push(outcome);
    }
    Ok(out)
}

/// Runs one item of a batch under a savepoint, so that its failure undoes
/// its own writes (a flow settle can fail after the execution was written)
/// and its unpublished hints and events, and nothing of the items before.
/// The outer error ends the whole batch: the savepoint itself failed, or
/// SQLite already rolled the transaction back (I/O, full disk), or the store
/// is unavailable, so the batch is better retried as a whole.
fn isolated<T>(ctx: &mut Ctx<'_>, op: impl FnOnce(&mut Ctx<'_>) -> Result<T>) -> Result<Result<T>> {
    let (hints, events) = (ctx.hints.len(), ctx.events.len());
    run_sql(ctx, "SAVEPOINT batch_item")?;
    match op(ctx) {
        Ok(value) => {
            run_sql(ctx, "RELEASE batch_item")?;
            Ok(Ok(value))
        }
        Err(error) => {
            if ctx.conn.is_autocommit() || matches!(error, Error::Unavailable(_)) {
                return Err(error);
            }
            run_sql(ctx, "ROLLBACK TO batch_item")?;
            run_sql(ctx, "RELEASE batch_item")?;
            ctx.hints.truncate(hints);
            ctx.events.truncate(events);
            Ok(Err(error))
        }
    }
}

/// Runs one statement that returns no rows.
fn run_sql(ctx: &Ctx<'_>, sql: &str) -> Result<()> {
    ctx.conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map_err(db_error)?;
    Ok(())
}

/// Applies `command` to one execution and writes the result; a replayed write
/// changes nothing.
pub(crate) fn apply(ctx: &mut Ctx<'_>, id: &ExecutionId, command: Command) -> Result<Execution> {
    let exec = load_required(ctx, id)?;
    let mut transition = machine::apply(&exec, command, ctx.now_ms, ctx.machine)?;
    if transition.outcome == Outcome::Applied {
        commit_transition(ctx, Some(&exec), &mut transition)?;
    }
    transition
        .execution
        .ok_or_else(|| Error::Internal(format!("a command purged {id}")))
}

/// A claim whose fields have been checked.
#[derive(Clone)]
pub(crate) struct CheckedClaim {
    /// The worker.
    pub worker_id: String,
    /// Lanes, deduplicated.
    pub lanes: Vec<String>,
    /// Capabilities, sorted and deduplicated.
    pub capabilities: Vec<String>,
    /// 1 ..= `CLAIM_MAX`.
    pub max: u32,
    /// The lease's duration.
    pub lease_ms: i64,
}

/// Checks a claim's fields; says which one is wrong.
pub(crate) fn check_claim(params: &ClaimParams) -> Result<CheckedClaim> {
    let params = params.normalized()?;
    Ok(CheckedClaim {
        worker_id: params.worker_id,
        lanes: params.lanes,
        capabilities: params.capabilities,
        max: params.max,
        lease_ms: params.lease_ms,
    })
}

/// Whether a worker with `capabilities` (sorted) may run executions requiring
/// the joined `capset`.
fn eligible(capset: &str, capabilities: &[String]) -> bool {
    capset.is_empty()
        || capset.split(',').all(|cap| {
            capabilities
                .binary_search_by(|c| c.as_str().cmp(cap))
                .is_ok()
        })
}

/// Claims up to `claim.max` waiting executions of one partition.
/// Claims across every partition from `start` in one transaction: one lock
/// instead of one per partition, which is what a single writer needs.
pub(crate) fn claim_across(
    ctx: &mut Ctx<'_>,
    start: PartitionId,
    checked: &CheckedClaim,
) -> Result<Vec<Task>> {
    let count = ctx.partitions.get();
    let mut tasks = Vec::new();
    for offset in 0..count {
        let taken = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
        let wanted = checked.max.saturating_sub(taken);
        if wanted == 0 {
            break;
        }
        let partition = PartitionId((start.0 % count + offset) % count);
        let part = CheckedClaim {
            max: wanted,
            ..checked.clone()
        };
        tasks.extend(claim(ctx, partition, &part)?);
    }
    Ok(tasks)
}

pub(crate) fn claim(
    ctx: &mut Ctx<'_>,
    partition: PartitionId,
    claim: &CheckedClaim,
) -> Result<Vec<Task>> {
    ctx.check_partition(partition)?;
    // Each (lane, eligible capset) queue yields its own head in claim order;
    // merging the heads gives the partition-wide order.
    let mut heads = Vec::new();
    for lane in &claim.lanes {
        for capset in executions::waiting_capsets(ctx.conn, partition, lane)? {
            if eligible(&capset, &claim.capabilities) {
                heads.extend(executions::waiting_heads(
                    ctx.conn, partition, lane, &capset, claim.max,
                )?);
            }
        }
    }
    heads.sort_by(|a, b| {
        (b.priority, a.ready_at_ms, &a.id).cmp(&(a.priority, b.ready_at_ms, &b.id))
    });
    heads.truncate(usize::try_from(claim.max).unwrap_or(usize::MAX));
    let mut tasks = Vec::with_capacity(heads.len());
    for head in heads {
        let exec = head.load(ctx.conn)?;
        let command = Command::Claim {
            worker_id: claim.worker_id.clone(),
            lease_id: LeaseId::random(),
            lease_ms: claim.lease_ms,
        };
        let mut transition = machine::apply(&exec, command, ctx.now_ms, ctx.machine)?;
        let flow = commit_transition(ctx, Some(&exec), &mut transition)?;
        let mut task = task_of(transition.execution)?;
        if let (Some(flow), Some(key)) = (flow, &task.flow_node) {
            task.inputs = flow_ops::inputs(ctx, &flow, key)?;
        }
        tasks.push(task);
    }
    Ok(tasks)
}

/// The task handed to a worker for a just-claimed execution.
fn task_of(exec: Option<Execution>) -> Result<Task> {
    Task::from_claimed(exec.ok_or_else(|| Error::Internal("a claim purged its execution".into()))?)
}

#[cfg(test)]
mod tests {
    //! Capability eligibility: a worker claims only subsets of its own set.
    use super::eligible;

    #[test]
    fn capsets_must_be_subsets() {
        let caps = vec!["cpu".to_owned(), "gpu".to_owned()];
        assert!(eligible("", &caps));
        assert!(eligible("gpu", &caps));
        assert!(eligible("cpu,gpu", &caps));
        assert!(!eligible("gpu,tpu", &caps));
        assert!(!eligible("gpu", &[]));
    }
}
