//! Scenario 4: with the receive side asking for 5 confirmations (a per-OApp override on the
//! destination), nothing is verified before the 5th; then it is, with 5.

use std::time::Duration;

use alloy::primitives::U256;
use dvn_devnet::deploy::{set_receive_uln_config, uln_config};
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
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let sent_at = src.chain.head().await.unwrap();

    // Depth 4: three more blocks after the send's.
    src.chain.mine(3).await.unwrap();
    // Wait until every node's confirm stage has evaluated the packet at that head.
    for node in &stand.nodes.nodes {
        let seen = eventually(TIMEOUT, Duration::from_millis(50), || async {
            let text = node.metrics().await?;
            let head = text
                .lines()
                .find(|l| l.starts_with("dvn_confirm_head{chain=\"ethereum\"}"))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()?;
            (head >= (sent_at + 3) as f64).then_some(())
        })
        .await;
        assert!(seen.is_some(), "{} evaluated depth 4", node.region);
    }
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
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &packets).await;
    let events = stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].confirmations,
        U256::from(5),
        "verified with the overriding 5, not the default 1"
    );
}
