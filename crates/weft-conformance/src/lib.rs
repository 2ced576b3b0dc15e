//! The backend-generic conformance suite every Weft store must pass.
//!
//! Each store crate instantiates the whole suite with one macro call and an
//! async factory that returns a fresh, empty store per test:
//!
//! ```ignore
//! // crates/weft-sqlite/tests/conformance.rs
//! async fn memory() -> weft_conformance::Harness {
//!     let clock = weft_core::ManualClock::new(1_700_000_000_000);
//!     let store = open_in_memory_with(clock.clone());
//!     weft_conformance::Harness::new(std::sync::Arc::new(store)).with_clock(clock)
//! }
//! weft_conformance::conformance_suite!(memory);
//! ```
//!
//! The macro emits one `#[tokio::test]` (multi-thread, two workers) per test,
//! named `conformance::<area>::<test>`, so `cargo test conformance::leases`
//! runs one area. Tests are written for both kinds of store clock: with a
//! [`ManualClock`] they move time with [`Harness::advance_ms`]; with a real
//! clock the same call waits. Durations are therefore short (leases of
//! 100–300 ms, delays of 50–200 ms). No test passes "now" to a store: stores
//! apply timers due by their own clock when `partition_tick` is called.
//!
//! Areas, one module each, each opening with its goal and method:
//! [`lifecycle`], [`retry`], [`leases`], [`release`], [`timers`], [`claims`],
//! [`idempotency`], [`cancel_replay`], [`validation`], [`retention`],
//! [`engine`], [`flows`], [`waitpoints`]; shared factories and assertions live in
//! [`support`]. Areas that need an optional capability (flows) probe it
//! first and skip with a reason when the store lacks it.
//!
//! Assumptions about the store under test, beyond the `Store` trait: it runs
//! with the default `MachineConfig` (7-day retention, 1 MiB payload limit),
//! and every factory call returns an empty store.

#![warn(missing_docs)]

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use weft_core::{ManualClock, Store};

pub mod batches;
pub mod cancel_replay;
pub mod claims;
pub mod engine;
pub mod flows;
pub mod idempotency;
pub mod leases;
pub mod lifecycle;
pub mod outbox;
pub mod release;
pub mod retention;
pub mod retry;
pub mod support;
pub mod timers;
pub mod validation;
pub mod waitpoints;

/// What the suite's macro needs at the call site; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Opens a second handle on the same data as [`Harness::store`].
pub type StoreOpener = Arc<dyn Fn() -> Arc<dyn Store> + Send + Sync>;

/// One fresh store under test, and how to drive its time.
pub struct Harness {
    /// The store, empty.
    pub store: Arc<dyn Store>,
    /// The store's clock when it can be injected (SQLite); `None` when the
    /// store reads a real clock (Valkey's `TIME`).
    pub clock: Option<ManualClock>,
    /// Anything that must live as long as the store, e.g. a `TempDir`.
    pub guard: Option<Box<dyn Any + Send + Sync>>,
    /// Opens another handle on the same data (its own connection), for the
    /// engine and concurrency tests; `None` if the store cannot, in which
    /// case those tests share `store`.
    pub new_store: Option<StoreOpener>,
}

impl Harness {
    /// A harness for `store`, with a real clock, no guard and no second
    /// handle; add those with the `with_*` builders.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: None,
            guard: None,
            new_store: None,
        }
    }

    /// Declares the store's injected clock.
    #[must_use]
    pub fn with_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Keeps `guard` alive as long as the harness.
    #[must_use]
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// Declares how to open a second handle on the same data.
    #[must_use]
    pub fn with_new_store(
        mut self,
        open: impl Fn() -> Arc<dyn Store> + Send + Sync + 'static,
    ) -> Self {
        self.new_store = Some(Arc::new(open));
        self
    }

    /// Moves the store's time forward by `ms`: advances the manual clock, or
    /// waits that long on a real one.
    pub async fn advance_ms(&self, ms: i64) {
        assert!(ms >= 0, "time only moves forward, asked for {ms} ms");
        match &self.clock {
            Some(clock) => clock.advance_ms(ms),
            None => {
                let ms = u64::try_from(ms).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    /// A second handle on the same data if the store offers one, else the
    /// same handle again.
    pub fn handle(&self) -> Arc<dyn Store> {
        match &self.new_store {
            Some(open) => open(),
            None => self.store.clone(),
        }
    }

    /// With a manual clock, makes it follow real time until the returned
    /// guard is dropped, so that real-time components (the engine) can run
    /// against the store; with a real clock, does nothing.
    pub fn follow_real_time(&self) -> Option<ClockFollower> {
        let clock = self.clock.clone()?;
        let task = tokio::spawn(async move {
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let now = tokio::time::Instant::now();
                let elapsed = now.duration_since(last).as_millis();
                if elapsed > 0 {
                    clock.advance_ms(i64::try_from(elapsed).unwrap_or(i64::MAX));
                    // Carry the sub-millisecond rest over to the next step.
                    last += Duration::from_millis(u64::try_from(elapsed).unwrap_or(0));
                }
            }
        });
        Some(ClockFollower(task))
    }
}

/// Keeps a manual clock following real time; stops when dropped.
#[derive(Debug)]
pub struct ClockFollower(tokio::task::JoinHandle<()>);

impl Drop for ClockFollower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Instantiates the whole conformance suite for `$factory`, an
/// `async fn() -> Harness` in scope at the call site. Emits a module
/// `conformance` with one submodule per area and one test per case, plus a
/// private helper fn; invoke it once per module (put each further store
/// configuration in a module of its own). The tests run on the tokio this
/// crate re-exports, so the calling crate needs no tokio features of its own.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::__conformance_tests! {
            $factory;
            lifecycle {
                submit_claim_heartbeat_complete,
                list_filters_and_cursor,
                lane_depths_count_non_terminal,
                factories_reach_their_states,
                brief_writes_store_what_full_writes_store,
            }
            retry {
                retryable_failures_back_off_then_fail,
                non_retryable_failure_ends_at_once,
                single_attempt_fails_at_once,
                zero_backoff_retries_at_once,
                long_error_messages_are_cut,
            }
            leases {
                expired_lease_is_recovered,
                heartbeat_keeps_the_lease,
                max_reclaims_stops_poison_jobs,
                zero_reclaims_fail_on_first_loss,
                lease_loss_uses_attempts,
                forged_leases_are_refused,
            }
            release {
                release_returns_to_waiting,
                release_is_replayed_until_reclaimed,
                release_uses_no_attempts,
                release_keeps_failures_and_the_deadline,
                release_needs_the_live_lease,
            }
            timers {
                delayed_becomes_waiting_when_due,
                run_at_is_absolute,
                attempt_timeout_is_retried,
                deadline_expires_waiting,
                deadline_expires_delayed,
                deadline_expires_active,
                tick_honours_max_and_reports_next_due,
                due_hints_announce_new_timers,
            }
            claims {
                capabilities_route_work,
                lanes_route_work,
                priority_then_age_within_partition,
                batch_claim_respects_max,
                concurrent_claimers_claim_each_once,
            }
            idempotency {
                same_key_returns_the_same_execution,
                key_outlives_the_end,
                concurrent_duplicates_create_one,
                complete_is_replayed,
                fail_is_replayed,
            }
            cancel_replay {
                cancel_waiting,
                cancel_delayed,
                cancel_active,
                cancel_is_idempotent,
                cancel_ended_is_conflict,
                replay_ended_executions,
                replay_non_ended_is_conflict,
                replay_restarts_the_deadline,
                replay_resets_the_attempt_budget,
            }
            validation {
                bad_submits_are_refused,
                payload_limit_is_enforced,
                bad_claims_are_refused,
                bad_heartbeat_is_refused,
                bad_worker_writes_are_refused,
                bad_list_limits_are_refused,
                unknown_ids_are_not_found,
            }
            retention {
                ended_executions_are_purged,
            }
            engine {
                two_engines_split_partitions,
                takeover_after_a_crash,
                engine_applies_due_timers,
            }
            flows {
                linear_chain_passes_inputs,
                diamond_joins_all,
                fan_out_fan_in_of_100,
                any_of_keeps_the_rest,
                any_of_cancels_the_rest,
                quorum_cancels_the_rest,
                failure_edges_run_compensations,
                skips_propagate,
                on_failure_cancels_the_flow,
                cancel_mid_flight,
                nodes_are_added_at_run_time,
                bad_flows_are_refused,
                lapsed_lease_is_retried_in_flow,
                flow_idempotency_key,
                replay_of_a_member_is_conflict,
                flow_end_is_announced,
                flows_list_by_state,
                retention_purges_flows_with_their_last_member,
                brief_completion_settles_the_flow,
            }
            outbox {
                large_cascades_and_cancels_continue_through_the_outbox,
            }
            batches {
                submit_many_creates_each_in_order,
                submit_many_refuses_a_bad_batch_whole,
                submit_many_honours_idempotency_keys,
                complete_many_reports_each_item,
                complete_many_settles_flows,
            }
            waitpoints {
                suspend_all_resumes_on_every_signal,
                suspend_any_resumes_on_one_signal,
                buffered_signal_satisfies_the_suspend,
                signal_outside_the_suspension_is_buffered,
                repeated_and_late_signals_conflict,
                token_signals_open_one_waitpoint_once,
                every_timeout_behaviour,
                timeout_counts_only_unsignalled_waitpoints,
                cancel_while_suspended,
                deadline_expires_suspended,
                repeated_suspend_is_replayed_until_reclaimed,
                replay_clears_signals,
                bad_suspends_and_signals_are_refused,
                suspended_flow_member_blocks_its_downstream,
            }
        }
    };
}

/// Expands the area list of `conformance_suite!`; not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:path; $($area:ident { $($test:ident),* $(,)? })*) => {
        async fn __weft_conformance_harness() -> $crate::Harness {
            $factory().await
        }

        mod conformance {
            $(
                mod $area {
                    $(
                        #[$crate::__private::tokio::test(
                            flavor = "multi_thread",
                            worker_threads = 2,
                            crate = "weft_conformance::__private::tokio"
                        )]
                        async fn $test() {
                            let harness = super::super::__weft_conformance_harness().await;
                            $crate::$area::$test(harness).await;
                        }
                    )*
                }
            )*
        }
    };
}
