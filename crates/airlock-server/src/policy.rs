//! The policy set in force on this replica, and the bridge between it and the
//! lifecycle.
//!
//! Policies come from two places: the Cedar files of the config's policy
//! folder, and the shorthand rules written on entitlements in the config
//! (`requestable_by`, `auto_approve`, `approvals_required`/`approvers`), which
//! the config loader compiles to Cedar ([`shorthand_policies`]; an
//! extension goes the way the request does). One set,
//! one evaluator: a `forbid` in the folder overrides a shorthand permit.
//!
//! The set is swapped as a whole on reload; a set that fails to load or
//! validate is refused and the one in force stays. Deciding turns the
//! policy crate's answers into the core's plain [`Verdict`] values.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use airlock_core::approval::{ApproverVerdict, Route, Seats, Verdict};
use airlock_core::catalog::{Entitlement, User, WaitingTimes};
use airlock_core::policy_change::Proposal;
use airlock_core::request::{AccessRequest, NewRequest};
use airlock_core::{EntitlementId, GroupName, Timestamp, UserId};
use airlock_policy::{
    Action, ApproveDecision, Decision, Direction, Directory, EntitlementFacts, ExtensionFacts,
    PolicyError, PolicySet, RequestContext, RequestFacts, StartTime, UserFacts, Weekday,
};

/// Where the policy text comes from; read again on every reload.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    /// Folder of `*.cedar` files, if configured.
    pub dir: Option<PathBuf>,
    /// Policies compiled from the config's entitlement shorthand, as
    /// (source name, Cedar text).
    pub generated: Vec<(String, String)>,
}

/// Why a policy set could not be loaded. The set in force, if any, stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyLoadError {
    Read(String),
    Invalid(Vec<PolicyError>),
}

impl fmt::Display for PolicyLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyLoadError::Read(m) => f.write_str(m),
            PolicyLoadError::Invalid(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{} error(s) in the policies:\n{}",
                    errors.len(),
                    lines.join("\n")
                )
            }
        }
    }
}

impl std::error::Error for PolicyLoadError {}

/// Reads every `*.cedar` file of `dir`, in name order, as (path, text).
pub fn read_policy_dir(dir: &Path) -> Result<Vec<(String, String)>, PolicyLoadError> {
    let read_err = |what: String| PolicyLoadError::Read(what);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            read_err(format!(
                "cannot read the policy folder `{}`: {e}",
                dir.display()
            ))
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(read_err(format!(
            "`{}` holds no *.cedar files",
            dir.display()
        )));
    }
    paths
        .into_iter()
        .map(|p| {
            std::fs::read_to_string(&p)
                .map(|text| (p.display().to_string(), text))
                .map_err(|e| read_err(format!("cannot read `{}`: {e}", p.display())))
        })
        .collect()
}

impl PolicySource {
    /// The sources as they are now: the folder's files, then the shorthand.
    pub fn read(&self) -> Result<Vec<(String, String)>, PolicyLoadError> {
        let mut sources = match &self.dir {
            Some(dir) => read_policy_dir(dir)?,
            None => Vec::new(),
        };
        sources.extend(self.generated.iter().cloned());
        Ok(sources)
    }

    /// Reads, parses and validates against the schema.
    pub fn load(&self) -> Result<PolicySet, PolicyLoadError> {
        PolicySet::load(&self.read()?).map_err(PolicyLoadError::Invalid)
    }
}

/// Compiles one entitlement's shorthand rules to Cedar. Names are validated
/// identifiers (no quotes or backslashes), so they go into string literals
/// as they are. `escalate_to` may approve once the request is escalated
/// (`context.escalated`).
pub fn shorthand_policies(
    entitlement: &EntitlementId,
    requestable_by: &BTreeSet<GroupName>,
    auto_approve: bool,
    approvals: Option<(u32, &BTreeSet<GroupName>)>,
    escalate_to: &BTreeSet<GroupName>,
) -> String {
    let member_of = |groups: &BTreeSet<GroupName>| {
        groups
            .iter()
            .map(|g| format!("principal in Airlock::Group::\"{g}\""))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    let scope = |action: &str| {
        format!(
            "permit (\n  principal,\n  action == Airlock::Action::\"{action}\",\n  resource == Airlock::Entitlement::\"{entitlement}\"\n)"
        )
    };
    let mut text = String::new();
    if !requestable_by.is_empty() {
        text.push_str(&format!(
            "@id(\"config.{entitlement}.request\")\n{}\nwhen {{ {} }};\n\n",
            scope("request"),
            member_of(requestable_by)
        ));
    }
    if auto_approve {
        text.push_str(&format!(
            "@id(\"config.{entitlement}.auto_approve\")\n{};\n\n",
            scope("auto_approve")
        ));
    }
    // Whoever may request may extend: at once when requests are
    // auto-approved, else with the same approvers as the request.
    let extend_when = if requestable_by.is_empty() {
        String::new()
    } else {
        format!("\nwhen {{ {} }}", member_of(requestable_by))
    };
    if auto_approve {
        text.push_str(&format!(
            "@id(\"config.{entitlement}.extend\")\n{}{extend_when};\n\n",
            scope("extend")
        ));
    }
    if let Some((count, groups)) = approvals {
        let names: Vec<&str> = groups.iter().map(GroupName::as_str).collect();
        let annotations = format!(
            "@approvals(\"{count}\")\n@approvers(\"{}\")",
            names.join(",")
        );
        text.push_str(&format!(
            "@id(\"config.{entitlement}.approvals\")\n{annotations}\n{};\n\n",
            scope("require_approval")
        ));
        if !auto_approve {
            text.push_str(&format!(
                "@id(\"config.{entitlement}.extend\")\n{annotations}\n{}{extend_when};\n\n",
                scope("extend")
            ));
        }
        text.push_str(&format!(
            "@id(\"config.{entitlement}.approve\")\n{}\nwhen {{ {} }};\n\n",
            scope("approve"),
            member_of(groups)
        ));
    }
    if !escalate_to.is_empty() {
        text.push_str(&format!(
            "@id(\"config.{entitlement}.approve_escalated\")\n{}\nwhen {{ context.escalated && ({}) }};\n\n",
            scope("approve"),
            member_of(escalate_to)
        ));
    }
    text
}

/// Compiles an entitlement's `require_mfa_within`: a `forbid` refusing a
/// request unless the requester completed MFA at most `max_age` seconds
/// ago. Its `@mfa_max_age` annotation is what makes such a refusal a
/// step-up challenge (RFC 9470) rather than a denial
/// (`PolicySet::mfa_step_up`); hand-written policies demand MFA the same
/// way.
pub fn mfa_policy(entitlement: &EntitlementId, max_age: u64) -> String {
    format!(
        "@id(\"config.{entitlement}.mfa\")\n@mfa_max_age(\"{max_age}\")\n@reason(\"multi-factor authentication within the last {max_age} seconds\")\nforbid (\n  principal,\n  action == Airlock::Action::\"request\",\n  resource == Airlock::Entitlement::\"{entitlement}\"\n)\nunless {{ context.mfa_age_seconds >= 0 && context.mfa_age_seconds <= {max_age} }};\n\n"
    )
}

/// The policy set in force, the source it is reloaded from, the directory
/// facts (user and entitlement attributes) policies see, and the changes
/// waiting for a second admin.
pub struct Policies {
    source: PolicySource,
    directory: Directory,
    current: RwLock<Arc<PolicySet>>,
    /// Changes take effect only once a second admin approves them.
    two_person: bool,
    proposals: Mutex<BTreeMap<String, Pending>>,
}

/// A proposal and the validated set it would put in force.
#[derive(Clone)]
pub struct Pending {
    pub proposal: Proposal,
    pub set: Arc<PolicySet>,
}

impl Policies {
    /// Loads the set; fails if it does not load (a server does not start on
    /// broken policies).
    pub fn load(
        source: PolicySource,
        directory: Directory,
        two_person: bool,
    ) -> Result<Policies, PolicyLoadError> {
        let set = source.load()?;
        Ok(Policies {
            source,
            directory,
            current: RwLock::new(Arc::new(set)),
            two_person,
            proposals: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn two_person(&self) -> bool {
        self.two_person
    }

    /// Keeps a validated set for a second admin's approval.
    pub fn propose(&self, proposal: Proposal, set: PolicySet) {
        if let Ok(mut waiting) = self.proposals.lock() {
            waiting.insert(
                proposal.id.clone(),
                Pending {
                    proposal,
                    set: Arc::new(set),
                },
            );
        }
    }

    pub fn proposals(&self) -> Vec<Proposal> {
        self.proposals
            .lock()
            .map(|w| w.values().map(|p| p.proposal.clone()).collect())
            .unwrap_or_default()
    }

    pub fn proposal(&self, id: &str) -> Option<Pending> {
        self.proposals.lock().ok()?.get(id).cloned()
    }

    /// Adds an admin's approval to a waiting proposal; returns it as it is now.
    pub fn record_approval(&self, id: &str, approver: &UserId) -> Option<Proposal> {
        let mut waiting = self.proposals.lock().ok()?;
        let pending = waiting.get_mut(id)?;
        pending.proposal.approvals.push(approver.clone());
        Some(pending.proposal.clone())
    }

    /// Puts an approved proposal in force and forgets every proposal: the
    /// others were compared with the set that is no longer in force.
    pub fn install_proposal(&self, pending: &Pending) -> String {
        if let Ok(mut waiting) = self.proposals.lock() {
            waiting.clear();
        }
        let mut slot = match self.current.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        let old = slot.version().to_owned();
        *slot = Arc::clone(&pending.set);
        old
    }

    /// What would change for whom if `new` replaced the set in force, one
    /// line per user, entitlement and capability, over everyone in the
    /// directory and the circumstances of [`review_contexts`].
    pub fn changes(&self, new: &PolicySet) -> Vec<String> {
        describe_changes(&self.current(), new, &self.directory)
    }

    pub fn current(&self) -> Arc<PolicySet> {
        match self.current.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Puts `set` in force; returns the version it replaced.
    pub fn install(&self, set: PolicySet) -> String {
        let set = Arc::new(set);
        let mut slot = match self.current.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        let old = slot.version().to_owned();
        *slot = set;
        old
    }

    /// Puts `set` in force (the caller has validated it and decided it may).
    pub fn activate(&self, set: PolicySet) -> Reloaded {
        let version = set.version().to_owned();
        let policies = set.policy_ids().count();
        let previous = self.install(set);
        Reloaded {
            previous,
            version,
            policies,
        }
    }

    /// The policy view of a user, from the directory (a user the config
    /// gives no attributes is an employee of no team, not on call; an
    /// external principal is a `vendor` with their sponsor).
    pub fn user_facts(&self, user: &User) -> UserFacts {
        match self.directory.users.get(&user.id) {
            Some(known) => {
                UserFacts::from_user(user, &known.team, &known.employment, known.on_call)
            }
            None => UserFacts::from_user(user, "", "employee", false),
        }
    }

    /// What an ordinary request by `user` for `entitlement` would meet
    /// under `set` ([`typical_ask`]): `None` when the policies would deny
    /// it, or when `user` is an external principal and it is not open to
    /// externals. Where Airlock lists what someone may ask for.
    pub fn typical_ask(
        &self,
        set: &PolicySet,
        user: &User,
        entitlement: &Entitlement,
    ) -> Option<TypicalAsk> {
        if !entitlement.open_to(user) {
            return None;
        }
        let ask = typical_ask(
            set,
            self.user_facts(user),
            entitlement,
            self.entitlement_facts(&entitlement.id),
        )?;
        Some(TypicalAsk {
            sponsor: user.external.as_ref().map(|t| t.sponsor.clone()),
            ..ask
        })
    }

    pub fn entitlement_facts(&self, id: &EntitlementId) -> EntitlementFacts {
        self.directory
            .entitlements
            .get(id)
            .cloned()
            .unwrap_or_else(|| EntitlementFacts {
                id: id.clone(),
                sensitivity: 0,
                owner_group: None,
            })
    }

    /// The facts of a new request. `open` are the entitlements the
    /// requester holds or has asked for and not yet ended (for
    /// separation-of-duties rules); `mfa_at` is when they last completed
    /// MFA, if known; `now` stands in for a missing start.
    pub fn new_request_facts(
        &self,
        requester: &User,
        entitlement: &Entitlement,
        new: &NewRequest,
        open: BTreeSet<EntitlementId>,
        mfa_at: Option<Timestamp>,
        now: Timestamp,
    ) -> RequestFacts {
        RequestFacts {
            requester: self.user_facts(requester),
            entitlement: self.entitlement_facts(&entitlement.id),
            context: RequestContext {
                duration: new.duration_for(entitlement, requester, now),
                start: StartTime::at(new.start_at.unwrap_or(now)),
                ticket: new.ticket.clone(),
                reason_length: char_count(&new.reason),
                // A time in the future (clock skew) counts as just now.
                mfa_age: mfa_at.map(|at| at.until(now)),
                break_glass: new.break_glass,
                escalated: false,
                other_active_entitlements: open,
            },
        }
    }

    /// The facts of a stored request, as its approvers are judged against.
    pub fn stored_request_facts(&self, requester: &User, r: &AccessRequest) -> RequestFacts {
        RequestFacts {
            requester: self.user_facts(requester),
            entitlement: self.entitlement_facts(&r.entitlement),
            context: RequestContext {
                duration: r.duration,
                start: StartTime::at(r.start_at.unwrap_or(r.created_at)),
                ticket: r.ticket.clone(),
                reason_length: char_count(&r.reason),
                mfa_age: None,
                break_glass: r.break_glass,
                escalated: r.waiting.escalated_at.is_some(),
                other_active_entitlements: BTreeSet::new(),
            },
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub previous: String,
    pub version: String,
    pub policies: usize,
}

fn char_count(text: &str) -> u32 {
    u32::try_from(text.trim().chars().count()).unwrap_or(u32::MAX)
}

/// The core's view of a decision.
pub fn verdict(set: &PolicySet, facts: &RequestFacts) -> Verdict {
    verdict_of(set, facts, Action::Request, set.decide(facts))
}

/// The core's view of the decision on extending the grant `facts`
/// describe by `extension`.
pub fn extension_verdict(set: &PolicySet, facts: &RequestFacts, extension: Duration) -> Verdict {
    let ext = ExtensionFacts {
        extension,
        total: facts.context.duration.saturating_add(extension),
    };
    verdict_of(
        set,
        facts,
        Action::Extend,
        set.decide_extension(facts, &ext),
    )
}

fn verdict_of(
    set: &PolicySet,
    facts: &RequestFacts,
    action: Action,
    decision: Decision,
) -> Verdict {
    let errors = decision.errors().iter().map(ToString::to_string).collect();
    let policies = decision.policies().into_iter().map(str::to_owned).collect();
    let mut waiting = WaitingTimes::default();
    let route = match decision {
        Decision::Denied { reasons, .. } => Route::Denied {
            reasons: reasons
                .iter()
                .map(|r| set.describe_denial_of(action, r, facts))
                .collect(),
        },
        // The core grants a break-glass ask at once when the entitlement
        // allows break-glass (and refuses it otherwise).
        Decision::AutoApproved { .. } | Decision::BreakGlass { .. } => Route::AutoApproved,
        Decision::NeedsApprovals {
            tiers, waiting: w, ..
        } => {
            waiting = w;
            Route::NeedsApprovals(tiers)
        }
    };
    Verdict {
        route,
        policy_version: set.version().to_owned(),
        policies,
        errors,
        waiting,
    }
}

/// The core's view of "may `approver` decide this request?".
pub fn approver_verdict(
    set: &PolicySet,
    approver: &UserFacts,
    facts: &RequestFacts,
) -> ApproverVerdict {
    let outcome = match set.may_approve(approver, facts) {
        ApproveDecision::Allowed { policies, .. } => Ok(policies),
        ApproveDecision::Denied { reasons, .. } => Err(reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    };
    ApproverVerdict {
        outcome,
        policy_version: set.version().to_owned(),
    }
}

/// What an ordinary request ([`RequestContext::typical`]) by this person
/// for this entitlement would meet, for listing what they may ask for (not
/// for deciding): `None` when the policies would deny it.
pub struct TypicalAsk {
    /// How it would be decided.
    pub route: Route,
    /// What it needs besides a duration, each a short phrase: a ticket, a
    /// reason, recent MFA. The entitlement's own rules say some; the rest
    /// are found by asking the policies again without each.
    pub needs: Vec<String>,
    /// For an external principal, their sponsor, who approves too.
    pub sponsor: Option<UserId>,
}

impl TypicalAsk {
    /// How it would be approved, as `airlock entitlements` says it: `auto`,
    /// or each tier (`1 from [approvers] (policy-id)`) joined by `and`.
    /// For an external principal, the sponsor's seat is added, and nothing
    /// is `auto`.
    pub fn approval(&self) -> String {
        let sponsor = self.sponsor.as_ref();
        let seats = |tiers| Seats { tiers, sponsor }.summary();
        match (&self.route, sponsor) {
            (Route::AutoApproved, None) => "auto".to_owned(),
            (Route::AutoApproved, Some(_)) => seats(&[]),
            (Route::NeedsApprovals(tiers), _) => seats(tiers),
            (Route::Denied { .. }, _) => "denied".to_owned(),
        }
    }
}

pub fn typical_ask(
    set: &PolicySet,
    user: UserFacts,
    entitlement: &Entitlement,
    facts: EntitlementFacts,
) -> Option<TypicalAsk> {
    let typical = RequestFacts {
        requester: user,
        entitlement: facts,
        context: RequestContext::typical(),
    };
    let route = verdict(set, &typical).route;
    if matches!(route, Route::Denied { .. }) {
        return None;
    }
    let denied_without = |change: fn(&mut RequestContext)| {
        let mut facts = typical.clone();
        change(&mut facts.context);
        matches!(set.decide(&facts), Decision::Denied { .. })
    };
    let mut needs = Vec::new();
    if entitlement.ticket.required || denied_without(|c| c.ticket = None) {
        needs.push(match &entitlement.ticket.pattern {
            Some(pattern) => format!("ticket matching `{}`", pattern.as_str()),
            None => "ticket".to_owned(),
        });
    }
    if entitlement.reason_required || denied_without(|c| c.reason_length = 0) {
        needs.push("reason".to_owned());
    }
    if denied_without(|c| c.mfa_age = None) {
        needs.push("recent MFA".to_owned());
    }
    Some(TypicalAsk {
        route,
        needs,
        sponsor: None,
    })
}

/// The user ids in the directory, for analyses over everyone.
pub fn everyone(directory: &Directory) -> Vec<UserFacts> {
    directory.users.values().cloned().collect()
}

/// The circumstances a policy change is reviewed in, so a change that only
/// bites off hours, for long grants, without a ticket or in an emergency
/// shows up.
pub fn review_contexts() -> Vec<(&'static str, RequestContext)> {
    let typical = RequestContext::typical();
    let mut contexts = vec![("an ordinary request", typical.clone())];
    if let Some(start) = StartTime::new(Weekday::Saturday, 3) {
        contexts.push((
            "off hours (Saturday 03:00 UTC)",
            RequestContext {
                start,
                ..typical.clone()
            },
        ));
    }
    contexts.push((
        "for 8 hours",
        RequestContext {
            duration: std::time::Duration::from_secs(8 * 3600),
            ..typical.clone()
        },
    ));
    contexts.push((
        "without a ticket",
        RequestContext {
            ticket: None,
            ..typical.clone()
        },
    ));
    contexts.push((
        "break-glass",
        RequestContext {
            break_glass: true,
            escalated: false,
            ..typical
        },
    ));
    contexts
}

/// Who gains or loses the ability to request, be auto-approved for or
/// approve which entitlement between `old` and `new`, one line each.
pub fn describe_changes(old: &PolicySet, new: &PolicySet, directory: &Directory) -> Vec<String> {
    let contexts = review_contexts();
    let samples: Vec<RequestContext> = contexts.iter().map(|(_, c)| c.clone()).collect();
    let entitlements: Vec<EntitlementFacts> = directory.entitlements.values().cloned().collect();
    airlock_policy::diff(old, new, &everyone(directory), &entitlements, &samples)
        .iter()
        .map(|change| {
            let verb = match change.direction {
                Direction::Gained => "gains",
                Direction::Lost => "loses",
            };
            let when: Vec<&str> = change
                .contexts
                .iter()
                .filter_map(|i| contexts.get(*i).map(|(name, _)| *name))
                .collect();
            format!(
                "`{}` {verb} {} on `{}` ({})",
                change.user,
                change.capability,
                change.entitlement,
                when.join(", ")
            )
        })
        .collect()
}
