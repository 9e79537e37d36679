//! The happy path: the test plays the 2-of-3 DVN with `dvn_lz`'s hashing and packing.

use alloy::primitives::{Bytes, U256};
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use dvn_lz::VerificationState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_messages_each_way_are_verified_by_two_of_three_and_delivered() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    // Different pairs of regions sign each way: any two of the three make a quorum.
    for (direction, signers) in [(Direction::AToB, [0, 2]), (Direction::BToA, [1, 2])] {
        let (src, dst) = devnet.sides(direction);
        let packets = devnet.send_messages(direction, 10).await.unwrap();
        assert_eq!(packets.len(), 10);
        for (i, sent) in packets.iter().enumerate() {
            let header = &sent.packet.header;
            assert_eq!(header.nonce, i as u64 + 1, "nonces run 1..=10 on the path");
            assert_eq!((header.src_eid, header.dst_eid), (src.eid, dst.eid));
            assert_eq!(header.sender_address().unwrap(), src.contracts.counter);
            assert_eq!(header.receiver_address().unwrap(), dst.contracts.counter);
            assert!(
                sent.is_assigned_to(src.contracts.dvn),
                "the source DVN is required"
            );
            assert!(
                !sent.is_assigned_to(dst.contracts.dvn),
                "the destination DVN is not"
            );
            assert_eq!(sent.send_library, src.contracts.send_lib);
            assert_eq!(
                devnet.verification_state(direction, sent).await.unwrap(),
                VerificationState::Verifying
            );
        }

        let receipt = devnet
            .verify_as_dvn(direction, &packets, &signers)
            .await
            .unwrap();
        assert!(receipt.status());

        // Exactly one PayloadVerified from our DVN per packet, matching header and payload.
        let events = devnet.payload_verified(direction).await.unwrap();
        assert_eq!(events.len(), packets.len());
        for sent in &packets {
            let header = Bytes::copy_from_slice(&sent.packet.header.encode());
            let matching: Vec<_> = events
                .iter()
                .filter(|e| e.header == header && e.proofHash == sent.packet.payload_hash())
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "packet {} verified once",
                sent.packet.header.nonce
            );
            assert_eq!(matching[0].confirmations, U256::from(1u8));
            assert_eq!(
                devnet.verification_state(direction, sent).await.unwrap(),
                VerificationState::Verifiable
            );
        }

        for sent in &packets {
            devnet.commit_and_deliver(direction, sent).await.unwrap();
            assert_eq!(
                devnet.verification_state(direction, sent).await.unwrap(),
                VerificationState::Verified
            );
        }
        assert_eq!(devnet.counter(dst).await.unwrap(), U256::from(10u8));
    }
    assert_eq!(devnet.counter(&devnet.a).await.unwrap(), U256::from(10u8));
    assert_eq!(devnet.counter(&devnet.b).await.unwrap(), U256::from(10u8));
}
