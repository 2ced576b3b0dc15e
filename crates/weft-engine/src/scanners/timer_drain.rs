//! `TimerDrain`: applies a partition's due timers.
//!
//! Definitions: each partition has one due-index of timers (delays, lease
//! expiries, attempt timeouts, deadlines, retention). `partition_tick` pops
//! up to a batch of timers due by the store's clock, applies each one as an
//! idempotent, re-validated transition (stale ones are dropped) and returns
//! the next due time.
//!
//! Invariants: one pass issues at most `ticks_max` ticks of at most
//! `batch_max` timers, so it is bounded however far behind the partition is;
//! it stops early on the first tick that was not full, since that tick saw
//! every timer due by then.

use std::sync::Arc;

use async_trait::async_trait;
use weft_core::{PartitionId, Result, Store};

use super::{ScanReport, Scanner};

/// Drains the due timers of one partition per pass.
#[derive(Clone)]
pub struct TimerDrain {
    store: Arc<dyn Store>,
    batch_max: u32,
    ticks_max: u32,
}

impl std::fmt::Debug for TimerDrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerDrain")
            .field("batch_max", &self.batch_max)
            .field("ticks_max", &self.ticks_max)
            .finish_non_exhaustive()
    }
}

impl TimerDrain {
    /// A drain that applies up to `batch_max` timers per tick and up to
    /// `ticks_max` ticks per pass.
    ///
    /// # Panics
    /// When either bound is zero: a pass must be able to make progress.
    pub fn new(store: Arc<dyn Store>, batch_max: u32, ticks_max: u32) -> Self {
        assert!(batch_max > 0, "batch_max must be > 0");
        assert!(ticks_max > 0, "ticks_max must be > 0");
        Self {
            store,
            batch_max,
            ticks_max,
        }
    }
}

#[async_trait]
impl Scanner for TimerDrain {
    fn name(&self) -> &'static str {
        "timer_drain"
    }

    async fn run_once(&self, partition: PartitionId) -> Result<ScanReport> {
        let mut report = ScanReport::default();
        for tick_index in 0..self.ticks_max {
            let tick = self.store.partition_tick(partition, self.batch_max).await?;
            assert!(
                tick.applied.saturating_add(tick.dropped) <= self.batch_max,
                "partition_tick went over its batch: {tick:?}"
            );
            if tick_index == 0 {
                report.started_ms = tick.now_ms;
            }
            report.store_calls += 1;
            report.applied += u64::from(tick.applied);
            report.dropped += u64::from(tick.dropped);
            report.now_ms = tick.now_ms;
            report.next_due_ms = tick.next_due_ms;
            // A tick short of its batch saw every timer due by its `now_ms`.
            if tick.applied + tick.dropped < self.batch_max {
                report.more = false;
                return Ok(report);
            }
            report.more = true;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    //! Goal: a pass drains everything due, in full batches, stops on a short
    //! batch, and stops at its bound leaving `more` set.
    //! Method: a real in-memory SQLite store with delayed executions whose
    //! `run_at` is already past, drained by hand (no engine running).

    use std::sync::Arc;

    use weft_core::{PartitionCount, PartitionId, State, Store, SubmitParams};
    use weft_sqlite::{SqliteConfig, SqliteStore};

    use super::*;

    /// Submits `count` executions due `delay_ms` from now.
    async fn submit_due(store: &Arc<dyn Store>, count: u32, delay_ms: i64) {
        for i in 0..count {
            let mut params = SubmitParams::new("test.kind", serde_json::json!({ "i": i }));
            params.delay_ms = Some(delay_ms);
            let submitted = store.execution_submit(&params).await.unwrap();
            assert_eq!(submitted.execution.state, State::Delayed);
        }
    }

    fn one_partition_store() -> Arc<dyn Store> {
        let config = SqliteConfig::memory().with_partitions(PartitionCount::new(1).unwrap());
        Arc::new(SqliteStore::open(config).unwrap())
    }

    #[tokio::test]
    async fn drains_in_full_batches_then_stops_on_a_short_one() {
        let store = one_partition_store();
        submit_due(&store, 7, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let drain = TimerDrain::new(store.clone(), 3, 10);
        let report = drain.run_once(PartitionId(0)).await.unwrap();
        assert_eq!(report.applied, 7);
        assert_eq!(report.store_calls, 3, "3 + 3 + 1: the short batch ends it");
        assert!(!report.more);
        assert_eq!(report.next_due_ms, None);
        assert!(report.started_ms <= report.now_ms);
    }

    #[tokio::test]
    async fn stops_at_its_bound_with_more_set() {
        let store = one_partition_store();
        submit_due(&store, 5, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let drain = TimerDrain::new(store.clone(), 2, 2);
        let first = drain.run_once(PartitionId(0)).await.unwrap();
        assert_eq!((first.applied, first.store_calls, first.more), (4, 2, true));
        let second = drain.run_once(PartitionId(0)).await.unwrap();
        assert_eq!((second.applied, second.more), (1, false));
    }

    #[tokio::test]
    async fn reports_the_next_due_time_of_future_timers() {
        let store = one_partition_store();
        submit_due(&store, 1, 60_000).await;
        let drain = TimerDrain::new(store.clone(), 8, 4);
        let report = drain.run_once(PartitionId(0)).await.unwrap();
        assert_eq!((report.applied, report.store_calls), (0, 1));
        let next_due_ms = report.next_due_ms.expect("the delay timer");
        let ahead_ms = next_due_ms - report.now_ms;
        assert!((59_000..=60_000).contains(&ahead_ms), "{ahead_ms}");
        assert!(!report.is_busy());
    }
}
