//! Running one task: call its handler, catch a panic, report the outcome;
//! or, when shutdown's grace runs out first, stop the handler and release.
//!
//! Definitions: the handler runs in its own tokio task, so a panic ends that
//! task only and reaches us as a `JoinError`. The report (complete or fail)
//! is retried on `unavailable` until the lease must have lapsed; after that
//! nothing this worker writes can count. When the worker's `grace_over`
//! flag rises, the handler's task is aborted and awaited (bounded by
//! `ABORT_WAIT`) so that whatever it holds (a child process, a connection)
//! is let go before the task is released to another worker.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weft_api::{CompleteRequest, FailRequest, TaskView};
use weft_core::Error;

use super::context::{CancelSignal, SuspendedFlag};
use super::metrics::bump;
use super::release::release_one;
use super::{stopped, CancelReason, Shared, TaskContext, WorkerError, ABORT_WAIT};

/// Bounds of the pause between tries of a report; it doubles per try.
const REPORT_RETRY_MIN: Duration = Duration::from_millis(50);
const REPORT_RETRY_MAX: Duration = Duration::from_secs(2);

/// Aborts the handler's task when the runner is dropped (shutdown aborts
/// runners; their handlers must not run on detached).
struct AbortOnDrop(JoinHandle<Result<Value, WorkerError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a handler's run ended.
enum Invoked {
    /// It returned (or panicked): report the outcome.
    Finished(Result<Value, WorkerError>),
    /// Shutdown's grace ran out and it was aborted; `unwound` says whether
    /// its task has ended (it may be stuck in blocking code).
    Stopped { unwound: bool },
}

/// Runs one claimed task to its reported (or released) end; `_slot` frees a
/// concurrency slot when dropped.
pub(super) async fn run(
    shared: Arc<Shared>,
    task: TaskView,
    signal: CancelSignal,
    suspended: SuspendedFlag,
    _slot: OwnedSemaphorePermit,
) {
    let invoked = invoke(&shared, &task, &signal, &suspended).await;
    if suspended.is_raised() {
        // The suspend ended the attempt and released the lease: there is
        // nothing to complete, fail or hand back, whatever the handler did
        // afterwards.
        bump(&shared.counters.suspended, 1);
        tracing::debug!(execution_id = %task.execution_id, "handler suspended its execution");
        shared.in_flight().remove(&task.lease.id);
        return;
    }
    match invoked {
        // An error after shutdown told the handler to stop is most likely
        // its answer to being told: not a failure to report.
        Invoked::Finished(Err(_)) if signal.reason() == Some(CancelReason::Shutdown) => {
            hand_back(&shared, &task, &signal, true).await;
        }
        Invoked::Finished(outcome) => report(&shared, &task, &signal, outcome).await,
        Invoked::Stopped { unwound } => hand_back(&shared, &task, &signal, unwound).await,
    }
    shared.in_flight().remove(&task.lease.id);
}

async fn invoke(
    shared: &Arc<Shared>,
    task: &TaskView,
    signal: &CancelSignal,
    suspended: &SuspendedFlag,
) -> Invoked {
    let Some(handler) = shared.handler_for(&task.kind) else {
        return Invoked::Finished(Err(WorkerError::permanent(format!(
            "no handler for kind {:?} on worker {} (it handles: {})",
            task.kind,
            shared.config.worker_id,
            shared.kinds().join(", ")
        ))
        .with_kind("no_handler")));
    };
    let ctx = TaskContext::new(
        task.clone(),
        shared.config.worker_id.clone(),
        signal.clone(),
        suspended.clone(),
        Arc::clone(&shared.transport),
    );
    let mut running = AbortOnDrop(tokio::spawn(async move { handler(ctx).await }));
    let mut grace_over = shared.grace_over.subscribe();
    let joined = tokio::select! {
        // A handler that has finished reports, even at the last moment.
        biased;
        joined = &mut running.0 => joined,
        () = stopped(&mut grace_over) => return stop_handler(&mut running).await,
    };
    Invoked::Finished(match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => {
            bump(&shared.counters.panicked, 1);
            let message = panic_message(e.into_panic().as_ref());
            tracing::warn!(execution_id = %task.execution_id, %message, "handler panicked");
            Err(WorkerError::new(format!("the handler panicked: {message}")).with_kind("panic"))
        }
        Err(e) => Err(WorkerError::new(format!("the handler was stopped: {e}"))),
    })
}

/// Aborts the handler and waits, up to `ABORT_WAIT`, for its task to end
/// (tokio drops an aborted task's future before its handle resolves). A
/// result that arrived in the meantime is still reported.
async fn stop_handler(running: &mut AbortOnDrop) -> Invoked {
    running.0.abort();
    match tokio::time::timeout(ABORT_WAIT, &mut running.0).await {
        Ok(Ok(Ok(value))) => Invoked::Finished(Ok(value)),
        Ok(_) => Invoked::Stopped { unwound: true },
        Err(_elapsed) => Invoked::Stopped { unwound: false },
    }
}

/// After shutdown stopped the handler: releases the task, so it is claimable
/// again at once and the attempt costs nothing. Not when its lease is known
/// lost (there is nothing to hand back), nor while the handler may still be
/// running (another worker would run it alongside); those lapse.
async fn hand_back(shared: &Shared, task: &TaskView, signal: &CancelSignal, unwound: bool) {
    let id = task.execution_id.as_str();
    if signal.reason() != Some(CancelReason::Shutdown) {
        tracing::debug!(execution_id = %id, "stopped at shutdown; its lease was already lost");
        return;
    }
    if !unwound {
        tracing::warn!(
            execution_id = %id,
            "the handler did not stop when aborted (blocking code?); leaving its lease to lapse"
        );
        return;
    }
    release_one(shared, task).await;
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a non-text panic payload)".to_owned()
    }
}

async fn report(
    shared: &Arc<Shared>,
    task: &TaskView,
    signal: &CancelSignal,
    outcome: Result<Value, WorkerError>,
) {
    let id = task.execution_id.as_str();
    let written = match outcome {
        Ok(result) => match write_complete(shared, task, result).await {
            // A result the store refuses (too large) will not pass on a
            // retry either: fail the execution, saying why.
            Err(e @ (Error::PayloadTooLarge { .. } | Error::InvalidArgument { .. })) => {
                let error = WorkerError::permanent(format!("the result was refused: {e}"))
                    .with_kind("bad_result");
                write_fail(shared, task, &error).await.map(|()| false)
            }
            other => other.map(|()| true),
        },
        Err(error) => {
            tracing::debug!(execution_id = %id, %error, "handler failed");
            write_fail(shared, task, &error).await.map(|()| false)
        }
    };
    match written {
        Ok(true) => bump(&shared.counters.completed, 1),
        Ok(false) => bump(&shared.counters.failed, 1),
        Err(Error::LeaseLost { .. }) => {
            if signal.reason().is_none() {
                let reason = shared.lost_reason(id).await;
                shared.lose(&task.lease.id, signal, reason);
            }
            tracing::debug!(execution_id = %id, "outcome not recorded: the lease was lost");
        }
        Err(e) => {
            tracing::warn!(
                execution_id = %id, error = %e,
                "could not report the outcome; the lease will lapse and Weft will retry"
            );
            if signal.reason().is_none() {
                shared.lose(&task.lease.id, signal, CancelReason::LeaseLost);
            }
        }
    }
}

async fn write_complete(shared: &Shared, task: &TaskView, result: Value) -> weft_core::Result<()> {
    let request = CompleteRequest {
        lease_id: task.lease.id.clone(),
        epoch: task.lease.epoch,
        result,
    };
    let id = task.execution_id.as_str();
    retry_until_lapse(shared, task, || shared.completer.complete(id, &request)).await
}

async fn write_fail(
    shared: &Shared,
    task: &TaskView,
    error: &WorkerError,
) -> weft_core::Result<()> {
    let request = FailRequest {
        lease_id: task.lease.id.clone(),
        epoch: task.lease.epoch,
        error: error.to_fail_error(),
    };
    let id = task.execution_id.as_str();
    retry_until_lapse(shared, task, || shared.transport.fail_quietly(id, &request)).await
}

/// Calls `write` until it answers something other than `unavailable`, or
/// the lease must have lapsed.
async fn retry_until_lapse<T, F, Fut>(
    shared: &Shared,
    task: &TaskView,
    mut write: F,
) -> weft_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = weft_core::Result<T>>,
{
    let mut delay = REPORT_RETRY_MIN;
    loop {
        let error = match write().await {
            Err(e) if e.retryable() => e,
            other => return other,
        };
        let expires_at = shared
            .in_flight()
            .get(&task.lease.id)
            .map_or_else(Instant::now, |entry| entry.expires_at);
        if Instant::now() + delay >= expires_at {
            return Err(error);
        }
        tracing::debug!(execution_id = %task.execution_id, %error, "report failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(REPORT_RETRY_MAX);
    }
}
