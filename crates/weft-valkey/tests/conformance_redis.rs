//! The conformance suite on Redis 7.0+, when `WEFT_TEST_REDIS_URL` names one.
//!
//! Goal: the library runs unchanged on Redis 7.0 (Functions' first release)
//! as well as on Valkey. Method: as `conformance.rs`; the file is compiled
//! only when `WEFT_TEST_REDIS_URL` was set at build time (see `build.rs`),
//! because the suite's macro cannot skip tests at run time.

#![cfg(weft_test_redis)]

mod common;

async fn redis() -> weft_conformance::Harness {
    common::harness(common::REDIS_URL_VAR).await
}

weft_conformance::conformance_suite!(redis);
