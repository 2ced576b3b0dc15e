//! Scenario 3: suspend → signal → resume → complete. One execution at a
//! time: its worker suspends it on a waitpoint, an outside party delivers
//! the signal with the waitpoint's token (verified as the server does), and
//! a second worker, asleep on the store's events, claims the resumed
//! execution from the partition the event names and completes it. The round
//! trip runs from the suspend call to the completion's answer.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use weft_core::token::{Keyring, SigningKey};
use weft_core::waitpoint::{SuspendSpec, WaitpointSpec};
use weft_core::{
    claim_across, ClaimParams, CompleteParams, PartitionId, SignalParams, Store, StoreEvent,
    SubmitParams, SuspendParams, Task,
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
pub async fn run(store: &dyn Store, rounds: u32, label: &str) -> Result<Measured, String> {
    let keyring = Keyring::new(SigningKey::new("bench", &[7; 32], 0).map_err(|e| e.to_string())?);
    let mut events = store
        .events()
        .ok_or("this store publishes no events; the resumed worker would poll")?;
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
        let task = claim_until(store, &first, |t| t.execution_id == id).await?;
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
        while events.try_recv().is_ok() {}
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
        let resumed = resumed_task(store, &mut events, &second, &id).await?;
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

/// Claims across every partition until a task `wanted` accepts comes back.
async fn claim_until(
    store: &dyn Store,
    params: &ClaimParams,
    wanted: impl Fn(&Task) -> bool,
) -> Result<Task, String> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    while Instant::now() < deadline {
        let tasks = claim_across(store, params, PartitionId(0))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(task) = tasks.into_iter().find(|t| wanted(t)) {
            return Ok(task);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err("the submitted execution was never claimable".into())
}

/// The resumed worker: sleeps on the store's events and claims from the
/// partition a `Ready` event names, as a worker that is woken would.
async fn resumed_task(
    store: &dyn Store,
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    params: &ClaimParams,
    id: &weft_core::ExecutionId,
) -> Result<Task, String> {
    let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| format!("{id} was not resumed within {ROUND_TIMEOUT:?}"))?;
        let partition = match event {
            Ok(StoreEvent::Ready {
                partition, lane, ..
            }) if lane == params.lanes[0] => partition,
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => id.partition(),
            Err(RecvError::Closed) => return Err("the store's events stopped".into()),
        };
        let tasks = store
            .execution_claim(partition, params)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(task) = tasks.into_iter().find(|t| &t.execution_id == id) {
            return Ok(task);
        }
    }
}
