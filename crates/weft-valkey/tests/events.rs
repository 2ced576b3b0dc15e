//! Store events and due hints arrive over pub/sub.
//!
//! Goal: `Store::events` reports an execution becoming claimable (submitted,
//! released or resumed by a signal) and ending (also by a waitpoint
//! timeout), and `Store::due_hints` an earlier timer, as the SQLite store
//! does.
//! Method: subscribe, act, and wait (bounded) for the message. The listener
//! subscribes in the background after `connect`, so the first action is
//! repeated until the subscription is known to be live.

mod common;

use std::time::Duration;

use tokio::sync::broadcast;
use weft_core::waitpoint::{OnTimeout, ResumeWhen, SuspendSpec, WaitpointSpec};
use weft_core::{
    ClaimParams, CompleteParams, ExecutionId, LeaseRef, ReleaseParams, SignalParams, State, Store,
    StoreEvent, SubmitParams, SuspendParams, Task,
};

/// A store of 4 partitions on the test server, and the cleanup of its keys.
async fn store_of_4() -> (weft_valkey::ValkeyStore, common::Cleanup) {
    let url = common::url(common::VALKEY_URL_VAR);
    common::store_with(common::config(&url, Some(4))).await
}

async fn next<T: Clone>(rx: &mut broadcast::Receiver<T>, wanted: impl Fn(&T) -> bool) -> Option<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(item)) if wanted(&item) => return Some(item),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

/// A release makes the task's execution claimable again, and says so as a
/// submit does.
async fn release_is_ready(
    store: &weft_valkey::ValkeyStore,
    events: &mut broadcast::Receiver<StoreEvent>,
    task: &Task,
) {
    let release = ReleaseParams {
        execution_id: task.execution_id.clone(),
        lease: LeaseRef {
            lease_id: task.lease.id.clone(),
            epoch: task.lease.epoch,
        },
    };
    store.execution_release(&release).await.expect("release");
    let ready = next(events, |e| {
        matches!(e, StoreEvent::Ready { partition, lane, .. }
            if *partition == task.execution_id.partition() && lane == "ev")
    })
    .await;
    assert!(ready.is_some(), "a Ready event after a release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_ended_events_are_published() {
    let (store, _cleanup) = store_of_4().await;
    let mut events = store.events().expect("valkey publishes events");
    let mut hints = store.due_hints().expect("valkey publishes hints");
    let mut submitted = None;
    for _ in 0..20 {
        let exec = store
            .execution_submit(&SubmitParams {
                lane: Some("ev".into()),
                ..SubmitParams::new("k", 1.into())
            })
            .await
            .expect("submit")
            .execution;
        let ready = |e: &StoreEvent| {
            matches!(e, StoreEvent::Ready { partition, lane, .. }
                if *partition == exec.id.partition() && lane == "ev")
        };
        if next(&mut events, ready).await.is_some() {
            submitted = Some(exec);
            break;
        }
    }
    let exec = submitted.expect("a Ready event after a submit");
    let claim = ClaimParams {
        worker_id: "w".into(),
        lanes: vec!["ev".into()],
        capabilities: vec![],
        max: 1,
        lease_ms: 30_000,
    };
    let first = store
        .execution_claim(exec.id.partition(), &claim)
        .await
        .expect("claim")
        .remove(0);
    // The partition had no timer, so the lease's expiry is announced.
    let hint = next(&mut hints, |h| h.partition == exec.id.partition()).await;
    assert_eq!(hint.map(|h| h.due_ms), Some(first.lease.expires_at_ms));
    release_is_ready(&store, &mut events, &first).await;
    let task = store
        .execution_claim(exec.id.partition(), &claim)
        .await
        .expect("claim again")
        .remove(0);
    let lease = LeaseRef {
        lease_id: task.lease.id.clone(),
        epoch: task.lease.epoch,
    };
    let done = CompleteParams {
        execution_id: task.execution_id.clone(),
        lease,
        result: 2.into(),
    };
    store.execution_complete(&done).await.expect("complete");
    let ended = next(
        &mut events,
        |e| matches!(e, StoreEvent::Ended { id, .. } if *id == task.execution_id),
    )
    .await;
    assert_eq!(
        ended,
        Some(StoreEvent::Ended {
            id: task.execution_id.clone(),
            state: State::Completed
        })
    );
}

/// Suspends `task` on the waitpoint `go`; returns when its timeout falls.
async fn suspend(
    store: &weft_valkey::ValkeyStore,
    task: &Task,
    timeout_ms: Option<i64>,
) -> Option<i64> {
    let params = SuspendParams {
        execution_id: task.execution_id.clone(),
        lease: LeaseRef {
            lease_id: task.lease.id.clone(),
            epoch: task.lease.epoch,
        },
        spec: SuspendSpec {
            waitpoints: vec![WaitpointSpec {
                name: "go".into(),
                timeout_ms,
                on_timeout: OnTimeout::Fail,
            }],
            resume_when: ResumeWhen::All,
        },
    };
    let exec = store.execution_suspend(&params).await.expect("suspend");
    assert_eq!(exec.state, State::Suspended);
    exec.suspension.and_then(|s| s.waitpoints[0].timeout_at_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waitpoint_resumes_and_timeouts_are_published() {
    let (store, _cleanup) = store_of_4().await;
    let mut events = store.events().expect("valkey publishes events");
    let mut hints = store.due_hints().expect("valkey publishes hints");
    let claim = ClaimParams {
        worker_id: "w".into(),
        lanes: vec!["wp".into()],
        capabilities: vec![],
        max: 1,
        lease_ms: 30_000,
    };
    let ready = |id: &ExecutionId| {
        let partition = id.partition();
        move |e: &StoreEvent| matches!(e, StoreEvent::Ready { partition: p, lane, .. } if *p == partition && lane == "wp")
    };
    // Until the subscription is live, submits go unheard.
    let mut exec = None;
    for _ in 0..20 {
        let submitted = store
            .execution_submit(&SubmitParams {
                lane: Some("wp".into()),
                ..SubmitParams::new("k", 1.into())
            })
            .await
            .expect("submit")
            .execution;
        if next(&mut events, ready(&submitted.id)).await.is_some() {
            exec = Some(submitted);
            break;
        }
    }
    let exec = exec.expect("a Ready event after a submit");
    let partition = exec.id.partition();
    let mut task = None;
    // The live subscription's submit is claimed; earlier ones may be first.
    while task.is_none() {
        let got = store
            .execution_claim(partition, &claim)
            .await
            .expect("claim")
            .pop()
            .expect("a claimable execution");
        if got.execution_id == exec.id {
            task = Some(got);
        }
    }
    let task = task.expect("the submitted execution");
    suspend(&store, &task, None).await;
    let signal = SignalParams {
        execution_id: exec.id.clone(),
        waitpoint: "go".into(),
        payload: serde_json::json!({"ok": true}),
        seq: Some(1),
    };
    let resumed = store.execution_signal(&signal).await.expect("signal");
    assert_eq!(resumed.state, State::Waiting);
    assert!(
        next(&mut events, ready(&exec.id)).await.is_some(),
        "a Ready event after the resume"
    );

    let again = store
        .execution_claim(partition, &claim)
        .await
        .expect("claim again")
        .pop()
        .expect("the resumed execution");
    assert_eq!(again.execution_id, exec.id);
    assert_eq!(
        again.signals.get("go"),
        Some(&serde_json::json!({"ok": true}))
    );
    let due = suspend(&store, &again, Some(30)).await;
    assert!(due.is_some());
    let hint = next(&mut hints, |h| {
        h.partition == partition && Some(h.due_ms) == due
    })
    .await;
    assert!(hint.is_some(), "the waitpoint timeout is announced");
    tokio::time::sleep(Duration::from_millis(60)).await;
    store.partition_tick(partition, 100).await.expect("tick");
    let ended = next(
        &mut events,
        |e| matches!(e, StoreEvent::Ended { id, .. } if *id == exec.id),
    )
    .await;
    assert_eq!(
        ended,
        Some(StoreEvent::Ended {
            id: exec.id.clone(),
            state: State::Failed
        })
    );
}
