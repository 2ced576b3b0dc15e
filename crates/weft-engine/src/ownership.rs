//! The ownership loop: holds this instance's fair share of partitions.
//!
//! Definitions: the store keeps a membership lease per instance and a lease
//! per partition. `engine_rebalance` renews both and moves the caller towards
//! its share (`ceil(P / live instances)`), taking partitions whose lease
//! lapsed; the fairness and takeover rules live in the store, atomically.
//!
//! Invariants: the published set is the last set the store granted, and it is
//! published only while that grant can still be valid: from the moment the
//! request was sent, plus one lease. After that the set is dropped, so an
//! instance cut off from the store stops sweeping about when others may take
//! over. (Correctness never depends on this; it only avoids wasted work.)
//!
//! Key operations: `run` renews at once and then every third of a lease
//! (jittered down by up to 10 %); after an error it retries with back-off
//! within the remaining lease. `leave` gives every partition up at shutdown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};
use weft_core::{Error, PartitionId, RebalanceParams, Result, Store};

use crate::metrics::LoopMetrics;
use crate::timing::{backoff, jitter_down};

/// Renewals are shortened by up to this fraction, so instances started
/// together spread their calls, and never come later than a third of a lease.
const RENEW_SPREAD: f64 = 0.1;
/// First retry delay after a failed rebalance.
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Renews this instance's partitions until shutdown.
pub(crate) struct OwnershipLoop {
    store: Arc<dyn Store>,
    params: RebalanceParams,
    call_timeout: Duration,
    owned: watch::Sender<BTreeSet<PartitionId>>,
    metrics: Arc<LoopMetrics>,
    shutdown: watch::Receiver<bool>,
    /// When the last granted set may have lapsed; `None` before any grant.
    held_until: Option<Instant>,
    failures: u32,
}

impl OwnershipLoop {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        instance_id: String,
        lease_ms: i64,
        call_timeout: Duration,
        owned: watch::Sender<BTreeSet<PartitionId>>,
        metrics: Arc<LoopMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let params = RebalanceParams {
            instance_id,
            lease_ms,
            leaving: false,
        };
        Self {
            store,
            params,
            call_timeout,
            owned,
            metrics,
            shutdown,
            held_until: None,
            failures: 0,
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.params.lease_ms).unwrap_or(0))
    }

    /// A third of a lease: two renewals can fail before the lease lapses.
    fn renew_interval(&self) -> Duration {
        self.lease() / 3
    }

    /// Renews until shutdown; leaves the owned set as it was, since the
    /// caller decides between leaving (graceful) and letting leases lapse.
    pub(crate) async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let pause = self.renew_once().await;
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return;
                    }
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One rebalance; returns how long to wait before the next.
    async fn renew_once(&mut self) -> Duration {
        let sent_at = Instant::now();
        // A reply later than a third of a lease is as good as lost: the next
        // renewal is due by then.
        let call_timeout = self.call_timeout.min(self.renew_interval());
        let call = self.store.engine_rebalance(&self.params);
        let error = match tokio::time::timeout(call_timeout, call).await {
            Ok(Ok(partitions)) => {
                self.failures = 0;
                self.held_until = Some(sent_at + self.lease());
                self.publish(partitions);
                return jitter_down(self.renew_interval(), RENEW_SPREAD);
            }
            Ok(Err(error)) => error,
            Err(_) => {
                Error::Unavailable(format!("engine_rebalance timed out after {call_timeout:?}"))
            }
        };
        self.renewal_failed(&error)
    }

    /// Counts a failed renewal, drops the set once it may have lapsed, and
    /// returns how long to wait before retrying.
    fn renewal_failed(&mut self, error: &Error) -> Duration {
        self.metrics.record_error();
        self.failures = self.failures.saturating_add(1);
        let now = Instant::now();
        let remaining = self
            .held_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let lapsed = self.owned.borrow().len() as u64;
        if remaining.is_zero() && lapsed > 0 {
            let instance_id = &self.params.instance_id;
            warn!(%instance_id, lapsed, "ownership lapsed; sweeping nothing");
            self.metrics.record_dropped(lapsed);
            self.owned.send_replace(BTreeSet::new());
        }
        let retry = backoff(self.failures, ERROR_BACKOFF_MIN, self.renew_interval());
        // Wake no later than the set lapses, so it is dropped on time.
        let pause = if remaining.is_zero() {
            retry
        } else {
            retry.min(remaining)
        };
        warn!(
            instance_id = %self.params.instance_id,
            failures = self.failures,
            retry_in_ms = pause.as_millis(),
            %error,
            "rebalance failed"
        );
        pause
    }

    /// Publishes the granted set if it changed, counting gains and losses.
    fn publish(&self, partitions: Vec<PartitionId>) {
        let count = self.store.partition_count();
        let granted: BTreeSet<PartitionId> = partitions.into_iter().collect();
        assert!(
            granted.iter().all(|p| count.contains(*p)),
            "engine_rebalance granted a partition outside 0..{}: {granted:?}",
            count.get()
        );
        let previous = self.owned.borrow().clone();
        let gained = granted.difference(&previous).count() as u64;
        let lost = previous.difference(&granted).count() as u64;
        self.metrics.record_run(1, gained, lost);
        if gained > 0 || lost > 0 {
            info!(
                instance_id = %self.params.instance_id,
                gained,
                lost,
                owned = granted.len(),
                "ownership changed"
            );
            self.owned.send_replace(granted);
        }
    }
}

/// Gives up every partition and the membership of `instance_id` at once, so
/// the other instances take over at their next renewal instead of a lease
/// later.
pub(crate) async fn leave(
    store: &dyn Store,
    instance_id: &str,
    lease_ms: i64,
    call_timeout: Duration,
) -> Result<()> {
    let params = RebalanceParams {
        instance_id: instance_id.to_owned(),
        lease_ms,
        leaving: true,
    };
    match tokio::time::timeout(call_timeout, store.engine_rebalance(&params)).await {
        Ok(Ok(kept)) if kept.is_empty() => Ok(()),
        Ok(Ok(kept)) => Err(Error::Internal(format!(
            "engine_rebalance(leaving) kept partitions {kept:?}"
        ))),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::Unavailable(format!(
            "engine_rebalance(leaving) timed out after {call_timeout:?}"
        ))),
    }
}
