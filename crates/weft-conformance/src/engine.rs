//! Engine: partition ownership and the timer drain over the store under test.
//!
//! Goal: two engine instances on one store divide the partitions evenly and
//! disjointly; a graceful shutdown hands an instance's partitions over at
//! once; when an instance dies without leaving, the survivor takes its
//! partitions over within about one ownership lease; a running engine applies
//! due timers (delays, lapsed leases) without anyone calling
//! `partition_tick`.
//!
//! Method: start real `weft_engine` instances with a short ownership lease
//! and wait on their owned-partition watches (with a generous bound, never a
//! fixed sleep). The engine runs on real time, so on a store with a manual
//! clock the test makes that clock follow real time for its duration
//! (`Harness::follow_real_time`); each engine gets its own store handle when
//! the harness offers `new_store`.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use weft_core::{AttemptState, PartitionId, State, SubmitParams};
use weft_engine::{Engine, EngineConfig, EngineHandle};

use crate::support::{attempts, claim_exec, get, now, params, submit};
use crate::Harness;

/// Ownership lease of the engines under test: short, so takeover is quick.
const OWNERSHIP_LEASE_MS: i64 = 600;
/// How long any engine reaction may take before the test fails.
const REACTION_MAX: Duration = Duration::from_secs(15);

fn engine(h: &Harness, name: &str) -> EngineHandle {
    let config = EngineConfig {
        instance_id: format!("conformance-{name}-{:08x}", fastrand::u32(..)),
        ownership_lease_ms: OWNERSHIP_LEASE_MS,
        idle_poll_max: Duration::from_millis(50),
        store_call_timeout: Duration::from_secs(2),
        ..EngineConfig::default()
    };
    Engine::start(h.handle(), config)
}

fn all_partitions(h: &Harness) -> BTreeSet<PartitionId> {
    h.store.partition_count().iter().collect()
}

fn owned(e: &EngineHandle) -> BTreeSet<PartitionId> {
    e.owned_partitions().into_iter().collect()
}

/// Waits until `done` holds, re-checking whenever an engine's owned set
/// changes (and at least every 50 ms); fails after `REACTION_MAX`.
async fn wait_for(
    what: &str,
    mut watches: Vec<watch::Receiver<BTreeSet<PartitionId>>>,
    mut done: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + REACTION_MAX;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
        let any_change = futures_select_all(changes.collect());
        let _ = tokio::time::timeout(Duration::from_millis(50), any_change).await;
    }
}

/// Resolves when the first of `futures` does.
async fn futures_select_all<F: Future + Unpin>(mut futures: Vec<F>) {
    if futures.is_empty() {
        std::future::pending::<()>().await;
    }
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

/// Polls the store until `check` holds for `id`; fails after `REACTION_MAX`.
async fn wait_for_state(h: &Harness, id: &weft_core::ExecutionId, state: State) {
    let deadline = tokio::time::Instant::now() + REACTION_MAX;
    loop {
        let exec = get(h, id).await;
        if exec.state == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} stayed {:?}, expected {state:?}",
            exec.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two instances split the partitions evenly; a graceful shutdown hands them
/// all to the other at once.
pub async fn two_engines_split_partitions(h: Harness) {
    let _clock = h.follow_real_time();
    let all = all_partitions(&h);
    let fair = all.len().div_ceil(2);
    let a = engine(&h, "a");
    wait_for(
        "a to own every partition",
        vec![a.owned_partitions_watch()],
        || owned(&a) == all,
    )
    .await;
    let b = engine(&h, "b");
    let watches = vec![a.owned_partitions_watch(), b.owned_partitions_watch()];
    wait_for("an even, disjoint split", watches, || {
        let (oa, ob) = (owned(&a), owned(&b));
        oa.is_disjoint(&ob)
            && oa.union(&ob).copied().collect::<BTreeSet<_>>() == all
            && oa.len() <= fair
            && ob.len() <= fair
    })
    .await;

    let owners = h.store.partition_owners().await.expect("owners");
    let store_now = now(&h).await;
    for partition in owned(&b) {
        let owner = owners.iter().find(|o| o.partition == partition);
        let owner = owner.unwrap_or_else(|| panic!("no owner row for {partition}"));
        assert_eq!(
            owner.instance_id,
            b.instance_id(),
            "the store agrees on {partition}"
        );
        assert!(
            owner.expires_at_ms > store_now,
            "a live lease on {partition}"
        );
    }

    a.shutdown().await;
    wait_for(
        "b to take every partition",
        vec![b.owned_partitions_watch()],
        || owned(&b) == all,
    )
    .await;
    b.shutdown().await;
    let owners = h.store.partition_owners().await.expect("owners");
    let store_now = now(&h).await;
    let held: Vec<_> = owners
        .iter()
        .filter(|o| o.expires_at_ms > store_now)
        .collect();
    assert!(
        held.is_empty(),
        "a graceful shutdown releases every partition: {held:?}"
    );
}

/// An instance that dies without leaving loses its partitions to the
/// survivor once its leases lapse.
pub async fn takeover_after_a_crash(h: Harness) {
    let _clock = h.follow_real_time();
    let all = all_partitions(&h);
    let a = engine(&h, "a");
    let b = engine(&h, "b");
    let watches = vec![a.owned_partitions_watch(), b.owned_partitions_watch()];
    wait_for("both engines to own partitions", watches, || {
        let (oa, ob) = (owned(&a), owned(&b));
        !oa.is_empty() && !ob.is_empty() && oa.union(&ob).count() == all.len()
    })
    .await;
    let crashed = a.instance_id().to_owned();
    a.abort();
    wait_for("b to take over", vec![b.owned_partitions_watch()], || {
        owned(&b) == all
    })
    .await;
    let owners = h.store.partition_owners().await.expect("owners");
    let store_now = now(&h).await;
    for owner in owners.iter().filter(|o| o.expires_at_ms > store_now) {
        assert_ne!(
            owner.instance_id, crashed,
            "the dead instance still holds {owner:?}"
        );
    }
    b.shutdown().await;
}

/// A running engine applies due timers by itself: a delay and a lapsed lease.
pub async fn engine_applies_due_timers(h: Harness) {
    let _clock = h.follow_real_time();
    let all = all_partitions(&h);
    let e = engine(&h, "timers");
    wait_for(
        "the engine to own every partition",
        vec![e.owned_partitions_watch()],
        || owned(&e) == all,
    )
    .await;
    let delayed = submit(
        &h,
        &SubmitParams {
            delay_ms: Some(100),
            ..params("engine.delay")
        },
    )
    .await;
    let leased = submit(&h, &params("engine.lease")).await;
    claim_exec(&h, &leased, 200).await;
    wait_for_state(&h, &delayed.id, State::Waiting).await;
    wait_for_state(&h, &leased.id, State::Waiting).await;
    let list = attempts(&h, &leased.id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AttemptState::LeaseLost);
    let task = claim_exec(&h, &delayed, 60_000).await;
    let done = crate::support::complete(&h, &task, json!(1))
        .await
        .expect("complete");
    assert_eq!(done.state, State::Completed);
    e.shutdown().await;
    crate::support::assert_audit_clean(&h).await;
}
