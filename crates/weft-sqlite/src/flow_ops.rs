//! The flow operations, and the flow side of every member transition.
//!
//! Definitions: `Members` is `weft_core::flow::MemberIo` over the open
//! transaction: `load` reads a member row, `write` stores a member's
//! transition exactly as any other operation does (`write_transition`:
//! row, index columns, attempt, timers, events). `settle_member` is what the
//! store does after writing a transition of a flow member: load the flow,
//! `flow::after_member_transition` (counts, state, edges, joins, cascades),
//! write the flow back, all in the same transaction.
//!
//! Invariants: a flow's row changes in the same transaction as its members,
//! so its counts always match them. `StoreEvent::FlowEnded` is queued in the
//! transaction that ends the flow and published after its commit.
//!
//! Retention: a member is purged by its own retention timer, like any
//! execution, but only once its flow has ended. A member's retention timer
//! that comes due while its flow still runs (a flow that outlives the
//! retention period) is dropped, and the flow's end sets it again (it is due
//! by then, so the next tick purges the member). A purge leaves the flow's
//! counts and node states as they were: the summary stays the record of how
//! every member ended. The flow row (and its idempotency key) is deleted in
//! the transaction that purges its last member. A flow has no retention timer
//! of its own.

use std::collections::BTreeSet;

use weft_core::flow::{self, Flow, FlowSpec, MemberIo};
use weft_core::machine::{timers_of, Transition};
use weft_core::{
    partition_for_key, DueHint, Error, Execution, ExecutionId, FlowCreated, FlowId, PartitionId,
    ReconcileReport, Result, StoreEvent, TimerKind,
};

use crate::db::Ctx;
use crate::ops::{load_required, write_transition};
use crate::{executions, flows, outbox, timers};

/// Namespace of flow idempotency keys in `partition_for_key`.
const FLOW_KEY_NAMESPACE: &str = "flow";

/// A flow's members, read and written inside the open transaction.
struct Members<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl MemberIo for Members<'_, '_> {
    fn load(&mut self, id: &ExecutionId) -> Result<Execution> {
        // A flow names only members that exist (purges wait for its end), so
        // a missing one is corruption, not the caller's `not_found`.
        match load_required(self.ctx, id) {
            Err(Error::NotFound { .. }) => {
                Err(Error::Internal(format!("flow member {id} is missing")))
            }
            other => other,
        }
    }

    fn write(&mut self, old: Option<&Execution>, transition: &Transition) -> Result<()> {
        let mut transition = transition.clone();
        write_transition(self.ctx, old, &mut transition)
    }
}

/// Mints member ids on `partition`, never the same one twice within one
/// operation (ids minted in one millisecond differ only in 32 random bits).
fn minter(partition: PartitionId, now_ms: i64) -> impl FnMut() -> ExecutionId {
    let mut minted = BTreeSet::new();
    move || loop {
        let id = ExecutionId::mint(partition, now_ms);
        if minted.insert(id.clone()) {
            return id;
        }
    }
}

/// Loads a flow or answers `not_found`.
pub(crate) fn load_flow(ctx: &Ctx<'_>, id: &FlowId) -> Result<Flow> {
    let not_found = || Error::NotFound {
        what: "flow",
        id: id.to_string(),
    };
    if !ctx.partitions.contains(id.partition()) {
        return Err(not_found());
    }
    flows::load(ctx.conn, id.as_str())?.ok_or_else(not_found)
}

/// Creates a flow and its members, or finds the flow holding the
/// idempotency key.
pub(crate) fn create(ctx: &mut Ctx<'_>, spec: &FlowSpec) -> Result<FlowCreated> {
    let partition = match &spec.idempotency_key {
        Some(key) => partition_for_key(FLOW_KEY_NAMESPACE, key, ctx.partitions),
        None => ctx.partitions.random(),
    };
    let now_ms = ctx.now_ms;
    let mut mint = minter(partition, now_ms);
    // Validate first: a bad create is refused even if its key is known.
    let id = FlowId::mint(partition, now_ms);
    let (flow, members) = flow::create(id, spec, &mut mint, now_ms, ctx.machine)?;
    if let Some(key) = &spec.idempotency_key {
        if let Some(owner) = flows::key_owner(ctx.conn, key)? {
            match flows::load(ctx.conn, &owner)? {
                Some(flow) => {
                    return Ok(FlowCreated {
                        flow,
                        created: false,
                    })
                }
                None => tracing::warn!(key, owner, "idempotency key of a missing flow"),
            }
        }
    }
    for mut member in members {
        write_transition(ctx, None, &mut member)?;
    }
    flows::insert(ctx.conn, &flow)?;
    if let Some(key) = &spec.idempotency_key {
        flows::key_set(ctx.conn, key, flow.id.as_str())?;
    }
    Ok(FlowCreated {
        flow,
        created: true,
    })
}

/// Adds nodes to a running flow; nothing is written unless all of it holds.
pub(crate) fn add_nodes(ctx: &mut Ctx<'_>, id: &FlowId, spec: &FlowSpec) -> Result<Flow> {
    let mut flow = load_flow(ctx, id)?;
    let was_ended = flow.state.is_terminal();
    let (now_ms, machine) = (ctx.now_ms, ctx.machine);
    let mut mint = minter(id.partition(), now_ms);
    let mut io = Members { ctx: &mut *ctx };
    let left = flow::add_nodes(&mut flow, spec, &mut io, &mut mint, now_ms, machine)?;
    enqueue(ctx, &flow.id, &left)?;
    save(ctx, &flow, was_ended)?;
    Ok(flow)
}

/// Cancels every member that has not ended; cancelling a cancelled flow
/// changes nothing.
pub(crate) fn cancel(ctx: &mut Ctx<'_>, id: &FlowId) -> Result<Flow> {
    let mut flow = load_flow(ctx, id)?;
    let was_ended = flow.state.is_terminal();
    let (now_ms, machine) = (ctx.now_ms, ctx.machine);
    let left = flow::cancel_flow(&mut flow, &mut Members { ctx: &mut *ctx }, now_ms, machine)?;
    enqueue(ctx, &flow.id, &left)?;
    if !was_ended {
        save(ctx, &flow, was_ended)?;
    }
    Ok(flow)
}

/// Writes a flow changed by this operation; if the change ended it, queues
/// `FlowEnded` and sets again the members' retention timers it held back.
fn save(ctx: &mut Ctx<'_>, flow: &Flow, was_ended: bool) -> Result<()> {
    flows::update(ctx.conn, flow)?;
    if flow.state.is_terminal() && !was_ended {
        ctx.events.push(StoreEvent::FlowEnded {
            id: flow.id.clone(),
            state: flow.state,
        });
        rearm_retention(ctx, flow)?;
    }
    Ok(())
}

/// Sets the retention timers of members whose timers came due (and were
/// dropped) while the flow ran. Only a flow that ran longer than the
/// retention period can have any, so the common case reads nothing.
fn rearm_retention(ctx: &mut Ctx<'_>, flow: &Flow) -> Result<()> {
    if flow.created_at_ms.saturating_add(ctx.machine.retention_ms) > ctx.now_ms {
        return Ok(());
    }
    for node in &flow.nodes {
        let Some(member) = executions::load(ctx.conn, node.execution_id.as_str())? else {
            continue;
        };
        let due = timers_of(&member, ctx.machine)
            .into_iter()
            .filter(|t| t.kind == TimerKind::Retention && t.due_ms <= ctx.now_ms);
        for timer in due {
            let partition = member.id.partition();
            timers::set(ctx.conn, partition, member.id.as_str(), &timer)?;
            ctx.hints.push(DueHint {
                partition,
                due_ms: timer.due_ms,
            });
        }
    }
    Ok(())
}

/// After `write_transition` stored a transition of an execution: if it is a
/// flow member whose state changed, settles its flow in this transaction and
/// returns the flow as it now is. Non-members (and heartbeats) cost nothing.
/// Purges go through `purge_allowed` and `after_purge` instead.
pub(crate) fn settle_member(
    ctx: &mut Ctx<'_>,
    old: Option<&Execution>,
    transition: &Transition,
) -> Result<Option<Flow>> {
    let Some(new) = transition.execution.as_ref() else {
        return Ok(None);
    };
    let Some(flow_id) = &new.flow_id else {
        return Ok(None);
    };
    if old.is_some_and(|o| o.state == new.state) {
        return Ok(None);
    }
    let mut flow = flows::load(ctx.conn, flow_id.as_str())?
        .ok_or_else(|| Error::Internal(format!("{} is a member of missing {flow_id}", new.id)))?;
    let was_ended = flow.state.is_terminal();
    let (now_ms, machine) = (ctx.now_ms, ctx.machine);
    let mut io = Members { ctx: &mut *ctx };
    let left = flow::after_member_transition(&mut flow, old, transition, &mut io, now_ms, machine)?;
    enqueue(ctx, &flow.id, &left)?;
    save(ctx, &flow, was_ended)?;
    Ok(Some(flow))
}

/// Whether the retention purge of `exec` may go ahead: always outside flows;
/// for a member, once its flow has ended.
pub(crate) fn purge_allowed(ctx: &Ctx<'_>, exec: &Execution) -> Result<bool> {
    let Some(flow_id) = &exec.flow_id else {
        return Ok(true);
    };
    Ok(match flows::load(ctx.conn, flow_id.as_str())? {
        Some(flow) => flow.state.is_terminal(),
        None => true,
    })
}

/// After the purge of `exec`: deletes its flow if that was the last member.
pub(crate) fn after_purge(ctx: &Ctx<'_>, exec: &Execution) -> Result<()> {
    let Some(flow_id) = &exec.flow_id else {
        return Ok(());
    };
    if executions::flow_has_members(ctx.conn, flow_id.as_str())? {
        return Ok(());
    }
    if let Some(flow) = flows::load(ctx.conn, flow_id.as_str())? {
        flows::delete(ctx.conn, &flow)?;
    }
    Ok(())
}

/// A claimed member's inputs: each upstream's result by node key.
pub(crate) fn inputs(
    ctx: &mut Ctx<'_>,
    flow: &Flow,
    key: &str,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
    flow::inputs(flow, key, &mut Members { ctx })
}

/// The flow projector's pass: recounts up to `max` flows of `partition`
/// after `cursor` from their members and rewrites those that drifted.
pub(crate) fn reconcile(
    ctx: &mut Ctx<'_>,
    partition: PartitionId,
    cursor: Option<&str>,
    max: u32,
) -> Result<ReconcileReport> {
    ctx.check_partition(partition)?;
    if !(1..=weft_core::LIST_LIMIT_MAX).contains(&max) {
        return Err(Error::invalid(
            "max",
            format!("must be 1..={}", weft_core::LIST_LIMIT_MAX),
        ));
    }
    // A partition's flow ids share the prefix `fl_` + 4 hex digits, and every
    // id sorts after its prefix.
    let floor = format!("fl_{:04x}", partition.0);
    let ceiling = format!("fl_{:04x}", u32::from(partition.0) + 1);
    let after = cursor
        .filter(|c| c.as_bytes() > floor.as_bytes())
        .unwrap_or(&floor)
        .to_owned();
    let page = flows::page_after(ctx.conn, &after, &ceiling, max)?;
    let mut report = ReconcileReport::default();
    for flow in &page {
        report.examined += 1;
        let mut members = Vec::with_capacity(flow.nodes.len());
        for node in &flow.nodes {
            match load_required(ctx, &node.execution_id) {
                Ok(member) => members.push(member),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let fixed = weft_core::flow::recount(flow, &members);
        if &fixed != flow {
            tracing::warn!(flow = %flow.id, "flow summary drifted from its members; repaired");
            flows::update(ctx.conn, &fixed)?;
            report.repaired += 1;
        }
    }
    if page.len() == usize::try_from(max).unwrap_or(usize::MAX) {
        report.next_cursor = page.last().map(|f| f.id.to_string());
    }
    Ok(report)
}

/// Appends the follow-ups an operation left over to its partition's outbox
/// and wakes the partition's owner to continue them at once.
fn enqueue(ctx: &mut Ctx<'_>, flow_id: &FlowId, left: &[flow::FollowUp]) -> Result<()> {
    if left.is_empty() {
        return Ok(());
    }
    let partition = flow_id.partition();
    let body = serde_json::to_string(left).map_err(|e| Error::Internal(e.to_string()))?;
    outbox::push(ctx.conn, partition, flow_id.as_str(), &body, ctx.now_ms)?;
    ctx.hints.push(DueHint {
        partition,
        due_ms: ctx.now_ms,
    });
    Ok(())
}

/// Continues up to `max` outbox entries of `partition`, oldest first: each
/// runs its follow-ups for one more chunk and is deleted in this transaction
/// (what a chunk leaves over becomes a new entry). Returns how many ran.
pub(crate) fn drain_outbox(ctx: &mut Ctx<'_>, partition: PartitionId, max: u32) -> Result<u32> {
    let mut ran = 0;
    for entry in outbox::oldest(ctx.conn, partition, max)? {
        outbox::delete(ctx.conn, entry.seq)?;
        ran += 1;
        let Some(mut flow) = flows::load(ctx.conn, &entry.flow_id)? else {
            continue;
        };
        let follow: Vec<flow::FollowUp> = crate::db::from_json("outbox entry", &entry.body)?;
        let was_ended = flow.state.is_terminal();
        let (now_ms, machine) = (ctx.now_ms, ctx.machine);
        let mut io = Members { ctx: &mut *ctx };
        let left = flow::cascade(
            &mut flow,
            follow,
            &mut io,
            now_ms,
            machine,
            flow::CASCADE_CHUNK_MAX,
        )?;
        enqueue(ctx, &flow.id, &left)?;
        save(ctx, &flow, was_ended)?;
    }
    Ok(ran)
}
