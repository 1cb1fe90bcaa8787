//! The web UI in a real browser: the real server on port 0 (SQLite), and
//! `tests/ui/browser.mjs` driving Debian's headless Chromium through
//! Playwright's `playwright-core`, with axe-core on every page. A requester
//! signs in and asks, an approver approves from the inbox, the requester
//! sees the countdown and releases; a denial shows its reason; forged posts
//! (no CSRF token, a foreign Origin) get 403; a `<script>` in a reason is
//! text; an admin revokes a break-glass grant from the grants page, judges
//! the use on the reviews page and finds both in the audit log under the
//! chain's status; the policies page; a non-admin gets 403 on the admin
//! pages; a second admin approves a proposed policy set (two-person rule);
//! the entitlement search; paging the grants and the audit log (more
//! events than a page holds, made through the API here) with the filters
//! kept; the audit log by action and by API token; the standing-privilege
//! page (an SSH certificate the CA lists, filtered by status, as CSV); the
//! 404 page.
//! Here, after the browser: the sessions were API tokens, and the
//! one signed out is revoked. With `AIRLOCK_UI_SCREENSHOTS=DIR` the browser
//! also saves a screenshot of each page there (the README's come from
//! `docs/ui`). Signing in with the identity provider runs in a browser of
//! its own (`a_person_signs_in_with_the_identity_provider_in_a_real_browser`).
//! Skips loudly without node, chromium or the npm packages, and refuses to
//! where `AIRLOCK_REQUIRE_SERVICES=1`.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::path::PathBuf;
use std::time::Duration;

use airlock_server::api::{CreateRequest, CreateTokenBody, DurationInput};
use airlock_server::client::Client;
use airlock_server::config::{token_hash, Settings};
use airlock_server::server::start;
use airlock_testkit::{bounded, service_path, service_program};

mod fixtures;

const BOUND: Duration = Duration::from_secs(240);

fn token(user: &str) -> String {
    format!("test-token-for-{user}")
}

const SRE_MAY_ASK: &str = r#"
@id("sre-may-ask")
permit (principal in Airlock::Group::"sre", action == Airlock::Action::"request",
        resource == Airlock::Entitlement::"db-prod");
"#;

/// erin's SSH public key (the private half is not needed: nobody logs in).
const ERINS_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEJ5b5NhMI1C6spfP5dq0rImv7cCVyw+AaXe4pYipsAY erin";

/// How many API tokens the setup creates: more `token_created` events than
/// the audit page shows at once.
const BULK_TOKENS: usize = 205;

fn ask(entitlement: &str) -> CreateRequest {
    CreateRequest {
        duration: Some(DurationInput::Text("1h".to_owned())),
        reason: "setting up the browser test".to_owned(),
        ..fixtures::ask(entitlement)
    }
}

fn ui_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// Node and Chromium, once the npm packages are there; `None` (said
/// loudly) where they are missing outside CI.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let node = service_program("node")?;
    let chromium = service_program("/usr/bin/chromium")?;
    let install = "npm ci --prefix crates/airlock-server/tests/ui";
    service_path(&ui_dir().join("node_modules/playwright-core"), install)?;
    service_path(&ui_dir().join("node_modules/axe-core"), install)?;
    Some((node, chromium))
}

/// Runs `tests/ui/{script}` against the server at `base`; its output when
/// it says every step passed, else the test fails with it.
async fn run_browser(
    (node, chromium): &(PathBuf, PathBuf),
    script: &str,
    base: &str,
    env: &[(&str, String)],
) -> String {
    let out = tokio::process::Command::new(node)
        .arg(ui_dir().join(script))
        .current_dir(ui_dir())
        .env("AIRLOCK_UI_URL", base)
        .env("AIRLOCK_UI_CHROMIUM", chromium)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(std::env::var_os("AIRLOCK_UI_SCREENSHOTS").map(|dir| ("AIRLOCK_UI_SCREENSHOTS", dir)))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser run of {script} failed:\n{said}"
    );
    assert!(said.contains("every step passed"), "{said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_goes_from_ask_to_release_in_a_real_browser() {
    let Some(tools) = browser_tools() else {
        return;
    };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let mut toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'

[policy]
dir = '{root}/policies'
two_person = true

[connectors.log]
type = "command"
program = "/bin/true"
timeout = "5s"

[connectors.ldap-groups]
type = "command"
program = "/bin/true"
timeout = "5s"

[entitlements.db-prod]
description = "Read and write the production database"
requestable_by = ["eng"]
max_duration = "2h"
approvers = ["sre"]
connector = "log"

[entitlements.db-prod.break_glass]
max_duration = "1h"
review_by = ["security"]

[entitlements.staff-portal]
description = "Publish on the staff portal"
requestable_by = ["eng", "ops"]
max_duration = "8h"
auto_approve = true
connector = "ldap-groups"

[entitlements.wiki-edit]
description = "Edit the team wiki"
requestable_by = ["eng"]
max_duration = "8h"
auto_approve = true
connector = "log"

[access_reviews.quarterly]
reviewers = ["sre"]
due_within = "7d"
include = ["eligibilities"]

[connectors.ssh]
type = "ssh_ca"
principals = ["web-admin"]
timeout = "5s"

[entitlements.web-ssh]
description = "SSH to the web fleet"
requestable_by = ["ops"]
max_duration = "8h"
auto_approve = true
sensitivity = 2
connector = "ssh"
"#
        );
        for (name, group, roles) in [
            ("alice", "eng", ""),
            ("bob", "sre", ""),
            ("carol", "security", r#""admin", "auditor""#),
            ("dave", "security", r#""admin""#),
            ("erin", "ops", ""),
            ("frank", "ops", ""),
            ("grace", "ops", ""),
            ("rita", "shippers", r#""reporter""#),
        ] {
            toml.push_str(&format!(
                "\n[users.{name}]\ngroups = [\"{group}\"]\nroles = [{roles}]\ntoken_sha256 = \"{}\"\n",
                token_hash(&token(name))
            ));
        }
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("extra.cedar"), "").unwrap();
        let settings = Settings::parse("ui.toml", &toml, dir.path()).unwrap();
        let server = start(settings).await.unwrap();
        let base = format!("http://{}", server.addr());

        // Under the two-person rule, dave proposes that sre may ask for
        // db-prod too; carol approves it in the browser.
        std::fs::write(policies.join("extra.cedar"), SRE_MAY_ASK).unwrap();
        let proposed = Client::new(&base, &token("dave"))
            .unwrap()
            .reload_policy()
            .await
            .unwrap();
        assert_eq!(proposed.outcome, "proposed", "{proposed:?}");

        // Three grants held besides the browser's (the grants page pages
        // through them), one asked for with an API token (the audit log
        // finds it by that token), and more tokens made than the audit
        // page shows at once.
        let erin = Client::new(&base, &token("erin")).unwrap();
        let bot = erin
            .create_token(&CreateTokenBody {
                name: "deploy-bot".to_owned(),
                expires_in: None,
                scopes: Some(vec!["read".to_owned(), "request".to_owned()]),
                owner: None,
            })
            .await
            .unwrap();
        Client::new(&base, &bot.secret)
            .unwrap()
            .create_request(&ask("staff-portal"))
            .await
            .unwrap();
        for user in ["frank", "grace"] {
            Client::new(&base, &token(user))
                .unwrap()
                .create_request(&ask("staff-portal"))
                .await
                .unwrap();
        }
        // A certificate the SSH CA lists as held: the standing report's
        // one holder (the command connectors cannot list theirs).
        let ssh_grant = erin
            .create_request(&CreateRequest {
                public_key: Some(ERINS_KEY.to_owned()),
                ..ask("web-ssh")
            })
            .await
            .unwrap()
            .id;
        airlock_testkit::until(Duration::from_secs(20), "erin's certificate", || async {
            let r = erin.get_request(&ssh_grant).await.unwrap();
            assert_ne!(r.state, "failed", "{r:?}");
            (r.state == "active" && r.certificate.is_some()).then_some(())
        })
        .await;
        // sshd logged a login with erin's certificate: the log shipper
        // posts it, and the request's page shows it on its timeline.
        let login = format!(
            "Accepted publickey for web-admin from 192.0.2.7 port 50022 ssh2: \
             ED25519-CERT SHA256:erinskey ID {ssh_grant} (serial 7) CA ED25519 SHA256:theca"
        );
        let posted = Client::new(&base, &token("rita"))
            .unwrap()
            .report_activity(&ssh_grant, "web1", vec![login])
            .await
            .unwrap();
        assert_eq!(posted.recorded, 1, "{posted:?}");
        for n in 0..BULK_TOKENS {
            erin.create_token(&CreateTokenBody {
                name: format!("bulk-{n}"),
                expires_in: None,
                scopes: None,
                owner: None,
            })
            .await
            .unwrap();
        }

        run_browser(
            &tools,
            "browser.mjs",
            &base,
            &[
                ("AIRLOCK_UI_REQUESTER_TOKEN", token("alice")),
                ("AIRLOCK_UI_APPROVER_TOKEN", token("bob")),
                ("AIRLOCK_UI_ADMIN_TOKEN", token("carol")),
                ("AIRLOCK_UI_BOT_TOKEN_ID", bot.token.id.clone()),
                ("AIRLOCK_UI_SSH_GRANT", ssh_grant.clone()),
            ],
        )
        .await;

        // Each sign-in made an API token; alice's was revoked at sign-out.
        let tokens = Client::new(&base, &token("alice"))
            .unwrap()
            .list_tokens(false)
            .await
            .unwrap();
        let sessions: Vec<_> = tokens
            .iter()
            .filter(|t| t.name.starts_with("web session"))
            .collect();
        assert_eq!(sessions.len(), 1, "{tokens:?}");
        assert_eq!(sessions[0].state, "revoked", "{tokens:?}");
        server.shutdown().await;
    })
    .await;
}

/// Signing in with the identity provider (the real `oidc-provider`): see
/// `tests/ui/idp.mjs` for the steps. Bob is known only to the provider (his
/// groups come from its ID token), and db-prod needs MFA within the hour,
/// which his sign-in with a second factor gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_the_identity_provider_in_a_real_browser() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let Some(provider) = airlock_testkit::oidc::Provider::start().await else {
        return;
    };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'

[server.oidc]
issuer = "{issuer}"
audience = "https://airlock.test"
client_id = "{client}"

[connectors.log]
type = "command"
program = "/bin/true"
timeout = "5s"

[entitlements.db-prod]
description = "Read and write the production database"
requestable_by = ["dba"]
max_duration = "2h"
approvers = ["sre"]
require_mfa_within = "1h"
connector = "log"
"#,
            issuer = provider.issuer,
            client = airlock_testkit::oidc::CLI_CLIENT,
        );
        let settings = Settings::parse("ui.toml", &toml, dir.path()).unwrap();
        let server = start(settings).await.unwrap();
        let base = format!("http://{}", server.addr());
        run_browser(&tools, "idp.mjs", &base, &[]).await;
        server.shutdown().await;
    })
    .await;
}
