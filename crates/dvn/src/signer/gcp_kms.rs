//! GCP Cloud KMS / Cloud HSM keys of algorithm `EC_SIGN_SECP256K1_SHA256`, through the Cloud
//! KMS REST API (`cryptoKeyVersions.getPublicKey`, `cryptoKeyVersions.asymmetricSign` with a
//! digest). Authentication is OAuth2 by `gcp_auth`: a service-account key file when configured,
//! else the default chain (`GOOGLE_APPLICATION_CREDENTIALS`, the metadata server on GCE/GKE,
//! gcloud's user credentials). The REST API keeps the build free of a gRPC stack.

use std::sync::Arc;

use alloy::primitives::{Address, B256};
use base64::Engine;

use super::kms::{self, KmsBackend, KmsError};

const SERVICE: &str = "GCP Cloud KMS";
const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
pub const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";
pub const ALGORITHM: &str = "EC_SIGN_SECP256K1_SHA256";

#[derive(Clone)]
pub struct GcpKms {
    http: reqwest::Client,
    endpoint: String,
    /// `projects/…/locations/…/keyRings/…/cryptoKeys/…/cryptoKeyVersions/N`.
    key_version: String,
    auth: Arc<dyn gcp_auth::TokenProvider>,
}

impl std::fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpKms")
            .field("endpoint", &self.endpoint)
            .field("key_version", &self.key_version)
            .finish()
    }
}

fn credentials(e: gcp_auth::Error) -> KmsError {
    KmsError::Credentials {
        service: SERVICE,
        detail: e.to_string(),
    }
}

impl GcpKms {
    /// Authenticates, reads the key version's public key, and returns the backend and address.
    pub async fn open(
        key_version: &str,
        credentials_file: Option<&std::path::Path>,
        endpoint: Option<&str>,
        http: reqwest::Client,
    ) -> Result<(Self, Address), KmsError> {
        let auth: Arc<dyn gcp_auth::TokenProvider> = match credentials_file {
            Some(path) => {
                Arc::new(gcp_auth::CustomServiceAccount::from_file(path).map_err(credentials)?)
            }
            None => gcp_auth::provider().await.map_err(credentials)?,
        };
        let kms = Self {
            http,
            endpoint: endpoint
                .unwrap_or(DEFAULT_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            key_version: key_version.to_string(),
            auth,
        };
        #[derive(serde::Deserialize)]
        struct PublicKey {
            pem: String,
            #[serde(default)]
            algorithm: String,
        }
        let url = format!("{}/v1/{}/publicKey", kms.endpoint, kms.key_version);
        let key: PublicKey = kms.send(kms.http.get(url)).await?;
        if key.algorithm != ALGORITHM {
            return Err(kms.key_error(format!(
                "algorithm is {:?}, must be {ALGORITHM}",
                key.algorithm
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

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, KmsError> {
        let token = self.auth.token(&[SCOPE]).await.map_err(|e| match e {
            // A token endpoint that cannot be reached is an outage, not a credentials problem.
            gcp_auth::Error::Http(..) => KmsError::Unavailable {
                service: SERVICE,
                detail: e.to_string(),
            },
            other => credentials(other),
        })?;
        let response = request
            .bearer_auth(token.as_str())
            .send()
            .await
            .map_err(kms::transport_error(SERVICE))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(kms::status_error(SERVICE, &self.key_version, status, &text));
        }
        kms::json_body(SERVICE, response).await
    }
}

#[async_trait::async_trait]
impl KmsBackend for GcpKms {
    async fn sign_digest(&self, digest: B256) -> Result<Vec<u8>, KmsError> {
        #[derive(serde::Deserialize)]
        struct Signed {
            signature: String,
        }
        let url = format!("{}/v1/{}:asymmetricSign", self.endpoint, self.key_version);
        // Cloud KMS does not hash a supplied digest; the field name only says its length.
        let body = serde_json::json!({
            "digest": { "sha256": base64::engine::general_purpose::STANDARD.encode(digest) }
        });
        let signed: Signed = self.send(self.http.post(url).json(&body)).await?;
        kms::base64_field(SERVICE, "signature", &signed.signature)
    }
}
