//! Counters every engine loop keeps, read as plain snapshots.
//!
//! Definitions: a *loop* is one long-running engine task (the ownership loop,
//! the timer drain). Each owns one [`LoopMetrics`] of relaxed atomics; readers
//! take a [`LoopSnapshot`], so a scrape never blocks a loop.
//!
//! Invariants: counters only grow (they are Prometheus counters); `lag_ms` and
//! `owned_partitions` are gauges that hold the last observed value.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The live counters of one loop. Relaxed ordering is enough: each field is
/// an independent statistic and no decision is taken on a combination.
#[derive(Debug, Default)]
pub(crate) struct LoopMetrics {
    runs: AtomicU64,
    store_calls: AtomicU64,
    applied: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    lag_ms: AtomicI64,
}

impl LoopMetrics {
    /// Records one finished run and what it did.
    pub(crate) fn record_run(&self, store_calls: u64, applied: u64, dropped: u64) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.store_calls.fetch_add(store_calls, Ordering::Relaxed);
        self.applied.fetch_add(applied, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Records one failed run (the failed call counts as a store call).
    pub(crate) fn record_error(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.store_calls.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Records items given up outside a run (partitions whose lease lapsed).
    pub(crate) fn record_dropped(&self, dropped: u64) {
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Records the age of the oldest due item a run applied; negative ages
    /// (a tick that ran early by the store's clock) are stored as zero.
    pub(crate) fn record_lag_ms(&self, lag_ms: i64) {
        self.lag_ms.store(lag_ms.max(0), Ordering::Relaxed);
    }

    /// A consistent-enough copy of every counter.
    pub(crate) fn snapshot(&self) -> LoopSnapshot {
        LoopSnapshot {
            runs: self.runs.load(Ordering::Relaxed),
            store_calls: self.store_calls.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            lag_ms: self.lag_ms.load(Ordering::Relaxed),
        }
    }
}

/// What one loop has done since the engine started.
///
/// | field | timer drain | ownership loop |
/// |---|---|---|
/// | `runs` | drains of one partition (`run_once` calls) | `engine_rebalance` calls |
/// | `store_calls` | `partition_tick` calls | `engine_rebalance` calls |
/// | `applied` | timers that moved an execution | partitions gained |
/// | `dropped` | stale timers removed unapplied | partitions given up or lost |
/// | `errors` | failed or timed-out drains | failed or timed-out rebalances |
/// | `lag_ms` | see below | always 0 |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopSnapshot {
    /// Runs finished, failed ones included (counter).
    pub runs: u64,
    /// Store operations issued, failed ones included (counter).
    pub store_calls: u64,
    /// Items the loop applied (counter).
    pub applied: u64,
    /// Items the loop dropped (counter).
    pub dropped: u64,
    /// Runs that failed or timed out (counter).
    pub errors: u64,
    /// Gauge: in the last drain that applied a timer whose due time the engine
    /// knew, how long after its due time the first tick ran, in milliseconds
    /// of the store's clock. 0 until such a drain happens. A healthy engine
    /// keeps this at a few milliseconds; growth means the drain falls behind.
    pub lag_ms: i64,
}

/// A snapshot of the whole engine, for logs and the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineMetrics {
    /// Gauge: partitions this instance holds right now.
    pub owned_partitions: u32,
    /// The ownership loop.
    pub ownership: LoopSnapshot,
    /// The timer drain.
    pub timer_drain: LoopSnapshot,
    /// The flow projector (`applied` counts flows repaired; zero when healthy).
    pub flow_projector: LoopSnapshot,
}

#[cfg(test)]
mod tests {
    //! Goal: counters add up and the lag gauge never goes negative.
    //! Method: drive one `LoopMetrics` by hand and compare snapshots.

    use super::*;

    #[test]
    fn counters_accumulate_and_lag_is_a_gauge() {
        let metrics = LoopMetrics::default();
        assert_eq!(metrics.snapshot(), LoopSnapshot::default());
        metrics.record_run(2, 5, 1);
        metrics.record_run(1, 0, 0);
        metrics.record_error();
        metrics.record_lag_ms(7);
        metrics.record_lag_ms(3);
        let snap = metrics.snapshot();
        assert_eq!(
            snap,
            LoopSnapshot {
                runs: 3,
                store_calls: 4,
                applied: 5,
                dropped: 1,
                errors: 1,
                lag_ms: 3,
            }
        );
        metrics.record_lag_ms(-4);
        metrics.record_dropped(2);
        assert_eq!(metrics.snapshot().lag_ms, 0);
        assert_eq!(metrics.snapshot().dropped, 3);
    }
}
