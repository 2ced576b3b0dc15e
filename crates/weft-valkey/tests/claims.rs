//! The multi-partition claims: `execution_claim_across` (probe, then claim,
//! two round trips) and `execution_claim_pipelined` (one round trip).
//!
//! Goal: they take each execution once, never more than asked overall
//! (`claim_across`) or per partition (`pipelined`), and leave indexes clean.
//! Method: spread executions over every partition and claim them in rounds.

mod common;

use std::collections::BTreeSet;

use weft_core::{ClaimParams, PartitionId, Store, SubmitParams};

fn claim(max: u32) -> ClaimParams {
    ClaimParams {
        worker_id: "w".into(),
        lanes: vec!["multi".into()],
        capabilities: vec![],
        max,
        lease_ms: 60_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_partition_claims_take_each_once() {
    let url = common::url(common::VALKEY_URL_VAR);
    let (store, _cleanup) = common::store_with(common::config(&url, Some(8))).await;
    let mut submitted = BTreeSet::new();
    for i in 0..40 {
        let params = SubmitParams {
            lane: Some("multi".into()),
            ..SubmitParams::new("k", i.into())
        };
        submitted.insert(
            store
                .execution_submit(&params)
                .await
                .expect("submit")
                .execution
                .id,
        );
    }
    let mut taken = BTreeSet::new();
    let first = store
        .execution_claim_across(&claim(7), PartitionId(3))
        .await
        .expect("across");
    assert_eq!(first.len(), 7, "exactly max when enough work");
    let all: Vec<PartitionId> = store.partition_count().iter().collect();
    let second = store
        .execution_claim_pipelined(&all, &claim(2))
        .await
        .expect("pipelined");
    assert!(second.len() <= 2 * all.len());
    let third = store
        .execution_claim_across(&claim(1000), PartitionId(0))
        .await
        .expect("rest");
    for task in first.iter().chain(&second).chain(&third) {
        assert!(
            taken.insert(task.execution_id.clone()),
            "{} taken twice",
            task.execution_id
        );
    }
    assert_eq!(taken, submitted, "every execution taken once");
    assert!(store
        .execution_claim_across(&claim(5), PartitionId(0))
        .await
        .expect("none")
        .is_empty());
    for p in store.partition_count().iter() {
        let audit = store.partition_audit(p).await.expect("audit");
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    }
}
