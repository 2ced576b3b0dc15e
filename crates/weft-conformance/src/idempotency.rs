//! Idempotency: of submits (by key) and of terminal worker writes (by lease).
//!
//! Goal: a submit with a seen idempotency key returns the existing execution
//! with `created == false` — also when it has ended, and also under concurrent
//! duplicates (exactly one is created); the same complete or fail repeated by
//! the same lease returns the recorded outcome instead of an error, while a
//! different lease, or the other terminal write, is `lease_lost`.
//!
//! Method: repeat the calls, compare whole executions and attempt lists, and
//! audit after every step.

use std::collections::BTreeSet;

use serde_json::json;
use weft_core::{AttemptState, LeaseEpoch, LeaseId, State, SubmitParams};

use crate::support::{
    active, active_with, assert_audit_clean, assert_lease_lost, attempts, claim_exec, complete,
    fail, get, list_everything, params, LONG_LEASE_MS,
};
use crate::Harness;

fn keyed(key: &str, payload: serde_json::Value) -> SubmitParams {
    SubmitParams {
        idempotency_key: Some(key.to_owned()),
        ..SubmitParams::new("idem.job", payload)
    }
}

/// The same key returns the same execution; another key or none creates.
pub async fn same_key_returns_the_same_execution(h: Harness) {
    let first = h
        .store
        .execution_submit(&keyed("order-42", json!(1)))
        .await
        .expect("submit");
    assert!(first.created);
    assert_eq!(first.execution.idempotency_key.as_deref(), Some("order-42"));
    let again = h
        .store
        .execution_submit(&keyed("order-42", json!(2)))
        .await
        .expect("submit");
    assert!(!again.created, "the key was seen");
    assert_eq!(
        again.execution, first.execution,
        "the existing execution, first payload"
    );
    let other = h
        .store
        .execution_submit(&keyed("order-43", json!(1)))
        .await
        .expect("submit");
    assert!(other.created);
    assert_ne!(other.execution.id, first.execution.id);
    let plain = SubmitParams::new("idem.job", json!(1));
    let a = h.store.execution_submit(&plain).await.expect("submit");
    let b = h.store.execution_submit(&plain).await.expect("submit");
    assert!(
        a.created && b.created && a.execution.id != b.execution.id,
        "no key, no dedup"
    );
    assert_eq!(list_everything(&h).await.len(), 4);
    assert_audit_clean(&h).await;
}

/// A key keeps answering with its execution after that execution ended.
pub async fn key_outlives_the_end(h: Harness) {
    let p = SubmitParams {
        lane: Some("idem".into()),
        ..keyed("done-1", json!(null))
    };
    let exec = crate::support::submit(&h, &p).await;
    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    complete(&h, &task, json!("r")).await.expect("complete");
    let again = h.store.execution_submit(&p).await.expect("submit");
    assert!(!again.created);
    assert_eq!(again.execution.id, exec.id);
    assert_eq!(again.execution.state, State::Completed);
    assert_audit_clean(&h).await;
}

/// Concurrent submits of one key create exactly one execution.
pub async fn concurrent_duplicates_create_one(h: Harness) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = h.handle();
        tasks.push(tokio::spawn(async move {
            store.execution_submit(&keyed("race", json!(i))).await
        }));
    }
    let mut created = 0;
    let mut ids = BTreeSet::new();
    for task in tasks {
        let submitted = task.await.expect("task").expect("submit");
        created += usize::from(submitted.created);
        ids.insert(submitted.execution.id);
    }
    assert_eq!(created, 1, "exactly one submit creates");
    assert_eq!(ids.len(), 1, "every submit answers with the same execution");
    assert_eq!(list_everything(&h).await.len(), 1);
    assert_audit_clean(&h).await;
}

/// The same complete twice answers the same; other leases are refused.
pub async fn complete_is_replayed(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let first = complete(&h, &task, json!({"v": 1}))
        .await
        .expect("complete");
    let second = complete(&h, &task, json!({"v": 1}))
        .await
        .expect("repeated complete");
    assert_eq!(second, first, "the recorded outcome");
    assert_eq!(get(&h, &exec.id).await, first);
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1, "no second attempt: {list:?}");
    assert_eq!(list[0].state, AttemptState::Succeeded);

    let mut stranger = task.clone();
    stranger.lease.id = LeaseId::random();
    assert_lease_lost(
        complete(&h, &stranger, json!({"v": 2})).await,
        "another lease",
    );
    let mut stale = task.clone();
    stale.lease.epoch = LeaseEpoch(task.lease.epoch.0 + 1);
    assert_lease_lost(complete(&h, &stale, json!({"v": 2})).await, "another epoch");
    assert_lease_lost(fail(&h, &task, true).await, "fail after complete");
    assert_eq!(get(&h, &exec.id).await, first, "refusals change nothing");
    assert_audit_clean(&h).await;
}

/// The same fail twice answers the same, retryable or not.
pub async fn fail_is_replayed(h: Harness) {
    for retryable in [true, false] {
        let p = SubmitParams {
            max_attempts: Some(3),
            ..params("idem.fail")
        };
        let (exec, task) = active_with(&h, &p, LONG_LEASE_MS).await;
        let first = fail(&h, &task, retryable).await.expect("fail");
        let expected = if retryable {
            State::Delayed
        } else {
            State::Failed
        };
        assert_eq!(first.state, expected);
        let second = fail(&h, &task, retryable).await.expect("repeated fail");
        assert_eq!(
            second, first,
            "the recorded outcome (retryable: {retryable})"
        );
        assert_eq!(get(&h, &exec.id).await, first);
        assert_eq!(attempts(&h, &exec.id).await.len(), 1);
        assert_eq!(get(&h, &exec.id).await.failures, 1, "counted once");
        assert_lease_lost(complete(&h, &task, json!(1)).await, "complete after fail");
        assert_audit_clean(&h).await;
    }
}
