//! Airlock's edges around the pure core: configuration, the SQLite store,
//! connectors wiring, the scheduler, the HTTP API (and the accept loop that
//! bounds what a client may hold) and its typed client.

pub mod api;
pub mod checkpoint;
pub mod client;
pub mod config;
pub mod elevation;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod policy;
pub mod serve;
pub mod server;
pub mod signin;
pub mod store;
