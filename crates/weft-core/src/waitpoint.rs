//! Waitpoints: what a suspended execution waits on, and the signals that
//! satisfy them.
//!
//! Definitions: a `SuspendSpec` names one or more waitpoints and whether
//! `all` or `any` of them must be signalled; the state machine turns it into
//! a `Suspension` recorded on the execution. A signal names a waitpoint and
//! carries a JSON payload; one that arrives before the suspend is buffered in
//! `Execution::signals` and satisfies the waitpoint when it is declared.
//!
//! Invariants: a suspension's waitpoint names are unique; a waitpoint is
//! signalled at most once per suspension; an execution buffers at most
//! `SIGNALS_BUFFERED_MAX` signals.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{check_name, DURATION_MS_MAX};

/// Most waitpoints one suspend may name.
pub const WAITPOINTS_MAX: usize = 16;
/// Longest waitpoint name, in bytes.
pub const WAITPOINT_NAME_LEN_MAX: usize = 64;
/// Most signals an execution holds that no run has consumed yet.
pub const SIGNALS_BUFFERED_MAX: usize = 64;
/// How long the token of a waitpoint without a timeout stays valid: one year.
pub const TOKEN_TTL_MS_MAX: i64 = DURATION_MS_MAX;

/// Which signals end a suspension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeWhen {
    /// Every waitpoint is signalled.
    #[default]
    All,
    /// One waitpoint is signalled.
    Any,
}

impl ResumeWhen {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeWhen::All => "all",
            ResumeWhen::Any => "any",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        [ResumeWhen::All, ResumeWhen::Any]
            .into_iter()
            .find(|w| w.as_str() == text)
    }
}

/// What a waitpoint's timeout does to the suspended execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The execution ends `failed` (no retry).
    #[default]
    Fail,
    /// The execution ends `cancelled`.
    Cancel,
    /// The execution ends `expired`.
    Expire,
    /// The execution resumes (`waiting`) with the signals received so far.
    Resume,
}

impl OnTimeout {
    /// Every behaviour, in declaration order.
    pub const ALL: [OnTimeout; 4] = [
        OnTimeout::Fail,
        OnTimeout::Cancel,
        OnTimeout::Expire,
        OnTimeout::Resume,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Fail => "fail",
            OnTimeout::Cancel => "cancel",
            OnTimeout::Expire => "expire",
            OnTimeout::Resume => "resume",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        OnTimeout::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// One waitpoint as a worker declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitpointSpec {
    /// Unique within the suspend; letters, digits and `_ . : / -`.
    pub name: String,
    /// How long to wait; no timeout when absent.
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// What the timeout does.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

impl WaitpointSpec {
    /// A waitpoint without a timeout.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            timeout_ms: None,
            on_timeout: OnTimeout::Fail,
        }
    }
}

/// A worker's request to suspend its execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendSpec {
    /// 1 ..= `WAITPOINTS_MAX` waitpoints with unique names.
    pub waitpoints: Vec<WaitpointSpec>,
    /// Which signals end the suspension.
    #[serde(default)]
    pub resume_when: ResumeWhen,
}

impl SuspendSpec {
    /// Checks every field; says which one is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.waitpoints.is_empty() || self.waitpoints.len() > WAITPOINTS_MAX {
            return Err(Error::invalid(
                "waitpoints",
                format!("name 1..={WAITPOINTS_MAX} waitpoints"),
            ));
        }
        for (i, wp) in self.waitpoints.iter().enumerate() {
            check_waitpoint_name("waitpoints.name", &wp.name)?;
            if self.waitpoints[..i].iter().any(|w| w.name == wp.name) {
                return Err(Error::invalid(
                    "waitpoints.name",
                    format!("{:?} is named twice", wp.name),
                ));
            }
            if let Some(t) = wp.timeout_ms {
                if !(1..=DURATION_MS_MAX).contains(&t) {
                    return Err(Error::invalid(
                        "waitpoints.timeout_ms",
                        format!("must be 1..={DURATION_MS_MAX}, got {t}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a waitpoint name.
pub fn check_waitpoint_name(field: &str, name: &str) -> Result<()> {
    check_name(field, name, WAITPOINT_NAME_LEN_MAX)
}

/// One waitpoint of a recorded suspension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waitpoint {
    /// Its name.
    pub name: String,
    /// When its timeout fires, if it has one.
    pub timeout_at_ms: Option<i64>,
    /// What the timeout does.
    pub on_timeout: OnTimeout,
    /// When its token stops verifying: the timeout, or `TOKEN_TTL_MS_MAX`
    /// after the suspend.
    pub expires_at_ms: i64,
    /// Whether its signal has arrived.
    pub signalled: bool,
}

/// The last suspend of an execution. It stays recorded after the execution
/// resumes so that a repeated suspend by the same lease can be answered with
/// the same tokens; it is in force only while the state is `suspended`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// Which suspend of the execution this is, from 1; tokens name it, so a
    /// token of an earlier suspension never matches a later one.
    pub seq: u32,
    /// Which signals end it.
    pub resume_when: ResumeWhen,
    /// When the worker suspended.
    pub suspended_at_ms: i64,
    /// The waitpoints, in the order the worker declared them.
    pub waitpoints: Vec<Waitpoint>,
    /// The epoch of the lease that suspended, when signals buffered before
    /// satisfied the suspension at once (the execution stayed `active`): the
    /// same suspend by that lease again is answered the same way, not taken
    /// as a new wait.
    #[serde(default)]
    pub at_once_epoch: Option<crate::ids::LeaseEpoch>,
}

impl Suspension {
    /// Whether the signals received so far end the suspension.
    pub fn satisfied(&self) -> bool {
        match self.resume_when {
            ResumeWhen::All => self.waitpoints.iter().all(|w| w.signalled),
            ResumeWhen::Any => self.waitpoints.iter().any(|w| w.signalled),
        }
    }

    /// Whether `spec` asks for this suspension again: the same waitpoints in
    /// the same order, resumed the same way.
    pub fn is_same(&self, spec: &SuspendSpec) -> bool {
        self.resume_when == spec.resume_when
            && self.waitpoints.len() == spec.waitpoints.len()
            && self
                .waitpoints
                .iter()
                .zip(&spec.waitpoints)
                .all(|(w, s)| w.name == s.name)
    }

    /// The unsignalled waitpoint whose timeout falls first (declaration
    /// order breaks ties).
    pub fn next_timeout(&self) -> Option<&Waitpoint> {
        self.waitpoints
            .iter()
            .filter(|w| !w.signalled && w.timeout_at_ms.is_some())
            .min_by_key(|w| w.timeout_at_ms)
    }
}

#[cfg(test)]
mod tests {
    //! Suspend validation names the field; names round-trip.
    use super::*;

    fn spec(names: &[&str]) -> SuspendSpec {
        SuspendSpec {
            waitpoints: names.iter().map(|n| WaitpointSpec::new(*n)).collect(),
            resume_when: ResumeWhen::All,
        }
    }

    #[test]
    fn bad_suspends_name_the_field() {
        let field = |s: &SuspendSpec| match s.validate() {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&spec(&[])), "waitpoints");
        assert_eq!(field(&spec(&["a", "a"])), "waitpoints.name");
        assert_eq!(field(&spec(&["has space"])), "waitpoints.name");
        let many: Vec<String> = (0..=WAITPOINTS_MAX).map(|i| format!("w{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(field(&spec(&many)), "waitpoints");
        let mut timed = spec(&["a"]);
        timed.waitpoints[0].timeout_ms = Some(0);
        assert_eq!(field(&timed), "waitpoints.timeout_ms");
        assert!(spec(&["approve", "audit.log"]).validate().is_ok());
    }

    #[test]
    fn names_round_trip_and_match_serde() {
        for o in OnTimeout::ALL {
            assert_eq!(OnTimeout::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        for w in [ResumeWhen::All, ResumeWhen::Any] {
            assert_eq!(ResumeWhen::parse(w.as_str()), Some(w));
            assert_eq!(serde_json::to_value(w).unwrap(), w.as_str());
        }
    }
}
