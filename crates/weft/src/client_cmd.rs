//! The client commands: `weft submit`, `get`, `list`, `cancel`, `replay`,
//! `wait`, `lanes`, `attempts` and `signal`, over HTTP with the Rust SDK, and `weft
//! flow …` (in `flow_cmd`).
//!
//! Every command takes `--server URL` (env `WEFT_SERVER`, default
//! `http://127.0.0.1:7070`) and `--api-token` (env `WEFT_API_TOKEN`), prints
//! a human-readable table by default and the API's JSON with `--json`, and
//! on an error prints what to fix and exits non-zero. `weft wait` also exits
//! non-zero when its timeout passes before the execution ends.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use serde_json::Value;
use weft_api::{AttemptView, ExecutionView, LaneView};
use weft_core::{Error, State};
use weft_sdk::{Client, HttpTransport, ListQuery, SubmitRequest};

/// Where the server is when nothing says otherwise (`weft dev`'s default).
pub const SERVER_DEFAULT: &str = "http://127.0.0.1:7070";
/// Longest JSON shown in a table cell before it is cut.
const CELL_JSON_CHARS_MAX: usize = 200;

/// How to reach the server.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The Weft server's base URL.
    #[arg(long, env = "WEFT_SERVER", default_value = SERVER_DEFAULT)]
    pub server: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "WEFT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl ConnectArgs {
    /// A client of the server these arguments name.
    pub fn client(&self) -> Result<Client, String> {
        let mut builder = HttpTransport::builder(&self.server);
        if let Some(token) = &self.api_token {
            builder = builder.token(token);
        }
        let transport = builder.build().map_err(|e| describe(&e))?;
        Ok(Client::new(transport))
    }
}

/// Options shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The client commands.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Submit an execution and print it.
    Submit(SubmitArgs),
    /// Show one execution.
    Get(IdArgs),
    /// List executions (in id order: by partition, then age).
    List(ListArgs),
    /// Cancel an execution.
    Cancel(CancelArgs),
    /// Run a terminal execution again.
    Replay(IdArgs),
    /// Wait for an execution to end and print it; exits 1 if it has not
    /// ended when the timeout passes.
    Wait(WaitArgs),
    /// Show how many executions each lane holds, by state.
    Lanes(LanesArgs),
    /// Show the attempts of an execution.
    Attempts(IdArgs),
    /// Deliver a waitpoint signal: with a token (`--token`, no API token
    /// needed), or to an execution's waitpoint by name (`ID --waitpoint
    /// NAME`, buffered if it has not suspended on it yet).
    Signal(SignalArgs),
    /// Create, show, list, wait for, extend and cancel flows (DAGs of
    /// executions).
    #[command(subcommand)]
    Flow(crate::flow_cmd::FlowCommand),
}

/// `weft submit`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The handler name.
    kind: String,
    /// The input as JSON (`'{"to": "a@example.com"}'`, `'"text"'`), `@FILE`
    /// to read it from a file, or `-` for stdin. Default: null.
    #[arg(long)]
    payload: Option<String>,
    /// The lane (queue).
    #[arg(long)]
    lane: Option<String>,
    /// −1000 ..= 1000; higher is claimed first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Wait this long before the first attempt.
    #[arg(long, conflicts_with = "run_at")]
    delay_ms: Option<i64>,
    /// Run the first attempt at this RFC 3339 time (`2030-01-02T03:04:05Z`).
    #[arg(long)]
    run_at: Option<String>,
    /// Attempts in total, the first included.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Limit per attempt.
    #[arg(long)]
    timeout_ms: Option<i64>,
    /// Limit from submit to the end.
    #[arg(long)]
    deadline_ms: Option<i64>,
    /// A capability the worker must have (repeatable).
    #[arg(long = "requires", value_name = "CAP")]
    requires: Vec<String>,
    /// Submitting the same key again returns the existing execution.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// A label, `KEY=VALUE` (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft signal`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["id", "token"])))]
pub struct SignalArgs {
    /// The execution whose waitpoint to signal (with --waitpoint).
    #[arg(requires = "waitpoint")]
    id: Option<String>,
    /// The waitpoint's name (with the execution id).
    #[arg(long, requires = "id")]
    waitpoint: Option<String>,
    /// A waitpoint token a suspend handed out; it names the execution and
    /// the waitpoint itself.
    #[arg(long, conflicts_with_all = ["id", "waitpoint"])]
    token: Option<String>,
    /// What the signal carries, as JSON, `@FILE` or `-` for stdin. Default:
    /// null.
    #[arg(long)]
    payload: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// A command about one execution.
#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The execution id.
    id: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this state (waiting, delayed, blocked, active, suspended,
    /// completed, failed, cancelled, expired, skipped).
    #[arg(long)]
    state: Option<String>,
    /// Only this lane.
    #[arg(long)]
    lane: Option<String>,
    /// Only this kind.
    #[arg(long)]
    kind: Option<String>,
    /// At most this many, 1 ..= 1000.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue from a previous page.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft cancel`.
#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// The execution id.
    id: String,
    /// Why, for the record.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft wait`.
#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The execution id.
    id: String,
    /// Give up after this long.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft lanes`.
#[derive(clap::Args, Debug)]
pub struct LanesArgs {
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs one client command.
pub async fn run(command: ClientCommand) -> Result<(), String> {
    match command {
        ClientCommand::Submit(args) => submit(args).await,
        ClientCommand::Get(args) => {
            let view = args.common.connect.client()?.get(&args.id).await;
            print_execution(&args.common, &view.map_err(|e| describe(&e))?)
        }
        ClientCommand::List(args) => list(args).await,
        ClientCommand::Cancel(args) => {
            let client = args.common.connect.client()?;
            let view = client.cancel(&args.id, args.reason.as_deref()).await;
            print_execution(&args.common, &view.map_err(|e| describe(&e))?)
        }
        ClientCommand::Replay(args) => {
            let view = args.common.connect.client()?.replay(&args.id).await;
            print_execution(&args.common, &view.map_err(|e| describe(&e))?)
        }
        ClientCommand::Wait(args) => wait(args).await,
        ClientCommand::Lanes(args) => {
            let lanes = args.common.connect.client()?.lanes().await;
            let lanes = lanes.map_err(|e| describe(&e))?;
            if args.common.json {
                return print_json(&serde_json::json!({ "items": lanes }));
            }
            print_lanes(&lanes);
            Ok(())
        }
        ClientCommand::Signal(args) => signal(args).await,
        ClientCommand::Attempts(args) => {
            let attempts = args.common.connect.client()?.attempts(&args.id).await;
            let attempts = attempts.map_err(|e| describe(&e))?;
            if args.common.json {
                return print_json(&serde_json::json!({ "items": attempts }));
            }
            print_attempts(&attempts);
            Ok(())
        }
        ClientCommand::Flow(command) => crate::flow_cmd::run(command).await,
    }
}

async fn submit(args: SubmitArgs) -> Result<(), String> {
    let request = submit_request(&args)?;
    let client = args.common.connect.client()?;
    let submission = client
        .submit_detailed(request)
        .await
        .map_err(|e| describe(&e))?;
    if !args.common.json && !submission.created {
        println!("(the idempotency key was seen before: this is the existing execution)");
    }
    print_execution(&args.common, &submission.execution)
}

/// The request `weft submit` sends; says which flag is wrong.
fn submit_request(args: &SubmitArgs) -> Result<SubmitRequest, String> {
    let payload = match &args.payload {
        Some(text) => parse_payload(text)?,
        None => Value::Null,
    };
    if let Some(run_at) = &args.run_at {
        if weft_api::time::parse_ms(run_at).is_none() {
            return Err(format!(
                "--run-at {run_at:?} is not an RFC 3339 time; write it like 2030-01-02T03:04:05Z"
            ));
        }
    }
    Ok(SubmitRequest {
        kind: args.kind.clone(),
        lane: args.lane.clone(),
        payload,
        priority: args.priority,
        delay_ms: args.delay_ms,
        run_at: args.run_at.clone(),
        max_attempts: args.max_attempts,
        timeout_ms: args.timeout_ms,
        deadline_ms: args.deadline_ms,
        requires: args.requires.clone(),
        idempotency_key: args.idempotency_key.clone(),
        tags: parse_tags(&args.tags)?,
        ..SubmitRequest::default()
    })
}

async fn signal(args: SignalArgs) -> Result<(), String> {
    let payload = match &args.payload {
        Some(text) => parse_payload(text)?,
        None => Value::Null,
    };
    let client = args.common.connect.client()?;
    let view = match (&args.token, &args.id, &args.waitpoint) {
        (Some(token), None, None) => client.signal(token, payload).await,
        (None, Some(id), Some(waitpoint)) => client.signal_execution(id, waitpoint, payload).await,
        _ => {
            return Err("give either --token TOKEN, or an execution id and --waitpoint NAME".into())
        }
    };
    print_execution(&args.common, &view.map_err(|e| describe(&e))?)
}

/// `--payload`: JSON text, `@FILE`, or `-` for stdin.
fn parse_payload(text: &str) -> Result<Value, String> {
    let (source, body) = if text == "-" {
        let mut body = String::new();
        std::io::stdin()
            .read_to_string(&mut body)
            .map_err(|e| format!("--payload -: cannot read stdin: {e}"))?;
        ("stdin", body)
    } else if let Some(path) = text.strip_prefix('@') {
        let body = std::fs::read_to_string(path)
            .map_err(|e| format!("--payload @{path}: cannot read the file: {e}"))?;
        ("the file", body)
    } else {
        ("", text.to_owned())
    };
    serde_json::from_str(&body).map_err(|e| {
        if source.is_empty() {
            format!(
                "--payload is not valid JSON: {e}; quote text as JSON, e.g. --payload '\"hello\"'"
            )
        } else {
            format!("--payload: {source} is not valid JSON: {e}")
        }
    })
}

fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for tag in tags {
        let Some((key, value)) = tag.split_once('=') else {
            return Err(format!("--tag expects KEY=VALUE, got {tag:?}"));
        };
        if key.is_empty() {
            return Err(format!("--tag {tag:?} has an empty key"));
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

async fn list(args: ListArgs) -> Result<(), String> {
    let state = match &args.state {
        Some(text) => Some(State::parse(text).map_err(|_| {
            let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "--state {text:?} is not a state; use one of {}",
                names.join(", ")
            )
        })?),
        None => None,
    };
    let query = ListQuery {
        lane: args.lane.clone(),
        state,
        kind: args.kind.clone(),
        flow_id: None,
        limit: Some(args.limit),
        cursor: args.cursor.clone(),
    };
    let page = args.common.connect.client()?.list(&query).await;
    let page = page.map_err(|e| describe(&e))?;
    if args.common.json {
        return print_json(&page);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.kind.clone(),
                e.lane.clone(),
                e.state.as_str().to_owned(),
                format!("{}/{}", e.attempts, e.max_attempts),
                e.created_at.clone(),
            ]
        })
        .collect();
    let header = ["ID", "KIND", "LANE", "STATE", "ATTEMPTS", "CREATED"];
    print_table(&header, &rows, "no executions match");
    if let Some(cursor) = &page.next_cursor {
        println!("more: weft list --cursor {cursor}");
    }
    Ok(())
}

async fn wait(args: WaitArgs) -> Result<(), String> {
    let client = args.common.connect.client()?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let view = client
        .wait(&args.id, timeout)
        .await
        .map_err(|e| describe(&e))?;
    print_execution(&args.common, &view)?;
    if view.state.is_terminal() {
        Ok(())
    } else {
        Err(format!(
            "{} is still {} after {} ms; wait longer with --timeout-ms",
            view.id,
            view.state.as_str(),
            args.timeout_ms
        ))
    }
}

/// What to tell the user about an error: what went wrong and what to fix.
pub fn describe(error: &Error) -> String {
    match error {
        Error::Unavailable(message) if message.starts_with("cannot reach") => format!(
            "{message}\n  is `weft dev` running? Point elsewhere with --server or WEFT_SERVER."
        ),
        Error::Unavailable(message) => message.clone(),
        Error::InvalidArgument { field, message } if field == "api_token" => {
            format!("{message}\n  pass the right token with --api-token or WEFT_API_TOKEN")
        }
        Error::InvalidArgument { field, message } if field == "server" => {
            format!("--server: {message}")
        }
        Error::InvalidArgument { field, message } if field == "request" => {
            format!("the server refused the request: {message}")
        }
        Error::InvalidToken => "the waitpoint token was refused: it is forged, altered, \
                                expired, or already used (its waitpoint signalled, or its \
                                execution ended)"
            .to_owned(),
        // Over HTTP the id field carries the server's whole message.
        Error::NotFound { what: "object", id } => id.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("cannot print: {e}"))?;
    println!("{text}");
    Ok(())
}

/// Compact JSON for a table cell, cut to `CELL_JSON_CHARS_MAX` characters.
fn cell_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= CELL_JSON_CHARS_MAX {
        return text;
    }
    let cut: String = text.chars().take(CELL_JSON_CHARS_MAX).collect();
    format!("{cut}… (--json shows all)")
}

fn print_execution(common: &CommonArgs, e: &ExecutionView) -> Result<(), String> {
    if common.json {
        return print_json(e);
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("id", e.id.clone()),
        ("kind", e.kind.clone()),
        ("lane", e.lane.clone()),
        ("state", e.state.as_str().to_owned()),
        ("priority", e.priority.to_string()),
        ("attempts", format!("{} of {}", e.attempts, e.max_attempts)),
        ("payload", cell_json(&e.payload)),
    ];
    let optional = [
        ("result", e.result.as_ref().map(cell_json)),
        (
            "error",
            e.error.as_ref().map(|err| match &err.kind {
                Some(kind) => format!("{kind}: {}", err.message),
                None => err.message.clone(),
            }),
        ),
        ("cancel reason", e.cancel_reason.clone()),
        (
            "waiting on",
            e.suspension.as_ref().map(|s| {
                let names: Vec<String> = s
                    .waitpoints
                    .iter()
                    .map(|w| match (w.signalled, &w.timeout_at) {
                        (true, _) => format!("{} (signalled)", w.name),
                        (false, Some(at)) => {
                            format!("{} (until {at}, then {})", w.name, w.on_timeout.as_str())
                        }
                        (false, None) => w.name.clone(),
                    })
                    .collect();
                format!("{} of {}", s.resume_when.as_str(), names.join(", "))
            }),
        ),
        ("flow", e.flow_id.clone()),
        ("flow node", e.flow_node.clone()),
        (
            "requires",
            (!e.requires.is_empty()).then(|| e.requires.join(", ")),
        ),
        ("tags", (!e.tags.is_empty()).then(|| join_tags(&e.tags))),
        ("idempotency key", e.idempotency_key.clone()),
        ("created", Some(e.created_at.clone())),
        ("updated", Some(e.updated_at.clone())),
        ("run at", e.run_at.clone()),
        ("deadline at", e.deadline_at.clone()),
        ("finished", e.finished_at.clone()),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
    Ok(())
}

fn join_tags(tags: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(", ")
}

fn print_lanes(lanes: &[LaneView]) {
    let rows: Vec<Vec<String>> = lanes
        .iter()
        .map(|l| {
            vec![
                l.lane.clone(),
                l.waiting.to_string(),
                l.delayed.to_string(),
                l.active.to_string(),
                l.suspended.to_string(),
                l.blocked.to_string(),
            ]
        })
        .collect();
    let header = [
        "LANE",
        "WAITING",
        "DELAYED",
        "ACTIVE",
        "SUSPENDED",
        "BLOCKED",
    ];
    print_table(&header, &rows, "no lane holds unfinished work");
}

fn print_attempts(attempts: &[AttemptView]) {
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                a.number.to_string(),
                a.worker_id.clone(),
                a.state.as_str().to_owned(),
                a.started_at.clone(),
                a.ended_at.clone().unwrap_or_else(|| "-".to_owned()),
                a.error
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |e| e.message.replace('\n', " ")),
            ]
        })
        .collect();
    let header = ["#", "WORKER", "STATE", "STARTED", "ENDED", "ERROR"];
    print_table(&header, &rows, "no attempts yet");
}

/// Prints rows under a header, columns padded to their widest cell; the
/// last column is not padded.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        println!("({empty})");
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i == last {
                    (*cell).to_owned()
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        println!("{}", padded.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    //! Flag parsing says which flag is wrong and how to write it.
    use super::*;

    #[test]
    fn payload_errors_name_the_flag() {
        assert_eq!(parse_payload(r#"{"a": 1}"#).unwrap()["a"], 1);
        let err = parse_payload("{oops").unwrap_err();
        assert!(err.starts_with("--payload is not valid JSON"), "{err}");
        let err = parse_payload("@/nonexistent/x.json").unwrap_err();
        assert!(err.contains("cannot read the file"), "{err}");
    }

    #[test]
    fn tags_need_key_and_value() {
        let tags = parse_tags(&["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(tags["b"], "x=y");
        assert!(parse_tags(&["novalue".into()])
            .unwrap_err()
            .contains("KEY=VALUE"));
    }

    #[test]
    fn unreachable_server_says_what_to_check() {
        let err = Error::Unavailable("cannot reach the server at http://x: refused".into());
        assert!(describe(&err).contains("is `weft dev` running?"));
    }
}
