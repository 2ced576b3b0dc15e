//! Suspend and signal through a real worker, over the direct store and over
//! HTTP: a handler that suspends hands out its token and reports nothing;
//! the signal resumes the execution and the next run reads it; signals
//! buffered before the suspend let the handler carry on at once.

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use weft_core::{AttemptState, State};
use weft_sdk::{
    OnTimeout, ResumeWhen, Submit, SuspendOutcome, SuspendSpec, TaskContext, WaitpointSpec,
    WorkerError,
};

use support::{Clock, Harness, Via, LEASE, PATIENCE};

fn approval() -> SuspendSpec {
    SuspendSpec {
        waitpoints: vec![WaitpointSpec {
            name: "approval".into(),
            timeout_ms: Some(3_600_000),
            on_timeout: OnTimeout::Fail,
        }],
        resume_when: ResumeWhen::All,
    }
}

/// Completes with the approval once resumed; suspends (sending out its
/// token) otherwise.
async fn deploy(
    ctx: TaskContext,
    tokens: mpsc::UnboundedSender<String>,
) -> Result<Value, WorkerError> {
    if let Some(approval) = ctx.signal("approval") {
        return Ok(json!({"deployed": true, "approval": approval}));
    }
    match ctx.suspend(approval()).await? {
        SuspendOutcome::Suspended(waitpoints) => {
            for waitpoint in waitpoints {
                let _ = tokens.send(waitpoint.token);
            }
            Err(WorkerError::suspended())
        }
        SuspendOutcome::Satisfied(signals) => Ok(json!({"at_once": signals})),
    }
}

pub async fn a_suspended_handler_resumes_on_its_token(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let (tokens, mut issued) = mpsc::unbounded_channel();
    let worker = h
        .worker()
        .handler("deploy", move |ctx| deploy(ctx, tokens.clone()))
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("deploy")).await.unwrap().id;
    let token = tokio::time::timeout(PATIENCE, issued.recv())
        .await
        .expect("a token in time")
        .expect("a token");
    let view = h.client.get(&id).await.unwrap();
    assert_eq!(view.state, State::Suspended, "{view:?}");
    // Longer than a lease: a suspended task is not heartbeated, so nothing
    // is counted lost.
    tokio::time::sleep(LEASE + LEASE / 2).await;
    let resumed = h
        .client
        .signal(&token, json!({"approved_by": "ana"}))
        .await
        .unwrap();
    assert!(
        matches!(
            resumed.state,
            State::Waiting | State::Active | State::Completed
        ),
        "{resumed:?}"
    );
    let done = h.client.wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Completed, "{done:?}");
    assert_eq!(
        done.result,
        Some(json!({"deployed": true, "approval": {"approved_by": "ana"}}))
    );
    let attempts = h.client.attempts(&id).await.unwrap();
    let states: Vec<_> = attempts.iter().map(|a| a.state).collect();
    assert_eq!(states, [AttemptState::Suspended, AttemptState::Succeeded]);
    let replayed = h.client.signal(&token, json!(null)).await.unwrap_err();
    assert_eq!(replayed, weft_core::Error::InvalidToken);
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!(
        (
            metrics.suspended,
            metrics.completed,
            metrics.failed,
            metrics.lease_lost
        ),
        (1, 1, 0, 0)
    );
    h.stop().await;
}

pub async fn a_buffered_signal_lets_the_handler_carry_on(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let go = Arc::new(Notify::new());
    let (started, mut running) = mpsc::unbounded_channel();
    let (tokens, _issued) = mpsc::unbounded_channel();
    let gate = Arc::clone(&go);
    let worker = h
        .worker()
        .handler("deploy", move |ctx: TaskContext| {
            let (gate, started, tokens) = (Arc::clone(&gate), started.clone(), tokens.clone());
            async move {
                let _ = started.send(());
                gate.notified().await;
                deploy(ctx, tokens).await
            }
        })
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("deploy")).await.unwrap().id;
    tokio::time::timeout(PATIENCE, running.recv())
        .await
        .expect("the handler starts in time");
    let buffered = h
        .client
        .signal_execution(&id, "approval", json!("early"))
        .await
        .unwrap();
    assert_eq!(buffered.state, State::Active);
    go.notify_one();
    let done = h.client.wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Completed, "{done:?}");
    assert_eq!(done.result, Some(json!({"at_once": {"approval": "early"}})));
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!((metrics.suspended, metrics.completed), (0, 1));
    h.stop().await;
}

macro_rules! scenarios {
    ($via:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_suspended_handler_resumes_on_its_token() {
            let run = super::a_suspended_handler_resumes_on_its_token($via);
            tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("scenario timed out");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_buffered_signal_lets_the_handler_carry_on() {
            let run = super::a_buffered_signal_lets_the_handler_carry_on($via);
            tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("scenario timed out");
        }
    };
}

mod direct {
    use super::Duration;
    scenarios!(crate::support::Via::Direct);
}

mod http {
    use super::Duration;
    scenarios!(crate::support::Via::Http);
}
