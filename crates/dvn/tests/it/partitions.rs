//! Issue 10 §4: partitions between regions, with every region's connections to every other
//! region's peer listener going through a link the test can cut (TCP; the mutual TLS passes
//! through). Each scenario ends with the chain-read invariants: nothing lost, nothing
//! verified twice.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::TcpLink;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::VerificationState;

use crate::common::metric_until;
use crate::common::Stand;
use crate::e2e::TIMEOUT;

type Links = Vec<Vec<Option<TcpLink>>>;

fn link(links: &Links, from: usize, to: usize) -> &TcpLink {
    links[from][to].as_ref().unwrap()
}

/// Cuts (or heals) both directions between `a` and `b`.
fn cut_between(links: &Links, a: usize, b: usize, cut: bool) {
    for (from, to) in [(a, b), (b, a)] {
        if cut {
            link(links, from, to).cut();
        } else {
            link(links, from, to).heal();
        }
    }
}

async fn partitioned_stand() -> (Stand, Links) {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let links = stand.nodes.route_peers_through_links().await.unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    (stand, links)
}

/// (a) gcp is cut off from both others: aws and aliyun verify everything; once gcp rejoins it
/// catches up — its own signed packets are found verified — without a second verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_region_cut_off_the_other_two_verify_and_it_rejoins_without_duplicates() {
    let (stand, links) = partitioned_stand().await;
    cut_between(&links, 2, 0, true);
    cut_between(&links, 2, 1, true);
    let during = stand
        .devnet
        .send_messages(Direction::AToB, 5)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &during, TIMEOUT).await;
    cut_between(&links, 2, 0, false);
    cut_between(&links, 2, 1, false);
    let after = stand
        .devnet
        .send_messages(Direction::BToA, 5)
        .await
        .unwrap();
    stand.deliver(Direction::BToA, &after, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &during).await;
    stand.assert_invariants(Direction::BToA, &after).await;
    // gcp signed the packets sent during the partition and learns they are done.
    let gcp = &stand.nodes.nodes[2];
    let settled = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let text = gcp.metrics().await?;
        let signed: f64 = text
            .lines()
            .find(|l| l.starts_with("dvn_packets{state=\"signed\"}"))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        (signed == 0.0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "gcp has no signed packet left waiting");
}

/// (b) no two regions can reach each other: nothing verified and nothing submitted; after
/// healing everything is verified once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_two_regions_can_talk_nothing_verified_until_healed() {
    let (stand, links) = partitioned_stand().await;
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        cut_between(&links, a, b, true);
    }
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    for node in &stand.nodes.nodes {
        let signed = metric_until(node, "dvn_packets_signed_total", &[], |v| v >= 3.0).await;
        assert!(signed, "{} signed alone", node.region);
    }
    assert_eq!(stand.nodes.metric_sum("dvn_submissions_total").await, 0.0);
    for p in &sent {
        assert_eq!(
            stand
                .devnet
                .verification_state(Direction::AToB, p)
                .await
                .unwrap(),
            VerificationState::Verifying
        );
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        cut_between(&links, a, b, false);
    }
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}

/// (c) asymmetric: with gcp down, aws reaches aliyun but aliyun cannot reach aws. aws's pushes
/// arrive and aws pulls aliyun's signature, so both sides still complete; exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_partition_still_verifies_exactly_once() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let links = stand.nodes.route_peers_through_links().await.unwrap();
    stand.nodes.start(&[0, 1]).await.unwrap();
    link(&links, 1, 0).cut();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let back = stand
        .devnet
        .send_messages(Direction::BToA, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.deliver(Direction::BToA, &back, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
    stand.assert_invariants(Direction::BToA, &back).await;
}
