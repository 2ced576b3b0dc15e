//! The shared runner: schedules a [`Scanner`] over the owned partitions.
//!
//! Definitions: the runner keeps one wake per owned partition in a
//! `DueSchedule`. A partition's wake is the due time its last pass reported
//! (converted to a sleep with the same pass's store `now_ms`), capped at
//! `idle_poll_max`; a partition newly owned is due at once.
//!
//! Invariants, between passes: the schedule holds exactly the owned
//! partitions; every wake is at most `idle_poll_max` (plus back-off after
//! errors) away; one wake runs at most `RUNS_PER_WAKE_MAX` passes before the
//! runner looks at shutdown, ownership and hints again.
//!
//! Key operations: `run` sleeps until the earliest wake, or until a due hint,
//! an ownership change or shutdown arrives. Passes run one at a time: the
//! store serialises a partition's writes anyway, and one task keeps the
//! schedule free of locks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use weft_core::{DueHint, PartitionId};

use crate::metrics::LoopMetrics;
use crate::scanners::{ScanReport, Scanner};
use crate::timing::{backoff, jitter_down, millis, DueSchedule, StoreClock, Wake};

/// Most passes per wake before the runner checks its channels again; keeps
/// shutdown and ownership changes prompt when many partitions are behind.
pub(crate) const RUNS_PER_WAKE_MAX: u32 = 32;
/// First retry delay after a failed pass.
pub(crate) const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest retry delay after failed passes (also capped by `idle_poll_max`).
pub(crate) const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Idle polls are shortened by up to this fraction so that partitions first
/// ticked together spread out instead of polling in bursts.
const IDLE_POLL_SPREAD: f64 = 0.2;

/// The runner's settings, taken from a validated `EngineConfig`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunnerConfig {
    pub(crate) idle_poll_max: Duration,
    pub(crate) pass_timeout: Duration,
}

/// What the runner listens to besides its timers.
pub(crate) struct RunnerInputs {
    pub(crate) owned: watch::Receiver<BTreeSet<PartitionId>>,
    pub(crate) hints: Option<broadcast::Receiver<DueHint>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Runs one scanner over the owned partitions until shutdown.
pub(crate) struct Runner<S: Scanner> {
    scanner: S,
    config: RunnerConfig,
    metrics: Arc<LoopMetrics>,
    inputs: RunnerInputs,
    owned: BTreeSet<PartitionId>,
    schedule: DueSchedule,
    clock: Option<StoreClock>,
    failures: BTreeMap<PartitionId, u32>,
}

/// Why the runner woke.
enum Event {
    Shutdown,
    Owned,
    Hint(Result<DueHint, broadcast::error::RecvError>),
    Timer,
}

impl<S: Scanner> Runner<S> {
    pub(crate) fn new(
        scanner: S,
        config: RunnerConfig,
        metrics: Arc<LoopMetrics>,
        inputs: RunnerInputs,
    ) -> Self {
        Self {
            scanner,
            config,
            metrics,
            inputs,
            owned: BTreeSet::new(),
            schedule: DueSchedule::default(),
            clock: None,
            failures: BTreeMap::new(),
        }
    }

    /// Runs until shutdown is signalled or the engine handle is gone.
    pub(crate) async fn run(mut self) {
        self.apply_owned();
        loop {
            if *self.inputs.shutdown.borrow() {
                break;
            }
            if self.run_due().await {
                // Many partitions are behind: let other tasks run before the
                // next round, which starts with the channels below.
                tokio::task::yield_now().await;
            }
            match self.next_event().await {
                Event::Shutdown => break,
                Event::Owned => self.apply_owned(),
                Event::Hint(hint) => self.apply_hint(hint),
                Event::Timer => {}
            }
        }
        debug!(scanner = self.scanner.name(), "runner stopped");
    }

    async fn next_event(&mut self) -> Event {
        let idle_deadline = Instant::now() + self.config.idle_poll_max;
        let deadline = self.schedule.next_at().unwrap_or(idle_deadline);
        let inputs = &mut self.inputs;
        // Biased: shutdown first, then ownership, so a flood of hints or an
        // overdue schedule can never starve them.
        tokio::select! {
            biased;
            changed = inputs.shutdown.changed() => match changed {
                Ok(()) if !*inputs.shutdown.borrow() => Event::Timer,
                _ => Event::Shutdown,
            },
            changed = inputs.owned.changed() => match changed {
                Ok(()) => Event::Owned,
                // The ownership loop ended: shutdown is under way.
                Err(_) => Event::Shutdown,
            },
            hint = recv_hint(&mut inputs.hints) => Event::Hint(hint),
            () = tokio::time::sleep_until(deadline) => Event::Timer,
        }
    }

    /// Runs the passes that are due, at most `RUNS_PER_WAKE_MAX` of them;
    /// returns whether it stopped at that bound.
    async fn run_due(&mut self) -> bool {
        for _ in 0..RUNS_PER_WAKE_MAX {
            if *self.inputs.shutdown.borrow() {
                return false;
            }
            let Some((partition, wake)) = self.schedule.pop_due(Instant::now()) else {
                return false;
            };
            let next = self.run_partition(partition, wake).await;
            // `self.owned` changes only in `apply_owned`, which runs after
            // this and drops the partition again if ownership moved meanwhile.
            self.schedule.set(partition, next);
        }
        true
    }

    /// One pass over `partition`; returns its next wake.
    async fn run_partition(&mut self, partition: PartitionId, wake: Wake) -> Wake {
        let pass = self.scanner.run_once(partition);
        let outcome = tokio::time::timeout(self.config.pass_timeout, pass).await;
        let report = match outcome {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => return self.pass_failed(partition, &error.to_string()),
            Err(_) => return self.pass_failed(partition, "timed out"),
        };
        let at = Instant::now();
        self.failures.remove(&partition);
        self.clock = Some(StoreClock::new(report.now_ms, at));
        self.metrics
            .record_run(report.store_calls.into(), report.applied, report.dropped);
        if let (true, Some(due_ms)) = (report.applied > 0, wake.due_ms) {
            self.metrics.record_lag_ms(report.started_ms - due_ms);
        }
        self.log_pass(partition, &report);
        wake_after(&report, at, self.config.idle_poll_max)
    }

    fn log_pass(&self, partition: PartitionId, report: &ScanReport) {
        let scanner = self.scanner.name();
        let (applied, dropped, more) = (report.applied, report.dropped, report.more);
        if report.is_busy() {
            info!(scanner, %partition, applied, dropped, more, "pass");
        } else {
            debug!(scanner, %partition, next_due_ms = ?report.next_due_ms, "idle pass");
        }
    }

    fn pass_failed(&mut self, partition: PartitionId, error: &str) -> Wake {
        self.metrics.record_error();
        let failures = self.failures.entry(partition).or_insert(0);
        *failures = failures.saturating_add(1);
        let cap = ERROR_BACKOFF_MAX.min(self.config.idle_poll_max);
        let delay = backoff(*failures, ERROR_BACKOFF_MIN.min(cap), cap);
        warn!(
            scanner = self.scanner.name(),
            %partition,
            failures = *failures,
            retry_in_ms = delay.as_millis(),
            error,
            "pass failed"
        );
        Wake {
            at: Instant::now() + delay,
            due_ms: None,
        }
    }

    /// Brings the schedule in line with the published owned set.
    fn apply_owned(&mut self) {
        let owned = self.inputs.owned.borrow_and_update().clone();
        for lost in self.owned.difference(&owned) {
            self.schedule.remove(*lost);
            self.failures.remove(lost);
        }
        let now = Instant::now();
        for gained in owned.difference(&self.owned) {
            // A partition new to us may have work overdue from a dead owner.
            self.schedule.set(
                *gained,
                Wake {
                    at: now,
                    due_ms: None,
                },
            );
        }
        debug!(
            scanner = self.scanner.name(),
            owned = owned.len(),
            "owned set applied"
        );
        self.owned = owned;
        debug_assert_eq!(self.schedule.len(), self.owned.len());
    }

    fn apply_hint(&mut self, hint: Result<DueHint, broadcast::error::RecvError>) {
        let now = Instant::now();
        match hint {
            Ok(hint) => {
                let at = self
                    .clock
                    .map_or(now, |clock| clock.instant_of(hint.due_ms));
                let wake = Wake {
                    at,
                    due_ms: Some(hint.due_ms),
                };
                // Hints for partitions we do not own are ignored by `lower`.
                self.schedule.lower(hint.partition, wake);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "due hints lagged; ticking every owned partition");
                for partition in self.schedule.partitions() {
                    self.schedule.lower(
                        partition,
                        Wake {
                            at: now,
                            due_ms: None,
                        },
                    );
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                warn!("due hints closed; falling back to polling at idle_poll_max");
                self.inputs.hints = None;
            }
        }
    }
}

/// Where a successful pass, finished at `at`, puts its partition next.
fn wake_after(report: &ScanReport, at: Instant, idle_poll_max: Duration) -> Wake {
    if report.more {
        // Behind: come back right after the partitions already due.
        return Wake { at, due_ms: None };
    }
    let poll = Wake {
        at: at + jitter_down(idle_poll_max, IDLE_POLL_SPREAD),
        due_ms: None,
    };
    let Some(due_ms) = report.next_due_ms else {
        return poll;
    };
    // A short pass saw everything due by `now_ms`, so `due_ms > now_ms`;
    // the floor of 1 ms keeps a store that says otherwise from spinning.
    let due_at = at + millis((due_ms - report.now_ms).max(1));
    if due_at <= poll.at {
        Wake {
            at: due_at,
            due_ms: Some(due_ms),
        }
    } else {
        poll
    }
}

/// The next hint, or never when the store sends none.
async fn recv_hint(
    hints: &mut Option<broadcast::Receiver<DueHint>>,
) -> Result<DueHint, broadcast::error::RecvError> {
    match hints {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
