//! Reconciliation end to end: the real server with PostgreSQL connectors in
//! grant mode on a fresh database, real logins and roles changed behind
//! Airlock's back, and `POST /v1/reconcile` through the typed client.
//! Covers a standing privilege (reported, and left alone under
//! `drift = "report"` but removed under `drift = "revoke"`), an active grant
//! removed out of band (granted again), an ended grant restored out of band
//! (revoked again), a target that is down (reported; the others are still
//! checked), and the scheduled run; the standing-privilege report over the
//! same holders. Also a SCIM deactivation taking a real
//! role away through the same connector, and an access review whose
//! reviewer removed a standing holder doing the same. Needs `AIRLOCK_TEST_POSTGRES_URL`.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::time::Duration;

use airlock_server::api::{CreateRequest, DurationInput, FindingView, ReconcileView, RequestView};
use airlock_server::client::Client;
use airlock_server::config::token_hash;
use airlock_server::server::Server;
use airlock_testkit::FreshDatabase;
use airlock_testkit::{bounded, until};
use fixtures::{audit_by_action, base_url, token, wait_for_state, ConfigText};
use sqlx::{Executor, PgPool};

mod fixtures;

/// No test may run longer than this, whatever the server does.
const BOUND: Duration = Duration::from_secs(40);

/// A target: a fresh database and, since roles are cluster-wide, role and
/// login names under a namespace of their own.
struct Target {
    db: FreshDatabase,
    admin: PgPool,
    ns: String,
}

impl Target {
    async fn new(url: &str) -> Target {
        let db = FreshDatabase::create(url, "airlock_reconcile").await;
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&db.url)
            .await
            .unwrap();
        let ns = format!("rc{}", hex::encode(rand::random::<[u8; 4]>()));
        Target { db, admin, ns }
    }

    fn name(&self, what: &str) -> String {
        format!("{}_{what}", self.ns)
    }

    async fn sql(&self, sql: &str) {
        self.admin
            .execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn create(&self, roles: &[&str], logins: &[&str]) {
        for role in roles {
            self.sql(&format!("CREATE ROLE \"{}\" NOLOGIN", self.name(role)))
                .await;
        }
        for login in logins {
            self.sql(&format!("CREATE ROLE \"{}\" LOGIN", self.name(login)))
                .await;
        }
    }

    /// Behind Airlock's back.
    async fn grant(&self, role: &str, login: &str) {
        let (role, login) = (self.name(role), self.name(login));
        self.sql(&format!("GRANT \"{role}\" TO \"{login}\"")).await;
    }

    async fn revoke(&self, role: &str, login: &str) {
        let (role, login) = (self.name(role), self.name(login));
        self.sql(&format!("REVOKE \"{role}\" FROM \"{login}\""))
            .await;
    }

    async fn member(&self, role: &str, login: &str) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members am \
             JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member \
             WHERE r.rolname = $1 AND m.rolname = $2)",
        )
        .bind(self.name(role))
        .bind(self.name(login))
        .fetch_one(&self.admin)
        .await
        .unwrap()
    }

    async fn cleanup(self, names: &[&str]) {
        for name in names {
            let _ = self
                .admin
                .execute(format!("DROP ROLE IF EXISTS \"{}\"", self.name(name)).as_str())
                .await;
        }
        self.admin.close().await;
        self.db.drop_now().await;
    }
}

/// A server whose users are alice, carol and dave (group `dba`) and admin;
/// `rest` adds `[server]` keys, connectors and entitlements.
async fn boot(dir: &tempfile::TempDir, server_extra: &str, rest: &str) -> (Server, Client) {
    let server_table = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = '{}'\n{server_extra}\n",
        dir.path().display()
    );
    let settings = ConfigText::starting_with(dir.path(), &server_table)
        .users(&[
            ("alice", "groups = [\"dba\"]"),
            ("carol", "groups = [\"dba\"]"),
            ("dave", "groups = [\"dba\"]"),
            ("admin", "groups = [\"ops\"]\nroles = [\"admin\"]"),
        ])
        .text(rest)
        .parse("reconcile.toml");
    let server = airlock_server::server::start(settings).await.unwrap();
    let client = fixtures::client(&base_url(&server), "admin");
    (server, client)
}

fn postgres_connector(name: &str, url: &str, role: &str, ns: &str, timeout: &str) -> String {
    format!(
        "\n[connectors.{name}]\ntype = \"postgres\"\nurl = \"{url}\"\nroles = [\"{role}\"]\n\
         mode = \"grant\"\nlogin_template = \"{ns}_{{user}}\"\ntimeout = \"{timeout}\"\n"
    )
}

fn entitlement(name: &str, connector: &str, drift: &str) -> String {
    format!(
        "\n[entitlements.{name}]\nrequestable_by = [\"dba\"]\nmax_duration = \"1h\"\n\
         auto_approve = true\nrequire_reason = false\nconnector = \"{connector}\"\ndrift = \"{drift}\"\n"
    )
}

async fn request(client: &Client, entitlement: &str, secs: u64) -> RequestView {
    let body = CreateRequest {
        duration: Some(DurationInput::Seconds(secs)),
        ..fixtures::ask(entitlement)
    };
    let created = client.create_request(&body).await.unwrap();
    wait_for_state(client, &created.id, "active").await
}

/// The findings of one connector as `kind principal request fix outcome`.
fn findings(report: &ReconcileView, connector: &str) -> Vec<String> {
    let c = report
        .connectors
        .iter()
        .find(|c| c.connector == connector)
        .unwrap_or_else(|| panic!("no report for `{connector}`: {report:#?}"));
    assert_eq!(c.status, "checked", "{connector}: {c:#?}");
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut lines: Vec<String> = c
        .findings
        .iter()
        .map(|f: &FindingView| {
            format!(
                "{} {} {} {} {}",
                f.kind,
                dash(&f.principal),
                dash(&f.request),
                f.fix,
                f.outcome
            )
        })
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_audited_and_fixed_as_each_entitlement_says() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    bounded(BOUND, async {
        let t = Target::new(&url).await;
        let names = ["read", "admin", "alice", "bob", "carol", "dave"];
        t.create(&["read", "admin"], &["alice", "bob", "carol", "dave"])
            .await;
        let dir = tempfile::tempdir().unwrap();
        let ns = t.ns.clone();
        let config = [
            postgres_connector("db", &t.db.url, &t.name("read"), &ns, "5s"),
            postgres_connector("dbx", &t.db.url, &t.name("admin"), &ns, "5s"),
            // Nothing listens on port 1: this target is down.
            postgres_connector(
                "down",
                "postgres://postgres@127.0.0.1:1/none",
                &t.name("read"),
                &ns,
                "1s",
            ),
            entitlement("db-read", "db", "report"),
            entitlement("db-admin", "dbx", "revoke"),
            "sensitivity = 3\n".to_owned(),
            entitlement("elsewhere", "down", "revoke"),
        ]
        .concat();
        let (server, admin) = boot(&dir, "reconcile_every = \"off\"", &config).await;
        let as_user = |u: &str| admin.with_token(&token(u));

        // (b) An active grant whose membership is removed out of band.
        let alice = request(&as_user("alice"), "db-admin", 3600).await;
        assert!(t.member("admin", "alice").await);
        t.revoke("admin", "alice").await;
        // (c) A grant that ended (removal confirmed) and came back out of band.
        let carol = request(&as_user("carol"), "db-admin", 2).await;
        until(
            Duration::from_secs(15),
            "carol's grant to be removed",
            || async {
                let r = admin.get_request(&carol.id).await.unwrap();
                r.deprovisioned_at.is_some().then_some(())
            },
        )
        .await;
        assert!(!t.member("admin", "carol").await);
        t.grant("admin", "carol").await;
        // A grant that is just as Airlock left it: no drift.
        let dave = request(&as_user("dave"), "db-admin", 3600).await;
        // (a) A standing privilege, granted out of band in both roles.
        t.grant("read", "bob").await;
        t.grant("admin", "bob").await;

        // Without --fix: everything is reported and audited, nothing changes.
        let report = admin.reconcile(false).await.unwrap();
        assert!(!report.fix);
        assert_eq!(
            findings(&report, "db"),
            [format!("unmanaged {ns}_bob - none not_attempted")]
        );
        assert_eq!(
            findings(&report, "dbx"),
            [
                format!("lingering {ns}_carol {} revoke not_attempted", carol.id),
                format!("missing {ns}_alice {} grant not_attempted", alice.id),
                format!("unmanaged {ns}_bob - remove_holder not_attempted"),
            ]
        );
        // (d) The target that is down is reported; the others were checked.
        let down = report
            .connectors
            .iter()
            .find(|c| c.connector == "down")
            .unwrap();
        assert_eq!(down.status, "error", "{down:#?}");
        assert!(
            down.error.as_deref().unwrap().contains("retryable"),
            "{down:#?}"
        );
        assert_eq!((report.unfixed, report.errors), (4, 1));
        assert!(t.member("read", "bob").await && t.member("admin", "bob").await);

        // The standing report sees the same holders, explains each and
        // rates it: db-admin is sensitivity 3 (critical), db-read 0; bob is
        // no Airlock user (one higher), dave's grant is Airlock's (one lower).
        let standing = admin.standing_report().await.unwrap();
        let rows: Vec<String> = standing
            .holders
            .iter()
            .map(|h| {
                format!(
                    "{} {} {} {} {} {} {} {}",
                    h.risk,
                    h.connector,
                    h.principal,
                    h.status,
                    h.user.as_deref().unwrap_or("-"),
                    h.kind,
                    h.entitlements.join(" "),
                    h.request.as_deref().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                format!("critical dbx {ns}_bob standing - unknown db-admin -"),
                format!(
                    "critical dbx {ns}_carol lingering carol person db-admin {}",
                    carol.id
                ),
                format!(
                    "high dbx {ns}_dave granted dave person db-admin {}",
                    dave.id
                ),
                format!("medium db {ns}_bob standing - unknown db-read -"),
            ],
            "{standing:#?}"
        );
        let granted = &standing.holders[2];
        assert!(
            granted.since.is_some() && granted.until.is_some(),
            "{granted:#?}"
        );
        assert_eq!(
            granted.approval.get("db-admin").map(String::as_str),
            Some("auto")
        );
        assert_eq!(
            standing.holders[0]
                .approval
                .get("db-admin")
                .map(String::as_str),
            Some("none: no Airlock user holds this principal")
        );
        let outcomes: Vec<(String, String)> = standing
            .connectors
            .iter()
            .map(|c| (c.connector.clone(), c.outcome.clone()))
            .collect();
        assert_eq!(
            outcomes,
            [("db", "listed"), ("dbx", "listed"), ("down", "failed")]
                .map(|(c, o)| (c.to_owned(), o.to_owned()))
        );
        assert_eq!(standing.by_status.get("standing"), Some(&2));
        assert_eq!(standing.by_risk.get("critical"), Some(&2));
        assert!(t.member("admin", "carol").await && !t.member("admin", "alice").await);
        let found = audit_by_action(&admin, "drift_found").await;
        assert_eq!(found.len(), 4, "{found:#?}");
        let standing = found
            .iter()
            .find(|e| e.details.get("connector").map(String::as_str) == Some("db"))
            .unwrap();
        assert_eq!(standing.actor, "admin");
        assert_eq!(
            standing.details.get("principal"),
            Some(&format!("{ns}_bob"))
        );
        assert_eq!(
            standing.details.get("kind").map(String::as_str),
            Some("unmanaged")
        );
        assert_eq!(
            standing.details.get("fixing").map(String::as_str),
            Some("false")
        );
        let lingering = found
            .iter()
            .find(|e| e.details.get("kind").map(String::as_str) == Some("lingering"))
            .unwrap();
        assert_eq!(lingering.request.as_deref(), Some(carol.id.as_str()));
        assert_eq!(lingering.subject.as_deref(), Some("carol"));

        // With --fix: each finding is fixed as the rule says, and audited.
        let report = admin.reconcile(true).await.unwrap();
        assert_eq!(
            findings(&report, "db"),
            [format!("unmanaged {ns}_bob - none none")]
        );
        assert_eq!(
            findings(&report, "dbx"),
            [
                format!("lingering {ns}_carol {} revoke fixed", carol.id),
                format!("missing {ns}_alice {} grant fixed", alice.id),
                format!("unmanaged {ns}_bob - remove_holder fixed"),
            ]
        );
        assert_eq!((report.unfixed, report.errors), (1, 1));
        assert!(
            t.member("read", "bob").await,
            "drift = report must leave the standing privilege alone"
        );
        assert!(
            !t.member("admin", "bob").await,
            "drift = revoke must remove the standing privilege"
        );
        assert!(
            !t.member("admin", "carol").await,
            "lingering access survived"
        );
        assert!(
            t.member("admin", "alice").await,
            "the missing grant is back"
        );
        assert!(
            t.member("admin", "dave").await,
            "an untouched grant was changed"
        );
        let fixed = audit_by_action(&admin, "drift_fixed").await;
        assert_eq!(fixed.len(), 3, "{fixed:#?}");
        assert!(fixed.iter().all(|e| e.actor == "admin"));
        let regranted = fixed
            .iter()
            .find(|e| e.details.get("kind").map(String::as_str) == Some("missing"))
            .unwrap();
        assert_eq!(regranted.request.as_deref(), Some(alice.id.as_str()));
        assert_eq!(
            regranted.details.get("fix").map(String::as_str),
            Some("grant")
        );
        // The requests themselves are untouched.
        let r = admin.get_request(&alice.id).await.unwrap();
        assert_eq!((r.state.as_str(), r.job), ("active", None));

        // Fixed drift stays fixed; what the rule leaves is reported again.
        let report = admin.reconcile(true).await.unwrap();
        assert_eq!(findings(&report, "dbx"), Vec::<String>::new());
        assert_eq!(
            findings(&report, "db"),
            [format!("unmanaged {ns}_bob - none none")]
        );

        // Only admins reconcile.
        let refused = as_user("alice").reconcile(false).await.unwrap_err();
        assert_eq!(refused.status(), Some(403), "{refused}");
        let verify = admin.verify_audit().await.unwrap();
        assert!(verify.ok, "{verify:?}");

        server.shutdown().await;
        t.cleanup(&names).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_run_fixes_without_being_asked() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    bounded(BOUND, async {
        let t = Target::new(&url).await;
        let names = ["admin", "bob"];
        t.create(&["admin"], &["bob"]).await;
        t.grant("admin", "bob").await;
        let dir = tempfile::tempdir().unwrap();
        let config = [
            postgres_connector("dbx", &t.db.url, &t.name("admin"), &t.ns, "5s"),
            entitlement("db-admin", "dbx", "revoke"),
        ]
        .concat();
        let (server, admin) = boot(&dir, "reconcile_every = \"1s\"", &config).await;

        until(
            Duration::from_secs(15),
            "the scheduled run to remove the standing privilege",
            || async { (!t.member("admin", "bob").await).then_some(()) },
        )
        .await;
        let fixed = until(Duration::from_secs(15), "the fix to be audited", || async {
            let events = audit_by_action(&admin, "drift_fixed").await;
            (!events.is_empty()).then_some(events)
        })
        .await;
        assert_eq!(fixed[0].actor, "system");
        assert_eq!(fixed[0].details.get("principal"), Some(&t.name("bob")));

        server.shutdown().await;
        t.cleanup(&names).await;
    })
    .await;
}

/// Deprovisioning over SCIM takes a real PostgreSQL role away: alice holds
/// `admin` through a grant; the identity provider deactivates her; the
/// connector's revocation removes the membership, and her token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scim_deactivation_revokes_a_real_role_grant() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    bounded(BOUND, async {
        let t = Target::new(&url).await;
        let names = ["admin", "alice"];
        t.create(&["admin"], &["alice"]).await;
        let dir = tempfile::tempdir().unwrap();
        let ns = t.ns.clone();
        let config = [
            postgres_connector("dbx", &t.db.url, &t.name("admin"), &ns, "5s"),
            entitlement("db-admin", "dbx", "report"),
        ]
        .concat();
        let scim_token = token("scim");
        let server_extra = format!(
            "reconcile_every = \"off\"\nscim = {{ token_sha256 = \"{}\" }}",
            token_hash(&scim_token)
        );
        let (server, admin) = boot(&dir, &server_extra, &config).await;
        let base = base_url(&server);
        let (_, created) = fixtures::scim(
            &base,
            &scim_token,
            "POST",
            "Users",
            serde_json::json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice"}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let alice = admin.with_token(&token("alice"));
        let grant = request(&alice, "db-admin", 3600).await;
        assert!(t.member("admin", "alice").await);

        let (deactivated, _) = fixtures::scim(
            &base,
            &scim_token,
            "PATCH",
            &format!("Users/{id}"),
            serde_json::json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations":[{"op":"replace","path":"active","value":false}]}),
        )
        .await;
        assert_eq!(deactivated, 200);
        let ended = until(
            Duration::from_secs(15),
            "the role to be revoked",
            || async {
                let r = admin.get_request(&grant.id).await.unwrap();
                r.deprovisioned_at.is_some().then_some(r)
            },
        )
        .await;
        assert_eq!(ended.state, "revoked");
        assert_eq!(ended.ended_by, None);
        assert!(ended.end_reason.unwrap().contains("deactivated"));
        assert!(!t.member("admin", "alice").await);
        assert!(alice.me().await.is_err(), "a deactivated user is refused");
        server.shutdown().await;
        t.cleanup(&names).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_review_takes_a_removed_standing_holder_out_of_its_target() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    bounded(BOUND, async {
        let t = Target::new(&url).await;
        let names = ["read", "alice", "bob", "mallory"];
        t.create(&["read"], &["alice", "bob", "mallory"]).await;
        let dir = tempfile::tempdir().unwrap();
        let ns = t.ns.clone();
        let config = [
            postgres_connector("db", &t.db.url, &t.name("read"), &ns, "5s"),
            entitlement("db-read", "db", "report"),
            // Nothing listens on port 1: its holders cannot be reviewed.
            postgres_connector(
                "down",
                "postgres://postgres@127.0.0.1:1/none",
                &t.name("read"),
                &ns,
                "1s",
            ),
            entitlement("elsewhere", "down", "report"),
            "\n[access_reviews.standing]\nreviewers = [\"ops\"]\ninclude = [\"standing\"]\n"
                .to_owned(),
        ]
        .concat();
        let (server, admin) = boot(&dir, "reconcile_every = \"off\"", &config).await;
        // alice's access is Airlock's grant: nothing to review. bob and
        // mallory hold the role out of band.
        request(&admin.with_token(&token("alice")), "db-read", 3600).await;
        t.grant("read", "bob").await;
        t.grant("read", "mallory").await;

        let campaign = admin.start_access_review("standing").await.unwrap();
        let detail = admin.access_review(&campaign.id).await.unwrap();
        let holders: Vec<(String, String)> = detail
            .items
            .iter()
            .map(|i| (i.principal.clone().unwrap(), i.status.clone().unwrap()))
            .collect();
        assert_eq!(
            holders,
            [
                (format!("{ns}_bob"), "standing".to_owned()),
                (format!("{ns}_mallory"), "standing".to_owned()),
            ],
            "{detail:#?}"
        );
        let started = audit_by_action(&admin, "access_review_started").await;
        assert!(
            started[0].details["unlisted"].starts_with("down: "),
            "{started:#?}"
        );

        let body = |decision: &str, comment: &str| airlock_server::api::DecideItemBody {
            decision: decision.to_owned(),
            comment: comment.to_owned(),
        };
        let removed = admin
            .decide_access_review_item(&campaign.id, 1, &body("remove", "nobody knows bob"))
            .await
            .unwrap();
        assert_eq!(removed.removal.as_deref(), Some("pending"));
        admin
            .decide_access_review_item(&campaign.id, 2, &body("confirm", "the backup job"))
            .await
            .unwrap();
        // The runner takes bob out of the role at once, and only bob.
        until(Duration::from_secs(15), "bob's removal", || async {
            let item = admin
                .access_review(&campaign.id)
                .await
                .unwrap()
                .items
                .remove(0);
            (item.removal.as_deref() == Some("done")).then_some(())
        })
        .await;
        assert!(!t.member("read", "bob").await);
        assert!(t.member("read", "mallory").await && t.member("read", "alice").await);
        let done = audit_by_action(&admin, "access_review_removed").await;
        assert_eq!(done.len(), 1, "{done:#?}");
        assert_eq!(done[0].details["principal"], format!("{ns}_bob"));
        let finished = admin.access_review(&campaign.id).await.unwrap().campaign;
        assert!(finished.completed_at.is_some(), "{finished:#?}");
        server.shutdown().await;
        t.cleanup(&names).await;
    })
    .await;
}
