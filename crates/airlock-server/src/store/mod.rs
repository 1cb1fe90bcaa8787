//! The storage port: what the engine needs from a database, in domain terms.
//!
//! Every change to a request commits together with its audit events; the
//! decision inside a change is made by the pure core while the row is held,
//! so two concurrent changes to one request can never both apply.

pub use airlock_core::audit::ChainReport;
use airlock_core::audit::{AuditEvent, AuditRecord, ChainVerifier};
use airlock_core::catalog::User;
use airlock_core::directory::{DirectoryGroup, DirectoryUser};
use airlock_core::request::{AccessRequest, Rejection, State, Transition};
use airlock_core::token::ApiToken;
use airlock_core::{EntitlementId, RequestId, Timestamp, TokenId, UserId};

pub use crate::store::migrations::latest as latest_schema_version;
pub use crate::store::outbox::{Delivery, OutboxEntry, OutboxFilter, OutboxState, OutboxSummary};
use crate::store::record::RequestRecord;
pub use crate::store::sql::ExclusiveGuard;

pub mod access_reviews;
pub mod checks;
pub mod deliveries;
pub mod directory;
pub mod outbox;
pub mod record;
pub mod sql;
pub mod ssh_sessions;
pub mod tokens;
pub mod transfer;

mod migrations;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The core refused the change; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("no request `{0}`")]
    NotFound(RequestId),
    /// The database holds a schema newer than this binary understands.
    #[error("database schema version {found} is newer than this airlock understands ({known}); upgrade airlock")]
    SchemaTooNew { found: i64, known: i64 },
    /// The database lost migrations this process applied (restored from an
    /// older backup while it ran, say).
    #[error("database schema version {found} is older than this airlock needs ({known}); restart airlock to migrate it")]
    SchemaBehind { found: i64, known: i64 },
    #[error("the target database is not empty: it holds {0}")]
    NotEmpty(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
    /// A write hit a unique index: the one-open-request backstop (the
    /// engine answers it as a conflict).
    #[error("a unique constraint was violated")]
    UniqueViolation,
    /// A directory write (SCIM) was refused; nothing was written.
    #[error(transparent)]
    Directory(#[from] airlock_core::directory::Refusal),
}

/// Background work that runs on one replica at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusive {
    ScheduledReconciliation,
    /// A round of sampling active grants' sessions.
    ActivitySampling,
    /// A round of access reviews: scheduled starts, steps, removals.
    AccessReviews,
    /// A round of the idle limits: warnings and releases of unused grants.
    IdleGrants,
}

/// The requester's unfinished (pending, approved or active) requests, by entitlement.
pub type OpenRequests = std::collections::BTreeMap<EntitlementId, RequestId>;

/// Decides a new request given the requester's open requests (the one for
/// the same entitlement conflicts; the others are facts for policies).
/// A decision may run more than once: a store that retries a write (see
/// `sql::commit_batch`) decides again on what is committed then.
pub type CreateDecision =
    Box<dyn Fn(&OpenRequests) -> Result<Transition, Rejection> + Send + Sync + 'static>;
/// Decides a change to an existing request; like [`CreateDecision`], it may
/// run more than once.
pub type UpdateDecision =
    Box<dyn Fn(AccessRequest) -> Result<Transition, Rejection> + Send + Sync + 'static>;
/// Decides several new requests at once (a bundle's parts), given the
/// requester's open requests; all are written or none. Like
/// [`CreateDecision`], it may run more than once.
pub type CreateManyDecision =
    Box<dyn Fn(&OpenRequests) -> Result<Vec<Transition>, Rejection> + Send + Sync + 'static>;
/// Decides a change to a request and the other parts of its bundle, given
/// every part as stored (in the bundle's order; the request alone when it
/// is no part of one); every changed part is written or none. It may run
/// more than once.
pub type BundleDecision =
    Box<dyn Fn(Vec<AccessRequest>) -> Result<Vec<Transition>, Rejection> + Send + Sync + 'static>;

#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Empty means any state.
    pub states: Vec<State>,
    pub requester: Option<UserId>,
    pub entitlement: Option<EntitlementId>,
    /// Only requests whose grant the target may hold (active, or revocation outstanding).
    pub holding_access: bool,
    /// Only requests with connector work outstanding (a grant or revoke to
    /// make, in flight or not).
    pub connector_work: bool,
    /// Only break-glass requests.
    pub break_glass: bool,
    /// Only break-glass uses still awaiting their review's verdict.
    pub review_open: bool,
    /// Only external principals' requests (those that record a sponsor).
    pub sponsored: bool,
    /// Only requests this user may see ([`AccessRequest::visible_to`]).
    pub visible_to: Option<User>,
    /// Only requests waiting for this user's approval
    /// ([`AccessRequest::awaits_approval_of`]).
    pub awaiting_approval_of: Option<User>,
    /// Only requests created at or after this time.
    pub created_since: Option<Timestamp>,
    /// Only requests asked for under this ticket (exactly:
    /// `airlock_core::ticket::carries`).
    pub ticket: Option<String>,
    /// Only requests after this one in the list order (the page before
    /// ended there).
    pub after: Option<PageKey>,
    pub limit: u32,
}

/// A request's place in the list order: newest first (`created_at`
/// descending), ties broken by id, descending. Paging by it neither repeats
/// nor skips a request while others are created: a new request sorts before
/// the pages already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    pub created_at: Timestamp,
    pub id: RequestId,
}

impl PageKey {
    pub fn of(r: &AccessRequest) -> PageKey {
        PageKey {
            created_at: r.created_at,
            id: r.id.clone(),
        }
    }
}

/// Break-glass uses nobody has judged yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReviewBacklog {
    pub open: u64,
    /// Those of them past their due time.
    pub overdue: u64,
}

/// Removals the targets have not confirmed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevocationBacklog {
    /// Requests with a revoke outstanding.
    pub outstanding: u64,
    /// Those of them that ended before the overdue line.
    pub overdue: u64,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub request: Option<String>,
    /// Matches the actor or the subject.
    pub user: Option<String>,
    pub entitlement: Option<String>,
    pub action: Option<String>,
    /// Done with this API token.
    pub token: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only events older than this `seq` (the next page of a listing).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// What an import loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub requests: usize,
    pub audit_events: usize,
    pub access_reviews: usize,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Creates request `id`, decided atomically with reading the requester's
    /// open requests (the decision must keep that id).
    async fn create_request(
        &self,
        id: &RequestId,
        requester: &UserId,
        decide: CreateDecision,
    ) -> Result<Transition, StoreError>;

    /// Creates the requests `ids` (a bundle's parts) in one transaction,
    /// decided atomically with reading the requester's open requests (the
    /// decision must keep the ids, in order); a refusal writes none.
    async fn create_requests(
        &self,
        ids: &[RequestId],
        requester: &UserId,
        decide: CreateManyDecision,
    ) -> Result<Vec<Transition>, StoreError>;

    /// Applies a change decided on the stored request `id` and, when it is
    /// a part of a bundle, on every part of it, all read and written in one
    /// transaction.
    async fn update_bundle(
        &self,
        id: &RequestId,
        decide: BundleDecision,
    ) -> Result<Vec<Transition>, StoreError>;

    /// Appends audit events that belong to no request (policy changes).
    async fn record(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;

    /// Applies a change decided on the current stored value.
    async fn update_request(
        &self,
        id: &RequestId,
        decide: UpdateDecision,
    ) -> Result<Transition, StoreError>;

    /// Writes an API token (created, revoked, used) and, if that changed a
    /// row, appends `events`, in one transaction. `Ok(false)`: nothing
    /// changed (a revocation of a token revoked meanwhile, a use older than
    /// the one recorded), and no event was appended.
    async fn write_token(
        &self,
        write: tokens::TokenWrite,
        events: Vec<AuditEvent>,
    ) -> Result<bool, StoreError>;

    /// Stores a recorded SSH session and appends `events` (its audit
    /// event), in one transaction, unless a session with its id is stored
    /// already (`Ok(false)`: a resend; nothing is written).
    async fn add_ssh_session(
        &self,
        session: ssh_sessions::StoredSession,
        events: Vec<AuditEvent>,
    ) -> Result<bool, StoreError>;

    /// The SSH sessions recorded under `request`, oldest first, without
    /// their recordings.
    async fn ssh_sessions(
        &self,
        request: &RequestId,
    ) -> Result<Vec<ssh_sessions::StoredSession>, StoreError>;

    /// SSH session `id` with its recording.
    async fn ssh_session(
        &self,
        id: &str,
    ) -> Result<Option<ssh_sessions::StoredSession>, StoreError>;

    /// The token whose secret has this SHA-256 (hex), revoked or not.
    async fn token_by_secret(&self, secret_sha256: &str) -> Result<Option<ApiToken>, StoreError>;

    async fn token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError>;

    /// Tokens owned by one of `owners` (all of them when `None`), newest first.
    async fn list_tokens(&self, owners: Option<&[UserId]>) -> Result<Vec<ApiToken>, StoreError>;

    async fn get_request(&self, id: &RequestId) -> Result<Option<AccessRequest>, StoreError>;

    /// The unfinished (pending, approved or active) request of `requester`
    /// for `entitlement`: there is at most one.
    async fn open_request(
        &self,
        requester: &UserId,
        entitlement: &EntitlementId,
    ) -> Result<Option<checks::OpenRequest>, StoreError>;

    /// Adds checks counted in memory to the requests' stored check
    /// activity (the count added, the last check moved forward only), in
    /// one transaction; requests that no longer exist are skipped.
    async fn add_checks(
        &self,
        tallies: Vec<(RequestId, airlock_core::request::CheckActivity)>,
    ) -> Result<(), StoreError>;

    /// Takes a signed webhook delivery (`key`, the signature that names
    /// it) at `at`, remembering it until `forget_after` on every replica;
    /// whether it is new (`false`: taken before and not yet forgotten, a
    /// replay). Deliveries past their `forget_after` are forgotten on the way.
    async fn take_delivery(
        &self,
        key: &str,
        at: Timestamp,
        forget_after: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Forgets a delivery taken before (its work failed, so the same
    /// delivery sent again must be taken).
    async fn forget_delivery(&self, key: &str) -> Result<(), StoreError>;

    /// Matching requests in the list order of [`PageKey`] (newest first),
    /// at most `limit` of them.
    async fn list_requests(&self, filter: &RequestFilter)
        -> Result<Vec<AccessRequest>, StoreError>;

    /// Claims up to `limit` requests whose next deadline is at or before
    /// `now` and which no other scheduler holds, earliest first, each until
    /// `now + lease` or the request's next change, whichever comes first.
    /// Claims only spread due work across replicas: whoever runs a claimed
    /// request's work re-decides it under the write lock, so a claim that
    /// lapsed (a replica stalled) costs time, never a double effect.
    async fn claim_due(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<RequestId>, StoreError>;

    /// The earliest deadline of a request that no scheduler holds at `now`.
    /// (A claim runs out within its lease, so a scheduler waiting on
    /// another's claim wakes at least once per lease.)
    async fn next_due_at(&self, now: Timestamp) -> Result<Option<Timestamp>, StoreError>;

    /// Requests whose removal from the target is outstanding, and how many
    /// of them ended before `overdue_before`: the core's
    /// `AccessRequest::revocation_overdue` with `overdue_before = now -
    /// grace`, counted in the database.
    async fn revocation_backlog(
        &self,
        overdue_before: Timestamp,
    ) -> Result<RevocationBacklog, StoreError>;

    /// Break-glass uses awaiting their review, and how many of those are
    /// past due at `now`.
    async fn review_backlog(&self, now: Timestamp) -> Result<ReviewBacklog, StoreError>;

    /// Claims up to `limit` outbox rows due at `now` that no dispatcher
    /// holds, earliest first, each until `now + lease` (the way
    /// [`Store::claim_due`] claims requests). A claim is only a hint: a
    /// lapsed one lets another dispatcher send the message again, with the
    /// same idempotency key.
    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records what became of a claimed row's attempt, if the row is still
    /// pending under that claim (`entry.claimed_until`); returns whether it was.
    async fn settle_notification(
        &self,
        entry: &OutboxEntry,
        delivery: Delivery,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Ends every claim on outbox rows, for a process that knows every
    /// dispatcher that could hold one is gone (SQLite: one process owns the
    /// file, so at start each claim belonged to a process that died). Their
    /// rows are sent again at once, with the same idempotency keys. Returns
    /// how many there were.
    async fn release_notification_claims(&self) -> Result<u64, StoreError>;

    /// Deletes up to `limit` settled rows (sent, dropped, failed) settled
    /// before `before`; returns how many.
    async fn prune_notifications(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;

    /// The earliest next attempt of an outbox row no dispatcher holds at `now`.
    async fn next_notification_due(&self, now: Timestamp) -> Result<Option<Timestamp>, StoreError>;

    /// Counts by state, the backlog at `now` and the newest error.
    async fn notification_summary(&self, now: Timestamp) -> Result<OutboxSummary, StoreError>;

    /// Matching outbox rows, most recently changed first.
    async fn list_notifications(
        &self,
        filter: &OutboxFilter,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Matching events in sequence order (the newest `limit` of them).
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Walks the whole chain from the first event.
    async fn verify_audit(&self) -> Result<ChainReport, StoreError> {
        self.verify_audit_with(ChainVerifier::default()).await
    }

    /// The newest event's seq and hash (`None` while the log is empty).
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;

    /// Feeds every event from `verifier.next_seq()` on, in order and from
    /// one snapshot, through `verifier` (stopping at the first break).
    async fn verify_audit_with(&self, verifier: ChainVerifier) -> Result<ChainReport, StoreError>;

    /// Background work that one replica at a time should do (scheduled
    /// reconciliation): `Some` while this replica holds the right to it,
    /// `None` while another does. The right ends when the guard is released
    /// or dropped, or the process dies. With SQLite (one process) it is
    /// always granted.
    async fn try_exclusive(&self, work: Exclusive) -> Result<Option<ExclusiveGuard>, StoreError>;

    /// Whether this process is the only one that makes connector attempts
    /// for this database (SQLite: one process owns the file), so that at
    /// start every attempt still marked in flight is known to be lost.
    fn single_process(&self) -> bool;

    /// Whether the database answers and holds exactly the schema this
    /// binary runs on (another replica may have migrated it further).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Up to `limit` requests with ids after `after`, in id order (for export).
    async fn export_requests(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RequestRecord>, StoreError>;

    /// Up to `limit` audit events with `seq > after`, in order (for export).
    async fn export_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// Applies a write to an access-review campaign with its audit events
    /// and notifications, in one transaction; whether it changed a row
    /// (a decision of an item already decided, or a step already taken,
    /// changes nothing and records nothing).
    async fn write_access_review(
        &self,
        write: access_reviews::ReviewWrite,
    ) -> Result<bool, StoreError>;

    /// Access-review campaigns, newest first (only open ones with
    /// `open_only`), at most `limit`.
    async fn access_reviews(
        &self,
        open_only: bool,
        limit: u32,
    ) -> Result<Vec<airlock_core::access_review::Campaign>, StoreError>;

    async fn access_review(
        &self,
        id: &airlock_core::CampaignId,
    ) -> Result<Option<airlock_core::access_review::Campaign>, StoreError>;

    /// A campaign's items, in order.
    async fn access_review_items(
        &self,
        id: &airlock_core::CampaignId,
    ) -> Result<Vec<airlock_core::access_review::Item>, StoreError>;

    /// How many undecided items of each open campaign are about `user`
    /// (campaigns with none left out).
    async fn access_review_open_items_about(
        &self,
        user: &UserId,
    ) -> Result<Vec<(airlock_core::CampaignId, u32)>, StoreError>;

    /// When the newest campaign of `template` started.
    async fn access_review_last_started(
        &self,
        template: &str,
    ) -> Result<Option<Timestamp>, StoreError>;

    /// The newest decision of any campaign about `user` asking for
    /// `entitlement`.
    async fn eligibility_decision(
        &self,
        user: &UserId,
        entitlement: &EntitlementId,
    ) -> Result<Option<airlock_core::access_review::EligibilityDecision>, StoreError>;

    /// Removed holders not yet taken out of their targets, at most `limit`.
    async fn access_review_removals(
        &self,
        limit: u32,
    ) -> Result<Vec<(airlock_core::CampaignId, airlock_core::access_review::Item)>, StoreError>;

    /// The audit chain's hash at each of `seqs` it holds.
    async fn chain_hashes(&self, seqs: &[i64]) -> Result<Vec<(i64, String)>, StoreError>;

    /// Applies a directory write (SCIM) decided on the stored value, with
    /// its audit events, in one transaction.
    async fn write_directory(
        &self,
        write: directory::DirectoryWrite,
    ) -> Result<directory::Committed, StoreError>;

    async fn directory_user(&self, id: &str) -> Result<Option<DirectoryUser>, StoreError>;

    /// The directory user with this user name (matched regardless of case).
    async fn directory_user_named(
        &self,
        user_name: &str,
    ) -> Result<Option<DirectoryUser>, StoreError>;

    /// Matching users by creation, and how many match in all.
    async fn list_directory_users(
        &self,
        query: &directory::ListQuery,
    ) -> Result<(u64, Vec<DirectoryUser>), StoreError>;

    async fn directory_group(&self, id: &str) -> Result<Option<DirectoryGroup>, StoreError>;

    async fn list_directory_groups(
        &self,
        query: &directory::ListQuery,
    ) -> Result<(u64, Vec<DirectoryGroup>), StoreError>;

    /// Where `user_name` stands in the directory (matched regardless of
    /// case); the groups as [`Store::directory_groups_of`] gives them.
    async fn directory_standing(&self, user_name: &str) -> Result<directory::Standing, StoreError>;

    /// The groups a directory user is a member of (their `members` left
    /// empty: sign-in and the user's SCIM view need only the groups).
    async fn directory_groups_of(&self, user_id: &str) -> Result<Vec<DirectoryGroup>, StoreError>;

    /// The provisioned vendors whose sponsor is `sponsor` (a user name,
    /// matched regardless of case), whatever their standing.
    async fn directory_sponsored_by(&self, sponsor: &str) -> Result<Vec<UserId>, StoreError>;

    /// Starts loading exported state into an empty database: one
    /// transaction, fed in batches through the returned [`Import`], that
    /// commits only when [`Import::finish`] is called. Refuses a database
    /// that already holds requests, audit events or access reviews. While
    /// it runs, this store's other writes wait.
    async fn begin_import(&self) -> Result<Import, StoreError>;

    /// Loads exported state into an empty database in one transaction
    /// (everything in hand: [`Store::begin_import`] with one batch of each).
    async fn import(
        &self,
        requests: Vec<RequestRecord>,
        audit: Vec<AuditRecord>,
        access_reviews: Vec<access_reviews::CampaignRecord>,
    ) -> Result<ImportReport, StoreError> {
        let requests = requests
            .into_iter()
            .map(RequestRecord::into_request)
            .collect::<Result<Vec<_>, _>>()?;
        let mut import = self.begin_import().await?;
        import.load(ImportBatch::Requests(requests)).await?;
        import.load(ImportBatch::Audit(audit)).await?;
        import
            .load(ImportBatch::AccessReviews(access_reviews))
            .await?;
        import.finish().await
    }
}

/// One batch of an import. Audit records are written exactly as given
/// (seq and hashes included): the caller checks the chain.
#[derive(Debug)]
pub enum ImportBatch {
    Requests(Vec<AccessRequest>),
    Audit(Vec<AuditRecord>),
    AccessReviews(Vec<access_reviews::CampaignRecord>),
}

/// What the writer is told while an import runs.
#[derive(Debug)]
enum ImportStep {
    Load(ImportBatch),
    Commit,
    RollBack,
}

/// An import under way ([`Store::begin_import`]): batches go to the
/// database's writer one at a time (at most one waits, so memory stays
/// bounded whatever the import's size) inside one transaction. Nothing is
/// visible until [`Import::finish`] commits; [`Import::abort`], a failed
/// batch or dropping the handle rolls it all back, leaving the database
/// empty as it was.
pub struct Import {
    steps: tokio::sync::mpsc::Sender<ImportStep>,
    done: tokio::sync::oneshot::Receiver<Result<ImportReport, StoreError>>,
}

impl Import {
    /// The handle the store gives out, and the writer's ends of it.
    fn channel() -> (
        Import,
        tokio::sync::mpsc::Receiver<ImportStep>,
        tokio::sync::oneshot::Sender<Result<ImportReport, StoreError>>,
    ) {
        let (steps, received) = tokio::sync::mpsc::channel(1);
        let (reply, done) = tokio::sync::oneshot::channel();
        (Import { steps, done }, received, reply)
    }

    /// Hands the writer the next batch. A batch the database refused
    /// surfaces here (on a later call at the latest) with the import
    /// rolled back.
    pub async fn load(&mut self, batch: ImportBatch) -> Result<(), StoreError> {
        if self.steps.send(ImportStep::Load(batch)).await.is_ok() {
            return Ok(());
        }
        // The writer ended the import: its answer says why.
        match (&mut self.done).await {
            Ok(Err(e)) => Err(e),
            _ => Err(writer_gone()),
        }
    }

    /// Commits everything loaded.
    pub async fn finish(self) -> Result<ImportReport, StoreError> {
        let _ = self.steps.send(ImportStep::Commit).await;
        self.done.await.map_err(|_| writer_gone())?
    }

    /// Rolls everything back and waits until it is.
    pub async fn abort(self) {
        let _ = self.steps.send(ImportStep::RollBack).await;
        let _ = self.done.await;
    }
}

fn writer_gone() -> StoreError {
    StoreError::Database("the database writer has stopped".to_owned())
}
