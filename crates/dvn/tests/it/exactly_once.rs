//! Exactly-once submission across turns (reliability matrix S2/S3): the owner's `execute` is
//! accepted by its RPC but does not reach the chain for its whole turn — a transaction stuck
//! between its sender and the chain, which may still land later. Each region reads the
//! destination through its own proxy, which holds the owner's `execute`s back until the test
//! releases them.
//!
//! - With the owner alive, its turn passing on makes it cancel (a same-nonce self-transfer,
//!   which its proxy lets through); the next region waits on the owner's claim until that
//!   nonce is used, then submits; the stuck `execute` released afterwards can no longer land.
//! - With the owner killed while its `execute` is still held, nothing can cancel it: the other
//!   regions wait on its claim for as long as it stands; released, that `execute` lands, and
//!   every packet is verified exactly once.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::RpcProxy;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::json;

use crate::common::{labelled_metric, Stand};
use crate::e2e::TIMEOUT;

/// A stand whose regions each read chain B through a proxy of their own, every proxy holding
/// back transactions to chain B's DVN.
async fn stand_with_held_executes(options: NodeOptions) -> (Stand, Vec<RpcProxy>) {
    let stand = Stand::new(DevnetConfig::default(), options).await;
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let mut proxies = Vec::new();
    for node in &stand.nodes.nodes {
        let proxy = RpcProxy::start(dst.chain.rpc_url()).await.unwrap();
        proxy.hold_transactions_to(Some(dst.contracts.dvn));
        let url = proxy.url.clone();
        node.edit_config(|c| c["chains"][1]["rpc"] = json!([url]))
            .unwrap();
        proxies.push(proxy);
    }
    (stand, proxies)
}

/// Waits, keeping the destination's clock going, until one region's `execute` is held; that
/// region is the owner. The other regions' proxies stop holding.
async fn owner_of_the_held_execute(stand: &Stand, proxies: &[RpcProxy]) -> usize {
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let owner = eventually(TIMEOUT, Duration::from_millis(50), || async {
        let _ = dst.chain.keep_up_with_wall_clock().await;
        proxies.iter().position(|p| p.held() > 0)
    })
    .await;
    let Some(owner) = owner else {
        stand.dump_logs();
        panic!("no region sent an execute");
    };
    for (i, proxy) in proxies.iter().enumerate() {
        if i != owner {
            proxy.hold_transactions_to(None);
        }
    }
    owner
}

/// Waits, keeping the destination's clock going, until one of `regions` has held packets
/// back on a claim; fails with the logs, saying `what`, otherwise.
async fn some_region_waits_on_a_claim(stand: &Stand, regions: &[usize], what: &str) {
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let deferred = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let _ = dst.chain.keep_up_with_wall_clock().await;
        let mut sum = 0.0;
        for &i in regions {
            sum += stand.nodes.nodes[i]
                .metric_sum("dvn_claim_deferrals_total")
                .await
                .unwrap_or(0.0);
        }
        (sum >= 1.0).then_some(())
    })
    .await;
    if deferred.is_none() {
        stand.dump_logs();
        panic!("{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_passed_cancels_the_stuck_execute_and_the_next_region_submits_once() {
    let (mut stand, proxies) = stand_with_held_executes(NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let owner = owner_of_the_held_execute(&stand, &proxies).await;

    // The owner's turn passes on: it cancels, the next region waits for that nonce to be used,
    // then verifies the packets.
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    let cancels = labelled_metric(
        &stand.nodes.nodes[owner],
        "dvn_submission_cancels_total",
        &["reason=\"turn_handed_on\""],
    )
    .await;
    assert!(cancels >= 1.0, "the owner cancelled when its turn passed");
    let others: f64 = {
        let mut sum = 0.0;
        for (i, node) in stand.nodes.nodes.iter().enumerate() {
            if i != owner {
                sum += node
                    .metric_sum("dvn_submissions_total")
                    .await
                    .unwrap_or(0.0);
            }
        }
        sum
    };
    assert!(others >= 1.0, "another region submitted after the cancel");

    // The stuck execute reaches the chain at last: its nonce is used, so it cannot land.
    let landed = proxies[owner].release_held().await.unwrap();
    assert_eq!(
        landed, 0,
        "the owner's cancelled execute was accepted by the chain"
    );
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.mine(2).await.unwrap();
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_with_its_execute_pending_holds_the_others_until_it_lands() {
    // A long turn, so the owner is surely killed before its turn passes (it would cancel).
    let options = NodeOptions {
        takeover_after_secs: 20,
        ..NodeOptions::default()
    };
    let (mut stand, proxies) = stand_with_held_executes(options).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let owner = owner_of_the_held_execute(&stand, &proxies).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();

    // Both other regions have the owner's claim; then the owner dies with its execute held.
    for &i in &others {
        let node = &stand.nodes.nodes[i];
        let got = crate::common::metric_reaches(node, "dvn_peer_claims_received_total", 1.0).await;
        assert!(got, "{} never received the owner's claim", node.region);
    }
    stand.nodes.nodes[owner].kill();

    // The next region's turn comes (the destination keeps producing blocks) and it waits on
    // the claim instead of sending the packets again.
    some_region_waits_on_a_claim(
        &stand,
        &others,
        "no region waited on the dead owner's claim",
    )
    .await;
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    // A few more blocks into the takeover: still nobody sends the claimed packets.
    let head = dst.chain.head().await.unwrap();
    let moved = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let _ = dst.chain.keep_up_with_wall_clock().await;
        (dst.chain.head().await.ok()? >= head + 3).then_some(())
    })
    .await;
    assert!(moved.is_some());
    for &i in &others {
        let sent = stand.nodes.nodes[i]
            .metric_sum("dvn_submissions_total")
            .await
            .unwrap_or(0.0);
        assert_eq!(
            sent, 0.0,
            "{} submitted packets a live claim covers",
            stand.nodes.nodes[i].region
        );
    }

    // `dvn why` on a survivor names the claim a packet waits on.
    let survivor = &stand.nodes.nodes[others[0]];
    let guid = packets[0].packet.guid.to_string();
    let config = survivor.config_path.to_str().unwrap();
    let why: serde_json::Value = serde_json::from_str(&crate::common::dvn_cli(&[
        "why", &guid, "-c", config, "--json",
    ]))
    .unwrap();
    assert_eq!(
        why["peer_claims"][0]["region"],
        json!(stand.nodes.nodes[owner].region),
        "dvn why names the owner's claim: {why}"
    );

    // The dead owner's execute reaches the chain at last and verifies the packets, once.
    let landed = proxies[owner].release_held().await.unwrap();
    assert_eq!(landed, 1, "the held execute lands");
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
    assert_eq!(report.execute_transactions, 1);
}

/// Deletes every stored peer claim from a node's SQLite store (with the node running): as if
/// the announcement had never arrived.
fn forget_claims(node: &dvn_devnet::nodes::DvnNode) {
    let config: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&node.config_path).unwrap()).unwrap();
    let url = config["store"]["url"].as_str().unwrap().to_string();
    let file = dvn::store::sqlite_file(&url).unwrap();
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); c.execute('delete from peer_claims'); c.commit()")
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success(), "could not clear {}'s claims", node.region);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_announcement_is_found_by_asking_the_owner_before_a_takeover() {
    // Everything the owner sends to chain B is held, its cancel too, so its claim stands all
    // along. The others' record of its announcement is then erased.
    let (mut stand, proxies) = stand_with_held_executes(NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let owner = owner_of_the_held_execute(&stand, &proxies).await;
    proxies[owner].hold_all_transactions();
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    for &i in &others {
        let node = &stand.nodes.nodes[i];
        let got = crate::common::metric_reaches(node, "dvn_peer_claims_received_total", 1.0).await;
        assert!(got, "{} never received the owner's claim", node.region);
        forget_claims(node);
    }

    // The next region's turn: it asks aws before taking over, finds the claim, and waits.
    some_region_waits_on_a_claim(
        &stand,
        &others,
        "no region found the owner's claim by asking",
    )
    .await;
    for &i in &others {
        let node = &stand.nodes.nodes[i];
        let sent = node
            .metric_sum("dvn_submissions_total")
            .await
            .unwrap_or(0.0);
        assert_eq!(
            sent, 0.0,
            "{} submitted packets the owner's claim covers",
            node.region
        );
    }

    // The owner's execute (held before its cancel) reaches the chain and verifies them, once.
    let landed = proxies[owner].release_held().await.unwrap();
    assert_eq!(
        landed, 1,
        "the execute lands; the cancel of its nonce cannot"
    );
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
    assert_eq!(report.execute_transactions, 1);
}

/// `dvn why <guid> --json` on `node`.
fn why(node: &dvn_devnet::nodes::DvnNode, guid: &str) -> serde_json::Value {
    let config = node.config_path.to_str().unwrap();
    serde_json::from_str(&crate::common::dvn_cli(&[
        "why", guid, "-c", config, "--json",
    ]))
    .unwrap()
}

/// What another region's mined transaction verified closes the packet here from its receipt;
/// the claim only names the transaction. A claimed transaction that verified nothing of ours
/// closes nothing. aws runs alone, so it signs but never has a quorum: nothing of its own —
/// no turn, no destination check of packets it could submit — closes the packet meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_transaction_closes_only_what_its_receipt_verified() {
    use alloy::providers::Provider;
    use alloy::rpc::types::TransactionRequest;

    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0]).await.unwrap();
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    let aws = &stand.nodes.nodes[0];
    let guid = packets[0].packet.guid.to_string();
    let signed = eventually(TIMEOUT, Duration::from_millis(200), || async {
        (why(aws, &guid)["state"] == "signed").then_some(())
    })
    .await;
    assert!(signed.is_some(), "aws never signed: {}", why(aws, &guid));

    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let aliyun = dst.roles.dvn_admins[1];
    let http = crate::common::peer_http(aws, "aliyun", "aws");
    let claims = format!("{}/v1/claims", aws.peer_url());
    let claim = |nonce: u64, tx: alloy::primitives::B256| {
        json!({"version": 1, "dst_eid": dst.eid, "claim": {
            "sender": aliyun, "nonce": nonce, "tx_hash": tx,
            "guids": [packets[0].packet.guid],
        }})
    };
    // aliyun announces its transaction `tx` with nonce `nonce` as carrying the packet.
    let announce = |nonce: u64, tx: alloy::primitives::B256| {
        let request = http.post(&claims).json(&claim(nonce, tx));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
    };
    let next_nonce = || async {
        dst.chain
            .provider
            .get_transaction_count(aliyun)
            .await
            .unwrap()
    };
    let claim_read = || async {
        let why = why(aws, &guid);
        why["peer_claims"].is_null().then_some(why)
    };

    // A mined transaction of aliyun's submitter that verified nothing: read, dropped, and the
    // packet stays signed.
    let nonce = next_nonce().await;
    let unrelated = dst
        .chain
        .send_tx(
            "self-transfer",
            TransactionRequest::default().from(aliyun).to(aliyun),
        )
        .await
        .unwrap();
    announce(nonce, unrelated.transaction_hash).await;
    let after = eventually(TIMEOUT, Duration::from_millis(200), claim_read)
        .await
        .expect("the claim on a mined transaction is read and dropped");
    assert_eq!(after["state"], "signed", "{after}");

    // aliyun's execute that did verify it (signed with the aliyun and gcp keys): closed here
    // from the receipt.
    let nonce = next_nonce().await;
    let receipt = stand
        .devnet
        .verify_as_dvn_from(Direction::AToB, &packets, &[1, 2], 1)
        .await
        .unwrap();
    announce(nonce, receipt.transaction_hash).await;
    let closed = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let why = why(aws, &guid);
        (why["state"] == "verified").then_some(why)
    })
    .await
    .expect("aws closes the packet from aliyun's receipt");
    let note = closed["last_error"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!(
            "aliyun's transaction {}",
            receipt.transaction_hash
        )),
        "{closed}"
    );
    let sent = aws.metric_sum("dvn_submissions_total").await.unwrap_or(0.0);
    assert_eq!(sent, 0.0, "aws sent nothing of its own");
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
}
