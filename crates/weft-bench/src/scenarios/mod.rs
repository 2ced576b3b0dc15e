//! The scenarios. Each runs against one backend and returns its row.

pub mod delayed;
pub mod flows;
pub mod idle;
pub mod suspend;
pub mod throughput;

use std::time::{Duration, Instant};

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use weft_core::{
    claim_waiting, ClaimParams, CompleteParams, ReadyBoard, Store, Task, SWEEP_INTERVAL,
};

/// A progress bar for `len` items, labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>34} [{bar:30}] {pos}/{len} {per_sec} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Milliseconds since `start`, as a float.
pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// What a bench worker claims with: one lane, no capabilities, 30 s leases.
pub fn claim_params(worker_id: String, lane: &str, max: u32) -> ClaimParams {
    ClaimParams {
        worker_id,
        lanes: vec![lane.to_owned()],
        capabilities: vec![],
        max,
        lease_ms: 30_000,
    }
}

/// The next tasks, claimed as an SDK worker does (`claim_waiting`); empty
/// after 100 ms without work, so the caller can check whether it is done.
pub async fn next_tasks(
    store: &Arc<dyn Store>,
    board: &ReadyBoard,
    claim: &ClaimParams,
) -> Result<Vec<Task>, String> {
    let wait = Duration::from_millis(100);
    claim_waiting(store, board, claim, wait, SWEEP_INTERVAL)
        .await
        .map_err(|e| e.to_string())
}

/// Completes `task` with a null result, as an SDK worker does (the brief
/// form: no copy of the execution back).
pub async fn complete_null(store: &dyn Store, task: &Task) -> Result<(), String> {
    let params = CompleteParams {
        execution_id: task.execution_id.clone(),
        lease: task.lease_ref(),
        result: serde_json::Value::Null,
    };
    store
        .execution_complete_brief(&params)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Waits for the spawned producers and workers of a scenario, in order; the
/// first failure ends the wait at once (the others would wait for work that
/// never comes).
pub async fn join_all(
    handles: Vec<tokio::task::JoinHandle<Result<(), String>>>,
) -> Result<(), String> {
    for handle in handles {
        handle.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
