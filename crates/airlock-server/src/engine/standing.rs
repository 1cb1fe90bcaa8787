//! The standing-privilege report (`airlock report standing`,
//! `GET /v1/reports/standing`): every holder each connector can list, as the
//! core assesses it ([`airlock_core::standing`]), with the approval process
//! that would apply to the holder under the policies in force. It gathers
//! holders and requests exactly as reconciliation does, changes nothing and
//! records nothing: reconciliation is what audits and fixes drift.

use std::sync::Arc;

use airlock_core::catalog::User;
use airlock_core::standing::{self, HolderKind, Listing, Risk, Sensitivity};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use tracing::warn;

use super::reconcile::{as_held, bounded};
use super::{Engine, EngineError};
use crate::policy;

/// Every connector's holders, assessed.
#[derive(Debug, Clone)]
pub struct StandingReport {
    pub at: Timestamp,
    /// By connector name.
    pub connectors: Vec<ConnectorListing>,
}

#[derive(Debug, Clone)]
pub struct ConnectorListing {
    pub connector: String,
    pub outcome: ListingOutcome,
}

#[derive(Debug, Clone)]
pub enum ListingOutcome {
    /// The connector cannot list holders.
    Skipped,
    /// Listing failed (the target is down, say), or there were more open
    /// grants than can be read at once.
    Failed(String),
    Listed(Vec<HolderRow>),
}

/// One holder of one connector's access.
#[derive(Debug, Clone)]
pub struct HolderRow {
    pub principal: String,
    /// `granted`, `standing`, `lingering` or `unknown_request`.
    pub status: &'static str,
    /// The request that explains it (or that it names, for `unknown_request`).
    pub request: Option<RequestId>,
    pub user: Option<UserId>,
    pub kind: HolderKind,
    pub entitlements: Vec<EntitlementId>,
    /// When Airlock's grant was confirmed; for standing access, the targets
    /// Airlock connects to do not say, and this is `None`.
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Per entitlement: how the holder would get it through Airlock under
    /// the policies in force (`auto`, the approval tiers, or why not).
    pub approval: Vec<(EntitlementId, String)>,
    pub sensitivity: Sensitivity,
    pub risk: Risk,
}

impl Engine {
    /// Lists and assesses every connector's holders, connectors at once;
    /// one that cannot be reached is reported and the others go on.
    pub async fn standing_report(self: &Arc<Self>) -> Result<StandingReport, EngineError> {
        let at = self.clock.now();
        let mut runs = tokio::task::JoinSet::new();
        for name in self.connectors.keys() {
            let engine = Arc::clone(self);
            let name = name.clone();
            runs.spawn(async move {
                let outcome = engine.list_connector(&name).await;
                (name, outcome)
            });
        }
        let mut connectors = Vec::new();
        while let Some(joined) = runs.join_next().await {
            match joined {
                Ok((connector, outcome)) => connectors.push(ConnectorListing {
                    connector,
                    outcome: outcome?,
                }),
                Err(e) => warn!(error = %e, "a standing-report task failed"),
            }
        }
        for name in self.connectors.keys() {
            if !connectors.iter().any(|c| &c.connector == name) {
                connectors.push(ConnectorListing {
                    connector: name.clone(),
                    outcome: ListingOutcome::Failed(
                        "listing this connector stopped unexpectedly; see the server log"
                            .to_owned(),
                    ),
                });
            }
        }
        connectors.sort_by(|a, b| a.connector.cmp(&b.connector));
        Ok(StandingReport { at, connectors })
    }

    async fn list_connector(&self, name: &str) -> Result<ListingOutcome, EngineError> {
        let Some(connector) = self.connectors.get(name) else {
            return Ok(ListingOutcome::Skipped);
        };
        let connector = connector.as_ref();
        // Holders first, requests after, as reconciliation does.
        let listed_at = self.clock.now();
        let holders = match bounded(connector, "listing holders", connector.holders()).await {
            Ok(Some(holders)) => holders,
            Ok(None) => return Ok(ListingOutcome::Skipped),
            Err(e) => return Ok(ListingOutcome::Failed(e.to_string())),
        };
        let requests = match self.explaining_requests(name, connector, &holders).await? {
            Ok(requests) => requests,
            Err(why) => return Ok(ListingOutcome::Failed(why)),
        };
        let held = as_held(&holders);
        let principals: Vec<(String, UserId)> = self
            .catalog
            .users
            .keys()
            .filter_map(|u| connector.principal_for(u, None).map(|p| (p, u.clone())))
            .collect();
        let listing = Listing {
            connector: name,
            listed_at,
            holders: &held,
            requests: &requests,
            principals: &principals,
        };
        let policies = self.policies();
        let set = policies.current();
        let rows = standing::assess(&listing, &self.catalog)
            .into_iter()
            .map(|h| {
                let request = h.status.request();
                let approval = h
                    .entitlements
                    .iter()
                    .map(|e| {
                        let how = match h.user.map(|id| (id, self.catalog.user(id))) {
                            None => "none: no Airlock user holds this principal".to_owned(),
                            Some((_, Some(user))) => approval_for(&set, policies, user, e),
                            Some((id, None)) => format!(
                                "as the policies decide for `{id}`'s groups at the identity provider"
                            ),
                        };
                        (e.id.clone(), how)
                    })
                    .collect();
                HolderRow {
                    principal: h.principal.to_owned(),
                    status: h.status.as_str(),
                    request: match &h.status {
                        standing::Status::UnknownRequest(id) => Some((*id).clone()),
                        _ => request.map(|r| r.id.clone()),
                    },
                    user: h.user.cloned(),
                    kind: h.kind,
                    entitlements: h.entitlements.iter().map(|e| e.id.clone()).collect(),
                    since: request.and_then(|r| r.granted_at),
                    until: request.and_then(|r| r.expires_at),
                    approval,
                    sensitivity: h.sensitivity,
                    risk: h.risk,
                }
            })
            .collect();
        Ok(ListingOutcome::Listed(rows))
    }
}

/// How `user` would get `entitlement` in an ordinary request, or that the
/// policies would not let them.
fn approval_for(
    set: &airlock_policy::PolicySet,
    policies: &policy::Policies,
    user: &User,
    entitlement: &airlock_core::catalog::Entitlement,
) -> String {
    match policies.typical_ask(set, user, entitlement) {
        Some(ask) => ask.approval(),
        None => "not requestable: the policies deny this holder".to_owned(),
    }
}
