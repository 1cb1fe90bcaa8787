//! External principals (vendors) through the state machine: only
//! entitlements open to externals, nothing once their account ended, the
//! sponsor's approval on top of every tier (and of a policy's
//! auto-approval) in a seat nobody else fills, grants and extensions that
//! end no later than the account, the sponsor seeing, approving, denying
//! and revoking — and what a change of their terms means.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::access;
use airlock_core::approval::{ApprovalTier, ApproverVerdict, Route, Verdict};
use airlock_core::audit::{Actor, AuditAction};
use airlock_core::catalog::{terms_change, Entitlement, External, Role, User};
use airlock_core::directory::{user_change, Consequence, DirectoryUser};
use airlock_core::notify::{plan, Audience, Routes, Routing, Topic};
use airlock_core::request::{
    apply, submit, Command, ExtensionState, JobAction, LifecycleSettings, NewRequest, Rejection,
    State, Transition,
};
use airlock_core::{EntitlementId, GroupName, Timestamp, UserId};

mod fixtures;

const T0_MS: i64 = 1_700_000_000_000;
const HOUR: i64 = 3600;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + secs * 1000)
}

fn id(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn person(name: &str, groups: &[&str]) -> User {
    fixtures::person(name, groups)
}

/// `vic`, a vendor in `eng` sponsored by `sara`, whose account ends
/// `ends` seconds after T0.
fn vic(ends: i64) -> User {
    person("vic", &["eng"]).sponsored(External {
        sponsor: id("sara"),
        account_expires: at(ends),
    })
}

/// Up to 4h, default 1h, through `pg`; `open`: open to externals.
fn entitlement(open: bool) -> Entitlement {
    Entitlement {
        max_duration: Duration::from_secs(4 * 3600),
        default_duration: Duration::from_secs(3600),
        open_to_externals: open,
        ..fixtures::entitlement("staging-db", "pg")
    }
}

fn verdict(route: Route) -> Verdict {
    fixtures::verdict(route, &["vendors-may-ask"])
}

/// One approver from `sre`, as the policies route it.
fn one_from_sre() -> Verdict {
    verdict(Route::NeedsApprovals(vec![ApprovalTier {
        count: 1,
        groups: BTreeSet::from([GroupName::parse("sre").unwrap()]),
        policy: "owners".to_owned(),
    }]))
}

fn ask(secs: u64) -> NewRequest {
    NewRequest {
        duration: Some(Duration::from_secs(secs)),
        reason: "deploying the vendor's fix".to_owned(),
        ..fixtures::new_request("r1")
    }
}

fn settings() -> LifecycleSettings {
    LifecycleSettings {
        pending_timeout: Duration::from_secs(24 * 3600),
        ..LifecycleSettings::default()
    }
}

fn asked(
    who: &User,
    new: NewRequest,
    open: bool,
    v: Verdict,
    secs: i64,
) -> Result<Transition, Rejection> {
    submit(new, who, &entitlement(open), None, v, &settings(), at(secs))
}

fn step(t: &Transition, command: Command, secs: i64) -> Result<Transition, Rejection> {
    apply(t.request.clone(), command, &settings(), at(secs))
}

/// What the policies say of an approver: `sara`, the sponsor, is permitted
/// by no policy; everyone else is.
fn permission(who: &User) -> ApproverVerdict {
    ApproverVerdict {
        outcome: if who.id.as_str() == "sara" {
            Err("no policy permits `sara`".to_owned())
        } else {
            Ok(vec!["approvers".to_owned()])
        },
        policy_version: "v1".to_owned(),
    }
}

/// The target confirms the grant job in flight.
fn confirmed(t: &Transition, secs: i64) -> Transition {
    let token = t.request.claim_token;
    step(
        t,
        Command::JobSucceeded {
            action: JobAction::Grant,
            token,
            certificate: None,
        },
        secs,
    )
    .unwrap()
}

fn approve(who: &User) -> Command {
    Command::Approve {
        approver: who.clone(),
        comment: None,
        permission: permission(who),
    }
}

fn actions(t: &Transition) -> Vec<&'static str> {
    t.events.iter().map(|e| e.action.as_str()).collect()
}

#[test]
fn an_account_past_its_end_asks_for_nothing() {
    let ended = asked(&vic(HOUR), ask(600), true, one_from_sre(), HOUR).unwrap_err();
    assert!(
        matches!(&ended, Rejection::Forbidden(m) if m.contains("`vic` ended") && m.contains("`sara`")),
        "{ended:?}"
    );
    let live = asked(&vic(HOUR), ask(600), true, one_from_sre(), HOUR - 1).unwrap();
    assert_eq!(live.request.state, State::Pending);
    // Break-glass waits for nobody, so no vendor has it.
    let glass = asked(
        &vic(10 * HOUR),
        NewRequest {
            break_glass: true,
            ..ask(600)
        },
        true,
        one_from_sre(),
        0,
    )
    .unwrap_err();
    assert!(matches!(glass, Rejection::Forbidden(m) if m.contains("break-glass")));
}

#[test]
fn only_entitlements_open_to_externals_are_granted_and_the_refusal_says_why() {
    let closed = asked(&vic(10 * HOUR), ask(600), false, one_from_sre(), 0).unwrap();
    assert_eq!(closed.request.state, State::Denied);
    let note = closed.request.end_note.clone().unwrap();
    assert!(
        note.contains("`staging-db` is not open to external principals")
            && note.contains("`open_to_externals`")
            && note.contains("sponsored by `sara`"),
        "{note}"
    );
    assert_eq!(actions(&closed), ["requested", "denied"]);
    // Anyone else asks as before.
    let employee = asked(
        &person("emma", &["eng"]),
        ask(600),
        false,
        one_from_sre(),
        0,
    )
    .unwrap();
    assert_eq!(employee.request.state, State::Pending);
    assert_eq!(employee.request.external, None);
}

#[test]
fn the_sponsor_approves_besides_the_policy_tier_and_neither_fills_the_others_seat() {
    let (carol, dana) = (person("carol", &["sre"]), person("dana", &["sre"]));
    // The sponsor is in `sre` too: still only the sponsor's seat is theirs.
    let sara = person("sara", &["sre"]);
    let t = asked(&vic(10 * HOUR), ask(HOUR as u64), true, one_from_sre(), 0).unwrap();
    assert_eq!(t.request.approvals_needed(), 2);
    assert_eq!(t.request.sponsor(), Some(&id("sara")));
    assert!(t.request.awaits_approval_of(&sara) && t.request.awaits_approval_of(&carol));

    // The policy's approver alone does not activate it...
    let t1 = step(&t, approve(&carol), 10).unwrap();
    assert_eq!(t1.request.state, State::Pending);
    assert_eq!(t1.events[0].details["approvals"], "1/2");
    // ... and nobody else from the tier takes the sponsor's seat.
    let other = step(&t1, approve(&dana), 20).unwrap_err();
    assert!(matches!(other, Rejection::Conflict(m) if m.contains("the sponsor `sara`")));
    let t2 = step(&t1, approve(&sara), 30).unwrap();
    assert_eq!(t2.request.state, State::Approved);
    assert_eq!(t2.events[0].details["seat"], "sponsor");
    assert!(t2.events[1].details["rule"].contains("and the sponsor `sara`"));
    assert!(t2.effects.iter().any(|e| e.action == JobAction::Grant));

    // The other way round: the sponsor alone does not meet the tier.
    let s1 = step(&t, approve(&sara), 10).unwrap();
    assert_eq!(s1.request.state, State::Pending);
    assert!(!s1.request.awaits_approval_of(&sara) && s1.request.awaits_approval_of(&carol));
    let again = step(&s1, approve(&sara), 11).unwrap_err();
    assert!(matches!(again, Rejection::Conflict(_)));
    let s2 = step(&s1, approve(&dana), 20).unwrap();
    assert_eq!(s2.request.state, State::Approved);

    // Nobody decides their own request, vendor or not.
    let own = step(&t, approve(&vic(10 * HOUR)), 10).unwrap_err();
    assert!(matches!(own, Rejection::Forbidden(m) if m.contains("their own request")));
}

#[test]
fn what_the_policies_approve_at_once_still_waits_for_the_sponsor() {
    let t = asked(
        &vic(10 * HOUR),
        ask(600),
        true,
        verdict(Route::AutoApproved),
        0,
    )
    .unwrap();
    assert_eq!(t.request.state, State::Pending);
    assert!(t.effects.is_empty());
    // Someone the policies would let approve anything has no seat to fill.
    let carol = person("carol", &["sre"]);
    let refused = step(&t, approve(&carol), 5).unwrap_err();
    assert!(
        matches!(&refused, Rejection::Forbidden(m) if m.contains("only its sponsor decides it")),
        "{refused:?}"
    );
    let t1 = step(&t, approve(&person("sara", &[])), 10).unwrap();
    assert_eq!(t1.request.state, State::Approved);
    assert_eq!(t1.request.expires_at, Some(at(10 + 600)));
}

#[test]
fn the_sponsor_may_deny_and_revoke_and_sees_the_request() {
    let sara = person("sara", &[]);
    let t = asked(
        &vic(10 * HOUR),
        ask(600),
        true,
        verdict(Route::AutoApproved),
        0,
    )
    .unwrap();
    assert!(access::may_see(&sara, &t.request));
    assert!(!access::may_see(&person("olga", &[]), &t.request));
    let denied = step(
        &t,
        Command::Deny {
            approver: sara.clone(),
            reason: "not this week".to_owned(),
            permission: permission(&sara),
        },
        5,
    )
    .unwrap();
    assert_eq!(denied.request.state, State::Denied);

    let granted = step(&t, approve(&sara), 5).unwrap();
    let granted = confirmed(&granted, 6);
    assert_eq!(granted.request.state, State::Active);
    let revoke = |by: &User| Command::Revoke {
        by: by.clone(),
        reason: "the contract was paused".to_owned(),
    };
    let stranger = step(&granted, revoke(&person("olga", &[])), 7).unwrap_err();
    assert!(matches!(stranger, Rejection::Forbidden(m) if m.contains("nor the sponsor")));
    let revoked = step(&granted, revoke(&sara), 7).unwrap();
    assert_eq!(revoked.request.state, State::Revoked);
    assert_eq!(revoked.request.ended_by, Some(id("sara")));
    assert!(revoked
        .effects
        .iter()
        .any(|e| e.action == JobAction::Revoke));
    // Admins still may.
    let mut root = person("root", &[]);
    root.roles.insert(Role::Admin);
    assert!(step(&granted, revoke(&root), 7).is_ok());
}

#[test]
fn grants_and_waits_end_no_later_than_the_account() {
    // Half an hour of account left: an hour's ask is cut to it, and the
    // record keeps what was asked.
    let t = asked(&vic(1800), ask(HOUR as u64), true, one_from_sre(), 0).unwrap();
    assert_eq!(t.request.duration, Duration::from_secs(1800));
    assert_eq!(t.events[0].details["asked_duration_seconds"], "3600");
    assert_eq!(t.request.pending_deadline, at(1800));
    // Approved ten minutes later, it still ends with the account.
    let t = step(&t, approve(&person("carol", &["sre"])), 300).unwrap();
    let t = step(&t, approve(&person("sara", &[])), 600).unwrap();
    assert_eq!(t.request.expires_at, Some(at(1800)));
    assert_eq!(t.request.duration, Duration::from_secs(1200));
    assert!(t.events.iter().any(|e| e.details.contains_key("clipped")));
    // Nobody approving: it times out when the account ends.
    let waiting = asked(&vic(1800), ask(600), true, one_from_sre(), 0).unwrap();
    let out = step(&waiting, Command::Tick, 1800).unwrap();
    assert_eq!(out.request.state, State::TimedOut);
    // A start at or after the account's end is refused, naming the field.
    let late = asked(
        &vic(1800),
        NewRequest {
            start_at: Some(at(1800)),
            ..ask(600)
        },
        true,
        one_from_sre(),
        0,
    )
    .unwrap_err();
    assert!(matches!(
        late,
        Rejection::Invalid {
            field: "start_at",
            ..
        }
    ));
}

#[test]
fn extensions_end_with_the_account_and_need_the_sponsor_too() {
    let sara = person("sara", &[]);
    let t = asked(
        &vic(2 * HOUR),
        ask(HOUR as u64),
        true,
        verdict(Route::AutoApproved),
        0,
    )
    .unwrap();
    let t = step(&t, approve(&sara), 0).unwrap();
    let t = confirmed(&t, 1);
    assert_eq!(t.request.expires_at, Some(at(HOUR)));
    let extend = |secs: u64| Command::Extend {
        by: vic(2 * HOUR),
        extension: Duration::from_secs(secs),
        reason: "the migration runs long".to_owned(),
        verdict: verdict(Route::AutoApproved),
        max_duration: Duration::from_secs(4 * 3600),
    };
    // Two hours more would outlast the account: an hour is what is left.
    let e = step(&t, extend(2 * HOUR as u64), 60).unwrap();
    let ext = e.request.extension.clone().unwrap();
    assert_eq!(ext.expires_at, at(2 * HOUR));
    assert_eq!(
        ext.state,
        ExtensionState::Pending,
        "granted at once by policy, but not by the sponsor"
    );
    assert!(e.request.awaits_approval_of(&sara));
    let e = step(&e, approve(&sara), 70).unwrap();
    assert_eq!(
        e.request.extension.as_ref().map(|x| x.state),
        Some(ExtensionState::Provisioning)
    );
    let e = confirmed(&e, 80);
    assert_eq!(e.request.expires_at, Some(at(2 * HOUR)));
    // Nothing is left to extend by.
    let none = step(&e, extend(60), 90).unwrap_err();
    assert!(
        matches!(none, Rejection::Invalid { field: "by", message } if message.contains("account"))
    );
}

#[test]
fn the_sponsor_hears_of_every_grant() {
    let sara = person("sara", &[]);
    let routing = Routing {
        defaults: Routes {
            requester: Some(vec!["mail".to_owned()]),
            ..Routes::default()
        },
        ..Routing::default()
    };
    // Unrouted, the sponsor hears on the requester's channels.
    assert_eq!(
        routing.channels(
            &EntitlementId::parse("staging-db").unwrap(),
            Audience::Sponsor
        ),
        ["mail".to_owned()]
    );
    let t = asked(
        &vic(10 * HOUR),
        ask(600),
        true,
        verdict(Route::AutoApproved),
        0,
    )
    .unwrap();
    let t = step(&t, approve(&sara), 1).unwrap();
    let t = confirmed(&t, 2);
    let planned = plan(&t, &routing);
    let sponsored: Vec<_> = planned
        .iter()
        .filter(|n| n.topic == Topic::SponsoredGrant)
        .collect();
    assert_eq!(sponsored.len(), 1);
    assert_eq!(Topic::SponsoredGrant.audience(), Audience::Sponsor);
    assert_eq!(sponsored[0].facts["sponsor"], "sara");
    // An employee's grant tells no sponsor.
    let e = asked(
        &person("emma", &["eng"]),
        ask(600),
        true,
        verdict(Route::AutoApproved),
        0,
    )
    .unwrap();
    let e = confirmed(&e, 1);
    assert!(!plan(&e, &routing)
        .iter()
        .any(|n| n.topic == Topic::SponsoredGrant));
}

#[test]
fn changed_terms_end_what_was_granted_under_the_old_ones() {
    let terms = |sponsor: &str, ends: i64| External {
        sponsor: id(sponsor),
        account_expires: at(ends),
    };
    let was = terms("sara", 100);
    assert_eq!(terms_change(Some(&was), Some(&terms("sara", 100))), None);
    assert_eq!(terms_change(Some(&was), Some(&terms("sara", 200))), None);
    assert_eq!(terms_change(None, None), None);
    for (now, says) in [
        (
            Some(terms("tom", 100)),
            "sponsor changed from `sara` to `tom`",
        ),
        (Some(terms("sara", 50)), "account now ends at"),
        (None, "no longer a sponsored external principal"),
    ] {
        let why = terms_change(Some(&was), now.as_ref()).unwrap();
        assert!(why.contains(says), "{why}");
    }
    assert!(terms_change(None, Some(&was))
        .unwrap()
        .contains("became an external principal"));
}

fn directory_user(name: &str, employment: Option<&str>, sponsor: Option<&str>) -> DirectoryUser {
    DirectoryUser {
        id: format!("id-{name}"),
        user_name: id(name),
        external_id: None,
        display_name: None,
        emails: Vec::new(),
        active: true,
        employment: employment.map(str::to_owned),
        sponsor: sponsor.map(id),
        account_expires: Some(at(HOUR)),
        created: at(0),
        modified: at(0),
        version: 1,
    }
}

#[test]
fn the_directory_ends_a_vendors_requests_when_their_terms_change_or_their_sponsor_leaves() {
    let before = directory_user("vic", Some("vendor"), Some("sara"));
    assert_eq!(before.external().map(|t| t.sponsor), Some(id("sara")));
    let deprovisions = |c: &airlock_core::directory::Change| {
        c.consequences
            .iter()
            .filter_map(|c| match c {
                Consequence::Deprovision { user, cause } => Some((user.to_string(), cause.clone())),
                Consequence::Redecide { .. } => None,
            })
            .collect::<Vec<_>>()
    };
    let op = "SCIM PATCH /Users/id-vic";
    // Another sponsor: what the old one approved ends.
    let moved = directory_user("vic", Some("vendor"), Some("tom"));
    let c = user_change(Some(&before), Some(&moved), op, at(1));
    let d = deprovisions(&c);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].1.contains("sponsor changed from `sara` to `tom`"),
        "{d:?}"
    );
    assert!(c.events[0].details["changed"].contains("sponsor"));
    // A vendor nobody sponsors any more.
    let orphan = directory_user("vic", Some("vendor"), None);
    assert!(
        deprovisions(&user_change(Some(&before), Some(&orphan), op, at(1)))[0]
            .1
            .contains("no sponsor")
    );
    // A mere rename of the display name changes nothing.
    let same = DirectoryUser {
        display_name: Some("Vic".to_owned()),
        ..before.clone()
    };
    assert!(deprovisions(&user_change(Some(&before), Some(&same), op, at(1))).is_empty());
    // Provisioned as a vendor: whatever they held before was nobody's to sponsor.
    assert_eq!(
        deprovisions(&user_change(None, Some(&before), op, at(1))).len(),
        1
    );
    assert!(deprovisions(&user_change(
        None,
        Some(&directory_user("emma", None, None)),
        op,
        at(1)
    ))
    .is_empty());

    // The sponsor deactivated: each vendor they answer for goes too,
    // named in the cause; the sponsor themselves is never their own vendor.
    let sara_on = directory_user("sara", None, None);
    let sara_off = DirectoryUser {
        active: false,
        ..sara_on.clone()
    };
    let c = user_change(
        Some(&sara_on),
        Some(&sara_off),
        "SCIM PATCH /Users/id-sara",
        at(2),
    );
    let theirs = c.consequences[0].for_sponsored(&[id("vic"), id("sara")]);
    assert_eq!(theirs.len(), 1);
    assert!(
        matches!(&theirs[0], Consequence::Deprovision { user, cause }
        if user.as_str() == "vic" && cause.contains("the sponsor of `vic` left") && cause.contains("`sara` deactivated"))
    );

    // Carried out, it ends the vendor's grant as done by the provisioning client.
    let t = asked(
        &vic(10 * HOUR),
        ask(600),
        true,
        verdict(Route::AutoApproved),
        0,
    )
    .unwrap();
    let t = step(&t, approve(&person("sara", &[])), 1).unwrap();
    let t = confirmed(&t, 2);
    let Consequence::Deprovision { cause, .. } = &theirs[0] else {
        panic!()
    };
    let ended = step(
        &t,
        Command::Deprovision {
            cause: cause.clone(),
        },
        3,
    )
    .unwrap();
    assert_eq!(ended.request.state, State::Revoked);
    let event = ended
        .events
        .iter()
        .find(|e| e.action == AuditAction::Revoked)
        .unwrap();
    assert_eq!(event.actor, Actor::Provisioning);
    assert!(event.details["cause"].contains("the sponsor of `vic` left"));
}
