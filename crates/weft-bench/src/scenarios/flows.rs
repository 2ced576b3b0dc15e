//! Scenarios 2 and 4: flows.
//!
//! Chains: `flows` flows of a `length`-node chain run by `workers` workers
//! claiming through the `Store` trait; reports flows per second, end-to-end
//! latency per flow and promotion latency per level (from the completion of
//! node i returning to the claim of node i+1 returning, so it includes the
//! worker's pickup).
//!
//! Quorum: a join of `quorum(1 of width)` with `cancel_remaining`; completing
//! one upstream must cancel the other `width − 1`. Reports the time from the
//! completion call to every sibling seen cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_core::flow::{EdgeOn, FlowEdge, FlowNodeSpec, FlowSpec, Join, JoinMode};
use weft_core::{claim_across, ClaimParams, ReadyBoard, State, Store, SubmitParams};

use super::{bar, claim_params, complete_null, join_all, ms_since, next_tasks};

fn node(key: String, lane: &str) -> FlowNodeSpec {
    let mut params = SubmitParams::new("bench.flow", Value::Null);
    params.lane = Some(lane.to_owned());
    FlowNodeSpec { key, params }
}

fn chain(length: usize, lane: &str) -> FlowSpec {
    let nodes = (0..length).map(|i| node(format!("n{i}"), lane)).collect();
    let edges = (1..length)
        .map(|i| FlowEdge {
            from: format!("n{}", i - 1),
            to: format!("n{i}"),
            on: EdgeOn::Success,
        })
        .collect();
    FlowSpec {
        nodes,
        edges,
        ..FlowSpec::default()
    }
}

/// What the chain scenario measured.
pub struct ChainMeasured {
    /// From the first create to the last flow's end.
    pub elapsed: Duration,
    /// Per flow, create to last completion, ms.
    pub flow_latencies_ms: Vec<f64>,
    /// Per promotion, ms.
    pub promotion_latencies_ms: Vec<f64>,
}

#[derive(Default)]
struct Marks {
    created_ms: HashMap<String, f64>,
    claimed_ms: HashMap<(String, usize), f64>,
    completed_ms: HashMap<(String, usize), f64>,
}

/// Runs `flows` chains of `length` nodes with `workers` workers.
pub async fn chains(
    store: Arc<dyn Store>,
    flows: u32,
    length: usize,
    workers: u32,
) -> Result<ChainMeasured, String> {
    let lane = format!("bench-chain-{}", std::process::id());
    let start = Instant::now();
    let marks = Arc::new(Mutex::new(Marks::default()));
    let total = u64::from(flows) * length as u64;
    let progress = bar(total, "flows: 10-node chains");
    for _ in 0..flows {
        let created = store
            .flow_create(&chain(length, &lane))
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut m) = marks.lock() {
            m.created_ms
                .insert(created.flow.id.to_string(), ms_since(start));
        }
    }
    let worker = ChainWorker {
        board: ReadyBoard::follow(store.as_ref()),
        store,
        marks: Arc::clone(&marks),
        total,
        start,
        progress,
    };
    let mut handles = Vec::new();
    for w in 0..workers {
        let (worker, lane) = (worker.clone(), lane.clone());
        handles.push(tokio::spawn(async move { worker.run(lane, w).await }));
    }
    join_all(handles).await?;
    worker.progress.finish();
    let elapsed = start.elapsed();
    let m = marks.lock().map_err(|e| e.to_string())?;
    let mut flow_latencies_ms = Vec::new();
    let mut promotion_latencies_ms = Vec::new();
    for (flow, created) in &m.created_ms {
        if let Some(done) = m.completed_ms.get(&(flow.clone(), length - 1)) {
            flow_latencies_ms.push(done - created);
        }
        for i in 1..length {
            let before = m.completed_ms.get(&(flow.clone(), i - 1));
            let after = m.claimed_ms.get(&(flow.clone(), i));
            if let (Some(before), Some(after)) = (before, after) {
                promotion_latencies_ms.push(after - before);
            }
        }
    }
    Ok(ChainMeasured {
        elapsed,
        flow_latencies_ms,
        promotion_latencies_ms,
    })
}

#[derive(Clone)]
struct ChainWorker {
    store: Arc<dyn Store>,
    board: Arc<ReadyBoard>,
    marks: Arc<Mutex<Marks>>,
    total: u64,
    start: Instant,
    progress: indicatif::ProgressBar,
}

impl ChainWorker {
    /// Claims as an SDK worker does (`claim_waiting`) until every node ran.
    async fn run(self, lane: String, index: u32) -> Result<(), String> {
        let (store, marks, start) = (&self.store, &self.marks, self.start);
        let claim = claim_params(format!("chain-{index}"), &lane, 4);
        while self.progress.position() < self.total {
            let tasks = next_tasks(store, &self.board, &claim).await?;
            let claimed_ms = ms_since(start);
            for task in tasks {
                let flow = task
                    .flow_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let level: usize = task
                    .flow_node
                    .as_deref()
                    .and_then(|k| k[1..].parse().ok())
                    .unwrap_or(0);
                complete_null(store.as_ref(), &task).await?;
                if let Ok(mut m) = marks.lock() {
                    m.claimed_ms.insert((flow.clone(), level), claimed_ms);
                    m.completed_ms.insert((flow, level), ms_since(start));
                }
                self.progress.inc(1);
            }
        }
        Ok(())
    }
}

/// Runs `rounds` quorum(1 of `width`) flows; returns, per round, the ms from
/// the winning completion to all `width − 1` siblings seen cancelled.
pub async fn quorum_cancel(
    store: Arc<dyn Store>,
    width: usize,
    rounds: u32,
) -> Result<Vec<f64>, String> {
    let progress = bar(u64::from(rounds), "flows: quorum(1 of 100) cancel");
    let mut samples = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        let lane = format!("bench-quorum-{}-{round}", std::process::id());
        let mut spec = FlowSpec::default();
        for i in 0..width {
            spec.nodes.push(node(format!("u{i}"), &lane));
            spec.edges.push(FlowEdge {
                from: format!("u{i}"),
                to: "join".into(),
                on: EdgeOn::Success,
            });
        }
        spec.nodes
            .push(node("join".into(), &format!("{lane}-join")));
        spec.joins.insert(
            "join".into(),
            Join {
                mode: JoinMode::Quorum,
                n: Some(1),
                cancel_remaining: true,
            },
        );
        let flow = store
            .flow_create(&spec)
            .await
            .map_err(|e| e.to_string())?
            .flow;
        let claim = ClaimParams {
            worker_id: "quorum".into(),
            lanes: vec![lane],
            capabilities: vec![],
            max: 1,
            lease_ms: 30_000,
        };
        let task = claim_across(store.as_ref(), &claim, flow.id.partition())
            .await
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or("no upstream to claim")?;
        let started = Instant::now();
        complete_null(store.as_ref(), &task).await?;
        loop {
            let now = store.flow_get(&flow.id).await.map_err(|e| e.to_string())?;
            if now.counts.get(State::Cancelled) as usize == width - 1 {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("siblings were not cancelled within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(ms_since(started));
        progress.inc(1);
    }
    progress.finish();
    Ok(samples)
}
