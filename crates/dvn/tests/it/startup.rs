//! Issue 9 §7: start-up checks of what the configuration points at, and a node that stays up
//! (alive, not ready, retrying) while its RPC endpoints cannot be reached.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::proxy::{ProxyMode, RpcProxy};
use dvn_devnet::wait::eventually;
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use serde_json::json;

use crate::common::{refusal_log, Stand};
use crate::e2e::TIMEOUT;

async fn get(url: &str) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_rpcs_at_start_keep_the_node_up_and_not_ready_until_they_answer() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let proxy = RpcProxy::start(devnet.a.chain.rpc_url()).await.unwrap();
    proxy.set_mode(ProxyMode::Fail);
    let options = NodeOptions {
        rpc_a: vec![proxy.url.clone()],
        ..NodeOptions::default()
    };
    let mut stand = Stand::with_devnet(devnet, options);
    // /health answers while the chains cannot be read.
    stand.nodes.start_answering(&[0, 1, 2]).await.unwrap();
    let aws = &mut stand.nodes.nodes[0];
    let url = aws.url();
    let waiting = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let (status, body) = get(&format!("{url}/ready")).await?;
        let reason = body["reason"].as_str()?.to_string();
        (status == 503 && reason.contains("cannot read the chains")).then_some(reason)
    })
    .await;
    assert!(waiting.is_some(), "/ready says why the node is not ready");
    let (status, _) = get(&format!("{url}/health")).await.unwrap();
    assert_eq!(status, 200);
    // It retries rather than exiting (an exit would loop under a restart policy).
    let retried = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let log = std::fs::read_to_string(&aws.log_path).ok()?;
        (log.matches("start-up check cannot read the chains").count() >= 3).then_some(())
    })
    .await;
    assert!(retried.is_some());
    assert!(aws.is_running());

    proxy.set_mode(ProxyMode::Forward);
    let ready = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let (status, _) = get(&format!("{url}/ready")).await?;
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready once the endpoints answer");
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}

/// A wrong eid, a library the endpoint does not know, an address without code, and a
/// `start_block` outside the RPC's state window: each refused at start, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_config_points_at_is_checked_at_start() {
    let devnet = Devnet::start(DevnetConfig {
        prune_history: Some(16),
        ..DevnetConfig::default()
    })
    .await
    .unwrap();
    // Far enough past the deployment that its early states are gone.
    devnet.a.chain.mine(40).await.unwrap();
    let dvn_a = devnet.a.contracts.dvn;
    let eoa = devnet.user;
    let mut stand = Stand::with_devnet(devnet, NodeOptions::default());
    let original = std::fs::read_to_string(&stand.nodes.nodes[0].config_path).unwrap();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "eid",
            json!(30999),
            "reports eid 30101, but the config says 30999",
        ),
        (
            "send_uln",
            json!(dvn_a.to_string()),
            "is not a library registered on the endpoint",
        ),
        ("dvn", json!(eoa.to_string()), "has no contract code"),
        (
            "start_block",
            json!(5),
            "move start_block into their state window",
        ),
    ];
    for (field, value, expected) in cases {
        let node = &mut stand.nodes.nodes[0];
        std::fs::write(&node.config_path, &original).unwrap();
        node.edit_config(|c| c["chains"][0][field] = value.clone())
            .unwrap();
        let log = refusal_log(node).await;
        assert!(log.contains(expected), "{field} = {value}: {log}");
    }
}
