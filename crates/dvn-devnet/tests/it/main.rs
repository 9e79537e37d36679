//! Integration tests of the devnet harness and the protocol core against the real LayerZero V2
//! contracts on two anvil chains. One test binary (link time on 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abi;
mod cleanup;
mod delivery;
mod golden;
mod negative;
