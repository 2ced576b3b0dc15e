//! The `Store` trait over `ValkeyStore`'s calls.
//!
//! Definitions: each method builds the argument list its library function
//! documents (see `lua/execution.lua`, `lua/partition.lua`,
//! `lua/engine.lua`) and decodes the reply.
//!
//! Invariants: validation that needs no data happens here, with the same
//! functions and field names as every other store; everything that reads
//! state happens in the one call.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::broadcast;
use weft_core::flow::{Flow, FlowSpec};
use weft_core::waitpoint::{check_waitpoint_name, SIGNALS_BUFFERED_MAX, TOKEN_TTL_MS_MAX};
use weft_core::{
    Attempt, AuditReport, CancelParams, ClaimParams, CompleteParams, DueHint, Error, Execution,
    ExecutionId, FailParams, FlowCreated, FlowId, FlowListParams, FlowPage, HeartbeatParams,
    HeartbeatReply, LaneDepth, LeaseEpoch, ListParams, Page, PartitionCount, PartitionId,
    PartitionOwner, RebalanceParams, ReconcileReport, ReleaseParams, Result, SignalParams, State,
    Store, StoreEvent, SubmitParams, Submitted, SuspendParams, Task, TickReport, LIST_LIMIT_MAX,
};

use crate::codec;
use crate::store::{decode_tasks, PartitionScan, ValkeyStore};

fn json(value: &serde_json::Value) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("json: {e}")))
}

impl ValkeyStore {
    /// `weft_complete`'s call and the state machine's refusal, if any (a
    /// result over the payload limit); `brief` asks for the outcome only.
    fn complete_cmd(
        &self,
        params: &CompleteParams,
        brief: bool,
    ) -> Result<(redis::Cmd, Option<Error>)> {
        let id = &params.execution_id;
        self.check_id(id)?;
        let (refused, result) = self.complete_result(params)?;
        let mut cmd = self.call("weft_complete", id.partition());
        cmd.arg(id.as_str())
            .arg(&params.lease.lease_id.0)
            .arg(params.lease.epoch.0)
            .arg(result)
            .arg(if refused.is_some() { "1" } else { "0" })
            .arg(if brief { "1" } else { "0" });
        Ok((cmd, refused))
    }

    /// Completes several attempts (see `Store::execution_complete_many`):
    /// one `weft_complete_many` per partition and chunk, all in one
    /// pipeline; an id of a partition this store lacks is `not_found`.
    async fn complete_many(&self, params: &[CompleteParams]) -> Result<Vec<Result<State>>> {
        weft_core::check_batch("completions", params.len())?;
        let mut out: Vec<Option<Result<State>>> = (0..params.len()).map(|_| None).collect();
        let mut refusals = Vec::with_capacity(params.len());
        let mut groups: BTreeMap<PartitionId, Vec<(usize, String)>> = BTreeMap::new();
        for (index, item) in params.iter().enumerate() {
            let (refused, result) = self.complete_result(item)?;
            refusals.push(refused);
            match self.check_id(&item.execution_id) {
                Ok(()) => groups
                    .entry(item.execution_id.partition())
                    .or_default()
                    .push((index, result)),
                Err(e) => out[index] = Some(Err(e)),
            }
        }
        let batches = self
            .run_batches("weft_complete_many", &groups, |cmd, _, chunk| {
                cmd.arg(chunk.len());
                for (index, result) in chunk {
                    let item = &params[*index];
                    cmd.arg(item.execution_id.as_str())
                        .arg(&item.lease.lease_id.0)
                        .arg(item.lease.epoch.0)
                        .arg(result)
                        .arg(if refusals[*index].is_some() { "1" } else { "0" });
                }
            })
            .await?;
        for (chunk, items) in batches {
            for (item, (index, _)) in items.into_iter().zip(chunk) {
                let p = &params[*index];
                out[*index] = Some(match codec::status(item)? {
                    Ok(fields) => Self::state_of(&fields),
                    Err(refusal) => Err(codec::refusal_error(
                        refusal,
                        &p.execution_id,
                        p.lease.epoch,
                        refusals[*index].take(),
                    )),
                });
            }
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| Error::Internal("a completion without its outcome".into())))
            .collect()
    }

    /// The state machine's refusal of a completion, if any (a result over
    /// the payload limit), and the result's JSON to ship (empty when
    /// refused: a refused result is never stored).
    fn complete_result(&self, params: &CompleteParams) -> Result<(Option<Error>, String)> {
        let bytes = weft_core::payload_bytes(&params.result);
        let max_bytes = self.inner.machine.payload_bytes_max;
        if bytes > max_bytes {
            return Ok((
                Some(Error::PayloadTooLarge { bytes, max_bytes }),
                String::new(),
            ));
        }
        Ok((None, json(&params.result)?))
    }

    /// `weft_fail`'s call and the state machine's refusal, if any (an error
    /// kind over its limit); `brief` asks for the outcome only.
    fn fail_cmd(&self, params: &FailParams, brief: bool) -> Result<(redis::Cmd, Option<Error>)> {
        let id = &params.execution_id;
        self.check_id(id)?;
        let kind_max = weft_core::KIND_LEN_MAX;
        let refused = params
            .error
            .kind
            .as_ref()
            .is_some_and(|k| k.len() > kind_max)
            .then(|| Error::invalid("error.kind", format!("must be at most {kind_max} bytes")));
        let error = params.error.clone().truncated();
        let error = serde_json::to_string(&error).map_err(|e| Error::Internal(e.to_string()))?;
        let mut cmd = self.call("weft_fail", id.partition());
        cmd.arg(id.as_str())
            .arg(&params.lease.lease_id.0)
            .arg(params.lease.epoch.0)
            .arg(error)
            .arg(if params.retryable { "1" } else { "0" })
            .arg(if refused.is_some() { "1" } else { "0" })
            .arg(if brief { "1" } else { "0" });
        Ok((cmd, refused))
    }

    /// One page of the list, scanning partitions in id order.
    async fn list(&self, params: &ListParams) -> Result<Page> {
        let start = params
            .cursor
            .as_deref()
            .and_then(|c| ExecutionId::parse(c).ok())
            .map_or(0, |id| id.partition().0);
        let filters = [
            params.lane.as_deref().unwrap_or(""),
            params.state.map_or("", |s| s.as_str()),
            params.kind.as_deref().unwrap_or(""),
            params.flow_id.as_deref().unwrap_or(""),
        ];
        let scan = PartitionScan {
            function: "weft_list",
            cursor: params.cursor.as_deref(),
            start,
        };
        let items = self
            .scan(&scan, params.limit, &filters, codec::decode_execution)
            .await?;
        let (items, next_cursor) = weft_core::page_cut(items, params.limit, |e| e.id.to_string());
        Ok(Page { items, next_cursor })
    }

    async fn depths(&self) -> Result<Vec<LaneDepth>> {
        let mut pipe = redis::pipe();
        for partition in self.inner.count.iter() {
            pipe.add_command(self.call("weft_depths", partition));
        }
        let mut depths = BTreeMap::new();
        for reply in self.run_pipeline(&pipe).await? {
            let fields =
                codec::status(reply)?.map_err(|r| Error::Internal(format!("depths: {r:?}")))?;
            if let Some(map) = fields.first() {
                codec::add_depths(&mut depths, &codec::field_map(map)?);
            }
        }
        Ok(depths.into_values().collect())
    }

    async fn tick(&self, partition: PartitionId, max: u32) -> Result<TickReport> {
        self.check_partition(partition)?;
        let mut cmd = self.call("weft_tick", partition);
        cmd.arg(max);
        let reply = codec::status(self.run(&cmd).await?)?
            .map_err(|r| Error::Internal(format!("tick: {r:?}")))?;
        let [applied, dropped, next_due, now] = &reply[..] else {
            return Err(Error::Internal("a malformed tick reply".into()));
        };
        let next_due = codec::text(next_due)?;
        Ok(TickReport {
            applied: u32::try_from(codec::int(applied)?).unwrap_or(u32::MAX),
            dropped: u32::try_from(codec::int(dropped)?).unwrap_or(u32::MAX),
            next_due_ms: if next_due.is_empty() {
                None
            } else {
                Some(
                    next_due
                        .parse()
                        .map_err(|_| Error::Internal(format!("tick: next due {next_due:?}")))?,
                )
            },
            now_ms: codec::int(now)?,
        })
    }

    async fn audit(&self, partition: PartitionId) -> Result<AuditReport> {
        self.check_partition(partition)?;
        let cmd = self.call("weft_audit", partition);
        let reply = codec::status(self.run(&cmd).await?)?
            .map_err(|r| Error::Internal(format!("audit: {r:?}")))?;
        let [executions, problems] = &reply[..] else {
            return Err(Error::Internal("a malformed audit reply".into()));
        };
        Ok(AuditReport {
            executions: u64::try_from(codec::int(executions)?).unwrap_or(0),
            problems: codec::array(problems)?
                .iter()
                .map(codec::text)
                .collect::<Result<_>>()?,
        })
    }

    async fn rebalance(&self, params: &RebalanceParams) -> Result<Vec<PartitionId>> {
        params.validate()?;
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("weft_rebalance")
            .arg(1)
            .arg(self.inner.keys.engine())
            .arg(&params.instance_id)
            .arg(params.lease_ms)
            .arg(if params.leaving { "1" } else { "0" })
            .arg(self.inner.count.get());
        let reply = codec::status(self.run(&cmd).await?)?
            .map_err(|r| Error::Internal(format!("rebalance: {r:?}")))?;
        let Some(list) = reply.first() else {
            return Ok(Vec::new());
        };
        codec::array(list)?
            .iter()
            .map(|v| {
                let p = codec::int(v)?;
                u16::try_from(p)
                    .map(PartitionId)
                    .map_err(|_| Error::Internal(format!("partition {p}")))
            })
            .collect()
    }

    async fn owners(&self) -> Result<Vec<PartitionOwner>> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("weft_owners").arg(1).arg(self.inner.keys.engine());
        let reply = codec::status(self.run(&cmd).await?)?
            .map_err(|r| Error::Internal(format!("owners: {r:?}")))?;
        let map = reply
            .first()
            .map(codec::field_map)
            .transpose()?
            .unwrap_or_default();
        let mut owners = Vec::with_capacity(map.len());
        for (partition, value) in map {
            let bad = || Error::Internal(format!("owner entry {partition} = {value:?}"));
            let partition: u16 = partition.parse().map_err(|_| bad())?;
            let (expires, instance) = value.split_once('|').ok_or_else(bad)?;
            owners.push(PartitionOwner {
                partition: PartitionId(partition),
                instance_id: instance.to_owned(),
                expires_at_ms: expires.parse().map_err(|_| bad())?,
            });
        }
        owners.sort_by_key(|o| o.partition);
        Ok(owners)
    }
}

#[async_trait]
impl Store for ValkeyStore {
    fn partition_count(&self) -> PartitionCount {
        self.inner.count
    }

    async fn now_ms(&self) -> Result<i64> {
        let value = self.run(&redis::cmd("TIME")).await?;
        let parts = codec::array(&value)?;
        let [secs, micros] = parts else {
            return Err(Error::Internal("a malformed TIME reply".into()));
        };
        Ok(codec::int(secs)? * 1000 + codec::int(micros)? / 1000)
    }

    async fn execution_submit(&self, params: &SubmitParams) -> Result<Submitted> {
        self.submit(params).await
    }

    async fn execution_claim_across(
        &self,
        params: &ClaimParams,
        start: PartitionId,
    ) -> Result<Vec<Task>> {
        ValkeyStore::execution_claim_across(self, params, start).await
    }

    async fn execution_claim(
        &self,
        partition: PartitionId,
        params: &ClaimParams,
    ) -> Result<Vec<Task>> {
        let claim = params.normalized()?;
        self.check_partition(partition)?;
        decode_tasks(self.run(&self.claim_cmd(partition, &claim)).await?)
    }

    async fn execution_heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatReply> {
        let id = &params.execution_id;
        self.check_id(id)?;
        // The state machine checks a new duration once the lease holds.
        let refused = params
            .lease_ms
            .and_then(|ms| weft_core::check_lease_ms(ms).err());
        let mut cmd = self.call("weft_heartbeat", id.partition());
        cmd.arg(id.as_str())
            .arg(&params.lease.lease_id.0)
            .arg(params.lease.epoch.0)
            .arg(params.lease_ms.map(|ms| ms.to_string()).unwrap_or_default())
            .arg(if refused.is_some() { "1" } else { "0" });
        let reply = self.run_on(&cmd, id, params.lease.epoch, refused).await?;
        let expires = reply
            .first()
            .ok_or_else(|| Error::Internal("a heartbeat reply without expiry".into()))?;
        Ok(HeartbeatReply {
            expires_at_ms: codec::int(expires)?,
            // Cancel ends the lease at once, so a live lease is never asked
            // to stop; a heartbeat after a cancel is `lease_lost`.
            cancel_requested: false,
        })
    }

    async fn execution_complete(&self, params: &CompleteParams) -> Result<Execution> {
        let (cmd, refused) = self.complete_cmd(params, false)?;
        let id = &params.execution_id;
        Self::execution_of(&self.run_on(&cmd, id, params.lease.epoch, refused).await?)
    }

    async fn execution_complete_brief(&self, params: &CompleteParams) -> Result<State> {
        let (cmd, refused) = self.complete_cmd(params, true)?;
        let id = &params.execution_id;
        Self::state_of(&self.run_on(&cmd, id, params.lease.epoch, refused).await?)
    }

    async fn execution_submit_many(&self, params: &[SubmitParams]) -> Result<Vec<Submitted>> {
        self.submit_many(params).await
    }

    async fn execution_complete_many(
        &self,
        params: &[CompleteParams],
    ) -> Result<Vec<Result<State>>> {
        self.complete_many(params).await
    }

    async fn execution_fail(&self, params: &FailParams) -> Result<Execution> {
        let (cmd, refused) = self.fail_cmd(params, false)?;
        let id = &params.execution_id;
        Self::execution_of(&self.run_on(&cmd, id, params.lease.epoch, refused).await?)
    }

    async fn execution_fail_brief(&self, params: &FailParams) -> Result<State> {
        let (cmd, refused) = self.fail_cmd(params, true)?;
        let id = &params.execution_id;
        Self::state_of(&self.run_on(&cmd, id, params.lease.epoch, refused).await?)
    }

    async fn execution_release(&self, params: &ReleaseParams) -> Result<Execution> {
        let id = &params.execution_id;
        self.check_id(id)?;
        let mut cmd = self.call("weft_release", id.partition());
        cmd.arg(id.as_str())
            .arg(&params.lease.lease_id.0)
            .arg(params.lease.epoch.0);
        Self::execution_of(&self.run_on(&cmd, id, params.lease.epoch, None).await?)
    }

    async fn execution_suspend(&self, params: &SuspendParams) -> Result<Execution> {
        let id = &params.execution_id;
        self.check_id(id)?;
        let refused = params.spec.validate().err();
        let mut cmd = self.call("weft_suspend", id.partition());
        cmd.arg(id.as_str())
            .arg(&params.lease.lease_id.0)
            .arg(params.lease.epoch.0)
            .arg(if refused.is_some() { "1" } else { "0" })
            .arg(params.spec.resume_when.as_str())
            .arg(TOKEN_TTL_MS_MAX);
        // A refused spec is never stored; do not ship its waitpoints.
        if refused.is_none() {
            for w in &params.spec.waitpoints {
                cmd.arg(&w.name)
                    .arg(w.timeout_ms.map(|t| t.to_string()).unwrap_or_default())
                    .arg(w.on_timeout.as_str());
            }
        }
        Self::execution_of(&self.run_on(&cmd, id, params.lease.epoch, refused).await?)
    }

    async fn execution_signal(&self, params: &SignalParams) -> Result<Execution> {
        let id = &params.execution_id;
        self.check_id(id)?;
        // The state machine checks the name, then the size, once the
        // execution is found.
        let bytes = weft_core::payload_bytes(&params.payload);
        let max_bytes = self.inner.machine.payload_bytes_max;
        let refused = check_waitpoint_name("waitpoint", &params.waitpoint)
            .err()
            .or_else(|| (bytes > max_bytes).then_some(Error::PayloadTooLarge { bytes, max_bytes }));
        let mut cmd = self.call("weft_signal", id.partition());
        cmd.arg(id.as_str())
            .arg(&params.waitpoint)
            .arg(if refused.is_some() {
                String::new()
            } else {
                json(&params.payload)?
            })
            .arg(params.seq.map(|s| s.to_string()).unwrap_or_default())
            .arg(if refused.is_some() { "1" } else { "0" })
            .arg(SIGNALS_BUFFERED_MAX);
        Self::execution_of(&self.run_on(&cmd, id, LeaseEpoch(0), refused).await?)
    }

    async fn execution_cancel(&self, params: &CancelParams) -> Result<Execution> {
        let id = &params.execution_id;
        self.check_id(id)?;
        let reason_max = weft_core::CANCEL_REASON_LEN_MAX;
        let refused = params
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > reason_max)
            .then(|| Error::invalid("reason", format!("must be at most {reason_max} bytes")));
        let mut cmd = self.call("weft_cancel", id.partition());
        cmd.arg(id.as_str())
            .arg(if params.reason.is_some() { "1" } else { "0" })
            .arg(params.reason.as_deref().unwrap_or(""))
            .arg(if refused.is_some() { "1" } else { "0" });
        Self::execution_of(&self.run_on(&cmd, id, LeaseEpoch(0), refused).await?)
    }

    async fn execution_replay(&self, id: &ExecutionId) -> Result<Execution> {
        self.check_id(id)?;
        let mut cmd = self.call("weft_replay", id.partition());
        cmd.arg(id.as_str());
        Self::execution_of(&self.run_on(&cmd, id, LeaseEpoch(0), None).await?)
    }

    async fn execution_get(&self, id: &ExecutionId) -> Result<Execution> {
        self.check_id(id)?;
        let mut cmd = self.call("weft_get", id.partition());
        cmd.arg(id.as_str());
        let reply = self.run_on(&cmd, id, LeaseEpoch(0), None).await?;
        let fields = reply
            .first()
            .ok_or_else(|| Error::Internal("a get reply without fields".into()))?;
        codec::decode_execution(fields)
    }

    async fn execution_list(&self, params: &ListParams) -> Result<Page> {
        if !(1..=LIST_LIMIT_MAX).contains(&params.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be 1..={LIST_LIMIT_MAX}, got {}", params.limit),
            ));
        }
        self.list(params).await
    }

    async fn attempt_list(&self, id: &ExecutionId) -> Result<Vec<Attempt>> {
        self.check_id(id)?;
        let mut cmd = self.call("weft_attempts", id.partition());
        cmd.arg(id.as_str());
        let reply = self.run_on(&cmd, id, LeaseEpoch(0), None).await?;
        let Some(list) = reply.first() else {
            return Ok(Vec::new());
        };
        codec::array(list)?
            .iter()
            .map(|v| codec::decode_attempt(&codec::text(v)?))
            .collect()
    }

    async fn lane_depths(&self) -> Result<Vec<LaneDepth>> {
        self.depths().await
    }

    async fn partition_tick(&self, partition: PartitionId, max: u32) -> Result<TickReport> {
        self.tick(partition, max).await
    }

    async fn partition_audit(&self, partition: PartitionId) -> Result<AuditReport> {
        self.audit(partition).await
    }

    async fn engine_rebalance(&self, params: &RebalanceParams) -> Result<Vec<PartitionId>> {
        self.rebalance(params).await
    }

    async fn partition_owners(&self) -> Result<Vec<PartitionOwner>> {
        self.owners().await
    }

    fn supports_flows(&self) -> bool {
        true
    }

    async fn flow_create(&self, spec: &FlowSpec) -> Result<FlowCreated> {
        self.flow_create_impl(spec).await
    }

    async fn flow_get(&self, id: &FlowId) -> Result<Flow> {
        self.flow_get_impl(id).await
    }

    async fn flow_list(&self, params: &FlowListParams) -> Result<FlowPage> {
        self.flow_list_impl(params).await
    }

    async fn flow_add_nodes(&self, id: &FlowId, spec: &FlowSpec) -> Result<Flow> {
        self.flow_add_nodes_impl(id, spec).await
    }

    async fn flow_cancel(&self, id: &FlowId) -> Result<Flow> {
        self.flow_cancel_impl(id).await
    }

    async fn flow_reconcile(
        &self,
        partition: PartitionId,
        cursor: Option<&str>,
        max: u32,
    ) -> Result<ReconcileReport> {
        self.flow_reconcile_impl(partition, cursor, max).await
    }

    fn due_hints(&self) -> Option<broadcast::Receiver<DueHint>> {
        Some(self.inner.hints.subscribe())
    }

    fn events(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.inner.events.subscribe())
    }
}
