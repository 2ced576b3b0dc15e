//! Goal: every route of the contract answers as `shared/http-api.md` says,
//! over real HTTP, and bad input never changes the store or yields a 5xx.
//!
//! Method: each test starts a real server on an ephemeral port over a fresh
//! in-memory SQLite store and drives it with an HTTP client; timing checks
//! use generous bounds well under the waits they measure.

mod auth;
mod bad_input;
mod flows;
mod long_poll;
mod routes;
mod signals;
mod support;
