//! SSH sessions recorded by the companion on an SSH host
//! (`airlock-session`): a reporter (the host's token, `report` scope) posts
//! a session's record to its request; the core checks it
//! (`ssh_session::accept`) and the store keeps it with its
//! `ssh_session_recorded` event in one transaction, once however often it
//! is sent. Whoever may see the request may list and replay its sessions.

use airlock_core::access::{self, Capability};
use airlock_core::catalog::User;
use airlock_core::ssh_session::{self, SessionReport};
use airlock_core::RequestId;

use super::{Engine, EngineError};
use crate::store::ssh_sessions::StoredSession;

/// What became of a posted session.
#[derive(Debug, Clone)]
pub struct SessionTaken {
    pub session: StoredSession,
    /// `false`: it was stored before (a resend); nothing was written.
    pub new: bool,
}

impl Engine {
    /// Keeps a session `report` under request `id`, posted by `by`.
    pub async fn record_ssh_session(
        &self,
        by: &User,
        id: &RequestId,
        report: SessionReport,
    ) -> Result<SessionTaken, EngineError> {
        access::may(by, Capability::ReportActivity)?;
        let request = self.get(id).await?;
        let now = self.clock.now();
        let accepted = ssh_session::accept(&request, by, report, now)?;
        ssh_session::takes_sessions(&request)?;
        let session = StoredSession {
            request: request.id.clone(),
            recording_bytes: accepted.report.recording.len() as u64,
            sent_bytes: accepted.sent_bytes as u64,
            report: accepted.report,
            received_at: now,
            received_by: by.id.to_string(),
        };
        let action = accepted.event.action;
        let new = self
            .store
            .add_ssh_session(session.clone(), vec![accepted.event])
            .await?;
        if new {
            self.metrics.event(action);
            return Ok(SessionTaken { session, new });
        }
        let stored = self
            .store
            .ssh_session(&session.report.id)
            .await?
            .unwrap_or(session);
        if stored.request != request.id {
            return Err(EngineError::Session(ssh_session::Refusal {
                field: "id".to_owned(),
                message: format!(
                    "session `{}` is recorded under another request",
                    stored.report.id
                ),
            }));
        }
        Ok(SessionTaken {
            session: stored,
            new: false,
        })
    }

    /// The sessions recorded under request `id`, for someone who may see it.
    pub async fn ssh_sessions(
        &self,
        by: &User,
        id: &RequestId,
    ) -> Result<Vec<StoredSession>, EngineError> {
        let request = self.get(id).await?;
        if !request.visible_to(by) {
            return Err(EngineError::NotFound(id.clone()));
        }
        Ok(self.store.ssh_sessions(id).await?)
    }

    /// Session `id` with its recording, for someone who may see its
    /// request; `None` otherwise, as if there were none.
    pub async fn ssh_session(
        &self,
        by: &User,
        id: &str,
    ) -> Result<Option<StoredSession>, EngineError> {
        let Some(session) = self.store.ssh_session(id).await? else {
            return Ok(None);
        };
        let request = self.get(&session.request).await?;
        Ok(request.visible_to(by).then_some(session))
    }
}
