//! The versioned wire messages of the peer API, decoded strictly.

use alloy::primitives::{Address, Bytes, Signature, B256};
use serde::{Deserialize, Serialize};

/// Version of the messages below; a different version is refused.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest request body the peer API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most signatures one pull answer may carry (more than any quorum needs).
pub const MAX_SIGNATURES_PER_HASH: usize = 32;

/// `POST /v1/signatures`: one signature over one param hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePush {
    pub version: u8,
    pub call_hash: B256,
    pub signer: Address,
    pub signature: Bytes,
}

/// Most signatures one [`SignatureBatch`] carries (about 290 bytes each in JSON: 48 stay
/// inside [`MAX_BODY_BYTES`]).
pub const MAX_BATCH_SIGNATURES: usize = 48;

/// One signature in a [`SignatureBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchedSignature {
    pub call_hash: B256,
    pub signer: Address,
    pub signature: Bytes,
}

/// `POST /v1/signature-batches`: several signatures in one request, each checked and
/// answered on its own. A signing backlog produces hundreds of signatures a second; one
/// request each would spend the nodes' CPU on HTTP and TLS and run into the listener's
/// per-peer rate limit. A peer that predates this answers 404 and gets single pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureBatch {
    pub version: u8,
    pub signatures: Vec<BatchedSignature>,
}

/// Answer to a [`SignatureBatch`]: one reply per signature, in the batch's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchReply {
    pub version: u8,
    pub replies: Vec<PushReply>,
}

/// Answer to a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushReply {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One signature in a pull answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub signer: Address,
    pub signature: Bytes,
}

/// `GET /v1/signatures/{call_hash}`: every signature the peer holds over that hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureList {
    pub version: u8,
    pub signatures: Vec<SignatureEntry>,
}

/// Most packets one claim message names (≈ 67 bytes each in JSON: 150 stay well inside
/// [`MAX_BODY_BYTES`]); a larger batch is announced in several messages.
pub const MAX_CLAIM_GUIDS: usize = 150;

/// A region's transaction pending on a destination and the packets it carries: while the
/// sender's `nonce` is unused on that chain, the transaction may still land, so no other
/// region submits these packets. A claim can only delay a packet, never get one verified
/// twice: it lapses by itself once the chain shows the nonce used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimEntry {
    pub sender: Address,
    pub nonce: u64,
    pub tx_hash: B256,
    pub guids: Vec<B256>,
}

/// `POST /v1/claims`: the sending region announces one of its pending transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimPush {
    pub version: u8,
    pub dst_eid: u32,
    pub claim: ClaimEntry,
}

/// `POST /v1/claims/query`: which of these packets does a pending transaction of yours carry?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimQuery {
    pub version: u8,
    pub dst_eid: u32,
    pub guids: Vec<B256>,
}

/// Answer to a [`ClaimQuery`]: the asker's packets each pending transaction carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimList {
    pub version: u8,
    pub claims: Vec<ClaimEntry>,
}

/// `POST /v1/rotations`: the sending region proposes replacing its own signer `remove` with
/// `add` on `dst_eid`'s DVN, both params expiring at `expiration` (destination block time).
/// Only the fields travel: each region builds the two `setSigner` params itself, checks them
/// against the chain and its configuration, and signs only when its operator approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationProposal {
    pub version: u8,
    pub dst_eid: u32,
    pub add: Address,
    pub remove: Address,
    pub expiration: u64,
}

impl ClaimEntry {
    /// Checks the shape a peer cannot be trusted to keep: a version we speak, some packets,
    /// and no more of them than one message may name.
    pub fn check(&self) -> Result<(), Rejection> {
        if self.guids.is_empty() || self.guids.len() > MAX_CLAIM_GUIDS {
            return Err(Rejection::BadRequest);
        }
        Ok(())
    }
}

/// Why a peer's signature was not counted (also the metrics label, so the set is fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unsupported protocol version")]
    Version,
    #[error("malformed signature bytes")]
    Malformed,
    #[error("signature does not recover to the claimed signer")]
    WrongSigner,
    #[error("signer is not in the DVN's on-chain signer set")]
    NotASigner,
    #[error("unknown param hash")]
    UnknownHash,
    #[error("malformed request")]
    BadRequest,
    #[error("request body too large")]
    TooLarge,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Version => "version",
            Self::Malformed => "malformed",
            Self::WrongSigner => "wrong_signer",
            Self::NotASigner => "not_a_signer",
            Self::UnknownHash => "unknown_hash",
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
        }
    }
}

/// Checks a signature claimed to be `signer`'s over `call_hash` against the on-chain signer set.
pub fn check_signature(
    call_hash: B256,
    signer: Address,
    bytes: &[u8],
    signer_set: &[Address],
) -> Result<Signature, Rejection> {
    let signature = dvn_lz::multisig::parse_signature(bytes).map_err(|_| Rejection::Malformed)?;
    let digest = dvn_lz::multisig::signing_digest(call_hash);
    let recovered =
        dvn_lz::multisig::recover_signer(digest, signature).map_err(|_| Rejection::Malformed)?;
    if recovered != signer {
        return Err(Rejection::WrongSigner);
    }
    if !signer_set.contains(&signer) {
        return Err(Rejection::NotASigner);
    }
    Ok(dvn_lz::multisig::normalize(signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;

    #[test]
    fn unknown_fields_and_wrong_types_are_refused() {
        let ok = r#"{"version":1,"call_hash":"0x0101010101010101010101010101010101010101010101010101010101010101","signer":"0x0000000000000000000000000000000000000001","signature":"0x00"}"#;
        assert!(serde_json::from_str::<SignaturePush>(ok).is_ok());
        let extra = ok.replace("\"version\":1", "\"version\":1,\"please_sign\":\"0x\"");
        assert!(serde_json::from_str::<SignaturePush>(&extra).is_err());
        let short_hash = ok.replace(
            "0x0101010101010101010101010101010101010101010101010101010101010101",
            "0x01",
        );
        assert!(serde_json::from_str::<SignaturePush>(&short_hash).is_err());
    }

    #[test]
    fn a_full_batch_fits_the_body_limit() {
        let entry = BatchedSignature {
            call_hash: B256::repeat_byte(0xff),
            signer: Address::repeat_byte(0xff),
            signature: Bytes::from(vec![0xff; 65]),
        };
        let batch = SignatureBatch {
            version: PROTOCOL_VERSION,
            signatures: vec![entry; MAX_BATCH_SIGNATURES],
        };
        let body = serde_json::to_vec(&batch).unwrap();
        assert!(body.len() < MAX_BODY_BYTES, "{} bytes", body.len());
    }

    #[test]
    fn only_a_set_member_signing_this_hash_is_accepted() {
        let member = PrivateKeySigner::random();
        let outsider = PrivateKeySigner::random();
        let hash = B256::repeat_byte(7);
        let digest = dvn_lz::multisig::signing_digest(hash);
        let set = [member.address()];
        let good = member.sign_hash_sync(&digest).unwrap().as_bytes();
        assert!(check_signature(hash, member.address(), &good, &set).is_ok());
        let theirs = outsider.sign_hash_sync(&digest).unwrap().as_bytes();
        assert_eq!(
            check_signature(hash, outsider.address(), &theirs, &set),
            Err(Rejection::NotASigner)
        );
        assert_eq!(
            check_signature(hash, member.address(), &theirs, &set),
            Err(Rejection::WrongSigner)
        );
        let other_data = member
            .sign_hash_sync(&B256::repeat_byte(8))
            .unwrap()
            .as_bytes();
        assert_eq!(
            check_signature(hash, member.address(), &other_data, &set),
            Err(Rejection::WrongSigner)
        );
        assert_eq!(
            check_signature(hash, member.address(), &[0xff; 65], &set),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check_signature(hash, member.address(), &[1, 2, 3], &set),
            Err(Rejection::Malformed)
        );
    }
}
