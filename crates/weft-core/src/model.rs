//! The data model: executions, attempts, leases and the limits on each field.
//!
//! Invariants: an `Execution` with state `Active` has `lease: Some`; every
//! other state has `lease: None`. `failures <= max_attempts`. `requires` is
//! sorted and free of duplicates, so its joined form names the capability set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::{AttemptNumber, ExecutionId, FlowId, LeaseEpoch, LeaseId};

/// Longest `kind`, in bytes.
pub const KIND_LEN_MAX: usize = 128;
/// Longest lane name, in bytes.
pub const LANE_LEN_MAX: usize = 64;
/// Longest capability name, in bytes.
pub const CAPABILITY_LEN_MAX: usize = 64;
/// Most capabilities an execution may require or a worker may advertise.
pub const CAPABILITIES_MAX: usize = 32;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 256;
/// Most tags on one execution.
pub const TAGS_MAX: usize = 64;
/// Longest tag key, in bytes.
pub const TAG_KEY_LEN_MAX: usize = 128;
/// Longest tag value, in bytes.
pub const TAG_VALUE_LEN_MAX: usize = 1024;
/// Longest error message kept from a worker, in bytes; longer ones are cut.
pub const ERROR_MESSAGE_LEN_MAX: usize = 8192;
/// Longest worker id, in bytes.
pub const WORKER_ID_LEN_MAX: usize = 128;
/// Priority bounds; higher is claimed first.
pub const PRIORITY_MIN: i32 = -1000;
/// Priority bounds; higher is claimed first.
pub const PRIORITY_MAX: i32 = 1000;
/// Bounds on `max_attempts`.
pub const MAX_ATTEMPTS_MAX: u32 = 1000;
/// `max_attempts` when the submitter gives none.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 3;
/// Lease loss beyond this many times fails the execution (poison jobs).
pub const MAX_RECLAIMS_DEFAULT: u32 = 5;
/// Bounds on a lease's duration.
pub const LEASE_MS_MIN: i64 = 100;
/// Bounds on a lease's duration.
pub const LEASE_MS_MAX: i64 = 3_600_000;
/// A lease's duration when the worker gives none.
pub const LEASE_MS_DEFAULT: i64 = 30_000;
/// The longest delay, timeout or deadline accepted: one year.
pub const DURATION_MS_MAX: i64 = 365 * 24 * 3_600_000;
/// The payload limit unless the store is configured otherwise: 1 MiB.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u64 = 1 << 20;
/// Most tasks one claim may return.
pub const CLAIM_MAX: u32 = 1000;

/// The public state of an execution.
///
/// Out of each state: `Waiting` by claim, cancel, deadline; `Delayed` by its
/// timer, cancel, deadline; `Blocked` by join satisfaction or skip (flows);
/// `Active` by heartbeat, complete, fail, release, suspend, lease expiry,
/// attempt timeout, cancel, deadline; `Suspended` by signal or waitpoint
/// timeout; terminal states only by replay or retention purge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Claimable now. Entered by submit, a retry due at once, a lapsed
    /// lease with attempts left, a release, the delay timer, replay.
    Waiting,
    /// Claimable at `run_at`.
    Delayed,
    /// A flow member waiting on its upstreams.
    Blocked,
    /// Leased to a worker. Left by complete, fail, release (back to
    /// `Waiting`, nothing counted), lease expiry, attempt timeout, cancel,
    /// deadline; a heartbeat keeps it here.
    Active,
    /// Waiting on waitpoints.
    Suspended,
    /// Ended with a result.
    Completed,
    /// Ended without attempts left, or with a non-retryable error.
    Failed,
    /// Ended by a cancel.
    Cancelled,
    /// Ended by its deadline.
    Expired,
    /// A flow member whose join can no longer be satisfied.
    Skipped,
}

impl State {
    /// Every state, in declaration order.
    pub const ALL: [State; 10] = [
        State::Waiting,
        State::Delayed,
        State::Blocked,
        State::Active,
        State::Suspended,
        State::Completed,
        State::Failed,
        State::Cancelled,
        State::Expired,
        State::Skipped,
    ];

    /// Whether no transition but replay leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Completed | State::Failed | State::Cancelled | State::Expired | State::Skipped
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Delayed => "delayed",
            State::Blocked => "blocked",
            State::Active => "active",
            State::Suspended => "suspended",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
            State::Skipped => "skipped",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Result<Self> {
        State::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| Error::invalid("state", format!("unknown state {text:?}")))
    }
}

/// Retry backoff: the delay before attempt n+1 is
/// `min(max_ms, initial_ms × multiplier^(n−1))`, ± `jitter` as a fraction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial_ms: i64,
    /// Upper bound on any delay.
    pub max_ms: i64,
    /// Growth per failure, 1.0 ..= 100.0.
    pub multiplier: f64,
    /// Random spread as a fraction of the delay, 0.0 ..= 1.0.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 1000,
            max_ms: 60_000,
            multiplier: 2.0,
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// Checks every bound; says which field is wrong.
    pub fn validate(&self) -> Result<()> {
        check_duration("backoff.initial_ms", self.initial_ms)?;
        check_duration("backoff.max_ms", self.max_ms)?;
        if self.max_ms < self.initial_ms {
            return Err(Error::invalid(
                "backoff.max_ms",
                "must be >= backoff.initial_ms",
            ));
        }
        if !(1.0..=100.0).contains(&self.multiplier) {
            return Err(Error::invalid(
                "backoff.multiplier",
                "must be within 1.0..=100.0",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid("backoff.jitter", "must be within 0.0..=1.0"));
        }
        Ok(())
    }

    /// The delay after the `failures`-th counted failure (from 1), with the
    /// jitter drawn from `unit` in [0, 1).
    pub fn delay_ms(&self, failures: u32, unit: f64) -> i64 {
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (self.initial_ms as f64) * self.multiplier.powi(exponent);
        let base = base.min(self.max_ms as f64);
        let spread = base * self.jitter * (2.0 * unit - 1.0);
        // Bounded by max_ms × (1 + jitter) <= 2 years in ms, well inside i64.
        (base + spread).round().max(0.0) as i64
    }
}

/// The jitter sample for one retry, derived from the execution and attempt so
/// that every store computes the same schedule for the same history.
pub fn jitter_unit(id: &ExecutionId, attempt: AttemptNumber) -> f64 {
    let mut bytes = id.as_str().as_bytes().to_vec();
    bytes.extend_from_slice(&attempt.0.to_le_bytes());
    let hash = crate::ids::fnv1a64(&bytes);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The last failure recorded on an execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Human-readable text.
    pub message: String,
    /// A short machine-readable kind (`timed_out`, `lease_lost`, a worker's own).
    pub kind: Option<String>,
}

impl ErrorInfo {
    /// An error of `kind` with `message`.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: Some(kind.to_owned()),
        }
    }

    /// The error with its message cut to `ERROR_MESSAGE_LEN_MAX` bytes on a
    /// character boundary, as stores keep it.
    pub fn truncated(mut self) -> Self {
        if self.message.len() > ERROR_MESSAGE_LEN_MAX {
            let mut cut = ERROR_MESSAGE_LEN_MAX;
            while !self.message.is_char_boundary(cut) {
                cut -= 1;
            }
            self.message.truncate(cut);
        }
        self
    }
}

/// A worker's exclusive, time-limited right to run the current attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Random id given to the worker.
    pub id: LeaseId,
    /// The execution's epoch when the lease was granted.
    pub epoch: LeaseEpoch,
    /// When the lease lapses unless extended.
    pub expires_at_ms: i64,
    /// Duration a heartbeat extends by unless it names another.
    pub lease_ms: i64,
    /// The worker holding it.
    pub worker_id: String,
    /// When the attempt times out, if the execution has `timeout_ms`.
    pub timeout_at_ms: Option<i64>,
}

/// The worker write that ended a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// `complete`.
    Completed,
    /// `fail`.
    Failed,
    /// `release`.
    Released,
    /// `suspend`.
    Suspended,
}

impl EndedBy {
    /// Every kind, in declaration order.
    pub const ALL: [EndedBy; 4] = [
        EndedBy::Completed,
        EndedBy::Failed,
        EndedBy::Released,
        EndedBy::Suspended,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Completed => "completed",
            EndedBy::Failed => "failed",
            EndedBy::Released => "released",
            EndedBy::Suspended => "suspended",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        EndedBy::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Which worker write ended the last lease, so the same write can be replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedLease {
    /// The lease that wrote.
    pub id: LeaseId,
    /// Its epoch.
    pub epoch: LeaseEpoch,
    /// Which write it was.
    pub by: EndedBy,
}

/// One unit of work and everything the store knows about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// Encodes the partition.
    pub id: ExecutionId,
    /// Names the handler.
    pub kind: String,
    /// The queue it is claimed from.
    pub lane: String,
    /// Public state.
    pub state: State,
    /// Higher is claimed first.
    pub priority: i32,
    /// The input.
    pub payload: Value,
    /// Attempts started so far; the last attempt's number.
    pub attempts: u32,
    /// Attempts that counted against `max_attempts` since submit or replay.
    pub failures: u32,
    /// Lease losses since submit or replay.
    pub reclaims: u32,
    /// Attempts in total, first included.
    pub max_attempts: u32,
    /// Lease losses tolerated before the execution fails.
    pub max_reclaims: u32,
    /// Retry delays.
    pub backoff: Backoff,
    /// Per-attempt time limit.
    pub timeout_ms: Option<i64>,
    /// Time limit from submit (or replay) to the end.
    pub deadline_ms: Option<i64>,
    /// When the deadline falls.
    pub deadline_at_ms: Option<i64>,
    /// Capabilities a worker must have: sorted, unique.
    pub requires: Vec<String>,
    /// The submitter's deduplication key.
    pub idempotency_key: Option<String>,
    /// Free labels.
    pub tags: BTreeMap<String, String>,
    /// The completing worker's output.
    pub result: Option<Value>,
    /// The last failure.
    pub error: Option<ErrorInfo>,
    /// The flow this is a member of.
    pub flow_id: Option<FlowId>,
    /// The member's node key in its flow.
    pub flow_node: Option<String>,
    /// Creation time.
    pub created_at_ms: i64,
    /// Time of the last transition.
    pub updated_at_ms: i64,
    /// When a `Delayed` execution becomes claimable.
    pub run_at_ms: Option<i64>,
    /// When it last became claimable; orders claims within a priority.
    pub ready_at_ms: i64,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
    /// The current lease while `Active`.
    pub lease: Option<Lease>,
    /// The last epoch granted; the next claim gets `epoch + 1`.
    pub epoch: LeaseEpoch,
    /// The lease whose write ended the last attempt.
    pub ended_lease: Option<EndedLease>,
    /// Why it was cancelled, if it was.
    pub cancel_reason: Option<String>,
    /// A flow member's join over its incoming edges; `None` outside flows
    /// and for members without upstreams.
    #[serde(default)]
    pub join: Option<crate::flow::JoinState>,
    /// Suspends so far; the next suspension's `seq` is one more.
    #[serde(default)]
    pub suspends: u32,
    /// The last suspension (in force only while `Suspended`).
    #[serde(default)]
    pub suspension: Option<crate::waitpoint::Suspension>,
    /// Signals received that no run has been handed yet, by waitpoint:
    /// buffered ones, and those of the suspension in force.
    #[serde(default)]
    pub signals: BTreeMap<String, Value>,
    /// The signals the last suspension ended with; every task of the
    /// execution carries them until it suspends again.
    #[serde(default)]
    pub resumed_signals: BTreeMap<String, Value>,
}

impl Execution {
    /// The capability set as one string: the sorted requirements joined by `,`.
    pub fn capset(&self) -> String {
        self.requires.join(",")
    }
}

/// How one attempt ended (or that it is still running).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// In progress.
    Running,
    /// Completed the execution.
    Succeeded,
    /// The worker reported a failure.
    Failed,
    /// Exceeded `timeout_ms`, or the execution's deadline fell.
    TimedOut,
    /// The lease lapsed.
    LeaseLost,
    /// The execution was cancelled.
    Cancelled,
    /// The execution suspended.
    Suspended,
    /// The worker handed the task back unfinished (`release`); it counts
    /// against neither `max_attempts` nor `max_reclaims`.
    Released,
}

impl AttemptState {
    /// Every attempt state, in declaration order.
    pub const ALL: [AttemptState; 8] = [
        AttemptState::Running,
        AttemptState::Succeeded,
        AttemptState::Failed,
        AttemptState::TimedOut,
        AttemptState::LeaseLost,
        AttemptState::Cancelled,
        AttemptState::Suspended,
        AttemptState::Released,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
            AttemptState::TimedOut => "timed_out",
            AttemptState::LeaseLost => "lease_lost",
            AttemptState::Cancelled => "cancelled",
            AttemptState::Suspended => "suspended",
            AttemptState::Released => "released",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        AttemptState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One try of an execution by one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// From 1.
    pub number: AttemptNumber,
    /// Who ran it.
    pub worker_id: String,
    /// How it ended.
    pub state: AttemptState,
    /// Start time.
    pub started_at_ms: i64,
    /// End time.
    pub ended_at_ms: Option<i64>,
    /// The failure, if it failed.
    pub error: Option<ErrorInfo>,
}

/// What a worker receives from a claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The execution to run.
    pub execution_id: ExecutionId,
    /// Its handler name.
    pub kind: String,
    /// Its lane.
    pub lane: String,
    /// Its input.
    pub payload: Value,
    /// This attempt's number.
    pub attempt: AttemptNumber,
    /// The lease that fences the worker's writes.
    pub lease: Lease,
    /// The flow, for flow members.
    pub flow_id: Option<FlowId>,
    /// The node key, for flow members.
    pub flow_node: Option<String>,
    /// Upstream results keyed by node key (empty outside flows).
    pub inputs: BTreeMap<String, Value>,
    /// The payloads of the signals that resumed the execution, by waitpoint
    /// (empty until it has suspended and resumed).
    pub signals: BTreeMap<String, Value>,
}

impl Task {
    /// The lease its worker presents with every write.
    pub fn lease_ref(&self) -> crate::machine::LeaseRef {
        crate::machine::LeaseRef {
            lease_id: self.lease.id.clone(),
            epoch: self.lease.epoch,
        }
    }

    /// The task for an execution a claim has just leased (inputs empty; a
    /// store fills them for flow members).
    pub fn from_claimed(exec: Execution) -> Result<Self> {
        let lease = exec
            .lease
            .clone()
            .ok_or_else(|| Error::Internal(format!("claimed {} holds no lease", exec.id)))?;
        Ok(Task {
            attempt: AttemptNumber(exec.attempts),
            execution_id: exec.id,
            kind: exec.kind,
            lane: exec.lane,
            payload: exec.payload,
            lease,
            flow_id: exec.flow_id,
            flow_node: exec.flow_node,
            inputs: BTreeMap::new(),
            signals: exec.resumed_signals,
        })
    }
}

/// What a client may submit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubmitParams {
    /// Handler name, 1–128 bytes.
    pub kind: String,
    /// Queue; `default` when empty.
    pub lane: Option<String>,
    /// Input; null when absent.
    pub payload: Value,
    /// −1000 ..= 1000.
    pub priority: i32,
    /// Delay before the first attempt; exclusive with `run_at_ms`.
    pub delay_ms: Option<i64>,
    /// Absolute time of the first attempt; exclusive with `delay_ms`.
    pub run_at_ms: Option<i64>,
    /// 1 ..= 1000, default 3.
    pub max_attempts: Option<u32>,
    /// Lease losses tolerated, default 5.
    pub max_reclaims: Option<u32>,
    /// Retry delays.
    pub backoff: Option<Backoff>,
    /// Per-attempt limit, > 0.
    pub timeout_ms: Option<i64>,
    /// Limit from submit, > 0.
    pub deadline_ms: Option<i64>,
    /// Capabilities a worker must have.
    pub requires: Vec<String>,
    /// Same key again returns the existing execution.
    pub idempotency_key: Option<String>,
    /// Free labels.
    pub tags: BTreeMap<String, String>,
}

/// Lane used when a submit names none.
pub const LANE_DEFAULT: &str = "default";

fn check_duration(field: &str, value: i64) -> Result<()> {
    if value < 0 {
        return Err(Error::invalid(field, format!("must be >= 0, got {value}")));
    }
    if value > DURATION_MS_MAX {
        return Err(Error::invalid(
            field,
            format!("must be <= {DURATION_MS_MAX}, got {value}"),
        ));
    }
    Ok(())
}

fn check_positive_duration(field: &str, value: i64) -> Result<()> {
    if value == 0 {
        return Err(Error::invalid(field, "must be > 0"));
    }
    check_duration(field, value)
}

/// Checks a name made of letters, digits and `_ . : / -`, 1..=`max` bytes.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be 1..={max} bytes, got {}", value.len()),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:/-".contains(c);
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(Error::invalid(
            field,
            format!("{bad:?} is not allowed; use letters, digits and _ . : / -"),
        ));
    }
    Ok(())
}

/// Sorts, deduplicates and checks a capability list.
pub fn normalize_capabilities(field: &str, caps: &[String]) -> Result<Vec<String>> {
    if caps.len() > CAPABILITIES_MAX {
        return Err(Error::invalid(
            field,
            format!("at most {CAPABILITIES_MAX} entries"),
        ));
    }
    for cap in caps {
        check_name(field, cap, CAPABILITY_LEN_MAX)?;
    }
    let mut out = caps.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Checks a lease duration: `LEASE_MS_MIN ..= LEASE_MS_MAX`.
pub fn check_lease_ms(value: i64) -> Result<()> {
    if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&value) {
        return Err(Error::invalid(
            "lease_ms",
            format!("must be {LEASE_MS_MIN}..={LEASE_MS_MAX}, got {value}"),
        ));
    }
    Ok(())
}

/// Checks a worker id: 1..=128 bytes, no control characters.
pub fn check_worker_id(value: &str) -> Result<()> {
    if value.is_empty() || value.len() > WORKER_ID_LEN_MAX || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            "worker_id",
            format!("must be 1..={WORKER_ID_LEN_MAX} bytes without control characters"),
        ));
    }
    Ok(())
}

impl SubmitParams {
    /// A submit of `kind` with `payload` and every default.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            ..Self::default()
        }
    }

    /// Checks every field against its bounds and the payload against
    /// `payload_bytes_max`; says which field is wrong.
    pub fn validate(&self, payload_bytes_max: u64) -> Result<()> {
        check_name("kind", &self.kind, KIND_LEN_MAX)?;
        if let Some(lane) = &self.lane {
            check_name("lane", lane, LANE_LEN_MAX)?;
        }
        if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&self.priority) {
            return Err(Error::invalid(
                "priority",
                format!(
                    "must be {PRIORITY_MIN}..={PRIORITY_MAX}, got {}",
                    self.priority
                ),
            ));
        }
        if self.delay_ms.is_some() && self.run_at_ms.is_some() {
            return Err(Error::invalid(
                "delay_ms",
                "give delay_ms or run_at, not both",
            ));
        }
        if let Some(delay) = self.delay_ms {
            check_duration("delay_ms", delay)?;
        }
        if let Some(run_at) = self.run_at_ms {
            if run_at < 0 {
                return Err(Error::invalid("run_at", "must not be before 1970"));
            }
        }
        if let Some(max) = self.max_attempts {
            if !(1..=MAX_ATTEMPTS_MAX).contains(&max) {
                return Err(Error::invalid(
                    "max_attempts",
                    format!("must be 1..={MAX_ATTEMPTS_MAX}, got {max}"),
                ));
            }
        }
        if let Some(max) = self.max_reclaims {
            if max > MAX_ATTEMPTS_MAX {
                return Err(Error::invalid(
                    "max_reclaims",
                    format!("must be <= {MAX_ATTEMPTS_MAX}"),
                ));
            }
        }
        if let Some(backoff) = &self.backoff {
            backoff.validate()?;
        }
        if let Some(t) = self.timeout_ms {
            check_positive_duration("timeout_ms", t)?;
        }
        if let Some(d) = self.deadline_ms {
            check_positive_duration("deadline_ms", d)?;
        }
        normalize_capabilities("requires", &self.requires)?;
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
                return Err(Error::invalid(
                    "idempotency_key",
                    format!("must be 1..={IDEMPOTENCY_KEY_LEN_MAX} bytes"),
                ));
            }
        }
        self.validate_tags()?;
        let bytes = payload_bytes(&self.payload);
        if bytes > payload_bytes_max {
            return Err(Error::PayloadTooLarge {
                bytes,
                max_bytes: payload_bytes_max,
            });
        }
        Ok(())
    }

    fn validate_tags(&self) -> Result<()> {
        if self.tags.len() > TAGS_MAX {
            return Err(Error::invalid("tags", format!("at most {TAGS_MAX} tags")));
        }
        for (key, value) in &self.tags {
            if key.is_empty() || key.len() > TAG_KEY_LEN_MAX {
                return Err(Error::invalid(
                    "tags",
                    format!("keys must be 1..={TAG_KEY_LEN_MAX} bytes"),
                ));
            }
            if value.len() > TAG_VALUE_LEN_MAX {
                return Err(Error::invalid(
                    "tags",
                    format!("values must be at most {TAG_VALUE_LEN_MAX} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// The serialized size of a JSON value.
pub fn payload_bytes(value: &Value) -> u64 {
    serde_json::to_vec(value)
        .map(|v| v.len() as u64)
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    //! Backoff stays within its documented bounds; validation names the field.
    use super::*;

    #[test]
    fn backoff_grows_and_caps_within_jitter() {
        let b = Backoff {
            initial_ms: 100,
            max_ms: 1000,
            multiplier: 2.0,
            jitter: 0.1,
        };
        for (failures, base) in [
            (1, 100.0),
            (2, 200.0),
            (3, 400.0),
            (4, 800.0),
            (5, 1000.0),
            (9, 1000.0),
        ] {
            for unit in [0.0, 0.25, 0.5, 0.999] {
                let d = b.delay_ms(failures, unit) as f64;
                assert!(
                    d >= base * 0.9 - 1.0 && d <= base * 1.1 + 1.0,
                    "{failures} {unit} {d}"
                );
            }
        }
        assert_eq!(b.delay_ms(1, 0.5), 100);
    }

    #[test]
    fn stored_names_round_trip_and_match_serde() {
        for state in AttemptState::ALL {
            assert_eq!(AttemptState::parse(state.as_str()), Some(state));
            let wire = serde_json::to_value(state).unwrap();
            assert_eq!(wire, Value::String(state.as_str().to_owned()));
        }
        assert_eq!(AttemptState::Released.as_str(), "released");
        for by in EndedBy::ALL {
            assert_eq!(EndedBy::parse(by.as_str()), Some(by));
            let wire = serde_json::to_value(by).unwrap();
            assert_eq!(wire, Value::String(by.as_str().to_owned()));
        }
    }

    #[test]
    fn errors_are_cut_on_char_boundaries() {
        let long = "é".repeat(ERROR_MESSAGE_LEN_MAX);
        let cut = ErrorInfo::new("k", long).truncated();
        assert!(cut.message.len() <= ERROR_MESSAGE_LEN_MAX);
        assert!(cut.message.len() >= ERROR_MESSAGE_LEN_MAX - 1);
        assert_eq!(ErrorInfo::new("k", "short").truncated().message, "short");
    }

    #[test]
    fn jitter_unit_is_in_range_and_deterministic() {
        let id = ExecutionId::mint(crate::ids::PartitionId(3), 1);
        for n in 1..100 {
            let u = jitter_unit(&id, AttemptNumber(n));
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, jitter_unit(&id, AttemptNumber(n)));
        }
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(SubmitParams, &str)> = vec![
            (SubmitParams::new("", Value::Null), "kind"),
            (SubmitParams::new("has space", Value::Null), "kind"),
            (
                SubmitParams {
                    lane: Some("x".repeat(65)),
                    ..SubmitParams::new("k", Value::Null)
                },
                "lane",
            ),
            (
                SubmitParams {
                    priority: 1001,
                    ..SubmitParams::new("k", Value::Null)
                },
                "priority",
            ),
            (
                SubmitParams {
                    delay_ms: Some(-1),
                    ..SubmitParams::new("k", Value::Null)
                },
                "delay_ms",
            ),
            (
                SubmitParams {
                    max_attempts: Some(0),
                    ..SubmitParams::new("k", Value::Null)
                },
                "max_attempts",
            ),
            (
                SubmitParams {
                    timeout_ms: Some(0),
                    ..SubmitParams::new("k", Value::Null)
                },
                "timeout_ms",
            ),
            (
                SubmitParams {
                    deadline_ms: Some(-5),
                    ..SubmitParams::new("k", Value::Null)
                },
                "deadline_ms",
            ),
            (
                SubmitParams {
                    requires: vec!["a,b".into()],
                    ..SubmitParams::new("k", Value::Null)
                },
                "requires",
            ),
        ];
        for (params, field) in cases {
            match params.validate(PAYLOAD_BYTES_MAX_DEFAULT) {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let big = SubmitParams::new("k", Value::String("x".repeat(100)));
        assert!(matches!(
            big.validate(50),
            Err(Error::PayloadTooLarge { .. })
        ));
    }
}
