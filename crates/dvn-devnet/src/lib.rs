//! A local two-chain LayerZero V2 devnet for tests, the demo and benchmarks.
//!
//! Runs two anvil processes (from the pinned npm package) on 127.0.0.1 and deploys the real
//! LayerZero V2 contracts from their npm artifacts — never a mock of the protocol. Every child
//! process is owned by a value and stopped when it drops, also on panic.
//!
//! - [`artifacts`]: finds the pinned npm packages and reads bytecode and ABIs.
//! - [`chain`]: one anvil chain and typed `send`/`call`/`deploy` helpers.
//! - [`deploy`]: the deploy-and-wire recipe for one side.
//! - [`devnet`]: both sides, plus user / DVN / executor actions.
//! - [`invariants`]: no loss / no duplicate / no forgery, read from the chains.
//! - [`load`]: steady offered load and per-packet latency, for the benchmark.
//! - [`kms`]: local stand-ins for AWS (patched moto), GCP and Aliyun KMS.
//! - [`nodes`]: three real `dvn` node processes configured against a devnet.
//! - [`objstore`]: S3 (moto) and GCS (fake-gcs-server) on 127.0.0.1 for the backup tests.
//! - [`proxy`]: a switchable JSON-RPC forwarding proxy, to play a failing provider.
//! - [`wait`]: condition waits with a deadline (no fixed sleeps).

pub mod artifacts;
pub mod chain;
pub mod contracts;
pub mod deploy;
pub mod devnet;
pub mod invariants;
pub mod kms;
pub mod load;
pub mod nodes;
pub mod objstore;
pub mod proxy;
pub mod softhsm;
pub mod wait;

pub use chain::{Chain, ChainError, Mining};
pub use devnet::{Devnet, DevnetConfig, Direction, Side};
