//! Starting and stopping an engine instance.
//!
//! Definitions: an instance is two tasks: the ownership loop, which publishes
//! the owned partitions on a `watch` channel, and the timer drain runner,
//! which sweeps them. An [`EngineHandle`] controls both.
//!
//! Invariants: a graceful `shutdown` stops both loops (letting the current
//! pass finish), then releases every partition in the store; dropping the
//! handle instead aborts the tasks and releases nothing, so the leases lapse
//! the way a crashed process's do.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use weft_core::{PartitionId, Result, Store};

use crate::config::EngineConfig;
use crate::metrics::{EngineMetrics, LoopMetrics};
use crate::ownership::{leave, OwnershipLoop};
use crate::runner::{Runner, RunnerConfig, RunnerInputs};
use crate::scanners::{FlowProjector, TimerDrain, FLOW_PROJECTOR_PAGE_MAX_DEFAULT};

/// Starts engine instances; see [`Engine::start`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Engine;

impl Engine {
    /// Validates `config` and spawns the engine's loops on the current tokio
    /// runtime. The first rebalance and the first ticks of the granted
    /// partitions happen at once.
    ///
    /// # Panics
    /// When `config` is invalid (check it first with
    /// [`EngineConfig::validate`], or use [`Engine::try_start`]) or when called
    /// outside a tokio runtime.
    pub fn start(store: Arc<dyn Store>, config: EngineConfig) -> EngineHandle {
        match Self::try_start(store, config) {
            Ok(handle) => handle,
            Err(error) => panic!("invalid engine config: {error}"),
        }
    }

    /// Like [`Engine::start`], but returns the validation error instead of
    /// panicking.
    ///
    /// # Errors
    /// `InvalidArgument`, naming the field, when `config` is out of bounds.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn try_start(store: Arc<dyn Store>, config: EngineConfig) -> Result<EngineHandle> {
        config.validate()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (owned_tx, owned_rx) = watch::channel(BTreeSet::new());
        let metrics = Arc::new(Metrics::default());
        // Subscribe before anything runs, so no hint sent after the first
        // tick is missed.
        let hints = store.due_hints();
        let hints_supported = hints.is_some();
        let ownership = OwnershipLoop::new(
            store.clone(),
            config.instance_id.clone(),
            config.ownership_lease_ms,
            config.store_call_timeout,
            owned_tx,
            metrics.ownership.clone(),
            shutdown_rx.clone(),
        );
        let drain = TimerDrain::new(store.clone(), config.tick_batch_max, config.drain_ticks_max);
        let runner = Runner::new(
            drain,
            RunnerConfig {
                idle_poll_max: config.idle_poll_max,
                pass_timeout: config.store_call_timeout,
            },
            metrics.timer_drain.clone(),
            RunnerInputs {
                owned: owned_rx.clone(),
                hints,
                shutdown: shutdown_rx.clone(),
            },
        );
        info!(
            instance_id = %config.instance_id,
            ownership_lease_ms = config.ownership_lease_ms,
            hints_supported,
            "engine starting"
        );
        let mut tasks = vec![tokio::spawn(ownership.run()), tokio::spawn(runner.run())];
        if store.supports_flows() {
            let projector = FlowProjector::new(
                store.clone(),
                FLOW_PROJECTOR_PAGE_MAX_DEFAULT,
                config.flow_projector_interval,
            );
            let runner = Runner::new(
                projector,
                RunnerConfig {
                    idle_poll_max: config.flow_projector_interval,
                    pass_timeout: config.store_call_timeout,
                },
                metrics.flow_projector.clone(),
                RunnerInputs {
                    owned: owned_rx.clone(),
                    hints: None,
                    shutdown: shutdown_rx.clone(),
                },
            );
            tasks.push(tokio::spawn(runner.run()));
        }
        Ok(EngineHandle {
            store,
            config,
            owned: owned_rx,
            shutdown: shutdown_tx,
            tasks,
            metrics,
        })
    }
}

/// The live counters of every loop.
#[derive(Debug, Default)]
struct Metrics {
    ownership: Arc<LoopMetrics>,
    timer_drain: Arc<LoopMetrics>,
    flow_projector: Arc<LoopMetrics>,
}

/// Controls a running engine instance. Dropping it without
/// [`EngineHandle::shutdown`] aborts the loops and leaves the partition
/// leases to lapse, like a crash.
pub struct EngineHandle {
    store: Arc<dyn Store>,
    config: EngineConfig,
    owned: watch::Receiver<BTreeSet<PartitionId>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("config", &self.config)
            .field("owned", &*self.owned.borrow())
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// This instance's id in the store's ownership table.
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.config.instance_id
    }

    /// The configuration the engine runs with.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The partitions this instance holds now, in id order.
    #[must_use]
    pub fn owned_partitions(&self) -> Vec<PartitionId> {
        self.owned.borrow().iter().copied().collect()
    }

    /// A receiver that sees every change of the owned set, for callers that
    /// want to wait on ownership rather than poll it.
    #[must_use]
    pub fn owned_partitions_watch(&self) -> watch::Receiver<BTreeSet<PartitionId>> {
        self.owned.clone()
    }

    /// A snapshot of every loop's counters.
    #[must_use]
    pub fn metrics(&self) -> EngineMetrics {
        let owned = self.owned.borrow().len();
        EngineMetrics {
            owned_partitions: u32::try_from(owned).unwrap_or(u32::MAX),
            ownership: self.metrics.ownership.snapshot(),
            timer_drain: self.metrics.timer_drain.snapshot(),
            flow_projector: self.metrics.flow_projector.snapshot(),
        }
    }

    /// Stops the loops (the pass in progress finishes), then gives every
    /// partition up in the store so other instances take over at their next
    /// renewal. If the store cannot be told, the error is logged and the
    /// leases lapse on their own within one ownership lease.
    pub async fn shutdown(mut self) {
        let instance_id = self.config.instance_id.clone();
        self.shutdown.send_replace(true);
        // Each loop is waiting on at most one store call, itself bounded by
        // the call timeout; the margin covers scheduling.
        let join_timeout = self.config.store_call_timeout + Duration::from_millis(100);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(join_timeout, task).await.is_err() {
                warn!(%instance_id, "engine loop did not stop in time; aborting it");
                abort.abort();
            }
        }
        let left = leave(
            self.store.as_ref(),
            &instance_id,
            self.config.ownership_lease_ms,
            self.config.store_call_timeout,
        )
        .await;
        match left {
            Ok(()) => info!(%instance_id, "engine stopped; partitions released"),
            Err(error) => warn!(%instance_id, %error, "engine stopped; leases left to lapse"),
        }
    }

    /// Aborts the loops without releasing anything, as a crash would; the
    /// same as dropping the handle, spelled out for tests and callers.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
