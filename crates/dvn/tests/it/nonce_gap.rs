//! A provider that silently drops a `PacketSent` log: the per-path nonce check notices the
//! gap, nothing past it is signed, and once the provider answers in full everything is.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::RpcProxy;
use dvn_devnet::wait::eventually;
use dvn_devnet::{Devnet, DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_log_stops_signing_at_the_gap_until_it_is_found() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let proxy = RpcProxy::start(devnet.a.chain.rpc_url()).await.unwrap();
    let options = NodeOptions {
        rpc_a: vec![proxy.url.clone()],
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &first, TIMEOUT).await;

    // The provider now drops the PacketSent of the next block (nonce 2); nonce 3 follows.
    let next_block = stand.devnet.a.chain.head().await.unwrap() + 1;
    proxy.drop_packet_sent_in_block(Some(next_block));
    let hidden = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    for node in &stand.nodes.nodes {
        let noticed = eventually(TIMEOUT, Duration::from_millis(100), || async {
            (node.metric_sum("dvn_nonce_gaps_total").await? >= 1.0).then_some(())
        })
        .await;
        assert!(noticed.is_some(), "{} noticed the gap", node.region);
        assert_eq!(
            node.metric_sum("dvn_packets_signed_total").await.unwrap(),
            1.0,
            "{} signed nothing past the gap",
            node.region
        );
    }
    let report = stand
        .devnet
        .check_invariants(Direction::AToB, &hidden)
        .await
        .unwrap();
    assert_eq!(report.unverified, vec![2, 3]);

    // The provider heals: both are found and verified.
    proxy.drop_packet_sent_in_block(None);
    stand.deliver(Direction::AToB, &hidden, TIMEOUT).await;
    let all: Vec<_> = first.into_iter().chain(hidden).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
}
