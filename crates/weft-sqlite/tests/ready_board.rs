//! Goal: claims that wait on the ready board get new work within a round
//! trip of its `Ready` event, without sweeping, and work requiring a
//! capability reaches the worker that has it even while workers without it
//! wait on the same lane.
//!
//! Method: a real SQLite store and its events; waiting claims with a sweep
//! interval far longer than the test, so only the board can hand them work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use weft_core::{claim_waiting, ClaimParams, ReadyBoard, Store, SubmitParams};
use weft_sqlite::{SqliteConfig, SqliteStore};

/// Longer than the test: a claim that returns earlier was woken by the board.
const NO_SWEEP: Duration = Duration::from_secs(60);

fn claim(worker: &str, capabilities: &[&str]) -> ClaimParams {
    ClaimParams {
        worker_id: worker.into(),
        lanes: vec!["board".into()],
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        max: 4,
        lease_ms: 30_000,
    }
}

async fn submit(store: &dyn Store, requires: &[&str]) -> String {
    let mut params = SubmitParams::new("board.test", json!({}));
    params.lane = Some("board".into());
    params.requires = requires.iter().map(|c| (*c).to_owned()).collect();
    let submitted = store.execution_submit(&params).await.expect("submit");
    submitted.execution.id.to_string()
}

/// Claims once on an empty store, so the lane's initial marks are used up
/// and only events mark partitions from now on.
async fn settle(store: &Arc<dyn Store>, board: &ReadyBoard) {
    let empty = claim_waiting(
        store,
        board,
        &claim("settle", &["gpu"]),
        Duration::ZERO,
        NO_SWEEP,
    )
    .await
    .expect("claim");
    assert!(empty.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_work_reaches_the_capable_worker_among_waiting_ones() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::memory()).expect("open"));
    let board = ReadyBoard::follow(store.as_ref());
    settle(&store, &board).await;

    // Many workers without the capability, so that one of them would win
    // the race to a mark it cannot use if the board handed it out.
    let plain: Vec<_> = (0..8)
        .map(|i| {
            let (store, board) = (Arc::clone(&store), Arc::clone(&board));
            tokio::spawn(async move {
                let params = claim(&format!("plain-{i}"), &[]);
                claim_waiting(&store, &board, &params, Duration::from_secs(2), NO_SWEEP).await
            })
        })
        .collect();
    let gpu = {
        let (store, board) = (Arc::clone(&store), Arc::clone(&board));
        tokio::spawn(async move {
            let started = Instant::now();
            let params = claim("gpu", &["gpu"]);
            let tasks =
                claim_waiting(&store, &board, &params, Duration::from_secs(10), NO_SWEEP).await;
            (tasks, started.elapsed())
        })
    };
    // Both claims are asleep on the board before the work arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = submit(store.as_ref(), &["gpu"]).await;

    let (tasks, waited) = gpu.await.expect("gpu claim");
    let tasks = tasks.expect("gpu tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].execution_id.to_string(), id);
    assert!(waited < Duration::from_secs(2), "woken after {waited:?}");
    for worker in plain {
        let took = worker.await.expect("plain claim").expect("plain tasks");
        assert!(took.is_empty(), "a worker without gpu took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_claim_takes_new_work_without_sweeping() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::memory()).expect("open"));
    let board = ReadyBoard::follow(store.as_ref());
    settle(&store, &board).await;
    let waiting = {
        let (store, board) = (Arc::clone(&store), Arc::clone(&board));
        tokio::spawn(async move {
            let params = claim("w", &[]);
            claim_waiting(&store, &board, &params, Duration::from_secs(10), NO_SWEEP).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let submitted_at = Instant::now();
    let id = submit(store.as_ref(), &[]).await;
    let tasks = waiting.await.expect("claim").expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].execution_id.to_string(), id);
    assert!(submitted_at.elapsed() < Duration::from_secs(2));
}
