//! `airlock-bench seed`: a store with N active grants among M requests, for
//! the benches that need a big one (issue 17: a million grants, five
//! million requests), made fast without skipping the audit chain.
//!
//! Every request is decided by the pure core (`request::submit` and
//! `request::apply`) with injected time, as the engine would have decided
//! it, and ends in a realistic state: expired, released, revoked, denied
//! (by policy or by an approver), cancelled, timed out — or is still
//! pending or active. Its audit events are chained with the core's own
//! hashing (`AuditRecord::chain`) in time order across requests, and the
//! requests and the chain go in through the store's import
//! (`Store::begin_import`) in large batches inside one transaction: the
//! result is what a server would have stored, and `airlock audit verify`
//! checks it out. Generating runs on a thread of its own while the store's
//! writer commits the batches before.
//!
//! The shape is fixed by a few numbers (users, entitlements, approvers) so
//! that a bench can tell who holds what without reading the store: active
//! grant `i` is [`Shape::holder`]`(i)`. A seeded directory carries a
//! `seeded` marker naming its shape ([`ensure`]), so the next run with the
//! same shape reuses it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::approval::{ApprovalTier, ApproverVerdict, Route, Verdict};
use airlock_core::audit::{AuditEvent, AuditRecord, GENESIS_HASH};
use airlock_core::catalog::{Entitlement, Role, TicketRule, User};
use airlock_core::drift::DriftPolicy;
use airlock_core::request::{
    self, AccessRequest, Command, JobAction, LifecycleSettings, NewRequest, State, Transition,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};
use airlock_server::checkpoint::OfflineSigner;
use airlock_server::config::AuditSettings;
use airlock_server::store::sql::{Location, SqlStore};
use airlock_server::store::{ImportBatch, Store};
use anyhow::{bail, Context};

use crate::now_ms;
use crate::report::say;
use crate::store::progress;

/// How long a seeded active grant lasts: benches reusing a seeded directory
/// for weeks still find every grant active.
pub const GRANT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The entitlements' maximum, above [`GRANT_LIFETIME`].
const MAX_DURATION_HOURS: u64 = 31 * 24;
/// The group every seeded requester is in.
pub const REQUESTERS: &str = "requesters";
/// Approver groups (each approval-needing entitlement names one).
const APPROVER_GROUPS: usize = 10;
/// The admin who revokes.
const ADMIN: &str = "bench-admin";
const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;
const MINUTE_MS: i64 = 60 * 1000;

#[derive(clap::Args, Clone)]
pub struct SeedArgs {
    /// Active grants among the requests.
    #[arg(long, default_value_t = 1_000_000)]
    pub grants: usize,
    /// Requests in all (at least --grants): the rest ended in realistic
    /// states, and about one in a thousand is still pending.
    #[arg(long, default_value_t = 5_000_000)]
    pub requests: usize,
    /// `sqlite:DIR` (the database and the marker in DIR) or a
    /// `postgres://` URL of an empty database (the marker in --dir).
    #[arg(long)]
    pub database: String,
    /// Where the marker goes for a PostgreSQL database.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub shape: ShapeArgs,
}

#[derive(clap::Args, Clone, Copy)]
pub struct ShapeArgs {
    /// Requesters (`u0`, …); by default enough that the active grants fill
    /// half of the (user, entitlement) pairs, and at least 5,000.
    #[arg(long)]
    pub users: Option<usize>,
    /// Entitlements (`bench-e0`, …); the even ones need one approval.
    #[arg(long, default_value_t = DEFAULT_ENTITLEMENTS)]
    pub entitlements: usize,
    /// Approvers (`approver0`, …), spread over 10 approver groups.
    #[arg(long, default_value_t = DEFAULT_APPROVERS)]
    pub approvers: usize,
}

const DEFAULT_ENTITLEMENTS: usize = 40;
const DEFAULT_APPROVERS: usize = 200;

/// The defaults the flags state.
impl Default for ShapeArgs {
    fn default() -> ShapeArgs {
        ShapeArgs {
            users: None,
            entitlements: DEFAULT_ENTITLEMENTS,
            approvers: DEFAULT_APPROVERS,
        }
    }
}

/// What a seeded store holds, and who holds what in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub grants: usize,
    pub requests: usize,
    pub users: usize,
    pub entitlements: usize,
    pub approvers: usize,
    /// Requests still waiting for an approver.
    pub pending: usize,
}

impl Shape {
    pub fn new(grants: usize, requests: usize, args: ShapeArgs) -> anyhow::Result<Shape> {
        if requests < grants || grants == 0 {
            bail!("--requests must be at least --grants, and --grants at least 1");
        }
        if args.entitlements < 2 || args.approvers < APPROVER_GROUPS {
            bail!("--entitlements must be at least 2 and --approvers at least {APPROVER_GROUPS}");
        }
        let half = args.entitlements / 2;
        let users = args
            .users
            .unwrap_or_else(|| grants.div_ceil(half).max(5000));
        let pending = ((requests - grants) / 1000).min(users * (args.entitlements / 4));
        if grants > users * half {
            bail!(
                "{grants} active grants need at least {} users with {} entitlements \
                 (one open request per user and entitlement, on half of them)",
                grants.div_ceil(half),
                args.entitlements
            );
        }
        Ok(Shape {
            grants,
            requests,
            users,
            entitlements: args.entitlements,
            approvers: args.approvers,
            pending,
        })
    }

    /// Who holds active grant `i` (below `grants`): the user and the
    /// entitlement.
    pub fn holder(&self, i: usize) -> (String, String) {
        (
            format!("u{}", i % self.users),
            entitlement_name(i / self.users),
        )
    }

    /// The (user, entitlement) of pending request `j`: entitlements of the
    /// upper half needing approval, where no active grant is.
    fn pending_pair(&self, j: usize) -> (usize, usize) {
        let upper_even: Vec<usize> = (self.entitlements / 2..self.entitlements)
            .filter(|e| needs_approval(*e))
            .collect();
        let e = upper_even
            .get((j / self.users) % upper_even.len().max(1))
            .copied()
            .unwrap_or(0);
        (j % self.users, e)
    }

    fn marker(&self) -> String {
        format!(
            "grants={}\nrequests={}\nusers={}\nentitlements={}\napprovers={}\n",
            self.grants, self.requests, self.users, self.entitlements, self.approvers
        )
    }

    /// The shape the marker in `dir` names.
    pub fn seeded_in(dir: &Path) -> anyhow::Result<Shape> {
        let text = std::fs::read_to_string(dir.join("seeded"))
            .with_context(|| format!("{} is not seeded (run `seed` first)", dir.display()))?;
        Shape::from_marker(&text)
    }

    /// The shape a marker names.
    pub fn from_marker(text: &str) -> anyhow::Result<Shape> {
        let fields: BTreeMap<&str, usize> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.trim(), v.trim().parse().ok()?)))
            .collect();
        let field = |name: &str| {
            fields
                .get(name)
                .copied()
                .with_context(|| format!("the seeded marker has no `{name}`"))
        };
        Shape::new(
            field("grants")?,
            field("requests")?,
            ShapeArgs {
                users: Some(field("users")?),
                entitlements: field("entitlements")?,
                approvers: field("approvers")?,
            },
        )
    }

    /// The `[entitlements.*]` and `[users.*]` tables a server on the
    /// seeded store needs: every entitlement ([`Shape::entitlement_tables`]),
    /// and the approvers and admin as config users (the requesters need not
    /// be: a check asks about any principal).
    pub fn config_tables(&self) -> String {
        let mut out = self.entitlement_tables();
        out.push_str(&self.approver_tables());
        let _ = write!(out, "\n[users.u0]\ngroups = [\"{REQUESTERS}\"]\n");
        let _ = write!(out, "\n[users.{ADMIN}]\nroles = [\"admin\"]\n");
        out
    }

    /// The seeded approvers (`approver0`, …) as config users, in the
    /// groups the seeded entitlements name.
    pub fn approver_tables(&self) -> String {
        let mut out = String::new();
        for k in 0..self.approvers {
            let _ = write!(
                out,
                "\n[users.approver{k}]\ngroups = [\"{}\"]\n",
                approver_group(k % APPROVER_GROUPS)
            );
        }
        out
    }

    /// The seeded entitlements' tables and their connector, `noop`
    /// (`/bin/true`: the seeded grants were never made for real).
    pub fn entitlement_tables(&self) -> String {
        let mut out = String::from(
            "\n[connectors.noop]\ntype = \"command\"\nprogram = \"/bin/true\"\ntimeout = \"5s\"\n",
        );
        for e in 0..self.entitlements {
            let _ = write!(
                out,
                "\n[entitlements.{}]\nrequestable_by = [\"{REQUESTERS}\"]\nmax_duration = \"{MAX_DURATION_HOURS}h\"\nconnector = \"noop\"\n",
                entitlement_name(e)
            );
            if needs_approval(e) {
                let _ = writeln!(
                    out,
                    "approvals_required = 1\napprovers = [\"{}\"]",
                    approver_group(e % APPROVER_GROUPS)
                );
            } else {
                out.push_str("auto_approve = true\n");
            }
        }
        out
    }
}

pub fn entitlement_name(e: usize) -> String {
    format!("bench-e{e}")
}

/// Even entitlements wait for one approver; odd ones are auto-approved.
fn needs_approval(e: usize) -> bool {
    e.is_multiple_of(2)
}

fn approver_group(g: usize) -> String {
    format!("approvers-{g}")
}

/// Where a server started on a bench's directory DIR keeps its data: the
/// SQLite store, the audit checkpoint key and its log. Every bench and the
/// seed use this one place, so the seed's signed checkpoint is the one the
/// server's first start finds.
pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// `location` as a server on DIR finds it: a PostgreSQL database as it
/// is, a SQLite store in DIR's data directory.
pub fn in_data_dir(location: &Location, dir: &Path) -> Location {
    match location {
        Location::Sqlite(_) => Location::Sqlite(data_dir(dir).join("airlock.db")),
        other => other.clone(),
    }
}

/// The store a bench's `--reuse DIR` names: the database the `--postgres`
/// URL names, else the SQLite store in DIR's data directory.
pub fn seeded_location(postgres: &Option<String>, dir: &Path) -> Location {
    match postgres {
        Some(url) => Location::Postgres(url.clone()),
        None => Location::Sqlite(data_dir(dir).join("airlock.db")),
    }
}

/// Where `--database` puts the store and the marker.
pub fn locate(database: &str, dir: Option<&Path>) -> anyhow::Result<(Location, PathBuf)> {
    if let Some(path) = database.strip_prefix("sqlite:") {
        let dir = PathBuf::from(path.trim_start_matches("//"));
        return Ok((seeded_location(&None, &dir), dir));
    }
    match Location::parse(database) {
        Location::Postgres(url) => {
            let dir = dir
                .context("a PostgreSQL database needs --dir for its seeded marker")?
                .to_path_buf();
            Ok((Location::Postgres(url), dir))
        }
        Location::Sqlite(_) => bail!("--database must be `sqlite:DIR` or a postgres:// URL"),
    }
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let shape = Shape::new(args.grants, args.requests, args.shape)?;
    let (location, dir) = locate(&args.database, args.dir.as_deref())?;
    ensure(&location, &dir, &shape).await?;
    Ok(())
}

/// Seeds `location` with `shape` unless `dir`'s marker says it already
/// holds it; whether it was reused. Refuses a directory seeded with
/// another shape, or whose seeding did not finish.
pub async fn ensure(location: &Location, dir: &Path, shape: &Shape) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let marker = dir.join("seeded");
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let seeded = Shape::from_marker(&text)
                .with_context(|| format!("reading {}", marker.display()))?;
            if seeded != *shape {
                bail!(
                    "{} was seeded with {} grants among {} requests ({} users, {} entitlements, \
                     {} approvers), not this shape: remove it or pick another directory",
                    dir.display(),
                    seeded.grants,
                    seeded.requests,
                    seeded.users,
                    seeded.entitlements,
                    seeded.approvers
                );
            }
            say!(
                "reusing the {} grants among {} requests seeded in {}",
                shape.grants,
                shape.requests,
                location.describe()
            );
            return Ok(true);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", marker.display())),
    }
    if let Location::Sqlite(path) = location {
        if path.exists() {
            bail!(
                "{} holds a database whose seeding did not finish: remove it",
                dir.display()
            );
        }
    }
    let checkpoint_log = AuditSettings::default_log(&data_dir(dir));
    if checkpoint_log.exists() {
        bail!(
            "{} holds the checkpoint log of another store than the one about to be seeded: remove it",
            checkpoint_log.display()
        );
    }
    seed(location, dir, shape).await?;
    std::fs::write(&marker, shape.marker())
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(false)
}

/// What the generator hands the writer: a batch of requests and the audit
/// records that fell due before the next batch begins.
struct Generated {
    requests: Vec<AccessRequest>,
    records: Vec<AuditRecord>,
}

async fn seed(location: &Location, dir: &Path, shape: &Shape) -> anyhow::Result<()> {
    say!(
        "seeding {} requests ({} active grants, {} pending, the rest ended) for {} users, \
         {} entitlements and {} approvers into {}",
        shape.requests,
        shape.grants,
        shape.pending,
        shape.users,
        shape.entitlements,
        shape.approvers,
        location.describe()
    );
    let store = SqlStore::open(location).await?;
    let mut import = store.begin_import().await?;
    let done = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&done);
    let total = shape.requests;
    let seeding_progress = progress("seeded", move || counter.load(Ordering::Relaxed), total);
    let began = Instant::now();
    let (batches, mut generated) = tokio::sync::mpsc::channel::<anyhow::Result<Generated>>(2);
    let generator_shape = *shape;
    let now = Timestamp::from_unix_millis(now_ms());
    let generator = std::thread::spawn(move || {
        let result = Generator::new(generator_shape, now).and_then(|mut g| g.run(&batches));
        if let Err(e) = result {
            let _ = batches.blocking_send(Err(e));
        }
    });
    let mut events = 0usize;
    let mut outcome = Ok(());
    while let Some(batch) = generated.recv().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        let n = batch.requests.len();
        events += batch.records.len();
        if let Err(e) = load(&mut import, batch).await {
            outcome = Err(e);
            break;
        }
        done.fetch_add(n, Ordering::Relaxed);
    }
    drop(generated);
    let _ = generator.join();
    if let Err(e) = outcome {
        import.abort().await;
        return Err(e);
    }
    let report = import.finish().await?;
    drop(seeding_progress);
    let took = began.elapsed().as_secs_f64();
    if report.requests != shape.requests {
        bail!(
            "seeded {} requests, not {}",
            report.requests,
            shape.requests
        );
    }
    say!(
        "seeded {} requests and {events} audit events in {took:.1}s: {:.0} requests/s, \
         {:.0} audit events/s (decided by the core, chained, imported in one transaction)",
        report.requests,
        report.requests as f64 / took,
        events as f64 / took
    );
    // What was committed, read back through the store's read connections:
    // the chain the server will check. (Not through a store opened again:
    // this one's writer, closing, folds the import's write-ahead log of
    // gigabytes into the database and holds the file meanwhile.) Its head
    // is signed into the checkpoint log of the servers the benches start
    // on DIR, as `airlock import --config` does, so their first start
    // checks from there instead of reading the chain again.
    let verify = Instant::now();
    let data = data_dir(dir);
    let signer = OfflineSigner::open(
        &AuditSettings::default_key(&data),
        &AuditSettings::default_log(&data),
    )?;
    let chain = store.verify_audit_with(signer.verifier()?).await?;
    if let Some(b) = &chain.first_break {
        bail!("the seeded audit chain does not verify: {b}");
    }
    signer.sign_verified(&chain, Timestamp::from_unix_millis(now_ms()))?;
    say!(
        "audit chain ok: {} events verified in {:.1}s, its head signed into {}",
        chain.checked,
        verify.elapsed().as_secs_f64(),
        AuditSettings::default_log(&data).display()
    );
    Ok(())
}

async fn load(import: &mut airlock_server::store::Import, batch: Generated) -> anyhow::Result<()> {
    import.load(ImportBatch::Requests(batch.requests)).await?;
    import.load(ImportBatch::Audit(batch.records)).await?;
    Ok(())
}

/// splitmix64: a fast, seeded, reproducible stream of numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` at least 1).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..hi` milliseconds.
    fn ms(&mut self, lo: i64, hi: i64) -> i64 {
        lo + i64::try_from(self.below(u64::try_from(hi - lo).unwrap_or(1))).unwrap_or(0)
    }

    fn id(&mut self) -> RequestId {
        let mut bytes = [0u8; 12];
        let (a, b) = (self.next().to_le_bytes(), self.next().to_le_bytes());
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = if i < 8 {
                a.get(i).copied().unwrap_or(0)
            } else {
                b.get(i - 8).copied().unwrap_or(0)
            };
        }
        RequestId::from_entropy(bytes)
    }
}

/// How an ended request ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Expired,
    Released,
    Revoked,
    DeniedByPolicy,
    DeniedByApprover,
    Cancelled,
    TimedOut,
}

impl Ending {
    /// A realistic mix: most grants run out; some are given back, a few
    /// taken away; of those that wait for an approver, some are denied,
    /// withdrawn or forgotten. Endings that need a wait happen only on
    /// entitlements with approvers.
    fn pick(rng: &mut Rng, approval: bool) -> Ending {
        let roll = rng.below(100);
        match (roll, approval) {
            (0..=54, _) => Ending::Expired,
            (55..=71, _) => Ending::Released,
            (72..=76, _) => Ending::Revoked,
            (77..=81, _) => Ending::DeniedByPolicy,
            (82..=89, true) => Ending::DeniedByApprover,
            (90..=95, true) => Ending::Cancelled,
            (96.., true) => Ending::TimedOut,
            (_, false) => Ending::Expired,
        }
    }
}

/// What becomes of one request.
enum Fate {
    Ended(Ending),
    Active,
    Pending,
}

struct Generator {
    shape: Shape,
    now: Timestamp,
    lifecycle: LifecycleSettings,
    entitlements: Vec<Entitlement>,
    users: Vec<User>,
    approvers: Vec<User>,
    admin: User,
    rng: Rng,
    /// Events not yet chained (they come after the next batch begins), by
    /// time, then request, then order within the request.
    waiting: Vec<(i64, u64, u32, AuditEvent)>,
    seq: i64,
    head: String,
}

/// Requests per batch handed to the store.
const BATCH: usize = 5000;

impl Generator {
    fn new(shape: Shape, now: Timestamp) -> anyhow::Result<Generator> {
        let group = |name: &str| GroupName::parse(name).map_err(anyhow::Error::from);
        let requesters = BTreeSet::from([group(REQUESTERS)?]);
        let entitlements = (0..shape.entitlements)
            .map(|e| {
                Ok(Entitlement {
                    id: EntitlementId::parse(&entitlement_name(e))?,
                    description: "seeded".to_owned(),
                    max_duration: Duration::from_secs(MAX_DURATION_HOURS * 3600),
                    default_duration: Duration::from_secs(3600),
                    reason_required: true,
                    ticket: TicketRule {
                        required: false,
                        pattern: None,
                    },
                    connector: "noop".to_owned(),
                    drift: DriftPolicy::Report,
                    sensitivity: airlock_core::standing::Sensitivity::default(),
                    waiting: Default::default(),
                    break_glass: None,
                    open_to_externals: false,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let users = (0..shape.users)
            .map(|i| {
                Ok(User::person(
                    UserId::parse(&format!("u{i}"))?,
                    requesters.clone(),
                    BTreeSet::new(),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let approvers = (0..shape.approvers)
            .map(|k| {
                Ok(User::person(
                    UserId::parse(&format!("approver{k}"))?,
                    BTreeSet::from([group(&approver_group(k % APPROVER_GROUPS))?]),
                    BTreeSet::new(),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let admin = User::person(
            UserId::parse(ADMIN)?,
            BTreeSet::new(),
            BTreeSet::from([Role::Admin]),
        );
        Ok(Generator {
            shape,
            now,
            lifecycle: LifecycleSettings::default(),
            entitlements,
            users,
            approvers,
            admin,
            rng: Rng(0x5EED_0017),
            waiting: Vec::new(),
            seq: 0,
            head: GENESIS_HASH.to_owned(),
        })
    }

    /// Requests in creation order: the ended ones over the past year up to
    /// two days ago, then the active and pending ones over the last twelve
    /// hours, pending ones spread evenly among them.
    fn run(
        &mut self,
        out: &tokio::sync::mpsc::Sender<anyhow::Result<Generated>>,
    ) -> anyhow::Result<()> {
        let shape = self.shape;
        let ended = shape.requests - shape.grants - shape.pending;
        let recent = shape.grants + shape.pending;
        let now = self.now.unix_millis();
        let (old_from, old_to) = (now - 365 * DAY_MS, now - 2 * DAY_MS);
        let (new_from, new_to) = (now - 12 * HOUR_MS, now - MINUTE_MS);
        // Every `stride`th recent request is pending.
        let stride = recent.checked_div(shape.pending).unwrap_or(usize::MAX);
        let (mut active, mut pending) = (0usize, 0usize);
        let created = |k: usize, count: usize, from: i64, to: i64| {
            let span = i128::from(to - from);
            from + i64::try_from(
                span * i128::try_from(k).unwrap_or(0) / i128::try_from(count.max(1)).unwrap_or(1),
            )
            .unwrap_or(0)
        };
        let mut batch = Vec::with_capacity(BATCH);
        for k in 0..shape.requests {
            let (at, fate, pair) = if k < ended {
                let at = created(k, ended, old_from, old_to);
                (at, None, None)
            } else {
                let r = k - ended;
                let at = created(r, recent, new_from, new_to);
                if pending < shape.pending && r % stride == stride - 1 {
                    pending += 1;
                    (
                        at,
                        Some(Fate::Pending),
                        Some(shape.pending_pair(pending - 1)),
                    )
                } else {
                    active += 1;
                    let i = active - 1;
                    (
                        at,
                        Some(Fate::Active),
                        Some((i % shape.users, i / shape.users)),
                    )
                }
            };
            let (user, entitlement) = match pair {
                Some(p) => p,
                None => (
                    usize::try_from(self.rng.below(shape.users as u64)).unwrap_or(0),
                    usize::try_from(self.rng.below(shape.entitlements as u64)).unwrap_or(0),
                ),
            };
            let fate = fate.unwrap_or_else(|| {
                Fate::Ended(Ending::pick(&mut self.rng, needs_approval(entitlement)))
            });
            let (request, events) = self.lifecycle_of(k, at, user, entitlement, fate)?;
            batch.push(request);
            for (event, order) in events.into_iter().zip(0u32..) {
                self.waiting
                    .push((event.at.unix_millis(), k as u64, order, event));
            }
            let last = k + 1 == shape.requests;
            if batch.len() >= BATCH || last {
                // Events before the next request's creation come before
                // any of its events: chain them now.
                let next_at = if last {
                    i64::MAX
                } else if k + 1 < ended {
                    created(k + 1, ended, old_from, old_to)
                } else {
                    created(k + 1 - ended, recent, new_from, new_to)
                };
                let records = self.chain_until(next_at);
                let requests = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if out
                    .blocking_send(Ok(Generated { requests, records }))
                    .is_err()
                {
                    // The writer stopped; it says why.
                    return Ok(());
                }
            }
        }
        if active != shape.grants || pending != shape.pending {
            bail!(
                "generated {active} active and {pending} pending requests, not {} and {}",
                shape.grants,
                shape.pending
            );
        }
        Ok(())
    }

    /// Chains every waiting event before `until`, in time order.
    fn chain_until(&mut self, until: i64) -> Vec<AuditRecord> {
        self.waiting.sort_unstable_by_key(|a| (a.0, a.1, a.2));
        let due = self.waiting.partition_point(|e| e.0 < until);
        let mut records = Vec::with_capacity(due);
        for (_, _, _, event) in self.waiting.drain(..due) {
            let record = AuditRecord::chain(&event, self.seq, &self.head);
            self.seq = record.seq;
            self.head.clone_from(&record.hash);
            records.push(record);
        }
        records
    }

    /// One request from submission to its fate, decided by the core at
    /// each step's time; its final value and every event on the way.
    fn lifecycle_of(
        &mut self,
        k: usize,
        created: i64,
        user: usize,
        entitlement: usize,
        fate: Fate,
    ) -> anyhow::Result<(AccessRequest, Vec<AuditEvent>)> {
        let approval = needs_approval(entitlement);
        let requester = self.users.get(user).context("no such seeded user")?.clone();
        let ent = self
            .entitlements
            .get(entitlement)
            .context("no such seeded entitlement")?;
        let duration = match fate {
            Fate::Active | Fate::Pending => GRANT_LIFETIME,
            Fate::Ended(_) => Duration::from_millis(
                u64::try_from(self.rng.ms(HOUR_MS, 8 * HOUR_MS)).unwrap_or(3_600_000),
            ),
        };
        let group = approver_group(entitlement % APPROVER_GROUPS);
        let route = match fate {
            Fate::Ended(Ending::DeniedByPolicy) => Route::Denied {
                reasons: vec!["seeded: not eligible".to_owned()],
            },
            _ if approval => Route::NeedsApprovals(vec![ApprovalTier {
                count: 1,
                groups: BTreeSet::from([GroupName::parse(&group)?]),
                policy: "seeded-approval".to_owned(),
            }]),
            _ => Route::AutoApproved,
        };
        let new = NewRequest {
            id: self.rng.id(),
            duration: Some(duration),
            reason: format!("seeded request {k}"),
            ticket: None,
            start_at: None,
            break_glass: false,
            public_key: None,
        };
        let verdict = Verdict {
            route,
            policy_version: "seeded".to_owned(),
            policies: vec!["seeded".to_owned()],
            errors: Vec::new(),
            waiting: Default::default(),
        };
        let mut t = created;
        let mut events = Vec::new();
        let step = |result: Result<Transition, request::Rejection>,
                    events: &mut Vec<AuditEvent>|
         -> anyhow::Result<(AccessRequest, Option<u64>)> {
            let transition = result.map_err(|e| anyhow::anyhow!("seeded request {k}: {e}"))?;
            events.extend(transition.events);
            let token = transition.effects.first().map(|e| e.token);
            Ok((transition.request, token))
        };
        let (mut request, mut token) = step(
            request::submit(
                new,
                &requester,
                ent,
                None,
                verdict,
                &self.lifecycle,
                Timestamp::from_unix_millis(t),
            ),
            &mut events,
        )?;
        if matches!(fate, Fate::Ended(Ending::DeniedByPolicy) | Fate::Pending) {
            return Ok((request, events));
        }
        let at = |t: i64| Timestamp::from_unix_millis(t);
        if approval {
            t += self.rng.ms(MINUTE_MS, 30 * MINUTE_MS);
            let approver = self.approver_of(entitlement)?;
            let permission = ApproverVerdict {
                outcome: Ok(vec!["seeded-approval".to_owned()]),
                policy_version: "seeded".to_owned(),
            };
            let command = match fate {
                Fate::Ended(Ending::DeniedByApprover) => Command::Deny {
                    approver,
                    reason: "not now".to_owned(),
                    permission,
                },
                Fate::Ended(Ending::Cancelled) => Command::Cancel {
                    by: requester.clone(),
                },
                Fate::Ended(Ending::TimedOut) => {
                    t = created + duration_ms(self.lifecycle.pending_timeout);
                    Command::Tick
                }
                _ => Command::Approve {
                    approver,
                    comment: None,
                    permission,
                },
            };
            (request, token) = step(
                request::apply(request, command, &self.lifecycle, at(t)),
                &mut events,
            )?;
            if request.state.is_terminal() {
                return Ok((request, events));
            }
        }
        // The target confirms the grant a moment later.
        t += self.rng.ms(200, 3000);
        let grant = token.context("an approved request did not start its grant")?;
        (request, _) = step(
            request::apply(
                request,
                Command::JobSucceeded {
                    action: JobAction::Grant,
                    token: grant,
                    certificate: None,
                },
                &self.lifecycle,
                at(t),
            ),
            &mut events,
        )?;
        if request.state != State::Active {
            bail!(
                "seeded request {k} is {} after its grant",
                request.state.as_str()
            );
        }
        let ending = match fate {
            Fate::Active => return Ok((request, events)),
            Fate::Ended(ending) => ending,
            Fate::Pending => return Ok((request, events)),
        };
        let expires = request.expires_at.map_or(t, Timestamp::unix_millis);
        let (command, end_at) = match ending {
            Ending::Released => (
                Command::Release {
                    by: requester.clone(),
                },
                self.rng.ms(t + 1, expires),
            ),
            Ending::Revoked => (
                Command::Revoke {
                    by: self.admin.clone(),
                    reason: "no longer needed".to_owned(),
                },
                self.rng.ms(t + 1, expires),
            ),
            _ => (Command::Tick, expires),
        };
        let (ended, revoke) = step(
            request::apply(request, command, &self.lifecycle, at(end_at)),
            &mut events,
        )?;
        let revoke = revoke.context("an ended grant did not start its revoke")?;
        (request, _) = step(
            request::apply(
                ended,
                Command::JobSucceeded {
                    action: JobAction::Revoke,
                    token: revoke,
                    certificate: None,
                },
                &self.lifecycle,
                at(end_at + self.rng.ms(200, 3000)),
            ),
            &mut events,
        )?;
        Ok((request, events))
    }

    fn approver_of(&mut self, entitlement: usize) -> anyhow::Result<User> {
        let g = entitlement % APPROVER_GROUPS;
        let per_group = (self.shape.approvers - g).div_ceil(APPROVER_GROUPS);
        let m = usize::try_from(self.rng.below(per_group as u64)).unwrap_or(0);
        self.approvers
            .get(g + APPROVER_GROUPS * m)
            .cloned()
            .context("no such seeded approver")
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
