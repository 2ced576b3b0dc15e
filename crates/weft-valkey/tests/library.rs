//! Loading the library, guarding its version, and fixing `P`.
//!
//! Goal: a client loads its library into a server that lacks it or runs an
//! older one, refuses a newer one with a clear message, reloads after the
//! server lost its functions, and refuses a partition count that differs
//! from the one recorded.
//! Method: replace the server's `weft` library by hand, then connect. These
//! tests change a library every store on the server shares, so they take a
//! lock and run one at a time, and restore the real library before leaving.

mod common;

use weft_core::{Error, ExecutionId, Store, SubmitParams};
use weft_valkey::{library_source, LIBRARY_VERSION};

static SERVER_LIBRARY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("url");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn load_fake(url: &str, version: &str) {
    let source = format!(
        "#!lua name=weft\nredis.register_function{{function_name='weft_version', \
         callback=function() return '{version}' end, flags={{'no-writes'}}}}"
    );
    let mut conn = admin(url).await;
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(source)
        .query_async(&mut conn)
        .await
        .expect("load a fake library");
}

async fn restore(url: &str) {
    let mut conn = admin(url).await;
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library_source())
        .query_async(&mut conn)
        .await
        .expect("restore the library");
}

#[tokio::test]
async fn a_newer_library_is_refused() {
    let _lock = SERVER_LIBRARY.lock().await;
    let url = common::url(common::VALKEY_URL_VAR);
    load_fake(&url, &(LIBRARY_VERSION + 1).to_string()).await;
    let result = weft_valkey::ValkeyStore::connect(common::config(&url, Some(2))).await;
    restore(&url).await;
    match result {
        Err(Error::Conflict { message }) => assert!(message.contains("newer"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn an_older_library_is_replaced() {
    let _lock = SERVER_LIBRARY.lock().await;
    let url = common::url(common::VALKEY_URL_VAR);
    load_fake(&url, "0").await;
    let (store, _cleanup) = common::store_with(common::config(&url, Some(2))).await;
    let mut conn = admin(&url).await;
    let version: String = redis::cmd("FCALL")
        .arg("weft_version")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("version");
    assert_eq!(version, LIBRARY_VERSION.to_string());
    store
        .execution_submit(&SubmitParams::new("k", serde_json::json!(1)))
        .await
        .expect("submit");
}

#[tokio::test]
async fn a_lost_library_is_reloaded() {
    let _lock = SERVER_LIBRARY.lock().await;
    let url = common::url(common::VALKEY_URL_VAR);
    let (store, _cleanup) = common::store_with(common::config(&url, Some(2))).await;
    let exec = store
        .execution_submit(&SubmitParams::new("k", serde_json::json!(1)))
        .await
        .expect("submit")
        .execution;
    let mut conn = admin(&url).await;
    let _: String = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("weft")
        .query_async(&mut conn)
        .await
        .expect("delete");
    // The next call finds no function, reloads, and succeeds.
    assert_eq!(
        store
            .execution_get(&exec.id)
            .await
            .expect("get after reload"),
        exec
    );
    let missing = ExecutionId::mint(exec.id.partition(), 1);
    assert!(matches!(
        store.execution_get(&missing).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn the_partition_count_is_fixed_at_first_use() {
    let _lock = SERVER_LIBRARY.lock().await;
    let url = common::url(common::VALKEY_URL_VAR);
    let first = common::config(&url, Some(8));
    let (store, _cleanup) = common::store_with(first.clone()).await;
    assert_eq!(store.partition_count().get(), 8);
    let other = weft_valkey::ValkeyConfig {
        partitions: Some(weft_core::PartitionCount::new(16).expect("16")),
        ..first.clone()
    };
    match weft_valkey::ValkeyStore::connect(other).await {
        Err(Error::InvalidArgument { field, message }) => {
            assert_eq!(field, "partitions");
            assert!(message.contains("initialised with 8"), "{message}");
        }
        other => panic!("expected invalid partitions, got {other:?}"),
    }
    let unspecified = weft_valkey::ValkeyConfig {
        partitions: None,
        ..first
    };
    assert_eq!(
        common::connect(unspecified).await.partition_count().get(),
        8
    );
}
