//! `dvn`: a LayerZero V2 DVN node.
//!
//! - [`config`]: the YAML configuration, env overrides and the one validator.
//! - [`chain`]: JSON-RPC access with threshold agreement across endpoints (fail closed).
//! - [`store`]: the durable state (SQLite or PostgreSQL).
//! - [`signer`]: the signing keys behind one interface.
//! - [`pipeline`]: watch → confirm/check → sign → aggregate → submit → settle.
//! - [`peer`]: the signature exchange between regions.
//! - [`lease`]: the optional Redis lease that picks one submitting replica per region.
//! - [`admin`]: the admin API, its tokens and roles, and the audit trail of every call.
//! - [`backup`]: `dvn backup` / `dvn restore` archives with a checked manifest.
//! - [`api`]: health, readiness, metrics and the peer API over HTTP.
//! - [`tls`]: mutual TLS between regions, and issuing the certificates.
//! - [`node`]: start-up checks and task supervision.

pub mod admin;
pub mod api;
pub mod backup;
pub mod chain;
pub mod cli;
pub mod config;
pub mod heads;
pub mod health;
pub mod lease;
pub mod logs;
pub mod node;
pub mod ops;
pub mod peer;
pub mod pipeline;
pub mod signer;
pub mod store;
pub mod telemetry;
pub mod tls;
