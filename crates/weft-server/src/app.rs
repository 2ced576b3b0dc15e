//! The router, its shared state, and serving with a graceful shutdown.
//!
//! Key operations: [`Server::new`] validates the config; [`Server::router`]
//! builds the axum router (every route of the contract for executions,
//! workers, flows, signals, lanes, health and metrics, plus `release` and
//! the dashboard);
//! [`Server::serve`]
//! answers on a listener until a shutdown future resolves, then wakes every
//! long-poll so it answers at once, stops accepting, and lets in-flight
//! requests finish.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_core::{ReadyBoard, Result, Store};
use weft_engine::EngineMetrics;

use crate::config::ServerConfig;
use crate::keys::Keys;
use crate::metrics::HttpMetrics;
use crate::routes::{executions, flows, ops, signals, workers};

/// Where `GET /metrics` and the dashboard read the engine's counters: a
/// function so that the caller keeps ownership of its `EngineHandle`. It
/// answers `None` once the engine is gone.
pub type EngineMetricsSource = Arc<dyn Fn() -> Option<EngineMetrics> + Send + Sync>;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The backend.
    pub(crate) store: Arc<dyn Store>,
    /// Validated configuration.
    pub(crate) config: Arc<ServerConfig>,
    /// The engine's counters, when one runs in this process.
    pub(crate) engine_metrics: Option<EngineMetricsSource>,
    /// Request counts and latency.
    pub(crate) http: Arc<HttpMetrics>,
    /// Where claimable work is, from the store's events; made at the first
    /// claim (it needs the runtime).
    pub(crate) board: Arc<OnceLock<Arc<ReadyBoard>>>,
    /// Set to `true` when the server begins shutting down.
    pub(crate) shutdown: Arc<watch::Sender<bool>>,
    /// Signs and verifies waitpoint tokens.
    pub(crate) keys: Keys,
}

impl AppState {
    /// The board every claim of this server shares.
    pub(crate) fn board(&self) -> Arc<ReadyBoard> {
        Arc::clone(
            self.board
                .get_or_init(|| ReadyBoard::follow(self.store.as_ref())),
        )
    }
}

/// An HTTP API server over one store.
pub struct Server {
    state: AppState,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.state.config)
            .field("engine_attached", &self.state.engine_metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `store`, reporting `engine_metrics` when given. Its
    /// waitpoint tokens are signed by an ephemeral key (they do not survive
    /// a restart) unless [`Server::with_keys`] says otherwise.
    ///
    /// # Errors
    /// `invalid_argument` naming the config field at fault; `internal` when
    /// the system has no randomness for the ephemeral key.
    pub fn new(
        store: Arc<dyn Store>,
        engine_metrics: Option<EngineMetricsSource>,
        config: ServerConfig,
    ) -> Result<Self> {
        config.validate()?;
        let keys = Keys::ephemeral().map_err(|e| weft_core::Error::Internal(e.to_string()))?;
        let (shutdown, _) = watch::channel(false);
        Ok(Self {
            state: AppState {
                store,
                config: Arc::new(config),
                engine_metrics,
                http: Arc::new(HttpMetrics::default()),
                board: Arc::new(OnceLock::new()),
                shutdown: Arc::new(shutdown),
                keys,
            },
        })
    }

    /// The same server, signing and verifying waitpoint tokens with `keys`.
    #[must_use]
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.state.keys = keys;
        self
    }

    /// The router with every route, auth, request logging and metrics.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let api = Router::new()
            .route("/", get(ops::dashboard))
            .route("/healthz", get(ops::healthz))
            .route("/metrics", get(ops::metrics))
            .route("/v1/lanes", get(ops::lanes))
            .route(
                "/v1/executions",
                post(executions::submit).get(executions::list),
            )
            .route("/v1/executions/batch", post(executions::submit_batch))
            .route("/v1/executions/{id}", get(executions::get_one))
            .route("/v1/executions/{id}/attempts", get(executions::attempts))
            .route("/v1/executions/{id}/wait", get(executions::wait))
            .route("/v1/executions/{id}/cancel", post(executions::cancel))
            .route("/v1/executions/{id}/replay", post(executions::replay))
            .route("/v1/executions/{id}/heartbeat", post(workers::heartbeat))
            .route("/v1/executions/{id}/complete", post(workers::complete))
            .route("/v1/executions/{id}/fail", post(workers::fail))
            .route("/v1/executions/{id}/release", post(workers::release))
            .route("/v1/executions/{id}/suspend", post(signals::suspend))
            .route(
                "/v1/executions/{id}/signals",
                post(signals::signal_execution),
            )
            .route("/v1/signals", post(signals::signal))
            .route("/v1/claims", post(workers::claim))
            .route("/v1/flows", post(flows::create).get(flows::list))
            .route("/v1/flows/{id}", get(flows::get_one))
            .route("/v1/flows/{id}/wait", get(flows::wait))
            .route("/v1/flows/{id}/nodes", post(flows::add_nodes))
            .route("/v1/flows/{id}/cancel", post(flows::cancel))
            .fallback(ops::not_found)
            .method_not_allowed_fallback(ops::not_found);
        api.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::observe,
        ))
        .with_state(state)
    }

    /// Tells every long-poll to answer now; [`Server::serve`] does this when
    /// its shutdown future resolves.
    pub fn begin_shutdown(&self) {
        self.state.shutdown.send_replace(true);
    }

    /// Answers on `listener` until `shutdown` resolves, then shuts down
    /// gracefully: long-polls answer at once, no new connection is accepted,
    /// and in-flight requests finish.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let router = self.router();
        let flag = self.state.shutdown.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                flag.send_replace(true);
            })
            .await
    }
}

/// The router of a [`Server`] over `store`, for callers that serve it
/// themselves.
///
/// # Errors
/// `invalid_argument` naming the config field at fault.
pub fn router(
    store: Arc<dyn Store>,
    engine_metrics: Option<EngineMetricsSource>,
    config: ServerConfig,
) -> Result<Router> {
    Ok(Server::new(store, engine_metrics, config)?.router())
}
