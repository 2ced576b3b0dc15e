//! Operations routes: health, metrics, lanes, the dashboard, and the JSON
//! answer for paths and methods without a route.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use weft_api::{Health, Items, LaneView};
use weft_core::flow::{Flow, FlowState};
use weft_core::FlowListParams;

use crate::app::AppState;
use crate::dashboard::{self, DASHBOARD_FLOWS_MAX};
use crate::error::{ApiError, ApiResult};
use crate::extract::discard_body;

/// `GET /healthz`: `200 {"status": "ok"}` when the store tells its time
/// within the health timeout, `503 unavailable` otherwise.
pub(crate) async fn healthz(State(app): State<AppState>) -> ApiResult<Json<Health>> {
    match tokio::time::timeout(app.config.health_timeout, app.store.now_ms()).await {
        Ok(Ok(_)) => Ok(Json(Health {
            status: "ok".to_owned(),
        })),
        Ok(Err(error)) => Err(ApiError::unavailable(format!("store: {error}"))),
        Err(_) => Err(ApiError::unavailable(format!(
            "store did not answer within {} ms",
            app.config.health_timeout.as_millis()
        ))),
    }
}

/// `GET /v1/lanes`: non-terminal counts per lane.
pub(crate) async fn lanes(State(app): State<AppState>) -> ApiResult<Json<Items<LaneView>>> {
    let items = app.store.lane_depths().await?;
    Ok(Json(Items { items }))
}

/// `GET /metrics`: Prometheus text. A store that cannot list lanes makes
/// `weft_store_up 0`, not a failed scrape.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    let lanes = app.store.lane_depths().await.ok();
    let engine = app.engine_metrics.as_ref().and_then(|source| source());
    let text = crate::metrics::render(&app.http, engine.as_ref(), lanes.as_deref());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /`: the dashboard, rendered on the server; refreshes itself.
pub(crate) async fn dashboard(State(app): State<AppState>) -> Response {
    let lanes = app.store.lane_depths().await;
    let engine = app.engine_metrics.as_ref().and_then(|source| source());
    let flows = if app.store.supports_flows() {
        Some(live_flows(&app).await.map_err(|e| e.to_string()))
    } else {
        None
    };
    let page = dashboard::render(
        lanes.as_deref().map_err(ToString::to_string),
        flows.as_ref().map(|f| f.as_deref().map_err(Clone::clone)),
        engine.as_ref(),
        app.config.dashboard_refresh_secs,
    );
    let status = if lanes.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Html(page)).into_response()
}

/// Up to `DASHBOARD_FLOWS_MAX` flows that have not ended, newest first:
/// a page of `running` ones and a page of `blocked` ones (the store lists in
/// id order, which is by partition before age, so this is a sample of the
/// recent ones when there are more).
async fn live_flows(app: &AppState) -> weft_core::Result<Vec<Flow>> {
    let mut flows = Vec::new();
    for state in [FlowState::Running, FlowState::Blocked] {
        let params = FlowListParams {
            state: Some(state),
            limit: DASHBOARD_FLOWS_MAX,
            cursor: None,
        };
        flows.extend(app.store.flow_list(&params).await?.items);
    }
    flows.sort_by_key(|f| std::cmp::Reverse(f.created_at_ms));
    flows.truncate(usize::try_from(DASHBOARD_FLOWS_MAX).unwrap_or(usize::MAX));
    Ok(flows)
}

/// Any path or method without a route: `404 not_found`, in JSON.
pub(crate) async fn not_found(State(app): State<AppState>, req: Request) -> ApiError {
    let (parts, body) = req.into_parts();
    discard_body(body, app.config.body_bytes_max).await;
    ApiError::not_found(format!(
        "no route for {} {}",
        parts.method,
        parts.uri.path()
    ))
}
