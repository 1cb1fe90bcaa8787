//! The engine: the one place where core decisions meet the store and the
//! connectors. Every change goes through [`Engine::submit`] or a command;
//! the core decides, the store commits state and audit together, and only
//! then are connector calls made, each reporting its result back as a command.
//!
//! The scheduler here has no authority of its own: deadlines are columns in
//! the store, so a restarted server finds everything that fell due while it
//! was down and handles it at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

mod access_reviews;
mod activity;
mod checks;
mod clock;
mod directory;
mod idle;
mod reconcile;
mod ssh_sessions;
mod standing;
mod tickets;
pub mod tokens;

use airlock_connectors::{Connector, ConnectorError, Credential, GrantSpec, Granted};
use airlock_core::access::{self, RequestAction};
use airlock_core::audit::{AuditAction, AuditEvent, AuditRecord};
use airlock_core::catalog::{Catalog, User};
use airlock_core::notify::{self, Routing};
use airlock_core::policy_change::{self, Proposal, ProposalStep, Trigger};
use airlock_core::request::{
    self, AccessRequest, Command, Effect, JobAction, LifecycleSettings, NewRequest, Rejection,
    State, Transition,
};
use airlock_core::waits::{self, ApprovalWaits};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, error, info, warn, Instrument};

use crate::metrics::{CallOutcome, Metrics};
use crate::policy::{self, Policies, PolicyLoadError, Reloaded};
use crate::store::{
    AuditFilter, ChainReport, OutboxEntry, OutboxFilter, OutboxSummary, RequestFilter,
    ReviewBacklog, RevocationBacklog, Store, StoreError,
};

pub use access_reviews::{RoundReport, ACCESS_REVIEW_ROUND};
pub use checks::{CheckAnswer, CHECKS_FLUSH_EVERY};
pub use clock::{Clock, ManualClock, SystemClock};
pub use directory::Refused;
pub use idle::{IdleReport, ACTIVITY_LAG, IDLE_ROUND};
pub use reconcile::{
    ConnectorOutcome, ConnectorReport, FindingReport, FixOutcome, ReconcileReport,
};
pub use ssh_sessions::SessionTaken;
pub use standing::{ConnectorListing, HolderRow, ListingOutcome, StandingReport};
pub use tickets::{Delivery, DeliveryRefused, TicketClosed, Verified};
pub use tokens::{CreatedToken, TokenAsk, TokenRefused};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("no request `{0}`")]
    NotFound(RequestId),
    #[error("no entitlement `{name}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownEntitlement {
        name: String,
        suggestion: Option<String>,
    },
    #[error("no bundle `{name}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownBundle {
        name: String,
        suggestion: Option<String>,
    },
    /// The policy set failed to load or validate; the one in force stays.
    #[error(transparent)]
    Policy(#[from] PolicyLoadError),
    #[error("no policy proposal `{0}`")]
    UnknownProposal(String),
    /// No such API token, or none the caller may manage.
    #[error("no access review `{0}` that you may see")]
    UnknownAccessReview(String),
    #[error("no API token `{0}` that you may manage")]
    UnknownToken(String),
    /// The audit record cannot be trusted, so nothing that grants access or
    /// changes the rules is done until an operator looks (see
    /// [`Engine::refuse_writes`]).
    #[error("writes are refused: {0}; revocations continue; restart with --accept-broken-audit-chain after investigating")]
    AuditUntrusted(String),
    /// The policies demand MFA fresher than the caller's (an
    /// `@mfa_max_age` forbid is all that refuses): nothing is recorded; the
    /// caller signs in again and retries (RFC 9470 step-up).
    #[error("this request needs multi-factor authentication within the last {max_age} seconds; sign in again (airlock login --max-age {max_age}) and retry")]
    StepUp { max_age: u64 },
    /// Log lines posted to a grant were refused, naming the line.
    #[error(transparent)]
    Lines(#[from] airlock_core::ssh_activity::LineRefusal),
    /// A recorded SSH session was refused, naming the field.
    #[error(transparent)]
    Session(#[from] airlock_core::ssh_session::Refusal),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(r) => EngineError::Rejected(r),
            StoreError::NotFound(id) => EngineError::NotFound(id),
            // The database's backstop for the rule the core checks first.
            StoreError::UniqueViolation => EngineError::Rejected(Rejection::Conflict(
                "another open request for the same user and entitlement was committed first; \
                 try again once it has ended"
                    .to_owned(),
            )),
            other => EngineError::Store(other),
        }
    }
}

/// What a requester asks for, already parsed from the wire.
#[derive(Debug, Clone)]
pub struct Ask {
    /// One entitlement, or several together.
    pub what: Asked,
    pub duration: Option<Duration>,
    pub reason: String,
    pub ticket: Option<String>,
    pub start_at: Option<Timestamp>,
    pub break_glass: bool,
    pub public_key: Option<String>,
    /// When the requester last completed MFA, if known.
    pub mfa_at: Option<Timestamp>,
}

impl Ask {
    /// The core's input for a new request (a bundle's part brings its own id).
    fn new_request(self) -> NewRequest {
        NewRequest {
            id: new_request_id(),
            duration: self.duration,
            reason: self.reason,
            ticket: self.ticket,
            start_at: self.start_at,
            break_glass: self.break_glass,
            public_key: self.public_key,
        }
    }
}

/// What is asked for: one entitlement, a bundle the config names, or
/// entitlements listed together (an ad-hoc bundle).
#[derive(Debug, Clone)]
pub enum Asked {
    Entitlement(EntitlementId),
    Bundle(String),
    Entitlements(Vec<EntitlementId>),
}

/// What a person may ask of a request, besides approving or denying it.
#[derive(Debug, Clone)]
pub enum UserCommand {
    /// Withdraw a request that has not started.
    Cancel,
    /// End one's own grant early.
    Release,
    /// End someone's grant (admins).
    Revoke { reason: String },
    /// Judge a break-glass use (its reviewers).
    Review { acceptable: bool, comment: String },
}

/// A decision on a pending request by someone other than its requester.
#[derive(Debug, Clone)]
pub enum ApproverDecision {
    Approve { comment: Option<String> },
    Deny { reason: String },
}

/// Connector calls in flight at once; the rest wait their turn.
pub(crate) const MAX_CONCURRENT_CALLS: usize = 256;
/// Due requests handled per scheduler pass.
const SCHEDULER_BATCH: u32 = 256;
/// How long a scheduler pass holds the due work it claimed before another
/// replica may take it: ample for one pass's ticks to commit, short enough
/// that a replica frozen right after claiming delays expiries only briefly.
/// Also the longest a scheduler sleeps (a backstop for a missed wake-up).
const DUE_CLAIM_LEASE: Duration = Duration::from_secs(5);

/// Deadlines committed since the scheduler last read the store's earliest,
/// as the scheduler learns of them: only a deadline earlier than every one
/// told since wakes it, and it then only sleeps less. Before, every commit
/// holding a deadline woke it to claim and read again (hundreds of claims a
/// second under a load that had nothing due).
struct DueWake {
    notify: Notify,
    /// The earliest deadline told since [`DueWake::forget`] (Unix ms;
    /// `i64::MAX`: none).
    earliest_ms: AtomicI64,
}

impl Default for DueWake {
    fn default() -> Self {
        DueWake {
            notify: Notify::new(),
            earliest_ms: AtomicI64::new(i64::MAX),
        }
    }
}

impl DueWake {
    /// A commit wrote a request whose next deadline is `due`.
    fn committed(&self, due: Timestamp) {
        let due = due.unix_millis();
        if due < self.earliest_ms.fetch_min(due, AtomicOrdering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// The scheduler is about to read the store, which holds every deadline
    /// committed so far: only those committed after need telling.
    fn forget(&self) {
        self.earliest_ms.store(i64::MAX, AtomicOrdering::Release);
    }

    fn earliest(&self) -> Option<Timestamp> {
        let ms = self.earliest_ms.load(AtomicOrdering::Acquire);
        (ms != i64::MAX).then(|| Timestamp::from_unix_millis(ms))
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    policies: Arc<Policies>,
    lifecycle: Arc<LifecycleSettings>,
    overdue_after: Duration,
    connectors: HashMap<String, Arc<dyn Connector>>,
    clock: Arc<dyn Clock>,
    /// The scheduler's wake-up by deadlines just committed.
    due_wake: DueWake,
    calls: Arc<Semaphore>,
    metrics: Metrics,
    /// One-time credentials from grants, until the requester collects them.
    credentials: std::sync::Mutex<HashMap<RequestId, Credential>>,
    /// One policy change at a time, so an approval is checked against the
    /// set that is really in force when it lands.
    policy_changes: tokio::sync::Mutex<()>,
    /// Per entitlement: what reconciliation does with unexplained holders.
    /// One reconciliation at a time per replica, so a scheduled run and an
    /// on-demand one never fix the same finding twice.
    reconciling: tokio::sync::Mutex<()>,
    /// Why the audit record cannot be trusted, if it cannot.
    untrusted: std::sync::RwLock<Option<String>>,
    /// Who hears what; each change's notifications are decided with it.
    routing: Arc<Routing>,
    /// Woken when a commit wrote outbox rows (the notification dispatcher).
    outbox_wake: Arc<Notify>,
    /// API tokens: the longest lifetime, and the last use this replica
    /// wrote of each (so it writes at most one a minute per token).
    tokens: tokens::TokenState,
    /// The sessions this replica last saw on each active grant it samples.
    seen_sessions: activity::SeenSessions,
    /// Posts of log lines, one at a time (see `engine::activity`).
    reporting: tokio::sync::Mutex<()>,
    /// Checks of grants counted since this replica last added them to the
    /// store.
    checks: checks::CheckLedger,
    review_templates: std::collections::BTreeMap<String, airlock_core::access_review::Template>,
    access_review_wake: Notify,
    /// The ticket system's webhook (`[tickets]`), if on.
    tickets: Option<crate::config::TicketSettings>,
    /// The entitlements with an idle limit, and theirs.
    idle_limits: std::collections::BTreeMap<EntitlementId, airlock_core::idle::IdleLimit>,
}

/// What an engine is built from (see [`Engine::new`]).
pub struct EngineParts {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub policies: Arc<Policies>,
    pub lifecycle: LifecycleSettings,
    pub overdue_after: Duration,
    pub connectors: HashMap<String, Arc<dyn Connector>>,
    pub clock: Arc<dyn Clock>,
    /// Who hears what (`Routing::default()`: nobody, nothing is written).
    pub routing: Routing,
    /// The longest an API token may live (`server.token_max_lifetime`).
    pub token_max_lifetime: Duration,
    /// The kinds of access-review campaign (`[access_reviews.NAME]`).
    pub access_reviews: std::collections::BTreeMap<String, airlock_core::access_review::Template>,
    /// The ticket system's webhook (`[tickets]`); `None`: it refuses every
    /// delivery.
    pub tickets: Option<crate::config::TicketSettings>,
    /// The entitlements with an idle limit (`idle_limit`), and theirs.
    pub idle_limits: std::collections::BTreeMap<EntitlementId, airlock_core::idle::IdleLimit>,
}

/// What a request to change the policy set did.
#[derive(Debug, Clone)]
pub enum PolicyChange {
    Activated(Reloaded),
    /// The two-person rule holds it for a second admin.
    Proposed(Box<Proposal>),
}

impl Engine {
    pub fn new(parts: EngineParts) -> Arc<Engine> {
        let EngineParts {
            store,
            catalog,
            policies,
            lifecycle,
            overdue_after,
            connectors,
            clock,
            routing,
            token_max_lifetime,
            access_reviews,
            tickets,
            idle_limits,
        } = parts;
        Arc::new(Engine {
            store,
            catalog,
            policies,
            lifecycle: Arc::new(lifecycle),
            overdue_after,
            connectors,
            clock,
            due_wake: DueWake::default(),
            calls: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
            metrics: Metrics::default(),
            credentials: std::sync::Mutex::new(HashMap::new()),
            policy_changes: tokio::sync::Mutex::new(()),
            reconciling: tokio::sync::Mutex::new(()),
            untrusted: std::sync::RwLock::new(None),
            routing: Arc::new(routing),
            outbox_wake: Arc::new(Notify::new()),
            tokens: tokens::TokenState::new(token_max_lifetime),
            seen_sessions: activity::SeenSessions::default(),
            reporting: tokio::sync::Mutex::new(()),
            checks: checks::CheckLedger::default(),
            review_templates: access_reviews,
            access_review_wake: Notify::new(),
            tickets,
            idle_limits,
        })
    }

    /// What the notification dispatcher waits on between passes.
    pub fn outbox_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.outbox_wake)
    }

    /// The store, shared (the notification dispatcher holds it).
    pub fn shared_store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// From now on, refuses what would grant access or change the rules
    /// (new requests, approvals, policy changes, reconciliation) because the
    /// audit record cannot be trusted. What only takes access away (expiry,
    /// revocation, release, cancel, deny) goes on: refusing it would leave
    /// access in place because of a problem with the record of it.
    pub fn refuse_writes(&self, why: String) {
        if let Ok(mut untrusted) = self.untrusted.write() {
            *untrusted = Some(why);
        }
    }

    /// Fails while the audit record cannot be trusted.
    pub fn check_trusted(&self) -> Result<(), EngineError> {
        match self.untrusted.read().ok().and_then(|u| u.clone()) {
            Some(why) => Err(EngineError::AuditUntrusted(why)),
            None => Ok(()),
        }
    }

    fn hold_credential(&self, request: &AccessRequest, credential: Credential) {
        if let Ok(mut held) = self.credentials.lock() {
            held.insert(request.id.clone(), credential);
        }
    }

    /// Hands the requester the credential their grant created, once. Only
    /// the replica that performed the grant holds it, in memory: it is never
    /// written to the database or a log, and a restart loses it.
    pub async fn collect_credential(
        &self,
        id: &RequestId,
        caller: &User,
    ) -> Result<(AccessRequest, Credential), EngineError> {
        let request = self.get(id).await?;
        access::may_act(caller, &request, RequestAction::CollectCredential)?;
        if request.state != State::Active {
            return Err(EngineError::Rejected(Rejection::Conflict(format!(
                "`{id}` is {}: only an active grant has a credential",
                request.state.as_str()
            ))));
        }
        let credential = self
            .credentials
            .lock()
            .ok()
            .and_then(|mut held| held.remove(id));
        credential.map(|c| (request, c)).ok_or_else(|| {
            EngineError::Rejected(Rejection::Conflict(format!(
                "no credential is waiting for `{id}`: it was already collected, the connector issues none, \
                 or another replica (or a restart) holds it"
            )))
        })
    }

    /// A signed proof that `caller` holds the grant `id` now (an elevation
    /// claim), lasting at most `lifetime`, recorded in the audit log before
    /// it is handed out; the caller signs it.
    pub async fn elevation_claim(
        &self,
        id: &RequestId,
        caller: &User,
        audience: Option<&str>,
        lifetime: Duration,
    ) -> Result<airlock_core::elevation::Claim, EngineError> {
        let request = self.get(id).await?;
        let claim_id = hex::encode(rand::random::<[u8; 16]>());
        let (claim, event) = airlock_core::elevation::claim(
            &request,
            caller,
            audience,
            claim_id,
            lifetime,
            self.clock.now(),
        )?;
        self.record(vec![event]).await?;
        Ok(claim)
    }

    /// The store, for reads that need no decision (the SCIM API's).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The engine's clock, for decisions made inside a store write.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// A user as the config knows them now; one removed from the config
    /// since keeps their id and no groups. (With provisioned groups:
    /// [`Engine::known_user_now`].)
    pub fn known_user(&self, id: &UserId) -> User {
        self.catalog.user(id).cloned().unwrap_or_else(|| User {
            id: id.clone(),
            groups: Default::default(),
            roles: Default::default(),
            kind: Default::default(),
            token: None,
            external: None,
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn overdue_after(&self) -> Duration {
        self.overdue_after
    }

    /// Revocations outstanding now, and how many are overdue.
    pub async fn revocation_backlog(&self) -> Result<RevocationBacklog, EngineError> {
        let line = self.clock.now().minus(self.overdue_after);
        Ok(self.store.revocation_backlog(line).await?)
    }

    /// Break-glass uses awaiting review now, and how many are overdue.
    pub async fn review_backlog(&self) -> Result<ReviewBacklog, EngineError> {
        Ok(self.store.review_backlog(self.clock.now()).await?)
    }

    /// How long requests created since `since` waited for an approver,
    /// per entitlement, as of now.
    /// How access was used since `since` (`airlock_core::usage`), with the
    /// approval waits of the same requests; eligibility is every config
    /// user's (people and services) under the policies in force.
    pub async fn usage_report(
        &self,
        since: Timestamp,
    ) -> Result<(airlock_core::usage::Usage, Vec<ApprovalWaits>), EngineError> {
        let requests = self
            .store
            .list_requests(&RequestFilter {
                created_since: Some(since),
                limit: u32::MAX,
                ..RequestFilter::default()
            })
            .await?;
        let eligible: Vec<(UserId, EntitlementId)> = self
            .eligibilities()
            .into_iter()
            .map(|(user, entitlement, _)| (user, entitlement))
            .collect();
        Ok((
            airlock_core::usage::usage(&requests, &eligible),
            waits::approval_waits(&requests, self.clock.now()),
        ))
    }

    pub async fn approval_waits(
        &self,
        since: Timestamp,
    ) -> Result<Vec<ApprovalWaits>, EngineError> {
        let requests = self
            .store
            .list_requests(&RequestFilter {
                created_since: Some(since),
                limit: u32::MAX,
                ..RequestFilter::default()
            })
            .await?;
        Ok(waits::approval_waits(&requests, self.clock.now()))
    }

    /// The catalog's entitlement `id`, or the error naming it (with the
    /// nearest name there is).
    fn entitlement(
        &self,
        id: &EntitlementId,
    ) -> Result<&airlock_core::catalog::Entitlement, EngineError> {
        self.catalog
            .entitlement(id)
            .ok_or_else(|| EngineError::UnknownEntitlement {
                name: id.to_string(),
                suggestion: airlock_core::text::did_you_mean(
                    id.as_str(),
                    self.catalog.entitlements.keys().map(EntitlementId::as_str),
                )
                .map(str::to_owned),
            })
    }

    /// Creates a request (for a bundle, its parts, answering the first);
    /// auto-approved ones start provisioning at once.
    pub async fn submit(
        self: &Arc<Self>,
        requester: &User,
        ask: Ask,
    ) -> Result<AccessRequest, EngineError> {
        self.check_trusted()?;
        match ask.what.clone() {
            Asked::Entitlement(entitlement) => self.submit_one(requester, entitlement, ask).await,
            Asked::Bundle(name) => {
                let bundle =
                    self.catalog
                        .bundles
                        .get(&name)
                        .ok_or_else(|| EngineError::UnknownBundle {
                            suggestion: airlock_core::text::did_you_mean(
                                &name,
                                self.catalog.bundles.keys().map(String::as_str),
                            )
                            .map(str::to_owned),
                            name: name.clone(),
                        })?;
                let entitlements = bundle.entitlements.clone();
                self.submit_bundle(requester, Some(name), entitlements, ask)
                    .await
            }
            Asked::Entitlements(entitlements) => {
                self.submit_bundle(requester, None, entitlements, ask).await
            }
        }
    }

    /// Creates the parts of a bundle in one write: each part decided by the
    /// policy set on its own (its siblings among the requester's other
    /// requests, for separation of duties), then together by the core
    /// (`request::submit_bundle`).
    async fn submit_bundle(
        self: &Arc<Self>,
        requester: &User,
        name: Option<String>,
        entitlements: Vec<EntitlementId>,
        ask: Ask,
    ) -> Result<AccessRequest, EngineError> {
        let entitlements = entitlements
            .iter()
            .map(|e| self.entitlement(e).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        let mfa_at = ask.mfa_at;
        let refs: Vec<&airlock_core::catalog::Entitlement> = entitlements.iter().collect();
        let new = ask.new_request();
        let new = NewRequest {
            duration: request::bundle::shared_duration(&new, &refs),
            ..new
        };
        let mut reviewed = Vec::with_capacity(entitlements.len());
        for entitlement in &entitlements {
            self.check_mfa(requester, entitlement, &new, mfa_at)?;
            reviewed.push(
                self.eligibility_decision(&requester.id, &entitlement.id)
                    .await?,
            );
        }
        let ids: Vec<RequestId> = entitlements.iter().map(|_| new_request_id()).collect();
        let clock = Arc::clone(&self.clock);
        let lifecycle = Arc::clone(&self.lifecycle);
        let policies = Arc::clone(&self.policies);
        let routing = Arc::clone(&self.routing);
        let user = requester.clone();
        let part_ids = ids.clone();
        let transitions = self
            .store
            .create_requests(
                &ids,
                &requester.id,
                Box::new(move |open| {
                    let now = clock.now();
                    let set = policies.current();
                    let parts = entitlements
                        .iter()
                        .zip(&part_ids)
                        .zip(&reviewed)
                        .map(|((entitlement, id), reviewed)| {
                            let others = open
                                .keys()
                                .chain(entitlements.iter().map(|e| &e.id))
                                .filter(|e| **e != entitlement.id)
                                .cloned()
                                .collect();
                            let facts = policies.new_request_facts(
                                &user,
                                entitlement,
                                &new,
                                others,
                                mfa_at,
                                now,
                            );
                            request::BundlePart {
                                id: id.clone(),
                                entitlement,
                                open_request: open.get(&entitlement.id),
                                verdict: airlock_core::access_review::overrule(
                                    policy::verdict(&set, &facts),
                                    reviewed.as_ref(),
                                ),
                            }
                        })
                        .collect();
                    request::submit_bundle(new.clone(), name.clone(), parts, &user, &lifecycle, now)
                        .map(|ts| {
                            ts.into_iter()
                                .map(|t| with_notifications(t, &routing))
                                .collect()
                        })
                }),
            )
            .await?;
        for t in &transitions {
            info!(request = %t.request.id, user = %requester.id, entitlement = %t.request.entitlement,
                  state = t.request.state.as_str(), "bundle part submitted");
            self.after_commit(t);
        }
        transitions
            .into_iter()
            .next()
            .map(|t| t.request)
            .ok_or_else(|| {
                EngineError::Store(StoreError::Corrupt(
                    "a bundle was made of no part".to_owned(),
                ))
            })
    }

    /// Creates a request for one entitlement.
    async fn submit_one(
        self: &Arc<Self>,
        requester: &User,
        entitlement_id: EntitlementId,
        ask: Ask,
    ) -> Result<AccessRequest, EngineError> {
        let entitlement = self.entitlement(&entitlement_id)?;
        let mfa_at = ask.mfa_at;
        let new = ask.new_request();
        self.check_mfa(requester, entitlement, &new, mfa_at)?;
        // An access review that removed this eligibility refuses the ask;
        // a later one that confirms it lifts that.
        let reviewed = self
            .eligibility_decision(&requester.id, &entitlement_id)
            .await?;
        let clock = Arc::clone(&self.clock);
        let lifecycle = Arc::clone(&self.lifecycle);
        let policies = Arc::clone(&self.policies);
        let routing = Arc::clone(&self.routing);
        let (user, entitlement) = (requester.clone(), entitlement.clone());
        let id = new.id.clone();
        // Decided inside the store's write, so the requester's other open
        // requests (separation of duties) cannot change under the decision.
        let transition = self
            .store
            .create_request(
                &id,
                &requester.id,
                Box::new(move |open| {
                    let now = clock.now();
                    let others = open
                        .keys()
                        .filter(|e| **e != entitlement.id)
                        .cloned()
                        .collect();
                    let facts =
                        policies.new_request_facts(&user, &entitlement, &new, others, mfa_at, now);
                    let verdict = airlock_core::access_review::overrule(
                        policy::verdict(&policies.current(), &facts),
                        reviewed.as_ref(),
                    );
                    let same = open.get(&entitlement.id);
                    request::submit(
                        new.clone(),
                        &user,
                        &entitlement,
                        same,
                        verdict,
                        &lifecycle,
                        now,
                    )
                    .map(|t| with_notifications(t, &routing))
                }),
            )
            .await?;
        info!(request = %transition.request.id, user = %requester.id, entitlement = %entitlement_id,
              state = transition.request.state.as_str(), "request submitted");
        self.after_commit(&transition);
        Ok(transition.request)
    }

    /// Refuses, before anything is recorded, an ask that only stale or
    /// missing MFA stands in the way of (see [`EngineError::StepUp`]). The
    /// requester's other open requests are not read here: a
    /// separation-of-duties denial is the write's to decide and record.
    fn check_mfa(
        &self,
        requester: &User,
        entitlement: &airlock_core::catalog::Entitlement,
        new: &NewRequest,
        mfa_at: Option<Timestamp>,
    ) -> Result<(), EngineError> {
        let set = self.policies.current();
        if !set.demands_mfa() {
            return Ok(());
        }
        let facts = self.policies.new_request_facts(
            requester,
            entitlement,
            new,
            std::collections::BTreeSet::new(),
            mfa_at,
            self.clock.now(),
        );
        match set.mfa_step_up(&facts) {
            Some(max_age) => Err(EngineError::StepUp { max_age }),
            None => Ok(()),
        }
    }

    /// Applies what a person asks of a request besides deciding it. Only
    /// these reach the state machine from outside: approvals and denials go
    /// through [`Engine::decide`], which adds the policy set's verdict
    /// itself, and connector results and ticks are the engine's own.
    pub async fn act(
        self: &Arc<Self>,
        id: &RequestId,
        by: &User,
        command: UserCommand,
    ) -> Result<AccessRequest, EngineError> {
        let by = by.clone();
        let command = match command {
            UserCommand::Cancel => Command::Cancel { by },
            UserCommand::Release => Command::Release { by },
            UserCommand::Revoke { reason } => Command::Revoke { by, reason },
            UserCommand::Review {
                acceptable,
                comment,
            } => Command::Review {
                reviewer: by,
                acceptable,
                comment,
            },
        };
        let applied = self.apply(id, command).await?;
        self.after_commit_all(&applied);
        Ok(applied.main.request)
    }

    /// Asks for `extension` more on `by`'s active grant. The policy set
    /// decides it (its `extend` action, with the extension and the total)
    /// inside the write, like a new request; the core refuses anyone but
    /// the requester, a grant that is not active, a second outstanding
    /// extension and a total past the entitlement's maximum.
    pub async fn extend(
        self: &Arc<Self>,
        id: &RequestId,
        by: &User,
        extension: Duration,
        reason: String,
    ) -> Result<AccessRequest, EngineError> {
        self.check_trusted()?;
        let engine = Arc::clone(self);
        let by = by.clone();
        // Each part's extension is the policy set's to decide for that part.
        let applied = self
            .apply_each(
                id,
                Box::new(move |current| {
                    let policies = &engine.policies;
                    let facts = policies.stored_request_facts(&by, current);
                    // What an external principal's account leaves of it.
                    let within = current.extension_within_account(extension);
                    let verdict = policy::extension_verdict(&policies.current(), &facts, within);
                    // An entitlement gone from the config has no time to give.
                    let max_duration = engine
                        .catalog
                        .entitlement(&current.entitlement)
                        .map_or(Duration::ZERO, |e| e.max_duration_for(current.break_glass));
                    Command::Extend {
                        by: by.clone(),
                        extension,
                        reason: reason.clone(),
                        verdict,
                        max_duration,
                    }
                }),
            )
            .await?;
        let transition = &applied.main;
        info!(request = %id, extension_seconds = extension.as_secs(),
              state = transition.request.extension.as_ref().map_or("", |e| e.state.as_str()),
              "extension asked for");
        self.after_commit_all(&applied);
        Ok(applied.main.request)
    }

    /// At start, where this process alone makes connector attempts
    /// ([`Store::single_process`]), every attempt still marked in flight
    /// belonged to a process that is gone and will never report: each is
    /// settled now (recorded as of unknown outcome, then retried or cleaned
    /// up at once) rather than when its lease ends. Replicas sharing a
    /// database cannot tell their own lost attempts from another replica's
    /// live ones, so there the lease decides. Returns how many were settled.
    pub async fn recover_lost_attempts(self: &Arc<Self>) -> Result<usize, EngineError> {
        if !self.store.single_process() {
            return Ok(0);
        }
        // The core decides which of them had an attempt in flight.
        let outstanding = self
            .store
            .list_requests(&RequestFilter {
                connector_work: true,
                limit: u32::MAX,
                ..RequestFilter::default()
            })
            .await?;
        let mut settled = 0;
        for request in &outstanding {
            let applied = self.apply(&request.id, Command::Restarted).await?;
            let t = &applied.main;
            if !t.events.is_empty() || !t.effects.is_empty() {
                warn!(request = %request.id, "a connector attempt was in flight when the server stopped; settled now");
                settled += 1;
            }
            self.after_commit_all(&applied);
        }
        Ok(settled)
    }

    /// Records which policy set this replica started with.
    pub async fn record_policy_start(&self) -> Result<(), EngineError> {
        let set = self.policies.current();
        let event = policy_change::activated(
            None,
            set.version(),
            set.policy_ids().count(),
            Trigger::Start,
            None,
            self.clock.now(),
        );
        self.record(vec![event]).await
    }

    async fn record(&self, events: Vec<AuditEvent>) -> Result<(), EngineError> {
        for event in &events {
            self.metrics.event(event.action);
        }
        Ok(self.store.record(events).await?)
    }

    /// Re-reads the policy source. A set that fails to load or validate is
    /// refused, audited, and the one in force stays. Under the two-person
    /// rule a valid set is proposed (with what it changes for whom) rather
    /// than put in force.
    pub async fn change_policies(
        &self,
        by: Option<&User>,
        trigger: Trigger,
    ) -> Result<PolicyChange, EngineError> {
        self.check_trusted()?;
        let _one_at_a_time = self.policy_changes.lock().await;
        let set = match self.policies.source().load() {
            Ok(set) => set,
            Err(e) => {
                let event = policy_change::refused(&e.to_string(), trigger, by, self.clock.now());
                self.record(vec![event]).await?;
                return Err(EngineError::Policy(e));
            }
        };
        let current = self.policies.current();
        if self.policies.two_person() {
            let proposal = Proposal {
                id: format!("p{:012x}", rand::random::<u64>() >> 16),
                proposed_by: by.cloned(),
                proposed_at: self.clock.now(),
                base_version: current.version().to_owned(),
                version: set.version().to_owned(),
                changes: self.policies.changes(&set),
                approvals: Vec::new(),
            };
            self.record(vec![policy_change::proposed(&proposal, trigger)])
                .await?;
            self.policies.propose(proposal.clone(), set);
            return Ok(PolicyChange::Proposed(Box::new(proposal)));
        }
        let event = policy_change::activated(
            Some(current.version()),
            set.version(),
            set.policy_ids().count(),
            trigger,
            by,
            self.clock.now(),
        );
        // Recorded first: a set is never in force without its audit event.
        self.record(vec![event]).await?;
        Ok(PolicyChange::Activated(self.policies.activate(set)))
    }

    /// An admin approves a proposed policy set: it goes in force once it has
    /// every approval it needs ([`Proposal::approvals_needed`]); until then
    /// the proposal, with this approval recorded, keeps waiting.
    pub async fn approve_policy_change(
        &self,
        id: &str,
        approver: &User,
    ) -> Result<PolicyChange, EngineError> {
        self.check_trusted()?;
        let _one_at_a_time = self.policy_changes.lock().await;
        let pending = self
            .policies
            .proposal(id)
            .ok_or_else(|| EngineError::UnknownProposal(id.to_owned()))?;
        let in_force = self.policies.current();
        let policies = pending.set.policy_ids().count();
        let step = policy_change::approve(
            &pending.proposal,
            approver,
            in_force.version(),
            policies,
            self.clock.now(),
        )?;
        match step {
            ProposalStep::Recorded(event) => {
                self.record(vec![event]).await?;
                let proposal = self
                    .policies
                    .record_approval(id, &approver.id)
                    .ok_or_else(|| EngineError::UnknownProposal(id.to_owned()))?;
                Ok(PolicyChange::Proposed(Box::new(proposal)))
            }
            ProposalStep::Activated(event) => {
                self.record(vec![event]).await?;
                let previous = self.policies.install_proposal(&pending);
                Ok(PolicyChange::Activated(Reloaded {
                    previous,
                    version: pending.proposal.version.clone(),
                    policies,
                }))
            }
        }
    }

    /// Approves or denies `request` (as the caller read it) as `approver`,
    /// if the policy set in force lets them decide it (judged on the stored
    /// request, while it is held).
    pub async fn decide(
        self: &Arc<Self>,
        request: &AccessRequest,
        approver: &User,
        decision: ApproverDecision,
    ) -> Result<AccessRequest, EngineError> {
        if matches!(decision, ApproverDecision::Approve { .. }) {
            self.check_trusted()?;
        }
        let approver = approver.clone();
        let id = &request.id;
        // The requester's groups now, provisioned ones included (read before
        // the write: a membership change committed meanwhile re-decides the
        // request after it). A request's requester never changes, so the
        // caller's copy names them.
        let requester = self.known_user_now(&request.requester).await?;
        let engine = Arc::clone(self);
        // Each part's decision is the policy set's for that part: an
        // approver must be permitted on every part of a bundle.
        let applied = self
            .apply_each(
                id,
                Box::new(move |current| {
                    let policies = &engine.policies;
                    let requester = if requester.id == current.requester {
                        requester.clone()
                    } else {
                        engine.known_user(&current.requester)
                    };
                    let facts = policies.stored_request_facts(&requester, current);
                    let permission = policy::approver_verdict(
                        &policies.current(),
                        &policies.user_facts(&approver),
                        &facts,
                    );
                    let approver = approver.clone();
                    match decision.clone() {
                        ApproverDecision::Approve { comment } => Command::Approve {
                            approver,
                            comment,
                            permission,
                        },
                        ApproverDecision::Deny { reason } => Command::Deny {
                            approver,
                            reason,
                            permission,
                        },
                    }
                }),
            )
            .await?;
        self.after_commit_all(&applied);
        Ok(applied.main.request)
    }

    /// Applies `command` to request `id`, and to the other parts of its
    /// bundle as `request::apply_bundle` decides, in one write.
    async fn apply(&self, id: &RequestId, command: Command) -> Result<Applied, EngineError> {
        self.apply_each(id, Box::new(move |_| command.clone()))
            .await
    }

    /// Like [`Engine::apply`], with the command built for each part it
    /// applies to (its decision read while the part is held).
    async fn apply_each(
        &self,
        id: &RequestId,
        command: Box<dyn Fn(&AccessRequest) -> Command + Send + Sync>,
    ) -> Result<Applied, EngineError> {
        let clock = Arc::clone(&self.clock);
        let lifecycle = Arc::clone(&self.lifecycle);
        let routing = Arc::clone(&self.routing);
        let addressed = id.clone();
        // `now` is read while the rows are held, so committed changes carry
        // non-decreasing times.
        let transitions = self
            .store
            .update_bundle(
                id,
                Box::new(move |parts| {
                    request::apply_bundle(parts, &addressed, &*command, &lifecycle, clock.now())
                        .map(|ts| {
                            ts.into_iter()
                                .map(|t| with_notifications(t, &routing))
                                .collect()
                        })
                }),
            )
            .await?;
        Applied::of(transitions, id)
    }

    /// [`Engine::after_commit`] for every part a command changed.
    fn after_commit_all(self: &Arc<Self>, applied: &Applied) {
        self.after_commit(&applied.main);
        for t in &applied.others {
            if t.request.state.is_terminal() && !t.events.is_empty() {
                info!(request = %t.request.id, state = t.request.state.as_str(),
                      "a bundle's part ended with another");
            }
            self.after_commit(t);
        }
    }

    /// Starts the connector calls a committed transition asked for, and tells
    /// the scheduler its deadlines may have moved.
    fn after_commit(self: &Arc<Self>, transition: &Transition) {
        if transition.request.state.is_terminal() {
            if let Ok(mut held) = self.credentials.lock() {
                held.remove(&transition.request.id);
            }
        }
        for event in &transition.events {
            self.metrics.event(event.action);
        }
        for effect in &transition.effects {
            let engine = Arc::clone(self);
            let request = transition.request.clone();
            let effect = effect.clone();
            let span = tracing::info_span!("connector_call", request = %request.id, action = effect.action.as_str(), token = effect.token);
            tokio::spawn(async move { engine.perform(request, effect).await }.instrument(span));
        }
        if let Some(due) = transition.request.next_due() {
            self.due_wake.committed(due);
        }
        if !transition.notifications.is_empty() {
            self.outbox_wake.notify_one();
        }
    }

    async fn perform(self: Arc<Self>, request: AccessRequest, effect: Effect) {
        let Ok(_permit) = Arc::clone(&self.calls).acquire_owned().await else {
            return;
        };
        // A replica that stalled (a pause, a cut) after claiming may find its
        // claim taken over by another: drop the stale work rather than act on
        // it. (A result that still arrives late is fenced by the token.)
        match self.store.get_request(&request.id).await {
            Ok(Some(current)) if !claim_is_current(&current, &effect, self.clock.now()) => {
                warn!("claim superseded before the call; dropping stale work");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "cannot re-check the claim; the lease will retry");
                return;
            }
        }
        let result = self.call_connector(&request, &effect).await;
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(e) if e.is_retryable() => CallOutcome::Retryable,
            Err(_) => CallOutcome::Permanent,
        };
        self.metrics.call(effect.action, outcome);
        if let (Ok(_), JobAction::Revoke, State::Expired, Some(expired)) =
            (&result, effect.action, request.state, request.expires_at)
        {
            self.metrics.revocation_lag(expired.until(self.clock.now()));
        }
        let command = match &result {
            Ok(granted) => {
                debug!("connector call succeeded");
                Command::JobSucceeded {
                    action: effect.action,
                    token: effect.token,
                    certificate: granted.certificate.clone(),
                }
            }
            Err(e) => {
                warn!(error = %e, "connector call failed");
                Command::JobFailed {
                    action: effect.action,
                    token: effect.token,
                    error: e.message().to_owned(),
                    retryable: e.is_retryable(),
                }
            }
        };
        match self.apply(&request.id, command).await {
            Ok(applied) => {
                let transition = &applied.main;
                // Hand out a credential only for the attempt that counted
                // (an extension's re-grant may issue a new one: a temporary
                // login's password is set again with its expiry).
                let accepted = transition
                    .events
                    .iter()
                    .any(|e| matches!(e.action, AuditAction::Granted | AuditAction::Extended));
                if let (
                    true,
                    Ok(Granted {
                        credential: Some(credential),
                        ..
                    }),
                ) = (accepted, result)
                {
                    self.hold_credential(&transition.request, credential);
                }
                self.after_commit_all(&applied);
            }
            // The claim's lease runs out and the scheduler retries the call.
            Err(e) => error!(error = %e, "could not record the connector result"),
        }
    }

    async fn call_connector(
        &self,
        request: &AccessRequest,
        effect: &Effect,
    ) -> Result<Granted, ConnectorError> {
        let connector = self
            .catalog
            .entitlement(&request.entitlement)
            .and_then(|e| self.connectors.get(&e.connector))
            .ok_or_else(|| {
                ConnectorError::Retryable(format!(
                    "entitlement `{}` has no configured connector",
                    request.entitlement
                ))
            })?;
        let spec = grant_spec(request, effect.token);
        let limit = connector.call_timeout();
        let call = async {
            match effect.action {
                JobAction::Grant => connector.grant(&spec).await,
                JobAction::Revoke => connector.revoke(&spec).await.map(|()| Granted::default()),
            }
        };
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(ConnectorError::Retryable(format!(
                "timed out after {}s",
                limit.as_secs()
            )))
        })
    }

    /// Runs deadlines as they fall due until `shutdown` turns true.
    pub async fn run_scheduler(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Deadlines committed before this are in what the pass reads.
            self.due_wake.forget();
            let progressed = self.run_due().await;
            let pause = match progressed {
                Ok(n) if n == SCHEDULER_BATCH as usize => continue,
                // Claims (this replica's or another's) run out within a
                // lease: look again by then for work whose claim lapsed.
                Ok(_) => match self.store.next_due_at(self.clock.now()).await {
                    Ok(Some(due)) => self.clock.now().until(due).min(DUE_CLAIM_LEASE),
                    Ok(None) => DUE_CLAIM_LEASE,
                    Err(e) => {
                        error!(error = %e, "scheduler cannot read deadlines");
                        Duration::from_secs(1)
                    }
                },
                Err(e) => {
                    error!(error = %e, "scheduler pass failed");
                    Duration::from_secs(1)
                }
            };
            // On the engine's clock, so a test's injected time wakes it. A
            // deadline committed meanwhile only brings the wake-up forward:
            // the next pass claims and reads when something is due, not at
            // every commit.
            let mut wake_at = self.clock.now().plus(pause);
            loop {
                if let Some(told) = self.due_wake.earliest() {
                    wake_at = wake_at.min(told);
                }
                tokio::select! {
                    () = self.clock.sleep_until(wake_at) => break,
                    () = self.due_wake.notify.notified() => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }

    /// Handles every request that is due now; returns how many there were.
    async fn run_due(self: &Arc<Self>) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let due = self
            .store
            .claim_due(now, DUE_CLAIM_LEASE, SCHEDULER_BATCH)
            .await?;
        // All at once, so the store commits them together rather than one
        // durable commit after another.
        let mut ticks = tokio::task::JoinSet::new();
        for id in due.iter().cloned() {
            let engine = Arc::clone(self);
            ticks.spawn(async move {
                let result = engine.apply(&id, Command::Tick).await;
                (id, result)
            });
        }
        let mut changed = 0;
        while let Some(joined) = ticks.join_next().await {
            match joined {
                Ok((_, Ok(applied))) => {
                    let t = &applied.main;
                    if !t.events.is_empty() || !t.effects.is_empty() {
                        changed += 1;
                    }
                    self.after_commit_all(&applied);
                }
                Ok((id, Err(e))) => error!(request = %id, error = %e, "scheduled work failed"),
                Err(e) => error!(error = %e, "scheduled work panicked"),
            }
        }
        if changed == 0 && !due.is_empty() {
            // Rows looked due but nothing was. Their claims keep this pass
            // from spinning on them until the lease ends.
            let first: Vec<&str> = due.iter().take(5).map(RequestId::as_str).collect();
            warn!(count = due.len(), first = ?first, "due requests needed no change");
            return Ok(0);
        }
        Ok(due.len())
    }

    pub async fn get(&self, id: &RequestId) -> Result<AccessRequest, EngineError> {
        self.store
            .get_request(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.clone()))
    }

    /// Every part of `request`'s bundle as stored, in the bundle's order
    /// (`request` alone when it is no part of one).
    pub async fn bundle_parts(
        &self,
        request: &AccessRequest,
    ) -> Result<Vec<AccessRequest>, EngineError> {
        let Some(bundle) = &request.bundle else {
            return Ok(vec![request.clone()]);
        };
        let mut parts = Vec::with_capacity(bundle.parts.len());
        for id in &bundle.parts {
            if *id == request.id {
                parts.push(request.clone());
            } else if let Some(part) = self.store.get_request(id).await? {
                parts.push(part);
            }
        }
        Ok(parts)
    }

    pub async fn list(&self, filter: &RequestFilter) -> Result<Vec<AccessRequest>, EngineError> {
        Ok(self.store.list_requests(filter).await?)
    }

    /// The notification outbox at a glance, now.
    pub async fn notification_summary(&self) -> Result<OutboxSummary, EngineError> {
        Ok(self.store.notification_summary(self.clock.now()).await?)
    }

    pub async fn notifications(
        &self,
        filter: &OutboxFilter,
    ) -> Result<Vec<OutboxEntry>, EngineError> {
        Ok(self.store.list_notifications(filter).await?)
    }

    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, EngineError> {
        Ok(self.store.list_audit(filter).await?)
    }

    pub async fn verify_audit(&self) -> Result<ChainReport, EngineError> {
        Ok(self.store.verify_audit().await?)
    }

    /// The database answers with the right schema and the audit record
    /// can be trusted.
    pub async fn ready(&self) -> Result<(), EngineError> {
        self.store.ping().await?;
        self.check_trusted()
    }

    /// Records that the operator chose to serve on a broken chain.
    pub async fn record_accepted_break(
        &self,
        problem: &str,
        seq: Option<i64>,
    ) -> Result<(), EngineError> {
        let mut details =
            std::collections::BTreeMap::from([("problem".to_owned(), problem.to_owned())]);
        if let Some(seq) = seq {
            details.insert("seq".to_owned(), seq.to_string());
        }
        self.record(vec![AuditEvent {
            at: self.clock.now(),
            actor: airlock_core::audit::Actor::System,
            action: AuditAction::AuditBreakAccepted,
            request: None,
            entitlement: None,
            subject: None,
            details,
        }])
        .await
    }

    /// Runs every connector's health check, for the log at start.
    pub async fn check_connectors(&self) {
        for (name, connector) in &self.connectors {
            match tokio::time::timeout(connector.call_timeout(), connector.health()).await {
                Ok(Ok(())) => info!(connector = %name, "connector healthy"),
                Ok(Err(e)) => warn!(connector = %name, error = %e, "connector unhealthy"),
                Err(_) => warn!(connector = %name, "connector health check timed out"),
            }
        }
    }
}

/// What a command committed: the transition of the request it was given
/// to, and those of the other parts of its bundle.
struct Applied {
    main: Transition,
    others: Vec<Transition>,
}

impl Applied {
    fn of(transitions: Vec<Transition>, id: &RequestId) -> Result<Applied, EngineError> {
        let (main, others): (Vec<Transition>, Vec<Transition>) =
            transitions.into_iter().partition(|t| t.request.id == *id);
        let main = main.into_iter().next().ok_or_else(|| {
            EngineError::Store(StoreError::Corrupt(format!(
                "a change of `{id}` decided nothing for it"
            )))
        })?;
        Ok(Applied { main, others })
    }
}

/// A transition with the notifications it causes, decided by the core from
/// the transition and the routing (written by the store with the change).
fn with_notifications(mut t: Transition, routing: &Routing) -> Transition {
    t.notifications = notify::plan(&t, routing);
    t
}

/// What a connector needs to grant or revoke `request`, fenced by `claim`.
fn grant_spec(request: &AccessRequest, claim: u64) -> GrantSpec {
    GrantSpec {
        request_id: request.id.clone(),
        user: request.requester.clone(),
        entitlement: request.entitlement.clone(),
        expires_at: request.provisioned_expiry().unwrap_or(request.created_at),
        claim,
        public_key: request.public_key.clone(),
    }
}

/// Whether `effect` is still the request's live claim at `now`.
fn claim_is_current(request: &AccessRequest, effect: &Effect, now: Timestamp) -> bool {
    request.claim_token == effect.token
        && request.job.as_ref().is_some_and(|j| {
            j.action == effect.action && j.claimed_until.is_some_and(|until| until > now)
        })
}

fn new_request_id() -> RequestId {
    RequestId::from_entropy(rand::random())
}
