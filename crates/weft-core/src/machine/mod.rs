//! The execution state machine as pure functions.
//!
//! Definitions: a `Command` is applied to an `Execution` at the store's time
//! `now_ms`; the result is a `Transition`: the new execution (or `None` when
//! retention purges it), the attempt row to write, and the index and timer
//! changes the store must make in the same atomic operation.
//!
//! Invariants: the index and the timers of an execution are functions of the
//! execution alone (`index_of`, `timers_of`), so a store that applies every
//! transition's diff keeps exactly one index entry per execution, matching its
//! state, and never holds a stale timer. A timer that no longer matches
//! `timers_of` when it fires is dropped, never applied.
//!
//! Key operations: `submit` creates; `apply` moves an existing execution.
//! Suspend, signal and the waitpoint timeout live in `suspend.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::{AttemptNumber, ExecutionId, LeaseEpoch, LeaseId};
mod suspend;

use crate::model::{
    jitter_unit, Attempt, AttemptState, EndedBy, EndedLease, ErrorInfo, Execution, Lease, State,
    SubmitParams, LANE_DEFAULT, MAX_ATTEMPTS_DEFAULT, MAX_RECLAIMS_DEFAULT,
};

/// How long terminal executions are kept unless configured otherwise: 7 days.
pub const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 3_600_000;

/// Longest cancel reason kept, in bytes.
pub const CANCEL_REASON_LEN_MAX: usize = 1024;

/// Store-wide settings the state machine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// Age after which a terminal execution is purged.
    pub retention_ms: i64,
    /// Largest serialized payload accepted.
    pub payload_bytes_max: u64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            retention_ms: RETENTION_MS_DEFAULT,
            payload_bytes_max: crate::model::PAYLOAD_BYTES_MAX_DEFAULT,
        }
    }
}

/// The one index that holds an execution, derived from its state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IndexKey {
    /// Claimable: ordered by priority (high first), then `ready_at_ms`, then id.
    Ready {
        /// The lane.
        lane: String,
        /// The joined capability set.
        capset: String,
    },
    /// A non-claimable, non-terminal state (`delayed`, `blocked`, `active`,
    /// `suspended`).
    Pending(State),
    /// A terminal state, awaiting retention.
    Terminal(State),
}

/// The index an execution belongs in.
pub fn index_of(exec: &Execution) -> IndexKey {
    match exec.state {
        State::Waiting => IndexKey::Ready {
            lane: exec.lane.clone(),
            capset: exec.capset(),
        },
        s if s.is_terminal() => IndexKey::Terminal(s),
        s => IndexKey::Pending(s),
    }
}

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// A delayed execution becomes waiting.
    Delay,
    /// An active lease lapses.
    LeaseExpiry,
    /// An active attempt exceeds `timeout_ms`.
    AttemptTimeout,
    /// The execution's deadline falls.
    Deadline,
    /// A terminal execution is purged.
    Retention,
    /// A suspended execution's first unsignalled waitpoint times out.
    WaitpointTimeout,
}

impl TimerKind {
    /// Every kind, in declaration order.
    pub const ALL: [TimerKind; 6] = [
        TimerKind::Delay,
        TimerKind::LeaseExpiry,
        TimerKind::AttemptTimeout,
        TimerKind::Deadline,
        TimerKind::Retention,
        TimerKind::WaitpointTimeout,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Delay => "delay",
            TimerKind::LeaseExpiry => "lease_expiry",
            TimerKind::AttemptTimeout => "attempt_timeout",
            TimerKind::Deadline => "deadline",
            TimerKind::Retention => "retention",
            TimerKind::WaitpointTimeout => "waitpoint_timeout",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        TimerKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One entry of a partition's due-index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timer {
    /// What it does.
    pub kind: TimerKind,
    /// When it is due.
    pub due_ms: i64,
}

/// The timers an execution must have, derived from its state; at most one of
/// each kind.
pub fn timers_of(exec: &Execution, config: &MachineConfig) -> Vec<Timer> {
    let mut timers = Vec::with_capacity(3);
    match (exec.state, &exec.lease) {
        (State::Delayed, _) => {
            if let Some(run_at_ms) = exec.run_at_ms {
                timers.push(Timer {
                    kind: TimerKind::Delay,
                    due_ms: run_at_ms,
                });
            }
        }
        (State::Active, Some(lease)) => {
            timers.push(Timer {
                kind: TimerKind::LeaseExpiry,
                due_ms: lease.expires_at_ms,
            });
            if let Some(due_ms) = lease.timeout_at_ms {
                timers.push(Timer {
                    kind: TimerKind::AttemptTimeout,
                    due_ms,
                });
            }
        }
        (State::Suspended, _) => {
            let next = exec.suspension.as_ref().and_then(|s| s.next_timeout());
            if let Some(due_ms) = next.and_then(|w| w.timeout_at_ms) {
                timers.push(Timer {
                    kind: TimerKind::WaitpointTimeout,
                    due_ms,
                });
            }
        }
        _ => {}
    }
    if exec.state.is_terminal() {
        let finished = exec.finished_at_ms.unwrap_or(exec.updated_at_ms);
        timers.push(Timer {
            kind: TimerKind::Retention,
            due_ms: finished.saturating_add(config.retention_ms),
        });
    } else if let Some(due_ms) = exec.deadline_at_ms {
        timers.push(Timer {
            kind: TimerKind::Deadline,
            due_ms,
        });
    }
    timers
}

/// The lease a worker presents with each write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The task's `lease.id`.
    pub lease_id: LeaseId,
    /// The task's `lease.epoch`.
    pub epoch: LeaseEpoch,
}

/// A change to an existing execution.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A worker takes a waiting execution.
    Claim {
        /// The claiming worker.
        worker_id: String,
        /// The new lease's id, minted by the store.
        lease_id: LeaseId,
        /// The lease's duration.
        lease_ms: i64,
    },
    /// A worker extends its lease.
    Heartbeat {
        /// The lease presented.
        lease: LeaseRef,
        /// A new duration, or the lease's own.
        lease_ms: Option<i64>,
    },
    /// A worker ends the attempt with a result.
    Complete {
        /// The lease presented.
        lease: LeaseRef,
        /// The output.
        result: Value,
    },
    /// A worker ends the attempt with an error.
    Fail {
        /// The lease presented.
        lease: LeaseRef,
        /// What went wrong.
        error: ErrorInfo,
        /// `false` ends the execution whatever attempts are left.
        retryable: bool,
    },
    /// A worker hands the attempt back unfinished (it is stopping): the
    /// execution is `waiting` again at once, and nothing is counted against
    /// `max_attempts` or `max_reclaims`.
    Release {
        /// The lease presented.
        lease: LeaseRef,
    },
    /// An operator ends the execution.
    Cancel {
        /// Why, for the record.
        reason: Option<String>,
    },
    /// A worker suspends the execution on waitpoints; the attempt ends
    /// `suspended` unless buffered signals already satisfy them.
    Suspend {
        /// The lease presented.
        lease: LeaseRef,
        /// The waitpoints and when to resume.
        spec: crate::waitpoint::SuspendSpec,
    },
    /// A signal for one waitpoint: delivered to the suspension in force, or
    /// buffered until the execution suspends on that waitpoint.
    Signal {
        /// The waitpoint.
        waitpoint: String,
        /// What the signal carries.
        payload: Value,
        /// The suspension a token names; `None` for an operator's signal.
        /// A token's signal must match the suspension in force.
        seq: Option<u32>,
    },
    /// An operator runs a terminal execution again.
    Replay,
    /// An upstream of this flow member ended; `fired` says whether its
    /// edge matched. Decides a blocked member's join.
    UpstreamEnded {
        /// Whether the edge fired.
        fired: bool,
    },
    /// A timer of the due-index fired.
    Fire(Timer),
}

/// Whether a transition changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The execution moved (or its lease was extended).
    Applied,
    /// A repeated write that was already applied; nothing changed.
    Replayed,
    /// A timer that no longer applies; the store drops it.
    Dropped,
}

/// The attempt row a transition writes.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptChange {
    /// A new attempt starts.
    Start(Attempt),
    /// The numbered attempt ends.
    End {
        /// Which attempt.
        number: AttemptNumber,
        /// How it ended.
        state: AttemptState,
        /// When.
        ended_at_ms: i64,
        /// Why, if it failed.
        error: Option<ErrorInfo>,
    },
}

/// The result of applying a command: the new execution and every change the
/// store writes with it, in one atomic operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Whether anything changed.
    pub outcome: Outcome,
    /// The execution after the command; `None` when it is purged.
    pub execution: Option<Execution>,
    /// The attempt row to insert or update.
    pub attempt: Option<AttemptChange>,
    /// The index the execution left, if it changed.
    pub index_from: Option<IndexKey>,
    /// The index the execution entered, if it changed.
    pub index_to: Option<IndexKey>,
    /// Timers to remove from the due-index.
    pub timers_clear: Vec<Timer>,
    /// Timers to add to the due-index.
    pub timers_set: Vec<Timer>,
}

impl Transition {
    fn unchanged(exec: &Execution, outcome: Outcome) -> Self {
        Self {
            outcome,
            execution: Some(exec.clone()),
            attempt: None,
            index_from: None,
            index_to: None,
            timers_clear: Vec::new(),
            timers_set: Vec::new(),
        }
    }

    pub(crate) fn between(
        old: Option<&Execution>,
        new: Option<Execution>,
        attempt: Option<AttemptChange>,
        config: &MachineConfig,
    ) -> Self {
        let old_index = old.map(index_of);
        let new_index = new.as_ref().map(index_of);
        let old_timers = old.map(|e| timers_of(e, config)).unwrap_or_default();
        let new_timers = new
            .as_ref()
            .map(|e| timers_of(e, config))
            .unwrap_or_default();
        let moved = old_index != new_index || index_order_changed(old, new.as_ref());
        Self {
            outcome: Outcome::Applied,
            timers_clear: old_timers
                .iter()
                .filter(|t| !new_timers.contains(t))
                .copied()
                .collect(),
            timers_set: new_timers
                .iter()
                .filter(|t| !old_timers.contains(t))
                .copied()
                .collect(),
            index_from: if moved { old_index } else { None },
            index_to: if moved { new_index } else { None },
            execution: new,
            attempt,
        }
    }
}

/// A waiting execution whose ordering fields change must be re-inserted.
fn index_order_changed(old: Option<&Execution>, new: Option<&Execution>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => a.ready_at_ms != b.ready_at_ms || a.priority != b.priority,
        _ => false,
    }
}

/// Creates an execution from checked submit parameters.
pub fn submit(
    id: ExecutionId,
    params: &SubmitParams,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    params.validate(config.payload_bytes_max)?;
    let run_at_ms = match (params.delay_ms, params.run_at_ms) {
        (Some(delay), _) => Some(now_ms.saturating_add(delay)),
        (None, at) => at,
    }
    .filter(|at| *at > now_ms);
    let exec = Execution {
        id,
        kind: params.kind.clone(),
        lane: params
            .lane
            .clone()
            .unwrap_or_else(|| LANE_DEFAULT.to_owned()),
        state: if run_at_ms.is_some() {
            State::Delayed
        } else {
            State::Waiting
        },
        priority: params.priority,
        payload: params.payload.clone(),
        attempts: 0,
        failures: 0,
        reclaims: 0,
        max_attempts: params.max_attempts.unwrap_or(MAX_ATTEMPTS_DEFAULT),
        max_reclaims: params.max_reclaims.unwrap_or(MAX_RECLAIMS_DEFAULT),
        backoff: params.backoff.clone().unwrap_or_default(),
        timeout_ms: params.timeout_ms,
        deadline_ms: params.deadline_ms,
        deadline_at_ms: params.deadline_ms.map(|d| now_ms.saturating_add(d)),
        requires: crate::model::normalize_capabilities("requires", &params.requires)?,
        idempotency_key: params.idempotency_key.clone(),
        tags: params.tags.clone(),
        result: None,
        error: None,
        flow_id: None,
        flow_node: None,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        run_at_ms,
        ready_at_ms: run_at_ms.unwrap_or(now_ms),
        finished_at_ms: None,
        lease: None,
        epoch: LeaseEpoch(0),
        ended_lease: None,
        cancel_reason: None,
        join: None,
        suspends: 0,
        suspension: None,
        signals: BTreeMap::new(),
        resumed_signals: BTreeMap::new(),
    };
    Ok(Transition::between(None, Some(exec), None, config))
}

/// Applies `command` to `exec` at `now_ms`.
pub fn apply(
    exec: &Execution,
    command: Command,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    match command {
        Command::Claim {
            worker_id,
            lease_id,
            lease_ms,
        } => claim(exec, worker_id, lease_id, lease_ms, now_ms, config),
        Command::Heartbeat { lease, lease_ms } => heartbeat(exec, &lease, lease_ms, now_ms, config),
        Command::Complete { lease, result } => complete(exec, &lease, result, now_ms, config),
        Command::Fail {
            lease,
            error,
            retryable,
        } => fail(exec, &lease, error, retryable, now_ms, config),
        Command::Release { lease } => release(exec, &lease, now_ms, config),
        Command::Suspend { lease, spec } => suspend::suspend(exec, &lease, &spec, now_ms, config),
        Command::Signal {
            waitpoint,
            payload,
            seq,
        } => suspend::signal(exec, &waitpoint, payload, seq, now_ms, config),
        Command::Cancel { reason } => cancel(exec, reason, now_ms, config),
        Command::Replay => replay(exec, now_ms, config),
        Command::Fire(timer) => fire(exec, timer, now_ms, config),
        Command::UpstreamEnded { fired } => upstream_ended(exec, fired, now_ms, config),
    }
}

fn claim(
    exec: &Execution,
    worker_id: String,
    lease_id: LeaseId,
    lease_ms: i64,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    crate::model::check_lease_ms(lease_ms)?;
    if exec.state != State::Waiting {
        return Err(Error::conflict(format!(
            "{} is {}, not waiting",
            exec.id,
            exec.state.as_str()
        )));
    }
    let mut next = exec.clone();
    next.attempts += 1;
    next.epoch = LeaseEpoch(exec.epoch.0 + 1);
    next.state = State::Active;
    next.updated_at_ms = now_ms;
    next.lease = Some(Lease {
        id: lease_id,
        epoch: next.epoch,
        expires_at_ms: now_ms + lease_ms,
        lease_ms,
        worker_id: worker_id.clone(),
        timeout_at_ms: exec.timeout_ms.map(|t| now_ms.saturating_add(t)),
    });
    let attempt = Attempt {
        number: AttemptNumber(next.attempts),
        worker_id,
        state: AttemptState::Running,
        started_at_ms: now_ms,
        ended_at_ms: None,
        error: None,
    };
    Ok(Transition::between(
        Some(exec),
        Some(next),
        Some(AttemptChange::Start(attempt)),
        config,
    ))
}

/// Checks the presented lease is the current one and has not lapsed.
pub fn check_lease<'a>(exec: &'a Execution, lease: &LeaseRef, now_ms: i64) -> Result<&'a Lease> {
    let lost = |reason| Error::LeaseLost {
        execution_id: exec.id.to_string(),
        epoch: lease.epoch,
        reason,
    };
    let current = exec
        .lease
        .as_ref()
        .ok_or_else(|| lost("the execution holds no lease"))?;
    if current.epoch != lease.epoch || current.id != lease.lease_id {
        return Err(lost("a newer lease holds the execution"));
    }
    if current.expires_at_ms <= now_ms {
        return Err(lost("the lease has expired"));
    }
    Ok(current)
}

fn heartbeat(
    exec: &Execution,
    lease: &LeaseRef,
    lease_ms: Option<i64>,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    let current = check_lease(exec, lease, now_ms)?;
    let lease_ms = lease_ms.unwrap_or(current.lease_ms);
    crate::model::check_lease_ms(lease_ms)?;
    let mut next = exec.clone();
    if let Some(l) = next.lease.as_mut() {
        l.expires_at_ms = now_ms + lease_ms;
        l.lease_ms = lease_ms;
    }
    next.updated_at_ms = now_ms;
    Ok(Transition::between(Some(exec), Some(next), None, config))
}

/// A repeated complete, fail or release by the lease that ended the last
/// attempt. It answers with the execution as it is now: after a fail that was
/// retried and claimed again, that is the newer attempt's state, which tells
/// the stale worker its write was applied. A release replays only until the
/// execution is claimed again (the epoch moves on): the old lease then has
/// nothing left to hand back, so it is `lease_lost` like any stale write. A
/// suspend replays the same way.
fn is_replay(exec: &Execution, lease: &LeaseRef, by: EndedBy) -> bool {
    exec.ended_lease.as_ref().is_some_and(|e| {
        e.id == lease.lease_id
            && e.epoch == lease.epoch
            && e.by == by
            && (!matches!(by, EndedBy::Released | EndedBy::Suspended) || exec.epoch == lease.epoch)
    })
}

/// Ends the active attempt and releases the lease.
fn end_attempt(
    next: &mut Execution,
    state: AttemptState,
    error: Option<ErrorInfo>,
    now_ms: i64,
) -> Option<AttemptChange> {
    next.lease.take()?;
    Some(AttemptChange::End {
        number: AttemptNumber(next.attempts),
        state,
        ended_at_ms: now_ms,
        error,
    })
}

fn finish(next: &mut Execution, state: State, now_ms: i64) {
    next.state = state;
    next.finished_at_ms = Some(now_ms);
    next.run_at_ms = None;
    next.updated_at_ms = now_ms;
}

fn complete(
    exec: &Execution,
    lease: &LeaseRef,
    result: Value,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    if is_replay(exec, lease, EndedBy::Completed) {
        return Ok(Transition::unchanged(exec, Outcome::Replayed));
    }
    let bytes = crate::model::payload_bytes(&result);
    if bytes > config.payload_bytes_max {
        return Err(Error::PayloadTooLarge {
            bytes,
            max_bytes: config.payload_bytes_max,
        });
    }
    check_lease(exec, lease, now_ms)?;
    let mut next = exec.clone();
    let attempt = end_attempt(&mut next, AttemptState::Succeeded, None, now_ms);
    next.result = Some(result);
    next.ended_lease = Some(EndedLease {
        id: lease.lease_id.clone(),
        epoch: lease.epoch,
        by: EndedBy::Completed,
    });
    finish(&mut next, State::Completed, now_ms);
    Ok(Transition::between(Some(exec), Some(next), attempt, config))
}

fn fail(
    exec: &Execution,
    lease: &LeaseRef,
    error: ErrorInfo,
    retryable: bool,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    if is_replay(exec, lease, EndedBy::Failed) {
        return Ok(Transition::unchanged(exec, Outcome::Replayed));
    }
    if error
        .kind
        .as_ref()
        .is_some_and(|k| k.len() > crate::model::KIND_LEN_MAX)
    {
        return Err(Error::invalid(
            "error.kind",
            format!("must be at most {} bytes", crate::model::KIND_LEN_MAX),
        ));
    }
    check_lease(exec, lease, now_ms)?;
    let mut next = exec.clone();
    let error = error.truncated();
    let attempt = end_attempt(&mut next, AttemptState::Failed, Some(error.clone()), now_ms);
    next.ended_lease = Some(EndedLease {
        id: lease.lease_id.clone(),
        epoch: lease.epoch,
        by: EndedBy::Failed,
    });
    retry_or_fail(&mut next, error, retryable, false, now_ms);
    Ok(Transition::between(Some(exec), Some(next), attempt, config))
}

/// Ends the attempt `released` and puts the execution back in the queue at
/// once, behind what is already waiting at its priority. Failures, reclaims
/// and the last error stay as they were; the epoch moves on at the next claim.
fn release(
    exec: &Execution,
    lease: &LeaseRef,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    if is_replay(exec, lease, EndedBy::Released) {
        return Ok(Transition::unchanged(exec, Outcome::Replayed));
    }
    check_lease(exec, lease, now_ms)?;
    let mut next = exec.clone();
    let attempt = end_attempt(&mut next, AttemptState::Released, None, now_ms);
    next.ended_lease = Some(EndedLease {
        id: lease.lease_id.clone(),
        epoch: lease.epoch,
        by: EndedBy::Released,
    });
    next.state = State::Waiting;
    next.run_at_ms = None;
    next.ready_at_ms = now_ms;
    next.updated_at_ms = now_ms;
    Ok(Transition::between(Some(exec), Some(next), attempt, config))
}

/// After a counted failure: back to the queue (with backoff unless
/// `immediate`) while attempts are left, else `failed`.
fn retry_or_fail(
    next: &mut Execution,
    error: ErrorInfo,
    retryable: bool,
    immediate: bool,
    now_ms: i64,
) {
    next.failures += 1;
    next.error = Some(error);
    next.updated_at_ms = now_ms;
    let exhausted = next.failures >= next.max_attempts || next.reclaims > next.max_reclaims;
    if !retryable || exhausted {
        finish(next, State::Failed, now_ms);
        return;
    }
    let delay_ms = if immediate {
        0
    } else {
        next.backoff.delay_ms(
            next.failures,
            jitter_unit(&next.id, AttemptNumber(next.attempts)),
        )
    };
    if delay_ms > 0 {
        next.state = State::Delayed;
        next.run_at_ms = Some(now_ms + delay_ms);
    } else {
        next.state = State::Waiting;
        next.run_at_ms = None;
        next.ready_at_ms = now_ms;
    }
}

fn cancel(
    exec: &Execution,
    reason: Option<String>,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    if reason
        .as_ref()
        .is_some_and(|r| r.len() > CANCEL_REASON_LEN_MAX)
    {
        return Err(Error::invalid(
            "reason",
            format!("must be at most {CANCEL_REASON_LEN_MAX} bytes"),
        ));
    }
    match exec.state {
        State::Cancelled => return Ok(Transition::unchanged(exec, Outcome::Replayed)),
        s if s.is_terminal() => {
            return Err(Error::conflict(format!(
                "{} already ended {}",
                exec.id,
                s.as_str()
            )));
        }
        _ => {}
    }
    let mut next = exec.clone();
    let attempt = end_attempt(&mut next, AttemptState::Cancelled, None, now_ms);
    next.cancel_reason = reason;
    finish(&mut next, State::Cancelled, now_ms);
    Ok(Transition::between(Some(exec), Some(next), attempt, config))
}

/// Counts an upstream's end on a member's join and, while the member is
/// blocked, promotes it (`waiting`) or skips it when the join is decided.
fn upstream_ended(
    exec: &Execution,
    fired: bool,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    let Some(mut join) = exec.join else {
        return Ok(Transition::unchanged(exec, Outcome::Dropped));
    };
    if join.fired + join.dead >= join.total {
        return Err(Error::Internal(format!(
            "{}: more upstreams ended than it has",
            exec.id
        )));
    }
    if fired {
        join.fired += 1;
    } else {
        join.dead += 1;
    }
    let mut next = exec.clone();
    next.join = Some(join);
    next.updated_at_ms = now_ms;
    if exec.state == State::Blocked {
        match join.outcome() {
            crate::flow::JoinOutcome::Satisfied => {
                next.state = State::Waiting;
                next.ready_at_ms = now_ms;
            }
            crate::flow::JoinOutcome::Unsatisfiable => finish(&mut next, State::Skipped, now_ms),
            crate::flow::JoinOutcome::Pending => {}
        }
    }
    Ok(Transition::between(Some(exec), Some(next), None, config))
}

fn replay(exec: &Execution, now_ms: i64, config: &MachineConfig) -> Result<Transition> {
    if exec.flow_id.is_some() {
        return Err(Error::conflict(format!(
            "{} is a flow member: its downstreams already counted its end",
            exec.id
        )));
    }
    if !exec.state.is_terminal() {
        return Err(Error::conflict(format!(
            "{} is {}, not ended",
            exec.id,
            exec.state.as_str()
        )));
    }
    let mut next = exec.clone();
    next.state = State::Waiting;
    next.failures = 0;
    next.reclaims = 0;
    next.result = None;
    next.error = None;
    next.finished_at_ms = None;
    next.run_at_ms = None;
    next.ready_at_ms = now_ms;
    next.updated_at_ms = now_ms;
    next.ended_lease = None;
    next.cancel_reason = None;
    next.deadline_at_ms = exec.deadline_ms.map(|d| now_ms.saturating_add(d));
    next.suspension = None;
    next.signals.clear();
    next.resumed_signals.clear();
    Ok(Transition::between(Some(exec), Some(next), None, config))
}

fn fire(exec: &Execution, timer: Timer, now_ms: i64, config: &MachineConfig) -> Result<Transition> {
    let current = timers_of(exec, config);
    if timer.due_ms > now_ms || !current.contains(&timer) {
        return Ok(Transition::unchanged(exec, Outcome::Dropped));
    }
    let mut next = exec.clone();
    let attempt = match timer.kind {
        TimerKind::Delay => {
            next.state = State::Waiting;
            next.ready_at_ms = timer.due_ms;
            next.run_at_ms = None;
            next.updated_at_ms = now_ms;
            None
        }
        TimerKind::LeaseExpiry => {
            let error = ErrorInfo::new("lease_lost", "the worker's lease expired");
            let attempt = end_attempt(
                &mut next,
                AttemptState::LeaseLost,
                Some(error.clone()),
                now_ms,
            );
            next.reclaims += 1;
            retry_or_fail(&mut next, error, true, true, now_ms);
            attempt
        }
        TimerKind::AttemptTimeout => {
            let error = ErrorInfo::new("timed_out", "the attempt exceeded timeout_ms");
            let attempt = end_attempt(
                &mut next,
                AttemptState::TimedOut,
                Some(error.clone()),
                now_ms,
            );
            retry_or_fail(&mut next, error, true, false, now_ms);
            attempt
        }
        TimerKind::Deadline => {
            let error = ErrorInfo::new("deadline", "the execution reached its deadline");
            let attempt = end_attempt(
                &mut next,
                AttemptState::TimedOut,
                Some(error.clone()),
                now_ms,
            );
            next.error = Some(error);
            finish(&mut next, State::Expired, now_ms);
            attempt
        }
        TimerKind::Retention => return Ok(Transition::between(Some(exec), None, None, config)),
        TimerKind::WaitpointTimeout => {
            suspend::time_out(&mut next, now_ms);
            None
        }
    };
    Ok(Transition::between(Some(exec), Some(next), attempt, config))
}
