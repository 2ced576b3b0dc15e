//! Timers: delays, attempt timeouts, execution deadlines and the tick itself.
//!
//! Goal: a delayed execution becomes `waiting` at its `run_at` and not before
//! (claim order counts from `run_at`); an attempt exceeding `timeout_ms` ends
//! `timed_out` and is retried per policy; an execution reaching its deadline
//! is `expired` from `waiting`, `delayed` and `active` (its attempt ends
//! `timed_out` and the lease is fenced off); `partition_tick` applies at most
//! `max` timers and reports the next due time.
//!
//! Method: short durations, `Harness::advance_ms` to move the store's clock
//! (a manual clock or real waiting), `partition_tick` to apply what is due;
//! audit after every step.

use serde_json::json;
use weft_core::{AttemptState, PartitionId, State, SubmitParams};

use crate::support::{
    advance_past, assert_audit_clean, assert_lease_lost, assert_not_claimable, attempts,
    claim_exec, complete, fixed_backoff, get, now, params, submit, tick_all, tick_before,
    LONG_LEASE_MS,
};
use crate::Harness;

/// A delay keeps the execution out of reach until `run_at`.
pub async fn delayed_becomes_waiting_when_due(h: Harness) {
    let t0 = now(&h).await;
    let exec = submit(
        &h,
        &SubmitParams {
            delay_ms: Some(200),
            ..params("timer.delay")
        },
    )
    .await;
    let t1 = now(&h).await;
    assert_eq!(exec.state, State::Delayed);
    let run_at = exec.run_at_ms.expect("run_at");
    assert!((t0 + 200..=t1 + 200).contains(&run_at));
    assert_not_claimable(&h, &exec).await;
    tick_before(&h, run_at, "delay").await;
    assert_audit_clean(&h).await;
    if h.clock.is_some() {
        h.advance_ms(run_at - now(&h).await).await;
        assert_eq!(tick_all(&h).await, 1, "due exactly at run_at");
    } else {
        advance_past(&h, run_at).await;
        tick_all(&h).await;
    }
    let ready = get(&h, &exec.id).await;
    assert_eq!(ready.state, State::Waiting);
    assert_eq!(ready.ready_at_ms, run_at);
    assert!(ready.run_at_ms.is_none());
    assert_audit_clean(&h).await;
    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    complete(&h, &task, json!(null)).await.expect("complete");
    assert_audit_clean(&h).await;
}

/// `run_at` in the past means waiting now; in the future, delayed until then.
pub async fn run_at_is_absolute(h: Harness) {
    let t = now(&h).await;
    let past = submit(
        &h,
        &SubmitParams {
            run_at_ms: Some(t - 1_000),
            ..params("timer.past")
        },
    )
    .await;
    assert_eq!(past.state, State::Waiting);
    let future = submit(
        &h,
        &SubmitParams {
            run_at_ms: Some(t + 500),
            ..params("timer.future")
        },
    )
    .await;
    assert_eq!(future.state, State::Delayed);
    assert_eq!(future.run_at_ms, Some(t + 500));
    assert_audit_clean(&h).await;
    advance_past(&h, t + 500).await;
    tick_all(&h).await;
    assert_eq!(get(&h, &future.id).await.state, State::Waiting);
    assert_audit_clean(&h).await;
}

/// An attempt over `timeout_ms` ends `timed_out` and is retried; the last
/// allowed timeout fails the execution.
pub async fn attempt_timeout_is_retried(h: Harness) {
    let p = SubmitParams {
        timeout_ms: Some(100),
        max_attempts: Some(2),
        // Long enough that one sweep of ticks does not also promote the
        // retry on a slow machine with a real clock.
        backoff: Some(fixed_backoff(300)),
        ..params("timer.timeout")
    };
    let exec = submit(&h, &p).await;
    let first = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert!(first.lease.timeout_at_ms.is_some());
    h.advance_ms(150).await;
    assert_eq!(tick_all(&h).await, 1, "the attempt timeout applies");
    let after = get(&h, &exec.id).await;
    assert_eq!(after.state, State::Delayed, "retried after the backoff");
    assert_eq!(after.failures, 1);
    assert_eq!(
        after.error.as_ref().and_then(|e| e.kind.as_deref()),
        Some("timed_out")
    );
    assert_lease_lost(
        complete(&h, &first, json!(1)).await,
        "complete after timeout",
    );
    assert_audit_clean(&h).await;

    advance_past(&h, after.run_at_ms.expect("run_at")).await;
    assert_eq!(tick_all(&h).await, 1);
    let second = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(second.attempt.0, 2);
    h.advance_ms(150).await;
    tick_all(&h).await;
    let ended = get(&h, &exec.id).await;
    assert_eq!(ended.state, State::Failed, "two timeouts use both attempts");
    assert_eq!(ended.failures, 2);
    let states: Vec<AttemptState> = attempts(&h, &exec.id)
        .await
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, vec![AttemptState::TimedOut; 2]);
    assert_audit_clean(&h).await;
}

/// A waiting execution reaching its deadline expires.
pub async fn deadline_expires_waiting(h: Harness) {
    let exec = submit(
        &h,
        &SubmitParams {
            deadline_ms: Some(200),
            ..params("timer.deadline")
        },
    )
    .await;
    let deadline = exec.deadline_at_ms.expect("deadline_at");
    h.advance_ms(100).await;
    if tick_before(&h, deadline, "deadline").await {
        assert_eq!(get(&h, &exec.id).await.state, State::Waiting);
    }
    advance_past(&h, deadline).await;
    assert_eq!(tick_all(&h).await, 1);
    let ended = get(&h, &exec.id).await;
    assert_eq!(ended.state, State::Expired);
    assert!(ended.finished_at_ms.is_some());
    assert_not_claimable(&h, &exec).await;
    assert_audit_clean(&h).await;
}

/// A delayed execution reaching its deadline before its `run_at` expires.
pub async fn deadline_expires_delayed(h: Harness) {
    let exec = submit(
        &h,
        &SubmitParams {
            deadline_ms: Some(200),
            delay_ms: Some(LONG_LEASE_MS),
            ..params("timer.deadline")
        },
    )
    .await;
    assert_eq!(exec.state, State::Delayed);
    h.advance_ms(250).await;
    assert_eq!(tick_all(&h).await, 1);
    let ended = get(&h, &exec.id).await;
    assert_eq!(ended.state, State::Expired);
    assert!(ended.run_at_ms.is_none());
    assert_audit_clean(&h).await;
}

/// An active execution reaching its deadline expires; its attempt ends
/// `timed_out` and its lease can no longer write.
pub async fn deadline_expires_active(h: Harness) {
    let exec = submit(
        &h,
        &SubmitParams {
            deadline_ms: Some(200),
            ..params("timer.deadline")
        },
    )
    .await;
    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    h.advance_ms(250).await;
    assert_eq!(tick_all(&h).await, 1);
    let ended = get(&h, &exec.id).await;
    assert_eq!(ended.state, State::Expired);
    assert!(ended.lease.is_none());
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AttemptState::TimedOut);
    assert_lease_lost(complete(&h, &task, json!(1)).await, "complete after expiry");
    assert_audit_clean(&h).await;
}

/// One tick applies at most `max` timers; a drained partition reports the
/// earliest remaining timer.
pub async fn tick_honours_max_and_reports_next_due(h: Harness) {
    let count = h.store.partition_count();
    // Enough delayed executions that some partition holds at least two.
    let n = usize::from(count.get()) * 2 + 1;
    let mut execs = Vec::new();
    for _ in 0..n {
        execs.push(
            submit(
                &h,
                &SubmitParams {
                    delay_ms: Some(100),
                    ..params("timer.batch")
                },
            )
            .await,
        );
    }
    let latest = execs
        .iter()
        .filter_map(|e| e.run_at_ms)
        .max()
        .expect("run_at");
    advance_past(&h, latest).await;
    let busiest = count
        .iter()
        .max_by_key(|p| execs.iter().filter(|e| e.id.partition() == *p).count())
        .unwrap_or(PartitionId(0));
    let held = execs.iter().filter(|e| e.id.partition() == busiest).count();
    assert!(
        held >= 2,
        "pigeonhole: {n} executions over {} partitions",
        count.get()
    );

    let first = h.store.partition_tick(busiest, 1).await.expect("tick");
    assert_eq!(first.applied, 1, "max 1 applies one timer: {first:?}");
    let t = now(&h).await;
    assert!(first.now_ms <= t, "the report carries the store's time");
    let rest = h.store.partition_tick(busiest, 1000).await.expect("tick");
    assert_eq!(rest.applied as usize, held - 1, "{rest:?}");
    assert_eq!(rest.next_due_ms, None, "nothing left on the partition");
    tick_all(&h).await;
    assert_audit_clean(&h).await;

    let later = submit(
        &h,
        &SubmitParams {
            delay_ms: Some(LONG_LEASE_MS),
            ..params("timer.later")
        },
    )
    .await;
    let report = h
        .store
        .partition_tick(later.id.partition(), 1000)
        .await
        .expect("tick");
    assert_eq!(report.applied, 0);
    assert_eq!(report.next_due_ms, later.run_at_ms, "the earliest timer");
    assert_audit_clean(&h).await;
}

/// A store that offers due hints announces a new timer of a partition.
/// Hints may be lost, so the test submits several delayed executions and
/// needs one matching hint, not all.
pub async fn due_hints_announce_new_timers(h: Harness) {
    let Some(mut hints) = h.store.due_hints() else {
        eprintln!("skipped: the store sends no due hints (engines fall back to polling)");
        return;
    };
    let mut expected = Vec::new();
    for _ in 0..10 {
        let exec = submit(
            &h,
            &SubmitParams {
                delay_ms: Some(LONG_LEASE_MS),
                ..params("timer.hint")
            },
        )
        .await;
        expected.push((exec.id.partition(), exec.run_at_ms.expect("run_at")));
        let wait = tokio::time::timeout(std::time::Duration::from_millis(100), async {
            loop {
                match hints.recv().await {
                    Ok(hint) => {
                        let matches = expected
                            .iter()
                            .any(|(p, at)| *p == hint.partition && hint.due_ms <= *at);
                        if matches {
                            return true;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                }
            }
        });
        if wait.await == Ok(true) {
            return;
        }
    }
    panic!("no due hint for any of ten new delay timers: {expected:?}");
}
