//! `airlock policy validate|test|who-can|diff`: check a folder of Cedar
//! policies before it takes effect, run the test cases written next to
//! them, and ask what a set (or a change to it) lets whom do.

use crate::terminal::{say, say_err};
use std::path::Path;

use airlock_core::EntitlementId;
use airlock_policy::{run_tests, Directory, PolicySet};
use airlock_server::config::Settings;
use airlock_server::policy::{describe_changes, everyone, read_policy_dir, PolicySource};
use anyhow::{bail, Context};

/// Loads and validates against the schema, printing every error.
pub fn load(dir: &Path) -> anyhow::Result<PolicySet> {
    match PolicySet::load(&read_policy_dir(dir)?) {
        Ok(set) => {
            for warning in set.warnings() {
                say_err!("warning: {warning}");
            }
            Ok(set)
        }
        Err(errors) => {
            for e in &errors {
                say_err!("{e}");
            }
            bail!(
                "{} error(s) in the policies of `{}`",
                errors.len(),
                dir.display()
            )
        }
    }
}

pub fn validate(dir: &Path) -> anyhow::Result<()> {
    let set = load(dir)?;
    say!(
        "{}: {} policies valid against the Airlock schema (version {})",
        dir.display(),
        set.policy_ids().count(),
        set.version()
    );
    Ok(())
}

pub fn test(dir: &Path) -> anyhow::Result<()> {
    let set = load(dir)?;
    let cases_path = dir.join("tests.toml");
    let cases = std::fs::read_to_string(&cases_path)
        .with_context(|| format!("cannot read `{}`", cases_path.display()))?;
    let report = run_tests(&set, &Directory::default(), &cases);
    for error in &report.errors {
        say_err!("{}: {error}", cases_path.display());
    }
    for case in &report.cases {
        if case.passed() {
            say!("ok    {} (line {})", case.name, case.line);
        } else {
            say!("FAIL  {} (line {})", case.name, case.line);
            for f in &case.failures {
                say!("      {f}");
            }
        }
    }
    say!("{} passed, {} failed", report.passed(), report.failed());
    if !report.all_passed() {
        bail!("policy tests in `{}` failed", cases_path.display());
    }
    Ok(())
}

/// Loads the policy set a config puts in force (its folder plus the
/// entitlement shorthand), printing every error.
fn load_configured(settings: &Settings, source: &PolicySource) -> anyhow::Result<PolicySet> {
    source
        .load()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "loading the policies for {} entitlements",
                settings.catalog.entitlements.len()
            )
        })
}

pub fn who_can(config: &Path, entitlement: &str) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    let id = EntitlementId::parse(entitlement)
        .map_err(|e| anyhow::anyhow!("entitlement `{entitlement}` {e}"))?;
    let facts = settings
        .directory
        .entitlements
        .get(&id)
        .cloned()
        .with_context(|| format!("`{}` has no entitlement `{id}`", config.display()))?;
    let set = load_configured(&settings, &settings.policy_source)?;
    let who = set.who_can(&facts, &everyone(&settings.directory));
    say!("who can request `{id}` (policy set {}):", set.version());
    if who.may_request.is_empty() {
        say!("  nobody");
    }
    for m in &who.may_request {
        say!("  {m}");
    }
    say!("who can approve a request for `{id}` (never their own):");
    if who.approvers.is_empty() {
        say!("  nobody");
    }
    for a in &who.approvers {
        say!("  {} [{}]", a.user, a.policies.join(", "));
    }
    let c = &who.assumed;
    say!(
        "assuming an ordinary request: {}s, starting {} {:02}:00 UTC, ticket {}, reason of {} characters, \
         MFA {}, not break-glass, holding nothing else",
        c.duration.as_secs(),
        c.start.weekday().as_str(),
        c.start.hour_utc(),
        c.ticket().unwrap_or("none"),
        c.reason_length,
        c.mfa_age.map_or("none".to_owned(), |a| format!("{}s ago", a.as_secs())),
    );
    if !who.conditions.is_empty() {
        say!(
            "other circumstances may change the answer: read {}",
            who.conditions.join(", ")
        );
    }
    Ok(())
}

pub fn diff(config: &Path, new_dir: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    let old = load_configured(&settings, &settings.policy_source)?;
    let proposed = PolicySource {
        dir: Some(new_dir.to_path_buf()),
        ..settings.policy_source.clone()
    };
    let new = load_configured(&settings, &proposed)?;
    let changes = describe_changes(&old, &new, &settings.directory);
    say!("policy set {} -> {}", old.version(), new.version());
    if changes.is_empty() {
        say!("no user gains or loses anything in the circumstances compared");
    }
    for change in &changes {
        say!("{change}");
    }
    Ok(())
}
