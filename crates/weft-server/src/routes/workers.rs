//! Worker routes: the long-poll claim and the fenced writes (heartbeat,
//! complete, fail, and release, an addition to the contract).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use tokio::sync::oneshot;
use weft_api::{
    lease_ref, time, ClaimRequest, ClaimResponse, CompleteRequest, ExecutionView, FailRequest,
    HeartbeatRequest, HeartbeatResponse, ReleaseRequest, TaskView, CLAIM_WAIT_MS_MAX,
};
use weft_core::{
    claim_across, payload_bytes, release_claimed, ClaimParams, CompleteParams, Error, ErrorInfo,
    FailParams, HeartbeatParams, PartitionId, ReleaseParams, StoreEvent, Task,
};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{execution_id, JsonBody, RawId};
use crate::waiting::{Waiter, Wake};

/// `POST /v1/claims`: up to `max` tasks, waiting up to `wait_ms` for the
/// first one.
pub(crate) async fn claim(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<ClaimRequest>,
) -> ApiResult<Json<ClaimResponse>> {
    if !(0..=CLAIM_WAIT_MS_MAX).contains(&body.wait_ms) {
        return Err(ApiError::invalid_field(
            "wait_ms",
            format!("must be 0..={CLAIM_WAIT_MS_MAX}, got {}", body.wait_ms),
        ));
    }
    let params = ClaimParams {
        worker_id: body.worker_id,
        lanes: body.lanes,
        capabilities: body.capabilities,
        max: body.max,
        lease_ms: body.lease_ms,
    }
    .normalized()?;
    let wait = Duration::from_millis(u64::try_from(body.wait_ms).unwrap_or(0));
    let tasks = claim_waiting(&app, &params, wait).await?;
    Ok(Json(ClaimResponse {
        tasks: tasks.iter().map(TaskView::from).collect(),
    }))
}

/// One sweep of every partition, starting one further along than the last
/// claim did.
async fn sweep(app: &AppState, params: &ClaimParams) -> ApiResult<Vec<Task>> {
    let count = u32::from(app.store.partition_count().get());
    let turn = app.claim_rotation.fetch_add(1, Ordering::Relaxed);
    // `turn % count` is below `count`, itself a u16.
    let start = PartitionId(u16::try_from(turn % count.max(1)).unwrap_or(0));
    let (store, params) = (Arc::clone(&app.store), params.clone());
    detached(app, async move {
        claim_across(store.as_ref(), &params, start).await
    })
    .await
}

/// Claims from the one partition an event named.
async fn claim_partition(
    app: &AppState,
    params: &ClaimParams,
    partition: PartitionId,
) -> ApiResult<Vec<Task>> {
    let (store, params) = (Arc::clone(&app.store), params.clone());
    detached(app, async move {
        store.execution_claim(partition, &params).await
    })
    .await
}

/// Runs one claim in a task of its own and waits for its answer. A client
/// that goes away makes hyper drop the request's future, not this task, so
/// what the claim took is not stranded: it is released at once, counting
/// nothing, instead of lapsing a lease later.
async fn detached<F>(app: &AppState, claim: F) -> ApiResult<Vec<Task>>
where
    F: Future<Output = weft_core::Result<Vec<Task>>> + Send + 'static,
{
    let store = Arc::clone(&app.store);
    let (answer, answered) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(Ok(tasks)) = answer.send(claim.await) {
            for (execution_id, error) in release_claimed(store.as_ref(), &tasks).await {
                tracing::warn!(
                    %execution_id, %error,
                    "could not release a task whose claimant went away; its lease will lapse"
                );
            }
        }
    });
    let claimed = answered
        .await
        .map_err(|_| Error::Internal("the claim task ended without an answer".into()))?;
    Ok(claimed?)
}

/// Claims at once; when nothing is there and `wait` is not zero, sleeps on
/// `Ready` events of the claimed lanes (claiming from the partition the event
/// names) with periodic full sweeps, until a task comes or `wait` passes.
///
/// If the client goes away, hyper drops this future and the wait ends with
/// it; a claim already in the store finishes in its own task and releases
/// what it took (see `detached`). Only a response already on its way when
/// the connection closes is lost; its lease lapses.
async fn claim_waiting(
    app: &AppState,
    params: &ClaimParams,
    wait: Duration,
) -> ApiResult<Vec<Task>> {
    // Subscribe before the first sweep so a submit racing it still wakes us.
    let mut waiter = (!wait.is_zero()).then(|| Waiter::new(app, wait));
    let mut tasks = sweep(app, params).await?;
    let Some(waiter) = waiter.as_mut() else {
        return Ok(tasks);
    };
    let lanes = &params.lanes;
    while tasks.is_empty() {
        let wake = waiter
            .next(|event| match event {
                StoreEvent::Ready { partition, lane } if lanes.contains(lane) => Some(*partition),
                _ => None,
            })
            .await;
        tasks = match wake {
            Wake::Event(partition) => claim_partition(app, params, partition).await?,
            Wake::Recheck => sweep(app, params).await?,
            Wake::Deadline | Wake::Shutdown => break,
        };
    }
    Ok(tasks)
}

/// `POST /v1/executions/{id}/heartbeat`.
pub(crate) async fn heartbeat(
    State(app): State<AppState>,
    raw: RawId,
    JsonBody(body): JsonBody<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let params = HeartbeatParams {
        execution_id: execution_id(&raw)?,
        lease: lease_ref(&body.lease_id, body.epoch),
        lease_ms: body.lease_ms,
    };
    let reply = app.store.execution_heartbeat(&params).await?;
    Ok(Json(HeartbeatResponse {
        expires_at: time::format_ms(reply.expires_at_ms),
        cancel_requested: reply.cancel_requested,
    }))
}

/// `POST /v1/executions/{id}/complete`.
pub(crate) async fn complete(
    State(app): State<AppState>,
    raw: RawId,
    JsonBody(body): JsonBody<CompleteRequest>,
) -> ApiResult<Json<ExecutionView>> {
    let execution_id = execution_id(&raw)?;
    let bytes = payload_bytes(&body.result);
    if bytes > app.config.payload_bytes_max {
        return Err(ApiError::too_large(format!(
            "result is {bytes} bytes, over the limit of {}",
            app.config.payload_bytes_max
        )));
    }
    let params = CompleteParams {
        execution_id,
        lease: lease_ref(&body.lease_id, body.epoch),
        result: body.result,
    };
    let execution = app.store.execution_complete(&params).await?;
    Ok(Json(ExecutionView::from(&execution)))
}

/// `POST /v1/executions/{id}/fail`; `retryable` defaults to `true`.
pub(crate) async fn fail(
    State(app): State<AppState>,
    raw: RawId,
    JsonBody(body): JsonBody<FailRequest>,
) -> ApiResult<Json<ExecutionView>> {
    let params = FailParams {
        execution_id: execution_id(&raw)?,
        lease: lease_ref(&body.lease_id, body.epoch),
        error: ErrorInfo {
            message: body.error.message,
            kind: body.error.kind,
        },
        retryable: body.error.retryable.unwrap_or(true),
    };
    let execution = app.store.execution_fail(&params).await?;
    Ok(Json(ExecutionView::from(&execution)))
}

/// `POST /v1/executions/{id}/release`: the execution back to `waiting`,
/// nothing counted; `409 lease_lost` for a stale lease.
pub(crate) async fn release(
    State(app): State<AppState>,
    raw: RawId,
    JsonBody(body): JsonBody<ReleaseRequest>,
) -> ApiResult<Json<ExecutionView>> {
    let params = ReleaseParams {
        execution_id: execution_id(&raw)?,
        lease: lease_ref(&body.lease_id, body.epoch),
    };
    let execution = app.store.execution_release(&params).await?;
    Ok(Json(ExecutionView::from(&execution)))
}
