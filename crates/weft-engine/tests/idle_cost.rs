//! Goal: an idle engine costs a few store calls per second, not thousands
//! (DESIGN §10), with default settings and 32 partitions.
//!
//! Method: a counting wrapper around a real in-memory SQLite store. After the
//! start-up ticks, count every store call over a window long enough to hold
//! one full idle-poll cycle (the 2 s right after start-up would hold none and
//! flatter the engine), report calls per second per method, and check the
//! bound. A window is a measurement, so it is a sleep, not a wait.

mod common;

use std::time::{Duration, Instant};

use common::{memory_store, wait_until, CountingStore};
use weft_engine::{Engine, EngineConfig, IDLE_POLL_MAX_DEFAULT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_engine_makes_few_store_calls() {
    let counting = CountingStore::new(memory_store(32), true);
    let engine = Engine::start(counting.clone(), EngineConfig::default());
    wait_until("start-up ticks", Duration::from_secs(5), || async {
        engine.metrics().timer_drain.runs >= 32
    })
    .await;
    let startup = counting.take_calls();
    eprintln!("start-up calls: {startup:?}");

    let window = Duration::from_secs(2);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let first = counting.take_calls();
    // Then to the end of the first idle-poll cycle, where the polls land.
    tokio::time::sleep(IDLE_POLL_MAX_DEFAULT + Duration::from_millis(500) - window).await;
    let cycle = counting.take_calls();
    let cycle_s = started.elapsed().as_secs_f64() - window.as_secs_f64();

    let per_s = |calls: &std::collections::BTreeMap<&str, u64>, secs: f64| {
        calls.values().sum::<u64>() as f64 / secs
    };
    let first_rate = per_s(&first, window.as_secs_f64());
    let cycle_rate = per_s(&cycle, cycle_s);
    eprintln!("idle, first 2 s: {first:?} = {first_rate:.1} calls/s");
    eprintln!("idle, next {cycle_s:.1} s (one poll cycle): {cycle:?} = {cycle_rate:.1} calls/s");
    assert!(first_rate <= 50.0, "{first_rate}");
    assert!(cycle_rate <= 50.0, "{cycle_rate}");
    assert!(cycle.get("partition_tick").copied().unwrap_or(0) <= 40);
    engine.shutdown().await;
}
