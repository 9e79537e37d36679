//! Scenario 1: three nodes, messages both ways, everything verified once and delivered, in
//! far fewer `execute` transactions than packets.

use std::time::Duration;

use alloy::primitives::U256;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;

const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_verify_25_messages_each_way_in_batches() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let a_to_b = stand
        .devnet
        .send_messages(Direction::AToB, 25)
        .await
        .unwrap();
    let b_to_a = stand
        .devnet
        .send_messages(Direction::BToA, 25)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &a_to_b, TIMEOUT).await;
    stand.deliver(Direction::BToA, &b_to_a, TIMEOUT).await;
    for (direction, packets) in [(Direction::AToB, &a_to_b), (Direction::BToA, &b_to_a)] {
        let report = stand.assert_invariants(direction, packets).await;
        assert!(
            report.execute_transactions * 5 <= packets.len(),
            "{direction:?}: {} execute transactions for {} packets: batching is not working",
            report.execute_transactions,
            packets.len()
        );
    }
    assert_eq!(
        stand.devnet.counter(&stand.devnet.a).await.unwrap(),
        U256::from(25)
    );
    assert_eq!(
        stand.devnet.counter(&stand.devnet.b).await.unwrap(),
        U256::from(25)
    );
}
