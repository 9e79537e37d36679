//! Source-chain truth against real anvil chains and the real contracts: a send through another
//! message library never stalls a path; a backlog older than the RPC's state window is still
//! signed; reorgs — shallow with a new payload, re-inclusion, and deeper than the
//! confirmations after verification — end as the node must end them.

use std::time::Duration;

use alloy::providers::Provider;
use dvn_devnet::contracts::COUNTER_COMPOSED;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::{SentPacket, VerificationState};

use crate::common::{dvn_cli, labelled_metric, Stand};
use crate::common::{metric_reaches, metric_until};
use crate::e2e::TIMEOUT;

/// Waits until every packet is at least Verifiable on the destination (no delivery).
pub async fn all_verifiable(stand: &Stand, direction: Direction, packets: &[SentPacket]) -> bool {
    eventually(TIMEOUT, Duration::from_millis(200), || async {
        let (_, dst) = stand.devnet.sides(direction);
        let _ = dst.chain.keep_up_with_wall_clock().await;
        for p in packets {
            match stand.devnet.verification_state(direction, p).await.ok()? {
                VerificationState::Verifiable | VerificationState::Verified => {}
                _ => return None,
            }
        }
        Some(())
    })
    .await
    .is_some()
}

/// Issue 9 §2: a packet sent through a second send library registered on the source endpoint
/// (no `DVNFeePaid`, so it cannot be paired) still takes the path's next nonce. Counted first,
/// it is no gap: every later packet of ours is verified, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_through_another_library_never_stalls_the_path() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let before = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &before, TIMEOUT).await;
    let foreign = stand
        .devnet
        .send_through_other_library(Direction::AToB)
        .await
        .unwrap();
    assert_eq!(foreign, 3, "the foreign send took nonce 3");
    // Nobody verifies it (no DVN was assigned): its owner skips it on the destination.
    stand
        .devnet
        .skip_on_destination(Direction::AToB, foreign)
        .await
        .unwrap();
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    assert_eq!(after[0].packet.header.nonce, 4);
    stand.deliver(Direction::AToB, &after, TIMEOUT).await;
    let ours: Vec<SentPacket> = before.into_iter().chain(after).collect();
    stand.assert_invariants(Direction::AToB, &ours).await;
    assert_eq!(
        stand.nodes.metric_sum("dvn_nonce_gaps_total").await,
        0.0,
        "the foreign send is no gap"
    );
    // The devnet's OApps require only our DVN: every signature for them is flagged.
    assert!(
        stand
            .nodes
            .metric_sum("dvn_sole_verifier_packets_total")
            .await
            >= 5.0,
        "signing for a 1-of-1 OApp is counted"
    );
}

/// Issue 9 §3: all three nodes down while messages are sent, on chains that keep only the
/// last 16 states (anvil `--prune-history`, like an ordinary non-archive RPC node). Reads at
/// the old send blocks fail; the node decides from the latest state and signs the whole
/// backlog, each packet exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_older_than_the_rpc_state_window_is_signed_after_an_outage() {
    let devnet = DevnetConfig {
        prune_history: Some(16),
        ..DevnetConfig::default()
    };
    let mut stand = Stand::new(devnet, NodeOptions::default()).await;
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 60)
        .await
        .unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    // The oldest send block is now far outside the state window: prove it.
    let old = sent[0].packet.header;
    let pruned = src
        .chain
        .provider
        .get_storage_at(src.contracts.endpoint, alloy::primitives::U256::ZERO)
        .block_id(alloy::eips::BlockId::number(
            src.chain.head().await.unwrap() - 50,
        ))
        .await;
    assert!(
        pruned.is_err(),
        "anvil still serves state 50 blocks back; the test would prove nothing (nonce {})",
        old.nonce
    );
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}

/// Issue 9 §5 (a), F3: a reorg before the confirmations replaces a send with a different
/// payload at the same nonce. Only the new one is verified; the old one never signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_before_confirmations_verifies_only_the_new_payload() {
    reorg_with_a_new_payload_before_confirmations(false).await;
}

/// F6: the same reorg happens while every node is down; on start each finds its cursor's
/// block replaced, walks back to the common ancestor, and verifies only the new payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_while_the_nodes_are_down_is_found_at_start() {
    reorg_with_a_new_payload_before_confirmations(true).await;
}

async fn reorg_with_a_new_payload_before_confirmations(nodes_down_during_reorg: bool) {
    let mut stand = Stand::with_a_to_b_confirmations(5).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let fork = src.chain.snapshot().await.unwrap();
    let old = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    // Every node has seen the old packet (depth 1 of 5: nothing signed).
    for node in &stand.nodes.nodes {
        assert!(metric_reaches(node, "dvn_packets_observed_total", 1.0).await);
    }
    if nodes_down_during_reorg {
        for node in &mut stand.nodes.nodes {
            node.kill();
        }
    }
    let (src, _) = stand.devnet.sides(Direction::AToB);
    src.chain.revert(fork).await.unwrap();
    src.chain.mine(1).await.unwrap();
    let new = stand
        .devnet
        .send_typed_messages(Direction::AToB, 1, COUNTER_COMPOSED)
        .await
        .unwrap();
    assert_eq!(new[0].packet.header.nonce, old[0].packet.header.nonce);
    assert_ne!(new[0].packet.payload_hash(), old[0].packet.payload_hash());
    src.chain.mine(5).await.unwrap();
    if nodes_down_during_reorg {
        stand.nodes.start(&[0, 1, 2]).await.unwrap();
        for node in &stand.nodes.nodes {
            assert!(metric_reaches(node, "dvn_reorgs_detected_total", 1.0).await);
        }
    }
    assert!(all_verifiable(&stand, Direction::AToB, &new).await);
    stand.assert_invariants(Direction::AToB, &new).await;
    let events = stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "one verification, of the new payload");
    assert_eq!(events[0].proofHash, new[0].packet.payload_hash());
}

/// Issue 9 §5 (c): a reorg deeper than the confirmations *after* verification puts a
/// different payload at the verified nonce. The path is halted — no later nonce on it is
/// signed, while other paths go on — and only `dvn path resume` lets it continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_after_verification_halts_the_path_until_an_operator_resumes_it() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let fork = src.chain.snapshot().await.unwrap();
    let verified = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    assert!(all_verifiable(&stand, Direction::AToB, &verified).await);

    // The source chain reorganises under the verified packet: nonce 1 now carries another
    // payload, and the chain grows past where the nodes had scanned.
    src.chain.revert(fork).await.unwrap();
    let replacement = stand
        .devnet
        .send_typed_messages(Direction::AToB, 1, COUNTER_COMPOSED)
        .await
        .unwrap();
    src.chain.mine(20).await.unwrap();
    for node in &stand.nodes.nodes {
        assert!(
            metric_reaches(node, "dvn_halted_paths", 1.0).await,
            "{} halted the path",
            node.region
        );
        assert!(metric_reaches(node, "dvn_equivocation_refused_total", 1.0).await);
    }

    // Later nonces on the halted path are seen but not signed; the other direction still is.
    let held = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    for node in &stand.nodes.nodes {
        assert!(metric_reaches(node, "dvn_packets_observed_total", 3.0).await);
    }
    let control = stand
        .devnet
        .send_messages(Direction::BToA, 1)
        .await
        .unwrap();
    stand.deliver(Direction::BToA, &control, TIMEOUT).await;
    stand.assert_invariants(Direction::BToA, &control).await;
    let signed_before_resume = stand.nodes.metric_sum("dvn_packets_signed_total").await;
    assert_eq!(
        signed_before_resume, 6.0,
        "each node signed nonce 1 before the reorg and the control packet, nothing on the halted path"
    );
    for p in held.iter().chain(&replacement) {
        assert_eq!(
            stand
                .devnet
                .verification_state(Direction::AToB, p)
                .await
                .unwrap(),
            VerificationState::Verifying,
            "nonce {} stays unverified while halted",
            p.packet.header.nonce
        );
    }

    // The operator investigates, then resumes the path on each node: on aws through the admin
    // API (an admin's decision: an operator's token is refused), elsewhere on the host.
    for (i, node) in stand.nodes.nodes.iter().enumerate() {
        let config = node.config_path.to_str().unwrap();
        let list = dvn_cli(&["path", "list", "--json", "--config", config]);
        let listed: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(listed["halted_paths"][0]["nonce"], 1, "{listed}");
        let path = crate::common::a_to_b_path_args(&stand);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        if i == 0 {
            let audit = dvn_cli(&["audit", "export", "-c", config]);
            assert!(
                audit.contains("guard.path_halted"),
                "the halt is audited: {audit}"
            );
            let url = node.url();
            let mut args = vec!["admin", "resume-halted", "-c", config, "--url", &url];
            args.extend_from_slice(&path);
            for (role, allowed) in [("operator", false), ("admin", true)] {
                let token = crate::common::new_token(config, "oncall", role);
                let (code, out) =
                    crate::common::dvn_run(&args, &[("DVN_ADMIN_TOKEN", token.trim())]);
                assert_eq!(code == 0, allowed, "{role}: {out}");
            }
        } else {
            let mut args = vec!["path", "resume", "--config", config];
            args.extend_from_slice(&path);
            dvn_cli(&args);
        }
    }
    assert!(all_verifiable(&stand, Direction::AToB, &held).await);
    for node in &stand.nodes.nodes {
        let cleared = metric_until(node, "dvn_halted_paths", &[], |v| v == 0.0).await;
        assert!(cleared, "{}: the halted-path gauge clears", node.region);
    }
    // The conflicting nonce itself is never signed again: exactly one verification at nonce
    // 1 (the pre-reorg payload, the incident the guard reported) and one for each later nonce.
    let events = stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap();
    assert_eq!(events.len(), 3, "nonce 1 (before the reorg), 2 and 3");
    assert!(events
        .iter()
        .all(|e| e.proofHash != replacement[0].packet.payload_hash()));
}

/// F1: a reorg before the confirmations re-includes the same send in another block. The
/// packet is confirmed from its new block and verified exactly once (the watcher's
/// re-observation and the sign stage's orphan check race on one row; one of them wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_reincluded_by_a_reorg_is_verified_once() {
    let mut stand = Stand::with_a_to_b_confirmations(4).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let fork = src.chain.snapshot().await.unwrap();
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    for node in &stand.nodes.nodes {
        assert!(metric_reaches(node, "dvn_packets_observed_total", 1.0).await);
    }
    src.chain.revert(fork).await.unwrap();
    src.chain.mine(2).await.unwrap();
    let again = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    assert_eq!(again[0].packet.guid, first[0].packet.guid);
    assert_eq!(
        again[0].packet.payload_hash(),
        first[0].packet.payload_hash()
    );
    src.chain.mine(4).await.unwrap();
    stand.deliver(Direction::AToB, &again, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &again).await;
}

/// Issue 9 §5 (b): signed by two regions, then the source reorganises the send away before
/// anyone submitted it (the designated submitter is down; the others wait for the
/// destination to move before taking over). The region that takes over re-checks the source
/// receipt first: the orphan is never submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_reorganised_away_after_signing_is_never_submitted() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let fork = src.chain.snapshot().await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    let timestamp = src.chain.timestamp().await.unwrap();
    let mut regions = dvn_devnet::nodes::REGIONS.to_vec();
    regions.sort_unstable();
    let designated = regions[dvn::pipeline::turns::designated(timestamp, 3)];
    let others: Vec<usize> = (0..3)
        .filter(|&i| stand.nodes.nodes[i].region != designated)
        .collect();
    stand.nodes.start(&others).await.unwrap();
    for &i in &others {
        assert!(metric_reaches(&stand.nodes.nodes[i], "dvn_packets_signed_total", 1.0).await);
    }
    // The send is reorganised away; the source chain moves on.
    src.chain.revert(fork).await.unwrap();
    src.chain.mine(5).await.unwrap();
    // The destination moves, so a region other than the designated one may take over.
    let guid = sent[0].packet.guid.to_string();
    let orphaned = eventually(TIMEOUT, Duration::from_millis(250), || async {
        let (_, dst) = stand.devnet.sides(Direction::AToB);
        let _ = dst.chain.mine(1).await;
        for &i in &others {
            let config = stand.nodes.nodes[i].config_path.to_str()?;
            let why = dvn_cli(&["why", &guid, "--json", "--config", config]);
            let why: serde_json::Value = serde_json::from_str(&why).ok()?;
            if why["state"] == "orphaned" {
                return Some(());
            }
        }
        None
    })
    .await;
    assert!(
        orphaned.is_some(),
        "a region re-checked the source and orphaned the packet"
    );
    assert_eq!(stand.nodes.metric_sum("dvn_submissions_total").await, 0.0);
    assert!(stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap()
        .is_empty());
}

/// Issue 9 §5 (d): a reorg deeper than `max_reorg_depth` (64) is an incident: the chain's
/// scan halts and pages (`dvn_reorg_too_deep`), nothing new on it is signed, and only an
/// operator's `dvn rescan` resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_deeper_than_the_limit_halts_the_scan_until_a_rescan() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let fork = src.chain.snapshot().await.unwrap();
    let fork_block = src.chain.head().await.unwrap();
    let before = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    assert!(all_verifiable(&stand, Direction::AToB, &before).await);
    // Scanned well past the send, a step at a time.
    for _ in 0..10 {
        src.chain.mine(10).await.unwrap();
        let head = src.chain.head().await.unwrap();
        for node in &stand.nodes.nodes {
            let at = eventually(TIMEOUT, Duration::from_millis(50), || async {
                let c = labelled_metric(node, "dvn_chain_cursor", &["chain=\"ethereum\""]).await;
                (c >= head as f64).then_some(())
            })
            .await;
            assert!(at.is_some());
        }
    }
    // 100 blocks replaced by another 120.
    src.chain.revert(fork).await.unwrap();
    src.chain.mine(120).await.unwrap();
    for node in &stand.nodes.nodes {
        assert!(
            metric_reaches(node, "dvn_reorg_too_deep", 1.0).await,
            "{} halted its scan",
            node.region
        );
    }
    // Sent while halted: nonce 1 again (same payload: already verified) and a new nonce 2.
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    let control = stand
        .devnet
        .send_messages(Direction::BToA, 1)
        .await
        .unwrap();
    stand.deliver(Direction::BToA, &control, TIMEOUT).await;
    assert_eq!(
        stand
            .devnet
            .verification_state(Direction::AToB, &after[1])
            .await
            .unwrap(),
        VerificationState::Verifying,
        "nothing on the halted chain is signed"
    );
    // The operator investigates and rescans from the fork point on every node (aws through
    // the admin API). The halt is in the audit log once, however many steps it refused.
    let from = (fork_block + 1).to_string();
    for (i, node) in stand.nodes.nodes.iter().enumerate() {
        let config = node.config_path.to_str().unwrap();
        if i == 0 {
            let audit = dvn_cli(&["audit", "export", "-c", config]);
            assert_eq!(audit.matches("guard.reorg_too_deep").count(), 1, "{audit}");
            let token = crate::common::new_token(config, "oncall", "operator");
            let url = node.url();
            let (code, out) = crate::common::dvn_run(
                &[
                    "admin", "rescan", "-c", config, "--url", &url, "--chain", "ethereum",
                    "--from", &from,
                ],
                &[("DVN_ADMIN_TOKEN", token.trim())],
            );
            assert_eq!(code, 0, "{out}");
            continue;
        }
        dvn_cli(&[
            "rescan", "--chain", "ethereum", "--from", &from, "--config", config,
        ]);
    }
    assert!(all_verifiable(&stand, Direction::AToB, &after).await);
    stand.assert_invariants(Direction::AToB, &after).await;
    for node in &stand.nodes.nodes {
        let cleared = metric_until(node, "dvn_reorg_too_deep", &[], |v| v == 0.0).await;
        assert!(cleared, "{}: the halt clears after the rescan", node.region);
    }
}

/// Issue 9 §8: an `invalid` packet drops out of the pipeline and shows in the gauge;
/// `dvn retry <guid>` (on a running node) re-queues it and it is verified, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dvn_retry_requeues_an_invalid_packet_on_running_nodes() {
    let mut stand = Stand::with_a_to_b_confirmations(3).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    for node in &stand.nodes.nodes {
        assert!(metric_reaches(node, "dvn_packets_observed_total", 1.0).await);
    }
    // Stopped, and (as after ten failed attempts) the packet is given up as invalid.
    let guid = sent[0].packet.guid;
    for node in &mut stand.nodes.nodes {
        node.kill();
        let config: serde_json::Value =
            serde_norway::from_str(&std::fs::read_to_string(&node.config_path).unwrap()).unwrap();
        let store = dvn::store::Store::connect(config["store"]["url"].as_str().unwrap())
            .await
            .unwrap();
        let row = store.packet(guid).await.unwrap().unwrap();
        assert!(store
            .transition(
                row.expect(),
                dvn::store::PacketState::Invalid,
                Some("gave up")
            )
            .await
            .unwrap());
    }
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, _) = stand.devnet.sides(Direction::AToB);
    src.chain.mine(3).await.unwrap();
    for node in &stand.nodes.nodes {
        let shown = metric_until(node, "dvn_packets", &["state=\"invalid\""], |v| v == 1.0).await;
        assert!(shown, "{}: the invalid packet shows", node.region);
    }
    assert_eq!(
        stand
            .devnet
            .verification_state(Direction::AToB, &sent[0])
            .await
            .unwrap(),
        VerificationState::Verifying
    );
    let guid = guid.to_string();
    for (i, node) in stand.nodes.nodes.iter().enumerate() {
        let config = node.config_path.to_str().unwrap();
        if i == 0 {
            // aws's operator uses the admin API.
            let token = crate::common::new_token(config, "oncall", "operator");
            let url = node.url();
            let (code, out) = crate::common::dvn_run(
                &["admin", "retry", "-c", config, "--url", &url, &guid],
                &[("DVN_ADMIN_TOKEN", token.trim())],
            );
            assert_eq!(code, 0, "{out}");
            continue;
        }
        dvn_cli(&["retry", &guid, "--config", config]);
        // Only invalid packets are retried: a second call is refused.
        let again = std::process::Command::new(crate::common::dvn_binary())
            .args(["retry", &guid, "--config", config])
            .output()
            .unwrap();
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("not invalid"));
    }
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}

/// Issue 9 §5 (c), the in-flight case: the `execute` carrying a packet sits unmined in the
/// destination's pool when the source shows another payload at its nonce. The path halts and
/// the pending transaction is cancelled (same nonce, a self-transfer): once the destination
/// mines, nothing of that path is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_execute_of_a_halted_path_is_cancelled() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let (src, dst) = stand.devnet.sides(Direction::AToB);
    dst.chain.set_automine(false).await.unwrap();
    let fork = src.chain.snapshot().await.unwrap();
    stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    let submitted = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (stand.nodes.metric_sum("dvn_submissions_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(submitted.is_some(), "an execute is waiting in the pool");

    src.chain.revert(fork).await.unwrap();
    stand
        .devnet
        .send_typed_messages(Direction::AToB, 1, COUNTER_COMPOSED)
        .await
        .unwrap();
    src.chain.mine(5).await.unwrap();
    for node in &stand.nodes.nodes {
        assert!(metric_reaches(node, "dvn_halted_paths", 1.0).await);
    }
    let cancelled = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (stand
            .nodes
            .metric_sum("dvn_submission_replacements_total")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(
        cancelled.is_some(),
        "the pending execute was replaced by a cancel"
    );
    dst.chain.set_automine(true).await.unwrap();
    dst.chain.mine(3).await.unwrap();
    let gone = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let pending: serde_json::Value = dst
            .chain
            .provider
            .raw_request("txpool_status".into(), ())
            .await
            .ok()?;
        (pending["pending"] == "0x0").then_some(())
    })
    .await;
    assert!(gone.is_some(), "the destination's pool drained");
    assert!(
        stand
            .devnet
            .payload_verified(Direction::AToB)
            .await
            .unwrap()
            .is_empty(),
        "the cancelled execute never verified the halted path's packet"
    );
}
