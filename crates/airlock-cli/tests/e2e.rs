//! End-to-end tests that drive the real `airlock` binary: the demo server,
//! the CLI against it, expiry through the command connector, recovery after a
//! crash, and tamper detection in the audit chain.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step should fail the test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// A demo server process; killed when dropped.
struct Demo {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        Demo::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("AIRLOCK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start airlock demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("demo printed its URL");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in `{first}`"))
            .to_owned();
        Demo {
            child,
            url,
            dir: dir.to_owned(),
        }
    }

    fn token(&self, user: &str) -> String {
        let tokens: Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("tokens.json")).unwrap())
                .unwrap();
        tokens[user].as_str().unwrap().to_owned()
    }

    /// Runs the CLI as `user`.
    fn cli(&self, user: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("AIRLOCK_URL", &self.url)
            .env("AIRLOCK_TOKEN", self.token(user))
            .output()
            .expect("run airlock")
    }

    /// Runs the CLI with `--json` and parses what it printed; panics on failure.
    fn json(&self, user: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(user, &all);
        assert!(
            out.status.success(),
            "airlock {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn connector_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("demo-connector.log")).unwrap_or_default()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns Some, or fails after `limit`.
fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn state_of(demo: &Demo, id: &str) -> Value {
    demo.json("alice", &["show", id])
}

#[test]
fn request_approve_active_expire_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());

    // Bad input is refused with the field named.
    let out = demo.cli(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "3s",
            "--reason",
            "fix",
            "--ticket",
            "nope",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ticket"), "{err}");

    let created = demo.json(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "3s",
            "--reason",
            "fix the index",
            "--ticket",
            "INC-7",
        ],
    );
    assert_eq!(created["state"], "pending");
    let id = created["id"].as_str().unwrap().to_owned();

    let pending = demo.json("bob", &["pending"]);
    assert!(pending
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == id.as_str()));
    let own = demo.cli("alice", &["approve", &id]);
    assert!(
        !own.status.success(),
        "a requester approved their own request"
    );

    demo.json("bob", &["approve", &id, "--comment", "go ahead"]);
    let active = eventually(Duration::from_secs(10), "grant", || {
        let r = state_of(&demo, &id);
        (r["state"] == "active").then_some(r)
    });
    assert!(demo.connector_log().contains(&format!(
        "grant user=alice entitlement=prod-db-admin request={id}"
    )));
    let grants = demo.json("alice", &["grants"]);
    assert!(grants
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["id"] == id.as_str()));
    assert!(active["time_left_seconds"].as_u64().unwrap() <= 3);

    let ended = eventually(Duration::from_secs(10), "expiry and revocation", || {
        let r = state_of(&demo, &id);
        (r["state"] == "expired" && !r["deprovisioned_at"].is_null()).then_some(r)
    });
    assert!(ended["ended_at"].is_string());
    assert!(demo.connector_log().contains(&format!(
        "revoke user=alice entitlement=prod-db-admin request={id}"
    )));

    let events = demo.json("admin", &["audit", "--request", &id]);
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "requested",
            "approved",
            "granted",
            "expired",
            "deprovisioned"
        ]
    );
    let verify = demo.cli("admin", &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn release_cancel_and_revoke_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());

    let r = demo.json(
        "alice",
        &[
            "request",
            "staging-shell",
            "--for",
            "10m",
            "--reason",
            "deploy",
            "--wait",
        ],
    );
    assert_eq!(r["state"], "active", "--wait returns once provisioned: {r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let released = demo.json("alice", &["release", &id]);
    assert_eq!(released["state"], "released");
    eventually(Duration::from_secs(10), "revoke after release", || {
        demo.connector_log()
            .contains(&format!(
                "revoke user=alice entitlement=staging-shell request={id}"
            ))
            .then_some(())
    });

    let p = demo.json(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--reason",
            "x",
            "--ticket",
            "CHG-1",
        ],
    );
    let pid = p["id"].as_str().unwrap().to_owned();
    assert_eq!(demo.json("alice", &["cancel", &pid])["state"], "cancelled");
    assert!(
        !demo.cli("bob", &["approve", &pid]).status.success(),
        "approved a cancelled request"
    );

    let r = demo.json(
        "bob",
        &[
            "request",
            "staging-shell",
            "--for",
            "10m",
            "--reason",
            "debug",
            "--wait",
        ],
    );
    let rid = r["id"].as_str().unwrap().to_owned();
    assert!(!demo
        .cli("alice", &["revoke", &rid, "--reason", "x"])
        .status
        .success());
    let revoked = demo.json("admin", &["revoke", &rid, "--reason", "incident over"]);
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["end_reason"], "incident over");
    eventually(Duration::from_secs(10), "revoke after admin revoke", || {
        demo.connector_log()
            .contains(&format!(
                "revoke user=bob entitlement=staging-shell request={rid}"
            ))
            .then_some(())
    });
}

#[test]
fn grants_that_fell_due_while_the_server_was_down_are_revoked_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let r = demo.json(
        "alice",
        &[
            "request",
            "staging-shell",
            "--for",
            "2s",
            "--reason",
            "short",
            "--wait",
        ],
    );
    assert_eq!(r["state"], "active");
    let id = r["id"].as_str().unwrap().to_owned();
    demo.kill();
    assert!(
        !std::fs::read_to_string(dir.path().join("demo-connector.log"))
            .unwrap()
            .contains("revoke")
    );

    std::thread::sleep(Duration::from_secs(3));
    let restarted_at = Instant::now();
    let demo = Demo::start(dir.path());
    let r = eventually(Duration::from_secs(10), "revocation after restart", || {
        let r = state_of(&demo, &id);
        (!r["deprovisioned_at"].is_null()).then_some(r)
    });
    assert_eq!(r["state"], "expired");
    assert!(restarted_at.elapsed() < Duration::from_secs(5));
    assert!(demo.connector_log().contains(&format!(
        "revoke user=alice entitlement=staging-shell request={id}"
    )));
    assert!(demo.cli("admin", &["audit", "verify"]).status.success());
}

#[test]
fn audit_verify_names_the_first_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    demo.json(
        "alice",
        &[
            "request",
            "staging-shell",
            "--for",
            "10m",
            "--reason",
            "deploy",
            "--wait",
        ],
    );
    demo.kill();

    // Edit event 2 behind Airlock's back (the append-only trigger must be dropped first).
    let db = dir.path().join("airlock.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        let blocked = sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2").execute(&mut conn).await;
        assert!(blocked.is_err(), "audit events must be append-only");
        sqlx::raw_sql("DROP TRIGGER audit_events_no_update; UPDATE audit_events SET actor = 'mallory' WHERE seq = 2;")
            .execute(&mut conn)
            .await
            .unwrap();
    });

    let demo = Demo::start(dir.path());
    let out = demo.cli("admin", &["audit", "verify"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("event 2"), "{err}");
}

#[test]
fn config_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[users.alice]\ngroups = [\"eng\"]\n\n[connectors.c]\ntype = \"command\"\nprogram = \"/bin/true\"\n\n\
         [entitlements.db]\nrequestable_by = [\"eng\"]\nmax_duration = \"5 parsecs\"\nauto_approve = true\nconnector = \"c\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:10:"), "{err}");
    assert!(err.contains("entitlements.db.max_duration"), "{err}");
}

#[test]
fn the_lifecycle_and_restart_recovery_work_on_postgres() {
    let Some(admin_url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(airlock_testkit::FreshDatabase::create(
        &admin_url,
        "airlock_e2e",
    ));

    let migrate = Command::new(BIN)
        .args(["migrate", "--database", &db.url])
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(String::from_utf8_lossy(&migrate.stdout).contains("schema version 1"));

    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start_with(dir.path(), &["--database", &db.url]);
    let r = demo.json(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "2s",
            "--reason",
            "pg",
            "--ticket",
            "INC-1",
        ],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    demo.json("carol", &["approve", &id]);
    eventually(Duration::from_secs(10), "grant on postgres", || {
        (state_of(&demo, &id)["state"] == "active").then_some(())
    });
    demo.kill();
    assert!(
        !std::fs::read_to_string(dir.path().join("demo-connector.log"))
            .unwrap()
            .contains("revoke")
    );
    std::thread::sleep(Duration::from_secs(3));

    let demo = Demo::start_with(dir.path(), &["--database", &db.url]);
    let r = eventually(
        Duration::from_secs(10),
        "revocation after restart on postgres",
        || {
            let r = state_of(&demo, &id);
            (!r["deprovisioned_at"].is_null()).then_some(r)
        },
    );
    assert_eq!(r["state"], "expired");
    assert!(demo.connector_log().contains(&format!(
        "revoke user=alice entitlement=prod-db-admin request={id}"
    )));
    let verify = demo.cli("admin", &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        !dir.path().join("airlock.db").exists(),
        "the demo wrote SQLite despite --database"
    );
    demo.kill();
    rt.block_on(db.drop_now());
}

/// Exports a SQLite demo's state and imports it into `target`, then checks
/// the imported server tells the same story and its audit chain verifies.
fn export_then_import(target: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let active = demo.json(
        "alice",
        &[
            "request",
            "staging-shell",
            "--for",
            "30m",
            "--reason",
            "moving",
            "--wait",
        ],
    );
    let pending = demo.json(
        "bob",
        &[
            "request",
            "prod-db-admin",
            "--reason",
            "later",
            "--ticket",
            "CHG-9",
        ],
    );
    let released = demo.json(
        "bob",
        &["request", "staging-shell", "--reason", "x", "--wait"],
    );
    demo.json("bob", &["release", released["id"].as_str().unwrap()]);
    // Refused requests leave nothing behind to move.
    assert!(!demo
        .cli("carol", &["request", "staging-shell", "--reason", "x"])
        .status
        .success());
    std::thread::sleep(Duration::from_millis(500));
    let before = demo.json("admin", &["list"]);
    demo.kill();

    let export = dir.path().join("export.jsonl");
    let out = Command::new(BIN)
        .args(["export", "--database"])
        .arg(dir.path().join("airlock.db"))
        .arg("--output")
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(BIN)
        .args(["import", "--database", target, "--input"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit chain ok"));

    // A second import into the now non-empty database is refused.
    let again = Command::new(BIN)
        .args(["import", "--database", target, "--input"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let mut args = vec!["--database", target];
    args.extend_from_slice(extra);
    let moved = Demo::start_with(dir.path(), &args);
    // Everything but the time left, which moved on while we copied.
    let timeless = |mut list: Value| {
        for r in list.as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("time_left_seconds");
        }
        list
    };
    assert_eq!(timeless(moved.json("admin", &["list"])), timeless(before));
    assert_eq!(
        moved.json("alice", &["show", active["id"].as_str().unwrap()])["state"],
        "active"
    );
    assert_eq!(
        moved.json("bob", &["show", pending["id"].as_str().unwrap()])["state"],
        "pending"
    );
    assert!(moved.cli("admin", &["audit", "verify"]).status.success());
}

#[test]
fn export_and_import_move_all_state_between_databases() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    export_then_import(copy.to_str().unwrap(), &[]);

    // A damaged export names the line at fault and writes nothing.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"header\":{\"format\":\"airlock-export\",\"version\":1,\"schema\":1}}\n{\"request\":{\"id\":1}}\n").unwrap();
    let empty = dir.path().join("empty.db");
    let out = Command::new(BIN)
        .args(["import", "--database"])
        .arg(&empty)
        .arg("--input")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    if let Some(admin_url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(airlock_testkit::FreshDatabase::create(
            &admin_url,
            "airlock_e2e",
        ));
        export_then_import(&db.url, &[]);
        rt.block_on(db.drop_now());
    }
}

#[test]
fn policy_validate_names_file_line_and_column_and_policy_test_runs_the_demo_cases() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/demo");
    let ok = Command::new(BIN)
        .args(["policy", "test"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(" passed, 0 failed"));

    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&demo).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("zz-broken.cedar"),
        "permit(principal, action == Airlock::Action::\"request\", resource)\nwhen { principal.nonexistent };\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["policy", "validate"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zz-broken.cedar:2:"), "{err}");
}
