//! The whole path for SSH access: a request through the real server with an
//! `ssh_ca` connector and the requester's public key, the certificate it
//! issues logging in to a real sshd that trusts the CA, and the same
//! certificate refused once the grant is released (through the KRL the
//! connector rewrites); an extension's new certificate valid until the new
//! expiry; sshd's log lines of a login with the certificate, posted by a
//! reporter, on the request's timeline. Needs OpenSSH (`/usr/sbin/sshd`, `ssh`,
//! `ssh-keygen`): skips loudly without it, and fails instead in CI
//! (`AIRLOCK_REQUIRE_SERVICES=1`).

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use airlock_server::api::{CreateRequest, DurationInput, RequestView};
use airlock_server::client::{Action, Client, ClientError};
use airlock_server::config::{token_hash, Settings};
use airlock_server::server::{start, Server, StartError};
use airlock_testkit::bounded;
use airlock_testkit::sshd::{OpenSsh, Sshd, Trust};
use airlock_testkit::until;

use fixtures::{extend, wait_for_extension};

mod fixtures;

/// No test may take longer than this, whatever sshd does.
const BOUND: Duration = Duration::from_secs(30);
/// The principal the connector certifies and sshd maps to the current user.
const PRINCIPAL: &str = "web-admin";

/// A server whose data dir is `dir`, with alice allowed `web-ssh`
/// (auto-approved, through the `ssh_ca` connector `ssh`) and `shipper`, a
/// reporter (the SSH host's log shipper).
async fn boot(dir: &Path, connector: &str) -> Result<(Server, Client), StartError> {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n\
         [users.alice]\ngroups = [\"ops\"]\ntoken_sha256 = \"{}\"\n\n\
         [users.shipper]\nroles = [\"reporter\"]\ntoken_sha256 = \"{}\"\n\n\
         [connectors.ssh]\ntype = \"ssh_ca\"\nprincipals = [\"{PRINCIPAL}\"]\ntimeout = \"5s\"\n{connector}\n\n\
         [entitlements.web-ssh]\nrequestable_by = [\"ops\"]\nmax_duration = \"1h\"\n\
         auto_approve = true\nrequire_reason = false\nconnector = \"ssh\"\n",
        dir.display(),
        token_hash("alice-token"),
        token_hash("shipper-token")
    );
    let settings = Settings::parse("ssh.toml", &toml, dir).unwrap();
    let server = start(settings).await?;
    let client = Client::new(&format!("http://{}", server.addr()), "alice-token").unwrap();
    Ok((server, client))
}

async fn request(client: &Client, public_key: Option<String>) -> RequestView {
    let body = CreateRequest {
        duration: Some(DurationInput::Seconds(600)),
        public_key,
        ..fixtures::ask("web-ssh")
    };
    client.create_request(&body).await.unwrap()
}

/// A real sshd trusting the CA the server under `dir` made at start, for
/// [`PRINCIPAL`], with the connector's KRL.
fn sshd_trusting_the_ca(tools: &OpenSsh, dir: &Path) -> Sshd {
    let ssh_dir = dir.join("ssh");
    let (ca_pub, krl) = (ssh_dir.join("ca_ed25519.pub"), ssh_dir.join("revoked.krl"));
    let trust = Trust {
        ca_public_key: &ca_pub,
        principal: PRINCIPAL,
        krl: &krl,
    };
    Sshd::start(tools, dir, &trust)
}

/// Request `id` once it is active with its certificate.
async fn active_with_certificate(client: &Client, id: &str) -> RequestView {
    until(Duration::from_secs(15), "the grant", || async {
        let r = client.get_request(id).await.unwrap();
        (r.state == "active" && r.certificate.is_some()).then_some(r)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_certificate_logs_in_until_the_grant_is_released() {
    let Some(tools) = OpenSsh::find() else { return };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = boot(dir.path(), "").await.unwrap();

        // The connector made its CA key, the `.pub` beside it and the KRL at
        // start, under the data dir: all a server needs to trust it.
        let ssh_dir = dir.path().join("ssh");
        let ca_pub = ssh_dir.join("ca_ed25519.pub");
        let krl = ssh_dir.join("revoked.krl");
        assert!(
            std::fs::read_to_string(&ca_pub)
                .unwrap()
                .starts_with("ssh-ed25519 "),
            "the CA's public key is not beside its private key"
        );
        let trust = Trust {
            ca_public_key: &ca_pub,
            principal: PRINCIPAL,
            krl: &krl,
        };
        let sshd = Sshd::start(&tools, dir.path(), &trust);

        let key = tools.new_key(&dir.path().join("id_alice"));
        let created = request(&client, Some(key.public.clone())).await;
        let id = created.id.clone();
        let active = until(
            Duration::from_secs(15),
            "the grant and its certificate",
            || async {
                let r = client.get_request(&id).await.unwrap();
                assert!(
                    !matches!(r.state.as_str(), "failed" | "denied"),
                    "{}: {:?}",
                    r.state,
                    r.end_reason
                );
                (r.state == "active" && r.certificate.is_some()).then_some(r)
            },
        )
        .await;
        let certificate = active.certificate.unwrap();
        assert!(
            certificate.starts_with("ssh-ed25519-cert-v01@openssh.com "),
            "{certificate}"
        );
        let cert = key.write_certificate(&certificate);

        sshd.assert_logs_in(&key, &cert, "login refused");
        // The request id is the certificate's key id.
        sshd.assert_logged(&format!("ID {id} (serial"));

        client.act(&id, &Action::Release).await.unwrap();
        let released = until(
            Duration::from_secs(15),
            "the release to reach the KRL",
            || async {
                let r = client.get_request(&id).await.unwrap();
                r.deprovisioned_at.is_some().then_some(r)
            },
        )
        .await;
        assert_eq!(released.state, "released");

        // Refused through the KRL.
        sshd.assert_refused(&key, &cert, "a released certificate", "revoked by file");
        server.shutdown().await;
    })
    .await;
}

/// A login with the grant's certificate, as the real sshd logs it, posted
/// by the host's log shipper: the login and its logout on the request's
/// timeline with user, client, port and serial, each once however often the
/// lines come; the rest of the log ignored and counted; a line of another
/// request's login refusing the post, naming the line; only a reporter (or
/// an admin) posting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_log_lines_of_a_login_appear_on_the_grants_timeline() {
    let Some(tools) = OpenSsh::find() else { return };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = boot(dir.path(), "").await.unwrap();
        let shipper = Client::new(&format!("http://{}", server.addr()), "shipper-token").unwrap();
        let sshd = sshd_trusting_the_ca(&tools, dir.path());
        let key = tools.new_key(&dir.path().join("id_alice"));
        let id = request(&client, Some(key.public.clone())).await.id;
        let active = active_with_certificate(&client, &id).await;
        let cert = key.write_certificate(&active.certificate.unwrap());
        sshd.assert_logs_in(&key, &cert, "login refused");
        sshd.assert_logged("Disconnected from user ");

        // Everything sshd logged, as a shipper would send it.
        let log = sshd.log();
        let lines: Vec<String> = log.lines().map(str::to_owned).collect();
        let accepted = lines
            .iter()
            .find(|l| l.starts_with("Accepted publickey for "))
            .unwrap()
            .clone();
        let answer = shipper
            .report_activity(&id, "web1", lines.clone())
            .await
            .unwrap();
        assert_eq!(
            (answer.recorded, answer.duplicates, answer.over_limit),
            (2, 0, 0),
            "{answer:?}\n{log}"
        );
        assert_eq!(answer.ignored, lines.len() - 2, "{answer:?}\n{log}");

        // On the timeline, as `airlock show` and the explanation read it.
        let history = client.explain(&id).await.unwrap().history;
        let of = |action: &str| {
            history
                .iter()
                .filter(|h| h.action == action)
                .collect::<Vec<_>>()
        };
        let (logins, logouts) = (of("ssh_login"), of("ssh_logout"));
        assert_eq!((logins.len(), logouts.len()), (1, 1), "{history:?}");
        let (login, logout) = (logins[0], logouts[0]);
        assert_eq!(login.actor, "shipper");
        let user = accepted
            .strip_prefix("Accepted publickey for ")
            .and_then(|r| r.split(' ').next())
            .unwrap();
        assert_eq!(login.details["user"], user);
        assert_eq!(login.details["client"], "127.0.0.1");
        assert_eq!(login.details["source"], "web1");
        assert!(
            accepted.contains(&format!("port {} ssh2", login.details["port"])),
            "{accepted}"
        );
        assert!(
            accepted.contains(&format!("ID {id} (serial {})", login.details["serial"])),
            "{accepted}"
        );
        assert!(login.details["key"].starts_with("ED25519-CERT SHA256:"));
        assert_eq!(logout.details["port"], login.details["port"]);
        assert_eq!(logout.details["how"], "disconnected");

        // A retry records nothing twice.
        let again = shipper
            .report_activity(&id, "web1", lines.clone())
            .await
            .unwrap();
        assert_eq!((again.recorded, again.duplicates), (0, 2), "{again:?}");

        // Another request's login refuses the whole post, naming the line.
        let mut forged = vec![
            "noise".to_owned(),
            accepted.replace(&id, "req_someone_else"),
        ];
        forged.extend(lines.clone());
        match shipper.report_activity(&id, "web2", forged).await {
            Err(ClientError::Api {
                status: 400,
                field,
                message,
                ..
            }) => {
                assert_eq!(field.as_deref(), Some("lines[1]"), "{message}");
                assert!(message.contains("`req_someone_else`"), "{message}");
            }
            other => panic!("a forged login was not refused: {other:?}"),
        }
        let ssh_events = client.explain(&id).await.unwrap().history;
        assert_eq!(
            ssh_events
                .iter()
                .filter(|h| h.action.starts_with("ssh_"))
                .count(),
            2
        );

        // Only reporters and admins post.
        match client.report_activity(&id, "web1", lines).await {
            Err(ClientError::Api {
                status: 403,
                message,
                ..
            }) => {
                assert!(message.contains("needs admin or reporter"), "{message}");
            }
            other => panic!("alice posted activity: {other:?}"),
        }
        server.shutdown().await;
    })
    .await;
}

/// An extension issues a new certificate valid until the new expiry, which
/// logs in; the one it replaces is refused (the connector lists a
/// superseded certificate in the KRL), and `show` hands out the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_issues_a_certificate_valid_until_the_new_expiry() {
    let Some(tools) = OpenSsh::find() else { return };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = boot(dir.path(), "").await.unwrap();
        let sshd = sshd_trusting_the_ca(&tools, dir.path());
        let key = tools.new_key(&dir.path().join("id_alice"));
        let id = request(&client, Some(key.public.clone())).await.id;
        let active = active_with_certificate(&client, &id).await;
        let old_cert = dir.path().join("old-cert.pub");
        std::fs::write(
            &old_cert,
            format!("{}\n", active.certificate.clone().unwrap()),
        )
        .unwrap();
        let (_, old_to) = tools.validity(&old_cert);
        assert_eq!(old_to, active.expires_at.clone().unwrap()[..19]);

        client
            .act(&id, &extend("20m", "the deploy runs long"))
            .await
            .unwrap();
        let extended = wait_for_extension(&client, &id, "extended").await;
        assert_eq!(extended.duration_seconds, 30 * 60);
        let new_certificate = extended.certificate.clone().unwrap();
        assert_ne!(Some(&new_certificate), active.certificate.as_ref());
        let cert = key.write_certificate(&new_certificate);
        let (_, new_to) = tools.validity(&cert);
        assert_eq!(new_to, extended.expires_at.clone().unwrap()[..19]);
        assert!(new_to > old_to, "{new_to} is not after {old_to}");
        sshd.assert_logs_in(&key, &cert, "the extended certificate refused");
        // The old certificate no longer counts.
        std::fs::copy(&old_cert, &cert).unwrap();
        sshd.assert_refused(&key, &cert, "the superseded certificate", "revoked by file");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_public_key_fails_naming_the_field() {
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = boot(dir.path(), "").await.unwrap();
        let created = request(&client, None).await;
        let failed = until(Duration::from_secs(15), "the grant to fail", || async {
            let r = client.get_request(&created.id).await.unwrap();
            assert_ne!(r.state, "active", "granted without a public key");
            (r.state == "failed").then_some(r)
        })
        .await;
        let reason = failed.end_reason.unwrap_or_default();
        assert!(reason.contains("`public_key`"), "{reason}");
        assert_eq!(failed.certificate, None);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_key_that_cannot_be_loaded_stops_the_start_naming_the_connector() {
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = dir.path().join("not-a-key");
        std::fs::write(&ca_key, "this is not an OpenSSH private key\n").unwrap();
        // Owner-only, so it is refused for what it holds, not its mode.
        std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        match boot(dir.path(), &format!("ca_key = \"{}\"", ca_key.display())).await {
            Ok(_) => panic!("the server started with an unreadable CA key"),
            Err(e @ StartError::Connector { .. }) => {
                let shown = e.to_string();
                assert!(shown.starts_with("connector `ssh`: "), "{shown}");
                assert!(
                    shown.contains(&format!("`{}`", ca_key.display())),
                    "{shown}"
                );
            }
            Err(other) => panic!("unexpected start error: {other}"),
        }
    })
    .await;
}
