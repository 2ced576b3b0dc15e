//! Flows on Valkey against weft-core's flow model.
//!
//! Goal: every member transition settles its flow inside the same call,
//! exactly as `weft_core::flow` does, and the audit finds nothing wrong.
//! Method: fixed scenarios (chain, quorum with `cancel_remaining`, failure
//! edges, `cancel_flow`, flow cancel, additions, inputs, idempotency), then
//! random DAGs driven through the store and, step for step, through the pure
//! core model (`flow::create` + `after_member_transition` in memory); flow
//! state, counts, node states and every member's state and join must agree.
//! `WEFT_FLOW_SEED` replays a run.

mod common;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_core::flow::{
    self, EdgeOn, Flow, FlowEdge, FlowSpec, FlowState, Join, JoinMode, MemberIo, OnFailure,
};
use weft_core::machine::{self, Command, MachineConfig, Outcome, Transition};
use weft_core::{
    CancelParams, ClaimParams, CompleteParams, Error, ErrorInfo, Execution, ExecutionId,
    FailParams, FlowId, FlowListParams, LeaseRef, PartitionId, State, Store, Task,
};
use weft_valkey::ValkeyStore;

use common::flows::{edge, node, random_spec};

async fn store() -> (ValkeyStore, common::Cleanup) {
    let url = common::url(common::VALKEY_URL_VAR);
    common::store_with(common::config(&url, Some(4))).await
}

fn spec(tag: &str, nodes: &[&str], edges: &[(&str, &str)]) -> FlowSpec {
    FlowSpec {
        nodes: nodes
            .iter()
            .map(|k| node(k, &format!("{tag}-{k}")))
            .collect(),
        edges: edges
            .iter()
            .map(|(a, b)| edge(a, b, EdgeOn::Success))
            .collect(),
        ..FlowSpec::default()
    }
}

async fn claim(store: &ValkeyStore, lane: &str) -> Option<Task> {
    let params = ClaimParams {
        worker_id: "w".into(),
        lanes: vec![lane.to_owned()],
        capabilities: vec![],
        max: 1,
        lease_ms: 60_000,
    };
    let mut tasks = Vec::new();
    for p in 0..store.partition_count().get() {
        tasks.extend(
            store
                .execution_claim(PartitionId(p), &params)
                .await
                .unwrap(),
        );
    }
    assert!(tasks.len() <= 1, "one member per lane");
    tasks.pop()
}

fn lease(task: &Task) -> LeaseRef {
    LeaseRef {
        lease_id: task.lease.id.clone(),
        epoch: task.lease.epoch,
    }
}

async fn complete(store: &ValkeyStore, task: &Task, result: Value) {
    store
        .execution_complete(&CompleteParams {
            execution_id: task.execution_id.clone(),
            lease: lease(task),
            result,
        })
        .await
        .unwrap();
}

async fn fail(store: &ValkeyStore, task: &Task) {
    store
        .execution_fail(&FailParams {
            execution_id: task.execution_id.clone(),
            lease: lease(task),
            error: ErrorInfo::new("boom", "it broke"),
            retryable: false,
        })
        .await
        .unwrap();
}

/// Claims and ends node `key` of a flow made by `spec(tag, …)`.
async fn run(store: &ValkeyStore, tag: &str, key: &str, ok: bool) -> Task {
    let task = claim(store, &format!("{tag}-{key}"))
        .await
        .unwrap_or_else(|| panic!("{key} is not claimable"));
    if ok {
        complete(store, &task, json!({ "from": key })).await;
    } else {
        fail(store, &task).await;
    }
    task
}

async fn states(store: &ValkeyStore, id: &FlowId) -> (Flow, BTreeMap<String, State>) {
    let flow = store.flow_get(id).await.unwrap();
    let mut out = BTreeMap::new();
    for n in &flow.nodes {
        let exec = store.execution_get(&n.execution_id).await.unwrap();
        assert_eq!(exec.state, n.state, "node {} state is kept", n.key);
        out.insert(n.key.clone(), exec.state);
    }
    (flow, out)
}

async fn audit_clean(store: &ValkeyStore) {
    for p in 0..store.partition_count().get() {
        let report = store.partition_audit(PartitionId(p)).await.unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}

#[tokio::test]
async fn a_chain_promotes_passes_inputs_and_a_failure_skips() {
    let (store, _cleanup) = store().await;
    let created = store
        .flow_create(&spec("t", &["a", "b", "c"], &[("a", "b"), ("b", "c")]))
        .await
        .unwrap();
    assert!(created.created);
    let id = created.flow.id.clone();
    assert_eq!(created.flow.state, FlowState::Running);
    assert_eq!(created.flow.counts.get(State::Blocked), 2);
    let (_, s) = states(&store, &id).await;
    assert_eq!(s["b"], State::Blocked);
    let member = store
        .execution_get(created.flow.member("c").unwrap())
        .await
        .unwrap();
    assert_eq!(member.flow_id.as_ref(), Some(&id));
    assert_eq!(member.join.map(|j| j.total), Some(1));

    run(&store, "t", "a", true).await;
    let task = claim(&store, "t-b").await.unwrap();
    assert_eq!(task.inputs.get("a"), Some(&json!({ "from": "a" })));
    assert_eq!(task.flow_node.as_deref(), Some("b"));
    fail(&store, &task).await;
    let (flow, s) = states(&store, &id).await;
    assert_eq!(s["c"], State::Skipped);
    assert_eq!(flow.state, FlowState::Failed);
    assert!(flow.finished_at_ms.is_some());
    assert_eq!(flow.counts.total(), 3);
    audit_clean(&store).await;

    let replay = store.execution_replay(&task.execution_id).await;
    assert!(matches!(replay, Err(Error::Conflict { .. })), "{replay:?}");
}

#[tokio::test]
async fn quorum_with_cancel_remaining_cancels_the_rest() {
    let (store, _cleanup) = store().await;
    let mut s = spec(
        "q",
        &["a", "b", "c", "d"],
        &[("a", "d"), ("b", "d"), ("c", "d")],
    );
    s.joins.insert(
        "d".into(),
        Join {
            mode: JoinMode::Quorum,
            n: Some(2),
            cancel_remaining: true,
        },
    );
    let id = store.flow_create(&s).await.unwrap().flow.id;
    run(&store, "q", "a", true).await;
    assert_eq!(states(&store, &id).await.1["d"], State::Blocked);
    run(&store, "q", "b", true).await;
    let (flow, st) = states(&store, &id).await;
    assert_eq!(st["d"], State::Waiting);
    assert_eq!(st["c"], State::Cancelled);
    assert_eq!(flow.state, FlowState::Running);
    run(&store, "q", "d", true).await;
    assert_eq!(
        store.flow_get(&id).await.unwrap().state,
        FlowState::Completed
    );
    audit_clean(&store).await;
}

#[tokio::test]
async fn failure_edges_cancel_flow_and_flow_cancel() {
    let (store, _cleanup) = store().await;
    let mut s = spec("f", &["a", "onfail", "next"], &[("a", "next")]);
    s.edges.push(edge("a", "onfail", EdgeOn::Failure));
    let id = store.flow_create(&s).await.unwrap().flow.id;
    run(&store, "f", "a", false).await;
    let (_, st) = states(&store, &id).await;
    assert_eq!(st["onfail"], State::Waiting);
    assert_eq!(st["next"], State::Skipped);

    let mut s = spec("g", &["a", "b", "c"], &[("a", "c")]);
    s.on_failure = OnFailure::CancelFlow;
    let id = store.flow_create(&s).await.unwrap().flow.id;
    run(&store, "g", "a", false).await;
    let (flow, st) = states(&store, &id).await;
    assert_eq!(st["b"], State::Cancelled);
    assert_eq!(st["c"], State::Cancelled);
    assert_eq!(flow.state, FlowState::Failed);
    assert!(flow.halted);

    let id = store
        .flow_create(&spec("h", &["a", "b", "c"], &[("a", "b"), ("b", "c")]))
        .await
        .unwrap()
        .flow
        .id;
    run(&store, "h", "a", true).await;
    let mut events = store.events().unwrap();
    let flow = store.flow_cancel(&id).await.unwrap();
    assert_eq!(flow.state, FlowState::Cancelled);
    assert_eq!(flow.counts.get(State::Cancelled), 2);
    assert_eq!(
        store.flow_cancel(&id).await.unwrap(),
        flow,
        "a repeat is a no-op"
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let Ok(weft_core::StoreEvent::FlowEnded { id: got, state }) = events.recv().await {
                if got == id {
                    return state;
                }
            }
        }
    })
    .await;
    // Pub/sub is advisory; when the message arrives it must be right.
    if let Ok(state) = ended {
        assert_eq!(state, FlowState::Cancelled);
    }
    let added = store.flow_add_nodes(&id, &spec("h", &["z"], &[])).await;
    assert!(matches!(added, Err(Error::Conflict { .. })), "{added:?}");
    audit_clean(&store).await;
}

#[tokio::test]
async fn nodes_added_after_their_upstream_ended_are_decided_at_once() {
    let (store, _cleanup) = store().await;
    let id = store
        .flow_create(&spec("n", &["a"], &[]))
        .await
        .unwrap()
        .flow
        .id;
    let mut more = spec("n", &["b", "c"], &[("a", "b")]);
    more.edges.push(edge("a", "c", EdgeOn::Failure));
    store.flow_add_nodes(&id, &more).await.unwrap();
    run(&store, "n", "a", true).await;
    let (_, st) = states(&store, &id).await;
    assert_eq!(st["b"], State::Waiting);
    assert_eq!(st["c"], State::Skipped);
    let flow = store
        .flow_add_nodes(&id, &spec("n", &["d"], &[("a", "d")]))
        .await
        .unwrap();
    assert_eq!(flow.nodes.len(), 4);
    assert_eq!(states(&store, &id).await.1["d"], State::Waiting);
    let cycle = store
        .flow_add_nodes(&id, &spec("n", &["e"], &[("e", "a")]))
        .await;
    assert!(
        matches!(cycle, Err(Error::InvalidArgument { .. })),
        "{cycle:?}"
    );
    audit_clean(&store).await;
}

#[tokio::test]
async fn idempotent_creates_list_and_validation() {
    let (store, _cleanup) = store().await;
    let mut s = spec("i", &["a"], &[]);
    s.idempotency_key = Some("once".into());
    s.name = Some("nightly".into());
    let first = store.flow_create(&s).await.unwrap();
    let again = store.flow_create(&s).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.flow, again.flow);
    assert_eq!(again.flow.name.as_deref(), Some("nightly"));
    for tag in ["j", "k"] {
        store.flow_create(&spec(tag, &["a"], &[])).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .flow_list(&FlowListParams {
                state: Some(FlowState::Running),
                limit: 2,
                cursor,
            })
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|f| f.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 3);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let bad = store.flow_create(&spec("x", &["a"], &[("a", "a")])).await;
    assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");
    let missing = store.flow_get(&FlowId::mint(PartitionId(1), 1)).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

/// Members in memory, keyed by id: the core model's store.
struct Memory(BTreeMap<ExecutionId, Execution>);

impl MemberIo for Memory {
    fn load(&mut self, id: &ExecutionId) -> weft_core::Result<Execution> {
        self.0.get(id).cloned().ok_or(Error::NotFound {
            what: "execution",
            id: id.to_string(),
        })
    }
    fn write(&mut self, _old: Option<&Execution>, t: &Transition) -> weft_core::Result<()> {
        if let Some(exec) = &t.execution {
            self.0.insert(exec.id.clone(), exec.clone());
        }
        Ok(())
    }
}

/// The core model of one flow.
struct Model {
    flow: Flow,
    io: Memory,
    config: MachineConfig,
}

impl Model {
    fn new(spec: &FlowSpec) -> Self {
        let config = MachineConfig::default();
        let p = PartitionId(0);
        let mut mint = || ExecutionId::mint(p, 0);
        let (flow, members) =
            flow::create(FlowId::mint(p, 0), spec, &mut mint, 0, &config).expect("a valid spec");
        let io = Memory(
            members
                .into_iter()
                .filter_map(|t| t.execution)
                .map(|e| (e.id.clone(), e))
                .collect(),
        );
        Model { flow, io, config }
    }

    fn apply(&mut self, key: &str, command: Command) {
        let id = self.flow.member(key).expect("a node").clone();
        let old = self.io.load(&id).unwrap();
        let t = machine::apply(&old, command, 1, &self.config).unwrap();
        if t.outcome != Outcome::Applied {
            return;
        }
        self.io.write(Some(&old), &t).unwrap();
        flow::after_member_transition(
            &mut self.flow,
            Some(&old),
            &t,
            &mut self.io,
            1,
            &self.config,
        )
        .unwrap();
    }

    fn lease(&mut self, key: &str) -> LeaseRef {
        let id = self.flow.member(key).expect("a node").clone();
        let lease = self.io.load(&id).unwrap().lease.expect("claimed");
        LeaseRef {
            lease_id: lease.id,
            epoch: lease.epoch,
        }
    }
}

async fn compare(store: &ValkeyStore, id: &FlowId, model: &mut Model, context: &str) {
    let got = store.flow_get(id).await.unwrap();
    let want = &model.flow;
    assert_eq!(got.state, want.state, "{context}: flow state");
    assert_eq!(got.counts, want.counts, "{context}: counts");
    assert_eq!(got.cancelled, want.cancelled, "{context}: cancelled");
    assert_eq!(got.halted, want.halted, "{context}: halted");
    assert_eq!(got.edges, want.edges, "{context}: edges");
    assert_eq!(
        got.finished_at_ms.is_some(),
        want.finished_at_ms.is_some(),
        "{context}: finished"
    );
    assert_eq!(got.nodes.len(), want.nodes.len(), "{context}: nodes");
    for (g, w) in got.nodes.iter().zip(&want.nodes) {
        assert_eq!((&g.key, g.state), (&w.key, w.state), "{context}: node");
        let exec = store.execution_get(&g.execution_id).await.unwrap();
        let model_exec = model.io.load(&w.execution_id).unwrap();
        assert_eq!(exec.state, model_exec.state, "{context}: member {}", g.key);
        assert_eq!(exec.join, model_exec.join, "{context}: join of {}", g.key);
        assert_eq!(
            exec.cancel_reason, model_exec.cancel_reason,
            "{context}: cancel reason of {}",
            g.key
        );
    }
}

/// One random step on both sides; says what it did.
async fn step(
    store: &ValkeyStore,
    rng: &mut fastrand::Rng,
    tag: &str,
    id: &FlowId,
    model: &mut Model,
) -> String {
    let flow = store.flow_get(id).await.unwrap();
    let roll = rng.u8(..100);
    if roll < 3 {
        let result = store.flow_cancel(id).await;
        match flow::cancel_flow(&mut model.flow, &mut model.io, 1, &model.config) {
            Ok(_) => assert!(result.is_ok(), "{result:?}"),
            Err(_) => assert!(result.is_err(), "cancel of an ended flow"),
        }
        return "flow cancel".into();
    }
    if roll < 8 && flow.nodes.len() < 14 {
        let n = rng.usize(1..3);
        let spec = random_spec(rng, tag, flow.nodes.len(), n);
        let result = store.flow_add_nodes(id, &spec).await;
        let mut mint = || ExecutionId::mint(PartitionId(0), 0);
        let model_result = flow::add_nodes(
            &mut model.flow,
            &spec,
            &mut model.io,
            &mut mint,
            1,
            &model.config,
        );
        assert_eq!(result.is_ok(), model_result.is_ok(), "add: {result:?}");
        return format!("add {} nodes, ok {}", spec.nodes.len(), result.is_ok());
    }
    let pick = &flow.nodes[rng.usize(..flow.nodes.len())];
    let key = pick.key.clone();
    match pick.state {
        State::Waiting => {
            let task = claim(store, &format!("{tag}-{key}"))
                .await
                .expect("claimable");
            model.apply(
                &key,
                Command::Claim {
                    worker_id: "w".into(),
                    lease_id: task.lease.id.clone(),
                    lease_ms: 60_000,
                },
            );
            let upstreams: Vec<&FlowEdge> = flow.upstream(&key).collect();
            assert_eq!(task.inputs.len(), upstreams.len(), "inputs of {key}");
            format!("claim {key}")
        }
        State::Active if rng.u8(..10) < 1 => {
            cancel(store, model, pick.execution_id.clone(), &key).await;
            format!("cancel active {key}")
        }
        State::Active => {
            let id = pick.execution_id.clone();
            let exec = store.execution_get(&id).await.unwrap();
            let lease_ref = LeaseRef {
                lease_id: exec.lease.clone().unwrap().id,
                epoch: exec.lease.unwrap().epoch,
            };
            let model_lease = model.lease(&key);
            if rng.u8(..10) < 7 {
                let result = json!({ "from": key });
                store
                    .execution_complete(&CompleteParams {
                        execution_id: id,
                        lease: lease_ref,
                        result: result.clone(),
                    })
                    .await
                    .unwrap();
                model.apply(
                    &key,
                    Command::Complete {
                        lease: model_lease,
                        result,
                    },
                );
                format!("complete {key}")
            } else {
                let error = ErrorInfo::new("boom", "it broke");
                store
                    .execution_fail(&FailParams {
                        execution_id: id,
                        lease: lease_ref,
                        error: error.clone(),
                        retryable: false,
                    })
                    .await
                    .unwrap();
                model.apply(
                    &key,
                    Command::Fail {
                        lease: model_lease,
                        error,
                        retryable: false,
                    },
                );
                format!("fail {key}")
            }
        }
        State::Blocked if rng.u8(..10) < 2 => {
            cancel(store, model, pick.execution_id.clone(), &key).await;
            format!("cancel blocked {key}")
        }
        _ => "nothing".into(),
    }
}

async fn cancel(store: &ValkeyStore, model: &mut Model, id: ExecutionId, key: &str) {
    store
        .execution_cancel(&CancelParams {
            execution_id: id,
            reason: Some("test".into()),
        })
        .await
        .unwrap();
    model.apply(
        key,
        Command::Cancel {
            reason: Some("test".into()),
        },
    );
}

#[tokio::test]
async fn random_flows_match_the_core_model() {
    let (store, _cleanup) = store().await;
    let seed = std::env::var("WEFT_FLOW_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let flows: usize = std::env::var("WEFT_FLOW_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut rng = fastrand::Rng::with_seed(seed);
    for case in 0..flows {
        let tag = format!("c{case}");
        let n = rng.usize(1..8);
        let mut spec = random_spec(&mut rng, &tag, 0, n);
        if rng.u8(..4) == 0 {
            spec.on_failure = OnFailure::CancelFlow;
        }
        let id = store.flow_create(&spec).await.unwrap().flow.id;
        let mut model = Model::new(&spec);
        compare(
            &store,
            &id,
            &mut model,
            &format!("seed {seed} case {case} create"),
        )
        .await;
        for n in 0..60 {
            if model.flow.state.is_terminal() && rng.u8(..4) != 0 {
                break;
            }
            let what = step(&store, &mut rng, &tag, &id, &mut model).await;
            let context = format!("seed {seed} case {case} step {n} ({what})");
            compare(&store, &id, &mut model, &context).await;
        }
    }
    audit_clean(&store).await;
}

async fn tick_all(store: &ValkeyStore) -> u32 {
    let mut applied = 0;
    for p in 0..store.partition_count().get() {
        applied += store
            .partition_tick(PartitionId(p), 100)
            .await
            .unwrap()
            .applied;
    }
    applied
}

/// The conformance suite's retention case needs a manual clock; here the
/// retention period is short enough to wait out.
#[tokio::test]
async fn retention_purges_members_once_their_flow_ended() {
    let url = common::url(common::VALKEY_URL_VAR);
    let mut config = common::config(&url, Some(4));
    config.machine.retention_ms = 300;
    let (store, _cleanup) = common::store_with(config).await;
    let mut s = spec("r", &["a", "b"], &[("a", "b")]);
    s.idempotency_key = Some("kept".into());
    let flow = store.flow_create(&s).await.unwrap().flow;
    run(&store, "r", "a", true).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(tick_all(&store).await, 0, "a waits for its flow");
    audit_clean(&store).await;
    let a = flow.member("a").unwrap().clone();
    assert_eq!(
        store.execution_get(&a).await.unwrap().state,
        State::Completed
    );
    let b = run(&store, "r", "b", true).await;
    assert_eq!(b.inputs.get("a"), Some(&json!({ "from": "a" })));
    let ended = store.flow_get(&flow.id).await.unwrap();
    assert_eq!(ended.state, FlowState::Completed);
    assert_eq!(tick_all(&store).await, 1, "a goes with the flow's end");
    assert!(matches!(
        store.execution_get(&a).await,
        Err(Error::NotFound { .. })
    ));
    let kept = store.flow_get(&flow.id).await.unwrap();
    assert_eq!(kept.counts, ended.counts, "a purge keeps the summary");
    audit_clean(&store).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(tick_all(&store).await, 1, "b is purged");
    assert!(matches!(
        store.flow_get(&flow.id).await,
        Err(Error::NotFound { .. })
    ));
    audit_clean(&store).await;
    assert!(
        store.flow_create(&s).await.unwrap().created,
        "the key is free"
    );
}

/// The flow projector's pass repairs a summary that drifted from its
/// members (corrupted here by hand, as a bug would), and nothing else.
#[tokio::test]
async fn reconcile_repairs_drifted_summaries() {
    let (store, _cleanup) = store().await;
    let id = store
        .flow_create(&spec("p", &["a", "b"], &[("a", "b")]))
        .await
        .unwrap()
        .flow
        .id;
    run(&store, "p", "a", true).await;
    let flow = store.flow_get(&id).await.unwrap();
    let partition = id.partition();
    let healthy = store.flow_reconcile(partition, None, 64).await.unwrap();
    assert_eq!((healthy.examined, healthy.repaired), (1, 0));
    assert_eq!(healthy.next_cursor, None);

    let key = format!("{}f:{}", store.keys().root(partition), id.as_str());
    let client = redis::Client::open(common::url(common::VALKEY_URL_VAR)).unwrap();
    let mut conn = client.get_connection().unwrap();
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("n:failed")
        .arg(1)
        .arg("state")
        .arg("failed")
        .query(&mut conn)
        .map(|_: i64| ())
        .unwrap();
    assert_ne!(store.flow_get(&id).await.unwrap(), flow);
    let audit = store.partition_audit(partition).await.unwrap();
    assert!(!audit.problems.is_empty(), "the audit sees the drift");
    let pass = store.flow_reconcile(partition, None, 64).await.unwrap();
    assert_eq!(pass.repaired, 1);
    assert_eq!(store.flow_get(&id).await.unwrap(), flow);
    audit_clean(&store).await;
    let again = store.flow_reconcile(partition, None, 64).await.unwrap();
    assert_eq!(again.repaired, 0, "a repaired flow stays repaired");
    let page = store.flow_reconcile(partition, None, 1).await.unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some(id.as_str()));
    let bad = store.flow_reconcile(partition, None, 0).await;
    assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");
}

/// A flow at `FLOW_NODES_MAX`: one root fanning out to every other node;
/// the root's end promotes one chunk in its call and the partition's ticks
/// promote the rest through the outbox; a flow cancel goes the same way.
#[tokio::test]
async fn a_full_size_fan_out_settles_through_the_outbox() {
    let (store, _cleanup) = store().await;
    let keys: Vec<String> = (0..weft_core::flow::FLOW_NODES_MAX)
        .map(|i| format!("n{i}"))
        .collect();
    let mut s = FlowSpec::default();
    for key in &keys {
        s.nodes.push(node(key, "big"));
    }
    s.nodes[0].params.lane = Some("big-root".into());
    for key in &keys[1..] {
        s.edges.push(edge("n0", key, EdgeOn::Success));
    }
    let started = std::time::Instant::now();
    let id = store.flow_create(&s).await.unwrap().flow.id;
    let created = started.elapsed();
    let task = claim(&store, "big-root").await.unwrap();
    complete(&store, &task, json!(1)).await;
    let flow = store.flow_get(&id).await.unwrap();
    println!(
        "create {created:?}, root end + first chunk {:?}",
        started.elapsed() - created
    );
    let chunk = u32::try_from(flow::CASCADE_CHUNK_MAX).unwrap();
    assert_eq!(flow.counts.get(State::Waiting), chunk);
    assert_eq!(flow.counts.get(State::Completed), 1);
    while tick_all(&store).await > 0 {}
    let flow = store.flow_get(&id).await.unwrap();
    assert_eq!(flow.counts.get(State::Waiting), 999);
    let cancelled = store.flow_cancel(&id).await.unwrap();
    assert_eq!(cancelled.counts.get(State::Cancelled), chunk - 1);
    assert_eq!(cancelled.state, FlowState::Running);
    while tick_all(&store).await > 0 {}
    let cancelled = store.flow_get(&id).await.unwrap();
    assert_eq!(cancelled.counts.get(State::Cancelled), 999);
    assert_eq!(cancelled.state, FlowState::Cancelled);
    audit_clean(&store).await;
}
