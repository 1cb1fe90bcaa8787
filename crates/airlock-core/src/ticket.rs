//! Access tied to its ticket: when the ticket system says a ticket is
//! closed (a signed webhook), the access asked for under it ends — every
//! grant carrying it is revoked and every request carrying it that has not
//! started is cancelled ([`crate::request::Command::TicketClosed`]).
//!
//! The webhook is signed like everything Airlock itself posts (HMAC-SHA256
//! over `"<timestamp>.<body>"`), so what this module decides is the rest of
//! a delivery's trust: how far its timestamp may be from the server's clock
//! ([`check_signed_at`]), for how long it must be remembered so that a
//! replay of it is refused, and which requests a ticket reference names
//! ([`carries`]).

use std::time::Duration;

use crate::request::{user_text, AccessRequest, Rejection, MAX_TICKET_LEN};
use crate::text::TextKind;
use crate::time::{human_duration, Timestamp};

/// How far a delivery's timestamp may be from the server's clock, either
/// way, unless the config says otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Why a delivery's timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error(
        "the delivery was signed {} ago; deliveries are taken only within {} of the server's clock",
        human_duration(*age),
        human_duration(*window)
    )]
    TooOld { age: Duration, window: Duration },
    #[error(
        "the delivery was signed {} ahead of the server's clock; deliveries are taken only within {} of it",
        human_duration(*ahead),
        human_duration(*window)
    )]
    Ahead { ahead: Duration, window: Duration },
}

/// Whether a delivery signed at `signed_at` is taken at `now`: within
/// `window` of it either way. If so, until when it must be remembered to
/// refuse a replay of it: after that its timestamp refuses it anyway.
pub fn check_signed_at(
    signed_at: Timestamp,
    now: Timestamp,
    window: Duration,
) -> Result<Timestamp, Stale> {
    let forget_after = signed_at.plus(window);
    if now >= forget_after {
        return Err(Stale::TooOld {
            age: signed_at.until(now),
            window,
        });
    }
    if signed_at >= now.plus(window) {
        return Err(Stale::Ahead {
            ahead: now.until(signed_at),
            window,
        });
    }
    Ok(forget_after)
}

/// A ticket reference (or a delivery's id) as the ticket system names
/// it, checked like the ticket a requester gives: one line of text, at
/// most [`MAX_TICKET_LEN`] characters, not blank; trimmed.
pub fn parse_ref(field: &'static str, raw: &str) -> Result<String, Rejection> {
    let name = user_text(field, raw, TextKind::Line, MAX_TICKET_LEN)?;
    if name.is_empty() {
        return Err(Rejection::Invalid {
            field,
            message: "must not be blank".to_owned(),
        });
    }
    Ok(name)
}

/// Whether `request` was asked for under `ticket`: the same reference,
/// exactly (references are identifiers: `INC-1` is not `inc-1`). The
/// store's lookup of a ticket's requests mirrors this (`ticket = $1`).
pub fn carries(request: &AccessRequest, ticket: &str) -> bool {
    request.ticket.as_deref() == Some(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
    const W: Duration = DEFAULT_WINDOW;

    #[test]
    fn a_delivery_is_taken_within_its_window_either_way() {
        let s = Duration::from_secs;
        assert_eq!(check_signed_at(NOW, NOW, W), Ok(NOW.plus(W)));
        assert_eq!(
            check_signed_at(NOW.minus(s(299)), NOW, W),
            Ok(NOW.plus(s(1)))
        );
        assert_eq!(
            check_signed_at(NOW.minus(s(300)), NOW, W),
            Err(Stale::TooOld {
                age: s(300),
                window: W
            })
        );
        assert_eq!(
            check_signed_at(NOW.plus(s(299)), NOW, W),
            Ok(NOW.plus(s(599)))
        );
        let ahead = check_signed_at(NOW.plus(s(300)), NOW, W).unwrap_err();
        assert_eq!(
            ahead,
            Stale::Ahead {
                ahead: s(300),
                window: W
            }
        );
        assert!(ahead.to_string().contains("ahead of the server's clock"));
        let old = check_signed_at(NOW.minus(s(3600)), NOW, W).unwrap_err();
        assert!(old.to_string().contains("signed 1h"), "{old}");
    }

    #[test]
    fn a_ticket_reference_is_one_line_of_text() {
        assert_eq!(parse_ref("ticket", " INC-7 "), Ok("INC-7".to_owned()));
        for bad in ["", "   ", "INC\n7", "INC-\u{202e}7"] {
            assert!(
                matches!(
                    parse_ref("ticket", bad),
                    Err(Rejection::Invalid {
                        field: "ticket",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(parse_ref("ticket", &"x".repeat(MAX_TICKET_LEN + 1)).is_err());
    }
}
