//! The `Store` trait: every operation a backend provides, each atomic on one
//! partition (the few cross-partition reads say so).
//!
//! Invariants every implementation keeps, checked by the conformance suite:
//! time is the store's clock; worker writes are fenced by `(lease_id, epoch)`;
//! exactly one index holds each execution; a partition's timers are exactly
//! `timers_of` of its executions.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::flow::{Flow, FlowSpec, FlowState};
use crate::ids::{ExecutionId, FlowId, PartitionCount, PartitionId};
use crate::machine::LeaseRef;
use crate::model::{
    check_lease_ms, check_name, check_worker_id, normalize_capabilities, Attempt, ErrorInfo,
    Execution, State, SubmitParams, Task, CLAIM_MAX, DURATION_MS_MAX, LANE_LEN_MAX,
    WORKER_ID_LEN_MAX,
};

/// Most executions one list page returns.
pub const LIST_LIMIT_MAX: u32 = 1000;

/// Most items one batch call (`execution_submit_many`,
/// `execution_complete_many`) takes.
pub const BATCH_MAX: usize = 500;

/// `invalid_argument` for a batch of more than `BATCH_MAX` items or none.
pub fn check_batch(field: &str, len: usize) -> Result<()> {
    if (1..=BATCH_MAX).contains(&len) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must hold 1 to {BATCH_MAX} items, got {len}"),
        ))
    }
}

/// What a submit returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    /// The execution, new or found by its idempotency key.
    pub execution: Execution,
    /// `false` when the idempotency key was seen before.
    pub created: bool,
}

/// A worker's request for tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimParams {
    /// Who claims; recorded on the attempt.
    pub worker_id: String,
    /// Lanes to claim from.
    pub lanes: Vec<String>,
    /// The worker's capabilities; it gets only executions requiring a subset.
    pub capabilities: Vec<String>,
    /// Most tasks to return, 1 ..= `CLAIM_MAX`.
    pub max: u32,
    /// The lease's duration.
    pub lease_ms: i64,
}

/// Most lanes one claim may name.
pub const CLAIM_LANES_MAX: usize = 32;

impl ClaimParams {
    /// Checks every field and returns the claim with its lanes sorted and
    /// deduplicated and its capabilities normalized; says which field is wrong.
    pub fn normalized(&self) -> Result<ClaimParams> {
        check_worker_id(&self.worker_id)?;
        if self.lanes.is_empty() || self.lanes.len() > CLAIM_LANES_MAX {
            return Err(Error::invalid(
                "lanes",
                format!("name 1..={CLAIM_LANES_MAX} lanes"),
            ));
        }
        for lane in &self.lanes {
            check_name("lanes", lane, LANE_LEN_MAX)?;
        }
        let mut lanes = self.lanes.clone();
        lanes.sort();
        lanes.dedup();
        let capabilities = normalize_capabilities("capabilities", &self.capabilities)?;
        if !(1..=CLAIM_MAX).contains(&self.max) {
            return Err(Error::invalid(
                "max",
                format!("must be 1..={CLAIM_MAX}, got {}", self.max),
            ));
        }
        check_lease_ms(self.lease_ms)?;
        Ok(ClaimParams {
            worker_id: self.worker_id.clone(),
            lanes,
            capabilities,
            ..*self
        })
    }
}

/// A worker extends its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatParams {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The lease presented.
    pub lease: LeaseRef,
    /// A new duration, or the lease's own.
    pub lease_ms: Option<i64>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// When the lease now lapses.
    pub expires_at_ms: i64,
    /// Whether an operator asked the execution to stop.
    pub cancel_requested: bool,
}

/// A worker ends the attempt with a result.
#[derive(Clone, Debug, PartialEq)]
pub struct CompleteParams {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The lease presented.
    pub lease: LeaseRef,
    /// The output.
    pub result: Value,
}

/// A worker ends the attempt with an error.
#[derive(Clone, Debug, PartialEq)]
pub struct FailParams {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The lease presented.
    pub lease: LeaseRef,
    /// What went wrong.
    pub error: ErrorInfo,
    /// `false` ends the execution whatever attempts are left.
    pub retryable: bool,
}

/// A worker hands its attempt back unfinished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseParams {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The lease presented.
    pub lease: LeaseRef,
}

/// A worker suspends its execution on waitpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuspendParams {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The lease presented.
    pub lease: LeaseRef,
    /// The waitpoints and when to resume.
    pub spec: crate::waitpoint::SuspendSpec,
}

/// A signal for one waitpoint of an execution.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalParams {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The waitpoint.
    pub waitpoint: String,
    /// What it carries (null when absent).
    pub payload: Value,
    /// The suspension a verified token names (`TokenClaims::seq`); `None`
    /// for an operator's signal, which may also be buffered.
    pub seq: Option<u32>,
}

/// An operator ends an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelParams {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Why, for the record.
    pub reason: Option<String>,
}

/// Filters and paging for `execution_list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListParams {
    /// Only this lane.
    pub lane: Option<String>,
    /// Only this state.
    pub state: Option<State>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only members of this flow.
    pub flow_id: Option<String>,
    /// Page size, 1 ..= `LIST_LIMIT_MAX`.
    pub limit: u32,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of executions.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The executions, in id order.
    pub items: Vec<Execution>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Cuts a list read one item past `limit` down to the page, and names the
/// next page's cursor (the last id kept) when that extra item was there.
pub fn page_cut<T>(
    mut items: Vec<T>,
    limit: u32,
    id_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next_cursor = items.last().map(id_of);
    (items, next_cursor)
}

/// How many non-terminal executions a lane holds in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneDepth {
    /// The lane.
    pub lane: String,
    /// Claimable now.
    pub waiting: u64,
    /// Claimable later.
    pub delayed: u64,
    /// Leased.
    pub active: u64,
    /// Waiting on waitpoints.
    pub suspended: u64,
    /// Waiting on upstreams.
    pub blocked: u64,
}

/// What one tick of a partition did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Timers that moved an execution.
    pub applied: u32,
    /// Timers that no longer applied and were removed.
    pub dropped: u32,
    /// The earliest timer still in the partition, if any.
    pub next_due_ms: Option<i64>,
    /// The store's time at the tick.
    pub now_ms: i64,
}

/// Disagreements between a partition's executions and its indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Executions examined.
    pub executions: u64,
    /// One line per disagreement; empty in a healthy store.
    pub problems: Vec<String>,
}

/// An engine instance's request to hold its fair share of partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebalanceParams {
    /// The instance, unique per process.
    pub instance_id: String,
    /// How long the instance's membership and leases last without renewal.
    pub lease_ms: i64,
    /// `true` to give up every partition and leave (graceful shutdown).
    pub leaving: bool,
}

impl RebalanceParams {
    /// Checks the instance id (1..=128 bytes, no control characters) and that
    /// the lease is positive and at most `DURATION_MS_MAX`.
    pub fn validate(&self) -> Result<()> {
        let id = &self.instance_id;
        if id.is_empty() || id.len() > WORKER_ID_LEN_MAX || id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "instance_id",
                format!("must be 1..={WORKER_ID_LEN_MAX} bytes without control characters"),
            ));
        }
        if self.lease_ms <= 0 || self.lease_ms > DURATION_MS_MAX {
            return Err(Error::invalid(
                "lease_ms",
                format!("must be 1..={DURATION_MS_MAX}, got {}", self.lease_ms),
            ));
        }
        Ok(())
    }
}

/// Who holds a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOwner {
    /// The partition.
    pub partition: PartitionId,
    /// The holding instance.
    pub instance_id: String,
    /// When its lease lapses.
    pub expires_at_ms: i64,
}

/// A hint that a partition has a timer due at `due_ms`, so an engine sleeping
/// longer can wake early. Hints may be lost; engines poll as a fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueHint {
    /// The partition.
    pub partition: PartitionId,
    /// When the timer is due.
    pub due_ms: i64,
}

/// Something that happened in a store that a waiting party may care about.
/// Events may be lost; listeners fall back to reading the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// An execution reached a terminal state.
    Ended {
        /// The execution.
        id: ExecutionId,
        /// The terminal state it reached.
        state: State,
    },
    /// A flow's last member ended.
    FlowEnded {
        /// The flow.
        id: FlowId,
        /// How it ended.
        state: FlowState,
    },
    /// An execution became claimable on `lane`.
    Ready {
        /// Its partition.
        partition: PartitionId,
        /// Its lane.
        lane: String,
        /// The capabilities it requires, sorted and joined by `,` (empty
        /// for none), so that only workers that can run it are woken.
        capset: String,
    },
}

/// What a flow create returns.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowCreated {
    /// The flow, new or found by its idempotency key.
    pub flow: Flow,
    /// `false` when the idempotency key was seen before.
    pub created: bool,
}

/// Filters and paging for `flow_list`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowListParams {
    /// Only flows in this state.
    pub state: Option<FlowState>,
    /// Page size, 1 ..= `LIST_LIMIT_MAX`.
    pub limit: u32,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of flows, in id order.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowPage {
    /// The flows.
    pub items: Vec<Flow>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What one reconciliation pass over a partition's flows found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Flows examined.
    pub examined: u32,
    /// Flows whose summary disagreed with their members and was rewritten;
    /// zero in a healthy store.
    pub repaired: u32,
    /// Where the next pass starts; `None` after the partition's last flow.
    pub next_cursor: Option<String>,
}

fn flows_unsupported() -> Error {
    Error::Unavailable("this store does not support flows yet".into())
}

/// A backend that keeps Weft's state. Every method that changes state is one
/// atomic operation on one partition and reads time from the store's clock.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `P`, recorded when the store was initialised.
    fn partition_count(&self) -> PartitionCount;

    /// The store's clock, in milliseconds since the Unix epoch.
    async fn now_ms(&self) -> Result<i64>;

    /// Creates an execution, or returns the one with the same idempotency key.
    async fn execution_submit(&self, params: &SubmitParams) -> Result<Submitted>;

    /// Creates several executions: like `execution_submit` for each item, in
    /// order, each atomic on its own. A store may put the items without an
    /// idempotency key in one partition and write them in one call. Every
    /// item is validated before anything is written: one bad item refuses
    /// the batch. The default submits one item after another and stops at
    /// the first refusal (the items before it stay created); both stores
    /// override it.
    async fn execution_submit_many(&self, params: &[SubmitParams]) -> Result<Vec<Submitted>> {
        check_batch("executions", params.len())?;
        let mut out = Vec::with_capacity(params.len());
        for item in params {
            out.push(self.execution_submit(item).await?);
        }
        Ok(out)
    }

    /// Claims up to `params.max` waiting executions of one partition: highest
    /// priority first, then longest claimable.
    async fn execution_claim(
        &self,
        partition: PartitionId,
        params: &ClaimParams,
    ) -> Result<Vec<Task>>;

    /// Claims up to `params.max` across every partition, starting at
    /// `start`; each partition's claim is atomic, the sweep is not. The
    /// default asks one partition after another.
    async fn execution_claim_across(
        &self,
        params: &ClaimParams,
        start: PartitionId,
    ) -> Result<Vec<Task>> {
        claim_partition_by_partition(self, params, start).await
    }

    /// Extends a lease.
    async fn execution_heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatReply>;

    /// Completes the attempt; the same call again returns the same execution.
    async fn execution_complete(&self, params: &CompleteParams) -> Result<Execution>;

    /// Fails the attempt; retried per policy.
    async fn execution_fail(&self, params: &FailParams) -> Result<Execution>;

    /// `execution_complete` for a caller that needs no copy of the execution
    /// back (a worker): answers only the state it left, so a store may skip
    /// reading and shipping the payload.
    async fn execution_complete_brief(&self, params: &CompleteParams) -> Result<State> {
        Ok(self.execution_complete(params).await?.state)
    }

    /// `execution_complete_brief` for several attempts: each item's outcome
    /// on its own (a lost lease refuses that item only), in order. A store
    /// may complete the items of one partition in one call.
    async fn execution_complete_many(
        &self,
        params: &[CompleteParams],
    ) -> Result<Vec<Result<State>>> {
        check_batch("completions", params.len())?;
        let mut out = Vec::with_capacity(params.len());
        for item in params {
            out.push(self.execution_complete_brief(item).await);
        }
        Ok(out)
    }

    /// `execution_fail` answering only the state it left (`waiting`,
    /// `delayed` or `failed`), as `execution_complete_brief` does.
    async fn execution_fail_brief(&self, params: &FailParams) -> Result<State> {
        Ok(self.execution_fail(params).await?.state)
    }

    /// Ends the attempt `released` and makes the execution `waiting` at once,
    /// counting nothing against `max_attempts` or `max_reclaims`; fenced like
    /// complete. The same call again returns the execution as it is, until
    /// the execution is claimed again.
    async fn execution_release(&self, params: &ReleaseParams) -> Result<Execution>;

    /// Suspends an active execution on waitpoints, fenced like complete: the
    /// attempt ends `suspended` and the lease is released, unless buffered
    /// signals already satisfy the suspension (then it stays `active`). The
    /// same call again returns the execution as it is, until the next claim.
    async fn execution_suspend(&self, params: &SuspendParams) -> Result<Execution>;

    /// Delivers a signal: to the suspension in force (resuming the execution
    /// when that satisfies it) or, for an operator's signal, into the buffer.
    /// `conflict` when the execution has ended or the waitpoint was already
    /// signalled; `invalid_token` when a token's suspension or waitpoint is
    /// no longer open.
    async fn execution_signal(&self, params: &SignalParams) -> Result<Execution>;

    /// Cancels a non-terminal execution; cancelling a cancelled one is a no-op.
    async fn execution_cancel(&self, params: &CancelParams) -> Result<Execution>;

    /// Moves a terminal execution back to `waiting`.
    async fn execution_replay(&self, id: &ExecutionId) -> Result<Execution>;

    /// One execution, or `not_found`.
    async fn execution_get(&self, id: &ExecutionId) -> Result<Execution>;

    /// Executions in id order, filtered; reads across partitions.
    async fn execution_list(&self, params: &ListParams) -> Result<Page>;

    /// The attempts of one execution, oldest first.
    async fn attempt_list(&self, id: &ExecutionId) -> Result<Vec<Attempt>>;

    /// Non-terminal counts per lane; reads across partitions.
    async fn lane_depths(&self) -> Result<Vec<LaneDepth>>;

    /// Applies up to `max` timers of `partition` due by the store's clock.
    async fn partition_tick(&self, partition: PartitionId, max: u32) -> Result<TickReport>;

    /// Compares a partition's executions with its indexes and timers.
    async fn partition_audit(&self, partition: PartitionId) -> Result<AuditReport>;

    /// Renews an engine instance's membership and partition leases and moves
    /// it towards its fair share; returns the partitions it now holds.
    async fn engine_rebalance(&self, params: &RebalanceParams) -> Result<Vec<PartitionId>>;

    /// Every partition lease, expired or not.
    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>>;

    /// Whether this store implements the `flow_*` operations.
    fn supports_flows(&self) -> bool {
        false
    }

    /// Creates a flow and all its members in one atomic operation, or
    /// returns the flow with the same idempotency key.
    async fn flow_create(&self, _spec: &FlowSpec) -> Result<FlowCreated> {
        Err(flows_unsupported())
    }

    /// One flow, or `not_found`.
    async fn flow_get(&self, _id: &FlowId) -> Result<Flow> {
        Err(flows_unsupported())
    }

    /// Flows in id order, filtered; reads across partitions.
    async fn flow_list(&self, _params: &FlowListParams) -> Result<FlowPage> {
        Err(flows_unsupported())
    }

    /// Adds nodes (and edges from existing nodes) to a running flow.
    async fn flow_add_nodes(&self, _id: &FlowId, _spec: &FlowSpec) -> Result<Flow> {
        Err(flows_unsupported())
    }

    /// Cancels every member that has not ended; the flow ends `cancelled`.
    async fn flow_cancel(&self, _id: &FlowId) -> Result<Flow> {
        Err(flows_unsupported())
    }

    /// Recomputes up to `max` flows of `partition` after `cursor` from their
    /// members and rewrites any whose counts, node states or state drifted:
    /// the flow projector's pass. Stores without flows have nothing to do.
    async fn flow_reconcile(
        &self,
        _partition: PartitionId,
        _cursor: Option<&str>,
        _max: u32,
    ) -> Result<ReconcileReport> {
        Ok(ReconcileReport::default())
    }

    /// A stream of due-time hints, if the store can send them.
    fn due_hints(&self) -> Option<tokio::sync::broadcast::Receiver<DueHint>>;

    /// A stream of executions ending and becoming claimable, if the store can
    /// send them; `wait` and long-poll claims sleep on it.
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }
}

/// Claims across partitions for one worker: visits every partition once,
/// starting at `start` so that concurrent workers spread out, until `max`
/// tasks are taken. Stores with a cheaper way override
/// `Store::execution_claim_across`; this is its default.
pub async fn claim_across(
    store: &dyn Store,
    params: &ClaimParams,
    start: PartitionId,
) -> Result<Vec<Task>> {
    store.execution_claim_across(params, start).await
}

/// Releases `tasks` that were claimed but will never run (whoever claimed
/// them stopped waiting first), one atomic write each, so they are
/// claimable again at once rather than when their leases lapse. Returns the
/// ones that could not be released, with why; those lapse as usual.
pub async fn release_claimed(store: &dyn Store, tasks: &[Task]) -> Vec<(ExecutionId, Error)> {
    let mut failed = Vec::new();
    for task in tasks {
        let params = ReleaseParams {
            execution_id: task.execution_id.clone(),
            lease: task.lease_ref(),
        };
        if let Err(error) = store.execution_release(&params).await {
            failed.push((task.execution_id.clone(), error));
        }
    }
    failed
}

/// Runs a claim in a task of its own and waits for its answer. If the caller
/// stops waiting (a client went away, a worker is shutting down), the claim
/// still finishes and what it took is released at once, counting nothing,
/// instead of staying leased to nobody until the lease lapses.
pub async fn claim_detached<F>(store: &Arc<dyn Store>, claim: F) -> Result<Vec<Task>>
where
    F: std::future::Future<Output = Result<Vec<Task>>> + Send + 'static,
{
    let store = Arc::clone(store);
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(Ok(tasks)) = answer.send(claim.await) {
            for (execution_id, error) in release_claimed(store.as_ref(), &tasks).await {
                tracing::warn!(
                    %execution_id, %error,
                    "could not release a task nobody waited for; its lease will lapse"
                );
            }
        }
    });
    answered
        .await
        .map_err(|_| Error::Internal("the claim task ended without an answer".into()))?
}

async fn claim_partition_by_partition<S: Store + ?Sized>(
    store: &S,
    params: &ClaimParams,
    start: PartitionId,
) -> Result<Vec<Task>> {
    let count = store.partition_count().get();
    let mut tasks = Vec::new();
    for offset in 0..count {
        let wanted = params
            .max
            .saturating_sub(u32::try_from(tasks.len()).unwrap_or(u32::MAX));
        if wanted == 0 {
            break;
        }
        let partition = PartitionId((start.0 % count + offset) % count);
        let batch = ClaimParams {
            max: wanted,
            ..params.clone()
        };
        tasks.extend(store.execution_claim(partition, &batch).await?);
    }
    Ok(tasks)
}
