//! Bearer-token auth: when tokens are configured, every route except
//! `GET /healthz` and `POST /v1/signals` needs `Authorization: Bearer <token>`.
//!
//! Invariant: a presented token is compared with every configured token in
//! time that depends only on the lengths involved, never on where the first
//! differing byte is, so response timing does not reveal a token's prefix.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::discard_body;

/// Whether a route is open without a token, as the contract says.
fn is_open(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    (read && path == "/healthz") || (method == Method::POST && path == "/v1/signals")
}

/// The token of an `Authorization: Bearer <token>` header, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares two byte strings without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Whether `presented` is one of `tokens`; every token is compared.
pub(crate) fn token_matches(tokens: &[String], presented: &str) -> bool {
    tokens.iter().fold(false, |found, token| {
        found | constant_time_eq(token.as_bytes(), presented.as_bytes())
    })
}

/// The auth middleware: answers `401 unauthorized` (after reading the body)
/// when a token is needed and missing or wrong.
pub(crate) async fn require_token(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let tokens = &app.config.api_tokens;
    if tokens.is_empty() || is_open(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let message = match bearer(req.headers()) {
        Some(token) if token_matches(tokens, token) => return next.run(req).await,
        Some(_) => "wrong API token",
        None => "this route needs an `Authorization: Bearer <token>` header",
    };
    let (_, body) = req.into_parts();
    discard_body(body, app.config.body_bytes_max).await;
    ApiError::unauthorized(message).into_response()
}

#[cfg(test)]
mod tests {
    //! Goal: the comparison is exact and the open routes are the contract's.
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let tokens = vec!["alpha".to_owned(), "beta-token".to_owned()];
        assert!(token_matches(&tokens, "alpha"));
        assert!(token_matches(&tokens, "beta-token"));
        for wrong in ["", "alph", "alphaa", "beta", "ALPHA", "beta-tokeN"] {
            assert!(!token_matches(&tokens, wrong), "{wrong}");
        }
        assert!(!token_matches(&[], "alpha"));
    }

    #[test]
    fn bearer_headers_parse() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn only_health_and_signals_are_open() {
        assert!(is_open(&Method::GET, "/healthz"));
        assert!(is_open(&Method::POST, "/v1/signals"));
        assert!(!is_open(&Method::POST, "/healthz"));
        assert!(!is_open(&Method::GET, "/metrics"));
        assert!(!is_open(&Method::GET, "/"));
    }
}
