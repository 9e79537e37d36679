//! Providers that drop, truncate, flag or falsify logs: the node recovers what was dropped,
//! never trusts an answer at the provider's cap, never acts on a removed log, and sees (counts
//! and logs) an endpoint that lies, not only outvotes it.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::RpcProxy;
use dvn_devnet::wait::eventually;
use dvn_devnet::{Devnet, DevnetConfig, Direction};

use crate::common::metric_until;
use crate::common::{labelled_metric, Stand};
use crate::e2e::TIMEOUT;

/// One proxy in front of chain A for every node (devnet-only single endpoint).
async fn stand_behind_one_proxy() -> (Stand, RpcProxy) {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let proxy = RpcProxy::start(devnet.a.chain.rpc_url()).await.unwrap();
    let options = NodeOptions {
        rpc_a: vec![proxy.url.clone()],
        ..NodeOptions::default()
    };
    (Stand::with_devnet(devnet, options), proxy)
}

/// Every node reading chain A from three proxies of its anvil, two of which must agree
/// (`rpc_quorum` 2), each proxy's faults set by `faults` before the nodes start. The proxies
/// stop when dropped: keep them for the test's length.
async fn stand_on_three_endpoints_of_a(faults: impl FnOnce(&[RpcProxy])) -> (Stand, Vec<RpcProxy>) {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(RpcProxy::start(devnet.a.chain.rpc_url()).await.unwrap());
    }
    faults(&proxies);
    let options = NodeOptions {
        rpc_a: proxies.iter().map(|p| p.url.clone()).collect(),
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    for node in &stand.nodes.nodes {
        node.edit_config(|c| c["chains"][0]["rpc_quorum"] = serde_json::json!(2))
            .unwrap();
    }
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    (stand, proxies)
}

/// Issue 9 §4: the provider drops the *last* `PacketSent` of a scan, and the nodes' cursors
/// move past its block. The gap only shows at the next packet; the watcher scans back from the
/// block of the path's last known nonce and finds it — no restart, nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_last_log_is_found_again_without_a_restart() {
    let (mut stand, proxy) = stand_behind_one_proxy().await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &first, TIMEOUT).await;

    let (src, _) = stand.devnet.sides(Direction::AToB);
    let hidden_block = src.chain.head().await.unwrap() + 1;
    proxy.drop_packet_sent_in_block(Some(hidden_block));
    let hidden = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    src.chain.mine(2).await.unwrap();
    // Every node scans past the block without seeing the packet.
    for node in &stand.nodes.nodes {
        let passed = metric_until(node, "dvn_chain_cursor", &["chain=\"ethereum\""], |v| {
            v >= (hidden_block + 2) as f64
        })
        .await;
        assert!(passed, "{} scanned past block {hidden_block}", node.region);
    }
    // The provider heals; the next packet reveals the gap, which is recovered.
    proxy.drop_packet_sent_in_block(None);
    let later = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    let all: Vec<_> = first.into_iter().chain(hidden).chain(later).collect();
    stand.deliver(Direction::AToB, &all, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &all).await;
    for node in &stand.nodes.nodes {
        assert_eq!(
            node.metric_sum("dvn_nonce_gaps_total").await.unwrap(),
            1.0,
            "{}: one gap, counted once",
            node.region
        );
        let closed = metric_until(node, "dvn_nonce_gap_seconds", &[], |v| v == 0.0).await;
        assert!(closed, "{}: the gap gauge clears", node.region);
    }
}

/// R8: a provider that silently truncates `eth_getLogs` at its cap. An answer of exactly the
/// cap is never trusted: the range is split until answers come in under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_at_the_providers_cap_is_split_never_trusted() {
    let (mut stand, proxy) = stand_behind_one_proxy().await;
    proxy.edit_faults(|f| f.truncate_to = Some(5));
    for node in &stand.nodes.nodes {
        node.edit_config(|c| c["chains"][0]["max_logs_per_request"] = serde_json::json!(5))
            .unwrap();
    }
    // Sent while the nodes are down: their first scan sees all 12 sends (24 logs) at once.
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 12)
        .await
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
    assert_eq!(stand.nodes.metric_sum("dvn_nonce_gaps_total").await, 0.0);
}

/// R11 / issue 9 §5 (e): logs flagged `removed: true` are never acted on and the cursor does
/// not pass them; once the provider answers normally, everything is verified once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_marked_removed_are_never_acted_on() {
    let (mut stand, proxy) = stand_behind_one_proxy().await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    proxy.edit_faults(|f| f.mark_removed = true);
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    for node in &stand.nodes.nodes {
        let refused = metric_until(
            node,
            "dvn_reorgs_detected_total",
            &["chain=\"ethereum\""],
            |v| v >= 2.0,
        )
        .await;
        assert!(refused, "{} refused the removed logs", node.region);
    }
    assert_eq!(
        stand.nodes.metric_sum("dvn_packets_observed_total").await,
        0.0
    );
    assert_eq!(
        stand.nodes.metric_sum("dvn_packets_signed_total").await,
        0.0
    );
    proxy.edit_faults(|f| f.mark_removed = false);
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}

/// Issue 9 §6: of three endpoints (agreement 2), one returns falsified logs and one adds
/// harmless extras. Everything is verified from the two that agree; the liar is counted per
/// endpoint and method, the one with extras is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_minority_endpoint_is_counted_not_only_outvoted() {
    let (stand, proxies) = stand_on_three_endpoints_of_a(|proxies| {
        proxies[1].edit_faults(|f| f.extras = true);
        proxies[2].edit_faults(|f| f.corrupt = true);
    })
    .await;
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
    for node in &stand.nodes.nodes {
        let liar = [
            "chain=\"ethereum\"",
            "endpoint=\"2\"",
            "method=\"eth_getLogs\"",
        ];
        assert!(
            labelled_metric(node, "dvn_rpc_disagreements_total", &liar).await >= 1.0,
            "{}: the lying endpoint is counted",
            node.region
        );
        for honest in ["endpoint=\"0\"", "endpoint=\"1\""] {
            assert_eq!(
                labelled_metric(
                    node,
                    "dvn_rpc_disagreements_total",
                    &["chain=\"ethereum\"", honest, "method=\"eth_getLogs\""]
                )
                .await,
                0.0,
                "{}: {honest} agrees (extras are not disagreement)",
                node.region
            );
        }
    }
    // And it is in each node's audit log (issue 11 §3): one record for the liar, however often
    // it lied, none for the others.
    for node in &stand.nodes.nodes {
        let config = dvn::config::Config::load(&node.config_path).unwrap();
        let store = dvn::store::Store::connect(&config.store.url).await.unwrap();
        let outvoted = || async {
            store
                .audit_all()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.entry.operation == "safety.endpoint_outvoted")
                .collect::<Vec<_>>()
        };
        let recorded = eventually(TIMEOUT, Duration::from_millis(200), || async {
            let records = outvoted().await;
            (!records.is_empty()).then_some(records)
        })
        .await
        .unwrap_or_else(|| panic!("{}: the outvoted endpoint is not audited", node.region));
        let lies = labelled_metric(node, "dvn_rpc_disagreements_total", &["endpoint=\"2\""]).await;
        let records = outvoted().await;
        assert_eq!(records.len(), 1, "{}: {recorded:#?}", node.region);
        let record = &records[0];
        assert_eq!(record.entry.target, "chain:ethereum/endpoint:2");
        assert_eq!(record.entry.operator, "node");
        assert!(
            record.entry.params["methods"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("eth_getLogs")),
            "{record:#?}"
        );
        let summed = record.entry.params["disagreements"].as_u64().unwrap();
        assert!(
            summed >= 1 && summed as f64 <= lies,
            "{}: {summed} disagreements recorded, {lies} counted",
            node.region
        );
    }
    let log = std::fs::read_to_string(&stand.nodes.nodes[0].log_path).unwrap();
    assert!(
        log.contains("answered differently"),
        "the disagreement is logged"
    );
    for proxy in &proxies {
        assert!(!log.contains(&proxy.url), "endpoints appear by index only");
    }
}

/// An honest endpoint one block behind the other two (a node still importing the newest
/// block) answers "no such receipt" for a transaction just mined, "no such block" for the
/// newest one, and "latest" for an older state. None of that is a lie: with packets flowing
/// both ways (chain A the source one way, the destination of our `execute`s the other), it is
/// outvoted where it must be and never counted as disagreeing — a count the alert
/// `DvnRpcEndpointDisagrees` pages on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_endpoint_a_block_behind_is_not_counted_as_lying() {
    let (stand, _proxies) =
        stand_on_three_endpoints_of_a(|proxies| proxies[2].edit_faults(|f| f.behind = true)).await;
    stand.round_trip_both_ways(3).await;
    for node in &stand.nodes.nodes {
        let behind = ["chain=\"ethereum\"", "endpoint=\"2\""];
        let answered = labelled_metric(
            node,
            "dvn_rpc_requests_total",
            &[behind[0], behind[1], "outcome=\"ok\""],
        )
        .await;
        assert!(
            answered > 0.0,
            "{}: the endpoint behind was asked",
            node.region
        );
        let counted = labelled_metric(node, "dvn_rpc_disagreements_total", &behind).await;
        let by_method: Vec<String> = node
            .metrics()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("dvn_rpc_disagreements_total{") && !l.ends_with(" 0"))
            .map(str::to_string)
            .collect();
        assert_eq!(
            counted, 0.0,
            "{}: an endpoint a block behind is not lying: {by_method:#?}",
            node.region
        );
    }
}
