//! Goal: suspend, the token route and the operator route behave as the
//! contract's Signals section says: a token resumes its execution once, and
//! every forged, altered, expired, wrong-key or used-up token is refused
//! with `403 invalid_token` and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_core::token::{Keyring, SigningKey};
use weft_core::CountingStore;
use weft_server::keys::now_ms;
use weft_server::{Keys, ServerConfig};
use weft_sqlite::{SqliteConfig, SqliteStore};

use crate::support::{self, assert_error, lease_of, with, TestServer};

fn key(id: &str, fill: u8) -> SigningKey {
    SigningKey::new(id, &[fill; 32], 0).expect("key")
}

/// Submits one `deploy`, claims it, and suspends it on `waitpoints` with
/// `resume_when`; returns the execution id, the task and the suspend answer.
async fn suspended(
    server: &TestServer,
    waitpoints: Value,
    resume_when: &str,
) -> (String, Value, Value) {
    let lane = format!("l{}", unique_lane());
    let execution = server
        .submit(json!({"kind": "deploy", "lane": lane, "payload": {"v": 1}}))
        .await;
    let id = execution["id"].as_str().expect("id").to_owned();
    let task = server.claim_one(&lane, 30_000).await;
    let body = with(
        lease_of(&task),
        json!({"waitpoints": waitpoints, "resume_when": resume_when}),
    );
    let (status, answer) = server
        .post(&format!("/v1/executions/{id}/suspend"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    (id, task, answer)
}

/// A lane of its own per call, so claims never pick up another case's task.
fn unique_lane() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn token_of(answer: &Value, name: &str) -> String {
    answer["waitpoints"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == name))
        .and_then(|w| w["token"].as_str())
        .unwrap_or_else(|| panic!("no token for {name} in {answer}"))
        .to_owned()
}

async fn signal(server: &TestServer, token: &str, payload: Value) -> (StatusCode, Value) {
    server
        .post("/v1/signals", json!({"token": token, "payload": payload}))
        .await
}

#[tokio::test]
async fn a_token_resumes_and_the_next_claim_carries_its_signal() {
    let server = support::start(ServerConfig::default()).await;
    let waitpoints = json!([{"name": "approval", "timeout_ms": 3_600_000, "on_timeout": "fail"}]);
    let (id, task, answer) = suspended(&server, waitpoints, "all").await;
    let execution = &answer["execution"];
    assert_eq!(execution["state"], "suspended", "{answer}");
    assert!(answer.get("signals").is_none(), "{answer}");
    let suspension = &execution["suspension"];
    assert_eq!(suspension["seq"], 1);
    assert_eq!(suspension["resume_when"], "all");
    assert_eq!(suspension["waitpoints"][0]["name"], "approval");
    assert_eq!(suspension["waitpoints"][0]["signalled"], false);
    assert_eq!(suspension["waitpoints"][0]["on_timeout"], "fail");
    assert_eq!(
        answer["waitpoints"][0]["expires_at"],
        suspension["waitpoints"][0]["timeout_at"]
    );
    let (_, attempts) = server.get(&format!("/v1/executions/{id}/attempts")).await;
    assert_eq!(attempts["items"][0]["state"], "suspended", "{attempts}");

    // The same suspend again (a retried request) answers the same tokens.
    let again = with(
        lease_of(&task),
        json!({"waitpoints": [{"name": "approval", "timeout_ms": 3_600_000}]}),
    );
    let (status, repeated) = server
        .post(&format!("/v1/executions/{id}/suspend"), again)
        .await;
    assert_eq!(status, StatusCode::OK, "{repeated}");
    assert_eq!(repeated["waitpoints"], answer["waitpoints"]);

    let token = token_of(&answer, "approval");
    let (status, resumed) = signal(&server, &token, json!({"approved_by": "ana"})).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["execution"]["state"], "waiting", "{resumed}");
    assert_eq!(resumed["execution"]["suspension"], Value::Null);

    let lane = task["lane"].as_str().expect("lane");
    let task = server.claim_one(lane, 30_000).await;
    assert_eq!(task["signals"], json!({"approval": {"approved_by": "ana"}}));
    assert_eq!(task["attempt"], 2);
    let (status, done) = server
        .post(
            &format!("/v1/executions/{id}/complete"),
            with(lease_of(&task), json!({"result": "deployed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn all_waits_for_every_waitpoint_and_any_for_one() {
    let server = support::start(ServerConfig::default()).await;
    let two = json!([{"name": "a"}, {"name": "b"}]);

    let (_, task, answer) = suspended(&server, two.clone(), "all").await;
    let (status, first) = signal(&server, &token_of(&answer, "a"), json!(1)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["execution"]["state"], "suspended");
    assert_eq!(
        first["execution"]["suspension"]["waitpoints"][0]["signalled"],
        true
    );
    let (status, second) = signal(&server, &token_of(&answer, "b"), json!(2)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["execution"]["state"], "waiting");
    let task = server
        .claim_one(task["lane"].as_str().expect("lane"), 30_000)
        .await;
    assert_eq!(task["signals"], json!({"a": 1, "b": 2}));

    let (_, task, answer) = suspended(&server, two, "any").await;
    let (status, first) = signal(&server, &token_of(&answer, "b"), json!("b")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["execution"]["state"], "waiting");
    // The suspension is over: the other waitpoint's token opens nothing.
    let late = signal(&server, &token_of(&answer, "a"), json!("a")).await;
    assert_error(&late, 403, "invalid_token", "token", "any: the other token");
    let task = server
        .claim_one(task["lane"].as_str().expect("lane"), 30_000)
        .await;
    assert_eq!(task["signals"], json!({"b": "b"}));
    server.stop().await;
}

#[tokio::test]
async fn a_buffered_operator_signal_satisfies_a_later_suspend() {
    let server = support::start(ServerConfig::default()).await;
    let execution = server
        .submit(json!({"kind": "deploy", "lane": "buffered"}))
        .await;
    let id = execution["id"].as_str().expect("id");
    let task = server.claim_one("buffered", 30_000).await;
    let path = format!("/v1/executions/{id}/signals");
    let (status, buffered) = server
        .post(
            &path,
            json!({"waitpoint": "approval", "payload": {"ok": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{buffered}");
    assert_eq!(buffered["execution"]["state"], "active");
    let twice = server.post(&path, json!({"waitpoint": "approval"})).await;
    assert_error(&twice, 409, "conflict", "approval", "buffered twice");

    let (status, answer) = server
        .post(
            &format!("/v1/executions/{id}/suspend"),
            with(
                lease_of(&task),
                json!({"waitpoints": [{"name": "approval"}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["execution"]["state"], "active", "{answer}");
    assert_eq!(answer["signals"], json!({"approval": {"ok": true}}));
    // Still the same lease: the handler carries on and completes.
    let (status, done) = server
        .post(
            &format!("/v1/executions/{id}/complete"),
            with(lease_of(&task), json!({"result": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let ended = server.post(&path, json!({"waitpoint": "other"})).await;
    assert_error(&ended, 409, "conflict", "completed", "after the end");
    server.stop().await;
}

#[tokio::test]
async fn the_operator_route_resumes_a_suspension_and_refuses_a_second_signal() {
    let server = support::start(ServerConfig::default()).await;
    let (id, _, answer) = suspended(&server, json!([{"name": "a"}, {"name": "b"}]), "all").await;
    let path = format!("/v1/executions/{id}/signals");
    let (status, first) = server
        .post(&path, json!({"waitpoint": "a", "payload": "x"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let again = server.post(&path, json!({"waitpoint": "a"})).await;
    assert_error(
        &again,
        409,
        "conflict",
        "already signalled",
        "operator twice",
    );
    // The token of a waitpoint an operator signalled is used up.
    let used = signal(&server, &token_of(&answer, "a"), json!(null)).await;
    assert_error(&used, 403, "invalid_token", "token", "token after operator");
    let (status, second) = server.post(&path, json!({"waitpoint": "b"})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["execution"]["state"], "waiting");
    server.stop().await;
}

/// Replaces the `index`th `~`-separated field of a token.
fn with_field(token: &str, index: usize, value: &str) -> String {
    let mut fields: Vec<&str> = token.split('~').collect();
    fields[index] = value;
    fields.join("~")
}

#[tokio::test]
async fn forged_altered_expired_and_foreign_tokens_change_nothing() {
    let ring = Keyring::new(key("ka", 1));
    let sqlite = SqliteStore::open(SqliteConfig::memory()).expect("open store");
    let counting = Arc::new(CountingStore::new(Arc::new(sqlite)));
    let server =
        support::start_with_keys(counting.clone(), ServerConfig::default(), Keys::fixed(ring))
            .await;
    let (id, _, answer) = suspended(&server, json!([{"name": "approval"}]), "all").await;
    let (other_id, _, _) = suspended(&server, json!([{"name": "approval"}]), "all").await;
    let before = server.get(&format!("/v1/executions/{id}")).await.1;
    let token = token_of(&answer, "approval");
    let fields: Vec<&str> = token.split('~').collect();
    assert_eq!(fields.len(), 7, "{token}");
    let mac = fields[6];
    let flipped_mac = format!(
        "{}{}",
        &mac[..mac.len() - 1],
        if mac.ends_with('0') { "1" } else { "0" }
    );
    let foreign = Keyring::new(key("ka", 2));
    let claims = foreign_claims(&token);
    let mut cases: Vec<(String, String)> = vec![
        ("version".into(), with_field(&token, 0, "wpt2")),
        ("key id".into(), with_field(&token, 1, "kb")),
        ("execution".into(), with_field(&token, 2, &other_id)),
        ("waitpoint".into(), with_field(&token, 3, "other")),
        ("seq".into(), with_field(&token, 4, "2")),
        ("expiry".into(), with_field(&token, 5, "99999999999999")),
        ("mac".into(), with_field(&token, 6, &flipped_mac)),
        ("extra field".into(), format!("{token}~x")),
        (
            "other key, same id".into(),
            foreign.sign(&claims).expect("sign"),
        ),
        ("empty".into(), String::new()),
        ("garbage".into(), "not a token".into()),
        ("long".into(), "x".repeat(10_000)),
    ];
    for cut in [1, 5, token.len() / 2, token.len() - 1] {
        cases.push((format!("truncated to {cut}"), token[..cut].to_owned()));
    }
    let calls = counting.calls();
    for (case, forged) in &cases {
        let answer = signal(&server, forged, json!("x")).await;
        assert_error(&answer, 403, "invalid_token", "token", case);
    }
    assert_eq!(counting.calls(), calls, "a refused token reached the store");
    let after = server.get(&format!("/v1/executions/{id}")).await.1;
    assert_eq!(before, after);
    let other_after = server.get(&format!("/v1/executions/{other_id}")).await.1;
    assert_eq!(other_after["state"], "suspended");

    // Expired: a one-millisecond waitpoint (no engine runs, so it stays
    // suspended) whose token is past its expiry.
    let (id, _, short) = suspended(&server, json!([{"name": "w", "timeout_ms": 1}]), "all").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = server.get(&format!("/v1/executions/{id}")).await.1;
    let expired = signal(&server, &token_of(&short, "w"), json!(null)).await;
    assert_error(&expired, 403, "invalid_token", "token", "expired");
    assert_eq!(server.get(&format!("/v1/executions/{id}")).await.1, before);
    server.stop().await;
}

/// What `token` grants, read back by the keyring that signed it.
fn foreign_claims(token: &str) -> weft_core::token::TokenClaims {
    Keyring::new(key("ka", 1))
        .verify(token, 0)
        .expect("the test keyring signed it")
}

#[tokio::test]
async fn a_used_token_and_a_token_of_an_ended_execution_are_refused() {
    let server = support::start(ServerConfig::default()).await;
    let (_, _, answer) = suspended(&server, json!([{"name": "a"}]), "all").await;
    let token = token_of(&answer, "a");
    let (status, _) = signal(&server, &token, json!(1)).await;
    assert_eq!(status, StatusCode::OK);
    let replayed = signal(&server, &token, json!(1)).await;
    assert_error(&replayed, 403, "invalid_token", "token", "replayed");

    let (id, _, answer) = suspended(&server, json!([{"name": "a"}]), "all").await;
    let (status, cancelled) = server
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let late = signal(&server, &token_of(&answer, "a"), json!(1)).await;
    assert_error(&late, 403, "invalid_token", "token", "cancelled");
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_out_key_verifies_during_its_grace_only() {
    let keys = Keys::fixed(Keyring::new(key("ka", 1)));
    let store = SqliteStore::open(SqliteConfig::memory()).expect("open store");
    let server =
        support::start_with_keys(Arc::new(store), ServerConfig::default(), keys.clone()).await;
    let (_, _, within) = suspended(&server, json!([{"name": "a"}]), "all").await;
    let (_, _, after) = suspended(&server, json!([{"name": "a"}]), "all").await;

    let mut ring = Keyring::new(key("ka", 1));
    ring.rotate(key("kb", 2), now_ms(), 60_000).expect("rotate");
    keys.replace(ring);
    let (status, ok) = signal(&server, &token_of(&within, "a"), json!(1)).await;
    assert_eq!(status, StatusCode::OK, "within the grace: {ok}");
    let (_, _, fresh) = suspended(&server, json!([{"name": "a"}]), "all").await;
    assert!(token_of(&fresh, "a").contains("~kb~"), "{fresh}");

    // The same rotation two minutes ago with a one-minute grace: over.
    let mut ring = Keyring::new(key("ka", 1));
    ring.rotate(key("kb", 2), now_ms() - 120_000, 60_000)
        .expect("rotate");
    keys.replace(ring);
    let late = signal(&server, &token_of(&after, "a"), json!(1)).await;
    assert_error(&late, 403, "invalid_token", "token", "after the grace");
    let (status, ok) = signal(&server, &token_of(&fresh, "a"), json!(1)).await;
    assert_eq!(status, StatusCode::OK, "the new key: {ok}");
    server.stop().await;
}

#[tokio::test]
async fn signals_need_no_api_token_but_the_operator_route_does() {
    let mut server =
        support::start(ServerConfig::new(vec!["secret".into()], 1 << 20).expect("config")).await;
    server.token = Some("secret".into());
    let (id, _, answer) = suspended(&server, json!([{"name": "a"}, {"name": "b"}]), "all").await;
    server.token = None;
    let (status, ok) = signal(&server, &token_of(&answer, "a"), json!(1)).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    let path = format!("/v1/executions/{id}/signals");
    let refused = server.post(&path, json!({"waitpoint": "b"})).await;
    assert_error(
        &refused,
        401,
        "unauthorized",
        "Authorization",
        "operator, no token",
    );
    server.token = Some("secret".into());
    let (status, resumed) = server.post(&path, json!({"waitpoint": "b"})).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["execution"]["state"], "waiting");
    server.stop().await;
}

#[tokio::test]
async fn bad_suspends_and_signals_are_400_and_change_nothing() {
    let server = support::start(ServerConfig::new(vec![], 1024).expect("config")).await;
    let execution = server
        .submit(json!({"kind": "deploy", "lane": "bad"}))
        .await;
    let id = execution["id"].as_str().expect("id");
    let task = server.claim_one("bad", 30_000).await;
    let suspend = format!("/v1/executions/{id}/suspend");
    let lease = lease_of(&task);
    let cases = [
        (
            json!({"waitpoints": [{"name": "a"}], "resume_when": "most"}),
            "resume_when",
        ),
        (
            json!({"waitpoints": [{"name": "a", "on_timeout": "retry"}]}),
            "on_timeout",
        ),
        (
            json!({"waitpoints": [{"name": "a", "timeout_ms": 0}]}),
            "timeout_ms",
        ),
        (
            json!({"waitpoints": [{"name": "a", "timeout_ms": "soon"}]}),
            "timeout_ms",
        ),
        (json!({"waitpoints": []}), "waitpoints"),
        (
            json!({"waitpoints": [{"name": "a"}, {"name": "a"}]}),
            "waitpoints.name",
        ),
        (
            json!({"waitpoints": [{"name": "has space"}]}),
            "waitpoints.name",
        ),
        (json!({"waitpoints": [{"name": "a", "extra": 1}]}), "extra"),
        (json!({"waitpoints": "a"}), "waitpoints"),
    ];
    for (body, needle) in cases {
        let answer = server
            .post(&suspend, with(lease.clone(), body.clone()))
            .await;
        assert_error(&answer, 400, "invalid_argument", needle, &body.to_string());
    }
    let stale = json!({"lease_id": "nope", "epoch": 9, "waitpoints": [{"name": "a"}]});
    let answer = server.post(&suspend, stale).await;
    assert_error(&answer, 409, "lease_lost", "", "stale lease");

    let signals = format!("/v1/executions/{id}/signals");
    for (path, body, needle) in [
        ("/v1/signals", json!({}), "token"),
        ("/v1/signals", json!({"token": 5}), "token"),
        ("/v1/signals", json!({"token": "t", "extra": 1}), "extra"),
        (signals.as_str(), json!({}), "waitpoint"),
        (
            signals.as_str(),
            json!({"waitpoint": "has space"}),
            "waitpoint",
        ),
        (
            signals.as_str(),
            json!({"waitpoint": "a", "token": "t"}),
            "token",
        ),
    ] {
        let answer = server.post(path, body.clone()).await;
        assert_error(&answer, 400, "invalid_argument", needle, &body.to_string());
    }
    let big = json!({"waitpoint": "a", "payload": "x".repeat(2048)});
    let answer = server.post(&signals, big).await;
    assert_error(&answer, 413, "payload_too_large", "payload", "big payload");
    let unknown = server
        .post("/v1/executions/nope/signals", json!({"waitpoint": "a"}))
        .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{}", unknown.1);

    let (_, after) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(after["state"], "active", "{after}");
    assert_eq!(after["suspension"], Value::Null);
    server.stop().await;
}
