//! Opening a store from a URL: `sqlite://PATH`, or `valkey://HOST:PORT[/DB]`
//! (`redis://` too; `valkeys://` and `rediss://` for TLS when built with it).
//!
//! A Valkey that does not answer yet is retried with a capped backoff, and
//! each retry says so: a server started before its store must not crash.

use std::sync::Arc;
use std::time::Duration;

use weft_core::{Error, MachineConfig, PartitionCount, Store};
use weft_sqlite::{SqliteConfig, SqliteStore};
use weft_valkey::{ValkeyConfig, ValkeyStore};

/// The longest pause between two attempts to reach a store at start.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How to open a store besides its URL.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StoreOptions {
    /// `P` for a new store; must match an existing store's.
    pub partitions: Option<PartitionCount>,
    /// The payload limit the state machine enforces.
    pub payload_bytes_max: u64,
}

impl StoreOptions {
    fn machine(&self) -> MachineConfig {
        MachineConfig {
            payload_bytes_max: self.payload_bytes_max,
            ..MachineConfig::default()
        }
    }
}

/// Opens the store `url` names; `key_prefix` applies to Valkey only.
pub(crate) async fn open_store(
    url: &str,
    key_prefix: Option<&str>,
    options: StoreOptions,
) -> Result<Arc<dyn Store>, String> {
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => {
            let config = SqliteConfig::from_url(url).map_err(|e| format!("--store {url}: {e}"))?;
            open_sqlite(config, options, url)
        }
        Some(scheme @ ("valkey" | "valkeys" | "redis" | "rediss")) => {
            let mut config = ValkeyConfig::new(redis_url(scheme, url));
            if let Some(prefix) = key_prefix {
                config.key_prefix = prefix.to_owned();
            }
            config.partitions = options.partitions;
            config.machine = options.machine();
            open_valkey(config, url).await
        }
        _ => Err(format!(
            "--store {url}: unknown store; use sqlite://PATH or valkey://HOST:PORT[/DB]"
        )),
    }
}

/// Opens an SQLite store.
pub(crate) fn open_sqlite(
    config: SqliteConfig,
    options: StoreOptions,
    name: &str,
) -> Result<Arc<dyn Store>, String> {
    let mut config = config.with_machine(options.machine());
    if let Some(count) = options.partitions {
        config = config.with_partitions(count);
    }
    let store = SqliteStore::open(config).map_err(|e| format!("cannot open {name}: {e}"))?;
    Ok(Arc::new(store))
}

/// The client library speaks `redis://`; `valkey://` names the same thing.
fn redis_url(scheme: &str, url: &str) -> String {
    let rest = &url[scheme.len()..];
    match scheme {
        "valkey" => format!("redis{rest}"),
        "valkeys" => format!("rediss{rest}"),
        _ => url.to_owned(),
    }
}

async fn open_valkey(config: ValkeyConfig, name: &str) -> Result<Arc<dyn Store>, String> {
    let mut pause = Duration::from_millis(200);
    loop {
        match connect_saying_so(&config, name).await {
            Ok(store) => return Ok(Arc::new(store)),
            Err(Error::Unavailable(why)) => {
                tracing::warn!("store {name} is unavailable ({why}); retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(CONNECT_BACKOFF_MAX);
            }
            Err(e) => return Err(format!("cannot open {name}: {e}")),
        }
    }
}

/// Connects, and says so every few seconds while the store does not answer:
/// the client may retry inside one connect.
async fn connect_saying_so(config: &ValkeyConfig, name: &str) -> weft_core::Result<ValkeyStore> {
    let connecting = ValkeyStore::connect(config.clone());
    tokio::pin!(connecting);
    let mut waited = Duration::ZERO;
    let step = Duration::from_secs(1);
    loop {
        tokio::select! {
            result = &mut connecting => return result,
            () = tokio::time::sleep(step) => {
                waited += step;
                tracing::warn!("store {name} is unavailable (no answer for {waited:?}); retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! URL schemes map onto the client's.
    use super::redis_url;

    #[test]
    fn valkey_schemes_become_redis_schemes() {
        assert_eq!(redis_url("valkey", "valkey://h:1/2"), "redis://h:1/2");
        assert_eq!(redis_url("valkeys", "valkeys://h:1"), "rediss://h:1");
        assert_eq!(redis_url("redis", "redis://h:1"), "redis://h:1");
    }
}
