//! Suspend and signal on the wire: `POST /v1/executions/{id}/suspend`,
//! `POST /v1/signals`, `POST /v1/executions/{id}/signals`, the suspension as
//! an execution shows it, and a fresh random signing key for servers and
//! in-process transports that mint tokens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_core::token::{SigningKey, WaitpointToken, SECRET_BYTES_MIN};
use weft_core::waitpoint::{OnTimeout, ResumeWhen, SuspendSpec, Suspension, WaitpointSpec};
use weft_core::{Error, Result};

use crate::{time, ExecutionView};

/// One waitpoint of a suspend request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitpointRequest {
    /// Unique within the suspend; letters, digits and `_ . : / -`.
    pub name: String,
    /// How long to wait; no timeout when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// What the timeout does; `fail` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
}

impl From<&WaitpointSpec> for WaitpointRequest {
    fn from(spec: &WaitpointSpec) -> Self {
        Self {
            name: spec.name.clone(),
            timeout_ms: spec.timeout_ms,
            on_timeout: Some(spec.on_timeout),
        }
    }
}

/// `POST /v1/executions/{id}/suspend`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// The task's `lease.id`.
    pub lease_id: String,
    /// The task's `lease.epoch`.
    pub epoch: u64,
    /// What to wait on.
    pub waitpoints: Vec<WaitpointRequest>,
    /// `all` (the default) or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_when: Option<ResumeWhen>,
}

impl SuspendRequest {
    /// The request that suspends under this lease as `spec` says.
    pub fn new(lease_id: &str, epoch: u64, spec: &SuspendSpec) -> Self {
        Self {
            lease_id: lease_id.to_owned(),
            epoch,
            waitpoints: spec.waitpoints.iter().map(WaitpointRequest::from).collect(),
            resume_when: Some(spec.resume_when),
        }
    }

    /// The store's suspend spec, checked field by field.
    ///
    /// # Errors
    /// `invalid_argument` naming the field at fault.
    pub fn to_spec(&self) -> Result<SuspendSpec> {
        let spec = SuspendSpec {
            waitpoints: self
                .waitpoints
                .iter()
                .map(|w| WaitpointSpec {
                    name: w.name.clone(),
                    timeout_ms: w.timeout_ms,
                    on_timeout: w.on_timeout.unwrap_or_default(),
                })
                .collect(),
            resume_when: self.resume_when.unwrap_or_default(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// A waitpoint's token as a suspend answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitpointTokenView {
    /// The waitpoint.
    pub name: String,
    /// The credential that delivers its signal through `POST /v1/signals`.
    pub token: String,
    /// RFC 3339: when the token stops verifying.
    pub expires_at: String,
}

impl From<&WaitpointToken> for WaitpointTokenView {
    fn from(t: &WaitpointToken) -> Self {
        Self {
            name: t.name.clone(),
            token: t.token.clone(),
            expires_at: time::format_ms(t.expires_at_ms),
        }
    }
}

/// The answer to a suspend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuspendResponse {
    /// `suspended`, or still `active` when buffered signals satisfied the
    /// suspend at once.
    pub execution: ExecutionView,
    /// One token per waitpoint, in the order of the request.
    pub waitpoints: Vec<WaitpointTokenView>,
    /// Only when the execution stayed `active`: the buffered signals that
    /// satisfied it, by waitpoint, for the handler to continue with (an
    /// addition to the contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<BTreeMap<String, Value>>,
}

/// `POST /v1/signals`: the token is the credential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// A waitpoint token a suspend returned.
    pub token: String,
    /// What the signal carries; `null` when absent.
    #[serde(default)]
    pub payload: Value,
}

/// `POST /v1/executions/{id}/signals`: an operator signals a waitpoint by
/// name (buffered when the execution has not suspended on it yet).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionSignalRequest {
    /// The waitpoint's name.
    pub waitpoint: String,
    /// What the signal carries; `null` when absent.
    #[serde(default)]
    pub payload: Value,
}

/// The answer to either signal route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalResponse {
    /// The execution after the signal: `waiting` when it resumed.
    pub execution: ExecutionView,
}

/// One waitpoint of a suspension, as the execution shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitpointView {
    /// Its name.
    pub name: String,
    /// Whether its signal has arrived.
    pub signalled: bool,
    /// RFC 3339: when its timeout fires, if it has one.
    pub timeout_at: Option<String>,
    /// What the timeout does.
    pub on_timeout: OnTimeout,
    /// RFC 3339: when its token stops verifying.
    pub expires_at: String,
}

/// The suspension in force, as the execution shows it while `suspended`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspensionView {
    /// Which suspend of the execution this is, from 1.
    pub seq: u32,
    /// `all` or `any`.
    pub resume_when: ResumeWhen,
    /// RFC 3339.
    pub suspended_at: String,
    /// The waitpoints, in the order the worker declared them.
    pub waitpoints: Vec<WaitpointView>,
}

impl From<&Suspension> for SuspensionView {
    fn from(s: &Suspension) -> Self {
        Self {
            seq: s.seq,
            resume_when: s.resume_when,
            suspended_at: time::format_ms(s.suspended_at_ms),
            waitpoints: s
                .waitpoints
                .iter()
                .map(|w| WaitpointView {
                    name: w.name.clone(),
                    signalled: w.signalled,
                    timeout_at: w.timeout_at_ms.map(time::format_ms),
                    on_timeout: w.on_timeout,
                    expires_at: time::format_ms(w.expires_at_ms),
                })
                .collect(),
        }
    }
}

/// A new signing key with a random secret and a random id (`k` and 12 hex
/// digits), made at `now_ms`.
///
/// # Errors
/// `internal` when the system has no randomness to give.
pub fn random_signing_key(now_ms: i64) -> Result<SigningKey> {
    let mut secret = [0u8; SECRET_BYTES_MIN];
    let mut id = [0u8; 6];
    getrandom::fill(&mut secret)
        .and_then(|()| getrandom::fill(&mut id))
        .map_err(|e| Error::Internal(format!("no randomness for a signing key: {e}")))?;
    SigningKey::from_random(&id, &secret, now_ms)
}

#[cfg(test)]
mod tests {
    //! Suspend bodies refuse unknown names and fields; random keys differ.
    use super::*;

    #[test]
    fn suspend_requests_parse_strictly() {
        let ok: SuspendRequest = serde_json::from_str(
            r#"{"lease_id":"l","epoch":1,"resume_when":"any",
                "waitpoints":[{"name":"a","timeout_ms":5,"on_timeout":"resume"},{"name":"b"}]}"#,
        )
        .unwrap();
        let spec = ok.to_spec().unwrap();
        assert_eq!(spec.resume_when, ResumeWhen::Any);
        assert_eq!(spec.waitpoints[0].on_timeout, OnTimeout::Resume);
        assert_eq!(spec.waitpoints[1].on_timeout, OnTimeout::Fail);
        for bad in [
            r#"{"lease_id":"l","epoch":1,"waitpoints":[{"name":"a"}],"resume_when":"most"}"#,
            r#"{"lease_id":"l","epoch":1,"waitpoints":[{"name":"a","on_timeout":"retry"}]}"#,
            r#"{"lease_id":"l","epoch":1,"waitpoints":[{"name":"a","x":1}]}"#,
        ] {
            assert!(
                serde_json::from_str::<SuspendRequest>(bad).is_err(),
                "{bad}"
            );
        }
        let empty: SuspendRequest =
            serde_json::from_str(r#"{"lease_id":"l","epoch":1,"waitpoints":[]}"#).unwrap();
        assert!(empty.to_spec().is_err());
    }

    #[test]
    fn random_keys_differ() {
        let (a, b) = (
            random_signing_key(0).unwrap(),
            random_signing_key(0).unwrap(),
        );
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 13);
    }
}
