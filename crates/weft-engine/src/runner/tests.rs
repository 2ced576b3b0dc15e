//! Goal: the runner schedules passes as the design says: newly owned
//! partitions at once, lost ones never again, each at its reported due time,
//! idle ones at the poll interval, hinted ones early, every one after lagged
//! hints, failing ones with back-off; and it stops at once on shutdown.
//!
//! Method: a scripted scanner that records when each partition was run, fed
//! through real channels on a real clock with short durations; `wake_after`
//! is checked as a pure function.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weft_core::{Clock, DueHint, Error, PartitionId, Result, SystemClock};

use super::{wake_after, Runner, RunnerConfig, RunnerInputs};
use crate::metrics::LoopMetrics;
use crate::scanners::{ScanReport, Scanner};

type Runs = Arc<Mutex<Vec<(PartitionId, Instant)>>>;

/// Reports work due `due_in_ms` after each pass (none when `None`), or fails.
struct ScriptedScanner {
    runs: Runs,
    due_in_ms: Option<i64>,
    fail: Arc<AtomicBool>,
}

#[async_trait]
impl Scanner for ScriptedScanner {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn run_once(&self, partition: PartitionId) -> Result<ScanReport> {
        self.runs.lock().unwrap().push((partition, Instant::now()));
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("scripted failure".into()));
        }
        let now_ms = SystemClock.now_ms();
        Ok(ScanReport {
            store_calls: 1,
            started_ms: now_ms,
            now_ms,
            next_due_ms: self.due_in_ms.map(|d| now_ms + d),
            ..ScanReport::default()
        })
    }
}

struct Harness {
    runs: Runs,
    fail: Arc<AtomicBool>,
    owned: watch::Sender<BTreeSet<PartitionId>>,
    hints: broadcast::Sender<DueHint>,
    shutdown: watch::Sender<bool>,
    metrics: Arc<LoopMetrics>,
    task: JoinHandle<()>,
}

fn set(partitions: &[u16]) -> BTreeSet<PartitionId> {
    partitions.iter().copied().map(PartitionId).collect()
}

impl Harness {
    fn start(owned: &[u16], due_in_ms: Option<i64>, idle_poll_ms: u64, hints: usize) -> Self {
        let runs = Runs::default();
        let fail = Arc::new(AtomicBool::new(false));
        let (owned_tx, owned_rx) = watch::channel(set(owned));
        let (hints_tx, hints_rx) = broadcast::channel(hints);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(LoopMetrics::default());
        let scanner = ScriptedScanner {
            runs: runs.clone(),
            due_in_ms,
            fail: fail.clone(),
        };
        let config = RunnerConfig {
            idle_poll_max: Duration::from_millis(idle_poll_ms),
            pass_timeout: Duration::from_secs(1),
        };
        let inputs = RunnerInputs {
            owned: owned_rx,
            hints: Some(hints_rx),
            shutdown: shutdown_rx,
        };
        let runner = Runner::new(scanner, config, metrics.clone(), inputs);
        Self {
            runs,
            fail,
            owned: owned_tx,
            hints: hints_tx,
            shutdown: shutdown_tx,
            metrics,
            task: tokio::spawn(runner.run()),
        }
    }

    fn runs_of(&self, partition: u16) -> Vec<Instant> {
        let runs = self.runs.lock().unwrap();
        runs.iter()
            .filter(|(p, _)| p.0 == partition)
            .map(|(_, at)| *at)
            .collect()
    }

    async fn wait_runs(&self, partition: u16, count: usize) {
        for _ in 0..400 {
            if self.runs_of(partition).len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("partition {partition} did not run {count} times");
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(Duration::from_millis(200), self.task)
            .await
            .expect("the runner stops at once")
            .unwrap();
    }
}

#[tokio::test]
async fn owned_partitions_run_at_once_and_lost_ones_never_again() {
    let harness = Harness::start(&[0, 1], None, 10_000, 16);
    harness.wait_runs(0, 1).await;
    harness.wait_runs(1, 1).await;
    harness.owned.send_replace(set(&[1, 2]));
    harness.wait_runs(2, 1).await;
    // Lagged hints re-tick every owned partition, which must not include 0.
    for _ in 0..40 {
        let _ = harness.hints.send(DueHint {
            partition: PartitionId(0),
            due_ms: 0,
        });
    }
    harness.wait_runs(1, 2).await;
    assert_eq!(harness.runs_of(0).len(), 1);
    harness.stop().await;
}

#[tokio::test]
async fn each_partition_runs_again_at_its_due_time() {
    let harness = Harness::start(&[0], Some(40), 10_000, 16);
    harness.wait_runs(0, 3).await;
    let runs = harness.runs_of(0);
    for pair in runs.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(39), "early: {gap:?}");
        assert!(gap <= Duration::from_millis(150), "late: {gap:?}");
    }
    assert_eq!(harness.metrics.snapshot().store_calls, runs.len() as u64);
    harness.stop().await;
}

#[tokio::test]
async fn idle_partitions_are_polled_at_idle_poll_max() {
    let harness = Harness::start(&[0], None, 60, 16);
    harness.wait_runs(0, 3).await;
    for pair in harness.runs_of(0).windows(2) {
        let gap = pair[1] - pair[0];
        // Jittered down by up to a fifth, never longer.
        assert!(gap >= Duration::from_millis(47), "early: {gap:?}");
        assert!(gap <= Duration::from_millis(160), "late: {gap:?}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_hint_wakes_its_partition_early() {
    let harness = Harness::start(&[0, 1], None, 10_000, 16);
    harness.wait_runs(0, 1).await;
    harness.wait_runs(1, 1).await;
    let sent = Instant::now();
    let due_ms = SystemClock.now_ms() + 20;
    harness
        .hints
        .send(DueHint {
            partition: PartitionId(1),
            due_ms,
        })
        .unwrap();
    harness.wait_runs(1, 2).await;
    let woke = harness.runs_of(1)[1] - sent;
    assert!(
        woke >= Duration::from_millis(15),
        "before its due time: {woke:?}"
    );
    assert!(woke <= Duration::from_millis(150), "{woke:?}");
    // A hint for a partition not owned, or later than its wake, is ignored.
    harness
        .hints
        .send(DueHint {
            partition: PartitionId(9),
            due_ms,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(harness.runs_of(0).len(), 1);
    assert_eq!(harness.runs.lock().unwrap().len(), 3);
    harness.stop().await;
}

#[tokio::test]
async fn failing_passes_back_off() {
    let harness = Harness::start(&[0], None, 10_000, 16);
    // The runner has not run yet (current-thread runtime): every pass fails.
    harness.fail.store(true, Ordering::SeqCst);
    harness.wait_runs(0, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = harness.runs_of(0).len();
    // 50 ms doubling, jittered down by up to half: at most ~6 in 300 ms.
    assert!(runs <= 8, "no back-off: {runs} runs");
    assert_eq!(harness.metrics.snapshot().errors, runs as u64);
    harness.stop().await;
}

#[tokio::test]
async fn shutdown_stops_an_idle_runner_at_once() {
    let harness = Harness::start(&[0, 1, 2], None, 10_000, 16);
    harness.wait_runs(2, 1).await;
    harness.stop().await;
}

#[test]
fn wake_after_follows_the_report() {
    let at = Instant::now();
    let idle = Duration::from_millis(1_000);
    let report = |next_due_ms: Option<i64>, more: bool| ScanReport {
        now_ms: 10_000,
        next_due_ms,
        more,
        ..ScanReport::default()
    };
    let due = wake_after(&report(Some(10_250), false), at, idle);
    assert_eq!(
        (due.at, due.due_ms),
        (at + Duration::from_millis(250), Some(10_250))
    );
    let behind = wake_after(&report(Some(9_000), true), at, idle);
    assert_eq!((behind.at, behind.due_ms), (at, None));
    let spin_guard = wake_after(&report(Some(9_000), false), at, idle);
    assert_eq!(spin_guard.at, at + Duration::from_millis(1));
    for far in [None, Some(10_000 + 60_000)] {
        let poll = wake_after(&report(far, false), at, idle);
        assert_eq!(poll.due_ms, None, "capped polls do not measure lag");
        assert!(poll.at <= at + idle && poll.at >= at + idle.mul_f64(0.8));
    }
}
