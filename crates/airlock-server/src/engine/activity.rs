//! Sampling what grantees do while their grants are active: every
//! `server.activity_sample_every`, each active grant whose connector can
//! list the grantee's sessions (PostgreSQL, MariaDB) is asked, and what
//! started or ended since the last look is recorded on the request's
//! timeline (`airlock_core::activity`). With several replicas one of them
//! samples each round (the same session lock as reconciliation, a key of
//! its own).
//!
//! What was seen is kept in memory: after a restart, or when another
//! replica takes the next round, sessions still open are recorded as seen
//! again. A grant that ends takes its sessions with it (the connectors end
//! them at revocation), recorded as gone with that reason.
//!
//! Targets that cannot be asked report instead: a log shipper on an SSH
//! host posts sshd's lines (`POST /v1/grants/{id}/activity`), which the
//! core reads into logins and logouts of the grant
//! (`airlock_core::ssh_activity`). What the grant's timeline holds already
//! is read from its audit events; posts are taken one at a time per
//! replica, so a grant's bound of events holds against concurrent posts to
//! one replica and is overshot by at most one post per other replica.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use airlock_core::access::{self, Capability};
use airlock_core::activity::{self, Sampled, Session};
use airlock_core::audit::AuditAction;
use airlock_core::catalog::User;
use airlock_core::request::State;
use airlock_core::ssh_activity::{self, Recorded, Reported};
use airlock_core::RequestId;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::reconcile::bounded;
use super::{Engine, EngineError};
use crate::store::{AuditFilter, Exclusive, RequestFilter};

/// Most active grants sampled in one round; more are left for later
/// rounds' sake of the targets (and said in the log).
const MAX_SAMPLED: u32 = 2_000;

/// One grant as last sampled: which it is, and its sessions by id.
type LastSeen = (Sampled, BTreeMap<u64, Session>);

/// What one replica last saw on each grant it samples.
#[derive(Default)]
pub(super) struct SeenSessions(std::sync::Mutex<HashMap<RequestId, LastSeen>>);

impl Engine {
    /// Samples every `every` until shutdown.
    pub async fn run_activity_sampler(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                changed = shutdown.changed() => if changed.is_err() { return },
            }
            if *shutdown.borrow() {
                return;
            }
            let guard = match self.store.try_exclusive(Exclusive::ActivitySampling).await {
                Ok(Some(guard)) => guard,
                Ok(None) => continue,
                Err(e) => {
                    error!(error = %e, "cannot tell whether another replica samples activity; skipping this round");
                    continue;
                }
            };
            let result = self.sample_activity().await;
            guard.release().await;
            if let Err(e) = result {
                error!(error = %e, "sampling the activity of active grants failed");
            }
        }
    }

    /// One round: asks each active grant's connector for the grantee's
    /// sessions and records what started and what ended; returns how many
    /// events it recorded.
    pub async fn sample_activity(&self) -> Result<usize, EngineError> {
        let active = self
            .store
            .list_requests(&RequestFilter {
                states: vec![State::Active],
                limit: MAX_SAMPLED,
                ..RequestFilter::default()
            })
            .await?;
        if active.len() >= usize::try_from(MAX_SAMPLED).unwrap_or(usize::MAX) {
            info!(
                max = MAX_SAMPLED,
                "more active grants than one round samples; the newest are sampled"
            );
        }
        let mut events = Vec::new();
        let mut listed: HashMap<RequestId, (Sampled, Vec<Session>)> = HashMap::new();
        for request in &active {
            let Some(entitlement) = self.catalog.entitlements.get(&request.entitlement) else {
                continue;
            };
            let Some(connector) = self.connectors.get(&entitlement.connector) else {
                continue;
            };
            let call = connector.sessions(&request.requester, &request.id);
            let sessions = match bounded(connector.as_ref(), "listing sessions", call).await {
                Ok(Some(sessions)) => sessions,
                Ok(None) => continue,
                Err(e) => {
                    warn!(request = %request.id, error = %e, "cannot list a grantee's sessions; trying again next round");
                    continue;
                }
            };
            let grant = Sampled {
                request: request.id.clone(),
                entitlement: request.entitlement.clone(),
                requester: request.requester.clone(),
                connector: entitlement.connector.clone(),
            };
            let now: Vec<Session> = sessions
                .into_iter()
                .map(|s| Session {
                    id: s.id,
                    login: s.login,
                    client: s.client,
                    statement: s.statement,
                    connected_at: s.connected_at,
                })
                .collect();
            listed.insert(request.id.clone(), (grant, now));
        }
        let at = self.clock.now();
        {
            let Ok(mut seen) = self.seen_sessions.0.lock() else {
                return Ok(0);
            };
            // Grants that are no longer active took their sessions along
            // (known only when every active grant was read).
            let complete = active.len() < usize::try_from(MAX_SAMPLED).unwrap_or(usize::MAX);
            let ended: Vec<RequestId> = seen
                .keys()
                .filter(|id| complete && !active.iter().any(|r| &r.id == *id))
                .cloned()
                .collect();
            for id in ended {
                if let Some((grant, before)) = seen.remove(&id) {
                    events.extend(activity::changes(
                        &grant,
                        &before,
                        &[],
                        Some("the grant ended"),
                        at,
                    ));
                }
            }
            for (id, (grant, now)) in listed {
                let empty = BTreeMap::new();
                let before = seen.get(&id).map_or(&empty, |(_, b)| b);
                events.extend(activity::changes(&grant, before, &now, None, at));
                seen.insert(id, (grant, now.into_iter().map(|s| (s.id, s)).collect()));
            }
        }
        let count = events.len();
        if count > 0 {
            self.record(events).await?;
        }
        Ok(count)
    }
}

impl Engine {
    /// Records what `lines` (sshd's, from `source`) say about grant `id`:
    /// its logins and their logouts, each once, within the grant's bound.
    /// Only admins and reporters post; lines are taken while the grant is
    /// active and for a while after it ended (`ssh_activity::takes_lines`).
    pub async fn report_activity(
        &self,
        by: &User,
        id: &RequestId,
        source: &str,
        lines: &[String],
    ) -> Result<Reported, EngineError> {
        access::may(by, Capability::ReportActivity)?;
        let request = self.get(id).await?;
        let _one_at_a_time = self.reporting.lock().await;
        let mut stored = Vec::new();
        for action in [AuditAction::SshLogin, AuditAction::SshLogout] {
            stored.extend(
                self.audit(&AuditFilter {
                    request: Some(id.to_string()),
                    action: Some(action.as_str().to_owned()),
                    limit: u32::try_from(ssh_activity::MAX_EVENTS_PER_GRANT + 1)
                        .unwrap_or(u32::MAX),
                    ..AuditFilter::default()
                })
                .await?,
            );
        }
        let before = Recorded::from_events(stored.iter().map(|e| (e.action.as_str(), &e.details)));
        let now = self.clock.now();
        // Malformed lines are refused before the grant's state is looked at.
        let reported = ssh_activity::report(&request, by, source, lines, &before, now)?;
        ssh_activity::takes_lines(&request, now)?;
        if !reported.events.is_empty() {
            self.record(reported.events.clone()).await?;
        }
        if reported.over_limit > 0 {
            warn!(request = %id, over_limit = reported.over_limit, "a grant's activity is past its bound; lines not recorded");
        }
        Ok(reported)
    }
}
