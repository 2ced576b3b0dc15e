//! The heartbeat loop: one per worker, renewing every running task's lease
//! in one pass every `heartbeat_interval`.
//!
//! Definitions: a pass snapshots the tasks still heartbeating and sends
//! their heartbeats concurrently, each bounded by the interval, so a slow
//! server delays one pass by at most one interval. A reply with
//! `cancel_requested` raises [`CancelReason::Cancelled`]; `lease_lost`
//! stops that task's heartbeats and raises `Cancelled` or `LeaseLost`
//! (one read tells which). A task whose heartbeats keep failing is told
//! `LeaseLost` once its lease must have lapsed by this process's clock.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use weft_api::HeartbeatRequest;
use weft_core::Error;

use super::context::{CancelSignal, SuspendedFlag};
use super::{stopped, CancelReason, Shared};

/// One task's heartbeat in a pass.
struct Beat {
    lease_id: String,
    execution_id: String,
    epoch: u64,
    signal: CancelSignal,
    suspended: SuspendedFlag,
}

pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let interval = shared.config.heartbeat_interval;
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            _ = ticker.tick() => {}
        }
        beat_all(&shared).await;
    }
}

async fn beat_all(shared: &Arc<Shared>) {
    let beats: Vec<Beat> = shared
        .in_flight()
        .iter()
        .filter(|(_, entry)| entry.heartbeating && !entry.suspended.is_raised())
        .map(|(lease_id, entry)| Beat {
            lease_id: lease_id.clone(),
            execution_id: entry.execution_id.clone(),
            epoch: entry.epoch,
            signal: entry.signal.clone(),
            suspended: entry.suspended.clone(),
        })
        .collect();
    if beats.is_empty() {
        return;
    }
    // At most `concurrency` beats: one per running task.
    let mut pass = JoinSet::new();
    for beat in beats {
        let shared = Arc::clone(shared);
        pass.spawn(async move { beat_one(&shared, beat).await });
    }
    while pass.join_next().await.is_some() {}
}

async fn beat_one(shared: &Shared, beat: Beat) {
    let request = HeartbeatRequest {
        lease_id: beat.lease_id.clone(),
        epoch: beat.epoch,
        lease_ms: Some(shared.config.lease_ms()),
    };
    let sent_at = Instant::now();
    let call = shared.transport.heartbeat(&beat.execution_id, &request);
    let error = match tokio::time::timeout(shared.config.heartbeat_interval, call).await {
        Ok(Ok(reply)) => {
            if let Some(entry) = shared.in_flight().get_mut(&beat.lease_id) {
                entry.expires_at = sent_at + shared.config.lease;
            }
            if reply.cancel_requested && beat.signal.raise(CancelReason::Cancelled) {
                super::metrics::bump(&shared.counters.cancelled, 1);
            }
            return;
        }
        // A suspend ended the lease while this beat was on its way.
        Ok(Err(Error::LeaseLost { .. })) if beat.suspended.is_raised() => return,
        Ok(Err(Error::LeaseLost { .. })) => {
            let reason = shared.lost_reason(&beat.execution_id).await;
            shared.lose(&beat.lease_id, &beat.signal, reason);
            tracing::info!(
                execution_id = %beat.execution_id, reason = reason.as_str(),
                "heartbeat refused; the handler is told to stop"
            );
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_elapsed) => "no answer within the heartbeat interval".to_owned(),
    };
    let expires_at = shared
        .in_flight()
        .get(&beat.lease_id)
        .map(|entry| entry.expires_at);
    tracing::warn!(execution_id = %beat.execution_id, %error, "heartbeat failed");
    if expires_at.is_some_and(|at| Instant::now() >= at) {
        shared.lose(&beat.lease_id, &beat.signal, CancelReason::LeaseLost);
    }
}
