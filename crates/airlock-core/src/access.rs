//! Who may see and do what. Every "may this person see or do this" rule of
//! Airlock is decided here, once: the HTTP handlers ask before they act, the
//! request state machine asks before it changes a request, and the store's
//! request lists mirror [`may_see`] in SQL (checked against it by a test).
//!
//! What the policy set decides (who may request an entitlement, who may
//! approve it, under which circumstances) is not here: that is Cedar's, and
//! reaches the core as verdicts (`approval`). These are the fixed rules
//! around it: roles, ownership, the line between a person and their own
//! request, the scopes of the API token a caller uses (a token only ever
//! takes rights away from its owner, whose roles and groups are read at
//! use), what a service principal may never do (approve), and what the
//! sponsor of an external principal may do about their requests (see,
//! approve or deny in the seat only they fill, revoke).

use crate::catalog::{Role, User};
use std::collections::BTreeSet;

use crate::ids::{GroupName, UserId};
use crate::request::{AccessRequest, Rejection};
use crate::token::Scope;

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
    /// Read the requests one may see, grants and entitlements (anyone).
    Read,
    /// Ask for an entitlement (anyone; the policy set decides the rest).
    Request,
    /// Create, list and revoke API tokens (people; a service's tokens are
    /// managed by its owners: [`may_manage_tokens_of`]).
    ManageTokens,
    /// Ask whether someone else holds an entitlement now (admins, auditors
    /// and checkers; anyone may ask about themselves: [`may_check`]).
    CheckOthers,
    /// Start an access-review campaign on demand (admins; reviewers decide
    /// its items: [`may_review_item`]).
    StartAccessReviews,
    /// Post activity seen on a target (sshd's log lines) to a grant's
    /// timeline (admins and reporters).
    ReportActivity,
}

impl Capability {
    fn describe(self) -> &'static str {
        match self {
            Capability::ReadEverything => "read every request and the audit log",
            Capability::ChangePolicies => "change policies",
            Capability::ApprovePolicyChanges => "approve policy changes",
            Capability::Reconcile => "reconcile",
            Capability::Read => "read",
            Capability::Request => "request access",
            Capability::ManageTokens => "manage API tokens",
            Capability::CheckOthers => "check whether others hold an entitlement",
            Capability::StartAccessReviews => "start access reviews",
            Capability::ReportActivity => "report activity on grants",
        }
    }

    /// The roles that hold it; empty: everyone.
    fn roles(self) -> &'static [Role] {
        match self {
            Capability::ReadEverything => &[Role::Admin, Role::Auditor],
            Capability::CheckOthers => &[Role::Admin, Role::Auditor, Role::Checker],
            Capability::ReportActivity => &[Role::Admin, Role::Reporter],
            Capability::ChangePolicies
            | Capability::ApprovePolicyChanges
            | Capability::Reconcile
            | Capability::StartAccessReviews => &[Role::Admin],
            Capability::Read | Capability::Request | Capability::ManageTokens => &[],
        }
    }

    /// The scope an API token needs for it.
    fn scope(self) -> Scope {
        match self {
            Capability::ReadEverything | Capability::Read | Capability::CheckOthers => Scope::Read,
            Capability::ChangePolicies
            | Capability::ApprovePolicyChanges
            | Capability::Reconcile
            | Capability::StartAccessReviews => Scope::Admin,
            Capability::Request => Scope::Request,
            Capability::ManageTokens => Scope::Tokens,
            Capability::ReportActivity => Scope::Report,
        }
    }
}

impl RequestAction {
    /// The scope an API token needs for it.
    fn scope(self) -> Scope {
        match self {
            RequestAction::See => Scope::Read,
            RequestAction::Decide | RequestAction::Review => Scope::Approve,
            RequestAction::Withdraw
            | RequestAction::CollectCredential
            | RequestAction::Extend
            | RequestAction::ProveElevation => Scope::Request,
            RequestAction::Revoke => Scope::Admin,
        }
    }
}

/// Refuses when `user` acts through an API token without `scope`. Without
/// a token (a config token, the identity provider's) nothing is narrowed.
fn scoped(user: &User, scope: Scope, what: &str) -> Result<(), Rejection> {
    match &user.token {
        Some(t) if !t.scopes.allows(scope) => Err(Rejection::Forbidden(format!(
            "the API token `{}` lacks the `{}` scope needed to {what} (it has {})",
            t.id,
            scope.as_str(),
            t.scopes
        ))),
        _ => Ok(()),
    }
}

/// Service principals are automation: they request, they never approve.
fn not_a_service(user: &User, what: &str) -> Result<(), Rejection> {
    if user.is_service() {
        return Err(Rejection::Forbidden(format!(
            "`{}` is a service principal and may not {what}",
            user.id
        )));
    }
    Ok(())
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
    /// Ask for more time on one's own active grant (the policy set decides
    /// whether it is granted at once or needs approval, in `request`).
    Extend,
    /// End someone's grant.
    Revoke,
    /// Judge a break-glass use afterwards (the review's groups decide the
    /// rest, in `request`).
    Review,
    /// Obtain a signed proof that one holds the grant (an elevation claim).
    ProveElevation,
}

/// Whether `user` may see `request`: its requester, the members of any of
/// its approver groups or (for a break-glass use) review groups, the
/// sponsor of an external requester, admins and auditors.
pub fn may_see(user: &User, request: &AccessRequest) -> bool {
    user.id == request.requester
        || may(user, Capability::ReadEverything).is_ok()
        || user.in_any(&request.approver_groups())
        || request
            .review
            .as_ref()
            .is_some_and(|r| user.in_any(&r.groups()))
        || request.sponsor() == Some(&user.id)
}

/// Whether `user` is the sponsor of `request`'s external requester: they
/// fill the seat only they may fill (and no tier's), may deny it, and may
/// revoke its grant. A person, never the requester themselves.
pub fn sponsors(user: &User, request: &AccessRequest) -> bool {
    request.sponsor() == Some(&user.id)
        && !user.is_service()
        && !decides_own_request(&user.id, &request.requester)
}

/// The line between a person and their own request: nobody approves or
/// denies a request they made, whatever the policies say. The policy set's
/// own answers (`who-can`, policy tests) draw it with this too.
pub fn decides_own_request(decider: &UserId, requester: &UserId) -> bool {
    decider == requester
}

/// Whether `user` holds `capability` (and, through a token, its scope).
pub fn may(user: &User, capability: Capability) -> Result<(), Rejection> {
    if matches!(
        capability,
        Capability::ApprovePolicyChanges | Capability::ManageTokens
    ) {
        not_a_service(user, capability.describe())?;
    }
    scoped(user, capability.scope(), capability.describe())?;
    let roles = capability.roles();
    if roles.is_empty() || roles.iter().any(|r| user.has_role(*r)) {
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

/// Whether `user` may ask whether `principal` holds an entitlement now:
/// anyone about themselves, admins, auditors and checkers about anyone
/// (through a token, one with the `read` scope).
pub fn may_check(user: &User, principal: &UserId) -> Result<(), Rejection> {
    if &user.id == principal {
        return may(user, Capability::Read);
    }
    may(user, Capability::CheckOthers)
}

/// Whether `user` may do `action` to `request`, as far as who they are goes
/// (the request's state is the state machine's to judge).
pub fn may_act(
    user: &User,
    request: &AccessRequest,
    action: RequestAction,
) -> Result<(), Rejection> {
    let own = user.id == request.requester;
    if action == RequestAction::Decide {
        not_a_service(user, "approve or deny requests")?;
    }
    if action == RequestAction::Review {
        not_a_service(user, "review break-glass uses")?;
    }
    // A sponsor ends their external's grant as an approver would decide
    // it, not as an admin.
    let scope = if action == RequestAction::Revoke
        && !user.has_role(Role::Admin)
        && sponsors(user, request)
    {
        Scope::Approve
    } else {
        action.scope()
    };
    scoped(
        user,
        scope,
        &format!("{} `{}`", action.describe(), request.id),
    )?;
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
        RequestAction::Review if decides_own_request(&user.id, &request.requester) => {
            Err(Rejection::Forbidden(format!(
                "`{}` may not review their own break-glass use",
                user.id
            )))
        }
        RequestAction::Review => Ok(()),
        RequestAction::Withdraw
        | RequestAction::CollectCredential
        | RequestAction::Extend
        | RequestAction::ProveElevation
            if own =>
        {
            Ok(())
        }
        RequestAction::Withdraw
        | RequestAction::CollectCredential
        | RequestAction::Extend
        | RequestAction::ProveElevation => {
            let hint = if user.has_role(Role::Admin) && action == RequestAction::Withdraw {
                "; an admin ends someone else's grant with `revoke` and a reason"
            } else {
                ""
            };
            Err(Rejection::Forbidden(format!(
                "only the requester `{}` may {} `{}`{hint}",
                request.requester,
                action.describe(),
                request.id
            )))
        }
        RequestAction::Revoke if user.has_role(Role::Admin) || sponsors(user, request) => Ok(()),
        RequestAction::Revoke => Err(Rejection::Forbidden(format!(
            "`{}` is neither an admin nor the sponsor of `{}` and may not revoke",
            user.id, request.requester
        ))),
    }
}

impl RequestAction {
    fn describe(self) -> &'static str {
        match self {
            RequestAction::See => "see",
            RequestAction::Decide => "approve or deny",
            RequestAction::Withdraw => "withdraw or release",
            RequestAction::CollectCredential => "collect the credential of",
            RequestAction::Extend => "extend",
            RequestAction::Revoke => "revoke",
            RequestAction::Review => "review",
            RequestAction::ProveElevation => "obtain a proof of the grant of",
        }
    }
}

/// Whether `user` may see or revoke the API tokens of `owner`: their own,
/// a service's they are one of the owners of (`service_owners`; empty when
/// `owner` is a person), or anyone's as an admin (through a token, one with
/// the `admin` scope too). Through a token, only with the `tokens` scope.
pub fn may_manage_tokens_of(
    user: &User,
    owner: &UserId,
    service_owners: &[UserId],
) -> Result<(), Rejection> {
    may(user, Capability::ManageTokens)?;
    if &user.id == owner || service_owners.contains(&user.id) {
        return Ok(());
    }
    if user.has_role(Role::Admin) {
        return scoped(user, Scope::Admin, "manage someone else's API tokens");
    }
    Err(Rejection::Forbidden(format!(
        "`{}` may not manage the API tokens of `{owner}` (only they, the owners of a service, or an admin)",
        user.id
    )))
}

/// Whether `user` may create an API token acting as `owner`: for themselves,
/// or for a service principal they own or (as an admin) any service. Nobody
/// creates a token that acts as another person, admins included.
pub fn may_create_token_for(
    user: &User,
    owner: &User,
    service_owners: &[UserId],
) -> Result<(), Rejection> {
    if owner.id != user.id && !owner.is_service() {
        may(user, Capability::ManageTokens)?;
        return Err(Rejection::Forbidden(format!(
            "`{}` may not create a token acting as `{}`: nobody creates tokens for another person",
            user.id, owner.id
        )));
    }
    may_manage_tokens_of(user, &owner.id, service_owners)
}

/// Where a would-be reviewer stands towards one item of an access review.
#[derive(Debug, Clone, Copy)]
pub struct ReviewerStanding<'a> {
    /// The groups whose members may decide the campaign's items now.
    pub groups: &'a BTreeSet<GroupName>,
    /// The Airlock user whose access the item is about, when known.
    pub about: Option<&'a UserId>,
}

/// Whether `user` may confirm or remove an item of an access review: a
/// person in the campaign's reviewer groups (through a token, one with the
/// `approve` scope), never about their own access, whatever their roles.
pub fn may_review_item(user: &User, standing: &ReviewerStanding<'_>) -> Result<(), Rejection> {
    not_a_service(user, "review access")?;
    scoped(user, Scope::Approve, "review access")?;
    if standing.about == Some(&user.id) {
        return Err(Rejection::Forbidden(format!(
            "`{}` may not review their own access",
            user.id
        )));
    }
    if !user.in_any(standing.groups) {
        return Err(Rejection::Forbidden(format!(
            "`{}` is not in the campaign's reviewer groups ({})",
            user.id,
            standing
                .groups
                .iter()
                .map(GroupName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Whether `user` may see an access-review campaign and its items: admins
/// and auditors, and members of its reviewer groups `groups`.
pub fn may_see_campaign(user: &User, groups: &BTreeSet<GroupName>) -> Result<(), Rejection> {
    if may(user, Capability::ReadEverything).is_ok() {
        return Ok(());
    }
    scoped(user, Scope::Read, "read access reviews")?;
    if user.in_any(groups) {
        return Ok(());
    }
    Err(Rejection::Forbidden(format!(
        "`{}` may not see this access review (admins, auditors and its reviewers may)",
        user.id
    )))
}
