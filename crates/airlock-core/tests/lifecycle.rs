//! Data-driven walks through the request lifecycle: each case is a submit and
//! a script of timed commands, each step with the outcome it must produce, all
//! run through the one [`check`] helper.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock_core::approval::{ApprovalTier, ApproverVerdict, Route, Verdict};
use airlock_core::catalog::{Catalog, Entitlement, Role, TicketRule, User, WaitingTimes};
use airlock_core::drift::DriftPolicy;
use airlock_core::request::{
    apply, submit, AccessRequest, Command, ExtensionState, JobAction, LifecycleSettings,
    NewRequest, Rejection, State, Transition,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};

use JobAction::{Grant, Revoke};
use State::*;

// ---------------------------------------------------------------- fixtures

/// Every step's time is given in seconds after this instant; submits happen at 0.
const T0_MS: i64 = 1_700_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + secs * 1000)
}

fn settings() -> LifecycleSettings {
    LifecycleSettings {
        pending_timeout: Duration::from_secs(3600),
        claim_lease: Duration::from_secs(60),
        grant_max_attempts: 3,
        retry_base: Duration::from_secs(10),
        retry_cap: Duration::from_secs(40),
        max_start_delay: Duration::from_secs(7 * 24 * 3600),
        start_skew: Duration::from_secs(60),
    }
}

fn group(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

fn user(id: &str, groups: &[&str], admin: bool) -> User {
    User {
        id: UserId::parse(id).unwrap(),
        groups: groups.iter().map(|g| group(g)).collect(),
        roles: if admin {
            BTreeSet::from([Role::Admin])
        } else {
            BTreeSet::new()
        },
        kind: Default::default(),
        token: None,
        external: None,
    }
}

/// `rita` requests (and is herself in the approver group `sre`); `alice` and
/// `bob` approve; `mallory` may request but not approve; `root` is an admin
/// in no group; `olga` may do nothing at all; `sam` is in `security`, and
/// `dave` in both `sre` and `security`.
fn catalog() -> Catalog {
    let users = [
        user("rita", &["eng", "sre"], false),
        user("alice", &["sre"], false),
        user("bob", &["sre"], false),
        user("mallory", &["eng"], false),
        user("root", &[], true),
        user("olga", &["sales"], false),
        user("sam", &["security"], false),
        user("dave", &["sre", "security"], false),
    ];
    let ent = Entitlement {
        id: EntitlementId::parse("prod-db").unwrap(),
        description: "production database admin".to_owned(),
        max_duration: Duration::from_secs(4 * 3600),
        default_duration: Duration::from_secs(3600),
        reason_required: true,
        ticket: TicketRule {
            required: true,
            pattern: Some(airlock_core::catalog::TicketPattern::new(r"INC-\d+").unwrap()),
        },
        connector: "postgres".to_owned(),
        drift: DriftPolicy::Report,
        sensitivity: airlock_core::standing::Sensitivity::default(),
        waiting: Default::default(),
        break_glass: None,
        open_to_externals: false,
    };
    Catalog {
        users: users.into_iter().map(|u| (u.id.clone(), u)).collect(),
        entitlements: BTreeMap::from([(ent.id.clone(), ent)]),
        service_owners: BTreeMap::new(),
        bundles: BTreeMap::new(),
    }
}

// ---------------------------------------------------------------- the table's vocabulary

/// What the policy set decides for the case's request.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Auto,
    /// One tier: this many from `sre`.
    Approvals(u32),
    /// Two tiers: one from `sre` and one from `security`.
    OwnerAndSecurity,
    Denied,
}

fn tier(count: u32, group_name: &str) -> ApprovalTier {
    ApprovalTier {
        count,
        groups: BTreeSet::from([group(group_name)]),
        policy: format!("route-{group_name}"),
    }
}

fn verdict(rule: Rule) -> Verdict {
    let (route, policies) = match rule {
        Rule::Auto => (Route::AutoApproved, vec!["may-request", "auto"]),
        Rule::Approvals(count) => (
            Route::NeedsApprovals(vec![tier(count, "sre")]),
            vec!["may-request", "route-sre"],
        ),
        Rule::OwnerAndSecurity => (
            Route::NeedsApprovals(vec![tier(1, "sre"), tier(1, "security")]),
            vec!["may-request", "route-sre", "route-security"],
        ),
        Rule::Denied => (
            Route::Denied {
                reasons: vec!["forbidden by `no-prod`".to_owned()],
            },
            vec!["no-prod"],
        ),
    };
    Verdict {
        route,
        policy_version: "v1".to_owned(),
        policies: policies.into_iter().map(str::to_owned).collect(),
        errors: Vec::new(),
        waiting: Default::default(),
    }
}

/// What the policy set says about an approver: everyone may, in these
/// tables; whether their groups fit a tier is the lifecycle's check.
fn permitted() -> ApproverVerdict {
    ApproverVerdict {
        outcome: Ok(vec!["approvers".to_owned()]),
        policy_version: "v1".to_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Act {
    Approve(&'static str),
    /// Approve, with the policy set refusing this approver.
    ApproveUnpermitted(&'static str),
    Deny(&'static str),
    Cancel(&'static str),
    Release(&'static str),
    Revoke(&'static str),
    /// Revoke with a blank reason.
    RevokeNoReason(&'static str),
    Tick,
    /// The identity provider deactivated or deleted the requester.
    Deprovision,
    /// The ticket system closed this ticket.
    TicketClosed(&'static str),
    /// The idle limit (30m, warned 7m30s ahead, 5s lag) with no use
    /// reported and the last warning at this second, if any.
    Idle(Option<i64>),
    /// The requester left a group: the policy set's answer with it, then
    /// without it.
    Redecide(Rule, Rule),
    /// The server restarted: an attempt in flight will never report.
    Restarted,
    /// `who` asks for this many seconds more, decided by the rule.
    Extend(&'static str, u64, Rule),
    /// The in-flight attempt's result, carrying the current claim token.
    Succeeded(JobAction),
    Failed(JobAction, Retry),
    /// A result carrying a token that was never issued.
    StaleNew(JobAction),
    /// A result carrying the token of an attempt that is no longer in flight.
    StaleOld(JobAction),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Retryable,
    Permanent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rej {
    Forbidden,
    Conflict,
    Invalid(&'static str),
}

/// Extra facts a step's result must show.
#[derive(Debug, Clone)]
enum Check {
    /// `next_due`, in seconds after T0 (`None`: never).
    NextDue(Option<i64>),
    GrantedAt(i64),
    ActivatesAt(i64),
    ExpiresAt(i64),
    /// `is_scheduled` at the step's own time.
    Scheduled(bool),
    /// Attempts of the current connector job.
    Attempts(JobAction, u32),
    NoJob,
    /// The request came back exactly as it went in.
    Unchanged,
    EndedBy(&'static str),
    DeprovisionedAt(i64),
    MayHoldAccess(bool),
    /// The event with this action carries `key = value` in its details.
    Detail(&'static str, &'static str, &'static str),
    /// Where the latest extension stands (`None`: none asked for).
    Extension(Option<ExtensionState>),
    /// The request's duration, in seconds.
    Lasts(u64),
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok(State),
    Rejected(Rej),
}

#[derive(Debug, Clone)]
struct Expect {
    outcome: Outcome,
    effects: Vec<JobAction>,
    events: Vec<&'static str>,
    checks: Vec<Check>,
}

fn ok(state: State, effects: &[JobAction], events: &[&'static str]) -> Expect {
    Expect {
        outcome: Outcome::Ok(state),
        effects: effects.to_vec(),
        events: events.to_vec(),
        checks: Vec::new(),
    }
}

fn rejected(rej: Rej) -> Expect {
    Expect {
        outcome: Outcome::Rejected(rej),
        effects: Vec::new(),
        events: Vec::new(),
        checks: Vec::new(),
    }
}

impl Expect {
    fn and(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }
}

struct Case {
    rule: Rule,
    requester: &'static str,
    duration: Option<u64>,
    reason: &'static str,
    ticket: Option<&'static str>,
    /// `start_at`, in seconds after T0.
    start_at: Option<i64>,
    /// Whether the requester already has an open request for the entitlement.
    open: bool,
    /// The entitlement's acceptable waiting times (default: none).
    waiting: WaitingTimes,
    /// Waiting times the routing policies set (their annotations).
    policy_waiting: WaitingTimes,
    submit: Expect,
    steps: Vec<(i64, Act, Expect)>,
}

/// A valid request under `rule`, submitted at 0, with nothing after it.
fn case(rule: Rule) -> Case {
    let submit = match rule {
        Rule::Auto => ok(Approved, &[Grant], &["requested", "approved"]),
        Rule::Approvals(_) | Rule::OwnerAndSecurity => ok(Pending, &[], &["requested"]),
        Rule::Denied => ok(Denied, &[], &["requested", "denied"]),
    };
    Case {
        rule,
        requester: "rita",
        duration: None,
        reason: "investigate INC-42",
        ticket: Some("INC-42"),
        start_at: None,
        open: false,
        waiting: WaitingTimes::default(),
        policy_waiting: WaitingTimes::default(),
        submit,
        steps: Vec::new(),
    }
}

// ---------------------------------------------------------------- the one helper

fn check(case: Case) {
    let catalog = catalog();
    let settings = settings();
    let ent = &Entitlement {
        waiting: case.waiting.clone(),
        ..catalog.entitlements.values().next().unwrap().clone()
    };
    let u = |name: &str| catalog.user(&UserId::parse(name).unwrap()).unwrap();
    let other = RequestId::parse("req-0").unwrap();
    let new = NewRequest {
        id: RequestId::parse("req-1").unwrap(),
        duration: case.duration.map(Duration::from_secs),
        reason: case.reason.to_owned(),
        ticket: case.ticket.map(str::to_owned),
        start_at: case.start_at.map(at),
        break_glass: false,
        public_key: None,
    };
    let submitted = submit(
        new,
        u(case.requester),
        ent,
        case.open.then_some(&other),
        Verdict {
            waiting: case.policy_waiting.clone(),
            ..verdict(case.rule)
        },
        &settings,
        at(0),
    );
    let Some(mut request) = verify("submit", None, submitted, &case.submit, 0) else {
        assert!(case.steps.is_empty(), "steps after a rejected submit");
        return;
    };
    for (i, (secs, act, expect)) in case.steps.iter().enumerate() {
        let what = format!("step {i} ({act:?} at {secs}s)");
        let token = request.claim_token;
        let command = match *act {
            Act::Approve(who) => Command::Approve {
                approver: u(who).clone(),
                comment: Some("lgtm".to_owned()),
                permission: permitted(),
            },
            Act::ApproveUnpermitted(who) => Command::Approve {
                approver: u(who).clone(),
                comment: None,
                permission: ApproverVerdict {
                    outcome: Err("no policy permits".to_owned()),
                    policy_version: "v1".to_owned(),
                },
            },
            Act::Deny(who) => Command::Deny {
                approver: u(who).clone(),
                reason: "not now".to_owned(),
                permission: permitted(),
            },
            Act::Cancel(who) => Command::Cancel { by: u(who).clone() },
            Act::Release(who) => Command::Release { by: u(who).clone() },
            Act::Revoke(who) => Command::Revoke {
                by: u(who).clone(),
                reason: "incident closed".to_owned(),
            },
            Act::RevokeNoReason(who) => Command::Revoke {
                by: u(who).clone(),
                reason: "   ".to_owned(),
            },
            Act::Tick => Command::Tick,
            Act::Deprovision => Command::Deprovision {
                cause: "user `rita` deactivated by the identity provider (SCIM PATCH /Users/u1)"
                    .to_owned(),
            },
            Act::TicketClosed(ticket) => Command::TicketClosed {
                ticket: ticket.to_owned(),
                delivery: "d1".to_owned(),
            },
            Act::Idle(warned) => Command::Idle {
                limit: airlock_core::idle::IdleLimit::new(Duration::from_secs(1800), None).unwrap(),
                reported: airlock_core::idle::Reported {
                    warned_at: warned.map(at),
                    ..Default::default()
                },
                lag: Duration::from_secs(5),
            },
            Act::Redecide(before, after) => Command::Redecide {
                before: verdict(before),
                after: verdict(after),
                cause: "`rita` left group `eng` (SCIM PATCH /Groups/g1)".to_owned(),
            },
            Act::Restarted => Command::Restarted,
            Act::Extend(who, secs, rule) => Command::Extend {
                by: u(who).clone(),
                extension: Duration::from_secs(secs),
                reason: "the migration runs long".to_owned(),
                verdict: verdict(rule),
                max_duration: ent.max_duration,
            },
            Act::Succeeded(action) => Command::JobSucceeded {
                action,
                token,
                certificate: None,
            },
            Act::Failed(action, retry) => Command::JobFailed {
                action,
                token,
                error: "connector said no".to_owned(),
                retryable: retry == Retry::Retryable,
            },
            Act::StaleNew(action) => Command::JobSucceeded {
                action,
                token: token + 1,
                certificate: None,
            },
            Act::StaleOld(action) => Command::JobSucceeded {
                action,
                token: token.saturating_sub(1),
                certificate: None,
            },
        };
        let before = request.clone();
        let result = apply(request.clone(), command, &settings, at(*secs));
        if let Some(next) = verify(&what, Some(&before), result, expect, *secs) {
            request = next;
        }
    }
}

/// Checks one submit or apply result against `expect`; returns the request to
/// continue with (the old one after a rejection).
fn verify(
    what: &str,
    before: Option<&AccessRequest>,
    result: Result<Transition, Rejection>,
    expect: &Expect,
    secs: i64,
) -> Option<AccessRequest> {
    let t = match (&expect.outcome, result) {
        (Outcome::Rejected(rej), Err(got)) => {
            let matches = match (rej, &got) {
                (Rej::Forbidden, Rejection::Forbidden(m))
                | (Rej::Conflict, Rejection::Conflict(m)) => !m.is_empty(),
                (Rej::Invalid(field), Rejection::Invalid { field: f, message }) => {
                    field == f && !message.is_empty()
                }
                _ => false,
            };
            assert!(matches, "{what}: expected {rej:?}, got {got:?}");
            return before.cloned();
        }
        (Outcome::Rejected(rej), Ok(t)) => {
            panic!(
                "{what}: expected {rej:?}, got {:?} with {:?}",
                t.request.state, t.effects
            )
        }
        (Outcome::Ok(_), Err(got)) => panic!("{what}: unexpected rejection {got:?}"),
        (Outcome::Ok(state), Ok(t)) => {
            assert_eq!(t.request.state, *state, "{what}: state");
            t
        }
    };
    let r = &t.request;

    let effects: Vec<JobAction> = t.effects.iter().map(|e| e.action).collect();
    assert_eq!(effects, expect.effects, "{what}: effects");
    if let Some(e) = t.effects.last() {
        assert_eq!(
            e.token, r.claim_token,
            "{what}: effect carries the current token"
        );
        assert!(
            r.job
                .as_ref()
                .is_some_and(|j| j.action == e.action && j.claimed_until.is_some()),
            "{what}: the emitted effect is the claimed job: {:?}",
            r.job
        );
    }

    let events: Vec<&str> = t.events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(events, expect.events, "{what}: audit events");
    for e in &t.events {
        assert_eq!(e.at, at(secs), "{what}: event time");
        assert_eq!(e.request.as_ref(), Some(&r.id), "{what}: event request");
        assert_eq!(
            e.subject.as_ref(),
            Some(&r.requester),
            "{what}: event subject"
        );
        assert_eq!(
            e.entitlement.as_ref(),
            Some(&r.entitlement),
            "{what}: event entitlement"
        );
    }

    // Facts that hold after every successful step.
    assert_eq!(
        r.ended_at.is_some(),
        r.state.is_terminal(),
        "{what}: ended_at iff terminal"
    );
    if let (Some(a), Some(e)) = (r.activates_at, r.expires_at) {
        assert_eq!(a.until(e), r.duration, "{what}: window length");
    }
    if let Some(b) = before {
        if b.state.is_terminal() {
            assert_eq!(r.state, b.state, "{what}: terminal state changed");
            assert_eq!(r.ended_at, b.ended_at, "{what}: ended_at changed");
        }
    }

    for c in &expect.checks {
        match *c {
            Check::NextDue(due) => assert_eq!(r.next_due(), due.map(at), "{what}: next_due"),
            Check::GrantedAt(s) => assert_eq!(r.granted_at, Some(at(s)), "{what}: granted_at"),
            Check::ActivatesAt(s) => {
                assert_eq!(r.activates_at, Some(at(s)), "{what}: activates_at")
            }
            Check::ExpiresAt(s) => assert_eq!(r.expires_at, Some(at(s)), "{what}: expires_at"),
            Check::Scheduled(yes) => assert_eq!(r.is_scheduled(at(secs)), yes, "{what}: scheduled"),
            Check::Attempts(action, n) => {
                let job = r.job.as_ref().unwrap_or_else(|| panic!("{what}: no job"));
                assert_eq!(
                    (job.action, job.attempts),
                    (action, n),
                    "{what}: job attempts"
                );
            }
            Check::NoJob => assert_eq!(r.job, None, "{what}: job"),
            Check::Unchanged => assert_eq!(Some(r), before, "{what}: request changed"),
            Check::EndedBy(who) => assert_eq!(
                r.ended_by.as_ref().map(UserId::as_str),
                Some(who),
                "{what}: ended_by"
            ),
            Check::DeprovisionedAt(s) => {
                assert_eq!(r.deprovisioned_at, Some(at(s)), "{what}: deprovisioned_at");
            }
            Check::MayHoldAccess(yes) => {
                assert_eq!(r.may_hold_access(), yes, "{what}: may_hold_access")
            }
            Check::Detail(action, key, value) => {
                let event = t
                    .events
                    .iter()
                    .find(|e| e.action.as_str() == action)
                    .unwrap_or_else(|| panic!("{what}: no `{action}` event"));
                assert_eq!(
                    event.details.get(key).map(String::as_str),
                    Some(value),
                    "{what}: `{action}` detail `{key}`"
                );
            }
            Check::Extension(state) => assert_eq!(
                r.extension.as_ref().map(|e| e.state),
                state,
                "{what}: extension"
            ),
            Check::Lasts(secs) => {
                assert_eq!(r.duration, Duration::from_secs(secs), "{what}: duration")
            }
        }
    }
    Some(t.request)
}

// ---------------------------------------------------------------- submit

#[test]
fn auto_approval_grants_at_once_for_the_default_duration() {
    check(Case {
        submit: ok(Approved, &[Grant], &["requested", "approved"])
            .and(Check::ActivatesAt(0))
            .and(Check::ExpiresAt(3600))
            .and(Check::Scheduled(false))
            .and(Check::Attempts(Grant, 1))
            .and(Check::NextDue(Some(60)))
            .and(Check::Detail(
                "approved",
                "rule",
                "auto-approved by policy (may-request,auto)",
            ))
            .and(Check::Detail("requested", "ticket", "INC-42")),
        ..case(Rule::Auto)
    });
}

#[test]
fn duration_above_the_maximum_is_invalid() {
    check(Case {
        duration: Some(4 * 3600 + 1),
        submit: rejected(Rej::Invalid("duration")),
        ..case(Rule::Auto)
    });
}

#[test]
fn duration_at_the_maximum_is_accepted() {
    check(Case {
        duration: Some(4 * 3600),
        submit: ok(Approved, &[Grant], &["requested", "approved"]).and(Check::ExpiresAt(4 * 3600)),
        ..case(Rule::Auto)
    });
}

#[test]
fn zero_duration_is_invalid() {
    check(Case {
        duration: Some(0),
        submit: rejected(Rej::Invalid("duration")),
        ..case(Rule::Auto)
    });
}

#[test]
fn blank_reason_is_invalid_when_required() {
    check(Case {
        reason: "   ",
        submit: rejected(Rej::Invalid("reason")),
        ..case(Rule::Auto)
    });
}

#[test]
fn missing_ticket_is_invalid_when_required() {
    check(Case {
        ticket: None,
        submit: rejected(Rej::Invalid("ticket")),
        ..case(Rule::Auto)
    });
}

#[test]
fn blank_ticket_counts_as_missing() {
    check(Case {
        ticket: Some("  "),
        submit: rejected(Rej::Invalid("ticket")),
        ..case(Rule::Auto)
    });
}

#[test]
fn ticket_not_matching_the_pattern_is_invalid() {
    check(Case {
        ticket: Some("CHG-7"),
        submit: rejected(Rej::Invalid("ticket")),
        ..case(Rule::Auto)
    });
}

#[test]
fn start_at_too_far_in_the_past_is_invalid() {
    check(Case {
        start_at: Some(-61),
        submit: rejected(Rej::Invalid("start_at")),
        ..case(Rule::Auto)
    });
}

#[test]
fn start_at_within_the_skew_starts_now() {
    check(Case {
        start_at: Some(-30),
        submit: ok(Approved, &[Grant], &["requested", "approved"])
            .and(Check::ActivatesAt(0))
            .and(Check::ExpiresAt(3600)),
        ..case(Rule::Auto)
    });
}

#[test]
fn start_at_beyond_the_maximum_delay_is_invalid() {
    check(Case {
        start_at: Some(7 * 24 * 3600 + 1),
        submit: rejected(Rej::Invalid("start_at")),
        ..case(Rule::Auto)
    });
}

#[test]
fn an_existing_open_request_conflicts() {
    check(Case {
        open: true,
        submit: rejected(Rej::Conflict),
        ..case(Rule::Auto)
    });
}

#[test]
fn a_request_the_policy_set_denies_is_recorded_as_denied_with_its_policies() {
    check(Case {
        submit: ok(Denied, &[], &["requested", "denied"])
            .and(Check::NoJob)
            .and(Check::NextDue(None))
            .and(Check::Detail("requested", "policy_version", "v1"))
            .and(Check::Detail("requested", "policies", "no-prod"))
            .and(Check::Detail("requested", "decision", "denied"))
            .and(Check::Detail(
                "denied",
                "reason",
                "denied by policy: forbidden by `no-prod`",
            )),
        ..case(Rule::Denied)
    });
}

#[test]
fn malformed_input_is_rejected_before_the_policy_decision_is_recorded() {
    check(Case {
        ticket: None,
        submit: rejected(Rej::Invalid("ticket")),
        ..case(Rule::Denied)
    });
}

// ---------------------------------------------------------------- approvals

#[test]
fn two_distinct_approvers_are_needed() {
    check(Case {
        steps: vec![
            (
                10,
                Act::Approve("alice"),
                ok(Pending, &[], &["approval_recorded"])
                    .and(Check::Detail("approval_recorded", "approvals", "1/2"))
                    .and(Check::NextDue(Some(3600))),
            ),
            (11, Act::Approve("alice"), rejected(Rej::Conflict)),
            (12, Act::Approve("rita"), rejected(Rej::Forbidden)),
            (13, Act::Deny("rita"), rejected(Rej::Forbidden)),
            (14, Act::Approve("mallory"), rejected(Rej::Forbidden)),
            (15, Act::Deny("mallory"), rejected(Rej::Forbidden)),
            (16, Act::Approve("root"), rejected(Rej::Forbidden)),
            (
                20,
                Act::Approve("bob"),
                ok(Approved, &[Grant], &["approval_recorded", "approved"])
                    .and(Check::ActivatesAt(20))
                    .and(Check::ExpiresAt(3620))
                    .and(Check::Detail("approved", "approvers", "alice,bob"))
                    .and(Check::Detail(
                        "approved",
                        "rule",
                        "2 from [sre] (route-sre)",
                    )),
            ),
            (21, Act::Approve("bob"), rejected(Rej::Conflict)),
            (22, Act::Deny("alice"), rejected(Rej::Conflict)),
        ],
        ..case(Rule::Approvals(2))
    });
}

#[test]
fn a_waiting_request_reminds_its_approvers_then_escalates_then_times_out() {
    let waiting = WaitingTimes {
        remind_after: Some(Duration::from_secs(600)),
        escalate_after: Some(Duration::from_secs(1800)),
        escalate_to: BTreeSet::from([group("security")]),
        timeout: Some(Duration::from_secs(2400)),
    };
    check(Case {
        waiting: waiting.clone(),
        submit: ok(Pending, &[], &["requested"]).and(Check::NextDue(Some(600))),
        steps: vec![
            (300, Act::Tick, ok(Pending, &[], &[]).and(Check::Unchanged)),
            (
                600,
                Act::Tick,
                ok(Pending, &[], &["approval_reminded"])
                    .and(Check::Detail("approval_reminded", "approver_groups", "sre"))
                    .and(Check::Detail("approval_reminded", "waited_seconds", "600"))
                    .and(Check::NextDue(Some(1800))),
            ),
            (900, Act::Tick, ok(Pending, &[], &[]).and(Check::Unchanged)),
            // Not yet: security is not an approver group until escalation.
            (1000, Act::Approve("sam"), rejected(Rej::Forbidden)),
            (
                1800,
                Act::Tick,
                ok(Pending, &[], &["approval_escalated"])
                    .and(Check::Detail(
                        "approval_escalated",
                        "escalated_to",
                        "security",
                    ))
                    .and(Check::NextDue(Some(2400))),
            ),
            (2000, Act::Tick, ok(Pending, &[], &[]).and(Check::Unchanged)),
            (
                2400,
                Act::Tick,
                ok(TimedOut, &[], &["timed_out"]).and(Check::NextDue(None)),
            ),
        ],
        ..case(Rule::Approvals(1))
    });
    // Once escalated, the escalation group fills the seat.
    check(Case {
        waiting,
        steps: vec![
            (
                1800,
                Act::Tick,
                ok(Pending, &[], &["approval_reminded", "approval_escalated"]),
            ),
            (
                1900,
                Act::Approve("sam"),
                ok(Approved, &[Grant], &["approval_recorded", "approved"]),
            ),
        ],
        ..case(Rule::Approvals(1))
    });
    // Steps at or after the time-out never happen; auto-approved requests
    // never wait.
    check(Case {
        waiting: WaitingTimes {
            remind_after: Some(Duration::from_secs(3600)),
            ..WaitingTimes::default()
        },
        submit: ok(Pending, &[], &["requested"]).and(Check::NextDue(Some(3600))),
        steps: vec![(3600, Act::Tick, ok(TimedOut, &[], &["timed_out"]))],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn the_routing_policies_waiting_times_replace_the_entitlements() {
    check(Case {
        waiting: WaitingTimes {
            remind_after: Some(Duration::from_secs(1200)),
            escalate_after: Some(Duration::from_secs(1500)),
            escalate_to: BTreeSet::from([group("security")]),
            timeout: None,
        },
        // The policy reminds sooner and times out at 900 s, before the
        // entitlement's escalation would happen.
        policy_waiting: WaitingTimes {
            remind_after: Some(Duration::from_secs(600)),
            timeout: Some(Duration::from_secs(900)),
            ..WaitingTimes::default()
        },
        submit: ok(Pending, &[], &["requested"]).and(Check::NextDue(Some(600))),
        steps: vec![
            (
                600,
                Act::Tick,
                ok(Pending, &[], &["approval_reminded"]).and(Check::NextDue(Some(900))),
            ),
            (900, Act::Tick, ok(TimedOut, &[], &["timed_out"])),
        ],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn the_requester_cannot_approve_even_as_a_member_of_the_approver_group() {
    check(Case {
        steps: vec![
            (10, Act::Approve("rita"), rejected(Rej::Forbidden)),
            (11, Act::Deny("rita"), rejected(Rej::Forbidden)),
            (
                12,
                Act::Approve("alice"),
                ok(Approved, &[Grant], &["approval_recorded", "approved"]),
            ),
        ],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn a_route_with_an_empty_tier_is_refused() {
    check(Case {
        submit: rejected(Rej::Forbidden),
        ..case(Rule::Approvals(0))
    });
}

#[test]
fn every_tier_needs_its_own_person() {
    check(Case {
        steps: vec![
            // dave qualifies for both tiers but fills one seat.
            (
                10,
                Act::Approve("dave"),
                ok(Pending, &[], &["approval_recorded"])
                    .and(Check::Detail("approval_recorded", "approvals", "1/2"))
                    .and(Check::Detail("approval_recorded", "policies", "approvers")),
            ),
            // alice qualifies for sre only: dave moves to the security seat.
            (
                20,
                Act::Approve("alice"),
                ok(Approved, &[Grant], &["approval_recorded", "approved"]).and(Check::Detail(
                    "approved",
                    "rule",
                    "1 from [sre] (route-sre) and 1 from [security] (route-security)",
                )),
            ),
        ],
        ..case(Rule::OwnerAndSecurity)
    });
}

#[test]
fn an_approval_that_fills_no_new_seat_is_a_conflict() {
    check(Case {
        steps: vec![
            (
                10,
                Act::Approve("alice"),
                ok(Pending, &[], &["approval_recorded"]),
            ),
            // bob is only in sre, whose one seat alice holds.
            (11, Act::Approve("bob"), rejected(Rej::Conflict)),
            // mallory and root qualify for no tier.
            (12, Act::Approve("mallory"), rejected(Rej::Forbidden)),
            (13, Act::Approve("root"), rejected(Rej::Forbidden)),
            (
                14,
                Act::Approve("sam"),
                ok(Approved, &[Grant], &["approval_recorded", "approved"]).and(Check::Detail(
                    "approved",
                    "approvers",
                    "alice,sam",
                )),
            ),
        ],
        ..case(Rule::OwnerAndSecurity)
    });
}

#[test]
fn an_approver_the_policy_set_refuses_cannot_approve_even_in_the_group() {
    check(Case {
        steps: vec![
            (
                10,
                Act::ApproveUnpermitted("alice"),
                rejected(Rej::Forbidden),
            ),
            (
                11,
                Act::Approve("alice"),
                ok(Approved, &[Grant], &["approval_recorded", "approved"]),
            ),
        ],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn one_denial_ends_the_request() {
    check(Case {
        steps: vec![
            (
                10,
                Act::Approve("alice"),
                ok(Pending, &[], &["approval_recorded"]),
            ),
            (
                20,
                Act::Deny("bob"),
                ok(Denied, &[], &["denied"])
                    .and(Check::EndedBy("bob"))
                    .and(Check::NoJob)
                    .and(Check::NextDue(None))
                    .and(Check::Detail("denied", "reason", "not now")),
            ),
            (30, Act::Approve("bob"), rejected(Rej::Conflict)),
            (40, Act::Tick, ok(Denied, &[], &[]).and(Check::Unchanged)),
        ],
        ..case(Rule::Approvals(2))
    });
}

#[test]
fn pending_requests_time_out_and_late_approvals_conflict() {
    check(Case {
        steps: vec![
            (3599, Act::Tick, ok(Pending, &[], &[]).and(Check::Unchanged)),
            (
                3600,
                Act::Tick,
                ok(TimedOut, &[], &["timed_out"]).and(Check::NoJob),
            ),
            (3601, Act::Approve("alice"), rejected(Rej::Conflict)),
        ],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn an_approval_after_the_deadline_conflicts_even_before_the_timeout_tick() {
    check(Case {
        steps: vec![
            (3600, Act::Approve("alice"), rejected(Rej::Conflict)),
            (3600, Act::Cancel("rita"), rejected(Rej::Conflict)),
            (3600, Act::Tick, ok(TimedOut, &[], &["timed_out"])),
        ],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn cancel_of_a_pending_request_by_the_requester_only() {
    check(Case {
        steps: vec![
            (5, Act::Cancel("alice"), rejected(Rej::Forbidden)),
            (
                6,
                Act::Cancel("rita"),
                ok(Cancelled, &[], &["cancelled"]).and(Check::EndedBy("rita")),
            ),
            (7, Act::Cancel("rita"), rejected(Rej::Conflict)),
        ],
        ..case(Rule::Approvals(1))
    });
}

// ---------------------------------------------------------------- scheduling

#[test]
fn a_future_start_is_scheduled_and_granted_only_when_due() {
    check(Case {
        start_at: Some(600),
        submit: ok(Approved, &[], &["requested", "approved"])
            .and(Check::Scheduled(true))
            .and(Check::ActivatesAt(600))
            .and(Check::ExpiresAt(4200))
            .and(Check::Attempts(Grant, 0))
            .and(Check::NextDue(Some(600)))
            .and(Check::MayHoldAccess(false)),
        steps: vec![
            (
                599,
                Act::Tick,
                ok(Approved, &[], &[])
                    .and(Check::Unchanged)
                    .and(Check::Scheduled(true)),
            ),
            (
                600,
                Act::Tick,
                ok(Approved, &[Grant], &[])
                    .and(Check::Scheduled(false))
                    .and(Check::NextDue(Some(660))),
            ),
            (
                610,
                Act::Succeeded(Grant),
                ok(Active, &[], &["granted"])
                    .and(Check::GrantedAt(610))
                    .and(Check::NextDue(Some(4200))),
            ),
            (4200, Act::Tick, ok(Expired, &[Revoke], &["expired"])),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_scheduled_request_can_be_cancelled_without_provisioning() {
    check(Case {
        start_at: Some(600),
        submit: ok(Approved, &[], &["requested", "approved"]),
        steps: vec![
            (
                100,
                Act::Cancel("rita"),
                ok(Cancelled, &[], &["cancelled"]).and(Check::NoJob),
            ),
            (
                600,
                Act::Tick,
                ok(Cancelled, &[], &[]).and(Check::Unchanged),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_scheduled_request_ended_at_its_start_time_is_never_provisioned() {
    // Revoke, release and cancel arrive at the start time, before the
    // scheduler's tick: the grant that just fell due must not go out.
    for (act, state, event) in [
        (Act::Revoke("root"), Revoked, "revoked"),
        (Act::Release("rita"), Released, "released"),
        (Act::Cancel("rita"), Cancelled, "cancelled"),
    ] {
        check(Case {
            start_at: Some(600),
            submit: ok(Approved, &[], &["requested", "approved"]),
            steps: vec![
                (
                    600,
                    act,
                    ok(state, &[], &[event])
                        .and(Check::NoJob)
                        .and(Check::MayHoldAccess(false)),
                ),
                (700, Act::Tick, ok(state, &[], &[]).and(Check::Unchanged)),
            ],
            ..case(Rule::Auto)
        });
    }
}

#[test]
fn an_approval_after_start_at_starts_now_for_the_full_duration() {
    check(Case {
        start_at: Some(100),
        steps: vec![(
            500,
            Act::Approve("alice"),
            ok(Approved, &[Grant], &["approval_recorded", "approved"])
                .and(Check::ActivatesAt(500))
                .and(Check::ExpiresAt(4100)),
        )],
        ..case(Rule::Approvals(1))
    });
}

// ---------------------------------------------------------------- grant and expiry

#[test]
fn a_granted_request_expires_and_is_deprovisioned() {
    check(Case {
        steps: vec![
            (
                5,
                Act::Succeeded(Grant),
                ok(Active, &[], &["granted"])
                    .and(Check::GrantedAt(5))
                    .and(Check::NoJob)
                    .and(Check::MayHoldAccess(true)),
            ),
            (3599, Act::Tick, ok(Active, &[], &[]).and(Check::Unchanged)),
            (
                3600,
                Act::Tick,
                ok(Expired, &[Revoke], &["expired"])
                    .and(Check::Attempts(Revoke, 1))
                    .and(Check::Detail("expired", "revocation", "scheduled"))
                    .and(Check::MayHoldAccess(true)),
            ),
            (
                3601,
                Act::Succeeded(Revoke),
                ok(Expired, &[], &["deprovisioned"])
                    .and(Check::DeprovisionedAt(3601))
                    .and(Check::NoJob)
                    .and(Check::NextDue(None))
                    .and(Check::MayHoldAccess(false)),
            ),
            (9999, Act::Tick, ok(Expired, &[], &[]).and(Check::Unchanged)),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn retryable_grant_failures_back_off_then_fail_with_cleanup() {
    check(Case {
        steps: vec![
            (
                1,
                Act::Failed(Grant, Retry::Retryable),
                ok(Approved, &[], &["grant_attempt_failed"])
                    .and(Check::NextDue(Some(11)))
                    .and(Check::Detail("grant_attempt_failed", "attempt", "1")),
            ),
            (10, Act::Tick, ok(Approved, &[], &[]).and(Check::Unchanged)),
            (
                11,
                Act::Tick,
                ok(Approved, &[Grant], &[]).and(Check::Attempts(Grant, 2)),
            ),
            (
                12,
                Act::Failed(Grant, Retry::Retryable),
                ok(Approved, &[], &["grant_attempt_failed"]).and(Check::NextDue(Some(32))),
            ),
            (
                32,
                Act::Tick,
                ok(Approved, &[Grant], &[]).and(Check::Attempts(Grant, 3)),
            ),
            (
                33,
                Act::Failed(Grant, Retry::Retryable),
                ok(Failed, &[Revoke], &["failed"]).and(Check::Attempts(Revoke, 1)),
            ),
            (
                34,
                Act::Succeeded(Revoke),
                ok(Failed, &[], &["deprovisioned"]).and(Check::NoJob),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_permanent_grant_failure_fails_at_once() {
    check(Case {
        steps: vec![
            (
                1,
                Act::Failed(Grant, Retry::Permanent),
                ok(Failed, &[Revoke], &["failed"]).and(Check::Attempts(Revoke, 1)),
            ),
            (
                2,
                Act::Succeeded(Revoke),
                ok(Failed, &[], &["deprovisioned"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn lost_grant_attempts_count_towards_the_maximum() {
    check(Case {
        steps: vec![
            (59, Act::Tick, ok(Approved, &[], &[]).and(Check::Unchanged)),
            (
                60,
                Act::Tick,
                ok(Approved, &[Grant], &["grant_outcome_unknown"])
                    .and(Check::Attempts(Grant, 2))
                    .and(Check::Detail("grant_outcome_unknown", "attempt", "1")),
            ),
            (
                120,
                Act::Tick,
                ok(Approved, &[Grant], &["grant_outcome_unknown"]).and(Check::Attempts(Grant, 3)),
            ),
            (
                180,
                Act::Tick,
                ok(Failed, &[Revoke], &["grant_outcome_unknown", "failed"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn the_window_closing_before_provisioning_fails_the_request() {
    check(Case {
        duration: Some(100),
        steps: vec![
            (
                1,
                Act::Failed(Grant, Retry::Retryable),
                ok(Approved, &[], &["grant_attempt_failed"]),
            ),
            (100, Act::Tick, ok(Failed, &[Revoke], &["failed"])),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_grant_that_lands_after_the_window_expires_at_once() {
    check(Case {
        duration: Some(30),
        steps: vec![
            (30, Act::Tick, ok(Approved, &[], &[]).and(Check::Unchanged)),
            (
                40,
                Act::Succeeded(Grant),
                ok(Expired, &[Revoke], &["granted", "expired"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn revocation_retries_forever_with_capped_backoff() {
    let fail = |secs, next| {
        (
            secs,
            Act::Failed(Revoke, Retry::Retryable),
            ok(Expired, &[], &["revoke_attempt_failed"]).and(Check::NextDue(Some(next))),
        )
    };
    let tick = |secs, attempts| {
        (
            secs,
            Act::Tick,
            ok(Expired, &[Revoke], &[]).and(Check::Attempts(Revoke, attempts)),
        )
    };
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (3600, Act::Tick, ok(Expired, &[Revoke], &["expired"])),
            fail(3601, 3611),
            tick(3611, 2),
            fail(3612, 3632),
            tick(3632, 3),
            fail(3633, 3673),
            tick(3673, 4),
            fail(3674, 3714),
            tick(3714, 5),
            // Even a failure the connector calls permanent is retried.
            (
                3715,
                Act::Failed(Revoke, Retry::Permanent),
                ok(Expired, &[], &["revoke_attempt_failed"]).and(Check::NextDue(Some(3755))),
            ),
            tick(3755, 6),
            // A lost revoke attempt is retried when its lease lapses.
            (
                3815,
                Act::Tick,
                ok(Expired, &[Revoke], &[]).and(Check::Attempts(Revoke, 7)),
            ),
            (
                3816,
                Act::Succeeded(Revoke),
                ok(Expired, &[], &["deprovisioned"])
                    .and(Check::Detail("deprovisioned", "attempts", "7"))
                    .and(Check::NextDue(None)),
            ),
        ],
        ..case(Rule::Auto)
    });
}

// ---------------------------------------------------------------- stale results

#[test]
fn stale_results_change_nothing() {
    check(Case {
        steps: vec![
            (
                5,
                Act::StaleNew(Grant),
                ok(Approved, &[], &[]).and(Check::Unchanged),
            ),
            (
                6,
                Act::StaleOld(Grant),
                ok(Approved, &[], &[]).and(Check::Unchanged),
            ),
            (
                7,
                Act::Succeeded(Revoke),
                ok(Approved, &[], &[]).and(Check::Unchanged),
            ),
            (
                8,
                Act::Failed(Revoke, Retry::Permanent),
                ok(Approved, &[], &[]).and(Check::Unchanged),
            ),
            (10, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (
                11,
                Act::Succeeded(Grant),
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
            (
                12,
                Act::Failed(Grant, Retry::Permanent),
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
            (
                13,
                Act::StaleNew(Revoke),
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_result_from_a_superseded_attempt_is_ignored() {
    check(Case {
        steps: vec![
            (
                60,
                Act::Tick,
                ok(Approved, &[Grant], &["grant_outcome_unknown"]).and(Check::Attempts(Grant, 2)),
            ),
            (
                61,
                Act::StaleOld(Grant),
                ok(Approved, &[], &[]).and(Check::Unchanged),
            ),
            (62, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
        ],
        ..case(Rule::Auto)
    });
}

// ---------------------------------------------------------------- restarts

#[test]
fn a_grant_in_flight_when_the_server_restarted_is_recorded_and_tried_again_at_once() {
    check(Case {
        steps: vec![(
            10,
            Act::Restarted,
            ok(Approved, &[Grant], &["grant_outcome_unknown"])
                .and(Check::Attempts(Grant, 2))
                .and(Check::Detail("grant_outcome_unknown", "attempt", "1")),
        )],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_grant_lost_in_a_restart_after_its_window_is_recorded_and_removed_at_once() {
    check(Case {
        duration: Some(30),
        steps: vec![(
            40,
            Act::Restarted,
            ok(Failed, &[Revoke], &["grant_outcome_unknown", "failed"])
                .and(Check::MayHoldAccess(true))
                .and(Check::Attempts(Revoke, 1)),
        )],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_revoke_waiting_for_a_grant_lost_in_a_restart_runs_at_once() {
    check(Case {
        steps: vec![
            (
                10,
                Act::Release("rita"),
                ok(Released, &[], &["released"])
                    .and(Check::NextDue(Some(60)))
                    .and(Check::Detail(
                        "released",
                        "grant_attempt",
                        "in flight; the revocation waits for its result or until 2023-11-14T22:14:20.000Z",
                    )),
            ),
            (
                11,
                Act::Restarted,
                ok(Released, &[Revoke], &["grant_outcome_unknown"])
                    .and(Check::Attempts(Revoke, 1)),
            ),
            (12, Act::Succeeded(Revoke), ok(Released, &[], &["deprovisioned"])),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_restart_changes_nothing_where_no_attempt_was_in_flight() {
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (
                6,
                Act::Restarted,
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
        ],
        ..case(Rule::Auto)
    });
}

// ---------------------------------------------------------------- ending early

#[test]
fn revoke_during_a_grant_attempt_waits_for_its_result() {
    check(Case {
        steps: vec![
            (
                10,
                Act::Revoke("root"),
                ok(Revoked, &[], &["revoked"])
                    .and(Check::EndedBy("root"))
                    .and(Check::Attempts(Revoke, 0))
                    .and(Check::NextDue(Some(60)))
                    .and(Check::MayHoldAccess(true))
                    .and(Check::Detail("revoked", "reason", "incident closed")),
            ),
            (
                20,
                Act::Succeeded(Grant),
                ok(Revoked, &[Revoke], &[]).and(Check::Attempts(Revoke, 1)),
            ),
            (
                21,
                Act::Succeeded(Revoke),
                ok(Revoked, &[], &["deprovisioned"]).and(Check::NoJob),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn revoke_during_a_grant_attempt_waits_for_its_lease_if_no_result_comes() {
    check(Case {
        steps: vec![
            (10, Act::Revoke("root"), ok(Revoked, &[], &["revoked"])),
            (59, Act::Tick, ok(Revoked, &[], &[]).and(Check::Unchanged)),
            (60, Act::Tick, ok(Revoked, &[Revoke], &[])),
            // The grant's own result, arriving late, must not cancel the revoke.
            (
                61,
                Act::StaleOld(Grant),
                ok(Revoked, &[], &[]).and(Check::Attempts(Revoke, 1)),
            ),
            (
                62,
                Act::Succeeded(Revoke),
                ok(Revoked, &[], &["deprovisioned"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_failed_grant_attempt_after_a_revoke_still_triggers_cleanup() {
    check(Case {
        steps: vec![
            (10, Act::Release("rita"), ok(Released, &[], &["released"])),
            (
                20,
                Act::Failed(Grant, Retry::Permanent),
                ok(Released, &[Revoke], &[]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_late_grant_after_deprovisioning_is_revoked_again() {
    check(Case {
        steps: vec![
            (10, Act::Revoke("root"), ok(Revoked, &[], &["revoked"])),
            (60, Act::Tick, ok(Revoked, &[Revoke], &[])),
            (
                61,
                Act::Succeeded(Revoke),
                ok(Revoked, &[], &["deprovisioned"]),
            ),
            // The token of the grant attempt (one before the revoke's).
            (
                62,
                Act::StaleOld(Grant),
                ok(Revoked, &[Revoke], &["revocation_repeated"]).and(Check::MayHoldAccess(true)),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn only_the_requester_releases() {
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (6, Act::Release("alice"), rejected(Rej::Forbidden)),
            (7, Act::Release("root"), rejected(Rej::Forbidden)),
            (
                8,
                Act::Release("rita"),
                ok(Released, &[Revoke], &["released"]).and(Check::EndedBy("rita")),
            ),
            (9, Act::Release("rita"), rejected(Rej::Conflict)),
            (10, Act::Revoke("root"), rejected(Rej::Conflict)),
            (
                11,
                Act::Succeeded(Revoke),
                ok(Released, &[], &["deprovisioned"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn only_an_admin_revokes_and_must_say_why() {
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (6, Act::Revoke("alice"), rejected(Rej::Forbidden)),
            (7, Act::Revoke("rita"), rejected(Rej::Forbidden)),
            (
                8,
                Act::RevokeNoReason("root"),
                rejected(Rej::Invalid("reason")),
            ),
            (
                9,
                Act::Revoke("root"),
                ok(Revoked, &[Revoke], &["revoked"]).and(Check::EndedBy("root")),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn an_active_grant_cannot_be_cancelled() {
    check(Case {
        steps: vec![
            (1, Act::Cancel("rita"), rejected(Rej::Conflict)),
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (6, Act::Cancel("rita"), rejected(Rej::Conflict)),
            (7, Act::Cancel("alice"), rejected(Rej::Forbidden)),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_pending_request_cannot_be_released_or_revoked() {
    check(Case {
        steps: vec![
            (1, Act::Release("rita"), rejected(Rej::Conflict)),
            (2, Act::Revoke("root"), rejected(Rej::Conflict)),
        ],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn a_release_at_expiry_finds_the_grant_expired() {
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (3600, Act::Release("rita"), rejected(Rej::Conflict)),
            (3600, Act::Tick, ok(Expired, &[Revoke], &["expired"])),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn revoke_when_a_grant_retry_falls_due_sends_no_grant() {
    check(Case {
        steps: vec![
            (
                1,
                Act::Failed(Grant, Retry::Retryable),
                ok(Approved, &[], &["grant_attempt_failed"]).and(Check::NextDue(Some(11))),
            ),
            // The retry is due but not yet claimed: the earlier attempt may have
            // partly landed, so clean up, but never send another grant.
            (
                11,
                Act::Revoke("root"),
                ok(Revoked, &[Revoke], &["revoked"]).and(Check::Attempts(Revoke, 1)),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_result_reported_just_after_its_lease_is_still_the_current_one() {
    check(Case {
        steps: vec![(
            60,
            Act::Succeeded(Grant),
            ok(Active, &[], &["granted"]).and(Check::GrantedAt(60)),
        )],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_superseded_grant_result_does_not_release_a_waiting_revoke() {
    check(Case {
        steps: vec![
            // The first attempt is presumed lost; the second is in flight until 120.
            (
                60,
                Act::Tick,
                ok(Approved, &[Grant], &["grant_outcome_unknown"]).and(Check::Attempts(Grant, 2)),
            ),
            (
                61,
                Act::Release("rita"),
                ok(Released, &[], &["released"])
                    .and(Check::Attempts(Revoke, 0))
                    .and(Check::NextDue(Some(120))),
            ),
            // The first attempt reports late, as does a token never issued:
            // the second attempt may still land, so the revoke keeps waiting.
            (
                62,
                Act::StaleOld(Grant),
                ok(Released, &[], &[]).and(Check::Unchanged),
            ),
            (
                63,
                Act::StaleNew(Grant),
                ok(Released, &[], &[]).and(Check::Unchanged),
            ),
            // The attempt the revoke waits for reports: now it runs.
            (
                64,
                Act::Succeeded(Grant),
                ok(Released, &[Revoke], &[]).and(Check::Attempts(Revoke, 1)),
            ),
            (
                65,
                Act::Succeeded(Revoke),
                ok(Released, &[], &["deprovisioned"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

// ---------------------------------------------------------------- the identity provider

#[test]
fn deprovisioning_cancels_what_has_not_started_and_revokes_what_has() {
    check(Case {
        steps: vec![(
            5,
            Act::Deprovision,
            ok(Cancelled, &[], &["cancelled"]).and(Check::Detail(
                "cancelled",
                "cause",
                "user `rita` deactivated by the identity provider (SCIM PATCH /Users/u1)",
            )),
        )],
        ..case(Rule::Approvals(1))
    });
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (
                6,
                Act::Deprovision,
                ok(Revoked, &[Revoke], &["revoked"]).and(Check::MayHoldAccess(true)),
            ),
            // Once ended, a second deprovisioning changes nothing.
            (
                7,
                Act::Deprovision,
                ok(Revoked, &[], &[]).and(Check::Unchanged),
            ),
            (
                8,
                Act::Succeeded(Revoke),
                ok(Revoked, &[], &["deprovisioned"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

// ---------------------------------------------------------------- tickets and idleness

#[test]
fn a_closed_ticket_cancels_what_has_not_started_and_revokes_what_has() {
    check(Case {
        steps: vec![
            // Another ticket's closing is not this request's business.
            (4, Act::TicketClosed("INC-43"), rejected(Rej::Conflict)),
            (
                5,
                Act::TicketClosed("INC-42"),
                ok(Cancelled, &[], &["cancelled"])
                    .and(Check::Detail(
                        "cancelled",
                        "cause",
                        "ticket `INC-42` was closed",
                    ))
                    .and(Check::Detail("cancelled", "ticket", "INC-42"))
                    .and(Check::Detail("cancelled", "delivery", "d1")),
            ),
        ],
        ..case(Rule::Approvals(1))
    });
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (
                6,
                Act::TicketClosed("INC-42"),
                ok(Revoked, &[Revoke], &["revoked"])
                    .and(Check::Detail(
                        "revoked",
                        "cause",
                        "ticket `INC-42` was closed",
                    ))
                    .and(Check::MayHoldAccess(true)),
            ),
            // Closed again: nothing more happens.
            (
                7,
                Act::TicketClosed("INC-42"),
                ok(Revoked, &[], &[]).and(Check::Unchanged),
            ),
            (
                8,
                Act::Succeeded(Revoke),
                ok(Revoked, &[], &["deprovisioned"]),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn an_unused_grant_is_warned_then_released_as_idle() {
    // Granted at 5: due at 5 + 1800 + 5 (lag), warned 450 before.
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (
                1359,
                Act::Idle(None),
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
            (
                1360,
                Act::Idle(None),
                ok(Active, &[], &["idle_warned"])
                    .and(Check::Detail(
                        "idle_warned",
                        "release_at",
                        "2023-11-14T22:43:30.000Z",
                    ))
                    .and(Check::Detail("idle_warned", "idle_limit", "30m")),
            ),
            (
                1809,
                Act::Idle(Some(1360)),
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
            (
                1810,
                Act::Idle(Some(1360)),
                ok(Released, &[Revoke], &["released"])
                    .and(Check::Detail("released", "cause", "idle"))
                    .and(Check::MayHoldAccess(true)),
            ),
            // Ended: the idle rule has nothing more to do.
            (
                1811,
                Act::Idle(Some(1360)),
                ok(Released, &[], &[]).and(Check::Unchanged),
            ),
        ],
        ..case(Rule::Auto)
    });
    // Not granted yet: nothing to release.
    check(Case {
        steps: vec![(
            3000,
            Act::Idle(None),
            ok(Pending, &[], &[]).and(Check::Unchanged),
        )],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn leaving_a_group_ends_only_what_the_membership_permitted() {
    // The membership turned a permit into a denial: the pending request is
    // denied, the grant revoked.
    check(Case {
        steps: vec![(
            5,
            Act::Redecide(Rule::Approvals(1), Rule::Denied),
            ok(Denied, &[], &["denied"]).and(Check::Detail("denied", "policies", "no-prod")),
        )],
        ..case(Rule::Approvals(1))
    });
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (
                6,
                Act::Redecide(Rule::Auto, Rule::Denied),
                ok(Revoked, &[Revoke], &["revoked"]),
            ),
        ],
        ..case(Rule::Auto)
    });
    // Denied with and without the group (a fact the re-decision lacks), or
    // permitted without it: not the membership's doing, nothing changes.
    check(Case {
        steps: vec![
            (5, Act::Succeeded(Grant), ok(Active, &[], &["granted"])),
            (
                6,
                Act::Redecide(Rule::Denied, Rule::Denied),
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
            (
                7,
                Act::Redecide(Rule::Auto, Rule::Approvals(1)),
                ok(Active, &[], &[]).and(Check::Unchanged),
            ),
        ],
        ..case(Rule::Auto)
    });
}

// ---------------------------------------------------------------- extensions
//
// `case(Rule::Auto)` is granted at 1s: active until 3600 (1h), max 4h.

/// Granted at 0, confirmed at 1: active until 3600.
fn active() -> (i64, Act, Expect) {
    (1, Act::Succeeded(Grant), ok(Active, &[], &["granted"]))
}

/// Asks at `secs` for 30 minutes more, granted at once: the re-grant starts.
fn extended_at_once(secs: i64) -> (i64, Act, Expect) {
    (
        secs,
        Act::Extend("rita", 1800, Rule::Auto),
        ok(
            Active,
            &[Grant],
            &["extension_requested", "extension_approved"],
        ),
    )
}

#[test]
fn an_extension_granted_at_once_moves_the_expiry_only_when_the_target_confirms() {
    check(Case {
        steps: vec![
            active(),
            (
                10,
                Act::Extend("rita", 1800, Rule::Auto),
                ok(
                    Active,
                    &[Grant],
                    &["extension_requested", "extension_approved"],
                )
                .and(Check::ExpiresAt(3600))
                .and(Check::Lasts(3600))
                .and(Check::Extension(Some(ExtensionState::Provisioning)))
                // The re-grant's lease, then the expiry in force.
                .and(Check::NextDue(Some(70)))
                .and(Check::Detail(
                    "extension_requested",
                    "total_seconds",
                    "5400",
                ))
                .and(Check::Detail(
                    "extension_requested",
                    "extension_seconds",
                    "1800",
                ))
                .and(Check::Detail(
                    "extension_approved",
                    "new_expires_at",
                    "2023-11-14T23:43:20.000Z",
                )),
            ),
            (
                20,
                Act::Succeeded(Grant),
                ok(Active, &[], &["extended"])
                    .and(Check::ExpiresAt(5400))
                    .and(Check::Lasts(5400))
                    .and(Check::NoJob)
                    .and(Check::Extension(Some(ExtensionState::Extended)))
                    .and(Check::NextDue(Some(5400))),
            ),
            // The old expiry stopped counting.
            (3600, Act::Tick, ok(Active, &[], &[]).and(Check::Unchanged)),
            (5400, Act::Tick, ok(Expired, &[Revoke], &["expired"])),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn the_total_never_exceeds_the_entitlements_maximum() {
    check(Case {
        steps: vec![
            active(),
            // 1h held, 4h the maximum: 3h at most.
            (
                10,
                Act::Extend("rita", 3 * 3600 + 1, Rule::Auto),
                rejected(Rej::Invalid("by")),
            ),
            (
                10,
                Act::Extend("rita", 0, Rule::Auto),
                rejected(Rej::Invalid("by")),
            ),
            (
                10,
                Act::Extend("rita", 3 * 3600, Rule::Auto),
                ok(
                    Active,
                    &[Grant],
                    &["extension_requested", "extension_approved"],
                ),
            ),
            (
                11,
                Act::Succeeded(Grant),
                ok(Active, &[], &["extended"]).and(Check::Lasts(4 * 3600)),
            ),
            // At the maximum: nothing more to give.
            (
                12,
                Act::Extend("rita", 1, Rule::Auto),
                rejected(Rej::Invalid("by")),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn only_the_requester_extends_only_an_active_grant_one_extension_at_a_time() {
    check(Case {
        steps: vec![
            // Approved, not yet provisioned.
            (
                0,
                Act::Extend("rita", 60, Rule::Auto),
                rejected(Rej::Conflict),
            ),
            active(),
            (
                2,
                Act::Extend("alice", 60, Rule::Auto),
                rejected(Rej::Forbidden),
            ),
            (
                2,
                Act::Extend("root", 60, Rule::Auto),
                rejected(Rej::Forbidden),
            ),
            (
                3,
                Act::Extend("rita", 60, Rule::Approvals(1)),
                ok(Active, &[], &["extension_requested"])
                    .and(Check::Extension(Some(ExtensionState::Pending))),
            ),
            (
                4,
                Act::Extend("rita", 60, Rule::Auto),
                rejected(Rej::Conflict),
            ),
            (
                5,
                Act::Release("rita"),
                ok(Released, &[Revoke], &["extension_lapsed", "released"]),
            ),
            (
                6,
                Act::Extend("rita", 60, Rule::Auto),
                rejected(Rej::Conflict),
            ),
        ],
        ..case(Rule::Auto)
    });
    check(Case {
        steps: vec![(
            1,
            Act::Extend("rita", 60, Rule::Auto),
            rejected(Rej::Conflict),
        )],
        ..case(Rule::Approvals(1))
    });
}

#[test]
fn an_extension_needing_approval_waits_for_its_own_approvers() {
    check(Case {
        steps: vec![
            active(),
            (
                10,
                Act::Extend("rita", 1800, Rule::Approvals(1)),
                ok(Active, &[], &["extension_requested"])
                    .and(Check::Extension(Some(ExtensionState::Pending)))
                    .and(Check::NextDue(Some(3600))),
            ),
            // Never one's own, even in the approver group.
            (20, Act::Approve("rita"), rejected(Rej::Forbidden)),
            (20, Act::Approve("sam"), rejected(Rej::Forbidden)),
            (
                20,
                Act::Approve("alice"),
                ok(
                    Active,
                    &[Grant],
                    &["extension_approval_recorded", "extension_approved"],
                )
                .and(Check::Detail("extension_approved", "approvers", "alice")),
            ),
            (21, Act::Approve("bob"), rejected(Rej::Conflict)),
            (
                22,
                Act::Succeeded(Grant),
                ok(Active, &[], &["extended"]).and(Check::ExpiresAt(5400)),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_denied_extension_leaves_the_grant_as_it_was() {
    // By an approver.
    check(Case {
        steps: vec![
            active(),
            (
                10,
                Act::Extend("rita", 1800, Rule::Approvals(1)),
                ok(Active, &[], &["extension_requested"]),
            ),
            (
                20,
                Act::Deny("alice"),
                ok(Active, &[], &["extension_denied"])
                    .and(Check::Extension(Some(ExtensionState::Denied)))
                    .and(Check::ExpiresAt(3600))
                    .and(Check::Detail("extension_denied", "reason", "not now")),
            ),
            (21, Act::Approve("bob"), rejected(Rej::Conflict)),
            // Another may be asked for.
            (
                30,
                Act::Extend("rita", 600, Rule::Auto),
                ok(
                    Active,
                    &[Grant],
                    &["extension_requested", "extension_approved"],
                ),
            ),
        ],
        ..case(Rule::Auto)
    });
    // By policy, at once.
    check(Case {
        steps: vec![
            active(),
            (
                10,
                Act::Extend("rita", 1800, Rule::Denied),
                ok(Active, &[], &["extension_requested", "extension_denied"])
                    .and(Check::Extension(Some(ExtensionState::Denied)))
                    .and(Check::NoJob)
                    .and(Check::ExpiresAt(3600)),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn a_failed_extension_keeps_the_old_expiry() {
    check(Case {
        steps: vec![
            active(),
            extended_at_once(10),
            (
                20,
                Act::Failed(Grant, Retry::Permanent),
                ok(Active, &[], &["extension_failed"])
                    .and(Check::Extension(Some(ExtensionState::Failed)))
                    .and(Check::ExpiresAt(3600))
                    .and(Check::NoJob)
                    .and(Check::NextDue(Some(3600))),
            ),
            (3600, Act::Tick, ok(Expired, &[Revoke], &["expired"])),
        ],
        ..case(Rule::Auto)
    });
    // Retries run out (3 attempts).
    check(Case {
        steps: vec![
            active(),
            extended_at_once(10),
            (
                20,
                Act::Failed(Grant, Retry::Retryable),
                ok(Active, &[], &["grant_attempt_failed"]).and(Check::NextDue(Some(30))),
            ),
            (
                30,
                Act::Tick,
                ok(Active, &[Grant], &[]).and(Check::Attempts(Grant, 2)),
            ),
            (
                31,
                Act::Failed(Grant, Retry::Retryable),
                ok(Active, &[], &["grant_attempt_failed"]),
            ),
            (
                51,
                Act::Tick,
                ok(Active, &[Grant], &[]).and(Check::Attempts(Grant, 3)),
            ),
            (
                52,
                Act::Failed(Grant, Retry::Retryable),
                ok(Active, &[], &["extension_failed"]).and(Check::ExpiresAt(3600)),
            ),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn the_old_expiry_wins_over_a_re_grant_in_flight_and_the_extension_lapses() {
    check(Case {
        steps: vec![
            active(),
            (
                3590,
                Act::Extend("rita", 1800, Rule::Auto),
                ok(
                    Active,
                    &[Grant],
                    &["extension_requested", "extension_approved"],
                )
                // The lease ends at 3650; the expiry in force comes first.
                .and(Check::NextDue(Some(3600))),
            ),
            (
                3600,
                Act::Tick,
                ok(Expired, &[], &["extension_lapsed", "expired"])
                    .and(Check::Extension(Some(ExtensionState::Lapsed)))
                    .and(Check::Attempts(Revoke, 0))
                    .and(Check::MayHoldAccess(true))
                    .and(Check::NextDue(Some(3650))),
            ),
            // The re-grant lands after all: removal runs at once.
            (
                3601,
                Act::Succeeded(Grant),
                ok(Expired, &[Revoke], &[]).and(Check::ExpiresAt(3600)),
            ),
            (
                3602,
                Act::Succeeded(Revoke),
                ok(Expired, &[], &["deprovisioned"]).and(Check::MayHoldAccess(false)),
            ),
        ],
        ..case(Rule::Auto)
    });
    // Waiting for approvers: it lapses at the expiry.
    check(Case {
        steps: vec![
            active(),
            (
                10,
                Act::Extend("rita", 1800, Rule::Approvals(1)),
                ok(Active, &[], &["extension_requested"]),
            ),
            (
                3600,
                Act::Tick,
                ok(Expired, &[Revoke], &["extension_lapsed", "expired"])
                    .and(Check::Extension(Some(ExtensionState::Lapsed))),
            ),
            (3601, Act::Approve("alice"), rejected(Rej::Conflict)),
        ],
        ..case(Rule::Auto)
    });
}

#[test]
fn revoke_and_release_during_a_re_grant_still_remove_access() {
    // In flight: the revoke waits for its result or its lease.
    check(Case {
        steps: vec![
            active(),
            extended_at_once(10),
            (
                20,
                Act::Revoke("root"),
                ok(Revoked, &[], &["extension_lapsed", "revoked"])
                    .and(Check::Attempts(Revoke, 0))
                    .and(Check::NextDue(Some(70))),
            ),
            (70, Act::Tick, ok(Revoked, &[Revoke], &[])),
            (
                71,
                Act::Succeeded(Revoke),
                ok(Revoked, &[], &["deprovisioned"]),
            ),
        ],
        ..case(Rule::Auto)
    });
    // Between attempts: removal at once.
    check(Case {
        steps: vec![
            active(),
            extended_at_once(10),
            (
                20,
                Act::Failed(Grant, Retry::Retryable),
                ok(Active, &[], &["grant_attempt_failed"]),
            ),
            (
                21,
                Act::Release("rita"),
                ok(Released, &[Revoke], &["extension_lapsed", "released"])
                    .and(Check::MayHoldAccess(true)),
            ),
            // A late result of the failed attempt changes nothing.
            (22, Act::StaleOld(Grant), ok(Released, &[], &[])),
        ],
        ..case(Rule::Auto)
    });
}
