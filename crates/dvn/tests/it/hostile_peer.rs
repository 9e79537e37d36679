//! Scenario 6: a peer sending signatures from a non-signer key, garbage, or signatures over
//! other data is refused, counted and logged (claims too: another account's, none, too many); verification goes on with the honest peers, and
//! the chain never sees a bad signature.

use alloy::primitives::{Bytes, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::SolEvent;
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::{DevnetConfig, Direction};
use dvn_lz::contracts::IDVN;
use dvn_lz::multisig::signing_digest;
use serde_json::json;

use crate::common::{peer_http, Stand};
use crate::e2e::TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peer_signatures_are_refused_and_counted() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &first, TIMEOUT).await;

    let (_, dst) = stand.devnet.sides(Direction::AToB);
    // A region with a valid certificate (aliyun's) sending bad data to aws.
    let url = format!("{}/v1/signatures", stand.nodes.nodes[0].peer_url());
    let http = peer_http(&stand.nodes.nodes[0], "aliyun", "aws");
    let known = known_call_hash(&stand).await;

    let outsider = PrivateKeySigner::random();
    let member = &stand.devnet.signers[1];
    let cases = [
        (
            "non-signer key",
            json!({"version": 1, "call_hash": known, "signer": outsider.address(), "signature": sig(&outsider, known)}),
            403,
        ),
        (
            "member over other data",
            json!({"version": 1, "call_hash": known, "signer": member.address(), "signature": sig(member, B256::repeat_byte(9))}),
            403,
        ),
        (
            "garbage signature",
            json!({"version": 1, "call_hash": known, "signer": member.address(), "signature": Bytes::from(vec![0xff; 65])}),
            400,
        ),
        (
            "wrong version",
            json!({"version": 9, "call_hash": known, "signer": member.address(), "signature": sig(member, known)}),
            400,
        ),
        (
            "unknown field",
            json!({"version": 1, "call_hash": known, "signer": member.address(), "signature": sig(member, known), "sign_this": "0x00"}),
            400,
        ),
    ];
    for (what, body, status) in cases {
        let response = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
    }
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "garbage bytes");
    let huge = vec![b'a'; 64 * 1024];
    // On a client of its own: the server answers 413 without reading the body and closes
    // that connection, and a pooled client could send the next request down it before it
    // sees the close (the request then fails as an incomplete message, not as a refusal).
    let oversized = peer_http(&stand.nodes.nodes[0], "aliyun", "aws");
    let response = oversized
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413, "oversized body");
    // The same checks for each signature of a batch, each answered on its own; a batch that
    // is malformed as a whole is refused as a whole.
    let batches = format!("{}/v1/signature-batches", stand.nodes.nodes[0].peer_url());
    let entry = |signer: alloy::primitives::Address, call_hash: B256, signature: Bytes| json!({"call_hash": call_hash, "signer": signer, "signature": signature});
    let unknown = B256::repeat_byte(0x5a);
    let body = json!({"version": 1, "signatures": [
        entry(member.address(), known, sig(member, known)),
        entry(outsider.address(), known, sig(&outsider, known)),
        entry(member.address(), known, sig(member, B256::repeat_byte(9))),
        entry(member.address(), unknown, sig(member, unknown)),
        entry(outsider.address(), unknown, sig(&outsider, unknown)),
    ]});
    let response = http.post(&batches).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let reply: serde_json::Value = response.json().await.unwrap();
    let answers: Vec<(bool, String)> = reply["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["accepted"].as_bool().unwrap(),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        answers,
        vec![
            (true, String::new()),
            (
                false,
                "signer is not in the DVN's on-chain signer set".into()
            ),
            (
                false,
                "signature does not recover to the claimed signer".into()
            ),
            (true, "held until this node signs that param".into()),
            (false, "unknown param hash".into()),
        ]
    );
    let one = entry(member.address(), known, sig(member, known));
    let batch_cases = [
        ("empty", json!({"version": 1, "signatures": []})),
        (
            "more than 48",
            json!({"version": 1, "signatures": vec![one.clone(); 49]}),
        ),
        ("wrong version", json!({"version": 9, "signatures": [one]})),
    ];
    for (what, body) in batch_cases {
        let response = http.post(&batches).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "batch: {what}");
    }

    let rejected = stand.nodes.nodes[0]
        .metric_sum("dvn_peer_signatures_rejected_total")
        .await
        .unwrap();
    assert!(rejected >= 11.0, "rejections counted: {rejected}");

    // Claims on pending transactions: only for the region's own submitter account, with
    // some packets and not too many. One that counts lapses by itself (its nonce is used).
    let claims = format!("{}/v1/claims", stand.nodes.nodes[0].peer_url());
    let aliyun_submitter = dst.roles.dvn_admins[1];
    let claim = |sender: alloy::primitives::Address, guids: usize| {
        json!({"version": 1, "dst_eid": dst.eid, "claim": {
            "sender": sender, "nonce": 0, "tx_hash": B256::repeat_byte(7),
            "guids": vec![B256::repeat_byte(8); guids],
        }})
    };
    let claim_cases = [
        ("another account", claim(outsider.address(), 1), 403),
        ("no packets", claim(aliyun_submitter, 0), 400),
        ("too many packets", claim(aliyun_submitter, 151), 400),
        ("its own account", claim(aliyun_submitter, 1), 200),
    ];
    for (what, body, status) in claim_cases {
        let response = http.post(&claims).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "claim: {what}");
    }
    let refused = crate::common::labelled_metric(
        &stand.nodes.nodes[0],
        "dvn_peer_claims_rejected_total",
        &["reason=\"wrong_sender\""],
    )
    .await;
    assert_eq!(refused, 1.0, "the claim for another account counted");

    // Verification goes on, and no bad signature ever reached the chain.
    let more = stand
        .devnet
        .send_messages(Direction::AToB, 4)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &more, TIMEOUT).await;
    let all: Vec<_> = first.into_iter().chain(more).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
    let failed = dst
        .chain
        .logs(
            dst.contracts.dvn,
            IDVN::VerifySignaturesFailed::SIGNATURE_HASH,
        )
        .await
        .unwrap();
    assert!(failed.is_empty(), "no VerifySignaturesFailed on chain");
}

fn sig(key: &PrivateKeySigner, call_hash: B256) -> Bytes {
    Bytes::copy_from_slice(
        &key.sign_hash_sync(&signing_digest(call_hash))
            .unwrap()
            .as_bytes(),
    )
}

/// The param hash the nodes signed for the first packet, rebuilt from the chain with the same
/// inputs every region uses (the source block's timestamp anchors the expiration).
async fn known_call_hash(stand: &Stand) -> B256 {
    let (_, dst) = stand.devnet.sides(Direction::AToB);
    let events = stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap();
    let event = &events[0];
    let header = dvn_lz::PacketHeader::decode(&event.header).unwrap();
    let block_ts = {
        let (src, _) = stand.devnet.sides(Direction::AToB);
        let logs = src
            .chain
            .logs(
                src.contracts.endpoint,
                dvn_lz::contracts::IEndpointV2::PacketSent::SIGNATURE_HASH,
            )
            .await
            .unwrap();
        let block = logs[0].block_number.unwrap();
        use alloy::providers::Provider;
        src.chain
            .provider
            .get_block_by_number(block.into())
            .await
            .unwrap()
            .unwrap()
            .header
            .timestamp
    };
    let expiration = block_ts + 3_600;
    let param = dvn_lz::UnsignedParam::verify(
        dst.vid,
        dst.contracts.receive_lib,
        &header,
        event.proofHash,
        1,
        expiration,
    );
    param.call_hash()
}
