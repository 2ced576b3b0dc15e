//! [`WorkerError`]: what a handler returns when its attempt fails.

use std::fmt;

use weft_api::FailError;
use weft_core::ERROR_MESSAGE_LEN_MAX;

/// A failed attempt: a message, an optional machine-readable kind, and
/// whether Weft may try again (it may, by default, while attempts are left).
///
/// Any `std::error::Error` converts into a retryable `WorkerError`, so `?`
/// works in handlers. Like `anyhow::Error`, `WorkerError` does not itself
/// implement `std::error::Error`; that is what makes the blanket conversion
/// possible.
///
/// ```
/// use weft_sdk::WorkerError;
///
/// let retry = WorkerError::new("upstream answered 503");
/// assert!(retry.is_retryable());
/// let stop = WorkerError::permanent("no such customer").with_kind("bad_input");
/// assert!(!stop.is_retryable());
/// assert_eq!(stop.kind(), Some("bad_input"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerError {
    message: String,
    kind: Option<String>,
    retryable: bool,
}

impl WorkerError {
    /// A retryable failure: Weft tries again per the execution's backoff
    /// while attempts are left.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: None,
            retryable: true,
        }
    }

    /// A failure no retry can fix: the execution fails at once, whatever
    /// attempts are left.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(message).non_retryable()
    }

    /// What a handler may return after [`crate::TaskContext::suspend`]
    /// suspended its execution when its result type has no value to give:
    /// the worker reports nothing for a suspended attempt, so this is never
    /// recorded (returned without a suspend, it fails the attempt).
    pub fn suspended() -> Self {
        Self::new("the handler suspended its execution").with_kind("suspended")
    }

    /// The same failure, made non-retryable.
    #[must_use]
    pub fn non_retryable(mut self) -> Self {
        self.retryable = false;
        self
    }

    /// The same failure with a machine-readable kind (`timeout`, `bad_input`),
    /// recorded as the execution's `error.kind`.
    #[must_use]
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// The human-readable text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The machine-readable kind, if one was given.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// Whether Weft may try again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The `error` of a fail request; the message is cut to what the store
    /// keeps, on a character boundary.
    pub(crate) fn to_fail_error(&self) -> FailError {
        let mut message = self.message.clone();
        if message.len() > ERROR_MESSAGE_LEN_MAX {
            let mut end = ERROR_MESSAGE_LEN_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        FailError {
            message,
            kind: self.kind.clone(),
            retryable: Some(self.retryable),
        }
    }
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Some(kind) => write!(f, "{kind}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerError")
            .field("message", &self.message)
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .finish()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for WorkerError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(message)
    }
}

#[cfg(test)]
mod tests {
    //! Conversions keep the message and the retry flag the handler meant.
    use super::*;

    #[test]
    fn std_errors_convert_retryable_with_their_text() {
        let parse: Result<u32, _> = "x".parse::<u32>();
        let err = WorkerError::from(parse.unwrap_err());
        assert!(err.is_retryable());
        assert!(err.message().contains("invalid digit"), "{err}");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let err = WorkerError::permanent("é".repeat(ERROR_MESSAGE_LEN_MAX));
        let fail = err.to_fail_error();
        assert!(fail.message.len() <= ERROR_MESSAGE_LEN_MAX);
        assert_eq!(fail.retryable, Some(false));
    }
}
