//! Policy tests: a `tests.toml` kept next to the policies says what must
//! happen to concrete requests, so a policy change that breaks an
//! expectation is caught before it is deployed. The file also defines the
//! users and entitlements it talks about, which keeps this crate pure.
//!
//! ```toml
//! [users.alice]
//! groups = ["engineers"]     # default []
//! team = "payments"          # default ""
//! employment = "employee"    # default "employee"
//! on_call = true             # default false
//!
//! [entitlements.prod-db-admin]
//! sensitivity = 3            # default 0
//! owner_group = "dba"        # optional
//!
//! [[case]]
//! name = "on-call engineer in business hours is auto-approved"
//! principal = "alice"
//! entitlement = "prod-db-admin"
//! # Context; each defaults to RequestContext::typical():
//! duration = "1h"            # 1h; units d, h, m, s, combinable ("4h30m")
//! weekday = "tue"            # tue
//! hour_utc = 10              # 10
//! ticket = "INC-1"           # "TICKET-1"; "" for none
//! reason_length = 40         # 40
//! mfa_age = "5m"             # 5m; "none" for no recent MFA
//! break_glass = false        # false
//! other_active = []          # []
//! extend = "30m"             # decide extending a grant of `duration` by
//!                            # this much (action `extend`), not a request
//! expect = "auto_approved"   # or "denied", "needs_approvals", "break_glass"
//! # Optional checks:
//! tiers = [{ count = 1, groups = ["approvers"] }]   # exactly these tiers
//! policies = ["..."]         # exactly these deciding policies
//! reason = "no policy permits"   # a denial reason containing this text
//! may_approve = ["bob"]      # these users may approve this request
//! may_not_approve = ["alice"]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use airlock_core::catalog::PrincipalKind;
use airlock_core::{EntitlementId, GroupName, UserId};
use serde::Deserialize;

use crate::decide::Decision;
use crate::facts::{
    Directory, EntitlementFacts, ExtensionFacts, RequestContext, RequestFacts, StartTime,
    UserFacts, Weekday,
};
use crate::policy_set::{line_column, PolicySet};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    users: BTreeMap<String, UserSpec>,
    #[serde(default)]
    entitlements: BTreeMap<String, EntitlementSpec>,
    #[serde(default, rename = "case")]
    cases: Vec<toml::Spanned<CaseSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    team: String,
    #[serde(default = "employee")]
    employment: String,
    #[serde(default)]
    on_call: bool,
    /// "person" (the default) or "service".
    #[serde(default)]
    kind: Option<String>,
    /// An external principal's sponsor (`principal.sponsor`); set it with
    /// `employment = "vendor"`.
    sponsor: Option<String>,
}

fn employee() -> String {
    "employee".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitlementSpec {
    #[serde(default)]
    sensitivity: i64,
    owner_group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    principal: String,
    entitlement: String,
    duration: Option<String>,
    weekday: Option<String>,
    hour_utc: Option<u8>,
    ticket: Option<String>,
    reason_length: Option<u32>,
    mfa_age: Option<String>,
    break_glass: Option<bool>,
    other_active: Option<Vec<String>>,
    extend: Option<String>,
    expect: String,
    tiers: Option<Vec<TierSpec>>,
    policies: Option<Vec<String>>,
    reason: Option<String>,
    #[serde(default)]
    may_approve: Vec<String>,
    #[serde(default)]
    may_not_approve: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSpec {
    count: u32,
    groups: Vec<String>,
}

/// The result of one `[[case]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    /// Line of the case in the test file (1-based).
    pub line: usize,
    /// Empty when the case passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The results of a test file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub cases: Vec<CaseResult>,
    /// Problems with the file itself (syntax, bad user definitions), each
    /// starting with `line N`.
    pub errors: Vec<String>,
}

impl TestReport {
    /// True when the file was well-formed, had cases, and all passed.
    pub fn all_passed(&self) -> bool {
        self.errors.is_empty()
            && !self.cases.is_empty()
            && self.cases.iter().all(CaseResult::passed)
    }

    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        for case in self.cases.iter().filter(|c| !c.passed()) {
            for failure in &case.failures {
                writeln!(f, "line {}: case `{}`: {failure}", case.line, case.name)?;
            }
        }
        write!(
            f,
            "policy tests: {} of {} cases passed",
            self.passed(),
            self.cases.len()
        )
    }
}

/// Runs the cases of a `tests.toml` (see the module docs) against
/// `policies`. Users and entitlements come from `directory` plus the
/// file's own `[users.*]` and `[entitlements.*]` sections; a name defined in
/// both is an error.
pub fn run_tests(policies: &PolicySet, directory: &Directory, cases_text: &str) -> TestReport {
    let mut report = TestReport::default();
    let file: TestFile = match toml::from_str(cases_text) {
        Ok(f) => f,
        Err(e) => {
            let (line, column) = e
                .span()
                .map_or((1, 1), |s| line_column(cases_text, s.start));
            // toml's messages may run over several lines; keep one per error.
            let message: Vec<&str> = e.message().lines().map(str::trim).collect();
            report.errors.push(format!(
                "line {line}, column {column}: {}",
                message.join("; ")
            ));
            return report;
        }
    };
    let directory = merge_directory(directory, &file, &mut report.errors);
    for spanned in &file.cases {
        let (line, _) = line_column(cases_text, spanned.span().start);
        let case = spanned.get_ref();
        let failures = match run_case(policies, &directory, case) {
            Ok(failures) => failures,
            Err(problem) => vec![problem],
        };
        report.cases.push(CaseResult {
            name: case.name.clone(),
            line,
            failures,
        });
    }
    report
}

fn merge_directory(base: &Directory, file: &TestFile, errors: &mut Vec<String>) -> Directory {
    let mut directory = base.clone();
    for (name, spec) in &file.users {
        let user = UserId::parse(name)
            .map_err(|e| format!("[users.{name}]: invalid user id: {e}"))
            .and_then(|id| {
                let groups = spec
                    .groups
                    .iter()
                    .map(|g| {
                        GroupName::parse(g)
                            .map_err(|e| format!("[users.{name}]: invalid group `{g}`: {e}"))
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?;
                let kind = match spec.kind.as_deref() {
                    None | Some("person") => PrincipalKind::Person,
                    Some("service") => PrincipalKind::Service,
                    Some(other) => {
                        return Err(format!(
                            "[users.{name}]: unknown kind `{other}` (known: person, service)"
                        ))
                    }
                };
                let sponsor = spec
                    .sponsor
                    .as_deref()
                    .map(|s| {
                        UserId::parse(s)
                            .map_err(|e| format!("[users.{name}]: invalid sponsor `{s}`: {e}"))
                    })
                    .transpose()?;
                Ok(UserFacts {
                    id,
                    groups,
                    team: spec.team.clone(),
                    employment: spec.employment.clone(),
                    on_call: spec.on_call,
                    kind,
                    sponsor,
                })
            });
        match user {
            Ok(user) if directory.users.contains_key(&user.id) => {
                errors.push(format!("[users.{name}]: `{name}` is also in the directory"));
            }
            Ok(user) => {
                directory.users.insert(user.id.clone(), user);
            }
            Err(e) => errors.push(e),
        }
    }
    for (name, spec) in &file.entitlements {
        let entitlement = EntitlementId::parse(name)
            .map_err(|e| format!("[entitlements.{name}]: invalid entitlement id: {e}"))
            .and_then(|id| {
                let owner_group = spec
                    .owner_group
                    .as_deref()
                    .map(GroupName::parse)
                    .transpose()
                    .map_err(|e| format!("[entitlements.{name}]: invalid owner_group: {e}"))?;
                Ok(EntitlementFacts {
                    id,
                    sensitivity: spec.sensitivity,
                    owner_group,
                })
            });
        match entitlement {
            Ok(e) if directory.entitlements.contains_key(&e.id) => {
                errors.push(format!(
                    "[entitlements.{name}]: `{name}` is also in the directory"
                ));
            }
            Ok(e) => {
                directory.entitlements.insert(e.id.clone(), e);
            }
            Err(e) => errors.push(e),
        }
    }
    directory
}

/// Runs one case: `Err` if the case itself is malformed, else the list of
/// failed expectations.
fn run_case(
    policies: &PolicySet,
    directory: &Directory,
    case: &CaseSpec,
) -> Result<Vec<String>, String> {
    let user = |name: &str| {
        UserId::parse(name)
            .ok()
            .and_then(|id| directory.users.get(&id))
            .ok_or_else(|| format!("unknown user `{name}` (define it under [users.{name}])"))
    };
    let requester = user(&case.principal)?;
    let entitlement = EntitlementId::parse(&case.entitlement)
        .ok()
        .and_then(|id| directory.entitlements.get(&id))
        .ok_or_else(|| {
            format!(
                "unknown entitlement `{0}` (define it under [entitlements.{0}])",
                case.entitlement
            )
        })?;
    let facts = RequestFacts {
        requester: requester.clone(),
        entitlement: entitlement.clone(),
        context: context_of(case)?,
    };

    let decision = match &case.extend {
        None => policies.decide(&facts),
        Some(raw) => {
            let extension = parse_duration(raw)
                .ok_or_else(|| format!("`extend`: cannot read `{raw}` (try \"30m\")"))?;
            let total = facts.context.duration.saturating_add(extension);
            policies.decide_extension(&facts, &ExtensionFacts { extension, total })
        }
    };
    let mut failures = Vec::new();
    if !matches!(
        case.expect.as_str(),
        "denied" | "auto_approved" | "needs_approvals" | "break_glass"
    ) {
        return Err(format!(
            "`expect` must be `denied`, `auto_approved`, `needs_approvals` or `break_glass`, not `{}`",
            case.expect
        ));
    }
    if decision.kind() != case.expect {
        failures.push(format!("expected {}, got {decision}", case.expect));
    }
    if let Some(expected) = &case.tiers {
        if case.expect != "needs_approvals" {
            return Err("`tiers` only applies to `expect = \"needs_approvals\"`".to_owned());
        }
        let mut want = Vec::new();
        for t in expected {
            let groups = t
                .groups
                .iter()
                .map(|g| {
                    GroupName::parse(g).map_err(|e| format!("tiers: invalid group `{g}`: {e}"))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            want.push((t.count, groups));
        }
        want.sort();
        if let Decision::NeedsApprovals { tiers, .. } = &decision {
            let mut got: Vec<(u32, BTreeSet<GroupName>)> =
                tiers.iter().map(|t| (t.count, t.groups.clone())).collect();
            got.sort();
            if got != want {
                failures.push(format!(
                    "expected tiers {}, got {}",
                    show_tiers(&want),
                    show_tiers(&got)
                ));
            }
        }
    }
    if let Some(expected) = &case.policies {
        let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = decision.policies().into_iter().collect();
        if want != got {
            failures.push(format!(
                "expected deciding policies [{}], got [{}]",
                join(want),
                join(got)
            ));
        }
    }
    if let Some(reason) = &case.reason {
        if case.expect != "denied" {
            return Err("`reason` only applies to `expect = \"denied\"`".to_owned());
        }
        // A decision of another kind already failed the `expect` check.
        if let Decision::Denied { reasons, .. } = &decision {
            if !reasons
                .iter()
                .any(|r| r.to_string().contains(reason.as_str()))
            {
                let got: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                failures.push(format!(
                    "expected a reason containing `{reason}`, got: {}",
                    got.join("; ")
                ));
            }
        }
    }
    for (names, expect_allowed) in [(&case.may_approve, true), (&case.may_not_approve, false)] {
        for name in names {
            let approver = user(name)?;
            let answer = policies.may_approve(approver, &facts);
            if answer.is_allowed() != expect_allowed {
                failures.push(format!(
                    "expected `{name}` {} approve, got {answer:?}",
                    if expect_allowed { "to" } else { "not to" }
                ));
            }
        }
    }
    for e in decision.errors() {
        failures.push(format!("evaluation error: {e}"));
    }
    Ok(failures)
}

fn context_of(case: &CaseSpec) -> Result<RequestContext, String> {
    let mut context = RequestContext::typical();
    if let Some(d) = &case.duration {
        context.duration = parse_duration(d)
            .ok_or_else(|| format!("`duration`: cannot read `{d}` (try \"1h\")"))?;
    }
    let weekday = match &case.weekday {
        Some(w) => Weekday::parse(w)
            .ok_or_else(|| format!("`weekday`: cannot read `{w}` (try \"mon\")"))?,
        None => context.start.weekday(),
    };
    let hour = case.hour_utc.unwrap_or(context.start.hour_utc());
    context.start = StartTime::new(weekday, hour)
        .ok_or_else(|| format!("`hour_utc` must be 0..=23, not {hour}"))?;
    if let Some(ticket) = &case.ticket {
        context.ticket = Some(ticket.clone()).filter(|t| !t.is_empty());
    }
    if let Some(n) = case.reason_length {
        context.reason_length = n;
    }
    if let Some(m) = &case.mfa_age {
        context.mfa_age =
            if m == "none" {
                None
            } else {
                Some(parse_duration(m).ok_or_else(|| {
                    format!("`mfa_age`: cannot read `{m}` (try \"5m\" or \"none\")")
                })?)
            };
    }
    if let Some(b) = case.break_glass {
        context.break_glass = b;
    }
    if let Some(others) = &case.other_active {
        context.other_active_entitlements = others
            .iter()
            .map(|e| EntitlementId::parse(e).map_err(|err| format!("`other_active`: `{e}`: {err}")))
            .collect::<Result<_, _>>()?;
    }
    Ok(context)
}

/// `1h`, `30m`, `4h30m`, `90s`, `2d`.
fn parse_duration(raw: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in raw.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        any = true;
    }
    (any && digits.is_empty()).then(|| Duration::from_secs(total))
}

fn show_tiers(tiers: &[(u32, BTreeSet<GroupName>)]) -> String {
    let shown: Vec<String> = tiers
        .iter()
        .map(|(count, groups)| {
            format!(
                "{count} from [{}]",
                join(groups.iter().map(GroupName::as_str))
            )
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

fn join<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        let cases = [
            ("1h", Some(3600)),
            ("30m", Some(1800)),
            ("4h30m", Some(16_200)),
            ("90s", Some(90)),
            ("2d", Some(172_800)),
            ("", None),
            ("10", None),
            ("1x", None),
            ("h", None),
        ];
        for (raw, secs) in cases {
            assert_eq!(parse_duration(raw), secs.map(Duration::from_secs), "{raw}");
        }
    }
}
