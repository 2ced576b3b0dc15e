//! Goal: partition ownership behaves as DESIGN §6 says: one instance takes
//! every partition, two split them evenly, a crashed instance's partitions
//! move within about one lease, a graceful shutdown frees them at once, and a
//! store that stops answering makes an instance drop its set when it lapses.
//!
//! Method: real SQLite stores (in memory, or two handles on one file, as two
//! processes would have) with the system clock and short ownership leases;
//! every wait is a bounded poll on the observable condition, and the
//! measured durations are printed (`--nocapture`) and asserted loosely.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{engine_config, memory_store, wait_until, CountingStore};
use weft_core::{PartitionCount, PartitionId, Store};
use weft_engine::{Engine, EngineConfig, EngineHandle};
use weft_sqlite::{SqliteConfig, SqliteStore};

const LEASE_MS: i64 = 450;
const PARTITIONS: u16 = 32;

fn lease() -> Duration {
    Duration::from_millis(LEASE_MS as u64)
}

async fn wait_owned(
    what: &str,
    engine: &EngineHandle,
    count: usize,
    timeout: Duration,
) -> Duration {
    wait_until(what, timeout, || async {
        engine.owned_partitions().len() == count
    })
    .await
}

/// Starts two engines on `stores` and waits until they split 16/16.
async fn start_pair(a: Arc<dyn Store>, b: Arc<dyn Store>) -> (EngineHandle, EngineHandle) {
    let first = Engine::start(a, engine_config(LEASE_MS));
    wait_owned("first engine owns all", &first, 32, lease() * 4).await;
    let second = Engine::start(b, engine_config(LEASE_MS));
    let took = wait_until("an even split", lease() * 8, || async {
        first.owned_partitions().len() == 16 && second.owned_partitions().len() == 16
    })
    .await;
    eprintln!("two engines split 16/16 in {took:?}");
    let a_set: BTreeSet<_> = first.owned_partitions().into_iter().collect();
    let b_set: BTreeSet<_> = second.owned_partitions().into_iter().collect();
    assert!(a_set.is_disjoint(&b_set), "{a_set:?} vs {b_set:?}");
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_owns_every_partition() {
    let store = memory_store(PARTITIONS);
    let engine = Engine::start(store.clone(), engine_config(LEASE_MS));
    let took = wait_owned("all partitions", &engine, 32, lease() * 4).await;
    eprintln!("one engine owned 32 partitions after {took:?}");
    let expected: Vec<_> = (0..PARTITIONS).map(PartitionId).collect();
    assert_eq!(engine.owned_partitions(), expected);
    let owners = store.partition_owners().await.unwrap();
    assert_eq!(owners.len(), 32);
    assert!(owners.iter().all(|o| o.instance_id == engine.instance_id()));
    let metrics = engine.metrics();
    assert_eq!(metrics.owned_partitions, 32);
    assert_eq!(metrics.ownership.applied, 32, "32 partitions gained");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_engines_partitions_move_within_about_a_lease() {
    let store = memory_store(PARTITIONS);
    let (survivor, crashed) = start_pair(store.clone(), store.clone()).await;
    let crashed_at = Instant::now();
    crashed.abort();
    // The crashed instance's membership lapses one lease after its last
    // renewal; the survivor's next renewal (a third of a lease later at most)
    // takes its partitions.
    wait_owned("takeover", &survivor, 32, lease() * 4).await;
    let took = crashed_at.elapsed();
    eprintln!("takeover after a crash took {took:?} (lease {LEASE_MS} ms)");
    assert!(took <= lease() * 2, "takeover took {took:?}");
    let owners = store.partition_owners().await.unwrap();
    assert!(owners
        .iter()
        .all(|o| o.instance_id == survivor.instance_id()));
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_at_once_and_promptly() {
    let store = memory_store(PARTITIONS);
    let (stayer, leaver) = start_pair(store.clone(), store.clone()).await;
    let leaver_id = leaver.instance_id().to_owned();
    let started = Instant::now();
    leaver.shutdown().await;
    let shutdown_took = started.elapsed();
    eprintln!("graceful shutdown took {shutdown_took:?}");
    assert!(shutdown_took < Duration::from_secs(1), "{shutdown_took:?}");
    let owners = store.partition_owners().await.unwrap();
    assert!(
        owners.iter().all(|o| o.instance_id != leaver_id),
        "{owners:?}"
    );
    // The stayer picks them up at its next renewal, well before a lease.
    wait_owned("pick-up after a leave", &stayer, 32, lease() * 4).await;
    let took = started.elapsed();
    eprintln!("partitions moved after a graceful leave in {took:?}");
    assert!(took < lease(), "{took:?}");
    stayer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_file_split_evenly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let count = PartitionCount::new(PARTITIONS).unwrap();
    let open = || -> Arc<dyn Store> {
        let config = SqliteConfig::file(&path).with_partitions(count);
        Arc::new(SqliteStore::open(config).unwrap())
    };
    let (a, b) = start_pair(open(), open()).await;
    b.shutdown().await;
    wait_owned("pick-up after a leave", &a, 32, lease() * 4).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_drops_the_set_when_it_lapses() {
    let counting = CountingStore::new(memory_store(PARTITIONS), true);
    let engine = Engine::start(counting.clone(), engine_config(LEASE_MS));
    wait_owned("all partitions", &engine, 32, lease() * 4).await;
    counting.set_fail_rebalance(true);
    let failing_at = Instant::now();
    wait_owned("the lapsed set dropped", &engine, 0, lease() * 4).await;
    let took = failing_at.elapsed();
    eprintln!("owned set dropped {took:?} after the store stopped answering");
    // Kept while the last grant may still hold (at least ~2/3 of a lease).
    assert!(took >= lease() / 2, "dropped too early: {took:?}");
    let metrics = engine.metrics().ownership;
    assert!(metrics.errors > 0);
    assert_eq!(
        metrics.dropped, 32,
        "the lapsed partitions count as dropped"
    );
    counting.set_fail_rebalance(false);
    wait_owned("recovery", &engine, 32, lease() * 4).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configs_are_refused_before_anything_runs() {
    let counting = CountingStore::new(memory_store(4), true);
    let config = EngineConfig {
        tick_batch_max: 0,
        ..EngineConfig::default()
    };
    let error = Engine::try_start(counting.clone(), config).unwrap_err();
    assert_eq!(error.kind(), "invalid_argument");
    assert!(error.to_string().contains("tick_batch_max"), "{error}");
    assert!(counting.take_calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stop_stress_leaves_nothing_behind() {
    let store = memory_store(8);
    for round in 0..20 {
        let engine = Engine::start(store.clone(), engine_config(LEASE_MS));
        if round % 2 == 0 {
            wait_owned("all partitions", &engine, 8, lease() * 4).await;
        }
        let started = Instant::now();
        engine.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let owners = store.partition_owners().await.unwrap();
    assert!(owners.is_empty(), "{owners:?}");
}
