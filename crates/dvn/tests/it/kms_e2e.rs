//! End to end with three key backends, one per region, as operators run them: aws signs
//! through AWS KMS (moto, patched for DIGEST), gcp through PKCS#11 (SoftHSM2, standing in for
//! Cloud HSM via kmsp11), aliyun from an Ethereum keystore. Then gcp's HSM fails mid-run: that
//! node reports its signer down on `/ready` and in `dvn_signer_up`, keeps running, and the
//! other two regions keep verifying; when the HSM is back, gcp signs again without a restart.

use std::time::Duration;

use alloy::primitives::Address;
use dvn::signer::pkcs11::Pkcs11Signer;
use dvn_devnet::kms::moto::MotoServer;
use dvn_devnet::nodes::{sum_metric, DvnNode, NodeOptions};
use dvn_devnet::wait::eventually;
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use serde_json::json;

use crate::common::Stand;
use crate::e2e::TIMEOUT;
use crate::pkcs11::{SoftHsm, MODULE, PIN, TOKEN};

const AWS: usize = 0;
const ALIYUN: usize = 1;
const GCP: usize = 2;

async fn create_kms_key(moto: &MotoServer) -> (String, Address) {
    let key_id = moto
        .create_signing_key(aws_sdk_kms::types::KeySpec::EccSecgP256K1)
        .await
        .unwrap();
    let der = moto
        .kms_client()
        .await
        .get_public_key()
        .key_id(&key_id)
        .send()
        .await
        .unwrap()
        .public_key()
        .unwrap()
        .as_ref()
        .to_vec();
    (key_id, dvn::signer::kms::address_of_spki_der(&der).unwrap())
}

async fn ready(node: &DvnNode) -> Option<serde_json::Value> {
    let response = reqwest::get(format!("{}/ready", node.url())).await.ok()?;
    response.json().await.ok()
}

async fn signer_up(node: &DvnNode) -> Option<f64> {
    let text = node.metrics().await?;
    text.lines()
        .find(|l| l.starts_with("dvn_signer_up{") && l.contains("role=\"signer\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_hsm_and_keystore_regions_verify_and_survive_an_hsm_outage() {
    let moto = MotoServer::start().await.unwrap();
    let (kms_key, kms_signer) = create_kms_key(&moto).await;
    let hsm = SoftHsm::create().unwrap();
    let hsm_signer = Pkcs11Signer::generate(MODULE.as_ref(), TOKEN, "gcp-signer", PIN).unwrap();
    let devnet = Devnet::start(DevnetConfig {
        extra_signers: vec![kms_signer, hsm_signer],
        ..DevnetConfig::default()
    })
    .await
    .unwrap();
    let aliyun_key = devnet.signers[ALIYUN].clone();
    let mut stand = Stand::with_devnet(
        devnet,
        NodeOptions {
            probe_interval_secs: 1,
            ..NodeOptions::default()
        },
    );
    stand.set_peer_signer("aws", kms_signer);
    stand.use_hsm(GCP, &hsm, "gcp-signer", hsm_signer);

    let aws = &mut stand.nodes.nodes[AWS];
    aws.edit_config(|c| {
        c["signer"] = json!({ "kind": "aws-kms", "key_id": kms_key, "region": "us-east-1", "endpoint": moto.url });
    })
    .unwrap();
    aws.set_env("AWS_ACCESS_KEY_ID", "testing");
    aws.set_env("AWS_SECRET_ACCESS_KEY", "testing");

    let aliyun = &mut stand.nodes.nodes[ALIYUN];
    let keystore_dir = aliyun.config_path.parent().unwrap().join("keys");
    std::fs::create_dir_all(&keystore_dir).unwrap();
    alloy::signers::local::PrivateKeySigner::encrypt_keystore(
        &keystore_dir,
        &mut rand::thread_rng(),
        aliyun_key.to_bytes(),
        "keystore-password",
        Some("aliyun-signer.json"),
    )
    .unwrap();
    let keystore = keystore_dir.join("aliyun-signer.json");
    aliyun
        .edit_config(|c| {
            c["signer"] = json!({ "kind": "keystore", "path": keystore, "password_env": "KEYSTORE_PASSWORD" });
        })
        .unwrap();
    aliyun.set_env("KEYSTORE_PASSWORD", "keystore-password");

    // Phase 1: only the KMS and HSM regions run, so every quorum needs both their signatures.
    stand.nodes.start(&[AWS, GCP]).await.unwrap();
    let (a_to_b, b_to_a) = stand.round_trip_both_ways(4).await;
    for (i, backend) in [(AWS, "aws-kms"), (GCP, "pkcs11")] {
        let text = stand.nodes.nodes[i].metrics().await.unwrap();
        let line = format!("dvn_signing_seconds_count{{backend=\"{backend}\",role=\"signer\"}}");
        assert!(
            sum_metric(&text, "dvn_signing_seconds_count") > 0.0 && text.contains(&line),
            "node {i} signed through {backend}"
        );
    }

    // Phase 2: gcp's HSM goes away. gcp reports it; aws + aliyun (keystore) keep verifying.
    hsm.disconnect().unwrap();
    let gcp = &stand.nodes.nodes[GCP];
    let down = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let body = ready(gcp).await?;
        (body["ready"] == false && body["components"]["signer"]["up"] == false).then_some(body)
    })
    .await;
    assert!(down.is_some(), "gcp's /ready never showed the HSM down");
    assert_eq!(signer_up(gcp).await, Some(0.0));
    stand.nodes.start(&[ALIYUN]).await.unwrap();
    let during = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &during, TIMEOUT).await;
    let all_a_to_b: Vec<_> = a_to_b.iter().chain(&during).cloned().collect();
    stand.assert_invariants(Direction::AToB, &all_a_to_b).await;
    assert!(stand.nodes.nodes[GCP].is_running(), "gcp kept running");

    // Phase 3: the HSM is back; gcp signs again without a restart.
    hsm.reconnect().unwrap();
    let gcp = &stand.nodes.nodes[GCP];
    let back = eventually(TIMEOUT, Duration::from_millis(200), || async {
        let body = ready(gcp).await?;
        (body["ready"] == true).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "gcp never recovered: {:?}",
        ready(gcp).await
    );
    assert_eq!(signer_up(gcp).await, Some(1.0));
    let after = stand
        .devnet
        .send_messages(Direction::BToA, 3)
        .await
        .unwrap();
    stand.deliver(Direction::BToA, &after, TIMEOUT).await;
    let all_b_to_a: Vec<_> = b_to_a.iter().chain(&after).cloned().collect();
    stand.assert_invariants(Direction::BToA, &all_b_to_a).await;
}
