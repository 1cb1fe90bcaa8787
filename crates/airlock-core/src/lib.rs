//! Airlock's pure domain: who may ask for what, how a request moves through its
//! lifecycle, and how audit events chain together.
//!
//! Nothing in this crate performs IO, reads a clock, spawns a task or generates
//! randomness: time (`now`), identifiers and facts (directory, catalog) are
//! passed in, and decisions come back as values for the shell to carry out.

pub mod access;
pub mod access_review;
pub mod activity;
pub mod approval;
pub mod audit;
pub mod catalog;
pub mod directory;
pub mod drift;
pub mod elevation;
pub mod idle;
pub mod ids;
pub mod notify;
pub mod policy_change;
pub mod request;
pub mod ssh_activity;
pub mod ssh_session;
pub mod standing;
pub mod text;
pub mod ticket;
pub mod time;
pub mod token;
pub mod usage;
pub mod waits;

pub use ids::{CampaignId, EntitlementId, GroupName, IdError, RequestId, TokenId, UserId};
pub use time::Timestamp;
