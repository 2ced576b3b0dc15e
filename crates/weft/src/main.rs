//! The `weft` command.
//!
//! `weft engine --store sqlite://PATH` runs the engine alone against a store
//! until SIGTERM or Ctrl-C, releasing its partitions on the way out.
//! `weft dev` and `weft server` serve the HTTP API with an engine (`serve`).
//! `weft submit`, `get`, `list`, … and `weft flow …` talk to a server
//! (`client_cmd`, `flow_cmd`); `weft signal` delivers a waitpoint signal;
//! `weft worker` runs a shell command per task (`worker_cmd`); `weft keys`
//! rotates and lists the keys that sign waitpoint tokens (`keys_cmd`).

mod client_cmd;
mod flow_cmd;
mod keys_cmd;
mod serve;
mod store_url;
mod worker_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_core::PartitionCount;
use weft_engine::{Engine, EngineConfig, OWNERSHIP_LEASE_MS_DEFAULT};

/// Weft: durable execution for background jobs and workflows.
#[derive(Parser, Debug)]
#[command(name = "weft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run only the engine (partition ownership and timers) against a store.
    Engine(EngineArgs),
    /// Run the HTTP API and the engine over an embedded SQLite store in
    /// `--data` (default `.weft`): one command, a working system.
    Dev(serve::DevArgs),
    /// Run the HTTP API and the engine against the store `--store` names.
    Server(serve::ServerArgs),
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
    /// Run a worker that runs a shell command per task (any kind).
    Worker(worker_cmd::WorkerArgs),
    /// Rotate or list the keys that sign waitpoint tokens.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
}

#[derive(clap::Args, Debug)]
struct EngineArgs {
    /// Where the state lives: `sqlite://PATH` (the file is created if missing)
    /// or `valkey://HOST:PORT[/DB]`.
    #[arg(long, env = "WEFT_STORE")]
    store: String,
    /// Partition count when the store is new; must match a store's recorded
    /// count otherwise.
    #[arg(long, env = "WEFT_PARTITIONS")]
    partitions: Option<u16>,
    /// How long this instance holds its partitions without renewing, in ms.
    #[arg(long, env = "WEFT_OWNERSHIP_LEASE_MS", default_value_t = OWNERSHIP_LEASE_MS_DEFAULT)]
    ownership_lease_ms: i64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("weft: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Engine(args) => run_engine(args).await,
            Command::Dev(args) => serve::run_dev(args).await,
            Command::Server(args) => serve::run_server(args).await,
            Command::Client(command) => client_cmd::run(command).await,
            Command::Worker(args) => worker_cmd::run(args).await,
            Command::Keys(command) => keys_cmd::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("weft: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_engine(args: EngineArgs) -> Result<(), String> {
    let partitions = match args.partitions {
        Some(count) => Some(PartitionCount::new(count).map_err(|e| format!("--partitions: {e}"))?),
        None => None,
    };
    let options = store_url::StoreOptions {
        partitions,
        payload_bytes_max: weft_core::PAYLOAD_BYTES_MAX_DEFAULT,
    };
    let store = store_url::open_store(&args.store, None, options).await?;
    let config = EngineConfig {
        ownership_lease_ms: args.ownership_lease_ms,
        ..EngineConfig::default()
    };
    let engine = Engine::try_start(store, config).map_err(|e| format!("engine config: {e}"))?;
    say(&format!(
        "engine {} running on {}",
        engine.instance_id(),
        args.store
    ));
    wait_for_stop_signal().await;
    engine.shutdown().await;
    say("engine stopped");
    Ok(())
}

/// Prints a status line; a closed stdout must not bring the process down.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn wait_for_stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
