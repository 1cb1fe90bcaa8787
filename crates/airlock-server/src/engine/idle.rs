//! The idle limits' runner: every [`IDLE_ROUND`] on the engine's clock,
//! one replica at a time (`Exclusive::IdleGrants`), each active grant of an
//! entitlement with an `idle_limit` is looked at, and the core's rule
//! (`airlock_core::idle`) warns its holder or releases it.
//!
//! What a grant's use is: its checks, stored on the request (each replica
//! adds its counts about once a second, `engine::checks`), and the logins,
//! logouts and sessions on its timeline (audit events). This replica adds
//! its own counts first (and counts the checks it answers during the round
//! from memory); other replicas' may be up to a flush late, which
//! [`ACTIVITY_LAG`] allows for. The timeline is read only for grants that
//! look idle by their stored checks alone (use only ever moves the idle
//! clock forward, so one that does not is not idle). The decision itself is
//! made again inside the write, on the stored request as it is then
//! (`Command::Idle`), so checks added meanwhile count.

use std::sync::Arc;
use std::time::Duration;

use airlock_core::audit::AuditAction;
use airlock_core::idle::{self, IdleLimit, Reported, Step};
use airlock_core::request::{AccessRequest, Command, State};
use airlock_core::EntitlementId;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::checks::CHECKS_FLUSH_EVERY;
use super::{Engine, EngineError};
use crate::store::{AuditFilter, Exclusive, RequestFilter};

/// How often the idle limits are applied.
pub const IDLE_ROUND: Duration = Duration::from_secs(30);

/// How late use may reach the record: other replicas add their checks
/// about once a [`CHECKS_FLUSH_EVERY`]; a few of those, for a write that
/// waited its turn.
pub const ACTIVITY_LAG: Duration = Duration::from_secs(5 * CHECKS_FLUSH_EVERY.as_secs());

/// Most timeline events of each kind read per grant.
const EVENTS_READ: u32 = 1_000;

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleReport {
    pub warned: usize,
    pub released: usize,
}

impl Engine {
    /// The idle limit of `entitlement`, if it sets one.
    pub fn idle_limit(&self, entitlement: &EntitlementId) -> Option<IdleLimit> {
        self.idle_limits.get(entitlement).copied()
    }

    /// Rounds every [`IDLE_ROUND`] on the engine's clock until shutdown.
    pub async fn run_idle_limits(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.store.try_exclusive(Exclusive::IdleGrants).await {
                Ok(Some(guard)) => {
                    let result = self.idle_round().await;
                    guard.release().await;
                    if let Err(e) = result {
                        error!(error = %e, "a round of the idle limits failed; the next one tries again");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    error!(error = %e, "cannot tell whether another replica applies the idle limits; skipping this round");
                }
            }
            let next = self.clock.now().plus(IDLE_ROUND);
            tokio::select! {
                () = self.clock.sleep_until(next) => {}
                changed = shutdown.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One round: each active grant with an idle limit is warned or
    /// released as the core's rule says.
    pub async fn idle_round(self: &Arc<Self>) -> Result<IdleReport, EngineError> {
        let mut report = IdleReport::default();
        if self.idle_limits.is_empty() {
            return Ok(report);
        }
        if let Err(e) = self.flush_checks().await {
            warn!(error = %e, "could not add this replica's checks before the idle limits; they count once added");
        }
        for (entitlement, limit) in &self.idle_limits {
            let active = self
                .store
                .list_requests(&RequestFilter {
                    states: vec![State::Active],
                    entitlement: Some(entitlement.clone()),
                    limit: u32::MAX,
                    ..RequestFilter::default()
                })
                .await?;
            for request in active {
                // Checks alone say it is in use: the timeline cannot say less.
                let unstored = Reported {
                    last_at: self.checks.unstored(&request.id),
                    ..Reported::default()
                };
                let now = self.clock.now();
                if idle::step(limit, &request, &unstored, ACTIVITY_LAG, now) == Step::Nothing {
                    continue;
                }
                let reported = self.reported_use(&request).await?;
                let command = Command::Idle {
                    limit: *limit,
                    reported,
                    lag: ACTIVITY_LAG,
                };
                let applied = self.apply(&request.id, command).await?;
                let events = std::iter::once(&applied.main)
                    .chain(&applied.others)
                    .flat_map(|t| &t.events);
                for event in events {
                    match event.action {
                        AuditAction::IdleWarned => {
                            info!(request = %request.id, "an idle grant's holder warned");
                            report.warned += 1;
                        }
                        AuditAction::Released => {
                            info!(request = %request.id, "an idle grant released");
                            report.released += 1;
                        }
                        _ => {}
                    }
                }
                self.after_commit_all(&applied);
            }
        }
        Ok(report)
    }

    /// The use of `request` its timeline holds (logins, logouts, sessions
    /// and the idle warnings it was given), with the checks this replica
    /// counted since its round began and has not stored yet.
    async fn reported_use(&self, request: &AccessRequest) -> Result<Reported, EngineError> {
        let mut events = Vec::new();
        for action in [
            AuditAction::SshLogin,
            AuditAction::SshLogout,
            AuditAction::SessionSeen,
            AuditAction::SessionGone,
            AuditAction::IdleWarned,
        ] {
            events.extend(
                self.audit(&AuditFilter {
                    request: Some(request.id.to_string()),
                    action: Some(action.as_str().to_owned()),
                    limit: EVENTS_READ,
                    ..AuditFilter::default()
                })
                .await?,
            );
        }
        let mut reported =
            Reported::from_events(events.iter().map(|e| (e.action.as_str(), e.at, &e.details)));
        reported.last_at = reported.last_at.max(self.checks.unstored(&request.id));
        Ok(reported)
    }
}
