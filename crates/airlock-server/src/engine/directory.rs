//! The directory's edge of the engine: people and groups provisioned over
//! SCIM are stored with their audit events, then what the change means for
//! requests is carried out through the request lifecycle — every
//! unfinished request of a deactivated or deleted user ended (grants
//! revoked by the usual connector job, retried and never abandoned), and
//! of the external principals they sponsor; the unfinished requests of a
//! user who left a group decided again. And who a signed-in person is:
//! their config or token groups plus their provisioned groups and, for an
//! external principal, their sponsor and account end; refused when the
//! directory deactivated or deleted them, when their account ended, or
//! when nobody active answers for them.

use std::collections::BTreeSet;
use std::sync::Arc;

use airlock_core::catalog::{terms_change, User};
use airlock_core::directory::{Consequence, DirectoryUser};
use airlock_core::request::{Command, State};
use airlock_core::UserId;
use tracing::{error, info, warn};

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
    /// An external principal past their account's end.
    #[error("{0}")]
    AccountEnded(String),
    /// An external principal nobody active answers for.
    #[error("{0}")]
    Unsponsored(String),
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
            // A sponsor who leaves takes what they answer for with them.
            let Consequence::Deprovision { user, .. } = consequence else {
                continue;
            };
            for theirs in consequence.for_sponsored(&self.sponsored_by(user).await?) {
                self.carry_out(&theirs).await?;
            }
        }
        Ok(committed)
    }

    /// The external principals `sponsor` answers for: the config's and the
    /// directory's.
    async fn sponsored_by(&self, sponsor: &UserId) -> Result<Vec<UserId>, EngineError> {
        let mut vendors: BTreeSet<UserId> = self
            .catalog
            .users
            .values()
            .filter(|u| u.external.as_ref().is_some_and(|t| &t.sponsor == sponsor))
            .map(|u| u.id.clone())
            .collect();
        vendors.extend(self.store.directory_sponsored_by(sponsor.as_str()).await?);
        Ok(vendors.into_iter().collect())
    }

    /// At start: every unfinished request whose requester's terms changed
    /// since they asked (the config, read again, gave a vendor another
    /// sponsor or an earlier account end, made someone a vendor or no
    /// longer one, or lost the person) ends, recorded with that cause like a
    /// deprovisioning. The directory's changes do this as they happen; the
    /// config's users change only with a restart. Only external
    /// principals' requests and the config's vendors' are read, not every
    /// open request. Returns how many ended.
    pub async fn settle_external_terms(self: &Arc<Self>) -> Result<usize, EngineError> {
        let open = vec![State::Pending, State::Approved, State::Active];
        let mut candidates = self
            .store
            .list_requests(&RequestFilter {
                states: open.clone(),
                sponsored: true,
                limit: u32::MAX,
                ..RequestFilter::default()
            })
            .await?;
        let vendors: Vec<UserId> = self
            .catalog
            .users
            .values()
            .filter(|u| u.external.is_some())
            .map(|u| u.id.clone())
            .collect();
        for vendor in vendors {
            let theirs = self
                .store
                .list_requests(&RequestFilter {
                    states: open.clone(),
                    requester: Some(vendor),
                    limit: u32::MAX,
                    ..RequestFilter::default()
                })
                .await?;
            candidates.extend(theirs.into_iter().filter(|r| r.external.is_none()));
        }
        let mut ended = 0;
        for request in candidates {
            let now = self.known_user_now(&request.requester).await?;
            let Some(why) = terms_change(request.external.as_ref(), now.external.as_ref()) else {
                continue;
            };
            let cause = format!("`{}` {why} in the configuration", request.requester);
            let applied = self
                .apply(&request.id, Command::Deprovision { cause })
                .await?;
            let t = &applied.main;
            if t.request.state.is_terminal() {
                warn!(request = %t.request.id, user = %request.requester, why = %why,
                      "the terms of an external principal changed; their request ended");
                ended += 1;
            }
            self.after_commit_all(&applied);
        }
        Ok(ended)
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
        if let Standing::Active(provisioned, groups) =
            self.store.directory_standing(id.as_str()).await?
        {
            user.groups.extend(provisioned_names(&groups));
            with_terms(&mut user, &provisioned);
        }
        Ok(user)
    }

    /// A person the identity provider provisioned and who is active, as the
    /// directory has them now: their provisioned groups, no roles (roles
    /// come from the config or a provider token's groups, neither of which
    /// is at hand without a sign-in). `None` for anyone else.
    pub async fn provisioned_person(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(match self.store.directory_standing(id.as_str()).await? {
            Standing::Active(provisioned, groups) => {
                let mut user =
                    User::person(id.clone(), provisioned_names(&groups), BTreeSet::new());
                with_terms(&mut user, &provisioned);
                Some(user)
            }
            _ => None,
        })
    }

    /// Completes an authenticated person with their provisioned groups and
    /// terms, or refuses them when the identity provider deactivated or
    /// deleted them (whatever token they hold), and an external principal
    /// whose account ended or whom nobody active sponsors.
    pub async fn signed_in(&self, mut user: User) -> Result<User, Refused> {
        match self
            .store
            .directory_standing(user.id.as_str())
            .await
            .map_err(EngineError::from)?
        {
            Standing::Unknown => {}
            Standing::Active(provisioned, groups) => {
                user.groups.extend(provisioned_names(&groups));
                if provisioned.is_vendor() && provisioned.external().is_none() {
                    return Err(Refused::Unsponsored(format!(
                        "the account `{}` is a vendor's, and the identity provider names no sponsor or account end for it",
                        user.id
                    )));
                }
                with_terms(&mut user, &provisioned);
            }
            Standing::Deactivated(_) => return Err(Refused::Deactivated(user.id)),
            Standing::Deleted => return Err(Refused::Deleted(user.id)),
        }
        if let Some(why) = user.account_ended(self.clock.now()) {
            return Err(Refused::AccountEnded(why));
        }
        if let Some(terms) = &user.external {
            self.check_sponsor(&user.id, &terms.sponsor).await?;
        }
        Ok(user)
    }

    /// Refuses an external principal whose sponsor is no active internal
    /// person: neither the config's nor the directory's, deactivated or
    /// deleted there, or an external principal themselves.
    async fn check_sponsor(&self, user: &UserId, sponsor: &UserId) -> Result<(), Refused> {
        let refused = |why: &str| {
            Refused::Unsponsored(format!(
                "the sponsor `{sponsor}` of `{user}` {why}, so nobody answers for them"
            ))
        };
        let configured = self.catalog.user(sponsor);
        match self
            .store
            .directory_standing(sponsor.as_str())
            .await
            .map_err(EngineError::from)?
        {
            Standing::Deactivated(_) => Err(refused("is deactivated")),
            Standing::Deleted => Err(refused("was deleted")),
            Standing::Active(provisioned, _) if provisioned.is_vendor() => {
                Err(refused("is an external principal"))
            }
            Standing::Active(..) => Ok(()),
            Standing::Unknown
                if configured.is_some_and(|u| !u.is_service() && u.external.is_none()) =>
            {
                Ok(())
            }
            Standing::Unknown => Err(refused("is unknown")),
        }
    }
}

/// A provisioned vendor's terms, unless the config already gives the person
/// theirs (the config's word wins, as with its attributes).
fn with_terms(user: &mut User, provisioned: &DirectoryUser) {
    if user.external.is_none() {
        user.external = provisioned.external();
    }
}

/// The names policies see for provisioned groups (a display name that maps
/// to no valid name is left out; the SCIM API refuses to store one).
fn provisioned_names(
    groups: &[airlock_core::directory::DirectoryGroup],
) -> BTreeSet<airlock_core::GroupName> {
    groups.iter().filter_map(|g| g.name().ok()).collect()
}
