//! Sampling what grantees do while their grants are active: every
//! `server.activity_sample_every`, active grants whose connector can list
//! the grantee's sessions (PostgreSQL, MariaDB) are asked, and what
//! started or ended since the last look is recorded on the request's
//! timeline (`airlock_core::activity`). Only those connectors'
//! entitlements' grants are read, a bounded page a round, each round going
//! on where the last stopped: with more active grants than a round takes,
//! every one is still sampled in turn, and a store holding only grants of
//! other connectors is not read at all. With several replicas one of them
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use airlock_connectors::Connector;
use airlock_core::access::{self, Capability};
use airlock_core::activity::{self, Sampled, Session};
use airlock_core::audit::AuditAction;
use airlock_core::catalog::User;
use airlock_core::request::State;
use airlock_core::ssh_activity::{self, Recorded, Reported};
use airlock_core::{EntitlementId, RequestId, Timestamp};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::reconcile::bounded;
use super::{Engine, EngineError};
use crate::store::{AuditFilter, Exclusive, PageKey, RequestFilter};

/// Most active grants sampled in one round; the next round goes on where
/// it stopped, so every active grant is sampled in turn however many there
/// are.
const MAX_SAMPLED: u32 = 2_000;

/// One grant as last sampled: its place in the list order, which it is,
/// and its sessions by id.
type LastSeen = (PageKey, Sampled, BTreeMap<u64, Session>);

/// What one replica knows between rounds.
#[derive(Default)]
struct Sampling {
    /// What it last saw on each grant it sampled.
    seen: HashMap<RequestId, LastSeen>,
    /// Where the next round starts: an entitlement and the last grant of
    /// it the previous round read (`None`: the first sampled entitlement's
    /// newest grant).
    resume: Option<(EntitlementId, PageKey)>,
}

/// What one replica last saw on each grant it samples, and where its next
/// round starts.
#[derive(Default)]
pub(super) struct SeenSessions(std::sync::Mutex<Sampling>);

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
            if self.session_listing_entitlements().is_empty() {
                continue;
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

    /// The entitlements whose connector can list a grantee's sessions, in
    /// catalog order: only their grants are read.
    fn session_listing_entitlements(&self) -> Vec<(&EntitlementId, &str, &dyn Connector)> {
        self.catalog
            .entitlements
            .values()
            .filter_map(|e| {
                let connector = self.connectors.get(&e.connector)?;
                connector.lists_sessions().then_some((
                    &e.id,
                    e.connector.as_str(),
                    connector.as_ref(),
                ))
            })
            .collect()
    }

    /// One round: reads up to [`MAX_SAMPLED`] active grants of the
    /// entitlements whose connector lists sessions, going on from where the
    /// last round stopped, asks the connector for each grantee's sessions
    /// and records what started and what ended; returns how many events it
    /// recorded.
    pub async fn sample_activity(&self) -> Result<usize, EngineError> {
        let sampled = self.session_listing_entitlements();
        if sampled.is_empty() {
            return Ok(0);
        }
        let resume = match self.seen_sessions.0.lock() {
            Ok(sampling) => sampling.resume.clone(),
            Err(_) => return Ok(0),
        };
        let first = resume
            .as_ref()
            .and_then(|(e, _)| sampled.iter().position(|(id, _, _)| *id == e))
            .unwrap_or(0);
        let mut budget = MAX_SAMPLED;
        let mut stopped_at = None;
        let mut events = Vec::new();
        let in_turn = sampled.iter().cycle().skip(first).take(sampled.len());
        for (turn, &(entitlement, connector_name, connector)) in in_turn.enumerate() {
            let after = match (&resume, turn) {
                (Some((e, key)), 0) if e == entitlement => Some(key.clone()),
                _ => None,
            };
            let page = self
                .store
                .list_requests(&RequestFilter {
                    states: vec![State::Active],
                    entitlement: Some(entitlement.clone()),
                    after: after.clone(),
                    limit: budget,
                    ..RequestFilter::default()
                })
                .await?;
            let full = page.len() >= usize::try_from(budget).unwrap_or(usize::MAX);
            let mut listed = Vec::with_capacity(page.len());
            for request in &page {
                let call = connector.sessions(&request.requester, &request.id);
                let sessions = match bounded(connector, "listing sessions", call).await {
                    Ok(sessions) => sessions,
                    Err(e) => {
                        warn!(request = %request.id, error = %e, "cannot list a grantee's sessions; trying again next round");
                        continue;
                    }
                };
                let grant = Sampled {
                    request: request.id.clone(),
                    entitlement: request.entitlement.clone(),
                    requester: request.requester.clone(),
                    connector: connector_name.to_owned(),
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
                listed.push((PageKey::of(request), grant, now));
            }
            let read = Read {
                entitlement,
                after: after.as_ref(),
                last: full.then(|| page.last().map(PageKey::of)).flatten(),
                ids: page.iter().map(|r| &r.id).collect(),
            };
            let Ok(mut sampling) = self.seen_sessions.0.lock() else {
                return Ok(0);
            };
            events.extend(sampling.update(&read, listed, self.clock.now()));
            if full {
                stopped_at = read.last.map(|key| (entitlement.clone(), key));
                break;
            }
            budget = budget.saturating_sub(u32::try_from(page.len()).unwrap_or(u32::MAX));
        }
        if stopped_at.is_some() {
            info!(
                max = MAX_SAMPLED,
                "more active grants than one round samples; the next round goes on from here"
            );
        }
        if let Ok(mut sampling) = self.seen_sessions.0.lock() {
            sampling.resume = stopped_at;
        }
        let count = events.len();
        if count > 0 {
            self.record(events).await?;
        }
        Ok(count)
    }
}

/// One page of an entitlement's active grants, as a round read it: after
/// `after` in the list order (from its newest grant when `None`) down to
/// `last` (to its oldest when `None`).
struct Read<'a> {
    entitlement: &'a EntitlementId,
    after: Option<&'a PageKey>,
    last: Option<PageKey>,
    ids: HashSet<&'a RequestId>,
}

impl Read<'_> {
    /// Whether a grant of the entitlement created at `created_at` would
    /// be on the page if it were still active. Grants created at a
    /// boundary's very millisecond are left to a round whose page holds
    /// them strictly inside (the order among them is the database's).
    fn covers(&self, key: &PageKey) -> bool {
        self.after.is_none_or(|a| key.created_at < a.created_at)
            && self
                .last
                .as_ref()
                .is_none_or(|l| key.created_at > l.created_at)
    }
}

impl Sampling {
    /// Takes in what `read`'s grants list now; returns the events: sessions
    /// that started or ended on them, and the sessions of grants the page
    /// covers but no longer holds (they ended, taking their sessions).
    fn update(
        &mut self,
        read: &Read<'_>,
        listed: Vec<(PageKey, Sampled, Vec<Session>)>,
        at: Timestamp,
    ) -> Vec<airlock_core::audit::AuditEvent> {
        let mut events = Vec::new();
        let ended: Vec<RequestId> = self
            .seen
            .iter()
            .filter(|(id, (key, grant, _))| {
                grant.entitlement == *read.entitlement && read.covers(key) && !read.ids.contains(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            if let Some((_, grant, before)) = self.seen.remove(&id) {
                events.extend(activity::changes(
                    &grant,
                    &before,
                    &[],
                    Some("the grant ended"),
                    at,
                ));
            }
        }
        for (key, grant, now) in listed {
            let empty = BTreeMap::new();
            let before = self.seen.get(&grant.request).map_or(&empty, |(_, _, b)| b);
            events.extend(activity::changes(&grant, before, &now, None, at));
            let id = grant.request.clone();
            self.seen.insert(
                id,
                (key, grant, now.into_iter().map(|s| (s.id, s)).collect()),
            );
        }
        events
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(created_at: i64, id: &str) -> PageKey {
        PageKey {
            created_at: Timestamp::from_unix_millis(created_at),
            id: RequestId::parse(id).unwrap(),
        }
    }

    fn grant(id: &str, entitlement: &str) -> Sampled {
        Sampled {
            request: RequestId::parse(id).unwrap(),
            entitlement: EntitlementId::parse(entitlement).unwrap(),
            requester: airlock_core::UserId::parse("alice").unwrap(),
            connector: "db".to_owned(),
        }
    }

    fn session(id: u64) -> Session {
        Session {
            id,
            login: "alice".to_owned(),
            client: None,
            statement: None,
            connected_at: None,
        }
    }

    fn actions(events: &[airlock_core::audit::AuditEvent]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e.action.as_str().to_owned(),
                    e.request
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_page_covers_the_grants_strictly_between_its_bounds() {
        let after = key(100, "r100");
        let bounded = Read {
            entitlement: &EntitlementId::parse("db").unwrap(),
            after: Some(&after),
            last: Some(key(50, "r50")),
            ids: HashSet::new(),
        };
        assert!(bounded.covers(&key(99, "r99")));
        assert!(bounded.covers(&key(51, "r51")));
        // Newer than where the page started, older than where it ended,
        // or at a boundary's millisecond: another round's.
        assert!(!bounded.covers(&key(101, "r101")));
        assert!(!bounded.covers(&key(49, "r49")));
        assert!(!bounded.covers(&key(100, "r100b")));
        assert!(!bounded.covers(&key(50, "r50b")));
        let whole = Read {
            after: None,
            last: None,
            ..bounded
        };
        assert!(whole.covers(&key(i64::MAX, "newest")));
        assert!(whole.covers(&key(0, "oldest")));
    }

    #[test]
    fn a_grant_missing_from_the_range_it_belonged_to_ended_and_others_wait() {
        let db = EntitlementId::parse("db").unwrap();
        let mut sampling = Sampling::default();
        let at = Timestamp::from_unix_millis(1_000);
        // First round: the newest two of three grants (the page was full).
        let first = Read {
            entitlement: &db,
            after: None,
            last: Some(key(20, "r20")),
            ids: HashSet::new(),
        };
        let events = sampling.update(
            &first,
            vec![
                (key(30, "r30"), grant("r30", "db"), vec![session(1)]),
                (key(20, "r20"), grant("r20", "db"), vec![session(2)]),
            ],
            at,
        );
        assert_eq!(
            actions(&events),
            vec![
                ("session_seen".to_owned(), "r20".to_owned()),
                ("session_seen".to_owned(), "r30".to_owned())
            ]
        );
        assert_eq!(sampling.seen.len(), 2);
        // Next round goes on after r20: r30 ended meanwhile, but that page
        // does not cover it, so it is not yet said to have ended.
        let after = key(20, "r20");
        let second = Read {
            entitlement: &db,
            after: Some(&after),
            last: None,
            ids: HashSet::new(),
        };
        let events = sampling.update(
            &second,
            vec![(key(10, "r10"), grant("r10", "db"), vec![])],
            at,
        );
        assert!(events.is_empty(), "{events:?}");
        // A round from the newest that no longer holds r30: its session went
        // with it; r20's session is unchanged, so nothing is said of it.
        let r20 = RequestId::parse("r20").unwrap();
        let r10 = RequestId::parse("r10").unwrap();
        let third = Read {
            entitlement: &db,
            after: None,
            last: None,
            ids: HashSet::from([&r20, &r10]),
        };
        let events = sampling.update(
            &third,
            vec![
                (key(20, "r20"), grant("r20", "db"), vec![session(2)]),
                (key(10, "r10"), grant("r10", "db"), vec![]),
            ],
            at,
        );
        assert_eq!(
            actions(&events),
            vec![("session_gone".to_owned(), "r30".to_owned())]
        );
        assert_eq!(events[0].details["why"], "the grant ended");
        // Grants of another entitlement are never ended by this one's pages.
        let other = Read {
            entitlement: &EntitlementId::parse("other").unwrap(),
            after: None,
            last: None,
            ids: HashSet::new(),
        };
        assert!(sampling.update(&other, vec![], at).is_empty());
    }
}
