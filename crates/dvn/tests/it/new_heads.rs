//! The new-heads stream (`chains[].ws`): a block announced on it wakes the watchers at once,
//! so a packet is seen long before the next poll; and since nothing read from the stream is
//! trusted, a dead stream or one announcing another chain's blocks costs only the poll's
//! latency, never a packet — and `dvn doctor` names a stream that is down.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{labelled_metric, metric_until, Stand};
use crate::ops_tools::{doctor, finding};

const ON_A: &str = "chain=\"ethereum\"";
const ON_B: &str = "chain=\"conflux-espace\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_block_wakes_the_watchers_long_before_their_poll() {
    // The watchers poll every five minutes: a packet verified within the e2e timeout (90 s)
    // was found because its block was announced, not by a poll.
    let poll = Duration::from_secs(300);
    let options = NodeOptions {
        poll_interval_ms: poll.as_millis() as u64,
        ..NodeOptions::default()
    };
    let mut stand = Stand::new(DevnetConfig::default(), options).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    // Every watcher has taken its first look (at start) and is now waiting out its poll, with
    // the stream subscribed.
    let head = stand.devnet.a.chain.head().await.unwrap() as f64;
    for node in &stand.nodes.nodes {
        assert!(
            metric_until(node, "dvn_chain_head_stream_up", &[ON_A], |up| up == 1.0).await,
            "{}: the new-heads stream of A never came up",
            node.region
        );
        assert!(
            metric_until(node, "dvn_chain_cursor", &[ON_A], |cursor| cursor >= head).await,
            "{}: the watcher of A never caught up to {head}",
            node.region
        );
    }
    let packets = stand.send_delivered(Direction::AToB, 2).await;
    stand.assert_invariants(Direction::AToB, &packets).await;
    for node in &stand.nodes.nodes {
        let announced = labelled_metric(node, "dvn_chain_heads_announced_total", &[ON_A]).await;
        assert!(announced >= 1.0, "{}: no block of A announced", node.region);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_lying_stream_costs_only_the_poll() {
    let devnet = dvn_devnet::Devnet::start(DevnetConfig::default())
        .await
        .unwrap();
    let options = NodeOptions {
        // Nothing listens on port 1: A's stream never comes up.
        ws_a: Some("ws://127.0.0.1:1".into()),
        // B's "stream" announces A's blocks: numbers and times of another chain.
        ws_b: Some(devnet.a.chain.ws_url()),
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    stand.round_trip_both_ways(3).await;
    // The operator's daily check names the stream that is down, as a P3: nothing is lost.
    let config = stand.nodes.nodes[0]
        .config_path
        .to_str()
        .unwrap()
        .to_string();
    let run = doctor(&config, &[]);
    let down = finding(&run, "new-heads stream: ethereum");
    assert_eq!(down["severity"], "P3", "{down}");
    assert_eq!(
        finding(&run, "new-heads stream: conflux-espace")["ok"],
        true
    );
    for node in &stand.nodes.nodes {
        let up = labelled_metric(node, "dvn_chain_head_stream_up", &[ON_A]).await;
        assert_eq!(up, 0.0, "{}: a stream from nowhere is up", node.region);
        let lied = labelled_metric(node, "dvn_chain_heads_announced_total", &[ON_B]).await;
        assert!(
            lied >= 1.0,
            "{}: the lying stream of B announced nothing (the test did not test)",
            node.region
        );
    }
}
