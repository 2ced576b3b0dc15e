//! Operator and client routes on executions: submit, get, list, attempts,
//! wait, cancel, replay.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use weft_api::{
    AttemptView, CancelRequest, ExecutionView, Items, Page, SubmitBatchRequest, SubmitRequest,
    SubmittedView, WAIT_TIMEOUT_MS_DEFAULT, WAIT_TIMEOUT_MS_MAX,
};
use weft_core::{
    check_name, CancelParams, Execution, ExecutionId, FlowId, ListParams, State as ExecState,
    StoreEvent, KIND_LEN_MAX, LANE_LEN_MAX, LIST_LIMIT_MAX,
};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{execution_id, JsonBody, OptionalJsonBody, QueryParams, RawId};
use crate::waiting::{Waiter, Wake};

/// Page size of a list that names none.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
/// Longest list cursor accepted, in bytes; real cursors are ids.
const CURSOR_LEN_MAX: usize = 256;

/// `POST /v1/executions`: `201` with a new execution, `200` with the one an
/// idempotency key already names.
pub(crate) async fn submit(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<SubmitRequest>,
) -> ApiResult<(StatusCode, Json<ExecutionView>)> {
    let params = body.into_params()?;
    // The server's own limit applies whatever the store is configured with.
    params.validate(app.config.payload_bytes_max)?;
    let submitted = app.store.execution_submit(&params).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ExecutionView::from(&submitted.execution))))
}

/// `POST /v1/executions/batch`: every item is checked first (one bad item
/// refuses the batch, naming `executions[i].field`), then one store call.
pub(crate) async fn submit_batch(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<SubmitBatchRequest>,
) -> ApiResult<Json<Items<SubmittedView>>> {
    let params = body.into_params()?;
    // The server's own limit applies whatever the store is configured with.
    for (index, item) in params.iter().enumerate() {
        item.validate(app.config.payload_bytes_max)
            .map_err(|e| e.at_item("executions", index))?;
    }
    let submitted = app.store.execution_submit_many(&params).await?;
    let items = submitted
        .iter()
        .map(|s| SubmittedView {
            created: s.created,
            execution: ExecutionView::from(&s.execution),
        })
        .collect();
    Ok(Json(Items { items }))
}

/// `GET /v1/executions/{id}`.
pub(crate) async fn get_one(
    State(app): State<AppState>,
    raw: RawId,
) -> ApiResult<Json<ExecutionView>> {
    let id = execution_id(&raw)?;
    let execution = app.store.execution_get(&id).await?;
    Ok(Json(ExecutionView::from(&execution)))
}

/// A list cursor as given: 1 ..= `CURSOR_LEN_MAX` bytes, or none.
pub(crate) fn check_cursor(cursor: Option<&str>) -> ApiResult<Option<String>> {
    match cursor {
        Some(c) if c.is_empty() || c.len() > CURSOR_LEN_MAX => Err(ApiError::invalid_field(
            "cursor",
            format!("must be 1..={CURSOR_LEN_MAX} bytes, from a previous page's next_cursor"),
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

/// Parses the list filters; every bad value is a `400` naming its parameter.
fn list_params(raw: Option<&str>) -> ApiResult<ListParams> {
    let known = ["lane", "state", "kind", "flow_id", "limit", "cursor"];
    let query = QueryParams::parse(raw, &known)?;
    let lane = query.get("lane").map(str::to_owned);
    if let Some(lane) = &lane {
        check_name("lane", lane, LANE_LEN_MAX)?;
    }
    let kind = query.get("kind").map(str::to_owned);
    if let Some(kind) = &kind {
        check_name("kind", kind, KIND_LEN_MAX)?;
    }
    let state = query.get("state").map(ExecState::parse).transpose()?;
    let flow_id = match query.get("flow_id") {
        Some(text) => match FlowId::parse(text) {
            Ok(id) => Some(id.to_string()),
            Err(_) => {
                return Err(ApiError::invalid_field(
                    "flow_id",
                    format!("{text:?} is not a flow id"),
                ))
            }
        },
        None => None,
    };
    let cursor = check_cursor(query.get("cursor"))?;
    let limit = query
        .int("limit", 1, i64::from(LIST_LIMIT_MAX))?
        .map_or(Ok(LIST_LIMIT_DEFAULT), u32::try_from)
        .map_err(|_| ApiError::invalid_field("limit", "out of range"))?;
    Ok(ListParams {
        lane,
        state,
        kind,
        flow_id,
        limit,
        cursor,
    })
}

/// `GET /v1/executions?lane=&state=&kind=&flow_id=&limit=&cursor=`.
pub(crate) async fn list(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Page<ExecutionView>>> {
    let params = list_params(raw.as_deref())?;
    let page = app.store.execution_list(&params).await?;
    Ok(Json(Page {
        items: page.items.iter().map(ExecutionView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /v1/executions/{id}/attempts`.
pub(crate) async fn attempts(
    State(app): State<AppState>,
    raw: RawId,
) -> ApiResult<Json<Items<AttemptView>>> {
    let id = execution_id(&raw)?;
    let attempts = app.store.attempt_list(&id).await?;
    Ok(Json(Items {
        items: attempts.iter().map(AttemptView::from).collect(),
    }))
}

/// `GET /v1/executions/{id}/wait?timeout_ms=`: the execution once it is
/// terminal, or as it is when the timeout passes.
pub(crate) async fn wait(
    State(app): State<AppState>,
    raw: RawId,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ExecutionView>> {
    let query = QueryParams::parse(query.as_deref(), &["timeout_ms"])?;
    let timeout_ms = query
        .int("timeout_ms", 0, WAIT_TIMEOUT_MS_MAX)?
        .unwrap_or(WAIT_TIMEOUT_MS_DEFAULT);
    let id = execution_id(&raw)?;
    let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
    let execution = wait_until_ended(&app, &id, timeout).await?;
    Ok(Json(ExecutionView::from(&execution)))
}

/// Reads the execution, then sleeps on `Ended` events for it (re-reading
/// when one comes, or when a re-check is due) until it is terminal or the
/// timeout passes; then answers with what it reads last.
async fn wait_until_ended(
    app: &AppState,
    id: &ExecutionId,
    timeout: Duration,
) -> ApiResult<Execution> {
    // Subscribe first: an end between the read and the sleep is not missed.
    let mut waiter = Waiter::new(app, timeout);
    let mut execution = app.store.execution_get(id).await?;
    while !execution.state.is_terminal() {
        let wake = waiter
            .next(|event| match event {
                StoreEvent::Ended { id: ended, .. } if ended == id => Some(()),
                _ => None,
            })
            .await;
        execution = app.store.execution_get(id).await?;
        if matches!(wake, Wake::Deadline | Wake::Shutdown) {
            break;
        }
    }
    Ok(execution)
}

/// `POST /v1/executions/{id}/cancel` with an optional `{"reason"}`.
pub(crate) async fn cancel(
    State(app): State<AppState>,
    raw: RawId,
    OptionalJsonBody(body): OptionalJsonBody<CancelRequest>,
) -> ApiResult<Json<ExecutionView>> {
    let id = execution_id(&raw)?;
    let params = CancelParams {
        execution_id: id,
        reason: body.reason,
    };
    let execution = app.store.execution_cancel(&params).await?;
    Ok(Json(ExecutionView::from(&execution)))
}

/// The body of a replay: nothing yet, but unknown fields are refused so a
/// client relying on an option that does not exist hears about it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {}

/// `POST /v1/executions/{id}/replay`.
pub(crate) async fn replay(
    State(app): State<AppState>,
    raw: RawId,
    OptionalJsonBody(_body): OptionalJsonBody<ReplayRequest>,
) -> ApiResult<Json<ExecutionView>> {
    let id = execution_id(&raw)?;
    let execution = app.store.execution_replay(&id).await?;
    Ok(Json(ExecutionView::from(&execution)))
}
