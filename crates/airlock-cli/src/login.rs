//! `airlock login` / `airlock logout`, the cached sign-in every other
//! command falls back on when no `--token` is given, and the step-up a
//! request answered `insufficient_user_authentication` goes through. The
//! flows and the cache are `airlock_server::signin`'s; this prints and
//! prompts.

use airlock_server::api::{CreateRequest, RequestView};
use airlock_server::client::{Client, ClientError};
use airlock_server::engine::{Clock, SystemClock};
use airlock_server::signin::{self, Freshness, Provider, SignedIn};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use crate::args::{client, Conn};
use crate::terminal::{one_line, say, say_err};

/// Signing in with the server's identity provider.
#[derive(Subcommand)]
pub enum SessionCmd {
    /// Sign in with the server's identity provider (device code, or the
    /// browser) and cache the token for this server; other commands use it
    /// when no --token is given, and renew it when it expires.
    Login(LoginArgs),
    /// Forget the cached sign-in for this server (and revoke it at the
    /// identity provider).
    Logout(LogoutArgs),
}

pub async fn run(command: SessionCmd) -> anyhow::Result<()> {
    match command {
        SessionCmd::Login(args) => login(args).await,
        SessionCmd::Logout(args) => logout(args).await,
    }
}

/// How to sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Flow {
    /// The device flow where the provider offers it, else the browser.
    Auto,
    /// A code entered on another device (RFC 8628).
    Device,
    /// The browser, redirected back to this machine (PKCE).
    Browser,
}

#[derive(Args)]
pub struct LoginArgs {
    /// Server URL.
    #[arg(long, env = "AIRLOCK_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Ask the identity provider for a fresh login, with MFA no older than
    /// this many seconds (what a step-up challenge asks for).
    #[arg(long)]
    max_age: Option<u64>,
    #[arg(long, value_enum, default_value = "auto")]
    flow: Flow,
    /// Print the browser sign-in URL instead of opening a browser.
    #[arg(long)]
    no_open: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Server URL.
    #[arg(long, env = "AIRLOCK_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
}

fn cache_path(url: &str) -> anyhow::Result<std::path::PathBuf> {
    Ok(signin::cache_file(&signin::cache_dir()?, url))
}

/// `airlock login`: signs in and caches the token for this server.
async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let fresh = Freshness {
        max_age: args.max_age,
        acr_values: Vec::new(),
    };
    let session = sign_in(&args.url, fresh, args.flow, !args.no_open).await?;
    let me = Client::new(&args.url, &session.token)?.me().await?;
    say!(
        "signed in to {} as {} (groups: {})",
        args.url,
        one_line(&me.user),
        one_line(&me.groups.join(", "))
    );
    Ok(())
}

/// Runs a sign-in and caches its tokens.
async fn sign_in(
    url: &str,
    mut fresh: Freshness,
    flow: Flow,
    open: bool,
) -> anyhow::Result<SignedIn> {
    let info = match Client::new(url, "")?.oidc_info().await {
        Ok(info) => info,
        Err(ClientError::Api {
            status: 404,
            message,
            ..
        }) => bail!("{message}"),
        Err(e) => return Err(e.into()),
    };
    if fresh.acr_values.is_empty() && fresh.max_age.is_some() {
        fresh.acr_values = info.mfa_acr_values.clone();
    }
    let provider = Provider::discover(info).await?;
    let device = match flow {
        Flow::Auto => provider.has_device_flow(),
        Flow::Device => true,
        Flow::Browser => false,
    };
    let session = if device {
        let code = provider.start_device(&fresh).await?;
        match &code.verification_uri_complete {
            Some(complete) => say_err!(
                "To sign in, open {} (or {} and enter the code {})",
                one_line(complete),
                one_line(&code.verification_uri),
                one_line(&code.user_code)
            ),
            None => say_err!(
                "To sign in, open {} and enter the code {}",
                one_line(&code.verification_uri),
                one_line(&code.user_code)
            ),
        }
        say_err!(
            "waiting for you to finish signing in (the code is good for {})...",
            airlock_core::time::human_duration(std::time::Duration::from_secs(code.expires_in))
        );
        provider.finish_device(&code).await?
    } else {
        let loopback = provider.start_browser(&fresh).await?;
        let opened = open && open_browser(loopback.url());
        if opened {
            say_err!("Opened your browser to sign in; if nothing shows, open:");
        } else {
            say_err!("To sign in, open this URL in your browser:");
        }
        say_err!("  {}", one_line(loopback.url()));
        provider.finish_browser(loopback).await?
    };
    signin::store(&cache_path(url)?, url, &session)?;
    Ok(session)
}

/// Asks the desktop to open `url`; `false` when no opener is there.
fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// `airlock logout`: revokes the refresh token at the provider (if it has
/// a revocation endpoint) and forgets the cached sign-in.
async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let path = cache_path(&args.url)?;
    // A cache that cannot be read (exposed, damaged) is still removed.
    let session = signin::load(&path, &args.url);
    if let Ok(Some(session)) = &session {
        match session.revoke().await {
            Ok(true) => say!("revoked the refresh token at {}", one_line(&session.issuer)),
            Ok(false) => {}
            Err(e) => say_err!("warning: could not revoke the refresh token: {e}"),
        }
    }
    if signin::forget(&path)? {
        say!("signed out of {}", args.url);
    } else {
        say!("not signed in to {}", args.url);
    }
    Ok(())
}

/// The cached sign-in's token for `url`, refreshed (and cached again) when
/// it has expired or is about to; `None` when not signed in.
pub fn cached_token(url: &str) -> anyhow::Result<Option<String>> {
    let path = cache_path(url)?;
    let Some(session) = signin::load(&path, url)? else {
        return Ok(None);
    };
    if !session.stale(SystemClock.now()) {
        return Ok(Some(session.token));
    }
    // Called from synchronous code on the multi-threaded runtime.
    let refreshed = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(session.refresh())
    })
    .with_context(|| {
        format!("your sign-in to {url} expired and could not be renewed: run `airlock login`")
    })?;
    signin::store(&path, url, &refreshed)?;
    Ok(Some(refreshed.token))
}

/// Creates a request; on a step-up challenge (RFC 9470) signs in again
/// with MFA as fresh as asked and retries once. Returns the client the
/// request was made with, to follow it up.
pub async fn create_request(
    conn: &Conn,
    body: &CreateRequest,
) -> anyhow::Result<(Client, RequestView)> {
    let client = client(conn)?;
    match client.create_request(body).await {
        Ok(request) => Ok((client, request)),
        Err(e) => {
            let renewed = step_up(&conn.url, conn.token.is_some(), e).await?;
            let request = renewed.create_request(body).await?;
            Ok((renewed, request))
        }
    }
}

/// On a step-up challenge for a signed-in user (no `--token`), signs in
/// again with MFA as fresh as asked and returns a client with the new
/// token, to retry with; any other error is returned as it is.
async fn step_up(url: &str, explicit_token: bool, error: ClientError) -> anyhow::Result<Client> {
    let ClientError::StepUp {
        message,
        max_age,
        acr_values,
    } = &error
    else {
        return Err(error.into());
    };
    if explicit_token {
        bail!("{message} (the token given with --token or AIRLOCK_TOKEN cannot be renewed here)");
    }
    say_err!("{}", one_line(message));
    say_err!("signing in again to prove a recent second factor...");
    let fresh = Freshness {
        max_age: *max_age,
        acr_values: acr_values.clone(),
    };
    let session = sign_in(url, fresh, Flow::Auto, true).await?;
    Ok(Client::new(url, &session.token)?)
}
