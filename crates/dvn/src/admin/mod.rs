//! The control plane: the admin API on the operations listener, its tokens and roles, and
//! what every call leaves in the audit log.
//!
//! - [`roles`]: the manual's four roles and the one permission table.
//! - [`token`]: opaque API tokens, kept only as hashes.
//! - [`api`]: `/admin/v1/…` — authenticate, authorise, audit, act.
//! - [`checkpoint`]: signed (sequence, head hash) lines that show a cut audit tail.
//! - [`redact`]: what never reaches the audit log or a response.

pub mod api;
pub mod checkpoint;
pub mod redact;
pub mod roles;
pub mod token;
