//! Bundles through the real server: a real PostgreSQL role grant and a
//! command target that fails for good roll back together; approvals from
//! two tiers need two people, and one approval approves every part; a
//! release of one part and the expiry end every part (on an injected
//! clock). Needs the PostgreSQL server named by `AIRLOCK_TEST_POSTGRES_URL`
//! for the first.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test"
)]

use std::sync::Arc;
use std::time::Duration;

use airlock_server::api::{CreateRequest, DurationInput, RequestView};
use airlock_server::client::{Action, Client};
use airlock_server::engine::ManualClock;
use airlock_testkit::until;
use fixtures::{base_url, start_on, unique_name, ConfigText};
use sqlx::Connection;

mod fixtures;

/// A server with `rest` (connectors, entitlements, bundles) and the users
/// alice (requester), dave (in both approver groups) and sam (security).
async fn boot(
    rest: &str,
    clock: Option<Arc<ManualClock>>,
) -> (airlock_server::server::Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server_table = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = '{}'\n",
        dir.path().display()
    );
    let settings = ConfigText::starting_with(dir.path(), &server_table)
        .users(&[
            ("alice", "groups = [\"eng\"]"),
            ("dave", "groups = [\"dba\", \"security\"]"),
            ("sam", "groups = [\"security\"]"),
        ])
        .text(rest)
        .parse("bundles.toml");
    let server = start_on(settings, clock).await;
    (server, dir)
}

fn client(server: &airlock_server::server::Server, user: &str) -> Client {
    fixtures::client(&base_url(server), user)
}

fn ask(bundle: Option<&str>, entitlements: &[&str]) -> CreateRequest {
    CreateRequest {
        duration: Some(DurationInput::Text("1h".to_owned())),
        reason: "incident".to_owned(),
        ticket: Some("INC-7".to_owned()),
        bundle: bundle.map(str::to_owned),
        entitlements: entitlements.iter().map(|e| (*e).to_owned()).collect(),
        ..fixtures::ask("")
    }
}

/// Each part of the bundle `view` shows, as `entitlement state`.
fn parts(view: &RequestView) -> Vec<String> {
    view.bundle
        .as_ref()
        .unwrap()
        .parts
        .iter()
        .map(|p| format!("{} {}", p.entitlement, p.state))
        .collect()
}

/// Waits until every part of the bundle of `id` is in one of `states`.
async fn parts_reach(client: &Client, id: &str, what: &str, states: &[&str]) -> RequestView {
    until(Duration::from_secs(30), what, || async {
        let view = client.get_request(id).await.unwrap();
        view.bundle
            .as_ref()
            .unwrap()
            .parts
            .iter()
            .all(|p| states.contains(&p.state.as_str()))
            .then_some(view)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_a_failing_target_rolls_back_the_postgresql_grant() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let role = unique_name("airlock_b_role");
    let ns = unique_name("bn");
    let login = format!("{ns}_alice");
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    for sql in [
        format!("CREATE ROLE {role} NOLOGIN"),
        format!("CREATE ROLE {login} LOGIN"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    // The deploy target takes a while, then fails for good (a revoke of
    // what it never granted succeeds).
    let rest = format!(
        "\n[connectors.pg]\ntype = \"postgres\"\nurl = \"{url}\"\nroles = [\"{role}\"]\n\
         mode = \"grant\"\nlogin_template = \"{ns}_{{user}}\"\ntimeout = \"5s\"\n\
         \n[connectors.deployer]\ntype = \"command\"\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"[ \\\"$AIRLOCK_ACTION\\\" = revoke ] && exit 0; sleep 2; echo 'deploy host unreachable' >&2; exit 1\", \"deployer\"]\n\
         \n[entitlements.db-role]\nrequestable_by = [\"eng\"]\nmax_duration = \"2h\"\nauto_approve = true\nconnector = \"pg\"\n\
         \n[entitlements.deploy]\nrequestable_by = [\"eng\"]\nmax_duration = \"2h\"\nauto_approve = true\nconnector = \"deployer\"\n\
         \n[bundles.incident-kit]\ndescription = \"the database and deploys\"\nentitlements = [\"db-role\", \"deploy\"]\n"
    );
    let (server, _dir) = boot(&rest, None).await;
    let alice = client(&server, "alice");
    let created = alice
        .create_request(&ask(Some("incident-kit"), &[]))
        .await
        .unwrap();
    let bundle = created.bundle.as_ref().unwrap();
    assert_eq!(bundle.name.as_deref(), Some("incident-kit"));
    assert_eq!(bundle.id, created.id);
    assert_eq!(created.entitlement, "db-role");

    let ended = until(Duration::from_secs(30), "the rollback", || async {
        let view = alice.get_request(&created.id).await.unwrap();
        let done = view
            .bundle
            .as_ref()
            .unwrap()
            .parts
            .iter()
            .all(|p| p.state != "approved" && p.state != "active");
        (done && view.deprovisioned_at.is_some()).then_some(view)
    })
    .await;
    assert_eq!(parts(&ended), ["db-role revoked", "deploy failed"]);
    let b = ended.bundle.as_ref().unwrap();
    let (db, deploy) = (&b.parts[0], &b.parts[1]);
    assert!(
        db.granted_at.is_some(),
        "the role was granted first: {db:?}"
    );
    let why = db.end_reason.as_deref().unwrap();
    assert!(
        why.contains("`deploy`") && why.contains("deploy host unreachable"),
        "{why}"
    );
    assert!(
        deploy
            .end_reason
            .as_deref()
            .unwrap()
            .contains("deploy host unreachable"),
        "{deploy:?}"
    );
    // The failed part's own view shows the same bundle.
    let other = alice.get_request(&deploy.id).await.unwrap();
    assert_eq!(parts(&other), ["db-role revoked", "deploy failed"]);
    // The web UI's request page lists the parts and why each ended.
    let session = alice
        .create_token(&airlock_server::api::CreateTokenBody {
            name: "ui".to_owned(),
            expires_in: None,
            scopes: Some(vec!["read".to_owned()]),
            owner: None,
        })
        .await
        .unwrap()
        .secret;
    let page = reqwest::Client::new()
        .get(format!(
            "http://{}/ui/requests/{}",
            server.addr(),
            deploy.id
        ))
        .header("cookie", format!("airlock_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Bundle incident-kit"), "{html}");
    assert_eq!(html.matches("class=\"bundle-part\"").count(), 2, "{html}");
    assert!(html.contains("deploy host unreachable"), "{html}");
    // In PostgreSQL the login no longer has the role.
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
        .bind(&login)
        .bind(&role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!member, "{login} still holds {role}");
    server.shutdown().await;
    for sql in [format!("DROP ROLE {login}"), format!("DROP ROLE {role}")] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
}

/// Two entitlements on a target that always works: `db` approved by `dba`,
/// `ssh` by `security`, and `logs` granted at once.
const TIERS: &str = "\n[connectors.ok]\ntype = \"command\"\nprogram = \"/bin/true\"\n\
    \n[entitlements.db]\nrequestable_by = [\"eng\"]\nmax_duration = \"2h\"\napprovers = [\"dba\"]\napprovals_required = 1\nconnector = \"ok\"\n\
    \n[entitlements.ssh]\nrequestable_by = [\"eng\"]\nmax_duration = \"2h\"\napprovers = [\"security\"]\napprovals_required = 1\nconnector = \"ok\"\n\
    \n[entitlements.logs]\nrequestable_by = [\"eng\"]\nmax_duration = \"2h\"\nauto_approve = true\nconnector = \"ok\"\n\
    \n[bundles.incident-kit]\nentitlements = [\"db\", \"ssh\", \"logs\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_needs_each_tier_from_a_different_person_and_ends_together() {
    let t0 = airlock_core::Timestamp::from_unix_millis(1_830_000_000_000);
    let clock = Arc::new(ManualClock::new(t0));
    let (server, _dir) = boot(TIERS, Some(Arc::clone(&clock))).await;
    let (alice, dave, sam) = (
        client(&server, "alice"),
        client(&server, "dave"),
        client(&server, "sam"),
    );
    let created = alice
        .create_request(&ask(Some("incident-kit"), &[]))
        .await
        .unwrap();
    assert_eq!(
        parts(&created),
        ["db pending", "ssh pending", "logs pending"]
    );
    // Every part needs both tiers: dave (in both groups) fills one seat.
    assert_eq!(created.required_approvals, 2);
    let approve = Action::Approve { comment: None };
    let ids: Vec<String> = created
        .bundle
        .as_ref()
        .unwrap()
        .parts
        .iter()
        .map(|p| p.id.clone())
        .collect();
    let once = dave.act(&ids[1], &approve).await.unwrap();
    assert_eq!(once.state, "pending");
    assert_eq!(once.approvals.len(), 1);
    let twice = dave.act(&ids[2], &approve).await.unwrap_err();
    assert_eq!(twice.status(), Some(409), "{twice}");
    let approved = sam.act(&ids[0], &approve).await.unwrap();
    assert_eq!(approved.state, "approved");
    let active = parts_reach(&alice, &ids[0], "the grants", &["active"]).await;
    let expiries: Vec<Option<String>> = {
        let mut e = Vec::new();
        for id in &ids {
            let v = alice.get_request(id).await.unwrap();
            assert_eq!(v.approvals.len(), 2, "{v:?}");
            e.push(v.expires_at);
        }
        e
    };
    assert!(expiries.iter().all(|e| *e == expiries[0]), "{expiries:?}");
    assert_eq!(parts(&active), ["db active", "ssh active", "logs active"]);

    // A release of one part ends every part.
    alice.act(&ids[2], &Action::Release).await.unwrap();
    let released = parts_reach(&alice, &ids[0], "the release", &["released"]).await;
    assert_eq!(
        parts(&released),
        ["db released", "ssh released", "logs released"]
    );

    // Entitlements listed together, granted at once: they expire together.
    let listed = alice
        .create_request(&ask(None, &["logs", "db"]))
        .await
        .unwrap();
    assert_eq!(listed.bundle.as_ref().unwrap().name, None);
    assert_eq!(parts(&listed), ["logs pending", "db pending"]);
    dave.act(&listed.id, &approve).await.unwrap();
    parts_reach(&alice, &listed.id, "the grants", &["active"]).await;
    clock.advance(Duration::from_secs(3601));
    let expired = parts_reach(&alice, &listed.id, "the expiry", &["expired"]).await;
    assert_eq!(parts(&expired), ["logs expired", "db expired"]);

    // Exactly one of `entitlement`, `bundle` and `entitlements`.
    let mut both = ask(Some("incident-kit"), &["logs", "db"]);
    let err = alice.create_request(&both).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("only one of"), "{err}");
    both.bundle = Some("incident-kits".to_owned());
    both.entitlements.clear();
    let err = alice.create_request(&both).await.unwrap_err();
    assert!(
        err.to_string().contains("did you mean `incident-kit`"),
        "{err}"
    );
    let err = alice
        .create_request(&ask(None, &["logs"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least two"), "{err}");
    server.shutdown().await;
}
