//! Flows: DAGs of executions whose summary is exact at every step.
//!
//! Goal: `flow_create` makes every member in one operation (roots `waiting`,
//! the rest `blocked`); an upstream's end fires or kills its edges and
//! decides its downstreams' joins (`all`, `any`, `quorum`, with
//! `cancel_remaining`) in the same operation; skips propagate; failure edges
//! run compensations; `on_failure: cancel_flow` and `flow_cancel` cancel
//! every open member and fence active leases off; nodes added at run time
//! are decided at once from upstreams that already ended, and bad additions
//! write nothing; a claimed member sees its upstreams' results as `inputs`;
//! a member's lapsed lease is retried without disturbing the flow; flow
//! idempotency keys deduplicate creates; members cannot be replayed; the
//! store announces a flow's end; flows list by state with a cursor.
//!
//! Method: drive members as a worker would (claim by the member's lane,
//! complete, fail) through the support helpers; every node gets a lane of
//! its own (`<test lane>.<key>`) unless a test claims a batch. After every
//! step `checked` reads the flow and its members and asserts the summary:
//! counts sum to `total` (one per node) and tally the members' states, each
//! node records its member's state, the state follows from the counts, and
//! the flow's partition audits clean. Every test first probes
//! `supports_flows` and returns with a reason when the store has none.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use weft_core::flow::{
    derive_state, EdgeOn, Flow, FlowEdge, FlowNodeSpec, FlowSpec, FlowState, Join, JoinMode,
    OnFailure, StateCounts,
};
use weft_core::{
    ClaimParams, CompleteParams, Execution, FlowId, FlowListParams, ListParams, State, StoreEvent,
    SubmitParams, Task, RETENTION_MS_DEFAULT,
};

use crate::support::{
    advance_past, assert_audit_clean, assert_conflict, assert_invalid, assert_lease_lost,
    assert_not_found, cancel, claim_exec, claim_params, complete, fail, fixed_backoff, get,
    heartbeat, list_all, tick_all, unique_lane, LEASE_MS, LONG_LEASE_MS,
};
use crate::Harness;

/// Says why a test does not run, when the store has no flows.
pub(crate) fn unsupported(h: &Harness) -> bool {
    if h.store.supports_flows() {
        return false;
    }
    eprintln!("skipped: this store does not support flows (supports_flows() is false)");
    true
}

/// A node `key` in lane `<base>.<key>`.
fn node(base: &str, key: &str) -> FlowNodeSpec {
    FlowNodeSpec {
        key: key.to_owned(),
        params: SubmitParams {
            lane: Some(format!("{base}.{key}")),
            ..SubmitParams::new(format!("flow.{key}"), json!({ "node": key }))
        },
    }
}

/// An edge `from → to` firing on `on`.
fn edge_on(from: &str, to: &str, on: EdgeOn) -> FlowEdge {
    FlowEdge {
        from: from.to_owned(),
        to: to.to_owned(),
        on,
    }
}

/// Nodes in lanes of a fresh base, and success edges.
pub(crate) fn spec(nodes: &[&str], edges: &[(&str, &str)]) -> FlowSpec {
    let base = unique_lane();
    FlowSpec {
        nodes: nodes.iter().map(|k| node(&base, k)).collect(),
        edges: edges
            .iter()
            .map(|(a, b)| edge_on(a, b, EdgeOn::Success))
            .collect(),
        ..FlowSpec::default()
    }
}

/// `spec` with node `key` joined by `mode`.
fn with_join(
    mut spec: FlowSpec,
    key: &str,
    mode: JoinMode,
    n: Option<u32>,
    cancel: bool,
) -> FlowSpec {
    let join = Join {
        mode,
        n,
        cancel_remaining: cancel,
    };
    spec.joins.insert(key.to_owned(), join);
    spec
}

/// What node `key`'s worker returns.
fn result_of(key: &str) -> Value {
    json!({ "from": key })
}

async fn create(h: &Harness, spec: &FlowSpec) -> Flow {
    let created = h
        .store
        .flow_create(spec)
        .await
        .unwrap_or_else(|e| panic!("flow_create: {e}"));
    assert!(created.created, "a create without a known key creates");
    created.flow
}

async fn get_flow(h: &Harness, id: &FlowId) -> Flow {
    h.store
        .flow_get(id)
        .await
        .unwrap_or_else(|e| panic!("flow_get {id}: {e}"))
}

/// The members of flow `id`, as listed by `flow_id`.
async fn members(h: &Harness, id: &FlowId) -> Vec<Execution> {
    let filter = ListParams {
        flow_id: Some(id.to_string()),
        ..ListParams::default()
    };
    list_all(h, &filter, 1000).await
}

/// Node `key`'s member.
async fn member(h: &Harness, flow: &Flow, key: &str) -> Execution {
    let id = flow
        .member(key)
        .unwrap_or_else(|| panic!("{} has no node {key}", flow.id));
    get(h, id).await
}

/// Reads flow `id` and checks its summary against its members; audits its
/// partition.
async fn checked(h: &Harness, id: &FlowId) -> Flow {
    let flow = get_flow(h, id).await;
    let members = members(h, id).await;
    assert_eq!(members.len(), flow.nodes.len(), "{id}: one member per node");
    let mut tally = StateCounts::default();
    for node in &flow.nodes {
        let m = members
            .iter()
            .find(|e| e.id == node.execution_id)
            .unwrap_or_else(|| panic!("{id}: member of {} not listed", node.key));
        assert_eq!(m.state, node.state, "{id}: node {} state", node.key);
        assert_eq!(m.flow_node.as_deref(), Some(node.key.as_str()));
        assert_eq!(m.flow_id.as_ref(), Some(&flow.id));
        assert_eq!(
            m.id.partition(),
            flow.id.partition(),
            "members share a partition"
        );
        tally.shift(None, Some(m.state));
    }
    assert_eq!(flow.counts, tally, "{id}: counts tally the members");
    let total = usize::try_from(flow.counts.total()).unwrap_or(usize::MAX);
    assert_eq!(total, flow.nodes.len(), "{id}: counts sum to total");
    assert_eq!(
        flow.state,
        derive_state(&flow.counts, flow.cancelled),
        "{id}: state"
    );
    assert_eq!(flow.state.is_terminal(), flow.finished_at_ms.is_some());
    let report = h
        .store
        .partition_audit(flow.id.partition())
        .await
        .unwrap_or_else(|e| panic!("audit: {e}"));
    assert!(report.problems.is_empty(), "audit: {:#?}", report.problems);
    flow
}

/// `checked`, and each listed node is in its state.
async fn expect(h: &Harness, id: &FlowId, states: &[(&str, State)]) -> Flow {
    let flow = checked(h, id).await;
    for (key, state) in states {
        let node = flow
            .nodes
            .iter()
            .find(|n| n.key == *key)
            .unwrap_or_else(|| panic!("{id} has no node {key}"));
        assert_eq!(node.state, *state, "{id}: node {key}");
    }
    flow
}

/// Claims node `key` from its lane and checks the task names the node.
async fn claim_node(h: &Harness, id: &FlowId, key: &str, lease_ms: i64) -> Task {
    let flow = get_flow(h, id).await;
    let exec = member(h, &flow, key).await;
    assert_eq!(exec.state, State::Waiting, "{key} must be claimable");
    let task = claim_exec(h, &exec, lease_ms).await;
    assert_eq!(task.flow_id.as_ref(), Some(id));
    assert_eq!(task.flow_node.as_deref(), Some(key));
    task
}

/// Claims node `key` and completes it with `result_of(key)`; returns the
/// task (with its inputs).
async fn run_node(h: &Harness, id: &FlowId, key: &str) -> Task {
    let task = claim_node(h, id, key, LONG_LEASE_MS).await;
    let done = complete(h, &task, result_of(key))
        .await
        .unwrap_or_else(|e| panic!("complete {key}: {e}"));
    assert_eq!(done.state, State::Completed);
    task
}

/// Claims node `key` and fails it for good.
async fn fail_node(h: &Harness, id: &FlowId, key: &str) {
    let task = claim_node(h, id, key, LONG_LEASE_MS).await;
    let done = fail(h, &task, false)
        .await
        .unwrap_or_else(|e| panic!("fail {key}: {e}"));
    assert_eq!(done.state, State::Failed);
}

/// The inputs a task carries, as `(key, value)` pairs.
fn inputs_of(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A chain of five: each member runs after the one before and sees its
/// result as its only input.
pub async fn linear_chain_passes_inputs(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let keys = ["a", "b", "c", "d", "e"];
    let flow = create(
        &h,
        &spec(&keys, &[("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")]),
    )
    .await;
    assert_eq!(flow.state, FlowState::Running);
    let blocked: Vec<(&str, State)> = keys[1..].iter().map(|k| (*k, State::Blocked)).collect();
    expect(
        &h,
        &flow.id,
        &[&[("a", State::Waiting)], blocked.as_slice()].concat(),
    )
    .await;
    for (i, key) in keys.iter().enumerate() {
        let task = run_node(&h, &flow.id, key).await;
        let expected = match i {
            0 => BTreeMap::new(),
            _ => inputs_of(&[(keys[i - 1], result_of(keys[i - 1]))]),
        };
        assert_eq!(task.inputs, expected, "inputs of {key}");
        let after = checked(&h, &flow.id).await;
        assert_eq!(after.counts.get(State::Completed) as usize, i + 1);
        if let Some(next) = keys.get(i + 1) {
            expect(&h, &flow.id, &[(next, State::Waiting)]).await;
            assert_eq!(after.state, FlowState::Running);
        }
    }
    let done = checked(&h, &flow.id).await;
    assert_eq!(done.state, FlowState::Completed);
    assert_audit_clean(&h).await;
}

/// A diamond: the join waits for both branches and sees both results.
pub async fn diamond_joins_all(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let s = spec(
        &["a", "b", "c", "d"],
        &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    );
    let flow = create(&h, &s).await;
    run_node(&h, &flow.id, "a").await;
    expect(
        &h,
        &flow.id,
        &[
            ("b", State::Waiting),
            ("c", State::Waiting),
            ("d", State::Blocked),
        ],
    )
    .await;
    run_node(&h, &flow.id, "b").await;
    expect(
        &h,
        &flow.id,
        &[("c", State::Waiting), ("d", State::Blocked)],
    )
    .await;
    run_node(&h, &flow.id, "c").await;
    expect(&h, &flow.id, &[("d", State::Waiting)]).await;
    let task = run_node(&h, &flow.id, "d").await;
    let both = inputs_of(&[("b", result_of("b")), ("c", result_of("c"))]);
    assert_eq!(task.inputs, both);
    assert_eq!(checked(&h, &flow.id).await.state, FlowState::Completed);
    assert_audit_clean(&h).await;
}

/// One root, a hundred members claimed as one batch, one sink: the summary
/// is exact after every single completion.
pub async fn fan_out_fan_in_of_100(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let base = unique_lane();
    let mid_lane = format!("{base}.mid");
    let mids: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    let mut nodes = vec![node(&base, "root"), node(&base, "sink")];
    for key in &mids {
        let mut n = node(&base, key);
        n.params.lane = Some(mid_lane.clone());
        nodes.push(n);
    }
    let mut edges = Vec::new();
    for key in &mids {
        edges.push(edge_on("root", key, EdgeOn::Success));
        edges.push(edge_on(key, "sink", EdgeOn::Success));
    }
    let s = FlowSpec {
        nodes,
        edges,
        ..FlowSpec::default()
    };
    let flow = create(&h, &s).await;
    assert_eq!(flow.counts.get(State::Blocked), 101);
    run_node(&h, &flow.id, "root").await;
    let after_root = checked(&h, &flow.id).await;
    assert_eq!(after_root.counts.get(State::Waiting), 100);
    let claim = ClaimParams {
        max: 100,
        ..claim_params(&[mid_lane.as_str()], &[], 1, LONG_LEASE_MS)
    };
    let tasks = h
        .store
        .execution_claim(flow.id.partition(), &claim)
        .await
        .unwrap_or_else(|e| panic!("batch claim: {e}"));
    assert_eq!(tasks.len(), 100, "the batch takes every middle member");
    let root_input = inputs_of(&[("root", result_of("root"))]);
    for task in &tasks {
        assert_eq!(task.inputs, root_input);
    }
    assert_eq!(checked(&h, &flow.id).await.counts.get(State::Active), 100);
    complete_all(&h, &flow.id, &tasks).await;
    expect(&h, &flow.id, &[("sink", State::Waiting)]).await;
    let sink = run_node(&h, &flow.id, "sink").await;
    assert_eq!(sink.inputs.len(), 100);
    assert!(mids
        .iter()
        .all(|k| sink.inputs.get(k) == Some(&result_of(k))));
    let done = checked(&h, &flow.id).await;
    assert_eq!(done.state, FlowState::Completed);
    assert_eq!(done.counts.get(State::Completed), 102);
    assert_audit_clean(&h).await;
}

/// Completes the fan-out's tasks one by one, checking the summary each time.
async fn complete_all(h: &Harness, id: &FlowId, tasks: &[Task]) {
    for (i, task) in tasks.iter().enumerate() {
        let key = task.flow_node.clone().unwrap_or_default();
        complete(h, task, result_of(&key))
            .await
            .unwrap_or_else(|e| panic!("complete {key}: {e}"));
        let flow = get_flow(h, id).await;
        let done = u32::try_from(i).unwrap_or(u32::MAX) + 1;
        assert_eq!(flow.counts.get(State::Completed), 1 + done, "after {key}");
        assert_eq!(flow.counts.get(State::Active), 100 - done, "after {key}");
        assert_eq!(flow.counts.total(), 102);
        let sink = if done == 100 {
            State::Waiting
        } else {
            State::Blocked
        };
        assert_eq!(flow.counts.get(sink), 1, "the sink after {done} of 100");
        if done % 25 == 0 {
            checked(h, id).await;
        }
    }
}

/// Any-of without `cancel_remaining`: the first upstream promotes the join;
/// the others keep running and their ends change nothing for it.
pub async fn any_of_keeps_the_rest(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let s = spec(&["a", "b", "c", "d"], &[("a", "d"), ("b", "d"), ("c", "d")]);
    let flow = create(&h, &with_join(s, "d", JoinMode::Any, None, false)).await;
    let b = claim_node(&h, &flow.id, "b", LONG_LEASE_MS).await;
    run_node(&h, &flow.id, "a").await;
    expect(
        &h,
        &flow.id,
        &[
            ("d", State::Waiting),
            ("b", State::Active),
            ("c", State::Waiting),
        ],
    )
    .await;
    fail(&h, &b, false).await.expect("fail b");
    expect(&h, &flow.id, &[("d", State::Waiting), ("b", State::Failed)]).await;
    let d = run_node(&h, &flow.id, "d").await;
    let seen = inputs_of(&[
        ("a", result_of("a")),
        ("b", Value::Null),
        ("c", Value::Null),
    ]);
    assert_eq!(d.inputs, seen, "upstreams that did not complete give null");
    run_node(&h, &flow.id, "c").await;
    let done = checked(&h, &flow.id).await;
    assert_eq!(done.state, FlowState::Failed, "b failed");
    assert_audit_clean(&h).await;
}

/// Any-of with `cancel_remaining`: the first upstream's success cancels the
/// others, and a cancelled upstream's lease is lost.
pub async fn any_of_cancels_the_rest(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let s = spec(&["a", "b", "c", "d"], &[("a", "d"), ("b", "d"), ("c", "d")]);
    let flow = create(&h, &with_join(s, "d", JoinMode::Any, None, true)).await;
    let b = claim_node(&h, &flow.id, "b", LONG_LEASE_MS).await;
    run_node(&h, &flow.id, "a").await;
    expect(
        &h,
        &flow.id,
        &[
            ("d", State::Waiting),
            ("b", State::Cancelled),
            ("c", State::Cancelled),
        ],
    )
    .await;
    assert_lease_lost(
        complete(&h, &b, json!(1)).await,
        "complete of a cancelled upstream",
    );
    let d = run_node(&h, &flow.id, "d").await;
    assert_eq!(d.inputs.get("a"), Some(&result_of("a")));
    let done = checked(&h, &flow.id).await;
    assert_eq!(
        done.state,
        FlowState::Completed,
        "cancelled members fail nothing"
    );
    assert_audit_clean(&h).await;
}

/// Quorum 2 of 3 with `cancel_remaining`: one success is not enough, the
/// second promotes the join and cancels the third.
pub async fn quorum_cancels_the_rest(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let s = spec(&["a", "b", "c", "d"], &[("a", "d"), ("b", "d"), ("c", "d")]);
    let flow = create(&h, &with_join(s, "d", JoinMode::Quorum, Some(2), true)).await;
    run_node(&h, &flow.id, "a").await;
    expect(
        &h,
        &flow.id,
        &[("d", State::Blocked), ("c", State::Waiting)],
    )
    .await;
    run_node(&h, &flow.id, "b").await;
    expect(
        &h,
        &flow.id,
        &[("d", State::Waiting), ("c", State::Cancelled)],
    )
    .await;
    let d = run_node(&h, &flow.id, "d").await;
    assert_eq!(d.inputs.get("b"), Some(&result_of("b")));
    assert_eq!(d.inputs.get("c"), Some(&Value::Null));
    assert_eq!(checked(&h, &flow.id).await.state, FlowState::Completed);

    // A quorum that can no longer be reached skips its node.
    let s = spec(&["a", "b", "c", "d"], &[("a", "d"), ("b", "d"), ("c", "d")]);
    let flow = create(&h, &with_join(s, "d", JoinMode::Quorum, Some(2), true)).await;
    fail_node(&h, &flow.id, "a").await;
    expect(&h, &flow.id, &[("d", State::Blocked)]).await;
    fail_node(&h, &flow.id, "b").await;
    expect(
        &h,
        &flow.id,
        &[("d", State::Skipped), ("c", State::Waiting)],
    )
    .await;
    assert_audit_clean(&h).await;
}

/// `on: failure` runs a compensation only when its upstream fails, `on: any`
/// in both cases, `on: success` only on success.
pub async fn failure_edges_run_compensations(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let edged = || {
        let mut s = spec(&["a", "ok", "undo", "always"], &[("a", "ok")]);
        s.edges.push(edge_on("a", "undo", EdgeOn::Failure));
        s.edges.push(edge_on("a", "always", EdgeOn::Any));
        s
    };
    let flow = create(&h, &edged()).await;
    fail_node(&h, &flow.id, "a").await;
    expect(
        &h,
        &flow.id,
        &[
            ("ok", State::Skipped),
            ("undo", State::Waiting),
            ("always", State::Waiting),
        ],
    )
    .await;
    let undo = run_node(&h, &flow.id, "undo").await;
    assert_eq!(undo.inputs, inputs_of(&[("a", Value::Null)]));
    run_node(&h, &flow.id, "always").await;
    assert_eq!(checked(&h, &flow.id).await.state, FlowState::Failed);

    let flow = create(&h, &edged()).await;
    run_node(&h, &flow.id, "a").await;
    expect(
        &h,
        &flow.id,
        &[
            ("ok", State::Waiting),
            ("undo", State::Skipped),
            ("always", State::Waiting),
        ],
    )
    .await;
    let always = run_node(&h, &flow.id, "always").await;
    assert_eq!(always.inputs, inputs_of(&[("a", result_of("a"))]));
    run_node(&h, &flow.id, "ok").await;
    assert_eq!(checked(&h, &flow.id).await.state, FlowState::Completed);
    assert_audit_clean(&h).await;
}

/// A failure skips its downstream through three levels, in one operation;
/// an independent branch runs on, and the flow ends `failed` after it.
pub async fn skips_propagate(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let s = spec(
        &["a", "b", "c", "d", "x"],
        &[("a", "b"), ("b", "c"), ("c", "d")],
    );
    let flow = create(&h, &s).await;
    fail_node(&h, &flow.id, "a").await;
    let after = expect(
        &h,
        &flow.id,
        &[
            ("b", State::Skipped),
            ("c", State::Skipped),
            ("d", State::Skipped),
        ],
    )
    .await;
    assert_eq!(after.state, FlowState::Running, "x still runs");
    run_node(&h, &flow.id, "x").await;
    assert_eq!(checked(&h, &flow.id).await.state, FlowState::Failed);

    // A member cancelled on its own fires no edge: its downstream skips, and
    // a flow without failures ends `completed`.
    let flow = create(&h, &spec(&["a", "b"], &[("a", "b")])).await;
    let a = flow.member("a").expect("a").clone();
    cancel(&h, &a).await.expect("cancel a");
    let done = expect(
        &h,
        &flow.id,
        &[("a", State::Cancelled), ("b", State::Skipped)],
    )
    .await;
    assert_eq!(done.state, FlowState::Completed);
    assert_audit_clean(&h).await;
}

/// `on_failure: cancel_flow`: a member that fails for good cancels every
/// open member (an active one loses its lease) and the flow ends `failed`.
pub async fn on_failure_cancels_the_flow(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let mut s = spec(&["a", "b", "c", "d"], &[("a", "c")]);
    s.on_failure = OnFailure::CancelFlow;
    let flow = create(&h, &s).await;
    let b = claim_node(&h, &flow.id, "b", LONG_LEASE_MS).await;
    run_node(&h, &flow.id, "d").await;
    fail_node(&h, &flow.id, "a").await;
    let done = expect(
        &h,
        &flow.id,
        &[
            ("a", State::Failed),
            ("b", State::Cancelled),
            ("c", State::Cancelled),
            ("d", State::Completed),
        ],
    )
    .await;
    assert_eq!(done.state, FlowState::Failed);
    assert_lease_lost(
        complete(&h, &b, json!(1)).await,
        "complete after the flow stopped",
    );
    assert_audit_clean(&h).await;
}

/// Cancelling a running flow cancels every open member at once; the active
/// member's old lease is lost; ended members keep their end; cancelling
/// again answers the cancelled flow.
pub async fn cancel_mid_flight(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let flow = create(&h, &spec(&["a", "b", "c", "d"], &[("a", "b"), ("b", "c")])).await;
    run_node(&h, &flow.id, "a").await;
    let b = claim_node(&h, &flow.id, "b", LONG_LEASE_MS).await;
    let cancelled = h.store.flow_cancel(&flow.id).await.expect("flow_cancel");
    assert_eq!(cancelled.state, FlowState::Cancelled);
    assert!(cancelled.cancelled);
    let done = expect(
        &h,
        &flow.id,
        &[
            ("a", State::Completed),
            ("b", State::Cancelled),
            ("c", State::Cancelled),
            ("d", State::Cancelled),
        ],
    )
    .await;
    assert_eq!(done, cancelled);
    assert_lease_lost(
        complete(&h, &b, json!(1)).await,
        "complete after flow cancel",
    );
    assert_lease_lost(fail(&h, &b, true).await, "fail after flow cancel");
    assert_lease_lost(heartbeat(&h, &b, None).await, "heartbeat after flow cancel");
    let again = h.store.flow_cancel(&flow.id).await.expect("cancel again");
    assert_eq!(again, cancelled);
    let missing = FlowId::mint(flow.id.partition(), 1);
    assert_not_found(
        h.store.flow_cancel(&missing).await,
        "cancel of an unknown flow",
    );
    assert_not_found(h.store.flow_get(&missing).await, "get of an unknown flow");

    // A flow that ended otherwise cannot be cancelled.
    let other = create(&h, &spec(&["a"], &[])).await;
    run_node(&h, &other.id, "a").await;
    assert_conflict(
        h.store.flow_cancel(&other.id).await,
        "cancel of a completed flow",
    );
    assert_audit_clean(&h).await;
}

/// Nodes added to a running flow: blocked behind running upstreams, decided
/// at once behind ended ones; bad additions write nothing.
pub async fn nodes_are_added_at_run_time(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let base = unique_lane();
    let add = |nodes: &[&str], edges: &[(&str, &str, EdgeOn)]| addition(&base, nodes, edges);
    let flow = create(&h, &spec(&["a", "b"], &[("a", "b")])).await;
    let a = claim_node(&h, &flow.id, "a", LONG_LEASE_MS).await;
    let grown = h
        .store
        .flow_add_nodes(&flow.id, &add(&["c"], &[("a", "c", EdgeOn::Success)]))
        .await
        .expect("add c");
    assert_eq!(grown.nodes.len(), 3);
    expect(&h, &flow.id, &[("c", State::Blocked)]).await;
    complete(&h, &a, result_of("a")).await.expect("complete a");
    expect(
        &h,
        &flow.id,
        &[("b", State::Waiting), ("c", State::Waiting)],
    )
    .await;

    let late = add(
        &["d", "e", "f"],
        &[
            ("a", "d", EdgeOn::Success),
            ("a", "e", EdgeOn::Failure),
            ("b", "f", EdgeOn::Success),
            ("c", "f", EdgeOn::Success),
        ],
    );
    h.store
        .flow_add_nodes(&flow.id, &late)
        .await
        .expect("add d, e, f");
    let states = [
        ("d", State::Waiting),
        ("e", State::Skipped),
        ("f", State::Blocked),
    ];
    expect(&h, &flow.id, &states).await;
    let d = run_node(&h, &flow.id, "d").await;
    assert_eq!(d.inputs, inputs_of(&[("a", result_of("a"))]));

    refuse_bad_additions(&h, &flow.id, &base).await;

    for key in ["b", "c", "f"] {
        run_node(&h, &flow.id, key).await;
    }
    let done = checked(&h, &flow.id).await;
    assert_eq!(done.state, FlowState::Completed);
    let more = add(&["g"], &[]);
    assert_conflict(
        h.store.flow_add_nodes(&flow.id, &more).await,
        "add to an ended flow",
    );
    let missing = FlowId::mint(flow.id.partition(), 1);
    assert_not_found(
        h.store.flow_add_nodes(&missing, &more).await,
        "add to no flow",
    );
    assert_audit_clean(&h).await;
}

/// Nodes to add, in lanes of `base`, with edges firing as given.
fn addition(base: &str, nodes: &[&str], edges: &[(&str, &str, EdgeOn)]) -> FlowSpec {
    FlowSpec {
        nodes: nodes.iter().map(|k| node(base, k)).collect(),
        edges: edges.iter().map(|(a, b, on)| edge_on(a, b, *on)).collect(),
        ..FlowSpec::default()
    }
}

/// Each malformed addition is `invalid_argument` and leaves the flow and its
/// members exactly as they were.
async fn refuse_bad_additions(h: &Harness, id: &FlowId, base: &str) {
    let add = |nodes: &[&str], edges: &[(&str, &str, EdgeOn)]| addition(base, nodes, edges);
    let before = checked(h, id).await;
    let before_members = members(h, id).await;
    let s = EdgeOn::Success;
    let cases = [
        (
            add(&["g"], &[("g", "b", s)]),
            "edges[0].to",
            "edge into an existing node",
        ),
        (
            add(&["x", "y"], &[("x", "y", s), ("y", "x", s)]),
            "edges",
            "cycle",
        ),
        (
            add(&["g", "a"], &[]),
            "nodes[1].key",
            "duplicate of an existing key",
        ),
        (
            add(&["g", "g"], &[]),
            "nodes[1].key",
            "duplicate within the addition",
        ),
        (
            add(&["g"], &[("nope", "g", s)]),
            "edges[0].from",
            "unknown upstream",
        ),
        (
            add(&["g"], &[("a", "nope", s)]),
            "edges[0].to",
            "unknown downstream",
        ),
        (add(&[], &[]), "nodes", "nothing to add"),
    ];
    for (spec, field, what) in cases {
        assert_invalid(h.store.flow_add_nodes(id, &spec).await, field, what);
        assert_eq!(get_flow(h, id).await, before, "{what} wrote nothing");
        assert_eq!(members(h, id).await, before_members, "{what} wrote nothing");
    }
}

/// Bad creates are `invalid_argument` and create nothing.
pub async fn bad_flows_are_refused(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let cycle = spec(&["a", "b", "c"], &[("a", "b"), ("b", "c"), ("c", "a")]);
    let cases = [
        (cycle, "edges"),
        (spec(&["a", "a"], &[]), "nodes[1].key"),
        (spec(&["a"], &[("a", "x")]), "edges[0].to"),
        (spec(&["a"], &[("x", "a")]), "edges[0].from"),
        (spec(&[], &[]), "nodes"),
        (
            with_join(
                spec(&["a", "b"], &[("a", "b")]),
                "b",
                JoinMode::Quorum,
                Some(2),
                false,
            ),
            "joins.b.n",
        ),
    ];
    for (s, field) in cases {
        assert_invalid(h.store.flow_create(&s).await, field, field);
    }
    let all = FlowListParams {
        limit: 10,
        ..FlowListParams::default()
    };
    let page = h.store.flow_list(&all).await.expect("list");
    assert!(page.items.is_empty(), "nothing was created: {page:?}");
    assert!(crate::support::list_everything(&h).await.is_empty());
    assert_audit_clean(&h).await;
}

/// A member's lease lapses: the tick puts it back to `waiting`, the flow
/// stays consistent, the old lease is lost; a retryable failure backs off and
/// the delay timer brings it back; the third attempt finishes the job.
pub async fn lapsed_lease_is_retried_in_flow(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let mut s = spec(&["a", "b"], &[("a", "b")]);
    s.nodes[0].params.backoff = Some(fixed_backoff(100));
    let flow = create(&h, &s).await;
    let first = claim_node(&h, &flow.id, "a", LEASE_MS).await;
    expect(&h, &flow.id, &[("a", State::Active), ("b", State::Blocked)]).await;
    advance_past(&h, first.lease.expires_at_ms).await;
    assert!(tick_all(&h).await >= 1, "the lapsed lease is applied");
    let after = expect(
        &h,
        &flow.id,
        &[("a", State::Waiting), ("b", State::Blocked)],
    )
    .await;
    assert_eq!(after.state, FlowState::Running);
    assert_lease_lost(
        complete(&h, &first, json!(1)).await,
        "complete by the lapsed lease",
    );
    // A retryable failure backs off (`delayed`); the delay timer brings the
    // member back inside the flow.
    let second = claim_node(&h, &flow.id, "a", LONG_LEASE_MS).await;
    assert_eq!(second.attempt.0, 2);
    let delayed = fail(&h, &second, true).await.expect("fail a");
    assert_eq!(delayed.state, State::Delayed);
    let blocked = expect(&h, &flow.id, &[("a", State::Delayed)]).await;
    assert_eq!(
        blocked.state,
        FlowState::Running,
        "a delayed member can run"
    );
    advance_past(&h, delayed.run_at_ms.expect("run_at")).await;
    assert!(tick_all(&h).await >= 1, "the delay is applied");
    expect(
        &h,
        &flow.id,
        &[("a", State::Waiting), ("b", State::Blocked)],
    )
    .await;
    let retry = run_node(&h, &flow.id, "a").await;
    assert_eq!(retry.attempt.0, 3);
    let b = run_node(&h, &flow.id, "b").await;
    assert_eq!(b.inputs, inputs_of(&[("a", result_of("a"))]));
    assert_eq!(checked(&h, &flow.id).await.state, FlowState::Completed);
    assert_audit_clean(&h).await;
}

/// The same idempotency key returns the same flow and creates no members;
/// flow keys do not collide with execution keys.
pub async fn flow_idempotency_key(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let key = format!("flow-key-{}", unique_lane());
    let mut s = spec(&["a", "b"], &[("a", "b")]);
    s.idempotency_key = Some(key.clone());
    let first = create(&h, &s).await;
    assert_eq!(first.idempotency_key.as_deref(), Some(key.as_str()));
    let again = h.store.flow_create(&s).await.expect("create again");
    assert!(!again.created);
    assert_eq!(again.flow, first);
    let mut other = spec(&["x"], &[]);
    other.idempotency_key = Some(key.clone());
    let third = h
        .store
        .flow_create(&other)
        .await
        .expect("other spec, same key");
    assert!(!third.created);
    assert_eq!(third.flow.id, first.id);
    let mut bad = spec(&["a", "a"], &[]);
    bad.idempotency_key = Some(key.clone());
    assert_invalid(
        h.store.flow_create(&bad).await,
        "nodes[1].key",
        "a bad create with a known key",
    );
    assert_eq!(members(&h, &first.id).await.len(), 2);
    let page = h
        .store
        .flow_list(&FlowListParams {
            limit: 10,
            ..FlowListParams::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1, "one flow");
    let exec_key = SubmitParams {
        idempotency_key: Some(key),
        ..SubmitParams::new("plain", Value::Null)
    };
    let submitted = h.store.execution_submit(&exec_key).await.expect("submit");
    assert!(submitted.created, "execution keys are another namespace");
    checked(&h, &first.id).await;
    assert_audit_clean(&h).await;
}

/// A member cannot be replayed: its downstreams already counted its end.
pub async fn replay_of_a_member_is_conflict(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let flow = create(&h, &spec(&["a", "b"], &[("a", "b")])).await;
    run_node(&h, &flow.id, "a").await;
    let a = flow.member("a").expect("a").clone();
    let before = checked(&h, &flow.id).await;
    assert_conflict(
        h.store.execution_replay(&a).await,
        "replay of a completed member",
    );
    assert_conflict(cancel(&h, &a).await, "cancel of a completed member");
    run_node(&h, &flow.id, "b").await;
    let b = flow.member("b").expect("b").clone();
    assert_conflict(
        h.store.execution_replay(&b).await,
        "replay after the flow ended",
    );
    assert_eq!(get(&h, &a).await.state, State::Completed);
    assert_ne!(checked(&h, &flow.id).await, before);
    assert_audit_clean(&h).await;
}

/// The store announces a flow's end, once it has one, when it sends events.
pub async fn flow_end_is_announced(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let Some(mut events) = h.store.events() else {
        eprintln!("skipped: this store sends no events");
        return;
    };
    let flow = create(&h, &spec(&["a", "b"], &[("a", "b")])).await;
    run_node(&h, &flow.id, "a").await;
    run_node(&h, &flow.id, "b").await;
    let cancelled = create(&h, &spec(&["a"], &[])).await;
    h.store.flow_cancel(&cancelled.id).await.expect("cancel");
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no FlowEnded within 5 s; got {ended:?}"))
            .unwrap_or_else(|e| panic!("events: {e}"));
        if let StoreEvent::FlowEnded { id, state } = event {
            ended.push((id, state));
        }
    }
    // Two operations, two ends; a store's events need not keep their order.
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (flow.id.clone(), FlowState::Completed),
        (cancelled.id.clone(), FlowState::Cancelled),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ended, want);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, StoreEvent::FlowEnded { .. }),
            "a flow ends once: {event:?}"
        );
    }
}

/// Flows list in id order, filtered by state, page by page.
pub async fn flows_list_by_state(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let mut flows = Vec::new();
    for _ in 0..5 {
        flows.push(create(&h, &spec(&["a"], &[])).await);
    }
    run_node(&h, &flows[0].id, "a").await;
    run_node(&h, &flows[1].id, "a").await;
    h.store.flow_cancel(&flows[2].id).await.expect("cancel");
    fail_node(&h, &flows[3].id, "a").await;
    let by_state = [
        (Some(FlowState::Completed), vec![&flows[0], &flows[1]]),
        (Some(FlowState::Cancelled), vec![&flows[2]]),
        (Some(FlowState::Failed), vec![&flows[3]]),
        (Some(FlowState::Running), vec![&flows[4]]),
        (Some(FlowState::Blocked), vec![]),
        (None, flows.iter().collect()),
    ];
    for (state, expected) in by_state {
        let mut want: Vec<FlowId> = expected.iter().map(|f| f.id.clone()).collect();
        want.sort();
        let got = list_flows(&h, state, 2).await;
        assert_eq!(got, want, "flows in state {state:?}");
    }
    for limit in [0, weft_core::LIST_LIMIT_MAX + 1] {
        let params = FlowListParams {
            limit,
            ..FlowListParams::default()
        };
        assert_invalid(h.store.flow_list(&params).await, "limit", "a bad limit");
    }
    for f in &flows {
        checked(&h, &f.id).await;
    }
}

/// Every flow in `state`, read `page` at a time; checks each page's size and
/// order.
async fn list_flows(h: &Harness, state: Option<FlowState>, page: u32) -> Vec<FlowId> {
    let mut ids: Vec<FlowId> = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let params = FlowListParams {
            state,
            limit: page,
            cursor: cursor.take(),
        };
        let result = h
            .store
            .flow_list(&params)
            .await
            .unwrap_or_else(|e| panic!("flow_list {params:?}: {e}"));
        assert!(result.items.len() <= page as usize);
        if let Some(state) = state {
            assert!(result.items.iter().all(|f| f.state == state));
        }
        ids.extend(result.items.into_iter().map(|f| f.id));
        match result.next_cursor {
            Some(next) => cursor = Some(next),
            None => {
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order: {ids:?}");
                return ids;
            }
        }
    }
    panic!("flow_list never returned a last page");
}

/// Retention: a member is purged only once its flow has ended (a member
/// whose retention falls due while its flow runs waits for the flow's end);
/// a purge leaves the flow's summary as it was, and the flow (with its
/// idempotency key) goes with its last member.
pub async fn retention_purges_flows_with_their_last_member(h: Harness) {
    if unsupported(&h) {
        return;
    }
    if h.clock.is_none() {
        eprintln!(
            "skipped: retention needs {RETENTION_MS_DEFAULT} ms of store time, which only a \
             manual clock can cross"
        );
        return;
    }
    let key = format!("flow-key-{}", unique_lane());
    let mut s = spec(&["a", "b"], &[("a", "b")]);
    s.idempotency_key = Some(key.clone());
    let flow = create(&h, &s).await;
    run_node(&h, &flow.id, "a").await;
    // a's retention falls due while b has not run: a stays.
    h.advance_ms(RETENTION_MS_DEFAULT + 1).await;
    tick_all(&h).await;
    let a = flow.member("a").expect("a").clone();
    assert_eq!(get(&h, &a).await.state, State::Completed);
    let b = run_node(&h, &flow.id, "b").await;
    assert_eq!(b.inputs, inputs_of(&[("a", result_of("a"))]));
    let ended = checked(&h, &flow.id).await;
    assert_eq!(ended.state, FlowState::Completed);
    // The flow's end lets a go at once; b waits for its own retention.
    assert_eq!(tick_all(&h).await, 1, "a is purged");
    assert_not_found(h.store.execution_get(&a).await, "a after its purge");
    let kept = get_flow(&h, &flow.id).await;
    assert_eq!(kept.counts, ended.counts, "a purge keeps the summary");
    assert_eq!(kept.counts.total(), 2);
    assert_audit_clean(&h).await;
    let finished = kept.finished_at_ms.expect("finished_at");
    advance_past(&h, finished + RETENTION_MS_DEFAULT).await;
    assert_eq!(tick_all(&h).await, 1, "b is purged");
    assert_not_found(
        h.store.flow_get(&flow.id).await,
        "the flow after its last member",
    );
    assert!(members(&h, &flow.id).await.is_empty());
    let again = h
        .store
        .flow_create(&s)
        .await
        .expect("create with the freed key");
    assert!(again.created, "the key went with its flow");
    assert_audit_clean(&h).await;
}

/// A member completed in the brief form (as workers do) settles its flow
/// like a full completion: its downstream becomes claimable with its
/// result as input.
pub async fn brief_completion_settles_the_flow(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let flow = create(&h, &spec(&["a", "b"], &[("a", "b")])).await;
    let task = claim_node(&h, &flow.id, "a", LONG_LEASE_MS).await;
    let params = CompleteParams {
        execution_id: task.execution_id.clone(),
        lease: task.lease_ref(),
        result: result_of("a"),
    };
    let state = h.store.execution_complete_brief(&params).await;
    assert_eq!(state.expect("brief complete"), State::Completed);
    expect(
        &h,
        &flow.id,
        &[("a", State::Completed), ("b", State::Waiting)],
    )
    .await;
    let next = claim_node(&h, &flow.id, "b", LONG_LEASE_MS).await;
    assert_eq!(next.inputs, inputs_of(&[("a", result_of("a"))]));
    assert_audit_clean(&h).await;
}
