//! [`WorkerBuilder`]: a worker's settings and handlers, checked once by
//! [`WorkerBuilder::build`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use weft_api::CLAIM_WAIT_MS_MAX;
use weft_core::{check_name, ClaimParams, Error, Result, KIND_LEN_MAX, LEASE_MS_DEFAULT};

use super::{Handler, TaskContext, Worker, WorkerError};
use crate::transport::SharedTransport;

/// Handlers running at once when the builder names no concurrency.
pub const CONCURRENCY_DEFAULT: u32 = 10;
/// The most handlers one worker may run at once.
pub const CONCURRENCY_MAX: u32 = 10_000;
/// The lease a worker takes when the builder names none: 30 s.
pub const LEASE_DEFAULT: Duration = Duration::from_millis(LEASE_MS_DEFAULT.unsigned_abs());
/// How long an idle worker's claim waits for work before asking again.
pub const CLAIM_WAIT_DEFAULT: Duration = Duration::from_secs(20);
/// How long shutdown waits for running handlers before aborting them and
/// releasing their tasks.
pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(30);

/// A worker's settings, checked.
#[derive(Clone, Debug)]
pub(crate) struct WorkerConfig {
    pub(crate) worker_id: String,
    pub(crate) lanes: Vec<String>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) concurrency: u32,
    pub(crate) lease: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) claim_wait: Duration,
    pub(crate) shutdown_grace: Duration,
}

impl WorkerConfig {
    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Settings and handlers of a [`Worker`]; see [`Worker::builder`]. Every
/// setting has a default except the lanes and at least one handler.
#[must_use]
pub struct WorkerBuilder {
    transport: SharedTransport,
    worker_id: Option<String>,
    lanes: Vec<String>,
    capabilities: Vec<String>,
    concurrency: u32,
    lease: Duration,
    heartbeat_interval: Option<Duration>,
    claim_wait: Duration,
    shutdown_grace: Duration,
    handlers: HashMap<String, Handler>,
    fallback: Option<Handler>,
    problem: Option<Error>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("transport", &self.transport.describe())
            .field("lanes", &self.lanes)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Wraps a typed handler into the worker's boxed form.
fn erase<F, Fut, T>(handler: F) -> Handler
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<T, WorkerError>> + Send + 'static,
    T: Serialize + 'static,
{
    Arc::new(move |ctx| {
        let future = handler(ctx);
        Box::pin(async move {
            let value = future.await?;
            serde_json::to_value(value).map_err(|e| {
                WorkerError::permanent(format!("the handler's result is not JSON: {e}"))
                    .with_kind("bad_result")
            })
        })
    })
}

impl WorkerBuilder {
    pub(crate) fn new(transport: SharedTransport) -> Self {
        Self {
            transport,
            worker_id: None,
            lanes: Vec::new(),
            capabilities: Vec::new(),
            concurrency: CONCURRENCY_DEFAULT,
            lease: LEASE_DEFAULT,
            heartbeat_interval: None,
            claim_wait: CLAIM_WAIT_DEFAULT,
            shutdown_grace: SHUTDOWN_GRACE_DEFAULT,
            handlers: HashMap::new(),
            fallback: None,
            problem: None,
        }
    }

    /// The worker's name, recorded on each attempt; by default
    /// `HOST-PID-RANDOM`.
    pub fn worker_id(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Claims from these lanes (added to any named before).
    pub fn lanes<I, S>(mut self, lanes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.lanes.extend(lanes.into_iter().map(Into::into));
        self
    }

    /// Advertises these capabilities (added to any named before); the worker
    /// gets only executions that require a subset of them.
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities
            .extend(capabilities.into_iter().map(Into::into));
        self
    }

    /// Runs at most `n` handlers at once, 1 ..= [`CONCURRENCY_MAX`]; see
    /// [`CONCURRENCY_DEFAULT`].
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// The lease each claim takes and each heartbeat renews; see
    /// [`LEASE_DEFAULT`]. A handler that stops heartbeating (a dead worker)
    /// is re-queued about one lease later.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// As [`WorkerBuilder::lease`], in milliseconds.
    pub fn lease_ms(self, lease_ms: u64) -> Self {
        self.lease(Duration::from_millis(lease_ms))
    }

    /// How often the worker renews the leases of all its running tasks in
    /// one pass; by default a third of the lease. Must be shorter than it.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// How long an idle worker's claim waits for work (a long poll over
    /// HTTP, a sleep on store events in process), at most 60 s; see
    /// [`CLAIM_WAIT_DEFAULT`]. New work is picked up as soon as it appears
    /// either way; this only bounds each wait.
    pub fn claim_wait(mut self, wait: Duration) -> Self {
        self.claim_wait = wait;
        self
    }

    /// How long shutdown waits for running handlers; see
    /// [`SHUTDOWN_GRACE_DEFAULT`] and [`crate::WorkerHandle::shutdown`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Runs `handler` for tasks of `kind`. `Ok(value)` completes the
    /// execution with `value` as its result; `Err` fails the attempt
    /// (retried unless the error is permanent); a panic fails the attempt,
    /// retryably, and the worker goes on.
    pub fn handler<F, Fut, T>(mut self, kind: impl Into<String>, handler: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, WorkerError>> + Send + 'static,
        T: Serialize + 'static,
    {
        let kind = kind.into();
        if let Err(e) = check_name("kind", &kind, KIND_LEN_MAX) {
            self.problem.get_or_insert(e);
        } else if self.handlers.insert(kind.clone(), erase(handler)).is_some() {
            self.problem.get_or_insert(Error::invalid(
                "kind",
                format!("{kind:?} has two handlers; register one"),
            ));
        }
        self
    }

    /// Runs `handler` for every kind that has no handler of its own. Without
    /// one, such tasks fail at once, non-retryably, saying which kinds this
    /// worker handles.
    pub fn fallback_handler<F, Fut, T>(mut self, handler: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, WorkerError>> + Send + 'static,
        T: Serialize + 'static,
    {
        self.fallback = Some(erase(handler));
        self
    }

    /// Checks every setting and builds the worker; call [`Worker::start`] or
    /// [`Worker::run_until`] on it.
    ///
    /// # Errors
    ///
    /// `invalid_argument` naming the setting at fault: no lanes, a bad lane
    /// or capability name, a lease outside 100 ms ..= 1 h, a heartbeat
    /// interval not shorter than the lease, a claim wait over 60 s, a
    /// concurrency of 0, or no handler at all.
    pub fn build(self) -> Result<Worker> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        let config = self.check()?;
        Ok(Worker::from_parts(
            self.transport,
            config,
            self.handlers,
            self.fallback,
        ))
    }

    fn check(&self) -> Result<WorkerConfig> {
        if self.handlers.is_empty() && self.fallback.is_none() {
            return Err(Error::invalid(
                "handlers",
                "register at least one handler (or a fallback handler)",
            ));
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.concurrency) {
            return Err(Error::invalid(
                "concurrency",
                format!("must be 1..={CONCURRENCY_MAX}, got {}", self.concurrency),
            ));
        }
        let lease = self.lease;
        let heartbeat_interval = self.heartbeat_interval.unwrap_or(lease / 3);
        if heartbeat_interval.is_zero() || heartbeat_interval >= lease {
            return Err(Error::invalid(
                "heartbeat_interval",
                format!("must be above 0 and below the lease ({lease:?})"),
            ));
        }
        if self.claim_wait > Duration::from_millis(CLAIM_WAIT_MS_MAX.unsigned_abs()) {
            return Err(Error::invalid(
                "claim_wait",
                format!("must be at most {CLAIM_WAIT_MS_MAX} ms"),
            ));
        }
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        // The store's own check of a claim covers the id, lanes,
        // capabilities and lease bounds; run it now rather than at the
        // first claim.
        let claim = ClaimParams {
            worker_id,
            lanes: self.lanes.clone(),
            capabilities: self.capabilities.clone(),
            max: 1,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        }
        .normalized()?;
        Ok(WorkerConfig {
            worker_id: claim.worker_id,
            lanes: claim.lanes,
            capabilities: claim.capabilities,
            concurrency: self.concurrency,
            lease,
            heartbeat_interval,
            claim_wait: self.claim_wait,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// `HOST-PID-RANDOM`: unique per process, readable in attempt listings.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 64 && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "worker".to_owned());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..0x0100_0000)
    )
}
