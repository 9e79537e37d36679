//! Operations surface: the alert rules (promtool check + unit tests that fire every alert), the
//! metrics exposition (promtool check metrics on a live node; zero-initialised per path), and
//! `/ready` reporting each component and flipping with an RPC endpoint or two peers down.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dvn_devnet::nodes::{DvnNode, NodeOptions};
use dvn_devnet::proxy::{ProxyMode, RpcProxy};
use dvn_devnet::wait::eventually;
use dvn_devnet::{Devnet, DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

fn deploy_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/prometheus")
        .join(name)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh (Debian prometheus)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = deploy_file("alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let tests = deploy_file("alerts_test.yml");
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_use_only_metrics_the_node_exports_and_every_alert_is_tested() {
    let rules = std::fs::read_to_string(deploy_file("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy_file("alerts_test.yml")).unwrap();
    let exported: Vec<&str> = dvn::telemetry::METRICS.iter().map(|m| m.0).collect();
    let mut alerts = 0;
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            alerts += 1;
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "alert {name} has no promtool unit test"
            );
        }
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("dvn_") {
                    assert!(
                        exported.contains(&token),
                        "alert expression names {token}, which the node does not export"
                    );
                }
            }
        }
    }
    assert!(alerts >= 12, "{alerts} alerts");
}

async fn ready(node: &DvnNode) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(format!("{}/ready", node.url())).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

async fn wait_ready(node: &DvnNode, want: bool) -> serde_json::Value {
    let body = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let (status, body) = ready(node).await?;
        ((status == 200) == want && body["ready"] == want).then_some(body)
    })
    .await;
    match body {
        Some(body) => body,
        None => panic!("/ready never became {want}: {:?}", ready(node).await),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_ready_flips_with_rpc_and_peers() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let proxy_a = RpcProxy::start(devnet.a.chain.rpc_url()).await.unwrap();
    let mut stand = Stand::with_devnet(devnet, NodeOptions::default());
    stand.nodes.nodes[0]
        .edit_config(|c| {
            c["chains"][0]["rpc"] = serde_json::json!([proxy_a.url]);
        })
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;

    let aws = &stand.nodes.nodes[0];
    let body = wait_ready(aws, true).await;
    let components = &body["components"];
    assert_eq!(components["store"], true);
    assert_eq!(components["signer"]["up"], true);
    assert_eq!(components["peers"]["needed"], 1);
    assert_eq!(components["chains"].as_object().unwrap().len(), 2);

    // The exposition is valid Prometheus text with HELP for every family.
    let text = aws.metrics().await.unwrap();
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{out}");
    // Zero-initialised: both paths have backlog series even when empty.
    let paths = text
        .lines()
        .filter(|l| l.starts_with("dvn_backlog_packets{"))
        .count();
    assert_eq!(paths, 2, "{text}");
    assert!(text.contains("# HELP dvn_ready"));

    // Its RPC endpoint for chain A fails: not ready, the chain named, the gauge at 0.
    proxy_a.set_mode(ProxyMode::Fail);
    let body = wait_ready(aws, false).await;
    let chains = body["components"]["chains"].as_object().unwrap();
    assert!(chains.values().any(|c| c["up"] == false), "{body}");
    let text = aws.metrics().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("dvn_chain_rpc_up{") && l.ends_with(" 0")),
        "{text}"
    );
    proxy_a.set_mode(ProxyMode::Forward);
    wait_ready(aws, true).await;

    // Both peers down: a 2-of-3 quorum is out of reach.
    stand.nodes.nodes[1].kill();
    stand.nodes.nodes[2].kill();
    let aws = &stand.nodes.nodes[0];
    let body = wait_ready(aws, false).await;
    let peers = body["components"]["peers"]["up"].as_object().unwrap();
    assert!(peers.values().all(|up| *up == false), "{body}");
    let text = aws.metrics().await.unwrap();
    assert!(
        text.contains("dvn_component_up{component=\"peers\"} 0"),
        "{text}"
    );
    stand.nodes.start(&[1]).await.unwrap();
    wait_ready(&stand.nodes.nodes[0], true).await;
}
