//! Goal: the flow projector repairs a flow summary that drifted from its
//! members, and repairs nothing in a healthy store.
//!
//! Method: corrupt a stored flow's counters through a second SQLite
//! connection (as a bug or a hand edit would), then run the store's
//! reconciliation pass directly, and once more through a running engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_core::flow::{EdgeOn, FlowEdge, FlowNodeSpec, FlowSpec};
use weft_core::{Store, SubmitParams};
use weft_engine::{Engine, EngineConfig};
use weft_sqlite::{SqliteConfig, SqliteStore};

fn chain() -> FlowSpec {
    let node = |key: &str| FlowNodeSpec {
        key: key.into(),
        params: SubmitParams::new("projector.test", Value::Null),
    };
    FlowSpec {
        nodes: vec![node("a"), node("b")],
        edges: vec![FlowEdge {
            from: "a".into(),
            to: "b".into(),
            on: EdgeOn::Success,
        }],
        ..FlowSpec::default()
    }
}

/// Makes the stored summary claim a member failed.
fn corrupt(path: &std::path::Path, flow_id: &str) {
    let conn = rusqlite::Connection::open(path).expect("second connection");
    let changed = conn
        .execute(
            "UPDATE flows SET body = json_set(body, '$.counts.failed', 1) WHERE id = ?1",
            [flow_id],
        )
        .expect("corrupt");
    assert_eq!(changed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifted_flow_summaries_are_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.sqlite3");
    let store = Arc::new(SqliteStore::open(SqliteConfig::file(&path)).expect("open"));
    let flow = store.flow_create(&chain()).await.expect("create").flow;
    let partition = flow.id.partition();
    let healthy = store
        .flow_reconcile(partition, None, 64)
        .await
        .expect("pass");
    assert_eq!((healthy.examined, healthy.repaired), (1, 0));

    corrupt(&path, flow.id.as_str());
    assert_ne!(store.flow_get(&flow.id).await.expect("get"), flow);
    let audit = store.partition_audit(partition).await.expect("audit");
    assert!(!audit.problems.is_empty(), "the audit sees the drift");
    let pass = store
        .flow_reconcile(partition, None, 64)
        .await
        .expect("pass");
    assert_eq!(pass.repaired, 1);
    assert_eq!(store.flow_get(&flow.id).await.expect("get"), flow);
    let audit = store.partition_audit(partition).await.expect("audit");
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    let again = store
        .flow_reconcile(partition, None, 64)
        .await
        .expect("pass");
    assert_eq!(again.repaired, 0, "a repaired flow stays repaired");

    // The same through the engine's projector.
    corrupt(&path, flow.id.as_str());
    let config = EngineConfig {
        flow_projector_interval: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let engine = Engine::try_start(store.clone(), config).expect("engine");
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.metrics().flow_projector.applied == 0 {
        assert!(
            Instant::now() < deadline,
            "the projector never repaired the flow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.flow_get(&flow.id).await.expect("get"), flow);
    engine.shutdown().await;
}
