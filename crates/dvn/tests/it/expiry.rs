//! S6 / T2: the destination's clock jumps past a signed param's lifetime before a quorum
//! exists. The stale signature is re-signed for the next window — on every node the same
//! window, chosen without wall clocks — and the packet is verified once.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_that_expire_before_quorum_are_renewed_and_verified_once() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[2]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let gcp = &stand.nodes.nodes[2];
    let signed = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (gcp.metric_sum("dvn_packets_signed_total").await? >= 3.0).then_some(())
    })
    .await;
    assert!(signed.is_some(), "the lone node signed");

    // Two hours pass on the destination: the 1-hour params gcp signed are worthless now.
    let dst = &stand.devnet.b;
    let now = dst.chain.timestamp().await.unwrap();
    dst.chain.set_time(now + 7_200).await.unwrap();
    dst.chain.mine(1).await.unwrap();

    stand.nodes.start(&[1]).await.unwrap();
    // The warped clock is ahead of the wall clock, so the harness would not mine on its own;
    // a live chain keeps producing blocks (the submitter hand-over waits for them).
    let verifiable = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let _ = dst.chain.mine(1).await;
        let report = stand
            .devnet
            .check_invariants(Direction::AToB, &packets)
            .await
            .ok()?;
        report.unverified.is_empty().then_some(())
    })
    .await;
    if verifiable.is_none() {
        stand.dump_logs();
        panic!("renewed signatures did not verify");
    }
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &packets).await;
    let resigned = stand.nodes.nodes[2]
        .metric_sum("dvn_packets_signed_total")
        .await
        .unwrap();
    assert!(
        resigned >= 6.0,
        "gcp signed each packet again for the new window: {resigned}"
    );
}
