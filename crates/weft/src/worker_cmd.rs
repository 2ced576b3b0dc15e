//! `weft worker --lane L --exec 'COMMAND'`: a worker for any kind that runs
//! a shell command per task, built on the Rust SDK.
//!
//! The contract with the command:
//!
//! - It runs as `sh -c COMMAND` in its own process group, with the task's
//!   payload as JSON on stdin and `WEFT_EXECUTION_ID`, `WEFT_KIND`,
//!   `WEFT_ATTEMPT` and `WEFT_LANE` in its environment. A flow member also
//!   gets `WEFT_FLOW_ID`, `WEFT_FLOW_NODE` and `WEFT_INPUTS`, its
//!   upstreams' results as a JSON object by node key, when that fits in
//!   `INPUTS_ENV_BYTES_MAX` (an environment variable is limited to 128 KiB
//!   on Linux); larger inputs are left out, with a warning, and the command
//!   reads the upstream executions with `weft get` instead.
//! - Exit code 0 completes the execution. Its stdout is the result: parsed
//!   as JSON, or kept as a JSON string when it is not JSON (trailing
//!   whitespace trimmed); empty stdout is `null`. Stdout over
//!   `STDOUT_BYTES_MAX` fails the execution without retry.
//! - Any other exit code fails the attempt with the tail of stderr as the
//!   message and `exit_N` as the error kind. Weft retries it while attempts
//!   are left (75, `EX_TEMPFAIL`, is the conventional "try again later"),
//!   unless `--permanent-exit-codes` lists the code: then the execution
//!   fails at once. A command killed by a signal is retried.
//! - When the execution is cancelled, its lease is lost, or shutdown's grace
//!   period ends, the whole process group is killed (`SIGKILL`).
//!
//! On SIGTERM or Ctrl-C the worker stops claiming, lets running commands
//! finish for `--shutdown-grace-ms`, then kills the rest (their process
//! groups, before anything else) and releases their tasks, which are
//! claimable again at once without using an attempt; then it exits.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use weft_sdk::{TaskContext, Worker, WorkerError};

use crate::client_cmd::{describe, ConnectArgs};

/// The most stdout a command may write: the default payload limit.
const STDOUT_BYTES_MAX: usize = weft_core::PAYLOAD_BYTES_MAX_DEFAULT as usize;
/// How much of the end of stderr becomes the failure message.
const STDERR_TAIL_BYTES: usize = 2048;
/// The largest `WEFT_INPUTS` passed to a command: under Linux's 128 KiB
/// limit on one environment string, with room for the name.
const INPUTS_ENV_BYTES_MAX: usize = 96 * 1024;

/// `weft worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// A lane to claim from (repeatable; at least one).
    #[arg(long = "lane", value_name = "LANE", required = true)]
    lanes: Vec<String>,
    /// The shell command to run per task (`sh -c COMMAND`); see `weft worker
    /// --help` for its contract.
    #[arg(long, value_name = "COMMAND")]
    exec: String,
    /// Commands running at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// A capability this worker has (repeatable).
    #[arg(long = "capability", value_name = "CAP")]
    capabilities: Vec<String>,
    /// Lease per task; heartbeats renew it every third of it.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Exit codes that fail the execution at once, without retry
    /// (comma-separated, e.g. `2,64`). Every other non-zero code is retried.
    #[arg(long, value_delimiter = ',', value_name = "CODES")]
    permanent_exit_codes: Vec<i32>,
    /// The name recorded on attempts (default: HOST-PID-RANDOM).
    #[arg(long)]
    worker_id: Option<String>,
    /// How long shutdown waits for running commands before killing them.
    #[arg(long, default_value_t = 30_000)]
    shutdown_grace_ms: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// What every task's command needs.
#[derive(Debug)]
struct Exec {
    command: String,
    permanent_exit_codes: Vec<i32>,
}

/// Runs the worker until SIGTERM or Ctrl-C.
pub async fn run(args: WorkerArgs) -> Result<(), String> {
    let client = args.connect.client()?;
    let exec = Arc::new(Exec {
        command: args.exec.clone(),
        permanent_exit_codes: args.permanent_exit_codes.clone(),
    });
    let mut builder = Worker::builder(client.transport().clone())
        .lanes(args.lanes.iter().cloned())
        .capabilities(args.capabilities.iter().cloned())
        .concurrency(args.concurrency)
        .lease_ms(args.lease_ms)
        .shutdown_grace(Duration::from_millis(args.shutdown_grace_ms))
        .fallback_handler(move |ctx| run_command(Arc::clone(&exec), ctx));
    if let Some(id) = &args.worker_id {
        builder = builder.worker_id(id);
    }
    let worker = builder.build().map_err(|e| describe(&e))?;
    println!(
        "worker {} claiming every kind from {} at {}; running `{}` per task (concurrency {})",
        worker.worker_id(),
        args.lanes.join(", "),
        args.connect.server,
        args.exec,
        args.concurrency
    );
    let metrics = worker
        .run_until(stop_signal())
        .await
        .map_err(|e| describe(&e))?;
    println!(
        "worker stopped: {} claimed, {} completed, {} failed, {} lease lost, {} cancelled, \
         {} released",
        metrics.claimed,
        metrics.completed,
        metrics.failed,
        metrics.lease_lost,
        metrics.cancelled,
        metrics.released
    );
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Kills a command's whole process group when dropped, unless disarmed:
/// `sh -c` may leave children that killing `sh` alone would orphan.
struct GroupKiller(Option<i32>);

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) takes plain integers and touches no memory of
            // ours; the group is the child's own (process_group(0)), and the
            // child is not reaped yet, so the id cannot have been reused.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The handler for every kind: run the command for one task.
async fn run_command(exec: Arc<Exec>, ctx: TaskContext) -> Result<Value, WorkerError> {
    let mut child = spawn(&exec.command, &ctx)?;
    let mut killer = GroupKiller(child.id().and_then(|pid| i32::try_from(pid).ok()));
    tracing::info!(
        execution_id = ctx.execution_id(),
        kind = ctx.kind(),
        attempt = ctx.attempt(),
        "running the command"
    );
    feed_stdin(&mut child, ctx.payload());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = tokio::select! {
        finished = collect(&mut child, stdout, stderr) => finished,
        reason = ctx.cancelled() => {
            killer.kill();
            let _ = child.wait().await;
            tracing::info!(
                execution_id = ctx.execution_id(), reason = reason.as_str(),
                "killed the command"
            );
            return Err(WorkerError::new(format!("the command was killed: {}", reason.as_str())));
        }
    };
    killer.disarm();
    let (status, stdout, stderr) = finished;
    let status =
        status.map_err(|e| WorkerError::new(format!("cannot wait for the command: {e}")))?;
    outcome(&exec, status, &stdout, &stderr)
}

fn spawn(command: &str, ctx: &TaskContext) -> Result<Child, WorkerError> {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .env("WEFT_EXECUTION_ID", ctx.execution_id())
        .env("WEFT_KIND", ctx.kind())
        .env("WEFT_ATTEMPT", ctx.attempt().to_string())
        .env("WEFT_LANE", ctx.lane());
    set_flow_env(&mut shell, ctx);
    shell
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| WorkerError::new(format!("cannot start `sh -c {command}`: {e}")))
}

/// `WEFT_FLOW_ID`, `WEFT_FLOW_NODE` and `WEFT_INPUTS` for a flow member
/// (see the module docs); none of them, even inherited, for other tasks.
fn set_flow_env(shell: &mut Command, ctx: &TaskContext) {
    for name in ["WEFT_FLOW_ID", "WEFT_FLOW_NODE", "WEFT_INPUTS"] {
        shell.env_remove(name);
    }
    let (Some(flow_id), Some(node)) = (ctx.flow_id(), ctx.flow_node()) else {
        return;
    };
    shell
        .env("WEFT_FLOW_ID", flow_id)
        .env("WEFT_FLOW_NODE", node);
    match serde_json::to_string(ctx.inputs()) {
        Ok(inputs) if inputs.len() <= INPUTS_ENV_BYTES_MAX => {
            shell.env("WEFT_INPUTS", inputs);
        }
        Ok(inputs) => tracing::warn!(
            execution_id = ctx.execution_id(),
            bytes = inputs.len(),
            "the inputs are too large for WEFT_INPUTS; the command gets none"
        ),
        Err(error) => tracing::warn!(
            execution_id = ctx.execution_id(), %error,
            "the inputs could not be encoded; the command gets no WEFT_INPUTS"
        ),
    }
}

/// Writes the payload to the child's stdin and closes it, in the
/// background: a command that does not read its stdin must not block us.
fn feed_stdin(child: &mut Child, payload: &Value) {
    let Some(mut stdin) = child.stdin.take() else {
        return;
    };
    let body = serde_json::to_vec(payload).unwrap_or_default();
    tokio::spawn(async move {
        // A command that exits without reading gives a broken pipe: fine.
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
}

type Finished = (std::io::Result<ExitStatus>, Captured, Vec<u8>);

/// Stdout up to `STDOUT_BYTES_MAX`, and whether the command wrote more.
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

async fn collect(
    child: &mut Child,
    stdout: Option<impl AsyncRead + Unpin>,
    stderr: Option<impl AsyncRead + Unpin>,
) -> Finished {
    let out = async {
        match stdout {
            Some(reader) => read_capped(reader, STDOUT_BYTES_MAX).await,
            None => Captured {
                bytes: Vec::new(),
                overflowed: false,
            },
        }
    };
    let err = async {
        match stderr {
            Some(reader) => read_tail(reader, STDERR_TAIL_BYTES).await,
            None => Vec::new(),
        }
    };
    let (status, out, err) = tokio::join!(child.wait(), out, err);
    (status, out, err)
}

/// Reads to the end, keeping the first `max` bytes.
async fn read_capped(mut reader: impl AsyncRead + Unpin, max: usize) -> Captured {
    let mut captured = Captured {
        bytes: Vec::new(),
        overflowed: false,
    };
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = reader.read(&mut chunk).await {
        let room = max - captured.bytes.len();
        if n > room {
            captured.overflowed = true;
        }
        captured.bytes.extend_from_slice(&chunk[..n.min(room)]);
    }
    captured
}

/// Reads to the end, keeping the last `keep` bytes.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    while let Ok(n @ 1..) = reader.read(&mut chunk).await {
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > 2 * keep {
            tail.drain(..tail.len() - keep);
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

/// The attempt's outcome from the command's exit status and output.
fn outcome(
    exec: &Exec,
    status: ExitStatus,
    stdout: &Captured,
    stderr: &[u8],
) -> Result<Value, WorkerError> {
    if status.success() {
        if stdout.overflowed {
            return Err(WorkerError::permanent(format!(
                "the command wrote more than {STDOUT_BYTES_MAX} bytes to stdout; \
                 the result is limited to that"
            ))
            .with_kind("result_too_large"));
        }
        return Ok(parse_result(&stdout.bytes));
    }
    let tail = String::from_utf8_lossy(stderr);
    let tail = tail.trim();
    let detail = if tail.is_empty() {
        "(stderr was empty)".to_owned()
    } else {
        tail.to_owned()
    };
    match status.code() {
        Some(code) => {
            let error = WorkerError::new(format!(
                "`{}` exited with code {code}: {detail}",
                exec.command
            ))
            .with_kind(format!("exit_{code}"));
            if exec.permanent_exit_codes.contains(&code) {
                Err(error.non_retryable())
            } else {
                Err(error)
            }
        }
        None => {
            let signal = status.signal().unwrap_or(0);
            Err(WorkerError::new(format!(
                "`{}` was killed by signal {signal}: {detail}",
                exec.command
            ))
            .with_kind("killed"))
        }
    }
}

/// Stdout as JSON, or as a JSON string when it is not JSON; empty is null.
fn parse_result(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim_end();
    if text.trim_start().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    //! The exit-code and stdout contract, without a server.
    use super::*;

    fn exec(permanent: &[i32]) -> Exec {
        Exec {
            command: "cmd".into(),
            permanent_exit_codes: permanent.to_vec(),
        }
    }

    fn captured(text: &str) -> Captured {
        Captured {
            bytes: text.as_bytes().to_vec(),
            overflowed: false,
        }
    }

    #[test]
    fn stdout_is_json_or_a_string() {
        assert_eq!(parse_result(b"{\"a\": 1}\n"), serde_json::json!({"a": 1}));
        assert_eq!(
            parse_result(b"hello world\n"),
            Value::String("hello world".into())
        );
        assert_eq!(parse_result(b"  \n"), Value::Null);
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        let ok = ExitStatus::from_raw(0);
        assert_eq!(outcome(&exec(&[]), ok, &captured("1"), b"").unwrap(), 1);
        let tempfail = ExitStatus::from_raw(75 << 8);
        let err = outcome(&exec(&[2]), tempfail, &captured(""), b"try later\n").unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.kind(), Some("exit_75"));
        assert!(err.message().ends_with("try later"), "{err}");
        let usage = ExitStatus::from_raw(2 << 8);
        let err = outcome(&exec(&[2]), usage, &captured(""), b"").unwrap_err();
        assert!(!err.is_retryable());
        let killed = ExitStatus::from_raw(9);
        let err = outcome(&exec(&[]), killed, &captured(""), b"").unwrap_err();
        assert!(
            err.is_retryable() && err.message().contains("signal 9"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn tails_and_caps_are_bounded() {
        let long = vec![b'x'; 10_000];
        let tail = read_tail(&long[..], 100).await;
        assert_eq!(tail.len(), 100);
        let capped = read_capped(&long[..], 4096).await;
        assert!(capped.overflowed && capped.bytes.len() == 4096);
    }
}
