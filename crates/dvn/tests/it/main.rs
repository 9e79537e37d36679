//! Integration tests of the `dvn` node: real anvil chains, the real LayerZero V2 contracts, and
//! real `dvn` processes. One test binary (link time on 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod admin_tls;
mod alerts_live;
mod audit;
mod backup;
mod block_lead;
mod catch_up;
mod clock_skew;
mod common;
mod config_check;
mod confirmations;
mod conflux;
mod container;
mod crash;
mod dashboard_schema;
mod decompressor;
mod dependencies;
mod dr_drill;
mod e2e;
mod exactly_once;
mod expiry;
mod foreign;
mod gas_estimates;
mod governor;
mod hostile_peer;
mod hsm_e2e;
mod kms;
mod kms_e2e;
mod lease;
mod new_heads;
mod nonce_gap;
mod ops;
mod ops_tools;
mod partitions;
mod peer_flood;
mod peer_tls;
mod peers_io;
mod pg;
mod pipelined;
mod pkcs11;
mod quorum;
mod rotation;
mod rpc_faults;
mod rpc_quorum;
mod signer_set;
mod source_truth;
mod stack;
mod startup;
mod status_page;
mod store;
mod stuck_tx;
mod turn_race;
mod upgrade;
