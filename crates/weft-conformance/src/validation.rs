//! Validation: bad input is refused with a typed error and changes nothing.
//!
//! Goal: every out-of-bounds field of a submit, a claim, a heartbeat or a
//! list is `invalid_argument` naming the field as the client spells it
//! (`kind`, `lane`, `priority`, `delay_ms`, `max_attempts`, `backoff.*`,
//! `timeout_ms`, `deadline_ms`, `requires`, `idempotency_key`, `tags`;
//! `worker_id`, `lanes`, `capabilities`, `max`, `lease_ms`; `limit`); an
//! oversized payload is `payload_too_large`; an unknown, malformed or
//! out-of-range id is `not_found` for every operation; and the store is
//! unchanged afterwards.
//!
//! Method: table-driven calls, each followed by a check that the store is
//! still empty (or the one execution untouched), and a final audit.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_core::{
    Backoff, CancelParams, CompleteParams, Error, ErrorInfo, ExecutionId, FailParams,
    HeartbeatParams, LeaseEpoch, LeaseId, LeaseRef, ListParams, PartitionId, ReleaseParams,
    SubmitParams, PAYLOAD_BYTES_MAX_DEFAULT,
};

use crate::support::{
    active, assert_audit_clean, assert_invalid, assert_not_found, assert_store_empty, claim_params,
    get, heartbeat, list_everything, now, submit, waiting, LEASE_MS, LONG_LEASE_MS,
};
use crate::Harness;

fn with(edit: impl FnOnce(&mut SubmitParams)) -> SubmitParams {
    let mut p = SubmitParams::new("valid.kind", json!({"ok": true}));
    edit(&mut p);
    p
}

fn bad_submits() -> Vec<(SubmitParams, &'static str)> {
    let backoff = |edit: fn(&mut Backoff)| {
        let mut b = Backoff::default();
        edit(&mut b);
        with(move |p| p.backoff = Some(b))
    };
    vec![
        (with(|p| p.kind = String::new()), "kind"),
        (with(|p| p.kind = "has space".into()), "kind"),
        (with(|p| p.kind = "k".repeat(129)), "kind"),
        (with(|p| p.lane = Some(String::new())), "lane"),
        (with(|p| p.lane = Some("x".repeat(65))), "lane"),
        (with(|p| p.lane = Some("new\nline".into())), "lane"),
        (with(|p| p.priority = 1001), "priority"),
        (with(|p| p.priority = -1001), "priority"),
        (with(|p| p.delay_ms = Some(-1)), "delay_ms"),
        (
            with(|p| {
                p.delay_ms = Some(10);
                p.run_at_ms = Some(10);
            }),
            "delay_ms",
        ),
        (with(|p| p.run_at_ms = Some(-1)), "run_at"),
        (with(|p| p.max_attempts = Some(0)), "max_attempts"),
        (with(|p| p.max_attempts = Some(1001)), "max_attempts"),
        (with(|p| p.timeout_ms = Some(0)), "timeout_ms"),
        (with(|p| p.timeout_ms = Some(-5)), "timeout_ms"),
        (with(|p| p.deadline_ms = Some(0)), "deadline_ms"),
        (with(|p| p.deadline_ms = Some(-5)), "deadline_ms"),
        (backoff(|b| b.initial_ms = -1), "backoff.initial_ms"),
        (backoff(|b| b.max_ms = 10), "backoff.max_ms"),
        (backoff(|b| b.multiplier = 0.5), "backoff.multiplier"),
        (backoff(|b| b.jitter = 1.5), "backoff.jitter"),
        (with(|p| p.requires = vec!["a,b".into()]), "requires"),
        (with(|p| p.requires = vec![String::new()]), "requires"),
        (
            with(|p| p.idempotency_key = Some(String::new())),
            "idempotency_key",
        ),
        (
            with(|p| p.idempotency_key = Some("k".repeat(257))),
            "idempotency_key",
        ),
        (
            with(|p| p.tags = BTreeMap::from([(String::new(), "v".into())])),
            "tags",
        ),
    ]
}

/// Every bad submit names its field and creates nothing.
pub async fn bad_submits_are_refused(h: Harness) {
    for (params, field) in bad_submits() {
        let result = h.store.execution_submit(&params).await;
        assert_invalid(result, field, &format!("{params:?}"));
        assert_store_empty(&h).await;
    }
    assert_audit_clean(&h).await;
}

/// A payload over the limit is `payload_too_large`; one at the limit fits.
/// Assumes the store runs with the default limit of 1 MiB.
pub async fn payload_limit_is_enforced(h: Harness) {
    let limit = PAYLOAD_BYTES_MAX_DEFAULT;
    // A JSON string serializes with its two quotes.
    let sized = |bytes: u64| Value::String("x".repeat(usize::try_from(bytes - 2).unwrap_or(0)));
    let over = SubmitParams::new("big", sized(limit + 1));
    match h.store.execution_submit(&over).await {
        Err(Error::PayloadTooLarge { bytes, max_bytes }) => {
            assert_eq!((bytes, max_bytes), (limit + 1, limit));
        }
        other => panic!(
            "expected payload_too_large, got {:?}",
            other.map(|s| s.created)
        ),
    }
    assert_store_empty(&h).await;
    let at = SubmitParams::new("big", sized(limit));
    let exec = submit(&h, &at).await;
    assert_eq!(get(&h, &exec.id).await.payload, at.payload, "stored intact");
    assert_audit_clean(&h).await;
}

/// Bad claims name their field and take nothing.
pub async fn bad_claims_are_refused(h: Harness) {
    let exec = waiting(&h).await;
    let partition = exec.id.partition();
    let lane = exec.lane.as_str();
    let mut cases = vec![
        (claim_params(&[lane], &[], 1, 99), "lease_ms"),
        (claim_params(&[lane], &[], 1, 3_600_001), "lease_ms"),
        (claim_params(&[lane], &[], 0, LEASE_MS), "max"),
        (claim_params(&[lane], &[], 1001, LEASE_MS), "max"),
        (claim_params(&["bad lane"], &[], 1, LEASE_MS), "lanes"),
        (
            claim_params(&[lane], &["bad cap"], 1, LEASE_MS),
            "capabilities",
        ),
    ];
    let mut nobody = claim_params(&[lane], &[], 1, LEASE_MS);
    nobody.worker_id = String::new();
    cases.push((nobody, "worker_id"));
    for (claim, field) in cases {
        let result = h.store.execution_claim(partition, &claim).await;
        assert_invalid(result, field, &format!("{claim:?}"));
        assert_eq!(
            get(&h, &exec.id).await,
            exec,
            "a refused claim takes nothing"
        );
    }
    let beyond = PartitionId(h.store.partition_count().get());
    let claim = claim_params(&[lane], &[], 1, LEASE_MS);
    let result = h.store.execution_claim(beyond, &claim).await;
    assert!(
        result.is_err(),
        "a claim on partition {beyond}, beyond P: {result:?}"
    );
    assert_eq!(get(&h, &exec.id).await, exec);
    assert_audit_clean(&h).await;
}

/// A heartbeat with a bad duration is refused and leaves the lease alone.
pub async fn bad_heartbeat_is_refused(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    for lease_ms in [0, 99, -1, 3_600_001] {
        assert_invalid(
            heartbeat(&h, &task, Some(lease_ms)).await,
            "lease_ms",
            "heartbeat",
        );
    }
    assert_eq!(get(&h, &exec.id).await, exec, "the lease is untouched");
    assert_audit_clean(&h).await;
}

/// Oversized worker writes are refused and leave the attempt running: a
/// result over the payload limit, an over-long error kind, an over-long
/// cancel reason.
pub async fn bad_worker_writes_are_refused(h: Harness) {
    let (exec, task) = active(&h, LONG_LEASE_MS).await;
    let lease = LeaseRef {
        lease_id: task.lease.id.clone(),
        epoch: task.lease.epoch,
    };
    let too_big =
        Value::String("x".repeat(usize::try_from(PAYLOAD_BYTES_MAX_DEFAULT).unwrap_or(0)));
    let complete = CompleteParams {
        execution_id: exec.id.clone(),
        lease: lease.clone(),
        result: too_big,
    };
    match h.store.execution_complete(&complete).await {
        Err(Error::PayloadTooLarge { .. }) => {}
        other => panic!("oversized result: {other:?}"),
    }
    let fail = FailParams {
        execution_id: exec.id.clone(),
        lease,
        error: ErrorInfo {
            message: "m".into(),
            kind: Some("k".repeat(129)),
        },
        retryable: true,
    };
    assert_invalid(h.store.execution_fail(&fail).await, "error.kind", "fail");
    let cancel = CancelParams {
        execution_id: exec.id.clone(),
        reason: Some("r".repeat(1025)),
    };
    assert_invalid(h.store.execution_cancel(&cancel).await, "reason", "cancel");
    assert_eq!(get(&h, &exec.id).await, exec, "the attempt still runs");
    assert_audit_clean(&h).await;
}

/// List limits outside 1..=1000 are refused.
pub async fn bad_list_limits_are_refused(h: Harness) {
    waiting(&h).await;
    for limit in [0, 1001] {
        let params = ListParams {
            limit,
            ..ListParams::default()
        };
        assert_invalid(h.store.execution_list(&params).await, "limit", "list");
    }
    assert_eq!(list_everything(&h).await.len(), 1);
}

/// Unknown, malformed and out-of-range ids are `not_found` everywhere.
pub async fn unknown_ids_are_not_found(h: Harness) {
    let t = now(&h).await;
    let malformed: ExecutionId = serde_json::from_value(json!("ex_nope")).expect("any string");
    let ids = [
        ExecutionId::mint(PartitionId(0), t),
        ExecutionId::mint(PartitionId(h.store.partition_count().get() - 1), t),
        ExecutionId::mint(PartitionId(h.store.partition_count().get()), t),
        malformed,
    ];
    let lease = LeaseRef {
        lease_id: LeaseId::random(),
        epoch: LeaseEpoch(1),
    };
    for id in ids {
        let s = &h.store;
        assert_not_found(s.execution_get(&id).await, "get");
        assert_not_found(s.attempt_list(&id).await, "attempts");
        assert_not_found(s.execution_replay(&id).await, "replay");
        let cancel = CancelParams {
            execution_id: id.clone(),
            reason: None,
        };
        assert_not_found(s.execution_cancel(&cancel).await, "cancel");
        let beat = HeartbeatParams {
            execution_id: id.clone(),
            lease: lease.clone(),
            lease_ms: None,
        };
        assert_not_found(s.execution_heartbeat(&beat).await, "heartbeat");
        let done = CompleteParams {
            execution_id: id.clone(),
            lease: lease.clone(),
            result: json!(null),
        };
        assert_not_found(s.execution_complete(&done).await, "complete");
        let failed = FailParams {
            execution_id: id.clone(),
            lease: lease.clone(),
            error: ErrorInfo::new("x", "y"),
            retryable: true,
        };
        assert_not_found(s.execution_fail(&failed).await, "fail");
        let release = ReleaseParams {
            execution_id: id.clone(),
            lease: lease.clone(),
        };
        assert_not_found(s.execution_release(&release).await, "release");
    }
    assert_store_empty(&h).await;
    assert_audit_clean(&h).await;
}
