//! Enables the Redis run of the conformance suite (`tests/conformance_redis.rs`)
//! when `WEFT_TEST_REDIS_URL` is set at build time; without it that file
//! compiles to nothing, since the suite's macro cannot skip at run time.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(weft_test_redis)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=WEFT_TEST_REDIS_URL");
    if std::env::var_os("WEFT_TEST_REDIS_URL").is_some() {
        println!("cargo::rustc-cfg=weft_test_redis");
    }
}
