//! Who may see and do what (`airlock_core::access`), as one table: every
//! kind of person against every action on someone's pending request, and
//! every capability.

#![expect(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::access::{may, may_act, may_see, Capability, RequestAction};
use airlock_core::approval::{ApprovalTier, Route, Verdict};
use airlock_core::catalog::{Entitlement, Role, TicketRule, User};
use airlock_core::drift::DriftPolicy;
use airlock_core::request::{self, AccessRequest, LifecycleSettings, NewRequest};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};

fn person(id: &str, groups: &[&str], roles: &[Role]) -> User {
    User {
        id: UserId::parse(id).unwrap(),
        groups: groups
            .iter()
            .map(|g| GroupName::parse(g).unwrap())
            .collect(),
        roles: roles.iter().copied().collect(),
    }
}

/// `rita`'s pending request, waiting for one approver from `sre`.
fn ritas_request() -> AccessRequest {
    let entitlement = Entitlement {
        id: EntitlementId::parse("prod-db").unwrap(),
        description: String::new(),
        max_duration: Duration::from_secs(3600),
        default_duration: Duration::from_secs(600),
        reason_required: false,
        ticket: TicketRule {
            required: false,
            pattern: None,
        },
        connector: "c".to_owned(),
        drift: DriftPolicy::Report,
        waiting: Default::default(),
    };
    let verdict = Verdict {
        route: Route::NeedsApprovals(vec![ApprovalTier {
            count: 1,
            groups: BTreeSet::from([GroupName::parse("sre").unwrap()]),
            policy: "sre".to_owned(),
        }]),
        policy_version: "v".to_owned(),
        policies: vec!["p".to_owned()],
        errors: Vec::new(),
    };
    let new = NewRequest {
        id: RequestId::parse("r1").unwrap(),
        duration: None,
        reason: "x".to_owned(),
        ticket: None,
        start_at: None,
        break_glass: false,
        public_key: None,
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

#[test]
fn each_person_may_do_exactly_what_the_rules_say() {
    use RequestAction::{CollectCredential, Decide, Revoke, See, Withdraw};
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
    for (who, expected) in &table {
        for (action, allowed) in [See, Decide, Withdraw, CollectCredential, Revoke]
            .into_iter()
            .zip(expected)
        {
            assert_eq!(
                may_act(who, &r, action).is_ok(),
                *allowed,
                "{} {action:?}",
                who.id
            );
        }
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
