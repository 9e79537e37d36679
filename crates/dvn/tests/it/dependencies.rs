//! Issue 10 §7: the store's PostgreSQL fails under load. Killed mid-burst, then back: nothing
//! lost, nothing verified twice, `/ready` showed it. A lock held past the statement timeout:
//! the node's statements are cancelled (not stuck), retried, and it resumes by itself.

use std::process::Command;

use dvn_devnet::nodes::{NodeOptions, REGIONS};
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::json;

use crate::common::Stand;
use crate::common::{log_until, metric_until};
use crate::e2e::TIMEOUT;
use crate::pg::PrivatePostgres;

fn psql(pg: &PrivatePostgres, db: &str, sql: &str) -> std::process::Child {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &pg.port.to_string(),
            "-d",
            db,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_burst_and_locked_past_the_timeout_loses_and_doubles_nothing() {
    let mut pg = PrivatePostgres::start().await;
    for region in REGIONS {
        assert!(psql(&pg, "postgres", &format!("create database {region}"))
            .wait()
            .unwrap()
            .success());
    }
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    for node in &stand.nodes.nodes {
        let url = format!("postgres://postgres@127.0.0.1:{}/{}", pg.port, node.region);
        node.edit_config(|c| {
            c["store"] = json!({ "url": url, "statement_timeout_ms": 2000 });
        })
        .unwrap();
    }
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 10)
        .await
        .unwrap();
    // Killed while the burst is being worked on.
    pg.stop();
    let second = stand
        .devnet
        .send_messages(Direction::AToB, 10)
        .await
        .unwrap();
    for node in &stand.nodes.nodes {
        let down = metric_until(node, "dvn_component_up", &["component=\"store\""], |v| {
            v == 0.0
        })
        .await;
        assert!(down, "{}: the store shows down", node.region);
        assert!(
            node.metrics().await.is_some(),
            "{} keeps serving",
            node.region
        );
    }
    pg.resume().await;
    let mut all: Vec<_> = first.into_iter().chain(second).collect();
    stand.deliver(Direction::AToB, &all, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &all).await;

    // A session holds the packets table of aws longer than the statement timeout.
    let mut lock = psql(
        &pg,
        "aws",
        "begin; lock table packets in access exclusive mode; select pg_sleep(8); commit;",
    );
    let held = stand
        .devnet
        .send_messages(Direction::AToB, 5)
        .await
        .unwrap();
    let cancelled = log_until(&stand.nodes.nodes[0], |log| {
        log.contains("statement timeout")
    })
    .await;
    assert!(
        cancelled,
        "aws's statements were cancelled by the timeout, not stuck"
    );
    assert!(lock.wait().unwrap().success());
    all.extend(held);
    stand.deliver(Direction::AToB, &all, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &all).await;
}
