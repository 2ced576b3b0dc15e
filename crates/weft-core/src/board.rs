//! The ready board: which partitions may hold claimable work, per lane and
//! capability set, learned from the store's `Ready` events, so that a
//! worker claims where work it can run is instead of sweeping every
//! partition.
//!
//! Definitions: a partition is *marked* for a (lane, capability set) when an
//! event said an execution requiring that set became claimable there and no
//! claim has looked since. A lane first claimed from here starts with every
//! partition marked under no set in particular (anyone may look). `take`
//! pops one marked partition of a set the worker can run (unmarking it); the
//! claim that follows either drains it (fewer tasks than asked: stays
//! unmarked) or not (marked again).
//!
//! Invariants: a `Ready` event that arrives while a claim is in flight marks
//! the partition again, so no event is lost between the pop and the claim;
//! each partition sits in a set's queue at most once, so a burst of events
//! costs one claim, not one per event; a worker only pops sets its
//! capabilities cover, so it never takes a mark meant for another. A newly
//! marked partition wakes every waiting claim of the process: the ones that
//! cannot run it or lose the race look at the board in memory and sleep
//! again, so the herd costs no store call. Lost events are never seen, so workers still sweep every partition now
//! and then (`SWEEP_INTERVAL`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

use crate::error::Result;
use crate::ids::{PartitionCount, PartitionId};
use crate::model::Task;
use crate::store::{claim_across, claim_detached, ClaimParams, Store, StoreEvent};

/// How often a worker sweeps every partition even when the board is quiet:
/// the fallback for lost events and work its capabilities were not shown.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Most lanes a board tracks; beyond that, new lanes are swept, not marked.
pub const BOARD_LANES_MAX: usize = 1024;

/// Most capability sets a board tracks per lane; work requiring others is
/// found by sweeps.
const CAPSETS_MAX: usize = 256;

#[derive(Debug)]
struct LaneMarks {
    queue: VecDeque<u16>,
    marked: Vec<bool>,
}

impl LaneMarks {
    /// A lane never seen before: every partition may hold its work.
    fn all(count: u16) -> Self {
        Self {
            queue: (0..count).collect(),
            marked: vec![true; usize::from(count)],
        }
    }

    /// Nothing marked.
    fn none(count: u16) -> Self {
        Self {
            queue: VecDeque::new(),
            marked: vec![false; usize::from(count)],
        }
    }

    /// Marks `p`; true when it was not marked before.
    fn mark(&mut self, p: u16) -> bool {
        match self.marked.get_mut(usize::from(p)) {
            Some(m) if !*m => {
                *m = true;
                self.queue.push_back(p);
                true
            }
            _ => false,
        }
    }

    fn pop(&mut self) -> Option<u16> {
        let p = self.queue.pop_front()?;
        if let Some(m) = self.marked.get_mut(usize::from(p)) {
            *m = false;
        }
        Some(p)
    }
}

/// The marks of one lane.
#[derive(Debug)]
struct Lane {
    /// Every partition, marked when the lane is first claimed from here.
    initial: LaneMarks,
    /// Marks by capability set (joined, sorted; `""` for none).
    by_capset: HashMap<String, LaneMarks>,
}

/// Which partitions may hold claimable work, per lane and capability set.
/// Shared by every worker of a process; fed by [`ReadyBoard::follow`].
#[derive(Debug)]
pub struct ReadyBoard {
    count: u16,
    /// Whether the store's events feed the board (`follow` on a store that
    /// sends them).
    fed: bool,
    lanes: Mutex<HashMap<String, Lane>>,
    marked: Notify,
}

/// Whether a worker with `capabilities` (sorted) may run work requiring
/// the joined `capset`.
fn covers(capabilities: &[String], capset: &str) -> bool {
    capset.is_empty()
        || capset.split(',').all(|cap| {
            capabilities
                .binary_search_by(|c| c.as_str().cmp(cap))
                .is_ok()
        })
}

impl ReadyBoard {
    /// An empty board for a store of `partitions`.
    pub fn new(partitions: PartitionCount) -> Self {
        Self {
            count: partitions.get(),
            fed: false,
            lanes: Mutex::new(HashMap::new()),
            marked: Notify::new(),
        }
    }

    /// A board fed by `store`'s events. A store that sends none leaves it
    /// unfed: claims then find work by sweeping. The feeding task ends with
    /// the store's event stream or, at the next event, once the board is
    /// dropped. Call it inside a Tokio runtime.
    pub fn follow(store: &dyn Store) -> Arc<Self> {
        let Some(mut events) = store.events() else {
            return Arc::new(Self::new(store.partition_count()));
        };
        let board = Arc::new(Self {
            fed: true,
            ..Self::new(store.partition_count())
        });
        let weak: Weak<Self> = Arc::downgrade(&board);
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(board) = weak.upgrade() else { break };
                match event {
                    Ok(StoreEvent::Ready {
                        partition,
                        lane,
                        capset,
                    }) => board.mark(partition, &lane, &capset),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => board.mark_everything(),
                    Err(RecvError::Closed) => break,
                }
            }
        });
        board
    }

    /// Whether events feed the board; when they do not, only sweeps find
    /// work, and callers sweep more often.
    pub fn is_fed(&self) -> bool {
        self.fed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        // A panic while holding the lock cannot leave the marks inconsistent
        // in a way that matters: they are hints.
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `lane` has claimable work requiring `capset` in
    /// `partition`.
    pub fn mark(&self, partition: PartitionId, lane: &str, capset: &str) {
        let count = self.count;
        let newly = match self.lock().get_mut(lane) {
            Some(marks) => {
                if !marks.by_capset.contains_key(capset) && marks.by_capset.len() >= CAPSETS_MAX {
                    // Too many sets to track: this work is found by sweeps.
                    return;
                }
                marks
                    .by_capset
                    .entry(capset.to_owned())
                    .or_insert_with(|| LaneMarks::none(count))
                    .mark(partition.0)
            }
            // Lanes nobody claims from here are not tracked; a worker that
            // starts on one later begins with every partition marked.
            None => false,
        };
        if newly {
            self.marked.notify_waiters();
        }
    }

    /// Marks every partition of every tracked lane (events were lost).
    pub fn mark_everything(&self) {
        let mut lanes = self.lock();
        for marks in lanes.values_mut() {
            for p in 0..self.count {
                marks.initial.mark(p);
            }
        }
        drop(lanes);
        self.marked.notify_waiters();
    }

    /// Pops a marked partition of one of `lanes` with work `capabilities`
    /// (sorted) cover, starting the lanes it tracks for the first time fully
    /// marked.
    pub fn take(&self, lanes: &[String], capabilities: &[String]) -> Option<PartitionId> {
        let mut tracked = self.lock();
        for lane in lanes {
            if !tracked.contains_key(lane) && tracked.len() < BOARD_LANES_MAX {
                let lane_marks = Lane {
                    initial: LaneMarks::all(self.count),
                    by_capset: HashMap::new(),
                };
                tracked.insert(lane.clone(), lane_marks);
            }
            let Some(marks) = tracked.get_mut(lane) else {
                continue;
            };
            if let Some(p) = marks.initial.pop() {
                return Some(PartitionId(p));
            }
            for (capset, set) in marks.by_capset.iter_mut() {
                if covers(capabilities, capset) {
                    if let Some(p) = set.pop() {
                        return Some(PartitionId(p));
                    }
                }
            }
        }
        None
    }

    /// Claims from one marked partition of `params.lanes` (detached, see
    /// `claim_detached`); `None` when none is marked. A claim that fills
    /// `params.max` marks the partition again, since more may be left there.
    pub async fn claim(
        &self,
        store: &Arc<dyn Store>,
        params: &ClaimParams,
    ) -> Result<Option<Vec<Task>>> {
        let Some(partition) = self.take(&params.lanes, &params.capabilities) else {
            return Ok(None);
        };
        let (claimer, owned) = (Arc::clone(store), params.clone());
        let claimed = claim_detached(store, async move {
            claimer.execution_claim(partition, &owned).await
        })
        .await;
        let tasks = match claimed {
            Ok(tasks) => tasks,
            Err(error) => {
                self.remark(partition, params);
                return Err(error);
            }
        };
        if u32::try_from(tasks.len()).unwrap_or(u32::MAX) >= params.max {
            self.remark(partition, params);
        }
        Ok(Some(tasks))
    }

    /// Marks `partition` again for every set of `params.lanes` the claimer
    /// could run: it may have left work there.
    fn remark(&self, partition: PartitionId, params: &ClaimParams) {
        let mut newly = false;
        let mut lanes = self.lock();
        for lane in &params.lanes {
            if let Some(marks) = lanes.get_mut(lane) {
                for (capset, set) in marks.by_capset.iter_mut() {
                    if covers(&params.capabilities, capset) {
                        newly |= set.mark(partition.0);
                    }
                }
                if marks.by_capset.is_empty() {
                    newly |= marks.initial.mark(partition.0);
                }
            }
        }
        drop(lanes);
        if newly {
            self.marked.notify_waiters();
        }
    }

    /// Waits until a partition is newly marked (true), or `max` passes
    /// (false: time for a sweep). A mark made before the call is not seen:
    /// `claim_waiting` registers before it looks.
    pub async fn wait(&self, max: Duration) -> bool {
        tokio::time::timeout(max, self.marked.notified())
            .await
            .is_ok()
    }
}

/// Claims for a worker that may wait up to `wait`: from marked partitions
/// first; when none is marked, sleeps on the board until a partition is
/// marked, and sweeps every partition when `sweep_interval` has passed
/// without work (lost events, work its capabilities were not shown) or at
/// once when `wait` is zero. Returns as soon as a claim takes anything, or
/// empty when `wait` passes. Every store call is detached
/// (`claim_detached`), so dropping this future strands nothing.
pub async fn claim_waiting(
    store: &Arc<dyn Store>,
    board: &ReadyBoard,
    params: &ClaimParams,
    wait: Duration,
    sweep_interval: Duration,
) -> Result<Vec<Task>> {
    let deadline = Instant::now() + wait;
    let mut swept_at = Instant::now();
    loop {
        // Registered before looking, so a mark made between the look and the
        // sleep still wakes this claim.
        let marked = board.marked.notified();
        tokio::pin!(marked);
        marked.as_mut().enable();
        // Stale marks (claimed by someone else) come back empty; move on.
        while let Some(tasks) = board.claim(store, params).await? {
            if !tasks.is_empty() {
                return Ok(tasks);
            }
        }
        let now = Instant::now();
        if wait.is_zero() || now.duration_since(swept_at) >= sweep_interval {
            let (sweeper, owned) = (Arc::clone(store), params.clone());
            let start = store.partition_count().random();
            let tasks = claim_detached(store, async move {
                claim_across(sweeper.as_ref(), &owned, start).await
            })
            .await?;
            swept_at = Instant::now();
            if !tasks.is_empty() || wait.is_zero() {
                return Ok(tasks);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Vec::new());
        }
        let until = deadline.min(swept_at + sweep_interval);
        let _ = tokio::time::timeout(until.saturating_duration_since(now), marked).await;
    }
}

#[cfg(test)]
mod tests {
    //! The board's bookkeeping: new lanes start fully marked, marks coalesce,
    //! a pop unmarks, a mark during a claim survives it, and a worker only
    //! takes marks of work its capabilities cover.
    use super::*;

    fn board(count: u16) -> ReadyBoard {
        ReadyBoard::new(PartitionCount::new(count).unwrap())
    }

    fn drain_with(b: &ReadyBoard, lane: &str, caps: &[&str]) -> Vec<u16> {
        let lanes = [lane.to_owned()];
        let caps: Vec<String> = caps.iter().map(|c| (*c).to_owned()).collect();
        std::iter::from_fn(|| b.take(&lanes, &caps).map(|p| p.0)).collect()
    }

    fn drain(b: &ReadyBoard, lane: &str) -> Vec<u16> {
        drain_with(b, lane, &[])
    }

    #[test]
    fn a_new_lane_starts_fully_marked_then_only_events_mark() {
        let b = board(4);
        assert_eq!(drain(&b, "l"), [0, 1, 2, 3]);
        assert!(drain(&b, "l").is_empty());
        b.mark(PartitionId(2), "l", "");
        b.mark(PartitionId(2), "l", "");
        b.mark(PartitionId(1), "l", "");
        b.mark(PartitionId(3), "other", "");
        assert_eq!(drain(&b, "l"), [2, 1]);
    }

    #[test]
    fn a_mark_after_the_pop_is_kept_and_everything_marks_all() {
        let b = board(4);
        drain(&b, "l");
        b.mark(PartitionId(0), "l", "");
        let lanes = ["l".to_owned()];
        assert_eq!(b.take(&lanes, &[]), Some(PartitionId(0)));
        // An event while the claim is in flight.
        b.mark(PartitionId(0), "l", "");
        assert_eq!(drain(&b, "l"), [0]);
        b.mark_everything();
        assert_eq!(drain(&b, "l"), [0, 1, 2, 3]);
    }

    #[test]
    fn workers_take_only_marks_they_can_run() {
        let b = board(4);
        drain(&b, "l");
        b.mark(PartitionId(1), "l", "gpu");
        b.mark(PartitionId(2), "l", "gpu,x86");
        b.mark(PartitionId(3), "l", "");
        // A worker without capabilities sees only the plain work...
        assert_eq!(drain(&b, "l"), [3]);
        // ...and leaves the gpu marks to those that can run them.
        assert_eq!(drain_with(&b, "l", &["gpu"]), [1]);
        assert_eq!(drain_with(&b, "l", &["gpu", "x86"]), [2]);
        assert!(covers(&["a".into(), "b".into()], "a,b"));
        assert!(!covers(&["a".into()], "a,b"));
    }

    #[tokio::test]
    async fn a_new_mark_wakes_a_waiter() {
        let b = Arc::new(board(2));
        drain(&b, "l");
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let woken = b.wait(Duration::from_secs(5)).await;
                (woken, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.mark(PartitionId(1), "l", "");
        let (woken, waited) = waiter.await.unwrap();
        assert!(woken && waited < Duration::from_secs(4), "{waited:?}");
        assert!(!b.wait(Duration::from_millis(10)).await);
    }
}
