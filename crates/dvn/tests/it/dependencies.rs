//! Issue 10 §7: the store fails under load. PostgreSQL killed mid-burst, then back: nothing
//! lost, nothing verified twice, `/ready` showed it. A lock held past the statement timeout:
//! the node's statements are cancelled (not stuck), retried, and it resumes by itself. The
//! SQLite store's disk full: the node stays up, shows it, the others verify; space freed, it
//! resumes by itself. A node started before its PostgreSQL and Redis (a container stack
//! comes up in any order) waits for them, alive and not ready, then runs.

use std::process::Command;

use dvn_devnet::nodes::{NodeOptions, REGIONS};
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::json;

use crate::common::{log_until, metric_until, ready_status};
use crate::common::{SmallDisk, Stand};
use crate::e2e::TIMEOUT;
use crate::lease::RedisServer;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_disk_is_shown_loses_nothing_and_heals_by_itself() {
    let disk = SmallDisk::mount(32);
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let store = format!("sqlite://{}", disk.path().join("aws.db").display());
    stand.nodes.nodes[0]
        .edit_config(|c| c["store"] = json!({ "url": store, "min_free_mb": 4 }))
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let mut all = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &all, TIMEOUT).await;

    // The disk fills up: aws stays up and says its store is down, naming the free space.
    let filler = disk.fill();
    let aws = &stand.nodes.nodes[0];
    let shown =
        dvn_devnet::wait::eventually(TIMEOUT, std::time::Duration::from_millis(200), || async {
            let (status, body) = crate::common::ready_status(aws).await?;
            let disk = &body["components"]["store_disk"];
            (status == 503
                && body["components"]["store"] == json!(false)
                && disk["free_bytes"].as_u64()? < disk["min_free_bytes"].as_u64()?
                && disk.get("dir").is_none())
            .then_some(())
        })
        .await;
    if shown.is_none() {
        stand.dump_logs();
        panic!("aws's /ready did not show the full disk");
    }
    // Traffic while it is full: the other two verify it; aws keeps serving.
    let during = stand
        .devnet
        .send_messages(Direction::AToB, 5)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &during, TIMEOUT).await;
    assert!(aws.metrics().await.is_some(), "aws keeps serving");
    let failed = log_until(aws, |log| log.contains("database or disk is full")).await;
    if !failed {
        stand.dump_logs();
        panic!("aws's store writes did not fail on the full disk");
    }
    all.extend(during);

    // Space freed: aws is ready again by itself, catches up and verifies with the others.
    std::fs::remove_file(filler).unwrap();
    let ready =
        dvn_devnet::wait::eventually(TIMEOUT, std::time::Duration::from_millis(200), || async {
            let (status, _) = crate::common::ready_status(aws).await?;
            (status == 200).then_some(())
        })
        .await;
    assert!(ready.is_some(), "aws ready again once space was freed");
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    all.extend(after);
    stand.deliver(Direction::AToB, &all, TIMEOUT).await;
    let caught_up = metric_until(aws, "dvn_backlog_packets", &[], |v| v == 0.0).await;
    if !caught_up {
        stand.dump_logs();
        panic!("aws did not close every packet, the missed ones too");
    }
    let report = stand.assert_invariants(Direction::AToB, &all).await;
    assert_eq!(report.duplicates, vec![]);
}

/// podman-compose ignores `depends_on: condition: service_healthy`, and a restart policy
/// without backoff turns an exit into a loop: a node whose store and Redis are not up yet must
/// stay alive, not ready, saying what it waits for — and run once they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_store_and_redis_waits_for_them_then_runs() {
    let mut pg = PrivatePostgres::start().await;
    assert!(psql(&pg, "postgres", "create database aws")
        .wait()
        .unwrap()
        .success());
    pg.stop();
    let mut redis = RedisServer::start().await;
    redis.stop();
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/aws", pg.port);
    stand.nodes.nodes[0]
        .edit_config(|c| {
            c["store"] = json!({ "url": url });
            c["redis"] = json!({ "url": redis.url, "lease_ttl_ms": 2000 });
        })
        .unwrap();
    stand.nodes.start(&[1, 2]).await.unwrap();
    stand.nodes.start_answering(&[0]).await.unwrap();
    let waits_for = |what: &'static str| {
        let node = &stand.nodes.nodes[0];
        async move {
            dvn_devnet::wait::eventually(TIMEOUT, std::time::Duration::from_millis(200), || async {
                let (status, body) = ready_status(node).await?;
                let reason = body["reason"].as_str().unwrap_or_default().to_string();
                (status == 503 && reason.contains(what)).then_some(reason)
            })
            .await
        }
    };
    let reason = waits_for("cannot reach the store").await;
    assert!(reason.is_some(), "not waiting for the store");
    pg.resume().await;
    let reason = waits_for("cannot reach Redis").await;
    assert!(
        reason.is_some(),
        "not waiting for Redis once the store is up"
    );
    redis.restart().await;
    let ready =
        dvn_devnet::wait::eventually(TIMEOUT, std::time::Duration::from_millis(200), || async {
            (ready_status(&stand.nodes.nodes[0]).await?.0 == 200).then_some(())
        })
        .await;
    if ready.is_none() {
        stand.dump_logs();
        panic!("the node did not become ready once its store and Redis were up");
    }
    // With aliyun down, a quorum needs aws: it runs on the late store and lease.
    stand.verify_with_one_down(1, 4).await;
}
