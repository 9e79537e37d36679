//! Issue 10 §6: the destination DVN's quorum changes on chain (by its own multisig) while
//! the nodes run. They follow it — a param packed for the old quorum would be skipped by
//! `execute` without a trace — and keep verifying, each packet once.

use alloy::primitives::U256;
use alloy::sol;
use alloy::sol_types::SolCall;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::{SignatureSet, UnsignedParam};

use crate::common::Stand;
use crate::e2e::TIMEOUT;

sol! {
    interface IDvnSelf {
        function setQuorum(uint64 _quorum) external;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_raised_on_chain_is_followed_without_losing_a_packet() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let before = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &before, TIMEOUT).await;

    // The DVN on B raises its quorum to 3 through itself: a setQuorum param signed by the
    // current quorum (2 of 3), executed by a region's admin.
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let expiration = dst.chain.timestamp().await.unwrap() + 3_600;
    let unsigned = UnsignedParam {
        vid: dst.vid,
        target: dst.contracts.dvn,
        call_data: IDvnSelf::setQuorumCall { _quorum: 3 }.abi_encode().into(),
        expiration: U256::from(expiration),
    };
    let mut set = SignatureSet::new(unsigned.call_hash());
    let signers: Vec<_> = stand.devnet.signers.iter().map(|s| s.address()).collect();
    for sig in stand.devnet.sign(&unsigned, &[0, 1]).unwrap() {
        set.insert(sig, &signers).unwrap();
    }
    let param = unsigned.into_param(set.pack(2).unwrap());
    stand
        .devnet
        .execute(Direction::AToB, 0, vec![param])
        .await
        .unwrap();
    let quorum = dst
        .chain
        .call(dst.contracts.dvn, &dvn_lz::contracts::IDVN::quorumCall {})
        .await
        .unwrap();
    assert_eq!(quorum, 3, "the quorum changed on chain");

    // Packets sent now need all three signatures; the nodes follow the change.
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &after, TIMEOUT).await;
    let all: Vec<_> = before.into_iter().chain(after).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
    // The region that submitted saw the failed signature check and re-read the set at once.
    let logged = stand.nodes.nodes.iter().any(|node| {
        std::fs::read_to_string(&node.log_path)
            .unwrap()
            .contains("signer set or quorum changed on chain")
    });
    assert!(logged, "the change is logged");
}
