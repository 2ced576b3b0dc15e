//! The completer: one loop per worker that writes its handlers' results.
//!
//! Definitions: a task hands its completion to the loop and waits for that
//! item's own answer. The loop writes what is waiting when it is free, up
//! to `COMPLETE_BATCH_MAX` at once, with `Transport::complete_many_quietly`
//! (the direct transport: one store call, so one call per partition).
//!
//! Invariants: no completion waits for a timer, only for the write before
//! it, so an idle worker's completion goes out at once and a busy worker's
//! go out together; each item gets its own outcome (one lost lease refuses
//! that item only); the queue holds at most one item per handler slot.

use std::sync::{Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};
use weft_api::CompleteRequest;
use weft_core::{Error, Result};

use crate::transport::SharedTransport;

/// Most completions one write carries.
pub(super) const COMPLETE_BATCH_MAX: usize = 100;

/// One completion waiting for the loop, and where its answer goes.
pub(super) struct Pending {
    execution_id: String,
    request: CompleteRequest,
    answer: oneshot::Sender<Result<()>>,
}

/// The tasks' side of the loop.
pub(super) struct Completer {
    queue: mpsc::Sender<Pending>,
    /// Taken by the loop when the worker starts.
    receiver: Mutex<Option<mpsc::Receiver<Pending>>>,
}

impl Completer {
    /// A completer whose queue holds up to `slots` completions.
    pub(super) fn new(slots: usize) -> Self {
        let (queue, receiver) = mpsc::channel(slots.max(1));
        Self {
            queue,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// The loop's end of the queue; `None` once taken.
    pub(super) fn take_receiver(&self) -> Option<mpsc::Receiver<Pending>> {
        self.receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Completes `execution_id` through the loop; the item's own outcome.
    pub(super) async fn complete(
        &self,
        execution_id: &str,
        request: &CompleteRequest,
    ) -> Result<()> {
        let stopped = || Error::Unavailable("the worker's completer has stopped".into());
        let (answer, outcome) = oneshot::channel();
        let pending = Pending {
            execution_id: execution_id.to_owned(),
            request: request.clone(),
            answer,
        };
        self.queue.send(pending).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Writes completions until every sender is gone: whatever is queued when
/// the loop is free, in one `complete_many_quietly`.
pub(super) async fn run(transport: SharedTransport, mut receiver: mpsc::Receiver<Pending>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < COMPLETE_BATCH_MAX {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (items, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.execution_id, p.request), p.answer))
            .unzip();
        let outcomes = match transport.complete_many_quietly(&items).await {
            Ok(outcomes) if outcomes.len() == answers.len() => outcomes,
            Ok(outcomes) => {
                let e = Error::Internal(format!(
                    "{} completions answered {} outcomes",
                    answers.len(),
                    outcomes.len()
                ));
                vec![Err(e); answers.len()]
            }
            Err(e) => vec![Err(e); answers.len()],
        };
        for (answer, outcome) in answers.into_iter().zip(outcomes) {
            // A task that stopped waiting needs no answer.
            let _ = answer.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Completions that wait together go in one store call, each with its
    //! own outcome; against a real in-memory SQLite store.
    use std::sync::Arc;

    use serde_json::json;
    use weft_core::{ClaimParams, CountingStore, State, Store, SubmitParams};
    use weft_sqlite::{SqliteConfig, SqliteStore};

    use super::*;
    use crate::DirectTransport;

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_completions_share_one_call_each_with_its_outcome() {
        let sqlite: Arc<dyn Store> =
            Arc::new(SqliteStore::open(SqliteConfig::memory()).expect("open"));
        let counting = Arc::new(CountingStore::new(Arc::clone(&sqlite)));
        let store: Arc<dyn Store> = counting.clone();
        for n in 0..12 {
            let params = SubmitParams::new("k", json!({ "n": n }));
            store.execution_submit(&params).await.expect("submit");
        }
        let claim = ClaimParams {
            worker_id: "w".into(),
            lanes: vec!["default".into()],
            capabilities: vec![],
            max: 100,
            lease_ms: 60_000,
        };
        let mut tasks = Vec::new();
        for partition in store.partition_count().iter() {
            tasks.extend(
                store
                    .execution_claim(partition, &claim)
                    .await
                    .expect("claim"),
            );
        }
        assert_eq!(tasks.len(), 12);
        let completer = Arc::new(Completer::new(64));
        let transport: SharedTransport = DirectTransport::new(store).into();
        let receiver = completer.take_receiver().expect("receiver");
        assert!(completer.take_receiver().is_none(), "taken once");
        let looping = tokio::spawn(run(transport, receiver));
        let before = counting.calls();
        let mut waits = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            // One forged epoch: that item alone is refused.
            let epoch = if i == 5 {
                task.lease.epoch.0 + 1
            } else {
                task.lease.epoch.0
            };
            let request = CompleteRequest {
                lease_id: task.lease.id.0.clone(),
                epoch,
                result: json!({ "i": i }),
            };
            let (completer, id) = (Arc::clone(&completer), task.execution_id.to_string());
            waits.push(tokio::spawn(async move {
                completer.complete(&id, &request).await
            }));
        }
        let mut outcomes = Vec::new();
        for wait in waits {
            outcomes.push(wait.await.expect("join"));
        }
        assert!(
            counting.calls() - before <= 2,
            "{} calls for 12 waiting completions",
            counting.calls() - before
        );
        for (i, (task, outcome)) in tasks.iter().zip(&outcomes).enumerate() {
            let exec = sqlite.execution_get(&task.execution_id).await.expect("get");
            if i == 5 {
                assert_eq!(outcome.as_ref().map_err(Error::kind), Err("lease_lost"));
                assert_eq!(exec.state, State::Active);
            } else {
                assert!(outcome.is_ok(), "{outcome:?}");
                assert_eq!(exec.state, State::Completed);
                assert_eq!(exec.result, Some(json!({ "i": i })));
            }
        }
        drop(completer);
        looping.await.expect("the loop ends with its senders");
    }
}
