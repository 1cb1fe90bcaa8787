//! Who may see and do what (`airlock_core::access`), as one table: every
//! kind of person against every action on someone's pending request, and
//! every capability.

#![expect(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeSet;

use airlock_core::access::{
    may, may_act, may_check, may_create_token_for, may_manage_tokens_of, may_see, Capability,
    RequestAction,
};
use airlock_core::approval::{ApprovalTier, Route};
use airlock_core::catalog::{PrincipalKind, Role, User};
use airlock_core::request::{self, AccessRequest, LifecycleSettings, NewRequest};
use airlock_core::token::{Scopes, TokenUse};
use airlock_core::{GroupName, Timestamp, TokenId, UserId};

mod fixtures;

fn person(id: &str, groups: &[&str], roles: &[Role]) -> User {
    User {
        roles: roles.iter().copied().collect(),
        ..fixtures::person(id, groups)
    }
}

/// `rita`'s pending request, waiting for one approver from `sre`.
fn ritas_request() -> AccessRequest {
    let entitlement = fixtures::entitlement("prod-db", "c");
    let verdict = fixtures::verdict(
        Route::NeedsApprovals(vec![ApprovalTier {
            count: 1,
            groups: BTreeSet::from([GroupName::parse("sre").unwrap()]),
            policy: "sre".to_owned(),
        }]),
        &["p"],
    );
    let new = NewRequest {
        reason: "x".to_owned(),
        ..fixtures::new_request("r1")
    };
    let rita = person("rita", &["eng", "sre"], &[]);
    request::submit(
        new,
        &rita,
        &entitlement,
        None,
        verdict,
        &LifecycleSettings::default(),
        Timestamp::from_unix_millis(0),
    )
    .unwrap()
    .request
}

/// Checks `may_act` for each row: who, then whether they may see, decide,
/// withdraw, collect a credential, revoke.
fn check_actions(r: &AccessRequest, table: &[(User, [bool; 5])]) {
    use RequestAction::{CollectCredential, Decide, Revoke, See, Withdraw};
    for (who, expected) in table {
        for (action, allowed) in [See, Decide, Withdraw, CollectCredential, Revoke]
            .into_iter()
            .zip(expected)
        {
            assert_eq!(
                may_act(who, r, action).is_ok(),
                *allowed,
                "{} {:?} {action:?}",
                who.id,
                who.token
            );
        }
    }
}

#[test]
fn each_person_may_do_exactly_what_the_rules_say() {
    use RequestAction::Withdraw;
    let r = ritas_request();
    // Who, then: see, decide, withdraw, collect a credential, revoke.
    let table: [(User, [bool; 5]); 6] = [
        (
            person("rita", &["eng", "sre"], &[]),
            [true, false, true, true, false],
        ),
        (
            person("alice", &["sre"], &[]),
            [true, true, false, false, false],
        ),
        (
            person("mallory", &["eng"], &[]),
            [false, true, false, false, false],
        ),
        (
            person("root", &[], &[Role::Admin]),
            [true, true, false, false, true],
        ),
        (
            person("audrey", &[], &[Role::Auditor]),
            [true, true, false, false, false],
        ),
        (
            person("olga", &["sales"], &[]),
            [false, true, false, false, false],
        ),
    ];
    check_actions(&r, &table);
    for (who, expected) in &table {
        assert_eq!(may_see(who, &r), expected[0], "{}", who.id);
        assert_eq!(r.visible_to(who), expected[0], "{}", who.id);
    }
    // "Decide" here is only who someone is: whether the policy set lets them
    // and whether their groups fill a tier is the state machine's.
    let admin = person("root", &[], &[Role::Admin]);
    let release = may_act(&admin, &r, Withdraw).unwrap_err().to_string();
    assert!(release.contains("`revoke`"), "{release}");
}

#[test]
fn capabilities_follow_roles() {
    use Capability::{ApprovePolicyChanges, ChangePolicies, ReadEverything, Reconcile};
    let table: [(User, [bool; 4]); 3] = [
        (
            person("root", &[], &[Role::Admin]),
            [true, true, true, true],
        ),
        (
            person("audrey", &[], &[Role::Auditor]),
            [true, false, false, false],
        ),
        (
            person("alice", &["sre", "security"], &[]),
            [false, false, false, false],
        ),
    ];
    for (who, expected) in &table {
        for (capability, allowed) in [
            ReadEverything,
            ChangePolicies,
            ApprovePolicyChanges,
            Reconcile,
        ]
        .into_iter()
        .zip(expected)
        {
            let got = may(who, capability);
            assert_eq!(got.is_ok(), *allowed, "{} {capability:?}", who.id);
            if let Err(e) = got {
                assert!(e.to_string().contains("needs admin"), "{e}");
            }
        }
    }
}

#[test]
fn anyone_checks_themselves_and_admins_auditors_and_checkers_anyone() {
    let rita = UserId::parse("rita").unwrap();
    let checker_service = User {
        kind: PrincipalKind::Service,
        ..person("gate", &[], &[Role::Checker])
    };
    // (who, about rita, about themselves)
    let table = [
        (person("rita", &["eng"], &[]), true, true),
        (person("alice", &["sre"], &[]), false, true),
        (person("root", &[], &[Role::Admin]), true, true),
        (person("audrey", &[], &[Role::Auditor]), true, true),
        (person("chuck", &[], &[Role::Checker]), true, true),
        (checker_service.clone(), true, true),
        (deploy(), false, true),
        // Through a token: the `read` scope, whoever is asked about.
        (
            via(person("chuck", &[], &[Role::Checker]), "read"),
            true,
            true,
        ),
        (
            via(person("chuck", &[], &[Role::Checker]), "request"),
            false,
            false,
        ),
        (via(person("rita", &[], &[]), "request"), false, false),
        (via(checker_service, "read"), true, true),
    ];
    for (who, others, themselves) in &table {
        let got = may_check(who, &rita);
        let expected = if who.id == rita { *themselves } else { *others };
        assert_eq!(got.is_ok(), expected, "{} about rita: {got:?}", who.id);
        assert_eq!(
            may_check(who, &who.id).is_ok(),
            *themselves,
            "{} about themselves",
            who.id
        );
        if let Err(e) = may_check(who, &rita) {
            let e = e.to_string();
            assert!(
                e.contains("needs admin or auditor or checker") || e.contains("`read` scope"),
                "{e}"
            );
        }
    }
}

/// `who` acting through an API token with `scopes` (comma-separated).
fn via(who: User, scopes: &str) -> User {
    who.through(TokenUse {
        id: TokenId::parse("tok_test").unwrap(),
        scopes: Scopes::parse(scopes).unwrap(),
    })
}

/// `deploy`, a service principal in `sre` (so it sees `sre`'s requests).
fn deploy() -> User {
    User {
        kind: PrincipalKind::Service,
        ..person("deploy", &["sre"], &[])
    }
}

#[test]
fn a_token_narrows_its_owner_to_its_scopes_and_a_service_never_decides() {
    use RequestAction::{Decide, Withdraw};
    let r = ritas_request();
    let rita = || person("rita", &["eng", "sre"], &[]);
    let root = || person("root", &[], &[Role::Admin]);
    let alice = || person("alice", &["sre"], &[]);
    let all = "read,request,approve,admin,tokens";
    // Who, then: see, decide, withdraw, collect a credential, revoke.
    let table: Vec<(User, [bool; 5])> = vec![
        (via(rita(), "read"), [true, false, false, false, false]),
        (via(rita(), "request"), [false, false, true, true, false]),
        (via(rita(), all), [true, false, true, true, false]),
        (
            via(root(), "read,approve"),
            [true, true, false, false, false],
        ),
        (via(root(), "admin"), [false, false, false, false, true]),
        // Every scope gives no more than the owner has.
        (via(alice(), all), [true, true, false, false, false]),
        (deploy(), [true, false, false, false, false]),
        (via(deploy(), all), [true, false, false, false, false]),
    ];
    check_actions(&r, &table);
    let refusal = may_act(&via(rita(), "read"), &r, Withdraw)
        .unwrap_err()
        .to_string();
    assert!(
        refusal.contains("`request` scope") && refusal.contains("tok_test"),
        "{refusal}"
    );
    let refusal = may_act(&via(deploy(), all), &r, Decide)
        .unwrap_err()
        .to_string();
    assert!(refusal.contains("service principal"), "{refusal}");
}

#[test]
fn capabilities_through_a_token_need_its_scope_and_the_owners_role() {
    use Capability::{
        ApprovePolicyChanges, ChangePolicies, ManageTokens, Read, ReadEverything, Reconcile,
        Request,
    };
    let root = || person("root", &[], &[Role::Admin]);
    let audrey = || person("audrey", &[], &[Role::Auditor]);
    let alice = || person("alice", &["sre"], &[]);
    // ReadEverything, ChangePolicies, ApprovePolicyChanges, Reconcile, Read, Request, ManageTokens.
    let table: Vec<(User, [bool; 7])> = vec![
        (root(), [true, true, true, true, true, true, true]),
        (
            via(root(), "read"),
            [true, false, false, false, true, false, false],
        ),
        (
            via(root(), "admin"),
            [false, true, true, true, false, false, false],
        ),
        (
            via(audrey(), "admin,read"),
            [true, false, false, false, true, false, false],
        ),
        (
            via(alice(), "request"),
            [false, false, false, false, false, true, false],
        ),
        (
            via(alice(), "tokens"),
            [false, false, false, false, false, false, true],
        ),
        (alice(), [false, false, false, false, true, true, true]),
        // A service requests and reads; it manages no tokens itself.
        (deploy(), [false, false, false, false, true, true, false]),
        (
            via(deploy(), "read,request,tokens"),
            [false, false, false, false, true, true, false],
        ),
    ];
    for (who, expected) in &table {
        for (capability, allowed) in [
            ReadEverything,
            ChangePolicies,
            ApprovePolicyChanges,
            Reconcile,
            Read,
            Request,
            ManageTokens,
        ]
        .into_iter()
        .zip(expected)
        {
            assert_eq!(
                may(who, capability).is_ok(),
                *allowed,
                "{} {:?} {capability:?}",
                who.id,
                who.token
            );
        }
    }
}

#[test]
fn tokens_are_managed_by_their_owner_a_services_owners_and_admins() {
    let root = || person("root", &[], &[Role::Admin]);
    let alice = || person("alice", &["sre"], &[]);
    let bob = || person("bob", &["sre"], &[]);
    let id = |s: &str| UserId::parse(s).unwrap();
    let deploy_owners = [id("alice")];
    let none: [UserId; 0] = [];
    // Who, whose tokens (and that owner's owners), may manage, may create.
    let table: Vec<(User, User, &[UserId], bool, bool)> = vec![
        (alice(), alice(), &none, true, true),
        (via(alice(), "tokens"), alice(), &none, true, true),
        (via(alice(), "read,request"), alice(), &none, false, false),
        (alice(), bob(), &none, false, false),
        // Admins see and revoke anyone's, but act as no other person.
        (root(), bob(), &none, true, false),
        (via(root(), "tokens"), bob(), &none, false, false),
        (via(root(), "tokens,admin"), bob(), &none, true, false),
        (alice(), deploy(), &deploy_owners, true, true),
        (bob(), deploy(), &deploy_owners, false, false),
        (root(), deploy(), &deploy_owners, true, true),
        (deploy(), deploy(), &deploy_owners, false, false),
    ];
    for (who, owner, owners, manage, create) in table {
        assert_eq!(
            may_manage_tokens_of(&who, &owner.id, owners).is_ok(),
            manage,
            "{} manages {}'s ({:?})",
            who.id,
            owner.id,
            who.token
        );
        assert_eq!(
            may_create_token_for(&who, &owner, owners).is_ok(),
            create,
            "{} creates for {} ({:?})",
            who.id,
            owner.id,
            who.token
        );
    }
}

#[test]
fn admins_and_reporters_post_activity_through_the_report_scope() {
    let reporter_service = User {
        kind: PrincipalKind::Service,
        ..person("shipper", &[], &[Role::Reporter])
    };
    let table = [
        (person("root", &[], &[Role::Admin]), true),
        (person("rhea", &[], &[Role::Reporter]), true),
        (reporter_service.clone(), true),
        (person("audrey", &[], &[Role::Auditor]), false),
        (person("chuck", &[], &[Role::Checker]), false),
        (person("rita", &["eng", "sre"], &[]), false),
        (deploy(), false),
        (via(reporter_service.clone(), "report"), true),
        (via(person("root", &[], &[Role::Admin]), "report"), true),
        // Every other scope together is not `report`.
        (
            via(reporter_service, "read,request,approve,admin,tokens"),
            false,
        ),
        (via(deploy(), "report"), false),
    ];
    for (who, allowed) in &table {
        let got = may(who, Capability::ReportActivity);
        assert_eq!(got.is_ok(), *allowed, "{} {:?}: {got:?}", who.id, who.token);
        if let Err(e) = got {
            let e = e.to_string();
            assert!(
                e.contains("needs admin or reporter") || e.contains("lacks the `report` scope"),
                "{e}"
            );
        }
    }
}
