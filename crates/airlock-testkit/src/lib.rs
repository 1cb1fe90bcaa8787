//! Helpers shared by test suites. Tests that need a real service (PostgreSQL,
//! MariaDB) find it through an environment variable, say loudly when they
//! skip, and refuse to skip where `AIRLOCK_REQUIRE_SERVICES=1` (CI); each
//! PostgreSQL test gets a database of its own. Tests that need a program
//! (sshd, ssh) find it the same way through [`service_program`], and those
//! that log in to a real sshd start it through [`sshd`]. Async tests hold
//! themselves to a time bound through [`bounded`], and read the wall clock,
//! where their target does, through [`wall_clock_unix_millis`]. Tests that
//! sign in with an identity provider start a real one through [`oidc`].

pub mod oidc;
pub mod smtp;
pub mod sshd;

/// Runs `test` to its end, or fails it once `limit` has passed: a test that
/// waits on a service or another process must fail, not hang, when that
/// never answers.
///
/// # Panics
/// When `limit` passes first.
#[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
pub async fn bounded<F: std::future::Future>(limit: std::time::Duration, test: F) -> F::Output {
    tokio::time::timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("test exceeded its time bound of {limit:?}"))
}

/// Polls `check` every 50 ms until it returns a value, for a state a server
/// reaches in the background (a grant going active, a revoke landing).
///
/// # Panics
/// When `limit` passes first, naming `what` was awaited.
#[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    limit: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Milliseconds since the Unix epoch by the wall clock, for tests of a
/// target that compares with it (sshd checks a certificate's validity by its
/// own clock), where injected time cannot reach.
#[expect(
    clippy::disallowed_methods,
    reason = "the target under test reads the wall clock, so the test must too"
)]
pub fn wall_clock_unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Says that the running test skips its work, and why, on the process's own
/// stderr: libtest captures what `eprintln!` prints and shows it only for
/// failing tests, so a skip said that way would pass unseen.
pub(crate) fn announce_skip(why: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!(
        "SKIPPED {test}: {why}, so it does not do its work (see README: Development; CI sets AIRLOCK_REQUIRE_SERVICES=1 and refuses skips)\n"
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The URL in `var`, or `None` after printing why the caller skips.
///
/// # Panics
/// When `var` is unset and `AIRLOCK_REQUIRE_SERVICES=1`: in CI a missing
/// service is a failure, not a skip.
#[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{var} is not set but AIRLOCK_REQUIRE_SERVICES=1: this test must not skip")
        }
        _ => {
            announce_skip(&format!("{var} is not set"));
            None
        }
    }
}

/// The program a test needs (`/usr/sbin/sshd`, or a bare name such as `ssh`
/// looked up on `PATH`), or `None` after printing why the caller skips.
///
/// # Panics
/// When the program is missing and `AIRLOCK_REQUIRE_SERVICES=1`, as for
/// [`service_url`].
#[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
pub fn service_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |path: &std::path::Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        Some(std::path::PathBuf::from(program)).filter(|p| is_executable(p))
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| is_executable(p))
        })
    };
    match found {
        Some(path) => Some(path),
        None if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("`{program}` is not installed but AIRLOCK_REQUIRE_SERVICES=1: this test must not skip")
        }
        None => {
            announce_skip(&format!("`{program}` is not installed"));
            None
        }
    }
}

/// `path`, a file or folder a test needs that an install step provides
/// (`install` says which), or `None` after printing why the caller skips.
///
/// # Panics
/// When `path` is missing and `AIRLOCK_REQUIRE_SERVICES=1`, as for
/// [`service_url`].
#[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
pub fn service_path(path: &std::path::Path, install: &str) -> Option<std::path::PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let why = format!("`{}` is missing (run `{install}`)", path.display());
    if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{why} but AIRLOCK_REQUIRE_SERVICES=1: this test must not skip");
    }
    announce_skip(&why);
    None
}

/// A PostgreSQL database made for one test on the server at `admin_url`, so
/// tests never see each other's rows; [`FreshDatabase::drop_now`] removes it.
pub struct FreshDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl FreshDatabase {
    /// Creates `PREFIX_<pid>_<nanos>` next to the database `admin_url` names.
    ///
    /// # Panics
    /// When the server refuses: the test cannot run without it.
    #[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
    pub async fn create(admin_url: &str, prefix: &str) -> FreshDatabase {
        use sqlx::Connection;
        let nanos = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("{prefix}_{}_{nanos}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        FreshDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Drops the database, disconnecting anyone still connected.
    pub async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
        }
    }
}

/// Runs `flow` on SQLite (`None`) and then on a fresh PostgreSQL database
/// named `prefix_…` (`Some(url)`, when `AIRLOCK_TEST_POSTGRES_URL` gives a
/// server), each within `limit`; the database is dropped afterwards.
pub async fn on_sqlite_and_postgres<F, Fut>(prefix: &str, limit: std::time::Duration, flow: F)
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    bounded(limit, flow(None)).await;
    let Some(base) = service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let db = FreshDatabase::create(&base, prefix).await;
    bounded(limit, flow(Some(db.url.clone()))).await;
    db.drop_now().await;
}
