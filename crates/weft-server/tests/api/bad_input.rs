//! A table of bad requests thrown at every route: each answers its status
//! and kind with a message naming the field, and none changes the store.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_core::{ExecutionId, PartitionId};
use weft_server::ServerConfig;

use crate::support::{assert_error, lease_of, start, with, TestServer};

/// One bad request: where, what body, and what answer.
struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    kind: &'static str,
    needle: &'static str,
}

fn json_case(
    path: &str,
    body: &str,
    status: u16,
    kind: &'static str,
    needle: &'static str,
) -> Case {
    Case {
        method: Method::POST,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status,
        kind,
        needle,
    }
}

fn bad(path: &str, body: &str, needle: &'static str) -> Case {
    json_case(path, body, 400, "invalid_argument", needle)
}

fn bad_get(path: String, needle: &'static str) -> Case {
    Case {
        method: Method::GET,
        path,
        content_type: None,
        body: Vec::new(),
        status: 400,
        kind: "invalid_argument",
        needle,
    }
}

fn submit_cases() -> Vec<Case> {
    let p = "/v1/executions";
    let long_lane = format!(r#"{{"kind":"k","lane":"{}"}}"#, "x".repeat(65));
    let long_kind = format!(r#"{{"kind":"{}"}}"#, "k".repeat(129));
    let mut cases = vec![
        bad(p, r#"{"kind":"#, "body"),
        bad(p, "not json", "body"),
        bad(p, "", "body"),
        bad(p, "[]", "body"),
        bad(p, "null", "body"),
        bad(p, r#"{"kind":"k"} trailing"#, "body"),
        bad(p, "{}", "kind"),
        bad(p, r#"{"kind":5}"#, "kind"),
        bad(p, r#"{"kind":"has space"}"#, "kind"),
        bad(p, &long_kind, "kind"),
        bad(p, r#"{"kind":"k","lane":""}"#, "lane"),
        bad(p, &long_lane, "lane"),
        bad(p, r#"{"kind":"k","priority":"high"}"#, "priority"),
        bad(p, r#"{"kind":"k","priority":1001}"#, "priority"),
        bad(p, r#"{"kind":"k","priority":-1001}"#, "priority"),
        bad(p, r#"{"kind":"k","priority":10000000000}"#, "priority"),
        bad(p, r#"{"kind":"k","priority":1e400}"#, "priority"),
        bad(p, r#"{"kind":"k","priority":1.5}"#, "priority"),
        bad(p, r#"{"kind":"k","max_attempts":0}"#, "max_attempts"),
        bad(p, r#"{"kind":"k","max_attempts":1001}"#, "max_attempts"),
        bad(p, r#"{"kind":"k","max_attempts":-1}"#, "max_attempts"),
        bad(p, r#"{"kind":"k","dealy_ms":5}"#, "dealy_ms"),
        bad(p, r#"{"kind":"k","delay_ms":-5}"#, "delay_ms"),
        bad(
            p,
            r#"{"kind":"k","delay_ms":5,"run_at":"2030-01-01T00:00:00Z"}"#,
            "delay_ms",
        ),
        bad(p, r#"{"kind":"k","run_at":"tomorrow"}"#, "run_at"),
        bad(
            p,
            r#"{"kind":"k","backoff":{"jitter":2}}"#,
            "backoff.jitter",
        ),
        bad(
            p,
            r#"{"kind":"k","backoff":{"jitter":"x"}}"#,
            "backoff.jitter",
        ),
        bad(
            p,
            r#"{"kind":"k","backoff":{"initail_ms":5}}"#,
            "initail_ms",
        ),
        bad(
            p,
            r#"{"kind":"k","backoff":{"initial_ms":5000,"max_ms":10}}"#,
            "backoff.max_ms",
        ),
        bad(p, r#"{"kind":"k","timeout_ms":0}"#, "timeout_ms"),
        bad(p, r#"{"kind":"k","deadline_ms":-1}"#, "deadline_ms"),
        bad(p, r#"{"kind":"k","requires":["a b"]}"#, "requires"),
        bad(p, r#"{"kind":"k","requires":"gpu"}"#, "requires"),
        bad(p, r#"{"kind":"k","tags":{"t":5}}"#, "tags"),
        bad(p, r#"{"kind":"k","idempotency_key":""}"#, "idempotency_key"),
    ];
    let mut no_type = bad(p, r#"{"kind":"k"}"#, "Content-Type");
    no_type.content_type = None;
    let mut text = bad(p, r#"{"kind":"k"}"#, "Content-Type");
    text.content_type = Some("text/plain");
    cases.extend([no_type, text]);
    cases
}

fn claim_cases() -> Vec<Case> {
    let p = "/v1/claims";
    vec![
        bad(p, r#"{"lanes":["idle"]}"#, "worker_id"),
        bad(p, r#"{"worker_id":"","lanes":["idle"]}"#, "worker_id"),
        bad(p, r#"{"worker_id":"w"}"#, "lanes"),
        bad(p, r#"{"worker_id":"w","lanes":[]}"#, "lanes"),
        bad(p, r#"{"worker_id":"w","lanes":"idle"}"#, "lanes"),
        bad(
            p,
            r#"{"worker_id":"w","lanes":["idle"],"lane":"x"}"#,
            "lane",
        ),
        bad(p, r#"{"worker_id":"w","lanes":["idle"],"max":0}"#, "max"),
        bad(p, r#"{"worker_id":"w","lanes":["idle"],"max":1001}"#, "max"),
        bad(p, r#"{"worker_id":"w","lanes":["idle"],"max":-1}"#, "max"),
        bad(
            p,
            r#"{"worker_id":"w","lanes":["idle"],"lease_ms":50}"#,
            "lease_ms",
        ),
        bad(
            p,
            r#"{"worker_id":"w","lanes":["idle"],"lease_ms":"long"}"#,
            "lease_ms",
        ),
        bad(
            p,
            r#"{"worker_id":"w","lanes":["idle"],"wait_ms":60001}"#,
            "wait_ms",
        ),
        bad(
            p,
            r#"{"worker_id":"w","lanes":["idle"],"wait_ms":-1}"#,
            "wait_ms",
        ),
        bad(
            p,
            r#"{"worker_id":"w","lanes":["idle"],"capabilities":["a b"]}"#,
            "capabilities",
        ),
        bad(
            p,
            r#"{"worker_id":"w","lanes":["idle"],"capabilities":[1]}"#,
            "capabilities",
        ),
    ]
}

/// Bodies for the worker writes of the active execution `a`, whose real
/// lease is `lease`, and for the operator routes of the waiting `w`.
fn execution_cases(w: &str, a: &str, lease: &Value) -> Vec<Case> {
    let lease_id = lease["lease_id"].as_str().unwrap_or("").to_owned();
    let epoch = lease["epoch"].as_u64().unwrap_or(0);
    let good = |extra: &str| format!(r#"{{"lease_id":"{lease_id}","epoch":{epoch}{extra}}}"#);
    let (hb, done, fail) = (
        format!("/v1/executions/{a}/heartbeat"),
        format!("/v1/executions/{a}/complete"),
        format!("/v1/executions/{a}/fail"),
    );
    let (cancel, replay) = (
        format!("/v1/executions/{w}/cancel"),
        format!("/v1/executions/{w}/replay"),
    );
    let long_reason = format!(r#"{{"reason":"{}"}}"#, "r".repeat(2000));
    vec![
        bad(
            &hb,
            &format!(r#"{{"lease_id":"{lease_id}","epoch":"1"}}"#),
            "epoch",
        ),
        bad(
            &hb,
            &format!(r#"{{"lease_id":"{lease_id}","epoch":-1}}"#),
            "epoch",
        ),
        bad(&hb, r#"{"epoch":1}"#, "lease_id"),
        bad(&hb, &good(r#","lease_ms":10"#), "lease_ms"),
        bad(&hb, &good(r#","lease_ms":"x""#), "lease_ms"),
        bad(&hb, &good(r#","extend":true"#), "extend"),
        bad(&hb, "{", "body"),
        bad(&done, r#"{"epoch":1}"#, "lease_id"),
        bad(&done, &good(r#","results":1"#), "results"),
        bad(
            &done,
            &format!(r#"{{"lease_id":5,"epoch":{epoch}}}"#),
            "lease_id",
        ),
        bad(&fail, &good(""), "error"),
        bad(&fail, &good(r#","error":{}"#), "message"),
        bad(&fail, &good(r#","error":"boom""#), "error"),
        bad(
            &fail,
            &good(r#","error":{"message":"m","retryable":"yes"}"#),
            "error.retryable",
        ),
        bad(
            &fail,
            &good(r#","error":{"message":"m","kinds":"x"}"#),
            "kinds",
        ),
        bad(&cancel, r#"{"reason":5}"#, "reason"),
        bad(&cancel, r#"{"why":"x"}"#, "why"),
        bad(&cancel, &long_reason, "reason"),
        bad(&cancel, "[", "body"),
        bad(&replay, r#"{"x":1}"#, "x"),
    ]
}

/// Bodies for `release` (an addition to the contract) of the active `a`.
fn release_cases(a: &str, lease: &Value) -> Vec<Case> {
    let lease_id = lease["lease_id"].as_str().unwrap_or("").to_owned();
    let epoch = lease["epoch"].as_u64().unwrap_or(0);
    let good = |extra: &str| format!(r#"{{"lease_id":"{lease_id}","epoch":{epoch}{extra}}}"#);
    let release = format!("/v1/executions/{a}/release");
    let mut untyped = bad(&release, &good(""), "Content-Type");
    untyped.content_type = None;
    vec![
        untyped,
        bad(&release, r#"{"epoch":1}"#, "lease_id"),
        bad(
            &release,
            &format!(r#"{{"lease_id":"{lease_id}"}}"#),
            "epoch",
        ),
        bad(
            &release,
            &format!(r#"{{"lease_id":"{lease_id}","epoch":"1"}}"#),
            "epoch",
        ),
        bad(
            &release,
            &format!(r#"{{"lease_id":"{lease_id}","epoch":-1}}"#),
            "epoch",
        ),
        bad(&release, &good(r#","reason":"done""#), "reason"),
        bad(&release, &good(r#","result":1"#), "result"),
        bad(&release, "[]", "body"),
        bad(&release, "", "body"),
    ]
}

fn query_cases(w: &str) -> Vec<Case> {
    let list = |q: &str| format!("/v1/executions?{q}");
    let wait = |q: &str| format!("/v1/executions/{w}/wait?{q}");
    vec![
        bad_get(list("state=bogus"), "state"),
        bad_get(list("limit=abc"), "limit"),
        bad_get(list("limit=0"), "limit"),
        bad_get(list("limit=1001"), "limit"),
        bad_get(list("limit=-1"), "limit"),
        bad_get(list("limit=1&limit=2"), "limit"),
        bad_get(list("foo=1"), "foo"),
        bad_get(list("lane="), "lane"),
        bad_get(list("lane=a%20b"), "lane"),
        bad_get(list("kind="), "kind"),
        bad_get(list("flow_id=nope"), "flow_id"),
        bad_get(list("cursor="), "cursor"),
        bad_get(wait("timeout_ms=abc"), "timeout_ms"),
        bad_get(wait("timeout_ms=60001"), "timeout_ms"),
        bad_get(wait("timeout_ms=-1"), "timeout_ms"),
        bad_get(wait("timeout=5"), "timeout"),
    ]
}

/// Every route that takes an id, with an id that cannot exist.
fn unknown_id_cases(lease: &Value) -> Vec<Case> {
    let ghost = ExecutionId::mint(PartitionId(0), 1).to_string();
    let lease_body = lease.to_string();
    let mut cases = Vec::new();
    for id in [ghost.as_str(), "ex_nope", "not-an-id"] {
        for route in ["", "/attempts", "/wait?timeout_ms=0"] {
            let mut case = bad_get(format!("/v1/executions/{id}{route}"), "");
            (case.status, case.kind) = (404, "not_found");
            cases.push(case);
        }
        for (route, body) in [
            ("cancel", "{}".to_owned()),
            ("replay", "{}".to_owned()),
            ("heartbeat", lease_body.clone()),
            ("complete", lease_body.clone()),
            ("release", lease_body.clone()),
            (
                "fail",
                with(lease.clone(), json!({"error": {"message": "m"}})).to_string(),
            ),
        ] {
            let path = format!("/v1/executions/{id}/{route}");
            cases.push(json_case(&path, &body, 404, "not_found", ""));
        }
    }
    cases
}

/// Bodies for `POST /v1/flows`: JSON, types, unknown fields at every level,
/// and every graph error (duplicate key, unknown key, self edge, cycle, bad
/// join), each named by its field path.
fn flow_create_cases() -> Vec<Case> {
    let p = "/v1/flows";
    let one = r#"{"key":"a","kind":"k"}"#;
    let two = r#"{"key":"a","kind":"k"},{"key":"b","kind":"k"}"#;
    let three = r#"{"key":"a","kind":"k"},{"key":"b","kind":"k"},{"key":"c","kind":"k"}"#;
    let flow = |nodes: &str, rest: &str| format!(r#"{{"nodes":[{nodes}]{rest}}}"#);
    let joined = |join: &str| {
        flow(
            two,
            &format!(r#","edges":[{{"from":"a","to":"b"}}],"joins":{{"b":{join}}}"#),
        )
    };
    let long_name = flow(one, &format!(r#","name":"{}""#, "n".repeat(257)));
    let mut cases = vec![
        bad(p, "{", "body"),
        bad(p, "[]", "body"),
        bad(p, "{}", "nodes"),
        bad(p, r#"{"nodes":[]}"#, "nodes"),
        bad(p, r#"{"nodes":{}}"#, "nodes"),
        bad(p, &flow(one, r#","nodez":1"#), "nodez"),
        bad(p, &flow(r#"{"key":"a"}"#, ""), "kind"),
        bad(p, &flow(r#"{"kind":"k"}"#, ""), "key"),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","delay_ms":5}"#, ""),
            "delay_ms",
        ),
        bad(p, &flow(r#"{"key":"a","kind":"k","tags":{}}"#, ""), "tags"),
        bad(p, &flow(r#"{"key":"a b","kind":"k"}"#, ""), "nodes[0].key"),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"has space"}"#, ""),
            "nodes[0].kind",
        ),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","priority":5000}"#, ""),
            "nodes[0].priority",
        ),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","priority":"hi"}"#, ""),
            "priority",
        ),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","max_attempts":0}"#, ""),
            "nodes[0].max_attempts",
        ),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","timeout_ms":0}"#, ""),
            "nodes[0].timeout_ms",
        ),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","backoff":{"jitter":2}}"#, ""),
            "nodes[0].backoff.jitter",
        ),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","requires":["a b"]}"#, ""),
            "nodes[0].requires",
        ),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k","lane":""}"#, ""),
            "nodes[0].lane",
        ),
        bad(p, &flow(one, r#","lane":"a b""#), "lane"),
        bad(p, &flow(one, r#","idempotency_key":"""#), "idempotency_key"),
        bad(p, &long_name, "name"),
        bad(p, &flow(one, r#","on_failure":"explode""#), "on_failure"),
        bad(
            p,
            &flow(r#"{"key":"a","kind":"k"},{"key":"a","kind":"k"}"#, ""),
            "nodes[1].key",
        ),
        bad(
            p,
            &flow(one, r#","edges":[{"from":"a","to":"x"}]"#),
            "edges[0].to",
        ),
        bad(
            p,
            &flow(one, r#","edges":[{"from":"x","to":"a"}]"#),
            "edges[0].from",
        ),
        bad(
            p,
            &flow(one, r#","edges":[{"from":"a","to":"a"}]"#),
            "edges[0]",
        ),
        bad(
            p,
            &flow(two, r#","edges":[{"from":"a","to":"b","on":"sometimes"}]"#),
            "on",
        ),
        bad(
            p,
            &flow(two, r#","edges":[{"from":"a","to":"b","of":"x"}]"#),
            "of",
        ),
        bad(p, &flow(two, r#","edges":[{"from":"a"}]"#), "to"),
        bad(
            p,
            &flow(
                three,
                r#","edges":[{"from":"a","to":"b"},{"from":"b","to":"c"},{"from":"c","to":"a"}]"#,
            ),
            "cycle",
        ),
        bad(p, &joined(r#"{"mode":"quorum","n":2}"#), "joins.b.n"),
        bad(p, &joined(r#"{"mode":"quorum"}"#), "joins.b.n"),
        bad(p, &joined(r#"{"mode":"all","n":1}"#), "joins.b.n"),
        bad(p, &joined(r#"{"mode":"most"}"#), "mode"),
        bad(p, &joined(r#"{"n":1}"#), "mode"),
        bad(
            p,
            &joined(r#"{"mode":"any","cancel_remaining":"yes"}"#),
            "cancel_remaining",
        ),
        bad(p, &joined(r#"{"mode":"any","wait":1}"#), "wait"),
        bad(p, &flow(two, r#","joins":{"a":{"mode":"any"}}"#), "joins.a"),
        bad(p, &flow(one, r#","joins":{"x":{"mode":"any"}}"#), "joins.x"),
    ];
    let mut untyped = bad(p, &flow(one, ""), "Content-Type");
    untyped.content_type = None;
    cases.push(untyped);
    cases
}

/// Bodies for adding to the running flow `f`, cancelling it, and adding to
/// the cancelled flow `g` (a conflict).
fn flow_change_cases(f: &str, g: &str) -> Vec<Case> {
    let add = format!("/v1/flows/{f}/nodes");
    let cancel = format!("/v1/flows/{f}/cancel");
    let node = r#"{"key":"new","kind":"k"}"#;
    let nodes = |rest: &str| format!(r#"{{"nodes":[{node}]{rest}}}"#);
    let mut untyped = bad(&add, &nodes(""), "Content-Type");
    untyped.content_type = None;
    vec![
        untyped,
        bad(&add, "", "body"),
        bad(&add, "{}", "nodes"),
        bad(&add, r#"{"nodes":[]}"#, "nodes"),
        bad(&add, &nodes(r#","name":"x""#), "name"),
        bad(&add, &nodes(r#","on_failure":"continue""#), "on_failure"),
        bad(&add, &nodes(r#","lane":"a b""#), "lane"),
        bad(
            &add,
            r#"{"nodes":[{"key":"new","kind":"k","priority":5000}]}"#,
            "nodes[0].priority",
        ),
        bad(
            &add,
            r#"{"nodes":[{"key":"a","kind":"k"}]}"#,
            "nodes[0].key",
        ),
        bad(
            &add,
            &nodes(r#","edges":[{"from":"new","to":"a"}]"#),
            "edges[0].to",
        ),
        bad(
            &add,
            &nodes(r#","edges":[{"from":"ghost","to":"new"}]"#),
            "edges[0].from",
        ),
        bad(&add, &nodes(r#","joins":{"a":{"mode":"any"}}"#), "joins.a"),
        bad(
            &add,
            r#"{"nodes":[{"key":"p","kind":"k"},{"key":"q","kind":"k"}],
                "edges":[{"from":"p","to":"q"},{"from":"q","to":"p"}]}"#,
            "cycle",
        ),
        bad(&cancel, r#"{"reason":"x"}"#, "reason"),
        bad(&cancel, "[", "body"),
        json_case(
            &format!("/v1/flows/{g}/nodes"),
            &nodes(""),
            409,
            "conflict",
            "",
        ),
    ]
}

fn flow_query_cases(f: &str) -> Vec<Case> {
    let list = |q: &str| format!("/v1/flows?{q}");
    let wait = |q: &str| format!("/v1/flows/{f}/wait?{q}");
    vec![
        bad_get(list("state=done"), "state"),
        bad_get(list("state=waiting"), "state"),
        bad_get(list("limit=0"), "limit"),
        bad_get(list("limit=1001"), "limit"),
        bad_get(list("limit=x"), "limit"),
        bad_get(list("cursor="), "cursor"),
        bad_get(list("lane=a"), "lane"),
        bad_get(list("state=running&state=blocked"), "state"),
        bad_get(wait("timeout_ms=60001"), "timeout_ms"),
        bad_get(wait("timeout_ms=-1"), "timeout_ms"),
        bad_get(wait("timeout=5"), "timeout"),
    ]
}

/// Every flow route that takes an id, with ids no flow has.
fn unknown_flow_cases() -> Vec<Case> {
    let ghost = weft_core::FlowId::mint(PartitionId(0), 1).to_string();
    let execution = ExecutionId::mint(PartitionId(0), 1).to_string();
    let mut cases = Vec::new();
    for id in [ghost.as_str(), execution.as_str(), "fl_nope", "not-an-id"] {
        for route in ["", "/wait?timeout_ms=0"] {
            let mut case = bad_get(format!("/v1/flows/{id}{route}"), "");
            (case.status, case.kind) = (404, "not_found");
            cases.push(case);
        }
        let add = r#"{"nodes":[{"key":"n","kind":"k"}]}"#;
        for (route, body) in [("cancel", "{}"), ("nodes", add)] {
            let path = format!("/v1/flows/{id}/{route}");
            cases.push(json_case(&path, body, 404, "not_found", ""));
        }
    }
    cases
}

async fn run(server: &TestServer, cases: Vec<Case>) {
    for case in cases {
        let label = format!(
            "{} {} {:?}",
            case.method,
            case.path,
            String::from_utf8_lossy(&case.body)
        );
        let answer = server
            .raw(case.method, &case.path, case.content_type, case.body)
            .await;
        assert!(answer.0.as_u16() < 500, "{label}: {}", answer.1);
        assert_error(&answer, case.status, case.kind, case.needle, &label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let server = start(ServerConfig::default()).await;
    let w = server.submit(json!({"kind": "k", "lane": "idle"})).await;
    server.submit(json!({"kind": "k", "lane": "busy"})).await;
    let task = server.claim_one("busy", 30_000).await;
    let w_id = w["id"].as_str().expect("id").to_owned();
    let a_id = task["execution_id"].as_str().expect("id").to_owned();
    let (_, a_before) = server.get(&format!("/v1/executions/{a_id}")).await;
    let (_, w_before) = server.get(&format!("/v1/executions/{w_id}")).await;
    let lease = lease_of(&task);

    run(&server, submit_cases()).await;
    run(&server, claim_cases()).await;
    run(&server, execution_cases(&w_id, &a_id, &lease)).await;
    run(&server, release_cases(&a_id, &lease)).await;
    run(&server, query_cases(&w_id)).await;
    run(&server, unknown_id_cases(&lease)).await;

    let (_, all) = server.get("/v1/executions?limit=1000").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2), "{all}");
    let (_, a_after) = server.get(&format!("/v1/executions/{a_id}")).await;
    let (_, w_after) = server.get(&format!("/v1/executions/{w_id}")).await;
    assert_eq!(a_after, a_before, "the active execution was changed");
    assert_eq!(w_after, w_before, "the waiting execution was changed");
    let (_, attempts) = server.get(&format!("/v1/executions/{a_id}/attempts")).await;
    assert_eq!(attempts["items"].as_array().map(Vec::len), Some(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flow_requests_are_refused_and_change_nothing() {
    let server = start(ServerConfig::default()).await;
    let body = json!({"lane": "fl", "nodes": [{"key": "a", "kind": "k"}, {"key": "b", "kind": "k"}],
                      "edges": [{"from": "a", "to": "b"}]});
    let f = server.create_flow(body.clone()).await;
    let g = server.create_flow(body).await;
    let f_id = f["id"].as_str().expect("id").to_owned();
    let g_id = g["id"].as_str().expect("id").to_owned();
    let (status, cancelled) = server
        .post(&format!("/v1/flows/{g_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let (_, f_before) = server.get(&format!("/v1/flows/{f_id}")).await;
    let (_, g_before) = server.get(&format!("/v1/flows/{g_id}")).await;

    run(&server, flow_create_cases()).await;
    run(&server, flow_change_cases(&f_id, &g_id)).await;
    run(&server, flow_query_cases(&f_id)).await;
    run(&server, unknown_flow_cases()).await;

    let (_, all) = server.get("/v1/flows").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2), "{all}");
    let (_, members) = server.get("/v1/executions?limit=1000").await;
    assert_eq!(
        members["items"].as_array().map(Vec::len),
        Some(4),
        "{members}"
    );
    let (_, f_after) = server.get(&format!("/v1/flows/{f_id}")).await;
    let (_, g_after) = server.get(&format!("/v1/flows/{g_id}")).await;
    assert_eq!(f_after, f_before, "the running flow was changed");
    assert_eq!(g_after, g_before, "the cancelled flow was changed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_payloads_are_413() {
    let config = ServerConfig::new(Vec::new(), 4096).expect("config");
    let body_max = config.body_bytes_max;
    let server = start(config).await;
    let big_payload = json!({"kind": "k", "payload": "x".repeat(5000)});
    let answer = server.post("/v1/executions", big_payload).await;
    assert_error(
        &answer,
        413,
        "payload_too_large",
        "payload",
        "payload over the limit",
    );
    let fits = json!({"kind": "k", "payload": "x".repeat(4000)});
    assert_eq!(
        server.post("/v1/executions", fits).await.0,
        StatusCode::CREATED
    );

    // A body over the body limit: the server reads it all, then answers 413.
    let padding = "y".repeat(usize::try_from(body_max).expect("usize") + 10);
    let huge = format!(r#"{{"kind":"k","payload":"{padding}"}}"#).into_bytes();
    for path in [
        "/v1/executions",
        "/v1/claims",
        "/v1/executions/ex_nope/cancel",
    ] {
        let answer = server
            .raw(Method::POST, path, Some("application/json"), huge.clone())
            .await;
        assert_error(&answer, 413, "payload_too_large", "limit", path);
    }
    // An oversized result of a completion.
    server.submit(json!({"kind": "k", "lane": "r"})).await;
    let task = server.claim_one("r", 30_000).await;
    let id = task["execution_id"].as_str().expect("id");
    let result = with(lease_of(&task), json!({"result": "z".repeat(5000)}));
    let answer = server
        .post(&format!("/v1/executions/{id}/complete"), result)
        .await;
    assert_error(
        &answer,
        413,
        "payload_too_large",
        "result",
        "result over the limit",
    );
    let (_, still) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(still["state"], "active");
    let (_, all) = server.get("/v1/executions").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    server.stop().await;
}
