//! `airlock-bench lists`: how long the lists people page through take on a
//! seeded store against a small one — an approver's inbox (`airlock
//! pending`), a requester's history (their requests, newest first) and the
//! audit log by user — with the filters the API builds for them, through
//! the store. Each is asked many times, a first page and a page further on
//! (by its cursor); the plan each database chose is printed too.

use std::path::PathBuf;
use std::time::Instant;

use airlock_core::catalog::User;
use airlock_core::{GroupName, UserId};
use airlock_server::store::sql::{Explained, Location, SqlStore};
use airlock_server::store::{AuditFilter, PageKey, RequestFilter, Store};

use crate::percentile;
use crate::report::say;
use crate::seed::{ensure, locate, Shape, ShapeArgs, REQUESTERS};

#[derive(clap::Args, Clone)]
pub struct ListsArgs {
    /// The seeded store: `sqlite:DIR` or a postgres:// URL (see `seed`).
    #[arg(long)]
    database: String,
    /// Where a PostgreSQL store's seeded marker is.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Times each list is asked.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Rows per page (the API's default is 100).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// The small store to compare with: `sqlite:DIR` (seeded there if it
    /// is not yet) with --small-requests requests.
    #[arg(long)]
    small: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    small_requests: usize,
    /// Print each list's plan.
    #[arg(long)]
    plans: bool,
}

impl ListsArgs {
    pub fn on_postgres(&self) -> bool {
        matches!(Location::parse(&self.database), Location::Postgres(_))
    }
}

/// One list's latencies, first page and a later page, in ms.
struct Timing {
    name: &'static str,
    rows: usize,
    first: Vec<f64>,
    later: Vec<f64>,
}

pub async fn run(args: ListsArgs) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let (location, dir) = locate(&args.database, args.dir.as_deref())?;
    let shape = Shape::seeded_in(&dir)?;
    let big = measure(&location, &shape, &args).await?;
    let small = match &args.small {
        Some(db) => {
            let (small_location, small_dir) = locate(db, None)?;
            let small_shape = Shape::new(
                (args.small_requests / 5).max(1),
                args.small_requests,
                ShapeArgs {
                    users: None,
                    entitlements: shape.entitlements,
                    approvers: shape.approvers,
                },
            )?;
            ensure(&small_location, &small_dir, &small_shape).await?;
            Some((
                small_shape,
                measure(&small_location, &small_shape, &args).await?,
            ))
        }
        None => None,
    };
    say!(
        "\nlists, {} rounds of {} rows, ms (first page / a later page by its cursor):",
        args.rounds,
        args.limit
    );
    let line = |label: String, timings: &[Timing]| {
        let mut out = format!("{label:<28}");
        for t in timings {
            let mut first = t.first.clone();
            let mut later = t.later.clone();
            first.sort_by(f64::total_cmp);
            later.sort_by(f64::total_cmp);
            out.push_str(&format!(
                " | {}: p50 {:.2}/{:.2} p99 {:.2}/{:.2} ({} rows)",
                t.name,
                percentile(&first, 50.0),
                percentile(&later, 50.0),
                percentile(&first, 99.0),
                percentile(&later, 99.0),
                t.rows
            ));
        }
        out
    };
    say!("{}", line(format!("{} requests", shape.requests), &big));
    if let Some((small_shape, timings)) = small {
        say!(
            "{}",
            line(format!("{} requests", small_shape.requests), &timings)
        );
    }
    Ok(())
}

/// The approver, requester and audit lists on one store.
async fn measure(
    location: &Location,
    shape: &Shape,
    args: &ListsArgs,
) -> anyhow::Result<Vec<Timing>> {
    let store = SqlStore::open(location).await?;
    let group = |g: &str| GroupName::parse(g).map_err(anyhow::Error::from);
    // approver0 is in approvers-0, which approves bench-e0, -e10, -e20, ….
    let approver = User::person(
        UserId::parse("approver0")?,
        [group("approvers-0")?].into(),
        Default::default(),
    );
    let (holder, _) = shape.holder(shape.grants / 2);
    let requester = User::person(
        UserId::parse(&holder)?,
        [group(REQUESTERS)?].into(),
        Default::default(),
    );
    let inbox = RequestFilter {
        awaiting_approval_of: Some(approver.clone()),
        visible_to: Some(approver.clone()),
        limit: args.limit + 1,
        ..RequestFilter::default()
    };
    let history = RequestFilter {
        requester: Some(requester.id.clone()),
        visible_to: Some(requester.clone()),
        limit: args.limit + 1,
        ..RequestFilter::default()
    };
    let by_user = |user: &UserId| AuditFilter {
        user: Some(user.as_str().to_owned()),
        limit: args.limit + 1,
        ..AuditFilter::default()
    };
    if args.plans {
        for (name, plan) in [
            ("inbox", store.list_plan(Explained::Requests(&inbox)).await?),
            (
                "history",
                store.list_plan(Explained::Requests(&history)).await?,
            ),
            (
                "audit by user",
                store
                    .list_plan(Explained::Audit(&by_user(&approver.id)))
                    .await?,
            ),
        ] {
            say!("{} plan of the {name}:\n{plan}", location.describe());
        }
    }
    let mut timings = Vec::new();
    for (name, filter) in [("inbox", &inbox), ("history", &history)] {
        let mut t = Timing {
            name,
            rows: 0,
            first: Vec::new(),
            later: Vec::new(),
        };
        let first = store.list_requests(filter).await?;
        t.rows = first.len();
        // A later page: after the last row of the first.
        let later = RequestFilter {
            after: first.last().map(PageKey::of),
            ..filter.clone()
        };
        for _ in 0..args.rounds {
            let began = Instant::now();
            store.list_requests(filter).await?;
            t.first.push(began.elapsed().as_secs_f64() * 1000.0);
            let began = Instant::now();
            store.list_requests(&later).await?;
            t.later.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        timings.push(t);
    }
    for (name, user) in [
        ("audit by approver", &approver.id),
        ("audit by requester", &requester.id),
    ] {
        let filter = by_user(user);
        let first = store.list_audit(&filter).await?;
        let later = AuditFilter {
            before_seq: first.first().map(|r| r.seq),
            ..filter.clone()
        };
        let mut t = Timing {
            name,
            rows: first.len(),
            first: Vec::new(),
            later: Vec::new(),
        };
        for _ in 0..args.rounds {
            let began = Instant::now();
            store.list_audit(&filter).await?;
            t.first.push(began.elapsed().as_secs_f64() * 1000.0);
            let began = Instant::now();
            store.list_audit(&later).await?;
            t.later.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        timings.push(t);
    }
    Ok(timings)
}
