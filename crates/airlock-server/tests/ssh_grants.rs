//! The whole path for SSH access: a request through the real server with an
//! `ssh_ca` connector and the requester's public key, the certificate it
//! issues logging in to a real sshd that trusts the CA, and the same
//! certificate refused once the grant is released (through the KRL the
//! connector rewrites). Needs OpenSSH (`/usr/sbin/sshd`, `ssh`,
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
use airlock_server::client::{Action, Client};
use airlock_server::config::{token_hash, Settings};
use airlock_server::server::{start, Server, StartError};
use airlock_testkit::bounded;
use airlock_testkit::sshd::{OpenSsh, Sshd, Trust};
use airlock_testkit::until;

/// No test may take longer than this, whatever sshd does.
const BOUND: Duration = Duration::from_secs(30);
/// The principal the connector certifies and sshd maps to the current user.
const PRINCIPAL: &str = "web-admin";

/// A server whose data dir is `dir`, with alice allowed `web-ssh`
/// (auto-approved, through the `ssh_ca` connector `ssh`).
async fn boot(dir: &Path, connector: &str) -> Result<(Server, Client), StartError> {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n\
         [users.alice]\ngroups = [\"ops\"]\ntoken_sha256 = \"{}\"\n\n\
         [connectors.ssh]\ntype = \"ssh_ca\"\nprincipals = [\"{PRINCIPAL}\"]\ntimeout = \"5s\"\n{connector}\n\n\
         [entitlements.web-ssh]\nrequestable_by = [\"ops\"]\nmax_duration = \"1h\"\n\
         auto_approve = true\nrequire_reason = false\nconnector = \"ssh\"\n",
        dir.display(),
        token_hash("alice-token")
    );
    let settings = Settings::parse("ssh.toml", &toml, dir).unwrap();
    let server = start(settings).await?;
    let client = Client::new(&format!("http://{}", server.addr()), "alice-token").unwrap();
    Ok((server, client))
}

async fn request(client: &Client, public_key: Option<String>) -> RequestView {
    let body = CreateRequest {
        entitlement: "web-ssh".into(),
        duration: Some(DurationInput::Seconds(600)),
        reason: String::new(),
        ticket: None,
        start_at: None,
        break_glass: false,
        public_key,
    };
    client.create_request(&body).await.unwrap()
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
