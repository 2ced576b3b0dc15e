//! Differential test of flows: the Valkey store and the SQLite store agree.
//!
//! Goal: a flow driven the same way on both stores ends up the same: flow
//! state, counts, flags, nodes and edges, and every member's state, join
//! counters, cancel reason and result; claims see the same inputs; refused
//! operations are refused with the same kind.
//! Method: random small DAGs (random edges, `on`, joins, `on_failure`) are
//! created on an in-memory SQLite store and on Valkey; random steps (claim
//! and complete, fail or suspend a member, signal a suspended member, cancel
//! a member, cancel the flow, add nodes) are chosen from the SQLite side's
//! state and applied to both, then
//! everything is compared. Members are named by node key, since ids differ.
//! Some flows are fan-outs of `FAN_OUT` children, larger than one call's
//! cascade chunk (`CASCADE_CHUNK_MAX`): after every step both stores' flow
//! partitions are ticked one outbox entry at a time until nothing is due,
//! and the flows are compared after each tick, so a partly drained cascade
//! must look the same on both. A suspend with a timeout (1 ms, any
//! `on_timeout`) sleeps past it before the ticks, so the timeout fires in
//! the same tick on both and its transition settles the flow there.
//! `WEFT_DIFF_SEED` replays a run, `WEFT_DIFF_FLOWS` sets the number of flows.

mod common;

use serde_json::json;
use weft_core::flow::{EdgeOn, Flow, FlowSpec, OnFailure, CASCADE_CHUNK_MAX};
use weft_core::waitpoint::{OnTimeout, ResumeWhen, SuspendSpec, WaitpointSpec};
use weft_core::{
    CancelParams, ClaimParams, CompleteParams, Error, ErrorInfo, FailParams, FlowId, LeaseRef,
    PartitionCount, PartitionId, Result, SignalParams, State, Store, SuspendParams, Task,
};
use weft_sqlite::{SqliteConfig, SqliteStore};

use common::flows::{edge, node, random_spec};

const PARTITIONS: u16 = 4;
/// Children of the large flows' root: more than one chunk.
const FAN_OUT: usize = 300;
const _: () = assert!(FAN_OUT > CASCADE_CHUNK_MAX, "fan-outs need the outbox");

/// A root and `FAN_OUT` children joined to it by random edges.
fn fan_out(rng: &mut fastrand::Rng, tag: &str) -> FlowSpec {
    let lane = |key: &str| format!("{tag}-{key}");
    let mut spec = FlowSpec {
        nodes: vec![node("root", &lane("root"))],
        ..FlowSpec::default()
    };
    for i in 0..FAN_OUT {
        let key = format!("k{i}");
        spec.nodes.push(node(&key, &lane(&key)));
        let on = [
            EdgeOn::Success,
            EdgeOn::Success,
            EdgeOn::Failure,
            EdgeOn::Any,
        ][rng.usize(..4)];
        spec.edges.push(edge("root", &key, on));
    }
    spec
}

/// Ticks both flows' partitions, one outbox entry a time, until neither has
/// anything due now; compares the flows after every tick. Returns the
/// entries (and timers) the ticks applied.
async fn drain(sides: &[Side<'_>; 2], context: &str) -> u32 {
    let (mut ticks, mut applied) = (0, 0);
    loop {
        let mut seen = Vec::new();
        for side in sides {
            let report = side
                .store
                .partition_tick(side.id.partition(), 1)
                .await
                .unwrap();
            let due = report.next_due_ms.is_some_and(|d| d <= report.now_ms);
            seen.push((report.applied, report.dropped, due));
        }
        ticks += 1;
        compare(sides, &format!("{context} tick {ticks}")).await;
        assert_eq!(
            seen[0], seen[1],
            "{context} tick {ticks}: applied, dropped, due"
        );
        applied += seen[0].0;
        if !seen[0].2 {
            return applied;
        }
        assert!(ticks < 50, "{context}: the outbox never drained");
    }
}

fn kind<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(Error::InvalidArgument { field, .. }) => format!("invalid {field}"),
        Err(e) => e.kind().to_owned(),
    }
}

/// One store with the flow under test.
struct Side<'a> {
    store: &'a dyn Store,
    id: FlowId,
}

async fn claim(store: &dyn Store, lane: &str) -> Option<Task> {
    let params = ClaimParams {
        worker_id: "w".into(),
        lanes: vec![lane.to_owned()],
        capabilities: vec![],
        max: 1,
        lease_ms: 600_000,
    };
    for p in 0..PARTITIONS {
        let mut tasks = store
            .execution_claim(PartitionId(p), &params)
            .await
            .unwrap();
        if let Some(task) = tasks.pop() {
            return Some(task);
        }
    }
    None
}

fn member_view(flow: &Flow, key: &str) -> weft_core::ExecutionId {
    flow.member(key).expect("a node").clone()
}

async fn compare(sides: &[Side<'_>; 2], context: &str) {
    let a = sides[0].store.flow_get(&sides[0].id).await.unwrap();
    let b = sides[1].store.flow_get(&sides[1].id).await.unwrap();
    assert_eq!(a.state, b.state, "{context}: flow state");
    assert_eq!(a.counts, b.counts, "{context}: counts");
    assert_eq!(
        (a.cancelled, a.halted),
        (b.cancelled, b.halted),
        "{context}: flags"
    );
    assert_eq!(a.edges, b.edges, "{context}: edges");
    assert_eq!(a.on_failure, b.on_failure, "{context}: on_failure");
    assert_eq!(
        a.finished_at_ms.is_some(),
        b.finished_at_ms.is_some(),
        "{context}: finished"
    );
    let keys = |f: &Flow| {
        f.nodes
            .iter()
            .map(|n| (n.key.clone(), n.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&a), keys(&b), "{context}: nodes");
    for node in &a.nodes {
        let x = sides[0]
            .store
            .execution_get(&node.execution_id)
            .await
            .unwrap();
        let y = sides[1]
            .store
            .execution_get(&member_view(&b, &node.key))
            .await
            .unwrap();
        let view = |e: &weft_core::Execution| {
            (
                e.state,
                e.join,
                e.cancel_reason.clone(),
                e.result.clone(),
                e.error.as_ref().and_then(|x| x.kind.clone()),
                e.flow_node.clone(),
                e.attempts,
                e.suspends,
                e.resumed_signals.clone(),
            )
        };
        assert_eq!(view(&x), view(&y), "{context}: member {}", node.key);
    }
}

/// One random step on both sides; says what it did.
async fn step(sides: &[Side<'_>; 2], rng: &mut fastrand::Rng, tag: &str) -> String {
    let flow = sides[0].store.flow_get(&sides[0].id).await.unwrap();
    let roll = rng.u8(..100);
    if roll < 3 {
        let a = sides[0].store.flow_cancel(&sides[0].id).await;
        let b = sides[1].store.flow_cancel(&sides[1].id).await;
        assert_eq!(kind(&a), kind(&b), "flow cancel");
        return format!("flow cancel: {}", kind(&a));
    }
    if roll < 9 && flow.nodes.len() < 14 {
        let n = rng.usize(1..3);
        let spec = random_spec(rng, tag, flow.nodes.len(), n);
        let a = sides[0].store.flow_add_nodes(&sides[0].id, &spec).await;
        let b = sides[1].store.flow_add_nodes(&sides[1].id, &spec).await;
        assert_eq!(kind(&a), kind(&b), "add nodes");
        return format!("add {n}: {}", kind(&a));
    }
    let node = &flow.nodes[rng.usize(..flow.nodes.len())];
    let key = node.key.clone();
    let cancel_odds = match node.state {
        State::Active | State::Suspended => 1,
        State::Blocked => 2,
        State::Waiting => 1,
        _ => 0,
    };
    if rng.u8(..10) < cancel_odds {
        let mut kinds = Vec::new();
        for side in sides {
            let f = side.store.flow_get(&side.id).await.unwrap();
            let r = side
                .store
                .execution_cancel(&CancelParams {
                    execution_id: member_view(&f, &key),
                    reason: Some("test".into()),
                })
                .await;
            kinds.push(kind(&r));
        }
        assert_eq!(kinds[0], kinds[1], "cancel {key}");
        return format!("cancel {key}");
    }
    match node.state {
        State::Waiting => {
            let lane = format!("{tag}-{key}");
            let a = claim(sides[0].store, &lane).await.expect("claimable");
            let b = claim(sides[1].store, &lane).await.expect("claimable");
            assert_eq!(a.inputs, b.inputs, "inputs of {key}");
            assert_eq!(a.signals, b.signals, "signals of {key}");
            assert_eq!(a.flow_node, b.flow_node);
            format!("claim {key}")
        }
        State::Active if rng.u8(..10) < 2 => {
            let timeout = rng.bool().then_some(1);
            let spec = SuspendSpec {
                waitpoints: vec![WaitpointSpec {
                    name: "go".into(),
                    timeout_ms: timeout,
                    on_timeout: OnTimeout::ALL[rng.usize(..OnTimeout::ALL.len())],
                }],
                resume_when: ResumeWhen::All,
            };
            for side in sides {
                let f = side.store.flow_get(&side.id).await.unwrap();
                let id = member_view(&f, &key);
                let exec = side.store.execution_get(&id).await.unwrap();
                let lease = exec.lease.expect("active members hold a lease");
                let params = SuspendParams {
                    execution_id: id,
                    lease: LeaseRef {
                        lease_id: lease.id,
                        epoch: lease.epoch,
                    },
                    spec: spec.clone(),
                };
                side.store.execution_suspend(&params).await.unwrap();
            }
            if timeout.is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            format!("suspend {key} {:?}", spec.waitpoints[0])
        }
        State::Suspended => {
            for side in sides {
                let f = side.store.flow_get(&side.id).await.unwrap();
                let params = SignalParams {
                    execution_id: member_view(&f, &key),
                    waitpoint: "go".into(),
                    payload: json!({ "to": key }),
                    seq: None,
                };
                side.store.execution_signal(&params).await.unwrap();
            }
            format!("signal {key}")
        }
        State::Active => {
            let ok = rng.u8(..10) < 7;
            for side in sides {
                let f = side.store.flow_get(&side.id).await.unwrap();
                let id = member_view(&f, &key);
                let exec = side.store.execution_get(&id).await.unwrap();
                let lease = exec.lease.expect("active members hold a lease");
                let lease = LeaseRef {
                    lease_id: lease.id,
                    epoch: lease.epoch,
                };
                if ok {
                    side.store
                        .execution_complete(&CompleteParams {
                            execution_id: id,
                            lease,
                            result: json!({ "from": key }),
                        })
                        .await
                        .unwrap();
                } else {
                    side.store
                        .execution_fail(&FailParams {
                            execution_id: id,
                            lease,
                            error: ErrorInfo::new("boom", "it broke"),
                            retryable: false,
                        })
                        .await
                        .unwrap();
                }
            }
            format!("{} {key}", if ok { "complete" } else { "fail" })
        }
        _ => "nothing".into(),
    }
}

/// Claims a large flow's root on both sides and ends it, mostly well.
async fn step_root(sides: &[Side<'_>; 2], rng: &mut fastrand::Rng, tag: &str) -> String {
    let lane = format!("{tag}-root");
    let ok = rng.u8(..10) < 7;
    for side in sides {
        let task = claim(side.store, &lane)
            .await
            .expect("the root is claimable");
        let lease = LeaseRef {
            lease_id: task.lease.id.clone(),
            epoch: task.lease.epoch,
        };
        if ok {
            side.store
                .execution_complete(&CompleteParams {
                    execution_id: task.execution_id,
                    lease,
                    result: json!({ "from": "root" }),
                })
                .await
                .unwrap();
        } else {
            side.store
                .execution_fail(&FailParams {
                    execution_id: task.execution_id,
                    lease,
                    error: ErrorInfo::new("boom", "it broke"),
                    retryable: false,
                })
                .await
                .unwrap();
        }
    }
    format!("{} root", if ok { "complete" } else { "fail" })
}

#[tokio::test]
async fn sqlite_and_valkey_agree_on_flows() {
    let url = common::url(common::VALKEY_URL_VAR);
    let seed = std::env::var("WEFT_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let flows: usize = std::env::var("WEFT_DIFF_FLOWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    println!("flow differential: {flows} flows, WEFT_DIFF_SEED={seed}");
    let count = PartitionCount::new(PARTITIONS).expect("count");
    let sqlite = SqliteStore::open(SqliteConfig::memory().with_partitions(count)).expect("sqlite");
    let (valkey, _cleanup) = common::store_with(common::config(&url, Some(PARTITIONS))).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut steps = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..flows {
        let tag = format!("c{case}");
        let large = case % 8 == 3;
        let mut spec = if large {
            fan_out(&mut rng, &tag)
        } else {
            let n = rng.usize(1..8);
            random_spec(&mut rng, &tag, 0, n)
        };
        if rng.u8(..4) == 0 {
            spec.on_failure = OnFailure::CancelFlow;
        }
        let sides = [
            Side {
                store: &sqlite,
                id: sqlite.flow_create(&spec).await.unwrap().flow.id,
            },
            Side {
                store: &valkey,
                id: valkey.flow_create(&spec).await.unwrap().flow.id,
            },
        ];
        compare(&sides, &format!("seed {seed} case {case} create")).await;
        for n in 0..if large { 12 } else { 60 } {
            let ended = sides[0].store.flow_get(&sides[0].id).await.unwrap();
            if ended.state.is_terminal() && rng.u8(..4) != 0 {
                break;
            }
            // A large flow's root runs first, so its end fans out.
            let what = if large && n == 0 {
                step_root(&sides, &mut rng, &tag).await
            } else {
                step(&sides, &mut rng, &tag).await
            };
            *steps
                .entry(what.split(' ').next().unwrap_or("").to_owned())
                .or_default() += 1;
            let context = format!("seed {seed} case {case} step {n} ({what})");
            compare(&sides, &context).await;
            *steps.entry("outbox".into()).or_default() += drain(&sides, &context).await as usize;
        }
        if large {
            let a = sides[0].store.flow_cancel(&sides[0].id).await;
            let b = sides[1].store.flow_cancel(&sides[1].id).await;
            assert_eq!(kind(&a), kind(&b), "flow cancel");
            let context = format!("seed {seed} case {case} final flow cancel");
            compare(&sides, &context).await;
            drain(&sides, &context).await;
            let done = sides[0].store.flow_get(&sides[0].id).await.unwrap();
            assert!(done.state.is_terminal(), "{context}: {:?}", done.state);
        }
    }
    for p in 0..PARTITIONS {
        for store in [&sqlite as &dyn Store, &valkey] {
            let report = store.partition_audit(PartitionId(p)).await.unwrap();
            assert!(report.problems.is_empty(), "{:?}", report.problems);
        }
    }
    println!("flow differential steps: {steps:?}");
}
