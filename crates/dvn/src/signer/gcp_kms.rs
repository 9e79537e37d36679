//! GCP Cloud KMS / Cloud HSM keys of algorithm `EC_SIGN_SECP256K1_SHA256`, through Google's
//! own client library (`google-cloud-kms-v1`, which speaks the Cloud KMS REST API:
//! `cryptoKeyVersions.getPublicKey` and `cryptoKeyVersions.asymmetricSign` with a digest).
//! Credentials come from `google-cloud-auth`: a service-account key file when configured
//! (self-signed JWTs, as Google's libraries do), else Application Default Credentials
//! (`GOOGLE_APPLICATION_CREDENTIALS`, the metadata server on GCE/GKE, gcloud's user
//! credentials). The library's own retries are off: [`super::KeyHandle`] owns timeouts and
//! retries for every backend alike.

use alloy::primitives::{Address, B256};
use google_cloud_auth::credentials::{self, service_account, Credentials};
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionAlgorithm;
use google_cloud_kms_v1::model::Digest;

use super::kms::{self, KmsBackend, KmsError};

const SERVICE: &str = "GCP Cloud KMS";
const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
pub const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";
pub const ALGORITHM: &str = "EC_SIGN_SECP256K1_SHA256";

#[derive(Clone)]
pub struct GcpKms {
    client: KeyManagementService,
    /// `projects/…/locations/…/keyRings/…/cryptoKeys/…/cryptoKeyVersions/N`.
    key_version: String,
}

impl std::fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpKms")
            .field("key_version", &self.key_version)
            .finish()
    }
}

fn credentials_error(detail: impl std::fmt::Display) -> KmsError {
    KmsError::Credentials {
        service: SERVICE,
        detail: detail.to_string(),
    }
}

/// A service-account key file (the only kind a file may name here; any other credential type
/// goes through `GOOGLE_APPLICATION_CREDENTIALS`), else Application Default Credentials.
fn load_credentials(file: Option<&std::path::Path>) -> Result<Credentials, KmsError> {
    let Some(path) = file else {
        return credentials::Builder::default()
            .with_scopes([SCOPE])
            .build()
            .map_err(credentials_error);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| credentials_error(format!("cannot read {}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| credentials_error(format!("{} is not JSON: {e}", path.display())))?;
    if json["type"] != "service_account" {
        return Err(credentials_error(format!(
            "{} is not a service-account key file (type {}); leave credentials_file unset and \
             point GOOGLE_APPLICATION_CREDENTIALS at it instead",
            path.display(),
            json["type"]
        )));
    }
    service_account::Builder::new(json)
        .with_access_specifier(service_account::AccessSpecifier::from_scopes([SCOPE]))
        .build()
        .map_err(credentials_error)
}

impl GcpKms {
    /// Builds the client, reads the key version's public key, and returns the backend and
    /// address.
    pub async fn open(
        key_version: &str,
        credentials_file: Option<&std::path::Path>,
        endpoint: Option<&str>,
    ) -> Result<(Self, Address), KmsError> {
        let client = KeyManagementService::builder()
            .with_endpoint(endpoint.unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/'))
            .with_credentials(load_credentials(credentials_file)?)
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| KmsError::Unavailable {
                service: SERVICE,
                detail: format!("cannot build the client: {e}"),
            })?;
        let kms = Self {
            client,
            key_version: key_version.to_string(),
        };
        let key = kms
            .client
            .get_public_key()
            .set_name(&kms.key_version)
            .send()
            .await
            .map_err(|e| kms.error(e))?;
        if key.algorithm != CryptoKeyVersionAlgorithm::EcSignSecp256K1Sha256 {
            return Err(kms.key_error(format!(
                "algorithm is {}, must be {ALGORITHM}",
                key.algorithm.name().unwrap_or("unknown")
            )));
        }
        let address = kms::address_of_spki_pem(&key.pem)
            .ok_or_else(|| kms.key_error("the public key is not secp256k1".into()))?;
        Ok((kms, address))
    }

    fn key_error(&self, detail: String) -> KmsError {
        KmsError::Key {
            service: SERVICE,
            key: self.key_version.clone(),
            detail,
        }
    }

    /// Sorts the library's error into the kinds callers act on: an outage is retried, a refusal
    /// or a missing key is not.
    fn error(&self, e: google_cloud_kms_v1::Error) -> KmsError {
        let detail = e.to_string();
        if let Some(code) = e.http_status_code() {
            return kms::status_kind(SERVICE, &self.key_version, code, detail);
        }
        // Credentials that cannot make a header: a token endpoint or metadata server that cannot
        // be reached is an outage; a key file that cannot sign is not.
        if let Some(credentials) = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<google_cloud_gax::error::CredentialsError>())
        {
            return if credentials.is_transient() {
                KmsError::Unavailable {
                    service: SERVICE,
                    detail,
                }
            } else {
                credentials_error(detail)
            };
        }
        if e.is_deserialization() {
            return KmsError::BadResponse {
                service: SERVICE,
                detail,
            };
        }
        KmsError::Unavailable {
            service: SERVICE,
            detail,
        }
    }
}

#[async_trait::async_trait]
impl KmsBackend for GcpKms {
    async fn sign_digest(&self, digest: B256) -> Result<Vec<u8>, KmsError> {
        // Cloud KMS does not hash a supplied digest; the field name only says its length.
        let signed = self
            .client
            .asymmetric_sign()
            .set_name(&self.key_version)
            .set_digest(Digest::new().set_sha256(digest.to_vec()))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(signed.signature.to_vec())
    }
}
