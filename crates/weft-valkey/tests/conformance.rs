//! The backend-generic conformance suite on Valkey.
//!
//! Goal: the Valkey store behaves exactly as the `Store` contract says.
//! Method: every test gets a fresh store under a random key prefix on the
//! server named by `WEFT_TEST_VALKEY_URL` (scripts/test.sh starts one); the
//! store reads Valkey's clock, so tests move time by waiting.

mod common;

async fn valkey() -> weft_conformance::Harness {
    common::harness(common::VALKEY_URL_VAR).await
}

weft_conformance::conformance_suite!(valkey);
