//! Worker routes: the long-poll claim and the fenced writes (heartbeat,
//! complete, fail, and release, an addition to the contract).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use weft_api::{
    lease_ref, time, ClaimRequest, ClaimResponse, CompleteRequest, ExecutionView, FailRequest,
    HeartbeatRequest, HeartbeatResponse, ReleaseRequest, TaskView, CLAIM_WAIT_MS_MAX,
};
use weft_core::{
    payload_bytes, ClaimParams, CompleteParams, ErrorInfo, FailParams, HeartbeatParams,
    ReleaseParams, Task,
};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{execution_id, JsonBody, RawId};

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

/// Claims where the store's `Ready` events say work is (the server's one
/// `ReadyBoard`: an event costs one store claim, not one per waiting claim), with
/// a sweep of every partition when the board has been quiet for the re-check
/// interval, until a task comes, `wait` passes or the server shuts down.
///
/// If the client goes away, hyper drops this future and the wait ends with
/// it; a claim already in the store finishes in its own task and releases
/// what it took (`claim_detached`). Only a response already on its way when
/// the connection closes is lost; its lease lapses.
async fn claim_waiting(
    app: &AppState,
    params: &ClaimParams,
    wait: Duration,
) -> ApiResult<Vec<Task>> {
    let board = app.board();
    let sweep_interval = if board.is_fed() {
        app.config.event_recheck_interval
    } else {
        app.config.poll_interval
    };
    let mut shutdown = app.shutdown.subscribe();
    if *shutdown.borrow() {
        return Ok(Vec::new());
    }
    tokio::select! {
        claimed = weft_core::claim_waiting(&app.store, &board, params, wait, sweep_interval) => {
            Ok(claimed?)
        }
        // A closed channel means the server is going away too.
        _ = shutdown.changed() => Ok(Vec::new()),
    }
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
