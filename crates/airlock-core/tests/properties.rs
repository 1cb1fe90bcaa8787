//! Random command sequences against a small reference model of who may do
//! what and of what the target system holds, checking the lifecycle's
//! invariants after every step and once all outstanding work has drained.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::approval::{ApprovalTier, ApproverVerdict, Route, Verdict};
use airlock_core::catalog::{Entitlement, Role, TicketRule, User};
use airlock_core::drift::DriftPolicy;
use airlock_core::request::{
    apply, submit, AccessRequest, Command, JobAction, LifecycleSettings, NewRequest, Rejection,
    State, Transition,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};
use proptest::prelude::*;

// ---------------------------------------------------------------- world

const T0_MS: i64 = 1_700_000_000_000;
const MAX_DURATION_SECS: u64 = 2 * 3600;

/// (id, groups, admin). The requester is `rita` or `ross` (an admin); both are
/// in the approver group `sre`, so self-approval is always on the table.
const USERS: [(&str, &[&str], bool); 7] = [
    ("rita", &["eng", "sre"], false),
    ("ross", &["eng", "sre"], true),
    ("alice", &["sre"], false),
    ("bob", &["sre"], false),
    ("carol", &["sre"], true),
    ("mallory", &["eng"], false),
    ("root", &[], true),
];

struct World {
    users: Vec<User>,
    entitlement: Entitlement,
    route: Route,
    settings: LifecycleSettings,
}

fn group(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

fn world(required: u32) -> World {
    let users = USERS
        .iter()
        .map(|(id, groups, admin)| User {
            id: UserId::parse(id).unwrap(),
            groups: groups.iter().map(|g| group(g)).collect(),
            roles: if *admin {
                BTreeSet::from([Role::Admin])
            } else {
                BTreeSet::new()
            },
            kind: Default::default(),
            token: None,
            external: None,
        })
        .collect();
    let route = if required == 0 {
        Route::AutoApproved
    } else {
        Route::NeedsApprovals(vec![ApprovalTier {
            count: required,
            groups: BTreeSet::from([group("sre")]),
            policy: "sre-approves".to_owned(),
        }])
    };
    World {
        route,
        users,
        entitlement: Entitlement {
            id: EntitlementId::parse("prod-db").unwrap(),
            description: "production database".to_owned(),
            max_duration: Duration::from_secs(MAX_DURATION_SECS),
            default_duration: Duration::from_secs(3600),
            reason_required: true,
            ticket: TicketRule {
                required: false,
                pattern: None,
            },
            connector: "postgres".to_owned(),
            drift: DriftPolicy::Report,
            sensitivity: airlock_core::standing::Sensitivity::default(),
            waiting: Default::default(),
            break_glass: None,
            open_to_externals: false,
        },
        settings: LifecycleSettings {
            pending_timeout: Duration::from_secs(1800),
            claim_lease: Duration::from_secs(60),
            grant_max_attempts: 3,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(60),
            max_start_delay: Duration::from_secs(24 * 3600),
            start_skew: Duration::from_secs(60),
        },
    }
}

// ---------------------------------------------------------------- generated input

#[derive(Debug, Clone)]
enum Op {
    Approve(usize),
    Deny(usize),
    Cancel(usize),
    Release(usize),
    Revoke(usize),
    Tick,
    /// The server restarted: every attempt in flight is lost (it ran or not).
    Restarted,
    /// The result of an effect in flight (a `Tick` when none is).
    Report {
        pick: usize,
        success: bool,
        retryable: bool,
        /// A failed grant that nevertheless left access on the target.
        partial: bool,
    },
    /// A late or duplicate delivery of a result already reported or lost.
    Late {
        pick: usize,
        retryable: bool,
    },
    /// A result carrying a token that was never issued.
    Bogus {
        grant: bool,
        success: bool,
        ahead: u64,
    },
}

#[derive(Debug, Clone)]
struct Step {
    advance_ms: u64,
    /// Whether effects whose lease lapses during `advance_ms` ran on the target.
    lost_ran: bool,
    op: Op,
}

#[derive(Debug, Clone)]
struct Scenario {
    required: u32,
    requester: usize,
    start_in_secs: Option<i64>,
    duration_secs: u64,
    steps: Vec<Step>,
}

fn user_idx() -> impl Strategy<Value = usize> {
    0..USERS.len()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => user_idx().prop_map(Op::Approve),
        1 => user_idx().prop_map(Op::Deny),
        1 => user_idx().prop_map(Op::Cancel),
        1 => user_idx().prop_map(Op::Release),
        1 => user_idx().prop_map(Op::Revoke),
        3 => Just(Op::Tick),
        1 => Just(Op::Restarted),
        5 => (any::<usize>(), prop::bool::weighted(0.6), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(pick, success, retryable, partial)| Op::Report { pick, success, retryable, partial }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, retryable)| Op::Late { pick, retryable }),
        1 => (any::<bool>(), any::<bool>(), 0..3u64)
            .prop_map(|(grant, success, ahead)| Op::Bogus { grant, success, ahead }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let advance = prop_oneof![
        3 => Just(0u64),
        3 => 0..5_000u64,
        3 => 0..90_000u64,
        1 => 0..4_000_000u64,
    ];
    (advance, any::<bool>(), op()).prop_map(|(advance_ms, lost_ran, op)| Step {
        advance_ms,
        lost_ran,
        op,
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0..=3u32,
        0..2usize,
        prop::option::of(-30..1200i64),
        prop_oneof![1..=MAX_DURATION_SECS, 1..=MAX_DURATION_SECS + 600],
        prop::collection::vec(step(), 0..48),
    )
        .prop_map(
            |(required, requester, start_in_secs, duration_secs, steps)| Scenario {
                required,
                requester,
                start_in_secs,
                duration_secs,
                steps,
            },
        )
}

// ---------------------------------------------------------------- reference model

#[derive(Debug, Clone)]
struct InFlight {
    action: JobAction,
    token: u64,
    until: Timestamp,
}

#[derive(Debug, Clone)]
struct Report {
    action: JobAction,
    token: u64,
    success: bool,
}

/// What the model expects of a user command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok(State),
    Forbidden,
    Conflict,
}

#[derive(Debug)]
struct Model {
    now: Timestamp,
    requester: UserId,
    eligible: BTreeSet<UserId>,
    admins: BTreeSet<UserId>,
    required: u32,
    state: State,
    approvals: Vec<UserId>,
    pending_deadline: Timestamp,
    expires_at: Option<Timestamp>,
    /// Effects handed to the shell whose result has not come back and whose
    /// lease has not lapsed.
    in_flight: Vec<InFlight>,
    /// Results that may be delivered again, late.
    reports: Vec<Report>,
    /// Highest token ever handed out.
    max_token: u64,
    grant_attempts: u32,
    /// Whether the target system holds the grant right now.
    target_holds: bool,
}

impl Model {
    /// The target runs an attempt (or part of it).
    fn land(&mut self, action: JobAction) {
        self.target_holds = action == JobAction::Grant;
    }

    fn grant_in_flight(&self) -> bool {
        self.in_flight
            .iter()
            .any(|f| f.action == JobAction::Grant && f.until > self.now)
    }

    /// The state once deadlines that passed by `now` have taken effect.
    fn state_after_deadlines(&self) -> State {
        let expired = self.expires_at.is_some_and(|e| self.now >= e);
        match self.state {
            State::Pending if self.now >= self.pending_deadline => State::TimedOut,
            State::Active if expired => State::Expired,
            State::Approved if expired && !self.grant_in_flight() => State::Failed,
            s => s,
        }
    }

    fn expect_user_command(&self, op: &Op, who: &UserId) -> Expect {
        let state = self.state_after_deadlines();
        let is_requester = *who == self.requester;
        // The requester never decides; a request that is not pending has
        // nothing to decide, whoever asks; then eligibility.
        let decide = |then: State| {
            if is_requester {
                Expect::Forbidden
            } else if state != State::Pending {
                Expect::Conflict
            } else if !self.eligible.contains(who) {
                Expect::Forbidden
            } else {
                Expect::Ok(then)
            }
        };
        let live = matches!(state, State::Approved | State::Active);
        match op {
            Op::Approve(_) => match decide(State::Pending) {
                Expect::Ok(_) if self.approvals.contains(who) => Expect::Conflict,
                Expect::Ok(_) if self.approvals.len() + 1 >= self.required.max(1) as usize => {
                    Expect::Ok(State::Approved)
                }
                other => other,
            },
            Op::Deny(_) => decide(State::Denied),
            Op::Cancel(_) if !is_requester => Expect::Forbidden,
            Op::Cancel(_) => {
                let not_started = state == State::Pending
                    || (state == State::Approved && self.grant_attempts == 0);
                if not_started {
                    Expect::Ok(State::Cancelled)
                } else {
                    Expect::Conflict
                }
            }
            Op::Release(_) if !is_requester => Expect::Forbidden,
            Op::Release(_) if live => Expect::Ok(State::Released),
            Op::Revoke(_) if !self.admins.contains(who) => Expect::Forbidden,
            Op::Revoke(_) if live => Expect::Ok(State::Revoked),
            _ => Expect::Conflict,
        }
    }
}

fn audit_action(state: State) -> Option<&'static str> {
    match state {
        State::Pending => None,
        State::Approved => Some("approved"),
        State::Active => Some("granted"),
        State::Expired => Some("expired"),
        State::Released => Some("released"),
        State::Revoked => Some("revoked"),
        State::Denied => Some("denied"),
        State::Cancelled => Some("cancelled"),
        State::TimedOut => Some("timed_out"),
        State::Failed => Some("failed"),
    }
}

// ---------------------------------------------------------------- running

fn run_scenario(sc: &Scenario) {
    let w = world(sc.required);
    let requester = &w.users[sc.requester];
    let now = Timestamp::from_unix_millis(T0_MS);
    let new = NewRequest {
        id: RequestId::parse("req-1").unwrap(),
        duration: Some(Duration::from_secs(sc.duration_secs)),
        reason: "on call".to_owned(),
        ticket: None,
        start_at: sc
            .start_in_secs
            .map(|s| Timestamp::from_unix_millis(T0_MS + s * 1000)),
        break_glass: false,
        public_key: None,
    };
    let verdict = Verdict {
        route: w.route.clone(),
        policy_version: "v1".to_owned(),
        policies: vec!["p".to_owned()],
        errors: Vec::new(),
        waiting: Default::default(),
    };
    let t = match submit(
        new,
        requester,
        &w.entitlement,
        None,
        verdict,
        &w.settings,
        now,
    ) {
        Ok(t) => t,
        Err(Rejection::Invalid {
            field: "duration", ..
        }) if sc.duration_secs > MAX_DURATION_SECS => return,
        Err(e) => panic!("valid submit rejected: {e:?}"),
    };
    assert!(
        sc.duration_secs <= MAX_DURATION_SECS,
        "over-long duration accepted"
    );

    let mut m = Model {
        now,
        requester: requester.id.clone(),
        eligible: w
            .users
            .iter()
            .filter(|u| sc.required > 0 && u.groups.contains(&group("sre")))
            .map(|u| u.id.clone())
            .collect(),
        admins: w
            .users
            .iter()
            .filter(|u| u.has_role(Role::Admin))
            .map(|u| u.id.clone())
            .collect(),
        required: sc.required,
        state: State::Pending,
        approvals: Vec::new(),
        pending_deadline: now.plus(w.settings.pending_timeout),
        expires_at: None,
        in_flight: Vec::new(),
        reports: Vec::new(),
        max_token: 0,
        grant_attempts: 0,
        target_holds: false,
    };
    let expected = if sc.required == 0 {
        State::Approved
    } else {
        State::Pending
    };
    assert_eq!(t.request.state, expected, "state after submit");
    let mut req = accept(&w, &mut m, None, t, "submit");

    for (i, s) in sc.steps.iter().enumerate() {
        req = run_step(&w, &mut m, req, s, &format!("step {i} {s:?}"));
    }

    // Drain: report every effect as successful and tick whenever something
    // is due, until nothing is left to do. Everything must end, and the
    // target must hold nothing.
    for i in 0..64 {
        let s = if !m.in_flight.is_empty() {
            Step {
                advance_ms: 0,
                lost_ran: true,
                op: Op::Report {
                    pick: 0,
                    success: true,
                    retryable: true,
                    partial: false,
                },
            }
        } else if let Some(due) = req.next_due() {
            Step {
                advance_ms: u64::try_from(due.unix_millis() - m.now.unix_millis()).unwrap_or(0),
                lost_ran: true,
                op: Op::Tick,
            }
        } else {
            break;
        };
        req = run_step(&w, &mut m, req, &s, &format!("drain {i} {s:?}"));
    }
    assert!(req.state.is_terminal(), "did not finish: {req:?}");
    assert_eq!(req.job, None, "work left after draining: {req:?}");
    assert!(
        m.in_flight.is_empty(),
        "effects left in flight: {:?}",
        m.in_flight
    );
    assert!(
        !m.target_holds,
        "the target still holds access after {:?}",
        req.state
    );
    assert!(!req.may_hold_access(), "may_hold_access after draining");
}

fn run_step(w: &World, m: &mut Model, req: AccessRequest, s: &Step, what: &str) -> AccessRequest {
    m.now = m.now.plus(Duration::from_millis(s.advance_ms));
    let now = m.now;

    // Attempts whose lease lapsed are presumed lost: they either ran or not,
    // and a late report of how they went may still turn up.
    let restarted = matches!(s.op, Op::Restarted);
    let (lapsed, live): (Vec<_>, Vec<_>) = m
        .in_flight
        .drain(..)
        .partition(|f| restarted || f.until <= now);
    m.in_flight = live;
    for f in lapsed {
        if s.lost_ran {
            m.land(f.action);
        }
        m.reports.push(Report {
            action: f.action,
            token: f.token,
            success: s.lost_ran,
        });
    }

    let user = |i: usize| &w.users[i % w.users.len()];
    let mut expect = None;
    let command = match s.op {
        Op::Approve(i) | Op::Deny(i) | Op::Cancel(i) | Op::Release(i) | Op::Revoke(i) => {
            let by = user(i).clone();
            expect = Some(m.expect_user_command(&s.op, &by.id));
            match s.op {
                Op::Approve(_) => Command::Approve {
                    approver: by,
                    comment: None,
                    permission: permitted(),
                },
                Op::Deny(_) => Command::Deny {
                    approver: by,
                    reason: "no".to_owned(),
                    permission: permitted(),
                },
                Op::Cancel(_) => Command::Cancel { by },
                Op::Release(_) => Command::Release { by },
                _ => Command::Revoke {
                    by,
                    reason: "incident".to_owned(),
                },
            }
        }
        Op::Tick => Command::Tick,
        Op::Restarted => Command::Restarted,
        Op::Report {
            pick,
            success,
            retryable,
            partial,
        } => {
            if m.in_flight.is_empty() {
                Command::Tick
            } else {
                let f = m.in_flight.remove(pick % m.in_flight.len());
                if success || (partial && f.action == JobAction::Grant) {
                    m.land(f.action);
                }
                m.reports.push(Report {
                    action: f.action,
                    token: f.token,
                    success,
                });
                result(f.action, f.token, success, retryable)
            }
        }
        Op::Late { pick, retryable } => match m.reports.get(pick % m.reports.len().max(1)) {
            Some(r) => result(r.action, r.token, r.success, retryable),
            None => Command::Tick,
        },
        Op::Bogus {
            grant,
            success,
            ahead,
        } => {
            let action = if grant {
                JobAction::Grant
            } else {
                JobAction::Revoke
            };
            result(action, m.max_token + 1 + ahead, success, false)
        }
    };

    let before = req.clone();
    let outcome = apply(req, command.clone(), &w.settings, now);
    // Deterministic: the same command on the same request decides the same.
    assert_eq!(
        apply(before.clone(), command.clone(), &w.settings, now),
        outcome,
        "{what}: apply is not deterministic"
    );

    if let Op::Bogus { grant, .. } = s.op {
        // A never-issued token is no news: the step must equal a plain tick,
        // except that a grant result for an ended request may re-arm cleanup.
        let tick = apply(before.clone(), Command::Tick, &w.settings, now).unwrap();
        if !(grant && tick.request.state.is_terminal()) {
            assert_eq!(
                outcome.as_ref().ok(),
                Some(&tick),
                "{what}: bogus token had an effect"
            );
        }
    }

    match (expect, outcome) {
        (Some(Expect::Forbidden), Err(Rejection::Forbidden(_)))
        | (Some(Expect::Conflict), Err(Rejection::Conflict(_))) => before,
        (_, Err(e)) => panic!("{what}: expected {expect:?}, got {e:?} for {before:?}"),
        (Some(Expect::Ok(state)), Ok(t)) => {
            assert_eq!(t.request.state, state, "{what}: model and core disagree");
            if let Op::Approve(i) = s.op {
                m.approvals.push(user(i).id.clone());
            }
            accept(w, m, Some(&before), t, what)
        }
        (Some(e), Ok(t)) => panic!("{what}: expected {e:?}, got {:?}", t.request.state),
        (None, Ok(t)) => {
            if let Op::Tick = s.op {
                let deadline = m.state_after_deadlines();
                let got = t.request.state;
                assert!(
                    got == deadline || (deadline == State::Approved && got == State::Failed),
                    "{what}: tick moved {:?} to {got:?}, deadlines say {deadline:?}",
                    m.state
                );
            }
            accept(w, m, Some(&before), t, what)
        }
    }
}

/// The policy set permits every approver here; the lifecycle's own checks
/// (never the requester, groups, state) are what the model predicts.
fn permitted() -> ApproverVerdict {
    ApproverVerdict {
        outcome: Ok(vec!["p".to_owned()]),
        policy_version: "v1".to_owned(),
    }
}

fn result(action: JobAction, token: u64, success: bool, retryable: bool) -> Command {
    if success {
        Command::JobSucceeded {
            action,
            token,
            certificate: None,
        }
    } else {
        Command::JobFailed {
            action,
            token,
            error: "boom".to_owned(),
            retryable,
        }
    }
}

/// Checks a successful transition from `prev` (`None`: a submit) and folds
/// it into the model.
fn accept(
    w: &World,
    m: &mut Model,
    prev: Option<&AccessRequest>,
    t: Transition,
    what: &str,
) -> AccessRequest {
    let r = &t.request;
    let now = m.now;
    let submitted = prev.is_none();
    let prev = prev.unwrap_or(r);

    // Approvals: never the requester, distinct, eligible, append-only.
    assert!(
        !r.approvals.iter().any(|a| a.approver == r.requester),
        "{what}: self-approval"
    );
    let distinct: BTreeSet<_> = r.approvals.iter().map(|a| &a.approver).collect();
    assert_eq!(
        distinct.len(),
        r.approvals.len(),
        "{what}: duplicate approver"
    );
    assert!(
        r.approvals.iter().all(|a| m.eligible.contains(&a.approver)),
        "{what}: ineligible approver"
    );
    assert!(
        r.approvals.starts_with(&prev.approvals),
        "{what}: approvals rewritten"
    );
    let approvals: Vec<&UserId> = r.approvals.iter().map(|a| &a.approver).collect();
    assert_eq!(
        approvals,
        m.approvals.iter().collect::<Vec<_>>(),
        "{what}: approvals differ from the model"
    );

    // One terminal state, for good.
    assert_eq!(
        r.ended_at.is_some(),
        r.state.is_terminal(),
        "{what}: ended_at iff terminal"
    );
    if prev.state.is_terminal() {
        assert_eq!(r.state, prev.state, "{what}: left a terminal state");
        assert_eq!(r.ended_at, prev.ended_at, "{what}: ended_at moved");
        assert_eq!(r.ended_by, prev.ended_by, "{what}: ended_by moved");
        assert_eq!(
            r.approvals, prev.approvals,
            "{what}: approvals after the end"
        );
    }
    let legal = match prev.state {
        State::Pending => r.state != State::Active,
        State::Approved => !matches!(r.state, State::Pending | State::Denied | State::TimedOut),
        State::Active => matches!(
            r.state,
            State::Active | State::Expired | State::Released | State::Revoked
        ),
        s => r.state == s,
    };
    assert!(
        legal || submitted,
        "{what}: illegal move {:?} -> {:?}",
        prev.state,
        r.state
    );
    if r.state == State::Active {
        assert!(r.granted_at.is_some(), "{what}: active without granted_at");
    }

    // The grant window.
    assert!(
        r.duration <= w.entitlement.max_duration,
        "{what}: duration above the maximum"
    );
    assert_eq!(
        r.activates_at.is_some(),
        r.expires_at.is_some(),
        "{what}: half a window"
    );
    if let (Some(a), Some(e)) = (r.activates_at, r.expires_at) {
        assert_eq!(
            a.until(e),
            r.duration,
            "{what}: expires_at - activates_at != duration"
        );
        if prev.activates_at.is_some() {
            assert_eq!(
                (prev.activates_at, prev.expires_at),
                (r.activates_at, r.expires_at),
                "{what}: window moved"
            );
        }
    }

    // Effects: fresh tokens, one at a time, never a grant for an ended request.
    assert!(
        t.effects.len() <= 1,
        "{what}: several effects at once: {:?}",
        t.effects
    );
    for e in &t.effects {
        assert_eq!(
            e.token, r.claim_token,
            "{what}: effect token is not the current one"
        );
        assert!(e.token > m.max_token, "{what}: token {} reused", e.token);
        let live: Vec<_> = m.in_flight.iter().filter(|f| f.until > now).collect();
        assert!(
            live.is_empty(),
            "{what}: {:?} sent while {live:?} may still be running",
            e.action
        );
        match e.action {
            JobAction::Grant => {
                assert!(
                    !prev.state.is_terminal() && r.state == State::Approved,
                    "{what}: grant for a {:?} request",
                    r.state
                );
                m.grant_attempts += 1;
                assert!(
                    m.grant_attempts <= w.settings.grant_max_attempts,
                    "{what}: too many grant attempts"
                );
            }
            JobAction::Revoke => assert!(
                r.state.is_terminal(),
                "{what}: revoke for a {:?} request",
                r.state
            ),
        }
        m.max_token = e.token;
        m.in_flight.push(InFlight {
            action: e.action,
            token: e.token,
            until: now.plus(w.settings.claim_lease),
        });
    }
    assert!(
        r.claim_token >= prev.claim_token,
        "{what}: claim token went back"
    );

    // Audit: every state change and every confirmed removal is recorded.
    let actions: Vec<&str> = t.events.iter().map(|e| e.action.as_str()).collect();
    if r.state != prev.state || submitted {
        if let Some(a) = audit_action(r.state) {
            assert!(
                actions.contains(&a),
                "{what}: {:?} without `{a}` in {actions:?}",
                r.state
            );
        }
    }
    let deprovisioned = r.deprovisioned_at.is_some() && r.deprovisioned_at != prev.deprovisioned_at;
    assert_eq!(
        deprovisioned,
        actions.contains(&"deprovisioned"),
        "{what}: deprovisioned event"
    );
    for e in &t.events {
        assert_eq!(e.at, now, "{what}: event time");
        assert_eq!(e.request.as_ref(), Some(&r.id), "{what}: event request");
        assert_eq!(
            e.subject.as_ref(),
            Some(&r.requester),
            "{what}: event subject"
        );
    }

    // Nothing left to do for an ended request means nothing left on the target.
    if r.state.is_terminal() && r.job.is_none() && m.in_flight.is_empty() {
        assert!(
            !m.target_holds,
            "{what}: {:?} with no work left, but the target holds access",
            r.state
        );
    }

    m.state = r.state;
    m.expires_at = r.expires_at;
    t.request
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn lifecycle_invariants_hold_for_any_command_sequence(sc in scenario()) {
        run_scenario(&sc);
    }
}

// ---------------------------------------------------------------- extensions

/// Something that happens to an active grant being extended.
#[derive(Debug, Clone)]
enum ExtOp {
    /// The requester asks for this many seconds more; granted at once,
    /// needing one `sre` approval, or denied by policy.
    Extend(u64, u8),
    /// An approver (not the requester) approves or denies.
    Approve,
    Deny,
    /// The connector call in flight reports.
    Report {
        success: bool,
        retryable: bool,
    },
    /// Time passes and the scheduler looks.
    Tick(u64),
    Release,
    Revoke,
    Restarted,
}

fn ext_op() -> impl Strategy<Value = ExtOp> {
    prop_oneof![
        4 => (0u64..3 * 3600, 0u8..3).prop_map(|(s, r)| ExtOp::Extend(s, r)),
        2 => Just(ExtOp::Approve),
        1 => Just(ExtOp::Deny),
        4 => (any::<bool>(), any::<bool>())
            .prop_map(|(success, retryable)| ExtOp::Report { success, retryable }),
        3 => (1u64..2400).prop_map(ExtOp::Tick),
        1 => Just(ExtOp::Release),
        1 => Just(ExtOp::Revoke),
        1 => Just(ExtOp::Restarted),
    ]
}

/// An auto-approved grant of `secs`, provisioned at once: `(request, now)`.
fn active_grant(w: &World, secs: u64) -> (AccessRequest, i64) {
    let new = NewRequest {
        id: RequestId::parse("req-1").unwrap(),
        duration: Some(Duration::from_secs(secs)),
        reason: "on call".to_owned(),
        ticket: None,
        start_at: None,
        break_glass: false,
        public_key: None,
    };
    let rita = &w.users[0];
    let verdict = |route| Verdict {
        route,
        policy_version: "v1".to_owned(),
        policies: vec!["p".to_owned()],
        errors: Vec::new(),
        waiting: Default::default(),
    };
    let t = submit(
        new,
        rita,
        &w.entitlement,
        None,
        verdict(Route::AutoApproved),
        &w.settings,
        Timestamp::from_unix_millis(T0_MS),
    )
    .unwrap();
    let token = t.request.claim_token;
    let t = apply(
        t.request,
        Command::JobSucceeded {
            action: JobAction::Grant,
            token,
            certificate: None,
        },
        &w.settings,
        Timestamp::from_unix_millis(T0_MS + 1000),
    )
    .unwrap();
    assert_eq!(t.request.state, State::Active);
    (t.request, 1)
}

/// Any sequence of extensions, approvals, connector results, time, releases
/// and revocations on an active grant: the total never exceeds the
/// entitlement's maximum; the expiry moves only when the target confirmed
/// an extension, and by exactly that extension; an active grant is never
/// past its expiry; an extension outstanding when the grant ends lapses
/// with it; and once the remaining work drains, an ended grant was removed.
fn run_extensions(grant_secs: u64, ops: &[ExtOp]) {
    let w = world(0);
    let max = w.entitlement.max_duration;
    let (mut r, mut now) = active_grant(&w, grant_secs);
    let (rita, alice) = (&w.users[0], &w.users[2]);
    let sre_route = || {
        Route::NeedsApprovals(vec![ApprovalTier {
            count: 1,
            groups: BTreeSet::from([group("sre")]),
            policy: "sre-extends".to_owned(),
        }])
    };
    let permitted = ApproverVerdict {
        outcome: Ok(vec!["p".to_owned()]),
        policy_version: "v1".to_owned(),
    };
    for op in ops {
        if let ExtOp::Tick(secs) = op {
            now += i64::try_from(*secs).unwrap();
        }
        let command = match op {
            ExtOp::Extend(secs, rule) => Command::Extend {
                by: rita.clone(),
                extension: Duration::from_secs(*secs),
                reason: "longer".to_owned(),
                verdict: Verdict {
                    route: match rule {
                        0 => Route::AutoApproved,
                        1 => sre_route(),
                        _ => Route::Denied {
                            reasons: vec!["no".to_owned()],
                        },
                    },
                    policy_version: "v1".to_owned(),
                    policies: vec!["p".to_owned()],
                    errors: Vec::new(),
                    waiting: Default::default(),
                },
                max_duration: max,
            },
            ExtOp::Approve => Command::Approve {
                approver: alice.clone(),
                comment: None,
                permission: permitted.clone(),
            },
            ExtOp::Deny => Command::Deny {
                approver: alice.clone(),
                reason: "no".to_owned(),
                permission: permitted.clone(),
            },
            ExtOp::Report { success, retryable } => {
                let Some(job) = r.job.as_ref().filter(|j| j.claimed_until.is_some()) else {
                    continue;
                };
                if *success {
                    Command::JobSucceeded {
                        action: job.action,
                        token: r.claim_token,
                        certificate: None,
                    }
                } else {
                    Command::JobFailed {
                        action: job.action,
                        token: r.claim_token,
                        error: "no".to_owned(),
                        retryable: *retryable,
                    }
                }
            }
            ExtOp::Tick(_) => Command::Tick,
            ExtOp::Release => Command::Release { by: rita.clone() },
            ExtOp::Revoke => Command::Revoke {
                by: w.users[6].clone(),
                reason: "done".to_owned(),
            },
            ExtOp::Restarted => Command::Restarted,
        };
        let at = Timestamp::from_unix_millis(T0_MS + now * 1000);
        let Ok(t) = apply(r.clone(), command, &w.settings, at) else {
            continue;
        };
        let extended = t.events.iter().any(|e| e.action.as_str() == "extended");
        let next = &t.request;
        assert!(
            next.duration <= max,
            "{op:?}: {:?} past {max:?}",
            next.duration
        );
        if extended {
            let by = next.extension.as_ref().unwrap().by;
            assert_eq!(next.expires_at, r.expires_at.map(|e| e.plus(by)), "{op:?}");
            assert_eq!(next.duration, r.duration + by, "{op:?}");
        } else {
            assert_eq!(next.expires_at, r.expires_at, "{op:?}: moved unconfirmed");
            assert_eq!(next.duration, r.duration, "{op:?}");
        }
        if next.state == State::Active {
            assert!(
                next.expires_at.is_some_and(|e| e > at),
                "{op:?}: active past expiry"
            );
        }
        if next.state.is_terminal() {
            assert!(
                !next
                    .extension
                    .as_ref()
                    .is_some_and(|e| e.state.is_outstanding()),
                "{op:?}: an extension outlived its grant"
            );
        }
        r = t.request;
    }
    // Drain: every connector call succeeds, time runs past everything.
    for _ in 0..20 {
        now += 4 * 3600;
        let at = Timestamp::from_unix_millis(T0_MS + now * 1000);
        r = apply(r, Command::Tick, &w.settings, at).unwrap().request;
        if let Some(job) = r.job.clone().filter(|j| j.claimed_until.is_some()) {
            let done = Command::JobSucceeded {
                action: job.action,
                token: r.claim_token,
                certificate: None,
            };
            r = apply(r, done, &w.settings, at).unwrap().request;
        }
    }
    assert!(r.state.is_terminal(), "{:?}", r.state);
    assert_eq!(r.job, None, "work left after draining");
    assert!(
        r.deprovisioned_at.is_some(),
        "an ended grant was never removed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn extensions_never_exceed_the_maximum_and_move_the_expiry_only_when_confirmed(
        grant_secs in 60u64..MAX_DURATION_SECS,
        ops in proptest::collection::vec(ext_op(), 0..40),
    ) {
        run_extensions(grant_secs, &ops);
    }
}
