//! Goal: `weft dev` and `weft server` work as real processes: the API answers
//! after the `listening on` line, jobs go through submit, claim, complete,
//! fail and retry, cancel and wait, a dead worker's lease is recovered by the
//! engine, auth turns on with tokens, waitpoint tokens outlive a restart and
//! a key rotation (`weft keys rotate`, `weft signal`), and SIGTERM exits 0.
//!
//! Method: start the binary on a free loopback port with a temporary data
//! directory, drive it over HTTP, stop it with SIGTERM and check its exit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

/// A running `weft` process and what it printed.
struct Weft {
    child: Child,
    base: String,
    lines: mpsc::Receiver<String>,
    client: reqwest::Client,
    token: Option<String>,
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A `weft` command with no `WEFT_*` settings inherited from the caller.
fn weft_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command.args(args).env("WEFT_LOG", "warn");
    for var in [
        "WEFT_API_TOKENS",
        "WEFT_LISTEN",
        "WEFT_DATA",
        "WEFT_STORE",
        "WEFT_PAYLOAD_BYTES_MAX",
        "WEFT_VALKEY_KEY_PREFIX",
        "WEFT_SIGNING_KEYS",
        "WEFT_SERVER",
        "WEFT_API_TOKEN",
    ] {
        command.env_remove(var);
    }
    command
}

/// Spawns `command` (which must name `--listen 127.0.0.1:{port}`) and waits
/// for its `listening on` line.
fn spawn(mut command: Command, port: u16) -> Weft {
    // Standard error stays as the caller set it (inherited by default).
    let mut child = command.stdout(Stdio::piped()).spawn().expect("spawn weft");
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("a `listening on` line in 30 s");
        if line.contains("listening on") {
            assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
            break;
        }
    }
    Weft {
        child,
        base: format!("http://127.0.0.1:{port}"),
        lines,
        client: reqwest::Client::new(),
        token: None,
    }
}

/// `weft dev` over `data`, with `extra` arguments.
fn start_dev(data: &Path, extra: &[&str]) -> Weft {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = data.to_str().expect("utf-8 path");
    let mut args = vec!["dev", "--listen", &listen, "--data", data];
    args.extend_from_slice(extra);
    spawn(weft_command(&args), port)
}

impl Weft {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("text");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn submit(&self, body: Value) -> String {
        let (status, exec) = self.post("/v1/executions", body).await;
        assert_eq!(status, StatusCode::CREATED, "{exec}");
        exec["id"].as_str().expect("id").to_owned()
    }

    /// Claims one task from `lane`, waiting up to `wait_ms`.
    async fn claim(&self, lane: &str, lease_ms: i64, wait_ms: i64) -> Value {
        let body =
            json!({"worker_id": "e2e", "lanes": [lane], "lease_ms": lease_ms, "wait_ms": wait_ms});
        let (status, answer) = self.post("/v1/claims", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["tasks"][0].clone()
    }

    /// Sends SIGTERM and waits up to 20 s for the exit.
    fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "weft did not exit within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.lines.try_iter().collect())
    }
}

fn lease(task: &Value) -> Value {
    json!({"lease_id": task["lease"]["id"], "epoch": task["lease"]["epoch"]})
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    base
}

/// Submit, claim, complete, and a waiter that sees the end.
async fn complete_cycle(weft: &Weft) {
    let id = weft
        .submit(json!({"kind": "hello", "payload": {"name": "world"}}))
        .await;
    let waiter = {
        let client = weft.client.clone();
        let url = format!("{}/v1/executions/{id}/wait?timeout_ms=20000", weft.base);
        tokio::spawn(async move {
            client
                .get(url)
                .send()
                .await
                .expect("wait")
                .json::<Value>()
                .await
        })
    };
    let task = weft.claim("default", 30_000, 5_000).await;
    assert_eq!(task["execution_id"], id.as_str());
    let body = with(lease(&task), json!({"result": "hi"}));
    let (status, done) = weft
        .post(&format!("/v1/executions/{id}/complete"), body)
        .await;
    assert_eq!(
        (status, done["state"].clone()),
        (StatusCode::OK, json!("completed"))
    );
    let waited = waiter.await.expect("join").expect("json");
    assert_eq!(
        (waited["state"].clone(), waited["result"].clone()),
        (json!("completed"), json!("hi"))
    );
}

/// A failure with attempts left comes back after its backoff as attempt 2.
async fn fail_and_retry(weft: &Weft) {
    let backoff = json!({"initial_ms": 100, "max_ms": 100, "multiplier": 1.0, "jitter": 0.0});
    let id = weft
        .submit(json!({"kind": "flaky", "lane": "retry", "max_attempts": 2, "backoff": backoff}))
        .await;
    let task = weft.claim("retry", 30_000, 5_000).await;
    let failure = with(lease(&task), json!({"error": {"message": "try again"}}));
    let (status, failed) = weft
        .post(&format!("/v1/executions/{id}/fail"), failure)
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["state"], "delayed", "{failed}");
    // The engine makes it claimable again; the long-poll wakes for it.
    let retry = weft.claim("retry", 30_000, 10_000).await;
    assert_eq!(
        (retry["execution_id"].as_str(), retry["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    let (_, done) = weft
        .post(&format!("/v1/executions/{id}/complete"), lease(&retry))
        .await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["attempts"], 2);
}

/// A worker that claims with a short lease and dies: the engine returns the
/// execution to the queue and the next claim gets attempt 2.
async fn lease_recovery(weft: &Weft) {
    let id = weft
        .submit(json!({"kind": "fragile", "lane": "lease"}))
        .await;
    let first = weft.claim("lease", 200, 5_000).await;
    assert_eq!(first["attempt"], 1);
    let started = Instant::now();
    let second = weft.claim("lease", 30_000, 15_000).await;
    assert_eq!(
        (second["execution_id"].as_str(), second["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let (_, attempts) = weft.get(&format!("/v1/executions/{id}/attempts")).await;
    assert_eq!(attempts["items"][0]["state"], "lease_lost", "{attempts}");
    assert_eq!(attempts["items"][1]["state"], "running", "{attempts}");
    // The dead worker's late completion is refused.
    let (status, late) = weft
        .post(&format!("/v1/executions/{id}/complete"), lease(&first))
        .await;
    assert_eq!(
        (status, late["error"]["kind"].clone()),
        (StatusCode::CONFLICT, json!("lease_lost"))
    );
}

async fn cancel(weft: &Weft) {
    let id = weft
        .submit(json!({"kind": "unwanted", "lane": "cancel", "delay_ms": 60_000}))
        .await;
    let (status, cancelled) = weft
        .post(
            &format!("/v1/executions/{id}/cancel"),
            json!({"reason": "no"}),
        )
        .await;
    assert_eq!(
        (status, cancelled["state"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    let (_, waited) = weft
        .get(&format!("/v1/executions/{id}/wait?timeout_ms=0"))
        .await;
    assert_eq!(waited["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_jobs_end_to_end_and_stops_on_sigterm() {
    let data = tempfile::tempdir().expect("tempdir");
    let weft = start_dev(&data.path().join("state"), &[]);
    let (status, health) = weft.get("/healthz").await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
    complete_cycle(&weft).await;
    fail_and_retry(&weft).await;
    lease_recovery(&weft).await;
    cancel(&weft).await;
    let (_, lanes) = weft.get("/v1/lanes").await;
    let lane_names: Vec<&str> = lanes["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|l| l["lane"].as_str())
        .collect();
    assert!(lane_names.contains(&"lease"), "{lanes}");
    assert!(data.path().join("state").join("weft.sqlite3").exists());
    let (status, lines) = weft.terminate();
    assert!(status.success(), "exit {status:?}");
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_turn_auth_on() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut weft = start_dev(data.path(), &["--api-token", "t1", "--api-token", "t2"]);
    let (status, _) = weft.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = weft.get("/v1/lanes").await;
    assert_eq!(
        (status, body["error"]["kind"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    weft.token = Some("wrong".into());
    assert_eq!(weft.get("/v1/lanes").await.0, StatusCode::UNAUTHORIZED);
    weft.token = Some("t2".into());
    assert_eq!(weft.get("/v1/lanes").await.0, StatusCode::OK);
    weft.submit(json!({"kind": "k"})).await;
    let (status, _) = weft.terminate();
    assert!(status.success(), "exit {status:?}");

    // The same through the environment, comma-separated.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data_dir = data.path().to_str().expect("utf-8");
    let mut command = weft_command(&["dev", "--listen", &listen, "--data", data_dir]);
    command.env("WEFT_API_TOKENS", "e1,e2");
    let mut weft = spawn(command, port);
    assert_eq!(weft.get("/v1/executions").await.0, StatusCode::UNAUTHORIZED);
    weft.token = Some("e2".into());
    let (status, all) = weft.get("/v1/executions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        all["items"].as_array().map(Vec::len),
        Some(1),
        "the store survived the restart"
    );
    let (status, _) = weft.terminate();
    assert!(status.success(), "exit {status:?}");
}

/// Submits a job on `lane`, claims it and suspends it on `approval`;
/// returns the waitpoint's token.
async fn suspended_token(weft: &Weft, lane: &str) -> String {
    weft.submit(json!({"kind": "deploy", "lane": lane})).await;
    let task = weft.claim(lane, 30_000, 5_000).await;
    let id = task["execution_id"].as_str().expect("id");
    let body = with(lease(&task), json!({"waitpoints": [{"name": "approval"}]}));
    let (status, answer) = weft
        .post(&format!("/v1/executions/{id}/suspend"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["waitpoints"][0]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waitpoint_tokens_outlive_a_restart_and_a_rotation() {
    let data = tempfile::tempdir().expect("tempdir");
    let weft = start_dev(data.path(), &[]);
    let before_restart = suspended_token(&weft, "a").await;
    let before_rotation = suspended_token(&weft, "b").await;
    let keys = data.path().join("signing-keys.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys)
            .expect("keyring")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (status, _) = weft.terminate();
    assert!(status.success());

    let weft = start_dev(data.path(), &[]);
    let (status, resumed) = weft
        .post("/v1/signals", json!({"token": before_restart}))
        .await;
    assert_eq!(status, StatusCode::OK, "the keys were reused: {resumed}");
    assert_eq!(resumed["execution"]["state"], "waiting");

    let data_dir = data.path().to_str().expect("utf-8 path");
    let rotated = weft_command(&["keys", "rotate", "--data", data_dir])
        .output()
        .expect("weft keys rotate");
    assert!(rotated.status.success(), "{rotated:?}");
    let new_key = String::from_utf8_lossy(&rotated.stdout).trim().to_owned();
    // The server looks at the file at most once a second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let fresh = suspended_token(&weft, "c").await;
    assert!(
        fresh.contains(&format!("~{new_key}~")),
        "{fresh} by {new_key}"
    );
    let signal = |token: &str| {
        weft_command(&[
            "signal",
            "--token",
            token,
            "--payload",
            r#"{"by": "cli"}"#,
            "--json",
        ])
        .env("WEFT_SERVER", &weft.base)
        .output()
        .expect("weft signal")
    };
    let old = signal(&before_rotation);
    assert!(old.status.success(), "within the grace: {old:?}");
    let replayed = signal(&before_rotation);
    assert!(!replayed.status.success());
    let stderr = String::from_utf8_lossy(&replayed.stderr);
    assert!(stderr.contains("already used"), "{stderr}");
    assert!(signal(&fresh).status.success());
    let (status, _) = weft.terminate();
    assert!(status.success());

    let missing = data.path().join("none.json");
    let refused = weft_command(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &format!("sqlite://{data_dir}/server.sqlite3"),
        "--signing-keys",
        missing.to_str().expect("utf-8 path"),
    ])
    .output()
    .expect("weft server");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("weft keys rotate --file"), "{stderr}");
}

/// The test Valkey as a `valkey://` URL; `scripts/test.sh` starts it.
fn valkey_url() -> String {
    let url = std::env::var("WEFT_TEST_VALKEY_URL")
        .expect("WEFT_TEST_VALKEY_URL is unset: run scripts/test.sh, which starts Valkey");
    url.replacen("redis://", "valkey://", 1)
}

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("e2e-{}-{nanos}:", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_runs_jobs_on_sqlite_and_on_valkey() {
    let data = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", data.path().join("server.db").display());
    let valkey = valkey_url();
    let prefix = unique_prefix();
    for store in [sqlite.as_str(), valkey.as_str()] {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let args = [
            "server",
            "--listen",
            &listen,
            "--store",
            store,
            "--valkey-key-prefix",
            &prefix,
        ];
        let weft = spawn(weft_command(&args), port);
        assert_eq!(weft.get("/healthz").await.0, StatusCode::OK, "{store}");
        complete_cycle(&weft).await;
        fail_and_retry(&weft).await;
        lease_recovery(&weft).await;
        cancel(&weft).await;
        let (status, _) = weft.terminate();
        assert!(status.success(), "{store}: exit {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_waits_for_a_valkey_that_is_down_at_start() {
    let valkey_bin = std::env::var("WEFT_TEST_VALKEY_BIN")
        .expect("WEFT_TEST_VALKEY_BIN is unset: run scripts/test.sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let valkey_port = free_port();
    let store = format!("valkey://127.0.0.1:{valkey_port}");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log_path = dir.path().join("weft.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = weft_command(&["server", "--listen", &listen, "--store", &store]);
    command.env("WEFT_LOG", "warn").stderr(log);
    let dir_path = dir.path().to_path_buf();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        Command::new(valkey_bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &valkey_port.to_string(),
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir_path)
            .stdout(Stdio::null())
            .spawn()
            .expect("start valkey-server")
    });
    let weft = spawn(command, port);
    let mut valkey = starter.join().expect("valkey starter");
    weft.submit(json!({"kind": "after-the-wait"})).await;
    let (status, _) = weft.terminate();
    let _ = valkey.kill();
    let _ = valkey.wait();
    assert!(status.success(), "exit {status:?}");
    let log = std::fs::read_to_string(&log_path).expect("read log");
    assert!(
        log.contains("unavailable") && log.contains("retrying"),
        "{log}"
    );
}
