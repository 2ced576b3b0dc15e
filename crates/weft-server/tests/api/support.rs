//! A real server on an ephemeral port over a real in-memory SQLite store,
//! and a small HTTP client to talk to it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_core::flow::{Flow, FlowSpec};
use weft_core::{
    Attempt, AuditReport, CancelParams, ClaimParams, CompleteParams, DueHint, Execution,
    ExecutionId, FailParams, FlowCreated, FlowId, FlowListParams, FlowPage, HeartbeatParams,
    HeartbeatReply, LaneDepth, ListParams, Page, PartitionCount, PartitionId, PartitionOwner,
    RebalanceParams, ReleaseParams, Result, SignalParams, Store, SubmitParams, Submitted,
    SuspendParams, Task, TickReport,
};
use weft_server::{Keys, Server, ServerConfig};
use weft_sqlite::{SqliteConfig, SqliteStore};

/// A running server.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a server over a fresh in-memory SQLite store.
pub async fn start(config: ServerConfig) -> TestServer {
    let store = SqliteStore::open(SqliteConfig::memory()).expect("open store");
    start_with(Arc::new(store), config).await
}

/// Starts a server over `store`.
pub async fn start_with(store: Arc<dyn Store>, config: ServerConfig) -> TestServer {
    let server = Server::new(store.clone(), None, config).expect("config");
    serve(server).await
}

/// Starts a server over `store` that signs waitpoint tokens with `keys`.
pub async fn start_with_keys(
    store: Arc<dyn Store>,
    config: ServerConfig,
    keys: Keys,
) -> TestServer {
    let server = Server::new(store, None, config).expect("config");
    serve(server.with_keys(keys)).await
}

async fn serve(server: Server) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    TestServer {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        token: None,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestServer {
    /// Sends `body` (JSON) to `path`; returns the status and the JSON answer
    /// (`Value::Null` for a body that is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Sends raw bytes with an optional content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a flow and returns it.
    pub async fn create_flow(&self, body: Value) -> Value {
        let (status, flow) = self.post("/v1/flows", body).await;
        assert_eq!(status, StatusCode::CREATED, "{flow}");
        flow
    }

    /// Submits and returns the new execution.
    pub async fn submit(&self, body: Value) -> Value {
        let (status, execution) = self.post("/v1/executions", body).await;
        assert_eq!(status, StatusCode::CREATED, "{execution}");
        execution
    }

    /// Claims one task from `lane` without waiting; panics if none.
    pub async fn claim_one(&self, lane: &str, lease_ms: i64) -> Value {
        let body = json!({"worker_id": "w1", "lanes": [lane], "lease_ms": lease_ms});
        let (status, answer) = self.post("/v1/claims", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["tasks"][0].clone()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task).await;
            result
                .expect("server stops in time")
                .expect("join")
                .expect("serve");
        }
    }
}

/// The lease fields of a worker write for `task`.
pub fn lease_of(task: &Value) -> Value {
    json!({"lease_id": task["lease"]["id"], "epoch": task["lease"]["epoch"]})
}

/// Merges `extra` into the object `base`.
pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            base.insert(key.clone(), value.clone());
        }
    }
    base
}

/// Asserts an error answer: status, kind, and a message naming `needle`.
pub fn assert_error(
    answer: &(StatusCode, Value),
    status: u16,
    kind: &str,
    needle: &str,
    case: &str,
) {
    let (got, body) = answer;
    assert_eq!(got.as_u16(), status, "{case}: {body}");
    assert_eq!(body["error"]["kind"], kind, "{case}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(needle),
        "{case}: message {message:?} does not name {needle:?}"
    );
}

/// A real SQLite store with knobs: whether it sends events (without them,
/// servers over it exercise their polling fallback), whether it keeps flows,
/// and a pause after each
/// claim that took something (so a client can leave in the middle of a
/// claim). Every call goes to the inner store.
pub struct Tweaked {
    store: SqliteStore,
    events: bool,
    flows: bool,
    claim_pause: Duration,
}

impl Tweaked {
    /// Sends no events and no due hints.
    pub fn no_events(store: SqliteStore) -> Self {
        Self {
            store,
            events: false,
            flows: true,
            claim_pause: Duration::ZERO,
        }
    }

    /// Pauses `pause` after every claim that took a task.
    pub fn slow_claims(store: SqliteStore, pause: Duration) -> Self {
        Self {
            store,
            events: true,
            flows: true,
            claim_pause: pause,
        }
    }

    /// Keeps no flows: every flow operation is the trait's default
    /// (`unavailable`), as in a store that does not support them.
    pub fn no_flows(store: SqliteStore) -> Self {
        Self {
            store,
            events: true,
            flows: false,
            claim_pause: Duration::ZERO,
        }
    }

    /// The inner store for flow operations, or why there is none.
    fn flow_store(&self) -> Result<&SqliteStore> {
        if self.flows {
            Ok(&self.store)
        } else {
            Err(weft_core::Error::Unavailable(
                "this store does not support flows".into(),
            ))
        }
    }
}

#[async_trait]
impl Store for Tweaked {
    fn partition_count(&self) -> PartitionCount {
        self.store.partition_count()
    }
    async fn now_ms(&self) -> Result<i64> {
        self.store.now_ms().await
    }
    async fn execution_submit(&self, params: &SubmitParams) -> Result<Submitted> {
        self.store.execution_submit(params).await
    }
    async fn execution_claim(
        &self,
        partition: PartitionId,
        params: &ClaimParams,
    ) -> Result<Vec<Task>> {
        let tasks = self.store.execution_claim(partition, params).await?;
        if !tasks.is_empty() {
            tokio::time::sleep(self.claim_pause).await;
        }
        Ok(tasks)
    }
    async fn execution_heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatReply> {
        self.store.execution_heartbeat(params).await
    }
    async fn execution_complete(&self, params: &CompleteParams) -> Result<Execution> {
        self.store.execution_complete(params).await
    }
    async fn execution_fail(&self, params: &FailParams) -> Result<Execution> {
        self.store.execution_fail(params).await
    }
    async fn execution_release(&self, params: &ReleaseParams) -> Result<Execution> {
        self.store.execution_release(params).await
    }
    async fn execution_suspend(&self, params: &SuspendParams) -> Result<Execution> {
        self.store.execution_suspend(params).await
    }
    async fn execution_signal(&self, params: &SignalParams) -> Result<Execution> {
        self.store.execution_signal(params).await
    }
    async fn execution_cancel(&self, params: &CancelParams) -> Result<Execution> {
        self.store.execution_cancel(params).await
    }
    async fn execution_replay(&self, id: &ExecutionId) -> Result<Execution> {
        self.store.execution_replay(id).await
    }
    async fn execution_get(&self, id: &ExecutionId) -> Result<Execution> {
        self.store.execution_get(id).await
    }
    async fn execution_list(&self, params: &ListParams) -> Result<Page> {
        self.store.execution_list(params).await
    }
    async fn attempt_list(&self, id: &ExecutionId) -> Result<Vec<Attempt>> {
        self.store.attempt_list(id).await
    }
    async fn lane_depths(&self) -> Result<Vec<LaneDepth>> {
        self.store.lane_depths().await
    }
    async fn partition_tick(&self, partition: PartitionId, max: u32) -> Result<TickReport> {
        self.store.partition_tick(partition, max).await
    }
    async fn partition_audit(&self, partition: PartitionId) -> Result<AuditReport> {
        self.store.partition_audit(partition).await
    }
    async fn engine_rebalance(&self, params: &RebalanceParams) -> Result<Vec<PartitionId>> {
        self.store.engine_rebalance(params).await
    }
    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>> {
        self.store.partition_owners().await
    }
    fn supports_flows(&self) -> bool {
        self.flows && self.store.supports_flows()
    }
    async fn flow_create(&self, spec: &FlowSpec) -> Result<FlowCreated> {
        self.flow_store()?.flow_create(spec).await
    }
    async fn flow_get(&self, id: &FlowId) -> Result<Flow> {
        self.flow_store()?.flow_get(id).await
    }
    async fn flow_list(&self, params: &FlowListParams) -> Result<FlowPage> {
        self.flow_store()?.flow_list(params).await
    }
    async fn flow_add_nodes(&self, id: &FlowId, spec: &FlowSpec) -> Result<Flow> {
        self.flow_store()?.flow_add_nodes(id, spec).await
    }
    async fn flow_cancel(&self, id: &FlowId) -> Result<Flow> {
        self.flow_store()?.flow_cancel(id).await
    }
    fn due_hints(&self) -> Option<broadcast::Receiver<DueHint>> {
        self.events.then(|| self.store.due_hints()).flatten()
    }
    fn events(&self) -> Option<broadcast::Receiver<weft_core::StoreEvent>> {
        self.events.then(|| self.store.events()).flatten()
    }
}
