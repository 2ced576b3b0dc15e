//! Release: a worker that stops hands its task back without penalty.
//!
//! Goal: a release with the live lease ends the attempt `released` and makes
//! the execution `waiting` at once, counting nothing against `max_attempts`
//! or `max_reclaims` and keeping the last error and the deadline; the next
//! claim is attempt n+1 with epoch + 1, after which the old lease writes
//! nothing (release included); the same release again answers the execution
//! as it is until then; a stale, forged or lapsed lease is `lease_lost`, an
//! unknown id `not_found`, and refused releases change nothing.
//!
//! Method: claim with long leases (short ones only where expiry is the
//! point), release, then read the execution and its attempts, claim again and
//! try every worker write with the old lease; audit after every step.

use serde_json::json;
use weft_core::{AttemptState, Error, ExecutionId, LeaseEpoch, LeaseId, PartitionId, State};
use weft_core::{SubmitParams, Task};

use crate::support::{
    active, active_with, assert_audit_clean, assert_lease_lost, assert_not_found, attempts, cancel,
    claim_exec, complete, fail, fixed_backoff, get, heartbeat, params, release, submit, tick_all,
    waiting, LONG_LEASE_MS,
};
use crate::Harness;

/// The states of an execution's attempts, oldest first.
async fn attempt_states(h: &Harness, id: &ExecutionId) -> Vec<AttemptState> {
    attempts(h, id).await.iter().map(|a| a.state).collect()
}

/// A release makes the execution waiting at once; the next claim is a new
/// attempt with a new epoch, and the old lease can no longer write.
pub async fn release_returns_to_waiting(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(3),
        ..params("release.back")
    };
    let (exec, old) = active_with(&h, &p, LONG_LEASE_MS).await;
    let back = release(&h, &old).await.expect("release");
    assert_eq!(back.state, State::Waiting, "back in the queue at once");
    assert!(back.lease.is_none() && back.run_at_ms.is_none());
    assert_eq!((back.attempts, back.failures, back.reclaims), (1, 0, 0));
    assert_eq!(back.epoch, exec.epoch, "the next claim moves the epoch");
    assert_eq!(back.error, None);
    assert_eq!(get(&h, &exec.id).await, back);
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AttemptState::Released);
    assert!(list[0].ended_at_ms.is_some() && list[0].error.is_none());
    assert_audit_clean(&h).await;

    let new = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(new.attempt.0, 2);
    assert_eq!(new.lease.epoch, LeaseEpoch(old.lease.epoch.0 + 1));
    for result in [
        complete(&h, &old, json!("late")).await.map(|_| ()),
        heartbeat(&h, &old, None).await.map(|_| ()),
        release(&h, &old).await.map(|_| ()),
        fail(&h, &old, true).await.map(|_| ()),
    ] {
        match result {
            Err(Error::LeaseLost { epoch, .. }) => assert_eq!(epoch, old.lease.epoch),
            other => panic!("the old lease wrote: {other:?}"),
        }
    }
    let done = complete(&h, &new, json!("fresh")).await.expect("complete");
    assert_eq!(done.state, State::Completed);
    assert_eq!(done.failures, 0);
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![AttemptState::Released, AttemptState::Succeeded]
    );
    assert_audit_clean(&h).await;
}

/// The same release again answers the execution as it is and changes
/// nothing, until the execution is claimed again.
pub async fn release_is_replayed_until_reclaimed(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let first = release(&h, &task).await.expect("release");
    let again = release(&h, &task).await.expect("the same release again");
    assert_eq!(again, first);
    assert_eq!(get(&h, &exec.id).await, first, "a replay changes nothing");
    assert_eq!(attempts(&h, &exec.id).await.len(), 1);
    assert_audit_clean(&h).await;

    // A release is not a complete or a fail: those are refused.
    assert_lease_lost(
        complete(&h, &task, json!(1)).await,
        "complete after release",
    );
    assert_lease_lost(fail(&h, &task, true).await, "fail after release");

    claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_lease_lost(release(&h, &task).await, "release after a new claim");
    assert_eq!(get(&h, &exec.id).await.state, State::Active);
    assert_audit_clean(&h).await;
}

/// Releases count against neither `max_attempts` nor `max_reclaims`, however
/// many there are.
pub async fn release_uses_no_attempts(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(1),
        max_reclaims: Some(0),
        ..params("release.free")
    };
    let exec = submit(&h, &p).await;
    for round in 1..=3u32 {
        let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
        assert_eq!(task.attempt.0, round);
        let back = release(&h, &task).await.expect("release");
        assert_eq!(back.state, State::Waiting, "round {round}");
        assert_eq!((back.attempts, back.failures, back.reclaims), (round, 0, 0));
        assert_audit_clean(&h).await;
    }
    let last = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(last.attempt.0, 4);
    let done = complete(&h, &last, json!("done")).await.expect("complete");
    assert_eq!(done.state, State::Completed);
    let mut expected = vec![AttemptState::Released; 3];
    expected.push(AttemptState::Succeeded);
    assert_eq!(attempt_states(&h, &exec.id).await, expected);
    assert_audit_clean(&h).await;
}

/// A release keeps the failures and error of earlier attempts and the
/// execution's deadline; the attempt's timeout leaves with its lease.
pub async fn release_keeps_failures_and_the_deadline(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(3),
        backoff: Some(fixed_backoff(0)),
        timeout_ms: Some(150),
        deadline_ms: Some(600_000),
        ..params("release.keeps")
    };
    let (exec, first) = active_with(&h, &p, LONG_LEASE_MS).await;
    let failed = fail(&h, &first, true).await.expect("fail");
    assert_eq!((failed.state, failed.failures), (State::Waiting, 1));
    let second = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    let back = release(&h, &second).await.expect("release");
    assert_eq!(
        (back.state, back.attempts, back.failures),
        (State::Waiting, 2, 1)
    );
    assert_eq!(back.error, failed.error, "the last failure is kept");
    assert_eq!(
        back.deadline_at_ms, exec.deadline_at_ms,
        "the deadline stays"
    );
    assert_audit_clean(&h).await;

    // Past the released attempt's timeout: nothing is due.
    h.advance_ms(200).await;
    assert_eq!(
        tick_all(&h).await,
        0,
        "the attempt timeout left with the lease"
    );
    let still = get(&h, &exec.id).await;
    assert_eq!((still.state, still.failures), (State::Waiting, 1));
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![AttemptState::Failed, AttemptState::Released]
    );
    assert_audit_clean(&h).await;
}

/// Only the live lease releases: a lapsed, forged or ended one is
/// `lease_lost`, an unknown id `not_found`, and refusals change nothing.
pub async fn release_needs_the_live_lease(h: Harness) {
    let (lapsing, short) = active(&h, 200).await;
    h.advance_ms(250).await;
    assert_lease_lost(release(&h, &short).await, "release after expiry");
    assert_eq!(get(&h, &lapsing.id).await, lapsing, "refused, unchanged");
    assert_eq!(tick_all(&h).await, 1, "the lease expiry applies");
    assert_lease_lost(release(&h, &short).await, "release after recovery");
    assert_eq!(
        attempt_states(&h, &lapsing.id).await,
        vec![AttemptState::LeaseLost]
    );

    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let forge = |edit: &dyn Fn(&mut Task)| {
        let mut fake = task.clone();
        edit(&mut fake);
        fake
    };
    let forged = [
        forge(&|t| t.lease.id = LeaseId::random()),
        forge(&|t| t.lease.epoch = LeaseEpoch(t.lease.epoch.0 + 1)),
    ];
    for fake in &forged {
        assert_lease_lost(release(&h, fake).await, "forged release");
    }
    assert_eq!(get(&h, &exec.id).await, exec, "refused, unchanged");

    let idle = waiting(&h).await;
    let not_active = forge(&|t| t.execution_id = idle.id.clone());
    assert_lease_lost(release(&h, &not_active).await, "release of a waiting one");
    assert_eq!(get(&h, &idle.id).await, idle);
    let unknown = forge(&|t| t.execution_id = ExecutionId::mint(PartitionId(0), 1));
    assert_not_found(release(&h, &unknown).await, "release of an unknown id");

    complete(&h, &task, json!("done")).await.expect("complete");
    assert_lease_lost(release(&h, &task).await, "release after complete");
    let (cancelled, leased) = active(&h, LONG_LEASE_MS).await;
    cancel(&h, &cancelled.id).await.expect("cancel");
    assert_lease_lost(release(&h, &leased).await, "release after cancel");
    assert_eq!(get(&h, &cancelled.id).await.state, State::Cancelled);
    assert_audit_clean(&h).await;
}
