//! [`TaskContext`]: what a handler knows about its task, and the signal that
//! tells it to stop.
//!
//! Definitions: the cancellation signal is a `watch` cell holding
//! `Option<CancelReason>`, shared by the context (and its clones) and the
//! worker. It is raised at most once; the first reason sticks. The
//! *suspended flag* is raised by [`TaskContext::suspend`] once the store has
//! suspended the execution: the lease is over, so the worker stops
//! heartbeating it and reports nothing for the attempt.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use weft_api::{SuspendRequest, TaskView, WaitpointTokenView};
use weft_core::waitpoint::SuspendSpec;
use weft_core::{Error, State};

use super::WorkerError;
use crate::transport::SharedTransport;

/// What [`TaskContext::suspend`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum SuspendOutcome {
    /// The execution is suspended and the attempt is over: hand the tokens
    /// out (each delivers its waitpoint's signal through `POST /v1/signals`),
    /// then return from the handler. Whatever it returns is not reported
    /// (`Err(WorkerError::suspended())` suits a typed result). A signal makes
    /// the execution claimable again; that run sees it in
    /// [`TaskContext::signals`].
    Suspended(Vec<WaitpointTokenView>),
    /// Signals buffered before the suspend already satisfy it: the execution
    /// stays active under this lease, and the handler carries on with these
    /// payloads, by waitpoint.
    Satisfied(BTreeMap<String, Value>),
}

/// Raised once the execution is suspended; shared by a task's context and
/// the worker's record of it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SuspendedFlag(Arc<AtomicBool>);

impl SuspendedFlag {
    pub(crate) fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why a running handler is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// An operator (or a flow) cancelled the execution.
    Cancelled,
    /// The worker's lease lapsed or was taken over: another worker may
    /// already run this execution, so nothing this one writes will count.
    LeaseLost,
    /// The worker is shutting down and the grace period ran out: the
    /// handler is aborted at its next `.await`, and the task is released
    /// (handed back to the queue, costing no attempt). An error the handler
    /// returns from now on is not reported; a result still is.
    Shutdown,
}

impl CancelReason {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Cancelled => "cancelled",
            CancelReason::LeaseLost => "lease_lost",
            CancelReason::Shutdown => "shutdown",
        }
    }
}

/// The worker's side of a task's cancellation signal.
#[derive(Clone, Debug)]
pub(crate) struct CancelSignal(Arc<watch::Sender<Option<CancelReason>>>);

impl CancelSignal {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(None)))
    }

    /// Raises the signal; `true` when this call raised it (the first reason
    /// sticks).
    pub(crate) fn raise(&self, reason: CancelReason) -> bool {
        self.0.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn reason(&self) -> Option<CancelReason> {
        *self.0.borrow()
    }
}

/// Everything a handler gets: the task's fields and a cancellation signal.
/// Cheap to clone; clones share the signal.
#[derive(Clone, Debug)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

struct Inner {
    task: TaskView,
    worker_id: String,
    signal: CancelSignal,
    suspended: SuspendedFlag,
    transport: SharedTransport,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("task", &self.task)
            .field("worker_id", &self.worker_id)
            .field("signal", &self.signal)
            .field("suspended", &self.suspended)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    pub(crate) fn new(
        task: TaskView,
        worker_id: String,
        signal: CancelSignal,
        suspended: SuspendedFlag,
        transport: SharedTransport,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                task,
                worker_id,
                signal,
                suspended,
                transport,
            }),
        }
    }

    /// The execution this attempt runs.
    pub fn execution_id(&self) -> &str {
        &self.inner.task.execution_id
    }

    /// The handler name.
    pub fn kind(&self) -> &str {
        &self.inner.task.kind
    }

    /// The lane it was claimed from.
    pub fn lane(&self) -> &str {
        &self.inner.task.lane
    }

    /// The input as JSON.
    pub fn payload(&self) -> &Value {
        &self.inner.task.payload
    }

    /// The input decoded as `T`.
    ///
    /// # Errors
    ///
    /// A non-retryable [`WorkerError`] of kind `bad_payload` when the payload
    /// does not decode: trying again would not change it.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, WorkerError> {
        T::deserialize(&self.inner.task.payload).map_err(|e| {
            WorkerError::permanent(format!(
                "the payload does not fit {}: {e}",
                std::any::type_name::<T>()
            ))
            .with_kind("bad_payload")
        })
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.task.attempt
    }

    /// For a flow member, each upstream node's result by node key (`null`
    /// for an upstream that did not complete); empty otherwise.
    pub fn inputs(&self) -> &BTreeMap<String, Value> {
        &self.inner.task.inputs
    }

    /// The flow, for flow members.
    pub fn flow_id(&self) -> Option<&str> {
        self.inner.task.flow_id.as_deref()
    }

    /// The node key, for flow members.
    pub fn flow_node(&self) -> Option<&str> {
        self.inner.task.flow_node.as_deref()
    }

    /// The payloads of the signals that resumed the execution, by waitpoint
    /// (empty until it has suspended and resumed).
    pub fn signals(&self) -> &BTreeMap<String, Value> {
        &self.inner.task.signals
    }

    /// The payload of one waitpoint's signal, if this run was resumed by it.
    pub fn signal(&self, waitpoint: &str) -> Option<&Value> {
        self.inner.task.signals.get(waitpoint)
    }

    /// Suspends the execution on the waitpoints of `spec`: either it is
    /// suspended and this attempt is over ([`SuspendOutcome::Suspended`],
    /// with one token per waitpoint: hand them out, then return), or
    /// buffered signals already satisfy it and the handler carries on
    /// ([`SuspendOutcome::Satisfied`]).
    ///
    /// # Errors
    ///
    /// A non-retryable `bad_suspend` error for a spec the server refuses; a
    /// retryable one when the suspend could not be recorded (the lease was
    /// lost, Weft was unreachable). Returning it fails the attempt as usual.
    pub async fn suspend(&self, spec: SuspendSpec) -> Result<SuspendOutcome, WorkerError> {
        let task = &self.inner.task;
        let request = SuspendRequest::new(&task.lease.id, task.lease.epoch, &spec);
        let answer = match self
            .inner
            .transport
            .suspend(&task.execution_id, &request)
            .await
        {
            Ok(answer) => answer,
            Err(e @ Error::InvalidArgument { .. }) => {
                return Err(WorkerError::permanent(format!("suspend refused: {e}"))
                    .with_kind("bad_suspend"))
            }
            Err(e) => return Err(WorkerError::from(e)),
        };
        if answer.execution.state == State::Active {
            return Ok(SuspendOutcome::Satisfied(
                answer.signals.unwrap_or_default(),
            ));
        }
        self.inner.suspended.raise();
        Ok(SuspendOutcome::Suspended(answer.waitpoints))
    }

    /// Whether [`TaskContext::suspend`] suspended the execution, ending this
    /// attempt.
    pub fn is_suspended(&self) -> bool {
        self.inner.suspended.is_raised()
    }

    /// The worker running the attempt.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The task as claimed, lease included.
    pub fn task(&self) -> &TaskView {
        &self.inner.task
    }

    /// Whether the handler has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.signal.reason().is_some()
    }

    /// Why the handler was asked to stop, if it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.inner.signal.reason()
    }

    /// Resolves once the handler is asked to stop: the execution was
    /// cancelled, the lease was lost, or shutdown's grace period ran out.
    /// Use it in `tokio::select!` beside the work. The worker learns of a
    /// cancel at the next heartbeat, a third of the lease at most.
    pub async fn cancelled(&self) -> CancelReason {
        let mut receiver = self.inner.signal.0.subscribe();
        if let Ok(current) = receiver.wait_for(Option::is_some).await {
            if let Some(reason) = *current {
                return reason;
            }
        }
        // The sender lives as long as this context, so the wait cannot end
        // without a reason; never resolve rather than invent one.
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    //! The signal is raised once and wakes every clone.
    use super::*;

    fn task() -> TaskView {
        serde_json::from_value(serde_json::json!({
            "execution_id": "ex_1", "kind": "k", "lane": "default",
            "payload": {"n": 3}, "attempt": 2,
            "lease": {"id": "l", "epoch": 1, "expires_at": "1970-01-01T00:00:00.000Z"},
            "inputs": {}, "flow_id": null, "flow_node": null
        }))
        .unwrap()
    }

    fn context(signal: CancelSignal) -> TaskContext {
        let store = weft_sqlite::SqliteStore::open(weft_sqlite::SqliteConfig::memory()).unwrap();
        let transport = crate::DirectTransport::new(Arc::new(store));
        TaskContext::new(
            task(),
            "w".into(),
            signal,
            SuspendedFlag::default(),
            Arc::new(transport),
        )
    }

    #[tokio::test]
    async fn first_reason_sticks_and_wakes_clones() {
        let signal = CancelSignal::new();
        let ctx = context(signal.clone());
        let clone = ctx.clone();
        let waiter = tokio::spawn(async move { clone.cancelled().await });
        assert!(!ctx.is_cancelled());
        assert!(signal.raise(CancelReason::Cancelled));
        assert!(!signal.raise(CancelReason::LeaseLost));
        assert_eq!(waiter.await.unwrap(), CancelReason::Cancelled);
        assert_eq!(ctx.cancel_reason(), Some(CancelReason::Cancelled));
    }

    #[test]
    fn payload_as_decodes_or_fails_permanently() {
        #[derive(serde::Deserialize)]
        struct Good {
            n: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Bad {
            missing: String,
        }
        let ctx = context(CancelSignal::new());
        assert_eq!(ctx.payload_as::<Good>().unwrap().n, 3);
        let err = ctx.payload_as::<Bad>().unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(err.kind(), Some("bad_payload"));
        assert_eq!(ctx.attempt(), 2);
        assert!(ctx.signals().is_empty());
        assert_eq!(ctx.signal("approval"), None);
    }
}
