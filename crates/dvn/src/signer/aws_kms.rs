//! AWS KMS keys of spec `ECC_SECG_P256K1`: `Sign` with `ECDSA_SHA_256` over a `DIGEST`, through
//! the official SDK (`aws-sdk-kms`). Credentials come from the standard AWS chain (environment,
//! profile, IRSA / instance role); the region and endpoint may be set in the config.
//!
//! `alloy-signer-aws` wraps the same SDK calls; the node uses the SDK directly so that AWS
//! signatures go through the same DER → low-s → recovery path ([`super::recover`]) and error
//! classification as every other backend.

use alloy::primitives::{Address, B256};
use aws_sdk_kms::error::{DisplayErrorContext, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, MessageType, SigningAlgorithmSpec};

use super::kms::{self, KmsBackend, KmsError};

const SERVICE: &str = "AWS KMS";

#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_id: String,
}

/// Classifies an SDK error: service refusals by their error code, the rest as outages.
fn classify<E, R>(key: &str, error: SdkError<E, R>) -> KmsError
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&error).to_string();
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            match code {
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException" => KmsError::Denied {
                    service: SERVICE,
                    detail,
                },
                "NotFoundException"
                | "DisabledException"
                | "KeyUnavailableException"
                | "InvalidKeyUsageException"
                | "KMSInvalidStateException" => KmsError::Key {
                    service: SERVICE,
                    key: key.to_string(),
                    detail,
                },
                _ => KmsError::Unavailable {
                    service: SERVICE,
                    detail,
                },
            }
        }
        SdkError::ConstructionFailure(_) => KmsError::Credentials {
            service: SERVICE,
            detail,
        },
        _ => KmsError::Unavailable {
            service: SERVICE,
            detail,
        },
    }
}

impl AwsKms {
    /// Builds the client, reads the key's public key and returns the backend and its address.
    pub async fn open(
        key_id: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> Result<(Self, Address), KmsError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_string()));
        }
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let client = aws_sdk_kms::Client::new(&loader.load().await);
        let key = client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| classify(key_id, e))?;
        let bad_key = |detail: String| KmsError::Key {
            service: SERVICE,
            key: key_id.to_string(),
            detail,
        };
        // The spec is checked when reported; the public key's curve is checked always.
        if key
            .key_spec()
            .is_some_and(|spec| *spec != KeySpec::EccSecgP256K1)
        {
            return Err(bad_key(format!(
                "key spec is {:?}, must be ECC_SECG_P256K1",
                key.key_spec()
            )));
        }
        let address = key
            .public_key()
            .and_then(|der| kms::address_of_spki_der(der.as_ref()))
            .ok_or_else(|| {
                bad_key("no readable secp256k1 public key (must be ECC_SECG_P256K1)".into())
            })?;
        Ok((
            Self {
                client,
                key_id: key_id.to_string(),
            },
            address,
        ))
    }
}

#[async_trait::async_trait]
impl KmsBackend for AwsKms {
    async fn sign_digest(&self, digest: B256) -> Result<Vec<u8>, KmsError> {
        let signed = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(digest.as_slice()))
            .message_type(MessageType::Digest)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| classify(&self.key_id, e))?;
        signed
            .signature()
            .map(|blob| blob.as_ref().to_vec())
            .ok_or(KmsError::BadResponse {
                service: SERVICE,
                detail: "Sign returned no signature".into(),
            })
    }
}
