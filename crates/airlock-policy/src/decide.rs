//! Decisions: may this person ask for this entitlement (or extend their
//! grant of it), is it granted at once, and whose approval does it need
//! otherwise; and may this person approve that request.
//!
//! Every decision carries the ids of the policies that made it and any
//! evaluation errors, for the audit record. Errors fail closed: an erroring
//! policy never permits, an erroring `forbid` counts as forbidding, and an
//! erroring `require_approval` permit denies the request, because its tier
//! (perhaps the one that adds security) cannot be silently dropped.

use std::collections::{HashMap, HashSet};
use std::fmt;

use airlock_core::catalog::WaitingTimes;
use airlock_core::GroupName;
use cedar_policy as cedar;

use crate::facts::{EntitlementFacts, ExtensionFacts, RequestContext, RequestFacts, UserFacts};
use crate::policy_set::{Action, PolicyMeta, PolicySet};

/// One group of approvals a request needs: the lifecycle's own type, so a
/// decision's tiers reach the request as they are. Whether one person's
/// approval may count toward two tiers is for the lifecycle to decide (it
/// may not); tiers only say what is needed.
pub use airlock_core::approval::ApprovalTier as Tier;

/// A policy that failed to evaluate (e.g. arithmetic overflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    pub policy: String,
    pub action: Action,
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy `{}` failed while deciding `{}`: {}",
            self.policy, self.action, self.message
        )
    }
}

/// Why something was denied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DenyReason {
    /// A `forbid` policy matched.
    Forbidden { policy: String },
    /// A `forbid` policy failed to evaluate; it counts as matching.
    ForbidErrored { policy: String },
    /// No `permit` policy matched.
    NoPolicyPermits,
    /// The request is permitted but neither auto-approved nor routed to approvers.
    NoApprovalRoute,
    /// A `require_approval` permit failed to evaluate, so the route is unknown.
    ApprovalRouteErrored { policy: String },
    /// Nobody approves their own request, whatever the policies say.
    SelfApproval,
    /// The facts could not be turned into Cedar values (should not happen).
    InvalidFacts { message: String },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::Forbidden { policy } => write!(f, "forbidden by `{policy}`"),
            DenyReason::ForbidErrored { policy } => write!(
                f,
                "forbid policy `{policy}` failed to evaluate and counts as forbidding"
            ),
            DenyReason::NoPolicyPermits => f.write_str("no policy permits"),
            DenyReason::NoApprovalRoute => f.write_str("no approval route"),
            DenyReason::ApprovalRouteErrored { policy } => write!(
                f,
                "approval policy `{policy}` failed to evaluate, so the approval route is unknown"
            ),
            DenyReason::SelfApproval => {
                f.write_str("the requester can never approve their own request")
            }
            DenyReason::InvalidFacts { message } => write!(f, "invalid facts: {message}"),
        }
    }
}

/// The answer to "what happens to this request?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Denied {
        reasons: Vec<DenyReason>,
        errors: Vec<EvalError>,
    },
    /// Granted without approval. `policies`: the `request` permits, then the
    /// `auto_approve` permits that matched.
    AutoApproved {
        policies: Vec<String>,
        errors: Vec<EvalError>,
    },
    /// Pending until every tier is met. `policies`: the `request` permits,
    /// then the `require_approval` permits that matched (one per tier).
    NeedsApprovals {
        tiers: Vec<Tier>,
        /// The acceptable waiting times the matched permits set with
        /// `@remind_after`, `@escalate_after`/`@escalate_to` and
        /// `@pending_timeout` (the soonest of each); unset: the entitlement's.
        waiting: WaitingTimes,
        policies: Vec<String>,
        errors: Vec<EvalError>,
    },
    /// An emergency ask the policies let the person make: it waits for
    /// nobody (approval routes do not apply; the entitlement's break-glass
    /// review afterwards takes their place). `policies`: the `request`
    /// permits.
    BreakGlass {
        policies: Vec<String>,
        errors: Vec<EvalError>,
    },
}

impl Decision {
    pub fn errors(&self) -> &[EvalError] {
        match self {
            Decision::Denied { errors, .. }
            | Decision::AutoApproved { errors, .. }
            | Decision::NeedsApprovals { errors, .. }
            | Decision::BreakGlass { errors, .. } => errors,
        }
    }

    /// The policies that made the decision: the permits for an approval or
    /// route, the forbids for a denial (empty if nothing permitted).
    pub fn policies(&self) -> Vec<&str> {
        match self {
            Decision::Denied { reasons, .. } => reasons
                .iter()
                .filter_map(|r| match r {
                    DenyReason::Forbidden { policy }
                    | DenyReason::ForbidErrored { policy }
                    | DenyReason::ApprovalRouteErrored { policy } => Some(policy.as_str()),
                    _ => None,
                })
                .collect(),
            Decision::AutoApproved { policies, .. }
            | Decision::NeedsApprovals { policies, .. }
            | Decision::BreakGlass { policies, .. } => {
                policies.iter().map(String::as_str).collect()
            }
        }
    }

    /// `denied`, `auto_approved`, `needs_approvals` or `break_glass`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Denied { .. } => "denied",
            Decision::AutoApproved { .. } => "auto_approved",
            Decision::NeedsApprovals { .. } => "needs_approvals",
            Decision::BreakGlass { .. } => "break_glass",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Denied { reasons, .. } => {
                let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                write!(f, "denied: {}", reasons.join("; "))
            }
            Decision::AutoApproved { policies, .. } => {
                write!(f, "auto-approved by {}", policies.join(", "))
            }
            Decision::NeedsApprovals { tiers, .. } => {
                let tiers: Vec<String> = tiers.iter().map(ToString::to_string).collect();
                write!(f, "needs approvals: {}", tiers.join(" and "))
            }
            Decision::BreakGlass { policies, .. } => {
                write!(f, "break-glass, permitted by {}", policies.join(", "))
            }
        }
    }
}

/// The answer to "may this person approve that request?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApproveDecision {
    Allowed {
        policies: Vec<String>,
        errors: Vec<EvalError>,
    },
    Denied {
        reasons: Vec<DenyReason>,
        errors: Vec<EvalError>,
    },
}

impl ApproveDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, ApproveDecision::Allowed { .. })
    }
}

/// Which policies Cedar is handed: the pre-selected ones, or (to check
/// that pre-selection changes nothing) all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    Sliced,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the reference for pre-selection, used by tests")
    )]
    Everything,
}

/// What Cedar said about one action, after the fail-closed rules.
struct Outcome {
    allowed: bool,
    /// Permits when allowed, forbids when not (sorted).
    satisfied: Vec<String>,
    errored_forbids: Vec<String>,
    errored_permits: Vec<String>,
}

impl Outcome {
    fn deny_reasons(&self, otherwise: DenyReason) -> Vec<DenyReason> {
        let mut reasons: Vec<DenyReason> = self
            .satisfied
            .iter()
            .map(|p| DenyReason::Forbidden { policy: p.clone() })
            .chain(
                self.errored_forbids
                    .iter()
                    .map(|p| DenyReason::ForbidErrored { policy: p.clone() }),
            )
            .collect();
        if reasons.is_empty() {
            reasons.push(otherwise);
        }
        reasons
    }
}

/// What a decision is about: a new request, or more time on a grant.
#[derive(Debug, Clone, Copy)]
enum Ask<'a> {
    Request,
    Extend(&'a ExtensionFacts),
}

/// Entities and context for one request, built once and shared by the
/// actions evaluated for it.
struct Prepared<'a> {
    principal: cedar::EntityUid,
    principal_facts: &'a UserFacts,
    resource: cedar::EntityUid,
    entities: cedar::Entities,
    context: cedar::Context,
}

/// How many of the policies that could permit a request a denial names.
const PERMITS_NAMED: usize = 4;

impl PolicySet {
    /// One reason of a denial in words a requester can act on: a `forbid`
    /// with its `@reason` (or its conditions), and for "no policy permits"
    /// the policies that permit requests for the entitlement, each with
    /// whom it covers and what it demands, so the requester learns what
    /// would be accepted.
    pub fn describe_denial(&self, reason: &DenyReason, facts: &RequestFacts) -> String {
        self.describe_denial_of(Action::Request, reason, facts)
    }

    /// [`PolicySet::describe_denial`] for a decision on `action` (`request`
    /// or `extend`): "no policy permits" names the permits of that action.
    pub fn describe_denial_of(
        &self,
        action: Action,
        reason: &DenyReason,
        facts: &RequestFacts,
    ) -> String {
        let asks = if action == Action::Extend {
            "extensions of"
        } else {
            "requests for"
        };
        match reason {
            DenyReason::Forbidden { policy } => match self.demands(policy) {
                Some(demand) => format!("{reason}: {demand}"),
                None => reason.to_string(),
            },
            DenyReason::NoPolicyPermits => {
                let entitlement = facts.entitlement.id.as_str();
                let mut permits: Vec<(&String, &PolicyMeta)> = self
                    .meta
                    .iter()
                    .filter(|(_, m)| {
                        m.permit
                            && m.actions.contains(&action)
                            && m.entitlement.as_deref().is_none_or(|e| e == entitlement)
                    })
                    .collect();
                if permits.is_empty() {
                    let verb = if action == Action::Extend {
                        "extend"
                    } else {
                        "request"
                    };
                    return format!("{reason}: no policy lets anyone {verb} `{entitlement}`");
                }
                // Those that cover the requester first: their conditions
                // are what is missing.
                permits.sort_by_key(|(_, m)| !m.principal.covers(&facts.requester));
                let mut named: Vec<String> = permits
                    .iter()
                    .take(PERMITS_NAMED)
                    .map(|(id, m)| {
                        let demand = self.demands(id).unwrap_or_else(|| "always".to_owned());
                        format!("`{id}` ({}): {demand}", m.principal.describe())
                    })
                    .collect();
                if permits.len() > PERMITS_NAMED {
                    named.push(format!("and {} more", permits.len() - PERMITS_NAMED));
                }
                format!(
                    "{reason}; {asks} `{entitlement}` are permitted by {}",
                    named.join("; ")
                )
            }
            other => other.to_string(),
        }
    }

    /// What a policy demands: its `@reason`, else its conditions as written.
    fn demands(&self, policy: &str) -> Option<String> {
        let meta = self.meta.get(policy)?;
        meta.reason.clone().or_else(|| meta.conditions.clone())
    }

    /// Decides a request: denied, auto-approved, or which approval tiers it
    /// needs. See the crate docs for the rules.
    pub fn decide(&self, facts: &RequestFacts) -> Decision {
        self.decide_with(facts, Ask::Request, Selection::Sliced)
    }

    /// Decides an extension of the grant `facts` describe (action
    /// `extend`): denied when no permit is satisfied (or a forbid is);
    /// granted at once (`AutoApproved`) when a satisfied permit carries no
    /// approval annotations, as `auto_approve` wins over
    /// `require_approval`; else the tiers of the satisfied annotated
    /// permits. An annotated permit that fails to evaluate denies, as for
    /// `require_approval`.
    pub fn decide_extension(&self, facts: &RequestFacts, extension: &ExtensionFacts) -> Decision {
        self.decide_with(facts, Ask::Extend(extension), Selection::Sliced)
    }

    fn decide_with(&self, facts: &RequestFacts, ask: Ask, selection: Selection) -> Decision {
        let first = match ask {
            Ask::Request => Action::Request,
            Ask::Extend(_) => Action::Extend,
        };
        // Most people can ask for few entitlements: when no policy's scope
        // even admits this request, that is the answer, and building Cedar
        // values (most of the cost of a decision) is skipped.
        if self.out_of_scope(first, &facts.requester, facts, selection) {
            return Decision::Denied {
                reasons: vec![DenyReason::NoPolicyPermits],
                errors: Vec::new(),
            };
        }
        let mut errors = Vec::new();
        let extension = match ask {
            Ask::Request => None,
            Ask::Extend(e) => Some(e),
        };
        let prepared = match self.prepare(&facts.requester, None, extension, facts) {
            Ok(p) => p,
            Err(message) => return invalid(message),
        };
        let entitlement = facts.entitlement.id.as_str();

        let request = match self.evaluate(first, entitlement, &prepared, selection, &mut errors) {
            Ok(o) => o,
            Err(message) => return invalid(message),
        };
        if !request.allowed {
            return Decision::Denied {
                reasons: request.deny_reasons(DenyReason::NoPolicyPermits),
                errors,
            };
        }
        if matches!(ask, Ask::Extend(_)) {
            return self.extension_route(request, errors);
        }
        if facts.context.break_glass {
            return Decision::BreakGlass {
                policies: request.satisfied,
                errors,
            };
        }

        let auto = match self.evaluate(
            Action::AutoApprove,
            entitlement,
            &prepared,
            selection,
            &mut errors,
        ) {
            Ok(o) => o,
            Err(message) => return invalid(message),
        };
        if auto.allowed {
            return Decision::AutoApproved {
                policies: concat(request.satisfied, auto.satisfied),
                errors,
            };
        }

        let route = match self.evaluate(
            Action::RequireApproval,
            entitlement,
            &prepared,
            selection,
            &mut errors,
        ) {
            Ok(o) => o,
            Err(message) => return invalid(message),
        };
        if !route.errored_permits.is_empty() {
            return Decision::Denied {
                reasons: route
                    .errored_permits
                    .iter()
                    .map(|p| DenyReason::ApprovalRouteErrored { policy: p.clone() })
                    .collect(),
                errors,
            };
        }
        if !route.allowed {
            let mut reasons = route.deny_reasons(DenyReason::NoApprovalRoute);
            if !reasons.contains(&DenyReason::NoApprovalRoute) {
                reasons.push(DenyReason::NoApprovalRoute);
            }
            return Decision::Denied { reasons, errors };
        }
        let tiers = match self.tiers_of(&route.satisfied) {
            Ok(tiers) => tiers,
            Err(reasons) => return Decision::Denied { reasons, errors },
        };
        let waits: Vec<WaitingTimes> = route
            .satisfied
            .iter()
            .filter_map(|p| self.meta.get(p).and_then(|m| m.tier.as_ref()))
            .map(|t| t.waiting.clone())
            .collect();
        Decision::NeedsApprovals {
            tiers,
            waiting: WaitingTimes::soonest(&waits),
            policies: concat(request.satisfied, route.satisfied),
            errors,
        }
    }

    /// The tier each of `permits` asks for.
    fn tiers_of(&self, permits: &[String]) -> Result<Vec<Tier>, Vec<DenyReason>> {
        permits
            .iter()
            .map(
                |policy| match self.meta.get(policy).and_then(|m| m.tier.as_ref()) {
                    Some(spec) => Ok(Tier {
                        count: spec.count,
                        groups: spec.groups.clone(),
                        policy: policy.clone(),
                    }),
                    // The loader rejects such a permit; should one slip through,
                    // its tier is unknown and dropping it could weaken the route.
                    None => Err(vec![DenyReason::ApprovalRouteErrored {
                        policy: policy.clone(),
                    }]),
                },
            )
            .collect()
    }

    /// How a permitted extension goes: at once when a satisfied permit
    /// has no tier, else the tiers of the satisfied permits. An erroring
    /// permit with a tier denies it (its tier cannot be silently dropped).
    fn extension_route(&self, extend: Outcome, errors: Vec<EvalError>) -> Decision {
        let has_tier = |p: &String| self.meta.get(p).is_some_and(|m| m.tier.is_some());
        let errored: Vec<DenyReason> = extend
            .errored_permits
            .iter()
            .filter(|p| has_tier(p))
            .map(|p| DenyReason::ApprovalRouteErrored { policy: p.clone() })
            .collect();
        if !errored.is_empty() {
            return Decision::Denied {
                reasons: errored,
                errors,
            };
        }
        let (tiered, at_once): (Vec<String>, Vec<String>) =
            extend.satisfied.into_iter().partition(|p| has_tier(p));
        if !at_once.is_empty() {
            return Decision::AutoApproved {
                policies: at_once,
                errors,
            };
        }
        match self.tiers_of(&tiered) {
            // An extension waits until the grant's expiry at most.
            Ok(tiers) => Decision::NeedsApprovals {
                tiers,
                waiting: WaitingTimes::default(),
                policies: tiered,
                errors,
            },
            Err(reasons) => Decision::Denied { reasons, errors },
        }
    }

    /// The step-up an ask needs, if that is all it lacks: `Some(N)` when
    /// it is denied only by `forbid`s annotated `@mfa_max_age`, and the same
    /// ask with MFA just completed would not be denied. `N` is the
    /// strictest (smallest) of their ages, in seconds: what RFC 9470's
    /// `max_age` asks the identity provider for.
    pub fn mfa_step_up(&self, facts: &RequestFacts) -> Option<u64> {
        let Decision::Denied { reasons, .. } = self.decide(facts) else {
            return None;
        };
        let mut strictest: Option<u64> = None;
        for reason in &reasons {
            let DenyReason::Forbidden { policy } = reason else {
                return None;
            };
            let age = self.meta.get(policy).and_then(|m| m.mfa_max_age)?;
            strictest = Some(strictest.map_or(age, |s| s.min(age)));
        }
        let mut fresh = facts.clone();
        fresh.context.mfa_age = Some(std::time::Duration::ZERO);
        match self.decide(&fresh) {
            Decision::Denied { .. } => None,
            _ => strictest,
        }
    }

    /// Whether any policy demands fresh MFA (`@mfa_max_age`), so callers
    /// can skip asking [`PolicySet::mfa_step_up`] otherwise.
    pub fn demands_mfa(&self) -> bool {
        self.meta.values().any(|m| m.mfa_max_age.is_some())
    }

    /// Whether `approver` may approve the request described by `facts`
    /// (policies see the requester as `context.requester`). The requester
    /// can never approve their own request: that is checked here, before
    /// any policy, so no policy can allow it.
    ///
    /// This says whether the person may sign at all; which tiers their
    /// approval counts toward follows from their groups and the decision's
    /// [`Tier`]s.
    pub fn may_approve(&self, approver: &UserFacts, facts: &RequestFacts) -> ApproveDecision {
        self.may_approve_with(approver, facts, Selection::Sliced)
    }

    fn may_approve_with(
        &self,
        approver: &UserFacts,
        facts: &RequestFacts,
        selection: Selection,
    ) -> ApproveDecision {
        if airlock_core::access::decides_own_request(&approver.id, &facts.requester.id) {
            return ApproveDecision::Denied {
                reasons: vec![DenyReason::SelfApproval],
                errors: Vec::new(),
            };
        }
        if self.out_of_scope(Action::Approve, approver, facts, selection) {
            return ApproveDecision::Denied {
                reasons: vec![DenyReason::NoPolicyPermits],
                errors: Vec::new(),
            };
        }
        let mut errors = Vec::new();
        let outcome = self
            .prepare(approver, Some(&facts.requester), None, facts)
            .and_then(|prepared| {
                self.evaluate(
                    Action::Approve,
                    facts.entitlement.id.as_str(),
                    &prepared,
                    selection,
                    &mut errors,
                )
            });
        match outcome {
            Ok(o) if o.allowed => ApproveDecision::Allowed {
                policies: o.satisfied,
                errors,
            },
            Ok(o) => ApproveDecision::Denied {
                reasons: o.deny_reasons(DenyReason::NoPolicyPermits),
                errors,
            },
            Err(message) => ApproveDecision::Denied {
                reasons: vec![DenyReason::InvalidFacts { message }],
                errors,
            },
        }
    }

    /// True when no policy can apply to `action` by `principal` on the
    /// entitlement, so Cedar would deny with no policy satisfied.
    fn out_of_scope(
        &self,
        action: Action,
        principal: &UserFacts,
        facts: &RequestFacts,
        selection: Selection,
    ) -> bool {
        selection == Selection::Sliced
            && self
                .slice(
                    action,
                    facts.entitlement.id.as_str(),
                    principal.id.as_str(),
                    principal.groups.iter().map(GroupName::as_str),
                )
                .is_empty()
    }

    /// Builds the entity store (principal, the requester if different,
    /// their groups, the entitlement) and the context. Values are typed by
    /// construction to match the schema, so no schema check is needed here;
    /// a test checks that they conform.
    fn prepare<'a>(
        &self,
        principal: &'a UserFacts,
        requester: Option<&UserFacts>,
        extension: Option<&ExtensionFacts>,
        facts: &RequestFacts,
    ) -> Result<Prepared<'a>, String> {
        let names = &self.names;
        let principal_uid = names.uid(&names.user, principal.id.as_str());
        let resource_uid = names.uid(&names.entitlement, facts.entitlement.id.as_str());

        // Groups need no entities of their own: they have no attributes, and
        // membership is read from the user's parents.
        let mut entities = vec![self.user_entity(principal)?];
        if let Some(requester) = requester {
            entities.push(self.user_entity(requester)?);
        }
        entities.push(self.entitlement_entity(&facts.entitlement)?);
        // Adding to an empty store computes the same transitive closure as
        // `Entities::from_entities`, in about half the time.
        let entities = cedar::Entities::empty()
            .add_entities(entities, None)
            .map_err(|e| e.to_string())?;

        let context = self.context(&facts.context, requester, extension)?;
        Ok(Prepared {
            principal: principal_uid,
            principal_facts: principal,
            resource: resource_uid,
            entities,
            context,
        })
    }

    fn user_entity(&self, user: &UserFacts) -> Result<cedar::Entity, String> {
        let names = &self.names;
        let mut attrs = HashMap::from([
            (
                "team".to_owned(),
                cedar::RestrictedExpression::new_string(user.team.clone()),
            ),
            (
                "employment".to_owned(),
                cedar::RestrictedExpression::new_string(user.employment.clone()),
            ),
            (
                "on_call".to_owned(),
                cedar::RestrictedExpression::new_bool(user.on_call),
            ),
            (
                "kind".to_owned(),
                cedar::RestrictedExpression::new_string(user.kind.as_str().to_owned()),
            ),
        ]);
        if let Some(sponsor) = &user.sponsor {
            attrs.insert(
                "sponsor".to_owned(),
                cedar::RestrictedExpression::new_entity_uid(
                    names.uid(&names.user, sponsor.as_str()),
                ),
            );
        }
        let parents = user
            .groups
            .iter()
            .map(|g| names.uid(&names.group, g.as_str()))
            .collect();
        cedar::Entity::new(names.uid(&names.user, user.id.as_str()), attrs, parents)
            .map_err(|e| e.to_string())
    }

    fn entitlement_entity(&self, e: &EntitlementFacts) -> Result<cedar::Entity, String> {
        let names = &self.names;
        let mut attrs = HashMap::from([(
            "sensitivity".to_owned(),
            cedar::RestrictedExpression::new_long(e.sensitivity),
        )]);
        if let Some(owner) = &e.owner_group {
            attrs.insert(
                "owner_group".to_owned(),
                cedar::RestrictedExpression::new_entity_uid(
                    names.uid(&names.group, owner.as_str()),
                ),
            );
        }
        cedar::Entity::new(
            names.uid(&names.entitlement, e.id.as_str()),
            attrs,
            HashSet::new(),
        )
        .map_err(|e| e.to_string())
    }

    fn context(
        &self,
        c: &RequestContext,
        requester: Option<&UserFacts>,
        extension: Option<&ExtensionFacts>,
    ) -> Result<cedar::Context, String> {
        let names = &self.names;
        let long = cedar::RestrictedExpression::new_long;
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let ticket = c.ticket().unwrap_or("");
        let mut pairs = vec![
            ("duration_seconds".to_owned(), long(secs(c.duration))),
            (
                "start_hour_utc".to_owned(),
                long(i64::from(c.start.hour_utc())),
            ),
            ("start_weekday".to_owned(), long(c.start.weekday().index())),
            (
                "has_ticket".to_owned(),
                cedar::RestrictedExpression::new_bool(!ticket.is_empty()),
            ),
            (
                "ticket".to_owned(),
                cedar::RestrictedExpression::new_string(ticket.to_owned()),
            ),
            ("reason_length".to_owned(), long(i64::from(c.reason_length))),
            (
                "mfa_age_seconds".to_owned(),
                long(c.mfa_age.map_or(-1, secs)),
            ),
            (
                "break_glass".to_owned(),
                cedar::RestrictedExpression::new_bool(c.break_glass),
            ),
            (
                "escalated".to_owned(),
                cedar::RestrictedExpression::new_bool(c.escalated),
            ),
            (
                "other_active_entitlements".to_owned(),
                cedar::RestrictedExpression::new_set(c.other_active_entitlements.iter().map(|e| {
                    cedar::RestrictedExpression::new_entity_uid(
                        names.uid(&names.entitlement, e.as_str()),
                    )
                })),
            ),
        ];
        if let Some(e) = extension {
            pairs.push(("extension_seconds".to_owned(), long(secs(e.extension))));
            pairs.push(("total_seconds".to_owned(), long(secs(e.total))));
        }
        if let Some(requester) = requester {
            pairs.push((
                "requester".to_owned(),
                cedar::RestrictedExpression::new_entity_uid(
                    names.uid(&names.user, requester.id.as_str()),
                ),
            ));
        }
        cedar::Context::from_pairs(pairs).map_err(|e| e.to_string())
    }

    /// Evaluates one action against the policies that can apply to this
    /// principal and entitlement, merging the answers of the pre-selected
    /// sets as Cedar would for their union, and applying the fail-closed
    /// rules to errors.
    fn evaluate(
        &self,
        action: Action,
        entitlement: &str,
        prepared: &Prepared,
        selection: Selection,
        errors: &mut Vec<EvalError>,
    ) -> Result<Outcome, String> {
        let sets = match selection {
            Selection::Sliced => self.slice(
                action,
                entitlement,
                prepared.principal_facts.id.as_str(),
                prepared
                    .principal_facts
                    .groups
                    .iter()
                    .map(GroupName::as_str),
            ),
            Selection::Everything => vec![&self.all],
        };
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut errored_forbids = Vec::new();
        let mut errored_permits = Vec::new();
        let mut new_errors = Vec::new();
        if !sets.is_empty() {
            let request = cedar::Request::new(
                prepared.principal.clone(),
                self.names.action(action).clone(),
                prepared.resource.clone(),
                prepared.context.clone(),
                None,
            )
            .map_err(|e| e.to_string())?;
            for policies in sets {
                let response =
                    self.authorizer
                        .is_authorized(&request, policies, &prepared.entities);
                // Cedar's reasons are the satisfied permits when it allows,
                // the satisfied forbids when it denies.
                let reasons = response.diagnostics().reason().map(ToString::to_string);
                match response.decision() {
                    cedar::Decision::Allow => permits.extend(reasons),
                    cedar::Decision::Deny => forbids.extend(reasons),
                }
                for e in response.diagnostics().errors() {
                    let cedar::AuthorizationError::PolicyEvaluationError(inner) = e;
                    let id = inner.policy_id();
                    let policy = id.to_string();
                    match policies.policy(id).map(cedar::Policy::effect) {
                        Some(cedar::Effect::Forbid) => errored_forbids.push(policy.clone()),
                        _ => errored_permits.push(policy.clone()),
                    }
                    new_errors.push(EvalError {
                        policy,
                        action,
                        message: inner.inner().to_string(),
                    });
                }
            }
        }
        // In policy order, whichever sets they came from.
        new_errors.sort_by(|a, b| a.policy.cmp(&b.policy));
        errors.extend(new_errors);
        errored_forbids.sort();
        errored_permits.sort();
        let allowed = !permits.is_empty() && forbids.is_empty() && errored_forbids.is_empty();
        let mut satisfied = if allowed { permits } else { forbids };
        satisfied.sort();
        Ok(Outcome {
            allowed,
            satisfied,
            errored_forbids,
            errored_permits,
        })
    }

    /// Checks that the entities and context built for `facts` conform to
    /// the schema: the evaluator skips that check for speed, relying on
    /// construction; this lets tests prove it.
    #[cfg(test)]
    pub(crate) fn conforms(
        &self,
        facts: &RequestFacts,
        approver: &UserFacts,
    ) -> Result<(), String> {
        let schema = crate::policy_set::parse_schema().map_err(|e| format!("{e:?}"))?;
        let extension = ExtensionFacts {
            extension: std::time::Duration::from_secs(1800),
            total: facts.context.duration + std::time::Duration::from_secs(1800),
        };
        for (principal, requester, extension, action) in [
            (&facts.requester, None, None, Action::Request),
            (approver, Some(&facts.requester), None, Action::Approve),
            (&facts.requester, None, Some(&extension), Action::Extend),
        ] {
            let p = self.prepare(principal, requester, extension, facts)?;
            cedar::Request::new(
                p.principal,
                self.names.action(action).clone(),
                p.resource,
                p.context,
                Some(&schema),
            )
            .map_err(|e| e.to_string())?;
            let entities: Vec<cedar::Entity> = p.entities.iter().cloned().collect();
            cedar::Entities::from_entities(entities, Some(&schema)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// `first` then the ids of `then` not already in it (one policy may cover
/// several actions).
fn concat(mut first: Vec<String>, then: Vec<String>) -> Vec<String> {
    for id in then {
        if !first.contains(&id) {
            first.push(id);
        }
    }
    first
}

fn invalid(message: String) -> Decision {
    Decision::Denied {
        reasons: vec![DenyReason::InvalidFacts { message }],
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use airlock_core::{EntitlementId, UserId};

    use super::*;

    fn user(id: &str, groups: &[&str]) -> UserFacts {
        UserFacts {
            id: UserId::parse(id).unwrap(),
            groups: groups
                .iter()
                .map(|g| GroupName::parse(g).unwrap())
                .collect(),
            team: "t".to_owned(),
            employment: "employee".to_owned(),
            on_call: true,
            kind: Default::default(),
            sponsor: None,
        }
    }

    mod differential {
        use proptest::prelude::*;

        use super::*;

        const A: &str = "Airlock::Action::";
        const ACTIONS: [&str; 4] = ["request", "auto_approve", "require_approval", "approve"];

        /// One random policy: every kind of scope the pre-selection
        /// distinguishes, conditions that may hold or not, and one that
        /// errors for long durations.
        fn arb_policy() -> impl Strategy<Value = String> {
            let principal = prop_oneof![
                Just("principal".to_owned()),
                (0u8..3).prop_map(|g| format!(r#"principal in Airlock::Group::"g{g}""#)),
                (0u8..3).prop_map(|u| format!(r#"principal == Airlock::User::"u{u}""#)),
                (0u8..3).prop_map(|u| format!(r#"principal in Airlock::User::"u{u}""#)),
                Just("principal is Airlock::User".to_owned()),
                (0u8..3).prop_map(|g| format!(
                    r#"principal is Airlock::User in Airlock::Group::"g{g}""#
                )),
            ];
            let resource = prop_oneof![
                Just("resource".to_owned()),
                (0u8..3).prop_map(|e| format!(r#"resource == Airlock::Entitlement::"e{e}""#)),
                (0u8..3).prop_map(|e| format!(r#"resource in Airlock::Entitlement::"e{e}""#)),
                Just("resource is Airlock::Entitlement".to_owned()),
            ];
            let condition = prop_oneof![
                Just("true".to_owned()),
                Just("context.break_glass".to_owned()),
                (0u64..8000).prop_map(|n| format!("context.duration_seconds > {n}")),
                Just("principal.on_call".to_owned()),
                (0u8..3).prop_map(|g| format!(r#"principal in Airlock::Group::"g{g}""#)),
                (0i64..4).prop_map(|k| format!("resource.sensitivity >= {k}")),
                Just("context.duration_seconds * 4611686018427387904 > 0".to_owned()),
            ];
            (
                prop::bool::ANY,
                principal,
                proptest::collection::btree_set(0usize..4, 0..=4),
                resource,
                condition,
            )
                .prop_map(|(permit, principal, actions, resource, condition)| {
                    let action = match actions.len() {
                        0 => "action".to_owned(),
                        _ => {
                            let names: Vec<String> = actions
                                .iter()
                                .map(|i| format!(r#"{A}"{}""#, ACTIONS[*i]))
                                .collect();
                            format!("action in [{}]", names.join(", "))
                        }
                    };
                    let tier = permit && (actions.is_empty() || actions.contains(&2));
                    format!(
                        "{}{}({principal}, {action}, {resource}) when {{ {condition} }};",
                        if tier {
                            r#"@approvals("1") @approvers("g0") "#
                        } else {
                            ""
                        },
                        if permit { "permit" } else { "forbid" },
                    )
                })
        }

        fn arb_user(prefix: &'static str) -> impl Strategy<Value = UserFacts> {
            (
                0u8..3,
                proptest::collection::btree_set(0u8..3, 0..3),
                prop::bool::ANY,
            )
                .prop_map(move |(n, groups, on_call)| UserFacts {
                    id: UserId::parse(&format!("{prefix}{n}")).unwrap(),
                    groups: groups
                        .into_iter()
                        .map(|g| GroupName::parse(&format!("g{g}")).unwrap())
                        .collect(),
                    team: String::new(),
                    employment: "employee".to_owned(),
                    on_call,
                    kind: Default::default(),
                    sponsor: None,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Pre-selecting policies by scope gives exactly the answers of
            /// evaluating the whole set.
            #[test]
            fn preselection_changes_no_answer(
                policies in proptest::collection::vec(arb_policy(), 0..12),
                requester in arb_user("u"),
                approver in arb_user("u"),
                entitlement in 0u8..4,
                sensitivity in 0i64..4,
                duration in 0u64..10_000,
                break_glass in prop::bool::ANY,
            ) {
                let set = PolicySet::load(&[("p.cedar".to_owned(), policies.join("\n"))]).unwrap();
                let facts = RequestFacts {
                    requester,
                    entitlement: EntitlementFacts {
                        id: EntitlementId::parse(&format!("e{entitlement}")).unwrap(),
                        sensitivity,
                        owner_group: None,
                    },
                    context: RequestContext {
                        duration: std::time::Duration::from_secs(duration),
                        break_glass,
                        escalated: false,
                        ..RequestContext::typical()
                    },
                };
                prop_assert_eq!(
                    set.decide_with(&facts, Ask::Request, Selection::Sliced),
                    set.decide_with(&facts, Ask::Request, Selection::Everything)
                );
                prop_assert_eq!(
                    set.may_approve_with(&approver, &facts, Selection::Sliced),
                    set.may_approve_with(&approver, &facts, Selection::Everything)
                );
            }
        }
    }

    /// The evaluator skips schema checks on the entities and context it
    /// builds; this proves they would pass them.
    #[test]
    fn built_entities_and_context_conform_to_the_schema() {
        let set = PolicySet::load(&[]).unwrap();
        let mut facts = RequestFacts {
            requester: user("alice", &["engineers", "approvers"]),
            entitlement: EntitlementFacts {
                id: EntitlementId::parse("prod-db-admin").unwrap(),
                sensitivity: 3,
                owner_group: Some(GroupName::parse("approvers").unwrap()),
            },
            context: RequestContext {
                ticket: None,
                mfa_age: None,
                other_active_entitlements: BTreeSet::from([
                    EntitlementId::parse("prod-deploy").unwrap()
                ]),
                ..RequestContext::typical()
            },
        };
        let approver = user("bob", &["approvers", "security"]);
        assert_eq!(set.conforms(&facts, &approver), Ok(()));
        facts.entitlement.owner_group = None;
        facts.requester.groups.clear();
        facts.context = RequestContext::typical();
        assert_eq!(set.conforms(&facts, &approver), Ok(()));
    }
}
