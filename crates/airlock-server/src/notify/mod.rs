//! Sending notifications. The core decides which a change causes
//! (`airlock_core::notify`) and the store writes them to its outbox with
//! the change; here are the [`Channel`] port and its adapters (SMTP, a
//! Slack-compatible incoming webhook, a signed JSON webhook), the
//! [`AddressBook`] port that says who the people are and where they are
//! reached, what a message says, and the [`Dispatcher`] that drains the
//! outbox.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use airlock_core::access::{self, RequestAction};
use airlock_core::catalog::{Catalog, User};
use airlock_core::notify::{Audience, Topic};
use airlock_core::request::AccessRequest;
use airlock_core::{GroupName, UserId};

use crate::store::directory::ListQuery;
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
    /// Everyone in any of `groups`, each with every group they are in.
    async fn members(&self, groups: &BTreeSet<GroupName>) -> Vec<User>;
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

    /// The config's users in `groups`, and the active people the directory
    /// provisioned into them; a config user's provisioned groups count too,
    /// as they do at sign-in. A directory that cannot be read leaves its
    /// people out (logged): the config's still hear.
    async fn members(&self, groups: &BTreeSet<GroupName>) -> Vec<User> {
        let mut people: BTreeMap<UserId, User> = self
            .catalog
            .users
            .values()
            .filter(|u| u.in_any(groups))
            .map(|u| (u.id.clone(), u.clone()))
            .collect();
        let Some(store) = &self.directory else {
            return people.into_values().collect();
        };
        match provisioned_members(store.as_ref(), groups).await {
            Ok(found) => {
                for (id, provisioned) in found {
                    people
                        .entry(id.clone())
                        .or_insert_with(|| {
                            self.catalog.users.get(&id).cloned().unwrap_or_else(|| {
                                User::person(id, BTreeSet::new(), BTreeSet::new())
                            })
                        })
                        .groups
                        .extend(provisioned);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the directory's group members; notifying the config's users only");
            }
        }
        people.into_values().collect()
    }
}

/// Active directory users who are members of any of `groups`, with all
/// their provisioned groups.
async fn provisioned_members(
    store: &dyn Store,
    groups: &BTreeSet<GroupName>,
) -> Result<Vec<(UserId, BTreeSet<GroupName>)>, crate::store::StoreError> {
    const PAGE: u64 = 500;
    let mut member_ids = BTreeSet::new();
    let mut start_index = 1;
    loop {
        let (total, page) = store
            .list_directory_groups(&ListQuery {
                filter: None,
                start_index,
                count: PAGE,
            })
            .await?;
        for group in &page {
            if group.name().is_ok_and(|n| groups.contains(&n)) {
                member_ids.extend(group.members.iter().cloned());
            }
        }
        start_index += PAGE;
        if page.is_empty() || start_index > total {
            break;
        }
    }
    let mut out = Vec::new();
    for member in member_ids {
        let Some(user) = store.directory_user(&member).await? else {
            continue;
        };
        if !user.active {
            continue;
        }
        let id = user.user_name.clone();
        let provisioned = store
            .directory_groups_of(&member)
            .await?
            .iter()
            .filter_map(|g| g.name().ok())
            .collect();
        out.push((id, provisioned));
    }
    Ok(out)
}

/// The people a notification about `request` is for; one about no
/// request (an access review) goes to the members of the groups its facts
/// name (`review_by`).
pub async fn recipients(
    audience: Audience,
    request: Option<&AccessRequest>,
    facts: &BTreeMap<String, String>,
    book: &dyn AddressBook,
) -> Vec<Recipient> {
    let users: Vec<UserId> = match (audience, request) {
        (Audience::Requester, Some(r)) => vec![r.requester.clone()],
        (Audience::Sponsor, Some(r)) => r.sponsor().into_iter().cloned().collect(),
        (Audience::Approvers, Some(r)) => book
            .members(&r.approver_groups())
            .await
            .into_iter()
            .filter(|u| r.awaits_approval_of(u))
            .map(|u| u.id)
            // An external requester's sponsor, while their seat waits.
            .chain(r.awaits_sponsor().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        (Audience::Reviewers, Some(r)) => match &r.review {
            Some(review) => book
                .members(&review.groups())
                .await
                .into_iter()
                .filter(|u| access::may_act(u, r, RequestAction::Review).is_ok())
                .map(|u| u.id)
                .collect(),
            None => Vec::new(),
        },
        (Audience::Reviewers, None) => {
            let groups: BTreeSet<GroupName> = facts
                .get("review_by")
                .map(|g| {
                    g.split(',')
                        .filter_map(|g| GroupName::parse(g).ok())
                        .collect()
                })
                .unwrap_or_default();
            book.members(&groups)
                .await
                .into_iter()
                .filter(|u| !u.is_service())
                .map(|u| u.id)
                .collect()
        }
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
        Topic::IdleWarning => format!(
            "{what} for {who} is unused and will be released at {} unless used",
            fact("release_at")
        ),
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
        Topic::ReviewRequested => format!(
            "review the break-glass use of {what} by {who} before {}",
            fact("review_due")
        ),
        Topic::ReviewEscalated => {
            format!("overdue: the break-glass use of {what} by {who} awaits your review")
        }
        Topic::ReviewOverdue => {
            format!("the break-glass use of {what} by {who} is still unreviewed")
        }
        Topic::UseUnacceptable => {
            format!("the break-glass use of {what} by {who} was judged unacceptable")
        }
        Topic::SponsoredGrant => format!(
            "{who}, whom you sponsor, holds {what} until {}",
            fact("expires_at")
        ),
        Topic::AccessReviewRequested => format!(
            "access review {}: {} items to confirm or remove before {}",
            fact("template"),
            fact("items"),
            fact("review_due")
        ),
        Topic::AccessReviewReminder => format!(
            "reminder: access review {} has {} unanswered items (due {})",
            fact("template"),
            fact("open_items"),
            fact("review_due")
        ),
        Topic::AccessReviewEscalated => format!(
            "escalated to you: access review {} has {} unanswered items",
            fact("template"),
            fact("open_items")
        ),
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
        Topic::SponsoredGrant => vec![
            format!("look:   airlock show {id}"),
            format!("revoke: airlock revoke {id} --reason \"...\""),
        ],
        Topic::IdleWarning => vec![
            "keep it: use it (a check, a login or a session counts as use)".to_owned(),
            format!("release now: airlock release {id}"),
        ],
        Topic::BreakGlass => vec![format!("look:   airlock show {id}")],
        Topic::ReviewRequested | Topic::ReviewEscalated | Topic::ReviewOverdue => vec![
            format!("look:   airlock show {id}"),
            format!("judge:  airlock review {id} --acceptable|--unacceptable --comment \"...\""),
        ],
        Topic::UseUnacceptable => vec![
            format!("look:   airlock show {id}"),
            "active: airlock grants --break-glass".to_owned(),
        ],
        Topic::AccessReviewRequested
        | Topic::AccessReviewReminder
        | Topic::AccessReviewEscalated => {
            let campaign = fact("campaign");
            vec![
                format!("look:    airlock access-review show {campaign}"),
                format!(
                    "decide:  airlock access-review decide {campaign} ITEM --confirm|--remove --comment \"...\""
                ),
            ]
        }
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
