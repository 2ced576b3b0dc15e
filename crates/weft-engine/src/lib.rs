//! Weft's backend-agnostic engine: partition ownership and the timer drain,
//! over any [`weft_core::Store`].
//!
//! ```
//! use std::sync::Arc;
//! use weft_core::{Store, SubmitParams};
//! use weft_engine::{Engine, EngineConfig};
//! use weft_sqlite::{SqliteConfig, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::memory()).unwrap());
//! let engine = Engine::start(store.clone(), EngineConfig::default());
//!
//! let mut params = SubmitParams::new("email.send", serde_json::json!({}));
//! params.delay_ms = Some(20);
//! let id = store.execution_submit(&params).await.unwrap().execution.id;
//! // The engine turns the delayed execution into a waiting one at its run_at.
//! for _ in 0..100 {
//!     if store.execution_get(&id).await.unwrap().state == weft_core::State::Waiting {
//!         break;
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! assert_eq!(store.execution_get(&id).await.unwrap().state, weft_core::State::Waiting);
//! engine.shutdown().await;
//! # }
//! ```
//!
//! # Design
//!
//! ## Definitions
//!
//! - **Instance**: one running engine ([`Engine::start`]), named by
//!   [`EngineConfig::instance_id`]. Several may share a store.
//! - **Ownership**: the store keeps a lease per instance and per partition.
//!   The ownership loop calls `engine_rebalance` at start and every third of
//!   [`EngineConfig::ownership_lease_ms`]; the store renews the caller's
//!   leases and moves it towards its fair share, `ceil(P / live instances)`,
//!   taking partitions whose lease lapsed.
//! - **Timer drain**: for each owned partition, repeat `partition_tick` while
//!   it returns a full batch, then sleep until the returned `next_due_ms`
//!   (measured against the same tick's `now_ms`, i.e. the store's clock).
//! - **Due hint**: a best-effort message from the store that a partition has
//!   a new timer; it wakes the drain early. Hints may be lost.
//!
//! ## Invariants
//!
//! - **Ownership is an efficiency mechanism, never a correctness one.** Every
//!   timer transition is one atomic store operation that re-validates the
//!   execution's current state and is idempotent, and a stale timer is
//!   dropped, not applied. So two instances briefly ticking the same
//!   partition (during a takeover, or when one is cut off from the store)
//!   waste a little work and change nothing else.
//! - An instance sweeps only partitions it was granted, and stops sweeping
//!   them once the grant may have lapsed (one lease after the request that
//!   obtained it) without a renewal.
//! - No fixed poll floor: a partition is ticked at its earliest due time.
//!   With no known due time it is polled every
//!   [`EngineConfig::idle_poll_max`], the fallback for lost hints, so an idle
//!   engine costs about `owned partitions / idle_poll_max` ticks plus three
//!   rebalances per lease.
//! - Everything is bounded: a tick applies at most
//!   [`EngineConfig::tick_batch_max`] timers, a pass at most
//!   [`EngineConfig::drain_ticks_max`] ticks, a wake at most 32 passes, and
//!   every store call [`EngineConfig::store_call_timeout`].
//!
//! ## Key operations
//!
//! - [`Engine::start`]: validate the config, rebalance at once, tick every
//!   granted partition at once.
//! - Takeover: when an instance dies, its membership lapses after one lease;
//!   the survivors' next renewal (at most a third of a lease later) takes its
//!   partitions, and each newly owned partition is ticked at once, applying
//!   whatever fell due meanwhile.
//! - [`EngineHandle::shutdown`]: stop the loops, let the pass in progress
//!   finish, then rebalance with `leaving: true` so every partition is free
//!   at once. Dropping the handle instead behaves like a crash.
//! - Errors: a failed pass is retried with jittered exponential back-off for
//!   that partition alone; a failed rebalance keeps the last set until it may
//!   have lapsed, then sweeps nothing until the store answers again.

#![warn(missing_docs)]

mod config;
mod engine;
mod metrics;
mod ownership;
mod runner;
mod scanners;
mod timing;

pub use config::{
    EngineConfig, DRAIN_TICKS_MAX_BOUND, DRAIN_TICKS_MAX_DEFAULT, IDLE_POLL_MAX_DEFAULT,
    IDLE_POLL_MAX_MAX, IDLE_POLL_MAX_MIN, INSTANCE_ID_LEN_MAX, OWNERSHIP_LEASE_MS_DEFAULT,
    OWNERSHIP_LEASE_MS_MAX, OWNERSHIP_LEASE_MS_MIN, STORE_CALL_TIMEOUT_DEFAULT,
    TICK_BATCH_MAX_BOUND, TICK_BATCH_MAX_DEFAULT,
};
pub use engine::{Engine, EngineHandle};
pub use metrics::{EngineMetrics, LoopSnapshot};
pub use scanners::{
    FlowProjector, ScanReport, Scanner, TimerDrain, FLOW_PROJECTOR_INTERVAL_DEFAULT,
    FLOW_PROJECTOR_PAGE_MAX_DEFAULT,
};
