//! Issue 9 §9: the `conflux-espace` chain profile behind a proxy that answers as a Conflux
//! eSpace RPC does (wider `eth_getLogs` ranges refused, no `net_peerCount`), in front of the
//! chain-id-1030 anvil, with `finality: safe` (confirmed by PoW on Conflux).

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::RpcProxy;
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use serde_json::json;

use std::time::Duration;

use dvn_devnet::wait::eventually;

use crate::common::{labelled_metric, Stand};
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conflux_profile_scans_in_thousand_block_ranges_and_waits_for_safe() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    assert_eq!(devnet.b.chain.chain_id, 1030);
    let proxy = RpcProxy::start(devnet.b.chain.rpc_url()).await.unwrap();
    proxy.edit_faults(|f| f.conflux_quirks = true);
    let options = NodeOptions {
        rpc_b: vec![proxy.url.clone()],
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    for node in &stand.nodes.nodes {
        node.edit_config(|c| {
            c["chains"][1]["profile"] = json!("conflux-espace");
            c["chains"][1]["finality"] = json!("safe");
            c["chains"][1]["max_log_range"] = json!(1000);
        })
        .unwrap();
    }
    // A history longer than one allowed range before the nodes' first scan.
    let (src, _) = stand.devnet.sides(Direction::BToA);
    src.chain.mine(2_500).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::BToA, 3)
        .await
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    // Observed and past the confirmations, but above the `safe` head (anvil: an epoch of 32
    // blocks behind the latest): evaluated, and not signed.
    let head = src.chain.head().await.unwrap();
    for node in &stand.nodes.nodes {
        let evaluated = eventually(TIMEOUT, Duration::from_millis(100), || async {
            let observed = node.metric_sum("dvn_packets_observed_total").await?;
            let at = labelled_metric(node, "dvn_confirm_head", &["chain=\"conflux-espace\""]).await;
            (observed >= 3.0 && at >= head as f64).then_some(())
        })
        .await;
        assert!(evaluated.is_some(), "{} evaluated the packets", node.region);
    }
    assert_eq!(
        stand.nodes.metric_sum("dvn_packets_signed_total").await,
        0.0,
        "nothing signed above the safe head"
    );
    src.chain.mine(70).await.unwrap();
    stand.deliver(Direction::BToA, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::BToA, &sent).await;
    // Never a refused range: the profile kept every eth_getLogs within 1,000 blocks.
    for node in &stand.nodes.nodes {
        let log = std::fs::read_to_string(&node.log_path).unwrap();
        assert!(
            !log.contains("exceeds the maximum"),
            "{}: {log}",
            node.region
        );
    }
}
