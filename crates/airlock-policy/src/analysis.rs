//! Questions about a policy set as a whole, answered by evaluating it:
//! who can get an entitlement, and what a policy change would change. Both
//! evaluate concrete principals under stated contexts rather than reasoning
//! symbolically, so their answers are exactly what `decide` would say for
//! those inputs, and nothing more.

use std::collections::BTreeMap;
use std::fmt;

use airlock_core::{EntitlementId, UserId};

use crate::decide::{Decision, Tier};
use crate::facts::{EntitlementFacts, RequestContext, RequestFacts, UserFacts};
use crate::policy_set::PolicySet;

/// Id of the stand-in requester used when asking who may approve without a
/// particular request in mind. It cannot be confused with a real user only
/// if no real user has this id; a real user with it would be treated as the
/// requester and so never counted as an approver.
pub const ANY_REQUESTER: &str = "_any_requester_";

/// How a request by one person would go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Auto,
    Approvals(Vec<Tier>),
}

/// One person who may request the entitlement, and on what grounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MayRequest {
    pub user: UserId,
    pub route: Route,
    /// The policies that decided, as in [`Decision::policies`].
    pub policies: Vec<String>,
}

impl fmt::Display for MayRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Auto => write!(f, "{}: auto-approved", self.user)?,
            Route::Approvals(tiers) => {
                let tiers: Vec<String> = tiers.iter().map(ToString::to_string).collect();
                write!(f, "{}: needs {}", self.user, tiers.join(" and "))?;
            }
        }
        write!(f, " [{}]", self.policies.join(", "))
    }
}

/// One person who may approve requests for the entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MayApprove {
    pub user: UserId,
    pub policies: Vec<String>,
}

/// Who can get an entitlement, under an assumed context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoCan {
    pub entitlement: EntitlementId,
    /// The context every principal was evaluated with
    /// ([`RequestContext::typical`]). Rules that depend on the context (a
    /// ticket, hours, duration, break-glass) may say otherwise for real
    /// requests: `conditions` lists the policies to read.
    pub assumed: RequestContext,
    /// Policies naming the entitlement in their resource scope: the
    /// conditions under which the answers below change.
    pub conditions: Vec<String>,
    /// Everyone whose request would not be denied, with its route.
    pub may_request: Vec<MayRequest>,
    /// The subset of `may_request` that is auto-approved.
    pub auto_approved_for: Vec<UserId>,
    /// Everyone who may approve a request for it by someone else (the
    /// stand-in requester [`ANY_REQUESTER`]: an employee in no group, with
    /// an empty team, not on call, making a typical request).
    pub approvers: Vec<MayApprove>,
}

/// A capability a principal can gain or lose through a policy change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// A request would not be denied.
    Request,
    /// A request would be auto-approved.
    AutoApprove,
    /// May approve someone else's request (see [`ANY_REQUESTER`]).
    Approve,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Request => "request",
            Capability::AutoApprove => "auto-approve",
            Capability::Approve => "approve",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Gained,
    Lost,
}

/// One principal gaining or losing one capability on one entitlement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub user: UserId,
    pub entitlement: EntitlementId,
    pub capability: Capability,
    pub direction: Direction,
    /// Indexes into the sample contexts in which it changes.
    pub contexts: Vec<usize>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.direction {
            Direction::Gained => "gains",
            Direction::Lost => "loses",
        };
        let contexts: Vec<String> = self.contexts.iter().map(ToString::to_string).collect();
        write!(
            f,
            "`{}` {verb} {} on `{}` (contexts {})",
            self.user,
            self.capability,
            self.entitlement,
            contexts.join(", ")
        )
    }
}

impl PolicySet {
    /// Who may request, is auto-approved for, and may approve
    /// `entitlement`, among `principals`, assuming a typical request
    /// ([`RequestContext::typical`]).
    pub fn who_can(&self, entitlement: &EntitlementFacts, principals: &[UserFacts]) -> WhoCan {
        let assumed = RequestContext::typical();
        let stand_in = stand_in_requester();
        let mut may_request = Vec::new();
        let mut auto_approved_for = Vec::new();
        let mut approvers = Vec::new();
        for user in principals {
            let facts = RequestFacts {
                requester: user.clone(),
                entitlement: entitlement.clone(),
                context: assumed.clone(),
            };
            let decision = self.decide(&facts);
            let policies: Vec<String> =
                decision.policies().into_iter().map(str::to_owned).collect();
            match decision {
                // The typical ask is no emergency, so never break-glass.
                Decision::Denied { .. } | Decision::BreakGlass { .. } => {}
                Decision::AutoApproved { .. } => {
                    auto_approved_for.push(user.id.clone());
                    may_request.push(MayRequest {
                        user: user.id.clone(),
                        route: Route::Auto,
                        policies,
                    });
                }
                Decision::NeedsApprovals { tiers, .. } => may_request.push(MayRequest {
                    user: user.id.clone(),
                    route: Route::Approvals(tiers),
                    policies,
                }),
            }
            if let Some(requester) = &stand_in {
                let facts = RequestFacts {
                    requester: requester.clone(),
                    ..facts
                };
                if let crate::decide::ApproveDecision::Allowed { policies, .. } =
                    self.may_approve(user, &facts)
                {
                    approvers.push(MayApprove {
                        user: user.id.clone(),
                        policies,
                    });
                }
            }
        }
        WhoCan {
            entitlement: entitlement.id.clone(),
            assumed,
            conditions: self.policies_scoped_to(entitlement.id.as_str()),
            may_request,
            auto_approved_for,
            approvers,
        }
    }
}

/// What changes between `old` and `new` for each principal and
/// entitlement, evaluated in each of `contexts` (the typical context when
/// none is given). Approval rights are evaluated against the stand-in
/// requester [`ANY_REQUESTER`]. Sorted by user, entitlement, capability.
pub fn diff(
    old: &PolicySet,
    new: &PolicySet,
    principals: &[UserFacts],
    entitlements: &[EntitlementFacts],
    contexts: &[RequestContext],
) -> Vec<Change> {
    let typical = [RequestContext::typical()];
    let contexts = if contexts.is_empty() {
        &typical[..]
    } else {
        contexts
    };
    let stand_in = stand_in_requester();
    type Key = (UserId, EntitlementId, Capability, Direction);
    let mut changes: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for user in principals {
        for entitlement in entitlements {
            for (i, context) in contexts.iter().enumerate() {
                let facts = RequestFacts {
                    requester: user.clone(),
                    entitlement: entitlement.clone(),
                    context: context.clone(),
                };
                let (before, after) = (old.decide(&facts), new.decide(&facts));
                let mut compare = |capability, was: bool, is: bool| {
                    if was != is {
                        let direction = if is {
                            Direction::Gained
                        } else {
                            Direction::Lost
                        };
                        changes
                            .entry((
                                user.id.clone(),
                                entitlement.id.clone(),
                                capability,
                                direction,
                            ))
                            .or_default()
                            .push(i);
                    }
                };
                compare(
                    Capability::Request,
                    !matches!(before, Decision::Denied { .. }),
                    !matches!(after, Decision::Denied { .. }),
                );
                compare(
                    Capability::AutoApprove,
                    matches!(before, Decision::AutoApproved { .. }),
                    matches!(after, Decision::AutoApproved { .. }),
                );
                if let Some(requester) = &stand_in {
                    let facts = RequestFacts {
                        requester: requester.clone(),
                        ..facts
                    };
                    compare(
                        Capability::Approve,
                        old.may_approve(user, &facts).is_allowed(),
                        new.may_approve(user, &facts).is_allowed(),
                    );
                }
            }
        }
    }
    changes
        .into_iter()
        .map(
            |((user, entitlement, capability, direction), contexts)| Change {
                user,
                entitlement,
                capability,
                direction,
                contexts,
            },
        )
        .collect()
}

fn stand_in_requester() -> Option<UserFacts> {
    // `ANY_REQUESTER` is a valid id; `ok()` only guards a future change of
    // the id rules.
    UserId::parse(ANY_REQUESTER).ok().map(|id| UserFacts {
        id,
        groups: Default::default(),
        team: String::new(),
        employment: "employee".to_owned(),
        on_call: false,
        kind: Default::default(),
        sponsor: None,
    })
}
