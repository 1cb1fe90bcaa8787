//! The catalog (what can be requested, for how long, provisioned by which
//! connector) and the directory (who is in which group). Both are loaded and
//! validated by the shell and handed to the core as plain values. Who may
//! request or approve what is the policy set's business (see `approval`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::drift::DriftPolicy;
use crate::ids::{EntitlementId, GroupName, UserId};
use crate::time::Timestamp;
use crate::token::TokenUse;

/// Administrative capabilities beyond requesting and approving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// May revoke any grant and read everything.
    Admin,
    /// May read every request and the audit log.
    Auditor,
    /// May ask whether anyone holds an entitlement now (`GET /v1/check`):
    /// for applications that gate privileged actions on Airlock's grants.
    Checker,
    /// May post activity seen on a target to a grant's timeline (`POST
    /// /v1/grants/{id}/activity`): for the log shipper of an SSH host.
    Reporter,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            "checker" => Some(Role::Checker),
            "reporter" => Some(Role::Reporter),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Checker => "checker",
            Role::Reporter => "reporter",
        }
    }
}

/// Whether a principal is a person or automation (a service principal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum PrincipalKind {
    #[default]
    Person,
    /// Automation (a deploy job, say): authenticates only with API tokens,
    /// requests under the same policies, never approves anything.
    Service,
}

impl PrincipalKind {
    /// The name policies see (`principal.kind`) and the audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Person => "person",
            PrincipalKind::Service => "service",
        }
    }
}

/// The employment that makes a person an external principal (a vendor):
/// policies see it as `principal.employment`, and the directory's word for
/// it (`employment = "vendor"` in the config, `employeeType` over SCIM).
pub const VENDOR: &str = "vendor";

/// What binds an external principal (a vendor): the internal person who
/// answers for them and when their account ends. Their requests need the
/// sponsor's approval besides whatever the policies ask, their grants end
/// no later than their account, and they end when the sponsor leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub sponsor: UserId,
    pub account_expires: Timestamp,
}

impl External {
    /// Whether the account still stands at `now`: the one rule for an
    /// external account's life, at sign-in and wherever a request of
    /// theirs is made.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.account_expires
    }
}

/// Why what a person was granted under the terms `recorded` (`None`: as
/// one of the organisation's own) cannot stand now that the directory says
/// `current`: they became an external principal (nobody sponsored those
/// grants), stopped being one, their sponsor changed (the one who approved
/// no longer answers for them), or their account now ends earlier. `None`
/// when it stands.
pub fn terms_change(recorded: Option<&External>, current: Option<&External>) -> Option<String> {
    match (recorded, current) {
        (None, None) => None,
        (None, Some(now)) => Some(format!(
            "became an external principal, sponsored by `{}`",
            now.sponsor
        )),
        (Some(_), None) => Some("no longer a sponsored external principal".to_owned()),
        (Some(was), Some(now)) if now.sponsor != was.sponsor => Some(format!(
            "sponsor changed from `{}` to `{}`",
            was.sponsor, now.sponsor
        )),
        (Some(was), Some(now)) if now.account_expires < was.account_expires => Some(format!(
            "account now ends at {}, earlier than {}",
            now.account_expires.to_rfc3339(),
            was.account_expires.to_rfc3339()
        )),
        (Some(_), Some(_)) => None,
    }
}

/// A principal: a person or a service, with their groups and roles as the
/// directory says now, and, when they authenticated with an API token, the
/// token (whose scopes narrow what they may do: `access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub groups: BTreeSet<GroupName>,
    pub roles: BTreeSet<Role>,
    pub kind: PrincipalKind,
    /// The API token this caller authenticated with, if any.
    pub token: Option<TokenUse>,
    /// An external principal's sponsor and account end; `None` for the
    /// organisation's own people and services.
    pub external: Option<External>,
}

impl User {
    /// A person as the directory knows them, not acting through a token.
    pub fn person(id: UserId, groups: BTreeSet<GroupName>, roles: BTreeSet<Role>) -> User {
        User {
            id,
            groups,
            roles,
            kind: PrincipalKind::Person,
            token: None,
            external: None,
        }
    }

    /// This person as an external principal bound by `terms`.
    pub fn sponsored(mut self, terms: External) -> User {
        self.external = Some(terms);
        self
    }

    /// This principal acting through `token`.
    pub fn through(mut self, token: TokenUse) -> User {
        self.token = Some(token);
        self
    }

    pub fn is_service(&self) -> bool {
        self.kind == PrincipalKind::Service
    }

    /// Why this principal's account no longer stands at `now` (an external
    /// principal past their account's end), if it does not.
    pub fn account_ended(&self, now: Timestamp) -> Option<String> {
        let terms = self.external.as_ref().filter(|t| !t.is_live(now))?;
        Some(format!(
            "the account `{}` ended at {} (an external principal sponsored by `{}`)",
            self.id,
            terms.account_expires.to_rfc3339(),
            terms.sponsor
        ))
    }

    pub fn in_any(&self, groups: &BTreeSet<GroupName>) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Whether a ticket reference is required, and what it must look like.
#[derive(Debug, Clone)]
pub struct TicketRule {
    pub required: bool,
    pub pattern: Option<TicketPattern>,
}

/// A pattern the whole ticket reference must match (it is anchored at both
/// ends, so `INC-[0-9]+` does not accept `xINC-1 junk`).
#[derive(Debug, Clone)]
pub struct TicketPattern {
    source: String,
    regex: regex::Regex,
}

impl TicketPattern {
    pub fn new(source: &str) -> Result<TicketPattern, regex::Error> {
        Ok(TicketPattern {
            source: source.to_owned(),
            regex: regex::Regex::new(&format!("^(?:{source})$"))?,
        })
    }

    /// The pattern as the author wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, ticket: &str) -> bool {
        self.regex.is_match(ticket)
    }
}

/// Something a user can request for a limited time.
#[derive(Debug, Clone)]
pub struct Entitlement {
    pub id: EntitlementId,
    pub description: String,
    pub max_duration: Duration,
    pub default_duration: Duration,
    pub reason_required: bool,
    pub ticket: TicketRule,
    /// Name of the connector (configured in the shell) that provisions it.
    pub connector: String,
    /// What reconciliation does about holders of its connector's access
    /// that no grant explains.
    pub drift: DriftPolicy,
    /// How long a request may wait for its approvers before they are
    /// reminded, others are asked too, or it times out.
    pub waiting: WaitingTimes,
    /// Emergency access, when the entitlement allows it at all.
    pub break_glass: Option<BreakGlassRules>,
    /// How much harm its access can do in the wrong hands: the base of the
    /// standing-privilege report's risk rating.
    pub sensitivity: crate::standing::Sensitivity,
    /// Whether external principals (vendors) may ask for it at all; the
    /// policies decide the rest, and the sponsor approves too.
    pub open_to_externals: bool,
}

impl Entitlement {
    /// Whether `user` may ask for it at all as far as who they are goes:
    /// anyone, but an external principal only when it is open to externals.
    pub fn open_to(&self, user: &User) -> bool {
        user.external.is_none() || self.open_to_externals
    }

    /// The longest a grant of it may last in all: its break-glass maximum
    /// for a break-glass use (extensions included), else its maximum.
    pub fn max_duration_for(&self, break_glass: bool) -> Duration {
        match (&self.break_glass, break_glass) {
            (Some(rules), true) => rules.max_duration,
            _ => self.max_duration,
        }
    }
}

/// Break-glass: in an emergency the access is granted at once, without
/// waiting for approvers (policies still decide who may ask, and may forbid
/// it), for a short time, with a reason, and every use is reviewed
/// afterwards by someone in `review_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassRules {
    /// Shorter than the entitlement's own maximum, as a rule.
    pub max_duration: Duration,
    /// Whose members judge each use (never the person who used it).
    pub review_by: BTreeSet<GroupName>,
    /// Counted from the request: a use still unreviewed then is overdue,
    /// the security channel hears of it, and `escalate_to` may review too.
    pub review_within: Duration,
    pub escalate_to: BTreeSet<GroupName>,
}

/// Acceptable waiting times for a request routed to approvers, counted from
/// when it was made. Unset: no reminder, no escalation, the server's
/// `pending_timeout`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitingTimes {
    pub remind_after: Option<Duration>,
    /// After this, the members of `escalate_to` may approve too.
    pub escalate_after: Option<Duration>,
    pub escalate_to: BTreeSet<GroupName>,
    pub timeout: Option<Duration>,
}

impl WaitingTimes {
    /// These times with every one `policy` sets taken from it instead (an
    /// escalation together with its groups).
    pub fn overridden_by(&self, policy: &WaitingTimes) -> WaitingTimes {
        let (escalate_after, escalate_to) = match policy.escalate_after {
            Some(after) => (Some(after), policy.escalate_to.clone()),
            None => (self.escalate_after, self.escalate_to.clone()),
        };
        WaitingTimes {
            remind_after: policy.remind_after.or(self.remind_after),
            escalate_after,
            escalate_to,
            timeout: policy.timeout.or(self.timeout),
        }
    }

    /// The times of several routing policies together: the soonest of each
    /// step, escalating to every group any of the soonest escalations names.
    pub fn soonest(all: &[WaitingTimes]) -> WaitingTimes {
        let min = |f: fn(&WaitingTimes) -> Option<Duration>| all.iter().filter_map(f).min();
        let escalate_after = min(|w| w.escalate_after);
        WaitingTimes {
            remind_after: min(|w| w.remind_after),
            escalate_after,
            escalate_to: all
                .iter()
                .filter(|w| w.escalate_after.is_some() && w.escalate_after == escalate_after)
                .flat_map(|w| w.escalate_to.iter().cloned())
                .collect(),
            timeout: min(|w| w.timeout),
        }
    }
}

/// Everything the core needs to know about users and entitlements.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// People and service principals.
    pub users: BTreeMap<UserId, User>,
    pub entitlements: BTreeMap<EntitlementId, Entitlement>,
    /// Each service principal's owners: the people who may manage its API
    /// tokens (besides admins).
    pub service_owners: BTreeMap<UserId, BTreeSet<UserId>>,
    /// Entitlements asked for together by name (`[bundles.NAME]`).
    pub bundles: BTreeMap<String, Bundle>,
}

/// Entitlements an operator put together under one name, asked for
/// together (see `request::submit_bundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub name: String,
    pub description: String,
    /// At least two, each once, in the order the parts are made.
    pub entitlements: Vec<EntitlementId>,
}

impl Catalog {
    pub fn user(&self, id: &UserId) -> Option<&User> {
        self.users.get(id)
    }

    /// The owners of service `id` (empty for a person or an unknown id).
    pub fn owners_of(&self, id: &UserId) -> Vec<UserId> {
        self.service_owners
            .get(id)
            .map(|o| o.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn entitlement(&self, id: &EntitlementId) -> Option<&Entitlement> {
        self.entitlements.get(id)
    }
}
