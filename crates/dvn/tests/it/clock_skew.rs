//! Issue 10 §5 (clocks): one region's wall clock runs 600 s ahead (libfaketime). Submitter
//! turns follow the destination's block time, so that region still submits the packets that
//! are its turn — verified once — and its offset is exported and warned about.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{labelled_metric, Stand};
use crate::e2e::TIMEOUT;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_clock_is_ten_minutes_ahead_still_takes_its_turn() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let aws = &mut stand.nodes.nodes[0];
    aws.set_env("LD_PRELOAD", LIBFAKETIME);
    aws.set_env("FAKETIME", "+600");
    aws.set_env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    aws.set_env("FAKETIME_DONT_RESET", "1");
    // gcp stays down: aws and aliyun make the quorum.
    stand.nodes.start(&[0, 1]).await.unwrap();

    // Send in a rotation slot whose designated region is aws (sorted regions: aliyun, aws,
    // gcp → index 1): the source block's timestamp decides.
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let now = src.chain.timestamp().await.unwrap() + 1;
    let slot = dvn::pipeline::turns::ROTATION_SLOT_SECS;
    let mut at = now - now % slot;
    while dvn::pipeline::turns::designated(at, 3) != 1 || at < now {
        at += slot;
    }
    src.chain.set_time(at).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    // Both chains move to that time, as live chains would.
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.set_time(at).await.unwrap();
    dst.chain.mine(1).await.unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;

    let aws = &stand.nodes.nodes[0];
    assert!(
        aws.metric_sum("dvn_submissions_total").await.unwrap() >= 1.0,
        "aws took its turn despite its clock"
    );
    let offset = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let offset = labelled_metric(
            aws,
            "dvn_clock_offset_seconds",
            &["chain=\"conflux-espace\""],
        )
        .await;
        (offset > 300.0).then_some(offset)
    })
    .await;
    assert!(offset.is_some(), "aws exports its clock offset");
    let log = std::fs::read_to_string(&aws.log_path).unwrap();
    assert!(log.contains("check NTP"), "aws warns about its clock");
}
