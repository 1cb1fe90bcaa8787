//! Decision semantics, case by case, through one `check` helper: each case
//! is a policy file, a change to a standard request, and the decision
//! expected, written as the decision's `Display` (plus the erroring policies).

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::catalog::WaitingTimes;
use airlock_core::{EntitlementId, GroupName, Timestamp, UserId};
use airlock_policy::{
    Action, ApproveDecision, Decision, EntitlementFacts, ExtensionFacts, PolicySet, RequestContext,
    RequestFacts, StartTime, UserFacts,
};

fn user(id: &str, groups: &[&str]) -> UserFacts {
    UserFacts {
        id: UserId::parse(id).unwrap(),
        groups: groups
            .iter()
            .map(|g| GroupName::parse(g).unwrap())
            .collect(),
        team: "payments".to_owned(),
        employment: "employee".to_owned(),
        on_call: false,
        kind: Default::default(),
        sponsor: None,
    }
}

/// alice (an engineer) asks for prod-db-admin (sensitivity 3, owned by
/// `approvers`) in the typical context.
fn standard() -> RequestFacts {
    RequestFacts {
        requester: user("alice", &["engineers"]),
        entitlement: EntitlementFacts {
            id: EntitlementId::parse("prod-db-admin").unwrap(),
            sensitivity: 3,
            owner_group: Some(GroupName::parse("approvers").unwrap()),
        },
        context: RequestContext::typical(),
    }
}

#[derive(Clone, Copy)]
enum Ask {
    Decide,
    /// `may_approve` by this user (in group `approvers`), or by the
    /// requester themself when `alice`.
    ApproveBy(&'static str),
    /// `decide_extension` of the (typical, one-hour) grant by this many
    /// seconds.
    Extend(u64),
}

fn render(decision: &Decision) -> String {
    let errors: Vec<&str> = decision
        .errors()
        .iter()
        .map(|e| e.policy.as_str())
        .collect();
    if errors.is_empty() {
        decision.to_string()
    } else {
        format!("{decision} [errors: {}]", errors.join(", "))
    }
}

fn render_approve(answer: &ApproveDecision) -> String {
    match answer {
        ApproveDecision::Allowed { policies, .. } => {
            format!("may approve: {}", policies.join(", "))
        }
        ApproveDecision::Denied { reasons, .. } => {
            let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            format!("may not approve: {}", reasons.join("; "))
        }
    }
}

fn check(name: &str, policies: &str, adjust: fn(&mut RequestFacts), ask: Ask, expect: &str) {
    let set = match PolicySet::load(&[("p.cedar".to_owned(), policies.to_owned())]) {
        Ok(set) => set,
        Err(errors) => panic!("case `{name}`: policies do not load: {errors:#?}"),
    };
    let mut facts = standard();
    adjust(&mut facts);
    let got = match ask {
        Ask::Decide => render(&set.decide(&facts)),
        Ask::ApproveBy(approver) => {
            let approver = if approver == facts.requester.id.as_str() {
                facts.requester.clone()
            } else {
                user(approver, &["approvers"])
            };
            render_approve(&set.may_approve(&approver, &facts))
        }
        Ask::Extend(secs) => {
            let extension = Duration::from_secs(secs);
            let ext = ExtensionFacts {
                extension,
                total: facts.context.duration + extension,
            };
            let decision = set.decide_extension(&facts, &ext);
            if let Decision::Denied { reasons, .. } = &decision {
                // What a requester reads: the extend permits, not the request ones.
                let said: Vec<String> = reasons
                    .iter()
                    .map(|r| set.describe_denial_of(Action::Extend, r, &facts))
                    .collect();
                format!("{} | {}", render(&decision), said.join("; "))
            } else {
                render(&decision)
            }
        }
    };
    assert_eq!(got, expect, "case `{name}`");
}

const REQUEST: &str = r#"permit(principal, action == Airlock::Action::"request", resource);"#;
const AUTO: &str = r#"permit(principal, action == Airlock::Action::"auto_approve", resource);"#;
const OWNERS: &str = r#"@approvals("1") @approvers("approvers")
permit(principal, action == Airlock::Action::"require_approval", resource);"#;

fn none(_: &mut RequestFacts) {}

/// Name, policy file, change to the standard request, question, answer.
type Case = (
    &'static str,
    String,
    fn(&mut RequestFacts),
    Ask,
    &'static str,
);

#[test]
fn decisions() {
    use Ask::*;
    let cases: &[Case] = &[
        ("nothing permits", String::new(), none, Decide, "denied: no policy permits"),
        (
            "permitted without a route",
            REQUEST.to_owned(),
            none,
            Decide,
            "denied: no approval route",
        ),
        (
            "auto-approval names the request and auto policies",
            format!("{REQUEST}\n{AUTO}"),
            none,
            Decide,
            "auto-approved by p.cedar#1, p.cedar#2",
        ),
        (
            "one tier",
            format!("{REQUEST}\n{OWNERS}"),
            none,
            Decide,
            "needs approvals: 1 from [approvers] (p.cedar#2)",
        ),
        (
            "every satisfied require_approval permit adds a tier",
            format!(
                "{REQUEST}\n{OWNERS}\n{}",
                r#"@approvals("2") @approvers("security, dba")
                permit(principal, action == Airlock::Action::"require_approval", resource)
                when { context.duration_seconds > 3600 };"#
            ),
            |f| f.context.duration = Duration::from_secs(7200),
            Decide,
            "needs approvals: 1 from [approvers] (p.cedar#2) and 2 from [dba, security] (p.cedar#3)",
        ),
        (
            "an unsatisfied tier is not added",
            format!(
                "{REQUEST}\n{OWNERS}\n{}",
                r#"@approvals("2") @approvers("security")
                permit(principal, action == Airlock::Action::"require_approval", resource)
                when { context.duration_seconds > 3600 };"#
            ),
            none,
            Decide,
            "needs approvals: 1 from [approvers] (p.cedar#2)",
        ),
        (
            "a forbid on request wins over every permit",
            format!(
                "{REQUEST}\n{AUTO}\n{}",
                r#"forbid(principal, action == Airlock::Action::"request", resource);"#
            ),
            none,
            Decide,
            "denied: forbidden by `p.cedar#3`",
        ),
        (
            "a forbid on auto_approve falls back to approvals",
            format!(
                "{REQUEST}\n{AUTO}\n{OWNERS}\n{}",
                r#"forbid(principal, action == Airlock::Action::"auto_approve", resource) unless { principal.on_call };"#
            ),
            none,
            Decide,
            "needs approvals: 1 from [approvers] (p.cedar#3)",
        ),
        (
            "a forbid on require_approval leaves no route",
            format!(
                "{REQUEST}\n{OWNERS}\n{}",
                r#"forbid(principal, action == Airlock::Action::"require_approval", resource);"#
            ),
            none,
            Decide,
            "denied: forbidden by `p.cedar#3`; no approval route",
        ),
        (
            "an open-action forbid blocks everything",
            format!("{REQUEST}\n{AUTO}\n{}", r#"forbid(principal, action, resource);"#),
            none,
            Decide,
            "denied: forbidden by `p.cedar#3`",
        ),
        (
            "an erroring permit never permits",
            r#"permit(principal, action == Airlock::Action::"request", resource)
               when { context.duration_seconds * 2 > 0 };"#
                .to_owned(),
            |f| f.context.duration = Duration::MAX,
            Decide,
            "denied: no policy permits [errors: p.cedar#1]",
        ),
        (
            "an erroring forbid counts as forbidding",
            format!(
                "{REQUEST}\n{AUTO}\n{}",
                r#"forbid(principal, action == Airlock::Action::"request", resource)
                   when { context.duration_seconds * 2 > 0 };"#
            ),
            |f| f.context.duration = Duration::MAX,
            Decide,
            "denied: forbid policy `p.cedar#3` failed to evaluate and counts as forbidding [errors: p.cedar#3]",
        ),
        (
            "an erroring auto_approve permit falls back to approvals",
            format!(
                "{REQUEST}\n{OWNERS}\n{}",
                r#"permit(principal, action == Airlock::Action::"auto_approve", resource)
                   when { context.duration_seconds * 2 > 0 };"#
            ),
            |f| f.context.duration = Duration::MAX,
            Decide,
            "needs approvals: 1 from [approvers] (p.cedar#2) [errors: p.cedar#3]",
        ),
        (
            "an erroring require_approval permit denies rather than drop its tier",
            format!(
                "{REQUEST}\n{OWNERS}\n{}",
                r#"@approvals("1") @approvers("security")
                   permit(principal, action == Airlock::Action::"require_approval", resource)
                   when { context.duration_seconds * 2 > 0 };"#
            ),
            |f| f.context.duration = Duration::MAX,
            Decide,
            "denied: approval policy `p.cedar#3` failed to evaluate, so the approval route is unknown [errors: p.cedar#3]",
        ),
        (
            "group membership scopes the principal",
            format!(
                "{}\n{AUTO}",
                r#"permit(principal in Airlock::Group::"engineers", action == Airlock::Action::"request", resource);"#
            ),
            |f| f.requester.groups.clear(),
            Decide,
            "denied: no policy permits",
        ),
        (
            "a policy for another entitlement does not apply",
            format!(
                "{}\n{AUTO}",
                r#"permit(principal, action == Airlock::Action::"request", resource == Airlock::Entitlement::"staging-shell");"#
            ),
            none,
            Decide,
            "denied: no policy permits",
        ),
        (
            "`resource in` an entitlement means that entitlement",
            format!(
                "{}\n{AUTO}",
                r#"permit(principal, action == Airlock::Action::"request", resource in Airlock::Entitlement::"prod-db-admin");"#
            ),
            none,
            Decide,
            "auto-approved by p.cedar#1, p.cedar#2",
        ),
        (
            "a forbid scoped to another entitlement does not apply",
            format!(
                "{REQUEST}\n{AUTO}\n{}",
                r#"forbid(principal, action, resource == Airlock::Entitlement::"staging-shell");"#
            ),
            none,
            Decide,
            "auto-approved by p.cedar#1, p.cedar#2",
        ),
        (
            "an entitlement no policy names gets the open-scope policies",
            format!(
                "{REQUEST}\n{}\n{}",
                r#"permit(principal, action == Airlock::Action::"auto_approve", resource == Airlock::Entitlement::"prod-db-admin");"#,
                r#"@approvals("1") @approvers("owners") permit(principal, action == Airlock::Action::"require_approval", resource);"#
            ),
            |f| f.entitlement.id = EntitlementId::parse("something-else").unwrap(),
            Decide,
            "needs approvals: 1 from [owners] (p.cedar#3)",
        ),
        (
            "entitlement attributes: the owner group",
            format!(
                "{}\n{AUTO}",
                r#"permit(principal, action == Airlock::Action::"request", resource)
                   when { resource has owner_group && principal in resource.owner_group };"#
            ),
            |f| {
                f.requester.groups.insert(GroupName::parse("approvers").unwrap());
            },
            Decide,
            "auto-approved by p.cedar#1, p.cedar#2",
        ),
        (
            "entitlement attributes: no owner group",
            format!(
                "{}\n{AUTO}",
                r#"permit(principal, action == Airlock::Action::"request", resource)
                   when { resource has owner_group && principal in resource.owner_group };"#
            ),
            |f| f.entitlement.owner_group = None,
            Decide,
            "denied: no policy permits",
        ),
        (
            "user attributes: sensitivity and employment",
            format!(
                "{REQUEST}\n{AUTO}\n{}",
                r#"@id("vendors-low-only") forbid(principal, action == Airlock::Action::"request", resource)
                   when { resource.sensitivity >= 2 && principal.employment == "vendor" };"#
            ),
            |f| f.requester.employment = "vendor".to_owned(),
            Decide,
            "denied: forbidden by `vendors-low-only`",
        ),
        (
            "a blank ticket is no ticket",
            r#"permit(principal, action in [Airlock::Action::"request", Airlock::Action::"auto_approve"], resource)
               when { context.has_ticket && context.ticket != "" };"#
                .to_owned(),
            |f| f.context.ticket = Some("  ".to_owned()),
            Decide,
            "denied: no policy permits",
        ),
        (
            "ticket text is visible to policies",
            r#"permit(principal, action in [Airlock::Action::"request", Airlock::Action::"auto_approve"], resource)
               when { context.ticket like "INC-*" };"#
                .to_owned(),
            |f| f.context.ticket = Some("INC-42".to_owned()),
            Decide,
            "auto-approved by p.cedar#1",
        ),
        (
            "no recent MFA is -1",
            r#"permit(principal, action in [Airlock::Action::"request", Airlock::Action::"auto_approve"], resource)
               when { context.mfa_age_seconds >= 0 && context.mfa_age_seconds < 600 };"#
                .to_owned(),
            |f| f.context.mfa_age = None,
            Decide,
            "denied: no policy permits",
        ),
        (
            "start time comes from a timestamp (Saturday 03:00 UTC)",
            r#"permit(principal, action in [Airlock::Action::"request", Airlock::Action::"auto_approve"], resource)
               when { context.start_weekday == 5 && context.start_hour_utc == 3 };"#
                .to_owned(),
            // 2026-11-28T03:15:00Z
            |f| f.context.start = StartTime::at(Timestamp::from_unix_millis(1_795_835_700_000)),
            Decide,
            "auto-approved by p.cedar#1",
        ),
        (
            "reason length and break-glass are visible",
            r#"permit(principal, action == Airlock::Action::"request", resource)
               when { context.break_glass && context.reason_length >= 20 };"#
                .to_owned(),
            |f| {
                f.context.break_glass = true;
                f.context.reason_length = 20;
            },
            Decide,
            "break-glass, permitted by p.cedar#1",
        ),
        (
            "a break-glass ask the request permits do not cover is denied",
            r#"permit(principal, action == Airlock::Action::"request", resource)
               when { context.break_glass && context.reason_length >= 20 };"#
                .to_owned(),
            |f| {
                f.context.break_glass = true;
                f.context.reason_length = 5;
            },
            Decide,
            "denied: no policy permits",
        ),
        (
            "separation of duties through other active entitlements",
            format!(
                "{REQUEST}\n{AUTO}\n{}",
                r#"forbid(principal, action == Airlock::Action::"request", resource)
                   when { context.other_active_entitlements.contains(Airlock::Entitlement::"prod-deploy") };"#
            ),
            |f| {
                f.context.other_active_entitlements =
                    BTreeSet::from([EntitlementId::parse("prod-deploy").unwrap()]);
            },
            Decide,
            "denied: forbidden by `p.cedar#3`",
        ),
        (
            "approving needs a permit",
            String::new(),
            none,
            ApproveBy("bob"),
            "may not approve: no policy permits",
        ),
        (
            "an approver sees the requester",
            r#"permit(principal in Airlock::Group::"approvers", action == Airlock::Action::"approve", resource)
               when { context.requester.team == "payments" && context.requester in Airlock::Group::"engineers" };"#
                .to_owned(),
            none,
            ApproveBy("bob"),
            "may approve: p.cedar#1",
        ),
        (
            "the requester never approves, even when a policy says so",
            r#"permit(principal, action == Airlock::Action::"approve", resource)
               when { context.requester == principal };"#
                .to_owned(),
            none,
            ApproveBy("alice"),
            "may not approve: the requester can never approve their own request",
        ),
        (
            "a forbid on approve wins",
            r#"permit(principal, action == Airlock::Action::"approve", resource);
               forbid(principal, action == Airlock::Action::"approve", resource) when { context.break_glass };"#
                .to_owned(),
            |f| f.context.break_glass = true,
            ApproveBy("bob"),
            "may not approve: forbidden by `p.cedar#2`",
        ),
    ];
    for (name, policies, adjust, ask, expect) in cases {
        check(name, policies, *adjust, *ask, expect);
    }
}

/// A request refused only by `@mfa_max_age` forbids needs a step-up to the
/// strictest age; one refused for anything else (too), or that fresh MFA
/// would not let through, does not.
#[test]
fn a_step_up_is_what_only_stale_mfa_stands_in_the_way_of() {
    const MFA: &str = r#"
permit (principal in Airlock::Group::"engineers", action == Airlock::Action::"request", resource);
permit (principal, action == Airlock::Action::"auto_approve", resource);
@id("mfa-15m") @mfa_max_age("900")
forbid (principal, action == Airlock::Action::"request", resource)
unless { context.mfa_age_seconds >= 0 && context.mfa_age_seconds <= 900 };
@id("mfa-5m") @mfa_max_age("300")
forbid (principal, action == Airlock::Action::"request", resource)
unless { context.mfa_age_seconds >= 0 && context.mfa_age_seconds <= 300 };
"#;
    const NO_NIGHTS: &str = r#"
@id("no-break-glass")
forbid (principal, action == Airlock::Action::"request", resource) when { context.break_glass };
"#;
    let load = |text: &str| PolicySet::load(&[("p.cedar".to_owned(), text.to_owned())]).unwrap();
    let with_mfa = |age: Option<u64>| {
        let mut facts = standard();
        facts.context.mfa_age = age.map(Duration::from_secs);
        facts
    };
    let set = load(MFA);
    assert!(set.demands_mfa());
    assert_eq!(set.mfa_step_up(&with_mfa(None)), Some(300), "no MFA known");
    assert_eq!(
        set.mfa_step_up(&with_mfa(Some(600))),
        Some(300),
        "too old for one"
    );
    assert_eq!(
        set.mfa_step_up(&with_mfa(Some(60))),
        None,
        "fresh enough: allowed"
    );
    let mut outsider = with_mfa(None);
    outsider.requester = user("mallory", &["contractors"]);
    assert_eq!(set.mfa_step_up(&outsider), None, "MFA would not help");

    let both = load(&format!("{MFA}{NO_NIGHTS}"));
    let mut glass = with_mfa(None);
    glass.context.break_glass = true;
    assert_eq!(
        both.mfa_step_up(&glass),
        None,
        "also refused for another reason"
    );
    assert!(!load(NO_NIGHTS).demands_mfa());
}

#[test]
fn routing_permits_set_the_waiting_times_the_soonest_of_each_winning() {
    const ROUTES: &str = r#"
permit (principal, action == Airlock::Action::"request", resource);
@approvals("1") @approvers("sre") @remind_after("30m") @escalate_after("2h") @escalate_to("leads") @pending_timeout("8h")
permit (principal, action == Airlock::Action::"require_approval", resource);
@approvals("1") @approvers("security") @remind_after("10m") @escalate_after("2h") @escalate_to("security-leads")
permit (principal, action == Airlock::Action::"require_approval", resource)
when { context.duration_seconds > 3600 };
@approvals("1") @approvers("dba")
permit (principal, action == Airlock::Action::"require_approval", resource)
when { context.duration_seconds > 7200 };
"#;
    let set = PolicySet::load(&[("p.cedar".to_owned(), ROUTES.to_owned())]).unwrap();
    let waiting = |secs: u64| {
        let mut facts = standard();
        facts.context.duration = Duration::from_secs(secs);
        match set.decide(&facts) {
            Decision::NeedsApprovals { waiting, .. } => waiting,
            other => panic!("expected approvals, got {other}"),
        }
    };
    let one = waiting(1800);
    assert_eq!(one.remind_after, Some(Duration::from_secs(30 * 60)));
    assert_eq!(one.escalate_after, Some(Duration::from_secs(2 * 3600)));
    assert_eq!(one.timeout, Some(Duration::from_secs(8 * 3600)));
    let names = |w: &WaitingTimes| {
        w.escalate_to
            .iter()
            .map(|g| g.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&one), ["leads"]);
    // Two routes: the sooner reminder; escalation to both groups at 2h.
    let two = waiting(5400);
    assert_eq!(two.remind_after, Some(Duration::from_secs(10 * 60)));
    assert_eq!(names(&two), ["leads", "security-leads"]);
    // A third route setting nothing changes nothing.
    assert_eq!(waiting(9000), two);
}

/// The standard request's denial, each reason as `describe_denial` words it.
fn denial(policies: &str, facts: &RequestFacts) -> String {
    let set = PolicySet::load(&[("p.cedar".to_owned(), policies.to_owned())]).unwrap();
    match set.decide(facts) {
        Decision::Denied { reasons, .. } => reasons
            .iter()
            .map(|r| set.describe_denial(r, facts))
            .collect::<Vec<_>>()
            .join(" | "),
        other => panic!("expected a denial, got {other}"),
    }
}

#[test]
fn a_denial_says_what_would_be_accepted() {
    let permits = r#"
        // An engineer may ask with a ticket (a comment with ) and " in it).
        @id("with-ticket")
        @reason("engineers, citing a ticket INC-… or CHG-…")
        permit (principal in Airlock::Group::"engineers", action == Airlock::Action::"request",
                resource == Airlock::Entitlement::"prod-db-admin")
        when { context.has_ticket };

        @id("dba-short")
        permit (principal in Airlock::Group::"dba", action == Airlock::Action::"request",
                resource == Airlock::Entitlement::"prod-db-admin")
        when {
          // at most an hour
          context.duration_seconds <= 3600 && context.ticket != "x (y)"
        };

        @id("other-entitlement")
        @reason("not about prod-db-admin")
        permit (principal, action == Airlock::Action::"request",
                resource == Airlock::Entitlement::"staging-shell");
    "#;
    let mut no_ticket = standard();
    no_ticket.context.ticket = None;
    let text = denial(permits, &no_ticket);
    // The permit that covers alice comes first, with its @reason; the other
    // with whom it covers and its conditions as written, comments dropped;
    // a permit for another entitlement is not named.
    assert_eq!(
        text,
        "no policy permits; requests for `prod-db-admin` are permitted by \
         `with-ticket` (members of `engineers`): engineers, citing a ticket INC-… or CHG-…; \
         `dba-short` (members of `dba`): when { context.duration_seconds <= 3600 && context.ticket != \"x (y)\" }"
    );

    // A forbid says its @reason, or else its conditions.
    let mut facts = standard();
    let forbids = r#"
        @id("with-ticket") permit (principal, action == Airlock::Action::"request", resource);
        @id("no-contractors")
        @reason("contractors never hold admin rights on production data")
        forbid (principal, action == Airlock::Action::"request", resource)
        when { principal.employment == "contractor" };
        @id("payments-not-on-prod")
        forbid (principal, action, resource == Airlock::Entitlement::"prod-db-admin")
        unless { principal.team != "payments" };
    "#;
    facts.requester.employment = "contractor".to_owned();
    assert_eq!(
        denial(forbids, &facts),
        "forbidden by `no-contractors`: contractors never hold admin rights on production data | \
         forbidden by `payments-not-on-prod`: unless { principal.team != \"payments\" }"
    );

    // Past four permits the rest are counted; with none, that is said.
    let many: String = (1..=6)
        .map(|n| {
            format!(
                "@id(\"p{n}\") permit (principal in Airlock::Group::\"g{n}\", \
                 action == Airlock::Action::\"request\", resource);\n"
            )
        })
        .collect();
    let text = denial(&many, &standard());
    assert!(
        text.ends_with("`p4` (members of `g4`): always; and 2 more"),
        "{text}"
    );
    assert_eq!(
        denial("", &standard()),
        "no policy permits: no policy lets anyone request `prod-db-admin`"
    );
}

const EXTEND_BRIEFLY: &str = r#"@id("briefly")
permit(principal, action == Airlock::Action::"extend", resource)
when { context.extension_seconds <= 1800 && context.total_seconds <= 7200 };"#;
const EXTEND_WITH_OWNERS: &str = r#"@id("owners-extend") @approvals("1") @approvers("approvers")
permit(principal, action == Airlock::Action::"extend", resource);"#;

#[test]
fn extension_decisions() {
    use Ask::*;
    let cases: &[Case] = &[
        (
            "nothing permits extending, and the denial names no request permit",
            format!("{REQUEST}\n{AUTO}"),
            none,
            Extend(600),
            "denied: no policy permits | no policy permits: no policy lets anyone extend `prod-db-admin`",
        ),
        (
            "a permit without annotations extends at once",
            EXTEND_BRIEFLY.to_owned(),
            none,
            Extend(1800),
            "auto-approved by briefly",
        ),
        (
            "past its conditions, and nothing else permits: the denial says what would",
            EXTEND_BRIEFLY.to_owned(),
            none,
            Extend(3600),
            "denied: no policy permits | no policy permits; extensions of `prod-db-admin` are permitted by `briefly` (anyone): when { context.extension_seconds <= 1800 && context.total_seconds <= 7200 }",
        ),
        (
            "at once wins over approvers when both permit, as auto_approve does",
            format!("{EXTEND_BRIEFLY}\n{EXTEND_WITH_OWNERS}"),
            none,
            Extend(600),
            "auto-approved by briefly",
        ),
        (
            "annotated permits are tiers",
            format!("{EXTEND_BRIEFLY}\n{EXTEND_WITH_OWNERS}"),
            none,
            Extend(3600),
            "needs approvals: 1 from [approvers] (owners-extend)",
        ),
        (
            "a forbid wins",
            format!(
                "{EXTEND_BRIEFLY}\n{}",
                r#"@id("no-nights") forbid(principal, action == Airlock::Action::"extend", resource)
                when { context.total_seconds > 3600 };"#
            ),
            none,
            Extend(600),
            "denied: forbidden by `no-nights` | forbidden by `no-nights`: when { context.total_seconds > 3600 }",
        ),
        (
            "an annotated permit that fails denies, even beside one that extends at once",
            format!(
                "{EXTEND_BRIEFLY}\n{}",
                r#"@id("overflow") @approvals("1") @approvers("security")
                permit(principal, action == Airlock::Action::"extend", resource)
                when { context.total_seconds * 9223372036854775807 > 0 };"#
            ),
            none,
            // `briefly` alone would extend at once.
            Extend(600),
            "denied: approval policy `overflow` failed to evaluate, so the approval route is unknown [errors: overflow] | approval policy `overflow` failed to evaluate, so the approval route is unknown",
        ),
        (
            "a request permit does not extend",
            format!("{REQUEST}\n{OWNERS}"),
            none,
            Extend(60),
            "denied: no policy permits | no policy permits: no policy lets anyone extend `prod-db-admin`",
        ),
    ];
    for (name, policies, adjust, ask, expect) in cases {
        check(name, policies, *adjust, *ask, expect);
    }
}
