//! Break-glass through the state machine: an emergency ask an entitlement
//! allows is granted at once whatever route the policies would take, within
//! its own shorter maximum and with a reason, and leaves a review behind
//! that only its reviewers (never the user) settle, once, and that
//! escalates when nobody does in time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use airlock_core::approval::{ApprovalTier, Route, Verdict};
use airlock_core::audit::AuditAction;
use airlock_core::catalog::{BreakGlassRules, Entitlement, User};
use airlock_core::request::{
    apply, submit, Command, JobAction, LifecycleSettings, NewRequest, Rejection, State, Transition,
};
use airlock_core::Timestamp;
use fixtures::groups;

mod fixtures;

const T0_MS: i64 = 1_700_000_000_000;
const DAY: i64 = 24 * 3600;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + secs * 1000)
}

fn user(id: &str, in_groups: &[&str]) -> User {
    fixtures::person(id, in_groups)
}

/// Up to 4h normally (default 2h), break-glass up to 1h, reviewed by
/// `security` within a day, then `leads` too.
fn entitlement(break_glass: bool) -> Entitlement {
    Entitlement {
        max_duration: Duration::from_secs(4 * 3600),
        default_duration: Duration::from_secs(2 * 3600),
        break_glass: break_glass.then(|| BreakGlassRules {
            max_duration: Duration::from_secs(3600),
            review_by: groups(&["security"]),
            review_within: Duration::from_secs(DAY as u64),
            escalate_to: groups(&["leads"]),
        }),
        ..fixtures::entitlement("prod-db", "pg")
    }
}

fn needs_an_approver() -> Verdict {
    let tier = ApprovalTier {
        count: 1,
        groups: groups(&["sre"]),
        policy: "owners".to_owned(),
    };
    fixtures::verdict(Route::NeedsApprovals(vec![tier]), &["glass"])
}

fn ask(secs: Option<u64>, reason: &str) -> NewRequest {
    NewRequest {
        duration: secs.map(Duration::from_secs),
        reason: reason.to_owned(),
        break_glass: true,
        ..fixtures::new_request("r1")
    }
}

fn emergency(
    new: NewRequest,
    ent: &Entitlement,
    verdict: Verdict,
) -> Result<Transition, Rejection> {
    submit(
        new,
        &user("rita", &["eng"]),
        ent,
        None,
        verdict,
        &LifecycleSettings::default(),
        at(0),
    )
}

fn step(t: &Transition, command: Command, secs: i64) -> Result<Transition, Rejection> {
    apply(
        t.request.clone(),
        command,
        &LifecycleSettings::default(),
        at(secs),
    )
}

fn review(by: User, acceptable: bool, comment: &str) -> Command {
    Command::Review {
        reviewer: by,
        acceptable,
        comment: comment.to_owned(),
    }
}

fn invalid_field(r: Result<Transition, Rejection>) -> &'static str {
    match r {
        Err(Rejection::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

fn actions(t: &Transition) -> Vec<AuditAction> {
    t.events.iter().map(|e| e.action).collect()
}

#[test]
fn an_allowed_emergency_is_granted_at_once_whatever_the_route() {
    let t = emergency(
        ask(None, "primary down"),
        &entitlement(true),
        needs_an_approver(),
    )
    .unwrap();
    assert_eq!(t.request.state, State::Approved);
    assert!(t.request.approval_tiers.is_empty());
    assert_eq!(t.effects.len(), 1, "the grant goes out now");
    assert_eq!(
        t.request.duration,
        Duration::from_secs(3600),
        "the default is cut to the break-glass maximum"
    );
    assert_eq!(actions(&t), [AuditAction::Requested, AuditAction::Approved]);
    assert_eq!(t.events[0].details["decision"], "break_glass");
    let review = t.request.review.as_ref().expect("a review is owed");
    assert_eq!(review.reviewers, groups(&["security"]));
    assert_eq!(review.due_at, at(DAY));
    assert!(review.is_open());
    assert!(
        t.request.next_due().unwrap() < at(DAY),
        "the grant's work is due before the review"
    );
}

#[test]
fn an_emergency_is_refused_where_not_allowed_too_long_or_without_a_reason() {
    let glass = entitlement(true);
    assert_eq!(
        invalid_field(emergency(
            ask(None, "primary down"),
            &entitlement(false),
            needs_an_approver()
        )),
        "break_glass"
    );
    assert_eq!(
        invalid_field(emergency(
            ask(Some(3601), "primary down"),
            &glass,
            needs_an_approver()
        )),
        "duration"
    );
    assert_eq!(
        invalid_field(emergency(ask(Some(600), "  "), &glass, needs_an_approver())),
        "reason"
    );
}

#[test]
fn a_denied_emergency_is_recorded_as_denied_and_owes_no_review() {
    let denied = Verdict {
        route: Route::Denied {
            reasons: vec!["contractors never".to_owned()],
        },
        ..needs_an_approver()
    };
    let t = emergency(ask(None, "primary down"), &entitlement(true), denied).unwrap();
    assert_eq!(t.request.state, State::Denied);
    assert!(t.request.review.is_none());
    assert!(t.effects.is_empty());
}

#[test]
fn only_a_reviewer_other_than_the_user_judges_a_use_and_only_once() {
    let t = emergency(
        ask(Some(1800), "primary down"),
        &entitlement(true),
        needs_an_approver(),
    )
    .unwrap();
    let forbidden = |r: Result<Transition, Rejection>| {
        assert!(matches!(r, Err(Rejection::Forbidden(_))), "{r:?}");
    };
    // The user, even in the review group; someone outside it; the escalation
    // group before the review is overdue.
    forbidden(step(
        &t,
        review(user("rita", &["security"]), true, "fine"),
        5,
    ));
    forbidden(step(&t, review(user("bob", &["sre"]), true, "fine"), 5));
    forbidden(step(&t, review(user("lee", &["leads"]), true, "fine"), 5));
    assert_eq!(
        step(&t, review(user("sam", &["security"]), true, "   "), 5)
            .err()
            .map(|e| e.to_string()),
        Some("comment: is required: say why the use was or was not acceptable".to_owned())
    );
    let judged = step(
        &t,
        review(user("sam", &["security"]), false, "no incident on record"),
        5,
    )
    .unwrap();
    assert_eq!(actions(&judged), [AuditAction::Reviewed]);
    assert_eq!(judged.events[0].details["acceptable"], "false");
    let verdict = judged
        .request
        .review
        .as_ref()
        .unwrap()
        .verdict
        .clone()
        .unwrap();
    assert!(!verdict.acceptable);
    assert_eq!(verdict.reviewer.as_str(), "sam");
    assert_eq!(
        judged.request.state,
        State::Approved,
        "a verdict does not end the grant"
    );
    assert!(matches!(
        step(&judged, review(user("dave", &["security"]), true, "ok"), 6),
        Err(Rejection::Conflict(_))
    ));
}

#[test]
fn an_ordinary_request_has_nothing_to_review() {
    let ordinary = NewRequest {
        break_glass: false,
        ..ask(None, "routine")
    };
    let t = emergency(ordinary, &entitlement(true), needs_an_approver()).unwrap();
    assert_eq!(t.request.state, State::Pending);
    assert!(matches!(
        step(&t, review(user("sam", &["security"]), true, "ok"), 5),
        Err(Rejection::Conflict(_))
    ));
}

#[test]
fn an_unreviewed_use_escalates_once_when_due_even_after_the_grant_ended() {
    let t = emergency(
        ask(Some(1800), "primary down"),
        &entitlement(true),
        needs_an_approver(),
    )
    .unwrap();
    let token = t.effects[0].token;
    let active = step(
        &t,
        Command::JobSucceeded {
            action: JobAction::Grant,
            token,
            certificate: None,
        },
        1,
    )
    .unwrap();
    let expired = step(&active, Command::Tick, 1801).unwrap();
    assert_eq!(expired.request.state, State::Expired);
    let token = expired.effects[0].token;
    let removed = step(
        &expired,
        Command::JobSucceeded {
            action: JobAction::Revoke,
            token,
            certificate: None,
        },
        1802,
    )
    .unwrap();
    assert_eq!(removed.request.next_due(), Some(at(DAY)));
    // Early: nothing happens.
    assert!(step(&removed, Command::Tick, DAY - 1)
        .unwrap()
        .events
        .is_empty());
    let overdue = step(&removed, Command::Tick, DAY).unwrap();
    assert_eq!(actions(&overdue), [AuditAction::ReviewOverdue]);
    assert_eq!(overdue.events[0].details["escalated_to"], "leads");
    assert_eq!(overdue.request.next_due(), None, "escalated once");
    let review_state = overdue.request.review.as_ref().unwrap();
    assert_eq!(review_state.groups(), groups(&["leads", "security"]));
    assert!(review_state.is_overdue(at(DAY + 1)));
    assert!(step(&overdue, Command::Tick, DAY + 60)
        .unwrap()
        .events
        .is_empty());
    // Now the escalation group may judge it.
    let judged = step(
        &overdue,
        review(user("lee", &["leads"]), true, "checked the incident"),
        DAY + 60,
    )
    .unwrap();
    assert!(!judged.request.review.unwrap().is_open());
}
