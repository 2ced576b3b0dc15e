//! A fresh store, engine and (for HTTP) server per test, on this machine's
//! loopback only; and the worker settings every scenario starts from.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_core::{ManualClock, Store};
use weft_engine::{Engine, EngineConfig, EngineHandle};
use weft_sdk::{Client, DirectTransport, HttpTransport, SharedTransport, WorkerBuilder};
use weft_server::{Server, ServerConfig};
use weft_sqlite::{SqliteConfig, SqliteStore};

/// Which transport a scenario runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `DirectTransport` over the store.
    Direct,
    /// `HttpTransport` to an in-process `weft-server` over the store.
    Http,
}

/// Which clock the store reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The system clock, with an engine applying timers.
    System,
    /// A manual clock the test moves, and no engine.
    Manual,
}

/// The lease scenarios use: short, so heartbeats (a third of it) are quick.
pub const LEASE: Duration = Duration::from_millis(600);
/// The longest any scenario waits for an outcome.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One test's Weft.
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub transport: SharedTransport,
    pub client: Client,
    pub clock: Option<ManualClock>,
    engine: Option<EngineHandle>,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

impl Harness {
    /// A fresh in-memory store, its engine (with the system clock) and,
    /// over HTTP, a server on 127.0.0.1 at a free port.
    pub async fn start(via: Via, clock: Clock) -> Self {
        let mut config = SqliteConfig::memory();
        let manual = (clock == Clock::Manual).then(|| ManualClock::new(1_700_000_000_000));
        if let Some(manual) = &manual {
            config = config.with_clock(Arc::new(manual.clone()));
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config).expect("open store"));
        let engine = (clock == Clock::System).then(|| {
            let config = EngineConfig {
                idle_poll_max: Duration::from_millis(100),
                ..EngineConfig::default()
            };
            Engine::try_start(Arc::clone(&store), config).expect("engine")
        });
        let (transport, server): (SharedTransport, _) = match via {
            Via::Direct => {
                // A long poll fallback, so quick pickups prove the event wake.
                let direct = DirectTransport::new(Arc::clone(&store))
                    .with_poll_interval(Duration::from_secs(5));
                (direct.into(), None)
            }
            Via::Http => {
                let (url, server) = serve(Arc::clone(&store), vec![]).await;
                (HttpTransport::new(&url).expect("url").into(), Some(server))
            }
        };
        Self {
            client: Client::new(Arc::clone(&transport)),
            store,
            transport,
            clock: manual,
            engine,
            server,
        }
    }

    /// A worker on lane `default` with the short test lease.
    pub fn worker(&self) -> WorkerBuilder {
        weft_sdk::Worker::builder(Arc::clone(&self.transport))
            .lanes(["default"])
            .lease(LEASE)
            .claim_wait(Duration::from_secs(10))
    }

    /// Stops the server and the engine.
    pub async fn stop(self) {
        if let Some((stop, serving)) = self.server {
            let _ = stop.send(());
            let _ = serving.await;
        }
        if let Some(engine) = self.engine {
            engine.shutdown().await;
        }
    }
}

/// A server over `store` on 127.0.0.1 at a free port, requiring one of
/// `api_tokens` when any are given; its URL and how to stop it.
pub async fn serve(
    store: Arc<dyn Store>,
    api_tokens: Vec<String>,
) -> (
    String,
    (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>),
) {
    let config = ServerConfig::new(api_tokens, 1 << 20).expect("server config");
    let server = Server::new(store, None, config).expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), (stop, serving))
}

/// Polls `check` every 10 ms until it holds or `PATIENCE` passes.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
