//! [`Client`]: submit, inspect, cancel, replay and wait for executions, and
//! create, inspect, extend, cancel and wait for flows, over any
//! [`Transport`]; and [`Submit`], a builder for submit requests.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use weft_api::{
    AddNodesRequest, AttemptView, ExecutionSignalRequest, ExecutionView, FlowRequest, FlowView,
    LaneView, Page, SignalRequest, SubmitRequest, SuspendRequest, SuspendResponse,
};
use weft_core::{Backoff, Result, Store};

use crate::transport::{
    DirectTransport, FlowListQuery, FlowSubmission, HttpTransport, ListQuery, SharedTransport,
    Submission,
};

/// A handle on Weft for submitters and operators. Cheap to clone; clones
/// share the transport (and so, over HTTP, one connection pool).
#[derive(Clone)]
pub struct Client {
    transport: SharedTransport,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport.describe())
            .finish()
    }
}

impl Client {
    /// A client over `transport`.
    pub fn new(transport: impl Into<SharedTransport>) -> Self {
        Self {
            transport: transport.into(),
        }
    }

    /// A client of the server at `base_url`, without an API token; use
    /// [`HttpTransport::builder`] for one.
    ///
    /// # Errors
    ///
    /// `invalid_argument` when `base_url` is not an `http://` URL.
    pub fn http(base_url: &str) -> Result<Self> {
        Ok(Self::new(HttpTransport::new(base_url)?))
    }

    /// A client of a store in this process.
    pub fn direct(store: Arc<dyn Store>) -> Self {
        Self::new(DirectTransport::new(store))
    }

    /// The transport, to share with a [`crate::Worker`].
    pub fn transport(&self) -> &SharedTransport {
        &self.transport
    }

    /// Submits an execution and returns it (an existing one when its
    /// idempotency key was seen before).
    ///
    /// # Errors
    ///
    /// `invalid_argument` naming the field at fault, `payload_too_large`,
    /// or `unavailable` when Weft cannot be reached.
    pub async fn submit(&self, request: impl Into<SubmitRequest>) -> Result<ExecutionView> {
        Ok(self.submit_detailed(request).await?.execution)
    }

    /// As [`Client::submit`], also saying whether the execution is new.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    pub async fn submit_detailed(&self, request: impl Into<SubmitRequest>) -> Result<Submission> {
        self.transport.submit(&request.into()).await
    }

    /// Submits up to 500 executions in one call; the answers come in
    /// request order, each saying whether it is new.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`]; an item's error names it
    /// (`executions[3].kind`), and then nothing was submitted. Over HTTP the
    /// whole batch must also fit the server's body limit.
    pub async fn submit_many<R: Into<SubmitRequest>>(
        &self,
        requests: impl IntoIterator<Item = R>,
    ) -> Result<Vec<Submission>> {
        let requests: Vec<SubmitRequest> = requests.into_iter().map(Into::into).collect();
        self.transport.submit_many(&requests).await
    }

    /// One execution.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown id.
    pub async fn get(&self, id: &str) -> Result<ExecutionView> {
        self.transport.get(id).await
    }

    /// A page of executions; follow `next_cursor` for the next one.
    ///
    /// # Errors
    ///
    /// `invalid_argument` for a limit out of range or a bad cursor.
    pub async fn list(&self, query: &ListQuery) -> Result<Page<ExecutionView>> {
        self.transport.list(query).await
    }

    /// Cancels a non-terminal execution; cancelling a cancelled one again
    /// succeeds.
    ///
    /// # Errors
    ///
    /// `conflict` when it already ended otherwise; `not_found`.
    pub async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<ExecutionView> {
        self.transport.cancel(id, reason).await
    }

    /// Moves a terminal execution back to `waiting`.
    ///
    /// # Errors
    ///
    /// `conflict` unless it is terminal; `not_found`.
    pub async fn replay(&self, id: &str) -> Result<ExecutionView> {
        self.transport.replay(id).await
    }

    /// The execution once it is terminal, or as it stands after `timeout`;
    /// check `state.is_terminal()` to tell which.
    ///
    /// # Errors
    ///
    /// `not_found`, or `unavailable` when Weft cannot be reached.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<ExecutionView> {
        self.transport.wait(id, timeout).await
    }

    /// Non-terminal counts per lane.
    ///
    /// # Errors
    ///
    /// `unavailable` when Weft cannot be reached.
    pub async fn lanes(&self) -> Result<Vec<LaneView>> {
        self.transport.lanes().await
    }

    /// The attempts of one execution, oldest first.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown id.
    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptView>> {
        self.transport.attempts(id).await
    }

    /// Delivers the signal a waitpoint token grants, with `payload`. Over
    /// HTTP this needs no API token: the waitpoint token is the credential.
    ///
    /// # Errors
    ///
    /// `invalid_token` for a forged, altered, expired or used-up token;
    /// `payload_too_large`.
    pub async fn signal(&self, token: &str, payload: Value) -> Result<ExecutionView> {
        let request = SignalRequest {
            token: token.to_owned(),
            payload,
        };
        self.transport.signal(&request).await
    }

    /// Signals the waitpoint `waitpoint` of an execution (an operator's
    /// signal): it resumes the execution when that satisfies its
    /// suspension, and is buffered when the execution has not suspended on
    /// that waitpoint yet.
    ///
    /// # Errors
    ///
    /// `conflict` when the execution has ended or the waitpoint was already
    /// signalled; `not_found`; `invalid_argument` for a bad name.
    pub async fn signal_execution(
        &self,
        id: &str,
        waitpoint: &str,
        payload: Value,
    ) -> Result<ExecutionView> {
        let request = ExecutionSignalRequest {
            waitpoint: waitpoint.to_owned(),
            payload,
        };
        self.transport.signal_execution(id, &request).await
    }

    /// Suspends a claimed task's execution under its lease; a
    /// [`crate::Worker`]'s handlers use [`crate::TaskContext::suspend`]
    /// instead.
    ///
    /// # Errors
    ///
    /// `invalid_argument` naming the field at fault; `lease_lost`.
    pub async fn suspend(&self, id: &str, request: &SuspendRequest) -> Result<SuspendResponse> {
        self.transport.suspend(id, request).await
    }

    /// Creates a flow and all its members in one step, and returns it (an
    /// existing one when its idempotency key was seen before). Members with
    /// no upstream start `waiting`, the rest `blocked`.
    ///
    /// # Errors
    ///
    /// `invalid_argument` naming the field at fault (a cycle, an edge to an
    /// unknown key, a duplicate key, a bad join); `unavailable` when the
    /// store does not support flows or Weft cannot be reached.
    pub async fn flow_create(&self, request: FlowRequest) -> Result<FlowView> {
        Ok(self.flow_create_detailed(request).await?.flow)
    }

    /// As [`Client::flow_create`], also saying whether the flow is new.
    ///
    /// # Errors
    ///
    /// As [`Client::flow_create`].
    pub async fn flow_create_detailed(&self, request: FlowRequest) -> Result<FlowSubmission> {
        self.transport.flow_create(&request).await
    }

    /// One flow, with its summary, nodes and edges.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown id.
    pub async fn flow_get(&self, id: &str) -> Result<FlowView> {
        self.transport.flow_get(id).await
    }

    /// A page of flows; follow `next_cursor` for the next one.
    ///
    /// # Errors
    ///
    /// `invalid_argument` for a limit out of range or a bad cursor.
    pub async fn flow_list(&self, query: &FlowListQuery) -> Result<Page<FlowView>> {
        self.transport.flow_list(query).await
    }

    /// The flow once it has ended, or as it stands after `timeout`; check
    /// `state.is_terminal()` to tell which.
    ///
    /// # Errors
    ///
    /// `not_found`, or `unavailable` when Weft cannot be reached.
    pub async fn flow_wait(&self, id: &str, timeout: Duration) -> Result<FlowView> {
        self.transport.flow_wait(id, timeout).await
    }

    /// Adds nodes to a running flow; the new edges end at new nodes and may
    /// start at existing ones.
    ///
    /// # Errors
    ///
    /// `invalid_argument` naming the field at fault; `conflict` once the
    /// flow has ended; `not_found`.
    pub async fn flow_add_nodes(&self, id: &str, request: AddNodesRequest) -> Result<FlowView> {
        self.transport.flow_add_nodes(id, &request).await
    }

    /// Cancels a flow: every member that has not ended is `cancelled`, and
    /// so is the flow. Cancelling a cancelled flow again succeeds.
    ///
    /// # Errors
    ///
    /// `conflict` when it already ended otherwise; `not_found`.
    pub async fn flow_cancel(&self, id: &str) -> Result<FlowView> {
        self.transport.flow_cancel(id).await
    }
}

/// Builds a [`SubmitRequest`]: `Submit::new("email.send").payload(json).lane("mail")`.
/// Anything left unset takes the contract's default; the store checks the
/// bounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Submit {
    request: SubmitRequest,
}

fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Submit {
    /// A submit of `kind` with a `null` payload.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            request: SubmitRequest {
                kind: kind.into(),
                ..SubmitRequest::default()
            },
        }
    }

    /// The input.
    #[must_use]
    pub fn payload(mut self, payload: impl Into<Value>) -> Self {
        self.request.payload = payload.into();
        self
    }

    /// The lane (queue); `default` when unset.
    #[must_use]
    pub fn lane(mut self, lane: impl Into<String>) -> Self {
        self.request.lane = Some(lane.into());
        self
    }

    /// −1000 ..= 1000; higher is claimed first.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.request.priority = Some(priority);
        self
    }

    /// Waits this long before the first attempt.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.request.delay_ms = Some(millis_of(delay));
        self
    }

    /// Runs the first attempt at this RFC 3339 time.
    #[must_use]
    pub fn run_at(mut self, rfc3339: impl Into<String>) -> Self {
        self.request.run_at = Some(rfc3339.into());
        self
    }

    /// Attempts in total, the first included (default 3).
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.request.max_attempts = Some(max_attempts);
        self
    }

    /// Delays between attempts.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.request.backoff = Some(backoff);
        self
    }

    /// Limit per attempt.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout_ms = Some(millis_of(timeout));
        self
    }

    /// Limit from submit to the end; reaching it makes the execution `expired`.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.request.deadline_ms = Some(millis_of(deadline));
        self
    }

    /// A capability a worker must have; repeat for several.
    #[must_use]
    pub fn requires(mut self, capability: impl Into<String>) -> Self {
        self.request.requires.push(capability.into());
        self
    }

    /// Submitting the same key again returns the existing execution.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.request.idempotency_key = Some(key.into());
        self
    }

    /// A free label.
    #[must_use]
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.tags.insert(key.into(), value.into());
        self
    }

    /// The request as built.
    pub fn into_request(self) -> SubmitRequest {
        self.request
    }
}

impl From<Submit> for SubmitRequest {
    fn from(submit: Submit) -> Self {
        submit.into_request()
    }
}
