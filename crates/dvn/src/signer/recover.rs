//! One conversion for every HSM/KMS backend: their raw `r ‖ s` (PKCS#11) or DER (cloud KMS)
//! signature → low-s → recovery id found by trial recovery against the key's known address →
//! an Ethereum signature (v = 27/28 when serialised). HSMs return high-s about half the time
//! and never a recovery id; the DVN contract rejects both, so nothing leaves a backend any
//! other way.

use alloy::primitives::{Address, Signature, B256};

/// Why a backend's signature could not be turned into a valid Ethereum signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    #[error("signature is neither 64-byte r||s nor DER: {0}")]
    Encoding(String),
    #[error("signature recovers to neither parity for the key's address {0}")]
    NoParity(Address),
}

/// The secp256k1 signature in `bytes` (64-byte `r ‖ s`, or DER) over `digest`, normalised and
/// with the parity that recovers to `expected`.
pub fn ethereum_signature(
    bytes: &[u8],
    digest: B256,
    expected: Address,
) -> Result<Signature, RecoverError> {
    let parsed = if bytes.len() == 64 {
        k256::ecdsa::Signature::from_slice(bytes)
    } else {
        k256::ecdsa::Signature::from_der(bytes)
    }
    .map_err(|e| RecoverError::Encoding(e.to_string()))?;
    let low_s = parsed.normalize_s().unwrap_or(parsed);
    for parity in [false, true] {
        let candidate = Signature::from_signature_and_parity(low_s, parity);
        if candidate.recover_address_from_prehash(&digest).ok() == Some(expected) {
            return Ok(candidate);
        }
    }
    Err(RecoverError::NoParity(expected))
}

/// The Ethereum address of an uncompressed SEC1 public key (`04 ‖ X ‖ Y`), also accepting the
/// DER OCTET STRING wrapping PKCS#11 uses for `CKA_EC_POINT` (`04 41 04 ‖ X ‖ Y`).
pub fn address_of_ec_point(point: &[u8]) -> Option<Address> {
    let raw = match point {
        [0x04, 0x41, 0x04, rest @ ..] if rest.len() == 64 => rest,
        [0x04, rest @ ..] if rest.len() == 64 => rest,
        _ => return None,
    };
    Some(Address::from_raw_public_key(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;
    use k256::ecdsa::signature::hazmat::PrehashSigner;

    #[test]
    fn raw_der_high_and_low_s_all_become_the_same_valid_signature() {
        let key = PrivateKeySigner::random();
        let signing = key.credential();
        let expected = key.address();
        let mut high_seen = 0;
        for i in 0..64u8 {
            let digest = B256::repeat_byte(i);
            let sig: k256::ecdsa::Signature = signing.sign_prehash(digest.as_slice()).unwrap();
            // The malleated twin (n - s) is what an HSM returns about half the time.
            let twin = k256::ecdsa::Signature::from_scalars(sig.r(), -*sig.s()).unwrap();
            for variant in [sig, twin] {
                if variant.normalize_s().is_some() {
                    high_seen += 1;
                }
                for bytes in [
                    variant.to_bytes().to_vec(),
                    variant.to_der().as_bytes().to_vec(),
                ] {
                    let out = ethereum_signature(&bytes, digest, expected).unwrap();
                    assert_eq!(out.recover_address_from_prehash(&digest).unwrap(), expected);
                    assert_eq!(out.normalize_s(), None, "low-s");
                    let v = out.as_bytes()[64];
                    assert!(v == 27 || v == 28);
                }
            }
        }
        assert!(high_seen >= 32, "the test exercised high-s inputs");
    }

    #[test]
    fn a_signature_by_another_key_or_garbage_is_refused() {
        let key = PrivateKeySigner::random();
        let other = PrivateKeySigner::random();
        let digest = B256::repeat_byte(1);
        let sig: k256::ecdsa::Signature =
            other.credential().sign_prehash(digest.as_slice()).unwrap();
        assert_eq!(
            ethereum_signature(&sig.to_bytes(), digest, key.address()),
            Err(RecoverError::NoParity(key.address()))
        );
        assert!(matches!(
            ethereum_signature(&[1, 2, 3], digest, key.address()),
            Err(RecoverError::Encoding(_))
        ));
    }

    #[test]
    fn ec_points_with_and_without_the_octet_string_wrapper() {
        let key = PrivateKeySigner::random();
        let point = key.credential().verifying_key().to_encoded_point(false);
        let raw = point.as_bytes().to_vec();
        assert_eq!(address_of_ec_point(&raw), Some(key.address()));
        let wrapped = [&[0x04, 0x41][..], &raw].concat();
        assert_eq!(address_of_ec_point(&wrapped), Some(key.address()));
        assert_eq!(address_of_ec_point(&raw[..30]), None);
    }
}
