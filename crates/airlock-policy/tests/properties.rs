//! Properties that must hold whatever the policies say: the requester never
//! approves their own request, and a matching forbid always wins. Random
//! small policy sets are checked against a tiny reference model.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed step should fail the test"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::{EntitlementId, GroupName, UserId};
use airlock_policy::{
    ApproveDecision, Decision, DenyReason, EntitlementFacts, PolicySet, RequestContext,
    RequestFacts, StartTime, UserFacts, Weekday,
};
use proptest::prelude::*;

const A: &str = "Airlock::Action::";

/// Permits that let people approve, some of them very broadly.
#[derive(Debug, Clone)]
enum ApprovePermit {
    Everyone,
    InGroup(u8),
    IsUser(u8),
    /// Tries to let exactly the requester approve.
    RequesterThemself,
    /// Every action except require_approval.
    AllActions,
    RequesterInGroupOrOnCall(u8),
}

impl ApprovePermit {
    fn text(&self) -> String {
        match self {
            ApprovePermit::Everyone => {
                format!(r#"permit(principal, action == {A}"approve", resource);"#)
            }
            ApprovePermit::InGroup(g) => format!(
                r#"permit(principal in Airlock::Group::"g{g}", action == {A}"approve", resource);"#
            ),
            ApprovePermit::IsUser(u) => format!(
                r#"permit(principal == Airlock::User::"u{u}", action == {A}"approve", resource);"#
            ),
            ApprovePermit::RequesterThemself => format!(
                r#"permit(principal, action == {A}"approve", resource) when {{ context.requester == principal }};"#
            ),
            ApprovePermit::AllActions => format!(
                r#"permit(principal, action in [{A}"request", {A}"auto_approve", {A}"approve"], resource);"#
            ),
            ApprovePermit::RequesterInGroupOrOnCall(g) => format!(
                r#"permit(principal, action == {A}"approve", resource) when {{ context.requester in Airlock::Group::"g{g}" || principal.on_call }};"#
            ),
        }
    }

    /// The reference model, for an approver other than the requester.
    fn allows(&self, approver: &UserFacts, requester: &UserFacts) -> bool {
        match self {
            ApprovePermit::Everyone | ApprovePermit::AllActions => true,
            ApprovePermit::InGroup(g) => in_group(approver, *g),
            ApprovePermit::IsUser(u) => approver.id.as_str() == format!("u{u}"),
            ApprovePermit::RequesterThemself => approver.id == requester.id,
            ApprovePermit::RequesterInGroupOrOnCall(g) => {
                in_group(requester, *g) || approver.on_call
            }
        }
    }
}

/// Conditions a forbid may carry.
#[derive(Debug, Clone)]
enum Cond {
    Always,
    BreakGlass,
    LongerThan(u64),
    InGroup(u8),
    OnCall,
}

impl Cond {
    fn text(&self) -> String {
        match self {
            Cond::Always => "true".to_owned(),
            Cond::BreakGlass => "context.break_glass".to_owned(),
            Cond::LongerThan(s) => format!("context.duration_seconds > {s}"),
            Cond::InGroup(g) => format!(r#"principal in Airlock::Group::"g{g}""#),
            Cond::OnCall => "principal.on_call".to_owned(),
        }
    }

    fn holds(&self, principal: &UserFacts, context: &RequestContext) -> bool {
        match self {
            Cond::Always => true,
            Cond::BreakGlass => context.break_glass,
            Cond::LongerThan(s) => context.duration.as_secs() > *s,
            Cond::InGroup(g) => in_group(principal, *g),
            Cond::OnCall => principal.on_call,
        }
    }
}

fn in_group(user: &UserFacts, g: u8) -> bool {
    user.groups.iter().any(|x| x.as_str() == format!("g{g}"))
}

fn arb_user(id: impl Strategy<Value = String>) -> impl Strategy<Value = UserFacts> {
    (
        id,
        proptest::collection::btree_set(0u8..3, 0..3),
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(id, groups, contractor, on_call)| UserFacts {
            id: UserId::parse(&id).unwrap(),
            groups: groups
                .into_iter()
                .map(|g| GroupName::parse(&format!("g{g}")).unwrap())
                .collect(),
            team: "t".to_owned(),
            employment: if contractor { "contractor" } else { "employee" }.to_owned(),
            on_call,
            kind: Default::default(),
            sponsor: None,
        })
}

fn arb_context() -> impl Strategy<Value = RequestContext> {
    (
        0u64..20_000,
        0usize..7,
        0u8..24,
        prop::option::of("[A-Z]{1,3}-[0-9]{1,3}"),
        prop::bool::ANY,
    )
        .prop_map(|(secs, day, hour, ticket, break_glass)| RequestContext {
            duration: Duration::from_secs(secs),
            start: StartTime::new(Weekday::ALL[day], hour).unwrap(),
            ticket,
            reason_length: 30,
            mfa_age: None,
            break_glass,
            escalated: false,
            other_active_entitlements: BTreeSet::new(),
        })
}

fn arb_approve_permit() -> impl Strategy<Value = ApprovePermit> {
    prop_oneof![
        Just(ApprovePermit::Everyone),
        (0u8..3).prop_map(ApprovePermit::InGroup),
        (0u8..4).prop_map(ApprovePermit::IsUser),
        Just(ApprovePermit::RequesterThemself),
        Just(ApprovePermit::AllActions),
        (0u8..3).prop_map(ApprovePermit::RequesterInGroupOrOnCall),
    ]
}

fn arb_cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        Just(Cond::Always),
        Just(Cond::BreakGlass),
        (0u64..20_000).prop_map(Cond::LongerThan),
        (0u8..3).prop_map(Cond::InGroup),
        Just(Cond::OnCall),
    ]
}

fn entitlement() -> EntitlementFacts {
    EntitlementFacts {
        id: EntitlementId::parse("e").unwrap(),
        sensitivity: 2,
        owner_group: None,
    }
}

fn load(texts: &[String]) -> PolicySet {
    PolicySet::load(&[("p.cedar".to_owned(), texts.join("\n"))]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_requester_never_approves_their_own_request(
        permits in proptest::collection::vec(arb_approve_permit(), 0..6),
        requester in arb_user("u[0-3]"),
        // The same person, as the directory may describe them at approval
        // time (groups and attributes may have changed).
        approver_as_seen in arb_user("u[0-3]"),
        other in arb_user("v[0-3]"),
        context in arb_context(),
    ) {
        let set = load(&permits.iter().map(ApprovePermit::text).collect::<Vec<_>>());
        let facts = RequestFacts { requester: requester.clone(), entitlement: entitlement(), context };
        let same_person = UserFacts { id: requester.id.clone(), ..approver_as_seen };
        prop_assert_eq!(
            set.may_approve(&same_person, &facts),
            ApproveDecision::Denied { reasons: vec![DenyReason::SelfApproval], errors: vec![] }
        );
        // Anyone else is judged by the policies, exactly as the model says.
        let expected = permits.iter().any(|p| p.allows(&other, &requester));
        prop_assert_eq!(set.may_approve(&other, &facts).is_allowed(), expected);
    }

    #[test]
    fn a_matching_forbid_always_wins(
        extra in proptest::collection::vec(arb_approve_permit(), 0..4),
        forbid_actions in proptest::collection::btree_set(0usize..4, 1..=4),
        cond in arb_cond(),
        requester in arb_user("u[0-3]"),
        approver in arb_user("v[0-3]"),
        context in arb_context(),
    ) {
        const ACTIONS: [&str; 4] = ["request", "auto_approve", "require_approval", "approve"];
        // Permits for everything: without the forbid, every request is
        // auto-approved and everyone may approve.
        let mut texts: Vec<String> = vec![
            format!(r#"permit(principal, action in [{A}"request", {A}"auto_approve", {A}"approve"], resource);"#),
            format!(r#"@approvals("1") @approvers("g0") permit(principal, action == {A}"require_approval", resource);"#),
        ];
        texts.extend(extra.iter().map(ApprovePermit::text));
        let scope: Vec<String> = forbid_actions.iter().map(|i| format!(r#"{A}"{}""#, ACTIONS[*i])).collect();
        texts.push(format!(
            r#"@id("the-forbid") forbid(principal, action in [{}], resource) when {{ {} }};"#,
            scope.join(", "),
            cond.text()
        ));
        let set = load(&texts);
        let facts = RequestFacts { requester: requester.clone(), entitlement: entitlement(), context: context.clone() };
        let decision = set.decide(&facts);
        let forbids = |a: usize| forbid_actions.contains(&a);
        let forbidden_policy = DenyReason::Forbidden { policy: "the-forbid".to_owned() };

        if cond.holds(&requester, &context) && forbids(0) {
            prop_assert!(
                matches!(&decision, Decision::Denied { reasons, .. } if reasons.contains(&forbidden_policy)),
                "{:?}", decision
            );
        } else if context.break_glass {
            // An emergency the policies let through waits for nobody.
            prop_assert!(matches!(decision, Decision::BreakGlass { .. }), "{:?}", decision);
        } else if cond.holds(&requester, &context) && forbids(1) {
            prop_assert!(!matches!(decision, Decision::AutoApproved { .. }), "{:?}", decision);
            if forbids(2) {
                prop_assert!(matches!(&decision, Decision::Denied { reasons, .. } if reasons.contains(&forbidden_policy)), "{:?}", decision);
            } else {
                prop_assert!(matches!(decision, Decision::NeedsApprovals { .. }), "{:?}", decision);
            }
        } else {
            // The forbid did not apply to the request path: it is never a reason.
            prop_assert!(matches!(decision, Decision::AutoApproved { .. }), "{:?}", decision);
        }

        let answer = set.may_approve(&approver, &facts);
        if cond.holds(&approver, &context) && forbids(3) {
            prop_assert_eq!(answer, ApproveDecision::Denied { reasons: vec![forbidden_policy], errors: vec![] });
        } else {
            prop_assert!(answer.is_allowed(), "{:?}", answer);
        }
    }
}
