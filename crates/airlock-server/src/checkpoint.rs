//! Signed audit checkpoints: the ed25519 key kept outside the database, the
//! append-only log of signed heads that can be shipped off the machine, and
//! the checks run at start and before every signature. What a checkpoint
//! says and how a chain is checked against checkpoints is airlock-core's
//! (`audit::Checkpoint`, `audit::ChainVerifier`); files and keys are here.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_connectors::keyfile::{self, KeyFileError};
use airlock_core::audit::{ChainBreak, ChainReport, ChainVerifier, Checkpoint};
use airlock_core::Timestamp;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::engine::Clock;
use crate::store::{Store, StoreError};

/// The first word of a key file, so a file of another kind is refused.
const KEY_FILE_TAG: &str = "airlock-checkpoint-key-v1";
/// How a public key is written: in the log, the API and on the command line.
const PUBLIC_KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("signing key {0}")]
    KeyFile(#[from] KeyFileError),
    /// `path` names the kind of key too.
    #[error("{path}: {message}")]
    BadKey { path: String, message: String },
    #[error("cannot generate a signing key: {0}")]
    Random(String),
    #[error("checkpoint log `{path}`: {message}")]
    Log { path: String, message: String },
    #[error("checkpoint log `{path}` line {line}: {message}")]
    BadLine {
        path: String,
        line: usize,
        message: String,
    },
    #[error("public key `{0}` is not `ed25519:` followed by 64 hex characters")]
    BadPublicKey(String),
    /// A head offered for signing that was not verified from the chain's
    /// first event against the log's checkpoints.
    #[error("not signed: {0}")]
    Unverified(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A public key as text: `ed25519:` and its 32 bytes in hex.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", hex::encode(key.as_bytes()))
}

pub fn parse_public_key(raw: &str) -> Result<VerifyingKey, CheckpointError> {
    let bad = || CheckpointError::BadPublicKey(raw.to_owned());
    let bytes: [u8; 32] = raw
        .trim()
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// Which ed25519 key a file holds: each kind has a file tag of its own (a
/// file of one kind is refused as another) and its name in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Signs the audit checkpoints.
    Checkpoint,
    /// Signs elevation claims (`crate::elevation`).
    Elevation,
}

impl KeyKind {
    fn tag(self) -> &'static str {
        match self {
            KeyKind::Checkpoint => KEY_FILE_TAG,
            KeyKind::Elevation => "airlock-elevation-key-v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::Checkpoint => "audit checkpoint key",
            KeyKind::Elevation => "elevation claim key",
        }
    }
}

/// Loads a signing key, creating it (owner-only) on the first start.
/// Refused when other users can read it.
pub fn load_or_generate_key(path: &Path, kind: KeyKind) -> Result<SigningKey, CheckpointError> {
    let tag = kind.tag();
    let bad = |message: &str| CheckpointError::BadKey {
        path: format!("{} `{}`", kind.name(), path.display()),
        message: message.to_owned(),
    };
    if !keyfile::exists(path)? {
        let mut seed = [0u8; 32];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed)
            .map_err(|e| CheckpointError::Random(e.to_string()))?;
        let text = format!("{tag} {}\n", hex::encode(seed));
        if keyfile::create_private(path, text.as_bytes())? {
            tracing::info!(path = %path.display(), "generated a new {}", kind.name());
        }
    }
    let text = String::from_utf8(keyfile::read_private(path)?).map_err(|_| bad("not text"))?;
    let seed: [u8; 32] = text
        .trim()
        .strip_prefix(tag)
        .and_then(|rest| hex::decode(rest.trim()).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad(&format!("expected `{tag}` and 64 hex characters")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// One line of the checkpoint log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointLine {
    /// The payload's version (`Checkpoint::payload`).
    pub v: u32,
    pub seq: i64,
    pub head_hash: String,
    /// Unix milliseconds: signed exactly as written.
    pub at_ms: i64,
    /// The signer's public key (`ed25519:` hex), so a reader knows which
    /// key to pin; it proves nothing by itself.
    pub key: String,
    /// ed25519 over `Checkpoint::payload`, hex.
    pub sig: String,
}

impl CheckpointLine {
    pub fn sign(key: &SigningKey, checkpoint: &Checkpoint) -> CheckpointLine {
        CheckpointLine {
            v: 1,
            seq: checkpoint.seq,
            head_hash: checkpoint.head_hash.clone(),
            at_ms: checkpoint.at.unix_millis(),
            key: public_key_text(&key.verifying_key()),
            sig: hex::encode(key.sign(&checkpoint.payload()).to_bytes()),
        }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            seq: self.seq,
            head_hash: self.head_hash.clone(),
            at: Timestamp::from_unix_millis(self.at_ms),
        }
    }

    /// The checkpoint, if `key` signed exactly what this line says.
    fn verified(&self, key: &VerifyingKey) -> Result<Checkpoint, String> {
        if self.v != 1 {
            return Err(format!("unknown version {}", self.v));
        }
        let sig: [u8; 64] = hex::decode(&self.sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the signature is not 128 hex characters")?;
        let checkpoint = self.checkpoint();
        key.verify(&checkpoint.payload(), &Signature::from_bytes(&sig))
            .map_err(|_| {
                format!(
                    "the signature does not match (the line was altered or signed by another key than `{}`)",
                    public_key_text(key)
                )
            })?;
        Ok(checkpoint)
    }
}

/// Reads a checkpoint log and checks every line's signature with `key`
/// (`None`: the key the first line names, which only proves the log is
/// consistent with itself). A missing file is an empty log. The
/// checkpoints come back in sequence order, with the key used.
pub fn read_log(
    path: &Path,
    key: Option<&VerifyingKey>,
) -> Result<(Vec<Checkpoint>, Option<VerifyingKey>), CheckpointError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), key.copied()))
        }
        Err(e) => {
            return Err(CheckpointError::Log {
                path: shown,
                message: format!("cannot read: {e}"),
            })
        }
    };
    let mut key = key.copied();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut seen: std::collections::HashMap<i64, (usize, String)> =
        std::collections::HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i.saturating_add(1);
        let bad = |message: String| CheckpointError::BadLine {
            path: shown.clone(),
            line,
            message,
        };
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: CheckpointLine =
            serde_json::from_str(raw).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
        let verifying = match key {
            Some(k) => k,
            None => *key.insert(parse_public_key(&parsed.key).map_err(|e| bad(e.to_string()))?),
        };
        let checkpoint = parsed.verified(&verifying).map_err(bad)?;
        match seen.get(&checkpoint.seq) {
            // A head signed twice (a restart, or replicas sharing a log)
            // must say the same both times.
            Some((earlier, hash)) if *hash != checkpoint.head_hash => {
                return Err(bad(format!(
                    "event {} is signed with another hash than on line {earlier}",
                    checkpoint.seq
                )))
            }
            Some(_) => {}
            None => {
                seen.insert(checkpoint.seq, (line, checkpoint.head_hash.clone()));
                checkpoints.push(checkpoint);
            }
        }
    }
    // Replicas sharing one log may append out of order; the order of lines
    // proves nothing, their signatures do.
    checkpoints.sort_by_key(|c| c.seq);
    Ok((checkpoints, key))
}

/// Signs `checkpoint` with `key` and appends it to the log at `log`.
fn sign_into(log: &Path, key: &SigningKey, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    append_line(log, &CheckpointLine::sign(key, checkpoint))
}

/// Appends one line and syncs it before returning: a checkpoint reported
/// as written survives a crash.
fn append_line(path: &Path, line: &CheckpointLine) -> Result<(), CheckpointError> {
    let log_error = |e: std::io::Error| CheckpointError::Log {
        path: path.display().to_string(),
        message: format!("cannot append: {e}"),
    };
    let mut text = serde_json::to_string(line).map_err(|e| CheckpointError::Log {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    text.push('\n');
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(keyfile::parent_dir(path))
        .map_err(log_error)?;
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(log_error)?;
    file.write_all(text.as_bytes()).map_err(log_error)?;
    file.sync_data().map_err(log_error)
}

/// A server's checkpoint key and log in the hands of a command that reads
/// a whole chain itself, without a server (`airlock import`, the bench's
/// seeding): the chain is checked against the log's checkpoints in that
/// same pass ([`OfflineSigner::verifier`]) and the head it reached is
/// signed ([`OfflineSigner::sign_verified`]), so the server's first start
/// resumes there instead of reading every event again. The same trust a
/// first start would give: it too signs a whole chain that checked out.
pub struct OfflineSigner {
    key: SigningKey,
    log: PathBuf,
    signed: Vec<Checkpoint>,
}

impl OfflineSigner {
    /// The key (created, owner-only, when missing, as a server's first
    /// start does) and the checkpoints its log holds, each line checked
    /// against that key.
    pub fn open(key: &Path, log: &Path) -> Result<OfflineSigner, CheckpointError> {
        let key = load_or_generate_key(key, KeyKind::Checkpoint)?;
        let (signed, _) = read_log(log, Some(&key.verifying_key()))?;
        Ok(OfflineSigner {
            key,
            log: log.to_path_buf(),
            signed,
        })
    }

    /// A verifier of the whole chain, from its first event, against every
    /// checkpoint in the log: a chain another history than the signed one
    /// fails it.
    pub fn verifier(&self) -> Result<ChainVerifier, CheckpointError> {
        ChainVerifier::with_checkpoints(self.signed.clone()).map_err(|e| CheckpointError::Log {
            path: self.log.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Signs the head `report` reached, which must be a verdict of
    /// [`OfflineSigner::verifier`]'s: unbroken and counted from the first
    /// event. `None` when there is nothing new to sign (an empty chain, or
    /// a head the log already holds).
    pub fn sign_verified(
        &self,
        report: &ChainReport,
        at: Timestamp,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        if let Some(b) = &report.first_break {
            return Err(CheckpointError::Unverified(format!(
                "the audit chain is broken: {b}"
            )));
        }
        if u64::try_from(report.head_seq).ok() != Some(report.checked) {
            return Err(CheckpointError::Unverified(format!(
                "{} events were checked, not the chain's {} from its first event",
                report.checked, report.head_seq
            )));
        }
        if report.head_seq < 1 || self.signed.iter().any(|c| c.seq == report.head_seq) {
            return Ok(None);
        }
        let checkpoint = Checkpoint {
            seq: report.head_seq,
            head_hash: report.head_hash.clone(),
            at,
        };
        sign_into(&self.log, &self.key, &checkpoint)?;
        Ok(Some(checkpoint))
    }
}

/// What the checks at start found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartCheck {
    /// Why the record cannot be trusted (`None`: it can).
    pub problem: Option<String>,
    /// The seq the chain broke at, when it did.
    pub broken_at: Option<i64>,
    pub report: Option<ChainReport>,
}

/// Signs the audit head into the checkpoint log, but only a head that
/// chains from the last checkpoint: a chain rewritten behind Airlock's back
/// is never signed.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    key: SigningKey,
    log: PathBuf,
    clock: Arc<dyn Clock>,
    last: tokio::sync::Mutex<Option<Checkpoint>>,
}

impl Checkpointer {
    pub fn new(
        store: Arc<dyn Store>,
        key: SigningKey,
        log: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> Checkpointer {
        Checkpointer {
            store,
            key,
            log,
            clock,
            last: tokio::sync::Mutex::new(None),
        }
    }

    pub fn public_key(&self) -> String {
        public_key_text(&self.key.verifying_key())
    }

    /// Reads this server's own log (every line must carry its key) and
    /// checks the chain from the last checkpoint on (the whole chain when
    /// there is none): one pass over what came since.
    pub async fn check_at_start(&self) -> Result<StartCheck, CheckpointError> {
        let checkpoints = match read_log(&self.log, Some(&self.key.verifying_key())) {
            Ok((checkpoints, _)) => checkpoints,
            Err(e @ (CheckpointError::BadLine { .. } | CheckpointError::Log { .. })) => {
                return Ok(StartCheck {
                    problem: Some(e.to_string()),
                    broken_at: None,
                    report: None,
                })
            }
            Err(e) => return Err(e),
        };
        let last = checkpoints.last().cloned();
        let verifier = last
            .clone()
            .map_or_else(ChainVerifier::default, ChainVerifier::resume_at);
        let report = self.store.verify_audit_with(verifier).await?;
        *self.last.lock().await = last;
        Ok(StartCheck {
            problem: report
                .first_break
                .as_ref()
                .map(|b| format!("audit chain broken: {b}")),
            broken_at: report.first_break.as_ref().map(ChainBreak::seq),
            report: Some(report),
        })
    }

    /// Signs the head if it moved since the last checkpoint and chains from
    /// it. `Err(ChainBreak)` when it does not: nothing is signed.
    pub async fn checkpoint(
        &self,
    ) -> Result<Result<Option<Checkpoint>, ChainBreak>, CheckpointError> {
        let mut last = self.last.lock().await;
        let verifier = last
            .clone()
            .map_or_else(ChainVerifier::default, ChainVerifier::resume_at);
        let report = self.store.verify_audit_with(verifier).await?;
        if let Some(b) = report.first_break {
            return Ok(Err(b));
        }
        if report.head_seq < 1 || last.as_ref().is_some_and(|l| l.seq == report.head_seq) {
            return Ok(Ok(None));
        }
        let checkpoint = Checkpoint {
            seq: report.head_seq,
            head_hash: report.head_hash,
            at: self.clock.now(),
        };
        sign_into(&self.log, &self.key, &checkpoint)?;
        *last = Some(checkpoint.clone());
        Ok(Ok(Some(checkpoint)))
    }

    /// Moves a log this server cannot read (altered, or signed by a key
    /// since replaced) aside, kept for whoever investigates, so the log
    /// continues from a new first line. Only after the operator accepted it.
    pub fn set_log_aside(&self) -> Result<PathBuf, CheckpointError> {
        let aside = keyfile::sibling(
            &self.log,
            &format!(".set-aside-{}", self.clock.now().unix_millis()),
        );
        std::fs::rename(&self.log, &aside).map_err(|e| CheckpointError::Log {
            path: self.log.display().to_string(),
            message: format!("cannot move it aside to `{}`: {e}", aside.display()),
        })?;
        Ok(aside)
    }

    /// Signs the head as it stands, without checking how it got there: only
    /// after the operator accepted a broken chain (and that was recorded),
    /// so later checkpoints chain from here.
    pub async fn seal_accepted_head(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let mut last = self.last.lock().await;
        let Some((seq, head_hash)) = self.store.audit_head().await? else {
            return Ok(None);
        };
        let checkpoint = Checkpoint {
            seq,
            head_hash,
            at: self.clock.now(),
        };
        sign_into(&self.log, &self.key, &checkpoint)?;
        *last = Some(checkpoint.clone());
        Ok(Some(checkpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &SigningKey, seq: i64) -> String {
        let cp = Checkpoint {
            seq,
            head_hash: format!("{seq:064x}"),
            at: Timestamp::from_unix_millis(seq * 1000),
        };
        serde_json::to_string(&CheckpointLine::sign(key, &cp)).unwrap()
    }

    #[test]
    fn a_log_verifies_with_its_key_and_names_an_altered_line() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let path = dir.path().join("log");
        let text = format!("{}\n{}\n", line(&key, 3), line(&key, 8));
        std::fs::write(&path, &text).unwrap();
        let (cps, used) = read_log(&path, None).unwrap();
        assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 8]);
        assert_eq!(used, Some(key.verifying_key()));

        std::fs::write(&path, text.replace("\"seq\":8", "\"seq\":9")).unwrap();
        let err = read_log(&path, Some(&key.verifying_key()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("signature"), "{err}");

        let other = SigningKey::from_bytes(&[8; 32]);
        std::fs::write(&path, &text).unwrap();
        let err = read_log(&path, Some(&other.verifying_key()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    /// A chain of `n` events, as a store would hold it.
    fn chain(n: i64) -> Vec<airlock_core::audit::AuditRecord> {
        use airlock_core::audit::{Actor, AuditAction, AuditEvent, AuditRecord, GENESIS_HASH};
        let mut records: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let event = AuditEvent {
                at: Timestamp::from_unix_millis(seq),
                actor: Actor::System,
                action: AuditAction::Expired,
                request: None,
                entitlement: None,
                subject: None,
                details: std::collections::BTreeMap::new(),
            };
            let prev = records.last().map_or(GENESIS_HASH, |r| r.hash.as_str());
            let record = AuditRecord::chain(&event, seq - 1, prev);
            records.push(record);
        }
        records
    }

    fn verified(
        mut verifier: ChainVerifier,
        records: &[airlock_core::audit::AuditRecord],
    ) -> ChainReport {
        for r in records {
            if verifier.check(r).is_err() {
                break;
            }
        }
        verifier.finish()
    }

    #[test]
    fn an_offline_signer_signs_only_a_whole_chain_that_matches_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let (key, log) = (dir.path().join("audit/key"), dir.path().join("audit/log"));
        let records = chain(5);
        let signer = OfflineSigner::open(&key, &log).unwrap();
        let at = Timestamp::from_unix_millis(99);
        // Resumed at a checkpoint, the report does not vouch for the
        // events before it: nothing is signed.
        let resumed = verified(
            ChainVerifier::resume_at(Checkpoint {
                seq: 3,
                head_hash: records[2].hash.clone(),
                at,
            }),
            &records[2..],
        );
        let err = signer.sign_verified(&resumed, at).unwrap_err().to_string();
        assert!(
            err.contains("3 events were checked, not the chain's 5"),
            "{err}"
        );
        // An edited event: refused, naming it.
        let mut edited = records.clone();
        edited[1].hash = "0".repeat(64);
        let broken = verified(signer.verifier().unwrap(), &edited);
        let err = signer.sign_verified(&broken, at).unwrap_err().to_string();
        assert!(err.contains("event 2"), "{err}");
        assert!(!log.exists(), "nothing was to be signed");

        let whole = verified(signer.verifier().unwrap(), &records[..4]);
        let signed = signer.sign_verified(&whole, at).unwrap().unwrap();
        assert_eq!((signed.seq, &signed.head_hash), (4, &records[3].hash));
        // The server reads the line with its key, which the signer made.
        let server_key = load_or_generate_key(&key, KeyKind::Checkpoint).unwrap();
        let (in_log, _) = read_log(&log, Some(&server_key.verifying_key())).unwrap();
        assert_eq!(in_log, [signed]);

        // Opened again, the log's checkpoint is held against the next
        // chain: the same head is not signed twice, a chain cut before it
        // is refused, a longer one signed.
        let signer = OfflineSigner::open(&key, &log).unwrap();
        let same = verified(signer.verifier().unwrap(), &records[..4]);
        assert_eq!(signer.sign_verified(&same, at).unwrap(), None);
        let cut = verified(signer.verifier().unwrap(), &records[..3]);
        let err = signer.sign_verified(&cut, at).unwrap_err().to_string();
        assert!(
            err.contains("missing, but a checkpoint was signed"),
            "{err}"
        );
        let longer = verified(signer.verifier().unwrap(), &records);
        assert_eq!(
            signer.sign_verified(&longer, at).unwrap().map(|c| c.seq),
            Some(5)
        );
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_named() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(parse_public_key(&public_key_text(&key)).unwrap(), key);
        let err = parse_public_key("ssh-ed25519 AAAA")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ssh-ed25519 AAAA`"), "{err}");
    }
}
