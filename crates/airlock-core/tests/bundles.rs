//! Bundles: parts decided together (denial wins, the union of the tiers,
//! a different person for each seat), each part's input checked and
//! refused naming the part, and parts ended together (release, expiry, a
//! part that failed for good).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::approval::{ApprovalTier, ApproverVerdict, Route, Verdict};
use airlock_core::catalog::{BreakGlassRules, Entitlement, User};
use airlock_core::request::{
    apply_bundle, submit_bundle, AccessRequest, BundlePart, Command, JobAction, LifecycleSettings,
    NewRequest, Rejection, State, Transition,
};
use airlock_core::{GroupName, RequestId, Timestamp};

mod fixtures;

const T0_MS: i64 = 1_700_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + secs * 1000)
}

fn user(id: &str, groups: &[&str]) -> User {
    fixtures::person(id, groups)
}

fn entitlement(id: &str, max_hours: u64, default_mins: u64) -> Entitlement {
    Entitlement {
        max_duration: Duration::from_secs(max_hours * 3600),
        default_duration: Duration::from_secs(default_mins * 60),
        ..fixtures::entitlement(id, "c")
    }
}

fn tier(group: &str) -> ApprovalTier {
    ApprovalTier {
        count: 1,
        groups: BTreeSet::from([GroupName::parse(group).unwrap()]),
        policy: format!("route-{group}"),
    }
}

fn verdict(route: Route, policy: &str) -> Verdict {
    fixtures::verdict(route, &[policy])
}

fn needs(group: &str) -> Verdict {
    verdict(Route::NeedsApprovals(vec![tier(group)]), "needs")
}

fn auto() -> Verdict {
    verdict(Route::AutoApproved, "auto")
}

fn denied(why: &str) -> Verdict {
    verdict(
        Route::Denied {
            reasons: vec![why.to_owned()],
        },
        "no-db",
    )
}

fn ask(duration: Option<u64>) -> NewRequest {
    NewRequest {
        duration: duration.map(|m| Duration::from_secs(m * 60)),
        reason: "incident".to_owned(),
        ticket: Some("INC-1".to_owned()),
        ..fixtures::new_request("ignored")
    }
}

fn settings() -> LifecycleSettings {
    LifecycleSettings {
        grant_max_attempts: 3,
        ..LifecycleSettings::default()
    }
}

/// `rita` asks for `db` and `ssh` (and `deploy` when given) together.
fn submit(
    new: NewRequest,
    entitlements: &[&Entitlement],
    verdicts: Vec<Verdict>,
    open: Option<&RequestId>,
) -> Result<Vec<Transition>, Rejection> {
    let parts = entitlements
        .iter()
        .zip(verdicts)
        .enumerate()
        .map(|(i, (e, verdict))| BundlePart {
            id: RequestId::parse(&format!("part-{i}")).unwrap(),
            entitlement: e,
            open_request: if i == 1 { open } else { None },
            verdict,
        })
        .collect();
    submit_bundle(
        new,
        Some("incident-kit".to_owned()),
        parts,
        &user("rita", &["eng"]),
        &settings(),
        at(0),
    )
}

fn requests(ts: &[Transition]) -> Vec<AccessRequest> {
    ts.iter().map(|t| t.request.clone()).collect()
}

fn permitted() -> ApproverVerdict {
    ApproverVerdict {
        outcome: Ok(vec!["approvers".to_owned()]),
        policy_version: "v1".to_owned(),
    }
}

/// Applies `command` (as built for each part) to part `part` of `parts` at `secs`.
fn act(
    parts: &[AccessRequest],
    part: usize,
    secs: i64,
    command: &dyn Fn(&AccessRequest) -> Command,
) -> Result<Vec<Transition>, Rejection> {
    apply_bundle(
        parts.to_vec(),
        &parts[part].id,
        command,
        &settings(),
        at(secs),
    )
}

fn approve(
    who: &'static str,
    groups: &'static [&'static str],
) -> impl Fn(&AccessRequest) -> Command {
    move |_| Command::Approve {
        approver: user(who, groups),
        comment: None,
        permission: permitted(),
    }
}

fn states(ts: &[Transition]) -> Vec<State> {
    ts.iter().map(|t| t.request.state).collect()
}

#[test]
fn a_denial_of_one_part_denies_every_part_naming_it() {
    let (db, ssh) = (entitlement("db", 4, 60), entitlement("ssh", 4, 60));
    let ts = submit(
        ask(None),
        &[&db, &ssh],
        vec![auto(), denied("forbidden by `no-ssh`")],
        None,
    )
    .unwrap();
    assert_eq!(states(&ts), vec![State::Denied, State::Denied]);
    for t in &ts {
        let note = t.request.end_note.as_deref().unwrap();
        assert!(note.contains("`ssh`: forbidden by `no-ssh`"), "{note}");
        let requested = &t.events[0];
        assert_eq!(requested.details["bundle"], "part-0");
        assert_eq!(requested.details["bundle_parts"], "part-0,part-1");
        assert_eq!(requested.details["policies"], "no-db");
    }
    assert!(ts.iter().all(|t| t.effects.is_empty()));
}

#[test]
fn every_part_needs_the_union_of_the_tiers_each_seat_a_different_person() {
    let (db, ssh, deploy) = (
        entitlement("db", 4, 60),
        entitlement("ssh", 4, 60),
        entitlement("deploy", 4, 60),
    );
    let ts = submit(
        ask(None),
        &[&db, &ssh, &deploy],
        vec![needs("dba"), needs("security"), auto()],
        None,
    )
    .unwrap();
    assert_eq!(states(&ts), vec![State::Pending; 3]);
    for t in &ts {
        assert_eq!(
            t.request.approval_tiers,
            vec![tier("dba"), tier("security")]
        );
    }
    let parts = requests(&ts);
    // One person in both groups fills one seat only, on every part.
    let dave = approve("dave", &["dba", "security"]);
    let after = act(&parts, 1, 10, &dave).unwrap();
    assert_eq!(states(&after), vec![State::Pending; 3]);
    let parts = requests(&after);
    assert!(parts.iter().all(|p| p.approvals.len() == 1));
    let again = act(&parts, 2, 11, &dave).unwrap_err();
    assert!(
        matches!(again, Rejection::Conflict(ref m) if m.contains("already approved")),
        "{again}"
    );
    // A second person fills the other seat: every part is approved at once, alike.
    let sam = approve("sam", &["security"]);
    let approved = act(&parts, 0, 20, &sam).unwrap();
    assert_eq!(states(&approved), vec![State::Approved; 3]);
    let first = &approved[0].request;
    for t in &approved {
        assert_eq!(t.request.approvals, first.approvals);
        assert_eq!(t.request.expires_at, first.expires_at);
        assert_eq!(t.effects.len(), 1, "every part's grant starts");
    }
}

/// The policy set's answer for `who` deciding a part: permitted on the
/// entitlements `on` only.
fn permitted_on(on: &'static [&'static str]) -> impl Fn(&AccessRequest) -> ApproverVerdict {
    move |p| ApproverVerdict {
        outcome: if on.contains(&p.entitlement.as_str()) {
            Ok(vec!["approvers".to_owned()])
        } else {
            Err(format!("forbidden on `{}`", p.entitlement))
        },
        policy_version: "v1".to_owned(),
    }
}

#[test]
fn an_approver_decides_the_bundle_when_the_policies_let_them_decide_a_part() {
    let (db, ssh) = (entitlement("db", 4, 60), entitlement("ssh", 4, 60));
    let parts = requests(
        &submit(
            ask(None),
            &[&db, &ssh],
            vec![needs("dba"), needs("security")],
            None,
        )
        .unwrap(),
    );
    // Permitted on no part: refused, naming the part.
    let nowhere = permitted_on(&[]);
    let refused = act(&parts, 0, 5, &|p: &AccessRequest| Command::Approve {
        approver: user("alice", &["dba"]),
        comment: None,
        permission: nowhere(p),
    })
    .unwrap_err();
    let Rejection::Forbidden(message) = refused else {
        panic!("{refused:?}")
    };
    assert!(
        message.contains("part-0") && message.contains("(db)"),
        "{message}"
    );
    // Permitted on `db` only (its policies name the dba approvers): the
    // approval counts on both parts, for the tier the groups fit.
    let on_db = permitted_on(&["db"]);
    let once = act(&parts, 1, 6, &|p: &AccessRequest| Command::Approve {
        approver: user("alice", &["dba"]),
        comment: None,
        permission: on_db(p),
    })
    .unwrap();
    assert_eq!(states(&once), vec![State::Pending, State::Pending]);
    let parts = requests(&once);
    assert!(parts.iter().all(|p| p.approvals.len() == 1));
    // Someone whose groups fit no remaining tier fills no seat.
    let dba_again = act(&parts, 0, 7, &|p: &AccessRequest| Command::Approve {
        approver: user("bob", &["dba"]),
        comment: None,
        permission: on_db(p),
    })
    .unwrap_err();
    assert!(
        matches!(dba_again, Rejection::Conflict(ref m) if m.contains("already met")),
        "{dba_again:?}"
    );
    // A denial of one denies the bundle.
    let denied = act(&parts, 1, 8, &|_| Command::Deny {
        approver: user("sam", &["security"]),
        reason: "not now".to_owned(),
        permission: permitted(),
    })
    .unwrap();
    assert_eq!(states(&denied), vec![State::Denied, State::Denied]);
}

#[test]
fn each_parts_input_is_checked_and_refused_naming_the_part() {
    let (db, ssh) = (entitlement("db", 4, 90), entitlement("ssh", 1, 30));
    let too_long = submit(ask(Some(120)), &[&db, &ssh], vec![auto(), auto()], None).unwrap_err();
    let Rejection::Invalid { field, message } = too_long else {
        panic!("{too_long:?}")
    };
    assert_eq!(field, "duration");
    assert!(message.contains("`ssh`"), "{message}");
    // Without a duration every part lasts the shortest default, so they end together.
    let ts = submit(ask(None), &[&db, &ssh], vec![auto(), auto()], None).unwrap();
    assert!(ts
        .iter()
        .all(|t| t.request.duration == Duration::from_secs(1800)));
    assert_eq!(ts[0].request.expires_at, ts[1].request.expires_at);
    // Break-glass only where every part allows it.
    let mut emergency = ask(Some(30));
    emergency.break_glass = true;
    let mut db_bg = db.clone();
    db_bg.break_glass = Some(BreakGlassRules {
        max_duration: Duration::from_secs(3600),
        review_by: BTreeSet::from([GroupName::parse("security").unwrap()]),
        review_within: Duration::from_secs(3600),
        escalate_to: BTreeSet::new(),
    });
    let refused = submit(emergency, &[&db_bg, &ssh], vec![auto(), auto()], None).unwrap_err();
    assert!(
        matches!(&refused, Rejection::Invalid { field: "break_glass", message } if message.contains("`ssh`")),
        "{refused:?}"
    );
    // One open request for a part's entitlement refuses the whole bundle.
    let open = RequestId::parse("older").unwrap();
    let conflict = submit(ask(None), &[&db, &ssh], vec![auto(), auto()], Some(&open)).unwrap_err();
    assert!(
        matches!(&conflict, Rejection::Conflict(m) if m.contains("`older`") && m.contains("`ssh`")),
        "{conflict:?}"
    );
    // The same entitlement twice, or one alone, is no bundle.
    let twice = submit(ask(None), &[&db, &db], vec![auto(), auto()], None).unwrap_err();
    assert!(matches!(
        twice,
        Rejection::Invalid {
            field: "entitlements",
            ..
        }
    ));
    let alone = submit(ask(None), &[&db], vec![auto()], None).unwrap_err();
    assert!(matches!(
        alone,
        Rejection::Invalid {
            field: "entitlements",
            ..
        }
    ));
}

/// Both parts granted at once and their grants in flight.
fn granting() -> Vec<AccessRequest> {
    let (db, ssh) = (entitlement("db", 4, 60), entitlement("ssh", 4, 60));
    let ts = submit(ask(None), &[&db, &ssh], vec![auto(), auto()], None).unwrap();
    assert_eq!(states(&ts), vec![State::Approved; 2]);
    requests(&ts)
}

fn result(parts: &[AccessRequest], part: usize, secs: i64, ok: bool) -> Vec<AccessRequest> {
    let token = parts[part].claim_token;
    let ts = act(parts, part, secs, &move |_| {
        if ok {
            Command::JobSucceeded {
                action: JobAction::Grant,
                token,
                certificate: None,
            }
        } else {
            Command::JobFailed {
                action: JobAction::Grant,
                token,
                error: "no such program".to_owned(),
                retryable: false,
            }
        }
    })
    .unwrap();
    requests(&ts)
}

#[test]
fn a_part_that_fails_for_good_revokes_the_parts_granted_and_cancels_the_rest() {
    let parts = granting();
    let parts = result(&parts, 0, 1, true);
    assert_eq!(parts[0].state, State::Active);
    assert_eq!(parts[1].state, State::Approved);
    let token = parts[1].claim_token;
    let ts = act(&parts, 1, 2, &move |_| Command::JobFailed {
        action: JobAction::Grant,
        token,
        error: "no such program".to_owned(),
        retryable: false,
    })
    .unwrap();
    assert_eq!(states(&ts), vec![State::Revoked, State::Failed]);
    let note = ts[0].request.end_note.as_deref().unwrap();
    assert!(
        note.contains("`ssh`") && note.contains("no such program"),
        "{note}"
    );
    assert_eq!(ts[0].effects.len(), 1, "the granted part's revoke starts");
    assert_eq!(ts[0].effects[0].action, JobAction::Revoke);
    // A retryable failure keeps retrying as it does for one request.
    let parts = granting();
    let token = parts[0].claim_token;
    let ts = act(&parts, 0, 1, &move |_| Command::JobFailed {
        action: JobAction::Grant,
        token,
        error: "busy".to_owned(),
        retryable: true,
    })
    .unwrap();
    assert_eq!(states(&ts), vec![State::Approved; 2]);
}

#[test]
fn a_release_of_one_part_ends_every_part_and_they_expire_together() {
    let parts = granting();
    let parts = result(&parts, 0, 1, true);
    let parts = result(&parts, 1, 1, true);
    assert_eq!(
        parts.iter().map(|p| p.state).collect::<Vec<_>>(),
        vec![State::Active; 2]
    );
    let released = act(&parts, 1, 60, &|_| Command::Release {
        by: user("rita", &["eng"]),
    })
    .unwrap();
    assert_eq!(states(&released), vec![State::Released; 2]);
    assert!(released.iter().all(|t| t.effects.len() == 1));
    // Someone else may not release them.
    let refused = act(&parts, 0, 60, &|_| Command::Release {
        by: user("mallory", &["eng"]),
    })
    .unwrap_err();
    assert!(matches!(refused, Rejection::Forbidden(_)), "{refused:?}");
    // The scheduler's tick of one part expires both.
    let expired = act(&parts, 0, 3600, &|_| Command::Tick).unwrap();
    assert_eq!(states(&expired), vec![State::Expired; 2]);
    // A request that is no bundle's part is applied alone.
    let lone = AccessRequest {
        bundle: None,
        ..parts[0].clone()
    };
    let alone = apply_bundle(
        vec![lone.clone()],
        &lone.id,
        &|_| Command::Tick,
        &settings(),
        at(3600),
    )
    .unwrap();
    assert_eq!(states(&alone), vec![State::Expired]);
}
