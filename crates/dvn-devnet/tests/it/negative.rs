//! Each way a DVN param can be wrong verifies nothing on chain; the same packet then verifies
//! with a correct param, so the failure came from the param and not from the set-up.

use alloy::primitives::{Address, Bytes, Signature, U256};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::SolEvent;
use dvn_devnet::deploy::{set_receive_uln_config, uln_config};
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use dvn_lz::contracts::IDVN;
use dvn_lz::{SentPacket, UnsignedParam, VerificationState};

const DIR: Direction = Direction::AToB;

async fn one_packet() -> (Devnet, SentPacket) {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let packet = devnet.send_messages(DIR, 1).await.unwrap().remove(0);
    (devnet, packet)
}

async fn unsigned(devnet: &Devnet, packet: &SentPacket, confirmations: u64) -> UnsignedParam {
    let (_, dst) = devnet.sides(DIR);
    let expiration = dst.chain.timestamp().await.unwrap() + 3_600;
    devnet.verify_param(DIR, packet, confirmations, expiration)
}

fn packed(sigs: &[(Address, Signature)]) -> Bytes {
    sigs.iter()
        .flat_map(|(_, s)| s.as_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn signed_by(
    devnet: &Devnet,
    param: &UnsignedParam,
    indices: &[usize],
) -> Vec<(Address, Signature)> {
    let sigs = devnet.sign(param, indices).unwrap();
    indices
        .iter()
        .map(|&i| devnet.signers[i].address())
        .zip(sigs)
        .collect()
}

fn sorted(mut sigs: Vec<(Address, Signature)>) -> Vec<(Address, Signature)> {
    sigs.sort_by_key(|(a, _)| *a);
    sigs
}

/// Submits `signatures` for `param`; asserts the tx succeeded yet nothing was verified, and
/// that the DVN emitted exactly `expected_dvn_events` (topic0s, in order).
async fn assert_verifies_nothing(
    devnet: &Devnet,
    packet: &SentPacket,
    param: UnsignedParam,
    signatures: Bytes,
    expected_dvn_events: &[alloy::primitives::B256],
) -> TransactionReceipt {
    let receipt = devnet
        .execute(DIR, 0, vec![param.into_param(signatures)])
        .await
        .unwrap();
    assert!(receipt.status(), "execute never reverts for a bad param");
    let dvn = devnet.sides(DIR).1.contracts.dvn;
    let topics: Vec<_> = receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == dvn)
        .filter_map(|l| l.topics().first().copied())
        .collect();
    assert_eq!(topics, expected_dvn_events);
    assert!(
        devnet.payload_verified(DIR).await.unwrap().is_empty(),
        "no PayloadVerified"
    );
    assert_eq!(
        devnet.verification_state(DIR, packet).await.unwrap(),
        VerificationState::Verifying
    );
    receipt
}

/// The positive control: a correct param for the same packet verifies it.
async fn assert_correct_param_still_verifies(devnet: &Devnet, packet: &SentPacket) {
    devnet
        .verify_as_dvn(DIR, std::slice::from_ref(packet), &[0, 1])
        .await
        .unwrap();
    assert_eq!(devnet.payload_verified(DIR).await.unwrap().len(), 1);
    assert_eq!(
        devnet.verification_state(DIR, packet).await.unwrap(),
        VerificationState::Verifiable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_signature_below_quorum_verifies_nothing() {
    let (devnet, packet) = one_packet().await;
    let param = unsigned(&devnet, &packet, 1).await;
    let sigs = packed(&signed_by(&devnet, &param, &[0]));
    let failed = IDVN::VerifySignaturesFailed::SIGNATURE_HASH;
    assert_verifies_nothing(&devnet, &packet, param, sigs, &[failed]).await;
    assert_correct_param_still_verifies(&devnet, &packet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_from_outside_the_signer_set_verifies_nothing() {
    let (devnet, packet) = one_packet().await;
    let param = unsigned(&devnet, &packet, 1).await;
    let outsider = PrivateKeySigner::random();
    let mut sigs = signed_by(&devnet, &param, &[0]);
    sigs.push((
        outsider.address(),
        outsider.sign_hash_sync(&param.digest()).unwrap(),
    ));
    let failed = IDVN::VerifySignaturesFailed::SIGNATURE_HASH;
    assert_verifies_nothing(&devnet, &packet, param, packed(&sorted(sigs)), &[failed]).await;
    assert_correct_param_still_verifies(&devnet, &packet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_signatures_verify_nothing() {
    let (devnet, packet) = one_packet().await;
    let param = unsigned(&devnet, &packet, 1).await;
    let mut sigs = sorted(signed_by(&devnet, &param, &[0, 1]));
    sigs.reverse();
    let failed = IDVN::VerifySignaturesFailed::SIGNATURE_HASH;
    assert_verifies_nothing(&devnet, &packet, param, packed(&sigs), &[failed]).await;
    assert_correct_param_still_verifies(&devnet, &packet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_param_verifies_nothing_and_emits_nothing() {
    let (devnet, packet) = one_packet().await;
    let (_, dst) = devnet.sides(DIR);
    // Expiring at the latest block's timestamp: the executing block is never earlier.
    let expiration = dst.chain.timestamp().await.unwrap();
    let param = devnet.verify_param(DIR, &packet, 1, expiration);
    let sigs = packed(&sorted(signed_by(&devnet, &param, &[0, 1])));
    let receipt = assert_verifies_nothing(&devnet, &packet, param, sigs, &[]).await;
    assert!(
        receipt.inner.logs().is_empty(),
        "an expired param is skipped silently"
    );
    assert_correct_param_still_verifies(&devnet, &packet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_confirmations_than_the_receive_config_leave_the_packet_unverifiable() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let (_, dst) = devnet.sides(DIR);
    // A per-OApp override on the destination asks for 5 confirmations (default: 1).
    let config = uln_config(5, vec![dst.contracts.dvn]);
    set_receive_uln_config(
        &dst.chain,
        dst.roles.deployer,
        &dst.contracts,
        dst.contracts.counter,
        devnet.a.eid,
        config,
    )
    .await
    .unwrap();
    assert_eq!(
        devnet
            .required_confirmations(DIR, dst.contracts.counter)
            .await
            .unwrap(),
        5
    );

    let packet = devnet.send_messages(DIR, 1).await.unwrap().remove(0);
    let param = unsigned(&devnet, &packet, 2).await;
    let sigs = packed(&sorted(signed_by(&devnet, &param, &[0, 1])));
    devnet
        .execute(DIR, 0, vec![param.into_param(sigs)])
        .await
        .unwrap();
    // The verification is recorded (with 2) but does not satisfy the path.
    let events = devnet.payload_verified(DIR).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].confirmations, U256::from(2u8));
    assert_eq!(
        devnet.verification_state(DIR, &packet).await.unwrap(),
        VerificationState::Verifying
    );
    let err = devnet.commit(DIR, &packet).await.unwrap_err();
    let verifying = alloy::primitives::keccak256("LZ_ULN_Verifying()");
    assert_eq!(
        err.revert_selector(),
        Some([verifying[0], verifying[1], verifying[2], verifying[3]]),
        "{err}"
    );

    // Verifying again with the required 5 overwrites the entry and unblocks the packet.
    devnet
        .verify_as_dvn(DIR, std::slice::from_ref(&packet), &[1, 2])
        .await
        .unwrap();
    assert_eq!(
        devnet.verification_state(DIR, &packet).await.unwrap(),
        VerificationState::Verifiable
    );
    devnet.commit_and_deliver(DIR, &packet).await.unwrap();
    assert_eq!(devnet.counter(dst).await.unwrap(), U256::from(1u8));
}
