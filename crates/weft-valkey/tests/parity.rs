//! The Lua library's arithmetic equals weft-core's, bit for bit.
//!
//! Goal: retry schedules are the same on every store, so `jitter_unit`
//! (FNV-1a 64 in two 32-bit halves in Lua) and `Backoff::delay_ms` (with
//! `powi` and `round` as Rust compiles them) must agree exactly.
//! Method: for thousands of random ids, attempt numbers and policies, ask the
//! library's `weft_probe_backoff` and compare with Rust, in one pipeline.

mod common;

use weft_core::{jitter_unit, AttemptNumber, Backoff, ExecutionId, PartitionId};

fn random_backoff() -> Backoff {
    let initial_ms = match fastrand::u8(0..4) {
        0 => 0,
        1 => fastrand::i64(0..10),
        _ => fastrand::i64(0..100_000),
    };
    Backoff {
        initial_ms,
        max_ms: initial_ms + fastrand::i64(0..10_000_000),
        multiplier: match fastrand::u8(0..3) {
            0 => 1.0,
            1 => 2.0,
            _ => 1.0 + fastrand::f64() * 99.0,
        },
        jitter: if fastrand::bool() {
            fastrand::f64()
        } else {
            0.1
        },
    }
}

#[tokio::test]
async fn backoff_matches_weft_core() {
    let url = common::url(common::VALKEY_URL_VAR);
    // Connecting loads the library.
    let (_store, _cleanup) = common::store_with(common::config(&url, Some(4))).await;
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut cases = Vec::new();
    for i in 0..4000u32 {
        let id = ExecutionId::mint(PartitionId(fastrand::u16(..)), fastrand::i64(0..1 << 47));
        let attempt = match i % 3 {
            0 => fastrand::u32(1..5),
            1 => fastrand::u32(..),
            _ => fastrand::u32(1..1001),
        };
        let failures = fastrand::u32(1..1001);
        cases.push((id, attempt, failures, random_backoff()));
    }
    let mut pipe = redis::pipe();
    for (id, attempt, failures, b) in &cases {
        pipe.cmd("FCALL")
            .arg("weft_probe_backoff")
            .arg(0)
            .arg(id.as_str())
            .arg(attempt)
            .arg(failures)
            .arg(b.initial_ms)
            .arg(b.max_ms)
            .arg(b.multiplier.to_string())
            .arg(b.jitter.to_string());
    }
    let replies: Vec<(String, String)> = pipe.query_async(&mut conn).await.expect("probe");
    for ((id, attempt, failures, b), (unit, delay)) in cases.iter().zip(replies) {
        let want_unit = jitter_unit(id, AttemptNumber(*attempt));
        let got_unit: f64 = unit.parse().expect("a float");
        assert_eq!(got_unit.to_bits(), want_unit.to_bits(), "{id} {attempt}");
        let want_delay = b.delay_ms(*failures, want_unit);
        assert_eq!(
            delay,
            want_delay.to_string(),
            "{id} {attempt} {failures} {b:?}"
        );
    }
}
