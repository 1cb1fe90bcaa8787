//! The companion under a real sshd on loopback (`ForceCommand` and
//! `ExposeAuthInfo yes`, trusting the CA of a real Airlock server): a
//! session open when its grant is released ends within a second, with a
//! message first, and its recording, stored under the request, replays
//! through `airlock session play` byte for byte as the client saw it; a
//! session open at its certificate's expiry ends then while the server is
//! stopped, its record waiting in the spool until the server is back; a
//! certificate whose key id is not an Airlock request id is refused before
//! anything runs. On SQLite and PostgreSQL where the server is involved.
//! Needs OpenSSH: skips loudly without it, and fails instead in CI
//! (`AIRLOCK_REQUIRE_SERVICES=1`).

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_server::api::{CreateRequest, DurationInput, RequestView};
use airlock_server::client::{Action, Client};
use airlock_server::config::{token_hash, Settings};
use airlock_server::server::{start, Server};
use airlock_server::store::sql::Location;
use airlock_testkit::sshd::{OpenSsh, Sshd, Trust, UserKey};
use airlock_testkit::{on_sqlite_and_postgres, until};

const COMPANION: &str = env!("CARGO_BIN_EXE_airlock-session");
const PRINCIPAL: &str = "web-admin";
/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(15);

/// `airlock`, built beside this package's binaries (`cargo test
/// --workspace` builds it for the CLI's own tests).
fn airlock_bin() -> PathBuf {
    let bin = Path::new(COMPANION).with_file_name("airlock");
    assert!(
        bin.exists(),
        "`{}` is missing: build the workspace (`cargo build --workspace`)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A server on `port` whose data dir is `dir/data`, with alice allowed
/// `web-ssh` (auto-approved, through the `ssh_ca` connector) and `web1`, a
/// reporter (the SSH host's companion).
async fn boot(dir: &Path, port: u16, postgres: Option<&str>) -> Server {
    let data = dir.join("data");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n\
         [users.alice]\ngroups = [\"ops\"]\ntoken_sha256 = \"{}\"\n\n\
         [users.web1]\nroles = [\"reporter\"]\ntoken_sha256 = \"{}\"\n\n\
         [connectors.ssh]\ntype = \"ssh_ca\"\nprincipals = [\"{PRINCIPAL}\"]\ntimeout = \"5s\"\n\n\
         [entitlements.web-ssh]\nrequestable_by = [\"ops\"]\nmax_duration = \"1h\"\n\
         auto_approve = true\nrequire_reason = false\nconnector = \"ssh\"\n",
        data.display(),
        token_hash("alice-token"),
        token_hash("web1-token")
    );
    let mut settings = Settings::parse("sessions.toml", &toml, dir).unwrap();
    if let Some(url) = postgres {
        settings.database = Location::Postgres(url.to_owned());
    }
    start(settings).await.unwrap()
}

/// The SSH host: sshd trusting the server's CA, running the companion for
/// every login, its config pointing at the server.
struct Host {
    sshd: Sshd,
    spool: PathBuf,
    key: UserKey,
}

/// sshd trusting the CA at `ca_pub` (with `krl`), running the companion
/// with `config` for every login.
fn sshd_with_companion(
    tools: &OpenSsh,
    dir: &Path,
    ca_pub: &Path,
    krl: &Path,
    config: &Path,
) -> Sshd {
    let trust = Trust {
        ca_public_key: ca_pub,
        principal: PRINCIPAL,
        krl,
    };
    let extra = format!(
        "ExposeAuthInfo yes\nForceCommand {COMPANION} --config {}\n",
        config.display()
    );
    Sshd::start_with(tools, dir, &trust, &extra)
}

fn host(tools: &OpenSsh, dir: &Path, port: u16) -> Host {
    let ssh_dir = dir.join("data").join("ssh");
    let (ca_pub, krl) = (ssh_dir.join("ca_ed25519.pub"), ssh_dir.join("revoked.krl"));
    let spool = dir.join("spool");
    std::fs::write(dir.join("web1.token"), "web1-token\n").unwrap();
    let config = dir.join("session.toml");
    std::fs::write(
        &config,
        format!(
            "url = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}\"\nkrl = \"{}\"\n\
             spool_dir = \"{}\"\nhost = \"web1\"\nretry_for = 60\n",
            dir.join("web1.token").display(),
            krl.display(),
            spool.display()
        ),
    )
    .unwrap();
    let sshd = sshd_with_companion(tools, dir, &ca_pub, &krl, &config);
    let key = tools.new_key(&dir.join("id_alice"));
    Host { sshd, spool, key }
}

async fn grant(client: &Client, public_key: &str) -> RequestView {
    let body = CreateRequest {
        entitlement: "web-ssh".into(),
        duration: Some(DurationInput::Seconds(600)),
        reason: String::new(),
        ticket: None,
        start_at: None,
        break_glass: false,
        public_key: Some(public_key.to_owned()),
        bundle: None,
        entitlements: Vec::new(),
    };
    let id = client.create_request(&body).await.unwrap().id;
    until(WAIT, "the grant and its certificate", || async {
        let r = client.get_request(&id).await.unwrap();
        (r.state == "active" && r.certificate.is_some()).then_some(r)
    })
    .await
}

/// A server on a free port, the SSH host trusting it, and alice's active
/// grant for the host's key.
async fn set_up(
    tools: &OpenSsh,
    postgres: Option<&str>,
) -> (tempfile::TempDir, u16, Server, Client, Host, RequestView) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = boot(dir.path(), port, postgres).await;
    let alice = Client::new(&format!("http://127.0.0.1:{port}"), "alice-token").unwrap();
    let host = host(tools, dir.path(), port);
    let active = grant(&alice, &host.key.public).await;
    (dir, port, server, alice, host, active)
}

/// `airlock session play ID --no-wait` as alice: what it printed.
fn play(port: u16, session: &str) -> Vec<u8> {
    let out = Command::new(airlock_bin())
        .args(["session", "play", session, "--no-wait"])
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(["--token", "alice-token"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "play failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_open_at_release_ends_within_a_second_and_replays_as_seen() {
    let Some(tools) = OpenSsh::find() else { return };
    on_sqlite_and_postgres("airlock_ssh_release", Duration::from_secs(90), |pg| {
        let tools = &tools;
        async move {
            let (_dir, port, server, alice, host, active) = set_up(tools, pg.as_deref()).await;
            let id = active.id.clone();
            let cert = host.key.write_certificate(&active.certificate.unwrap());

            // An interactive shell under a pseudo-terminal, running a few
            // commands whose output differs from what is typed.
            let mut session = host.sshd.open_session(&host.key, &cert, None, true);
            // The prompt: the companion has taken the terminal (what is typed
            // before would be echoed by sshd's terminal, not the session's).
            until(WAIT, "the shell's prompt", || async {
                (!session.output().is_empty()).then_some(())
            })
            .await;
            session.send("echo one-$((40+2))\n");
            assert!(
                session.shows("one-42", WAIT),
                "no output: {}\nsshd:\n{}",
                session.output(),
                host.sshd.log()
            );
            session.send("printf 'two-%s\\n' $((6*7)); echo three-$((1+2))\n");
            assert!(session.shows("three-3", WAIT), "{}", session.output());

            let released = Instant::now();
            alice.act(&id, &Action::Release).await.unwrap();
            let status = session.ended_within(Duration::from_secs(1));
            let took = released.elapsed();
            assert!(
                status.is_some(),
                "the session outlived the release by more than a second: {}",
                session.output()
            );
            assert!(
                session.output().contains(&format!(
                    "airlock: the grant {id} was released or revoked; this session ends now"
                )),
                "{}",
                session.output()
            );
            eprintln!("session ended {took:?} after the release was answered");

            // Its record arrives, with the recording.
            let stored = until(WAIT, "the session's record", || async {
                let sessions = alice.ssh_sessions(&id).await.unwrap();
                (!sessions.is_empty()).then_some(sessions)
            })
            .await;
            assert_eq!(stored.len(), 1, "{stored:?}");
            let s = &stored[0];
            assert_eq!(
                (
                    s.ending.as_str(),
                    s.host.as_str(),
                    s.command.as_deref(),
                    s.cut.as_deref()
                ),
                ("revoked", "web1", None, None)
            );
            assert!(s.client.starts_with("127.0.0.1 port "), "{}", s.client);
            let history = alice.explain(&id).await.unwrap().history;
            let recorded: Vec<_> = history
                .iter()
                .filter(|h| h.action == "ssh_session_recorded")
                .collect();
            assert_eq!(recorded.len(), 1, "{history:?}");
            assert_eq!(recorded[0].actor, "web1");
            assert_eq!(recorded[0].details["session"], s.id);
            assert_eq!(recorded[0].details["ending"], "revoked");

            // Only those who may see the request read its sessions: not
            // the host's reporter token.
            let web1 = Client::new(&format!("http://127.0.0.1:{port}"), "web1-token").unwrap();
            for refused in [
                web1.ssh_sessions(&id).await.map(|_| ()),
                web1.ssh_session(&s.id).await.map(|_| ()),
            ] {
                match refused {
                    Err(airlock_server::client::ClientError::Api { status: 404, .. }) => {}
                    other => panic!("the reporter read a session: {other:?}"),
                }
            }

            // The replay is what the client saw, byte for byte (the
            // companion's own goodbye aside).
            let replayed = play(port, &s.id);
            let replayed = String::from_utf8_lossy(&replayed).into_owned();
            for needle in ["one-42", "two-42", "three-3"] {
                assert!(
                    replayed.contains(needle),
                    "{needle} not replayed: {replayed:?}"
                );
            }
            let goodbye = format!(
                "\r\nairlock: the grant {id} was released or revoked; this session ends now\r\n"
            );
            let seen = session.output().replacen(&goodbye, "", 1);
            assert_eq!(
                seen, replayed,
                "the replay differs from what the client saw"
            );

            // `airlock show` lists it.
            let shown = Command::new(airlock_bin())
                .args(["show", &id])
                .args(["--url", &format!("http://127.0.0.1:{port}")])
                .args(["--token", "alice-token"])
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
            assert!(shown.contains("ssh sessions"), "{shown}");
            assert!(shown.contains(&s.id), "{shown}");
            server.shutdown().await;
        }
    })
    .await;
}

/// A certificate file's `valid_before`, Unix seconds.
fn valid_before(tools: &OpenSsh, certificate: &Path) -> i64 {
    let (_, to) = tools.validity(certificate);
    airlock_server::api::parse_time(&format!("{to}Z"))
        .unwrap()
        .unix_millis()
        / 1000
}

/// A certificate for `key` from the CA key at `ca`, with `key_id`, valid
/// from a minute ago for `validity` (`+4s`).
fn sign(tools: &OpenSsh, ca: &Path, key: &UserKey, key_id: &str, validity: &str) -> PathBuf {
    let public = PathBuf::from(format!("{}.pub", key.path.display()));
    let status = Command::new(&tools.keygen)
        .args(["-q", "-s"])
        .arg(ca)
        .args(["-I", key_id, "-n", PRINCIPAL, "-V"])
        .arg(format!("-1m:{validity}"))
        .arg(&public)
        .status()
        .unwrap();
    assert!(status.success());
    PathBuf::from(format!("{}-cert.pub", key.path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_open_at_expiry_ends_then_with_airlock_down_and_its_record_follows() {
    let Some(tools) = OpenSsh::find() else { return };
    on_sqlite_and_postgres("airlock_ssh_expiry", Duration::from_secs(90), |pg| {
        let tools = &tools;
        async move {
            let (dir, port, server, alice, host, active) = set_up(tools, pg.as_deref()).await;
            let id = active.id;
            // The grant's certificate lasts ten minutes; one from the same
            // CA for the same request lasting seconds stands for a grant
            // about to expire.
            let ca = dir.path().join("data").join("ssh").join("ca_ed25519");
            let cert = sign(tools, &ca, &host.key, &id, "+5s");
            let expiry = valid_before(tools, &cert);
            server.shutdown().await;

            // No pseudo-terminal: a command on plain pipes.
            let mut session = host.sshd.open_session(
                &host.key,
                &cert,
                Some("echo started; sleep 60; echo never"),
                false,
            );
            assert!(
                session.shows("started", WAIT),
                "{}\n{}",
                session.output(),
                host.sshd.log()
            );
            let status = session.ended_within(WAIT);
            let ended = airlock_testkit::wall_clock_unix_millis();
            assert!(status.is_some(), "the session outlived its certificate");
            eprintln!(
                "session ended {} ms after its certificate's expiry",
                ended - expiry * 1000
            );
            assert!(
                ended >= expiry * 1000 && ended <= expiry * 1000 + 1000,
                "ended at {ended} ms, the certificate expired at {expiry} s"
            );
            assert!(
                session
                    .output()
                    .contains(&format!("airlock: the grant {id} has expired")),
                "{}",
                session.output()
            );
            assert!(!session.output().contains("never"));

            // Airlock is down: the record waits in the spool.
            let spooled = until(WAIT, "the spooled record", || async {
                let files = airlock_session::spool::pending(&host.spool);
                (!files.is_empty()).then_some(files)
            })
            .await;
            assert_eq!(spooled.len(), 1);
            let record: airlock_session::upload::Spooled =
                serde_json::from_str(&std::fs::read_to_string(&spooled[0]).unwrap()).unwrap();
            assert_eq!(record.request, id);
            assert_eq!(record.upload.ending, "expired");

            // Back up on the same address: the session's sender, still
            // trying, delivers it.
            let server = boot(dir.path(), port, pg.as_deref()).await;
            let stored = until(
                Duration::from_secs(40),
                "the record after the outage",
                || async {
                    let sessions = alice.ssh_sessions(&id).await.unwrap();
                    (!sessions.is_empty()).then_some(sessions)
                },
            )
            .await;
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].ending, "expired");
            assert_eq!(
                stored[0].command.as_deref(),
                Some("echo started; sleep 60; echo never")
            );
            until(WAIT, "the spool to empty", || async {
                airlock_session::spool::pending(&host.spool)
                    .is_empty()
                    .then_some(())
            })
            .await;
            let replayed = String::from_utf8_lossy(&play(port, &stored[0].id)).into_owned();
            assert_eq!(replayed, "started\n");

            // Sent again (a lost answer), it is the same session, once.
            let again = Client::new(&format!("http://127.0.0.1:{port}"), "web1-token")
                .unwrap()
                .record_ssh_session(&id, &record.upload)
                .await
                .unwrap();
            assert!(again.duplicate);
            assert_eq!(alice.ssh_sessions(&id).await.unwrap().len(), 1);
            server.shutdown().await;
        }
    })
    .await;
}

#[test]
fn a_certificate_without_an_airlock_key_id_is_refused_before_anything_runs() {
    let Some(tools) = OpenSsh::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = tools.new_key(&dir.path().join("ca"));
    let krl = dir.path().join("revoked.krl");
    let status = Command::new(&tools.keygen)
        .args(["-q", "-k", "-f"])
        .arg(&krl)
        .status()
        .unwrap();
    assert!(status.success());
    let config = dir.path().join("session.toml");
    std::fs::write(
        &config,
        format!(
            "krl = \"{}\"\nspool_dir = \"{}\"\nhost = \"web1\"\n",
            krl.display(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let ca_pub = PathBuf::from(format!("{}.pub", ca.path.display()));
    let sshd = sshd_with_companion(&tools, dir.path(), &ca_pub, &krl, &config);
    let key = tools.new_key(&dir.path().join("id_user"));
    let marker = dir.path().join("ran");
    let command = format!("touch {}", marker.display());

    for key_id in ["deploy@laptop", "airlock-health-check", "req_1"] {
        let cert = sign(&tools, &ca.path, &key, key_id, "+1h");
        let mut session = sshd.open_session(&key, &cert, Some(&command), false);
        let status = session.ended_within(WAIT).unwrap();
        assert!(!status.success(), "`{key_id}` was let through");
        assert!(
            session.shows(
                &format!("the certificate's key id `{key_id}` names no Airlock request"),
                WAIT
            ),
            "{}\n{}",
            session.output(),
            sshd.log()
        );
        assert!(!marker.exists(), "`{key_id}`'s command ran");
    }
    // The same CA's certificate for a request id is let in (no server is
    // needed to run it; recording needs none either: it is spooled).
    let cert = sign(&tools, &ca.path, &key, "rabcdefghjkmn", "+1h");
    let mut session = sshd.open_session(&key, &cert, Some(&command), false);
    let status = session.ended_within(WAIT).unwrap();
    assert!(status.success(), "{}\n{}", session.output(), sshd.log());
    assert!(marker.exists());
}
