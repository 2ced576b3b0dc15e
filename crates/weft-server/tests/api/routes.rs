//! Happy paths of every route (the contract's, and `release`, an addition to
//! it), and the fenced writes' `lease_lost`.

use reqwest::{Method, StatusCode};
use serde_json::json;
use weft_server::ServerConfig;

use crate::support::{assert_error, lease_of, start, with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_claim_complete_and_read_back() {
    let server = start(ServerConfig::default()).await;
    let (status, health) = server.get("/healthz").await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));

    let body = json!({"kind": "email.send", "lane": "mail", "payload": {"to": "a@b"},
                      "priority": 5, "tags": {"team": "core"}, "idempotency_key": "k-1"});
    let created = server.submit(body.clone()).await;
    assert_eq!(created["state"], "waiting");
    assert_eq!(created["priority"], 5);
    assert_eq!(created["tags"], json!({"team": "core"}));
    let id = created["id"].as_str().expect("id").to_owned();
    // The same idempotency key answers 200 with the same execution.
    let (status, again) = server.post("/v1/executions", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], id.as_str());

    let (status, got) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);
    let (_, lanes) = server.get("/v1/lanes").await;
    assert_eq!(lanes["items"][0]["lane"], "mail");
    assert_eq!(lanes["items"][0]["waiting"], 1);

    let task = server.claim_one("mail", 30_000).await;
    assert_eq!(task["execution_id"], id.as_str());
    assert_eq!(task["attempt"], 1);
    assert_eq!(task["payload"], json!({"to": "a@b"}));
    assert_eq!(task["inputs"], json!({}));
    let lease = lease_of(&task);
    let path = format!("/v1/executions/{id}");

    let (status, beat) = server
        .post(
            &format!("{path}/heartbeat"),
            with(lease.clone(), json!({"lease_ms": 60_000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    assert_eq!(beat["cancel_requested"], false);
    assert!(beat["expires_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let (_, attempts) = server.get(&format!("{path}/attempts")).await;
    assert_eq!(attempts["items"][0]["state"], "running");
    assert_eq!(attempts["items"][0]["worker_id"], "w1");

    let done_body = with(lease.clone(), json!({"result": {"sent": true}}));
    let (status, done) = server
        .post(&format!("{path}/complete"), done_body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "completed");
    assert_eq!(done["result"], json!({"sent": true}));
    assert!(done["finished_at"].is_string());
    // Repeating the same completion answers the same 200.
    let (status, repeated) = server.post(&format!("{path}/complete"), done_body).await;
    assert_eq!(
        (status, repeated["state"].clone()),
        (StatusCode::OK, json!("completed"))
    );
    // Waiting on an ended execution answers at once.
    let (status, waited) = server.get(&format!("{path}/wait?timeout_ms=60000")).await;
    assert_eq!(
        (status, waited["state"].clone()),
        (StatusCode::OK, json!("completed"))
    );
    let (_, attempts) = server.get(&format!("{path}/attempts")).await;
    assert_eq!(attempts["items"][0]["state"], "succeeded");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_cancel_replay_and_conflicts() {
    let server = start(ServerConfig::default()).await;
    let fast = json!({"initial_ms": 10, "max_ms": 10, "multiplier": 1.0, "jitter": 0.0});
    let exec = server
        .submit(json!({"kind": "k", "lane": "f", "max_attempts": 2, "backoff": fast}))
        .await;
    let path = format!("/v1/executions/{}", exec["id"].as_str().expect("id"));
    let task = server.claim_one("f", 30_000).await;
    let failure = json!({"error": {"message": "boom", "kind": "io"}});
    let (status, failed) = server
        .post(&format!("{path}/fail"), with(lease_of(&task), failure))
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert!(
        ["delayed", "waiting"].contains(&failed["state"].as_str().unwrap_or("")),
        "{failed}"
    );
    assert_eq!(failed["error"], json!({"message": "boom", "kind": "io"}));
    assert_eq!(failed["attempts"], 1);

    // A non-retryable failure ends the execution whatever attempts are left.
    let other = server.submit(json!({"kind": "k", "lane": "g"})).await;
    let other_path = format!("/v1/executions/{}", other["id"].as_str().expect("id"));
    let task = server.claim_one("g", 30_000).await;
    let fatal = json!({"error": {"message": "bad input", "retryable": false}});
    let (_, ended) = server
        .post(&format!("{other_path}/fail"), with(lease_of(&task), fatal))
        .await;
    assert_eq!(ended["state"], "failed");
    // Replay puts it back in `waiting`; replaying a live one is a conflict.
    let (status, replayed) = server
        .post(&format!("{other_path}/replay"), json!({}))
        .await;
    assert_eq!(
        (status, replayed["state"].clone()),
        (StatusCode::OK, json!("waiting"))
    );
    let replay_again = server
        .post(&format!("{other_path}/replay"), json!({}))
        .await;
    assert_error(
        &replay_again,
        409,
        "conflict",
        "",
        "replay of a waiting execution",
    );

    // Cancel with and without a body; cancelling again is 200 again.
    let (status, cancelled) = server
        .post(
            &format!("{other_path}/cancel"),
            json!({"reason": "not needed"}),
        )
        .await;
    assert_eq!(
        (status, cancelled["state"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    assert_eq!(cancelled["cancel_reason"], "not needed");
    let (status, again) = server
        .raw(
            Method::POST,
            &format!("{other_path}/cancel"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(
        (status, again["state"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );

    // Cancelling a completed execution is a conflict.
    let done = server.submit(json!({"kind": "k", "lane": "h"})).await;
    let done_path = format!("/v1/executions/{}", done["id"].as_str().expect("id"));
    let task = server.claim_one("h", 30_000).await;
    server
        .post(&format!("{done_path}/complete"), lease_of(&task))
        .await;
    let conflict = server.post(&format!("{done_path}/cancel"), json!({})).await;
    assert_error(
        &conflict,
        409,
        "conflict",
        "",
        "cancel of a completed execution",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_page() {
    let server = start(ServerConfig::default()).await;
    for i in 0..5 {
        let lane = if i % 2 == 0 { "even" } else { "odd" };
        server
            .submit(json!({"kind": format!("k{i}"), "lane": lane}))
            .await;
    }
    let (_, all) = server.get("/v1/executions").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(5));
    assert_eq!(all["next_cursor"], json!(null));
    let (_, even) = server.get("/v1/executions?lane=even&state=waiting").await;
    assert_eq!(even["items"].as_array().map(Vec::len), Some(3));
    let (_, kind) = server.get("/v1/executions?kind=k1").await;
    assert_eq!(kind["items"][0]["kind"], "k1");
    let (_, none) = server.get("/v1/executions?state=completed").await;
    assert_eq!(none["items"], json!([]));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/executions?limit=2&cursor={c}"),
            None => "/v1/executions?limit=2".to_owned(),
        };
        let (status, page) = server.get(&query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    seen.dedup();
    assert_eq!(seen.len(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_hands_the_task_back() {
    let server = start(ServerConfig::default()).await;
    let exec = server
        .submit(json!({"kind": "k", "lane": "rel", "max_attempts": 1}))
        .await;
    let path = format!("/v1/executions/{}", exec["id"].as_str().expect("id"));
    let task = server.claim_one("rel", 30_000).await;
    let (status, back) = server
        .post(&format!("{path}/release"), lease_of(&task))
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["state"], "waiting");
    assert_eq!(back["attempts"], 1);
    assert_eq!(back["error"], json!(null));
    // The same release again answers the same 200.
    let (status, again) = server
        .post(&format!("{path}/release"), lease_of(&task))
        .await;
    assert_eq!(
        (status, again["state"].clone()),
        (StatusCode::OK, json!("waiting"))
    );
    let (_, attempts) = server.get(&format!("{path}/attempts")).await;
    assert_eq!(attempts["items"][0]["state"], "released");
    assert!(attempts["items"][0]["ended_at"].is_string());

    // With `max_attempts: 1` the release used nothing: the next attempt runs.
    let next = server.claim_one("rel", 30_000).await;
    assert_eq!(next["attempt"], 2);
    assert_eq!(
        next["lease"]["epoch"],
        task["lease"]["epoch"].as_u64().expect("epoch") + 1
    );
    let answer = server
        .post(&format!("{path}/release"), lease_of(&task))
        .await;
    assert_error(
        &answer,
        409,
        "lease_lost",
        "lease",
        "release after a new claim",
    );
    let (status, done) = server
        .post(&format!("{path}/complete"), lease_of(&next))
        .await;
    assert_eq!(
        (status, done["state"].clone()),
        (StatusCode::OK, json!("completed"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_worker_writes_are_lease_lost() {
    let server = start(ServerConfig::default()).await;
    let exec = server.submit(json!({"kind": "k", "lane": "l"})).await;
    let path = format!("/v1/executions/{}", exec["id"].as_str().expect("id"));
    let task = server.claim_one("l", 30_000).await;
    let epoch = task["lease"]["epoch"].as_u64().expect("epoch");
    let wrong_epoch = json!({"lease_id": task["lease"]["id"], "epoch": epoch + 1});
    let wrong_id = json!({"lease_id": "not-the-lease", "epoch": epoch});
    for (route, extra) in [
        ("heartbeat", json!({})),
        ("complete", json!({"result": 1})),
        ("fail", json!({"error": {"message": "m"}})),
        ("release", json!({})),
    ] {
        for lease in [&wrong_epoch, &wrong_id] {
            let answer = server
                .post(
                    &format!("{path}/{route}"),
                    with(lease.clone(), extra.clone()),
                )
                .await;
            assert_error(&answer, 409, "lease_lost", "lease", route);
        }
    }
    let (_, still) = server.get(&path).await;
    assert_eq!(still["state"], "active");

    // After a cancel the old lease can neither complete nor fail.
    server.post(&format!("{path}/cancel"), json!({})).await;
    let answer = server
        .post(&format!("{path}/complete"), lease_of(&task))
        .await;
    assert_error(&answer, 409, "lease_lost", "lease", "complete after cancel");
    let answer = server
        .post(
            &format!("{path}/fail"),
            with(lease_of(&task), json!({"error": {"message": "m"}})),
        )
        .await;
    assert_error(&answer, 409, "lease_lost", "lease", "fail after cancel");
    let answer = server
        .post(&format!("{path}/release"), lease_of(&task))
        .await;
    assert_error(&answer, 409, "lease_lost", "lease", "release after cancel");
    let (status, beat) = server
        .post(&format!("{path}/heartbeat"), lease_of(&task))
        .await;
    let told = status == StatusCode::OK && beat["cancel_requested"] == true;
    let lost = status == StatusCode::CONFLICT && beat["error"]["kind"] == "lease_lost";
    assert!(told || lost, "{status} {beat}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_metrics_and_dashboard() {
    let server = start(ServerConfig::default()).await;
    server
        .submit(json!({"kind": "k", "lane": "dash-lane"}))
        .await;
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::GET, "/v1/workflows"),
        (Method::DELETE, "/v1/flows"),
        (Method::POST, "/v1/lanes"),
        (Method::DELETE, "/v1/executions"),
    ] {
        let answer = server.call(method.clone(), path, None).await;
        assert_error(&answer, 404, "not_found", path, &format!("{method} {path}"));
    }
    let text = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(
            r#"weft_http_requests_total{method="POST",route="/v1/executions",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        text.contains("weft_http_request_duration_seconds_count"),
        "{text}"
    );
    assert!(
        text.contains(r#"weft_lane_executions{lane="dash-lane",state="waiting"} 1"#),
        "{text}"
    );

    let page = server
        .client
        .get(format!("{}/", server.base))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(page.status(), StatusCode::OK);
    let content_type = page.headers().get("content-type").cloned();
    let html = page.text().await.expect("html");
    assert!(content_type.is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html")));
    assert!(
        html.contains("dash-lane") && html.contains("class=\"bar\""),
        "{html}"
    );
    assert!(!html.contains("<script"));
    server.stop().await;
}

/// `POST /v1/executions/batch` (an addition to the contract) answers in
/// request order, each with `created`; a bad item refuses the whole batch,
/// names itself and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_submit_answers_in_order_and_refuses_whole() {
    let server = start(ServerConfig::default()).await;
    let seen = json!({"kind": "k", "lane": "batch", "idempotency_key": "seen"});
    let first = server.submit(seen.clone()).await;
    let items: Vec<serde_json::Value> = (0..5)
        .map(|i| json!({"kind": format!("k{i}"), "lane": "batch", "payload": {"n": i}}))
        .chain([seen])
        .collect();
    let (status, answer) = server
        .post("/v1/executions/batch", json!({ "executions": items }))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let got = answer["items"].as_array().expect("items");
    assert_eq!(got.len(), 6);
    for (i, item) in got[..5].iter().enumerate() {
        assert_eq!(item["created"], true, "{item}");
        assert_eq!(item["execution"]["kind"], format!("k{i}"));
        assert_eq!(item["execution"]["payload"], json!({ "n": i }));
        assert_eq!(item["execution"]["state"], "waiting");
    }
    assert_eq!(
        got[5]["created"], false,
        "a known key answers the execution"
    );
    assert_eq!(got[5]["execution"]["id"], first["id"]);
    let (_, lanes) = server.get("/v1/lanes").await;
    assert_eq!(lanes["items"][0]["waiting"], 6);

    let bad =
        json!({"executions": [{"kind": "ok", "lane": "batch"}, {"kind": "", "lane": "batch"}]});
    let answer = server.post("/v1/executions/batch", bad).await;
    assert_error(
        &answer,
        400,
        "invalid_argument",
        "executions[1].kind",
        "empty kind",
    );
    let empty = server
        .post("/v1/executions/batch", json!({"executions": []}))
        .await;
    assert_error(&empty, 400, "invalid_argument", "executions", "empty batch");
    let (_, lanes) = server.get("/v1/lanes").await;
    assert_eq!(
        lanes["items"][0]["waiting"], 6,
        "refused batches create nothing"
    );
    server.stop().await;
}
