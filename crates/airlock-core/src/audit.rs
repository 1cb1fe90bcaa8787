//! Audit events and the hash chain that makes the log tamper-evident.
//!
//! Each stored record's hash covers its own content and the previous record's
//! hash, so editing, deleting or reordering any record breaks every hash after
//! it. The encoding is length-prefixed so no two different records can encode
//! to the same bytes.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::ids::{EntitlementId, RequestId, UserId};
use crate::time::Timestamp;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    /// The scheduler or a connector result, acting on rules already decided.
    System,
}

impl Actor {
    pub fn as_str(&self) -> &str {
        match self {
            Actor::User(u) => u.as_str(),
            Actor::System => "system",
        }
    }
}

/// What happened. Stored by name; names never change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Requested,
    ApprovalRecorded,
    Approved,
    Denied,
    Cancelled,
    TimedOut,
    GrantAttemptFailed,
    /// A grant attempt ended without a result (its lease lapsed, or its
    /// process restarted): the target may have granted it.
    GrantOutcomeUnknown,
    Granted,
    Failed,
    Expired,
    Released,
    Revoked,
    RevokeAttemptFailed,
    Deprovisioned,
    /// A late grant result arrived after removal: the grant is removed again.
    RevocationRepeated,
    /// A policy set was put in force.
    PolicyActivated,
    /// A policy set failed to load or validate; the one in force stayed.
    PolicyRefused,
    /// A policy set awaits a second admin's approval.
    PolicyProposed,
    /// An admin approved a proposed set that needs another admin still.
    PolicyApprovalRecorded,
    /// Reconciliation found the target and Airlock's grants disagree.
    DriftFound,
    /// Reconciliation fixed a finding in the target.
    DriftFixed,
    /// Reconciliation could not fix a finding; the next run finds it again.
    DriftFixFailed,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Requested => "requested",
            AuditAction::ApprovalRecorded => "approval_recorded",
            AuditAction::Approved => "approved",
            AuditAction::Denied => "denied",
            AuditAction::Cancelled => "cancelled",
            AuditAction::TimedOut => "timed_out",
            AuditAction::GrantAttemptFailed => "grant_attempt_failed",
            AuditAction::GrantOutcomeUnknown => "grant_outcome_unknown",
            AuditAction::Granted => "granted",
            AuditAction::Failed => "failed",
            AuditAction::Expired => "expired",
            AuditAction::Released => "released",
            AuditAction::Revoked => "revoked",
            AuditAction::RevokeAttemptFailed => "revoke_attempt_failed",
            AuditAction::Deprovisioned => "deprovisioned",
            AuditAction::RevocationRepeated => "revocation_repeated",
            AuditAction::PolicyActivated => "policy_activated",
            AuditAction::PolicyRefused => "policy_refused",
            AuditAction::PolicyProposed => "policy_proposed",
            AuditAction::PolicyApprovalRecorded => "policy_approval_recorded",
            AuditAction::DriftFound => "drift_found",
            AuditAction::DriftFixed => "drift_fixed",
            AuditAction::DriftFixFailed => "drift_fix_failed",
        }
    }
}

/// One thing that happened, as decided by the core. The shell gives it a
/// sequence number and chains it when it stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub actor: Actor,
    pub action: AuditAction,
    pub request: Option<RequestId>,
    pub entitlement: Option<EntitlementId>,
    /// The user whose access this is about (the requester).
    pub subject: Option<UserId>,
    /// Why: approval rule, approvers, reasons, errors.
    pub details: BTreeMap<String, String>,
}

/// An event as stored: plain strings, so a record read back from any store
/// hashes exactly as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub request: Option<String>,
    pub entitlement: Option<String>,
    pub subject: Option<String>,
    pub details: BTreeMap<String, String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditRecord {
    /// Builds the record that follows `prev` (seq and hash) for `event`.
    pub fn chain(event: &AuditEvent, prev_seq: i64, prev_hash: &str) -> AuditRecord {
        let mut record = AuditRecord {
            seq: prev_seq.saturating_add(1),
            at: event.at,
            actor: event.actor.as_str().to_owned(),
            action: event.action.as_str().to_owned(),
            request: event.request.as_ref().map(|r| r.as_str().to_owned()),
            entitlement: event.entitlement.as_ref().map(|e| e.as_str().to_owned()),
            subject: event.subject.as_ref().map(|s| s.as_str().to_owned()),
            details: event.details.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// The hash this record should carry given its content and `prev_hash`.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(b"airlock-audit-v1");
        field(&self.seq.to_be_bytes());
        field(&self.at.unix_millis().to_be_bytes());
        field(self.actor.as_bytes());
        field(self.action.as_bytes());
        for opt in [&self.request, &self.entitlement, &self.subject] {
            match opt {
                Some(v) => {
                    field(b"1");
                    field(v.as_bytes());
                }
                None => field(b"0"),
            }
        }
        field(&(self.details.len() as u64).to_be_bytes());
        for (k, v) in &self.details {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        field(self.prev_hash.as_bytes());
        hex::encode(h.finalize())
    }
}

/// What is wrong with the first bad record of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("event {seq}: content does not match its hash (edited)")]
    HashMismatch { seq: i64 },
    #[error("event {seq}: does not link to the event before it (deleted or reordered)")]
    BrokenLink { seq: i64 },
    #[error("event {seq}: expected sequence number {expected} (deleted or reordered)")]
    SequenceGap { seq: i64, expected: i64 },
}

impl ChainBreak {
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::HashMismatch { seq }
            | ChainBreak::BrokenLink { seq }
            | ChainBreak::SequenceGap { seq, .. } => *seq,
        }
    }
}

/// Incremental verifier, so a store can stream a long chain through it.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    last_seq: i64,
    last_hash: String,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next record in sequence order.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let expected = self.last_seq.saturating_add(1);
        if record.seq != expected {
            return Err(ChainBreak::SequenceGap {
                seq: record.seq,
                expected,
            });
        }
        if record.prev_hash != self.last_hash {
            return Err(ChainBreak::BrokenLink { seq: record.seq });
        }
        if record.compute_hash() != record.hash {
            return Err(ChainBreak::HashMismatch { seq: record.seq });
        }
        self.last_seq = record.seq;
        self.last_hash.clone_from(&record.hash);
        self.checked += 1;
        Ok(())
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Hash of the last verified record (the chain head).
    pub fn head_hash(&self) -> &str {
        &self.last_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at: Timestamp::from_unix_millis(n),
            actor: Actor::System,
            action: AuditAction::Expired,
            request: RequestId::parse("r1").ok(),
            entitlement: None,
            subject: None,
            details: BTreeMap::from([("k".to_owned(), format!("v{n}"))]),
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out
                .last()
                .map(|r| (r.seq, r.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.to_owned()));
            out.push(AuditRecord::chain(&event(i), seq, &hash));
        }
        out
    }

    fn verify(records: &[AuditRecord]) -> Result<(), ChainBreak> {
        let mut v = ChainVerifier::default();
        records.iter().try_for_each(|r| v.check(r))
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(()));
    }

    #[test]
    fn edit_delete_and_reorder_are_detected_at_the_right_event() {
        let mut edited = chain(5);
        edited[2].details.insert("k".into(), "forged".into());
        assert_eq!(verify(&edited), Err(ChainBreak::HashMismatch { seq: 3 }));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(
            verify(&deleted),
            Err(ChainBreak::SequenceGap {
                seq: 3,
                expected: 2
            })
        );

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        let (a, b) = (reordered[1].seq, reordered[2].seq);
        reordered[1].seq = b;
        reordered[2].seq = a;
        assert_eq!(verify(&reordered), Err(ChainBreak::BrokenLink { seq: 2 }));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = chain(1).remove(0);
        let mut b = a.clone();
        a.actor = "ab".into();
        a.action = "c".into();
        b.actor = "a".into();
        b.action = "bc".into();
        assert_ne!(a.compute_hash(), b.compute_hash());
    }
}
