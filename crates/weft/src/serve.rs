//! `weft dev` and `weft server`: the HTTP API and the engine in one process.
//!
//! Key operations: open the store, bind the listener, start the engine,
//! serve; print a line containing `listening on` once the API answers; on
//! SIGTERM or Ctrl-C stop accepting, let in-flight requests finish (waking
//! long-polls so they answer at once), then shut the engine down gracefully
//! so its partitions are free for other instances at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use weft_core::{Store, PAYLOAD_BYTES_MAX_DEFAULT};
use weft_engine::{Engine, EngineConfig, EngineHandle};
use weft_server::keys::{read_or_create_keyring, DEV_KEYRING_FILE};
use weft_server::{EngineMetricsSource, Keys, Server, ServerConfig};
use weft_sqlite::SqliteConfig;

use crate::store_url::{open_sqlite, open_store, StoreOptions};

/// The address `weft dev` and `weft server` listen on by default.
const LISTEN_DEFAULT: &str = "127.0.0.1:7070";
/// The SQLite file `weft dev` keeps in its data directory.
const DEV_STORE_FILE: &str = "weft.sqlite3";

/// Options shared by `weft dev` and `weft server`.
#[derive(clap::Args, Debug)]
pub(crate) struct ApiArgs {
    /// Address to serve the HTTP API on, `HOST:PORT` (port 0 picks a free
    /// port; the `listening on` line shows which).
    #[arg(long, env = "WEFT_LISTEN", default_value = LISTEN_DEFAULT, value_name = "ADDR")]
    listen: String,
    /// A token clients must send as `Authorization: Bearer TOKEN`; repeat the
    /// flag for several. The environment variable takes a comma-separated
    /// list. With no token, auth is off. `GET /healthz` is always open.
    #[arg(
        long = "api-token",
        env = "WEFT_API_TOKENS",
        value_name = "TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_tokens: Vec<String>,
    /// Largest `payload` of a submit or `result` of a completion, in bytes of
    /// compact JSON; larger ones are refused with 413.
    #[arg(
        long,
        env = "WEFT_PAYLOAD_BYTES_MAX",
        default_value_t = PAYLOAD_BYTES_MAX_DEFAULT,
        value_name = "BYTES"
    )]
    payload_bytes_max: u64,
}

/// `weft dev`: everything in one process over an embedded SQLite file.
#[derive(clap::Args, Debug)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Directory holding the embedded store (`DIR/weft.sqlite3`) and the
    /// waitpoint signing keys (`DIR/signing-keys.json`, made on first start);
    /// created if missing.
    #[arg(long, env = "WEFT_DATA", default_value = ".weft", value_name = "DIR")]
    data: PathBuf,
}

/// `weft server`: the API and the engine against a store named by URL.
#[derive(clap::Args, Debug)]
pub(crate) struct ServerArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Where the state lives: `sqlite://PATH` (created if missing), or
    /// `valkey://[USER:PASSWORD@]HOST:PORT[/DB]` (`redis://` too). Several
    /// servers against one Valkey share its partitions.
    #[arg(long, env = "WEFT_STORE", value_name = "URL")]
    store: String,
    /// Put before every Valkey key (default `weft:`), so that several Weft
    /// installations can share one Valkey.
    #[arg(long, env = "WEFT_VALKEY_KEY_PREFIX", value_name = "PREFIX")]
    valkey_key_prefix: Option<String>,
    /// The keyring file that signs waitpoint tokens (make one with `weft
    /// keys rotate --file PATH`); re-read when it changes. Without it the
    /// server makes a key that lives only as long as the process.
    #[arg(long, env = "WEFT_SIGNING_KEYS", value_name = "PATH")]
    signing_keys: Option<PathBuf>,
}

/// Runs `weft dev` until SIGTERM or Ctrl-C.
pub(crate) async fn run_dev(args: DevArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.data)
        .map_err(|e| format!("--data {}: cannot create it: {e}", args.data.display()))?;
    let path = args.data.join(DEV_STORE_FILE);
    let name = path.display().to_string();
    let options = StoreOptions {
        partitions: None,
        payload_bytes_max: args.api.payload_bytes_max,
    };
    let store = open_sqlite(SqliteConfig::file(&path), options, &name)?;
    let keys_path = args.data.join(DEV_KEYRING_FILE);
    let (_, created) = read_or_create_keyring(&keys_path).map_err(|e| e.to_string())?;
    if created {
        crate::say(&format!(
            "weft dev: made waitpoint signing keys in {}",
            keys_path.display()
        ));
    }
    let keys = Keys::from_file(&keys_path).map_err(|e| e.to_string())?;
    let what = format!("store {name} (embedded SQLite)");
    run(store, keys, args.api, "weft dev", &what).await
}

/// Runs `weft server` until SIGTERM or Ctrl-C.
pub(crate) async fn run_server(args: ServerArgs) -> Result<(), String> {
    let options = StoreOptions {
        partitions: None,
        payload_bytes_max: args.api.payload_bytes_max,
    };
    let keys = match &args.signing_keys {
        Some(path) => Keys::from_file(path).map_err(|e| format!("--signing-keys: {e}"))?,
        None => {
            tracing::warn!(
                "no --signing-keys: waitpoint tokens are signed by a key made for this process \
                 and stop verifying when it exits; make a keyring with \
                 `weft keys rotate --file PATH` and pass --signing-keys PATH"
            );
            Keys::ephemeral().map_err(|e| e.to_string())?
        }
    };
    let store = open_store(&args.store, args.valkey_key_prefix.as_deref(), options).await?;
    let what = format!("store {}", args.store);
    run(store, keys, args.api, "weft server", &what).await
}

/// Serves the API with an engine until a stop signal, then shuts both down.
async fn run(
    store: Arc<dyn Store>,
    keys: Keys,
    api: ApiArgs,
    mode: &str,
    what: &str,
) -> Result<(), String> {
    let config = ServerConfig::new(api.api_tokens.clone(), api.payload_bytes_max)
        .map_err(|e| format!("{e} (see --api-token and --payload-bytes-max)"))?;
    let auth = config.auth_enabled();
    // Register for the signals before announcing anything, so a signal sent
    // right after the `listening on` line is never the default (fatal) one.
    let stop = stop_signal().map_err(|e| format!("cannot listen for signals: {e}"))?;
    let listener = TcpListener::bind(&api.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", api.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("--listen {}: {e}", api.listen))?;
    let engine = Engine::try_start(store.clone(), EngineConfig::default())
        .map_err(|e| format!("engine config: {e}"))?;
    let engine = Arc::new(Mutex::new(Some(engine)));
    let server = Server::new(store, Some(metrics_source(&engine)), config)
        .map_err(|e| format!("server config: {e}"))?
        .with_keys(keys);
    let serving = tokio::spawn(server.serve(listener, stop));
    crate::say(&format!("{mode}: listening on http://{addr}"));
    crate::say(&next_steps(&addr.to_string(), what, auth));
    let served = serving.await;
    crate::say(&format!("{mode}: stopping"));
    let handle = engine.lock().ok().and_then(|mut slot| slot.take());
    if let Some(handle) = handle {
        handle.shutdown().await;
    }
    match served {
        Ok(Ok(())) => {
            crate::say(&format!("{mode}: stopped"));
            Ok(())
        }
        Ok(Err(e)) => Err(format!("serving on {addr} failed: {e}")),
        Err(e) => Err(format!("the server task failed: {e}")),
    }
}

/// Reads the engine's counters while it runs; `None` once it is shut down.
fn metrics_source(engine: &Arc<Mutex<Option<EngineHandle>>>) -> EngineMetricsSource {
    let engine = Arc::clone(engine);
    Arc::new(move || {
        let slot = engine.lock().ok()?;
        slot.as_ref().map(EngineHandle::metrics)
    })
}

/// Resolves on the first SIGTERM or SIGINT; both handlers are installed
/// before this returns.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// What to do next: submit with curl, run a worker (the `weft worker`
/// command, or any HTTP client claiming with a long-poll).
fn next_steps(addr: &str, what: &str, auth: bool) -> String {
    let (auth_header, auth_flag) = if auth {
        (
            " -H \"Authorization: Bearer $WEFT_API_TOKEN\"",
            " --api-token \"$WEFT_API_TOKEN\"",
        )
    } else {
        ("", "")
    };
    let base = format!("http://{addr}");
    let curl = |path: &str, body: &str| {
        format!(
            "  curl -sS -X POST {base}{path}{auth_header} \\\n    \
             -H 'Content-Type: application/json' -d '{body}'"
        )
    };
    [
        format!("  {what}; engine running; dashboard at {base}/"),
        String::new(),
        "Submit a job:".to_owned(),
        curl(
            "/v1/executions",
            r#"{"kind":"hello","payload":{"name":"world"}}"#,
        ),
        String::new(),
        "Run a worker (a shell command per task: payload on stdin, stdout is the result):"
            .to_owned(),
        format!("  weft worker --server {base}{auth_flag} --lane default --exec 'cat'"),
        "or claim over HTTP from any language (then POST .../complete with the lease):".to_owned(),
        curl(
            "/v1/claims",
            r#"{"worker_id":"w1","lanes":["default"],"wait_ms":30000}"#,
        ),
        String::new(),
        "Stop with Ctrl-C.".to_owned(),
    ]
    .join("\n")
}
