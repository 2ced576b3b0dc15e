//! Counts the Valkey commands one task costs (submit → claim → complete),
//! scripts' inner commands included, and the round trips, then times a
//! batch. Usage:
//!
//! ```sh
//! cargo run --release -p weft-valkey --example commands_per_task -- redis://127.0.0.1:6390 2000 10
//! ```
//!
//! Use a server of its own: `CONFIG RESETSTAT` clears the server's counters.
//! The run's keys are deleted at the end.

use std::collections::BTreeMap;
use std::time::Instant;

use weft_core::{ClaimParams, CompleteParams, LeaseRef, PartitionId, Store, SubmitParams};
use weft_valkey::{ValkeyConfig, ValkeyStore};

async fn stats(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("info");
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="));
        out.insert(
            name.to_owned(),
            calls.and_then(|c| c.parse().ok()).unwrap_or(0),
        );
    }
    out
}

#[tokio::main]
async fn main() -> weft_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6390".into());
    let tasks: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let max: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let config = ValkeyConfig {
        key_prefix: format!("bench{:08x}:", fastrand::u32(..)),
        ..ValkeyConfig::new(&url)
    };
    let prefix = config.key_prefix.clone();
    let store = ValkeyStore::connect(config).await?;
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .expect("reset");
    let payload = serde_json::json!({"data": "x".repeat(4096)});
    let started = Instant::now();
    for _ in 0..tasks {
        store
            .execution_submit(&SubmitParams::new("bench", payload.clone()))
            .await?;
    }
    let submitted = started.elapsed();
    let claim = ClaimParams {
        worker_id: "bench".into(),
        lanes: vec!["default".into()],
        capabilities: vec![],
        max,
        lease_ms: 60_000,
    };
    let mut done = 0;
    let mut calls = 0u64;
    while done < tasks {
        calls += 1;
        let batch = store.execution_claim_across(&claim, PartitionId(0)).await?;
        for task in batch {
            let lease = LeaseRef {
                lease_id: task.lease.id,
                epoch: task.lease.epoch,
            };
            let params = CompleteParams {
                execution_id: task.execution_id,
                lease,
                result: 1.into(),
            };
            store.execution_complete(&params).await?;
            done += 1;
        }
    }
    let total = started.elapsed();
    let after = stats(&mut admin).await;
    let fcalls = after.get("fcall").copied().unwrap_or(0);
    let inner: u64 = after
        .iter()
        .filter(|(k, _)| *k != "fcall" && *k != "info")
        .map(|(_, v)| v)
        .sum();
    println!("tasks: {tasks}, 4 KiB payloads, one client, sequential");
    println!(
        "submit: {:.0}/s",
        f64::from(tasks) / submitted.as_secs_f64()
    );
    println!(
        "submit+claim+complete: {:.0} tasks/s",
        f64::from(tasks) / total.as_secs_f64()
    );
    println!(
        "FCALLs per task: {:.2} ({calls} claim sweeps of up to {max})",
        fcalls as f64 / f64::from(tasks)
    );
    println!(
        "commands inside scripts per task: {:.2}",
        inner as f64 / f64::from(tasks)
    );
    println!("by command: {after:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut admin)
        .await
        .expect("keys");
    for chunk in keys.chunks(1000) {
        let _: i64 = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(&mut admin)
            .await
            .expect("unlink");
    }
    Ok(())
}
