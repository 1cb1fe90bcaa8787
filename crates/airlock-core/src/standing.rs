//! The standing-privilege assessment: every holder each target lists, what
//! Airlock knows of it — a grant it made (which request, until when), or
//! nothing (a standing privilege) — who the holder is, and how much risk it
//! carries. It is the table an organisation needs before it moves to
//! just-in-time access, and the one an auditor asks for after.
//!
//! Holders are explained by the same rule as reconciliation
//! ([`drift::Explainer`]); nothing here talks to a target or reads a clock.
//!
//! The risk rule, on four levels (low, medium, high, critical):
//!
//! - it starts at the entitlement's sensitivity (the highest among the
//!   entitlements provisioned through the connector for a holder no grant
//!   explains, since such a holder holds all of them);
//! - one lower for access Airlock granted: approved under policy, recorded
//!   and ending by itself;
//! - one higher for a holder no Airlock user answers for (a principal the
//!   target lists that maps to nobody Airlock knows);
//! - never below low nor above critical.

use crate::catalog::{Catalog, Entitlement, User};
use crate::drift::{Explainer, Explanation, Holder, Known};
use crate::ids::{RequestId, UserId};
use crate::request::AccessRequest;
use crate::time::Timestamp;

/// How much harm the entitlement's access can do in the wrong hands: an
/// entitlement's `sensitivity`, 0 to 3 in the config (where policies see
/// the number as `resource.sensitivity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Sensitivity {
    /// 0, the default.
    #[default]
    Low,
    Medium,
    High,
    /// 3: production data, admin rights.
    Critical,
}

impl Sensitivity {
    pub const ALL: [Sensitivity; 4] = [
        Sensitivity::Low,
        Sensitivity::Medium,
        Sensitivity::High,
        Sensitivity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Low => "low",
            Sensitivity::Medium => "medium",
            Sensitivity::High => "high",
            Sensitivity::Critical => "critical",
        }
    }

    /// The config's level, 0 to 3 (`None` outside).
    pub fn from_level(level: i64) -> Option<Sensitivity> {
        usize::try_from(level)
            .ok()
            .and_then(|i| Sensitivity::ALL.get(i).copied())
    }

    /// The config's level, 0 to 3.
    pub fn level(self) -> i64 {
        i64::from(self.rank())
    }

    fn rank(self) -> i8 {
        match self {
            Sensitivity::Low => 0,
            Sensitivity::Medium => 1,
            Sensitivity::High => 2,
            Sensitivity::Critical => 3,
        }
    }

    fn from_rank(rank: i8) -> Sensitivity {
        match rank {
            i8::MIN..=0 => Sensitivity::Low,
            1 => Sensitivity::Medium,
            2 => Sensitivity::High,
            _ => Sensitivity::Critical,
        }
    }
}

/// The risk of one holding, on the same four levels as sensitivity.
pub type Risk = Sensitivity;

/// Who a holder is to Airlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HolderKind {
    /// A person Airlock knows.
    Person,
    /// A service principal Airlock knows.
    Service,
    /// A principal of the target that maps to no Airlock user: a shared
    /// login, a forgotten account, someone's out-of-band access.
    Unknown,
}

impl HolderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HolderKind::Person => "person",
            HolderKind::Service => "service",
            HolderKind::Unknown => "unknown",
        }
    }
}

/// Whether Airlock explains a holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status<'a> {
    /// A request Airlock still owns: active, being granted or revoked.
    Granted(&'a AccessRequest),
    /// No request explains it.
    Standing,
    /// Held for a request that ended, whose removal had been confirmed.
    Lingering(&'a AccessRequest),
    /// Tagged with a request id Airlock does not know.
    UnknownRequest(&'a RequestId),
}

impl<'a> Status<'a> {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Granted(_) => "granted",
            Status::Standing => "standing",
            Status::Lingering(_) => "lingering",
            Status::UnknownRequest(_) => "unknown_request",
        }
    }

    pub fn request(&self) -> Option<&'a AccessRequest> {
        match self {
            Status::Granted(r) | Status::Lingering(r) => Some(*r),
            Status::Standing | Status::UnknownRequest(_) => None,
        }
    }
}

/// One holder of one connector's access, assessed.
#[derive(Debug, Clone)]
pub struct Holding<'a> {
    pub principal: &'a str,
    pub status: Status<'a>,
    /// The Airlock user behind it: the request's requester (whom the
    /// config may not list: the identity provider's people), else the user
    /// the principal maps to.
    pub user: Option<&'a UserId>,
    pub kind: HolderKind,
    /// What it gives: the request's entitlement, or every entitlement
    /// provisioned through the connector.
    pub entitlements: Vec<&'a Entitlement>,
    pub sensitivity: Sensitivity,
    pub risk: Risk,
}

/// One connector's holders with the requests read after listing them.
pub struct Listing<'a> {
    pub connector: &'a str,
    pub listed_at: Timestamp,
    pub holders: &'a [Holder],
    pub requests: &'a [Known],
    /// The Airlock user each principal stands for where the connector can
    /// tell (a user's own login), besides the requests' principals.
    pub principals: &'a [(String, UserId)],
}

/// Assesses each holder of one connector, in the order listed.
pub fn assess<'a>(listing: &Listing<'a>, catalog: &'a Catalog) -> Vec<Holding<'a>> {
    let explainer = Explainer::new(listing.requests, listing.listed_at);
    let provisioned: Vec<&Entitlement> = catalog
        .entitlements
        .values()
        .filter(|e| e.connector == listing.connector)
        .collect();
    listing
        .holders
        .iter()
        .map(|holder| {
            let status = match explainer.explain(holder) {
                Explanation::Open(k) => Status::Granted(&k.request),
                Explanation::Lingering(k) => Status::Lingering(&k.request),
                Explanation::UnknownRequest(id) => Status::UnknownRequest(id),
                Explanation::Unmanaged => Status::Standing,
            };
            let user = match status.request() {
                Some(r) => Some(&r.requester),
                None => listing
                    .principals
                    .iter()
                    .find(|(p, _)| *p == holder.principal)
                    .map(|(_, id)| id),
            };
            let entitlements: Vec<&Entitlement> = match &status {
                Status::Granted(r) | Status::Lingering(r) => catalog
                    .entitlements
                    .get(&r.entitlement)
                    .into_iter()
                    .collect(),
                Status::Standing | Status::UnknownRequest(_) => provisioned.clone(),
            };
            let kind = match user {
                Some(id) if catalog.user(id).is_some_and(User::is_service) => HolderKind::Service,
                Some(_) => HolderKind::Person,
                None => HolderKind::Unknown,
            };
            let sensitivity = entitlements
                .iter()
                .map(|e| e.sensitivity)
                .max()
                .unwrap_or_default();
            Holding {
                principal: &holder.principal,
                risk: risk(sensitivity, kind, &status),
                status,
                user,
                kind,
                entitlements,
                sensitivity,
            }
        })
        .collect()
}

/// The risk rule (see the module docs).
pub fn risk(sensitivity: Sensitivity, kind: HolderKind, status: &Status<'_>) -> Risk {
    let granted = i8::from(matches!(status, Status::Granted(_)));
    let unanswered = i8::from(kind == HolderKind::Unknown);
    Sensitivity::from_rank(sensitivity.rank() - granted + unanswered)
}
