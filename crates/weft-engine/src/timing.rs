//! Pure timing helpers the loops share: the due-time schedule, the mapping
//! from the store's clock to the local monotonic clock, back-off and jitter.
//!
//! Definitions: *store time* is milliseconds since the Unix epoch by the
//! store's clock (all due times are store time); a *wake* is a local
//! `Instant` at which a loop acts.
//!
//! Invariants: `DueSchedule` holds each partition at most once, and its two
//! maps always describe the same entries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;
use weft_core::PartitionId;

/// Maps store time onto `Instant`s, anchored at the latest observation of the
/// store's clock. Only due hints need it: a tick's own `next_due_ms` is turned
/// into a sleep against the same tick's `now_ms`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoreClock {
    anchor_ms: i64,
    anchor_at: Instant,
}

impl StoreClock {
    /// The store read `now_ms` at (about) local time `at`.
    pub(crate) fn new(now_ms: i64, at: Instant) -> Self {
        Self {
            anchor_ms: now_ms,
            anchor_at: at,
        }
    }

    /// The local instant at which the store's clock reads `due_ms`; instants
    /// before the anchor collapse onto it, which is "due already" for callers.
    pub(crate) fn instant_of(&self, due_ms: i64) -> Instant {
        self.anchor_at + millis(due_ms.saturating_sub(self.anchor_ms))
    }
}

/// `ms` as a `Duration`; negative values are zero.
pub(crate) fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `base` shortened by up to `spread` (0.0..1.0) at random, so loops started
/// together do not stay in lock-step; never longer than `base`.
pub(crate) fn jitter_down(base: Duration, spread: f64) -> Duration {
    debug_assert!((0.0..1.0).contains(&spread));
    base.mul_f64(1.0 - spread * fastrand::f64())
}

/// Exponential back-off after `failures` consecutive failures (1 = first):
/// `min`, `2 min`, `4 min`, … capped at `max`, then jittered down by up to
/// half so that many partitions failing together retry apart.
pub(crate) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    debug_assert!(failures >= 1);
    let doublings = failures.saturating_sub(1).min(20);
    let raw = min.saturating_mul(1u32 << doublings).min(max);
    jitter_down(raw, 0.5)
}

/// When a partition is next due, and the store time it is due at when the
/// wake was set from a known due time (used to measure lag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wake {
    pub(crate) at: Instant,
    pub(crate) due_ms: Option<i64>,
}

/// The next wake of every scheduled partition, ordered by time.
#[derive(Debug, Default)]
pub(crate) struct DueSchedule {
    by_partition: BTreeMap<PartitionId, Wake>,
    by_time: BTreeSet<(Instant, PartitionId)>,
}

impl DueSchedule {
    /// Schedules `partition` at `wake`, replacing any earlier entry.
    pub(crate) fn set(&mut self, partition: PartitionId, wake: Wake) {
        self.remove(partition);
        self.by_partition.insert(partition, wake);
        self.by_time.insert((wake.at, partition));
    }

    /// Moves an already scheduled `partition` earlier to `wake`; does nothing
    /// if it is not scheduled or already due sooner. Returns whether it moved.
    pub(crate) fn lower(&mut self, partition: PartitionId, wake: Wake) -> bool {
        match self.by_partition.get(&partition) {
            Some(current) if wake.at < current.at => {
                self.set(partition, wake);
                true
            }
            _ => false,
        }
    }

    /// Unschedules `partition`.
    pub(crate) fn remove(&mut self, partition: PartitionId) {
        if let Some(old) = self.by_partition.remove(&partition) {
            let removed = self.by_time.remove(&(old.at, partition));
            debug_assert!(removed, "schedule maps disagree on {partition}");
        }
    }

    /// The earliest wake, if any partition is scheduled.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes the earliest partition whose wake is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(PartitionId, Wake)> {
        let (at, partition) = *self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.pop_first();
        let wake = self.by_partition.remove(&partition);
        debug_assert!(wake.is_some(), "schedule maps disagree on {partition}");
        wake.map(|wake| (partition, wake))
    }

    /// Whether `partition` is scheduled.
    #[cfg(test)]
    pub(crate) fn contains(&self, partition: PartitionId) -> bool {
        self.by_partition.contains_key(&partition)
    }

    /// Every scheduled partition, in id order.
    pub(crate) fn partitions(&self) -> Vec<PartitionId> {
        self.by_partition.keys().copied().collect()
    }

    /// How many partitions are scheduled.
    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_partition.len(), self.by_time.len());
        self.by_partition.len()
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the schedule orders wakes, replaces and lowers correctly, and the
    //! clock and back-off helpers stay within their bounds.
    //! Method: pure calls on fixed instants; no runtime needed.

    use super::*;

    fn wake(at: Instant) -> Wake {
        Wake { at, due_ms: None }
    }

    #[test]
    fn schedule_pops_in_time_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut schedule = DueSchedule::default();
        schedule.set(PartitionId(2), wake(t0 + Duration::from_millis(30)));
        schedule.set(PartitionId(1), wake(t0 + Duration::from_millis(10)));
        schedule.set(PartitionId(3), wake(t0 + Duration::from_millis(20)));
        assert_eq!(schedule.next_at(), Some(t0 + Duration::from_millis(10)));
        let now = t0 + Duration::from_millis(25);
        let popped: Vec<_> = std::iter::from_fn(|| schedule.pop_due(now))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(popped, vec![PartitionId(1), PartitionId(3)]);
        assert_eq!(schedule.len(), 1);
        assert!(schedule.contains(PartitionId(2)));
    }

    #[test]
    fn set_replaces_and_lower_only_moves_earlier() {
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(5);
        let mut schedule = DueSchedule::default();
        schedule.set(PartitionId(0), wake(late));
        schedule.set(PartitionId(0), wake(t0 + Duration::from_secs(9)));
        assert_eq!(schedule.len(), 1);
        assert!(!schedule.lower(PartitionId(0), wake(t0 + Duration::from_secs(10))));
        assert!(schedule.lower(PartitionId(0), wake(late)));
        assert_eq!(schedule.next_at(), Some(late));
        assert!(
            !schedule.lower(PartitionId(7), wake(t0)),
            "unscheduled stays so"
        );
        schedule.remove(PartitionId(0));
        assert_eq!((schedule.len(), schedule.next_at()), (0, None));
        assert!(schedule.partitions().is_empty());
    }

    #[test]
    fn store_clock_maps_due_times_onto_instants() {
        let t0 = Instant::now();
        let clock = StoreClock::new(1_000, t0);
        assert_eq!(clock.instant_of(1_250), t0 + Duration::from_millis(250));
        assert_eq!(clock.instant_of(400), t0, "past due times are due now");
        assert_eq!(millis(-5), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_down() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1_000);
        for (failures, raw_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (64, 1_000),
        ] {
            let got = backoff(failures, min, max);
            let raw = Duration::from_millis(raw_ms);
            assert!(got <= raw && got >= raw / 2, "{failures}: {got:?}");
        }
        let base = Duration::from_millis(300);
        let jittered = jitter_down(base, 0.1);
        assert!(jittered <= base && jittered >= base.mul_f64(0.9));
    }
}
