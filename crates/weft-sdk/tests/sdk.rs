//! The SDK end to end: every scenario runs once over the direct SQLite store
//! (in memory, with its engine) and once over HTTP against an in-process
//! `weft-server` on the same kind of store. The one wrapper, `GatedClaims`,
//! only holds a real claim's answer back, to stage the shutdown race.
//!
//! Method: handlers report what they see over channels; tests wait on those
//! and on `Client::wait`, and read the store's attempts to check what was
//! recorded. Lease loss moves the store's manual clock past the lease, as a
//! worker whose heartbeats stopped for that long would see it.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_core::{AttemptState, Backoff, Error, State};
use weft_sdk::{
    CancelReason, ExecutionView, HttpTransport, ListQuery, Submit, TaskContext, WorkerError,
};

use support::{eventually, Clock, Harness, Via, LEASE, PATIENCE};

/// Retries come due at once, so retry scenarios do not wait on backoff.
fn quick_retries() -> Backoff {
    Backoff {
        initial_ms: 10,
        max_ms: 10,
        multiplier: 1.0,
        jitter: 0.0,
    }
}

async fn echo(ctx: TaskContext) -> Result<Value, WorkerError> {
    Ok(json!({ "echo": ctx.payload().clone(), "attempt": ctx.attempt() }))
}

pub async fn completes_and_wait_returns(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let worker = h.worker().handler("echo", echo).build().unwrap().start();
    let started = Instant::now();
    let submitted = h
        .client
        .submit(Submit::new("echo").payload(json!({"n": 1})))
        .await
        .unwrap();
    let done = h.client.wait(&submitted.id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Completed, "{done:?}");
    assert_eq!(done.result, Some(json!({"echo": {"n": 1}, "attempt": 1})));
    // An idle worker's claim is waiting already: pickup is one round trip,
    // far below the claim wait (10 s) and the direct poll fallback (5 s).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let attempts = h.client.attempts(&submitted.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Succeeded);
    assert_eq!(attempts[0].worker_id, worker.worker_id());
    let listed = h.client.list(&ListQuery::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!(
        (metrics.claimed, metrics.completed, metrics.failed),
        (1, 1, 0)
    );
    h.stop().await;
}

pub async fn error_retries_then_succeeds(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let worker = h
        .worker()
        .handler("flaky", |ctx: TaskContext| async move {
            if ctx.attempt() == 1 {
                return Err(WorkerError::new("first try fails").with_kind("flaky"));
            }
            Ok(json!("second try"))
        })
        .build()
        .unwrap()
        .start();
    let submit = Submit::new("flaky").backoff(quick_retries());
    let id = h.client.submit(submit).await.unwrap().id;
    let done = h.client.wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Completed, "{done:?}");
    assert_eq!(done.attempts, 2);
    assert_eq!(done.result, Some(json!("second try")));
    let attempts = h.client.attempts(&id).await.unwrap();
    let states: Vec<_> = attempts.iter().map(|a| a.state).collect();
    assert_eq!(states, [AttemptState::Failed, AttemptState::Succeeded]);
    let error = attempts[0].error.as_ref().unwrap();
    assert_eq!(error.message, "first try fails");
    assert_eq!(error.kind.as_deref(), Some("flaky"));
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!((metrics.completed, metrics.failed), (1, 1));
    h.stop().await;
}

pub async fn permanent_error_fails_at_once(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let worker = h
        .worker()
        .handler("doomed", |_ctx: TaskContext| async move {
            Err::<Value, _>(WorkerError::permanent("bad input: no such customer"))
        })
        .build()
        .unwrap()
        .start();
    let id = h
        .client
        .submit(
            Submit::new("doomed")
                .max_attempts(5)
                .backoff(quick_retries()),
        )
        .await
        .unwrap()
        .id;
    let done = h.client.wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Failed, "{done:?}");
    assert_eq!(done.attempts, 1);
    let error = done.error.unwrap();
    assert!(error.message.contains("no such customer"), "{error:?}");
    worker.shutdown().await.unwrap();
    h.stop().await;
}

pub async fn panic_fails_the_attempt_and_the_worker_goes_on(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let worker = h
        .worker()
        .concurrency(1)
        .handler("boom", |ctx: TaskContext| async move {
            if ctx.attempt() == 1 {
                panic!("handler bug on attempt 1");
            }
            Ok(json!("recovered"))
        })
        .handler("echo", echo)
        .build()
        .unwrap()
        .start();
    let boom = h
        .client
        .submit(Submit::new("boom").backoff(quick_retries()))
        .await
        .unwrap()
        .id;
    let done = h.client.wait(&boom, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Completed, "{done:?}");
    let attempts = h.client.attempts(&boom).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Failed);
    let error = attempts[0].error.as_ref().unwrap();
    assert!(
        error.message.contains("handler bug on attempt 1"),
        "{error:?}"
    );
    assert_eq!(error.kind.as_deref(), Some("panic"));
    // The same worker (concurrency 1) still runs other work.
    let echo_id = h.client.submit(Submit::new("echo")).await.unwrap().id;
    let echoed = h.client.wait(&echo_id, PATIENCE).await.unwrap();
    assert_eq!(echoed.state, State::Completed);
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!(
        (metrics.panicked, metrics.failed, metrics.completed),
        (1, 1, 2)
    );
    h.stop().await;
}

pub async fn unknown_kind_fails_without_retry(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let worker = h.worker().handler("echo", echo).build().unwrap().start();
    let id = h
        .client
        .submit(Submit::new("nobody.handles"))
        .await
        .unwrap()
        .id;
    let done = h.client.wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Failed, "{done:?}");
    assert_eq!(done.attempts, 1);
    let error = done.error.unwrap();
    assert!(error.message.contains("no handler for kind"), "{error:?}");
    assert!(
        error.message.contains("echo"),
        "names the kinds it has: {error:?}"
    );
    worker.shutdown().await.unwrap();
    h.stop().await;
}

/// A handler that says it started, waits for its cancellation signal, and
/// reports the reason and how long after the start it came.
fn stalling_handler(
    started: mpsc::Sender<String>,
    seen: mpsc::Sender<(CancelReason, Duration)>,
) -> impl Fn(TaskContext) -> futures_stall::Stall + Send + Sync + 'static {
    move |ctx: TaskContext| {
        let started = started.clone();
        let seen = seen.clone();
        Box::pin(async move {
            let _ = started.send(ctx.execution_id().to_owned()).await;
            let at = Instant::now();
            let reason = ctx.cancelled().await;
            let _ = seen.send((reason, at.elapsed())).await;
            Err::<Value, _>(WorkerError::new("stopped"))
        })
    }
}

mod futures_stall {
    //! The boxed future type of `stalling_handler`.
    pub type Stall = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<serde_json::Value, weft_sdk::WorkerError>>
                + Send,
        >,
    >;
}

pub async fn cancel_raises_the_signal_within_a_heartbeat(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let (started_tx, mut started) = mpsc::channel(4);
    let (seen_tx, mut seen) = mpsc::channel(4);
    let worker = h
        .worker()
        .handler("slow", stalling_handler(started_tx, seen_tx))
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("slow")).await.unwrap().id;
    assert_eq!(started.recv().await.unwrap(), id);
    let cancelled_at = Instant::now();
    let view = h
        .client
        .cancel(&id, Some("operator says stop"))
        .await
        .unwrap();
    assert_eq!(view.state, State::Cancelled);
    let (reason, _) = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason, CancelReason::Cancelled);
    // One heartbeat interval (a third of the lease), plus a round trip.
    let waited = cancelled_at.elapsed();
    assert!(waited < 2 * LEASE, "observed after {waited:?}");
    eventually("the cancel counted", || worker.metrics().cancelled == 1).await;
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!((metrics.lease_lost, metrics.completed), (0, 0));
    assert_eq!(h.client.get(&id).await.unwrap().state, State::Cancelled);
    h.stop().await;
}

pub async fn lease_lost_when_heartbeats_stop(via: Via) {
    let h = Harness::start(via, Clock::Manual).await;
    let (started_tx, mut started) = mpsc::channel(4);
    let (seen_tx, mut seen) = mpsc::channel(4);
    // Claims long-poll as usual: a poll still waiting when the worker stops
    // ends with it and takes nothing (or releases what it took), so the
    // re-queued execution below stays in the queue.
    let worker = h
        .worker()
        .handler("slow", stalling_handler(started_tx, seen_tx))
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("slow")).await.unwrap().id;
    assert_eq!(started.recv().await.unwrap(), id);
    // The store's clock jumps ten leases ahead: to the store, this worker's
    // heartbeats stopped for that long and its lease has lapsed.
    let clock = h.clock.clone().unwrap();
    clock.advance_ms(10 * i64::try_from(LEASE.as_millis()).unwrap());
    let (reason, _) = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason, CancelReason::LeaseLost);
    eventually("the loss counted", || worker.metrics().lease_lost == 1).await;
    eventually("the handler ended", || worker.metrics().in_flight == 0).await;
    let metrics = worker.shutdown().await.unwrap();
    // The handler's own failure came too late to count.
    assert_eq!((metrics.failed, metrics.completed), (0, 0));
    // Once the store applies its timers, the attempt is recorded lost and
    // the execution is queued again.
    let partition = weft_core::ExecutionId::parse(&id).unwrap().partition();
    h.store.partition_tick(partition, 100).await.unwrap();
    let attempts = h.client.attempts(&id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::LeaseLost);
    let view = h.client.get(&id).await.unwrap();
    assert!(
        matches!(view.state, State::Waiting | State::Delayed),
        "{view:?} {attempts:?}"
    );
    h.stop().await;
}

pub async fn concurrency_limit_is_respected(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (running2, peak2) = (Arc::clone(&running), Arc::clone(&peak));
    let worker = h
        .worker()
        .concurrency(3)
        .handler("busy", move |_ctx: TaskContext| {
            let (running, peak) = (Arc::clone(&running2), Arc::clone(&peak2));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(h.client.submit(Submit::new("busy")).await.unwrap().id);
    }
    for id in &ids {
        let done = h.client.wait(id, PATIENCE).await.unwrap();
        assert_eq!(done.state, State::Completed);
        // A `()` result is JSON null, which the execution shows as no result.
        assert!(matches!(done.result, None | Some(Value::Null)), "{done:?}");
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} handlers ran at once");
    assert!(peak >= 2, "handlers never overlapped (peak {peak})");
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!((metrics.claimed, metrics.completed), (12, 12));
    h.stop().await;
}

pub async fn shutdown_waits_for_running_handlers(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let (started_tx, mut started) = mpsc::channel::<()>(4);
    // With ten slots a long poll is open while the handler runs; shutdown
    // ends it, so nothing is left waiting on the server to take `later`.
    let worker = h
        .worker()
        .shutdown_grace(Duration::from_secs(10))
        .handler("finishing", move |_ctx: TaskContext| {
            let started = started_tx.clone();
            async move {
                let _ = started.send(()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(json!("finished during shutdown"))
            }
        })
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("finishing")).await.unwrap().id;
    started.recv().await.unwrap();
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!((metrics.completed, metrics.released), (1, 0));
    let done = h.client.get(&id).await.unwrap();
    assert_eq!(done.state, State::Completed);
    // Stopped workers claim nothing more.
    let later = h.client.submit(Submit::new("finishing")).await.unwrap().id;
    let view = h
        .client
        .wait(&later, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(view.state, State::Waiting);
    h.stop().await;
}

pub async fn shutdown_releases_handlers_past_the_grace(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let (started_tx, mut started) = mpsc::channel(4);
    let (seen_tx, mut seen) = mpsc::channel(4);
    let worker = h
        .worker()
        .shutdown_grace(Duration::from_millis(200))
        .handler("stuck", stalling_handler(started_tx, seen_tx))
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("stuck")).await.unwrap().id;
    assert_eq!(started.recv().await.unwrap(), id);
    let stopping = Instant::now();
    let metrics = worker.shutdown().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(
        (metrics.released, metrics.completed, metrics.failed),
        (1, 0, 0)
    );
    // The handler saw why, unless the abort beat it to the channel.
    if let Ok((reason, _)) = seen.try_recv() {
        assert_eq!(reason, CancelReason::Shutdown);
    }
    // Released, not failed and not left to lapse: back in the queue at
    // once, its attempt counting against nothing.
    let view = h.client.get(&id).await.unwrap();
    assert_eq!(view.state, State::Waiting, "{view:?}");
    assert_eq!(view.error, None);
    let attempts = h.client.attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Released);
    // Another worker takes it up and runs attempt 2.
    let next = h.worker().handler("stuck", echo).build().unwrap().start();
    let done = h.client.wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Completed, "{done:?}");
    assert_eq!(
        done.result.as_ref().map(|r| r["attempt"].clone()),
        Some(json!(2))
    );
    next.shutdown().await.unwrap();
    h.stop().await;
}

/// Sets its flag when dropped: shows that an aborted handler's future is gone.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub async fn shutdown_aborts_deaf_handlers_then_releases(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let (started_tx, mut started) = mpsc::channel::<()>(4);
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let worker = h
        .worker()
        .shutdown_grace(Duration::from_millis(100))
        .handler("deaf", move |_ctx: TaskContext| {
            let (started, guard) = (started_tx.clone(), DropFlag(Arc::clone(&flag)));
            async move {
                let _guard = guard;
                let _ = started.send(()).await;
                // Never looks at its cancellation signal.
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(json!("too late"))
            }
        })
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("deaf")).await.unwrap().id;
    started.recv().await.unwrap();
    let stopping = Instant::now();
    let metrics = worker.shutdown().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    // The handler was aborted (its future dropped) before its release.
    assert!(dropped.load(Ordering::SeqCst), "the handler still runs");
    assert_eq!((metrics.released, metrics.completed), (1, 0));
    let view = h.client.get(&id).await.unwrap();
    assert_eq!(view.state, State::Waiting, "{view:?}");
    let attempts = h.client.attempts(&id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Released);
    h.stop().await;
}

pub async fn idempotent_submit_and_replay(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let first = h
        .client
        .submit_detailed(Submit::new("echo").idempotency_key("k-1").tag("team", "a"))
        .await
        .unwrap();
    let again = h
        .client
        .submit_detailed(Submit::new("echo").idempotency_key("k-1"))
        .await
        .unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.execution.id, again.execution.id);
    assert_eq!(
        first.execution.tags.get("team").map(String::as_str),
        Some("a")
    );
    let worker = h.worker().handler("echo", echo).build().unwrap().start();
    let id = first.execution.id;
    assert_eq!(
        h.client.wait(&id, PATIENCE).await.unwrap().state,
        State::Completed
    );
    let replayed = h.client.replay(&id).await.unwrap();
    assert_eq!(replayed.state, State::Waiting);
    let done = h.client.wait(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, State::Completed);
    assert_eq!(done.attempts, 2);
    let lanes = h.client.lanes().await.unwrap();
    assert!(
        lanes.iter().all(|l| l.waiting == 0 && l.active == 0),
        "{lanes:?}"
    );
    worker.shutdown().await.unwrap();
    match h.client.get("ex_nope").await {
        Err(weft_core::Error::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    h.stop().await;
}

/// A wrong token is `invalid_argument` on `api_token` for the client, and
/// stops a worker at once (no retry can fix it); the right one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_tokens() {
    let store: Arc<dyn weft_core::Store> =
        Arc::new(weft_sqlite::SqliteStore::open(weft_sqlite::SqliteConfig::memory()).unwrap());
    let (url, (stop, serving)) = support::serve(store, vec!["s3cret".into()]).await;
    let anonymous = weft_sdk::Client::http(&url).unwrap();
    match anonymous.lanes().await {
        Err(weft_core::Error::InvalidArgument { field, .. }) => assert_eq!(field, "api_token"),
        other => panic!("{other:?}"),
    }
    let worker = weft_sdk::Worker::builder(HttpTransport::new(&url).unwrap())
        .lanes(["default"])
        .handler("echo", echo)
        .build()
        .unwrap();
    let stopped = tokio::time::timeout(PATIENCE, worker.run_until(std::future::pending()));
    match stopped.await.unwrap() {
        Err(weft_core::Error::InvalidArgument { field, .. }) => assert_eq!(field, "api_token"),
        other => panic!("{other:?}"),
    }
    let transport = HttpTransport::builder(&url)
        .token("s3cret")
        .build()
        .unwrap();
    let client = weft_sdk::Client::new(transport.clone());
    let worker = weft_sdk::Worker::builder(transport)
        .lanes(["default"])
        .handler("echo", echo)
        .build()
        .unwrap()
        .start();
    let id = client.submit(Submit::new("echo")).await.unwrap().id;
    assert_eq!(
        client.wait(&id, PATIENCE).await.unwrap().state,
        State::Completed
    );
    worker.shutdown().await.unwrap();
    let _ = stop.send(());
    let _ = serving.await;
}

/// Nobody listening: calls fail `unavailable`, naming the server; a worker
/// keeps retrying its claims (the server may come back) and still shuts
/// down promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let client = weft_sdk::Client::http(&url).unwrap();
    match client.get("ex_x").await {
        Err(weft_core::Error::Unavailable(message)) => {
            assert!(
                message.starts_with(&format!("cannot reach the server at {url}")),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let worker = weft_sdk::Worker::builder(client.transport().clone())
        .lanes(["default"])
        .handler("echo", echo)
        .build()
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let metrics = worker.shutdown().await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(2));
    assert_eq!(metrics.claimed, 0);
}

/// A transport whose claims, once they have taken tasks, hold the answer
/// until the test opens `gate`; it says `took` when they have.
struct GatedClaims {
    inner: weft_sdk::SharedTransport,
    took: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl weft_sdk::Transport for GatedClaims {
    async fn submit(&self, r: &weft_api::SubmitRequest) -> Result<weft_sdk::Submission, Error> {
        self.inner.submit(r).await
    }
    async fn get(&self, id: &str) -> Result<ExecutionView, Error> {
        self.inner.get(id).await
    }
    async fn list(&self, q: &ListQuery) -> Result<weft_api::Page<ExecutionView>, Error> {
        self.inner.list(q).await
    }
    async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<ExecutionView, Error> {
        self.inner.cancel(id, reason).await
    }
    async fn replay(&self, id: &str) -> Result<ExecutionView, Error> {
        self.inner.replay(id).await
    }
    async fn wait(&self, id: &str, timeout: Duration) -> Result<ExecutionView, Error> {
        self.inner.wait(id, timeout).await
    }
    async fn lanes(&self) -> Result<Vec<weft_api::LaneView>, Error> {
        self.inner.lanes().await
    }
    async fn attempts(&self, id: &str) -> Result<Vec<weft_api::AttemptView>, Error> {
        self.inner.attempts(id).await
    }
    async fn claim(&self, r: &weft_api::ClaimRequest) -> Result<Vec<weft_api::TaskView>, Error> {
        let tasks = self.inner.claim(r).await?;
        if !tasks.is_empty() {
            self.took.notify_one();
            self.gate.notified().await;
        }
        Ok(tasks)
    }
    async fn heartbeat(
        &self,
        id: &str,
        r: &weft_api::HeartbeatRequest,
    ) -> Result<weft_api::HeartbeatResponse, Error> {
        self.inner.heartbeat(id, r).await
    }
    async fn complete(
        &self,
        id: &str,
        r: &weft_api::CompleteRequest,
    ) -> Result<ExecutionView, Error> {
        self.inner.complete(id, r).await
    }
    async fn fail(&self, id: &str, r: &weft_api::FailRequest) -> Result<ExecutionView, Error> {
        self.inner.fail(id, r).await
    }
    async fn release(
        &self,
        id: &str,
        r: &weft_api::ReleaseRequest,
    ) -> Result<ExecutionView, Error> {
        self.inner.release(id, r).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A claim that answers just as shutdown begins (the long-poll race): its
/// task is released unstarted, at once and without using an attempt.
///
/// On a single-threaded runtime the test opens the gate and starts the
/// shutdown without yielding, so the worker sees both at once: the claim's
/// answer and the stop.
#[tokio::test(flavor = "current_thread")]
async fn a_task_received_after_shutdown_began_is_released() {
    let h = Harness::start(Via::Direct, Clock::Manual).await;
    let (took, gate) = (Arc::default(), Arc::default());
    let gated = GatedClaims {
        inner: Arc::clone(&h.transport),
        took: Arc::clone(&took),
        gate: Arc::clone(&gate),
    };
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ran);
    let gated: weft_sdk::SharedTransport = Arc::new(gated);
    let worker = weft_sdk::Worker::builder(gated)
        .lanes(["default"])
        .lease(LEASE)
        .handler("late", move |_ctx: TaskContext| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap()
        .start();
    let id = h.client.submit(Submit::new("late")).await.unwrap().id;
    tokio::time::timeout(PATIENCE, took.notified())
        .await
        .unwrap();
    gate.notify_one();
    let metrics = worker.shutdown().await.unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the handler ran after shutdown"
    );
    assert_eq!(
        (metrics.claimed, metrics.released, metrics.completed),
        (1, 1, 0)
    );
    let view = h.client.get(&id).await.unwrap();
    assert_eq!(view.state, State::Waiting, "{view:?}");
    let attempts = h.client.attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Released);
    h.stop().await;
}

/// Settings are checked when the worker is built, naming the setting.
#[test]
fn worker_settings_are_checked_at_build() {
    let store: Arc<dyn weft_core::Store> =
        Arc::new(weft_sqlite::SqliteStore::open(weft_sqlite::SqliteConfig::memory()).unwrap());
    let transport = || weft_sdk::DirectTransport::new(Arc::clone(&store));
    let field = |result: weft_core::Result<weft_sdk::Worker>| match result {
        Err(weft_core::Error::InvalidArgument { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let base = || weft_sdk::Worker::builder(transport()).handler("echo", echo);
    assert_eq!(field(base().build()), "lanes");
    assert_eq!(field(base().lanes(["a b"]).build()), "lanes");
    assert_eq!(
        field(base().lanes(["a"]).concurrency(0).build()),
        "concurrency"
    );
    assert_eq!(field(base().lanes(["a"]).lease_ms(50).build()), "lease_ms");
    assert_eq!(
        field(base().lanes(["a"]).lease_ms(10_000_000).build()),
        "lease_ms"
    );
    assert_eq!(
        field(
            base()
                .lanes(["a"])
                .heartbeat_interval(Duration::from_secs(60))
                .build()
        ),
        "heartbeat_interval"
    );
    assert_eq!(
        field(
            base()
                .lanes(["a"])
                .claim_wait(Duration::from_secs(61))
                .build()
        ),
        "claim_wait"
    );
    assert_eq!(
        field(base().lanes(["a"]).handler("echo", echo).build()),
        "kind"
    );
    let none = weft_sdk::Worker::builder(transport()).lanes(["a"]).build();
    assert_eq!(field(none), "handlers");
}

pub async fn submit_many_answers_in_order(via: Via) {
    let h = Harness::start(via, Clock::System).await;
    let known = h
        .client
        .submit(Submit::new("echo").idempotency_key("batch-k"))
        .await
        .unwrap();
    let batch = (0..3)
        .map(|n| Submit::new("echo").payload(json!({ "n": n })))
        .chain([Submit::new("echo").idempotency_key("batch-k")]);
    let answers = h.client.submit_many(batch).await.unwrap();
    let created: Vec<bool> = answers.iter().map(|a| a.created).collect();
    assert_eq!(created, [true, true, true, false]);
    assert_eq!(answers[3].execution.id, known.id);
    for (n, answer) in answers[..3].iter().enumerate() {
        assert_eq!(answer.execution.payload, json!({ "n": n }));
    }
    let bad = [Submit::new("echo"), Submit::new("")];
    match h.client.submit_many(bad).await {
        // Over HTTP the field travels in the message.
        Err(Error::InvalidArgument { field, message }) => assert!(
            field == "executions[1].kind" || message.contains("executions[1].kind"),
            "{field}: {message}"
        ),
        other => panic!("{other:?}"),
    }
    let listed = h.client.list(&ListQuery::default()).await.unwrap();
    assert_eq!(listed.items.len(), 4, "the refused batch created nothing");
    let worker = h.worker().handler("echo", echo).build().unwrap().start();
    for answer in &answers[..3] {
        let done = h.client.wait(&answer.execution.id, PATIENCE).await.unwrap();
        assert_eq!(done.state, State::Completed);
    }
    worker.shutdown().await.unwrap();
    h.stop().await;
}

macro_rules! scenarios {
    ($via:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let run = super::$name($via);
                tokio::time::timeout(std::time::Duration::from_secs(60), run)
                    .await
                    .expect("scenario timed out");
            }
        )*
    };
}

macro_rules! all_scenarios {
    ($via:expr) => {
        scenarios!($via;
            completes_and_wait_returns,
            error_retries_then_succeeds,
            permanent_error_fails_at_once,
            panic_fails_the_attempt_and_the_worker_goes_on,
            unknown_kind_fails_without_retry,
            cancel_raises_the_signal_within_a_heartbeat,
            lease_lost_when_heartbeats_stop,
            concurrency_limit_is_respected,
            shutdown_waits_for_running_handlers,
            shutdown_releases_handlers_past_the_grace,
            shutdown_aborts_deaf_handlers_then_releases,
            idempotent_submit_and_replay,
            submit_many_answers_in_order,
        );
    };
}

mod direct {
    all_scenarios!(crate::support::Via::Direct);
}

mod http {
    all_scenarios!(crate::support::Via::Http);
}
