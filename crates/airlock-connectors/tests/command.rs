//! Runs real shell scripts through the command connector, because the risks
//! live at the process boundary: arguments and environment arriving intact,
//! exit statuses mapped to the right kind of failure, and timeouts that really
//! return.
//!
//! Scripts are run as `/bin/sh <script>` rather than executed directly: with
//! tests running in parallel, another thread's fork can briefly hold a freshly
//! written script open for writing, and `exec` then fails with "text file
//! busy". `command_env.rs` covers direct execution in a process of its own.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the value in the message"
)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_connectors::command::{CommandConnector, CommandSettings};
use airlock_connectors::{Connector, GrantSpec};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};

/// No test here may take longer than this, whatever the connector does.
const BOUND: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(BOUND, test)
        .await
        .expect("test exceeded its time bound")
}

fn spec() -> GrantSpec {
    GrantSpec {
        request_id: RequestId::parse("req-1").unwrap(),
        user: UserId::parse("alice").unwrap(),
        entitlement: EntitlementId::parse("prod-db").unwrap(),
        expires_at: Timestamp::from_unix_millis(1_700_000_000_500),
        claim: 1,
        public_key: None,
    }
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path
}

fn via_sh(script: &Path, timeout: Duration, env: Vec<(String, String)>) -> CommandConnector {
    CommandConnector::new(CommandSettings {
        program: PathBuf::from("/bin/sh"),
        args: vec![script.display().to_string()],
        timeout,
        env,
    })
}

#[tokio::test]
async fn arguments_and_environment_reach_the_program_for_grant_revoke_and_health() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.log");
        let script = write_script(
            dir.path(),
            "log.sh",
            r#"printf 'args=%s\n' "$*" >> "$LOG_FILE"
printf 'env=%s|%s|%s|%s|%s|%s|%s|%s\n' "$AIRLOCK_ACTION" "$AIRLOCK_USER" "$AIRLOCK_ENTITLEMENT" \
  "$AIRLOCK_REQUEST_ID" "$AIRLOCK_EXPIRES_AT" "$AIRLOCK_EXPIRES_AT_UNIX" "$AIRLOCK_CLAIM" "$EXTRA" >> "$LOG_FILE""#,
        );
        let connector = via_sh(
            &script,
            Duration::from_secs(10),
            vec![
                ("LOG_FILE".to_owned(), log.display().to_string()),
                ("EXTRA".to_owned(), "extra value".to_owned()),
            ],
        );

        connector.grant(&spec()).await.unwrap();
        connector.revoke(&spec()).await.unwrap();
        connector.health().await.unwrap();

        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            logged,
            "args=grant alice prod-db req-1 2023-11-14T22:13:20Z\n\
             env=grant|alice|prod-db|req-1|2023-11-14T22:13:20Z|1700000000|1|extra value\n\
             args=revoke alice prod-db req-1 2023-11-14T22:13:20Z\n\
             env=revoke|alice|prod-db|req-1|2023-11-14T22:13:20Z|1700000000|1|extra value\n\
             args=health\n\
             env=health|||||||extra value\n"
        );
        assert_eq!(connector.call_timeout(), Duration::from_secs(10));
    })
    .await;
}

#[tokio::test]
async fn other_nonzero_exit_is_permanent_and_keeps_stderr() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(
            dir.path(),
            "fail.sh",
            "echo 'progress on stdout'\necho '  no such group: admins  ' >&2\nexit 3",
        );
        let err = via_sh(&script, Duration::from_secs(10), vec![])
            .grant(&spec())
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert_eq!(
            err.message(),
            "`/bin/sh` exited with status 3: no such group: admins"
        );
    })
    .await;
}

#[tokio::test]
async fn exit_75_is_retryable() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "tempfail.sh", "echo 'ldap busy' >&2\nexit 75");
        let err = via_sh(&script, Duration::from_secs(10), vec![])
            .revoke(&spec())
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.message(), "`/bin/sh` exited with status 75: ldap busy");
    })
    .await;
}

#[tokio::test]
async fn death_by_signal_is_permanent() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "killed.sh", "kill -9 $$");
        let err = via_sh(&script, Duration::from_secs(10), vec![])
            .grant(&spec())
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.message().contains("killed by signal 9"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_and_retryable() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "slow.sh", "echo started >&2\nsleep 5");
        let connector = via_sh(&script, Duration::from_millis(300), vec![]);
        let started = Instant::now();
        let err = connector.grant(&spec()).await.unwrap_err();
        let took = started.elapsed();
        assert!(err.is_retryable(), "{err}");
        assert!(err.message().contains("timed out after 300ms"), "{err}");
        assert!(err.message().contains("started"), "{err}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    })
    .await;
}

#[tokio::test]
async fn a_missing_program_is_retryable() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let connector = CommandConnector::new(CommandSettings {
            program: dir.path().join("does-not-exist"),
            args: vec![],
            timeout: Duration::from_secs(10),
            env: vec![],
        });
        let err = connector.grant(&spec()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.message().starts_with("could not start `"), "{err}");
        assert!(err.message().contains("does-not-exist"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_chatty_program_cannot_block_on_a_full_pipe_and_stderr_is_truncated() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB on each stream: far beyond a pipe buffer (64 KiB on Linux).
        let script = write_script(
            dir.path(),
            "chatty.sh",
            "head -c 1048576 /dev/zero | tr '\\0' o\nhead -c 1048576 /dev/zero | tr '\\0' e >&2\nexit 3",
        );
        let err = via_sh(&script, Duration::from_secs(10), vec![]).grant(&spec()).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.message().starts_with("`/bin/sh` exited with status 3: eee"));
        assert!(err.message().ends_with("[truncated]"));
        assert!(err.message().len() < 2200, "{}", err.message().len());
    })
    .await;
}

#[tokio::test]
async fn a_background_process_holding_the_pipes_does_not_stall_a_finished_call() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // The background `sleep` inherits stdout and stderr, so they stay
        // open after the script itself has exited successfully.
        let script = write_script(dir.path(), "daemon.sh", "sleep 3 &\nexit 0");
        let connector = via_sh(&script, Duration::from_secs(10), vec![]);
        let started = Instant::now();
        connector.grant(&spec()).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");
    })
    .await;
}
