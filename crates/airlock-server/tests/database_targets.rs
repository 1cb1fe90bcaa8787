//! The whole path for database targets: a request through the real server
//! with a PostgreSQL or MariaDB connector in temporary-login mode, the
//! one-time credential handed to the requester, and the login gone after
//! expiry. Needs the services named by `AIRLOCK_TEST_POSTGRES_URL` and
//! `AIRLOCK_TEST_MARIADB_URL`.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test"
)]

use std::sync::Arc;
use std::time::Duration;

use airlock_server::api::{CreateRequest, DurationInput};
use airlock_server::client::{Action, Client};
use airlock_server::config::{token_hash, Settings};
use airlock_server::engine::ManualClock;
use airlock_testkit::until;
use fixtures::{
    base_url, extend, start_on, token, unique_name, wait_for_extension, wait_for_state,
};
use sqlx::Connection;

mod fixtures;

async fn boot(connector: &str) -> (airlock_server::server::Server, Client, tempfile::TempDir) {
    boot_with(connector, "1h", None).await
}

/// [`boot`] with `db-admin` lasting up to `max`, on `clock` (the system
/// clock when `None`).
async fn boot_with(
    connector: &str,
    max: &str,
    clock: Option<Arc<ManualClock>>,
) -> (airlock_server::server::Server, Client, tempfile::TempDir) {
    boot_with_server(connector, max, clock, "").await
}

/// [`boot_with`], with `server` added to the `[server]` table.
async fn boot_with_server(
    connector: &str,
    max: &str,
    clock: Option<Arc<ManualClock>>,
    server: &str,
) -> (airlock_server::server::Server, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{server}\n\n[users.alice]\ngroups = [\"dba\"]\ntoken_sha256 = \"{}\"\n\n\
         [connectors.db]\n{connector}\n\n\
         [entitlements.db-admin]\nrequestable_by = [\"dba\"]\nmax_duration = \"{max}\"\nauto_approve = true\nconnector = \"db\"\n",
        dir.path().display(),
        token_hash(&token("alice"))
    );
    let settings = Settings::parse("targets.toml", &toml, dir.path()).unwrap();
    let server = start_on(settings, clock).await;
    let client = fixtures::client(&base_url(&server), "alice");
    (server, client, dir)
}

/// Requests a 3 s grant, collects its credential (once), and returns it with
/// the request id; then waits for the grant to end.
async fn request_and_collect(client: &Client) -> (String, airlock_server::api::CredentialView) {
    let body = CreateRequest {
        duration: Some(DurationInput::Seconds(3)),
        reason: "migration".into(),
        ..fixtures::ask("db-admin")
    };
    let created = client.create_request(&body).await.unwrap();
    wait_for_state(client, &created.id, "active").await;
    let credential = client.collect_credential(&created.id).await.unwrap();
    assert_eq!(credential.login, format!("airlock_{}", created.id));
    assert!(credential.secret.len() >= 20);
    let again = client.collect_credential(&created.id).await.unwrap_err();
    assert_eq!(
        again.status(),
        Some(409),
        "a credential is handed out once: {again}"
    );
    (created.id, credential)
}

/// A new role for grants, and the admin connection that made it.
async fn postgres_role(url: &str) -> (String, sqlx::PgConnection) {
    let role = unique_name("airlock_t_role");
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("CREATE ROLE {role} NOLOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();
    (role, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_temporary_login_is_handed_out_once_and_dropped_at_expiry() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let (role, mut admin) = postgres_role(&url).await;

    let (server, client, _dir) = boot(&format!(
        "type = \"postgres\"\nurl = \"{url}\"\nroles = [\"{role}\"]\nmode = \"temporary_login\"\ntimeout = \"5s\""
    ))
    .await;
    let (id, credential) = request_and_collect(&client).await;

    // The login exists, belongs to the role, and expires when the grant does.
    let (valid_until, member): (Option<String>, bool) = sqlx::query_as(
        "SELECT to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'), \
         pg_has_role(rolname, $2, 'MEMBER') FROM pg_roles WHERE rolname = $1",
    )
    .bind(&credential.login)
    .bind(&role)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(member, "the temporary login is not a member of {role}");
    let expires = credential.expires_at.clone().unwrap();
    assert_eq!(
        valid_until.as_deref(),
        expires.get(..19),
        "VALID UNTIL must be the grant's expiry"
    );
    let login_url = url.replacen(
        "postgres://postgres@",
        &format!("postgres://{}:{}@", credential.login, credential.secret),
        1,
    );
    let mut as_grantee = sqlx::PgConnection::connect(&login_url).await.unwrap();
    sqlx::query("SELECT 1")
        .execute(&mut as_grantee)
        .await
        .unwrap();

    until(
        Duration::from_secs(20),
        "the login to be dropped after expiry",
        || async {
            let r = client.get_request(&id).await.unwrap();
            (r.deprovisioned_at.is_some()).then_some(())
        },
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&credential.login)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "the temporary login outlived its grant");
    assert!(
        sqlx::query("SELECT 1")
            .execute(&mut as_grantee)
            .await
            .is_err(),
        "the grantee's session survived revocation"
    );

    server.shutdown().await;
    sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_temporary_user_logs_in_during_the_grant_only() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_MARIADB_URL") else {
        return;
    };
    let role = unique_name("airlock_t_role");
    let mut admin = sqlx::MySqlConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE ROLE {role}"))
        .execute(&mut admin)
        .await
        .unwrap();

    let (server, client, _dir) = boot(&format!(
        "type = \"mariadb\"\nurl = \"{url}\"\nroles = [\"{role}\"]\nmode = \"temporary_login\"\ntimeout = \"5s\""
    ))
    .await;
    let (id, credential) = request_and_collect(&client).await;

    // MariaDB checks the password: a real login with the handed-out one,
    // holding the role by default. (No default database: MariaDB checks a
    // database named at connect time before it applies default roles.)
    let server_url = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
    let as_login = |password: &str| {
        server_url.replacen(
            "mysql://root@",
            &format!("mysql://{}:{password}@", credential.login),
            1,
        )
    };
    let login_url = as_login(&credential.secret);
    let mut as_grantee = sqlx::MySqlConnection::connect(&login_url).await.unwrap();
    let current: Option<String> = sqlx::query_scalar("SELECT CURRENT_ROLE()")
        .fetch_one(&mut as_grantee)
        .await
        .unwrap();
    assert_eq!(current.as_deref(), Some(role.as_str()));
    assert!(sqlx::MySqlConnection::connect(&as_login("wrong-password"))
        .await
        .is_err());

    until(
        Duration::from_secs(20),
        "the user to be dropped after expiry",
        || async {
            let r = client.get_request(&id).await.unwrap();
            (r.deprovisioned_at.is_some()).then_some(())
        },
    )
    .await;
    assert!(
        sqlx::MySqlConnection::connect(&login_url).await.is_err(),
        "the temporary user can still log in"
    );
    assert!(
        sqlx::query("SELECT 1")
            .execute(&mut as_grantee)
            .await
            .is_err(),
        "the grantee's connection survived revocation"
    );

    server.shutdown().await;
    sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// An extension reaches PostgreSQL: the temporary login's `VALID UNTIL`
/// moves to the new expiry (read from `pg_roles`), and the credential the
/// re-grant set is handed out again and logs in. On a clock the test
/// holds, so the times are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_extension_moves_valid_until() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let (role, mut admin) = postgres_role(&url).await;
    // A fixed time a year or so ahead: the login stays valid for the test.
    let t0 = airlock_core::Timestamp::from_unix_millis(1_830_000_000_000);
    let (server, client, _dir) = boot_with(
        &format!(
            "type = \"postgres\"\nurl = \"{url}\"\nroles = [\"{role}\"]\nmode = \"temporary_login\"\ntimeout = \"5s\""
        ),
        "2h",
        Some(Arc::new(ManualClock::new(t0))),
    )
    .await;
    let body = CreateRequest {
        reason: "migration".into(),
        ..fixtures::ask("db-admin")
    };
    let id = client.create_request(&body).await.unwrap().id;
    wait_for_state(&client, &id, "active").await;
    let first = client.collect_credential(&id).await.unwrap();
    let valid_until = |login: String| {
        let url = url.clone();
        async move {
            let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
            let at: Option<String> = sqlx::query_scalar(
                "SELECT to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') \
                 FROM pg_roles WHERE rolname = $1",
            )
            .bind(login)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            at.unwrap()
        }
    };
    let hour = airlock_server::api::format_time(t0.plus(Duration::from_secs(3600)));
    assert_eq!(valid_until(first.login.clone()).await, hour[..19]);

    client
        .act(&id, &extend("30m", "the migration runs long"))
        .await
        .unwrap();
    let extended = wait_for_extension(&client, &id, "extended").await;
    let later = airlock_server::api::format_time(t0.plus(Duration::from_secs(5400)));
    assert_eq!(extended.expires_at.as_deref(), Some(later.as_str()));
    assert_eq!(valid_until(first.login.clone()).await, later[..19]);

    // The re-grant set the password again: the new one is handed out once.
    let second = client.collect_credential(&id).await.unwrap();
    assert_eq!(second.login, first.login);
    assert_eq!(second.expires_at.as_deref(), Some(later.as_str()));
    let login_url = url.replacen(
        "postgres://postgres@",
        &format!("postgres://{}:{}@", second.login, second.secret),
        1,
    );
    let mut as_grantee = sqlx::PgConnection::connect(&login_url).await.unwrap();
    sqlx::query("SELECT 1")
        .execute(&mut as_grantee)
        .await
        .unwrap();
    as_grantee.close().await.unwrap();

    client.act(&id, &Action::Release).await.unwrap();
    until(
        Duration::from_secs(20),
        "the login to be dropped",
        || async {
            let r = client.get_request(&id).await.unwrap();
            r.deprovisioned_at.is_some().then_some(())
        },
    )
    .await;
    server.shutdown().await;
    sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// While a grant is active, what the grantee does in PostgreSQL lands on the
/// request's timeline: the session is seen with its client address and
/// the statement it runs, and is gone, with the reason, once the grant
/// ends and the connector ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_during_a_grant_are_on_its_timeline() {
    let Some(url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let (role, mut admin) = postgres_role(&url).await;
    let (server, client, _dir) = boot_with_server(
        &format!(
            "type = \"postgres\"\nurl = \"{url}\"\nroles = [\"{role}\"]\nmode = \"temporary_login\"\ntimeout = \"5s\""
        ),
        "1h",
        None,
        "activity_sample_every = \"1s\"",
    )
    .await;
    let created = client
        .create_request(&CreateRequest {
            duration: Some(DurationInput::Seconds(600)),
            reason: "look around".into(),
            ..fixtures::ask("db-admin")
        })
        .await
        .unwrap();
    let id = created.id;
    wait_for_state(&client, &id, "active").await;
    let credential = client.collect_credential(&id).await.unwrap();
    let login_url = url.replacen(
        "postgres://postgres@",
        &format!("postgres://{}:{}@", credential.login, credential.secret),
        1,
    );
    let mut as_grantee = sqlx::PgConnection::connect(&login_url).await.unwrap();
    let running = tokio::spawn(async move {
        sqlx::query("SELECT pg_sleep(120) AS airlock_activity_probe")
            .execute(&mut as_grantee)
            .await
    });

    let timeline = |action: &'static str| {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .explain(&id)
                .await
                .unwrap()
                .history
                .into_iter()
                .filter(|h| h.action == action)
                .collect::<Vec<_>>()
        }
    };
    let seen = until(
        Duration::from_secs(20),
        "the session on the timeline",
        || async {
            timeline("session_seen").await.into_iter().find(|h| {
                h.details
                    .get("statement")
                    .is_some_and(|s| s.contains("airlock_activity_probe"))
            })
        },
    )
    .await;
    assert_eq!(seen.details["login"], credential.login, "{seen:?}");
    assert_eq!(seen.details["client"], "127.0.0.1", "{seen:?}");
    assert_eq!(seen.details["connector"], "db", "{seen:?}");
    assert!(seen.details.contains_key("connected_at"), "{seen:?}");
    let session = seen.details["session"].clone();

    client.act(&id, &Action::Release).await.unwrap();
    let gone = until(
        Duration::from_secs(20),
        "the session to be gone",
        || async {
            timeline("session_gone")
                .await
                .into_iter()
                .find(|h| h.details.get("session") == Some(&session))
        },
    )
    .await;
    assert_eq!(gone.details["why"], "the grant ended", "{gone:?}");
    assert!(
        running.await.unwrap().is_err(),
        "the grantee's statement outlived the grant"
    );
    // Seen once, whatever the number of samples in between.
    assert_eq!(
        timeline("session_seen")
            .await
            .iter()
            .filter(|h| h.details.get("session") == Some(&session))
            .count(),
        1
    );

    server.shutdown().await;
    sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}
