//! Who may see and do what. Every "may this person see or do this" rule of
//! Airlock is decided here, once: the HTTP handlers ask before they act, the
//! request state machine asks before it changes a request, and the store's
//! request lists mirror [`may_see`] in SQL (checked against it by a test).
//!
//! What the policy set decides (who may request an entitlement, who may
//! approve it, under which circumstances) is not here: that is Cedar's, and
//! reaches the core as verdicts (`approval`). These are the fixed rules
//! around it: roles, ownership, and the line between a person and their own
//! request.

use crate::catalog::{Role, User};
use crate::request::{AccessRequest, Rejection};
use crate::UserId;

/// What someone may do that concerns no single request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Every request and grant, the audit log, its verification, the policy
    /// set in force and the proposals (admins and auditors).
    ReadEverything,
    /// Reload the policy set or propose a new one (admins).
    ChangePolicies,
    /// Approve a proposed policy set (admins; `policy_change` adds who of
    /// them).
    ApprovePolicyChanges,
    /// Compare targets with the grants and fix them (admins).
    Reconcile,
}

impl Capability {
    fn describe(self) -> &'static str {
        match self {
            Capability::ReadEverything => "read every request and the audit log",
            Capability::ChangePolicies => "change policies",
            Capability::ApprovePolicyChanges => "approve policy changes",
            Capability::Reconcile => "reconcile",
        }
    }

    fn roles(self) -> &'static [Role] {
        match self {
            Capability::ReadEverything => &[Role::Admin, Role::Auditor],
            Capability::ChangePolicies
            | Capability::ApprovePolicyChanges
            | Capability::Reconcile => &[Role::Admin],
        }
    }
}

/// What someone may do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAction {
    /// Read it, its explanation, its history.
    See,
    /// Approve or deny (the policy set and the request's tiers decide the
    /// rest, in `request`).
    Decide,
    /// Withdraw it before it starts, or end one's own grant early.
    Withdraw,
    /// Collect the one-time credential a grant created.
    CollectCredential,
    /// End someone's grant.
    Revoke,
}

/// Whether `user` may see `request`: its requester, the members of any of
/// its approver groups, admins and auditors.
pub fn may_see(user: &User, request: &AccessRequest) -> bool {
    user.id == request.requester
        || may(user, Capability::ReadEverything).is_ok()
        || user.in_any(&request.approver_groups())
}

/// The line between a person and their own request: nobody approves or
/// denies a request they made, whatever the policies say. The policy set's
/// own answers (`who-can`, policy tests) draw it with this too.
pub fn decides_own_request(decider: &UserId, requester: &UserId) -> bool {
    decider == requester
}

/// Whether `user` holds `capability`.
pub fn may(user: &User, capability: Capability) -> Result<(), Rejection> {
    let roles = capability.roles();
    if roles.iter().any(|r| user.has_role(*r)) {
        return Ok(());
    }
    let needs = roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ");
    Err(Rejection::Forbidden(format!(
        "`{}` may not {} (needs {needs})",
        user.id,
        capability.describe()
    )))
}

/// Whether `user` may do `action` to `request`, as far as who they are goes
/// (the request's state is the state machine's to judge).
pub fn may_act(
    user: &User,
    request: &AccessRequest,
    action: RequestAction,
) -> Result<(), Rejection> {
    let own = user.id == request.requester;
    match action {
        RequestAction::See if may_see(user, request) => Ok(()),
        RequestAction::See => Err(Rejection::Forbidden(format!(
            "`{}` may not see `{}`",
            user.id, request.id
        ))),
        RequestAction::Decide if decides_own_request(&user.id, &request.requester) => Err(
            Rejection::Forbidden(format!("`{}` may not decide their own request", user.id)),
        ),
        RequestAction::Decide => Ok(()),
        RequestAction::Withdraw | RequestAction::CollectCredential if own => Ok(()),
        RequestAction::Withdraw | RequestAction::CollectCredential => {
            let hint = if user.has_role(Role::Admin) && action == RequestAction::Withdraw {
                "; an admin ends someone else's grant with `revoke` and a reason"
            } else {
                ""
            };
            Err(Rejection::Forbidden(format!(
                "only the requester `{}` may {} `{}`{hint}",
                request.requester,
                if action == RequestAction::Withdraw {
                    "withdraw or release"
                } else {
                    "collect the credential of"
                },
                request.id
            )))
        }
        RequestAction::Revoke if user.has_role(Role::Admin) => Ok(()),
        RequestAction::Revoke => Err(Rejection::Forbidden(format!(
            "`{}` is not an admin and may not revoke",
            user.id
        ))),
    }
}
