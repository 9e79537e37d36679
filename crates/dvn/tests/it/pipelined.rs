//! Pipelined submission (`submitter.max_in_flight`): a backlog left by an outage goes out as
//! several `execute`s in flight at once from one submitter (consecutive nonces); while the
//! destination stalls, only the lowest is fee-bumped; the submitting node killed with all of
//! them pending restarts from its store; when blocks come again every packet is verified
//! exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::primitives::Address;
use alloy::providers::Provider;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

const MAX_IN_FLIGHT: usize = 4;
const MAX_BATCH: usize = 5;

/// Per submitter account: how many of its transactions the destination holds unmined.
async fn unmined(stand: &Stand, accounts: &[Address]) -> Vec<u64> {
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let mut out = Vec::new();
    for a in accounts {
        let mined = dst.chain.provider.get_transaction_count(*a).await.unwrap();
        let pending = dst
            .chain
            .provider
            .get_transaction_count(*a)
            .pending()
            .await
            .unwrap();
        out.push(pending.saturating_sub(mined));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_as_several_executes_in_flight_and_each_packet_is_verified_once() {
    let options = NodeOptions {
        max_batch: MAX_BATCH,
        max_in_flight: MAX_IN_FLIGHT,
        replace_after_secs: 2,
        ..NodeOptions::default()
    };
    let mut stand = Stand::new(DevnetConfig::default(), options).await;
    // The outage: a backlog of 40 packets builds while every node is down, and the destination
    // stops producing blocks, so whatever the nodes send stays in its pool where it can be seen.
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 40)
        .await
        .unwrap();
    let admins = stand
        .devnet
        .sides(Direction::AToB)
        .1
        .roles
        .dvn_admins
        .clone();
    stand
        .devnet
        .sides(Direction::AToB)
        .1
        .chain
        .set_automine(false)
        .await
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();

    // The 40 packets fall in at most two 60-s rotation slots, so one region owns at least 20:
    // four full batches of five, all in flight at once from its account — never more.
    let deepest = AtomicU64::new(0);
    let submitter = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let depths = unmined(&stand, &admins).await;
        let max = depths.iter().copied().max().unwrap_or(0);
        deepest.fetch_max(max, Ordering::Relaxed);
        (max >= MAX_IN_FLIGHT as u64).then(|| depths.iter().position(|d| *d == max).unwrap())
    })
    .await;
    let Some(submitter) = submitter else {
        stand.dump_logs();
        panic!(
            "no submitter had {MAX_IN_FLIGHT} executes in flight (deepest seen {})",
            deepest.into_inner()
        );
    };
    // Node i submits from the DVN's i-th admin account.
    let node = submitter;

    // Stuck: the lowest is replaced with higher fees (same nonce), the rest wait behind it.
    let replaced = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (stand.nodes.nodes[node]
            .metric_sum("dvn_submission_replacements_total")
            .await
            .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(
        replaced.is_some(),
        "the stuck lowest execute was not replaced"
    );
    let depths = unmined(&stand, &admins).await;
    assert_eq!(
        depths[submitter], MAX_IN_FLIGHT as u64,
        "a replacement takes the same nonce: still {MAX_IN_FLIGHT} in flight, not more ({depths:?})"
    );

    // The submitting node is killed with all of them pending and comes back from its store.
    stand.nodes.nodes[node].kill();
    stand.nodes.start(&[node]).await.unwrap();
    let depths = unmined(&stand, &admins).await;
    assert!(
        depths[submitter] <= MAX_IN_FLIGHT as u64,
        "the restarted node sent more while {MAX_IN_FLIGHT} were in flight: {depths:?}"
    );

    // Blocks again: the pool's executes land, the rest of the backlog follows.
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.set_automine(true).await.unwrap();
    dst.chain.mine(1).await.unwrap();
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
    let deepest = deepest.into_inner();
    assert!(
        deepest <= MAX_IN_FLIGHT as u64,
        "more than {MAX_IN_FLIGHT} executes of one account were in flight ({deepest})"
    );
}
