//! The `[tickets]` table: the secret the ticket system signs its webhook
//! with (`POST /v1/tickets/{ref}/closed`), and how far a delivery's
//! timestamp may be from the server's clock. Unset, the webhook refuses
//! every delivery.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::notifications::value_or_env;
use super::source::Source;
use super::{ConfigError, Secret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTickets {
    secret: Option<String>,
    secret_env: Option<String>,
    /// Also taken while the ticket system moves to a new secret.
    previous_secret: Option<String>,
    previous_secret_env: Option<String>,
    window: Option<Spanned<String>>,
}

/// What the ticket webhook needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSettings {
    /// The secrets a delivery may be signed with: the current one, and
    /// during a rotation the previous one.
    pub secrets: Vec<Secret>,
    /// How far a delivery's timestamp may be from the server's clock,
    /// either way; a delivery is remembered that long, so a replay of it
    /// is refused.
    pub window: Duration,
}

/// Each secret at least this long (like the webhook connector's).
const SHORTEST_SECRET: usize = 16;
const WINDOWS: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(3600));

pub(super) fn tickets_table(
    src: &Source<'_>,
    raw: &Spanned<RawTickets>,
) -> Result<TicketSettings, ConfigError> {
    let span = raw.span();
    let fail = |m: String| src.error(span.clone(), format!("tickets.{m}"));
    let t = raw.get_ref();
    let current = value_or_env(
        "secret",
        t.secret.as_ref(),
        "secret_env",
        t.secret_env.as_ref(),
    )
    .map_err(&fail)?;
    let mut secrets = vec![("secret", current)];
    if t.previous_secret.is_some() || t.previous_secret_env.is_some() {
        let previous = value_or_env(
            "previous_secret",
            t.previous_secret.as_ref(),
            "previous_secret_env",
            t.previous_secret_env.as_ref(),
        )
        .map_err(&fail)?;
        secrets.push(("previous_secret", previous));
    }
    for (field, secret) in &secrets {
        if secret.len() < SHORTEST_SECRET {
            return Err(fail(format!(
                "{field}: must be at least {SHORTEST_SECRET} characters"
            )));
        }
    }
    let window = match &t.window {
        Some(w) => src.duration_between("tickets.window", w, WINDOWS)?,
        None => airlock_core::ticket::DEFAULT_WINDOW,
    };
    Ok(TicketSettings {
        secrets: secrets
            .into_iter()
            .map(|(_, s)| Secret::new(s.into_bytes()))
            .collect(),
        window,
    })
}
