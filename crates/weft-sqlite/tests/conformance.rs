//! The backend-generic conformance suite, run on the SQLite store in memory
//! and on a file. Both inject a `ManualClock` so tests move time instantly;
//! the file store also offers a second handle (its own connection on the same
//! file), as a second process would open it.

use std::sync::Arc;

use weft_conformance::Harness;
use weft_core::{ManualClock, Store};
use weft_sqlite::{SqliteConfig, SqliteStore};

/// The suite's clocks start here.
const T0: i64 = 1_700_000_000_000;

mod memory {
    use super::*;

    async fn harness() -> Harness {
        let clock = ManualClock::new(T0);
        let config = SqliteConfig::memory().with_clock(Arc::new(clock.clone()));
        let store = SqliteStore::open(config).expect("open in-memory store");
        // An in-memory database lives in its one connection, so the second
        // handle is a clone sharing it.
        let twin = store.clone();
        Harness::new(Arc::new(store))
            .with_clock(clock)
            .with_new_store(move || Arc::new(twin.clone()) as Arc<dyn Store>)
    }

    weft_conformance::conformance_suite!(harness);
}

mod file {
    use super::*;

    async fn harness() -> Harness {
        let clock = ManualClock::new(T0);
        let dir = tempfile::tempdir().expect("temporary directory");
        let config =
            SqliteConfig::file(dir.path().join("weft.db")).with_clock(Arc::new(clock.clone()));
        let store = SqliteStore::open(config.clone()).expect("open file store");
        Harness::new(Arc::new(store))
            .with_clock(clock)
            .with_guard(dir)
            .with_new_store(move || {
                let handle = SqliteStore::open(config.clone()).expect("open a second handle");
                Arc::new(handle) as Arc<dyn Store>
            })
    }

    weft_conformance::conformance_suite!(harness);
}
