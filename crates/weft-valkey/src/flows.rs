//! Flows on Valkey: the `flow_*` operations as calls of `lua/flow.lua`.
//!
//! Definitions: a flow and its members live on the flow's partition (the
//! hash of its idempotency key, else random). Rust validates a request with
//! `FlowSpec::validate` (or `validate_addition` against the flow as just
//! read) and runs `machine::submit` for every member's defaults; the library
//! writes the flow and its members with the store's time in one call.
//!
//! Invariants: an addition is written only if the flow still has the node
//! and edge counts Rust validated against (nodes only grow, so equal counts
//! mean the same nodes); otherwise Rust reads and validates again.

use weft_core::flow::{Flow, FlowSpec, FlowState};
use weft_core::machine;
use weft_core::{
    partition_for_key, Error, ExecutionId, FlowCreated, FlowId, FlowListParams, FlowPage,
    PartitionId, ReconcileReport, Result, LIST_LIMIT_MAX,
};

use crate::codec::{self, Refusal};
use crate::store::{PartitionScan, ValkeyStore};

/// How often a flow write retries after an id collision or a concurrent
/// addition.
const FLOW_WRITE_RETRIES: u32 = 5;

/// The refusal of a flow call as Weft's error.
fn flow_refusal(refusal: &Refusal, id: &str) -> Error {
    match refusal.kind.as_str() {
        "not_found" => Error::NotFound {
            what: "flow",
            id: id.to_owned(),
        },
        "conflict_flow_ended" => {
            let state = FlowState::parse(&refusal.a).unwrap_or(FlowState::Completed);
            Error::conflict(format!("{id} already ended {state:?}"))
        }
        other => Error::Internal(format!("weft library refused with {other:?}")),
    }
}

impl ValkeyStore {
    /// Appends `spec`'s graph in the layout `parse_graph` reads.
    fn graph_args(&self, cmd: &mut redis::Cmd, spec: &FlowSpec) -> Result<()> {
        cmd.arg(spec.nodes.len()).arg(spec.edges.len());
        for node in &spec.nodes {
            // Members start with their flow: no delay, deadline or key.
            let params = weft_core::SubmitParams {
                delay_ms: None,
                run_at_ms: None,
                deadline_ms: None,
                idempotency_key: None,
                ..node.params.clone()
            };
            let draft = machine::submit(
                ExecutionId::mint(PartitionId(0), 0),
                &params,
                0,
                &self.inner.machine,
            )?
            .execution
            .ok_or_else(|| Error::Internal("submit created no execution".into()))?;
            let total = spec.edges.iter().filter(|e| e.to == node.key).count();
            let join = spec.joins.get(&node.key).copied().unwrap_or_default();
            cmd.arg(&node.key)
                .arg(format!("{:08x}", fastrand::u32(..)))
                .arg(if total > 0 { "blocked" } else { "waiting" })
                .arg(total)
                .arg(codec::join_mode_text(join.mode))
                .arg(join.n.map(|n| n.to_string()).unwrap_or_default())
                .arg(if join.cancel_remaining { "1" } else { "0" });
            let fields = codec::submit_fields(&draft)?;
            cmd.arg(fields.len());
            for (field, value) in &fields {
                cmd.arg(*field).arg(value);
            }
        }
        for edge in &spec.edges {
            cmd.arg(&edge.from)
                .arg(&edge.to)
                .arg(codec::edge_on_text(edge.on));
        }
        Ok(())
    }

    fn flow_of(fields: &[redis::Value], at: usize) -> Result<Flow> {
        let value = fields
            .get(at)
            .ok_or_else(|| Error::Internal("a reply without its flow".into()))?;
        codec::decode_flow(value)
    }

    /// See `Store::flow_create`.
    pub(crate) async fn flow_create_impl(&self, spec: &FlowSpec) -> Result<FlowCreated> {
        spec.validate(self.inner.machine.payload_bytes_max)?;
        let count = self.inner.count;
        let partition = match &spec.idempotency_key {
            Some(key) => partition_for_key("flow", key, count),
            None => count.random(),
        };
        for _ in 0..FLOW_WRITE_RETRIES {
            let mut cmd = self.call("weft_flow_create", partition);
            cmd.arg(format!("{:04x}", partition.0))
                .arg(format!("{:08x}", fastrand::u32(..)))
                .arg(if spec.name.is_some() { "1" } else { "0" })
                .arg(spec.name.as_deref().unwrap_or(""))
                .arg(spec.idempotency_key.as_deref().unwrap_or(""))
                .arg(codec::on_failure_text(spec.on_failure));
            self.graph_args(&mut cmd, spec)?;
            match codec::status(self.run(&cmd).await?)? {
                Ok(reply) => {
                    let outcome = reply.first().map(codec::text).transpose()?;
                    return Ok(FlowCreated {
                        flow: Self::flow_of(&reply, 1)?,
                        created: outcome.as_deref() == Some("created"),
                    });
                }
                Err(Refusal { kind, .. }) if kind == "collision" => continue,
                Err(refusal) => return Err(flow_refusal(&refusal, "")),
            }
        }
        Err(Error::Internal(
            "flow create kept minting ids that exist".into(),
        ))
    }

    /// See `Store::flow_get`.
    pub(crate) async fn flow_get_impl(&self, id: &FlowId) -> Result<Flow> {
        if !self.inner.count.contains(id.partition()) {
            return Err(Error::NotFound {
                what: "flow",
                id: id.to_string(),
            });
        }
        let mut cmd = self.call("weft_flow_get", id.partition());
        cmd.arg(id.as_str());
        let reply =
            codec::status(self.run(&cmd).await?)?.map_err(|r| flow_refusal(&r, id.as_str()))?;
        Self::flow_of(&reply, 0)
    }

    /// See `Store::flow_add_nodes`.
    pub(crate) async fn flow_add_nodes_impl(&self, id: &FlowId, spec: &FlowSpec) -> Result<Flow> {
        for _ in 0..FLOW_WRITE_RETRIES {
            let flow = self.flow_get_impl(id).await?;
            if flow.state.is_terminal() {
                return Err(Error::conflict(format!(
                    "{} already ended; nodes join running flows",
                    flow.id
                )));
            }
            spec.validate_addition(&flow, self.inner.machine.payload_bytes_max)?;
            let mut cmd = self.call("weft_flow_add_nodes", id.partition());
            cmd.arg(id.as_str())
                .arg(flow.nodes.len())
                .arg(flow.edges.len())
                .arg(format!("{:04x}", id.partition().0));
            self.graph_args(&mut cmd, spec)?;
            match codec::status(self.run(&cmd).await?)? {
                Ok(reply) => return Self::flow_of(&reply, 0),
                Err(Refusal { kind, .. }) if kind == "collision" || kind == "changed" => continue,
                Err(Refusal { kind, .. }) if kind == "conflict_flow_ended" => {
                    return Err(Error::conflict(format!(
                        "{id} already ended; nodes join running flows"
                    )))
                }
                Err(refusal) => return Err(flow_refusal(&refusal, id.as_str())),
            }
        }
        Err(Error::Unavailable(format!(
            "{id} kept changing while nodes were added; try again"
        )))
    }

    /// See `Store::flow_cancel`.
    pub(crate) async fn flow_cancel_impl(&self, id: &FlowId) -> Result<Flow> {
        if !self.inner.count.contains(id.partition()) {
            return Err(Error::NotFound {
                what: "flow",
                id: id.to_string(),
            });
        }
        let mut cmd = self.call("weft_flow_cancel", id.partition());
        cmd.arg(id.as_str());
        let reply =
            codec::status(self.run(&cmd).await?)?.map_err(|r| flow_refusal(&r, id.as_str()))?;
        Self::flow_of(&reply, 0)
    }

    /// See `Store::flow_list`: partitions in id order, like `execution_list`.
    pub(crate) async fn flow_list_impl(&self, params: &FlowListParams) -> Result<FlowPage> {
        if !(1..=LIST_LIMIT_MAX).contains(&params.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be 1..={LIST_LIMIT_MAX}, got {}", params.limit),
            ));
        }
        let start = params
            .cursor
            .as_deref()
            .and_then(|c| FlowId::parse(c).ok())
            .map_or(0, |id| id.partition().0);
        let filters = [params.state.map_or("", FlowState::as_str)];
        let scan = PartitionScan {
            function: "weft_flow_list",
            cursor: params.cursor.as_deref(),
            start,
        };
        let items = self
            .scan(&scan, params.limit, &filters, codec::decode_flow)
            .await?;
        let (items, next_cursor) = weft_core::page_cut(items, params.limit, |f| f.id.to_string());
        Ok(FlowPage { items, next_cursor })
    }

    /// See `Store::flow_reconcile`.
    pub(crate) async fn flow_reconcile_impl(
        &self,
        partition: PartitionId,
        cursor: Option<&str>,
        max: u32,
    ) -> Result<ReconcileReport> {
        self.check_partition(partition)?;
        if !(1..=LIST_LIMIT_MAX).contains(&max) {
            return Err(Error::invalid(
                "max",
                format!("must be 1..={LIST_LIMIT_MAX}"),
            ));
        }
        let mut cmd = self.call("weft_flow_reconcile", partition);
        cmd.arg(cursor.unwrap_or("")).arg(max);
        let reply = codec::status(self.run(&cmd).await?)?
            .map_err(|r| Error::Internal(format!("flow reconcile: {r:?}")))?;
        let [examined, repaired, next] = &reply[..] else {
            return Err(Error::Internal("a malformed flow reconcile reply".into()));
        };
        let next = codec::text(next)?;
        Ok(ReconcileReport {
            examined: u32::try_from(codec::int(examined)?).unwrap_or(u32::MAX),
            repaired: u32::try_from(codec::int(repaired)?).unwrap_or(u32::MAX),
            next_cursor: (!next.is_empty()).then_some(next),
        })
    }
}
