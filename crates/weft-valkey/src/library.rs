//! The Lua function library: its source, its version and its loader.
//!
//! Definitions: the library `weft` is the files under `lua/`, concatenated
//! at build time behind the `#!lua name=weft` header and lines setting
//! `LIB_VERSION` and `LIB_DIGEST` (a hash of the Lua files). `weft_version`
//! and `weft_digest` return them.
//!
//! Invariants: a client never replaces a library newer than its own (it
//! refuses to start instead), and replaces an older or missing one, or one
//! of its own version with another digest, with `FUNCTION LOAD REPLACE`. A
//! server that lost its functions (restarted without persistence, failed
//! over to a replica that never had them) answers `Function not found`; the
//! store reloads then and retries once.

use redis::aio::ConnectionManager;
use weft_core::{Error, Result};

macro_rules! library_version {
    () => {
        // 2: `weft_release`; `ended_lease_completed` became `ended_lease_by`.
        // 3: flows (`weft_flow_*`, member settling in `commit`, claim inputs).
        // 4: cascades in chunks of 256 with the rest through the outbox `o`.
        // 5: waitpoints (`weft_suspend`, `weft_signal`, the
        //    `waitpoint_timeout` timer, `suspension`, `sig:*`, `res:*`).
        // 6: `weft_submit` replies only the fields it set.
        // 7: `Ready` events name the capability set (`R|p|lane|capset`).
        // 8: the payload in its own string (reverted: slower end to end).
        // 9: the library of 7 again, above 8 so servers that ran 8 upgrade.
        // 10: a suspend satisfied at once replays for its lease
        //     (`suspension_at_once`).
        // 11: `weft_complete` and `weft_fail` take a brief flag: the
        //     execution is read without its bulky fields and the reply is
        //     the outcome and the state only.
        // 12: an execution is replied as one MessagePack map of its fields
        //     (`record`), no longer as a flat field list.
        // 13: the empty capability set is never listed in `c|<lane>`.
        // 14: `weft_submit_many` and `weft_complete_many`; batch calls and
        //     claims send their index and timer writes as one variadic
        //     command per key.
        // 15: one read of the due-index per call for hints; a brief
        //     complete reads fewer fields.
        // 16: a claim reads only the fields it needs and replies the task's
        //     fields (`task_record`) unless it loaded the whole execution.
        // 17: an ended attempt's row is the field `att:<n>` of its
        //     execution (the list `a:<id>` is only read); a batch call's
        //     `E` events go as one message per state.
        // 18: claim and complete of an execution outside flows are written
        //     out (`claim_plain`, `complete_plain`) instead of going through
        //     the snapshots of `commit`.
        "18"
    };
}

/// The version of the Lua library this client carries. Raise it whenever a
/// file under `lua/` changes behaviour or arguments.
pub const LIBRARY_VERSION: u32 = {
    // The literal above, parsed at compile time so the two cannot disagree.
    let bytes = library_version!().as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
};

/// The library's Lua files, concatenated.
const LIBRARY_BODY: &str = concat!(
    include_str!("../lua/core.lua"),
    include_str!("../lua/backoff.lua"),
    include_str!("../lua/waitpoint.lua"),
    include_str!("../lua/index.lua"),
    include_str!("../lua/machine.lua"),
    include_str!("../lua/flow.lua"),
    include_str!("../lua/execution.lua"),
    include_str!("../lua/partition.lua"),
    include_str!("../lua/engine.lua"),
    include_str!("../lua/register.lua"),
);

/// A digest of the Lua files, so that a build whose Lua changed without a
/// version bump (during development) still replaces the loaded library.
pub fn library_digest() -> String {
    format!("{:016x}", weft_core::fnv1a64(LIBRARY_BODY.as_bytes()))
}

/// The library's source as loaded into the server: the header, the version
/// and digest lines, then the Lua files.
pub fn library_source() -> String {
    let digest = library_digest();
    format!(
        "#!lua name=weft\nlocal LIB_VERSION = '{LIBRARY_VERSION}'\n\
         local LIB_DIGEST = '{digest}'\n{LIBRARY_BODY}"
    )
}

const _: () = assert!(LIBRARY_VERSION >= 1, "versions start at 1");

/// Whether a server error says the library (or one function) is missing.
pub fn is_missing_function(err: &redis::RedisError) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    text.contains("function not found") || text.contains("noscript")
}

/// A server error as Weft's error: the store cannot serve now.
pub fn unavailable(err: &redis::RedisError) -> Error {
    Error::Unavailable(format!("valkey: {err}"))
}

/// Makes sure the server runs this client's library version (or refuses).
pub async fn ensure(conn: &mut ConnectionManager) -> Result<()> {
    let reply: redis::RedisResult<String> = redis::cmd("FCALL")
        .arg("weft_version")
        .arg(0)
        .query_async(conn)
        .await;
    match reply {
        Ok(text) => {
            let server: u32 = text.trim().parse().map_err(|_| {
                Error::Internal(format!("weft_version returned {text:?}, not a number"))
            })?;
            if server > LIBRARY_VERSION {
                return Err(Error::conflict(format!(
                    "the server runs weft Lua library version {server}, newer than this \
                     client's {LIBRARY_VERSION}; upgrade this client (refusing to downgrade \
                     the library under newer clients)"
                )));
            }
            if server == LIBRARY_VERSION && loaded_digest(conn).await? == library_digest() {
                return Ok(());
            }
        }
        Err(err) if is_missing_function(&err) => {}
        Err(err) => return Err(unavailable(&err)),
    }
    load(conn).await
}

async fn loaded_digest(conn: &mut ConnectionManager) -> Result<String> {
    redis::cmd("FCALL")
        .arg("weft_digest")
        .arg(0)
        .query_async(conn)
        .await
        .or_else(|err| {
            if is_missing_function(&err) {
                Ok(String::new())
            } else {
                Err(unavailable(&err))
            }
        })
}

async fn load(conn: &mut ConnectionManager) -> Result<()> {
    tracing::info!(
        version = LIBRARY_VERSION,
        digest = library_digest(),
        "loading weft library"
    );
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library_source())
        .query_async::<String>(conn)
        .await
        .map(|_| ())
        .map_err(|err| {
            if is_missing_function(&err) || err.to_string().contains("unknown command") {
                Error::conflict(format!(
                    "the server does not support Functions (Redis 7.0+ or Valkey 7.2+ \
                     needed): {err}"
                ))
            } else {
                unavailable(&err)
            }
        })
}

#[cfg(test)]
mod tests {
    //! The version line and every file must be in the loaded source.
    use super::*;

    #[test]
    fn source_carries_header_and_version() {
        let source = library_source();
        assert!(source.starts_with("#!lua name=weft\n"));
        assert!(source.contains(&format!("local LIB_VERSION = '{LIBRARY_VERSION}'")));
        assert!(source.contains(&library_digest()));
        assert!(source.contains("register('weft_owners'"));
    }
}
