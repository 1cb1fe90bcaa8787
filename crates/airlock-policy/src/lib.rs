//! Airlock's access rules as Cedar policies: who may request, approve and
//! auto-approve which entitlement, and under which conditions.
//!
//! Pure: no IO, no clock. The shell reads the policy files and hands their
//! text to [`PolicySet::load`]; it computes clock-derived facts (start
//! hour and weekday, MFA age) and hands them in as [`RequestFacts`].
//!
//! # How a request is decided ([`PolicySet::decide`])
//!
//! 1. `Airlock::Action::"request"`: if no permit matches, or any forbid
//!    does, the request is [`Decision::Denied`] (naming the forbids, or
//!    "no policy permits").
//! 2. A break-glass ask (`context.break_glass`) that got this far is
//!    [`Decision::BreakGlass`]: it waits for nobody, and the steps below do
//!    not apply (the entitlement's review afterwards takes their place).
//!    Forbids on `request` are how policies keep break-glass from someone.
//! 3. `auto_approve`: if permitted, [`Decision::AutoApproved`].
//! 4. `require_approval`: every matching permit adds one [`Tier`] from its
//!    `@approvals("N")` and `@approvers("group-a,group-b")` annotations, and
//!    the request needs all of them ([`Decision::NeedsApprovals`]). If none
//!    matches, it is denied with "no approval route".
//!
//! Errors fail closed: an erroring policy never permits, an erroring forbid
//! counts as forbidding, and an erroring `require_approval` permit denies.
//!
//! # How an extension is decided ([`PolicySet::decide_extension`])
//!
//! `Airlock::Action::"extend"`, with the request's context plus
//! `extension_seconds` and `total_seconds`: no permit (or a forbid) denies;
//! a satisfied permit without annotations grants it at once; otherwise each
//! satisfied permit annotated like a `require_approval` one adds a tier.
//!
//! [`PolicySet::may_approve`] evaluates `approve` with the requester in
//! `context.requester`; the requester can never approve their own request,
//! whatever the policies say.
//!
//! The schema is [`SCHEMA`] (`src/airlock.cedarschema`); policy tests are
//! described in [`testing`].

mod analysis;
mod decide;
mod facts;
mod policy_set;
pub mod testing;

pub use analysis::{
    diff, Capability, Change, Direction, MayApprove, MayRequest, Route, WhoCan, ANY_REQUESTER,
};
pub use decide::{ApproveDecision, Decision, DenyReason, EvalError, Tier};
pub use facts::{
    Directory, EntitlementFacts, ExtensionFacts, RequestContext, RequestFacts, StartTime,
    UserFacts, Weekday,
};
pub use policy_set::{Action, PolicyError, PolicySet, SCHEMA};
pub use testing::{run_tests, CaseResult, TestReport};
