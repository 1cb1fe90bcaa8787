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
