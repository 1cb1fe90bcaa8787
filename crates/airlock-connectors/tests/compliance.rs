//! The one compliance suite every connector with a real target runs (see
//! `docs/connectors.md`). The rules it checks are the ones the engine relies
//! on: grant and revoke are idempotent, revoking what is absent succeeds,
//! access removed behind Airlock's back comes back on the next grant,
//! `holders()` tells the truth for reconciliation after every step, an
//! unavailable target is a retryable failure and works again once it is
//! back, and access works while granted and not after the revoke (nor after
//! `expires_at`, where the target itself ends it).
//!
//! [`run_compliance`] drives those rules the same way for every target
//! through the few hooks of [`TargetUnderTest`]: how to try the grant's access
//! through the target itself, how to take it away out of band, how to make
//! the target unavailable. PostgreSQL and MariaDB (each in both modes) then
//! run what only they promise ([`run_sql_rules`] over [`SqlTarget`]:
//! passwords, live sessions, holders Airlock did not make, `remove_holder`,
//! `sessions()`);
//! the SSH certificate authority's own promises are in `tests/ssh.rs`.
//!
//! Each target builds its fixtures in a namespace of its own (a role prefix,
//! a temporary folder with its own sshd), so runs can overlap and repeat.
//! Tests that need a service skip loudly without one, and fail in CI
//! (`AIRLOCK_REQUIRE_SERVICES=1`).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with the value in the message"
)]

use std::fs::OpenOptions;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_connectors::mariadb::{MariaDbConnector, MariaDbSettings};
use airlock_connectors::postgres::{scram_sha256_verifier, PostgresConnector, PostgresSettings};
use airlock_connectors::ssh::{SshCaSettings, SshCertificateAuthority};
use airlock_connectors::{
    Connector, ConnectorError, GrantSpec, Granted, Holding, LiveSession, Mode,
};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use airlock_testkit::sshd::{OpenSsh, Sshd, Trust, UserKey};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

/// No test may take longer than this, whatever the target does.
const BOUND: Duration = Duration::from_secs(50);
/// The connectors' own call timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of the connector that meets an outage: how long it keeps
/// trying (to connect, to take the lock) before it gives up.
const UNREACHABLE_TIMEOUT: Duration = Duration::from_millis(1200);
/// A port nothing listens on.
const CLOSED_PORT: u16 = 1;
/// 2100-01-01: a grant that is still valid whenever the suite runs.
const FUTURE: Timestamp = Timestamp::from_unix_millis(4_102_444_800_000);
/// 2000-01-01: a grant whose expiry has passed.
const PAST: Timestamp = Timestamp::from_unix_millis(946_684_800_000);
/// How long past a grant's `expires_at` the suite waits before it expects
/// the target to refuse it: targets compare in whole seconds.
const EXPIRY_MARGIN: Duration = Duration::from_millis(1100);

// ------------------------------------------------------------ shared rules

/// How access was taken away, which decides what the target's refusal says.
#[derive(Debug, Clone, Copy)]
enum Removal {
    Revoked,
    OutOfBand,
    Expired,
}

/// The target made unavailable: calls through `connector` meet the outage
/// until this is dropped.
struct Outage {
    /// The connector under test's settings, meeting the outage (with a short
    /// timeout where the outage makes calls wait).
    connector: Box<dyn Connector>,
    /// What keeps the target away, where something must end for it to come
    /// back; dropped with the outage.
    _cause: Option<Box<dyn Send + Sync>>,
}

/// What every target provides for the shared rules.
#[async_trait::async_trait]
trait TargetUnderTest: Send + Sync {
    fn name(&self) -> String;
    /// The connector under test.
    fn connector(&self) -> &dyn Connector;
    /// A grant for the fixture's Airlock user under a fresh request id, at
    /// claim 1.
    fn spec(&self, expires_at: Timestamp) -> GrantSpec;
    /// A grant that was never made.
    fn spec_never_granted(&self) -> GrantSpec;
    /// How `holders()` lists the grant of `spec`.
    fn holding(&self, spec: &GrantSpec) -> Holding;
    /// Tries the access `granted` gave for `spec` through the target itself:
    /// `Ok` while it is there, otherwise how the target refused it.
    async fn access(&self, spec: &GrantSpec, granted: &Granted) -> Result<(), String>;
    /// What [`TargetUnderTest::access`]'s refusal says after `removal`.
    fn refusal(&self, removal: Removal) -> &'static str;
    /// Takes the access of `spec` away behind the connector's back, as an
    /// operator or an accident would; returns whether `holders()` can see
    /// that.
    async fn remove_access_out_of_band(&self, spec: &GrantSpec) -> bool;
    /// Makes the target unavailable.
    fn outage(&self) -> Outage;
    /// How long a grant may last for the suite to wait out its end, where the
    /// target ends access at `expires_at` by itself.
    fn enforced_expiry(&self) -> Option<Duration>;
    /// Drops everything the fixture made.
    async fn cleanup(&self);
}

fn namespace() -> String {
    format!("alt{}", hex::encode(rand::random::<[u8; 4]>()))
}

fn fresh_request_id() -> RequestId {
    RequestId::from_entropy(rand::random())
}

fn grant_spec(user: &str, request_id: RequestId, expires_at: Timestamp) -> GrantSpec {
    GrantSpec {
        request_id,
        user: UserId::parse(user).unwrap(),
        entitlement: EntitlementId::parse("db-role").unwrap(),
        expires_at,
        claim: 1,
        public_key: None,
    }
}

/// The same grant under the next claim: what the request's next piece of
/// work (a revoke, a grant after it) carries.
fn next_claim(spec: &GrantSpec) -> GrantSpec {
    GrantSpec {
        claim: spec.claim + 1,
        ..spec.clone()
    }
}

/// Now, by the clock a target that ends access at `expires_at` reads.
fn wall_clock() -> Timestamp {
    Timestamp::from_unix_millis(airlock_testkit::wall_clock_unix_millis())
}

fn expect_retryable(name: &str, what: &str, result: Result<(), ConnectorError>) {
    match result {
        Err(e) if e.is_retryable() => {}
        other => {
            panic!("{name}: {what} during an outage: expected a retryable error, got {other:?}")
        }
    }
}

async fn holders(name: &str, step: &str, connector: &dyn Connector) -> Vec<Holding> {
    connector
        .holders()
        .await
        .unwrap_or_else(|e| panic!("{name}: holders() after {step}: {e}"))
        .unwrap_or_else(|| panic!("{name}: holders() after {step} returned None"))
}

fn count(holders: &[Holding], principal: &str) -> usize {
    holders.iter().filter(|h| h.principal == principal).count()
}

/// One run of the shared rules: every call and check fails the test naming
/// the target and the step.
struct Steps<'a> {
    t: &'a dyn TargetUnderTest,
    name: String,
}

impl Steps<'_> {
    async fn grant(&self, step: &str, spec: &GrantSpec) -> Granted {
        let name = &self.name;
        self.t
            .connector()
            .grant(spec)
            .await
            .unwrap_or_else(|e| panic!("{name}: {step}: {e}"))
    }

    async fn revoke(&self, step: &str, spec: &GrantSpec) {
        let name = &self.name;
        self.t
            .connector()
            .revoke(spec)
            .await
            .unwrap_or_else(|e| panic!("{name}: {step}: {e}"));
    }

    /// `holders()` lists exactly `expected`: the fixture's namespace holds
    /// nothing else.
    async fn holders(&self, step: &str, expected: &[&Holding]) {
        let mut listed = holders(&self.name, step, self.t.connector()).await;
        listed.sort();
        let mut expected: Vec<Holding> = expected.iter().map(|h| (*h).clone()).collect();
        expected.sort();
        assert_eq!(listed, expected, "{}: holders() after {step}", self.name);
    }

    async fn access(&self, step: &str, spec: &GrantSpec, granted: &Granted) {
        if let Err(refused) = self.t.access(spec, granted).await {
            panic!("{}: no access after {step}: {refused}", self.name);
        }
    }

    async fn refused(&self, step: &str, spec: &GrantSpec, granted: &Granted, removal: Removal) {
        let name = &self.name;
        let expected = self.t.refusal(removal);
        match self.t.access(spec, granted).await {
            Ok(()) => panic!("{name}: access survived {step}"),
            Err(refused) => assert!(
                refused.contains(expected),
                "{name}: after {step}, refused without `{expected}`: {refused}"
            ),
        }
    }
}

/// The shared rules. Every step lists the holders, as reconciliation would,
/// and tries the access through the target. Claims grow as the engine's do:
/// a repeated call carries the same claim, the request's next piece of work
/// (the revoke, a grant after it) a newer one.
async fn run_compliance(t: &dyn TargetUnderTest) {
    let run = Steps { t, name: t.name() };
    let name = run.name.as_str();
    let c = t.connector();
    assert_eq!(c.call_timeout(), CALL_TIMEOUT, "{name}");
    c.health()
        .await
        .unwrap_or_else(|e| panic!("{name}: health: {e}"));
    run.holders("setup", &[]).await;

    // Grant twice: access once, listed once.
    let spec = t.spec(FUTURE);
    let held = t.holding(&spec);
    run.grant("grant", &spec).await;
    let granted = run.grant("second grant", &spec).await;
    run.access("grant twice", &spec, &granted).await;
    run.holders("grant twice", &[&held]).await;

    // Revoking a grant that was never made succeeds, twice, and leaves the
    // live grant alone.
    let never = t.spec_never_granted();
    run.revoke("revoke of an absent grant", &never).await;
    run.revoke("second revoke of an absent grant", &never).await;
    run.access("revoke of an absent grant", &spec, &granted)
        .await;
    run.holders("revoke of an absent grant", &[&held]).await;

    // Revoke twice: access ends, and stays ended.
    let revoke = next_claim(&spec);
    run.revoke("revoke", &revoke).await;
    run.refused("revoke", &spec, &granted, Removal::Revoked)
        .await;
    run.holders("revoke", &[]).await;
    run.revoke("second revoke", &revoke).await;
    run.refused("revoke twice", &spec, &granted, Removal::Revoked)
        .await;
    run.holders("revoke twice", &[]).await;

    // Granted again, then taken away out of band: the same grant, repeated,
    // restores the access.
    let spec = next_claim(&revoke);
    let granted = run.grant("grant after the revoke", &spec).await;
    run.access("grant after the revoke", &spec, &granted).await;
    run.holders("grant after the revoke", &[&held]).await;
    let visible = t.remove_access_out_of_band(&spec).await;
    run.refused("out-of-band change", &spec, &granted, Removal::OutOfBand)
        .await;
    let still_listed: &[&Holding] = if visible { &[] } else { &[&held] };
    run.holders("out-of-band change", still_listed).await;
    let granted = run.grant("grant after the out-of-band change", &spec).await;
    run.access("grant after the out-of-band change", &spec, &granted)
        .await;
    run.holders("grant after the out-of-band change", &[&held])
        .await;

    // An unavailable target: retryable failures, then the same calls succeed
    // once it is back. A call that ran out of time may still land later (the
    // SSH CA finishes it once the lock is free), so the calls tried are ones
    // that change nothing whenever they land: a repeat of the live grant and
    // a revoke of the grant that was never made.
    let outage = t.outage();
    let down = &outage.connector;
    let (grant, revoke, listed, health) = tokio::join!(
        down.grant(&spec),
        down.revoke(&never),
        down.holders(),
        down.health(),
    );
    expect_retryable(name, "grant", grant.map(|_| ()));
    expect_retryable(name, "revoke", revoke);
    expect_retryable(name, "holders", listed.map(|_| ()));
    expect_retryable(name, "health", health);
    drop(outage);
    let granted = run.grant("grant after the outage", &spec).await;
    run.revoke("revoke after the outage", &never).await;
    c.health()
        .await
        .unwrap_or_else(|e| panic!("{name}: health after the outage: {e}"));
    run.access("the outage", &spec, &granted).await;
    run.holders("the outage", &[&held]).await;

    run.revoke("final revoke", &next_claim(&spec)).await;
    run.refused("final revoke", &spec, &granted, Removal::Revoked)
        .await;
    run.holders("final revoke", &[]).await;

    // Where the target ends access at `expires_at` by itself, it does so
    // without any call.
    if let Some(lifetime) = t.enforced_expiry() {
        let expires_at = wall_clock().plus(lifetime);
        let spec = t.spec(expires_at);
        let granted = run.grant("grant until soon", &spec).await;
        run.access("grant until soon", &spec, &granted).await;
        run.holders("grant until soon", &[&t.holding(&spec)]).await;
        tokio::time::sleep(wall_clock().until(expires_at) + EXPIRY_MARGIN).await;
        run.refused("expiry", &spec, &granted, Removal::Expired)
            .await;
        run.holders("expiry", &[]).await;
    }
}

/// Runs `body` within [`BOUND`], then cleans up whatever happened, then
/// reports the body's outcome.
async fn guarded<T, F, Fut>(setup: impl Future<Output = T>, body: F)
where
    T: TargetUnderTest + 'static,
    F: FnOnce(Arc<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let target = Arc::new(
        tokio::time::timeout(Duration::from_secs(20), setup)
            .await
            .expect("fixture setup timed out"),
    );
    let task = tokio::spawn(body(Arc::clone(&target)));
    let abort = task.abort_handle();
    let outcome = tokio::time::timeout(BOUND, task).await;
    abort.abort();
    tokio::time::timeout(Duration::from_secs(20), target.cleanup())
        .await
        .expect("cleanup timed out");
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("{}: {e}", target.name()),
        Err(_) => panic!("{}: exceeded {BOUND:?}", target.name()),
    }
}

// -------------------------------------------------------------- SQL targets

/// How many roles every SQL fixture manages (`{ns}_reader`, `{ns}_writer`).
const MANAGED_ROLES: usize = 2;
/// How a SQL target refuses access that was taken away.
const NO_MEMBERSHIP: &str = "member of no managed role";

/// A login as the grantee; its next statement fails once it is ended.
#[async_trait::async_trait]
trait Session: Send {
    /// Runs `sql` to its end, however long it takes.
    async fn run(&mut self, sql: &str) -> Result<(), String>;
    async fn ping(&mut self) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(5), self.run("SELECT 1")).await {
            Ok(result) => result,
            Err(_) => Err("ping timed out".to_owned()),
        }
    }
}

/// What a SQL target provides, for the shared rules (through [`Sql`]) and
/// for its own ([`run_sql_rules`]).
#[async_trait::async_trait]
trait SqlTarget: Send + Sync {
    fn name(&self) -> String;
    fn mode(&self) -> Mode;
    /// The connector under test.
    fn connector(&self) -> &dyn Connector;
    /// The same settings, pointed at a closed port.
    fn unreachable(&self) -> Box<dyn Connector>;
    /// The same settings plus a role that does not exist.
    fn with_missing_role(&self) -> (Box<dyn Connector>, String);
    /// A grant for the fixture's Airlock user under a fresh request id.
    fn spec(&self, expires_at: Timestamp) -> GrantSpec;
    /// A grant for a user with no login in the target.
    fn spec_without_login(&self) -> GrantSpec;
    /// The login a grant gives access to.
    fn login(&self, spec: &GrantSpec) -> String;
    /// How `holders()` names that login.
    fn principal(&self, spec: &GrantSpec) -> String;
    /// The fixture login's own password (grant mode).
    fn fixture_password(&self) -> String;
    /// Whether the target is known to check passwords on the test
    /// connection (a PostgreSQL on `trust` does not).
    fn checks_passwords(&self) -> bool;
    /// How many managed roles the login is a member of, asked out of band.
    async fn memberships(&self, login: &str) -> usize;
    /// Removes the login's memberships behind the connector's back.
    async fn revoke_out_of_band(&self, login: &str);
    /// Makes a new login of the namespace a member; returns its principal.
    async fn add_holder_out_of_band(&self) -> String;
    /// How `holders()` would name the connector's own account.
    async fn own_principal(&self) -> String;
    async fn connect_as(
        &self,
        login: &str,
        password: &str,
        spec: &GrantSpec,
    ) -> Result<Box<dyn Session>, String>;
    /// The host [`SqlTarget::connect_as`] connects to.
    fn host(&self) -> String;
    /// A statement that runs for `seconds` and shows `marker` in its text.
    fn long_statement(&self, seconds: u32, marker: &str) -> String;
    /// Whether the target records when a session connected.
    fn records_connection_time(&self) -> bool;
    /// Drops everything the fixture made.
    async fn cleanup(&self);
}

/// A SQL target under the shared rules, which every SQL target meets the
/// same way: access is membership in every managed role (asked with the
/// admin connection), the out-of-band change is an admin revoking those
/// memberships (which `holders()` sees), and the outage is the same settings
/// pointed at a closed port (which every call, health included, meets).
/// Expiry is not enforced by MariaDB, nor by PostgreSQL in grant mode; a
/// PostgreSQL temporary login's `VALID UNTIL` is checked by
/// [`postgres_temporary_login_details`].
struct Sql<T>(T);

#[async_trait::async_trait]
impl<T: SqlTarget> TargetUnderTest for Sql<T> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn connector(&self) -> &dyn Connector {
        self.0.connector()
    }
    fn spec(&self, expires_at: Timestamp) -> GrantSpec {
        self.0.spec(expires_at)
    }
    fn spec_never_granted(&self) -> GrantSpec {
        self.0.spec_without_login()
    }
    fn holding(&self, spec: &GrantSpec) -> Holding {
        let temporary = self.0.mode() == Mode::TemporaryLogin;
        Holding {
            principal: self.0.principal(spec),
            request_id: temporary.then(|| spec.request_id.clone()),
        }
    }
    async fn access(&self, spec: &GrantSpec, _granted: &Granted) -> Result<(), String> {
        match self.0.memberships(&self.0.login(spec)).await {
            MANAGED_ROLES => Ok(()),
            0 => Err(NO_MEMBERSHIP.to_owned()),
            n => panic!(
                "{}: member of {n} of {MANAGED_ROLES} managed roles",
                self.name()
            ),
        }
    }
    fn refusal(&self, _removal: Removal) -> &'static str {
        NO_MEMBERSHIP
    }
    async fn remove_access_out_of_band(&self, spec: &GrantSpec) -> bool {
        self.0.revoke_out_of_band(&self.0.login(spec)).await;
        true
    }
    fn outage(&self) -> Outage {
        Outage {
            connector: self.0.unreachable(),
            _cause: None,
        }
    }
    fn enforced_expiry(&self) -> Option<Duration> {
        None
    }
    async fn cleanup(&self) {
        self.0.cleanup().await;
    }
}

/// What the SQL targets promise beyond the shared rules: a second grant of a
/// temporary login resets its password (never shown), the credential logs in
/// during the grant and a revoke ends that session, holders Airlock did not
/// make are listed (and left alone by a revoke), a missing role is named, and
/// reconciliation's hooks work.
async fn run_sql_rules(t: &dyn SqlTarget) {
    let name = t.name();
    let name = name.as_str();
    let c = t.connector();
    let temporary = t.mode() == Mode::TemporaryLogin;

    let spec = t.spec(FUTURE);
    let login = t.login(&spec);
    let first = c
        .grant(&spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: grant: {e}"));
    let second = c
        .grant(&spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: second grant: {e}"));
    let password = if temporary {
        let (first, second) = (first.credential.unwrap(), second.credential.unwrap());
        assert_eq!(first.login, login, "{name}");
        assert_eq!(second.login, login, "{name}");
        assert_ne!(
            first.secret(),
            second.secret(),
            "{name}: a second grant resets the password"
        );
        assert!(
            !format!("{second:?}").contains(second.secret()),
            "{name}: Debug shows the secret"
        );
        // With password checks, only the latest credential works.
        let wrong = t
            .connect_as(&login, "not-the-password", &spec)
            .await
            .is_err();
        if t.checks_passwords() {
            assert!(wrong, "{name}: a wrong password logged in");
        }
        if wrong {
            assert!(
                t.connect_as(&login, first.secret(), &spec).await.is_err(),
                "{name}: the first credential still works after the second grant"
            );
        } else {
            eprintln!(
                "NOTE: {name}: the target accepted a wrong password (e.g. pg_hba `trust`), so \
                 password checks at login are not observed here; the stored verifier is checked instead"
            );
        }
        second.secret().to_owned()
    } else {
        assert!(
            first.credential.is_none() && second.credential.is_none(),
            "{name}"
        );
        t.fixture_password()
    };

    // The credential logs in during the grant; revoke ends that session.
    let mut session = t
        .connect_as(&login, &password, &spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: logging in as `{login}` during the grant: {e}"));
    session
        .ping()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    c.revoke(&spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: revoke: {e}"));
    assert!(
        session.ping().await.is_err(),
        "{name}: the grantee's session survived the revoke"
    );
    if temporary {
        assert!(
            t.connect_as(&login, &password, &spec).await.is_err(),
            "{name}: the credential still logs in after the revoke"
        );
    }

    // A holder Airlock did not create shows up for reconciliation.
    let spec = t.spec(FUTURE);
    let principal = t.principal(&spec);
    c.grant(&spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: grant beside an out-of-band holder: {e}"));
    let extra = t.add_holder_out_of_band().await;
    let h = holders(name, "out-of-band holder", c).await;
    assert_eq!(count(&h, &extra), 1, "{name}: {h:?}");
    assert_eq!(count(&h, &principal), 1, "{name}: {h:?}");

    // A missing role: health names it, a grant fails permanently.
    let (broken, missing) = t.with_missing_role();
    let err = broken.health().await.unwrap_err();
    assert!(
        !err.is_retryable() && err.message().contains(&missing),
        "{name}: {err}"
    );
    let err = broken.grant(&t.spec(FUTURE)).await.unwrap_err();
    assert!(
        !err.is_retryable() && err.message().contains(&missing),
        "{name}: {err}"
    );

    // A revoke leaves the out-of-band holder alone.
    c.revoke(&spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: revoke beside an out-of-band holder: {e}"));
    assert_eq!(t.memberships(&t.login(&spec)).await, 0, "{name}");
    let h = holders(name, "revoke beside an out-of-band holder", c).await;
    assert_eq!(count(&h, &principal), 0, "{name}: {h:?}");
    assert_eq!(count(&h, &extra), 1, "{name}: {h:?}");

    run_reconciliation_hooks(t, &spec, &principal, &extra, &h).await;
    run_session_listing(t).await;
}

/// What reconciliation needs beyond `holders()`: the principal a grant is
/// listed under, and `remove_holder` taking access away from whoever holds
/// it (out of band or through Airlock), idempotently, sessions included,
/// never from the connector's own account.
async fn run_reconciliation_hooks(
    t: &dyn SqlTarget,
    spec: &GrantSpec,
    principal: &str,
    extra: &str,
    listed: &[Holding],
) {
    let name = t.name();
    let name = name.as_str();
    let c = t.connector();
    let temporary = t.mode() == Mode::TemporaryLogin;
    assert_eq!(
        c.principal_for(&spec.user, Some(&spec.request_id))
            .as_deref(),
        Some(principal),
        "{name}: principal_for a request"
    );
    assert_eq!(
        c.principal_for(&spec.user, None).as_deref(),
        (!temporary).then_some(principal),
        "{name}: principal_for any grant to the user"
    );

    // An out-of-band holder is removed, and stays removed when asked again.
    let holding = listed
        .iter()
        .find(|x| x.principal == extra)
        .unwrap()
        .clone();
    c.remove_holder(&holding)
        .await
        .unwrap_or_else(|e| panic!("{name}: remove_holder `{extra}`: {e}"));
    let h = holders(name, "remove_holder", c).await;
    assert_eq!(count(&h, extra), 0, "{name}: {h:?}");
    c.remove_holder(&holding)
        .await
        .unwrap_or_else(|e| panic!("{name}: second remove_holder `{extra}`: {e}"));

    // A holder Airlock granted is removed as its revoke would: memberships,
    // the live session, and a temporary login itself.
    let spec = t.spec(FUTURE);
    let login = t.login(&spec);
    let password = grant_for_login(t, "grant before remove_holder", &spec).await;
    let h = holders(name, "grant before remove_holder", c).await;
    let holding = h
        .iter()
        .find(|x| x.principal == t.principal(&spec))
        .unwrap_or_else(|| panic!("{name}: the grant is not listed: {h:?}"))
        .clone();
    let mut session = t
        .connect_as(&login, &password, &spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: logging in as `{login}`: {e}"));
    c.remove_holder(&holding)
        .await
        .unwrap_or_else(|e| panic!("{name}: remove_holder `{}`: {e}", holding.principal));
    assert_eq!(t.memberships(&login).await, 0, "{name}");
    let h = holders(name, "remove_holder of a grant", c).await;
    assert_eq!(count(&h, &holding.principal), 0, "{name}: {h:?}");
    assert!(
        session.ping().await.is_err(),
        "{name}: the holder's session survived remove_holder"
    );
    if temporary {
        assert!(
            t.connect_as(&login, &password, &spec).await.is_err(),
            "{name}: the temporary login still logs in after remove_holder"
        );
    }

    // The connector's own account is never removed.
    let own = Holding {
        principal: t.own_principal().await,
        request_id: None,
    };
    let err = c.remove_holder(&own).await.unwrap_err();
    assert!(
        !err.is_retryable() && err.message().contains(&own.principal),
        "{name}: {err}"
    );
}

/// Grants `spec` and returns the password that logs in as the grantee: the
/// temporary login's, or the fixture login's.
async fn grant_for_login(t: &dyn SqlTarget, step: &str, spec: &GrantSpec) -> String {
    let granted = t
        .connector()
        .grant(spec)
        .await
        .unwrap_or_else(|e| panic!("{}: {step}: {e}", t.name()));
    granted
        .credential
        .map_or_else(|| t.fixture_password(), |c| c.secret().to_owned())
}

/// The grantee's live sessions, as a grant's timeline will sample them.
async fn sessions(name: &str, c: &dyn Connector, spec: &GrantSpec) -> Vec<LiveSession> {
    assert!(c.lists_sessions(), "{name}: says it cannot list sessions");
    c.sessions(&spec.user, &spec.request_id)
        .await
        .unwrap_or_else(|e| panic!("{name}: sessions: {e}"))
}

/// Lists the grantee's sessions until `done` holds for the list, for at
/// most [`SESSION_WAIT`]; returns that list.
async fn sessions_until(
    name: &str,
    c: &dyn Connector,
    spec: &GrantSpec,
    what: &str,
    done: impl Fn(&[LiveSession]) -> bool,
) -> Vec<LiveSession> {
    let deadline = tokio::time::Instant::now() + SESSION_WAIT;
    loop {
        let listed = sessions(name, c, spec).await;
        if done(&listed) {
            return listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {what} after {SESSION_WAIT:?}: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long the target may take to show a statement that started, or to
/// forget a session that was ended.
const SESSION_WAIT: Duration = Duration::from_secs(10);

/// What a grant's timeline samples: `sessions()` lists the grantee's live
/// sessions — each with its login, its client's address, the statement it
/// runs (none while idle) and since when, by the target's clock — and
/// neither the connector's own nor anyone else's; none once the revoke has
/// ended them, none for a grant never made.
async fn run_session_listing(t: &dyn SqlTarget) {
    let name = t.name();
    let name = name.as_str();
    let c = t.connector();
    let spec = t.spec(FUTURE);
    let login = t.login(&spec);
    let password = grant_for_login(t, "grant before sessions", &spec).await;
    // Sessions an earlier step ended may take a moment to go.
    sessions_until(
        name,
        c,
        &spec,
        "sessions of earlier steps are still listed",
        <[_]>::is_empty,
    )
    .await;

    // Target clocks count in whole seconds or less; a second either way.
    let before = wall_clock().unix_millis() - 1000;
    let idle = t
        .connect_as(&login, &password, &spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: logging in as `{login}`: {e}"));
    let mut busy = t
        .connect_as(&login, &password, &spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: logging in as `{login}` again: {e}"));
    let marker = format!("{}_running", namespace());
    let statement = t.long_statement(60, &marker);
    let running = tokio::spawn(async move { busy.run(&statement).await });
    let runs = |s: &LiveSession| s.statement.as_deref().is_some_and(|q| q.contains(&marker));
    let listed = sessions_until(name, c, &spec, "the running statement is not listed", |l| {
        l.iter().any(runs)
    })
    .await;
    let after = wall_clock().unix_millis() + 1000;

    let (busy, idle_listed): (Vec<&LiveSession>, Vec<&LiveSession>) =
        listed.iter().partition(|s| runs(s));
    let ([busy], [idle_listed]) = (busy.as_slice(), idle_listed.as_slice()) else {
        panic!("{name}: expected one running and one idle session: {listed:?}");
    };
    assert_eq!(idle_listed.statement, None, "{name}: the idle session");
    assert_ne!(busy.id, idle_listed.id, "{name}: {listed:?}");
    let host = t.host();
    for s in &listed {
        assert_eq!(s.login, login, "{name}: {s:?}");
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => assert_eq!(s.client, Some(ip.to_string()), "{name}: {s:?}"),
            Err(_) => assert!(s.client.is_some(), "{name}: {s:?}"),
        }
        let since = s.since.unix_millis();
        assert!(before <= since && since <= after, "{name}: since: {s:?}");
        assert_eq!(
            s.connected_at.is_some(),
            t.records_connection_time(),
            "{name}: {s:?}"
        );
        if let Some(at) = s.connected_at {
            let at = at.unix_millis();
            assert!(before <= at && at <= since, "{name}: connected_at: {s:?}");
        }
    }

    // The revoke ends both sessions, the running statement with its own.
    c.revoke(&next_claim(&spec))
        .await
        .unwrap_or_else(|e| panic!("{name}: revoke after sessions: {e}"));
    let ended = tokio::time::timeout(SESSION_WAIT, running)
        .await
        .unwrap_or_else(|_| panic!("{name}: the running statement outlived the revoke"))
        .unwrap();
    assert!(ended.is_err(), "{name}: the running statement finished");
    drop(idle);
    sessions_until(
        name,
        c,
        &spec,
        "sessions outlived the revoke",
        <[_]>::is_empty,
    )
    .await;
    let never = t.spec_without_login();
    let none = sessions(name, c, &never).await;
    assert!(
        none.is_empty(),
        "{name}: sessions of a grant never made: {none:?}"
    );
}

/// A login as the grantee, on either database.
struct DbSession<C>(C);

#[async_trait::async_trait]
impl<C: Send> Session for DbSession<C>
where
    for<'c> &'c mut C: Executor<'c>,
{
    async fn run(&mut self, sql: &str) -> Result<(), String> {
        self.0
            .execute(sql)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

async fn bounded_connect<T>(
    connect: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "login timed out".to_owned())?
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------- PostgreSQL

struct PgTarget {
    url: String,
    ns: String,
    mode: Mode,
    admin: PgPool,
    settings: PostgresSettings,
    connector: PostgresConnector,
    /// Every request id handed out, so cleanup finds temporary logins.
    requests: Mutex<Vec<RequestId>>,
}

impl PgTarget {
    async fn setup(url: String, mode: Mode) -> PgTarget {
        let ns = namespace();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to postgres as admin");
        for role in [format!("{ns}_reader"), format!("{ns}_writer")] {
            admin
                .execute(format!("CREATE ROLE \"{role}\" NOLOGIN").as_str())
                .await
                .unwrap();
        }
        if mode == Mode::Grant {
            admin
                .execute(format!("CREATE ROLE \"{ns}_alice\" LOGIN PASSWORD 'fixture-pw'").as_str())
                .await
                .unwrap();
        }
        let settings = PostgresSettings {
            url: url.clone(),
            roles: vec![format!("{ns}_reader"), format!("{ns}_writer")],
            mode,
            login_template: format!("{ns}_{{user}}"),
            terminate_sessions: true,
            log_statements: Some("all".to_owned()),
            timeout: CALL_TIMEOUT,
        };
        let connector = PostgresConnector::new(settings.clone()).unwrap();
        PgTarget {
            url,
            ns,
            mode,
            admin,
            settings,
            connector,
            requests: Mutex::new(Vec::new()),
        }
    }

    fn roles(&self) -> Vec<String> {
        self.settings.roles.clone()
    }

    /// Whether PostgreSQL checks passwords for `login` on this connection:
    /// a wrong one is refused.
    async fn password_checked(&self, login: &str, spec: &GrantSpec) -> bool {
        self.connect_as(login, "not-the-password", spec)
            .await
            .is_err()
    }

    async fn stored_verifier(&self, login: &str) -> String {
        sqlx::query_scalar("SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1")
            .bind(login)
            .fetch_one(&self.admin)
            .await
            .unwrap()
    }
}

#[async_trait::async_trait]
impl SqlTarget for PgTarget {
    fn name(&self) -> String {
        format!("postgres/{:?}/{}", self.mode, self.ns)
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn connector(&self) -> &dyn Connector {
        &self.connector
    }
    fn unreachable(&self) -> Box<dyn Connector> {
        let url = format!("postgres://postgres@127.0.0.1:{CLOSED_PORT}/test");
        Box::new(
            PostgresConnector::new(PostgresSettings {
                url,
                timeout: UNREACHABLE_TIMEOUT,
                ..self.settings.clone()
            })
            .unwrap(),
        )
    }
    fn with_missing_role(&self) -> (Box<dyn Connector>, String) {
        let missing = format!("{}_missing", self.ns);
        let mut roles = self.roles();
        roles.push(missing.clone());
        let connector = PostgresConnector::new(PostgresSettings {
            roles,
            ..self.settings.clone()
        })
        .unwrap();
        (Box::new(connector), missing)
    }
    fn spec(&self, expires_at: Timestamp) -> GrantSpec {
        let id = fresh_request_id();
        self.requests.lock().unwrap().push(id.clone());
        grant_spec("alice", id, expires_at)
    }
    fn spec_without_login(&self) -> GrantSpec {
        let id = fresh_request_id();
        self.requests.lock().unwrap().push(id.clone());
        grant_spec("ghost", id, FUTURE)
    }
    fn login(&self, spec: &GrantSpec) -> String {
        match self.mode {
            Mode::Grant => format!("{}_{}", self.ns, spec.user),
            Mode::TemporaryLogin => format!("airlock_{}", spec.request_id),
        }
    }
    fn principal(&self, spec: &GrantSpec) -> String {
        self.login(spec)
    }
    fn fixture_password(&self) -> String {
        "fixture-pw".to_owned()
    }
    fn checks_passwords(&self) -> bool {
        false
    }
    async fn memberships(&self, login: &str) -> usize {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_auth_members am \
             JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member \
             WHERE m.rolname = $1 AND r.rolname = ANY($2)",
        )
        .bind(login)
        .bind(self.roles())
        .fetch_one(&self.admin)
        .await
        .unwrap();
        usize::try_from(n).unwrap()
    }
    async fn revoke_out_of_band(&self, login: &str) {
        for role in self.roles() {
            self.admin
                .execute(format!("REVOKE \"{role}\" FROM \"{login}\"").as_str())
                .await
                .unwrap();
        }
    }
    async fn add_holder_out_of_band(&self) -> String {
        let bob = format!("{}_bob", self.ns);
        self.admin
            .execute(format!("CREATE ROLE \"{bob}\" LOGIN").as_str())
            .await
            .unwrap();
        self.admin
            .execute(format!("GRANT \"{}_reader\" TO \"{bob}\"", self.ns).as_str())
            .await
            .unwrap();
        bob
    }
    async fn own_principal(&self) -> String {
        sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&self.admin)
            .await
            .unwrap()
    }
    async fn connect_as(
        &self,
        login: &str,
        password: &str,
        spec: &GrantSpec,
    ) -> Result<Box<dyn Session>, String> {
        // The tag the docs ask clients to use.
        let options = PgConnectOptions::from_str(&self.url)
            .unwrap()
            .username(login)
            .password(password)
            .application_name(&format!("airlock:{}", spec.request_id));
        let conn = bounded_connect(PgConnection::connect_with(&options)).await?;
        Ok(Box::new(DbSession(conn)))
    }
    fn host(&self) -> String {
        PgConnectOptions::from_str(&self.url)
            .unwrap()
            .get_host()
            .to_owned()
    }
    fn long_statement(&self, seconds: u32, marker: &str) -> String {
        format!("SELECT pg_sleep({seconds}), '{marker}'")
    }
    fn records_connection_time(&self) -> bool {
        true
    }
    async fn cleanup(&self) {
        let mut names = vec![
            format!("{}_alice", self.ns),
            format!("{}_bob", self.ns),
            format!("{}_lowly", self.ns),
        ];
        let requests = self.requests.lock().unwrap().clone();
        names.extend(requests.iter().map(|id| format!("airlock_{id}")));
        for name in &names {
            let _ = sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            )
            .bind(name)
            .execute(&self.admin)
            .await;
            let _ = self
                .admin
                .execute(format!("DROP ROLE IF EXISTS \"{name}\"").as_str())
                .await;
        }
        for role in self.roles() {
            let _ = self
                .admin
                .execute(format!("DROP ROLE IF EXISTS \"{role}\"").as_str())
                .await;
        }
    }
}

fn postgres_url() -> Option<String> {
    airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL")
}

/// The shared rules, then the SQL ones, on the target `setup` makes.
async fn sql_complies<T: SqlTarget + 'static>(setup: impl Future<Output = T>) {
    guarded(async { Sql(setup.await) }, |t| async move {
        run_compliance(&*t).await;
        run_sql_rules(&t.0).await;
    })
    .await;
}

#[tokio::test]
async fn postgres_grant_mode_complies() {
    let Some(url) = postgres_url() else { return };
    sql_complies(PgTarget::setup(url, Mode::Grant)).await;
}

#[tokio::test]
async fn postgres_temporary_login_mode_complies() {
    let Some(url) = postgres_url() else { return };
    let setup = async { Sql(PgTarget::setup(url, Mode::TemporaryLogin).await) };
    guarded(setup, |t| async move {
        run_compliance(&*t).await;
        run_sql_rules(&t.0).await;
        postgres_temporary_login_details(&t.0).await;
    })
    .await;
}

/// What only a PostgreSQL temporary login promises: the expiry and the
/// password live in the target, so they hold without Airlock.
async fn postgres_temporary_login_details(t: &PgTarget) {
    let name = t.name();
    let spec = t.spec(PAST);
    let login = t.login(&spec);
    let credential = t.connector.grant(&spec).await.unwrap().credential.unwrap();

    // The role exists, may log in in principle, and is past VALID UNTIL.
    let (can_login, expired, comment, log_statement): (
        bool,
        bool,
        Option<String>,
        Option<Vec<String>>,
    ) = sqlx::query_as(
        "SELECT rolcanlogin, rolvaliduntil < now(), \
                    shobj_description(oid, 'pg_authid'), rolconfig \
             FROM pg_roles WHERE rolname = $1",
    )
    .bind(&login)
    .fetch_one(&t.admin)
    .await
    .unwrap();
    assert!(can_login && expired, "{name}: {can_login} {expired}");
    assert_eq!(
        comment.as_deref(),
        Some(format!("airlock request {} for alice", spec.request_id).as_str())
    );
    assert_eq!(log_statement, Some(vec!["log_statement=all".to_owned()]));

    // The stored verifier is the returned password's.
    let stored = t.stored_verifier(&login).await;
    let (iterations, salt) = parse_verifier(&stored);
    assert_eq!(
        scram_sha256_verifier(credential.secret(), &salt, iterations),
        stored,
        "{name}: the stored verifier does not match the returned password"
    );

    // Target-enforced expiry: refused at login although the role exists.
    if t.password_checked(&login, &spec).await {
        assert!(
            t.connect_as(&login, credential.secret(), &spec)
                .await
                .is_err(),
            "{name}: a login past VALID UNTIL was let in"
        );
    } else {
        eprintln!(
            "NOTE: {name}: this server does not check passwords on the test connection (pg_hba \
             `trust`), and PostgreSQL checks VALID UNTIL only with password authentication, so the \
             refused login is not observed; checked instead that the role is past VALID UNTIL"
        );
    }
    t.connector.revoke(&spec).await.unwrap();
    assert!(t.memberships(&login).await == 0);

    // A login that owns objects and holds privileges is still dropped; what
    // it owned passes to the connector's account.
    let spec = t.spec(FUTURE);
    let login = t.login(&spec);
    t.connector.grant(&spec).await.unwrap();
    let schema = format!("{}_owned", t.ns);
    for sql in [
        format!("CREATE SCHEMA \"{schema}\" AUTHORIZATION \"{login}\""),
        format!("CREATE TABLE \"{schema}\".t (x int)"),
        format!("ALTER TABLE \"{schema}\".t OWNER TO \"{login}\""),
        format!("GRANT USAGE ON SCHEMA public TO \"{login}\""),
    ] {
        t.admin.execute(sql.as_str()).await.unwrap();
    }
    let revoked = t.connector.revoke(&spec).await;
    let owner: Option<String> =
        sqlx::query_scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1")
            .bind(&schema)
            .fetch_optional(&t.admin)
            .await
            .unwrap();
    t.admin
        .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
        .await
        .unwrap();
    revoked.unwrap_or_else(|e| panic!("{name}: revoke of a login owning objects: {e}"));
    let gone: bool =
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&login)
            .fetch_one(&t.admin)
            .await
            .unwrap();
    assert!(gone, "{name}: `{login}` survived the revoke");
    let admin: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&t.admin)
        .await
        .unwrap();
    assert_eq!(owner, Some(admin), "{name}: schema owner after revoke");

    // An account that may not see other logins' sessions is told so, rather
    // than shown sessions that look idle and come from nowhere.
    let lowly = format!("{}_lowly", t.ns);
    t.admin
        .execute(format!("CREATE ROLE \"{lowly}\" LOGIN CREATEROLE PASSWORD 'lowly-pw'").as_str())
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(&t.url).unwrap();
    let as_lowly = PostgresConnector::new(PostgresSettings {
        url: format!(
            "postgres://{lowly}:lowly-pw@{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("postgres")
        ),
        ..t.settings.clone()
    })
    .unwrap();
    let spec = t.spec(FUTURE);
    let login = t.login(&spec);
    let credential = t.connector.grant(&spec).await.unwrap().credential.unwrap();
    let session = t
        .connect_as(&login, credential.secret(), &spec)
        .await
        .unwrap();
    let err = as_lowly
        .sessions(&spec.user, &spec.request_id)
        .await
        .unwrap_err();
    assert!(
        !err.is_retryable() && err.message().contains("pg_read_all_stats"),
        "{name}: {err}"
    );
    drop(session);
    t.connector.revoke(&next_claim(&spec)).await.unwrap();
}

#[tokio::test]
async fn postgres_scram_verifiers_match_postgresql_own() {
    let Some(url) = postgres_url() else { return };
    tokio::time::timeout(BOUND, async {
        let admin = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
        let role = format!("{}_scram", namespace());
        admin
            .execute(format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE \"{role}\" PASSWORD 'pencil42'").as_str())
            .await
            .unwrap();
        let stored: String =
            sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
                .bind(&role)
                .fetch_one(&admin)
                .await
                .unwrap();
        admin
            .execute(format!("DROP ROLE \"{role}\"").as_str())
            .await
            .unwrap();
        let (iterations, salt) = parse_verifier(&stored);
        assert_eq!(scram_sha256_verifier("pencil42", &salt, iterations), stored);
    })
    .await
    .expect("test exceeded its time bound");
}

/// Iterations and salt of `SCRAM-SHA-256$<iterations>:<salt>$<keys>`.
fn parse_verifier(verifier: &str) -> (u32, Vec<u8>) {
    let params = verifier
        .strip_prefix("SCRAM-SHA-256$")
        .and_then(|rest| rest.split('$').next())
        .unwrap_or_else(|| panic!("not a scram verifier: {verifier}"));
    let (iterations, salt) = params.split_once(':').unwrap();
    (iterations.parse().unwrap(), base64_decode(salt))
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().take_while(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {text}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    out
}

// ------------------------------------------------------------------ MariaDB

struct MariaTarget {
    ns: String,
    mode: Mode,
    admin: MySqlPool,
    options: MySqlConnectOptions,
    settings: MariaDbSettings,
    connector: MariaDbConnector,
    requests: Mutex<Vec<RequestId>>,
}

impl MariaTarget {
    async fn setup(url: String, mode: Mode) -> MariaTarget {
        let ns = namespace();
        let options = MySqlConnectOptions::from_str(&url).unwrap();
        let admin = MySqlPoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await
            .expect("connect to mariadb as admin");
        for role in [format!("{ns}_reader"), format!("{ns}_writer")] {
            admin
                .execute(format!("CREATE ROLE `{role}`").as_str())
                .await
                .unwrap();
        }
        if mode == Mode::Grant {
            admin
                .execute(
                    format!("CREATE USER '{ns}_alice'@'%' IDENTIFIED BY 'fixture-pw'").as_str(),
                )
                .await
                .unwrap();
        }
        let settings = MariaDbSettings {
            url,
            roles: vec![format!("{ns}_reader"), format!("{ns}_writer")],
            mode,
            login_template: format!("{ns}_{{user}}"),
            host: "%".to_owned(),
            terminate_sessions: true,
            timeout: CALL_TIMEOUT,
        };
        let connector = MariaDbConnector::new(settings.clone()).unwrap();
        MariaTarget {
            ns,
            mode,
            admin,
            options,
            settings,
            connector,
            requests: Mutex::new(Vec::new()),
        }
    }

    fn roles(&self) -> Vec<String> {
        self.settings.roles.clone()
    }
}

#[async_trait::async_trait]
impl SqlTarget for MariaTarget {
    fn name(&self) -> String {
        format!("mariadb/{:?}/{}", self.mode, self.ns)
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn connector(&self) -> &dyn Connector {
        &self.connector
    }
    fn unreachable(&self) -> Box<dyn Connector> {
        Box::new(
            MariaDbConnector::new(MariaDbSettings {
                url: format!("mysql://root@127.0.0.1:{CLOSED_PORT}/test"),
                timeout: UNREACHABLE_TIMEOUT,
                ..self.settings.clone()
            })
            .unwrap(),
        )
    }
    fn with_missing_role(&self) -> (Box<dyn Connector>, String) {
        let missing = format!("{}_missing", self.ns);
        let mut roles = self.roles();
        roles.push(missing.clone());
        let connector = MariaDbConnector::new(MariaDbSettings {
            roles,
            ..self.settings.clone()
        })
        .unwrap();
        (Box::new(connector), missing)
    }
    fn spec(&self, expires_at: Timestamp) -> GrantSpec {
        let id = fresh_request_id();
        self.requests.lock().unwrap().push(id.clone());
        grant_spec("alice", id, expires_at)
    }
    fn spec_without_login(&self) -> GrantSpec {
        let id = fresh_request_id();
        self.requests.lock().unwrap().push(id.clone());
        grant_spec("ghost", id, FUTURE)
    }
    fn login(&self, spec: &GrantSpec) -> String {
        match self.mode {
            Mode::Grant => format!("{}_{}", self.ns, spec.user),
            Mode::TemporaryLogin => format!("airlock_{}", spec.request_id),
        }
    }
    fn principal(&self, spec: &GrantSpec) -> String {
        format!("{}@%", self.login(spec))
    }
    fn fixture_password(&self) -> String {
        "fixture-pw".to_owned()
    }
    fn checks_passwords(&self) -> bool {
        true
    }
    async fn memberships(&self, login: &str) -> usize {
        let mut n = 0i64;
        for role in self.roles() {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM mysql.roles_mapping WHERE User = ? AND Host = '%' AND Role = ?",
            )
            .bind(login)
            .bind(role)
            .fetch_one(&self.admin)
            .await
            .unwrap();
            n += held;
        }
        usize::try_from(n).unwrap()
    }
    async fn revoke_out_of_band(&self, login: &str) {
        for role in self.roles() {
            self.admin
                .execute(format!("REVOKE `{role}` FROM '{login}'@'%'").as_str())
                .await
                .unwrap();
        }
    }
    async fn add_holder_out_of_band(&self) -> String {
        let bob = format!("{}_bob", self.ns);
        self.admin
            .execute(format!("CREATE USER '{bob}'@'%'").as_str())
            .await
            .unwrap();
        self.admin
            .execute(format!("GRANT `{}_reader` TO '{bob}'@'%'", self.ns).as_str())
            .await
            .unwrap();
        format!("{bob}@%")
    }
    async fn own_principal(&self) -> String {
        sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(&self.admin)
            .await
            .unwrap()
    }
    async fn connect_as(
        &self,
        login: &str,
        password: &str,
        _spec: &GrantSpec,
    ) -> Result<Box<dyn Session>, String> {
        // No database: the grantee has no rights on the admin's one.
        let options = MySqlConnectOptions::new()
            .host(self.options.get_host())
            .port(self.options.get_port())
            .username(login)
            .password(password);
        let conn = bounded_connect(MySqlConnection::connect_with(&options)).await?;
        Ok(Box::new(DbSession(conn)))
    }
    fn host(&self) -> String {
        self.options.get_host().to_owned()
    }
    fn long_statement(&self, seconds: u32, marker: &str) -> String {
        format!("SELECT SLEEP({seconds}), '{marker}'")
    }
    fn records_connection_time(&self) -> bool {
        false
    }
    async fn cleanup(&self) {
        let mut users = vec![format!("{}_alice", self.ns), format!("{}_bob", self.ns)];
        let requests = self.requests.lock().unwrap().clone();
        users.extend(requests.iter().map(|id| format!("airlock_{id}")));
        for user in &users {
            let _ = self
                .admin
                .execute(format!("DROP USER IF EXISTS '{user}'@'%'").as_str())
                .await;
        }
        for role in self.roles() {
            let _ = self
                .admin
                .execute(format!("DROP ROLE IF EXISTS `{role}`").as_str())
                .await;
        }
    }
}

fn mariadb_url() -> Option<String> {
    airlock_testkit::service_url("AIRLOCK_TEST_MARIADB_URL")
}

#[tokio::test]
async fn mariadb_grant_mode_complies() {
    let Some(url) = mariadb_url() else { return };
    sql_complies(MariaTarget::setup(url, Mode::Grant)).await;
}

#[tokio::test]
async fn mariadb_temporary_login_mode_complies() {
    let Some(url) = mariadb_url() else { return };
    sql_complies(MariaTarget::setup(url, Mode::TemporaryLogin)).await;
}

// ------------------------------------------------------------------ SSH CA

/// The principal the test sshd's `AuthorizedPrincipalsFile` maps to the
/// current unix user.
const SSH_PRINCIPAL: &str = "web-admin";
/// How long the grant the suite waits out lasts: `valid_before` is
/// `expires_at` in whole seconds, so this leaves three at least to log in.
const SSH_LIFETIME: Duration = Duration::from_secs(4);
/// How long sshd may take to log why it refused a login after the client
/// has given up.
const SSHD_LOG_WAIT: Duration = Duration::from_secs(2);

/// The SSH certificate authority in a temporary folder, with a real sshd on
/// loopback that trusts its CA (through the `.pub` the connector writes
/// beside its key), maps [`SSH_PRINCIPAL`] to the current unix user and reads
/// the connector's KRL at every login. Access is a login through that sshd
/// with the issued certificate; a refusal is what sshd logged about it.
struct SshTarget {
    settings: SshCaSettings,
    connector: SshCertificateAuthority,
    key: UserKey,
    sshd: Sshd,
    /// Declared last, so sshd is killed before its folder is removed.
    _dir: tempfile::TempDir,
}

impl SshTarget {
    fn setup(tools: &OpenSsh) -> SshTarget {
        let dir = tempfile::tempdir().unwrap();
        let settings = SshCaSettings {
            call_timeout: CALL_TIMEOUT,
            ..SshCaSettings::new(
                dir.path().join("ca/ca_key"),
                vec![SSH_PRINCIPAL.to_owned()],
                dir.path().join("revoked.krl"),
                dir.path().join("state"),
            )
        };
        let connector = SshCertificateAuthority::load_or_generate(settings.clone()).unwrap();
        let trust = Trust {
            ca_public_key: &dir.path().join("ca/ca_key.pub"),
            principal: SSH_PRINCIPAL,
            krl: &settings.krl_path,
        };
        let sshd = Sshd::start(tools, dir.path(), &trust);
        SshTarget {
            key: tools.new_key(&dir.path().join("id_alice")),
            settings,
            connector,
            sshd,
            _dir: dir,
        }
    }

    /// What sshd has logged from byte `seen` on, once it has logged the end
    /// of the refused connection (or after [`SSHD_LOG_WAIT`]).
    fn sshd_log_since(&self, seen: usize) -> String {
        let deadline = std::time::Instant::now() + SSHD_LOG_WAIT;
        loop {
            let log = self.sshd.log().get(seen..).unwrap_or_default().to_owned();
            if log.contains("[preauth]") || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[async_trait::async_trait]
impl TargetUnderTest for SshTarget {
    fn name(&self) -> String {
        "ssh-ca".to_owned()
    }
    fn connector(&self) -> &dyn Connector {
        &self.connector
    }
    fn spec(&self, expires_at: Timestamp) -> GrantSpec {
        GrantSpec {
            entitlement: EntitlementId::parse("web-ssh").unwrap(),
            public_key: Some(self.key.public.clone()),
            ..grant_spec("alice", fresh_request_id(), expires_at)
        }
    }
    fn spec_never_granted(&self) -> GrantSpec {
        self.spec(FUTURE)
    }
    fn holding(&self, spec: &GrantSpec) -> Holding {
        Holding {
            principal: spec.request_id.as_str().to_owned(),
            request_id: Some(spec.request_id.clone()),
        }
    }
    async fn access(&self, _spec: &GrantSpec, granted: &Granted) -> Result<(), String> {
        let certificate = granted
            .certificate
            .as_deref()
            .unwrap_or_else(|| panic!("ssh-ca: the grant returned no certificate: {granted:?}"));
        let path = self.key.write_certificate(certificate);
        let seen = self.sshd.log().len();
        self.sshd.login(&self.key, &path).map_err(|said| {
            format!(
                "ssh said: {said}sshd logged:\n{}",
                self.sshd_log_since(seen)
            )
        })
    }
    fn refusal(&self, removal: Removal) -> &'static str {
        match removal {
            // The serial (and the key id) is in the KRL.
            Removal::Revoked => "revoked by file",
            // sshd refuses every key while it cannot read the KRL.
            Removal::OutOfBand => "in revoked keys file",
            // By sshd's own clock, past `valid_before`.
            Removal::Expired => "Certificate invalid: expired",
        }
    }
    /// The KRL lost (a cleanup job, a restore, a copy gone wrong): sshd then
    /// refuses every key, this certificate's too. The connector rebuilds the
    /// KRL from its records on every grant and revoke (and its health check
    /// says so), so the grant repeated restores the access. Its records, where
    /// `holders()` comes from, are untouched: `holders()` cannot see the loss.
    async fn remove_access_out_of_band(&self, _spec: &GrantSpec) -> bool {
        std::fs::remove_file(&self.settings.krl_path).unwrap();
        false
    }
    /// sshd is never called, so the only target the connector can be cut off
    /// from is its shared state: every grant, revoke and holders call runs
    /// under an exclusive `flock` on `state_dir/.lock`, which replicas sharing
    /// the state take in turn. Another process holding it (a replica stalled
    /// mid-call, a hung shared filesystem) makes those calls wait out their
    /// `call_timeout`, which is `Retryable`; once it lets go they go through.
    /// `health()` takes no lock (it signs a throwaway certificate and probes
    /// the folders), so this outage does not reach it.
    fn outage(&self) -> Outage {
        // Made before the lock is taken: loading writes the KRL under it.
        let connector = SshCertificateAuthority::load_or_generate(SshCaSettings {
            call_timeout: UNREACHABLE_TIMEOUT,
            ..self.settings.clone()
        })
        .unwrap();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.settings.state_dir.join(".lock"))
            .unwrap();
        lock.lock().unwrap();
        Outage {
            connector: Box::new(connector),
            _cause: Some(Box::new(lock)),
        }
    }
    fn enforced_expiry(&self) -> Option<Duration> {
        Some(SSH_LIFETIME)
    }
    async fn cleanup(&self) {
        // The folder goes, and sshd with it, when the target is dropped.
    }
}

#[tokio::test]
async fn ssh_ca_complies() {
    let Some(tools) = OpenSsh::find() else { return };
    guarded(async move { SshTarget::setup(&tools) }, |t| async move {
        run_compliance(&*t).await;
    })
    .await;
}

// ------------------------------------------------------ names (no service)

const HOSTILE: [&str; 4] = ["a\"; DROP ROLE x; --", "", "x'; DROP USER root; --", "`x`"];

fn hostile_names() -> Vec<String> {
    let mut names: Vec<String> = HOSTILE.iter().map(|s| (*s).to_owned()).collect();
    names.push("a".repeat(100));
    names
}

fn assert_names(err: ConnectorError, value: &str) {
    assert!(!err.is_retryable(), "{err}");
    assert!(err.message().contains(&format!("`{value}`")), "{err}");
}

#[tokio::test]
async fn hostile_names_are_rejected_with_permanent_errors_naming_them() {
    let pg = |roles: Vec<String>, template: &str| PostgresSettings {
        login_template: template.to_owned(),
        timeout: UNREACHABLE_TIMEOUT,
        ..PostgresSettings::new(
            format!("postgres://u@127.0.0.1:{CLOSED_PORT}/db"),
            roles,
            Mode::Grant,
        )
    };
    let maria = |roles: Vec<String>, template: &str| MariaDbSettings {
        login_template: template.to_owned(),
        timeout: UNREACHABLE_TIMEOUT,
        ..MariaDbSettings::new(
            format!("mysql://u@127.0.0.1:{CLOSED_PORT}/db"),
            roles,
            Mode::Grant,
        )
    };

    let pg_ok = PostgresConnector::new(pg(vec!["ok".to_owned()], "{user}")).unwrap();
    let maria_ok = MariaDbConnector::new(maria(vec!["ok".to_owned()], "{user}")).unwrap();
    let mut principals = hostile_names();
    principals.push("alice@10.0.0.1' OR '1".to_owned());
    for bad in hostile_names() {
        assert_names(
            PostgresConnector::new(pg(vec!["ok".to_owned(), bad.clone()], "{user}")).unwrap_err(),
            &bad,
        );
        assert_names(
            MariaDbConnector::new(maria(vec![bad.clone()], "{user}")).unwrap_err(),
            &bad,
        );
    }
    // A holder to remove is checked before any connection (the targets here
    // are a closed port, which would be a retryable error).
    for bad in principals {
        let holding = Holding {
            principal: bad.clone(),
            request_id: None,
        };
        assert_names(pg_ok.remove_holder(&holding).await.unwrap_err(), &bad);
        assert_names(maria_ok.remove_holder(&holding).await.unwrap_err(), &bad);
    }
    for template in ["x\"{user}", "{user}'; --", "{user} x", "no_placeholder"] {
        assert_names(
            PostgresConnector::new(pg(vec!["ok".to_owned()], template)).unwrap_err(),
            template,
        );
        assert_names(
            MariaDbConnector::new(maria(vec!["ok".to_owned()], template)).unwrap_err(),
            template,
        );
    }
    assert!(PostgresConnector::new(pg(Vec::new(), "{user}")).is_err());
    assert!(PostgresConnector::new(PostgresSettings {
        log_statements: Some("all'; DROP".to_owned()),
        ..pg(vec!["ok".to_owned()], "{user}")
    })
    .is_err());
    assert_names(
        MariaDbConnector::new(MariaDbSettings {
            host: "%' OR '1".to_owned(),
            ..maria(vec!["ok".to_owned()], "{user}")
        })
        .unwrap_err(),
        "%' OR '1",
    );

    // `{user}` expanding to something unquotable is refused before any
    // connection is made (the target here is a closed port).
    let long_user = "u".repeat(60);
    let pg_grant = PostgresConnector::new(pg(vec!["ok".to_owned()], "app_{user}")).unwrap();
    let maria_grant = MariaDbConnector::new(maria(vec!["ok".to_owned()], "app_{user}")).unwrap();
    for (user, login) in [
        ("svc.deploy@corp", "app_svc.deploy@corp".to_owned()),
        (long_user.as_str(), format!("app_{long_user}")),
    ] {
        let spec = grant_spec(user, fresh_request_id(), FUTURE);
        let connectors: [&dyn Connector; 2] = [&pg_grant, &maria_grant];
        for connector in connectors {
            assert_names(connector.grant(&spec).await.unwrap_err(), &login);
            assert_names(connector.revoke(&spec).await.unwrap_err(), &login);
        }
    }
    // A request id that cannot form a temporary login name.
    let pg_temp = PostgresConnector::new(PostgresSettings {
        mode: Mode::TemporaryLogin,
        ..pg(vec!["ok".to_owned()], "{user}")
    })
    .unwrap();
    let spec = grant_spec("alice", RequestId::parse("r1@x").unwrap(), FUTURE);
    assert_names(pg_temp.grant(&spec).await.unwrap_err(), "airlock_r1@x");
}
