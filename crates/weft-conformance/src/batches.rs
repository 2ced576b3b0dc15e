//! Batches: many submits or many completions in one call.
//!
//! Goal: `execution_submit_many` creates each item as `execution_submit`
//! would, in order, or nothing at all when one item is bad; idempotency keys
//! behave as in single submits, also between items of one batch.
//! `execution_complete_many` applies each completion as
//! `execution_complete_brief` would and answers each item's outcome on its
//! own: a refused item (lost lease, unknown id, result too large) changes
//! nothing and does not stop the others; flow members settle their flows.
//! Both refuse an empty batch and one over `BATCH_MAX`.
//!
//! Method: compare what a batch returns with the items sent and with what
//! `get`, `list` and `lane_depths` read back; claim what was created; check
//! refused batches left the store empty; audit every partition after each
//! step. Every execution gets a lane of its own unless a test says otherwise.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use weft_core::flow::FlowState;
use weft_core::{
    AttemptState, CompleteParams, Error, ExecutionId, LeaseEpoch, ListParams, Result, State,
    SubmitParams, Submitted, BATCH_MAX, PAYLOAD_BYTES_MAX_DEFAULT,
};

use crate::support::{
    active, advance_past, assert_audit_clean, assert_invalid, assert_not_claimable,
    assert_store_empty, attempts, claim_exec, completion, get, list_all, list_everything, now,
    tick_all, unique_lane, LONG_LEASE_MS,
};
use crate::Harness;

/// Which item of `submit_many_creates_each_in_order` is delayed, and by how
/// much.
const DELAYED_ITEM: usize = 7;
const DELAY_MS: i64 = 1_000;

/// A JSON string whose serialized size is `bytes` (its two quotes included).
fn sized(bytes: u64) -> Value {
    Value::String("x".repeat(usize::try_from(bytes - 2).unwrap_or(0)))
}

/// Submits `batch`, which must be accepted.
async fn submit_many(h: &Harness, batch: &[SubmitParams]) -> Vec<Submitted> {
    let out = h
        .store
        .execution_submit_many(batch)
        .await
        .unwrap_or_else(|e| panic!("submit_many of {} items: {e}", batch.len()));
    assert_eq!(out.len(), batch.len(), "one answer per item");
    out
}

/// Completes `batch`, which must be accepted as a batch.
async fn complete_many(h: &Harness, batch: &[CompleteParams]) -> Vec<Result<State>> {
    let out = h
        .store
        .execution_complete_many(batch)
        .await
        .unwrap_or_else(|e| panic!("complete_many of {} items: {e}", batch.len()));
    assert_eq!(out.len(), batch.len(), "one answer per item");
    out
}

/// Each item's outcome as a state or an error kind, for comparisons.
fn kinds(out: &[Result<State>]) -> Vec<std::result::Result<State, &'static str>> {
    out.iter()
        .map(|r| r.as_ref().copied().map_err(Error::kind))
        .collect()
}

/// Twenty items, each different in kind, lane, payload and priority; one
/// delayed, one needing a capability, one tagged.
pub async fn submit_many_creates_each_in_order(h: Harness) {
    let base = unique_lane();
    let batch: Vec<SubmitParams> = (0..20usize)
        .map(|i| SubmitParams {
            lane: Some(format!("{base}.{i}")),
            priority: (i32::try_from(i).unwrap_or(0) - 10) * 50,
            delay_ms: (i == DELAYED_ITEM).then_some(DELAY_MS),
            requires: if i == 11 { vec!["gpu".into()] } else { vec![] },
            tags: if i == 5 {
                BTreeMap::from([("team".to_owned(), "batch".to_owned())])
            } else {
                BTreeMap::new()
            },
            ..SubmitParams::new(
                format!("batch.kind{i}"),
                json!({"i": i, "text": "x".repeat(i * 7), "nested": [i, {"mod": i % 3}]}),
            )
        })
        .collect();
    let t0 = now(&h).await;
    let out = submit_many(&h, &batch).await;
    let t1 = now(&h).await;

    let mut seen = BTreeSet::new();
    for (i, (p, s)) in batch.iter().zip(&out).enumerate() {
        let e = &s.execution;
        assert!(s.created, "item {i} has no key, so it is new");
        assert!(seen.insert(e.id.clone()), "item {i} reuses id {}", e.id);
        assert_eq!(e.kind, p.kind, "item {i}");
        assert_eq!(Some(&e.lane), p.lane.as_ref(), "item {i}");
        assert_eq!(e.payload, p.payload, "item {i}");
        assert_eq!(e.priority, p.priority, "item {i}");
        assert_eq!(e.requires, p.requires, "item {i}");
        assert_eq!(e.tags, p.tags, "item {i}");
        assert!(e.idempotency_key.is_none(), "item {i}");
        assert_eq!((e.attempts, e.failures), (0, 0), "item {i}");
        assert!(
            (t0..=t1).contains(&e.created_at_ms),
            "item {i}: created_at is the store's time"
        );
        if i == DELAYED_ITEM {
            assert_eq!(e.state, State::Delayed, "item {i}");
            assert_eq!(e.run_at_ms, Some(e.created_at_ms + DELAY_MS), "item {i}");
        } else {
            assert_eq!(e.state, State::Waiting, "item {i}");
            assert!(e.run_at_ms.is_none(), "item {i}");
        }
        assert_eq!(
            &get(&h, &e.id).await,
            e,
            "get returns what item {i} returned"
        );
    }
    let listed = list_everything(&h).await;
    assert_eq!(
        listed.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>(),
        seen,
        "the store holds exactly the batch"
    );
    let depths = h.store.lane_depths().await.expect("lane depths");
    for (i, p) in batch.iter().enumerate() {
        let lane = p.lane.as_deref().unwrap_or_default();
        let d = depths
            .iter()
            .find(|d| d.lane == lane)
            .unwrap_or_else(|| panic!("lane of item {i} not listed: {depths:?}"));
        let expected = if i == DELAYED_ITEM { (0, 1) } else { (1, 0) };
        assert_eq!(
            (d.waiting, d.delayed, d.active),
            (expected.0, expected.1, 0)
        );
    }
    assert_audit_clean(&h).await;

    for (i, s) in out.iter().enumerate() {
        let exec = &s.execution;
        if i == DELAYED_ITEM {
            assert_not_claimable(&h, exec).await;
            advance_past(&h, exec.created_at_ms + DELAY_MS).await;
            tick_all(&h).await;
        }
        let task = claim_exec(&h, exec, LONG_LEASE_MS).await;
        assert_eq!((&task.kind, &task.payload), (&exec.kind, &exec.payload));
        assert_eq!(task.attempt.0, 1, "item {i}");
    }
    assert_audit_clean(&h).await;
}

/// A batch with one bad item creates nothing, whichever item is bad, and
/// answers what a single submit of that item answers; empty and oversized
/// batches are refused, a batch of exactly `BATCH_MAX` is not.
pub async fn submit_many_refuses_a_bad_batch_whole(h: Harness) {
    let lane = unique_lane();
    let good = |i: usize| SubmitParams {
        lane: Some(lane.clone()),
        ..SubmitParams::new("batch.good", json!({ "i": i }))
    };
    let key = format!("{lane}-key");
    let keyed = SubmitParams {
        idempotency_key: Some(key.clone()),
        ..good(100)
    };
    let bad = [
        (
            SubmitParams {
                kind: String::new(),
                ..good(90)
            },
            "invalid_argument",
        ),
        (
            SubmitParams {
                priority: 5_000,
                ..good(91)
            },
            "invalid_argument",
        ),
        (
            SubmitParams {
                lane: Some("bad lane".into()),
                ..good(92)
            },
            "invalid_argument",
        ),
        (
            SubmitParams {
                payload: sized(PAYLOAD_BYTES_MAX_DEFAULT + 1),
                ..good(93)
            },
            "payload_too_large",
        ),
    ];
    for (n, (item, expected)) in bad.iter().enumerate() {
        let single = h.store.execution_submit(item).await;
        assert_eq!(
            single.as_ref().map(|s| s.created).map_err(Error::kind),
            Err(*expected),
            "case {n}: a single submit of the bad item"
        );
        for at in [0, 3, 6] {
            let mut batch: Vec<SubmitParams> = (0..6).map(good).collect();
            batch[1] = keyed.clone();
            batch.insert(at, item.clone());
            let refused = h.store.execution_submit_many(&batch).await;
            assert_eq!(
                refused.as_ref().map(Vec::len).map_err(Error::kind),
                Err(*expected),
                "case {n}, bad item at {at}"
            );
            if n == 0 {
                assert_invalid(
                    refused,
                    &format!("executions[{at}].kind"),
                    "an invalid field names its item",
                );
            }
            assert_store_empty(&h).await;
        }
    }
    let first = h.store.execution_submit(&keyed).await.expect("submit");
    assert!(first.created, "no refused batch recorded the key");
    assert_eq!(first.execution.payload, keyed.payload);

    assert_invalid(
        h.store.execution_submit_many(&[]).await,
        "executions",
        "an empty batch",
    );
    let over: Vec<SubmitParams> = (0..=BATCH_MAX).map(good).collect();
    assert_invalid(
        h.store.execution_submit_many(&over).await,
        "executions",
        "a batch over BATCH_MAX",
    );
    let filter = ListParams {
        lane: Some(lane.clone()),
        ..ListParams::default()
    };
    assert_eq!(list_all(&h, &filter, 1000).await.len(), 1, "only the key");

    let full = submit_many(&h, &over[..BATCH_MAX]).await;
    assert!(full.iter().all(|s| s.created));
    assert_eq!(list_all(&h, &filter, 1000).await.len(), BATCH_MAX + 1);
    assert_audit_clean(&h).await;
}

/// Keys seen before return their execution, a key repeated within the batch
/// creates once, the other items are created; a repeated batch creates
/// nothing.
pub async fn submit_many_honours_idempotency_keys(h: Harness) {
    let base = unique_lane();
    let item = |key: Option<&str>, n: i64| SubmitParams {
        lane: Some(format!("{base}.{n}")),
        idempotency_key: key.map(|k| format!("{base}-{k}")),
        ..SubmitParams::new("batch.keyed", json!({ "n": n }))
    };
    let old = h
        .store
        .execution_submit(&item(Some("old"), 1))
        .await
        .expect("submit");
    assert!(old.created);
    let old = old.execution;

    let batch = [
        item(Some("old"), 2),
        item(None, 3),
        item(Some("twice"), 4),
        item(Some("twice"), 5),
        item(Some("once"), 6),
        item(None, 7),
        item(Some("old"), 8),
    ];
    let out = submit_many(&h, &batch).await;
    let created: Vec<bool> = out.iter().map(|s| s.created).collect();
    assert_eq!(created, [false, true, true, false, true, true, false]);
    assert_eq!(out[0].execution, old, "a known key returns its execution");
    assert_eq!(out[6].execution, old);
    assert_eq!(
        out[3].execution, out[2].execution,
        "a key repeated in the batch returns the first item's execution"
    );
    assert_eq!(out[2].execution.payload, json!({ "n": 4 }));
    for i in [1, 2, 4, 5] {
        let e = &out[i].execution;
        assert_eq!(e.payload, batch[i].payload, "item {i}");
        assert_eq!(e.idempotency_key, batch[i].idempotency_key, "item {i}");
        assert_eq!(e.state, State::Waiting, "item {i}");
        assert_eq!(&get(&h, &e.id).await, e, "item {i}");
    }
    let all = list_everything(&h).await;
    let expected: BTreeSet<ExecutionId> = [0, 1, 2, 4, 5]
        .iter()
        .map(|&i| out[i].execution.id.clone())
        .collect();
    assert_eq!(all.len(), 5, "{all:#?}");
    assert_eq!(
        all.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>(),
        expected
    );

    let keyed: Vec<SubmitParams> = batch
        .iter()
        .filter(|p| p.idempotency_key.is_some())
        .cloned()
        .collect();
    let again = submit_many(&h, &keyed).await;
    let first: Vec<&ExecutionId> = [0, 2, 3, 4, 6]
        .iter()
        .map(|&i| &out[i].execution.id)
        .collect();
    assert_eq!(
        again.iter().map(|s| &s.execution.id).collect::<Vec<_>>(),
        first,
        "a repeated batch returns the same executions"
    );
    assert!(again.iter().all(|s| !s.created), "and creates nothing");
    assert_eq!(list_everything(&h).await.len(), 5);
    assert_audit_clean(&h).await;
}

/// Valid completions, a forged lease, an unknown id, a duplicate, a result
/// over the limit and a valid retry of it: each answered on its own, in
/// order, and only the valid ones written.
pub async fn complete_many_reports_each_item(h: Harness) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(active(&h, LONG_LEASE_MS).await.1);
    }
    let result = |n: u32| json!({ "n": n });
    let mut forged = completion(&tasks[1], json!("forged"));
    forged.lease.epoch = LeaseEpoch(tasks[1].lease.epoch.0 + 1);
    let mut unknown = completion(&tasks[1], json!("unknown"));
    unknown.execution_id = ExecutionId::mint(tasks[1].execution_id.partition(), 0);
    let batch = [
        completion(&tasks[0], result(0)),
        forged,
        unknown,
        completion(&tasks[2], result(2)),
        completion(&tasks[0], result(0)),
        completion(&tasks[3], sized(PAYLOAD_BYTES_MAX_DEFAULT + 1)),
        completion(&tasks[3], result(3)),
    ];
    let out = complete_many(&h, &batch).await;
    assert_eq!(
        kinds(&out),
        [
            Ok(State::Completed),
            Err("lease_lost"),
            Err("not_found"),
            Ok(State::Completed),
            Ok(State::Completed),
            Err("payload_too_large"),
            Ok(State::Completed),
        ]
    );
    for (t, n) in [(0, 0), (2, 2), (3, 3)] {
        let exec = get(&h, &tasks[t].execution_id).await;
        assert_eq!(exec.state, State::Completed, "task {t}");
        assert_eq!(exec.result, Some(result(n)), "task {t}");
        assert!(
            exec.lease.is_none() && exec.finished_at_ms.is_some(),
            "task {t}"
        );
        let rows = attempts(&h, &exec.id).await;
        assert_eq!(rows.len(), 1, "task {t}");
        assert_eq!(rows[0].state, AttemptState::Succeeded, "task {t}");
    }
    let untouched = get(&h, &tasks[1].execution_id).await;
    assert_eq!(
        untouched.state,
        State::Active,
        "the forged item wrote nothing"
    );
    assert_eq!(untouched.lease.as_ref(), Some(&tasks[1].lease));
    assert!(untouched.result.is_none());
    assert_audit_clean(&h).await;

    // The true lease still completes it; an earlier item replays unchanged.
    let done = get(&h, &tasks[0].execution_id).await;
    let out = complete_many(
        &h,
        &[
            completion(&tasks[1], result(1)),
            completion(&tasks[0], result(0)),
        ],
    )
    .await;
    assert_eq!(kinds(&out), [Ok(State::Completed), Ok(State::Completed)]);
    assert_eq!(
        get(&h, &tasks[0].execution_id).await,
        done,
        "a replay writes nothing"
    );
    let exec = get(&h, &tasks[1].execution_id).await;
    assert_eq!(
        (exec.state, exec.result),
        (State::Completed, Some(result(1)))
    );

    assert_invalid(
        h.store.execution_complete_many(&[]).await,
        "completions",
        "an empty batch",
    );
    let over = vec![completion(&tasks[0], result(0)); BATCH_MAX + 1];
    assert_invalid(
        h.store.execution_complete_many(&over).await,
        "completions",
        "a batch over BATCH_MAX",
    );
    assert_audit_clean(&h).await;
}

/// A flow member completed in a batch settles its flow as a single
/// completion does: its downstream becomes claimable with its result as
/// input; a refused item for the blocked downstream changes nothing.
pub async fn complete_many_settles_flows(h: Harness) {
    if crate::flows::unsupported(&h) {
        return;
    }
    let spec = crate::flows::spec(&["a", "b"], &[("a", "b")]);
    let flow = h.store.flow_create(&spec).await.expect("flow_create").flow;
    let member = |key: &str| {
        flow.member(key)
            .unwrap_or_else(|| panic!("{} has no node {key}", flow.id))
            .clone()
    };
    let (a, b) = (member("a"), member("b"));
    assert_eq!(get(&h, &b).await.state, State::Blocked);
    let a_task = claim_exec(&h, &get(&h, &a).await, LONG_LEASE_MS).await;
    let (_, other) = active(&h, LONG_LEASE_MS).await;

    let mut early = completion(&a_task, json!("too early"));
    early.execution_id = b.clone();
    let out = complete_many(
        &h,
        &[
            completion(&a_task, json!({ "from": "a" })),
            early,
            completion(&other, json!(7)),
        ],
    )
    .await;
    assert_eq!(
        kinds(&out),
        [
            Ok(State::Completed),
            Err("lease_lost"),
            Ok(State::Completed)
        ]
    );
    let other = get(&h, &other.execution_id).await;
    assert_eq!(
        (other.state, other.result),
        (State::Completed, Some(json!(7)))
    );
    let settled = h.store.flow_get(&flow.id).await.expect("flow_get");
    let states: Vec<(&str, State)> = settled
        .nodes
        .iter()
        .map(|n| (n.key.as_str(), n.state))
        .collect();
    assert_eq!(states, [("a", State::Completed), ("b", State::Waiting)]);
    assert_eq!(settled.state, FlowState::Running);
    assert_audit_clean(&h).await;

    let b_exec = get(&h, &b).await;
    assert_eq!(b_exec.state, State::Waiting);
    assert!(b_exec.result.is_none(), "the refused item wrote nothing");
    let b_task = claim_exec(&h, &b_exec, LONG_LEASE_MS).await;
    assert_eq!(
        b_task.inputs,
        BTreeMap::from([("a".to_owned(), json!({ "from": "a" }))])
    );
    let out = complete_many(&h, &[completion(&b_task, json!("b"))]).await;
    assert_eq!(kinds(&out), [Ok(State::Completed)]);
    let ended = h.store.flow_get(&flow.id).await.expect("flow_get");
    assert_eq!(ended.state, FlowState::Completed);
    assert!(ended.finished_at_ms.is_some());
    assert_audit_clean(&h).await;
}
