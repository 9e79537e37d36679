//! The lead a partial batch closes with before the destination's next block
//! (`pipeline::batching::BlockLead`): on a destination making a block every second, every
//! partial batch of ours is counted, once mined, as having made the block it closed for or a
//! later one — the count the lead widens on — and the lead in force never exceeds
//! `submitter.block_lead_ms`.

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{labelled_metric, metric_until, Stand};
use crate::e2e::TIMEOUT;

const ON_B: &str = "chain=\"conflux-espace\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partial_batch_is_counted_against_the_block_it_closed_for() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.devnet.b.chain.set_interval_mining(1).await.unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    // Three rounds of two packets: each goes out as a partial batch (max_batch is 100).
    let mut all = Vec::new();
    for _ in 0..3 {
        let packets = stand
            .devnet
            .send_messages(Direction::AToB, 2)
            .await
            .unwrap();
        stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
        all.extend(packets);
    }
    stand.assert_invariants(Direction::AToB, &all).await;
    let mut submitted = 0.0;
    for node in &stand.nodes.nodes {
        let sent = labelled_metric(node, "dvn_submissions_total", &[ON_B]).await;
        submitted += sent;
        // Each of this node's executes on B, once its receipt is settled, is counted once:
        // made or missed.
        let counted = metric_until(node, "dvn_submit_batches_landed_total", &[ON_B], |n| {
            n == sent
        })
        .await;
        let landed = labelled_metric(node, "dvn_submit_batches_landed_total", &[ON_B]).await;
        assert!(
            counted,
            "{}: {sent} executes sent on B, {landed} counted as landed",
            node.region
        );
        let lead = labelled_metric(node, "dvn_submit_lead_seconds", &[ON_B]).await;
        assert!(
            lead <= 0.5,
            "{}: a lead of {lead} s, beyond block_lead_ms",
            node.region
        );
        if sent > 0.0 {
            assert!(lead > 0.0, "{}: sent without a lead in force", node.region);
        }
    }
    assert!(submitted >= 1.0, "no execute went out on B");
}
