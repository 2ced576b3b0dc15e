//! Suspend and signal: the worker's `suspend`, which answers one token per
//! waitpoint; `POST /v1/signals`, where the token is the only credential;
//! and the operator's `POST /v1/executions/{id}/signals`.
//!
//! Invariant: `POST /v1/signals` verifies its token with the keyring before
//! anything else, so a forged, altered, truncated, expired or wrong-key
//! token is `403 invalid_token` without a single store call.

use axum::extract::State;
use axum::Json;
use serde_json::Value;
use weft_api::{
    lease_ref, ExecutionSignalRequest, ExecutionView, SignalRequest, SignalResponse,
    SuspendRequest, SuspendResponse, WaitpointTokenView,
};
use weft_core::waitpoint::check_waitpoint_name;
use weft_core::{payload_bytes, Error, SignalParams, State as ExecState, SuspendParams};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{execution_id, JsonBody, RawId};
use crate::keys::now_ms;

/// `413` for a signal payload over the server's limit, whatever the store's.
fn check_payload(app: &AppState, payload: &Value) -> ApiResult<()> {
    let bytes = payload_bytes(payload);
    if bytes > app.config.payload_bytes_max {
        return Err(ApiError::too_large(format!(
            "payload is {bytes} bytes, over the limit of {}",
            app.config.payload_bytes_max
        )));
    }
    Ok(())
}

/// `POST /v1/executions/{id}/suspend`: the execution with one token per
/// waitpoint; while it stays `active` (buffered signals satisfied it), also
/// those signals.
pub(crate) async fn suspend(
    State(app): State<AppState>,
    raw: RawId,
    JsonBody(body): JsonBody<SuspendRequest>,
) -> ApiResult<Json<SuspendResponse>> {
    let spec = body.to_spec()?;
    let params = SuspendParams {
        execution_id: execution_id(&raw)?,
        lease: lease_ref(&body.lease_id, body.epoch),
        spec,
    };
    let execution = app.store.execution_suspend(&params).await?;
    let tokens = app.keys.current().tokens_for(&execution)?;
    let signals = (execution.state == ExecState::Active).then(|| execution.resumed_signals.clone());
    Ok(Json(SuspendResponse {
        execution: ExecutionView::from(&execution),
        waitpoints: tokens.iter().map(WaitpointTokenView::from).collect(),
        signals,
    }))
}

/// `POST /v1/signals`: no API token; the waitpoint token grants one signal
/// to one waitpoint of one suspension.
pub(crate) async fn signal(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<SignalRequest>,
) -> ApiResult<Json<SignalResponse>> {
    let claims = app.keys.current().verify(&body.token, now_ms())?;
    check_payload(&app, &body.payload)?;
    let params = SignalParams {
        execution_id: claims.execution_id,
        waitpoint: claims.waitpoint,
        payload: body.payload,
        seq: Some(claims.seq),
    };
    let execution = match app.store.execution_signal(&params).await {
        // A genuine token whose execution has ended (or is gone) opens
        // nothing any more: it is used up, which the contract calls
        // `invalid_token`, not a conflict the token holder could act on.
        Err(Error::Conflict { .. } | Error::NotFound { .. }) => {
            return Err(Error::InvalidToken.into())
        }
        other => other?,
    };
    Ok(Json(SignalResponse {
        execution: ExecutionView::from(&execution),
    }))
}

/// `POST /v1/executions/{id}/signals`: an operator signals a waitpoint by
/// name; buffered when the execution has not suspended on it yet.
pub(crate) async fn signal_execution(
    State(app): State<AppState>,
    raw: RawId,
    JsonBody(body): JsonBody<ExecutionSignalRequest>,
) -> ApiResult<Json<SignalResponse>> {
    check_waitpoint_name("waitpoint", &body.waitpoint)?;
    check_payload(&app, &body.payload)?;
    let params = SignalParams {
        execution_id: execution_id(&raw)?,
        waitpoint: body.waitpoint,
        payload: body.payload,
        seq: None,
    };
    let execution = app.store.execution_signal(&params).await?;
    Ok(Json(SignalResponse {
        execution: ExecutionView::from(&execution),
    }))
}
