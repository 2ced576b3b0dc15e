//! Weft's HTTP wire types, exactly as `shared/http-api.md` fixes them: request
//! bodies (which refuse unknown fields, so a typo is a 400 rather than a
//! silently ignored option), response bodies, the error body and its status
//! codes, and RFC 3339 times. Shared by `weft-server` and every Rust client.
//! Flows have their own module: [`FlowRequest`], [`AddNodesRequest`] and
//! [`FlowView`]. Suspend and signal too: [`SuspendRequest`],
//! [`SignalRequest`], [`ExecutionSignalRequest`] and the execution's
//! [`SuspensionView`].
//!
//! ```
//! use weft_api::{time, SubmitRequest};
//!
//! let body = r#"{"kind": "email.send", "payload": {"to": "a@example.com"}, "delay_ms": 500}"#;
//! let request: SubmitRequest = serde_json::from_str(body).unwrap();
//! let params = request.into_params().unwrap();
//! assert_eq!(params.delay_ms, Some(500));
//! assert_eq!(time::format_ms(0), "1970-01-01T00:00:00.000Z");
//!
//! let flow = r#"{"lane": "etl", "nodes": [{"key": "a", "kind": "fetch"},
//!                                         {"key": "b", "kind": "load"}],
//!               "edges": [{"from": "a", "to": "b"}]}"#;
//! let spec = serde_json::from_str::<weft_api::FlowRequest>(flow).unwrap().into_spec().unwrap();
//! assert_eq!(spec.nodes[1].params.lane.as_deref(), Some("etl"));
//! ```

#![warn(missing_docs)]

mod flow;
pub mod time;
mod waitpoint;

pub use crate::flow::{
    parse_flow_state, AddNodesRequest, FlowEdgeView, FlowNodeRequest, FlowNodeView, FlowRequest,
    FlowSummary, FlowView, JoinRequest,
};
pub use crate::waitpoint::{
    random_signing_key, ExecutionSignalRequest, SignalRequest, SignalResponse, SuspendRequest,
    SuspendResponse, SuspensionView, WaitpointRequest, WaitpointTokenView, WaitpointView,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_core::{
    Attempt, AttemptState, Backoff, Error, Execution, LaneDepth, LeaseEpoch, State, SubmitParams,
    Task,
};

/// The lease duration a claim gets when it names none.
pub const CLAIM_LEASE_MS_DEFAULT: i64 = weft_core::LEASE_MS_DEFAULT;
/// The longest a claim may wait for work.
pub const CLAIM_WAIT_MS_MAX: i64 = 60_000;
/// How long `wait` waits when the caller names no timeout.
pub const WAIT_TIMEOUT_MS_DEFAULT: i64 = 30_000;
/// The longest `wait` may wait.
pub const WAIT_TIMEOUT_MS_MAX: i64 = 60_000;

/// `POST /v1/executions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Handler name.
    pub kind: String,
    /// Queue; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// Input.
    #[serde(default)]
    pub payload: Value,
    /// −1000 ..= 1000, default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Delay before the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<i64>,
    /// RFC 3339 time of the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// Attempts in total, default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Lease losses tolerated, default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reclaims: Option<u32>,
    /// Retry delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Per-attempt limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// Limit from submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// Capabilities a worker must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Same key again returns the existing execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Free labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl SubmitRequest {
    /// The store's submit parameters; `run_at` must be RFC 3339.
    pub fn into_params(self) -> Result<SubmitParams, Error> {
        let run_at_ms = match &self.run_at {
            Some(text) => Some(time::parse_ms(text).ok_or_else(|| {
                Error::invalid("run_at", format!("{text:?} is not an RFC 3339 time"))
            })?),
            None => None,
        };
        Ok(SubmitParams {
            kind: self.kind,
            lane: self.lane,
            payload: self.payload,
            priority: self.priority.unwrap_or(0),
            delay_ms: self.delay_ms,
            run_at_ms,
            max_attempts: self.max_attempts,
            max_reclaims: self.max_reclaims,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            deadline_ms: self.deadline_ms,
            requires: self.requires,
            idempotency_key: self.idempotency_key,
            tags: self.tags,
        })
    }
}

/// The last failure of an execution or an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// Human-readable text.
    pub message: String,
    /// Machine-readable kind, if any.
    pub kind: Option<String>,
}

impl From<&weft_core::ErrorInfo> for ErrorView {
    fn from(e: &weft_core::ErrorInfo) -> Self {
        Self {
            message: e.message.clone(),
            kind: e.kind.clone(),
        }
    }
}

/// `POST /v1/executions/batch`: up to `weft_core::BATCH_MAX` submissions,
/// each as `POST /v1/executions` takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatchRequest {
    /// The submissions, in order.
    pub executions: Vec<SubmitRequest>,
}

impl SubmitBatchRequest {
    /// Every item as the store takes it, in order, once the batch's size is
    /// checked; an item's error names it (`executions[3].kind`).
    pub fn into_params(self) -> Result<Vec<SubmitParams>, Error> {
        weft_core::check_batch("executions", self.executions.len())?;
        self.executions
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                item.into_params()
                    .map_err(|e| e.at_item("executions", index))
            })
            .collect()
    }
}

/// One answer of `POST /v1/executions/batch`, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmittedView {
    /// `false` when the idempotency key was seen before.
    pub created: bool,
    /// The execution, new or found by its idempotency key.
    pub execution: ExecutionView,
}

/// An execution as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionView {
    /// Opaque id.
    pub id: String,
    /// Handler name.
    pub kind: String,
    /// Queue.
    pub lane: String,
    /// Public state.
    pub state: State,
    /// Higher is claimed first.
    pub priority: i32,
    /// Input.
    pub payload: Value,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts in total.
    pub max_attempts: u32,
    /// The completing worker's output.
    pub result: Option<Value>,
    /// The last failure.
    pub error: Option<ErrorView>,
    /// The flow, for flow members.
    pub flow_id: Option<String>,
    /// The node key, for flow members.
    pub flow_node: Option<String>,
    /// Capabilities a worker must have.
    pub requires: Vec<String>,
    /// Free labels.
    pub tags: BTreeMap<String, String>,
    /// Idempotency key, if given.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, while `delayed`.
    pub run_at: Option<String>,
    /// RFC 3339, once ended.
    pub finished_at: Option<String>,
    /// RFC 3339, when the execution's deadline falls.
    #[serde(default)]
    pub deadline_at: Option<String>,
    /// Why it was cancelled.
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// The suspension in force while `suspended`; `null` otherwise (an
    /// addition to the contract).
    #[serde(default)]
    pub suspension: Option<SuspensionView>,
}

impl From<&Execution> for ExecutionView {
    fn from(e: &Execution) -> Self {
        Self {
            id: e.id.to_string(),
            kind: e.kind.clone(),
            lane: e.lane.clone(),
            state: e.state,
            priority: e.priority,
            payload: e.payload.clone(),
            attempts: e.attempts,
            max_attempts: e.max_attempts,
            result: e.result.clone(),
            error: e.error.as_ref().map(ErrorView::from),
            flow_id: e.flow_id.as_ref().map(ToString::to_string),
            flow_node: e.flow_node.clone(),
            requires: e.requires.clone(),
            tags: e.tags.clone(),
            idempotency_key: e.idempotency_key.clone(),
            created_at: time::format_ms(e.created_at_ms),
            updated_at: time::format_ms(e.updated_at_ms),
            run_at: e.run_at_ms.map(time::format_ms),
            finished_at: e.finished_at_ms.map(time::format_ms),
            deadline_at: e.deadline_at_ms.map(time::format_ms),
            cancel_reason: e.cancel_reason.clone(),
            suspension: e
                .suspension
                .as_ref()
                .filter(|_| e.state == State::Suspended)
                .map(SuspensionView::from),
        }
    }
}

/// A page of items: `GET /v1/executions` and friends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A list without paging: `{"items": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// One attempt as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    /// From 1.
    pub number: u32,
    /// Who ran it.
    pub worker_id: String,
    /// How it ended.
    pub state: AttemptState,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: Option<String>,
    /// The failure, if any.
    pub error: Option<ErrorView>,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        Self {
            number: a.number.0,
            worker_id: a.worker_id.clone(),
            state: a.state,
            started_at: time::format_ms(a.started_at_ms),
            ended_at: a.ended_at_ms.map(time::format_ms),
            error: a.error.as_ref().map(ErrorView::from),
        }
    }
}

/// `POST /v1/executions/{id}/cancel`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/claims`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Who claims.
    pub worker_id: String,
    /// Lanes to claim from.
    pub lanes: Vec<String>,
    /// The worker's capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Most tasks, 1 ..= 1000, default 1.
    #[serde(default = "one")]
    pub max: u32,
    /// Lease duration, default 30 000.
    #[serde(default = "lease_ms_default")]
    pub lease_ms: i64,
    /// How long to wait for a first task, 0 ..= 60 000, default 0.
    #[serde(default)]
    pub wait_ms: i64,
}

fn one() -> u32 {
    1
}

fn lease_ms_default() -> i64 {
    CLAIM_LEASE_MS_DEFAULT
}

/// A lease as a task carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Present it as `lease_id` with every write.
    pub id: String,
    /// Present it as `epoch` with every write.
    pub epoch: u64,
    /// RFC 3339.
    pub expires_at: String,
}

/// One claimed task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The execution to run.
    pub execution_id: String,
    /// Handler name.
    pub kind: String,
    /// Queue.
    pub lane: String,
    /// Input.
    pub payload: Value,
    /// This attempt's number.
    pub attempt: u32,
    /// The lease fencing this attempt's writes.
    pub lease: LeaseView,
    /// Upstream results by node key (`{}` outside flows).
    pub inputs: BTreeMap<String, Value>,
    /// The flow, for flow members.
    pub flow_id: Option<String>,
    /// The node key, for flow members.
    pub flow_node: Option<String>,
    /// The payloads of the signals that resumed the execution, by waitpoint
    /// (`{}` until it has suspended and resumed).
    #[serde(default)]
    pub signals: BTreeMap<String, Value>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        Self {
            execution_id: t.execution_id.to_string(),
            kind: t.kind.clone(),
            lane: t.lane.clone(),
            payload: t.payload.clone(),
            attempt: t.attempt.0,
            lease: LeaseView {
                id: t.lease.id.to_string(),
                epoch: t.lease.epoch.0,
                expires_at: time::format_ms(t.lease.expires_at_ms),
            },
            inputs: t.inputs.clone(),
            flow_id: t.flow_id.as_ref().map(ToString::to_string),
            flow_node: t.flow_node.clone(),
            signals: t.signals.clone(),
        }
    }
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    /// Up to `max` tasks; empty when none came within `wait_ms`.
    pub tasks: Vec<TaskView>,
}

/// `POST /v1/executions/{id}/heartbeat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The task's `lease.id`.
    pub lease_id: String,
    /// The task's `lease.epoch`.
    pub epoch: u64,
    /// A new duration, or the lease's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<i64>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// RFC 3339: when the lease now lapses.
    pub expires_at: String,
    /// Whether the execution should stop.
    pub cancel_requested: bool,
}

/// `POST /v1/executions/{id}/complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The task's `lease.id`.
    pub lease_id: String,
    /// The task's `lease.epoch`.
    pub epoch: u64,
    /// The output.
    #[serde(default)]
    pub result: Value,
}

/// The error a worker reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailError {
    /// Human-readable text.
    pub message: String,
    /// Machine-readable kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `false` ends the execution at once; default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// `POST /v1/executions/{id}/fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// The task's `lease.id`.
    pub lease_id: String,
    /// The task's `lease.epoch`.
    pub epoch: u64,
    /// What went wrong.
    pub error: FailError,
}

/// `POST /v1/executions/{id}/release`: the worker hands the task back
/// unfinished (an addition to the contract). The answer is the execution,
/// `waiting` again; nothing is counted against its attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The task's `lease.id`.
    pub lease_id: String,
    /// The task's `lease.epoch`.
    pub epoch: u64,
}

/// The lease a worker write presents, in the store's terms.
pub fn lease_ref(lease_id: &str, epoch: u64) -> weft_core::LeaseRef {
    weft_core::LeaseRef {
        lease_id: weft_core::LeaseId(lease_id.to_owned()),
        epoch: LeaseEpoch(epoch),
    }
}

/// One lane's depths: `GET /v1/lanes` items.
pub type LaneView = LaneDepth;

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the store answers.
    pub status: String,
}

/// The error body of every non-2xx response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error's kind and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of the contract's kinds (`invalid_argument`, `not_found`, …).
    pub kind: String,
    /// What went wrong, naming the field where one is at fault.
    pub message: String,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        Self {
            error: ErrorDetail {
                kind: e.kind().to_owned(),
                message: e.to_string(),
            },
        }
    }
}

/// The HTTP status of an error kind of the contract.
pub fn status_of_kind(kind: &str) -> u16 {
    match kind {
        "invalid_argument" => 400,
        "unauthorized" => 401,
        "invalid_token" => 403,
        "not_found" => 404,
        "conflict" | "lease_lost" => 409,
        "payload_too_large" => 413,
        "unavailable" => 503,
        _ => 500,
    }
}

/// Rebuilds a core error from an error body a server sent, so clients match
/// on the same enum the store returns.
pub fn error_from_body(status: u16, body: &ErrorBody) -> Error {
    let message = body.error.message.clone();
    match body.error.kind.as_str() {
        "invalid_argument" => Error::invalid("request", message),
        "not_found" => Error::NotFound {
            what: "object",
            id: message,
        },
        "conflict" => Error::Conflict { message },
        "lease_lost" => Error::LeaseLost {
            execution_id: String::new(),
            epoch: LeaseEpoch(0),
            reason: "the server refused the lease",
        },
        "invalid_token" => Error::InvalidToken,
        "payload_too_large" => Error::PayloadTooLarge {
            bytes: 0,
            max_bytes: 0,
        },
        "unavailable" => Error::Unavailable(message),
        _ => Error::Internal(format!("HTTP {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    //! Request bodies refuse unknown fields and keep the contract's defaults.
    use super::*;

    #[test]
    fn claim_defaults() {
        let c: ClaimRequest = serde_json::from_str(r#"{"worker_id":"w","lanes":["a"]}"#).unwrap();
        assert_eq!((c.max, c.lease_ms, c.wait_ms), (1, 30_000, 0));
        assert!(c.capabilities.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_str::<SubmitRequest>(r#"{"kind":"k","dealy_ms":5}"#).unwrap_err();
        assert!(err.to_string().contains("dealy_ms"), "{err}");
    }

    #[test]
    fn release_takes_the_lease_only() {
        let r: ReleaseRequest = serde_json::from_str(r#"{"lease_id":"l","epoch":2}"#).unwrap();
        assert_eq!((r.lease_id.as_str(), r.epoch), ("l", 2));
        let err = serde_json::from_str::<ReleaseRequest>(r#"{"lease_id":"l","epoch":2,"x":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains('x'), "{err}");
        let wire = serde_json::to_value(AttemptState::Released).unwrap();
        assert_eq!(wire, serde_json::json!("released"));
    }

    #[test]
    fn run_at_must_be_rfc3339() {
        let req = SubmitRequest {
            kind: "k".into(),
            run_at: Some("tomorrow".into()),
            ..Default::default()
        };
        match req.into_params() {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "run_at"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        for (kind, status) in [
            ("invalid_argument", 400),
            ("unauthorized", 401),
            ("invalid_token", 403),
            ("not_found", 404),
            ("conflict", 409),
            ("lease_lost", 409),
            ("payload_too_large", 413),
            ("unavailable", 503),
            ("internal", 500),
        ] {
            assert_eq!(status_of_kind(kind), status);
        }
    }
}
