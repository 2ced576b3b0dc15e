//! SQLite-specific behaviour the generic conformance suite cannot see:
//! migrations and the recorded partition count, files surviving a reopen, two
//! handles on one file (as two processes would be) claiming concurrently, and
//! time moved by a `ManualClock`. Each test builds its own store; files live
//! in a fresh temporary directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use weft_core::flow::{EdgeOn, FlowEdge, FlowNodeSpec, FlowSpec};
use weft_core::{
    claim_across, AttemptState, CancelParams, ClaimParams, CompleteParams, ExecutionId,
    HeartbeatParams, LeaseRef, ListParams, MachineConfig, ManualClock, PartitionCount, PartitionId,
    RebalanceParams, ReleaseParams, State, Store, StoreEvent, SubmitParams, Task,
};

use crate::{SqliteConfig, SqliteStore, SCHEMA_VERSION};

const T0: i64 = 1_700_000_000_000;

fn count(n: u16) -> PartitionCount {
    PartitionCount::new(n).unwrap()
}

fn manual_store(clock: &ManualClock, partitions: u16) -> SqliteStore {
    let config = SqliteConfig::memory()
        .with_clock(Arc::new(clock.clone()))
        .with_partitions(count(partitions));
    SqliteStore::open(config).unwrap()
}

fn claim_params(lanes: &[&str], caps: &[&str], max: u32, lease_ms: i64) -> ClaimParams {
    ClaimParams {
        worker_id: "w1".into(),
        lanes: lanes.iter().map(|s| (*s).to_owned()).collect(),
        capabilities: caps.iter().map(|s| (*s).to_owned()).collect(),
        max,
        lease_ms,
    }
}

fn lease_of(task: &Task) -> LeaseRef {
    LeaseRef {
        lease_id: task.lease.id.clone(),
        epoch: task.lease.epoch,
    }
}

async fn assert_clean(store: &SqliteStore) {
    for partition in store.partition_count().iter() {
        let report = store.partition_audit(partition).await.unwrap();
        assert!(
            report.problems.is_empty(),
            "{partition}: {:?}",
            report.problems
        );
    }
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn a_new_file_is_migrated_and_records_its_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(SqliteConfig::file(&path)).unwrap();
    assert_eq!(store.partition_count().get(), 32);
    let conn = raw(&path);
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let recorded: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'partitions'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(recorded, "32");
    drop(store);
    // Reopening applies nothing and keeps the count.
    let again = SqliteStore::open(SqliteConfig::file(&path)).unwrap();
    assert_eq!(again.partition_count().get(), 32);
}

#[tokio::test]
async fn a_newer_schema_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    drop(SqliteStore::open(SqliteConfig::file(&path)).unwrap());
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteStore::open(SqliteConfig::file(&path)).unwrap_err();
    assert_eq!(err.kind(), "invalid_argument");
    let text = err.to_string();
    assert!(text.contains(&(SCHEMA_VERSION + 1).to_string()), "{text}");
    assert!(text.contains("newer"), "{text}");
}

#[tokio::test]
async fn a_different_partition_count_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    drop(SqliteStore::open(SqliteConfig::file(&path).with_partitions(count(8))).unwrap());
    let err = SqliteStore::open(SqliteConfig::file(&path).with_partitions(count(16))).unwrap_err();
    assert_eq!(err.kind(), "invalid_argument");
    let text = err.to_string();
    assert!(text.contains('8') && text.contains("16"), "{text}");
    let unspecified = SqliteStore::open(SqliteConfig::file(&path)).unwrap();
    assert_eq!(unspecified.partition_count().get(), 8);
    let url = format!("sqlite://{}?partitions=8", path.display());
    assert_eq!(
        SqliteStore::open_url(&url).unwrap().partition_count().get(),
        8
    );
}

#[tokio::test]
async fn a_file_store_keeps_its_data_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(SqliteConfig::file(&path).with_partitions(count(4))).unwrap();
    let key = SubmitParams {
        idempotency_key: Some("k-1".into()),
        ..SubmitParams::new("job", json!({"n": 1}))
    };
    let id = store.execution_submit(&key).await.unwrap().execution.id;
    let claim = claim_params(&["default"], &[], 1, 60_000);
    let task = claim_across(&store, &claim, PartitionId(0))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(task.execution_id, id);
    drop(store);

    let store = SqliteStore::open(SqliteConfig::file(&path)).unwrap();
    let exec = store.execution_get(&id).await.unwrap();
    assert_eq!(exec.state, State::Active);
    assert_eq!(store.attempt_list(&id).await.unwrap().len(), 1);
    let again = store.execution_submit(&key).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.execution.id, id);
    assert_clean(&store).await;
    let done = store
        .execution_complete(&CompleteParams {
            execution_id: id,
            lease: lease_of(&task),
            result: json!("ok"),
        })
        .await
        .unwrap();
    assert_eq!(done.state, State::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_never_claim_the_same_execution() {
    const JOBS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let config = SqliteConfig::file(&path).with_partitions(count(4));
    let a = SqliteStore::open(config.clone()).unwrap();
    let b = SqliteStore::open(config).unwrap();
    for i in 0..JOBS {
        let store = if i % 2 == 0 { &a } else { &b };
        store
            .execution_submit(&SubmitParams::new("job", json!(i)))
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for w in 0..8u16 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let claim = claim_params(&["default"], &[], 7, 60_000);
                let tasks = claim_across(&store, &claim, PartitionId(w % 4))
                    .await
                    .unwrap();
                if tasks.is_empty() {
                    return ids;
                }
                ids.extend(tasks.into_iter().map(|t| t.execution_id));
            }
        }));
    }
    let mut seen = BTreeSet::new();
    for worker in workers {
        for id in worker.await.unwrap() {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), JOBS);
    assert_clean(&a).await;
}

#[tokio::test]
async fn a_lapsed_lease_is_reclaimed_by_tick() {
    let clock = ManualClock::new(T0);
    let store = manual_store(&clock, 2);
    let id = store
        .execution_submit(&SubmitParams::new("job", json!(null)))
        .await
        .unwrap()
        .execution
        .id;
    let claim = claim_params(&["default"], &[], 1, 1_000);
    let task = store
        .execution_claim(id.partition(), &claim)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(task.lease.expires_at_ms, T0 + 1_000);

    clock.advance_ms(999);
    let report = store.partition_tick(id.partition(), 100).await.unwrap();
    assert_eq!((report.applied, report.dropped), (0, 0));
    assert_eq!(report.next_due_ms, Some(T0 + 1_000));
    assert_eq!(report.now_ms, T0 + 999);

    clock.advance_ms(1);
    let report = store.partition_tick(id.partition(), 100).await.unwrap();
    assert_eq!(report.applied, 1);
    let exec = store.execution_get(&id).await.unwrap();
    assert_eq!(
        (exec.state, exec.reclaims, exec.failures),
        (State::Waiting, 1, 1)
    );
    let attempts = store.attempt_list(&id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::LeaseLost);
    assert_eq!(attempts[0].ended_at_ms, Some(T0 + 1_000));

    let heartbeat = HeartbeatParams {
        execution_id: id.clone(),
        lease: lease_of(&task),
        lease_ms: None,
    };
    let err = store.execution_heartbeat(&heartbeat).await.unwrap_err();
    assert_eq!(err.kind(), "lease_lost");
    let retry = store.execution_claim(id.partition(), &claim).await.unwrap();
    assert_eq!(retry[0].attempt.0, 2);
    assert_clean(&store).await;
}

#[tokio::test]
async fn claims_follow_priority_then_age_and_respect_capabilities() {
    let clock = ManualClock::new(T0);
    let store = manual_store(&clock, 1);
    let submit = |priority: i32, requires: &[&str]| SubmitParams {
        priority,
        requires: requires.iter().map(|s| (*s).to_owned()).collect(),
        ..SubmitParams::new("job", json!(null))
    };
    let mut ids = Vec::new();
    for params in [
        submit(0, &[]),
        submit(5, &["gpu"]),
        submit(5, &[]),
        submit(9, &["tpu"]),
    ] {
        ids.push(store.execution_submit(&params).await.unwrap().execution.id);
        clock.advance_ms(1);
    }
    let claim = claim_params(&["default", "other"], &["gpu", "cpu"], 10, 60_000);
    let got: Vec<ExecutionId> = store
        .execution_claim(PartitionId(0), &claim)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.execution_id)
        .collect();
    // Priority 5 first, the older (gpu) one before the newer; tpu is never
    // eligible for this worker.
    assert_eq!(got, vec![ids[1].clone(), ids[2].clone(), ids[0].clone()]);
    let depths = store.lane_depths().await.unwrap();
    assert_eq!((depths[0].waiting, depths[0].active), (1, 3));
}

#[tokio::test]
async fn retention_purges_every_row_of_an_execution() {
    let clock = ManualClock::new(T0);
    let machine = MachineConfig {
        retention_ms: 5_000,
        ..MachineConfig::default()
    };
    let config = SqliteConfig::memory()
        .with_clock(Arc::new(clock.clone()))
        .with_partitions(count(2))
        .with_machine(machine);
    let store = SqliteStore::open(config).unwrap();
    let params = SubmitParams {
        idempotency_key: Some("once".into()),
        ..SubmitParams::new("job", json!(null))
    };
    let id = store.execution_submit(&params).await.unwrap().execution.id;
    let cancel = CancelParams {
        execution_id: id.clone(),
        reason: None,
    };
    store.execution_cancel(&cancel).await.unwrap();
    clock.advance_ms(5_000);
    let report = store.partition_tick(id.partition(), 10).await.unwrap();
    assert_eq!((report.applied, report.next_due_ms), (1, None));
    assert_eq!(
        store.execution_get(&id).await.unwrap_err().kind(),
        "not_found"
    );
    assert_eq!(
        store.attempt_list(&id).await.unwrap_err().kind(),
        "not_found"
    );
    let fresh = store.execution_submit(&params).await.unwrap();
    assert!(fresh.created, "the key left with its execution");
    assert_clean(&store).await;
}

#[tokio::test]
async fn the_audit_reports_columns_and_timers_that_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(SqliteConfig::file(&path).with_partitions(count(1))).unwrap();
    let id = store
        .execution_submit(&SubmitParams::new("job", json!(null)))
        .await
        .unwrap()
        .execution
        .id;
    assert_clean(&store).await;
    let conn = raw(&path);
    conn.execute(
        "UPDATE executions SET priority = 7 WHERE id = ?1",
        [id.as_str()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO timers (execution_id, kind, partition_id, due_ms)
         VALUES ('ex_gone', 'delay', 0, 1)",
        [],
    )
    .unwrap();
    let report = store.partition_audit(PartitionId(0)).await.unwrap();
    assert_eq!(report.executions, 1);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    // The orphan timer is dropped by the next tick, not applied.
    let tick = store.partition_tick(PartitionId(0), 10).await.unwrap();
    assert_eq!((tick.applied, tick.dropped), (0, 1));
}

#[tokio::test]
async fn instances_share_partitions_fairly() {
    let clock = ManualClock::new(T0);
    let store = manual_store(&clock, 8);
    let join = |id: &str, leaving: bool| RebalanceParams {
        instance_id: id.into(),
        lease_ms: 10_000,
        leaving,
    };
    assert_eq!(
        store
            .engine_rebalance(&join("a", false))
            .await
            .unwrap()
            .len(),
        8
    );
    // b sees nothing free until a sheds its surplus.
    assert!(store
        .engine_rebalance(&join("b", false))
        .await
        .unwrap()
        .is_empty());
    let a = store.engine_rebalance(&join("a", false)).await.unwrap();
    assert_eq!(a, (0..4).map(PartitionId).collect::<Vec<_>>());
    let b = store.engine_rebalance(&join("b", false)).await.unwrap();
    assert_eq!(b, (4..8).map(PartitionId).collect::<Vec<_>>());
    assert_eq!(store.partition_owners().await.unwrap().len(), 8);
    // a leaves gracefully: b takes everything at once.
    assert!(store
        .engine_rebalance(&join("a", true))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .engine_rebalance(&join("b", false))
            .await
            .unwrap()
            .len(),
        8
    );
    // b dies; after its lease lapses, c takes over.
    clock.advance_ms(10_000);
    assert_eq!(
        store
            .engine_rebalance(&join("c", false))
            .await
            .unwrap()
            .len(),
        8
    );
}

#[tokio::test]
async fn timers_set_by_an_operation_send_due_hints() {
    let clock = ManualClock::new(T0);
    let store = manual_store(&clock, 4);
    let mut hints = store.due_hints().unwrap();
    let params = SubmitParams {
        delay_ms: Some(250),
        ..SubmitParams::new("job", json!(null))
    };
    let id = store.execution_submit(&params).await.unwrap().execution.id;
    let hint = hints.try_recv().unwrap();
    assert_eq!((hint.partition, hint.due_ms), (id.partition(), T0 + 250));
    assert!(hints.try_recv().is_err());
}

#[tokio::test]
async fn lists_page_by_id_and_refuse_bad_limits() {
    let clock = ManualClock::new(T0);
    let store = manual_store(&clock, 4);
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        let params = SubmitParams {
            lane: Some(if i % 2 == 0 { "even" } else { "odd" }.into()),
            ..SubmitParams::new("job", json!(i))
        };
        ids.insert(store.execution_submit(&params).await.unwrap().execution.id);
    }
    let mut params = ListParams {
        limit: 2,
        ..ListParams::default()
    };
    let mut listed = Vec::new();
    loop {
        let page = store.execution_list(&params).await.unwrap();
        listed.extend(page.items.into_iter().map(|e| e.id));
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(listed, ids.into_iter().collect::<Vec<_>>());
    let even = ListParams {
        lane: Some("even".into()),
        state: Some(State::Waiting),
        limit: 10,
        ..ListParams::default()
    };
    let page = store.execution_list(&even).await.unwrap();
    assert_eq!((page.items.len(), page.next_cursor), (3, None));
    for limit in [0, weft_core::LIST_LIMIT_MAX + 1] {
        let bad = ListParams {
            limit,
            ..ListParams::default()
        };
        assert_eq!(
            store.execution_list(&bad).await.unwrap_err().kind(),
            "invalid_argument"
        );
    }
}

#[tokio::test]
async fn bad_input_changes_nothing_and_foreign_ids_are_not_found() {
    let clock = ManualClock::new(T0);
    let store = manual_store(&clock, 2);
    let bad = SubmitParams {
        idempotency_key: Some("k".into()),
        priority: 5_000,
        ..SubmitParams::new("job", json!(null))
    };
    assert_eq!(
        store.execution_submit(&bad).await.unwrap_err().kind(),
        "invalid_argument"
    );
    let all = ListParams {
        limit: 10,
        ..ListParams::default()
    };
    assert!(store.execution_list(&all).await.unwrap().items.is_empty());
    let foreign = ExecutionId::mint(PartitionId(7), T0);
    assert_eq!(
        store.execution_get(&foreign).await.unwrap_err().kind(),
        "not_found"
    );
    let claim = claim_params(&["default"], &[], 1, 60_000);
    let err = store
        .execution_claim(PartitionId(2), &claim)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_argument");
    for broken in [
        claim_params(&[], &[], 1, 60_000),
        claim_params(&["default"], &[], 0, 60_000),
        claim_params(&["default"], &["bad cap"], 1, 60_000),
        claim_params(&["default"], &[], 1, 1),
    ] {
        let err = store
            .execution_claim(PartitionId(0), &broken)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_argument", "{broken:?}");
    }
}

#[tokio::test]
async fn a_write_lock_held_elsewhere_is_unavailable_then_clears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let config = SqliteConfig::file(&path).with_busy_timeout(std::time::Duration::from_millis(50));
    let store = SqliteStore::open(config).unwrap();
    let other = raw(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let params = SubmitParams::new("job", json!(null));
    let err = store.execution_submit(&params).await.unwrap_err();
    assert_eq!(err.kind(), "unavailable", "{err}");
    assert!(err.retryable());
    // Readers are not blocked by a writer in WAL mode.
    let all = ListParams {
        limit: 1,
        ..ListParams::default()
    };
    assert!(store.execution_list(&all).await.unwrap().items.is_empty());
    other.execute_batch("ROLLBACK").unwrap();
    assert!(store.execution_submit(&params).await.unwrap().created);
}

#[tokio::test]
async fn transitions_publish_ready_and_ended_events() {
    let store = manual_store(&ManualClock::new(T0), 4);
    let mut events = store.events().expect("sqlite sends events");
    let mut params = SubmitParams::new("k", json!(1));
    params.lane = Some("evt".into());
    let exec = store.execution_submit(&params).await.unwrap().execution;
    let ready = StoreEvent::Ready {
        partition: exec.id.partition(),
        lane: "evt".into(),
        capset: String::new(),
    };
    assert_eq!(events.try_recv().unwrap(), ready);
    // A release makes it claimable again, as a submit does; a repeated
    // release changes nothing and says nothing.
    let claim = claim_params(&["evt"], &[], 1, 30_000);
    let tasks = store
        .execution_claim(exec.id.partition(), &claim)
        .await
        .unwrap();
    assert!(events.try_recv().is_err(), "a claim announces nothing");
    let release = ReleaseParams {
        execution_id: exec.id.clone(),
        lease: lease_of(&tasks[0]),
    };
    store.execution_release(&release).await.unwrap();
    assert_eq!(events.try_recv().unwrap(), ready);
    store.execution_release(&release).await.unwrap();
    assert!(events.try_recv().is_err());
    store
        .execution_cancel(&CancelParams {
            execution_id: exec.id.clone(),
            reason: None,
        })
        .await
        .unwrap();
    let ended = StoreEvent::Ended {
        id: exec.id.clone(),
        state: State::Cancelled,
    };
    assert_eq!(events.try_recv().unwrap(), ended);
    // Cancelling again changes nothing and says nothing.
    store
        .execution_cancel(&CancelParams {
            execution_id: exec.id.clone(),
            reason: None,
        })
        .await
        .unwrap();
    assert!(events.try_recv().is_err());
}

fn two_node_flow() -> FlowSpec {
    FlowSpec {
        nodes: ["a", "b"]
            .iter()
            .map(|k| FlowNodeSpec {
                key: (*k).to_owned(),
                params: SubmitParams::new("job", json!(null)),
            })
            .collect(),
        edges: vec![FlowEdge {
            from: "a".into(),
            to: "b".into(),
            on: EdgeOn::Success,
        }],
        ..FlowSpec::default()
    }
}

#[tokio::test]
async fn the_audit_reports_flow_summaries_that_drift() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(SqliteConfig::file(&path).with_partitions(count(1))).unwrap();
    let flow = store.flow_create(&two_node_flow()).await.unwrap().flow;
    assert_clean(&store).await;
    let conn = raw(&path);
    let body: String = conn
        .query_row("SELECT body FROM flows", [], |r| r.get(0))
        .unwrap();
    let corruptions = [
        (
            "UPDATE flows SET body = json_set(body, '$.counts.waiting', 2)",
            "counts",
        ),
        (
            "UPDATE flows SET body = json_set(body, '$.nodes[1].state', 'waiting')",
            "records",
        ),
        ("UPDATE flows SET state = 'completed'", "column state"),
        (
            "UPDATE flows SET body = json_set(body, '$.state', 'blocked')",
            "counts say",
        ),
        (
            "UPDATE executions SET flow_id = 'fl_0000000000000000000000ff',
                 body = json_set(body, '$.flow_id', 'fl_0000000000000000000000ff')",
            "not here",
        ),
    ];
    for (sql, needle) in corruptions {
        conn.execute(sql, []).unwrap();
        let report = store.partition_audit(PartitionId(0)).await.unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains(needle)),
            "{sql}: {:?}",
            report.problems
        );
        conn.execute(
            "UPDATE flows SET body = ?1, state = 'running'",
            [body.as_str()],
        )
        .unwrap();
        conn.execute(
            "UPDATE executions SET flow_id = ?1, body = json_set(body, '$.flow_id', ?1)",
            [flow.id.as_str()],
        )
        .unwrap();
        assert_clean(&store).await;
    }
}

#[tokio::test]
async fn a_version_1_file_gains_the_flow_and_outbox_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    drop(SqliteStore::open(SqliteConfig::file(&path)).unwrap());
    let conn = raw(&path);
    conn.execute_batch(
        "DROP TABLE flows; DROP TABLE flow_idempotency_keys; DROP TABLE outbox;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(SqliteConfig::file(&path)).unwrap();
    let version: u32 = raw(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert!(store.supports_flows());
    let created = store.flow_create(&two_node_flow()).await.unwrap();
    assert_eq!(created.flow.counts.total(), 2);
}

#[tokio::test]
async fn a_transition_that_breaks_a_flow_changes_nothing() {
    // A member whose flow row vanished (corruption) fails its transition as
    // `internal`, and the member's own write rolls back with it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(SqliteConfig::file(&path).with_partitions(count(1))).unwrap();
    let flow = store.flow_create(&two_node_flow()).await.unwrap().flow;
    raw(&path).execute("DELETE FROM flows", []).unwrap();
    let a = flow.member("a").unwrap().clone();
    let cancel = CancelParams {
        execution_id: a.clone(),
        reason: None,
    };
    assert_eq!(
        store.execution_cancel(&cancel).await.unwrap_err().kind(),
        "internal"
    );
    assert_eq!(store.execution_get(&a).await.unwrap().state, State::Waiting);
}

#[tokio::test]
async fn a_batch_item_that_breaks_a_flow_changes_only_itself() {
    // The member's row is written before its flow fails to settle: the
    // item's savepoint must undo that write and its event, and keep the
    // other items of the batch.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(SqliteConfig::file(&path).with_partitions(count(1))).unwrap();
    let flow = store.flow_create(&two_node_flow()).await.unwrap().flow;
    let member = flow.member("a").unwrap().clone();
    let plain = store
        .execution_submit(&SubmitParams::new("job", json!(null)))
        .await
        .unwrap()
        .execution;
    let claim = claim_params(&["default"], &[], 10, 60_000);
    let tasks = store.execution_claim(PartitionId(0), &claim).await.unwrap();
    let claimed: BTreeSet<ExecutionId> = tasks.iter().map(|t| t.execution_id.clone()).collect();
    assert_eq!(claimed, BTreeSet::from([member.clone(), plain.id.clone()]));
    raw(&path).execute("DELETE FROM flows", []).unwrap();
    let mut events = store.events().unwrap();

    let batch: Vec<CompleteParams> = tasks
        .iter()
        .map(|t| CompleteParams {
            execution_id: t.execution_id.clone(),
            lease: lease_of(t),
            result: json!("done"),
        })
        .collect();
    let out = store.execution_complete_many(&batch).await.unwrap();
    for (task, outcome) in tasks.iter().zip(&out) {
        let exec = store.execution_get(&task.execution_id).await.unwrap();
        if task.execution_id == plain.id {
            assert_eq!(outcome, &Ok(State::Completed));
            assert_eq!(exec.state, State::Completed);
        } else {
            assert_eq!(outcome.as_ref().map_err(|e| e.kind()), Err("internal"));
            assert_eq!(exec.state, State::Active, "the member's write rolled back");
            assert!(exec.result.is_none());
            let rows = store.attempt_list(&member).await.unwrap();
            assert_eq!(rows.last().unwrap().state, AttemptState::Running);
        }
    }
    let mut ended = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let StoreEvent::Ended { id, .. } = event {
            ended.push(id);
        }
    }
    assert_eq!(ended, [plain.id], "only the applied item is announced");
}
