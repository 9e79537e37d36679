//! Scenario 4: with the receive side asking for 5 confirmations (a per-OApp override on the
//! destination), nothing is verified before the 5th; then it is, with 5. And the send side's
//! confirmations in force at the send block still count after the OApp lowers them.

use std::time::Duration;

use alloy::primitives::U256;
use dvn_devnet::deploy::{set_receive_uln_config, set_send_uln_config, uln_config};
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_verified_before_the_receive_side_confirmations() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let devnet = &stand.devnet;
    let (src, dst) = devnet.sides(Direction::AToB);
    // Default configs ask for 1; the OApp on B overrides its receive side to 5.
    set_receive_uln_config(
        &dst.chain,
        dst.roles.deployer,
        &dst.contracts,
        dst.contracts.counter,
        src.eid,
        uln_config(5, vec![dst.contracts.dvn]),
    )
    .await
    .unwrap();
    let (packets, sent_at) = start_and_send_one(&mut stand).await;
    let (src, _) = stand.devnet.sides(Direction::AToB);

    // Depth 4: three more blocks after the send's.
    src.chain.mine(3).await.unwrap();
    confirm_stages_saw(&stand, sent_at + 3).await;
    assert_eq!(
        stand.nodes.metric_sum("dvn_packets_signed_total").await,
        0.0,
        "nobody signed at depth 4"
    );
    let report = stand
        .devnet
        .check_invariants(Direction::AToB, &packets)
        .await
        .unwrap();
    assert_eq!(report.unverified.len(), 1);

    // The 5th confirmation.
    src.chain.mine(1).await.unwrap();
    verified_once_with_5(
        &stand,
        &packets,
        "verified with the overriding 5, not the default 1",
    )
    .await;
}

/// Waits until every node's confirm stage has evaluated its packets at source head `head`.
async fn confirm_stages_saw(stand: &Stand, head: u64) {
    for node in &stand.nodes.nodes {
        let seen = eventually(TIMEOUT, Duration::from_millis(50), || async {
            let text = node.metrics().await?;
            let at = text
                .lines()
                .find(|l| l.starts_with("dvn_confirm_head{chain=\"ethereum\"}"))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()?;
            (at >= head as f64).then_some(())
        })
        .await;
        assert!(seen.is_some(), "{} evaluated head {head}", node.region);
    }
}

/// Sets the send side's ULN config of chain A's counter OApp towards B (its delegate, the
/// deployer, calls `EndpointV2.setConfig`): one block on A.
async fn set_send_confirmations(stand: &Stand, confirmations: u64) {
    let (src, dst) = stand.devnet.sides(Direction::AToB);
    set_send_uln_config(
        &src.chain,
        src.roles.deployer,
        &src.contracts,
        src.contracts.counter,
        dst.eid,
        uln_config(confirmations, vec![src.contracts.dvn]),
    )
    .await
    .unwrap();
}

/// The sending OApp asks for 5 confirmations on its send side when it sends, then lowers that
/// to 1 (a config change right after a send, as a compromised or careless OApp owner could
/// make): the verification still waits for the 5 the send was made under — the send-side
/// config is read at the send block while the endpoints hold that state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_sides_confirmations_at_the_send_block_count_after_the_oapp_lowers_them() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    set_send_confirmations(&stand, 5).await;
    let (packets, sent_at) = start_and_send_one(&mut stand).await;
    let (src, _) = stand.devnet.sides(Direction::AToB);
    // Lowered to 1 in the next block (depth 2), then two more: depth 4.
    set_send_confirmations(&stand, 1).await;
    src.chain.mine(2).await.unwrap();
    assert_eq!(src.chain.head().await.unwrap(), sent_at + 3);
    confirm_stages_saw(&stand, sent_at + 3).await;
    assert_eq!(
        stand.nodes.metric_sum("dvn_packets_signed_total").await,
        0.0,
        "nobody signed at depth 4 under the send's 5"
    );

    // The 5th confirmation.
    src.chain.mine(1).await.unwrap();
    verified_once_with_5(
        &stand,
        &packets,
        "verified with the send block's 5, not today's 1",
    )
    .await;
}

/// The packets are delivered, every invariant holds, and our DVN's one `PayloadVerified`
/// carries 5 confirmations.
async fn verified_once_with_5(stand: &Stand, packets: &[dvn_lz::SentPacket], why: &str) {
    stand.deliver(Direction::AToB, packets, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, packets).await;
    let events = stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].confirmations, U256::from(5), "{why}");
}

/// Starts the three nodes and sends one message A → B: its packet and the block it was sent in.
async fn start_and_send_one(stand: &mut Stand) -> (Vec<dvn_lz::SentPacket>, u64) {
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    (packets, src.chain.head().await.unwrap())
}
