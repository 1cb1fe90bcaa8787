//! Airlock's SSH companion: the program sshd runs for every login with an
//! Airlock certificate (`ForceCommand`, with `ExposeAuthInfo yes`). It admits
//! only certificates whose key id is one of Airlock's request ids, runs the
//! user's shell or command under a pseudo-terminal it owns, ends the whole
//! session when the grant ends — at the certificate's expiry without asking
//! anyone, at once when the KRL lists it — and records it (asciicast v2),
//! spooled to a local folder and sent to Airlock
//! (`POST /v1/requests/{id}/ssh-sessions`) when it can be reached.
//!
//! The rules (which key ids are Airlock's, when a session must end, what a
//! record may hold) are `airlock_core::ssh_session`'s; this crate is the
//! edge that reads the certificate, owns the terminal and the process group,
//! and keeps the recording. `asciicast` and `upload` are shared with the
//! server and the CLI (`airlock session play`).

pub mod asciicast;
pub mod config;
pub mod krl;
pub mod session;
pub mod spool;
pub mod upload;

/// The wall clock, read here only: the certificate's validity is wall-clock
/// time, and so is sshd's check of it.
#[expect(
    clippy::disallowed_methods,
    reason = "the companion's one clock: certificates expire on the wall clock"
)]
pub fn wall_now() -> airlock_core::Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    airlock_core::Timestamp::from_unix_millis(millis)
}
