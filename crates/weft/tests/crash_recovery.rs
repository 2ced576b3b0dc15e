//! Goal: an engine killed with SIGKILL in the middle of a sweep loses nothing
//! and applies nothing twice; a restarted engine brings every execution to
//! the state it should reach.
//!
//! Method: fill a SQLite file store with due work of four kinds (delays,
//! abandoned leases with and without attempts left, deadlines), start
//! `weft engine` as a real process, SIGKILL it once it has applied part of
//! the work, restart it, and check every execution and the partition audit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use weft_core::{claim_across, ClaimParams, PartitionId, State, Store, SubmitParams};
use weft_sqlite::{SqliteConfig, SqliteStore};

const DELAYED: usize = 6000;
const LEASED_EACH: usize = 100;
const DEADLINED: usize = 100;

fn start_engine(store_url: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "engine",
            "--store",
            store_url,
            "--ownership-lease-ms",
            "1000",
        ])
        .env("WEFT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn weft engine");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read banner");
    assert!(line.contains("running"), "unexpected banner {line:?}");
    // Keep reading so the engine's later lines never meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    child
}

fn submit(lane: &str, extra: impl Fn(&mut SubmitParams)) -> SubmitParams {
    let mut params = SubmitParams::new("crash.test", json!({"lane": lane}));
    params.lane = Some(lane.to_owned());
    extra(&mut params);
    params
}

async fn seed(store: &SqliteStore) {
    for _ in 0..DELAYED {
        let p = submit("delayed", |p| p.delay_ms = Some(300));
        store.execution_submit(&p).await.expect("submit delayed");
    }
    for (lane, max_attempts) in [("lease-last", 1), ("lease-retry", 3)] {
        for _ in 0..LEASED_EACH {
            let p = submit(lane, |p| p.max_attempts = Some(max_attempts));
            store.execution_submit(&p).await.expect("submit leased");
        }
        let claim = ClaimParams {
            worker_id: "doomed-worker".into(),
            lanes: vec![lane.into()],
            capabilities: vec![],
            max: 1000,
            lease_ms: 200,
        };
        let tasks = claim_across(store, &claim, PartitionId(0))
            .await
            .expect("claim");
        assert_eq!(tasks.len(), LEASED_EACH);
    }
    for _ in 0..DEADLINED {
        let p = submit("deadline", |p| p.deadline_ms = Some(300));
        store.execution_submit(&p).await.expect("submit deadline");
    }
}

async fn count(store: &SqliteStore, lane: &str, state: State) -> usize {
    let depths = store.lane_depths().await.expect("lane depths");
    let depth = depths
        .into_iter()
        .find(|d| d.lane == lane)
        .unwrap_or_default();
    let n = match state {
        State::Waiting => depth.waiting,
        State::Delayed => depth.delayed,
        State::Active => depth.active,
        _ => unreachable!("only non-terminal states are counted"),
    };
    usize::try_from(n).expect("count fits")
}

async fn all_in_state(store: &SqliteStore, lane: &str, state: State) -> Vec<weft_core::Execution> {
    let mut params = weft_core::ListParams {
        lane: Some(lane.into()),
        limit: 1000,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = store.execution_list(&params).await.expect("list");
        out.extend(page.items);
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    for exec in &out {
        assert_eq!(exec.state, state, "{} in lane {lane}", exec.id);
    }
    out
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "engine did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_sweep_then_restart_reaches_every_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: &Path = &dir.path().join("weft.sqlite3");
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::open(SqliteConfig::file(path)).expect("open store");
    seed(&store).await;
    // Let every timer come due so the engine starts with one long sweep.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(count(&store, "delayed", State::Delayed).await, DELAYED);

    let mut first = start_engine(&url);
    let give_up = Instant::now() + Duration::from_secs(20);
    while count(&store, "delayed", State::Delayed).await == DELAYED {
        assert!(
            Instant::now() < give_up,
            "the engine never started sweeping"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let left = count(&store, "delayed", State::Delayed).await;
    assert!(
        left > 0,
        "the sweep finished before the kill; raise DELAYED"
    );
    eprintln!("killed mid-sweep with {left} of {DELAYED} delayed executions left");

    let mut second = start_engine(&url);
    let give_up = Instant::now() + Duration::from_secs(30);
    while count(&store, "delayed", State::Delayed).await > 0
        || count(&store, "lease-last", State::Active).await > 0
        || count(&store, "lease-retry", State::Active).await > 0
        || count(&store, "deadline", State::Waiting).await > 0
    {
        assert!(
            Instant::now() < give_up,
            "the restarted engine did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = terminate(&mut second);
    assert!(status.success(), "engine exited with {status}");

    assert_eq!(
        all_in_state(&store, "delayed", State::Waiting).await.len(),
        DELAYED
    );
    assert_eq!(
        all_in_state(&store, "deadline", State::Expired).await.len(),
        DEADLINED
    );
    for (lane, state) in [
        ("lease-last", State::Failed),
        ("lease-retry", State::Waiting),
    ] {
        let execs = all_in_state(&store, lane, state).await;
        assert_eq!(execs.len(), LEASED_EACH);
        for exec in execs {
            assert_eq!(exec.failures, 1, "{} counted its lease loss once", exec.id);
            let attempts = store.attempt_list(&exec.id).await.expect("attempts");
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].state, weft_core::AttemptState::LeaseLost);
        }
    }
    for partition in store.partition_count().iter() {
        let audit = store.partition_audit(partition).await.expect("audit");
        assert!(
            audit.problems.is_empty(),
            "{partition}: {:?}",
            audit.problems
        );
    }
}
