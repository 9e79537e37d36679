//! Shared set-up for the node tests.

use std::path::Path;
use std::time::Duration;

use dvn_devnet::nodes::{NodeOptions, NodeSet};
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use dvn_lz::SentPacket;

/// The `dvn` binary cargo built for these tests.
pub fn dvn_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dvn"))
}

/// A devnet plus three configured (not started) nodes; the temp dir holds configs, stores, logs.
pub struct Stand {
    pub devnet: Devnet,
    pub nodes: NodeSet,
    /// Holds configs, stores and logs; removed when the stand drops.
    _dir: tempfile::TempDir,
}

impl Stand {
    pub async fn new(devnet: DevnetConfig, options: NodeOptions) -> Stand {
        Self::with_devnet(Devnet::start(devnet).await.unwrap(), options)
    }

    pub fn with_devnet(devnet: Devnet, options: NodeOptions) -> Stand {
        let dir = tempfile::Builder::new()
            .prefix("dvn-it-")
            .tempdir()
            .unwrap();
        let nodes = NodeSet::configure(&devnet, dvn_binary(), dir.path(), &options).unwrap();
        Stand {
            devnet,
            nodes,
            _dir: dir,
        }
    }

    /// Asserts I1–I3 for `packets` on `direction`, printing node logs on failure.
    pub async fn assert_invariants(
        &self,
        direction: Direction,
        packets: &[SentPacket],
    ) -> dvn_devnet::invariants::Report {
        let report = self
            .devnet
            .check_invariants(direction, packets)
            .await
            .unwrap();
        if !report.holds() {
            self.dump_logs();
            panic!("invariants violated on {direction:?}: {report:?}");
        }
        report
    }

    /// Waits for all packets to become verifiable and delivers them; fails with node logs.
    pub async fn deliver(&self, direction: Direction, packets: &[SentPacket], timeout: Duration) {
        let ok = self
            .devnet
            .deliver_when_verified(direction, packets, timeout)
            .await
            .unwrap();
        if !ok {
            self.dump_logs();
            let report = self
                .devnet
                .check_invariants(direction, packets)
                .await
                .unwrap();
            panic!("packets on {direction:?} not verified within {timeout:?}: {report:?}");
        }
    }

    pub fn dump_logs(&self) {
        for node in &self.nodes.nodes {
            let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("===== {} (last 40 lines) =====", node.region);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
