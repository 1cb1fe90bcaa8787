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

use airlock_server::api::parse_time;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// A demo server process; killed when dropped.
struct Demo {
    child: Child,
    url: String,
    dir: PathBuf,
    /// What it printed after its URL.
    printed: std::sync::mpsc::Receiver<String>,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        Demo::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Demo {
        let mut command = Command::new(BIN);
        command
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra);
        Demo::launch(dir, command)
    }

    /// `airlock serve --config CONFIG`; `dir` holds `tokens.json`.
    fn serve(dir: &Path, config: &Path) -> Demo {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config);
        Demo::launch(dir, command)
    }

    /// Starts a server and waits for the URL it prints first.
    fn launch(dir: &Path, mut command: Command) -> Demo {
        let mut child = command
            .env("AIRLOCK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start airlock");
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
            printed: rx,
        }
    }

    /// alice asks for `staging-shell` (auto-approved) for ten minutes and
    /// waits until it is provisioned.
    fn staging_shell(&self, reason: &str) -> Value {
        self.json(
            "alice",
            &[
                "request",
                "staging-shell",
                "--for",
                "10m",
                "--reason",
                reason,
                "--wait",
            ],
        )
    }

    /// The audit checkpoint key the server printed at start.
    fn checkpoint_key(&self) -> String {
        const PREFIX: &str = "Audit checkpoint key: ";
        loop {
            let line = self
                .printed
                .recv_timeout(Duration::from_secs(10))
                .expect("the server printed its checkpoint key");
            if let Some(key) = line.strip_prefix(PREFIX) {
                return key.trim().to_owned();
            }
        }
    }

    /// `GET path` without a token: the status and the body.
    fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let host = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, response)
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it to exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        eventually(Duration::from_secs(30), "the server to exit", || {
            self.child.try_wait().unwrap()
        });
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

/// A fresh PostgreSQL database (named from `prefix`) and the runtime that
/// drops it; `None` (after a loud skip) when no PostgreSQL is configured.
fn fresh_postgres(
    prefix: &str,
) -> Option<(tokio::runtime::Runtime, airlock_testkit::FreshDatabase)> {
    let admin_url = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(airlock_testkit::FreshDatabase::create(&admin_url, prefix));
    Some((rt, db))
}

/// A new token for alice, written to `dir/tokens.json` where [`Demo`] finds it.
fn alice_token(dir: &Path) -> String {
    let token = airlock_server::config::new_token();
    std::fs::write(
        dir.join("tokens.json"),
        serde_json::json!({ "alice": token }).to_string(),
    )
    .unwrap();
    token
}

/// Waits until the wall clock is past `rfc3339` (a grant's expiry, say),
/// for tests of what happens to a deadline while no server runs.
fn wait_until_past(rfc3339: &str) {
    let deadline = humantime::parse_rfc3339(rfc3339)
        .expect("an RFC 3339 time")
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    eventually(Duration::from_secs(30), "the deadline to pass", || {
        (u128::try_from(airlock_testkit::wall_clock_unix_millis()).unwrap() > deadline)
            .then_some(())
    });
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
            "approval_recorded",
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
fn a_bundle_is_requested_approved_shown_and_released_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let created = demo.json(
        "alice",
        &[
            "request",
            "incident-kit",
            "--for",
            "1h",
            "--reason",
            "the database is down",
            "--ticket",
            "INC-42",
        ],
    );
    assert_eq!(created["bundle"]["name"], "incident-kit");
    let parts = |r: &Value| -> Vec<String> {
        r["bundle"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p["entitlement"].as_str().unwrap(),
                    p["state"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        parts(&created),
        ["prod-db-admin pending", "staging-shell pending"]
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let second = created["bundle"]["parts"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // One approval (through either part) approves both.
    demo.json("bob", &["approve", &second, "--comment", "go"]);
    eventually(Duration::from_secs(10), "both grants", || {
        let r = state_of(&demo, &id);
        (parts(&r) == ["prod-db-admin active", "staging-shell active"]).then_some(())
    });
    let shown = demo.cli("alice", &["show", &second]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&format!("bundle:        incident-kit ({id})")),
        "{text}"
    );
    assert!(
        text.contains(&format!("  {id}  prod-db-admin  active")),
        "{text}"
    );
    assert!(
        text.contains(&format!("  {second}  staging-shell  active")),
        "{text}"
    );
    // A release of one part ends both, and both grants are removed.
    demo.json("alice", &["release", &id]);
    eventually(Duration::from_secs(10), "both removed", || {
        let log = demo.connector_log();
        (log.contains(&format!(
            "revoke user=alice entitlement=prod-db-admin request={id}"
        )) && log.contains(&format!(
            "revoke user=alice entitlement=staging-shell request={second}"
        )))
        .then_some(())
    });
    assert_eq!(
        parts(&state_of(&demo, &second)),
        ["prod-db-admin released", "staging-shell released"]
    );
}

#[test]
fn release_cancel_and_revoke_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());

    let r = demo.staging_shell("deploy");
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

    // Three requests, one page at a time: each page says where the next starts.
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let everything = ids(&demo.json("admin", &["list"]));
    assert_eq!(everything, [rid.clone(), pid.clone(), id.clone()]);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["list", "--limit", "1", "--json"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let out = demo.cli("admin", &args);
        assert!(out.status.success(), "{}", stderr(&out));
        paged.extend(ids(&serde_json::from_slice(&out.stdout).unwrap()));
        let err = stderr(&out);
        cursor = err
            .split("--cursor ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(paged, everything);
    assert_eq!(
        ids(&demo.json("admin", &["list", "--limit", "1", "--all"])),
        everything
    );
    let bad = demo.cli("admin", &["list", "--cursor", "not-a-cursor"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("cursor"), "{}", stderr(&bad));
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
    let expires_at = r["expires_at"].as_str().unwrap().to_owned();
    demo.kill();
    assert!(
        !std::fs::read_to_string(dir.path().join("demo-connector.log"))
            .unwrap()
            .contains("revoke")
    );

    wait_until_past(&expires_at);
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

/// The issue this guards against: ~20,000 connections that sent a request
/// line and some headers used up the server's descriptors, and the revoke
/// due meanwhile failed to start its connector ("Too many open files"). Here
/// the server runs under a hard limit of 2,000 descriptors and 2,500 such
/// connections arrive before a grant expires: the server serves the few it
/// has room for, answers the rest 503 and closes them, and the connector
/// process still starts on time. (Before the cap, accepts failed with
/// EMFILE and so did the connector, for as long as the clients stayed.)
#[test]
fn a_flood_of_stalled_connections_past_the_descriptor_limit_does_not_stop_a_revocation() {
    use std::io::{Read, Write};
    const LIMIT: usize = 2000;
    const STALLED: usize = 2500;
    let dir = tempfile::tempdir().unwrap();
    let token = alice_token(dir.path());
    let log = dir.path().join("connector.log");
    std::fs::write(
        dir.path().join("log.sh"),
        format!("#!/bin/sh\necho \"$1 $4\" >> '{}'\n", log.display()),
    )
    .unwrap();
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \".\"\nheader_timeout = \"60s\"\nreconcile_every = \"off\"\n\n\
             [users.alice]\ngroups = [\"ops\"]\ntoken_sha256 = \"{}\"\n\n\
             [connectors.log]\ntype = \"command\"\nprogram = \"/bin/sh\"\nargs = [\"{}\"]\n\n\
             [entitlements.shell]\nrequestable_by = [\"ops\"]\nmax_duration = \"1h\"\n\
             auto_approve = true\nrequire_reason = false\nconnector = \"log\"\n",
            airlock_server::config::token_hash(&token),
            dir.path().join("log.sh").display()
        ),
    )
    .unwrap();
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", &format!("ulimit -n {LIMIT} && exec \"$0\" \"$@\"")])
        .args([BIN, "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config);
    let server = Demo::launch(dir.path(), command);
    // Long enough for the flood to arrive first, even against a debug build.
    let r = server.json("alice", &["request", "shell", "--for", "20s", "--wait"]);
    assert_eq!(r["state"], "active");
    let id = r["id"].as_str().unwrap().to_owned();
    let expires_at = parse_time(r["expires_at"].as_str().unwrap()).unwrap();

    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        // A server out of descriptors stops accepting: connecting then
        // times out, and the revocation below is what fails.
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            break;
        };
        // One past the cap may already be closed: that is the point.
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: airlock\r\nx-still-typing: ");
        stalled.push(s);
    }
    assert!(
        airlock_testkit::wall_clock_unix_millis() < expires_at.unix_millis(),
        "the flood took too long to arrive before the expiry"
    );
    let revoke = format!("revoke {id}");
    eventually(Duration::from_secs(30), "the revoke call", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l == revoke)
            .then_some(())
    });

    // Some were held, the rest refused at once: the cap left room.
    let mut held = 0;
    let mut refused = 0;
    for s in &mut stalled {
        s.set_nonblocking(true).unwrap();
        let mut got = [0u8; 64];
        match s.read(&mut got) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
            Ok(n) if got[..n].starts_with(b"HTTP/1.1 503") || n == 0 => refused += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            other => panic!("unexpected answer: {other:?}"),
        }
    }
    eprintln!("{held} held, {refused} refused under a limit of {LIMIT}");
    assert_eq!(held + refused, STALLED);
    assert!(held > 0 && held < LIMIT / 2, "{held} held");

    drop(stalled);
    // The revoke script has run; its result is committed just after it
    // exits, so wait for the removal to be recorded, not only for the API.
    let r = eventually(Duration::from_secs(10), "the recorded removal", || {
        let out = server.cli("alice", &["show", &id, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
            .filter(|r| r["deprovisioned_at"].is_string())
    });
    assert_eq!(r["state"], "expired");
    let removed = parse_time(r["deprovisioned_at"].as_str().unwrap()).unwrap();
    let late = expires_at.until(removed);
    assert!(
        late < Duration::from_secs(1),
        "revoked {late:?} after expiry"
    );
}

#[test]
fn audit_verify_names_the_first_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    demo.staging_shell("deploy");
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

/// Runs `airlock` without a server and returns what it did.
fn airlock(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run airlock")
}

/// Rewrites the audit log of the SQLite file `db` behind Airlock's back, as
/// someone with write access to the file could: `change` edits the records,
/// which are then renumbered and rechained so the chain is consistent again,
/// and written back in place of the old ones.
fn rewrite_audit(db: &Path, change: impl FnOnce(&mut Vec<airlock_core::audit::AuditRecord>)) {
    use airlock_core::audit::GENESIS_HASH;
    use airlock_server::store::sql::{Location, SqlStore};
    use airlock_server::store::Store;
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqlStore::open(&Location::Sqlite(db.to_owned())).await.unwrap();
        let mut records = store.export_audit(0, 100_000).await.unwrap();
        drop(store);
        change(&mut records);
        let mut prev = (0, GENESIS_HASH.to_owned());
        for r in &mut records {
            r.seq = prev.0 + 1;
            r.prev_hash = prev.1.clone();
            r.hash = r.compute_hash();
            prev = (r.seq, r.hash.clone());
        }
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::raw_sql(
            "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; \
             DROP TRIGGER audit_events_no_replace; DELETE FROM audit_events;",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for r in &records {
            sqlx::query(
                "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, subject, details, prev_hash, hash) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(r.seq)
            .bind(r.at.unix_millis())
            .bind(&r.actor)
            .bind(&r.action)
            .bind(&r.request)
            .bind(&r.entitlement)
            .bind(&r.subject)
            .bind(serde_json::to_string(&r.details).unwrap())
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    });
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn signed_checkpoints_catch_a_rewritten_chain_and_removed_newest_events() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let key = demo.checkpoint_key();
    assert!(key.starts_with("ed25519:"), "{key}");
    let (status, served) = demo.get("/v1/audit/checkpoint-key");
    assert_eq!(status, 200);
    assert!(served.contains(&key), "{served}");
    let first = demo.staging_shell("deploy");
    let head = demo.json("admin", &["audit", "verify"])["checked"]
        .as_i64()
        .unwrap();
    // A graceful stop signs the head.
    demo.stop();
    let key_file = dir.path().join("audit/checkpoint.key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key_file).unwrap().permissions()
        ) & 0o777,
        0o600
    );
    let log = dir.path().join("audit/checkpoints.jsonl");
    let log_arg = log.to_str().unwrap();
    let db = dir.path().join("airlock.db");
    let check = |db: &Path| {
        airlock(&[
            "audit",
            "verify",
            "--checkpoints",
            log_arg,
            "--public-key",
            &key,
            "--database",
            db.to_str().unwrap(),
        ])
    };
    let intact = check(&db);
    assert!(intact.status.success(), "{}", stderr(&intact));
    assert!(
        String::from_utf8_lossy(&intact.stdout).contains("0 event(s) after the last checkpoint"),
        "{}",
        String::from_utf8_lossy(&intact.stdout)
    );

    // The newest events removed (on a copy): the chain is still consistent,
    // but it ends before the signed head.
    let copy = dir.path().join("truncated.db");
    std::fs::copy(&db, &copy).unwrap();
    // What the server wrote last may still be in the write-ahead log.
    let wal = dir.path().join("airlock.db-wal");
    if wal.exists() {
        std::fs::copy(&wal, dir.path().join("truncated.db-wal")).unwrap();
    }
    rewrite_audit(&copy, |records| records.truncate(records.len() - 2));
    let truncated = check(&copy);
    assert!(!truncated.status.success());
    assert!(
        stderr(&truncated).contains(&format!("event {head}: missing")),
        "{}",
        stderr(&truncated)
    );

    // Event 2 edited and every later hash recomputed: the plain check of the
    // chain cannot tell, the signed checkpoint can.
    rewrite_audit(&db, |records| records[1].actor = "mallory".to_owned());
    let rewritten = check(&db);
    assert!(!rewritten.status.success());
    let err = stderr(&rewritten);
    assert!(
        err.contains(&format!("broken at event {head}")) && err.contains("checkpoint"),
        "{err}"
    );
    // A log line altered to match is refused, naming the line.
    let forged = dir.path().join("forged.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&forged, text.replacen("\"seq\":", "\"seq\":1", 1)).unwrap();
    let out = airlock(&[
        "audit",
        "verify",
        "--checkpoints",
        forged.to_str().unwrap(),
        "--public-key",
        &key,
        "--database",
        db.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 1") && stderr(&out).contains("signature"),
        "{}",
        stderr(&out)
    );

    // The server, restarted on the rewritten chain, checks it against its
    // last checkpoint: not ready, and nothing that grants access is done.
    let demo = Demo::start(dir.path());
    let plain = demo.cli("admin", &["audit", "verify"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let (status, body) = demo.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&format!("event {head}")), "{body}");
    let refused = demo.cli(
        "alice",
        &["request", "prod-db", "--for", "10m", "--reason", "fix"],
    );
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("audit"), "{}", stderr(&refused));
    demo.stop();

    // Told to go on: it records that, serves, and signs from there on, so
    // the next start is ready without being told again.
    let demo = Demo::start_with(dir.path(), &["--accept-broken-audit-chain"]);
    eventually(Duration::from_secs(10), "readiness", || {
        (demo.get("/readyz").0 == 200).then_some(())
    });
    let accepted = demo.json("admin", &["audit", "--action", "audit_break_accepted"]);
    assert_eq!(accepted.as_array().unwrap().len(), 1, "{accepted}");
    assert_eq!(
        accepted[0]["details"]["seq"].as_str(),
        Some(head.to_string().as_str()),
        "{accepted}"
    );
    demo.json("alice", &["release", first["id"].as_str().unwrap()]);
    demo.staging_shell("again");
    demo.stop();
    let demo = Demo::start(dir.path());
    assert_eq!(demo.get("/readyz").0, 200);
}

/// Whatever the server returns, the CLI prints nothing a terminal acts on:
/// a reason that reached the database with escape sequences in it (written
/// here behind the server's back, since the API refuses them) shows escaped
/// in `show`, `pending` and `--json`.
#[test]
fn the_cli_never_prints_control_characters_it_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let r = demo.json(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--reason",
            "placeholder",
            "--ticket",
            "INC-7",
        ],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    let hostile =
        "routine\u{1b}[2K\r\u{1b}[1Aapproved by security\u{9b}31m\u{202e}\u{7}\nstate: approved";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let db = dir.path().join("airlock.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("UPDATE requests SET reason = ?1 WHERE id = ?2")
            .bind(hostile)
            .bind(&id)
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let refused = |c: char| {
        c.is_control() && c != '\n' || ('\u{202a}'..='\u{202e}').contains(&c) || c == '\u{9b}'
    };
    for args in [
        vec!["show", id.as_str()],
        vec!["pending"],
        vec!["list"],
        vec!["show", id.as_str(), "--json"],
    ] {
        let out = demo.cli("bob", &args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.chars().any(refused),
            "{args:?} printed a control character: {text:?}"
        );
        assert!(text.contains("routine"), "{args:?}: {text}");
        if args.contains(&"--json") {
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["reason"], hostile, "the JSON still means the same");
        } else {
            assert!(text.contains("\\u{1b}[2K"), "{args:?}: {text}");
            assert!(
                !text.lines().any(|l| l.starts_with("state: approved")),
                "{args:?} let the reason start a line of its own: {text}"
            );
        }
    }
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
    let Some((rt, db)) = fresh_postgres("airlock_e2e") else {
        return;
    };

    let migrate = airlock_succeeds(&["migrate", "--database", &db.url]);
    let latest = airlock_server::store::latest_schema_version();
    assert!(String::from_utf8_lossy(&migrate.stdout).contains(&format!("schema version {latest}")));

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
    let active = eventually(Duration::from_secs(10), "grant on postgres", || {
        let r = state_of(&demo, &id);
        (r["state"] == "active").then_some(r)
    });
    demo.kill();
    assert!(
        !std::fs::read_to_string(dir.path().join("demo-connector.log"))
            .unwrap()
            .contains("revoke")
    );
    wait_until_past(active["expires_at"].as_str().unwrap());

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
    let released_id = released["id"].as_str().unwrap().to_owned();
    demo.json("bob", &["release", &released_id]);
    // Refused requests leave nothing behind to move.
    assert!(!demo
        .cli("carol", &["request", "staging-shell", "--reason", "x"])
        .status
        .success());
    // The demo's quarterly access review, with a decision in it: carol
    // removes alice's eligibility for prod-db-admin.
    let campaigns = demo.json("admin", &["access-review", "list"]);
    let review = campaigns["campaigns"][0]["id"].as_str().unwrap().to_owned();
    let items = demo.json("carol", &["access-review", "show", &review]);
    let item = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user"] == "alice" && i["entitlement"] == "prod-db-admin")
        .unwrap()["item"]
        .to_string();
    assert!(demo
        .cli(
            "carol",
            &[
                "access-review",
                "decide",
                &review,
                &item,
                "--remove",
                "--comment",
                "moved teams"
            ],
        )
        .status
        .success());
    let reviewed = demo.json("admin", &["access-review", "show", &review]);
    // The snapshot once the release's removal is confirmed: nothing moves after it.
    eventually(
        Duration::from_secs(10),
        "the released grant's removal",
        || {
            (!demo.json("admin", &["show", &released_id])["deprovisioned_at"].is_null())
                .then_some(())
        },
    );
    let before = demo.json("admin", &["list"]);
    demo.kill();

    let export = dir.path().join("export.jsonl");
    let source = dir.path().join("airlock.db");
    export_to_file(source.to_str().unwrap(), &export);

    let export_path = export.to_str().unwrap();
    let config = dir.path().join("airlock.toml");
    let config = config.to_str().unwrap();
    let log = dir.path().join("audit/checkpoints.jsonl");
    let log = log.to_str().unwrap();
    // An export whose newest audit event is gone ends before the head the
    // import below signs: checked against the server's checkpoint log, it
    // is refused and leaves nothing.
    let text = std::fs::read_to_string(&export).unwrap();
    let mut cut: Vec<&str> = text.lines().collect();
    let last_event = cut
        .iter()
        .rposition(|l| l.starts_with("{\"audit\""))
        .unwrap();
    cut.remove(last_event);
    let cut_path = dir.path().join("cut.jsonl");
    std::fs::write(&cut_path, cut.join("\n")).unwrap();

    // With the server's config, the import checks the chain against the
    // demo's checkpoint log and signs the head it reached there.
    let out = airlock_succeeds(&[
        "import",
        "--config",
        config,
        "--database",
        target,
        "--input",
        export_path,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("audit chain ok"), "{said}");
    assert!(said.contains("signed audit checkpoint at event"), "{said}");
    // Verified again from the database itself, without a server, and
    // against the log: no event is left that no signature covers.
    let out = airlock_succeeds(&["audit", "verify", "--database", target]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit chain ok"));
    let out = airlock_succeeds(&[
        "audit",
        "verify",
        "--checkpoints",
        log,
        "--database",
        target,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(" 0 event(s) after the last checkpoint are not signed yet"),
        "{said}"
    );
    let elsewhere = dir.path().join("elsewhere.db");
    let refused = Command::new(BIN)
        .args(["import", "--config", config, "--database"])
        .arg(&elsewhere)
        .arg("--input")
        .arg(&cut_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("missing, but a checkpoint was signed for it"),
        "{err}"
    );
    let left = airlock_succeeds(&["audit", "verify", "--database", elsewhere.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&left.stdout);
    assert!(
        said.contains("0 events"),
        "the refused import left events: {said}"
    );

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
    // The campaign moved with its decision, which still holds, and the
    // schedule starts no second one.
    assert_eq!(
        moved.json("admin", &["access-review", "show", &review]),
        reviewed
    );
    assert_eq!(
        moved.json("admin", &["access-review", "list"])["campaigns"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let refused = moved.cli(
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
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("moved teams"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
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

    if let Some((rt, db)) = fresh_postgres("airlock_e2e") {
        export_then_import(&db.url, &[]);
        // And back: PostgreSQL to SQLite loses nothing, so exporting the
        // copy gives the same file, line for line.
        let input = dir.path().join("from-postgres.jsonl");
        let from_postgres = export_to_file(&db.url, &input);
        let back = dir.path().join("back.db");
        let (back, input) = (back.to_str().unwrap(), input.to_str().unwrap());
        let out = airlock_succeeds(&["import", "--database", back, "--input", input]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("audit chain ok"));
        let from_back = export_to_file(back, &dir.path().join("from-back.jsonl"));
        assert!(from_postgres.lines().count() > 10, "{from_postgres}");
        assert_eq!(from_back, from_postgres);
        rt.block_on(db.drop_now());
    }
}

/// Runs `airlock` with `args` and fails the test with its stderr unless it
/// succeeds.
fn airlock_succeeds(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "airlock {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `airlock export` on `database` into `file`; returns what it wrote.
fn export_to_file(database: &str, file: &Path) -> String {
    let file_path = file.to_str().unwrap();
    airlock_succeeds(&["export", "--database", database, "--output", file_path]);
    std::fs::read_to_string(file).unwrap()
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

#[test]
fn the_demo_decides_by_its_cedar_policies_explains_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let config = dir.path().join("airlock.toml");

    // Break-glass without a ticket is granted at once, and reviewed afterwards.
    let r = demo.json(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "30m",
            "--reason",
            "database down",
            "--break-glass",
        ],
    );
    assert_ne!(r["state"], "pending", "{r}");
    assert_eq!(r["break_glass"], true);
    assert_eq!(r["approval_tiers"], serde_json::json!([]));
    assert_eq!(r["review"]["review_by"], serde_json::json!(["security"]));
    assert_eq!(r["review"]["verdict"], serde_json::Value::Null);
    let id = r["id"].as_str().unwrap().to_owned();
    // Longer than the break-glass maximum is refused, naming the field.
    let out = demo.cli(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--for",
            "2h",
            "--reason",
            "database down",
            "--break-glass",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("duration") && err.contains("at most 1h"),
        "{err}"
    );
    // Nothing to approve; bob is no reviewer, alice may not judge her own use.
    assert!(!demo.cli("bob", &["approve", &id]).status.success());
    let out = demo.cli("bob", &["review", &id, "--acceptable", "--comment", "fine"]);
    assert!(!out.status.success());
    let out = demo.cli(
        "alice",
        &["review", &id, "--acceptable", "--comment", "fine"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("own"));
    let explain = demo.cli("alice", &["policy", "explain", &id]);
    assert!(explain.status.success());
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("prod-db-break-glass"), "{text}");
    assert!(text.contains("same set"), "{text}");
    // admin is in `security`: it sees the use awaiting review and judges it.
    let waiting = demo.json("admin", &["reviews"]);
    assert_eq!(waiting[0]["id"], id.as_str(), "{waiting}");
    let reviewed = demo.json(
        "admin",
        &[
            "review",
            &id,
            "--acceptable",
            "--comment",
            "confirmed outage",
        ],
    );
    assert_eq!(reviewed["review"]["verdict"]["acceptable"], true);
    assert_eq!(reviewed["review"]["verdict"]["reviewer"], "admin");
    assert_eq!(demo.json("admin", &["reviews"]), serde_json::json!([]));
    assert_eq!(
        demo.json("admin", &["reviews", "--all"])[0]["id"],
        id.as_str()
    );

    // Without a ticket and not break-glass, no policy permits: refused,
    // recorded, and the CLI says so.
    let out = demo.cli(
        "bob",
        &["request", "prod-db-admin", "--reason", "just looking"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no policy permits"), "{err}");
    // The demo policies' reasons tell bob what would be accepted.
    assert!(
        err.contains(
            "`prod-db-engineers-with-ticket` (members of `engineers`): engineers, citing a ticket"
        ),
        "{err}"
    );
    assert!(err.contains("`prod-db-break-glass`"), "{err}");

    // who-can and diff read the config and its policy folder offline.
    let who = Command::new(BIN)
        .args(["policy", "who-can", "prod-db-admin", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let who = String::from_utf8_lossy(&who.stdout);
    assert!(who.contains("alice: needs 1 from [approvers]"), "{who}");
    assert!(who.contains("carol [approvers-approve-prod-db]"), "{who}");

    let proposed = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, proposed.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::remove_file(proposed.path().join("staging.cedar")).unwrap();
    let diff = Command::new(BIN)
        .args(["policy", "diff", "--config"])
        .arg(&config)
        .arg(proposed.path())
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(
        diff.contains("`alice` loses request on `staging-shell`"),
        "{diff}"
    );
    assert!(!diff.contains("prod-db-admin"), "{diff}");

    // SIGHUP: a broken folder is refused and the set in force stays...
    let version = |demo: &Demo| demo.json("admin", &["show", &id])["policy_version"].clone();
    let before = version(&demo);
    let staging = dir.path().join("policies").join("staging.cedar");
    std::fs::write(
        &staging,
        "permit (principal, action, resource) when { nonsense };\n",
    )
    .unwrap();
    let hup = |demo: &Demo| {
        let status = Command::new("kill")
            .args(["-HUP", &demo.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup(&demo);
    eventually(
        Duration::from_secs(10),
        "the refused reload's audit event",
        || {
            let refused = demo.json("admin", &["audit", "--action", "policy_refused"]);
            (!refused.as_array().unwrap().is_empty()).then_some(())
        },
    );
    let shell = demo.json("bob", &["request", "staging-shell", "--reason", "deploy"]);
    assert_eq!(shell["state"], "approved");
    assert_eq!(shell["policy_version"], before);
    // ...and a valid one takes effect: staging shells now need no group.
    std::fs::write(
        &staging,
        "@id(\"staging-for-carol\")\npermit (principal == Airlock::User::\"carol\", action in [Airlock::Action::\"request\", Airlock::Action::\"auto_approve\"], resource == Airlock::Entitlement::\"staging-shell\");\n",
    )
    .unwrap();
    hup(&demo);
    let carol = eventually(Duration::from_secs(10), "the reloaded policy", || {
        let out = demo.cli(
            "carol",
            &["request", "staging-shell", "--reason", "x", "--json"],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(carol["state"], "approved");
    assert_ne!(carol["policy_version"], before);
}

/// Under the two-person rule a set reloaded by SIGHUP was proposed by no
/// person, so one admin cannot put it in force alone: it takes two different
/// admins, and nobody approves twice.
#[test]
fn a_policy_set_reloaded_by_sighup_needs_two_different_admins() {
    let dir = tempfile::tempdir().unwrap();
    Demo::start(dir.path()).kill();
    let config = dir.path().join("airlock.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let second = "second-admin-token-0123456789";
    let text = text.replace(
        "[policy]\ndir = \"policies\"\n",
        &format!(
            "[policy]\ndir = \"policies\"\ntwo_person = true\n\n[users.admin2]\ngroups = [\"security\"]\nroles = [\"admin\"]\ntoken_sha256 = \"{}\"\n",
            airlock_server::config::token_hash(second)
        ),
    );
    assert!(text.contains("two_person = true"), "{text}");
    std::fs::write(&config, text).unwrap();
    let tokens_path = dir.path().join("tokens.json");
    let mut tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(&tokens_path).unwrap()).unwrap();
    tokens["admin2"] = Value::from(second);
    std::fs::write(&tokens_path, tokens.to_string()).unwrap();
    let server = Demo::serve(dir.path(), &config);

    std::fs::write(
        dir.path().join("policies").join("staging.cedar"),
        "@id(\"staging-for-carol\")\npermit (principal == Airlock::User::\"carol\", action in [Airlock::Action::\"request\", Airlock::Action::\"auto_approve\"], resource == Airlock::Entitlement::\"staging-shell\");\n",
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let proposal = eventually(Duration::from_secs(10), "the SIGHUP proposal", || {
        let all = server.json("admin", &["policy", "proposals"]);
        all.as_array().unwrap().first().cloned()
    });
    assert_eq!(proposal["proposed_by"], "system");
    assert_eq!(proposal["approvals_needed"], 2);
    let id = proposal["id"].as_str().unwrap();
    // Only the proposed set lets carol request a staging shell.
    let carol_may_request = || {
        server
            .cli("carol", &["request", "staging-shell", "--reason", "x"])
            .status
            .success()
    };
    assert!(!carol_may_request());

    let first = server.json("admin", &["policy", "approve", id]);
    assert_eq!(first["outcome"], "approval_recorded");
    assert!(
        !carol_may_request(),
        "one admin put a SIGHUP reload in force"
    );
    let again = server.cli("admin", &["policy", "approve", id]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already approved"), "{err}");
    let waiting = server.json("admin", &["policy", "proposals"]);
    assert_eq!(waiting[0]["approved_by"], serde_json::json!(["admin"]));

    let second = server.json("admin2", &["policy", "approve", id]);
    assert_eq!(second["outcome"], "activated");
    assert!(carol_may_request());
    let events = server.json("admin", &["audit", "--action", "policy_activated"]);
    let activated = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["details"]["via"] == "proposal")
        .expect("the activation is audited");
    assert_eq!(activated["actor"], "admin2");
    assert_eq!(activated["details"]["approved_by"], "admin,admin2");
    assert_eq!(activated["details"]["proposed_by"], "system");
}

/// `airlock ssh` against a server with an `ssh_ca` connector: the key is
/// found in `~/.ssh`, the certificate lands beside it as ssh names it, and a
/// request that cannot give a certificate exits non-zero saying why.
/// The token of `shipper`, an SSH host's log shipper (a reporter).
const SHIPPER_TOKEN: &str = "e2e-token-of-the-ssh-log-shipper";

/// `airlock ssh` writes the certificate; sshd's lines about its logins,
/// piped to `airlock activity`, show in `airlock show`.
#[test]
fn ssh_writes_the_certificate_beside_the_key() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let Some(keygen) = airlock_testkit::service_program("ssh-keygen") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = alice_token(dir.path());
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \".\"\n\n\
             [users.alice]\ngroups = [\"ops\"]\ntoken_sha256 = \"{}\"\n\n\
             [users.shipper]\nroles = [\"reporter\"]\ntoken_sha256 = \"{}\"\n\n\
             [connectors.ssh]\ntype = \"ssh_ca\"\nprincipals = [\"web-admin\"]\n\n\
             [connectors.plain]\ntype = \"command\"\nprogram = \"/bin/true\"\n\n\
             [entitlements.web-ssh]\nrequestable_by = [\"ops\"]\nmax_duration = \"1h\"\n\
             auto_approve = true\nrequire_reason = false\nconnector = \"ssh\"\n\n\
             [entitlements.shell]\nrequestable_by = [\"ops\"]\nmax_duration = \"1h\"\n\
             auto_approve = true\nrequire_reason = false\nconnector = \"plain\"\n",
            airlock_server::config::token_hash(&token),
            airlock_server::config::token_hash(SHIPPER_TOKEN)
        ),
    )
    .unwrap();
    let server = Demo::serve(dir.path(), &config);
    let home = dir.path().join("home");
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let status = Command::new(&keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(ssh_dir.join("id_ed25519"))
        .status()
        .unwrap();
    assert!(status.success());
    let ssh = |args: &[&str]| {
        Command::new(BIN)
            .arg("ssh")
            .args(args)
            .env("HOME", &home)
            .env("AIRLOCK_URL", &server.url)
            .env("AIRLOCK_TOKEN", &token)
            .output()
            .unwrap()
    };

    // The default key, ~/.ssh/id_ed25519.pub.
    let out = ssh(&["web-ssh", "--for", "10m", "--wait-timeout", "20s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = ssh_dir.join("id_ed25519-cert.pub");
    assert!(
        stdout.contains(&cert.display().to_string()),
        "the path is not shown: {stdout}"
    );
    let mode = std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "{mode:o}");
    let shown = Command::new(&keygen)
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("user certificate"), "{shown}");
    assert!(shown.contains("web-admin"), "{shown}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("request:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no request id in {stdout}"));
    assert!(shown.contains(&format!("\"{id}\"")), "key id: {shown}");
    assert_eq!(
        state_of(&server, id)["certificate"].as_str().map(str::trim),
        Some(std::fs::read_to_string(&cert).unwrap().trim())
    );

    // The SSH host's log shipper pipes sshd's lines to `airlock activity`;
    // `airlock show` prints the login and the logout under `activity:`.
    let log = format!(
        "Dec  6 14:02:11 web1 sshd[811]: Accepted publickey for web-admin from 10.0.4.17 port 51334 ssh2: ED25519-CERT SHA256:Fr0t ID {id} (serial 7) CA ED25519 SHA256:W3BE\n\
         Dec  6 14:02:12 web1 sshd[811]: Received disconnect from 10.0.4.17 port 51334:11: disconnected by user\n\
         Dec  6 14:31:40 web1 sshd[811]: Disconnected from user web-admin 10.0.4.17 port 51334\n"
    );
    let mut shipper = Command::new(BIN)
        .args(["activity", id, "--source", "web1"])
        .env("AIRLOCK_URL", &server.url)
        .env("AIRLOCK_TOKEN", SHIPPER_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    shipper
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let out = shipper.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(
        said.contains(&format!("{id}: 2 recorded, 0 already recorded, 1 ignored")),
        "{said}"
    );
    let shown = server.cli("alice", &["show", id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    let activity = shown
        .split_once("activity:")
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("no activity in {shown}"));
    assert!(
        activity.contains(
            "ssh login as web-admin from 10.0.4.17 port 51334 on web1 (certificate serial 7)"
        ),
        "{shown}"
    );
    assert!(
        activity
            .contains("ssh logout of web-admin from 10.0.4.17 port 51334 on web1 (disconnected)"),
        "{shown}"
    );
    // alice is no reporter: refused, saying who may.
    let out = server.cli(
        "alice",
        &["activity", id, "--source", "web1", "--file", "/dev/null"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs admin or reporter"),
        "{}",
        stderr(&out)
    );

    // `--key` may name the private key; `--json` says where the file went.
    // (One open request per entitlement: release the first.)
    server.json("alice", &["release", id]);
    let private = ssh_dir.join("id_ed25519");
    std::fs::remove_file(&cert).unwrap();
    let out = ssh(&["web-ssh", "--key", private.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["certificate_file"], cert.display().to_string());
    assert_eq!(report["request"]["state"], "active");
    assert!(cert.exists());

    // No certificate to be had: non-zero, with the reason.
    let out = ssh(&["shell"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an SSH entitlement"), "{err}");
    let out = ssh(&["web-ssh", "--key", "/nonexistent/id_ed25519"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--key"), "{err}");
    server.kill();
}

#[test]
fn reconcile_exits_non_zero_while_drift_is_left_in_place() {
    let Some((rt, target)) = fresh_postgres("airlock_e2e_drift") else {
        return;
    };
    // Roles are cluster-wide: a namespace of this run's own.
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().subsec_nanos();
    let ns = format!("rce{}_{nanos}", std::process::id());
    let sql = |statements: Vec<String>| {
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&target.url).await.unwrap();
            for s in statements {
                sqlx::raw_sql(&s).execute(&mut conn).await.unwrap();
            }
        });
    };
    // A standing privilege, granted outside Airlock.
    sql(vec![
        format!("CREATE ROLE {ns}_admin NOLOGIN"),
        format!("CREATE ROLE {ns}_bob LOGIN"),
        format!("GRANT {ns}_admin TO {ns}_bob"),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let token = "al_reconcile_e2e_admin_token";
    std::fs::write(
        dir.path().join("tokens.json"),
        serde_json::json!({ "admin": token }).to_string(),
    )
    .unwrap();
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = '{}'\nreconcile_every = \"off\"\n\n\
             [users.admin]\ngroups = [\"dba\"]\nroles = [\"admin\"]\ntoken_sha256 = \"{}\"\n\n\
             [connectors.db]\ntype = \"postgres\"\nurl = \"{}\"\nroles = [\"{ns}_admin\"]\n\
             login_template = \"{ns}_{{user}}\"\ntimeout = \"5s\"\n\n\
             [entitlements.db-admin]\nrequestable_by = [\"dba\"]\nmax_duration = \"1h\"\n\
             auto_approve = true\nconnector = \"db\"\ndrift = \"revoke\"\n",
            dir.path().display(),
            airlock_server::config::token_hash(token),
            target.url,
        ),
    )
    .unwrap();
    let server = Demo::serve(dir.path(), &config);

    let report = server.cli("admin", &["reconcile"]);
    let stdout = String::from_utf8_lossy(&report.stdout);
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert!(!report.status.success(), "{stdout}");
    assert!(
        stdout.contains("unmanaged") && stdout.contains(&format!("{ns}_bob")),
        "{stdout}"
    );
    assert!(stderr.contains("1 finding(s) left unfixed"), "{stderr}");

    let fixed = server.json("admin", &["reconcile", "--fix"]);
    assert_eq!(
        (fixed["fix"].as_bool(), fixed["unfixed"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(fixed["connectors"][0]["findings"][0]["outcome"], "fixed");

    let clean = server.cli("admin", &["reconcile"]);
    assert!(clean.status.success());
    assert!(String::from_utf8_lossy(&clean.stdout).contains("no drift"));

    server.kill();
    sql(vec![
        format!("DROP ROLE IF EXISTS {ns}_bob"),
        format!("DROP ROLE IF EXISTS {ns}_admin"),
    ]);
    rt.block_on(target.drop_now());
}

/// Killed while a grant script runs, the server cannot know whether the
/// grant reached the target. On restart the record says so, and the revoke
/// that waited for that attempt runs at once instead of after its lease
/// (15 minutes here).
#[test]
fn a_grant_cut_short_by_a_crash_is_recorded_and_cleaned_up_at_once_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let started = root.join("grant-started");
    let log = root.join("connector.log");
    std::fs::write(
        root.join("connector.sh"),
        format!(
            "#!/bin/sh\necho \"$1 $4\" >> '{log}'\nif [ \"$1\" = grant ] && [ ! -e '{started}' ]; then\n  echo $$ > '{started}'\n  exec sleep 120\nfi\nexit 0\n",
            log = log.display(),
            started = started.display(),
        ),
    )
    .unwrap();
    let token = "alice-token-for-the-crash-test";
    let auditor = "auditor-token-for-the-crash-test";
    std::fs::write(
        root.join("tokens.json"),
        serde_json::json!({ "alice": token, "auditor": auditor }).to_string(),
    )
    .unwrap();
    let config = root.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
data_dir = "{root}/data"
claim_lease = "15m"

[users.alice]
groups = ["eng"]
token_sha256 = "{hash}"

[users.auditor]
roles = ["auditor"]
token_sha256 = "{auditor_hash}"

[connectors.slow]
type = "command"
program = "/bin/sh"
args = ["{root}/connector.sh"]
timeout = "10m"

[entitlements.slow-db]
requestable_by = ["eng"]
auto_approve = true
max_duration = "1h"
connector = "slow"
"#,
            root = root.display(),
            hash = airlock_server::config::token_hash(token),
            auditor_hash = airlock_server::config::token_hash(auditor),
        ),
    )
    .unwrap();

    let server = Demo::serve(root, &config);
    let r = server.json("alice", &["request", "slow-db", "--reason", "x"]);
    let id = r["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the grant script to start", || {
        started.exists().then_some(())
    });
    // The requester lets go while the grant is in flight: the revoke waits
    // for the attempt's result or its lease.
    let released = server.json("alice", &["release", &id]);
    assert_eq!(released["state"], "released");
    server.kill();

    let restarted = Demo::serve(root, &config);
    let r = eventually(Duration::from_secs(20), "the cleanup revoke", || {
        let r = restarted.json("alice", &["show", &id]);
        (!r["deprovisioned_at"].is_null()).then_some(r)
    });
    assert_eq!(r["state"], "released");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains(&format!("revoke {id}")));
    let events = restarted.json("auditor", &["audit", "--request", &id]);
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let position = |a: &str| actions.iter().position(|x| *x == a);
    let unknown = position("grant_outcome_unknown").unwrap_or_else(|| panic!("{actions:?}"));
    assert!(
        position("released").unwrap() < unknown && unknown < position("deprovisioned").unwrap(),
        "{actions:?}"
    );

    let orphan = std::fs::read_to_string(&started).unwrap();
    let _ = Command::new("kill").arg(orphan.trim()).status();
}

/// The README, read as the test's input.
fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
        .expect("read README.md")
}

/// The fenced blocks of `lang` in `text`, in order.
fn fenced(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}\n");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let end = body
            .find("```")
            .expect("an unclosed code block in the README");
        blocks.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    blocks
}

/// The README's walkthrough, as written: its shell blocks run in order, in
/// one shell, against a fresh demo. Only starting the demo (the first block)
/// and its address are the test's own.
#[test]
fn the_readme_walkthrough_runs_as_written() {
    let text = readme();
    let start = text.find("## Five-minute walkthrough").unwrap();
    let end = text.find("## Running a real server").unwrap();
    let blocks = fenced(&text[start..end], "sh");
    assert!(
        blocks
            .first()
            .is_some_and(|b| b.contains("cargo run --release -- demo")),
        "the walkthrough starts with the demo: {blocks:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("airlock-demo"));
    let script = blocks[1..]
        .join("\n")
        .replace("http://127.0.0.1:8080", &demo.url);
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-e", "-x", "-o", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("AIRLOCK_TOKEN")
        .env_remove("AIRLOCK_URL")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // What the walkthrough says happened, happened.
    assert!(
        stdout.contains("approval from bob: ok, watch the replicas"),
        "{stdout}"
    );
    assert!(stdout.contains("audit chain ok"), "{stdout}");
    assert!(
        stdout.contains(": waiting for approval from 1 of [approvers]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("active (extension by 30m00s awaits approval)"),
        "{stdout}"
    );
    assert!(stdout.contains("extension by 30m00s asked for"), "{stdout}");
    // The access review: decisions recorded, the removal obeyed, evidence.
    assert!(stdout.contains(": remove (audit event "), "{stdout}");
    assert!(
        stderr.contains("the access review `ar_") && stdout.contains("refused, as reviewed"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("campaign,template,item,kind,user,access"),
        "{stdout}"
    );
    // The closed ticket ended bob's grant and alice's request, and closing
    // it again ended nothing more.
    assert!(
        stdout.contains(r#"{"ticket":"CHG-5","revoked":["#)
            && stdout.contains(r#"],"cancelled":["#),
        "{stdout}"
    );
    assert!(
        stdout.contains("cancelled: ticket `CHG-5` was closed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ticket CHG-5: nothing left to end"),
        "{stdout}"
    );
    assert!(dir.path().join("airlock-demo/alice_key-cert.pub").exists());
    let log = demo.connector_log();
    assert!(
        log.contains("revoke user=alice entitlement=prod-db-admin"),
        "{log}"
    );
}

/// The README's config example passes `airlock check-config`, given what
/// the README says it needs (two variables set, a `policies/` folder).
#[test]
fn the_readme_config_example_passes_check_config() {
    let toml = fenced(&readme(), "toml")
        .into_iter()
        .find(|b| b.contains("[server]"))
        .expect("a config example in the README");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("airlock.toml"), toml).unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/demo");
    for entry in std::fs::read_dir(demo).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
    }
    let out = Command::new(BIN)
        .args(["check-config", "airlock.toml"])
        .current_dir(dir.path())
        .env("AIRLOCK_WEBHOOK_SECRET", "0123456789abcdef0123")
        .env("PGPASSWORD", "example")
        .env("AIRLOCK_SMTP_PASSWORD", "example")
        .env(
            "AIRLOCK_SLACK_WEBHOOK_URL",
            "https://hooks.slack.example/services/T0/B0/x",
        )
        .env("AIRLOCK_TICKETS_SECRET", "0123456789abcdef0123")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("airlock.toml: ok"));
}

/// A second server on the same SQLite database is refused, saying why.
#[test]
fn a_second_demo_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Demo::start(dir.path());
    let second = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("AIRLOCK_LOG", "warn")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another airlock is already running"), "{err}");
}

/// What a newcomer gets wrong gets an answer that says what to do.
#[test]
fn mistakes_get_messages_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let fails = |out: Output| -> String {
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let as_user = |user: &str, url: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("AIRLOCK_URL", url)
            .env("AIRLOCK_TOKEN", demo.token(user))
            .output()
            .unwrap()
    };

    // An address without its scheme, and a server that is not there.
    let err = fails(as_user("alice", "127.0.0.1:8080", &["whoami"]));
    assert!(
        err.contains("is not a server URL") && err.contains("http://127.0.0.1:8080"),
        "{err}"
    );
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let err = fails(as_user("alice", &closed, &["whoami"]));
    assert!(
        err.contains("connection refused: is the server running"),
        "{err}"
    );

    // An error whose message already quotes its cause says it once.
    let err = fails(
        Command::new(BIN)
            .args(["check-config", "/nonexistent/airlock.toml"])
            .output()
            .unwrap(),
    );
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");

    // A duration without a unit, a misspelled entitlement.
    let err = fails(demo.cli(
        "alice",
        &["request", "staging-shell", "--for", "2", "--reason", "x"],
    ));
    assert!(err.contains("has no unit"), "{err}");
    let err = fails(demo.cli("alice", &["request", "stagin-shell", "--reason", "x"]));
    assert!(err.contains("did you mean `staging-shell`?"), "{err}");
    let err = fails(demo.cli(
        "alice",
        &["request", "staging-shell", "--for", "5h", "--reason", "x"],
    ));
    assert!(err.contains("maximum of 1h "), "{err}");

    // Waiting runs out: the request stays open, and the message says so.
    let err = fails(demo.cli(
        "alice",
        &[
            "request",
            "prod-db-admin",
            "--reason",
            "x",
            "--ticket",
            "INC-1",
            "--wait",
            "--wait-timeout",
            "1s",
        ],
    ));
    assert!(err.contains("it stays open"), "{err}");
    let pending = demo.json("alice", &["list", "--mine", "--state", "pending"]);
    let id = pending[0]["id"].as_str().unwrap().to_owned();

    // Someone else's request, an admin releasing, denying what has ended.
    let err = fails(demo.cli("carol", &["release", &id]));
    assert!(
        err.contains("that you can see") || err.contains("only the requester"),
        "{err}"
    );
    let shell = demo.json(
        "alice",
        &["request", "staging-shell", "--reason", "x", "--wait"],
    );
    let shell_id = shell["id"].as_str().unwrap().to_owned();
    let err = fails(demo.cli("admin", &["release", &shell_id]));
    assert!(err.contains("`revoke`"), "{err}");
    demo.json("admin", &["revoke", &shell_id, "--reason", "done"]);
    let err = fails(demo.cli("admin", &["deny", &shell_id, "--reason", "late"]));
    assert!(err.contains("it is revoked"), "{err}");
}

/// The same policy files have the same version wherever they are read from:
/// the server, `check-config` and `policy validate` (from another folder).
#[test]
fn a_policy_set_has_one_version_however_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let served = demo.json("alice", &["request", "staging-shell", "--reason", "x"])
        ["policy_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let last_word = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches(')')
            .to_owned()
    };
    let checked = last_word(
        Command::new(BIN)
            .arg("check-config")
            .arg(dir.path().join("airlock.toml"))
            .output()
            .unwrap(),
    );
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    }
    let validated = last_word(
        Command::new(BIN)
            .args(["policy", "validate"])
            .arg(copy.path())
            .output()
            .unwrap(),
    );
    assert_eq!(
        (checked.as_str(), validated.as_str()),
        (served.as_str(), served.as_str())
    );
}

/// A signed-webhook receiver on loopback that records the idempotency key
/// of every post it reads, and while `hold` is set answers none of them
/// (the post stays in flight).
struct HookReceiver {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Held (`true`) until [`HookReceiver::release`]; answering threads
    /// wait on the condition variable, not a timer.
    hold: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl HookReceiver {
    fn start() -> HookReceiver {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = std::sync::Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
        let (seen, held) = (keys.clone(), hold.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (seen, held) = (seen.clone(), held.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                            .map(|v| v.trim().to_owned())
                    };
                    let length: usize = header("content-length").unwrap().parse().unwrap();
                    let mut body = vec![0u8; length];
                    stream.read_exact(&mut body).unwrap();
                    seen.lock()
                        .unwrap()
                        .push(header("idempotency-key").unwrap());
                    let (lock, released) = &*held;
                    drop(
                        released
                            .wait_while(lock.lock().unwrap(), |holding| *holding)
                            .unwrap(),
                    );
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
        HookReceiver { url, keys, hold }
    }

    /// Answers every post held so far and every one after.
    fn release(&self) {
        let (lock, released) = &*self.hold;
        *lock.lock().unwrap() = false;
        released.notify_all();
    }

    fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }
}

#[test]
fn a_notification_in_flight_at_a_kill_is_sent_again_with_its_key_and_nothing_else_twice() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hook = HookReceiver::start();
    let (alice, bob, admin) = (
        "alice-notify-token",
        "bob-notify-token",
        "admin-notify-token",
    );
    std::fs::write(
        root.join("tokens.json"),
        serde_json::json!({ "alice": alice, "bob": bob, "admin": admin }).to_string(),
    )
    .unwrap();
    let config = root.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
data_dir = "{root}/data"

[users.alice]
groups = ["eng"]
token_sha256 = "{alice}"

[users.bob]
groups = ["sre"]
token_sha256 = "{bob}"

[users.admin]
roles = ["admin"]
token_sha256 = "{admin}"

[connectors.shell]
type = "command"
program = "/bin/true"
timeout = "10s"

[entitlements.db]
requestable_by = ["eng"]
approvals_required = 1
approvers = ["sre"]
max_duration = "1h"
require_reason = false
connector = "shell"

[notifications]
approvers = ["hook"]
requester = ["hook"]

[notifications.channels.hook]
type = "webhook"
url = "{url}"
secret = "a-secret-of-sixteen-chars"
timeout = "60s"
"#,
            root = root.display(),
            alice = airlock_server::config::token_hash(alice),
            bob = airlock_server::config::token_hash(bob),
            admin = airlock_server::config::token_hash(admin),
            url = hook.url,
        ),
    )
    .unwrap();

    // The approvers' message is in flight (read, not answered) at the kill.
    let server = Demo::serve(root, &config);
    let r = server.json("alice", &["request", "db", "--for", "30m"]);
    let id = r["id"].as_str().unwrap().to_owned();
    let first = eventually(Duration::from_secs(10), "the message to arrive", || {
        hook.keys().first().cloned()
    });
    server.kill();
    hook.release();

    // After the restart it goes out again under the same key; what follows
    // goes out once.
    let server = Demo::serve(root, &config);
    eventually(Duration::from_secs(10), "the resend", || {
        (hook.keys().len() == 2).then_some(())
    });
    server.json("bob", &["approve", &id]);
    let outbox = eventually(Duration::from_secs(20), "everything sent", || {
        let o = server.json("admin", &["notifications"]);
        (o["counts"]["sent"] == 3 && o["backlog"] == 0).then_some(o)
    });
    assert_eq!(outbox["counts"]["failed"], 0);
    server.stop();
    // A clean restart resends nothing: the next message is the next key.
    let server = Demo::serve(root, &config);
    let o = server.json("admin", &["notifications", "--state", "sent"]);
    assert_eq!(o["notifications"].as_array().unwrap().len(), 3);
    server.json("alice", &["release", &id]);
    let keys = eventually(Duration::from_secs(20), "the release's message", || {
        let keys = hook.keys();
        keys.iter().any(|k| k.contains("-ended:")).then_some(keys)
    });
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert_eq!(keys[0], first);
    assert_eq!(keys[1], first, "the resend carries the same key");
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        4,
        "nothing but the message in flight twice: {keys:?}"
    );
    assert!(first.ends_with("-awaiting_approval:hook"), "{first}");
}

/// `airlock token create/list/revoke` with the real binary: the secret is
/// printed once, works as `AIRLOCK_TOKEN`, its actions carry its id in
/// `airlock audit` and `airlock show`, and it stops working once revoked.
#[test]
fn api_tokens_are_created_used_shown_and_revoked_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let created = demo.json(
        "alice",
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--expires",
            "30d",
            "--scope",
            "read,request",
        ],
    );
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("alk_"), "{created}");
    assert_eq!(
        created["token"]["scopes"],
        serde_json::json!(["read", "request"])
    );

    // Too long a life: refused, naming the field and the limit.
    let out = demo.cli(
        "alice",
        &["token", "create", "--name", "long", "--expires", "91d"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("expires_in") && err.contains("90d"), "{err}");

    // The token acts as alice, within its scopes.
    let with_token = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("AIRLOCK_URL", &demo.url)
            .env("AIRLOCK_TOKEN", &secret)
            .output()
            .expect("run airlock")
    };
    let out = with_token(&["whoami"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("alice") && said.contains(&id), "{said}");
    let out = with_token(&[
        "request",
        "staging-shell",
        "--for",
        "10m",
        "--reason",
        "ci smoke test",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let request: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rid = request["id"].as_str().unwrap().to_owned();
    let out = with_token(&["pending"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = with_token(&["token", "list"]);
    assert!(
        !out.status.success(),
        "a token without the `tokens` scope listed tokens"
    );
    assert!(stderr(&out).contains("`tokens` scope"), "{}", stderr(&out));

    // `airlock audit` and `airlock show` say which token acted.
    let audit = demo.cli("admin", &["audit", "--request", &rid]);
    let table = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(
        table.lines().next().unwrap_or_default().contains("TOKEN"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("requested") && l.contains(&id)),
        "{table}"
    );
    let by_token = demo.json("admin", &["audit", "--by-token", &id]);
    assert_eq!(by_token.as_array().map(Vec::len), Some(1), "{by_token}");
    assert_eq!(by_token[0]["action"], "requested");
    let shown = demo.cli("alice", &["show", &rid]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains(&format!("requested by alice with token {id}")),
        "{shown}"
    );

    // Listed with its last use; revoked; refused afterwards, saying why.
    let listed = demo.cli("alice", &["token", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let row = listed.lines().find(|l| l.contains(&id)).unwrap_or_default();
    assert!(
        row.contains("ci") && row.contains("active") && !row.contains("never"),
        "{listed}"
    );
    let revoked = demo.json("alice", &["token", "revoke", &id]);
    assert_eq!(revoked["state"], "revoked");
    let out = with_token(&["whoami"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    let events = demo.json("admin", &["audit", "--action", "token_revoked"]);
    assert_eq!(events[0]["details"]["token_id"], id.as_str());
    assert_eq!(events[0]["actor"], "alice");
}

/// The audit events of a JSON-lines export, parsed.
fn exported(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A loopback port nothing listens on right now.
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// A real syslog server (rsyslogd, in the foreground) taking RFC 5424 over
/// UDP and TCP on loopback and writing each message as
/// `INPUT FACILITY SEVERITY APP MSGID SD MSG` to a file; stopped on drop.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    udp: u16,
    tcp: u16,
}

impl Rsyslog {
    fn start(dir: &Path) -> Option<Rsyslog> {
        let program = airlock_testkit::service_program("/usr/sbin/rsyslogd")?;
        let (udp, tcp) = (free_port(true), free_port(false));
        let out = dir.join("syslog.out");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="fields" type="list") {{
  property(name="inputname") constant(value=" ")
  property(name="syslogfacility") constant(value=" ")
  property(name="syslogseverity") constant(value=" ")
  property(name="app-name") constant(value=" ")
  property(name="msgid") constant(value=" ")
  property(name="structured-data") constant(value=" ")
  property(name="msg" droplastlf="on") constant(value="\n")
}}
action(type="omfile" file="{out}" template="fields")
"#,
                dir = dir.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let child = Command::new(program)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Rsyslog {
            child,
            out,
            udp,
            tcp,
        };
        // Up once a probe over each transport comes out in the file.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        eventually(Duration::from_secs(20), "rsyslogd to take UDP", || {
            let _ = probe.send_to(b"<13>1 - - probe - udp-ready - -", ("127.0.0.1", udp));
            server
                .lines()
                .iter()
                .any(|l| l.contains("udp-ready"))
                .then_some(())
        });
        eventually(Duration::from_secs(20), "rsyslogd to take TCP", || {
            use std::io::Write as _;
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", tcp)).ok()?;
            let message = "<13>1 - - probe - tcp-ready - -";
            stream
                .write_all(format!("{} {message}", message.len()).as_bytes())
                .ok()?;
            drop(stream);
            eventually(Duration::from_secs(5), "the TCP probe", || {
                server
                    .lines()
                    .iter()
                    .any(|l| l.contains("tcp-ready"))
                    .then_some(())
            });
            Some(())
        });
        Some(server)
    }

    /// Waits until `count` audit events came in through `input`, saying
    /// what did come on failure.
    fn wait_for(&self, input: &str, count: usize) -> Vec<(String, String, String, String, Value)> {
        let start = Instant::now();
        loop {
            let got = self.received(input);
            if got.len() == count {
                return got;
            }
            assert!(
                got.len() < count && start.elapsed() < Duration::from_secs(20),
                "expected {count} events through {input}, rsyslogd wrote:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The audit events received through `input` (`imudp`, `imtcp`), by seq:
    /// (facility, severity, app, msgid, the event's JSON).
    fn received(&self, input: &str) -> Vec<(String, String, String, String, Value)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut f = l.splitn(6, ' ');
                let (inp, fac, sev, app, msgid) =
                    (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
                let rest = f.next()?;
                (inp == input && app == "airlock").then_some(())?;
                let json = &rest[rest.find("] ")? + 2..];
                Some((
                    fac.to_owned(),
                    sev.to_owned(),
                    app.to_owned(),
                    msgid.to_owned(),
                    serde_json::from_str(json).unwrap(),
                ))
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_audit_chain_ships_to_a_siem_from_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let grant = demo.staging_shell("ship it");
    let (file, cursor) = (
        dir.path().join("siem.jsonl"),
        dir.path().join("siem.cursor"),
    );
    let export = |extra: &[&str]| {
        let mut args = vec!["audit", "export", "--cursor"];
        args.push(cursor.to_str().unwrap());
        args.extend(extra);
        let out = demo.cli("admin", &args);
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let to_file = ["--output", file.to_str().unwrap()];

    // Everything so far, oldest first, each with its chain position.
    export(&to_file);
    let first = exported(&file);
    assert!(first.len() >= 3, "{first:#?}");
    for (i, e) in first.iter().enumerate() {
        assert_eq!(e["seq"], i64::try_from(i).unwrap() + 1, "{e}");
        if i > 0 {
            assert_eq!(e["prev_hash"], first[i - 1]["hash"]);
        }
    }
    let last = first.last().unwrap()["seq"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&cursor).unwrap().trim(),
        last.to_string()
    );
    // The same as the API's listing says.
    let newest = demo.json("admin", &["audit", "--limit", "1"]);
    assert_eq!(newest[0]["hash"], first.last().unwrap()["hash"]);

    // Again: nothing new, nothing sent twice.
    assert!(export(&to_file).contains("shipped 0"));
    assert_eq!(exported(&file).len(), first.len());

    // New events: only they are added.
    let id = grant["id"].as_str().unwrap();
    let released = demo.cli("alice", &["release", id]);
    assert!(released.status.success(), "{}", stderr(&released));
    // Nothing more is coming for it once the target confirmed the removal.
    eventually(Duration::from_secs(20), "the removal", || {
        state_of(&demo, id)["deprovisioned_at"]
            .is_string()
            .then_some(())
    });
    export(&to_file);
    let all = exported(&file);
    assert!(all.len() > first.len());
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=i64::try_from(all.len()).unwrap()).collect::<Vec<_>>()
    );
    assert!(all[first.len()..].iter().any(|e| e["action"] == "released"));

    // A real syslog server takes the same events as RFC 5424 messages, over
    // TCP (octet-counted) and over UDP.
    let Some(syslog) = Rsyslog::start(dir.path()) else {
        return;
    };
    let out = demo.cli(
        "admin",
        &[
            "audit",
            "export",
            "--after",
            "0",
            "--syslog",
            &format!("tcp://127.0.0.1:{}", syslog.tcp),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let over_tcp = syslog.wait_for("imtcp", all.len());
    for ((facility, severity, _, msgid, event), shipped) in over_tcp.iter().zip(&all) {
        // Facility 13 (log audit), severity 5 (notice), the action as MSGID.
        assert_eq!((facility.as_str(), severity.as_str()), ("13", "5"));
        assert_eq!(msgid, shipped["action"].as_str().unwrap());
        assert_eq!(event, shipped);
    }
    let tail = (all.len() - 2).to_string();
    let out = demo.cli(
        "admin",
        &[
            "audit",
            "export",
            "--after",
            &tail,
            "--syslog",
            &format!("udp://127.0.0.1:{}", syslog.udp),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let over_udp = syslog.wait_for("imudp", 2);
    assert_eq!(over_udp[1].4, all[all.len() - 1]);

    // A bad destination is named.
    let out = demo.cli("admin", &["audit", "export", "--syslog", "smtp://x:25"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("udp or tcp"), "{}", stderr(&out));
}
