//! Suspend, signal and the waitpoint timeout.
//!
//! Invariants: a suspend either ends the attempt (`suspended`, lease
//! released, nothing counted against `max_attempts`) or, when buffered
//! signals already satisfy it, leaves the execution `active` under the same
//! lease. A suspension ends exactly once: by the signal that satisfies it,
//! by its first waitpoint timeout, or by cancel or deadline. When it ends by
//! resuming, the signals of its waitpoints move from `signals` to
//! `resumed_signals`, which every later task carries. The same suspend sent
//! again by the same lease is answered as the first was, whether it ended
//! the attempt or was satisfied at once.

use serde_json::Value;

use super::{
    check_lease, end_attempt, finish, is_replay, LeaseRef, MachineConfig, Outcome, Transition,
};
use crate::error::{Error, Result};
use crate::model::{AttemptState, EndedBy, EndedLease, ErrorInfo, Execution, State};
use crate::waitpoint::{
    check_waitpoint_name, OnTimeout, SuspendSpec, Suspension, Waitpoint, SIGNALS_BUFFERED_MAX,
    TOKEN_TTL_MS_MAX,
};

pub(super) fn suspend(
    exec: &Execution,
    lease: &LeaseRef,
    spec: &SuspendSpec,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    spec.validate()?;
    if is_replay(exec, lease, EndedBy::Suspended) {
        return Ok(Transition::unchanged(exec, Outcome::Replayed));
    }
    check_lease(exec, lease, now_ms)?;
    // A suspend that buffered signals satisfied at once, sent again by the
    // same lease (a retry after a lost answer), gets the same answer.
    if exec.suspension.as_ref().is_some_and(|s| {
        s.at_once_epoch == Some(lease.epoch) && exec.state == State::Active && s.is_same(spec)
    }) {
        return Ok(Transition::unchanged(exec, Outcome::Replayed));
    }
    let mut next = exec.clone();
    next.suspends += 1;
    next.updated_at_ms = now_ms;
    let waitpoints = spec
        .waitpoints
        .iter()
        .map(|w| {
            let timeout_at_ms = w.timeout_ms.map(|t| now_ms.saturating_add(t));
            Waitpoint {
                name: w.name.clone(),
                timeout_at_ms,
                on_timeout: w.on_timeout,
                expires_at_ms: timeout_at_ms
                    .unwrap_or_else(|| now_ms.saturating_add(TOKEN_TTL_MS_MAX)),
                signalled: exec.signals.contains_key(&w.name),
            }
        })
        .collect();
    let suspension = Suspension {
        seq: next.suspends,
        resume_when: spec.resume_when,
        suspended_at_ms: now_ms,
        waitpoints,
        at_once_epoch: None,
    };
    let satisfied = suspension.satisfied();
    next.suspension = Some(suspension);
    if satisfied {
        if let Some(s) = next.suspension.as_mut() {
            s.at_once_epoch = Some(lease.epoch);
        }
        consume_signals(&mut next);
        return Ok(Transition::between(Some(exec), Some(next), None, config));
    }
    let attempt = end_attempt(&mut next, AttemptState::Suspended, None, now_ms);
    next.ended_lease = Some(EndedLease {
        id: lease.lease_id.clone(),
        epoch: lease.epoch,
        by: EndedBy::Suspended,
    });
    next.state = State::Suspended;
    Ok(Transition::between(Some(exec), Some(next), attempt, config))
}

pub(super) fn signal(
    exec: &Execution,
    waitpoint: &str,
    payload: Value,
    seq: Option<u32>,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Transition> {
    check_waitpoint_name("waitpoint", waitpoint)?;
    let bytes = crate::model::payload_bytes(&payload);
    if bytes > config.payload_bytes_max {
        return Err(Error::PayloadTooLarge {
            bytes,
            max_bytes: config.payload_bytes_max,
        });
    }
    if exec.state.is_terminal() {
        return Err(Error::conflict(format!(
            "{} already ended {}",
            exec.id,
            exec.state.as_str()
        )));
    }
    let in_force = exec
        .suspension
        .as_ref()
        .filter(|_| exec.state == State::Suspended);
    let position = in_force.and_then(|s| s.waitpoints.iter().position(|w| w.name == waitpoint));
    if let Some(seq) = seq {
        // A token opens one waitpoint of one suspension, once.
        let open = match (in_force, position) {
            (Some(s), Some(i)) => s.seq == seq && !s.waitpoints[i].signalled,
            _ => false,
        };
        if !open {
            return Err(Error::InvalidToken);
        }
    }
    let already = || Error::conflict(format!("waitpoint {waitpoint} was already signalled"));
    let mut next = exec.clone();
    next.updated_at_ms = now_ms;
    match (next.suspension.as_mut(), position) {
        (Some(suspension), Some(i)) => {
            if suspension.waitpoints[i].signalled {
                return Err(already());
            }
            suspension.waitpoints[i].signalled = true;
            let satisfied = suspension.satisfied();
            next.signals.insert(waitpoint.to_owned(), payload);
            if satisfied {
                resume(&mut next, now_ms);
            }
        }
        _ => {
            if next.signals.contains_key(waitpoint) {
                return Err(already());
            }
            if next.signals.len() >= SIGNALS_BUFFERED_MAX {
                return Err(Error::conflict(format!(
                    "{} already holds {SIGNALS_BUFFERED_MAX} signals no run has consumed",
                    exec.id
                )));
            }
            next.signals.insert(waitpoint.to_owned(), payload);
        }
    }
    Ok(Transition::between(Some(exec), Some(next), None, config))
}

/// Applies the behaviour of the waitpoint whose timeout fired (the caller
/// has checked the timer is the execution's current one).
pub(super) fn time_out(next: &mut Execution, now_ms: i64) {
    let Some(waitpoint) = next
        .suspension
        .as_ref()
        .and_then(|s| s.next_timeout())
        .cloned()
    else {
        return;
    };
    let why = format!("waitpoint {} timed out", waitpoint.name);
    next.updated_at_ms = now_ms;
    match waitpoint.on_timeout {
        OnTimeout::Fail => {
            next.error = Some(ErrorInfo::new("waitpoint_timeout", why));
            finish(next, State::Failed, now_ms);
        }
        OnTimeout::Cancel => {
            next.cancel_reason = Some(why);
            finish(next, State::Cancelled, now_ms);
        }
        OnTimeout::Expire => {
            next.error = Some(ErrorInfo::new("waitpoint_timeout", why));
            finish(next, State::Expired, now_ms);
        }
        OnTimeout::Resume => resume(next, now_ms),
    }
}

/// Ends the suspension in force: claimable again, its signals handed on.
fn resume(next: &mut Execution, now_ms: i64) {
    next.state = State::Waiting;
    next.run_at_ms = None;
    next.ready_at_ms = now_ms;
    consume_signals(next);
}

/// Moves the signals of the last suspension's waitpoints to
/// `resumed_signals`, replacing what an earlier resume left there.
fn consume_signals(next: &mut Execution) {
    let names: Vec<String> = next
        .suspension
        .iter()
        .flat_map(|s| s.waitpoints.iter().map(|w| w.name.clone()))
        .collect();
    next.resumed_signals = names
        .into_iter()
        .filter_map(|name| next.signals.remove(&name).map(|v| (name, v)))
        .collect();
}
