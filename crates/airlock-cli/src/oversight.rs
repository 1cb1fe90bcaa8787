//! `airlock reconcile` and `airlock audit`: what admins and auditors use to
//! check that the targets and the record agree with what Airlock decided;
//! and `airlock activity`, how a target's log lines reach a grant's
//! timeline.

use std::path::PathBuf;

use airlock_server::api::{ActivityView, AuditQuery, WaitsQuery};
use anyhow::{bail, Context};
use clap::Subcommand;

use crate::args::{client, Conn, DatabaseArgs};
use crate::output;
use crate::terminal::{say, say_err};

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; the size does not matter"
)]
pub enum OversightCmd {
    /// Access-review campaigns: reviewers confirm or remove who may ask for
    /// what and who holds standing access; every decision is audited.
    AccessReview {
        #[command(subcommand)]
        command: AccessReviewCmd,
    },
    /// Reports for admins and auditors.
    Report {
        #[command(subcommand)]
        report: ReportCmd,
    },
    /// Compare who holds each connector's access in the target with
    /// Airlock's grants (admins). Reports holders no grant explains
    /// (standing privileges, out-of-band grants), access held for ended
    /// requests and active grants the target lacks; every finding is
    /// audited. Exits non-zero when any finding is left unfixed or a
    /// connector could not be checked, so it can gate a cron job.
    Reconcile {
        /// Also fix: remove unexplained holders where the entitlement says
        /// `drift = "revoke"`, revoke lingering access again, grant missing
        /// grants again (each fix audited).
        #[arg(long)]
        fix: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Post sshd's log lines about grant ID to its timeline (admins and
    /// reporters; an API token needs the `report` scope): its logins with
    /// the grant's certificate and their logouts are recorded once each,
    /// every other line is counted as ignored. Reads the lines from FILE,
    /// or from standard input (`journalctl -u ssh -o short-iso | airlock
    /// activity ID --source web1`).
    Activity {
        id: String,
        /// Where the lines come from (the SSH host's name).
        #[arg(long)]
        source: String,
        /// The log lines (default: standard input).
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Say ticket REF is closed, as the ticket system's webhook does
    /// (`POST /v1/tickets/REF/closed`, signed now with the `[tickets]`
    /// secret; no API token): every grant asked for under the ticket is
    /// revoked and every such request that has not started is cancelled.
    /// For a ticket system that cannot sign its own calls, and for trying
    /// the webhook out.
    TicketClosed {
        reference: String,
        /// The environment variable that holds the `[tickets]` secret.
        #[arg(long, default_value = "AIRLOCK_TICKETS_SECRET")]
        secret_env: String,
        /// Server URL.
        #[arg(long, env = "AIRLOCK_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Audit events (admins and auditors); `audit verify` checks the chain.
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCmd>,
        #[arg(long)]
        request: Option<String>,
        /// Events by or about this user.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        entitlement: Option<String>,
        /// Only this kind of event (`requested`, `policy_activated`, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only what this API token (`tok_…`) did (`--token` is the caller's own).
        #[arg(long = "by-token")]
        by_token: Option<String>,
        /// RFC 3339 time or Unix seconds.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain; exits non-zero naming the first bad event.
    /// With `--checkpoints`, also check it against a signed checkpoint log,
    /// reading the database directly (a copy will do) rather than trusting
    /// a server: that catches an event edited with every later hash
    /// recomputed, and the newest events removed down to a checkpoint.
    Verify {
        /// A checkpoint log (the server's `audit.checkpoint_log`).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The key the checkpoints must be signed with (`ed25519:…`, as the
        /// server prints and serves at `/v1/audit/checkpoint-key`). Without
        /// it the key the log names is used, which shows only that the log
        /// is consistent with itself.
        #[arg(long, requires = "checkpoints")]
        public_key: Option<String>,
        /// Read the database directly (`server.database` from this
        /// config) instead of asking a server; `--checkpoints` does too.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Read this database directly (a SQLite path or a postgres://
        /// URL) instead of asking a server; a copy will do.
        #[arg(long)]
        database: Option<String>,
    },
    /// The public key the server signs audit checkpoints with (`ed25519:…`),
    /// to pin for `verify --checkpoints`.
    Key,
    /// Ship the audit chain to a SIEM, oldest first, from where the last
    /// run stopped: JSON lines (stdout, or appended to `--output`), or
    /// syslog messages (RFC 5424) over UDP or TCP. At least once: each
    /// event carries its `seq` and `hash` to deduplicate on.
    Export {
        /// Remembers the last event shipped (a sequence number), read at
        /// start and moved after each batch is out.
        #[arg(long)]
        cursor: Option<PathBuf>,
        /// Start after this sequence number instead (0: from the start).
        #[arg(long)]
        after: Option<i64>,
        /// Append JSON lines to this file instead of stdout.
        #[arg(long, conflicts_with = "syslog")]
        output: Option<PathBuf>,
        /// `udp://HOST:PORT` or `tcp://HOST:PORT`.
        #[arg(long)]
        syslog: Option<String>,
        /// Keep shipping new events as they come, until stopped.
        #[arg(long)]
        follow: bool,
        /// With `--follow`, how often to ask for new events.
        #[arg(long, default_value = "2s", value_parser = airlock_server::config::parse_duration)]
        interval: std::time::Duration,
    },
}

#[derive(Subcommand)]
pub enum AccessReviewCmd {
    /// The campaigns you may see (admins and auditors: all; reviewers:
    /// theirs), newest first, and the kinds the config defines.
    List {
        /// Only campaigns with items still open.
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start a campaign of a kind the config defines (`[access_reviews.NAME]`)
    /// now (admins); its reviewers are notified.
    Start {
        template: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// A campaign and its items: what each is about and how it was decided.
    Show {
        id: String,
        /// Only the items still open.
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Confirm or remove items of a campaign (its reviewers; never your own
    /// access). A removed eligibility refuses the user's next requests for
    /// the entitlement until a later campaign confirms it; a removed holder
    /// is taken out of its target.
    Decide {
        id: String,
        /// Item numbers, as `show` lists them.
        #[arg(required = true)]
        items: Vec<u32>,
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        confirm: bool,
        #[arg(long)]
        remove: bool,
        /// Why (required to remove).
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The campaign's evidence: every item with its decision, who made it
    /// and when, and the decision's place in the audit chain (seq and
    /// hash, to check with `airlock audit verify`). JSON, or CSV with `--csv`.
    Evidence {
        id: String,
        /// CSV (RFC 4180) with a header line.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum ReportCmd {
    /// How access was used: per entitlement (requests, auto-approved,
    /// routed to approvers, break-glass, denials, approval waits), per
    /// approver with what stands out (approving nearly everything, within
    /// seconds, most requests of one entitlement), and eligibilities nobody
    /// used (candidates for removal).
    Usage {
        /// Requests created since: a duration back from now (`90d`), an
        /// RFC 3339 time or Unix seconds (default: the last 30 days).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Who holds each target's access (every connector that can list its
    /// holders): access Airlock granted (request, until when) and standing
    /// privileges no grant explains, with who the holder is, how they would
    /// get it through Airlock, and a risk rating; highest risk first.
    /// Changes nothing (`airlock reconcile` audits and fixes drift).
    Standing {
        /// CSV (RFC 4180) with a header line, for a spreadsheet or an auditor.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// How long requests waited for an approver, per entitlement: p50 and
    /// p95 of the decided ones, those still waiting, timed out or withdrawn.
    Waits {
        /// Requests created since: a duration back from now (`7d`), an
        /// RFC 3339 time or Unix seconds (default: the last 30 days).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(command: OversightCmd) -> anyhow::Result<()> {
    match command {
        OversightCmd::AccessReview { command } => access_review(command).await,
        OversightCmd::Activity {
            id,
            source,
            file,
            conn,
        } => {
            let text = match &file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read `{}`", path.display()))?,
                None => std::io::read_to_string(std::io::stdin())
                    .context("cannot read the log lines from standard input")?,
            };
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect();
            let client = client(&conn)?;
            let mut total: Option<ActivityView> = None;
            for batch in activity_batches(lines) {
                let answer = client.report_activity(&id, &source, batch).await?;
                total = Some(match total {
                    None => answer,
                    Some(t) => ActivityView {
                        recorded: t.recorded + answer.recorded,
                        ignored: t.ignored + answer.ignored,
                        duplicates: t.duplicates + answer.duplicates,
                        over_limit: t.over_limit + answer.over_limit,
                        ..answer
                    },
                });
            }
            match total {
                Some(total) => output::json_or(&total, conn.json, output::activity_reported),
                None => bail!("no lines to post"),
            }
        }
        OversightCmd::TicketClosed {
            reference,
            secret_env,
            url,
            json,
        } => {
            let secret = std::env::var(&secret_env).with_context(|| {
                format!("--secret-env: the environment variable `{secret_env}` (the [tickets] secret) is not set")
            })?;
            // The webhook authenticates by its signature, not a token.
            let closed = airlock_server::client::Client::new(&url, "")?
                .close_ticket(&reference, secret.as_bytes())
                .await?;
            output::json_or(&closed, json, output::ticket_closed)
        }
        OversightCmd::Report {
            report: ReportCmd::Waits { since, conn },
        } => {
            let report = client(&conn)?.approval_waits(&WaitsQuery { since }).await?;
            output::json_or(&report, conn.json, output::approval_waits)
        }
        OversightCmd::Report {
            report: ReportCmd::Usage { since, conn },
        } => {
            let report = client(&conn)?.usage_report(&WaitsQuery { since }).await?;
            output::json_or(&report, conn.json, output::usage)
        }
        OversightCmd::Report {
            report: ReportCmd::Standing { csv, conn },
        } => {
            let report = client(&conn)?.standing_report().await?;
            if csv {
                output::standing_csv(&report);
                return Ok(());
            }
            output::json_or(&report, conn.json, output::standing)
        }
        OversightCmd::Reconcile { fix, conn } => {
            let report = client(&conn)?.reconcile(fix).await?;
            output::json_or(&report, conn.json, output::reconcile)?;
            if !report.clean() {
                bail!(
                    "{} finding(s) left unfixed, {} connector(s) not checked{}",
                    report.unfixed,
                    report.errors,
                    if fix { "" } else { " (run with --fix to fix)" }
                );
            }
            Ok(())
        }
        OversightCmd::Audit {
            verify:
                Some(AuditCmd::Verify {
                    checkpoints: Some(log),
                    public_key,
                    config,
                    database,
                }),
            conn,
            ..
        } => {
            verify_against_checkpoints(
                &log,
                public_key.as_deref(),
                DatabaseArgs { config, database },
                conn.json,
            )
            .await
        }
        OversightCmd::Audit {
            verify:
                Some(AuditCmd::Export {
                    cursor,
                    after,
                    output,
                    syslog,
                    follow,
                    interval,
                }),
            conn,
            ..
        } => {
            let options = crate::siem::Export {
                after,
                cursor,
                output,
                syslog,
                follow,
                interval,
            };
            crate::siem::export(&client(&conn)?, options).await
        }
        OversightCmd::Audit {
            verify: Some(AuditCmd::Key),
            conn,
            ..
        } => {
            let key = client(&conn)?.checkpoint_key().await?;
            say!("{key}");
            Ok(())
        }
        OversightCmd::Audit {
            verify:
                Some(AuditCmd::Verify {
                    checkpoints: None,
                    config,
                    database,
                    ..
                }),
            conn,
            ..
        } if config.is_some() || database.is_some() => {
            use airlock_server::store::Store;
            let (_, store) = DatabaseArgs { config, database }.open().await?;
            let view = airlock_server::api::VerifyView::from(store.verify_audit().await?);
            output::json_or(&view, conn.json, |r| {
                if r.ok {
                    say!("audit chain ok: {} events, head {}", r.checked, r.head_hash);
                }
            })?;
            broken_chain_fails(view)
        }
        OversightCmd::Audit {
            verify: Some(AuditCmd::Verify { .. }),
            conn,
            ..
        } => {
            let report = client(&conn)?.verify_audit().await?;
            output::json_or(&report, conn.json, |r| {
                if r.ok {
                    say!("audit chain ok: {} events, head {}", r.checked, r.head_hash);
                }
            })?;
            broken_chain_fails(report)
        }
        OversightCmd::Audit {
            verify: None,
            request,
            user,
            entitlement,
            action,
            by_token,
            since,
            until,
            limit,
            conn,
        } => {
            let query = AuditQuery {
                request,
                user,
                entitlement,
                action,
                token: by_token,
                since,
                until,
                limit,
                cursor: None,
            };
            output::audit(&client(&conn)?.audit(&query).await?, conn.json)
        }
    }
}

/// `airlock audit verify --checkpoints`: the database's chain against a
/// signed checkpoint log, without asking a server.
async fn verify_against_checkpoints(
    log: &std::path::Path,
    public_key: Option<&str>,
    db: DatabaseArgs,
    json: bool,
) -> anyhow::Result<()> {
    use airlock_core::audit::ChainVerifier;
    use airlock_server::checkpoint::{parse_public_key, public_key_text, read_log};
    use airlock_server::store::Store;
    if !log.exists() {
        bail!("checkpoint log `{}` does not exist", log.display());
    }
    let pinned = public_key.map(parse_public_key).transpose()?;
    let (checkpoints, key) = read_log(log, pinned.as_ref())?;
    if let (None, Some(key)) = (&pinned, &key) {
        say_err!(
            "warning: checked with the key the log names ({}); pass --public-key to pin the key you trust",
            public_key_text(key)
        );
    }
    let count = checkpoints.len();
    let verifier = ChainVerifier::with_checkpoints(checkpoints)
        .with_context(|| format!("checkpoint log `{}`", log.display()))?;
    let (_, store) = db.open().await?;
    let report = store.verify_audit_with(verifier).await?;
    let unsigned = report.unsigned;
    let mut view = airlock_server::api::VerifyView::from(report);
    view.unsigned = Some(unsigned);
    output::json_or(&view, json, |r| {
        if r.ok {
            say!(
                "audit chain ok: {} events, head {}; matches {count} signed checkpoint(s){}; {unsigned} event(s) after the last checkpoint are not signed yet",
                r.checked,
                r.head_hash,
                r.last_checkpoint
                    .map(|seq| format!(" up to event {seq}"))
                    .unwrap_or_default(),
            );
        }
    })?;
    broken_chain_fails(view)
}

/// Exits non-zero naming the first bad event, if there is one.
fn broken_chain_fails(view: airlock_server::api::VerifyView) -> anyhow::Result<()> {
    if !view.ok {
        bail!(
            "audit chain broken at event {}: {}",
            view.first_bad_seq.unwrap_or(0),
            view.problem.unwrap_or_default()
        );
    }
    Ok(())
}

async fn access_review(command: AccessReviewCmd) -> anyhow::Result<()> {
    match command {
        AccessReviewCmd::List { open, conn } => {
            let list = client(&conn)?.access_reviews(open).await?;
            output::json_or(&list, conn.json, output::access_reviews)
        }
        AccessReviewCmd::Start { template, conn } => {
            let started = client(&conn)?.start_access_review(&template).await?;
            output::json_or(&started, conn.json, |c| {
                say!(
                    "started {} ({}): {} item(s) for {} to decide by {}",
                    c.id,
                    c.template,
                    c.items,
                    c.reviewers.join(", "),
                    c.due_at
                );
            })
        }
        AccessReviewCmd::Show { id, open, conn } => {
            let mut detail = client(&conn)?.access_review(&id).await?;
            if open {
                detail.items.retain(|i| i.decision.is_none());
            }
            output::json_or(&detail, conn.json, output::access_review)
        }
        AccessReviewCmd::Decide {
            id,
            items,
            remove,
            comment,
            conn,
            ..
        } => {
            let client = client(&conn)?;
            let body = airlock_server::api::DecideItemBody {
                decision: if remove { "remove" } else { "confirm" }.to_owned(),
                comment,
            };
            let mut failed = 0;
            for item in items {
                match client.decide_access_review_item(&id, item, &body).await {
                    Ok(decided) => say!(
                        "item {item}: {} (audit event {})",
                        decided.decision.as_deref().unwrap_or("?"),
                        decided
                            .seq
                            .map_or_else(|| "?".to_owned(), |s| s.to_string())
                    ),
                    Err(e) => {
                        failed += 1;
                        say_err!("item {item}: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} item(s) not decided");
            }
            Ok(())
        }
        AccessReviewCmd::Evidence { id, csv, conn } => {
            let detail = client(&conn)?.access_review(&id).await?;
            if csv {
                output::access_review_csv(&detail);
                return Ok(());
            }
            output::json_or(&detail, true, |_| {})
        }
    }
}

/// Most of a post's body the lines take (the server takes 64 KiB bodies).
const ACTIVITY_BATCH_BYTES: usize = 48 * 1024;

/// `lines` cut into posts the server takes: at most
/// `ssh_activity::MAX_LINES` lines and [`ACTIVITY_BATCH_BYTES`] of JSON
/// each, in order (a logout after its login, whichever post each is in);
/// always at least one, so an empty input gets the server's answer.
fn activity_batches(lines: Vec<String>) -> Vec<Vec<String>> {
    let mut batches = vec![Vec::new()];
    let mut bytes = 0;
    for line in lines {
        // As JSON: quoted, escaped, and a comma.
        let size = serde_json::to_string(&line).map_or(line.len(), |s| s.len()) + 1;
        let full = batches.last().is_some_and(|b: &Vec<String>| {
            !b.is_empty()
                && (b.len() >= airlock_core::ssh_activity::MAX_LINES
                    || bytes + size > ACTIVITY_BATCH_BYTES)
        });
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(batch) = batches.last_mut() {
            batch.push(line);
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::{activity_batches, ACTIVITY_BATCH_BYTES};

    #[test]
    fn activity_is_posted_in_batches_the_server_takes_in_order() {
        assert_eq!(activity_batches(Vec::new()), vec![Vec::<String>::new()]);
        let short: Vec<String> = (0..1_200).map(|i| format!("line {i}")).collect();
        let batches = activity_batches(short.clone());
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [500, 500, 200]
        );
        assert_eq!(batches.concat(), short);
        let long: Vec<String> = (0..100).map(|i| format!("{i:0>1000}")).collect();
        let batches = activity_batches(long.clone());
        assert!(batches.len() > 1, "{}", batches.len());
        for b in &batches {
            let body = serde_json::to_string(b).unwrap();
            assert!(body.len() <= ACTIVITY_BATCH_BYTES + 2, "{}", body.len());
        }
        assert_eq!(batches.concat(), long);
    }
}
