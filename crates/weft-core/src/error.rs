//! The one error type of Weft. Each variant maps to an error kind of the HTTP
//! contract; `retryable()` says whether the same call may succeed later.

use crate::ids::LeaseEpoch;

/// Everything that can go wrong in a store operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input; `field` names what to fix. Nothing was changed.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The offending field, as the client spelled it.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The payload or body exceeds the configured limit.
    #[error("payload is {bytes} bytes, over the limit of {max_bytes}")]
    PayloadTooLarge {
        /// The serialized size that was refused.
        bytes: u64,
        /// The limit in force.
        max_bytes: u64,
    },
    /// No such object.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object (`execution`, `flow`).
        what: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// The object exists but is in a state that forbids the operation.
    #[error("conflict: {message}")]
    Conflict {
        /// Why the operation does not apply.
        message: String,
    },
    /// A worker write whose lease is not the current one, or has expired.
    #[error("lease lost on {execution_id} (epoch {epoch:?}): {reason}")]
    LeaseLost {
        /// The execution written to.
        execution_id: String,
        /// The epoch the worker presented.
        epoch: LeaseEpoch,
        /// Why the lease does not hold.
        reason: &'static str,
    },
    /// A waitpoint token that is forged, altered, expired or used up.
    #[error("invalid token")]
    InvalidToken,
    /// The store cannot be reached or refused to serve; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupted data: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Weft's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An `InvalidArgument` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// This error as it concerns item `index` of the batch `list`: an
    /// `InvalidArgument` names `list[index].field`; other errors are kept.
    pub fn at_item(self, list: &str, index: usize) -> Self {
        match self {
            Self::InvalidArgument { field, message } => Self::InvalidArgument {
                field: format!("{list}[{index}].{field}"),
                message,
            },
            other => other,
        }
    }

    /// A `Conflict` with `message`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
        }
    }

    /// The error kind of the HTTP contract.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::LeaseLost { .. } => "lease_lost",
            Self::InvalidToken => "invalid_token",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether the same call may succeed if tried again later unchanged.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
