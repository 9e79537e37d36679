//! Scenario 9: two replicas of one region share a Redis lease. Exactly one submits while the
//! other keeps watching and signing; kill the holder and the other takes over; every
//! transaction of the region's submitter lands (no conflicting nonces) and nothing is verified
//! twice.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::providers::Provider;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::json;

use crate::common::metric_until;
use crate::common::{warp_to_slot, Stand};
use crate::e2e::TIMEOUT;

/// A private redis-server on 127.0.0.1 for this test only (never the machine's shared one).
pub struct RedisServer {
    child: Child,
    pub url: String,
    port: u16,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    /// Stops it at once (a crash, a network cut).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A fresh server on the same port (Redis keeps nothing here: every lease is gone).
    pub async fn restart(&mut self) {
        self.stop();
        *self = Self::start_on(self.port).await;
    }

    async fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/setup.sh");
        let up = eventually(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        assert!(up.is_some(), "redis-server did not start");
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            port,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_one_region_share_the_submitter_role() {
    let mut stand = Stand::new(
        DevnetConfig::default(),
        NodeOptions {
            takeover_after_secs: 1,
            ..NodeOptions::default()
        },
    )
    .await;
    let redis = RedisServer::start().await;
    let replica = stand.nodes.add_replica(0).unwrap();
    for i in [0, replica] {
        stand.nodes.nodes[i]
            .edit_config(|c| c["redis"] = json!({ "url": redis.url, "lease_ttl_ms": 2000 }))
            .unwrap();
    }
    // aliyun only submits what is designated to it; gcp stays down; so aws (slot-designated,
    // or taking over from gcp) submits everything sent in an aws slot.
    stand.nodes.nodes[1]
        .edit_config(|c| c["submitter"]["takeover_after_secs"] = json!(3600))
        .unwrap();
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let aws_submitter = dst.roles.dvn_admins[0];
    // The deployment already used this account (DVN fee lib and destination config).
    let before = dst
        .chain
        .provider
        .get_transaction_count(aws_submitter)
        .await
        .unwrap();
    stand.nodes.start(&[0, replica, 1]).await.unwrap();

    let held = |i: usize| {
        let node = &stand.nodes.nodes[i];
        async move {
            node.metric_sum("dvn_submitter_lease_held")
                .await
                .unwrap_or(0.0)
        }
    };
    let holder = eventually(TIMEOUT, Duration::from_millis(100), || async {
        match (held(0).await, held(replica).await) {
            (h0, h3) if h0 == 1.0 && h3 == 0.0 => Some(0),
            (h0, h3) if h0 == 0.0 && h3 == 1.0 => Some(replica),
            _ => None,
        }
    })
    .await
    .expect("exactly one replica holds the lease");
    let other = if holder == 0 { replica } else { 0 };

    warp_to_slot(&stand, 1).await;
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 4)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &first, TIMEOUT).await;
    let by_holder = stand.nodes.nodes[holder]
        .metric_sum("dvn_submissions_total")
        .await
        .unwrap();
    let by_other = stand.nodes.nodes[other]
        .metric_sum("dvn_submissions_total")
        .await
        .unwrap();
    assert!(by_holder >= 1.0, "the lease holder submitted");
    assert_eq!(by_other, 0.0, "the replica without the lease sent nothing");
    assert!(
        stand.nodes.nodes[other]
            .metric_sum("dvn_packets_signed_total")
            .await
            .unwrap()
            >= 4.0,
        "…but it signed"
    );

    stand.nodes.nodes[holder].kill();
    warp_to_slot(&stand, 1).await;
    let second = stand
        .devnet
        .send_messages(Direction::AToB, 4)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &second, TIMEOUT).await;
    let by_other_after = stand.nodes.nodes[other]
        .metric_sum("dvn_submissions_total")
        .await
        .unwrap();
    assert!(by_other_after >= 1.0, "the other replica took over");

    let all: Vec<_> = first.into_iter().chain(second).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
    // Every transaction the region's submitter sent was mined: no two replicas raced a nonce.
    let mined = dst
        .chain
        .provider
        .get_transaction_count(aws_submitter)
        .await
        .unwrap()
        - before;
    assert_eq!(
        mined as f64,
        by_holder + by_other_after,
        "submissions vs mined transactions of the aws submitter"
    );
}

/// Issue 10 §7: Redis goes down and comes back three times while two replicas of aws and the
/// other regions keep working. Without the lease nobody in aws submits (the other regions do);
/// with it back, one replica does; fencing keeps the two from racing a nonce. Nothing lost,
/// nothing verified twice, every transaction of the aws submitter mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_redis_never_lets_two_replicas_race() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let mut redis = RedisServer::start().await;
    let replica = stand.nodes.add_replica(0).unwrap();
    for i in [0, replica] {
        stand.nodes.nodes[i]
            .edit_config(|c| c["redis"] = json!({ "url": redis.url, "lease_ttl_ms": 2000 }))
            .unwrap();
    }
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let aws_submitter = dst.roles.dvn_admins[0];
    let before = dst
        .chain
        .provider
        .get_transaction_count(aws_submitter)
        .await
        .unwrap();
    stand.nodes.start(&[0, replica, 1, 2]).await.unwrap();
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(
            stand
                .devnet
                .send_messages(Direction::AToB, 3)
                .await
                .unwrap(),
        );
        redis.stop();
        // Both aws replicas see the lease gone.
        for i in [0, replica] {
            let node = &stand.nodes.nodes[i];
            let lost = metric_until(node, "dvn_submitter_lease_held", &[], |v| v == 0.0).await;
            assert!(lost, "{} dropped the lease", node.region);
        }
        all.extend(
            stand
                .devnet
                .send_messages(Direction::AToB, 3)
                .await
                .unwrap(),
        );
        redis.restart().await;
    }
    stand.deliver(Direction::AToB, &all, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &all).await;
    let submitted = stand.nodes.nodes[0]
        .metric_sum("dvn_submissions_total")
        .await
        .unwrap()
        + stand.nodes.nodes[replica]
            .metric_sum("dvn_submissions_total")
            .await
            .unwrap();
    let replaced = stand.nodes.nodes[0]
        .metric_sum("dvn_submission_replacements_total")
        .await
        .unwrap()
        + stand.nodes.nodes[replica]
            .metric_sum("dvn_submission_replacements_total")
            .await
            .unwrap();
    let mined = dst
        .chain
        .provider
        .get_transaction_count(aws_submitter)
        .await
        .unwrap()
        - before;
    // Each submission (and each same-nonce replacement of one) takes one nonce at most.
    assert!(
        mined as f64 <= submitted,
        "aws mined {mined} transactions for {submitted} submissions ({replaced} replacements): no nonce raced"
    );
}

/// Issue 10 §5: replicas of one region keep separate stores, so the replica the lease moves to
/// does not know the transaction the other left pending. The aws holder's `execute` waits in
/// the destination's pool (no mining) when the holder is killed; the other replica takes the
/// lease, sees a transaction of its own account pending that it did not send, and waits
/// instead of sending the packets again with the next nonce. When blocks come again the
/// pending `execute` lands: every packet verified once, by one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_taking_the_lease_waits_for_the_transaction_the_other_left_pending() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let redis = RedisServer::start().await;
    let replica = stand.nodes.add_replica(0).unwrap();
    for i in [0, replica] {
        stand.nodes.nodes[i]
            .edit_config(|c| c["redis"] = json!({ "url": redis.url, "lease_ttl_ms": 2000 }))
            .unwrap();
    }
    // aliyun signs (the second signature of the quorum) but never takes over; gcp stays down.
    stand.nodes.nodes[1]
        .edit_config(|c| c["submitter"]["takeover_after_secs"] = json!(3600))
        .unwrap();
    stand.nodes.start(&[0, replica, 1]).await.unwrap();
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.set_automine(false).await.unwrap();

    warp_to_slot(&stand, 1).await;
    let packets = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    let holder = eventually(TIMEOUT, Duration::from_millis(50), || async {
        for i in [0, replica] {
            let sent = stand.nodes.nodes[i]
                .metric_sum("dvn_submissions_total")
                .await;
            if sent.unwrap_or(0.0) >= 1.0 {
                return Some(i);
            }
        }
        None
    })
    .await;
    let Some(holder) = holder else {
        stand.dump_logs();
        panic!("no aws replica submitted");
    };
    let other = if holder == 0 { replica } else { 0 };
    stand.nodes.nodes[holder].kill();

    // The other replica gets the lease and finds the dead one's transaction pending.
    let node = &stand.nodes.nodes[other];
    let leased = metric_until(node, "dvn_submitter_lease_held", &[], |v| v == 1.0).await;
    assert!(leased, "the other replica took the lease");
    let waited = metric_until(node, "dvn_unknown_pending_waits_total", &[], |v| v >= 1.0).await;
    if !waited {
        stand.dump_logs();
        panic!("the replica did not wait for the pending transaction");
    }
    let sent = node.metric_sum("dvn_submissions_total").await.unwrap();
    assert_eq!(sent, 0.0, "the replica sent the packets again");

    // Blocks again: the pending execute lands and verifies the packets, once.
    dst.chain.set_automine(true).await.unwrap();
    dst.chain.mine(1).await.unwrap();
    stand.deliver(Direction::AToB, &packets, TIMEOUT).await;
    let report = stand.assert_invariants(Direction::AToB, &packets).await;
    assert_eq!(report.duplicates, vec![]);
    assert_eq!(report.execute_transactions, 1);
}
