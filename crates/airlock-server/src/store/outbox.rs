//! The notification outbox as the store keeps it: rows written with the
//! change that caused them (see `sql::PendingWrites`), claimed by
//! dispatchers with a lease, settled once sent, given up or found moot.

use std::collections::BTreeMap;

use airlock_core::notify::Topic;
use airlock_core::{RequestId, Timestamp};

/// Where an outbox row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutboxState {
    /// Not sent yet: due at `next_attempt_at`.
    Pending,
    Sent,
    /// Given up on: a permanent error, or past the retry horizon.
    Failed,
    /// Not sent because it no longer said anything true when due (the
    /// request was decided before approvers were told, say).
    Dropped,
}

impl OutboxState {
    pub const ALL: [OutboxState; 4] = [
        OutboxState::Pending,
        OutboxState::Sent,
        OutboxState::Failed,
        OutboxState::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
            OutboxState::Dropped => "dropped",
        }
    }

    pub fn parse(raw: &str) -> Option<OutboxState> {
        OutboxState::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One message to one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// `<audit seq>-<topic>:<channel>`, also the message's idempotency key.
    pub key: String,
    /// The audit event that caused it.
    pub seq: i64,
    pub topic: Topic,
    pub channel: String,
    pub request: Option<RequestId>,
    pub facts: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub first_due: Timestamp,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    /// The claim this value was read under (see [`crate::store::Store::settle_notification`]).
    pub claimed_until: Option<Timestamp>,
    pub last_error: Option<String>,
    pub settled_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// The key of the notification of `topic` caused by audit event `seq`, on `channel`.
pub fn notification_key(seq: i64, topic: Topic, channel: &str) -> String {
    format!("{seq}-{}:{channel}", topic.as_str())
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Failed; try again at `next_at`.
    Retry {
        next_at: Timestamp,
        error: String,
    },
    /// Failed for good.
    Failed {
        error: String,
    },
    /// Not sent: no longer relevant.
    Dropped {
        why: String,
    },
}

/// The outbox at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Rows by state.
    pub counts: BTreeMap<OutboxState, u64>,
    /// Pending rows already due (first due at or before now), sending or retrying.
    pub backlog: u64,
    /// Pending rows not due yet (expiry warnings, overdue checks).
    pub scheduled: u64,
    /// When the oldest row of the backlog was first due.
    pub oldest_due: Option<Timestamp>,
    /// The most recently recorded error: key, message, when.
    pub last_error: Option<(String, String, Timestamp)>,
}

#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    /// Empty means any state.
    pub states: Vec<OutboxState>,
    pub request: Option<RequestId>,
    pub limit: u32,
}
