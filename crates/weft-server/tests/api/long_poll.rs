//! Long-polls: a waiting claim and a waiting `wait` answer promptly when the
//! awaited change happens, time out when it does not, fall back to polling
//! over a store without events, stop when the client leaves (handing back
//! what a claim in progress took), and answer at once when the server shuts
//! down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_server::ServerConfig;
use weft_sqlite::{SqliteConfig, SqliteStore};

use crate::support::{lease_of, start, start_with, TestServer, Tweaked};

/// Starts a claim with `wait_ms` on `lane` in the background.
fn claim_in_background(
    server: &TestServer,
    lane: &str,
    wait_ms: i64,
) -> tokio::task::JoinHandle<(StatusCode, Value, Duration)> {
    let client = server.client.clone();
    let url = format!("{}/v1/claims", server.base);
    let body = json!({"worker_id": "waiter", "lanes": [lane], "wait_ms": wait_ms});
    tokio::spawn(async move {
        let started = Instant::now();
        let response = client.post(url).json(&body).send().await.expect("claim");
        let status = response.status();
        let answer: Value = response.json().await.expect("json");
        (status, answer, started.elapsed())
    })
}

/// A claim waiting 20 s gets a task submitted 300 ms into the wait within
/// well under a second of the submit.
async fn claim_wakes_on_submit(server: &TestServer) {
    let claim = claim_in_background(server, "lp", 20_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !claim.is_finished(),
        "the claim answered before any work came"
    );
    let submitted_at = Instant::now();
    let exec = server.submit(json!({"kind": "k", "lane": "lp"})).await;
    let (status, answer, _) = claim.await.expect("join");
    let latency = submitted_at.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["tasks"][0]["execution_id"], exec["id"]);
    assert!(
        latency < Duration::from_secs(2),
        "claim took {latency:?} after the submit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_returns_promptly_when_work_arrives() {
    let server = start(ServerConfig::default()).await;
    claim_wakes_on_submit(&server).await;
    // Nothing comes: the claim answers empty after its wait, not before.
    let (status, answer, elapsed) = claim_in_background(&server, "empty", 400)
        .await
        .expect("join");
    assert_eq!((status, answer), (StatusCode::OK, json!({"tasks": []})));
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_and_wait_poll_a_store_without_events() {
    let store = SqliteStore::open(SqliteConfig::memory()).expect("store");
    let server = start_with(Arc::new(Tweaked::no_events(store)), ServerConfig::default()).await;
    claim_wakes_on_submit(&server).await;
    wait_wakes_on_complete(&server).await;
    server.stop().await;
}

/// A wait of 20 s on an active execution answers within well under a
/// second of its completion.
async fn wait_wakes_on_complete(server: &TestServer) {
    let exec = server.submit(json!({"kind": "k", "lane": "w"})).await;
    let id = exec["id"].as_str().expect("id").to_owned();
    let task = server.claim_one("w", 30_000).await;
    let client = server.client.clone();
    let url = format!("{}/v1/executions/{id}/wait?timeout_ms=20000", server.base);
    let wait = tokio::spawn(async move {
        let response = client.get(url).send().await.expect("wait");
        (
            response.status(),
            response.json::<Value>().await.expect("json"),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !wait.is_finished(),
        "the wait answered before the execution ended"
    );
    let completed_at = Instant::now();
    let (status, _) = server
        .post(&format!("/v1/executions/{id}/complete"), lease_of(&task))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = wait.await.expect("join");
    let latency = completed_at.elapsed();
    assert_eq!(
        (status, answer["state"].clone()),
        (StatusCode::OK, json!("completed"))
    );
    assert!(
        latency < Duration::from_secs(2),
        "wait took {latency:?} after the completion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_on_completion_or_timeout() {
    let server = start(ServerConfig::default()).await;
    wait_wakes_on_complete(&server).await;
    let exec = server.submit(json!({"kind": "k", "lane": "idle"})).await;
    let started = Instant::now();
    let path = format!(
        "/v1/executions/{}/wait?timeout_ms=300",
        exec["id"].as_str().expect("id")
    );
    let (status, answer) = server.get(&path).await;
    let elapsed = started.elapsed();
    assert_eq!(
        (status, answer["state"].clone()),
        (StatusCode::OK, json!("waiting"))
    );
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_client_claims_nothing() {
    let server = start(ServerConfig::default()).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let body = json!({"worker_id": "gone", "lanes": ["ghost"], "wait_ms": 10_000});
    let result = impatient
        .post(format!("{}/v1/claims", server.base))
        .json(&body)
        .send()
        .await;
    assert!(result.is_err(), "the client should have given up");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let exec = server.submit(json!({"kind": "k", "lane": "ghost"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, now) = server
        .get(&format!(
            "/v1/executions/{}",
            exec["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(
        now["state"], "waiting",
        "a claim nobody waits for took the task"
    );
    server.stop().await;
}

/// A client that leaves while its claim is in the store: the claim finishes
/// and hands its task back at once, rather than leaving it leased to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_claim_gets_its_task_released() {
    let store = SqliteStore::open(SqliteConfig::memory()).expect("store");
    let slow = Tweaked::slow_claims(store, Duration::from_millis(500));
    let server = start_with(Arc::new(slow), ServerConfig::default()).await;
    let exec = server.submit(json!({"kind": "k", "lane": "mid"})).await;
    let path = format!("/v1/executions/{}", exec["id"].as_str().expect("id"));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .expect("client");
    let body = json!({"worker_id": "gone", "lanes": ["mid"], "lease_ms": 60_000});
    let result = impatient
        .post(format!("{}/v1/claims", server.base))
        .json(&body)
        .send()
        .await;
    assert!(result.is_err(), "the client should have given up");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, now) = server.get(&path).await;
        if now["state"] == "waiting" && now["attempts"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never handed back: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, attempts) = server.get(&format!("{path}/attempts")).await;
    assert_eq!(attempts["items"][0]["state"], "released", "{attempts}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_long_polls_at_once() {
    let server = start(ServerConfig::default()).await;
    let claim = claim_in_background(&server, "never", 30_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    server.stop().await;
    let (status, answer, _) = claim.await.expect("join");
    assert_eq!((status, answer), (StatusCode::OK, json!({"tasks": []})));
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
}
