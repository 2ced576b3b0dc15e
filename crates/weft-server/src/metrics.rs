//! Request accounting and the Prometheus text of `GET /metrics`.
//!
//! Definitions: a request's *route* is the matched path template
//! (`/v1/executions/{id}`), or `unmatched` for a path with no route, so the
//! number of label sets is bounded by the routes, never by client input.
//!
//! Invariant: every request the router answers, refused ones included, is
//! counted exactly once and logged once, after its response is built.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use weft_core::LaneDepth;
use weft_engine::{EngineMetrics, LoopSnapshot};

use crate::app::AppState;

/// Counts and total latency of one (method, route, status).
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    count: u64,
    seconds: f64,
}

/// Requests answered so far, by method, route and status.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    tallies: Mutex<BTreeMap<(&'static str, String, u16), Tally>>,
}

impl HttpMetrics {
    fn record(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        // A poisoned lock only means another request panicked mid-update of
        // two numbers; the counts are still usable.
        let mut tallies = self
            .tallies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tally = tallies.entry((method, route, status)).or_default();
        tally.count += 1;
        tally.seconds += seconds;
    }

    fn snapshot(&self) -> BTreeMap<(&'static str, String, u16), Tally> {
        self.tallies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The method as a label; anything unusual is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The outermost middleware: times, counts and logs every request.
pub(crate) async fn observe(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    app.http
        .record(method, route, status, elapsed.as_secs_f64());
    if status >= 500 {
        tracing::warn!(method, %path, status, latency = ?elapsed, "request");
    } else {
        tracing::info!(method, %path, status, latency = ?elapsed, "request");
    }
    response
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The HTTP section: request counts and latency.
fn render_http(out: &mut String, http: &HttpMetrics) {
    let tallies = http.snapshot();
    header(
        out,
        "weft_http_requests_total",
        "counter",
        "HTTP requests answered, by method, route and status.",
    );
    let mut latency: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    for ((method, route, status), tally) in &tallies {
        let _ = writeln!(
            out,
            "weft_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
            label(route),
            tally.count
        );
        let sum = latency.entry((method, route)).or_default();
        sum.count += tally.count;
        sum.seconds += tally.seconds;
    }
    header(
        out,
        "weft_http_request_duration_seconds",
        "summary",
        "Time to answer HTTP requests, by method and route.",
    );
    for ((method, route), tally) in &latency {
        let labels = format!("method=\"{method}\",route=\"{}\"", label(route));
        let _ = writeln!(
            out,
            "weft_http_request_duration_seconds_sum{{{labels}}} {}",
            tally.seconds
        );
        let _ = writeln!(
            out,
            "weft_http_request_duration_seconds_count{{{labels}}} {}",
            tally.count
        );
    }
}

/// One engine counter: its name, its help text and how to read it.
type EngineCounter = (&'static str, &'static str, fn(&LoopSnapshot) -> u64);

/// The engine section: one series per loop and counter.
fn render_engine(out: &mut String, engine: &EngineMetrics) {
    header(
        out,
        "weft_engine_owned_partitions",
        "gauge",
        "Partitions this engine instance holds.",
    );
    let _ = writeln!(
        out,
        "weft_engine_owned_partitions {}",
        engine.owned_partitions
    );
    let loops: [(&str, &LoopSnapshot); 2] = [
        ("ownership", &engine.ownership),
        ("timer_drain", &engine.timer_drain),
    ];
    let counters: [EngineCounter; 5] = [
        ("runs", "Runs of the loop, failed ones included.", |s| {
            s.runs
        }),
        ("store_calls", "Store operations the loop issued.", |s| {
            s.store_calls
        }),
        ("applied", "Items the loop applied.", |s| s.applied),
        ("dropped", "Items the loop dropped.", |s| s.dropped),
        ("errors", "Runs that failed or timed out.", |s| s.errors),
    ];
    for (name, help, get) in counters {
        let metric = format!("weft_engine_loop_{name}_total");
        header(out, &metric, "counter", help);
        for (loop_name, snapshot) in loops {
            let _ = writeln!(out, "{metric}{{loop=\"{loop_name}\"}} {}", get(snapshot));
        }
    }
    header(
        out,
        "weft_engine_loop_lag_seconds",
        "gauge",
        "How late the last drain that applied a known-due timer ran.",
    );
    for (loop_name, snapshot) in loops {
        let lag = snapshot.lag_ms as f64 / 1000.0;
        let _ = writeln!(
            out,
            "weft_engine_loop_lag_seconds{{loop=\"{loop_name}\"}} {lag}"
        );
    }
}

/// The lanes section: non-terminal executions per lane and state.
fn render_lanes(out: &mut String, lanes: Option<&[LaneDepth]>) {
    header(
        out,
        "weft_store_up",
        "gauge",
        "1 when the store answered the lane query of this scrape.",
    );
    let _ = writeln!(out, "weft_store_up {}", u8::from(lanes.is_some()));
    header(
        out,
        "weft_lane_executions",
        "gauge",
        "Non-terminal executions per lane and state.",
    );
    for lane in lanes.unwrap_or_default() {
        let name = label(&lane.lane);
        for (state, count) in [
            ("waiting", lane.waiting),
            ("delayed", lane.delayed),
            ("active", lane.active),
            ("suspended", lane.suspended),
            ("blocked", lane.blocked),
        ] {
            let _ = writeln!(
                out,
                "weft_lane_executions{{lane=\"{name}\",state=\"{state}\"}} {count}"
            );
        }
    }
}

/// The whole `GET /metrics` text.
pub(crate) fn render(
    http: &HttpMetrics,
    engine: Option<&EngineMetrics>,
    lanes: Option<&[LaneDepth]>,
) -> String {
    let mut out = String::new();
    render_http(&mut out, http);
    if let Some(engine) = engine {
        render_engine(&mut out, engine);
    }
    render_lanes(&mut out, lanes);
    out
}

#[cfg(test)]
mod tests {
    //! Goal: the text is well-formed Prometheus exposition with bounded labels.
    use super::*;

    #[test]
    fn renders_every_section() {
        let http = HttpMetrics::default();
        http.record("GET", "/v1/lanes".into(), 200, 0.5);
        http.record("GET", "/v1/lanes".into(), 200, 0.25);
        http.record("GET", "/v1/lanes".into(), 401, 0.25);
        let lanes = vec![LaneDepth {
            lane: "a\"b".into(),
            waiting: 3,
            ..LaneDepth::default()
        }];
        let text = render(&http, Some(&EngineMetrics::default()), Some(&lanes));
        assert!(text.contains(
            "weft_http_requests_total{method=\"GET\",route=\"/v1/lanes\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "weft_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/lanes\"} 3"
        ));
        assert!(text.contains("weft_engine_loop_runs_total{loop=\"timer_drain\"} 0"));
        assert!(text.contains("weft_lane_executions{lane=\"a\\\"b\",state=\"waiting\"} 3"));
        assert!(text.contains("weft_store_up 1"));
        let bare = render(&http, None, None);
        assert!(!bare.contains("weft_engine"));
        assert!(bare.contains("weft_store_up 0"));
    }
}
