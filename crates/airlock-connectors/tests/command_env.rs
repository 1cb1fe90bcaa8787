//! Executes a script directly (not through `/bin/sh`) and checks that
//! nothing of the server's own environment (its `AIRLOCK_*` configuration, a
//! webhook's secret, `HOME`, its `PATH`) reaches it: only what the
//! configuration lists, `PATH` and the protocol's variables. This is the only
//! test in its binary: it sets a process environment variable, and it `exec`s
//! a freshly written file, which a concurrent fork elsewhere in the process
//! could make fail with "text file busy".

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use airlock_connectors::command::{CommandConnector, CommandSettings};
use airlock_connectors::{Connector, GrantSpec};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};

#[test]
fn a_script_runs_directly_and_gets_only_its_configured_environment() {
    // Set before any runtime thread exists, so no other thread reads the
    // environment while it changes.
    std::env::set_var("AIRLOCK_DATABASE_PASSWORD", "hunter2");
    std::env::set_var("AIRLOCK_USER", "stale-user");
    // What a webhook's `secret_env` names: not an `AIRLOCK_*` variable.
    std::env::set_var("WEBHOOK_SIGNING_SECRET", "s3cr3t");
    std::env::set_var("PATH", "/opt/server-only/bin:/usr/bin:/bin");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("env.log");
    let script = dir.path().join("grant.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s|%s|%s|%s|%s|%s|%s|%s\\n' \"$1\" \"$AIRLOCK_USER\" \"${AIRLOCK_DATABASE_PASSWORD-unset}\" \"$AIRLOCK_LOG\" \"${WEBHOOK_SIGNING_SECRET-unset}\" \"${HOME-unset}\" \"$PATH\" \"$TEAM\" >> \"$AIRLOCK_LOG\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let connector = CommandConnector::new(CommandSettings {
        program: script,
        args: vec![],
        timeout: Duration::from_secs(10),
        // Configured variables may use the prefix; only inherited ones go.
        env: vec![
            ("AIRLOCK_LOG".to_owned(), log.display().to_string()),
            ("TEAM".to_owned(), "db".to_owned()),
        ],
    });
    let spec = GrantSpec {
        request_id: RequestId::parse("req-9").unwrap(),
        user: UserId::parse("bob").unwrap(),
        entitlement: EntitlementId::parse("billing-admin").unwrap(),
        expires_at: Timestamp::from_unix_millis(1_700_000_000_000),
        claim: 1,
        public_key: None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            connector.grant(&spec).await.unwrap();
            connector.health().await.unwrap();
        })
        .await
        .expect("test exceeded its time bound");
    });

    let logged = std::fs::read_to_string(&log).unwrap();
    let log = log.display();
    let path = airlock_connectors::command::DEFAULT_PATH;
    assert_eq!(
        logged,
        format!(
            "grant|bob|unset|{log}|unset|unset|{path}|db\nhealth||unset|{log}|unset|unset|{path}|db\n"
        )
    );
}
