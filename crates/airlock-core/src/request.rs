//! The access request lifecycle as a pure state machine.
//!
//! ```text
//! pending ──approve(N)──▶ approved ──grant ok──▶ active ──▶ expired | released | revoked
//!    │                      │  (scheduled until start_at)
//!    └─▶ denied | cancelled | timed_out     approved ──grant fails──▶ failed
//! ```
//!
//! [`submit`] creates a request and [`apply`] moves one along; both take `now`
//! and return a [`Transition`]: the next request value, the connector calls
//! to make ([`Effect`]) and the audit events. The shell stores the request and
//! the events in one transaction, then performs the effects and reports each
//! result back as a command.
//!
//! Connector work is modelled as at most one outstanding [`ConnectorJob`] per
//! request, claimed with a lease and a fencing token: a result whose token is
//! not the current one comes from a superseded attempt and changes nothing,
//! and a revoke never runs while a grant attempt may still be in flight.
//!
//! An active grant may be extended ([`Command::Extend`], an [`Extension`]):
//! granted at once or after its own approval tiers, it becomes a grant job
//! on the active request that re-provisions with the new expiry, and the
//! request's expiry moves only when the target confirmed it. The old expiry
//! keeps counting until then: should it come first, the grant expires as
//! usual and the extension lapses.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::access::{self, RequestAction};
use crate::approval::{qualifying_tiers, ApprovalTier, ApproverVerdict, Route, Seats, Verdict};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::{BreakGlassRules, Entitlement, External, User, WaitingTimes};
use crate::ids::{EntitlementId, GroupName, RequestId, UserId};
use crate::text::{self, TextKind};
use crate::time::{human_duration, Timestamp};

pub mod bundle;
pub use bundle::{apply_bundle, submit_bundle, BundlePart, BundleRef};

/// Where a request is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    /// Approved; provisioning is due at `activates_at` (later = scheduled).
    Approved,
    Active,
    Expired,
    Released,
    Revoked,
    Denied,
    Cancelled,
    TimedOut,
    /// Provisioning failed permanently or ran out of attempts.
    Failed,
}

impl State {
    pub const ALL: [State; 10] = [
        State::Pending,
        State::Approved,
        State::Active,
        State::Expired,
        State::Released,
        State::Revoked,
        State::Denied,
        State::Cancelled,
        State::TimedOut,
        State::Failed,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Pending | State::Approved | State::Active)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Active => "active",
            State::Expired => "expired",
            State::Released => "released",
            State::Revoked => "revoked",
            State::Denied => "denied",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
            State::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// Which connector operation a job performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Grant,
    Revoke,
}

impl JobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Grant => "grant",
            JobAction::Revoke => "revoke",
        }
    }

    pub fn parse(raw: &str) -> Option<JobAction> {
        match raw {
            "grant" => Some(JobAction::Grant),
            "revoke" => Some(JobAction::Revoke),
            _ => None,
        }
    }
}

/// Outstanding connector work for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorJob {
    pub action: JobAction,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the next attempt may start (ignored while claimed).
    pub next_attempt_at: Timestamp,
    /// Set while an attempt is in flight; the lease after which it is presumed
    /// lost (the shell crashed) and may be attempted again.
    pub claimed_until: Option<Timestamp>,
    pub last_error: Option<String>,
}

impl ConnectorJob {
    fn due_now(action: JobAction, now: Timestamp) -> Self {
        Self {
            action,
            attempts: 0,
            next_attempt_at: now,
            claimed_until: None,
            last_error: None,
        }
    }

    fn due_at(&self) -> Timestamp {
        self.claimed_until.unwrap_or(self.next_attempt_at)
    }

    fn in_flight(&self, now: Timestamp) -> bool {
        self.claimed_until.is_some_and(|until| until > now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub approver: UserId,
    pub at: Timestamp,
    pub comment: Option<String>,
    /// Indexes of the tiers the approver's groups qualified for when they
    /// approved (see [`crate::approval`]).
    pub tiers: BTreeSet<u32>,
}

/// One request for one entitlement, and everything that happened to it.
///
/// Fields are public so stores can rebuild the value; only [`submit`] and
/// [`apply`] create or change one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub id: RequestId,
    pub requester: UserId,
    pub entitlement: EntitlementId,
    pub duration: Duration,
    pub reason: String,
    pub ticket: Option<String>,
    pub start_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub state: State,
    /// Approval tiers the policy set required at request time; empty when
    /// auto-approved or denied.
    pub approval_tiers: Vec<ApprovalTier>,
    pub approvals: Vec<Approval>,
    /// Version (content hash) of the policy set that decided the request.
    pub policy_version: String,
    /// Declared an emergency: policies may route it differently, and the
    /// record says so.
    pub break_glass: bool,
    /// The requester's SSH public key, for connectors that issue certificates.
    pub public_key: Option<String>,
    /// For an external principal's request, their sponsor and account end
    /// as they stood when they asked: the sponsor's seat is added to the
    /// tiers, and no deadline of it falls after the account's end.
    pub external: Option<External>,
    /// A non-secret artifact the target issued for the grant (an SSH certificate).
    pub certificate: Option<String>,
    pub pending_deadline: Timestamp,
    pub decided_at: Option<Timestamp>,
    /// When provisioning is due; set on approval.
    pub activates_at: Option<Timestamp>,
    /// When access ends; fixed on approval so targets can enforce it.
    pub expires_at: Option<Timestamp>,
    pub granted_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub ended_by: Option<UserId>,
    /// Why it ended: deny or revoke reason, failure message.
    pub end_note: Option<String>,
    pub job: Option<ConnectorJob>,
    /// Fencing token: bumped on every claim; results carry the token they ran with.
    pub claim_token: u64,
    /// When the target confirmed the grant was removed.
    pub deprovisioned_at: Option<Timestamp>,
    /// Reminders and escalation while it waits for approvers.
    pub waiting: WaitingPlan,
    /// The review every break-glass use gets afterwards; `None` for any
    /// other request (and for a break-glass request the policies denied).
    pub review: Option<Review>,
    /// The latest extension asked for, whatever became of it (earlier ones
    /// are in the audit record).
    pub extension: Option<Extension>,
    /// How often the grant was checked and when last. The shell records
    /// it; no transition reads or changes it.
    pub checks: CheckActivity,
    /// The bundle this request is a part of, if any: its parts are decided,
    /// provisioned and ended together ([`bundle`]).
    pub bundle: Option<BundleRef>,
}

/// How often a grant was checked (`GET /v1/check`: does this principal
/// hold it now?) and when last. Checks are counted in memory and added to
/// the stored request in batches, not audited one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckActivity {
    pub count: u64,
    pub last_at: Option<Timestamp>,
}

impl CheckActivity {
    /// `self` and `more` checks counted together (the later last check).
    pub fn and(self, more: CheckActivity) -> CheckActivity {
        CheckActivity {
            count: self.count.saturating_add(more.count),
            last_at: self.last_at.max(more.last_at),
        }
    }
}

/// Whether a request in `state` with `expires_at` holds its access at
/// `now`: active and not yet at its expiry (at the expiry the scheduler
/// ends it, whether or not it has run yet). The one rule for "does this
/// person hold it right now", on a request value or on the few columns the
/// check endpoint reads.
pub fn holds_access(state: State, expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    state == State::Active && expires_at.is_some_and(|e| now < e)
}

/// The after-the-fact review of a break-glass use, fixed when the access
/// was granted from the entitlement's [`BreakGlassRules`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Whose members may judge the use.
    pub reviewers: BTreeSet<GroupName>,
    /// Unreviewed by then, the review is overdue: it escalates.
    pub due_at: Timestamp,
    /// Who may judge it too once it is overdue.
    pub escalate_to: BTreeSet<GroupName>,
    pub escalated_at: Option<Timestamp>,
    pub verdict: Option<ReviewVerdict>,
}

/// A reviewer's judgement of one break-glass use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewVerdict {
    pub reviewer: UserId,
    pub at: Timestamp,
    pub acceptable: bool,
    pub comment: String,
}

impl Review {
    fn for_use(rules: &BreakGlassRules, now: Timestamp) -> Review {
        Review {
            reviewers: rules.review_by.clone(),
            due_at: now.plus(rules.review_within),
            escalate_to: rules.escalate_to.clone(),
            escalated_at: None,
            verdict: None,
        }
    }

    /// Still waiting for a reviewer's verdict.
    pub fn is_open(&self) -> bool {
        self.verdict.is_none()
    }

    /// Open past its due time.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.is_open() && now >= self.due_at
    }

    /// The groups whose members may judge the use now: the reviewers, and
    /// the escalation groups once it escalated.
    pub fn groups(&self) -> BTreeSet<GroupName> {
        let mut groups = self.reviewers.clone();
        if self.escalated_at.is_some() {
            groups.extend(self.escalate_to.iter().cloned());
        }
        groups
    }

    /// When the scheduler must escalate it, if it still must.
    fn next_due(&self) -> Option<Timestamp> {
        (self.is_open() && self.escalated_at.is_none()).then_some(self.due_at)
    }
}

/// Where an extension stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtensionState {
    /// Waiting for its approval tiers.
    Pending,
    /// Granted; the target is being told the new expiry (the request's
    /// grant job).
    Provisioning,
    /// The target confirmed: the request's expiry moved.
    Extended,
    Denied,
    /// The target refused the new expiry, or attempts ran out: the old one stands.
    Failed,
    /// The grant ended before the extension took effect.
    Lapsed,
}

impl ExtensionState {
    pub const ALL: [ExtensionState; 6] = [
        ExtensionState::Pending,
        ExtensionState::Provisioning,
        ExtensionState::Extended,
        ExtensionState::Denied,
        ExtensionState::Failed,
        ExtensionState::Lapsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExtensionState::Pending => "pending",
            ExtensionState::Provisioning => "provisioning",
            ExtensionState::Extended => "extended",
            ExtensionState::Denied => "denied",
            ExtensionState::Failed => "failed",
            ExtensionState::Lapsed => "lapsed",
        }
    }

    pub fn parse(raw: &str) -> Option<ExtensionState> {
        ExtensionState::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Still to be decided or carried out: another extension must wait.
    pub fn is_outstanding(self) -> bool {
        matches!(self, ExtensionState::Pending | ExtensionState::Provisioning)
    }
}

/// More time asked for on an active grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// How much longer.
    pub by: Duration,
    pub reason: String,
    pub requested_at: Timestamp,
    pub state: ExtensionState,
    /// Tiers the policy set required; empty when granted at once or denied.
    pub approval_tiers: Vec<ApprovalTier>,
    pub approvals: Vec<Approval>,
    /// Version of the policy set that decided it.
    pub policy_version: String,
    /// The expiry when it was asked for, and the one it asks for.
    pub previous_expires_at: Timestamp,
    pub expires_at: Timestamp,
    /// When it was granted, denied, or lapsed, or the target confirmed or refused it.
    pub decided_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Why it was denied or failed.
    pub note: Option<String>,
}

impl Extension {
    /// Every group whose members may count toward one of its tiers.
    pub fn approver_groups(&self) -> BTreeSet<GroupName> {
        tier_groups(&self.approval_tiers)
    }
}

/// Every group of every tier.
fn tier_groups(tiers: &[ApprovalTier]) -> BTreeSet<GroupName> {
    tiers
        .iter()
        .flat_map(|t| t.groups.iter().cloned())
        .collect()
}

/// What happens while a request waits for its approvers, fixed when it is
/// made from its entitlement's [`WaitingTimes`] (so a config change never
/// moves a deadline of a request already waiting), and what has happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitingPlan {
    /// When the approvers are reminded, and whether they were.
    pub remind_at: Option<Timestamp>,
    pub reminded_at: Option<Timestamp>,
    /// When the members of `escalate_to` may approve too, and whether they
    /// were asked.
    pub escalate_at: Option<Timestamp>,
    pub escalate_to: BTreeSet<GroupName>,
    pub escalated_at: Option<Timestamp>,
}

impl WaitingPlan {
    /// Deadlines for a request made `now` that waits for approvers until
    /// `deadline`; a step due only at or after the deadline never happens.
    fn for_request(times: &WaitingTimes, now: Timestamp, deadline: Timestamp) -> WaitingPlan {
        let before_deadline =
            |after: Option<Duration>| after.map(|d| now.plus(d)).filter(|at| *at < deadline);
        let escalate_at =
            before_deadline(times.escalate_after).filter(|_| !times.escalate_to.is_empty());
        WaitingPlan {
            remind_at: before_deadline(times.remind_after),
            reminded_at: None,
            escalate_to: if escalate_at.is_some() {
                times.escalate_to.clone()
            } else {
                BTreeSet::new()
            },
            escalate_at,
            escalated_at: None,
        }
    }

    /// The next step still to take, if any.
    fn next_due(&self) -> Option<Timestamp> {
        let remind = self.remind_at.filter(|_| self.reminded_at.is_none());
        let escalate = self.escalate_at.filter(|_| self.escalated_at.is_none());
        remind.into_iter().chain(escalate).min()
    }
}

impl AccessRequest {
    /// When the scheduler must next look at this request, if ever.
    pub fn next_due(&self) -> Option<Timestamp> {
        let review_due = self.review.as_ref().and_then(Review::next_due);
        let lifecycle_due = self.lifecycle_due();
        match (lifecycle_due, review_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next deadline or connector work of the lifecycle itself.
    fn lifecycle_due(&self) -> Option<Timestamp> {
        let job_due = self.job.as_ref().map(ConnectorJob::due_at);
        match self.state {
            State::Pending => Some(
                self.waiting
                    .next_due()
                    .map_or(self.pending_deadline, |w| w.min(self.pending_deadline)),
            ),
            // A retry scheduled past the grant window must not delay failing it.
            State::Approved => match (&self.job, self.expires_at) {
                // In flight: nothing can happen before the attempt reports or its lease lapses.
                (Some(job), _) if job.claimed_until.is_some() => job_due,
                (_, Some(e)) => Some(job_due.map_or(e, |j| j.min(e))),
                (_, None) => job_due,
            },
            // A re-grant for an extension never delays the expiry in force.
            State::Active => match (job_due, self.expires_at) {
                (Some(j), Some(e)) => Some(j.min(e)),
                (j, e) => e.or(j),
            },
            _ => job_due,
        }
    }

    /// Every group whose members may count toward some tier: the
    /// request's and its extension's (so an extension's approvers may see
    /// the request they decide).
    pub fn approver_groups(&self) -> BTreeSet<GroupName> {
        let mut groups = tier_groups(&self.approval_tiers);
        if let Some(e) = &self.extension {
            groups.extend(e.approver_groups());
        }
        groups
    }

    /// The extension waiting for approvers, if any.
    pub fn extension_awaiting_approval(&self) -> Option<&Extension> {
        self.extension
            .as_ref()
            .filter(|e| self.state == State::Active && e.state == ExtensionState::Pending)
    }

    /// The expiry a connector call is made with: for a grant, the
    /// extension's while one is being carried out, else the request's; for
    /// a revoke, the latest any attempt may have provisioned (an extension
    /// that lapsed or failed may have reached the target), so removal
    /// covers it.
    pub fn provisioned_expiry(&self) -> Option<Timestamp> {
        let extended = self.extension.as_ref().filter(|e| {
            matches!(
                e.state,
                ExtensionState::Provisioning | ExtensionState::Lapsed | ExtensionState::Failed
            )
        });
        match extended {
            Some(e) if self.state == State::Active && e.state == ExtensionState::Provisioning => {
                Some(e.expires_at)
            }
            Some(e) if self.state.is_terminal() => Some(
                self.expires_at
                    .map_or(e.expires_at, |x| x.max(e.expires_at)),
            ),
            _ => self.expires_at,
        }
    }

    /// Approvals needed in all (one per seat of every tier, and the
    /// sponsor's).
    pub fn approvals_needed(&self) -> u32 {
        self.seats().needed()
    }

    /// The sponsor of an external requester, whose approval every request
    /// and extension of theirs needs.
    pub fn sponsor(&self) -> Option<&UserId> {
        self.external.as_ref().map(|e| &e.sponsor)
    }

    /// The seats the request needs: its tiers' and its sponsor's.
    pub fn seats(&self) -> Seats<'_> {
        Seats {
            tiers: &self.approval_tiers,
            sponsor: self.sponsor(),
        }
    }

    /// The seats the extension waiting for approvers needs, if one waits.
    pub fn extension_seats(&self) -> Option<Seats<'_>> {
        self.extension.as_ref().map(|e| Seats {
            tiers: &e.approval_tiers,
            sponsor: self.sponsor(),
        })
    }

    /// The sponsor, while what waits for approvers (the request, or its
    /// extension) waits for them: they have not approved it yet. (Stored
    /// beside the row for the inbox's query, like the approver groups.)
    pub fn awaits_sponsor(&self) -> Option<&UserId> {
        let sponsor = self.sponsor()?;
        let approvals = match self.extension_awaiting_approval() {
            Some(e) => &e.approvals,
            None if self.state == State::Pending => &self.approvals,
            None => return None,
        };
        (!approvals.iter().any(|a| &a.approver == sponsor)).then_some(sponsor)
    }

    /// How long an extension by `by` may really add: all of it, or for an
    /// external principal only up to the end of their account (zero when
    /// the grant already ends then). What the policies judge and the
    /// state machine grants.
    pub fn extension_within_account(&self, by: Duration) -> Duration {
        match (&self.external, self.expires_at) {
            (Some(terms), Some(expires)) => by.min(expires.until(terms.account_expires)),
            _ => by,
        }
    }

    /// Approved but not yet due to start.
    pub fn is_scheduled(&self, now: Timestamp) -> bool {
        self.state == State::Approved && self.activates_at.is_some_and(|t| t > now)
    }

    /// Who may see this request: its requester, its eligible approvers (a
    /// member of a group of any of its tiers), admins and auditors. The
    /// store's request lists mirror this in SQL (`store::sql`), and a
    /// conformance test checks the two agree.
    pub fn visible_to(&self, user: &User) -> bool {
        access::may_see(user, self)
    }

    /// Whether this request waits for `user`'s approval: pending (or active
    /// with an extension waiting for approvers), not their own, one of the
    /// approver groups of what waits is theirs, and they have not approved
    /// it yet. (Mirrored in SQL like [`AccessRequest::visible_to`].)
    pub fn awaits_approval_of(&self, user: &User) -> bool {
        if self.awaits_sponsor() == Some(&user.id) && access::sponsors(user, self) {
            return true;
        }
        let (groups, approvals) = match self.extension_awaiting_approval() {
            Some(e) => (e.approver_groups(), &e.approvals),
            None if self.state == State::Pending => (self.approver_groups(), &self.approvals),
            None => return false,
        };
        user.id != self.requester
            && user.in_any(&groups)
            && !approvals.iter().any(|a| a.approver == user.id)
    }

    /// The request ended but the target has not confirmed removal in time.
    pub fn revocation_overdue(&self, now: Timestamp, grace: Duration) -> bool {
        match (&self.job, self.ended_at) {
            (Some(job), Some(ended)) if job.action == JobAction::Revoke => now > ended.plus(grace),
            _ => false,
        }
    }

    /// Whether the requester holds the access at `now` ([`holds_access`]).
    pub fn holds_access(&self, now: Timestamp) -> bool {
        holds_access(self.state, self.expires_at, now)
    }

    /// Whether the target may currently hold (or soon receive) this grant.
    pub fn may_hold_access(&self) -> bool {
        self.state == State::Active
            || self
                .job
                .as_ref()
                .is_some_and(|j| j.action == JobAction::Revoke)
    }
}

/// Timing knobs of the lifecycle; validated by the shell's config loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleSettings {
    /// A pending request times out after this long.
    pub pending_timeout: Duration,
    /// How long a claimed connector attempt is presumed in flight. Must exceed
    /// the connector's call timeout.
    pub claim_lease: Duration,
    /// Grant attempts before the request fails.
    pub grant_max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How far in the future `start_at` may be.
    pub max_start_delay: Duration,
    /// How far in the past `start_at` may be (clock skew between client and server).
    pub start_skew: Duration,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            pending_timeout: Duration::from_secs(24 * 3600),
            claim_lease: Duration::from_secs(60),
            grant_max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            max_start_delay: Duration::from_secs(30 * 24 * 3600),
            start_skew: Duration::from_secs(60),
        }
    }
}

impl LifecycleSettings {
    /// Exponential backoff after `attempts` failed attempts, capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        crate::time::capped_backoff(self.retry_base, self.retry_cap, attempts)
    }
}

/// Why a command or a new request was refused. Nothing changes when one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Forbidden(String),
    /// The request is not in a state where this command applies.
    #[error("{0}")]
    Conflict(String),
}

impl Rejection {
    /// The same refusal, its message rewritten by `f` (to say where it
    /// came from).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Rejection {
        match self {
            Rejection::Invalid { field, message } => Rejection::Invalid {
                field,
                message: f(message),
            },
            Rejection::Forbidden(m) => Rejection::Forbidden(f(m)),
            Rejection::Conflict(m) => Rejection::Conflict(f(m)),
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Rejection {
    Rejection::Invalid {
        field,
        message: message.into(),
    }
}

/// A connector call the shell must make, fenced by `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub action: JobAction,
    pub token: u64,
}

/// The outcome of a successful submit or command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub request: AccessRequest,
    pub effects: Vec<Effect>,
    pub events: Vec<AuditEvent>,
    /// Messages to send because of this change, written with it
    /// ([`crate::notify::plan`] fills them in; the state machine leaves them
    /// empty, since routing is not its concern).
    pub notifications: Vec<crate::notify::Notification>,
}

/// What a requester asks for, parsed at the edge.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: RequestId,
    pub duration: Option<Duration>,
    pub reason: String,
    pub ticket: Option<String>,
    pub start_at: Option<Timestamp>,
    pub break_glass: bool,
    pub public_key: Option<String>,
}

impl NewRequest {
    /// How long the access would last if granted at once: what
    /// [`NewRequest::effective_duration`] says, for an external principal
    /// cut so it ends no later than their account (zero when it would
    /// start at or after that). What the policies judge and the request
    /// records.
    pub fn duration_for(
        &self,
        entitlement: &Entitlement,
        requester: &User,
        now: Timestamp,
    ) -> Duration {
        let asked = self.effective_duration(entitlement);
        match &requester.external {
            Some(terms) => {
                let start = self.start_at.map_or(now, |s| s.max(now));
                asked.min(start.until(terms.account_expires))
            }
            None => asked,
        }
    }

    /// The duration asked for, or the entitlement's default (for
    /// break-glass, no longer than its break-glass maximum).
    pub fn effective_duration(&self, entitlement: &Entitlement) -> Duration {
        let emergency = entitlement
            .break_glass
            .as_ref()
            .filter(|_| self.break_glass);
        match (self.duration, emergency) {
            (Some(asked), _) => asked,
            (None, Some(rules)) => entitlement.default_duration.min(rules.max_duration),
            (None, None) => entitlement.default_duration,
        }
    }
}

pub const MAX_REASON_LEN: usize = 2000;
pub const MAX_TICKET_LEN: usize = 200;
/// An approver's comment: as long as a reason.
pub const MAX_COMMENT_LEN: usize = MAX_REASON_LEN;
/// Generous for any OpenSSH public key line (RSA 16384 is about 2.8 kB).
pub const MAX_PUBLIC_KEY_LEN: usize = 8192;

/// Creates a request. `open_request` is the requester's existing unfinished
/// request for the same entitlement, if any: two overlapping grants of one
/// entitlement would let the first revocation cut the second short.
/// `verdict` is the policy set's decision; a request it denies is still
/// recorded (as denied, with the policies that denied it), while malformed
/// input is rejected and nothing is recorded.
pub fn submit(
    new: NewRequest,
    requester: &User,
    entitlement: &Entitlement,
    open_request: Option<&RequestId>,
    verdict: Verdict,
    settings: &LifecycleSettings,
    now: Timestamp,
) -> Result<Transition, Rejection> {
    access::may(requester, access::Capability::Request)?;
    let checked = check_new(new, requester, entitlement, settings, now)?;
    // Malformed input is refused as such before any conflict is looked at.
    if let Some(open) = open_request {
        return Err(Rejection::Conflict(format!(
            "`{}` already has an open request `{open}` for `{}`",
            requester.id, entitlement.id
        )));
    }
    create(
        checked,
        requester,
        entitlement,
        verdict,
        None,
        settings,
        now,
    )
}

/// A new request's input, checked against its entitlement's rules.
struct Checked<'a> {
    id: RequestId,
    /// The duration asked for; `duration` is what is granted (an external
    /// principal's cut to their account's end).
    asked: Duration,
    duration: Duration,
    emergency: Option<&'a BreakGlassRules>,
    break_glass: bool,
    reason: String,
    ticket: Option<String>,
    start_at: Option<Timestamp>,
    public_key: Option<String>,
}

/// Checks what `requester` asks of `entitlement`: their account still
/// standing, the duration within its maximum (and its break-glass maximum;
/// an external principal's cut to their account's end), its reason and
/// ticket rules, the start time and the free text.
fn check_new<'a>(
    new: NewRequest,
    requester: &User,
    entitlement: &'a Entitlement,
    settings: &LifecycleSettings,
    now: Timestamp,
) -> Result<Checked<'a>, Rejection> {
    if let Some(why) = requester.account_ended(now) {
        return Err(Rejection::Forbidden(why));
    }
    let asked = new.effective_duration(entitlement);
    if asked < Duration::from_secs(1) {
        return Err(invalid("duration", "must be at least 1s"));
    }
    // An external principal's grant ends no later than their account.
    let duration = new.duration_for(entitlement, requester, now);
    if duration > entitlement.max_duration {
        return Err(invalid(
            "duration",
            format!(
                "must not exceed the maximum of {} for `{}`",
                human_duration(entitlement.max_duration),
                entitlement.id
            ),
        ));
    }
    if new.break_glass && requester.external.is_some() {
        return Err(Rejection::Forbidden(format!(
            "`{}` is an external principal and may not use break-glass: ask without it, and their sponsor approves",
            requester.id
        )));
    }
    let emergency = if new.break_glass {
        let rules = entitlement.break_glass.as_ref().ok_or_else(|| {
            invalid(
                "break_glass",
                format!(
                    "`{}` does not allow break-glass access; ask for it without break-glass",
                    entitlement.id
                ),
            )
        })?;
        if duration > rules.max_duration {
            return Err(invalid(
                "duration",
                format!(
                    "break-glass access to `{}` lasts at most {}",
                    entitlement.id,
                    human_duration(rules.max_duration)
                ),
            ));
        }
        Some(rules)
    } else {
        None
    };
    let reason = user_text("reason", &new.reason, TextKind::Note, MAX_REASON_LEN)?;
    if emergency.is_some() && reason.is_empty() {
        return Err(invalid("reason", "is required for break-glass access"));
    }
    if entitlement.reason_required && reason.is_empty() {
        return Err(invalid("reason", "is required for this entitlement"));
    }
    let ticket = new
        .ticket
        .map(|t| user_text("ticket", &t, TextKind::Line, MAX_TICKET_LEN))
        .transpose()?
        .filter(|t| !t.is_empty());
    match &ticket {
        None if entitlement.ticket.required => {
            return Err(invalid("ticket", "is required for this entitlement"))
        }
        Some(t) => {
            if let Some(pattern) = &entitlement.ticket.pattern {
                if !pattern.is_match(t) {
                    return Err(invalid(
                        "ticket",
                        format!("`{t}` does not match the pattern `{}`", pattern.as_str()),
                    ));
                }
            }
        }
        None => {}
    }
    if let Some(start) = new.start_at {
        if start < now.minus(settings.start_skew) {
            return Err(invalid("start_at", "is in the past"));
        }
        if start > now.plus(settings.max_start_delay) {
            return Err(invalid(
                "start_at",
                format!(
                    "must be within {} from now",
                    human_duration(settings.max_start_delay)
                ),
            ));
        }
    }
    if let (Some(terms), true) = (&requester.external, duration < Duration::from_secs(1)) {
        return Err(invalid(
            "start_at",
            format!(
                "the account of `{}` ends at {}, before this access would start",
                requester.id,
                terms.account_expires.to_rfc3339()
            ),
        ));
    }
    let public_key = new
        .public_key
        .map(|k| user_text("public_key", &k, TextKind::Line, MAX_PUBLIC_KEY_LEN))
        .transpose()?
        .filter(|k| !k.is_empty());
    Ok(Checked {
        id: new.id,
        asked,
        duration,
        emergency,
        break_glass: new.break_glass,
        reason,
        ticket,
        start_at: new.start_at,
        public_key,
    })
}

/// Records a checked request as `verdict` routes it (an entitlement closed
/// to external principals denies theirs).
fn create(
    checked: Checked<'_>,
    requester: &User,
    entitlement: &Entitlement,
    verdict: Verdict,
    bundle: Option<BundleRef>,
    settings: &LifecycleSettings,
    now: Timestamp,
) -> Result<Transition, Rejection> {
    let Checked {
        id,
        asked,
        duration,
        emergency,
        break_glass,
        reason,
        ticket,
        start_at,
        public_key,
    } = checked;
    let verdict = closed_to_externals(verdict, requester, entitlement);
    // Break-glass waits for nobody: the policies decide only whether the
    // person may ask, and the review afterwards replaces the approvals.
    let approval_tiers = match &verdict.route {
        Route::NeedsApprovals(_) if emergency.is_some() => Vec::new(),
        route => routed_tiers(route, "request")?,
    };
    let times = entitlement.waiting.overridden_by(&verdict.waiting);
    let mut pending_deadline = now.plus(times.timeout.unwrap_or(settings.pending_timeout));
    // Nobody approves what an ended account could not hold.
    if let Some(terms) = &requester.external {
        pending_deadline = pending_deadline.min(terms.account_expires);
    }
    let waits_for_sponsor =
        requester.external.is_some() && !matches!(verdict.route, Route::Denied { .. });
    let waiting = if approval_tiers.is_empty() && !waits_for_sponsor {
        WaitingPlan::default()
    } else {
        WaitingPlan::for_request(&times, now, pending_deadline)
    };
    let mut request = AccessRequest {
        id,
        requester: requester.id.clone(),
        entitlement: entitlement.id.clone(),
        duration,
        reason,
        ticket,
        start_at,
        created_at: now,
        state: State::Pending,
        approval_tiers,
        approvals: Vec::new(),
        policy_version: verdict.policy_version.clone(),
        break_glass,
        public_key,
        external: requester.external.clone(),
        certificate: None,
        pending_deadline,
        decided_at: None,
        activates_at: None,
        expires_at: None,
        granted_at: None,
        ended_at: None,
        ended_by: None,
        end_note: None,
        job: None,
        claim_token: 0,
        deprovisioned_at: None,
        waiting,
        review: None,
        extension: None,
        checks: CheckActivity::default(),
        bundle,
    };
    let mut out = Outcome::default();
    let mut details = BTreeMap::from([
        (
            "duration_seconds".to_owned(),
            duration.as_secs().to_string(),
        ),
        ("reason".to_owned(), request.reason.clone()),
    ]);
    if let Some(t) = &request.ticket {
        details.insert("ticket".to_owned(), t.clone());
    }
    if let Some(s) = request.start_at {
        details.insert("start_at".to_owned(), s.to_rfc3339());
    }
    if request.break_glass {
        details.insert("break_glass".to_owned(), "true".to_owned());
    }
    if let Some(b) = &request.bundle {
        bundle::details(b, &mut details);
    }
    if let Some(terms) = &request.external {
        details.insert("sponsor".to_owned(), terms.sponsor.to_string());
        details.insert(
            "account_expires".to_owned(),
            terms.account_expires.to_rfc3339(),
        );
        if duration < asked {
            details.insert(
                "asked_duration_seconds".to_owned(),
                asked.as_secs().to_string(),
            );
        }
    }
    verdict_details(&verdict, &mut details);
    if emergency.is_some() && !matches!(verdict.route, Route::Denied { .. }) {
        details.insert("decision".to_owned(), "break_glass".to_owned());
    }
    out.event(
        &request,
        now,
        Actor::of(requester),
        AuditAction::Requested,
        details,
    );
    match (verdict.route, emergency) {
        (Route::Denied { reasons }, _) => {
            let note = format!("denied by policy: {}", reasons.join("; "));
            request.end(
                State::Denied,
                now,
                None,
                Some(note),
                AuditAction::Denied,
                &mut out,
            );
        }
        (_, Some(rules)) => {
            let review = Review::for_use(rules, now);
            let rule = format!(
                "break-glass: granted at once, to be reviewed by {} before {}",
                join_groups(&review.reviewers),
                review.due_at.to_rfc3339()
            );
            request.review = Some(review);
            request.approve(now, Actor::System, rule, &mut out);
        }
        // The policies approve it; the sponsor still has to.
        (Route::AutoApproved, None) if request.external.is_some() => {}
        (Route::AutoApproved, None) => {
            let rule = format!("auto-approved by policy ({})", verdict.policies.join(","));
            request.approve(now, Actor::System, rule, &mut out);
        }
        (Route::NeedsApprovals(_), None) => {}
    }
    request.settle(now, settings, &mut out);
    Ok(out.finish(request))
}

/// A change requested of an existing request.
///
/// Commands own their facts (the acting user as the directory knows them at
/// this moment) so the shell can hand a decision to its storage writer.
#[derive(Debug, Clone)]
pub enum Command {
    /// `permission` is the policy set's answer for this approver and request.
    Approve {
        approver: User,
        comment: Option<String>,
        permission: ApproverVerdict,
    },
    Deny {
        approver: User,
        reason: String,
        permission: ApproverVerdict,
    },
    /// The requester withdraws a request that has not started.
    Cancel { by: User },
    /// The requester ends their own access early.
    Release { by: User },
    /// An admin ends someone's access.
    Revoke { by: User, reason: String },
    /// The requester asks for `extension` more on their active grant.
    /// `verdict` is the policy set's answer for the extension (its own
    /// action, with the extension and the total as context);
    /// `max_duration` is the entitlement's maximum, which the total never
    /// exceeds.
    Extend {
        by: User,
        extension: Duration,
        reason: String,
        verdict: Verdict,
        max_duration: Duration,
    },
    /// The identity provider withdrew the requester (deactivated, deleted
    /// or renamed by SCIM; `cause` names the operation): whatever the
    /// request's state, it ends now. One that has not started is
    /// cancelled, a grant is revoked (through the usual connector job,
    /// retried and never abandoned). A request already ended stays as it is.
    /// Only the engine sends it.
    Deprovision { cause: String },
    /// The ticket system closed `ticket` (through its signed webhook;
    /// `delivery` names the delivery): the access asked for under it ends
    /// now, as when the identity provider withdraws the requester — a
    /// grant is revoked, one that has not started is cancelled — recorded
    /// as done by the ticket system with the ticket as the cause. A request
    /// already ended stays as it is; one not asked for under the ticket is
    /// refused. Only the engine sends it.
    TicketClosed { ticket: String, delivery: String },
    /// The entitlement's idle limit, applied to an active grant
    /// ([`crate::idle::step`]): with the use the record holds besides the
    /// request's own checks (`reported`) and how late use may reach the
    /// record (`lag`), its holder is warned, or the grant is released
    /// (audited as a release with the cause `idle`), or nothing happens.
    /// Only the engine sends it.
    Idle {
        limit: crate::idle::IdleLimit,
        reported: crate::idle::Reported,
        lag: Duration,
    },
    /// A fact the request's decision may have stood on changed (the
    /// requester left a group; `cause` says which): `before` is the policy
    /// set's answer with the old fact, `after` with the new one. Only when
    /// the change is what turns a permit into a denial does the request end
    /// — a pending one denied, an approved or active grant revoked, with
    /// the cause and the policies' reasons; a request the policies deny
    /// either way for other reasons (facts a re-decision cannot know, such
    /// as the groups in the requester's last token or their last MFA) is
    /// not the change's doing and stays. Approvals already given stand.
    /// Only the engine sends it.
    Redecide {
        before: Verdict,
        after: Verdict,
        cause: String,
    },
    /// A reviewer judges a break-glass use: acceptable or not, and why.
    Review {
        reviewer: User,
        acceptable: bool,
        comment: String,
    },
    /// The scheduler found the request due: time out, expire, start or retry.
    Tick,
    /// The process that made this request's connector attempt in flight has
    /// restarted, so the attempt will never report: its outcome is unknown
    /// now, not only when its lease ends. A grant is retried or cleaned up
    /// at once, and a revoke that waited for the attempt runs at once.
    Restarted,
    JobSucceeded {
        action: JobAction,
        token: u64,
        /// What a grant issued that may be shown again (an SSH certificate).
        certificate: Option<String>,
    },
    JobFailed {
        action: JobAction,
        token: u64,
        error: String,
        retryable: bool,
    },
}

/// Applies `command` to `request` at `now`.
pub fn apply(
    mut request: AccessRequest,
    command: Command,
    settings: &LifecycleSettings,
    now: Timestamp,
) -> Result<Transition, Rejection> {
    let mut out = Outcome::default();
    step(&mut request, &command, settings, now, &mut out)?;
    Ok(out.finish(request))
}

/// [`apply`], adding what happens to `out`.
fn step(
    request: &mut AccessRequest,
    command: &Command,
    settings: &LifecycleSettings,
    now: Timestamp,
    out: &mut Outcome,
) -> Result<(), Rejection> {
    // Deadlines that already passed take effect before anything else, so an
    // approval that arrives after the pending timeout finds the request timed out.
    // Due work is claimed only after the command: claiming first would send a
    // grant out in the same transition that revokes, releases or cancels.
    request.apply_deadlines(now, out);
    match command {
        Command::Approve {
            approver,
            comment,
            permission,
        } if request.extension_awaiting_approval().is_some() => {
            let comment = comment
                .as_deref()
                .map(|c| user_text("comment", c, TextKind::Note, MAX_COMMENT_LEN))
                .transpose()?
                .filter(|c| !c.is_empty());
            request.approve_extension(approver, comment, permission, now, out)?;
        }
        Command::Deny {
            approver,
            reason,
            permission,
        } if request.extension_awaiting_approval().is_some() => {
            let reason = required_note(reason)?;
            request.deny_extension(approver, reason, permission, now, out)?;
        }
        Command::Approve {
            approver,
            comment,
            permission,
        } => {
            let comment = comment
                .as_deref()
                .map(|c| user_text("comment", c, TextKind::Note, MAX_COMMENT_LEN))
                .transpose()?
                .filter(|c| !c.is_empty());
            let seat = request.check_approver(approver, permission, "approve")?;
            let what = format!("`{}`", request.id);
            let mut approvals = request.approvals.clone();
            let filled = add_approval(
                request.seats(),
                &mut approvals,
                approver,
                &comment,
                &seat,
                now,
                &what,
            )?;
            request.approvals = approvals;
            let actor = Actor::of(approver);
            let mut details = approver_details(permission, &seat);
            details.insert(
                "approvals".to_owned(),
                format!("{filled}/{}", request.approvals_needed()),
            );
            if let Some(c) = comment {
                details.insert("comment".to_owned(), c);
            }
            out.event(
                request,
                now,
                actor.clone(),
                AuditAction::ApprovalRecorded,
                details,
            );
            if request.seats().met(&request.approvals) {
                let rule = request.seats().summary();
                request.approve(now, actor, rule, out);
            }
        }
        Command::Deny {
            approver,
            reason,
            permission,
        } => {
            let seat = request.check_approver(approver, permission, "deny")?;
            let reason = required_note(reason)?;
            request.end(
                State::Denied,
                now,
                Some(approver),
                Some(reason),
                AuditAction::Denied,
                out,
            );
            if let Some(event) = out.events.last_mut() {
                event.details.extend(approver_details(permission, &seat));
            }
        }
        Command::Cancel { by } => {
            access::may_act(by, request, RequestAction::Withdraw)?;
            if !request.not_started() {
                return Err(request.conflict("cancel", "only a request that has not started can be cancelled; release an active grant instead"));
            }
            request.end(
                State::Cancelled,
                now,
                Some(by),
                None,
                AuditAction::Cancelled,
                out,
            );
        }
        Command::Release { by } => {
            access::may_act(by, request, RequestAction::Withdraw)?;
            if !matches!(request.state, State::Approved | State::Active) {
                return Err(request.conflict(
                    "release",
                    "only an approved or active grant can be released",
                ));
            }
            request.end(
                State::Released,
                now,
                Some(by),
                None,
                AuditAction::Released,
                out,
            );
        }
        Command::Revoke { by, reason } => {
            access::may_act(by, request, RequestAction::Revoke)?;
            let reason = required_note(reason)?;
            if !matches!(request.state, State::Approved | State::Active) {
                return Err(
                    request.conflict("revoke", "only an approved or active grant can be revoked")
                );
            }
            request.end(
                State::Revoked,
                now,
                Some(by),
                Some(reason),
                AuditAction::Revoked,
                out,
            );
        }
        Command::Extend {
            by,
            extension,
            reason,
            verdict,
            max_duration,
        } => {
            request.extend(by, *extension, reason, verdict, *max_duration, now, out)?;
        }
        Command::Deprovision { cause } => {
            if !request.state.is_terminal() {
                request.withdraw(Actor::Provisioning, cause.clone(), now, out);
            }
        }
        Command::TicketClosed { ticket, delivery } => {
            if !crate::ticket::carries(request, ticket) {
                return Err(Rejection::Conflict(format!(
                    "`{}` was not asked for under ticket `{ticket}`",
                    request.id
                )));
            }
            if !request.state.is_terminal() {
                let cause = format!("ticket `{ticket}` was closed");
                request.withdraw(Actor::TicketSystem, cause, now, out);
                if let Some(event) = out.events.last_mut() {
                    event.details.insert("ticket".to_owned(), ticket.clone());
                    event
                        .details
                        .insert("delivery".to_owned(), delivery.clone());
                }
            }
        }
        Command::Idle {
            limit,
            reported,
            lag,
        } => request.idle_step(limit, reported, *lag, now, out),
        Command::Redecide {
            before,
            after: verdict,
            cause,
        } => {
            let flipped = !matches!(before.route, Route::Denied { .. });
            if let (true, Route::Denied { reasons }) = (flipped, &verdict.route) {
                let ending = match request.state {
                    State::Pending => Some((State::Denied, AuditAction::Denied)),
                    State::Approved | State::Active => Some((State::Revoked, AuditAction::Revoked)),
                    _ => None,
                };
                if let Some((state, action)) = ending {
                    let note = format!("{cause}; the policies now deny it: {}", reasons.join("; "));
                    request.end_by_directory(state, action, note, now, out);
                    if let Some(event) = out.events.last_mut() {
                        event
                            .details
                            .insert("policy_version".to_owned(), verdict.policy_version.clone());
                        event
                            .details
                            .insert("policies".to_owned(), verdict.policies.join(","));
                    }
                }
            }
        }
        Command::Review {
            reviewer,
            acceptable,
            comment,
        } => request.review_use(reviewer, *acceptable, comment, now, out)?,
        Command::Tick => {}
        Command::Restarted => request.attempt_lost(now, out),
        Command::JobSucceeded {
            action,
            token,
            certificate,
        } => {
            request.job_succeeded(*action, *token, certificate.clone(), now, out);
        }
        Command::JobFailed {
            action,
            token,
            error,
            retryable,
        } => {
            request.job_failed(
                *action,
                *token,
                error.clone(),
                *retryable,
                now,
                settings,
                out,
            );
        }
    }
    request.settle(now, settings, out);
    Ok(())
}

/// The tiers a verdict routes `what` to (none when granted at once or
/// denied); a route to an empty tier is refused rather than taken as
/// needing nobody.
fn routed_tiers(route: &Route, what: &str) -> Result<Vec<ApprovalTier>, Rejection> {
    match route {
        Route::NeedsApprovals(tiers) => {
            if tiers.is_empty() || tiers.iter().any(|t| t.count == 0 || t.groups.is_empty()) {
                return Err(Rejection::Forbidden(format!(
                    "the policy set routed the {what} to an empty approval tier"
                )));
            }
            Ok(tiers.clone())
        }
        Route::AutoApproved | Route::Denied { .. } => Ok(Vec::new()),
    }
}

/// An external principal asks only for entitlements open to externals: for
/// any other the policies' answer gives way to a denial saying so
/// (recorded like a denial by policy).
fn closed_to_externals(verdict: Verdict, requester: &User, entitlement: &Entitlement) -> Verdict {
    match &requester.external {
        Some(terms) if !entitlement.open_to(requester) => Verdict {
            route: Route::Denied {
                reasons: vec![format!(
                    "`{}` is not open to external principals (`open_to_externals`); `{}` is one, sponsored by `{}`",
                    entitlement.id, requester.id, terms.sponsor
                )],
            },
            policies: Vec::new(),
            ..verdict
        },
        _ => verdict,
    }
}

/// What the audit record keeps of a verdict: the set, the policies that
/// decided, those that failed, and the decision.
fn verdict_details(verdict: &Verdict, details: &mut BTreeMap<String, String>) {
    details.insert("policy_version".to_owned(), verdict.policy_version.clone());
    details.insert("policies".to_owned(), verdict.policies.join(","));
    if !verdict.errors.is_empty() {
        details.insert("policy_errors".to_owned(), verdict.errors.join("; "));
    }
    details.insert("decision".to_owned(), verdict.route.summary());
}

/// Which seat an approver's decision is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seat {
    /// The external requester's sponsor, in the seat only they fill.
    Sponsor,
    /// Someone the policies permit, counting toward these tiers (indexes).
    Tiers(BTreeSet<u32>),
}

/// Adds `approver`'s approval (for `seat`) to `approvals`, refusing a
/// second one by the same person and one that fills no seat; returns the
/// seats filled now. `what` names what is approved, for messages.
fn add_approval(
    seats: Seats<'_>,
    approvals: &mut Vec<Approval>,
    approver: &User,
    comment: &Option<String>,
    seat: &Seat,
    now: Timestamp,
    what: &str,
) -> Result<u32, Rejection> {
    if approvals.iter().any(|a| a.approver == approver.id) {
        return Err(Rejection::Conflict(format!(
            "`{}` already approved {what}",
            approver.id
        )));
    }
    let before = seats.filled(approvals);
    approvals.push(Approval {
        approver: approver.id.clone(),
        at: now,
        comment: comment.clone(),
        // The sponsor's approval counts toward no tier.
        tiers: match seat {
            Seat::Sponsor => BTreeSet::new(),
            Seat::Tiers(t) => t.clone(),
        },
    });
    let filled = seats.filled(approvals);
    if filled == before {
        return Err(Rejection::Conflict(format!(
            "the tiers `{}` may approve for are already met on {what}; still needed: {}",
            approver.id,
            seats.summary()
        )));
    }
    Ok(filled)
}

/// Group names for an audit detail: `a,b`.
pub(crate) fn join_groups(groups: &BTreeSet<GroupName>) -> String {
    groups
        .iter()
        .map(GroupName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The reason an approver denies or an admin revokes with.
fn required_note(note: &str) -> Result<String, Rejection> {
    let note = user_text("reason", note, TextKind::Note, MAX_REASON_LEN)?;
    if note.is_empty() {
        return Err(invalid("reason", "is required"));
    }
    Ok(note)
}

/// Free text from a person, trimmed, checked by the one text rule
/// ([`crate::text`]) and refused naming `field`.
pub(crate) fn user_text(
    field: &'static str,
    raw: &str,
    kind: TextKind,
    max_chars: usize,
) -> Result<String, Rejection> {
    let trimmed = raw.trim();
    text::check(trimmed, kind, max_chars).map_err(|e| invalid(field, e.to_string()))?;
    Ok(trimmed.to_owned())
}

/// What the audit record keeps of an approver's permission: the policies
/// that permitted them, or that they decided as the sponsor (whom no
/// policy seats).
fn approver_details(permission: &ApproverVerdict, seat: &Seat) -> BTreeMap<String, String> {
    let mut details = BTreeMap::from([(
        "policy_version".to_owned(),
        permission.policy_version.clone(),
    )]);
    match (seat, &permission.outcome) {
        (Seat::Sponsor, _) => {
            details.insert("seat".to_owned(), "sponsor".to_owned());
        }
        (Seat::Tiers(_), Ok(policies)) => {
            details.insert("policies".to_owned(), policies.join(","));
        }
        (Seat::Tiers(_), Err(_)) => {}
    }
    details
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(",")
}

#[derive(Default)]
struct Outcome {
    effects: Vec<Effect>,
    events: Vec<AuditEvent>,
}

impl Outcome {
    fn event(
        &mut self,
        request: &AccessRequest,
        at: Timestamp,
        actor: Actor,
        action: AuditAction,
        details: BTreeMap<String, String>,
    ) {
        self.events.push(AuditEvent {
            at,
            actor,
            action,
            request: Some(request.id.clone()),
            entitlement: Some(request.entitlement.clone()),
            subject: Some(request.requester.clone()),
            details,
        });
    }

    fn finish(self, request: AccessRequest) -> Transition {
        Transition {
            request,
            effects: self.effects,
            events: self.events,
            notifications: Vec::new(),
        }
    }
}

impl AccessRequest {
    fn conflict(&self, verb: &str, why: &str) -> Rejection {
        Rejection::Conflict(format!(
            "cannot {verb} `{}`: it is {} ({why})",
            self.id,
            self.state.as_str()
        ))
    }

    /// Checks that `approver` may decide this request, and returns the seat
    /// their approval is for. The requester never may, whatever the
    /// policies said; an external requester's sponsor decides in their own
    /// seat; anyone else needs the policy set's permission and groups that
    /// qualify them for at least one tier.
    fn check_approver(
        &self,
        approver: &User,
        permission: &ApproverVerdict,
        verb: &str,
    ) -> Result<Seat, Rejection> {
        access::may_act(approver, self, RequestAction::Decide)?;
        // The state first: a request that is no longer pending has nobody
        // to decide it, whatever the caller's groups.
        if self.state != State::Pending {
            return Err(self.conflict(verb, "only a pending request can be decided"));
        }
        self.qualify(approver, permission, verb, self.seats(), "")
    }

    /// The seat `approver`'s decision is for among `seats` (the request's,
    /// or its extension's: `what` says which in messages): the sponsor's
    /// for the sponsor, else the tiers they qualify for once the policy set
    /// permits them to decide at all.
    fn qualify(
        &self,
        approver: &User,
        permission: &ApproverVerdict,
        verb: &str,
        seats: Seats<'_>,
        what: &str,
    ) -> Result<Seat, Rejection> {
        if access::sponsors(approver, self) {
            return Ok(Seat::Sponsor);
        }
        let tiers = seats.tiers;
        if let Err(why) = &permission.outcome {
            return Err(Rejection::Forbidden(format!(
                "`{}` may not {verb} `{}`{what}: {why}",
                approver.id, self.id
            )));
        }
        let qualified = qualifying_tiers(tiers, &approver.groups);
        if qualified.is_empty() {
            return Err(Rejection::Forbidden(if tiers.is_empty() {
                format!(
                    "`{}` may not {verb} `{}`{what}: only its sponsor decides it ({})",
                    approver.id,
                    self.id,
                    seats.summary()
                )
            } else {
                format!(
                    "`{}` is in none of the groups `{}`{what} needs approvals from: {}",
                    approver.id,
                    self.id,
                    seats.summary()
                )
            }));
        }
        Ok(Seat::Tiers(qualified))
    }

    fn approve(&mut self, now: Timestamp, actor: Actor, rule: String, out: &mut Outcome) {
        let start = self.start_at.map_or(now, |s| s.max(now));
        let mut expires = start.plus(self.duration);
        // An external principal's grant ends no later than their account.
        let account_end = self
            .external
            .as_ref()
            .map(|t| t.account_expires)
            .filter(|end| *end < expires);
        if let Some(end) = account_end {
            expires = end.max(start);
            self.duration = start.until(expires);
        }
        self.state = State::Approved;
        self.decided_at = Some(now);
        self.activates_at = Some(start);
        self.expires_at = Some(expires);
        self.job = Some(ConnectorJob {
            next_attempt_at: start,
            ..ConnectorJob::due_now(JobAction::Grant, now)
        });
        let mut details = BTreeMap::from([
            ("rule".to_owned(), rule),
            ("starts_at".to_owned(), start.to_rfc3339()),
            ("expires_at".to_owned(), expires.to_rfc3339()),
        ]);
        if account_end.is_some() {
            details.insert(
                "clipped".to_owned(),
                "to the end of the requester's account".to_owned(),
            );
        }
        if !self.approvals.is_empty() {
            details.insert(
                "approvers".to_owned(),
                join(self.approvals.iter().map(|a| a.approver.as_str())),
            );
        }
        out.event(self, now, actor, AuditAction::Approved, details);
    }

    /// Moves to a terminal state exactly once and arranges removal from the
    /// target where it may hold (or be about to hold) the grant.
    fn end(
        &mut self,
        state: State,
        now: Timestamp,
        by: Option<&User>,
        note: Option<String>,
        action: AuditAction,
        out: &mut Outcome,
    ) {
        debug_assert!(state.is_terminal() && !self.state.is_terminal());
        self.lapse_extension(state, now, out);
        self.note_lost_grant(now, out);
        let revoke_job = match &self.job {
            // A grant attempt may still land: revoke once its lease lapses or
            // its result arrives, whichever comes first.
            Some(job) if job.action == JobAction::Grant && job.in_flight(now) => {
                Some(ConnectorJob {
                    next_attempt_at: job.claimed_until.unwrap_or(now),
                    ..ConnectorJob::due_now(JobAction::Revoke, now)
                })
            }
            // Earlier attempts may have partly succeeded; and an active
            // grant (whose job re-grants for an extension) is held anyway.
            Some(job)
                if job.action == JobAction::Grant
                    && (job.attempts > 0 || self.state == State::Active) =>
            {
                Some(ConnectorJob::due_now(JobAction::Revoke, now))
            }
            Some(job) if job.action == JobAction::Grant => None,
            Some(job) => Some(job.clone()),
            None if self.state == State::Active => {
                Some(ConnectorJob::due_now(JobAction::Revoke, now))
            }
            None => None,
        };
        self.job = revoke_job;
        self.state = state;
        self.ended_at = Some(now);
        self.ended_by = by.map(|u| u.id.clone());
        self.end_note.clone_from(&note);
        let mut details = BTreeMap::new();
        if let Some(n) = note {
            details.insert("reason".to_owned(), n);
        }
        if let Some(job) = &self.job {
            details.insert("revocation".to_owned(), "scheduled".to_owned());
            if job.attempts == 0 && job.next_attempt_at > now {
                details.insert(
                    "grant_attempt".to_owned(),
                    format!(
                        "in flight; the revocation waits for its result or until {}",
                        job.next_attempt_at.to_rfc3339()
                    ),
                );
            }
        }
        let actor = by.map_or(Actor::System, Actor::of);
        out.event(self, now, actor, action, details);
    }

    /// Ends the request on the identity provider's word: recorded as done
    /// by the provisioning client, with `note` (the SCIM operation) as the
    /// reason.
    fn end_by_directory(
        &mut self,
        state: State,
        action: AuditAction,
        note: String,
        now: Timestamp,
        out: &mut Outcome,
    ) {
        self.end_on_word_of(Actor::Provisioning, state, action, note, now, out);
    }

    /// Ends the request on `actor`'s word (the identity provider, the
    /// ticket system), with `cause` as the reason and recorded as the cause.
    fn end_on_word_of(
        &mut self,
        actor: Actor,
        state: State,
        action: AuditAction,
        cause: String,
        now: Timestamp,
        out: &mut Outcome,
    ) {
        self.end(state, now, None, Some(cause.clone()), action, out);
        if let Some(event) = out.events.last_mut() {
            event.actor = actor;
            event.details.insert("cause".to_owned(), cause);
        }
    }

    /// Not started yet: pending, or approved with no grant attempt made.
    /// Such a request is cancelled rather than revoked: nothing reached
    /// the target.
    fn not_started(&self) -> bool {
        self.state == State::Pending
            || (self.state == State::Approved && self.job.as_ref().is_some_and(|j| j.attempts == 0))
    }

    /// Ends an unfinished request on `actor`'s word whatever its state: one
    /// that has not started is cancelled, anything else revoked (through
    /// the usual connector job, retried and never abandoned).
    fn withdraw(&mut self, actor: Actor, cause: String, now: Timestamp, out: &mut Outcome) {
        let (state, action) = if self.not_started() {
            (State::Cancelled, AuditAction::Cancelled)
        } else {
            (State::Revoked, AuditAction::Revoked)
        };
        self.end_on_word_of(actor, state, action, cause, now, out);
    }

    /// Applies the entitlement's idle limit (see [`Command::Idle`]).
    fn idle_step(
        &mut self,
        limit: &crate::idle::IdleLimit,
        reported: &crate::idle::Reported,
        lag: Duration,
        now: Timestamp,
        out: &mut Outcome,
    ) {
        let idle_limit = human_duration(limit.limit());
        match crate::idle::step(limit, self, reported, lag, now) {
            crate::idle::Step::Nothing => {}
            crate::idle::Step::Warn {
                idle_since,
                release_at,
            } => {
                let details = BTreeMap::from([
                    ("idle_since".to_owned(), idle_since.to_rfc3339()),
                    ("release_at".to_owned(), release_at.to_rfc3339()),
                    ("idle_limit".to_owned(), idle_limit),
                ]);
                out.event(self, now, Actor::System, AuditAction::IdleWarned, details);
            }
            crate::idle::Step::Release { idle_since } => {
                let note = format!(
                    "idle: not used since {} (idle limit {idle_limit})",
                    idle_since.to_rfc3339()
                );
                self.end(
                    State::Released,
                    now,
                    None,
                    Some(note),
                    AuditAction::Released,
                    out,
                );
                if let Some(event) = out.events.last_mut() {
                    event.details.insert("cause".to_owned(), "idle".to_owned());
                    event
                        .details
                        .insert("idle_since".to_owned(), idle_since.to_rfc3339());
                    event.details.insert("idle_limit".to_owned(), idle_limit);
                }
            }
        }
    }

    /// Applies every deadline that has passed, then claims connector work that is due.
    fn settle(&mut self, now: Timestamp, settings: &LifecycleSettings, out: &mut Outcome) {
        self.apply_deadlines(now, out);
        self.claim_due_job(now, settings, out);
    }

    /// The attempt in flight will never report (its process restarted): its
    /// lease ends now. A revoke that waits for a grant attempt of a process
    /// that restarted runs now, and the record says the grant's outcome is
    /// unknown.
    fn attempt_lost(&mut self, now: Timestamp, out: &mut Outcome) {
        let terminal = self.state.is_terminal();
        let Some(job) = self.job.as_mut() else { return };
        if job.in_flight(now) {
            job.claimed_until = Some(now);
        } else if terminal
            && job.action == JobAction::Revoke
            && job.attempts == 0
            && job.claimed_until.is_none()
            && job.next_attempt_at > now
        {
            // Created by `end` to wait for the lease of a grant attempt in
            // flight: that attempt will not report now.
            job.next_attempt_at = now;
            self.grant_outcome_unknown(
                now,
                BTreeMap::new(),
                "the server restarted while the attempt was in flight",
                out,
            );
        }
    }

    /// Records that the grant attempt with the current claim token may or
    /// may not have reached the target, and why nobody will hear back.
    fn grant_outcome_unknown(
        &self,
        now: Timestamp,
        mut details: BTreeMap<String, String>,
        why: &str,
        out: &mut Outcome,
    ) {
        details.insert("claim".to_owned(), self.claim_token.to_string());
        details.insert(
            "why".to_owned(),
            format!("{why}; the target may hold the grant"),
        );
        out.event(
            self,
            now,
            Actor::System,
            AuditAction::GrantOutcomeUnknown,
            details,
        );
    }

    /// A grant attempt whose lease ended without a result may or may not
    /// have reached the target. When it is given up on (tried again, or the
    /// request ends and the grant is removed) the record says so, so it never
    /// reads as if access never existed. (Until then a late result of it is
    /// still taken as the current one.)
    fn note_lost_grant(&self, now: Timestamp, out: &mut Outcome) {
        let Some(job) = &self.job else { return };
        let lapsed =
            job.action == JobAction::Grant && job.claimed_until.is_some_and(|until| until <= now);
        if !lapsed {
            return;
        }
        let details = BTreeMap::from([("attempt".to_owned(), job.attempts.to_string())]);
        self.grant_outcome_unknown(
            now,
            details,
            "the attempt gave no result before its lease ended",
            out,
        );
    }

    /// Ends the request if a deadline has passed, and escalates a review
    /// that is overdue.
    fn apply_deadlines(&mut self, now: Timestamp, out: &mut Outcome) {
        self.review_deadline(now, out);
        match self.state {
            State::Pending if now >= self.pending_deadline => {
                self.end(State::TimedOut, now, None, None, AuditAction::TimedOut, out);
            }
            State::Pending => self.wait_steps(now, out),
            State::Approved
                if self.expires_at.is_some_and(|e| now >= e)
                    && !self.job.as_ref().is_some_and(|j| j.in_flight(now)) =>
            {
                let note = "the grant window ended before provisioning succeeded".to_owned();
                self.end(
                    State::Failed,
                    now,
                    None,
                    Some(note),
                    AuditAction::Failed,
                    out,
                );
            }
            State::Active if self.expires_at.is_some_and(|e| now >= e) => {
                self.end(State::Expired, now, None, None, AuditAction::Expired, out);
            }
            _ => {}
        }
    }

    /// The reminder and the escalation of a request waiting for approvers,
    /// each once, when due, in the order they fell due (a reminder after an
    /// escalation reaches the escalation groups too).
    fn wait_steps(&mut self, now: Timestamp, out: &mut Outcome) {
        let plan = &self.waiting;
        let remind = plan
            .remind_at
            .filter(|at| plan.reminded_at.is_none() && now >= *at);
        let escalate = plan
            .escalate_at
            .filter(|at| plan.escalated_at.is_none() && now >= *at);
        let escalate_first = matches!((remind, escalate), (Some(r), Some(e)) if e < r);
        if escalate_first {
            self.escalate(now, out);
        }
        if remind.is_some() {
            self.waiting.reminded_at = Some(now);
            let details = BTreeMap::from([
                ("waited_seconds".to_owned(), self.waited(now)),
                (
                    "approver_groups".to_owned(),
                    join_groups(&self.approver_groups()),
                ),
            ]);
            out.event(
                self,
                now,
                Actor::System,
                AuditAction::ApprovalReminded,
                details,
            );
        }
        if escalate.is_some() && !escalate_first {
            self.escalate(now, out);
        }
    }

    /// A break-glass use still unreviewed at its due time escalates, once:
    /// the escalation groups may judge it too, and the security channel
    /// hears of it (`notify`).
    fn review_deadline(&mut self, now: Timestamp, out: &mut Outcome) {
        let Some(review) = self.review.as_mut() else {
            return;
        };
        if review.escalated_at.is_some() || !review.is_overdue(now) {
            return;
        }
        review.escalated_at = Some(now);
        let mut details = BTreeMap::from([
            ("due_at".to_owned(), review.due_at.to_rfc3339()),
            ("reviewers".to_owned(), join_groups(&review.reviewers)),
        ]);
        if !review.escalate_to.is_empty() {
            details.insert("escalated_to".to_owned(), join_groups(&review.escalate_to));
        }
        out.event(
            self,
            now,
            Actor::System,
            AuditAction::ReviewOverdue,
            details,
        );
    }

    /// Records a reviewer's verdict on a break-glass use. Anyone in the
    /// review's groups (see [`Review::groups`]) may judge it, once, in any
    /// state after it was granted, except the person who used it.
    fn review_use(
        &mut self,
        reviewer: &User,
        acceptable: bool,
        comment: &str,
        now: Timestamp,
        out: &mut Outcome,
    ) -> Result<(), Rejection> {
        access::may_act(reviewer, self, RequestAction::Review)?;
        let Some(review) = self.review.as_mut() else {
            return Err(Rejection::Conflict(format!(
                "`{}` was not a break-glass use; only those are reviewed",
                self.id
            )));
        };
        if let Some(done) = &review.verdict {
            return Err(Rejection::Conflict(format!(
                "`{}` was already reviewed by `{}` at {}",
                self.id,
                done.reviewer,
                done.at.to_rfc3339()
            )));
        }
        let groups = review.groups();
        if !reviewer.in_any(&groups) {
            return Err(Rejection::Forbidden(format!(
                "`{}` is in none of the groups that review `{}`: {}",
                reviewer.id,
                self.id,
                join_groups(&groups)
            )));
        }
        let comment = user_text("comment", comment, TextKind::Note, MAX_COMMENT_LEN)?;
        if comment.is_empty() {
            return Err(invalid(
                "comment",
                "is required: say why the use was or was not acceptable",
            ));
        }
        review.verdict = Some(ReviewVerdict {
            reviewer: reviewer.id.clone(),
            at: now,
            acceptable,
            comment: comment.clone(),
        });
        let details = BTreeMap::from([
            ("acceptable".to_owned(), acceptable.to_string()),
            ("comment".to_owned(), comment),
        ]);
        out.event(
            self,
            now,
            Actor::of(reviewer),
            AuditAction::Reviewed,
            details,
        );
        Ok(())
    }

    /// The escalation groups may fill every tier's seats from now on.
    fn escalate(&mut self, now: Timestamp, out: &mut Outcome) {
        let to = self.waiting.escalate_to.clone();
        for tier in &mut self.approval_tiers {
            tier.groups.extend(to.iter().cloned());
        }
        self.waiting.escalated_at = Some(now);
        let details = BTreeMap::from([
            ("waited_seconds".to_owned(), self.waited(now)),
            ("escalated_to".to_owned(), join_groups(&to)),
        ]);
        out.event(
            self,
            now,
            Actor::System,
            AuditAction::ApprovalEscalated,
            details,
        );
    }

    /// Seconds since the request was made, for audit details.
    fn waited(&self, now: Timestamp) -> String {
        self.created_at.until(now).as_secs().to_string()
    }

    fn claim_due_job(&mut self, now: Timestamp, settings: &LifecycleSettings, out: &mut Outcome) {
        let Some(job) = self.job.as_ref() else { return };
        if job.in_flight(now) || job.due_at() > now {
            return;
        }
        // An active request holds a grant job only to re-grant with an
        // extension's expiry.
        let runnable = match job.action {
            JobAction::Grant => matches!(self.state, State::Approved | State::Active),
            JobAction::Revoke => self.state.is_terminal(),
        };
        if !runnable {
            return;
        }
        let out_of_attempts =
            job.action == JobAction::Grant && job.attempts >= settings.grant_max_attempts;
        if !out_of_attempts {
            self.note_lost_grant(now, out);
        }
        let Some(job) = self.job.as_mut() else { return };
        if out_of_attempts && self.state == State::Active {
            let note = format!(
                "the target did not take the new expiry after {} attempts: {}",
                job.attempts,
                job.last_error.as_deref().unwrap_or("attempt timed out")
            );
            return self.extension_failed(note, now, out);
        }
        if out_of_attempts {
            let note = format!(
                "provisioning failed after {} attempts: {}",
                job.attempts,
                job.last_error.as_deref().unwrap_or("attempt timed out")
            );
            self.end(
                State::Failed,
                now,
                None,
                Some(note),
                AuditAction::Failed,
                out,
            );
            return self.claim_due_job(now, settings, out);
        }
        job.attempts = job.attempts.saturating_add(1);
        job.claimed_until = Some(now.plus(settings.claim_lease));
        self.claim_token = self.claim_token.saturating_add(1);
        out.effects.push(Effect {
            action: job.action,
            token: self.claim_token,
        });
    }

    /// Whether a result refers to the attempt currently in flight.
    fn is_current(&self, action: JobAction, token: u64) -> bool {
        token == self.claim_token
            && self
                .job
                .as_ref()
                .is_some_and(|j| j.action == action && j.claimed_until.is_some())
    }

    /// A grant attempt finished after the request ended: the revoke waiting
    /// for it can run now. If removal was already confirmed but a (stale)
    /// attempt reports it granted after all, remove again, and say why.
    fn grant_finished_after_end(
        &mut self,
        token: u64,
        succeeded: bool,
        now: Timestamp,
        out: &mut Outcome,
    ) {
        if !self.state.is_terminal() {
            return;
        }
        // Only the attempt the revoke waits for may release it early: a result
        // from a superseded attempt says nothing about the one still in flight.
        let awaited = token == self.claim_token;
        match self.job.as_mut() {
            Some(job)
                if job.action == JobAction::Revoke && job.claimed_until.is_none() && awaited =>
            {
                job.next_attempt_at = job.next_attempt_at.min(now);
            }
            Some(_) => {}
            None if succeeded => {
                self.job = Some(ConnectorJob::due_now(JobAction::Revoke, now));
                self.deprovisioned_at = None;
                let details = BTreeMap::from([
                    ("claim".to_owned(), token.to_string()),
                    (
                        "why".to_owned(),
                        "a grant attempt reported success after the grant ended".to_owned(),
                    ),
                ]);
                out.event(
                    self,
                    now,
                    Actor::System,
                    AuditAction::RevocationRepeated,
                    details,
                );
            }
            None => {}
        }
    }

    fn job_succeeded(
        &mut self,
        action: JobAction,
        token: u64,
        certificate: Option<String>,
        now: Timestamp,
        out: &mut Outcome,
    ) {
        if !self.is_current(action, token) {
            if action == JobAction::Grant {
                self.grant_finished_after_end(token, true, now, out);
            }
            return;
        }
        match action {
            JobAction::Grant if self.state == State::Active => {
                self.extension_confirmed(certificate, now, out);
            }
            JobAction::Grant => {
                self.job = None;
                self.state = State::Active;
                self.granted_at = Some(now);
                self.certificate = certificate;
                let details = BTreeMap::from([(
                    "expires_at".to_owned(),
                    self.expires_at
                        .map_or_else(String::new, Timestamp::to_rfc3339),
                )]);
                out.event(self, now, Actor::System, AuditAction::Granted, details);
            }
            JobAction::Revoke => {
                let attempts = self.job.as_ref().map_or(0, |j| j.attempts);
                self.job = None;
                self.deprovisioned_at = Some(now);
                let details = BTreeMap::from([("attempts".to_owned(), attempts.to_string())]);
                out.event(
                    self,
                    now,
                    Actor::System,
                    AuditAction::Deprovisioned,
                    details,
                );
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one flat command's fields")]
    fn job_failed(
        &mut self,
        action: JobAction,
        token: u64,
        error: String,
        retryable: bool,
        now: Timestamp,
        settings: &LifecycleSettings,
        out: &mut Outcome,
    ) {
        if !self.is_current(action, token) {
            if action == JobAction::Grant {
                self.grant_finished_after_end(token, false, now, out);
            }
            return;
        }
        let Some(job) = self.job.as_mut() else { return };
        let attempts = job.attempts;
        job.claimed_until = None;
        job.last_error = Some(error.clone());
        let mut details = BTreeMap::from([
            ("attempt".to_owned(), attempts.to_string()),
            ("error".to_owned(), error.clone()),
            ("retryable".to_owned(), retryable.to_string()),
        ]);
        match action {
            JobAction::Grant
                if self.state == State::Active
                    && (!retryable || attempts >= settings.grant_max_attempts) =>
            {
                let note = format!(
                    "the target did not take the new expiry after {attempts} attempt(s): {error}"
                );
                self.extension_failed(note, now, out);
            }
            JobAction::Grant if !retryable || attempts >= settings.grant_max_attempts => {
                let note = format!("provisioning failed after {attempts} attempt(s): {error}");
                self.end(
                    State::Failed,
                    now,
                    None,
                    Some(note),
                    AuditAction::Failed,
                    out,
                );
            }
            JobAction::Grant => {
                let retry_at = now.plus(settings.backoff(attempts));
                job.next_attempt_at = retry_at;
                details.insert("retry_at".to_owned(), retry_at.to_rfc3339());
                out.event(
                    self,
                    now,
                    Actor::System,
                    AuditAction::GrantAttemptFailed,
                    details,
                );
            }
            // Revocation is never abandoned.
            JobAction::Revoke => {
                let retry_at = now.plus(settings.backoff(attempts));
                job.next_attempt_at = retry_at;
                details.insert("retry_at".to_owned(), retry_at.to_rfc3339());
                out.event(
                    self,
                    now,
                    Actor::System,
                    AuditAction::RevokeAttemptFailed,
                    details,
                );
            }
        }
    }
}

/// Extensions: more time on an active grant.
impl AccessRequest {
    #[expect(clippy::too_many_arguments, reason = "one flat command's fields")]
    fn extend(
        &mut self,
        by: &User,
        extension: Duration,
        reason: &str,
        verdict: &Verdict,
        max_duration: Duration,
        now: Timestamp,
        out: &mut Outcome,
    ) -> Result<(), Rejection> {
        access::may_act(by, self, RequestAction::Extend)?;
        let reason = required_note(reason)?;
        if extension < Duration::from_secs(1) {
            return Err(invalid("by", "must be at least 1s"));
        }
        let (State::Active, Some(previous)) = (self.state, self.expires_at) else {
            return Err(self.conflict("extend", "only an active grant can be extended"));
        };
        if let Some(e) = self.extension.as_ref().filter(|e| e.state.is_outstanding()) {
            return Err(Rejection::Conflict(format!(
                "`{}` already has an extension by {} that is {}; ask again once it is done",
                self.id,
                human_duration(e.by),
                e.state.as_str()
            )));
        }
        let allowance = max_duration.saturating_sub(self.duration);
        if extension > allowance {
            let message = if allowance < Duration::from_secs(1) {
                format!(
                    "cannot be extended: it already lasts the maximum of {} for `{}`",
                    human_duration(max_duration),
                    self.entitlement
                )
            } else {
                format!(
                    "may extend by at most {} (the maximum for `{}` is {})",
                    human_duration(allowance),
                    self.entitlement,
                    human_duration(max_duration)
                )
            };
            return Err(invalid("by", message));
        }
        // An external principal's grant ends no later than their account.
        let asked = extension;
        let extension = self.extension_within_account(asked);
        if extension < Duration::from_secs(1) {
            let end = self
                .external
                .as_ref()
                .map_or_else(String::new, |t| t.account_expires.to_rfc3339());
            return Err(invalid(
                "by",
                format!(
                    "cannot be extended: the account of `{}` ends at {end}, when this grant ends",
                    self.requester
                ),
            ));
        }
        let approval_tiers = routed_tiers(&verdict.route, "extension")?;
        let new_expiry = previous.plus(extension);
        self.extension = Some(Extension {
            by: extension,
            reason: reason.clone(),
            requested_at: now,
            state: ExtensionState::Pending,
            approval_tiers,
            approvals: Vec::new(),
            policy_version: verdict.policy_version.clone(),
            previous_expires_at: previous,
            expires_at: new_expiry,
            decided_at: None,
            ended_at: None,
            note: None,
        });
        let mut details = BTreeMap::from([
            ("reason".to_owned(), reason),
            (
                "total_seconds".to_owned(),
                self.duration
                    .saturating_add(extension)
                    .as_secs()
                    .to_string(),
            ),
        ]);
        if extension < asked {
            details.insert(
                "asked_extension_seconds".to_owned(),
                asked.as_secs().to_string(),
            );
        }
        verdict_details(verdict, &mut details);
        self.extension_event(
            now,
            Actor::of(by),
            AuditAction::ExtensionRequested,
            details,
            out,
        );
        match &verdict.route {
            Route::Denied { reasons } => {
                let note = format!("denied by policy: {}", reasons.join("; "));
                self.extension_denied(note, now, Actor::System, BTreeMap::new(), out);
            }
            // The policies grant it; the sponsor still has to.
            Route::AutoApproved if self.external.is_some() => {}
            Route::AutoApproved => {
                let rule = format!("granted at once by policy ({})", verdict.policies.join(","));
                self.extension_approved(rule, now, Actor::System, out);
            }
            Route::NeedsApprovals(_) => {}
        }
        Ok(())
    }

    fn approve_extension(
        &mut self,
        approver: &User,
        comment: Option<String>,
        permission: &ApproverVerdict,
        now: Timestamp,
        out: &mut Outcome,
    ) -> Result<(), Rejection> {
        let seat = self.check_extension_approver(approver, permission, "approve")?;
        let what = format!("the extension of `{}`", self.id);
        let Some(seats) = self.extension_seats() else {
            return Ok(());
        };
        let Some(mut approvals) = self.extension.as_ref().map(|e| e.approvals.clone()) else {
            return Ok(());
        };
        let filled = add_approval(seats, &mut approvals, approver, &comment, &seat, now, &what)?;
        let met = seats.met(&approvals);
        let (rule, needed) = (seats.summary(), seats.needed());
        if let Some(ext) = self.extension.as_mut() {
            ext.approvals = approvals;
        }
        let mut details = approver_details(permission, &seat);
        details.insert("approvals".to_owned(), format!("{filled}/{needed}"));
        if let Some(c) = comment {
            details.insert("comment".to_owned(), c);
        }
        let actor = Actor::of(approver);
        self.extension_event(
            now,
            actor.clone(),
            AuditAction::ExtensionApprovalRecorded,
            details,
            out,
        );
        if met {
            self.extension_approved(rule, now, actor, out);
        }
        Ok(())
    }

    fn deny_extension(
        &mut self,
        approver: &User,
        reason: String,
        permission: &ApproverVerdict,
        now: Timestamp,
        out: &mut Outcome,
    ) -> Result<(), Rejection> {
        let seat = self.check_extension_approver(approver, permission, "deny")?;
        let details = approver_details(permission, &seat);
        self.extension_denied(reason, now, Actor::of(approver), details, out);
        Ok(())
    }

    /// Like [`AccessRequest::check_approver`], for the extension waiting
    /// for approvers (the caller checked there is one).
    fn check_extension_approver(
        &self,
        approver: &User,
        permission: &ApproverVerdict,
        verb: &str,
    ) -> Result<Seat, Rejection> {
        access::may_act(approver, self, RequestAction::Decide)?;
        let seats = self
            .extension_seats()
            .filter(|_| self.extension_awaiting_approval().is_some())
            .unwrap_or(Seats {
                tiers: &[],
                sponsor: None,
            });
        self.qualify(approver, permission, verb, seats, "'s extension")
    }

    /// Granted: the target is told the new expiry by a grant job on the
    /// active request; the expiry moves once it confirms.
    fn extension_approved(
        &mut self,
        rule: String,
        now: Timestamp,
        actor: Actor,
        out: &mut Outcome,
    ) {
        let Some(ext) = self.extension.as_mut() else {
            return;
        };
        ext.state = ExtensionState::Provisioning;
        ext.decided_at = Some(now);
        let mut details = BTreeMap::from([("rule".to_owned(), rule)]);
        if !ext.approvals.is_empty() {
            details.insert(
                "approvers".to_owned(),
                join(ext.approvals.iter().map(|a| a.approver.as_str())),
            );
        }
        self.job = Some(ConnectorJob::due_now(JobAction::Grant, now));
        self.extension_event(now, actor, AuditAction::ExtensionApproved, details, out);
    }

    fn extension_denied(
        &mut self,
        note: String,
        now: Timestamp,
        actor: Actor,
        mut details: BTreeMap<String, String>,
        out: &mut Outcome,
    ) {
        let Some(ext) = self.extension.as_mut() else {
            return;
        };
        ext.state = ExtensionState::Denied;
        ext.decided_at = Some(now);
        ext.ended_at = Some(now);
        ext.note = Some(note.clone());
        details.insert("reason".to_owned(), note);
        self.extension_event(now, actor, AuditAction::ExtensionDenied, details, out);
    }

    /// The target took the new expiry: it is the request's now, and the
    /// old one stops counting.
    fn extension_confirmed(
        &mut self,
        certificate: Option<String>,
        now: Timestamp,
        out: &mut Outcome,
    ) {
        let Some(ext) = self.extension.as_mut() else {
            return;
        };
        let attempts = self.job.as_ref().map_or(0, |j| j.attempts);
        self.job = None;
        ext.state = ExtensionState::Extended;
        ext.ended_at = Some(now);
        self.expires_at = Some(ext.expires_at);
        self.duration = self.duration.saturating_add(ext.by);
        if certificate.is_some() {
            self.certificate = certificate;
        }
        let details = BTreeMap::from([
            ("attempts".to_owned(), attempts.to_string()),
            (
                "duration_seconds".to_owned(),
                self.duration.as_secs().to_string(),
            ),
        ]);
        self.extension_event(now, Actor::System, AuditAction::Extended, details, out);
    }

    /// The target refused the new expiry, or attempts ran out: the old
    /// expiry stands.
    fn extension_failed(&mut self, note: String, now: Timestamp, out: &mut Outcome) {
        let Some(ext) = self.extension.as_mut() else {
            return;
        };
        self.job = None;
        ext.state = ExtensionState::Failed;
        ext.ended_at = Some(now);
        ext.note = Some(note.clone());
        let details = BTreeMap::from([("error".to_owned(), note)]);
        self.extension_event(
            now,
            Actor::System,
            AuditAction::ExtensionFailed,
            details,
            out,
        );
    }

    /// The grant ends (as `state`) before an outstanding extension took
    /// effect: the extension lapses with it.
    fn lapse_extension(&mut self, state: State, now: Timestamp, out: &mut Outcome) {
        let Some(ext) = self.extension.as_mut().filter(|e| e.state.is_outstanding()) else {
            return;
        };
        let note = format!(
            "the grant ended ({}) before the extension took effect",
            state.as_str()
        );
        ext.state = ExtensionState::Lapsed;
        ext.ended_at = Some(now);
        ext.note = Some(note.clone());
        let details = BTreeMap::from([("why".to_owned(), note)]);
        self.extension_event(
            now,
            Actor::System,
            AuditAction::ExtensionLapsed,
            details,
            out,
        );
    }

    /// An audit event about the extension: with how much longer, and the
    /// expiry before and after.
    fn extension_event(
        &self,
        now: Timestamp,
        actor: Actor,
        action: AuditAction,
        mut details: BTreeMap<String, String>,
        out: &mut Outcome,
    ) {
        if let Some(ext) = &self.extension {
            details.insert("extension_seconds".to_owned(), ext.by.as_secs().to_string());
            details.insert(
                "previous_expires_at".to_owned(),
                ext.previous_expires_at.to_rfc3339(),
            );
            details.insert("new_expires_at".to_owned(), ext.expires_at.to_rfc3339());
        }
        out.event(self, now, actor, action, details);
    }
}
