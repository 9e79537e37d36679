//! A node back from an outage: what the other regions verified while it was down is found done
//! on the destination and not signed again — the sign stage checks a page's path ends first
//! and, when either is done there, every packet on its own.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{labelled_metric, Stand};
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_alone_signs_nothing_the_others_verified_while_it_was_down() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    // gcp is down while aws and aliyun verify (and the executor delivers) eight packets: a
    // page with two ends and six packets between them.
    let packets = stand.verify_with_one_down(2, 8).await;
    // By the time gcp is back they are old: well beyond their confirmations on the source and
    // older than a fresh packet by the destination's clock, so the sign stage reads the
    // destination for them instead of signing them at once.
    let (src, dst) = stand.devnet.sides(Direction::AToB);
    src.chain.mine(10).await.unwrap();
    let dst_now = dst.chain.timestamp().await.unwrap();
    dst.chain.mine_at(dst_now + 30).await.unwrap();
    stand.nodes.start(&[2]).await.unwrap();

    let gcp = &stand.nodes.nodes[2];
    let settled = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let done = labelled_metric(gcp, "dvn_packets", &["state=\"skipped\""]).await
            + labelled_metric(gcp, "dvn_packets", &["state=\"verified\""]).await;
        (done >= packets.len() as f64).then_some(())
    })
    .await;
    assert!(settled.is_some(), "gcp closes the eight packets");
    let signed = gcp.metric_sum("dvn_packets_signed_total").await.unwrap();
    assert_eq!(
        signed, 0.0,
        "gcp signed none of what the destination already had"
    );
    stand.assert_invariants(Direction::AToB, &packets).await;
}
