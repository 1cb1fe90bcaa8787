//! Reconciliation's decisions, data-driven: each case is what a target lists
//! and which requests the store holds, and the findings (with their fixes)
//! that must come out, all run through the one [`check`] helper. Requests
//! are built by walking the real lifecycle, so their fields are the ones
//! the store would hold.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock_core::approval::{ApprovalTier, Route, Verdict};
use airlock_core::audit::{Actor, AuditAction};
use airlock_core::catalog::{Catalog, Entitlement, Role, User};
use airlock_core::drift::{
    self, assess, unmanaged_policy, Drift, DriftPolicy, Finding, Fix, Holder, Known, Observation,
};
use airlock_core::request::{
    apply, submit, AccessRequest, Command, JobAction, LifecycleSettings, NewRequest, Transition,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};

mod fixtures;

// ---------------------------------------------------------------- fixtures

const T0_MS: i64 = 1_700_000_000_000;

/// Seconds after T0. Requests are made at 0; holders are listed at
/// [`LISTED`] and the assessment runs at [`NOW`].
fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + secs * 1000)
}

const LISTED: i64 = 100;
const NOW: i64 = 101;

fn user(id: &str) -> User {
    fixtures::person(id, &[])
}

fn entitlement(id: &str, connector: &str) -> Entitlement {
    Entitlement {
        max_duration: Duration::from_secs(24 * 3600),
        default_duration: Duration::from_secs(3600),
        ..fixtures::entitlement(id, connector)
    }
}

fn verdict(route: Route) -> Verdict {
    fixtures::verdict(route, &["p"])
}

fn new_request(id: &str, secs: u64, start_at: Option<Timestamp>) -> NewRequest {
    NewRequest {
        duration: Some(Duration::from_secs(secs)),
        reason: "fix it".to_owned(),
        start_at,
        ..fixtures::new_request(id)
    }
}

fn submitted(
    id: &str,
    who: &str,
    secs: u64,
    route: Route,
    start_at: Option<Timestamp>,
) -> Transition {
    submit(
        new_request(id, secs, start_at),
        &user(who),
        &entitlement("db", "pg"),
        None,
        verdict(route),
        &LifecycleSettings::default(),
        at(0),
    )
    .unwrap()
}

fn step(t: Transition, command: Command, secs: i64) -> Transition {
    apply(t.request, command, &LifecycleSettings::default(), at(secs)).unwrap()
}

fn token(t: &Transition) -> u64 {
    t.effects.last().expect("a connector call").token
}

/// Auto-approved at 0, a grant attempt in flight.
fn granting(id: &str, who: &str) -> Transition {
    submitted(id, who, 3600, Route::AutoApproved, None)
}

/// Granted at `granted`, expiring at `expires`.
fn active_t(id: &str, who: &str, granted: i64, expires: i64) -> Transition {
    let t = submitted(
        id,
        who,
        u64::try_from(expires).unwrap(),
        Route::AutoApproved,
        None,
    );
    let tok = token(&t);
    step(
        t,
        Command::JobSucceeded {
            action: JobAction::Grant,
            token: tok,
            certificate: None,
        },
        granted,
    )
}

/// Granted at 1, released at `ended`, its revocation in flight.
fn revoking_t(id: &str, who: &str, ended: i64) -> Transition {
    let t = active_t(id, who, 1, 3600);
    step(t, Command::Release { by: user(who) }, ended)
}

/// Granted at 1, released at `ended - 1`, removal confirmed at `ended`.
fn ended(id: &str, who: &str, ended: i64) -> AccessRequest {
    let t = revoking_t(id, who, ended - 1);
    let tok = token(&t);
    step(
        t,
        Command::JobSucceeded {
            action: JobAction::Revoke,
            token: tok,
            certificate: None,
        },
        ended,
    )
    .request
}

fn active(id: &str, who: &str, granted: i64, expires: i64) -> AccessRequest {
    active_t(id, who, granted, expires).request
}

fn revoking(id: &str, who: &str) -> AccessRequest {
    revoking_t(id, who, 50).request
}

/// Approved to start at 1000: no attempt yet.
fn scheduled(id: &str, who: &str) -> AccessRequest {
    submitted(id, who, 3600, Route::AutoApproved, Some(at(1000))).request
}

fn pending(id: &str, who: &str) -> AccessRequest {
    let tier = ApprovalTier {
        count: 1,
        groups: BTreeSet::from([GroupName::parse("sre").unwrap()]),
        policy: "p".to_owned(),
    };
    submitted(id, who, 3600, Route::NeedsApprovals(vec![tier]), None).request
}

fn denied(id: &str, who: &str) -> AccessRequest {
    let route = Route::Denied {
        reasons: vec!["no".to_owned()],
    };
    submitted(id, who, 3600, route, None).request
}

// ---------------------------------------------------------------- the table

/// One case: what the target lists (`principal`, request id), which
/// requests the shell read (with their principal), the connector's policy
/// for unexplained holders, and every drift expected, rendered as
/// `kind principal request -> fix` (`-` for none).
struct Case {
    name: &'static str,
    holders: Vec<(&'static str, Option<&'static str>)>,
    requests: Vec<(AccessRequest, Option<&'static str>)>,
    policy: DriftPolicy,
    expect: &'static [&'static str],
}

fn render(d: &Drift) -> String {
    format!(
        "{} {} {} -> {}",
        d.finding.kind(),
        d.finding.principal().unwrap_or("-"),
        d.finding.request_id().map_or("-", RequestId::as_str),
        d.fix.as_str()
    )
}

/// Why `c` does not come out as expected, if it doesn't.
fn check(c: &Case) -> Result<(), String> {
    let holders: Vec<Holder> = c
        .holders
        .iter()
        .map(|(p, id)| Holder {
            principal: (*p).to_owned(),
            request_id: id.map(|i| RequestId::parse(i).unwrap()),
        })
        .collect();
    let requests: Vec<Known> = c
        .requests
        .iter()
        .map(|(r, p)| Known {
            request: r.clone(),
            principal: p.map(str::to_owned),
        })
        .collect();
    let observation = Observation {
        connector: "pg",
        listed_at: at(LISTED),
        holders: &holders,
        requests: &requests,
        unmanaged: c.policy,
    };
    let got: Vec<String> = assess(&observation, at(NOW)).iter().map(render).collect();
    if got == c.expect {
        Ok(())
    } else {
        Err(format!(
            "{}:\n  expected {:?}\n  got      {got:?}",
            c.name, c.expect
        ))
    }
}

#[test]
fn findings_and_fixes() {
    use DriftPolicy::{Report, Revoke};
    let cases = [
        Case {
            name: "a grant the target lists as expected is no drift (grant mode)",
            holders: vec![("alice", None)],
            requests: vec![(active("r1", "alice", 10, 3600), Some("alice"))],
            policy: Revoke,
            expect: &[],
        },
        Case {
            name: "a grant the target lists by request id is no drift (temporary login)",
            holders: vec![("airlock_r1", Some("r1"))],
            requests: vec![(active("r1", "alice", 10, 3600), Some("airlock_r1"))],
            policy: Revoke,
            expect: &[],
        },
        Case {
            name: "a standing privilege is reported under drift = report",
            holders: vec![("bob", None)],
            requests: vec![],
            policy: Report,
            expect: &["unmanaged bob - -> none"],
        },
        Case {
            name: "a standing privilege is removed under drift = revoke",
            holders: vec![("bob", None)],
            requests: vec![],
            policy: Revoke,
            expect: &["unmanaged bob - -> remove_holder"],
        },
        Case {
            name: "the login of a user with an active grant is not unmanaged",
            holders: vec![("alice", None), ("bob", None)],
            requests: vec![(active("r1", "alice", 10, 3600), Some("alice"))],
            policy: Revoke,
            expect: &["unmanaged bob - -> remove_holder"],
        },
        Case {
            name: "a grant attempt under way or a revocation not yet confirmed explains a holder",
            holders: vec![("alice", None), ("carol", None)],
            requests: vec![
                (granting("r1", "alice").request, Some("alice")),
                (revoking("r2", "carol"), Some("carol")),
            ],
            policy: Revoke,
            expect: &[],
        },
        Case {
            name: "a pending or scheduled request does not explain a holder",
            holders: vec![("alice", None), ("carol", None)],
            requests: vec![
                (pending("r1", "alice"), Some("alice")),
                (scheduled("r2", "carol"), Some("carol")),
            ],
            policy: Report,
            expect: &["unmanaged alice - -> none", "unmanaged carol - -> none"],
        },
        Case {
            name: "held again after a confirmed revocation: lingering, revoked whatever the policy",
            holders: vec![("alice", None)],
            requests: vec![(ended("r1", "alice", 60), Some("alice"))],
            policy: Report,
            expect: &["lingering alice r1 -> revoke"],
        },
        Case {
            name: "lingering names the newest ended grant of the principal",
            holders: vec![("alice", None)],
            requests: vec![
                (ended("r1", "alice", 40), Some("alice")),
                (ended("r2", "alice", 70), Some("alice")),
                (denied("r3", "alice"), Some("alice")),
            ],
            policy: Report,
            expect: &["lingering alice r2 -> revoke"],
        },
        Case {
            name: "a request that never held access does not make a holder lingering",
            holders: vec![("alice", None)],
            requests: vec![(denied("r1", "alice"), Some("alice"))],
            policy: Report,
            expect: &["unmanaged alice - -> none"],
        },
        Case {
            name: "removal confirmed after the listing: the listing may predate it",
            holders: vec![("alice", None), ("airlock_r2", Some("r2"))],
            requests: vec![
                (ended("r1", "alice", LISTED + 1), Some("alice")),
                (ended("r2", "bob", LISTED + 1), Some("airlock_r2")),
            ],
            policy: Revoke,
            expect: &[],
        },
        Case {
            name: "a tagged holder of an ended request is lingering",
            holders: vec![("airlock_r1", Some("r1"))],
            requests: vec![(ended("r1", "alice", 60), Some("airlock_r1"))],
            policy: Report,
            expect: &["lingering airlock_r1 r1 -> revoke"],
        },
        Case {
            name: "a tagged holder of a request that ended without a grant is lingering too",
            holders: vec![("airlock_r1", Some("r1"))],
            requests: vec![(denied("r1", "alice"), Some("airlock_r1"))],
            policy: Report,
            expect: &["lingering airlock_r1 r1 -> revoke"],
        },
        Case {
            name: "a tagged holder of a pending or revoking request is the lifecycle's business",
            holders: vec![("airlock_r1", Some("r1")), ("airlock_r2", Some("r2"))],
            requests: vec![
                (pending("r1", "alice"), Some("airlock_r1")),
                (revoking("r2", "bob"), Some("airlock_r2")),
            ],
            policy: Revoke,
            expect: &[],
        },
        Case {
            name: "a request id the store does not know follows the unmanaged policy",
            holders: vec![("airlock_r9", Some("r9"))],
            requests: vec![],
            policy: Revoke,
            expect: &["unknown_request airlock_r9 r9 -> remove_holder"],
        },
        Case {
            name: "an unknown request id under drift = report is only reported",
            holders: vec![("airlock_r9", Some("r9"))],
            requests: vec![],
            policy: Report,
            expect: &["unknown_request airlock_r9 r9 -> none"],
        },
        Case {
            name: "an active grant the target lacks is granted again",
            holders: vec![],
            requests: vec![(active("r1", "alice", 10, 3600), Some("alice"))],
            policy: Report,
            expect: &["missing alice r1 -> grant"],
        },
        Case {
            name: "a missing grant whose expiry has passed is left to its revocation",
            holders: vec![],
            requests: vec![(active("r1", "alice", 10, NOW), Some("alice"))],
            policy: Report,
            expect: &["missing alice r1 -> none"],
        },
        Case {
            name: "a grant confirmed after the listing need not be in it",
            holders: vec![],
            requests: vec![(active("r1", "alice", LISTED + 1, 3600), Some("alice"))],
            policy: Report,
            expect: &[],
        },
        Case {
            name: "grants not confirmed active are never missing",
            holders: vec![],
            requests: vec![
                (granting("r1", "alice").request, Some("alice")),
                (revoking("r2", "bob"), Some("bob")),
                (scheduled("r3", "carol"), Some("carol")),
                (ended("r4", "dave", 60), Some("dave")),
            ],
            policy: Report,
            expect: &[],
        },
        Case {
            name: "without a principal, only the request id matches",
            holders: vec![("r1", Some("r1"))],
            requests: vec![
                (active("r1", "alice", 10, 3600), None),
                (active("r2", "bob", 10, 3600), None),
            ],
            policy: Report,
            expect: &["missing - r2 -> grant"],
        },
        Case {
            name: "one holder for two grants of the same login (grant mode)",
            holders: vec![("alice", None)],
            requests: vec![
                (active("r1", "alice", 10, 3600), Some("alice")),
                (active("r2", "alice", 10, 3600), Some("alice")),
            ],
            policy: Revoke,
            expect: &[],
        },
        Case {
            name: "everything at once, holders first",
            holders: vec![
                ("alice", None),
                ("bob", None),
                ("carol", None),
                ("airlock_r9", Some("r9")),
            ],
            requests: vec![
                (active("r1", "alice", 10, 3600), Some("alice")),
                (ended("r2", "carol", 60), Some("carol")),
                (active("r3", "dave", 10, 3600), Some("dave")),
            ],
            policy: Report,
            expect: &[
                "unmanaged bob - -> none",
                "lingering carol r2 -> revoke",
                "unknown_request airlock_r9 r9 -> none",
                "missing dave r3 -> grant",
            ],
        },
    ];
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unexplained_holders_are_removed_only_when_every_entitlement_of_the_connector_says_revoke() {
    // The catalog with these entitlements set to these policies (others: report).
    let policies = |pairs: &[(&str, DriftPolicy)]| -> Catalog {
        let mut catalog = Catalog {
            users: BTreeMap::new(),
            entitlements: [
                entitlement("db-read", "pg"),
                entitlement("db-admin", "pg"),
                entitlement("shell", "ssh"),
            ]
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect(),
            service_owners: BTreeMap::new(),
            bundles: BTreeMap::new(),
        };
        for (id, policy) in pairs {
            let id = EntitlementId::parse(id).unwrap();
            catalog.entitlements.get_mut(&id).unwrap().drift = *policy;
        }
        catalog
    };
    use DriftPolicy::{Report, Revoke};
    let cases = [
        (policies(&[]), "pg", Report),
        (policies(&[("db-read", Revoke)]), "pg", Report),
        (
            policies(&[("db-read", Revoke), ("db-admin", Report)]),
            "pg",
            Report,
        ),
        (
            policies(&[("db-read", Revoke), ("db-admin", Revoke)]),
            "pg",
            Revoke,
        ),
        (policies(&[("shell", Revoke)]), "ssh", Revoke),
        (policies(&[("shell", Revoke)]), "unused", Report),
    ];
    for (catalog, connector, expected) in cases {
        let set: Vec<_> = catalog
            .entitlements
            .values()
            .map(|e| (e.id.as_str(), e.drift))
            .collect();
        assert_eq!(
            unmanaged_policy(&catalog, connector),
            expected,
            "{connector} under {set:?}"
        );
    }
    assert_eq!(DriftPolicy::parse("revoke"), Some(Revoke));
    assert_eq!(DriftPolicy::parse("report"), Some(Report));
    assert_eq!(DriftPolicy::parse("Revoke"), None);
    assert_eq!(DriftPolicy::default(), Report);
}

#[test]
fn every_finding_and_fix_is_an_audit_event_naming_connector_principal_kind_and_request() {
    let admin = User {
        roles: BTreeSet::from([Role::Admin]),
        ..user("root")
    };
    let lingering = Drift {
        connector: "pg".to_owned(),
        finding: Finding::Lingering {
            request: ended("r1", "alice", 60),
            principal: "alice".to_owned(),
        },
        fix: Fix::Revoke,
    };
    let e = drift::found(&lingering, true, Some(&admin), at(NOW));
    assert_eq!(e.action, AuditAction::DriftFound);
    assert_eq!(e.action.as_str(), "drift_found");
    assert_eq!(e.at, at(NOW));
    assert_eq!(e.actor, Actor::User(admin.id.clone()));
    assert_eq!(e.request.as_ref().map(RequestId::as_str), Some("r1"));
    assert_eq!(e.subject.as_ref().map(UserId::as_str), Some("alice"));
    assert_eq!(
        e.entitlement.as_ref().map(EntitlementId::as_str),
        Some("db")
    );
    let details = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        e.details,
        details(&[
            ("connector", "pg"),
            ("kind", "lingering"),
            ("principal", "alice"),
            ("request", "r1"),
            ("fix", "revoke"),
            ("fixing", "true"),
        ])
    );

    let e = drift::fixed(&lingering, Some("sessions ended"), None, at(NOW));
    assert_eq!(
        (e.action.as_str(), &e.actor),
        ("drift_fixed", &Actor::System)
    );
    assert_eq!(
        e.details.get("note").map(String::as_str),
        Some("sessions ended")
    );

    // A request the store does not know is named in the details only.
    let unknown = Drift {
        connector: "pg".to_owned(),
        finding: Finding::UnknownRequest {
            principal: "airlock_r9".to_owned(),
            request_id: RequestId::parse("r9").unwrap(),
        },
        fix: Fix::RemoveHolder,
    };
    let e = drift::fix_failed(&unknown, "permission denied", false, None, at(NOW));
    assert_eq!(e.action.as_str(), "drift_fix_failed");
    assert_eq!((e.request, e.subject, e.entitlement), (None, None, None));
    assert_eq!(
        e.details,
        details(&[
            ("connector", "pg"),
            ("kind", "unknown_request"),
            ("principal", "airlock_r9"),
            ("request", "r9"),
            ("fix", "remove_holder"),
            ("error", "permission denied"),
            ("retryable", "false"),
        ])
    );

    // A fix of `none` says why.
    let reported = Drift {
        connector: "pg".to_owned(),
        finding: Finding::Unmanaged {
            principal: "bob".to_owned(),
        },
        fix: Fix::None { why: "report only" },
    };
    let e = drift::found(&reported, false, None, at(NOW));
    assert_eq!(
        e.details.get("why").map(String::as_str),
        Some("report only")
    );
    assert_eq!(e.details.get("fixing").map(String::as_str), Some("false"));
    assert!(!e.details.contains_key("request"));
}

// ------------------------------------------------- the standing-privilege report

/// The standing report explains holders by the same rule and rates each:
/// the sensitivity, one lower for Airlock's grant, one higher for a
/// principal no Airlock user answers for, within low..critical.
#[test]
fn the_standing_report_explains_each_holder_and_rates_its_risk() {
    use airlock_core::catalog::PrincipalKind;
    use airlock_core::standing::{assess as assess_standing, HolderKind, Listing, Sensitivity};

    let mut catalog = Catalog::default();
    let mut db = entitlement("db", "pg");
    db.sensitivity = Sensitivity::High;
    let mut ro = entitlement("db-ro", "pg");
    ro.sensitivity = Sensitivity::Low;
    catalog.entitlements.insert(db.id.clone(), db);
    catalog.entitlements.insert(ro.id.clone(), ro);
    let mut deploy = user("deploy");
    deploy.kind = PrincipalKind::Service;
    for u in [user("alice"), user("bob"), deploy] {
        catalog.users.insert(u.id.clone(), u);
    }
    let holders: Vec<Holder> = [
        ("alice", None),
        ("bob", None),
        ("deploy", None),
        ("old_dba", None),
        ("bob_again", Some("req-gone")),
        ("carol", None),
    ]
    .into_iter()
    .map(|(p, id)| Holder {
        principal: p.to_owned(),
        request_id: id.map(|i| RequestId::parse(i).unwrap()),
    })
    .collect();
    let requests = vec![
        Known {
            request: active("req-a", "alice", 1, 3600),
            principal: Some("alice".to_owned()),
        },
        Known {
            request: ended("req-c", "carol", 50),
            principal: Some("carol".to_owned()),
        },
    ];
    let principals = vec![
        ("bob".to_owned(), UserId::parse("bob").unwrap()),
        ("deploy".to_owned(), UserId::parse("deploy").unwrap()),
    ];
    let listing = Listing {
        connector: "pg",
        listed_at: at(LISTED),
        holders: &holders,
        requests: &requests,
        principals: &principals,
    };
    let got: Vec<String> = assess_standing(&listing, &catalog)
        .iter()
        .map(|h| {
            format!(
                "{} {} {} {} [{}] {} {}",
                h.principal,
                h.status.as_str(),
                h.user.map_or("-", UserId::as_str),
                h.kind.as_str(),
                h.entitlements
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                h.sensitivity.as_str(),
                h.risk.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            // Airlock's grant: the request's entitlement, one lower.
            "alice granted alice person [db] high medium",
            // A user's own login with no grant: every entitlement of the
            // connector, at the highest sensitivity among them.
            "bob standing bob person [db db-ro] high high",
            "deploy standing deploy service [db db-ro] high high",
            // Nobody answers for it: one higher.
            "old_dba standing - unknown [db db-ro] high critical",
            "bob_again unknown_request - unknown [db db-ro] high critical",
            // Back after its removal was confirmed: held, not granted (carol
            // is the identity provider's, not the config's, but her request
            // says who answers for it).
            "carol lingering carol person [db] high high",
        ]
    );
    assert_eq!(HolderKind::Unknown.as_str(), "unknown");
}

#[test]
fn risk_stays_within_low_and_critical() {
    use airlock_core::standing::{risk, HolderKind, Sensitivity, Status};
    let granted_request = active("req-a", "alice", 1, 3600);
    let granted = Status::Granted(&granted_request);
    assert_eq!(
        risk(Sensitivity::Low, HolderKind::Person, &granted),
        Sensitivity::Low
    );
    assert_eq!(
        risk(
            Sensitivity::Critical,
            HolderKind::Unknown,
            &Status::Standing
        ),
        Sensitivity::Critical
    );
    assert_eq!(
        risk(Sensitivity::Low, HolderKind::Unknown, &Status::Standing),
        Sensitivity::Medium
    );
    assert_eq!(
        risk(Sensitivity::Critical, HolderKind::Service, &granted),
        Sensitivity::High
    );
    for level in 0..4 {
        assert_eq!(Sensitivity::from_level(level).unwrap().level(), level);
    }
    assert_eq!(Sensitivity::from_level(4), None);
    assert_eq!(Sensitivity::from_level(-1), None);
}
