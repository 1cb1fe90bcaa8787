//! The store's side of the directory (people and groups provisioned over
//! SCIM): writes decided on the stored value inside the write transaction,
//! like request changes, and the queries the SCIM API lists with.

use airlock_core::directory::{Change, DirectoryGroup, DirectoryUser, Refusal};
use airlock_core::Timestamp;

/// What a decision made of the stored value (`None`: it is deleted), and
/// the time it was decided at (read while the row is held).
#[derive(Debug, Clone)]
pub struct Decided<T> {
    pub after: Option<T>,
    pub now: Timestamp,
}

/// Decides a user's next value from the stored one (`None`: no such user);
/// it may run more than once, like the request decisions.
pub type UserDecision = Box<
    dyn Fn(Option<DirectoryUser>) -> Result<Decided<DirectoryUser>, Refusal>
        + Send
        + Sync
        + 'static,
>;
/// Decides a group's next value from the stored one.
pub type GroupDecision = Box<
    dyn Fn(Option<DirectoryGroup>) -> Result<Decided<DirectoryGroup>, Refusal>
        + Send
        + Sync
        + 'static,
>;

/// One directory write; `operation` (`PATCH /Users/…`) goes into the audit
/// events as their cause.
pub enum DirectoryWrite {
    User {
        id: String,
        operation: String,
        decide: UserDecision,
    },
    Group {
        id: String,
        operation: String,
        decide: GroupDecision,
    },
}

/// A committed directory write: the stored value after it (`None` when
/// deleted) and what the change means (its events, already stored, and the
/// consequences for requests the caller must carry out).
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub user: Option<DirectoryUser>,
    pub group: Option<DirectoryGroup>,
    pub change: Change,
}

/// The one attribute a list may be filtered on (`attribute eq "value"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Id(String),
    /// Users; matched regardless of case.
    UserName(String),
    ExternalId(String),
    /// Groups; matched regardless of case.
    DisplayName(String),
}

/// A page of a directory list: SCIM's 1-based `startIndex` and `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub start_index: u64,
    pub count: u64,
}

/// Where a user name stands in the directory, for sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The directory does not know the name (a config or provider-only user).
    Unknown,
    /// Provisioned and active, with the groups they are a member of.
    Active(DirectoryUser, Vec<DirectoryGroup>),
    /// Provisioned and deactivated.
    Deactivated(DirectoryUser),
    /// Deleted by the identity provider (and not provisioned again).
    Deleted,
}

/// With SQLite, where each user name stands, remembered after its first
/// read: every API call asks it (`Engine::signed_in`), and on SQLite each
/// read is a round trip to the connection's thread. One process owns a
/// SQLite file and every directory change passes its one writer, which
/// forgets everything here when it commits one, before answering; a read
/// that raced such a commit is not remembered (the generation moved).
/// PostgreSQL, whose replicas' writes this process does not see, reads
/// every time.
#[derive(Default)]
pub struct StandingCache {
    inner: std::sync::Mutex<(u64, std::collections::HashMap<String, Standing>)>,
}

/// More names than this and the cache starts over: names are those of
/// people who signed in, but nothing else bounds them.
const MAX_REMEMBERED: usize = 100_000;

impl StandingCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (u64, std::collections::HashMap<String, Standing>)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What is remembered of `user_name`, and the generation to remember a
    /// fresh read under.
    pub fn get(&self, user_name: &str) -> (u64, Option<Standing>) {
        let inner = self.lock();
        (inner.0, inner.1.get(user_name).cloned())
    }

    /// Remembers a read made under `generation`, unless a directory change
    /// committed since.
    pub fn put(&self, generation: u64, user_name: &str, standing: &Standing) {
        let mut inner = self.lock();
        if inner.0 != generation {
            return;
        }
        if inner.1.len() >= MAX_REMEMBERED {
            inner.1.clear();
        }
        inner.1.insert(user_name.to_owned(), standing.clone());
    }

    /// Forgets everything: a directory change committed.
    pub fn forget(&self) {
        let mut inner = self.lock();
        inner.0 = inner.0.wrapping_add(1);
        inner.1.clear();
    }
}
