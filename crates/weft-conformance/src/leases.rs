//! Leases: fencing and automatic recovery of lost leases.
//!
//! Goal: a worker write is accepted only with the current `(lease_id, epoch)`
//! and only before the lease lapses by the store's clock; a lapsed lease is
//! recovered by the tick (attempt `lease_lost`, execution back to `waiting`,
//! counted against `max_attempts`, with `max_reclaims` stopping poison jobs);
//! heartbeats keep a lease alive; nothing is completed twice.
//!
//! Method: claim with short leases, move time past them, tick, then try every
//! worker write with the old lease and finish with the new one; audit after
//! every step.

use serde_json::json;
use weft_core::{AttemptState, Error, LeaseEpoch, LeaseId, LeaseRef, State, SubmitParams};

use crate::support::{
    active, active_with, assert_audit_clean, assert_lease_lost, assert_not_claimable, attempts,
    claim_exec, complete, fail, get, heartbeat, params, submit, tick_all, LONG_LEASE_MS,
};
use crate::Harness;

/// A lapsed lease is refused at once and recovered by the tick; the new lease
/// completes and the old one never writes again.
pub async fn expired_lease_is_recovered(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(3),
        ..params("lease.lost")
    };
    let (exec, old) = active_with(&h, &p, 200).await;
    h.advance_ms(250).await;
    // The lease lapsed by the store's clock even before any tick ran.
    assert_lease_lost(
        complete(&h, &old, json!("late")).await,
        "complete after expiry",
    );
    assert_lease_lost(heartbeat(&h, &old, None).await, "heartbeat after expiry");
    assert_audit_clean(&h).await;

    assert_eq!(tick_all(&h).await, 1, "the lease expiry applies");
    let back = get(&h, &exec.id).await;
    assert_eq!(back.state, State::Waiting, "back in the queue");
    assert!(back.lease.is_none());
    assert_eq!((back.attempts, back.failures, back.reclaims), (1, 1, 1));
    assert_eq!(
        back.error.as_ref().and_then(|e| e.kind.as_deref()),
        Some("lease_lost")
    );
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AttemptState::LeaseLost);
    assert!(list[0].ended_at_ms.is_some());
    assert_audit_clean(&h).await;

    for result in [
        complete(&h, &old, json!("late")).await.map(|_| ()),
        fail(&h, &old, true).await.map(|_| ()),
        heartbeat(&h, &old, None).await.map(|_| ()),
    ] {
        match result {
            Err(Error::LeaseLost { epoch, .. }) => assert_eq!(epoch, LeaseEpoch(1)),
            other => panic!("the old lease wrote: {other:?}"),
        }
    }
    assert_eq!(
        get(&h, &exec.id).await,
        back,
        "refused writes change nothing"
    );

    let new = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(new.attempt.0, 2);
    assert_eq!(new.lease.epoch, LeaseEpoch(2));
    assert_ne!(new.lease.id, old.lease.id);
    assert_lease_lost(
        complete(&h, &old, json!("late")).await,
        "old lease after reclaim",
    );
    let done = complete(&h, &new, json!("fresh")).await.expect("complete");
    assert_eq!(done.state, State::Completed);
    assert_eq!(done.result, Some(json!("fresh")));
    assert_lease_lost(
        complete(&h, &old, json!("late")).await,
        "old lease after the end",
    );
    assert_eq!(get(&h, &exec.id).await.result, Some(json!("fresh")));
    let states: Vec<AttemptState> = attempts(&h, &exec.id)
        .await
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(
        states,
        vec![AttemptState::LeaseLost, AttemptState::Succeeded]
    );
    assert_audit_clean(&h).await;
}

/// Heartbeats keep a lease past its first expiry; the old expiry timer is
/// never applied.
pub async fn heartbeat_keeps_the_lease(h: Harness) {
    // Long enough that a heartbeat half-way is in time even on a slow
    // machine with a real clock.
    const LEASE_MS: i64 = 1_000;
    let (exec, task) = active(&h, LEASE_MS).await;
    for _ in 0..3 {
        h.advance_ms(LEASE_MS / 2).await;
        heartbeat(&h, &task, None).await.expect("heartbeat");
        assert_eq!(tick_all(&h).await, 0, "a renewed lease does not lapse");
        assert_audit_clean(&h).await;
    }
    // Well past the first lease's expiry.
    let still = get(&h, &exec.id).await;
    assert_eq!(still.state, State::Active);
    assert_eq!(still.attempts, 1);
    let done = complete(&h, &task, json!(1)).await.expect("complete");
    assert_eq!(done.state, State::Completed);
    assert_audit_clean(&h).await;
}

/// Lease losses beyond `max_reclaims` fail the execution.
pub async fn max_reclaims_stops_poison_jobs(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(10),
        max_reclaims: Some(1),
        ..params("lease.poison")
    };
    let exec = submit(&h, &p).await;
    claim_exec(&h, &exec, 100).await;
    h.advance_ms(150).await;
    tick_all(&h).await;
    let once = get(&h, &exec.id).await;
    assert_eq!((once.state, once.reclaims), (State::Waiting, 1));
    assert_audit_clean(&h).await;

    claim_exec(&h, &exec, 100).await;
    h.advance_ms(150).await;
    tick_all(&h).await;
    let ended = get(&h, &exec.id).await;
    assert_eq!(
        ended.state,
        State::Failed,
        "the second loss exceeds max_reclaims 1"
    );
    assert_eq!(
        ended.error.as_ref().and_then(|e| e.kind.as_deref()),
        Some("lease_lost")
    );
    assert!(ended.finished_at_ms.is_some());
    assert_not_claimable(&h, &exec).await;
    let states: Vec<AttemptState> = attempts(&h, &exec.id)
        .await
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, vec![AttemptState::LeaseLost; 2]);
    assert_audit_clean(&h).await;
}

/// `max_reclaims: 0` fails on the first lease loss.
pub async fn zero_reclaims_fail_on_first_loss(h: Harness) {
    let p = SubmitParams {
        max_reclaims: Some(0),
        ..params("lease.strict")
    };
    let exec = submit(&h, &p).await;
    claim_exec(&h, &exec, 100).await;
    h.advance_ms(150).await;
    tick_all(&h).await;
    assert_eq!(get(&h, &exec.id).await.state, State::Failed);
    assert_audit_clean(&h).await;
}

/// Lease losses count against `max_attempts`.
pub async fn lease_loss_uses_attempts(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(2),
        ..params("lease.attempts")
    };
    let exec = submit(&h, &p).await;
    for round in 1..=2u32 {
        claim_exec(&h, &exec, 100).await;
        h.advance_ms(150).await;
        tick_all(&h).await;
        let after = get(&h, &exec.id).await;
        assert_eq!(after.failures, round);
        let expected = if round < 2 {
            State::Waiting
        } else {
            State::Failed
        };
        assert_eq!(after.state, expected, "round {round}");
        assert_audit_clean(&h).await;
    }
}

/// A lease id or epoch that was never granted is refused, and the real lease
/// still works afterwards.
pub async fn forged_leases_are_refused(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let forged = [
        LeaseRef {
            lease_id: LeaseId::random(),
            epoch: task.lease.epoch,
        },
        LeaseRef {
            lease_id: task.lease.id.clone(),
            epoch: LeaseEpoch(task.lease.epoch.0 + 1),
        },
        LeaseRef {
            lease_id: task.lease.id.clone(),
            epoch: LeaseEpoch(0),
        },
    ];
    for lease in forged {
        let mut fake = task.clone();
        fake.lease.id = lease.lease_id;
        fake.lease.epoch = lease.epoch;
        assert_lease_lost(complete(&h, &fake, json!("x")).await, "forged complete");
        assert_lease_lost(fail(&h, &fake, false).await, "forged fail");
        assert_lease_lost(heartbeat(&h, &fake, None).await, "forged heartbeat");
    }
    let unchanged = get(&h, &exec.id).await;
    assert_eq!(unchanged, exec, "refused writes change nothing");
    complete(&h, &task, json!("real")).await.expect("complete");
    assert_audit_clean(&h).await;
}
