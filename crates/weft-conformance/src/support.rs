//! Helpers shared by the conformance tests: factories that put an execution in
//! any state through the public `Store` operations, time and tick helpers,
//! audits, and assertions on typed errors.
//!
//! Every factory submits into a lane of its own (`unique_lane`), so that
//! `claim_exec` can take exactly that execution from its partition even when
//! a test holds several executions on one partition.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};
use weft_core::{
    Attempt, Backoff, CancelParams, ClaimParams, CompleteParams, Error, ErrorInfo, Execution,
    ExecutionId, FailParams, HeartbeatParams, HeartbeatReply, LeaseRef, ListParams, ReleaseParams,
    Result, State, SubmitParams, Task, LIST_LIMIT_MAX,
};

use crate::Harness;

/// A short lease, so that expiry is cheap to reach with a real clock.
pub const LEASE_MS: i64 = 300;
/// A lease that never lapses within a test.
pub const LONG_LEASE_MS: i64 = 60_000;
/// The worker id the helpers claim as.
pub const WORKER: &str = "worker-1";
/// Most ticks `tick_all` runs before it decides a store never settles.
const TICK_SWEEPS_MAX: u32 = 100;

/// A lane name not used before in this process.
pub fn unique_lane() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("lane-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Submit parameters of `kind` in a fresh lane, with every other default.
pub fn params(kind: &str) -> SubmitParams {
    SubmitParams {
        lane: Some(unique_lane()),
        ..SubmitParams::new(kind, json!({"kind": kind}))
    }
}

/// A backoff of exactly `ms` before every retry, without jitter.
pub fn fixed_backoff(ms: i64) -> Backoff {
    Backoff {
        initial_ms: ms,
        max_ms: ms,
        multiplier: 1.0,
        jitter: 0.0,
    }
}

/// A claim by `WORKER` on `lanes` with `capabilities`.
pub fn claim_params(lanes: &[&str], capabilities: &[&str], max: u32, lease_ms: i64) -> ClaimParams {
    ClaimParams {
        worker_id: WORKER.to_owned(),
        lanes: lanes.iter().map(|l| (*l).to_owned()).collect(),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        max,
        lease_ms,
    }
}

/// Submits and expects a new execution.
pub async fn submit(h: &Harness, params: &SubmitParams) -> Execution {
    let submitted = h
        .store
        .execution_submit(params)
        .await
        .unwrap_or_else(|e| panic!("submit {params:?}: {e}"));
    assert!(submitted.created, "a submit without a known key creates");
    submitted.execution
}

/// A `waiting` execution in a fresh lane.
pub async fn waiting(h: &Harness) -> Execution {
    let exec = submit(h, &params("test.waiting")).await;
    assert_eq!(exec.state, State::Waiting);
    exec
}

/// A `delayed` execution in a fresh lane, due `delay_ms` from now.
pub async fn delayed(h: &Harness, delay_ms: i64) -> Execution {
    let exec = submit(
        h,
        &SubmitParams {
            delay_ms: Some(delay_ms),
            ..params("test.delayed")
        },
    )
    .await;
    assert_eq!(exec.state, State::Delayed);
    exec
}

/// Claims `exec` from its partition and lane, with exactly its capabilities,
/// and checks the task is that execution.
pub async fn claim_exec(h: &Harness, exec: &Execution, lease_ms: i64) -> Task {
    let caps: Vec<&str> = exec.requires.iter().map(String::as_str).collect();
    let claim = claim_params(&[exec.lane.as_str()], &caps, 1, lease_ms);
    let tasks = h
        .store
        .execution_claim(exec.id.partition(), &claim)
        .await
        .unwrap_or_else(|e| panic!("claim {}: {e}", exec.id));
    assert_eq!(tasks.len(), 1, "claim of {} returned {tasks:?}", exec.id);
    let task = tasks.into_iter().next().unwrap_or_else(|| unreachable!());
    assert_eq!(task.execution_id, exec.id, "claimed another execution");
    task
}

/// Claims everything claimable on `exec`'s partition and lane and expects
/// nothing.
pub async fn assert_not_claimable(h: &Harness, exec: &Execution) {
    let caps: Vec<&str> = exec.requires.iter().map(String::as_str).collect();
    let claim = claim_params(&[exec.lane.as_str()], &caps, 10, LEASE_MS);
    let tasks = h
        .store
        .execution_claim(exec.id.partition(), &claim)
        .await
        .unwrap_or_else(|e| panic!("claim {}: {e}", exec.id));
    assert!(
        tasks.is_empty(),
        "{} should not be claimable: {tasks:?}",
        exec.id
    );
}

/// Submits `params` and claims the execution with `lease_ms`.
pub async fn active_with(h: &Harness, params: &SubmitParams, lease_ms: i64) -> (Execution, Task) {
    let exec = submit(h, params).await;
    let task = claim_exec(h, &exec, lease_ms).await;
    let exec = get(h, &exec.id).await;
    assert_eq!(exec.state, State::Active);
    (exec, task)
}

/// An `active` execution in a fresh lane, leased for `lease_ms`.
pub async fn active(h: &Harness, lease_ms: i64) -> (Execution, Task) {
    active_with(h, &params("test.active"), lease_ms).await
}

/// A `completed` execution, with result `{"done": true}`.
pub async fn completed(h: &Harness) -> Execution {
    let (_, task) = active(h, LONG_LEASE_MS).await;
    let exec = complete(h, &task, json!({"done": true}))
        .await
        .unwrap_or_else(|e| panic!("complete: {e}"));
    assert_eq!(exec.state, State::Completed);
    exec
}

/// A `failed` execution: one attempt, failed by its worker.
pub async fn failed(h: &Harness) -> Execution {
    let p = SubmitParams {
        max_attempts: Some(1),
        ..params("test.failed")
    };
    let (_, task) = active_with(h, &p, LONG_LEASE_MS).await;
    let exec = fail(h, &task, true)
        .await
        .unwrap_or_else(|e| panic!("fail: {e}"));
    assert_eq!(exec.state, State::Failed);
    exec
}

/// A `cancelled` execution (cancelled while waiting).
pub async fn cancelled(h: &Harness) -> Execution {
    let exec = waiting(h).await;
    let exec = cancel(h, &exec.id)
        .await
        .unwrap_or_else(|e| panic!("cancel: {e}"));
    assert_eq!(exec.state, State::Cancelled);
    exec
}

/// An `expired` execution: its 100 ms deadline passed while it waited.
pub async fn expired(h: &Harness) -> Execution {
    let exec = submit(
        h,
        &SubmitParams {
            deadline_ms: Some(100),
            ..params("test.expired")
        },
    )
    .await;
    h.advance_ms(150).await;
    tick_all(h).await;
    let exec = get(h, &exec.id).await;
    assert_eq!(exec.state, State::Expired);
    exec
}

/// The lease a task's worker presents.
pub fn lease_of(task: &Task) -> LeaseRef {
    task.lease_ref()
}

/// Completes `task` with `result`.
pub async fn complete(h: &Harness, task: &Task, result: Value) -> Result<Execution> {
    h.store
        .execution_complete(&CompleteParams {
            execution_id: task.execution_id.clone(),
            lease: lease_of(task),
            result,
        })
        .await
}

/// The error `fail` reports.
pub fn boom() -> ErrorInfo {
    ErrorInfo::new("boom", "the handler failed")
}

/// Fails `task` with `boom()`.
pub async fn fail(h: &Harness, task: &Task, retryable: bool) -> Result<Execution> {
    fail_with(h, task, boom(), retryable).await
}

/// Fails `task` with `error`.
pub async fn fail_with(
    h: &Harness,
    task: &Task,
    error: ErrorInfo,
    retryable: bool,
) -> Result<Execution> {
    h.store
        .execution_fail(&FailParams {
            execution_id: task.execution_id.clone(),
            lease: lease_of(task),
            error,
            retryable,
        })
        .await
}

/// Releases `task`: hands its attempt back unfinished.
pub async fn release(h: &Harness, task: &Task) -> Result<Execution> {
    h.store
        .execution_release(&ReleaseParams {
            execution_id: task.execution_id.clone(),
            lease: lease_of(task),
        })
        .await
}

/// Heartbeats `task`, optionally with a new lease duration.
pub async fn heartbeat(h: &Harness, task: &Task, lease_ms: Option<i64>) -> Result<HeartbeatReply> {
    h.store
        .execution_heartbeat(&HeartbeatParams {
            execution_id: task.execution_id.clone(),
            lease: lease_of(task),
            lease_ms,
        })
        .await
}

/// Cancels `id` with reason `"test"`.
pub async fn cancel(h: &Harness, id: &ExecutionId) -> Result<Execution> {
    h.store
        .execution_cancel(&CancelParams {
            execution_id: id.clone(),
            reason: Some("test".to_owned()),
        })
        .await
}

/// Reads an execution that must exist.
pub async fn get(h: &Harness, id: &ExecutionId) -> Execution {
    h.store
        .execution_get(id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"))
}

/// Reads the attempts of an execution that must exist.
pub async fn attempts(h: &Harness, id: &ExecutionId) -> Vec<Attempt> {
    h.store
        .attempt_list(id)
        .await
        .unwrap_or_else(|e| panic!("attempts of {id}: {e}"))
}

/// The store's clock.
pub async fn now(h: &Harness) -> i64 {
    h.store
        .now_ms()
        .await
        .unwrap_or_else(|e| panic!("now: {e}"))
}

/// Moves the store's time past `at_ms`.
pub async fn advance_past(h: &Harness, at_ms: i64) {
    let now = now(h).await;
    if now <= at_ms {
        h.advance_ms(at_ms - now + 1).await;
    }
}

/// Ticks every partition until a whole sweep applies nothing; returns the
/// number of timers applied.
pub async fn tick_all(h: &Harness) -> u32 {
    let mut total = 0;
    for _ in 0..TICK_SWEEPS_MAX {
        let mut applied = 0;
        for partition in h.store.partition_count().iter() {
            let report = h
                .store
                .partition_tick(partition, 1000)
                .await
                .unwrap_or_else(|e| panic!("tick {partition}: {e}"));
            applied += report.applied;
        }
        total += applied;
        if applied == 0 {
            return total;
        }
    }
    panic!("ticks kept applying timers after {TICK_SWEEPS_MAX} sweeps");
}

/// Ticks every partition where nothing is due before `due_ms`, and checks
/// nothing was applied — unless, on a real clock, the store's time reached
/// `due_ms` meanwhile (a slow machine). Returns whether nothing was applied,
/// so callers check "unchanged" only then.
pub async fn tick_before(h: &Harness, due_ms: i64, what: &str) -> bool {
    let applied = tick_all(h).await;
    if applied > 0 {
        let t = now(h).await;
        assert!(
            h.clock.is_none() && t >= due_ms,
            "{what}: {applied} timers applied at {t}, before {due_ms}"
        );
    }
    applied == 0
}

/// Audits every partition and fails on any problem.
pub async fn assert_audit_clean(h: &Harness) {
    for partition in h.store.partition_count().iter() {
        let report = h
            .store
            .partition_audit(partition)
            .await
            .unwrap_or_else(|e| panic!("audit {partition}: {e}"));
        assert!(
            report.problems.is_empty(),
            "audit of partition {partition}: {:#?}",
            report.problems
        );
    }
}

/// Every execution matching `filter`, read page by page with `page` items.
pub async fn list_all(h: &Harness, filter: &ListParams, page: u32) -> Vec<Execution> {
    let mut items = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let params = ListParams {
            limit: page,
            cursor: cursor.take(),
            ..filter.clone()
        };
        let result = h
            .store
            .execution_list(&params)
            .await
            .unwrap_or_else(|e| panic!("list {params:?}: {e}"));
        assert!(
            result.items.len() <= page as usize,
            "a page of {page} returned {}",
            result.items.len()
        );
        items.extend(result.items);
        match result.next_cursor {
            Some(next) => cursor = Some(next),
            None => return items,
        }
    }
    panic!("list never returned a last page");
}

/// Every execution in the store.
pub async fn list_everything(h: &Harness) -> Vec<Execution> {
    list_all(h, &ListParams::default(), LIST_LIMIT_MAX).await
}

/// Checks the store holds no execution and no lane has work.
pub async fn assert_store_empty(h: &Harness) {
    let all = list_everything(h).await;
    assert!(all.is_empty(), "the store should be empty: {all:#?}");
    let depths = h
        .store
        .lane_depths()
        .await
        .unwrap_or_else(|e| panic!("lanes: {e}"));
    for d in depths {
        let total = d.waiting + d.delayed + d.active + d.suspended + d.blocked;
        assert_eq!(total, 0, "lane {} has work: {d:?}", d.lane);
    }
}

/// Ids of executions, as a set.
pub fn ids(execs: &[Execution]) -> BTreeSet<ExecutionId> {
    execs.iter().map(|e| e.id.clone()).collect()
}

/// Expects `lease_lost`.
#[track_caller]
pub fn assert_lease_lost<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::LeaseLost { .. }) => {}
        other => panic!("{what}: expected lease_lost, got {other:?}"),
    }
}

/// Expects `conflict`.
#[track_caller]
pub fn assert_conflict<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::Conflict { .. }) => {}
        other => panic!("{what}: expected conflict, got {other:?}"),
    }
}

/// Expects `not_found`.
#[track_caller]
pub fn assert_not_found<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{what}: expected not_found, got {other:?}"),
    }
}

/// Expects `invalid_argument` naming `field`.
#[track_caller]
pub fn assert_invalid<T: Debug>(result: Result<T>, field: &str, what: &str) {
    match result {
        Err(Error::InvalidArgument { field: f, .. }) if f == field => {}
        other => panic!("{what}: expected invalid_argument on {field:?}, got {other:?}"),
    }
}

/// What `task`'s worker sends to complete it with `result`.
pub fn completion(task: &Task, result: Value) -> CompleteParams {
    CompleteParams {
        execution_id: task.execution_id.clone(),
        lease: lease_of(task),
        result,
    }
}
