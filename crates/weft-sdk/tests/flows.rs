//! Flows through the SDK, once over the direct SQLite store and once over
//! HTTP: a `Worker` runs a three-node flow to completion (the joining node
//! sees its upstreams' results in `ctx.inputs()`), and the client creates
//! (idempotently), lists, extends, waits for and cancels flows.
//!
//! Method: handlers report the inputs they see over a channel; the test
//! waits on `Client::flow_wait` and reads the members back.

// Shared with `sdk.rs`, which uses all of it; this file uses a part.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_core::flow::FlowState;
use weft_core::{Error, State};
use weft_sdk::{
    AddNodesRequest, FlowEdgeView, FlowListQuery, FlowNodeRequest, FlowRequest, TaskContext,
    WorkerError,
};

use support::{Clock, Harness, Via, PATIENCE};

/// `a` and `b` feed `total`, which sums what they return.
fn fan_in() -> FlowRequest {
    let node = |key: &str, kind: &str, payload: Value| FlowNodeRequest {
        payload,
        ..FlowNodeRequest::new(key, kind)
    };
    FlowRequest {
        name: Some("fan-in".into()),
        idempotency_key: Some("fan-in-1".into()),
        nodes: vec![
            node("a", "number", json!(1)),
            node("b", "number", json!(2)),
            node("total", "sum", Value::Null),
        ],
        edges: vec![
            FlowEdgeView::new("a", "total"),
            FlowEdgeView::new("b", "total"),
        ],
        ..FlowRequest::default()
    }
}

pub async fn a_worker_runs_a_flow_to_completion_with_inputs(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let (seen, mut inputs_seen) = mpsc::unbounded_channel::<BTreeMap<String, Value>>();
    let worker = h
        .worker()
        .handler("number", |ctx: TaskContext| async move {
            Ok::<_, WorkerError>(ctx.payload().clone())
        })
        .handler("sum", move |ctx: TaskContext| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(ctx.inputs().clone());
                let sum: i64 = ctx.inputs().values().filter_map(Value::as_i64).sum();
                Ok::<_, WorkerError>(json!(sum))
            }
        })
        .build()
        .unwrap()
        .start();

    let created = h.client.flow_create_detailed(fan_in()).await.unwrap();
    assert!(created.created);
    let id = created.flow.id.clone();
    assert_eq!(created.flow.summary.total, 3);
    let done = h.client.flow_wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, FlowState::Completed, "{done:?}");
    assert_eq!(done.summary.completed, 3);
    assert!(done.finished_at.is_some());

    let inputs = inputs_seen.recv().await.unwrap();
    assert_eq!(json!(inputs), json!({"a": 1, "b": 2}));
    let total = done.nodes.iter().find(|n| n.key == "total").unwrap();
    let member = h.client.get(&total.execution_id).await.unwrap();
    assert_eq!(member.result, Some(json!(3)));
    assert_eq!(member.flow_id.as_deref(), Some(id.as_str()));

    // The same idempotency key finds the same flow.
    let again = h.client.flow_create_detailed(fan_in()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.flow.id, id);
    let query = FlowListQuery {
        state: Some(FlowState::Completed),
        ..FlowListQuery::default()
    };
    let listed = h.client.flow_list(&query).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, id);
    worker.shutdown().await.unwrap();
    h.stop().await;
}

pub async fn flows_grow_wait_and_cancel(via: Via) {
    let h = Harness::start(via, Clock::Manual).await;
    let request = FlowRequest {
        lane: Some("parked".into()),
        nodes: vec![FlowNodeRequest::new("seed", "k")],
        ..FlowRequest::default()
    };
    let flow = h.client.flow_create(request).await.unwrap();
    let addition = AddNodesRequest {
        nodes: vec![FlowNodeRequest::new("next", "k")],
        edges: vec![FlowEdgeView::new("seed", "next")],
        lane: Some("parked".into()),
        ..AddNodesRequest::default()
    };
    let grown = h
        .client
        .flow_add_nodes(&flow.id, addition.clone())
        .await
        .unwrap();
    let states: Vec<(&str, State)> = grown
        .nodes
        .iter()
        .map(|n| (n.key.as_str(), n.state))
        .collect();
    assert_eq!(states, [("seed", State::Waiting), ("next", State::Blocked)]);

    // Nothing runs: the wait gives the flow back as it stands.
    let waited = h
        .client
        .flow_wait(&flow.id, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(waited.state, FlowState::Running);

    let cancelled = h.client.flow_cancel(&flow.id).await.unwrap();
    assert_eq!(cancelled.state, FlowState::Cancelled);
    assert_eq!(cancelled.summary.cancelled, 2);
    let got = h.client.flow_get(&flow.id).await.unwrap();
    assert_eq!(got, cancelled);
    match h.client.flow_add_nodes(&flow.id, addition).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("adding to an ended flow: {other:?}"),
    }
    match h.client.flow_get("fl_nope").await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    let cycle = FlowRequest {
        nodes: vec![
            FlowNodeRequest::new("x", "k"),
            FlowNodeRequest::new("y", "k"),
        ],
        edges: vec![FlowEdgeView::new("x", "y"), FlowEdgeView::new("y", "x")],
        ..FlowRequest::default()
    };
    match h.client.flow_create(cycle).await {
        Err(e @ Error::InvalidArgument { .. }) => assert!(e.to_string().contains("cycle"), "{e}"),
        other => panic!("a cycle: {other:?}"),
    }
    h.stop().await;
}

macro_rules! scenarios {
    ($via:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let run = super::$name($via);
                tokio::time::timeout(std::time::Duration::from_secs(60), run)
                    .await
                    .expect("scenario timed out");
            }
        )*
    };
}

mod direct {
    scenarios!(crate::support::Via::Direct;
        a_worker_runs_a_flow_to_completion_with_inputs,
        flows_grow_wait_and_cancel,
    );
}

mod http {
    scenarios!(crate::support::Via::Http;
        a_worker_runs_a_flow_to_completion_with_inputs,
        flows_grow_wait_and_cancel,
    );
}
