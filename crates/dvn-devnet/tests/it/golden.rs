//! Golden tests: `dvn_lz`'s hashing and signature packing against the deployed DVN contract.

use alloy::primitives::{Address, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use dvn_lz::contracts::IDVN;
use dvn_lz::multisig::{hash_call_data, SignatureSet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_chain_hashing_and_packing_match_the_deployed_dvn() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let dvn = devnet.b.contracts.dvn;
    let chain = &devnet.b.chain;

    // The contract's own view of the multisig.
    let mut signers: Vec<Address> = devnet.signers.iter().map(|s| s.address()).collect();
    let mut on_chain = chain.call(dvn, &IDVN::getSignersCall {}).await.unwrap();
    on_chain.sort();
    signers.sort();
    assert_eq!(on_chain, signers);
    assert_eq!(chain.call(dvn, &IDVN::quorumCall {}).await.unwrap(), 2);
    assert_eq!(chain.call(dvn, &IDVN::vidCall {}).await.unwrap(), 212);
    assert_eq!(
        devnet
            .a
            .chain
            .call(devnet.a.contracts.dvn, &IDVN::vidCall {})
            .await
            .unwrap(),
        101
    );

    // hashCallData over a real verify param and edge-case inputs.
    let sent = devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap()
        .remove(0);
    let real = devnet.verify_param(Direction::AToB, &sent, 1, 1_900_000_000);
    let mut cases = vec![(
        real.vid,
        real.target,
        real.expiration,
        real.call_data.clone(),
    )];
    for (i, len) in [0usize, 1, 31, 32, 33, 1000].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let expiration = if i % 2 == 0 {
            U256::MAX
        } else {
            U256::from(i as u64)
        };
        cases.push((
            u32::MAX - i as u32,
            Address::repeat_byte(i as u8 + 1),
            expiration,
            data.into(),
        ));
    }
    for (vid, target, expiration, call_data) in cases {
        let call = IDVN::hashCallDataCall {
            vid,
            target,
            callData: call_data.clone(),
            expiration,
        };
        let on_chain = chain.call(dvn, &call).await.unwrap();
        assert_eq!(
            hash_call_data(vid, target, expiration, &call_data),
            on_chain
        );
    }

    // verifySignatures: (true, 0) for exactly quorum sorted signatures; each malformation gets
    // the contract's own error code (1 signature error, 2 duplicated/unsorted, 3 not a signer).
    let hash = real.call_hash();
    let signatures = devnet.sign(&real, &[0, 1, 2]).unwrap();
    let mut set = SignatureSet::new(hash);
    for s in &signatures {
        set.insert(*s, &signers).unwrap();
    }
    let verify = |sigs: Bytes| IDVN::verifySignaturesCall {
        hash,
        signatures: sigs,
    };
    let ok = chain
        .call(dvn, &verify(set.pack(2).unwrap()))
        .await
        .unwrap();
    assert_eq!((ok._0, ok._1), (true, 0));

    let three = chain
        .call(dvn, &verify(set.pack(3).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        (three._0, three._1),
        (false, 1),
        "quorum + 1 signatures are rejected"
    );

    let packed = set.pack(2).unwrap();
    let reversed: Vec<u8> = [&packed[65..], &packed[..65]].concat();
    let rev = chain.call(dvn, &verify(reversed.into())).await.unwrap();
    assert_eq!((rev._0, rev._1), (false, 2), "descending order is rejected");

    let outsider = PrivateKeySigner::random();
    let foreign = outsider.sign_hash_sync(&real.digest()).unwrap();
    let mut pair = [
        (devnet.signers[0].address(), signatures[0]),
        (outsider.address(), foreign),
    ];
    pair.sort_by_key(|(a, _)| *a);
    let with_outsider: Vec<u8> = pair.iter().flat_map(|(_, s)| s.as_bytes()).collect();
    let out = chain
        .call(dvn, &verify(with_outsider.into()))
        .await
        .unwrap();
    assert_eq!((out._0, out._1), (false, 3), "a non-signer is rejected");

    // Signing the call hash without the EIP-191 prefix recovers strangers.
    let raw: Vec<u8> = devnet
        .signers
        .iter()
        .map(|s| (s.address(), s.sign_hash_sync(&hash).unwrap()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .values()
        .take(2)
        .flat_map(|s| s.as_bytes())
        .collect();
    let unprefixed = chain.call(dvn, &verify(raw.into())).await.unwrap();
    assert!(!unprefixed._0);
}
