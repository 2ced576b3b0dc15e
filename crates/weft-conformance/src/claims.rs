//! Claims: routing by lane and capability, order, batching and concurrency.
//!
//! Goal: a worker gets only executions of its lanes whose required
//! capabilities are a subset of its own, at once and without any "blocked by
//! route" state; within a partition the highest priority comes first, then
//! the longest claimable; a claim returns at most `max` tasks; concurrent
//! claimers never receive the same execution twice and together claim all.
//!
//! Method: submit into known lanes, claim across partitions with
//! `claim_across`, and for ordering replay the expected order per partition
//! from the submitted executions. The concurrency test runs several tokio
//! tasks over separate store handles (`Harness::new_store`) when the store
//! offers them, else over one shared handle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use weft_core::{claim_across, ExecutionId, PartitionId, State, Store, SubmitParams, Task};

use crate::support::{
    assert_audit_clean, claim_params, get, list_everything, submit, LONG_LEASE_MS,
};
use crate::Harness;

fn in_lane(lane: &str, requires: &[&str]) -> SubmitParams {
    SubmitParams {
        lane: Some(lane.to_owned()),
        requires: requires.iter().map(|c| (*c).to_owned()).collect(),
        ..SubmitParams::new("claim.job", json!(null))
    }
}

async fn claim_all(h: &Harness, lanes: &[&str], caps: &[&str], max: u32) -> Vec<Task> {
    let claim = claim_params(lanes, caps, max, LONG_LEASE_MS);
    claim_across(h.store.as_ref(), &claim, PartitionId(0))
        .await
        .expect("claim")
}

fn task_ids(tasks: &[Task]) -> BTreeSet<ExecutionId> {
    tasks.iter().map(|t| t.execution_id.clone()).collect()
}

/// Capability routing: subsets only, immediately, and no requirement means
/// anyone.
pub async fn capabilities_route_work(h: Harness) {
    let gpu = submit(&h, &in_lane("caps", &["gpu"])).await;
    let both = submit(&h, &in_lane("caps", &["gpu", "cuda"])).await;
    let free = submit(&h, &in_lane("caps", &[])).await;
    assert_audit_clean(&h).await;

    let plain = claim_all(&h, &["caps"], &[], 10).await;
    assert_eq!(
        task_ids(&plain),
        BTreeSet::from([free.id.clone()]),
        "no capabilities"
    );
    assert!(
        claim_all(&h, &["caps"], &[], 10).await.is_empty(),
        "never the gpu work"
    );
    let gpu_only = claim_all(&h, &["caps"], &["gpu"], 10).await;
    assert_eq!(
        task_ids(&gpu_only),
        BTreeSet::from([gpu.id.clone()]),
        "gpu but not cuda"
    );
    let superset = claim_all(&h, &["caps"], &["tpu", "gpu", "cuda"], 10).await;
    assert_eq!(
        task_ids(&superset),
        BTreeSet::from([both.id.clone()]),
        "a superset"
    );
    assert_audit_clean(&h).await;

    let anyone = submit(&h, &in_lane("caps", &[])).await;
    let rich = claim_all(&h, &["caps"], &["gpu", "x"], 10).await;
    assert_eq!(
        task_ids(&rich),
        BTreeSet::from([anyone.id.clone()]),
        "anyone takes free work"
    );
    for id in [&gpu.id, &both.id, &free.id, &anyone.id] {
        assert_eq!(get(&h, id).await.state, State::Active);
    }
    assert_audit_clean(&h).await;
}

/// A worker gets only its lanes' work.
pub async fn lanes_route_work(h: Harness) {
    let x = submit(&h, &in_lane("x", &[])).await;
    let y = submit(&h, &in_lane("y", &[])).await;
    assert!(claim_all(&h, &["z"], &[], 10).await.is_empty());
    let got = claim_all(&h, &["z", "x"], &[], 10).await;
    assert_eq!(task_ids(&got), BTreeSet::from([x.id.clone()]));
    let got = claim_all(&h, &["x", "y"], &[], 10).await;
    assert_eq!(task_ids(&got), BTreeSet::from([y.id.clone()]));
    assert_audit_clean(&h).await;
}

/// Within a partition: priority high to low, then oldest `ready_at`, then id;
/// a batch takes the head of that order.
pub async fn priority_then_age_within_partition(h: Harness) {
    let count = usize::from(h.store.partition_count().get());
    let n = (count * 3).max(24);
    let mut by_partition: BTreeMap<PartitionId, Vec<(i32, i64, ExecutionId)>> = BTreeMap::new();
    for i in 0..n {
        let priority = i32::try_from((i * 37) % 7).unwrap_or(0) - 3;
        let p = SubmitParams {
            priority,
            ..in_lane("prio", &[])
        };
        let exec = submit(&h, &p).await;
        by_partition.entry(exec.id.partition()).or_default().push((
            -exec.priority,
            exec.ready_at_ms,
            exec.id,
        ));
        // Distinct ages, so that order by age is observable.
        h.advance_ms(1).await;
    }
    assert_audit_clean(&h).await;
    for (partition, mut expected) in by_partition {
        expected.sort();
        let expected: Vec<ExecutionId> = expected.into_iter().map(|(_, _, id)| id).collect();
        let mut got = Vec::new();
        if expected.len() >= 3 {
            let claim = claim_params(&["prio"], &[], 2, LONG_LEASE_MS);
            let batch = h
                .store
                .execution_claim(partition, &claim)
                .await
                .expect("claim");
            assert_eq!(
                batch.len(),
                2,
                "a batch returns max tasks when there are more"
            );
            got.extend(batch.into_iter().map(|t| t.execution_id));
        }
        loop {
            let claim = claim_params(&["prio"], &[], 1, LONG_LEASE_MS);
            let batch = h
                .store
                .execution_claim(partition, &claim)
                .await
                .expect("claim");
            assert!(batch.len() <= 1, "max 1 returned {}", batch.len());
            match batch.into_iter().next() {
                Some(task) => got.push(task.execution_id),
                None => break,
            }
        }
        assert_eq!(got, expected, "claim order on partition {partition}");
    }
    assert_audit_clean(&h).await;
}

/// A claim across partitions stops at `max`, and never returns duplicates.
pub async fn batch_claim_respects_max(h: Harness) {
    for _ in 0..20 {
        submit(&h, &in_lane("batch", &[])).await;
    }
    let first = claim_all(&h, &["batch"], &[], 5).await;
    assert_eq!(first.len(), 5);
    assert_eq!(task_ids(&first).len(), 5);
    let second = claim_all(&h, &["batch"], &[], 100).await;
    assert_eq!(second.len(), 15);
    assert!(task_ids(&first).is_disjoint(&task_ids(&second)));
    assert!(claim_all(&h, &["batch"], &[], 100).await.is_empty());
    assert_audit_clean(&h).await;
}

/// How many times a claimer retries an `unavailable` error (a busy store)
/// before the test fails.
const RETRIES_MAX: u32 = 200;

async fn with_retry<T, F, Fut>(what: &str, mut op: F) -> (T, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = weft_core::Result<T>>,
{
    let mut retries = 0;
    loop {
        match op().await {
            Ok(value) => return (value, retries),
            Err(e) if e.retryable() && retries < RETRIES_MAX => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{what}: {e:?} after {retries} retries"),
        }
    }
}

async fn claimer(store: std::sync::Arc<dyn Store>, worker: usize) -> (Vec<ExecutionId>, u32) {
    let count = store.partition_count().get();
    let mut claimed = Vec::new();
    let mut retries = 0;
    let mut claim = claim_params(&["conc"], &[], 8, LONG_LEASE_MS);
    claim.worker_id = format!("worker-{worker}");
    loop {
        let start = PartitionId(fastrand::u16(0..count));
        let (tasks, r) = with_retry("claim", || claim_across(store.as_ref(), &claim, start)).await;
        retries += r;
        // Nothing returns to the queue in this test, so a sweep that finds
        // nothing means every execution has been taken.
        if tasks.is_empty() {
            return (claimed, retries);
        }
        for task in tasks {
            let params = weft_core::CompleteParams {
                execution_id: task.execution_id.clone(),
                lease: crate::support::lease_of(&task),
                result: json!({"by": worker}),
            };
            let (done, r) = with_retry("complete", || store.execution_complete(&params)).await;
            retries += r;
            assert_eq!(done.state, State::Completed);
            claimed.push(task.execution_id);
        }
    }
}

/// Many claimers in parallel: every execution claimed exactly once.
pub async fn concurrent_claimers_claim_each_once(h: Harness) {
    const EXECUTIONS: usize = 500;
    const CLAIMERS: usize = 6;
    let mut submitted = BTreeSet::new();
    for i in 0..EXECUTIONS {
        let p = SubmitParams {
            payload: json!({"i": i}),
            ..in_lane("conc", &[])
        };
        submitted.insert(submit(&h, &p).await.id);
    }
    let mut workers = Vec::new();
    for worker in 0..CLAIMERS {
        let store = h.handle();
        workers.push(tokio::spawn(claimer(store, worker)));
    }
    let mut seen = BTreeMap::<ExecutionId, usize>::new();
    let mut retries = 0;
    for (worker, handle) in workers.into_iter().enumerate() {
        let (claimed, r) = handle.await.expect("claimer task");
        retries += r;
        for id in claimed {
            if let Some(other) = seen.insert(id.clone(), worker) {
                panic!("{id} claimed by workers {other} and {worker}");
            }
        }
    }
    assert_eq!(
        seen.len(),
        EXECUTIONS,
        "every execution claimed ({retries} retries)"
    );
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), submitted);
    let all = list_everything(&h).await;
    assert_eq!(all.len(), EXECUTIONS);
    for exec in &all {
        assert_eq!(exec.state, State::Completed, "{}", exec.id);
        assert_eq!(exec.attempts, 1, "{} claimed more than once", exec.id);
    }
    assert_audit_clean(&h).await;
}
