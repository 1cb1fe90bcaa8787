//! Sending notifications. The core decides which a change causes
//! (`airlock_core::notify`) and the store writes them to its outbox with
//! the change; here are the [`Channel`] port and its adapters (SMTP, a
//! Slack-compatible incoming webhook, a signed JSON webhook), the
//! [`AddressBook`] port that says who the people are and where they are
//! reached, what a message says, and the [`Dispatcher`] that drains the
//! outbox.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use airlock_core::catalog::Catalog;
use airlock_core::notify::{Audience, Topic};
use airlock_core::request::AccessRequest;
use airlock_core::UserId;

use crate::store::Store;

mod channels;
mod dispatch;

pub use channels::{build_channels, HttpChannel, SmtpChannel};
pub use dispatch::{Dispatcher, DispatcherParts};

/// One message for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stable across every resend (`<audit seq>-<topic>:<channel>`).
    pub idempotency_key: String,
    pub topic: Topic,
    pub audience: Audience,
    /// One line.
    pub subject: String,
    /// Plain text: the facts, one per line, and what to do next.
    pub text: String,
    pub facts: BTreeMap<String, String>,
    /// The people it is for (empty for the security route, whose channels
    /// have their own addresses).
    pub recipients: Vec<Recipient>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub user: UserId,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Worth trying again later (the service is down, a timeout, a 5xx).
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help (refused as malformed, nobody to send to).
    #[error("{0}")]
    Permanent(String),
}

/// Where messages go out. One attempt per call: the dispatcher owns retries.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    async fn send(&self, message: &Message) -> Result<(), ChannelError>;
}

/// Who the people are and where they are reached: the config's users
/// (`[users.NAME] email`), then the users a directory provisioned (SCIM).
#[async_trait::async_trait]
pub trait AddressBook: Send + Sync {
    async fn email(&self, user: &UserId) -> Option<String>;
    /// Everyone whose approval `request` waits for now.
    async fn approvers(&self, request: &AccessRequest) -> Vec<UserId>;
}

/// The config's users and their addresses; a user the config gives no
/// address is looked up in the directory SCIM provisions (its primary
/// email, while the user is active).
pub struct ConfigAddressBook {
    catalog: Arc<Catalog>,
    emails: BTreeMap<UserId, String>,
    directory: Option<Arc<dyn Store>>,
}

impl ConfigAddressBook {
    pub fn new(
        catalog: Arc<Catalog>,
        emails: BTreeMap<UserId, String>,
        directory: Option<Arc<dyn Store>>,
    ) -> Self {
        ConfigAddressBook {
            catalog,
            emails,
            directory,
        }
    }
}

#[async_trait::async_trait]
impl AddressBook for ConfigAddressBook {
    async fn email(&self, user: &UserId) -> Option<String> {
        if let Some(email) = self.emails.get(user) {
            return Some(email.clone());
        }
        let found = self
            .directory
            .as_ref()?
            .directory_user_named(user.as_str())
            .await
            .ok()
            .flatten()
            .filter(|u| u.active)?;
        let primary = found.emails.iter().find(|e| e.primary);
        primary
            .or_else(|| found.emails.first())
            .map(|e| e.value.clone())
    }

    async fn approvers(&self, request: &AccessRequest) -> Vec<UserId> {
        self.catalog
            .users
            .values()
            .filter(|u| request.awaits_approval_of(u))
            .map(|u| u.id.clone())
            .collect()
    }
}

/// The people a notification about `request` is for.
pub async fn recipients(
    audience: Audience,
    request: Option<&AccessRequest>,
    book: &dyn AddressBook,
) -> Vec<Recipient> {
    let users = match (audience, request) {
        (Audience::Requester, Some(r)) => vec![r.requester.clone()],
        (Audience::Approvers, Some(r)) => book.approvers(r).await,
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        out.push(Recipient {
            email: book.email(&user).await,
            user,
        });
    }
    out
}

/// The subject line and text of a message about `topic` with `facts`.
pub fn render(topic: Topic, facts: &BTreeMap<String, String>) -> (String, String) {
    let fact = |k: &str| facts.get(k).map_or("?", String::as_str);
    let (who, what, id) = (fact("requester"), fact("entitlement"), fact("request"));
    let subject = match topic {
        Topic::AwaitingApproval => format!(
            "{who} asks for {what} for {} and waits for your approval",
            fact("duration")
        ),
        Topic::ApprovalReminder => format!("reminder: {who} still waits for approval of {what}"),
        Topic::Escalated => format!("escalated to you: {who} waits for approval of {what}"),
        Topic::Approved => format!("{what} for {who} is approved"),
        Topic::Denied => format!("{what} for {who} is denied"),
        Topic::Provisioned => format!("{what} for {who} is active until {}", fact("expires_at")),
        Topic::ExpiresSoon => format!("{what} for {who} ends at {}", fact("expires_at")),
        Topic::Ended => format!("{what} for {who} has ended ({})", fact("state")),
        Topic::ExtensionAwaitingApproval => format!(
            "{who} asks to extend {what} by {} and waits for your approval",
            fact("extension")
        ),
        Topic::Extended => format!("{what} for {who} is extended until {}", fact("expires_at")),
        Topic::ExtensionDenied => format!("extending {what} for {who} is denied"),
        Topic::ExtensionFailed => format!(
            "extending {what} for {who} failed; it still ends at {}",
            fact("expires_at")
        ),
        Topic::BreakGlass => format!("BREAK-GLASS: {who} asked for {what}"),
        Topic::RevocationFailed => format!("removing {what} from {who} failed"),
        Topic::RevocationOverdue => format!("removing {what} from {who} is overdue"),
    };
    let subject = format!("[airlock] {subject}");
    let mut text = String::new();
    for (key, value) in facts {
        let _ = writeln!(text, "{key}: {value}");
    }
    let next = match topic {
        Topic::AwaitingApproval
        | Topic::ApprovalReminder
        | Topic::Escalated
        | Topic::ExtensionAwaitingApproval => vec![
            format!("approve: airlock approve {id}"),
            format!("deny:    airlock deny {id} --reason \"...\""),
        ],
        Topic::ExpiresSoon | Topic::Provisioned | Topic::Extended => {
            vec![format!("release early: airlock release {id}")]
        }
        Topic::BreakGlass => vec![format!("look:   airlock show {id}")],
        Topic::RevocationFailed | Topic::RevocationOverdue => {
            vec![
                format!("look:   airlock show {id}"),
                "check:  airlock grants".to_owned(),
            ]
        }
        _ => vec![format!("details: airlock show {id}")],
    };
    text.push('\n');
    for line in next {
        text.push_str(&line);
        text.push('\n');
    }
    (subject, text)
}
