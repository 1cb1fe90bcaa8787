//! The ticket system's webhook: a ticket closed there ends the access asked
//! for under it (`airlock_core::ticket`). A delivery authenticates by its
//! signature, made like every signature Airlock makes itself
//! (`airlock_connectors::webhook`: HMAC-SHA256 over `"<timestamp>.<body>"`
//! with the `[tickets]` secret, compared in constant time); its timestamp
//! must be within the window of the engine's clock; and it is taken once:
//! the store remembers each delivery (named by its signature) until its
//! timestamp alone would refuse it, on every replica. A delivery refused
//! for any of these changes nothing and records nothing.
//!
//! What a taken delivery does is the state machine's
//! (`Command::TicketClosed`, one request at a time, each audited with the
//! ticket as the cause): closing a ticket again finds nothing left to end.
//! If ending them fails part way, the delivery is forgotten again, so the
//! ticket system's retry of it is taken and ends the rest.

use std::sync::Arc;

use airlock_connectors::webhook::{verify_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use airlock_core::request::{Command, State};
use airlock_core::ticket::{self, Stale};
use airlock_core::{RequestId, Timestamp};
use tracing::{info, warn};

use super::{Engine, EngineError};
use crate::store::RequestFilter;

/// A delivery as it arrived: its signature headers (absent ones `None`)
/// and its body, all unchecked.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// A delivery whose signature and timestamp checked out; only
/// [`Engine::verify_delivery`] makes one.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signature, in one spelling: what names the delivery.
    key: String,
    forget_after: Timestamp,
}

/// Why a delivery was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryRefused {
    #[error("the ticket webhook is off: the config has no [tickets] table")]
    Off,
    #[error(
        "the `{0}` header is missing: deliveries are signed like the webhook connector's calls"
    )]
    Missing(&'static str),
    #[error("`{TIMESTAMP_HEADER}` must be the Unix time in seconds the delivery was signed at, not `{0}`")]
    BadTimestamp(String),
    #[error("`{SIGNATURE_HEADER}` is not this delivery's signature under the ticket secret: expected `sha256=` and the hex HMAC-SHA256 of \"<{TIMESTAMP_HEADER}>.<body>\"")]
    BadSignature,
    #[error("`{TIMESTAMP_HEADER}`: {0}")]
    Stale(Stale),
    #[error("this delivery was taken already: each is taken once (sign the retry anew, with its own timestamp)")]
    Replayed,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl DeliveryRefused {
    /// The header at fault, if one is.
    pub fn header(&self) -> Option<&'static str> {
        match self {
            DeliveryRefused::Missing(h) => Some(h),
            DeliveryRefused::BadTimestamp(_) | DeliveryRefused::Stale(_) => Some(TIMESTAMP_HEADER),
            DeliveryRefused::BadSignature => Some(SIGNATURE_HEADER),
            DeliveryRefused::Off | DeliveryRefused::Replayed | DeliveryRefused::Engine(_) => None,
        }
    }
}

/// What closing a ticket ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketClosed {
    pub ticket: String,
    /// Grants revoked (their removal from the targets follows).
    pub revoked: Vec<RequestId>,
    /// Requests cancelled before they started.
    pub cancelled: Vec<RequestId>,
}

impl Engine {
    /// Checks a delivery's signature (against each `[tickets]` secret) and
    /// then its timestamp (against the engine's clock).
    pub fn verify_delivery(&self, delivery: &Delivery<'_>) -> Result<Verified, DeliveryRefused> {
        let settings = self.tickets.as_ref().ok_or(DeliveryRefused::Off)?;
        let timestamp = delivery
            .timestamp
            .ok_or(DeliveryRefused::Missing(TIMESTAMP_HEADER))?;
        let signature = delivery
            .signature
            .ok_or(DeliveryRefused::Missing(SIGNATURE_HEADER))?;
        let signed = settings
            .secrets
            .iter()
            .any(|s| verify_signature(s.expose(), timestamp, delivery.body, signature));
        if !signed {
            return Err(DeliveryRefused::BadSignature);
        }
        let seconds: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| DeliveryRefused::BadTimestamp(timestamp.to_owned()))?;
        let signed_at = Timestamp::from_unix_millis(seconds.saturating_mul(1000));
        let forget_after = ticket::check_signed_at(signed_at, self.clock.now(), settings.window)
            .map_err(DeliveryRefused::Stale)?;
        Ok(Verified {
            key: signature.trim().to_ascii_lowercase(),
            forget_after,
        })
    }

    /// Ends the access asked for under ticket `path_ref`, which the signed
    /// body names too (`body_ticket`, with the ticket system's id of the
    /// delivery if it gives one): every grant carrying it is revoked and
    /// every request carrying it that has not started is cancelled. A
    /// replayed delivery is refused; a ticket closed before ends nothing
    /// more.
    pub async fn close_ticket(
        self: &Arc<Self>,
        delivery: Verified,
        path_ref: &str,
        body_ticket: &str,
        delivery_id: Option<&str>,
    ) -> Result<TicketClosed, DeliveryRefused> {
        let ticket = ticket::parse_ref("ref", path_ref).map_err(EngineError::from)?;
        let named = ticket::parse_ref("ticket", body_ticket).map_err(EngineError::from)?;
        // Named in the record by the ticket system's id, else by the start
        // of its signature.
        let recorded_as = match delivery_id {
            Some(id) => ticket::parse_ref("delivery", id).map_err(EngineError::from)?,
            None => delivery
                .key
                .trim_start_matches("sha256=")
                .chars()
                .take(16)
                .collect(),
        };
        if named != ticket {
            return Err(
                EngineError::from(airlock_core::request::Rejection::Invalid {
                    field: "ticket",
                    message: format!(
                        "the signed body closes ticket `{named}`, the path names `{ticket}`"
                    ),
                })
                .into(),
            );
        }
        let now = self.clock.now();
        let taken = self
            .store
            .take_delivery(&delivery.key, now, delivery.forget_after)
            .await
            .map_err(EngineError::from)?;
        if !taken {
            return Err(DeliveryRefused::Replayed);
        }
        match self.end_ticket(&ticket, &recorded_as).await {
            Ok(closed) => Ok(closed),
            Err(e) => {
                // So that the ticket system's retry of this delivery is
                // taken and ends the rest.
                if let Err(forget) = self.store.forget_delivery(&delivery.key).await {
                    warn!(error = %forget, "could not forget a delivery whose work failed; its retry is refused as a replay");
                }
                Err(e.into())
            }
        }
    }

    async fn end_ticket(
        self: &Arc<Self>,
        ticket: &str,
        delivery: &str,
    ) -> Result<TicketClosed, EngineError> {
        let open = self
            .store
            .list_requests(&RequestFilter {
                states: vec![State::Pending, State::Approved, State::Active],
                ticket: Some(ticket.to_owned()),
                limit: u32::MAX,
                ..RequestFilter::default()
            })
            .await?;
        let mut closed = TicketClosed {
            ticket: ticket.to_owned(),
            ..TicketClosed::default()
        };
        for request in open {
            let command = Command::TicketClosed {
                ticket: ticket.to_owned(),
                delivery: delivery.to_owned(),
            };
            // A bundle's parts end together: each one this ended is named.
            let applied = self.apply(&request.id, command).await?;
            for t in std::iter::once(&applied.main).chain(&applied.others) {
                if !t.events.is_empty() {
                    match t.request.state {
                        State::Revoked => closed.revoked.push(t.request.id.clone()),
                        State::Cancelled => closed.cancelled.push(t.request.id.clone()),
                        _ => {}
                    }
                }
            }
            self.after_commit_all(&applied);
        }
        info!(
            ticket,
            revoked = closed.revoked.len(),
            cancelled = closed.cancelled.len(),
            "ticket closed"
        );
        Ok(closed)
    }
}
