//! Scenario 2: 2-of-3. One region down from the start: everything is still verified. Two
//! down: nothing is verified and no transaction is sent; one comes back: everything is.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_region_down_from_the_start_changes_nothing() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    // aws (index 0) never starts; it is also the designated submitter of some slots, so the
    // others must take over its share.
    stand.nodes.start(&[1, 2]).await.unwrap();
    stand.round_trip_both_ways(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_down_verify_nothing_until_one_returns() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[2]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 5)
        .await
        .unwrap();
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let admins = dst.roles.dvn_admins.clone();
    let nonces_before = nonces(&stand, &admins).await;

    // The lone node signs everything it can…
    let gcp = &stand.nodes.nodes[2];
    let signed = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (gcp.metric_sum("dvn_packets_signed_total").await? >= 5.0).then_some(())
    })
    .await;
    assert!(signed.is_some(), "the running node signed all packets");
    // …and has since aggregated them (pulling from unreachable peers) several times over.
    let looked = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let text = gcp.metrics().await?;
        text.contains("dvn_peer_up{peer=\"aws\"} 0").then_some(())
    })
    .await;
    assert!(
        looked.is_some(),
        "the node tried its peers and found them down"
    );
    let report = stand
        .devnet
        .check_invariants(Direction::AToB, &packets)
        .await
        .unwrap();
    assert_eq!(
        report.unverified.len(),
        5,
        "nothing verified with one signature of two"
    );
    assert_eq!(report.execute_transactions, 0);
    assert_eq!(
        nonces(&stand, &admins).await,
        nonces_before,
        "no transaction was sent"
    );

    stand.nodes.start(&[1]).await.unwrap();
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &packets).await;
}

async fn nonces(stand: &Stand, accounts: &[alloy::primitives::Address]) -> Vec<u64> {
    use alloy::providers::Provider;
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let mut out = Vec::new();
    for a in accounts {
        out.push(dst.chain.provider.get_transaction_count(*a).await.unwrap());
    }
    out
}
