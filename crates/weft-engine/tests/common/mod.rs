//! Helpers shared by the engine's integration tests: real SQLite stores, a
//! store wrapper that counts calls and injects faults, and a bounded wait.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;
use weft_core::{
    Attempt, AuditReport, CancelParams, ClaimParams, CompleteParams, DueHint, Error, Execution,
    ExecutionId, FailParams, HeartbeatParams, HeartbeatReply, LaneDepth, ListParams, Page,
    PartitionCount, PartitionId, PartitionOwner, RebalanceParams, ReleaseParams, Result,
    SignalParams, Store, SubmitParams, Submitted, SuspendParams, Task, TickReport,
};
use weft_engine::EngineConfig;
use weft_sqlite::{SqliteConfig, SqliteStore};

/// Logs to the test's output, filtered by `RUST_LOG` (quiet by default).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::from_default_env();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A fresh in-memory store with `partitions` partitions and the system clock.
pub fn memory_store(partitions: u16) -> Arc<dyn Store> {
    init_logs();
    let config = SqliteConfig::memory().with_partitions(PartitionCount::new(partitions).unwrap());
    Arc::new(SqliteStore::open(config).unwrap())
}

/// An engine config for tests: a short ownership lease, other defaults.
pub fn engine_config(ownership_lease_ms: i64) -> EngineConfig {
    EngineConfig {
        ownership_lease_ms,
        ..EngineConfig::default()
    }
}

/// The wall clock in ms, the same clock the stores under test read.
pub fn wall_ms() -> i64 {
    weft_core::Clock::now_ms(&weft_core::SystemClock)
}

/// Polls `condition` every 5 ms until it holds; returns how long that took.
/// Panics, naming `what`, if it does not hold within `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `Store` that forwards every call to a real store, counting calls per
/// method, and can be told to fail rebalances or to offer no due hints.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    fail_rebalance: AtomicBool,
    fail_tick: AtomicBool,
    hints: bool,
}

impl CountingStore {
    /// Wraps `inner`; `hints: false` hides the inner store's due hints.
    pub fn new(inner: Arc<dyn Store>, hints: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: Mutex::new(BTreeMap::new()),
            fail_rebalance: AtomicBool::new(false),
            fail_tick: AtomicBool::new(false),
            hints,
        })
    }

    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_insert(0) += 1;
    }

    /// Calls per method since the last `take_calls`, and resets them.
    pub fn take_calls(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Makes `engine_rebalance` fail with `unavailable` (or work again).
    pub fn set_fail_rebalance(&self, fail: bool) {
        self.fail_rebalance.store(fail, Ordering::SeqCst);
    }

    /// Makes `partition_tick` fail with `unavailable` (or work again).
    pub fn set_fail_tick(&self, fail: bool) {
        self.fail_tick.store(fail, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for CountingStore {
    fn partition_count(&self) -> PartitionCount {
        self.inner.partition_count()
    }
    async fn now_ms(&self) -> Result<i64> {
        self.count("now_ms");
        self.inner.now_ms().await
    }
    async fn execution_submit(&self, params: &SubmitParams) -> Result<Submitted> {
        self.count("execution_submit");
        self.inner.execution_submit(params).await
    }
    async fn execution_claim(&self, p: PartitionId, params: &ClaimParams) -> Result<Vec<Task>> {
        self.count("execution_claim");
        self.inner.execution_claim(p, params).await
    }
    async fn execution_heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatReply> {
        self.count("execution_heartbeat");
        self.inner.execution_heartbeat(params).await
    }
    async fn execution_complete(&self, params: &CompleteParams) -> Result<Execution> {
        self.count("execution_complete");
        self.inner.execution_complete(params).await
    }
    async fn execution_fail(&self, params: &FailParams) -> Result<Execution> {
        self.count("execution_fail");
        self.inner.execution_fail(params).await
    }
    async fn execution_release(&self, params: &ReleaseParams) -> Result<Execution> {
        self.count("execution_release");
        self.inner.execution_release(params).await
    }
    async fn execution_suspend(&self, params: &SuspendParams) -> Result<Execution> {
        self.count("execution_suspend");
        self.inner.execution_suspend(params).await
    }
    async fn execution_signal(&self, params: &SignalParams) -> Result<Execution> {
        self.count("execution_signal");
        self.inner.execution_signal(params).await
    }
    async fn execution_cancel(&self, params: &CancelParams) -> Result<Execution> {
        self.count("execution_cancel");
        self.inner.execution_cancel(params).await
    }
    async fn execution_replay(&self, id: &ExecutionId) -> Result<Execution> {
        self.count("execution_replay");
        self.inner.execution_replay(id).await
    }
    async fn execution_get(&self, id: &ExecutionId) -> Result<Execution> {
        self.count("execution_get");
        self.inner.execution_get(id).await
    }
    async fn execution_list(&self, params: &ListParams) -> Result<Page> {
        self.count("execution_list");
        self.inner.execution_list(params).await
    }
    async fn attempt_list(&self, id: &ExecutionId) -> Result<Vec<Attempt>> {
        self.count("attempt_list");
        self.inner.attempt_list(id).await
    }
    async fn lane_depths(&self) -> Result<Vec<LaneDepth>> {
        self.count("lane_depths");
        self.inner.lane_depths().await
    }
    async fn partition_tick(&self, partition: PartitionId, max: u32) -> Result<TickReport> {
        self.count("partition_tick");
        if self.fail_tick.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("injected tick failure".into()));
        }
        self.inner.partition_tick(partition, max).await
    }
    async fn partition_audit(&self, partition: PartitionId) -> Result<AuditReport> {
        self.count("partition_audit");
        self.inner.partition_audit(partition).await
    }
    async fn engine_rebalance(&self, params: &RebalanceParams) -> Result<Vec<PartitionId>> {
        self.count("engine_rebalance");
        if self.fail_rebalance.load(Ordering::SeqCst) && !params.leaving {
            return Err(Error::Unavailable("injected rebalance failure".into()));
        }
        self.inner.engine_rebalance(params).await
    }
    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>> {
        self.count("partition_owners");
        self.inner.partition_owners().await
    }
    fn due_hints(&self) -> Option<broadcast::Receiver<DueHint>> {
        if self.hints {
            self.inner.due_hints()
        } else {
            None
        }
    }
}

/// Submits an execution that becomes claimable `delay_ms` from now; returns
/// its id and `run_at_ms`.
pub async fn submit_delayed(store: &dyn Store, delay_ms: i64) -> (ExecutionId, i64) {
    let mut params = SubmitParams::new("test.delayed", serde_json::json!({}));
    params.delay_ms = Some(delay_ms);
    let execution = store.execution_submit(&params).await.unwrap().execution;
    let run_at_ms = execution
        .run_at_ms
        .expect("a delayed execution has run_at_ms");
    (execution.id, run_at_ms)
}

/// The `p`-th percentile (0..=100) of `values`, by nearest rank.
pub fn percentile(values: &[i64], p: usize) -> i64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}
