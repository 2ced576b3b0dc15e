//! Handing tasks back: what a stopping worker does with tasks it will not
//! finish, instead of leaving their leases to lapse.
//!
//! Definitions: a release (`Transport::release`) makes the execution
//! `waiting` at once and ends the attempt `released`, counting against
//! neither `max_attempts` nor `max_reclaims`. A lapse would cost an attempt
//! and keep the task from every worker for up to one lease.
//!
//! Invariants: every release is bounded by `RELEASE_WAIT_MAX`, retries only
//! errors that may pass on a retry (`unavailable`), and is counted in
//! `WorkerMetrics::released` only when the store accepted it. A release that
//! fails leaves the task to lapse, as before this existed.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use weft_api::{ReleaseRequest, TaskView};

use super::metrics::bump;
use super::Shared;

/// The longest one release may take, retries included; past it the lease is
/// left to lapse.
pub(super) const RELEASE_WAIT_MAX: Duration = Duration::from_secs(5);
/// Bounds of the pause between tries of a release; it doubles per try.
const RELEASE_RETRY_MIN: Duration = Duration::from_millis(50);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(1);

/// Releases one task; `true` when the store took it back.
pub(super) async fn release_one(shared: &Shared, task: &TaskView) -> bool {
    let id = task.execution_id.as_str();
    let request = ReleaseRequest {
        lease_id: task.lease.id.clone(),
        epoch: task.lease.epoch,
    };
    let deadline = Instant::now() + RELEASE_WAIT_MAX;
    let mut delay = RELEASE_RETRY_MIN;
    loop {
        let answer =
            tokio::time::timeout_at(deadline, shared.transport.release(id, &request)).await;
        let error = match answer {
            Ok(Ok(_)) => {
                bump(&shared.counters.released, 1);
                tracing::debug!(execution_id = %id, "released the task");
                return true;
            }
            Ok(Err(e)) if e.retryable() => e.to_string(),
            Ok(Err(e)) => {
                // A lost lease (the task was cancelled or lapsed) has nothing
                // left to hand back.
                tracing::debug!(execution_id = %id, error = %e, "not released");
                return false;
            }
            Err(_elapsed) => "no answer in time".to_owned(),
        };
        if Instant::now() + delay >= deadline {
            tracing::warn!(
                execution_id = %id, %error,
                "could not release the task; its lease will lapse and Weft will retry it"
            );
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RELEASE_RETRY_MAX);
    }
}

/// Releases, all at once, tasks this worker received but will not run.
pub(super) async fn release_unstarted(shared: Arc<Shared>, tasks: Vec<TaskView>) {
    let mut releases = JoinSet::new();
    for task in tasks {
        let shared = Arc::clone(&shared);
        releases.spawn(async move { release_one(&shared, &task).await });
    }
    while releases.join_next().await.is_some() {}
}
