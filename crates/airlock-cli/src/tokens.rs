//! `airlock token`: API tokens for scripts and service principals (create,
//! list, revoke), and, with no subcommand, a config token and its hash as
//! before.

use airlock_server::api::{CreateTokenBody, DurationInput, TokenView};
use airlock_server::config::{new_token, token_hash};
use clap::Subcommand;

use crate::args::{client, Conn};
use crate::output::{json_or, table};
use crate::terminal::say;

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token; its secret (`alk_…`) is printed this once.
    Create {
        /// A name for it, unique among your tokens that are not revoked.
        #[arg(long)]
        name: String,
        /// How long it lives, e.g. `30d`, `12h` (default 30d; at most the
        /// server's `token_max_lifetime`, 90d unless configured).
        #[arg(long)]
        expires: Option<String>,
        /// Comma-separated: read, request, approve, admin, tokens (default read).
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// A service principal you own, to create its token.
        #[arg(long = "for")]
        owner: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Your tokens and your services' (`--all`: everyone's, admins and auditors).
    List {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token (yours, your service's, or as an admin anyone's).
    Revoke {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(command: Option<TokenCmd>) -> anyhow::Result<()> {
    match command {
        None => {
            let token = new_token();
            say!("token:        {token}");
            say!("token_sha256: {}", token_hash(&token));
            Ok(())
        }
        Some(TokenCmd::Create {
            name,
            expires,
            scope,
            owner,
            conn,
        }) => {
            let body = CreateTokenBody {
                name,
                expires_in: expires.map(DurationInput::Text),
                scopes: (!scope.is_empty()).then_some(scope),
                owner,
            };
            let created = client(&conn)?.create_token(&body).await?;
            json_or(&created, conn.json, |c| {
                say!("{}", c.secret);
                say!(
                    "token {} ({}) for {}, scopes {}, expires {}; the secret above is shown only now",
                    c.token.id,
                    c.token.name,
                    c.token.owner,
                    c.token.scopes.join(","),
                    c.token.expires_at
                );
            })
        }
        Some(TokenCmd::List { all, conn }) => {
            let tokens = client(&conn)?.list_tokens(all).await?;
            json_or(&tokens, conn.json, |tokens| list(tokens))
        }
        Some(TokenCmd::Revoke { id, conn }) => {
            let revoked = client(&conn)?.revoke_token(&id).await?;
            json_or(&revoked, conn.json, |t| {
                say!("revoked {} ({}) of {}", t.id, t.name, t.owner);
            })
        }
    }
}

fn list(tokens: &[TokenView]) {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.owner.clone(),
                t.scopes.join(","),
                t.state.clone(),
                t.expires_at.clone(),
                t.last_used_at.clone().unwrap_or_else(|| "never".to_owned()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "OWNER",
            "SCOPES",
            "STATE",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    );
}
