//! The flow routes over SQLite: create (chain, diamond, idempotency), claim
//! members over `/v1/claims` and see their `inputs`, complete and fail
//! members and watch the summary, wait for the end (with events and by
//! polling), add nodes, cancel, the dashboard's flow bars, and `503` over a
//! store without flows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_server::ServerConfig;
use weft_sqlite::{SqliteConfig, SqliteStore};

use crate::support::{assert_error, lease_of, start, start_with, with, TestServer, Tweaked};

/// A chain `a → b → c` on `lane`.
fn chain(lane: &str) -> Value {
    json!({
        "name": "chain", "lane": lane,
        "nodes": [{"key": "a", "kind": "step", "payload": 1},
                  {"key": "b", "kind": "step", "payload": 2},
                  {"key": "c", "kind": "step", "payload": 3}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]
    })
}

/// Claims the one task of `lane`, checking it is member `key`.
async fn claim_member(server: &TestServer, lane: &str, key: &str) -> Value {
    let task = server.claim_one(lane, 30_000).await;
    assert_eq!(task["flow_node"], key, "{task}");
    task
}

/// Completes `task` with `result`; returns the execution.
async fn complete(server: &TestServer, task: &Value, result: Value) -> Value {
    let id = task["execution_id"].as_str().expect("id");
    let body = with(lease_of(task), json!({ "result": result }));
    let (status, done) = server
        .post(&format!("/v1/executions/{id}/complete"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    done
}

async fn get_flow(server: &TestServer, id: &str) -> Value {
    let (status, flow) = server.get(&format!("/v1/flows/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    flow
}

/// The states of a flow's nodes by key.
fn node_states(flow: &Value) -> Vec<(String, String)> {
    flow["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let key = n["key"].as_str().unwrap_or("").to_owned();
            (key, n["state"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
        .collect()
}

/// The summary with the given non-zero counts (and zeros elsewhere).
fn summary(total: u32, counts: &[(&str, u32)]) -> Value {
    let mut s = json!({"total": total, "waiting": 0, "delayed": 0, "blocked": 0, "active": 0,
                       "suspended": 0, "completed": 0, "failed": 0, "cancelled": 0,
                       "expired": 0, "skipped": 0});
    for (state, n) in counts {
        s[*state] = json!(n);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_in_order_with_inputs_and_wait_sees_the_end() {
    let server = start(ServerConfig::default()).await;
    let body = with(chain("ch"), json!({"idempotency_key": "chain-1"}));
    let flow = server.create_flow(body.clone()).await;
    let id = flow["id"].as_str().expect("id").to_owned();
    assert_eq!(flow["state"], "running");
    assert_eq!(flow["name"], "chain");
    assert_eq!(flow["finished_at"], Value::Null);
    assert!(flow["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        flow["summary"],
        summary(3, &[("waiting", 1), ("blocked", 2)])
    );
    assert_eq!(
        node_states(&flow),
        pairs(&[("a", "waiting"), ("b", "blocked"), ("c", "blocked")])
    );
    assert_eq!(
        flow["edges"][0],
        json!({"from": "a", "to": "b", "on": "success"})
    );
    // The same idempotency key answers 200 with the same flow.
    let (status, again) = server.post("/v1/flows", body).await;
    assert_eq!((status, again["id"].clone()), (StatusCode::OK, json!(id)));

    // Members are executions of the flow, on the flow's lane.
    let (_, members) = server.get(&format!("/v1/executions?flow_id={id}")).await;
    assert_eq!(
        members["items"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );
    assert_eq!(members["items"][0]["lane"], "ch");

    let a = claim_member(&server, "ch", "a").await;
    assert_eq!(
        (a["inputs"].clone(), a["flow_id"].clone()),
        (json!({}), json!(id))
    );
    assert_eq!(a["payload"], 1);
    let summary_now = get_flow(&server, &id).await["summary"].clone();
    assert_eq!(summary_now, summary(3, &[("active", 1), ("blocked", 2)]));
    complete(&server, &a, json!({"from": "a"})).await;
    let after_a = get_flow(&server, &id).await;
    assert_eq!(
        after_a["summary"],
        summary(3, &[("completed", 1), ("waiting", 1), ("blocked", 1)])
    );

    let b = claim_member(&server, "ch", "b").await;
    assert_eq!(b["inputs"], json!({"a": {"from": "a"}}));
    complete(&server, &b, json!("b done")).await;
    let c = claim_member(&server, "ch", "c").await;
    assert_eq!(c["inputs"], json!({"b": "b done"}));

    // A wait on the running flow answers promptly once the last member ends.
    let waiting = wait_in_background(&server, &id, 20_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the wait answered before the end");
    let ended_at = Instant::now();
    complete(&server, &c, json!(null)).await;
    let (status, waited, _) = waiting.await.expect("join");
    assert!(
        ended_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        ended_at.elapsed()
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(waited["state"], "completed", "{waited}");
    assert_eq!(waited["summary"], summary(3, &[("completed", 3)]));
    assert!(waited["finished_at"].is_string());

    let (_, completed) = server.get("/v1/flows?state=completed").await;
    assert_eq!(completed["items"][0]["id"], id.as_str(), "{completed}");
    assert_eq!(completed["next_cursor"], Value::Null);
    let (_, running) = server.get("/v1/flows?state=running").await;
    assert_eq!(running["items"], json!([]));
    server.stop().await;
}

/// Starts `GET /v1/flows/{id}/wait` in the background.
fn wait_in_background(
    server: &TestServer,
    id: &str,
    timeout_ms: u64,
) -> tokio::task::JoinHandle<(StatusCode, Value, Duration)> {
    let client = server.client.clone();
    let url = format!("{}/v1/flows/{id}/wait?timeout_ms={timeout_ms}", server.base);
    tokio::spawn(async move {
        let started = Instant::now();
        let response = client.get(url).send().await.expect("wait");
        let status = response.status();
        let answer: Value = response.json().await.expect("json");
        (status, answer, started.elapsed())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_joins_on_any_and_a_failure_edge_fires() {
    let server = start(ServerConfig::default()).await;
    // `left` fails for good; `merge` runs on `any` of its upstreams, and
    // `alarm` only on `left`'s failure.
    let flow = server
        .create_flow(json!({
            "lane": "dm",
            "nodes": [{"key": "top", "kind": "k"}, {"key": "left", "kind": "k"},
                      {"key": "right", "kind": "k"}, {"key": "merge", "kind": "k"},
                      {"key": "alarm", "kind": "k", "lane": "alarms"}],
            "edges": [{"from": "top", "to": "left"}, {"from": "top", "to": "right"},
                      {"from": "left", "to": "merge"}, {"from": "right", "to": "merge"},
                      {"from": "left", "to": "alarm", "on": "failure"}],
            "joins": {"merge": {"mode": "any"}}
        }))
        .await;
    let id = flow["id"].as_str().expect("id").to_owned();
    let top = claim_member(&server, "dm", "top").await;
    complete(&server, &top, json!("t")).await;

    let first = server.claim_one("dm", 30_000).await;
    let second = server.claim_one("dm", 30_000).await;
    let (left, right) = if first["flow_node"] == "left" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        (left["flow_node"].clone(), right["flow_node"].clone()),
        (json!("left"), json!("right"))
    );
    assert_eq!(left["inputs"], json!({"top": "t"}));
    let left_id = left["execution_id"].as_str().expect("id");
    let fatal = with(
        lease_of(&left),
        json!({"error": {"message": "no", "retryable": false}}),
    );
    let (status, failed) = server
        .post(&format!("/v1/executions/{left_id}/fail"), fatal)
        .await;
    assert_eq!(
        (status, failed["state"].clone()),
        (StatusCode::OK, json!("failed"))
    );

    let alarm = claim_member(&server, "alarms", "alarm").await;
    assert_eq!(alarm["inputs"], json!({"left": null}));
    complete(&server, &alarm, json!("rang")).await;
    complete(&server, &right, json!("r")).await;
    let merge = claim_member(&server, "dm", "merge").await;
    assert_eq!(merge["inputs"], json!({"left": null, "right": "r"}));
    complete(&server, &merge, json!("m")).await;

    let (_, ended) = server
        .get(&format!("/v1/flows/{id}/wait?timeout_ms=5000"))
        .await;
    assert_eq!(ended["state"], "failed", "a member failed: {ended}");
    assert_eq!(
        ended["summary"],
        summary(5, &[("completed", 4), ("failed", 1)])
    );
    let edge = &ended["edges"][4];
    assert_eq!(
        edge,
        &json!({"from": "left", "to": "alarm", "on": "failure"})
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_to_a_running_flow_and_cancel_ends_it() {
    let server = start(ServerConfig::default()).await;
    let flow = server
        .create_flow(json!({"lane": "gr", "nodes": [{"key": "seed", "kind": "k"}]}))
        .await;
    let id = flow["id"].as_str().expect("id").to_owned();
    let nodes = format!("/v1/flows/{id}/nodes");
    // Fan-out decided at run time: two new nodes after `seed`.
    let (status, grown) = server
        .post(
            &nodes,
            json!({"lane": "gr",
                   "nodes": [{"key": "x", "kind": "k"}, {"key": "y", "kind": "k", "lane": "other"}],
                   "edges": [{"from": "seed", "to": "x"}, {"from": "seed", "to": "y"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{grown}");
    assert_eq!(
        node_states(&grown),
        pairs(&[("seed", "waiting"), ("x", "blocked"), ("y", "blocked")])
    );
    assert_eq!(grown["summary"]["total"], 3);
    let x_id = grown["nodes"][1]["execution_id"].as_str().expect("id");
    let (_, x) = server.get(&format!("/v1/executions/{x_id}")).await;
    assert_eq!(
        (x["lane"].clone(), x["flow_node"].clone()),
        (json!("gr"), json!("x"))
    );

    // Edges may not end at existing nodes; keys stay unique.
    let back = server
        .post(
            &nodes,
            json!({"nodes": [{"key": "z", "kind": "k"}], "edges": [{"from": "z", "to": "seed"}]}),
        )
        .await;
    assert_error(
        &back,
        400,
        "invalid_argument",
        "edges[0].to",
        "edge to an existing node",
    );
    let dup = server
        .post(&nodes, json!({"nodes": [{"key": "x", "kind": "k"}]}))
        .await;
    assert_error(
        &dup,
        400,
        "invalid_argument",
        "nodes[0].key",
        "duplicate key",
    );
    assert_eq!(get_flow(&server, &id).await["summary"]["total"], 3);

    let seed = claim_member(&server, "gr", "seed").await;
    let cancel = format!("/v1/flows/{id}/cancel");
    let (status, cancelled) = server.call(Method::POST, &cancel, None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["summary"], summary(3, &[("cancelled", 3)]));
    assert!(cancelled["finished_at"].is_string());
    // The active member's lease can no longer complete it.
    let seed_id = seed["execution_id"].as_str().expect("id");
    let late = server
        .post(
            &format!("/v1/executions/{seed_id}/complete"),
            lease_of(&seed),
        )
        .await;
    assert_error(&late, 409, "lease_lost", "", "complete after a flow cancel");
    // Cancelling again is 200; adding to the ended flow is a conflict.
    let (status, again) = server.post(&cancel, json!({})).await;
    assert_eq!(
        (status, again["state"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    let ended = server
        .post(&nodes, json!({"nodes": [{"key": "late", "kind": "k"}]}))
        .await;
    assert_error(&ended, 409, "conflict", "", "adding to an ended flow");
    let (_, waited) = server.get(&format!("/v1/flows/{id}/wait")).await;
    assert_eq!(waited["state"], "cancelled");

    let ghost = weft_core::FlowId::mint(weft_core::PartitionId(0), 1);
    let unknown = server.get(&format!("/v1/flows/{ghost}")).await;
    assert_error(&unknown, 404, "not_found", "", "unknown flow");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_on_a_running_flow_and_lists_page() {
    let server = start(ServerConfig::default()).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let flow = server
            .create_flow(json!({"name": format!("f{n}"), "lane": "idle",
                                "nodes": [{"key": "only", "kind": "k"}]}))
            .await;
        ids.push(flow["id"].as_str().expect("id").to_owned());
    }
    let (status, waited, elapsed) = wait_in_background(&server, &ids[0], 300)
        .await
        .expect("join");
    assert_eq!(
        (status, waited["state"].clone()),
        (StatusCode::OK, json!("running"))
    );
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // Two pages of two, then one: every flow exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/flows?limit=2&cursor={c}"),
            None => "/v1/flows?limit=2".to_owned(),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);

    // The dashboard draws the running flows.
    let response = server
        .client
        .get(format!("{}/", server.base))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.expect("html");
    assert!(
        page.contains("Flows running") && page.contains("f1"),
        "{page}"
    );
    assert!(page.contains("title=\"waiting: 1\""), "{page}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_wait_polls_a_store_without_events() {
    let store = SqliteStore::open(SqliteConfig::memory()).expect("store");
    let server = start_with(Arc::new(Tweaked::no_events(store)), ServerConfig::default()).await;
    let flow = server
        .create_flow(json!({"lane": "pw", "nodes": [{"key": "a", "kind": "k"}]}))
        .await;
    let id = flow["id"].as_str().expect("id").to_owned();
    let task = claim_member(&server, "pw", "a").await;
    let waiting = wait_in_background(&server, &id, 20_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ended_at = Instant::now();
    complete(&server, &task, json!(1)).await;
    let (status, waited, _) = waiting.await.expect("join");
    assert_eq!(
        (status, waited["state"].clone()),
        (StatusCode::OK, json!("completed"))
    );
    assert!(
        ended_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        ended_at.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_flows_answers_unavailable() {
    let store = SqliteStore::open(SqliteConfig::memory()).expect("store");
    let server = start_with(Arc::new(Tweaked::no_flows(store)), ServerConfig::default()).await;
    let body = json!({"nodes": [{"key": "a", "kind": "k"}]});
    let answer = server.post("/v1/flows", body).await;
    assert_error(&answer, 503, "unavailable", "flows", "create");
    let answer = server.get("/v1/flows").await;
    assert_error(&answer, 503, "unavailable", "flows", "list");
    let ghost = weft_core::FlowId::mint(weft_core::PartitionId(0), 1);
    let answer = server
        .get(&format!("/v1/flows/{ghost}/wait?timeout_ms=0"))
        .await;
    assert_error(&answer, 503, "unavailable", "flows", "wait");
    // Bad input is still a 400, checked before the store is asked.
    let answer = server.post("/v1/flows", json!({"nodes": []})).await;
    assert_error(&answer, 400, "invalid_argument", "nodes", "empty flow");
    let (status, page) = server.get("/").await;
    assert_eq!(
        (status, page),
        (StatusCode::OK, Value::Null),
        "the dashboard still answers"
    );
    server.stop().await;
}
