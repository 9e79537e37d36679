//! Issue 14 §1: the shipped alert rules and Alertmanager routes, run for real. A Prometheus
//! scrapes the three devnet nodes, an Alertmanager routes what fires to a webhook; faults are
//! injected into the live processes the way an operator meets them, and each must arrive as
//! the right alert, with the right severity, at the right receiver — and resolve after the fix.
//! A healthy devnet fires nothing but the one alert that is true of it. Covered: all nodes
//! down (P0); quorum lost, path halted (P1); node down, not ready, backlog, HSM, RPC down,
//! lying endpoint, submitter without `ADMIN_ROLE` (P2); the sole-verifier alert, a peer down and a
//! certificate close to expiry (P3).

use dvn::signer::pkcs11::Pkcs11Signer;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::{ProxyMode, RpcProxy};
use dvn_devnet::{Devnet, DevnetConfig, Direction, Mining};
use serde_json::json;

use crate::common::{a_to_b_path_args, dvn_cli, equivocate_on_a, set_admin_role, Stand};
use crate::e2e::TIMEOUT;
use crate::pkcs11::{SoftHsm, MODULE, PIN, TOKEN};
use crate::stack::{OpsStack, Webhook};

const AWS: usize = 0;
const ALIYUN: usize = 1;
const GCP: usize = 2;

/// Waits for `alertname` on `instance` to arrive past `mark` as firing, with `severity`, at
/// `receiver` (the shipped routes: P0/P1 → pager, P2 → team, P3 → review).
async fn fires(
    webhook: &Webhook,
    stack: &OpsStack,
    mark: usize,
    alertname: &str,
    instance: Option<&str>,
    severity: &str,
    receiver: &str,
) {
    let Some(alert) = webhook.wait(mark, alertname, instance, "firing").await else {
        stack.dump();
        panic!(
            "{alertname} ({instance:?}) never reached the webhook; received {:?}; Prometheus has {:?}",
            webhook.since(mark),
            stack.alerts().await
        );
    };
    assert_eq!(alert.severity(), severity, "{alert:?}");
    assert_eq!(alert.receiver, receiver, "{alert:?}");
}

async fn resolves(webhook: &Webhook, mark: usize, alertname: &str, instance: Option<&str>) {
    let resolved = webhook.wait(mark, alertname, instance, "resolved").await;
    assert!(
        resolved.is_some(),
        "{alertname} ({instance:?}) never resolved; received {:?}",
        webhook.since(mark)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_live_nodes_arrive_as_the_shipped_alerts_and_resolve() {
    let hsm = SoftHsm::create().unwrap();
    let hsm_signer = Pkcs11Signer::generate(MODULE.as_ref(), TOKEN, "aws-signer", PIN).unwrap();
    let devnet = Devnet::start(DevnetConfig {
        extra_signers: vec![hsm_signer],
        // Live chains make blocks whether or not anyone sends: 1 s blocks.
        mining: Mining::Interval(1.0),
        ..DevnetConfig::default()
    })
    .await
    .unwrap();
    // gcp reads chain B through a proxy that can fail, and chain A from three endpoints (two
    // must agree) of which the third can start to lie.
    let gcp_b = RpcProxy::start(devnet.b.chain.rpc_url()).await.unwrap();
    let mut gcp_a = Vec::new();
    for _ in 0..3 {
        gcp_a.push(RpcProxy::start(devnet.a.chain.rpc_url()).await.unwrap());
    }
    let mut stand = Stand::with_devnet(devnet, NodeOptions::default());
    stand.use_hsm(AWS, &hsm, "aws-signer", hsm_signer);
    stand.nodes.nodes[GCP]
        .edit_config(|c| {
            c["chains"][0]["rpc"] = json!(gcp_a.iter().map(|p| p.url.clone()).collect::<Vec<_>>());
            c["chains"][0]["rpc_quorum"] = json!(2);
            c["chains"][1]["rpc"] = json!([gcp_b.url]);
        })
        .unwrap();
    stand.nodes.start(&[AWS, ALIYUN, GCP]).await.unwrap();
    let stack = OpsStack::start(&stand.nodes.nodes).await;
    let webhook = stack.webhook.clone();
    stand.round_trip_both_ways(2).await;

    // Healthy: ten rule evaluations (each rule's `for:` is 2 s here) and nothing pending or
    // firing but DvnSoleVerifierOApp — true of the devnet, whose OApps require only our DVN —
    // which the shipped routes send to the daily review as a P3. And DvnDiskUsageHigh when
    // this machine's disk really is over 80 % full (node_exporter reads the real filesystem;
    // a shared disk can be, whatever the devnet does): then it must fire, not be hidden.
    let disk_full = disk_over_80_percent();
    let expected =
        |name: &str| name == "DvnSoleVerifierOApp" || (disk_full && name == "DvnDiskUsageHigh");
    stack.wait_evaluations(10.0).await;
    fires(
        &webhook,
        &stack,
        0,
        "DvnSoleVerifierOApp",
        None,
        "P3",
        "review",
    )
    .await;
    let others: Vec<_> = stack
        .alerts()
        .await
        .into_iter()
        .filter(|(name, _, _)| !expected(name))
        .collect();
    assert_eq!(
        others,
        vec![],
        "a healthy devnet fires nothing else; the nodes' warnings:\n{}",
        warnings(&stand)
    );
    let unexpected: Vec<_> = webhook
        .since(0)
        .into_iter()
        .filter(|d| !expected(d.name()))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");

    // A node killed: DvnNodeDown (P2) for it; back, resolved.
    let mark = webhook.mark();
    stand.nodes.nodes[ALIYUN].kill();
    fires(
        &webhook,
        &stack,
        mark,
        "DvnNodeDown",
        Some("aliyun"),
        "P2",
        "team",
    )
    .await;
    // …and the regions that can no longer reach it say so: DvnPeerDown (P3) from aws.
    fires(
        &webhook,
        &stack,
        mark,
        "DvnPeerDown",
        Some("aws"),
        "P3",
        "review",
    )
    .await;
    stand.nodes.start(&[ALIYUN]).await.unwrap();
    resolves(&webhook, mark, "DvnNodeDown", Some("aliyun")).await;
    resolves(&webhook, mark, "DvnPeerDown", Some("aws")).await;

    // Two killed: the quorum is lost (P1, paged); packets pile up on the survivor, whose
    // backlog passes 10 while it cannot submit (P2). Both back: verified, both resolved.
    let mark = webhook.mark();
    stand.nodes.nodes[ALIYUN].kill();
    stand.nodes.nodes[GCP].kill();
    fires(&webhook, &stack, mark, "DvnQuorumLost", None, "P1", "pager").await;
    let piled = stand
        .devnet
        .send_messages(Direction::AToB, 11)
        .await
        .unwrap();
    fires(
        &webhook,
        &stack,
        mark,
        "DvnBacklogHigh",
        Some("aws"),
        "P2",
        "team",
    )
    .await;
    stand.nodes.start(&[ALIYUN, GCP]).await.unwrap();
    stand.deliver(Direction::AToB, &piled, TIMEOUT).await;
    resolves(&webhook, mark, "DvnQuorumLost", None).await;
    resolves(&webhook, mark, "DvnBacklogHigh", Some("aws")).await;

    // aws's HSM goes away: DvnHsmDisconnected (P2); back, resolved.
    let mark = webhook.mark();
    hsm.disconnect().unwrap();
    fires(
        &webhook,
        &stack,
        mark,
        "DvnHsmDisconnected",
        Some("aws"),
        "P2",
        "team",
    )
    .await;
    // Without its signing key aws is not ready either: DvnNotReady (P2).
    fires(
        &webhook,
        &stack,
        mark,
        "DvnNotReady",
        Some("aws"),
        "P2",
        "team",
    )
    .await;
    hsm.reconnect().unwrap();
    resolves(&webhook, mark, "DvnHsmDisconnected", Some("aws")).await;
    resolves(&webhook, mark, "DvnNotReady", Some("aws")).await;

    // gcp's only endpoint for chain B fails: DvnChainRpcDown (P2); forwarding again, resolved.
    let mark = webhook.mark();
    gcp_b.set_mode(ProxyMode::Fail);
    fires(
        &webhook,
        &stack,
        mark,
        "DvnChainRpcDown",
        Some("gcp"),
        "P2",
        "team",
    )
    .await;
    gcp_b.set_mode(ProxyMode::Forward);
    resolves(&webhook, mark, "DvnChainRpcDown", Some("gcp")).await;

    // Another admin revokes aws's submitter's ADMIN_ROLE on chain B's DVN:
    // DvnSubmitterNotAdmin (P2) — aws submits nothing there, the others take its turns;
    // granted back, resolved.
    let mark = webhook.mark();
    let b = &stand.devnet.b;
    let (aws_submitter, other_admin) = (b.roles.dvn_admins[AWS], b.roles.dvn_admins[ALIYUN]);
    set_admin_role(b, other_admin, aws_submitter, false).await;
    fires(
        &webhook,
        &stack,
        mark,
        "DvnSubmitterNotAdmin",
        Some("aws"),
        "P2",
        "team",
    )
    .await;
    set_admin_role(b, other_admin, aws_submitter, true).await;
    resolves(&webhook, mark, "DvnSubmitterNotAdmin", Some("aws")).await;

    // One of gcp's three endpoints for chain A starts to lie while packets flow: outvoted,
    // and DvnRpcEndpointDisagrees (P2) says which (it stays for its 15-minute window).
    let mark = webhook.mark();
    gcp_a[2].edit_faults(|f| f.corrupt = true);
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    fires(
        &webhook,
        &stack,
        mark,
        "DvnRpcEndpointDisagrees",
        Some("gcp"),
        "P2",
        "team",
    )
    .await;
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    gcp_a[2].edit_faults(|f| f.corrupt = false);

    // Chain A equivocates under a verified packet: the path halts everywhere (P1, paged);
    // an operator resumes it on each node (`dvn path resume`), resolved.
    let mark = webhook.mark();
    equivocate_on_a(&stand).await;
    fires(
        &webhook,
        &stack,
        mark,
        "DvnPathHalted",
        Some("aws"),
        "P1",
        "pager",
    )
    .await;
    let path = a_to_b_path_args(&stand);
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    for node in &stand.nodes.nodes {
        let mut args = vec![
            "path",
            "resume",
            "--config",
            node.config_path.to_str().unwrap(),
        ];
        args.extend_from_slice(&path);
        dvn_cli(&args);
    }
    resolves(&webhook, mark, "DvnPathHalted", Some("aws")).await;

    // aws's peer certificate renewed for only 10 days (`dvn certs renew`, picked up without a
    // restart): DvnCertificateExpiring (P3) from blackbox_exporter's probe; renewed for a
    // year, resolved.
    let mark = webhook.mark();
    let aws = &stand.nodes.nodes[AWS];
    let target = format!("127.0.0.1:{}", aws.peer_port);
    let renew = |days: &str| {
        dvn_cli(&[
            "certs",
            "renew",
            "--dir",
            aws.tls_dir.to_str().unwrap(),
            "--name",
            "aws",
            "--hosts",
            "127.0.0.1,localhost",
            "--days",
            days,
        ])
    };
    renew("10");
    fires(
        &webhook,
        &stack,
        mark,
        "DvnCertificateExpiring",
        Some(&target),
        "P3",
        "review",
    )
    .await;
    renew("397");
    resolves(&webhook, mark, "DvnCertificateExpiring", Some(&target)).await;

    // Every region down: DvnAllNodesDown (P0, paged); all back, resolved.
    let mark = webhook.mark();
    for node in &mut stand.nodes.nodes {
        node.kill();
    }
    fires(
        &webhook,
        &stack,
        mark,
        "DvnAllNodesDown",
        None,
        "P0",
        "pager",
    )
    .await;
    stand.nodes.start(&[AWS, ALIYUN, GCP]).await.unwrap();
    resolves(&webhook, mark, "DvnAllNodesDown", None).await;
}

/// Issue 14 §2: every query of the shipped Grafana dashboard, run through Prometheus against
/// live nodes after some traffic, returns data — no panel says "No data" on a healthy fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_live_nodes() {
    let devnet = Devnet::start(DevnetConfig {
        mining: Mining::Interval(1.0),
        ..DevnetConfig::default()
    })
    .await
    .unwrap();
    let mut stand = Stand::with_devnet(devnet, NodeOptions::default());
    stand.nodes.start(&[AWS, ALIYUN, GCP]).await.unwrap();
    let stack = OpsStack::start(&stand.nodes.nodes).await;
    stand.round_trip_both_ways(2).await;
    // rate() needs two scrapes of a counter inside its window.
    stack.wait_evaluations(5.0).await;

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/grafana/dashboards/dvn.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut empty = Vec::new();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries += 1;
            match stack.query(expr).await {
                Some(result) if !result.is_empty() => {}
                other => empty.push(format!("{}: {expr} → {other:?}", panel["title"])),
            }
        }
    }
    assert!(queries >= 20, "{queries} queries");
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
}

/// Whether the filesystem holding this checkout is over 80 % full the way the shipped
/// `DvnDiskUsageHigh` rule counts it (1 − available / size, as node_exporter reports them).
fn disk_over_80_percent() -> bool {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size,avail", env!("CARGO_MANIFEST_DIR")])
        .output()
        .expect("df runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [size, avail] if size > 0.0 => 1.0 - avail / size > 0.8,
        _ => panic!("df gave no size and available bytes: {text}"),
    }
}

/// Each node's last 40 warning and error lines, for a failure message: the alert says what
/// fired, the node's log says why.
fn warnings(stand: &Stand) -> String {
    let mut out = String::new();
    for node in &stand.nodes.nodes {
        let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        for line in &lines[lines.len().saturating_sub(40)..] {
            out.push_str(&format!("{}: {line}\n", node.region));
        }
    }
    out
}
