//! Due-time hints and store events over pub/sub.
//!
//! Definitions: the library publishes `<partition>:<due_ms>` on the store's
//! due channel when a transition sets a timer earlier than its partition's
//! earliest, and `R|<partition>|<lane>|<capset>` / `E|<state>|<id>` /
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

/// Parses one events-channel message; `None` for anything malformed.
pub fn parse_event(payload: &str, count: PartitionCount) -> Option<StoreEvent> {
    let mut parts = payload.splitn(3, '|');
    match (parts.next()?, parts.next()?, parts.next()?) {
        ("R", partition, rest) => {
            let partition = PartitionId(partition.parse().ok()?);
            // Lanes and capabilities never contain `|`.
            let (lane, capset) = rest.split_once('|')?;
            count.contains(partition).then(|| StoreEvent::Ready {
                partition,
                lane: lane.to_owned(),
                capset: capset.to_owned(),
            })
        }
        ("E", state, id) => Some(StoreEvent::Ended {
            id: ExecutionId::parse(id).ok()?,
            state: State::parse(state).ok()?,
        }),
        ("F", state, id) => Some(StoreEvent::FlowEnded {
            id: FlowId::parse(id).ok()?,
            state: weft_core::flow::FlowState::parse(state)?,
        }),
        _ => None,
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
            } else if let Some(event) = parse_event(&payload, self.count) {
                let _ = self.events.send(event);
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
            parse_event("R|2|a:b|gpu,x86", count),
            Some(StoreEvent::Ready {
                partition: PartitionId(2),
                lane: "a:b".into(),
                capset: "gpu,x86".into()
            })
        );
        assert_eq!(
            parse_event("R|2|a|", count),
            Some(StoreEvent::Ready {
                partition: PartitionId(2),
                lane: "a".into(),
                capset: String::new()
            })
        );
        assert_eq!(parse_event("R|2|a", count), None);
        let id = ExecutionId::mint(PartitionId(1), 5);
        assert_eq!(
            parse_event(&format!("E|failed|{id}"), count),
            Some(StoreEvent::Ended {
                id,
                state: State::Failed
            })
        );
        assert_eq!(parse_event("R|9|a|", count), None);
        assert_eq!(parse_event("E|bogus|ex_1", count), None);
        assert_eq!(parse_event("X|1|a", count), None);
        let flow = FlowId::mint(PartitionId(2), 5);
        assert_eq!(
            parse_event(&format!("F|cancelled|{flow}"), count),
            Some(StoreEvent::FlowEnded {
                id: flow,
                state: weft_core::flow::FlowState::Cancelled
            })
        );
        assert_eq!(parse_event("F|bogus|fl_1", count), None);
    }
}
