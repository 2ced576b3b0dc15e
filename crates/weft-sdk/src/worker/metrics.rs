//! The worker's counters: monotonic since start, read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a worker's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// Tasks claimed.
    pub claimed: u64,
    /// Attempts the worker completed (the store accepted the result).
    pub completed: u64,
    /// Attempts the worker failed (the store accepted the failure): handler
    /// errors, panics and kinds without a handler.
    pub failed: u64,
    /// Handlers that panicked (also counted in `failed` once reported).
    pub panicked: u64,
    /// Tasks whose lease the worker found lost (not counting cancels).
    pub lease_lost: u64,
    /// Tasks whose execution was cancelled while they ran.
    pub cancelled: u64,
    /// Tasks handed back with `release` (the store accepted it): running
    /// when shutdown's grace period ran out, received after shutdown began,
    /// or sent by a claim beyond what it asked for. Their attempts end
    /// `released` and count against nothing.
    pub released: u64,
    /// Attempts that ended with the handler suspending its execution
    /// ([`crate::TaskContext::suspend`]).
    pub suspended: u64,
    /// Handlers running now.
    pub in_flight: u64,
}

/// The live counters behind [`WorkerMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) claimed: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) suspended: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, in_flight: u64) -> WorkerMetrics {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerMetrics {
            claimed: read(&self.claimed),
            completed: read(&self.completed),
            failed: read(&self.failed),
            panicked: read(&self.panicked),
            lease_lost: read(&self.lease_lost),
            cancelled: read(&self.cancelled),
            released: read(&self.released),
            suspended: read(&self.suspended),
            in_flight,
        }
    }
}
