//! Access reviews: campaigns in which reviewers go through, item by item,
//! who may ask for what (each eligibility the policies in force give a
//! user) and who holds privileged access no Airlock grant explains (each
//! standing holder a target lists), and confirm or remove each. A campaign
//! is started on demand or on its schedule, reminds its reviewers and
//! escalates while items are unanswered, and every decision lands in the
//! audit chain, whose position for each decision is the campaign's
//! evidence.
//!
//! What a removal means is decided here too: a removed eligibility refuses
//! the user's later requests for the entitlement ([`overrule`]) until a
//! later campaign confirms it again; a removed holder is taken out of the
//! target by its connector (the shell's, retried until it succeeds).
//! Nothing here reads a clock, talks to a target or stores anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::access::{may_review_item, ReviewerStanding};
use crate::approval::{Route, Verdict};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::User;
use crate::ids::{CampaignId, EntitlementId, GroupName, RequestId, UserId};
use crate::notify::{Notification, Routing, Topic};
use crate::request::{join_groups, user_text, Rejection};
use crate::standing::Risk;
use crate::text::TextKind;
use crate::time::Timestamp;

/// The longest comment a reviewer may give.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// A kind of campaign as the config describes it (`[access_reviews.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    /// A new campaign starts this long after the last one started; `None`:
    /// on demand only.
    pub every: Option<Duration>,
    /// Who reviews: any member of these groups.
    pub reviewers: BTreeSet<GroupName>,
    /// Items should be decided this long after the start.
    pub due_within: Duration,
    /// Reviewers are reminded of unanswered items this long after the start.
    pub remind_after: Option<Duration>,
    /// Unanswered items go to `escalate_to` as well this long after the start.
    pub escalate_after: Option<Duration>,
    pub escalate_to: BTreeSet<GroupName>,
    /// Review each eligibility the policies give.
    pub eligibilities: bool,
    /// Review each holder targets list that no Airlock grant explains.
    pub standing: bool,
}

impl Template {
    /// Whether a campaign of this template is due at `now`, the last one
    /// having started at `last` (`None`: never). On-demand templates never are.
    pub fn scheduled_start_due(&self, last: Option<Timestamp>, now: Timestamp) -> bool {
        match (self.every, last) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(every), Some(last)) => last.plus(every) <= now,
        }
    }
}

/// One campaign as stored: its settings fixed at start, its steps taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: CampaignId,
    pub template: String,
    /// Who started it (`system` for a scheduled one), as the audit record
    /// names actors.
    pub started_by: String,
    pub started_at: Timestamp,
    pub due_at: Timestamp,
    pub reviewers: BTreeSet<GroupName>,
    pub escalate_to: BTreeSet<GroupName>,
    pub remind_at: Option<Timestamp>,
    pub escalate_at: Option<Timestamp>,
    pub reminded_at: Option<Timestamp>,
    pub escalated_at: Option<Timestamp>,
    /// When its last item was decided.
    pub completed_at: Option<Timestamp>,
    pub items: u32,
    pub open_items: u32,
}

impl Campaign {
    /// The groups whose members may decide its items now: the reviewers,
    /// and once it escalated, the escalation groups too.
    pub fn reviewer_groups(&self) -> BTreeSet<GroupName> {
        let mut groups = self.reviewers.clone();
        if self.escalated_at.is_some() {
            groups.extend(self.escalate_to.iter().cloned());
        }
        groups
    }

    pub fn is_open(&self) -> bool {
        self.completed_at.is_none()
    }

    /// Open items past the due time.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.is_open() && self.due_at <= now
    }

    /// When the next reminder or escalation falls due, if one is left.
    pub fn next_due(&self) -> Option<Timestamp> {
        if !self.is_open() {
            return None;
        }
        let remind = self.remind_at.filter(|_| self.reminded_at.is_none());
        let escalate = self.escalate_at.filter(|_| self.escalated_at.is_none());
        remind.into_iter().chain(escalate).min()
    }
}

/// What an item asks the reviewers about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `user` may ask for `entitlement` under the policies in force.
    Eligibility {
        user: UserId,
        entitlement: EntitlementId,
        /// How the user would get it (`auto`, the approval tiers).
        route: String,
    },
    /// A target lists `principal` as a holder of the connector's access and
    /// no open Airlock grant explains it.
    Holder {
        connector: String,
        principal: String,
        /// `standing`, `lingering` or `unknown_request`.
        status: String,
        /// The Airlock user it stands for, when known.
        user: Option<UserId>,
        /// The ended (or unknown) request it names, when it names one.
        request: Option<RequestId>,
        entitlements: Vec<EntitlementId>,
        risk: Risk,
    },
}

impl Subject {
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Eligibility { .. } => "eligibility",
            Subject::Holder { .. } => "holder",
        }
    }

    /// The Airlock user the item is about, when known: nobody reviews
    /// their own access.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Subject::Eligibility { user, .. } => Some(user),
            Subject::Holder { user, .. } => user.as_ref(),
        }
    }

    /// One line saying what it is, for messages and errors.
    pub fn describe(&self) -> String {
        match self {
            Subject::Eligibility {
                user, entitlement, ..
            } => format!("`{user}` may ask for `{entitlement}`"),
            Subject::Holder {
                connector,
                principal,
                status,
                ..
            } => format!("`{principal}` holds `{connector}` access ({status})"),
        }
    }

    fn details(&self, into: &mut BTreeMap<String, String>) {
        into.insert("kind".to_owned(), self.kind().to_owned());
        match self {
            Subject::Eligibility { route, .. } => {
                into.insert("route".to_owned(), route.clone());
            }
            Subject::Holder {
                connector,
                principal,
                status,
                request,
                entitlements,
                risk,
                ..
            } => {
                into.insert("connector".to_owned(), connector.clone());
                into.insert("principal".to_owned(), principal.clone());
                into.insert("status".to_owned(), status.clone());
                into.insert("risk".to_owned(), risk.as_str().to_owned());
                into.insert(
                    "entitlements".to_owned(),
                    entitlements
                        .iter()
                        .map(EntitlementId::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                );
                if let Some(r) = request {
                    into.insert("named_request".to_owned(), r.to_string());
                }
            }
        }
    }

    fn entitlement(&self) -> Option<&EntitlementId> {
        match self {
            Subject::Eligibility { entitlement, .. } => Some(entitlement),
            Subject::Holder { .. } => None,
        }
    }
}

/// A reviewer's answer to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The access is right: keep it.
    Confirm,
    /// Take it away.
    Remove,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Confirm => "confirm",
            Decision::Remove => "remove",
        }
    }

    pub fn parse(raw: &str) -> Option<Decision> {
        match raw {
            "confirm" => Some(Decision::Confirm),
            "remove" => Some(Decision::Remove),
            _ => None,
        }
    }
}

/// A decided item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub decision: Decision,
    pub by: UserId,
    pub at: Timestamp,
    pub comment: String,
    /// The decision's place in the audit chain (its event's seq), known
    /// once stored.
    pub seq: Option<i64>,
}

/// Where taking a removed holder out of its target stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removal {
    /// When the target confirmed it.
    pub done_at: Option<Timestamp>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// One item of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// 1-based, in the order the campaign listed them.
    pub number: u32,
    pub subject: Subject,
    pub decided: Option<Decided>,
    /// For a removed holder: taking it out of the target.
    pub removal: Option<Removal>,
}

impl Item {
    /// Whether its removal still has to be carried out in a target.
    pub fn removal_outstanding(&self) -> bool {
        matches!(self.subject, Subject::Holder { .. })
            && self
                .decided
                .as_ref()
                .is_some_and(|d| d.decision == Decision::Remove)
            && self.removal.as_ref().is_none_or(|r| r.done_at.is_none())
    }
}

fn event(
    actor: Actor,
    action: AuditAction,
    campaign: &Campaign,
    at: Timestamp,
    mut details: BTreeMap<String, String>,
) -> AuditEvent {
    details.insert("campaign".to_owned(), campaign.id.to_string());
    details.insert("template".to_owned(), campaign.template.clone());
    AuditEvent {
        at,
        actor,
        action,
        request: None,
        entitlement: None,
        subject: None,
        details,
    }
}

/// A new campaign of `template` over `subjects`, started by `by` (the
/// scheduler: [`Actor::System`]) at `now`, with its audit events and the
/// notifications its reviewers get (caused by the first event). `unlisted`
/// names the connectors whose holders could not be listed, said in the
/// record. A campaign with nothing to review is recorded all the same, and
/// complete at once: that a review ran and found nothing is evidence too.
pub fn start(
    id: CampaignId,
    template: &Template,
    subjects: Vec<Subject>,
    unlisted: &[(String, String)],
    by: Actor,
    routing: &Routing,
    now: Timestamp,
) -> Started {
    let count = u32::try_from(subjects.len()).unwrap_or(u32::MAX);
    let campaign = Campaign {
        id,
        template: template.name.clone(),
        started_by: by.as_str().to_owned(),
        started_at: now,
        due_at: now.plus(template.due_within),
        reviewers: template.reviewers.clone(),
        escalate_to: template.escalate_to.clone(),
        remind_at: template.remind_after.map(|d| now.plus(d)),
        escalate_at: template
            .escalate_after
            .filter(|_| !template.escalate_to.is_empty())
            .map(|d| now.plus(d)),
        reminded_at: None,
        escalated_at: None,
        completed_at: (count == 0).then_some(now),
        items: count,
        open_items: count,
    };
    let items = subjects
        .into_iter()
        .zip(1u32..)
        .map(|(subject, number)| Item {
            number,
            subject,
            decided: None,
            removal: None,
        })
        .collect();
    let mut details = BTreeMap::from([
        ("items".to_owned(), count.to_string()),
        ("due_at".to_owned(), campaign.due_at.to_rfc3339()),
        ("reviewers".to_owned(), join_groups(&campaign.reviewers)),
    ]);
    if !unlisted.is_empty() {
        details.insert(
            "unlisted".to_owned(),
            unlisted
                .iter()
                .map(|(c, why)| format!("{c}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    let mut events = vec![event(
        by,
        AuditAction::AccessReviewStarted,
        &campaign,
        now,
        details,
    )];
    let notifications = if count == 0 {
        events.push(event(
            Actor::System,
            AuditAction::AccessReviewCompleted,
            &campaign,
            now,
            BTreeMap::from([("items".to_owned(), "0".to_owned())]),
        ));
        Vec::new()
    } else {
        notifications(&campaign, Topic::AccessReviewRequested, routing, now)
    };
    Started {
        campaign,
        items,
        events,
        notifications,
    }
}

/// A campaign as it starts: what the store writes in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub campaign: Campaign,
    pub items: Vec<Item>,
    pub events: Vec<AuditEvent>,
    /// Caused by the first of `events`.
    pub notifications: Vec<Notification>,
}

/// What deciding an item records (a ruling): the decision and its event,
/// and the event that closes the campaign, which the store appends only if this
/// decision answered its last open item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub decided: Decided,
    pub event: AuditEvent,
    pub completes: AuditEvent,
}

/// `reviewer` decides `item` of `campaign` at `now`. Refused unless they
/// may review it (a member of the campaign's reviewer groups now, never
/// about their own access, never a service), the item is still open, and
/// a removal says why.
pub fn decide(
    campaign: &Campaign,
    item: &Item,
    reviewer: &User,
    decision: Decision,
    comment: &str,
    now: Timestamp,
) -> Result<Ruling, Rejection> {
    may_review_item(
        reviewer,
        &ReviewerStanding {
            groups: &campaign.reviewer_groups(),
            about: item.subject.user(),
        },
    )?;
    if let Some(d) = &item.decided {
        return Err(Rejection::Conflict(format!(
            "item {} of `{}` was already decided: {} by `{}` at {}",
            item.number,
            campaign.id,
            d.decision.as_str(),
            d.by,
            d.at.to_rfc3339()
        )));
    }
    let comment = user_text("comment", comment, TextKind::Note, MAX_COMMENT_CHARS)?;
    if decision == Decision::Remove && comment.is_empty() {
        return Err(Rejection::Invalid {
            field: "comment",
            message: "a removal needs a comment saying why".to_owned(),
        });
    }
    let decided = Decided {
        decision,
        by: reviewer.id.clone(),
        at: now,
        comment,
        seq: None,
    };
    let mut details = BTreeMap::from([
        ("item".to_owned(), item.number.to_string()),
        ("decision".to_owned(), decision.as_str().to_owned()),
        ("comment".to_owned(), decided.comment.clone()),
    ]);
    item.subject.details(&mut details);
    let mut decided_event = event(
        Actor::of(reviewer),
        AuditAction::AccessReviewDecided,
        campaign,
        now,
        details,
    );
    decided_event.subject = item.subject.user().cloned();
    decided_event.entitlement = item.subject.entitlement().cloned();
    let completes = event(
        Actor::System,
        AuditAction::AccessReviewCompleted,
        campaign,
        now,
        BTreeMap::from([("items".to_owned(), campaign.items.to_string())]),
    );
    Ok(Ruling {
        decided,
        event: decided_event,
        completes,
    })
}

/// A reminder or escalation that fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Remind,
    Escalate,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Remind => "remind",
            Step::Escalate => "escalate",
        }
    }
}

/// The step of `campaign` due at `now`, if any (the earlier first; each
/// happens once, and only while items are open).
pub fn due_step(campaign: &Campaign, now: Timestamp) -> Option<Step> {
    if !campaign.is_open() || campaign.open_items == 0 {
        return None;
    }
    let remind = campaign
        .remind_at
        .filter(|at| *at <= now && campaign.reminded_at.is_none());
    let escalate = campaign
        .escalate_at
        .filter(|at| *at <= now && campaign.escalated_at.is_none());
    match (remind, escalate) {
        (Some(r), Some(e)) if e < r => Some(Step::Escalate),
        (Some(_), _) => Some(Step::Remind),
        (None, Some(_)) => Some(Step::Escalate),
        (None, None) => None,
    }
}

/// Takes `step` on `campaign` at `now`: the campaign after it, its audit
/// event and the notifications it causes under `routing`.
pub fn take_step(
    campaign: &Campaign,
    step: Step,
    routing: &Routing,
    now: Timestamp,
) -> (Campaign, AuditEvent, Vec<Notification>) {
    let mut next = campaign.clone();
    let (action, topic) = match step {
        Step::Remind => {
            next.reminded_at = Some(now);
            (
                AuditAction::AccessReviewReminded,
                Topic::AccessReviewReminder,
            )
        }
        Step::Escalate => {
            next.escalated_at = Some(now);
            (
                AuditAction::AccessReviewEscalated,
                Topic::AccessReviewEscalated,
            )
        }
    };
    let details = BTreeMap::from([
        ("open_items".to_owned(), campaign.open_items.to_string()),
        ("reviewers".to_owned(), join_groups(&next.reviewer_groups())),
    ]);
    let e = event(Actor::System, action, &next, now, details);
    let notifications = notifications(&next, topic, routing, now);
    (next, e, notifications)
}

/// The notifications a campaign's reviewers get about `topic`, caused by
/// the first event of its change.
pub fn notifications(
    campaign: &Campaign,
    topic: Topic,
    routing: &Routing,
    now: Timestamp,
) -> Vec<Notification> {
    let facts = BTreeMap::from([
        ("campaign".to_owned(), campaign.id.to_string()),
        ("template".to_owned(), campaign.template.clone()),
        (
            "review_by".to_owned(),
            join_groups(&campaign.reviewer_groups()),
        ),
        ("review_due".to_owned(), campaign.due_at.to_rfc3339()),
        ("items".to_owned(), campaign.items.to_string()),
        ("open_items".to_owned(), campaign.open_items.to_string()),
        ("at".to_owned(), now.to_rfc3339()),
    ]);
    routing
        .default_channels(topic.audience())
        .iter()
        .map(|channel| Notification {
            topic,
            channel: channel.clone(),
            cause: 0,
            not_before: now,
            facts: facts.clone(),
        })
        .collect()
}

/// The latest decision any campaign made about an eligibility, as the
/// store finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EligibilityDecision {
    pub campaign: CampaignId,
    pub item: u32,
    pub decided: Decided,
}

/// The policy set's `verdict` on a new request, overruled when the latest
/// access review of this eligibility removed it: then the request is
/// denied, naming the campaign, the reviewer and why. A later campaign that
/// confirms the eligibility lifts it.
pub fn overrule(verdict: Verdict, latest: Option<&EligibilityDecision>) -> Verdict {
    match latest {
        Some(r) if r.decided.decision == Decision::Remove => Verdict {
            route: Route::Denied {
                reasons: vec![format!(
                    "the access review `{}` removed this eligibility (item {}, by `{}` at {}: {})",
                    r.campaign,
                    r.item,
                    r.decided.by,
                    r.decided.at.to_rfc3339(),
                    r.decided.comment
                )],
            },
            policies: vec![format!("access-review:{}", r.campaign)],
            ..verdict
        },
        _ => verdict,
    }
}
