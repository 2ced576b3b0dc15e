//! [`HttpTransport`]: the HTTP contract (`shared/http-api.md`) over one
//! pooled `reqwest` client.
//!
//! Definitions: the base URL may carry a path prefix (`http://host/weft`);
//! routes are appended to it segment by segment, so ids are percent-encoded.
//! A non-2xx answer becomes a `weft_core::Error` through
//! `weft_api::error_from_body`; a body that is not the contract's error body
//! becomes an error named after the status.
//!
//! Invariants: one `reqwest::Client` per transport, so connections are
//! reused across calls, clones and tasks; every request has a timeout, and
//! long polls (`claim`, `wait`) get their wait on top of it; error bodies are
//! read up to `ERROR_BODY_BYTES_MAX` only.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_api::{
    AddNodesRequest, AttemptView, CancelRequest, ClaimRequest, ClaimResponse, CompleteRequest,
    ErrorBody, ExecutionSignalRequest, ExecutionView, FailRequest, FlowRequest, FlowView,
    HeartbeatRequest, HeartbeatResponse, Items, LaneView, Page, ReleaseRequest, SignalRequest,
    SignalResponse, SubmitBatchRequest, SubmitRequest, SubmittedView, SuspendRequest,
    SuspendResponse, TaskView, WAIT_TIMEOUT_MS_MAX,
};
use weft_core::{Error, Result};

use super::{FlowListQuery, FlowSubmission, ListQuery, Submission, Transport};

/// How long a connection attempt may take.
pub const HTTP_CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How long a request may take, not counting a long poll's own wait.
pub const HTTP_REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Idle connections kept per host; enough for one worker's heartbeats.
const POOL_IDLE_PER_HOST_MAX: usize = 64;
/// The most of an error body that is read.
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;

/// Talks to a Weft server over HTTP. Cheap to clone; clones and all calls
/// share one connection pool, so connections are reused.
///
/// Errors: a non-2xx answer becomes the `weft_core::Error` its body names
/// (`weft_api::error_from_body`), except `401`, which becomes
/// `invalid_argument` on the field `api_token`; no answer at all becomes
/// `unavailable` ("cannot reach the server at URL: …"). Long polls (`claim`,
/// `wait`) get their wait on top of the request timeout.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
    request_timeout: Duration,
}

/// Options of an [`HttpTransport`]; see [`HttpTransport::builder`].
#[derive(Clone, Debug)]
pub struct HttpTransportBuilder {
    base_url: String,
    token: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl HttpTransportBuilder {
    /// Sends `Authorization: Bearer TOKEN` with every request.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long a connection attempt may take; see
    /// [`HTTP_CONNECT_TIMEOUT_DEFAULT`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request may take beyond a long poll's own wait; see
    /// [`HTTP_REQUEST_TIMEOUT_DEFAULT`].
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Checks the URL and builds the transport.
    ///
    /// # Errors
    ///
    /// `invalid_argument` when the URL does not parse, is not `http://`, or
    /// the token is empty.
    pub fn build(self) -> Result<HttpTransport> {
        let base = Url::parse(&self.base_url).map_err(|e| {
            Error::invalid(
                "server",
                format!(
                    "{:?} is not a URL ({e}); use http://HOST:PORT",
                    self.base_url
                ),
            )
        })?;
        if base.scheme() != "http" {
            return Err(Error::invalid(
                "server",
                format!(
                    "{:?}: only http:// is supported; put TLS in a proxy in front of the server",
                    self.base_url
                ),
            ));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(Error::invalid(
                "server",
                format!("{:?} names no host; use http://HOST:PORT", self.base_url),
            ));
        }
        if self.token.as_deref() == Some("") {
            return Err(Error::invalid("api_token", "must not be empty"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST_MAX)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpTransport {
            base,
            token: self.token,
            http,
            request_timeout: self.request_timeout,
        })
    }
}

impl HttpTransport {
    /// A transport to the server at `base_url` (`http://127.0.0.1:7070`),
    /// without an API token.
    ///
    /// # Errors
    ///
    /// As [`HttpTransportBuilder::build`].
    pub fn new(base_url: &str) -> Result<Self> {
        Self::builder(base_url).build()
    }

    /// Options for a transport to the server at `base_url`.
    pub fn builder(base_url: &str) -> HttpTransportBuilder {
        HttpTransportBuilder {
            base_url: base_url.to_owned(),
            token: None,
            connect_timeout: HTTP_CONNECT_TIMEOUT_DEFAULT,
            request_timeout: HTTP_REQUEST_TIMEOUT_DEFAULT,
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of a route given as path segments.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url, extra_wait: Duration) -> RequestBuilder {
        let builder = self
            .http
            .request(method, url)
            .timeout(self.request_timeout + extra_wait);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request and decodes a 2xx body; `id` names the execution for
    /// `lease_lost` errors.
    async fn send<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
        id: Option<&str>,
    ) -> Result<(StatusCode, T)> {
        let response = builder.send().await.map_err(|e| self.send_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(error_from_response(response, id).await);
        }
        let url = response.url().clone();
        let body = response.json::<T>().await.map_err(|e| {
            if e.is_timeout() {
                self.send_error(&e)
            } else {
                Error::Internal(format!(
                    "{url} answered {status} with a body this client does not understand: {}",
                    chain(&e)
                ))
            }
        })?;
        Ok((status, body))
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url, extra_wait: Duration) -> Result<T> {
        let builder = self.request(Method::GET, url, extra_wait);
        Ok(self.send(builder, None).await?.1)
    }

    async fn post_json<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
        id: Option<&str>,
        extra_wait: Duration,
    ) -> Result<(StatusCode, T)> {
        let builder = self.request(Method::POST, url, extra_wait).json(body);
        self.send(builder, id).await
    }

    /// Why a request got no answer, naming the server.
    fn send_error(&self, e: &reqwest::Error) -> Error {
        let base = self.base.as_str().trim_end_matches('/');
        if e.is_connect() {
            Error::Unavailable(format!(
                "cannot reach the server at {base}: {}",
                root_cause(e)
            ))
        } else if e.is_timeout() {
            Error::Unavailable(format!("the server at {base} did not answer in time"))
        } else {
            Error::Unavailable(format!("request to {base} failed: {}", chain(e)))
        }
    }

    /// One `GET …/{id}/wait` of at most `timeout` on `collection`
    /// (`executions` or `flows`).
    async fn wait_once<T: DeserializeOwned>(
        &self,
        collection: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<T> {
        let mut url = self.url(&["v1", collection, id, "wait"]);
        url.query_pairs_mut()
            .append_pair("timeout_ms", &timeout.as_millis().to_string());
        let builder = self.request(Method::GET, url, timeout);
        Ok(self.send(builder, Some(id)).await?.1)
    }

    /// Waits on `collection`'s `wait` route until `ended` holds or `timeout`
    /// passes. The server waits at most `WAIT_TIMEOUT_MS_MAX` per call;
    /// longer waits are several calls.
    async fn wait_chunked<T: DeserializeOwned>(
        &self,
        collection: &str,
        id: &str,
        timeout: Duration,
        ended: impl Fn(&T) -> bool + Send,
    ) -> Result<T> {
        let chunk_max = Duration::from_millis(WAIT_TIMEOUT_MS_MAX.unsigned_abs());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = remaining.min(chunk_max);
            let view = self.wait_once(collection, id, chunk).await?;
            if ended(&view) || remaining <= chunk {
                return Ok(view);
            }
        }
    }
}

/// An error and its sources, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The innermost source of an error: for a refused connection, "Connection
/// refused (os error 111)" rather than the layers around it.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Reads at most `ERROR_BODY_BYTES_MAX` of a body; a broken body reads as
/// what arrived.
async fn read_bounded(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_BYTES_MAX - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_BYTES_MAX {
            break;
        }
    }
    body
}

/// The error a non-2xx response stands for.
async fn error_from_response(response: Response, id: Option<&str>) -> Error {
    let status = response.status();
    let url = response.url().clone();
    let body = read_bounded(response).await;
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(parsed) => error_from_parsed(status, &parsed, id),
        Err(_) => error_from_status(status, &url, &String::from_utf8_lossy(&body)),
    }
}

fn error_from_parsed(status: StatusCode, body: &ErrorBody, id: Option<&str>) -> Error {
    if status == StatusCode::UNAUTHORIZED || body.error.kind == "unauthorized" {
        return Error::invalid(
            "api_token",
            format!("the server refused the request: {}", body.error.message),
        );
    }
    match weft_api::error_from_body(status.as_u16(), body) {
        Error::LeaseLost { epoch, reason, .. } => Error::LeaseLost {
            execution_id: id.unwrap_or_default().to_owned(),
            epoch,
            reason,
        },
        other => other,
    }
}

/// For answers without the contract's error body (a proxy, a wrong URL).
fn error_from_status(status: StatusCode, url: &Url, body: &str) -> Error {
    let snippet: String = body.trim().chars().take(200).collect();
    match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
            Error::Unavailable(format!("{url} answered {status}: {snippet}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            bytes: 0,
            max_bytes: 0,
        },
        StatusCode::UNAUTHORIZED => Error::invalid(
            "api_token",
            format!("the server refused the request: {snippet}"),
        ),
        _ => Error::Internal(format!(
            "{url} answered {status} without a Weft error body (is this a Weft server?): {snippet}"
        )),
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn submit(&self, request: &SubmitRequest) -> Result<Submission> {
        let url = self.url(&["v1", "executions"]);
        let (status, execution) = self.post_json(url, request, None, Duration::ZERO).await?;
        Ok(Submission {
            execution,
            created: status == StatusCode::CREATED,
        })
    }

    async fn submit_many(&self, requests: &[SubmitRequest]) -> Result<Vec<Submission>> {
        let url = self.url(&["v1", "executions", "batch"]);
        let body = SubmitBatchRequest {
            executions: requests.to_vec(),
        };
        let (_, answers): (_, Items<SubmittedView>) =
            self.post_json(url, &body, None, Duration::ZERO).await?;
        Ok(answers
            .items
            .into_iter()
            .map(|s| Submission {
                execution: s.execution,
                created: s.created,
            })
            .collect())
    }

    async fn get(&self, id: &str) -> Result<ExecutionView> {
        let url = self.url(&["v1", "executions", id]);
        self.get_json(url, Duration::ZERO).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<ExecutionView>> {
        let mut url = self.url(&["v1", "executions"]);
        {
            let mut pairs = url.query_pairs_mut();
            let text = [
                ("lane", query.lane.as_deref()),
                ("state", query.state.map(weft_core::State::as_str)),
                ("kind", query.kind.as_deref()),
                ("flow_id", query.flow_id.as_deref()),
                ("cursor", query.cursor.as_deref()),
            ];
            for (name, value) in text {
                if let Some(value) = value {
                    pairs.append_pair(name, value);
                }
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
        }
        self.get_json(url, Duration::ZERO).await
    }

    async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<ExecutionView> {
        let url = self.url(&["v1", "executions", id, "cancel"]);
        let body = CancelRequest {
            reason: reason.map(str::to_owned),
        };
        Ok(self
            .post_json(url, &body, Some(id), Duration::ZERO)
            .await?
            .1)
    }

    async fn replay(&self, id: &str) -> Result<ExecutionView> {
        let url = self.url(&["v1", "executions", id, "replay"]);
        let body = serde_json::json!({});
        Ok(self
            .post_json(url, &body, Some(id), Duration::ZERO)
            .await?
            .1)
    }

    async fn wait(&self, id: &str, timeout: Duration) -> Result<ExecutionView> {
        self.wait_chunked("executions", id, timeout, |view: &ExecutionView| {
            view.state.is_terminal()
        })
        .await
    }

    async fn lanes(&self) -> Result<Vec<LaneView>> {
        let url = self.url(&["v1", "lanes"]);
        let items: Items<LaneView> = self.get_json(url, Duration::ZERO).await?;
        Ok(items.items)
    }

    async fn attempts(&self, id: &str) -> Result<Vec<AttemptView>> {
        let url = self.url(&["v1", "executions", id, "attempts"]);
        let items: Items<AttemptView> = self.get_json(url, Duration::ZERO).await?;
        Ok(items.items)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<TaskView>> {
        let url = self.url(&["v1", "claims"]);
        let wait = Duration::from_millis(request.wait_ms.max(0).unsigned_abs());
        let (_, response): (_, ClaimResponse) = self.post_json(url, request, None, wait).await?;
        Ok(response.tasks)
    }

    async fn heartbeat(&self, id: &str, request: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        let url = self.url(&["v1", "executions", id, "heartbeat"]);
        Ok(self
            .post_json(url, request, Some(id), Duration::ZERO)
            .await?
            .1)
    }

    async fn complete(&self, id: &str, request: &CompleteRequest) -> Result<ExecutionView> {
        let url = self.url(&["v1", "executions", id, "complete"]);
        Ok(self
            .post_json(url, request, Some(id), Duration::ZERO)
            .await?
            .1)
    }

    async fn fail(&self, id: &str, request: &FailRequest) -> Result<ExecutionView> {
        let url = self.url(&["v1", "executions", id, "fail"]);
        Ok(self
            .post_json(url, request, Some(id), Duration::ZERO)
            .await?
            .1)
    }

    async fn release(&self, id: &str, request: &ReleaseRequest) -> Result<ExecutionView> {
        let url = self.url(&["v1", "executions", id, "release"]);
        Ok(self
            .post_json(url, request, Some(id), Duration::ZERO)
            .await?
            .1)
    }

    fn describe(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    async fn suspend(&self, id: &str, request: &SuspendRequest) -> Result<SuspendResponse> {
        let url = self.url(&["v1", "executions", id, "suspend"]);
        Ok(self
            .post_json(url, request, Some(id), Duration::ZERO)
            .await?
            .1)
    }

    async fn signal(&self, request: &SignalRequest) -> Result<ExecutionView> {
        let url = self.url(&["v1", "signals"]);
        let (_, answer): (_, SignalResponse) =
            self.post_json(url, request, None, Duration::ZERO).await?;
        Ok(answer.execution)
    }

    async fn signal_execution(
        &self,
        id: &str,
        request: &ExecutionSignalRequest,
    ) -> Result<ExecutionView> {
        let url = self.url(&["v1", "executions", id, "signals"]);
        let (_, answer): (_, SignalResponse) = self
            .post_json(url, request, Some(id), Duration::ZERO)
            .await?;
        Ok(answer.execution)
    }

    async fn flow_create(&self, request: &FlowRequest) -> Result<FlowSubmission> {
        let url = self.url(&["v1", "flows"]);
        let (status, flow) = self.post_json(url, request, None, Duration::ZERO).await?;
        Ok(FlowSubmission {
            flow,
            created: status == StatusCode::CREATED,
        })
    }

    async fn flow_get(&self, id: &str) -> Result<FlowView> {
        let url = self.url(&["v1", "flows", id]);
        self.get_json(url, Duration::ZERO).await
    }

    async fn flow_list(&self, query: &FlowListQuery) -> Result<Page<FlowView>> {
        let mut url = self.url(&["v1", "flows"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(state) = query.state {
                pairs.append_pair("state", state.as_str());
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = &query.cursor {
                pairs.append_pair("cursor", cursor);
            }
        }
        self.get_json(url, Duration::ZERO).await
    }

    async fn flow_wait(&self, id: &str, timeout: Duration) -> Result<FlowView> {
        self.wait_chunked("flows", id, timeout, |view: &FlowView| {
            view.state.is_terminal()
        })
        .await
    }

    async fn flow_add_nodes(&self, id: &str, request: &AddNodesRequest) -> Result<FlowView> {
        let url = self.url(&["v1", "flows", id, "nodes"]);
        Ok(self.post_json(url, request, None, Duration::ZERO).await?.1)
    }

    async fn flow_cancel(&self, id: &str) -> Result<FlowView> {
        let url = self.url(&["v1", "flows", id, "cancel"]);
        let body = serde_json::json!({});
        Ok(self.post_json(url, &body, None, Duration::ZERO).await?.1)
    }
}

#[cfg(test)]
mod tests {
    //! URL handling and error mapping, without a server.
    use super::*;

    #[test]
    fn routes_append_to_the_base_path_and_encode_ids() {
        let t = HttpTransport::new("http://127.0.0.1:7070/weft/").unwrap();
        let url = t.url(&["v1", "executions", "a/b c"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7070/weft/v1/executions/a%2Fb%20c"
        );
        let t = HttpTransport::new("http://127.0.0.1:7070").unwrap();
        assert_eq!(
            t.url(&["v1", "lanes"]).as_str(),
            "http://127.0.0.1:7070/v1/lanes"
        );
    }

    #[test]
    fn bad_urls_say_what_to_use() {
        for bad in ["127.0.0.1:7070", "https://x", "not a url", ""] {
            match HttpTransport::new(bad) {
                Err(Error::InvalidArgument { field, message }) => {
                    assert_eq!(field, "server");
                    assert!(message.contains("http"), "{message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_bodies_map_to_core_errors() {
        let body = |kind: &str| ErrorBody {
            error: weft_api::ErrorDetail {
                kind: kind.into(),
                message: "m".into(),
            },
        };
        let e = error_from_parsed(StatusCode::CONFLICT, &body("lease_lost"), Some("ex_1"));
        assert!(matches!(e, Error::LeaseLost { ref execution_id, .. } if execution_id == "ex_1"));
        let e = error_from_parsed(StatusCode::UNAUTHORIZED, &body("unauthorized"), None);
        assert!(matches!(e, Error::InvalidArgument { ref field, .. } if field == "api_token"));
        let e = error_from_parsed(StatusCode::NOT_FOUND, &body("not_found"), None);
        assert!(matches!(e, Error::NotFound { .. }));
        let url = Url::parse("http://x/").unwrap();
        let e = error_from_status(StatusCode::BAD_GATEWAY, &url, "<html>");
        assert!(e.retryable());
    }
}
