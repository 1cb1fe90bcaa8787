//! `airlock notifications`: the notification outbox as operators watch it:
//! how far behind sending is, what failed and why, and the messages.

use airlock_server::api::{NotificationsQuery, NotificationsView};
use anyhow::bail;
use clap::Args;

use crate::args::{client, Conn};
use crate::output::{self, table};
use crate::terminal::say;

#[derive(Args)]
pub struct NotificationsArgs {
    /// Only messages in this state: pending, sent, failed or dropped.
    #[arg(long)]
    state: Option<String>,
    /// Only messages about this request.
    #[arg(long)]
    request: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    /// Exit non-zero when any message was given up on, so a cron job or a
    /// health check can alert on it.
    #[arg(long)]
    fail_on_failed: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(args: NotificationsArgs) -> anyhow::Result<()> {
    let query = NotificationsQuery {
        state: args.state,
        request: args.request,
        limit: args.limit,
    };
    let view = client(&args.conn)?.notifications(&query).await?;
    output::json_or(&view, args.conn.json, print)?;
    let failed = view.counts.get("failed").copied().unwrap_or(0);
    if args.fail_on_failed && failed > 0 {
        bail!("{failed} notification(s) were given up on (airlock notifications --state failed)");
    }
    Ok(())
}

fn print(v: &NotificationsView) {
    let count = |s: &str| v.counts.get(s).copied().unwrap_or(0);
    say!(
        "backlog {} (oldest due {}), scheduled {}; sent {}, failed {}, dropped {}",
        v.backlog,
        v.oldest_due.as_deref().unwrap_or("-"),
        v.scheduled,
        count("sent"),
        count("failed"),
        count("dropped"),
    );
    if let Some(e) = &v.last_error {
        say!("last error   {} at {}: {}", e.key, e.at, e.error);
    }
    let rows: Vec<Vec<String>> = v
        .notifications
        .iter()
        .map(|n| {
            vec![
                n.key.clone(),
                n.state.clone(),
                n.attempts.to_string(),
                n.request.clone().unwrap_or_default(),
                n.next_attempt_at
                    .clone()
                    .or_else(|| n.settled_at.clone())
                    .unwrap_or_default(),
                n.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(
            &[
                "KEY",
                "STATE",
                "ATTEMPTS",
                "REQUEST",
                "NEXT/SETTLED",
                "LAST ERROR",
            ],
            &rows,
        );
    }
}
