//! Scenario 3: suspend → signal → resume → complete. One execution at a
//! time: its worker suspends it on a waitpoint, an outside party delivers
//! the signal with the waitpoint's token (verified as the server does), and
//! a second worker claims the resumed execution as an SDK worker does
//! (`claim_waiting` on the ready board, woken by the store's `Ready` event)
//! and completes it. The round trip runs from the suspend call to the
//! completion's answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use weft_core::token::{Keyring, SigningKey};
use weft_core::waitpoint::{SuspendSpec, WaitpointSpec};
use weft_core::{
    claim_waiting, ClaimParams, CompleteParams, ExecutionId, ReadyBoard, SignalParams, Store,
    SubmitParams, SuspendParams, Task, SWEEP_INTERVAL,
};

use super::{bar, claim_params, ms_since};

/// What the scenario measured.
pub struct Measured {
    /// Suspend call to completion answer, per round.
    pub round_trips_ms: Vec<f64>,
    /// Signal call to the resumed task in the worker's hands, per round.
    pub resume_ms: Vec<f64>,
}

/// Longest a round may take before the scenario gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `rounds` round trips against `store`.
pub async fn run(store: &Arc<dyn Store>, rounds: u32, label: &str) -> Result<Measured, String> {
    let keyring = Keyring::new(SigningKey::new("bench", &[7; 32], 0).map_err(|e| e.to_string())?);
    let board = ReadyBoard::follow(store.as_ref());
    let lane = format!("bench-suspend-{}", std::process::id());
    let first = claim_params("suspender".into(), &lane, 1);
    let second = claim_params("resumer".into(), &lane, 1);
    let spec = SuspendSpec {
        waitpoints: vec![WaitpointSpec {
            timeout_ms: Some(60_000),
            ..WaitpointSpec::new("approval")
        }],
        resume_when: Default::default(),
    };
    let progress = bar(u64::from(rounds), label);
    let mut out = Measured {
        round_trips_ms: Vec::with_capacity(rounds as usize),
        resume_ms: Vec::with_capacity(rounds as usize),
    };
    for _ in 0..rounds {
        let mut params = SubmitParams::new("bench.approve", json!({"round": true}));
        params.lane = Some(lane.clone());
        let submitted = store
            .execution_submit(&params)
            .await
            .map_err(|e| e.to_string())?;
        let id = submitted.execution.id;
        let task = claim(store, &board, &first, &id).await?;
        let start = Instant::now();
        let suspended = store
            .execution_suspend(&SuspendParams {
                execution_id: id.clone(),
                lease: task.lease_ref(),
                spec: spec.clone(),
            })
            .await
            .map_err(|e| e.to_string())?;
        let tokens = keyring.tokens_for(&suspended).map_err(|e| e.to_string())?;
        let token = tokens.first().ok_or("the suspend minted no token")?;
        let signal_at = Instant::now();
        let now_ms = store.now_ms().await.map_err(|e| e.to_string())?;
        let claims = keyring
            .verify(&token.token, now_ms)
            .map_err(|e| e.to_string())?;
        store
            .execution_signal(&SignalParams {
                execution_id: claims.execution_id,
                waitpoint: claims.waitpoint,
                payload: json!({"approved_by": "bench"}),
                seq: Some(claims.seq),
            })
            .await
            .map_err(|e| e.to_string())?;
        let resumed = claim(store, &board, &second, &id).await?;
        out.resume_ms.push(ms_since(signal_at));
        if !resumed.signals.contains_key("approval") {
            return Err(format!("{id} resumed without its signal"));
        }
        store
            .execution_complete(&CompleteParams {
                execution_id: id,
                lease: resumed.lease_ref(),
                result: json!({"deployed": true}),
            })
            .await
            .map_err(|e| e.to_string())?;
        out.round_trips_ms.push(ms_since(start));
        progress.inc(1);
    }
    progress.finish();
    Ok(out)
}

/// Claims `id`, the one execution of the scenario's lane, waiting for it as
/// an SDK worker does.
async fn claim(
    store: &Arc<dyn Store>,
    board: &ReadyBoard,
    params: &ClaimParams,
    id: &ExecutionId,
) -> Result<Task, String> {
    let tasks = claim_waiting(store, board, params, ROUND_TIMEOUT, SWEEP_INTERVAL)
        .await
        .map_err(|e| e.to_string())?;
    tasks
        .into_iter()
        .find(|t| &t.execution_id == id)
        .ok_or_else(|| format!("{id} was not claimable within {ROUND_TIMEOUT:?}"))
}
