//! Every non-2xx answer: `{"error": {"kind", "message"}}` with the status the
//! contract gives its kind.
//!
//! Invariant: the status is always `status_of_kind(kind)`, except for the
//! 401 of a missing or wrong API token, which the contract lists as
//! `unauthorized` (also 401).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use weft_api::{status_of_kind, ErrorBody, ErrorDetail};

/// An error answer: a contract kind, its status and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// One of the contract's kinds.
    pub kind: &'static str,
    /// What went wrong, naming the field where one is at fault.
    pub message: String,
}

impl ApiError {
    /// `400 invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: "invalid_argument",
            message: message.into(),
        }
    }

    /// `400 invalid_argument` naming `field`.
    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::invalid(format!("invalid {field}: {message}"))
    }

    /// `401 unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            kind: "unauthorized",
            message: message.into(),
        }
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: "not_found",
            message: message.into(),
        }
    }

    /// `413 payload_too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            kind: "payload_too_large",
            message: message.into(),
        }
    }

    /// `503 unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: "unavailable",
            message: message.into(),
        }
    }

    /// The HTTP status of this error's kind.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(status_of_kind(self.kind)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<weft_core::Error> for ApiError {
    fn from(error: weft_core::Error) -> Self {
        if matches!(error, weft_core::Error::Internal(_)) {
            tracing::error!(%error, "internal error");
        }
        Self {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_owned(),
                message: self.message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
