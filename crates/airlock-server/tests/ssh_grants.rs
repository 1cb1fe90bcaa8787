//! The whole path for SSH access: a request through the real server with an
//! `ssh_ca` connector and the requester's public key, the certificate it
//! issues logging in to a real sshd that trusts the CA, and the same
//! certificate refused once the grant is released (through the KRL the
//! connector rewrites). Needs OpenSSH (`/usr/sbin/sshd`, `ssh`,
//! `ssh-keygen`): skips loudly without it, and fails instead in CI
//! (`AIRLOCK_REQUIRE_SERVICES=1`).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_server::api::{CreateRequest, DurationInput, RequestView};
use airlock_server::client::{Action, Client};
use airlock_server::config::{token_hash, Settings};
use airlock_server::server::{start, Server, StartError};
use airlock_testkit::service_program;

/// No test may take longer than this, whatever sshd does.
const BOUND: Duration = Duration::from_secs(30);
/// The principal the connector certifies and sshd maps to the current user.
const PRINCIPAL: &str = "web-admin";

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(BOUND, test)
        .await
        .expect("test exceeded its time bound")
}

/// The OpenSSH programs the test drives, or `None` (after saying why).
struct Tools {
    sshd: PathBuf,
    ssh: PathBuf,
    keygen: PathBuf,
}

fn tools() -> Option<Tools> {
    Some(Tools {
        sshd: service_program("/usr/sbin/sshd")?,
        ssh: service_program("ssh")?,
        keygen: service_program("ssh-keygen")?,
    })
}

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

async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// `ssh-keygen -t ed25519` into `path` (and `path.pub`).
fn keygen(tools: &Tools, path: &Path) {
    let status = Command::new(&tools.keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "airlock-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed: {status}");
}

fn current_unix_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real sshd on 127.0.0.1 trusting `ca_pub`, mapping [`PRINCIPAL`] to the
/// current user and reading `krl` on every login. Killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Sshd {
    fn start(tools: &Tools, dir: &Path, ca_pub: &Path, krl: &Path) -> Sshd {
        let dir = dir.join("sshd");
        std::fs::create_dir_all(dir.join("principals")).unwrap();
        let host_key = dir.join("host_ed25519");
        keygen(tools, &host_key);
        std::fs::write(
            dir.join("principals").join(current_unix_user()),
            format!("{PRINCIPAL}\n"),
        )
        .unwrap();
        let config = dir.join("sshd_config");
        // As in the connector's tests: `UsePAM no` makes sshd check the
        // account itself, `StrictModes no` accepts the temporary folders.
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 TrustedUserCAKeys {ca_pub}\n\
                 AuthorizedPrincipalsFile {principals}/%u\n\
                 RevokedKeys {krl}\n\
                 AuthorizedKeysFile none\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 UseDNS no\n\
                 LogLevel INFO\n",
                host_key = host_key.display(),
                pid = dir.join("sshd.pid").display(),
                ca_pub = ca_pub.display(),
                principals = dir.join("principals").display(),
                krl = krl.display(),
            ),
        )
        .unwrap();
        // sshd insists on its privilege separation directory when run as root.
        let _ = std::fs::create_dir_all("/run/sshd");

        let port = free_port();
        let mut child = Command::new(&tools.sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut sshd = Sshd { child, port, log };
        sshd.wait_until_listening();
        sshd
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits briefly for `needle` in the log: sshd may write the line just
    /// after the client has exited.
    async fn log_contains(&self, needle: &str) -> bool {
        for _ in 0..40 {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Logs in as the current user with `key` and `cert` (and nothing else)
    /// and runs `true`; `Err` carries ssh's stderr.
    async fn login(&self, tools: &Tools, key: &Path, cert: &Path) -> Result<(), String> {
        let mut command = tokio::process::Command::new(&tools.ssh);
        command
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(key)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", current_unix_user()))
            .arg("true")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(10), command.output())
            .await
            .expect("ssh did not finish within 10 s")
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_certificate_logs_in_until_the_grant_is_released() {
    let Some(tools) = tools() else { return };
    bounded(async {
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
        let sshd = Sshd::start(&tools, dir.path(), &ca_pub, &krl);

        let key = dir.path().join("id_alice");
        keygen(&tools, &key);
        let public = std::fs::read_to_string(dir.path().join("id_alice.pub")).unwrap();
        let created = request(&client, Some(public.trim().to_owned())).await;
        let id = created.id.clone();
        let active = until("the grant and its certificate", || async {
            let r = client.get_request(&id).await.unwrap();
            assert!(
                !matches!(r.state.as_str(), "failed" | "denied"),
                "{}: {:?}",
                r.state,
                r.end_reason
            );
            (r.state == "active" && r.certificate.is_some()).then_some(r)
        })
        .await;
        let certificate = active.certificate.unwrap();
        assert!(
            certificate.starts_with("ssh-ed25519-cert-v01@openssh.com "),
            "{certificate}"
        );
        let cert = dir.path().join("id_alice-cert.pub");
        std::fs::write(&cert, format!("{certificate}\n")).unwrap();

        sshd.login(&tools, &key, &cert)
            .await
            .unwrap_or_else(|e| panic!("login refused: {e}\nsshd:\n{}", sshd.log()));
        assert!(
            sshd.log_contains(&format!("ID {id} (serial")).await,
            "sshd did not log the request id as the key id:\n{}",
            sshd.log()
        );

        client.act(&id, &Action::Release).await.unwrap();
        let released = until("the release to reach the KRL", || async {
            let r = client.get_request(&id).await.unwrap();
            r.deprovisioned_at.is_some().then_some(r)
        })
        .await;
        assert_eq!(released.state, "released");

        let refused = sshd.login(&tools, &key, &cert).await;
        assert!(refused.is_err(), "a released certificate still logs in");
        assert!(
            sshd.log_contains("revoked by file").await,
            "sshd did not refuse it through the KRL:\n{}",
            sshd.log()
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_public_key_fails_naming_the_field() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = boot(dir.path(), "").await.unwrap();
        let created = request(&client, None).await;
        let failed = until("the grant to fail", || async {
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
    bounded(async {
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
