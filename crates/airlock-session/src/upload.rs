//! A session's record as it travels: the body of
//! `POST /v1/requests/{id}/ssh-sessions`, and the spool file that holds it
//! until Airlock takes it. One definition for the companion that sends it
//! and the server that reads it.

use serde::{Deserialize, Serialize};

/// The body of `POST /v1/requests/{id}/ssh-sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionUpload {
    /// Chosen by the companion; a resend of the same session is taken once.
    pub id: String,
    /// The SSH host.
    pub host: String,
    /// The account the session ran as.
    pub user: String,
    /// The client's address and port (`$SSH_CONNECTION`).
    pub client: String,
    /// The command asked for (`$SSH_ORIGINAL_COMMAND`); absent: a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: String,
    /// `exited`, `expired` or `revoked`.
    pub ending: String,
    /// The terminal output, asciicast v2.
    pub recording: String,
    /// What could not be kept, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<String>,
}

/// A spool file: the upload and the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spooled {
    pub request: String,
    pub upload: SessionUpload,
}
