//! `GET /v1/check` over the real API, on SQLite and on PostgreSQL, with a
//! clock the test moves: a holder checks themselves, checkers (a person and
//! a service's token) check others, an ordinary user may not, a token
//! without the `read` scope may not; released and expired grants do not
//! hold; checks are counted on the grant once the replica adds them (a
//! second of its clock later, or when it stops), and at `/metrics` by
//! answer.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::time::Duration;

use airlock_core::Timestamp;
use airlock_server::api::{format_time, CheckView, CreateTokenBody};
use airlock_server::client::{Action, Client};
use airlock_server::config::Settings;
use airlock_server::engine::{Clock, CHECKS_FLUSH_EVERY};
use airlock_testkit::until;
use fixtures::{
    ask, boot, boot_at_t0, metrics, on_database, refusal, token, wait_for_state, ConfigText,
    Refusal, T0,
};

mod fixtures;

const HOUR: Duration = Duration::from_secs(3600);

/// alice and bob hold things; dave is an ordinary user; chuck is a checker;
/// ann audits; the `gate` service (owned by alice) is a checker too.
const PEOPLE: [(&str, &str); 5] = [
    ("alice", r#"groups = ["eng"]"#),
    ("bob", r#"groups = ["eng"]"#),
    ("dave", r#"groups = ["sales"]"#),
    ("chuck", r#"roles = ["checker"]"#),
    ("ann", r#"roles = ["auditor"]"#),
];

fn settings(dir: &std::path::Path) -> Settings {
    ConfigText::new(dir, "")
        .noop_connector()
        .auto_approved("logs", "2h", "")
        .text("\n[services.gate]\nowners = [\"alice\"]\nroles = [\"checker\"]\n")
        .users(&PEOPLE)
        .parse("checks.toml")
}

fn holds(view: &CheckView, id: &str, until: Timestamp) {
    assert!(view.holds, "{view:?}");
    assert_eq!(view.request_id.as_deref(), Some(id), "{view:?}");
    assert_eq!(view.expires_at, Some(format_time(until)), "{view:?}");
}

fn holds_nothing(view: &CheckView) {
    assert!(!view.holds, "{view:?}");
    assert_eq!(
        (view.request_id.as_deref(), view.expires_at.as_deref()),
        (None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_over_http_on_sqlite_and_postgres() {
    airlock_testkit::on_sqlite_and_postgres(
        "airlock_checks",
        Duration::from_secs(120),
        the_whole_flow,
    )
    .await;
}

async fn the_whole_flow(postgres: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let settings = on_database(settings(dir.path()), postgres.as_deref());
    let (server, base, clock) = boot_at_t0(settings.clone()).await;
    let client = |name: &str| fixtures::client(&base, name);
    let (alice, bob, dave, chuck, ann) = (
        client("alice"),
        client("bob"),
        client("dave"),
        client("chuck"),
        client("ann"),
    );
    let token_of = |owner: &str, scopes: &[&str]| CreateTokenBody {
        name: format!("checks-{owner}-{}", scopes.join("-")),
        expires_in: None,
        scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
        owner: Some(owner.to_owned()),
    };
    let gate = alice
        .create_token(&token_of("gate", &["read"]))
        .await
        .unwrap();
    let gate = Client::new(&base, &gate.secret).unwrap();
    let chuck_without_read = chuck
        .create_token(&token_of("chuck", &["request"]))
        .await
        .unwrap();
    let chuck_without_read = Client::new(&base, &chuck_without_read.secret).unwrap();

    let logs = alice.create_request(&ask("logs")).await.unwrap().id;
    wait_for_state(&alice, &logs, "active").await;
    let until_t = T0.plus(HOUR);

    // The holder asks about themselves; checkers, an auditor and the
    // checker service's read token ask about them.
    holds(&alice.check("alice", "logs").await.unwrap(), &logs, until_t);
    holds(&chuck.check("alice", "logs").await.unwrap(), &logs, until_t);
    holds(&gate.check("alice", "logs").await.unwrap(), &logs, until_t);
    holds(&ann.check("alice", "logs").await.unwrap(), &logs, until_t);
    // Someone holding nothing; anyone may ask about themselves.
    holds_nothing(&chuck.check("bob", "logs").await.unwrap());
    holds_nothing(&dave.check("dave", "logs").await.unwrap());

    // An ordinary user may not ask about others, nor a token without `read`.
    let Refusal {
        status, message, ..
    } = refusal(dave.check("alice", "logs").await);
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("needs admin or auditor or checker"),
        "{message}"
    );
    let Refusal {
        status, message, ..
    } = refusal(chuck_without_read.check("alice", "logs").await);
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("`read` scope"), "{message}");
    // Bad input names what is wrong.
    let Refusal {
        status, message, ..
    } = refusal(chuck.check("alice", "lgos").await);
    assert_eq!(status, 404, "{message}");
    assert!(message.contains("no entitlement `lgos`"), "{message}");
    let Refusal { status, field, .. } = refusal(chuck.check("", "logs").await);
    assert_eq!((status, field.as_deref()), (400, Some("principal")));
    let http = reqwest::Client::new();
    for (query, field) in [
        ("principal=alice", "entitlement"),
        ("entitlement=logs", "principal"),
        ("principal=alice&entitlement=logs&user=bob", "user"),
    ] {
        let response = http
            .get(format!("{base}/v1/check?{query}"))
            .bearer_auth(token("chuck"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        let said = body
            .get("error")
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(said.contains(field), "{query}: {said}");
    }

    // Answered checks are counted at `/metrics` by answer; the refused and
    // the malformed are no answers.
    let metrics = metrics(&base).await;
    for line in [
        "airlock_checks_total{answer=\"holds\"} 4\n",
        "airlock_checks_total{answer=\"does_not_hold\"} 2\n",
    ] {
        assert!(metrics.contains(line), "{line}not in:\n{metrics}");
    }

    // Four checks found the grant; the replica adds them a second later.
    assert_eq!(alice.get_request(&logs).await.unwrap().check_count, 0);
    clock.advance(CHECKS_FLUSH_EVERY);
    let counted = until(
        Duration::from_secs(20),
        "the checks to be stored",
        || async {
            let r = alice.get_request(&logs).await.unwrap();
            (r.check_count > 0).then_some(r)
        },
    )
    .await;
    assert_eq!(
        (counted.check_count, counted.last_checked_at.as_deref()),
        (4, Some(format_time(T0).as_str()))
    );

    // Checks answered before a stop are stored when it stops.
    let bobs = bob.create_request(&ask("logs")).await.unwrap().id;
    wait_for_state(&bob, &bobs, "active").await;
    let at = clock.now();
    for _ in 0..3 {
        holds(
            &chuck.check("bob", "logs").await.unwrap(),
            &bobs,
            at.plus(HOUR),
        );
    }
    server.shutdown().await;
    let settings_again = settings.clone();
    let (server, base) = boot(settings, &clock).await;
    let client = |name: &str| fixtures::client(&base, name);
    let (alice, bob, chuck) = (client("alice"), client("bob"), client("chuck"));
    let r = bob.get_request(&bobs).await.unwrap();
    assert_eq!(
        (r.check_count, r.last_checked_at.as_deref()),
        (3, Some(format_time(at).as_str()))
    );

    // A released grant does not hold.
    bob.act(&bobs, &Action::Release).await.unwrap();
    holds_nothing(&chuck.check("bob", "logs").await.unwrap());

    // Nor one at its expiry, whether or not the scheduler has ended it yet;
    // a check that finds nothing counts on nothing.
    clock.advance_to(until_t);
    holds_nothing(&alice.check("alice", "logs").await.unwrap());
    clock.advance(CHECKS_FLUSH_EVERY);
    wait_for_state(&alice, &logs, "expired").await;
    holds_nothing(&chuck.check("alice", "logs").await.unwrap());
    server.shutdown().await;
    let r = {
        let (server, base) = boot(settings_again, &clock).await;
        let r = fixtures::client(&base, "alice")
            .get_request(&logs)
            .await
            .unwrap();
        server.shutdown().await;
        r
    };
    assert_eq!(
        r.check_count, 4,
        "checks that found no grant counted on one"
    );
}
