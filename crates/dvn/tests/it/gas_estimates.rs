//! Gas estimates learned from our mined `execute`s (`pipeline/gas.rs`): a region reuses one
//! for the next call of the same shape instead of estimating again — and the one run of the
//! call it still makes before sending catches a call that would revert, so a submitter that
//! lost `ADMIN_ROLE` spends nothing even with a learned estimate in hand.

use std::time::Duration;

use alloy::providers::Provider;
use dvn_devnet::nodes::{NodeOptions, REGIONS};
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{labelled_metric, metric_until, set_admin_role, Stand};
use crate::e2e::TIMEOUT;

const ON_B: &[&str] = &["chain=\"conflux-espace\""];

/// `execute`s sent on B with a learned estimate.
async fn reused(node: &dvn_devnet::nodes::DvnNode) -> f64 {
    labelled_metric(node, "dvn_execute_gas_estimates_reused_total", ON_B).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_gas_estimate_is_reused_and_a_call_that_would_revert_is_still_not_sent() {
    // Only the designated region may start a packet for a minute: every `execute` below is
    // the designated region's own.
    let options = NodeOptions {
        takeover_after_secs: 120,
        ..NodeOptions::default()
    };
    let mut stand = Stand::new(DevnetConfig::default(), options).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, dst) = stand.devnet.sides(Direction::AToB);

    // Everything below happens in one 60 s slot of the source chain (the designated region is
    // the slot's): wait for one with at least 45 s left.
    let now = eventually(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let _ = src.chain.keep_up_with_wall_clock().await;
            let now = src.chain.timestamp().await.ok()?;
            (60 - now % 60 >= 45).then_some(now)
        },
    )
    .await
    .expect("a slot with time left");
    let regions = ["aliyun", "aws", "gcp"];
    let owner_name = regions[dvn::pipeline::turns::designated(now + 1, 3)];
    let owner = REGIONS.iter().position(|r| *r == owner_name).unwrap();
    let node = &stand.nodes.nodes[owner];
    let submitter = dst.roles.dvn_admins[owner];

    // One packet, one `execute` of one param: estimated — when the step that gathers it
    // comes before the batch closes, while it gathers (the one-param anchor, `gas.rs`), and
    // sent with that — and learned from its receipt (the packet counts as verified on the node
    // in the same step that learns).
    let first = stand.send_delivered(Direction::AToB, 1).await;
    assert!(
        metric_until(node, "dvn_packets_verified_total", ON_B, |v| v >= 1.0).await,
        "{owner_name} settled its first execute"
    );
    let after_first = reused(node).await;
    assert!(
        after_first <= 1.0,
        "at most the anchored estimate before a receipt: {after_first}"
    );

    // The next packet goes out as the same shape: sent with the learned estimate.
    let second = stand.send_delivered(Direction::AToB, 1).await;
    assert_eq!(
        reused(node).await,
        after_first + 1.0,
        "the second execute reused the estimate"
    );
    let sent = node.metric_sum("dvn_submissions_total").await.unwrap();
    assert_eq!(sent, 2.0, "{owner_name} sent both executes");

    // Another admin revokes the owner's ADMIN_ROLE. Its learned estimate still fits the next
    // packet's call, but the call's one run reverts: nothing is sent and the loss is noticed.
    let other_admin = dst.roles.dvn_admins[(owner + 1) % 3];
    set_admin_role(dst, other_admin, submitter, false).await;
    let nonce_before = dst
        .chain
        .provider
        .get_transaction_count(submitter)
        .await
        .unwrap();
    let third = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    assert!(
        metric_until(node, "dvn_submitter_is_admin", ON_B, |v| v == 0.0).await,
        "{owner_name} noticed it lost ADMIN_ROLE"
    );
    let nonce_after = dst
        .chain
        .provider
        .get_transaction_count(submitter)
        .await
        .unwrap();
    assert_eq!(
        nonce_after, nonce_before,
        "{owner_name} sent no transaction without the role"
    );
    assert_eq!(node.metric_sum("dvn_submissions_total").await.unwrap(), 2.0);

    // Granted back: the packet goes out, once, and everything holds.
    set_admin_role(dst, other_admin, submitter, true).await;
    stand.deliver(Direction::AToB, &third, TIMEOUT).await;
    let all: Vec<_> = [first, second, third].concat();
    let report = stand.assert_invariants(Direction::AToB, &all).await;
    assert_eq!(report.duplicates, vec![]);
    assert_eq!(report.execute_transactions, 3);
}
