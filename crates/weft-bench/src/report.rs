//! Results: one row per scenario and backend, printed as a table and
//! written as JSON.

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Percentiles {
    /// Percentiles of `samples_ms` (sorted here).
    pub fn of(samples_ms: &mut [f64]) -> Self {
        if samples_ms.is_empty() {
            return Self::default();
        }
        samples_ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let last = samples_ms.len() - 1;
            // Nearest rank; the cast is bounded by `last`.
            samples_ms[((last as f64) * q).round() as usize]
        };
        Self {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
        }
    }
}

/// One measured scenario on one backend.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// Which scenario (`submit-claim-complete`, `delayed`, `idle`).
    pub scenario: String,
    /// Which system (`weft/valkey direct`, `raw valkey`, …).
    pub backend: String,
    /// Tasks per second, where it applies.
    pub throughput_per_s: Option<f64>,
    /// Latency (or lateness) percentiles, where they apply.
    pub latency: Option<Percentiles>,
    /// Round trips to the store per task (or per second when idle).
    pub store_calls_per_task: Option<f64>,
    /// Commands the server executed per task, scripts' inner calls included.
    pub server_commands_per_task: Option<f64>,
    /// CPU time of this process (Weft in-process, or the baseline's client).
    pub client_cpu_ms: Option<f64>,
    /// CPU time of the store server, when it is a separate process.
    pub store_cpu_ms: Option<f64>,
    /// Throughput relative to the raw-Valkey baseline.
    pub ratio_to_baseline: Option<f64>,
    /// What to know when reading the row.
    pub note: String,
}

fn cell(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | backend | tasks/s | p50 ms | p95 ms | p99 ms | store calls/task | server cmds/task | client CPU ms | store CPU ms | × baseline | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (p50, p95, p99) = match r.latency {
            Some(p) => (Some(p.p50_ms), Some(p.p95_ms), Some(p.p99_ms)),
            None => (None, None, None),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.backend,
            cell(r.throughput_per_s, 0),
            cell(p50, 2),
            cell(p95, 2),
            cell(p99, 2),
            cell(r.store_calls_per_task, 2),
            cell(r.server_commands_per_task, 1),
            cell(r.client_cpu_ms, 0),
            cell(r.store_cpu_ms, 0),
            cell(r.ratio_to_baseline, 2),
            r.note
        ));
    }
    out
}
