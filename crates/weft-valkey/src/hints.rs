//! Due-time hints and store events over pub/sub.
//!
//! Definitions: the library publishes `<partition>:<due_ms>` on the store's
//! due channel when a transition sets a timer earlier than its partition's
//! earliest, and `R|<partition>|<lane>|<capset>` / `E|<state>|<id>[,<id>…]` /
//! `F|<state>|<flow id>` on its events channel when an execution becomes
//! claimable / ends / a flow's last member ends. A task subscribed to
//! both on a dedicated connection turns each message into a `DueHint` or a
//! `StoreEvent` on a broadcast channel.
//!
//! Invariants: both are advisory. A lost connection loses messages until the
//! task resubscribes (with backoff); engines and waiters poll as a fallback.
//! The task ends when the store's last handle is dropped.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};
use weft_core::{DueHint, ExecutionId, FlowId, PartitionCount, PartitionId, State, StoreEvent};

/// Messages buffered per receiver before the slowest loses the oldest.
pub const HINT_BUFFER: usize = 1024;
const RESUBSCRIBE_DELAY_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_DELAY_MAX: Duration = Duration::from_secs(5);

/// Parses one due-channel message; `None` for anything malformed.
pub fn parse_hint(payload: &str, count: PartitionCount) -> Option<DueHint> {
    let (partition, due_ms) = payload.split_once(':')?;
    let partition = PartitionId(partition.parse().ok()?);
    count.contains(partition).then_some(())?;
    Some(DueHint {
        partition,
        due_ms: due_ms.parse().ok()?,
    })
}

/// Parses one events-channel message into its events (an `E` message of a
/// batch call names several executions); nothing for anything malformed.
pub fn parse_events(payload: &str, count: PartitionCount) -> Vec<StoreEvent> {
    let mut parts = payload.splitn(3, '|');
    let (Some(kind), Some(head), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Vec::new();
    };
    match kind {
        "R" => {
            let Some(partition) = head.parse().ok().map(PartitionId) else {
                return Vec::new();
            };
            // Lanes and capabilities never contain `|`.
            match rest.split_once('|') {
                Some((lane, capset)) if count.contains(partition) => vec![StoreEvent::Ready {
                    partition,
                    lane: lane.to_owned(),
                    capset: capset.to_owned(),
                }],
                _ => Vec::new(),
            }
        }
        "E" => match State::parse(head) {
            // Ids never contain `,`.
            Ok(state) => rest
                .split(',')
                .filter_map(|id| ExecutionId::parse(id).ok())
                .map(|id| StoreEvent::Ended { id, state })
                .collect(),
            Err(_) => Vec::new(),
        },
        "F" => match (FlowId::parse(rest), weft_core::flow::FlowState::parse(head)) {
            (Ok(id), Some(state)) => vec![StoreEvent::FlowEnded { id, state }],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The subscription task's configuration.
pub struct Listener {
    /// Opens the dedicated connection.
    pub client: redis::Client,
    /// The due channel's name.
    pub due_channel: String,
    /// The events channel's name.
    pub events_channel: String,
    /// `P`, to drop hints of partitions the store does not have.
    pub count: PartitionCount,
    /// Where hints go.
    pub hints: broadcast::Sender<DueHint>,
    /// Where events go.
    pub events: broadcast::Sender<StoreEvent>,
}

impl Listener {
    /// Subscribes until `stop`'s sender is dropped, resubscribing after a
    /// lost connection.
    pub async fn run(self, mut stop: watch::Receiver<()>) {
        let mut delay = RESUBSCRIBE_DELAY_MIN;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = self.forward(&mut delay) => {}
            }
            tracing::debug!(?delay, "store pub/sub subscription lost; resubscribing");
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RESUBSCRIBE_DELAY_MAX);
        }
    }

    /// Forwards messages while the subscription lasts.
    async fn forward(&self, delay: &mut Duration) {
        let Ok(mut pubsub) = self.client.get_async_pubsub().await else {
            return;
        };
        let channels = [self.due_channel.as_str(), self.events_channel.as_str()];
        if pubsub.subscribe(&channels[..]).await.is_err() {
            return;
        }
        *delay = RESUBSCRIBE_DELAY_MIN;
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            // A send without receivers is fine: nobody is waiting right now.
            if message.get_channel_name() == self.due_channel {
                if let Some(hint) = parse_hint(&payload, self.count) {
                    let _ = self.hints.send(hint);
                }
            } else {
                for event in parse_events(&payload, self.count) {
                    let _ = self.events.send(event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Messages parse, and malformed ones are ignored.
    use super::*;

    #[test]
    fn hints_parse() {
        let count = PartitionCount::new(4).unwrap();
        assert_eq!(
            parse_hint("3:1700", count),
            Some(DueHint {
                partition: PartitionId(3),
                due_ms: 1700
            })
        );
        assert_eq!(parse_hint("4:1700", count), None);
        assert_eq!(parse_hint("x:1", count), None);
        assert_eq!(parse_hint("1", count), None);
    }

    #[test]
    fn events_parse() {
        let count = PartitionCount::new(4).unwrap();
        assert_eq!(
            parse_events("R|2|a:b|gpu,x86", count),
            vec![StoreEvent::Ready {
                partition: PartitionId(2),
                lane: "a:b".into(),
                capset: "gpu,x86".into()
            }]
        );
        assert_eq!(
            parse_events("R|2|a|", count),
            vec![StoreEvent::Ready {
                partition: PartitionId(2),
                lane: "a".into(),
                capset: String::new()
            }]
        );
        assert_eq!(parse_events("R|2|a", count), vec![]);
        let id = ExecutionId::mint(PartitionId(1), 5);
        let other = ExecutionId::mint(PartitionId(3), 6);
        let ended = |id: &ExecutionId| StoreEvent::Ended {
            id: id.clone(),
            state: State::Failed,
        };
        assert_eq!(
            parse_events(&format!("E|failed|{id}"), count),
            vec![ended(&id)]
        );
        assert_eq!(
            parse_events(&format!("E|failed|{id},{other}"), count),
            vec![ended(&id), ended(&other)],
            "a batch call's message names several"
        );
        assert_eq!(
            parse_events(&format!("E|failed|{id},bogus"), count),
            vec![ended(&id)]
        );
        assert_eq!(parse_events("R|9|a|", count), vec![]);
        assert_eq!(parse_events("E|bogus|ex_1", count), vec![]);
        assert_eq!(parse_events("X|1|a", count), vec![]);
        let flow = FlowId::mint(PartitionId(2), 5);
        assert_eq!(
            parse_events(&format!("F|cancelled|{flow}"), count),
            vec![StoreEvent::FlowEnded {
                id: flow,
                state: weft_core::flow::FlowState::Cancelled
            }]
        );
        assert_eq!(parse_events("F|bogus|fl_1", count), vec![]);
    }
}
