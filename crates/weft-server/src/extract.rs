//! Extractors that turn every kind of bad input into a JSON `400` naming what
//! is wrong, instead of axum's plain-text rejections.
//!
//! Definitions: [`JsonBody`] requires a JSON body; [`OptionalJsonBody`]
//! treats an empty body as `{}`. Both read the whole body first, up to the
//! body limit; an oversized body is read on (and thrown away) up to
//! [`BODY_DRAIN_BYTES_MAX`] so the client sees the `413`, not a reset.
//!
//! Invariants: a rejected request never reaches the store; every message of a
//! field-level error contains the field's path (`backoff.jitter`, `max`).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{header, request::Parts, HeaderMap};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use weft_core::ExecutionId;

use crate::app::AppState;
use crate::config::BODY_DRAIN_BYTES_MAX;
use crate::error::{ApiError, ApiResult};

/// A required JSON body of type `T`, checked field by field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// An optional JSON body: an empty body is `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, state.config.body_bytes_max).await?;
        check_json_content_type(&parts.headers)?;
        parse_json(&bytes).map(JsonBody)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, state.config.body_bytes_max).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        check_json_content_type(&parts.headers)?;
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// The `{id}` segment of a path, as the client wrote it. Parse it with
/// [`execution_id`] after the body has been read.
#[derive(Debug)]
pub struct RawId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RawId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(RawId(id)),
            Err(rejection) => Err(ApiError::invalid_field("id", rejection.body_text())),
        }
    }
}

/// An execution id from a path; a malformed one is `404`, since no execution
/// can have it.
pub fn execution_id(raw: &RawId) -> ApiResult<ExecutionId> {
    Ok(ExecutionId::parse(&raw.0)?)
}

/// Reads a whole body, refusing one over `limit` bytes with `413` after
/// reading on up to [`BODY_DRAIN_BYTES_MAX`] more.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> ApiResult<Bytes> {
    let too_large = |bytes: u64| {
        ApiError::too_large(format!(
            "request body is over the limit of {limit} bytes (at least {bytes} bytes sent)"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared {
        // Too big even to drain: answer at once and let the connection close.
        if declared > limit.saturating_add(BODY_DRAIN_BYTES_MAX) {
            return Err(too_large(declared));
        }
    }
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("body could not be read: {e}")))?;
        total = total.saturating_add(chunk.len() as u64);
        if total > limit {
            drain(
                &mut stream,
                &mut total,
                limit.saturating_add(BODY_DRAIN_BYTES_MAX),
            )
            .await;
            return Err(too_large(total));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// Reads and drops the rest of a body, up to `cap` bytes in all.
async fn drain(stream: &mut axum::body::BodyDataStream, total: &mut u64, cap: u64) {
    while *total <= cap {
        match stream.next().await {
            Some(Ok(chunk)) => *total = total.saturating_add(chunk.len() as u64),
            Some(Err(_)) | None => return,
        }
    }
}

/// Reads and drops a body nobody will parse (a refused request), so the
/// client sees the answer; bounded like [`read_body`].
pub(crate) async fn discard_body(body: Body, limit: u64) {
    let mut stream = body.into_data_stream();
    let mut total = 0;
    drain(
        &mut stream,
        &mut total,
        limit.saturating_add(BODY_DRAIN_BYTES_MAX),
    )
    .await;
}

/// Requires `Content-Type: application/json` (parameters such as `charset`
/// allowed, and `application/*+json`).
fn check_json_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::invalid(
            "missing Content-Type header: send the body as application/json",
        ));
    };
    let text = value.to_str().unwrap_or("");
    let mime = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Content-Type must be application/json, got {text:?}"
        )))
    }
}

/// Parses a body as `T`, naming the path of the field at fault, and refuses
/// anything after the JSON value.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            ApiError::invalid(format!("invalid request body: {inner}"))
        } else {
            ApiError::invalid(format!("invalid request body: field `{path}`: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
    Ok(value)
}

/// A query string as name/value pairs, checked against the names a route
/// knows: an unknown or repeated name is `400`.
#[derive(Debug, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parses `raw`, allowing only `known` names, each at most once.
    pub fn parse(raw: Option<&str>, known: &[&str]) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = match raw {
            None => Vec::new(),
            Some(raw) => serde_urlencoded::from_str(raw)
                .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?,
        };
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{name}`; known: {}",
                    known.join(", ")
                )));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::invalid_field(name, "given more than once"));
            }
        }
        Ok(Self { pairs })
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `min..=max`, if given.
    pub fn int(&self, name: &str, min: i64, max: i64) -> ApiResult<Option<i64>> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value: i64 = text
            .parse()
            .map_err(|_| ApiError::invalid_field(name, format!("{text:?} is not an integer")))?;
        if !(min..=max).contains(&value) {
            return Err(ApiError::invalid_field(
                name,
                format!("must be {min}..={max}, got {value}"),
            ));
        }
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    //! Goal: parse errors name the field; query strings refuse what a route
    //! does not know.
    use super::*;
    use weft_api::{ClaimRequest, FailRequest, SubmitRequest};

    fn message<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        parse_json::<T>(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn body_errors_name_the_field() {
        let m = message::<SubmitRequest>(r#"{"kind":"k","priority":"high"}"#);
        assert!(m.contains("priority"), "{m}");
        let m = message::<SubmitRequest>(r#"{"kind":"k","dealy_ms":5}"#);
        assert!(m.contains("dealy_ms"), "{m}");
        let m = message::<SubmitRequest>(r#"{"kind":"k","backoff":{"jitter":"x"}}"#);
        assert!(m.contains("backoff.jitter"), "{m}");
        let m = message::<SubmitRequest>(r#"{"kind":"k","priority":1e400}"#);
        assert!(m.contains("priority"), "{m}");
        let m = message::<ClaimRequest>(r#"{"worker_id":"w","lanes":["a"],"max":-1}"#);
        assert!(m.contains("max"), "{m}");
        let m = message::<FailRequest>(
            r#"{"lease_id":"l","epoch":1,"error":{"message":"m","retryable":"yes"}}"#,
        );
        assert!(m.contains("error.retryable"), "{m}");
        let m = message::<SubmitRequest>(r#"{"payload":1}"#);
        assert!(m.contains("kind"), "{m}");
        let m = message::<SubmitRequest>(r#"{"kind":"k"} trailing"#);
        assert!(m.contains("trailing"), "{m}");
    }

    #[test]
    fn query_strings_are_checked() {
        let q = QueryParams::parse(Some("limit=5&state=waiting"), &["limit", "state"]).unwrap();
        assert_eq!(q.int("limit", 1, 10).unwrap(), Some(5));
        assert_eq!(q.get("state"), Some("waiting"));
        assert!(q.int("limit", 6, 10).unwrap_err().message.contains("limit"));
        let bad = QueryParams::parse(Some("limt=5"), &["limit"]).unwrap_err();
        assert!(bad.message.contains("limt"), "{}", bad.message);
        let twice = QueryParams::parse(Some("limit=1&limit=2"), &["limit"]).unwrap_err();
        assert!(twice.message.contains("limit"), "{}", twice.message);
        let q = QueryParams::parse(Some("limit=abc"), &["limit"]).unwrap();
        assert!(q.int("limit", 1, 10).unwrap_err().message.contains("limit"));
    }
}
