//! Weft's Rust SDK: a [`Client`] to submit, inspect, cancel and wait for
//! executions and flows ([`Client::flow_create`]), and a [`Worker`] runtime
//! that claims tasks, runs async handlers by kind, heartbeats, and reports
//! results (a flow member's handler reads its upstreams' results with
//! [`TaskContext::inputs`]). Both run over a
//! [`Transport`]: [`HttpTransport`] for a `weft server` (or `weft dev`), or
//! [`DirectTransport`] for a [`weft_core::Store`] linked into the process.
//!
//! ```no_run
//! use weft_sdk::{Client, Submit, Worker, WorkerError};
//!
//! # async fn demo() -> weft_core::Result<()> {
//! let client = Client::http("http://127.0.0.1:7070")?;
//! let worker = Worker::builder(client.transport().clone())
//!     .lanes(["default"])
//!     .concurrency(4)
//!     .handler("email.send", |ctx| async move {
//!         let to: String = ctx.payload_as()?;
//!         if to.is_empty() {
//!             return Err(WorkerError::permanent("no recipient"));
//!         }
//!         Ok(serde_json::json!({ "sent_to": to }))
//!     })
//!     .build()?;
//! let running = worker.start();
//!
//! let execution = client.submit(Submit::new("email.send").payload("a@example.com")).await?;
//! let done = client.wait(&execution.id, std::time::Duration::from_secs(10)).await?;
//! println!("{:?}: {:?}", done.state, done.result);
//! running.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! - **Transports speak the wire types** of `weft_api`, so the client and
//!   the worker behave the same in process and over HTTP; errors are
//!   `weft_core::Error` either way (over HTTP rebuilt from the error body;
//!   a `401` becomes `invalid_argument` on the field `api_token`).
//! - **Claims wait instead of polling**: over HTTP a claim is a long poll
//!   (`wait_ms`); in process it sleeps on the store's `Ready` events, with a
//!   re-read every [`DIRECT_POLL_INTERVAL_DEFAULT`] in case an event was
//!   lost. An idle worker picks up new work within about one round trip.
//! - **One heartbeat loop per worker** renews every running task's lease
//!   each third of the lease, and raises the task's cancellation signal
//!   ([`TaskContext::cancelled`]) on a cancel or a lost lease.
//! - **Suspend** ([`TaskContext::suspend`]) either suspends the execution,
//!   ending the attempt (the worker stops heartbeating it and reports
//!   nothing, whatever the handler returns next) and answering one token per
//!   waitpoint, or, when signals buffered earlier satisfy it, lets the
//!   handler carry on with them ([`SuspendOutcome`]). The resumed run reads
//!   the signals with [`TaskContext::signal`]. [`DirectTransport`] mints
//!   tokens with its own keyring ([`DirectTransport::with_keyring`]).
//! - **Shutdown** stops claiming, waits a grace period for running
//!   handlers, then aborts the rest and releases their tasks (back in the
//!   queue at once, no attempt used), as it releases any task a claim hands
//!   it after shutdown began; see [`WorkerHandle::shutdown`].

#![warn(missing_docs)]

mod client;
mod transport;
mod worker;

pub use client::{Client, Submit};
pub use transport::{
    DirectTransport, FlowListQuery, FlowSubmission, HttpTransport, HttpTransportBuilder, ListQuery,
    SharedTransport, Submission, Transport, DIRECT_POLL_INTERVAL_DEFAULT,
    HTTP_CONNECT_TIMEOUT_DEFAULT, HTTP_REQUEST_TIMEOUT_DEFAULT, LIST_LIMIT_DEFAULT,
};
pub use weft_api::{
    AddNodesRequest, AttemptView, ExecutionView, FlowEdgeView, FlowNodeRequest, FlowNodeView,
    FlowRequest, FlowSummary, FlowView, JoinRequest, LaneView, Page, SubmitRequest, TaskView,
};
pub use weft_api::{SuspendRequest, SuspendResponse, WaitpointTokenView};
pub use weft_core::waitpoint::{OnTimeout, ResumeWhen, SuspendSpec, WaitpointSpec};
pub use worker::{
    CancelReason, SuspendOutcome, TaskContext, Worker, WorkerBuilder, WorkerError, WorkerHandle,
    WorkerMetrics, CLAIM_WAIT_DEFAULT, CONCURRENCY_DEFAULT, CONCURRENCY_MAX, LEASE_DEFAULT,
    SHUTDOWN_GRACE_DEFAULT,
};
