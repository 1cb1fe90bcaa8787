//! A typed client for the HTTP API, used by the CLI, the tests and the
//! benchmarks, so there is one way to talk to a server.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    ApprovalWaitsReport, ApproveBody, AuditEventView, AuditQuery, CreateRequest, CredentialView,
    DurationInput, EmptyBody, EntitlementView, ErrorBody, ExplainView, ExtendBody, GrantsQuery,
    OidcInfo, PolicyReloadView, PolicyView, ProposalView, ReasonBody, ReconcileBody, ReconcileView,
    RequestQuery, RequestView, ReviewBody, ReviewsQuery, VerifyView, WaitsQuery, WhoAmI,
    NEXT_CURSOR_HEADER,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach airlock at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("`{url}` is not a server URL: {message}")]
    BadUrl { url: String, message: String },
    /// The server refused the call; `field` names the bad input, if any.
    #[error("{message}{}", field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    #[error("unexpected answer from airlock ({status}): {message}")]
    Decode { status: u16, message: String },
    /// RFC 9470's step-up challenge (401 `insufficient_user_authentication`):
    /// sign in again with MFA at most `max_age` seconds old and retry.
    #[error("{message}")]
    StepUp {
        message: String,
        max_age: Option<u64>,
        acr_values: Vec<String>,
    },
}

/// Reads `max_age` and `acr_values` from a step-up challenge
/// (`Bearer error="insufficient_user_authentication", ..., max_age=N`).
pub fn parse_step_up(challenge: &str) -> (Option<u64>, Vec<String>) {
    let param = |name: &str| -> Option<String> {
        let start = challenge.find(&format!("{name}="))? + name.len() + 1;
        let rest = challenge.get(start..)?;
        Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next()?.to_owned(),
            None => rest.split([',', ' ']).next()?.to_owned(),
        })
    };
    let max_age = param("max_age").and_then(|v| v.parse().ok());
    let acr_values = param("acr_values")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    (max_age, acr_values)
}

/// What went wrong sending a request, in words that say what to check:
/// reqwest's own text ("error sending request") names no cause.
fn why_unreachable(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within 30s (is the server overloaded, or the address wrong?)".to_owned();
    }
    let mut cause = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            cause = Some(match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused: is the server running, and is this its address? (--url or AIRLOCK_URL)".to_owned()
                }
                _ => io.to_string(),
            });
            break;
        }
        cause = Some(s.to_string());
        source = s.source();
    }
    cause.unwrap_or_else(|| e.to_string())
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            ClientError::StepUp { .. } => Some(401),
            ClientError::Unreachable { .. } | ClientError::BadUrl { .. } => None,
        }
    }
}

/// One page of `GET /v1/requests`.
#[derive(Debug, Clone)]
pub struct RequestPage {
    pub requests: Vec<RequestView>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The commands that act on one request, by their URL verb.
#[derive(Debug, Clone)]
pub enum Action {
    Approve {
        comment: Option<String>,
    },
    Deny {
        reason: String,
    },
    Cancel,
    Release,
    Revoke {
        reason: String,
    },
    /// Judge a break-glass use.
    Review {
        acceptable: bool,
        comment: String,
    },
    /// More time on one's active grant.
    Extend {
        by: DurationInput,
        reason: String,
    },
}

impl Client {
    pub fn new(base: &str, token: &str) -> Result<Client, ClientError> {
        let unusable = |why: String| ClientError::BadUrl {
            url: base.to_owned(),
            message: why,
        };
        let parsed = reqwest::Url::parse(base).map_err(|e| {
            unusable(format!(
                "{e}; give the whole address with its scheme, e.g. `http://127.0.0.1:8080` (--url or AIRLOCK_URL)"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(unusable(
                "give an http:// or https:// address with a host, e.g. `http://127.0.0.1:8080` (--url or AIRLOCK_URL)"
                    .to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// The same connection pool, authenticating as another token.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            base: self.base.clone(),
            token: token.to_owned(),
            http: self.http.clone(),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        Ok(self.send_with_headers(builder).await?.0)
    }

    /// Like `send`, with the response's headers.
    async fn send_with_headers<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<(T, reqwest::header::HeaderMap), ClientError> {
        let response = builder.bearer_auth(&self.token).send().await.map_err(|e| {
            ClientError::Unreachable {
                url: self.base.clone(),
                message: why_unreachable(&e),
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| ClientError::Decode {
            status,
            message: e.to_string(),
        })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map(|body| (body, headers))
                .map_err(|e| ClientError::Decode {
                    status,
                    message: e.to_string(),
                });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) if status == 401 && body.error.code == "insufficient_user_authentication" => {
                let challenge = headers
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let (max_age, acr_values) = parse_step_up(challenge);
                Err(ClientError::StepUp {
                    message: body.error.message,
                    max_age,
                    acr_values,
                })
            }
            Ok(body) => Err(ClientError::Api {
                status,
                code: body.error.code,
                message: body.error.message,
                field: body.error.field,
            }),
            Err(_) => Err(ClientError::Decode {
                status,
                message: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            }),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    fn post<B: Serialize>(&self, path: &str, body: &B) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).json(body)
    }

    /// How `airlock login` signs in to this server (no token needed).
    pub async fn oidc_info(&self) -> Result<OidcInfo, ClientError> {
        self.send(self.get("/v1/auth/oidc")).await
    }

    pub async fn me(&self) -> Result<WhoAmI, ClientError> {
        self.send(self.get("/v1/me")).await
    }

    pub async fn entitlements(&self) -> Result<Vec<EntitlementView>, ClientError> {
        self.send(self.get("/v1/entitlements")).await
    }

    pub async fn create_request(&self, body: &CreateRequest) -> Result<RequestView, ClientError> {
        self.send(self.post("/v1/requests", body)).await
    }

    /// The first page of matching requests (see [`Client::list_requests_page`]).
    pub async fn list_requests(
        &self,
        query: &RequestQuery,
    ) -> Result<Vec<RequestView>, ClientError> {
        Ok(self.list_requests_page(query).await?.requests)
    }

    /// One page of matching requests, newest first, and the cursor of the
    /// next page (pass it back as `query.cursor`), if there is one.
    pub async fn list_requests_page(
        &self,
        query: &RequestQuery,
    ) -> Result<RequestPage, ClientError> {
        self.page(self.get("/v1/requests").query(query)).await
    }

    /// Every matching request from `query.cursor` on, page by page.
    pub async fn all_requests(
        &self,
        query: &RequestQuery,
    ) -> Result<Vec<RequestView>, ClientError> {
        self.every_page(query.cursor.clone(), |cursor| {
            self.get("/v1/requests").query(&RequestQuery {
                cursor,
                ..query.clone()
            })
        })
        .await
    }

    /// A page of a paged list (`X-Next-Cursor` names the next one).
    async fn page(&self, builder: reqwest::RequestBuilder) -> Result<RequestPage, ClientError> {
        let (requests, headers) = self.send_with_headers(builder).await?;
        let next_cursor = match headers.get(NEXT_CURSOR_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|e| ClientError::Decode {
                        status: 200,
                        message: format!("bad `{NEXT_CURSOR_HEADER}` header: {e}"),
                    })?
                    .to_owned(),
            ),
        };
        Ok(RequestPage {
            requests,
            next_cursor,
        })
    }

    /// Follows a paged list from `cursor` to its last page; `call` makes
    /// the call for a page.
    async fn every_page(
        &self,
        mut cursor: Option<String>,
        call: impl Fn(Option<String>) -> reqwest::RequestBuilder,
    ) -> Result<Vec<RequestView>, ClientError> {
        let mut all = Vec::new();
        loop {
            let page = self.page(call(cursor.clone())).await?;
            all.extend(page.requests);
            match page.next_cursor {
                // A server that hands back the cursor it was given would loop.
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(ClientError::Decode {
                        status: 200,
                        message: format!("the server repeated cursor `{next}`"),
                    })
                }
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn get_request(&self, id: &str) -> Result<RequestView, ClientError> {
        self.send(self.get(&format!("/v1/requests/{}", encode(id))))
            .await
    }

    pub async fn act(&self, id: &str, action: &Action) -> Result<RequestView, ClientError> {
        let path = |verb: &str| format!("/v1/requests/{}/{verb}", encode(id));
        let builder = match action {
            Action::Approve { comment } => self.post(
                &path("approve"),
                &ApproveBody {
                    comment: comment.clone(),
                },
            ),
            Action::Deny { reason } => self.post(
                &path("deny"),
                &ReasonBody {
                    reason: reason.clone(),
                },
            ),
            Action::Cancel => self.post(&path("cancel"), &EmptyBody {}),
            Action::Release => self.post(&path("release"), &EmptyBody {}),
            Action::Revoke { reason } => self.post(
                &path("revoke"),
                &ReasonBody {
                    reason: reason.clone(),
                },
            ),
            Action::Review {
                acceptable,
                comment,
            } => self.post(
                &path("review"),
                &ReviewBody {
                    acceptable: *acceptable,
                    comment: comment.clone(),
                },
            ),
            Action::Extend { by, reason } => self.post(
                &path("extend"),
                &ExtendBody {
                    by: by.clone(),
                    reason: reason.clone(),
                },
            ),
        };
        self.send(builder).await
    }

    /// Collects the one-time credential of the caller's grant.
    pub async fn elevation(
        &self,
        id: &str,
        audience: Option<String>,
    ) -> Result<crate::api::ElevationView, ClientError> {
        self.send(self.post(
            &format!("/v1/requests/{}/elevation", encode(id)),
            &crate::api::ElevationBody { audience },
        ))
        .await
    }

    /// Says ticket `reference` is closed, as the ticket system's webhook
    /// does: `{"ticket": reference, "delivery": <a new id>}` signed now
    /// with `secret` (the `[tickets]` secret) like the webhook connector's
    /// calls. The server reads the signature, not this client's token.
    pub async fn close_ticket(
        &self,
        reference: &str,
        secret: &[u8],
    ) -> Result<crate::api::TicketClosedView, ClientError> {
        let delivery = format!("airlock-cli-{}", hex::encode(rand::random::<[u8; 8]>()));
        let body = serde_json::json!({ "ticket": reference, "delivery": delivery }).to_string();
        let mut post = self
            .http
            .post(format!(
                "{}/v1/tickets/{}/closed",
                self.base,
                encode(reference)
            ))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in airlock_connectors::webhook::signature_headers(secret, body.as_bytes())
        {
            post = post.header(name, value);
        }
        self.send(post.body(body)).await
    }

    /// Posts a target's log lines (sshd's, from `source`) to grant `id`'s
    /// timeline.
    pub async fn report_activity(
        &self,
        id: &str,
        source: &str,
        lines: Vec<String>,
    ) -> Result<crate::api::ActivityView, ClientError> {
        self.send(self.post(
            &format!("/v1/grants/{}/activity", encode(id)),
            &crate::api::ActivityBody {
                source: source.to_owned(),
                lines,
            },
        ))
        .await
    }

    /// Posts an SSH session's record (what the companion on an SSH host
    /// sends) to request `id`.
    pub async fn record_ssh_session(
        &self,
        id: &str,
        upload: &crate::api::SessionUpload,
    ) -> Result<crate::api::SshSessionView, ClientError> {
        self.send(self.post(&format!("/v1/requests/{}/ssh-sessions", encode(id)), upload))
            .await
    }

    /// The SSH sessions recorded under request `id`.
    pub async fn ssh_sessions(
        &self,
        id: &str,
    ) -> Result<Vec<crate::api::SshSessionView>, ClientError> {
        self.send(self.get(&format!("/v1/requests/{}/ssh-sessions", encode(id))))
            .await
    }

    /// SSH session `id` with its recording.
    pub async fn ssh_session(
        &self,
        id: &str,
    ) -> Result<crate::api::SshSessionRecordingView, ClientError> {
        self.send(self.get(&format!("/v1/ssh-sessions/{}", encode(id))))
            .await
    }

    pub async fn collect_credential(&self, id: &str) -> Result<CredentialView, ClientError> {
        self.send(self.post(
            &format!("/v1/requests/{}/credential", encode(id)),
            &EmptyBody {},
        ))
        .await
    }

    /// One page of the grants the target may hold.
    pub async fn grants_page(&self, query: &GrantsQuery) -> Result<RequestPage, ClientError> {
        self.page(self.get("/v1/grants").query(query)).await
    }

    /// Every grant the target may hold, page by page.
    pub async fn grants(&self) -> Result<Vec<RequestView>, ClientError> {
        self.grants_where(false).await
    }

    /// Every grant the target may hold (only break-glass ones, if asked),
    /// page by page.
    pub async fn grants_where(&self, break_glass: bool) -> Result<Vec<RequestView>, ClientError> {
        self.every_page(None, |cursor| {
            self.get("/v1/grants").query(&GrantsQuery {
                break_glass,
                limit: Some(1000),
                cursor,
            })
        })
        .await
    }

    /// Break-glass uses awaiting review (with `all`, every one the caller
    /// may see), page by page.
    pub async fn reviews(&self, all: bool) -> Result<Vec<RequestView>, ClientError> {
        self.every_page(None, |cursor| {
            self.get("/v1/reviews").query(&ReviewsQuery {
                all,
                limit: Some(1000),
                cursor,
            })
        })
        .await
    }

    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEventView>, ClientError> {
        self.send(self.get("/v1/audit").query(query)).await
    }

    /// The notification outbox: backlog, failures, the last error and rows.
    pub async fn notifications(
        &self,
        query: &crate::api::NotificationsQuery,
    ) -> Result<crate::api::NotificationsView, ClientError> {
        self.send(self.get("/v1/notifications").query(query)).await
    }

    pub async fn approval_waits(
        &self,
        query: &WaitsQuery,
    ) -> Result<ApprovalWaitsReport, ClientError> {
        self.send(self.get("/v1/reports/approval-waits").query(query))
            .await
    }

    pub async fn usage_report(
        &self,
        query: &WaitsQuery,
    ) -> Result<crate::api::UsageReportView, ClientError> {
        self.send(self.get("/v1/reports/usage").query(query)).await
    }

    /// Whether `principal` holds `entitlement` right now (`GET /v1/check`).
    pub async fn check(
        &self,
        principal: &str,
        entitlement: &str,
    ) -> Result<crate::api::CheckView, ClientError> {
        let query = crate::api::CheckQuery {
            principal: Some(principal.to_owned()),
            entitlement: Some(entitlement.to_owned()),
        };
        self.send(self.get("/v1/check").query(&query)).await
    }

    pub async fn standing_report(&self) -> Result<crate::api::StandingReportView, ClientError> {
        self.send(self.get("/v1/reports/standing")).await
    }

    /// The chain's next events after `after`, oldest first.
    pub async fn audit_export(
        &self,
        query: &crate::api::AuditExportQuery,
    ) -> Result<Vec<AuditEventView>, ClientError> {
        self.send(self.get("/v1/audit/export").query(query)).await
    }

    pub async fn verify_audit(&self) -> Result<VerifyView, ClientError> {
        self.send(self.get("/v1/audit/verify")).await
    }

    /// The public key the server signs audit checkpoints with (`ed25519:…`).
    pub async fn checkpoint_key(&self) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Key {
            public_key: String,
        }
        let key: Key = self.send(self.get("/v1/audit/checkpoint-key")).await?;
        Ok(key.public_key)
    }

    /// Which policies decided a request, and how the set in force would now.
    pub async fn explain(&self, id: &str) -> Result<ExplainView, ClientError> {
        self.send(self.get(&format!("/v1/requests/{}/explain", encode(id))))
            .await
    }

    pub async fn policy(&self) -> Result<PolicyView, ClientError> {
        self.send(self.get("/v1/policy")).await
    }

    /// Re-reads the server's policy folder; refused (with every error) if it
    /// does not validate, and the set in force stays.
    pub async fn reload_policy(&self) -> Result<PolicyReloadView, ClientError> {
        self.send(self.post("/v1/policy/reload", &EmptyBody {}))
            .await
    }

    /// Policy sets waiting for a second admin.
    pub async fn policy_proposals(&self) -> Result<Vec<ProposalView>, ClientError> {
        self.send(self.get("/v1/policy/proposals")).await
    }

    /// Compares every connector's holders with Airlock's grants (admin);
    /// with `fix`, applies the fixes. Every finding and fix is audited.
    pub async fn reconcile(&self, fix: bool) -> Result<ReconcileView, ClientError> {
        // Each connector call it makes may take that connector's timeout.
        let builder = self
            .post("/v1/reconcile", &ReconcileBody { fix })
            .timeout(std::time::Duration::from_secs(600));
        self.send(builder).await
    }

    /// Puts a proposed policy set in force (not by its proposer).
    pub async fn approve_policy_proposal(&self, id: &str) -> Result<PolicyReloadView, ClientError> {
        self.send(self.post(
            &format!("/v1/policy/proposals/{}/approve", encode(id)),
            &EmptyBody {},
        ))
        .await
    }

    /// Creates an API token; the answer holds its secret, this once.
    /// The access-review campaigns the caller may see, and the templates.
    pub async fn access_reviews(
        &self,
        open_only: bool,
    ) -> Result<crate::api::AccessReviewList, ClientError> {
        let query = crate::api::AccessReviewQuery { open: open_only };
        self.send(self.get("/v1/access-reviews").query(&query))
            .await
    }

    /// Starts a campaign of `template` now.
    pub async fn start_access_review(
        &self,
        template: &str,
    ) -> Result<crate::api::AccessReviewView, ClientError> {
        let body = crate::api::StartAccessReviewBody {
            template: template.to_owned(),
        };
        self.send(self.post("/v1/access-reviews", &body)).await
    }

    /// A campaign with its items (and each decision's place in the chain).
    pub async fn access_review(
        &self,
        id: &str,
    ) -> Result<crate::api::AccessReviewDetail, ClientError> {
        self.send(self.get(&format!("/v1/access-reviews/{}", encode(id))))
            .await
    }

    /// Confirms or removes item `item` of campaign `id`.
    pub async fn decide_access_review_item(
        &self,
        id: &str,
        item: u32,
        body: &crate::api::DecideItemBody,
    ) -> Result<crate::api::AccessReviewItemView, ClientError> {
        self.send(self.post(
            &format!("/v1/access-reviews/{}/items/{item}", encode(id)),
            body,
        ))
        .await
    }

    pub async fn create_token(
        &self,
        body: &crate::api::CreateTokenBody,
    ) -> Result<crate::api::CreatedTokenView, ClientError> {
        self.send(self.post("/v1/tokens", body)).await
    }

    /// The caller's tokens and their services'; with `all`, every token.
    pub async fn list_tokens(&self, all: bool) -> Result<Vec<crate::api::TokenView>, ClientError> {
        let query = crate::api::TokenQuery {
            all: all.then_some(true),
        };
        self.send(self.get("/v1/tokens").query(&query)).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<crate::api::TokenView, ClientError> {
        self.send(self.post(&format!("/v1/tokens/{}/revoke", encode(id)), &EmptyBody {}))
            .await
    }
}

/// Request ids are plain, but user input reaches the path: keep it one segment.
fn encode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::parse_step_up;

    #[test]
    fn a_step_up_challenge_names_max_age_and_acr_values() {
        let challenge = r#"Bearer error="insufficient_user_authentication", error_description="needs MFA, within 300s", acr_values="urn:a urn:b", max_age=300"#;
        assert_eq!(
            parse_step_up(challenge),
            (Some(300), vec!["urn:a".to_owned(), "urn:b".to_owned()])
        );
        assert_eq!(
            parse_step_up(r#"Bearer error="insufficient_user_authentication", max_age=60"#),
            (Some(60), Vec::new())
        );
        assert_eq!(parse_step_up("Bearer"), (None, Vec::new()));
    }
}
