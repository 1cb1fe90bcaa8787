//! The commands of people asking for and deciding on access: `request`,
//! `ssh`, `pending`, `approve`, `deny`, `cancel`, `release`, `extend`, `revoke`,
//! `credential`, `list`, `show`, `grants`, `reviews`, `review`, `entitlements`,
//! `whoami`.

use std::path::PathBuf;
use std::time::Duration;

use airlock_server::api::{CreateRequest, DurationInput, RequestQuery, RequestView};
use airlock_server::client::{Action, Client};
use anyhow::bail;
use clap::Subcommand;

use crate::args::{client, Conn, Page};
use crate::terminal::{say, say_err};
use crate::{login, output, ssh};

#[derive(Subcommand)]
pub enum RequestCmd {
    /// Ask for an entitlement, or a bundle the config names (its
    /// entitlements together).
    Request {
        /// The entitlement or bundle.
        #[arg(required_unless_present = "entitlements")]
        entitlement: Option<String>,
        /// Entitlements asked for together instead (`db-prod,web-ssh`):
        /// decided, granted and ended together.
        #[arg(long, value_delimiter = ',', conflicts_with = "entitlement")]
        entitlements: Vec<String>,
        /// How long, e.g. `30m`, `2h` (default: the entitlement's default).
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        ticket: Option<String>,
        /// Start later: RFC 3339 time or Unix seconds.
        #[arg(long)]
        start_at: Option<String>,
        /// Declare an emergency (break-glass): granted at once if the
        /// entitlement allows it and the policies let you ask, for at most
        /// its break-glass maximum, and reviewed afterwards.
        #[arg(long)]
        break_glass: bool,
        /// Block until the request is decided and show the outcome.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "1h")]
        wait_timeout: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Get an SSH certificate: requests ENTITLEMENT with your public key,
    /// waits for the grant and writes the certificate beside the key
    /// (`id_ed25519.pub` → `id_ed25519-cert.pub`), where ssh finds it.
    Ssh {
        entitlement: String,
        /// Your key, the private key or its `.pub` (default: the first of
        /// ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub).
        #[arg(long)]
        key: Option<PathBuf>,
        /// How long, e.g. `30m`, `2h` (default: the entitlement's default).
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        ticket: Option<String>,
        /// Give up waiting for the decision and the grant after this long.
        #[arg(long, default_value = "1h")]
        wait_timeout: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Requests waiting for your approval.
    Pending {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a request waiting for you.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deny a request waiting for you.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Withdraw your request before it starts.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// End your active grant early.
    Release {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Ask for more time on your active grant: granted at once or after
    /// approval, as the policies say, never past the entitlement's maximum.
    Extend {
        id: String,
        /// How much longer, e.g. `30m`.
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
        /// Give up waiting for the target to take the new expiry after this long.
        #[arg(long, default_value = "1m")]
        wait_timeout: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// End someone's grant (admins, and the sponsor of an external principal).
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Collect the one-time credential your grant created (e.g. a database login).
    Credential {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// A signed proof that you hold an active grant (an elevation claim):
    /// a short-lived JWT that applications verify against the server's
    /// `/.well-known/jwks.json`. Prints the token alone (for `$(…)`);
    /// `--json` adds its id, issuer, key id and expiry.
    Elevation {
        id: String,
        /// The application it is for (the token's `aud`).
        #[arg(long)]
        audience: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Requests you can see, newest first.
    List {
        /// Comma-separated states, e.g. `pending,active`.
        #[arg(long)]
        state: Option<String>,
        /// Only your own requests.
        #[arg(long)]
        mine: bool,
        #[arg(long)]
        entitlement: Option<String>,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        conn: Conn,
    },
    /// One request and everything that happened to it.
    Show {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Grants the target may hold now, with time left.
    Grants {
        /// Only break-glass grants.
        #[arg(long)]
        break_glass: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Break-glass uses awaiting review (that you may see).
    Reviews {
        /// Reviewed ones too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Judge a break-glass use: was the emergency access acceptable?
    Review {
        id: String,
        #[arg(
            long,
            conflicts_with = "unacceptable",
            required_unless_present = "unacceptable"
        )]
        acceptable: bool,
        #[arg(long)]
        unacceptable: bool,
        /// Why (required).
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Entitlements you may request.
    Entitlements {
        #[command(flatten)]
        conn: Conn,
    },
    /// Who your token (or `airlock login`) belongs to.
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(command: RequestCmd) -> anyhow::Result<()> {
    match command {
        RequestCmd::Request {
            entitlement,
            entitlements,
            duration,
            reason,
            ticket,
            start_at,
            break_glass,
            wait,
            wait_timeout,
            conn,
        } => {
            // A bundle's name is sent as the entitlement: the server knows
            // which it names (a bundle may not share an entitlement's name).
            let body = CreateRequest {
                entitlement: entitlement.unwrap_or_default(),
                duration: duration.map(DurationInput::Text),
                reason,
                ticket,
                start_at,
                break_glass,
                public_key: None,
                bundle: None,
                entitlements,
            };
            let (client, mut request) = login::create_request(&conn, &body).await?;
            if wait {
                let limit = airlock_server::config::parse_duration(&wait_timeout)
                    .map_err(|e| anyhow::anyhow!("--wait-timeout: {e}"))?;
                request = wait_for_decision(&client, request, limit).await?;
            }
            output::request(&request, conn.json)
        }
        RequestCmd::Ssh {
            entitlement,
            key,
            duration,
            reason,
            ticket,
            wait_timeout,
            conn,
        } => {
            let key = ssh::UserKey::find(key.as_deref())?;
            let limit = airlock_server::config::parse_duration(&wait_timeout)
                .map_err(|e| anyhow::anyhow!("--wait-timeout: {e}"))?;
            let body = CreateRequest {
                entitlement,
                duration: duration.map(DurationInput::Text),
                reason,
                ticket,
                start_at: None,
                break_glass: false,
                public_key: Some(key.line().to_owned()),
                bundle: None,
                entitlements: Vec::new(),
            };
            let (client, request) = login::create_request(&conn, &body).await?;
            let request = wait_for_decision(&client, request, limit).await?;
            let path = key.write_certificate(ssh::certificate_of(&request)?)?;
            key.report(&path, &request, conn.json)
        }
        RequestCmd::Pending { page, conn } => {
            let query = RequestQuery {
                awaiting_me: Some(true),
                ..RequestQuery::default()
            };
            list_pages(&conn, &page, query).await
        }
        RequestCmd::Approve { id, comment, conn } => {
            act(&conn, &id, Action::Approve { comment }).await
        }
        RequestCmd::Deny { id, reason, conn } => act(&conn, &id, Action::Deny { reason }).await,
        RequestCmd::Cancel { id, conn } => act(&conn, &id, Action::Cancel).await,
        RequestCmd::Release { id, conn } => act(&conn, &id, Action::Release).await,
        RequestCmd::Revoke { id, reason, conn } => act(&conn, &id, Action::Revoke { reason }).await,
        RequestCmd::Extend {
            id,
            by,
            reason,
            wait_timeout,
            conn,
        } => {
            let limit = airlock_server::config::parse_duration(&wait_timeout)
                .map_err(|e| anyhow::anyhow!("--wait-timeout: {e}"))?;
            let client = client(&conn)?;
            let action = Action::Extend {
                by: DurationInput::Text(by),
                reason,
            };
            let request = client.act(&id, &action).await?;
            let request = wait_for_extension(&client, request, limit).await?;
            output::extension_outcome(&request, conn.json)
        }
        RequestCmd::List {
            state,
            mine,
            entitlement,
            page,
            conn,
        } => {
            let query = RequestQuery {
                state,
                mine: mine.then_some(true),
                entitlement,
                ..RequestQuery::default()
            };
            list_pages(&conn, &page, query).await
        }
        RequestCmd::Credential { id, conn } => {
            let c = client(&conn)?.collect_credential(&id).await?;
            output::json_or(&c, conn.json, |c| {
                say!("login:    {}", c.login);
                say!("password: {}", c.secret);
                say!("expires:  {}", c.expires_at.as_deref().unwrap_or("-"));
                say!("(shown once: Airlock does not keep it)");
            })
        }
        RequestCmd::Elevation { id, audience, conn } => {
            let claim = client(&conn)?.elevation(&id, audience).await?;
            output::json_or(&claim, conn.json, |c| println!("{}", c.token))
        }
        RequestCmd::Show { id, conn } => {
            let client = client(&conn)?;
            let request = client.get_request(&id).await?;
            output::request(&request, conn.json)?;
            if !conn.json {
                // Who acted with which API token, and what was done during
                // the grant, are in the request's audit events, which
                // whoever sees the request may read.
                let history = client.explain(&id).await?.history;
                output::acted_with_tokens(&history);
                output::activity(&history);
                crate::ssh_sessions::sessions(&client.ssh_sessions(&id).await?);
            }
            Ok(())
        }
        RequestCmd::Grants { break_glass, conn } => {
            output::grants(&client(&conn)?.grants_where(break_glass).await?, conn.json)
        }
        RequestCmd::Reviews { all, conn } => {
            output::reviews(&client(&conn)?.reviews(all).await?, conn.json)
        }
        RequestCmd::Review {
            id,
            acceptable,
            unacceptable: _,
            comment,
            conn,
        } => {
            act(
                &conn,
                &id,
                Action::Review {
                    acceptable,
                    comment,
                },
            )
            .await
        }
        RequestCmd::Entitlements { conn } => {
            output::entitlements(&client(&conn)?.entitlements().await?, conn.json)
        }
        RequestCmd::Whoami { conn } => {
            output::json_or(&client(&conn)?.me().await?, conn.json, |me| {
                say!(
                    "{}{} (groups: {}; roles: {}){}{}",
                    me.user,
                    if me.kind == "service" {
                        ", a service"
                    } else {
                        ""
                    },
                    me.groups.join(", "),
                    me.roles.join(", "),
                    me.token
                        .as_ref()
                        .map(|t| format!(
                            ", through API token {t} (scopes: {})",
                            me.scopes.clone().unwrap_or_default().join(", ")
                        ))
                        .unwrap_or_default(),
                    me.sponsor
                        .as_ref()
                        .map(|s| format!(
                            "; an external principal sponsored by {s}, the account ends {}",
                            me.account_expires.as_deref().unwrap_or("?")
                        ))
                        .unwrap_or_default()
                );
            })
        }
    }
}

/// Prints one page of requests (and, on stderr, how to get the next) or,
/// with `--all`, every page.
async fn list_pages(conn: &Conn, page: &Page, query: RequestQuery) -> anyhow::Result<()> {
    let query = RequestQuery {
        limit: page.limit,
        cursor: page.cursor.clone(),
        ..query
    };
    let client = client(conn)?;
    if page.all {
        return output::requests(&client.all_requests(&query).await?, conn.json);
    }
    let found = client.list_requests_page(&query).await?;
    output::requests(&found.requests, conn.json)?;
    if let Some(next) = found.next_cursor {
        say_err!("more: add --cursor {next} for the next page, or --all for every page");
    }
    Ok(())
}

async fn act(conn: &Conn, id: &str, action: Action) -> anyhow::Result<()> {
    output::request(&client(conn)?.act(id, &action).await?, conn.json)
}

/// Polls while an extension granted at once is carried out in the target,
/// so the outcome printed is the new expiry (or why there is none).
async fn wait_for_extension(
    client: &Client,
    mut request: RequestView,
    limit: Duration,
) -> anyhow::Result<RequestView> {
    let deadline = tokio::time::Instant::now() + limit;
    while request
        .extension
        .as_ref()
        .is_some_and(|e| e.state == "provisioning")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        request = client.get_request(&request.id).await?;
    }
    Ok(request)
}

/// Polls until the request is decided and, if it starts now, provisioned.
async fn wait_for_decision(
    client: &Client,
    mut request: RequestView,
    limit: Duration,
) -> anyhow::Result<RequestView> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let settled = match request.state.as_str() {
            "pending" => false,
            "approved" => request.scheduled,
            _ => true,
        };
        if settled {
            return Ok(request);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "request `{}` is still {} after waiting {}; it stays open (see `airlock show {}`, or `airlock cancel {}` to withdraw it)",
                request.id,
                request.state,
                airlock_core::time::human_duration(limit),
                request.id,
                request.id
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        request = client.get_request(&request.id).await?;
    }
}
