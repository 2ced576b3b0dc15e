//! Weft's Valkey store: every `Store` operation is one `FCALL` of a versioned
//! Lua function library, on one partition (one hash tag), reading time from
//! Valkey's `TIME`.
//!
//! Definitions: the library (`lua/*.lua`, concatenated at build time) mirrors
//! `weft_core::machine` field for field; [`ValkeyStore`] validates in Rust,
//! calls one function, and parses the reply back into `weft_core` types. The
//! key layout is in the crate README; [`keys`] chooses hash tags that spread
//! the partitions evenly over a cluster's slots.
//!
//! Invariants: each call touches the keys of one partition only (or of the
//! engine's tag); an execution is in exactly one index, and its timers are
//! exactly `timers_of` it, after every call (`partition_audit` checks both).
//! Due hints and store events (`Store::due_hints`, `Store::events`) arrive
//! over pub/sub on a dedicated connection and are advisory.
//!
//! ```no_run
//! use weft_core::{Store, SubmitParams};
//! use weft_valkey::{ValkeyConfig, ValkeyStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> weft_core::Result<()> {
//! let store = ValkeyStore::connect(ValkeyConfig::new("redis://127.0.0.1:6379")).await?;
//! let params = SubmitParams::new("email.send", serde_json::json!({"to": "a@example.com"}));
//! let submitted = store.execution_submit(&params).await?;
//! assert!(submitted.created);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod codec;
mod config;
mod flows;
mod hints;
pub mod keys;
mod library;
mod ops;
mod store;

pub use config::{ValkeyConfig, KEY_PREFIX_DEFAULT, RETENTION_MS_MAX, RUN_AT_MS_MAX};
pub use keys::{partition_tags, Keys};
pub use library::{library_digest, library_source, LIBRARY_VERSION};
pub use store::ValkeyStore;
