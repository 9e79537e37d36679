//! Exchanging signatures with the other regions over HTTP.
//!
//! Trust nothing: a peer's signature counts only after it recovers — over the hash this node
//! built from its *own* observation — to a member of the destination DVN's on-chain signer set.
//! A peer can neither make this node sign anything nor get a signature over other data counted.
//! Pushes for a hash this node does not know yet are declined (not stored), which bounds what a
//! peer can make us store; the aggregator pulls what it is missing instead.

pub mod client;
pub mod listener;
pub mod protocol;
pub mod server;
