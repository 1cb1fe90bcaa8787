//! Grants SSH access by signing short-lived OpenSSH user certificates. Servers
//! trust Airlock's certificate authority once (`TrustedUserCAKeys`) instead of
//! Airlock editing `authorized_keys` on every host, and a certificate ends by
//! itself at the grant's `expires_at`, so access ends on time even while
//! Airlock is down. Revocation before then goes through a key revocation list
//! (KRL) that sshd reads on every login (`RevokedKeys`).
//!
//! sshd cannot be asked who holds a certificate, so the connector keeps its own
//! record of what it issued (one JSON file per request in `state_dir`). That
//! record is the source of `holders()` and of the KRL, which is rebuilt from it
//! on every call: a crash between the two writes heals on the next call.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_core::RequestId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ssh_key::certificate::{self, CertType};
use ssh_key::private::Ed25519Keypair;
use ssh_key::rand_core::{OsRng, RngCore};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::keyfile::{self, parent_dir, sibling, write_new_file};
use crate::{Connector, ConnectorError, GrantSpec, Granted, Holding};

/// The extensions `ssh-keygen -s` puts in a user certificate by default: what
/// a user expects an ordinary login to allow.
pub const DEFAULT_EXTENSIONS: [&str; 5] = [
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// Extensions OpenSSH itself understands; others must be `name@domain`.
const KNOWN_EXTENSIONS: [&str; 6] = [
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// How far before the clock read a certificate starts, so a server whose
/// clock is a little behind Airlock's accepts it at once.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How long after a certificate's `valid_before` its record (and KRL entries)
/// are kept. Past `valid_before` sshd refuses the certificate by itself, but
/// a server whose clock is behind still accepts it for a while, so revoked
/// serials stay listed for a generous margin before they are pruned.
const PRUNE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Where per-request records live under `state_dir`.
const RECORDS_DIR: &str = "requests";
/// Taken (with `flock`) around every read-modify-write of the state and the
/// KRL, so concurrent calls in one process or several cannot interleave.
const LOCK_FILE: &str = ".lock";

/// What a KRL written by Airlock says about itself (`ssh-keygen -Q -l`).
const KRL_COMMENT: &str = "written by airlock; rewritten on every change";

/// Configuration for an [`SshCertificateAuthority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCaSettings {
    /// The CA's private key: OpenSSH format, ed25519, unencrypted, readable
    /// by its owner only. Created (mode 0600, with a `.pub` beside it) when
    /// the file does not exist.
    pub ca_key_path: PathBuf,
    /// The principals every certificate is valid for (e.g. `web-admin`);
    /// servers map them to accounts with `AuthorizedPrincipalsFile`.
    pub principals: Vec<String>,
    /// Certificate extensions (default [`DEFAULT_EXTENSIONS`]); an empty list
    /// gives a certificate that can run commands but gets no pty, forwarding
    /// or `~/.ssh/rc`.
    pub extensions: Vec<String>,
    /// The `source-address` critical option: comma-separated addresses or
    /// CIDR blocks the certificate may be used from.
    pub source_address: Option<String>,
    /// Where the key revocation list is written, for sshd's `RevokedKeys`.
    pub krl_path: PathBuf,
    /// Where issued certificates are recorded, so revoke and holders survive
    /// a restart. Keep it (and back it up) with the CA key.
    pub state_dir: PathBuf,
    /// Upper bound on one call.
    pub call_timeout: Duration,
}

impl SshCaSettings {
    /// Settings with the default extensions, no `source-address` and a 10 s
    /// call timeout.
    pub fn new(
        ca_key_path: impl Into<PathBuf>,
        principals: Vec<String>,
        krl_path: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            ca_key_path: ca_key_path.into(),
            principals,
            extensions: DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
            source_address: None,
            krl_path: krl_path.into(),
            state_dir: state_dir.into(),
            call_timeout: Duration::from_secs(10),
        }
    }

    /// Checks the principals, extensions, `source_address` and call timeout
    /// without touching the filesystem, so a config loader can refuse bad
    /// settings before anything is created. [`SshCertificateAuthority::load_or_generate`]
    /// makes the same checks.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.check().map(|_| ())
    }

    fn check(&self) -> Result<Checked, InvalidSetting> {
        let at = |field: &'static str| {
            move |e: ConnectorError| InvalidSetting {
                field,
                message: e.message().to_owned(),
            }
        };
        let principals = parse_principals(&self.principals).map_err(at("principals"))?;
        let extensions = parse_extensions(&self.extensions).map_err(at("extensions"))?;
        let source_address = self
            .source_address
            .as_deref()
            .map(parse_source_address)
            .transpose()
            .map_err(at("source_address"))?;
        if self.call_timeout.is_zero() {
            return Err(InvalidSetting {
                field: "call_timeout",
                message: "ssh ca call_timeout must be more than zero".to_owned(),
            });
        }
        Ok(Checked {
            principals,
            extensions,
            source_address,
        })
    }
}

/// A setting of [`SshCaSettings`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSetting {
    /// The `SshCaSettings` field at fault: `principals`, `extensions`,
    /// `source_address` or `call_timeout`.
    pub field: &'static str,
    /// What is wrong, naming the value.
    pub message: String,
}

impl From<InvalidSetting> for ConnectorError {
    fn from(e: InvalidSetting) -> Self {
        ConnectorError::Permanent(e.message)
    }
}

/// Settings as the CA uses them: checked, duplicates dropped, the
/// `source-address` list without spaces.
struct Checked {
    principals: Vec<String>,
    extensions: Vec<String>,
    source_address: Option<String>,
}

/// Signs OpenSSH user certificates for grants and revokes them through a KRL.
#[derive(Clone)]
pub struct SshCertificateAuthority {
    inner: Arc<Inner>,
    call_timeout: Duration,
}

impl fmt::Debug for SshCertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshCertificateAuthority")
            .field("ca", &self.inner.ca_fingerprint)
            .field("principals", &self.inner.principals)
            .field("krl_path", &self.inner.krl_path)
            .field("state_dir", &self.inner.state_dir)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Everything a call needs, shared with the blocking threads that do the IO.
struct Inner {
    ca_key: PrivateKey,
    ca_public_line: String,
    ca_fingerprint: String,
    principals: Vec<String>,
    extensions: Vec<String>,
    source_address: Option<String>,
    krl_path: PathBuf,
    state_dir: PathBuf,
}

impl SshCertificateAuthority {
    /// Checks the settings, loads the CA key (creating it when the file does
    /// not exist) and writes the KRL from the recorded state, so sshd finds
    /// one from the start: with `RevokedKeys` pointing at a missing file, it
    /// refuses every key. All failures are `Permanent`: they need a human.
    pub fn load_or_generate(settings: SshCaSettings) -> Result<Self, ConnectorError> {
        let Checked {
            principals,
            extensions,
            source_address,
        } = settings.check()?;
        let records = settings.state_dir.join(RECORDS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&records)
            .map_err(|e| permanent_io("create the state directory", &records, &e))?;

        let ca_key = load_or_generate_key(&settings.ca_key_path)?;
        let ca_public_line = ca_key.public_key().to_openssh().map_err(|e| {
            ConnectorError::Permanent(format!(
                "cannot encode the public half of CA key `{}`: {e}",
                settings.ca_key_path.display()
            ))
        })?;
        let inner = Inner {
            ca_fingerprint: ca_key.fingerprint(HashAlg::Sha256).to_string(),
            ca_public_line,
            ca_key,
            principals,
            extensions,
            source_address,
            krl_path: settings.krl_path,
            state_dir: settings.state_dir,
        };
        inner
            .locked(|| inner.write_krl(unix_now()))
            .map_err(|e| ConnectorError::Permanent(e.message().to_owned()))?;
        Ok(Self {
            inner: Arc::new(inner),
            call_timeout: settings.call_timeout,
        })
    }

    /// The CA's public key as one OpenSSH line, for sshd's `TrustedUserCAKeys`.
    pub fn ca_public_key(&self) -> &str {
        &self.inner.ca_public_line
    }

    /// Runs `work` on a blocking thread (it does file IO and takes a file
    /// lock), bounded by the call timeout. On timeout the work still finishes
    /// in the background, under the lock, so a retry sees its result.
    async fn bounded<T: Send + 'static>(
        &self,
        action: &'static str,
        request_id: Option<&RequestId>,
        work: impl FnOnce(&Inner) -> Result<T, ConnectorError> + Send + 'static,
    ) -> Result<T, ConnectorError> {
        let span = match request_id {
            Some(id) => tracing::info_span!("ssh_ca_connector", action, request_id = id.as_str()),
            None => tracing::info_span!("ssh_ca_connector", action),
        };
        let inner = Arc::clone(&self.inner);
        let task_span = span.clone();
        let task = tokio::task::spawn_blocking(move || task_span.in_scope(|| work(&inner)));
        async {
            match tokio::time::timeout(self.call_timeout, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(ConnectorError::Retryable(format!(
                    "ssh ca {action} did not complete: {e}"
                ))),
                Err(_) => Err(ConnectorError::Retryable(format!(
                    "ssh ca {action} did not finish within {}",
                    humantime::format_duration(self.call_timeout)
                ))),
            }
        }
        .instrument(span)
        .await
    }
}

#[async_trait::async_trait]
impl Connector for SshCertificateAuthority {
    async fn grant(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let subject = parse_subject_key(spec.public_key.as_deref())?;
        let spec = spec.clone();
        let request_id = spec.request_id.clone();
        self.bounded("grant", Some(&request_id), move |inner| {
            inner.locked(|| inner.grant(&spec, &subject, unix_now()))
        })
        .await
    }

    async fn revoke(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        let spec = spec.clone();
        let request_id = spec.request_id.clone();
        self.bounded("revoke", Some(&request_id), move |inner| {
            inner.locked(|| inner.revoke(&spec, unix_now()))
        })
        .await
    }

    async fn health(&self) -> Result<(), ConnectorError> {
        // Under the state lock, like every grant and revoke: a health check
        // that passed while the lock is stuck would hide the outage.
        self.bounded("health", None, |inner| inner.locked(|| inner.health()))
            .await
    }

    fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    async fn holders(&self) -> Result<Option<Vec<Holding>>, ConnectorError> {
        self.bounded("holders", None, |inner| {
            inner.locked(|| inner.holders(unix_now())).map(Some)
        })
        .await
    }

    /// Revokes the live certificate of the request `holders()` listed (its
    /// principal is the request id), as a revoke would: the reconciler's fix
    /// for a certificate no Airlock request explains (state restored from a
    /// backup, a request deleted from the database).
    async fn remove_holder(&self, holding: &Holding) -> Result<(), ConnectorError> {
        // The principal names a state file: only a well-formed request id.
        let request_id = RequestId::parse(&holding.principal).map_err(|e| {
            ConnectorError::Permanent(format!(
                "`{}` is not a holder this CA lists: {e}",
                holding.principal
            ))
        })?;
        self.bounded("remove_holder", Some(&request_id.clone()), move |inner| {
            inner.locked(|| inner.remove_holder(request_id.as_str(), unix_now()))
        })
        .await
    }
}

impl Inner {
    /// Runs `work` holding the state lock.
    fn locked<T>(
        &self,
        work: impl FnOnce() -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let path = self.state_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("open the state lock", &path, &e))?;
        file.lock()
            .map_err(|e| io_error("lock the state lock", &path, &e))?;
        // The lock goes with the file when it is dropped after `work`.
        work()
    }

    /// Issues (or finds) the request's certificate. Fencing by claim
    /// (docs/connectors.md rule 11): a grant whose claim is older than the
    /// newest call applied for the request, or not newer than the revoke, is
    /// acknowledged without issuing anything.
    fn grant(
        &self,
        spec: &GrantSpec,
        subject: &PublicKey,
        now: u64,
    ) -> Result<Granted, ConnectorError> {
        let request_id = spec.request_id.as_str();
        let valid_before = unix_secs(spec.expires_at);
        if valid_before <= now {
            return Err(ConnectorError::Permanent(format!(
                "request `{request_id}` expired at `{}`: no certificate issued",
                crate::rfc3339(spec.expires_at)
            )));
        }
        if subject.key_data() == self.ca_key.public_key().key_data() {
            return Err(ConnectorError::Permanent(
                "`public_key` is the certificate authority's own key".to_owned(),
            ));
        }
        let fingerprint = subject.fingerprint(HashAlg::Sha256).to_string();
        let existing = self.load_record(request_id)?;

        if let Some(record) = &existing {
            let stale = spec.claim < record.claim
                || (record.revoked_at_claim.is_some() && spec.claim <= record.claim);
            if stale {
                tracing::warn!(
                    claim = spec.claim,
                    newest_claim = record.claim,
                    revoked = record.revoked_at_claim.is_some(),
                    "grant from a superseded claim acknowledged without issuing"
                );
                return Ok(Granted {
                    credential: None,
                    certificate: record
                        .live
                        .as_ref()
                        .filter(|live| live.valid_before > now)
                        .map(|live| live.certificate.clone()),
                });
            }
            if record.revoked_at_claim.is_some() && !record.complete {
                // The revoke that made this record found no certificate on
                // file, so the key id entry is all that stops any the state
                // lost; lifting it for a new certificate would revive them.
                return Err(ConnectorError::Permanent(format!(
                    "request `{request_id}` was revoked with no record of its certificates, \
                     so it cannot be granted again: make a new request"
                )));
            }
            if let Some(live) = &record.live {
                if live.key_fingerprint == fingerprint && live.valid_before == valid_before {
                    let certificate = live.certificate.clone();
                    if spec.claim > record.claim {
                        let mut record = record.clone();
                        record.claim = spec.claim;
                        self.save_record(&record)?;
                    }
                    self.write_krl(now)?;
                    tracing::info!(serial = live.serial, "certificate already issued");
                    return Ok(Granted {
                        credential: None,
                        certificate: Some(certificate),
                    });
                }
                if live.claim == spec.claim {
                    // The serial is a function of request and claim, so a
                    // second certificate under this claim could not be
                    // revoked apart from the first.
                    return Err(ConnectorError::Permanent(format!(
                        "request `{request_id}` already has a certificate from claim {} \
                         for another public key or expiry",
                        spec.claim
                    )));
                }
            }
        }

        let serial = serial_for(&spec.request_id, spec.claim);
        let certificate = self.sign(subject, request_id, serial, now, valid_before)?;
        let mut record = existing.unwrap_or_else(|| Record::new(request_id, spec));
        if let Some(old) = record.live.take() {
            // Superseded (another key or expiry): stays refused until it ends.
            record.dead.push(DeadCertificate {
                serial: old.serial,
                valid_before: old.valid_before,
            });
        }
        if record.revoked_at_claim.take().is_some() {
            tracing::warn!(
                claim = spec.claim,
                "re-granting a revoked request under a newer claim; its earlier certificates stay revoked"
            );
        }
        record.claim = spec.claim;
        record.live = Some(IssuedCertificate {
            serial,
            claim: spec.claim,
            key_fingerprint: fingerprint,
            valid_before,
            certificate: certificate.clone(),
        });
        self.save_record(&record)?;
        self.write_krl(now)?;
        tracing::info!(serial, valid_before, "certificate issued");
        Ok(Granted {
            credential: None,
            certificate: Some(certificate),
        })
    }

    /// Puts every certificate of the request in the KRL, by serial and by
    /// key id. Applied whatever the claim: a late revoke can only take access
    /// away, and reporting success while access remains is not allowed.
    fn revoke(&self, spec: &GrantSpec, now: u64) -> Result<(), ConnectorError> {
        let request_id = spec.request_id.as_str();
        let expires_at = unix_secs(spec.expires_at);
        let record = match self.load_record(request_id)? {
            Some(record) => record,
            None if expires_at > now => {
                // Nothing on file: never granted here, or the state was lost.
                // Revoking the key id until `expires_at` (which is every
                // certificate's `valid_before`) covers the second case.
                let mut record = Record::new(request_id, spec);
                record.complete = false;
                record
            }
            None => {
                tracing::info!("nothing issued and the grant has ended: nothing to revoke");
                return self.write_krl(now);
            }
        };
        self.revoke_record(record, spec.claim, expires_at, now)
    }

    /// Revokes what the record holds at `claim`, the key id at least until
    /// `key_id_until`, and publishes the KRL.
    fn revoke_record(
        &self,
        mut record: Record,
        claim: u64,
        key_id_until: u64,
        now: u64,
    ) -> Result<(), ConnectorError> {
        if let Some(live) = record.live.take() {
            record.dead.push(DeadCertificate {
                serial: live.serial,
                valid_before: live.valid_before,
            });
        }
        let until = record
            .dead
            .iter()
            .map(|d| d.valid_before)
            .chain([key_id_until, record.key_id_revoked_until])
            .max()
            .unwrap_or(key_id_until);
        record.key_id_revoked_until = until;
        record.revoked_at_claim = Some(record.revoked_at_claim.map_or(claim, |c| c.max(claim)));
        record.claim = record.claim.max(claim);
        self.save_record(&record)?;
        self.write_krl(now)?;
        tracing::info!(
            request = %record.request_id,
            serials = ?record.dead.iter().map(|d| d.serial).collect::<Vec<_>>(),
            "certificates revoked"
        );
        Ok(())
    }

    /// Revokes the request's certificates at its newest claim, so only a
    /// grant from a newer claim (a new decision) issues again. A request with
    /// nothing on file holds nothing here: success.
    fn remove_holder(&self, request_id: &str, now: u64) -> Result<(), ConnectorError> {
        match self.load_record(request_id)? {
            Some(record) if record.live.is_some() => {
                let claim = record.claim;
                self.revoke_record(record, claim, 0, now)
            }
            _ => Ok(()),
        }
    }

    /// Exercises signing (a throwaway certificate that expired in 1970, so it
    /// opens nothing even if it leaked) and the directories every call writes.
    fn health(&self) -> Result<(), ConnectorError> {
        let mut builder = certificate::Builder::new(
            [0u8; 16].to_vec(),
            self.ca_key.public_key().key_data().clone(),
            0,
            1,
        )
        .map_err(|e| sign_error("health check", &e))?;
        builder
            .key_id("airlock-health-check")
            .and_then(|b| b.valid_principal("airlock-health-check"))
            .map_err(|e| sign_error("health check", &e))?;
        let cert = builder
            .sign(&self.ca_key)
            .map_err(|e| sign_error("health check", &e))?;
        cert.validate_at(0, [&self.ca_key.fingerprint(HashAlg::Sha256)])
            .map_err(|e| {
                ConnectorError::Permanent(format!(
                    "ssh ca key does not verify its own signature: {e}"
                ))
            })?;

        probe_writable(parent_dir(&self.krl_path))?;
        probe_writable(&self.state_dir.join(RECORDS_DIR))?;
        match fs::read(&self.krl_path) {
            Ok(bytes) if bytes.starts_with(&KRL_MAGIC) => Ok(()),
            Ok(_) => Err(ConnectorError::Permanent(format!(
                "`{}` is not a KRL, so sshd refuses every key: the next grant or revoke rewrites it",
                self.krl_path.display()
            ))),
            Err(e) => Err(ConnectorError::Retryable(format!(
                "cannot read KRL `{}` ({e}), so sshd refuses every key: the next grant or revoke rewrites it",
                self.krl_path.display()
            ))),
        }
    }

    /// Every request with a certificate that is still valid and not revoked.
    fn holders(&self, now: u64) -> Result<Vec<Holding>, ConnectorError> {
        let mut holders: Vec<Holding> = self
            .load_all()?
            .into_iter()
            .filter(|r| r.revoked_at_claim.is_none())
            .filter(|r| r.live.as_ref().is_some_and(|l| l.valid_before > now))
            .map(|r| Holding {
                request_id: RequestId::parse(&r.request_id).ok(),
                principal: r.request_id,
            })
            .collect();
        holders.sort();
        Ok(holders)
    }

    fn sign(
        &self,
        subject: &PublicKey,
        key_id: &str,
        serial: u64,
        now: u64,
        valid_before: u64,
    ) -> Result<String, ConnectorError> {
        let valid_after = now.saturating_sub(CLOCK_SKEW.as_secs());
        let mut nonce = [0u8; certificate::Builder::RECOMMENDED_NONCE_SIZE];
        OsRng.try_fill_bytes(&mut nonce).map_err(|e| {
            ConnectorError::Retryable(format!("no randomness for the certificate nonce: {e}"))
        })?;
        let mut builder = certificate::Builder::new(
            nonce.to_vec(),
            subject.key_data().clone(),
            valid_after,
            valid_before,
        )
        .map_err(|e| sign_error("certificate", &e))?;
        builder
            .serial(serial)
            .and_then(|b| b.cert_type(CertType::User))
            // sshd logs the key id with every login: `ID <request id>`.
            .and_then(|b| b.key_id(key_id))
            .and_then(|b| b.comment(format!("airlock:{key_id}")))
            .map_err(|e| sign_error("certificate", &e))?;
        for principal in &self.principals {
            builder
                .valid_principal(principal.as_str())
                .map_err(|e| sign_error("certificate", &e))?;
        }
        if let Some(source_address) = &self.source_address {
            builder
                .critical_option("source-address", source_address.as_str())
                .map_err(|e| sign_error("certificate", &e))?;
        }
        for extension in &self.extensions {
            builder
                .extension(extension.as_str(), "")
                .map_err(|e| sign_error("certificate", &e))?;
        }
        let cert = builder
            .sign(&self.ca_key)
            .map_err(|e| sign_error("certificate", &e))?;
        cert.to_openssh().map_err(|e| sign_error("certificate", &e))
    }

    /// Rebuilds the KRL from the records and replaces the file atomically,
    /// pruning records whose certificates ended more than [`PRUNE_AFTER`] ago.
    fn write_krl(&self, now: u64) -> Result<(), ConnectorError> {
        let prune_before = now.saturating_sub(PRUNE_AFTER.as_secs());
        let ca_blob = self
            .ca_key
            .public_key()
            .to_bytes()
            .map_err(|e| sign_error("CA key blob", &e))?;
        let mut krl = Krl::new(ca_blob);
        for record in self.load_all()? {
            if record.ends_at() <= prune_before {
                let path = self.record_path(&record.request_id);
                fs::remove_file(&path).map_err(|e| io_error("prune", &path, &e))?;
                tracing::info!(request_id = %record.request_id, "pruned an ended certificate record");
                continue;
            }
            for dead in record.dead.iter().filter(|d| d.valid_before > prune_before) {
                krl.revoke_serial(dead.serial);
            }
            if record.revoked_at_claim.is_some() && record.key_id_revoked_until > prune_before {
                krl.revoke_key_id(&record.request_id);
            }
        }
        let version = fs::read(&self.krl_path)
            .ok()
            .and_then(|bytes| krl_version(&bytes))
            .unwrap_or(0)
            .saturating_add(1);
        write_atomic(&self.krl_path, &krl.encode(version, now), 0o644)
    }

    fn record_path(&self, request_id: &str) -> PathBuf {
        // Request ids are letters, digits and `-_.@` (airlock_core::ids), so
        // they are safe as file names; the suffix keeps `.` and `..` apart.
        self.state_dir
            .join(RECORDS_DIR)
            .join(format!("{request_id}.json"))
    }

    fn load_record(&self, request_id: &str) -> Result<Option<Record>, ConnectorError> {
        let path = self.record_path(request_id);
        match fs::read(&path) {
            Ok(bytes) => parse_record(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, &e)),
        }
    }

    fn load_all(&self) -> Result<Vec<Record>, ConnectorError> {
        let dir = self.state_dir.join(RECORDS_DIR);
        let entries = fs::read_dir(&dir).map_err(|e| io_error("list", &dir, &e))?;
        let mut records = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io_error("list", &dir, &e))?.path();
            let is_record = path.extension().is_some_and(|ext| ext == "json")
                && path
                    .file_name()
                    .is_some_and(|name| !name.to_string_lossy().starts_with('.'));
            if !is_record {
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| io_error("read", &path, &e))?;
            records.push(parse_record(&path, &bytes)?);
        }
        Ok(records)
    }

    fn save_record(&self, record: &Record) -> Result<(), ConnectorError> {
        let path = self.record_path(&record.request_id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| {
            ConnectorError::Permanent(format!(
                "cannot encode the record `{}`: {e}",
                path.display()
            ))
        })?;
        write_atomic(&path, &bytes, 0o600)
    }
}

/// What the connector remembers of one request. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    request_id: String,
    user: String,
    /// The newest claim of any grant or revoke applied for the request.
    claim: u64,
    /// Whether every certificate ever issued for the request is listed here.
    /// False for a record a revoke made without finding one: the state may
    /// have been lost.
    complete: bool,
    /// The certificate in force: issued, not revoked, not superseded.
    live: Option<IssuedCertificate>,
    /// Certificates revoked or superseded; their serials are in the KRL
    /// until they end.
    dead: Vec<DeadCertificate>,
    /// Set by a revoke (to its claim); cleared only by a grant from a newer
    /// claim, which issues a certificate with a new serial.
    revoked_at_claim: Option<u64>,
    /// While revoked, the request id is in the KRL as a key id until then.
    key_id_revoked_until: u64,
}

impl Record {
    fn new(request_id: &str, spec: &GrantSpec) -> Self {
        Self {
            request_id: request_id.to_owned(),
            user: spec.user.as_str().to_owned(),
            claim: spec.claim,
            complete: true,
            live: None,
            dead: Vec::new(),
            revoked_at_claim: None,
            key_id_revoked_until: 0,
        }
    }

    /// When the last thing this record keeps refused or valid ends.
    fn ends_at(&self) -> u64 {
        self.live
            .iter()
            .map(|l| l.valid_before)
            .chain(self.dead.iter().map(|d| d.valid_before))
            .chain([self.key_id_revoked_until])
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IssuedCertificate {
    serial: u64,
    claim: u64,
    /// `SHA256:…` of the certified key, as sshd logs it.
    key_fingerprint: String,
    valid_before: u64,
    /// The OpenSSH certificate line handed to the requester.
    certificate: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DeadCertificate {
    serial: u64,
    valid_before: u64,
}

fn parse_record(path: &Path, bytes: &[u8]) -> Result<Record, ConnectorError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ConnectorError::Permanent(format!(
            "state file `{}` is not a certificate record: {e}",
            path.display()
        ))
    })
}

/// The certificate serial for a request's grant under one claim: the first
/// 63 bits of SHA-256 over a domain tag, the request id and the claim (never
/// 0, which OpenSSH reads as "no serial" and cannot revoke).
///
/// Deterministic rather than random or counted so that a retried grant under
/// the same claim names the same serial, and an operator can compute the
/// serial of any grant from the audit log (request id and claim) without the
/// connector's state. The top bit is cleared so the value reads the same in
/// tools that print serials as signed integers.
pub fn serial_for(request_id: &RequestId, claim: u64) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"airlock-ssh-serial\0")
        .chain_update(request_id.as_str().as_bytes())
        .chain_update([0u8])
        .chain_update(claim.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    for (to, from) in first.iter_mut().zip(digest.iter()) {
        *to = *from;
    }
    (u64::from_be_bytes(first) & (u64::MAX >> 1)).max(1)
}

/// Parses the requester's key: one OpenSSH public key line of a type sshd
/// accepts for users. Certificates are refused: the CA certifies keys.
fn parse_subject_key(raw: Option<&str>) -> Result<PublicKey, ConnectorError> {
    let raw = raw.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
        ConnectorError::Permanent(
            "this entitlement needs an SSH public key in `public_key`: request it with `airlock ssh`"
                .to_owned(),
        )
    })?;
    let key_type = raw.split_whitespace().next().unwrap_or_default();
    if key_type.contains("-cert-v0") {
        return Err(ConnectorError::Permanent(format!(
            "`public_key` is a certificate (`{key_type}`), not a public key: send the key itself (e.g. `~/.ssh/id_ed25519.pub`)"
        )));
    }
    let key = PublicKey::from_openssh(raw).map_err(|e| {
        ConnectorError::Permanent(format!(
            "`public_key` is not an OpenSSH public key line (`{key_type}`): {e}"
        ))
    })?;
    match key.algorithm() {
        Algorithm::Ed25519
        | Algorithm::Ecdsa { .. }
        | Algorithm::Rsa { .. }
        | Algorithm::SkEd25519
        | Algorithm::SkEcdsaSha2NistP256 => Ok(key),
        other => Err(ConnectorError::Permanent(format!(
            "`public_key` has key type `{}`, which Airlock does not certify",
            other.as_str()
        ))),
    }
}

/// `^[A-Za-z0-9._@-]{1,64}$`: a user name or principal that needs no quoting
/// in `AuthorizedPrincipalsFile` or `authorized_keys` options.
fn is_safe_principal(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

fn parse_principals(raw: &[String]) -> Result<Vec<String>, ConnectorError> {
    if raw.is_empty() {
        // No principals would make a certificate valid for every account.
        return Err(ConnectorError::Permanent(
            "ssh ca needs at least one principal".to_owned(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for principal in raw {
        if !is_safe_principal(principal) {
            return Err(ConnectorError::Permanent(format!(
                "principal `{principal}` must be 1 to 64 letters, digits, `.`, `_`, `@` or `-`"
            )));
        }
        if !out.contains(principal) {
            out.push(principal.clone());
        }
    }
    Ok(out)
}

fn parse_extensions(raw: &[String]) -> Result<Vec<String>, ConnectorError> {
    let mut out: Vec<String> = Vec::new();
    for extension in raw {
        let vendor = extension.split_once('@').is_some_and(|(name, domain)| {
            !name.is_empty()
                && !domain.is_empty()
                && extension
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
        });
        if !KNOWN_EXTENSIONS.contains(&extension.as_str()) && !vendor {
            return Err(ConnectorError::Permanent(format!(
                "extension `{extension}` is neither an OpenSSH extension ({}) nor `name@domain`",
                KNOWN_EXTENSIONS.join(", ")
            )));
        }
        if !out.contains(extension) {
            out.push(extension.clone());
        }
    }
    Ok(out)
}

/// Checks a `source-address` list (addresses or CIDR blocks, comma-separated)
/// and returns it without spaces, as sshd expects.
fn parse_source_address(raw: &str) -> Result<String, ConnectorError> {
    let mut parts = Vec::new();
    for part in raw.split(',').map(str::trim) {
        let (addr, prefix) = match part.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (part, None),
        };
        let valid = addr.parse::<IpAddr>().is_ok_and(|ip| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= max))
        });
        if !valid {
            return Err(ConnectorError::Permanent(format!(
                "source_address entry `{part}` is not an IP address or CIDR block"
            )));
        }
        parts.push(part);
    }
    Ok(parts.join(","))
}

/// Loads the CA key, or creates it when the file does not exist (another
/// process that created it first wins, and its key is loaded).
fn load_or_generate_key(path: &Path) -> Result<PrivateKey, ConnectorError> {
    if keyfile::exists(path).map_err(key_error)? {
        return load_key(path);
    }
    // Seeded by hand: `PrivateKey::random` panics if the system
    // random source fails, where this reports it.
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(seed.as_mut())
        .map_err(|e| ConnectorError::Permanent(format!("cannot generate a CA key: {e}")))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| ConnectorError::Permanent(format!("cannot encode the new CA key: {e}")))?;
    if !keyfile::create_private(path, pem.as_bytes()).map_err(key_error)? {
        return load_key(path);
    }
    tracing::info!(path = %path.display(), "generated a new ssh ca key");
    if let Ok(public) = key.public_key().to_openssh() {
        // A convenience for `TrustedUserCAKeys`; the key is
        // authoritative, so a failure here changes nothing.
        let _ = write_atomic(
            &sibling(path, ".pub"),
            format!("{public}\n").as_bytes(),
            0o644,
        );
    }
    Ok(key)
}

fn key_error(e: keyfile::KeyFileError) -> ConnectorError {
    ConnectorError::Permanent(match e {
        keyfile::KeyFileError::Io {
            action,
            path,
            source,
        } => format!("cannot {action} CA key `{path}`: {source}"),
        other => format!("CA key {other}"),
    })
}

fn load_key(path: &Path) -> Result<PrivateKey, ConnectorError> {
    let shown = path.display();
    let pem = keyfile::read_private(path).map_err(key_error)?;
    let key = PrivateKey::from_openssh(&pem).map_err(|e| {
        ConnectorError::Permanent(format!(
            "CA key `{shown}` is not an OpenSSH private key: {e}"
        ))
    })?;
    if key.is_encrypted() {
        return Err(ConnectorError::Permanent(format!(
            "CA key `{shown}` is encrypted; Airlock needs it without a passphrase"
        )));
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(ConnectorError::Permanent(format!(
            "CA key `{shown}` is `{}`, not `ssh-ed25519`",
            key.algorithm().as_str()
        )));
    }
    Ok(key)
}

/// Replaces `path` with `bytes` so a reader (sshd, another call) sees the
/// old file or the new one, never half of one. Callers hold the state lock,
/// so one temporary name per target suffices.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ConnectorError> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    write_new_file(&tmp, bytes, mode).map_err(|e| io_error("write", &tmp, &e))?;
    fs::rename(&tmp, path).map_err(|e| io_error("replace", path, &e))?;
    // Make the rename itself durable; losing it would lose a revocation.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, &e))
}

/// Creates and removes a file in `dir`, which is what every call needs.
fn probe_writable(dir: &Path) -> Result<(), ConnectorError> {
    // Unique per call, so concurrent health checks do not trip over each other.
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = dir.join(format!(".airlock-health-{}-{n}", std::process::id()));
    write_new_file(&probe, b"", 0o600).map_err(|e| io_error("write to", dir, &e))?;
    fs::remove_file(&probe).map_err(|e| io_error("write to", dir, &e))
}

/// A failed file operation. Configuration mistakes (permissions, missing
/// directories) need a human; anything else (a full disk, an interrupted
/// call) may pass.
fn io_error(what: &str, path: &Path, e: &io::Error) -> ConnectorError {
    let message = format!("cannot {what} `{}`: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied
        | io::ErrorKind::NotFound
        | io::ErrorKind::ReadOnlyFilesystem
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory => ConnectorError::Permanent(message),
        _ => ConnectorError::Retryable(message),
    }
}

fn permanent_io(what: &str, path: &Path, e: &io::Error) -> ConnectorError {
    ConnectorError::Permanent(format!("cannot {what} `{}`: {e}", path.display()))
}

fn sign_error(what: &str, e: &ssh_key::Error) -> ConnectorError {
    ConnectorError::Permanent(format!("cannot sign the ssh {what}: {e}"))
}

fn unix_secs(ts: airlock_core::Timestamp) -> u64 {
    u64::try_from(ts.unix_millis().div_euclid(1000)).unwrap_or(0)
}

// A certificate's `valid_after` and the decision whether one is still valid
// are about the wall clock sshd compares them with, and `GrantSpec` carries
// no start time, so this is the connector's one clock read per call.
#[expect(
    clippy::disallowed_methods,
    reason = "certificate validity is checked by sshd against wall-clock time"
)]
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `"SSHKRL\n\0"`, the first eight bytes of every KRL.
pub const KRL_MAGIC: [u8; 8] = *b"SSHKRL\n\0";
const KRL_FORMAT_VERSION: u32 = 1;
const KRL_SECTION_CERTIFICATES: u8 = 1;
const KRL_SECTION_CERT_SERIAL_LIST: u8 = 0x20;
const KRL_SECTION_CERT_KEY_ID: u8 = 0x23;

/// An OpenSSH key revocation list for one CA's certificates, in the binary
/// format of OpenSSH's `PROTOCOL.krl` (what `ssh-keygen -k` writes and
/// sshd's `RevokedKeys` reads).
///
/// Only what Airlock needs is encoded: one `KRL_SECTION_CERTIFICATES`
/// section for the CA, holding a `KRL_SECTION_CERT_SERIAL_LIST` and a
/// `KRL_SECTION_CERT_KEY_ID` subsection, each present only when non-empty.
/// An empty list is the header alone, which revokes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Krl {
    ca_key: Vec<u8>,
    serials: BTreeSet<u64>,
    key_ids: BTreeSet<String>,
}

impl Krl {
    /// A list for certificates signed by the CA whose public key blob (SSH
    /// wire encoding, e.g. `PublicKey::to_bytes`) is `ca_key`. An empty blob
    /// would make the section apply to every CA.
    pub fn new(ca_key: Vec<u8>) -> Self {
        Self {
            ca_key,
            serials: BTreeSet::new(),
            key_ids: BTreeSet::new(),
        }
    }

    /// Revokes the certificate with this serial. Serial 0 is skipped: OpenSSH
    /// reads it as "no serial", never matches it, and refuses a KRL listing it.
    pub fn revoke_serial(&mut self, serial: u64) -> &mut Self {
        if serial != 0 {
            self.serials.insert(serial);
        }
        self
    }

    /// Revokes every certificate with this key id. An id containing NUL is
    /// skipped: no certificate can carry one, and OpenSSH refuses a KRL
    /// listing it.
    pub fn revoke_key_id(&mut self, key_id: &str) -> &mut Self {
        if !key_id.contains('\0') {
            self.key_ids.insert(key_id.to_owned());
        }
        self
    }

    pub fn serials(&self) -> impl Iterator<Item = u64> + '_ {
        self.serials.iter().copied()
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.key_ids.iter().map(String::as_str)
    }

    /// The KRL file's bytes. `krl_version` should grow with every change;
    /// `generated_date` is in Unix seconds. Serials and key ids are written
    /// in ascending order.
    pub fn encode(&self, krl_version: u64, generated_date: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.ca_key.len() + 8 * self.serials.len());
        out.extend_from_slice(&KRL_MAGIC);
        out.extend_from_slice(&KRL_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&krl_version.to_be_bytes());
        out.extend_from_slice(&generated_date.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes()); // flags: none defined
        put_string(&mut out, b""); // reserved
        put_string(&mut out, KRL_COMMENT.as_bytes());
        if self.serials.is_empty() && self.key_ids.is_empty() {
            // A certificate section must hold at least one subsection.
            return out;
        }
        let mut section = Vec::new();
        put_string(&mut section, &self.ca_key);
        put_string(&mut section, b""); // reserved
        if !self.serials.is_empty() {
            let list: Vec<u8> = self.serials.iter().flat_map(|s| s.to_be_bytes()).collect();
            section.push(KRL_SECTION_CERT_SERIAL_LIST);
            put_string(&mut section, &list);
        }
        if !self.key_ids.is_empty() {
            let mut ids = Vec::new();
            for id in &self.key_ids {
                put_string(&mut ids, id.as_bytes());
            }
            section.push(KRL_SECTION_CERT_KEY_ID);
            put_string(&mut section, &ids);
        }
        out.push(KRL_SECTION_CERTIFICATES);
        put_string(&mut out, &section);
        out
    }
}

/// An SSH `string`: a u32 big-endian length, then the bytes. A length past
/// `u32::MAX` (half a billion serials) saturates, which sshd rejects as a
/// malformed KRL and then refuses every key: failing closed, not open.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The `krl_version` in a KRL's header, if `bytes` is one.
fn krl_version(bytes: &[u8]) -> Option<u64> {
    if !bytes.starts_with(&KRL_MAGIC) {
        return None;
    }
    let version: [u8; 8] = bytes.get(12..20)?.try_into().ok()?;
    Some(u64::from_be_bytes(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A strict reader for what [`Krl::encode`] writes, following the checks
    /// OpenSSH's `ssh_krl_from_blob` makes (every string in bounds, no bytes
    /// left over in a section or subsection, no NUL in a key id).
    fn decode(bytes: &[u8]) -> Result<(u64, u64, String, Option<Krl>), String> {
        struct Reader<'a>(&'a [u8]);
        impl<'a> Reader<'a> {
            fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
                if self.0.len() < n {
                    return Err(format!("need {n} bytes, have {}", self.0.len()));
                }
                let (head, rest) = self.0.split_at(n);
                self.0 = rest;
                Ok(head)
            }
            fn u8(&mut self) -> Result<u8, String> {
                Ok(self.take(1)?[0])
            }
            fn u32(&mut self) -> Result<u32, String> {
                Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
            }
            fn u64(&mut self) -> Result<u64, String> {
                Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
            }
            fn string(&mut self) -> Result<&'a [u8], String> {
                let n = self.u32()? as usize;
                self.take(n)
            }
        }
        let mut r = Reader(bytes);
        if r.take(8)? != KRL_MAGIC {
            return Err("bad magic".into());
        }
        if r.u32()? != 1 {
            return Err("bad format version".into());
        }
        let version = r.u64()?;
        let date = r.u64()?;
        if r.u64()? != 0 {
            return Err("flags set".into());
        }
        r.string()?;
        let comment = String::from_utf8(r.string()?.to_vec()).map_err(|e| e.to_string())?;
        let mut krl = None;
        while !r.0.is_empty() {
            if r.u8()? != KRL_SECTION_CERTIFICATES {
                return Err("unexpected section".into());
            }
            if krl.is_some() {
                return Err("second certificate section".into());
            }
            let mut s = Reader(r.string()?);
            let mut k = Krl::new(s.string()?.to_vec());
            s.string()?;
            let mut last = 0;
            while !s.0.is_empty() {
                let kind = s.u8()?;
                if kind <= last {
                    return Err("subsections out of order or repeated".into());
                }
                last = kind;
                let mut sub = Reader(s.string()?);
                if sub.0.is_empty() {
                    return Err("empty subsection".into());
                }
                match kind {
                    KRL_SECTION_CERT_SERIAL_LIST => {
                        let mut prev = 0;
                        while !sub.0.is_empty() {
                            let serial = sub.u64()?;
                            if serial <= prev {
                                return Err("serials not ascending or zero".into());
                            }
                            prev = serial;
                            k.serials.insert(serial);
                        }
                    }
                    KRL_SECTION_CERT_KEY_ID => {
                        while !sub.0.is_empty() {
                            let id = String::from_utf8(sub.string()?.to_vec())
                                .map_err(|e| e.to_string())?;
                            if id.contains('\0') {
                                return Err("NUL in key id".into());
                            }
                            k.key_ids.insert(id);
                        }
                    }
                    other => return Err(format!("unexpected subsection {other:#x}")),
                }
            }
            if k.serials.is_empty() && k.key_ids.is_empty() {
                return Err("certificate section without subsections".into());
            }
            krl = Some(k);
        }
        Ok((version, date, comment, krl))
    }

    #[test]
    fn encodes_the_documented_layout_byte_for_byte() {
        let mut krl = Krl::new(b"CA".to_vec());
        krl.revoke_serial(2).revoke_serial(1).revoke_key_id("r-1");
        let bytes = krl.encode(7, 1_700_000_000);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"SSHKRL\n\0");
        expected.extend_from_slice(&[0, 0, 0, 1]);
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&(KRL_COMMENT.len() as u32).to_be_bytes());
        expected.extend_from_slice(KRL_COMMENT.as_bytes());
        // Section: type 1, length 4+2 (ca) + 4 (reserved) + 1+4+16 (serials)
        // + 1+4+4+3 (key ids) = 43.
        expected.push(1);
        expected.extend_from_slice(&43u32.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 2, b'C', b'A', 0, 0, 0, 0]);
        expected.push(0x20);
        expected.extend_from_slice(&16u32.to_be_bytes());
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.push(0x23);
        expected.extend_from_slice(&7u32.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 3, b'r', b'-', b'1']);
        assert_eq!(bytes, expected);
        assert_eq!(krl_version(&bytes), Some(7));
    }

    #[test]
    fn an_empty_list_is_the_header_alone() {
        let bytes = Krl::new(b"CA".to_vec()).encode(1, 0);
        let (version, _, comment, krl) = decode(&bytes).unwrap();
        assert_eq!((version, comment.as_str(), krl), (1, KRL_COMMENT, None));
    }

    #[test]
    fn serial_zero_and_nul_key_ids_are_skipped() {
        let mut krl = Krl::new(b"CA".to_vec());
        krl.revoke_serial(0).revoke_key_id("a\0b");
        assert_eq!(krl, Krl::new(b"CA".to_vec()));
    }

    proptest! {
        #[test]
        fn encode_round_trips_through_a_strict_reader(
            ca in proptest::collection::vec(any::<u8>(), 0..80),
            serials in proptest::collection::vec(any::<u64>(), 0..40),
            ids in proptest::collection::vec("[A-Za-z0-9._@\\-]{0,70}", 0..20),
            version in any::<u64>(),
            date in any::<u64>(),
        ) {
            let mut krl = Krl::new(ca.clone());
            for s in &serials { krl.revoke_serial(*s); }
            for id in &ids { krl.revoke_key_id(id); }
            let (v, d, _, decoded) = decode(&krl.encode(version, date)).unwrap();
            prop_assert_eq!((v, d), (version, date));
            let want: BTreeSet<u64> = serials.iter().copied().filter(|s| *s != 0).collect();
            let want_ids: BTreeSet<String> = ids.iter().cloned().collect();
            match decoded {
                None => prop_assert!(want.is_empty() && want_ids.is_empty()),
                Some(k) => {
                    prop_assert_eq!(k.ca_key, ca);
                    prop_assert_eq!(k.serials, want);
                    prop_assert_eq!(k.key_ids, want_ids);
                }
            }
        }

        #[test]
        fn serials_are_nonzero_63_bit_and_differ_by_claim(claim in any::<u64>()) {
            let id = RequestId::parse("req-1").unwrap();
            let serial = serial_for(&id, claim);
            prop_assert!(serial != 0 && serial < (1 << 63));
            prop_assert_eq!(serial, serial_for(&id, claim));
            prop_assert_ne!(serial, serial_for(&id, claim.wrapping_add(1)));
        }
    }

    #[test]
    fn principals_extensions_and_source_addresses_are_checked() {
        assert!(parse_principals(&[]).is_err());
        for bad in ["", "has space", "a/b", "x;rm", &"a".repeat(65)] {
            let err = parse_principals(&[bad.to_owned()]).unwrap_err();
            assert!(!err.is_retryable());
            assert!(err.message().contains(&format!("`{bad}`")), "{err}");
        }
        assert_eq!(
            parse_principals(&["web-admin".into(), "ops@corp".into(), "web-admin".into()]).unwrap(),
            ["web-admin", "ops@corp"]
        );
        assert!(parse_extensions(&["permit-pty".into(), "login@example.com".into()]).is_ok());
        let err = parse_extensions(&["permit-everything".into()]).unwrap_err();
        assert!(err.message().contains("`permit-everything`"), "{err}");
        assert_eq!(
            parse_source_address("10.0.0.0/8, 192.168.1.7,::1/128").unwrap(),
            "10.0.0.0/8,192.168.1.7,::1/128"
        );
        for bad in ["10.0.0.0/33", "example.com", "", "10.0.0.1,"] {
            let err = parse_source_address(bad).unwrap_err();
            assert!(err.message().contains("source_address"), "{err}");
        }
    }

    #[test]
    fn public_keys_are_checked_and_certificates_refused() {
        let missing = parse_subject_key(None).unwrap_err();
        assert!(missing.message().contains("`public_key`"), "{missing}");
        assert!(parse_subject_key(Some("  ")).is_err());
        let garbage = parse_subject_key(Some("ssh-ed25519 not-base64!")).unwrap_err();
        assert!(garbage.message().contains("`public_key`"), "{garbage}");
        let cert = parse_subject_key(Some("ssh-ed25519-cert-v01@openssh.com AAAA")).unwrap_err();
        assert!(cert.message().contains("certificate"), "{cert}");
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let line = key.public_key().to_openssh().unwrap();
        assert_eq!(
            parse_subject_key(Some(&line)).unwrap().key_data(),
            key.public_key().key_data()
        );
    }
}
