//! Several `airlock serve` replicas against one PostgreSQL database, with
//! replicas killed (SIGKILL) and paused (SIGSTOP/SIGCONT) at random while a
//! few thousand short grants come and go. Afterwards every grant must have
//! been revoked in the target, with no access left behind, the audit chain
//! must verify, and no lifecycle event may be recorded twice.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_server::api::{AuditQuery, CreateRequest, DurationInput, RequestQuery};
use airlock_server::client::Client;
use airlock_server::config::token_hash;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");
const REPLICAS: usize = 3;
const GRANTS: usize = 3000;

struct Replica {
    child: Child,
    url: String,
    paused: bool,
}

fn start_replica(config: &Path) -> Replica {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("AIRLOCK_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start airlock serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("replica printed its URL");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    Replica {
        child,
        url,
        paused: false,
    }
}

/// A small deterministic generator: `random(n)` is in `0..n`.
fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.paused {
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, db_url: &str) -> std::path::PathBuf {
    // The target fences by claim, as docs/connectors.md asks: a call older
    // than one it already applied for the request is acknowledged, not applied.
    let script = dir.join("target.sh");
    std::fs::create_dir_all(dir.join("claims")).unwrap();
    std::fs::write(
        &script,
        r#"#!/bin/sh
[ "$1" = health ] && exit 0
d="$(dirname "$0")"
exec 9>>"$d/target.lock"
flock 9
last=$(cat "$d/claims/$4" 2>/dev/null || echo 0)
if [ "$AIRLOCK_CLAIM" -lt "$last" ]; then
    printf 'stale-%s %s\n' "$1" "$4" >> "$d/target.log"
    exit 0
fi
echo "$AIRLOCK_CLAIM" > "$d/claims/$4"
printf '%s %s\n' "$1" "$4" >> "$d/target.log"
"#,
    )
    .unwrap();
    let mut text = format!(
        "[server]\ndatabase = \"{db_url}\"\nclaim_lease = \"3s\"\nretry_base = \"200ms\"\nretry_cap = \"2s\"\n\n\
         [connectors.target]\ntype = \"command\"\nprogram = \"/bin/sh\"\nargs = [\"{}\"]\ntimeout = \"2s\"\n\n\
         [entitlements.shell]\nrequestable_by = [\"eng\"]\nmax_duration = \"1h\"\nauto_approve = true\nconnector = \"target\"\n\n\
         [users.auditor]\nroles = [\"auditor\"]\ntoken_sha256 = \"{}\"\n",
        script.display(),
        token_hash("auditor-token")
    );
    for i in 0..GRANTS {
        text.push_str(&format!(
            "\n[users.u{i}]\ngroups = [\"eng\"]\ntoken_sha256 = \"{}\"\n",
            token_hash(&format!("t{i}"))
        ));
    }
    let path = dir.join("airlock.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn replicas_under_kill_and_pause_revoke_every_grant_once() {
    let Some(admin_url) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(airlock_testkit::FreshDatabase::create(
        &admin_url,
        "airlock_replicas",
    ));
    let db_url = db.url.clone();

    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &db_url);
    let replicas: Arc<Mutex<Vec<Replica>>> = Arc::new(Mutex::new(
        (0..REPLICAS).map(|_| start_replica(&config)).collect(),
    ));

    // A chaos thread kills and pauses replicas at random while grants of
    // 1-4 s are submitted concurrently through whichever replicas are up.
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (replicas, stop, config) = (Arc::clone(&replicas), Arc::clone(&stop), config.clone());
        std::thread::spawn(move || {
            let mut random = xorshift(u64::from(std::process::id()) | 1);
            let mut log = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300 + random(700)));
                let mut replicas = replicas.lock().unwrap();
                let victim = random(REPLICAS as u64) as usize;
                let pid = replicas[victim].child.id();
                if random(2) == 0 {
                    log.push(format!("kill {victim}"));
                    // SIGKILL ends a stopped process too.
                    replicas[victim].paused = false;
                    let _ = replicas[victim].child.kill();
                    let _ = replicas[victim].child.wait();
                    replicas[victim] = start_replica(&config);
                } else if replicas[victim].paused {
                    signal(pid, "-CONT");
                    replicas[victim].paused = false;
                    log.push(format!("resume {victim}"));
                } else {
                    signal(pid, "-STOP");
                    replicas[victim].paused = true;
                    log.push(format!("pause {victim}"));
                }
            }
            for r in replicas.lock().unwrap().iter_mut().filter(|r| r.paused) {
                signal(r.child.id(), "-CONT");
                r.paused = false;
            }
            log
        })
    };

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let submitted: Vec<String> = rt.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..16u64 {
            let (replicas, next) = (Arc::clone(&replicas), Arc::clone(&next));
            workers.spawn(async move {
                let mut random = xorshift(w * 7919 + 17);
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= GRANTS {
                        return ids;
                    }
                    let body = CreateRequest {
                        entitlement: "shell".into(),
                        duration: Some(DurationInput::Seconds(1 + random(4))),
                        reason: "chaos".into(),
                        ticket: None,
                        start_at: None,
                        break_glass: false,
                        public_key: None,
                        bundle: None,
                        entitlements: Vec::new(),
                    };
                    // A replica may die or freeze under the call: try another.
                    // A conflict means an earlier attempt did create it.
                    for _ in 0..3 {
                        let live: Vec<String> = replicas
                            .lock()
                            .unwrap()
                            .iter()
                            .filter(|r| !r.paused)
                            .map(|r| r.url.clone())
                            .collect();
                        let Some(url) = live.get(random(live.len().max(1) as u64) as usize) else {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        };
                        let client = Client::new(url, &format!("t{i}")).unwrap();
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            client.create_request(&body),
                        )
                        .await
                        {
                            Ok(Ok(created)) => {
                                ids.push(created.id);
                                break;
                            }
                            Ok(Err(e)) if e.status() == Some(409) => break,
                            _ => {}
                        }
                    }
                }
            });
        }
        let mut all = Vec::new();
        while let Some(ids) = workers.join_next().await {
            all.extend(ids.unwrap());
        }
        all
    });
    stop.store(true, Ordering::Relaxed);
    let chaos_log = chaos.join().unwrap();
    eprintln!(
        "submitted {} grants in {:?}; chaos: {}",
        submitted.len(),
        started.elapsed(),
        chaos_log.join(", ")
    );
    assert!(
        submitted.len() > GRANTS / 2,
        "too few submissions succeeded: {}",
        submitted.len()
    );
    let mut replicas = replicas.lock().unwrap();

    // Wait until every request that exists has ended and been removed from the target.
    let auditor = Client::new(&replicas[0].url, "auditor-token").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let open = RequestQuery {
            state: Some("pending,approved,active".into()),
            limit: Some(10),
            ..RequestQuery::default()
        };
        let open = rt.block_on(auditor.list_requests(&open)).unwrap();
        let holding = rt.block_on(auditor.grants()).unwrap();
        if open.is_empty() && holding.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grants still open or unrevoked at the deadline: {} open, {} holding",
            open.len(),
            holding.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut requests = Vec::new();
    for u in 0..GRANTS {
        let q = RequestQuery {
            requester: Some(format!("u{u}")),
            limit: Some(10),
            ..RequestQuery::default()
        };
        requests.extend(rt.block_on(auditor.list_requests(&q)).unwrap());
    }
    for r in &requests {
        // A grant whose replicas kept dying may miss its whole window: it
        // fails rather than expires, and is cleaned up all the same.
        assert!(
            ["expired", "failed"].contains(&r.state.as_str()),
            "{}: {r:?}",
            r.id
        );
        let cleaned = r.deprovisioned_at.is_some() || (r.granted_at.is_none() && r.job.is_none());
        assert!(cleaned, "{}: not removed from the target: {r:?}", r.id);
    }
    for id in &submitted {
        assert!(
            requests.iter().any(|r| &r.id == id),
            "acknowledged request {id} was lost"
        );
    }

    // The target's view: for each request, its last call must be a revoke.
    let log = std::fs::read_to_string(dir.path().join("target.log")).unwrap();
    let mut calls: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut fenced = 0;
    for line in log.lines() {
        let (action, id) = line.split_once(' ').unwrap();
        if action.starts_with("stale-") {
            fenced += 1;
            continue;
        }
        calls.entry(id).or_default().push(action);
    }
    let mut redelivered = 0;
    for r in &requests {
        let Some(seen) = calls.get(r.id.as_str()) else {
            assert!(
                r.granted_at.is_none(),
                "{} was granted but never reached the target",
                r.id
            );
            continue;
        };
        assert_eq!(
            seen.last(),
            Some(&"revoke"),
            "{}: access left behind: {seen:?}",
            r.id
        );
        redelivered += seen.len().saturating_sub(2);
    }
    eprintln!(
        "{} grants, {redelivered} extra deliveries after crashes (idempotent), {fenced} stale calls fenced by claim",
        requests.len()
    );

    // The audit chain verifies and each lifecycle event is recorded once.
    let verify = rt.block_on(auditor.verify_audit()).unwrap();
    assert!(verify.ok, "audit chain broken: {verify:?}");
    let mut per_request: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut fetched = 0;
    for r in &requests {
        let q = AuditQuery {
            request: Some(r.id.clone()),
            limit: Some(100),
            ..AuditQuery::default()
        };
        for e in rt.block_on(auditor.audit(&q)).unwrap() {
            *per_request
                .entry((r.id.clone(), e.action.clone()))
                .or_default() += 1;
            fetched += 1;
        }
    }
    for ((id, action), n) in &per_request {
        let expected = match action.as_str() {
            "requested" | "approved" | "granted" | "expired" | "failed" => 1,
            // Removed once, plus once more for every late grant result that
            // reported success after removal (each recorded as such).
            "deprovisioned" => {
                1 + per_request
                    .get(&(id.clone(), "revocation_repeated".to_owned()))
                    .copied()
                    .unwrap_or(0)
            }
            _ => continue,
        };
        assert_eq!(*n, expected, "{id}: `{action}` recorded {n} times");
    }
    // Besides the requests' events, each replica start records the policy
    // set it started with (a replica killed early may not have).
    let policy_events = rt
        .block_on(auditor.audit(&AuditQuery {
            action: Some("policy_activated".to_owned()),
            limit: Some(1000),
            ..AuditQuery::default()
        }))
        .unwrap();
    assert!(policy_events.iter().all(|e| e.request.is_none()));
    assert_eq!(
        (fetched + policy_events.len()) as u64,
        verify.checked,
        "events outside any request"
    );

    replicas.clear();
    drop(replicas);
    rt.block_on(db.drop_now());
}
