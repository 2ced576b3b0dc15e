//! How the SDK reaches Weft: the [`Transport`] trait and its two
//! implementations, [`HttpTransport`] (a `weft server` over HTTP) and
//! [`DirectTransport`] (a [`weft_core::Store`] linked into this process).
//!
//! Definitions: every method speaks the HTTP contract's wire types from
//! `weft_api` (flows included: `FlowRequest`, `FlowView`), whatever the
//! transport, so a `Client` or `Worker` behaves the same over either.
//! Errors are `weft_core::Error`: the HTTP transport rebuilds them from the
//! server's error body, the direct transport passes the store's through.
//!
//! Invariants: `claim` waits at most `wait_ms` for a first task, and `wait`
//! and `flow_wait` at most their timeout (plus one round trip); none polls
//! faster than the transport's fallback interval. Dropping a `claim` future
//! never strands a task the store granted meanwhile: the direct transport
//! releases it, and over HTTP the server does (except for an answer already
//! on its way when the connection closed, whose lease lapses).

mod direct;
mod http;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weft_api::{
    AddNodesRequest, AttemptView, ClaimRequest, CompleteRequest, ExecutionSignalRequest,
    ExecutionView, FailRequest, FlowRequest, FlowView, HeartbeatRequest, HeartbeatResponse,
    LaneView, Page, ReleaseRequest, SignalRequest, SubmitRequest, SuspendRequest, SuspendResponse,
    TaskView,
};
use weft_core::flow::FlowState;
use weft_core::{Error, Result, State};

pub use direct::{DirectTransport, DIRECT_POLL_INTERVAL_DEFAULT};
pub use http::{
    HttpTransport, HttpTransportBuilder, HTTP_CONNECT_TIMEOUT_DEFAULT, HTTP_REQUEST_TIMEOUT_DEFAULT,
};

/// What a submit returns: the execution, and whether it is new.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    /// The execution, new or found by its idempotency key.
    pub execution: ExecutionView,
    /// `false` when the idempotency key was seen before (HTTP `200`, not `201`).
    pub created: bool,
}

/// Filters and paging for [`Transport::list`]; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only this lane.
    pub lane: Option<String>,
    /// Only this state.
    pub state: Option<State>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only members of this flow.
    pub flow_id: Option<String>,
    /// Page size, 1 ..= 1000; [`LIST_LIMIT_DEFAULT`] when `None`.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The page size of a list that names none.
pub const LIST_LIMIT_DEFAULT: u32 = 100;

/// What a flow create returns: the flow, and whether it is new.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSubmission {
    /// The flow, new or found by its idempotency key.
    pub flow: FlowView,
    /// `false` when the idempotency key was seen before (HTTP `200`, not `201`).
    pub created: bool,
}

/// Filters and paging for [`Transport::flow_list`]; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowListQuery {
    /// Only flows in this state.
    pub state: Option<FlowState>,
    /// Page size, 1 ..= 1000; [`LIST_LIMIT_DEFAULT`] when `None`.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// What a transport without flows answers to the flow methods.
fn flows_unsupported(transport: &(impl Transport + ?Sized)) -> Error {
    Error::Unavailable(format!(
        "the transport {} does not support flows",
        transport.describe()
    ))
}

/// What a transport without waitpoints answers to suspend and signal.
fn signals_unsupported(transport: &(impl Transport + ?Sized)) -> Error {
    Error::Unavailable(format!(
        "the transport {} does not support suspend and signal",
        transport.describe()
    ))
}

/// One way of talking to Weft. Implemented by [`HttpTransport`] and
/// [`DirectTransport`]; share one behind an `Arc` between clients and
/// workers.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Submits an execution (`POST /v1/executions`).
    async fn submit(&self, request: &SubmitRequest) -> Result<Submission>;

    /// Submits several executions in one call (`POST
    /// /v1/executions/batch`): every item is checked first, one bad item
    /// refuses them all. The answers come in request order. The default
    /// submits one after another, stopping at the first refusal.
    async fn submit_many(&self, requests: &[SubmitRequest]) -> Result<Vec<Submission>> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.submit(request).await?);
        }
        Ok(out)
    }

    /// One execution (`GET /v1/executions/{id}`).
    async fn get(&self, id: &str) -> Result<ExecutionView>;

    /// A page of executions (`GET /v1/executions`).
    async fn list(&self, query: &ListQuery) -> Result<Page<ExecutionView>>;

    /// Cancels an execution (`POST /v1/executions/{id}/cancel`).
    async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<ExecutionView>;

    /// Moves a terminal execution back to `waiting`.
    async fn replay(&self, id: &str) -> Result<ExecutionView>;

    /// The execution once it is terminal, or as it stands when `timeout`
    /// passes first.
    async fn wait(&self, id: &str, timeout: Duration) -> Result<ExecutionView>;

    /// Non-terminal counts per lane (`GET /v1/lanes`).
    async fn lanes(&self) -> Result<Vec<LaneView>>;

    /// The attempts of one execution, oldest first.
    async fn attempts(&self, id: &str) -> Result<Vec<AttemptView>>;

    /// Claims up to `request.max` tasks, waiting up to `request.wait_ms` for
    /// the first one. Dropping the future before it answers gives back, by
    /// release, whatever the store granted in the meantime (see the module
    /// docs for the one exception over HTTP).
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<TaskView>>;

    /// Extends a lease; says whether a cancel was requested.
    async fn heartbeat(&self, id: &str, request: &HeartbeatRequest) -> Result<HeartbeatResponse>;

    /// Ends the attempt with a result.
    async fn complete(&self, id: &str, request: &CompleteRequest) -> Result<ExecutionView>;

    /// Ends the attempt with an error.
    async fn fail(&self, id: &str, request: &FailRequest) -> Result<ExecutionView>;

    /// `complete` for a caller that needs no copy of the execution back (a
    /// worker): a transport may skip fetching and decoding it.
    async fn complete_quietly(&self, id: &str, request: &CompleteRequest) -> Result<()> {
        self.complete(id, request).await.map(drop)
    }

    /// `complete_quietly` for several attempts at once: each item's outcome
    /// its own, in order. A transport may write them in fewer calls (the
    /// direct one: one per partition); the default writes one after another.
    async fn complete_many_quietly(
        &self,
        items: &[(String, CompleteRequest)],
    ) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(items.len());
        for (id, request) in items {
            out.push(self.complete_quietly(id, request).await);
        }
        Ok(out)
    }

    /// `fail` for a caller that needs no copy of the execution back.
    async fn fail_quietly(&self, id: &str, request: &FailRequest) -> Result<()> {
        self.fail(id, request).await.map(drop)
    }

    /// Hands the attempt back unfinished (`POST /v1/executions/{id}/release`,
    /// an addition to the contract): the execution is `waiting` again at
    /// once, and nothing counts against its attempts.
    async fn release(&self, id: &str, request: &ReleaseRequest) -> Result<ExecutionView>;

    /// Where this transport points, for messages (`http://…`, `direct store`).
    fn describe(&self) -> String;

    /// Creates a flow and its members (`POST /v1/flows`). The flow methods
    /// default to `unavailable`, so transports written before flows keep
    /// compiling; both of this crate's transports implement them.
    async fn flow_create(&self, _request: &FlowRequest) -> Result<FlowSubmission> {
        Err(flows_unsupported(self))
    }

    /// One flow (`GET /v1/flows/{id}`).
    async fn flow_get(&self, _id: &str) -> Result<FlowView> {
        Err(flows_unsupported(self))
    }

    /// A page of flows (`GET /v1/flows`).
    async fn flow_list(&self, _query: &FlowListQuery) -> Result<Page<FlowView>> {
        Err(flows_unsupported(self))
    }

    /// The flow once it has ended, or as it stands when `timeout` passes
    /// first (`GET /v1/flows/{id}/wait`).
    async fn flow_wait(&self, _id: &str, _timeout: Duration) -> Result<FlowView> {
        Err(flows_unsupported(self))
    }

    /// Adds nodes to a running flow (`POST /v1/flows/{id}/nodes`).
    async fn flow_add_nodes(&self, _id: &str, _request: &AddNodesRequest) -> Result<FlowView> {
        Err(flows_unsupported(self))
    }

    /// Cancels a flow and every member that has not ended
    /// (`POST /v1/flows/{id}/cancel`).
    async fn flow_cancel(&self, _id: &str) -> Result<FlowView> {
        Err(flows_unsupported(self))
    }

    /// Suspends the attempt on waitpoints and answers one token per
    /// waitpoint (`POST /v1/executions/{id}/suspend`). Like the flow
    /// methods, the waitpoint methods default to `unavailable`; both of
    /// this crate's transports implement them.
    async fn suspend(&self, _id: &str, _request: &SuspendRequest) -> Result<SuspendResponse> {
        Err(signals_unsupported(self))
    }

    /// Delivers the signal a waitpoint token grants (`POST /v1/signals`).
    async fn signal(&self, _request: &SignalRequest) -> Result<ExecutionView> {
        Err(signals_unsupported(self))
    }

    /// Signals a waitpoint of an execution by name, buffered when it has not
    /// suspended on it yet (`POST /v1/executions/{id}/signals`).
    async fn signal_execution(
        &self,
        _id: &str,
        _request: &ExecutionSignalRequest,
    ) -> Result<ExecutionView> {
        Err(signals_unsupported(self))
    }
}

/// A transport shared by clients and workers.
pub type SharedTransport = Arc<dyn Transport>;

impl From<HttpTransport> for SharedTransport {
    fn from(transport: HttpTransport) -> Self {
        Arc::new(transport)
    }
}

impl From<DirectTransport> for SharedTransport {
    fn from(transport: DirectTransport) -> Self {
        Arc::new(transport)
    }
}
