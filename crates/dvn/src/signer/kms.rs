//! What every cloud KMS backend shares: a backend signs a 32-byte digest and returns DER (or raw
//! `r ‖ s`); [`KmsSigner`] turns that into an Ethereum signature through [`super::recover`]
//! against the address derived once, at start, from the key's public key.

use std::fmt::Debug;
use std::sync::Arc;

use alloy::primitives::{Address, ChainId, Signature, B256};
use k256::pkcs8::DecodePublicKey;

use super::recover::ethereum_signature;

/// Why a KMS call failed. `retryable` separates a blip (network, throttling, 5xx) from a refusal
/// that retrying will not fix (credentials, permissions, missing key).
#[derive(Debug, Clone, thiserror::Error)]
pub enum KmsError {
    #[error("{service} refused the credentials or the permission: {detail}")]
    Denied {
        service: &'static str,
        detail: String,
    },
    #[error("{service}: key {key} not found or not usable: {detail}")]
    Key {
        service: &'static str,
        key: String,
        detail: String,
    },
    #[error("{service} unreachable or failing: {detail}")]
    Unavailable {
        service: &'static str,
        detail: String,
    },
    #[error("{service} answered something unusable: {detail}")]
    BadResponse {
        service: &'static str,
        detail: String,
    },
    #[error("{service} credentials are missing: {detail}")]
    Credentials {
        service: &'static str,
        detail: String,
    },
}

impl KmsError {
    /// Whether trying again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A KMS key: signs digests and nothing else.
#[async_trait::async_trait]
pub trait KmsBackend: Send + Sync + Debug {
    /// The signature of `digest` exactly as the service returns it (DER or raw `r ‖ s`).
    async fn sign_digest(&self, digest: B256) -> Result<Vec<u8>, KmsError>;
}

/// An alloy signer over any [`KmsBackend`].
#[derive(Debug, Clone)]
pub struct KmsSigner {
    backend: Arc<dyn KmsBackend>,
    address: Address,
    chain_id: Option<ChainId>,
}

impl KmsSigner {
    /// `address` must be the one derived from the key's public key as the service reported it.
    pub fn new(backend: Arc<dyn KmsBackend>, address: Address) -> Self {
        Self {
            backend,
            address,
            chain_id: None,
        }
    }
}

#[async_trait::async_trait]
impl alloy::signers::Signer for KmsSigner {
    async fn sign_hash(&self, hash: &B256) -> alloy::signers::Result<Signature> {
        let bytes = self
            .backend
            .sign_digest(*hash)
            .await
            .map_err(alloy::signers::Error::other)?;
        ethereum_signature(&bytes, *hash, self.address).map_err(alloy::signers::Error::other)
    }

    fn address(&self) -> Address {
        self.address
    }

    fn chain_id(&self) -> Option<ChainId> {
        self.chain_id
    }

    fn set_chain_id(&mut self, chain_id: Option<ChainId>) {
        self.chain_id = chain_id;
    }
}

/// The Ethereum address of a secp256k1 public key in DER SubjectPublicKeyInfo (AWS
/// `GetPublicKey`). Any other curve is refused.
pub fn address_of_spki_der(der: &[u8]) -> Option<Address> {
    let key = k256::PublicKey::from_public_key_der(der).ok()?;
    Some(address_of(&key))
}

/// The same from PEM (GCP `publicKey.pem`, Aliyun `PublicKey`).
pub fn address_of_spki_pem(pem: &str) -> Option<Address> {
    let key = k256::PublicKey::from_public_key_pem(pem.trim()).ok()?;
    Some(address_of(&key))
}

fn address_of(key: &k256::PublicKey) -> Address {
    use k256::elliptic_curve::sec1::ToEncodedPoint;
    let point = key.to_encoded_point(false);
    Address::from_raw_public_key(&point.as_bytes()[1..])
}

/// Reads a response body as JSON of type `T`, naming the service when it is not.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    service: &'static str,
    response: reqwest::Response,
) -> Result<T, KmsError> {
    let bytes = response.bytes().await.map_err(|e| KmsError::Unavailable {
        service,
        detail: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| KmsError::BadResponse {
        service,
        detail: format!("{e} in {} bytes", bytes.len()),
    })
}

/// Decodes a base64 signature field of a KMS response.
pub(crate) fn base64_field(
    service: &'static str,
    field: &str,
    value: &str,
) -> Result<Vec<u8>, KmsError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| KmsError::BadResponse {
            service,
            detail: format!("{field} is not base64: {e}"),
        })
}

/// Maps a non-success HTTP status to the error kind callers act on; `body` is the service's
/// error text (shortened: it is logged).
pub(crate) fn status_error(
    service: &'static str,
    key: &str,
    status: reqwest::StatusCode,
    body: &str,
) -> KmsError {
    let detail = format!(
        "HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    status_kind(service, key, status.as_u16(), detail)
}

/// The error kind an HTTP status code means: refused credentials or permission (401, 403), a
/// missing or unusable key (400, 404), else an outage worth retrying.
pub(crate) fn status_kind(service: &'static str, key: &str, code: u16, detail: String) -> KmsError {
    match code {
        401 | 403 => KmsError::Denied { service, detail },
        400 | 404 => KmsError::Key {
            service,
            key: key.to_string(),
            detail,
        },
        _ => KmsError::Unavailable { service, detail },
    }
}

/// Maps a transport error (connect, timeout) to `Unavailable`.
pub(crate) fn transport_error(service: &'static str) -> impl Fn(reqwest::Error) -> KmsError {
    move |e| KmsError::Unavailable {
        service,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::Signer;
    use k256::ecdsa::signature::hazmat::PrehashSigner;
    use k256::pkcs8::{EncodePublicKey, LineEnding};

    #[derive(Debug)]
    struct Fake(k256::ecdsa::SigningKey);

    #[async_trait::async_trait]
    impl KmsBackend for Fake {
        async fn sign_digest(&self, digest: B256) -> Result<Vec<u8>, KmsError> {
            let sig: k256::ecdsa::Signature = self.0.sign_prehash(digest.as_slice()).unwrap();
            // Cloud KMS returns DER and does not normalise s: send the high-s twin half the time.
            let sig = if digest[0].is_multiple_of(2) {
                k256::ecdsa::Signature::from_scalars(sig.r(), -*sig.s()).unwrap()
            } else {
                sig
            };
            Ok(sig.to_der().as_bytes().to_vec())
        }
    }

    #[tokio::test]
    async fn der_signatures_from_a_backend_become_low_s_ethereum_signatures() {
        let local = PrivateKeySigner::random();
        let key = local.credential().clone();
        let spki = key.verifying_key().to_public_key_der().unwrap();
        let address = address_of_spki_der(spki.as_bytes()).unwrap();
        assert_eq!(address, local.address());
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(address_of_spki_pem(&pem), Some(address));

        let signer = KmsSigner::new(Arc::new(Fake(key)), address);
        for i in 0..32u8 {
            let digest = alloy::primitives::keccak256([i]);
            let sig = signer.sign_hash(&digest).await.unwrap();
            assert_eq!(sig.normalize_s(), None);
            assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), address);
        }
    }

    #[test]
    fn a_p256_public_key_is_not_taken_for_secp256k1() {
        // SPKI of a NIST P-256 key (a KMS key of the wrong spec).
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n";
        assert_eq!(address_of_spki_pem(p256), None);
        assert_eq!(address_of_spki_der(b"not der"), None);
    }
}
