//! End to end with a region signing through PKCS#11 (SoftHSM2): its signatures verify packets
//! on chain; and a node whose HSM key is not an on-chain signer refuses to start.

use dvn::signer::pkcs11::Pkcs11Signer;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::{Devnet, DevnetConfig};

use crate::common::{refusal_log, Stand};
use crate::pkcs11::{SoftHsm, MODULE, PIN, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_signing_through_the_hsm_verifies_with_one_other_region() {
    let hsm = SoftHsm::create().unwrap();
    let hsm_signer = Pkcs11Signer::generate(MODULE.as_ref(), TOKEN, "aws-signer", PIN).unwrap();
    let devnet = Devnet::start(DevnetConfig {
        extra_signers: vec![hsm_signer],
        ..DevnetConfig::default()
    })
    .await
    .unwrap();
    let mut stand = Stand::with_devnet(devnet, NodeOptions::default());
    stand.use_hsm(0, &hsm, "aws-signer", hsm_signer);
    // gcp stays down: every quorum needs the HSM's signature.
    stand.nodes.start(&[0, 1]).await.unwrap();
    stand.round_trip_both_ways(5).await;
    let text = stand.nodes.nodes[0].metrics().await.unwrap();
    let signed_by_hsm = text
        .lines()
        .find(|l| l.starts_with("dvn_signing_seconds_count{backend=\"pkcs11\",role=\"signer\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        signed_by_hsm >= 10.0,
        "aws signed through PKCS#11: {signed_by_hsm}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_hsm_key_is_not_an_on_chain_signer_refuses_to_start() {
    let hsm = SoftHsm::create().unwrap();
    let hsm_signer = Pkcs11Signer::generate(MODULE.as_ref(), TOKEN, "aws-signer", PIN).unwrap();
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.use_hsm(0, &hsm, "aws-signer", hsm_signer);
    let aws = &mut stand.nodes.nodes[0];
    let log = refusal_log(aws).await;
    assert!(
        log.contains("is not in the DVN") && log.contains(&hsm_signer.to_string()),
        "{log}"
    );
    assert!(!log.contains(PIN), "the PIN was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_key_is_not_the_configured_address_refuses_to_start() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let expected = stand.devnet.signers[1].address();
    let aws = &mut stand.nodes.nodes[0];
    aws.edit_config(|c| c["node"]["signer_address"] = serde_json::json!(expected.to_string()))
        .unwrap();
    let log = refusal_log(aws).await;
    assert!(
        log.contains("node.signer_address") && log.contains(&expected.to_string()),
        "{log}"
    );
}
