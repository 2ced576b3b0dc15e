//! Scenario 6: an idle engine. Counts the store calls an engine makes per
//! second with 32 partitions and nothing to do, after a warm-up; `probe`
//! reads a server-side command counter over the same window, where there is
//! one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use weft_core::{CountingStore, Store};
use weft_engine::{Engine, EngineConfig};

use super::bar;

/// Store calls per second, and server commands per second when `probe`
/// answers, over `seconds` after a one-second warm-up.
pub async fn run<F, Fut>(
    store: Arc<dyn Store>,
    seconds: u64,
    label: &str,
    probe: F,
) -> Result<(f64, Option<f64>), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<u64>>,
{
    let counting = Arc::new(CountingStore::new(store));
    let engine =
        Engine::try_start(counting.clone(), EngineConfig::default()).map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let progress = bar(seconds, label);
    let (calls_before, server_before) = (counting.calls(), probe().await);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        progress.inc(1);
    }
    let (calls_after, server_after) = (counting.calls(), probe().await);
    progress.finish();
    engine.shutdown().await;
    let per_s = |delta: u64| delta as f64 / seconds as f64;
    let server = server_after
        .zip(server_before)
        .map(|(a, b)| per_s(a.saturating_sub(b)));
    Ok((per_s(calls_after - calls_before), server))
}
