//! The channel adapters: email over SMTP (lettre), and HTTP posts to a
//! Slack-compatible incoming webhook or a generic receiver that checks the
//! signature the webhook connector also uses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use airlock_connectors::webhook::{error_chain, signature_headers, IDEMPOTENCY_KEY_HEADER};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::json;

use super::{Channel, ChannelError, Message};
use crate::config::{ChannelSettings, SmtpSettings, SmtpTls};

/// Builds every configured channel.
pub fn build_channels(
    settings: &BTreeMap<String, ChannelSettings>,
) -> Result<HashMap<String, Arc<dyn Channel>>, String> {
    let mut out: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    for (name, channel) in settings {
        let built: Arc<dyn Channel> = match channel {
            ChannelSettings::Smtp(s) => Arc::new(
                SmtpChannel::new(s).map_err(|e| format!("notification channel `{name}`: {e}"))?,
            ),
            ChannelSettings::Slack { url, timeout } => Arc::new(
                HttpChannel::new(
                    &String::from_utf8_lossy(url.expose()),
                    HttpKind::Slack,
                    *timeout,
                )
                .map_err(|e| format!("notification channel `{name}`: {e}"))?,
            ),
            ChannelSettings::Webhook {
                url,
                secret,
                timeout,
            } => Arc::new(
                HttpChannel::new(url, HttpKind::Signed(secret.expose().to_vec()), *timeout)
                    .map_err(|e| format!("notification channel `{name}`: {e}"))?,
            ),
        };
        out.insert(name.clone(), built);
    }
    Ok(out)
}

/// Mails each message to the addresses of the people it is for and the
/// channel's own `to` list. The Message-ID is made from the idempotency key,
/// so a message sent again after a crash carries the same one.
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl SmtpChannel {
    pub fn new(s: &SmtpSettings) -> Result<Self, String> {
        let tls = match s.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls | SmtpTls::Tls => {
                let params = TlsParameters::new(s.host.clone())
                    .map_err(|e| format!("tls for `{}`: {e}", s.host))?;
                if s.tls == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
            .port(s.port)
            .tls(tls)
            .timeout(Some(s.timeout));
        if let (Some(user), Some(password)) = (&s.username, &s.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                String::from_utf8_lossy(password.expose()).into_owned(),
            ));
        }
        let mailbox = |raw: &str| {
            raw.parse::<Mailbox>()
                .map_err(|e| format!("`{raw}` is not an email address: {e}"))
        };
        Ok(SmtpChannel {
            transport: builder.build(),
            from: mailbox(&s.from)?,
            to: s.to.iter().map(|a| mailbox(a)).collect::<Result<_, _>>()?,
        })
    }
}

#[async_trait::async_trait]
impl Channel for SmtpChannel {
    async fn send(&self, message: &Message) -> Result<(), ChannelError> {
        let mut to: Vec<Mailbox> = message
            .recipients
            .iter()
            .filter_map(|r| r.email.as_deref()?.parse().ok())
            .collect();
        to.extend(self.to.iter().cloned());
        if to.is_empty() {
            let who: Vec<&str> = message.recipients.iter().map(|r| r.user.as_str()).collect();
            return Err(ChannelError::Permanent(if who.is_empty() {
                "nobody to mail: the channel has no `to` and the message is for nobody".to_owned()
            } else {
                format!("nobody to mail: no email address for {}", who.join(", "))
            }));
        }
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(message.subject.clone())
            .message_id(Some(message_id(&message.idempotency_key)))
            .header(ContentType::TEXT_PLAIN);
        for mailbox in to {
            builder = builder.to(mailbox);
        }
        let email = builder
            .body(message.text.clone())
            .map_err(|e| ChannelError::Permanent(format!("cannot build the email: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(ChannelError::Permanent(format!(
                "the mail server refused the message: {}",
                error_chain(&e)
            ))),
            Err(e) => Err(ChannelError::Retryable(format!(
                "sending mail failed: {}",
                error_chain(&e)
            ))),
        }
    }
}

/// `<key@airlock>` with the key's `:` (not allowed there) as `.`.
fn message_id(key: &str) -> String {
    format!("<{}@airlock>", key.replace(':', "."))
}

/// What an HTTP channel posts.
#[derive(Clone)]
pub enum HttpKind {
    /// Slack's incoming-webhook document: `text` and `blocks`.
    Slack,
    /// Airlock's own JSON document, signed with this secret.
    Signed(Vec<u8>),
}

/// Posts each message to one URL; the idempotency key travels in the
/// `idempotency-key` header (and, for signed webhooks, in the body too).
pub struct HttpChannel {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Scheme, host and port: what errors name (a webhook URL's path often
    /// is its secret).
    origin: String,
    kind: HttpKind,
}

impl HttpChannel {
    pub fn new(url: &str, kind: HttpKind, timeout: Duration) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("url is not a valid url: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the http client: {}", error_chain(&e)))?;
        Ok(HttpChannel {
            client,
            origin: url.origin().ascii_serialization(),
            url,
            kind,
        })
    }
}

/// Slack's blocks: a header, the facts as plain text fields (never mrkdwn,
/// so text people typed cannot mention or link), and what to do next.
fn slack_body(message: &Message) -> serde_json::Value {
    let plain = |text: String| json!({"type": "plain_text", "text": text, "emoji": false});
    let fields: Vec<serde_json::Value> = message
        .facts
        .iter()
        .take(10) // Slack shows at most ten fields per section.
        .map(|(k, v)| plain(format!("{k}: {v}")))
        .collect();
    let next: String = message
        .text
        .rsplit("\n\n")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    json!({
        "text": message.subject,
        "blocks": [
            {"type": "header", "text": plain(message.subject.chars().take(150).collect())},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [plain(next)]},
        ],
    })
}

fn signed_body(message: &Message) -> serde_json::Value {
    json!({
        "idempotency_key": message.idempotency_key,
        "topic": message.topic.as_str(),
        "audience": message.audience.as_str(),
        "subject": message.subject,
        "text": message.text,
        "facts": message.facts,
        "recipients": message.recipients.iter().map(|r| json!({
            "user": r.user.as_str(),
            "email": r.email,
        })).collect::<Vec<_>>(),
    })
}

#[async_trait::async_trait]
impl Channel for HttpChannel {
    async fn send(&self, message: &Message) -> Result<(), ChannelError> {
        let origin = &self.origin;
        let body = match &self.kind {
            HttpKind::Slack => slack_body(message),
            HttpKind::Signed(_) => signed_body(message),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::Permanent(format!("cannot encode the message: {e}")))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY_HEADER, &message.idempotency_key);
        if let HttpKind::Signed(secret) = &self.kind {
            for (name, value) in signature_headers(secret, &body) {
                request = request.header(name, value);
            }
        }
        let response = request.body(body).send().await.map_err(|e| {
            ChannelError::Retryable(format!(
                "`{origin}` request failed: {}",
                error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let message = format!("`{origin}` answered {status}: {}", text.trim());
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            Err(ChannelError::Retryable(message))
        } else {
            Err(ChannelError::Permanent(message))
        }
    }
}
