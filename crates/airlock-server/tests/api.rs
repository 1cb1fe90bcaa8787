//! The HTTP API end to end: the real server on port 0, a real SQLite file in a
//! temporary directory and `command` connectors that are small shell scripts
//! logging every call, so each test sees what the target would have seen.
//!
//! Scripts run as `/bin/sh <script>` rather than being executed directly: with
//! tests running in parallel, another thread's fork can briefly hold a freshly
//! written script open for writing, and `exec` then fails with "text file busy".
//!
//! Every wait polls against a deadline, and grants a test waits out last one
//! second.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use airlock_server::api::{
    parse_time, AuditQuery, CreateRequest, DurationInput, GrantsQuery, RequestQuery, RequestView,
};
use airlock_server::client::{Action, Client, ClientError};
use airlock_server::config::{token_hash, Settings};
use airlock_server::server::{start, Server};
use serde_json::{json, Value};

use fixtures::{audit_of, my_requests};

mod fixtures;

/// No test may run longer than this, whatever the server does.
const BOUND: Duration = Duration::from_secs(30);

/// How long a state change driven by the scheduler or a connector may take.
const SETTLE: Duration = Duration::from_secs(8);

async fn bounded<F: Future>(test: F) -> F::Output {
    bounded_by(BOUND, test).await
}

async fn bounded_by<F: Future>(bound: Duration, test: F) -> F::Output {
    tokio::time::timeout(bound, test)
        .await
        .expect("test exceeded its time bound")
}

/// alice and bob may request; bob and carol approve (group `sre`); admin is
/// an admin (and so is admin2); dave is in an unrelated group; sam is in
/// `security`; audrey is an auditor, chuck a checker and rhea a reporter.
const USERS: &[(&str, &[&str], &[&str])] = &[
    ("alice", &["eng"], &[]),
    ("bob", &["eng", "sre"], &[]),
    ("carol", &["sre"], &[]),
    ("admin", &["ops"], &["admin"]),
    ("admin2", &["ops"], &["admin"]),
    ("dave", &["sales"], &[]),
    ("sam", &["security"], &[]),
    ("audrey", &[], &["auditor"]),
    ("chuck", &[], &["checker"]),
    ("rhea", &[], &["reporter"]),
];

/// The catalog most tests use. `log` always succeeds; `flaky` grants but its
/// revoke exits 75 (retry).
const CATALOG: &str = r#"
[entitlements.logs-read]
description = "read production logs"
requestable_by = ["eng"]
max_duration = "1h"
auto_approve = true
require_reason = false
connector = "log"

[entitlements.db-prod]
requestable_by = ["eng"]
max_duration = "2h"
approvers = ["sre"]
connector = "log"

[entitlements.db-admin]
requestable_by = ["eng"]
max_duration = "1h"
approvers = ["sre"]
approvals_required = 2
connector = "log"

[entitlements.prod-ssh]
requestable_by = ["eng"]
max_duration = "1h"
auto_approve = true
require_ticket = true
ticket_pattern = "^INC-[0-9]+$"
connector = "log"

[entitlements.crm]
requestable_by = ["sales"]
max_duration = "1h"
auto_approve = true
connector = "log"

[entitlements.flaky]
requestable_by = ["eng"]
max_duration = "1h"
auto_approve = true
require_reason = false
connector = "flaky"
"#;

fn token(user: &str) -> String {
    format!("test-token-for-{user}")
}

struct Harness {
    server: Server,
    base: String,
    log: PathBuf,
    /// What it was started with, to start it again on the same files.
    settings: Settings,
    _dir: tempfile::TempDir,
}

/// Boots a server whose catalog is `entitlements` (TOML), with the users
/// above and the `log` and `flaky` connectors.
async fn boot(entitlements: &str) -> Harness {
    boot_with_policies(entitlements, &[]).await
}

/// Like [`boot`], with a policy folder holding `policies` (file name, Cedar).
async fn boot_with_policies(entitlements: &str, policies: &[(&str, &str)]) -> Harness {
    boot_full(entitlements, policies, false, "").await
}

/// Like [`boot_with_policies`]; `two_person` turns on the two-person rule
/// for policy changes; `server_extra` is added to the `[server]` table.
async fn boot_full(
    entitlements: &str,
    policies: &[(&str, &str)],
    two_person: bool,
    server_extra: &str,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let log = dir.path().join("connector.log");
    let logged = |action: &str| format!("echo \"{action} $2 $3 $4\" >> '{}'", log.display());
    let scripts = [
        ("log.sh", format!("case \"$1\" in grant|revoke) {} ;; esac\nexit 0", logged("$1"))),
        (
            "flaky.sh",
            format!(
                "case \"$1\" in\n  grant) {} ;;\n  revoke) {}; echo 'target unavailable' >&2; exit 75 ;;\nesac\nexit 0",
                logged("grant"),
                logged("revoke-failed")
            ),
        ),
    ];
    for (name, body) in &scripts {
        std::fs::write(dir.path().join(name), format!("#!/bin/sh\n{body}\n")).unwrap();
    }

    let mut toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'
claim_lease = "10s"
retry_base = "100ms"
retry_cap = "400ms"
revocation_overdue_after = "1s"
{server_extra}

[connectors.log]
type = "command"
program = "/bin/sh"
args = ['{root}/log.sh']
timeout = "5s"

[connectors.flaky]
type = "command"
program = "/bin/sh"
args = ['{root}/flaky.sh']
timeout = "5s"
"#
    );
    for (name, groups, roles) in USERS {
        toml.push_str(&format!(
            "\n[users.{name}]\ngroups = {groups:?}\nroles = {roles:?}\ntoken_sha256 = \"{}\"\n",
            token_hash(&token(name))
        ));
    }
    toml.push_str(entitlements);
    if !policies.is_empty() {
        let folder = dir.path().join("policies");
        std::fs::create_dir_all(&folder).unwrap();
        for (name, text) in policies {
            std::fs::write(folder.join(name), text).unwrap();
        }
        toml.push_str(&format!(
            "\n[policy]\ndir = '{root}/policies'\ntwo_person = {two_person}\n"
        ));
    }

    let settings = Settings::parse("test.toml", &toml, dir.path()).unwrap();
    Harness::start(settings, log, dir).await
}

impl Harness {
    fn client(&self, user: &str) -> Client {
        Client::new(&self.base, &token(user)).unwrap()
    }

    /// A raw call, for status codes and bodies the typed client hides.
    async fn raw(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let http = reqwest::Client::new();
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => http.get(url),
            "POST" => http.post(url),
            other => panic!("unsupported method {other}"),
        };
        if let Some(u) = user {
            req = req.bearer_auth(token(u));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, value)
    }

    /// Lines the connector scripts wrote: `ACTION USER ENTITLEMENT REQUEST_ID`.
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn logged(&self, action: &str, r: &RequestView) -> usize {
        let line = format!("{action} {} {} {}", r.requester, r.entitlement, r.id);
        self.log_lines().iter().filter(|l| **l == line).count()
    }

    /// Polls the request (as admin) until `done` holds, or fails at the deadline.
    async fn wait_for(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&RequestView) -> bool,
    ) -> RequestView {
        let admin = self.client("admin");
        let deadline = Instant::now() + SETTLE;
        loop {
            let r = admin.get_request(id).await.unwrap();
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {r:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_state(&self, id: &str, state: &str) -> RequestView {
        self.wait_for(id, state, |r| r.state == state).await
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }

    /// Stops the server gracefully, lets `meanwhile` run, and starts it
    /// again on the same database, checkpoint key and log.
    async fn restart<F: Future<Output = ()>>(
        self,
        meanwhile: impl FnOnce(PathBuf) -> F,
    ) -> Harness {
        let Harness {
            server,
            log,
            settings,
            _dir,
            ..
        } = self;
        server.shutdown().await;
        meanwhile(settings.data_dir.join("airlock.db")).await;
        Harness::start(settings, log, _dir).await
    }

    async fn start(settings: Settings, log: PathBuf, dir: tempfile::TempDir) -> Harness {
        let server = start(settings.clone()).await.unwrap();
        Harness {
            base: format!("http://{}", server.addr()),
            server,
            log,
            settings,
            _dir: dir,
        }
    }
}

/// The checkpoint key is created readable by its owner only, and a server
/// refuses to start with one other users can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    bounded(async {
        let Harness {
            server,
            settings,
            _dir,
            ..
        } = boot(CATALOG).await;
        server.shutdown().await;
        let key = &settings.audit.checkpoint_key;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o640)).unwrap();
        match start(settings.clone()).await {
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("`{}`", key.display()))
                        && message.contains("chmod 600"),
                    "{message}"
                );
            }
            Ok(_) => panic!("started with a key others can read"),
        }
    })
    .await;
}

/// Edits the newest audit event of the SQLite file `db` behind Airlock's
/// back (its append-only trigger dropped first, as the file's owner could).
async fn edit_newest_event(db: &std::path::Path) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER audit_events_no_update; \
         UPDATE audit_events SET actor = 'mallory' WHERE seq = (SELECT MAX(seq) FROM audit_events)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

/// A server that finds its audit record altered at start is not ready and
/// refuses what would grant access (requests, approvals, policy changes,
/// reconciliation), while what takes access away goes on: a denial, an
/// admin's revocation and the scheduler's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_audit_record_stops_grants_but_not_revocations() {
    bounded(async {
        let h = boot(CATALOG).await;
        let alice = h.client("alice");
        let expiring = alice
            .create_request(&for_secs("logs-read", "look", 4))
            .await
            .unwrap();
        let revoked = h
            .client("bob")
            .create_request(&for_secs("logs-read", "look", 600))
            .await
            .unwrap();
        let pending = alice
            .create_request(&ask("db-prod", "migration"))
            .await
            .unwrap();
        h.wait_state(&expiring.id, "active").await;
        h.wait_state(&revoked.id, "active").await;
        // The newest event, just signed at shutdown, edited behind Airlock's back.
        let h = h
            .restart(|db| async move { edit_newest_event(&db).await })
            .await;
        assert_eq!(
            h.client("admin")
                .get_request(&expiring.id)
                .await
                .unwrap()
                .state,
            "active",
            "the grant must still be running after the restart"
        );

        let (code, body) = h.raw("GET", "/readyz", None, None).await;
        assert_eq!(code, 503, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("edited"), "{message}");
        let untrusted = |r: Result<_, ClientError>| {
            let (status, code, _) = refusal(r);
            assert_eq!((status, code.as_str()), (503, "audit_untrusted"));
        };
        untrusted(
            h.client("bob")
                .create_request(&ask("db-prod", "x"))
                .await
                .map(|_| ()),
        );
        untrusted(
            h.client("carol")
                .act(&pending.id, &approve())
                .await
                .map(|_| ()),
        );
        untrusted(h.client("admin").reload_policy().await.map(|_| ()));
        untrusted(h.client("admin").reconcile(true).await.map(|_| ()));

        let denied = h
            .client("carol")
            .act(
                &pending.id,
                &Action::Deny {
                    reason: "not now".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(denied.state, "denied");
        h.client("admin")
            .act(
                &revoked.id,
                &Action::Revoke {
                    reason: "audit".into(),
                },
            )
            .await
            .unwrap();
        let expired = h.wait_state(&expiring.id, "expired").await;
        h.wait_for(&expired.id, "the expired grant removed", |r| {
            r.deprovisioned_at.is_some()
        })
        .await;
        h.wait_for(&revoked.id, "the revoked grant removed", |r| {
            r.deprovisioned_at.is_some()
        })
        .await;
        assert_eq!(h.logged("revoke", &expired), 1);
        h.stop().await;
    })
    .await;
}

/// While the server runs, the head is signed every `audit.checkpoint_every`
/// once it moved; a chain altered meanwhile is never signed, and the server
/// stops being ready and refuses grants from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_while_running_and_an_altered_chain_never_is() {
    use airlock_server::checkpoint::read_log;
    bounded(async {
        let h = boot_full(
            CATALOG,
            &[],
            false,
            "\n[audit]\ncheckpoint_every = \"1s\"\n",
        )
        .await;
        let log = h.settings.audit.checkpoint_log.clone();
        let signed = || {
            let log = log.clone();
            async move { read_log(&log, None).unwrap().0.last().map(|c| c.seq) }
        };
        let r = h
            .client("alice")
            .create_request(&ask("logs-read", "look"))
            .await
            .unwrap();
        h.wait_state(&r.id, "active").await;
        let head = h.client("admin").verify_audit().await.unwrap().head_seq;
        airlock_testkit::until(SETTLE, "the head signed", || async {
            (signed().await == Some(head)).then_some(())
        })
        .await;

        edit_newest_event(&h.settings.data_dir.join("airlock.db")).await;
        // The head moves on, so the next round would sign it.
        h.client("admin")
            .act(
                &r.id,
                &Action::Revoke {
                    reason: "done".into(),
                },
            )
            .await
            .unwrap();
        airlock_testkit::until(SETTLE, "readiness to fail", || async {
            let (code, body) = h.raw("GET", "/readyz", None, None).await;
            (code == 503).then_some(body)
        })
        .await;
        assert_eq!(signed().await, Some(head), "an altered chain was signed");
        let (status, code, _) = refusal(
            h.client("bob")
                .create_request(&ask("logs-read", "look"))
                .await,
        );
        assert_eq!((status, code.as_str()), (503, "audit_untrusted"));
        h.stop().await;
    })
    .await;
}

fn ask(entitlement: &str, reason: &str) -> CreateRequest {
    CreateRequest {
        duration: None,
        reason: reason.to_owned(),
        ..fixtures::ask(entitlement)
    }
}

fn for_secs(entitlement: &str, reason: &str, secs: u64) -> CreateRequest {
    CreateRequest {
        duration: Some(DurationInput::Seconds(secs)),
        ..ask(entitlement, reason)
    }
}

fn approve() -> Action {
    Action::Approve { comment: None }
}

/// The status, code and field of an API error.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String, Option<String>) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            field,
            ..
        }) => (status, code, field),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn status<T: std::fmt::Debug>(result: Result<T, ClientError>) -> u16 {
    refusal(result).0
}

fn millis(rfc3339: &Option<String>) -> i64 {
    parse_time(rfc3339.as_deref().expect("a time"))
        .unwrap()
        .unix_millis()
}

/// Checks a JSON value against a schema of the OpenAPI document: no
/// undeclared property, every required one present, and a property with an
/// `enum` holding one of its values.
fn assert_fits(doc: &Value, schema: &str, value: &Value) {
    let s = &doc["components"]["schemas"][schema];
    let declared: BTreeSet<&str> = s["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {schema}"))
        .keys()
        .map(String::as_str)
        .collect();
    let present: BTreeSet<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let undeclared: Vec<_> = present.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "{schema}: undeclared {undeclared:?} in {value}"
    );
    for required in s["required"].as_array().unwrap() {
        assert!(
            present.contains(required.as_str().unwrap()),
            "{schema}: missing {required} in {value}"
        );
    }
    for (name, v) in value.as_object().unwrap() {
        if let Some(allowed) = s["properties"][name]["enum"].as_array() {
            assert!(
                allowed.contains(v),
                "{schema}.{name}: {v} is not one of {allowed:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_matches_the_wire() {
    bounded(async {
        let h = boot(CATALOG).await;
        let (code, doc) = h.raw("GET", "/openapi.json", None, None).await;
        assert_eq!(code, 200);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for (method, path) in airlock_server::http::ROUTES {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not documented");
            let public = [
                "/healthz",
                "/readyz",
                "/openapi.json",
                "/metrics",
                "/v1/audit/checkpoint-key",
                "/v1/auth/oidc",
                "/.well-known/jwks.json",
            ]
            .contains(path);
            assert_eq!(
                op["security"] == json!([]),
                public,
                "security of {method} {path}"
            );
            if path.contains("{id}") {
                let params = serde_json::to_string(&op["parameters"]).unwrap();
                assert!(
                    params.contains("RequestId")
                        || params.contains("ProposalId")
                        || params.contains("TokenId")
                        || params.contains("CampaignId")
                        || params.contains("SshSessionId"),
                    "{method} {path} lacks the id parameter"
                );
            }
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            airlock_server::http::ROUTES.len(),
            "the document has routes the server lacks"
        );

        // Every audit action the core knows is one the document lists, and
        // no other: a client validating against it must accept each event.
        let listed: Vec<&str> = doc["components"]["schemas"]["AuditEventView"]["properties"]
            ["action"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let known: Vec<&str> = airlock_core::audit::AuditAction::ALL
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(listed, known, "AuditEventView.action's enum");

        // The schemas agree with what the server actually sends.
        let (_, me) = h.raw("GET", "/v1/me", Some("alice"), None).await;
        assert_fits(&doc, "WhoAmI", &me);
        let (_, ents) = h.raw("GET", "/v1/entitlements", Some("alice"), None).await;
        assert!(!ents.as_array().unwrap().is_empty());
        for e in ents.as_array().unwrap() {
            assert_fits(&doc, "EntitlementView", e);
        }
        let (code, created) = h
            .raw(
                "POST",
                "/v1/requests",
                Some("bob"),
                Some(r#"{"entitlement":"db-prod","reason":"x"}"#),
            )
            .await;
        assert_eq!(code, 201);
        assert_fits(&doc, "RequestView", &created);
        let id = created["id"].as_str().unwrap().to_owned();
        // A bundle's answer lists its parts as the document says.
        let (code, bundle) = h
            .raw(
                "POST",
                "/v1/requests",
                Some("bob"),
                Some(r#"{"entitlements":["logs-read","db-admin"],"bundle":null,"reason":"x"}"#),
            )
            .await;
        assert_eq!(code, 201, "{bundle}");
        assert_fits(&doc, "RequestView", &bundle);
        assert_fits(&doc, "BundleView", &bundle["bundle"]);
        for part in bundle["bundle"]["parts"].as_array().unwrap() {
            assert_fits(&doc, "BundlePartView", part);
        }
        // An optional field sent as `null` is accepted, and the document
        // says so (schemathesis found the approval comment).
        assert!(
            doc["components"]["schemas"]["ApproveBody"]["properties"]["comment"]["type"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("null")))
        );
        let (code, approved) = h
            .raw(
                "POST",
                &format!("/v1/requests/{id}/approve"),
                Some("carol"),
                Some(r#"{"comment":null}"#),
            )
            .await;
        assert_eq!(code, 200, "{approved}");
        assert_fits(&doc, "RequestView", &approved);
        let (_, shown) = h
            .raw("GET", &format!("/v1/requests/{id}"), Some("bob"), None)
            .await;
        assert_fits(&doc, "RequestView", &shown);
        assert_fits(&doc, "ApprovalView", &shown["approvals"][0]);
        if !shown["job"].is_null() {
            assert_fits(&doc, "JobView", &shown["job"]);
        }
        assert_eq!(approved["approvals"].as_array().unwrap().len(), 1);
        let (_, events) = h.raw("GET", "/v1/audit", Some("admin"), None).await;
        for e in events.as_array().unwrap() {
            assert_fits(&doc, "AuditEventView", e);
        }
        let (_, verify) = h.raw("GET", "/v1/audit/verify", Some("admin"), None).await;
        assert_fits(&doc, "VerifyView", &verify);
        let (code, created) = h
            .raw(
                "POST",
                "/v1/tokens",
                Some("alice"),
                Some(r#"{"name":"doc","scopes":["read"],"expires_in":"1d"}"#),
            )
            .await;
        assert_eq!(code, 201, "{created}");
        assert_fits(&doc, "CreatedTokenView", &created);
        assert_fits(&doc, "TokenView", &created["token"]);
        let (_, listed) = h.raw("GET", "/v1/tokens", Some("alice"), None).await;
        assert_fits(&doc, "TokenView", &listed[0]);
        let (_, explained) = h
            .raw(
                "GET",
                &format!("/v1/requests/{id}/explain"),
                Some("bob"),
                None,
            )
            .await;
        assert_fits(&doc, "ExplainView", &explained);
        assert_fits(&doc, "HistoryEntry", &explained["history"][0]);
        let (code, reconciled) = h
            .raw(
                "POST",
                "/v1/reconcile",
                Some("admin"),
                Some(r#"{"fix":false}"#),
            )
            .await;
        assert_eq!(code, 200, "{reconciled}");
        assert_fits(&doc, "ReconcileView", &reconciled);
        for c in reconciled["connectors"].as_array().unwrap() {
            assert_fits(&doc, "ConnectorReconcileView", c);
        }
        let (code, error) = h
            .raw(
                "POST",
                "/v1/requests",
                Some("bob"),
                Some(r#"{"entitlement":"nope"}"#),
            )
            .await;
        assert_eq!(code, 400);
        assert_fits(&doc, "ErrorBody", &error);
        assert_fits(&doc, "ErrorDetail", &error["error"]);

        // Every operation that reads a body documents the answers the body
        // reader gives, whatever the handler: schemathesis found
        // `/v1/policy/reload` answering an unknown field with an
        // undocumented 400.
        for (method, path) in airlock_server::http::ROUTES {
            let op = &doc["paths"][path][method];
            // Every operation that takes a token says what a refused token
            // and an unreachable identity provider are answered with (the
            // ticket webhook takes a signature instead: no provider).
            let signed = op["security"] == json!([{"ticketSignature": []}]);
            if signed {
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
            } else if op["security"] != json!([]) {
                for code in ["401", "503"] {
                    assert!(
                        op["responses"][code].is_object(),
                        "{method} {path} takes a token but does not document {code}"
                    );
                }
            }
            if op["requestBody"].is_null() {
                continue;
            }
            for code in ["400", "408", "413", "415"] {
                assert!(
                    op["responses"][code].is_object(),
                    "{method} {path} does not document {code}"
                );
            }
            let target = path.replace("{id}", &id);
            let (code, error) = h
                .raw("POST", &target, Some("admin"), Some(r#"{"unknown":1}"#))
                .await;
            assert!(
                op["responses"][code.to_string()].is_object(),
                "{method} {path} answered an unknown field with an undocumented {code}: {error}"
            );
            assert_fits(&doc, "ErrorBody", &error);
            assert_fits(&doc, "ErrorDetail", &error["error"]);
        }
        // Every error code is one the document lists (schemathesis found
        // `denied_by_policy` missing).
        let (code, error) = h
            .raw(
                "POST",
                "/v1/requests",
                Some("dave"),
                Some(r#"{"entitlement":"logs-read"}"#),
            )
            .await;
        assert_eq!(
            (code, &error["error"]["code"]),
            (403, &json!("denied_by_policy"))
        );
        assert_fits(&doc, "ErrorDetail", &error["error"]);
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_except_for_health() {
    bounded(async {
        let h = boot(CATALOG).await;
        let http = reqwest::Client::new();
        let me = format!("{}/v1/me", h.base);

        let response = http.get(&me).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization"));

        for header in ["Bearer not-a-token", "Basic YWxpY2U6cHc=", "Bearer "] {
            let response = http
                .get(&me)
                .header("authorization", header)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 401, "{header}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{header}");
        }
        let (code, _) = h
            .raw(
                "POST",
                "/v1/requests",
                None,
                Some(r#"{"entitlement":"logs-read"}"#),
            )
            .await;
        assert_eq!(code, 401);

        assert_eq!(
            h.raw("GET", "/healthz", None, None).await,
            (200, json!({"status": "ok"}))
        );
        assert_eq!(
            h.raw("GET", "/readyz", None, None).await,
            (200, json!({"status": "ready"}))
        );
        let metrics = http
            .get(format!("{}/metrics", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status().as_u16(), 200);
        assert!(metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert!(metrics
            .text()
            .await
            .unwrap()
            .contains("airlock_events_total"));

        let who = h.client("admin").me().await.unwrap();
        assert_eq!(
            (who.user.as_str(), who.roles),
            ("admin", vec!["admin".to_owned()])
        );
        let (code, body) = h.raw("GET", "/v1/nowhere", Some("alice"), None).await;
        assert_eq!(
            (code, body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_input_names_the_field() {
    bounded(async {
        let h = boot(CATALOG).await;
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"entitlement":"no-such-thing","reason":"x"}"#,
                Some("entitlement"),
            ),
            (
                r#"{"entitlement":"bad name","reason":"x"}"#,
                Some("entitlement"),
            ),
            (
                r#"{"entitlement":"logs-read","duration":"3h"}"#,
                Some("duration"),
            ),
            (
                r#"{"entitlement":"logs-read","duration":7200}"#,
                Some("duration"),
            ),
            (
                r#"{"entitlement":"logs-read","duration":"abc"}"#,
                Some("duration"),
            ),
            (
                r#"{"entitlement":"logs-read","duration":"0s"}"#,
                Some("duration"),
            ),
            (
                r#"{"entitlement":"logs-read","duration":true}"#,
                Some("duration"),
            ),
            (
                r#"{"entitlement":"logs-read","duration":-5}"#,
                Some("duration"),
            ),
            (r#"{"entitlement":"db-prod"}"#, Some("reason")),
            (
                r#"{"entitlement":"db-prod","reason":"   "}"#,
                Some("reason"),
            ),
            (r#"{"entitlement":"prod-ssh","reason":"x"}"#, Some("ticket")),
            (
                r#"{"entitlement":"prod-ssh","reason":"x","ticket":"  "}"#,
                Some("ticket"),
            ),
            (
                r#"{"entitlement":"prod-ssh","reason":"x","ticket":"JIRA-1"}"#,
                Some("ticket"),
            ),
            (
                r#"{"entitlement":"prod-ssh","reason":"x","ticket":"INC-12 "}"#,
                None,
            ),
            (
                r#"{"entitlement":"logs-read","start_at":"tomorrow"}"#,
                Some("start_at"),
            ),
            (
                r#"{"entitlement":"logs-read","start_at":"2001-01-01T00:00:00Z"}"#,
                Some("start_at"),
            ),
            (r#"{"entitlement":42}"#, Some("entitlement")),
            (
                r#"{"entitlement":"logs-read","reason":["x"]}"#,
                Some("reason"),
            ),
            // Free text refuses NUL, escape sequences and other control
            // characters, naming the field (one rule, whatever the database).
            (
                r#"{"entitlement":"logs-read","reason":"fine\u0000"}"#,
                Some("reason"),
            ),
            (
                r#"{"entitlement":"logs-read","reason":"ok\u001b[2J\u001b[Happroved"}"#,
                Some("reason"),
            ),
            (
                r#"{"entitlement":"logs-read","reason":"ok\u202etxt.exe"}"#,
                Some("reason"),
            ),
            (
                r#"{"entitlement":"prod-ssh","reason":"x","ticket":"INC-1\u0007"}"#,
                Some("ticket"),
            ),
            (
                r#"{"entitlement":"logs-read","public_key":"ssh-ed25519 AAAA\u0000"}"#,
                Some("public_key"),
            ),
            (r#"{"entitlement":"logs-read","bogus":1}"#, None),
            (r#"{"reason":"x"}"#, None),
            // Broken JSON is the body's fault, wherever the parser stopped.
            (r#"{"entitlement":"#, Some("body")),
            (r#"{"entitlement":"logs-read","reason":"x"#, Some("body")),
            ("[]", None),
            ("not json", None),
        ];
        for (body, field) in cases {
            let (code, value) = h
                .raw("POST", "/v1/requests", Some("alice"), Some(body))
                .await;
            if body.contains("INC-12") {
                // The control: a valid ticket (trimmed) is accepted.
                assert_eq!(code, 201, "{body}: {value}");
                assert_eq!(value["ticket"], "INC-12");
                continue;
            }
            assert_eq!(code, 400, "{body}: {value}");
            assert_eq!(value["error"]["code"], "invalid_input", "{body}: {value}");
            assert!(
                !value["error"]["message"].as_str().unwrap().is_empty(),
                "{body}"
            );
            match field {
                Some(f) => assert_eq!(value["error"]["field"], *f, "{body}: {value}"),
                None => assert!(
                    value["error"]["field"].is_string(),
                    "{body}: no field in {value}"
                ),
            }
        }
        // An unknown field is named in the message.
        let (_, value) = h
            .raw(
                "POST",
                "/v1/requests",
                Some("alice"),
                Some(r#"{"entitlement":"logs-read","bogus":1}"#),
            )
            .await;
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bogus"),
            "{value}"
        );

        // Not in a group that may request it.
        let (code, kind, _) = refusal(h.client("alice").create_request(&ask("crm", "x")).await);
        assert_eq!((code, kind.as_str()), (403, "denied_by_policy"));
        // Nothing above reached the connector except the one valid request.
        assert!(
            h.log_lines().iter().all(|l| l.contains("prod-ssh")),
            "{:?}",
            h.log_lines()
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_approved_grant_is_provisioned_then_expires_and_is_removed() {
    bounded(async {
        let h = boot(CATALOG).await;
        let alice = h.client("alice");
        let created = alice
            .create_request(&for_secs("logs-read", "", 1))
            .await
            .unwrap();
        assert!(
            matches!(created.state.as_str(), "approved" | "active"),
            "{created:?}"
        );
        assert_eq!(
            (created.required_approvals, created.duration_seconds),
            (0, 1)
        );

        let active = h.wait_state(&created.id, "active").await;
        assert_eq!(h.logged("grant", &active), 1);
        assert!(active.granted_at.is_some() && active.expires_at.is_some());

        let ended = h
            .wait_for(&created.id, "deprovisioned", |r| {
                r.deprovisioned_at.is_some()
            })
            .await;
        assert_eq!(ended.state, "expired");
        assert_eq!(h.logged("revoke", &ended), 1);
        assert!(
            ended.job.is_none() && !ended.revocation_overdue && ended.time_left_seconds.is_none()
        );
        let late = millis(&ended.deprovisioned_at) - millis(&ended.expires_at);
        assert!((0..=1500).contains(&late), "removed {late} ms after expiry");
        assert!(alice
            .grants()
            .await
            .unwrap()
            .iter()
            .all(|g| g.id != created.id));
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_approval_by_an_eligible_approver_who_is_not_the_requester() {
    bounded(async {
        let h = boot(CATALOG).await;
        // bob is both a requester and an approver: he may not approve himself.
        let r = h
            .client("bob")
            .create_request(&ask("db-prod", "incident 7"))
            .await
            .unwrap();
        assert_eq!((r.state.as_str(), r.required_approvals), ("pending", 1));
        assert!(r.pending_deadline.is_some());

        let (code, kind, _) = refusal(h.client("bob").act(&r.id, &approve()).await);
        assert_eq!((code, kind.as_str()), (403, "forbidden"));
        // admin sees everything but is no approver; alice can't see it at all.
        assert_eq!(status(h.client("admin").act(&r.id, &approve()).await), 403);
        assert_eq!(status(h.client("alice").act(&r.id, &approve()).await), 404);
        assert!(h.log_lines().is_empty());

        let approved = h
            .client("carol")
            .act(
                &r.id,
                &Action::Approve {
                    comment: Some("  go ahead ".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(approved.approvals.len(), 1);
        assert_eq!(approved.approvals[0].approver, "carol");
        assert_eq!(approved.approvals[0].comment.as_deref(), Some("go ahead"));
        let active = h.wait_state(&r.id, "active").await;
        assert_eq!(h.logged("grant", &active), 1);

        let (code, kind, _) = refusal(h.client("carol").act(&r.id, &approve()).await);
        assert_eq!((code, kind.as_str()), (409, "conflict"));
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_need_two_distinct_approvers() {
    bounded(async {
        let h = boot(CATALOG).await;
        let (bob, carol) = (h.client("bob"), h.client("carol"));
        let r = h
            .client("alice")
            .create_request(&ask("db-admin", "migration"))
            .await
            .unwrap();
        assert_eq!(r.required_approvals, 2);

        let once = bob.act(&r.id, &approve()).await.unwrap();
        assert_eq!((once.state.as_str(), once.approvals.len()), ("pending", 1));
        assert_eq!(status(bob.act(&r.id, &approve()).await), 409);
        let awaiting = RequestQuery {
            awaiting_me: Some(true),
            ..RequestQuery::default()
        };
        assert!(bob.list_requests(&awaiting).await.unwrap().is_empty());
        let for_carol = carol.list_requests(&awaiting).await.unwrap();
        assert_eq!(
            for_carol.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [r.id.as_str()]
        );
        assert!(h.log_lines().is_empty());

        let twice = carol.act(&r.id, &approve()).await.unwrap();
        assert_ne!(twice.state, "pending");
        let approvers: Vec<_> = twice
            .approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect();
        assert_eq!(approvers, ["bob", "carol"]);
        let active = h.wait_state(&r.id, "active").await;
        assert_eq!(h.logged("grant", &active), 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_grant_exactly_once() {
    bounded(async {
        let h = boot(CATALOG).await;
        let (alice, bob, carol) = (h.client("alice"), h.client("bob"), h.client("carol"));
        for round in 0..3 {
            let r = alice
                .create_request(&ask("db-prod", &format!("round {round}")))
                .await
                .unwrap();
            let (by_bob, by_carol) = (approve(), approve());
            let (b, c) = tokio::join!(bob.act(&r.id, &by_bob), carol.act(&r.id, &by_carol));
            let code = |o: &Result<RequestView, ClientError>| {
                o.as_ref().map_or_else(|e| e.status(), |_| Some(200))
            };
            let mut sorted = [code(&b), code(&c)];
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                [Some(200), Some(409)],
                "round {round}: {b:?} / {c:?}"
            );

            let active = h.wait_state(&r.id, "active").await;
            assert_eq!(active.approvals.len(), 1);
            alice.act(&r.id, &Action::Release).await.unwrap();
            let done = h
                .wait_for(&r.id, "deprovisioned", |r| r.deprovisioned_at.is_some())
                .await;
            assert_eq!(
                h.logged("grant", &done),
                1,
                "round {round}: {:?}",
                h.log_lines()
            );
            assert_eq!(
                h.logged("revoke", &done),
                1,
                "round {round}: {:?}",
                h.log_lines()
            );
        }
        h.stop().await;
    })
    .await;
}

/// Every refusal has the API's JSON error shape and the status that says
/// what went wrong: too large (413), not JSON (415), not one JSON value
/// (400), no such method (405), a request target too long (414); approval
/// comments and deny reasons are free text under the same rule as reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_is_refused_in_the_error_shape() {
    bounded(async {
        let h = boot(CATALOG).await;
        let http = reqwest::Client::new();
        let send = |method: reqwest::Method,
                    path: String,
                    content_type: Option<&'static str>,
                    body: String| {
            let mut req = http
                .request(method, format!("{}{path}", h.base))
                .bearer_auth(token("alice"));
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            async move {
                let response = req.body(body).send().await.unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{status} is not JSON ({e}): {text}"));
                (status, value)
            }
        };
        let json = Some("application/json");
        let valid = r#"{"entitlement":"logs-read","reason":"x"}"#;
        // Method, path, content type, body; the status and error code.
        type Case = (
            reqwest::Method,
            String,
            Option<&'static str>,
            String,
            u16,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                reqwest::Method::POST,
                "/v1/requests".into(),
                json,
                format!(
                    r#"{{"entitlement":"logs-read","reason":"{}"}}"#,
                    "x".repeat(70_000)
                ),
                413,
                "payload_too_large",
            ),
            (
                reqwest::Method::POST,
                "/v1/requests".into(),
                json,
                format!("{valid} trailing"),
                400,
                "invalid_input",
            ),
            (
                reqwest::Method::POST,
                "/v1/requests".into(),
                json,
                format!("{valid}{valid}"),
                400,
                "invalid_input",
            ),
            // serde would read the struct from an array; schemathesis found
            // `[false]` accepted as a reconcile body.
            (
                reqwest::Method::POST,
                "/v1/requests".into(),
                json,
                r#"["logs-read", null, "x"]"#.into(),
                400,
                "invalid_input",
            ),
            // Only JSON's whitespace makes an empty body: a form feed is not
            // `{}` (schemathesis found it read as one). Refused before the
            // handler looks the request up.
            (
                reqwest::Method::POST,
                "/v1/requests/nope/cancel".into(),
                json,
                "\u{c}".into(),
                400,
                "invalid_input",
            ),
            (
                reqwest::Method::POST,
                "/v1/requests".into(),
                Some("text/plain"),
                valid.into(),
                415,
                "unsupported_media_type",
            ),
            (
                reqwest::Method::POST,
                "/v1/requests".into(),
                None,
                valid.into(),
                415,
                "unsupported_media_type",
            ),
            (
                reqwest::Method::DELETE,
                "/v1/requests".into(),
                None,
                String::new(),
                405,
                "method_not_allowed",
            ),
            (
                reqwest::Method::GET,
                format!("/v1/requests?requester={}", "a".repeat(10_000)),
                None,
                String::new(),
                414,
                "uri_too_long",
            ),
        ];
        for (method, path, content_type, body, status, code) in cases {
            let what = format!(
                "{method} {} ({} bytes)",
                &path[..path.len().min(40)],
                body.len()
            );
            let (got, value) = send(method, path, content_type, body).await;
            assert_eq!(got, status, "{what}: {value}");
            assert_eq!(value["error"]["code"], code, "{what}: {value}");
        }
        // The control: a JSON body with a charset parameter is accepted.
        let (got, _) = send(
            reqwest::Method::POST,
            "/v1/requests".into(),
            Some("application/json; charset=utf-8"),
            valid.into(),
        )
        .await;
        assert_eq!(got, 201);

        // Comments and deny reasons: bounded, and no control characters.
        let r = h
            .client("alice")
            .create_request(&ask("db-prod", "debugging"))
            .await
            .unwrap();
        let approve = format!("/v1/requests/{}/approve", r.id);
        let deny = format!("/v1/requests/{}/deny", r.id);
        for (path, body, field) in [
            (&approve, json!({"comment": "x".repeat(2001)}), "comment"),
            (
                &approve,
                json!({"comment": "ok\u{1b}[1Aapproved"}),
                "comment",
            ),
            (&deny, json!({"reason": "no\u{0}"}), "reason"),
        ] {
            let (code, value) = h
                .raw("POST", path, Some("bob"), Some(&body.to_string()))
                .await;
            assert_eq!(code, 400, "{path}: {value}");
            assert_eq!(value["error"]["field"], field, "{path}: {value}");
        }
        let (code, value) = h
            .raw(
                "POST",
                &approve,
                Some("bob"),
                Some(&json!({"comment": "line one\nline two"}).to_string()),
            )
            .await;
        assert_eq!(code, 200, "{value}");
        assert_eq!(value["approvals"][0]["comment"], "line one\nline two");
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_cancel_release_and_revoke() {
    bounded(async {
        let h = boot(CATALOG).await;
        let (alice, bob, carol, admin, dave) = (
            h.client("alice"),
            h.client("bob"),
            h.client("carol"),
            h.client("admin"),
            h.client("dave"),
        );

        // Deny needs a reason.
        let r = alice
            .create_request(&ask("db-prod", "debugging"))
            .await
            .unwrap();
        for reason in ["", "  "] {
            let (code, _, field) = refusal(
                bob.act(
                    &r.id,
                    &Action::Deny {
                        reason: reason.into(),
                    },
                )
                .await,
            );
            assert_eq!((code, field.as_deref()), (400, Some("reason")));
        }
        let (code, body) = h
            .raw(
                "POST",
                &format!("/v1/requests/{}/deny", r.id),
                Some("bob"),
                Some("{}"),
            )
            .await;
        assert_eq!((code, &body["error"]["field"]), (400, &json!("reason")));
        let denied = bob
            .act(
                &r.id,
                &Action::Deny {
                    reason: "use the replica".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(denied.state, "denied");
        assert_eq!(denied.end_reason.as_deref(), Some("use the replica"));
        assert_eq!(denied.ended_by.as_deref(), Some("bob"));
        assert_eq!(status(bob.act(&r.id, &approve()).await), 409);

        // Only the requester cancels; a cancelled request stays cancelled.
        let r = alice
            .create_request(&ask("db-prod", "debugging again"))
            .await
            .unwrap();
        assert_eq!(status(carol.act(&r.id, &Action::Cancel).await), 403);
        assert_eq!(status(dave.act(&r.id, &Action::Cancel).await), 404);
        assert_eq!(status(admin.act(&r.id, &Action::Cancel).await), 403);
        let cancelled = alice.act(&r.id, &Action::Cancel).await.unwrap();
        assert_eq!(cancelled.state, "cancelled");
        let (code, kind, _) = refusal(alice.act(&r.id, &Action::Cancel).await);
        assert_eq!((code, kind.as_str()), (409, "conflict"));
        assert_eq!(status(bob.act(&r.id, &approve()).await), 409);
        let (code, _) = h
            .raw(
                "POST",
                &format!("/v1/requests/{}/cancel", r.id),
                Some("alice"),
                Some(r#"{"x":1}"#),
            )
            .await;
        assert_eq!(code, 400);

        // Release ends one's own active grant and removes it from the target.
        let r = alice.create_request(&ask("logs-read", "")).await.unwrap();
        h.wait_state(&r.id, "active").await;
        assert_eq!(status(bob.act(&r.id, &Action::Release).await), 404);
        assert_eq!(status(alice.act(&r.id, &Action::Cancel).await), 409);
        let released = alice.act(&r.id, &Action::Release).await.unwrap();
        assert_eq!(released.state, "released");
        let done = h
            .wait_for(&r.id, "deprovisioned", |r| r.deprovisioned_at.is_some())
            .await;
        assert_eq!(
            (h.logged("grant", &done), h.logged("revoke", &done)),
            (1, 1)
        );
        assert_eq!(status(alice.act(&r.id, &Action::Release).await), 409);

        // Only admins revoke, with a reason.
        let r = alice
            .create_request(&ask("db-prod", "hotfix"))
            .await
            .unwrap();
        bob.act(&r.id, &approve()).await.unwrap();
        h.wait_state(&r.id, "active").await;
        let (code, kind, _) = refusal(
            carol
                .act(
                    &r.id,
                    &Action::Revoke {
                        reason: "no".into(),
                    },
                )
                .await,
        );
        assert_eq!((code, kind.as_str()), (403, "forbidden"));
        assert_eq!(
            status(
                alice
                    .act(
                        &r.id,
                        &Action::Revoke {
                            reason: "no".into()
                        }
                    )
                    .await
            ),
            403
        );
        let (code, _, field) = refusal(
            admin
                .act(
                    &r.id,
                    &Action::Revoke {
                        reason: String::new(),
                    },
                )
                .await,
        );
        assert_eq!((code, field.as_deref()), (400, Some("reason")));
        let revoked = admin
            .act(
                &r.id,
                &Action::Revoke {
                    reason: "policy".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (revoked.state.as_str(), revoked.ended_by.as_deref()),
            ("revoked", Some("admin"))
        );
        let done = h
            .wait_for(&r.id, "deprovisioned", |r| r.deprovisioned_at.is_some())
            .await;
        assert_eq!(
            (h.logged("grant", &done), h.logged("revoke", &done)),
            (1, 1)
        );
        assert_eq!(
            status(
                admin
                    .act(
                        &r.id,
                        &Action::Revoke {
                            reason: "again".into()
                        }
                    )
                    .await
            ),
            409
        );

        // Unknown and malformed ids are simply not found.
        for id in ["r_doesnotexist", "bad%20id"] {
            let (code, body) = h
                .raw("GET", &format!("/v1/requests/{id}"), Some("admin"), None)
                .await;
            assert_eq!(
                (code, &body["error"]["code"]),
                (404, &json!("not_found")),
                "{id}"
            );
            let (code, _) = h
                .raw(
                    "POST",
                    &format!("/v1/requests/{id}/cancel"),
                    Some("admin"),
                    None,
                )
                .await;
            assert_eq!(code, 404, "{id}");
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_open_request_per_user_and_entitlement() {
    bounded(async {
        let h = boot(CATALOG).await;
        let alice = h.client("alice");
        let first = alice.create_request(&ask("db-prod", "one")).await.unwrap();
        let (code, kind, _) = refusal(alice.create_request(&ask("db-prod", "two")).await);
        assert_eq!((code, kind.as_str()), (409, "conflict"));
        // Another user, or another entitlement, is unaffected.
        h.client("bob")
            .create_request(&ask("db-prod", "mine"))
            .await
            .unwrap();
        let other = alice.create_request(&ask("logs-read", "")).await.unwrap();
        h.wait_state(&other.id, "active").await;
        assert_eq!(
            status(alice.create_request(&ask("logs-read", "")).await),
            409
        );
        // Once the first has ended, a new one may be opened.
        alice.act(&first.id, &Action::Cancel).await.unwrap();
        alice
            .create_request(&ask("db-prod", "three"))
            .await
            .unwrap();
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_sees_what() {
    bounded(async {
        let h = boot(CATALOG).await;
        let (alice, bob, dave, admin) = (
            h.client("alice"),
            h.client("bob"),
            h.client("dave"),
            h.client("admin"),
        );
        let pending = alice
            .create_request(&ask("db-prod", "query"))
            .await
            .unwrap();

        let (code, kind, _) = refusal(dave.get_request(&pending.id).await);
        assert_eq!((code, kind.as_str()), (404, "not_found"));
        assert!(dave
            .list_requests(&RequestQuery::default())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(bob.get_request(&pending.id).await.unwrap().id, pending.id);
        assert_eq!(admin.get_request(&pending.id).await.unwrap().id, pending.id);

        let awaiting = RequestQuery {
            awaiting_me: Some(true),
            ..RequestQuery::default()
        };
        let ids = |rs: Vec<RequestView>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(bob.list_requests(&awaiting).await.unwrap()),
            [pending.id.as_str()]
        );
        assert!(alice.list_requests(&awaiting).await.unwrap().is_empty());
        assert!(admin.list_requests(&awaiting).await.unwrap().is_empty());

        let active = alice
            .create_request(&for_secs("logs-read", "", 60))
            .await
            .unwrap();
        h.wait_state(&active.id, "active").await;
        let mine = RequestQuery {
            mine: Some(true),
            ..RequestQuery::default()
        };
        assert_eq!(alice.list_requests(&mine).await.unwrap().len(), 2);
        assert!(bob.list_requests(&mine).await.unwrap().is_empty());
        let pending_only = RequestQuery {
            state: Some("pending, approved".into()),
            ..RequestQuery::default()
        };
        assert_eq!(
            ids(admin.list_requests(&pending_only).await.unwrap()),
            [pending.id.as_str()]
        );
        let limited = RequestQuery {
            limit: Some(1),
            ..RequestQuery::default()
        };
        assert_eq!(admin.list_requests(&limited).await.unwrap().len(), 1);

        let grants = alice.grants().await.unwrap();
        assert_eq!(ids(grants.clone()), [active.id.as_str()]);
        let left = grants[0].time_left_seconds.expect("time left while active");
        assert!((30..=60).contains(&left), "{left}");
        assert!(!grants[0].revocation_overdue);
        assert_eq!(ids(admin.grants().await.unwrap()), [active.id.as_str()]);
        assert!(bob.grants().await.unwrap().is_empty());

        // Grants page like requests.
        let second = alice
            .create_request(&for_secs("flaky", "", 60))
            .await
            .unwrap();
        h.wait_state(&second.id, "active").await;
        let one = GrantsQuery {
            limit: Some(1),
            ..GrantsQuery::default()
        };
        let first = admin.grants_page(&one).await.unwrap();
        assert_eq!(ids(first.requests), [second.id.as_str()]);
        let rest = admin
            .grants_page(&GrantsQuery {
                cursor: first.next_cursor,
                ..one
            })
            .await
            .unwrap();
        assert_eq!(ids(rest.requests), [active.id.as_str()]);
        assert_eq!(rest.next_cursor, None);
        assert_eq!(alice.grants().await.unwrap().len(), 2);
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_name_the_parameter() {
    bounded(async {
        let h = boot(CATALOG).await;
        let cases = [
            ("/v1/requests?state=bogus", "admin", Some("state")),
            ("/v1/requests?state=pending,bogus", "admin", Some("state")),
            ("/v1/requests?limit=0", "admin", Some("limit")),
            ("/v1/requests?limit=1001", "admin", Some("limit")),
            ("/v1/requests?limit=ten", "admin", Some("limit")),
            ("/v1/requests?mine=perhaps", "admin", Some("mine")),
            ("/v1/requests?requester=a%20b", "admin", Some("requester")),
            ("/v1/requests?cursor=zz", "admin", Some("cursor")),
            // Hex of `12:a b`: well formed, but no request id.
            ("/v1/requests?cursor=31323a612062", "admin", Some("cursor")),
            ("/v1/requests?cursor=", "admin", Some("cursor")),
            ("/v1/grants?cursor=zz", "admin", Some("cursor")),
            ("/v1/grants?limit=0", "admin", Some("limit")),
            ("/v1/grants?colour=red", "admin", None),
            ("/v1/requests?colour=red", "admin", None),
            ("/v1/audit?limit=0", "admin", Some("limit")),
            ("/v1/audit?since=yesterday", "admin", Some("since")),
            ("/v1/audit?until=never", "admin", Some("until")),
            ("/v1/audit?colour=red", "admin", None),
            ("/v1/audit?action=bogus", "admin", Some("action")),
            ("/v1/audit?token=a%20b", "admin", Some("token")),
            ("/v1/audit?cursor=zz", "admin", Some("cursor")),
            // Hex of `0`: no event has seq 0.
            ("/v1/audit?cursor=30", "admin", Some("cursor")),
            // A cursor of the request lists is not one of the audit log's.
            ("/v1/audit?cursor=31323a6162", "admin", Some("cursor")),
        ];
        for (path, user, field) in cases {
            let (code, body) = h.raw("GET", path, Some(user), None).await;
            assert_eq!(code, 400, "{path}: {body}");
            assert_eq!(body["error"]["code"], "invalid_input", "{path}");
            match field {
                Some(f) => assert_eq!(body["error"]["field"], f, "{path}: {body}"),
                None => assert!(body["error"]["field"].is_string(), "{path}: {body}"),
            }
        }
        for path in [
            "/v1/requests?state=pending,active&limit=1000&mine=true",
            "/v1/audit?since=0&limit=5",
            "/v1/audit?action=requested&token=tok_abc",
        ] {
            assert_eq!(
                h.raw("GET", path, Some("admin"), None).await.0,
                200,
                "{path}"
            );
        }
        h.stop().await;
    })
    .await;
}

/// `GET /v1/audit` pages from the newest events to the oldest with its
/// own cursor in `X-Next-Cursor`, the filters holding on every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_pages_back_with_its_cursor() {
    bounded(async {
        let h = boot(CATALOG).await;
        let admin = h.client("admin");
        for n in 0..5 {
            admin
                .create_token(&airlock_server::api::CreateTokenBody {
                    name: format!("paged-{n}"),
                    expires_in: None,
                    scopes: None,
                    owner: None,
                })
                .await
                .unwrap();
        }
        let http = reqwest::Client::new();
        let (mut pages, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let mut url = format!("{}/v1/audit?action=token_created&limit=2", h.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let response = http
                .get(url)
                .bearer_auth(token("admin"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            cursor = response
                .headers()
                .get("x-next-cursor")
                .map(|v| v.to_str().unwrap().to_owned());
            let events: Vec<Value> = response.json().await.unwrap();
            assert!(
                events.iter().all(|e| e["action"] == "token_created"),
                "{events:?}"
            );
            pages.push(
                events
                    .iter()
                    .map(|e| e["seq"].as_i64().unwrap())
                    .collect::<Vec<_>>(),
            );
            if cursor.is_none() {
                break;
            }
        }
        // Each page in sequence order, each older than the one before.
        assert_eq!(pages.len(), 3, "{pages:?}");
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let seqs: Vec<i64> = pages.iter().rev().flatten().copied().collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{pages:?}");
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_revoke_is_retried_and_reported_overdue() {
    bounded(async {
        let h = boot(CATALOG).await;
        let alice = h.client("alice");
        let r = alice
            .create_request(&for_secs("flaky", "", 1))
            .await
            .unwrap();
        let active = h.wait_state(&r.id, "active").await;
        assert_eq!(h.logged("grant", &active), 1);

        let deadline = Instant::now() + SETTLE;
        let overdue = loop {
            let grants = alice.grants().await.unwrap();
            if let Some(g) = grants
                .into_iter()
                .find(|g| g.id == r.id && g.revocation_overdue)
            {
                break g;
            }
            assert!(
                Instant::now() < deadline,
                "never overdue: {:#?}",
                alice.get_request(&r.id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(overdue.state, "expired");
        assert!(overdue.deprovisioned_at.is_none() && overdue.time_left_seconds.is_none());
        let job = overdue.job.clone().expect("an outstanding revoke");
        assert_eq!(job.action, "revoke");
        assert!(job.attempts > 1, "{job:?}");
        let error = job.last_error.expect("the last error");
        assert!(
            error.contains("75") && error.contains("target unavailable"),
            "{error}"
        );
        assert!(h.logged("revoke-failed", &overdue) > 1);
        assert_eq!(h.logged("revoke", &overdue), 0);
        // Admins see it too; it is not someone else's business.
        assert!(h
            .client("admin")
            .grants()
            .await
            .unwrap()
            .iter()
            .any(|g| g.id == r.id && g.revocation_overdue));
        assert!(h.client("bob").grants().await.unwrap().is_empty());

        let events = audit_of(&h.client("admin"), &r.id).await;
        assert!(events.iter().any(|e| e.action == "revoke_attempt_failed"));
        assert!(events.iter().all(|e| e.action != "deprovisioned"));
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_start_is_provisioned_only_when_due() {
    bounded(async {
        let h = boot(CATALOG).await;
        #[expect(
            clippy::disallowed_methods,
            reason = "the test stands outside the server and uses the wall clock the server uses"
        )]
        let now = SystemTime::now();
        let start_at = humantime::format_rfc3339_millis(now + Duration::from_secs(2)).to_string();
        let ask = CreateRequest {
            start_at: Some(start_at.clone()),
            ..for_secs("logs-read", "", 1)
        };
        let r = h.client("alice").create_request(&ask).await.unwrap();
        assert_eq!((r.state.as_str(), r.scheduled), ("approved", true), "{r:?}");
        assert_eq!(millis(&r.activates_at), millis(&Some(start_at.clone())));
        assert_eq!(
            millis(&r.expires_at),
            millis(&Some(start_at.clone())) + 1000
        );

        tokio::time::sleep(Duration::from_millis(500)).await;
        let waiting = h.client("alice").get_request(&r.id).await.unwrap();
        assert_eq!(
            (waiting.state.as_str(), waiting.scheduled),
            ("approved", true)
        );
        assert_eq!(h.logged("grant", &waiting), 0);

        let active = h.wait_state(&r.id, "active").await;
        assert!(!active.scheduled);
        assert!(millis(&active.granted_at) >= millis(&Some(start_at)));
        assert_eq!(h.logged("grant", &active), 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_a_whole_lifecycle() {
    bounded(async {
        let h = boot(CATALOG).await;
        let admin = h.client("admin");
        let r = h
            .client("alice")
            .create_request(&for_secs("db-prod", "incident 9", 1))
            .await
            .unwrap();
        h.client("bob").act(&r.id, &approve()).await.unwrap();
        h.wait_for(&r.id, "deprovisioned", |r| r.deprovisioned_at.is_some())
            .await;
        let other = h
            .client("bob")
            .create_request(&ask("logs-read", ""))
            .await
            .unwrap();

        let (code, kind, _) = refusal(h.client("alice").audit(&AuditQuery::default()).await);
        assert_eq!((code, kind.as_str()), (403, "forbidden"));
        assert_eq!(status(h.client("bob").verify_audit().await), 403);

        let events = audit_of(&admin, &r.id).await;
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "requested",
                "approval_recorded",
                "approved",
                "granted",
                "expired",
                "deprovisioned"
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.request.as_deref() == Some(r.id.as_str())));
        assert!(events
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[1].prev_hash == w[0].hash));
        let actors: Vec<&str> = events.iter().map(|e| e.actor.as_str()).collect();
        assert_eq!(
            actors,
            ["alice", "bob", "bob", "system", "system", "system"]
        );
        assert_eq!(
            events[0].details.get("reason").map(String::as_str),
            Some("incident 9")
        );
        // The decision and the approval name the policies and the set's version.
        let version = &r.policy_version;
        assert_eq!(version.len(), 64, "{r:?}");
        assert_eq!(events[0].details.get("policy_version"), Some(version));
        assert_eq!(
            events[0].details.get("policies").map(String::as_str),
            Some("config.db-prod.request,config.db-prod.approvals")
        );
        assert_eq!(
            events[1].details.get("policies").map(String::as_str),
            Some("config.db-prod.approve")
        );

        let by_bob = admin
            .audit(&AuditQuery {
                user: Some("bob".into()),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert!(by_bob
            .iter()
            .any(|e| e.request.as_deref() == Some(other.id.as_str())));
        assert!(by_bob
            .iter()
            .any(|e| e.request.as_deref() == Some(r.id.as_str()) && e.action == "approved"));
        let last_two = admin
            .audit(&AuditQuery {
                limit: Some(2),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(last_two.len(), 2);

        let verify = admin.verify_audit().await.unwrap();
        assert!(verify.ok, "{verify:?}");
        assert!(verify.checked >= 6, "{verify:?}");
        assert!(verify.first_bad_seq.is_none() && verify.problem.is_none());
        h.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------- Cedar policies

/// `db-x` is routed by Cedar alone: engineers with a ticket may ask; one
/// `sre` approval always, plus one from `security` beyond an hour; carol
/// may not approve (a forbid beats her group's permit); nobody asks
/// outside hours... is not modelled here; dave (sales) is forbidden.
const DB_X: &str = r#"
[entitlements.db-x]
max_duration = "4h"
connector = "log"
"#;

const DB_X_POLICIES: &str = r#"
@id("eng-with-ticket")
permit (principal in Airlock::Group::"eng", action == Airlock::Action::"request",
        resource == Airlock::Entitlement::"db-x")
when { context.has_ticket };

@id("owner-tier")
@approvals("1") @approvers("sre")
permit (principal, action == Airlock::Action::"require_approval",
        resource == Airlock::Entitlement::"db-x");

@id("security-tier-beyond-an-hour")
@approvals("1") @approvers("security")
permit (principal, action == Airlock::Action::"require_approval",
        resource == Airlock::Entitlement::"db-x")
when { context.duration_seconds > 3600 };

@id("sre-and-security-approve")
permit (principal, action == Airlock::Action::"approve",
        resource == Airlock::Entitlement::"db-x")
when { principal in Airlock::Group::"sre" || principal in Airlock::Group::"security" };

@id("not-carol")
forbid (principal == Airlock::User::"carol", action == Airlock::Action::"approve", resource);
"#;

/// The status, code and message of an API error.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String, String) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
            ..
        }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn ticketed(entitlement: &str, secs: u64) -> CreateRequest {
    CreateRequest {
        ticket: Some("INC-1".into()),
        ..for_secs(entitlement, "investigate", secs)
    }
}

#[tokio::test]
async fn cedar_tiers_need_different_people_and_explain_names_every_policy() {
    bounded(async {
        let h = boot_with_policies(DB_X, &[("db-x.cedar", DB_X_POLICIES)]).await;
        let r = h
            .client("alice")
            .create_request(&ticketed("db-x", 2 * 3600))
            .await
            .unwrap();
        assert_eq!(r.state, "pending");
        let tiers: Vec<(&str, u32)> = r
            .approval_tiers
            .iter()
            .map(|t| (t.policy.as_str(), t.count))
            .collect();
        assert_eq!(
            tiers,
            [("owner-tier", 1), ("security-tier-beyond-an-hour", 1)]
        );
        assert_eq!(r.required_approvals, 2);

        // carol is in `sre`, but a forbid on `approve` wins over the permit.
        let (code, kind, message) = refused(h.client("carol").act(&r.id, &approve()).await);
        assert_eq!((code, kind.as_str()), (403, "forbidden"), "{message}");
        assert!(message.contains("not-carol"), "{message}");
        // The requester never approves, whatever the policies say.
        assert_eq!(status(h.client("alice").act(&r.id, &approve()).await), 403);

        let after_bob = h.client("bob").act(&r.id, &approve()).await.unwrap();
        assert_eq!(after_bob.state, "pending");
        let granted = h.client("sam").act(&r.id, &approve()).await.unwrap();
        assert_eq!(granted.state, "approved");

        let explained = h.client("alice").explain(&r.id).await.unwrap();
        assert_eq!(explained.policy_version, r.policy_version);
        assert_eq!(
            explained.policies,
            [
                "eng-with-ticket",
                "owner-tier",
                "security-tier-beyond-an-hour"
            ]
        );
        assert!(
            explained.decision.starts_with("needs 1 from [sre]"),
            "{explained:?}"
        );
        let approvers: Vec<(&str, Vec<String>)> = explained
            .approvals
            .iter()
            .map(|a| (a.approver.as_str(), a.policies.clone()))
            .collect();
        assert_eq!(
            approvers,
            [
                ("bob", vec!["sre-and-security-approve".to_owned()]),
                ("sam", vec!["sre-and-security-approve".to_owned()])
            ]
        );
        assert!(explained.now.same_version);

        // An hour or less needs the owner tier only.
        let short = h
            .client("bob")
            .create_request(&ticketed("db-x", 1800))
            .await
            .unwrap();
        assert_eq!(short.required_approvals, 1, "{short:?}");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_policy_denial_is_refused_yet_recorded_and_explained() {
    bounded(async {
        let h = boot_with_policies(DB_X, &[("db-x.cedar", DB_X_POLICIES)]).await;
        // No ticket: no policy permits.
        let (code, kind, message) = refused(
            h.client("alice")
                .create_request(&for_secs("db-x", "x", 60))
                .await,
        );
        assert_eq!((code, kind.as_str()), (403, "denied_by_policy"));
        // ...and the message says what would be accepted.
        assert!(
            message.contains(
                "no policy permits; requests for `db-x` are permitted by \
                 `eng-with-ticket` (members of `eng`): when { context.has_ticket }"
            ),
            "{message}"
        );
        let mine = my_requests(&h.client("alice")).await;
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].state, "denied");
        assert!(message.contains(&mine[0].id), "{message}");
        let explained = h.client("alice").explain(&mine[0].id).await.unwrap();
        assert_eq!(explained.decision, "denied");
        assert!(explained
            .denied_because
            .as_deref()
            .is_some_and(|d| d.contains("no policy permits")));
        // A denied request does not block the next one.
        let ok = h
            .client("alice")
            .create_request(&ticketed("db-x", 60))
            .await
            .unwrap();
        assert_eq!(ok.state, "pending");
        // Entitlements list only what the caller could ask for.
        let offered: Vec<String> = h
            .client("dave")
            .entitlements()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert!(!offered.contains(&"db-x".to_owned()), "{offered:?}");
        // ...and what a request needs: the reason from the entitlement's
        // rules, the ticket from the policies.
        let listed = h.client("alice").entitlements().await.unwrap();
        let db_x = listed.iter().find(|e| e.id == "db-x").unwrap();
        assert_eq!(db_x.needs, ["ticket", "reason"]);
        assert!(!db_x.ticket_required, "the config does not demand one");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_reload_that_fails_validation_keeps_the_set_in_force() {
    bounded(async {
        let h = boot_with_policies(DB_X, &[("db-x.cedar", DB_X_POLICIES)]).await;
        let admin = h.client("admin");
        let before = admin.policy().await.unwrap();
        assert!(before.policies.contains(&"owner-tier".to_owned()));
        assert_eq!(status(h.client("alice").reload_policy().await), 403);

        let file = h._dir.path().join("policies").join("db-x.cedar");
        // An attribute the schema does not know: refused, with file:line:col.
        std::fs::write(
            &file,
            format!("{DB_X_POLICIES}\n@id(\"typo\")\npermit (principal, action == Airlock::Action::\"request\", resource) when {{ principal.tema == \"x\" }};\n"),
        )
        .unwrap();
        let (code, kind, message) = refused(admin.reload_policy().await);
        assert_eq!((code, kind.as_str()), (422, "invalid_policies"));
        assert!(message.contains("db-x.cedar:"), "{message}");
        assert!(message.contains("tema"), "{message}");
        assert_eq!(admin.policy().await.unwrap().version, before.version);
        // The old rules still decide.
        let r = h
            .client("alice")
            .create_request(&ticketed("db-x", 60))
            .await
            .unwrap();
        assert_eq!(r.policy_version, before.version);

        // A valid change takes effect at once: no approval tier any more.
        std::fs::write(
            &file,
            DB_X_POLICIES.replace("action == Airlock::Action::\"require_approval\"", "action == Airlock::Action::\"auto_approve\"")
                .replace("@approvals(\"1\") @approvers(\"sre\")", "")
                .replace("@approvals(\"1\") @approvers(\"security\")", ""),
        )
        .unwrap();
        let reloaded = admin.reload_policy().await.unwrap();
        assert_eq!(reloaded.outcome, "activated");
        assert_eq!(reloaded.previous_version, before.version);
        assert_ne!(reloaded.version, before.version);
        let r = h
            .client("bob")
            .create_request(&ticketed("db-x", 60))
            .await
            .unwrap();
        assert_eq!((r.state.as_str(), r.policy_version.as_str()), ("approved", reloaded.version.as_str()));
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn under_the_two_person_rule_a_second_admin_puts_a_change_in_force() {
    bounded(async {
        let h = boot_full(DB_X, &[("db-x.cedar", DB_X_POLICIES)], true, "").await;
        // A second admin for this test.
        let admin = h.client("admin");
        let before = admin.policy().await.unwrap();
        assert!(before.two_person);

        // Drop the ticket requirement: alice and bob gain `request` without one.
        let file = h._dir.path().join("policies").join("db-x.cedar");
        std::fs::write(
            &file,
            DB_X_POLICIES.replace("when { context.has_ticket };", ";"),
        )
        .unwrap();
        let proposed = admin.reload_policy().await.unwrap();
        assert_eq!(proposed.outcome, "proposed");
        let id = proposed.proposal.clone().unwrap();
        assert!(
            proposed
                .changes
                .iter()
                .any(|c| c.contains("`alice` gains request on `db-x` (without a ticket)")),
            "{:?}",
            proposed.changes
        );
        // Not in force yet.
        assert_eq!(admin.policy().await.unwrap().version, before.version);
        assert_eq!(admin.policy_proposals().await.unwrap().len(), 1);
        // The proposer cannot approve their own change; a non-admin cannot either.
        let (code, _, message) = refused(admin.approve_policy_proposal(&id).await);
        assert_eq!(code, 403, "{message}");
        assert!(message.contains("second admin"), "{message}");
        assert_eq!(
            status(h.client("bob").approve_policy_proposal(&id).await),
            403
        );
        // A second admin puts it in force; requests without a ticket now pass.
        let approved = h
            .client("admin2")
            .approve_policy_proposal(&id)
            .await
            .unwrap();
        assert_eq!(
            (
                approved.outcome.as_str(),
                approved.previous_version.as_str()
            ),
            ("activated", before.version.as_str())
        );
        assert_eq!(admin.policy().await.unwrap().version, proposed.version);
        assert!(admin.policy_proposals().await.unwrap().is_empty());
        let r = h
            .client("alice")
            .create_request(&for_secs("db-x", "x", 60))
            .await
            .unwrap();
        assert_eq!(r.policy_version, proposed.version);
        // A proposal can be approved once.
        assert_eq!(
            status(h.client("admin2").approve_policy_proposal(&id).await),
            404
        );
        // The audit log has the proposal with its diff.
        let events = admin.audit(&AuditQuery::default()).await.unwrap();
        let proposal = events
            .iter()
            .find(|e| e.action == "policy_proposed")
            .expect("a policy_proposed event");
        assert_eq!(proposal.actor, "admin");
        assert!(proposal.details["changes"].contains("alice"));
        assert!(events
            .iter()
            .any(|e| e.action == "policy_activated" && e.details["via"] == "start"));
        let activated = events
            .iter()
            .find(|e| e.action == "policy_activated" && e.details["via"] == "proposal")
            .expect("the approval is audited");
        assert_eq!(activated.actor, "admin2");
        assert_eq!(activated.details["proposed_by"], "admin");
        let verify = admin.verify_audit().await.unwrap();
        assert!(verify.ok, "{verify:?}");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_policy_can_require_recent_mfa_stated_by_the_authenticating_proxy() {
    bounded(async {
        let policy = r#"
@id("eng-with-recent-mfa")
permit (principal in Airlock::Group::"eng", action == Airlock::Action::"request",
        resource == Airlock::Entitlement::"db-x")
when { context.mfa_age_seconds >= 0 && context.mfa_age_seconds <= 600 };

@id("owner-tier")
@approvals("1") @approvers("sre")
permit (principal, action == Airlock::Action::"require_approval",
        resource == Airlock::Entitlement::"db-x");
"#;
        let h = boot_full(
            DB_X,
            &[("db-x.cedar", policy)],
            false,
            "mfa_header = \"X-Auth-MFA-At\"",
        )
        .await;
        #[expect(
            clippy::disallowed_methods,
            reason = "the test plays the proxy, stating MFA times on the server's wall clock"
        )]
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let body = r#"{"entitlement": "db-x", "reason": "x", "duration": 60}"#;
        let ask = |mfa: Option<String>| {
            let h = &h;
            async move {
                let mut req = reqwest::Client::new()
                    .post(format!("{}/v1/requests", h.base))
                    .bearer_auth(token("alice"))
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(m) = mfa {
                    req = req.header("X-Auth-MFA-At", m);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap())
            }
        };
        // No MFA stated, or too long ago: no policy permits.
        assert_eq!(ask(None).await.0, 403);
        assert_eq!(ask(Some((now - 3600).to_string())).await.0, 403);
        // A bad value names the header.
        let (code, bad) = ask(Some("yesterday".into())).await;
        assert_eq!(
            (code, bad["error"]["field"].as_str()),
            (400, Some("x-auth-mfa-at"))
        );
        // Five minutes ago: permitted.
        let (code, ok) = ask(Some((now - 300).to_string())).await;
        assert_eq!(code, 201, "{ok}");
        assert_eq!(ok["state"], "pending");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_is_for_admins_and_skips_connectors_that_cannot_list_holders() {
    bounded(async {
        let h = boot(CATALOG).await;
        // Command connectors cannot say who holds access: skipped, no drift.
        let report = h.client("admin").reconcile(true).await.unwrap();
        assert!(report.fix && report.clean(), "{report:#?}");
        let statuses: Vec<(&str, &str)> = report
            .connectors
            .iter()
            .map(|c| (c.connector.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(statuses, [("flaky", "skipped"), ("log", "skipped")]);
        assert_eq!(status(h.client("alice").reconcile(false).await), 403);
        let (code, body) = h
            .raw(
                "POST",
                "/v1/reconcile",
                Some("admin"),
                Some(r#"{"fix":"yes"}"#),
            )
            .await;
        assert_eq!((code, body["error"]["field"].as_str()), (400, Some("fix")));
        let (code, body) = h
            .raw(
                "POST",
                "/v1/reconcile",
                Some("admin"),
                Some(r#"{"fx":true}"#),
            )
            .await;
        assert_eq!(code, 400, "{body}");
        // An empty body reports without fixing.
        let (code, body) = h.raw("POST", "/v1/reconcile", Some("admin"), None).await;
        assert_eq!((code, body["fix"].as_bool()), (200, Some(false)));
        h.stop().await;
    })
    .await;
}

/// Writes `count` pending requests by carol straight into the database,
/// each needing an approval from `sre` (carol's group), newer than anything
/// made before: she sees them all, and none waits for her.
async fn fill_with_carols_requests(db: PathBuf, count: usize) {
    use airlock_core::approval::{ApprovalTier, Route, Verdict};
    use airlock_core::catalog::{Entitlement, TicketRule, User};
    use airlock_core::request::{self, LifecycleSettings, NewRequest};
    use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};
    use airlock_server::store::sql::{Location, SqlStore};
    use airlock_server::store::Store;

    let store = std::sync::Arc::new(SqlStore::open(&Location::Sqlite(db)).await.unwrap());
    let sre = GroupName::parse("sre").unwrap();
    let carol = User {
        id: UserId::parse("carol").unwrap(),
        groups: BTreeSet::from([sre.clone()]),
        roles: BTreeSet::new(),
        kind: Default::default(),
        token: None,
        external: None,
    };
    let now = airlock_testkit::wall_clock_unix_millis();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (store, carol, sre) = (store.clone(), carol.clone(), sre.clone());
        tasks.spawn(async move {
            let entitlement = Entitlement {
                id: EntitlementId::parse(&format!("filler-{i}")).unwrap(),
                description: String::new(),
                max_duration: Duration::from_secs(3600),
                default_duration: Duration::from_secs(600),
                reason_required: false,
                ticket: TicketRule {
                    required: false,
                    pattern: None,
                },
                connector: "log".into(),
                drift: airlock_core::drift::DriftPolicy::Report,
                sensitivity: airlock_core::standing::Sensitivity::default(),
                waiting: Default::default(),
                break_glass: None,
                open_to_externals: false,
            };
            let verdict = Verdict {
                route: Route::NeedsApprovals(vec![ApprovalTier {
                    count: 1,
                    groups: BTreeSet::from([sre]),
                    policy: "filler".to_owned(),
                }]),
                policy_version: "v1".to_owned(),
                policies: vec!["filler".to_owned()],
                errors: Vec::new(),
                waiting: Default::default(),
            };
            let id = RequestId::parse(&format!("filler{i:05}")).unwrap();
            let new = NewRequest {
                id: id.clone(),
                duration: None,
                reason: "filler".into(),
                ticket: None,
                start_at: None,
                break_glass: false,
                public_key: None,
            };
            let created = Timestamp::from_unix_millis(now + i as i64);
            let requester = carol.id.clone();
            store
                .create_request(
                    &id,
                    &requester,
                    Box::new(move |_| {
                        request::submit(
                            new.clone(),
                            &carol,
                            &entitlement,
                            None,
                            verdict.clone(),
                            &LifecycleSettings::default(),
                            created,
                        )
                    }),
                )
                .await
                .unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Lists filter in the database and page with a cursor: an approver's
/// inbox finds the request waiting for her behind 1,100 newer ones she
/// sees but may not approve, and her whole list comes page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_reach_past_a_thousand_newer_requests_page_by_page() {
    bounded(async {
        let h = boot(CATALOG).await;
        let waiting = h
            .client("alice")
            .create_request(&ask("db-prod", "query"))
            .await
            .unwrap();
        let h = h.restart(|db| fill_with_carols_requests(db, 1100)).await;
        let (carol, bob, dave) = (h.client("carol"), h.client("bob"), h.client("dave"));
        let awaiting = RequestQuery {
            awaiting_me: Some(true),
            ..RequestQuery::default()
        };
        let inbox = carol.list_requests_page(&awaiting).await.unwrap();
        let ids = |rs: &[RequestView]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&inbox.requests), [waiting.id.as_str()]);
        assert_eq!(inbox.next_cursor, None);
        // bob (also `sre`) awaits all of them, 100 to a page by default.
        let first = bob.list_requests_page(&awaiting).await.unwrap();
        assert_eq!(first.requests.len(), 100);
        assert!(first.next_cursor.is_some());
        let all = bob
            .all_requests(&RequestQuery {
                limit: Some(1000),
                ..awaiting.clone()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 1101);
        assert_eq!(all.last().map(|r| r.id.as_str()), Some(waiting.id.as_str()));
        let unique: BTreeSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(unique.len(), all.len());
        // The header carries the cursor; the body stays an array.
        let (code, body) = h
            .raw("GET", "/v1/requests?limit=2", Some("carol"), None)
            .await;
        assert_eq!(code, 200);
        assert_eq!(body.as_array().map(Vec::len), Some(2));
        let empty = dave
            .list_requests_page(&RequestQuery::default())
            .await
            .unwrap();
        assert!(empty.requests.is_empty() && empty.next_cursor.is_none());
        h.stop().await;
    })
    .await;
}

/// Who may call each endpoint, as the API's authorization rules say
/// (`airlock_core::access`); the test below checks every endpoint of the
/// OpenAPI document against it, for every kind of caller, on someone else's
/// request. A new endpoint without an entry here fails that test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No token needed.
    Anyone,
    /// Any user with a token.
    AnyUser,
    /// Admins and auditors.
    ReadEverything,
    /// Admins.
    Admin,
    /// Whoever may see the request (requester, its approvers, admins, auditors).
    SeesTheRequest,
    /// Its requester only.
    Requester,
    /// Its approvers (never its requester): who may see it, whose groups
    /// fill one of its tiers and whom the policy set lets approve.
    Decider,
    /// Whoever sees the request except its requester (on a break-glass
    /// use the review's groups decide the rest; the walk's request is an
    /// ordinary one, which such a caller is told has nothing to review).
    Reviewer,
    /// Any person managing their own API tokens (not a service principal).
    TokenHolder,
    /// The owner of the API token (alice's here) or an admin.
    TokenOwner,
    /// Whether someone (alice, the walk's requester) holds an entitlement:
    /// they themselves, admins, auditors and checkers.
    Checker,
    /// An access-review campaign: admins, auditors and its reviewers
    /// (`sre`: bob, carol).
    CampaignViewer,
    /// An item of a campaign about alice: its reviewers (bob, carol),
    /// people only, with the `approve` scope.
    CampaignReviewer,
    /// Post a target's log lines to a grant's timeline: admins and
    /// reporters.
    Reporter,
    /// The ticket system's signed webhook: no bearer token is enough,
    /// whoever's it is (401 without the signature).
    TicketSystem,
}

/// The API tokens of the authorization walk: a caller name that is not a
/// config user is an API token created at its start.
const WALK_TOKENS: [(&str, &str, &str, &str); 2] = [
    // name, owner, scopes, what it stands for
    (
        "admin-read",
        "admin",
        "read",
        "an admin's token with the `read` scope only",
    ),
    (
        "deploy",
        "deploy",
        "read,request,approve,admin,tokens",
        "a service principal's token with every scope",
    ),
];

fn who_may(method: &str, path: &str) -> Option<Who> {
    use Who::*;
    Some(match (method, path) {
        (
            "get",
            "/healthz"
            | "/readyz"
            | "/openapi.json"
            | "/metrics"
            | "/v1/audit/checkpoint-key"
            | "/v1/auth/oidc"
            | "/.well-known/jwks.json",
        ) => Anyone,
        ("get", "/v1/me" | "/v1/entitlements" | "/v1/requests" | "/v1/grants" | "/v1/reviews")
        | ("post", "/v1/requests") => AnyUser,
        ("post", "/v1/requests/{id}/review") => Reviewer,
        ("get", "/v1/requests/{id}" | "/v1/requests/{id}/explain") => SeesTheRequest,
        ("post", "/v1/requests/{id}/approve" | "/v1/requests/{id}/deny") => Decider,
        (
            "post",
            "/v1/requests/{id}/cancel"
            | "/v1/requests/{id}/release"
            | "/v1/requests/{id}/extend"
            | "/v1/requests/{id}/credential"
            | "/v1/requests/{id}/elevation",
        ) => Requester,
        (
            "post",
            "/v1/requests/{id}/revoke"
            | "/v1/policy/reload"
            | "/v1/policy/proposals/{id}/approve"
            | "/v1/reconcile",
        ) => Admin,
        (
            "get",
            "/v1/policy"
            | "/v1/policy/proposals"
            | "/v1/audit"
            | "/v1/audit/verify"
            | "/v1/audit/export"
            | "/v1/notifications"
            | "/v1/reports/approval-waits"
            | "/v1/reports/standing"
            | "/v1/reports/usage",
        ) => ReadEverything,
        ("get" | "post", "/v1/tokens") => TokenHolder,
        ("post", "/v1/tokens/{id}/revoke") => TokenOwner,
        ("get", "/v1/check") => Checker,
        ("get", "/v1/access-reviews") => AnyUser,
        ("post", "/v1/access-reviews") => Admin,
        ("get", "/v1/access-reviews/{id}") => CampaignViewer,
        ("post", "/v1/access-reviews/{id}/items/{item}") => CampaignReviewer,
        ("post", "/v1/grants/{id}/activity" | "/v1/requests/{id}/ssh-sessions") => Reporter,
        ("get", "/v1/requests/{id}/ssh-sessions" | "/v1/ssh-sessions/{id}") => SeesTheRequest,
        ("post", "/v1/tickets/{ref}/closed") => TicketSystem,
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_exactly_the_callers_its_rule_refuses() {
    // Every caller against every route: a few thousand calls, more than
    // `BOUND` allows on two busy cores.
    bounded_by(Duration::from_secs(120), async {
        // With SCIM on, so that the provisioning token is one of the callers,
        // and a service principal whose API token is another.
        let h = boot_full(
            &format!(
                "{CATALOG}\n[services.deploy]\ngroups = [\"eng\"]\nowners = [\"alice\"]\n\
                 [access_reviews.walk]\nreviewers = [\"sre\"]\ninclude = [\"eligibilities\"]\n\
                 [tickets]\nsecret = \"walk-ticket-secret-0123\"\n"
            ),
            &[],
            false,
            &scim_server(""),
        )
        .await;
        let (_, doc) = h.raw("GET", "/openapi.json", None, None).await;
        let http = reqwest::Client::new();
        let mut missing = Vec::new();
        let mut secrets = std::collections::HashMap::new();
        for (name, owner, scopes, _) in WALK_TOKENS {
            let creator = if owner == "deploy" { "alice" } else { owner };
            let created = h
                .client(creator)
                .create_token(&airlock_server::api::CreateTokenBody {
                    name: format!("walk-{name}"),
                    expires_in: None,
                    scopes: Some(scopes.split(',').map(str::to_owned).collect()),
                    owner: Some(owner.to_owned()),
                })
                .await
                .unwrap();
            secrets.insert(name, created.secret);
        }
        let bearer = |caller: &str| {
            secrets
                .get(caller)
                .cloned()
                .unwrap_or_else(|| token(caller))
        };
        let mut walk_tokens = 0;
        // alice's request, pending for `sre` (bob, carol); dave and sam are
        // strangers to it; admin and audrey see everything.
        // `scim` is the provisioning token: it may call nothing here;
        // `admin-read` and `deploy` are API tokens (`WALK_TOKENS`).
        let callers: [Option<&str>; 13] = [
            None,
            Some("scim"),
            Some("alice"),
            Some("bob"),
            Some("carol"),
            Some("dave"),
            Some("sam"),
            Some("admin"),
            Some("audrey"),
            Some("chuck"),
            Some("rhea"),
            Some("admin-read"),
            Some("deploy"),
        ];
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                let Some(rule) = who_may(method, path) else {
                    missing.push(format!("{method} {path}"));
                    continue;
                };
                for caller in callers {
                    // A fresh request per call: an allowed call may end it.
                    let r = h
                        .client("alice")
                        .create_request(&ask("db-prod", "authorization walk"))
                        .await;
                    let id = match r {
                        Ok(r) => r.id,
                        // alice's previous one is still open: end it first.
                        Err(_) => {
                            let open = h
                                .client("alice")
                                .list_requests(&RequestQuery {
                                    mine: Some(true),
                                    state: Some("pending,approved,active".into()),
                                    ..RequestQuery::default()
                                })
                                .await
                                .unwrap();
                            for o in open {
                                let _ = h.client("alice").act(&o.id, &Action::Cancel).await;
                                let _ = h
                                    .client("admin")
                                    .act(
                                        &o.id,
                                        &Action::Revoke {
                                            reason: "walk".into(),
                                        },
                                    )
                                    .await;
                            }
                            h.client("alice")
                                .create_request(&ask("db-prod", "authorization walk"))
                                .await
                                .unwrap()
                                .id
                        }
                    };
                    // Someone else's object: a fresh token of alice's.
                    let id = if path.starts_with("/v1/tokens/") {
                        walk_tokens += 1;
                        h.client("alice")
                            .create_token(&airlock_server::api::CreateTokenBody {
                                name: format!("walk-{walk_tokens}"),
                                ..airlock_server::api::CreateTokenBody::default()
                            })
                            .await
                            .unwrap()
                            .token
                            .id
                    } else {
                        id
                    };
                    // A fresh campaign, and its first item about alice.
                    let id = if path.starts_with("/v1/access-reviews/") {
                        let campaign = h.client("admin").start_access_review("walk").await.unwrap();
                        let detail = h.client("admin").access_review(&campaign.id).await.unwrap();
                        let item = detail
                            .items
                            .iter()
                            .find(|i| i.user.as_deref() == Some("alice"))
                            .unwrap()
                            .item;
                        format!("{}/items/{item}", campaign.id)
                    } else {
                        id
                    };
                    let target = match path.as_str() {
                        "/v1/check" => "/v1/check?principal=alice&entitlement=db-prod".to_owned(),
                        "/v1/access-reviews/{id}/items/{item}" => {
                            format!("/v1/access-reviews/{id}")
                        }
                        "/v1/access-reviews/{id}" => {
                            format!("/v1/access-reviews/{}", id.split('/').next().unwrap())
                        }
                        _ => path.replace("{id}", &id),
                    };
                    walk_tokens += 1;
                    let new_token = format!(r#"{{"name":"walk-new-{walk_tokens}"}}"#);
                    let body = match path.as_str() {
                        "/v1/requests" => Some(r#"{"entitlement":"logs-read","reason":"walk"}"#),
                        "/v1/tokens" if method == "post" => Some(new_token.as_str()),
                        "/v1/tokens/{id}/revoke" => None,
                        "/v1/access-reviews" if method == "post" => Some(r#"{"template":"walk"}"#),
                        "/v1/access-reviews/{id}/items/{item}" => {
                            Some(r#"{"decision":"confirm","comment":"walk"}"#)
                        }
                        p if p.ends_with("/deny") || p.ends_with("/revoke") => {
                            Some(r#"{"reason":"walk"}"#)
                        }
                        p if p.ends_with("/review") => {
                            Some(r#"{"acceptable":true,"comment":"walk"}"#)
                        }
                        p if p.ends_with("/extend") => Some(r#"{"by":"1m","reason":"walk"}"#),
                        p if p.ends_with("/activity") => {
                            Some(r#"{"source":"walk","lines":["not an sshd line"]}"#)
                        }
                        p if p.ends_with("/ssh-sessions") && method == "post" => Some(
                            r#"{"id":"walk","host":"web1","user":"u","client":"c","started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:00:01Z","ending":"exited","recording":"{}"}"#,
                        ),
                        _ => None,
                    };
                    let mut req = http.request(
                        method.to_uppercase().parse().unwrap(),
                        format!("{}{target}", h.base),
                    );
                    if let Some(u) = caller {
                        req = req.bearer_auth(bearer(u));
                    }
                    if let Some(b) = body {
                        req = req
                            .header("content-type", "application/json")
                            .body(b.to_owned());
                    }
                    let response = req.send().await.unwrap();
                    let code = response.status().as_u16();
                    let value = response.text().await.unwrap();
                    let who = caller.unwrap_or("no token");
                    let owner = caller == Some("alice");
                    let sees =
                        matches!(caller, Some("alice" | "bob" | "carol" | "admin" | "audrey"));
                    // A read-only token is allowed only what reads; the
                    // service (in `eng`, not `sre`) what any user may,
                    // but tokens and approvals never.
                    let reads = method == "get" && !path.starts_with("/v1/tokens");
                    let allowed = match rule {
                        Who::Anyone => true,
                        _ if caller.is_none() || caller == Some("scim") => false,
                        _ if caller == Some("admin-read") => {
                            reads && !matches!(rule, Who::Decider | Who::Requester | Who::Reviewer)
                        }
                        Who::TokenHolder | Who::TokenOwner if caller == Some("deploy") => false,
                        Who::TokenHolder => true,
                        Who::TokenOwner => matches!(caller, Some("alice" | "admin")),
                        Who::AnyUser => true,
                        Who::ReadEverything => matches!(caller, Some("admin" | "audrey")),
                        Who::Admin => caller == Some("admin"),
                        Who::SeesTheRequest => sees,
                        Who::Requester => owner,
                        Who::Reviewer => sees && !owner,
                        // Of those who see it, its approvers by group (the
                        // policy set lets `sre` approve `db-prod`).
                        Who::Decider => matches!(caller, Some("bob" | "carol")),
                        Who::Checker => {
                            matches!(caller, Some("alice" | "admin" | "audrey" | "chuck"))
                        }
                        Who::CampaignViewer => {
                            matches!(caller, Some("bob" | "carol" | "admin" | "audrey"))
                        }
                        Who::CampaignReviewer => matches!(caller, Some("bob" | "carol")),
                        Who::Reporter => matches!(caller, Some("admin" | "rhea")),
                        Who::TicketSystem => false,
                    };
                    // A policy's denial (`denied_by_policy`) is the policy
                    // set's answer to a caller the rules let through.
                    let error_code = serde_json::from_str::<Value>(&value)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let refused =
                        code == 401 || code == 404 || (code == 403 && error_code == "forbidden");
                    if allowed {
                        // Allowed callers may still meet the request's state
                        // (409) or a missing object (a proposal id; this
                        // server has no `server.oidc` to describe), never an
                        // authorization refusal.
                        // (Nor an SSH session: the walk records none; the
                        // companion's tests read one as its request's
                        // viewers and refuse it to others.)
                        let absent = path.contains("proposals")
                            || path == "/v1/auth/oidc"
                            || path.starts_with("/v1/ssh-sessions/");
                        assert!(
                            !refused || (code == 404 && absent),
                            "{method} {path} as {who}: allowed by {rule:?}, got {code} {value}"
                        );
                    } else {
                        assert!(
                            refused,
                            "{method} {path} as {who}: refused by {rule:?}, got {code} {value}"
                        );
                        if caller.is_none() || caller == Some("scim") {
                            assert_eq!(code, 401, "{method} {path} as {who}");
                        }
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "endpoints without an authorization rule in this test: {missing:?}"
        );
        h.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------- SCIM

/// The provisioning token the SCIM tests configure (`[server.scim]`).
fn scim_token() -> String {
    token("scim")
}

/// `[server]` lines turning SCIM on, on `database` (SQLite when empty).
fn scim_server(database: &str) -> String {
    let db = if database.is_empty() {
        String::new()
    } else {
        format!("database = '{database}'\n")
    };
    format!(
        "{db}scim = {{ token_sha256 = \"{}\" }}\n",
        token_hash(&scim_token())
    )
}

impl Harness {
    /// A SCIM call with `bearer` (the provisioning token unless told):
    /// status, body (`Null` when empty) and headers.
    async fn scim_as(
        &self,
        bearer: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let http = reqwest::Client::new();
        let mut req = http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, value, headers)
    }

    async fn scim(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, value, _) = self.scim_as(Some(&scim_token()), method, path, body).await;
        (status, value)
    }

    /// Provisions group `name` with `members` (SCIM ids); its SCIM id.
    async fn provision_group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let (code, body) = self
            .scim(
                "POST",
                "/scim/v2/Groups",
                Some(json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members})),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Provisions `user_name`; its SCIM id.
    async fn provision(&self, user_name: &str) -> String {
        let (code, body) = self
            .scim(
                "POST",
                "/scim/v2/Users",
                Some(json!({"schemas": [USER_SCHEMA], "userName": user_name, "active": true})),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// RFC 7643/7644 as an identity provider drives it, on SQLite and on
/// PostgreSQL: create, read, replace, patch (Entra's and Okta's shapes),
/// filter, page, delete; errors in SCIM's shape; uniqueness as 409.
async fn scim_protocol_on(database: &str) {
    let h = boot_full(CATALOG, &[], false, &scim_server(database)).await;
    let (code, spc) = h.scim("GET", "/scim/v2/ServiceProviderConfig", None).await;
    assert_eq!(code, 200);
    assert_eq!(spc["patch"]["supported"], json!(true));
    let (_, types) = h.scim("GET", "/scim/v2/ResourceTypes", None).await;
    assert_eq!(types["totalResults"], json!(2));
    let (code, schema) = h
        .scim("GET", &format!("/scim/v2/Schemas/{USER_SCHEMA}"), None)
        .await;
    assert_eq!((code, schema["id"].as_str()), (200, Some(USER_SCHEMA)));

    // Create: 201, the SCIM media type, Location, ETag and meta.
    let (code, alice, headers) = h
        .scim_as(
            Some(&scim_token()),
            "POST",
            "/scim/v2/Users",
            Some(json!({
                "schemas": [USER_SCHEMA], "userName": "alice", "externalId": "okta-1",
                "displayName": "Alice A.", "name": {"givenName": "Alice"},
                "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
            })),
        )
        .await;
    assert_eq!(code, 201, "{alice}");
    assert_eq!(headers["content-type"], "application/scim+json");
    let id = alice["id"].as_str().unwrap().to_owned();
    let location = alice["meta"]["location"].as_str().unwrap();
    assert!(
        location.ends_with(&format!("/scim/v2/Users/{id}")),
        "{location}"
    );
    assert_eq!(headers["location"], location);
    assert_eq!(headers["etag"], "W/\"1\"");
    assert_eq!(alice["meta"]["resourceType"], json!("User"));
    assert_eq!(alice["active"], json!(true));
    assert_eq!(alice["emails"][0]["value"], json!("alice@example.com"));
    // The same user name, in other letters: 409 uniqueness.
    let (code, err) = h
        .scim(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER_SCHEMA], "userName": "ALICE"})),
        )
        .await;
    assert_eq!(code, 409);
    assert_eq!(err["scimType"], json!("uniqueness"));
    assert_eq!(err["status"], json!("409"));
    assert_eq!(
        err["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    // A user name Airlock cannot use names the field.
    let (code, err) = h
        .scim(
            "POST",
            "/scim/v2/Users",
            Some(json!({"schemas": [USER_SCHEMA], "userName": "two words"})),
        )
        .await;
    assert_eq!(
        (code, err["scimType"].as_str()),
        (400, Some("invalidValue"))
    );
    assert!(
        err["detail"].as_str().unwrap().contains("userName"),
        "{err}"
    );

    // Filters and pages.
    for name in ["bob", "carol", "dave"] {
        h.provision(name).await;
    }
    let (code, found) = h
        .scim(
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22Alice%22",
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        found["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    assert_eq!(found["totalResults"], json!(1));
    assert_eq!(found["Resources"][0]["id"], json!(id));
    let (_, found) = h
        .scim(
            "GET",
            "/scim/v2/Users?filter=externalId+eq+%22okta-1%22",
            None,
        )
        .await;
    assert_eq!(found["totalResults"], json!(1));
    let (_, none) = h
        .scim(
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22zed%22",
            None,
        )
        .await;
    assert_eq!(
        (none["totalResults"].clone(), none["Resources"].clone()),
        (json!(0), json!([]))
    );
    let (_, page) = h
        .scim("GET", "/scim/v2/Users?startIndex=2&count=2", None)
        .await;
    assert_eq!(page["totalResults"], json!(4));
    assert_eq!(page["startIndex"], json!(2));
    assert_eq!(page["itemsPerPage"], json!(2));
    let (code, err) = h
        .scim("GET", "/scim/v2/Users?filter=userName%20co%20%22a%22", None)
        .await;
    assert_eq!(
        (code, err["scimType"].as_str()),
        (400, Some("invalidFilter"))
    );

    // Replace and patch (Okta's path, Entra's pathless `Replace` with a
    // string boolean, a filtered e-mail).
    let path = format!("/scim/v2/Users/{id}");
    let (code, replaced) = h
        .scim(
            "PUT",
            &path,
            Some(json!({"schemas": [USER_SCHEMA], "userName": "alice", "displayName": "Alice B."})),
        )
        .await;
    assert_eq!(code, 200, "{replaced}");
    assert_eq!(replaced["displayName"], json!("Alice B."));
    assert_eq!(replaced["meta"]["version"], json!("W/\"2\""));
    assert!(
        replaced.get("emails").is_none(),
        "a replace drops what it omits"
    );
    let (code, patched) = h
        .scim(
            "PATCH",
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "emails[type eq \"work\"].value", "value": "a@example.com"},
                {"op": "replace", "path": "displayName", "value": "Alice C."},
            ]})),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["emails"][0]["value"], json!("a@example.com"));
    assert_eq!(patched["displayName"], json!("Alice C."));
    // A stale If-Match is refused.
    let (code, _, _) = h.scim_as(Some(&scim_token()), "GET", &path, None).await;
    assert_eq!(code, 200);
    let http = reqwest::Client::new();
    let stale = http
        .put(format!("{}{path}", h.base))
        .bearer_auth(scim_token())
        .header("if-match", "W/\"1\"")
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": [USER_SCHEMA], "userName": "alice"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 412);

    // Groups: members added and removed in the usual shapes.
    let bob = h
        .scim(
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22bob%22",
            None,
        )
        .await
        .1["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gid = h.provision_group("Platform Engineers", &[&id]).await;
    let gpath = format!("/scim/v2/Groups/{gid}");
    let (code, group) = h
        .scim(
            "PATCH",
            &gpath,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": bob}]},
                {"op": "remove", "path": format!("members[value eq \"{id}\"]")},
            ]})),
        )
        .await;
    assert_eq!(code, 200, "{group}");
    assert_eq!(group["members"].as_array().unwrap().len(), 1);
    assert_eq!(group["members"][0]["value"], json!(bob));
    let (code, err) = h
        .scim(
            "PATCH",
            &gpath,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
            ]})),
        )
        .await;
    assert_eq!(
        (code, err["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{err}"
    );
    let (_, found) = h
        .scim(
            "GET",
            "/scim/v2/Groups?filter=displayName%20eq%20%22platform%20engineers%22",
            None,
        )
        .await;
    assert_eq!(found["totalResults"], json!(1));
    let (_, bob_view) = h.scim("GET", &format!("/scim/v2/Users/{bob}"), None).await;
    assert_eq!(bob_view["groups"][0]["value"], json!(gid));
    // bob's provisioned group is one of his groups now.
    let (_, me) = h.raw("GET", "/v1/me", Some("bob"), None).await;
    assert!(
        me["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("Platform-Engineers")),
        "{me}"
    );

    // Delete: 204, then 404 in SCIM's shape.
    let (code, _) = h.scim("DELETE", &gpath, None).await;
    assert_eq!(code, 204);
    let (code, _) = h.scim("DELETE", &path, None).await;
    assert_eq!(code, 204);
    let (code, err) = h.scim("GET", &path, None).await;
    assert_eq!((code, err["status"].as_str()), (404, Some("404")));
    let events = h
        .client("admin")
        .audit(&AuditQuery {
            user: Some("alice".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "user_provisioned",
        "user_updated",
        "membership_added",
        "membership_removed",
        "user_deleted",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_protocol_on_sqlite() {
    bounded(scim_protocol_on("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_protocol_on_postgres() {
    let Some(base) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let db = airlock_testkit::FreshDatabase::create(&base, "airlock_scim").await;
    bounded(scim_protocol_on(&db.url)).await;
    db.drop_now().await;
}

/// Only the provisioning token opens the SCIM API, and it opens nothing
/// else; without `[server.scim]` there is no SCIM API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_provisioning_token_reaches_scim_and_it_reaches_nothing_else() {
    bounded(async {
        let off = boot(CATALOG).await;
        let (code, _, _) = off
            .scim_as(Some(&scim_token()), "GET", "/scim/v2/Users", None)
            .await;
        assert_eq!(code, 404);
        off.stop().await;

        let h = boot_full(CATALOG, &[], false, &scim_server("")).await;
        let uid = h.provision("zed").await;
        let user_tokens: Vec<String> = USERS.iter().map(|(u, _, _)| token(u)).collect();
        for (method, route) in airlock_server::http::scim::SCIM_ROUTES {
            let path = route.replace("{id}", &uid);
            let path = if route.starts_with("/scim/v2/Schemas/") {
                format!("/scim/v2/Schemas/{USER_SCHEMA}")
            } else if route.starts_with("/scim/v2/ResourceTypes/") {
                "/scim/v2/ResourceTypes/User".to_owned()
            } else {
                path
            };
            let body = (*method != "get" && *method != "delete").then(|| json!({}));
            let mut callers: Vec<Option<&str>> = vec![None];
            callers.extend(user_tokens.iter().map(|t| Some(t.as_str())));
            for bearer in callers {
                let (code, err, _) = h
                    .scim_as(bearer, &method.to_uppercase(), &path, body.clone())
                    .await;
                assert_eq!(code, 401, "{method} {path} with {bearer:?}: {err}");
                assert_eq!(err["status"], json!("401"));
            }
            // The provisioning token gets past authentication (a `{}` body
            // is then refused as input, never as a caller).
            if *method != "delete" {
                let (code, err, _) = h
                    .scim_as(Some(&scim_token()), &method.to_uppercase(), &path, body)
                    .await;
                assert!(code != 401 && code != 403, "{method} {path}: {code} {err}");
            }
        }
        let (code, _) = h.raw("GET", "/v1/me", None, None).await;
        assert_eq!(code, 401);
        let refused = reqwest::Client::new()
            .get(format!("{}/v1/me", h.base))
            .bearer_auth(scim_token())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401);
        h.stop().await;
    })
    .await;
}

/// Deactivating a user over SCIM revokes their grant (the connector is
/// called) and cancels their pending request at once, recorded as the
/// provisioning client's doing with the operation as the reason; their
/// token is refused from then on, and deletion does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovisioning_revokes_grants_and_cancels_requests() {
    bounded(async {
        let h = boot_full(CATALOG, &[], false, &scim_server("")).await;
        let alice_id = h.provision("alice").await;
        let alice = h.client("alice");
        let api_token = alice
            .create_token(&airlock_server::api::CreateTokenBody {
                name: "ci".into(),
                ..airlock_server::api::CreateTokenBody::default()
            })
            .await
            .unwrap()
            .secret;
        let grant = alice
            .create_request(&ask("logs-read", "deploy"))
            .await
            .unwrap();
        let grant = h.wait_state(&grant.id, "active").await;
        assert_eq!(h.logged("grant", &grant), 1);
        let pending = alice
            .create_request(&ask("db-prod", "migration"))
            .await
            .unwrap();
        assert_eq!(pending.state, "pending");

        // Entra's shape: a pathless Replace with a string boolean.
        let (code, body) = h
            .scim(
                "PATCH",
                &format!("/scim/v2/Users/{alice_id}"),
                Some(json!({"schemas": [PATCH_OP], "Operations": [
                    {"op": "Replace", "value": {"active": "False"}}]})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["active"], json!(false));
        // Decided before the answer; the target's removal follows.
        let revoked = h.client("admin").get_request(&grant.id).await.unwrap();
        assert_eq!(revoked.state, "revoked");
        let reason = revoked.end_reason.clone().unwrap();
        assert!(
            reason.contains("deactivated") && reason.contains(&format!("PATCH /Users/{alice_id}")),
            "{reason}"
        );
        let cancelled = h.client("admin").get_request(&pending.id).await.unwrap();
        assert_eq!(cancelled.state, "cancelled");
        h.wait_for(&grant.id, "the revocation", |r| r.job.is_none())
            .await;
        assert_eq!(h.logged("revoke", &grant), 1);
        let events = h
            .client("admin")
            .audit(&AuditQuery {
                user: Some("alice".into()),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let by_scim: Vec<&str> = events
            .iter()
            .filter(|e| e.actor == "scim:provisioning")
            .map(|e| e.action.as_str())
            .collect();
        assert_eq!(
            by_scim,
            [
                "user_provisioned",
                "user_deactivated",
                "cancelled",
                "revoked"
            ]
        );
        // Her token no longer authenticates, saying why.
        let (code, err) = h.raw("GET", "/v1/me", Some("alice"), None).await;
        assert_eq!(code, 401);
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deactivated"),
            "{err}"
        );
        // Nor does an API token of hers.
        let refused = alice.with_token(&api_token).me().await.unwrap_err();
        assert_eq!(refused.status(), Some(401));
        assert!(refused.to_string().contains("deactivated"), "{refused}");

        // Deletion: bob's grant goes the same way, and he is refused.
        let bob_id = h.provision("bob").await;
        let bobs = h
            .client("bob")
            .create_request(&ask("logs-read", "look"))
            .await
            .unwrap();
        h.wait_state(&bobs.id, "active").await;
        let (code, _) = h
            .scim("DELETE", &format!("/scim/v2/Users/{bob_id}"), None)
            .await;
        assert_eq!(code, 204);
        let gone = h
            .wait_for(&bobs.id, "the revocation", |r| {
                r.state == "revoked" && r.job.is_none()
            })
            .await;
        assert_eq!(h.logged("revoke", &gone), 1);
        let (code, err) = h.raw("GET", "/v1/me", Some("bob"), None).await;
        assert_eq!(code, 401);
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deleted"),
            "{err}"
        );
        let report = h.client("admin").verify_audit().await.unwrap();
        assert!(report.ok, "{report:?}");
        h.stop().await;
    })
    .await;
}

/// Policies see provisioned groups; leaving one re-decides the member's
/// unfinished requests: a grant it no longer permits is revoked, a pending
/// request it no longer permits is denied, each naming the membership that
/// changed, and a request another group still permits stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_provisioned_group_redecides_open_requests() {
    bounded(async {
        let catalog = format!(
            "{CATALOG}
[entitlements.vendor-portal]
requestable_by = [\"contractors\"]
max_duration = \"1h\"
auto_approve = true
require_reason = false
connector = \"log\"

[entitlements.vendor-db]
requestable_by = [\"contractors\"]
max_duration = \"1h\"
approvers = [\"sre\"]
connector = \"log\"
"
        );
        let h = boot_full(&catalog, &[], false, &scim_server("")).await;
        let dave = h.provision("dave").await;
        let dave_client = h.client("dave");
        // Not yet in the group: the policies deny him.
        let refused = dave_client
            .create_request(&ask("vendor-portal", "x"))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, ClientError::Api { code, .. } if code == "denied_by_policy"),
            "{refused:?}"
        );
        let gid = h.provision_group("contractors", &[&dave]).await;
        let grant = dave_client
            .create_request(&ask("vendor-portal", "x"))
            .await
            .unwrap();
        let grant = h.wait_state(&grant.id, "active").await;
        let pending = dave_client
            .create_request(&ask("vendor-db", "y"))
            .await
            .unwrap();
        assert_eq!(pending.state, "pending");
        // The approver's view (explain) sees the stored group too.
        let (code, explained) = h
            .raw(
                "GET",
                &format!("/v1/requests/{}/explain", pending.id),
                Some("admin"),
                None,
            )
            .await;
        assert_eq!(code, 200);
        assert!(
            explained["now"]["decision"]
                .as_str()
                .unwrap()
                .contains("needs"),
            "{explained}"
        );

        let (code, body) = h
            .scim(
                "PATCH",
                &format!("/scim/v2/Groups/{gid}"),
                Some(json!({"schemas": [PATCH_OP], "Operations": [
                    {"op": "remove", "path": format!("members[value eq \"{dave}\"]")}]})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let revoked = h.client("admin").get_request(&grant.id).await.unwrap();
        assert_eq!(revoked.state, "revoked");
        let reason = revoked.end_reason.unwrap();
        assert!(reason.contains("left group `contractors`"), "{reason}");
        let denied = h.client("admin").get_request(&pending.id).await.unwrap();
        assert_eq!(denied.state, "denied");
        assert!(denied
            .end_reason
            .unwrap()
            .contains("left group `contractors`"));
        let done = h
            .wait_for(&grant.id, "the revocation", |r| r.job.is_none())
            .await;
        assert_eq!(h.logged("revoke", &done), 1);
        // His own requests in other entitlements are untouched.
        let (_, me) = h.raw("GET", "/v1/me", Some("dave"), None).await;
        assert!(
            !me["groups"]
                .as_array()
                .unwrap()
                .contains(&json!("contractors")),
            "{me}"
        );
        h.stop().await;
    })
    .await;
}
