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

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::{ExecutionId, FlowId};
use crate::machine::{self, Command, MachineConfig, Outcome, Transition};
use crate::model::{check_name, Execution, State, SubmitParams, IDEMPOTENCY_KEY_LEN_MAX};

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
    /// Every flow state, in the contract's order.
    pub const ALL: [FlowState; 5] = [
        FlowState::Running,
        FlowState::Blocked,
        FlowState::Completed,
        FlowState::Failed,
        FlowState::Cancelled,
    ];

    /// The wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Running => "running",
            FlowState::Blocked => "blocked",
            FlowState::Completed => "completed",
            FlowState::Failed => "failed",
            FlowState::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        FlowState::ALL.into_iter().find(|s| s.as_str() == text)
    }

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
    /// The member's state, kept by `settle` with the counts.
    pub state: State,
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
    /// Set by a flow cancel, or by a failure under `on_failure: cancel_flow`:
    /// members that end no longer fire edges, since the rest is cancelled.
    #[serde(default)]
    pub halted: bool,
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

/// Most member transitions one operation applies before the rest of a
/// cascade (a large fan-out, a big flow's cancel) continues through the
/// partition's outbox, so no single operation holds the store for long.
pub const CASCADE_CHUNK_MAX: usize = 256;

/// A transition a member's change causes elsewhere in its flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FollowUp {
    /// Count an upstream's end on member `id`'s join.
    UpstreamEnded {
        /// The downstream member.
        id: ExecutionId,
        /// Whether the edge fired.
        fired: bool,
    },
    /// Cancel member `id` if it has not ended.
    Cancel {
        /// The member.
        id: ExecutionId,
        /// Recorded on the member.
        reason: String,
    },
}

/// Reads and writes a flow's members inside one atomic operation.
pub trait MemberIo {
    /// The member as this operation has left it so far.
    fn load(&mut self, id: &ExecutionId) -> Result<Execution>;
    /// Writes a member's transition (`old` is `None` for a new member) with
    /// the rest of the operation.
    fn write(&mut self, old: Option<&Execution>, transition: &Transition) -> Result<()>;
}

/// Records a member's move from `old` (`None` for a new member) to `new` on
/// its flow: counts, state and end time. Returns what the move causes in the
/// rest of the flow. A purge (`new` is `None`) changes nothing: the counts
/// stay a record of how every member ended.
pub fn settle(
    flow: &mut Flow,
    old: Option<&Execution>,
    new: Option<&Execution>,
    now_ms: i64,
) -> Vec<FollowUp> {
    let Some(member) = new else { return Vec::new() };
    let old_state = old.map(|e| e.state);
    if old_state != Some(member.state) {
        flow.counts.shift(old_state, Some(member.state));
    }
    flow.updated_at_ms = now_ms;
    flow.state = derive_state(&flow.counts, flow.cancelled);
    if flow.state.is_terminal() && flow.finished_at_ms.is_none() {
        flow.finished_at_ms = Some(now_ms);
    }
    let key = member.flow_node.clone().unwrap_or_default();
    if let Some(node) = flow.nodes.iter_mut().find(|n| n.key == key) {
        node.state = member.state;
    }
    let ended = member.state.is_terminal() && !old_state.is_some_and(State::is_terminal);
    let mut follow = Vec::new();
    if ended && !flow.halted {
        if flow.on_failure == OnFailure::CancelFlow
            && matches!(member.state, State::Failed | State::Expired)
        {
            flow.halted = true;
            let reason = format!("flow cancelled: member {key} {}", member.state.as_str());
            follow.extend(cancel_all(flow, &reason));
        } else {
            for edge in flow.downstream(&key) {
                if let Some(id) = flow.member(&edge.to) {
                    let fired = edge.on.fires(member.state).unwrap_or(false);
                    follow.push(FollowUp::UpstreamEnded {
                        id: id.clone(),
                        fired,
                    });
                }
            }
        }
    }
    let promoted = old_state == Some(State::Blocked) && member.state == State::Waiting;
    if promoted && member.join.is_some_and(|j| j.join.cancel_remaining) && !flow.halted {
        for edge in flow.upstream(&key) {
            if let Some(id) = flow.member(&edge.from) {
                let reason = format!("join of {key} satisfied");
                follow.push(FollowUp::Cancel {
                    id: id.clone(),
                    reason,
                });
            }
        }
    }
    follow
}

/// Follow-ups cancelling every member (those that ended are left alone).
pub fn cancel_all(flow: &Flow, reason: &str) -> Vec<FollowUp> {
    flow.nodes
        .iter()
        .map(|n| FollowUp::Cancel {
            id: n.execution_id.clone(),
            reason: reason.to_owned(),
        })
        .collect()
}

/// Applies follow-ups and everything they cause, breadth first, up to
/// `steps_max` member transitions; returns the follow-ups left over.
pub fn cascade(
    flow: &mut Flow,
    first: Vec<FollowUp>,
    io: &mut dyn MemberIo,
    now_ms: i64,
    config: &MachineConfig,
    steps_max: usize,
) -> Result<Vec<FollowUp>> {
    let mut queue: VecDeque<FollowUp> = first.into();
    let mut steps = 0;
    while let Some(next) = queue.pop_front() {
        if steps == steps_max {
            queue.push_front(next);
            return Ok(queue.into());
        }
        steps += 1;
        let (id, command) = match next {
            FollowUp::UpstreamEnded { id, fired } => (id, Command::UpstreamEnded { fired }),
            FollowUp::Cancel { id, reason } => (
                id,
                Command::Cancel {
                    reason: Some(reason),
                },
            ),
        };
        let exec = io.load(&id)?;
        if matches!(command, Command::Cancel { .. }) && exec.state.is_terminal() {
            continue;
        }
        let transition = machine::apply(&exec, command, now_ms, config)?;
        if transition.outcome != Outcome::Applied {
            continue;
        }
        io.write(Some(&exec), &transition)?;
        queue.extend(settle(
            flow,
            Some(&exec),
            transition.execution.as_ref(),
            now_ms,
        ));
    }
    Ok(Vec::new())
}

/// Settles a member transition the store has just written and runs what it
/// causes, up to `CASCADE_CHUNK_MAX` transitions: the one call every store
/// makes after changing a flow member. Returns the follow-ups left over,
/// which the store appends to the partition's outbox in the same operation.
pub fn after_member_transition(
    flow: &mut Flow,
    old: Option<&Execution>,
    transition: &Transition,
    io: &mut dyn MemberIo,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Vec<FollowUp>> {
    let follow = settle(flow, old, transition.execution.as_ref(), now_ms);
    cascade(flow, follow, io, now_ms, config, CASCADE_CHUNK_MAX)
}

/// Marks a flow cancelled and cancels every member that has not ended, up
/// to `CASCADE_CHUNK_MAX` of them; returns the cancels left for the outbox.
/// The flow ends `cancelled` with its last member.
pub fn cancel_flow(
    flow: &mut Flow,
    io: &mut dyn MemberIo,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Vec<FollowUp>> {
    if flow.state.is_terminal() {
        if flow.cancelled {
            return Ok(Vec::new());
        }
        return Err(Error::conflict(format!(
            "{} already ended {:?}",
            flow.id, flow.state
        )));
    }
    flow.cancelled = true;
    flow.halted = true;
    let follow = cancel_all(flow, "flow cancelled");
    let left = cascade(flow, follow, io, now_ms, config, CASCADE_CHUNK_MAX)?;
    flow.state = derive_state(&flow.counts, flow.cancelled);
    if flow.state.is_terminal() && flow.finished_at_ms.is_none() {
        flow.finished_at_ms = Some(now_ms);
    }
    Ok(left)
}

fn member_params(params: &SubmitParams) -> SubmitParams {
    // Members start with their flow: no delay, and the flow's idempotency.
    SubmitParams {
        delay_ms: None,
        run_at_ms: None,
        deadline_ms: None,
        idempotency_key: None,
        ..params.clone()
    }
}

/// Creates the members of `spec`'s nodes for `flow` (appending nodes and
/// edges to it): `blocked` with a join when a node has incoming edges,
/// `waiting` otherwise. `mint` names each member (on the flow's partition).
fn create_members(
    flow: &mut Flow,
    spec: &FlowSpec,
    mint: &mut dyn FnMut() -> ExecutionId,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Vec<Transition>> {
    let mut created = Vec::with_capacity(spec.nodes.len());
    for node in &spec.nodes {
        let mut exec = machine::submit(mint(), &member_params(&node.params), now_ms, config)?
            .execution
            .ok_or_else(|| Error::Internal("a submit created nothing".into()))?;
        let total = u32::try_from(spec.edges.iter().filter(|e| e.to == node.key).count())
            .unwrap_or(u32::MAX);
        exec.flow_id = Some(flow.id.clone());
        exec.flow_node = Some(node.key.clone());
        if total > 0 {
            let join = spec.joins.get(&node.key).copied().unwrap_or_default();
            exec.join = Some(JoinState {
                join,
                total,
                fired: 0,
                dead: 0,
            });
            exec.state = State::Blocked;
        }
        flow.nodes.push(FlowNode {
            key: node.key.clone(),
            execution_id: exec.id.clone(),
            state: exec.state,
        });
        settle(flow, None, Some(&exec), now_ms);
        created.push(Transition::between(None, Some(exec), None, config));
    }
    flow.edges.extend(spec.edges.iter().cloned());
    Ok(created)
}

/// A new flow and its members' transitions, from a checked request.
pub fn create(
    id: FlowId,
    spec: &FlowSpec,
    mint: &mut dyn FnMut() -> ExecutionId,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<(Flow, Vec<Transition>)> {
    spec.validate(config.payload_bytes_max)?;
    let mut flow = Flow {
        id,
        name: spec.name.clone(),
        state: FlowState::Running,
        idempotency_key: spec.idempotency_key.clone(),
        on_failure: spec.on_failure,
        cancelled: false,
        halted: false,
        nodes: Vec::with_capacity(spec.nodes.len()),
        edges: Vec::with_capacity(spec.edges.len()),
        counts: StateCounts::default(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        finished_at_ms: None,
    };
    let members = create_members(&mut flow, spec, mint, now_ms, config)?;
    Ok((flow, members))
}

/// Adds nodes to a running flow: writes the new members through `io` and
/// counts at once the ends of existing upstreams that already ended.
/// Returns the follow-ups left for the outbox.
pub fn add_nodes(
    flow: &mut Flow,
    spec: &FlowSpec,
    io: &mut dyn MemberIo,
    mint: &mut dyn FnMut() -> ExecutionId,
    now_ms: i64,
    config: &MachineConfig,
) -> Result<Vec<FollowUp>> {
    if flow.state.is_terminal() {
        return Err(Error::conflict(format!(
            "{} already ended; nodes join running flows",
            flow.id
        )));
    }
    spec.validate_addition(flow, config.payload_bytes_max)?;
    let existing: BTreeSet<String> = flow.nodes.iter().map(|n| n.key.clone()).collect();
    let members = create_members(flow, spec, mint, now_ms, config)?;
    let mut follow = Vec::new();
    for transition in &members {
        io.write(None, transition)?;
    }
    for edge in spec.edges.iter().filter(|e| existing.contains(&e.from)) {
        let (Some(from), Some(to)) = (flow.member(&edge.from), flow.member(&edge.to)) else {
            continue;
        };
        let upstream = io.load(&from.clone())?;
        if let Some(fired) = edge.on.fires(upstream.state) {
            if !flow.halted {
                follow.push(FollowUp::UpstreamEnded {
                    id: to.clone(),
                    fired,
                });
            }
        }
    }
    cascade(flow, follow, io, now_ms, config, CASCADE_CHUNK_MAX)
}

/// The flow as its members say it is: counts and node states recomputed from
/// `members` (a node whose member was purged keeps its recorded state), the
/// state derived again. The flow projector compares this with the record.
pub fn recount(flow: &Flow, members: &[Execution]) -> Flow {
    let mut fixed = flow.clone();
    fixed.counts = StateCounts::default();
    for node in &mut fixed.nodes {
        if let Some(member) = members.iter().find(|m| m.id == node.execution_id) {
            node.state = member.state;
        }
        fixed.counts.shift(None, Some(node.state));
    }
    fixed.state = derive_state(&fixed.counts, fixed.cancelled);
    if !fixed.state.is_terminal() {
        fixed.finished_at_ms = None;
    } else if fixed.finished_at_ms.is_none() {
        fixed.finished_at_ms = Some(fixed.updated_at_ms);
    }
    fixed
}

/// A claimed member's inputs: each upstream's result by node key (`null`
/// for an upstream that did not complete).
pub fn inputs(flow: &Flow, key: &str, io: &mut dyn MemberIo) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for edge in flow.upstream(key) {
        if let Some(id) = flow.member(&edge.from) {
            let upstream = io.load(&id.clone())?;
            let result = if upstream.state == State::Completed {
                upstream.result
            } else {
                None
            };
            out.insert(edge.from.clone(), result.unwrap_or(Value::Null));
        }
    }
    Ok(out)
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

    /// Members in memory, keyed by id.
    struct Memory(BTreeMap<ExecutionId, Execution>);

    impl MemberIo for Memory {
        fn load(&mut self, id: &ExecutionId) -> Result<Execution> {
            self.0.get(id).cloned().ok_or(Error::NotFound {
                what: "execution",
                id: id.to_string(),
            })
        }
        fn write(&mut self, _old: Option<&Execution>, t: &Transition) -> Result<()> {
            if let Some(exec) = &t.execution {
                self.0.insert(exec.id.clone(), exec.clone());
            }
            Ok(())
        }
    }

    fn build(spec: &FlowSpec) -> (Flow, Memory) {
        let config = MachineConfig::default();
        let p = crate::ids::PartitionId(0);
        let mut mint = || ExecutionId::mint(p, 0);
        let (flow, members) = create(FlowId::mint(p, 0), spec, &mut mint, 0, &config).unwrap();
        let memory = members
            .into_iter()
            .filter_map(|t| t.execution)
            .map(|e| (e.id.clone(), e))
            .collect();
        (flow, Memory(memory))
    }

    /// Ends member `key` in `state` as a worker or timer would, then settles.
    fn end(flow: &mut Flow, io: &mut Memory, key: &str, state: State) {
        let id = flow.member(key).unwrap().clone();
        let old = io.load(&id).unwrap();
        let mut new = old.clone();
        new.state = state;
        new.result = (state == State::Completed).then(|| Value::String(key.into()));
        let t = Transition::between(Some(&old), Some(new), None, &MachineConfig::default());
        io.write(Some(&old), &t).unwrap();
        after_member_transition(flow, Some(&old), &t, io, 1, &MachineConfig::default()).unwrap();
    }

    fn state_of(flow: &Flow, io: &mut Memory, key: &str) -> State {
        io.load(flow.member(key).unwrap()).unwrap().state
    }

    #[test]
    fn a_chain_promotes_and_a_failure_skips_downstream() {
        let s = spec(&["a", "b", "c"], &[("a", "b"), ("b", "c")]);
        let (mut flow, mut io) = build(&s);
        assert_eq!(state_of(&flow, &mut io, "b"), State::Blocked);
        end(&mut flow, &mut io, "a", State::Completed);
        assert_eq!(state_of(&flow, &mut io, "b"), State::Waiting);
        end(&mut flow, &mut io, "b", State::Failed);
        assert_eq!(state_of(&flow, &mut io, "c"), State::Skipped);
        assert_eq!(flow.state, FlowState::Failed);
        assert_eq!(flow.counts.total(), 3);
        let states: Vec<State> = flow.nodes.iter().map(|n| n.state).collect();
        assert_eq!(states, [State::Completed, State::Failed, State::Skipped]);
        let inputs = inputs(&flow, "b", &mut io).unwrap();
        assert_eq!(inputs.get("a"), Some(&Value::String("a".into())));
    }

    #[test]
    fn quorum_with_cancel_remaining_cancels_the_rest() {
        let mut s = spec(&["a", "b", "c", "d"], &[("a", "d"), ("b", "d"), ("c", "d")]);
        s.joins.insert(
            "d".into(),
            Join {
                mode: JoinMode::Quorum,
                n: Some(2),
                cancel_remaining: true,
            },
        );
        let (mut flow, mut io) = build(&s);
        end(&mut flow, &mut io, "a", State::Completed);
        assert_eq!(state_of(&flow, &mut io, "d"), State::Blocked);
        end(&mut flow, &mut io, "b", State::Completed);
        assert_eq!(state_of(&flow, &mut io, "d"), State::Waiting);
        assert_eq!(state_of(&flow, &mut io, "c"), State::Cancelled);
        assert_eq!(flow.state, FlowState::Running);
        end(&mut flow, &mut io, "d", State::Completed);
        assert_eq!(flow.state, FlowState::Completed);
    }

    #[test]
    fn failure_edges_and_cancel_flow() {
        let mut s = spec(&["a", "onfail", "next"], &[("a", "next")]);
        s.edges.push(FlowEdge {
            from: "a".into(),
            to: "onfail".into(),
            on: EdgeOn::Failure,
        });
        let (mut flow, mut io) = build(&s);
        end(&mut flow, &mut io, "a", State::Failed);
        assert_eq!(state_of(&flow, &mut io, "onfail"), State::Waiting);
        assert_eq!(state_of(&flow, &mut io, "next"), State::Skipped);

        let mut s = spec(&["a", "b", "c"], &[("a", "c")]);
        s.on_failure = OnFailure::CancelFlow;
        let (mut flow, mut io) = build(&s);
        end(&mut flow, &mut io, "a", State::Failed);
        assert_eq!(state_of(&flow, &mut io, "b"), State::Cancelled);
        assert_eq!(state_of(&flow, &mut io, "c"), State::Cancelled);
        assert_eq!(flow.state, FlowState::Failed);
    }

    #[test]
    fn cancelling_a_flow_cancels_every_open_member() {
        let s = spec(&["a", "b", "c"], &[("a", "b"), ("b", "c")]);
        let (mut flow, mut io) = build(&s);
        end(&mut flow, &mut io, "a", State::Completed);
        cancel_flow(&mut flow, &mut io, 2, &MachineConfig::default()).unwrap();
        assert_eq!(state_of(&flow, &mut io, "a"), State::Completed);
        assert_eq!(state_of(&flow, &mut io, "b"), State::Cancelled);
        assert_eq!(state_of(&flow, &mut io, "c"), State::Cancelled);
        assert_eq!(flow.state, FlowState::Cancelled);
        assert_eq!(flow.counts.get(State::Cancelled), 2);
    }

    #[test]
    fn nodes_added_after_their_upstream_ended_are_decided_at_once() {
        let s = spec(&["a"], &[]);
        let (mut flow, mut io) = build(&s);
        let mut s2 = spec(&["b", "c"], &[("a", "b")]);
        s2.edges.push(FlowEdge {
            from: "a".into(),
            to: "c".into(),
            on: EdgeOn::Failure,
        });
        // Add while a runs, then add more after it completed.
        let p = crate::ids::PartitionId(0);
        let mut mint = || ExecutionId::mint(p, 0);
        let config = MachineConfig::default();
        add_nodes(&mut flow, &s2, &mut io, &mut mint, 1, &config).unwrap();
        end(&mut flow, &mut io, "a", State::Completed);
        assert_eq!(state_of(&flow, &mut io, "b"), State::Waiting);
        assert_eq!(state_of(&flow, &mut io, "c"), State::Skipped);
        add_nodes(
            &mut flow,
            &spec(&["d"], &[("a", "d")]),
            &mut io,
            &mut mint,
            2,
            &config,
        )
        .unwrap();
        assert_eq!(state_of(&flow, &mut io, "d"), State::Waiting);
        assert_eq!(flow.counts.total(), 4);
    }

    #[test]
    fn recount_repairs_drifted_counts() {
        let s = spec(&["a", "b"], &[("a", "b")]);
        let (mut flow, mut io) = build(&s);
        end(&mut flow, &mut io, "a", State::Completed);
        let members: Vec<Execution> = io.0.values().cloned().collect();
        assert_eq!(
            recount(&flow, &members),
            flow,
            "a healthy flow needs no repair"
        );
        let mut drifted = flow.clone();
        drifted
            .counts
            .shift(Some(State::Waiting), Some(State::Failed));
        drifted.nodes[1].state = State::Failed;
        assert_eq!(recount(&drifted, &members), flow);
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
            halted: false,
            nodes: vec![FlowNode {
                key: "a".into(),
                execution_id: ExecutionId::mint(crate::ids::PartitionId(0), 0),
                state: State::Waiting,
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
