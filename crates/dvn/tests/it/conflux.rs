//! Issue 9 §9: the `conflux-espace` chain profile behind a proxy that answers as a Conflux
//! eSpace RPC does (wider `eth_getLogs` ranges refused, no `net_peerCount`), in front of the
//! chain-id-1030 anvil, with `finality: safe` (confirmed by PoW on Conflux); and as a
//! destination, where the proxy also holds Conflux's calldata gas floor (CIP-130) and answers
//! estimates as Conflux does: what each `execute` is sent with, and what Conflux would charge.

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

/// What Conflux charges for a transaction that used `used` of its `limit`: at least ¾ of the
/// limit (conflux-rust `pre_checked_executive`: all but a quarter is charged when a quarter or
/// more of the limit is left over).
fn conflux_charge(limit: u64, used: u64) -> u64 {
    if 3 * limit.saturating_sub(used) >= used {
        limit - limit / 4
    } else {
        used
    }
}

/// One verifying transaction on a Conflux destination: what it was sent with and used.
#[derive(Debug)]
struct ExecuteGas {
    params: u64,
    limit: u64,
    floor: u64,
    used: u64,
}

/// Eighteen packets (two bursts of eight — the second goes out with what the first taught —
/// then two one at a time) from A to a B
/// that answers as Conflux eSpace does — a transaction under 100 gas per calldata byte is
/// refused, and estimates are at least that (CIP-130) — with B's `conflux-espace` profile on
/// every node, directly or each region through its `DVNDecompressor`; every one is verified
/// exactly once. The transactions that carried our DVN's verifications.
async fn verified_on_conflux(compressed: bool) -> Vec<ExecuteGas> {
    use alloy::consensus::Transaction as _;

    let devnet = Devnet::start(DevnetConfig {
        decompressors: compressed,
        ..DevnetConfig::default()
    })
    .await
    .unwrap();
    let proxy = RpcProxy::start(devnet.b.chain.rpc_url()).await.unwrap();
    proxy.edit_faults(|f| f.conflux_quirks = true);
    let options = NodeOptions {
        rpc_b: vec![proxy.url.clone()],
        decompressor: compressed,
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    for node in &stand.nodes.nodes {
        node.edit_config(|c| c["chains"][1]["profile"] = json!("conflux-espace"))
            .unwrap();
    }
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let mut sent = stand.send_delivered(Direction::AToB, 8).await;
    sent.extend(stand.send_delivered(Direction::AToB, 8).await);
    // Low traffic: one packet at a time, each its own `execute`.
    for _ in 0..2 {
        sent.extend(stand.send_delivered(Direction::AToB, 1).await);
    }
    stand.assert_invariants(Direction::AToB, &sent).await;

    let mut verifying = Vec::new();
    for v in stand.verifying_transactions(Direction::AToB).await {
        let one = ExecuteGas {
            params: v.params,
            limit: v.tx.gas_limit(),
            floor: 100 * v.tx.input().len() as u64,
            used: v.receipt.gas_used,
        };
        println!(
            "{} execute of {} params: {one:?}, charged on Conflux {}",
            if compressed { "compressed" } else { "plain" },
            one.params,
            conflux_charge(one.limit, one.used)
        );
        verifying.push(one);
    }
    let packets: u64 = verifying.iter().map(|v| v.params).sum();
    assert_eq!(
        packets,
        sent.len() as u64,
        "each packet verified by one of ours"
    );
    let charged: u64 = verifying
        .iter()
        .map(|v| conflux_charge(v.limit, v.used))
        .sum();
    println!(
        "{}: {} gas charged on Conflux per packet",
        if compressed { "compressed" } else { "plain" },
        charged / packets
    );
    verifying
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_conflux_an_execute_goes_out_at_the_calldata_floor_and_not_above_it() {
    let verifying = verified_on_conflux(false).await;
    for v in &verifying {
        assert!(
            v.limit >= v.floor,
            "under the floor would be refused: {v:?}"
        );
        if v.params >= 2 {
            // Execution with its margin fits under the floor from two params on (a param
            // executes in about 45 k gas and carries about 670 bytes): headroom above the
            // floor would only be charged.
            assert_eq!(v.limit, v.floor, "sent above the floor: {v:?}");
        } else {
            // One param executes above its floor (the call's fixed cost): the limit is set by
            // execution, and must leave less than a quarter unused.
            assert_eq!(
                conflux_charge(v.limit, v.used),
                v.used,
                "charged more than it used: {v:?}"
            );
        }
    }
    assert!(
        verifying.iter().any(|v| v.params >= 2),
        "no execute carried more than one param: {verifying:?}"
    );
    assert!(
        verifying.iter().any(|v| v.params == 1),
        "no execute carried a single param: {verifying:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_conflux_a_compressed_execute_is_charged_only_the_gas_it_uses() {
    // Compact calldata: the floor does not bind and execution (the decoding besides) sets
    // the limit — which must leave less than a quarter unused, or Conflux charges ¾ of it.
    let verifying = verified_on_conflux(true).await;
    for v in &verifying {
        assert!(v.limit > v.floor, "the floor bound: {v:?}");
        assert_eq!(
            conflux_charge(v.limit, v.used),
            v.used,
            "charged more than it used: {v:?}"
        );
    }
}
