//! Local stand-ins for the cloud KMS services, on 127.0.0.1, for tests and the demo:
//!
//! - [`aliyun`]: Aliyun KMS's OpenAPI (`GetPublicKey`, `AsymmetricSign`), checking the
//!   `ACS3-HMAC-SHA256` request signature with its own implementation.
//! - [`gcp`]: Cloud KMS's REST API and an OAuth2 token endpoint that verifies the
//!   service-account JWT (RS256) before it issues a bearer token.
//! - [`moto`]: moto's AWS server (pinned), launched with a patch for `MessageType=DIGEST`.
//!
//! The Aliyun and GCP stand-ins hold a real secp256k1 key and return real DER signatures —
//! high-s about half the time, as HSMs do — and can be switched to failing or stalling, to play
//! an outage.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use k256::ecdsa::signature::hazmat::PrehashSigner;
use k256::pkcs8::{EncodePublicKey, LineEnding};

pub mod aliyun;
pub mod gcp;
pub mod moto;

/// How a stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Serve normally.
    Up = 0,
    /// Answer every request with HTTP 503.
    Failing = 1,
    /// Accept requests and never answer (a black-holed endpoint: clients must time out).
    Stalled = 2,
    /// Refuse every request with HTTP 403 (the credentials' permission was revoked).
    Denying = 3,
}

/// The switch shared by a stand-in and the test holding it.
#[derive(Debug, Clone, Default)]
pub struct HealthSwitch(Arc<AtomicU8>);

impl HealthSwitch {
    pub fn set(&self, health: Health) {
        self.0.store(health as u8, Ordering::SeqCst);
    }

    pub fn get(&self) -> Health {
        match self.0.load(Ordering::SeqCst) {
            1 => Health::Failing,
            2 => Health::Stalled,
            3 => Health::Denying,
            _ => Health::Up,
        }
    }

    /// `Some(response)` when the stand-in must not serve the request normally.
    pub(crate) async fn intercept(&self) -> Option<axum::response::Response> {
        use axum::response::IntoResponse;
        match self.get() {
            Health::Up => None,
            Health::Failing => Some(
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "stand-in switched to failing",
                )
                    .into_response(),
            ),
            Health::Denying => Some(
                (
                    axum::http::StatusCode::FORBIDDEN,
                    axum::Json(serde_json::json!({
                        "Code": "Forbidden.RAM",
                        "Message": "stand-in switched to denying",
                        "error": { "code": 403, "message": "Permission denied" }
                    })),
                )
                    .into_response(),
            ),
            Health::Stalled => {
                std::future::pending::<()>().await;
                None
            }
        }
    }
}

/// A secp256k1 key held by a stand-in.
#[derive(Clone)]
pub struct KmsKey {
    key: k256::ecdsa::SigningKey,
}

impl std::fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKey")
            .field("address", &self.address())
            .finish()
    }
}

impl Default for KmsKey {
    fn default() -> Self {
        Self::random()
    }
}

impl KmsKey {
    pub fn random() -> Self {
        let signer = alloy::signers::local::PrivateKeySigner::random();
        Self {
            key: signer.credential().clone(),
        }
    }

    pub fn address(&self) -> Address {
        Address::from_private_key(&self.key)
    }

    /// SubjectPublicKeyInfo PEM, as GCP and Aliyun return it.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// A DER ECDSA signature over `digest` (not hashed again); the high-s twin for odd first
    /// digest bytes, as HSMs return high-s about half the time.
    pub fn sign_der(&self, digest: &[u8]) -> Option<Vec<u8>> {
        let signature: k256::ecdsa::Signature = self.key.sign_prehash(digest).ok()?;
        let signature = if digest.first().is_some_and(|b| b % 2 == 1) {
            k256::ecdsa::Signature::from_scalars(signature.r(), -*signature.s()).ok()?
        } else {
            signature
        };
        Some(signature.to_der().as_bytes().to_vec())
    }
}

/// Serves `app` on a free 127.0.0.1 port; returns the base URL and the task (abort to stop).
pub(crate) async fn serve(
    app: axum::Router,
) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, task))
}

/// Decodes a 32-byte digest from base64 (the KMS APIs' encoding).
pub(crate) fn digest_from_base64(value: &str) -> Option<B256> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    (bytes.len() == 32).then(|| B256::from_slice(&bytes))
}
