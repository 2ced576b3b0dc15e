//! The wire types of the Flows section of `shared/http-api.md`: the create
//! and add-nodes bodies, and the flow object.
//!
//! Definitions: a [`FlowRequest`] is the body of `POST /v1/flows`; its
//! flow-level `lane` is the lane of every node that names none. An
//! [`AddNodesRequest`] is the body of `POST /v1/flows/{id}/nodes`; its
//! `lane` (an addition to the contract) plays the same part. A
//! [`FlowView`] is the flow object every flow route answers with.
//!
//! Invariants: request bodies refuse unknown fields at every level (nodes,
//! edges, joins included); `into_spec` checks only what the core's
//! `FlowSpec::validate` cannot see (the flow-level lane, which no node may
//! use), so graph errors are named by the core, with their field paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_core::flow::{
    EdgeOn, Flow, FlowEdge, FlowNodeSpec, FlowSpec, FlowState, Join, JoinMode, OnFailure,
};
use weft_core::{check_name, Backoff, Error, State, SubmitParams, LANE_LEN_MAX};

use crate::time;

/// Parses a flow state's wire name; `invalid_argument` on `field` naming
/// the states otherwise.
pub fn parse_flow_state(field: &str, text: &str) -> Result<FlowState, Error> {
    FlowState::parse(text).ok_or_else(|| {
        let names: Vec<&str> = FlowState::ALL.into_iter().map(FlowState::as_str).collect();
        Error::invalid(
            field,
            format!(
                "{text:?} is not a flow state; use one of {}",
                names.join(", ")
            ),
        )
    })
}

/// One node of a flow request: a key and what to run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowNodeRequest {
    /// Unique within the flow; edges and joins name nodes by it.
    pub key: String,
    /// Handler name.
    pub kind: String,
    /// Input.
    #[serde(default)]
    pub payload: Value,
    /// −1000 ..= 1000, default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Attempts in total, default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Retry delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Per-attempt limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// Capabilities a worker must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Queue; the request's `lane` (then `default`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
}

impl FlowNodeRequest {
    /// A node `key` running `kind` with a `null` payload and every default.
    pub fn new(key: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            kind: kind.into(),
            ..Self::default()
        }
    }

    fn into_spec(self, lane: Option<&String>) -> FlowNodeSpec {
        let params = SubmitParams {
            kind: self.kind,
            lane: self.lane.or_else(|| lane.cloned()),
            payload: self.payload,
            priority: self.priority.unwrap_or(0),
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            requires: self.requires,
            ..SubmitParams::default()
        };
        FlowNodeSpec {
            key: self.key,
            params,
        }
    }
}

/// An edge `from → to`: in requests (`on` defaults to `success`) and in
/// flow objects (where `on` is always present).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowEdgeView {
    /// Upstream node key.
    pub from: String,
    /// Downstream node key.
    pub to: String,
    /// Which upstream outcomes fire it: `success`, `failure` or `any`.
    #[serde(default)]
    pub on: EdgeOn,
}

impl FlowEdgeView {
    /// An edge firing on the upstream's success.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            on: EdgeOn::Success,
        }
    }

    /// The same edge, firing on `on`.
    #[must_use]
    pub fn on(mut self, on: EdgeOn) -> Self {
        self.on = on;
        self
    }
}

impl From<&FlowEdge> for FlowEdgeView {
    fn from(e: &FlowEdge) -> Self {
        Self {
            from: e.from.clone(),
            to: e.to.clone(),
            on: e.on,
        }
    }
}

impl From<FlowEdgeView> for FlowEdge {
    fn from(e: FlowEdgeView) -> Self {
        Self {
            from: e.from,
            to: e.to,
            on: e.on,
        }
    }
}

/// How a node with several incoming edges becomes ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// `all`, `any` or `quorum`.
    pub mode: JoinMode,
    /// The quorum, for `quorum` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Cancel the upstreams still running once the join is satisfied;
    /// default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_remaining: Option<bool>,
}

impl From<JoinRequest> for Join {
    fn from(j: JoinRequest) -> Self {
        Self {
            mode: j.mode,
            n: j.n,
            cancel_remaining: j.cancel_remaining.unwrap_or(false),
        }
    }
}

/// `POST /v1/flows`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRequest {
    /// A label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The lane of every node that names none; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// The same key again returns the existing flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The nodes; at least one.
    pub nodes: Vec<FlowNodeRequest>,
    /// The edges; none when absent.
    #[serde(default)]
    pub edges: Vec<FlowEdgeView>,
    /// Joins by node key; `all` for a node that has none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub joins: BTreeMap<String, JoinRequest>,
    /// `continue` (default) or `cancel_flow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

impl FlowRequest {
    /// The store's flow spec. Checks the flow-level `lane`; the rest is
    /// `FlowSpec::validate`'s to check.
    pub fn into_spec(self) -> Result<FlowSpec, Error> {
        if let Some(lane) = &self.lane {
            check_name("lane", lane, LANE_LEN_MAX)?;
        }
        let lane = self.lane.as_ref();
        Ok(FlowSpec {
            name: self.name,
            idempotency_key: self.idempotency_key,
            nodes: self.nodes.into_iter().map(|n| n.into_spec(lane)).collect(),
            edges: self.edges.into_iter().map(FlowEdge::from).collect(),
            joins: self
                .joins
                .into_iter()
                .map(|(k, j)| (k, Join::from(j)))
                .collect(),
            on_failure: self.on_failure.unwrap_or_default(),
        })
    }
}

/// `POST /v1/flows/{id}/nodes`: nodes added to a running flow, edges that
/// end at them (and may start at existing nodes), and their joins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNodesRequest {
    /// The new nodes; at least one.
    pub nodes: Vec<FlowNodeRequest>,
    /// Edges ending at new nodes; none when absent.
    #[serde(default)]
    pub edges: Vec<FlowEdgeView>,
    /// Joins of new nodes by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub joins: BTreeMap<String, JoinRequest>,
    /// The lane of every new node that names none (an addition to the
    /// contract: a flow keeps no lane of its own); `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
}

impl AddNodesRequest {
    /// The store's spec of the addition; checks `lane` as
    /// [`FlowRequest::into_spec`] does.
    pub fn into_spec(self) -> Result<FlowSpec, Error> {
        FlowRequest {
            lane: self.lane,
            nodes: self.nodes,
            edges: self.edges,
            joins: self.joins,
            ..FlowRequest::default()
        }
        .into_spec()
    }
}

/// Members per state: the flow object's `summary`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// Every member.
    pub total: u32,
    /// Members `waiting`.
    pub waiting: u32,
    /// Members `delayed`.
    pub delayed: u32,
    /// Members `blocked` on their upstreams.
    pub blocked: u32,
    /// Members `active`.
    pub active: u32,
    /// Members `suspended`.
    pub suspended: u32,
    /// Members `completed`.
    pub completed: u32,
    /// Members `failed`.
    pub failed: u32,
    /// Members `cancelled`.
    pub cancelled: u32,
    /// Members `expired`.
    pub expired: u32,
    /// Members `skipped`.
    pub skipped: u32,
}

impl FlowSummary {
    /// The members in `state`.
    pub fn get(&self, state: State) -> u32 {
        match state {
            State::Waiting => self.waiting,
            State::Delayed => self.delayed,
            State::Blocked => self.blocked,
            State::Active => self.active,
            State::Suspended => self.suspended,
            State::Completed => self.completed,
            State::Failed => self.failed,
            State::Cancelled => self.cancelled,
            State::Expired => self.expired,
            State::Skipped => self.skipped,
        }
    }
}

/// One node of a flow object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowNodeView {
    /// The node key.
    pub key: String,
    /// Its member execution.
    pub execution_id: String,
    /// The member's state.
    pub state: State,
}

/// A flow as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowView {
    /// Opaque id.
    pub id: String,
    /// A label.
    pub name: Option<String>,
    /// `running`, `blocked`, `completed`, `failed` or `cancelled`.
    pub state: FlowState,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: the last change (an addition to the contract).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// RFC 3339, once the flow has ended.
    pub finished_at: Option<String>,
    /// What a failed member does to the rest (an addition to the contract).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The creator's idempotency key (an addition to the contract).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Members per state.
    pub summary: FlowSummary,
    /// The nodes, in the order they were added.
    pub nodes: Vec<FlowNodeView>,
    /// The edges, in the order they were added.
    pub edges: Vec<FlowEdgeView>,
}

impl From<&Flow> for FlowView {
    fn from(f: &Flow) -> Self {
        let c = &f.counts;
        let summary = FlowSummary {
            total: c.total(),
            waiting: c.get(State::Waiting),
            delayed: c.get(State::Delayed),
            blocked: c.get(State::Blocked),
            active: c.get(State::Active),
            suspended: c.get(State::Suspended),
            completed: c.get(State::Completed),
            failed: c.get(State::Failed),
            cancelled: c.get(State::Cancelled),
            expired: c.get(State::Expired),
            skipped: c.get(State::Skipped),
        };
        Self {
            id: f.id.to_string(),
            name: f.name.clone(),
            state: f.state,
            created_at: time::format_ms(f.created_at_ms),
            updated_at: Some(time::format_ms(f.updated_at_ms)),
            finished_at: f.finished_at_ms.map(time::format_ms),
            on_failure: f.on_failure,
            idempotency_key: f.idempotency_key.clone(),
            summary,
            nodes: f
                .nodes
                .iter()
                .map(|n| FlowNodeView {
                    key: n.key.clone(),
                    execution_id: n.execution_id.to_string(),
                    state: n.state,
                })
                .collect(),
            edges: f.edges.iter().map(FlowEdgeView::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: flow bodies keep the contract's shape and defaults, refuse
    //! unknown fields at every level, and the flow-level lane reaches the
    //! nodes without one.
    use super::*;
    use serde_json::json;
    use weft_core::flow::StateCounts;
    use weft_core::{ExecutionId, FlowId, PartitionId};

    #[test]
    fn requests_map_to_a_spec() {
        let body = json!({
            "name": "d", "lane": "flows", "idempotency_key": "k",
            "nodes": [{"key": "a", "kind": "fetch", "payload": {"u": 1}, "priority": 3},
                      {"key": "b", "kind": "store", "lane": "slow", "requires": ["gpu"]}],
            "edges": [{"from": "a", "to": "b", "on": "any"}],
            "joins": {"b": {"mode": "quorum", "n": 1, "cancel_remaining": true}},
            "on_failure": "cancel_flow"
        });
        let request: FlowRequest = serde_json::from_value(body).unwrap();
        let spec = request.into_spec().unwrap();
        assert_eq!(spec.nodes[0].params.lane.as_deref(), Some("flows"));
        assert_eq!(spec.nodes[0].params.priority, 3);
        assert_eq!(spec.nodes[1].params.lane.as_deref(), Some("slow"));
        assert_eq!(spec.edges[0].on, EdgeOn::Any);
        assert_eq!(spec.joins["b"].n, Some(1));
        assert!(spec.joins["b"].cancel_remaining);
        assert_eq!(spec.on_failure, OnFailure::CancelFlow);
        spec.validate(1 << 20).unwrap();

        let minimal: FlowRequest =
            serde_json::from_value(json!({"nodes": [{"key": "a", "kind": "k"}]})).unwrap();
        let spec = minimal.into_spec().unwrap();
        assert_eq!(spec.nodes[0].params.lane, None);
        assert_eq!(spec.on_failure, OnFailure::Continue);
        let edge: FlowEdgeView = serde_json::from_value(json!({"from": "a", "to": "b"})).unwrap();
        assert_eq!(edge.on, EdgeOn::Success);
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        for (body, needle) in [
            (json!({"nodes": [], "nodez": 1}), "nodez"),
            (
                json!({"nodes": [{"key": "a", "kind": "k", "delay_ms": 5}]}),
                "delay_ms",
            ),
            (
                json!({"nodes": [], "edges": [{"from": "a", "to": "b", "of": "x"}]}),
                "of",
            ),
            (
                json!({"nodes": [], "joins": {"b": {"mode": "all", "m": 1}}}),
                "m",
            ),
            (json!({"nodes": [], "joins": {"b": {"n": 1}}}), "mode"),
            (
                json!({"nodes": [], "edges": [{"from": "a", "to": "b", "on": "ok"}]}),
                "ok",
            ),
        ] {
            let err = serde_json::from_value::<FlowRequest>(body).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let err = serde_json::from_value::<AddNodesRequest>(json!({"nodes": [], "name": "x"}))
            .unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
    }

    #[test]
    fn a_bad_flow_lane_is_named() {
        let request = FlowRequest {
            lane: Some("a b".into()),
            nodes: vec![FlowNodeRequest::new("a", "k")],
            ..FlowRequest::default()
        };
        match request.into_spec() {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "lane"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn views_show_the_summary_and_the_graph() {
        let p = PartitionId(0);
        let mut counts = StateCounts::default();
        counts.shift(None, Some(State::Completed));
        counts.shift(None, Some(State::Waiting));
        let flow = Flow {
            id: FlowId::mint(p, 0),
            name: Some("n".into()),
            state: FlowState::Running,
            idempotency_key: None,
            on_failure: OnFailure::Continue,
            cancelled: false,
            halted: false,
            nodes: vec![weft_core::flow::FlowNode {
                key: "a".into(),
                execution_id: ExecutionId::mint(p, 0),
                state: State::Completed,
            }],
            edges: vec![FlowEdge {
                from: "a".into(),
                to: "b".into(),
                on: EdgeOn::Failure,
            }],
            counts,
            created_at_ms: 0,
            updated_at_ms: 5,
            finished_at_ms: None,
        };
        let wire = serde_json::to_value(FlowView::from(&flow)).unwrap();
        assert_eq!(wire["state"], "running");
        assert_eq!(wire["summary"]["total"], 2);
        assert_eq!(wire["summary"]["completed"], 1);
        assert_eq!(wire["summary"]["skipped"], 0);
        assert_eq!(
            wire["edges"][0],
            json!({"from": "a", "to": "b", "on": "failure"})
        );
        assert_eq!(wire["nodes"][0]["state"], "completed");
        assert_eq!(wire["created_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(wire["finished_at"], Value::Null);
        let back: FlowView = serde_json::from_value(wire).unwrap();
        assert_eq!(back.summary.get(State::Waiting), 1);
        for state in FlowState::ALL {
            let name = state.as_str();
            assert_eq!(serde_json::to_value(state).unwrap(), json!(name));
            assert_eq!(parse_flow_state("state", name).unwrap(), state);
        }
        assert!(parse_flow_state("state", "done").is_err());
    }
}
