//! The worker runtime: claim tasks, run their handlers, heartbeat, report.
//!
//! # Definitions
//!
//! - **Slot**: one of `concurrency` semaphore permits. A task holds one from
//!   its claim until its outcome is reported, so at most `concurrency`
//!   handlers run at once.
//! - **Claim loop**: waits for a free slot, takes every free slot (at most
//!   `CLAIM_MAX`), and claims that many tasks in one call that waits up to
//!   `claim_wait` for the first one (an HTTP long poll, or a sleep on store
//!   events in process). Each task runs in its own tokio task.
//! - **Heartbeat loop**: one per worker. Every `heartbeat_interval` (a
//!   third of the lease by default) it renews the lease of every running
//!   task in one pass, concurrently, each call bounded by the interval.
//! - **Completer**: one per worker. A handler's result is written through
//!   it: whatever waits when it is free goes in one
//!   `Transport::complete_many_quietly` (in process: one store call, so the
//!   tasks of one claim complete together), each task getting its own
//!   outcome. It never waits on a timer, so an idle worker's result goes out
//!   at once.
//! - **Cancellation signal**: raised on a task's [`TaskContext`] when a
//!   heartbeat answers `cancel_requested` ([`CancelReason::Cancelled`]),
//!   when a worker write answers `lease_lost` (`LeaseLost`, or `Cancelled`
//!   when a read shows the execution was cancelled), when heartbeats fail
//!   until the lease must have lapsed (`LeaseLost`), or when shutdown's
//!   grace runs out (`Shutdown`).
//! - **Release**: handing a task back unfinished (`Transport::release`); the
//!   execution is `waiting` again at once and the attempt, ended
//!   `released`, counts against nothing. A stopping worker releases what it
//!   will not finish rather than leave it to lapse.
//!
//! # Invariants
//!
//! - At most `concurrency` handlers run; a claim never asks for more tasks
//!   than free slots.
//! - Every loop and wait is bounded: claims by `claim_wait`, heartbeats by
//!   the interval, retries of a report by the lease, shutdown by the grace
//!   period (plus `ABORT_WAIT` for handlers to unwind and
//!   `RELEASE_WAIT_MAX` for their releases).
//! - A task is released only once its handler has stopped: another worker
//!   may claim it at once, and two handlers must not run it side by side.
//! - A handler panic is caught (the handler runs in its own tokio task) and
//!   fails the attempt retryably; it never stops the worker.
//!
//! # Shutdown
//!
//! [`WorkerHandle::shutdown`] (or the end of [`Worker::run_until`]'s
//! future) stops claiming at once and waits up to `shutdown_grace` for the
//! running handlers, heartbeating them meanwhile and reporting each
//! outcome. Handlers still running when the grace period ends see
//! [`CancelReason::Shutdown`] and are aborted; once a handler's task has
//! ended (within `ABORT_WAIT`) the worker releases its task, so it is
//! claimable again at once and the attempt costs nothing. A claim that
//! answers after shutdown began has its tasks released unstarted. A claim
//! still waiting is dropped, which ends the long poll; a task the store
//! grants in that moment is released by the transport (in process) or by
//! the server (over HTTP). Only an answer already on the wire when the
//! connection closes is lost: that task lapses one lease later, costing an
//! attempt as a crash would.

mod builder;
mod completer;
mod context;
mod error;
mod heartbeat;
mod metrics;
mod release;
mod task;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use weft_api::{ClaimRequest, TaskView};
use weft_core::{Error, Result, CLAIM_MAX};

pub use builder::{
    WorkerBuilder, CLAIM_WAIT_DEFAULT, CONCURRENCY_DEFAULT, CONCURRENCY_MAX, LEASE_DEFAULT,
    SHUTDOWN_GRACE_DEFAULT,
};
pub use context::{CancelReason, SuspendOutcome, TaskContext};
pub use error::WorkerError;
pub use metrics::WorkerMetrics;

use builder::WorkerConfig;
use context::{CancelSignal, SuspendedFlag};
use metrics::{bump, Counters};
use release::{release_unstarted, RELEASE_WAIT_MAX};

use crate::transport::SharedTransport;

/// How long aborted handlers get to unwind at the end of shutdown.
const ABORT_WAIT: Duration = Duration::from_secs(1);
/// Bounds of the pause after a failed claim; it doubles per failure.
const CLAIM_RETRY_MIN: Duration = Duration::from_millis(100);
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(5);
/// The shortest time between two claims that found nothing, so a worker
/// whose claims do not wait (`claim_wait` zero, or a server answering early
/// while it shuts down) does not spin.
const CLAIM_EMPTY_INTERVAL_MIN: Duration = Duration::from_millis(50);

type HandlerFuture = Pin<Box<dyn Future<Output = std::result::Result<Value, WorkerError>> + Send>>;
/// A handler as the worker stores it.
type Handler = Arc<dyn Fn(TaskContext) -> HandlerFuture + Send + Sync>;

/// A running task as the heartbeat loop and the reporter see it.
#[derive(Debug)]
struct InFlight {
    execution_id: String,
    epoch: u64,
    signal: CancelSignal,
    /// Raised when the handler suspended the execution: the lease is over,
    /// so heartbeats stop and nothing is reported.
    suspended: SuspendedFlag,
    /// When the lease lapses unless renewed, by this process's clock.
    expires_at: Instant,
    /// `false` once the lease is known lost: heartbeats stop.
    heartbeating: bool,
}

/// What the claim loop, the heartbeat loop and every task share.
struct Shared {
    transport: SharedTransport,
    config: WorkerConfig,
    handlers: HashMap<String, Handler>,
    fallback: Option<Handler>,
    counters: Counters,
    slots: Arc<Semaphore>,
    /// Running tasks by lease id (an execution re-claimed by this worker
    /// after a lapse has a new lease, so two attempts never collide).
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// Set once shutdown's grace period has run out: each runner then
    /// aborts its handler and releases its task.
    grace_over: watch::Sender<bool>,
    /// Writes the handlers' results, several at once when they wait together.
    completer: completer::Completer,
}

impl Shared {
    fn in_flight(&self) -> MutexGuard<'_, HashMap<String, InFlight>> {
        // No code panics while holding the lock; recover the map if one did.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn handler_for(&self, kind: &str) -> Option<Handler> {
        self.handlers
            .get(kind)
            .or(self.fallback.as_ref())
            .map(Arc::clone)
    }

    /// The kinds with a handler, sorted, for messages.
    fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    fn metrics(&self) -> WorkerMetrics {
        let running = u64::try_from(self.in_flight().len()).unwrap_or(u64::MAX);
        self.counters.snapshot(running)
    }

    fn claim_request(&self, max: u32) -> ClaimRequest {
        ClaimRequest {
            worker_id: self.config.worker_id.clone(),
            lanes: self.config.lanes.clone(),
            capabilities: self.config.capabilities.clone(),
            max,
            lease_ms: self.config.lease_ms(),
            wait_ms: i64::try_from(self.config.claim_wait.as_millis()).unwrap_or(0),
        }
    }

    /// Records that the lease of `lease_id` was lost for `reason` (or the
    /// execution cancelled): stops its heartbeats, raises its signal, and
    /// counts it once.
    fn lose(&self, lease_id: &str, signal: &CancelSignal, reason: CancelReason) {
        if let Some(entry) = self.in_flight().get_mut(lease_id) {
            entry.heartbeating = false;
        }
        if signal.raise(reason) {
            match reason {
                CancelReason::Cancelled => bump(&self.counters.cancelled, 1),
                CancelReason::LeaseLost => bump(&self.counters.lease_lost, 1),
                // Raised by `drain`, not here; a release is counted when the
                // store accepts it.
                CancelReason::Shutdown => {}
            }
        }
    }

    /// After a `lease_lost` answer: was the execution cancelled, or did the
    /// lease lapse? One read tells; a failed read says `LeaseLost`.
    async fn lost_reason(&self, execution_id: &str) -> CancelReason {
        match self.transport.get(execution_id).await {
            Ok(view) if view.state == weft_core::State::Cancelled => CancelReason::Cancelled,
            _ => CancelReason::LeaseLost,
        }
    }
}

/// A configured worker, not yet running. Build one with [`Worker::builder`].
pub struct Worker {
    shared: Shared,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.shared.config.worker_id)
            .field("lanes", &self.shared.config.lanes)
            .field("kinds", &self.shared.kinds())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Settings and handlers for a worker over `transport`.
    pub fn builder(transport: impl Into<SharedTransport>) -> WorkerBuilder {
        WorkerBuilder::new(transport.into())
    }

    fn from_parts(
        transport: SharedTransport,
        config: WorkerConfig,
        handlers: HashMap<String, Handler>,
        fallback: Option<Handler>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.concurrency as usize));
        let completer = completer::Completer::new(config.concurrency as usize);
        Self {
            shared: Shared {
                transport,
                config,
                handlers,
                fallback,
                counters: Counters::default(),
                slots,
                in_flight: Mutex::new(HashMap::new()),
                grace_over: watch::Sender::new(false),
                completer,
            },
        }
    }

    /// The id recorded on this worker's attempts.
    pub fn worker_id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// Starts claiming on the current tokio runtime. Dropping the handle
    /// shuts the worker down as [`WorkerHandle::shutdown`] does, in the
    /// background.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    #[must_use = "dropping the handle shuts the worker down"]
    pub fn start(self) -> WorkerHandle {
        let shared = Arc::new(self.shared);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(Arc::clone(&shared), stop_rx));
        WorkerHandle {
            shared,
            stop,
            task: Some(task),
            outcome: None,
        }
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully (see the
    /// module docs) and returns the final counters.
    ///
    /// # Errors
    ///
    /// The error that stopped the worker early: a claim refused for a
    /// reason no retry fixes (a wrong API token, a rejected setting).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<WorkerMetrics> {
        let mut handle = self.start();
        tokio::select! {
            () = shutdown => {}
            () = handle.stopped() => {}
        }
        handle.shutdown().await
    }
}

/// A running worker. See [`Worker::start`].
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
    outcome: Option<Result<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// The id recorded on this worker's attempts.
    pub fn worker_id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// The worker's counters now.
    pub fn metrics(&self) -> WorkerMetrics {
        self.shared.metrics()
    }

    /// Resolves when the worker stops by itself, which it does only on an
    /// error no retry fixes; [`WorkerHandle::shutdown`] then returns it.
    pub async fn stopped(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) => Err(Error::Internal(format!("the worker task failed: {e}"))),
            };
            self.task = None;
            self.outcome = Some(outcome);
        }
    }

    /// Stops claiming, waits up to the grace period for running handlers
    /// (reporting their outcomes), hands the rest back with a release, and
    /// returns the final counters.
    ///
    /// In detail: claiming stops at once. Running handlers get up to
    /// [`WorkerBuilder::shutdown_grace`] to finish; they are heartbeated
    /// meanwhile and their outcomes reported as usual. Handlers still running
    /// when the grace period ends see [`CancelReason::Shutdown`] and are
    /// aborted (at their next `.await`); as soon as each has stopped, its
    /// task is released: `waiting` again at once, its attempt ended
    /// `released`, nothing counted against `max_attempts` (see
    /// [`WorkerMetrics::released`]). A handler that returns an error once
    /// told to stop is released the same way (a result it returns is still
    /// reported). A handler that does not stop within a second (blocking
    /// code cannot be aborted) is not released, since another worker could
    /// then run it alongside; its lease lapses.
    ///
    /// A claim that answers after shutdown began has its tasks released
    /// without running them. A claim still waiting is dropped, ending its
    /// long poll; a task the store grants in that same moment is released
    /// for this worker by the transport or the server, except an answer
    /// already on the wire as the connection closes, which lapses one lease
    /// later. Shutdown takes at most the grace period plus about six seconds
    /// (handlers unwinding, releases answering).
    ///
    /// # Errors
    ///
    /// The error that had stopped the worker by itself, if one did.
    pub async fn shutdown(mut self) -> Result<WorkerMetrics> {
        self.stop.send_replace(true);
        self.stopped().await;
        let metrics = self.shared.metrics();
        match self.outcome.take() {
            Some(Err(e)) => Err(e),
            _ => Ok(metrics),
        }
    }
}

/// Resolves once `stop` says so, or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let (beats_stop, beats_stop_rx) = watch::channel(false);
    let beats = tokio::spawn(heartbeat::run(Arc::clone(&shared), beats_stop_rx));
    let completing = shared
        .completer
        .take_receiver()
        .map(|receiver| tokio::spawn(completer::run(Arc::clone(&shared.transport), receiver)));
    let mut tasks = JoinSet::new();
    tracing::info!(
        worker_id = %shared.config.worker_id,
        lanes = ?shared.config.lanes,
        transport = %shared.transport.describe(),
        "worker started"
    );
    let outcome = claim_loop(&shared, &mut tasks, &mut stop).await;
    drain(&shared, &mut tasks).await;
    // Every task has had its answer: nothing is left for the completer.
    if let Some(completing) = completing {
        completing.abort();
    }
    beats_stop.send_replace(true);
    let _ = beats.await;
    tracing::info!(worker_id = %shared.config.worker_id, "worker stopped");
    outcome
}

/// Whether a failed claim would fail the same way again: bad settings or
/// credentials. Anything else (unreachable, internal) is retried.
fn claim_error_is_fatal(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidArgument { .. } | Error::InvalidToken | Error::NotFound { .. }
    )
}

fn claim_retry_delay(failures: u32) -> Duration {
    let doubled = CLAIM_RETRY_MIN.saturating_mul(1 << failures.min(10));
    let capped = doubled.min(CLAIM_RETRY_MAX);
    capped.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// One free slot (waiting for it), plus every other free one up to
/// `CLAIM_MAX`, as one permit.
async fn take_slots(slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    let mut permit = Arc::clone(slots).acquire_owned().await.ok()?;
    let more = slots.available_permits().min(CLAIM_MAX as usize - 1);
    if more > 0 {
        let count = u32::try_from(more).unwrap_or(0);
        if let Ok(extra) = Arc::clone(slots).try_acquire_many_owned(count) {
            permit.merge(extra);
        }
    }
    Some(permit)
}

async fn claim_loop(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut failures = 0u32;
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = stopped(stop) => return Ok(()),
            permit = take_slots(&shared.slots) => permit,
        };
        let Some(permit) = permit else {
            return Err(Error::Internal("the worker's slots were closed".into()));
        };
        let max = u32::try_from(permit.num_permits()).unwrap_or(1);
        let request = shared.claim_request(max);
        let claim_started = Instant::now();
        let claimed = tokio::select! {
            // An answer that is ready wins over a stop that is too, so the
            // tasks granted in that moment are released, not dropped.
            biased;
            claimed = shared.transport.claim(&request) => claimed,
            () = stopped(stop) => return Ok(()),
        };
        match claimed {
            Ok(batch) if !batch.is_empty() && *stop.borrow() => {
                release_after_stop(shared, tasks, batch);
                return Ok(());
            }
            Ok(batch) if batch.is_empty() => {
                failures = 0;
                drop(permit);
                tokio::select! {
                    biased;
                    () = stopped(stop) => return Ok(()),
                    () = tokio::time::sleep_until(claim_started + CLAIM_EMPTY_INTERVAL_MIN) => {}
                }
            }
            Ok(batch) => {
                failures = 0;
                spawn_batch(shared, tasks, batch, permit);
            }
            Err(e) if claim_error_is_fatal(&e) => {
                tracing::error!(error = %e, "claim refused; the worker stops");
                return Err(e);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = claim_retry_delay(failures);
                tracing::warn!(error = %e, ?delay, "claim failed; retrying");
                tokio::select! {
                    biased;
                    () = stopped(stop) => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Tasks a claim answered with after shutdown began: released unstarted,
/// in the background (`drain` waits for it).
fn release_after_stop(shared: &Arc<Shared>, tasks: &mut JoinSet<()>, batch: Vec<TaskView>) {
    bump(
        &shared.counters.claimed,
        u64::try_from(batch.len()).unwrap_or(u64::MAX),
    );
    tracing::info!(
        count = batch.len(),
        "a claim answered after shutdown began; releasing its tasks"
    );
    tasks.spawn(release_unstarted(Arc::clone(shared), batch));
}

fn spawn_batch(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    batch: Vec<TaskView>,
    mut permit: OwnedSemaphorePermit,
) {
    bump(
        &shared.counters.claimed,
        u64::try_from(batch.len()).unwrap_or(u64::MAX),
    );
    let mut extra = Vec::new();
    for task in batch {
        // The claim asked for as many tasks as the permit holds; a server
        // that sends more gets the extra ones back by release.
        let Some(slot) = permit.split(1) else {
            tracing::warn!(
                execution_id = %task.execution_id,
                "claim returned more tasks than asked; releasing it"
            );
            extra.push(task);
            continue;
        };
        let signal = CancelSignal::new();
        let suspended = SuspendedFlag::default();
        shared.in_flight().insert(
            task.lease.id.clone(),
            InFlight {
                execution_id: task.execution_id.clone(),
                epoch: task.lease.epoch,
                signal: signal.clone(),
                suspended: suspended.clone(),
                expires_at: Instant::now() + shared.config.lease,
                heartbeating: true,
            },
        );
        let running = task::run(Arc::clone(shared), task, signal, suspended, slot);
        tasks.spawn(running);
    }
    if !extra.is_empty() {
        tasks.spawn(release_unstarted(Arc::clone(shared), extra));
    }
}

/// Waits up to the grace period for running tasks; then raises `Shutdown`
/// on the rest and lets each runner abort its handler and release its task
/// (see `task::run`), within `ABORT_WAIT + RELEASE_WAIT_MAX`.
async fn drain(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) {
    let grace = shared.config.shutdown_grace;
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_done).await.is_ok() {
        return;
    }
    let running: Vec<CancelSignal> = shared
        .in_flight()
        .values()
        .map(|entry| entry.signal.clone())
        .collect();
    for signal in &running {
        signal.raise(CancelReason::Shutdown);
    }
    tracing::warn!(
        count = running.len(),
        "shutdown grace ran out; stopping the running handlers and releasing their tasks"
    );
    shared.grace_over.send_replace(true);
    let handed_back = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(ABORT_WAIT + RELEASE_WAIT_MAX, handed_back)
        .await
        .is_err()
    {
        // Runners still reporting or releasing by now will not finish in a
        // useful time; their leases lapse.
        tasks.abort_all();
        let unwound = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(ABORT_WAIT, unwound).await;
    }
    shared.in_flight().clear();
}
