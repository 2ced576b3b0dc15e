//! Tests on a private server: restarts (faults) and credentials.
//!
//! Goal: with AOF on (`appendfsync always`), every acknowledged submission
//! and transition survives `kill -9` and a restart, and the store's handle
//! carries on by itself (the connection reconnects). After a restart that
//! lost everything (no persistence), the store reloads its library on the
//! first `Function not found` and serves again.
//! A server that requires a password, or an ACL user, is reached with the
//! credentials in the URL.
//! Method: run a private `valkey-server` (from `scripts/valkey.sh bin`, or
//! `WEFT_TEST_VALKEY_BIN`) on a free port in a temporary directory, kill
//! it, start it again, and compare.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_core::{claim_across, ClaimParams, CompleteParams, LeaseRef, PartitionId, State, Store};
use weft_core::{Execution, SubmitParams};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<String> {
    if let Ok(bin) = std::env::var("WEFT_TEST_VALKEY_BIN") {
        return Some(bin);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/valkey.sh");
    let out = Command::new("bash").arg(script).arg("bin").output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !path.is_empty()).then_some(path)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn start(bin: &str, port: u16, dir: &std::path::Path, aof: bool) -> Server {
    start_with(bin, port, dir, aof, None).await
}

async fn start_with(
    bin: &str,
    port: u16,
    dir: &std::path::Path,
    aof: bool,
    password: Option<&str>,
) -> Server {
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args(["--appendonly", if aof { "yes" } else { "no" }])
        .args(["--appendfsync", "always", "--save", ""]);
    if let Some(password) = password {
        cmd.args(["--requirepass", password]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start valkey-server");
    let server = Server { child, port };
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{port}")).expect("url");
    for _ in 0..100 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
            {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("valkey-server did not answer on port {port}");
}

/// Retries `get` while the store reconnects.
async fn get_eventually(store: &dyn Store, exec: &Execution) -> weft_core::Result<Execution> {
    for _ in 0..100 {
        match store.execution_get(&exec.id).await {
            Err(e) if e.retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            other => return other,
        }
    }
    store.execution_get(&exec.id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_a_restart() {
    let Some(bin) = binary() else {
        eprintln!("skipped: no valkey-server (set WEFT_TEST_VALKEY_BIN or run scripts/test.sh)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(&bin, port, dir.path(), true).await;
    let url = format!("redis://127.0.0.1:{}", server.port);
    let store = common::connect(common::config(&url, Some(4))).await;
    let mut execs = Vec::new();
    for i in 0..40 {
        let params = SubmitParams::new("restart.job", serde_json::json!({"i": i}));
        execs.push(
            store
                .execution_submit(&params)
                .await
                .expect("submit")
                .execution,
        );
    }
    let claim = ClaimParams {
        worker_id: "w".into(),
        lanes: vec!["default".into()],
        capabilities: vec![],
        max: 10,
        lease_ms: 60_000,
    };
    for task in claim_across(&store, &claim, PartitionId(0))
        .await
        .expect("claim")
    {
        let lease = LeaseRef {
            lease_id: task.lease.id.clone(),
            epoch: task.lease.epoch,
        };
        let done = CompleteParams {
            execution_id: task.execution_id,
            lease,
            result: 1.into(),
        };
        store.execution_complete(&done).await.expect("complete");
    }
    let mut before = Vec::new();
    for exec in &execs {
        before.push(store.execution_get(&exec.id).await.expect("get"));
    }
    assert_eq!(
        before
            .iter()
            .filter(|e| e.state == State::Completed)
            .count(),
        10
    );

    drop(server); // SIGKILL: no shutdown, no final fsync beyond `always`.
    let server = start(&bin, port, dir.path(), true).await;
    for exec in &before {
        assert_eq!(
            &get_eventually(&store, exec)
                .await
                .expect("get after restart"),
            exec
        );
    }
    for p in store.partition_count().iter() {
        let audit = store.partition_audit(p).await.expect("audit");
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    }

    // A restart that keeps nothing: the library is gone too, and the store
    // reloads it on its next call.
    drop(server);
    let empty = tempfile::tempdir().expect("tempdir");
    let _server = start(&bin, port, empty.path(), false).await;
    let lost = get_eventually(&store, &before[0]).await;
    assert!(
        matches!(lost, Err(weft_core::Error::NotFound { .. })),
        "{lost:?}"
    );
    let again = store
        .execution_submit(&SubmitParams::new("k", 2.into()))
        .await
        .expect("submit");
    assert!(again.created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_url() {
    let Some(bin) = binary() else {
        eprintln!("skipped: no valkey-server (set WEFT_TEST_VALKEY_BIN or run scripts/test.sh)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = start_with(&bin, port, dir.path(), false, Some("s3cret")).await;
    let refused = weft_valkey::ValkeyStore::connect(common::config(
        &format!("redis://127.0.0.1:{port}"),
        Some(2),
    ))
    .await;
    assert!(refused.is_err(), "no password: {refused:?}");
    let store = common::connect(common::config(
        &format!("redis://:s3cret@127.0.0.1:{port}"),
        Some(2),
    ))
    .await;
    store
        .execution_submit(&SubmitParams::new("k", 1.into()))
        .await
        .expect("submit");

    // An ACL user limited to Weft's needs.
    let admin = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{port}")).expect("url");
    let mut conn = admin
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "weft", "on", ">pw", "~*", "&*", "+@all"])
        .query_async(&mut conn)
        .await
        .expect("acl");
    let url = format!("redis://weft:pw@127.0.0.1:{port}");
    let store = common::connect(common::config(&url, Some(2))).await;
    store
        .execution_submit(&SubmitParams::new("k", 2.into()))
        .await
        .expect("submit as weft");
}
