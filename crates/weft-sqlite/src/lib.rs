//! Weft's embedded SQLite store, the default backend: one file (or memory),
//! every operation one SQLite transaction on one partition.
//!
//! Definitions: `SqliteStore` is a cheap-to-clone handle on one connection.
//! Each operation runs on tokio's blocking pool, takes the connection, opens
//! a transaction (`BEGIN IMMEDIATE` for writes), calls the pure state machine
//! of `weft_core::machine`, writes its `Transition`, and commits. Time is the
//! configured `Clock`, never the caller's.
//!
//! Invariants: the rows of an execution (body, index columns, attempts,
//! timers, idempotency key) change only together, in one transaction, as the
//! state machine's transition says; `partition_audit` checks they agree. A
//! flow's row changes in the same transaction as any of its members, so its
//! summary is exact (see `flow_ops` for flows, their members' retention and
//! the audit of their counts).
//! Several processes may open the same file: SQLite's write lock serialises
//! their transactions, and `busy_timeout` bounds the wait.
//!
//! ```
//! use weft_core::{ClaimParams, CompleteParams, LeaseRef, State, Store, SubmitParams};
//! use weft_sqlite::{SqliteConfig, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> weft_core::Result<()> {
//! let store = SqliteStore::open(SqliteConfig::memory())?;
//! let params = SubmitParams::new("email.send", serde_json::json!({"to": "a@example.com"}));
//! let submitted = store.execution_submit(&params).await?;
//! let partition = submitted.execution.id.partition();
//!
//! let claim = ClaimParams {
//!     worker_id: "worker-1".into(),
//!     lanes: vec!["default".into()],
//!     capabilities: vec![],
//!     max: 10,
//!     lease_ms: 30_000,
//! };
//! let task = store.execution_claim(partition, &claim).await?.remove(0);
//! let done = store
//!     .execution_complete(&CompleteParams {
//!         execution_id: task.execution_id,
//!         lease: LeaseRef { lease_id: task.lease.id, epoch: task.lease.epoch },
//!         result: serde_json::json!("sent"),
//!     })
//!     .await?;
//! assert_eq!(done.state, State::Completed);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod attempts;
mod audit;
mod config;
mod db;
mod engine;
mod executions;
mod flow_ops;
mod flows;
mod ops;
mod outbox;
mod schema;
mod store;
mod tick;
mod timers;

#[cfg(test)]
mod tests;

pub use crate::{
    config::{SqliteConfig, BUSY_TIMEOUT_DEFAULT},
    schema::SCHEMA_VERSION,
    store::SqliteStore,
};
