//! The demo policies in `policies/demo/` load cleanly and pass their own
//! `tests.toml`, so the examples people copy from are known to work.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::path::PathBuf;

use airlock_core::{EntitlementId, GroupName, UserId};
use airlock_policy::{
    diff, run_tests, Directory, EntitlementFacts, PolicySet, RequestContext, StartTime, UserFacts,
    Weekday,
};

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/demo")
}

fn demo_sources() -> Vec<(String, String)> {
    let mut sources: Vec<(String, String)> = std::fs::read_dir(demo_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    sources.sort();
    sources
}

fn load_demo() -> PolicySet {
    match PolicySet::load(&demo_sources()) {
        Ok(set) => set,
        Err(errors) => {
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("demo policies do not load:\n{}", shown.join("\n"));
        }
    }
}

#[test]
fn demo_policies_load_without_warnings() {
    let set = load_demo();
    assert!(set.warnings().is_empty(), "{:?}", set.warnings());
    assert_eq!(set.policy_ids().count(), 18);
    assert_eq!(set.version().len(), 64);
}

#[test]
fn demo_policies_pass_their_tests() {
    let set = load_demo();
    let cases = std::fs::read_to_string(demo_dir().join("tests.toml")).unwrap();
    let report = run_tests(&set, &Directory::default(), &cases);
    assert!(report.all_passed(), "{report}");
    assert!(report.cases.len() >= 12, "{report}");
}

fn person(id: &str, groups: &[&str], employment: &str, on_call: bool) -> UserFacts {
    UserFacts {
        id: UserId::parse(id).unwrap(),
        groups: groups
            .iter()
            .map(|g| GroupName::parse(g).unwrap())
            .collect(),
        team: String::new(),
        employment: employment.to_owned(),
        on_call,
        kind: Default::default(),
        sponsor: None,
    }
}

fn people() -> Vec<UserFacts> {
    vec![
        person("alice", &["engineers"], "employee", false),
        person("oscar", &["engineers"], "employee", true),
        person("carl", &["engineers"], "contractor", false),
        person("dana", &["approvers"], "employee", false),
        person("sam", &["security"], "employee", false),
        person("nora", &[], "employee", false),
    ]
}

fn prod_db() -> EntitlementFacts {
    EntitlementFacts {
        id: EntitlementId::parse("prod-db-admin").unwrap(),
        sensitivity: 3,
        owner_group: Some(GroupName::parse("approvers").unwrap()),
    }
}

#[test]
fn who_can_get_prod_db_admin() {
    let who = load_demo().who_can(&prod_db(), &people());
    let shown: Vec<String> = who.may_request.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "alice: needs 1 from [approvers] (prod-db-owner-approval) [prod-db-engineers-with-ticket, prod-db-owner-approval]",
            "oscar: auto-approved [prod-db-engineers-with-ticket, prod-db-on-call-business-hours]",
        ]
    );
    assert_eq!(who.auto_approved_for, [UserId::parse("oscar").unwrap()]);
    let approvers: Vec<(&str, Vec<&str>)> = who
        .approvers
        .iter()
        .map(|a| {
            (
                a.user.as_str(),
                a.policies.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        approvers,
        [
            ("dana", vec!["approvers-approve-prod-db"]),
            ("sam", vec!["security-approves-anything"]),
        ]
    );
    assert_eq!(
        who.conditions,
        [
            "approvers-approve-prod-db",
            "prod-db-break-glass",
            "prod-db-engineers-with-ticket",
            "prod-db-extend-briefly",
            "prod-db-extend-with-approval",
            "prod-db-long-needs-security",
            "prod-db-no-contractors",
            "prod-db-on-call-business-hours",
            "prod-db-owner-approval",
            "sod-no-prod-db-while-deploying",
        ]
    );
    assert_eq!(who.assumed, RequestContext::typical());
}

#[test]
fn diff_shows_who_gains_and_loses_what() {
    let old = demo_sources();
    // The change under review: drop on-call auto-approval, let contractors
    // approve, and open staging shells to everyone.
    let new: Vec<(String, String)> = old
        .iter()
        .map(|(file, text)| {
            let text = match file.as_str() {
                "prod-db.cedar" => text.replace(
                    "principal.on_call &&",
                    "principal.on_call && context.reason_length > 1000 &&",
                ),
                "approvers.cedar" => text.replace(
                    "unless { principal.employment == \"employee\" }",
                    "unless { principal.employment != \"vendor\" }",
                ),
                "staging.cedar" => {
                    text.replace("principal in Airlock::Group::\"engineers\",", "principal,")
                }
                _ => text.clone(),
            };
            (file.clone(), text)
        })
        .collect();
    let (old, new) = (
        PolicySet::load(&old).unwrap(),
        PolicySet::load(&new).unwrap(),
    );
    let staging = EntitlementFacts {
        id: EntitlementId::parse("staging-shell").unwrap(),
        sensitivity: 1,
        owner_group: None,
    };
    let mut principals = people();
    principals.push(person("vic", &["approvers"], "contractor", false));
    let weekend = RequestContext {
        start: StartTime::new(Weekday::Saturday, 10).unwrap(),
        ..RequestContext::typical()
    };
    let changes = diff(
        &old,
        &new,
        &principals,
        &[prod_db(), staging],
        &[RequestContext::typical(), weekend],
    );
    let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "`dana` gains request on `staging-shell` (contexts 0, 1)",
            "`dana` gains auto-approve on `staging-shell` (contexts 0, 1)",
            "`nora` gains request on `staging-shell` (contexts 0, 1)",
            "`nora` gains auto-approve on `staging-shell` (contexts 0, 1)",
            "`oscar` loses auto-approve on `prod-db-admin` (contexts 0)",
            "`sam` gains request on `staging-shell` (contexts 0, 1)",
            "`sam` gains auto-approve on `staging-shell` (contexts 0, 1)",
            "`vic` gains approve on `prod-db-admin` (contexts 0, 1)",
            "`vic` gains request on `staging-shell` (contexts 0, 1)",
            "`vic` gains auto-approve on `staging-shell` (contexts 0, 1)",
        ]
    );
    assert!(diff(&old, &old, &principals, &[prod_db()], &[]).is_empty());
}
