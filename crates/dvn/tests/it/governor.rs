//! Issue 11 §4: the governor on running nodes — a denied path is never signed by the regions
//! that deny it (from the configuration at start, or by a reload of a running node), and a
//! per-path rate cap delays packets without losing one.

use std::time::Duration;

use dvn::config::Config;
use dvn::store::{PacketState, Store};
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::json;

use crate::common::{dvn_run, metric_reaches, new_token, Stand};
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_path_is_never_signed_and_other_paths_go_on() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let chain_a = stand.devnet.a.chain.name.clone();
    let oapp_a = stand.devnet.a.contracts.counter;
    let deny = json!({ "deny": [{ "src": chain_a, "sender": oapp_a.to_string() }] });
    // aws denies the path from its configuration at start ...
    stand.nodes.nodes[0]
        .edit_config(|c| c["governor"] = deny.clone())
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    // ... aliyun by a reload of its running node, after two refused reloads.
    let aliyun = &stand.nodes.nodes[1];
    let cfg = aliyun.config_path.to_str().unwrap();
    let token = new_token(cfg, "oncall", "operator");
    let url = aliyun.url();
    let reload = ["admin", "reload", "-c", cfg, "--url", &url];
    let env = [("DVN_ADMIN_TOKEN", token.trim())];
    let poll = Config::load(&aliyun.config_path).unwrap().chains[0].poll_interval_ms;
    aliyun
        .edit_config(|c| c["governor"] = json!({ "deny": [{}] }))
        .unwrap();
    let (code, out) = dvn_run(&reload, &env);
    assert_ne!(code, 0);
    assert!(
        out.contains("400") && out.contains("governor.deny[0]"),
        "invalid: {out}"
    );
    aliyun
        .edit_config(|c| {
            c["governor"] = deny.clone();
            c["chains"][0]["poll_interval_ms"] = json!(777);
        })
        .unwrap();
    let (code, out) = dvn_run(&reload, &env);
    assert_ne!(code, 0);
    assert!(
        out.contains("409") && out.contains("chains cannot change without a restart"),
        "{out}"
    );
    aliyun
        .edit_config(|c| c["chains"][0]["poll_interval_ms"] = json!(poll))
        .unwrap();
    let (code, out) = dvn_run(&reload, &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"governor\""), "{out}");
    let denied = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    let open = stand
        .devnet
        .send_messages(Direction::BToA, 2)
        .await
        .unwrap();
    stand.deliver(Direction::BToA, &open, TIMEOUT).await;
    stand.assert_invariants(Direction::BToA, &open).await;

    // aws and aliyun refuse the denied path's packets, naming the rule; gcp signs alone.
    for node in &stand.nodes.nodes[..2] {
        let config = Config::load(&node.config_path).unwrap();
        let store = Store::connect(&config.store.url).await.unwrap();
        let refused = eventually(TIMEOUT, Duration::from_millis(100), || async {
            let rows = store
                .recent_packets(Some(PacketState::Invalid), 10)
                .await
                .ok()?;
            let ours = rows
                .iter()
                .filter(|r| denied.iter().any(|p| p.packet.guid == r.packet.guid))
                .filter(|r| {
                    r.last_error
                        .as_deref()
                        .unwrap_or_default()
                        .contains("governor.deny[0]")
                })
                .count();
            (ours == denied.len()).then_some(())
        })
        .await;
        assert!(
            refused.is_some(),
            "{} refused the denied path by its rule",
            node.region
        );
    }
    assert!(metric_reaches(&stand.nodes.nodes[2], "dvn_packets_signed_total", 4.0).await);
    let verified = stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap();
    assert!(verified.is_empty(), "one region alone verifies nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_capped_path_delays_packets_and_loses_none() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    for node in &stand.nodes.nodes {
        node.edit_config(|c| c["governor"] = json!({ "max_packets_per_minute": 2 }))
            .unwrap();
    }
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 4)
        .await
        .unwrap();
    // Two are signed at once; the other two wait for the window.
    let waiting = metric_reaches(&stand.nodes.nodes[0], "dvn_rate_limited_packets", 2.0).await;
    assert!(waiting, "the excess waits, counted");
    let signed = stand.nodes.nodes[0]
        .metric_sum("dvn_packets_signed_total")
        .await
        .unwrap_or(0.0);
    assert!(
        signed <= 2.0,
        "no more than the cap in the first minute: {signed}"
    );
    stand
        .deliver(Direction::AToB, &sent, Duration::from_secs(180))
        .await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}
