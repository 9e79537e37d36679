//! Scenarios 1 and 7: three nodes, messages both ways, everything verified exactly once and
//! delivered, in far fewer `execute` transactions than packets — on SQLite and on PostgreSQL.

use std::time::Duration;

use alloy::primitives::U256;
use dvn_devnet::nodes::{NodeOptions, StoreKind, REGIONS};
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::pg::{base_url, PgDatabases};

pub const TIMEOUT: Duration = Duration::from_secs(90);

async fn scenario_one(store: StoreKind) {
    let options = NodeOptions {
        store,
        ..NodeOptions::default()
    };
    let mut stand = Stand::new(DevnetConfig::default(), options).await;
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
        eprintln!(
            "{direction:?}: {} packets in {} execute transactions",
            packets.len(),
            report.execute_transactions
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_sqlite_verify_25_messages_each_way_in_batches() {
    scenario_one(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_postgres_verify_25_messages_each_way_in_batches() {
    let dbs = PgDatabases::create(&REGIONS);
    scenario_one(StoreKind::Postgres {
        base_url: base_url(),
        prefix: dbs.prefix.clone(),
    })
    .await;
}

/// The harness itself: a port picked for a node can be taken by a parallel test before the
/// node binds it; the node is moved to new ports (peers follow) and everything still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_port_was_taken_is_moved_and_the_regions_still_verify() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let taken = std::net::TcpListener::bind(("127.0.0.1", stand.nodes.nodes[1].peer_port)).unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    assert_ne!(
        stand.nodes.nodes[1].peer_port,
        taken.local_addr().unwrap().port(),
        "aliyun moved off the taken port"
    );
    stand.round_trip_both_ways(2).await;
}
