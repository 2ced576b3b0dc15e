//! `SqliteStore`: the `Store` trait over `Db`.
//!
//! Definitions: each trait method checks what it can without the database,
//! then runs one closure in one transaction on tokio's blocking pool.
//!
//! Invariants: no method blocks the async runtime on SQLite; parameters are
//! moved into the closure, so a cancelled caller cannot cut a transaction in
//! half (the blocking task runs to its commit or rollback regardless).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use weft_core::flow::{Flow, FlowSpec};
use weft_core::machine::Command;
use weft_core::{
    check_batch, Attempt, AuditReport, CancelParams, ClaimParams, CompleteParams, DueHint, Error,
    Execution, ExecutionId, FailParams, FlowCreated, FlowId, FlowListParams, FlowPage,
    HeartbeatParams, HeartbeatReply, LaneDepth, ListParams, Page, PartitionCount, PartitionId,
    PartitionOwner, RebalanceParams, ReconcileReport, ReleaseParams, Result, SignalParams, State,
    Store, StoreEvent, SubmitParams, Submitted, SuspendParams, Task, TickReport, LIST_LIMIT_MAX,
};

use crate::config::SqliteConfig;
use crate::db::{Access, Ctx, Db};
use crate::{attempts, audit, engine, executions, flow_ops, flows, ops, tick};

/// Weft's embedded store. Clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("partitions", &self.db.partitions().get())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the store `config` names.
    /// Blocks briefly on file I/O.
    ///
    /// # Errors
    ///
    /// Fails with `invalid_argument` when the database was initialised with
    /// another partition count than `config.partitions`, or was written by a
    /// newer schema than this build knows; with `unavailable` when the file
    /// cannot be opened or stays locked.
    pub fn open(config: SqliteConfig) -> Result<Self> {
        let db = Db::open(&config)?;
        tracing::debug!(path = ?config.path, partitions = db.partitions().get(), "opened sqlite store");
        Ok(Self { db: Arc::new(db) })
    }

    /// Opens the store a `sqlite:` URL names (see `SqliteConfig::from_url`),
    /// with the system clock and default machine settings.
    ///
    /// # Errors
    ///
    /// As `SqliteConfig::from_url` and `SqliteStore::open`.
    pub fn open_url(url: &str) -> Result<Self> {
        Self::open(SqliteConfig::from_url(url)?)
    }

    /// Runs `op` in one transaction on the blocking pool.
    async fn run<T, F>(&self, access: Access, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || db.run(access, op))
            .await
            .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
    }

    /// Applies one command to one execution.
    async fn command(&self, id: &ExecutionId, command: Command) -> Result<Execution> {
        let id = id.clone();
        self.run(Access::Write, move |ctx| ops::apply(ctx, &id, command))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn partition_count(&self) -> PartitionCount {
        self.db.partitions()
    }

    async fn now_ms(&self) -> Result<i64> {
        Ok(self.db.now_ms())
    }

    async fn execution_submit(&self, params: &SubmitParams) -> Result<Submitted> {
        let params = params.clone();
        self.run(Access::Write, move |ctx| ops::submit(ctx, &params))
            .await
    }

    async fn execution_submit_many(&self, params: &[SubmitParams]) -> Result<Vec<Submitted>> {
        check_batch("executions", params.len())?;
        let params = params.to_vec();
        // One transaction for the batch: one commit instead of one per item.
        self.run(Access::Write, move |ctx| ops::submit_many(ctx, &params))
            .await
    }

    async fn execution_claim(
        &self,
        partition: PartitionId,
        params: &ClaimParams,
    ) -> Result<Vec<Task>> {
        let claim = ops::check_claim(params)?;
        self.run(Access::Write, move |ctx| ops::claim(ctx, partition, &claim))
            .await
    }

    async fn execution_claim_across(
        &self,
        params: &ClaimParams,
        start: PartitionId,
    ) -> Result<Vec<Task>> {
        let claim = ops::check_claim(params)?;
        self.run(Access::Write, move |ctx| {
            ops::claim_across(ctx, start, &claim)
        })
        .await
    }

    async fn execution_heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatReply> {
        let command = Command::Heartbeat {
            lease: params.lease.clone(),
            lease_ms: params.lease_ms,
        };
        let exec = self.command(&params.execution_id, command).await?;
        let lease = exec.lease.ok_or_else(|| {
            Error::Internal(format!("{} holds no lease after a heartbeat", exec.id))
        })?;
        Ok(HeartbeatReply {
            expires_at_ms: lease.expires_at_ms,
            // Cancel ends the lease at once, so a live lease is never asked
            // to stop; a heartbeat after a cancel is `lease_lost`.
            cancel_requested: false,
        })
    }

    async fn execution_complete(&self, params: &CompleteParams) -> Result<Execution> {
        let command = ops::complete_command(params);
        self.command(&params.execution_id, command).await
    }

    async fn execution_complete_many(
        &self,
        params: &[CompleteParams],
    ) -> Result<Vec<Result<State>>> {
        check_batch("completions", params.len())?;
        let params = params.to_vec();
        // One transaction for the batch: one commit instead of one per item.
        self.run(Access::Write, move |ctx| ops::complete_many(ctx, &params))
            .await
    }

    async fn execution_fail(&self, params: &FailParams) -> Result<Execution> {
        let command = Command::Fail {
            lease: params.lease.clone(),
            error: params.error.clone(),
            retryable: params.retryable,
        };
        self.command(&params.execution_id, command).await
    }

    async fn execution_release(&self, params: &ReleaseParams) -> Result<Execution> {
        let command = Command::Release {
            lease: params.lease.clone(),
        };
        self.command(&params.execution_id, command).await
    }

    async fn execution_suspend(&self, params: &SuspendParams) -> Result<Execution> {
        let command = Command::Suspend {
            lease: params.lease.clone(),
            spec: params.spec.clone(),
        };
        self.command(&params.execution_id, command).await
    }

    async fn execution_signal(&self, params: &SignalParams) -> Result<Execution> {
        let command = Command::Signal {
            waitpoint: params.waitpoint.clone(),
            payload: params.payload.clone(),
            seq: params.seq,
        };
        self.command(&params.execution_id, command).await
    }

    async fn execution_cancel(&self, params: &CancelParams) -> Result<Execution> {
        let command = Command::Cancel {
            reason: params.reason.clone(),
        };
        self.command(&params.execution_id, command).await
    }

    async fn execution_replay(&self, id: &ExecutionId) -> Result<Execution> {
        self.command(id, Command::Replay).await
    }

    async fn execution_get(&self, id: &ExecutionId) -> Result<Execution> {
        let id = id.clone();
        self.run(Access::Read, move |ctx| ops::load_required(ctx, &id))
            .await
    }

    async fn execution_list(&self, params: &ListParams) -> Result<Page> {
        if !(1..=LIST_LIMIT_MAX).contains(&params.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be 1..={LIST_LIMIT_MAX}, got {}", params.limit),
            ));
        }
        let params = params.clone();
        self.run(Access::Read, move |ctx| executions::list(ctx.conn, &params))
            .await
    }

    async fn attempt_list(&self, id: &ExecutionId) -> Result<Vec<Attempt>> {
        let id = id.clone();
        self.run(Access::Read, move |ctx| {
            ops::load_required(ctx, &id)?;
            attempts::list(ctx.conn, id.as_str())
        })
        .await
    }

    async fn lane_depths(&self) -> Result<Vec<LaneDepth>> {
        self.run(Access::Read, |ctx| executions::lane_depths(ctx.conn))
            .await
    }

    async fn partition_tick(&self, partition: PartitionId, max: u32) -> Result<TickReport> {
        self.run(Access::Write, move |ctx| tick::tick(ctx, partition, max))
            .await
    }

    async fn partition_audit(&self, partition: PartitionId) -> Result<AuditReport> {
        self.run(Access::Read, move |ctx| audit::audit(ctx, partition))
            .await
    }

    async fn engine_rebalance(&self, params: &RebalanceParams) -> Result<Vec<PartitionId>> {
        params.validate()?;
        let params = params.clone();
        self.run(Access::Write, move |ctx| engine::rebalance(ctx, &params))
            .await
    }

    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>> {
        self.run(Access::Read, |ctx| engine::owners(ctx)).await
    }

    fn supports_flows(&self) -> bool {
        true
    }

    async fn flow_create(&self, spec: &FlowSpec) -> Result<FlowCreated> {
        let spec = spec.clone();
        self.run(Access::Write, move |ctx| flow_ops::create(ctx, &spec))
            .await
    }

    async fn flow_get(&self, id: &FlowId) -> Result<Flow> {
        let id = id.clone();
        self.run(Access::Read, move |ctx| flow_ops::load_flow(ctx, &id))
            .await
    }

    async fn flow_list(&self, params: &FlowListParams) -> Result<FlowPage> {
        if !(1..=LIST_LIMIT_MAX).contains(&params.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be 1..={LIST_LIMIT_MAX}, got {}", params.limit),
            ));
        }
        let params = params.clone();
        self.run(Access::Read, move |ctx| flows::list(ctx.conn, &params))
            .await
    }

    async fn flow_add_nodes(&self, id: &FlowId, spec: &FlowSpec) -> Result<Flow> {
        let (id, spec) = (id.clone(), spec.clone());
        self.run(Access::Write, move |ctx| {
            flow_ops::add_nodes(ctx, &id, &spec)
        })
        .await
    }

    async fn flow_cancel(&self, id: &FlowId) -> Result<Flow> {
        let id = id.clone();
        self.run(Access::Write, move |ctx| flow_ops::cancel(ctx, &id))
            .await
    }

    async fn flow_reconcile(
        &self,
        partition: PartitionId,
        cursor: Option<&str>,
        max: u32,
    ) -> Result<ReconcileReport> {
        let cursor = cursor.map(str::to_owned);
        self.run(Access::Write, move |ctx| {
            flow_ops::reconcile(ctx, partition, cursor.as_deref(), max)
        })
        .await
    }

    fn due_hints(&self) -> Option<broadcast::Receiver<DueHint>> {
        Some(self.db.subscribe())
    }

    fn events(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.db.subscribe_events())
    }
}
