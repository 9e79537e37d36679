//! Scenario 3: nodes killed with SIGKILL in the middle of a run — after signing, after
//! broadcasting — and restarted: no packet lost, none verified twice.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_nodes_lose_nothing_and_verify_nothing_twice() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let mut all = Vec::new();

    // Round 1: kill aws as soon as it has signed something (between signing and submitting).
    all.extend(
        stand
            .devnet
            .send_messages(Direction::AToB, 6)
            .await
            .unwrap(),
    );
    let aws = &stand.nodes.nodes[0];
    let signed = eventually(TIMEOUT, Duration::from_millis(20), || async {
        (aws.metric_sum("dvn_packets_signed_total").await? >= 1.0).then_some(())
    })
    .await;
    assert!(signed.is_some());
    stand.nodes.nodes[0].kill();

    // Round 2: kill whichever node broadcasts first, right after it broadcast.
    all.extend(
        stand
            .devnet
            .send_messages(Direction::AToB, 6)
            .await
            .unwrap(),
    );
    // aws may own these packets first: ownership moves on with the destination's clock, so the
    // destination keeps producing blocks as a live chain would.
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let submitter = eventually(TIMEOUT, Duration::from_millis(20), || async {
        let _ = dst.chain.keep_up_with_wall_clock().await;
        for i in [1usize, 2] {
            if stand.nodes.nodes[i]
                .metric_sum("dvn_submissions_total")
                .await
                .unwrap_or(0.0)
                >= 1.0
            {
                return Some(i);
            }
        }
        None
    })
    .await
    .expect("a node submitted");
    stand.nodes.nodes[submitter].kill();

    // Both come back; more traffic while they catch up; then a third kill of the other one.
    stand.nodes.start(&[0, submitter]).await.unwrap();
    all.extend(
        stand
            .devnet
            .send_messages(Direction::AToB, 6)
            .await
            .unwrap(),
    );
    let other = 3 - submitter;
    stand.nodes.nodes[other].kill();
    stand.nodes.start(&[other]).await.unwrap();

    stand.deliver(Direction::AToB, &all, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &all).await;
    assert_eq!(report.duplicates, vec![]);
}
