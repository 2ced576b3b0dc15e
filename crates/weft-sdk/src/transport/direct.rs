//! [`DirectTransport`]: a [`Store`] linked into this process, no server.
//!
//! Definitions: claims sweep every partition with `claim_across`, starting
//! at a random one so that concurrent workers spread out. A claim that finds
//! nothing and may wait sleeps on the store's `Ready` events for one of its
//! lanes; `wait` sleeps on `Ended` events for its execution, `flow_wait` on
//! `FlowEnded` events for its flow. Events may be lost, so all of them also
//! re-read the store every `poll_interval`.
//!
//! Invariants: a listener subscribes before its first read, so an event sent
//! between that read and the sleep still wakes it; no loop runs past its
//! deadline by more than one store call. Each claim sweep runs in a task of
//! its own, so a caller that drops `claim` mid-sweep (a worker shutting
//! down) strands nothing: the sweep finishes and releases what it took.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;
use weft_api::{
    lease_ref, random_signing_key, time, AddNodesRequest, AttemptView, ClaimRequest,
    CompleteRequest, ExecutionSignalRequest, ExecutionView, FailRequest, FlowRequest, FlowView,
    HeartbeatRequest, HeartbeatResponse, LaneView, Page, ReleaseRequest, SignalRequest,
    SubmitBatchRequest, SubmitRequest, SuspendRequest, SuspendResponse, TaskView,
    WaitpointTokenView, CLAIM_WAIT_MS_MAX,
};
use weft_core::token::Keyring;
use weft_core::{
    claim_waiting, CancelParams, ClaimParams, Clock, CompleteParams, Error, ErrorInfo, ExecutionId,
    FailParams, FlowId, FlowListParams, HeartbeatParams, ListParams, ReadyBoard, ReleaseParams,
    Result, SignalParams, State, Store, StoreEvent, SuspendParams, SystemClock,
};

use super::{FlowListQuery, FlowSubmission, ListQuery, Submission, Transport, LIST_LIMIT_DEFAULT};

/// How often a waiting claim or `wait` re-reads the store when no event
/// arrives: the fallback for lost events and stores that send none.
pub const DIRECT_POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// Talks to a store in this process. Cheap to clone.
///
/// Claims go to the partitions the store's `Ready` events name, so one claim
/// is one store call; a claim that may wait sleeps until an event marks a
/// partition of its lanes, and sweeps every partition when none has for
/// [`DirectTransport::with_poll_interval`] (lost events, work only some
/// capabilities can take). `wait` sleeps on `Ended` events for its
/// execution and re-reads the store as often.
///
/// Delays, retries after backoff and lapsed leases are timers: some process
/// must run a `weft_engine::Engine` on the same store for them to fire.
///
/// Suspends mint waitpoint tokens with a keyring, and token signals verify
/// with it: an ephemeral one unless [`DirectTransport::with_keyring`] gives
/// the keyring a server on the same store uses (then tokens work through
/// either).
#[derive(Clone)]
pub struct DirectTransport {
    store: Arc<dyn Store>,
    /// Made at the first claim (it needs the runtime); shared by clones.
    board: Arc<OnceLock<Arc<ReadyBoard>>>,
    poll_interval: Duration,
    /// `None` only when the system had no randomness for an ephemeral key;
    /// suspends and token signals then answer `internal`.
    keyring: Option<Arc<Keyring>>,
}

impl std::fmt::Debug for DirectTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTransport")
            .field("partitions", &self.store.partition_count().get())
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

type Events = Option<broadcast::Receiver<StoreEvent>>;

impl DirectTransport {
    /// A transport over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let keyring = match random_signing_key(SystemClock.now_ms()) {
            Ok(key) => Some(Arc::new(Keyring::new(key))),
            Err(error) => {
                tracing::warn!(%error, "no ephemeral signing key; suspends will fail");
                None
            }
        };
        Self {
            store,
            board: Arc::new(OnceLock::new()),
            poll_interval: DIRECT_POLL_INTERVAL_DEFAULT,
            keyring,
        }
    }

    /// Signs and verifies waitpoint tokens with `keyring` instead of an
    /// ephemeral key.
    #[must_use]
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(Arc::new(keyring));
        self
    }

    fn keyring(&self) -> Result<&Keyring> {
        self.keyring
            .as_deref()
            .ok_or_else(|| Error::Internal("this transport has no signing key".into()))
    }

    /// Re-reads the store this often when no event arrives; see
    /// [`DIRECT_POLL_INTERVAL_DEFAULT`]. Zero is taken as one millisecond.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The next re-read: the poll interval from now, but never past `deadline`.
    fn next_poll(&self, deadline: Instant) -> Instant {
        deadline.min(Instant::now() + self.poll_interval)
    }
}

/// Sleeps until `wake` accepts an event, events were lost, or `until`.
async fn sleep_on(events: &mut Events, until: Instant, wake: impl Fn(&StoreEvent) -> bool) {
    let Some(receiver) = events.as_mut() else {
        tokio::time::sleep_until(until).await;
        return;
    };
    loop {
        match tokio::time::timeout_at(until, receiver.recv()).await {
            Err(_elapsed) => return,
            Ok(Ok(event)) if wake(&event) => return,
            Ok(Ok(_)) => {}
            // Missed events may include ours: read the store again.
            Ok(Err(RecvError::Lagged(_))) => return,
            Ok(Err(RecvError::Closed)) => {
                *events = None;
                tokio::time::sleep_until(until).await;
                return;
            }
        }
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0).unsigned_abs())
}

fn parse_id(id: &str) -> Result<ExecutionId> {
    ExecutionId::parse(id)
}

#[async_trait]
impl Transport for DirectTransport {
    async fn submit(&self, request: &SubmitRequest) -> Result<Submission> {
        let params = request.clone().into_params()?;
        let submitted = self.store.execution_submit(&params).await?;
        Ok(Submission {
            execution: ExecutionView::from(&submitted.execution),
            created: submitted.created,
        })
    }

    async fn submit_many(&self, requests: &[SubmitRequest]) -> Result<Vec<Submission>> {
        let batch = SubmitBatchRequest {
            executions: requests.to_vec(),
        };
        let params = batch.into_params()?;
        let submitted = self.store.execution_submit_many(&params).await?;
        Ok(submitted
            .iter()
            .map(|s| Submission {
                execution: ExecutionView::from(&s.execution),
                created: s.created,
            })
            .collect())
    }

    async fn get(&self, id: &str) -> Result<ExecutionView> {
        let execution = self.store.execution_get(&parse_id(id)?).await?;
        Ok(ExecutionView::from(&execution))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<ExecutionView>> {
        let params = ListParams {
            lane: query.lane.clone(),
            state: query.state,
            kind: query.kind.clone(),
            flow_id: query.flow_id.clone(),
            limit: query.limit.unwrap_or(LIST_LIMIT_DEFAULT),
            cursor: query.cursor.clone(),
        };
        let page = self.store.execution_list(&params).await?;
        Ok(Page {
            items: page.items.iter().map(ExecutionView::from).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<ExecutionView> {
        let params = CancelParams {
            execution_id: parse_id(id)?,
            reason: reason.map(str::to_owned),
        };
        let execution = self.store.execution_cancel(&params).await?;
        Ok(ExecutionView::from(&execution))
    }

    async fn replay(&self, id: &str) -> Result<ExecutionView> {
        let execution = self.store.execution_replay(&parse_id(id)?).await?;
        Ok(ExecutionView::from(&execution))
    }

    async fn wait(&self, id: &str, timeout: Duration) -> Result<ExecutionView> {
        let id = parse_id(id)?;
        let deadline = Instant::now() + timeout;
        let mut events = self.store.events();
        loop {
            let execution = self.store.execution_get(&id).await?;
            if execution.state.is_terminal() || Instant::now() >= deadline {
                return Ok(ExecutionView::from(&execution));
            }
            let until = self.next_poll(deadline);
            sleep_on(
                &mut events,
                until,
                |event| matches!(event, StoreEvent::Ended { id: ended, .. } if *ended == id),
            )
            .await;
        }
    }

    async fn lanes(&self) -> Result<Vec<LaneView>> {
        self.store.lane_depths().await
    }

    async fn attempts(&self, id: &str) -> Result<Vec<AttemptView>> {
        let attempts = self.store.attempt_list(&parse_id(id)?).await?;
        Ok(attempts.iter().map(AttemptView::from).collect())
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<TaskView>> {
        if !(0..=CLAIM_WAIT_MS_MAX).contains(&request.wait_ms) {
            return Err(Error::invalid(
                "wait_ms",
                format!("must be 0..={CLAIM_WAIT_MS_MAX}, got {}", request.wait_ms),
            ));
        }
        let params = ClaimParams {
            worker_id: request.worker_id.clone(),
            lanes: request.lanes.clone(),
            capabilities: request.capabilities.clone(),
            max: request.max,
            lease_ms: request.lease_ms,
        }
        .normalized()?;
        let board = self
            .board
            .get_or_init(|| ReadyBoard::follow(self.store.as_ref()));
        let wait = millis(request.wait_ms);
        let tasks = claim_waiting(&self.store, board, &params, wait, self.poll_interval).await?;
        Ok(tasks.iter().map(TaskView::from).collect())
    }

    async fn heartbeat(&self, id: &str, request: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        let params = HeartbeatParams {
            execution_id: parse_id(id)?,
            lease: lease_ref(&request.lease_id, request.epoch),
            lease_ms: request.lease_ms,
        };
        let reply = self.store.execution_heartbeat(&params).await?;
        Ok(HeartbeatResponse {
            expires_at: time::format_ms(reply.expires_at_ms),
            cancel_requested: reply.cancel_requested,
        })
    }

    async fn complete(&self, id: &str, request: &CompleteRequest) -> Result<ExecutionView> {
        let execution = self
            .store
            .execution_complete(&complete_params(id, request)?)
            .await?;
        Ok(ExecutionView::from(&execution))
    }

    async fn fail(&self, id: &str, request: &FailRequest) -> Result<ExecutionView> {
        let execution = self
            .store
            .execution_fail(&fail_params(id, request)?)
            .await?;
        Ok(ExecutionView::from(&execution))
    }

    async fn complete_quietly(&self, id: &str, request: &CompleteRequest) -> Result<()> {
        let params = complete_params(id, request)?;
        self.store.execution_complete_brief(&params).await.map(drop)
    }

    async fn complete_many_quietly(
        &self,
        items: &[(String, CompleteRequest)],
    ) -> Result<Vec<Result<()>>> {
        // An id that does not parse is that item's error; the rest go to
        // the store in one call.
        let mut out: Vec<Option<Result<()>>> = Vec::with_capacity(items.len());
        let mut params = Vec::with_capacity(items.len());
        for (id, request) in items {
            match complete_params(id, request) {
                Ok(p) => {
                    params.push(p);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let mut written = if params.is_empty() {
            Vec::new()
        } else {
            self.store.execution_complete_many(&params).await?
        }
        .into_iter();
        Ok(out
            .into_iter()
            .map(|slot| match slot {
                Some(refused) => refused,
                None => written
                    .next()
                    .unwrap_or_else(|| Err(Error::Internal("a completion went unanswered".into())))
                    .map(drop),
            })
            .collect())
    }

    async fn fail_quietly(&self, id: &str, request: &FailRequest) -> Result<()> {
        let params = fail_params(id, request)?;
        self.store.execution_fail_brief(&params).await.map(drop)
    }

    async fn release(&self, id: &str, request: &ReleaseRequest) -> Result<ExecutionView> {
        let params = ReleaseParams {
            execution_id: parse_id(id)?,
            lease: lease_ref(&request.lease_id, request.epoch),
        };
        let execution = self.store.execution_release(&params).await?;
        Ok(ExecutionView::from(&execution))
    }

    async fn suspend(&self, id: &str, request: &SuspendRequest) -> Result<SuspendResponse> {
        let params = SuspendParams {
            execution_id: parse_id(id)?,
            lease: lease_ref(&request.lease_id, request.epoch),
            spec: request.to_spec()?,
        };
        let keyring = self.keyring()?;
        let execution = self.store.execution_suspend(&params).await?;
        let tokens = keyring.tokens_for(&execution)?;
        let signals = (execution.state == State::Active).then(|| execution.resumed_signals.clone());
        Ok(SuspendResponse {
            execution: ExecutionView::from(&execution),
            waitpoints: tokens.iter().map(WaitpointTokenView::from).collect(),
            signals,
        })
    }

    async fn signal(&self, request: &SignalRequest) -> Result<ExecutionView> {
        let claims = self
            .keyring()?
            .verify(&request.token, SystemClock.now_ms())?;
        let params = SignalParams {
            execution_id: claims.execution_id,
            waitpoint: claims.waitpoint,
            payload: request.payload.clone(),
            seq: Some(claims.seq),
        };
        match self.store.execution_signal(&params).await {
            // As the server answers: a genuine token whose execution has
            // ended or is gone is used up.
            Err(Error::Conflict { .. } | Error::NotFound { .. }) => Err(Error::InvalidToken),
            other => Ok(ExecutionView::from(&other?)),
        }
    }

    async fn signal_execution(
        &self,
        id: &str,
        request: &ExecutionSignalRequest,
    ) -> Result<ExecutionView> {
        let params = SignalParams {
            execution_id: parse_id(id)?,
            waitpoint: request.waitpoint.clone(),
            payload: request.payload.clone(),
            seq: None,
        };
        let execution = self.store.execution_signal(&params).await?;
        Ok(ExecutionView::from(&execution))
    }

    fn describe(&self) -> String {
        format!(
            "direct store ({} partitions)",
            self.store.partition_count().get()
        )
    }

    async fn flow_create(&self, request: &FlowRequest) -> Result<FlowSubmission> {
        let spec = request.clone().into_spec()?;
        let created = self.store.flow_create(&spec).await?;
        Ok(FlowSubmission {
            flow: FlowView::from(&created.flow),
            created: created.created,
        })
    }

    async fn flow_get(&self, id: &str) -> Result<FlowView> {
        let flow = self.store.flow_get(&FlowId::parse(id)?).await?;
        Ok(FlowView::from(&flow))
    }

    async fn flow_list(&self, query: &FlowListQuery) -> Result<Page<FlowView>> {
        let params = FlowListParams {
            state: query.state,
            limit: query.limit.unwrap_or(LIST_LIMIT_DEFAULT),
            cursor: query.cursor.clone(),
        };
        let page = self.store.flow_list(&params).await?;
        Ok(Page {
            items: page.items.iter().map(FlowView::from).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn flow_wait(&self, id: &str, timeout: Duration) -> Result<FlowView> {
        let id = FlowId::parse(id)?;
        let deadline = Instant::now() + timeout;
        let mut events = self.store.events();
        loop {
            let flow = self.store.flow_get(&id).await?;
            if flow.state.is_terminal() || Instant::now() >= deadline {
                return Ok(FlowView::from(&flow));
            }
            let until = self.next_poll(deadline);
            sleep_on(
                &mut events,
                until,
                |event| matches!(event, StoreEvent::FlowEnded { id: ended, .. } if *ended == id),
            )
            .await;
        }
    }

    async fn flow_add_nodes(&self, id: &str, request: &AddNodesRequest) -> Result<FlowView> {
        let id = FlowId::parse(id)?;
        let spec = request.clone().into_spec()?;
        let flow = self.store.flow_add_nodes(&id, &spec).await?;
        Ok(FlowView::from(&flow))
    }

    async fn flow_cancel(&self, id: &str) -> Result<FlowView> {
        let flow = self.store.flow_cancel(&FlowId::parse(id)?).await?;
        Ok(FlowView::from(&flow))
    }
}

fn complete_params(id: &str, request: &CompleteRequest) -> Result<CompleteParams> {
    Ok(CompleteParams {
        execution_id: parse_id(id)?,
        lease: lease_ref(&request.lease_id, request.epoch),
        result: request.result.clone(),
    })
}

fn fail_params(id: &str, request: &FailRequest) -> Result<FailParams> {
    Ok(FailParams {
        execution_id: parse_id(id)?,
        lease: lease_ref(&request.lease_id, request.epoch),
        error: ErrorInfo {
            message: request.error.message.clone(),
            kind: request.error.kind.clone(),
        },
        retryable: request.error.retryable.unwrap_or(true),
    })
}
