//! Scenario 5: packets assigned only to another DVN are ignored; the same OApp's packets are
//! verified again once its config names our DVN.

use std::time::Duration;

use dvn_devnet::artifacts::Artifacts;
use dvn_devnet::deploy::{deploy_dvn, set_send_uln_config, uln_config, SideSpec};
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_for_another_dvn_are_ignored() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let devnet = &stand.devnet;
    let (src, dst) = devnet.sides(Direction::AToB);
    // A second DVN on the source chain, with its own (unrelated) signer.
    let spec = SideSpec {
        eid: src.eid,
        remote_eid: dst.eid,
        signers: vec![alloy::primitives::Address::repeat_byte(0x77)],
        quorum: 1,
    };
    let artifacts = Artifacts::locate().unwrap();
    let other = deploy_dvn(
        &src.chain,
        &artifacts,
        &src.roles,
        &spec,
        src.contracts.send_lib,
        src.contracts.receive_lib,
        src.contracts.price_feed,
    )
    .await
    .unwrap();
    let counter = src.contracts.counter;
    let set_required = |dvn| {
        set_send_uln_config(
            &src.chain,
            src.roles.deployer,
            &src.contracts,
            counter,
            dst.eid,
            uln_config(1, vec![dvn]),
        )
    };
    set_required(other).await.unwrap();

    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let foreign = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    assert!(foreign
        .iter()
        .all(|p| !p.is_assigned_to(src.contracts.dvn) && p.is_assigned_to(other)));
    let scanned_to = src.chain.head().await.unwrap();
    for node in &stand.nodes.nodes {
        let past = eventually(TIMEOUT, Duration::from_millis(50), || async {
            let text = node.metrics().await?;
            let cursor = text
                .lines()
                .find(|l| l.starts_with("dvn_chain_cursor{chain=\"ethereum\"}"))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()?;
            (cursor >= scanned_to as f64).then_some(())
        })
        .await;
        assert!(
            past.is_some(),
            "{} scanned past the foreign packets",
            node.region
        );
    }
    assert_eq!(
        stand.nodes.metric_sum("dvn_packets_observed_total").await,
        0.0
    );

    // Positive control: the same OApp, our DVN again → verified.
    let (src, _) = stand.devnet.sides(Direction::AToB);
    set_send_uln_config(
        &src.chain,
        src.roles.deployer,
        &src.contracts,
        src.contracts.counter,
        dst.eid,
        uln_config(1, vec![src.contracts.dvn]),
    )
    .await
    .unwrap();
    // (Delivery is nonce-ordered and the foreign nonces 1–3 are never verified, so this packet
    // can be verified but not delivered: "verifiable" is the proof.)
    let ours = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    let verifiable = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let state = stand
            .devnet
            .verification_state(Direction::AToB, &ours[0])
            .await
            .ok()?;
        (state == dvn_lz::VerificationState::Verifiable).then_some(())
    })
    .await;
    assert!(verifiable.is_some(), "our packet was verified");
    assert!(
        stand
            .devnet
            .payload_verified(Direction::AToB)
            .await
            .unwrap()
            .len()
            == 1,
        "only our packet was verified by our DVN"
    );
}
