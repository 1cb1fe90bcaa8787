//! The directory's edge of the engine: people and groups provisioned over
//! SCIM are stored with their audit events, then what the change means for
//! requests is carried out through the request lifecycle — every
//! unfinished request of a deactivated or deleted user ended (grants
//! revoked by the usual connector job, retried and never abandoned), the
//! unfinished requests of a user who left a group decided again. And who a
//! signed-in person is: their config or token groups plus their
//! provisioned groups, refused when the directory deactivated or deleted
//! them.

use std::collections::BTreeSet;
use std::sync::Arc;

use airlock_core::catalog::User;
use airlock_core::directory::Consequence;
use airlock_core::request::{Command, State};
use airlock_core::UserId;
use tracing::{error, info};

use super::{Engine, EngineError};
use crate::policy;
use crate::store::directory::{Committed, DirectoryWrite, Standing};
use crate::store::{RequestFilter, StoreError};

/// Why a person may not be authenticated although their token is valid.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the account `{0}` is deactivated in the identity provider")]
    Deactivated(UserId),
    #[error("the account `{0}` was deleted from the identity provider")]
    Deleted(UserId),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl Engine {
    /// Stores a directory write with its audit events, then carries out
    /// its consequences. The write stands even if a consequence fails (that
    /// is logged and returned as the error, so the provider retries; a
    /// retried write that leaves a user inactive deprovisions again).
    pub async fn write_directory(
        self: &Arc<Self>,
        write: DirectoryWrite,
    ) -> Result<Committed, EngineError> {
        let committed = self.store.write_directory(write).await?;
        for event in &committed.change.events {
            self.metrics.event(event.action);
        }
        for consequence in &committed.change.consequences {
            self.carry_out(consequence).await?;
        }
        Ok(committed)
    }

    /// Ends or re-decides every unfinished request of the user concerned.
    async fn carry_out(self: &Arc<Self>, consequence: &Consequence) -> Result<(), EngineError> {
        let user = match consequence {
            Consequence::Deprovision { user, .. } | Consequence::Redecide { user, .. } => user,
        };
        let open = self
            .store
            .list_requests(&RequestFilter {
                states: vec![State::Pending, State::Approved, State::Active],
                requester: Some(user.clone()),
                limit: u32::MAX,
                ..RequestFilter::default()
            })
            .await?;
        let requester = match consequence {
            Consequence::Redecide { .. } => Some(self.known_user_now(user).await?),
            Consequence::Deprovision { .. } => None,
        };
        for request in open {
            let command = match (consequence, &requester) {
                (Consequence::Deprovision { cause, .. }, _) => Command::Deprovision {
                    cause: cause.clone(),
                },
                (Consequence::Redecide { cause, group, .. }, Some(requester)) => {
                    let policies = self.policies();
                    let set = policies.current();
                    let mut before = requester.clone();
                    before.groups.insert(group.clone());
                    let verdict = |user: &User| {
                        policy::verdict(&set, &policies.stored_request_facts(user, &request))
                    };
                    Command::Redecide {
                        before: verdict(&before),
                        after: verdict(requester),
                        cause: cause.clone(),
                    }
                }
                (Consequence::Redecide { .. }, None) => continue,
            };
            match self.apply(&request.id, command).await {
                Ok(applied) => {
                    let t = &applied.main;
                    if t.request.state.is_terminal() {
                        info!(request = %t.request.id, user = %user, state = t.request.state.as_str(),
                              "directory change ended a request");
                    }
                    self.after_commit_all(&applied);
                }
                Err(e) => {
                    error!(request = %request.id, user = %user, error = %e,
                           "could not carry out a directory change on a request");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A user as Airlock knows them now: the config's groups and roles plus
    /// the groups the identity provider provisioned for them (the union, as
    /// policies see it). Deactivated or deleted users keep only the
    /// config's (they are refused at sign-in; see [`Engine::signed_in`]).
    pub async fn known_user_now(&self, id: &UserId) -> Result<User, EngineError> {
        let mut user = self.known_user(id);
        if let Standing::Active(_, groups) = self.store.directory_standing(id.as_str()).await? {
            user.groups.extend(provisioned_names(&groups));
        }
        Ok(user)
    }

    /// A person the identity provider provisioned and who is active, as the
    /// directory has them now: their provisioned groups, no roles (roles
    /// come from the config or a provider token's groups, neither of which
    /// is at hand without a sign-in). `None` for anyone else.
    pub async fn provisioned_person(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(match self.store.directory_standing(id.as_str()).await? {
            Standing::Active(_, groups) => Some(User::person(
                id.clone(),
                provisioned_names(&groups),
                BTreeSet::new(),
            )),
            _ => None,
        })
    }

    /// Completes an authenticated person with their provisioned groups, or
    /// refuses them when the identity provider deactivated or deleted them
    /// (whatever token they hold).
    pub async fn signed_in(&self, mut user: User) -> Result<User, Refused> {
        match self
            .store
            .directory_standing(user.id.as_str())
            .await
            .map_err(EngineError::from)?
        {
            Standing::Unknown => Ok(user),
            Standing::Active(_, groups) => {
                user.groups.extend(provisioned_names(&groups));
                Ok(user)
            }
            Standing::Deactivated(_) => Err(Refused::Deactivated(user.id)),
            Standing::Deleted => Err(Refused::Deleted(user.id)),
        }
    }
}

/// The names policies see for provisioned groups (a display name that maps
/// to no valid name is left out; the SCIM API refuses to store one).
fn provisioned_names(
    groups: &[airlock_core::directory::DirectoryGroup],
) -> BTreeSet<airlock_core::GroupName> {
    groups.iter().filter_map(|g| g.name().ok()).collect()
}
