//! Between Rust values and the library's arguments and replies.
//!
//! Definitions: an execution is stored as a HASH of scalar fields named like
//! `Execution`'s fields (the lease flattened to `lease_*`, the ended lease to
//! `ended_lease_*`, the backoff to `backoff_*`); payload, result, tags and
//! error are JSON text written by Rust and never re-encoded by Lua. An absent
//! field is `None` (`suspends`: 0); fields `Execution` does not have
//! (`attempt_started_at_ms`) are ignored. The last suspension is one field
//! (`decode_suspension`); each signal is its own field, `sig:<waitpoint>`
//! (`signals`) or `res:<waitpoint>` (`resumed_signals`), holding the
//! payload's JSON text as Rust sent it. An attempt is one entry:
//! `number␟state␟started_at_ms␟ended_at_ms␟worker_id␟error_json` (␟ = 0x1f,
//! empty = none), stored as the field `att:<number>` when it ends (ignored
//! by `decode_execution`) and made up from the execution's fields while it
//! runs.
//!
//! An execution travels back as one MessagePack map of its fields (strings
//! only), which `field_map` reads as it reads a flat field list.
//!
//! Invariants: `decode_execution(encode(e))` gives back `e`; every reply is
//! `['ok', …]` or `['err', kind, detail, detail]`; a malformed reply is an
//! `Internal` error, never a panic.

use std::collections::{BTreeMap, HashMap};

use redis::Value;
use weft_core::flow::{
    EdgeOn, Flow, FlowEdge, FlowNode, FlowState, Join, JoinMode, JoinState, OnFailure, StateCounts,
};
use weft_core::waitpoint::{OnTimeout, ResumeWhen, Suspension, Waitpoint};
use weft_core::{
    Attempt, AttemptNumber, AttemptState, Backoff, EndedBy, EndedLease, Error, ErrorInfo,
    Execution, ExecutionId, FlowId, Lease, LeaseEpoch, LeaseId, Result, State, Task,
};

/// The separator inside an attempt entry (and a flow node, a flow edge, a
/// suspension).
pub const ATTEMPT_SEP: char = '\u{1f}';
/// The field prefix of a signal no run has been handed (`Execution::signals`).
const SIGNAL_PREFIX: &str = "sig:";
/// The field prefix of a signal the last suspension ended with
/// (`Execution::resumed_signals`).
const RESUMED_PREFIX: &str = "res:";

/// A reply's payload after its `ok` status.
pub type Fields = Vec<Value>;

/// What a refused call says, before it is given its execution's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The library's error kind (`not_found`, `lease_lost`, …).
    pub kind: String,
    /// First detail.
    pub a: String,
    /// Second detail.
    pub b: String,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Internal(format!("unexpected reply from the weft library: {what}"))
}

/// The text of a string reply.
pub fn text(value: &Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| bad("non-UTF-8 text"))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        other => Err(bad(format!("{other:?} where text was expected"))),
    }
}

/// An integer sent as text or as an integer.
pub fn int(value: &Value) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(*n),
        other => {
            let t = text(other)?;
            t.parse()
                .map_err(|_| bad(format!("{t:?} is not an integer")))
        }
    }
}

/// The elements of an array reply.
pub fn array(value: &Value) -> Result<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => Err(bad(format!("{other:?} where an array was expected"))),
    }
}

/// Splits `['ok', …]` from `['err', kind, a, b]`.
pub fn status(value: Value) -> Result<std::result::Result<Fields, Refusal>> {
    let Value::Array(mut items) = value else {
        return Err(bad(format!("{value:?} where a status array was expected")));
    };
    if items.is_empty() {
        return Err(bad("an empty reply"));
    }
    let head = text(&items[0])?;
    match head.as_str() {
        "ok" => {
            items.remove(0);
            Ok(Ok(items))
        }
        "err" => {
            let get = |i: usize| {
                items
                    .get(i)
                    .map(text)
                    .transpose()
                    .map(Option::unwrap_or_default)
            };
            Ok(Err(Refusal {
                kind: get(1)?,
                a: get(2)?,
                b: get(3)?,
            }))
        }
        other => Err(bad(format!("status {other:?}"))),
    }
}

/// A record as a map: an execution the library packed (`record` in
/// `core.lua`: one MessagePack map of strings), or a flat
/// `field, value, …` array.
pub fn field_map(value: &Value) -> Result<HashMap<String, String>> {
    if let Value::BulkString(bytes) = value {
        return packed_map(bytes);
    }
    let items = array(value)?;
    let mut map = HashMap::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        let [k, v] = pair else {
            return Err(bad("an odd field list"));
        };
        map.insert(text(k)?, text(v)?);
    }
    Ok(map)
}

/// Most fields one packed record may hold: an execution has about 50, plus
/// two per buffered or resumed signal.
const PACKED_FIELDS_MAX: usize = 1024;

/// A MessagePack map whose keys and values are all strings, as Lua's
/// `cmsgpack.pack` writes a table of strings (fixmap/map16/map32 of
/// fixstr/str8/str16/str32).
fn packed_map(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let mut reader = Packed { bytes, at: 0 };
    let len = match reader.byte()? {
        b @ 0x80..=0x8f => usize::from(b & 0x0f),
        0xde => reader.big_endian(2)?,
        0xdf => reader.big_endian(4)?,
        other => return Err(bad(format!("a packed record starting {other:#04x}"))),
    };
    if len > PACKED_FIELDS_MAX {
        return Err(bad(format!("a packed record of {len} fields")));
    }
    let mut map = HashMap::with_capacity(len);
    for _ in 0..len {
        let field = reader.text()?;
        map.insert(field, reader.text()?);
    }
    if reader.at != bytes.len() {
        return Err(bad("bytes after a packed record"));
    }
    Ok(map)
}

/// A cursor over a packed record.
struct Packed<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Packed<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| bad("a packed record cut short"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn big_endian(&mut self, n: usize) -> Result<usize> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    }

    fn text(&mut self) -> Result<String> {
        let len = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.big_endian(1)?,
            0xda => self.big_endian(2)?,
            0xdb => self.big_endian(4)?,
            other => return Err(bad(format!("a packed value of type {other:#04x}"))),
        };
        let bytes = self.take(len)?.to_vec();
        String::from_utf8(bytes).map_err(|_| bad("non-UTF-8 text in a packed record"))
    }
}

/// Turns a refusal about one execution into Weft's error; `refused` is
/// what Rust decided before the call, reported when the library reached
/// the point where the state machine checks it.
pub fn refusal_error(
    refusal: Refusal,
    id: &ExecutionId,
    epoch: LeaseEpoch,
    refused: Option<Error>,
) -> Error {
    match refusal.kind.as_str() {
        "refused" => refused.unwrap_or_else(|| Error::Internal("an unexplained refusal".into())),
        "not_found" => Error::NotFound {
            what: "execution",
            id: id.to_string(),
        },
        "lease_lost" => Error::LeaseLost {
            execution_id: id.to_string(),
            epoch,
            reason: match refusal.a.as_str() {
                "none" => "the execution holds no lease",
                "newer" => "a newer lease holds the execution",
                _ => "the lease has expired",
            },
        },
        "conflict_ended" => Error::conflict(format!("{id} already ended {}", refusal.a)),
        "conflict_not_ended" => Error::conflict(format!("{id} is {}, not ended", refusal.a)),
        "conflict_signalled" => {
            Error::conflict(format!("waitpoint {} was already signalled", refusal.a))
        }
        "conflict_signals_full" => Error::conflict(format!(
            "{id} already holds {} signals no run has consumed",
            weft_core::waitpoint::SIGNALS_BUFFERED_MAX
        )),
        "invalid_token" => Error::InvalidToken,
        "conflict_flow_member" => Error::conflict(format!(
            "{id} is a flow member: its downstreams already counted its end"
        )),
        other => Error::Internal(format!(
            "weft library refused with {other:?}: {}",
            refusal.a
        )),
    }
}

/// Field values of one stored execution, with typed getters.
struct Row(HashMap<String, String>);

impl Row {
    fn text(&self, field: &str) -> Result<String> {
        self.0
            .get(field)
            .cloned()
            .ok_or_else(|| bad(format!("execution without {field}")))
    }

    fn opt_text(&self, field: &str) -> Option<String> {
        self.0.get(field).cloned()
    }

    fn num<T: std::str::FromStr>(&self, field: &str) -> Result<T> {
        let raw = self.text(field)?;
        raw.parse()
            .map_err(|_| bad(format!("{field} = {raw:?} is not a number")))
    }

    fn opt_num<T: std::str::FromStr>(&self, field: &str) -> Result<Option<T>> {
        self.0.get(field).map(|_| self.num(field)).transpose()
    }

    fn json<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<Option<T>> {
        self.0
            .get(field)
            .map(|raw| serde_json::from_str(raw).map_err(|e| bad(format!("{field}: {e}"))))
            .transpose()
    }

    fn id(&self) -> Result<ExecutionId> {
        ExecutionId::parse(&self.text("id")?).map_err(|_| bad("a malformed id"))
    }

    fn flow_id(&self) -> Result<Option<FlowId>> {
        self.opt_text("flow_id")
            .map(|f| FlowId::parse(&f).map_err(|_| bad("a malformed flow id")))
            .transpose()
    }

    fn lease(&self) -> Result<Option<Lease>> {
        let Some(id) = self.opt_text("lease_id") else {
            return Ok(None);
        };
        Ok(Some(Lease {
            id: LeaseId(id),
            epoch: LeaseEpoch(self.num("lease_epoch")?),
            expires_at_ms: self.num("lease_expires_at_ms")?,
            lease_ms: self.num("lease_ms")?,
            worker_id: self.text("lease_worker_id")?,
            timeout_at_ms: self.opt_num("lease_timeout_at_ms")?,
        }))
    }

    fn ended_lease(&self) -> Result<Option<EndedLease>> {
        let Some(id) = self.opt_text("ended_lease_id") else {
            return Ok(None);
        };
        let by = self.text("ended_lease_by")?;
        Ok(Some(EndedLease {
            id: LeaseId(id),
            epoch: LeaseEpoch(self.num("ended_lease_epoch")?),
            by: EndedBy::parse(&by).ok_or_else(|| bad(format!("ended_lease_by = {by:?}")))?,
        }))
    }

    fn join(&self) -> Result<Option<JoinState>> {
        let Some(total) = self.opt_num::<u32>("join_total")? else {
            return Ok(None);
        };
        let mode = self.text("join_mode")?;
        Ok(Some(JoinState {
            join: Join {
                mode: join_mode(&mode).ok_or_else(|| bad(format!("join_mode = {mode:?}")))?,
                n: self.opt_num("join_n")?,
                cancel_remaining: self.opt_text("join_cancel_remaining").as_deref() == Some("1"),
            },
            total,
            fired: self.num("join_fired")?,
            dead: self.num("join_dead")?,
        }))
    }

    /// The payloads of the fields `<prefix><waitpoint>`, by waitpoint.
    fn signals(&self, prefix: &str) -> Result<BTreeMap<String, serde_json::Value>> {
        self.0
            .iter()
            .filter_map(|(field, raw)| Some((field.strip_prefix(prefix)?, raw)))
            .map(|(name, raw)| {
                let payload =
                    serde_json::from_str(raw).map_err(|e| bad(format!("{prefix}{name}: {e}")))?;
                Ok((name.to_owned(), payload))
            })
            .collect()
    }

    fn backoff(&self) -> Result<Backoff> {
        Ok(Backoff {
            initial_ms: self.num("backoff_initial_ms")?,
            max_ms: self.num("backoff_max_ms")?,
            multiplier: self.num("backoff_multiplier")?,
            jitter: self.num("backoff_jitter")?,
        })
    }
}

/// Parses the field `suspension`: `seq␟resume_when␟suspended_at_ms`, then
/// per waitpoint `␟name␟timeout_at_ms␟on_timeout␟expires_at_ms␟signalled`
/// (an empty timeout is none, signalled is `1` or `0`).
pub fn decode_suspension(raw: &str) -> Result<Suspension> {
    let malformed = || bad(format!("suspension {raw:?}"));
    let parts: Vec<&str> = raw.split(ATTEMPT_SEP).collect();
    let (head, waitpoints) = parts.split_at_checked(3).ok_or_else(malformed)?;
    let [seq, resume_when, suspended_at_ms] = head else {
        return Err(malformed());
    };
    if waitpoints.len() % 5 != 0 {
        return Err(malformed());
    }
    let number = |t: &str| t.parse::<i64>().map_err(|_| malformed());
    Ok(Suspension {
        seq: seq.parse().map_err(|_| malformed())?,
        resume_when: ResumeWhen::parse(resume_when).ok_or_else(malformed)?,
        suspended_at_ms: number(suspended_at_ms)?,
        waitpoints: waitpoints
            .chunks(5)
            .map(|w| {
                let [name, timeout_at_ms, on_timeout, expires_at_ms, signalled] = w else {
                    return Err(malformed());
                };
                Ok(Waitpoint {
                    name: (*name).to_owned(),
                    timeout_at_ms: (!timeout_at_ms.is_empty())
                        .then(|| number(timeout_at_ms))
                        .transpose()?,
                    on_timeout: OnTimeout::parse(on_timeout).ok_or_else(malformed)?,
                    expires_at_ms: number(expires_at_ms)?,
                    signalled: *signalled == "1",
                })
            })
            .collect::<Result<_>>()?,
        at_once_epoch: None,
    })
}

/// Parses a stored execution hash (as `HGETALL` or the library returns it).
pub fn decode_execution(value: &Value) -> Result<Execution> {
    decode_row(Row(field_map(value)?))
}

/// A claimed task from its fields (`field_map`): a task record (`task_record`
/// in `core.lua`) or a whole execution's; `_inputs` are a flow member's
/// inputs as the claim found them.
pub fn decode_task(fields: HashMap<String, String>) -> Result<Task> {
    let row = Row(fields);
    let execution_id = row.id()?;
    let lease = row
        .lease()?
        .ok_or_else(|| bad(format!("claimed {execution_id} holds no lease")))?;
    Ok(Task {
        attempt: AttemptNumber(row.num("attempts")?),
        kind: row.text("kind")?,
        lane: row.text("lane")?,
        payload: row.json("payload")?.unwrap_or(serde_json::Value::Null),
        lease,
        flow_id: row.flow_id()?,
        flow_node: row.opt_text("flow_node"),
        inputs: row.json("_inputs")?.unwrap_or_default(),
        signals: row.signals(RESUMED_PREFIX)?,
        execution_id,
    })
}

/// The execution `weft_submit` created: the draft Rust sent it (every
/// field that does not depend on time), overlaid with the fields the
/// library set (its reply), exactly as it stored them. The payload is not
/// parsed again.
pub fn decode_submitted(draft: Execution, set: &Value) -> Result<Execution> {
    let row = Row(field_map(set)?);
    Ok(Execution {
        id: row.id()?,
        state: State::parse(&row.text("state")?).map_err(bad)?,
        attempts: row.num("attempts")?,
        failures: row.num("failures")?,
        reclaims: row.num("reclaims")?,
        epoch: LeaseEpoch(row.num("epoch")?),
        created_at_ms: row.num("created_at_ms")?,
        updated_at_ms: row.num("updated_at_ms")?,
        run_at_ms: row.opt_num("run_at_ms")?,
        ready_at_ms: row.num("ready_at_ms")?,
        deadline_at_ms: row.opt_num("deadline_at_ms")?,
        ..draft
    })
}

fn decode_row(row: Row) -> Result<Execution> {
    let id = row.id()?;
    let flow_id = row.flow_id()?;
    let requires = row.text("requires")?;
    Ok(Execution {
        id,
        kind: row.text("kind")?,
        lane: row.text("lane")?,
        state: State::parse(&row.text("state")?).map_err(bad)?,
        priority: row.num("priority")?,
        payload: row.json("payload")?.unwrap_or(serde_json::Value::Null),
        attempts: row.num("attempts")?,
        failures: row.num("failures")?,
        reclaims: row.num("reclaims")?,
        max_attempts: row.num("max_attempts")?,
        max_reclaims: row.num("max_reclaims")?,
        backoff: row.backoff()?,
        timeout_ms: row.opt_num("timeout_ms")?,
        deadline_ms: row.opt_num("deadline_ms")?,
        deadline_at_ms: row.opt_num("deadline_at_ms")?,
        requires: requires
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        idempotency_key: row.opt_text("idempotency_key"),
        tags: row.json("tags")?.unwrap_or_default(),
        result: row.json("result")?,
        error: row.json("error")?,
        flow_id,
        flow_node: row.opt_text("flow_node"),
        created_at_ms: row.num("created_at_ms")?,
        updated_at_ms: row.num("updated_at_ms")?,
        run_at_ms: row.opt_num("run_at_ms")?,
        ready_at_ms: row.num("ready_at_ms")?,
        finished_at_ms: row.opt_num("finished_at_ms")?,
        lease: row.lease()?,
        epoch: LeaseEpoch(row.num("epoch")?),
        ended_lease: row.ended_lease()?,
        cancel_reason: row.opt_text("cancel_reason"),
        join: row.join()?,
        // Executions written before waitpoints lack the field.
        suspends: row.opt_num("suspends")?.unwrap_or(0),
        suspension: row
            .opt_text("suspension")
            .map(|raw| decode_suspension(&raw))
            .transpose()?
            .map(|mut s| {
                row.opt_num("suspension_at_once")
                    .map(|epoch| s.at_once_epoch = epoch.map(LeaseEpoch))
                    .map(|()| s)
            })
            .transpose()?,
        signals: row.signals(SIGNAL_PREFIX)?,
        resumed_signals: row.signals(RESUMED_PREFIX)?,
    })
}

/// The fields of a new execution that do not depend on the store's time,
/// as `field, value` pairs for `weft_submit`.
pub fn submit_fields(exec: &Execution) -> Result<Vec<(&'static str, String)>> {
    let json = |v: &serde_json::Value| {
        serde_json::to_string(v).map_err(|e| Error::Internal(format!("payload: {e}")))
    };
    let mut out = vec![
        ("kind", exec.kind.clone()),
        ("lane", exec.lane.clone()),
        ("priority", exec.priority.to_string()),
        ("payload", json(&exec.payload)?),
        ("max_attempts", exec.max_attempts.to_string()),
        ("max_reclaims", exec.max_reclaims.to_string()),
        ("backoff_initial_ms", exec.backoff.initial_ms.to_string()),
        ("backoff_max_ms", exec.backoff.max_ms.to_string()),
        ("backoff_multiplier", exec.backoff.multiplier.to_string()),
        ("backoff_jitter", exec.backoff.jitter.to_string()),
        ("requires", exec.capset()),
        (
            "tags",
            serde_json::to_string(&exec.tags).map_err(|e| Error::Internal(format!("tags: {e}")))?,
        ),
    ];
    if let Some(t) = exec.timeout_ms {
        out.push(("timeout_ms", t.to_string()));
    }
    if let Some(d) = exec.deadline_ms {
        out.push(("deadline_ms", d.to_string()));
    }
    if let Some(key) = &exec.idempotency_key {
        out.push(("idempotency_key", key.clone()));
    }
    Ok(out)
}

fn join_mode(text: &str) -> Option<JoinMode> {
    match text {
        "all" => Some(JoinMode::All),
        "any" => Some(JoinMode::Any),
        "quorum" => Some(JoinMode::Quorum),
        _ => None,
    }
}

/// A join mode as the library stores it.
pub fn join_mode_text(mode: JoinMode) -> &'static str {
    match mode {
        JoinMode::All => "all",
        JoinMode::Any => "any",
        JoinMode::Quorum => "quorum",
    }
}

/// An edge's `on` as the library stores it.
pub fn edge_on_text(on: EdgeOn) -> &'static str {
    match on {
        EdgeOn::Success => "success",
        EdgeOn::Failure => "failure",
        EdgeOn::Any => "any",
    }
}

fn edge_on(text: &str) -> Result<EdgeOn> {
    match text {
        "success" => Ok(EdgeOn::Success),
        "failure" => Ok(EdgeOn::Failure),
        "any" => Ok(EdgeOn::Any),
        other => Err(bad(format!("edge on {other:?}"))),
    }
}

/// `on_failure` as the library stores it.
pub fn on_failure_text(on: OnFailure) -> &'static str {
    match on {
        OnFailure::Continue => "continue",
        OnFailure::CancelFlow => "cancel_flow",
    }
}

/// Parses one flow reply: `[meta fields, nodes, edges]`.
pub fn decode_flow(value: &Value) -> Result<Flow> {
    let [meta, nodes, edges] = array(value)? else {
        return Err(bad("a flow reply without meta, nodes and edges"));
    };
    let row = Row(field_map(meta)?);
    let id = FlowId::parse(&row.text("id")?).map_err(|_| bad("a malformed flow id"))?;
    let mut counts = StateCounts::default();
    for (field, n) in &row.0 {
        if let Some(state) = field.strip_prefix("n:") {
            let state = State::parse(state).map_err(bad)?;
            let n: u32 = n.parse().map_err(|_| bad(format!("{field} = {n:?}")))?;
            if n > 0 {
                counts.0.insert(state, n);
            }
        }
    }
    let state = row.text("state")?;
    let on_failure = row.text("on_failure")?;
    Ok(Flow {
        id,
        name: row.opt_text("name"),
        state: FlowState::parse(&state).ok_or_else(|| bad(format!("flow state {state:?}")))?,
        idempotency_key: row.opt_text("idempotency_key"),
        on_failure: match on_failure.as_str() {
            "continue" => OnFailure::Continue,
            "cancel_flow" => OnFailure::CancelFlow,
            other => return Err(bad(format!("on_failure {other:?}"))),
        },
        cancelled: row.opt_text("cancelled").as_deref() == Some("1"),
        halted: row.opt_text("halted").as_deref() == Some("1"),
        nodes: array(nodes)?
            .iter()
            .map(|v| decode_node(&text(v)?))
            .collect::<Result<_>>()?,
        edges: array(edges)?
            .iter()
            .map(|v| decode_edge(&text(v)?))
            .collect::<Result<_>>()?,
        counts,
        created_at_ms: row.num("created_at_ms")?,
        updated_at_ms: row.num("updated_at_ms")?,
        finished_at_ms: row.opt_num("finished_at_ms")?,
    })
}

fn decode_node(entry: &str) -> Result<FlowNode> {
    let parts: Vec<&str> = entry.split(ATTEMPT_SEP).collect();
    let [key, id, state] = parts[..] else {
        return Err(bad(format!("flow node {entry:?}")));
    };
    Ok(FlowNode {
        key: key.to_owned(),
        execution_id: ExecutionId::parse(id).map_err(|_| bad("a malformed member id"))?,
        state: State::parse(state).map_err(bad)?,
    })
}

fn decode_edge(entry: &str) -> Result<FlowEdge> {
    let parts: Vec<&str> = entry.split(ATTEMPT_SEP).collect();
    let [from, to, on] = parts[..] else {
        return Err(bad(format!("flow edge {entry:?}")));
    };
    Ok(FlowEdge {
        from: from.to_owned(),
        to: to.to_owned(),
        on: edge_on(on)?,
    })
}

fn attempt_state(text: &str) -> Result<AttemptState> {
    AttemptState::parse(text).ok_or_else(|| bad(format!("attempt state {text:?}")))
}

/// Parses one attempt entry.
pub fn decode_attempt(entry: &str) -> Result<Attempt> {
    let parts: Vec<&str> = entry.splitn(6, ATTEMPT_SEP).collect();
    let [number, state, started, ended, worker, error] = parts[..] else {
        return Err(bad(format!("attempt entry {entry:?}")));
    };
    let parse = |t: &str| {
        t.parse::<i64>()
            .map_err(|_| bad(format!("attempt time {t:?}")))
    };
    Ok(Attempt {
        number: AttemptNumber(number.parse().map_err(|_| bad("attempt number"))?),
        worker_id: worker.to_owned(),
        state: attempt_state(state)?,
        started_at_ms: parse(started)?,
        ended_at_ms: (!ended.is_empty()).then(|| parse(ended)).transpose()?,
        error: if error.is_empty() {
            None
        } else {
            Some(serde_json::from_str::<ErrorInfo>(error).map_err(bad)?)
        },
    })
}

/// Sums `lane|state -> count` maps into per-lane depths.
pub fn add_depths(
    into: &mut BTreeMap<String, weft_core::LaneDepth>,
    fields: &HashMap<String, String>,
) {
    for (field, count) in fields {
        let Some((lane, state)) = field.rsplit_once('|') else {
            continue;
        };
        let n: u64 = count.parse().unwrap_or(0);
        let depth = into
            .entry(lane.to_owned())
            .or_insert_with(|| weft_core::LaneDepth {
                lane: lane.to_owned(),
                ..Default::default()
            });
        match state {
            "waiting" => depth.waiting += n,
            "delayed" => depth.delayed += n,
            "active" => depth.active += n,
            "suspended" => depth.suspended += n,
            "blocked" => depth.blocked += n,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! Attempt entries, packed records and refusals decode as documented.
    use super::*;

    /// `text` as MessagePack, in the smallest form for its length.
    fn packed_text(text: &str) -> Vec<u8> {
        let len = text.len();
        let mut out = match len {
            0..=31 => vec![0xa0 | len as u8],
            32..=255 => vec![0xd9, len as u8],
            256..=65_535 => vec![0xda, (len >> 8) as u8, len as u8],
            _ => {
                let mut head = vec![0xdb];
                head.extend_from_slice(&(len as u32).to_be_bytes());
                head
            }
        };
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn packed_records_read_every_string_form() {
        let long = "p".repeat(70_000);
        let pairs = [
            ("id", "ex_1"),
            ("kind", &*"k".repeat(40)),
            ("payload", &*long),
        ];
        let mut bytes = vec![0xde, 0, pairs.len() as u8];
        for (k, v) in pairs {
            bytes.extend(packed_text(k));
            bytes.extend(packed_text(v));
        }
        let map = field_map(&Value::BulkString(bytes.clone())).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map["payload"], long);
        assert_eq!(map["kind"], "k".repeat(40));
        let mut fixmap = bytes.clone();
        fixmap.splice(0..3, [0x83]);
        assert_eq!(field_map(&Value::BulkString(fixmap)).unwrap(), map);
    }

    #[test]
    fn malformed_packed_records_are_errors() {
        let good: Vec<u8> = [vec![0x81], packed_text("a"), packed_text("b")].concat();
        assert!(field_map(&Value::BulkString(good.clone())).is_ok());
        let cut = good[..good.len() - 1].to_vec();
        let trailing = [good.clone(), vec![0]].concat();
        let number_value = [vec![0x81], packed_text("a"), vec![0x01]].concat();
        let not_a_map = vec![0x91, 0xa0];
        let huge = vec![0xdf, 0xff, 0xff, 0xff, 0xff];
        let long_len = vec![0x81, 0xdb, 0xff, 0xff, 0xff, 0xff];
        for bytes in [cut, trailing, number_value, not_a_map, huge, long_len] {
            let err = field_map(&Value::BulkString(bytes.clone())).unwrap_err();
            assert_eq!(err.kind(), "internal", "{bytes:?}");
        }
    }

    #[test]
    fn attempts_round_trip() {
        let entry =
            "3\u{1f}failed\u{1f}10\u{1f}20\u{1f}w-1\u{1f}{\"message\":\"x\",\"kind\":\"k\"}";
        let a = decode_attempt(entry).unwrap();
        assert_eq!(a.number, AttemptNumber(3));
        assert_eq!(a.state, AttemptState::Failed);
        assert_eq!(a.ended_at_ms, Some(20));
        assert_eq!(a.error, Some(ErrorInfo::new("k", "x")));
        let running = decode_attempt("1\u{1f}running\u{1f}10\u{1f}\u{1f}w\u{1f}").unwrap();
        assert_eq!(running.ended_at_ms, None);
        assert!(decode_attempt("garbage").is_err());
    }

    #[test]
    fn suspensions_decode() {
        let raw = "2\u{1f}any\u{1f}1000\u{1f}approve\u{1f}1500\u{1f}resume\u{1f}1500\u{1f}1\
                   \u{1f}audit.log\u{1f}\u{1f}fail\u{1f}9000\u{1f}0";
        let s = decode_suspension(raw).unwrap();
        assert_eq!(
            (s.seq, s.resume_when, s.suspended_at_ms),
            (2, ResumeWhen::Any, 1000)
        );
        assert_eq!(
            s.waitpoints,
            vec![
                Waitpoint {
                    name: "approve".into(),
                    timeout_at_ms: Some(1500),
                    on_timeout: OnTimeout::Resume,
                    expires_at_ms: 1500,
                    signalled: true,
                },
                Waitpoint {
                    name: "audit.log".into(),
                    timeout_at_ms: None,
                    on_timeout: OnTimeout::Fail,
                    expires_at_ms: 9000,
                    signalled: false,
                },
            ]
        );
        for bad in [
            "",
            "1\u{1f}all",
            "1\u{1f}all\u{1f}5\u{1f}a",
            "1\u{1f}some\u{1f}5",
        ] {
            assert!(decode_suspension(bad).is_err(), "{bad:?}");
        }
    }
}
