//! [`TaskContext`]: what a handler knows about its task, and the signal that
//! tells it to stop.
//!
//! Definitions: the cancellation signal is a `watch` cell holding
//! `Option<CancelReason>`, shared by the context (and its clones) and the
//! worker. It is raised at most once; the first reason sticks.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use weft_api::TaskView;

use super::WorkerError;

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

#[derive(Debug)]
struct Inner {
    task: TaskView,
    worker_id: String,
    signal: CancelSignal,
}

impl TaskContext {
    pub(crate) fn new(task: TaskView, worker_id: String, signal: CancelSignal) -> Self {
        Self {
            inner: Arc::new(Inner {
                task,
                worker_id,
                signal,
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

    #[tokio::test]
    async fn first_reason_sticks_and_wakes_clones() {
        let signal = CancelSignal::new();
        let ctx = TaskContext::new(task(), "w".into(), signal.clone());
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
        let ctx = TaskContext::new(task(), "w".into(), CancelSignal::new());
        assert_eq!(ctx.payload_as::<Good>().unwrap().n, 3);
        let err = ctx.payload_as::<Bad>().unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(err.kind(), Some("bad_payload"));
        assert_eq!(ctx.attempt(), 2);
    }
}
