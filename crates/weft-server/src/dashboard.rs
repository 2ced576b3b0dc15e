//! The dashboard at `GET /`: one self-contained HTML page, rendered on the
//! server, with queue depths per lane and the members of the flows still
//! running drawn as stacked CSS bars. No script, no external asset; a
//! `<meta http-equiv="refresh">` reloads it.

use std::fmt::Write as _;

use weft_core::flow::Flow;
use weft_core::{LaneDepth, State};
use weft_engine::EngineMetrics;

/// Most flows the dashboard shows.
pub(crate) const DASHBOARD_FLOWS_MAX: u32 = 10;

/// The member states a flow's bar shows, in order (done first, then what
/// runs, then what waits, then what will not run), with their colours.
const FLOW_SEGMENTS: [(State, &str); 10] = [
    (State::Completed, "#1e8449"),
    (State::Active, "#27ae60"),
    (State::Waiting, "#2f80ed"),
    (State::Delayed, "#f2c94c"),
    (State::Suspended, "#9b51e0"),
    (State::Blocked, "#828282"),
    (State::Failed, "#eb5757"),
    (State::Expired, "#f2994a"),
    (State::Cancelled, "#bdbdbd"),
    (State::Skipped, "#e0e0e0"),
];

/// The states a bar shows, in order, with their colours.
const SEGMENTS: [(&str, &str); 5] = [
    ("waiting", "#2f80ed"),
    ("delayed", "#f2c94c"),
    ("active", "#27ae60"),
    ("suspended", "#9b51e0"),
    ("blocked", "#828282"),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}\
table{border-collapse:collapse;width:100%;max-width:60rem}\
td,th{padding:.35rem .6rem;text-align:left;border-bottom:1px solid #eee}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.bar{display:flex;height:1rem;min-width:1px;background:#f4f4f4}\
.bar span{display:block;height:100%}.legend span{display:inline-block;\
width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}\
.muted{color:#777}.err{color:#b00020}";

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn counts(lane: &LaneDepth) -> [u64; 5] {
    [
        lane.waiting,
        lane.delayed,
        lane.active,
        lane.suspended,
        lane.blocked,
    ]
}

/// One table row: the lane, its counts, and a bar scaled to `scale`.
fn row(out: &mut String, lane: &LaneDepth, scale: u64) {
    let counts = counts(lane);
    let _ = write!(out, "<tr><td>{}</td>", escape(&lane.lane));
    for count in counts {
        let _ = write!(out, "<td class=\"n\">{count}</td>");
    }
    out.push_str("<td style=\"width:40%\"><div class=\"bar\">");
    for ((state, colour), count) in SEGMENTS.iter().zip(counts) {
        if count > 0 {
            let percent = count as f64 * 100.0 / scale.max(1) as f64;
            let style = format!("width:{percent:.2}%;background:{colour}");
            let _ = write!(
                out,
                "<span title=\"{state}: {count}\" style=\"{style}\"></span>"
            );
        }
    }
    out.push_str("</div></td></tr>");
}

fn lanes_table(out: &mut String, lanes: &[LaneDepth]) {
    if lanes.is_empty() {
        out.push_str("<p class=\"muted\">No lane holds a live execution.</p>");
        return;
    }
    let scale = lanes
        .iter()
        .map(|lane| counts(lane).iter().sum::<u64>())
        .max()
        .unwrap_or(1);
    out.push_str("<table><tr><th>lane</th>");
    for (state, _) in SEGMENTS {
        let _ = write!(out, "<th>{state}</th>");
    }
    out.push_str("<th>depth</th></tr>");
    for lane in lanes {
        row(out, lane, scale);
    }
    out.push_str("</table><p class=\"legend\">");
    for (state, colour) in SEGMENTS {
        let _ = write!(out, "<span style=\"background:{colour}\"></span>{state}");
    }
    out.push_str("</p>");
}

/// One flow's row: its name and id, state, members ended out of all, and a
/// bar of its members by state, each segment its share of the members.
fn flow_row(out: &mut String, flow: &Flow) {
    let total = flow.counts.total();
    let ended = total.saturating_sub(flow.counts.open());
    let id = escape(flow.id.as_str());
    let name = flow.name.as_deref().map(escape).unwrap_or_default();
    let _ = write!(
        out,
        "<tr><td>{name} <a class=\"muted\" href=\"/v1/flows/{id}\">{id}</a></td>\
         <td>{}</td><td class=\"n\">{ended}/{total}</td>\
         <td style=\"width:40%\"><div class=\"bar\">",
        flow.state.as_str()
    );
    for (state, colour) in FLOW_SEGMENTS {
        let count = flow.counts.get(state);
        if count > 0 {
            let percent = f64::from(count) * 100.0 / f64::from(total.max(1));
            let _ = write!(
                out,
                "<span title=\"{}: {count}\" style=\"width:{percent:.2}%;background:{colour}\">\
                 </span>",
                state.as_str()
            );
        }
    }
    out.push_str("</div></td></tr>");
}

/// The flows that have not ended, or why they could not be read; nothing
/// when the store keeps no flows.
fn flows_section(out: &mut String, flows: Option<Result<&[Flow], String>>) {
    let Some(flows) = flows else { return };
    out.push_str("<h2>Flows running</h2>");
    match flows {
        Ok([]) => out.push_str("<p class=\"muted\">No flow is running.</p>"),
        Ok(flows) => {
            out.push_str(
                "<table><tr><th>flow</th><th>state</th><th>ended</th><th>members</th></tr>",
            );
            for flow in flows {
                flow_row(out, flow);
            }
            out.push_str("</table><p class=\"legend\">");
            for (state, colour) in FLOW_SEGMENTS {
                let _ = write!(
                    out,
                    "<span style=\"background:{colour}\"></span>{}",
                    state.as_str()
                );
            }
            out.push_str("</p>");
        }
        Err(error) => {
            let _ = write!(
                out,
                "<p class=\"err\">The flows could not be read: {}</p>",
                escape(&error)
            );
        }
    }
}

fn engine_section(out: &mut String, engine: Option<&EngineMetrics>) {
    match engine {
        Some(m) => {
            let _ = write!(
                out,
                "<p>Engine: {} partitions owned; timer drain {} runs, {} timers applied, \
                 {} errors, lag {} ms.</p>",
                m.owned_partitions,
                m.timer_drain.runs,
                m.timer_drain.applied,
                m.timer_drain.errors,
                m.timer_drain.lag_ms
            );
        }
        None => out.push_str("<p class=\"muted\">No engine runs in this process.</p>"),
    }
}

/// The whole page. `lanes` is the store's answer, or why it failed;
/// `flows` likewise, or `None` for a store without flows.
pub(crate) fn render(
    lanes: Result<&[LaneDepth], String>,
    flows: Option<Result<&[Flow], String>>,
    engine: Option<&EngineMetrics>,
    refresh_secs: u32,
) -> String {
    let mut out = String::from("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    if refresh_secs > 0 {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{refresh_secs}\">"
        );
    }
    let _ = write!(
        out,
        "<title>Weft</title><style>{STYLE}</style></head><body><h1>Weft: queue depths</h1>"
    );
    match lanes {
        Ok(lanes) => lanes_table(&mut out, lanes),
        Err(error) => {
            let _ = write!(
                out,
                "<p class=\"err\">The store did not answer: {}</p>",
                escape(&error)
            );
        }
    }
    flows_section(&mut out, flows);
    engine_section(&mut out, engine);
    out.push_str(
        "<p class=\"muted\">JSON: <code>/v1/lanes</code>, <code>/v1/executions</code>, \
         <code>/v1/flows</code>; \
         Prometheus: <code>/metrics</code>.</p></body></html>",
    );
    out
}

#[cfg(test)]
mod tests {
    //! Goal: the page shows every lane and every running flow with a bar,
    //! and escapes names.
    use super::*;
    use weft_core::flow::{FlowState, OnFailure, StateCounts};
    use weft_core::{FlowId, PartitionId};

    #[test]
    fn renders_bars_and_escapes() {
        let lanes = vec![
            LaneDepth {
                lane: "<b>".into(),
                waiting: 4,
                active: 4,
                ..LaneDepth::default()
            },
            LaneDepth {
                lane: "slow".into(),
                delayed: 2,
                ..LaneDepth::default()
            },
        ];
        let page = render(Ok(&lanes), None, None, 5);
        assert!(page.contains("&lt;b&gt;"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("width:50.00%"));
        assert!(page.contains("width:25.00%"));
        assert!(page.contains("http-equiv=\"refresh\" content=\"5\""));
        assert!(!page.contains("Flows running"), "no section without flows");
        let empty = render(Ok(&[]), Some(Ok(&[])), Some(&EngineMetrics::default()), 0);
        assert!(empty.contains("No lane"));
        assert!(empty.contains("No flow is running"));
        assert!(!empty.contains("refresh"));
        assert!(render(Err("down".into()), None, None, 5).contains("down"));
        let broken = render(Ok(&[]), Some(Err("flows down".into())), None, 5);
        assert!(broken.contains("flows down"));
    }

    #[test]
    fn flows_show_their_members_as_a_bar() {
        let mut counts = StateCounts::default();
        for state in [
            State::Completed,
            State::Active,
            State::Blocked,
            State::Blocked,
        ] {
            counts.shift(None, Some(state));
        }
        let flow = Flow {
            id: FlowId::mint(PartitionId(0), 0),
            name: Some("<etl>".into()),
            state: FlowState::Running,
            idempotency_key: None,
            on_failure: OnFailure::Continue,
            cancelled: false,
            halted: false,
            nodes: Vec::new(),
            edges: Vec::new(),
            counts,
            created_at_ms: 0,
            updated_at_ms: 0,
            finished_at_ms: None,
        };
        let page = render(Ok(&[]), Some(Ok(std::slice::from_ref(&flow))), None, 0);
        assert!(page.contains("&lt;etl&gt;"), "{page}");
        assert!(page.contains("1/4"), "{page}");
        assert!(
            page.contains("title=\"completed: 1\" style=\"width:25.00%"),
            "{page}"
        );
        assert!(
            page.contains("title=\"blocked: 2\" style=\"width:50.00%"),
            "{page}"
        );
        assert!(page.contains(flow.id.as_str()));
    }
}
