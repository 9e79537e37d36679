//! Aliyun KMS (`AsymmetricSign`, `ECDSA_SHA_256` over a digest; keys of spec `EC_SECP256K1`)
//! through its OpenAPI (RPC style, version 2016-01-20) with [`super::acs3`] request signing.
//! The access key comes from environment variables (a RAM user or, with a security token, an
//! STS role); the endpoint is the region's shared gateway unless configured.

use alloy::primitives::{Address, B256};
use base64::Engine;

use super::acs3;
use super::kms::{self, KmsBackend, KmsError};

const SERVICE: &str = "Aliyun KMS";
const API_VERSION: &str = "2016-01-20";

/// Where the key is and how to reach it.
#[derive(Debug, Clone)]
pub struct AliyunKmsSettings {
    pub endpoint: String,
    pub key_id: String,
    pub key_version_id: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    pub security_token: Option<String>,
}

#[derive(Clone)]
pub struct AliyunKms {
    http: reqwest::Client,
    settings: AliyunKmsSettings,
}

impl std::fmt::Debug for AliyunKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunKms")
            .field("endpoint", &self.settings.endpoint)
            .field("key_id", &self.settings.key_id)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

impl AliyunKms {
    /// Connects, reads the key's public key and returns the backend and its address.
    pub async fn open(
        settings: AliyunKmsSettings,
        http: reqwest::Client,
    ) -> Result<(Self, Address), KmsError> {
        let kms = Self { http, settings };
        #[derive(serde::Deserialize)]
        struct PublicKey {
            #[serde(rename = "PublicKey")]
            pem: String,
        }
        let key: PublicKey = kms.call("GetPublicKey", Vec::new()).await?;
        let address = kms::address_of_spki_pem(&key.pem).ok_or_else(|| KmsError::Key {
            service: SERVICE,
            key: kms.settings.key_id.clone(),
            detail: "the public key is not secp256k1 (key spec must be EC_SECP256K1)".into(),
        })?;
        Ok((kms, address))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        mut query: Vec<(String, String)>,
    ) -> Result<T, KmsError> {
        let s = &self.settings;
        query.push(("KeyId".into(), s.key_id.clone()));
        query.push(("KeyVersionId".into(), s.key_version_id.clone()));
        let url = reqwest::Url::parse(&s.endpoint).map_err(|e| KmsError::Unavailable {
            service: SERVICE,
            detail: format!("bad endpoint: {e}"),
        })?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(KmsError::Unavailable {
                    service: SERVICE,
                    detail: "endpoint has no host".into(),
                })
            }
        };
        let body_sha256 = acs3::sha256_hex(b"");
        let nonce = alloy::hex::encode(rand::random::<[u8; 16]>());
        let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut headers = vec![
            ("host".to_string(), host),
            ("x-acs-action".to_string(), action.to_string()),
            ("x-acs-version".to_string(), API_VERSION.to_string()),
            ("x-acs-date".to_string(), date),
            ("x-acs-signature-nonce".to_string(), nonce),
            ("x-acs-content-sha256".to_string(), body_sha256.clone()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if let Some(token) = &s.security_token {
            headers.push(("x-acs-security-token".to_string(), token.clone()));
        }
        let request = acs3::RequestToSign {
            method: "POST",
            path: "/",
            query: &query,
            headers: &headers,
            body_sha256: &body_sha256,
        };
        let authorization = acs3::authorization(&request, &s.access_key_id, &s.access_key_secret);
        let target = format!(
            "{}://{}/?{}",
            url.scheme(),
            headers[0].1,
            acs3::canonical_query(&query)
        );
        let mut builder = self.http.post(target);
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            builder = builder.header(name, value);
        }
        let response = builder
            .header("authorization", authorization)
            .header("content-length", "0")
            .send()
            .await
            .map_err(kms::transport_error(SERVICE))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let code = serde_json::from_str::<ErrorBody>(&text).ok();
            return Err(match code {
                Some(e) if e.code.contains("KeyNotFound") || e.code.contains("KeyVersion") => {
                    KmsError::Key {
                        service: SERVICE,
                        key: s.key_id.clone(),
                        detail: format!("{}: {}", e.code, e.message),
                    }
                }
                Some(e)
                    if e.code.contains("Signature")
                        || e.code.contains("AccessKey")
                        || e.code.contains("Forbidden")
                        || e.code.contains("SecurityToken") =>
                {
                    KmsError::Denied {
                        service: SERVICE,
                        detail: format!("{}: {}", e.code, e.message),
                    }
                }
                _ => kms::status_error(SERVICE, &s.key_id, status, &text),
            });
        }
        kms::json_body(SERVICE, response).await
    }
}

#[async_trait::async_trait]
impl KmsBackend for AliyunKms {
    async fn sign_digest(&self, digest: B256) -> Result<Vec<u8>, KmsError> {
        #[derive(serde::Deserialize)]
        struct Signed {
            #[serde(rename = "Value")]
            value: String,
        }
        let query = vec![
            ("Algorithm".to_string(), "ECDSA_SHA_256".to_string()),
            (
                "Digest".to_string(),
                base64::engine::general_purpose::STANDARD.encode(digest),
            ),
        ];
        let signed: Signed = self.call("AsymmetricSign", query).await?;
        kms::base64_field(SERVICE, "Value", &signed.value)
    }
}
