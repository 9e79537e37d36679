//! A batch's size on the wire: geth's pool (and Erigon's, Nethermind's, reth's) refuses a
//! transaction over 128 KiB, while `max_batch` allows 255 params (about 173 kB of plain
//! calldata) and `max_batch_gas` can be raised past what bounds it by default. A refused
//! `execute` is stored before its broadcast and would be re-sent and replaced forever, and
//! the nonces behind it never mined; the submitter halves a batch until its calldata fits.

use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::RpcProxy;
use dvn_devnet::wait::eventually;
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use serde_json::json;

use crate::common::{warp_to_slot, Stand};
use crate::e2e::TIMEOUT;

/// Geth's `txMaxSize`.
const GETH_TX_MAX_SIZE: usize = 128 * 1024;

const MAX_BATCH: usize = 255;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_too_large_for_one_transaction_goes_out_in_batches_a_geth_pool_takes() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    // B's RPC refuses what geth's pool refuses.
    let proxy = RpcProxy::start(devnet.b.chain.rpc_url()).await.unwrap();
    proxy.edit_faults(|f| f.geth_size_limit = true);
    let options = NodeOptions {
        rpc_b: vec![proxy.url.clone()],
        max_batch: MAX_BATCH,
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    for node in &stand.nodes.nodes {
        // Room for 255 params by gas (about 11.5 M), so only the size bounds a batch.
        node.edit_config(|c| c["submitter"]["max_batch_gas"] = json!(25_000_000))
            .unwrap();
    }
    // An outage's backlog of 500 packets, all in one region's rotation slot.
    warp_to_slot(&stand, 0).await;
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 500)
        .await
        .unwrap();
    // B makes no blocks while the nodes come up: after the owner's first partial batch only
    // full ones go out behind it, so the backlog gathers into batches of `max_batch` — 173 kB
    // of calldata each, until halved.
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.set_automine(false).await.unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let full_batch_sent = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (stand.nodes.metric_sum("dvn_submissions_total").await >= 2.0).then_some(())
    })
    .await;
    assert!(
        full_batch_sent.is_some(),
        "no execute went out behind the first"
    );
    dst.chain.set_automine(true).await.unwrap();
    dst.chain.mine(1).await.unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &sent).await;
    assert_eq!(report.duplicates, vec![]);

    let verifying = stand.verifying_transactions(Direction::AToB).await;
    let mut largest = 0;
    for v in &verifying {
        let size = v.tx.inner.encoded_2718().len();
        println!("execute of {} params: {size} bytes", v.params);
        assert!(
            size <= GETH_TX_MAX_SIZE,
            "an execute of {} params is {size} bytes",
            v.params
        );
        largest = largest.max(v.params);
    }
    // Halved only as far as needed: a full batch of 255 went out as one of 128.
    assert!(
        largest >= MAX_BATCH as u64 / 2,
        "largest execute carried {largest} params: {} transactions",
        verifying.len()
    );
}
