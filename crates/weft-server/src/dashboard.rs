//! The dashboard at `GET /`: one self-contained HTML page, rendered on the
//! server, with queue depths per lane drawn as stacked CSS bars. No script,
//! no external asset; a `<meta http-equiv="refresh">` reloads it.

use std::fmt::Write as _;

use weft_core::LaneDepth;
use weft_engine::EngineMetrics;

/// The states a bar shows, in order, with their colours.
const SEGMENTS: [(&str, &str); 5] = [
    ("waiting", "#2f80ed"),
    ("delayed", "#f2c94c"),
    ("active", "#27ae60"),
    ("suspended", "#9b51e0"),
    ("blocked", "#828282"),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%;max-width:60rem}\
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

/// The whole page. `lanes` is the store's answer, or why it failed.
pub(crate) fn render(
    lanes: Result<&[LaneDepth], String>,
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
    engine_section(&mut out, engine);
    out.push_str(
        "<p class=\"muted\">JSON: <code>/v1/lanes</code>, <code>/v1/executions</code>; \
         Prometheus: <code>/metrics</code>.</p></body></html>",
    );
    out
}

#[cfg(test)]
mod tests {
    //! Goal: the page shows every lane with a bar and escapes lane names.
    use super::*;

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
        let page = render(Ok(&lanes), None, 5);
        assert!(page.contains("&lt;b&gt;"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("width:50.00%"));
        assert!(page.contains("width:25.00%"));
        assert!(page.contains("http-equiv=\"refresh\" content=\"5\""));
        let empty = render(Ok(&[]), Some(&EngineMetrics::default()), 0);
        assert!(empty.contains("No lane"));
        assert!(!empty.contains("refresh"));
        assert!(render(Err("down".into()), None, 5).contains("down"));
    }
}
