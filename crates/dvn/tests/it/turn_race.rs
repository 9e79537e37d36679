//! A turn that passes while its owner is still checking the batch (reliability matrix S2).
//!
//! Under a backlog, or over a slow RPC link, a region's last checks before sending can take
//! longer than what is left of its turn. If it then sends on the strength of the turn it
//! checked when the step began, it races the next region, which started meanwhile: the packet
//! is verified twice (seen in a 10,000-packet catch-up before the fix).
//!
//! Played here step by step on the destination's clock, which the test moves block by block:
//! region A's turn comes; A's pre-send read of our verification (`hashLookup`) reaches the
//! chain but its answer is held back by A's proxy (a slow link); the turn passes to region B,
//! which verifies the packet; then A's stale answer ("not verified yet") arrives. A must see
//! that the turn is no longer its own and leave the packet — one verification, not two.

use std::time::Duration;

use alloy::sol_types::SolCall;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::RpcProxy;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::contracts::IReceiveUln302;
use serde_json::json;

use crate::common::{dvn_cli, log_until, Stand};
use crate::e2e::TIMEOUT;

/// Turn window (`submitter.takeover_after_secs`): an owner may start in its first half.
const WINDOW: u64 = 16;
const HALF: u64 = WINDOW / 2;

/// The regions in the order turns are counted (sorted names).
const SORTED: [&str; 3] = ["aliyun", "aws", "gcp"];

fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `dvn why` of `guid` on node `i`, as JSON.
fn why(stand: &Stand, i: usize, guid: &str) -> serde_json::Value {
    let config = stand.nodes.nodes[i].config_path.to_str().unwrap();
    serde_json::from_str(&dvn_cli(&["why", guid, "--json", "--config", config])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_turn_passed_during_its_checks_leaves_the_packet_to_the_next() {
    let options = NodeOptions {
        takeover_after_secs: WINDOW,
        ..NodeOptions::default()
    };
    let mut stand = Stand::new(DevnetConfig::default(), options).await;
    let dst_url = stand
        .devnet
        .sides(Direction::AToB)
        .1
        .chain
        .rpc_url()
        .to_string();
    let selector = IReceiveUln302::hashLookupCall::SELECTOR;
    // Each region reads the destination through a proxy of its own.
    let mut proxies = Vec::new();
    for node in &stand.nodes.nodes {
        let proxy = RpcProxy::start(&dst_url).await.unwrap();
        proxy.watch_calls(selector);
        let url = proxy.url.clone();
        node.edit_config(|c| c["chains"][1]["rpc"] = json!([url]))
            .unwrap();
        proxies.push(proxy);
    }
    stand.nodes.start(&[0, 1, 2]).await.unwrap();

    // The send's block time `sent_at` fixes the designated region and every turn after it.
    // The destination is moved first into a quiet half for it: nobody may start yet.
    let (src, dst) = stand.devnet.sides(Direction::AToB);
    let (src, dst) = (&src.chain, &dst.chain);
    let sent_at = wall_clock().max(src.timestamp().await.unwrap()) + 10;
    let before_send = dst.timestamp().await.unwrap();
    assert!(
        before_send < sent_at + HALF + 2,
        "the destination runs ahead"
    );
    dst.mine_at(sent_at + HALF + 2).await.unwrap();
    src.next_block_at(sent_at).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    assert_eq!(src.timestamp().await.unwrap(), sent_at, "the send's block");
    src.mine(3).await.unwrap();
    let guid = sent[0].packet.guid.to_string();
    let designated = usize::try_from((sent_at / 60) % 3).unwrap();
    let node_of = |sorted: usize| {
        stand
            .nodes
            .nodes
            .iter()
            .position(|n| n.region == SORTED[sorted % 3])
            .unwrap()
    };
    // Turn 1 (destination time sent_at + WINDOW) is region A's, turn 2 region B's: both take
    // over from the designated region, which never gets to send.
    let (a, b) = (node_of(designated + 1), node_of(designated + 2));

    // Every region signs and counts the quorum; the destination stays in the quiet half.
    let quorum = eventually(TIMEOUT, Duration::from_millis(300), || async {
        (0..3)
            .all(|i| {
                let why = why(&stand, i, &guid);
                why["state"] == "signed" && why["quorum_since_ms"].is_i64()
            })
            .then_some(())
    })
    .await;
    if quorum.is_none() {
        stand.dump_logs();
        panic!("the regions did not all count a quorum");
    }
    // Destination blocks after the quorum (a region taking over waits for a few), still quiet.
    for t in 1..=3 {
        dst.mine_at(sent_at + HALF + 2 + t).await.unwrap();
    }

    // Region A looks now and then whether another region verified the packet (one
    // `hashLookup` per packet per 5 s while it is not A's turn). Right after one such look,
    // A's turn begins and A's reads of our verification have their answers held.
    let looked = proxies[a].watched_calls().0;
    let next_look = eventually(TIMEOUT, Duration::from_millis(20), || async {
        (proxies[a].watched_calls().0 > looked).then_some(())
    })
    .await;
    assert!(next_look.is_some(), "region A looked at the destination");
    proxies[a].hold_call_answers(true);
    dst.mine_at(sent_at + WINDOW + 1).await.unwrap();
    let held = eventually(TIMEOUT, Duration::from_millis(20), || async {
        (proxies[a].watched_calls().1 > 0).then_some(())
    })
    .await;
    if held.is_none() {
        stand.dump_logs();
        panic!("region A did not check the packet before sending in its turn");
    }

    // Meanwhile the turn passes to region B, which verifies the packet.
    dst.mine_at(sent_at + 2 * WINDOW + 1).await.unwrap();
    let verified = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let events = stand.devnet.payload_verified(Direction::AToB).await.ok()?;
        (!events.is_empty()).then_some(())
    })
    .await;
    if verified.is_none() {
        stand.dump_logs();
        panic!("region B did not verify the packet in its turn");
    }
    assert_eq!(why(&stand, b, &guid)["state"], "verified");

    // A's stale answer arrives: "not verified yet". A must leave the packet to B.
    proxies[a].release_call_answers();
    // A closes the packet once it sees B's verification (or, had it sent, once its own lands).
    let closed = eventually(TIMEOUT, Duration::from_millis(300), || async {
        let _ = dst.mine(1).await;
        matches!(
            why(&stand, a, &guid)["state"].as_str(),
            Some("verified" | "skipped")
        )
        .then_some(())
    })
    .await;
    assert!(closed.is_some(), "region A closed the packet");
    let report = stand.assert_invariants(Direction::AToB, &sent).await;
    assert_eq!(report.duplicates, vec![], "verified once, not twice");
    let left = log_until(&stand.nodes.nodes[a], |log| {
        log.contains("the turn passed on while the batch was checked")
    })
    .await;
    assert!(
        left,
        "region A said it left the packet to the turn's new owner"
    );
}
