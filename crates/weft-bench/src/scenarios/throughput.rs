//! Scenario 1: submit → claim → complete, side by side with a raw-Valkey
//! queue (LPUSH + BLMPOP + a completion counter, no engine).
//!
//! Both sides run the same shape: `producers` tasks submitting, `workers`
//! tasks taking up to `claim_batch` items per call and completing each. A
//! task's latency runs from just before its submit to just after its
//! completion is acknowledged.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use weft_api::{ClaimRequest, CompleteRequest, SubmitRequest};
use weft_core::{CompleteParams, CountingStore, ReadyBoard, Store, SubmitParams};
use weft_sdk::{HttpTransport, Transport};

use super::{bar, claim_params, complete_null, join_all, ms_since, next_tasks};

/// The scenario's sizes.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Tasks in total.
    pub tasks: u32,
    /// Bytes of padding in each payload.
    pub payload_bytes: usize,
    /// Concurrent workers.
    pub workers: u32,
    /// Concurrent submitters.
    pub producers: u32,
    /// Most items one claim takes.
    pub claim_batch: u32,
    /// Executions per `submit_many` in the batched run.
    pub submit_batch: u32,
    /// Most tasks submitted and not yet completed: producers wait above it,
    /// so latency measures the system, not a queue they built up.
    pub in_flight: u32,
}

/// What one run measured.
pub struct Measured {
    /// From the first submit to the last completion.
    pub elapsed: Duration,
    /// Per task, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Round trips to the store.
    pub calls: u64,
}

struct Shared {
    start: Instant,
    sent: AtomicU32,
    done: AtomicU32,
    in_flight: u32,
    latencies_ms: Mutex<Vec<f64>>,
    progress: indicatif::ProgressBar,
}

impl Shared {
    fn new(spec: &Spec, label: &str) -> Self {
        let tasks = spec.tasks;
        Self {
            start: Instant::now(),
            sent: AtomicU32::new(0),
            done: AtomicU32::new(0),
            in_flight: spec.in_flight.max(spec.submit_batch),
            latencies_ms: Mutex::new(Vec::with_capacity(tasks as usize)),
            progress: bar(u64::from(tasks), label),
        }
    }

    /// Finishes the progress bar; what the run measured, with `calls`
    /// round trips to the store.
    fn measured(&self, calls: u64) -> Result<Measured, String> {
        self.progress.finish();
        let elapsed = self.start.elapsed();
        let mut latencies = self.latencies_ms.lock().map_err(|e| e.to_string())?;
        Ok(Measured {
            elapsed,
            latencies_ms: std::mem::take(&mut *latencies),
            calls,
        })
    }

    /// Waits until `n` more tasks fit under `in_flight`, then counts them
    /// as sent.
    async fn room_for(&self, n: u32) {
        while self.sent.load(Ordering::Relaxed) + n
            > self.done.load(Ordering::Relaxed) + self.in_flight
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    fn record(&self, sent_ms: f64) {
        let latency = ms_since(self.start) - sent_ms;
        if let Ok(mut l) = self.latencies_ms.lock() {
            l.push(latency);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        self.progress.inc(1);
    }
}

fn padding(bytes: usize) -> String {
    "x".repeat(bytes)
}

/// How the direct runs call the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calls {
    /// One execution per submit, one task per complete (as the SDK does).
    One,
    /// `submit_batch` executions per `execution_submit_many`, and each
    /// claim's tasks completed with one `execution_complete_many`.
    Batched,
}

/// Spawns the producers of a run on a store: `batch` executions per call
/// (`execution_submit` for one, `execution_submit_many` for more), keeping
/// under the in-flight window.
fn store_producers(
    store: &Arc<CountingStore>,
    shared: &Arc<Shared>,
    lane: &str,
    spec: Spec,
    batch: u32,
) -> Vec<tokio::task::JoinHandle<Result<(), String>>> {
    (0..spec.producers)
        .map(|p| {
            let (store, shared, lane) = (Arc::clone(store), Arc::clone(shared), lane.to_owned());
            let mut left = share(spec.tasks, spec.producers, p);
            let pad = padding(spec.payload_bytes);
            tokio::spawn(async move {
                while left > 0 {
                    let n = left.min(batch);
                    left -= n;
                    shared.room_for(n).await;
                    let items: Vec<SubmitParams> = (0..n)
                        .map(|_| SubmitParams {
                            lane: Some(lane.clone()),
                            ..SubmitParams::new(
                                "bench",
                                json!({"sent_ms": ms_since(shared.start), "pad": pad}),
                            )
                        })
                        .collect();
                    let submitted = match items.as_slice() {
                        [one] => store.execution_submit(one).await.map(drop),
                        _ => store.execution_submit_many(&items).await.map(drop),
                    };
                    submitted.map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect()
}

/// Runs the scenario on a Weft store through the `Store` trait directly.
pub async fn weft_direct(
    store: Arc<dyn Store>,
    spec: Spec,
    label: &str,
    calls: Calls,
) -> Result<Measured, String> {
    let counting = Arc::new(CountingStore::new(store));
    let shared = Arc::new(Shared::new(&spec, label));
    let lane = format!("bench-{:08x}", fastrand_u32());
    let board = ReadyBoard::follow(counting.as_ref());
    let batch = match calls {
        Calls::One => 1,
        Calls::Batched => spec.submit_batch.max(1),
    };
    let mut handles = store_producers(&counting, &shared, &lane, spec, batch);
    for w in 0..spec.workers {
        let (store, shared, lane) = (Arc::clone(&counting), Arc::clone(&shared), lane.clone());
        let board = board.clone();
        handles.push(tokio::spawn(weft_worker(
            store, board, shared, lane, spec, w, calls,
        )));
    }
    join_all(handles).await?;
    shared.measured(counting.calls())
}

fn fastrand_u32() -> u32 {
    // Seeded from the clock: labels only need to differ between runs.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

fn share(total: u32, parts: u32, index: u32) -> u32 {
    total / parts + u32::from(index < total % parts)
}

/// Claims as an SDK worker does (`claim_waiting`): where the board says work
/// is, sweeping every partition only when it has been quiet. Completes each
/// task on its own, or each claim's tasks in one call.
async fn weft_worker(
    store: Arc<CountingStore>,
    board: Arc<ReadyBoard>,
    shared: Arc<Shared>,
    lane: String,
    spec: Spec,
    index: u32,
    calls: Calls,
) -> Result<(), String> {
    let claim = claim_params(format!("bench-worker-{index}"), &lane, spec.claim_batch);
    let store: Arc<dyn Store> = store;
    while shared.done.load(Ordering::Relaxed) < spec.tasks {
        let tasks = next_tasks(&store, &board, &claim).await?;
        if calls == Calls::Batched && !tasks.is_empty() {
            let done: Vec<CompleteParams> = tasks
                .iter()
                .map(|task| CompleteParams {
                    execution_id: task.execution_id.clone(),
                    lease: task.lease_ref(),
                    result: serde_json::Value::Null,
                })
                .collect();
            let outcomes = store
                .execution_complete_many(&done)
                .await
                .map_err(|e| e.to_string())?;
            for outcome in outcomes {
                outcome.map_err(|e| e.to_string())?;
            }
        }
        for task in &tasks {
            if calls == Calls::One {
                complete_null(store.as_ref(), task).await?;
            }
            shared.record(task.payload["sent_ms"].as_f64().unwrap_or(0.0));
        }
    }
    Ok(())
}

/// Runs the scenario with the SDK as an application would: producers submit
/// one execution per call, and one `weft_sdk::Worker` over the direct
/// transport runs `workers` handlers at once (its claims take as many tasks
/// as it has free slots, and its completer writes the results that wait
/// together in one call).
pub async fn weft_sdk_worker(
    store: Arc<dyn Store>,
    spec: Spec,
    label: &str,
) -> Result<Measured, String> {
    let counting = Arc::new(CountingStore::new(store));
    let shared = Arc::new(Shared::new(&spec, label));
    let lane = format!("bench-sdk-{:08x}", fastrand_u32());
    let transport = weft_sdk::DirectTransport::new(counting.clone());
    let recorder = Arc::clone(&shared);
    let worker = weft_sdk::Worker::builder(transport)
        .worker_id("bench-sdk")
        .lanes([lane.as_str()])
        .concurrency(spec.workers)
        .claim_wait(Duration::from_millis(100))
        .handler("bench", move |ctx: weft_sdk::TaskContext| {
            let sent_ms = ctx.payload()["sent_ms"].as_f64().unwrap_or(0.0);
            let recorder = Arc::clone(&recorder);
            async move {
                // Latency to the handler: the completion is written after.
                recorder.record(sent_ms);
                Ok::<_, weft_sdk::WorkerError>(serde_json::Value::Null)
            }
        })
        .build()
        .map_err(|e| e.to_string())?
        .start();
    let handles = store_producers(&counting, &shared, &lane, spec, 1);
    let outcome = join_all(handles).await;
    while outcome.is_ok() && worker.metrics().completed < u64::from(spec.tasks) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    worker.shutdown().await.map_err(|e| e.to_string())?;
    outcome?;
    shared.measured(counting.calls())
}

/// Runs the scenario through a Weft server over HTTP: an in-process
/// `weft_server::Server` on loopback, producers and workers speaking HTTP
/// through the SDK's transport (workers long-poll their claims).
pub async fn weft_http(store: Arc<dyn Store>, spec: Spec, label: &str) -> Result<Measured, String> {
    let counting = Arc::new(CountingStore::new(store));
    let server = weft_server::Server::new(counting.clone(), None, Default::default())
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    let transport = HttpTransport::new(&url).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared::new(&spec, label));
    let lane = format!("bench-http-{:08x}", fastrand_u32());
    let mut handles = Vec::new();
    for p in 0..spec.producers {
        let (http, shared, lane) = (transport.clone(), Arc::clone(&shared), lane.clone());
        let count = share(spec.tasks, spec.producers, p);
        let pad = padding(spec.payload_bytes);
        handles.push(tokio::spawn(async move {
            for _ in 0..count {
                shared.room_for(1).await;
                let request = SubmitRequest {
                    kind: "bench".into(),
                    lane: Some(lane.clone()),
                    payload: json!({"sent_ms": ms_since(shared.start), "pad": pad}),
                    ..SubmitRequest::default()
                };
                http.submit(&request).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for w in 0..spec.workers {
        let (http, shared, lane) = (transport.clone(), Arc::clone(&shared), lane.clone());
        handles.push(tokio::spawn(async move {
            let claim = ClaimRequest {
                worker_id: format!("bench-http-{w}"),
                lanes: vec![lane],
                capabilities: vec![],
                max: spec.claim_batch,
                lease_ms: 30_000,
                wait_ms: 100,
            };
            while shared.done.load(Ordering::Relaxed) < spec.tasks {
                for task in http.claim(&claim).await.map_err(|e| e.to_string())? {
                    let sent_ms = task.payload["sent_ms"].as_f64().unwrap_or(0.0);
                    let done = CompleteRequest {
                        lease_id: task.lease.id.clone(),
                        epoch: task.lease.epoch,
                        result: serde_json::Value::Null,
                    };
                    http.complete(&task.execution_id, &done)
                        .await
                        .map_err(|e| e.to_string())?;
                    shared.record(sent_ms);
                }
            }
            Ok::<(), String>(())
        }));
    }
    // The server stops whatever happened to the clients.
    let outcome = join_all(handles).await;
    let _ = stop.send(());
    serving
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    outcome?;
    shared.measured(counting.calls())
}

/// Runs the scenario on a raw Valkey list: the baseline.
pub async fn raw_valkey(url: &str, spec: Spec, label: &str) -> Result<Measured, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared::new(&spec, label));
    let calls = Arc::new(AtomicU32::new(0));
    let key = format!("bench:raw:{:08x}", fastrand_u32());
    let mut handles = Vec::new();
    for p in 0..spec.producers {
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let (shared, key, calls) = (Arc::clone(&shared), key.clone(), Arc::clone(&calls));
        let count = share(spec.tasks, spec.producers, p);
        let pad = padding(spec.payload_bytes);
        handles.push(tokio::spawn(async move {
            for _ in 0..count {
                shared.room_for(1).await;
                let item = json!({"sent_ms": ms_since(shared.start), "pad": pad}).to_string();
                let _: i64 = redis::cmd("LPUSH")
                    .arg(&key)
                    .arg(item)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    for _ in 0..spec.workers {
        // Blocking pops need a connection each.
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let (shared, key, calls) = (Arc::clone(&shared), key.clone(), Arc::clone(&calls));
        handles.push(tokio::spawn(raw_worker(conn, shared, key, calls, spec)));
    }
    join_all(handles).await?;
    shared.measured(u64::from(calls.load(Ordering::Relaxed)))
}

async fn raw_worker(
    mut conn: redis::aio::MultiplexedConnection,
    shared: Arc<Shared>,
    key: String,
    calls: Arc<AtomicU32>,
    spec: Spec,
) -> Result<(), String> {
    while shared.done.load(Ordering::Relaxed) < spec.tasks {
        let popped: Option<(String, Vec<String>)> = redis::cmd("BLMPOP")
            .arg(0.05)
            .arg(1)
            .arg(&key)
            .arg("RIGHT")
            .arg("COUNT")
            .arg(spec.claim_batch)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        calls.fetch_add(1, Ordering::Relaxed);
        let Some((_, items)) = popped else { continue };
        for item in items {
            let sent_ms = serde_json::from_str::<serde_json::Value>(&item)
                .ok()
                .and_then(|v| v["sent_ms"].as_f64())
                .unwrap_or(0.0);
            let _: i64 = redis::cmd("INCR")
                .arg(format!("{key}:done"))
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            calls.fetch_add(1, Ordering::Relaxed);
            shared.record(sent_ms);
        }
    }
    Ok(())
}
