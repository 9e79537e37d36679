//! Issue 10 §6, key rotation: the aws region replaces its keystore signer with a key in an
//! HSM (SoftHSM2) on both chains' DVNs, by the procedure the README's runbook gives —
//! `dvn keys rotate propose` on aws, checked and approved on another region, executed by aws
//! through the DVN's own multisig — while messages flow. None is lost or doubled; afterwards
//! aws signs with the HSM key, which is proved by verifying with aws and gcp only.
//! A region proposing to rotate another region's signer is refused by the peers.

use std::time::Duration;

use alloy::primitives::Address;
use dvn::signer::pkcs11::Pkcs11Signer;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::contracts::IDVN;
use dvn_lz::SentPacket;
use serde_json::{json, Value};

use crate::common::{dvn_run, new_token, peer_http, Stand};
use crate::e2e::TIMEOUT;
use crate::pkcs11::{SoftHsm, MODULE, PIN, TOKEN};

/// `dvn keys rotate …` against `node` as an admin: the JSON answer.
fn rotate(node: &dvn_devnet::nodes::DvnNode, token: &str, args: &[&str]) -> Value {
    let cfg = node.config_path.to_str().unwrap();
    let mut all = vec!["keys", "rotate"];
    all.extend_from_slice(&args[..1]);
    all.extend_from_slice(&["-c", cfg]);
    all.extend_from_slice(&args[1..]);
    let (code, text) = dvn_run(&all, &[("DVN_ADMIN_TOKEN", token)]);
    assert_eq!(code, 0, "dvn {all:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_rotates_its_signer_into_the_hsm_while_messages_flow() {
    let hsm = SoftHsm::create().unwrap();
    let next = Pkcs11Signer::generate(MODULE.as_ref(), TOKEN, "aws-next", PIN).unwrap();
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let old = stand.devnet.signers[0].address();
    {
        let aws = &mut stand.nodes.nodes[0];
        aws.edit_config(|c| {
            c["signer_next"] = json!({ "kind": "pkcs11", "module": MODULE, "token_label": TOKEN, "key_label": "aws-next", "pin_env": "HSM_PIN" });
        })
        .unwrap();
        aws.set_env("SOFTHSM2_CONF", hsm.conf.to_str().unwrap());
        aws.set_env("HSM_PIN", PIN);
    }
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let tokens: Vec<String> = stand
        .nodes
        .nodes
        .iter()
        .map(|n| new_token(n.config_path.to_str().unwrap(), "key-custodian", "admin"))
        .collect();
    let (aws, aliyun, gcp) = (
        &stand.nodes.nodes[0],
        &stand.nodes.nodes[1],
        &stand.nodes.nodes[2],
    );
    let mut sent: Vec<(Direction, Vec<SentPacket>)> = Vec::new();
    for direction in [Direction::AToB, Direction::BToA] {
        sent.push((
            direction,
            stand.devnet.send_messages(direction, 2).await.unwrap(),
        ));
    }

    // A peer may not rotate someone else's key: aliyun's certificate, gcp's signer.
    let gcp_signer = stand.devnet.signers[2].address();
    let forged = peer_http(aws, "aliyun", "aws")
        .post(format!("{}/v1/rotations", aws.peer_url()))
        .json(
            &json!({ "version": 1, "dst_eid": stand.devnet.b.eid, "add": next.to_string(),
            "remove": gcp_signer.to_string(), "expiration": u32::MAX }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged
        .text()
        .await
        .unwrap()
        .contains("only rotate its own signer"));

    // aws proposes on both chains; its peers learn of it and hold it for their operators.
    let mut ids = Vec::new();
    for chain in ["ethereum", "conflux-espace"] {
        let proposed = rotate(aws, &tokens[0], &["propose", "--chain", chain]);
        let rotation = &proposed["rotation"];
        let address = |field: &str| rotation[field].as_str()?.parse::<Address>().ok();
        assert_eq!(address("add"), Some(next), "{proposed}");
        assert_eq!(address("remove"), Some(old), "{proposed}");
        let accepted = proposed["peers"].as_array().unwrap();
        assert!(
            accepted.iter().all(|p| p[1] == "accepted"),
            "both peers took the proposal: {proposed}"
        );
        ids.push(rotation["id"].as_str().unwrap().to_string());
    }
    // Refused while the first is open.
    let cfg = aws.config_path.to_str().unwrap();
    let (code, text) = dvn_run(
        &[
            "keys", "rotate", "propose", "-c", cfg, "--chain", "ethereum",
        ],
        &[("DVN_ADMIN_TOKEN", &tokens[0])],
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("still approved"), "{text}");
    let listed = rotate(gcp, &tokens[2], &["list"]);
    let states: Vec<&str> = listed["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["proposed", "proposed"], "{listed}");
    for direction in [Direction::AToB, Direction::BToA] {
        sent.push((
            direction,
            stand.devnet.send_messages(direction, 2).await.unwrap(),
        ));
    }
    // Nothing changes before a second region approves: aws alone is not a quorum.
    for side in [&stand.devnet.a, &stand.devnet.b] {
        let set = side
            .chain
            .call(side.contracts.dvn, &IDVN::getSignersCall {})
            .await
            .unwrap();
        assert!(set.contains(&old) && !set.contains(&next), "{set:?}");
    }

    // aliyun's operator approves both (aws + aliyun = 2 of 3): aws executes them.
    for id in &ids {
        let approved = rotate(aliyun, &tokens[1], &["approve", id]);
        // aws may already have executed it (with aliyun's pushed signature) by the time the
        // answer is read back.
        assert!(
            approved["state"] == "approved" || approved["state"] == "executed",
            "{approved}"
        );
    }
    for side in [&stand.devnet.a, &stand.devnet.b] {
        let rotated = eventually(TIMEOUT, Duration::from_millis(500), || async {
            let set: Vec<Address> = side
                .chain
                .call(side.contracts.dvn, &IDVN::getSignersCall {})
                .await
                .ok()?;
            (set.contains(&next) && !set.contains(&old) && set.len() == 3).then_some(())
        })
        .await;
        if rotated.is_none() {
            stand.dump_logs();
        }
        assert!(rotated.is_some(), "the DVN on eid {} rotated", side.eid);
    }
    // Every region follows: gcp, which never signed it, sees it executed.
    let executed = eventually(TIMEOUT, Duration::from_millis(500), || async {
        let listed = rotate(gcp, &tokens[2], &["list"]);
        listed["rotations"]
            .as_array()?
            .iter()
            .all(|r| r["state"] == "executed")
            .then_some(())
    })
    .await;
    assert!(executed.is_some(), "gcp saw both rotations executed");
    for direction in [Direction::AToB, Direction::BToA] {
        sent.push((
            direction,
            stand.devnet.send_messages(direction, 2).await.unwrap(),
        ));
    }
    for (direction, packets) in &sent {
        stand.deliver(*direction, packets, TIMEOUT).await;
    }

    // aliyun down: every quorum now needs aws's signature, which only the HSM key gives.
    stand.nodes.nodes[1].kill();
    for direction in [Direction::AToB, Direction::BToA] {
        let packets = stand.devnet.send_messages(direction, 2).await.unwrap();
        stand.deliver(direction, &packets, TIMEOUT).await;
        sent.push((direction, packets));
    }
    for direction in [Direction::AToB, Direction::BToA] {
        let packets: Vec<SentPacket> = sent
            .iter()
            .filter(|(d, _)| *d == direction)
            .flat_map(|(_, p)| p.clone())
            .collect();
        let report = stand.assert_invariants(direction, &packets).await;
        assert_eq!(report.duplicates, vec![]);
    }
    let aws = &stand.nodes.nodes[0];
    let log = std::fs::read_to_string(&aws.log_path).unwrap();
    assert!(
        log.contains("signing there with the new key"),
        "the switch is logged"
    );
}
