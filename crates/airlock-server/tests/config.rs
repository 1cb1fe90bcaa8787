//! Config validation, data-driven: each bad config must fail with an error
//! naming the file, the line of the offending value and the field, so an
//! operator can go straight to it. One good config anchors the cases, and each
//! case changes one thing in it.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::path::Path;
use std::time::Duration;

use airlock_connectors::ssh::DEFAULT_EXTENSIONS;
use airlock_core::drift::DriftPolicy;
use airlock_server::config::{
    token_hash, ConfigError, ConnectorSettings, HttpLimits, Settings, DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_RECONCILE_EVERY,
};
use airlock_server::store::sql::Location;

const LABEL: &str = "etc/airlock.toml";

/// A valid config; every case below replaces one line of it.
const GOOD: &str = r#"[server]
listen = "127.0.0.1:9090"
data_dir = "state"
pending_timeout = "2h"
claim_lease = "2m"
grant_max_attempts = 3
retry_base = "500ms"
retry_cap = "1m"
revocation_overdue_after = "5m"
reconcile_every = "10m"
header_timeout = "5s"
body_timeout = "20s"
idle_timeout = "2m"
max_connections = 500

[audit]
checkpoint_key = "/etc/airlock/checkpoint.key"
checkpoint_every = "10m"

[users.alice]
groups = ["eng"]
token_sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

[users.bob]
groups = ["sre"]
roles = ["auditor"]

[users.carol]
groups = ["sre", "eng"]
roles = ["admin"]

[connectors.ldap]
type = "command"
program = "bin/ldap-group.sh"
args = ["--dry-run"]
env = { LDAP_URI = "ldaps://ldap.example" }
timeout = "20s"

[connectors.hook]
type = "webhook"
url = "https://hooks.example/airlock"
secret = "0123456789abcdef0123"

[entitlements.db-prod]
description = "production database, read-write"
requestable_by = ["eng"]
max_duration = "4h"
default_duration = "1h"
require_ticket = true
ticket_pattern = "^INC-[0-9]+$"
approvers = ["sre"]
approvals_required = 1
connector = "ldap"
drift = "revoke"
remind_after = "15m"
escalate_after = "30m"
escalate_to = ["eng"]

[entitlements.logs]
requestable_by = ["eng", "sre"]
max_duration = "30m"
auto_approve = true
require_reason = false
connector = "hook"

[connectors.ssh]
type = "ssh_ca"
principals = ["web-admin", "deploy"]
extensions = ["permit-pty", "login@example.com"]
source_address = ["10.0.0.0/8", "192.168.1.7"]
ca_key = "keys/airlock_ca"
krl = "/etc/ssh/airlock.krl"
timeout = "5s"
"#;

/// An identity provider, appended to `GOOD` by the cases that need one.
const OIDC: &str = r#"
[server.oidc]
issuer = "https://idp.example.com/oauth2/default"
audience = "api://airlock"
client_id = "0oa1airlock"
username_claim = "email"
admin_groups = ["airlock-admins"]
auditor_groups = ["audit"]
clock_skew = "30s"
jwks_refetch_after = "2m"
mfa_acr_values = ["urn:mfa"]
"#;

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::parse(LABEL, text, Path::new("/srv/airlock"))
}

/// `GOOD` with the first line starting with `from` replaced by `to` (which
/// may span several lines); returns the text and the 1-based line of `to`.
fn edit(from: &str, to: &str) -> (String, usize) {
    edit_in(GOOD, from, to)
}

/// Like [`edit`], in `base`.
fn edit_in(base: &str, from: &str, to: &str) -> (String, usize) {
    let mut lines: Vec<&str> = base.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(from))
        .unwrap_or_else(|| panic!("no line starts with {from:?}"));
    lines[at] = to;
    (lines.join("\n"), at + 1)
}

/// One bad config: the edit, then what the error must name. `line_offset`
/// moves the expected line from the edited one (for errors reported at the
/// table header rather than the value).
struct Case {
    from: &'static str,
    to: &'static str,
    line_offset: isize,
    field: &'static str,
    message: &'static str,
}

const fn case(
    from: &'static str,
    to: &'static str,
    field: &'static str,
    message: &'static str,
) -> Case {
    Case {
        from,
        to,
        line_offset: 0,
        field,
        message,
    }
}

/// Why `c` does not fail as it should, if it doesn't.
fn check(c: &Case) -> Result<(), String> {
    check_in(GOOD, c)
}

/// Like [`check`], with `base` as the good config.
fn check_in(base: &str, c: &Case) -> Result<(), String> {
    let (text, line) = edit_in(base, c.from, c.to);
    let line = line.checked_add_signed(c.line_offset).unwrap();
    let err = match parse(&text) {
        Ok(_) => return Err(format!("`{}` was accepted", c.to)),
        Err(e) => e,
    };
    let shown = err.to_string();
    let ConfigError::Invalid {
        path, line: got, ..
    } = &err
    else {
        return Err(format!("`{}`: unexpected error {shown}", c.to));
    };
    let problems = [
        (path != LABEL, "the file"),
        (
            *got != line || !shown.starts_with(&format!("{LABEL}:{line}:")),
            "the right line",
        ),
        (!shown.contains(c.field), "the field"),
        (!shown.contains(c.message), "the problem"),
    ];
    let missing: Vec<&str> = problems
        .iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, what)| *what)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`{}` (line {line}, field `{}`, saying `{}`): {shown} does not name {}",
            c.to,
            c.field,
            c.message,
            missing.join(", ")
        ))
    }
}

#[test]
fn the_good_config_parses_into_typed_settings() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(s.data_dir, Path::new("/srv/airlock/state"));
    assert_eq!(
        s.database,
        Location::Sqlite("/srv/airlock/state/airlock.db".into())
    );
    assert_eq!(s.lifecycle.pending_timeout, Duration::from_secs(7200));
    assert_eq!(s.lifecycle.claim_lease, Duration::from_secs(120));
    assert_eq!(s.lifecycle.grant_max_attempts, 3);
    assert_eq!(s.lifecycle.retry_base, Duration::from_millis(500));
    assert_eq!(s.lifecycle.retry_cap, Duration::from_secs(60));
    assert_eq!(s.revocation_overdue_after, Duration::from_secs(300));
    assert_eq!(s.reconcile_every, Some(Duration::from_secs(600)));
    assert!(s.oidc.is_none());
    let s = parse(&format!("{GOOD}{OIDC}")).unwrap();
    let oidc = s.oidc.as_ref().unwrap();
    assert_eq!(oidc.issuer, "https://idp.example.com/oauth2/default");
    assert_eq!(oidc.audiences, ["api://airlock", "0oa1airlock"]);
    assert_eq!(
        (oidc.username_claim.as_str(), oidc.groups_claim.as_str()),
        ("email", "groups")
    );
    assert_eq!(oidc.admin_groups.len() + oidc.auditor_groups.len(), 2);
    assert_eq!(oidc.clock_skew, Duration::from_secs(30));
    assert_eq!(oidc.refetch_after, Duration::from_secs(120));
    assert_eq!(oidc.client_id.as_deref(), Some("0oa1airlock"));
    assert_eq!(oidc.scopes, ["openid", "profile", "offline_access"]);
    assert_eq!(oidc.mfa_acr_values, ["urn:mfa"]);
    assert_eq!(
        s.audit.checkpoint_key,
        Path::new("/etc/airlock/checkpoint.key")
    );
    assert_eq!(
        s.audit.checkpoint_log,
        Path::new("/srv/airlock/state/audit/checkpoints.jsonl")
    );
    assert_eq!(s.audit.checkpoint_every, Duration::from_secs(600));
    // Only the command line accepts a broken chain, for one start.
    assert!(!s.audit.accept_broken_chain);
    assert_eq!(
        s.http,
        HttpLimits {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            max_connections: 500,
        }
    );
    let drift: Vec<(&str, DriftPolicy)> = s
        .catalog
        .entitlements
        .values()
        .map(|e| (e.id.as_str(), e.drift))
        .collect();
    assert_eq!(
        drift,
        [
            ("db-prod", DriftPolicy::Revoke),
            ("logs", DriftPolicy::Report)
        ],
        "`logs` reports by default"
    );
    let db_prod = s.catalog.entitlements.values().next().unwrap();
    assert_eq!(
        db_prod.waiting,
        airlock_core::catalog::WaitingTimes {
            remind_after: Some(Duration::from_secs(15 * 60)),
            escalate_after: Some(Duration::from_secs(30 * 60)),
            escalate_to: ["eng"]
                .into_iter()
                .map(|g| airlock_core::GroupName::parse(g).unwrap())
                .collect(),
            timeout: None,
        }
    );

    assert_eq!(s.catalog.users.len(), 3);
    assert_eq!(s.token_hashes.len(), 1);
    let alice = s.token_hashes.values().next().unwrap();
    assert_eq!(alice.as_str(), "alice");
    let hash = token_hash("hello");
    assert_eq!(s.token_hashes.get(&hash).map(|u| u.as_str()), Some("alice"));

    assert_eq!(s.catalog.entitlements.len(), 2);
    let db = s
        .catalog
        .entitlements
        .values()
        .find(|e| e.id.as_str() == "db-prod")
        .unwrap();
    assert_eq!(db.max_duration, Duration::from_secs(4 * 3600));
    assert_eq!(db.default_duration, Duration::from_secs(3600));
    assert!(db.ticket.required && db.ticket.pattern.as_ref().unwrap().is_match("INC-1"));
    assert_eq!(db.connector, "ldap");
    let logs = s
        .catalog
        .entitlements
        .values()
        .find(|e| e.id.as_str() == "logs")
        .unwrap();
    assert_eq!(
        logs.default_duration,
        Duration::from_secs(30 * 60),
        "defaults to min(max, 1h)"
    );
    assert!(!logs.reason_required);

    match &s.connectors["ldap"] {
        ConnectorSettings::Command {
            program,
            args,
            env,
            timeout,
        } => {
            assert_eq!(program, Path::new("/srv/airlock/bin/ldap-group.sh"));
            assert_eq!(args, &["--dry-run"]);
            assert_eq!(
                env,
                &[("LDAP_URI".to_owned(), "ldaps://ldap.example".to_owned())]
            );
            assert_eq!(*timeout, Duration::from_secs(20));
        }
        other => panic!("not a command connector: {other:?}"),
    }
    match &s.connectors["hook"] {
        ConnectorSettings::Webhook {
            url,
            secret,
            timeout,
        } => {
            assert_eq!(url, "https://hooks.example/airlock");
            assert_eq!(secret.expose(), b"0123456789abcdef0123");
            assert!(
                !format!("{secret:?}").contains("0123"),
                "the secret must not print"
            );
            assert_eq!(*timeout, Duration::from_secs(30));
        }
        other => panic!("not a webhook connector: {other:?}"),
    }
    match &s.connectors["ssh"] {
        ConnectorSettings::SshCa(ssh) => {
            assert_eq!(ssh.ca_key_path, Path::new("/srv/airlock/keys/airlock_ca"));
            assert_eq!(ssh.krl_path, Path::new("/etc/ssh/airlock.krl"));
            assert_eq!(ssh.state_dir, Path::new("/srv/airlock/state/ssh/state"));
            assert_eq!(ssh.principals, ["web-admin", "deploy"]);
            assert_eq!(ssh.extensions, ["permit-pty", "login@example.com"]);
            assert_eq!(
                ssh.source_address.as_deref(),
                Some("10.0.0.0/8,192.168.1.7")
            );
            assert_eq!(ssh.call_timeout, Duration::from_secs(5));
        }
        other => panic!("not an ssh_ca connector: {other:?}"),
    }
}

#[test]
fn an_ssh_ca_connector_keeps_its_files_under_the_data_dir_by_default() {
    let s = parse(
        "[server]\ndata_dir = \"./var\"\n\n[connectors.ssh]\ntype = \"ssh_ca\"\nprincipals = [\"web-admin\"]\n",
    )
    .unwrap();
    let ConnectorSettings::SshCa(ssh) = &s.connectors["ssh"] else {
        panic!("not an ssh_ca connector: {:?}", s.connectors["ssh"]);
    };
    assert_eq!(
        ssh.ca_key_path,
        Path::new("/srv/airlock/var/ssh/ca_ed25519")
    );
    assert_eq!(ssh.krl_path, Path::new("/srv/airlock/var/ssh/revoked.krl"));
    assert_eq!(ssh.state_dir, Path::new("/srv/airlock/var/ssh/state"));
    assert_eq!(ssh.principals, ["web-admin"]);
    assert_eq!(ssh.extensions, DEFAULT_EXTENSIONS);
    assert_eq!(ssh.source_address, None);
    assert_eq!(ssh.call_timeout, Duration::from_secs(10));
    assert_eq!(s.connectors["ssh"].timeout(), Duration::from_secs(10));
}

#[test]
fn an_empty_config_gets_defaults() {
    let s = parse("").unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        s.database,
        Location::Sqlite("/srv/airlock/airlock-data/airlock.db".into())
    );
    assert!(s.catalog.entitlements.is_empty() && s.connectors.is_empty());
    assert_eq!(s.reconcile_every, Some(DEFAULT_RECONCILE_EVERY));
    assert_eq!(
        s.audit.checkpoint_key,
        Path::new("/srv/airlock/airlock-data/audit/checkpoint.key")
    );
    assert_eq!(s.audit.checkpoint_every, DEFAULT_CHECKPOINT_EVERY);
    assert_eq!(s.http, HttpLimits::default());
    assert_eq!(s.http.header_timeout, Duration::from_secs(10));
    assert!(s.oidc.is_none(), "no identity provider unless configured");
}

#[test]
fn bad_oidc_tables_name_file_line_and_field() {
    let cases = [
        case(
            "issuer",
            "issuer = \"http://idp.example.com\"",
            "server.oidc.issuer",
            "must be https",
        ),
        case(
            "issuer",
            "issuer = \"idp\"",
            "server.oidc.issuer",
            "`idp` is not a URL",
        ),
        case(
            "audience",
            "audience = \" \"",
            "server.oidc.audience",
            "must not be empty",
        ),
        case(
            "username_claim",
            "username_claim = \"\"",
            "server.oidc.username_claim",
            "must not be empty",
        ),
        case(
            "admin_groups",
            "admin_groups = [\"Domain Admins\"]",
            "server.oidc.admin_groups",
            "`Domain Admins`",
        ),
        case(
            "clock_skew",
            "clock_skew = \"1h\"",
            "server.oidc.clock_skew",
            "between 0s and 5m",
        ),
        case(
            "jwks_refetch_after",
            "jwks_refetch_after = \"100ms\"",
            "server.oidc.jwks_refetch_after",
            "between 1s and 1h",
        ),
        case(
            "clock_skew",
            "clok_skew = \"1s\"",
            "server.oidc",
            "unknown field `clok_skew`",
        ),
        case(
            "mfa_acr_values",
            "mfa_acr_values = [\"\"]",
            "server.oidc.mfa_acr_values",
            "must not be empty",
        ),
        case(
            "mfa_acr_values",
            "scopes = [\"profile\"]",
            "server.oidc.scopes",
            "must include `openid`",
        ),
    ];
    let base = format!("{GOOD}{OIDC}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_in(&base, c).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (text, _) = edit_in(&base, "issuer", "");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("server.oidc") && err.contains("missing field `issuer`"),
        "{err}"
    );
}

/// `require_mfa_within` compiles to a forbid the step-up reads
/// (`@mfa_max_age`, in seconds); its bounds are checked like any duration.
#[test]
fn require_mfa_within_compiles_to_an_annotated_forbid() {
    let (text, _) = edit(
        "auto_approve = true",
        "auto_approve = true\nrequire_mfa_within = \"15m\"",
    );
    let s = parse(&text).unwrap();
    let generated: String = s
        .policy_source
        .generated
        .iter()
        .map(|(_, text)| text.as_str())
        .collect();
    assert!(
        generated.contains(
            "@id(\"config.logs.mfa\")\n@mfa_max_age(\"900\")\n@reason(\"multi-factor authentication within the last 900 seconds\")\nforbid"
        )
            && generated.contains("context.mfa_age_seconds <= 900"),
        "{generated}"
    );
    assert!(s.policy_source.load().unwrap().demands_mfa());
    let bad = case(
        "require_mfa_within",
        "require_mfa_within = \"0s\"",
        "entitlements.logs.require_mfa_within",
        "between 1s and 30days",
    );
    check_in(&text, &bad).unwrap();
}

/// With an identity provider, group members come from its tokens: shorthand
/// rules may name groups no config user is in.
#[test]
fn with_an_identity_provider_groups_need_no_config_members() {
    let (text, _) = edit(
        "requestable_by = [\"eng\"]",
        "requestable_by = [\"idp-only\"]",
    );
    assert!(parse(&text).is_err());
    let text = text.replace("approvals_required = 1", "approvals_required = 5");
    let s = parse(&format!("{text}{OIDC}")).unwrap();
    assert!(s.oidc.is_some());
    let zero = text.replace("approvals_required = 5", "approvals_required = 0");
    let err = parse(&format!("{zero}{OIDC}")).unwrap_err().to_string();
    assert!(
        err.contains("approvals_required: must be at least 1"),
        "{err}"
    );
}

#[test]
fn scheduled_reconciliation_can_be_switched_off() {
    for off in ["off", "0s", "0"] {
        let (text, _) = edit("reconcile_every", &format!("reconcile_every = \"{off}\""));
        assert_eq!(parse(&text).unwrap().reconcile_every, None, "{off}");
    }
    let (text, _) = edit("reconcile_every", "reconcile_every = \"1h 30m\"");
    assert_eq!(
        parse(&text).unwrap().reconcile_every,
        Some(Duration::from_secs(5400))
    );
}

#[test]
fn bad_configs_name_file_line_and_field() {
    let cases = [
        // Waiting times.
        case(
            "remind_after",
            "remind_after = \"3h\"",
            "entitlements.db-prod.remind_after",
            "less than the request's time-out (2h, pending_timeout)",
        ),
        case(
            "escalate_after",
            "escalate_after = \"2x\"",
            "entitlements.db-prod.escalate_after",
            "`2x`",
        ),
        case(
            "escalate_to",
            "escalate_to = [\"nobody\"]",
            "entitlements.db-prod.escalate_to",
            "group `nobody` has no members",
        ),
        // The entitlement's own time-out bounds the steps before it.
        Case {
            from: "remind_after",
            to: "pending_timeout = \"10m\"",
            line_offset: 1,
            field: "entitlements.db-prod.escalate_after",
            message: "less than the request's time-out (10m, pending_timeout)",
        },
        // Entitlements.
        case(
            "connector = \"ldap\"",
            "connector = \"nope\"",
            "entitlements.db-prod.connector",
            "no connector named `nope`",
        ),
        case(
            "max_duration = \"4h\"",
            "max_duration = \"5x\"",
            "entitlements.db-prod.max_duration",
            "`5x`",
        ),
        case(
            "max_duration = \"4h\"",
            "max_duration = \"0s\"",
            "entitlements.db-prod.max_duration",
            "at least 1s",
        ),
        case(
            "default_duration",
            "default_duration = \"5h\"",
            "entitlements.db-prod.default_duration",
            "between 1s and max_duration",
        ),
        case(
            "approvals_required",
            "approvals_required = 3",
            "entitlements.db-prod.approvals_required",
            "the 2 users",
        ),
        case(
            "approvals_required",
            "approvals_required = 0",
            "entitlements.db-prod.approvals_required",
            "between 1",
        ),
        case(
            "requestable_by = [\"eng\"]",
            "requestable_by = [\"ghosts\"]",
            "entitlements.db-prod.requestable_by",
            "group `ghosts` has no members",
        ),
        case(
            "approvers = [\"sre\"]",
            "approvers = [\"sre\", \"nobody\"]",
            "entitlements.db-prod.approvers",
            "group `nobody` has no members",
        ),
        case(
            "approvers = [\"sre\"]",
            "approvers = [\"s r e\"]",
            "entitlements.db-prod.approvers",
            "`s r e`",
        ),
        case(
            "ticket_pattern",
            "ticket_pattern = \"^INC-[0-9+$\"",
            "entitlements.db-prod.ticket_pattern",
            "invalid regular expression",
        ),
        case(
            "require_ticket",
            "require_ticket = \"yes\"",
            "require_ticket",
            "invalid type",
        ),
        case("description", "colour = \"red\"", "colour", "unknown field"),
        case(
            "drift = \"revoke\"",
            "drift = \"remove\"",
            "entitlements.db-prod.drift",
            "unknown setting `remove` (known: report, revoke)",
        ),
        case(
            "drift = \"revoke\"",
            "drift = true",
            "drift",
            "invalid type",
        ),
        Case {
            line_offset: -1,
            ..case(
                "requestable_by = [\"eng\", \"sre\"]",
                "requestable_by = []",
                "entitlements.logs.requestable_by",
                "at least one group",
            )
        },
        // Users.
        case(
            "roles = [\"auditor\"]",
            "roles = [\"root\"]",
            "users.bob.roles",
            "unknown role `root` (known: admin, auditor, checker, reporter)",
        ),
        case(
            "token_sha256",
            "token_sha256 = \"abc123\"",
            "users.alice.token_sha256",
            "64 hex characters",
        ),
        case(
            "token_sha256",
            "token_sha256 = \"zcf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"",
            "users.alice.token_sha256",
            "64 hex characters",
        ),
        case(
            "groups = [\"sre\"]",
            "groups = [\"s/re\"]",
            "users.bob.groups",
            "`s/re`",
        ),
        case(
            "groups = [\"sre\"]",
            "group = [\"sre\"]",
            "group",
            "unknown field",
        ),
        // Server.
        case(
            "listen",
            "listen = \"localhost\"",
            "server.listen",
            "`localhost`",
        ),
        case(
            "pending_timeout",
            "pending_timeout = \"soon\"",
            "server.pending_timeout",
            "`soon`",
        ),
        case(
            "retry_base",
            "retry_base = \"fast\"",
            "server.retry_base",
            "`fast`",
        ),
        case(
            "retry_cap",
            "retry_cap = \"1 fortnight\"",
            "server.retry_cap",
            "not a duration",
        ),
        case(
            "grant_max_attempts",
            "grant_max_attempts = 0",
            "server.grant_max_attempts",
            "at least 1",
        ),
        case(
            "grant_max_attempts",
            "grant_max_attempts = -1",
            "grant_max_attempts",
            "invalid value",
        ),
        case(
            "revocation_overdue_after",
            "revocation_overdue_after = \"1y2\"",
            "server.revocation_overdue_after",
            "`1y2`",
        ),
        case(
            "reconcile_every",
            "reconcile_every = \"sometimes\"",
            "server.reconcile_every",
            "`sometimes`",
        ),
        case(
            "reconcile_every",
            "reconcile_every = \"500ms\"",
            "server.reconcile_every",
            "at least 1s",
        ),
        case(
            "checkpoint_every",
            "checkpoint_every = \"soon\"",
            "audit.checkpoint_every",
            "`soon`",
        ),
        case(
            "checkpoint_every",
            "checkpoint_every = \"500ms\"",
            "audit.checkpoint_every",
            "at least 1s",
        ),
        case(
            "checkpoint_key",
            "checkpoint_kye = \"k\"",
            "checkpoint_kye",
            "unknown field",
        ),
        case(
            "header_timeout",
            "header_timeout = \"soon\"",
            "server.header_timeout",
            "`soon`",
        ),
        case(
            "header_timeout",
            "header_timeout = \"10ms\"",
            "server.header_timeout",
            "must be between 100ms and 1h",
        ),
        case(
            "body_timeout",
            "body_timeout = \"2h\"",
            "server.body_timeout",
            "must be between 100ms and 1h",
        ),
        case(
            "idle_timeout",
            "idle_timeout = \"0s\"",
            "server.idle_timeout",
            "`0s` must be between",
        ),
        case(
            "max_connections",
            "max_connections = 0",
            "server.max_connections",
            "`0` must be between 1 and 1000000",
        ),
        case(
            "max_connections",
            "max_connections = -5",
            "server.max_connections",
            "invalid value",
        ),
        case(
            "listen",
            "lisen = \"127.0.0.1:1\"",
            "lisen",
            "unknown field",
        ),
        // Syntax.
        case(
            "retry_base",
            "retry_base = \"500ms",
            "",
            "invalid basic string",
        ),
    ];
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Connector settings are checked after toml has built the connector, so
/// their errors point at the connector's table header; hence the offsets.
#[test]
fn bad_connectors_name_file_line_and_field() {
    let at_header = |offset: isize, c: Case| Case {
        line_offset: offset,
        ..c
    };
    let cases = [
        at_header(
            -5,
            case(
                "timeout = \"20s\"",
                "timeout = \"2m\"",
                "connectors.ldap.timeout",
                "shorter than server.claim_lease",
            ),
        ),
        at_header(
            -5,
            case(
                "timeout = \"20s\"",
                "timeout = \"eventually\"",
                "connectors.ldap.timeout",
                "`eventually`",
            ),
        ),
        at_header(
            -2,
            case(
                "url = ",
                "url = \"ftp://hooks.example\"",
                "connectors.hook.url",
                "http://",
            ),
        ),
        at_header(
            -3,
            case(
                "secret = ",
                "secret = \"short\"",
                "connectors.hook.secret",
                "at least 16 characters",
            ),
        ),
        at_header(
            -3,
            case(
                "secret = ",
                "secret_env = \"AIRLOCK_TEST_UNSET_SECRET_VAR\"",
                "connectors.hook.secret_env",
                "not set",
            ),
        ),
        at_header(
            -4,
            case(
                "env = { LDAP_URI",
                "pass_env = [\"AIRLOCK_TEST_UNSET_PASS_VAR\"]",
                "connectors.ldap.pass_env",
                "`AIRLOCK_TEST_UNSET_PASS_VAR` is not set",
            ),
        ),
        at_header(
            -3,
            case(
                "secret = ",
                "# no secret",
                "connectors.hook.secret",
                "exactly one of",
            ),
        ),
        at_header(
            -2,
            case(
                "principals = ",
                "principals = [\"web-admin\", \"web admin\"]",
                "connectors.ssh.principals",
                "principal `web admin` must be",
            ),
        ),
        at_header(
            -2,
            case(
                "principals = ",
                "principals = []",
                "connectors.ssh.principals",
                "at least one principal",
            ),
        ),
        at_header(
            -3,
            case(
                "extensions = ",
                "extensions = [\"permit-everything\"]",
                "connectors.ssh.extensions",
                "`permit-everything`",
            ),
        ),
        at_header(
            -4,
            case(
                "source_address = ",
                "source_address = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
                "connectors.ssh.source_address",
                "`10.0.0.0/33`",
            ),
        ),
        at_header(
            -4,
            case(
                "source_address = ",
                "source_address = []",
                "connectors.ssh.source_address",
                "at least one address",
            ),
        ),
        at_header(
            -7,
            case(
                "timeout = \"5s\"",
                "timeout = \"0s\"",
                "connectors.ssh.timeout",
                "more than zero",
            ),
        ),
        at_header(
            -7,
            case(
                "timeout = \"5s\"",
                "timeout = \"5m\"",
                "connectors.ssh.timeout",
                "shorter than server.claim_lease",
            ),
        ),
        at_header(
            -2,
            case(
                "principals = ",
                "# no principals",
                "connectors.ssh",
                "missing field `principals`",
            ),
        ),
        case(
            "type = \"command\"",
            "type = \"carrier-pigeon\"",
            "connectors.ldap.type",
            "unknown variant",
        ),
        at_header(
            -2,
            case(
                "program = ",
                "program = 7",
                "connectors.ldap",
                "invalid type",
            ),
        ),
    ];
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn auto_approve_takes_no_approvers_and_tokens_are_unique() {
    let text = GOOD.replace(
        "auto_approve = true",
        "auto_approve = true\napprovers = [\"sre\"]",
    );
    let shown = parse(&text).unwrap_err().to_string();
    assert!(
        shown.contains("entitlements.logs.approvers") && shown.contains("auto_approve"),
        "{shown}"
    );

    // bob reuses alice's token: users are checked in name order, so bob's
    // line (the second with the hash) is the one at fault.
    let hash = token_hash("hello");
    let text = GOOD.replace(
        "roles = [\"auditor\"]",
        &format!("roles = [\"auditor\"]\ntoken_sha256 = \"{hash}\""),
    );
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&hash))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 2);
    let shown = parse(&text).unwrap_err().to_string();
    assert!(
        shown.starts_with(&format!("{LABEL}:{}:", lines[1])),
        "{shown}"
    );
    assert!(
        shown.contains("users.bob.token_sha256") && shown.contains("already used by another user"),
        "{shown}"
    );
}

#[test]
fn policy_inputs_are_read_and_checked() {
    let s = parse(
        "[server]\nmfa_header = \"X-Auth-MFA-At\"\n\n[policy]\ndir = \"rules\"\ntwo_person = true\n\n\
         [users.ann]\ngroups = [\"eng\"]\nteam = \"payments\"\nemployment = \"contractor\"\non_call = true\n\n\
         [connectors.c]\ntype = \"command\"\nprogram = \"/bin/true\"\n\n\
         [entitlements.db]\nmax_duration = \"1h\"\nsensitivity = 3\nowner_group = \"eng\"\nconnector = \"c\"\n",
    )
    .unwrap();
    assert_eq!(s.mfa_header.as_deref(), Some("x-auth-mfa-at"));
    assert_eq!(
        s.policy_source.dir.as_deref(),
        Some(Path::new("/srv/airlock/rules"))
    );
    assert!(s.policy_two_person);
    // No shorthand on `db`: only the folder's policies route it.
    assert!(s.policy_source.generated.is_empty());
    let ann = &s.directory.users[&airlock_core::UserId::parse("ann").unwrap()];
    assert_eq!(
        (ann.team.as_str(), ann.employment.as_str(), ann.on_call),
        ("payments", "contractor", true)
    );
    let db = &s.directory.entitlements[&airlock_core::EntitlementId::parse("db").unwrap()];
    assert_eq!(db.sensitivity, 3);

    for (text, field) in [
        ("[server]\nmfa_header = \"X MFA\"\n", "server.mfa_header"),
        (
            "[connectors.c]\ntype = \"command\"\nprogram = \"/bin/true\"\n\n[entitlements.db]\nrequestable_by = []\nmax_duration = \"1h\"\nsensitivity = 7\nconnector = \"c\"\n",
            "entitlements.db.requestable_by",
        ),
        (
            "[policy]\ndir = \"rules\"\n\n[connectors.c]\ntype = \"command\"\nprogram = \"/bin/true\"\n\n[entitlements.db]\nmax_duration = \"1h\"\nsensitivity = 7\nconnector = \"c\"\n",
            "entitlements.db.sensitivity",
        ),
        ("[users.ann]\nemployment = \" \"\n", "users.ann.employment"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}

/// Notifications, appended to `GOOD` by the cases that need them.
const NOTIFY: &str = r#"
[notifications]
approvers = ["mail", "chat"]
requester = ["mail"]
security = ["siem"]
expiry_warning = "10m"
retry_base = "2s"
retry_cap = "5m"
give_up_after = "12h"

[notifications.entitlements.db-prod]
approvers = ["chat"]
requester = []

[notifications.channels.mail]
type = "smtp"
host = "smtp.example.com"
tls = "starttls"
from = "Airlock <airlock@example.com>"
to = ["security@example.com"]
timeout = "5s"

[notifications.channels.chat]
type = "slack"
url = "https://hooks.slack.example/services/T0/B0/xyz"

[notifications.channels.siem]
type = "webhook"
url = "https://siem.example/airlock"
secret = "fedcba9876543210fedc"
"#;

#[test]
fn notifications_parse_into_routing_channels_and_retries() {
    use airlock_core::notify::Audience;
    use airlock_server::config::{ChannelSettings, SmtpTls};
    let base = format!(
        "{}{NOTIFY}",
        GOOD.replace(
            "[users.bob]\n",
            "[users.bob]\nemail = \"Bob <bob@example.com>\"\n"
        )
    );
    let s = parse(&base).unwrap();
    let n = &s.notifications;
    let db = airlock_core::EntitlementId::parse("db-prod").unwrap();
    let logs = airlock_core::EntitlementId::parse("logs").unwrap();
    assert_eq!(
        n.routing.channels(&logs, Audience::Approvers),
        ["mail", "chat"]
    );
    assert_eq!(n.routing.channels(&db, Audience::Approvers), ["chat"]);
    assert!(n.routing.channels(&db, Audience::Requester).is_empty());
    assert_eq!(n.routing.channels(&db, Audience::Security), ["siem"]);
    assert_eq!(n.routing.expiry_warning, Some(Duration::from_secs(600)));
    assert_eq!(n.routing.overdue_after, Duration::from_secs(300));
    assert_eq!(n.retry.base, Duration::from_secs(2));
    assert_eq!(n.retry.give_up_after, Duration::from_secs(12 * 3600));
    let Some(ChannelSettings::Smtp(mail)) = n.channels.get("mail") else {
        panic!("{:?}", n.channels)
    };
    assert_eq!((mail.tls, mail.port), (SmtpTls::Starttls, 587));
    assert_eq!(mail.to, ["security@example.com"]);
    let bob = airlock_core::UserId::parse("bob").unwrap();
    assert_eq!(
        n.emails.get(&bob).map(String::as_str),
        Some("Bob <bob@example.com>")
    );
    // The Slack URL is a secret: it never prints.
    assert!(!format!("{:?}", n.channels).contains("xyz"));
    // No table: nothing is routed or sent.
    assert!(parse(GOOD).unwrap().notifications.channels.is_empty());
}

#[test]
fn bad_notification_tables_name_file_line_and_field() {
    // Errors about a channel's fields point at its table's header, `back`
    // lines above the edited one.
    let at_table = |c: Case, back: isize| Case {
        line_offset: back,
        ..c
    };
    let cases = [
        case(
            "approvers = [\"mail\", \"chat\"]",
            "approvers = [\"mail\", \"pager\"]",
            "notifications.approvers",
            "no channel `pager`",
        ),
        case(
            "requester = []",
            "requester = [\"nope\"]",
            "notifications.entitlements.db-prod.requester",
            "no channel `nope`",
        ),
        case(
            "[notifications.entitlements.db-prod]",
            "[notifications.entitlements.db-test]",
            "notifications.entitlements",
            "no entitlement `db-test`",
        ),
        case(
            "retry_cap = \"5m\"",
            "retry_cap = \"1s\"",
            "notifications.retry_cap",
            "at least retry_base",
        ),
        case(
            "expiry_warning",
            "expiry_warning = \"soon\"",
            "notifications.expiry_warning",
            "`soon` is not a duration",
        ),
        at_table(
            case(
                "tls = \"starttls\"",
                "tls = \"none\"",
                "notifications.channels.mail.tls",
                "allowed only to a relay on this machine",
            ),
            -3,
        ),
        at_table(
            case(
                "tls = \"starttls\"",
                "tls = \"ssl\"",
                "notifications.channels.mail.tls",
                "not one of `starttls`, `tls`, `none`",
            ),
            -3,
        ),
        at_table(
            case(
                "from = ",
                "from = \"not an address\"",
                "notifications.channels.mail.from",
                "is not an email address",
            ),
            -4,
        ),
        at_table(
            case(
                "to = ",
                "username = \"airlock\"",
                "notifications.channels.mail.username",
                "both `username` and `password_env`",
            ),
            -5,
        ),
        at_table(
            case(
                "url = \"https://hooks.slack",
                "url_env = \"AIRLOCK_TEST_UNSET_SLACK_URL\"",
                "notifications.channels.chat.url_env",
                "`AIRLOCK_TEST_UNSET_SLACK_URL` is not set",
            ),
            -2,
        ),
        at_table(
            case(
                "secret = \"fedcba98",
                "secret = \"short\"",
                "notifications.channels.siem.secret",
                "at least 16 characters",
            ),
            -3,
        ),
        case(
            "[notifications.channels.chat]",
            "[notifications.channels.Chat]",
            "notifications.channels.Chat",
            "only a-z, 0-9",
        ),
    ];
    let base = format!("{GOOD}{NOTIFY}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_in(&base, c).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (text, _) = edit_in(&base, "[users.bob]", "[users.bob]\nemail = \"bob\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("users.bob.email") && err.contains("`bob` is not an email address"),
        "{err}"
    );
}

/// A service principal, appended to `GOOD` by the cases about services.
const SERVICE: &str = r#"
[services.deploy]
groups = ["eng"]
owners = ["alice"]
team = "platform"
"#;

#[test]
fn services_and_the_token_lifetime_are_read_and_checked() {
    use airlock_core::catalog::PrincipalKind;
    let with_service = format!("{GOOD}{SERVICE}");
    let settings = parse(&with_service).unwrap();
    let deploy = airlock_core::UserId::parse("deploy").unwrap();
    let service = settings.catalog.user(&deploy).unwrap();
    assert_eq!(service.kind, PrincipalKind::Service);
    assert!(service.roles.is_empty());
    assert_eq!(
        settings.catalog.owners_of(&deploy),
        [airlock_core::UserId::parse("alice").unwrap()]
    );
    assert_eq!(
        settings.directory.users[&deploy].kind,
        PrincipalKind::Service
    );
    assert!(!settings.token_hashes.values().any(|u| *u == deploy));
    assert_eq!(
        settings.token_max_lifetime,
        Duration::from_secs(90 * 86_400)
    );
    let (text, _) = edit(
        "max_connections",
        "max_connections = 500\ntoken_max_lifetime = \"30d\"",
    );
    assert_eq!(
        parse(&text).unwrap().token_max_lifetime,
        Duration::from_secs(30 * 86_400)
    );
    // An application that gates privileged actions checks others' grants.
    let checker = with_service.replace(
        "team = \"platform\"",
        "team = \"platform\"\nroles = [\"checker\"]",
    );
    let settings = parse(&checker).unwrap();
    assert_eq!(
        settings.catalog.user(&deploy).unwrap().roles,
        [airlock_core::catalog::Role::Checker].into()
    );
    // An SSH host's log shipper posts sshd's lines to grants.
    let reporter = with_service.replace(
        "team = \"platform\"",
        "team = \"platform\"\nroles = [\"reporter\", \"checker\"]",
    );
    assert_eq!(
        parse(&reporter)
            .unwrap()
            .catalog
            .user(&deploy)
            .unwrap()
            .roles,
        [
            airlock_core::catalog::Role::Checker,
            airlock_core::catalog::Role::Reporter
        ]
        .into()
    );

    let cases = [
        case(
            "team = \"platform\"",
            "roles = [\"admin\"]",
            "services.deploy.roles",
            "`admin` is not a role a service may have (only `checker` and `reporter`)",
        ),
        case(
            "owners = [\"alice\"]",
            "owners = [\"nobody\"]",
            "services.deploy.owners",
            "`nobody` is not a user of this config",
        ),
        case(
            "[services.deploy]",
            "[services.alice]",
            "services.alice",
            "already a user",
        ),
        case(
            "team = \"platform\"",
            "token_sha256 = \"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"",
            "token_sha256",
            "unknown field",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_in(&with_service, c).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    let lifetime = check(&case(
        "max_connections",
        "token_max_lifetime = \"400d\"",
        "server.token_max_lifetime",
        "must be between 1m and",
    ));
    assert_eq!(lifetime, Ok(()));
}

/// `GOOD` with an access-review campaign.
const REVIEWS: &str = r#"
[access_reviews.quarterly]
every = "90d"
reviewers = ["sre"]
due_within = "14d"
remind_after = "7d"
escalate_after = "10d"
escalate_to = ["leads"]
include = ["standing"]
"#;

#[test]
fn access_review_tables_are_read_and_checked() {
    let base = format!("{GOOD}{REVIEWS}");
    let settings = parse(&base).unwrap();
    let t = &settings.access_reviews["quarterly"];
    assert_eq!(t.every, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(t.due_within, Duration::from_secs(14 * 86_400));
    assert_eq!(t.remind_after, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!((t.eligibilities, t.standing), (false, true));
    assert_eq!(
        t.reviewers.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        ["sre"]
    );
    // Defaults: on demand only, two weeks, both kinds of item.
    let minimal = parse(&format!(
        "{GOOD}\n[access_reviews.adhoc]\nreviewers = [\"sre\"]\n"
    ))
    .unwrap();
    let t = &minimal.access_reviews["adhoc"];
    assert_eq!(
        (t.every, t.remind_after, t.escalate_after),
        (None, None, None)
    );
    assert_eq!(t.due_within, Duration::from_secs(14 * 86_400));
    assert!(t.eligibilities && t.standing);

    let cases = [
        case(
            "every",
            "every = \"1h\"",
            "access_reviews.quarterly.every",
            "at least a day",
        ),
        case(
            "reviewers",
            "reviewers = []",
            "access_reviews.quarterly.reviewers",
            "at least one group",
        ),
        case(
            "reviewers",
            "reviewers = [\"a b\"]",
            "access_reviews.quarterly.reviewers",
            "`a b`",
        ),
        case(
            "due_within",
            "due_within = \"soon\"",
            "access_reviews.quarterly.due_within",
            "`soon`",
        ),
        // Named at the escalation time, the line before.
        Case {
            from: "escalate_to = [\"leads\"]",
            to: "escalate_to = []",
            line_offset: -1,
            field: "access_reviews.quarterly.escalate_after",
            message: "set escalate_to too",
        },
        case(
            "include",
            "include = [\"holders\"]",
            "access_reviews.quarterly.include",
            "`holders` is neither `eligibilities` nor `standing`",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_in(&base, c).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    // escalate_to without escalate_after is named at the table.
    let (text, _) = edit_in(&base, "escalate_after = \"10d\"", "");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("access_reviews.quarterly.escalate_to: set escalate_after too"),
        "{err}"
    );
}

/// `GOOD` with a bundle of two entitlements.
const BUNDLES: &str = r#"
[bundles.incident-kit]
description = "what an incident needs"
entitlements = ["db-prod", "logs"]
"#;

#[test]
fn bundle_tables_are_read_and_checked() {
    let base = format!("{GOOD}{BUNDLES}");
    let settings = parse(&base).unwrap();
    let b = &settings.catalog.bundles["incident-kit"];
    assert_eq!(b.description, "what an incident needs");
    assert_eq!(
        b.entitlements
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>(),
        ["db-prod", "logs"]
    );
    let cases = [
        case(
            "entitlements",
            "entitlements = [\"db-prod\", \"log\"]",
            "bundles.incident-kit.entitlements",
            "no entitlement `log`; did you mean `logs`?",
        ),
        case(
            "entitlements",
            "entitlements = [\"db-prod\", \"db-prod\"]",
            "bundles.incident-kit.entitlements",
            "`db-prod` is listed twice",
        ),
        case(
            "entitlements",
            "entitlements = [\"db-prod\"]",
            "bundles.incident-kit.entitlements",
            "at least two entitlements",
        ),
        case(
            "entitlements",
            "entitlements = [\"db prod\", \"logs\"]",
            "bundles.incident-kit.entitlements",
            "`db prod`",
        ),
        case(
            "description",
            "descripton = \"typo\"",
            "descripton",
            "unknown field",
        ),
        Case {
            from: "[bundles.incident-kit]",
            to: "[bundles.logs]",
            line_offset: 0,
            field: "bundles.logs",
            message: "an entitlement has this name too",
        },
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_in(&base, c).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `GOOD` with two vendors: `vic` (sponsored by alice) and `val`
/// (sponsored by carol), and `logs` open to externals.
fn with_vendors() -> String {
    let (text, _) = edit(
        "auto_approve = true",
        "auto_approve = true\nopen_to_externals = true",
    );
    format!(
        "{text}\n\n[users.vic]\ngroups = [\"eng\"]\nemployment = \"vendor\"\nsponsor = \"alice\"\n\
         account_expires = \"2027-03-31T00:00:00Z\"\n\n[users.val]\nemployment = \"vendor\"\n\
         sponsor = \"carol\"\naccount_expires = 2027-06-30T12:00:00+02:00\n"
    )
}

#[test]
fn a_vendor_has_an_internal_sponsor_and_an_account_end() {
    let base = with_vendors();
    let s = parse(&base).unwrap();
    let terms = |name: &str| {
        s.catalog
            .users
            .values()
            .find(|u| u.id.as_str() == name)
            .and_then(|u| u.external.clone())
    };
    let vic = terms("vic").unwrap();
    assert_eq!(vic.sponsor.as_str(), "alice");
    assert_eq!(vic.account_expires.to_rfc3339(), "2027-03-31T00:00:00.000Z");
    // A TOML date-time with an offset is taken as well.
    assert_eq!(
        terms("val").unwrap().account_expires.to_rfc3339(),
        "2027-06-30T10:00:00.000Z"
    );
    assert_eq!(terms("alice"), None);
    let open = |name: &str| {
        s.catalog
            .entitlements
            .values()
            .find(|e| e.id.as_str() == name)
            .unwrap()
            .open_to_externals
    };
    assert!(open("logs") && !open("db-prod"), "closed unless said");
    // Policies see a vendor as one, with the sponsor.
    let facts = s
        .directory
        .users
        .values()
        .find(|u| u.id.as_str() == "vic")
        .unwrap();
    assert_eq!(
        (
            facts.employment.as_str(),
            facts.sponsor.as_ref().map(|s| s.as_str())
        ),
        ("vendor", Some("alice"))
    );

    let cases = [
        case(
            "sponsor = \"alice\"",
            "sponsor = \"vic\"",
            "users.vic.sponsor",
            "`vic` cannot sponsor themselves",
        ),
        case(
            "sponsor = \"alice\"",
            "sponsor = \"zed\"",
            "users.vic.sponsor",
            "no user `zed` in [users]",
        ),
        case(
            "sponsor = \"alice\"",
            "sponsor = \"val\"",
            "users.vic.sponsor",
            "`val` is a vendor too",
        ),
        case(
            "sponsor = \"alice\"",
            "sponsor = \"a b\"",
            "users.vic.sponsor",
            "`a b`",
        ),
        case(
            "account_expires = \"2027-03-31T00:00:00Z\"",
            "account_expires = \"end of march\"",
            "users.vic.account_expires",
            "`end of march` is not an RFC 3339 time",
        ),
        case(
            "account_expires = \"2027-03-31T00:00:00Z\"",
            "account_expires = 2027-03-31",
            "users.vic.account_expires",
            "needs a date, a time and a UTC offset",
        ),
        case(
            "account_expires = \"2027-03-31T00:00:00Z\"",
            "account_expires = 20270331",
            "users.vic.account_expires",
            "must be an RFC 3339 time, not a integer",
        ),
        // A vendor without a sponsor is named where the account end is.
        Case {
            from: "sponsor = \"alice\"",
            to: "",
            line_offset: 1,
            field: "users.vic.sponsor",
            message: "a vendor needs a sponsor",
        },
        Case {
            from: "account_expires = \"2027-03-31T00:00:00Z\"",
            to: "",
            line_offset: -1,
            field: "users.vic.account_expires",
            message: "a vendor needs an account end",
        },
        // Only a vendor has either.
        Case {
            from: "employment = \"vendor\"",
            to: "employment = \"contractor\"",
            line_offset: 1,
            field: "users.vic.sponsor",
            message: "only a vendor (employment = \"vendor\") has a sponsor",
        },
        case(
            "open_to_externals = true",
            "open_to_externals = \"yes\"",
            "open_to_externals",
            "invalid type",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_in(&base, c).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    // With an identity provider the sponsor may be someone only it knows
    // (checked at each sign-in).
    let (text, _) = edit_in(&base, "sponsor = \"alice\"", "sponsor = \"zed\"");
    parse(&format!("{text}{OIDC}")).unwrap();
}

/// The ticket webhook's table, appended to `GOOD` by the cases about it.
const TICKETS: &str = r#"
[tickets]
secret = "ticket-secret-0123456789"
previous_secret = "older-ticket-secret-01"
window = "2m"
"#;

#[test]
fn the_ticket_webhook_and_idle_limits_are_read_and_checked() {
    use airlock_core::idle::IdleLimit;
    let s = parse(&format!("{GOOD}{TICKETS}")).unwrap();
    let tickets = s.tickets.unwrap();
    let secrets: Vec<&[u8]> = tickets.secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(
        secrets,
        [
            &b"ticket-secret-0123456789"[..],
            &b"older-ticket-secret-01"[..]
        ]
    );
    assert_eq!(tickets.window, Duration::from_secs(120));
    assert!(!format!("{tickets:?}").contains("ticket-secret"));
    let s = parse(GOOD).unwrap();
    assert!(s.tickets.is_none() && s.idle_limits.is_empty());
    let (text, _) = edit(
        "auto_approve = true",
        "auto_approve = true\nidle_limit = \"10m\"",
    );
    let logs = airlock_core::EntitlementId::parse("logs").unwrap();
    assert_eq!(
        parse(&text).unwrap().idle_limits.get(&logs),
        Some(&IdleLimit::new(Duration::from_secs(600), None).unwrap())
    );
    let (text, _) = edit(
        "auto_approve = true",
        "auto_approve = true\nidle_limit = \"10m\"\nidle_warning = \"1m\"",
    );
    assert_eq!(
        parse(&text)
            .unwrap()
            .idle_limits
            .get(&logs)
            .map(IdleLimit::warning),
        Some(Duration::from_secs(60))
    );

    // Each case adds lines below `auto_approve = true` of `logs`.
    let below = |lines: isize, c: Case| Case {
        line_offset: lines,
        ..c
    };
    let cases = [
        below(
            1,
            case(
                "auto_approve = true",
                "auto_approve = true\nidle_limit = \"30s\"",
                "entitlements.logs.idle_limit",
                "must be at least 1m",
            ),
        ),
        below(
            1,
            case(
                "auto_approve = true",
                "auto_approve = true\nidle_limit = \"30m\"",
                "entitlements.logs.idle_limit",
                "must be shorter than max_duration (30m)",
            ),
        ),
        below(
            1,
            case(
                "auto_approve = true",
                "auto_approve = true\nidle_limit = \"soon\"",
                "entitlements.logs.idle_limit",
                "`soon` is not a duration",
            ),
        ),
        below(
            2,
            case(
                "auto_approve = true",
                "auto_approve = true\nidle_limit = \"10m\"\nidle_warning = \"10m\"",
                "entitlements.logs.idle_warning",
                "shorter than the limit (10m)",
            ),
        ),
        below(
            1,
            case(
                "auto_approve = true",
                "auto_approve = true\nidle_warning = \"1m\"",
                "entitlements.logs.idle_warning",
                "a warning needs an idle limit; set entitlements.logs.idle_limit too",
            ),
        ),
    ];
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Errors about the table's secrets point at its header.
    let at_table = |c: Case| Case {
        line_offset: -1,
        ..c
    };
    let cases = [
        at_table(case(
            "secret = \"ticket-secret",
            "secret = \"short\"",
            "tickets.secret",
            "at least 16 characters",
        )),
        at_table(case(
            "secret = \"ticket-secret",
            "secret_env = \"AIRLOCK_TEST_UNSET_TICKET_SECRET\"",
            "tickets.secret_env",
            "`AIRLOCK_TEST_UNSET_TICKET_SECRET` is not set",
        )),
        at_table(case(
            "secret = \"ticket-secret",
            "# no secret",
            "tickets.secret",
            "set exactly one of `secret` and `secret_env`",
        )),
        Case {
            line_offset: -2,
            ..case(
                "previous_secret",
                "previous_secret = \"old\"",
                "tickets.previous_secret",
                "at least 16 characters",
            )
        },
        case(
            "window = ",
            "window = \"1s\"",
            "tickets.window",
            "must be between 10s and 1h",
        ),
        case(
            "window = ",
            "secrets = []",
            "tickets",
            "unknown field `secrets`",
        ),
    ];
    let base = format!("{GOOD}{TICKETS}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_in(&base, c).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
