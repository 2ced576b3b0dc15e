//! Flow requests for the flow tests: nodes with a lane each, and random DAGs.

use serde_json::json;
use weft_core::flow::{EdgeOn, FlowEdge, FlowNodeSpec, FlowSpec, Join, JoinMode};
use weft_core::SubmitParams;

/// Node `key` in `lane`, failing for good at its first failure.
pub fn node(key: &str, lane: &str) -> FlowNodeSpec {
    let mut params = SubmitParams::new("k", json!({ "node": key }));
    params.lane = Some(lane.to_owned());
    params.max_attempts = Some(1);
    FlowNodeSpec {
        key: key.into(),
        params,
    }
}

/// An edge `from → to`.
pub fn edge(from: &str, to: &str, on: EdgeOn) -> FlowEdge {
    FlowEdge {
        from: from.into(),
        to: to.into(),
        on,
    }
}

/// `n` nodes `n<first>…` in lanes `<tag>-<key>`, each with edges from
/// earlier nodes (existing ones included, so no cycle) and a random join.
pub fn random_spec(rng: &mut fastrand::Rng, tag: &str, first: usize, n: usize) -> FlowSpec {
    let keys: Vec<String> = (first..first + n).map(|i| format!("n{i}")).collect();
    let mut spec = FlowSpec::default();
    for key in &keys {
        spec.nodes.push(node(key, &format!("{tag}-{key}")));
    }
    for (j, key) in keys.iter().enumerate() {
        let mut incoming = 0u32;
        for i in 0..first + j {
            if rng.u8(..100) < 35 {
                let on = match rng.u8(..10) {
                    0..=6 => EdgeOn::Success,
                    7 => EdgeOn::Failure,
                    _ => EdgeOn::Any,
                };
                spec.edges.push(edge(&format!("n{i}"), key, on));
                incoming += 1;
            }
        }
        if incoming > 0 && rng.bool() {
            let mode = [JoinMode::All, JoinMode::Any, JoinMode::Quorum][rng.usize(..3)];
            spec.joins.insert(
                key.clone(),
                Join {
                    mode,
                    n: (mode == JoinMode::Quorum).then(|| rng.u32(1..=incoming)),
                    cancel_remaining: rng.u8(..4) == 0,
                },
            );
        }
    }
    spec
}
