//! Drift between what a target says is held and what Airlock granted, and
//! what to do about it. Reconciliation exists because a target can change
//! behind Airlock's back: a DBA grants a role by hand (a standing privilege),
//! someone removes a membership Airlock still counts on, or a revocation is
//! undone out of band.
//!
//! The shell lists the holders of each connector (as close to one instant as
//! it can), then reads the requests that could explain them, and hands both
//! to [`assess`], which compares them and decides a [`Fix`] for each
//! [`Finding`]. Findings and fixes become audit events through [`found`],
//! [`fixed`] and [`fix_failed`]. Nothing here talks to a target or reads a
//! clock: `listed_at` and `now` are passed in.
//!
//! The rule, per finding:
//!
//! - [`Finding::Unmanaged`] (a holder no Airlock grant explains) and
//!   [`Finding::UnknownRequest`] (a holder tagged with a request the store
//!   does not know): removed from the target only where the connector's
//!   entitlements say `drift = "revoke"` ([`unmanaged_policy`]); otherwise
//!   reported and left alone.
//! - [`Finding::Lingering`] (held for a request that ended, whose removal the
//!   target had confirmed): revoked again, always. The grant is over; no
//!   setting keeps it.
//! - [`Finding::Missing`] (an active grant the target lacks): granted again
//!   with the request's current claim, unless its expiry has passed (then
//!   the lifecycle is about to revoke it anyway and nothing is done).
//!
//! Timing: a holder list is a snapshot, and requests change while it is
//! taken. The shell reads the requests *after* listing the holders, so every
//! grant a listed holder could come from is visible; and a request counts as
//! lingering or missing only if it settled (revocation confirmed, or grant
//! confirmed) before `listed_at`, so a grant or revoke that raced the listing
//! is never mistaken for drift.

use std::collections::BTreeMap;

use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::{Catalog, User};
use crate::ids::RequestId;
use crate::request::{AccessRequest, JobAction, State};
use crate::time::Timestamp;

/// What to do about holders of an entitlement's connector that no Airlock
/// grant explains (`drift` in an entitlement's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriftPolicy {
    /// Record them (audited) and leave them alone.
    #[default]
    Report,
    /// Record them and, when reconciliation applies fixes, remove them.
    Revoke,
}

impl DriftPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftPolicy::Report => "report",
            DriftPolicy::Revoke => "revoke",
        }
    }

    pub fn parse(raw: &str) -> Option<DriftPolicy> {
        match raw {
            "report" => Some(DriftPolicy::Report),
            "revoke" => Some(DriftPolicy::Revoke),
            _ => None,
        }
    }
}

/// What to do with holders of `connector` that no grant explains. A holder
/// of a connector's access holds every entitlement provisioned through it,
/// so it is removed only when *every* such entitlement says `revoke` (and
/// at least one uses the connector).
pub fn unmanaged_policy(catalog: &Catalog, connector: &str) -> DriftPolicy {
    let mut using = catalog
        .entitlements
        .values()
        .filter(|e| e.connector == connector)
        .peekable();
    if using.peek().is_none() {
        return DriftPolicy::Report;
    }
    if using.all(|e| e.drift == DriftPolicy::Revoke) {
        DriftPolicy::Revoke
    } else {
        DriftPolicy::Report
    }
}

/// Someone the target says holds the connector's access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The identity in the target (a login, `user@host`, a certificate key id).
    pub principal: String,
    /// The Airlock request the target ties it to, when it records one.
    pub request_id: Option<RequestId>,
}

/// A request that may explain a holder, with the principal under which the
/// target lists its grant when the connector can say (`None`: only a
/// holder tagged with the request id matches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub request: AccessRequest,
    pub principal: Option<String>,
}

/// One connector's holders and the requests read after listing them.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub connector: &'a str,
    /// When the holders were asked for (before the call).
    pub listed_at: Timestamp,
    pub holders: &'a [Holder],
    /// Every request that may explain a holder: those that may hold access
    /// through the connector, those a holder names, and the latest ended
    /// request of each user an unexplained holder maps to.
    pub requests: &'a [Known],
    /// What to do with holders no grant explains (see [`unmanaged_policy`]).
    pub unmanaged: DriftPolicy,
}

/// A difference between the target and Airlock's grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A holder that names no request and matches no grant Airlock holds
    /// open: a standing privilege or an out-of-band grant.
    Unmanaged { principal: String },
    /// The target holds access for a request that ended and whose removal
    /// the target had confirmed.
    Lingering {
        request: AccessRequest,
        principal: String,
    },
    /// A holder tagged with a request id the store does not know.
    UnknownRequest {
        principal: String,
        request_id: RequestId,
    },
    /// Airlock has the grant active; the target does not list it.
    Missing {
        request: AccessRequest,
        /// Where the target would list it, if the connector can say.
        principal: Option<String>,
    },
}

impl Finding {
    /// Stable name, as audited and sent over the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Unmanaged { .. } => "unmanaged",
            Finding::Lingering { .. } => "lingering",
            Finding::UnknownRequest { .. } => "unknown_request",
            Finding::Missing { .. } => "missing",
        }
    }

    pub fn principal(&self) -> Option<&str> {
        match self {
            Finding::Unmanaged { principal }
            | Finding::Lingering { principal, .. }
            | Finding::UnknownRequest { principal, .. } => Some(principal),
            Finding::Missing { principal, .. } => principal.as_deref(),
        }
    }

    /// The request the finding is about, known to the store or not.
    pub fn request_id(&self) -> Option<&RequestId> {
        match self {
            Finding::Unmanaged { .. } => None,
            Finding::UnknownRequest { request_id, .. } => Some(request_id),
            Finding::Lingering { request, .. } | Finding::Missing { request, .. } => {
                Some(&request.id)
            }
        }
    }

    /// The stored request the finding is about.
    pub fn request(&self) -> Option<&AccessRequest> {
        match self {
            Finding::Lingering { request, .. } | Finding::Missing { request, .. } => Some(request),
            Finding::Unmanaged { .. } | Finding::UnknownRequest { .. } => None,
        }
    }
}

/// What reconciliation does about a finding when it applies fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Nothing: only reported.
    None { why: &'static str },
    /// Remove the holder from the target (`Connector::remove_holder`).
    RemoveHolder,
    /// Revoke the request's grant again.
    Revoke,
    /// Grant the request again, with its current claim.
    Grant,
}

impl Fix {
    pub fn as_str(self) -> &'static str {
        match self {
            Fix::None { .. } => "none",
            Fix::RemoveHolder => "remove_holder",
            Fix::Revoke => "revoke",
            Fix::Grant => "grant",
        }
    }
}

/// A finding on one connector, with the fix the rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub connector: String,
    pub finding: Finding,
    pub fix: Fix,
}

/// Whether the target may hold the request's grant now: it is active, a
/// grant attempt has started (and may have landed), or its revocation is
/// not confirmed yet.
fn may_hold(r: &AccessRequest) -> bool {
    r.state == State::Active
        || r.job.as_ref().is_some_and(|j| match j.action {
            JobAction::Revoke => true,
            JobAction::Grant => j.attempts > 0,
        })
}

/// When an ended request's removal was confirmed, if it ended with nothing
/// left to do and before `listed_at`.
fn settled_before(r: &AccessRequest, listed_at: Timestamp) -> Option<Timestamp> {
    if !r.state.is_terminal() || r.job.is_some() {
        return None;
    }
    let settled = r.deprovisioned_at.or(r.ended_at)?;
    (settled < listed_at).then_some(settled)
}

/// Why a listed holder holds the access, as far as Airlock's requests tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explanation<'a> {
    /// A request the lifecycle still owns: active, being granted, being
    /// revoked, or removed only after the listing (which may predate it).
    Open(&'a Known),
    /// Held for a request that ended and whose removal the target had
    /// confirmed before the listing: access came back since.
    Lingering(&'a Known),
    /// Tagged with a request id the store does not know.
    UnknownRequest(&'a RequestId),
    /// No request explains it: a standing privilege or an out-of-band grant.
    Unmanaged,
}

/// Explains holders against the requests read after listing them, indexed
/// once (by id and by principal) so a large target costs no more than its
/// holders and requests.
pub struct Explainer<'a> {
    listed_at: Timestamp,
    by_id: BTreeMap<&'a RequestId, &'a Known>,
    by_principal: BTreeMap<&'a str, Vec<&'a Known>>,
}

impl<'a> Explainer<'a> {
    pub fn new(requests: &'a [Known], listed_at: Timestamp) -> Explainer<'a> {
        let mut by_principal: BTreeMap<&str, Vec<&Known>> = BTreeMap::new();
        for known in requests {
            if let Some(p) = known.principal.as_deref() {
                by_principal.entry(p).or_default().push(known);
            }
        }
        Explainer {
            listed_at,
            by_id: requests.iter().map(|k| (&k.request.id, k)).collect(),
            by_principal,
        }
    }

    pub fn explain(&self, holder: &'a Holder) -> Explanation<'a> {
        let listed_at = self.listed_at;
        if let Some(id) = &holder.request_id {
            return match self.by_id.get(id) {
                None => Explanation::UnknownRequest(id),
                // Pending, scheduled, being granted or being revoked: the
                // lifecycle owns it. Ended after the listing: the listing
                // may predate the removal.
                Some(known) if settled_before(&known.request, listed_at).is_none() => {
                    Explanation::Open(known)
                }
                Some(known) => Explanation::Lingering(known),
            };
        }
        let same = self
            .by_principal
            .get(holder.principal.as_str())
            .map_or(&[][..], Vec::as_slice);
        // Granted or being granted, being revoked, or removed only after
        // the listing (which may predate the removal).
        if let Some(open) = same.iter().find(|k| {
            may_hold(&k.request) || k.request.deprovisioned_at.is_some_and(|d| d >= listed_at)
        }) {
            return Explanation::Open(open);
        }
        // The newest grant of this principal whose removal was confirmed
        // before the listing: access came back since.
        same.iter()
            .filter(|k| k.request.deprovisioned_at.is_some())
            .filter_map(|k| settled_before(&k.request, listed_at).map(|t| (t, *k)))
            .max_by_key(|(t, _)| *t)
            .map_or(Explanation::Unmanaged, |(_, k)| Explanation::Lingering(k))
    }
}

/// Compares one connector's holders with Airlock's requests (see the module
/// docs for the rule). Holders come first, in the order given, then
/// missing grants in the order of `requests`.
pub fn assess(observation: &Observation<'_>, now: Timestamp) -> Vec<Drift> {
    let Observation {
        connector,
        listed_at,
        holders,
        requests,
        unmanaged,
    } = *observation;
    let unmanaged_fix = match unmanaged {
        DriftPolicy::Revoke => Fix::RemoveHolder,
        DriftPolicy::Report => Fix::None {
            why: "the entitlement's drift setting is `report`",
        },
    };
    let drift = |finding: Finding, fix: Fix| Drift {
        connector: connector.to_owned(),
        finding,
        fix,
    };

    let explainer = Explainer::new(requests, listed_at);
    let mut out = Vec::new();
    for holder in holders {
        let principal = holder.principal.clone();
        match explainer.explain(holder) {
            Explanation::Open(_) => {}
            Explanation::UnknownRequest(id) => out.push(drift(
                Finding::UnknownRequest {
                    principal,
                    request_id: id.clone(),
                },
                unmanaged_fix,
            )),
            Explanation::Lingering(known) => out.push(drift(
                Finding::Lingering {
                    request: known.request.clone(),
                    principal,
                },
                Fix::Revoke,
            )),
            Explanation::Unmanaged => {
                out.push(drift(Finding::Unmanaged { principal }, unmanaged_fix))
            }
        }
    }

    for known in requests {
        let r = &known.request;
        // Only a grant confirmed before the listing must be in it.
        let confirmed = r.state == State::Active
            && r.job.is_none()
            && r.granted_at.is_some_and(|g| g < listed_at);
        if !confirmed {
            continue;
        }
        let held = holders.iter().any(|h| {
            h.request_id.as_ref() == Some(&r.id)
                || known.principal.as_deref() == Some(h.principal.as_str())
        });
        if held {
            continue;
        }
        let fix = if r.expires_at.is_some_and(|e| e > now) {
            Fix::Grant
        } else {
            Fix::None {
                why: "the grant has expired; its revocation is due",
            }
        };
        out.push(drift(
            Finding::Missing {
                request: r.clone(),
                principal: known.principal.clone(),
            },
            fix,
        ));
    }
    out
}

fn actor_of(by: Option<&User>) -> Actor {
    by.map_or(Actor::System, Actor::of)
}

/// The event every finding starts with; `details` adds to the common ones
/// (connector, kind, principal, request, fix).
fn event(
    drift: &Drift,
    action: AuditAction,
    by: Option<&User>,
    now: Timestamp,
    extra: impl IntoIterator<Item = (&'static str, String)>,
) -> AuditEvent {
    let finding = &drift.finding;
    let mut details = BTreeMap::from([
        ("connector".to_owned(), drift.connector.clone()),
        ("kind".to_owned(), finding.kind().to_owned()),
        ("fix".to_owned(), drift.fix.as_str().to_owned()),
    ]);
    if let Some(p) = finding.principal() {
        details.insert("principal".to_owned(), p.to_owned());
    }
    if let Some(id) = finding.request_id() {
        details.insert("request".to_owned(), id.to_string());
    }
    if let Fix::None { why } = drift.fix {
        details.insert("why".to_owned(), why.to_owned());
    }
    details.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
    let request = finding.request();
    AuditEvent {
        at: now,
        actor: actor_of(by),
        action,
        request: request.map(|r| r.id.clone()),
        entitlement: request.map(|r| r.entitlement.clone()),
        subject: request.map(|r| r.requester.clone()),
        details,
    }
}

/// Records a finding, whether or not it is then fixed. `fixing` says
/// whether this run applies fixes.
pub fn found(drift: &Drift, fixing: bool, by: Option<&User>, now: Timestamp) -> AuditEvent {
    event(
        drift,
        AuditAction::DriftFound,
        by,
        now,
        [("fixing", fixing.to_string())],
    )
}

/// Records a fix the target confirmed; `note` says anything it did besides.
pub fn fixed(drift: &Drift, note: Option<&str>, by: Option<&User>, now: Timestamp) -> AuditEvent {
    event(
        drift,
        AuditAction::DriftFixed,
        by,
        now,
        note.map(|n| ("note", n.to_owned())),
    )
}

/// Records a fix that failed (or was not attempted because the request
/// changed meanwhile); the next reconciliation finds the drift again.
pub fn fix_failed(
    drift: &Drift,
    error: &str,
    retryable: bool,
    by: Option<&User>,
    now: Timestamp,
) -> AuditEvent {
    event(
        drift,
        AuditAction::DriftFixFailed,
        by,
        now,
        [
            ("error", error.to_owned()),
            ("retryable", retryable.to_string()),
        ],
    )
}
