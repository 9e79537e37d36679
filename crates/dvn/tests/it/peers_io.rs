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
