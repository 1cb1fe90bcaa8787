//! Who hears what: the notifications a change causes, decided from the
//! change itself (its audit events and the request it leaves behind) and the
//! routing settings, so the shell can write them to its outbox in the same
//! transaction as the change. Sending, retrying and addresses are the
//! shell's; this module only decides.
//!
//! A notification may be due later than the change that caused it (a grant
//! about to expire, a revocation that became overdue): it carries its
//! `not_before`, and [`still_relevant`] tells the sender, when the time
//! comes, whether the request still is in the situation it was about.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::audit::{AuditAction, AuditEvent};
use crate::ids::EntitlementId;
use crate::request::{join_groups, AccessRequest, JobAction, State, Transition};
use crate::time::{human_duration, Timestamp};

/// Declares [`Topic`] with each topic's stored name and the audience it is
/// routed to, and `Topic::ALL` from the same list.
macro_rules! topics {
    ($($(#[$doc:meta])* $name:ident => $text:literal, $audience:ident;)*) => {
        /// What a notification is about. Stored by name; names never change
        /// once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Topic {
            $($(#[$doc])* $name,)*
        }

        impl Topic {
            pub const ALL: [Topic; [$(Topic::$name),*].len()] = [$(Topic::$name),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Topic::$name => $text,)*
                }
            }

            /// Who is told.
            pub fn audience(self) -> Audience {
                match self {
                    $(Topic::$name => Audience::$audience,)*
                }
            }
        }
    };
}

topics! {
    /// A request waits for its approvers.
    AwaitingApproval => "awaiting_approval", Approvers;
    /// It still waits, past the entitlement's `remind_after`.
    ApprovalReminder => "approval_reminder", Approvers;
    /// It was escalated: the escalation group may approve it now.
    Escalated => "escalated", Approvers;
    Approved => "approved", Requester;
    Denied => "denied", Requester;
    /// The target granted the access.
    Provisioned => "provisioned", Requester;
    /// The grant ends within the configured lead time.
    ExpiresSoon => "expires_soon", Requester;
    /// The request ended: expired, released, revoked, timed out or failed.
    Ended => "ended", Requester;
    /// A grant nobody used for most of its entitlement's idle limit: it is
    /// released soon unless used.
    IdleWarning => "idle_warning", Requester;
    /// An emergency request was made.
    BreakGlass => "break_glass", Security;
    /// A break-glass use awaits its reviewers' verdict.
    ReviewRequested => "review_requested", Reviewers;
    /// A break-glass use is still unreviewed past its due time: the
    /// reviewers, and now the escalation groups, are asked again.
    ReviewEscalated => "review_escalated", Reviewers;
    /// ...and the security channel hears of it.
    ReviewOverdue => "review_overdue", Security;
    /// A reviewer judged a break-glass use unacceptable.
    UseUnacceptable => "use_unacceptable", Security;
    /// An extension of an active grant waits for its approvers.
    ExtensionAwaitingApproval => "extension_awaiting_approval", Approvers;
    /// The target took an extension's new expiry.
    Extended => "extended", Requester;
    /// An extension was denied (by policy or an approver).
    ExtensionDenied => "extension_denied", Requester;
    /// The target did not take an extension's new expiry; the old one stands.
    ExtensionFailed => "extension_failed", Requester;
    /// A target refused or failed to remove a grant (first failure).
    RevocationFailed => "revocation_failed", Security;
    /// A removal is still unconfirmed past `server.revocation_overdue_after`.
    RevocationOverdue => "revocation_overdue", Security;
    /// An access-review campaign started and waits for its reviewers.
    AccessReviewRequested => "access_review_requested", Reviewers;
    /// A campaign's items are still unanswered past its `remind_after`.
    AccessReviewReminder => "access_review_reminder", Reviewers;
    /// A campaign escalated: its escalation groups may decide it now.
    AccessReviewEscalated => "access_review_escalated", Reviewers;
    /// An external principal was granted access (or more time on it):
    /// their sponsor hears of every grant, and may revoke it.
    SponsoredGrant => "sponsored_grant", Sponsor;
}

impl Topic {
    pub fn parse(raw: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// The three routes a topic goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Audience {
    /// The request's eligible approvers.
    Approvers,
    /// The person whose access it is.
    Requester,
    /// The security team.
    Security,
    /// Whoever may judge a break-glass use now (the review's groups).
    Reviewers,
    /// The sponsor of an external principal whose access it is.
    Sponsor,
}

impl Audience {
    pub const ALL: [Audience; 5] = [
        Audience::Approvers,
        Audience::Requester,
        Audience::Security,
        Audience::Reviewers,
        Audience::Sponsor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Approvers => "approvers",
            Audience::Requester => "requester",
            Audience::Security => "security",
            Audience::Reviewers => "reviewers",
            Audience::Sponsor => "sponsor",
        }
    }
}

/// Channel names per audience. `None` for an audience in an entitlement's
/// override means "as the defaults say".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub approvers: Option<Vec<String>>,
    pub requester: Option<Vec<String>>,
    pub security: Option<Vec<String>>,
    pub reviewers: Option<Vec<String>>,
    pub sponsor: Option<Vec<String>>,
}

impl Routes {
    fn get(&self, audience: Audience) -> Option<&Vec<String>> {
        match audience {
            Audience::Approvers => self.approvers.as_ref(),
            Audience::Requester => self.requester.as_ref(),
            Audience::Security => self.security.as_ref(),
            Audience::Reviewers => self.reviewers.as_ref(),
            Audience::Sponsor => self.sponsor.as_ref(),
        }
    }

    /// The audience whose channels one nobody routed hears on: reviewers
    /// on the approvers' (both are asked to judge someone's access), a
    /// sponsor on the requester's (both are told of a person's grant).
    fn fallback(audience: Audience) -> Option<Audience> {
        match audience {
            Audience::Reviewers => Some(Audience::Approvers),
            Audience::Sponsor => Some(Audience::Requester),
            _ => None,
        }
    }
}

/// Who hears what, validated by the shell's config loader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// Channels per audience for every entitlement.
    pub defaults: Routes,
    /// Per entitlement, audiences routed differently (an empty list silences one).
    pub entitlements: BTreeMap<EntitlementId, Routes>,
    /// How long before a grant ends its requester is told (`None`: never).
    pub expiry_warning: Option<Duration>,
    /// A removal unconfirmed this long after the request ended is overdue
    /// (`server.revocation_overdue_after`).
    pub overdue_after: Duration,
}

impl Routing {
    /// The channels `audience` hears about `entitlement` on. Reviewers
    /// nobody routed hear on the approvers' channels, sponsors on the
    /// requester's ([`Routes::fallback`]).
    pub fn channels(&self, entitlement: &EntitlementId, audience: Audience) -> &[String] {
        let routed = |audience: Audience| {
            self.entitlements
                .get(entitlement)
                .and_then(|r| r.get(audience))
                .or_else(|| self.defaults.get(audience))
        };
        routed(audience)
            .or_else(|| Routes::fallback(audience).and_then(routed))
            .map_or(&[], Vec::as_slice)
    }
}

impl Routing {
    /// The channels `audience` hears about what concerns no entitlement
    /// (an access review): the defaults, an audience nobody routed falling
    /// back as in [`Routing::channels`].
    pub fn default_channels(&self, audience: Audience) -> &[String] {
        self.defaults
            .get(audience)
            .or_else(|| Routes::fallback(audience).and_then(|a| self.defaults.get(a)))
            .map_or(&[], Vec::as_slice)
    }
}

/// One message to send on one channel, caused by one audit event of a
/// transition (its index in `Transition::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub topic: Topic,
    pub channel: String,
    /// Index of the causing event in the transition's events: the shell
    /// names the notification after that event's place in the audit chain,
    /// which makes its idempotency key.
    pub cause: usize,
    /// Not sent before this time.
    pub not_before: Timestamp,
    /// What the message says, as plain text facts (request, requester,
    /// entitlement, why), fixed when it was decided.
    pub facts: BTreeMap<String, String>,
}

/// The notifications `t` causes under `routing`.
pub fn plan(t: &Transition, routing: &Routing) -> Vec<Notification> {
    let r = &t.request;
    let mut out = Vec::new();
    let mut add = |topic: Topic, cause: usize, event: &AuditEvent, not_before: Timestamp| {
        for channel in routing.channels(&r.entitlement, topic.audience()) {
            out.push(Notification {
                topic,
                channel: channel.clone(),
                cause,
                not_before,
                facts: facts(r, event),
            });
        }
    };
    for (i, event) in t.events.iter().enumerate() {
        match event.action {
            AuditAction::Requested => {
                if r.break_glass {
                    add(Topic::BreakGlass, i, event, event.at);
                }
                if r.review.is_some() {
                    add(Topic::ReviewRequested, i, event, event.at);
                }
                // Still pending once the whole transition is done (not
                // auto-approved or denied at once).
                if r.state == State::Pending {
                    add(Topic::AwaitingApproval, i, event, event.at);
                }
            }
            AuditAction::ApprovalReminded => add(Topic::ApprovalReminder, i, event, event.at),
            AuditAction::ApprovalEscalated => add(Topic::Escalated, i, event, event.at),
            AuditAction::ReviewOverdue => {
                add(Topic::ReviewEscalated, i, event, event.at);
                add(Topic::ReviewOverdue, i, event, event.at);
            }
            AuditAction::Reviewed
                if r.review
                    .as_ref()
                    .and_then(|v| v.verdict.as_ref())
                    .is_some_and(|v| !v.acceptable) =>
            {
                add(Topic::UseUnacceptable, i, event, event.at);
            }
            AuditAction::Approved => add(Topic::Approved, i, event, event.at),
            AuditAction::Denied => add(Topic::Denied, i, event, event.at),
            AuditAction::Granted | AuditAction::Extended => {
                let topic = if event.action == AuditAction::Granted {
                    Topic::Provisioned
                } else {
                    Topic::Extended
                };
                add(topic, i, event, event.at);
                if r.external.is_some() {
                    add(Topic::SponsoredGrant, i, event, event.at);
                }
                if let (Some(lead), Some(expires)) = (routing.expiry_warning, r.expires_at) {
                    let at = expires.minus(lead);
                    if at > event.at {
                        add(Topic::ExpiresSoon, i, event, at);
                    }
                }
            }
            // Still waiting once the whole transition is done (not granted
            // or denied at once).
            AuditAction::ExtensionRequested if r.extension_awaiting_approval().is_some() => {
                add(Topic::ExtensionAwaitingApproval, i, event, event.at);
            }
            AuditAction::IdleWarned => add(Topic::IdleWarning, i, event, event.at),
            AuditAction::ExtensionDenied => add(Topic::ExtensionDenied, i, event, event.at),
            AuditAction::ExtensionFailed => add(Topic::ExtensionFailed, i, event, event.at),
            AuditAction::Expired
            | AuditAction::Released
            | AuditAction::Revoked
            | AuditAction::TimedOut
            | AuditAction::Failed => {
                add(Topic::Ended, i, event, event.at);
                if removal_outstanding(r) {
                    add(
                        Topic::RevocationOverdue,
                        i,
                        event,
                        event.at.plus(routing.overdue_after),
                    );
                }
            }
            // The first failure only: the retries that follow are counted
            // in metrics and flagged once overdue, not mailed one by one.
            AuditAction::RevokeAttemptFailed
                if r.job
                    .as_ref()
                    .is_some_and(|j| j.action == JobAction::Revoke && j.attempts == 1) =>
            {
                add(Topic::RevocationFailed, i, event, event.at);
            }
            _ => {}
        }
    }
    out
}

fn removal_outstanding(r: &AccessRequest) -> bool {
    r.job
        .as_ref()
        .is_some_and(|j| j.action == JobAction::Revoke)
}

/// Whether a notification about `topic` still says something true when it
/// is due to be sent, judged on the request as it is now: approvers are not
/// asked about a request someone already decided, a grant that already
/// ended does not "expire soon", and a removal the target confirmed is not
/// overdue. Everything else reports what happened and is always sent.
pub fn still_relevant(topic: Topic, request: &AccessRequest, now: Timestamp) -> bool {
    match topic {
        Topic::AwaitingApproval | Topic::ApprovalReminder | Topic::Escalated => {
            request.state == State::Pending
        }
        Topic::ExtensionAwaitingApproval => request.extension_awaiting_approval().is_some(),
        Topic::ExpiresSoon | Topic::IdleWarning => request.holds_access(now),
        Topic::RevocationOverdue => removal_outstanding(request),
        Topic::ReviewRequested | Topic::ReviewEscalated => {
            request.review.as_ref().is_some_and(|r| r.is_open())
        }
        _ => true,
    }
}

/// [`still_relevant`], judged also on what the message says (`facts`, as
/// planned): a warning that a grant expires soon is stale once an
/// extension moved the expiry it names (the extension planned its own).
pub fn still_relevant_as_planned(
    topic: Topic,
    request: &AccessRequest,
    facts: &BTreeMap<String, String>,
    now: Timestamp,
) -> bool {
    let names_current_expiry = || {
        facts.get("expires_at").map(String::as_str)
            == request.expires_at.map(Timestamp::to_rfc3339).as_deref()
    };
    still_relevant(topic, request, now) && (topic != Topic::ExpiresSoon || names_current_expiry())
}

/// The facts a message shows about `r`, as of `event`.
fn facts(r: &AccessRequest, event: &AuditEvent) -> BTreeMap<String, String> {
    let mut f = BTreeMap::from([
        ("request".to_owned(), r.id.to_string()),
        ("requester".to_owned(), r.requester.to_string()),
        ("entitlement".to_owned(), r.entitlement.to_string()),
        ("state".to_owned(), r.state.as_str().to_owned()),
        ("duration".to_owned(), human_duration(r.duration)),
        ("reason".to_owned(), r.reason.clone()),
        ("event".to_owned(), event.action.as_str().to_owned()),
        ("actor".to_owned(), event.actor.as_str().to_owned()),
        ("at".to_owned(), event.at.to_rfc3339()),
    ]);
    if r.break_glass {
        f.insert("break_glass".to_owned(), "true".to_owned());
    }
    if let Some(terms) = &r.external {
        f.insert("sponsor".to_owned(), terms.sponsor.to_string());
        f.insert(
            "account_expires".to_owned(),
            terms.account_expires.to_rfc3339(),
        );
    }
    if event.action == AuditAction::IdleWarned {
        for key in ["idle_since", "release_at", "idle_limit"] {
            if let Some(v) = event.details.get(key) {
                f.insert(key.to_owned(), v.clone());
            }
        }
    }
    let optional = [
        ("ticket", r.ticket.clone()),
        ("expires_at", r.expires_at.map(Timestamp::to_rfc3339)),
        ("note", r.end_note.clone()),
        ("error", r.job.as_ref().and_then(|j| j.last_error.clone())),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            f.insert(key.to_owned(), v);
        }
    }
    if let Some(review) = &r.review {
        f.insert("review_by".to_owned(), join_groups(&review.groups()));
        f.insert("review_due".to_owned(), review.due_at.to_rfc3339());
        if let Some(v) = &review.verdict {
            f.insert(
                "review".to_owned(),
                format!(
                    "{} by {}: {}",
                    if v.acceptable {
                        "acceptable"
                    } else {
                        "unacceptable"
                    },
                    v.reviewer,
                    v.comment
                ),
            );
        }
    }
    if let Some(e) = &r.extension {
        f.insert("extension".to_owned(), human_duration(e.by));
        f.insert("extension_reason".to_owned(), e.reason.clone());
        f.insert("extension_state".to_owned(), e.state.as_str().to_owned());
        f.insert("new_expires_at".to_owned(), e.expires_at.to_rfc3339());
        if let Some(note) = &e.note {
            f.insert("extension_note".to_owned(), note.clone());
        }
        if r.extension_awaiting_approval().is_some() {
            f.insert(
                "approvals".to_owned(),
                format!(
                    "{} of {}",
                    e.approvals.len(),
                    r.extension_seats().map_or(0, |s| s.needed())
                ),
            );
        }
    }
    if r.state == State::Pending {
        f.insert(
            "approvals".to_owned(),
            format!("{} of {}", r.approvals.len(), r.approvals_needed()),
        );
    }
    f
}

/// How a notification that could not be sent is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Counted from when the notification was first due: after this long it
    /// is given up on, marked failed and counted.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(Timestamp),
    GiveUp,
}

impl RetryPolicy {
    /// After `attempts` failed attempts (a notification first due at
    /// `first_due`), at `now`: retry after a capped exponential backoff, or
    /// give up when a permanent error says retrying cannot help or the next
    /// attempt would fall past the horizon.
    pub fn after_failure(
        &self,
        attempts: u32,
        first_due: Timestamp,
        now: Timestamp,
        permanent: bool,
    ) -> AfterFailure {
        let next = now.plus(crate::time::capped_backoff(self.base, self.cap, attempts));
        if permanent || next > first_due.plus(self.give_up_after) {
            AfterFailure::GiveUp
        } else {
            AfterFailure::RetryAt(next)
        }
    }
}
