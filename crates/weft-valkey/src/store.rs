//! `ValkeyStore`: the `Store` trait as one `FCALL` per operation.
//!
//! Definitions: a store handle holds one multiplexed connection (a
//! `ConnectionManager`, which reconnects with exponential backoff) shared by
//! its clones, the key layout, and `P`. Each operation checks what it can in
//! Rust (validation through `weft_core`, so errors match every other store),
//! then calls one library function on the operation's partition.
//!
//! Invariants: no operation touches two partitions in one call; the store's
//! time is Valkey's `TIME`, read inside the function; a reply the client
//! cannot parse is `internal`, a server it cannot reach is `unavailable`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Value};
use tokio::sync::{broadcast, watch};
use weft_core::machine::{self, MachineConfig};
use weft_core::{
    partition_for_key, ClaimParams, DueHint, Error, Execution, ExecutionId, LeaseEpoch,
    PartitionCount, PartitionId, Result, State, StoreEvent, SubmitParams, Submitted, Task,
};

use crate::codec::{self, Fields, Refusal};
use crate::config::{ValkeyConfig, RUN_AT_MS_MAX};
use crate::keys::Keys;
use crate::{hints, library};

/// Reconnect attempts per failed command before it fails `unavailable`.
const RECONNECT_RETRIES: usize = 6;
/// Longest pause between reconnect attempts, in ms.
const RECONNECT_DELAY_MAX_MS: u64 = 2_000;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one reply may take; audits of huge partitions are the slowest.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a submit retries after an id collision (same ms and random).
const SUBMIT_COLLISION_RETRIES: u32 = 3;

/// Most items one `weft_submit_many` or `weft_complete_many` call takes, so
/// one call never holds the server for long.
const BATCH_CHUNK_MAX: usize = 100;
/// Ids `weft_list` examines per call before handing back a cursor.
pub(crate) const LIST_SCAN_BUDGET: u32 = 5_000;

/// Where a list scan starts: the listing function, the cursor it continues
/// from, and the cursor's partition.
pub(crate) struct PartitionScan<'a> {
    /// `weft_list` or `weft_flow_list`.
    pub function: &'a str,
    /// The previous page's last id.
    pub cursor: Option<&'a str>,
    /// The partition to start at.
    pub start: u16,
}

pub(crate) struct Inner {
    pub(crate) conn: ConnectionManager,
    pub(crate) keys: Keys,
    pub(crate) count: PartitionCount,
    pub(crate) machine: MachineConfig,
    pub(crate) hints: broadcast::Sender<DueHint>,
    pub(crate) events: broadcast::Sender<StoreEvent>,
    /// Dropping it stops the hint listener.
    _stop: watch::Sender<()>,
}

/// Weft's Valkey store. Clones share one multiplexed connection.
#[derive(Clone)]
pub struct ValkeyStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ValkeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyStore")
            .field("partitions", &self.inner.count.get())
            .field("engine_root", &self.inner.keys.engine())
            .finish_non_exhaustive()
    }
}

fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_exponent_base(2)
        .set_factor(50)
        .set_max_delay(RECONNECT_DELAY_MAX_MS)
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

impl ValkeyStore {
    /// Reads up to `limit + 1` items (one past the page says whether another
    /// exists) with a listing function, partition after partition in id
    /// order, each partition in `LIST_SCAN_BUDGET`-bounded calls; `filters`
    /// follow the function's cursor, count and budget arguments.
    pub(crate) async fn scan<T>(
        &self,
        scan: &PartitionScan<'_>,
        limit: u32,
        filters: &[&str],
        decode: fn(&redis::Value) -> Result<T>,
    ) -> Result<Vec<T>> {
        let wanted = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut items = Vec::new();
        for p in scan.start..self.inner.count.get() {
            let mut after = scan.cursor.unwrap_or_default().to_owned();
            loop {
                let mut cmd = self.call(scan.function, PartitionId(p));
                cmd.arg(&after)
                    .arg(wanted - items.len())
                    .arg(LIST_SCAN_BUDGET);
                for filter in filters {
                    cmd.arg(*filter);
                }
                let reply = codec::status(self.run(&cmd).await?)?
                    .map_err(|r| Error::Internal(format!("{}: {r:?}", scan.function)))?;
                let [last, done, found] = &reply[..] else {
                    return Err(Error::Internal(format!(
                        "a malformed {} reply",
                        scan.function
                    )));
                };
                for value in codec::array(found)? {
                    items.push(decode(value)?);
                }
                if items.len() >= wanted {
                    return Ok(items);
                }
                if codec::text(done)? == "1" {
                    break;
                }
                after = codec::text(last)?;
            }
        }
        Ok(items)
    }

    /// Connects, loads the Lua library if the server lacks this version, and
    /// records `P` on first use.
    ///
    /// Fails with `invalid_argument` on a bad URL or configuration, or when
    /// the store was initialised with another partition count; `conflict`
    /// when the server runs a newer library than this client or lacks
    /// Functions; `unavailable` when the server cannot be reached.
    pub async fn connect(config: ValkeyConfig) -> Result<Self> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::invalid("url", e.to_string()))?;
        let mut conn = client
            .get_connection_manager_with_config(connection_config())
            .await
            .map_err(|e| library::unavailable(&e))?;
        library::ensure(&mut conn).await?;
        let count = init_partitions(&mut conn, &config).await?;
        let keys = Keys::new(&config.key_prefix, count);
        let (hints, _) = broadcast::channel(hints::HINT_BUFFER);
        let (events, _) = broadcast::channel(hints::HINT_BUFFER);
        let (stop, stopped) = watch::channel(());
        let listener = hints::Listener {
            client,
            due_channel: keys.due_channel().to_owned(),
            events_channel: keys.events_channel().to_owned(),
            count,
            hints: hints.clone(),
            events: events.clone(),
        };
        tokio::spawn(listener.run(stopped));
        tracing::debug!(
            partitions = count.get(),
            prefix = config.key_prefix,
            "connected valkey store"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                keys,
                count,
                machine: config.machine,
                hints,
                events,
                _stop: stop,
            }),
        })
    }

    /// The key layout of this store.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// An `FCALL` of `function` on `partition`, with the call header.
    pub(crate) fn call(&self, function: &str, partition: PartitionId) -> Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(function)
            .arg(1)
            .arg(self.inner.keys.root(partition))
            .arg(self.inner.machine.retention_ms)
            .arg(self.inner.keys.prefix())
            .arg(partition.0);
        cmd
    }

    /// Runs one command; reloads the library once if the server lost it.
    pub(crate) async fn run(&self, cmd: &Cmd) -> Result<Value> {
        let mut conn = self.inner.conn.clone();
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(value) => Ok(value),
            Err(err) if library::is_missing_function(&err) => {
                tracing::info!("weft library missing on the server; reloading");
                library::ensure(&mut conn).await?;
                cmd.query_async(&mut conn).await.map_err(|e| classify(&e))
            }
            Err(err) => Err(classify(&err)),
        }
    }

    /// Runs a pipeline of commands; reloads the library once if needed.
    pub(crate) async fn run_pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>> {
        let mut conn = self.inner.conn.clone();
        match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Ok(values) => Ok(values),
            Err(err) if library::is_missing_function(&err) => {
                library::ensure(&mut conn).await?;
                pipe.query_async(&mut conn).await.map_err(|e| classify(&e))
            }
            Err(err) => Err(classify(&err)),
        }
    }

    /// Runs a call about one execution and maps its refusals; `refused` is
    /// the error Rust already decided on, if the library gets that far.
    pub(crate) async fn run_on(
        &self,
        cmd: &Cmd,
        id: &ExecutionId,
        epoch: LeaseEpoch,
        refused: Option<Error>,
    ) -> Result<Fields> {
        match codec::status(self.run(cmd).await?)? {
            Ok(fields) => Ok(fields),
            Err(refusal) => Err(codec::refusal_error(refusal, id, epoch, refused)),
        }
    }

    /// `not_found` for ids of partitions this store does not have.
    pub(crate) fn check_id(&self, id: &ExecutionId) -> Result<()> {
        if self.inner.count.contains(id.partition()) {
            Ok(())
        } else {
            Err(Error::NotFound {
                what: "execution",
                id: id.to_string(),
            })
        }
    }

    /// `invalid_argument` for partitions this store does not have.
    pub(crate) fn check_partition(&self, partition: PartitionId) -> Result<()> {
        if self.inner.count.contains(partition) {
            Ok(())
        } else {
            Err(Error::invalid(
                "partition",
                format!(
                    "must be < {} (the store's partition count), got {partition}",
                    self.inner.count.get()
                ),
            ))
        }
    }

    /// The execution a mutating call replied with (`[outcome, fields]`).
    pub(crate) fn execution_of(fields: &Fields) -> Result<Execution> {
        let value = fields
            .get(1)
            .ok_or_else(|| Error::Internal("a reply without its execution".into()))?;
        codec::decode_execution(value)
    }

    /// The state a brief reply (`[outcome, state]`) names.
    pub(crate) fn state_of(fields: &[Value]) -> Result<State> {
        let value = fields
            .get(1)
            .ok_or_else(|| Error::Internal("a reply without its state".into()))?;
        State::parse(&codec::text(value)?)
    }

    /// Validates `params` as the state machine does and returns the draft
    /// execution (every field that does not depend on time) and the fields
    /// `weft_submit` stores from it.
    fn submit_draft(
        &self,
        params: &SubmitParams,
        partition: PartitionId,
    ) -> Result<(Execution, Vec<(&'static str, String)>)> {
        // The state machine validates and fills every default; the fields
        // that depend on time are computed again by the library.
        let draft = machine::submit(
            ExecutionId::mint(partition, 0),
            params,
            0,
            &self.inner.machine,
        )?
        .execution
        .ok_or_else(|| Error::Internal("submit created no execution".into()))?;
        if params.run_at_ms.is_some_and(|at| at > RUN_AT_MS_MAX) {
            return Err(Error::invalid(
                "run_at",
                format!("must be at most {RUN_AT_MS_MAX} ms"),
            ));
        }
        let fields = codec::submit_fields(&draft)?;
        Ok((draft, fields))
    }

    /// The partition of a new execution: its key's, or `otherwise`.
    fn submit_partition(&self, params: &SubmitParams, otherwise: PartitionId) -> PartitionId {
        match &params.idempotency_key {
            Some(key) => partition_for_key("", key, self.inner.count),
            None => otherwise,
        }
    }

    /// Creates an execution (see `Store::execution_submit`).
    pub(crate) async fn submit(&self, params: &SubmitParams) -> Result<Submitted> {
        let partition = self.submit_partition(params, self.inner.count.random());
        let (mut draft, fields) = self.submit_draft(params, partition)?;
        for _ in 0..SUBMIT_COLLISION_RETRIES {
            let mut cmd = self.call("weft_submit", partition);
            cmd.arg(format!("ex_{:04x}", partition.0));
            submit_item_args(&mut cmd, params, &fields);
            match decode_submit_reply(self.run(&cmd).await?, draft)? {
                Ok(submitted) => return Ok(submitted),
                Err(again) => draft = again,
            }
        }
        Err(Error::Internal("submit kept minting ids that exist".into()))
    }

    /// Runs `function` once per partition of `groups` and chunk of at most
    /// `BATCH_CHUNK_MAX` of its items, all in one pipeline; `args` appends a
    /// call's arguments after the header. Returns each chunk with its items'
    /// replies, in order (the function replies `['ok', [reply…]]`).
    pub(crate) async fn run_batches<'a, T>(
        &self,
        function: &str,
        groups: &'a BTreeMap<PartitionId, Vec<T>>,
        args: impl Fn(&mut Cmd, PartitionId, &[T]),
    ) -> Result<Vec<(&'a [T], Vec<Value>)>> {
        let mut pipe = redis::pipe();
        let mut chunks = Vec::new();
        for (partition, items) in groups {
            for chunk in items.chunks(BATCH_CHUNK_MAX) {
                let mut cmd = self.call(function, *partition);
                args(&mut cmd, *partition, chunk);
                pipe.add_command(cmd);
                chunks.push(chunk);
            }
        }
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.run_pipeline(&pipe).await?;
        chunks
            .into_iter()
            .zip(replies)
            .map(|(chunk, reply)| {
                let replies = codec::status(reply)?
                    .map_err(|r| Error::Internal(format!("{function} refused: {r:?}")))?;
                match replies.into_iter().next() {
                    Some(Value::Array(items)) if items.len() == chunk.len() => Ok((chunk, items)),
                    other => Err(Error::Internal(format!(
                        "{function} replied {other:?} for {} items",
                        chunk.len()
                    ))),
                }
            })
            .collect()
    }

    /// Creates several executions (see `Store::execution_submit_many`): the
    /// items without an idempotency key share one random partition, the
    /// others go to their key's; one `weft_submit_many` per partition and
    /// chunk of `BATCH_CHUNK_MAX`, all in one pipeline.
    pub(crate) async fn submit_many(&self, params: &[SubmitParams]) -> Result<Vec<Submitted>> {
        weft_core::check_batch("executions", params.len())?;
        let shared = self.inner.count.random();
        let mut drafts = Vec::with_capacity(params.len());
        for (index, item) in params.iter().enumerate() {
            let partition = self.submit_partition(item, shared);
            let (draft, fields) = self
                .submit_draft(item, partition)
                .map_err(|e| e.at_item("executions", index))?;
            drafts.push((partition, Some(draft), fields));
        }
        let mut out: Vec<Option<Submitted>> = vec![None; params.len()];
        let mut pending: Vec<usize> = (0..params.len()).collect();
        for _ in 0..SUBMIT_COLLISION_RETRIES {
            if pending.is_empty() {
                break;
            }
            let mut groups: BTreeMap<PartitionId, Vec<usize>> = BTreeMap::new();
            for &index in &pending {
                groups.entry(drafts[index].0).or_default().push(index);
            }
            let batches = self
                .run_batches("weft_submit_many", &groups, |cmd, partition, chunk| {
                    cmd.arg(format!("ex_{:04x}", partition.0)).arg(chunk.len());
                    for &index in chunk {
                        let fields = &drafts[index].2;
                        cmd.arg(fields.len());
                        submit_item_args(cmd, &params[index], fields);
                    }
                })
                .await?;
            let mut collided = Vec::new();
            for (chunk, items) in batches {
                for (item, &index) in items.into_iter().zip(chunk) {
                    let draft = drafts[index]
                        .1
                        .take()
                        .ok_or_else(|| Error::Internal("an item submitted twice".into()))?;
                    match decode_submit_reply(item, draft)? {
                        Ok(submitted) => out[index] = Some(submitted),
                        Err(again) => {
                            drafts[index].1 = Some(again);
                            collided.push(index);
                        }
                    }
                }
            }
            pending = collided;
        }
        out.into_iter()
            .map(|s| s.ok_or_else(|| Error::Internal("submit kept minting ids that exist".into())))
            .collect()
    }

    /// The `weft_claim` call for one partition; `claim` must be normalized.
    pub(crate) fn claim_cmd(&self, partition: PartitionId, claim: &ClaimParams) -> Cmd {
        let mut cmd = self.call("weft_claim", partition);
        cmd.arg(&claim.worker_id)
            .arg(claim.lease_ms)
            .arg(claim.max)
            .arg(claim.capabilities.len())
            .arg(&claim.capabilities)
            .arg(claim.lanes.len())
            .arg(&claim.lanes);
        for _ in 0..claim.max {
            cmd.arg(weft_core::LeaseId::random().0);
        }
        cmd
    }

    /// Claims on several partitions in one round trip: one `weft_claim` per
    /// partition, pipelined, each for up to `params.max`. Returns every task
    /// taken, which may be up to `params.max` per partition.
    pub async fn execution_claim_pipelined(
        &self,
        partitions: &[PartitionId],
        params: &ClaimParams,
    ) -> Result<Vec<Task>> {
        let claim = params.normalized()?;
        let mut pipe = redis::pipe();
        for partition in partitions {
            self.check_partition(*partition)?;
            pipe.add_command(self.claim_cmd(*partition, &claim));
        }
        let mut tasks = Vec::new();
        for reply in self.run_pipeline(&pipe).await? {
            tasks.extend(decode_tasks(reply)?);
        }
        Ok(tasks)
    }

    /// Claims up to `params.max` across every partition in two round trips
    /// whatever `P` is: one pipelined read of each partition's claimable
    /// count for these lanes, then one pipelined claim on the partitions
    /// that have work, each asked for what it holds (in partition order
    /// from `start`) until `max` is covered. Concurrent claimers may leave
    /// it short; callers sweep again as with `claim_across`.
    pub async fn execution_claim_across(
        &self,
        params: &ClaimParams,
        start: PartitionId,
    ) -> Result<Vec<Task>> {
        let claim = params.normalized()?;
        let count = self.inner.count.get();
        let order: Vec<PartitionId> = (0..count)
            .map(|i| PartitionId((start.0 % count + i) % count))
            .collect();
        let mut pipe = redis::pipe();
        for partition in &order {
            let mut cmd = self.call("weft_claimable", *partition);
            cmd.arg(claim.max)
                .arg(claim.capabilities.len())
                .arg(&claim.capabilities)
                .arg(claim.lanes.len())
                .arg(&claim.lanes);
            pipe.add_command(cmd);
        }
        let mut wanted = claim.max;
        let mut claims = redis::pipe();
        for (partition, reply) in order.iter().zip(self.run_pipeline(&pipe).await?) {
            let fields = codec::status(reply)?.map_err(|r| Error::Internal(format!("{r:?}")))?;
            let here = fields.first().map(codec::int).transpose()?.unwrap_or(0);
            let take = u32::try_from(here).unwrap_or(0).min(wanted);
            if take > 0 {
                let part = ClaimParams {
                    max: take,
                    ..claim.clone()
                };
                claims.add_command(self.claim_cmd(*partition, &part));
                wanted -= take;
            }
        }
        let mut tasks = Vec::new();
        if wanted < claim.max {
            for reply in self.run_pipeline(&claims).await? {
                tasks.extend(decode_tasks(reply)?);
            }
        }
        Ok(tasks)
    }
}

/// A server error as Weft's error: a Lua error is a bug (`internal`),
/// anything else (connection, timeout, `LOADING`, `READONLY`) `unavailable`.
fn classify(err: &redis::RedisError) -> Error {
    let text = err.to_string();
    if text.contains("user_function") || text.contains("Error running script") {
        Error::Internal(format!("weft library: {text}"))
    } else {
        library::unavailable(err)
    }
}

/// Records `P` at first use; refuses a configured count that differs.
async fn init_partitions(
    conn: &mut ConnectionManager,
    config: &ValkeyConfig,
) -> Result<PartitionCount> {
    let wanted = config.partitions.unwrap_or_default();
    let reply: Value = redis::cmd("FCALL")
        .arg("weft_init")
        .arg(1)
        .arg(Keys::engine_root(&config.key_prefix))
        .arg(wanted.get())
        .query_async(conn)
        .await
        .map_err(|e| classify(&e))?;
    let fields = codec::status(reply)?.map_err(|r| Error::Internal(format!("init: {r:?}")))?;
    let recorded = fields.first().map(codec::int).transpose()?.unwrap_or(0);
    let recorded = u16::try_from(recorded)
        .map_err(|_| Error::Internal(format!("recorded partition count {recorded}")))
        .and_then(PartitionCount::new)?;
    match config.partitions {
        Some(p) if p != recorded => Err(Error::invalid(
            "partitions",
            format!(
                "the store under prefix {:?} was initialised with {} partitions, configured {}; \
                 P is fixed at first initialisation",
                config.key_prefix,
                recorded.get(),
                p.get()
            ),
        )),
        _ => Ok(recorded),
    }
}

/// The tasks of one `weft_claim` reply.
/// Appends one item of `weft_submit` / `weft_submit_many`: its random id
/// digits, delay, run_at, idempotency key and stored fields.
fn submit_item_args(cmd: &mut Cmd, params: &SubmitParams, fields: &[(&'static str, String)]) {
    cmd.arg(format!("{:08x}", fastrand::u32(..)))
        .arg(params.delay_ms.map(|d| d.to_string()).unwrap_or_default())
        .arg(params.run_at_ms.map(|d| d.to_string()).unwrap_or_default())
        .arg(params.idempotency_key.as_deref().unwrap_or_default());
    for (field, value) in fields {
        cmd.arg(*field).arg(value);
    }
}

/// One submit's reply: the execution (`draft` overlaid with what the
/// library set, or the existing one), or the draft back when its id was
/// taken (to try again with other digits).
fn decode_submit_reply(
    reply: Value,
    draft: Execution,
) -> Result<std::result::Result<Submitted, Execution>> {
    match codec::status(reply)? {
        Ok(reply) => {
            let created = reply.first().map(codec::text).transpose()?;
            let created = created.as_deref() == Some("created");
            let execution = if created {
                let set = reply
                    .get(1)
                    .ok_or_else(|| Error::Internal("a reply without its execution".into()))?;
                codec::decode_submitted(draft, set)?
            } else {
                ValkeyStore::execution_of(&reply)?
            };
            Ok(Ok(Submitted { execution, created }))
        }
        Err(Refusal { kind, .. }) if kind == "collision" => Ok(Err(draft)),
        Err(refusal) => Err(Error::Internal(format!("submit refused: {refusal:?}"))),
    }
}

pub(crate) fn decode_tasks(reply: Value) -> Result<Vec<Task>> {
    let fields = codec::status(reply)?.map_err(|r| Error::Internal(format!("claim: {r:?}")))?;
    let Some(list) = fields.first() else {
        return Ok(Vec::new());
    };
    codec::array(list)?
        .iter()
        .map(|value| codec::decode_task(codec::field_map(value)?))
        .collect()
}
