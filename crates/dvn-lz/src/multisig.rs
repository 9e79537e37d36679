//! What DVN signers sign, and how their signatures must be packed for `DVN.execute`.
//!
//! `MultiSig.sol` accepts a param when `signatures` holds **exactly `quorum`** 65-byte
//! `r ‖ s ‖ v` signatures (`v` ∈ {27, 28}, low-s), recovering to signers in strictly
//! ascending address order, over the EIP-191 digest of
//! `keccak256(vid ‖ target ‖ expiration ‖ callData)` — expiration *before* callData.
//! [`SignatureSet`] enforces all of that off-chain, so a param we submit never fails
//! `verifySignatures`, and a signature from a peer counts only if it recovers to a member of
//! the on-chain signer set over the hash *we* built.

use std::collections::BTreeMap;

use alloy_primitives::{eip191_hash_message, keccak256, Address, Bytes, Signature, B256, U256};
use alloy_sol_types::SolCall;

use crate::contracts::{ExecuteParam, IReceiveUln302};
use crate::packet::PacketHeader;

/// Length of one packed signature in `ExecuteParam.signatures`.
pub const SIGNATURE_LEN: usize = 65;

/// `DVN.hashCallData(vid, target, callData, expiration)`, computed off-chain.
pub fn hash_call_data(vid: u32, target: Address, expiration: U256, call_data: &[u8]) -> B256 {
    let mut preimage = Vec::with_capacity(4 + 20 + 32 + call_data.len());
    preimage.extend_from_slice(&vid.to_be_bytes());
    preimage.extend_from_slice(target.as_slice());
    preimage.extend_from_slice(&expiration.to_be_bytes::<32>());
    preimage.extend_from_slice(call_data);
    keccak256(preimage)
}

/// The digest a signer actually signs: EIP-191 `personal_sign` over the 32-byte call hash.
pub fn signing_digest(call_hash: B256) -> B256 {
    eip191_hash_message(call_hash)
}

/// Calldata of `ReceiveUln302.verify(header, payloadHash, confirmations)`.
pub fn verify_call_data(header: &PacketHeader, payload_hash: B256, confirmations: u64) -> Bytes {
    IReceiveUln302::verifyCall {
        packetHeader: Bytes::copy_from_slice(&header.encode()),
        payloadHash: payload_hash,
        confirmations,
    }
    .abi_encode()
    .into()
}

/// The unsigned part of an [`ExecuteParam`]: what every region must agree on byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedParam {
    pub vid: u32,
    pub target: Address,
    pub call_data: Bytes,
    pub expiration: U256,
}

impl UnsignedParam {
    /// A `ReceiveUln302.verify` param for one packet on the DVN with `vid`.
    pub fn verify(
        vid: u32,
        receive_lib: Address,
        header: &PacketHeader,
        payload_hash: B256,
        confirmations: u64,
        expiration: u64,
    ) -> Self {
        Self {
            vid,
            target: receive_lib,
            call_data: verify_call_data(header, payload_hash, confirmations),
            expiration: U256::from(expiration),
        }
    }

    /// A `DVN.setSigner(signer, active)` param: the DVN calling itself, so only a quorum of
    /// the current signers can change the signer set (key rotation).
    pub fn set_signer(
        vid: u32,
        dvn: Address,
        signer: Address,
        active: bool,
        expiration: u64,
    ) -> Self {
        Self {
            vid,
            target: dvn,
            call_data: crate::contracts::IDVN::setSignerCall { signer, active }
                .abi_encode()
                .into(),
            expiration: U256::from(expiration),
        }
    }

    /// `hashCallData` of this param.
    pub fn call_hash(&self) -> B256 {
        hash_call_data(self.vid, self.target, self.expiration, &self.call_data)
    }

    /// The digest to sign for this param.
    pub fn digest(&self) -> B256 {
        signing_digest(self.call_hash())
    }

    /// Attaches packed signatures (see [`SignatureSet::pack`]).
    pub fn into_param(self, signatures: Bytes) -> ExecuteParam {
        ExecuteParam {
            vid: self.vid,
            target: self.target,
            callData: self.call_data,
            expiration: self.expiration,
            signatures,
        }
    }
}

/// Why a signature was not accepted into a [`SignatureSet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature must be {SIGNATURE_LEN} bytes, got {0}")]
    Length(usize),
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("signature recovers to {0}, which is not in the DVN signer set")]
    NotASigner(Address),
    #[error("only {have} distinct signer signatures, quorum is {quorum}")]
    BelowQuorum { have: usize, quorum: usize },
    #[error("quorum must be at least 1")]
    ZeroQuorum,
}

/// Brings a signature into the only form `MultiSig.sol` accepts: low-s (flipping the parity
/// with it, so it still recovers to the same key). HSMs return high-s about half the time.
pub fn normalize(signature: Signature) -> Signature {
    signature.normalized_s()
}

/// The 65-byte `r ‖ s ‖ v` form with `v` = 27/28, after low-s normalisation.
pub fn to_contract_bytes(signature: Signature) -> [u8; SIGNATURE_LEN] {
    normalize(signature).as_bytes()
}

/// Parses a 65-byte signature from untrusted input (`v` may be 0/1 or 27/28).
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, SignatureError> {
    if bytes.len() != SIGNATURE_LEN {
        return Err(SignatureError::Length(bytes.len()));
    }
    Signature::from_raw(bytes).map_err(|e| SignatureError::Malformed(e.to_string()))
}

/// Who signed `digest`, after normalisation.
pub fn recover_signer(digest: B256, signature: Signature) -> Result<Address, SignatureError> {
    normalize(signature)
        .recover_address_from_prehash(&digest)
        .map_err(|e| SignatureError::Malformed(e.to_string()))
}

/// Signatures over one call hash, keyed (and so ordered) by the signer they recover to.
#[derive(Debug, Clone)]
pub struct SignatureSet {
    digest: B256,
    by_signer: BTreeMap<Address, Signature>,
}

impl SignatureSet {
    /// An empty set for the param whose `hashCallData` is `call_hash`.
    pub fn new(call_hash: B256) -> Self {
        Self {
            digest: signing_digest(call_hash),
            by_signer: BTreeMap::new(),
        }
    }

    /// Accepts `signature` if it recovers, over this set's digest, to one of `signers` (the
    /// on-chain `getSigners()`). Returns the signer. A second signature from the same signer
    /// is accepted as a no-op (ECDSA signatures of one key over one digest are
    /// interchangeable), so replays from a peer are harmless.
    pub fn insert(
        &mut self,
        signature: Signature,
        signers: &[Address],
    ) -> Result<Address, SignatureError> {
        let signature = normalize(signature);
        let signer = recover_signer(self.digest, signature)?;
        if !signers.contains(&signer) {
            return Err(SignatureError::NotASigner(signer));
        }
        self.by_signer.entry(signer).or_insert(signature);
        Ok(signer)
    }

    /// Number of distinct signers collected.
    pub fn len(&self) -> usize {
        self.by_signer.len()
    }

    /// True when no signature has been accepted.
    pub fn is_empty(&self) -> bool {
        self.by_signer.is_empty()
    }

    /// The signers collected, ascending.
    pub fn signers(&self) -> impl Iterator<Item = &Address> {
        self.by_signer.keys()
    }

    /// Exactly `quorum` signatures, ascending by signer address, packed for `ExecuteParam`.
    pub fn pack(&self, quorum: usize) -> Result<Bytes, SignatureError> {
        if quorum == 0 {
            return Err(SignatureError::ZeroQuorum);
        }
        if self.by_signer.len() < quorum {
            return Err(SignatureError::BelowQuorum {
                have: self.by_signer.len(),
                quorum,
            });
        }
        let mut packed = Vec::with_capacity(quorum * SIGNATURE_LEN);
        for signature in self.by_signer.values().take(quorum) {
            packed.extend_from_slice(&signature.as_bytes());
        }
        Ok(packed.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{address, b256, hex};
    use k256::ecdsa::SigningKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn address_of(key: &SigningKey) -> Address {
        Address::from_public_key(key.verifying_key())
    }

    fn sign(key: &SigningKey, digest: B256) -> Signature {
        let (sig, recid) = key.sign_prehash_recoverable(digest.as_slice()).unwrap();
        Signature::from_signature_and_parity(sig, recid.is_y_odd())
    }

    /// The same signature in its high-s twin form: (r, n - s, !parity). Valid for ecrecover
    /// without the low-s rule, rejected by OpenZeppelin's ECDSA.
    fn high_s_twin(sig: Signature) -> Signature {
        let n = U256::from_be_slice(
            &hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
                .unwrap(),
        );
        Signature::new(sig.r(), n - sig.s(), !sig.v())
    }

    fn sample_param() -> UnsignedParam {
        let header = PacketHeader {
            nonce: 7,
            src_eid: 30101,
            sender: B256::left_padding_from(&[0x11; 20]),
            dst_eid: 30212,
            receiver: B256::left_padding_from(&[0x22; 20]),
        };
        UnsignedParam::verify(
            212,
            address!("00000000000000000000000000000000000000aa"),
            &header,
            B256::repeat_byte(0x33),
            5,
            1_800_000_000,
        )
    }

    #[test]
    fn hash_puts_expiration_before_call_data() {
        let target = address!("00000000000000000000000000000000000000aa");
        let h = hash_call_data(212, target, U256::from(9u64), &[0xde, 0xad]);
        let mut manual = Vec::new();
        manual.extend_from_slice(&212u32.to_be_bytes());
        manual.extend_from_slice(target.as_slice());
        manual.extend_from_slice(&U256::from(9u64).to_be_bytes::<32>());
        manual.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(h, keccak256(&manual));
        // The struct order (callData before expiration) gives a different hash.
        let mut struct_order = Vec::new();
        struct_order.extend_from_slice(&212u32.to_be_bytes());
        struct_order.extend_from_slice(target.as_slice());
        struct_order.extend_from_slice(&[0xde, 0xad]);
        struct_order.extend_from_slice(&U256::from(9u64).to_be_bytes::<32>());
        assert_ne!(h, keccak256(&struct_order));
    }

    #[test]
    fn digest_is_eip191_over_the_32_byte_hash() {
        let h = b256!("0101010101010101010101010101010101010101010101010101010101010101");
        let mut preimage = b"\x19Ethereum Signed Message:\n32".to_vec();
        preimage.extend_from_slice(h.as_slice());
        assert_eq!(signing_digest(h), keccak256(preimage));
    }

    #[test]
    fn verify_call_data_has_the_verify_selector_and_the_81_byte_header() {
        let param = sample_param();
        assert_eq!(&param.call_data[..4], &[0x02, 0x23, 0x53, 0x6e]);
        let decoded = IReceiveUln302::verifyCall::abi_decode(&param.call_data).unwrap();
        assert_eq!(decoded.packetHeader.len(), 81);
        assert_eq!(decoded.confirmations, 5);
    }

    #[test]
    fn pack_orders_by_signer_and_takes_exactly_quorum() {
        let param = sample_param();
        let keys: Vec<_> = (1..=3).map(key).collect();
        let signers: Vec<_> = keys.iter().map(address_of).collect();
        let mut set = SignatureSet::new(param.call_hash());
        // Insert in descending signer order to prove pack() sorts.
        let mut by_addr: Vec<_> = keys.iter().collect();
        by_addr.sort_by_key(|k| std::cmp::Reverse(address_of(k)));
        for k in by_addr {
            set.insert(sign(k, param.digest()), &signers).unwrap();
        }
        let packed = set.pack(2).unwrap();
        assert_eq!(packed.len(), 2 * SIGNATURE_LEN);
        let recovered: Vec<_> = packed
            .chunks(SIGNATURE_LEN)
            .map(|c| recover_signer(param.digest(), parse_signature(c).unwrap()).unwrap())
            .collect();
        let mut sorted = signers.clone();
        sorted.sort();
        assert_eq!(recovered, sorted[..2]);
        for chunk in packed.chunks(SIGNATURE_LEN) {
            assert!(chunk[64] == 27 || chunk[64] == 28);
        }
        assert_eq!(set.pack(3).unwrap().len(), 3 * SIGNATURE_LEN);
        assert_eq!(
            set.pack(4),
            Err(SignatureError::BelowQuorum { have: 3, quorum: 4 })
        );
        assert_eq!(set.pack(0), Err(SignatureError::ZeroQuorum));
    }

    #[test]
    fn high_s_signatures_are_normalised_and_still_recover() {
        let param = sample_param();
        let k = key(7);
        let low = sign(&k, param.digest());
        let high = high_s_twin(low);
        assert!(high.s() > low.s());
        assert_eq!(normalize(high), low);
        let bytes = to_contract_bytes(high);
        assert_eq!(bytes, low.as_bytes());
        let mut set = SignatureSet::new(param.call_hash());
        assert_eq!(set.insert(high, &[address_of(&k)]), Ok(address_of(&k)));
        assert_eq!(set.pack(1).unwrap().as_ref(), low.as_bytes().as_slice());
    }

    #[test]
    fn rejects_outsiders_other_data_and_garbage() {
        let param = sample_param();
        let insider = key(1);
        let outsider = key(9);
        let signers = [address_of(&insider)];
        let mut set = SignatureSet::new(param.call_hash());

        let err = set
            .insert(sign(&outsider, param.digest()), &signers)
            .unwrap_err();
        assert_eq!(err, SignatureError::NotASigner(address_of(&outsider)));

        // An insider's signature over *other* data recovers to someone else.
        let other = sign(&insider, B256::repeat_byte(0x44));
        assert!(matches!(
            set.insert(other, &signers),
            Err(SignatureError::NotASigner(_))
        ));

        // Signing the raw hash without the EIP-191 prefix recovers a stranger too.
        let unprefixed = sign(&insider, param.call_hash());
        assert!(matches!(
            set.insert(unprefixed, &signers),
            Err(SignatureError::NotASigner(_))
        ));

        assert_eq!(parse_signature(&[0u8; 64]), Err(SignatureError::Length(64)));
        assert!(set.is_empty());

        // Duplicates from the same signer count once.
        set.insert(sign(&insider, param.digest()), &signers)
            .unwrap();
        set.insert(sign(&insider, param.digest()), &signers)
            .unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn parse_accepts_v_0_1_and_27_28() {
        let param = sample_param();
        let sig = sign(&key(3), param.digest());
        let mut bytes = sig.as_bytes();
        let canonical = parse_signature(&bytes).unwrap();
        bytes[64] -= 27;
        assert_eq!(parse_signature(&bytes).unwrap(), canonical);
    }
}
