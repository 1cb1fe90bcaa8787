//! API tokens and service principals through the real HTTP API, on SQLite
//! and on PostgreSQL: shown once, stored as a hash, scoped, expiring,
//! revocable, their last use recorded at most once a minute, and every
//! action done with one audited with its id. The server runs on a
//! `ManualClock`, so expiry and the last-use minute take no waiting.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::sync::Arc;
use std::time::Duration;

use airlock_server::api::{
    AuditQuery, CreateRequest, CreateTokenBody, CreatedTokenView, DurationInput, TokenView,
};
use airlock_server::client::{Action, Client, ClientError};
use airlock_server::config::{token_hash, Settings};
use airlock_server::engine::ManualClock;
use airlock_server::server::Server;
use airlock_testkit::bounded;
use fixtures::{audit_of, boot, on_database, token, T0};
use serde_json::Value;

mod fixtures;

const DAY: Duration = Duration::from_secs(86_400);

type Users<'a> = &'a [(&'a str, &'a [&'a str], &'a [&'a str])];

const USERS: Users<'static> = &[
    ("alice", &["eng"], &[]),
    ("bob", &["sre"], &[]),
    ("admin", &[], &["admin"]),
    ("carol", &["eng"], &[]),
];

struct Harness {
    server: Server,
    base: String,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    db: Option<airlock_testkit::FreshDatabase>,
}

impl Harness {
    /// A server on SQLite, or on a fresh PostgreSQL database.
    async fn start(postgres: bool) -> Option<Harness> {
        Harness::start_with(postgres, USERS).await
    }

    async fn start_with(postgres: bool, users: Users<'_>) -> Option<Harness> {
        let db = if postgres {
            let base = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL")?;
            Some(airlock_testkit::FreshDatabase::create(&base, "airlock_tokens").await)
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        // Policies see a service principal as `principal.kind == "service"`.
        std::fs::write(
            dir.path().join("policies/services.cedar"),
            "@id(\"no-services-on-logs\")\nforbid (principal, action == Airlock::Action::\"request\", \
             resource == Airlock::Entitlement::\"logs-read\")\nwhen { principal.kind == \"service\" };\n",
        )
        .unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let (server, base) = Harness::serve(dir.path(), db.as_ref(), users, &clock).await;
        Some(Harness {
            base,
            server,
            clock,
            _dir: dir,
            db,
        })
    }

    /// Stops the server and starts it again on the same database and clock,
    /// with `users` as the config's users now.
    async fn restart(self, users: Users<'_>) -> Harness {
        let Harness {
            server,
            clock,
            _dir,
            db,
            ..
        } = self;
        server.shutdown().await;
        let (server, base) = Harness::serve(_dir.path(), db.as_ref(), users, &clock).await;
        Harness {
            base,
            server,
            clock,
            _dir,
            db,
        }
    }

    async fn serve(
        dir: &std::path::Path,
        db: Option<&airlock_testkit::FreshDatabase>,
        users: Users<'_>,
        clock: &Arc<ManualClock>,
    ) -> (Server, String) {
        let root = dir.display().to_string();
        let mut toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'
token_max_lifetime = "90d"

[connectors.log]
type = "command"
program = "/bin/true"
timeout = "5s"

[entitlements.logs-read]
requestable_by = ["eng"]
max_duration = "1h"
auto_approve = true
require_reason = false
connector = "log"

[entitlements.db-prod]
requestable_by = ["eng"]
max_duration = "2h"
approvers = ["sre"]
require_reason = false
connector = "log"

[services.deploy]
groups = ["eng"]
owners = ["alice"]

[services.watcher]
groups = ["sre"]
owners = ["bob"]

[policy]
dir = '{root}/policies'
"#
        );
        for (name, groups, roles) in users {
            toml.push_str(&format!(
                "\n[users.{name}]\ngroups = {groups:?}\nroles = {roles:?}\ntoken_sha256 = \"{}\"\n",
                token_hash(&token(name))
            ));
        }
        let settings = Settings::parse("tokens.toml", &toml, dir).unwrap();
        boot(on_database(settings, db.map(|db| db.url.as_str())), clock).await
    }

    fn client(&self, user: &str) -> Client {
        fixtures::client(&self.base, user)
    }

    fn with(&self, secret: &str) -> Client {
        Client::new(&self.base, secret).unwrap()
    }

    async fn stop(self) {
        self.server.shutdown().await;
        if let Some(db) = self.db {
            db.drop_now().await;
        }
    }
}

/// Runs `test` on SQLite and on PostgreSQL (where available).
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Harness) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for postgres in [false, true] {
        if let Some(h) = Harness::start(postgres).await {
            bounded(Duration::from_secs(120), test(h)).await;
        }
    }
}

fn body(name: &str, scopes: &[&str], expires: Option<&str>) -> CreateTokenBody {
    CreateTokenBody {
        name: name.to_owned(),
        expires_in: expires.map(|e| DurationInput::Text(e.to_owned())),
        scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
        owner: None,
    }
}

/// A request for the entitlement's longest time, with a reason.
fn ask(entitlement: &str) -> CreateRequest {
    CreateRequest {
        duration: None,
        reason: "tokens test".to_owned(),
        ..fixtures::ask(entitlement)
    }
}

/// The status, error code, field and message of a refused call.
fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String, Option<String>, String) {
    match r {
        Err(ClientError::Api {
            status,
            code,
            message,
            field,
        }) => (status, code, field, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn create(c: &Client, b: &CreateTokenBody) -> CreatedTokenView {
    c.create_token(b).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_shown_once_scoped_expiring_revocable_and_audited() {
    on_both(|h| async move {
        let alice = h.client("alice");
        let created = create(&alice, &body("ci", &["read", "request"], Some("30d"))).await;
        assert!(created.secret.starts_with("alk_") && created.secret.len() > 60);
        let t = &created.token;
        assert_eq!(
            (t.name.as_str(), t.owner.as_str(), t.state.as_str()),
            ("ci", "alice", "active")
        );
        assert_eq!(t.scopes, ["read", "request"]);
        assert_eq!(t.expires_at, T0.plus(30 * DAY).to_rfc3339());
        // Never shown again: the list has no secret.
        let listed = serde_json::to_string(&alice.list_tokens(false).await.unwrap()).unwrap();
        assert!(!listed.contains(&created.secret));

        // Refusals name the field.
        let (status, _, field, _) = refusal(alice.create_token(&body("ci", &["read"], None)).await);
        assert_eq!((status, field), (409, None));
        let (status, _, field, message) = refusal(
            alice
                .create_token(&body("long", &["read"], Some("91d")))
                .await,
        );
        assert_eq!((status, field.as_deref()), (400, Some("expires_in")));
        assert!(message.contains("90d"), "{message}");
        let (status, _, field, _) = refusal(alice.create_token(&body("x", &["root"], None)).await);
        assert_eq!((status, field.as_deref()), (400, Some("scopes")));

        // The token acts as alice, narrowed to its scopes.
        let ci = h.with(&created.secret);
        let me = ci.me().await.unwrap();
        assert_eq!(
            (me.user.as_str(), me.token.as_deref()),
            ("alice", Some(t.id.as_str()))
        );
        let pending = ci.create_request(&ask("db-prod")).await.unwrap();
        let (status, code, _, message) = refusal(ci.reconcile(false).await);
        assert_eq!((status, code.as_str()), (403, "forbidden"));
        assert!(message.contains("`admin` scope"), "{message}");
        // A token without the `tokens` scope creates no token.
        let (status, _, _, message) =
            refusal(ci.create_token(&body("child", &["read"], None)).await);
        assert_eq!(status, 403);
        assert!(message.contains("`tokens` scope"), "{message}");

        // bob's read-only token may not approve; with `approve` it may.
        let bob = h.client("bob");
        let bob_read = h.with(&create(&bob, &body("r", &["read"], None)).await.secret);
        let (status, _, _, message) = refusal(
            bob_read
                .act(&pending.id, &Action::Approve { comment: None })
                .await,
        );
        assert_eq!(status, 403);
        assert!(message.contains("`approve` scope"), "{message}");
        let bob_approve = create(&bob, &body("a", &["approve"], None)).await;
        let approved = h
            .with(&bob_approve.secret)
            .act(&pending.id, &Action::Approve { comment: None })
            .await
            .unwrap();
        assert_eq!(approved.approvals[0].approver, "bob");

        // Every action done with a token carries its id in the audit.
        let admin = h.client("admin");
        let events = audit_of(&admin, &pending.id).await;
        let by: Vec<(&str, &str, Option<&str>)> = events
            .iter()
            .filter(|e| e.actor != "system")
            .map(|e| (e.action.as_str(), e.actor.as_str(), e.token.as_deref()))
            .collect();
        assert_eq!(
            by,
            [
                ("requested", "alice", Some(t.id.as_str())),
                (
                    "approval_recorded",
                    "bob",
                    Some(bob_approve.token.id.as_str())
                ),
                ("approved", "bob", Some(bob_approve.token.id.as_str())),
            ]
        );
        // What one token did, and nothing else.
        let by_token: Vec<String> = admin
            .audit(&AuditQuery {
                token: Some(bob_approve.token.id.clone()),
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(by_token, ["approval_recorded", "approved"]);
        let explained = alice.explain(&pending.id).await.unwrap();
        assert_eq!(explained.history[0].token.as_deref(), Some(t.id.as_str()));

        // Lists: one's own; everyone's for admins only, with owners.
        // Created at the same instant: compared in name order.
        let names = |ts: &[TokenView]| {
            let mut names: Vec<String> = ts
                .iter()
                .map(|t| format!("{}:{}", t.owner, t.name))
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(&alice.list_tokens(false).await.unwrap()),
            ["alice:ci"]
        );
        assert_eq!(
            names(&bob.list_tokens(false).await.unwrap()),
            ["bob:a", "bob:r"]
        );
        assert_eq!(refusal(bob.list_tokens(true).await).0, 403);
        assert_eq!(
            names(&admin.list_tokens(true).await.unwrap()),
            ["alice:ci", "bob:a", "bob:r"]
        );

        // Revoked by its owner (not by bob): refused at once, saying so.
        let (status, _, _, _) = refusal(bob.revoke_token(&t.id).await);
        assert_eq!(status, 403);
        assert_eq!(refusal(bob.revoke_token("tok_nosuch").await).0, 404);
        let revoked = alice.revoke_token(&t.id).await.unwrap();
        assert_eq!(
            (revoked.state.as_str(), revoked.revoked_by.as_deref()),
            ("revoked", Some("alice"))
        );
        let (status, _, _, message) = refusal(ci.me().await);
        assert_eq!(status, 401);
        assert!(message.contains("revoked"), "{message}");
        assert_eq!(refusal(alice.revoke_token(&t.id).await).0, 409);

        // Expired: refused, saying so (and listed as expired).
        let short = create(&alice, &body("short", &["read"], Some("1h"))).await;
        assert!(h.with(&short.secret).me().await.is_ok());
        h.clock.advance(Duration::from_secs(3600));
        let (status, _, _, message) = refusal(h.with(&short.secret).me().await);
        assert_eq!(status, 401);
        assert!(message.contains("expired"), "{message}");
        let mut states: Vec<String> = alice
            .list_tokens(false)
            .await
            .unwrap()
            .iter()
            .map(|t| format!("{}:{}", t.name, t.state))
            .collect();
        states.sort();
        assert_eq!(states, ["ci:revoked", "short:expired"]);
        assert_eq!(refusal(h.with("alk_unknown").me().await).0, 401);

        // Creation and revocation are audited; the chain holds.
        let token_events: Vec<(String, String)> = admin
            .audit(&AuditQuery::default())
            .await
            .unwrap()
            .iter()
            .filter(|e| e.action.starts_with("token_"))
            .map(|e| (e.action.clone(), e.details["token_id"].clone()))
            .collect();
        assert!(token_events.contains(&("token_created".to_owned(), t.id.clone())));
        assert!(token_events.contains(&("token_revoked".to_owned(), t.id.clone())));
        assert!(admin.verify_audit().await.unwrap().ok);
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_last_use_is_written_at_most_once_a_minute() {
    on_both(|h| async move {
        let alice = h.client("alice");
        let created = create(&alice, &body("ci", &["read"], None)).await;
        let last_use = || async {
            let tokens = alice.list_tokens(false).await.unwrap();
            tokens[0].last_used_at.clone()
        };
        assert_eq!(last_use().await, None);
        let ci = h.with(&created.secret);
        ci.me().await.unwrap();
        // The first use is written before that call is answered...
        assert_eq!(last_use().await, Some(T0.to_rfc3339()));
        // ...later ones within the minute are not written at all...
        h.clock.advance(Duration::from_secs(30));
        ci.me().await.unwrap();
        assert_eq!(last_use().await, Some(T0.to_rfc3339()));
        // ...and the first one after it is.
        h.clock.advance(Duration::from_secs(31));
        ci.me().await.unwrap();
        let later = T0.plus(Duration::from_secs(61)).to_rfc3339();
        assert_eq!(last_use().await, Some(later));
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_requests_with_its_token_never_approves_and_shows_as_a_service() {
    on_both(|h| async move {
        let (alice, bob) = (h.client("alice"), h.client("bob"));
        let for_deploy = CreateTokenBody {
            owner: Some("deploy".to_owned()),
            ..body("deploy-ci", &["read", "request"], None)
        };
        // Only its owners (and admins) make its tokens; nobody makes one for
        // another person.
        assert_eq!(refusal(bob.create_token(&for_deploy).await).0, 403);
        let as_bob = CreateTokenBody {
            owner: Some("bob".to_owned()),
            ..body("x", &["read"], None)
        };
        assert_eq!(
            refusal(h.client("admin").create_token(&as_bob).await).0,
            403
        );
        let deploy = create(&alice, &for_deploy).await;
        assert_eq!(deploy.token.owner, "deploy");
        assert_eq!(deploy.token.created_by, "alice");
        assert_eq!(
            alice.list_tokens(false).await.unwrap()[0].owner,
            "deploy",
            "an owner lists the service's tokens"
        );
        let svc = h.with(&deploy.secret);
        assert_eq!(svc.me().await.unwrap().kind, "service");
        let pending = svc.create_request(&ask("db-prod")).await.unwrap();
        assert_eq!(pending.requester, "deploy");
        // The policy set sees the kind: services may not ask for logs-read.
        let (status, code, _, _) = refusal(svc.create_request(&ask("logs-read")).await);
        assert_eq!((status, code.as_str()), (403, "denied_by_policy"));
        assert!(alice.create_request(&ask("logs-read")).await.is_ok());
        // A service in the approvers' group still never approves.
        let watcher = create(
            &bob,
            &CreateTokenBody {
                owner: Some("watcher".to_owned()),
                ..body("w", &["read", "approve"], None)
            },
        )
        .await;
        let (status, _, _, message) = refusal(
            h.with(&watcher.secret)
                .act(&pending.id, &Action::Approve { comment: None })
                .await,
        );
        assert_eq!(status, 403);
        assert!(message.contains("service principal"), "{message}");
        // It appears as a service, with its token, in the audit.
        let events = audit_of(&h.client("admin"), &pending.id).await;
        let requested = events.iter().find(|e| e.action == "requested").unwrap();
        assert_eq!(requested.actor, "deploy");
        assert_eq!(requested.actor_kind.as_deref(), Some("service"));
        assert_eq!(requested.token.as_deref(), Some(deploy.token.id.as_str()));
        // A service signs in with API tokens only: it has no other.
        let raw: Value = reqwest::Client::new()
            .get(format!("{}/v1/me", h.base))
            .bearer_auth("deploy")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(raw["error"]["code"], "unauthorized");
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_has_its_owners_rights_as_they_are_when_it_is_used() {
    for postgres in [false, true] {
        let Some(h) = Harness::start(postgres).await else {
            continue;
        };
        bounded(Duration::from_secs(120), async {
            // admin's token with every scope may reconcile while admin is one.
            let admin = h.client("admin");
            let all = ["read", "request", "approve", "admin", "tokens"];
            let created = create(&admin, &body("ops", &all, None)).await;
            assert!(h.with(&created.secret).reconcile(false).await.is_ok());
            let carols = create(&h.client("carol"), &body("c", &["read"], None)).await;
            // The config takes admin's role away, and carol is gone.
            let h = h
                .restart(&[
                    ("alice", &["eng"], &[]),
                    ("bob", &["sre"], &[]),
                    ("admin", &[], &[]),
                ])
                .await;
            let ops = h.with(&created.secret);
            let (status, _, _, message) = refusal(ops.reconcile(false).await);
            assert_eq!(status, 403);
            assert!(message.contains("needs admin"), "{message}");
            assert!(ops.me().await.unwrap().roles.is_empty());
            let (status, _, _, message) = refusal(h.with(&carols.secret).me().await);
            assert_eq!(status, 401);
            assert!(message.contains("no longer in the directory"), "{message}");
            h.stop().await;
        })
        .await;
    }
}
