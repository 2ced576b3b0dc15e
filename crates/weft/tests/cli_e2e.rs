//! Goal: the client commands and `weft worker --exec` work as real
//! processes against a real `weft dev`: submit, get, list, wait, cancel,
//! lanes, attempts and `flow …` print what they should (tables, the flow
//! drawing and `--json`), a flow from `examples/flows` runs to its end with
//! each member's inputs in `$WEFT_INPUTS`, a
//! shell-command worker completes and fails executions per its exit-code
//! contract, errors say what to fix and exit non-zero, and SIGTERM stops the
//! worker cleanly (killing the commands still running past the grace period,
//! then releasing their tasks).
//!
//! Method: start `weft dev` on a free loopback port with a temporary data
//! directory, run every other command as its own `weft` process with
//! `WEFT_SERVER` pointing at it, and read their stdout, stderr and exit
//! codes. Processes are killed on drop, so a failed assertion leaks none.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A child process killed (SIGKILL) when dropped, unless it already exited.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Waits for a stdout line containing `needle`; returns it.
    fn line_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line containing {needle:?} in 30 s"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Sends SIGTERM and waits (at most 30 s) for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "exit after SIGTERM: {status:?}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `weft` command talking to `server`, with no `WEFT_*` settings
/// inherited from the caller.
fn weft(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command.args(args).env("WEFT_LOG", "warn");
    for var in [
        "WEFT_API_TOKEN",
        "WEFT_API_TOKENS",
        "WEFT_DATA",
        "WEFT_LISTEN",
    ] {
        command.env_remove(var);
    }
    command.env("WEFT_SERVER", server);
    command
}

/// Starts a long-running `weft` process, reading its stdout by lines.
fn spawn(mut command: Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn weft");
    let stdout = child.stdout.take().expect("stdout");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    Running { child, lines }
}

/// Runs a short `weft` command to its end.
fn run(server: &str, args: &[&str]) -> Output {
    weft(server, args).output().expect("run weft")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(server: &str, args: &[&str]) -> String {
    let out = run(server, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "weft {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

/// Runs a `--json` command that must succeed; returns its JSON.
fn ok_json(server: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(server, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// Runs a command that must fail; returns its stderr.
fn fails(server: &str, args: &[&str]) -> String {
    let out = run(server, args);
    assert!(!out.status.success(), "weft {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn start_dev(data: &std::path::Path) -> (Running, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = data.to_str().expect("utf-8 path");
    let server = format!("http://{listen}");
    let dev = spawn(weft(&server, &["dev", "--listen", &listen, "--data", data]));
    dev.line_containing("listening on");
    (dev, server)
}

#[test]
fn client_commands_and_exec_worker_against_weft_dev() {
    let data = tempfile::tempdir().expect("tempdir");
    let (dev, server) = start_dev(data.path());
    let s = server.as_str();

    // Submit and read back.
    let submitted = ok_json(
        s,
        &[
            "submit",
            "echo",
            "--payload",
            r#"{"n": 1}"#,
            "--tag",
            "team=a",
        ],
    );
    let id = submitted["id"].as_str().expect("id").to_owned();
    assert_eq!(submitted["state"], "waiting");
    let got = ok_json(s, &["get", &id]);
    assert_eq!(got["payload"], json!({"n": 1}));
    assert_eq!(got["tags"], json!({"team": "a"}));
    let table = ok(s, &["get", &id]);
    assert!(
        table.contains("state") && table.contains("waiting"),
        "{table}"
    );

    // An echo worker completes it; `wait` returns the result.
    let worker = spawn(weft(s, &["worker", "--lane", "default", "--exec", "cat"]));
    worker.line_containing("claiming");
    let done = ok_json(s, &["wait", &id, "--timeout-ms", "20000"]);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["result"], json!({"n": 1}));
    let attempts = ok_json(s, &["attempts", &id]);
    assert_eq!(attempts["items"][0]["state"], "succeeded", "{attempts}");
    let attempts_table = ok(s, &["attempts", &id]);
    assert!(attempts_table.contains("succeeded"), "{attempts_table}");

    // Text that is not JSON comes back as a JSON string.
    let text = ok_json(s, &["submit", "shout", "--payload", r#""plain text""#]);
    let text_id = text["id"].as_str().expect("id");
    let shouted = ok_json(s, &["wait", text_id, "--timeout-ms", "20000"]);
    assert_eq!(shouted["result"], json!("plain text"));

    // List, with and without filters.
    let listed = ok_json(s, &["list", "--state", "completed"]);
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(ids.contains(&id.as_str()), "{listed}");
    let list_table = ok(s, &["list", "--kind", "echo"]);
    assert!(
        list_table.starts_with("ID") && list_table.contains(&id),
        "{list_table}"
    );

    worker.terminate();
    parked_then_cancelled(s, &id);
    failing_worker(s);
    errors_say_what_to_fix(s);
    dev.terminate();
}

/// Work on a lane nobody serves: `lanes` shows it, `wait` gives up on it,
/// `cancel` ends it (twice is fine), and cancelling `done_id` conflicts.
fn parked_then_cancelled(s: &str, done_id: &str) {
    let parked = ok_json(
        s,
        &["submit", "later", "--lane", "parked", "--priority", "-5"],
    );
    let parked_id = parked["id"].as_str().expect("id");
    let lanes = ok(s, &["lanes"]);
    assert!(
        lanes.starts_with("LANE") && lanes.contains("parked"),
        "{lanes}"
    );
    let lanes_json = ok_json(s, &["lanes"]);
    assert!(lanes_json["items"]
        .as_array()
        .is_some_and(|l| !l.is_empty()));
    let still = fails(s, &["wait", parked_id, "--timeout-ms", "200"]);
    assert!(still.contains("still waiting"), "{still}");
    let cancelled = ok_json(s, &["cancel", parked_id, "--reason", "not needed"]);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["cancel_reason"], "not needed");
    let again = ok_json(s, &["cancel", parked_id]);
    assert_eq!(again["state"], "cancelled");
    let conflict = fails(s, &["cancel", done_id]);
    assert!(conflict.contains("conflict"), "{conflict}");
}

/// A command that exits 3 with `--permanent-exit-codes 3` fails the
/// execution at once, stderr's tail as the message.
fn failing_worker(s: &str) {
    let worker = spawn(weft(
        s,
        &[
            "worker",
            "--lane",
            "bad",
            "--exec",
            "echo \"no luck on attempt $WEFT_ATTEMPT of $WEFT_KIND\" >&2; exit 3",
            "--permanent-exit-codes",
            "3",
        ],
    ));
    worker.line_containing("claiming");
    let submitted = ok_json(
        s,
        &["submit", "doomed", "--lane", "bad", "--max-attempts", "3"],
    );
    let id = submitted["id"].as_str().expect("id");
    let done = ok_json(s, &["wait", id, "--timeout-ms", "20000"]);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"], 1);
    let message = done["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("no luck on attempt 1 of doomed"),
        "{message}"
    );
    assert_eq!(done["error"]["kind"], "exit_3");
    worker.terminate();
}

fn errors_say_what_to_fix(s: &str) {
    let bad_json = fails(s, &["submit", "x", "--payload", "{oops"]);
    assert!(
        bad_json.contains("--payload is not valid JSON"),
        "{bad_json}"
    );
    let bad_tag = fails(s, &["submit", "x", "--tag", "novalue"]);
    assert!(bad_tag.contains("KEY=VALUE"), "{bad_tag}");
    let bad_state = fails(s, &["list", "--state", "done"]);
    assert!(
        bad_state.contains("completed"),
        "lists the states: {bad_state}"
    );
    let refused = fails(s, &["submit", "has space"]);
    assert!(refused.contains("kind"), "{refused}");
    let unknown = fails(s, &["get", "ex_nope"]);
    assert!(unknown.contains("not found"), "{unknown}");
    let port = free_port();
    let nobody = format!("http://127.0.0.1:{port}");
    let unreachable = fails(&nobody, &["lanes"]);
    assert!(
        unreachable.contains("cannot reach the server") && unreachable.contains("weft dev"),
        "{unreachable}"
    );
}

/// Waits until `weft get ID` shows `state`; panics after 30 s.
fn await_state(s: &str, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exec = ok_json(s, &["get", id]);
        if exec["state"] == state {
            return exec;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {state}: {exec}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `state`s of an execution's attempts, oldest first.
fn attempt_states(s: &str, id: &str) -> Vec<String> {
    let attempts = ok_json(s, &["attempts", id]);
    attempts["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["state"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_stopped_exec_worker_kills_its_command_and_releases_the_task() {
    let data = tempfile::tempdir().expect("tempdir");
    let (dev, server) = start_dev(data.path());
    let s = server.as_str();
    // One attempt only: a release must not use it up.
    let submitted = ok_json(
        s,
        &["submit", "slow", "--lane", "stop", "--max-attempts", "1"],
    );
    let id = submitted["id"].as_str().expect("id").to_owned();
    let marker = data.path().join("ran-to-the-end");
    let command = format!("sleep 2; touch '{}'", marker.display());
    let worker = spawn(weft(
        s,
        &[
            "worker",
            "--lane",
            "stop",
            "--shutdown-grace-ms",
            "100",
            "--exec",
            &command,
        ],
    ));
    await_state(s, &id, "active");
    let started = Instant::now();
    worker.terminate();
    // Handed back at once, not one lease (30 s) later, and for free.
    let back = ok_json(s, &["get", &id]);
    assert_eq!(back["state"], "waiting", "{back}");
    assert_eq!(attempt_states(s, &id), ["released"]);
    // The command was killed before the release: it never ran to its end.
    std::thread::sleep(
        (started + Duration::from_secs(3)).saturating_duration_since(Instant::now()),
    );
    assert!(!marker.exists(), "the command outlived its worker");

    let rescuer = spawn(weft(
        s,
        &["worker", "--lane", "stop", "--exec", "echo '\"done\"'"],
    ));
    let done = await_state(s, &id, "completed");
    assert_eq!(done["result"], json!("done"));
    assert_eq!(attempt_states(s, &id), ["released", "succeeded"]);
    rescuer.terminate();
    dev.terminate();
}

#[test]
fn a_killed_worker_process_loses_its_lease_and_another_finishes_the_task() {
    let data = tempfile::tempdir().expect("tempdir");
    let (dev, server) = start_dev(data.path());
    let s = server.as_str();
    let submitted = ok_json(s, &["submit", "slow", "--lane", "crash", "--payload", "{}"]);
    let id = submitted["id"].as_str().expect("id").to_owned();

    // The first worker takes the task and dies with it (SIGKILL on drop).
    let doomed = spawn(weft(
        s,
        &[
            "worker",
            "--lane",
            "crash",
            "--lease-ms",
            "600",
            "--exec",
            "sleep 3",
        ],
    ));
    await_state(s, &id, "active");
    drop(doomed);

    // The engine notices the lapsed lease; a second worker finishes it.
    let rescuer = spawn(weft(
        s,
        &["worker", "--lane", "crash", "--exec", "echo '\"rescued\"'"],
    ));
    let done = await_state(s, &id, "completed");
    assert_eq!(done["result"], json!("rescued"));
    assert_eq!(done["attempts"], json!(2));
    let attempts = ok_json(s, &["attempts", &id]);
    let states: Vec<&str> = attempts["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["state"].as_str())
        .collect();
    assert_eq!(states, ["lease_lost", "succeeded"]);
    rescuer.terminate();
    dev.terminate();
}

/// The example flow: `fetch` → `clean` and `count` → `report`, lane `flows`.
const DIAMOND: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/flows/diamond.json"
);

/// Runs `weft flow create -` with `body` on stdin; returns the flow.
fn create_flow_from_stdin(s: &str, body: &Value) -> Value {
    let mut child = weft(s, &["flow", "create", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(body.to_string().as_bytes())
        .expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flow create -: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_example_flow_runs_to_completion_under_an_exec_worker() {
    let data = tempfile::tempdir().expect("tempdir");
    let (dev, server) = start_dev(data.path());
    let s = server.as_str();
    let created = ok_json(s, &["flow", "create", DIAMOND]);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["state"], "running", "{created}");
    assert_eq!(created["summary"]["total"], 4);
    assert_eq!(created["summary"]["blocked"], 3);

    // Members with upstreams answer their inputs; `fetch` its payload.
    let exec = r#"if [ "$WEFT_INPUTS" = "{}" ]; then cat; else printf '%s' "$WEFT_INPUTS"; fi"#;
    let worker = spawn(weft(s, &["worker", "--lane", "flows", "--exec", exec]));
    worker.line_containing("claiming");
    let done = ok_json(s, &["flow", "wait", &id, "--timeout-ms", "30000"]);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["summary"]["completed"], 4, "{done}");
    let report_id = done["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["key"] == "report")
        .and_then(|n| n["execution_id"].as_str())
        .expect("report")
        .to_owned();
    let report = ok_json(s, &["get", &report_id]);
    let fetched = json!({"fetch": {"url": "https://example.com/data.csv"}});
    assert_eq!(
        report["result"],
        json!({"clean": fetched, "count": fetched}),
        "{report}"
    );
    assert_eq!(report["flow_node"], "report");

    let drawing = ok(s, &["flow", "get", &id]);
    for needle in [
        "4 members: 4 completed",
        "  0  fetch   completed",
        "  1  clean   completed",
        "     count   completed",
        "  2  report  completed",
        "  fetch ──▶ clean\n",
        "  count ──▶ report\n",
    ] {
        assert!(drawing.contains(needle), "{needle:?} not in:\n{drawing}");
    }
    let listed = ok(s, &["flow", "list", "--state", "completed"]);
    assert!(
        listed.starts_with("ID") && listed.contains(&id) && listed.contains("4/4"),
        "{listed}"
    );
    worker.terminate();

    // A flow nobody runs: `wait` gives up on it, `cancel` ends it.
    let parked = create_flow_from_stdin(
        s,
        &json!({"lane": "parked", "nodes": [{"key": "a", "kind": "k"}, {"key": "b", "kind": "k"}],
                "edges": [{"from": "a", "to": "b", "on": "failure"}]}),
    );
    let parked_id = parked["id"].as_str().expect("id");
    let still = fails(s, &["flow", "wait", parked_id, "--timeout-ms", "200"]);
    assert!(still.contains("still running"), "{still}");
    let cancelled = ok(s, &["flow", "cancel", parked_id]);
    assert!(
        cancelled.contains("cancelled") && cancelled.contains("a ──▶ b (on failure)"),
        "{cancelled}"
    );
    let running = ok_json(s, &["flow", "list", "--state", "running"]);
    assert_eq!(running["items"], json!([]), "{running}");

    let unreadable = fails(s, &["flow", "create", "/nonexistent/flow.json"]);
    assert!(unreadable.contains("cannot read"), "{unreadable}");
    let bad_state = fails(s, &["flow", "list", "--state", "done"]);
    assert!(
        bad_state.contains("running"),
        "lists the states: {bad_state}"
    );
    let unknown = fails(s, &["flow", "get", "fl_nope"]);
    assert!(unknown.contains("not found"), "{unknown}");
    dev.terminate();
}
