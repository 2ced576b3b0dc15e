//! A `Store` decorator that counts calls, for benchmarks and idle-cost tests.
//! A call is one operation of the trait: one round trip, except a claim sweep
//! across partitions, which the store may make in several.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::flow::{Flow, FlowSpec};
use crate::ids::{ExecutionId, FlowId, PartitionCount, PartitionId};
use crate::model::{Attempt, Execution, State, SubmitParams, Task};
use crate::store::{
    AuditReport, CancelParams, ClaimParams, CompleteParams, DueHint, FailParams, FlowCreated,
    FlowListParams, FlowPage, HeartbeatParams, HeartbeatReply, LaneDepth, ListParams, Page,
    PartitionOwner, RebalanceParams, ReconcileReport, ReleaseParams, SignalParams, Store,
    StoreEvent, Submitted, SuspendParams, TickReport,
};

/// Wraps a store and counts every call made through it.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    calls: AtomicU64,
}

impl CountingStore {
    /// Counts calls to `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
        }
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) -> &dyn Store {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_ref()
    }
}

#[async_trait]
impl Store for CountingStore {
    fn partition_count(&self) -> PartitionCount {
        self.inner.partition_count()
    }
    async fn now_ms(&self) -> Result<i64> {
        self.count().now_ms().await
    }
    async fn execution_submit(&self, params: &SubmitParams) -> Result<Submitted> {
        self.count().execution_submit(params).await
    }
    async fn execution_claim(
        &self,
        partition: PartitionId,
        params: &ClaimParams,
    ) -> Result<Vec<Task>> {
        self.count().execution_claim(partition, params).await
    }
    /// Counted as one call, however many round trips the store makes.
    async fn execution_claim_across(
        &self,
        params: &ClaimParams,
        start: PartitionId,
    ) -> Result<Vec<Task>> {
        self.count().execution_claim_across(params, start).await
    }
    async fn execution_heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatReply> {
        self.count().execution_heartbeat(params).await
    }
    async fn execution_complete(&self, params: &CompleteParams) -> Result<Execution> {
        self.count().execution_complete(params).await
    }
    async fn execution_fail(&self, params: &FailParams) -> Result<Execution> {
        self.count().execution_fail(params).await
    }
    async fn execution_submit_many(&self, params: &[SubmitParams]) -> Result<Vec<Submitted>> {
        self.count().execution_submit_many(params).await
    }
    async fn execution_complete_many(
        &self,
        params: &[CompleteParams],
    ) -> Result<Vec<Result<State>>> {
        self.count().execution_complete_many(params).await
    }
    async fn execution_complete_brief(&self, params: &CompleteParams) -> Result<State> {
        self.count().execution_complete_brief(params).await
    }
    async fn execution_fail_brief(&self, params: &FailParams) -> Result<State> {
        self.count().execution_fail_brief(params).await
    }
    async fn execution_release(&self, params: &ReleaseParams) -> Result<Execution> {
        self.count().execution_release(params).await
    }
    async fn execution_suspend(&self, params: &SuspendParams) -> Result<Execution> {
        self.count().execution_suspend(params).await
    }
    async fn execution_signal(&self, params: &SignalParams) -> Result<Execution> {
        self.count().execution_signal(params).await
    }
    async fn execution_cancel(&self, params: &CancelParams) -> Result<Execution> {
        self.count().execution_cancel(params).await
    }
    async fn execution_replay(&self, id: &ExecutionId) -> Result<Execution> {
        self.count().execution_replay(id).await
    }
    async fn execution_get(&self, id: &ExecutionId) -> Result<Execution> {
        self.count().execution_get(id).await
    }
    async fn execution_list(&self, params: &ListParams) -> Result<Page> {
        self.count().execution_list(params).await
    }
    async fn attempt_list(&self, id: &ExecutionId) -> Result<Vec<Attempt>> {
        self.count().attempt_list(id).await
    }
    async fn lane_depths(&self) -> Result<Vec<LaneDepth>> {
        self.count().lane_depths().await
    }
    async fn partition_tick(&self, partition: PartitionId, max: u32) -> Result<TickReport> {
        self.count().partition_tick(partition, max).await
    }
    async fn partition_audit(&self, partition: PartitionId) -> Result<AuditReport> {
        self.count().partition_audit(partition).await
    }
    async fn engine_rebalance(&self, params: &RebalanceParams) -> Result<Vec<PartitionId>> {
        self.count().engine_rebalance(params).await
    }
    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>> {
        self.count().partition_owners().await
    }
    fn supports_flows(&self) -> bool {
        self.inner.supports_flows()
    }
    async fn flow_create(&self, spec: &FlowSpec) -> Result<FlowCreated> {
        self.count().flow_create(spec).await
    }
    async fn flow_get(&self, id: &FlowId) -> Result<Flow> {
        self.count().flow_get(id).await
    }
    async fn flow_list(&self, params: &FlowListParams) -> Result<FlowPage> {
        self.count().flow_list(params).await
    }
    async fn flow_add_nodes(&self, id: &FlowId, spec: &FlowSpec) -> Result<Flow> {
        self.count().flow_add_nodes(id, spec).await
    }
    async fn flow_cancel(&self, id: &FlowId) -> Result<Flow> {
        self.count().flow_cancel(id).await
    }
    async fn flow_reconcile(
        &self,
        partition: PartitionId,
        cursor: Option<&str>,
        max: u32,
    ) -> Result<ReconcileReport> {
        self.count().flow_reconcile(partition, cursor, max).await
    }
    fn due_hints(&self) -> Option<tokio::sync::broadcast::Receiver<DueHint>> {
        self.inner.due_hints()
    }
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        self.inner.events()
    }
}
