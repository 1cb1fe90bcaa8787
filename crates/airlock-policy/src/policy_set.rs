//! Loading policy files: parse every file, give every policy a stable id,
//! read the approval annotations, validate against the shipped schema, and
//! report every problem at once with its file, line and column, so an author
//! fixes a whole change in one round.
//!
//! A loaded [`PolicySet`] is immutable and already pre-sliced by action and
//! entitlement and principal (see [`Slice`]), so deciding never re-reads or re-checks text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use airlock_core::catalog::WaitingTimes;
use airlock_core::text::TextKind;
use airlock_core::time::parse_duration;
use airlock_core::GroupName;
use cedar_policy as cedar;
use miette::Diagnostic;
use sha2::{Digest, Sha256};

/// The Cedar schema every policy is validated against (strict mode).
pub const SCHEMA: &str = include_str!("airlock.cedarschema");

/// File name used when reporting a problem in the shipped schema itself.
const SCHEMA_FILE: &str = "airlock.cedarschema";

/// One problem in a policy file, located for the author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PolicyError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// The five things policies decide, one Cedar action each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// May the principal ask for the entitlement at all?
    Request,
    /// Is the request granted without human approval?
    AutoApprove,
    /// Which approval tiers does it need (one per satisfied permit)?
    RequireApproval,
    /// May the principal approve someone else's request?
    Approve,
    /// May the principal extend their active grant, at once (a permit
    /// without annotations) or with approvals (one tier per satisfied
    /// permit annotated like a `require_approval` one)?
    Extend,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Request,
        Action::AutoApprove,
        Action::RequireApproval,
        Action::Approve,
        Action::Extend,
    ];

    /// The action's id in the schema (`Airlock::Action::"<this>"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::AutoApprove => "auto_approve",
            Action::RequireApproval => "require_approval",
            Action::Approve => "approve",
            Action::Extend => "extend",
        }
    }

    fn index(self) -> usize {
        match self {
            Action::Request => 0,
            Action::AutoApprove => 1,
            Action::RequireApproval => 2,
            Action::Approve => 3,
            Action::Extend => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one satisfied `require_approval` permit asks for, from its
/// `@approvals("N")` and `@approvers("group-a,group-b")` annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TierSpec {
    pub(crate) count: u32,
    pub(crate) groups: BTreeSet<GroupName>,
    /// From `@remind_after`, `@escalate_after` with `@escalate_to`, and
    /// `@pending_timeout`: how long a request this permit routes may wait.
    pub(crate) waiting: WaitingTimes,
}

/// The annotations of a `require_approval` permit that set acceptable
/// waiting times, overriding the entitlement's.
const WAITING_ANNOTATIONS: [&str; 4] = [
    "remind_after",
    "escalate_after",
    "escalate_to",
    "pending_timeout",
];

/// What the loader learnt about one policy.
#[derive(Debug, Clone)]
pub(crate) struct PolicyMeta {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// Actions the policy's scope admits.
    pub(crate) actions: BTreeSet<Action>,
    /// The entitlement named in the resource scope; `None` for any.
    pub(crate) entitlement: Option<String>,
    pub(crate) principal: PrincipalScope,
    pub(crate) tier: Option<TierSpec>,
    /// From `@mfa_max_age("N")` on a `forbid`: the policy refuses callers
    /// whose last MFA is older than N seconds (or unknown), so its refusal
    /// is answered with a step-up challenge rather than a denial.
    pub(crate) mfa_max_age: Option<u64>,
    pub(crate) permit: bool,
    /// The policy's `@reason("...")`: what it demands, in words a requester
    /// can act on; quoted in denials.
    pub(crate) reason: Option<String>,
    /// The policy's `when`/`unless` clauses as written, on one line, for
    /// denials when it has no `@reason`.
    pub(crate) conditions: Option<String>,
}

/// Parsed names of the schema's types and actions, built once per set.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) user: cedar::EntityTypeName,
    pub(crate) group: cedar::EntityTypeName,
    pub(crate) entitlement: cedar::EntityTypeName,
    request: cedar::EntityUid,
    auto_approve: cedar::EntityUid,
    require_approval: cedar::EntityUid,
    approve: cedar::EntityUid,
    extend: cedar::EntityUid,
}

impl Names {
    fn new() -> Result<Names, String> {
        let ty = |name: &str| {
            cedar::EntityTypeName::from_str(name).map_err(|e| format!("`{name}`: {e}"))
        };
        let action = |a: Action| {
            let raw = format!("Airlock::Action::\"{}\"", a.as_str());
            cedar::EntityUid::from_str(&raw).map_err(|e| format!("`{raw}`: {e}"))
        };
        Ok(Names {
            user: ty("Airlock::User")?,
            group: ty("Airlock::Group")?,
            entitlement: ty("Airlock::Entitlement")?,
            request: action(Action::Request)?,
            auto_approve: action(Action::AutoApprove)?,
            require_approval: action(Action::RequireApproval)?,
            approve: action(Action::Approve)?,
            extend: action(Action::Extend)?,
        })
    }

    pub(crate) fn action(&self, action: Action) -> &cedar::EntityUid {
        match action {
            Action::Request => &self.request,
            Action::AutoApprove => &self.auto_approve,
            Action::RequireApproval => &self.require_approval,
            Action::Approve => &self.approve,
            Action::Extend => &self.extend,
        }
    }

    fn action_of(&self, uid: &cedar::EntityUid) -> Option<Action> {
        Action::ALL.into_iter().find(|a| self.action(*a) == uid)
    }

    pub(crate) fn uid(&self, ty: &cedar::EntityTypeName, id: &str) -> cedar::EntityUid {
        cedar::EntityUid::from_type_name_and_id(ty.clone(), cedar::EntityId::new(id))
    }
}

/// Which principals a policy's scope admits, as far as pre-selection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalScope {
    /// Any principal (open, `is User`, or something only Cedar can judge).
    Open,
    /// `principal in Group::"g"`.
    Group(String),
    /// `principal == User::"u"` (or `in User::"u"`, which is the same).
    User(String),
}

impl PrincipalScope {
    /// Whether the scope admits this person (Cedar may still say no).
    pub(crate) fn covers(&self, user: &crate::facts::UserFacts) -> bool {
        match self {
            PrincipalScope::Open => true,
            PrincipalScope::Group(g) => user.groups.iter().any(|mine| mine.as_str() == g),
            PrincipalScope::User(u) => user.id.as_str() == u,
        }
    }

    /// Whom the scope admits, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            PrincipalScope::Open => "anyone".to_owned(),
            PrincipalScope::Group(g) => format!("members of `{g}`"),
            PrincipalScope::User(u) => format!("`{u}` only"),
        }
    }
}

/// The policies of one action and entitlement, split by principal scope.
#[derive(Debug, Clone, Default)]
struct Partition {
    open: Option<cedar::PolicySet>,
    by_group: HashMap<String, cedar::PolicySet>,
    by_user: HashMap<String, cedar::PolicySet>,
}

impl Partition {
    fn build(policies: &[(&cedar::Policy, &PolicyMeta)]) -> Result<Partition, String> {
        let mut open = Vec::new();
        let mut by_group: HashMap<String, Vec<cedar::Policy>> = HashMap::new();
        let mut by_user: HashMap<String, Vec<cedar::Policy>> = HashMap::new();
        for (policy, meta) in policies {
            let policy = (*policy).clone();
            match &meta.principal {
                PrincipalScope::Open => open.push(policy),
                PrincipalScope::Group(g) => by_group.entry(g.clone()).or_default().push(policy),
                PrincipalScope::User(u) => by_user.entry(u.clone()).or_default().push(policy),
            }
        }
        // Ids are unique in the loaded set, so building cannot fail. Should
        // it, loading fails: dropping a set could drop a forbid.
        let set = |p: Vec<cedar::Policy>| {
            cedar::PolicySet::from_policies(p).map_err(|e| format!("internal error: {e}"))
        };
        let sets = |m: HashMap<String, Vec<cedar::Policy>>| {
            m.into_iter()
                .map(|(k, p)| Ok((k, set(p)?)))
                .collect::<Result<HashMap<_, _>, String>>()
        };
        Ok(Partition {
            open: if open.is_empty() {
                None
            } else {
                Some(set(open)?)
            },
            by_group: sets(by_group)?,
            by_user: sets(by_user)?,
        })
    }

    /// The sets whose policies can apply to this principal.
    fn for_principal<'a>(
        &'a self,
        user: &str,
        groups: impl Iterator<Item = &'a str>,
    ) -> Vec<&'a cedar::PolicySet> {
        let mut sets: Vec<&cedar::PolicySet> = self.open.iter().collect();
        sets.extend(self.by_user.get(user));
        sets.extend(groups.filter_map(|g| self.by_group.get(g)));
        sets
    }
}

/// For each action, the policies that can apply to each entitlement and
/// principal.
///
/// Cedar evaluates every policy it is handed, about a microsecond each, so
/// a request is evaluated against only the policies whose scope can match
/// it: those naming its entitlement or any, and naming one of the
/// principal's groups, the principal, or any principal. The answers are
/// merged as Cedar would (allowed iff some permit and no forbid is
/// satisfied). This is sound because neither `Airlock::Entitlement` nor
/// `Airlock::Group` has parents in the schema: `resource in
/// Entitlement::"x"` matches exactly `x`, and `principal in Group::"g"`
/// exactly the members of `g`, which the principal's own entity lists.
#[derive(Debug, Clone, Default)]
struct Slice {
    by_entitlement: HashMap<String, Partition>,
    unscoped: Partition,
}

impl Slice {
    fn build<'a>(
        policies: impl Iterator<Item = (&'a cedar::Policy, &'a PolicyMeta)>,
    ) -> Result<Slice, String> {
        let mut scoped: HashMap<&str, Vec<(&cedar::Policy, &PolicyMeta)>> = HashMap::new();
        let mut unscoped = Vec::new();
        for (policy, meta) in policies {
            match &meta.entitlement {
                Some(e) => scoped.entry(e.as_str()).or_default().push((policy, meta)),
                None => unscoped.push((policy, meta)),
            }
        }
        let by_entitlement = scoped
            .into_iter()
            .map(|(e, mut policies)| {
                policies.extend(unscoped.iter().copied());
                Ok((e.to_owned(), Partition::build(&policies)?))
            })
            .collect::<Result<HashMap<_, _>, String>>()?;
        Ok(Slice {
            by_entitlement,
            unscoped: Partition::build(&unscoped)?,
        })
    }

    fn for_entitlement(&self, entitlement: &str) -> &Partition {
        self.by_entitlement
            .get(entitlement)
            .unwrap_or(&self.unscoped)
    }
}

/// A validated, immutable set of Airlock policies.
#[derive(Debug, Clone)]
pub struct PolicySet {
    version: String,
    pub(crate) all: cedar::PolicySet,
    pub(crate) meta: BTreeMap<String, PolicyMeta>,
    /// One per action, in [`Action::ALL`] order.
    slices: Vec<Slice>,
    warnings: Vec<PolicyError>,
    pub(crate) names: Names,
    pub(crate) authorizer: cedar::Authorizer,
}

/// A policy as parsed from one file, before validation.
struct Parsed {
    id: String,
    policy: cedar::Policy,
    meta: PolicyMeta,
}

impl PolicySet {
    /// Parses and validates policy files, given as `(file name, text)`.
    ///
    /// Every policy gets the id from its `@id("...")` annotation, or
    /// `<file>#<n>` for the n-th policy of the file (counting from 1). Ids must
    /// be unique across all files. Every `permit` that can apply to
    /// `require_approval` must carry `@approvals("N")` (N ≥ 1) and
    /// `@approvers("group-a,group-b")`, and may carry waiting times
    /// (`@remind_after("15m")`, `@escalate_after("1h")` with
    /// `@escalate_to("group,...")`, `@pending_timeout("8h")`); no other
    /// policy may carry any of them. Returns every error found, in file
    /// order.
    pub fn load(sources: &[(String, String)]) -> Result<PolicySet, Vec<PolicyError>> {
        let names = Names::new().map_err(|m| vec![at_start(SCHEMA_FILE, m)])?;
        let schema = parse_schema()?;
        let mut errors = Vec::new();
        let mut parsed: Vec<Parsed> = Vec::new();
        let mut seen_files = BTreeSet::new();
        let mut ids: BTreeMap<String, (String, usize, usize)> = BTreeMap::new();
        for (file, text) in sources {
            if !seen_files.insert(file.as_str()) {
                errors.push(at_start(file, format!("file `{file}` is given twice")));
                continue;
            }
            for item in parse_file(file, text, &names, &mut errors) {
                match ids.get(&item.id) {
                    Some((f, l, c)) => errors.push(PolicyError {
                        file: file.clone(),
                        line: item.meta.line,
                        column: item.meta.column,
                        message: format!("policy id `{}` is already used at {f}:{l}:{c}", item.id),
                    }),
                    None => {
                        ids.insert(
                            item.id.clone(),
                            (file.clone(), item.meta.line, item.meta.column),
                        );
                        parsed.push(item);
                    }
                }
            }
        }

        let mut all = cedar::PolicySet::new();
        let mut meta = BTreeMap::new();
        for item in parsed {
            if let Err(e) = all.add(item.policy) {
                errors.push(PolicyError {
                    file: item.meta.file.clone(),
                    line: item.meta.line,
                    column: item.meta.column,
                    message: format!("policy `{}`: {e}", item.id),
                });
                continue;
            }
            meta.insert(item.id, item.meta);
        }

        let texts: HashMap<&str, &str> = sources
            .iter()
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect();
        let validation =
            cedar::Validator::new(schema.clone()).validate(&all, cedar::ValidationMode::Strict);
        let locate = |id: &cedar::PolicyId, d: &dyn Diagnostic, what: String| {
            let id = id.to_string();
            match meta.get(&id) {
                Some(m) => {
                    let text = texts.get(m.file.as_str()).copied().unwrap_or("");
                    let (line, column) = first_label(d)
                        .map(|offset| line_column(text, offset))
                        .unwrap_or((m.line, m.column));
                    // Cedar's messages usually name the policy already.
                    let message = if what.contains(&format!("`{id}`")) {
                        what
                    } else {
                        format!("policy `{id}`: {what}")
                    };
                    PolicyError {
                        file: m.file.clone(),
                        line,
                        column,
                        message,
                    }
                }
                None => at_start(SCHEMA_FILE, format!("policy `{id}`: {what}")),
            }
        };
        for e in validation.validation_errors() {
            errors.push(locate(e.policy_id(), e, describe(e)));
        }
        let mut warnings: Vec<PolicyError> = validation
            .validation_warnings()
            .map(|w| locate(w.policy_id(), w, describe(w)))
            .collect();

        if !errors.is_empty() {
            let order: HashMap<&str, usize> = sources
                .iter()
                .enumerate()
                .map(|(i, (f, _))| (f.as_str(), i))
                .collect();
            errors.sort_by_key(|e| {
                (
                    order.get(e.file.as_str()).copied().unwrap_or(usize::MAX),
                    e.line,
                    e.column,
                )
            });
            return Err(errors);
        }
        warnings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));

        let slices = Action::ALL
            .into_iter()
            .map(|action| {
                Slice::build(
                    all.policies()
                        .filter_map(|p| meta.get(&p.id().to_string()).map(|m| (p, m)))
                        .filter(|(_, m)| m.actions.contains(&action)),
                )
            })
            .collect::<Result<Vec<Slice>, String>>()
            .map_err(|m| vec![at_start(SCHEMA_FILE, m)])?;
        Ok(PolicySet {
            version: version_of(sources),
            all,
            meta,
            slices,
            warnings,
            names,
            authorizer: cedar::Authorizer::new(),
        })
    }

    /// Hex SHA-256 over the sorted `(file, text)` pairs: names exactly the
    /// policy text a decision was made with, for the audit record.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Things that are legal but probably not meant, e.g. a policy that can
    /// never be satisfied. They do not stop loading.
    pub fn warnings(&self) -> &[PolicyError] {
        &self.warnings
    }

    /// The ids of all policies, sorted.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.meta.keys().map(String::as_str)
    }

    /// Where a policy is defined, as `(file, line, column)`.
    pub fn location(&self, policy: &str) -> Option<(&str, usize, usize)> {
        self.meta
            .get(policy)
            .map(|m| (m.file.as_str(), m.line, m.column))
    }

    /// The ids of policies that name `entitlement` in their resource scope,
    /// sorted.
    pub fn policies_scoped_to(&self, entitlement: &str) -> Vec<String> {
        self.meta
            .iter()
            .filter(|(_, m)| m.entitlement.as_deref() == Some(entitlement))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The policy sets Cedar must evaluate for `action` by `user` (a member
    /// of `groups`) on `entitlement`; see [`Slice`].
    pub(crate) fn slice<'a>(
        &'a self,
        action: Action,
        entitlement: &str,
        user: &str,
        groups: impl Iterator<Item = &'a str>,
    ) -> Vec<&'a cedar::PolicySet> {
        match self.slices.get(action.index()) {
            Some(slice) => slice
                .for_entitlement(entitlement)
                .for_principal(user, groups),
            // `Action::index` is below 5 by construction; should that ever
            // break, evaluating everything is slow but still right.
            None => vec![&self.all],
        }
    }
}

pub(crate) fn parse_schema() -> Result<cedar::Schema, Vec<PolicyError>> {
    match cedar::Schema::from_cedarschema_str(SCHEMA) {
        Ok((schema, _warnings)) => Ok(schema),
        Err(e) => {
            let (line, column) = first_label(&e)
                .map(|o| line_column(SCHEMA, o))
                .unwrap_or((1, 1));
            Err(vec![PolicyError {
                file: SCHEMA_FILE.to_owned(),
                line,
                column,
                message: describe(&e),
            }])
        }
    }
}

/// Parses one file into policies with their final ids and metadata; syntax
/// and annotation problems go to `errors`.
fn parse_file(file: &str, text: &str, names: &Names, errors: &mut Vec<PolicyError>) -> Vec<Parsed> {
    let set = match cedar::PolicySet::from_str(text) {
        Ok(set) => set,
        Err(parse_errors) => {
            for e in parse_errors.iter() {
                let (line, column) = first_label(e)
                    .map(|o| line_column(text, o))
                    .unwrap_or((1, 1));
                errors.push(PolicyError {
                    file: file.to_owned(),
                    line,
                    column,
                    message: describe(e),
                });
            }
            return Vec::new();
        }
    };
    for template in set.templates() {
        let offset = text.find(&template.to_cedar()).unwrap_or(0);
        let (line, column) = line_column(text, offset);
        errors.push(PolicyError {
            file: file.to_owned(),
            line,
            column,
            message: "templates (`?principal`, `?resource`) are not supported; name the principal and resource".to_owned(),
        });
    }

    // The parser numbers policies and templates `policy0`, `policy1`, ... in
    // file order; `<file>#<n>` keeps that position, counting from 1.
    let mut policies: Vec<(usize, &cedar::Policy)> = set
        .policies()
        .map(|p| {
            let n = p
                .id()
                .to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .map_or(usize::MAX, |n| n.saturating_add(1));
            (n, p)
        })
        .collect();
    policies.sort_by_key(|(n, _)| *n);

    let mut out = Vec::new();
    let mut search_from = 0;
    for (ordinal, policy) in policies {
        // Each policy's text is a verbatim slice of the file, and they come
        // in order, so searching forward finds where each one starts.
        let own_text = policy.to_cedar().unwrap_or_default();
        let start = text
            .get(search_from..)
            .and_then(|rest| rest.find(&own_text))
            .map_or(search_from, |i| search_from + i);
        search_from = start + own_text.len();
        let (line, column) = line_column(text, start);
        let error_at = |needle: &str, message: String| {
            let offset = own_text.find(needle).map_or(start, |i| start + i);
            let (line, column) = line_column(text, offset);
            PolicyError {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        };

        let id = match policy.annotation("id") {
            Some(id) if !id.trim().is_empty() => id.to_owned(),
            Some(_) => {
                errors.push(error_at("@id", "`@id` must not be empty".to_owned()));
                continue;
            }
            None => format!("{file}#{ordinal}"),
        };
        let actions: BTreeSet<Action> = match policy.action_constraint() {
            cedar::ActionConstraint::Any => Action::ALL.into_iter().collect(),
            cedar::ActionConstraint::Eq(uid) => names.action_of(&uid).into_iter().collect(),
            cedar::ActionConstraint::In(uids) => {
                uids.iter().filter_map(|u| names.action_of(u)).collect()
            }
        };
        let entitlement = match policy.resource_constraint() {
            cedar::ResourceConstraint::Eq(uid)
            | cedar::ResourceConstraint::In(uid)
            | cedar::ResourceConstraint::IsIn(_, uid)
                if uid.type_name() == &names.entitlement =>
            {
                Some(uid.id().unescaped().to_owned())
            }
            // Anything else (open, `is`, or a uid of another type, which the
            // validator rejects) is evaluated for every entitlement.
            _ => None,
        };
        let principal = match policy.principal_constraint() {
            cedar::PrincipalConstraint::In(uid) | cedar::PrincipalConstraint::IsIn(_, uid)
                if uid.type_name() == &names.group =>
            {
                PrincipalScope::Group(uid.id().unescaped().to_owned())
            }
            cedar::PrincipalConstraint::Eq(uid)
            | cedar::PrincipalConstraint::In(uid)
            | cedar::PrincipalConstraint::IsIn(_, uid)
                if uid.type_name() == &names.user =>
            {
                PrincipalScope::User(uid.id().unescaped().to_owned())
            }
            _ => PrincipalScope::Open,
        };
        let effect = policy.effect();
        let needs_tier =
            effect == cedar::Effect::Permit && actions.contains(&Action::RequireApproval);
        let approvals = policy.annotation("approvals");
        let approvers = policy.annotation("approvers");
        // Waiting times belong to the routes of requests.
        if !needs_tier {
            if let Some(name) = WAITING_ANNOTATIONS
                .into_iter()
                .find(|a| policy.annotation(a).is_some())
            {
                errors.push(error_at(
                    &format!("@{name}"),
                    format!("policy `{id}`: `@{name}` only applies to a `permit` for `Airlock::Action::\"require_approval\"`"),
                ));
                continue;
            }
        }
        // An `extend` permit may carry a tier (the extension needs
        // approvals) or not (it is granted at once).
        let may_tier = effect == cedar::Effect::Permit
            && actions.contains(&Action::Extend)
            && (approvals.is_some() || approvers.is_some());
        let tier = if needs_tier || may_tier {
            let what = if needs_tier {
                "a `require_approval` permit"
            } else {
                "an `extend` permit that needs approvals"
            };
            let spec = tier_spec(approvals, approvers, what).and_then(|tier| {
                let waiting = if needs_tier {
                    waiting_spec(|a| policy.annotation(a))?
                } else {
                    WaitingTimes::default()
                };
                Ok(TierSpec { waiting, ..tier })
            });
            match spec {
                Ok(tier) => Some(tier),
                Err((needle, why)) => {
                    errors.push(error_at(needle, format!("policy `{id}`: {why}")));
                    continue;
                }
            }
        } else {
            if approvals.is_some() || approvers.is_some() {
                let needle = if approvals.is_some() {
                    "@approvals"
                } else {
                    "@approvers"
                };
                errors.push(error_at(
                    needle,
                    format!("policy `{id}`: `@approvals` and `@approvers` only apply to a `permit` for `Airlock::Action::\"require_approval\"` or `Airlock::Action::\"extend\"`"),
                ));
                continue;
            }
            None
        };
        let mfa_max_age = match mfa_max_age(policy.annotation("mfa_max_age"), effect) {
            Ok(age) => age,
            Err(why) => {
                errors.push(error_at("@mfa_max_age", format!("policy `{id}`: {why}")));
                continue;
            }
        };
        let reason = match policy.annotation("reason").map(str::trim) {
            None => None,
            Some(reason) => {
                match airlock_core::text::check(reason, TextKind::Line, MAX_REASON_CHARS) {
                    Ok(()) if !reason.is_empty() => Some(reason.to_owned()),
                    Ok(()) => {
                        errors.push(error_at(
                            "@reason",
                            format!("policy `{id}`: `@reason` must not be empty"),
                        ));
                        continue;
                    }
                    Err(e) => {
                        errors.push(error_at(
                            "@reason",
                            format!("policy `{id}`: `@reason`: {e}"),
                        ));
                        continue;
                    }
                }
            }
        };
        out.push(Parsed {
            policy: policy.new_id(cedar::PolicyId::new(&id)),
            id,
            meta: PolicyMeta {
                file: file.to_owned(),
                line,
                column,
                actions,
                entitlement,
                principal,
                tier,
                mfa_max_age,
                permit: effect == cedar::Effect::Permit,
                reason,
                conditions: conditions_of(&own_text),
            },
        });
    }
    out
}

/// Reads `@mfa_max_age("N")`: whole seconds, on a `forbid` only (it says
/// why that forbid refuses, which is what a step-up challenge answers).
fn mfa_max_age(raw: Option<&str>, effect: cedar::Effect) -> Result<Option<u64>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if effect != cedar::Effect::Forbid {
        return Err(
            "`@mfa_max_age` only applies to a `forbid` (the one that refuses stale MFA)".to_owned(),
        );
    }
    match raw.trim().parse::<u64>() {
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(format!(
            "`@mfa_max_age` must be a whole number of seconds, not `{raw}`"
        )),
    }
}

/// The longest `@reason` a policy may carry, in characters.
const MAX_REASON_CHARS: usize = 300;

/// The `when`/`unless` clauses of a policy's text, comments dropped and
/// whitespace collapsed to one line; `None` for a policy without any.
fn conditions_of(policy_text: &str) -> Option<String> {
    let code = without_comments(policy_text);
    let clauses = code.get(scope_end(&code)?..)?.trim().trim_end_matches(';');
    let one_line = clauses.split_whitespace().collect::<Vec<_>>().join(" ");
    (!one_line.is_empty()).then_some(one_line)
}

/// Cedar source with its `//` comments removed (string literals kept whole).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '/' && chars.peek() == Some(&'/') {
            for skipped in chars.by_ref() {
                if skipped == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// Where the scope of a comment-free policy ends: just past the `)` that
/// closes the parentheses after `permit` or `forbid` (annotations before
/// it have parentheses of their own; strings may hold any).
fn scope_end(code: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_scope = false;
    for (i, c) in code.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => {
                if depth == 0 {
                    let head = code.get(..i).unwrap_or("").trim_end();
                    in_scope = head.ends_with("permit") || head.ends_with("forbid");
                }
                depth += 1;
            }
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 && in_scope {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Reads a tier from its annotations; on failure says which annotation is
/// at fault and why.
fn tier_spec(
    approvals: Option<&str>,
    approvers: Option<&str>,
    what: &str,
) -> Result<TierSpec, (&'static str, String)> {
    let (Some(approvals), Some(approvers)) = (approvals, approvers) else {
        return Err((
            "permit",
            format!("{what} needs `@approvals(\"N\")` and `@approvers(\"group,...\")`"),
        ));
    };
    let count = match approvals.trim().parse::<u32>() {
        Ok(0) => {
            return Err((
                "@approvals",
                "`@approvals` must be at least 1 (a route that needs nobody is `auto_approve`)"
                    .to_owned(),
            ))
        }
        Ok(n) => n,
        Err(_) => {
            return Err((
                "@approvals",
                format!("`@approvals` must be a whole number, not `{approvals}`"),
            ))
        }
    };
    let mut groups = BTreeSet::new();
    for raw in approvers.split(',').map(str::trim) {
        match GroupName::parse(raw) {
            Ok(g) => {
                groups.insert(g);
            }
            Err(e) => {
                return Err((
                    "@approvers",
                    format!(
                        "`@approvers` lists group `{raw}`, which is not a valid group name: {e}"
                    ),
                ))
            }
        }
    }
    Ok(TierSpec {
        count,
        groups,
        waiting: WaitingTimes::default(),
    })
}

/// Reads a routing permit's waiting-time annotations; on failure says
/// which is at fault and why.
fn waiting_spec<'a>(
    annotation: impl Fn(&str) -> Option<&'a str>,
) -> Result<WaitingTimes, (&'static str, String)> {
    let duration = |name: &'static str, needle: &'static str| {
        annotation(name)
            .map(|raw| match parse_duration(raw) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err((needle, format!("`@{name}` must be more than 0s"))),
                Err(e) => Err((needle, format!("`@{name}`: {e}"))),
            })
            .transpose()
    };
    let escalate_after = duration("escalate_after", "@escalate_after")?;
    let mut escalate_to = BTreeSet::new();
    for raw in annotation("escalate_to")
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
    {
        let group = GroupName::parse(raw).map_err(|e| {
            (
                "@escalate_to",
                format!("`@escalate_to` lists group `{raw}`, which is not a valid group name: {e}"),
            )
        })?;
        escalate_to.insert(group);
    }
    match (escalate_after.is_some(), escalate_to.is_empty()) {
        (true, true) => {
            return Err((
                "@escalate_after",
                "`@escalate_after` needs `@escalate_to(\"group,...\")`: whom to escalate to"
                    .to_owned(),
            ))
        }
        (false, false) => {
            return Err((
                "@escalate_to",
                "`@escalate_to` needs `@escalate_after(\"1h\")`: when to escalate".to_owned(),
            ))
        }
        _ => {}
    }
    Ok(WaitingTimes {
        remind_after: duration("remind_after", "@remind_after")?,
        escalate_after,
        escalate_to,
        timeout: duration("pending_timeout", "@pending_timeout")?,
    })
}

/// The error's message, with its label and help when they add something.
fn describe(d: &(impl Diagnostic + ?Sized)) -> String {
    let mut message = d.to_string();
    if let Some(label) = d
        .labels()
        .and_then(|mut labels| labels.next())
        .and_then(|l| l.label().map(str::to_owned))
    {
        if !label.is_empty() && !message.contains(&label) {
            message.push_str("; ");
            message.push_str(&label);
        }
    }
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    message
}

fn first_label(d: &(impl Diagnostic + ?Sized)) -> Option<usize> {
    d.labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset())
}

fn at_start(file: &str, message: String) -> PolicyError {
    PolicyError {
        file: file.to_owned(),
        line: 1,
        column: 1,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let before = text.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Length-prefixed so that no two different source lists hash alike. Only
/// each source's file name counts, not the folder it was read from: the
/// server, `check-config` and `policy validate` name the same files by
/// different paths, and must agree on the version of the same set.
fn version_of(sources: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = sources
        .iter()
        .map(|(label, text)| (file_name(label), text.as_str()))
        .collect();
    sorted.sort_unstable();
    let mut hasher = Sha256::new();
    for (file, text) in sorted {
        for part in [file, text] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

/// The part of a source label after its last `/`.
fn file_name(label: &str) -> &str {
    label.rsplit('/').next().unwrap_or(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 3));
        // Past the é (2 bytes) the column counts it once.
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 100), (3, 2));
    }

    #[test]
    fn version_depends_on_content_not_order() {
        let a = ("a.cedar".to_owned(), "x".to_owned());
        let b = ("b.cedar".to_owned(), "y".to_owned());
        assert_eq!(
            version_of(&[a.clone(), b.clone()]),
            version_of(&[b.clone(), a.clone()])
        );
        let shifted = [("a.cedarx".to_owned(), String::new()), b.clone()];
        assert_ne!(version_of(&[a.clone(), b.clone()]), version_of(&shifted));
        // The folder the files were read from does not count; their names do.
        let elsewhere = [
            ("/srv/airlock/policies/a.cedar".to_owned(), "x".to_owned()),
            ("./policies/b.cedar".to_owned(), "y".to_owned()),
        ];
        assert_eq!(version_of(&[a.clone(), b.clone()]), version_of(&elsewhere));
        let renamed = [("c.cedar".to_owned(), "x".to_owned()), b];
        assert_ne!(version_of(&[a, renamed[1].clone()]), version_of(&renamed));
    }

    #[test]
    fn the_shipped_schema_parses() {
        assert!(parse_schema().is_ok());
    }
}
