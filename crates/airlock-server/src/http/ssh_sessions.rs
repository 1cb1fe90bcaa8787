//! `/v1/requests/{id}/ssh-sessions` and `/v1/ssh-sessions/{id}`: SSH
//! sessions the companion on an SSH host (`airlock-session`) recorded. A
//! post is a reporter's, like sshd's log lines (`Capability::ReportActivity`);
//! listing and replaying are for whoever may see the request. A post may be
//! larger than other bodies: it carries the recording (at most
//! `ssh_session::MAX_RECORDING_BYTES`, which JSON's escaping may double).

use airlock_core::access::Capability;
use airlock_core::ssh_session::{Ending, SessionReport, MAX_RECORDING_BYTES};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api::{parse_time, SessionUpload, SshSessionRecordingView, SshSessionView};

use super::error::require;
use super::extract::{ApiJson, Caller};
use super::{ApiError, ApiResult, AppState};

/// The largest body `POST /v1/requests/{id}/ssh-sessions` reads.
pub const MAX_SESSION_BODY_BYTES: usize = 2 * MAX_RECORDING_BYTES + 64 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/requests/{id}/ssh-sessions",
            post(record)
                .layer(DefaultBodyLimit::max(MAX_SESSION_BODY_BYTES))
                .get(list),
        )
        .route("/v1/ssh-sessions/{id}", get(show))
}

fn request_id(raw: &str) -> ApiResult<airlock_core::RequestId> {
    airlock_core::RequestId::parse(raw).map_err(|_| ApiError::not_found(raw))
}

fn report(body: SessionUpload) -> ApiResult<SessionReport> {
    // RFC 3339 only (`parse_time` also reads Unix seconds, which the
    // document does not offer here).
    let time = |field: &str, raw: &str| {
        let shown = raw.chars().take(40).collect::<String>();
        // A time with its offset: `Z` or `±HH:MM` at the end.
        let offset = raw.ends_with('Z')
            || raw
                .get(raw.len().saturating_sub(6)..)
                .is_some_and(|o| o.starts_with(['+', '-']) && o.get(3..4) == Some(":"));
        if !raw.contains('T') || !offset {
            return Err(ApiError::invalid(
                field,
                format!("`{shown}` must be an RFC 3339 time with its offset"),
            ));
        }
        parse_time(raw).map_err(|e| ApiError::invalid(field, format!("`{shown}`: {e}")))
    };
    Ok(SessionReport {
        started_at: time("started_at", &body.started_at)?,
        ended_at: time("ended_at", &body.ended_at)?,
        ending: Ending::parse(&body.ending).ok_or_else(|| {
            ApiError::invalid(
                "ending",
                format!(
                    "`{}` must be `exited`, `expired` or `revoked`",
                    body.ending.chars().take(40).collect::<String>()
                ),
            )
        })?,
        id: body.id,
        host: body.host,
        user: body.user,
        client: body.client,
        command: body.command,
        recording: body.recording,
        cut: body.cut,
    })
}

/// A session's record from the SSH host's companion.
async fn record(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SessionUpload>,
) -> ApiResult<Json<SshSessionView>> {
    require(&user, Capability::ReportActivity)?;
    let id = request_id(&id)?;
    let report = report(body)?;
    let taken = state.engine.record_ssh_session(&user, &id, report).await?;
    let mut view = SshSessionView::new(&taken.session);
    view.duplicate = !taken.new;
    Ok(Json(view))
}

async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<SshSessionView>>> {
    require(&user, Capability::Read)?;
    let id = request_id(&id)?;
    let sessions = state.engine.ssh_sessions(&user, &id).await?;
    Ok(Json(sessions.iter().map(SshSessionView::new).collect()))
}

async fn show(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SshSessionRecordingView>> {
    require(&user, Capability::Read)?;
    let session = state.engine.ssh_session(&user, &id).await?.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no SSH session `{}` that you can see",
                id.chars().take(80).collect::<String>()
            ),
        )
    })?;
    Ok(Json(SshSessionRecordingView {
        session: SshSessionView::new(&session),
        recording: session.report.recording,
    }))
}
