//! Outbox: a cascade larger than one operation's chunk continues through the
//! partition's outbox until done, and a large flow's cancel does too, never
//! leaving a member running.
//!
//! Method: a root with 600 children (over `CASCADE_CHUNK_MAX`); complete the
//! root and check that one operation promoted exactly one chunk, then tick
//! the partition (as its owner would) until nothing is due, checking the
//! counts and the audit at every tick. Then cancel the flow the same way.

use serde_json::Value;
use weft_core::flow::{EdgeOn, FlowEdge, FlowNodeSpec, FlowSpec, FlowState, CASCADE_CHUNK_MAX};
use weft_core::{
    claim_across, ClaimParams, CompleteParams, FlowId, LeaseRef, PartitionId, State, SubmitParams,
};

use crate::flows::unsupported;
use crate::support::unique_lane;
use crate::Harness;

const CHILDREN: usize = 600;
const _: () = assert!(
    CHILDREN + 1 > CASCADE_CHUNK_MAX,
    "the flow must not fit one chunk"
);

fn fan_out(lane: &str) -> FlowSpec {
    let node = |key: String| {
        let mut params = SubmitParams::new("outbox.test", Value::Null);
        params.lane = Some(lane.to_owned());
        FlowNodeSpec { key, params }
    };
    let mut nodes = vec![node("root".into())];
    let mut edges = Vec::new();
    for i in 0..CHILDREN {
        nodes.push(node(format!("child-{i}")));
        edges.push(FlowEdge {
            from: "root".into(),
            to: format!("child-{i}"),
            on: EdgeOn::Success,
        });
    }
    FlowSpec {
        nodes,
        edges,
        ..FlowSpec::default()
    }
}

/// Ticks `partition` until nothing is due now; the audit is clean and the
/// flow's counts add up after every tick. Returns the ticks taken.
async fn drain(h: &Harness, partition: PartitionId, flow: &FlowId) -> u32 {
    let mut ticks = 0;
    loop {
        let report = h.store.partition_tick(partition, 64).await.expect("tick");
        let audit = h.store.partition_audit(partition).await.expect("audit");
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
        let now = h.store.flow_get(flow).await.expect("get");
        assert_eq!(now.counts.total() as usize, CHILDREN + 1);
        ticks += 1;
        assert!(ticks < 100, "the outbox never drained");
        if report.next_due_ms.is_none_or(|due| due > report.now_ms) {
            return ticks;
        }
    }
}

/// A 600-way fan-out promotes through the outbox, then cancels through it.
pub async fn large_cascades_and_cancels_continue_through_the_outbox(h: Harness) {
    if unsupported(&h) {
        return;
    }
    let lane = unique_lane();
    let flow = h
        .store
        .flow_create(&fan_out(&lane))
        .await
        .expect("create")
        .flow;
    let partition = flow.id.partition();
    let claim = ClaimParams {
        worker_id: "w".into(),
        lanes: vec![lane],
        capabilities: vec![],
        max: 1,
        lease_ms: 30_000,
    };
    let task = claim_across(h.store.as_ref(), &claim, partition)
        .await
        .expect("claim")
        .remove(0);
    let complete = CompleteParams {
        execution_id: task.execution_id.clone(),
        lease: LeaseRef {
            lease_id: task.lease.id.clone(),
            epoch: task.lease.epoch,
        },
        result: Value::Null,
    };
    h.store
        .execution_complete(&complete)
        .await
        .expect("complete");
    let after_one = h.store.flow_get(&flow.id).await.expect("get");
    assert_eq!(
        after_one.counts.get(State::Waiting) as usize,
        CASCADE_CHUNK_MAX,
        "one operation promoted one chunk"
    );
    assert_eq!(after_one.counts.total() as usize, CHILDREN + 1);
    let audit = h.store.partition_audit(partition).await.expect("audit");
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);

    let ticks = drain(&h, partition, &flow.id).await;
    let promoted = h.store.flow_get(&flow.id).await.expect("get");
    assert_eq!(
        promoted.counts.get(State::Waiting) as usize,
        CHILDREN,
        "after {ticks} ticks"
    );
    assert_eq!(promoted.state, FlowState::Running);

    // Claim one so a member is active, then cancel the whole flow.
    let active = claim_across(h.store.as_ref(), &claim, partition)
        .await
        .expect("claim");
    assert_eq!(active.len(), 1);
    let cancelled = h.store.flow_cancel(&flow.id).await.expect("cancel");
    assert!(cancelled.counts.get(State::Cancelled) > 0);
    assert!(!cancelled.state.is_terminal(), "the rest is in the outbox");
    drain(&h, partition, &flow.id).await;
    let done = h.store.flow_get(&flow.id).await.expect("get");
    assert_eq!(done.state, FlowState::Cancelled);
    assert_eq!(done.counts.get(State::Cancelled) as usize, CHILDREN);
    assert_eq!(done.counts.get(State::Completed), 1);
    assert!(done.finished_at_ms.is_some());
}
