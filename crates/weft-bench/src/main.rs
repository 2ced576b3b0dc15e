//! `weft-bench`: Weft side by side with a raw-Valkey queue, in one run.
//!
//! Starts (or connects to) the stores itself, shows progress while it runs,
//! prints a Markdown table and writes the rows as JSON. Run it in release
//! mode: `cargo run --release -p weft-bench`.

mod cpu;
mod report;
mod scenarios;
mod valkey;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use weft_core::{PartitionCount, Store};
use weft_engine::{Engine, EngineConfig};

use report::{Percentiles, Row};
use scenarios::throughput::{self, Calls, Spec};

/// Weft's benchmark. Sizes default to what fits a 2-core machine.
#[derive(Parser, Debug)]
#[command(name = "weft-bench", about)]
struct Args {
    /// Tasks in the submit → claim → complete scenario.
    #[arg(long, default_value_t = 10_000)]
    tasks: u32,
    /// Payload padding per task, in bytes.
    #[arg(long, default_value_t = 4096)]
    payload_bytes: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    workers: u32,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Most tasks one claim takes.
    #[arg(long, default_value_t = 8)]
    claim_batch: u32,
    /// Executions per submit call in the batched run (`submit_many`); its
    /// workers complete each claim's tasks in one call (`complete_many`).
    #[arg(long, default_value_t = 50)]
    submit_batch: u32,
    /// Most tasks submitted and not yet completed in scenario 1; producers
    /// wait above it (every run, the baseline's too).
    #[arg(long, default_value_t = 512)]
    in_flight: u32,
    /// Tasks in the delayed-work scenario.
    #[arg(long, default_value_t = 1000)]
    delayed: u32,
    /// Flows in the chain scenario.
    #[arg(long, default_value_t = 100)]
    flows: u32,
    /// Rounds of the quorum-cancel scenario.
    #[arg(long, default_value_t = 20)]
    quorum_rounds: u32,
    /// Round trips in the suspend → signal → resume → complete scenario.
    #[arg(long, default_value_t = 500)]
    suspend_rounds: u32,
    /// Seconds the idle engine is watched.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    /// A Valkey to use (`redis://HOST:PORT`); one is started when absent.
    #[arg(long, env = "WEFT_BENCH_VALKEY_URL")]
    valkey_url: Option<String>,
    /// Runs only these scenarios (numbers 1–6 as in the README), e.g. `1,3`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Runs Weft only on these backends (the raw-Valkey baseline always runs
    /// with scenario 1).
    #[arg(long, value_delimiter = ',', default_value = "valkey,sqlite")]
    backends: Vec<Backend>,
    /// How scenario 1 reaches Weft: `direct` (one call per task, as the
    /// SDK does), `batched` (`submit_many` / `complete_many`), `sdk` (one
    /// SDK `Worker` over the direct transport), `http`.
    #[arg(long, value_delimiter = ',', default_value = "direct,batched,sdk,http")]
    modes: Vec<Mode>,
    /// Rounds of scenario 1 (baseline and Weft alternating); each row shows
    /// the round of median throughput.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Where the rows are written as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(&args).await {
        Ok(rows) => {
            println!("\n{}", report::table(&rows));
            if let Err(err) = write_json(&args.json, &rows) {
                eprintln!("weft-bench: cannot write {}: {err}", args.json.display());
                std::process::exit(1);
            }
            println!("rows written to {}", args.json.display());
        }
        Err(err) => {
            eprintln!("weft-bench: {err}");
            std::process::exit(1);
        }
    }
}

fn write_json(path: &PathBuf, rows: &[Row]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(rows).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// The backends Weft runs on in this benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Valkey,
    Sqlite,
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Valkey => "weft/valkey direct",
            Backend::Sqlite => "weft/sqlite direct",
        }
    }

    fn store_name(&self) -> &'static str {
        match self {
            Backend::Valkey => "weft/valkey",
            Backend::Sqlite => "weft/sqlite",
        }
    }
}

/// How scenario 1 reaches Weft: the SDK's direct calls one task at a time,
/// the same with batch calls, or HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Direct,
    Batched,
    Sdk,
    Http,
}

impl Mode {
    fn label(&self, backend: &Backend) -> String {
        let how = match self {
            Mode::Direct => "direct",
            Mode::Batched => "batched",
            Mode::Sdk => "sdk worker",
            Mode::Http => "http",
        };
        format!("{} {how}", backend.store_name())
    }
}

struct Env {
    valkey: valkey::Valkey,
    valkey_pid: Option<u32>,
    dir: tempfile::TempDir,
}

impl Env {
    async fn store(&self, backend: &Backend, name: &str) -> Result<Arc<dyn Store>, String> {
        match backend {
            Backend::Valkey => {
                let config = weft_valkey::ValkeyConfig {
                    url: self.valkey.url.clone(),
                    key_prefix: format!("bench-{name}-{}:", std::process::id()),
                    partitions: Some(PartitionCount::default()),
                    machine: weft_core::MachineConfig::default(),
                };
                let store = weft_valkey::ValkeyStore::connect(config)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Arc::new(store))
            }
            Backend::Sqlite => {
                let path = self.dir.path().join(format!("{name}.sqlite3"));
                let store = weft_sqlite::SqliteStore::open(weft_sqlite::SqliteConfig::file(path))
                    .map_err(|e| e.to_string())?;
                Ok(Arc::new(store))
            }
        }
    }

    async fn server_commands(&self) -> Option<u64> {
        let mut conn = self.valkey.connect().await.ok()?;
        valkey::commands_executed(&mut conn).await
    }
}

async fn run(args: &Args) -> Result<Vec<Row>, String> {
    let valkey = valkey::Valkey::get(args.valkey_url.clone())?;
    let mut conn = valkey.connect().await?;
    let valkey_pid = valkey::server_pid(&mut conn).await;
    let env = Env {
        valkey,
        valkey_pid,
        dir: tempfile::tempdir().map_err(|e| e.to_string())?,
    };
    let spec = Spec {
        tasks: args.tasks,
        payload_bytes: args.payload_bytes,
        workers: args.workers,
        producers: args.producers,
        claim_batch: args.claim_batch,
        submit_batch: args.submit_batch,
        in_flight: args.in_flight,
    };
    let wanted = |n: u8| args.only.is_empty() || args.only.contains(&n);
    let mut rows = Vec::new();
    if wanted(1) {
        rows.extend(throughput_rounds(&env, args, spec).await?);
    }
    if wanted(2) || wanted(4) {
        for backend in &args.backends {
            rows.extend(flow_rows(&env, backend, args).await?);
        }
    }
    if wanted(3) {
        for backend in &args.backends {
            rows.push(suspend_row(&env, backend, args).await?);
        }
    }
    if wanted(5) {
        for backend in &args.backends {
            rows.push(delayed_row(&env, backend, args).await?);
        }
    }
    if wanted(6) {
        for backend in &args.backends {
            rows.push(idle_row(&env, backend, args).await?);
        }
    }
    Ok(rows)
}

/// Scenario 1, `--rounds` times over: each round runs the baseline, then
/// every backend and mode. Each row kept is the round of median throughput
/// for its backend, and the ratio divides medians, so one noisy run moves
/// neither.
async fn throughput_rounds(env: &Env, args: &Args, spec: Spec) -> Result<Vec<Row>, String> {
    let rounds = args.rounds.max(1);
    let mut runs: Vec<Vec<Row>> = Vec::new();
    for _ in 0..rounds {
        let mut round = vec![baseline_row(env, spec).await?];
        for backend in &args.backends {
            for &mode in &args.modes {
                round.push(throughput_row(env, backend, spec, mode).await?);
            }
        }
        runs.push(round);
    }
    let mut kept: Vec<Row> = (0..runs[0].len())
        .map(|i| {
            let mut same: Vec<Row> = runs.iter().map(|round| round[i].clone()).collect();
            same.sort_by(|a, b| {
                a.throughput_per_s
                    .partial_cmp(&b.throughput_per_s)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut row = same.swap_remove(same.len() / 2);
            if rounds > 1 {
                row.note = join_note(&row.note, &format!("median of {rounds} rounds"));
            }
            row
        })
        .collect();
    let baseline_rate = kept[0].throughput_per_s;
    for row in kept.iter_mut().skip(1) {
        row.ratio_to_baseline = row.throughput_per_s.zip(baseline_rate).map(|(w, b)| w / b);
    }
    Ok(kept)
}

async fn baseline_row(env: &Env, spec: Spec) -> Result<Row, String> {
    let before = env.server_commands().await;
    let client_cpu = cpu::CpuSpan::start(None);
    let store_cpu = cpu::CpuSpan::start(env.valkey_pid);
    let mut m = throughput::raw_valkey(&env.valkey.url, spec, "raw valkey (LPUSH/BLMPOP)").await?;
    let commands = env
        .server_commands()
        .await
        .zip(before)
        .map(|(a, b)| a.saturating_sub(b));
    Ok(throughput_measured_row(
        "raw valkey (LPUSH/BLMPOP)",
        spec,
        &mut m,
        commands,
        &client_cpu,
        &store_cpu,
    ))
}

async fn throughput_row(
    env: &Env,
    backend: &Backend,
    spec: Spec,
    mode: Mode,
) -> Result<Row, String> {
    let label = mode.label(backend);
    let name = label.as_str();
    let store = env
        .store(backend, &format!("throughput-{mode:?}").to_lowercase())
        .await?;
    let engine = Engine::try_start(Arc::clone(&store), EngineConfig::default())
        .map_err(|e| e.to_string())?;
    let before = env.server_commands().await;
    let client_cpu = cpu::CpuSpan::start(None);
    let store_cpu = cpu::CpuSpan::start(env.valkey_pid);
    let mut m = match mode {
        Mode::Direct => throughput::weft_direct(store, spec, name, Calls::One).await?,
        Mode::Batched => throughput::weft_direct(store, spec, name, Calls::Batched).await?,
        Mode::Sdk => throughput::weft_sdk_worker(store, spec, name).await?,
        Mode::Http => throughput::weft_http(store, spec, name).await?,
    };
    let valkey = matches!(backend, Backend::Valkey);
    let commands = if valkey {
        env.server_commands()
            .await
            .zip(before)
            .map(|(a, b)| a.saturating_sub(b))
    } else {
        None
    };
    let mut row = throughput_measured_row(name, spec, &mut m, commands, &client_cpu, &store_cpu);
    if !valkey {
        row.store_cpu_ms = None;
        row.note = "SQLite runs inside the Weft process".into();
    }
    let how = match mode {
        Mode::Direct => None,
        Mode::Batched => Some(format!(
            "submit_many of {}, complete_many per claim",
            spec.submit_batch
        )),
        Mode::Sdk => Some(format!(
            "one SDK Worker ({} handlers), latency to the handler",
            spec.workers
        )),
        Mode::Http => Some("server, producers and workers in one process".to_owned()),
    };
    if let Some(how) = how {
        row.note = join_note(&row.note, &how);
    }
    engine.shutdown().await;
    Ok(row)
}

/// `note`, then `more` after a semicolon when there was a note.
fn join_note(note: &str, more: &str) -> String {
    if note.is_empty() {
        more.to_owned()
    } else {
        format!("{note}; {more}")
    }
}

fn throughput_measured_row(
    backend: &str,
    spec: Spec,
    m: &mut throughput::Measured,
    commands: Option<u64>,
    client_cpu: &cpu::CpuSpan,
    store_cpu: &cpu::CpuSpan,
) -> Row {
    let tasks = f64::from(spec.tasks);
    Row {
        scenario: format!(
            "submit → claim → complete ({} × {} B, {} workers)",
            spec.tasks, spec.payload_bytes, spec.workers
        ),
        backend: backend.into(),
        throughput_per_s: Some(tasks / m.elapsed.as_secs_f64()),
        latency: Some(Percentiles::of(&mut m.latencies_ms)),
        store_calls_per_task: Some(m.calls as f64 / tasks),
        server_commands_per_task: commands.map(|c| c as f64 / tasks),
        client_cpu_ms: client_cpu.elapsed_ms(),
        store_cpu_ms: store_cpu.elapsed_ms(),
        ratio_to_baseline: None,
        note: String::new(),
    }
}

/// Chains run one at a time to measure promotion without queueing.
const LONE_CHAINS: u32 = 10;

async fn flow_rows(env: &Env, backend: &Backend, args: &Args) -> Result<Vec<Row>, String> {
    let store = env.store(backend, "flows").await?;
    let chain_name = format!(
        "flows: {} × 10-node chain, {} workers",
        args.flows, args.workers
    );
    let quorum_name = "flows: quorum(1 of 100) cancel_remaining, siblings cancelled".to_owned();
    if !store.supports_flows() {
        let skipped = |scenario: String| Row {
            scenario,
            backend: backend.name().into(),
            note: "skipped: this store has no flows yet (#5)".into(),
            ..Row::default()
        };
        return Ok(vec![skipped(chain_name), skipped(quorum_name)]);
    }
    let engine = Engine::try_start(Arc::clone(&store), EngineConfig::default())
        .map_err(|e| e.to_string())?;
    let mut chains =
        scenarios::flows::chains(Arc::clone(&store), args.flows, 10, args.workers).await?;
    // Promotion alone, without the queue the 100 concurrent chains build:
    // one chain at a time, idle workers waiting for its next node.
    let mut lone = Vec::new();
    for _ in 0..LONE_CHAINS {
        let m = scenarios::flows::chains(Arc::clone(&store), 1, 10, args.workers).await?;
        lone.extend(m.promotion_latencies_ms);
    }
    let mut quorum =
        scenarios::flows::quorum_cancel(Arc::clone(&store), 100, args.quorum_rounds).await?;
    engine.shutdown().await;
    let promotion = Percentiles::of(&mut chains.promotion_latencies_ms);
    let lone = Percentiles::of(&mut lone);
    Ok(vec![
        Row {
            scenario: chain_name,
            backend: backend.name().into(),
            throughput_per_s: Some(f64::from(args.flows) / chains.elapsed.as_secs_f64()),
            latency: Some(Percentiles::of(&mut chains.flow_latencies_ms)),
            note: format!(
                "flows/s; latency per flow; promotion per level p50 {:.2} ms, p99 {:.2} ms \
                 (queued behind the other chains); one chain alone: p50 {:.2} ms, p99 {:.2} ms",
                promotion.p50_ms, promotion.p99_ms, lone.p50_ms, lone.p99_ms
            ),
            ..Row::default()
        },
        Row {
            scenario: quorum_name,
            backend: backend.name().into(),
            latency: Some(Percentiles::of(&mut quorum)),
            note: "ms from the winning completion to 99 siblings cancelled".into(),
            ..Row::default()
        },
    ])
}

async fn suspend_row(env: &Env, backend: &Backend, args: &Args) -> Result<Row, String> {
    let store = env.store(backend, "suspend").await?;
    let engine = Engine::try_start(Arc::clone(&store), EngineConfig::default())
        .map_err(|e| e.to_string())?;
    let label = format!("suspend: {}", backend.name());
    let measured = scenarios::suspend::run(&store, args.suspend_rounds, &label).await;
    engine.shutdown().await;
    let mut m = measured?;
    let resume = Percentiles::of(&mut m.resume_ms);
    Ok(Row {
        scenario: format!(
            "suspend → signal → resume → complete ({} round trips)",
            args.suspend_rounds
        ),
        backend: backend.name().into(),
        latency: Some(Percentiles::of(&mut m.round_trips_ms)),
        note: format!(
            "round trip from suspend to completion; signal → resumed task p50 {:.2} ms, p99 {:.2} ms",
            resume.p50_ms, resume.p99_ms
        ),
        ..Row::default()
    })
}

async fn delayed_row(env: &Env, backend: &Backend, args: &Args) -> Result<Row, String> {
    let store = env.store(backend, "delayed").await?;
    let engine = Engine::try_start(Arc::clone(&store), EngineConfig::default())
        .map_err(|e| e.to_string())?;
    let label = format!("delayed: {}", backend.name());
    let mut lateness = scenarios::delayed::run(store, args.delayed, 4, &label).await?;
    engine.shutdown().await;
    Ok(Row {
        scenario: format!(
            "delayed work: claim lateness vs run_at ({} tasks)",
            args.delayed
        ),
        backend: backend.name().into(),
        latency: Some(Percentiles::of(&mut lateness)),
        note: "latency columns are lateness".into(),
        ..Row::default()
    })
}

async fn idle_row(env: &Env, backend: &Backend, args: &Args) -> Result<Row, String> {
    let store = env.store(backend, "idle").await?;
    let label = format!("idle engine: {}", backend.name());
    let valkey = matches!(backend, Backend::Valkey);
    let probe = || async move {
        if valkey {
            env.server_commands().await
        } else {
            None
        }
    };
    let (calls_per_s, commands_per_s) =
        scenarios::idle::run(store, args.idle_seconds, &label, probe).await?;
    Ok(Row {
        scenario: "idle engine, 32 partitions".into(),
        backend: backend.name().into(),
        store_calls_per_task: Some(calls_per_s),
        server_commands_per_task: commands_per_s,
        note: "per second, not per task".into(),
        ..Row::default()
    })
}
