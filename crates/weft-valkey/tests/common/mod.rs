//! Shared by the integration tests: connecting to the test server named by an
//! environment variable, with a fresh random key prefix per store so tests
//! run in parallel on one server, and removing that prefix's keys after.

#![allow(dead_code)]

pub mod flows;

use std::sync::Arc;

use weft_core::{PartitionCount, Store};
use weft_valkey::{ValkeyConfig, ValkeyStore};

/// The variable naming the Valkey server the tests use.
pub const VALKEY_URL_VAR: &str = "WEFT_TEST_VALKEY_URL";
/// The variable naming an optional Redis 7.0+ server to run the suite on too.
pub const REDIS_URL_VAR: &str = "WEFT_TEST_REDIS_URL";

/// The server URL in `var`, or a panic that says how to get one.
pub fn url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: these tests need a Valkey server. Run scripts/test.sh, which \
             starts one, or start one with `scripts/valkey.sh start 6390 /tmp/valkey-dev` and \
             set {var}=redis://127.0.0.1:6390"
        )
    })
}

/// A key prefix no other test uses.
pub fn random_prefix() -> String {
    format!("wt{:016x}:", fastrand::u64(..))
}

/// A test configuration: `url`, a random prefix, `partitions`.
pub fn config(url: &str, partitions: Option<u16>) -> ValkeyConfig {
    ValkeyConfig {
        url: url.to_owned(),
        key_prefix: random_prefix(),
        partitions: partitions.map(|p| PartitionCount::new(p).expect("a valid count")),
        machine: weft_core::MachineConfig::default(),
    }
}

/// Connects or panics with the reason.
pub async fn connect(config: ValkeyConfig) -> ValkeyStore {
    ValkeyStore::connect(config.clone())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", config.url))
}

/// Connects a store with `config` and the cleanup of its prefix's keys.
pub async fn store_with(config: ValkeyConfig) -> (ValkeyStore, Cleanup) {
    let cleanup = Cleanup {
        url: config.url.clone(),
        prefix: config.key_prefix.clone(),
    };
    (connect(config).await, cleanup)
}

/// Deletes every key under a prefix when dropped, so test runs do not pile
/// up data on a shared server.
pub struct Cleanup {
    /// The server.
    pub url: String,
    /// The prefix to remove.
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut conn) {
            Ok(keys) => keys,
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<i64> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
        }
    }
}

/// A conformance harness on the server in `var`: a fresh store, a second
/// handle opener (its own connection) and cleanup of its keys.
pub async fn harness(var: &str) -> weft_conformance::Harness {
    let url = url(var);
    let config = config(&url, None);
    let (store, cleanup) = store_with(config.clone()).await;
    weft_conformance::Harness::new(Arc::new(store))
        .with_guard(cleanup)
        .with_new_store(move || {
            let config = config.clone();
            // The suite runs on a multi-thread runtime; opening a connection
            // is async, the opener is not.
            let store = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(connect(config))
            });
            Arc::new(store) as Arc<dyn Store>
        })
}
