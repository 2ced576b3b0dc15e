//! Attempt history: rows are fields `att:<n>` of the execution, read back in
//! attempt order; rows an older library left in the list `a:<id>` come first.
//!
//! Goal: `attempt_list` orders by number, not by text (attempt 10
//! after 9), and still reads rows written before the rows moved.
//! Method: fail one execution eleven times with no backoff, then move its
//! first rows into a legacy list by hand and read again.

mod common;

use weft_core::{
    AttemptState, Backoff, ClaimParams, ErrorInfo, FailParams, State, Store, SubmitParams,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_come_back_in_number_order_legacy_rows_first() {
    let url = common::url(common::VALKEY_URL_VAR);
    let (store, cleanup) = common::store_with(common::config(&url, Some(2))).await;
    let prefix = cleanup.prefix.clone();
    let params = SubmitParams {
        lane: Some("att".into()),
        max_attempts: Some(12),
        backoff: Some(Backoff {
            initial_ms: 0,
            max_ms: 0,
            multiplier: 1.0,
            jitter: 0.0,
        }),
        ..SubmitParams::new("k", serde_json::json!({"pad": "x".repeat(100)}))
    };
    let id = store
        .execution_submit(&params)
        .await
        .expect("submit")
        .execution
        .id;
    let claim = ClaimParams {
        worker_id: "w".into(),
        lanes: vec!["att".into()],
        capabilities: vec![],
        max: 1,
        lease_ms: 60_000,
    };
    for n in 1..=11 {
        let tasks = store
            .execution_claim(id.partition(), &claim)
            .await
            .expect("claim");
        let task = tasks
            .first()
            .unwrap_or_else(|| panic!("attempt {n} not claimable"));
        let failed = store
            .execution_fail(&FailParams {
                execution_id: id.clone(),
                lease: task.lease_ref(),
                error: ErrorInfo::new("boom", format!("attempt {n}")),
                retryable: true,
            })
            .await
            .expect("fail");
        assert_eq!(failed.state, State::Waiting, "no backoff: waiting again");
    }
    let numbers = |rows: &[weft_core::Attempt]| rows.iter().map(|a| a.number.0).collect::<Vec<_>>();
    let rows = store.attempt_list(&id).await.expect("attempts");
    assert_eq!(numbers(&rows), (1..=11).collect::<Vec<_>>());
    assert!(rows.iter().all(|a| a.state == AttemptState::Failed));
    assert_eq!(
        rows[9].error.as_ref().map(|e| e.message.as_str()),
        Some("attempt 10")
    );

    // An older library kept ended rows in a list `a:<id>`: move the first
    // three there and the history reads the same.
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*x:{id}"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    let [exec_key] = keys.as_slice() else {
        panic!("one hash for {id}, found {keys:?}");
    };
    let list_key = exec_key.replace(&format!("x:{id}"), &format!("a:{id}"));
    for n in 1..=3 {
        let field = format!("att:{n}");
        let row: String = redis::cmd("HGET")
            .arg(exec_key)
            .arg(&field)
            .query_async(&mut conn)
            .await
            .expect("hget");
        let _: () = redis::pipe()
            .cmd("RPUSH")
            .arg(&list_key)
            .arg(row)
            .cmd("HDEL")
            .arg(exec_key)
            .arg(&field)
            .query_async(&mut conn)
            .await
            .expect("move");
    }
    let again = store.attempt_list(&id).await.expect("attempts");
    assert_eq!(
        again, rows,
        "legacy rows first, then the fields, same history"
    );
}
