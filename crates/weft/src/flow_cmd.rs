//! `weft flow create | get | list | wait | add | cancel`: flows over HTTP
//! with the Rust SDK.
//!
//! A flow is created from a JSON file holding the body of `POST /v1/flows`
//! (see `examples/flows/diamond.json`), or from stdin with `-`. `weft flow
//! get` draws the graph as text: the nodes in topological layers (a node's
//! layer is one more than its deepest upstream's), each with its state and
//! member execution, then the edges as `a ──▶ b (on failure)`. Every
//! command prints the API's JSON with `--json`, and on an error says what to
//! fix and exits non-zero; `weft flow wait` also exits non-zero when its
//! timeout passes before the flow ends.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;
use weft_api::{
    parse_flow_state, AddNodesRequest, FlowEdgeView, FlowNodeView, FlowRequest, FlowView,
};
use weft_core::flow::EdgeOn;
use weft_core::State;
use weft_sdk::FlowListQuery;

use crate::client_cmd::{describe, print_json, print_table, CommonArgs};

/// The flow commands.
#[derive(clap::Subcommand, Debug)]
pub enum FlowCommand {
    /// Create a flow from a JSON file (the body of `POST /v1/flows`, e.g.
    /// `examples/flows/diamond.json`; `-` reads stdin) and print it.
    Create(CreateArgs),
    /// Show a flow: its summary and its graph, drawn in layers.
    Get(FlowIdArgs),
    /// List flows (in id order: by partition, then age).
    List(FlowListArgs),
    /// Wait for a flow to end and print it; exits 1 if it has not ended
    /// when the timeout passes.
    Wait(FlowWaitArgs),
    /// Add nodes to a running flow from a JSON file
    /// (`{"nodes", "edges", "joins"?, "lane"?}`; `-` reads stdin).
    Add(AddArgs),
    /// Cancel a flow and every member that has not ended.
    Cancel(FlowIdArgs),
}

/// `weft flow create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The JSON file, or `-` for stdin.
    file: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// A command about one flow.
#[derive(clap::Args, Debug)]
pub struct FlowIdArgs {
    /// The flow id.
    id: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft flow list`.
#[derive(clap::Args, Debug)]
pub struct FlowListArgs {
    /// Only this state (running, blocked, completed, failed, cancelled).
    #[arg(long)]
    state: Option<String>,
    /// At most this many, 1 ..= 1000.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue from a previous page.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft flow wait`.
#[derive(clap::Args, Debug)]
pub struct FlowWaitArgs {
    /// The flow id.
    id: String,
    /// Give up after this long.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weft flow add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The flow id.
    id: String,
    /// The JSON file, or `-` for stdin.
    file: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs one flow command.
pub async fn run(command: FlowCommand) -> Result<(), String> {
    match command {
        FlowCommand::Create(args) => {
            let request: FlowRequest = read_json(&args.file)?;
            let client = args.common.connect.client()?;
            let created = client.flow_create_detailed(request).await;
            let created = created.map_err(|e| describe(&e))?;
            if !args.common.json && !created.created {
                println!("(the idempotency key was seen before: this is the existing flow)");
            }
            print_flow(&args.common, &created.flow)
        }
        FlowCommand::Get(args) => {
            let flow = args.common.connect.client()?.flow_get(&args.id).await;
            print_flow(&args.common, &flow.map_err(|e| describe(&e))?)
        }
        FlowCommand::List(args) => list(args).await,
        FlowCommand::Wait(args) => wait(args).await,
        FlowCommand::Add(args) => {
            let request: AddNodesRequest = read_json(&args.file)?;
            let client = args.common.connect.client()?;
            let flow = client.flow_add_nodes(&args.id, request).await;
            print_flow(&args.common, &flow.map_err(|e| describe(&e))?)
        }
        FlowCommand::Cancel(args) => {
            let flow = args.common.connect.client()?.flow_cancel(&args.id).await;
            print_flow(&args.common, &flow.map_err(|e| describe(&e))?)
        }
    }
}

/// Reads a request body from `file` (`-` for stdin), naming the file and
/// the place in it that is wrong.
fn read_json<T: DeserializeOwned>(file: &str) -> Result<T, String> {
    let (name, text) = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        ("stdin".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        (file.to_owned(), text)
    };
    serde_json::from_str(&text).map_err(|e| format!("{name} is not a valid flow body: {e}"))
}

async fn list(args: FlowListArgs) -> Result<(), String> {
    let state = match &args.state {
        Some(text) => Some(parse_flow_state("state", text).map_err(|_| {
            let names: Vec<&str> = weft_core::flow::FlowState::ALL
                .into_iter()
                .map(weft_core::flow::FlowState::as_str)
                .collect();
            format!(
                "--state {text:?} is not a flow state; use one of {}",
                names.join(", ")
            )
        })?),
        None => None,
    };
    let query = FlowListQuery {
        state,
        limit: Some(args.limit),
        cursor: args.cursor.clone(),
    };
    let page = args.common.connect.client()?.flow_list(&query).await;
    let page = page.map_err(|e| describe(&e))?;
    if args.common.json {
        return print_json(&page);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|f| {
            vec![
                f.id.clone(),
                f.name.clone().unwrap_or_else(|| "-".to_owned()),
                f.state.as_str().to_owned(),
                ended_of(f),
                f.created_at.clone(),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATE", "ENDED", "CREATED"];
    print_table(&header, &rows, "no flows match");
    if let Some(cursor) = &page.next_cursor {
        println!("more: weft flow list --cursor {cursor}");
    }
    Ok(())
}

async fn wait(args: FlowWaitArgs) -> Result<(), String> {
    let client = args.common.connect.client()?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let flow = client.flow_wait(&args.id, timeout).await;
    let flow = flow.map_err(|e| describe(&e))?;
    print_flow(&args.common, &flow)?;
    if flow.state.is_terminal() {
        Ok(())
    } else {
        Err(format!(
            "{} is still {} after {} ms; wait longer with --timeout-ms",
            flow.id,
            flow.state.as_str(),
            args.timeout_ms
        ))
    }
}

/// `ended/total` members.
fn ended_of(flow: &FlowView) -> String {
    let s = &flow.summary;
    let ended = s.completed + s.failed + s.cancelled + s.expired + s.skipped;
    format!("{ended}/{}", s.total)
}

/// The non-zero counts of the summary: `2 completed, 1 active`.
fn summary_line(flow: &FlowView) -> String {
    let parts: Vec<String> = State::ALL
        .into_iter()
        .filter_map(|state| {
            let n = flow.summary.get(state);
            (n > 0).then(|| format!("{n} {}", state.as_str()))
        })
        .collect();
    format!("{} members: {}", flow.summary.total, parts.join(", "))
}

fn print_flow(common: &CommonArgs, flow: &FlowView) -> Result<(), String> {
    if common.json {
        return print_json(flow);
    }
    print!("{}", render_flow(flow));
    Ok(())
}

/// The human-readable flow: its fields, then the drawing.
fn render_flow(flow: &FlowView) -> String {
    let rows = [
        ("id", Some(flow.id.clone())),
        ("name", flow.name.clone()),
        ("state", Some(flow.state.as_str().to_owned())),
        ("summary", Some(summary_line(flow))),
        ("idempotency key", flow.idempotency_key.clone()),
        ("created", Some(flow.created_at.clone())),
        ("updated", flow.updated_at.clone()),
        ("finished", flow.finished_at.clone()),
    ];
    let rows: Vec<(&str, String)> = rows
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    out.push('\n');
    out.push_str(&draw(&flow.nodes, &flow.edges));
    out
}

/// The graph as text: layers of nodes, then the edges.
fn draw(nodes: &[FlowNodeView], edges: &[FlowEdgeView]) -> String {
    let key_width = nodes
        .iter()
        .map(|n| n.key.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::from("nodes (by layer, upstream first):\n");
    for (depth, layer) in layers(nodes, edges).iter().enumerate() {
        for (i, &index) in layer.iter().enumerate() {
            let node = &nodes[index];
            let label = if i == 0 {
                format!("{depth:>3}")
            } else {
                "   ".to_owned()
            };
            out.push_str(&format!(
                "{label}  {:<key_width$}  {:<9}  {}\n",
                node.key,
                node.state.as_str(),
                node.execution_id
            ));
        }
    }
    if edges.is_empty() {
        out.push_str("edges: none\n");
        return out;
    }
    out.push_str("edges:\n");
    for edge in edges {
        let on = match edge.on {
            EdgeOn::Success => "",
            EdgeOn::Failure => " (on failure)",
            EdgeOn::Any => " (on any)",
        };
        out.push_str(&format!("  {} ──▶ {}{on}\n", edge.from, edge.to));
    }
    out
}

/// The nodes (as indexes) in topological layers: layer 0 holds the nodes
/// without upstreams, and each other node sits one layer below its deepest
/// upstream. Within a layer, nodes keep the order they were added in.
/// Edges naming unknown keys are ignored; nodes on a cycle (which the
/// server refuses, so only a damaged answer has one) form a last layer.
fn layers(nodes: &[FlowNodeView], edges: &[FlowEdgeView]) -> Vec<Vec<usize>> {
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.key.as_str(), i))
        .collect();
    let links: Vec<(usize, usize)> = edges
        .iter()
        .filter_map(|e| Some((*index.get(e.from.as_str())?, *index.get(e.to.as_str())?)))
        .collect();
    let mut indegree = vec![0_usize; nodes.len()];
    for &(_, to) in &links {
        indegree[to] += 1;
    }
    let mut depth = vec![0_usize; nodes.len()];
    let mut placed = vec![false; nodes.len()];
    let mut ready: VecDeque<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    while let Some(from) = ready.pop_front() {
        placed[from] = true;
        for &(_, to) in links.iter().filter(|(f, _)| *f == from) {
            depth[to] = depth[to].max(depth[from] + 1);
            indegree[to] -= 1;
            if indegree[to] == 0 {
                ready.push_back(to);
            }
        }
    }
    let deepest = depth.iter().copied().max().unwrap_or(0);
    let mut out = vec![Vec::new(); deepest + 1];
    let mut stuck = Vec::new();
    for i in 0..nodes.len() {
        if placed[i] {
            out[depth[i]].push(i);
        } else {
            stuck.push(i);
        }
    }
    if !stuck.is_empty() {
        out.push(stuck);
    }
    out.retain(|layer| !layer.is_empty());
    out
}

#[cfg(test)]
mod tests {
    //! Goal: the drawing puts every node in its topological layer and lists
    //! the edges with their conditions, whatever the input.
    use super::*;

    fn node(key: &str, state: State) -> FlowNodeView {
        FlowNodeView {
            key: key.into(),
            execution_id: format!("ex_{key}"),
            state,
        }
    }

    fn keys(nodes: &[FlowNodeView], layers: &[Vec<usize>]) -> Vec<Vec<String>> {
        layers
            .iter()
            .map(|l| l.iter().map(|&i| nodes[i].key.clone()).collect())
            .collect()
    }

    #[test]
    fn layers_follow_the_longest_path() {
        // merge hangs off both `left` and the deeper `deep`.
        let nodes: Vec<_> = ["merge", "top", "left", "deep", "right"]
            .iter()
            .map(|k| node(k, State::Waiting))
            .collect();
        let edges = [
            FlowEdgeView::new("top", "left"),
            FlowEdgeView::new("top", "right"),
            FlowEdgeView::new("right", "deep"),
            FlowEdgeView::new("left", "merge"),
            FlowEdgeView::new("deep", "merge"),
            FlowEdgeView::new("ghost", "merge"),
        ];
        let got = keys(&nodes, &layers(&nodes, &edges));
        assert_eq!(
            got,
            [
                vec!["top"],
                vec!["left", "right"],
                vec!["deep"],
                vec!["merge"]
            ]
        );
        let cyclic = [
            FlowEdgeView::new("top", "left"),
            FlowEdgeView::new("left", "top"),
        ];
        let got = keys(&nodes, &layers(&nodes, &cyclic));
        assert_eq!(got, [vec!["merge", "deep", "right"], vec!["top", "left"]]);
        assert!(layers(&[], &[]).is_empty());
    }

    #[test]
    fn the_drawing_shows_states_and_edge_conditions() {
        let nodes = vec![
            node("a", State::Completed),
            node("b", State::Failed),
            node("c", State::Skipped),
        ];
        let edges = vec![
            FlowEdgeView::new("a", "b"),
            FlowEdgeView::new("b", "c").on(EdgeOn::Failure),
            FlowEdgeView::new("a", "c").on(EdgeOn::Any),
        ];
        let text = draw(&nodes, &edges);
        assert!(text.contains("  0  a  completed  ex_a"), "{text}");
        assert!(text.contains("  1  b  failed     ex_b"), "{text}");
        assert!(text.contains("  2  c  skipped    ex_c"), "{text}");
        assert!(text.contains("  a ──▶ b\n"), "{text}");
        assert!(text.contains("  b ──▶ c (on failure)\n"), "{text}");
        assert!(text.contains("  a ──▶ c (on any)\n"), "{text}");
        assert!(draw(&nodes[..1], &[]).contains("edges: none"));
    }

    #[test]
    fn bad_files_name_the_file() {
        let err = read_json::<FlowRequest>("/nonexistent/flow.json").unwrap_err();
        assert!(err.contains("cannot read /nonexistent/flow.json"), "{err}");
        let dir = std::env::temp_dir().join(format!("weft-flow-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(&path, r#"{"nodes": [], "nodez": 1}"#).unwrap();
        let err = read_json::<FlowRequest>(path.to_str().unwrap()).unwrap_err();
        assert!(err.contains("nodez") && err.contains("bad.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
