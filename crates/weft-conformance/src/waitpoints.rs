//! Waitpoints: suspend, signal, resume and the waitpoint timeout.
//!
//! Goal: a worker suspends its execution on named waitpoints (`all` or
//! `any`): the attempt ends `suspended`, the lease is released (its later
//! writes are `lease_lost`), nothing counts against `max_attempts`, and the
//! execution sits `suspended` in one index with at most its waitpoint timer.
//! Operator signals satisfy it (then `waiting`; the next claim is attempt
//! n+1, epoch + 1, whose task carries the payloads) or are buffered when the
//! suspension in force does not name them, and a buffered signal satisfies a
//! later suspend at once (the execution stays `active`). A signal repeated on
//! one waitpoint, or sent to an ended execution, is `conflict`; a token's
//! signal (`seq`) opens exactly one waitpoint of the suspension in force,
//! once, and is `invalid_token` otherwise. The first unsignalled waitpoint
//! to time out applies its `on_timeout` (`fail`, `cancel`, `expire`,
//! `resume`); cancel and the deadline end a suspension and leave no timer; a
//! repeated suspend by the same lease is answered with the execution as it
//! is until the next claim; replay clears every signal. A suspended flow
//! member keeps its downstreams blocked (the flow is `blocked` while nothing
//! else can run) until it is resumed and completes. Refusals change nothing.
//!
//! Method: claim with long leases, suspend through `execution_suspend`, send
//! operator (`seq: None`) and token (`seq: Some`) signals through
//! `execution_signal`, move time with `Harness::advance_ms` and apply
//! waitpoint timeouts with `partition_tick`; read the execution, its
//! attempts, its lane's depths and the state-filtered list after each step,
//! and audit every partition (one index, timers as the body calls for).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_core::flow::{derive_state, EdgeOn, FlowEdge, FlowNodeSpec, FlowSpec, FlowState};
use weft_core::waitpoint::{OnTimeout, ResumeWhen, SuspendSpec, WaitpointSpec};
use weft_core::{
    AttemptState, Error, Execution, ExecutionId, FlowId, LeaseEpoch, LeaseId, ListParams,
    PartitionId, Result, SignalParams, State, SubmitParams, SuspendParams, Task,
};

use crate::support::{
    active, active_with, advance_past, assert_audit_clean, assert_conflict, assert_invalid,
    assert_lease_lost, assert_not_claimable, assert_not_found, attempts, cancel, claim_exec,
    complete, fail, fixed_backoff, get, heartbeat, list_all, params, submit, tick_all, tick_before,
    unique_lane, LONG_LEASE_MS,
};
use crate::Harness;

/// A waitpoint without a timeout.
fn wp(name: &str) -> WaitpointSpec {
    WaitpointSpec::new(name)
}

/// A waitpoint that times out after `ms` with `on_timeout`.
fn wp_timed(name: &str, ms: i64, on_timeout: OnTimeout) -> WaitpointSpec {
    WaitpointSpec {
        timeout_ms: Some(ms),
        on_timeout,
        ..WaitpointSpec::new(name)
    }
}

/// A suspend on `waitpoints`, resuming when `resume_when` of them are
/// signalled.
fn spec(resume_when: ResumeWhen, waitpoints: Vec<WaitpointSpec>) -> SuspendSpec {
    SuspendSpec {
        waitpoints,
        resume_when,
    }
}

/// Signal payloads by waitpoint.
fn signals(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Suspends `task`'s execution on `spec` with the task's lease.
async fn suspend(h: &Harness, task: &Task, spec: &SuspendSpec) -> Result<Execution> {
    h.store
        .execution_suspend(&SuspendParams {
            execution_id: task.execution_id.clone(),
            lease: crate::support::lease_of(task),
            spec: spec.clone(),
        })
        .await
}

/// An operator's signal for `waitpoint` of `id`.
async fn signal(
    h: &Harness,
    id: &ExecutionId,
    waitpoint: &str,
    payload: Value,
) -> Result<Execution> {
    send(h, id, waitpoint, payload, None).await
}

/// A signal for `waitpoint` of `id`; `seq` is a verified token's suspension.
async fn send(
    h: &Harness,
    id: &ExecutionId,
    waitpoint: &str,
    payload: Value,
    seq: Option<u32>,
) -> Result<Execution> {
    h.store
        .execution_signal(&SignalParams {
            execution_id: id.clone(),
            waitpoint: waitpoint.to_owned(),
            payload,
            seq,
        })
        .await
}

/// Expects `invalid_token`.
#[track_caller]
fn assert_invalid_token<T: std::fmt::Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::InvalidToken) => {}
        other => panic!("{what}: expected invalid_token, got {other:?}"),
    }
}

/// The states of an execution's attempts, oldest first.
async fn attempt_states(h: &Harness, id: &ExecutionId) -> Vec<AttemptState> {
    attempts(h, id).await.iter().map(|a| a.state).collect()
}

/// The store's earliest timer on `partition` (ticking it; nothing may be
/// due).
async fn next_due(h: &Harness, partition: PartitionId) -> Option<i64> {
    let report = h
        .store
        .partition_tick(partition, 1000)
        .await
        .unwrap_or_else(|e| panic!("tick {partition}: {e}"));
    assert_eq!(report.applied, 0, "nothing is due yet: {report:?}");
    report.next_due_ms
}

/// Reads `id` and checks it is where a state says it is: listed under that
/// state in its lane, counted in the lane's depth, and audited clean.
async fn placed(h: &Harness, id: &ExecutionId, state: State) -> Execution {
    let exec = get(h, id).await;
    assert_eq!(exec.state, state, "{id}");
    let listed = list_all(
        h,
        &ListParams {
            lane: Some(exec.lane.clone()),
            state: Some(state),
            ..ListParams::default()
        },
        100,
    )
    .await;
    assert_eq!(listed, vec![exec.clone()], "{id} listed as {state:?}");
    let depths = h
        .store
        .lane_depths()
        .await
        .unwrap_or_else(|e| panic!("lanes: {e}"));
    let depth = depths.iter().find(|d| d.lane == exec.lane);
    let counts = depth.map_or((0, 0, 0, 0, 0), |d| {
        (d.waiting, d.delayed, d.active, d.suspended, d.blocked)
    });
    let expected = match state {
        State::Waiting => (1, 0, 0, 0, 0),
        State::Delayed => (0, 1, 0, 0, 0),
        State::Active => (0, 0, 1, 0, 0),
        State::Suspended => (0, 0, 0, 1, 0),
        State::Blocked => (0, 0, 0, 0, 1),
        _ => (0, 0, 0, 0, 0),
    };
    assert_eq!(
        counts, expected,
        "depths of lane {} as {state:?}",
        exec.lane
    );
    assert_audit_clean(h).await;
    exec
}

/// Checks `exec` is suspended on `spec` as suspension `seq`: no lease, the
/// last attempt ended `suspended`, the lease recorded as ended by suspend.
fn check_suspended(exec: &Execution, task: &Task, spec: &SuspendSpec, seq: u32) {
    assert_eq!(exec.state, State::Suspended);
    assert!(exec.lease.is_none(), "the lease is released");
    assert_eq!(
        exec.epoch, task.lease.epoch,
        "the next claim moves the epoch"
    );
    let ended = exec.ended_lease.as_ref().expect("ended lease");
    assert_eq!(
        (&ended.id, ended.epoch, ended.by),
        (
            &task.lease.id,
            task.lease.epoch,
            weft_core::EndedBy::Suspended
        )
    );
    assert_eq!(exec.suspends, seq);
    let s = exec.suspension.as_ref().expect("a suspension in force");
    assert_eq!((s.seq, s.resume_when), (seq, spec.resume_when));
    let names: Vec<&str> = s.waitpoints.iter().map(|w| w.name.as_str()).collect();
    let declared: Vec<&str> = spec.waitpoints.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, declared, "waitpoints in declaration order");
    for (w, d) in s.waitpoints.iter().zip(&spec.waitpoints) {
        assert_eq!(w.on_timeout, d.on_timeout);
        assert_eq!(
            w.timeout_at_ms,
            d.timeout_ms.map(|t| s.suspended_at_ms + t),
            "{} times out from the suspend",
            w.name
        );
        assert!(w.expires_at_ms > s.suspended_at_ms);
    }
}

/// Suspend on `all`: the attempt ends `suspended` and the lease is released;
/// one signal leaves it suspended, the second resumes it; the next claim is
/// a new attempt with a new epoch carrying both payloads; nothing counts as
/// a failure.
pub async fn suspend_all_resumes_on_every_signal(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(1),
        ..params("wait.all")
    };
    let (exec, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let s = spec(ResumeWhen::All, vec![wp("approve"), wp("audit")]);
    let parked = suspend(&h, &task, &s).await.expect("suspend");
    check_suspended(&parked, &task, &s, 1);
    assert_eq!((parked.attempts, parked.failures), (1, 0));
    assert!(parked.signals.is_empty() && parked.resumed_signals.is_empty());
    assert_eq!(placed(&h, &exec.id, State::Suspended).await, parked);
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![AttemptState::Suspended]
    );
    assert_eq!(
        next_due(&h, exec.id.partition()).await,
        None,
        "no lease timer and no waitpoint timeout"
    );
    assert_not_claimable(&h, &exec).await;

    // The released lease writes nothing.
    assert_lease_lost(complete(&h, &task, json!(1)).await, "complete");
    assert_lease_lost(fail(&h, &task, true).await, "fail");
    assert_lease_lost(heartbeat(&h, &task, None).await, "heartbeat");
    assert_eq!(get(&h, &exec.id).await, parked, "refused, unchanged");

    let one = signal(&h, &exec.id, "approve", json!({"by": "ops"}))
        .await
        .expect("signal approve");
    assert_eq!(one.state, State::Suspended, "all: one of two is not enough");
    let waitpoints = &one.suspension.as_ref().expect("suspension").waitpoints;
    let flags: Vec<bool> = waitpoints.iter().map(|w| w.signalled).collect();
    assert_eq!(flags, vec![true, false]);
    assert_eq!(one.signals, signals(&[("approve", json!({"by": "ops"}))]));
    assert_eq!(placed(&h, &exec.id, State::Suspended).await, one);
    assert_not_claimable(&h, &exec).await;

    let both = signal(&h, &exec.id, "audit", json!([1, 2]))
        .await
        .expect("signal audit");
    assert_eq!(both.state, State::Waiting);
    assert!(both.signals.is_empty(), "the payloads moved on");
    let expected = signals(&[("approve", json!({"by": "ops"})), ("audit", json!([1, 2]))]);
    assert_eq!(both.resumed_signals, expected);
    assert_eq!((both.attempts, both.failures), (1, 0));
    assert_eq!(placed(&h, &exec.id, State::Waiting).await, both);

    let next = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(next.attempt.0, 2, "a new attempt, though max_attempts is 1");
    assert_eq!(next.lease.epoch, LeaseEpoch(task.lease.epoch.0 + 1));
    assert_eq!(next.signals, expected, "the task carries the payloads");
    assert_eq!(next.payload, exec.payload);
    assert_lease_lost(complete(&h, &task, json!(1)).await, "the old lease");
    let done = complete(&h, &next, json!("shipped"))
        .await
        .expect("complete");
    assert_eq!((done.state, done.failures), (State::Completed, 0));
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![AttemptState::Suspended, AttemptState::Succeeded]
    );
    assert_audit_clean(&h).await;
}

/// Suspend on `any`: the first signal resumes with that payload alone; the
/// other waitpoint's token no longer opens anything, and an operator's
/// signal for it is buffered, not handed to the resumed run.
pub async fn suspend_any_resumes_on_one_signal(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let s = spec(ResumeWhen::Any, vec![wp("yes"), wp("no")]);
    let parked = suspend(&h, &task, &s).await.expect("suspend");
    check_suspended(&parked, &task, &s, 1);
    placed(&h, &exec.id, State::Suspended).await;

    let resumed = signal(&h, &exec.id, "no", json!("nope"))
        .await
        .expect("signal");
    assert_eq!(resumed.state, State::Waiting, "any: one is enough");
    assert_eq!(resumed.resumed_signals, signals(&[("no", json!("nope"))]));
    assert!(resumed.signals.is_empty());
    placed(&h, &exec.id, State::Waiting).await;

    assert_invalid_token(
        send(&h, &exec.id, "yes", json!(1), Some(1)).await,
        "token of the other waitpoint after the resume",
    );
    assert_eq!(get(&h, &exec.id).await, resumed, "refused, unchanged");
    let late = signal(&h, &exec.id, "yes", json!("late"))
        .await
        .expect("a late operator signal");
    assert_eq!(late.state, State::Waiting);
    assert_eq!(late.signals, signals(&[("yes", json!("late"))]), "buffered");
    assert_eq!(late.resumed_signals, resumed.resumed_signals);

    let next = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(next.attempt.0, 2);
    assert_eq!(next.signals, signals(&[("no", json!("nope"))]));
    assert_audit_clean(&h).await;
}

/// A signal that arrives before the suspend is buffered and satisfies it:
/// the execution stays `active` under the same lease and the signal moves to
/// `resumed_signals`; the same suspend again by that lease is answered the
/// same way, a different one waits; a later retry's task still carries the
/// signals of the last resume.
pub async fn buffered_signal_satisfies_the_suspend(h: Harness) {
    let p = SubmitParams {
        max_attempts: Some(3),
        backoff: Some(fixed_backoff(0)),
        ..params("wait.buffered")
    };
    let exec = submit(&h, &p).await;
    let early = signal(&h, &exec.id, "go", json!({"early": true}))
        .await
        .expect("signal while waiting");
    assert_eq!(early.state, State::Waiting);
    assert_eq!(early.signals, signals(&[("go", json!({"early": true}))]));
    placed(&h, &exec.id, State::Waiting).await;

    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert!(task.signals.is_empty(), "not resumed yet");
    let s = spec(ResumeWhen::All, vec![wp("go")]);
    let still = suspend(&h, &task, &s).await.expect("suspend");
    assert_eq!(still.state, State::Active, "already satisfied");
    assert_eq!(still.lease.as_ref().map(|l| &l.id), Some(&task.lease.id));
    assert_eq!(still.epoch, task.lease.epoch);
    assert!(still.signals.is_empty());
    assert_eq!(
        still.resumed_signals,
        signals(&[("go", json!({"early": true}))])
    );
    let recorded = still.suspension.as_ref().expect("recorded");
    assert_eq!(recorded.seq, 1);
    assert!(recorded.waitpoints[0].signalled);
    assert_eq!(placed(&h, &exec.id, State::Active).await, still);
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![AttemptState::Running]
    );
    heartbeat(&h, &task, None).await.expect("the lease is live");
    // The same suspend again by the same lease (a retry after a lost
    // answer) is answered the same way: no second suspension, no wait.
    let repeated = suspend(&h, &task, &s).await.expect("the same suspend");
    assert_eq!(repeated.state, State::Active);
    assert_eq!(repeated.suspends, 1);
    assert_eq!(repeated.resumed_signals, still.resumed_signals);
    // A different suspend is a new wait.
    let other = spec(ResumeWhen::All, vec![wp("go"), wp("more")]);
    let waiting = suspend(&h, &task, &other).await.expect("another suspend");
    assert_eq!((waiting.state, waiting.suspends), (State::Suspended, 2));
    signal(&h, &exec.id, "go", json!(2))
        .await
        .expect("go again");
    let resumed = signal(&h, &exec.id, "more", json!(3)).await.expect("more");
    assert_eq!(resumed.state, State::Waiting);
    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;

    let retried = fail(&h, &task, true).await.expect("fail");
    assert_eq!((retried.state, retried.failures), (State::Waiting, 1));
    let again = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(again.attempt.0, 3);
    assert_eq!(
        again.signals,
        signals(&[("go", json!(2)), ("more", json!(3))])
    );
    complete(&h, &again, json!(null)).await.expect("complete");
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![
            AttemptState::Suspended,
            AttemptState::Failed,
            AttemptState::Succeeded
        ]
    );
    assert_audit_clean(&h).await;
}

/// A signal for a waitpoint the suspension does not name is buffered; it
/// neither resumes the execution nor rides on the resumed task, and it
/// satisfies the next suspend on that waitpoint.
pub async fn signal_outside_the_suspension_is_buffered(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let s = spec(ResumeWhen::Any, vec![wp("a")]);
    suspend(&h, &task, &s).await.expect("suspend");
    let other = signal(&h, &exec.id, "b", json!("for later"))
        .await
        .expect("signal b");
    assert_eq!(other.state, State::Suspended, "b is not waited on");
    assert_eq!(other.signals, signals(&[("b", json!("for later"))]));
    let flags: Vec<bool> = other
        .suspension
        .iter()
        .flat_map(|s| s.waitpoints.iter().map(|w| w.signalled))
        .collect();
    assert_eq!(flags, vec![false]);
    placed(&h, &exec.id, State::Suspended).await;

    let resumed = signal(&h, &exec.id, "a", json!("now"))
        .await
        .expect("signal a");
    assert_eq!(resumed.state, State::Waiting);
    assert_eq!(resumed.resumed_signals, signals(&[("a", json!("now"))]));
    assert_eq!(resumed.signals, signals(&[("b", json!("for later"))]));
    let second = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(second.signals, signals(&[("a", json!("now"))]));

    let s2 = spec(ResumeWhen::All, vec![wp("b")]);
    let kept = suspend(&h, &second, &s2).await.expect("suspend on b");
    assert_eq!(kept.state, State::Active, "b was buffered");
    assert_eq!(kept.suspends, 2);
    assert_eq!(kept.resumed_signals, signals(&[("b", json!("for later"))]));
    assert!(kept.signals.is_empty());
    placed(&h, &exec.id, State::Active).await;
}

/// Signalling a waitpoint twice, buffered or in force, or signalling an
/// ended execution, is `conflict` and changes nothing.
pub async fn repeated_and_late_signals_conflict(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let buffered = signal(&h, &exec.id, "x", json!(1)).await.expect("buffer");
    assert_conflict(
        signal(&h, &exec.id, "x", json!(2)).await,
        "a buffered waitpoint again",
    );
    assert_eq!(get(&h, &exec.id).await, buffered, "refused, unchanged");

    let s = spec(ResumeWhen::All, vec![wp("a"), wp("b")]);
    suspend(&h, &task, &s).await.expect("suspend");
    let one = signal(&h, &exec.id, "a", json!("first")).await.expect("a");
    assert_conflict(
        signal(&h, &exec.id, "a", json!("second")).await,
        "a signalled waitpoint again",
    );
    let after = get(&h, &exec.id).await;
    assert_eq!(after, one, "refused, unchanged");
    assert_eq!(after.signals.get("a"), Some(&json!("first")));
    placed(&h, &exec.id, State::Suspended).await;

    let resumed = signal(&h, &exec.id, "b", json!("x")).await.expect("b");
    assert_eq!(resumed.state, State::Waiting);
    let task = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    let done = complete(&h, &task, json!("done")).await.expect("complete");
    for name in ["a", "fresh"] {
        assert_conflict(
            signal(&h, &exec.id, name, json!(0)).await,
            "signal to a completed execution",
        );
    }
    assert_eq!(get(&h, &exec.id).await, done, "refused, unchanged");

    let gone = crate::support::cancelled(&h).await;
    assert_conflict(
        signal(&h, &gone.id, "a", json!(0)).await,
        "signal to a cancelled execution",
    );
    assert_eq!(get(&h, &gone.id).await, gone);
    assert_audit_clean(&h).await;
}

/// A token's signal opens one waitpoint of the suspension in force, once:
/// another suspension's seq, a waitpoint it does not name, a waitpoint
/// already signalled, a suspension already resumed and an execution not
/// suspended are all `invalid_token`, and nothing is buffered.
pub async fn token_signals_open_one_waitpoint_once(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    assert_invalid_token(
        send(&h, &exec.id, "a", json!(1), Some(1)).await,
        "a token before any suspend",
    );
    assert!(get(&h, &exec.id).await.signals.is_empty(), "not buffered");

    let s = spec(ResumeWhen::All, vec![wp("a"), wp("b")]);
    let parked = suspend(&h, &task, &s).await.expect("suspend");
    let seq = parked.suspension.as_ref().map(|s| s.seq).expect("seq");
    assert_eq!(seq, 1);
    for (name, seq, what) in [
        ("a", seq + 1, "a later suspension's seq"),
        ("a", 0, "seq 0"),
        ("c", seq, "a waitpoint not in the suspension"),
    ] {
        assert_invalid_token(send(&h, &exec.id, name, json!(1), Some(seq)).await, what);
        assert_eq!(get(&h, &exec.id).await, parked, "{what}: unchanged");
    }

    let one = send(&h, &exec.id, "a", json!("via token"), Some(seq))
        .await
        .expect("the token opens a");
    assert_eq!(one.state, State::Suspended);
    assert_eq!(one.signals, signals(&[("a", json!("via token"))]));
    assert_invalid_token(
        send(&h, &exec.id, "a", json!("again"), Some(seq)).await,
        "the same token again",
    );
    assert_eq!(get(&h, &exec.id).await, one, "refused, unchanged");
    placed(&h, &exec.id, State::Suspended).await;

    let resumed = send(&h, &exec.id, "b", json!("b too"), Some(seq))
        .await
        .expect("the token opens b");
    assert_eq!(resumed.state, State::Waiting);
    let both = signals(&[("a", json!("via token")), ("b", json!("b too"))]);
    assert_eq!(resumed.resumed_signals, both);
    for name in ["a", "b"] {
        assert_invalid_token(
            send(&h, &exec.id, name, json!(0), Some(seq)).await,
            "a token after the resume",
        );
    }
    assert_eq!(get(&h, &exec.id).await, resumed, "refused, unchanged");
    let next = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(next.signals, both);

    // A second suspension: the first one's tokens open nothing in it.
    let parked = suspend(&h, &next, &s).await.expect("suspend again");
    check_suspended(&parked, &next, &s, 2);
    assert_invalid_token(
        send(&h, &exec.id, "a", json!(0), Some(seq)).await,
        "the first suspension's token",
    );
    let opened = send(&h, &exec.id, "a", json!(2), Some(2))
        .await
        .expect("the second suspension's token");
    assert_eq!(opened.signals, signals(&[("a", json!(2))]));
    assert_audit_clean(&h).await;
}

/// Each `on_timeout` behaviour, once the first unsignalled waitpoint's
/// timeout falls: `fail` ends `failed` (`waitpoint_timeout`), `cancel`
/// ends `cancelled`, `expire` ends `expired`, `resume` makes it `waiting`
/// with the signals received so far.
pub async fn every_timeout_behaviour(h: Harness) {
    let mut cases = Vec::new();
    for on_timeout in OnTimeout::ALL {
        let (exec, task) = active(&h, LONG_LEASE_MS).await;
        let s = spec(
            ResumeWhen::All,
            vec![wp("given"), wp_timed("slow", 200, on_timeout)],
        );
        let parked = suspend(&h, &task, &s).await.expect("suspend");
        check_suspended(&parked, &task, &s, 1);
        signal(&h, &exec.id, "given", json!({"n": 1}))
            .await
            .expect("signal");
        cases.push((on_timeout, exec, parked));
    }
    let first = cases
        .iter()
        .filter_map(|(_, _, p)| p.suspension.as_ref()?.waitpoints[1].timeout_at_ms)
        .min()
        .expect("timeouts");
    let last = cases
        .iter()
        .filter_map(|(_, _, p)| p.suspension.as_ref()?.waitpoints[1].timeout_at_ms)
        .max()
        .expect("timeouts");
    h.advance_ms(100).await;
    let quiet = tick_before(&h, first, "waitpoint timeouts").await;
    if quiet {
        for (_, exec, _) in &cases {
            assert_eq!(get(&h, &exec.id).await.state, State::Suspended);
        }
    }
    assert_audit_clean(&h).await;
    advance_past(&h, last).await;
    let applied = tick_all(&h).await;
    if quiet {
        assert_eq!(applied, 4, "one timeout per execution");
    }

    let given = signals(&[("given", json!({"n": 1}))]);
    for (on_timeout, exec, _) in &cases {
        let what = on_timeout.as_str();
        let after = get(&h, &exec.id).await;
        let kind = after.error.as_ref().and_then(|e| e.kind.as_deref());
        match on_timeout {
            OnTimeout::Fail => {
                assert_eq!(after.state, State::Failed, "{what}");
                assert_eq!(kind, Some("waitpoint_timeout"), "{what}");
            }
            OnTimeout::Cancel => {
                assert_eq!(after.state, State::Cancelled, "{what}");
                let reason = after.cancel_reason.as_deref().unwrap_or_default();
                assert!(reason.contains("slow"), "{what}: names it: {reason:?}");
            }
            OnTimeout::Expire => {
                assert_eq!(after.state, State::Expired, "{what}");
                assert_eq!(kind, Some("waitpoint_timeout"), "{what}");
            }
            OnTimeout::Resume => {
                assert_eq!(after.state, State::Waiting, "{what}");
                assert_eq!(after.resumed_signals, given, "{what}: what arrived");
                assert!(after.signals.is_empty());
            }
        }
        assert_eq!(after.failures, 0, "{what}: no attempt failed");
        assert_eq!(after.state.is_terminal(), after.finished_at_ms.is_some());
        assert_eq!(
            attempt_states(&h, &exec.id).await,
            vec![AttemptState::Suspended],
            "{what}: the timeout ends no attempt"
        );
        placed(&h, &exec.id, after.state).await;
        if after.state.is_terminal() {
            assert_conflict(
                signal(&h, &exec.id, "slow", json!(0)).await,
                "signal after the timeout ended it",
            );
        } else {
            assert_invalid_token(
                send(&h, &exec.id, "slow", json!(0), Some(1)).await,
                "the timed-out waitpoint's token",
            );
            let task = claim_exec(&h, exec, LONG_LEASE_MS).await;
            assert_eq!(task.attempt.0, 2);
            assert_eq!(task.signals, given, "the resumed run sees what arrived");
        }
    }
    assert_eq!(tick_all(&h).await, 0, "no waitpoint timer is left");
    assert_audit_clean(&h).await;
}

/// Only unsignalled waitpoints time out: once the early one is signalled,
/// the later one's timeout is the timer, and its behaviour applies.
pub async fn timeout_counts_only_unsignalled_waitpoints(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let s = spec(
        ResumeWhen::All,
        vec![
            wp_timed("early", 150, OnTimeout::Fail),
            wp_timed("late", 300, OnTimeout::Resume),
        ],
    );
    let parked = suspend(&h, &task, &s).await.expect("suspend");
    check_suspended(&parked, &task, &s, 1);
    let due = |e: &Execution, i: usize| {
        e.suspension
            .as_ref()
            .and_then(|s| s.waitpoints[i].timeout_at_ms)
            .expect("timeout")
    };
    let (early, late) = (due(&parked, 0), due(&parked, 1));
    assert_eq!(
        next_due(&h, exec.id.partition()).await,
        Some(early),
        "the first timeout is the timer"
    );
    let one = signal(&h, &exec.id, "early", json!("in time"))
        .await
        .expect("signal early");
    assert_eq!(one.state, State::Suspended);
    assert_eq!(
        next_due(&h, exec.id.partition()).await,
        Some(late),
        "the signalled waitpoint's timeout is gone"
    );
    placed(&h, &exec.id, State::Suspended).await;

    advance_past(&h, early).await;
    if tick_before(&h, late, "the late timeout").await {
        assert_eq!(get(&h, &exec.id).await, one, "the early timeout is gone");
    }
    advance_past(&h, late).await;
    tick_all(&h).await;
    let after = get(&h, &exec.id).await;
    assert_eq!(
        after.state,
        State::Waiting,
        "late resumes, early never fails"
    );
    assert_eq!(after.error, None);
    assert_eq!(
        after.resumed_signals,
        signals(&[("early", json!("in time"))])
    );
    placed(&h, &exec.id, State::Waiting).await;
}

/// Cancel while suspended ends it `cancelled` without touching the ended
/// attempt; signals are then `conflict` and no waitpoint timer is left.
pub async fn cancel_while_suspended(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let s = spec(
        ResumeWhen::Any,
        vec![wp_timed("a", 200, OnTimeout::Resume), wp("b")],
    );
    suspend(&h, &task, &s).await.expect("suspend");
    signal(&h, &exec.id, "other", json!(1))
        .await
        .expect("buffer");
    let gone = cancel(&h, &exec.id).await.expect("cancel");
    assert_eq!(gone.state, State::Cancelled);
    assert_eq!(gone.cancel_reason.as_deref(), Some("test"));
    assert!(gone.finished_at_ms.is_some());
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![AttemptState::Suspended],
        "the suspended attempt stays as it ended"
    );
    placed(&h, &exec.id, State::Cancelled).await;
    assert_conflict(signal(&h, &exec.id, "b", json!(0)).await, "operator signal");
    assert_conflict(
        send(&h, &exec.id, "b", json!(0), Some(1)).await,
        "token signal",
    );
    assert_conflict(
        signal(&h, &exec.id, "new", json!(0)).await,
        "buffering for an ended execution",
    );
    // The worker's suspend, repeated, is answered with the execution as it
    // is now: cancelled.
    let replayed = suspend(&h, &task, &s).await.expect("the same suspend");
    assert_eq!(replayed, gone);
    assert_eq!(get(&h, &exec.id).await, gone, "refused, unchanged");

    h.advance_ms(250).await;
    assert_eq!(tick_all(&h).await, 0, "the waitpoint timeout went with it");
    assert_eq!(get(&h, &exec.id).await.state, State::Cancelled);
    assert_audit_clean(&h).await;
}

/// The execution's deadline ends a suspension `expired`.
pub async fn deadline_expires_suspended(h: Harness) {
    let p = SubmitParams {
        deadline_ms: Some(300),
        ..params("wait.deadline")
    };
    let (exec, task) = active_with(&h, &p, LONG_LEASE_MS).await;
    let s = spec(
        ResumeWhen::All,
        vec![wp_timed("a", 60_000, OnTimeout::Resume)],
    );
    suspend(&h, &task, &s).await.expect("suspend");
    let deadline = exec.deadline_at_ms.expect("deadline");
    assert_eq!(
        next_due(&h, exec.id.partition()).await,
        Some(deadline),
        "the deadline falls before the waitpoint timeout"
    );
    advance_past(&h, deadline).await;
    assert_eq!(tick_all(&h).await, 1);
    let ended = get(&h, &exec.id).await;
    assert_eq!(ended.state, State::Expired);
    assert_eq!(
        ended.error.as_ref().and_then(|e| e.kind.as_deref()),
        Some("deadline")
    );
    assert_eq!(
        attempt_states(&h, &exec.id).await,
        vec![AttemptState::Suspended]
    );
    placed(&h, &exec.id, State::Expired).await;
    assert_conflict(signal(&h, &exec.id, "a", json!(0)).await, "signal");
    assert_eq!(tick_all(&h).await, 0, "no waitpoint timer is left");
}

/// The same suspend again is answered with the execution as it is, and
/// changes nothing, until the next claim; then it is `lease_lost`.
pub async fn repeated_suspend_is_replayed_until_reclaimed(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let s = spec(ResumeWhen::All, vec![wp("a")]);
    let first = suspend(&h, &task, &s).await.expect("suspend");
    let again = suspend(&h, &task, &s).await.expect("the same suspend");
    assert_eq!(again, first);
    let other = spec(ResumeWhen::Any, vec![wp("z")]);
    let differs = suspend(&h, &task, &other).await.expect("another spec");
    assert_eq!(differs, first, "the recorded suspension stands");
    assert_eq!(get(&h, &exec.id).await, first, "a replay changes nothing");
    assert_eq!(attempts(&h, &exec.id).await.len(), 1);
    placed(&h, &exec.id, State::Suspended).await;

    let resumed = signal(&h, &exec.id, "a", json!(1)).await.expect("signal");
    assert_eq!(resumed.state, State::Waiting);
    let replayed = suspend(&h, &task, &s).await.expect("suspend after resume");
    assert_eq!(replayed, resumed, "answered as it is now");
    assert_eq!(get(&h, &exec.id).await, resumed);

    let next = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_lease_lost(suspend(&h, &task, &s).await, "suspend after a new claim");
    let now = get(&h, &exec.id).await;
    assert_eq!(now.state, State::Active);
    assert_eq!(now.lease.as_ref().map(|l| &l.id), Some(&next.lease.id));
    assert_eq!(now.suspends, 1);
    placed(&h, &exec.id, State::Active).await;
}

/// Replay of an ended execution that had suspended clears its buffered and
/// resumed signals and its suspension; suspension numbers go on, so an old
/// token opens nothing.
pub async fn replay_clears_signals(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    suspend(&h, &task, &spec(ResumeWhen::All, vec![wp("a")]))
        .await
        .expect("suspend");
    signal(&h, &exec.id, "a", json!("resume")).await.expect("a");
    let second = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(second.signals, signals(&[("a", json!("resume"))]));
    signal(&h, &exec.id, "x", json!("buffered"))
        .await
        .expect("x");
    let done = complete(&h, &second, json!("done"))
        .await
        .expect("complete");
    assert_eq!(done.signals, signals(&[("x", json!("buffered"))]));
    assert_eq!(done.resumed_signals, signals(&[("a", json!("resume"))]));

    let replayed = h.store.execution_replay(&exec.id).await.expect("replay");
    assert_eq!(replayed.state, State::Waiting);
    assert!(replayed.signals.is_empty(), "buffered signals are cleared");
    assert!(replayed.resumed_signals.is_empty(), "resumed ones too");
    assert_eq!(replayed.suspension, None);
    assert_eq!(replayed.suspends, 1, "suspension numbers go on");
    placed(&h, &exec.id, State::Waiting).await;

    let third = claim_exec(&h, &exec, LONG_LEASE_MS).await;
    assert_eq!(third.attempt.0, 3);
    assert!(third.signals.is_empty(), "the replayed run sees no signals");
    let s = spec(ResumeWhen::All, vec![wp("a"), wp("x")]);
    let parked = suspend(&h, &third, &s).await.expect("suspend");
    check_suspended(&parked, &third, &s, 2);
    assert_invalid_token(
        send(&h, &exec.id, "a", json!(0), Some(1)).await,
        "a token from before the replay",
    );
    assert_eq!(get(&h, &exec.id).await, parked, "refused, unchanged");
    assert_audit_clean(&h).await;
}

/// Bad suspends and signals are refused with the field named, unknown ids
/// are `not_found`, and a suspend needs the live lease; nothing changes.
pub async fn bad_suspends_and_signals_are_refused(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let timed_zero = spec(ResumeWhen::All, vec![wp_timed("a", 0, OnTimeout::Fail)]);
    for (bad, field) in [
        (spec(ResumeWhen::All, vec![]), "waitpoints"),
        (
            spec(ResumeWhen::All, vec![wp("a"), wp("a")]),
            "waitpoints.name",
        ),
        (
            spec(ResumeWhen::Any, vec![wp("has space")]),
            "waitpoints.name",
        ),
        (timed_zero, "waitpoints.timeout_ms"),
    ] {
        assert_invalid(suspend(&h, &task, &bad).await, field, "bad suspend");
    }
    assert_invalid(
        signal(&h, &exec.id, "has space", json!(0)).await,
        "waitpoint",
        "bad waitpoint name",
    );
    assert_invalid(
        signal(&h, &exec.id, "", json!(0)).await,
        "waitpoint",
        "empty waitpoint name",
    );
    match signal(&h, &exec.id, "big", json!("x".repeat(2 << 20))).await {
        Err(Error::PayloadTooLarge { .. }) => {}
        other => panic!("an oversized signal: {other:?}"),
    }
    let good = spec(ResumeWhen::All, vec![wp("a")]);
    let mut forged = task.clone();
    forged.lease.id = LeaseId::random();
    assert_lease_lost(suspend(&h, &forged, &good).await, "forged lease id");
    let mut forged = task.clone();
    forged.lease.epoch = LeaseEpoch(task.lease.epoch.0 + 1);
    assert_lease_lost(suspend(&h, &forged, &good).await, "forged epoch");
    assert_eq!(get(&h, &exec.id).await, exec, "refused, unchanged");

    let idle = crate::support::waiting(&h).await;
    let mut not_active = task.clone();
    not_active.execution_id = idle.id.clone();
    assert_lease_lost(
        suspend(&h, &not_active, &good).await,
        "suspend of a waiting one",
    );
    assert_eq!(get(&h, &idle.id).await, idle);

    let unknown = ExecutionId::mint(PartitionId(0), 1);
    let mut lost = task.clone();
    lost.execution_id = unknown.clone();
    assert_not_found(suspend(&h, &lost, &good).await, "suspend of an unknown id");
    assert_not_found(
        signal(&h, &unknown, "a", json!(0)).await,
        "signal to an unknown id",
    );
    assert_audit_clean(&h).await;
}

/// Submit parameters of flow node `key` in lane `<base>.<key>`.
fn node(base: &str, key: &str) -> FlowNodeSpec {
    FlowNodeSpec {
        key: key.to_owned(),
        params: SubmitParams {
            lane: Some(format!("{base}.{key}")),
            ..SubmitParams::new(format!("wait.{key}"), json!({ "node": key }))
        },
    }
}

/// Reads flow `id`, checks its summary against its members and its
/// partition's audit, and returns its state and node `key`'s member.
async fn flow_now(h: &Harness, id: &FlowId, key: &str) -> (FlowState, Execution) {
    let flow = h
        .store
        .flow_get(id)
        .await
        .unwrap_or_else(|e| panic!("flow_get {id}: {e}"));
    for node in &flow.nodes {
        let m = get(h, &node.execution_id).await;
        assert_eq!(m.state, node.state, "{id}: node {}", node.key);
    }
    assert_eq!(flow.state, derive_state(&flow.counts, flow.cancelled));
    assert_audit_clean(h).await;
    let member = flow
        .member(key)
        .unwrap_or_else(|| panic!("{id} has no node {key}"));
    (flow.state, get(h, member).await)
}

/// A flow member that suspends keeps its downstream blocked (the flow is
/// `blocked`: nothing can run); the signal resumes it, it completes, and
/// the downstream is promoted.
pub async fn suspended_flow_member_blocks_its_downstream(h: Harness) {
    if crate::flows::unsupported(&h) {
        return;
    }
    let base = unique_lane();
    let s = FlowSpec {
        nodes: vec![node(&base, "deploy"), node(&base, "notify")],
        edges: vec![FlowEdge {
            from: "deploy".to_owned(),
            to: "notify".to_owned(),
            on: EdgeOn::Success,
        }],
        ..FlowSpec::default()
    };
    let flow = h
        .store
        .flow_create(&s)
        .await
        .unwrap_or_else(|e| panic!("flow_create: {e}"))
        .flow;
    let (_, deploy) = flow_now(&h, &flow.id, "deploy").await;
    let task = claim_exec(&h, &deploy, LONG_LEASE_MS).await;
    let parked = suspend(&h, &task, &spec(ResumeWhen::All, vec![wp("approve")]))
        .await
        .expect("suspend");
    assert_eq!(parked.state, State::Suspended);
    let (state, notify) = flow_now(&h, &flow.id, "notify").await;
    assert_eq!(notify.state, State::Blocked, "the downstream waits");
    assert_eq!(state, FlowState::Blocked, "nothing can run");

    let resumed = signal(&h, &deploy.id, "approve", json!({"by": "lead"}))
        .await
        .expect("signal");
    assert_eq!(resumed.state, State::Waiting);
    let (state, notify) = flow_now(&h, &flow.id, "notify").await;
    assert_eq!(notify.state, State::Blocked, "still waits for the upstream");
    assert_eq!(state, FlowState::Running);

    let again = claim_exec(&h, &deploy, LONG_LEASE_MS).await;
    assert_eq!(
        again.signals,
        signals(&[("approve", json!({"by": "lead"}))])
    );
    assert_eq!(again.flow_node.as_deref(), Some("deploy"));
    complete(&h, &again, json!("deployed"))
        .await
        .expect("complete");
    let (_, notify) = flow_now(&h, &flow.id, "notify").await;
    assert_eq!(notify.state, State::Waiting, "promoted");
    let last = claim_exec(&h, &notify, LONG_LEASE_MS).await;
    assert_eq!(
        last.inputs,
        signals(&[("deploy", json!("deployed"))]),
        "the downstream sees the result"
    );
    assert!(last.signals.is_empty());
    complete(&h, &last, json!(null)).await.expect("complete");
    let (state, _) = flow_now(&h, &flow.id, "notify").await;
    assert_eq!(state, FlowState::Completed);
}
