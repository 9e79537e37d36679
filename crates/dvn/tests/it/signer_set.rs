//! Issue 10 §6: the destination DVN's quorum changes on chain (by its own multisig) while
//! the nodes run. They follow it — a param packed for the old quorum would be skipped by
//! `execute` without a trace — and keep verifying, each packet once. Another admin revokes a
//! region's `ADMIN_ROLE`: that region stops submitting there (no packet retried away), the
//! others take its turns; granted again, it is followed back.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::sol;
use alloy::sol_types::SolCall;
use dvn_devnet::nodes::{NodeOptions, REGIONS};
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::{SignatureSet, UnsignedParam};

use crate::common::{metric_until, set_admin_role, Stand};
use crate::e2e::TIMEOUT;

sol! {
    interface IDvnSelf {
        function setQuorum(uint64 _quorum) external;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_raised_on_chain_is_followed_without_losing_a_packet() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let before = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &before, TIMEOUT).await;

    // The DVN on B raises its quorum to 3 through itself: a setQuorum param signed by the
    // current quorum (2 of 3), executed by a region's admin.
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let expiration = dst.chain.timestamp().await.unwrap() + 3_600;
    let unsigned = UnsignedParam {
        vid: dst.vid,
        target: dst.contracts.dvn,
        call_data: IDvnSelf::setQuorumCall { _quorum: 3 }.abi_encode().into(),
        expiration: U256::from(expiration),
    };
    let mut set = SignatureSet::new(unsigned.call_hash());
    let signers: Vec<_> = stand.devnet.signers.iter().map(|s| s.address()).collect();
    for sig in stand.devnet.sign(&unsigned, &[0, 1]).unwrap() {
        set.insert(sig, &signers).unwrap();
    }
    let param = unsigned.into_param(set.pack(2).unwrap());
    stand
        .devnet
        .execute(Direction::AToB, 0, vec![param])
        .await
        .unwrap();
    let quorum = dst
        .chain
        .call(dst.contracts.dvn, &dvn_lz::contracts::IDVN::quorumCall {})
        .await
        .unwrap();
    assert_eq!(quorum, 3, "the quorum changed on chain");

    // Packets sent now need all three signatures; the nodes follow the change.
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &after, TIMEOUT).await;
    let all: Vec<_> = before.into_iter().chain(after).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
    // The region that submitted saw the failed signature check and re-read the set at once.
    let logged = stand.nodes.nodes.iter().any(|node| {
        std::fs::read_to_string(&node.log_path)
            .unwrap()
            .contains("signer set or quorum changed on chain")
    });
    assert!(logged, "the change is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_role_is_followed_and_costs_no_packet() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, dst) = stand.devnet.sides(Direction::AToB);

    // The region the current rotation slot designates loses ADMIN_ROLE on B (revoked by
    // another admin), then a burst is sent in that slot: its execute would revert, so it finds
    // the role gone and leaves its turn to the others. No clock is moved: a slot with at
    // least 15 s left is waited for, so the burst lands in it.
    let slot_left = || async {
        let now = src.chain.timestamp().await.ok()?;
        (60 - now % 60 >= 15).then_some(now)
    };
    let now = eventually(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let _ = src.chain.keep_up_with_wall_clock().await;
            slot_left().await
        },
    )
    .await
    .expect("a slot with time left");
    let regions = ["aliyun", "aws", "gcp"];
    let victim_name = regions[dvn::pipeline::turns::designated(now + 1, 3)];
    let victim = REGIONS.iter().position(|r| *r == victim_name).unwrap();
    let admin = (victim + 1) % 3;
    let (victim_submitter, other_admin) =
        (dst.roles.dvn_admins[victim], dst.roles.dvn_admins[admin]);
    set_admin_role(dst, other_admin, victim_submitter, false).await;
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let node = &stand.nodes.nodes[victim];
    let followed = metric_until(
        node,
        "dvn_submitter_is_admin",
        &["chain=\"conflux-espace\""],
        |v| v == 0.0,
    )
    .await;
    assert!(followed, "{victim_name} noticed it lost ADMIN_ROLE");
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
    let invalid = crate::common::labelled_metric(node, "dvn_packets", &["state=\"invalid\""]).await;
    assert_eq!(invalid, 0.0, "no packet retried away on {victim_name}");
    let sent = node.metric_sum("dvn_submissions_total").await.unwrap();
    assert_eq!(sent, 0.0, "{victim_name} sent nothing without the role");

    // The role granted back: followed by the periodic re-read.
    set_admin_role(dst, other_admin, victim_submitter, true).await;
    let back = metric_until(
        node,
        "dvn_submitter_is_admin",
        &["chain=\"conflux-espace\""],
        |v| v == 1.0,
    )
    .await;
    assert!(back, "{victim_name} noticed ADMIN_ROLE back");
}
