//! The execution's keys on the server.
//!
//! Goal: the execution hash stays small (the payload lives in its own
//! string, so the hash keeps Valkey's compact encoding), the payload comes
//! back whole in every answer, and retention removes every key of the
//! execution.
//! Method: a store with a 100 ms retention on the test server; read its keys
//! directly with `TYPE`, `OBJECT ENCODING` and `KEYS`.

mod common;

use serde_json::json;
use weft_core::{ClaimParams, CompleteParams, MachineConfig, PartitionId, Store, SubmitParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_lives_apart_and_retention_removes_every_key() {
    let url = common::url(common::VALKEY_URL_VAR);
    let mut config = common::config(&url, Some(1));
    config.machine = MachineConfig {
        retention_ms: 100,
        ..MachineConfig::default()
    };
    let _cleanup = common::Cleanup {
        url: url.clone(),
        prefix: config.key_prefix.clone(),
    };
    let store = common::connect(config.clone()).await;
    let payload = json!({"pad": "x".repeat(4096), "n": 1.5});
    let submitted = store
        .execution_submit(&SubmitParams::new("layout", payload.clone()))
        .await
        .expect("submit");
    let id = submitted.execution.id.to_string();
    assert_eq!(submitted.execution.payload, payload);

    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys_of = |id: String| {
        let pattern = format!("{}*{id}", config.key_prefix);
        redis::cmd("KEYS").arg(pattern).to_owned()
    };
    let mut keys: Vec<String> = keys_of(id.clone())
        .query_async(&mut conn)
        .await
        .expect("keys");
    keys.sort();
    let hash = keys
        .iter()
        .find(|k| k.contains("x:"))
        .expect("the execution hash")
        .clone();
    assert!(keys.iter().any(|k| k.contains("p:")), "{keys:?}");
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&hash)
        .query_async(&mut conn)
        .await
        .expect("encoding");
    assert_eq!(
        encoding, "listpack",
        "the execution hash lost its compact form"
    );

    let claim = ClaimParams {
        worker_id: "w".into(),
        lanes: vec!["default".into()],
        capabilities: vec![],
        max: 1,
        lease_ms: 30_000,
    };
    let tasks = store
        .execution_claim(PartitionId(0), &claim)
        .await
        .expect("claim");
    assert_eq!(tasks[0].payload, payload);
    let done = store
        .execution_complete(&CompleteParams {
            execution_id: tasks[0].execution_id.clone(),
            lease: tasks[0].lease_ref(),
            result: json!(null),
        })
        .await
        .expect("complete");
    assert_eq!(done.payload, payload);

    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let report = store
        .partition_tick(PartitionId(0), 100)
        .await
        .expect("tick");
    assert!(report.applied >= 1, "{report:?}");
    let left: Vec<String> = keys_of(id).query_async(&mut conn).await.expect("keys");
    assert!(left.is_empty(), "retention left {left:?}");
}
