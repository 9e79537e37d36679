//! Scenario 10: each chain behind three RPC endpoints with threshold 2. One endpoint stopped
//! and one failing (on different chains) → still verified. Two of the source chain's three
//! down → nothing is signed, however long; one returns → everything is verified.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::{ProxyMode, RpcProxy};
use dvn_devnet::wait::eventually;
use dvn_devnet::{Devnet, DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

async fn proxies(upstream: &str) -> Vec<RpcProxy> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(RpcProxy::start(upstream).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_two_of_three_endpoints_and_never_fall_back_to_fewer() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let a = proxies(devnet.a.chain.rpc_url()).await;
    let b = proxies(devnet.b.chain.rpc_url()).await;
    let options = NodeOptions {
        rpc_a: a.iter().map(|p| p.url.clone()).collect(),
        rpc_b: b.iter().map(|p| p.url.clone()).collect(),
        rpc_quorum: Some(2),
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    stand.nodes.start(&[0, 1, 2]).await.unwrap();

    // One source endpoint stopped, one destination endpoint failing: 2 of 3 still agree.
    a[0].stop();
    b[1].set_mode(ProxyMode::Fail);
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &first, TIMEOUT).await;

    // A second source endpoint fails: only 1 of 3 answers, below the threshold.
    a[1].set_mode(ProxyMode::Fail);
    let signed_before = stand.nodes.metric_sum("dvn_packets_signed_total").await;
    let errors_before: Vec<f64> = futures_sum(&stand, "dvn_rpc_quorum_failures_total").await;
    let second = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    // Every node must have hit the missing quorum several times since the send.
    for (i, node) in stand.nodes.nodes.iter().enumerate() {
        let hit = eventually(TIMEOUT, Duration::from_millis(100), || async {
            let now = node.metric_sum("dvn_rpc_quorum_failures_total").await?;
            (now >= errors_before[i] + 3.0).then_some(())
        })
        .await;
        if hit.is_none() {
            let text = node.metrics().await.unwrap_or_default();
            let rpc: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("rpc_") && !l.starts_with('#'))
                .collect();
            stand.dump_logs();
            panic!(
                "{} did not keep failing its source reads:\n{}",
                node.region,
                rpc.join("\n")
            );
        }
    }
    assert_eq!(
        stand.nodes.metric_sum("dvn_packets_signed_total").await,
        signed_before,
        "nothing signed below the RPC threshold"
    );
    let report = stand
        .devnet
        .check_invariants(Direction::AToB, &second)
        .await
        .unwrap();
    assert_eq!(report.unverified.len(), 3);

    // It returns: everything is verified.
    a[1].set_mode(ProxyMode::Forward);
    stand.deliver(Direction::AToB, &second, TIMEOUT).await;
    let all: Vec<_> = first.into_iter().chain(second).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
}

async fn futures_sum(stand: &Stand, name: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for node in &stand.nodes.nodes {
        out.push(node.metric_sum(name).await.unwrap_or(0.0));
    }
    out
}
