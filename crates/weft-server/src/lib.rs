//! Weft's HTTP API server: the routes of `shared/http-api.md` for
//! executions, workers, flows, lanes, health and metrics (plus the additions
//! listed below), bearer-token auth, request logging, and a small dashboard,
//! over any [`weft_core::Store`].
//!
//! ```
//! use std::sync::Arc;
//! use weft_core::Store;
//! use weft_server::{Server, ServerConfig};
//! use weft_sqlite::{SqliteConfig, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::memory())?);
//! let server = Server::new(store, None, ServerConfig::new(vec![], 1 << 20)?)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.serve(listener, async move {
//!     let _ = stopped.await;
//! }));
//!
//! let health: serde_json::Value = reqwest::get(format!("http://{addr}/healthz"))
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(health["status"], "ok");
//! let _ = stop.send(());
//! serving.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! ## Definitions
//!
//! - **Bad input** is anything a client can get wrong: malformed JSON, a wrong
//!   type, an unknown field, a number out of range, a missing
//!   `Content-Type`, an unknown or repeated query parameter, an oversized
//!   body. Each is answered `400 invalid_argument` (or `413
//!   payload_too_large`) with a message naming the field.
//! - **Long-poll**: `POST /v1/claims` with `wait_ms > 0` and
//!   `GET /v1/executions/{id}/wait` (and `GET /v1/flows/{id}/wait`, on
//!   `FlowEnded`) sleep on the store's events
//!   ([`weft_core::Store::events`]) rather than re-reading the store in a
//!   loop; see the `waiting` module.
//!
//! - **Decisions where the contract is silent**: a known path with the wrong
//!   method is `404 not_found` like an unknown path (the contract has no
//!   405 kind); an unknown or repeated query parameter is `400` like an
//!   unknown body field; `cancel` and `replay` accept an empty body as `{}`;
//!   the body limit is the payload limit plus
//!   [`BODY_OVERHEAD_BYTES`] for the other fields; `wait_ms` and
//!   `timeout_ms` over 60 000 are `400`, not clamped.
//! - **Additions to the contract** (new routes and values only; nothing of
//!   the contract changes):
//!   - `POST /v1/executions/{id}/release` with `{"lease_id", "epoch"}`
//!     ([`weft_api::ReleaseRequest`]): a worker that stops hands its task
//!     back unfinished. `200` with the execution, `waiting` again at once;
//!     the attempt ends `released`, and nothing counts against
//!     `max_attempts` or `max_reclaims`. Fenced like `complete`: a stale,
//!     forged or expired lease is `409 lease_lost`; the same release again
//!     answers `200` with the execution as it is, until the execution is
//!     claimed again (then `409 lease_lost`); an unknown id is `404`.
//!   - The attempt state `released` in `GET /v1/executions/{id}/attempts`.
//!   - Suspend answers also carry `signals` (the buffered signals that
//!     satisfied it) while the execution stays `active`; execution objects
//!     carry `suspension` (`{"seq", "resume_when", "suspended_at",
//!     "waitpoints": [{"name", "signalled", "timeout_at", "on_timeout",
//!     "expires_at"}]}`) while `suspended`, `null` otherwise; tasks carry
//!     `signals` always (`{}` before any resume).
//!   - Flow objects also carry `updated_at`, `on_failure` and
//!     `idempotency_key`; `POST /v1/flows/{id}/nodes` takes an optional
//!     `lane`, the lane of new nodes that name none (a flow keeps no lane).
//! - **Flow decisions where the contract is silent**: `edges` may be left
//!   out (no edges); a join's `mode` is required; `POST /v1/flows/{id}/cancel`
//!   takes an empty body or `{}`, and cancelling a cancelled flow is `200`
//!   again, one that ended otherwise `409 conflict`; a store without flows
//!   answers every flow route `503 unavailable` once the input has been
//!   checked. The graph of added nodes is checked by the store against the
//!   flow (a `400` naming the field, as for a create).
//!
//! ## Invariants
//!
//! - Bad input never reaches the store and never yields a 5xx or a panic.
//! - Every error body is `{"error": {"kind", "message"}}` with the status the
//!   contract gives the kind, unknown routes included (`404`).
//! - With API tokens configured, only `GET /healthz` and `POST /v1/signals`
//!   answer without `Authorization: Bearer <token>`; tokens are compared in
//!   constant time.
//! - A body is read in full (up to the limit plus a bounded drain) before any
//!   answer, so a client still sending sees the status, not a reset.
//! - A claim's tasks reach its client or are released: a client that goes
//!   away while its claim is in the store (a long poll woken by work just as
//!   its worker stops) leaves the claim to finish in its own task and hand
//!   back what it took. Only an answer already on the wire when the
//!   connection closes is lost; its lease lapses.
//! - Waitpoint tokens are signed and verified with [`Keys`]: an ephemeral
//!   key unless [`Server::with_keys`] names a keyring (a file is re-read
//!   when it changes; see the [`keys`] module). `POST /v1/signals` verifies
//!   its token before any store call; a genuine token whose execution has
//!   ended or whose waitpoint was already signalled is used up, `403
//!   invalid_token` like a forged one.
//!
//! ## Key operations
//!
//! - [`Server::new`] validates the [`ServerConfig`]; [`Server::router`]
//!   builds the router; [`Server::serve`] answers until its shutdown future
//!   resolves, then wakes every long-poll, stops accepting and lets in-flight
//!   requests finish.

#![warn(missing_docs)]

mod app;
mod auth;
mod config;
mod dashboard;
mod error;
mod extract;
pub mod keys;
mod metrics;
mod routes;
mod waiting;

pub use crate::{
    app::{router, EngineMetricsSource, Server},
    config::{
        ServerConfig, API_TOKENS_MAX, API_TOKEN_LEN_MAX, BODY_DRAIN_BYTES_MAX, BODY_OVERHEAD_BYTES,
        DASHBOARD_REFRESH_SECS_DEFAULT, EVENT_RECHECK_INTERVAL_DEFAULT, HEALTH_TIMEOUT_DEFAULT,
        PAYLOAD_BYTES_MAX_MAX, PAYLOAD_BYTES_MAX_MIN, POLL_INTERVAL_DEFAULT,
    },
    error::{ApiError, ApiResult},
    keys::Keys,
    routes::executions::LIST_LIMIT_DEFAULT,
};
