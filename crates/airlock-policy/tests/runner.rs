//! The policy test runner says which case failed, where, and why.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test"
)]

use airlock_policy::{run_tests, Directory, PolicySet, TestReport};

const POLICIES: &str = r#"
@id("engineers-ask")
permit(principal in Airlock::Group::"engineers", action == Airlock::Action::"request", resource);
@id("owners") @approvals("1") @approvers("approvers")
permit(principal, action == Airlock::Action::"require_approval", resource);
@id("approvers-approve")
permit(principal in Airlock::Group::"approvers", action == Airlock::Action::"approve", resource);
"#;

fn run(cases: &str) -> TestReport {
    let set = PolicySet::load(&[("p.cedar".to_owned(), POLICIES.to_owned())]).unwrap();
    run_tests(&set, &Directory::default(), cases)
}

const HEADER: &str = r#"[users.alice]
groups = ["engineers"]

[users.dana]
groups = ["approvers"]

[entitlements.db]
sensitivity = 3
"#;

#[test]
fn passing_cases_pass() {
    let report = run(&format!(
        r#"{HEADER}
[[case]]
name = "engineers need an approver"
principal = "alice"
entitlement = "db"
expect = "needs_approvals"
tiers = [{{ count = 1, groups = ["approvers"] }}]
policies = ["engineers-ask", "owners"]
may_approve = ["dana"]
may_not_approve = ["alice"]

[[case]]
name = "approvers may not ask"
principal = "dana"
entitlement = "db"
expect = "denied"
reason = "no policy permits"
"#
    ));
    assert!(report.all_passed(), "{report}");
    assert_eq!(report.to_string(), "policy tests: 2 of 2 cases passed");
}

#[test]
fn failures_name_the_case_its_line_and_what_differed() {
    let report = run(&format!(
        r#"{HEADER}
[[case]]
name = "wrong kind"
principal = "alice"
entitlement = "db"
expect = "auto_approved"

[[case]]
name = "wrong tiers and approvers"
principal = "alice"
entitlement = "db"
expect = "needs_approvals"
tiers = [{{ count = 2, groups = ["security"] }}]
may_approve = ["alice"]

[[case]]
name = "unknown user"
principal = "zed"
entitlement = "db"
expect = "denied"
"#
    ));
    assert!(!report.all_passed());
    assert_eq!((report.passed(), report.failed()), (0, 3));
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "line 10: case `wrong kind`: expected auto_approved, got needs approvals: 1 from [approvers] (owners)");
    assert_eq!(lines[1], "line 16: case `wrong tiers and approvers`: expected tiers [2 from [security]], got [1 from [approvers]]");
    assert!(
        lines[2].starts_with(
            "line 16: case `wrong tiers and approvers`: expected `alice` to approve, got Denied"
        ),
        "{text}"
    );
    assert_eq!(
        lines[3],
        "line 24: case `unknown user`: unknown user `zed` (define it under [users.zed])"
    );
    assert_eq!(lines[4], "policy tests: 0 of 3 cases passed");
}

#[test]
fn malformed_files_are_reported_with_their_line() {
    let report = run("[users.alice]\ngroups = [\"engineers\"]\nteam = = 1\n");
    assert_eq!(report.errors.len(), 1, "{report}");
    assert!(
        report.errors[0].starts_with("line 3, column 8: "),
        "{report}"
    );
    assert!(!report.all_passed());

    let report = run(&format!(
        "{HEADER}\n[[case]]\nname = \"typo\"\nprincipal = \"alice\"\nentitlement = \"db\"\nexpect = \"denied\"\nbreakglass = true\n"
    ));
    assert_eq!(report.errors.len(), 1, "{report}");
    assert!(
        report.errors[0].contains("unknown field `breakglass`"),
        "{report}"
    );
    assert!(
        report.errors[0].starts_with("line 15, column 1: "),
        "{report}"
    );

    let report = run(&format!(
        "{HEADER}\n[[case]]\nname = \"bad expect\"\nprincipal = \"alice\"\nentitlement = \"db\"\nexpect = \"approved\"\n"
    ));
    assert!(
        report
            .to_string()
            .contains("line 10: case `bad expect`: `expect` must be"),
        "{report}"
    );

    // A file without cases passes nothing.
    assert!(!run(HEADER).all_passed());
}

/// Policy tests may describe service principals (`kind = "service"`), which
/// policies see as `principal.kind`.
#[test]
fn cases_may_run_as_a_service_principal() {
    let policies = r#"
@id("engineers-ask")
permit(principal in Airlock::Group::"engineers", action == Airlock::Action::"request", resource);
@id("auto")
permit(principal, action == Airlock::Action::"auto_approve", resource);
@id("no-services-on-db")
forbid(principal, action == Airlock::Action::"request", resource == Airlock::Entitlement::"db")
when { principal.kind == "service" };
"#;
    let set = PolicySet::load(&[("p.cedar".to_owned(), policies.to_owned())]).unwrap();
    let report = run_tests(
        &set,
        &Directory::default(),
        r#"[users.alice]
groups = ["engineers"]

[users.deploy]
groups = ["engineers"]
kind = "service"

[entitlements.db]

[[case]]
name = "a person may ask"
principal = "alice"
entitlement = "db"
expect = "auto_approved"

[[case]]
name = "a service may not"
principal = "deploy"
entitlement = "db"
expect = "denied"
"#,
    );
    assert!(report.all_passed(), "{report}");
    let bad = run_tests(
        &set,
        &Directory::default(),
        "[users.x]\nkind = \"robot\"\n\n[entitlements.db]\n",
    );
    assert!(bad.to_string().contains("unknown kind `robot`"), "{bad}");
}
