//! Cancel and replay: the operator's two transitions.
//!
//! Goal: cancel ends a waiting, delayed or active execution at once (an
//! active one's lease can no longer complete or fail it, and its pending
//! timers never apply), is a no-op on a cancelled execution and a `conflict`
//! on any other ended one; replay moves any ended execution back to
//! `waiting` with its counters reset, its attempt numbering continued and its
//! deadline restarted, and is a `conflict` on a non-ended one.
//!
//! Method: build executions in each state with the support factories, apply
//! the operation, read back state, attempts and claimability; audit after
//! every step.

use serde_json::json;
use weft_core::{AttemptState, Error, ExecutionId, State, SubmitParams};

use crate::support::{
    active, active_with, assert_audit_clean, assert_conflict, assert_lease_lost,
    assert_not_claimable, assert_not_found, attempts, cancel, cancelled, claim_exec, complete,
    completed, delayed, expired, fail, failed, get, heartbeat, now, params, submit, tick_all,
    waiting, LEASE_MS, LONG_LEASE_MS,
};
use crate::Harness;

async fn replay(h: &Harness, id: &ExecutionId) -> weft_core::Result<weft_core::Execution> {
    h.store.execution_replay(id).await
}

/// Cancelling a waiting execution ends it with its reason.
pub async fn cancel_waiting(h: Harness) {
    let exec = waiting(&h).await;
    let t0 = now(&h).await;
    let done = cancel(&h, &exec.id).await.expect("cancel");
    assert_eq!(done.state, State::Cancelled);
    assert_eq!(done.cancel_reason.as_deref(), Some("test"));
    assert!(done.finished_at_ms.is_some_and(|t| t >= t0));
    assert_eq!(get(&h, &exec.id).await, done);
    assert_not_claimable(&h, &exec).await;
    assert!(attempts(&h, &exec.id).await.is_empty());
    assert_audit_clean(&h).await;
}

/// Cancelling a delayed execution ends it; its delay timer never applies.
pub async fn cancel_delayed(h: Harness) {
    let exec = delayed(&h, 200).await;
    let done = cancel(&h, &exec.id).await.expect("cancel");
    assert_eq!(done.state, State::Cancelled);
    assert!(done.run_at_ms.is_none());
    assert_audit_clean(&h).await;
    h.advance_ms(250).await;
    assert_eq!(tick_all(&h).await, 0, "the delay timer is gone");
    assert_eq!(get(&h, &exec.id).await.state, State::Cancelled);
    assert_not_claimable(&h, &exec).await;
    assert_audit_clean(&h).await;
}

/// Cancelling an active execution fences its lease off at once.
pub async fn cancel_active(h: Harness) {
    let (exec, task) = active(&h, LEASE_MS).await;
    let done = cancel(&h, &exec.id).await.expect("cancel");
    assert_eq!(done.state, State::Cancelled);
    assert!(done.lease.is_none());
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AttemptState::Cancelled);
    assert!(list[0].ended_at_ms.is_some());
    assert_audit_clean(&h).await;

    assert_lease_lost(complete(&h, &task, json!(1)).await, "complete after cancel");
    assert_lease_lost(fail(&h, &task, true).await, "fail after cancel");
    match heartbeat(&h, &task, None).await {
        Err(Error::LeaseLost { .. }) => {}
        Ok(reply) => assert!(
            reply.cancel_requested,
            "a heartbeat must learn of the cancel"
        ),
        Err(other) => panic!("heartbeat after cancel: {other:?}"),
    }
    h.advance_ms(LEASE_MS + 50).await;
    assert_eq!(tick_all(&h).await, 0, "the lease timer is gone");
    assert_eq!(get(&h, &exec.id).await, done);
    assert_audit_clean(&h).await;
}

/// Cancelling a cancelled execution answers the same, again.
pub async fn cancel_is_idempotent(h: Harness) {
    let exec = cancelled(&h).await;
    let again = cancel(&h, &exec.id).await.expect("cancel again");
    assert_eq!(again, exec);
    assert_audit_clean(&h).await;
}

/// Cancelling an execution that ended otherwise is a conflict.
pub async fn cancel_ended_is_conflict(h: Harness) {
    for exec in [completed(&h).await, failed(&h).await, expired(&h).await] {
        assert_conflict(cancel(&h, &exec.id).await, exec.state.as_str());
        assert_eq!(
            get(&h, &exec.id).await,
            exec,
            "a refused cancel changes nothing"
        );
    }
    assert_not_found(
        cancel(&h, &ExecutionId::mint(weft_core::PartitionId(0), 1)).await,
        "cancel of an unknown id",
    );
    assert_audit_clean(&h).await;
}

/// Replay brings every ended state back to waiting; attempt numbers go on.
pub async fn replay_ended_executions(h: Harness) {
    let ended = [
        completed(&h).await,
        failed(&h).await,
        cancelled(&h).await,
        expired(&h).await,
    ];
    for exec in ended {
        let what = exec.state.as_str();
        let t0 = now(&h).await;
        let back = replay(&h, &exec.id).await.expect("replay");
        let t1 = now(&h).await;
        assert_eq!(back.state, State::Waiting, "{what}");
        assert!(back.result.is_none() && back.error.is_none(), "{what}");
        assert!(
            back.finished_at_ms.is_none() && back.lease.is_none(),
            "{what}"
        );
        assert_eq!((back.failures, back.reclaims), (0, 0), "{what}");
        assert_eq!(back.attempts, exec.attempts, "{what}: numbering is kept");
        assert!(
            (t0..=t1).contains(&back.ready_at_ms),
            "{what}: claimable from now"
        );
        assert_eq!(get(&h, &exec.id).await, back);
        assert_audit_clean(&h).await;

        let task = claim_exec(&h, &back, LONG_LEASE_MS).await;
        assert_eq!(
            task.attempt.0,
            exec.attempts + 1,
            "{what}: attempt numbering continues"
        );
        assert!(task.lease.epoch > exec.epoch, "{what}: epochs only grow");
        let done = complete(&h, &task, json!("again")).await.expect("complete");
        assert_eq!(done.state, State::Completed);
        let numbers: Vec<u32> = attempts(&h, &exec.id)
            .await
            .iter()
            .map(|a| a.number.0)
            .collect();
        let expected: Vec<u32> = (1..=exec.attempts + 1).collect();
        assert_eq!(numbers, expected, "{what}");
        assert_audit_clean(&h).await;
    }
}

/// Replay of a non-ended execution is a conflict; of an unknown one,
/// not found.
pub async fn replay_non_ended_is_conflict(h: Harness) {
    let w = waiting(&h).await;
    let d = delayed(&h, LONG_LEASE_MS).await;
    let (a, _) = active(&h, LONG_LEASE_MS).await;
    for exec in [w, d, a] {
        assert_conflict(replay(&h, &exec.id).await, exec.state.as_str());
        assert_eq!(
            get(&h, &exec.id).await,
            exec,
            "a refused replay changes nothing"
        );
    }
    let unknown = ExecutionId::mint(weft_core::PartitionId(0), 1);
    assert_not_found(replay(&h, &unknown).await, "replay of an unknown id");
    assert_audit_clean(&h).await;
}

/// Replay restarts the deadline from the replay.
pub async fn replay_restarts_the_deadline(h: Harness) {
    let p = SubmitParams {
        deadline_ms: Some(200),
        ..params("replay.deadline")
    };
    let exec = submit(&h, &p).await;
    h.advance_ms(250).await;
    tick_all(&h).await;
    assert_eq!(get(&h, &exec.id).await.state, State::Expired);
    let t0 = now(&h).await;
    let back = replay(&h, &exec.id).await.expect("replay");
    let deadline = back.deadline_at_ms.expect("deadline_at");
    assert!(deadline >= t0 + 200, "the deadline counts from the replay");
    h.advance_ms(100).await;
    if crate::support::tick_before(&h, deadline, "the restarted deadline").await {
        assert_eq!(get(&h, &exec.id).await.state, State::Waiting);
    }
    crate::support::advance_past(&h, deadline).await;
    tick_all(&h).await;
    assert_eq!(get(&h, &exec.id).await.state, State::Expired);
    assert_audit_clean(&h).await;
}

/// Replay gives a failed execution its whole attempt budget again.
pub async fn replay_resets_the_attempt_budget(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(2),
        backoff: Some(crate::support::fixed_backoff(0)),
        ..params("replay.budget")
    };
    let (exec, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    assert_eq!(
        fail(&h, &task, true).await.expect("fail").state,
        State::Waiting
    );
    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(
        fail(&h, &task, true).await.expect("fail").state,
        State::Failed
    );
    replay(&h, &exec.id).await.expect("replay");
    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(task.attempt.0, 3);
    let after = fail(&h, &task, true).await.expect("fail");
    assert_eq!(
        after.state,
        State::Waiting,
        "one failure of a fresh budget of two"
    );
    assert_eq!(after.failures, 1);
    assert_audit_clean(&h).await;
}
