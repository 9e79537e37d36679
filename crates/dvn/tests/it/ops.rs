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
                        dvn::telemetry::exports(token),
                        "alert expression names {token}, which the node does not export"
                    );
                }
            }
        }
    }
    assert!(alerts >= 12, "{alerts} alerts");
}

async fn wait_ready(node: &DvnNode, want: bool) -> serde_json::Value {
    let body = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let (status, body) = crate::common::ready_status(node).await?;
        ((status == 200) == want && body["ready"] == want).then_some(body)
    })
    .await;
    match body {
        Some(body) => body,
        None => panic!(
            "/ready never became {want}: {:?}",
            crate::common::ready_status(node).await
        ),
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
    // Per-chain counters exist from the start, and packets are counted by state.
    assert!(text.contains("dvn_nonce_gaps_total{chain="), "{text}");
    assert!(text.contains("dvn_packets{state=\"conflict\"} 0"), "{text}");

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

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_grafana_dashboard_has_a_panel_per_checklist_line_over_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/dashboards/dvn.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("dvn_") {
                    assert!(
                        dvn::telemetry::exports(token),
                        "{} queries {token}, not exported",
                        panel["title"]
                    );
                }
            }
        }
    }
    // The manual's daily checklist (8.8), one panel each.
    let titles: Vec<String> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for line in [
        "service status",
        "backlog",
        "signing latency",
        "block sync",
        "hsm",
        "disk",
        "alerts",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(line)),
            "no panel for '{line}': {titles:?}"
        );
    }
    let provider: serde_json::Value =
        serde_norway::from_str(&repo_file("deploy/grafana/provisioning/dashboards/dvn.yml"))
            .unwrap();
    assert_eq!(provider["providers"][0]["type"], "file");
    let datasource: serde_json::Value = serde_norway::from_str(&repo_file(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    let uid = datasource["datasources"][0]["uid"].as_str().unwrap();
    assert!(panels.iter().all(|p| p["datasource"]["uid"] == uid));
}

#[test]
fn the_compose_file_parses_and_its_env_names_are_ones_the_node_reads() {
    let compose: serde_json::Value =
        serde_norway::from_str(&repo_file("docker-compose.yml")).unwrap();
    let services = compose["services"].as_object().unwrap();
    for name in ["dvn", "redis", "postgres"] {
        assert!(services.contains_key(name), "service {name}");
        assert!(
            services[name]["healthcheck"]["test"].is_array(),
            "{name} has a health check"
        );
    }
    let dvn = &services["dvn"];
    assert_eq!(dvn["container_name"], "dvn-node");
    assert!(dvn["healthcheck"]["test"].to_string().contains("/health"));
    // Every variable given to the node is one it reads, a PIN the region configs name, or logging.
    let env = dvn["environment"].as_object().unwrap();
    let aws = repo_file("deploy/config/aws.yaml");
    for name in env.keys() {
        let known = dvn::config::env::OVERRIDES.contains(&name.as_str())
            || name == "RUST_LOG"
            || aws.contains(&format!("pin_env: {name}"));
        assert!(known, "compose sets {name}, which the node never reads");
    }
    // The node's database settings match the postgres service's.
    let postgres = services["postgres"]["environment"].as_object().unwrap();
    assert_eq!(env["POSTGRES_USER"], postgres["POSTGRES_USER"]);
    assert_eq!(env["POSTGRES_DB"], postgres["POSTGRES_DB"]);
    assert_eq!(env["POSTGRES_HOST"], "postgres");
    assert_eq!(env["REDIS_HOST"], "redis");

    let dockerfile = repo_file("Dockerfile");
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "multi-stage"
    );
    assert!(dockerfile.contains("\nUSER dvn"), "runs as non-root");
    let unit = repo_file("deploy/systemd/dvn.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/dvn run --config"));
    assert!(unit.contains("User=dvn"));
}

#[test]
fn the_per_region_configs_are_valid_and_name_each_other() {
    let mut signers = std::collections::BTreeMap::new();
    let mut kinds = Vec::new();
    for region in ["aws", "aliyun", "gcp"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config")
            .join(format!("{region}.yaml"));
        let config = dvn::config::Config::load(&path).unwrap_or_else(|e| panic!("{region}: {e}"));
        assert_eq!(config.node.name, region);
        let peers: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(peers.len(), 2);
        assert!(!peers.contains(&region));
        for peer in &config.peers {
            let previous = signers.insert(peer.name.clone(), peer.signer);
            assert!(
                previous.is_none_or(|s| s == peer.signer),
                "{} has two signer addresses",
                peer.name
            );
        }
        kinds.push(serde_json::to_value(&config.signer).unwrap()["kind"].clone());
    }
    assert_eq!(kinds, ["pkcs11", "aliyun-kms", "gcp-kms"]);
}

/// The store (a private PostgreSQL) stops: `/ready` and `dvn_component_up{component="store"}`
/// say so, the node keeps running, and both recover when the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_store_down_and_back() {
    let mut pg = crate::pg::PrivatePostgres::start().await;
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let url = pg.url();
    stand.nodes.nodes[0]
        .edit_config(|c| c["store"]["url"] = serde_json::json!(url))
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let aws = &stand.nodes.nodes[0];
    wait_ready(aws, true).await;

    pg.stop();
    let body = wait_ready(aws, false).await;
    assert_eq!(body["components"]["store"], false, "{body}");
    let text = aws.metrics().await.unwrap();
    assert!(
        text.contains("dvn_component_up{component=\"store\"} 0"),
        "{text}"
    );

    pg.resume().await;
    wait_ready(&stand.nodes.nodes[0], true).await;
    assert!(stand.nodes.nodes[0].is_running());
    // And it still verifies.
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}
