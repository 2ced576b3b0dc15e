//! Lifecycle: one execution from submit to completion, and the read side.
//!
//! Goal: submit → claim → heartbeat → complete returns and stores exactly what
//! the contract says at each step (fields, task, lease, attempts), and `get`,
//! `list` (filters, cursor paging) and `lane_depths` agree with the writes.
//!
//! Method: drive the store through its public operations only, read back
//! after each write, and audit every partition after every step.

use std::collections::BTreeMap;

use serde_json::json;
use weft_core::{
    AttemptState, CompleteParams, Execution, ExecutionId, FailParams, FlowId, LeaseEpoch,
    ListParams, PartitionId, State, SubmitParams, LANE_DEFAULT,
};

use crate::support::{
    active_with, assert_audit_clean, attempts, boom, claim_params, complete, delayed, fail, get,
    heartbeat, ids, list_all, list_everything, now, submit, waiting, LONG_LEASE_MS, WORKER,
};
use crate::Harness;

/// The lease of the lifecycle test: short enough to see it extended, long
/// enough that a slow machine with a real clock heartbeats in time.
const LEASE_MS: i64 = 2_000;

/// Submit, claim, heartbeat twice, complete; every field checked.
pub async fn submit_claim_heartbeat_complete(h: Harness) {
    let t0 = now(&h).await;
    let p = SubmitParams {
        priority: 7,
        requires: vec!["gpu".into(), "cpu".into(), "gpu".into()],
        tags: BTreeMap::from([("team".to_owned(), "mail".to_owned())]),
        ..SubmitParams::new("email.send", json!({"to": "a@example.com"}))
    };
    let submitted = h.store.execution_submit(&p).await.expect("submit");
    let t1 = now(&h).await;
    assert!(submitted.created);
    let exec = submitted.execution;
    assert_eq!(exec.state, State::Waiting);
    assert_eq!(exec.kind, "email.send");
    assert_eq!(exec.lane, LANE_DEFAULT);
    assert_eq!(exec.payload, json!({"to": "a@example.com"}));
    assert_eq!(exec.priority, 7);
    assert_eq!(
        exec.requires,
        vec!["cpu", "gpu"],
        "requires is sorted and unique"
    );
    assert_eq!(exec.tags, p.tags);
    assert_eq!((exec.attempts, exec.failures), (0, 0));
    assert_eq!(exec.max_attempts, 3, "the default max_attempts");
    assert!(exec.result.is_none() && exec.error.is_none());
    assert!(exec.lease.is_none() && exec.run_at_ms.is_none() && exec.finished_at_ms.is_none());
    assert!(
        (t0..=t1).contains(&exec.created_at_ms),
        "created_at is the store's time"
    );
    assert_eq!(exec.updated_at_ms, exec.created_at_ms);
    assert!(h.store.partition_count().contains(exec.id.partition()));
    assert_eq!(
        get(&h, &exec.id).await,
        exec,
        "get returns what submit returned"
    );
    assert!(attempts(&h, &exec.id).await.is_empty());
    assert_audit_clean(&h).await;

    // A worker lacking a capability, or on another lane, gets nothing.
    let partition = exec.id.partition();
    let store = &h.store;
    let none = store
        .execution_claim(
            partition,
            &claim_params(&["default"], &["gpu"], 10, LEASE_MS),
        )
        .await
        .expect("claim");
    assert!(
        none.is_empty(),
        "claimed without the cpu capability: {none:?}"
    );
    let none = store
        .execution_claim(
            partition,
            &claim_params(&["other"], &["cpu", "gpu"], 10, LEASE_MS),
        )
        .await
        .expect("claim");
    assert!(none.is_empty(), "claimed from another lane: {none:?}");

    let t0 = now(&h).await;
    let claim = claim_params(&["default"], &["gpu", "cpu", "extra"], 10, LEASE_MS);
    let tasks = store
        .execution_claim(partition, &claim)
        .await
        .expect("claim");
    let t1 = now(&h).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    assert_eq!(task.execution_id, exec.id);
    assert_eq!(
        (task.kind.as_str(), task.lane.as_str()),
        ("email.send", "default")
    );
    assert_eq!(task.payload, exec.payload);
    assert_eq!(task.attempt.0, 1);
    assert_eq!(task.lease.epoch, LeaseEpoch(1));
    assert_eq!(task.lease.worker_id, WORKER);
    assert_eq!(task.lease.lease_ms, LEASE_MS);
    assert!((t0 + LEASE_MS..=t1 + LEASE_MS).contains(&task.lease.expires_at_ms));
    assert!(task.inputs.is_empty() && task.flow_id.is_none() && task.flow_node.is_none());
    assert_audit_clean(&h).await;

    let active = get(&h, &exec.id).await;
    assert_eq!(active.state, State::Active);
    assert_eq!(active.attempts, 1);
    assert_eq!(active.epoch, LeaseEpoch(1));
    assert_eq!(active.lease.as_ref(), Some(&task.lease));
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].number.0, 1);
    assert_eq!(list[0].worker_id, WORKER);
    assert_eq!(list[0].state, AttemptState::Running);
    assert!((t0..=t1).contains(&list[0].started_at_ms));
    assert!(list[0].ended_at_ms.is_none() && list[0].error.is_none());
    let again = store
        .execution_claim(partition, &claim)
        .await
        .expect("claim");
    assert!(
        again.is_empty(),
        "an active execution was claimed again: {again:?}"
    );

    // Heartbeats extend the lease by its own duration, or by a new one.
    h.advance_ms(100).await;
    let t0 = now(&h).await;
    let reply = heartbeat(&h, task, None).await.expect("heartbeat");
    let t1 = now(&h).await;
    assert!(!reply.cancel_requested);
    assert!(
        (t0 + LEASE_MS..=t1 + LEASE_MS).contains(&reply.expires_at_ms),
        "{reply:?}"
    );
    assert!(reply.expires_at_ms > task.lease.expires_at_ms);
    let lease = get(&h, &exec.id).await.lease.expect("leased");
    assert_eq!(lease.expires_at_ms, reply.expires_at_ms);
    let t0 = now(&h).await;
    let reply = heartbeat(&h, task, Some(LONG_LEASE_MS))
        .await
        .expect("heartbeat");
    let t1 = now(&h).await;
    assert!((t0 + LONG_LEASE_MS..=t1 + LONG_LEASE_MS).contains(&reply.expires_at_ms));
    let lease = get(&h, &exec.id).await.lease.expect("leased");
    assert_eq!(
        (lease.lease_ms, lease.expires_at_ms),
        (LONG_LEASE_MS, reply.expires_at_ms)
    );
    assert_audit_clean(&h).await;

    let t0 = now(&h).await;
    let done = complete(&h, task, json!({"sent": true}))
        .await
        .expect("complete");
    let t1 = now(&h).await;
    assert_eq!(done.state, State::Completed);
    assert_eq!(done.result, Some(json!({"sent": true})));
    assert!(done.lease.is_none() && done.error.is_none());
    assert_eq!(done.attempts, 1);
    let finished = done.finished_at_ms.expect("finished_at");
    assert!((t0..=t1).contains(&finished));
    assert_eq!(get(&h, &exec.id).await, done);
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AttemptState::Succeeded);
    assert_eq!(list[0].ended_at_ms, Some(finished));
    let again = store
        .execution_claim(partition, &claim)
        .await
        .expect("claim");
    assert!(
        again.is_empty(),
        "a completed execution was claimed: {again:?}"
    );
    assert_audit_clean(&h).await;
}

/// `list` returns everything in id order, pages with a cursor, and filters by
/// lane, state, kind and flow; `get` agrees with every listed item.
pub async fn list_filters_and_cursor(h: Harness) {
    let mut alpha = Vec::new();
    for i in 0..6 {
        let p = SubmitParams {
            lane: Some("alpha".into()),
            ..SubmitParams::new("k.one", json!({"i": i}))
        };
        alpha.push(submit(&h, &p).await);
    }
    let mut beta = Vec::new();
    for i in 0..4 {
        let p = SubmitParams {
            lane: Some("beta".into()),
            ..SubmitParams::new("k.two", json!({"i": i}))
        };
        beta.push(submit(&h, &p).await);
    }
    // One alpha completes, one beta is cancelled.
    let claim = claim_params(&["alpha"], &[], 1, LONG_LEASE_MS);
    let tasks = weft_core::claim_across(h.store.as_ref(), &claim, PartitionId(0))
        .await
        .expect("claim");
    assert_eq!(tasks.len(), 1);
    let done = complete(&h, &tasks[0], json!(1)).await.expect("complete");
    let gone = crate::support::cancel(&h, &beta[0].id)
        .await
        .expect("cancel");
    assert_audit_clean(&h).await;

    let all = list_everything(&h).await;
    assert_eq!(all.len(), 10);
    let mut sorted: Vec<ExecutionId> = all.iter().map(|e| e.id.clone()).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        all.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        sorted,
        "list is in id order, without duplicates"
    );
    for exec in &all {
        assert_eq!(&get(&h, &exec.id).await, exec, "list and get agree");
    }
    for page in [1, 3, 4, 10] {
        let paged = list_all(&h, &ListParams::default(), page).await;
        assert_eq!(paged, all, "paging by {page} yields the same list");
    }

    let filter = |lane: Option<&str>, state: Option<State>, kind: Option<&str>| ListParams {
        lane: lane.map(String::from),
        state,
        kind: kind.map(String::from),
        ..ListParams::default()
    };
    let count = |f: ListParams| {
        let h = &h;
        async move { list_all(h, &f, 2).await }
    };
    assert_eq!(
        ids(&count(filter(Some("alpha"), None, None)).await),
        ids(&alpha)
    );
    assert_eq!(
        ids(&count(filter(None, None, Some("k.two"))).await),
        ids(&beta)
    );
    let completed = count(filter(None, Some(State::Completed), None)).await;
    assert_eq!(ids(&completed), ids(std::slice::from_ref(&done)));
    let cancelled = count(filter(None, Some(State::Cancelled), None)).await;
    assert_eq!(ids(&cancelled), ids(std::slice::from_ref(&gone)));
    let alpha_waiting = count(filter(Some("alpha"), Some(State::Waiting), None)).await;
    assert_eq!(alpha_waiting.len(), 5);
    assert!(alpha_waiting
        .iter()
        .all(|e| e.lane == "alpha" && e.state == State::Waiting));
    assert_eq!(
        count(filter(Some("beta"), Some(State::Waiting), None))
            .await
            .len(),
        3
    );
    assert!(count(filter(Some("beta"), None, Some("k.one")))
        .await
        .is_empty());
    assert!(count(filter(Some("gamma"), None, None)).await.is_empty());
    let unknown_flow = ListParams {
        flow_id: Some(FlowId::mint(PartitionId(0), 1).to_string()),
        ..ListParams::default()
    };
    assert!(
        count(unknown_flow).await.is_empty(),
        "no execution is in that flow"
    );
}

/// `lane_depths` counts non-terminal executions per lane and state.
pub async fn lane_depths_count_non_terminal(h: Harness) {
    let in_lane = |lane: &str, delay_ms: Option<i64>| SubmitParams {
        lane: Some(lane.to_owned()),
        delay_ms,
        ..SubmitParams::new("depth", json!(null))
    };
    for _ in 0..4 {
        submit(&h, &in_lane("a", None)).await;
    }
    submit(&h, &in_lane("a", Some(LONG_LEASE_MS))).await;
    for _ in 0..2 {
        submit(&h, &in_lane("b", None)).await;
    }
    let done = submit(&h, &in_lane("c", None)).await;
    let claim = claim_params(&["a"], &[], 1, LONG_LEASE_MS);
    let tasks = weft_core::claim_across(h.store.as_ref(), &claim, PartitionId(0))
        .await
        .expect("claim");
    assert_eq!(tasks.len(), 1);
    let task = crate::support::claim_exec(&h, &done, LONG_LEASE_MS).await;
    complete(&h, &task, json!(null)).await.expect("complete");
    assert_audit_clean(&h).await;

    let depths = h.store.lane_depths().await.expect("lane depths");
    let find = |lane: &str| depths.iter().find(|d| d.lane == lane).cloned();
    let a = find("a").expect("lane a listed");
    assert_eq!(
        (a.waiting, a.delayed, a.active, a.suspended, a.blocked),
        (3, 1, 1, 0, 0),
        "{a:?}"
    );
    let b = find("b").expect("lane b listed");
    assert_eq!((b.waiting, b.delayed, b.active), (2, 0, 0), "{b:?}");
    if let Some(c) = find("c") {
        let total = c.waiting + c.delayed + c.active + c.suspended + c.blocked;
        assert_eq!(
            total, 0,
            "a lane with only ended work counts nothing: {c:?}"
        );
    }
}

/// Factories reach every state they promise, and `get` reads them back; a
/// sanity check of the suite's own helpers against the store.
pub async fn factories_reach_their_states(h: Harness) {
    let w = waiting(&h).await;
    let d = delayed(&h, LONG_LEASE_MS).await;
    let (a, _) = crate::support::active(&h, LONG_LEASE_MS).await;
    let c = crate::support::completed(&h).await;
    let f = crate::support::failed(&h).await;
    let x = crate::support::cancelled(&h).await;
    let e = crate::support::expired(&h).await;
    for (exec, state) in [
        (w, State::Waiting),
        (d, State::Delayed),
        (a, State::Active),
        (c, State::Completed),
        (f, State::Failed),
        (x, State::Cancelled),
        (e, State::Expired),
    ] {
        assert_eq!(get(&h, &exec.id).await.state, state);
    }
    assert_eq!(list_everything(&h).await.len(), 7);
    let kinds: Vec<String> = list_everything(&h)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().all(|k| k.starts_with("test.")), "{kinds:?}");
    assert_audit_clean(&h).await;
}

/// `b` with everything that differs between two executions run the same
/// way at different moments (ids, times, leases) taken from `a`.
fn same_moments(a: &Execution, b: &Execution) -> Execution {
    Execution {
        id: a.id.clone(),
        created_at_ms: a.created_at_ms,
        updated_at_ms: a.updated_at_ms,
        ready_at_ms: a.ready_at_ms,
        run_at_ms: a.run_at_ms,
        finished_at_ms: a.finished_at_ms,
        ended_lease: a.ended_lease.clone(),
        ..b.clone()
    }
}

/// The brief forms of complete and fail (what workers use) store exactly
/// what the full forms store, answer the state they left, replay, and are
/// fenced and refused the same way.
pub async fn brief_writes_store_what_full_writes_store(h: Harness) {
    let p = SubmitParams {
        tags: BTreeMap::from([("team".to_owned(), "mail".to_owned())]),
        ..SubmitParams::new("brief", json!({"pad": "x".repeat(2048), "n": 1}))
    };
    let (_, full_task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let (_, brief_task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let result = json!({"ok": true});
    let full = complete(&h, &full_task, result.clone())
        .await
        .expect("complete");
    let params = CompleteParams {
        execution_id: brief_task.execution_id.clone(),
        lease: brief_task.lease_ref(),
        result,
    };
    let state = h.store.execution_complete_brief(&params).await;
    assert_eq!(state.expect("brief complete"), State::Completed);
    let brief = get(&h, &brief_task.execution_id).await;
    assert_eq!(
        same_moments(&full, &brief),
        full,
        "a brief complete stores it all"
    );
    assert_eq!(brief.payload, p.payload, "the payload is untouched");
    let replayed = h.store.execution_complete_brief(&params).await;
    assert_eq!(replayed.expect("replay"), State::Completed);
    assert_eq!(get(&h, &brief.id).await, brief, "a replay changes nothing");
    let rows = attempts(&h, &brief.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, AttemptState::Succeeded);

    // Fenced: a lease of another epoch and an unknown id are refused.
    let (_, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let mut forged = CompleteParams {
        execution_id: task.execution_id.clone(),
        lease: task.lease_ref(),
        result: json!(null),
    };
    forged.lease.epoch = LeaseEpoch(task.lease.epoch.0 + 1);
    let lost = h.store.execution_complete_brief(&forged).await;
    assert_eq!(lost.map_err(|e| e.kind()), Err("lease_lost"));
    let mut unknown = forged.clone();
    unknown.execution_id = ExecutionId::mint(task.execution_id.partition(), 0);
    let missing = h.store.execution_complete_brief(&unknown).await;
    assert_eq!(missing.map_err(|e| e.kind()), Err("not_found"));
    assert_eq!(get(&h, &task.execution_id).await.state, State::Active);

    // Fail: a retryable failure backs off (delayed), the last one fails,
    // and each stores what the full form stores.
    let full_fail = fail(&h, &task, true).await.expect("fail");
    let (_, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let params = FailParams {
        execution_id: task.execution_id.clone(),
        lease: task.lease_ref(),
        error: boom(),
        retryable: true,
    };
    let state = h.store.execution_fail_brief(&params).await;
    assert_eq!(state.expect("brief fail"), full_fail.state);
    let brief_fail = get(&h, &task.execution_id).await;
    assert_eq!(same_moments(&full_fail, &brief_fail), full_fail);
    assert_eq!(brief_fail.failures, 1);
    let replay = h.store.execution_fail_brief(&params).await;
    assert_eq!(replay.expect("fail replay"), full_fail.state);
    let once = SubmitParams {
        max_attempts: Some(1),
        ..p.clone()
    };
    let (_, task) = active_with(&h, &once, LONG_LEASE_MS).await;
    let params = FailParams {
        execution_id: task.execution_id.clone(),
        lease: task.lease_ref(),
        ..params
    };
    let state = h.store.execution_fail_brief(&params).await;
    assert_eq!(state.expect("last brief fail"), State::Failed);
    let ended = get(&h, &task.execution_id).await;
    assert_eq!((ended.state, ended.error), (State::Failed, Some(boom())));
    assert_audit_clean(&h).await;
}
