//! Differential test: the Valkey store and the SQLite store agree.
//!
//! Goal: the Lua library mirrors `weft_core::machine` exactly, so the same
//! operation sequence must produce the same observable outcomes on both
//! stores: states, attempt numbers and states, counters, error kinds, claim
//! order, tick counts, lane depths.
//!
//! Method: random operations (submit, duplicate submit, claim, heartbeat,
//! complete, fail, release, suspend, signal, cancel, replay; ticks after
//! short real sleeps) are applied
//! to an in-memory SQLite store on the system clock and to Valkey, one after
//! the other. Ids differ between the stores, so executions are named by
//! submission order; every submit carries an idempotency key so it lands on
//! the same partition in both, and a unique priority so claim order does not
//! hang on ids or on which millisecond each store saw. Every duration is
//! either short (due before the next tick, which follows a 150 ms sleep) or
//! long (never due in the test), so ticks never race a due time; a worker
//! write that would land within a margin of its lease's expiry is skipped,
//! since the stores' clocks read a few ms apart. Suspends name waitpoints
//! from a pool of three, with `all` or `any`, short, long or no timeouts
//! and every `on_timeout`, so signals are buffered before a suspend, meet a
//! suspension in force, repeat, or come with a token's seq that matches,
//! is stale or is from the future; tasks show the signals they were handed.
//! `WEFT_DIFF_STEPS` sets the
//! number of steps (default 2000), `WEFT_DIFF_SEED` the seed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use weft_core::waitpoint::{OnTimeout, ResumeWhen, SuspendSpec, WaitpointSpec};
use weft_core::{
    Backoff, CancelParams, ClaimParams, CompleteParams, Error, ErrorInfo, Execution, ExecutionId,
    FailParams, HeartbeatParams, LeaseRef, ListParams, PartitionCount, PartitionId, ReleaseParams,
    Result, SignalParams, Store, SubmitParams, SuspendParams, Task,
};
use weft_sqlite::{SqliteConfig, SqliteStore};

const PARTITIONS: u16 = 4;
const STEPS_DEFAULT: usize = 2000;
/// Sleep before each tick: longer than every short duration plus margin.
const SETTLE: Duration = Duration::from_millis(150);
/// Operations between ticks, at most.
const BURST_MAX: usize = 24;
/// The shortest lease; every short timer is at most this long.
const SHORT_LEASE_MS: i64 = 100;
/// Long enough never to be due within a test run.
const LONG_MS: i64 = 600_000;
/// Worker writes this close to a lease's expiry are skipped.
const EXPIRY_MARGIN: Duration = Duration::from_millis(35);
/// The waitpoints suspends and signals name; few, so they meet often.
const WAITPOINTS: [&str; 3] = ["approve", "audit.log", "x:1/y-2"];

/// What an operation's outcome looks like, without ids and times.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(String),
    Err(String),
}

fn outcome<T>(result: &Result<T>, view: impl FnOnce(&T) -> String) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(view(value)),
        Err(Error::LeaseLost { reason, .. }) => Outcome::Err(format!("lease_lost: {reason}")),
        Err(Error::InvalidArgument { field, .. }) => Outcome::Err(format!("invalid {field}")),
        Err(e) => Outcome::Err(e.kind().to_owned()),
    }
}

/// A task held by the test: the same claim on both stores.
#[derive(Clone)]
struct TaskPair {
    idx: usize,
    sqlite: Task,
    valkey: Task,
    lease_ms: i64,
    /// Local instants bracketing when both stores started the lease.
    started: (Instant, Instant),
}

impl TaskPair {
    /// Whether a write issued now might see the lease live on one store and
    /// expired on the other.
    fn near_expiry(&self) -> bool {
        let lease = Duration::from_millis(u64::try_from(self.lease_ms).unwrap_or(0));
        let now = Instant::now();
        let earliest = self.started.0 + lease;
        let latest = self.started.1 + lease;
        now + EXPIRY_MARGIN >= earliest && now <= latest + EXPIRY_MARGIN
    }
}

struct Diff {
    sqlite: SqliteStore,
    valkey: weft_valkey::ValkeyStore,
    rng: fastrand::Rng,
    /// Execution ids by submission index: (sqlite, valkey).
    ids: Vec<(ExecutionId, ExecutionId)>,
    index: HashMap<ExecutionId, usize>,
    tasks: Vec<TaskPair>,
    log: Vec<String>,
}

impl Diff {
    fn view(&self, e: &Execution) -> String {
        // Times differ between the stores; only whether they are set, and
        // how they relate within one execution, can be compared.
        let suspension = e.suspension.as_ref().map(|s| {
            let waitpoints: Vec<String> = s
                .waitpoints
                .iter()
                .map(|w| {
                    format!(
                        "{} t={} {} exp_ok={} sig={}",
                        w.name,
                        w.timeout_at_ms.is_some(),
                        w.on_timeout.as_str(),
                        w.expires_at_ms == w.timeout_at_ms.unwrap_or(w.expires_at_ms)
                            && w.expires_at_ms > s.suspended_at_ms,
                        w.signalled
                    )
                })
                .collect();
            format!(
                "{} {} [{}]",
                s.seq,
                s.resume_when.as_str(),
                waitpoints.join(", ")
            )
        });
        format!(
            "#{} {} att={} fail={} recl={} epoch={} lease={:?} err={:?} res={:?} cancel={:?} \
             run_at={} deadline={} finished={} ended={:?} prio={} lane={} req={:?} \
             susp={} {suspension:?} sig={:?} resumed={:?}",
            self.index.get(&e.id).map_or(usize::MAX, |i| *i),
            e.state.as_str(),
            e.attempts,
            e.failures,
            e.reclaims,
            e.epoch.0,
            e.lease
                .as_ref()
                .map(|l| (l.epoch.0, l.lease_ms, l.worker_id.clone())),
            e.error
                .as_ref()
                .map(|x| (x.kind.clone(), x.message.clone())),
            e.result,
            e.cancel_reason,
            e.run_at_ms.is_some(),
            e.deadline_at_ms.is_some(),
            e.finished_at_ms.is_some(),
            e.ended_lease.as_ref().map(|l| (l.epoch.0, l.by)),
            e.priority,
            e.lane,
            e.requires,
            e.suspends,
            e.signals,
            e.resumed_signals,
        )
    }

    fn check(&mut self, what: String, s: Outcome, v: Outcome) {
        self.log.push(format!("{what} -> {s:?}"));
        if s != v {
            let tail = self
                .log
                .iter()
                .rev()
                .take(40)
                .rev()
                .cloned()
                .collect::<Vec<_>>();
            panic!(
                "stores disagree on {what}\n sqlite: {s:?}\n valkey: {v:?}\nlast steps:\n{}",
                tail.join("\n")
            );
        }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.usize(..items.len())].clone())
    }

    fn short_or_long(&mut self, short: i64) -> i64 {
        if self.rng.bool() {
            short
        } else {
            LONG_MS
        }
    }

    fn random_backoff(&mut self) -> Backoff {
        match self.rng.u8(0..4) {
            0 => Backoff {
                initial_ms: 0,
                max_ms: 0,
                multiplier: 1.0,
                jitter: 0.0,
            },
            1 => Backoff {
                initial_ms: 30,
                max_ms: 30,
                multiplier: 1.0,
                jitter: 0.0,
            },
            2 => Backoff {
                initial_ms: 10,
                max_ms: 40,
                multiplier: 2.0,
                jitter: 0.2,
            },
            _ => Backoff {
                initial_ms: LONG_MS,
                max_ms: LONG_MS,
                multiplier: 1.5,
                jitter: 0.1,
            },
        }
    }

    fn submit_params(&mut self, n: usize) -> SubmitParams {
        let maybe = |rng: &mut fastrand::Rng, p: u8| rng.u8(0..100) < p;
        let delay_ms = maybe(&mut self.rng, 20).then(|| self.short_or_long(20));
        let timeout_ms = maybe(&mut self.rng, 20).then(|| self.short_or_long(20));
        let deadline_ms = maybe(&mut self.rng, 10).then(|| self.short_or_long(60));
        SubmitParams {
            kind: "diff.job".into(),
            lane: Some(if self.rng.bool() { "a" } else { "b" }.into()),
            payload: json!({"n": n, "big": 12_345_678_901_234_567_u64}),
            priority: 1000 - i32::try_from(n).unwrap_or(2000),
            delay_ms,
            max_attempts: Some(self.rng.u32(1..5)),
            max_reclaims: Some(self.rng.u32(0..3)),
            backoff: Some(self.random_backoff()),
            timeout_ms,
            deadline_ms,
            requires: if self.rng.u8(0..4) == 0 {
                vec!["gpu".into()]
            } else {
                vec![]
            },
            idempotency_key: Some(format!("k{n}")),
            ..SubmitParams::default()
        }
    }

    async fn submit(&mut self) {
        let duplicate = !self.ids.is_empty() && self.rng.u8(0..10) == 0;
        let n = if duplicate {
            self.rng.usize(..self.ids.len())
        } else {
            self.ids.len()
        };
        if n >= 2000 {
            return;
        }
        let params = self.submit_params(n);
        let s = self.sqlite.execution_submit(&params).await;
        let v = self.valkey.execution_submit(&params).await;
        if let (Ok(s), Ok(v), false) = (&s, &v, duplicate) {
            self.index.insert(s.execution.id.clone(), n);
            self.index.insert(v.execution.id.clone(), n);
            self.ids
                .push((s.execution.id.clone(), v.execution.id.clone()));
        }
        let s = outcome(&s, |x| {
            format!("created={} {}", x.created, self.view(&x.execution))
        });
        let v = outcome(&v, |x| {
            format!("created={} {}", x.created, self.view(&x.execution))
        });
        self.check(format!("submit #{n}"), s, v);
    }

    async fn claim(&mut self) {
        let lanes: Vec<String> = match self.rng.u8(0..3) {
            0 => vec!["a".into()],
            1 => vec!["b".into()],
            _ => vec!["a".into(), "b".into()],
        };
        let lease_ms = if self.rng.bool() {
            SHORT_LEASE_MS
        } else {
            LONG_MS
        };
        let params = ClaimParams {
            worker_id: format!("w{}", self.rng.u8(0..3)),
            lanes,
            capabilities: if self.rng.bool() {
                vec!["gpu".into()]
            } else {
                vec![]
            },
            max: self.rng.u32(1..4),
            lease_ms,
        };
        let partition = PartitionId(self.rng.u16(0..PARTITIONS));
        let before = Instant::now();
        let s = self.sqlite.execution_claim(partition, &params).await;
        let v = self.valkey.execution_claim(partition, &params).await;
        let started = (before, Instant::now());
        if let (Ok(s), Ok(v)) = (&s, &v) {
            for (st, vt) in s.iter().zip(v) {
                let idx = self
                    .index
                    .get(&st.execution_id)
                    .copied()
                    .unwrap_or(usize::MAX);
                let pair = TaskPair {
                    idx,
                    sqlite: st.clone(),
                    valkey: vt.clone(),
                    lease_ms,
                    started,
                };
                self.tasks.push(pair);
            }
        }
        let view = |tasks: &Vec<Task>, index: &HashMap<ExecutionId, usize>| {
            tasks
                .iter()
                .map(|t| {
                    let idx = index.get(&t.execution_id).copied().unwrap_or(usize::MAX);
                    format!(
                        "#{idx} a{} e{} {} sig={:?}",
                        t.attempt.0, t.lease.epoch.0, t.payload, t.signals
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let s = outcome(&s, |x| view(x, &self.index));
        let v = outcome(&v, |x| view(x, &self.index));
        self.check(format!("claim p{} {params:?}", partition.0), s, v);
    }

    fn pick_task(&mut self) -> Option<TaskPair> {
        let tasks = self.tasks.clone();
        // Recent tasks are the live ones; old ones exercise fencing.
        let recent = &tasks[tasks.len().saturating_sub(8)..];
        let task = if self.rng.u8(0..4) == 0 {
            self.pick(&tasks)
        } else {
            self.pick(recent)
        }?;
        (!task.near_expiry()).then_some(task)
    }

    async fn heartbeat(&mut self) {
        let Some(mut task) = self.pick_task() else {
            return;
        };
        let lease_ms = match self.rng.u8(0..10) {
            0..=2 => None,
            3..=5 => Some(SHORT_LEASE_MS),
            6 => Some(50),
            _ => Some(LONG_MS),
        };
        let params = |t: &Task| HeartbeatParams {
            execution_id: t.execution_id.clone(),
            lease: LeaseRef {
                lease_id: t.lease.id.clone(),
                epoch: t.lease.epoch,
            },
            lease_ms,
        };
        let before = Instant::now();
        let s = self.sqlite.execution_heartbeat(&params(&task.sqlite)).await;
        let v = self.valkey.execution_heartbeat(&params(&task.valkey)).await;
        if s.is_ok() && v.is_ok() {
            task.lease_ms = lease_ms.unwrap_or(task.lease_ms);
            task.started = (before, Instant::now());
            for held in &mut self.tasks {
                if held.sqlite.lease.id == task.sqlite.lease.id {
                    held.lease_ms = task.lease_ms;
                    held.started = task.started;
                }
            }
        }
        let s = outcome(&s, |r| format!("cancel={}", r.cancel_requested));
        let v = outcome(&v, |r| format!("cancel={}", r.cancel_requested));
        self.check(format!("heartbeat #{} {lease_ms:?}", task.idx), s, v);
    }

    async fn complete(&mut self) {
        let Some(task) = self.pick_task() else { return };
        let result = json!({"by": task.idx, "n": 98_765_432_109_876_543_u64});
        let params = |t: &Task| CompleteParams {
            execution_id: t.execution_id.clone(),
            lease: LeaseRef {
                lease_id: t.lease.id.clone(),
                epoch: t.lease.epoch,
            },
            result: result.clone(),
        };
        let s = self.sqlite.execution_complete(&params(&task.sqlite)).await;
        let v = self.valkey.execution_complete(&params(&task.valkey)).await;
        let (s, v) = (outcome(&s, |e| self.view(e)), outcome(&v, |e| self.view(e)));
        self.check(
            format!("complete #{} e{}", task.idx, task.sqlite.lease.epoch.0),
            s,
            v,
        );
    }

    async fn fail(&mut self) {
        let Some(task) = self.pick_task() else { return };
        let retryable = self.rng.u8(0..4) != 0;
        let kind = match self.rng.u8(0..20) {
            0 => "k".repeat(weft_core::KIND_LEN_MAX + 1),
            1..=9 => "boom".to_owned(),
            _ => "oops".to_owned(),
        };
        let error = ErrorInfo::new(&kind, "it failed");
        let params = |t: &Task| FailParams {
            execution_id: t.execution_id.clone(),
            lease: LeaseRef {
                lease_id: t.lease.id.clone(),
                epoch: t.lease.epoch,
            },
            error: error.clone(),
            retryable,
        };
        let s = self.sqlite.execution_fail(&params(&task.sqlite)).await;
        let v = self.valkey.execution_fail(&params(&task.valkey)).await;
        let (s, v) = (outcome(&s, |e| self.view(e)), outcome(&v, |e| self.view(e)));
        self.check(format!("fail #{} retryable={retryable}", task.idx), s, v);
    }

    async fn release(&mut self) {
        let Some(task) = self.pick_task() else { return };
        let params = |t: &Task| ReleaseParams {
            execution_id: t.execution_id.clone(),
            lease: LeaseRef {
                lease_id: t.lease.id.clone(),
                epoch: t.lease.epoch,
            },
        };
        let s = self.sqlite.execution_release(&params(&task.sqlite)).await;
        let v = self.valkey.execution_release(&params(&task.valkey)).await;
        let (s, v) = (outcome(&s, |e| self.view(e)), outcome(&v, |e| self.view(e)));
        self.check(
            format!("release #{} e{}", task.idx, task.sqlite.lease.epoch.0),
            s,
            v,
        );
    }

    fn random_spec(&mut self) -> SuspendSpec {
        let mut names = WAITPOINTS;
        self.rng.shuffle(&mut names);
        let mut waitpoints: Vec<WaitpointSpec> = names[..self.rng.usize(1..=names.len())]
            .iter()
            .map(|name| WaitpointSpec {
                name: (*name).to_owned(),
                timeout_ms: match self.rng.u8(0..10) {
                    0..=3 => None,
                    4..=6 => Some(20),
                    _ => Some(LONG_MS),
                },
                on_timeout: OnTimeout::ALL[self.rng.usize(..OnTimeout::ALL.len())],
            })
            .collect();
        if self.rng.u8(0..20) == 0 {
            // Refused: a name twice.
            waitpoints.push(waitpoints[0].clone());
        }
        SuspendSpec {
            waitpoints,
            resume_when: if self.rng.bool() {
                ResumeWhen::All
            } else {
                ResumeWhen::Any
            },
        }
    }

    async fn suspend(&mut self) {
        let Some(task) = self.pick_task() else { return };
        let spec = self.random_spec();
        let params = |t: &Task| SuspendParams {
            execution_id: t.execution_id.clone(),
            lease: LeaseRef {
                lease_id: t.lease.id.clone(),
                epoch: t.lease.epoch,
            },
            spec: spec.clone(),
        };
        let s = self.sqlite.execution_suspend(&params(&task.sqlite)).await;
        let v = self.valkey.execution_suspend(&params(&task.valkey)).await;
        let (s, v) = (outcome(&s, |e| self.view(e)), outcome(&v, |e| self.view(e)));
        self.check(
            format!(
                "suspend #{} e{} {spec:?}",
                task.idx, task.sqlite.lease.epoch.0
            ),
            s,
            v,
        );
    }

    async fn signal(&mut self) {
        // Mostly the executions of recent tasks: the ones that suspend.
        let recent: Vec<usize> = self.tasks[self.tasks.len().saturating_sub(8)..]
            .iter()
            .map(|t| t.idx)
            .filter(|i| *i < self.ids.len())
            .collect();
        let idx = match self.pick(&recent) {
            Some(idx) if self.rng.u8(0..10) < 7 => idx,
            _ if self.ids.is_empty() => return,
            _ => self.rng.usize(..self.ids.len()),
        };
        let (sid, vid) = self.ids[idx].clone();
        let waitpoint = match self.rng.u8(0..30) {
            0 => "not a name".to_owned(),
            _ => WAITPOINTS[self.rng.usize(..WAITPOINTS.len())].to_owned(),
        };
        // Numbers and key order that a JSON round trip in Lua would change.
        let payload = match self.rng.u8(0..100) {
            0 => json!("p".repeat(1 << 20)),
            1..=9 => serde_json::Value::Null,
            _ => json!({"z": idx, "a": [0.1, 12_345_678_901_234_567_890_u64, -0.0], "s": "é\"\\"}),
        };
        // A token names the suspension it was minted for: the one recorded
        // now, a stale one or one that does not exist yet.
        let recorded = match self.sqlite.execution_get(&sid).await {
            Ok(e) => e.suspension.map(|s| s.seq),
            Err(_) => None,
        };
        let seq = match self.rng.u8(0..10) {
            0..=4 => None,
            5..=8 => Some(recorded.unwrap_or(1)),
            _ => Some(self.rng.u32(0..4)),
        };
        let params = |id: &ExecutionId| SignalParams {
            execution_id: id.clone(),
            waitpoint: waitpoint.clone(),
            payload: payload.clone(),
            seq,
        };
        let s = self.sqlite.execution_signal(&params(&sid)).await;
        let v = self.valkey.execution_signal(&params(&vid)).await;
        let (s, v) = (outcome(&s, |e| self.view(e)), outcome(&v, |e| self.view(e)));
        self.check(format!("signal #{idx} {waitpoint} seq={seq:?}"), s, v);
    }

    async fn cancel_or_replay(&mut self) {
        let ids = self.ids.clone();
        let Some((idx, (sid, vid))) = self.pick(&ids.into_iter().enumerate().collect::<Vec<_>>())
        else {
            return;
        };
        let (s, v, what) = if self.rng.bool() {
            let reason = match self.rng.u8(0..10) {
                0 => Some("r".repeat(weft_core::CANCEL_REASON_LEN_MAX + 1)),
                1..=4 => Some("stop".to_owned()),
                _ => None,
            };
            let p = |id: &ExecutionId| CancelParams {
                execution_id: id.clone(),
                reason: reason.clone(),
            };
            let s = self.sqlite.execution_cancel(&p(&sid)).await;
            (s, self.valkey.execution_cancel(&p(&vid)).await, "cancel")
        } else {
            let s = self.sqlite.execution_replay(&sid).await;
            (s, self.valkey.execution_replay(&vid).await, "replay")
        };
        let (s, v) = (outcome(&s, |e| self.view(e)), outcome(&v, |e| self.view(e)));
        self.check(format!("{what} #{idx}"), s, v);
    }

    async fn tick(&mut self) {
        tokio::time::sleep(SETTLE).await;
        for p in 0..PARTITIONS {
            let s = self.sqlite.partition_tick(PartitionId(p), 1000).await;
            let v = self.valkey.partition_tick(PartitionId(p), 1000).await;
            let view = |r: &weft_core::TickReport| {
                format!(
                    "applied={} dropped={} next={}",
                    r.applied,
                    r.dropped,
                    r.next_due_ms.is_some()
                )
            };
            let (s, v) = (outcome(&s, view), outcome(&v, view));
            self.check(format!("tick p{p}"), s, v);
        }
    }

    /// Compares every execution, its attempts, the lane depths and audits.
    async fn compare_all(&mut self) {
        for (idx, (sid, vid)) in self.ids.clone().into_iter().enumerate() {
            let s = self.sqlite.execution_get(&sid).await;
            let v = self.valkey.execution_get(&vid).await;
            let (s, v) = (outcome(&s, |e| self.view(e)), outcome(&v, |e| self.view(e)));
            self.check(format!("get #{idx}"), s, v);
            let attempts = |a: &Vec<weft_core::Attempt>| {
                let rows: Vec<String> = a
                    .iter()
                    .map(|x| {
                        let kind = x.error.as_ref().and_then(|e| e.kind.clone());
                        format!(
                            "{} {:?} {} {:?} {}",
                            x.number.0,
                            x.state,
                            x.worker_id,
                            kind,
                            x.ended_at_ms.is_some()
                        )
                    })
                    .collect();
                rows.join("; ")
            };
            let s = outcome(&self.sqlite.attempt_list(&sid).await, attempts);
            let v = outcome(&self.valkey.attempt_list(&vid).await, attempts);
            self.check(format!("attempts #{idx}"), s, v);
        }
        let depths = |d: &Vec<weft_core::LaneDepth>| format!("{d:?}");
        let s = outcome(&self.sqlite.lane_depths().await, depths);
        let v = outcome(&self.valkey.lane_depths().await, depths);
        self.check("lane depths".into(), s, v);
        let list = ListParams {
            limit: 1000,
            ..ListParams::default()
        };
        let count = |p: &weft_core::Page| format!("{}", p.items.len());
        let s = outcome(&self.sqlite.execution_list(&list).await, count);
        let v = outcome(&self.valkey.execution_list(&list).await, count);
        self.check("list count".into(), s, v);
        for p in 0..PARTITIONS {
            let s = self
                .sqlite
                .partition_audit(PartitionId(p))
                .await
                .expect("audit sqlite");
            let v = self
                .valkey
                .partition_audit(PartitionId(p))
                .await
                .expect("audit valkey");
            assert!(s.problems.is_empty(), "sqlite audit p{p}: {:?}", s.problems);
            assert!(v.problems.is_empty(), "valkey audit p{p}: {:?}", v.problems);
            assert_eq!(s.executions, v.executions, "executions on p{p}");
        }
    }
}

async fn step(diff: &mut Diff) {
    match diff.rng.u8(0..100) {
        0..=21 => diff.submit().await,
        22..=43 => diff.claim().await,
        44..=51 => diff.heartbeat().await,
        52..=61 => diff.complete().await,
        62..=66 => diff.release().await,
        67..=74 => diff.fail().await,
        75..=81 => diff.suspend().await,
        82..=91 => diff.signal().await,
        _ => diff.cancel_or_replay().await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_valkey_agree() {
    let url = common::url(common::VALKEY_URL_VAR);
    let steps = std::env::var("WEFT_DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS_DEFAULT);
    let seed = std::env::var("WEFT_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("differential: {steps} steps, WEFT_DIFF_SEED={seed}");
    let count = PartitionCount::new(PARTITIONS).expect("count");
    let sqlite = SqliteStore::open(SqliteConfig::memory().with_partitions(count)).expect("sqlite");
    let (valkey, _cleanup) = common::store_with(common::config(&url, Some(PARTITIONS))).await;
    let mut diff = Diff {
        sqlite,
        valkey,
        rng: fastrand::Rng::with_seed(seed),
        ids: Vec::new(),
        index: HashMap::new(),
        tasks: Vec::new(),
        log: Vec::new(),
    };
    let mut done = 0;
    let mut ticks = 0;
    while done < steps {
        let burst = diff.rng.usize(1..=BURST_MAX);
        for _ in 0..burst {
            step(&mut diff).await;
        }
        done += burst;
        diff.tick().await;
        ticks += 1;
        if ticks % 10 == 0 {
            diff.compare_all().await;
        }
    }
    diff.compare_all().await;
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for line in &diff.log {
        let op = line.split([' ', '#']).next().unwrap_or("").to_owned();
        let ok = if line.contains("-> Ok(") { "ok" } else { "err" };
        let err = line
            .split("Err(\"")
            .nth(1)
            .map_or("", |e| e.split('"').next().unwrap_or(""));
        *seen.entry(format!("{op} {ok} {err}")).or_default() += 1;
    }
    println!("differential outcomes: {seen:#?}");
    // What the run reached with waitpoints, by the executions' end states.
    let mut reached = std::collections::BTreeMap::<String, usize>::new();
    for (sid, _) in &diff.ids {
        let Ok(e) = diff.sqlite.execution_get(sid).await else {
            continue;
        };
        let timed_out = e
            .error
            .as_ref()
            .and_then(|x| x.kind.as_deref())
            .is_some_and(|k| k == "waitpoint_timeout")
            || e.cancel_reason
                .as_deref()
                .is_some_and(|r| r.ends_with("timed out"));
        let mut count = |what: String| *reached.entry(what).or_default() += 1;
        if e.suspends > 0 {
            count(format!("suspended at least once, now {}", e.state.as_str()));
        }
        if timed_out {
            count(format!("waitpoint timeout ended it {}", e.state.as_str()));
        }
        if !e.signals.is_empty() {
            count("holds unconsumed signals".into());
        }
        if !e.resumed_signals.is_empty() {
            count("resumed with signals".into());
        }
    }
    let handed = diff.tasks.iter().filter(|t| !t.sqlite.signals.is_empty());
    reached.insert("tasks handed signals".into(), handed.count());
    println!("differential waitpoints: {reached:#?}");
    println!(
        "differential: {} executions, {} tasks, {ticks} ticks",
        diff.ids.len(),
        diff.tasks.len()
    );
}
