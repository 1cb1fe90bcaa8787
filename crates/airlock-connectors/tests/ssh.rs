//! Runs the SSH certificate authority against a real `sshd` on loopback and
//! checks its KRL with the real `ssh-keygen`, because the risks live in what
//! OpenSSH accepts: a certificate sshd trusts for the mapped account (and for
//! no other), a key revocation list in OpenSSH's binary format that sshd
//! parses and enforces (a KRL it cannot read makes it refuse every key), and
//! expiry that holds without Airlock.
//!
//! The rules every connector follows (grant and revoke twice, revoke of an
//! absent grant, access restored after the KRL is lost, retryable while the
//! state is locked, refused after revoke and after expiry, holders after each
//! step) run in the shared suite, `tests/compliance.rs` (`ssh_ca_complies`);
//! this file keeps what only the SSH certificate authority promises.
//!
//! Each test that needs sshd starts its own (`airlock_testkit::sshd`) on a
//! free port with its own CA, KRL and principals file, and kills it when
//! done. Tests that need a program
//! that is missing skip loudly, and fail in CI (`AIRLOCK_REQUIRE_SERVICES=1`).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with the value in the message"
)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_connectors::ssh::{serial_for, Krl, SshCaSettings, SshCertificateAuthority};
use airlock_connectors::{Connector, ConnectorError, GrantSpec, Holding};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use airlock_testkit::sshd::{OpenSsh, Sshd, Trust, UserKey};
use airlock_testkit::{bounded, service_program};
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};

/// No test may take longer than this, whatever sshd does.
const BOUND: Duration = Duration::from_secs(25);
/// The principal the test's `AuthorizedPrincipalsFile` maps to the current
/// unix user.
const MAPPED: &str = "web-admin";

fn keygen() -> Option<PathBuf> {
    service_program("ssh-keygen")
}

/// Now, by the wall clock sshd compares certificates with.
fn now() -> Timestamp {
    Timestamp::from_unix_millis(airlock_testkit::wall_clock_unix_millis())
}

fn in_an_hour() -> Timestamp {
    now().plus(Duration::from_secs(3600))
}

fn fresh_request_id() -> RequestId {
    RequestId::from_entropy(rand::random())
}

fn settings(dir: &Path, principals: &[&str]) -> SshCaSettings {
    SshCaSettings::new(
        dir.join("ca/ca_key"),
        principals.iter().map(|p| (*p).to_owned()).collect(),
        dir.join("revoked.krl"),
        dir.join("state"),
    )
}

fn new_ca(dir: &Path, principals: &[&str]) -> SshCertificateAuthority {
    SshCertificateAuthority::load_or_generate(settings(dir, principals)).unwrap()
}

fn spec(request_id: &RequestId, expires_at: Timestamp, public_key: &str, claim: u64) -> GrantSpec {
    GrantSpec {
        request_id: request_id.clone(),
        user: UserId::parse("alice").unwrap(),
        entitlement: EntitlementId::parse("web-ssh").unwrap(),
        expires_at,
        claim,
        public_key: Some(public_key.to_owned()),
    }
}

/// The same grant under the next claim: what a later revoke of it carries.
fn next_claim(granted: &GrantSpec) -> GrantSpec {
    GrantSpec {
        claim: granted.claim + 1,
        ..granted.clone()
    }
}

/// A requester's key pair on disk, made in process so that tests without
/// OpenSSH installed have keys too.
fn user_key(dir: &Path, name: &str) -> UserKey {
    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
    let path = dir.join(name);
    // ssh-key writes private keys with mode 0600, which ssh insists on.
    key.write_openssh_file(&path, LineEnding::LF).unwrap();
    UserKey {
        path,
        public: key.public_key().to_openssh().unwrap(),
    }
}

/// What most tests start from: a temporary folder with a CA for [`MAPPED`]
/// (its KRL at `krl`) and alice's key.
struct Fixture {
    dir: tempfile::TempDir,
    krl: PathBuf,
    ca: SshCertificateAuthority,
    key: UserKey,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            krl: dir.path().join("revoked.krl"),
            ca: new_ca(dir.path(), &[MAPPED]),
            key: user_key(dir.path(), "id_alice"),
            dir,
        }
    }

    /// A real sshd trusting this CA, mapping [`MAPPED`] to the current user
    /// and reading this KRL on every login.
    fn start_sshd(&self, tools: &OpenSsh) -> Sshd {
        let ca_pub = self.dir.path().join("trusted_user_ca.pub");
        std::fs::write(&ca_pub, format!("{}\n", self.ca.ca_public_key())).unwrap();
        let trust = Trust {
            ca_public_key: &ca_pub,
            principal: MAPPED,
            krl: &self.krl,
        };
        Sshd::start(tools, self.dir.path(), &trust)
    }
}

async fn grant_cert(ca: &SshCertificateAuthority, spec: &GrantSpec) -> String {
    let granted = ca.grant(spec).await.unwrap();
    assert!(
        granted.credential.is_none(),
        "a certificate grant has no secret"
    );
    granted
        .certificate
        .expect("a grant returns the certificate")
}

/// Grants `request_id` to `key` (claim 1) until `expires_at` and writes the
/// certificate where ssh looks for it.
async fn certify(
    ca: &SshCertificateAuthority,
    key: &UserKey,
    request_id: &RequestId,
    expires_at: Timestamp,
) -> PathBuf {
    key.write_certificate(&grant_cert(ca, &spec(request_id, expires_at, &key.public, 1)).await)
}

/// `ssh-keygen -Q -f KRL CERT`: `REVOKED` or `ok` as the real tool says it.
fn krl_says(keygen: &Path, krl: &Path, cert: &Path) -> &'static str {
    let out = Command::new(keygen)
        .arg("-Q")
        .arg("-f")
        .arg(krl)
        .arg(cert)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.trim_end().ends_with(": REVOKED") && out.status.code() == Some(1) {
        "REVOKED"
    } else if stdout.trim_end().ends_with(": ok") && out.status.success() {
        "ok"
    } else {
        panic!("ssh-keygen -Q failed ({}): {stdout}{stderr}", out.status)
    }
}

async fn holders(ca: &SshCertificateAuthority) -> Vec<Holding> {
    ca.holders()
        .await
        .unwrap()
        .expect("the CA always knows its holders")
}

fn holding(request_id: &RequestId) -> Holding {
    Holding {
        principal: request_id.as_str().to_owned(),
        request_id: Some(request_id.clone()),
    }
}

#[tokio::test]
async fn a_granted_certificate_logs_in_and_sshd_logs_the_request_id() {
    let Some(tools) = OpenSsh::find() else { return };
    bounded(BOUND, async {
        let fx = Fixture::new();
        fx.ca.health().await.unwrap();
        let sshd = fx.start_sshd(&tools);
        let id = fresh_request_id();

        let certificate = grant_cert(&fx.ca, &spec(&id, in_an_hour(), &fx.key.public, 1)).await;
        assert!(
            certificate.starts_with("ssh-ed25519-cert-v01@openssh.com "),
            "{certificate}"
        );
        let cert = fx.key.write_certificate(&certificate);
        sshd.assert_logs_in(&fx.key, &cert, "login refused");
        sshd.assert_logged(&format!("ID {id} (serial {})", serial_for(&id, 1)));
        assert_eq!(holders(&fx.ca).await, [holding(&id)]);

        // The key alone, without the certificate, is not enough.
        let bare = fx.dir.path().join("no-such-cert.pub");
        assert!(sshd.login(&fx.key, &bare).is_err());
    })
    .await;
}

#[tokio::test]
async fn a_certificate_for_an_unmapped_principal_is_refused() {
    let Some(tools) = OpenSsh::find() else { return };
    bounded(BOUND, async {
        let fx = Fixture::new();
        // Same CA key, another principal: sshd trusts the signature but the
        // principals file maps only `web-admin` to this account.
        let mut other = settings(fx.dir.path(), &["db-admin"]);
        other.state_dir = fx.dir.path().join("state-other");
        other.krl_path = fx.dir.path().join("other.krl");
        let unmapped = SshCertificateAuthority::load_or_generate(other).unwrap();
        assert_eq!(fx.ca.ca_public_key(), unmapped.ca_public_key());
        let sshd = fx.start_sshd(&tools);

        let cert = certify(&unmapped, &fx.key, &fresh_request_id(), in_an_hour()).await;
        sshd.assert_refused(
            &fx.key,
            &cert,
            "an unmapped principal",
            "Certificate does not contain an authorized principal",
        );

        // The control: the same key certified for the mapped principal works.
        let cert = certify(&fx.ca, &fx.key, &fresh_request_id(), in_an_hour()).await;
        sshd.assert_logs_in(&fx.key, &cert, "login refused");
    })
    .await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_by_sshd_and_listed_in_the_krl() {
    let Some(tools) = OpenSsh::find() else { return };
    bounded(BOUND, async {
        let fx = Fixture::new();
        let sshd = fx.start_sshd(&tools);
        let krl = &fx.krl;

        let alice = &fx.key;
        let alice_spec = spec(&fresh_request_id(), in_an_hour(), &alice.public, 1);
        let alice_cert = alice.write_certificate(&grant_cert(&fx.ca, &alice_spec).await);
        let carol = user_key(fx.dir.path(), "id_carol");
        let carol_id = fresh_request_id();
        let carol_cert = certify(&fx.ca, &carol, &carol_id, in_an_hour()).await;
        sshd.assert_logs_in(alice, &alice_cert, "login refused before revoke");
        assert_eq!(krl_says(&tools.keygen, krl, &alice_cert), "ok");

        let revoke = next_claim(&alice_spec);
        fx.ca.revoke(&revoke).await.unwrap();
        assert_eq!(krl_says(&tools.keygen, krl, &alice_cert), "REVOKED");
        sshd.assert_refused(
            alice,
            &alice_cert,
            "a revoked certificate",
            "revoked by file",
        );

        // Only that certificate: sshd still parses the KRL and lets others in.
        assert_eq!(krl_says(&tools.keygen, krl, &carol_cert), "ok");
        sshd.assert_logs_in(&carol, &carol_cert, "an unrevoked certificate was refused");
        assert_eq!(holders(&fx.ca).await, [holding(&carol_id)]);

        // Revoke is idempotent.
        fx.ca.revoke(&revoke).await.unwrap();
        assert_eq!(krl_says(&tools.keygen, krl, &alice_cert), "REVOKED");
        assert_eq!(krl_says(&tools.keygen, krl, &carol_cert), "ok");
    })
    .await;
}

#[tokio::test]
async fn remove_holder_revokes_a_certificate_no_request_explains() {
    let Some(tools) = OpenSsh::find() else { return };
    bounded(BOUND, async {
        let fx = Fixture::new();
        let sshd = fx.start_sshd(&tools);
        let stray = fresh_request_id();
        let cert = certify(&fx.ca, &fx.key, &stray, in_an_hour()).await;
        sshd.assert_logs_in(&fx.key, &cert, "login refused before removal");
        assert_eq!(holders(&fx.ca).await, [holding(&stray)]);

        fx.ca.remove_holder(&holding(&stray)).await.unwrap();
        assert!(holders(&fx.ca).await.is_empty());
        assert_eq!(krl_says(&tools.keygen, &fx.krl, &cert), "REVOKED");
        sshd.assert_refused(&fx.key, &cert, "a removed holder", "revoked by file");

        // Idempotent, and a holder this CA never issued to is simply absent.
        fx.ca.remove_holder(&holding(&stray)).await.unwrap();
        fx.ca
            .remove_holder(&holding(&fresh_request_id()))
            .await
            .unwrap();
        // Only a grant from a newer claim issues again.
        let late = spec(&stray, in_an_hour(), &fx.key.public, 1);
        fx.ca.grant(&late).await.unwrap();
        assert!(
            holders(&fx.ca).await.is_empty(),
            "a stale claim undid the removal"
        );
        // A principal that is not a request id names no state file.
        let odd = Holding {
            principal: "../records/x".to_owned(),
            request_id: None,
        };
        assert!(matches!(
            fx.ca.remove_holder(&odd).await,
            Err(ConnectorError::Permanent(_))
        ));
    })
    .await;
}

/// A certificate ending at `expires_at` without Airlock (sshd refuses it by
/// its own clock) is one of the shared rules in `tests/compliance.rs`.
#[tokio::test]
async fn a_grant_whose_end_has_passed_issues_nothing() {
    bounded(BOUND, async {
        let Fixture {
            dir: _dir, ca, key, ..
        } = Fixture::new();
        let err = ca
            .grant(&spec(
                &fresh_request_id(),
                now().minus(Duration::from_secs(1)),
                &key.public,
                1,
            ))
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.message().contains("expired"), "{err}");
        assert_eq!(holders(&ca).await, []);
    })
    .await;
}

#[tokio::test]
async fn grant_is_idempotent_and_revoking_an_unknown_request_succeeds() {
    let Some(keygen) = keygen() else { return };
    bounded(BOUND, async {
        let Fixture { dir, krl, ca, key } = Fixture::new();
        let id = fresh_request_id();
        let expires_at = in_an_hour();

        let first = grant_cert(&ca, &spec(&id, expires_at, &key.public, 1)).await;
        let again = grant_cert(&ca, &spec(&id, expires_at, &key.public, 1)).await;
        assert_eq!(first, again, "a repeated grant issued a second certificate");

        // Another key under the claim that already has a certificate would
        // need a second certificate with the same serial: refused.
        let other = user_key(dir.path(), "id_other");
        let err = ca
            .grant(&spec(&id, expires_at, &other.public, 1))
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.message().contains(&format!("`{id}`")), "{err}");

        // A retry under a newer claim (the lease ran out) finds it too.
        let retried = grant_cert(&ca, &spec(&id, expires_at, &key.public, 2)).await;
        assert_eq!(first, retried);
        assert_eq!(holders(&ca).await, [holding(&id)]);
        let first_cert = key.write_certificate(&first);
        assert_eq!(krl_says(&keygen, &krl, &first_cert), "ok");

        // A newer claim with another key replaces the certificate: the old
        // one is revoked, so the request never has two live ones.
        let replaced = grant_cert(&ca, &spec(&id, expires_at, &other.public, 3)).await;
        assert_ne!(replaced, first);
        let replaced_cert = other.write_certificate(&replaced);
        assert_eq!(krl_says(&keygen, &krl, &first_cert), "REVOKED");
        assert_eq!(krl_says(&keygen, &krl, &replaced_cert), "ok");
        assert_eq!(holders(&ca).await, [holding(&id)]);

        // Revoking what was never granted succeeds, twice, and changes
        // nothing for others.
        let unknown = spec(&fresh_request_id(), expires_at, &key.public, 5);
        ca.revoke(&unknown).await.unwrap();
        ca.revoke(&unknown).await.unwrap();
        assert_eq!(krl_says(&keygen, &krl, &replaced_cert), "ok");
        assert_eq!(holders(&ca).await, [holding(&id)]);
        // An unknown request whose grant has ended leaves no record: only
        // the granted request and the unknown live one are on file.
        let ended = spec(
            &fresh_request_id(),
            now().minus(Duration::from_secs(60)),
            &key.public,
            1,
        );
        ca.revoke(&ended).await.unwrap();
        let records = std::fs::read_dir(dir.path().join("state/requests"))
            .unwrap()
            .count();
        assert_eq!(records, 2);
        ca.health().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_late_grant_cannot_undo_a_revoke_but_a_newer_claim_gets_a_new_serial() {
    let Some(keygen) = keygen() else { return };
    bounded(BOUND, async {
        let Fixture { dir, krl, ca, key } = Fixture::new();
        let id = fresh_request_id();
        let expires_at = in_an_hour();

        let first = certify(&ca, &key, &id, expires_at).await;
        ca.revoke(&spec(&id, expires_at, &key.public, 2))
            .await
            .unwrap();
        assert_eq!(krl_says(&keygen, &krl, &first), "REVOKED");

        // A replica that stalled under claim 1 (or 2) calls grant late: it is
        // acknowledged without issuing anything, and the revoke stands.
        for late in [1, 2] {
            let granted = ca
                .grant(&spec(&id, expires_at, &key.public, late))
                .await
                .unwrap();
            assert_eq!(granted.certificate, None, "claim {late}");
            assert_eq!(krl_says(&keygen, &krl, &first), "REVOKED");
            assert_eq!(holders(&ca).await, [], "claim {late}");
        }

        // A newer claim may grant again: a new certificate with a new serial,
        // while the revoked one stays revoked.
        let second_line = grant_cert(&ca, &spec(&id, expires_at, &key.public, 3)).await;
        let second_dir = dir.path().join("second");
        std::fs::create_dir_all(&second_dir).unwrap();
        let second = second_dir.join("cert.pub");
        std::fs::write(&second, format!("{second_line}\n")).unwrap();
        assert_eq!(krl_says(&keygen, &krl, &first), "REVOKED");
        assert_eq!(krl_says(&keygen, &krl, &second), "ok");
        assert_ne!(serial_for(&id, 1), serial_for(&id, 3));
        assert_eq!(holders(&ca).await, [holding(&id)]);

        // A revoke of a request with nothing on file (state lost) revokes its
        // key id, and then no claim may grant it again.
        let lost = fresh_request_id();
        ca.revoke(&spec(&lost, expires_at, &key.public, 4))
            .await
            .unwrap();
        let err = ca
            .grant(&spec(&lost, expires_at, &key.public, 9))
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.message().contains(&format!("`{lost}`")), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_bad_public_key_is_a_permanent_error_naming_the_field() {
    bounded(BOUND, async {
        // `_dir` (not `_`) keeps the folder until the test ends.
        let Fixture {
            dir: _dir, ca, key, ..
        } = Fixture::new();
        let id = fresh_request_id();
        let certificate = grant_cert(&ca, &spec(&id, in_an_hour(), &key.public, 1)).await;

        let mut missing = spec(&fresh_request_id(), in_an_hour(), "", 1);
        missing.public_key = None;
        let garbage = spec(&fresh_request_id(), in_an_hour(), "ssh-ed25519 AAAA!!!", 1);
        let a_certificate = spec(&fresh_request_id(), in_an_hour(), &certificate, 1);
        let the_ca_itself = spec(&fresh_request_id(), in_an_hour(), ca.ca_public_key(), 1);
        for (what, spec) in [
            ("missing", missing),
            ("garbage", garbage),
            ("a certificate", a_certificate),
            ("the CA's key", the_ca_itself),
        ] {
            let err = ca.grant(&spec).await.unwrap_err();
            assert!(!err.is_retryable(), "{what}: {err}");
            assert!(err.message().contains("`public_key`"), "{what}: {err}");
        }
        assert_eq!(holders(&ca).await, [holding(&id)]);
    })
    .await;
}

#[tokio::test]
async fn bad_settings_are_rejected_at_construction_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(SshCaSettings, &str)> = vec![
        (settings(dir.path(), &["web admin"]), "`web admin`"),
        (settings(dir.path(), &["ok", "root;rm"]), "`root;rm`"),
        (settings(dir.path(), &[]), "at least one principal"),
        (
            SshCaSettings {
                extensions: vec!["permit-anything".to_owned()],
                ..settings(dir.path(), &[MAPPED])
            },
            "`permit-anything`",
        ),
        (
            SshCaSettings {
                source_address: Some("10.0.0.0/8,nowhere".to_owned()),
                ..settings(dir.path(), &[MAPPED])
            },
            "`nowhere`",
        ),
        (
            SshCaSettings {
                call_timeout: Duration::ZERO,
                ..settings(dir.path(), &[MAPPED])
            },
            "call_timeout",
        ),
    ];
    for (settings, named) in cases {
        // `validate` (what config loading calls) finds the same problem
        // without touching the filesystem, and names the field.
        let invalid = settings.validate().unwrap_err();
        assert!(
            ["principals", "extensions", "source_address", "call_timeout"].contains(&invalid.field),
            "{invalid:?}"
        );
        let err = SshCertificateAuthority::load_or_generate(settings).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.message().contains(named), "{named}: {err}");
        assert_eq!(err.message(), invalid.message);
    }
    assert_eq!(settings(dir.path(), &[MAPPED]).validate(), Ok(()));
    // None of them got as far as making a key.
    assert!(!dir.path().join("ca/ca_key").exists());
}

#[tokio::test]
async fn state_survives_a_restart_so_a_new_instance_can_revoke() {
    let Some(keygen) = keygen() else { return };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let krl = dir.path().join("revoked.krl");
        let key = user_key(dir.path(), "id_alice");
        let id = fresh_request_id();
        let granted = spec(&id, in_an_hour(), &key.public, 1);
        let cert = {
            let before = new_ca(dir.path(), &[MAPPED]);
            key.write_certificate(&grant_cert(&before, &granted).await)
        };

        let after = new_ca(dir.path(), &[MAPPED]);
        assert_eq!(holders(&after).await, [holding(&id)]);
        assert_eq!(krl_says(&keygen, &krl, &cert), "ok");
        after.revoke(&next_claim(&granted)).await.unwrap();
        assert_eq!(krl_says(&keygen, &krl, &cert), "REVOKED");
        assert_eq!(holders(&after).await, []);

        // And the revocation outlives the next restart.
        drop(after);
        let again = new_ca(dir.path(), &[MAPPED]);
        assert_eq!(krl_says(&keygen, &krl, &cert), "REVOKED");
        assert_eq!(holders(&again).await, []);

        // Were the state lost, a revoke would still reach the certificate:
        // by its key id, which is the request id.
        let other_id = fresh_request_id();
        let other_spec = spec(&other_id, in_an_hour(), &key.public, 1);
        let other_cert = key.write_certificate(&grant_cert(&again, &other_spec).await);
        drop(again);
        let mut amnesiac = settings(dir.path(), &[MAPPED]);
        amnesiac.state_dir = dir.path().join("empty-state");
        let amnesiac = SshCertificateAuthority::load_or_generate(amnesiac).unwrap();
        assert_eq!(krl_says(&keygen, &krl, &other_cert), "ok");
        amnesiac.revoke(&next_claim(&other_spec)).await.unwrap();
        assert_eq!(krl_says(&keygen, &krl, &other_cert), "REVOKED");
    })
    .await;
}

#[tokio::test]
async fn the_ca_key_is_created_0600_once_and_then_reused() {
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("ca/ca_key");
        assert!(!key_path.exists());
        let first = new_ca(dir.path(), &[MAPPED]);
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        let written_pub = std::fs::read_to_string(dir.path().join("ca/ca_key.pub")).unwrap();
        assert_eq!(written_pub.trim(), first.ca_public_key());
        assert!(first.ca_public_key().starts_with("ssh-ed25519 "));
        let key_bytes = std::fs::read(&key_path).unwrap();

        let second = new_ca(dir.path(), &[MAPPED]);
        assert_eq!(second.ca_public_key(), first.ca_public_key());
        assert_eq!(std::fs::read(&key_path).unwrap(), key_bytes);
        // The private key never shows in debug output.
        let shown = format!("{second:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains("SHA256:"), "{shown}");

        // A key others can read is refused, naming the file.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err =
            SshCertificateAuthority::load_or_generate(settings(dir.path(), &[MAPPED])).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.message().contains(&format!("`{}`", key_path.display())),
            "{err}"
        );
        assert!(err.message().contains("644"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_ca_key_that_is_not_ed25519_or_is_encrypted_is_refused() {
    let Some(keygen) = keygen() else { return };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            ("ecdsa", &["-t", "ecdsa", "-N", ""][..]),
            ("encrypted", &["-t", "ed25519", "-N", "a passphrase"][..]),
        ] {
            let key_path = dir.path().join(name);
            let status = Command::new(&keygen)
                .arg("-q")
                .args(args)
                .arg("-f")
                .arg(&key_path)
                .status()
                .unwrap();
            assert!(status.success());
            let mut s = settings(dir.path(), &[MAPPED]);
            s.ca_key_path = key_path.clone();
            let err = SshCertificateAuthority::load_or_generate(s).unwrap_err();
            assert!(!err.is_retryable(), "{name}: {err}");
            assert!(
                err.message().contains(&format!("`{}`", key_path.display())),
                "{name}: {err}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn health_fails_while_the_krl_is_missing_and_a_revoke_writes_it_back() {
    bounded(BOUND, async {
        let Fixture {
            dir: _dir,
            krl,
            ca,
            key,
        } = Fixture::new();
        ca.health().await.unwrap();
        std::fs::remove_file(&krl).unwrap();
        let err = ca.health().await.unwrap_err();
        assert!(
            err.message().contains(&format!("`{}`", krl.display())),
            "{err}"
        );
        ca.revoke(&spec(&fresh_request_id(), in_an_hour(), &key.public, 1))
            .await
            .unwrap();
        ca.health().await.unwrap();
    })
    .await;
}

/// Random lists, encoded by Airlock and read back by OpenSSH's own KRL parser
/// (`ssh-keygen -Q -l` prints what it loaded).
#[tokio::test]
async fn ssh_keygen_reads_back_exactly_what_the_krl_encoder_wrote() {
    let Some(keygen) = keygen() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
    let ca_fingerprint = ca.public_key().fingerprint(HashAlg::Sha256).to_string();
    let path = dir.path().join("fuzz.krl");
    for round in 0..25 {
        let mut krl = Krl::new(ca.public_key().to_bytes().unwrap());
        let mut serials = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for _ in 0..(round % 7) * 5 {
            // Half close together (OpenSSH merges neighbours into ranges),
            // half anywhere in the 64-bit space.
            let serial: u64 = if rand::random::<bool>() {
                rand::random::<u64>() % 64
            } else {
                rand::random()
            };
            krl.revoke_serial(serial);
            if serial != 0 {
                serials.insert(serial);
            }
        }
        for _ in 0..round % 5 {
            let id = RequestId::from_entropy(rand::random()).to_string();
            krl.revoke_key_id(&id);
            ids.insert(id);
        }
        std::fs::write(&path, krl.encode(round, 1_700_000_000)).unwrap();
        let out = Command::new(&keygen)
            .arg("-Q")
            .arg("-l")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "round {round}: ssh-keygen refused the KRL: {}{dump}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dump.contains(&format!("# KRL version {round}\n")), "{dump}");
        let mut read_serials = BTreeSet::new();
        let mut read_ids = BTreeSet::new();
        for line in dump.lines() {
            if let Some(range) = line.strip_prefix("serial: ") {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                let (lo, hi): (u64, u64) = (lo.parse().unwrap(), hi.parse().unwrap());
                read_serials.extend(lo..=hi);
            } else if let Some(id) = line.strip_prefix("id: ") {
                read_ids.insert(id.to_owned());
            } else if let Some(ca_line) = line.strip_prefix("# CA key ") {
                assert_eq!(ca_line, format!("ssh-ed25519 {ca_fingerprint}"));
            }
        }
        assert_eq!(read_serials, serials, "round {round}:\n{dump}");
        assert_eq!(read_ids, ids, "round {round}:\n{dump}");
    }
}
