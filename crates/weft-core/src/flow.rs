//! Flows: DAGs of executions joined by edges.
//!
//! Definitions: a flow's members are executions on the flow's partition, one
//! per node key. An edge `from → to` fires when `from` ends in an outcome its
//! `on` matches; it is dead when `from` ends otherwise. A node with incoming
//! edges is `blocked` until its join is satisfied (then `waiting`) or can no
//! longer be (then `skipped`). The join is decided from three counters kept on
//! the member (`JoinState`): incoming edges, fired, dead.
//!
//! Invariants: the graph is acyclic and at most `FLOW_NODES_MAX` nodes and
//! `FLOW_EDGES_MAX` edges; a flow's `counts` sum to its members and match
//! their states; the flow has ended exactly when no member is non-terminal.
//!
//! Key operations: `FlowSpec::validate` checks a whole request before
//! anything is written; `JoinState::outcome` decides a join; `derive_state`
//! names the flow's state from its counts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{ExecutionId, FlowId};
use crate::model::{check_name, State, SubmitParams, IDEMPOTENCY_KEY_LEN_MAX};

/// Most nodes one flow may hold, added nodes included.
pub const FLOW_NODES_MAX: usize = 1000;
/// Most edges one flow may hold, added edges included.
pub const FLOW_EDGES_MAX: usize = 5000;
/// Longest node key, in bytes.
pub const NODE_KEY_LEN_MAX: usize = 128;
/// Longest flow name, in bytes.
pub const FLOW_NAME_LEN_MAX: usize = 256;

/// Which upstream outcomes fire an edge.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EdgeOn {
    /// The upstream `completed`.
    #[default]
    Success,
    /// The upstream `failed` or `expired`.
    Failure,
    /// Any of the three.
    Any,
}

impl EdgeOn {
    /// Whether an upstream ending in `state` fires the edge; `None` while the
    /// upstream has not ended. `cancelled` and `skipped` fire nothing.
    pub fn fires(self, state: State) -> Option<bool> {
        if !state.is_terminal() {
            return None;
        }
        let success = state == State::Completed;
        let failure = matches!(state, State::Failed | State::Expired);
        Some(match self {
            EdgeOn::Success => success,
            EdgeOn::Failure => failure,
            EdgeOn::Any => success || failure,
        })
    }
}

/// How a node with several incoming edges becomes ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMode {
    /// Every incoming edge fired.
    #[default]
    All,
    /// At least one fired.
    Any,
    /// At least `n` fired.
    Quorum,
}

/// A node's join: its mode, and whether the other upstreams are cancelled
/// once it is satisfied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// All, any or quorum.
    #[serde(default)]
    pub mode: JoinMode,
    /// The quorum, for `quorum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Cancel the upstreams still running once the join is satisfied.
    #[serde(default)]
    pub cancel_remaining: bool,
}

/// What a join says about its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Not decided yet.
    Pending,
    /// The node may run.
    Satisfied,
    /// The node can never run: it is skipped.
    Unsatisfiable,
}

/// A member's join, as counters kept on the member itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinState {
    /// The join's rule.
    pub join: Join,
    /// Incoming edges.
    pub total: u32,
    /// Incoming edges whose upstream ended in a matching outcome.
    pub fired: u32,
    /// Incoming edges whose upstream ended otherwise.
    pub dead: u32,
}

impl JoinState {
    /// The decision the counters allow.
    pub fn outcome(&self) -> JoinOutcome {
        let need = match self.join.mode {
            JoinMode::All => self.total,
            JoinMode::Any => 1.min(self.total),
            JoinMode::Quorum => self.join.n.unwrap_or(1),
        };
        let open = self.total.saturating_sub(self.fired + self.dead);
        if self.fired >= need {
            JoinOutcome::Satisfied
        } else if self.fired + open < need {
            JoinOutcome::Unsatisfiable
        } else {
            JoinOutcome::Pending
        }
    }
}

/// What a failed member does to the rest of its flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Other members go on; edges decide.
    #[default]
    Continue,
    /// A member that fails for good cancels every non-terminal member.
    CancelFlow,
}

/// One node of a flow request: a key and what to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowNodeSpec {
    /// Unique within the flow.
    pub key: String,
    /// The member's submit parameters (`delay_ms`, `run_at_ms`,
    /// `deadline_ms` and `idempotency_key` are not used for members).
    pub params: SubmitParams,
}

/// An edge `from → to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowEdge {
    /// Upstream node key.
    pub from: String,
    /// Downstream node key.
    pub to: String,
    /// Which upstream outcomes fire it.
    pub on: EdgeOn,
}

/// A whole flow request, or nodes added to a running flow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowSpec {
    /// A label.
    pub name: Option<String>,
    /// Deduplicates creates.
    pub idempotency_key: Option<String>,
    /// The nodes.
    pub nodes: Vec<FlowNodeSpec>,
    /// The edges.
    pub edges: Vec<FlowEdge>,
    /// Joins by node key; `all` when absent.
    pub joins: BTreeMap<String, Join>,
    /// What a failure does.
    pub on_failure: OnFailure,
}

/// The public state of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Some member is waiting, delayed or active.
    Running,
    /// Nothing can run now; some member is suspended or blocked.
    Blocked,
    /// Every member ended and none failed or expired.
    Completed,
    /// Every member ended and some failed or expired.
    Failed,
    /// The flow was cancelled.
    Cancelled,
}

impl FlowState {
    /// Whether the flow has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            FlowState::Completed | FlowState::Failed | FlowState::Cancelled
        )
    }
}

/// Members per state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts(pub BTreeMap<State, u32>);

impl StateCounts {
    /// Members in `state`.
    pub fn get(&self, state: State) -> u32 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    /// Every member.
    pub fn total(&self) -> u32 {
        self.0.values().sum()
    }

    /// Moves one member from `from` (or from nowhere, for a new member) to
    /// `to` (or nowhere, for a purged one).
    pub fn shift(&mut self, from: Option<State>, to: Option<State>) {
        if let Some(from) = from {
            let n = self.0.entry(from).or_insert(0);
            assert!(*n > 0, "flow counts never go negative ({from:?})");
            *n -= 1;
        }
        if let Some(to) = to {
            *self.0.entry(to).or_insert(0) += 1;
        }
        self.0.retain(|_, n| *n > 0);
    }

    /// Members that have not ended.
    pub fn open(&self) -> u32 {
        self.0
            .iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }
}

/// The flow's state as its counts and cancel flag say.
pub fn derive_state(counts: &StateCounts, cancelled: bool) -> FlowState {
    if counts.open() == 0 {
        return if cancelled {
            FlowState::Cancelled
        } else if counts.get(State::Failed) + counts.get(State::Expired) > 0 {
            FlowState::Failed
        } else {
            FlowState::Completed
        };
    }
    let runnable: u32 = [State::Waiting, State::Delayed, State::Active]
        .iter()
        .map(|s| counts.get(*s))
        .sum();
    if runnable == 0 {
        FlowState::Blocked
    } else {
        FlowState::Running
    }
}

/// A node of a stored flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowNode {
    /// The node key.
    pub key: String,
    /// Its member execution.
    pub execution_id: ExecutionId,
}

/// A flow as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    /// Encodes the partition its members share.
    pub id: FlowId,
    /// A label.
    pub name: Option<String>,
    /// Derived from `counts` and `cancelled`.
    pub state: FlowState,
    /// The creator's deduplication key.
    pub idempotency_key: Option<String>,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// Set by a flow cancel.
    pub cancelled: bool,
    /// The nodes, in the order they were added.
    pub nodes: Vec<FlowNode>,
    /// The edges, in the order they were added.
    pub edges: Vec<FlowEdge>,
    /// Members per state.
    pub counts: StateCounts,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// When the last member ended.
    pub finished_at_ms: Option<i64>,
}

impl Flow {
    /// The member of node `key`.
    pub fn member(&self, key: &str) -> Option<&ExecutionId> {
        self.nodes
            .iter()
            .find(|n| n.key == key)
            .map(|n| &n.execution_id)
    }

    /// Edges leaving `key`.
    pub fn downstream<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a FlowEdge> + 'a {
        self.edges.iter().filter(move |e| e.from == key)
    }

    /// Edges entering `key`.
    pub fn upstream<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a FlowEdge> + 'a {
        self.edges.iter().filter(move |e| e.to == key)
    }
}

impl FlowSpec {
    /// Checks a create request: limits, keys, edges, joins, acyclicity and
    /// every node's parameters; says what is wrong. Nothing is written
    /// before this passes.
    pub fn validate(&self, payload_bytes_max: u64) -> Result<()> {
        if let Some(name) = &self.name {
            if name.len() > FLOW_NAME_LEN_MAX {
                return Err(Error::invalid(
                    "name",
                    format!("at most {FLOW_NAME_LEN_MAX} bytes"),
                ));
            }
        }
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
                return Err(Error::invalid(
                    "idempotency_key",
                    format!("must be 1..={IDEMPOTENCY_KEY_LEN_MAX} bytes"),
                ));
            }
        }
        if self.nodes.is_empty() {
            return Err(Error::invalid("nodes", "a flow needs at least one node"));
        }
        validate_graph(&BTreeSet::new(), self, payload_bytes_max)
    }

    /// Checks nodes added to `flow`: new keys, edges that end at new nodes,
    /// limits counted with what the flow holds, no cycle.
    pub fn validate_addition(&self, flow: &Flow, payload_bytes_max: u64) -> Result<()> {
        if self.nodes.is_empty() {
            return Err(Error::invalid("nodes", "add at least one node"));
        }
        if flow.nodes.len() + self.nodes.len() > FLOW_NODES_MAX {
            return Err(Error::invalid(
                "nodes",
                format!("a flow holds at most {FLOW_NODES_MAX} nodes"),
            ));
        }
        if flow.edges.len() + self.edges.len() > FLOW_EDGES_MAX {
            return Err(Error::invalid(
                "edges",
                format!("a flow holds at most {FLOW_EDGES_MAX} edges"),
            ));
        }
        let existing: BTreeSet<&str> = flow.nodes.iter().map(|n| n.key.as_str()).collect();
        validate_graph(&existing, self, payload_bytes_max)
    }
}

fn validate_graph(
    existing: &BTreeSet<&str>,
    spec: &FlowSpec,
    payload_bytes_max: u64,
) -> Result<()> {
    if spec.nodes.len() > FLOW_NODES_MAX {
        return Err(Error::invalid(
            "nodes",
            format!("a flow holds at most {FLOW_NODES_MAX} nodes"),
        ));
    }
    if spec.edges.len() > FLOW_EDGES_MAX {
        return Err(Error::invalid(
            "edges",
            format!("a flow holds at most {FLOW_EDGES_MAX} edges"),
        ));
    }
    let mut new_keys = BTreeSet::new();
    for (i, node) in spec.nodes.iter().enumerate() {
        check_name(&format!("nodes[{i}].key"), &node.key, NODE_KEY_LEN_MAX)?;
        if existing.contains(node.key.as_str()) || !new_keys.insert(node.key.as_str()) {
            return Err(Error::invalid(
                format!("nodes[{i}].key"),
                format!("duplicate key {:?}", node.key),
            ));
        }
        node.params
            .validate(payload_bytes_max)
            .map_err(|e| within(&format!("nodes[{i}]"), e))?;
    }
    let mut seen = BTreeSet::new();
    for (i, edge) in spec.edges.iter().enumerate() {
        let field = format!("edges[{i}]");
        let known = |k: &str| existing.contains(k) || new_keys.contains(k);
        if !known(&edge.from) {
            return Err(Error::invalid(
                format!("{field}.from"),
                format!("unknown node {:?}", edge.from),
            ));
        }
        if !new_keys.contains(edge.to.as_str()) {
            let why = if known(&edge.to) {
                "must be a node added by this request"
            } else {
                "unknown node"
            };
            return Err(Error::invalid(
                format!("{field}.to"),
                format!("{why}: {:?}", edge.to),
            ));
        }
        if edge.from == edge.to {
            return Err(Error::invalid(
                field,
                format!("{:?} cannot depend on itself", edge.from),
            ));
        }
        if !seen.insert((edge.from.as_str(), edge.to.as_str())) {
            return Err(Error::invalid(
                field,
                format!("duplicate edge {} → {}", edge.from, edge.to),
            ));
        }
    }
    validate_joins(spec, &new_keys)?;
    check_acyclic(&new_keys, &spec.edges)
}

fn within(prefix: &str, error: Error) -> Error {
    match error {
        Error::InvalidArgument { field, message } => {
            Error::invalid(format!("{prefix}.{field}"), message)
        }
        other => other,
    }
}

fn validate_joins(spec: &FlowSpec, new_keys: &BTreeSet<&str>) -> Result<()> {
    for (key, join) in &spec.joins {
        let field = format!("joins.{key}");
        if !new_keys.contains(key.as_str()) {
            return Err(Error::invalid(field, "names no node added by this request"));
        }
        let incoming =
            u32::try_from(spec.edges.iter().filter(|e| &e.to == key).count()).unwrap_or(u32::MAX);
        if incoming == 0 {
            return Err(Error::invalid(
                field,
                "the node has no incoming edge to join",
            ));
        }
        match (join.mode, join.n) {
            (JoinMode::Quorum, Some(n)) if (1..=incoming).contains(&n) => {}
            (JoinMode::Quorum, _) => {
                return Err(Error::invalid(
                    format!("{field}.n"),
                    format!("quorum needs n in 1..={incoming}"),
                ));
            }
            (_, Some(_)) => {
                return Err(Error::invalid(
                    format!("{field}.n"),
                    "n is for quorum joins only",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Kahn's algorithm over the new nodes: edges from existing nodes cannot
/// close a cycle, since no new edge ends at an existing node.
fn check_acyclic(new_keys: &BTreeSet<&str>, edges: &[FlowEdge]) -> Result<()> {
    let mut indegree: BTreeMap<&str, usize> = new_keys.iter().map(|k| (*k, 0)).collect();
    for edge in edges.iter().filter(|e| new_keys.contains(e.from.as_str())) {
        *indegree.entry(edge.to.as_str()).or_insert(0) += 1;
    }
    let mut ready: VecDeque<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut visited = 0;
    while let Some(key) = ready.pop_front() {
        visited += 1;
        for edge in edges.iter().filter(|e| e.from == key) {
            if let Some(d) = indegree.get_mut(edge.to.as_str()) {
                *d -= 1;
                if *d == 0 {
                    ready.push_back(edge.to.as_str());
                }
            }
        }
    }
    if visited < new_keys.len() {
        let stuck: Vec<&str> = indegree
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|(k, _)| *k)
            .take(5)
            .collect();
        return Err(Error::invalid(
            "edges",
            format!("the edges form a cycle through {stuck:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Joins decide exactly when they must; validation refuses every
    //! malformed graph and names the field.
    use super::*;
    use serde_json::Value;

    fn node(key: &str) -> FlowNodeSpec {
        FlowNodeSpec {
            key: key.into(),
            params: SubmitParams::new("k", Value::Null),
        }
    }

    fn edge(from: &str, to: &str) -> FlowEdge {
        FlowEdge {
            from: from.into(),
            to: to.into(),
            on: EdgeOn::Success,
        }
    }

    fn spec(nodes: &[&str], edges: &[(&str, &str)]) -> FlowSpec {
        FlowSpec {
            nodes: nodes.iter().map(|k| node(k)).collect(),
            edges: edges.iter().map(|(a, b)| edge(a, b)).collect(),
            ..FlowSpec::default()
        }
    }

    fn field_of(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected invalid_argument, got {other:?}"),
        }
    }

    #[test]
    fn joins_decide_from_counters() {
        let state = |mode, n, total, fired, dead| JoinState {
            join: Join {
                mode,
                n,
                cancel_remaining: false,
            },
            total,
            fired,
            dead,
        };
        use JoinOutcome::*;
        assert_eq!(state(JoinMode::All, None, 3, 2, 0).outcome(), Pending);
        assert_eq!(state(JoinMode::All, None, 3, 3, 0).outcome(), Satisfied);
        assert_eq!(state(JoinMode::All, None, 3, 2, 1).outcome(), Unsatisfiable);
        assert_eq!(state(JoinMode::Any, None, 3, 0, 2).outcome(), Pending);
        assert_eq!(state(JoinMode::Any, None, 3, 1, 2).outcome(), Satisfied);
        assert_eq!(state(JoinMode::Any, None, 3, 0, 3).outcome(), Unsatisfiable);
        assert_eq!(state(JoinMode::Quorum, Some(2), 3, 1, 1).outcome(), Pending);
        assert_eq!(
            state(JoinMode::Quorum, Some(2), 3, 2, 0).outcome(),
            Satisfied
        );
        assert_eq!(
            state(JoinMode::Quorum, Some(2), 3, 0, 2).outcome(),
            Unsatisfiable
        );
    }

    #[test]
    fn edges_fire_on_matching_outcomes() {
        assert_eq!(EdgeOn::Success.fires(State::Active), None);
        assert_eq!(EdgeOn::Success.fires(State::Completed), Some(true));
        assert_eq!(EdgeOn::Success.fires(State::Failed), Some(false));
        assert_eq!(EdgeOn::Failure.fires(State::Expired), Some(true));
        assert_eq!(EdgeOn::Any.fires(State::Cancelled), Some(false));
        assert_eq!(EdgeOn::Any.fires(State::Skipped), Some(false));
    }

    #[test]
    fn flow_state_follows_counts() {
        let mut counts = StateCounts::default();
        counts.shift(None, Some(State::Waiting));
        counts.shift(None, Some(State::Blocked));
        assert_eq!(derive_state(&counts, false), FlowState::Running);
        counts.shift(Some(State::Waiting), Some(State::Suspended));
        assert_eq!(derive_state(&counts, false), FlowState::Blocked);
        counts.shift(Some(State::Suspended), Some(State::Failed));
        counts.shift(Some(State::Blocked), Some(State::Skipped));
        assert_eq!(derive_state(&counts, false), FlowState::Failed);
        assert_eq!(derive_state(&counts, true), FlowState::Cancelled);
        assert_eq!(counts.total(), 2);
    }

    #[test]
    fn valid_graphs_pass() {
        spec(
            &["a", "b", "c", "d"],
            &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
        )
        .validate(1 << 20)
        .unwrap();
    }

    #[test]
    fn malformed_graphs_are_refused() {
        let cases = [
            (spec(&["a", "a"], &[]), "nodes[1].key"),
            (spec(&["a"], &[("a", "x")]), "edges[0].to"),
            (spec(&["a"], &[("x", "a")]), "edges[0].from"),
            (spec(&["a"], &[("a", "a")]), "edges[0]"),
            (spec(&["a", "b"], &[("a", "b"), ("a", "b")]), "edges[1]"),
            (
                spec(&["a", "b", "c"], &[("a", "b"), ("b", "c"), ("c", "a")]),
                "edges",
            ),
            (spec(&[], &[]), "nodes"),
            (spec(&["bad key"], &[]), "nodes[0].key"),
        ];
        for (spec, field) in cases {
            assert_eq!(field_of(spec.validate(1 << 20)), field);
        }
        let mut quorum = spec(&["a", "b", "c"], &[("a", "c"), ("b", "c")]);
        quorum.joins.insert(
            "c".into(),
            Join {
                mode: JoinMode::Quorum,
                n: Some(3),
                cancel_remaining: false,
            },
        );
        assert_eq!(field_of(quorum.validate(1 << 20)), "joins.c.n");
        let mut bad_node = spec(&["a"], &[]);
        bad_node.nodes[0].params.priority = 5000;
        assert_eq!(field_of(bad_node.validate(1 << 20)), "nodes[0].priority");
    }

    #[test]
    fn additions_may_not_end_at_existing_nodes() {
        let flow = Flow {
            id: FlowId::mint(crate::ids::PartitionId(0), 0),
            name: None,
            state: FlowState::Running,
            idempotency_key: None,
            on_failure: OnFailure::Continue,
            cancelled: false,
            nodes: vec![FlowNode {
                key: "a".into(),
                execution_id: ExecutionId::mint(crate::ids::PartitionId(0), 0),
            }],
            edges: vec![],
            counts: StateCounts::default(),
            created_at_ms: 0,
            updated_at_ms: 0,
            finished_at_ms: None,
        };
        spec(&["b"], &[("a", "b")])
            .validate_addition(&flow, 1 << 20)
            .unwrap();
        assert_eq!(
            field_of(spec(&["b"], &[("b", "a")]).validate_addition(&flow, 1 << 20)),
            "edges[0].to"
        );
        assert_eq!(
            field_of(spec(&["a"], &[]).validate_addition(&flow, 1 << 20)),
            "nodes[0].key"
        );
    }
}
