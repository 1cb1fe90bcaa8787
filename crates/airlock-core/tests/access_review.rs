//! Access-review campaigns as the core decides them: what a campaign
//! starts with, who may decide an item, the order and once-only of
//! reminders and escalation, the schedule, and what a removal does to a
//! later request.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::access_review::{
    self, Campaign, Decided, Decision, EligibilityDecision, Item, Step, Subject, Template,
};
use airlock_core::approval::{Route, Verdict};
use airlock_core::audit::{Actor, AuditAction};
use airlock_core::catalog::{PrincipalKind, User};
use airlock_core::notify::{Routes, Routing, Topic};
use airlock_core::request::Rejection;
use airlock_core::token::{Scopes, TokenUse};
use airlock_core::{CampaignId, EntitlementId, GroupName, Timestamp, TokenId, UserId};

const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
const DAY: Duration = Duration::from_secs(86_400);

fn groups(names: &[&str]) -> BTreeSet<GroupName> {
    names.iter().map(|g| GroupName::parse(g).unwrap()).collect()
}

fn person(name: &str, member_of: &[&str]) -> User {
    User::person(
        UserId::parse(name).unwrap(),
        groups(member_of),
        BTreeSet::new(),
    )
}

fn template() -> Template {
    Template {
        name: "quarterly".to_owned(),
        every: Some(90 * DAY),
        reviewers: groups(&["sre"]),
        due_within: 7 * DAY,
        remind_after: Some(2 * DAY),
        escalate_after: Some(5 * DAY),
        escalate_to: groups(&["security"]),
        eligibilities: true,
        standing: true,
    }
}

fn eligibility(user: &str) -> Subject {
    Subject::Eligibility {
        user: UserId::parse(user).unwrap(),
        entitlement: EntitlementId::parse("db").unwrap(),
        route: "auto".to_owned(),
    }
}

fn routing() -> Routing {
    Routing {
        defaults: Routes {
            approvers: Some(vec!["mail".to_owned()]),
            ..Routes::default()
        },
        ..Routing::default()
    }
}

fn started(subjects: Vec<Subject>) -> (Campaign, Vec<Item>) {
    let s = access_review::start(
        CampaignId::parse("ar_test").unwrap(),
        &template(),
        subjects,
        &[("down".to_owned(), "unreachable".to_owned())],
        Actor::System,
        &routing(),
        T0,
    );
    (s.campaign, s.items)
}

#[test]
fn a_campaign_starts_with_its_items_times_and_a_word_to_its_reviewers() {
    let s = access_review::start(
        CampaignId::parse("ar_test").unwrap(),
        &template(),
        vec![eligibility("alice"), eligibility("bob")],
        &[("down".to_owned(), "unreachable".to_owned())],
        Actor::System,
        &routing(),
        T0,
    );
    let c = &s.campaign;
    assert_eq!((c.items, c.open_items, c.completed_at), (2, 2, None));
    assert_eq!(c.due_at, T0.plus(7 * DAY));
    assert_eq!(c.next_due(), Some(T0.plus(2 * DAY)));
    assert_eq!(s.items.iter().map(|i| i.number).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(s.events.len(), 1);
    let e = &s.events[0];
    assert_eq!(e.action, AuditAction::AccessReviewStarted);
    assert_eq!(e.details["unlisted"], "down: unreachable");
    assert_eq!(e.details["campaign"], "ar_test");
    // Reviewers nobody routed hear on the approvers' channels.
    assert_eq!(s.notifications.len(), 1);
    let n = &s.notifications[0];
    assert_eq!(
        (n.topic, n.channel.as_str(), n.cause),
        (Topic::AccessReviewRequested, "mail", 0)
    );
    assert_eq!(n.facts["review_by"], "sre");

    // Nothing to review: recorded, complete at once, nobody bothered.
    let empty = access_review::start(
        CampaignId::parse("ar_empty").unwrap(),
        &template(),
        Vec::new(),
        &[],
        Actor::System,
        &routing(),
        T0,
    );
    assert_eq!(empty.campaign.completed_at, Some(T0));
    assert_eq!(empty.campaign.next_due(), None);
    let actions: Vec<AuditAction> = empty.events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::AccessReviewStarted,
            AuditAction::AccessReviewCompleted
        ]
    );
    assert!(empty.notifications.is_empty());
}

#[test]
fn only_a_reviewer_decides_and_never_about_their_own_access() {
    let (c, items) = started(vec![eligibility("alice"), eligibility("bob")]);
    let carol = person("carol", &["sre"]);
    let bob = person("bob", &["sre", "eng"]);
    let sam = person("sam", &["security"]);
    let refused = |r: Result<access_review::Ruling, Rejection>| match r {
        Err(Rejection::Forbidden(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let own = refused(access_review::decide(
        &c,
        &items[1],
        &bob,
        Decision::Confirm,
        "",
        T0,
    ));
    assert!(own.contains("their own access"), "{own}");
    // Escalation groups decide only once the campaign escalated.
    let early = refused(access_review::decide(
        &c,
        &items[0],
        &sam,
        Decision::Confirm,
        "",
        T0,
    ));
    assert!(early.contains("reviewer groups (sre)"), "{early}");
    let escalated = Campaign {
        escalated_at: Some(T0.plus(5 * DAY)),
        ..c.clone()
    };
    assert!(access_review::decide(&escalated, &items[0], &sam, Decision::Confirm, "", T0).is_ok());
    // A service never reviews; a token needs the approve scope.
    let service = User {
        kind: PrincipalKind::Service,
        ..person("deploy", &["sre"])
    };
    refused(access_review::decide(
        &c,
        &items[0],
        &service,
        Decision::Confirm,
        "",
        T0,
    ));
    let read_only = carol.clone().through(TokenUse {
        id: TokenId::parse("tok_x").unwrap(),
        scopes: Scopes::parse("read").unwrap(),
    });
    let scoped = refused(access_review::decide(
        &c,
        &items[0],
        &read_only,
        Decision::Confirm,
        "",
        T0,
    ));
    assert!(scoped.contains("`approve` scope"), "{scoped}");

    // A removal says why; the text rule holds for comments.
    match access_review::decide(&c, &items[0], &carol, Decision::Remove, "  ", T0) {
        Err(Rejection::Invalid { field, .. }) => assert_eq!(field, "comment"),
        other => panic!("expected an invalid comment, got {other:?}"),
    }
    match access_review::decide(&c, &items[0], &carol, Decision::Confirm, "ok\u{1b}[2J", T0) {
        Err(Rejection::Invalid { field, .. }) => assert_eq!(field, "comment"),
        other => panic!("expected an invalid comment, got {other:?}"),
    }
    let ruling = access_review::decide(
        &c,
        &items[0],
        &carol,
        Decision::Remove,
        " left the team ",
        T0,
    )
    .unwrap();
    assert_eq!(ruling.decided.comment, "left the team");
    assert_eq!(ruling.event.action, AuditAction::AccessReviewDecided);
    assert_eq!(
        ruling.event.subject.as_ref().map(UserId::as_str),
        Some("alice")
    );
    assert_eq!(
        ruling.event.entitlement.as_ref().map(EntitlementId::as_str),
        Some("db")
    );
    assert_eq!(ruling.completes.action, AuditAction::AccessReviewCompleted);

    // Decided once.
    let decided = Item {
        decided: Some(ruling.decided),
        ..items[0].clone()
    };
    match access_review::decide(&c, &decided, &bob, Decision::Confirm, "", T0) {
        Err(Rejection::Conflict(m)) => {
            assert!(m.contains("already decided: remove by `carol`"), "{m}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn reminders_and_escalation_come_once_each_in_time_order_while_items_are_open() {
    let (c, _) = started(vec![eligibility("alice")]);
    assert_eq!(access_review::due_step(&c, T0.plus(DAY)), None);
    assert_eq!(
        access_review::due_step(&c, T0.plus(2 * DAY)),
        Some(Step::Remind)
    );
    // Both due (a server that was down): the reminder first.
    assert_eq!(
        access_review::due_step(&c, T0.plus(6 * DAY)),
        Some(Step::Remind)
    );
    let (reminded, event, notifications) =
        access_review::take_step(&c, Step::Remind, &routing(), T0.plus(6 * DAY));
    assert_eq!(event.action, AuditAction::AccessReviewReminded);
    assert_eq!(notifications[0].topic, Topic::AccessReviewReminder);
    assert_eq!(reminded.next_due(), Some(T0.plus(5 * DAY)));
    assert_eq!(
        access_review::due_step(&reminded, T0.plus(6 * DAY)),
        Some(Step::Escalate)
    );
    let (escalated, event, notifications) =
        access_review::take_step(&reminded, Step::Escalate, &routing(), T0.plus(6 * DAY));
    assert_eq!(event.action, AuditAction::AccessReviewEscalated);
    assert_eq!(event.details["reviewers"], "security,sre");
    assert_eq!(notifications[0].facts["review_by"], "security,sre");
    assert_eq!(access_review::due_step(&escalated, T0.plus(60 * DAY)), None);
    assert_eq!(escalated.next_due(), None);
    // Nothing is due once every item is decided.
    let answered = Campaign {
        open_items: 0,
        ..c.clone()
    };
    assert_eq!(access_review::due_step(&answered, T0.plus(6 * DAY)), None);
    assert!(c.is_overdue(T0.plus(7 * DAY)) && !c.is_overdue(T0.plus(6 * DAY)));
}

#[test]
fn a_schedule_starts_a_campaign_every_period_and_never_on_demand_only() {
    let t = template();
    assert!(t.scheduled_start_due(None, T0));
    assert!(!t.scheduled_start_due(Some(T0), T0.plus(89 * DAY)));
    assert!(t.scheduled_start_due(Some(T0), T0.plus(90 * DAY)));
    let on_demand = Template { every: None, ..t };
    assert!(!on_demand.scheduled_start_due(None, T0));
}

#[test]
fn a_removed_eligibility_denies_the_next_request_and_a_confirmation_lifts_it() {
    let allowed = Verdict {
        route: Route::AutoApproved,
        policy_version: "v1".to_owned(),
        policies: vec!["entitlement:db:requestable_by".to_owned()],
        errors: Vec::new(),
        waiting: Default::default(),
    };
    let decision = |d: Decision| EligibilityDecision {
        campaign: CampaignId::parse("ar_q3").unwrap(),
        item: 4,
        decided: Decided {
            decision: d,
            by: UserId::parse("carol").unwrap(),
            at: T0,
            comment: "left the team".to_owned(),
            seq: Some(12),
        },
    };
    assert_eq!(access_review::overrule(allowed.clone(), None), allowed);
    assert_eq!(
        access_review::overrule(allowed.clone(), Some(&decision(Decision::Confirm))),
        allowed
    );
    let denied = access_review::overrule(allowed.clone(), Some(&decision(Decision::Remove)));
    match &denied.route {
        Route::Denied { reasons } => {
            assert_eq!(reasons.len(), 1);
            assert!(
                reasons[0].contains("`ar_q3` removed this eligibility (item 4, by `carol`")
                    && reasons[0].ends_with("left the team)"),
                "{reasons:?}"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(denied.policies, ["access-review:ar_q3"]);
    assert_eq!(denied.policy_version, "v1");
}
