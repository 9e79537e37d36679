//! S1: the destination stops mining; the submitter's transaction sits in the pool and is
//! replaced with higher fees (same nonce); when blocks come again exactly one lands and every
//! packet is verified once.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_execute_is_replaced_and_lands_once() {
    let options = NodeOptions {
        replace_after_secs: 2,
        ..NodeOptions::default()
    };
    let mut stand = Stand::new(DevnetConfig::default(), options).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.set_automine(false).await.unwrap();

    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let replaced = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (stand
            .nodes
            .metric_sum("dvn_submission_replacements_total")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    if replaced.is_none() {
        stand.dump_logs();
        panic!("no replacement of the stuck transaction");
    }

    let (_, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.set_automine(true).await.unwrap();
    dst.chain.mine(1).await.unwrap();
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
}
