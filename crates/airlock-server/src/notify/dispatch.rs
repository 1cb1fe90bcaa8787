//! The dispatcher: an edge task that drains the outbox. It claims due rows
//! with a lease exactly the way the scheduler claims due requests (several
//! replicas share the outbox), sends each on its channel, and settles it:
//! sent, retried after a capped exponential backoff on the engine's clock,
//! given up after the configured horizon (failed, counted), or dropped when
//! it no longer says anything true. A crash between sending and settling
//! leaves the row claimed; once the lease lapses it is sent again with the
//! same idempotency key. Settled rows leave the outbox once older than
//! `notifications.keep_settled`, a batch at a time, at most hourly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::notify::{still_relevant_as_planned, AfterFailure, RetryPolicy};
use tokio::sync::{watch, Notify};
use tracing::{debug, error, warn};

use super::{recipients, render, AddressBook, Channel, ChannelError, Message};
use crate::engine::{Clock, Engine};
use crate::store::{Delivery, OutboxEntry, Store, StoreError};

/// Rows claimed per pass.
const BATCH: u32 = 64;
/// How long a claimed row is held before another dispatcher may send it:
/// longer than any channel's timeout.
pub const LEASE: Duration = Duration::from_secs(150);
/// The longest a dispatcher sleeps without looking (a backstop for a missed
/// wake-up, and how it finds claims that lapsed).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How often settled rows past their keep are looked for, and how many go
/// at once (the rest at the next pass: a big backlog never holds the
/// store's writer for long).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_BATCH: u32 = 10_000;

pub struct DispatcherParts {
    /// Its store, clock, metrics, and the wake-up its commits send.
    pub engine: Arc<Engine>,
    pub channels: HashMap<String, Arc<dyn Channel>>,
    pub book: Arc<dyn AddressBook>,
    pub retry: RetryPolicy,
    /// How long settled rows stay (`None`: for ever).
    pub keep_settled: Option<Duration>,
}

pub struct Dispatcher {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    channels: HashMap<String, Arc<dyn Channel>>,
    book: Arc<dyn AddressBook>,
    retry: RetryPolicy,
    wake: Arc<Notify>,
    keep_settled: Option<Duration>,
    /// When settled rows were last pruned.
    pruned_at: std::sync::Mutex<Option<airlock_core::Timestamp>>,
}

impl Dispatcher {
    pub fn new(parts: DispatcherParts) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store: parts.engine.shared_store(),
            clock: parts.engine.clock(),
            wake: parts.engine.outbox_wake(),
            engine: parts.engine,
            channels: parts.channels,
            book: parts.book,
            retry: parts.retry,
            keep_settled: parts.keep_settled,
            pruned_at: std::sync::Mutex::new(None),
        })
    }

    /// Removes settled rows past their keep, when an hour has passed since
    /// it last did (a failure is logged and tried again next time).
    async fn prune(&self) {
        let Some(keep) = self.keep_settled else {
            return;
        };
        let now = self.clock.now();
        let due = {
            let last = self.pruned_at.lock().unwrap_or_else(|e| e.into_inner());
            last.is_none_or(|at| at.plus(PRUNE_EVERY) <= now)
        };
        if !due {
            return;
        }
        match self
            .store
            .prune_notifications(now.minus(keep), PRUNE_BATCH)
            .await
        {
            Ok(n) => {
                if n > 0 {
                    debug!(count = n, "settled notifications past their keep removed");
                }
                // A full batch leaves more: look again at the next pass.
                let next = if n == u64::from(PRUNE_BATCH) {
                    None
                } else {
                    Some(now)
                };
                *self.pruned_at.lock().unwrap_or_else(|e| e.into_inner()) = next;
            }
            Err(e) => warn!(error = %e, "cannot remove settled notifications past their keep"),
        }
    }

    /// Sends what falls due until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let p = &*self;
        if p.store.single_process() {
            match p.store.release_notification_claims().await {
                Ok(0) => {}
                Ok(n) => warn!(
                    count = n,
                    "notifications were being sent when the server stopped; sending them again with the same idempotency keys"
                ),
                Err(e) => error!(error = %e, "cannot release the notifications claimed before the stop; their leases will"),
            }
        }
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.prune().await;
            let pause = match self.run_once().await {
                Ok(n) if n == BATCH as usize => continue,
                Ok(_) => match p.store.next_notification_due(p.clock.now()).await {
                    Ok(Some(due)) => p.clock.now().until(due).min(MAX_SLEEP),
                    Ok(None) => MAX_SLEEP,
                    Err(e) => {
                        error!(error = %e, "notification dispatcher cannot read the outbox");
                        Duration::from_secs(1)
                    }
                },
                Err(e) => {
                    error!(error = %e, "notification dispatcher pass failed");
                    Duration::from_secs(1)
                }
            };
            let wake_at = p.clock.now().plus(pause);
            tokio::select! {
                () = p.clock.sleep_until(wake_at) => {}
                () = p.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Claims the rows due now and sends them, all at once; returns how
    /// many were claimed.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, StoreError> {
        let p = self;
        let due = p
            .store
            .claim_notifications(p.clock.now(), LEASE, BATCH)
            .await?;
        let claimed = due.len();
        let mut sends = tokio::task::JoinSet::new();
        for entry in due {
            let dispatcher = Arc::clone(self);
            sends.spawn(async move { dispatcher.deliver(entry).await });
        }
        while let Some(done) = sends.join_next().await {
            if let Err(e) = done {
                error!(error = %e, "a notification send panicked; its lease will retry it");
            }
        }
        Ok(claimed)
    }

    async fn deliver(&self, entry: OutboxEntry) {
        let p = self;
        let request = match &entry.request {
            Some(id) => match p.store.get_request(id).await {
                Ok(found) => found,
                Err(e) => {
                    warn!(key = %entry.key, error = %e, "cannot read the request; the lease will retry");
                    return;
                }
            },
            None => None,
        };
        let now = p.clock.now();
        let delivery = if request
            .as_ref()
            .is_some_and(|r| !still_relevant_as_planned(entry.topic, r, &entry.facts, now))
        {
            Delivery::Dropped {
                why: format!(
                    "no longer relevant when due: the request is {}",
                    request.as_ref().map_or("gone", |r| r.state.as_str())
                ),
            }
        } else {
            match p.channels.get(&entry.channel) {
                None => self.failed(
                    &entry,
                    ChannelError::Permanent(format!(
                        "no channel `{}` is configured any more",
                        entry.channel
                    )),
                ),
                Some(channel) => {
                    let (subject, text) = render(entry.topic, &entry.facts);
                    let message = Message {
                        idempotency_key: entry.key.clone(),
                        topic: entry.topic,
                        audience: entry.topic.audience(),
                        subject,
                        text,
                        facts: entry.facts.clone(),
                        recipients: recipients(
                            entry.topic.audience(),
                            request.as_ref(),
                            &entry.facts,
                            p.book.as_ref(),
                        )
                        .await,
                    };
                    match channel.send(&message).await {
                        Ok(()) => Delivery::Sent,
                        Err(e) => self.failed(&entry, e),
                    }
                }
            }
        };
        let outcome = match &delivery {
            Delivery::Sent => "sent",
            Delivery::Retry { .. } => "retry",
            Delivery::Failed { .. } => "failed",
            Delivery::Dropped { .. } => "dropped",
        };
        match p
            .store
            .settle_notification(&entry, delivery, p.clock.now())
            .await
        {
            Ok(true) => {
                p.engine.metrics().notification(outcome);
                debug!(key = %entry.key, outcome, "notification settled");
            }
            Ok(false) => {
                warn!(key = %entry.key, "the claim on a notification lapsed before it was settled; another dispatcher has it")
            }
            Err(e) => {
                error!(key = %entry.key, error = %e, "cannot settle a notification; it will be sent again with the same key")
            }
        }
    }

    fn failed(&self, entry: &OutboxEntry, e: ChannelError) -> Delivery {
        let p = self;
        let attempts = entry.attempts.saturating_add(1);
        let permanent = matches!(e, ChannelError::Permanent(_));
        let error = e.to_string();
        match p
            .retry
            .after_failure(attempts, entry.first_due, p.clock.now(), permanent)
        {
            AfterFailure::RetryAt(next_at) => {
                warn!(key = %entry.key, attempts, %error, "notification not sent; will retry");
                Delivery::Retry { next_at, error }
            }
            AfterFailure::GiveUp => {
                error!(key = %entry.key, attempts, %error, "notification given up on");
                Delivery::Failed { error }
            }
        }
    }
}
