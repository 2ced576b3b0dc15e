//! Retention: ended executions are purged once the retention period passed.
//!
//! Goal: a completed, failed, cancelled or expired execution stays readable
//! until `finished_at + retention` and is gone after it (`not_found` for get
//! and attempts, absent from lists), while non-terminal executions are never
//! purged.
//!
//! Method: the store is assumed to run with the default retention period
//! (`RETENTION_MS_DEFAULT`, 7 days). That much store time can only be crossed
//! with a manual clock; on a store with a real clock the test is skipped and
//! says why.

use weft_core::{ListParams, State, RETENTION_MS_DEFAULT};

use crate::support::{
    assert_audit_clean, assert_not_found, cancelled, completed, expired, failed, get, list_all,
    list_everything, tick_all, waiting,
};
use crate::Harness;

/// Ended executions are purged after the retention period, not before.
pub async fn ended_executions_are_purged(h: Harness) {
    if h.clock.is_none() {
        eprintln!(
            "skipped: retention needs {RETENTION_MS_DEFAULT} ms of store time, which only a \
             manual clock can cross"
        );
        return;
    }
    let alive = waiting(&h).await;
    let ended = [
        completed(&h).await,
        failed(&h).await,
        cancelled(&h).await,
        expired(&h).await,
    ];
    let latest = ended
        .iter()
        .filter_map(|e| e.finished_at_ms)
        .max()
        .expect("finished_at");
    let earliest = ended
        .iter()
        .filter_map(|e| e.finished_at_ms)
        .min()
        .expect("finished_at");
    let now = crate::support::now(&h).await;
    // One millisecond before the earliest retention falls due: nothing goes.
    h.advance_ms(earliest + RETENTION_MS_DEFAULT - now - 1)
        .await;
    assert_eq!(tick_all(&h).await, 0, "purged before its retention ended");
    for exec in &ended {
        assert_eq!(get(&h, &exec.id).await.state, exec.state);
    }
    assert_audit_clean(&h).await;

    let now = crate::support::now(&h).await;
    h.advance_ms(latest + RETENTION_MS_DEFAULT - now + 1).await;
    assert_eq!(
        tick_all(&h).await as usize,
        ended.len(),
        "one purge per ended execution"
    );
    for exec in &ended {
        assert_not_found(h.store.execution_get(&exec.id).await, "get after purge");
        assert_not_found(h.store.attempt_list(&exec.id).await, "attempts after purge");
    }
    let left = list_everything(&h).await;
    assert_eq!(
        left.len(),
        1,
        "only the waiting execution is left: {left:?}"
    );
    assert_eq!(left[0].id, alive.id);
    let terminal = ListParams {
        state: Some(State::Completed),
        ..ListParams::default()
    };
    assert!(list_all(&h, &terminal, 10).await.is_empty());
    assert_eq!(get(&h, &alive.id).await.state, State::Waiting);
    assert_audit_clean(&h).await;
}
