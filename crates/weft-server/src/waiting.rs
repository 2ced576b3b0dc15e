//! Sleeping until the store says something changed: the long-poll claim and
//! `GET /v1/executions/{id}/wait`.
//!
//! Definitions: a [`Waiter`] holds a subscription to the store's events (if
//! the store sends any), the server's shutdown flag and a deadline. Each call
//! of [`Waiter::next`] sleeps until a matching event, a re-check is due, the
//! deadline passes or the server shuts down.
//!
//! Invariants: the subscription is taken before the caller's first read of
//! the store, so an event sent between that read and the sleep is never
//! missed. Events may still be lost (a lagging receiver, a write by another
//! process), so a waiter re-reads the store every `event_recheck_interval`
//! anyway, and every `poll_interval` when the store sends no events at all.
//! A waiter never outlives its deadline.

use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use weft_core::StoreEvent;

use crate::app::AppState;

/// Why a [`Waiter`] woke up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake<T> {
    /// An event the caller selected.
    Event(T),
    /// Time to re-read the store: events may have been lost.
    Recheck,
    /// The deadline passed.
    Deadline,
    /// The server is shutting down; answer now.
    Shutdown,
}

/// One request's wait; see the module docs.
pub(crate) struct Waiter {
    events: Option<broadcast::Receiver<StoreEvent>>,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
    poll_interval: Duration,
    recheck_interval: Duration,
}

impl Waiter {
    /// Subscribes to the store's events and starts the clock. Call it before
    /// the first read of the store.
    pub(crate) fn new(app: &AppState, wait: Duration) -> Self {
        Self {
            events: app.store.events(),
            shutdown: app.shutdown.subscribe(),
            deadline: Instant::now() + wait,
            poll_interval: app.config.poll_interval,
            recheck_interval: app.config.event_recheck_interval,
        }
    }

    /// Sleeps until `select` picks an event, a re-check is due, the deadline
    /// passes or the server shuts down.
    pub(crate) async fn next<T>(
        &mut self,
        mut select: impl FnMut(&StoreEvent) -> Option<T>,
    ) -> Wake<T> {
        let now = Instant::now();
        if *self.shutdown.borrow() {
            return Wake::Shutdown;
        }
        if now >= self.deadline {
            return Wake::Deadline;
        }
        let interval = if self.events.is_some() {
            self.recheck_interval
        } else {
            self.poll_interval
        };
        let until = self.deadline.min(now + interval);
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => {
                    return if until >= self.deadline { Wake::Deadline } else { Wake::Recheck };
                }
                // A closed channel means the server is going away too.
                _ = self.shutdown.changed() => return Wake::Shutdown,
                received = recv(&mut self.events) => match received {
                    Ok(event) => {
                        if let Some(picked) = select(&event) {
                            return Wake::Event(picked);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Wake::Recheck,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.events = None;
                        return Wake::Recheck;
                    }
                },
            }
        }
    }
}

/// The next event, or never when there is no subscription.
async fn recv(
    events: &mut Option<broadcast::Receiver<StoreEvent>>,
) -> Result<StoreEvent, broadcast::error::RecvError> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
