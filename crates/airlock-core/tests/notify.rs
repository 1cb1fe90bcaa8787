//! Who hears what, data-driven: each case walks a request through the real
//! lifecycle and names the notifications the last change must cause (topic,
//! channel, when due), all through the one [`check`] helper.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock_core::approval::{ApprovalTier, ApproverVerdict, Route, Verdict};
use airlock_core::catalog::{Entitlement, User};
use airlock_core::notify::{
    plan, still_relevant, still_relevant_as_planned, AfterFailure, RetryPolicy, Routes, Routing,
    Topic,
};
use airlock_core::request::{
    apply, submit, Command, JobAction, LifecycleSettings, NewRequest, State, Transition,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp};

mod fixtures;

const T0_MS: i64 = 1_700_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + secs * 1000)
}

fn user(id: &str, groups: &[&str]) -> User {
    fixtures::person(id, groups)
}

fn entitlement() -> Entitlement {
    entitlement_waiting(Default::default())
}

fn entitlement_waiting(waiting: airlock_core::catalog::WaitingTimes) -> Entitlement {
    Entitlement {
        max_duration: Duration::from_secs(24 * 3600),
        default_duration: Duration::from_secs(3600),
        waiting,
        break_glass: Some(airlock_core::catalog::BreakGlassRules {
            max_duration: Duration::from_secs(3600),
            review_by: [GroupName::parse("security").unwrap()].into(),
            review_within: Duration::from_secs(24 * 3600),
            escalate_to: [GroupName::parse("leads").unwrap()].into(),
        }),
        ..fixtures::entitlement("db", "pg")
    }
}

fn verdict(approvals: u32) -> Verdict {
    let route = if approvals == 0 {
        Route::AutoApproved
    } else {
        Route::NeedsApprovals(vec![ApprovalTier {
            count: approvals,
            groups: BTreeSet::from([GroupName::parse("sre").unwrap()]),
            policy: "p".to_owned(),
        }])
    };
    fixtures::verdict(route, &["p"])
}

fn permitted() -> ApproverVerdict {
    ApproverVerdict {
        outcome: Ok(vec!["p".to_owned()]),
        policy_version: "v1".to_owned(),
    }
}

/// A request for one hour (or `secs`), approvals needed, break-glass or not.
fn submitted(approvals: u32, secs: u64, break_glass: bool) -> Transition {
    submit(
        NewRequest {
            duration: Some(Duration::from_secs(secs)),
            reason: "fix it".to_owned(),
            break_glass,
            ..fixtures::new_request("r1")
        },
        &user("alice", &["eng"]),
        &entitlement(),
        None,
        verdict(approvals),
        &LifecycleSettings::default(),
        at(0),
    )
    .unwrap()
}

fn step(t: &Transition, command: Command, secs: i64) -> Transition {
    apply(
        t.request.clone(),
        command,
        &LifecycleSettings::default(),
        at(secs),
    )
    .unwrap()
}

fn token(t: &Transition) -> u64 {
    t.effects.last().expect("a connector call").token
}

fn granted(secs: u64) -> Transition {
    let t = submitted(0, secs, false);
    let tok = token(&t);
    step(
        &t,
        Command::JobSucceeded {
            action: JobAction::Grant,
            token: tok,
            certificate: None,
        },
        1,
    )
}

fn ended_by_expiry() -> Transition {
    let t = granted(3600);
    step(&t, Command::Tick, 3601)
}

fn revoke_failed(t: &Transition, secs: i64) -> Transition {
    let tok = token(t);
    step(
        t,
        Command::JobFailed {
            action: JobAction::Revoke,
            token: tok,
            error: "target down".to_owned(),
            retryable: true,
        },
        secs,
    )
}

/// Approvers on `chat`, requesters on `mail`, security on `pager`; a
/// 15-minute expiry warning; removals overdue after 5 minutes.
fn routing() -> Routing {
    let one = |c: &str| Some(vec![c.to_owned()]);
    Routing {
        defaults: Routes {
            approvers: one("chat"),
            requester: one("mail"),
            security: one("pager"),
            reviewers: None,
            sponsor: None,
        },
        entitlements: BTreeMap::new(),
        expiry_warning: Some(Duration::from_secs(15 * 60)),
        overdue_after: Duration::from_secs(300),
    }
}

/// The notifications `t` must cause under `routing`: (topic, channel, due
/// in seconds after T0), in any order.
fn check(t: &Transition, routing: &Routing, expect: &[(Topic, &str, i64)]) {
    let got: BTreeSet<(Topic, String, Timestamp)> = plan(t, routing)
        .into_iter()
        .map(|n| {
            assert!(
                n.cause < t.events.len(),
                "{n:?} names no event of its change"
            );
            assert_eq!(n.facts.get("request").map(String::as_str), Some("r1"));
            (n.topic, n.channel, n.not_before)
        })
        .collect();
    let want: BTreeSet<(Topic, String, Timestamp)> = expect
        .iter()
        .map(|(topic, channel, secs)| (*topic, (*channel).to_owned(), at(*secs)))
        .collect();
    assert_eq!(got, want, "events: {:?}", t.events);
}

#[test]
fn each_change_tells_the_people_it_concerns() {
    let r = routing();
    let pending = submitted(1, 3600, false);
    check(&pending, &r, &[(Topic::AwaitingApproval, "chat", 0)]);
    // Break-glass waits for nobody: security hears, and the reviewers are
    // asked (on the approvers' channels, as no reviewers route is set).
    check(
        &submitted(1, 3600, true),
        &r,
        &[
            (Topic::Approved, "mail", 0),
            (Topic::BreakGlass, "pager", 0),
            (Topic::ReviewRequested, "chat", 0),
        ],
    );
    // Auto-approved: no approver is asked.
    check(
        &submitted(0, 3600, false),
        &r,
        &[(Topic::Approved, "mail", 0)],
    );
    let approve = Command::Approve {
        approver: user("bob", &["sre"]),
        comment: None,
        permission: permitted(),
    };
    check(
        &step(&pending, approve, 5),
        &r,
        &[(Topic::Approved, "mail", 5)],
    );
    let deny = Command::Deny {
        approver: user("bob", &["sre"]),
        reason: "not now".to_owned(),
        permission: permitted(),
    };
    check(&step(&pending, deny, 5), &r, &[(Topic::Denied, "mail", 5)]);
    // Granted at 1 for an hour: told now, and warned 15 minutes before the end.
    check(
        &granted(3600),
        &r,
        &[
            (Topic::Provisioned, "mail", 1),
            (Topic::ExpiresSoon, "mail", 3600 - 900),
        ],
    );
    // A grant shorter than the lead time gets no warning.
    check(&granted(600), &r, &[(Topic::Provisioned, "mail", 1)]);
    // Expired at 3601: the requester hears, and the security route will if
    // the removal is still unconfirmed five minutes on.
    let ended = ended_by_expiry();
    check(
        &ended,
        &r,
        &[
            (Topic::Ended, "mail", 3601),
            (Topic::RevocationOverdue, "pager", 3901),
        ],
    );
    // The first failed removal is news; the retries after it are not.
    let failed_once = revoke_failed(&ended, 3602);
    check(
        &failed_once,
        &r,
        &[(Topic::RevocationFailed, "pager", 3602)],
    );
    let retry_at = (failed_once.request.next_due().unwrap().unix_millis() - T0_MS) / 1000;
    let claimed = step(&failed_once, Command::Tick, retry_at);
    check(&revoke_failed(&claimed, retry_at + 1), &r, &[]);
}

#[test]
fn an_entitlement_can_route_an_audience_elsewhere_or_silence_it() {
    let mut r = routing();
    r.entitlements.insert(
        EntitlementId::parse("db").unwrap(),
        Routes {
            approvers: Some(vec!["pager".to_owned(), "chat".to_owned()]),
            requester: Some(Vec::new()),
            security: None,
            reviewers: None,
            sponsor: None,
        },
    );
    check(
        &submitted(1, 3600, true),
        &r,
        &[
            (Topic::BreakGlass, "pager", 0),
            (Topic::ReviewRequested, "pager", 0),
            (Topic::ReviewRequested, "chat", 0),
        ],
    );
    check(&submitted(0, 3600, false), &r, &[]);
    // No routing at all: nothing is planned, nothing written.
    check(&submitted(1, 3600, true), &Routing::default(), &[]);
}

#[test]
fn a_break_glass_use_is_chased_until_reviewed_and_a_bad_one_reported() {
    let mut r = routing();
    r.defaults.reviewers = Some(vec!["mail".to_owned()]);
    let glass = submitted(0, 1800, true);
    let tok = token(&glass);
    let active = step(
        &glass,
        Command::JobSucceeded {
            action: JobAction::Grant,
            token: tok,
            certificate: None,
        },
        1,
    );
    let released = step(
        &active,
        Command::Release {
            by: user("alice", &["eng"]),
        },
        60,
    );
    let tok = token(&released);
    let removed = step(
        &released,
        Command::JobSucceeded {
            action: JobAction::Revoke,
            token: tok,
            certificate: None,
        },
        61,
    );
    assert_eq!(
        removed.request.next_due(),
        Some(at(24 * 3600)),
        "the review's due time keeps the ended request on the schedule"
    );
    // Unreviewed a day on: the reviewers (with the escalation group now)
    // are asked again, and the security route hears of it. Once.
    let overdue = step(&removed, Command::Tick, 24 * 3600);
    check(
        &overdue,
        &r,
        &[
            (Topic::ReviewEscalated, "mail", 24 * 3600),
            (Topic::ReviewOverdue, "pager", 24 * 3600),
        ],
    );
    assert_eq!(overdue.request.next_due(), None);
    check(&step(&overdue, Command::Tick, 24 * 3600 + 5), &r, &[]);
    let judge = |acceptable: bool| Command::Review {
        reviewer: user("lee", &["leads"]),
        acceptable,
        comment: "looked at the incident".to_owned(),
    };
    check(
        &step(&overdue, judge(false), 24 * 3600 + 10),
        &r,
        &[(Topic::UseUnacceptable, "pager", 24 * 3600 + 10)],
    );
    check(&step(&overdue, judge(true), 24 * 3600 + 10), &r, &[]);
    assert!(!still_relevant(
        Topic::ReviewEscalated,
        &step(&overdue, judge(true), 24 * 3600 + 10).request,
        at(24 * 3600 + 20)
    ));
    assert!(still_relevant(
        Topic::ReviewRequested,
        &overdue.request,
        at(24 * 3600 + 20)
    ));
}

#[test]
fn a_due_notification_is_sent_only_while_it_still_says_something_true() {
    let pending = submitted(1, 3600, false);
    assert!(still_relevant(
        Topic::AwaitingApproval,
        &pending.request,
        at(1)
    ));
    let cancelled = step(
        &pending,
        Command::Cancel {
            by: user("alice", &["eng"]),
        },
        2,
    );
    assert_eq!(cancelled.request.state, State::Cancelled);
    assert!(!still_relevant(
        Topic::AwaitingApproval,
        &cancelled.request,
        at(3)
    ));
    // What happened is always worth telling.
    assert!(still_relevant(Topic::Approved, &cancelled.request, at(3)));

    let active = granted(3600);
    assert!(still_relevant(
        Topic::ExpiresSoon,
        &active.request,
        at(2700)
    ));
    let released = step(
        &active,
        Command::Release {
            by: user("alice", &["eng"]),
        },
        100,
    );
    assert!(!still_relevant(
        Topic::ExpiresSoon,
        &released.request,
        at(2700)
    ));
    assert!(still_relevant(
        Topic::RevocationOverdue,
        &released.request,
        at(400)
    ));
    let tok = token(&released);
    let removed = step(
        &released,
        Command::JobSucceeded {
            action: JobAction::Revoke,
            token: tok,
            certificate: None,
        },
        101,
    );
    assert!(!still_relevant(
        Topic::RevocationOverdue,
        &removed.request,
        at(400)
    ));
}

#[test]
fn failed_sends_back_off_to_a_cap_and_are_given_up_past_the_horizon() {
    let policy = RetryPolicy {
        base: Duration::from_secs(5),
        cap: Duration::from_secs(60),
        give_up_after: Duration::from_secs(3600),
    };
    let first = at(0);
    let next = |attempts, now: i64| policy.after_failure(attempts, first, at(now), false);
    assert_eq!(next(1, 0), AfterFailure::RetryAt(at(5)));
    assert_eq!(next(2, 5), AfterFailure::RetryAt(at(15)));
    assert_eq!(next(3, 15), AfterFailure::RetryAt(at(35)));
    assert_eq!(next(10, 100), AfterFailure::RetryAt(at(160)), "capped");
    assert_eq!(next(60, 3540), AfterFailure::RetryAt(at(3600)));
    assert_eq!(next(61, 3541), AfterFailure::GiveUp, "past the horizon");
    assert_eq!(
        policy.after_failure(1, first, at(0), true),
        AfterFailure::GiveUp,
        "a permanent error is not retried"
    );
}

#[test]
fn reminders_and_escalations_go_to_the_approvers_again() {
    let waiting = airlock_core::catalog::WaitingTimes {
        remind_after: Some(Duration::from_secs(600)),
        escalate_after: Some(Duration::from_secs(1200)),
        escalate_to: BTreeSet::from([GroupName::parse("leads").unwrap()]),
        timeout: None,
    };
    let pending = submit(
        NewRequest {
            id: RequestId::parse("r1").unwrap(),
            duration: Some(Duration::from_secs(3600)),
            reason: "fix it".to_owned(),
            ticket: None,
            start_at: None,
            break_glass: false,
            public_key: None,
        },
        &user("alice", &["eng"]),
        &entitlement_waiting(waiting),
        None,
        verdict(1),
        &LifecycleSettings::default(),
        at(0),
    )
    .unwrap();
    let r = routing();
    let reminded = step(&pending, Command::Tick, 600);
    check(&reminded, &r, &[(Topic::ApprovalReminder, "chat", 600)]);
    let escalated = step(&reminded, Command::Tick, 1200);
    check(&escalated, &r, &[(Topic::Escalated, "chat", 1200)]);
    assert!(still_relevant(
        Topic::Escalated,
        &escalated.request,
        at(1201)
    ));
}

/// alice asks at `secs` for `by` more on `t`'s grant, routed by `approvals`.
fn extended(t: &Transition, by: u64, approvals: u32, secs: i64) -> Transition {
    step(
        t,
        Command::Extend {
            by: user("alice", &["eng"]),
            extension: Duration::from_secs(by),
            reason: "longer".to_owned(),
            verdict: verdict(approvals),
            max_duration: Duration::from_secs(24 * 3600),
        },
        secs,
    )
}

#[test]
fn extensions_tell_their_approvers_and_the_requester() {
    let r = routing();
    let active = granted(3600);
    // Granted at once: nothing to say until the target took it.
    let at_once = extended(&active, 1800, 0, 10);
    check(&at_once, &r, &[]);
    let tok = token(&at_once);
    let done = step(
        &at_once,
        Command::JobSucceeded {
            action: JobAction::Grant,
            token: tok,
            certificate: None,
        },
        11,
    );
    // Told, and warned again before the new expiry (5400 - 15m).
    check(
        &done,
        &r,
        &[
            (Topic::Extended, "mail", 11),
            (Topic::ExpiresSoon, "mail", 4500),
        ],
    );
    // The warning planned for the old expiry is stale now; the new one is not.
    let old_warning = plan(&active, &r)
        .into_iter()
        .find(|n| n.topic == Topic::ExpiresSoon)
        .unwrap();
    assert!(still_relevant_as_planned(
        Topic::ExpiresSoon,
        &active.request,
        &old_warning.facts,
        at(2700)
    ));
    assert!(!still_relevant_as_planned(
        Topic::ExpiresSoon,
        &done.request,
        &old_warning.facts,
        at(2700)
    ));
    let new_warning = plan(&done, &r)
        .into_iter()
        .find(|n| n.topic == Topic::ExpiresSoon)
        .unwrap();
    assert!(still_relevant_as_planned(
        Topic::ExpiresSoon,
        &done.request,
        &new_warning.facts,
        at(4500)
    ));

    // Waiting for approvers: they are asked, while it waits.
    let waiting = extended(&active, 1800, 1, 10);
    check(
        &waiting,
        &r,
        &[(Topic::ExtensionAwaitingApproval, "chat", 10)],
    );
    assert!(still_relevant(
        Topic::ExtensionAwaitingApproval,
        &waiting.request,
        at(11)
    ));
    let denied = step(
        &waiting,
        Command::Deny {
            approver: user("bob", &["sre"]),
            reason: "no".to_owned(),
            permission: permitted(),
        },
        20,
    );
    check(&denied, &r, &[(Topic::ExtensionDenied, "mail", 20)]);
    assert!(!still_relevant(
        Topic::ExtensionAwaitingApproval,
        &denied.request,
        at(21)
    ));

    // The target refused the new expiry.
    let tok = token(&at_once);
    let failed = step(
        &at_once,
        Command::JobFailed {
            action: JobAction::Grant,
            token: tok,
            error: "target said no".to_owned(),
            retryable: false,
        },
        12,
    );
    check(&failed, &r, &[(Topic::ExtensionFailed, "mail", 12)]);
}

#[test]
fn an_idle_grants_holder_is_warned_and_hears_of_the_release() {
    let r = routing();
    let limit = airlock_core::idle::IdleLimit::new(Duration::from_secs(600), None).unwrap();
    let idle = |warned: Option<i64>| Command::Idle {
        limit,
        reported: airlock_core::idle::Reported {
            warned_at: warned.map(at),
            ..Default::default()
        },
        lag: Duration::ZERO,
    };
    // Granted at 1 for an hour, limit 10m, warned 2m30s ahead: at 451.
    let active = granted(3600);
    let warned = step(&active, idle(None), 451);
    check(&warned, &r, &[(Topic::IdleWarning, "mail", 451)]);
    let warning = plan(&warned, &r).remove(0);
    assert_eq!(
        warning.facts.get("release_at").map(String::as_str),
        Some(at(601).to_rfc3339().as_str())
    );
    assert!(still_relevant(Topic::IdleWarning, &warned.request, at(500)));
    let released = step(&warned, idle(Some(451)), 601);
    assert_eq!(released.request.state, State::Released);
    check(
        &released,
        &r,
        &[
            (Topic::Ended, "mail", 601),
            (Topic::RevocationOverdue, "pager", 901),
        ],
    );
    // Released: a warning still waiting to be sent says nothing true.
    assert!(!still_relevant(
        Topic::IdleWarning,
        &released.request,
        at(602)
    ));
}
