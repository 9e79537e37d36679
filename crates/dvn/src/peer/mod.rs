//! Exchanging signatures with the other regions over HTTP.
//!
//! Trust nothing: a peer's signature counts only after it recovers — over the hash this node
//! built from its *own* observation — to a member of the destination DVN's on-chain signer set.
//! A peer can neither make this node sign anything nor get a signature over other data counted.
//! Pushes for a hash this node does not know yet are not stored: one that recovers to an
//! on-chain signer is held in memory, bounded ([`early`]), until this node signs that param;
//! anything else is declined. The aggregator pulls what it is missing.

pub mod client;
pub mod early;
pub mod listener;
pub mod protocol;
pub mod server;
