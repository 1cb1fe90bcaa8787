//! Helpers shared by test suites. Tests that need a real service (PostgreSQL,
//! MariaDB) find it through an environment variable, say loudly when they
//! skip, and refuse to skip where `AIRLOCK_REQUIRE_SERVICES=1` (CI).

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
            eprintln!(
                "SKIPPED: {var} is not set, so this test does not run (see README: Development)"
            );
            None
        }
    }
}
