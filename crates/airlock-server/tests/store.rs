//! The store conformance suite: every test runs against SQLite (a fresh file)
//! and against PostgreSQL (a fresh database on the server named by
//! `AIRLOCK_TEST_POSTGRES_URL`), through the same `Store` trait.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::approval::{ApprovalTier, ApproverVerdict, Route, Verdict};
use airlock_core::audit::{ChainVerifier, Checkpoint};
use airlock_core::catalog::{Entitlement, External, Role, TicketRule, User};
use airlock_core::directory::{Consequence, DirectoryGroup, DirectoryUser, Email, Refusal};
use airlock_core::drift::DriftPolicy;
use airlock_core::notify::{self, Routes, Routing, Topic};
use airlock_core::request::{
    self, Command, ExtensionState, JobAction, LifecycleSettings, NewRequest, Rejection, State,
    Transition,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};
use airlock_server::store::directory::{
    Committed, Decided, DirectoryWrite, Filter, ListQuery, Standing,
};
use airlock_server::store::record::RequestRecord;
use airlock_server::store::sql::{Backend, Explained, Location, SqlStore};
use airlock_server::store::{
    AuditFilter, Delivery, Exclusive, OutboxEntry, OutboxFilter, OutboxState, PageKey,
    RequestFilter, RevocationBacklog, Store, StoreError,
};
use sqlx::Connection;

/// A store under test and how to reach its database behind its back.
struct Fixture {
    name: &'static str,
    store: Arc<SqlStore>,
    raw_url: String,
    _dir: Option<tempfile::TempDir>,
    db: Option<airlock_testkit::FreshDatabase>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.db");
    let store = SqlStore::open(&Location::Sqlite(path.clone()))
        .await
        .unwrap();
    Fixture {
        name: "sqlite",
        store: Arc::new(store),
        raw_url: format!("sqlite://{}", path.display()),
        _dir: Some(dir),
        db: None,
    }
}

/// A fresh database on the test server, so tests never see each other's rows.
async fn postgres() -> Option<Fixture> {
    let base = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL")?;
    let db = airlock_testkit::FreshDatabase::create(&base, "airlock_store").await;
    let store = SqlStore::open(&Location::Postgres(db.url.clone()))
        .await
        .unwrap();
    Some(Fixture {
        name: "postgres",
        store: Arc::new(store),
        raw_url: db.url.clone(),
        _dir: None,
        db: Some(db),
    })
}

impl Fixture {
    async fn raw(&self) -> sqlx::AnyConnection {
        sqlx::AnyConnection::connect(&self.raw_url).await.unwrap()
    }

    fn location(&self) -> Location {
        if self.raw_url.starts_with("sqlite://") {
            Location::Sqlite(self.raw_url.trim_start_matches("sqlite://").into())
        } else {
            Location::Postgres(self.raw_url.clone())
        }
    }

    /// Runs `sql` on the database behind the store's back, then opens it
    /// again, the old store closed first: a schema changed back to an
    /// earlier version is migrated again.
    async fn reopened_after(self, sql: &[&str]) -> Fixture {
        let mut raw = self.raw().await;
        for statement in sql {
            sqlx::query(statement).execute(&mut raw).await.unwrap();
        }
        drop(raw);
        let location = self.location();
        let Fixture {
            name,
            store,
            raw_url,
            _dir,
            db,
        } = self;
        drop(store);
        let store = Arc::new(SqlStore::open(&location).await.unwrap());
        Fixture {
            name,
            store,
            raw_url,
            _dir,
            db,
        }
    }

    async fn cleanup(self) {
        let Fixture { store, db, .. } = self;
        drop(store);
        if let Some(db) = db {
            db.drop_now().await;
        }
    }
}

/// Runs `test` against every available backend, each within a time limit.
async fn on_every_store<F, Fut>(test: F)
where
    F: Fn(Arc<SqlStore>, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut fixtures = vec![sqlite().await];
    fixtures.extend(postgres().await);
    for fixture in fixtures {
        let name = fixture.name;
        tokio::time::timeout(
            Duration::from_secs(60),
            test(Arc::clone(&fixture.store), fixture.raw_url.clone()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out"));
        fixture.cleanup().await;
    }
}

fn user(name: &str, groups: &[&str], roles: &[Role]) -> User {
    User {
        id: UserId::parse(name).unwrap(),
        groups: groups
            .iter()
            .map(|g| GroupName::parse(g).unwrap())
            .collect(),
        roles: roles.iter().copied().collect(),
        kind: Default::default(),
        token: None,
        external: None,
    }
}

/// An entitlement and how many `approvers` its requests need (0: auto).
#[derive(Clone)]
struct Ent {
    entitlement: Entitlement,
    approvals: u32,
}

impl Ent {
    fn verdict(&self) -> Verdict {
        let route = if self.approvals == 0 {
            Route::AutoApproved
        } else {
            Route::NeedsApprovals(vec![ApprovalTier {
                count: self.approvals,
                groups: BTreeSet::from([GroupName::parse("approvers").unwrap()]),
                policy: "approvers".to_owned(),
            }])
        };
        Verdict {
            route,
            policy_version: "v1".to_owned(),
            policies: vec!["p".to_owned()],
            errors: Vec::new(),
            waiting: Default::default(),
        }
    }
}

/// The policy set lets every approver decide; the store tests are about storage.
fn permitted() -> ApproverVerdict {
    ApproverVerdict {
        outcome: Ok(vec!["approvers".to_owned()]),
        policy_version: "v1".to_owned(),
    }
}

fn entitlement(approvals: u32) -> Ent {
    let entitlement = Entitlement {
        id: EntitlementId::parse("db").unwrap(),
        description: String::new(),
        max_duration: Duration::from_secs(3600),
        default_duration: Duration::from_secs(600),
        reason_required: true,
        ticket: TicketRule {
            required: false,
            pattern: None,
        },
        connector: "c".into(),
        drift: DriftPolicy::Report,
        sensitivity: airlock_core::standing::Sensitivity::default(),
        waiting: Default::default(),
        break_glass: None,
        open_to_externals: false,
    };
    Ent {
        entitlement,
        approvals,
    }
}

const T0: i64 = 1_800_000_000_000;

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0 + offset_ms)
}

/// A one-minute request with a reason, starting now.
fn new_request(id: &str) -> NewRequest {
    NewRequest {
        id: RequestId::parse(id).unwrap(),
        duration: Some(Duration::from_secs(60)),
        reason: "conformance".into(),
        ticket: None,
        start_at: None,
        break_glass: false,
        public_key: None,
    }
}

async fn create(
    store: &SqlStore,
    requester: &User,
    ent: &Ent,
    id: &str,
    now: Timestamp,
) -> Result<request::AccessRequest, StoreError> {
    create_routed(store, requester, ent, id, now, Routing::default())
        .await
        .map(|t| t.request)
}

/// Creates a request whose change carries the notifications the core plans
/// under `routing` (none under the default).
async fn create_routed(
    store: &SqlStore,
    requester: &User,
    ent: &Ent,
    id: &str,
    now: Timestamp,
    routing: Routing,
) -> Result<Transition, StoreError> {
    let new = new_request(id);
    let (u, e, verdict) = (requester.clone(), ent.entitlement.clone(), ent.verdict());
    store
        .create_request(
            &new.id.clone(),
            &requester.id,
            Box::new(move |open| {
                request::submit(
                    new.clone(),
                    &u,
                    &e,
                    open.get(&e.id),
                    verdict.clone(),
                    &LifecycleSettings::default(),
                    now,
                )
                .map(|mut t| {
                    t.notifications = notify::plan(&t, &routing);
                    t
                })
            }),
        )
        .await
}

async fn apply(
    store: &SqlStore,
    id: &str,
    command: Command,
    now: Timestamp,
) -> Result<request::AccessRequest, StoreError> {
    store
        .update_request(
            &RequestId::parse(id).unwrap(),
            Box::new(move |current| {
                request::apply(current, command.clone(), &LifecycleSettings::default(), now)
            }),
        )
        .await
        .map(|t| t.request)
}

async fn audit_count(store: &SqlStore) -> usize {
    store
        .list_audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_commits_with_its_audit_events_and_reads_back_equal() {
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        let bob = user("bob", &["approvers"], &[]);
        let created = create(&store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        assert_eq!(created.state, State::Pending);
        assert_eq!(
            store.get_request(&created.id).await.unwrap().as_ref(),
            Some(&created)
        );
        let approved = apply(
            &store,
            "r1",
            Command::Approve {
                approver: bob,
                comment: Some("ok".into()),
                permission: permitted(),
            },
            at(10),
        )
        .await
        .unwrap();
        assert_eq!(approved.state, State::Approved);
        assert_eq!(
            store.get_request(&approved.id).await.unwrap(),
            Some(approved.clone())
        );
        let events = store
            .list_audit(&AuditFilter {
                request: Some("r1".into()),
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["requested", "approval_recorded", "approved"]);
        assert_eq!(events[2].actor, "bob");
        let report = store.verify_audit().await.unwrap();
        assert_eq!((report.checked, report.first_break), (3, None));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_change_writes_nothing() {
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng", "approvers"], &[]);
        create(&store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        let before = store
            .get_request(&RequestId::parse("r1").unwrap())
            .await
            .unwrap();
        let err = apply(
            &store,
            "r1",
            Command::Approve {
                approver: alice.clone(),
                comment: None,
                permission: permitted(),
            },
            at(5),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, StoreError::Rejected(Rejection::Forbidden(_))),
            "{err:?}"
        );
        assert_eq!(
            store
                .get_request(&RequestId::parse("r1").unwrap())
                .await
                .unwrap(),
            before
        );
        assert_eq!(audit_count(&store).await, 1);
        let missing = apply(&store, "nope", Command::Tick, at(5))
            .await
            .unwrap_err();
        assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_open_request_per_user_and_entitlement() {
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        create(&store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        let err = create(&store, &alice, &entitlement(1), "r2", at(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Rejected(Rejection::Conflict(_))),
            "{err:?}"
        );
        apply(&store, "r1", Command::Cancel { by: alice.clone() }, at(2))
            .await
            .unwrap();
        create(&store, &alice, &entitlement(1), "r3", at(3))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_find_the_open_request_by_index_and_add_up_on_it() {
    use airlock_core::request::CheckActivity;
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        let (alice_id, db) = (alice.id.clone(), EntitlementId::parse("db").unwrap());
        assert_eq!(store.open_request(&alice_id, &db).await.unwrap(), None);
        let r1 = create(&store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        let open = store.open_request(&alice_id, &db).await.unwrap().unwrap();
        assert_eq!((open.id, open.state), (r1.id.clone(), r1.state));
        let other = EntitlementId::parse("logs").unwrap();
        assert_eq!(store.open_request(&alice_id, &other).await.unwrap(), None);

        // Counts add up, the last check only moves forward, and a request
        // that does not exist is skipped.
        let checked = |count, last| CheckActivity {
            count,
            last_at: Some(at(last)),
        };
        let gone = RequestId::parse("gone").unwrap();
        store
            .add_checks(vec![
                (r1.id.clone(), checked(3, 500)),
                (gone, checked(1, 1)),
            ])
            .await
            .unwrap();
        store
            .add_checks(vec![(r1.id.clone(), checked(2, 400))])
            .await
            .unwrap();
        let stored = store.get_request(&r1.id).await.unwrap().unwrap();
        assert_eq!(stored.checks, checked(5, 500));
        // A change of the request keeps them: its upsert never writes them.
        let ended = apply(&store, "r1", Command::Cancel { by: alice.clone() }, at(600))
            .await
            .unwrap();
        let stored = store.get_request(&r1.id).await.unwrap().unwrap();
        assert_eq!(stored.state, ended.state);
        assert_eq!(stored.checks, checked(5, 500));
        assert_eq!(store.open_request(&alice_id, &db).await.unwrap(), None);

        // Many at once (past one statement's rows).
        let mut many = Vec::new();
        for i in 0..200 {
            let u = user(&format!("u{i}"), &["eng"], &[]);
            let r = create(&store, &u, &entitlement(0), &format!("m{i}"), at(0))
                .await
                .unwrap();
            many.push((r.id, checked(i + 1, 7)));
        }
        store.add_checks(many.clone()).await.unwrap();
        for (id, checks) in [&many[0], &many[199]] {
            assert_eq!(
                store.get_request(id).await.unwrap().unwrap().checks,
                *checks
            );
        }

        // Lookups are answered from the one-open-request index, alone or
        // grouped, and a group answers each lookup with its own request.
        for n in [1, 2, 256] {
            let plan = store.check_lookup_plan(n).await.unwrap();
            assert!(plan.contains("requests_one_open"), "{n} pairs: {plan}");
        }
        let u = |i: usize| UserId::parse(&format!("u{i}")).unwrap();
        let mut lookups = tokio::task::JoinSet::new();
        for i in 0..200 {
            let (store, db, who) = (Arc::clone(&store), db.clone(), u(i));
            lookups.spawn(async move {
                let open = store.open_request(&who, &db).await.unwrap();
                (i, open.map(|o| o.id))
            });
        }
        while let Some(found) = lookups.join_next().await {
            let (i, id) = found.unwrap();
            assert_eq!(id.as_ref(), Some(&many[i].0), "u{i}");
        }
    })
    .await;
}

/// Creates pending requests r0, r1, r2 at 0 s, 1 s, 2 s (by u1, u2, u3);
/// returns the pending timeout in ms, so r0 falls due at `at(timeout)`.
async fn three_pending_a_second_apart(store: &SqlStore) -> i64 {
    let ent = entitlement(1);
    for (i, name) in ["u1", "u2", "u3"].iter().enumerate() {
        let u = user(name, &["eng"], &[]);
        create(store, &u, &ent, &format!("r{i}"), at(i as i64 * 1000))
            .await
            .unwrap();
    }
    LifecycleSettings::default().pending_timeout.as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_request_never_overwrites_one_with_the_same_id() {
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        let bob = user("bob", &["eng"], &[]);
        let ent = entitlement(1);
        let first = create(&store, &alice, &ent, "r1", at(0)).await.unwrap();
        let r1_events = || async {
            let filter = AuditFilter {
                request: Some("r1".to_owned()),
                limit: 100,
                ..AuditFilter::default()
            };
            store.list_audit(&filter).await.unwrap()
        };
        let events = r1_events().await;
        // In the same batch as another create, and alone.
        let (taken, other) = tokio::join!(
            create(&store, &bob, &ent, "r1", at(1)),
            create(&store, &bob, &ent, "r2", at(1)),
        );
        assert!(
            matches!(&taken, Err(StoreError::Corrupt(m)) if m.contains("already taken")),
            "{taken:?}"
        );
        other.unwrap();
        let taken = create(&store, &alice, &ent, "r1", at(2)).await;
        assert!(matches!(taken, Err(StoreError::Corrupt(_))), "{taken:?}");
        let stored = store.get_request(&first.id).await.unwrap().unwrap();
        assert_eq!(stored, first);
        assert_eq!(r1_events().await, events);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_found_in_order_and_a_no_op_tick_writes_nothing() {
    on_every_store(|store, _| async move {
        let timeout = three_pending_a_second_apart(&store).await;
        assert_eq!(store.next_due_at(at(0)).await.unwrap(), Some(at(timeout)));
        assert!(store
            .claim_due(at(timeout - 1), LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        let due = store
            .claim_due(at(timeout + 1500), LEASE, 10)
            .await
            .unwrap();
        let due: Vec<&str> = due.iter().map(RequestId::as_str).collect();
        assert_eq!(due, ["r0", "r1"]);
        let events = audit_count(&store).await;
        apply(&store, "r2", Command::Tick, at(5)).await.unwrap();
        assert_eq!(
            audit_count(&store).await,
            events,
            "a tick with nothing due changed the log"
        );
        let timed_out = apply(&store, "r0", Command::Tick, at(timeout + 1500))
            .await
            .unwrap();
        assert_eq!(timed_out.state, State::TimedOut);
        // r1 is claimed (until its lease ends), so r2 is next.
        let now = at(timeout + 1500);
        assert_eq!(
            store.next_due_at(now).await.unwrap(),
            Some(at(timeout + 2000))
        );
        let pending = store
            .list_requests(&RequestFilter {
                states: vec![State::Pending],
                limit: 10,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(pending.len(), 2);
        let mine = store
            .list_requests(&RequestFilter {
                requester: Some(UserId::parse("u1").unwrap()),
                limit: 10,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(mine.len(), 1);
    })
    .await;
}

/// The due-claim lease the tests use.
const LEASE: Duration = Duration::from_secs(10);

fn ids(claimed: &[RequestId]) -> Vec<&str> {
    claimed.iter().map(RequestId::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_work_is_claimed_once_until_the_lease_ends_or_the_request_changes() {
    on_every_store(|store, _| async move {
        let bob = user("bob", &["approvers"], &[]);
        let timeout = three_pending_a_second_apart(&store).await;
        let lease = LEASE.as_millis() as i64;
        let first = at(timeout + 1500);
        let claimed = store.claim_due(first, LEASE, 10).await.unwrap();
        assert_eq!(ids(&claimed), ["r0", "r1"]);
        assert!(
            store.claim_due(first, LEASE, 10).await.unwrap().is_empty(),
            "claimed work was handed out twice"
        );
        // The unclaimed r2 is next; once the claims lapse, r0 again.
        assert_eq!(
            store.next_due_at(first).await.unwrap(),
            Some(at(timeout + 2000))
        );
        let claimed = store
            .claim_due(at(timeout + 2000), LEASE, 10)
            .await
            .unwrap();
        assert_eq!(ids(&claimed), ["r2"]);
        assert_eq!(store.next_due_at(at(timeout + 2000)).await.unwrap(), None);
        assert_eq!(
            store.next_due_at(at(timeout + 1500 + lease)).await.unwrap(),
            Some(at(timeout))
        );

        // A change ends the claim: approving r2 moves its deadline to the
        // grant call's lease, and that is claimable before r2's claim ends.
        let approved = apply(
            &store,
            "r2",
            Command::Approve {
                approver: bob,
                comment: None,
                permission: permitted(),
            },
            at(timeout - 60_000),
        )
        .await
        .unwrap();
        let retry = approved.next_due().unwrap();
        assert!(retry.unix_millis() < at(timeout + 2000 + lease).unix_millis());
        // (Held past the checks below.)
        let claimed = store.claim_due(retry, 3 * LEASE, 10).await.unwrap();
        assert_eq!(ids(&claimed), ["r2"]);

        // A lapsed claim is handed out again (a replica stalled).
        assert!(store
            .claim_due(at(timeout + 1500 + lease - 1), LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        let claimed = store
            .claim_due(at(timeout + 1500 + lease), LEASE, 10)
            .await
            .unwrap();
        assert_eq!(ids(&claimed), ["r0", "r1"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_share_the_due_work_without_overlap() {
    on_every_store(|store, raw_url| async move {
        // Another replica: a second store on the same database.
        let other = Arc::new(SqlStore::open(&Location::parse(&raw_url)).await.unwrap());
        let ent = entitlement(1);
        const N: usize = 300;
        for i in 0..N {
            let u = user(&format!("u{i}"), &["eng"], &[]);
            create(&store, &u, &ent, &format!("r{i:03}"), at(0))
                .await
                .unwrap();
        }
        let now = at(LifecycleSettings::default().pending_timeout.as_millis() as i64);
        let claimer = |store: Arc<SqlStore>| async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(now, LEASE, 16).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        };
        let (a, b) = tokio::join!(
            tokio::spawn(claimer(Arc::clone(&store))),
            tokio::spawn(claimer(Arc::clone(&other)))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let all: BTreeSet<RequestId> = a.iter().chain(&b).cloned().collect();
        assert_eq!(a.len() + b.len(), N, "a request was claimed twice");
        assert_eq!(all.len(), N, "a due request was never claimed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_background_work_runs_on_one_replica_at_a_time() {
    on_every_store(|store, raw_url| async move {
        let other = Arc::new(SqlStore::open(&Location::parse(&raw_url)).await.unwrap());
        let work = Exclusive::ScheduledReconciliation;
        let first = store
            .try_exclusive(work)
            .await
            .unwrap()
            .expect("nobody holds it");
        let second = other.try_exclusive(work).await.unwrap();
        if store.backend() == Backend::Sqlite {
            // One process per SQLite file: nothing to share.
            assert!(second.is_some());
            return;
        }
        assert!(second.is_none(), "two replicas held the same work");
        first.release().await;
        let taken = other.try_exclusive(work).await.unwrap().expect("released");
        assert!(store.try_exclusive(work).await.unwrap().is_none());
        // A holder that goes away without releasing (a crash) frees it too.
        drop(taken);
        let again = airlock_testkit::until(Duration::from_secs(10), "the lock to be freed", || {
            let store = Arc::clone(&store);
            async move { store.try_exclusive(work).await.unwrap() }
        })
        .await;
        again.release().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_serialise_into_one_consistent_history() {
    on_every_store(|store, _| async move {
        let ent = entitlement(1);
        let n = 40;
        for i in 0..n {
            let u = user(&format!("u{i}"), &["eng"], &[]);
            create(&store, &u, &ent, &format!("r{i}"), at(0))
                .await
                .unwrap();
        }
        // Three approvers race for every request: exactly one approval wins each.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            for approver in ["a1", "a2", "a3"] {
                let store = Arc::clone(&store);
                tasks.spawn(async move {
                    let who = user(approver, &["approvers"], &[]);
                    apply(
                        &store,
                        &format!("r{i}"),
                        Command::Approve {
                            approver: who,
                            comment: None,
                            permission: permitted(),
                        },
                        at(10),
                    )
                    .await
                });
            }
        }
        let (mut ok, mut conflicts) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Rejected(Rejection::Conflict(_))) => conflicts += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!((ok, conflicts), (n, 2 * n));
        let approved = store
            .list_requests(&RequestFilter {
                states: vec![State::Approved],
                limit: 1000,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(approved.len(), n);
        assert!(approved.iter().all(|r| r.approvals.len() == 1));
        let report = store.verify_audit().await.unwrap();
        // requested, approval_recorded, approved
        assert_eq!((report.checked, report.first_break), (3 * n as u64, None));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_refuses_edits_and_verify_finds_them() {
    on_every_store(|store, raw_url| async move {
        let alice = user("alice", &["eng"], &[]);
        create(&store, &alice, &entitlement(0), "r1", at(0))
            .await
            .unwrap();
        let mut raw = sqlx::AnyConnection::connect(&raw_url).await.unwrap();
        let edit = "UPDATE audit_events SET actor = 'mallory' WHERE seq = 1";
        assert!(
            sqlx::query(edit).execute(&mut raw).await.is_err(),
            "audit events must be append-only"
        );
        assert!(sqlx::query("DELETE FROM audit_events")
            .execute(&mut raw)
            .await
            .is_err());
        let drop_guard = if raw_url.starts_with("sqlite") {
            "DROP TRIGGER audit_events_no_update"
        } else {
            "DROP TRIGGER audit_events_no_update_or_delete ON audit_events"
        };
        sqlx::query(drop_guard).execute(&mut raw).await.unwrap();
        sqlx::query(edit).execute(&mut raw).await.unwrap();
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.first_break.map(|b| b.seq()), Some(1));
    })
    .await;
}

/// Every statement that could change or remove a stored event, as someone
/// holding the database's credentials would try them: each is refused and
/// the event stays as it was. (SQLite's REPLACE deletes the row in its way
/// without firing DELETE triggers; PostgreSQL's upsert fires UPDATE triggers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_to_change_a_stored_event_is_refused() {
    on_every_store(|store, raw_url| async move {
        let alice = user("alice", &["eng"], &[]);
        create(&store, &alice, &entitlement(0), "r1", at(0))
            .await
            .unwrap();
        let before = store.export_audit(0, 100).await.unwrap();
        assert!(!before.is_empty());
        let columns = "seq, at, actor, action, request_id, entitlement, subject, details, prev_hash, hash";
        let forged = "SELECT seq, at, 'mallory', action, request_id, entitlement, subject, details, prev_hash, hash \
             FROM audit_events WHERE seq = 1";
        let mut attempts = vec![
            "UPDATE audit_events SET actor = 'mallory' WHERE seq = 1".to_owned(),
            "DELETE FROM audit_events WHERE seq = 1".to_owned(),
            format!(
                "INSERT INTO audit_events ({columns}) {forged} \
                 ON CONFLICT (seq) DO UPDATE SET actor = excluded.actor"
            ),
        ];
        if raw_url.starts_with("sqlite") {
            attempts.extend([
                format!("INSERT OR REPLACE INTO audit_events ({columns}) {forged}"),
                format!("REPLACE INTO audit_events ({columns}) {forged}"),
                // A new seq on the rowid of event 1 would replace that row.
                format!(
                    "INSERT OR REPLACE INTO audit_events (rowid, {columns}) \
                     SELECT rowid, 999, at, actor, action, request_id, entitlement, subject, details, prev_hash, hash \
                     FROM audit_events WHERE seq = 1"
                ),
            ]);
        } else {
            attempts.extend([
                "TRUNCATE audit_events".to_owned(),
                "MERGE INTO audit_events a USING (SELECT 1 AS seq) s ON a.seq = s.seq \
                 WHEN MATCHED THEN UPDATE SET actor = 'mallory'"
                    .to_owned(),
                "MERGE INTO audit_events a USING (SELECT 1 AS seq) s ON a.seq = s.seq \
                 WHEN MATCHED THEN DELETE"
                    .to_owned(),
            ]);
        }
        let mut raw = sqlx::AnyConnection::connect(&raw_url).await.unwrap();
        for attempt in &attempts {
            let result = sqlx::raw_sql(attempt).execute(&mut raw).await;
            let refused = result
                .err()
                .is_some_and(|e| e.to_string().contains("append-only"));
            assert!(refused, "not refused: {attempt}");
            assert_eq!(
                store.export_audit(0, 100).await.unwrap(),
                before,
                "changed by: {attempt}"
            );
        }
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.first_break, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let sqlite = sqlite().await;
    let mut fixtures = vec![sqlite];
    fixtures.extend(postgres().await);
    for fixture in fixtures {
        fixture.store.ping().await.unwrap();
        let mut raw = fixture.raw().await;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
            .execute(&mut raw)
            .await
            .unwrap();
        match SqlStore::open(&fixture.location()).await {
            Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
            Err(other) => panic!("{}: unexpected {other:?}", fixture.name),
            Ok(_) => panic!("{}: opened a database with a newer schema", fixture.name),
        }
        // A replica already running stops reporting ready.
        match fixture.store.ping().await {
            Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
            other => panic!("{}: ready with a newer schema: {other:?}", fixture.name),
        }
        fixture.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_landed_after_a_newer_one_is_still_applied() {
    let mut fixtures = vec![sqlite().await];
    fixtures.extend(postgres().await);
    for fixture in fixtures {
        // As if this database had been migrated by a build that had version
        // 9 but not yet version 8 (the outbox).
        let fixture = fixture
            .reopened_after(&[
                "DROP TABLE notification_outbox",
                "DELETE FROM schema_migrations WHERE version = 8",
            ])
            .await;
        fixture.store.ping().await.unwrap();
        let summary = fixture.store.notification_summary(at(0)).await;
        assert!(
            summary.is_ok(),
            "{}: the outbox is back: {summary:?}",
            fixture.name
        );
        fixture.cleanup().await;
    }
}

/// Schema version 15 moved the checks counted from the request rows to
/// `grant_checks`: a database from before keeps what it counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_counted_before_version_15_are_kept_by_its_migration() {
    let mut fixtures = vec![sqlite().await];
    fixtures.extend(postgres().await);
    for fixture in fixtures {
        let (alice, bob) = (user("alice", &["eng"], &[]), user("bob", &["eng"], &[]));
        create(&fixture.store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        create(&fixture.store, &bob, &entitlement(1), "r2", at(0))
            .await
            .unwrap();
        // As version 14 left it: the counts in the request rows.
        let fixture = fixture
            .reopened_after(&[
                "DROP TABLE grant_checks",
                "ALTER TABLE requests ADD COLUMN check_count BIGINT NOT NULL DEFAULT 0",
                "ALTER TABLE requests ADD COLUMN last_checked_at BIGINT",
                "UPDATE requests SET check_count = 7, last_checked_at = 500000 WHERE id = 'r1'",
                "DELETE FROM schema_migrations WHERE version = 15",
            ])
            .await;
        let checks = |id: &str| {
            let store = Arc::clone(&fixture.store);
            let id = RequestId::parse(id).unwrap();
            async move { store.get_request(&id).await.unwrap().unwrap().checks }
        };
        let name = fixture.name;
        assert_eq!(
            checks("r1").await,
            airlock_core::request::CheckActivity {
                count: 7,
                last_at: Some(Timestamp::from_unix_millis(500_000)),
            },
            "{name}"
        );
        assert_eq!(checks("r2").await, Default::default(), "{name}");
        fixture.cleanup().await;
    }
}

#[test]
fn locations_parse_and_hide_passwords() {
    assert_eq!(
        Location::parse("/var/lib/airlock.db"),
        Location::Sqlite("/var/lib/airlock.db".into())
    );
    assert_eq!(
        Location::parse("sqlite://x.db"),
        Location::Sqlite("x.db".into())
    );
    let pg = Location::parse("postgres://airlock:s3cret@db:5432/airlock");
    assert_eq!(
        pg,
        Location::Postgres("postgres://airlock:s3cret@db:5432/airlock".into())
    );
    assert_eq!(pg.describe(), "postgres://airlock@db:5432/airlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_backlog_counts_outstanding_and_overdue_removals() {
    on_every_store(|store, _| async move {
        let ent = entitlement(0);
        assert_eq!(
            store.revocation_backlog(at(0)).await.unwrap(),
            RevocationBacklog::default()
        );
        // b0 ends at 1 s, b1 at 2 s, b2 stays active.
        for (i, name) in ["u1", "u2", "u3"].into_iter().enumerate() {
            let u = user(name, &[], &[]);
            let id = format!("b{i}");
            let r = create(&store, &u, &ent, &id, at(0)).await.unwrap();
            let granted = Command::JobSucceeded {
                action: JobAction::Grant,
                token: r.claim_token,
                certificate: None,
            };
            let r = apply(&store, &id, granted, at(10)).await.unwrap();
            assert_eq!(r.state, State::Active);
            if i < 2 {
                let ended = at(1000 * (i64::try_from(i).unwrap() + 1));
                let r = apply(&store, &id, Command::Release { by: u }, ended)
                    .await
                    .unwrap();
                assert_eq!(r.state, State::Released);
            }
        }
        // The overdue line falls between the two ends.
        assert_eq!(
            store.revocation_backlog(at(1500)).await.unwrap(),
            RevocationBacklog {
                outstanding: 2,
                overdue: 1
            }
        );
        // A confirmed removal leaves the backlog.
        let b0 = store
            .get_request(&RequestId::parse("b0").unwrap())
            .await
            .unwrap()
            .unwrap();
        let removed = Command::JobSucceeded {
            action: JobAction::Revoke,
            token: b0.claim_token,
            certificate: None,
        };
        apply(&store, "b0", removed, at(3000)).await.unwrap();
        assert_eq!(
            store.revocation_backlog(at(5000)).await.unwrap(),
            RevocationBacklog {
                outstanding: 1,
                overdue: 1
            }
        );
    })
    .await;
}

/// A change the database refuses (here the one-open-request unique index,
/// reached by a decision that ignores the open requests the store read) fails
/// alone with its own error, even inside a busy batch: every other change
/// queued with it commits, and the audit chain stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_database_refuses_fails_alone_inside_a_busy_batch() {
    on_every_store(|store, raw_url| async move {
        let ent = entitlement(1);
        let holder = user("mallory", &["eng"], &[]);
        create(&store, &holder, &ent, "r-first", at(0))
            .await
            .unwrap();
        let before = audit_count(&store).await;

        // Forty ordinary creates and the bad one, queued while another
        // connection holds the write lock, so the writer takes them together.
        let mut blocker = sqlx::AnyConnection::connect(&raw_url).await.unwrap();
        let lock = if raw_url.starts_with("sqlite:") {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN; SELECT pg_advisory_xact_lock(7019267304284449538)"
        };
        sqlx::raw_sql(lock).execute(&mut blocker).await.unwrap();
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut changes = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = Arc::clone(&store);
            let ent = ent.clone();
            let started = Arc::clone(&started);
            changes.spawn(async move {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let who = user(&format!("u{i}"), &["eng"], &[]);
                let result = create(&store, &who, &ent, &format!("r-good-{i}"), at(1)).await;
                (format!("r-good-{i}"), result)
            });
        }
        {
            let store = Arc::clone(&store);
            let (holder, ent) = (holder.clone(), ent.clone());
            let started = Arc::clone(&started);
            changes.spawn(async move {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let new = NewRequest {
                    id: RequestId::parse("r-second").unwrap(),
                    duration: Some(Duration::from_secs(60)),
                    reason: "second".into(),
                    ticket: None,
                    start_at: None,
                    break_glass: false,
                    public_key: None,
                };
                let holder_id = holder.id.clone();
                let result = store
                    .create_request(
                        &new.id.clone(),
                        &holder_id,
                        Box::new(move |_ignored_open| {
                            request::submit(
                                new.clone(),
                                &holder,
                                &ent.entitlement,
                                None,
                                ent.verdict(),
                                &LifecycleSettings::default(),
                                at(1),
                            )
                        }),
                    )
                    .await
                    .map(|t| t.request);
                ("r-second".to_owned(), result)
            });
        }
        while started.load(std::sync::atomic::Ordering::SeqCst) < 41 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut blocker)
            .await
            .unwrap();
        let mut good = 0;
        while let Some(joined) = changes.join_next().await {
            let (id, result) = joined.unwrap();
            match (id.as_str(), result) {
                ("r-second", Err(StoreError::UniqueViolation)) => {}
                ("r-second", other) => panic!("the duplicate open request gave {other:?}"),
                (_, Ok(r)) => {
                    assert_eq!(r.id.as_str(), id);
                    good += 1;
                }
                (_, Err(e)) => panic!("`{id}` failed with the bad change: {e}"),
            }
        }
        assert_eq!(good, 40);
        assert!(store
            .get_request(&RequestId::parse("r-second").unwrap())
            .await
            .unwrap()
            .is_none());
        assert_eq!(audit_count(&store).await, before + 40);
        let report = store.verify_audit().await.unwrap();
        assert!(report.first_break.is_none(), "{report:?}");
    })
    .await;
}

/// A pending request by `requester` (`entitlement` must be unique among
/// open ones) whose one tier needs `count` approvals from any of `groups`
/// (none: auto-approved), made at `created_at`.
fn made(
    id: &str,
    requester: &User,
    entitlement: &str,
    groups: &[&str],
    count: u32,
    created_at: Timestamp,
) -> request::AccessRequest {
    let mut ent = entitlement_named(entitlement);
    ent.approvals = count;
    let mut verdict = ent.verdict();
    if let Route::NeedsApprovals(tiers) = &mut verdict.route {
        for tier in tiers.iter_mut() {
            tier.groups = groups
                .iter()
                .map(|g| GroupName::parse(g).unwrap())
                .collect();
        }
    }
    request::submit(
        new_request(id),
        requester,
        &ent.entitlement,
        None,
        verdict,
        &LifecycleSettings::default(),
        created_at,
    )
    .unwrap()
    .request
}

fn entitlement_named(id: &str) -> Ent {
    let mut ent = entitlement(0);
    ent.entitlement.id = EntitlementId::parse(id).unwrap();
    ent
}

/// An extension by 30 minutes in `state`, with one tier from `groups`
/// (none when empty) and `approvals`.
fn extension_waiting_for(
    groups: &[&str],
    approvals: Vec<request::Approval>,
    state: ExtensionState,
    at: Timestamp,
) -> request::Extension {
    let approval_tiers = if groups.is_empty() {
        Vec::new()
    } else {
        vec![ApprovalTier {
            count: 1,
            groups: groups
                .iter()
                .map(|g| GroupName::parse(g).unwrap())
                .collect(),
            policy: "extend".to_owned(),
        }]
    };
    request::Extension {
        by: Duration::from_secs(1800),
        reason: "longer".to_owned(),
        requested_at: at,
        state,
        approval_tiers,
        approvals,
        policy_version: "v1".to_owned(),
        previous_expires_at: at,
        expires_at: at.plus(Duration::from_secs(1800)),
        decided_at: None,
        ended_at: None,
        note: None,
    }
}

fn approved_by(mut r: request::AccessRequest, approver: &User) -> request::AccessRequest {
    r.approvals.push(request::Approval {
        approver: approver.id.clone(),
        at: r.created_at,
        comment: None,
        tiers: BTreeSet::from([0]),
    });
    r
}

/// Loads requests in one transaction (the store must be empty).
async fn load(store: &SqlStore, requests: &[request::AccessRequest]) {
    let records = requests.iter().map(RequestRecord::from_request).collect();
    store.import(records, Vec::new(), Vec::new()).await.unwrap();
}

/// Every page of `filter`, `page` at a time, calling `between` after each
/// page; fails on a page that is short while another follows.
async fn every_page<F: Future<Output = ()>>(
    store: &SqlStore,
    filter: &RequestFilter,
    page: u32,
    mut between: impl FnMut(usize) -> F,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut filter = RequestFilter {
        limit: page,
        ..filter.clone()
    };
    for n in 0.. {
        let found = store.list_requests(&filter).await.unwrap();
        seen.extend(found.iter().map(|r| r.id.to_string()));
        match found.last() {
            Some(last) if found.len() == page as usize => {
                filter.after = Some(PageKey::of(last));
            }
            _ => return seen,
        }
        between(n).await;
    }
    unreachable!()
}

/// The ids `filter` lists, in order.
async fn listed(store: &SqlStore, filter: &RequestFilter) -> Vec<String> {
    store
        .list_requests(filter)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect()
}

fn expected(
    requests: &[request::AccessRequest],
    keep: impl Fn(&request::AccessRequest) -> bool,
) -> Vec<String> {
    let mut kept: Vec<&request::AccessRequest> = requests.iter().filter(|r| keep(r)).collect();
    kept.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    kept.iter().map(|r| r.id.to_string()).collect()
}

/// The inbox's index of pending requests by group follows every write of
/// a request: made, escalated (its groups grow), approved once (no longer
/// in that approver's inbox), decided (in nobody's, and its rows gone).
#[tokio::test]
async fn the_inbox_follows_a_pending_request_until_it_is_decided() {
    on_every_store(|store, raw_url| async move {
        let alice = user("alice", &["approvers"], &[]);
        let ann = user("ann", &["approvers"], &[]);
        let bob = user("bob", &["approvers", "oncall"], &[]);
        let olga = user("olga", &["oncall"], &[]);
        let everyone = [&alice, &ann, &bob, &olga];
        let mut ent = entitlement(2);
        ent.entitlement.waiting.escalate_after = Some(Duration::from_secs(60));
        ent.entitlement.waiting.escalate_to = BTreeSet::from([GroupName::parse("oncall").unwrap()]);
        let inbox_of = |u: &User| {
            let (store, u) = (Arc::clone(&store), u.clone());
            async move {
                let filter = RequestFilter {
                    awaiting_approval_of: Some(u.clone()),
                    visible_to: Some(u.clone()),
                    limit: 10,
                    ..RequestFilter::default()
                };
                (u.id.to_string(), listed(&store, &filter).await)
            }
        };
        let rows = || {
            let raw_url = raw_url.clone();
            async move {
                let mut raw = sqlx::AnyConnection::connect(&raw_url).await.unwrap();
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT request_id, approver_group FROM pending_approver_groups \
                     ORDER BY request_id, approver_group",
                )
                .fetch_all(&mut raw)
                .await
                .unwrap();
                raw.close().await.unwrap();
                rows
            }
        };
        let row = |id: &str, group: &str| (id.to_owned(), group.to_owned());
        let expect = |awaited: &[&str]| -> Vec<(String, Vec<String>)> {
            everyone
                .iter()
                .map(|u| {
                    let listed = if awaited.contains(&u.id.as_str()) {
                        vec!["r1".to_owned()]
                    } else {
                        Vec::new()
                    };
                    (u.id.to_string(), listed)
                })
                .collect()
        };
        let inboxes = || async {
            let mut all = Vec::new();
            for u in everyone {
                all.push(inbox_of(u).await);
            }
            all
        };

        create(&store, &alice, &ent, "r1", at(0)).await.unwrap();
        assert_eq!(inboxes().await, expect(&["ann", "bob"]), "made");
        assert_eq!(rows().await, [row("r1", "approvers")]);

        apply(&store, "r1", Command::Tick, at(61_000))
            .await
            .unwrap();
        assert_eq!(
            inboxes().await,
            expect(&["ann", "bob", "olga"]),
            "escalated"
        );
        assert_eq!(rows().await, [row("r1", "approvers"), row("r1", "oncall")]);

        let approve = |approver: &User| Command::Approve {
            approver: approver.clone(),
            comment: None,
            permission: permitted(),
        };
        apply(&store, "r1", approve(&bob), at(62_000))
            .await
            .unwrap();
        assert_eq!(inboxes().await, expect(&["ann", "olga"]), "approved by bob");

        let decided = apply(&store, "r1", approve(&olga), at(63_000))
            .await
            .unwrap();
        assert_ne!(decided.state, State::Pending);
        assert_eq!(inboxes().await, expect(&[]), "decided");
        assert_eq!(rows().await, []);
    })
    .await;
}

/// Past 1,000 requests, an approver's inbox and a requester's older
/// requests are all reachable page by page, in order, with no duplicate or
/// gap, while new requests are created between pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_through_thousands_of_requests_while_new_ones_arrive() {
    on_every_store(|store, _| async move {
        let ann = user("ann", &["approvers"], &[]);
        let olga = user("olga", &["others"], &[]);
        let auditor = user("audrey", &[], &[Role::Auditor]);
        let requesters: Vec<User> = (0..40).map(|i| user(&format!("u{i}"), &[], &[])).collect();
        let mut requests = Vec::new();
        for i in 0..1500usize {
            let requester = if i % 50 == 7 {
                &ann
            } else {
                requesters.get(i % 40).unwrap()
            };
            // Three to a millisecond, so ties on created_at are broken by id.
            let created = at((i / 3) as i64);
            let (groups, count): (&[&str], u32) = match i % 3 {
                0 => (&["approvers"], 2),
                1 => (&["others", "more"], 1),
                _ => (&[], 0),
            };
            let r = made(
                &format!("r{i:05}"),
                requester,
                &format!("e{i}"),
                groups,
                count,
                created,
            );
            requests.push(if i % 15 == 0 { approved_by(r, &ann) } else { r });
        }
        load(&store, &requests).await;

        let inbox = RequestFilter {
            awaiting_approval_of: Some(ann.clone()),
            ..RequestFilter::default()
        };
        let newcomer = user("newcomer", &[], &[]);
        let seen = every_page(&store, &inbox, 97, |n| {
            let (store, newcomer) = (Arc::clone(&store), newcomer.clone());
            async move {
                // Newer than every page: it must not push an old one out of reach.
                let mut ent = entitlement_named(&format!("late{n}"));
                ent.approvals = 1;
                create(
                    &store,
                    &newcomer,
                    &ent,
                    &format!("late{n}"),
                    at(10_000 + n as i64),
                )
                .await
                .unwrap();
            }
        })
        .await;
        let want = expected(&requests, |r| r.awaits_approval_of(&ann));
        assert!(want.len() > 350, "{}", want.len());
        assert_eq!(seen, want, "ann's inbox");

        let u3 = requesters.get(3).unwrap();
        let old = expected(&requests, |r| r.visible_to(u3));
        assert!(
            old.last().is_some_and(|id| id.as_str() < "r00100"),
            "{old:?}"
        );
        let mine = RequestFilter {
            visible_to: Some(u3.clone()),
            ..RequestFilter::default()
        };
        assert_eq!(
            every_page(&store, &mine, 7, |_| async {}).await,
            old,
            "u3's requests"
        );

        let others = RequestFilter {
            visible_to: Some(olga.clone()),
            states: vec![State::Pending],
            ..RequestFilter::default()
        };
        let want = expected(&requests, |r| {
            r.visible_to(&olga) && r.state == State::Pending
        });
        assert_eq!(every_page(&store, &others, 1000, |_| async {}).await, want);

        let everything = RequestFilter {
            visible_to: Some(auditor.clone()),
            ..RequestFilter::default()
        };
        let all = every_page(&store, &everything, 1000, |_| async {}).await;
        let late = all.iter().filter(|id| id.starts_with("late")).count();
        assert!(late > 3, "{late}");
        assert_eq!(
            all.len(),
            requests.len() + late,
            "every request and the late ones"
        );
        let unique: BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "no request twice");
    })
    .await;
}

/// A small deterministic generator (xorshift), so a failing case repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn some<'a>(&mut self, from: &[&'a str]) -> Vec<&'a str> {
        from.iter()
            .copied()
            .filter(|_| self.below(3) == 0)
            .collect()
    }
}

/// The SQL of request lists mirrors the core's `visible_to` and
/// `awaits_approval_of` exactly, on generated requests (tiers from a few
/// groups, some approvals, every state) and users (with and without
/// groups, roles); and so do rows from before the lists were stored, once
/// migration 5 has back-filled them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lists_agree_with_the_core_on_who_sees_and_who_is_awaited() {
    on_every_store(|store, raw_url| async move {
        const GROUPS: &[&str] = &["g1", "g2", "G1", "g1.x", "g_1"];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut users: Vec<User> = (0..12)
            .map(|i| {
                let groups: Vec<&str> = rng.some(GROUPS);
                user(&format!("p{i}"), &groups, &[])
            })
            .collect();
        users.push(user("boss", &["g2"], &[Role::Admin]));
        users.push(user("reader", &[], &[Role::Auditor]));
        users.push(user("loner", &[], &[]));
        users.push(user("p1x", &["g1"], &[]));
        let mut requests = Vec::new();
        for i in 0..240usize {
            let requester = users.get(rng.below(users.len())).unwrap();
            let groups = rng.some(GROUPS);
            let count = if groups.is_empty() {
                0
            } else {
                1 + rng.below(2) as u32
            };
            let mut r = made(
                &format!("q{i:04}"),
                requester,
                &format!("e{i}"),
                &groups,
                count,
                at(rng.below(50) as i64),
            );
            // A quarter are an external principal's, with a sponsor whose
            // seat waits until they approve.
            if rng.below(4) == 0 {
                let sponsor = users.get(rng.below(users.len())).unwrap();
                r.external = Some(External {
                    sponsor: sponsor.id.clone(),
                    account_expires: at(100),
                });
                if rng.below(3) == 0 {
                    r.approvals.push(request::Approval {
                        approver: sponsor.id.clone(),
                        at: r.created_at,
                        comment: None,
                        tiers: BTreeSet::new(),
                    });
                }
            }
            for _ in 0..rng.below(3) {
                r = approved_by(r, users.get(rng.below(users.len())).unwrap());
            }
            r.state = *State::ALL.get(rng.below(State::ALL.len())).unwrap();
            // A third are break-glass uses: reviewed or not, escalated or not.
            if rng.below(3) == 0 {
                let group_set = |names: Vec<&str>| -> BTreeSet<GroupName> {
                    names.iter().map(|g| GroupName::parse(g).unwrap()).collect()
                };
                r.break_glass = true;
                r.review = Some(request::Review {
                    reviewers: group_set(rng.some(GROUPS)),
                    due_at: at(60),
                    escalate_to: group_set(rng.some(GROUPS)),
                    escalated_at: (rng.below(2) == 0).then(|| at(61)),
                    verdict: (rng.below(2) == 0).then(|| request::ReviewVerdict {
                        reviewer: requester.id.clone(),
                        at: at(62),
                        acceptable: true,
                        comment: "ok".to_owned(),
                    }),
                });
            }
            // An extension in any state (one waiting for approvers on an
            // active grant is what `airlock pending` must also list), with
            // tiers of its own and some approvals.
            if rng.below(2) == 0 {
                let groups = rng.some(GROUPS);
                let approvals = (0..rng.below(3))
                    .map(|_| request::Approval {
                        approver: users.get(rng.below(users.len())).unwrap().id.clone(),
                        at: r.created_at,
                        comment: None,
                        tiers: BTreeSet::from([0]),
                    })
                    .collect();
                let state = ExtensionState::ALL
                    .get(rng.below(ExtensionState::ALL.len()))
                    .unwrap();
                r.extension = Some(extension_waiting_for(
                    &groups,
                    approvals,
                    *state,
                    r.created_at,
                ));
            }
            requests.push(r);
        }
        load(&store, &requests).await;

        let check = |label: &'static str| {
            let (store, users, requests) = (Arc::clone(&store), users.clone(), requests.clone());
            async move {
                for u in &users {
                    let visible = RequestFilter {
                        visible_to: Some(u.clone()),
                        limit: 1000,
                        ..RequestFilter::default()
                    };
                    let awaiting = RequestFilter {
                        awaiting_approval_of: Some(u.clone()),
                        ..visible.clone()
                    };
                    let recent = RequestFilter {
                        created_since: Some(at(25)),
                        ..visible.clone()
                    };
                    let reviews = RequestFilter {
                        break_glass: true,
                        review_open: true,
                        ..visible.clone()
                    };
                    for (filter, core) in [
                        (
                            visible,
                            &(|r: &request::AccessRequest| r.visible_to(u)) as &dyn Fn(&_) -> bool,
                        ),
                        (awaiting, &|r: &request::AccessRequest| {
                            r.awaits_approval_of(u)
                        }),
                        (recent, &|r: &request::AccessRequest| {
                            r.visible_to(u) && r.created_at >= at(25)
                        }),
                        (reviews, &|r: &request::AccessRequest| {
                            r.visible_to(u) && r.review.as_ref().is_some_and(|v| v.is_open())
                        }),
                    ] {
                        assert_eq!(
                            listed(&store, &filter).await,
                            expected(&requests, core),
                            "{label}: {}",
                            u.id
                        );
                    }
                }
            }
        };
        check("as written").await;
        assert!(
            requests
                .iter()
                .any(|r| users.iter().any(|u| r.awaits_approval_of(u))),
            "the generated requests await someone"
        );
        assert!(
            requests.iter().any(|r| r.review.as_ref().is_some_and(|v| {
                v.is_open()
                    && users
                        .iter()
                        .any(|u| u.id != r.requester && u.in_any(&v.groups()))
            })),
            "some generated reviews are visible to their reviewers alone"
        );
        assert!(
            requests
                .iter()
                .any(|r| r.extension_awaiting_approval().is_some()
                    && users.iter().any(|u| r.awaits_approval_of(u))),
            "some generated extension awaits someone"
        );
        assert!(
            requests.iter().any(|r| r.awaits_sponsor().is_some_and(|s| {
                users.iter().any(|u| {
                    &u.id == s && r.awaits_approval_of(u) && !u.in_any(&r.approver_groups())
                })
            })),
            "some generated request awaits a sponsor who is no approver"
        );
        assert!(
            requests.iter().any(
                |r| r.sponsor().is_some_and(|s| users.iter().any(|u| &u.id == s
                    && r.visible_to(u)
                    && !u.in_any(&r.approver_groups())
                    && u.id != r.requester
                    && u.roles.is_empty()))
            ),
            "some generated request is visible to its sponsor alone"
        );

        // Rows as a version-4 database holds them (no lists yet), filled by
        // migration 5; then the store as version 21 left it (no inbox index
        // of pending requests), given version 22 whole.
        let postgres = raw_url.starts_with("postgres");
        let mut raw = sqlx::AnyConnection::connect(&raw_url).await.unwrap();
        let (lists, version_22) = if postgres {
            (
                include_str!("../src/store/migrations/0005_request_lists.postgres.sql"),
                include_str!("../src/store/migrations/0022_pending_by_group.postgres.sql"),
            )
        } else {
            (
                include_str!("../src/store/migrations/0005_request_lists.sqlite.sql"),
                include_str!("../src/store/migrations/0022_pending_by_group.sqlite.sql"),
            )
        };
        let version_22 = format!(
            "{}\n{version_22}",
            include_str!("../src/store/migrations/0022_pending_by_group.sql")
        );
        for (undo, redo) in [
            (
                "UPDATE requests SET approver_group_list = '', approved_by_list = ''",
                lists,
            ),
            ("DROP TABLE pending_approver_groups", version_22.as_str()),
        ] {
            sqlx::raw_sql(undo).execute(&mut raw).await.unwrap();
            sqlx::raw_sql(redo).execute(&mut raw).await.unwrap();
        }
        raw.close().await.unwrap();
        check("back-filled").await;
    })
    .await;
}

fn directory_user(id: &str, name: &str, active: bool, at_ms: i64) -> DirectoryUser {
    DirectoryUser {
        id: id.to_owned(),
        user_name: UserId::parse(name).unwrap(),
        external_id: Some(format!("ext-{id}")),
        display_name: Some(format!("{name} (display)")),
        emails: vec![Email {
            value: format!("{name}@example.com"),
            kind: Some("work".to_owned()),
            primary: true,
        }],
        active,
        employment: None,
        sponsor: None,
        account_expires: None,
        created: at(at_ms),
        modified: at(at_ms),
        version: 1,
    }
}

async fn put_user(store: &SqlStore, user: DirectoryUser) -> Result<Committed, StoreError> {
    let id = user.id.clone();
    store
        .write_directory(DirectoryWrite::User {
            id,
            operation: "test".to_owned(),
            decide: Box::new(move |_| {
                Ok(Decided {
                    now: user.modified,
                    after: Some(user.clone()),
                })
            }),
        })
        .await
}

async fn put_group(
    store: &SqlStore,
    id: &str,
    name: &str,
    members: &[&str],
) -> Result<Committed, StoreError> {
    let group = DirectoryGroup {
        id: id.to_owned(),
        display_name: name.to_owned(),
        external_id: None,
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        created: at(0),
        modified: at(0),
        version: 1,
    };
    store
        .write_directory(DirectoryWrite::Group {
            id: id.to_owned(),
            operation: "test".to_owned(),
            decide: Box::new(move |_| {
                Ok(Decided {
                    now: at(0),
                    after: Some(group.clone()),
                })
            }),
        })
        .await
}

async fn delete_user(store: &SqlStore, id: &str) -> Result<Committed, StoreError> {
    store
        .write_directory(DirectoryWrite::User {
            id: id.to_owned(),
            operation: "test".to_owned(),
            decide: Box::new(|_| {
                Ok(Decided {
                    now: at(5),
                    after: None,
                })
            }),
        })
        .await
}

/// Directory users and groups (SCIM) commit with their audit events, read
/// back equal, keep user names unique regardless of case, refuse members
/// that are no users, and remember deleted names for sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_writes_commit_with_their_events_and_keep_names_unique() {
    on_every_store(|store, _| async move {
        let alice = directory_user("u1", "alice", true, 1);
        put_user(&store, alice.clone()).await.unwrap();
        assert_eq!(store.directory_user("u1").await.unwrap(), Some(alice.clone()));
        assert_eq!(
            store.directory_user_named("ALICE").await.unwrap(),
            Some(alice.clone())
        );
        // The same name in other letters is taken; nothing is written.
        let before = audit_count(&store).await;
        let clash = put_user(&store, directory_user("u2", "Alice", true, 2)).await;
        assert!(
            matches!(clash, Err(StoreError::Directory(Refusal::Uniqueness(_)))),
            "{clash:?}"
        );
        assert_eq!(store.directory_user("u2").await.unwrap(), None);
        assert_eq!(audit_count(&store).await, before);
        put_user(&store, directory_user("u2", "bob", true, 2)).await.unwrap();
        for i in 3..8 {
            put_user(&store, directory_user(&format!("u{i}"), &format!("user{i}"), true, i))
                .await
                .unwrap();
        }
        // Members must be users.
        let stranger = put_group(&store, "g1", "Platform Engineers", &["u1", "nobody"]).await;
        assert!(
            matches!(&stranger, Err(StoreError::Directory(Refusal::Invalid { field, .. })) if field == "members"),
            "{stranger:?}"
        );
        let committed = put_group(&store, "g1", "Platform Engineers", &["u1", "u2"])
            .await
            .unwrap();
        let actions: Vec<&str> = committed.change.events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["group_provisioned", "membership_added", "membership_added"]);
        let group = store.directory_group("g1").await.unwrap().unwrap();
        assert_eq!(group.members, BTreeSet::from(["u1".to_owned(), "u2".to_owned()]));
        match store.directory_standing("alice").await.unwrap() {
            Standing::Active(u, groups) => {
                assert_eq!(u.id, "u1");
                assert_eq!(groups.len(), 1);
                assert_eq!(groups[0].name().unwrap().as_str(), "Platform-Engineers");
            }
            other => panic!("{other:?}"),
        }
        // Lists: a filter, pages by startIndex and count.
        let page = |filter, start_index, count| ListQuery {
            filter,
            start_index,
            count,
        };
        let (total, users) = store
            .list_directory_users(&page(Some(Filter::UserName("BOB".into())), 1, 10))
            .await
            .unwrap();
        assert_eq!((total, users.len()), (1, 1));
        assert_eq!(users[0].id, "u2");
        let (total, users) = store
            .list_directory_users(&page(None, 3, 2))
            .await
            .unwrap();
        assert_eq!(total, 7);
        assert_eq!(
            users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            ["u3", "u4"]
        );
        let (total, _) = store
            .list_directory_users(&page(Some(Filter::ExternalId("ext-u5".into())), 1, 10))
            .await
            .unwrap();
        assert_eq!(total, 1);
        let (total, groups) = store
            .list_directory_groups(&page(Some(Filter::DisplayName("platform engineers".into())), 1, 10))
            .await
            .unwrap();
        assert_eq!((total, groups[0].members.len()), (1, 2));
        // Deleting a user takes them out of their groups and marks the name.
        let deleted = delete_user(&store, "u1").await.unwrap();
        assert!(matches!(&deleted.change.consequences[..], [Consequence::Deprovision { user, .. }] if user.as_str() == "alice"));
        assert_eq!(store.directory_standing("alice").await.unwrap(), Standing::Deleted);
        assert_eq!(
            store.directory_group("g1").await.unwrap().unwrap().members,
            BTreeSet::from(["u2".to_owned()])
        );
        assert_eq!(store.directory_standing("carol").await.unwrap(), Standing::Unknown);
        // Provisioned again, the name stands again.
        put_user(&store, directory_user("u9", "alice", false, 9)).await.unwrap();
        assert!(matches!(
            store.directory_standing("alice").await.unwrap(),
            Standing::Deactivated(_)
        ));
        let events = store
            .list_audit(&AuditFilter {
                user: Some("alice".into()),
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            ["user_provisioned", "membership_added", "user_deleted", "user_provisioned"]
        );
        assert!(events.iter().all(|e| e.actor == "scim:provisioning"));
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.first_break, None);
    })
    .await;
}

fn new_token(id: &str, owner: &str, name: &str) -> airlock_core::token::NewToken {
    airlock_core::token::NewToken {
        id: airlock_core::TokenId::parse(id).unwrap(),
        name: name.to_owned(),
        owner: UserId::parse(owner).unwrap(),
        scopes: airlock_core::token::Scopes::parse("read,request").unwrap(),
        lifetime: Duration::from_secs(86_400),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_commits_with_its_audit_events_and_reads_back_equal() {
    use airlock_core::token;
    use airlock_server::store::tokens::TokenWrite;
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        let max = Duration::from_secs(90 * 86_400);
        let (ci, event) =
            token::create(new_token("tok_a", "alice", "ci"), &alice, None, max, at(0)).unwrap();
        let create = |t: &token::ApiToken, secret: &str| TokenWrite::Create {
            token: t.clone(),
            secret_sha256: secret.to_owned(),
        };
        assert!(store
            .write_token(create(&ci, "hash-a"), vec![event])
            .await
            .unwrap());
        assert_eq!(
            store.token_by_secret("hash-a").await.unwrap(),
            Some(ci.clone())
        );
        assert_eq!(store.token_by_secret("hash-b").await.unwrap(), None);
        assert_eq!(store.token(&ci.id).await.unwrap(), Some(ci.clone()));
        // The same name for the same owner, while the first is not revoked:
        // the index refuses it, and no event is written.
        let (again, event) =
            token::create(new_token("tok_b", "alice", "ci"), &alice, None, max, at(1)).unwrap();
        assert!(matches!(
            store
                .write_token(create(&again, "hash-b"), vec![event])
                .await,
            Err(StoreError::UniqueViolation)
        ));
        let bob = user("bob", &[], &[]);
        let (bobs, event) =
            token::create(new_token("tok_c", "bob", "ci"), &bob, None, max, at(2)).unwrap();
        assert!(store
            .write_token(create(&bobs, "hash-c"), vec![event])
            .await
            .unwrap());
        let ids =
            |ts: Vec<token::ApiToken>| ts.into_iter().map(|t| t.id.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_tokens(None).await.unwrap()),
            ["tok_c", "tok_a"]
        );
        assert_eq!(
            ids(store
                .list_tokens(Some(std::slice::from_ref(&alice.id)))
                .await
                .unwrap()),
            ["tok_a"]
        );
        assert!(store.list_tokens(Some(&[])).await.unwrap().is_empty());
        // A use moves forward only.
        let used = |t: i64| TokenWrite::Used {
            id: ci.id.clone(),
            at: at(t),
        };
        assert!(store.write_token(used(5_000), Vec::new()).await.unwrap());
        assert!(!store.write_token(used(4_000), Vec::new()).await.unwrap());
        assert_eq!(
            store.token(&ci.id).await.unwrap().unwrap().last_used_at,
            Some(at(5_000))
        );
        // Revoked once: a second revocation (decided on a stale read) changes
        // nothing and records nothing.
        let (revoked, event) = token::revoke(&ci, &alice, at(6_000)).unwrap();
        assert!(store
            .write_token(TokenWrite::Revoke(revoked.clone()), vec![event.clone()])
            .await
            .unwrap());
        assert!(!store
            .write_token(TokenWrite::Revoke(revoked.clone()), vec![event])
            .await
            .unwrap());
        let stored = store.token(&ci.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.revoked_at, stored.revoked_by),
            (Some(at(6_000)), Some(alice.id.clone()))
        );
        // Its name is free again.
        let (again, event) = token::create(
            new_token("tok_d", "alice", "ci"),
            &alice,
            None,
            max,
            at(7_000),
        )
        .unwrap();
        assert!(store
            .write_token(create(&again, "hash-d"), vec![event])
            .await
            .unwrap());
        let events = store
            .list_audit(&AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "token_created",
                "token_created",
                "token_revoked",
                "token_created"
            ]
        );
        let report = store.verify_audit().await.unwrap();
        assert_eq!((report.checked, report.first_break), (4, None));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_done_with_a_token_stores_the_token_and_the_service_mark() {
    on_every_store(|store, _| async move {
        let through = |u: User| {
            u.through(airlock_core::token::TokenUse {
                id: airlock_core::TokenId::parse("tok_svc").unwrap(),
                scopes: airlock_core::token::Scopes::parse("request").unwrap(),
            })
        };
        let deploy = through(User {
            kind: airlock_core::catalog::PrincipalKind::Service,
            ..user("deploy", &["eng"], &[])
        });
        let alice = user("alice", &["eng"], &[]);
        create(&store, &alice, &entitlement(0), "r0", at(0))
            .await
            .unwrap();
        create(&store, &deploy, &entitlement(0), "r1", at(1))
            .await
            .unwrap();
        let events = store
            .list_audit(&AuditFilter {
                limit: 100,
                action: Some("requested".into()),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let who: Vec<(&str, Option<&str>, Option<&str>)> = events
            .iter()
            .map(|e| {
                (
                    e.actor.as_str(),
                    e.token.as_deref(),
                    e.actor_kind.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            who,
            [
                ("alice", None, None),
                ("deploy", Some("tok_svc"), Some("service"))
            ]
        );
        // The page before the newest `requested` event: only the older one.
        let newest = events.last().unwrap().seq;
        let older = store
            .list_audit(&AuditFilter {
                limit: 100,
                action: Some("requested".into()),
                before_seq: Some(newest),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let seqs: Vec<i64> = older.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [events.first().unwrap().seq]);
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.first_break, None);
        assert!(report.checked >= 2);
    })
    .await;
}

/// Approvers and requesters hear on `mail`, the security route on `pager`.
fn routing() -> Routing {
    let one = |c: &str| Some(vec![c.to_owned()]);
    Routing {
        defaults: Routes {
            approvers: one("mail"),
            requester: one("mail"),
            security: one("pager"),
            reviewers: None,
            sponsor: None,
        },
        expiry_warning: Some(Duration::from_secs(20)),
        overdue_after: Duration::from_secs(300),
        ..Routing::default()
    }
}

/// Creates a request under [`routing`].
async fn create_notifying(
    store: &SqlStore,
    requester: &User,
    ent: &Ent,
    id: &str,
    now: Timestamp,
) -> Result<Transition, StoreError> {
    create_routed(store, requester, ent, id, now, routing()).await
}

async fn outbox(store: &SqlStore) -> Vec<OutboxEntry> {
    store
        .list_notifications(&OutboxFilter {
            limit: 1000,
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_written_with_their_change_and_named_after_its_event() {
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        let t = create_notifying(&store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        assert_eq!(t.notifications.len(), 1);
        let events = store
            .list_audit(&AuditFilter {
                request: Some("r1".into()),
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let requested = events.iter().find(|e| e.action == "requested").unwrap();
        let rows = outbox(&store).await;
        assert_eq!(rows.len(), 1);
        let row = rows.first().unwrap();
        assert_eq!(row.key, format!("{}-awaiting_approval:mail", requested.seq));
        assert_eq!(row.seq, requested.seq);
        assert_eq!(row.topic, Topic::AwaitingApproval);
        assert_eq!(row.state, OutboxState::Pending);
        assert_eq!(row.request.as_ref().map(RequestId::as_str), Some("r1"));
        assert_eq!(
            row.facts.get("requester").map(String::as_str),
            Some("alice")
        );
        assert_eq!((row.first_due, row.next_attempt_at), (at(0), Some(at(0))));

        // A refused change writes no notification either.
        let again = create_notifying(&store, &alice, &entitlement(1), "r2", at(5)).await;
        assert!(matches!(
            again,
            Err(StoreError::Rejected(Rejection::Conflict(_)))
        ));
        assert_eq!(outbox(&store).await.len(), 1);

        // Auto-approved: approved (now) and, once granted, provisioned now
        // and an expiry warning 20 s before the end.
        let carol = user("carol", &["eng"], &[]);
        create_notifying(&store, &carol, &entitlement(0), "r3", at(10))
            .await
            .unwrap();
        let topics: BTreeSet<(String, Topic)> = outbox(&store)
            .await
            .into_iter()
            .map(|n| (n.channel, n.topic))
            .collect();
        assert!(
            topics.contains(&("mail".to_owned(), Topic::Approved)),
            "{topics:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_are_claimed_once_and_settled_only_under_their_claim() {
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        create_notifying(&store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        let lease = Duration::from_secs(30);
        let claimed = store.claim_notifications(at(0), lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let first = claimed.into_iter().next().unwrap();
        assert_eq!(first.claimed_until, Some(at(30_000)));
        assert!(store
            .claim_notifications(at(1), lease, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.next_notification_due(at(1)).await.unwrap(), None);

        // A failure to retry at +10 s.
        let retry = Delivery::Retry {
            next_at: at(10_000),
            error: "smtp down".into(),
        };
        assert!(store
            .settle_notification(&first, retry.clone(), at(2))
            .await
            .unwrap());
        assert!(
            !store
                .settle_notification(&first, retry, at(3))
                .await
                .unwrap(),
            "settled twice under one claim"
        );
        assert_eq!(
            store.next_notification_due(at(3)).await.unwrap(),
            Some(at(10_000))
        );
        let summary = store.notification_summary(at(3)).await.unwrap();
        assert_eq!((summary.backlog, summary.oldest_due), (1, Some(at(0))));
        assert_eq!(
            summary
                .last_error
                .as_ref()
                .map(|(k, e, _)| (k.as_str(), e.as_str())),
            Some((first.key.as_str(), "smtp down"))
        );
        assert!(store
            .claim_notifications(at(9_999), lease, 10)
            .await
            .unwrap()
            .is_empty());
        let second = store
            .claim_notifications(at(10_000), lease, 10)
            .await
            .unwrap();
        let second = second.into_iter().next().unwrap();
        assert_eq!(
            (second.key.as_str(), second.attempts),
            (first.key.as_str(), 1)
        );

        // The dispatcher stalls past its lease: another claims the row and
        // sends it; the stalled one's settlement is refused.
        let third = store
            .claim_notifications(at(40_000), lease, 10)
            .await
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        assert!(store
            .settle_notification(&third, Delivery::Sent, at(40_001))
            .await
            .unwrap());
        assert!(!store
            .settle_notification(&second, Delivery::Sent, at(40_002))
            .await
            .unwrap());
        let rows = outbox(&store).await;
        let row = rows.first().unwrap();
        assert_eq!(
            (row.state, row.attempts, row.next_attempt_at),
            (OutboxState::Sent, 2, None)
        );
        assert_eq!(row.settled_at, Some(at(40_001)));
        let summary = store.notification_summary(at(40_003)).await.unwrap();
        assert_eq!(summary.backlog, 0);
        assert_eq!(summary.counts.get(&OutboxState::Sent), Some(&1));
        assert!(
            summary.last_error.is_none(),
            "a sent row's old error is not news"
        );

        // Given up: failed, counted, listed by state.
        let bob = user("bob", &["eng"], &[]);
        create_notifying(&store, &bob, &entitlement(1), "r2", at(50_000))
            .await
            .unwrap();
        let row = store
            .claim_notifications(at(50_000), lease, 10)
            .await
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        let failed = Delivery::Failed {
            error: "no email address for bob".into(),
        };
        assert!(store
            .settle_notification(&row, failed, at(50_001))
            .await
            .unwrap());
        let failed = store
            .list_notifications(&OutboxFilter {
                states: vec![OutboxState::Failed],
                limit: 10,
                ..OutboxFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), 1);
        let summary = store.notification_summary(at(50_002)).await.unwrap();
        assert_eq!(summary.counts.get(&OutboxState::Failed), Some(&1));
        assert_eq!(
            summary.last_error.map(|(_, e, _)| e),
            Some("no email address for bob".to_owned())
        );

        // Pruning takes settled rows settled before the line, a batch at a
        // time, and never a pending one.
        let carol = user("carol", &["eng"], &[]);
        create_notifying(&store, &carol, &entitlement(1), "r3", at(60_000))
            .await
            .unwrap();
        assert_eq!(store.prune_notifications(at(50_001), 10).await.unwrap(), 1);
        let states = |rows: Vec<OutboxEntry>| -> Vec<OutboxState> {
            rows.into_iter().map(|r| r.state).collect()
        };
        let mut left = states(outbox(&store).await);
        left.sort_by_key(|s| s.as_str());
        assert_eq!(left, [OutboxState::Failed, OutboxState::Pending]);
        assert_eq!(store.prune_notifications(at(90_000), 10).await.unwrap(), 1);
        assert_eq!(states(outbox(&store).await), [OutboxState::Pending]);
        assert_eq!(store.prune_notifications(at(90_000), 10).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dispatchers_share_the_outbox_without_overlap() {
    on_every_store(|store, raw_url| async move {
        let other = Arc::new(SqlStore::open(&Location::parse(&raw_url)).await.unwrap());
        const N: usize = 60;
        for i in 0..N {
            let u = user(&format!("u{i}"), &["eng"], &[]);
            create_notifying(&store, &u, &entitlement(1), &format!("r{i:03}"), at(0))
                .await
                .unwrap();
        }
        let claimer = |store: Arc<SqlStore>| async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_notifications(at(1), Duration::from_secs(60), 4)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|n| n.key));
            }
        };
        let (a, b) = tokio::join!(
            tokio::spawn(claimer(Arc::clone(&store))),
            tokio::spawn(claimer(Arc::clone(&other)))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let all: BTreeSet<String> = a.iter().chain(&b).cloned().collect();
        assert_eq!(a.len() + b.len(), N, "a notification was claimed twice");
        assert_eq!(all.len(), N, "a due notification was never claimed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_find_directory_users_addresses_when_the_config_has_none() {
    use airlock_server::notify::{AddressBook, ConfigAddressBook};
    on_every_store(|store, _| async move {
        put_user(&store, directory_user("d1", "dora", true, 0))
            .await
            .unwrap();
        put_user(&store, directory_user("d2", "gone", false, 0))
            .await
            .unwrap();
        let alice = UserId::parse("alice").unwrap();
        let book = ConfigAddressBook::new(
            Arc::new(airlock_core::catalog::Catalog::default()),
            [(alice.clone(), "Alice <alice@corp.example>".to_owned())].into(),
            Some(Arc::clone(&store) as Arc<dyn Store>),
        );
        let email = |name: &str| {
            let book = &book;
            let id = UserId::parse(name).unwrap();
            async move { book.email(&id).await }
        };
        assert_eq!(
            email("alice").await.as_deref(),
            Some("Alice <alice@corp.example>")
        );
        assert_eq!(email("dora").await.as_deref(), Some("dora@example.com"));
        assert_eq!(
            email("gone").await,
            None,
            "a deactivated user is not mailed"
        );
        assert_eq!(email("nobody").await, None);
    })
    .await;
}

// ------------------------------------------------------------ access reviews

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_review_writes_happen_once_and_name_their_place_in_the_chain() {
    use airlock_core::access_review::{self, Decision, Step, Subject, Template};
    use airlock_core::audit::Actor;
    use airlock_server::store::access_reviews::{ReviewWrite, StepWrite};

    on_every_store(|store, _| async move {
        let groups = |g: &str| BTreeSet::from([GroupName::parse(g).unwrap()]);
        let template = Template {
            name: "quarterly".to_owned(),
            every: None,
            reviewers: groups("sre"),
            due_within: Duration::from_secs(7 * 86_400),
            remind_after: Some(Duration::from_secs(86_400)),
            escalate_after: None,
            escalate_to: BTreeSet::new(),
            eligibilities: true,
            standing: true,
        };
        let eligibility = |u: &str| Subject::Eligibility {
            user: UserId::parse(u).unwrap(),
            entitlement: EntitlementId::parse("db").unwrap(),
            route: "auto".to_owned(),
        };
        let holder = Subject::Holder {
            connector: "pg".to_owned(),
            principal: "app_owner".to_owned(),
            status: "standing".to_owned(),
            user: None,
            request: None,
            entitlements: vec![EntitlementId::parse("db").unwrap()],
            risk: airlock_core::standing::Sensitivity::High,
        };
        let id = airlock_core::CampaignId::parse("ar_conformance").unwrap();
        let started = access_review::start(
            id.clone(),
            &template,
            vec![eligibility("alice"), eligibility("erin"), holder],
            &[],
            Actor::System,
            &Routing::default(),
            at(0),
        );
        let campaign = started.campaign.clone();
        assert!(store
            .write_access_review(ReviewWrite::Start(Box::new(started)))
            .await
            .unwrap());
        let stored = store.access_review(&id).await.unwrap().unwrap();
        assert_eq!(stored, campaign);
        let items = store.access_review_items(&id).await.unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].subject.kind(), "holder");

        // Two reviewers decide item 1 at once: one decision lands.
        let carol = user("carol", &["sre"], &[]);
        let bob = user("bob", &["sre"], &[]);
        let ruling = |who: &User, decision: Decision, comment: &str, ms: i64| {
            access_review::decide(&campaign, &items[0], who, decision, comment, at(ms)).unwrap()
        };
        let (first, second) = tokio::join!(
            store.write_access_review(ReviewWrite::Decide {
                campaign: id.clone(),
                item: 1,
                ruling: Box::new(ruling(&carol, Decision::Remove, "gone", 10)),
            }),
            store.write_access_review(ReviewWrite::Decide {
                campaign: id.clone(),
                item: 1,
                ruling: Box::new(ruling(&bob, Decision::Confirm, "", 10)),
            }),
        );
        assert!(
            first.unwrap() ^ second.unwrap(),
            "exactly one decision lands"
        );
        let decided = store.access_review_items(&id).await.unwrap()[0]
            .decided
            .clone()
            .unwrap();
        let seq = decided.seq.unwrap();
        let event = store.export_audit(seq - 1, 1).await.unwrap().remove(0);
        assert_eq!(
            (event.seq, event.action.as_str()),
            (seq, "access_review_decided")
        );
        assert_eq!(event.actor, decided.by.to_string());
        let hashes = store.chain_hashes(&[seq, 999_999]).await.unwrap();
        assert_eq!(hashes, vec![(seq, event.hash.clone())]);
        assert_eq!(
            store.access_review(&id).await.unwrap().unwrap().open_items,
            2
        );
        let latest = store
            .eligibility_decision(
                &UserId::parse("alice").unwrap(),
                &EntitlementId::parse("db").unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((latest.campaign.clone(), latest.item), (id.clone(), 1));
        assert!(store
            .eligibility_decision(
                &UserId::parse("erin").unwrap(),
                &EntitlementId::parse("db").unwrap()
            )
            .await
            .unwrap()
            .is_none());

        // A reminder is taken once, however many replicas try.
        let step = || {
            let (_, event, notifications) = access_review::take_step(
                &campaign,
                Step::Remind,
                &Routing::default(),
                at(86_400_000),
            );
            ReviewWrite::Step(Box::new(StepWrite {
                campaign: id.clone(),
                step: Step::Remind,
                at: at(86_400_000),
                event,
                notifications,
            }))
        };
        assert!(store.write_access_review(step()).await.unwrap());
        assert!(!store.write_access_review(step()).await.unwrap());

        // The removed holder waits for its removal until one is confirmed.
        let items = store.access_review_items(&id).await.unwrap();
        store
            .write_access_review(ReviewWrite::Decide {
                campaign: id.clone(),
                item: 3,
                ruling: Box::new(
                    access_review::decide(
                        &campaign,
                        &items[2],
                        &carol,
                        Decision::Remove,
                        "unknown owner",
                        at(20),
                    )
                    .unwrap(),
                ),
            })
            .await
            .unwrap();
        let outstanding = store.access_review_removals(10).await.unwrap();
        assert_eq!(outstanding.len(), 1);
        assert_eq!(outstanding[0].1.number, 3);
        let removal = |outcome: Result<Timestamp, String>| ReviewWrite::Removal {
            campaign: id.clone(),
            item: 3,
            outcome,
            event: None,
        };
        assert!(store
            .write_access_review(removal(Err("down".into())))
            .await
            .unwrap());
        assert!(store
            .write_access_review(removal(Ok(at(30))))
            .await
            .unwrap());
        assert!(!store
            .write_access_review(removal(Ok(at(40))))
            .await
            .unwrap());
        assert!(store.access_review_removals(10).await.unwrap().is_empty());
        let holder = store.access_review_items(&id).await.unwrap().remove(2);
        let r = holder.removal.unwrap();
        assert_eq!(
            (r.done_at, r.attempts, r.last_error),
            (Some(at(30)), 2, None)
        );

        // The last decision completes the campaign, recorded once.
        let items = store.access_review_items(&id).await.unwrap();
        store
            .write_access_review(ReviewWrite::Decide {
                campaign: id.clone(),
                item: 2,
                ruling: Box::new(
                    access_review::decide(
                        &campaign,
                        &items[1],
                        &carol,
                        Decision::Confirm,
                        "",
                        at(50),
                    )
                    .unwrap(),
                ),
            })
            .await
            .unwrap();
        let done = store.access_review(&id).await.unwrap().unwrap();
        assert_eq!((done.open_items, done.completed_at), (0, Some(at(50))));
        let actions: Vec<String> = store
            .export_audit(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            [
                "access_review_started",
                "access_review_decided",
                "access_review_reminded",
                "access_review_decided",
                "access_review_decided",
                "access_review_completed",
            ]
        );
        assert!(store.verify_audit().await.unwrap().first_break.is_none());
        assert_eq!(store.access_reviews(true, 10).await.unwrap().len(), 0);
        assert_eq!(store.access_reviews(false, 10).await.unwrap().len(), 1);
        assert_eq!(
            store.access_review_last_started("quarterly").await.unwrap(),
            Some(at(0))
        );
    })
    .await;
}

/// SQLite answers checks on connections of its own: what a reopened store
/// finds is what the file holds, an import included (which carries the checks counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_sqlite_store_finds_the_open_requests_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.db");
    let alice = user("alice", &["eng"], &[]);
    let db = EntitlementId::parse("db").unwrap();
    let checked = airlock_core::request::CheckActivity {
        count: 3,
        last_at: Some(at(500)),
    };
    async fn open_of(store: &SqlStore, who: &UserId, db: &EntitlementId) -> Option<String> {
        store
            .open_request(who, db)
            .await
            .unwrap()
            .map(|o| o.id.to_string())
    }
    let exported = {
        let store = SqlStore::open(&Location::Sqlite(path.clone()))
            .await
            .unwrap();
        create(&store, &alice, &entitlement(1), "r1", at(0))
            .await
            .unwrap();
        assert_eq!(open_of(&store, &alice.id, &db).await.as_deref(), Some("r1"));
        let r1 = RequestId::parse("r1").unwrap();
        store.add_checks(vec![(r1, checked)]).await.unwrap();
        let requests = store.export_requests(None, 100).await.unwrap();
        let audit = store.export_audit(0, 100).await.unwrap();
        (requests, audit)
    };
    let store = SqlStore::open(&Location::Sqlite(path.clone()))
        .await
        .unwrap();
    assert_eq!(open_of(&store, &alice.id, &db).await.as_deref(), Some("r1"));
    apply(&store, "r1", Command::Cancel { by: alice.clone() }, at(1))
        .await
        .unwrap();
    assert_eq!(open_of(&store, &alice.id, &db).await, None);
    drop(store);

    // Into a fresh file: the imported open request is found at once.
    let fresh = SqlStore::open(&Location::Sqlite(dir.path().join("fresh.db")))
        .await
        .unwrap();
    fresh
        .import(exported.0, exported.1, Vec::new())
        .await
        .unwrap();
    assert_eq!(open_of(&fresh, &alice.id, &db).await.as_deref(), Some("r1"));
    let imported = fresh
        .get_request(&RequestId::parse("r1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(imported.checks, checked);
}

/// The open items about one person, per open campaign (what the web UI's
/// menu takes from each campaign's open items: nobody decides their own):
/// a holder counts for the user it stands for, and decided items and
/// completed campaigns drop out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_access_review_items_are_counted_per_person_and_campaign() {
    use airlock_core::access_review::{self, Decision, Subject, Template};
    use airlock_core::audit::Actor;
    use airlock_core::standing::Risk;
    use airlock_core::CampaignId;
    use airlock_server::store::access_reviews::ReviewWrite;

    on_every_store(|store, _| async move {
        let template = Template {
            name: "quarterly".to_owned(),
            every: None,
            reviewers: BTreeSet::from([GroupName::parse("sre").unwrap()]),
            due_within: Duration::from_secs(7 * 24 * 3600),
            remind_after: None,
            escalate_after: None,
            escalate_to: BTreeSet::new(),
            eligibilities: true,
            standing: true,
        };
        let may_ask = |who: &str, what: &str| Subject::Eligibility {
            user: UserId::parse(who).unwrap(),
            entitlement: EntitlementId::parse(what).unwrap(),
            route: "auto".to_owned(),
        };
        let holds = |who: Option<&str>| Subject::Holder {
            connector: "pg".to_owned(),
            principal: "p".to_owned(),
            status: "standing".to_owned(),
            user: who.map(|w| UserId::parse(w).unwrap()),
            request: None,
            entitlements: Vec::new(),
            risk: Risk::Low,
        };
        let reviewer = user("rita", &["sre"], &[]);
        let start = |n: u8, subjects: Vec<Subject>| {
            let started = access_review::start(
                CampaignId::from_entropy([n; 12]),
                &template,
                subjects,
                &[],
                Actor::System,
                &Routing::default(),
                at(0),
            );
            (started.campaign.clone(), started)
        };
        let decide = |campaign: access_review::Campaign, number: u32| {
            let store = Arc::clone(&store);
            let reviewer = reviewer.clone();
            async move {
                let items = store.access_review_items(&campaign.id).await.unwrap();
                let item = items.iter().find(|i| i.number == number).unwrap();
                let ruling = access_review::decide(
                    &campaign,
                    item,
                    &reviewer,
                    Decision::Confirm,
                    "",
                    at(10),
                )
                .unwrap();
                let write = ReviewWrite::Decide {
                    campaign: campaign.id.clone(),
                    item: number,
                    ruling: Box::new(ruling),
                };
                assert!(store.write_access_review(write).await.unwrap());
            }
        };
        let (first, started) = start(
            1,
            vec![
                may_ask("alice", "db"),
                may_ask("alice", "logs"),
                may_ask("bob", "db"),
                holds(Some("alice")),
                holds(None),
            ],
        );
        store
            .write_access_review(ReviewWrite::Start(Box::new(started)))
            .await
            .unwrap();
        let (second, started) = start(2, vec![may_ask("alice", "db")]);
        store
            .write_access_review(ReviewWrite::Start(Box::new(started)))
            .await
            .unwrap();
        let about = |who: &str| {
            let store = Arc::clone(&store);
            let who = UserId::parse(who).unwrap();
            async move {
                let mut found = store.access_review_open_items_about(&who).await.unwrap();
                found.sort();
                found
            }
        };
        let mut both = vec![(first.id.clone(), 3), (second.id.clone(), 1)];
        both.sort();
        assert_eq!(about("alice").await, both);
        assert_eq!(about("bob").await, vec![(first.id.clone(), 1)]);
        assert_eq!(about("carol").await, vec![]);

        // Alice's db item decided in the first; the second completes.
        decide(first.clone(), 1).await;
        decide(second.clone(), 1).await;
        assert_eq!(about("alice").await, vec![(first.id.clone(), 2)]);
        assert_eq!(about("bob").await, vec![(first.id.clone(), 1)]);
    })
    .await;
}

/// Creates a bundle of `db` and `logs` for `requester` (`ids` for its parts).
async fn create_bundle(
    store: &SqlStore,
    requester: &User,
    ids: [&str; 2],
    now: Timestamp,
) -> Result<Vec<Transition>, StoreError> {
    let db = entitlement(1);
    let logs = Ent {
        entitlement: entitlement_named("logs").entitlement,
        approvals: 0,
    };
    let ids: Vec<RequestId> = ids.iter().map(|i| RequestId::parse(i).unwrap()).collect();
    let (u, part_ids) = (requester.clone(), ids.clone());
    store
        .create_requests(
            &ids,
            &requester.id,
            Box::new(move |open| {
                let parts = [&db, &logs]
                    .into_iter()
                    .zip(&part_ids)
                    .map(|(ent, id)| request::BundlePart {
                        id: id.clone(),
                        entitlement: &ent.entitlement,
                        open_request: open.get(&ent.entitlement.id),
                        verdict: ent.verdict(),
                    })
                    .collect();
                request::submit_bundle(
                    new_request("ignored"),
                    Some("kit".to_owned()),
                    parts,
                    &u,
                    &LifecycleSettings::default(),
                    now,
                )
            }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_is_created_and_changed_whole_or_not_at_all() {
    on_every_store(|store, _| async move {
        let alice = user("alice", &["eng"], &[]);
        let bob = user("bob", &["approvers"], &[]);
        // An open request for one part's entitlement refuses the bundle, writing nothing.
        create(&store, &alice, &entitlement_named("logs"), "older", at(0))
            .await
            .unwrap();
        let events = audit_count(&store).await;
        let refused = create_bundle(&store, &alice, ["b1", "b2"], at(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StoreError::Rejected(Rejection::Conflict(m)) if m.contains("`older`")),
            "{refused:?}"
        );
        for id in ["b1", "b2"] {
            assert_eq!(
                store.get_request(&RequestId::parse(id).unwrap()).await.unwrap(),
                None
            );
        }
        assert_eq!(audit_count(&store).await, events);
        apply(&store, "older", Command::Release { by: alice.clone() }, at(2))
            .await
            .unwrap();
        // Created together: both parts, each naming the bundle, and the
        // open request of each found by a check.
        let made = create_bundle(&store, &alice, ["b1", "b2"], at(3))
            .await
            .unwrap();
        assert_eq!(made.len(), 2);
        for t in &made {
            let stored = store.get_request(&t.request.id).await.unwrap().unwrap();
            assert_eq!(stored, t.request);
            let bundle = stored.bundle.unwrap();
            assert_eq!(bundle.name.as_deref(), Some("kit"));
            assert_eq!(
                bundle.parts.iter().map(RequestId::as_str).collect::<Vec<_>>(),
                ["b1", "b2"]
            );
            let open = store
                .open_request(&alice.id, &t.request.entitlement)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(open.id, t.request.id);
        }
        // A change through one part reads, decides and writes every part.
        let changed = store
            .update_bundle(
                &RequestId::parse("b2").unwrap(),
                Box::new(move |parts| {
                    assert_eq!(parts.len(), 2);
                    request::apply_bundle(
                        parts,
                        &RequestId::parse("b2").unwrap(),
                        &|_| Command::Approve {
                            approver: bob.clone(),
                            comment: None,
                            permission: permitted(),
                        },
                        &LifecycleSettings::default(),
                        at(4),
                    )
                }),
            )
            .await
            .unwrap();
        assert_eq!(changed.len(), 2);
        for t in &changed {
            let stored = store.get_request(&t.request.id).await.unwrap().unwrap();
            assert_eq!(stored.state, State::Approved);
            assert_eq!(stored, t.request);
        }
        // A refusal by one part writes nothing for either.
        let before = audit_count(&store).await;
        let err = store
            .update_bundle(
                &RequestId::parse("b1").unwrap(),
                Box::new(|parts| {
                    request::apply_bundle(
                        parts,
                        &RequestId::parse("b1").unwrap(),
                        &|p| Command::Release {
                            by: if p.id.as_str() == "b2" {
                                user("mallory", &[], &[])
                            } else {
                                user("alice", &["eng"], &[])
                            },
                        },
                        &LifecycleSettings::default(),
                        at(5),
                    )
                }),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Rejected(Rejection::Forbidden(_))), "{err:?}");
        assert_eq!(audit_count(&store).await, before);
        for t in &changed {
            let stored = store.get_request(&t.request.id).await.unwrap().unwrap();
            assert_eq!(stored.state, State::Approved);
        }
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.first_break, None);
    })
    .await;
}

/// An external principal's request keeps its sponsor and account end
/// through the store and an export; a provisioned vendor's terms read back
/// equal, and the directory finds the vendors a sponsor answers for,
/// whatever the case of the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_principals_terms_round_trip() {
    on_every_store(|store, _| async move {
        let vic = user("vic", &["eng"], &[]).sponsored(External {
            sponsor: UserId::parse("sara").unwrap(),
            account_expires: at(1800),
        });
        let ent = entitlement_named("staging");
        let t = request::submit(
            new_request("v1"),
            &vic,
            &Entitlement {
                open_to_externals: true,
                ..ent.entitlement.clone()
            },
            None,
            Verdict {
                route: Route::AutoApproved,
                ..ent.verdict()
            },
            &LifecycleSettings::default(),
            at(0),
        )
        .unwrap();
        assert_eq!(t.request.state, request::State::Pending);
        let id = t.request.id.clone();
        let written = store
            .create_request(&id, &vic.id, Box::new(move |_| Ok(t.clone())))
            .await
            .unwrap();
        let read = store.get_request(&id).await.unwrap().unwrap();
        assert_eq!(read, written.request);
        assert_eq!(read.sponsor().map(UserId::as_str), Some("sara"));
        assert_eq!(read.approvals_needed(), 1);
        assert_eq!(
            RequestRecord::from_request(&read).into_request().unwrap(),
            read,
            "an export reads back the same"
        );
        let sara = user("sara", &[], &[]);
        let waiting = store
            .list_requests(&RequestFilter {
                awaiting_approval_of: Some(sara.clone()),
                limit: 10,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(waiting.len(), 1);
        // Found among external principals' requests, and an employee's not.
        create(&store, &user("emma", &["eng"], &[]), &ent, "e1", at(1))
            .await
            .unwrap();
        let sponsored: Vec<String> = store
            .list_requests(&RequestFilter {
                sponsored: true,
                limit: 10,
                ..RequestFilter::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(sponsored, ["v1"]);

        let vera = DirectoryUser {
            employment: Some("vendor".to_owned()),
            sponsor: Some(UserId::parse("Tom").unwrap()),
            account_expires: Some(at(3600)),
            ..directory_user("u9", "vera", true, 1)
        };
        put_user(&store, vera.clone()).await.unwrap();
        put_user(&store, directory_user("u8", "tom", true, 1))
            .await
            .unwrap();
        assert_eq!(
            store.directory_user("u9").await.unwrap(),
            Some(vera.clone())
        );
        assert_eq!(vera.external().map(|t| t.account_expires), Some(at(3600)));
        let sponsored = store.directory_sponsored_by("tom").await.unwrap();
        assert_eq!(sponsored, [UserId::parse("vera").unwrap()]);
        assert!(store
            .directory_sponsored_by("vera")
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_taken_once_until_forgotten_or_past_its_time() {
    on_every_store(|store, _| async move {
        let minutes = |m: i64| at(m * 60_000);
        assert!(store.take_delivery("k1", at(0), minutes(5)).await.unwrap());
        assert!(!store.take_delivery("k1", at(1), minutes(5)).await.unwrap());
        assert!(store.take_delivery("k2", at(2), minutes(5)).await.unwrap());
        // Forgotten (its work failed): taken again.
        store.forget_delivery("k1").await.unwrap();
        assert!(store.take_delivery("k1", at(3), minutes(5)).await.unwrap());
        assert!(!store.take_delivery("k1", at(4), minutes(5)).await.unwrap());
        // Past its time it is forgotten on the way (its timestamp refuses
        // it by then anyway); one not yet past is kept.
        assert!(store
            .take_delivery("k3", minutes(5), minutes(10))
            .await
            .unwrap());
        assert!(store
            .take_delivery("k1", minutes(5), minutes(10))
            .await
            .unwrap());
        assert!(!store
            .take_delivery("k3", minutes(6), minutes(10))
            .await
            .unwrap());
        // Of many takes of one delivery at once, exactly one is new.
        let takes = (0..16).map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.take_delivery("k4", at(7), minutes(5)).await })
        });
        let mut new = 0;
        for take in takes {
            if take.await.unwrap().unwrap() {
                new += 1;
            }
        }
        assert_eq!(new, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_found_by_their_ticket_exactly() {
    on_every_store(|store, _| async move {
        let ent = entitlement(1);
        let mut made = Vec::new();
        for (id, who, ticket) in [
            ("r1", "alice", Some("INC-1")),
            ("r2", "bob", Some("INC-1")),
            ("r3", "carol", Some("inc-1")),
            ("r4", "dave", Some("INC-10")),
            ("r5", "erin", None),
        ] {
            let new = NewRequest {
                ticket: ticket.map(str::to_owned),
                ..new_request(id)
            };
            let (u, e, verdict) = (
                user(who, &["eng"], &[]),
                ent.entitlement.clone(),
                ent.verdict(),
            );
            let t = store
                .create_request(
                    &new.id.clone(),
                    &u.id.clone(),
                    Box::new(move |open| {
                        request::submit(
                            new.clone(),
                            &u,
                            &e,
                            open.get(&e.id),
                            verdict.clone(),
                            &LifecycleSettings::default(),
                            at(0),
                        )
                    }),
                )
                .await
                .unwrap();
            made.push(t.request);
        }
        apply(
            &store,
            "r2",
            Command::Cancel {
                by: user("bob", &["eng"], &[]),
            },
            at(1),
        )
        .await
        .unwrap();
        let found = |states: Vec<State>| {
            let store = Arc::clone(&store);
            async move {
                let mut ids: Vec<String> = store
                    .list_requests(&RequestFilter {
                        states,
                        ticket: Some("INC-1".to_owned()),
                        limit: 100,
                        ..RequestFilter::default()
                    })
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.id.to_string())
                    .collect();
                ids.sort();
                ids
            }
        };
        // The SQL agrees with the core's rule.
        let carrying: Vec<String> = made
            .iter()
            .filter(|r| airlock_core::ticket::carries(r, "INC-1"))
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(carrying, ["r1", "r2"]);
        assert_eq!(found(Vec::new()).await, carrying);
        assert_eq!(
            found(vec![State::Pending, State::Approved, State::Active]).await,
            ["r1"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_session_is_kept_once_with_its_event_and_listed_without_its_recording() {
    use airlock_core::audit::{Actor, AuditAction, AuditEvent};
    use airlock_core::ssh_session::{Ending, SessionReport};
    use airlock_server::store::ssh_sessions::StoredSession;
    on_every_store(|store, _| async move {
        let request = RequestId::parse("r1").unwrap();
        let recording = "{\"version\":2,\"width\":80,\"height\":24}\n[0.100000, \"o\", \"up\"]\n";
        let session = |id: &str, start: i64| StoredSession {
            request: request.clone(),
            report: SessionReport {
                id: id.to_owned(),
                host: "web1".into(),
                user: "deploy".into(),
                client: "10.0.4.17 port 51334".into(),
                command: (id == "s2").then(|| "uptime".to_owned()),
                started_at: at(start),
                ended_at: at(start + 1_000),
                ending: Ending::Revoked,
                recording: recording.to_owned(),
                cut: (id == "s1").then(|| "output from 1.0s on not kept".to_owned()),
            },
            recording_bytes: recording.len() as u64,
            sent_bytes: 5_000,
            received_at: at(start + 2_000),
            received_by: "web1".into(),
        };
        let event = |id: &str| AuditEvent {
            at: at(0),
            actor: Actor::System,
            action: AuditAction::SshSessionRecorded,
            request: Some(request.clone()),
            entitlement: None,
            subject: None,
            details: [("session".to_owned(), id.to_owned())].into(),
        };
        let before = audit_count(&store).await;
        assert!(store
            .add_ssh_session(session("s2", 5_000), vec![event("s2")])
            .await
            .unwrap());
        // Sent again: nothing written, no second event.
        assert!(!store
            .add_ssh_session(session("s2", 5_000), vec![event("s2")])
            .await
            .unwrap());
        assert!(store
            .add_ssh_session(session("s1", 1_000), vec![event("s1")])
            .await
            .unwrap());
        assert_eq!(audit_count(&store).await, before + 2);

        // Listed oldest first, without the recordings.
        let listed = store.ssh_sessions(&request).await.unwrap();
        let mut expected: Vec<StoredSession> = vec![session("s1", 1_000), session("s2", 5_000)];
        for s in &mut expected {
            s.report.recording.clear();
        }
        assert_eq!(listed, expected);
        assert_eq!(
            store.ssh_session("s2").await.unwrap(),
            Some(session("s2", 5_000))
        );
        assert_eq!(store.ssh_session("s3").await.unwrap(), None);
        assert!(store
            .ssh_sessions(&RequestId::parse("r2").unwrap())
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

/// Issue 17: the lists people page through — an approver's inbox (`airlock
/// pending`), a requester's history and the audit log by user — read
/// ranges of indexes on both databases, first page and later ones: each
/// database's own EXPLAIN of the query the store runs uses the list's
/// indexes, reads no table whole (nor an index whole, but a partial one
/// that holds only what the list wants) and sorts at most the few rows the
/// union of an inbox's or a user's parts brings.
#[tokio::test]
async fn lists_read_ranges_of_indexes() {
    on_every_store(|store, _| async move {
        let approver = user("carol", &["approvers", "oncall"], &[]);
        let requester = user("alice", &["eng"], &[]);
        let later = Some(PageKey {
            created_at: at(5),
            id: RequestId::parse("r5").unwrap(),
        });
        let inbox = RequestFilter {
            awaiting_approval_of: Some(approver.clone()),
            visible_to: Some(approver.clone()),
            limit: 101,
            ..RequestFilter::default()
        };
        let history = RequestFilter {
            requester: Some(requester.id.clone()),
            visible_to: Some(requester.clone()),
            limit: 101,
            ..RequestFilter::default()
        };
        let by_user = AuditFilter {
            user: Some("alice".to_owned()),
            limit: 101,
            ..AuditFilter::default()
        };
        let inbox_indexes = [
            "pending_by_group",
            "requests_awaiting_extension",
            "requests_awaiting_sponsor",
        ];
        // Whether the list is a union of parts (whose few rows are sorted
        // together) or one range, sorted by its index.
        let lists = [
            (
                "inbox",
                Explained::Requests(&inbox),
                &inbox_indexes[..],
                true,
            ),
            (
                "history",
                Explained::Requests(&history),
                &["requests_by_requester"][..],
                false,
            ),
            (
                "audit by user",
                Explained::Audit(&by_user),
                &["audit_by_actor", "audit_by_subject"][..],
                true,
            ),
        ];
        for (what, list, indexes, union) in lists {
            let later_page = match list {
                Explained::Requests(f) => {
                    let f = RequestFilter {
                        after: later.clone(),
                        ..f.clone()
                    };
                    store.list_plan(Explained::Requests(&f)).await.unwrap()
                }
                Explained::Audit(f) => {
                    let f = AuditFilter {
                        before_seq: Some(1000),
                        ..f.clone()
                    };
                    store.list_plan(Explained::Audit(&f)).await.unwrap()
                }
                Explained::OpenRequestsOf(_) => unreachable!("not a list"),
            };
            let first_page = store.list_plan(list).await.unwrap();
            for (page, plan) in [("first page", first_page), ("later page", later_page)] {
                assert_index_ranges(&plan, indexes, union, &format!("{what}, {page}"));
            }
        }
    })
    .await;
}

/// Issue 17: a write batch that creates requests reads its requesters'
/// open requests (one open request per person and entitlement) through
/// the partial index of open requests, for one requester and for a
/// batch's worth: never a walk of every open request in the store, which
/// the state index would be (SQLite's planner took it for several
/// requesters, and the writer slowed by a millisecond per ten thousand
/// open requests).
#[tokio::test]
async fn a_write_batch_reads_its_requesters_open_requests_by_index() {
    on_every_store(|store, _| async move {
        for n in [1, 8, 64] {
            let requesters: BTreeSet<String> = (0..n).map(|i| format!("user{i}")).collect();
            let plan = store
                .list_plan(Explained::OpenRequestsOf(&requesters))
                .await
                .unwrap();
            assert_index_ranges(
                &plan,
                &["requests_one_open"],
                false,
                &format!("{n} requesters"),
            );
            assert!(
                !plan.contains("requests_by_state"),
                "{n} requesters:\n{plan}"
            );
        }
    })
    .await;
}

/// What a start reads to settle requests (connector attempts left in
/// flight, external principals' terms) is read through partial indexes that
/// hold only such requests, never by walking every request or every open
/// one: with millions of requests either walk cost a restart seconds.
#[tokio::test]
async fn a_start_reads_only_the_requests_it_settles() {
    on_every_store(|store, _| async move {
        let lists = [
            (
                "connector work",
                RequestFilter {
                    connector_work: true,
                    limit: u32::MAX,
                    ..RequestFilter::default()
                },
                "requests_connector_work",
            ),
            (
                "external principals' open requests",
                RequestFilter {
                    states: vec![State::Pending, State::Approved, State::Active],
                    sponsored: true,
                    limit: u32::MAX,
                    ..RequestFilter::default()
                },
                // SQLite's `requests_sponsored_by_state`, PostgreSQL's
                // `requests_sponsored_open`.
                "requests_sponsored_",
            ),
        ];
        for (what, filter, index) in lists {
            let plan = store.list_plan(Explained::Requests(&filter)).await.unwrap();
            assert!(plan.contains(index), "{what}: `{index}` unused:\n{plan}");
            for whole in [
                "requests_by_state",
                "requests_by_created",
                "requests_one_open",
                "Seq Scan",
            ] {
                assert!(!plan.contains(whole), "{what}: reads `{whole}`:\n{plan}");
            }
        }
    })
    .await;
}

/// Fails unless `plan` (SQLite's `EXPLAIN QUERY PLAN` or PostgreSQL's
/// `EXPLAIN`) uses every one of `indexes`, scans no table or index whole
/// (a partial index that holds only the list's rows aside), and sorts
/// nothing but, for a `union` of parts, rows each part brought under its
/// own limit (SQLite: one sort, of the union; PostgreSQL: every sort's
/// scans under a limit, or of a partial index).
fn assert_index_ranges(plan: &str, indexes: &[&str], union: bool, what: &str) {
    const PARTIAL: &[&str] = &["requests_awaiting_extension"];
    for index in indexes {
        assert!(plan.contains(index), "{what}: `{index}` unused:\n{plan}");
    }
    let lines: Vec<&str> = plan.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let partial = |line: &str| PARTIAL.iter().any(|p| line.contains(p));
    // PostgreSQL's nodes: a line with `(cost=`, its details below it.
    let is_node = |line: &str| line.contains("(cost=");
    let is_scan = |line: &str| {
        is_node(line) && (line.contains(" on requests") || line.contains(" on audit_events"))
    };
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim();
        // SQLite: SCAN is a whole table or index, SEARCH a range.
        let sqlite_scan = l.starts_with("SCAN requests") || l.starts_with("SCAN audit_events");
        assert!(
            !sqlite_scan || partial(l),
            "{what}: scans a whole table or index:\n{plan}"
        );
        assert!(
            !l.contains("Seq Scan"),
            "{what}: a sequential scan:\n{plan}"
        );
        // PostgreSQL: an index scan without an index condition reads it whole.
        if l.contains("Index Scan") || l.contains("Index Only Scan") {
            let conditioned = lines
                .iter()
                .skip(i + 1)
                .take_while(|d| !is_node(d))
                .any(|d| d.trim().starts_with("Index Cond"));
            assert!(
                conditioned || partial(l),
                "{what}: reads an index whole:\n{plan}"
            );
        }
        if !is_node(line) || !l.trim_start_matches("->").trim().starts_with("Sort") {
            continue;
        }
        assert!(union, "{what}: a sort:\n{plan}");
        // Each scan below the sort is under a limit below the sort, or of
        // a partial index.
        let below: Vec<&str> = lines
            .iter()
            .skip(i + 1)
            .take_while(|d| indent(d) > indent(line))
            .copied()
            .collect();
        for (j, scan) in below.iter().enumerate().filter(|(_, d)| is_scan(d)) {
            let limited = below
                .iter()
                .take(j)
                .any(|d| is_node(d) && d.contains("Limit") && indent(d) < indent(scan));
            // A bitmap scan names its index on the node below it.
            let of_partial = below
                .iter()
                .skip(j)
                .take_while(|d| d == &scan || indent(d) > indent(scan))
                .any(|d| partial(d));
            // One row by its key for each row the parts brought.
            let by_key = scan.contains("_pkey on");
            assert!(
                limited || of_partial || by_key,
                "{what}: sorts rows no limit bounds:\n{plan}"
            );
        }
    }
    let sqlite_sorts = lines.iter().filter(|l| l.contains("TEMP B-TREE")).count();
    assert!(
        sqlite_sorts <= usize::from(union),
        "{what}: {sqlite_sorts} sorts:\n{plan}"
    );
}

/// PostgreSQL: how many column statistics the planner has of the requests
/// and audit events (ANALYZE writes them; nothing else does).
async fn planner_statistics(fixture: &Fixture) -> i64 {
    let mut conn = fixture.raw().await;
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() \
         AND tablename IN ('requests', 'audit_events')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// The names of the indexes on the tables an import fills in bulk.
async fn index_names(fixture: &Fixture) -> BTreeSet<String> {
    let sql = if fixture.name == "sqlite" {
        "SELECT name FROM sqlite_master WHERE type = 'index' \
         AND tbl_name IN ('requests', 'audit_events')"
    } else {
        "SELECT indexname::text AS name FROM pg_indexes WHERE schemaname = current_schema() \
         AND tablename IN ('requests', 'audit_events')"
    };
    let mut conn = fixture.raw().await;
    sqlx::query_scalar::<_, String>(sql)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// An import streams in batches inside one transaction: a bad line after
/// several batches went in fails it naming the line and leaves the store
/// empty, as does an audit event whose hash does not match; a good import
/// then goes through, and one into the now full store is refused.
#[tokio::test]
async fn a_failed_import_leaves_the_store_empty() {
    use airlock_server::store::transfer;
    let mut fixtures = vec![(sqlite().await, sqlite().await)];
    if let (Some(source), Some(target)) = (postgres().await, postgres().await) {
        fixtures.push((source, target));
    }
    for (source, target) in fixtures {
        let name = source.name;
        let ent = entitlement(1);
        let approver = user("carol", &["approvers", "oncall"], &[]);
        for i in 0..12 {
            let who = user(&format!("u{i}"), &["eng"], &[]);
            create(&source.store, &who, &ent, &format!("r{i}"), at(i))
                .await
                .unwrap();
            let approve = Command::Approve {
                approver: approver.clone(),
                comment: None,
                permission: permitted(),
            };
            apply(&source.store, &format!("r{i}"), approve, at(i + 1))
                .await
                .unwrap();
        }
        let schema = source.store.schema_version().await.unwrap();
        let mut export = Vec::new();
        let exported = transfer::export(source.store.as_ref(), schema, &mut export)
            .await
            .unwrap();
        let text = String::from_utf8(export).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(exported.audit_events >= 24, "{name}: {exported:?}");
        let import_against = |text: String, chain: ChainVerifier| {
            let store = Arc::clone(&target.store);
            async move {
                let mut input = std::io::Cursor::new(text.into_bytes());
                transfer::import_in_batches(store.as_ref(), schema, &mut input, chain, 4).await
            }
        };
        let import = |text: String| import_against(text, ChainVerifier::default());
        let is_empty = || async {
            target
                .store
                .export_requests(None, 10)
                .await
                .unwrap()
                .is_empty()
                && target.store.export_audit(0, 10).await.unwrap().is_empty()
        };
        // An import drops the big tables' secondary indexes and builds them
        // again before it commits: whatever its end, every one is there after.
        let indexes = index_names(&target).await;
        assert!(
            indexes.contains("requests_one_open") && indexes.contains("audit_by_actor"),
            "{name}: {indexes:?}"
        );
        // A line that is no JSON, after the requests and some audit batches.
        let bad_at = lines.len() - 3;
        let mut damaged = lines.clone();
        damaged[bad_at] = "{\"audit\": oops}";
        let err = import(damaged.join("\n")).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("line {}:", bad_at + 1)),
            "{name}: {err}"
        );
        assert!(is_empty().await, "{name}: a failed import left rows");
        assert_eq!(index_names(&target).await, indexes, "{name}");
        // A second open request for one requester's entitlement: the
        // unique index refuses it when it is built, and nothing is kept.
        let open_at = lines
            .iter()
            .position(|l| l.contains("\"id\":\"r0\""))
            .unwrap();
        let twin = lines[open_at].replacen("\"id\":\"r0\"", "\"id\":\"r0-twin\"", 1);
        let mut twinned = lines.clone();
        twinned.insert(open_at + 1, &twin);
        let err = import(twinned.join("\n")).await.unwrap_err().to_string();
        assert!(err.contains("requests_one_open"), "{name}: {err}");
        assert!(is_empty().await, "{name}: a failed import left rows");
        assert_eq!(index_names(&target).await, indexes, "{name}");
        // An audit event edited: its line is named, nothing is kept.
        let edited_at = lines
            .iter()
            .rposition(|l| l.starts_with("{\"audit\"") && l.contains("\"approved\""))
            .unwrap();
        let mut edited = lines.clone();
        let tampered = lines[edited_at].replacen("\"approved\"", "\"denied\"", 1);
        edited[edited_at] = &tampered;
        let err = import(edited.join("\n")).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("line {}:", edited_at + 1)) && err.contains("hash"),
            "{name}: {err}"
        );
        assert!(is_empty().await, "{name}: a failed import left rows");
        assert_eq!(index_names(&target).await, indexes, "{name}");

        // A chain that is not the one a checkpoint signed (here, event 3
        // signed with another hash), or that ends before a signed event,
        // is refused whole: an import checks it against the server's log.
        let signed_at = |seq: i64, head_hash: &str| {
            ChainVerifier::with_checkpoints(vec![Checkpoint {
                seq,
                head_hash: head_hash.to_owned(),
                at: at(0),
            }])
            .unwrap()
        };
        let beyond = i64::try_from(exported.audit_events).unwrap() + 1;
        for (signed, refusal) in [
            (
                (3, "another"),
                "does not match the checkpoint signed for it",
            ),
            (
                (beyond, "later"),
                "missing, but a checkpoint was signed for it",
            ),
        ] {
            let err = import_against(text.clone(), signed_at(signed.0, signed.1))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(refusal), "{name}: {err}");
            assert!(is_empty().await, "{name}: a failed import left rows");
        }

        let postgres = name == "postgres";
        if postgres {
            assert_eq!(planner_statistics(&target).await, 0, "{name}");
        }
        let (imported, chain) = import(text.clone()).await.unwrap();
        assert_eq!(index_names(&target).await, indexes, "{name}");
        // PostgreSQL's planner has statistics of the imported rows at once.
        if postgres {
            assert!(
                planner_statistics(&target).await > 0,
                "{name}: the import left the planner without statistics"
            );
        }
        assert_eq!(imported.requests, exported.requests, "{name}");
        assert_eq!(imported.audit_events, exported.audit_events, "{name}");
        assert_eq!(chain.checked as usize, exported.audit_events, "{name}");
        let stored = target.store.verify_audit().await.unwrap();
        assert_eq!(stored.first_break, None, "{name}");
        assert_eq!(stored.head_hash, chain.head_hash, "{name}");
        // Opened again, the store's checks find the imported open request.
        let maintenance = SqlStore::open(&target.location()).await.unwrap();
        let u0 = UserId::parse("u0").unwrap();
        let open = maintenance
            .open_request(&u0, &ent.entitlement.id)
            .await
            .unwrap();
        assert_eq!(
            open.map(|o| o.id.to_string()).as_deref(),
            Some("r0"),
            "{name}"
        );
        drop(maintenance);
        let again = import(text).await.unwrap_err();
        assert!(again.to_string().contains("not empty"), "{name}: {again}");
        assert_eq!(
            target.store.export_audit(0, 1000).await.unwrap().len(),
            exported.audit_events,
            "{name}: the refused import changed the store"
        );
        source.cleanup().await;
        target.cleanup().await;
    }
}
