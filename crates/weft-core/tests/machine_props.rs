//! Property tests of the pure execution state machine.
//!
//! Goal: the invariants every store relies on hold after any sequence of
//! commands — exactly one index entry per execution, equal to `index_of`; a
//! timer set equal to `timers_of`; a lease exactly while `active`; epochs and
//! attempt numbers that never go back; `failures <= max_attempts`; fencing
//! (only the current, unexpired lease writes, a repeated terminal write is a
//! replay); and errors that change nothing.
//!
//! Waitpoints add: a suspend either ends the attempt (`suspended`, no lease,
//! nothing counted) or, when buffered signals satisfy it, keeps the lease; a
//! suspended execution's waitpoints are signalled exactly when their signal
//! is held, and its suspension is never already satisfied; a signal is
//! delivered, buffered or refused (`conflict`, `invalid_token`) exactly as
//! the suspension in force says; a waitpoint timeout applies the first
//! unsignalled waitpoint's `on_timeout`; replay clears every signal.
//!
//! Method: proptest generates a few executions and a random sequence of
//! commands (claims, heartbeats, completes, fails, releases and suspends with
//! the current, a stale or a forged lease, operator and token signals,
//! cancels, replays, timer firings that are due, early or stale,
//! whole-partition ticks and time advances). A small in-memory store
//! model applies each command through `weft_core::machine` and maintains its
//! index entries and timers ONLY from the transitions' diffs
//! (`index_from`/`index_to`, `timers_clear`/`timers_set`), exactly as a real
//! store would; after every step the model is compared with `index_of` and
//! `timers_of` of the executions it holds.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use weft_core::machine::{self, index_of, timers_of};
use weft_core::waitpoint::{
    OnTimeout, ResumeWhen, SuspendSpec, WaitpointSpec, SIGNALS_BUFFERED_MAX,
};
use weft_core::{
    AttemptChange, AttemptState, Backoff, Command, EndedBy, Error, ErrorInfo, Execution,
    ExecutionId, IndexKey, LeaseId, LeaseRef, MachineConfig, Outcome, PartitionId, State,
    SubmitParams, Timer, TimerKind, Transition,
};

/// Retention short enough that purges happen within a generated sequence.
const RETENTION_MS: i64 = 3_000;
const START_MS: i64 = 1_700_000_000_000;

fn config() -> MachineConfig {
    MachineConfig {
        retention_ms: RETENTION_MS,
        ..MachineConfig::default()
    }
}

/// How a worker write picks the lease it presents.
#[derive(Clone, Debug)]
enum LeaseChoice {
    /// The execution's current lease, if it has one (else the latest granted).
    Current,
    /// One of the leases granted earlier, picked by index.
    Stale(usize),
    /// A lease id and epoch never granted.
    Forged,
}

/// How a timer firing picks its timer.
#[derive(Clone, Copy, Debug)]
enum FireMode {
    /// The execution's current timer of that kind, whether due or not.
    Current,
    /// A timer of that kind the execution does not have.
    Stale,
}

#[derive(Clone, Debug)]
enum Op {
    Advance(i64),
    Claim {
        slot: usize,
        lease_ms: i64,
    },
    Heartbeat {
        slot: usize,
        lease: LeaseChoice,
        lease_ms: Option<i64>,
    },
    Complete {
        slot: usize,
        lease: LeaseChoice,
    },
    Fail {
        slot: usize,
        lease: LeaseChoice,
        retryable: bool,
    },
    Release {
        slot: usize,
        lease: LeaseChoice,
    },
    Suspend {
        slot: usize,
        lease: LeaseChoice,
        spec: SuspendSpec,
    },
    Signal {
        slot: usize,
        waitpoint: &'static str,
        seq: SeqChoice,
    },
    Cancel {
        slot: usize,
    },
    Replay {
        slot: usize,
    },
    Fire {
        slot: usize,
        kind: TimerKind,
        mode: FireMode,
    },
    Tick,
}

/// Who sends a signal.
#[derive(Clone, Copy, Debug)]
enum SeqChoice {
    /// An operator (`seq: None`).
    Operator,
    /// A token of the last suspension (seq 1 before any).
    Current,
    /// A token naming this seq.
    Other(u32),
}

/// The waitpoint names suspends and signals pick from; signals also name
/// one no suspend declares.
const WAITPOINTS: [&str; 3] = ["a", "b", "c"];

fn suspend_spec() -> impl Strategy<Value = SuspendSpec> {
    let waitpoint = (
        prop::option::of(prop_oneof![50i64..800, 800i64..3_000]),
        prop::sample::select(OnTimeout::ALL.to_vec()),
    );
    (
        prop::sample::subsequence(WAITPOINTS.to_vec(), 0..=3),
        prop::collection::vec(waitpoint, 3),
        prop::bool::ANY,
    )
        .prop_map(|(names, timing, any)| SuspendSpec {
            waitpoints: names
                .into_iter()
                .zip(timing)
                .map(|(name, (timeout_ms, on_timeout))| WaitpointSpec {
                    timeout_ms,
                    on_timeout,
                    ..WaitpointSpec::new(name)
                })
                .collect(),
            resume_when: if any {
                ResumeWhen::Any
            } else {
                ResumeWhen::All
            },
        })
}

fn seq_choice() -> impl Strategy<Value = SeqChoice> {
    prop_oneof![
        3 => Just(SeqChoice::Operator),
        3 => Just(SeqChoice::Current),
        1 => (0u32..4).prop_map(SeqChoice::Other),
    ]
}

fn lease_choice() -> impl Strategy<Value = LeaseChoice> {
    prop_oneof![
        6 => Just(LeaseChoice::Current),
        2 => (0usize..8).prop_map(LeaseChoice::Stale),
        1 => Just(LeaseChoice::Forged),
    ]
}

fn timer_kind() -> impl Strategy<Value = TimerKind> {
    prop::sample::select(TimerKind::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0usize..4;
    prop_oneof![
        4 => prop_oneof![0i64..50, 50i64..400, 400i64..4_000].prop_map(Op::Advance),
        5 => (slot.clone(), prop_oneof![9 => 100i64..1_000, 1 => 0i64..100])
            .prop_map(|(slot, lease_ms)| Op::Claim { slot, lease_ms }),
        3 => (slot.clone(), lease_choice(), prop::option::of(prop_oneof![
                9 => 100i64..1_000, 1 => -10i64..100]))
            .prop_map(|(slot, lease, lease_ms)| Op::Heartbeat { slot, lease, lease_ms }),
        3 => (slot.clone(), lease_choice())
            .prop_map(|(slot, lease)| Op::Complete { slot, lease }),
        4 => (slot.clone(), lease_choice(), prop::bool::weighted(0.8))
            .prop_map(|(slot, lease, retryable)| Op::Fail { slot, lease, retryable }),
        3 => (slot.clone(), lease_choice())
            .prop_map(|(slot, lease)| Op::Release { slot, lease }),
        4 => (slot.clone(), lease_choice(), suspend_spec())
            .prop_map(|(slot, lease, spec)| Op::Suspend { slot, lease, spec }),
        5 => (slot.clone(), prop::sample::select(vec!["a", "b", "c", "d"]), seq_choice())
            .prop_map(|(slot, waitpoint, seq)| Op::Signal { slot, waitpoint, seq }),
        1 => slot.clone().prop_map(|slot| Op::Cancel { slot }),
        1 => slot.clone().prop_map(|slot| Op::Replay { slot }),
        3 => (slot, timer_kind(), prop_oneof![3 => Just(FireMode::Current), 1 => Just(FireMode::Stale)])
            .prop_map(|(slot, kind, mode)| Op::Fire { slot, kind, mode }),
        3 => Just(Op::Tick),
    ]
}

fn backoff() -> impl Strategy<Value = Backoff> {
    (0i64..300, 0i64..600, 1.0f64..3.0, 0.0f64..0.5).prop_map(
        |(initial_ms, extra_ms, multiplier, jitter)| Backoff {
            initial_ms,
            max_ms: initial_ms + extra_ms,
            multiplier,
            jitter,
        },
    )
}

fn submit_params() -> impl Strategy<Value = SubmitParams> {
    (
        (1u32..5, 0u32..3, -5i32..5),
        prop::option::of(100i64..800),
        prop::option::of(200i64..4_000),
        prop::option::of(0i64..500),
        backoff(),
        prop::sample::subsequence(vec!["gpu", "cpu"], 0..=2),
    )
        .prop_map(
            |((max_attempts, max_reclaims, priority), timeout, deadline, delay, backoff, caps)| {
                SubmitParams {
                    priority,
                    max_attempts: Some(max_attempts),
                    max_reclaims: Some(max_reclaims),
                    timeout_ms: timeout,
                    deadline_ms: deadline,
                    delay_ms: delay,
                    backoff: Some(backoff),
                    requires: caps.into_iter().map(String::from).collect(),
                    ..SubmitParams::new("prop.job", json!({"n": 1}))
                }
            },
        )
}

/// The write a worker command would record as having ended its lease.
fn ended_by(cmd: &Command) -> Option<EndedBy> {
    match cmd {
        Command::Complete { .. } => Some(EndedBy::Completed),
        Command::Fail { .. } => Some(EndedBy::Failed),
        Command::Release { .. } => Some(EndedBy::Released),
        Command::Suspend { .. } => Some(EndedBy::Suspended),
        _ => None,
    }
}

/// Whether `by` with `lease` repeats the write that ended the last lease; a
/// release or a suspend replays only until the next claim moves the epoch
/// on.
fn is_replay(old: &Execution, lease: &LeaseRef, by: EndedBy) -> bool {
    old.ended_lease.as_ref().is_some_and(|e| {
        e.id == lease.lease_id
            && e.epoch == lease.epoch
            && e.by == by
            && (!matches!(by, EndedBy::Released | EndedBy::Suspended) || old.epoch == lease.epoch)
    })
}

/// Whether `flags` (signalled per waitpoint) end a suspension.
fn satisfied(resume_when: ResumeWhen, flags: &[bool]) -> bool {
    match resume_when {
        ResumeWhen::All => flags.iter().all(|f| *f),
        ResumeWhen::Any => flags.iter().any(|f| *f),
    }
}

/// Splits `signals` into those named by `names` and the rest.
fn split_signals(
    signals: &BTreeMap<String, Value>,
    names: &[String],
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    signals
        .clone()
        .into_iter()
        .partition(|(k, _)| names.contains(k))
}

/// One index entry as a store keeps it: the key, and for the ready index the
/// ordering fields copied from the execution when the entry was written.
#[derive(Clone, Debug, PartialEq)]
struct IndexEntry {
    key: IndexKey,
    order: Option<(i32, i64)>,
}

fn entry_for(exec: &Execution, key: IndexKey) -> IndexEntry {
    let order = matches!(key, IndexKey::Ready { .. }).then_some((exec.priority, exec.ready_at_ms));
    IndexEntry { key, order }
}

/// A store reduced to what the state machine tells it to write.
struct Model {
    now_ms: i64,
    config: MachineConfig,
    /// Executions by slot; `None` once purged.
    execs: Vec<Option<Execution>>,
    /// Index entries by slot, maintained only from transition diffs.
    index: Vec<Vec<IndexEntry>>,
    /// The due-index of the partition, maintained only from transition diffs.
    timers: BTreeSet<(usize, Timer)>,
    /// Every lease granted per slot, oldest first.
    leases: Vec<Vec<LeaseRef>>,
    /// The highest epoch ever seen per slot.
    epochs: Vec<u64>,
    /// Signals sent so far, so each payload is distinct.
    sent: u64,
}

type Check = Result<(), TestCaseError>;
type Applied = Result<Transition, Error>;

impl Model {
    fn new(specs: &[SubmitParams]) -> Result<Self, TestCaseError> {
        let mut model = Model {
            now_ms: START_MS,
            config: config(),
            execs: Vec::new(),
            index: Vec::new(),
            timers: BTreeSet::new(),
            leases: Vec::new(),
            epochs: Vec::new(),
            sent: 0,
        };
        for (slot, params) in specs.iter().enumerate() {
            let id = ExecutionId::mint(PartitionId(0), model.now_ms);
            let t = machine::submit(id, params, model.now_ms, &model.config)
                .map_err(|e| TestCaseError::fail(format!("submit refused: {e}")))?;
            prop_assert!(t.index_from.is_none(), "a new execution leaves no index");
            prop_assert!(t.timers_clear.is_empty());
            prop_assert_eq!(t.outcome, Outcome::Applied);
            model.execs.push(None);
            model.index.push(Vec::new());
            model.leases.push(Vec::new());
            model.epochs.push(0);
            model.write(slot, t)?;
            model.check_slot(slot)?;
        }
        Ok(model)
    }

    /// Applies a transition's diffs as a store would, then stores the result.
    fn write(&mut self, slot: usize, t: Transition) -> Check {
        let new = t.execution.clone();
        if let Some(from) = &t.index_from {
            let entries = &mut self.index[slot];
            let pos = entries.iter().position(|e| &e.key == from);
            prop_assert!(
                pos.is_some(),
                "index_from {:?} not held; held {:?}",
                from,
                entries
            );
            entries.remove(pos.unwrap_or_default());
        }
        if let Some(to) = &t.index_to {
            let exec = new.as_ref();
            prop_assert!(exec.is_some(), "index_to without an execution");
            if let Some(exec) = exec {
                self.index[slot].push(entry_for(exec, to.clone()));
            }
        }
        for timer in &t.timers_clear {
            prop_assert!(
                self.timers.remove(&(slot, *timer)),
                "timers_clear names {:?}, which is not set",
                timer
            );
        }
        for timer in &t.timers_set {
            prop_assert!(
                self.timers.insert((slot, *timer)),
                "timers_set names {:?}, which is already set",
                timer
            );
        }
        if let Some(lease) = new.as_ref().and_then(|e| e.lease.as_ref()) {
            let known = self.leases[slot]
                .iter()
                .any(|l| l.lease_id == lease.id && l.epoch == lease.epoch);
            if !known {
                self.leases[slot].push(LeaseRef {
                    lease_id: lease.id.clone(),
                    epoch: lease.epoch,
                });
            }
        }
        self.execs[slot] = new;
        Ok(())
    }

    /// Every invariant of one slot.
    fn check_slot(&mut self, slot: usize) -> Check {
        let Some(exec) = self.execs[slot].clone() else {
            prop_assert!(
                self.index[slot].is_empty(),
                "a purged execution keeps an index entry"
            );
            prop_assert!(
                !self.timers.iter().any(|(s, _)| *s == slot),
                "a purged execution keeps a timer"
            );
            return Ok(());
        };
        let entries = &self.index[slot];
        prop_assert_eq!(entries.len(), 1, "exactly one index entry: {:?}", entries);
        prop_assert_eq!(&entries[0], &entry_for(&exec, index_of(&exec)));

        let expected: BTreeSet<Timer> = timers_of(&exec, &self.config).into_iter().collect();
        let held: BTreeSet<Timer> = self
            .timers
            .iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, t)| *t)
            .collect();
        prop_assert_eq!(&held, &expected, "timers of {:?}", exec.state);
        let mut kinds: Vec<TimerKind> = expected.iter().map(|t| t.kind).collect();
        kinds.dedup();
        prop_assert_eq!(kinds.len(), expected.len(), "at most one timer per kind");

        prop_assert_eq!(exec.lease.is_some(), exec.state == State::Active);
        if let Some(lease) = &exec.lease {
            prop_assert_eq!(
                lease.epoch,
                exec.epoch,
                "the lease carries the current epoch"
            );
            prop_assert!(lease.expires_at_ms > 0);
        }
        prop_assert_eq!(exec.run_at_ms.is_some(), exec.state == State::Delayed);
        prop_assert_eq!(exec.finished_at_ms.is_some(), exec.state.is_terminal());
        prop_assert!(
            exec.failures <= exec.max_attempts,
            "failures exceed max_attempts"
        );
        prop_assert!(exec.reclaims <= exec.max_reclaims + 1);
        prop_assert!(exec.epoch.0 >= self.epochs[slot], "the epoch went back");
        self.epochs[slot] = exec.epoch.0;
        Self::check_waitpoints(&exec)
    }

    /// The suspension and signals of one execution agree with its state.
    fn check_waitpoints(exec: &Execution) -> Check {
        prop_assert!(exec.signals.len() <= SIGNALS_BUFFERED_MAX);
        if let Some(s) = &exec.suspension {
            prop_assert_eq!(s.seq, exec.suspends, "the last suspension is recorded");
            prop_assert!(!s.waitpoints.is_empty());
        }
        if exec.state != State::Suspended {
            return Ok(());
        }
        let s = exec.suspension.as_ref();
        prop_assert!(s.is_some(), "suspended without a suspension");
        let Some(s) = s else { return Ok(()) };
        prop_assert!(!s.satisfied(), "a satisfied suspension stays in force");
        for w in &s.waitpoints {
            prop_assert_eq!(
                w.signalled,
                exec.signals.contains_key(&w.name),
                "waitpoint {} is signalled exactly when its signal is held",
                &w.name
            );
            prop_assert!(w.expires_at_ms > s.suspended_at_ms);
            if let Some(at) = w.timeout_at_ms {
                prop_assert_eq!(w.expires_at_ms, at, "a token lasts until the timeout");
            }
        }
        Ok(())
    }

    fn check_all(&mut self) -> Check {
        for slot in 0..self.execs.len() {
            self.check_slot(slot)?;
        }
        Ok(())
    }

    fn pick_lease(&self, slot: usize, choice: &LeaseChoice) -> LeaseRef {
        let granted = &self.leases[slot];
        let current = self.execs[slot].as_ref().and_then(|e| e.lease.as_ref());
        match (choice, current) {
            (LeaseChoice::Current, Some(l)) => LeaseRef {
                lease_id: l.id.clone(),
                epoch: l.epoch,
            },
            (LeaseChoice::Current, None) | (LeaseChoice::Stale(_), _) if !granted.is_empty() => {
                let i = match choice {
                    LeaseChoice::Stale(i) => *i % granted.len(),
                    _ => granted.len() - 1,
                };
                granted[i].clone()
            }
            _ => LeaseRef {
                lease_id: LeaseId("forged".into()),
                epoch: weft_core::LeaseEpoch(99),
            },
        }
    }

    fn step(&mut self, op: &Op) -> Check {
        match op {
            Op::Advance(ms) => {
                self.now_ms += ms;
                Ok(())
            }
            Op::Tick => self.tick(),
            Op::Claim { slot, lease_ms } => self.claim(slot % self.execs.len(), *lease_ms),
            Op::Heartbeat {
                slot,
                lease,
                lease_ms,
            } => {
                let slot = slot % self.execs.len();
                let lease = self.pick_lease(slot, lease);
                let cmd = Command::Heartbeat {
                    lease: lease.clone(),
                    lease_ms: *lease_ms,
                };
                self.worker_write(slot, lease, cmd)
            }
            Op::Complete { slot, lease } => {
                let slot = slot % self.execs.len();
                let lease = self.pick_lease(slot, lease);
                let cmd = Command::Complete {
                    lease: lease.clone(),
                    result: json!({"ok": true}),
                };
                self.worker_write(slot, lease, cmd)
            }
            Op::Fail {
                slot,
                lease,
                retryable,
            } => {
                let slot = slot % self.execs.len();
                let lease = self.pick_lease(slot, lease);
                let cmd = Command::Fail {
                    lease: lease.clone(),
                    error: ErrorInfo::new("boom", "it broke"),
                    retryable: *retryable,
                };
                self.worker_write(slot, lease, cmd)
            }
            Op::Release { slot, lease } => {
                let slot = slot % self.execs.len();
                let lease = self.pick_lease(slot, lease);
                let cmd = Command::Release {
                    lease: lease.clone(),
                };
                self.worker_write(slot, lease, cmd)
            }
            Op::Suspend { slot, lease, spec } => {
                let slot = slot % self.execs.len();
                let lease = self.pick_lease(slot, lease);
                let cmd = Command::Suspend {
                    lease: lease.clone(),
                    spec: spec.clone(),
                };
                self.worker_write(slot, lease, cmd)
            }
            Op::Signal {
                slot,
                waitpoint,
                seq,
            } => self.signal(slot % self.execs.len(), waitpoint, *seq),
            Op::Cancel { slot } => self.operator(slot % self.execs.len(), true),
            Op::Replay { slot } => self.operator(slot % self.execs.len(), false),
            Op::Fire { slot, kind, mode } => self.fire(slot % self.execs.len(), *kind, *mode),
        }
    }

    /// Applies a command to a live execution: `Ok(None)` when the slot was
    /// purged, `Ok(Some(Err(e)))` when the machine refused (after checking the
    /// model is untouched), `Err` when an invariant broke.
    fn apply(&mut self, slot: usize, cmd: Command) -> Result<Option<Applied>, TestCaseError> {
        let Some(old) = self.execs[slot].clone() else {
            return Ok(None);
        };
        match machine::apply(&old, cmd, self.now_ms, &self.config) {
            Ok(t) => {
                if t.outcome != Outcome::Applied {
                    prop_assert_eq!(t.execution.as_ref(), Some(&old), "a no-op changed it");
                    prop_assert!(t.attempt.is_none() && t.index_from.is_none());
                    prop_assert!(t.index_to.is_none());
                    prop_assert!(t.timers_clear.is_empty() && t.timers_set.is_empty());
                }
                self.write(slot, t.clone())?;
                self.check_slot(slot)?;
                Ok(Some(Ok(t)))
            }
            Err(e) => {
                // The model writes nothing on an error, so it must still hold
                // the execution exactly as before and pass every check.
                prop_assert_eq!(self.execs[slot].as_ref(), Some(&old));
                self.check_slot(slot)?;
                prop_assert!(
                    matches!(
                        e,
                        Error::Conflict { .. }
                            | Error::LeaseLost { .. }
                            | Error::InvalidArgument { .. }
                            | Error::InvalidToken
                    ),
                    "unexpected error {:?}",
                    e
                );
                Ok(Some(Err(e)))
            }
        }
    }

    fn claim(&mut self, slot: usize, lease_ms: i64) -> Check {
        let Some(old) = self.execs[slot].clone() else {
            return Ok(());
        };
        let cmd = Command::Claim {
            worker_id: "w1".into(),
            lease_id: LeaseId::random(),
            lease_ms,
        };
        match self.apply(slot, cmd)? {
            Some(Ok(t)) => {
                prop_assert_eq!(
                    old.state,
                    State::Waiting,
                    "only a waiting execution is claimed"
                );
                prop_assert!((100..=3_600_000).contains(&lease_ms));
                let new = t.execution.as_ref().expect("claimed");
                prop_assert_eq!(new.state, State::Active);
                prop_assert_eq!(new.epoch.0, old.epoch.0 + 1, "a claim bumps the epoch");
                prop_assert_eq!(new.attempts, old.attempts + 1);
                match &t.attempt {
                    Some(AttemptChange::Start(a)) => prop_assert_eq!(a.number.0, new.attempts),
                    other => prop_assert!(false, "claim wrote {:?}", other),
                }
                Ok(())
            }
            None => Ok(()),
            Some(Err(Error::Conflict { .. })) => {
                prop_assert!(old.state != State::Waiting);
                Ok(())
            }
            Some(Err(Error::InvalidArgument { field, .. })) => {
                prop_assert_eq!(field, "lease_ms");
                prop_assert!(!(100..=3_600_000).contains(&lease_ms));
                Ok(())
            }
            Some(Err(e)) => Err(TestCaseError::fail(format!("claim: {e:?}"))),
        }
    }

    fn worker_write(&mut self, slot: usize, lease: LeaseRef, cmd: Command) -> Check {
        let Some(old) = self.execs[slot].clone() else {
            return Ok(());
        };
        let is_heartbeat = matches!(cmd, Command::Heartbeat { .. });
        let completing = matches!(cmd, Command::Complete { .. });
        let suspending = match &cmd {
            Command::Suspend { spec, .. } => Some(spec.clone()),
            _ => None,
        };
        let spec_valid = suspending.as_ref().is_none_or(|s| s.validate().is_ok());
        let by = ended_by(&cmd);
        let valid = old.lease.as_ref().is_some_and(|l| {
            l.id == lease.lease_id && l.epoch == lease.epoch && l.expires_at_ms > self.now_ms
        });
        // A suspend that buffered signals satisfied at once, sent again by
        // the same live lease, is answered as the first was.
        let at_once = suspending.as_ref().is_some_and(|spec| {
            spec_valid
                && valid
                && old.state == State::Active
                && old
                    .suspension
                    .as_ref()
                    .is_some_and(|s| s.at_once_epoch == Some(lease.epoch) && s.is_same(spec))
        });
        let replay = by.is_some_and(|by| is_replay(&old, &lease, by)) || at_once;
        match self.apply(slot, cmd)? {
            Some(Ok(t)) => {
                let new = t.execution.as_ref().expect("worker writes never purge");
                match t.outcome {
                    Outcome::Replayed => {
                        prop_assert!(replay, "a replay by a lease that never ended it")
                    }
                    Outcome::Applied => {
                        prop_assert!(
                            valid,
                            "fencing: a write with a stale or expired lease applied"
                        );
                        prop_assert!(!replay);
                        prop_assert!(spec_valid, "a bad suspend applied");
                        if let Some(spec) = &suspending {
                            self.check_suspend(&old, new, &t, spec, &lease)?;
                        } else if is_heartbeat {
                            prop_assert_eq!(new.state, State::Active);
                            prop_assert_eq!(new.epoch, old.epoch);
                        } else {
                            prop_assert!(new.lease.is_none(), "the attempt ended");
                            let ended = matches!(
                                t.attempt,
                                Some(AttemptChange::End { number, .. }) if number.0 == old.attempts
                            );
                            prop_assert!(ended, "the current attempt ends");
                        }
                        if completing {
                            prop_assert_eq!(new.state, State::Completed);
                        }
                        if by == Some(EndedBy::Released) {
                            self.check_released(&old, new, &t)?;
                        }
                    }
                    Outcome::Dropped => prop_assert!(false, "worker writes are never dropped"),
                }
                Ok(())
            }
            None => Ok(()),
            Some(Err(Error::LeaseLost { epoch, .. })) => {
                prop_assert!(spec_valid, "a bad suspend is refused before its lease");
                prop_assert!(!valid && !replay, "a valid lease was refused");
                prop_assert_eq!(epoch, lease.epoch, "the error names the presented epoch");
                Ok(())
            }
            Some(Err(Error::InvalidArgument { field, .. })) if suspending.is_some() => {
                prop_assert!(!spec_valid, "a valid suspend was refused");
                prop_assert!(field.starts_with("waitpoints"), "field {}", field);
                Ok(())
            }
            Some(Err(Error::InvalidArgument { field, .. })) => {
                prop_assert!(
                    is_heartbeat && valid,
                    "only a heartbeat's lease_ms is checked"
                );
                prop_assert_eq!(field, "lease_ms");
                Ok(())
            }
            Some(Err(e)) => Err(TestCaseError::fail(format!("worker write: {e:?}"))),
        }
    }

    /// A suspend either ends the attempt `suspended` (lease released,
    /// nothing counted, signals kept) or, when the buffered signals satisfy
    /// it, keeps the lease and hands those signals on.
    fn check_suspend(
        &self,
        old: &Execution,
        new: &Execution,
        t: &Transition,
        spec: &SuspendSpec,
        lease: &LeaseRef,
    ) -> Check {
        prop_assert_eq!(new.suspends, old.suspends + 1);
        let s = new.suspension.as_ref();
        prop_assert!(s.is_some(), "a suspend records its suspension");
        let Some(s) = s else { return Ok(()) };
        prop_assert_eq!(s.seq, new.suspends);
        prop_assert_eq!(s.suspended_at_ms, self.now_ms);
        let names: Vec<String> = spec.waitpoints.iter().map(|w| w.name.clone()).collect();
        let recorded: Vec<String> = s.waitpoints.iter().map(|w| w.name.clone()).collect();
        prop_assert_eq!(&recorded, &names);
        let flags: Vec<bool> = names.iter().map(|n| old.signals.contains_key(n)).collect();
        for ((w, d), flag) in s.waitpoints.iter().zip(&spec.waitpoints).zip(&flags) {
            prop_assert_eq!(w.signalled, *flag, "buffered signals count");
            prop_assert_eq!(w.timeout_at_ms, d.timeout_ms.map(|t| self.now_ms + t));
            prop_assert_eq!(w.on_timeout, d.on_timeout);
        }
        prop_assert_eq!(
            (new.failures, new.reclaims, new.attempts, new.epoch),
            (old.failures, old.reclaims, old.attempts, old.epoch),
            "a suspend counts nothing"
        );
        if satisfied(spec.resume_when, &flags) {
            prop_assert_eq!(new.state, State::Active, "already satisfied");
            prop_assert_eq!(&new.lease, &old.lease, "the lease stays");
            prop_assert!(t.attempt.is_none(), "the attempt goes on");
            let (taken, kept) = split_signals(&old.signals, &names);
            prop_assert_eq!(&new.resumed_signals, &taken);
            prop_assert_eq!(&new.signals, &kept);
        } else {
            prop_assert_eq!(new.state, State::Suspended);
            prop_assert!(new.lease.is_none(), "the lease is released");
            let ended = matches!(
                t.attempt,
                Some(AttemptChange::End {
                    number,
                    state: AttemptState::Suspended,
                    error: None,
                    ..
                }) if number.0 == old.attempts
            );
            prop_assert!(ended, "the attempt ends suspended: {:?}", t.attempt);
            let by = new.ended_lease.as_ref().map(|e| (&e.id, e.epoch, e.by));
            prop_assert_eq!(by, Some((&lease.lease_id, lease.epoch, EndedBy::Suspended)));
            prop_assert_eq!(&new.signals, &old.signals);
            prop_assert_eq!(&new.resumed_signals, &old.resumed_signals);
        }
        Ok(())
    }

    /// A signal is refused, delivered or buffered exactly as the suspension
    /// in force says.
    fn signal(&mut self, slot: usize, waitpoint: &str, choice: SeqChoice) -> Check {
        let Some(old) = self.execs[slot].clone() else {
            return Ok(());
        };
        self.sent += 1;
        let payload = json!({ "n": self.sent });
        let seq = match choice {
            SeqChoice::Operator => None,
            SeqChoice::Current => Some(old.suspension.as_ref().map_or(1, |s| s.seq)),
            SeqChoice::Other(n) => Some(n),
        };
        let in_force = old
            .suspension
            .as_ref()
            .filter(|_| old.state == State::Suspended);
        let position = in_force.and_then(|s| s.waitpoints.iter().position(|w| w.name == waitpoint));
        let open = match (in_force, position) {
            (Some(s), Some(i)) => !s.waitpoints[i].signalled && seq.is_none_or(|n| n == s.seq),
            _ => false,
        };
        let cmd = Command::Signal {
            waitpoint: waitpoint.to_owned(),
            payload: payload.clone(),
            seq,
        };
        // What the machine must do, decided from the old execution alone.
        let signalled = match (in_force, position) {
            (Some(s), Some(i)) => s.waitpoints[i].signalled,
            _ => false,
        };
        let conflict = old.state.is_terminal()
            || (seq.is_none()
                && if position.is_some() {
                    signalled
                } else {
                    old.signals.contains_key(waitpoint) || old.signals.len() >= SIGNALS_BUFFERED_MAX
                });
        let invalid_token = !old.state.is_terminal() && seq.is_some() && !open;
        let result = self.apply(slot, cmd)?;
        match result {
            None => Ok(()),
            Some(Err(Error::Conflict { .. })) => {
                prop_assert!(
                    conflict,
                    "a signal refused as conflict: {:?} {:?}",
                    old.state,
                    seq
                );
                Ok(())
            }
            Some(Err(Error::InvalidToken)) => {
                prop_assert!(invalid_token, "a token refused: {:?} {:?}", old.state, seq);
                Ok(())
            }
            Some(Ok(t)) => {
                prop_assert_eq!(t.outcome, Outcome::Applied);
                prop_assert!(
                    !conflict && !invalid_token,
                    "a signal applied: {:?} {:?}",
                    old.state,
                    seq
                );
                prop_assert!(t.attempt.is_none());
                let new = t.execution.as_ref().expect("signals never purge");
                if let (Some(s), true) = (in_force, position.is_some()) {
                    prop_assert!(open, "a closed waitpoint took a signal");
                    let flags: Vec<bool> = s
                        .waitpoints
                        .iter()
                        .map(|w| w.signalled || w.name == waitpoint)
                        .collect();
                    let names: Vec<String> = s.waitpoints.iter().map(|w| w.name.clone()).collect();
                    let mut held = old.signals.clone();
                    held.insert(waitpoint.to_owned(), payload);
                    if satisfied(s.resume_when, &flags) {
                        prop_assert_eq!(new.state, State::Waiting, "the signal resumes it");
                        prop_assert_eq!(new.ready_at_ms, self.now_ms);
                        let (taken, kept) = split_signals(&held, &names);
                        prop_assert_eq!(&new.resumed_signals, &taken);
                        prop_assert_eq!(&new.signals, &kept);
                    } else {
                        prop_assert_eq!(new.state, State::Suspended);
                        prop_assert_eq!(&new.signals, &held);
                    }
                } else {
                    prop_assert!(seq.is_none(), "a token's signal was buffered");
                    prop_assert!(!old.signals.contains_key(waitpoint));
                    prop_assert_eq!(new.state, old.state, "a buffered signal moves nothing");
                    let mut held = old.signals.clone();
                    held.insert(waitpoint.to_owned(), payload);
                    prop_assert_eq!(&new.signals, &held);
                    prop_assert_eq!(&new.resumed_signals, &old.resumed_signals);
                }
                Ok(())
            }
            Some(Err(e)) => Err(TestCaseError::fail(format!("signal: {e:?}"))),
        }
    }

    /// A release hands the attempt back and counts nothing.
    fn check_released(&self, old: &Execution, new: &Execution, t: &Transition) -> Check {
        prop_assert_eq!(new.state, State::Waiting, "a release makes it waiting");
        prop_assert_eq!(new.ready_at_ms, self.now_ms, "claimable at once");
        prop_assert_eq!(
            (new.failures, new.reclaims, new.epoch),
            (old.failures, old.reclaims, old.epoch),
            "a release counts nothing and keeps the epoch"
        );
        prop_assert_eq!(&new.error, &old.error);
        prop_assert_eq!(new.attempts, old.attempts);
        let released = matches!(
            t.attempt,
            Some(AttemptChange::End {
                state: AttemptState::Released,
                error: None,
                ..
            })
        );
        prop_assert!(released, "the attempt ends released: {:?}", t.attempt);
        Ok(())
    }

    fn operator(&mut self, slot: usize, cancel: bool) -> Check {
        let Some(old) = self.execs[slot].clone() else {
            return Ok(());
        };
        let cmd = if cancel {
            Command::Cancel {
                reason: Some("prop".into()),
            }
        } else {
            Command::Replay
        };
        match self.apply(slot, cmd)? {
            Some(Ok(t)) => {
                let new = t.execution.as_ref().expect("operators never purge");
                if cancel {
                    prop_assert!(!old.state.is_terminal() || old.state == State::Cancelled);
                    prop_assert_eq!(new.state, State::Cancelled);
                } else {
                    prop_assert!(old.state.is_terminal());
                    prop_assert_eq!(new.state, State::Waiting);
                    prop_assert_eq!(new.attempts, old.attempts, "replay keeps attempt numbering");
                    prop_assert_eq!(new.failures, 0);
                    prop_assert_eq!(
                        new.deadline_at_ms,
                        old.deadline_ms.map(|d| self.now_ms + d),
                        "replay restarts the deadline"
                    );
                    prop_assert!(new.signals.is_empty() && new.resumed_signals.is_empty());
                    prop_assert!(new.suspension.is_none());
                    prop_assert_eq!(new.suspends, old.suspends, "suspension numbers go on");
                }
                Ok(())
            }
            None => Ok(()),
            Some(Err(Error::Conflict { .. })) => {
                if cancel {
                    prop_assert!(old.state.is_terminal() && old.state != State::Cancelled);
                } else {
                    prop_assert!(!old.state.is_terminal());
                }
                Ok(())
            }
            Some(Err(e)) => Err(TestCaseError::fail(format!("operator: {e:?}"))),
        }
    }

    fn fire(&mut self, slot: usize, kind: TimerKind, mode: FireMode) -> Check {
        let held = self
            .timers
            .iter()
            .find(|(s, t)| *s == slot && t.kind == kind)
            .map(|(_, t)| *t);
        let (timer, current) = match (mode, held) {
            (FireMode::Current, Some(t)) => (t, true),
            (_, Some(t)) => (
                Timer {
                    kind,
                    due_ms: t.due_ms - 1,
                },
                false,
            ),
            (_, None) => (
                Timer {
                    kind,
                    due_ms: self.now_ms - 10,
                },
                false,
            ),
        };
        let due = timer.due_ms <= self.now_ms;
        let old = self.execs[slot].clone();
        match self.apply(slot, Command::Fire(timer))? {
            Some(Ok(t)) => {
                if current && due {
                    prop_assert_eq!(t.outcome, Outcome::Applied, "a due, current timer applies");
                    if let Some(old) = &old {
                        self.check_fired(old, timer, &t)?;
                    }
                } else {
                    prop_assert_eq!(
                        t.outcome,
                        Outcome::Dropped,
                        "an early or stale timer is dropped"
                    );
                }
                Ok(())
            }
            None => Ok(()),
            Some(Err(e)) => Err(TestCaseError::fail(format!("timers never fail: {e}"))),
        }
    }

    /// A waitpoint timeout applies the behaviour of the suspension's first
    /// unsignalled waitpoint to time out.
    fn check_fired(&self, old: &Execution, timer: Timer, t: &Transition) -> Check {
        if timer.kind != TimerKind::WaitpointTimeout {
            return Ok(());
        }
        prop_assert_eq!(old.state, State::Suspended);
        let s = old.suspension.as_ref();
        let w = s.and_then(|s| s.next_timeout());
        prop_assert!(w.is_some(), "a waitpoint timer without a waitpoint");
        let (Some(s), Some(w)) = (s, w) else {
            return Ok(());
        };
        prop_assert_eq!(w.timeout_at_ms, Some(timer.due_ms));
        prop_assert!(t.attempt.is_none(), "no attempt is running");
        let new = t.execution.as_ref().expect("a timeout never purges");
        let kind = new.error.as_ref().and_then(|e| e.kind.as_deref());
        let expected = match w.on_timeout {
            OnTimeout::Fail => State::Failed,
            OnTimeout::Cancel => State::Cancelled,
            OnTimeout::Expire => State::Expired,
            OnTimeout::Resume => State::Waiting,
        };
        prop_assert_eq!(new.state, expected, "on_timeout {:?}", w.on_timeout);
        prop_assert_eq!(new.failures, old.failures);
        match w.on_timeout {
            OnTimeout::Fail | OnTimeout::Expire => {
                prop_assert_eq!(kind, Some("waitpoint_timeout"))
            }
            OnTimeout::Cancel => prop_assert!(new.cancel_reason.is_some()),
            OnTimeout::Resume => {
                let names: Vec<String> = s.waitpoints.iter().map(|w| w.name.clone()).collect();
                let (taken, kept) = split_signals(&old.signals, &names);
                let received = s.waitpoints.iter().filter(|w| w.signalled).count();
                prop_assert_eq!(taken.len(), received, "what arrived so far");
                prop_assert_eq!(&new.resumed_signals, &taken);
                prop_assert_eq!(&new.signals, &kept);
                prop_assert_eq!(new.ready_at_ms, self.now_ms);
            }
        }
        Ok(())
    }

    /// Fires every due timer in due order, as a store's tick does.
    fn tick(&mut self) -> Check {
        for _ in 0..64 {
            let next = self
                .timers
                .iter()
                .filter(|(_, t)| t.due_ms <= self.now_ms)
                .min_by_key(|(slot, t)| (t.due_ms, *slot, t.kind))
                .copied();
            let Some((slot, timer)) = next else {
                return Ok(());
            };
            let old = self.execs[slot].clone();
            match self.apply(slot, Command::Fire(timer))? {
                Some(Ok(t)) => {
                    prop_assert_eq!(t.outcome, Outcome::Applied);
                    if let Some(old) = &old {
                        self.check_fired(old, timer, &t)?;
                    }
                }
                None => prop_assert!(false, "a timer outlived its execution"),
                Some(Err(e)) => return Err(TestCaseError::fail(format!("timers never fail: {e}"))),
            }
        }
        prop_assert!(false, "a tick never drained its due timers");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_after_every_command(
        specs in prop::collection::vec(submit_params(), 1..=4),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut model = Model::new(&specs)?;
        for op in &ops {
            model.step(op)?;
            model.check_all()?;
        }
        // Whatever happened, draining time ends every execution's timers
        // consistently: advance far and tick until the partition is quiet.
        model.now_ms += 10 * RETENTION_MS + 3_600_000;
        model.tick()?;
        model.check_all()?;
    }

    #[test]
    fn backoff_stays_within_its_bounds(
        backoff in backoff(),
        failures in 1u32..20,
        unit in 0.0f64..1.0,
    ) {
        let exponent = i32::try_from(failures - 1).unwrap_or(i32::MAX);
        let base = (backoff.initial_ms as f64 * backoff.multiplier.powi(exponent))
            .min(backoff.max_ms as f64);
        let delay = backoff.delay_ms(failures, unit) as f64;
        prop_assert!(delay >= base * (1.0 - backoff.jitter) - 1.0, "{} < {}", delay, base);
        prop_assert!(delay <= base * (1.0 + backoff.jitter) + 1.0, "{} > {}", delay, base);
    }
}
