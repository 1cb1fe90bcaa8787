//! The check endpoint's engine side: does a principal hold an entitlement
//! right now, and the record of each check on the grant.
//!
//! A check is not an audit event. Applications ask before every privileged
//! action, thousands of times a second: one event per check would grow the
//! hash chain by as many events a second, make every check a durable write
//! through the one writer (queueing the changes that matter behind it), and
//! bury the decisions the audit record exists for. What a grant's record
//! needs is how much it was used and when last, so each replica counts
//! checks per grant in memory and adds them to the stored request in one
//! write about once a second ([`CHECKS_FLUSH_EVERY`]) and when it stops:
//! the pattern of an API token's last use (`engine::tokens`), with a count.
//! A crash loses at most the last second's counts, never a decision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::access;
use airlock_core::catalog::User;
use airlock_core::request::{self, CheckActivity};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use tokio::sync::watch;

use super::{Engine, EngineError};
use crate::store::StoreError;

/// How often a replica adds the checks it counted to the store.
pub const CHECKS_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What a check answers: whether the principal holds the entitlement at
/// the engine's clock, and if so through which request until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAnswer {
    pub principal: UserId,
    pub entitlement: EntitlementId,
    /// The request that grants it, while it holds.
    pub held: Option<(RequestId, Timestamp)>,
}

/// Checks counted per grant since the last flush.
#[derive(Default)]
pub(super) struct CheckLedger {
    counted: std::sync::Mutex<HashMap<RequestId, CheckActivity>>,
    /// The last check of each grant a flush under way took and has not
    /// stored yet: still this replica's to tell (`unstored`), or a reader
    /// of the store in the meantime would find neither.
    in_flight: std::sync::Mutex<HashMap<RequestId, Timestamp>>,
    /// One flush at a time, so that a flush returns only once every count
    /// taken before it is stored (the idle limits decide on what is).
    flushing: tokio::sync::Mutex<()>,
}

impl CheckLedger {
    fn note(&self, id: &RequestId, at: Timestamp) {
        let one = CheckActivity {
            count: 1,
            last_at: Some(at),
        };
        let Ok(mut counted) = self.counted.lock() else {
            return;
        };
        match counted.get_mut(id) {
            Some(seen) => *seen = seen.and(one),
            None => {
                counted.insert(id.clone(), one);
            }
        }
    }

    /// The last check of `id` this replica counted and has not stored yet
    /// (a flush under way included).
    pub(super) fn unstored(&self, id: &RequestId) -> Option<Timestamp> {
        let counted = self
            .counted
            .lock()
            .ok()
            .and_then(|counted| counted.get(id).and_then(|c| c.last_at));
        let in_flight = self
            .in_flight
            .lock()
            .ok()
            .and_then(|in_flight| in_flight.get(id).copied());
        counted.max(in_flight)
    }

    /// The counts to store, kept as in flight until [`CheckLedger::landed`].
    fn take(&self) -> Vec<(RequestId, CheckActivity)> {
        // In flight before they leave `counted`: never in neither.
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.extend(
                counted
                    .iter()
                    .filter_map(|(id, c)| Some((id.clone(), c.last_at?))),
            );
        }
        counted.drain().collect()
    }

    /// The flush under way is over: its counts are stored, or put back.
    fn landed(&self) {
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.clear();
        }
    }

    /// Puts back counts a failed write did not store, to go with the next.
    fn restore(&self, tallies: Vec<(RequestId, CheckActivity)>) {
        let Ok(mut counted) = self.counted.lock() else {
            return;
        };
        for (id, checks) in tallies {
            let merged = counted.get(&id).copied().unwrap_or_default().and(checks);
            counted.insert(id, merged);
        }
    }
}

impl Engine {
    /// Whether `principal` holds `entitlement` now (`request::holds_access`
    /// on its one open request); counted against the grant when it does.
    /// Anyone may ask about themselves; asking about others is
    /// `access::may_check`'s to allow.
    pub async fn check(
        &self,
        by: &User,
        principal: &UserId,
        entitlement: &EntitlementId,
    ) -> Result<CheckAnswer, EngineError> {
        access::may_check(by, principal)?;
        self.entitlement(entitlement)?;
        let open = self.store.open_request(principal, entitlement).await?;
        let now = self.now();
        let held = open.and_then(|r| {
            let expires_at = r.expires_at?;
            request::holds_access(r.state, r.expires_at, now).then_some((r.id, expires_at))
        });
        if let Some((id, _)) = &held {
            self.checks.note(id, now);
        }
        self.metrics.check(held.is_some());
        Ok(CheckAnswer {
            principal: principal.clone(),
            entitlement: entitlement.clone(),
            held,
        })
    }

    /// Adds the checks counted so far to the store (kept for the next
    /// flush if the write fails); returns once they, and those of a flush
    /// already under way, are stored.
    pub async fn flush_checks(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.checks.flushing.lock().await;
        let tallies = self.checks.take();
        if tallies.is_empty() {
            return Ok(());
        }
        let stored = self.store.add_checks(tallies.clone()).await;
        if stored.is_err() {
            self.checks.restore(tallies);
        }
        self.checks.landed();
        stored
    }

    /// Flushes counted checks every [`CHECKS_FLUSH_EVERY`] on the engine's
    /// clock until shutdown (the server flushes once more after every
    /// task has stopped, so checks answered meanwhile are kept too).
    pub async fn run_check_recorder(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let next = self.clock.now().plus(CHECKS_FLUSH_EVERY);
            tokio::select! {
                () = self.clock.sleep_until(next) => {
                    if let Err(e) = self.flush_checks().await {
                        tracing::warn!(error = %e, "could not record grant checks; kept for the next try");
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
    }
}
