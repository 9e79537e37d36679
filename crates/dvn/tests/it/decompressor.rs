//! Submission through LayerZero's `DVNDecompressor` (`chains[].decompressor`): each region
//! sends its compact `execute` through a decompressor of its own (owned by its submitter,
//! holding `ADMIN_ROLE` on the DVN) on both chains; every packet is verified exactly once and
//! by those transactions. A decompressor the region does not own, or one that is not an admin
//! of the DVN, is refused at start with what is wrong.

use std::collections::HashSet;

use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::contracts::IReceiveUln302;
use serde_json::json;

use crate::common::{refusal_log, Stand};

/// The recipients of the transactions that carried our DVN's verifications on `direction`.
async fn verifying_transactions_sent_to(stand: &Stand, direction: Direction) -> HashSet<Address> {
    let (_, dst) = stand.devnet.sides(direction);
    let logs = dst
        .chain
        .logs(
            dst.contracts.receive_lib,
            IReceiveUln302::PayloadVerified::SIGNATURE_HASH,
        )
        .await
        .unwrap();
    let mut to = HashSet::new();
    for log in logs {
        let event = IReceiveUln302::PayloadVerified::decode_log_data(&log.inner.data).unwrap();
        if event.dvn != dst.contracts.dvn {
            continue;
        }
        let tx = dst
            .chain
            .provider
            .get_transaction_by_hash(log.transaction_hash.unwrap())
            .await
            .unwrap()
            .unwrap();
        to.insert(alloy::consensus::Transaction::to(&tx).unwrap());
    }
    to
}

/// A devnet with a decompressor per region on both chains, nodes configured to use theirs.
async fn stand_with_decompressors() -> Stand {
    let devnet = DevnetConfig {
        decompressors: true,
        ..DevnetConfig::default()
    };
    let options = NodeOptions {
        decompressor: true,
        ..NodeOptions::default()
    };
    Stand::new(devnet, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_verified_through_each_regions_decompressor_exactly_once() {
    let mut stand = stand_with_decompressors().await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    stand.round_trip_both_ways(12).await;
    for direction in [Direction::AToB, Direction::BToA] {
        let (_, dst) = stand.devnet.sides(direction);
        let ours: HashSet<Address> = dst.contracts.decompressors.iter().copied().collect();
        let to = verifying_transactions_sent_to(&stand, direction).await;
        assert!(!to.is_empty());
        assert!(
            to.is_subset(&ours),
            "{direction:?}: verifications came from {to:?}, not only the decompressors {ours:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompressor_the_region_may_not_use_is_refused_at_start() {
    let mut stand = stand_with_decompressors().await;
    let aliyuns = stand.devnet.a.contracts.decompressors[1];
    let original = std::fs::read_to_string(&stand.nodes.nodes[0].config_path).unwrap();
    // Another region's decompressor: only its owner may call it.
    let node = &mut stand.nodes.nodes[0];
    node.edit_config(|c| {
        c["chains"][0]["decompressor"] = json!({ "address": aliyuns.to_string() })
    })
    .unwrap();
    let log = refusal_log(node).await;
    assert!(
        log.contains(&format!("the decompressor {aliyuns} is owned by")),
        "{log}"
    );
    // Its own, but pointed at a target index the decompressor does not hold.
    std::fs::write(&node.config_path, &original).unwrap();
    node.edit_config(|c| c["chains"][0]["decompressor"]["target_index"] = json!(7))
        .unwrap();
    let log = refusal_log(node).await;
    assert!(log.contains("at target_index 7, not receive_uln"), "{log}");
    // Its own, after another admin revoked the decompressor's ADMIN_ROLE on the DVN.
    std::fs::write(&node.config_path, &original).unwrap();
    let ours = stand.devnet.a.contracts.decompressors[0];
    let admin = stand.devnet.a.roles.dvn_admins[2];
    stand
        .devnet
        .a
        .chain
        .send(
            admin,
            stand.devnet.a.contracts.dvn,
            &dvn_lz::contracts::IDVN::revokeRoleCall {
                role: dvn_lz::contracts::ADMIN_ROLE,
                account: ours,
            },
            alloy::primitives::U256::ZERO,
        )
        .await
        .unwrap();
    let log = refusal_log(&mut stand.nodes.nodes[0]).await;
    assert!(
        log.contains(&format!(
            "{ours} (the submitter, or the decompressor it sends through) lacks ADMIN_ROLE"
        )),
        "{log}"
    );
}
