//! API tokens: creating, listing, revoking, and authenticating with one.
//! The rules are the core's (`token` for lifetimes, scopes and the audit
//! events, `access` for who may); this is where they meet the store, the
//! clock and randomness.

use std::collections::HashMap;
use std::time::Duration;

use airlock_core::access::{self, Capability};
use airlock_core::catalog::User;
use airlock_core::request::Rejection;
use airlock_core::token::{self, ApiToken, NewToken, Scopes, TokenUse, Unusable};
use airlock_core::{Timestamp, TokenId, UserId};

use super::{Engine, EngineError};
use crate::config::token_hash;
use crate::store::tokens::TokenWrite;
use crate::store::StoreError;

/// What marks Airlock's API tokens, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "alk_";

/// Per-engine token state.
pub(super) struct TokenState {
    max_lifetime: Duration,
    /// The last use this replica wrote (or read) per token.
    last_written: std::sync::Mutex<HashMap<TokenId, Timestamp>>,
}

impl TokenState {
    pub(super) fn new(max_lifetime: Duration) -> TokenState {
        TokenState {
            max_lifetime,
            last_written: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// What a caller asks for, parsed from the wire.
#[derive(Debug, Clone)]
pub struct TokenAsk {
    pub name: String,
    /// A service the caller owns; `None`: the caller.
    pub owner: Option<UserId>,
    pub scopes: Scopes,
    pub lifetime: Duration,
}

/// A new token and its secret, which is shown this once and never stored.
pub struct CreatedToken {
    pub token: ApiToken,
    pub secret: String,
}

/// Why a presented API token does not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    #[error("unknown token")]
    Unknown,
    #[error(transparent)]
    Unusable(#[from] Unusable),
    #[error("the owner `{owner}` of the API token `{id}` is no longer in the directory")]
    OwnerGone { id: TokenId, owner: UserId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    pub fn token_max_lifetime(&self) -> Duration {
        self.tokens.max_lifetime
    }

    /// Creates an API token for the caller or a service they own, and
    /// audits it; the secret is returned once.
    pub async fn create_token(
        &self,
        by: &User,
        ask: TokenAsk,
    ) -> Result<CreatedToken, EngineError> {
        let owner_id = ask.owner.clone().unwrap_or_else(|| by.id.clone());
        let owner = self.token_owner(&owner_id).await?.ok_or_else(|| Rejection::Invalid {
            field: "owner",
            message: format!(
                "no user or service `{owner_id}` in the config or the provisioned (SCIM) directory: \
                 a token's owner must be one of them, so that their rights can be read at each use"
            ),
        })?;
        access::may_create_token_for(by, &owner, &self.catalog.owners_of(&owner_id))?;
        let creating = match &by.token {
            Some(t) => self.store.token(&t.id).await?,
            None => None,
        };
        let now = self.now();
        let new = NewToken {
            id: TokenId::from_entropy(rand::random()),
            name: ask.name,
            owner: owner_id,
            scopes: ask.scopes,
            lifetime: ask.lifetime,
        };
        let (token, event) =
            token::create(new, by, creating.as_ref(), self.tokens.max_lifetime, now)?;
        let taken = self
            .store
            .list_tokens(Some(std::slice::from_ref(&token.owner)))
            .await?
            .into_iter()
            .any(|t| t.name == token.name && t.revoked_at.is_none());
        let name_taken = || {
            EngineError::Rejected(Rejection::Conflict(format!(
                "`{}` already has a token named `{}` that is not revoked",
                token.owner, token.name
            )))
        };
        if taken {
            return Err(name_taken());
        }
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
        let write = TokenWrite::Create {
            token: token.clone(),
            secret_sha256: token_hash(&secret),
        };
        match self.store.write_token(write, vec![event]).await {
            Ok(_) => Ok(CreatedToken { token, secret }),
            // The unique index: the same name, committed meanwhile.
            Err(StoreError::UniqueViolation) => Err(name_taken()),
            Err(e) => Err(e.into()),
        }
    }

    /// The tokens the caller may manage: their own and their services';
    /// with `all`, every token (admins).
    pub async fn list_tokens(&self, by: &User, all: bool) -> Result<Vec<ApiToken>, EngineError> {
        access::may(by, Capability::ManageTokens)?;
        if all {
            access::may(by, Capability::ReadEverything)?;
            return Ok(self.store.list_tokens(None).await?);
        }
        let mut owners = vec![by.id.clone()];
        owners.extend(
            self.catalog
                .service_owners
                .iter()
                .filter(|(_, people)| people.contains(&by.id))
                .map(|(service, _)| service.clone()),
        );
        Ok(self.store.list_tokens(Some(&owners)).await?)
    }

    /// Revokes a token the caller may manage, and audits it.
    pub async fn revoke_token(&self, by: &User, id: &TokenId) -> Result<ApiToken, EngineError> {
        let current = self
            .store
            .token(id)
            .await?
            .ok_or_else(|| EngineError::UnknownToken(id.to_string()))?;
        access::may_manage_tokens_of(by, &current.owner, &self.catalog.owners_of(&current.owner))?;
        let (revoked, event) = token::revoke(&current, by, self.now())?;
        if self
            .store
            .write_token(TokenWrite::Revoke(revoked.clone()), vec![event])
            .await?
        {
            Ok(revoked)
        } else {
            Err(EngineError::Rejected(Rejection::Conflict(format!(
                "the API token `{id}` was revoked meanwhile"
            ))))
        }
    }

    /// The principal an API token stands for now: its owner as the
    /// directory has them at this moment, narrowed by the token's scopes.
    /// Records the use at most once per `token::LAST_USE_PRECISION` per
    /// token and replica (that one call waits for the write; a failed write
    /// loses only a last-use time and is logged).
    pub async fn authenticate_token(&self, secret: &str) -> Result<User, TokenRefused> {
        let found = self
            .store
            .token_by_secret(&token_hash(secret))
            .await?
            .ok_or(TokenRefused::Unknown)?;
        let now = self.now();
        found.usable(now)?;
        let owner =
            self.token_owner(&found.owner)
                .await?
                .ok_or_else(|| TokenRefused::OwnerGone {
                    id: found.id.clone(),
                    owner: found.owner.clone(),
                })?;
        self.note_use(&found, now).await;
        Ok(owner.through(TokenUse {
            id: found.id,
            scopes: found.scopes,
        }))
    }

    /// Whom a token may stand for, as they are now: a user or service of
    /// the config, or else a person the identity provider provisioned and
    /// has not deactivated (with their provisioned groups).
    async fn token_owner(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        match self.catalog.user(id) {
            Some(user) => Ok(Some(user.clone())),
            None => self.provisioned_person(id).await,
        }
    }

    async fn note_use(&self, found: &ApiToken, now: Timestamp) {
        {
            let Ok(mut written) = self.tokens.last_written.lock() else {
                return;
            };
            let last = written.get(&found.id).copied().max(found.last_used_at);
            if !token::record_use(last, now) {
                return;
            }
            written.insert(found.id.clone(), now);
        }
        let used = TokenWrite::Used {
            id: found.id.clone(),
            at: now,
        };
        if let Err(e) = self.store.write_token(used, Vec::new()).await {
            tracing::warn!(token = %found.id, error = %e, "could not record an API token's last use");
        }
    }
}
