//! Issue 10 §3: no serial peer I/O on the critical path. One region is a black hole (accepts
//! connections, never answers): the other two still verify a 200-packet burst, each packet
//! exactly once, because pushes leave in the background and pulls go out concurrently.

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::BlackHole;
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::json;

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_peer_does_not_slow_the_other_two() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let hole = BlackHole::start().await.unwrap();
    // gcp hangs: the others reach a socket that never answers.
    for node in &stand.nodes.nodes[..2] {
        node.edit_config(|c| {
            for peer in c["peers"].as_array_mut().unwrap() {
                if peer["name"] == "gcp" {
                    peer["url"] = json!(hole.url.replace("http://", "https://"));
                }
            }
        })
        .unwrap();
    }
    stand.nodes.start(&[0, 1]).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 200)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &sent).await;
    eprintln!(
        "200 packets with a black-hole peer: {} execute transactions",
        report.execute_transactions
    );
}

/// A peer's signature that arrives before this node has signed the packet (the regions sign a
/// backlog in step) is held, and stored when this node signs it: the quorum forms at once,
/// without pulling it again. aws and aliyun only, so a quorum needs both; aws's signing is
/// paused until aliyun's push has reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_pushed_before_this_node_signed_is_used_when_it_signs() {
    use dvn::config::Config;
    use dvn::store::{PauseScope, Store};
    use std::time::{Duration, Instant};

    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let config = Config::load(&stand.nodes.nodes[0].config_path).unwrap();
    let source = config.chains[0].eid;
    let aws_store = Store::connect(&config.store.url).await.unwrap();
    let paused = PauseScope::Chain { eid: source };
    aws_store
        .pause(&paused, "test: sign late", "test")
        .await
        .unwrap();
    stand.nodes.start(&[0, 1]).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    // aliyun signs and pushes to aws, which has not built the param: held there.
    let (aws, aliyun) = (&stand.nodes.nodes[0], &stand.nodes.nodes[1]);
    let deadline = Instant::now() + TIMEOUT;
    while crate::common::labelled_metric(
        aliyun,
        "dvn_peer_push_total",
        &["peer=\"aws\"", "outcome=\"accepted\""],
    )
    .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "aliyun's push never reached aws");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(aws.metric_sum("dvn_packets_signed_total").await, Some(0.0));
    aws_store.unpause(&paused).await.unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
    assert_eq!(
        aws.metric_sum("dvn_peer_pulls_total").await,
        Some(0.0),
        "aws had aliyun's signature when it signed: nothing to pull"
    );
    let row = aws_store
        .packet(sent[0].packet.guid)
        .await
        .unwrap()
        .unwrap();
    let signers: Vec<_> = aws_store
        .signatures(row.call_hash.unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|(signer, _)| signer)
        .collect();
    assert_eq!(
        signers.len(),
        2,
        "aws stored aliyun's and its own: {signers:?}"
    );
}
