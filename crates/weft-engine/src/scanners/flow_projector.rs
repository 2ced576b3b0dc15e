//! `FlowProjector`: the slow safety net under flow summaries.
//!
//! Definitions: every member transition keeps its flow's counts, node states
//! and state exact in the same atomic operation; the projector audits that
//! by recomputing flows from their members (`Store::flow_reconcile`), a page
//! per pass, with a cursor per partition, and rewrites any that drifted.
//!
//! Invariants: one pass issues one store call over at most `page_max` flows;
//! a partition is revisited every `interval`, or at once while its pages are
//! full. In a healthy store every pass repairs nothing; a repair is logged
//! (the runner logs busy passes) and counted in the loop's `applied`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use weft_core::{PartitionId, Result, Store};

use super::{ScanReport, Scanner};

/// How often each partition's flows are audited unless told otherwise.
pub const FLOW_PROJECTOR_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// Flows recomputed per pass unless told otherwise.
pub const FLOW_PROJECTOR_PAGE_MAX_DEFAULT: u32 = 64;

/// Recomputes a partition's flows from their members, a page per pass.
pub struct FlowProjector {
    store: Arc<dyn Store>,
    page_max: u32,
    interval: Duration,
    cursors: Mutex<BTreeMap<PartitionId, String>>,
}

impl std::fmt::Debug for FlowProjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowProjector")
            .field("page_max", &self.page_max)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl FlowProjector {
    /// A projector visiting each partition every `interval`, `page_max`
    /// flows at a time.
    ///
    /// # Panics
    /// When `page_max` is zero: a pass must be able to make progress.
    pub fn new(store: Arc<dyn Store>, page_max: u32, interval: Duration) -> Self {
        assert!(page_max > 0, "page_max must be > 0");
        Self {
            store,
            page_max,
            interval,
            cursors: Mutex::new(BTreeMap::new()),
        }
    }

    fn cursor(&self, partition: PartitionId) -> Option<String> {
        self.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
            .cloned()
    }

    fn set_cursor(&self, partition: PartitionId, cursor: Option<String>) {
        let mut cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        match cursor {
            Some(cursor) => cursors.insert(partition, cursor),
            None => cursors.remove(&partition),
        };
    }
}

#[async_trait]
impl Scanner for FlowProjector {
    fn name(&self) -> &'static str {
        "flow_projector"
    }

    async fn run_once(&self, partition: PartitionId) -> Result<ScanReport> {
        let now_ms = self.store.now_ms().await?;
        let cursor = self.cursor(partition);
        let pass = self
            .store
            .flow_reconcile(partition, cursor.as_deref(), self.page_max)
            .await?;
        let more = pass.next_cursor.is_some();
        self.set_cursor(partition, pass.next_cursor);
        let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        Ok(ScanReport {
            store_calls: 2,
            applied: u64::from(pass.repaired),
            dropped: 0,
            started_ms: now_ms,
            now_ms,
            next_due_ms: Some(now_ms.saturating_add(interval_ms)),
            more,
        })
    }
}
