//! The flow routes: create, get, list, wait, add nodes, cancel.
//!
//! Every route checks its input in full before it asks the store, so a bad
//! request is a `400` (or `404` for an id no flow can have) whatever the
//! store; a store without flows ([`weft_core::Store::supports_flows`]) then
//! answers `503 unavailable`. Graph errors (a cycle, an unknown or
//! duplicate key, a bad join) are the core's `FlowSpec` checks, named by
//! field path (`edges[2].to`, `joins.merge.n`).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use weft_api::{
    parse_flow_state, AddNodesRequest, FlowRequest, FlowView, Page, WAIT_TIMEOUT_MS_DEFAULT,
    WAIT_TIMEOUT_MS_MAX,
};
use weft_core::flow::{Flow, FlowSpec};
use weft_core::{Error, FlowId, FlowListParams, StoreEvent, LIST_LIMIT_MAX};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, OptionalJsonBody, QueryParams, RawId};
use crate::routes::executions::{check_cursor, LIST_LIMIT_DEFAULT};
use crate::waiting::{Waiter, Wake};

/// A flow id from a path; a malformed one is `404`, since no flow can have
/// it.
fn flow_id(raw: &RawId) -> ApiResult<FlowId> {
    Ok(FlowId::parse(&raw.0)?)
}

/// `503 unavailable` unless the store keeps flows.
fn require_flows(app: &AppState) -> ApiResult<()> {
    if app.store.supports_flows() {
        Ok(())
    } else {
        Err(ApiError::unavailable(
            "this server's store does not support flows",
        ))
    }
}

/// Checks every node of `spec` against the server's own payload limit,
/// whatever the store is configured with; names the node's field.
fn check_nodes(app: &AppState, spec: &FlowSpec) -> ApiResult<()> {
    for (i, node) in spec.nodes.iter().enumerate() {
        node.params
            .validate(app.config.payload_bytes_max)
            .map_err(|e| match e {
                Error::InvalidArgument { field, message } => {
                    Error::invalid(format!("nodes[{i}].{field}"), message)
                }
                other => other,
            })?;
    }
    Ok(())
}

/// `POST /v1/flows`: `201` with a new flow, `200` with the one an
/// idempotency key already names.
pub(crate) async fn create(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<FlowRequest>,
) -> ApiResult<(StatusCode, Json<FlowView>)> {
    let spec = body.into_spec()?;
    spec.validate(app.config.payload_bytes_max)?;
    require_flows(&app)?;
    let created = app.store.flow_create(&spec).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(FlowView::from(&created.flow))))
}

/// `GET /v1/flows/{id}`.
pub(crate) async fn get_one(State(app): State<AppState>, raw: RawId) -> ApiResult<Json<FlowView>> {
    let id = flow_id(&raw)?;
    require_flows(&app)?;
    let flow = app.store.flow_get(&id).await?;
    Ok(Json(FlowView::from(&flow)))
}

/// Parses the list filters; every bad value is a `400` naming its parameter.
fn list_params(raw: Option<&str>) -> ApiResult<FlowListParams> {
    let query = QueryParams::parse(raw, &["state", "limit", "cursor"])?;
    let state = query
        .get("state")
        .map(|text| parse_flow_state("state", text))
        .transpose()?;
    let cursor = check_cursor(query.get("cursor"))?;
    let limit = query
        .int("limit", 1, i64::from(LIST_LIMIT_MAX))?
        .map_or(Ok(LIST_LIMIT_DEFAULT), u32::try_from)
        .map_err(|_| ApiError::invalid_field("limit", "out of range"))?;
    Ok(FlowListParams {
        state,
        limit,
        cursor,
    })
}

/// `GET /v1/flows?state=&limit=&cursor=`.
pub(crate) async fn list(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Page<FlowView>>> {
    let params = list_params(raw.as_deref())?;
    require_flows(&app)?;
    let page = app.store.flow_list(&params).await?;
    Ok(Json(Page {
        items: page.items.iter().map(FlowView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /v1/flows/{id}/wait?timeout_ms=`: the flow once it has ended, or as
/// it is when the timeout passes.
pub(crate) async fn wait(
    State(app): State<AppState>,
    raw: RawId,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<FlowView>> {
    let query = QueryParams::parse(query.as_deref(), &["timeout_ms"])?;
    let timeout_ms = query
        .int("timeout_ms", 0, WAIT_TIMEOUT_MS_MAX)?
        .unwrap_or(WAIT_TIMEOUT_MS_DEFAULT);
    let id = flow_id(&raw)?;
    require_flows(&app)?;
    let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
    let flow = wait_until_ended(&app, &id, timeout).await?;
    Ok(Json(FlowView::from(&flow)))
}

/// Reads the flow, then sleeps on `FlowEnded` events for it (re-reading
/// when one comes, or when a re-check is due) until it has ended or the
/// timeout passes; then answers with what it reads last.
async fn wait_until_ended(app: &AppState, id: &FlowId, timeout: Duration) -> ApiResult<Flow> {
    // Subscribe first: an end between the read and the sleep is not missed.
    let mut waiter = Waiter::new(app, timeout);
    let mut flow = app.store.flow_get(id).await?;
    while !flow.state.is_terminal() {
        let wake = waiter
            .next(|event| match event {
                StoreEvent::FlowEnded { id: ended, .. } if ended == id => Some(()),
                _ => None,
            })
            .await;
        flow = app.store.flow_get(id).await?;
        if matches!(wake, Wake::Deadline | Wake::Shutdown) {
            break;
        }
    }
    Ok(flow)
}

/// `POST /v1/flows/{id}/nodes`: adds nodes to a running flow; `409
/// conflict` once it has ended.
pub(crate) async fn add_nodes(
    State(app): State<AppState>,
    raw: RawId,
    JsonBody(body): JsonBody<AddNodesRequest>,
) -> ApiResult<Json<FlowView>> {
    let spec = body.into_spec()?;
    if spec.nodes.is_empty() {
        return Err(Error::invalid("nodes", "add at least one node").into());
    }
    // The graph is checked against the flow by the store; the nodes' own
    // fields can be checked here, against this server's payload limit.
    check_nodes(&app, &spec)?;
    let id = flow_id(&raw)?;
    require_flows(&app)?;
    let flow = app.store.flow_add_nodes(&id, &spec).await?;
    Ok(Json(FlowView::from(&flow)))
}

/// The body of a flow cancel: nothing yet, but unknown fields are refused
/// so a client relying on an option that does not exist hears about it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowCancelRequest {}

/// `POST /v1/flows/{id}/cancel`: the flow `cancelled`, every member that
/// had not ended `cancelled`; cancelling a cancelled flow again is `200`,
/// one that ended otherwise `409 conflict`.
pub(crate) async fn cancel(
    State(app): State<AppState>,
    raw: RawId,
    OptionalJsonBody(_body): OptionalJsonBody<FlowCancelRequest>,
) -> ApiResult<Json<FlowView>> {
    let id = flow_id(&raw)?;
    require_flows(&app)?;
    let flow = app.store.flow_cancel(&id).await?;
    Ok(Json(FlowView::from(&flow)))
}
