//! Retry: one policy of max attempts, exponential backoff with jitter and a
//! `retryable` flag.
//!
//! Goal: a retryable failure with attempts left makes the execution `delayed`
//! with `run_at` exactly `backoff.delay_ms(n, jitter_unit(id, n))` after the
//! failure (every store computes the same schedule), inside the documented
//! bounds `min(max, initial × multiplier^(n−1)) ± jitter`; the delay timer
//! moves it back to `waiting` when due and not before; the attempt that uses
//! the last of `max_attempts` ends it `failed` with its error; a non-retryable
//! failure ends it at once.
//!
//! Method: claim and fail repeatedly, bracketing each fail between two reads
//! of the store's clock, then move time and tick; audit after every step.

use serde_json::json;
use weft_core::{
    jitter_unit, AttemptNumber, AttemptState, Backoff, ErrorInfo, State, SubmitParams,
};

use crate::support::{
    active_with, advance_past, assert_audit_clean, assert_lease_lost, assert_not_claimable,
    attempts, claim_exec, complete, fail, fail_with, fixed_backoff, get, now, params, submit,
    tick_all, tick_before, LONG_LEASE_MS,
};
use crate::Harness;

/// Backoff grows per failure within its bounds, and the last attempt fails.
pub async fn retryable_failures_back_off_then_fail(h: Harness) {
    let backoff = Backoff {
        initial_ms: 100,
        max_ms: 300,
        multiplier: 2.0,
        jitter: 0.2,
    };
    let p = SubmitParams {
        max_attempts: Some(4),
        backoff: Some(backoff.clone()),
        ..params("retry.job")
    };
    let exec = submit(&h, &p).await;
    for n in 1..=3u32 {
        let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
        assert_eq!(task.attempt.0, n);
        let error = ErrorInfo::new("io", format!("boom {n}"));
        let t0 = now(&h).await;
        let after = fail_with(&h, &task, error.clone(), true)
            .await
            .expect("fail");
        let t1 = now(&h).await;
        assert_eq!(after.state, State::Delayed, "attempt {n} has attempts left");
        assert_eq!((after.attempts, after.failures), (n, n));
        assert_eq!(after.error.as_ref(), Some(&error));
        assert!(after.lease.is_none() && after.finished_at_ms.is_none());
        let run_at = after.run_at_ms.expect("a delayed execution has run_at");

        let delay = backoff.delay_ms(n, jitter_unit(&exec.id, AttemptNumber(n)));
        assert!(
            (t0 + delay..=t1 + delay).contains(&run_at),
            "attempt {n}: run_at {run_at} is not the failure time + {delay} ({t0}..={t1})"
        );
        let exponent = i32::try_from(n - 1).unwrap_or(0);
        let base = (100.0 * 2f64.powi(exponent)).min(300.0);
        let (low, high) = (base * 0.8 - 1.0, base * 1.2 + 1.0);
        assert!(
            (low..=high).contains(&(delay as f64)),
            "attempt {n}: {delay}"
        );
        assert_eq!(get(&h, &exec.id).await, after);
        assert_audit_clean(&h).await;

        // Not claimable, and not promoted, before run_at.
        assert_not_claimable(&h, &exec).await;
        if h.clock.is_some() {
            let stand = now(&h).await;
            h.advance_ms(run_at - stand - 1).await;
        }
        if tick_before(&h, run_at, &format!("attempt {n}")).await {
            assert_eq!(get(&h, &exec.id).await.state, State::Delayed);
        }

        advance_past(&h, run_at).await;
        tick_all(&h).await;
        let ready = get(&h, &exec.id).await;
        assert_eq!(ready.state, State::Waiting);
        assert!(ready.run_at_ms.is_none());
        assert_eq!(ready.ready_at_ms, run_at, "claimable since run_at");
        assert_audit_clean(&h).await;
    }

    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(task.attempt.0, 4);
    let error = ErrorInfo::new("io", "boom 4");
    let ended = fail_with(&h, &task, error.clone(), true)
        .await
        .expect("fail");
    assert_eq!(ended.state, State::Failed, "max_attempts reached");
    assert_eq!((ended.attempts, ended.failures), (4, 4));
    assert_eq!(ended.error, Some(error));
    assert!(ended.finished_at_ms.is_some() && ended.run_at_ms.is_none());
    assert!(ended.lease.is_none() && ended.result.is_none());
    assert_not_claimable(&h, &exec).await;
    assert_eq!(tick_all(&h).await, 0);
    assert_eq!(get(&h, &exec.id).await, ended);

    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 4);
    for (i, attempt) in list.iter().enumerate() {
        assert_eq!(attempt.number.0 as usize, i + 1);
        assert_eq!(attempt.state, AttemptState::Failed);
        assert!(attempt.ended_at_ms.is_some());
        let message = attempt.error.as_ref().map(|e| e.message.clone());
        assert_eq!(message, Some(format!("boom {}", i + 1)));
    }
    assert_lease_lost(
        complete(&h, &task, json!(1)).await,
        "complete after the end",
    );
    assert_audit_clean(&h).await;
}

/// A non-retryable failure ends the execution whatever attempts are left.
pub async fn non_retryable_failure_ends_at_once(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(5),
        ..params("retry.fatal")
    };
    let (exec, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let ended = fail(&h, &task, false).await.expect("fail");
    assert_eq!(ended.state, State::Failed);
    assert_eq!(ended.attempts, 1);
    assert_eq!(ended.error, Some(crate::support::boom()));
    assert!(ended.finished_at_ms.is_some());
    let list = attempts(&h, &exec.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AttemptState::Failed);
    assert_not_claimable(&h, &exec).await;
    assert_audit_clean(&h).await;
}

/// With `max_attempts: 1` the first retryable failure is final.
pub async fn single_attempt_fails_at_once(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(1),
        ..params("retry.once")
    };
    let (_, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let ended = fail(&h, &task, true).await.expect("fail");
    assert_eq!(ended.state, State::Failed);
    assert_eq!(ended.failures, 1);
    assert_audit_clean(&h).await;
}

/// A zero backoff puts the execution straight back to `waiting`.
pub async fn zero_backoff_retries_at_once(h: Harness) {
    let p = SubmitParams {
        backoff: Some(fixed_backoff(0)),
        ..params("retry.now")
    };
    let (exec, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let after = fail(&h, &task, true).await.expect("fail");
    assert_eq!(after.state, State::Waiting);
    assert!(after.run_at_ms.is_none());
    assert_audit_clean(&h).await;
    let again = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(again.attempt.0, 2);
    let done = complete(&h, &again, json!("ok")).await.expect("complete");
    assert_eq!(done.state, State::Completed);
    assert_lease_lost(
        complete(&h, &task, json!("late")).await,
        "complete by the old lease",
    );
    assert_eq!(get(&h, &exec.id).await.result, Some(json!("ok")));
    assert_audit_clean(&h).await;
}

/// A worker's error message longer than the limit is cut, not refused.
pub async fn long_error_messages_are_cut(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(1),
        ..params("retry.verbose")
    };
    let (_, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let message = "é".repeat(weft_core::ERROR_MESSAGE_LEN_MAX);
    let ended = fail_with(&h, &task, ErrorInfo::new("verbose", message), true)
        .await
        .expect("fail");
    let kept = ended.error.expect("error").message;
    assert!(
        kept.len() <= weft_core::ERROR_MESSAGE_LEN_MAX,
        "{}",
        kept.len()
    );
    assert!(!kept.is_empty() && kept.chars().all(|c| c == 'é'));
    assert_audit_clean(&h).await;
}
