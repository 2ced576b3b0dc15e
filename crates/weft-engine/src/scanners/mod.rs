//! Scanners: the per-partition sweeps the engine runs.
//!
//! Definitions: a [`Scanner`] does one bounded pass over one partition in
//! [`Scanner::run_once`] and reports counts in a [`ScanReport`]. It knows
//! nothing about scheduling, timeouts, back-off, ownership or logging: the
//! shared runner (`crate::runner`) does all of that, the same way for every
//! scanner.
//!
//! Invariants: `run_once` is bounded (a fixed number of store calls) and safe
//! to run concurrently with itself on the same partition, because every store
//! operation it issues is atomic, re-validated and idempotent.

use async_trait::async_trait;
use weft_core::{PartitionId, Result};

mod flow_projector;
mod timer_drain;

pub use flow_projector::{
    FlowProjector, FLOW_PROJECTOR_INTERVAL_DEFAULT, FLOW_PROJECTOR_PAGE_MAX_DEFAULT,
};
pub use timer_drain::TimerDrain;

/// What one pass of a scanner over one partition did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Store operations issued.
    pub store_calls: u32,
    /// Items that changed state.
    pub applied: u64,
    /// Items found stale and removed without a change.
    pub dropped: u64,
    /// The store's time at the first call of the pass, in ms.
    pub started_ms: i64,
    /// The store's time at the last call of the pass, in ms.
    pub now_ms: i64,
    /// When the partition next has work, by the store's clock; `None` when
    /// the scanner knows of none (the runner then polls at `idle_poll_max`).
    pub next_due_ms: Option<i64>,
    /// `true` when the pass stopped at its bound with work still due, so the
    /// runner should come back as soon as other partitions had their turn.
    pub more: bool,
}

impl ScanReport {
    /// Whether the pass changed anything worth an info line.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.applied > 0 || self.dropped > 0 || self.more
    }
}

/// One kind of partition sweep.
#[async_trait]
pub trait Scanner: Send + Sync + 'static {
    /// A short name for logs and metrics (`timer_drain`).
    fn name(&self) -> &'static str;

    /// Sweeps `partition` once, within the scanner's bounds, reading time from
    /// the store's clock.
    async fn run_once(&self, partition: PartitionId) -> Result<ScanReport>;
}
