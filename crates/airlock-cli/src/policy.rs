//! `airlock policy validate|test|who-can|diff|explain|reload|proposals|approve`: check a folder of Cedar
//! policies before it takes effect, run the test cases written next to
//! them, and ask what a set (or a change to it) lets whom do.

use crate::terminal::{say, say_err};
use std::path::{Path, PathBuf};

use airlock_core::EntitlementId;
use airlock_policy::{run_tests, Directory, PolicySet};
use airlock_server::config::Settings;
use airlock_server::policy::{describe_changes, everyone, read_policy_dir, PolicySource};
use anyhow::{bail, Context};
use clap::Subcommand;

use crate::args::{client, Conn};
use crate::output;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Parse and validate every `*.cedar` file against the Airlock schema.
    Validate {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Run the cases in `DIR/tests.toml` against the policies in `DIR`.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Which policies decided a request, and how the set in force would now.
    Explain {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Who could request ENTITLEMENT (and how it would be decided), and who
    /// could approve it, among the config's users, for an ordinary request.
    WhoCan {
        entitlement: String,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
    /// Who gains or loses the ability to request, be auto-approved for or
    /// approve which entitlement if the config's policy folder were NEW_DIR.
    Diff {
        new_dir: PathBuf,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
    /// Make the server re-read its policy folder (admin). A set that fails
    /// validation is refused and the one in force stays; under the
    /// two-person rule a valid set is proposed, with what it changes.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Policy sets waiting for a second admin, with what each changes.
    Proposals {
        #[command(flatten)]
        conn: Conn,
    },
    /// Put a proposed policy set in force (an admin other than its proposer).
    Approve {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(command: PolicyCmd) -> anyhow::Result<()> {
    match command {
        PolicyCmd::Validate { dir } => validate(&dir),
        PolicyCmd::Test { dir } => test(&dir),
        PolicyCmd::WhoCan {
            entitlement,
            config,
        } => who_can(&config, &entitlement),
        PolicyCmd::Diff { new_dir, config } => diff(&config, &new_dir),
        PolicyCmd::Explain { id, conn } => {
            let explained = client(&conn)?.explain(&id).await?;
            if conn.json {
                println!(
                    "{}",
                    crate::terminal::json_safe(&serde_json::to_string_pretty(&explained)?)
                );
            } else {
                output::explain(&explained);
            }
            Ok(())
        }
        PolicyCmd::Reload { conn } => {
            let r = client(&conn)?.reload_policy().await?;
            output::json_or(&r, conn.json, output::policy_change)
        }
        PolicyCmd::Proposals { conn } => {
            let proposals = client(&conn)?.policy_proposals().await?;
            output::json_or(&proposals, conn.json, |all| {
                if all.is_empty() {
                    say!("no policy set is waiting for approval");
                }
                for p in all {
                    say!(
                        "{}  by {} at {}: {} -> {} (approved by {}/{}{})",
                        p.id,
                        p.proposed_by,
                        p.proposed_at,
                        p.base_version,
                        p.version,
                        p.approved_by.len(),
                        p.approvals_needed,
                        if p.approved_by.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", p.approved_by.join(", "))
                        }
                    );
                    for c in &p.changes {
                        say!("    {c}");
                    }
                }
            })
        }
        PolicyCmd::Approve { id, conn } => {
            let r = client(&conn)?.approve_policy_proposal(&id).await?;
            output::json_or(&r, conn.json, output::policy_change)
        }
    }
}

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
