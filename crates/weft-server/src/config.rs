//! How a server is configured, validated once at construction.
//!
//! Definitions: the *payload limit* bounds the serialized size of a submit's
//! `payload` and a completion's `result`; the *body limit* bounds a whole
//! request body and defaults to the payload limit plus room for the other
//! fields of a submit (tags, requirements, keys), so a payload at the limit
//! always fits in its body.

use std::time::Duration;

use weft_core::{Error, Result, PAYLOAD_BYTES_MAX_DEFAULT};

/// Room in a body for everything beside the payload: 64 tags of up to
/// 1152 bytes each are already 72 KiB, so leave a comfortable 256 KiB.
pub const BODY_OVERHEAD_BYTES: u64 = 256 * 1024;
/// The smallest payload limit accepted (1 KiB); smaller would refuse
/// ordinary requests.
pub const PAYLOAD_BYTES_MAX_MIN: u64 = 1024;
/// The largest payload limit accepted (64 MiB); bodies are held in memory.
pub const PAYLOAD_BYTES_MAX_MAX: u64 = 64 << 20;
/// How much of an oversized body the server still reads (and throws away)
/// before answering 413, so that a client that is still sending sees the
/// answer rather than a reset connection. Past this the connection closes.
pub const BODY_DRAIN_BYTES_MAX: u64 = 32 << 20;
/// How often a long-poll re-reads the store when the store sends no events.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(40);
/// How often a long-poll re-reads the store even when the store sends events,
/// because events may be lost (another process wrote the same SQLite file,
/// a broadcast lagged).
pub const EVENT_RECHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// How long `GET /healthz` waits for the store before answering 503.
pub const HEALTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Seconds between refreshes of the dashboard page.
pub const DASHBOARD_REFRESH_SECS_DEFAULT: u32 = 5;
/// Most API tokens a server accepts.
pub const API_TOKENS_MAX: usize = 64;
/// Longest API token, in bytes.
pub const API_TOKEN_LEN_MAX: usize = 512;

/// Everything the server needs besides the store. Build it with
/// [`ServerConfig::new`] (or `default()` and then [`ServerConfig::validate`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Bearer tokens; empty turns auth off. Each is 1..=512 visible ASCII
    /// characters.
    pub api_tokens: Vec<String>,
    /// Largest serialized `payload` or `result`, in bytes.
    pub payload_bytes_max: u64,
    /// Largest request body, in bytes; at least `payload_bytes_max`.
    pub body_bytes_max: u64,
    /// Re-read interval of long-polls when the store sends no events.
    pub poll_interval: Duration,
    /// Re-read interval of long-polls when the store sends events.
    pub event_recheck_interval: Duration,
    /// How long the health check waits for the store.
    pub health_timeout: Duration,
    /// Seconds between dashboard refreshes; 0 turns refreshing off.
    pub dashboard_refresh_secs: u32,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("ServerConfig")
            .field(
                "api_tokens",
                &format_args!("[{} hidden]", self.api_tokens.len()),
            )
            .field("payload_bytes_max", &self.payload_bytes_max)
            .field("body_bytes_max", &self.body_bytes_max)
            .field("poll_interval", &self.poll_interval)
            .field("event_recheck_interval", &self.event_recheck_interval)
            .field("health_timeout", &self.health_timeout)
            .field("dashboard_refresh_secs", &self.dashboard_refresh_secs)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_tokens: Vec::new(),
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            body_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT + BODY_OVERHEAD_BYTES,
            poll_interval: POLL_INTERVAL_DEFAULT,
            event_recheck_interval: EVENT_RECHECK_INTERVAL_DEFAULT,
            health_timeout: HEALTH_TIMEOUT_DEFAULT,
            dashboard_refresh_secs: DASHBOARD_REFRESH_SECS_DEFAULT,
        }
    }
}

impl ServerConfig {
    /// A validated config with `api_tokens` and `payload_bytes_max`, the body
    /// limit derived from the payload limit, and every other default.
    ///
    /// # Errors
    /// `invalid_argument` naming the field, as [`ServerConfig::validate`].
    pub fn new(api_tokens: Vec<String>, payload_bytes_max: u64) -> Result<Self> {
        let config = Self {
            api_tokens,
            payload_bytes_max,
            body_bytes_max: payload_bytes_max.saturating_add(BODY_OVERHEAD_BYTES),
            ..Self::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Whether requests must carry a bearer token.
    #[must_use]
    pub fn auth_enabled(&self) -> bool {
        !self.api_tokens.is_empty()
    }

    /// Checks every field; says which one is wrong.
    ///
    /// # Errors
    /// `invalid_argument` naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.api_tokens.len() > API_TOKENS_MAX {
            return Err(Error::invalid(
                "api_tokens",
                format!("at most {API_TOKENS_MAX} tokens"),
            ));
        }
        for token in &self.api_tokens {
            let visible = token.bytes().all(|b| b.is_ascii_graphic());
            if token.is_empty() || token.len() > API_TOKEN_LEN_MAX || !visible {
                return Err(Error::invalid(
                    "api_tokens",
                    format!("each token must be 1..={API_TOKEN_LEN_MAX} visible ASCII characters"),
                ));
            }
        }
        if !(PAYLOAD_BYTES_MAX_MIN..=PAYLOAD_BYTES_MAX_MAX).contains(&self.payload_bytes_max) {
            return Err(Error::invalid(
                "payload_bytes_max",
                format!(
                    "must be {PAYLOAD_BYTES_MAX_MIN}..={PAYLOAD_BYTES_MAX_MAX}, got {}",
                    self.payload_bytes_max
                ),
            ));
        }
        let body_max = PAYLOAD_BYTES_MAX_MAX + BODY_OVERHEAD_BYTES;
        if !(self.payload_bytes_max..=body_max).contains(&self.body_bytes_max) {
            return Err(Error::invalid(
                "body_bytes_max",
                format!("must be payload_bytes_max..={body_max}"),
            ));
        }
        check_interval("poll_interval", self.poll_interval)?;
        check_interval("event_recheck_interval", self.event_recheck_interval)?;
        check_interval("health_timeout", self.health_timeout)?;
        Ok(())
    }
}

fn check_interval(field: &str, value: Duration) -> Result<()> {
    if value < Duration::from_millis(1) || value > Duration::from_secs(60) {
        return Err(Error::invalid(field, "must be 1 ms ..= 60 s"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Goal: bad configs are refused with the field named; good ones pass.
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
        let config = ServerConfig::new(vec!["t1".into()], 4096).unwrap();
        assert!(config.auth_enabled());
        assert_eq!(config.body_bytes_max, 4096 + BODY_OVERHEAD_BYTES);
        assert!(!format!("{config:?}").contains("t1"));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(ServerConfig, &str)> = vec![
            (
                ServerConfig {
                    api_tokens: vec![String::new()],
                    ..ServerConfig::default()
                },
                "api_tokens",
            ),
            (
                ServerConfig {
                    api_tokens: vec!["has space".into()],
                    ..ServerConfig::default()
                },
                "api_tokens",
            ),
            (
                ServerConfig {
                    payload_bytes_max: 10,
                    ..ServerConfig::default()
                },
                "payload_bytes_max",
            ),
            (
                ServerConfig {
                    body_bytes_max: 10,
                    ..ServerConfig::default()
                },
                "body_bytes_max",
            ),
            (
                ServerConfig {
                    poll_interval: Duration::ZERO,
                    ..ServerConfig::default()
                },
                "poll_interval",
            ),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
