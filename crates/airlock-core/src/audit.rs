//! Audit events and the hash chain that makes the log tamper-evident.
//!
//! Each stored record's hash covers its own content and the previous record's
//! hash, so editing, deleting or reordering any record breaks every hash after
//! it. The encoding is length-prefixed so no two different records can encode
//! to the same bytes.
//!
//! The chain alone cannot catch someone who edits an event and recomputes
//! every later hash, or who removes the newest events: for those, signed
//! checkpoints (a sequence number and the head hash at it, signed with a key
//! kept outside the database) pin the chain at points in its past. This
//! module defines what a checkpoint says (its signed bytes) and how a chain
//! is checked against checkpoints; signing and files belong to the shell.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::catalog::{PrincipalKind, User};
use crate::ids::{EntitlementId, RequestId, TokenId, UserId};
use crate::time::Timestamp;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A person signed in without an API token (a config token or the
    /// identity provider's).
    User(UserId),
    /// A person or a service principal acting with an API token.
    Token {
        user: UserId,
        kind: PrincipalKind,
        token: TokenId,
    },
    /// The scheduler or a connector result, acting on rules already decided.
    System,
    /// The identity provider's provisioning client (SCIM), with the
    /// provisioning token. Stored as `scim:provisioning`: no user id holds a
    /// `:`, so it can never be mistaken for a person.
    Provisioning,
    /// The ticket system, through its signed webhook (a ticket was closed).
    /// Stored as `tickets:webhook`, which no user id can be either.
    TicketSystem,
}

impl Actor {
    /// Whoever `user` is, and the token they act with, if any.
    pub fn of(user: &User) -> Actor {
        match &user.token {
            Some(t) => Actor::Token {
                user: user.id.clone(),
                kind: user.kind,
                token: t.id.clone(),
            },
            None => Actor::User(user.id.clone()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Actor::User(u) | Actor::Token { user: u, .. } => u.as_str(),
            Actor::System => "system",
            Actor::Provisioning => "scim:provisioning",
            Actor::TicketSystem => "tickets:webhook",
        }
    }

    /// The API token that acted, as stored.
    fn token(&self) -> Option<String> {
        match self {
            Actor::Token { token, .. } => Some(token.to_string()),
            Actor::User(_) | Actor::System | Actor::Provisioning | Actor::TicketSystem => None,
        }
    }

    /// `service` for a service principal; `None` for people and the system
    /// (as events were stored before service principals existed).
    fn kind(&self) -> Option<String> {
        match self {
            Actor::Token {
                kind: PrincipalKind::Service,
                ..
            } => Some(PrincipalKind::Service.as_str().to_owned()),
            _ => None,
        }
    }
}

/// Declares [`AuditAction`] with each action's stored name, and
/// `AuditAction::ALL` from the same list, so nothing that counts or lists
/// actions can miss one.
macro_rules! audit_actions {
    ($($(#[$doc:meta])* $name:ident => $text:literal,)*) => {
        /// What happened. Stored by name; names never change once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum AuditAction {
            $($(#[$doc])* $name,)*
        }

        impl AuditAction {
            /// Every action, once.
            pub const ALL: [AuditAction; [$(AuditAction::$name),*].len()] =
                [$(AuditAction::$name),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$name => $text,)*
                }
            }
        }
    };
}

audit_actions! {
    Requested => "requested",
    ApprovalRecorded => "approval_recorded",
    Approved => "approved",
    Denied => "denied",
    Cancelled => "cancelled",
    TimedOut => "timed_out",
    /// A request still waiting for approvers after its entitlement's
    /// `remind_after`: the approvers are reminded.
    ApprovalReminded => "approval_reminded",
    /// A request still waiting after `escalate_after`: the `escalate_to`
    /// groups may approve it too.
    ApprovalEscalated => "approval_escalated",
    /// A break-glass use still unreviewed at its due time: the escalation
    /// groups may review it too.
    ReviewOverdue => "review_overdue",
    /// A reviewer judged a break-glass use.
    Reviewed => "reviewed",
    GrantAttemptFailed => "grant_attempt_failed",
    /// A grant attempt ended without a result (its lease lapsed, or its
    /// process restarted): the target may have granted it.
    GrantOutcomeUnknown => "grant_outcome_unknown",
    Granted => "granted",
    Failed => "failed",
    Expired => "expired",
    Released => "released",
    /// A grant nobody used for most of its entitlement's idle limit: its
    /// holder is warned that it is released at `release_at` unless used.
    IdleWarned => "idle_warned",
    Revoked => "revoked",
    RevokeAttemptFailed => "revoke_attempt_failed",
    /// The requester asked for more time on an active grant.
    ExtensionRequested => "extension_requested",
    /// An approver approved an extension that needs others still.
    ExtensionApprovalRecorded => "extension_approval_recorded",
    /// An extension was granted (at once or by its approvers); the target
    /// is told the new expiry.
    ExtensionApproved => "extension_approved",
    /// The target took the new expiry: the grant lasts longer.
    Extended => "extended",
    /// An extension was denied, by policy or by an approver; the grant
    /// stays as it was.
    ExtensionDenied => "extension_denied",
    /// The target did not take the new expiry; the old one stands.
    ExtensionFailed => "extension_failed",
    /// The grant ended before an extension took effect.
    ExtensionLapsed => "extension_lapsed",
    Deprovisioned => "deprovisioned",
    /// The holder of an active grant obtained a signed proof of it (an
    /// elevation claim), for an application to check.
    ElevationClaimed => "elevation_claimed",
    /// While a grant was active, its connector saw the grantee hold a
    /// session it had not seen before (client, statement).
    SessionSeen => "session_seen",
    /// A session seen on a grant is gone (closed, or ended with the grant).
    SessionGone => "session_gone",
    /// sshd logged a login with the grant's certificate (a log shipper
    /// posted the line): user, client address and port, serial.
    SshLogin => "ssh_login",
    /// sshd logged the end of a session whose login is on the grant's
    /// timeline.
    SshLogout => "ssh_logout",
    /// A session run under the SSH companion (`airlock-session`) ended
    /// and its record arrived: host, user, client, command, start and end,
    /// why it ended, the recording's size and what was not kept.
    SshSessionRecorded => "ssh_session_recorded",
    /// A late grant result arrived after removal: the grant is removed again.
    RevocationRepeated => "revocation_repeated",
    /// A policy set was put in force.
    PolicyActivated => "policy_activated",
    /// A policy set failed to load or validate; the one in force stayed.
    PolicyRefused => "policy_refused",
    /// A policy set awaits a second admin's approval.
    PolicyProposed => "policy_proposed",
    /// An admin approved a proposed set that needs another admin still.
    PolicyApprovalRecorded => "policy_approval_recorded",
    /// Reconciliation found the target and Airlock's grants disagree.
    DriftFound => "drift_found",
    /// Reconciliation fixed a finding in the target.
    DriftFixed => "drift_fixed",
    /// Reconciliation could not fix a finding; the next run finds it again.
    DriftFixFailed => "drift_fix_failed",
    /// The server found the audit chain broken at start and the operator
    /// told it to serve anyway.
    AuditBreakAccepted => "audit_break_accepted",
    /// An access-review campaign started (on demand or on its schedule).
    AccessReviewStarted => "access_review_started",
    /// A reviewer confirmed or removed one item of a campaign.
    AccessReviewDecided => "access_review_decided",
    /// A campaign's reviewers were reminded of its unanswered items.
    AccessReviewReminded => "access_review_reminded",
    /// A campaign's unanswered items went to its escalation groups as well.
    AccessReviewEscalated => "access_review_escalated",
    /// Every item of a campaign was decided.
    AccessReviewCompleted => "access_review_completed",
    /// A holder a reviewer removed was taken out of its target.
    AccessReviewRemoved => "access_review_removed",
    /// Taking a removed holder out of its target failed; it is tried again.
    AccessReviewRemovalFailed => "access_review_removal_failed",
    /// An API token was created (never its secret).
    TokenCreated => "token_created",
    /// An API token was revoked.
    TokenRevoked => "token_revoked",
    /// The identity provider created a directory user (SCIM).
    UserProvisioned => "user_provisioned",
    /// The identity provider changed a directory user's attributes.
    UserUpdated => "user_updated",
    /// The identity provider deactivated a directory user (`active: false`).
    UserDeactivated => "user_deactivated",
    /// The identity provider reactivated a directory user.
    UserReactivated => "user_reactivated",
    /// The identity provider deleted a directory user.
    UserDeleted => "user_deleted",
    /// The identity provider created a group.
    GroupProvisioned => "group_provisioned",
    /// The identity provider renamed or otherwise changed a group.
    GroupUpdated => "group_updated",
    /// The identity provider deleted a group.
    GroupDeleted => "group_deleted",
    /// A user joined a provisioned group.
    MembershipAdded => "membership_added",
    /// A user left a provisioned group (removed, or the group replaced or deleted).
    MembershipRemoved => "membership_removed",
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
    /// The API token the actor used, if any.
    pub token: Option<String>,
    /// `service` when the actor is a service principal; `None` for people
    /// and the system.
    pub actor_kind: Option<String>,
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
            token: event.actor.token(),
            actor_kind: event.actor.kind(),
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
        // Added with API tokens: each present only when set, after a label,
        // so events stored before them (where neither is set) hash exactly
        // as they did. The encoding stays unambiguous: a label is never 64
        // bytes long, which the previous hash always is.
        for (label, value) in [
            (&b"token"[..], &self.token),
            (&b"actor_kind"[..], &self.actor_kind),
        ] {
            if let Some(v) = value {
                field(label);
                field(v.as_bytes());
            }
        }
        field(self.prev_hash.as_bytes());
        hex::encode(h.finalize())
    }
}

/// A claim, signed by Airlock's checkpoint key, that the chain's event
/// `seq` had hash `head_hash` at time `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: String,
    pub at: Timestamp,
}

impl Checkpoint {
    /// The bytes the key signs: versioned and length-prefixed like the
    /// chain's own encoding, so no two checkpoints sign the same bytes and
    /// a signature over anything else never passes for one.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        field(b"airlock-checkpoint-v1");
        field(&self.seq.to_be_bytes());
        field(self.head_hash.as_bytes());
        field(&self.at.unix_millis().to_be_bytes());
        out
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
    /// The chain is consistent but is not the one that was signed: an event
    /// after `after` and at or before `seq` was changed, removed or
    /// reordered and the later hashes recomputed.
    #[error("event {seq}: does not match the checkpoint signed for it (an event after {after} and at or before {seq} was changed, removed or reordered)")]
    CheckpointMismatch { seq: i64, after: i64 },
    /// The chain ends before a signed checkpoint.
    #[error("event {seq}: missing, but a checkpoint was signed for it (the newest events were removed; the chain checked ends at event {head})")]
    Truncated { seq: i64, head: i64 },
}

impl ChainBreak {
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::HashMismatch { seq }
            | ChainBreak::BrokenLink { seq }
            | ChainBreak::SequenceGap { seq, .. }
            | ChainBreak::CheckpointMismatch { seq, .. }
            | ChainBreak::Truncated { seq, .. } => *seq,
        }
    }
}

/// The result of checking a chain, with or without checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked (from the start, or from the checkpoint resumed at).
    pub checked: u64,
    /// The last event that checked out, and its hash.
    pub head_seq: i64,
    pub head_hash: String,
    pub first_break: Option<ChainBreak>,
    /// The newest checkpoint the chain was checked against and matched.
    pub last_checkpoint: Option<i64>,
    /// Events after that checkpoint (after the start when there is none),
    /// which no signature covers yet.
    pub unsigned: u64,
}

/// Incremental verifier, so a store can stream a long chain through it.
/// With checkpoints, every event a checkpoint names must carry the signed
/// hash, and the chain must reach the newest checkpoint.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    last_seq: i64,
    /// `None` right after resuming at a checkpoint: the first event's link
    /// to its predecessor is vouched for by the signature instead.
    last_hash: Option<String>,
    checked: u64,
    /// Not yet reached, ascending.
    checkpoints: std::collections::VecDeque<Checkpoint>,
    last_checkpoint: Option<i64>,
    first_break: Option<ChainBreak>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: Some(GENESIS_HASH.to_owned()),
            checked: 0,
            checkpoints: std::collections::VecDeque::new(),
            last_checkpoint: None,
            first_break: None,
        }
    }
}

/// Checkpoints that cannot be checked against any chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointOrderError {
    #[error(
        "checkpoint {index}: event {seq} is not after the previous checkpoint's event {previous}"
    )]
    NotAscending {
        index: usize,
        seq: i64,
        previous: i64,
    },
    #[error("checkpoint {index}: event {seq} does not exist (events start at 1)")]
    BeforeStart { index: usize, seq: i64 },
}

impl ChainVerifier {
    /// Checks the whole chain from the first event against `checkpoints`
    /// (in the order they were written; index 1 is the first).
    pub fn with_checkpoints(
        checkpoints: Vec<Checkpoint>,
    ) -> Result<ChainVerifier, CheckpointOrderError> {
        let mut previous = 0;
        for (i, c) in checkpoints.iter().enumerate() {
            let index = i.saturating_add(1);
            if c.seq < 1 {
                return Err(CheckpointOrderError::BeforeStart { index, seq: c.seq });
            }
            if c.seq <= previous {
                return Err(CheckpointOrderError::NotAscending {
                    index,
                    seq: c.seq,
                    previous,
                });
            }
            previous = c.seq;
        }
        Ok(ChainVerifier {
            checkpoints: checkpoints.into(),
            ..ChainVerifier::default()
        })
    }

    /// Checks the chain from `checkpoint`'s event on: that event must carry
    /// the signed hash, and every later one must link to it. Fast at start
    /// (only what came since is read); `with_checkpoints` reads it all.
    pub fn resume_at(checkpoint: Checkpoint) -> ChainVerifier {
        ChainVerifier {
            last_seq: checkpoint.seq.saturating_sub(1),
            last_hash: None,
            checkpoints: std::collections::VecDeque::from([checkpoint]),
            ..ChainVerifier::default()
        }
    }

    /// The sequence number of the next event to check.
    pub fn next_seq(&self) -> i64 {
        self.last_seq.saturating_add(1)
    }

    /// Checks the next record in sequence order. After a break the verifier
    /// stays broken; feed it nothing more.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if let Some(b) = &self.first_break {
            return Err(b.clone());
        }
        let result = self.check_one(record);
        if let Err(b) = &result {
            self.first_break = Some(b.clone());
        }
        result
    }

    fn check_one(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let expected = self.next_seq();
        if record.seq != expected {
            return Err(ChainBreak::SequenceGap {
                seq: record.seq,
                expected,
            });
        }
        if self
            .last_hash
            .as_ref()
            .is_some_and(|last| record.prev_hash != *last)
        {
            return Err(ChainBreak::BrokenLink { seq: record.seq });
        }
        if record.compute_hash() != record.hash {
            return Err(ChainBreak::HashMismatch { seq: record.seq });
        }
        if let Some(c) = self.checkpoints.front() {
            if c.seq == record.seq {
                if c.head_hash != record.hash {
                    return Err(ChainBreak::CheckpointMismatch {
                        seq: record.seq,
                        after: self.last_checkpoint.unwrap_or(0),
                    });
                }
                self.last_checkpoint = Some(record.seq);
                self.checkpoints.pop_front();
            }
        }
        self.last_seq = record.seq;
        self.last_hash = Some(record.hash.clone());
        self.checked += 1;
        Ok(())
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Hash of the last verified record (the chain head).
    pub fn head_hash(&self) -> &str {
        self.last_hash.as_deref().unwrap_or(GENESIS_HASH)
    }

    /// The verdict once every record was fed (or the first break was hit):
    /// a chain that ends before a checkpoint's event was cut short.
    pub fn finish(self) -> ChainReport {
        let first_break = self.first_break.or_else(|| {
            self.checkpoints.front().map(|c| ChainBreak::Truncated {
                seq: c.seq,
                head: self.last_seq,
            })
        });
        let unsigned = match self.last_checkpoint {
            Some(at) => u64::try_from(self.last_seq.saturating_sub(at)).unwrap_or(0),
            None => self.checked,
        };
        ChainReport {
            checked: self.checked,
            head_seq: self.last_seq,
            head_hash: self.last_hash.unwrap_or_else(|| GENESIS_HASH.to_owned()),
            first_break,
            last_checkpoint: self.last_checkpoint,
            unsigned,
        }
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

    /// The hash of an event stored before API tokens existed, computed
    /// independently from the v1 encoding: the fields added since (`token`,
    /// `actor_kind`) change nothing for events that lack them.
    #[test]
    fn events_without_a_token_hash_as_they_always_did() {
        let record = AuditRecord::chain(&event(1), 0, GENESIS_HASH);
        assert_eq!(record.token, None);
        assert_eq!(record.actor_kind, None);
        assert_eq!(
            record.hash,
            "3f0d08c024d02045c4d643cbb4ab346fc5acca008ce93a1e693f562e82c6e9cf"
        );
    }

    #[test]
    fn the_token_and_the_service_mark_are_covered_by_the_hash() {
        let service = User {
            kind: PrincipalKind::Service,
            ..User::person(
                UserId::parse("deploy").unwrap(),
                Default::default(),
                Default::default(),
            )
        }
        .through(crate::token::TokenUse {
            id: TokenId::parse("tok_abc").unwrap(),
            scopes: crate::token::Scopes::parse("request").unwrap(),
        });
        let acted = AuditEvent {
            actor: Actor::of(&service),
            ..event(1)
        };
        let record = AuditRecord::chain(&acted, 0, GENESIS_HASH);
        assert_eq!(record.actor, "deploy");
        assert_eq!(record.token.as_deref(), Some("tok_abc"));
        assert_eq!(record.actor_kind.as_deref(), Some("service"));
        assert_eq!(record.compute_hash(), record.hash);
        let mut verifier = ChainVerifier::default();
        assert!(verifier.check(&record).is_ok());
        for edit in [
            |r: &mut AuditRecord| r.token = Some("tok_other".to_owned()),
            |r: &mut AuditRecord| r.token = None,
            |r: &mut AuditRecord| r.actor_kind = None,
        ] {
            let mut edited = record.clone();
            edit(&mut edited);
            assert_ne!(edited.compute_hash(), record.hash);
            let mut verifier = ChainVerifier::default();
            assert!(verifier.check(&edited).is_err());
        }
        // A person with a token: the token, no service mark.
        let person = User::person(
            UserId::parse("alice").unwrap(),
            Default::default(),
            Default::default(),
        )
        .through(crate::token::TokenUse {
            id: TokenId::parse("tok_abc").unwrap(),
            scopes: crate::token::Scopes::parse("read").unwrap(),
        });
        let record = AuditRecord::chain(
            &AuditEvent {
                actor: Actor::of(&person),
                ..event(1)
            },
            0,
            GENESIS_HASH,
        );
        assert_eq!(
            (record.token.as_deref(), record.actor_kind.as_deref()),
            (Some("tok_abc"), None)
        );
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

    fn checkpoint(records: &[AuditRecord], seq: i64) -> Checkpoint {
        let r = records.iter().find(|r| r.seq == seq).unwrap();
        Checkpoint {
            seq,
            head_hash: r.hash.clone(),
            at: Timestamp::from_unix_millis(1000 + seq),
        }
    }

    /// `records` renumbered and rechained from the first, as someone with
    /// write access to the database could do after editing them.
    fn rechain(records: &[AuditRecord]) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for r in records {
            let (seq, hash) = out
                .last()
                .map(|p| (p.seq, p.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.to_owned()));
            let mut next = r.clone();
            next.seq = seq + 1;
            next.prev_hash = hash;
            next.hash = next.compute_hash();
            out.push(next);
        }
        out
    }

    fn against(records: &[AuditRecord], checkpoints: Vec<Checkpoint>) -> ChainReport {
        let mut v = ChainVerifier::with_checkpoints(checkpoints).unwrap();
        for r in records {
            if v.check(r).is_err() {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_matches_its_checkpoints_and_counts_what_came_after() {
        let records = chain(10);
        let cps = vec![checkpoint(&records, 3), checkpoint(&records, 7)];
        let report = against(&records, cps);
        assert_eq!(report.first_break, None);
        assert_eq!(
            (report.checked, report.last_checkpoint, report.unsigned),
            (10, Some(7), 3)
        );
        let none = against(&records, Vec::new());
        assert_eq!((none.last_checkpoint, none.unsigned), (None, 10));
    }

    #[test]
    fn a_rewritten_chain_fails_at_the_first_checkpoint_after_the_edit() {
        let records = chain(10);
        let cps = vec![checkpoint(&records, 3), checkpoint(&records, 7)];
        let mut edited = records.clone();
        edited[4].actor = "mallory".into();
        let edited = rechain(&edited);
        // The chain itself is consistent again...
        assert_eq!(verify(&edited), Ok(()));
        // ...but not the one that was signed.
        assert_eq!(
            against(&edited, cps.clone()).first_break,
            Some(ChainBreak::CheckpointMismatch { seq: 7, after: 3 })
        );

        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(
            against(&rechain(&removed), cps.clone()).first_break,
            Some(ChainBreak::CheckpointMismatch { seq: 3, after: 0 })
        );

        let mut reordered = records.clone();
        reordered.swap(7, 8);
        let reordered = rechain(&reordered);
        // After the last checkpoint nothing is signed yet.
        assert_eq!(against(&reordered, cps.clone()).first_break, None);
        let mut reordered = records;
        reordered.swap(5, 6);
        assert_eq!(
            against(&rechain(&reordered), cps).first_break,
            Some(ChainBreak::CheckpointMismatch { seq: 7, after: 3 })
        );
    }

    #[test]
    fn removing_the_newest_events_is_caught_by_a_later_checkpoint() {
        let records = chain(10);
        let cps = vec![checkpoint(&records, 3), checkpoint(&records, 7)];
        let report = against(&records[..6], cps.clone());
        assert_eq!(
            report.first_break,
            Some(ChainBreak::Truncated { seq: 7, head: 6 })
        );
        // Down to the last checkpoint is not detectable: that is what the
        // count of unsigned events is for.
        let report = against(&records[..7], cps);
        assert_eq!((report.first_break, report.unsigned), (None, 0));
    }

    #[test]
    fn resuming_at_a_checkpoint_checks_its_hash_and_what_follows() {
        let records = chain(10);
        let cp = checkpoint(&records, 7);
        let mut v = ChainVerifier::resume_at(cp.clone());
        assert_eq!(v.next_seq(), 7);
        for r in &records[6..] {
            v.check(r).unwrap();
        }
        let report = v.finish();
        assert_eq!(
            (
                report.first_break,
                report.checked,
                report.unsigned,
                report.head_seq
            ),
            (None, 4, 3, 10)
        );

        let mut edited = records.clone();
        edited[2].actor = "mallory".into();
        let edited = rechain(&edited);
        let mut v = ChainVerifier::resume_at(cp.clone());
        assert_eq!(
            v.check(&edited[6]),
            Err(ChainBreak::CheckpointMismatch { seq: 7, after: 0 })
        );

        let mut v = ChainVerifier::resume_at(cp);
        let mut tail = records[6..].to_vec();
        tail[2].details.insert("k".into(), "forged".into());
        let results: Vec<_> = tail.iter().map(|r| v.check(r)).collect();
        assert_eq!(results[2], Err(ChainBreak::HashMismatch { seq: 9 }));
        assert_eq!(
            v.finish().first_break,
            Some(ChainBreak::HashMismatch { seq: 9 })
        );
    }

    #[test]
    fn checkpoints_must_ascend() {
        let records = chain(5);
        let cps = vec![checkpoint(&records, 3), checkpoint(&records, 3)];
        assert_eq!(
            ChainVerifier::with_checkpoints(cps).err(),
            Some(CheckpointOrderError::NotAscending {
                index: 2,
                seq: 3,
                previous: 3
            })
        );
    }

    #[test]
    fn checkpoint_payloads_differ_in_every_field() {
        let base = Checkpoint {
            seq: 1,
            head_hash: "ab".into(),
            at: Timestamp::from_unix_millis(5),
        };
        let mut other_seq = base.clone();
        other_seq.seq = 2;
        let mut other_hash = base.clone();
        other_hash.head_hash = "ac".into();
        let mut other_at = base.clone();
        other_at.at = Timestamp::from_unix_millis(6);
        let payloads = [&base, &other_seq, &other_hash, &other_at].map(Checkpoint::payload);
        for (i, a) in payloads.iter().enumerate() {
            for b in payloads.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        assert!(base.payload().ends_with(&5i64.to_be_bytes()));
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
