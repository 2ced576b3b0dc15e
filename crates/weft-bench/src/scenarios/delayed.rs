//! Scenario 5: delayed work. Submits tasks due at staggered times and
//! measures how late each is claimed after its `run_at`, with the engine
//! promoting them and workers asleep until woken.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use weft_core::{Clock, ReadyBoard, Store, SubmitParams, SystemClock};

use super::{bar, claim_params, join_all, next_tasks};

/// Runs the scenario; returns each task's lateness in milliseconds.
pub async fn run(
    store: Arc<dyn Store>,
    tasks: u32,
    workers: u32,
    label: &str,
) -> Result<Vec<f64>, String> {
    let lane = format!("bench-delayed-{}", std::process::id());
    let progress = bar(u64::from(tasks), label);
    for i in 0..tasks {
        let mut params = SubmitParams::new("bench.delayed", json!({}));
        params.lane = Some(lane.clone());
        // Spread over one second, starting half a second out.
        params.delay_ms = Some(500 + i64::from(i) * 1000 / i64::from(tasks.max(1)));
        store
            .execution_submit(&params)
            .await
            .map_err(|e| e.to_string())?;
    }
    let lateness = Arc::new(Mutex::new(Vec::with_capacity(tasks as usize)));
    let board = ReadyBoard::follow(store.as_ref());
    let mut handles = Vec::new();
    for w in 0..workers {
        let (store, board, lateness, lane, progress) = (
            Arc::clone(&store),
            Arc::clone(&board),
            Arc::clone(&lateness),
            lane.clone(),
            progress.clone(),
        );
        handles.push(tokio::spawn(async move {
            let claim = claim_params(format!("late-{w}"), &lane, 16);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while lateness.lock().map(|l| l.len()).unwrap_or(usize::MAX) < tasks as usize {
                if tokio::time::Instant::now() > deadline {
                    return Err("delayed tasks were not all claimed within 30 s".to_owned());
                }
                let claimed = next_tasks(&store, &board, &claim).await?;
                let now_ms = SystemClock.now_ms();
                for task in claimed {
                    let exec = store
                        .execution_get(&task.execution_id)
                        .await
                        .map_err(|e| e.to_string())?;
                    // The attempt started when the claim was granted; its
                    // ready time is the run_at it was promoted for.
                    if let Ok(mut l) = lateness.lock() {
                        l.push((now_ms - exec.ready_at_ms) as f64);
                    }
                    progress.inc(1);
                }
            }
            Ok::<(), String>(())
        }));
    }
    join_all(handles).await?;
    progress.finish();
    let out = std::mem::take(&mut *lateness.lock().map_err(|e| e.to_string())?);
    Ok(out)
}
